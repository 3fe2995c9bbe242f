//! One fetch at a time, its result shared by everyone who asked while it ran
//! ("single flight"): the sender's token cache and the receiver's key cache
//! both work this way.
//!
//! The marker of the fetch in flight lives in the caller's own state, behind
//! the caller's own lock, so that a fetch's result is stored and the marker
//! cleared in one critical section: nobody can see the marker gone and the
//! old value still in place, and start a second fetch for nothing.
//!
//! ```
//! # use std::sync::{Arc, Mutex};
//! # use cloud_run::single_flight::SingleFlight;
//! #[derive(Default)]
//! struct State { value: Option<u32>, flight: SingleFlight<u32> }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let state = Arc::new(Mutex::new(State::default()));
//! let waiter = {
//!     let mut guard = state.lock().unwrap();
//!     let shared = Arc::clone(&state);
//!     guard.flight.join_or_start(move |landing| {
//!         tokio::spawn(async move {
//!             let fetched = 42; // the slow part, without the lock
//!             let mut guard = shared.lock().unwrap();
//!             guard.value = Some(fetched);
//!             landing.land(&mut guard.flight, fetched);
//!         });
//!     })
//! };
//! assert_eq!(waiter.wait(None).await, Ok(42));
//! # }
//! ```

use std::{fmt, time::Duration};

use tokio::sync::watch;

/// The fetch in flight, if any: a field of the caller's locked state.
pub struct SingleFlight<T> {
    inflight: Option<watch::Receiver<Option<T>>>,
}

impl<T> Default for SingleFlight<T> {
    fn default() -> Self {
        Self { inflight: None }
    }
}

impl<T> fmt::Debug for SingleFlight<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SingleFlight")
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

impl<T> SingleFlight<T> {
    /// Whether a fetch is running. A fetch whose task died (panicked, or
    /// was dropped with its runtime) does not count.
    pub fn in_flight(&self) -> bool {
        self.live().is_some()
    }

    fn live(&self) -> Option<&watch::Receiver<Option<T>>> {
        // Landing clears the marker, so a closed channel here means the
        // fetch ended without landing.
        self.inflight.as_ref().filter(|rx| rx.has_changed().is_ok())
    }
}

impl<T: Clone> SingleFlight<T> {
    /// A waiter on the fetch in flight; `None` when there is none.
    pub fn join(&self) -> Option<Waiter<T>> {
        self.live().map(|rx| Waiter(rx.clone()))
    }

    /// Joins the fetch in flight, or, when there is none, calls `start`
    /// with the [`Landing`] the new fetch must finish with. `start` should
    /// only spawn the fetch: it runs under the caller's lock.
    pub fn join_or_start(&mut self, start: impl FnOnce(Landing<T>)) -> Waiter<T> {
        if let Some(waiter) = self.join() {
            return waiter;
        }
        let (tx, rx) = watch::channel(None);
        self.inflight = Some(rx.clone());
        start(Landing(tx));
        Waiter(rx)
    }
}

/// The end of one fetch, held by the task doing it. Dropping it without
/// landing (a panic, a cancelled task) releases every waiter with
/// [`FlightError::Abandoned`] and lets the next caller start afresh.
#[derive(Debug)]
pub struct Landing<T>(watch::Sender<Option<T>>);

impl<T> Landing<T> {
    /// Clears the in-flight marker and hands `outcome` to every waiter.
    /// Call it under the same lock as the one the result is stored with.
    pub fn land(self, flight: &mut SingleFlight<T>, outcome: T) {
        // A newer flight (started after this one was given up for dead)
        // keeps its marker.
        if flight
            .inflight
            .as_ref()
            .is_some_and(|rx| rx.same_channel(&self.0.subscribe()))
        {
            flight.inflight = None;
        }
        self.0.send_replace(Some(outcome));
    }
}

/// Why a waiter got no outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FlightError {
    /// The fetch ended without an outcome (it panicked, or its runtime is
    /// shutting down).
    #[error("the fetch was abandoned")]
    Abandoned,
    /// The waiter's deadline passed first; the fetch goes on for others.
    #[error("the fetch did not finish in time")]
    TimedOut,
}

/// One caller's wait for a fetch's outcome.
#[derive(Debug)]
pub struct Waiter<T>(watch::Receiver<Option<T>>);

