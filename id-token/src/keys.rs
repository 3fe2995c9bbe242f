//! The signing keys ID tokens are checked against: fetched from a JWKS
//! endpoint, cached for its `Cache-Control: max-age`, refreshed in the
//! background before that runs out, and refetched early (rate-limited) when a
//! token names a key the cache does not hold, which is how a rotation is
//! picked up. One fetch at a time; a failed fetch keeps the last good keys,
//! but a key missing from them is then "unconfirmed", not "unknown". A cache
//! keeps the keys of one type only, the one its verifier's algorithm needs:
//! RSA for RS256 (ID tokens), EC P-256 for ES256 (IAP assertions).

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, SystemTime},
};

use cloud_run::{
    client::{read_capped, BodyError},
    response::Chain,
    single_flight::{SingleFlight, Waiter},
};
use http::{header, HeaderMap, StatusCode};
use jsonwebtoken::{Algorithm, DecodingKey};
use reqwest::Url;
use tokio::{sync::watch, task::JoinHandle};
use tracing::{debug, info, warn};

use crate::clock::Clock;

/// When keys are fetched.
#[derive(Debug, Clone, Copy)]
pub struct KeyPolicy {
    /// The longest wait for the key endpoint's whole answer.
    pub fetch_timeout: Duration,
    /// A token naming an unknown key (or any token while no keys are held)
    /// triggers a fetch at most once per this, however many such tokens
    /// come: a flood of made-up key ids costs a handful of fetches a minute.
    pub refetch_interval: Duration,
    /// The background refresh never comes sooner than this after a fetch,
    /// whatever `max-age` says.
    pub min_refresh: Duration,
    /// Nor later than this.
    pub max_refresh: Duration,
    /// How long keys served without `max-age` are taken to be fresh.
    pub default_lifetime: Duration,
    /// The first retry after a failed background fetch; each further one
    /// waits twice as long, up to `retry_max`.
    pub retry_min: Duration,
    /// The longest wait between background retries.
    pub retry_max: Duration,
    /// A larger key set is refused (Google's is about 2 KB).
    pub max_bytes: usize,
}

impl Default for KeyPolicy {
    fn default() -> Self {
        Self {
            fetch_timeout: Duration::from_secs(5),
            refetch_interval: Duration::from_secs(10),
            min_refresh: Duration::from_secs(30),
            max_refresh: Duration::from_secs(24 * 3600),
            default_lifetime: Duration::from_secs(300),
            retry_min: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
            max_bytes: 256 * 1024,
        }
    }
}

impl KeyPolicy {
    /// When to refresh keys that stay fresh for `lifetime`: once four
    /// fifths of it have passed, so new keys are in before the old expire.
    pub fn refresh_delay(&self, lifetime: Duration) -> Duration {
        (lifetime - lifetime / 5).clamp(self.min_refresh, self.max_refresh.max(self.min_refresh))
    }
}

