//! The wall clock the verifier reads, replaceable so that tests can put a
//! token exactly at the edge of its validity window or step past a
//! rate-limit window without sleeping.

use std::{
    fmt,
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

/// A source of the current time.
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> SystemTime + Send + Sync>);

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Self(Arc::new(SystemTime::now))
    }

    /// A clock that asks `now` for the time.
    pub fn from_fn(now: impl Fn() -> SystemTime + Send + Sync + 'static) -> Self {
        Self(Arc::new(now))
    }

    /// The current time.
    pub fn now(&self) -> SystemTime {
        (self.0)()
    }

    /// Whole seconds since the Unix epoch, as JWT claims count them (and as
    /// google-auth does: fractions are dropped).
    pub fn unix_seconds(&self) -> i64 {
        match self.now().duration_since(UNIX_EPOCH) {
            Ok(since) => i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
            Err(before) => -i64::try_from(before.duration().as_secs()).unwrap_or(i64::MAX),
        }
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::system()
    }
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Clock")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn unix_seconds_drop_fractions() {
        let clock = Clock::from_fn(|| UNIX_EPOCH + Duration::from_millis(1_700_000_000_999));
        assert_eq!(clock.unix_seconds(), 1_700_000_000);
        let before = Clock::from_fn(|| UNIX_EPOCH - Duration::from_secs(5));
        assert_eq!(before.unix_seconds(), -5);
    }
}