impl<T: Clone> Waiter<T> {
    /// The outcome, once the fetch lands, or an error when it is abandoned
    /// or `deadline` (if any) passes first.
    pub async fn wait(mut self, deadline: Option<Duration>) -> Result<T, FlightError> {
        let landed = async {
            match self.0.wait_for(Option::is_some).await {
                Ok(outcome) => outcome.clone().ok_or(FlightError::Abandoned),
                Err(_) => Err(FlightError::Abandoned),
            }
        };
        match deadline {
            None => landed.await,
            Some(deadline) => tokio::time::timeout(deadline, landed)
                .await
                .unwrap_or(Err(FlightError::TimedOut)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    };
    use tokio::sync::oneshot;

    #[derive(Default)]
    struct State {
        value: Option<u32>,
        flight: SingleFlight<u32>,
    }

    type Shared = Arc<Mutex<State>>;

    /// Joins or starts a fetch that lands `value` once `release` fires.
    fn fetch(
        state: &Shared,
        started: &Arc<AtomicUsize>,
        release: Option<oneshot::Receiver<u32>>,
    ) -> Waiter<u32> {
        let shared = Arc::clone(state);
        let started = Arc::clone(started);
        state
            .lock()
            .expect("lock")
            .flight
            .join_or_start(move |landing| {
                started.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let Some(release) = release else { return };
                    let value = release.await.expect("released");
                    let mut state = shared.lock().expect("lock");
                    state.value = Some(value);
                    landing.land(&mut state.flight, value);
                });
            })
    }

    #[tokio::test]
    async fn callers_join_the_fetch_in_flight() {
        let state = Shared::default();
        let started = Arc::new(AtomicUsize::new(0));
        let (release, rx) = oneshot::channel();
        let first = fetch(&state, &started, Some(rx));
        let joined: Vec<_> = (0..10).map(|_| fetch(&state, &started, None)).collect();
        assert!(state.lock().expect("lock").flight.in_flight());
        release.send(7).expect("release");
        assert_eq!(first.wait(None).await, Ok(7));
        for waiter in joined {
            assert_eq!(waiter.wait(None).await, Ok(7));
        }
        assert_eq!(started.load(Ordering::SeqCst), 1);
        let state = state.lock().expect("lock");
        assert_eq!(state.value, Some(7));
        assert!(!state.flight.in_flight(), "landing clears the marker");
    }

    #[tokio::test]
    async fn a_landed_result_is_stored_before_the_marker_is_seen_clear() {
        let state = Shared::default();
        let started = Arc::new(AtomicUsize::new(0));
        let (release, rx) = oneshot::channel();
        let waiter = fetch(&state, &started, Some(rx));
        release.send(3).expect("release");
        waiter.wait(None).await.expect("landed");
        let state = state.lock().expect("lock");
        assert!(!state.flight.in_flight());
        assert_eq!(state.value, Some(3));
    }

    #[tokio::test]
    async fn a_fetch_that_ends_without_landing_releases_its_waiters_and_the_next_call_starts_anew()
    {
        let state = Shared::default();
        let started = Arc::new(AtomicUsize::new(0));
        // The task drops its Landing without landing.
        let waiter = fetch(&state, &started, None);
        assert_eq!(waiter.wait(None).await, Err(FlightError::Abandoned));
        assert!(!state.lock().expect("lock").flight.in_flight());
        let (release, rx) = oneshot::channel();
        let waiter = fetch(&state, &started, Some(rx));
        release.send(9).expect("release");
        assert_eq!(waiter.wait(None).await, Ok(9));
        assert_eq!(started.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_panic_in_the_fetch_releases_its_waiters() {
        let state = Shared::default();
        let (panicked_tx, panicked) = oneshot::channel::<()>();
        let waiter = state
            .lock()
            .expect("lock")
            .flight
            .join_or_start(move |landing| {
                tokio::spawn(async move {
                    let _landing = landing;
                    let _tell = panicked_tx;
                    panic!("the fetch broke");
                });
            });
        let _ = panicked.await;
        assert_eq!(waiter.wait(None).await, Err(FlightError::Abandoned));
        assert!(!state.lock().expect("lock").flight.in_flight());
    }

    #[tokio::test]
    async fn a_waiter_gives_up_at_its_deadline_and_the_fetch_goes_on() {
        let state = Shared::default();
        let started = Arc::new(AtomicUsize::new(0));
        let (release, rx) = oneshot::channel();
        let impatient = fetch(&state, &started, Some(rx));
        let patient = fetch(&state, &started, None);
        assert_eq!(
            impatient.wait(Some(Duration::from_millis(50))).await,
            Err(FlightError::TimedOut)
        );
        assert!(state.lock().expect("lock").flight.in_flight());
        release.send(5).expect("release");
        assert_eq!(patient.wait(Some(Duration::from_secs(5))).await, Ok(5));
        assert_eq!(started.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_stale_landing_leaves_a_newer_flight_in_place() {
        let mut flight = SingleFlight::<u32>::default();
        let mut first = None;
        let _ = flight.join_or_start(|landing| first = Some(landing));
        // The first flight is given up for dead: its marker is replaced.
        flight.inflight = None;
        let mut second = None;
        let newer = flight.join_or_start(|landing| second = Some(landing));
        first.expect("first").land(&mut flight, 1);
        assert!(flight.in_flight(), "the newer flight is still in the air");
        second.expect("second").land(&mut flight, 2);
        assert_eq!(newer.wait(None).await, Ok(2));
        assert!(!flight.in_flight());
    }
}
