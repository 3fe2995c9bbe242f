//! When a cached ID token is renewed and how hard a failing source is
//! pressed: the policy beside the single-flight cache in `cache`, which asks
//! it whether a background renewal is due and how to retry for a request
//! that has to wait.

use std::{
    future::Future,
    time::{Duration, Instant, SystemTime},
};

use cloud_run::response::Chain;
use tracing::debug;

use crate::token::{IdToken, TokenError};

/// When a cached token is renewed, and how often a failing source is asked.
#[derive(Debug, Clone, Copy)]
pub struct RefreshPolicy {
    /// Renew in the background this long before `exp` at most, and never
    /// earlier than half-way through the token's life, while requests keep
    /// using it (Google's libraries renew 225-240 s before `exp`).
    pub early: Duration,
    /// Below this, the token is not used at all: requests wait for a new
    /// one, so that a token never expires on its way to the receiver.
    pub min_remaining: Duration,
    /// At most one background renewal attempt per this long, even when the
    /// new token is itself due for renewal (a metadata server handing back
    /// its cached token, a short lifetime, clock skew).
    pub min_interval: Duration,
    /// After failed renewals, the pause between attempts doubles from
    /// `min_interval` up to this, while the still-valid token is served.
    pub max_backoff: Duration,
    /// How long a request with no usable token may spend retrying a
    /// transient failure (connection refused or reset, a 5xx).
    pub retry_budget: Duration,
}

impl Default for RefreshPolicy {
    fn default() -> Self {
        Self {
            early: Duration::from_secs(240),
            min_remaining: Duration::from_secs(10),
            min_interval: Duration::from_secs(10),
            max_backoff: Duration::from_secs(60),
            retry_budget: Duration::from_secs(2),
        }
    }
}

/// The first pause before retrying for a waiting request; it doubles.
const FIRST_RETRY: Duration = Duration::from_millis(100);
/// The longest pause between two retries for a waiting request.
const MAX_RETRY: Duration = Duration::from_secs(1);

/// The renewal state of the token the cache holds.
#[derive(Debug, Default)]
pub(crate) struct Renewal {
    /// From when the held token is due for renewal.
    renew_from: Option<SystemTime>,
    /// When the last fetch of any kind ended: pauses count from there, so
    /// a failure that took long still gets its full pause.
    last_ended: Option<Instant>,
    /// Failed fetches since the last success.
    failures: u32,
}

impl Renewal {
    /// A fetch that ended at `now` (`ended` on the monotonic clock) brought
    /// `token`.
    pub(crate) fn succeeded(
        &mut self,
        token: &IdToken,
        now: SystemTime,
        ended: Instant,
        policy: &RefreshPolicy,
    ) {
        let window = policy.early.min(token.lifetime(now) / 2);
        self.renew_from = token.expires_at().checked_sub(window);
        self.failures = 0;
        self.last_ended = Some(ended);
    }

    /// A fetch failed at `ended`.
    pub(crate) fn failed(&mut self, ended: Instant) {
        self.failures = self.failures.saturating_add(1);
        self.last_ended = Some(ended);
    }

    /// Whether a request served with the held token should start a
    /// background renewal.
    pub(crate) fn due(&self, now: SystemTime, instant: Instant, policy: &RefreshPolicy) -> bool {
        if self.renew_from.is_none_or(|from| now < from) {
            return false;
        }
        self.last_ended
            .is_none_or(|last| instant.saturating_duration_since(last) >= self.pause(policy))
    }

    /// When the next attempt may start: the last one's end plus the pause;
    /// `None` before any attempt ended.
    pub(crate) fn next_attempt(&self, policy: &RefreshPolicy) -> Option<Instant> {
        self.last_ended
            .and_then(|last| last.checked_add(self.pause(policy)))
    }

    /// `min_interval` after a success; doubled per failure since, capped.
    fn pause(&self, policy: &RefreshPolicy) -> Duration {
        let factor = 2u32.saturating_pow(self.failures.min(16));
        policy
            .min_interval
            .saturating_mul(factor)
            .min(policy.max_backoff.max(policy.min_interval))
    }
}

/// Runs `attempt` until it succeeds, fails for good, or the next pause would
/// end past `policy.retry_budget`: for a fetch requests are waiting on.
pub(crate) async fn retrying<F, Fut>(
    policy: &RefreshPolicy,
    mut attempt: F,
) -> Result<IdToken, TokenError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<IdToken, TokenError>>,
{
    let started = Instant::now();
    let mut pause = FIRST_RETRY;
    loop {
        match attempt().await {
            Err(err) if err.is_transient() && started.elapsed() + pause <= policy.retry_budget => {
                debug!(error = %Chain(&err), ?pause, "ID token fetch failed; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(MAX_RETRY);
            }
            outcome => return outcome,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RefreshPolicy {
        RefreshPolicy::default()
    }

    #[test]
    fn renewal_is_due_at_min_of_early_and_half_the_lifetime() {
        let now = SystemTime::now();
        let instant = Instant::now();
        // 120 s lifetime: due 60 s before exp, not 240 s.
        let token = IdToken::for_test(now, now + Duration::from_secs(120));
        let mut renewal = Renewal::default();
        renewal.succeeded(&token, now, instant, &policy());
        let later = instant + Duration::from_secs(3600);
        assert!(!renewal.due(now + Duration::from_secs(59), later, &policy()));
        assert!(renewal.due(now + Duration::from_secs(60), later, &policy()));
        // An hour's token: due 240 s before exp.
        let token = IdToken::for_test(now, now + Duration::from_secs(3600));
        renewal.succeeded(&token, now, instant, &policy());
        assert!(!renewal.due(now + Duration::from_secs(3359), later, &policy()));
        assert!(renewal.due(now + Duration::from_secs(3360), later, &policy()));
    }

    #[test]
    fn background_attempts_are_spaced_and_back_off() {
        let now = SystemTime::now();
        let t0 = Instant::now();
        // A cached token: issued an hour ago, 100 s left, due at once.
        let token = IdToken::for_test(
            now - Duration::from_secs(3500),
            now + Duration::from_secs(100),
        );
        let mut renewal = Renewal::default();
        renewal.succeeded(&token, now, t0, &policy());
        let s = Duration::from_secs;
        assert!(!renewal.due(now, t0 + s(9), &policy()));
        assert!(renewal.due(now, t0 + s(10), &policy()));
        let mut last = t0;
        for expected in [20, 40, 60, 60] {
            renewal.failed(last);
            assert!(!renewal.due(now, last + s(expected - 1), &policy()));
            assert!(
                renewal.due(now, last + s(expected), &policy()),
                "{expected}"
            );
            last += s(expected);
        }
    }

    #[test]
    fn a_slow_failure_still_gets_its_full_pause() {
        let now = SystemTime::now();
        let t0 = Instant::now();
        let token = IdToken::for_test(
            now - Duration::from_secs(3500),
            now + Duration::from_secs(100),
        );
        let mut renewal = Renewal::default();
        renewal.succeeded(&token, now, t0, &policy());
        // An attempt at 10 s that fails only at 30 s (a 20 s timeout): the
        // next may come 20 s after it ended, not at once.
        let s = Duration::from_secs;
        renewal.failed(t0 + s(30));
        assert!(!renewal.due(now, t0 + s(31), &policy()));
        assert!(!renewal.due(now, t0 + s(49), &policy()));
        assert!(renewal.due(now, t0 + s(50), &policy()));
    }
}
