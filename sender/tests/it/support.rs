//! Fakes and helpers shared by the sender's tests.

use cloud_run::Service as _;
use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use base64::Engine as _;
use bytes::Bytes;
pub(crate) use cloud_run::testing::{bounded, client, loopback as server_config, Gate};
use cloud_run::{response::text, testing::Spawned, Body};
use http::{Request, Response, StatusCode};
use sender::{Config, RefreshPolicy, TokenSource};
use tokio::{
    net::TcpListener,
    sync::{watch, Notify},
};

/// `http://ADDR/`.
pub(crate) fn root(addr: SocketAddr) -> String {
    format!("http://{addr}/")
}

/// An unsigned JWT with these claims; the sender reads `exp` only.
pub(crate) fn jwt(exp: u64, aud: &str, serial: usize) -> String {
    let b64 = |s: String| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    format!(
        "{}.{}.{}",
        b64(r#"{"alg":"RS256","kid":"test"}"#.to_owned()),
        b64(format!(
            r#"{{"exp":{exp},"aud":"{aud}","serial":{serial}}}"#
        )),
        b64(format!("signature-{serial}")),
    )
}

/// As [`jwt`], with an `iat`: what Google's tokens carry.
pub(crate) fn jwt_issued(iat: u64, exp: u64, aud: &str, serial: usize) -> String {
    let b64 = |s: String| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    format!(
        "{}.{}.{}",
        b64(r#"{"alg":"RS256","kid":"test"}"#.to_owned()),
        b64(format!(
            r#"{{"iat":{iat},"exp":{exp},"aud":"{aud}","serial":{serial}}}"#
        )),
        b64(format!("signature-{serial}")),
    )
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// What the fake metadata server does with an identity request.
#[derive(Debug, Clone)]
pub(crate) enum MetadataMode {
    /// Mint a token living this long.
    Mint(Duration),
    /// Answer with this status and no token.
    Fail(StatusCode),
    /// Answer with this status and this text.
    Refuse(StatusCode, &'static str),
    /// Hand back a token issued `life` ago minus `left`: a token from the
    /// server's own cache, `left` before its `exp`.
    Cached { life: Duration, left: Duration },
}

/// One identity request, as the fake saw it.
#[derive(Debug, Clone)]
pub(crate) struct IdentityCall {
    pub path: String,
    pub audience: Option<String>,
    pub format: Option<String>,
    pub flavor: Option<String>,
}

/// A fake GCE metadata server.
#[derive(Debug)]
pub(crate) struct FakeMetadata {
    pub calls: Mutex<Vec<IdentityCall>>,
    pub minted: Mutex<Vec<String>>,
    /// The next answers, in order; the last one repeats.
    pub modes: Mutex<Vec<MetadataMode>>,
    /// Extra time each answer takes.
    pub latency: Mutex<Duration>,
    pub in_flight: AtomicUsize,
    pub max_in_flight: AtomicUsize,
    pub answered: Notify,
    /// Bumped when an identity call arrives and when it is answered: what
    /// [`FakeMetadata::until`] waits on, without missing a change.
    progress: watch::Sender<usize>,
}

impl FakeMetadata {
    pub(crate) fn new(modes: Vec<MetadataMode>) -> Arc<Self> {
        Arc::new(Self {
            calls: Mutex::default(),
            minted: Mutex::default(),
            modes: Mutex::new(modes),
            latency: Mutex::new(Duration::ZERO),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            answered: Notify::new(),
            progress: watch::Sender::new(0),
        })
    }

    /// Returns once `done(self)` holds, checked after each identity call
    /// arrives or is answered.
    pub(crate) async fn until(&self, done: impl Fn(&Self) -> bool) {
        let mut changed = self.progress.subscribe();
        while !done(self) {
            changed.changed().await.expect("the fake lives");
        }
    }

    pub(crate) fn call_count(&self) -> usize {
        self.calls.lock().expect("lock").len()
    }

    pub(crate) fn minted(&self) -> Vec<String> {
        self.minted.lock().expect("lock").clone()
    }

    pub(crate) async fn start(self: &Arc<Self>) -> Spawned {
        let listener = TcpListener::bind(server_config().addr).await.expect("bind");
        self.serve_on(listener)
    }

    /// Serves on a listener the test bound, e.g. on a port it reserved.
    pub(crate) fn serve_on(self: &Arc<Self>, listener: TcpListener) -> Spawned {
        let fake = Arc::clone(self);
        let addr = listener.local_addr().expect("addr");
        Spawned::new(addr, move |stop| async move {
            let handler = move |req| {
                let fake = Arc::clone(&fake);
                async move { fake.answer(req).await }
            };
            cloud_run::serve(listener, &server_config(), handler, stop).await;
        })
    }

    async fn answer<B>(&self, req: Request<B>) -> Response<Body> {
        let query: Vec<(String, String)> = req.uri().query().map(url_pairs).unwrap_or_default();
        let get = |k: &str| {
            query
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        };
        let call = IdentityCall {
            path: req.uri().path().to_owned(),
            audience: get("audience"),
            format: get("format"),
            flavor: req
                .headers()
                .get("metadata-flavor")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        };
        if call.path == "/computeMetadata/v1/instance/service-accounts/default/email" {
            return text(
                StatusCode::OK,
                "sender@test-project.iam.gserviceaccount.com",
            );
        }
        let serial = {
            let mut calls = self.calls.lock().expect("lock");
            calls.push(call.clone());
            calls.len()
        };
        self.progress.send_modify(|n| *n += 1);
        let now_in_flight = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight
            .fetch_max(now_in_flight, Ordering::SeqCst);
        let latency = *self.latency.lock().expect("lock");
        if !latency.is_zero() {
            // Simulates a slow dependency; no test relies on it for ordering.
            tokio::time::sleep(latency).await;
        }
        let mode = {
            let mut modes = self.modes.lock().expect("lock");
            if modes.len() > 1 {
                modes.remove(0)
            } else {
                modes[0].clone()
            }
        };
        let response = if call.flavor.as_deref() != Some("Google") {
            text(StatusCode::FORBIDDEN, "missing Metadata-Flavor")
        } else if call.path != "/computeMetadata/v1/instance/service-accounts/default/identity" {
            text(StatusCode::NOT_FOUND, "not here")
        } else {
            match mode {
                MetadataMode::Mint(life) => {
                    let token = jwt(
                        now() + life.as_secs(),
                        call.audience.as_deref().unwrap_or(""),
                        serial,
                    );
                    self.minted.lock().expect("lock").push(token.clone());
                    text(StatusCode::OK, token)
                }
                MetadataMode::Cached { life, left } => {
                    let exp = now() + left.as_secs();
                    let token = jwt_issued(
                        exp - life.as_secs(),
                        exp,
                        call.audience.as_deref().unwrap_or(""),
                        serial,
                    );
                    self.minted.lock().expect("lock").push(token.clone());
                    text(StatusCode::OK, token)
                }
                MetadataMode::Fail(status) => text(status, "no token for you"),
                MetadataMode::Refuse(status, reason) => text(status, reason),
            }
        };
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.answered.notify_waiters();
        self.progress.send_modify(|n| *n += 1);
        response
    }
}

fn url_pairs(query: &str) -> Vec<(String, String)> {
    reqwest::Url::parse(&format!("http://x/?{query}"))
        .expect("query")
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// What the fake receiver does.
#[derive(Debug, Clone)]
pub(crate) enum ReceiverMode {
    /// Answer this status and body.
    Answer(StatusCode, Bytes),
    /// Wait at the gate, then say hello.
    Hold,
    /// Answer with this redirect status, pointing `Location` here.
    Redirect(StatusCode, String),
}

/// A fake receiving service that records what it was sent.
#[derive(Debug)]
pub(crate) struct FakeReceiver {
    pub requests: Mutex<Vec<http::request::Parts>>,
    pub mode: Mutex<ReceiverMode>,
    pub gate: Gate,
    pub arrived: Notify,
}

impl FakeReceiver {
    pub(crate) fn new(mode: ReceiverMode) -> Arc<Self> {
        Arc::new(Self {
            requests: Mutex::default(),
            mode: Mutex::new(mode),
            gate: Gate::default(),
            arrived: Notify::new(),
        })
    }

    pub(crate) fn hello() -> Arc<Self> {
        Self::new(ReceiverMode::Answer(
            StatusCode::OK,
            Bytes::from_static(receiver::HELLO.as_bytes()),
        ))
    }

    pub(crate) async fn start(self: &Arc<Self>) -> Spawned {
        let fake = Arc::clone(self);
        Spawned::serve(server_config(), move |req| {
            let fake = Arc::clone(&fake);
            async move { fake.answer(req).await }
        })
        .await
        .expect("fake receiver")
    }

    /// How many requests it got.
    pub(crate) fn request_count(&self) -> usize {
        self.requests.lock().expect("lock").len()
    }

    /// The `Authorization` values the receiver got, in order.
    pub(crate) fn authorizations(&self) -> Vec<Option<String>> {
        self.requests
            .lock()
            .expect("lock")
            .iter()
            .map(|p| {
                p.headers
                    .get(http::header::AUTHORIZATION)
                    .map(|v| v.to_str().expect("ascii").to_owned())
            })
            .collect()
    }

    async fn answer<B>(&self, req: Request<B>) -> Response<Body> {
        let (parts, _) = req.into_parts();
        self.requests.lock().expect("lock").push(parts);
        self.arrived.notify_waiters();
        let mode = self.mode.lock().expect("lock").clone();
        match mode {
            ReceiverMode::Answer(status, body) => text(status, body),
            ReceiverMode::Hold => {
                self.gate.pass().await;
                text(StatusCode::OK, receiver::HELLO)
            }
            ReceiverMode::Redirect(status, location) => {
                let mut response = text(status, "moved");
                response
                    .headers_mut()
                    .insert(http::header::LOCATION, location.parse().expect("location"));
                response
            }
        }
    }
}

/// Sender settings for relaying to `receiver` with tokens from `metadata`.
pub(crate) fn sender_config(receiver: SocketAddr, metadata: Option<SocketAddr>) -> Config {
    let mut config = Config::new(root(receiver).parse().expect("url"));
    config.server = server_config();
    match metadata {
        Some(addr) => config.metadata_host = addr.to_string(),
        None => config.token_source = TokenSource::None,
    }
    config.request_timeout = Duration::from_secs(5);
    config.metadata_timeout = Duration::from_secs(2);
    config.refresh = RefreshPolicy::default();
    config
}

/// The sender, in-process.
pub(crate) async fn start_sender(config: Config) -> Spawned {
    let listener = TcpListener::bind(config.server.addr).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    Spawned::new(addr, move |stop| async move {
        sender::Sender::new(config)
            .await
            .expect("sender")
            .run(listener, stop)
            .await;
    })
}

/// The tutorial's set-up: fake metadata server, fake receiver, sender.
pub(crate) struct Tutorial {
    pub metadata: Arc<FakeMetadata>,
    pub receiver: Arc<FakeReceiver>,
    pub sender: Spawned,
    servers: (Spawned, Spawned),
}

impl Tutorial {
    pub(crate) async fn start(metadata: Arc<FakeMetadata>, receiver: Arc<FakeReceiver>) -> Self {
        Self::start_with(metadata, receiver, |_| {}).await
    }

    pub(crate) async fn start_with(
        metadata: Arc<FakeMetadata>,
        receiver: Arc<FakeReceiver>,
        tweak: impl FnOnce(&mut Config),
    ) -> Self {
        let metadata_server = metadata.start().await;
        let receiver_server = receiver.start().await;
        let mut config = sender_config(receiver_server.addr(), Some(metadata_server.addr()));
        tweak(&mut config);
        let sender = start_sender(config).await;
        Self {
            metadata,
            receiver,
            sender,
            servers: (metadata_server, receiver_server),
        }
    }

    /// Where the fake receiver listens.
    pub(crate) fn receiver_addr(&self) -> SocketAddr {
        self.servers.1.addr()
    }

    /// `GET /ready` on the sender: status and body.
    pub(crate) async fn ready(&self) -> (StatusCode, String) {
        ready(self.sender.addr()).await
    }

    /// `GET /` on the sender: status and body.
    pub(crate) async fn get(&self) -> (StatusCode, String) {
        let response = client()
            .get(root(self.sender.addr()))
            .send()
            .await
            .expect("sender answers");
        let status = response.status();
        (status, response.text().await.expect("body"))
    }
}

/// `GET /ready` on a sender at `addr`: status and body.
pub(crate) async fn ready(addr: SocketAddr) -> (StatusCode, String) {
    let response = client()
        .get(format!("http://{addr}/ready"))
        .send()
        .await
        .expect("sender answers");
    let status = response.status();
    (status, response.text().await.expect("body"))
}

/// A long-lived token, as the real metadata server mints.
pub(crate) fn hour() -> MetadataMode {
    MetadataMode::Mint(Duration::from_secs(3600))
}

/// The metadata emulator in-process, its identity requests counted.
pub(crate) struct Emulator {
    pub server: Spawned,
    pub identity_calls: Arc<AtomicUsize>,
}

impl Emulator {
    /// An emulator minting tokens that live `lifetime`, as
    /// `metadata-emulator --token-lifetime` does.
    pub(crate) async fn start(lifetime: Duration) -> Self {
        let mut config = metadata_emulator::Config::new(0);
        config.token_lifetime = lifetime;
        let keys = metadata_emulator::SigningKeys::generate().expect("key");
        let emulator = Arc::new(metadata_emulator::Emulator::with_keys(config, keys));
        let identity_calls = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&identity_calls);
        let server = Spawned::serve(server_config(), move |req| {
            let (emulator, counted) = (Arc::clone(&emulator), Arc::clone(&counted));
            async move {
                if req.uri().path().ends_with("/identity") {
                    counted.fetch_add(1, Ordering::SeqCst);
                }
                emulator.answer(&req)
            }
        })
        .await
        .expect("emulator");
        Self {
            server,
            identity_calls,
        }
    }
}
