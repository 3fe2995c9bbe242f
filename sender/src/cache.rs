//! The ID token cache: one token per audience, at most one fetch in flight
//! (its result shared by everyone waiting), renewed in the background before
//! its own `exp` as `renewal` decides, failures never cached. Until it
//! first holds a token it can keep trying by itself, paced as renewals are,
//! so that a service is ready without waiting for a request.

use std::{
    sync::{Arc, Mutex, MutexGuard, PoisonError, Weak},
    time::{Duration, Instant, SystemTime},
};

use cloud_run::{
    metadata::MetadataClient,
    single_flight::{SingleFlight, Waiter},
};
use tracing::{debug, info, warn};

use crate::{
    renewal::{retrying, RefreshPolicy, Renewal},
    sources::Connected,
    token::{IdToken, TokenError},
};

/// The longest one token fetch may take, all its steps together.
const FETCH_DEADLINE: Duration = Duration::from_secs(20);

type Outcome = Result<IdToken, TokenError>;

#[derive(Debug, Default)]
struct State {
    token: Option<IdToken>,
    /// Every caller that needs a token waits on the fetch in flight instead
    /// of starting its own.
    flight: SingleFlight<Outcome>,
    /// When the held token is due for renewal; the pause after failures.
    renewal: Renewal,
    /// Why the last fetch failed: the readiness reason (a fixed phrase)
    /// while no token was ever held.
    last_error: Option<TokenError>,
}

/// Tokens for one audience from one source.
#[derive(Debug)]
pub(crate) struct TokenCache {
    source: Arc<Connected>,
    audience: String,
    policy: RefreshPolicy,
    state: Mutex<State>,
}

impl TokenCache {
    /// An empty cache.
    pub(crate) fn new(
        source: Arc<Connected>,
        audience: String,
        policy: RefreshPolicy,
    ) -> Arc<Self> {
        Arc::new(Self {
            source,
            audience,
            policy,
            state: Mutex::default(),
        })
    }

    /// The metadata server, when that is where tokens come from.
    pub(crate) fn metadata(&self) -> Option<&MetadataClient> {
        self.source.metadata()
    }

    /// `Ok` once a token was ever held (a later failure is the requests'
    /// to report); else the fixed phrase of why not yet.
    pub(crate) fn readiness(&self) -> Result<(), String> {
        let state = self.lock();
        if state.token.is_some() {
            return Ok(());
        }
        Err(match &state.last_error {
            Some(err) => err.to_string(),
            None => "no ID token yet".to_owned(),
        })
    }

    /// Starts fetching a token now, and keeps trying in the background
    /// until one is held, pausing after each failure as renewals do
    /// (twice `min_interval` after the first, doubling up to `max_backoff`:
    /// as `Renewal` paces them). Requests may fetch
    /// meanwhile as always; they share the attempt in flight. The task
    /// holds the cache weakly: dropping the cache ends it.
    pub(crate) fn keep_until_held(self: &Arc<Self>) {
        let cache = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut attempts = 0u32;
            loop {
                let waiter = {
                    let Some(cache) = cache.upgrade() else { return };
                    let mut state = cache.lock();
                    if state.token.is_some() {
                        return;
                    }
                    match state.renewal.next_attempt(&cache.policy) {
                        Some(at) if Instant::now() < at => None,
                        _ => Some(cache.fetch(&mut state, true)),
                    }
                };
                if let Some(waiter) = waiter {
                    attempts += 1;
                    if let Ok(Ok(_)) = waiter.wait(None).await {
                        if attempts > 1 {
                            info!(attempts, "first ID token after failures");
                        }
                        return;
                    }
                }
                let Some(at) = next_attempt(&cache) else {
                    return;
                };
                tokio::time::sleep_until(at.into()).await;
            }
        });
    }

    /// A token valid for at least `policy.min_remaining`.
    pub(crate) async fn get(self: &Arc<Self>) -> Result<IdToken, TokenError> {
        let waiter = {
            let mut state = self.lock();
            let now = SystemTime::now();
            if let Some(token) = &state.token {
                if token.remaining(now) > self.policy.min_remaining {
                    let token = token.clone();
                    if state.renewal.due(now, Instant::now(), &self.policy) {
                        self.fetch(&mut state, false);
                    }
                    return Ok(token);
                }
            }
            self.fetch(&mut state, true)
        };
        // The fetch bounds itself (FETCH_DEADLINE); a fetch that vanished
        // (its runtime shutting down) releases its waiters.
        waiter
            .wait(None)
            .await
            .unwrap_or(Err(TokenError::Abandoned))
    }

    /// Joins the fetch in flight, or starts one. A fetch requests wait on
    /// retries transient failures; a background renewal does not (the
    /// renewal policy paces those).
    fn fetch(self: &Arc<Self>, state: &mut State, waited_on: bool) -> Waiter<Outcome> {
        state.flight.join_or_start(|landing| {
            let cache = Arc::clone(self);
            tokio::spawn(async move {
                let fetch = async {
                    if waited_on {
                        retrying(&cache.policy, || cache.source.fetch(&cache.audience)).await
                    } else {
                        cache.source.fetch(&cache.audience).await
                    }
                };
                // Each source bounds its own calls; this bounds the whole, so
                // a stuck fetch cannot hold every waiting request for ever.
                let outcome = tokio::time::timeout(FETCH_DEADLINE, fetch)
                    .await
                    .unwrap_or(Err(TokenError::Timeout {
                        endpoint: "the token source",
                    }));
                let mut state = cache.lock();
                match &outcome {
                    Ok(token) => {
                        debug!(audience = %cache.audience, expires_at = ?token.expires_at(), "new ID token");
                        state.renewal.succeeded(
                            token,
                            SystemTime::now(),
                            Instant::now(),
                            &cache.policy,
                        );
                        state.token = Some(token.clone());
                        state.last_error = None;
                    }
                    Err(err) => {
                        state.renewal.failed(Instant::now());
                        state.last_error = Some(err.clone());
                        warn!(audience = %cache.audience, error = %cloud_run::response::Chain(err), "ID token fetch failed");
                    }
                }
                landing.land(&mut state.flight, outcome);
            });
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// When the keeper of `cache` may try again; `None` once the cache is gone.
fn next_attempt(cache: &Weak<TokenCache>) -> Option<Instant> {
    let cache = cache.upgrade()?;
    let state = cache.lock();
    Some(
        state
            .renewal
            .next_attempt(&cache.policy)
            // No attempt ended (one was abandoned): pause anyway, so a
            // source that keeps failing that way is not retried in a loop.
            .unwrap_or_else(|| Instant::now() + cache.policy.min_interval),
    )
}
