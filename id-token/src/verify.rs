//! In-app verification of Google ID tokens: the bearer token from
//! `Authorization` (or `X-Serverless-Authorization`), an RS256 signature by
//! the key its `kid` names, `iss`, `aud`, `exp`, `nbf` and `iat` within the
//! allowed clock skew, and optionally an allowlist of callers by verified
//! email. Stricter than google-auth's `verify_token`, which checks neither
//! `iss`, `nbf` nor the header's `alg`.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, PoisonError},
};

use cloud_run::{
    headers::{SIGNATURE_REMOVED, X_SERVERLESS_AUTHORIZATION},
    response::{error, HttpError},
    Body,
};
use http::{header, HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use jsonwebtoken::{errors::ErrorKind, Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use crate::{
    clock::Clock,
    config::{AuthConfig, Invokers},
    keys::{KeyCache, OnDemand, VerifyingKeys},
};

/// Longest token looked at; Google's are about 1 KB. Anything longer is
/// refused before it is decoded.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// The `Retry-After` of a 503 for want of keys: the on-demand refetch
/// interval, after which a retried request may trigger a new fetch.
pub(crate) const RETRY_AFTER_SECONDS: u64 = 10;

/// The protection space named in `WWW-Authenticate`.
pub(crate) const REALM: &str = "receiver";

/// The reason given for a token whose signature Cloud Run removed.
pub const STRIPPED_REASON: &str = "Cloud Run already checked this token and removed its signature, \
so the app cannot verify it: either deploy the receiver publicly (--allow-unauthenticated) and verify in the app, \
or have the sender send the token in X-Serverless-Authorization for Cloud Run and in Authorization for the app \
(ID_TOKEN_HEADER=both)";

/// Who called, from a verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The `email` claim, if the token has one.
    pub email: Option<String>,
    /// Whether `email_verified` is `true`.
    pub email_verified: bool,
    /// The `sub` claim (the account's numeric id for Google tokens).
    pub subject: Option<String>,
}

/// Why a request is refused. The reasons are fixed strings: nothing from
/// the token is ever echoed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No credentials, or not a bearer token: 401 with a bare challenge.
    #[error("unauthorized: a bearer token is required")]
    Missing,
    /// A token that fails a check: 401 with `error="invalid_token"`.
    #[error("invalid token: {0}")]
    Invalid(&'static str),
    /// A valid token from a caller not allowed in: 403.
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    /// No signing keys were ever fetched, so nothing can be verified: 503.
    #[error("signing keys not available yet")]
    KeysUnavailable,
    /// The token names a key not held, and the keys could not be refetched
    /// to look for it (a rotation missed while the key endpoint fails), so
    /// the caller may be valid: 503.
    #[error("unknown signing key (kid), and the signing keys cannot be refreshed now")]
    KeyUnconfirmed,
}

impl HttpError for AuthError {
    fn status(&self) -> StatusCode {
        match self {
            Self::Missing | Self::Invalid(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::KeysUnavailable | Self::KeyUnconfirmed => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl AuthError {
    /// The response: the status, the reason as the body, for a 401 the
    /// RFC 6750 `WWW-Authenticate` challenge, for a 503 `Retry-After`.
    pub fn response(&self) -> Response<Body> {
        let mut response = error(self);
        let challenge = match self {
            Self::Missing => format!("Bearer realm=\"{REALM}\""),
            Self::Invalid(reason) => format!(
                "Bearer realm=\"{REALM}\", error=\"invalid_token\", error_description=\"{reason}\""
            ),
            Self::Forbidden(_) => return response,
            Self::KeysUnavailable | Self::KeyUnconfirmed => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
                return response;
            }
        };
        let challenge =
            HeaderValue::try_from(challenge).unwrap_or_else(|_| HeaderValue::from_static("Bearer"));
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, challenge);
        response
    }
}

/// Checks callers' ID tokens against one configuration and key cache.
#[derive(Debug)]
pub struct Verifier {
    audiences: Vec<String>,
    issuers: Vec<String>,
    allowed: Option<HashSet<String>>,
    leeway: f64,
    clock: Clock,
    keys: Arc<KeyCache>,
    signature_only: Validation,
    signed: SignedTokens,
}

impl Verifier {
    /// A verifier fetching keys with `http`. Nothing is fetched until
    /// [`KeyCache::spawn_refresher`] runs or a token arrives.
    pub fn new(config: AuthConfig, http: reqwest::Client) -> Self {
        let keys = KeyCache::new(http, config.jwks_url, config.keys, config.clock.clone());
        // jsonwebtoken checks the signature, RS256 only; the claims are
        // checked here, against the injectable clock and with precise reasons.
        let mut signature_only = Validation::new(Algorithm::RS256);
        signature_only.required_spec_claims.clear();
        signature_only.validate_exp = false;
        signature_only.validate_nbf = false;
        signature_only.validate_aud = false;
        Self {
            audiences: config.audiences,
            issuers: config.issuers,
            allowed: match config.invokers {
                Invokers::Any => None,
                Invokers::Only(emails) => {
                    Some(emails.iter().map(|e| e.to_ascii_lowercase()).collect())
                }
            },
            leeway: config.leeway.as_secs_f64(),
            clock: config.clock,
            keys,
            signature_only,
            signed: SignedTokens::default(),
        }
    }

    /// The signing key cache.
    pub fn keys(&self) -> &Arc<KeyCache> {
        &self.keys
    }

    /// The accepted audiences.
    pub fn audiences(&self) -> &[String] {
        &self.audiences
    }

    /// The accepted issuers.
    pub fn issuers(&self) -> &[String] {
        &self.issuers
    }

    /// Where the signing keys come from.
    pub fn jwks_url(&self) -> &reqwest::Url {
        self.keys.url()
    }

    /// How many callers the allowlist names; `None` when any caller with a
    /// valid token gets in ([`Invokers::Any`]).
    pub fn allowed_count(&self) -> Option<usize> {
        self.allowed.as_ref().map(HashSet::len)
    }

    /// Checks the request's credentials.
    pub async fn check(&self, headers: &HeaderMap) -> Result<Caller, AuthError> {
        let token = bearer_token(headers)?;
        self.verify(token).await
    }

    /// Checks one token: its shape, header, signature, claims, then the
    /// allowlist. Work before the signature check is bounded by
    /// [`MAX_TOKEN_BYTES`].
    pub async fn verify(&self, token: &str) -> Result<Caller, AuthError> {
        let header = unverified_header(token)?;
        let payload = match self.signed.lookup(token, self.keys.current()) {
            Some(payload) => payload,
            None => {
                let (key, set) = self.key(&header.kid).await?;
                // A JSON object, not a struct: serde would also fill a struct
                // from an array, which is no claims set.
                let payload =
                    jsonwebtoken::decode::<Map<String, Value>>(token, &key, &self.signature_only)
                        .map_err(|err| match err.kind() {
                            ErrorKind::InvalidSignature => {
                                AuthError::Invalid("signature does not match the signing key")
                            }
                            _ => AuthError::Invalid("malformed token"),
                        })?
                        .claims;
                self.signed.remember(token, &payload, set);
                payload
            }
        };
        let claims = Claims::from(payload);
        self.check_claims(&claims)?;
        let caller = Caller {
            email: claims
                .email
                .as_ref()
                .and_then(Value::as_str)
                .map(str::to_owned),
            email_verified: claims.email_verified == Some(Value::Bool(true)),
            subject: claims
                .sub
                .as_ref()
                .and_then(Value::as_str)
                .map(str::to_owned),
        };
        self.check_allowed(&caller)?;
        Ok(caller)
    }

    /// The key named `kid`, with the key set it came from.
    async fn key(&self, kid: &str) -> Result<(DecodingKey, Arc<VerifyingKeys>), AuthError> {
        const UNKNOWN: AuthError = AuthError::Invalid("unknown signing key (kid)");
        let held = self.keys.current();
        if let Some(keys) = &held {
            if let Some(key) = keys.get(kid) {
                return Ok((key.clone(), Arc::clone(keys)));
            }
        }
        // Maybe a key rotated in since the last fetch, or none was ever had.
        let (keys, unknown) = match self.keys.refresh_on_demand().await {
            OnDemand::Current(keys) => (Some(keys), UNKNOWN),
            // Not found in keys that may be out of date: the caller may be
            // valid, so not a 401.
            OnDemand::Unconfirmed(keys) => {
                let unknown = if keys.is_some() {
                    AuthError::KeyUnconfirmed
                } else {
                    AuthError::KeysUnavailable
                };
                (keys, unknown)
            }
        };
        let Some(keys) = keys else {
            return Err(unknown);
        };
        match keys.get(kid).cloned() {
            Some(key) => Ok((key, keys)),
            None => Err(unknown),
        }
    }

    fn check_claims(&self, claims: &Claims) -> Result<(), AuthError> {
        let exp = claims
            .exp
            .as_ref()
            .ok_or(AuthError::Invalid("missing exp claim"))?;
        let exp = number(exp, "exp claim is not a number")?;
        let iat = claims
            .iat
            .as_ref()
            .ok_or(AuthError::Invalid("missing iat claim"))?;
        let iat = number(iat, "iat claim is not a number")?;
        let nbf = claims
            .nbf
            .as_ref()
            .map(|nbf| number(nbf, "nbf claim is not a number"))
            .transpose()?;
        match &claims.iss {
            None => return Err(AuthError::Invalid("missing iss claim")),
            Some(Value::String(iss)) if self.issuers.iter().any(|i| i == iss) => {}
            Some(_) => return Err(AuthError::Invalid("wrong issuer")),
        }
        let audience_ok = match &claims.aud {
            None => return Err(AuthError::Invalid("missing aud claim")),
            Some(Value::String(aud)) => self.audiences.iter().any(|a| a == aud),
            // RFC 7519: an array of audiences, one of which must be ours.
            Some(Value::Array(auds)) => auds
                .iter()
                .filter_map(Value::as_str)
                .any(|aud| self.audiences.iter().any(|a| a == aud)),
            Some(_) => false,
        };
        if !audience_ok {
            return Err(AuthError::Invalid("wrong audience"));
        }
        let now = self.clock.unix_seconds() as f64;
        if exp + self.leeway < now {
            return Err(AuthError::Invalid("token expired"));
        }
        if nbf.is_some_and(|nbf| nbf - self.leeway > now) {
            return Err(AuthError::Invalid("token not valid yet (nbf)"));
        }
        if iat - self.leeway > now {
            return Err(AuthError::Invalid("token issued in the future (iat)"));
        }
        Ok(())
    }

    fn check_allowed(&self, caller: &Caller) -> Result<(), AuthError> {
        let Some(allowed) = &self.allowed else {
            return Ok(());
        };
        match &caller.email {
            None => Err(AuthError::Forbidden("token has no email claim")),
            Some(_) if !caller.email_verified => {
                Err(AuthError::Forbidden("caller's email is not verified"))
            }
            Some(email) if allowed.contains(&email.to_ascii_lowercase()) => Ok(()),
            Some(_) => Err(AuthError::Forbidden("caller is not an allowed invoker")),
        }
    }
}

/// Tokens whose signature checked out against the key set held now, with
/// their payloads. A sender presents the same token for up to an hour, so
/// this spares an RSA verification on nearly every request. Only the
/// signature verdict is kept: the claims and the allowlist are checked on
/// every request, and a new key set (rotation, refresh) empties it.
#[derive(Debug, Default)]
struct SignedTokens(Mutex<SignedState>);

#[derive(Debug, Default)]
struct SignedState {
    keys: Option<Arc<VerifyingKeys>>,
    payloads: HashMap<Box<str>, Map<String, Value>>,
}

/// Enough for every caller of a receiver; past it the cache starts over.
const MAX_SIGNED_TOKENS: usize = 1024;

impl SignedTokens {
    fn lookup(&self, token: &str, keys: Option<Arc<VerifyingKeys>>) -> Option<Map<String, Value>> {
        let state = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let same_keys = matches!((&state.keys, &keys), (Some(a), Some(b)) if Arc::ptr_eq(a, b));
        if !same_keys {
            return None;
        }
        state.payloads.get(token).cloned()
    }

    fn remember(&self, token: &str, payload: &Map<String, Value>, keys: Arc<VerifyingKeys>) {
        let mut state = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let same_keys = state
            .keys
            .as_ref()
            .is_some_and(|held| Arc::ptr_eq(held, &keys));
        if !same_keys || state.payloads.len() >= MAX_SIGNED_TOKENS {
            state.payloads.clear();
            state.keys = Some(keys);
        }
        state.payloads.insert(token.into(), payload.clone());
    }
}

/// The claims looked at, each left as raw JSON so that a wrong type is a
/// clear refusal rather than a parse error. `null` counts as absent.
#[derive(Debug)]
struct Claims {
    iss: Option<Value>,
    aud: Option<Value>,
    exp: Option<Value>,
    iat: Option<Value>,
    nbf: Option<Value>,
    sub: Option<Value>,
    email: Option<Value>,
    email_verified: Option<Value>,
}

impl From<Map<String, Value>> for Claims {
    fn from(mut payload: Map<String, Value>) -> Self {
        let mut take = |name: &str| payload.remove(name).filter(|v| !v.is_null());
        Self {
            iss: take("iss"),
            aud: take("aud"),
            exp: take("exp"),
            iat: take("iat"),
            nbf: take("nbf"),
            sub: take("sub"),
            email: take("email"),
            email_verified: take("email_verified"),
        }
    }
}

/// A NumericDate: any JSON number, fractions allowed (RFC 7519).
fn number(value: &Value, not_number: &'static str) -> Result<f64, AuthError> {
    value.as_f64().ok_or(AuthError::Invalid(not_number))
}

/// The token from `Authorization: Bearer`, or from
/// `X-Serverless-Authorization` when `Authorization` is absent.
pub fn bearer_token(headers: &HeaderMap) -> Result<&str, AuthError> {
    let value = match single(headers, &header::AUTHORIZATION)? {
        Some(value) => value,
        None => single(headers, &X_SERVERLESS_AUTHORIZATION)?.ok_or(AuthError::Missing)?,
    };
    if value.len() > MAX_TOKEN_BYTES + "Bearer ".len() {
        return Err(AuthError::Invalid("token too large"));
    }
    let value = value
        .to_str()
        .map_err(|_| AuthError::Invalid("malformed credentials"))?;
    // RFC 7235: the scheme is case-insensitive, then one or more spaces.
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Missing);
    }
    let token = token.trim_matches(' ');
    if token.is_empty() {
        return Err(AuthError::Invalid("empty bearer token"));
    }
    Ok(token)
}

/// The only value of `name`; two are refused rather than one picked.
fn single<'h>(
    headers: &'h HeaderMap,
    name: &HeaderName,
) -> Result<Option<&'h HeaderValue>, AuthError> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (None, _) => Ok(None),
        (Some(value), None) => Ok(Some(value)),
        (Some(_), Some(_)) => Err(AuthError::Invalid("more than one credentials header")),
    }
}

