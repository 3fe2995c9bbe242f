//! Verifying Google ID tokens in the app: the bearer token from
//! `Authorization` (or `X-Serverless-Authorization`), an RS256 signature by
//! the key its `kid` names (keys fetched from a JWKS endpoint and cached),
//! `iss`, `aud`, `exp`, `nbf` and `iat` within the allowed clock skew, and
//! who may call. Used by the receiver, and by `cloud-run-ingress` for Cloud
//! Run's own check.

mod auto;
mod clock;
mod config;
mod keys;
mod layer;
mod verify;

pub use clock::Clock;
pub use config::{
    AuthConfig, AutoAudience, IapConfig, Invokers, AUTH_VARS, AUTO_AUDIENCE, GOOGLE_ISSUERS,
    GOOGLE_JWKS_URL, IAP_ISSUER, IAP_JWKS_URL,
};
pub use keys::{KeyCache, KeyFetchError, KeyPolicy, VerifyingKeys};
pub use layer::{GoogleIdTokenService, LayerStartError, RequireGoogleIdToken};
pub use verify::{
    bearer_token, AuthError, Caller, Mechanism, Refreshers, Verifier, IAP_ASSERTION,
    MAX_TOKEN_BYTES, STRIPPED_REASON,
};
