//! ID tokens: a redacted holder, and a cache that fetches one token per
//! audience at a time and renews it before its own `exp`.

use std::{
    fmt,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use base64::Engine as _;
use cloud_run::metadata::MetadataError;

use crate::sources::Fetcher;
use http::HeaderValue;
use tokio::sync::watch;
use tracing::{debug, warn};

/// An OIDC ID token. `Debug` and `Display` never show it.
#[derive(Clone)]
pub struct IdToken {
    bearer: HeaderValue,
    expires_at: SystemTime,
}

impl IdToken {
    /// Wraps a JWT, reading `exp` from its payload (the signature is the
    /// receiver's to check; the sender only needs to know when to renew).
    pub fn from_jwt(jwt: &str) -> Result<Self, TokenError> {
        #[derive(serde::Deserialize)]
        struct Claims {
            exp: u64,
        }
        let mut parts = jwt.split('.');
        let (Some(_), Some(payload), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed("not a JWT"));
        };
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload.trim_end_matches('='))
            .map_err(|_| TokenError::Malformed("payload is not base64url"))?;
        let claims: Claims = serde_json::from_slice(&payload)
            .map_err(|_| TokenError::Malformed("payload has no numeric exp"))?;
        let expires_at = UNIX_EPOCH
            .checked_add(Duration::from_secs(claims.exp))
            .ok_or(TokenError::Malformed("exp out of range"))?;
        let mut bearer = HeaderValue::try_from(format!("Bearer {jwt}"))
            .map_err(|_| TokenError::Malformed("not a header value"))?;
        bearer.set_sensitive(true);
        Ok(Self { bearer, expires_at })
    }

    /// The `Authorization` header value, marked sensitive so that HTTP/2
    /// never indexes it and `Debug` of a header map hides it.
    pub fn bearer(&self) -> &HeaderValue {
        &self.bearer
    }

    /// When the token stops being valid.
    pub fn expires_at(&self) -> SystemTime {
        self.expires_at
    }

    fn remaining(&self, now: SystemTime) -> Duration {
        self.expires_at.duration_since(now).unwrap_or_default()
    }
}

impl fmt::Debug for IdToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdToken")
            .field("token", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

impl fmt::Display for IdToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted ID token>")
    }
}

