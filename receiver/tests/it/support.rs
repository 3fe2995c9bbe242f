//! Helpers shared by the receiver's tests.

use cloud_run::Service as _;
use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, SystemTime},
};

pub(crate) use cloud_run::testing::{bounded, client, Gate};
use cloud_run::{response::text, testing::Spawned, Body, ServerConfig};
use http::{header, HeaderValue, Request, Response, StatusCode};
use id_token::KeyCache;
use receiver::{AuthConfig, Clock, IapConfig, Invokers, Receiver};
use serde_json::Value;
use tokio::{net::TcpListener, sync::Notify};

use crate::tokens::{self, AUDIENCE, SECOND_AUDIENCE};

/// Server settings for tests: loopback, any port, short timeouts (a
/// 500 ms header timeout, for the slow-client test).
pub(crate) fn server_config() -> ServerConfig {
    ServerConfig {
        header_read_timeout: Duration::from_millis(500),
        ..cloud_run::testing::loopback()
    }
}

/// The receiver, in-process.
pub(crate) async fn start_receiver(config: receiver::Config) -> Spawned {
    let listener = TcpListener::bind(config.server.addr).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    Spawned::new(addr, move |stop| async move {
        receiver::Receiver::new(config)
            .await
            .expect("receiver")
            .run(listener, stop)
            .await;
    })
}

/// A receiver with test settings.
pub(crate) async fn receiver() -> Spawned {
    start_receiver(receiver::Config {
        server: server_config(),
        auth: None,
    })
    .await
}

/// `http://ADDR/PATH`.
pub(crate) fn url(addr: SocketAddr, path: &str) -> String {
    format!("http://{addr}{path}")
}

/// Unix seconds now.
pub(crate) fn now() -> i64 {
    Clock::system().unix_seconds()
}

/// A clock the test sets and steps.
#[derive(Debug, Clone)]
pub(crate) struct ManualClock(Arc<Mutex<SystemTime>>);

impl ManualClock {
    /// Stopped at the current time.
    pub(crate) fn new() -> Self {
        Self(Arc::new(Mutex::new(SystemTime::now())))
    }

    /// The clock to give the verifier.
    pub(crate) fn clock(&self) -> Clock {
        let time = Arc::clone(&self.0);
        Clock::from_fn(move || *time.lock().expect("lock"))
    }

    /// Moves time forward.
    pub(crate) fn advance(&self, by: Duration) {
        *self.0.lock().expect("lock") += by;
    }

    /// Unix seconds on this clock.
    pub(crate) fn unix_seconds(&self) -> i64 {
        self.clock().unix_seconds()
    }
}

/// What the fake key endpoint answers.
#[derive(Debug, Clone)]
pub(crate) enum JwksMode {
    /// This JWKS, with `Cache-Control: public, max-age=N`.
    Serve(Value, u64),
    /// This status and no keys.
    Fail(StatusCode),
    /// No answer at all, ever: the fetch times out.
    Hang,
}

/// A fake JWKS endpoint that counts its fetches.
#[derive(Debug)]
pub(crate) struct FakeJwks {
    mode: Mutex<JwksMode>,
    fetches: AtomicUsize,
    fetched: Notify,
    /// Answers wait here; open unless a test closes it.
    pub gate: Gate,
    arrivals: AtomicUsize,
    arrived: Notify,
}

impl FakeJwks {
    /// Serving `keys` with `max-age=max_age`.
    pub(crate) fn serving(keys: &[&tokens::TestKey], max_age: u64) -> Arc<Self> {
        Self::new(JwksMode::Serve(tokens::jwks(keys), max_age))
    }

    /// Answering `mode`.
    pub(crate) fn new(mode: JwksMode) -> Arc<Self> {
        Self::gated(mode, Gate::opened())
    }

    /// Answering `mode` once `gate` is open.
    pub(crate) fn gated(mode: JwksMode, gate: Gate) -> Arc<Self> {
        Arc::new(Self {
            mode: Mutex::new(mode),
            fetches: AtomicUsize::new(0),
            fetched: Notify::new(),
            gate,
            arrivals: AtomicUsize::new(0),
            arrived: Notify::new(),
        })
    }

    /// Waits until at least `n` fetches have arrived (answered or not).
    pub(crate) async fn wait_for_arrivals(&self, n: usize) {
        loop {
            let arrived = self.arrived.notified();
            if self.arrivals.load(Ordering::SeqCst) >= n {
                return;
            }
            arrived.await;
        }
    }

    /// How many fetches have arrived (answered or not).
    pub(crate) fn arrivals(&self) -> usize {
        self.arrivals.load(Ordering::SeqCst)
    }

    /// Changes what later fetches get.
    pub(crate) fn set(&self, mode: JwksMode) {
        *self.mode.lock().expect("lock") = mode;
    }

    /// How many fetches it has answered.
    pub(crate) fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    /// Waits until it has answered at least `n` fetches.
    pub(crate) async fn wait_for_fetches(&self, n: usize) {
        loop {
            let fetched = self.fetched.notified();
            if self.fetches() >= n {
                return;
            }
            fetched.await;
        }
    }

    /// Serves on 127.0.0.1 until dropped.
    pub(crate) async fn start(self: &Arc<Self>) -> Spawned {
        let fake = Arc::clone(self);
        Spawned::serve(server_config(), move |req| {
            let fake = Arc::clone(&fake);
            async move { fake.answer(req).await }
        })
        .await
        .expect("fake key endpoint")
    }

