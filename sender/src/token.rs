//! ID tokens: a redacted holder, and why one could not be had. A leaf: the
//! sources that fetch tokens and the cache that keeps them both build on it.

use std::{
    fmt,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use base64::Engine as _;
use cloud_run::metadata::MetadataError;
use http::HeaderValue;

/// An OIDC ID token. `Debug` and `Display` never show it.
#[derive(Clone)]
pub struct IdToken {
    bearer: HeaderValue,
    expires_at: SystemTime,
    issued_at: Option<SystemTime>,
}

impl IdToken {
    /// Wraps a JWT, reading `exp` from its payload (the signature is the
    /// receiver's to check; the sender only needs to know when to renew).
    pub fn from_jwt(jwt: &str) -> Result<Self, TokenError> {
        #[derive(serde::Deserialize)]
        struct Claims {
            exp: u64,
            #[serde(default)]
            iat: Option<serde_json::Value>,
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
        // Only a hint for when to renew: a missing or odd `iat` is no reason
        // to refuse the token.
        let issued_at = claims
            .iat
            .and_then(|iat| iat.as_u64())
            .and_then(|iat| UNIX_EPOCH.checked_add(Duration::from_secs(iat)))
            .filter(|iat| *iat <= expires_at);
        let mut bearer = HeaderValue::try_from(format!("Bearer {jwt}"))
            .map_err(|_| TokenError::Malformed("not a header value"))?;
        bearer.set_sensitive(true);
        Ok(Self {
            bearer,
            expires_at,
            issued_at,
        })
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

    pub(crate) fn remaining(&self, now: SystemTime) -> Duration {
        self.expires_at.duration_since(now).unwrap_or_default()
    }

    /// How long the token lives: `exp - iat`, or, without a usable `iat`,
    /// what is left of it at `fetched_at`.
    pub(crate) fn lifetime(&self, fetched_at: SystemTime) -> Duration {
        match self.issued_at {
            Some(iat) => self.expires_at.duration_since(iat).unwrap_or_default(),
            None => self.remaining(fetched_at),
        }
    }

    #[cfg(test)]
    pub(crate) fn for_test(issued_at: SystemTime, expires_at: SystemTime) -> Self {
        Self {
            bearer: HeaderValue::from_static("Bearer test"),
            expires_at,
            issued_at: Some(issued_at),
        }
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
///
/// The `Display` of each is a fixed phrase: it is what an anonymous caller
/// of the sender reads in a 503 body. What the upstream said (its status,
/// its own text, a connection error) is in the `source` chain, for the log.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TokenError {
    /// The metadata server failed.
    #[error("could not get an ID token: {}", metadata_phrase(.0))]
    Metadata(#[source] Arc<MetadataError>),
    /// A token endpoint could not be reached.
    #[error("could not get an ID token: {endpoint} is unreachable")]
    Unreachable {
        /// Which endpoint.
        endpoint: &'static str,
        /// Why.
        #[source]
        source: Arc<reqwest::Error>,
    },
    /// A token endpoint did not answer in time.
    #[error("could not get an ID token: {endpoint} did not answer in time")]
    Timeout {
        /// Which endpoint.
        endpoint: &'static str,
    },
    /// A token endpoint refused.
    #[error("could not get an ID token: {endpoint} refused{}", refusal_hint(.endpoint, .upstream))]
    Refused {
        /// Which endpoint.
        endpoint: &'static str,
        /// What it answered.
        #[source]
        upstream: Upstream,
    },
    /// No access token of the caller's own, to impersonate with.
    #[error("could not get an ID token: no access token of the caller's own to impersonate with")]
    Caller(#[source] Arc<gcp_auth::Error>),
    /// The assertion could not be signed.
    #[error("could not get an ID token: cannot sign the token request")]
    Sign,
    /// The token source answered with something that is not a usable JWT.
    #[error("could not get an ID token: the token source sent a malformed ID token ({0})")]
    Malformed(&'static str),
    /// The fetch was abandoned (the runtime is shutting down).
    #[error("could not get an ID token: the fetch was abandoned")]
    Abandoned,
}

/// What a token endpoint answered when it refused: for logs, never bodies.
#[derive(Debug, Clone, thiserror::Error)]
#[error("answered {status}: {reason}")]
pub struct Upstream {
    /// Its status code.
    pub status: u16,
    /// Its reason, one line.
    pub reason: String,
}

/// The IAM credentials API, as [`TokenError`] phrases name it.
pub(crate) const IAM_API: &str = "the IAM API";

fn metadata_phrase(err: &MetadataError) -> &'static str {
    match err {
        MetadataError::Unreachable(_) => "the metadata server is unreachable",
        MetadataError::Timeout => "the metadata server did not answer in time",
        MetadataError::Status { .. } => "the metadata server refused",
        MetadataError::Body(_) => "the metadata server's answer broke off",
        MetadataError::NotText => "the metadata server sent a malformed ID token",
    }
}

fn refusal_hint(endpoint: &str, upstream: &Upstream) -> &'static str {
    if endpoint == IAM_API && upstream.status == 403 {
        ": grant roles/iam.serviceAccountOpenIdTokenCreator on the impersonated service account to the caller"
    } else {
        ""
    }
}

impl TokenError {
    /// Whether trying again soon may well succeed: no connection, a reset,
    /// a 5xx. Not a timeout: its wait was already spent.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Metadata(err) => match &**err {
                MetadataError::Unreachable(_) => true,
                // The connection reset mid-answer.
                MetadataError::Body(cloud_run::client::BodyError::Read(_)) => true,
                MetadataError::Status { status, .. } => status.is_server_error(),
                _ => false,
            },
            Self::Unreachable { .. } => true,
            Self::Refused { upstream, .. } => upstream.status >= 500,
            _ => false,
        }
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
    fn lifetime_is_exp_minus_iat_or_what_is_left() {
        let fetched = UNIX_EPOCH + Duration::from_secs(2_000_000_000);
        let token =
            IdToken::from_jwt(&jwt(r#"{"exp":2000000100,"iat":1999996500}"#)).expect("token");
        assert_eq!(token.lifetime(fetched), Duration::from_secs(3600));
        let token = IdToken::from_jwt(&jwt(r#"{"exp":2000000100}"#)).expect("token");
        assert_eq!(token.lifetime(fetched), Duration::from_secs(100));
        // An iat that is not a number, or after exp, is ignored.
        let token = IdToken::from_jwt(&jwt(r#"{"exp":2000000100,"iat":"then"}"#)).expect("token");
        assert_eq!(token.lifetime(fetched), Duration::from_secs(100));
        let token =
            IdToken::from_jwt(&jwt(r#"{"exp":2000000100,"iat":2000000200}"#)).expect("token");
        assert_eq!(token.lifetime(fetched), Duration::from_secs(100));
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