/// Why the keys could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum KeyFetchError {
    /// No connection could be made.
    #[error("key endpoint unreachable")]
    Unreachable(#[source] reqwest::Error),
    /// No whole answer within the fetch timeout.
    #[error("key endpoint did not answer in time")]
    Timeout,
    /// It answered with an error status.
    #[error("key endpoint answered {0}")]
    Status(StatusCode),
    /// Its answer broke off or was too large.
    #[error("key endpoint's answer was unreadable")]
    Body(#[source] BodyError),
    /// Its answer is not a JWKS.
    #[error("key endpoint's answer is not a JWKS")]
    NotJwks(#[source] serde_json::Error),
    /// The JWKS holds no signing key with a `kid` of the type the cache
    /// keeps (RSA for RS256, EC P-256 for ES256).
    #[error("key set holds no usable key of the expected type")]
    NoUsableKeys,
    /// The fetch ended without an answer (the runtime is shutting down).
    #[error("key fetch abandoned")]
    Abandoned,
}

/// One fetched key set.
#[derive(Debug)]
pub struct VerifyingKeys {
    keys: HashMap<String, DecodingKey>,
    lifetime: Duration,
}

impl VerifyingKeys {
    /// The key with this `kid`.
    pub fn get(&self, kid: &str) -> Option<&DecodingKey> {
        self.keys.get(kid)
    }

    /// The key ids, sorted.
    pub fn kids(&self) -> BTreeSet<&str> {
        self.keys.keys().map(String::as_str).collect()
    }

    /// How long the endpoint said the set stays fresh.
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }
}

/// Parses a JWKS, keeping the keys usable for `algorithm`'s signatures:
/// RSA keys for RS256, EC keys on P-256 for ES256. Other keys (other types,
/// curves, algorithms or uses, no `kid`) are skipped, not errors: a key set
/// may carry keys for other purposes.
pub(crate) fn parse_jwks(
    body: &[u8],
    lifetime: Duration,
    algorithm: Algorithm,
) -> Result<VerifyingKeys, KeyFetchError> {
    #[derive(serde::Deserialize)]
    struct Jwks {
        keys: Vec<serde_json::Value>,
    }
    #[derive(serde::Deserialize)]
    struct Jwk {
        kty: String,
        kid: Option<String>,
        alg: Option<String>,
        #[serde(rename = "use")]
        use_: Option<String>,
        n: Option<String>,
        e: Option<String>,
        crv: Option<String>,
        x: Option<String>,
        y: Option<String>,
    }
    let jwks: Jwks = serde_json::from_slice(body).map_err(KeyFetchError::NotJwks)?;
    let mut keys = HashMap::new();
    for value in jwks.keys {
        let Ok(jwk) = serde_json::from_value::<Jwk>(value) else {
            continue;
        };
        let (kty, alg_name) = match algorithm {
            Algorithm::RS256 => ("RSA", "RS256"),
            Algorithm::ES256 => ("EC", "ES256"),
            _ => continue,
        };
        let usable = jwk.kty == kty
            && jwk.alg.as_deref().is_none_or(|alg| alg == alg_name)
            && jwk.use_.as_deref().is_none_or(|use_| use_ == "sig");
        let Some(kid) = jwk.kid.filter(|_| usable) else {
            continue;
        };
        let key = match algorithm {
            Algorithm::RS256 => match (jwk.n, jwk.e) {
                (Some(n), Some(e)) => DecodingKey::from_rsa_components(&n, &e).ok(),
                _ => None,
            },
            // The curve decides the algorithm as much as the key type does:
            // a P-384 key is no ES256 key.
            _ => match (jwk.crv.as_deref(), jwk.x, jwk.y) {
                (Some("P-256"), Some(x), Some(y))
                    if is_p256_coordinate(&x) && is_p256_coordinate(&y) =>
                {
                    DecodingKey::from_ec_components(&x, &y).ok()
                }
                _ => None,
            },
        };
        if let Some(key) = key {
            keys.insert(kid, key);
        }
    }
    if keys.is_empty() {
        return Err(KeyFetchError::NoUsableKeys);
    }
    Ok(VerifyingKeys { keys, lifetime })
}

/// Whether `value` is a P-256 point coordinate: 32 bytes, base64url.
fn is_p256_coordinate(value: &str) -> bool {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(value)
        .is_ok_and(|bytes| bytes.len() == 32)
}

/// How long an answer stays fresh: `Cache-Control: max-age` less `Age`
/// (RFC 9111), zero for `no-cache` or `no-store`, `None` if not said.
pub(crate) fn freshness(headers: &HeaderMap) -> Option<Duration> {
    let mut max_age = None;
    for value in headers.get_all(header::CACHE_CONTROL) {
        let Ok(value) = value.to_str() else { continue };
        for directive in value.split(',').map(str::trim) {
            let (name, arg) = directive.split_once('=').unwrap_or((directive, ""));
            let name = name.trim();
            if name.eq_ignore_ascii_case("no-cache") || name.eq_ignore_ascii_case("no-store") {
                return Some(Duration::ZERO);
            }
            if name.eq_ignore_ascii_case("max-age") {
                max_age = arg.trim().trim_matches('"').parse::<u64>().ok();
            }
        }
    }
    let age = headers
        .get(header::AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    max_age.map(|max_age| Duration::from_secs(max_age.saturating_sub(age)))
}

/// What a fetch came to: the new keys' lifetime, or why there are none.
type Outcome = Result<Duration, Arc<KeyFetchError>>;

/// The keys a request gets after asking for a refetch.
#[derive(Debug)]
pub(crate) enum OnDemand {
    /// Keys the endpoint served since the refetch asked for (by this
    /// request or, when rate-limited, an earlier one) began: a key they
    /// lack is unknown to the endpoint.
    Current(Arc<VerifyingKeys>),
    /// The refetch failed, or was rate-limited after one that failed: the
    /// keys held, if any, may lack a key rotated in since they were fetched.
    Unconfirmed(Option<Arc<VerifyingKeys>>),
}

#[derive(Debug, Default)]
struct State {
    keys: Option<Arc<VerifyingKeys>>,
    /// Everyone who needs fresh keys waits on the fetch in flight rather
    /// than starting another.
    flight: SingleFlight<Outcome>,
    /// When the last fetch asked for by a request (not the background) began.
    last_on_demand: Option<SystemTime>,
    /// Successful fetches so far.
    loaded: u64,
    /// `loaded` when the last on-demand fetch began: more since means the
    /// keys held were confirmed after that request asked.
    loaded_at_on_demand: u64,
}

/// The signing keys of one JWKS endpoint.
#[derive(Debug)]
pub struct KeyCache {
    http: reqwest::Client,
    url: Url,
    algorithm: Algorithm,
    policy: KeyPolicy,
    clock: Clock,
    state: Mutex<State>,
    loaded: watch::Sender<u64>,
}

impl KeyCache {
    /// An empty cache for the RSA keys (RS256, as for ID tokens) at `url`;
    /// nothing is fetched until [`KeyCache::spawn_refresher`] or a request
    /// asks.
    pub fn new(http: reqwest::Client, url: Url, policy: KeyPolicy, clock: Clock) -> Arc<Self> {
        Self::for_algorithm(http, url, Algorithm::RS256, policy, clock)
    }

    /// An empty cache for the keys at `url` that verify `algorithm` (RS256
    /// or ES256).
    pub(crate) fn for_algorithm(
        http: reqwest::Client,
        url: Url,
        algorithm: Algorithm,
        policy: KeyPolicy,
        clock: Clock,
    ) -> Arc<Self> {
        Arc::new(Self {
            http,
            url,
            algorithm,
            policy,
            clock,
            state: Mutex::default(),
            loaded: watch::Sender::new(0),
        })
    }

    /// The key endpoint.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The keys held now, if any were ever fetched.
    pub fn current(&self) -> Option<Arc<VerifyingKeys>> {
        self.lock().keys.clone()
    }

    /// Counts successful fetches; lets a caller wait for keys to arrive.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.loaded.subscribe()
    }

    /// Fetches the keys now, or joins the fetch already in flight.
    pub async fn refresh(self: &Arc<Self>) -> Result<Duration, Arc<KeyFetchError>> {
        let waiter = self.fetch(&mut self.lock());
        wait(waiter).await
    }

    /// For a request whose token names a key not held (or while no keys
    /// are held): the keys after joining the fetch in flight or starting
    /// one, if the rate limit allows, and whether they are the endpoint's
    /// current set.
    pub(crate) async fn refresh_on_demand(self: &Arc<Self>) -> OnDemand {
        let waiter = {
            let mut state = self.lock();
            match state.flight.join() {
                Some(waiter) => waiter,
                None => {
                    let now = self.clock.now();
                    let limited = state.last_on_demand.is_some_and(|last| {
                        // A clock stepped backwards does not block refetches.
                        now.duration_since(last)
                            .is_ok_and(|since| since < self.policy.refetch_interval)
                    });
                    if limited {
                        // The last on-demand fetch tells, or a later one.
                        let keys = state.keys.clone();
                        return match keys {
                            Some(keys) if state.loaded > state.loaded_at_on_demand => {
                                OnDemand::Current(keys)
                            }
                            keys => OnDemand::Unconfirmed(keys),
                        };
                    }
                    state.last_on_demand = Some(now);
                    state.loaded_at_on_demand = state.loaded;
                    self.fetch(&mut state)
                }
            }
        };
        let outcome = wait(waiter).await;
        match (outcome, self.current()) {
            (Ok(_), Some(keys)) => OnDemand::Current(keys),
            (_, keys) => OnDemand::Unconfirmed(keys),
        }
    }

    /// Fetches the keys at start and then before they expire, retrying with
    /// backoff after failures, until the handle is aborted or the cache
    /// dropped.
    pub fn spawn_refresher(self: &Arc<Self>) -> JoinHandle<()> {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut retry: Option<Duration> = None;
            loop {
                let Some(cache) = weak.upgrade() else { return };
                let delay = match cache.refresh().await {
                    Ok(lifetime) => {
                        retry = None;
                        cache.policy.refresh_delay(lifetime)
                    }
                    Err(_) => {
                        let next = retry.map_or(cache.policy.retry_min, |last| {
                            last.saturating_mul(2).min(cache.policy.retry_max)
                        });
                        retry = Some(next);
                        next
                    }
                };
                drop(cache);
                tokio::time::sleep(delay).await;
            }
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Joins the fetch in flight, or starts one.
    fn fetch(self: &Arc<Self>, state: &mut State) -> Waiter<Outcome> {
        state.flight.join_or_start(|landing| {
            let cache = Arc::clone(self);
            tokio::spawn(async move {
                let fetched = cache.fetch_keys().await;
                let mut state = cache.lock();
                let outcome = match fetched {
                    Ok(set) => {
                        let lifetime = set.lifetime();
                        let changed = state
                            .keys
                            .as_ref()
                            .is_none_or(|old| old.kids() != set.kids());
                        if changed {
                            info!(url = %cache.url, kids = ?set.kids(), max_age = ?lifetime, "signing keys loaded");
                        } else {
                            debug!(url = %cache.url, max_age = ?lifetime, "signing keys refreshed");
                        }
                        state.keys = Some(Arc::new(set));
                        state.loaded += 1;
                        cache.loaded.send_replace(state.loaded);
                        Ok(lifetime)
                    }
                    Err(err) => {
                        warn!(
                            url = %cache.url,
                            algorithm = ?cache.algorithm,
                            error = %Chain(&err),
                            keeping_old_keys = state.keys.is_some(),
                            "cannot fetch signing keys"
                        );
                        Err(Arc::new(err))
                    }
                };
                landing.land(&mut state.flight, outcome);
            });
        })
    }

    async fn fetch_keys(&self) -> Result<VerifyingKeys, KeyFetchError> {
        let timed_out = |err: &reqwest::Error| err.is_timeout();
        let response = self
            .http
            .get(self.url.clone())
            .timeout(self.policy.fetch_timeout)
            .send()
            .await
            .map_err(|err| {
                if timed_out(&err) {
                    KeyFetchError::Timeout
                } else {
                    KeyFetchError::Unreachable(err)
                }
            })?;
        if !response.status().is_success() {
            return Err(KeyFetchError::Status(response.status()));
        }
        let lifetime = freshness(response.headers()).unwrap_or(self.policy.default_lifetime);
        let body = read_capped(response, self.policy.max_bytes)
            .await
            .map_err(|err| match err {
                BodyError::Read(e) if timed_out(&e) => KeyFetchError::Timeout,
                err => KeyFetchError::Body(err),
            })?;
        parse_jwks(&body, lifetime, self.algorithm)
    }
}

async fn wait(waiter: Waiter<Outcome>) -> Outcome {
    // Each fetch is bounded by `fetch_timeout`; one that vanished (its
    // runtime shutting down) releases its waiters.
    waiter
        .wait(None)
        .await
        .unwrap_or_else(|_| Err(Arc::new(KeyFetchError::Abandoned)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn max_age_less_age() {
        let secs = |s| Some(Duration::from_secs(s));
        assert_eq!(
            freshness(&headers(&[(
                "cache-control",
                "public, max-age=19889, must-revalidate, no-transform"
            )])),
            secs(19889)
        );
        assert_eq!(
            freshness(&headers(&[
                ("cache-control", "max-age=600"),
                ("age", "100")
            ])),
            secs(500)
        );
        assert_eq!(
            freshness(&headers(&[("cache-control", "Max-Age=\"60\"")])),
            secs(60)
        );
        assert_eq!(
            freshness(&headers(&[("cache-control", "max-age=60"), ("age", "99")])),
            secs(0)
        );
        assert_eq!(
            freshness(&headers(&[("cache-control", "no-cache, max-age=60")])),
            secs(0)
        );
        assert_eq!(freshness(&headers(&[("cache-control", "public")])), None);
        assert_eq!(freshness(&headers(&[])), None);
    }

    #[test]
    fn refresh_comes_before_expiry_within_bounds() {
        let policy = KeyPolicy::default();
        let hours = |h: u64| Duration::from_secs(h * 3600);
        assert_eq!(policy.refresh_delay(hours(5)), hours(4));
        assert_eq!(policy.refresh_delay(Duration::ZERO), policy.min_refresh);
        assert_eq!(policy.refresh_delay(hours(1000)), policy.max_refresh);
    }

    #[test]
    fn jwks_keeps_rsa_signing_keys_only() {
        let body = br#"{"keys":[
            {"kty":"RSA","kid":"a","n":"AQAB","e":"AQAB","alg":"RS256","use":"sig"},
            {"kty":"RSA","kid":"b","n":"AQAB","e":"AQAB"},
            {"kty":"RSA","kid":"enc","n":"AQAB","e":"AQAB","use":"enc"},
            {"kty":"RSA","kid":"ps","n":"AQAB","e":"AQAB","alg":"PS256"},
            {"kty":"RSA","n":"AQAB","e":"AQAB"},
            {"kty":"EC","kid":"ec","crv":"P-256","x":"AA","y":"AA"},
            {"kty":"oct","kid":"hmac","k":"c2VjcmV0"},
            {"kty":"RSA","kid":"bad","n":"!!!","e":"AQAB"},
            "not even an object"
        ]}"#;
        let set = parse_jwks(body, Duration::from_secs(1), Algorithm::RS256).expect("key set");
        assert_eq!(set.kids(), BTreeSet::from(["a", "b"]));
    }

    #[test]
    fn jwks_keeps_p256_keys_only_for_es256() {
        // 32 bytes each; the point need not be valid to be parsed.
        let c = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        let c48 = "A".repeat(64);
        let body = format!(
            r#"{{"keys":[
            {{"kty":"EC","kid":"a","crv":"P-256","x":"{c}","y":"{c}","alg":"ES256","use":"sig"}},
            {{"kty":"EC","kid":"b","crv":"P-256","x":"{c}","y":"{c}"}},
            {{"kty":"EC","kid":"p384","crv":"P-384","x":"{c48}","y":"{c48}","alg":"ES384"}},
            {{"kty":"EC","kid":"p384-as-p256","crv":"P-256","x":"{c48}","y":"{c48}"}},
            {{"kty":"EC","kid":"es384","crv":"P-256","x":"{c}","y":"{c}","alg":"ES384"}},
            {{"kty":"EC","kid":"enc","crv":"P-256","x":"{c}","y":"{c}","use":"enc"}},
            {{"kty":"EC","crv":"P-256","x":"{c}","y":"{c}"}},
            {{"kty":"RSA","kid":"rsa","n":"AQAB","e":"AQAB"}}
        ]}}"#
        );
        let set =
            parse_jwks(body.as_bytes(), Duration::from_secs(1), Algorithm::ES256).expect("key set");
        assert_eq!(set.kids(), BTreeSet::from(["a", "b"]));
        // And no EC key for RS256.
        assert!(matches!(
            parse_jwks(
                br#"{"keys":[{"kty":"EC","kid":"a","crv":"P-256","x":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA","y":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}]}"#,
                Duration::ZERO,
                Algorithm::RS256
            ),
            Err(KeyFetchError::NoUsableKeys)
        ));
    }

    #[test]
    fn not_a_usable_jwks() {
        assert!(matches!(
            parse_jwks(b"{\"keys\":[]}", Duration::ZERO, Algorithm::RS256),
            Err(KeyFetchError::NoUsableKeys)
        ));
        assert!(matches!(
            parse_jwks(
                b"{\"kid1\":\"-----BEGIN CERTIFICATE-----\"}",
                Duration::ZERO,
                Algorithm::RS256
            ),
            Err(KeyFetchError::NotJwks(_))
        ));
        assert!(matches!(
            parse_jwks(b"<html>", Duration::ZERO, Algorithm::RS256),
            Err(KeyFetchError::NotJwks(_))
        ));
    }
}
