//! In-app verification of Google ID tokens: the bearer token from
//! `Authorization` (or `X-Serverless-Authorization`), an RS256 signature by
//! the key its `kid` names, `iss`, `aud`, `exp`, `nbf` and `iat` within the
//! allowed clock skew, and optionally an allowlist of callers by verified
//! email. Stricter than google-auth's `verify_token`, which checks neither
//! `iss`, `nbf` nor the header's `alg`. IAP's assertions
//! (`X-Goog-IAP-JWT-Assertion`) are checked the same way, ES256 with IAP's
//! keys: each mechanism fixes its algorithm and key type, never the token.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, PoisonError},
};

use cloud_run::{
    headers::{SIGNATURE_REMOVED, X_SERVERLESS_AUTHORIZATION},
    response::{error, HttpError},
    Body,
};
use http::{header, HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use jsonwebtoken::{errors::ErrorKind, Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::{
    clock::Clock,
    config::{AuthConfig, Invokers, IAP_ISSUER},
    keys::{KeyCache, OnDemand, VerifyingKeys},
};

/// The header Identity-Aware Proxy puts its signed assertion in.
pub const IAP_ASSERTION: HeaderName = HeaderName::from_static("x-goog-iap-jwt-assertion");

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

/// How a caller proved who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mechanism {
    /// A Google ID token (RS256) in `Authorization` or
    /// `X-Serverless-Authorization`.
    IdToken,
    /// An Identity-Aware Proxy assertion (ES256) in
    /// `X-Goog-IAP-JWT-Assertion`.
    Iap,
}

impl Mechanism {
    /// `id-token` or `iap`, as logs name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::IdToken => "id-token",
            Self::Iap => "iap",
        }
    }
}

impl std::fmt::Display for Mechanism {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who called, from a verified token. An admitted request carries it in its
/// extensions (`req.extensions().get::<Caller>()`), put there by
/// [`Verifier::check_request`] and [`RequireGoogleIdToken`](crate::RequireGoogleIdToken).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The `email` claim, if the token has one.
    pub email: Option<String>,
    /// Whether the email is verified: `email_verified` is `true` in an ID
    /// token; IAP vouches for the email of every assertion it signs.
    pub email_verified: bool,
    /// The `sub` claim (the account's numeric id for Google tokens,
    /// `accounts.google.com:NUMBER` for IAP).
    pub subject: Option<String>,
    /// Which credential proved it.
    pub mechanism: Mechanism,
    /// The `hd` claim: the Google Workspace or Cloud Identity domain of the
    /// account, when it belongs to one (what IAM's `domain:` members match).
    pub hosted_domain: Option<String>,
}