/// The header fields this module reads before any key is involved.
#[derive(Debug)]
struct UnverifiedHeader {
    kid: String,
}

/// Checks a token's shape and header without its signature: size, three
/// base64url parts, a stripped signature, `alg` RS256 and a `kid`.
fn unverified_header(token: &str) -> Result<UnverifiedHeader, AuthError> {
    use base64::Engine as _;
    #[derive(serde::Deserialize)]
    struct Header {
        alg: Option<Value>,
        kid: Option<Value>,
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(AuthError::Invalid("token too large"));
    }
    let mut parts = token.split('.');
    let (Some(header), Some(_payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Invalid(
            "malformed token: not three dot-separated parts",
        ));
    };
    if signature == SIGNATURE_REMOVED {
        return Err(AuthError::Invalid(STRIPPED_REASON));
    }
    let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .ok()
        .and_then(|json| serde_json::from_slice::<Header>(&json).ok())
        .ok_or(AuthError::Invalid("malformed token header"))?;
    if header.alg != Some(Value::from("RS256")) {
        return Err(AuthError::Invalid("algorithm not allowed: RS256 only"));
    }
    match header.kid {
        Some(Value::String(kid)) => Ok(UnverifiedHeader { kid }),
        _ => Err(AuthError::Invalid(
            "token header names no signing key (kid)",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).expect("name"),
                HeaderValue::from_str(value).expect("value"),
            );
        }
        map
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        for value in ["Bearer abc", "bearer abc", "BEARER abc", "Bearer   abc  "] {
            assert_eq!(
                bearer_token(&headers(&[("authorization", value)])),
                Ok("abc"),
                "{value}"
            );
        }
    }

    #[test]
    fn serverless_header_only_when_authorization_is_absent() {
        let h = headers(&[("x-serverless-authorization", "Bearer from-x")]);
        assert_eq!(bearer_token(&h), Ok("from-x"));
        let h = headers(&[
            ("authorization", "Bearer from-auth"),
            ("x-serverless-authorization", "Bearer from-x"),
        ]);
        assert_eq!(bearer_token(&h), Ok("from-auth"));
        let h = headers(&[
            ("authorization", "Basic dXNlcjpwYXNz"),
            ("x-serverless-authorization", "Bearer from-x"),
        ]);
        assert_eq!(bearer_token(&h), Err(AuthError::Missing));
    }

    #[test]
    fn missing_other_scheme_empty_and_repeated() {
        assert_eq!(bearer_token(&headers(&[])), Err(AuthError::Missing));
        for other in ["Basic dXNlcjpwYXNz", "Bearerabc", "Token abc", "Negotiate"] {
            assert_eq!(
                bearer_token(&headers(&[("authorization", other)])),
                Err(AuthError::Missing),
                "{other}"
            );
        }
        for empty in ["Bearer", "Bearer ", "bearer    "] {
            assert!(
                matches!(
                    bearer_token(&headers(&[("authorization", empty)])),
                    Err(AuthError::Invalid(_))
                ),
                "{empty:?}"
            );
        }
        let h = headers(&[("authorization", "Bearer a"), ("authorization", "Bearer b")]);
        assert!(matches!(bearer_token(&h), Err(AuthError::Invalid(_))));
    }

    #[test]
    fn oversized_credentials_are_refused_before_decoding() {
        let big = format!("Bearer {}", "a".repeat(MAX_TOKEN_BYTES + 1));
        assert_eq!(
            bearer_token(&headers(&[("authorization", &big)])),
            Err(AuthError::Invalid("token too large"))
        );
        assert_eq!(
            unverified_header(&"a".repeat(MAX_TOKEN_BYTES + 1)).map(|h| h.kid),
            Err(AuthError::Invalid("token too large"))
        );
    }

    #[test]
    fn stripped_signature_is_named() {
        let err = unverified_header("eyJhbGciOiJSUzI1NiJ9.e30.SIGNATURE_REMOVED_BY_GOOGLE")
            .expect_err("stripped");
        assert_eq!(err, AuthError::Invalid(STRIPPED_REASON));
    }

    #[test]
    fn challenges_follow_rfc_6750() {
        let r = AuthError::Missing.response();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            r.headers()[header::WWW_AUTHENTICATE],
            "Bearer realm=\"receiver\""
        );
        let r = AuthError::Invalid("token expired").response();
        assert_eq!(
            r.headers()[header::WWW_AUTHENTICATE],
            "Bearer realm=\"receiver\", error=\"invalid_token\", error_description=\"token expired\""
        );
        // The longest reason must still be a valid quoted-string.
        let r = AuthError::Invalid(STRIPPED_REASON).response();
        let challenge = r.headers()[header::WWW_AUTHENTICATE]
            .to_str()
            .expect("ascii");
        assert!(challenge.contains(STRIPPED_REASON), "{challenge}");
        assert!(!STRIPPED_REASON.contains(['"', '\\']));
        let r = AuthError::Forbidden("caller is not an allowed invoker").response();
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert!(r.headers().get(header::WWW_AUTHENTICATE).is_none());
        for unavailable in [AuthError::KeysUnavailable, AuthError::KeyUnconfirmed] {
            let r = unavailable.response();
            assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(r.headers()[header::RETRY_AFTER], "10");
            assert!(r.headers().get(header::WWW_AUTHENTICATE).is_none());
        }
    }
}
