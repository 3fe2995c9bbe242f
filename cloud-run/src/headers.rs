//! Header names and values both sides of Cloud Run's front end use.

use http::HeaderName;

/// The header Cloud Run reads an ID token from before `Authorization`; with
/// both present it checks this one and passes `Authorization` through to the
/// app untouched.
pub const X_SERVERLESS_AUTHORIZATION: HeaderName =
    HeaderName::from_static("x-serverless-authorization");

/// What Cloud Run puts in place of the signature of a token it has checked,
/// so that the token cannot be replayed.
pub const SIGNATURE_REMOVED: &str = "SIGNATURE_REMOVED_BY_GOOGLE";