impl Caller {
    /// A `caller` span at debug level with the email, subject and mechanism:
    /// what runs inside it (the app's handler) is logged with them.
    pub fn span(&self) -> tracing::Span {
        tracing::debug_span!(
            "caller",
            email = self.email.as_deref().unwrap_or("-"),
            subject = self.subject.as_deref().unwrap_or("-"),
            mechanism = self.mechanism.as_str(),
        )
    }
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
    /// Only IAP assertions are accepted, and the request has none (it did
    /// not come through IAP): 401 without a bearer challenge.
    #[error("unauthorized: an IAP assertion (X-Goog-IAP-JWT-Assertion) is required")]
    AssertionMissing,
    /// An IAP assertion that fails a check: 401 without a bearer challenge.
    #[error("invalid IAP assertion: {0}")]
    InvalidAssertion(&'static str),
}

impl HttpError for AuthError {
    fn status(&self) -> StatusCode {
        match self {
            Self::Missing
            | Self::Invalid(_)
            | Self::AssertionMissing
            | Self::InvalidAssertion(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::KeysUnavailable | Self::KeyUnconfirmed => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl AuthError {
    /// The response: the status, the reason as the body, for a 401 about a
    /// bearer token the RFC 6750 `WWW-Authenticate` challenge, for a 503
    /// `Retry-After`.
    pub fn response(&self) -> Response<Body> {
        let mut response = error(self);
        let challenge = match self {
            Self::Missing => format!("Bearer realm=\"{REALM}\""),
            Self::Invalid(reason) => format!(
                "Bearer realm=\"{REALM}\", error=\"invalid_token\", error_description=\"{reason}\""
            ),
            // No scheme a client could answer: the assertion comes from IAP.
            Self::Forbidden(_) | Self::AssertionMissing | Self::InvalidAssertion(_) => {
                return response
            }
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

    /// How strongly this refusal speaks for the request: when two
    /// credentials are both refused, the caller hears the stronger reason.
    /// A 503 first (one of them may be valid once keys are in), then a
    /// valid token of a caller not allowed, a bad token, none.
    fn weight(&self) -> u8 {
        match self {
            Self::KeysUnavailable | Self::KeyUnconfirmed => 3,
            Self::Forbidden(_) => 2,
            Self::Invalid(_) | Self::InvalidAssertion(_) => 1,
            Self::Missing | Self::AssertionMissing => 0,
        }
    }
}

/// One kind of credential: its algorithm (and so key type), audiences,
/// issuers and keys.
#[derive(Debug)]
struct Scheme {
    mechanism: Mechanism,
    /// The one algorithm accepted, named as a JWT header names it.
    alg: &'static str,
    audiences: Vec<String>,
    issuers: Vec<String>,
    keys: Arc<KeyCache>,
    signature_only: Validation,
    signed: SignedTokens,
}

impl Scheme {
    fn new(
        mechanism: Mechanism,
        audiences: Vec<String>,
        issuers: Vec<String>,
        keys: Arc<KeyCache>,
    ) -> Self {
        let (algorithm, alg) = match mechanism {
            Mechanism::IdToken => (Algorithm::RS256, "RS256"),
            Mechanism::Iap => (Algorithm::ES256, "ES256"),
        };
        // jsonwebtoken checks the signature, one algorithm only; the claims
        // are checked here, against the injectable clock and with precise
        // reasons.
        let mut signature_only = Validation::new(algorithm);
        signature_only.required_spec_claims.clear();
        signature_only.validate_exp = false;
        signature_only.validate_nbf = false;
        signature_only.validate_aud = false;
        Self {
            mechanism,
            alg,
            audiences,
            issuers,
            keys,
            signature_only,
            signed: SignedTokens::default(),
        }
    }
}

/// Checks callers' ID tokens (and, when configured, IAP assertions)
/// against one configuration and its key caches.
///
/// ```
/// use id_token::{AuthConfig, AuthError, Invokers, Verifier};
///
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// let mut config = AuthConfig::google(
///     vec!["https://receiver-123456789012.europe-west1.run.app".to_owned()],
///     Invokers::only(["sender@my-project.iam.gserviceaccount.com"]),
/// );
/// # config.jwks_url = "http://127.0.0.1:9/certs".parse()?;
/// let http = cloud_run::client::build(std::time::Duration::from_secs(5))?;
/// let verifier = Verifier::new(config, http);
/// // Keys fetched now and kept fresh until `_refresh` is dropped.
/// let _refresh = verifier.spawn_refreshers();
///
/// let headers = http::HeaderMap::new();
/// match verifier.check(&headers).await {
///     Ok(caller) => println!("hello, {:?} ({})", caller.email, caller.mechanism),
///     Err(refused) => {
///         // The receiver's answer: 401 with a bearer challenge here.
///         assert_eq!(refused, AuthError::Missing);
///         assert_eq!(refused.response().status(), 401);
///     }
/// }
/// # Ok(())
/// # }
/// # tokio::runtime::Runtime::new().unwrap().block_on(example()).unwrap();
/// ```
#[derive(Debug)]
pub struct Verifier {
    id_token: Scheme,
    iap: Option<Scheme>,
    /// `AUTH_AUDIENCE=auto` left unresolved: never ready.
    unresolved_auto: bool,
    allowed: Option<HashSet<String>>,
    leeway: f64,
    clock: Clock,
}

impl Verifier {
    /// A verifier fetching keys with `http`. Nothing is fetched until
    /// [`Verifier::spawn_refreshers`] runs or a token arrives. An `auto`
    /// audience not yet resolved ([`AuthConfig::resolve`]) admits nobody.
    pub fn new(config: AuthConfig, http: reqwest::Client) -> Self {
        if config.auto_audience.is_some() {
            warn!("AUTH_AUDIENCE=auto is not resolved (AuthConfig::resolve): no token is accepted for it");
        }
        let keys = KeyCache::new(
            http.clone(),
            config.jwks_url,
            config.keys,
            config.clock.clone(),
        );
        let id_token = Scheme::new(Mechanism::IdToken, config.audiences, config.issuers, keys);
        let iap = config.iap.map(|iap| {
            let keys = KeyCache::for_algorithm(
                http,
                iap.jwks_url,
                Algorithm::ES256,
                config.keys,
                config.clock.clone(),
            );
            Scheme::new(
                Mechanism::Iap,
                iap.audiences,
                vec![IAP_ISSUER.to_owned()],
                keys,
            )
        });
        Self {
            id_token,
            iap,
            unresolved_auto: config.auto_audience.is_some(),
            allowed: match config.invokers {
                Invokers::Any => None,
                Invokers::Only(emails) => {
                    Some(emails.iter().map(|e| e.to_ascii_lowercase()).collect())
                }
            },
            leeway: config.leeway.as_secs_f64(),
            clock: config.clock,
        }
    }

    /// The ID tokens' signing key cache.
    pub fn keys(&self) -> &Arc<KeyCache> {
        &self.id_token.keys
    }

    /// IAP's signing key cache, when IAP assertions are accepted.
    pub fn iap_keys(&self) -> Option<&Arc<KeyCache>> {
        self.iap.as_ref().map(|iap| &iap.keys)
    }

    /// Whether ID tokens are accepted: there is an audience for them.
    pub fn accepts_id_tokens(&self) -> bool {
        !self.id_token.audiences.is_empty()
    }

    /// The accepted audiences of ID tokens.
    pub fn audiences(&self) -> &[String] {
        &self.id_token.audiences
    }

    /// The accepted audiences of IAP assertions, when they are accepted.
    pub fn iap_audiences(&self) -> Option<&[String]> {
        self.iap.as_ref().map(|iap| iap.audiences.as_slice())
    }

    /// The accepted issuers of ID tokens.
    pub fn issuers(&self) -> &[String] {
        &self.id_token.issuers
    }

    /// Where the ID tokens' signing keys come from.
    pub fn jwks_url(&self) -> &reqwest::Url {
        self.id_token.keys.url()
    }

    /// The key caches in use: ID tokens' when they are accepted, IAP's
    /// when IAP assertions are.
    fn caches(&self) -> impl Iterator<Item = &Arc<KeyCache>> {
        let id_token = self.accepts_id_tokens().then_some(&self.id_token.keys);
        id_token.into_iter().chain(self.iap_keys())
    }

    /// Fetches the keys of every mechanism in use now and before they
    /// expire ([`KeyCache::spawn_refresher`]), until the handle is dropped.
    pub fn spawn_refreshers(&self) -> Refreshers {
        Refreshers(self.caches().map(|keys| keys.spawn_refresher()).collect())
    }

    /// Whether requests can be verified: `Ok` once signing keys are held
    /// for every mechanism in use, else why not, in one line.
    pub fn readiness(&self) -> Result<(), String> {
        if self.unresolved_auto {
            return Err("AUTH_AUDIENCE=auto is not resolved".to_owned());
        }
        match self.caches().find(|keys| keys.current().is_none()) {
            None => Ok(()),
            Some(keys) => Err(format!("no signing keys yet from {}", keys.url())),
        }
    }

    /// How many callers the allowlist names; `None` when any caller with a
    /// valid token gets in ([`Invokers::Any`]).
    pub fn allowed_count(&self) -> Option<usize> {
        self.allowed.as_ref().map(HashSet::len)
    }

    /// Checks the request's credentials: the bearer token when ID tokens
    /// are accepted, the IAP assertion when those are; either admits. When
    /// both are present and both refused, the stronger refusal is answered
    /// (a 503 before a 403, before a 401).
    pub async fn check(&self, headers: &HeaderMap) -> Result<Caller, AuthError> {
        let assertion = match &self.iap {
            Some(_) => iap_assertion(headers)?,
            None => None,
        };
        let bearer = if self.accepts_id_tokens() {
            match bearer_token(headers) {
                Err(AuthError::Missing) => None,
                token => Some(token),
            }
        } else {
            None
        };
        match (assertion, bearer) {
            (None, None) if self.accepts_id_tokens() => Err(AuthError::Missing),
            (None, None) => Err(AuthError::AssertionMissing),
            (Some(assertion), None) => self.verify_iap(assertion).await,
            (None, Some(token)) => self.verify(token?).await,
            (Some(assertion), Some(token)) => {
                let iap = match self.verify_iap(assertion).await {
                    Ok(caller) => return Ok(caller),
                    Err(err) => err,
                };
                let id = match token {
                    Ok(token) => match self.verify(token).await {
                        Ok(caller) => return Ok(caller),
                        Err(err) => err,
                    },
                    Err(err) => err,
                };
                Err(if iap.weight() > id.weight() { iap } else { id })
            }
        }
    }

    /// [`Verifier::check`] for a request: an admitted one gets its
    /// [`Caller`] in its extensions, for the handler. Logs the outcome at
    /// debug (never the token).
    pub async fn check_request<B>(&self, req: &mut Request<B>) -> Result<Caller, AuthError> {
        match self.check(req.headers()).await {
            Ok(caller) => {
                debug!(
                    caller = caller.email.as_deref().unwrap_or("-"),
                    subject = caller.subject.as_deref().unwrap_or("-"),
                    mechanism = caller.mechanism.as_str(),
                    email_verified = caller.email_verified,
                    "verified caller"
                );
                req.extensions_mut().insert(caller.clone());
                Ok(caller)
            }
            Err(err) => {
                debug!(%err, "request refused");
                Err(err)
            }
        }
    }

    /// Checks one ID token: its shape, header, signature, claims, then the
    /// allowlist. Work before the signature check is bounded by
    /// [`MAX_TOKEN_BYTES`].
    pub async fn verify(&self, token: &str) -> Result<Caller, AuthError> {
        self.verify_with(&self.id_token, token).await
    }

    /// Checks one IAP assertion as [`Verifier::verify`] checks an ID token,
    /// ES256 with IAP's keys; refused when IAP assertions are not accepted.
    pub async fn verify_iap(&self, assertion: &str) -> Result<Caller, AuthError> {
        let Some(iap) = &self.iap else {
            return Err(AuthError::InvalidAssertion(
                "IAP assertions are not accepted",
            ));
        };
        self.verify_with(iap, assertion)
            .await
            .map_err(|err| match err {
                AuthError::Invalid(reason) => AuthError::InvalidAssertion(reason),
                err => err,
            })
    }

    async fn verify_with(&self, scheme: &Scheme, token: &str) -> Result<Caller, AuthError> {
        let header = unverified_header(token, scheme.alg)?;
        let payload = match scheme.signed.lookup(token, scheme.keys.current()) {
            Some(payload) => payload,
            None => {
                let (key, set) = scheme.key(&header.kid).await?;
                // A JSON object, not a struct: serde would also fill a struct
                // from an array, which is no claims set.
                let payload =
                    jsonwebtoken::decode::<Map<String, Value>>(token, &key, &scheme.signature_only)
                        .map_err(|err| match err.kind() {
                            ErrorKind::InvalidSignature => {
                                AuthError::Invalid("signature does not match the signing key")
                            }
                            _ => AuthError::Invalid("malformed token"),
                        })?
                        .claims;
                scheme.signed.remember(token, &payload, set);
                payload
            }
        };
        let claims = Claims::from(payload);
        self.check_claims(scheme, &claims)?;
        let email = claims
            .email
            .as_ref()
            .and_then(Value::as_str)
            .map(str::to_owned);
        let caller = Caller {
            email_verified: match scheme.mechanism {
                Mechanism::IdToken => claims.email_verified == Some(Value::Bool(true)),
                // IAP signs for the identity it authenticated; its
                // assertions carry no email_verified.
                Mechanism::Iap => email.is_some(),
            },
            email,
            subject: claims
                .sub
                .as_ref()
                .and_then(Value::as_str)
                .map(str::to_owned),
            mechanism: scheme.mechanism,
            hosted_domain: claims
                .hd
                .as_ref()
                .and_then(Value::as_str)
                .map(str::to_owned),
        };
        self.check_allowed(&caller)?;
        Ok(caller)
    }
}

impl Scheme {
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
}

impl Verifier {
    fn check_claims(&self, scheme: &Scheme, claims: &Claims) -> Result<(), AuthError> {
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
            Some(Value::String(iss)) if scheme.issuers.iter().any(|i| i == iss) => {}
            Some(_) => return Err(AuthError::Invalid("wrong issuer")),
        }
        let audience_ok = match &claims.aud {
            None => return Err(AuthError::Invalid("missing aud claim")),
            Some(Value::String(aud)) => scheme.audiences.iter().any(|a| a == aud),
            // RFC 7519: an array of audiences, one of which must be ours.
            Some(Value::Array(auds)) => auds
                .iter()
                .filter_map(Value::as_str)
                .any(|aud| scheme.audiences.iter().any(|a| a == aud)),
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
    hd: Option<Value>,
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
            hd: take("hd"),
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

/// The IAP assertion, if the request has one.
fn iap_assertion(headers: &HeaderMap) -> Result<Option<&str>, AuthError> {
    let mut values = headers.get_all(&IAP_ASSERTION).iter();
    let value = match (values.next(), values.next()) {
        (None, _) => return Ok(None),
        (Some(value), None) => value,
        (Some(_), Some(_)) => {
            return Err(AuthError::InvalidAssertion(
                "more than one X-Goog-IAP-JWT-Assertion header",
            ))
        }
    };
    if value.len() > MAX_TOKEN_BYTES {
        return Err(AuthError::InvalidAssertion("token too large"));
    }
    match value.to_str().map(|v| v.trim_matches(' ')) {
        Ok("") => Err(AuthError::InvalidAssertion("empty assertion")),
        Ok(assertion) => Ok(Some(assertion)),
        Err(_) => Err(AuthError::InvalidAssertion("malformed token")),
    }
}

/// The background key refresh of a [`Verifier`]
/// ([`Verifier::spawn_refreshers`]); stops when dropped.
#[derive(Debug)]
pub struct Refreshers(Vec<JoinHandle<()>>);

impl Drop for Refreshers {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
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
/// base64url parts, a stripped signature, `alg` (the one `alg` the
/// mechanism accepts, RS256 or ES256) and a `kid`.
fn unverified_header(token: &str, alg: &'static str) -> Result<UnverifiedHeader, AuthError> {
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
    if header.alg.as_ref().and_then(Value::as_str) != Some(alg) {
        return Err(AuthError::Invalid(match alg {
            "ES256" => "algorithm not allowed: ES256 only",
            _ => "algorithm not allowed: RS256 only",
        }));
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
            unverified_header(&"a".repeat(MAX_TOKEN_BYTES + 1), "RS256").map(|h| h.kid),
            Err(AuthError::Invalid("token too large"))
        );
    }

    #[test]
    fn stripped_signature_is_named() {
        let err = unverified_header(
            "eyJhbGciOiJSUzI1NiJ9.e30.SIGNATURE_REMOVED_BY_GOOGLE",
            "RS256",
        )
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