    async fn answer<B>(&self, req: Request<B>) -> Response<Body> {
        self.arrivals.fetch_add(1, Ordering::SeqCst);
        self.arrived.notify_waiters();
        self.gate.pass().await;
        let mode = self.mode.lock().expect("lock").clone();
        let response = if req.uri().path() != "/certs" {
            text(StatusCode::NOT_FOUND, "not here")
        } else {
            match mode {
                JwksMode::Serve(jwks, max_age) => {
                    let mut response = text(StatusCode::OK, jwks.to_string());
                    let headers = response.headers_mut();
                    headers.insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json; charset=UTF-8"),
                    );
                    headers.insert(
                        header::CACHE_CONTROL,
                        HeaderValue::try_from(format!(
                            "public, max-age={max_age}, must-revalidate, no-transform"
                        ))
                        .expect("header"),
                    );
                    response
                }
                JwksMode::Fail(status) => text(status, "no keys today"),
                JwksMode::Hang => std::future::pending().await,
            }
        };
        self.fetches.fetch_add(1, Ordering::SeqCst);
        self.fetched.notify_waiters();
        response
    }
}

/// Verification settings for the token set, keys from `jwks`: two
/// audiences, Google's issuers, the allowlist, short retries.
pub(crate) fn auth_config(jwks: SocketAddr) -> AuthConfig {
    let mut config = AuthConfig::google(
        vec![AUDIENCE.to_owned(), SECOND_AUDIENCE.to_owned()],
        Invokers::only(tokens::allowlist()),
    );
    config.jwks_url = format!("http://{jwks}/certs").parse().expect("url");
    config.keys.fetch_timeout = Duration::from_secs(2);
    config.keys.retry_min = Duration::from_millis(20);
    config.keys.retry_max = Duration::from_millis(200);
    config
}

/// Verification of IAP assertions only, keys from `iap_jwks`, for the
/// test audience and the allowlist.
pub(crate) fn iap_auth_config(iap_jwks: SocketAddr) -> AuthConfig {
    let mut config = auth_config(iap_jwks);
    config.audiences.clear();
    let mut iap = IapConfig::google(vec![tokens::IAP_AUDIENCE.to_owned()]);
    iap.jwks_url = format!("http://{iap_jwks}/certs").parse().expect("url");
    config.iap = Some(iap);
    config
}

/// A verifying receiver, in-process, and its key caches.
pub(crate) struct Verifying {
    pub server: Spawned,
    pub keys: Arc<KeyCache>,
    pub iap_keys: Option<Arc<KeyCache>>,
    client: reqwest::Client,
}

impl Verifying {
    /// Starts a receiver verifying per `auth`; keys are fetched in the
    /// background as in production.
    pub(crate) async fn start(auth: AuthConfig) -> Self {
        let receiver = Receiver::new(receiver::Config {
            server: server_config(),
            auth: Some(auth),
        })
        .await
        .expect("receiver");
        let verifier = receiver.verifier().expect("verifying");
        let keys = Arc::clone(verifier.keys());
        let iap_keys = verifier.iap_keys().cloned();
        let listener = TcpListener::bind(receiver.addr()).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = Spawned::new(addr, move |stop| receiver.run(listener, stop));
        Self {
            server,
            keys,
            iap_keys,
            client: client(),
        }
    }

    /// Starts one and waits until it holds keys (IAP's too, when it
    /// verifies IAP assertions; ID tokens' only when it accepts them).
    pub(crate) async fn ready(auth: AuthConfig) -> Self {
        let id_tokens = !auth.audiences.is_empty();
        let this = Self::start(auth).await;
        if id_tokens {
            this.keys_loaded(1).await;
        }
        if let Some(iap) = &this.iap_keys {
            iap.subscribe()
                .wait_for(|loaded| *loaded >= 1)
                .await
                .expect("key cache alive");
        }
        this
    }

    /// Waits until `n` key fetches have succeeded.
    pub(crate) async fn keys_loaded(&self, n: u64) {
        self.keys
            .subscribe()
            .wait_for(|loaded| *loaded >= n)
            .await
            .expect("key cache alive");
    }

    /// `GET /` with `Authorization: Bearer TOKEN`.
    pub(crate) async fn get_with(&self, token: &str) -> reqwest::Response {
        self.client
            .get(url(self.server.addr(), "/"))
            .bearer_auth(token)
            .send()
            .await
            .expect("response")
    }

    /// `GET /` with these headers.
    pub(crate) async fn get(&self, headers: &[(&str, &str)]) -> reqwest::Response {
        self.get_path("/", headers).await
    }

    /// `GET PATH` with these headers.
    pub(crate) async fn get_path(&self, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut request = self.client.get(url(self.server.addr(), path));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.expect("response")
    }
}

/// The `error_description` of a 401's challenge, checking its RFC 6750 form.
pub(crate) fn error_description(response: &reqwest::Response) -> String {
    let challenge = response.headers()[header::WWW_AUTHENTICATE]
        .to_str()
        .expect("ascii challenge");
    let (_, description) = challenge
        .split_once(", error=\"invalid_token\", error_description=\"")
        .unwrap_or_else(|| panic!("not an invalid_token challenge: {challenge}"));
    assert!(challenge.starts_with("Bearer realm=\""), "{challenge}");
    description.trim_end_matches('"').to_owned()
}

/// The metadata emulator, in-process on 127.0.0.1, serving this project
/// number and region.
pub(crate) async fn metadata(project_number: u64, region: &str) -> Spawned {
    let mut config = metadata_emulator::Config::new(0);
    config.project_number = Some(project_number);
    config.region = region.to_owned();
    let emulator = Arc::new(metadata_emulator::Emulator::new(config).expect("emulator"));
    Spawned::serve(server_config(), move |req| {
        let emulator = Arc::clone(&emulator);
        async move { emulator.answer(&req) }
    })
    .await
    .expect("metadata emulator")
}