/// Why no token could be had. Cloned to every request that waited for the
/// same fetch.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TokenError {
    /// The metadata server failed.
    #[error(transparent)]
    Metadata(Arc<MetadataError>),
    /// A token endpoint could not be reached.
    #[error("{endpoint} unreachable")]
    Unreachable {
        /// Which endpoint.
        endpoint: &'static str,
        /// Why.
        #[source]
        source: Arc<reqwest::Error>,
    },
    /// A token endpoint did not answer in time.
    #[error("{endpoint} did not answer in time")]
    Timeout {
        /// Which endpoint.
        endpoint: &'static str,
    },
    /// A token endpoint refused, with its reason.
    #[error("{endpoint} refused ({status}): {reason}")]
    Refused {
        /// Which endpoint.
        endpoint: &'static str,
        /// Its status code.
        status: u16,
        /// Its reason, one line.
        reason: String,
    },
    /// No access token of the caller's own, to impersonate with.
    #[error("no access token of the caller's own to impersonate with")]
    Caller(#[source] Arc<gcp_auth::Error>),
    /// The assertion could not be signed.
    #[error("cannot sign the token request")]
    Sign,
    /// The token source answered with something that is not a usable JWT.
    #[error("token source sent a malformed ID token: {0}")]
    Malformed(&'static str),
    /// The fetch was abandoned (the runtime is shutting down).
    #[error("token fetch abandoned")]
    Abandoned,
}

/// When a cached token is renewed.
#[derive(Debug, Clone, Copy)]
pub struct RefreshPolicy {
    /// Renew in the background once the token has less than this left,
    /// while requests keep using it (Google's libraries use 225-240 s).
    pub early: Duration,
    /// Below this, the token is not used at all: requests wait for a new
    /// one, so that a token never expires on its way to the receiver.
    pub min_remaining: Duration,
}

impl Default for RefreshPolicy {
    fn default() -> Self {
        Self {
            early: Duration::from_secs(240),
            min_remaining: Duration::from_secs(10),
        }
    }
}

type Outcome = Option<Result<IdToken, TokenError>>;

/// The longest one token fetch may take, all its steps together.
const FETCH_DEADLINE: Duration = Duration::from_secs(20);

#[derive(Debug, Default)]
struct State {
    token: Option<IdToken>,
    /// The fetch in flight, if any; every caller that needs a token waits on
    /// this one instead of starting its own.
    inflight: Option<watch::Receiver<Outcome>>,
}

/// Tokens for one audience: at most one fetch in flight, the result shared
/// by everyone waiting, failures not cached.
#[derive(Debug)]
pub struct TokenCache {
    fetcher: Fetcher,
    audience: String,
    policy: RefreshPolicy,
    state: Mutex<State>,
}

impl TokenCache {
    /// An empty cache.
    pub fn new(fetcher: Fetcher, audience: String, policy: RefreshPolicy) -> Arc<Self> {
        Arc::new(Self {
            fetcher,
            audience,
            policy,
            state: Mutex::default(),
        })
    }

    /// The metadata server, when that is where tokens come from.
    pub fn metadata(&self) -> Option<&cloud_run::metadata::MetadataClient> {
        match &self.fetcher {
            Fetcher::Metadata(client) => Some(client),
            _ => None,
        }
    }

    /// A token valid for at least `policy.min_remaining`.
    pub async fn get(self: &Arc<Self>) -> Result<IdToken, TokenError> {
        let mut waiting = {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            let now = SystemTime::now();
            if let Some(token) = &state.token {
                let remaining = token.remaining(now);
                if remaining > self.policy.min_remaining {
                    let token = token.clone();
                    if remaining <= self.policy.early {
                        self.ensure_fetch(&mut state);
                    }
                    return Ok(token);
                }
            }
            self.ensure_fetch(&mut state)
        };
        let outcome = match waiting.wait_for(Option::is_some).await {
            Ok(outcome) => outcome.clone(),
            Err(_) => None,
        };
        outcome.unwrap_or(Err(TokenError::Abandoned))
    }

    /// The in-flight fetch, started if there is none.
    fn ensure_fetch(self: &Arc<Self>, state: &mut State) -> watch::Receiver<Outcome> {
        if let Some(inflight) = &state.inflight {
            // A fetch whose task died would leave waiters hanging forever.
            if inflight.has_changed().is_ok() {
                return inflight.clone();
            }
        }
        let (tx, rx) = watch::channel(None);
        state.inflight = Some(rx.clone());
        let cache = Arc::clone(self);
        tokio::spawn(async move {
            // Each source bounds its own calls; this bounds the whole, so a
            // stuck fetch cannot hold every waiting request for ever.
            let outcome =
                tokio::time::timeout(FETCH_DEADLINE, cache.fetcher.fetch(&cache.audience))
                    .await
                    .unwrap_or(Err(TokenError::Timeout {
                        endpoint: "the token source",
                    }));
            {
                let mut state = cache.state.lock().unwrap_or_else(PoisonError::into_inner);
                state.inflight = None;
                match &outcome {
                    Ok(token) => {
                        debug!(audience = %cache.audience, expires_at = ?token.expires_at(), "new ID token");
                        state.token = Some(token.clone());
                    }
                    Err(err) => {
                        warn!(audience = %cache.audience, error = %cloud_run::response::Chain(err), "ID token fetch failed");
                    }
                }
            }
            let _ = tx.send(Some(outcome));
        });
        rx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(payload: &str) -> String {
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!("{}.{}.c2ln", b64(r#"{"alg":"RS256"}"#), b64(payload))
    }

    #[test]
    fn exp_is_read_from_the_payload() {
        let token = IdToken::from_jwt(&jwt(r#"{"exp":2000000000,"aud":"x"}"#)).expect("token");
        assert_eq!(
            token.expires_at(),
            UNIX_EPOCH + Duration::from_secs(2_000_000_000)
        );
        assert!(token.bearer().is_sensitive());
    }

    #[test]
    fn malformed_tokens_are_refused() {
        for bad in [
            "".to_owned(),
            "abc".to_owned(),
            "a.b".to_owned(),
            "a.!!!.c".to_owned(),
            jwt(r#"{"aud":"x"}"#),
            jwt(r#"{"exp":"soon"}"#),
            jwt(r#"{"exp":18446744073709551615}"#),
            format!("{}.d", jwt(r#"{"exp":1}"#)),
        ] {
            assert!(IdToken::from_jwt(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn debug_and_display_are_redacted() {
        let raw = jwt(r#"{"exp":2000000000}"#);
        let token = IdToken::from_jwt(&raw).expect("token");
        let shown = format!("{token} {token:?}");
        assert!(!shown.contains(&raw), "{shown}");
        assert!(!shown.contains("eyJ"), "{shown}");
    }
}
