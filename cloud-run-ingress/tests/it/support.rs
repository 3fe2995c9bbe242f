//! A key endpoint, tokens signed with a test key, a container stand-in that
//! records what it receives, and an ingress in front of it.

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use cloud_run::{
    response::text,
    testing::{loopback, Spawned},
    Service as _,
};
use cloud_run_ingress::{Config, Ingress};
use http::{HeaderMap, StatusCode, Version};
use metadata_emulator::SigningKeys;
use serde_json::json;
use tokio::net::TcpListener;

pub(crate) use cloud_run::testing::{bounded, client};

/// The audience the ingress accepts: the service's URL.
pub(crate) const AUDIENCE: &str = "https://receiving-service-123456789012.us-central1.run.app";

/// The tutorial's dedicated account, and the default compute account.
pub(crate) const CALLER: &str = "calling-service-sa@local-project.iam.gserviceaccount.com";
pub(crate) const COMPUTE: &str = "123456789012-compute@developer.gserviceaccount.com";

fn key_file() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../metadata-emulator/tests/keys/test-key-1.pkcs8.pem")
}

/// The test key, as the emulator would sign with it.
pub(crate) fn keys() -> SigningKeys {
    SigningKeys::from_files(&[key_file()]).expect("test key")
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// Google ID token claims for `email`, valid for `audience`.
pub(crate) fn claims(email: &str, audience: &str) -> serde_json::Value {
    let now = now();
    json!({
        "iss": "https://accounts.google.com",
        "aud": audience,
        "azp": "1234",
        "sub": "1234",
        "email": email,
        "email_verified": true,
        "iat": now,
        "exp": now + 3600,
    })
}

/// `claims` with some replaced.
pub(crate) fn with(claims: &serde_json::Value, changes: serde_json::Value) -> serde_json::Value {
    let mut claims = claims.clone();
    for (key, value) in changes.as_object().expect("object") {
        claims[key] = value.clone();
    }
    claims
}

/// A token signed with the test key.
pub(crate) fn signed(claims: &serde_json::Value) -> String {
    keys().sign(claims).expect("sign")
}

/// A valid ID token of `email` for the service.
pub(crate) fn token(email: &str) -> String {
    signed(&claims(email, AUDIENCE))
}

/// What the container received.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub(crate) version: Version,
    pub(crate) path: String,
    pub(crate) headers: HeaderMap,
}

/// A container: answers `hello` (or never, when `hang`), recording each
/// request.
pub(crate) struct Container {
    pub(crate) server: Spawned,
    pub(crate) seen: Arc<Mutex<Vec<Seen>>>,
}

impl Container {
    pub(crate) async fn start(hang: bool) -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&seen);
        let server = Spawned::serve(loopback(), move |req: http::Request<_>| {
            record.lock().expect("lock").push(Seen {
                version: req.version(),
                path: req
                    .uri()
                    .path_and_query()
                    .map_or("/", |p| p.as_str())
                    .to_owned(),
                headers: req.headers().clone(),
            });
            async move {
                if hang {
                    std::future::pending::<()>().await;
                }
                text(StatusCode::OK, "hello")
            }
        })
        .await
        .expect("container");
        Self { server, seen }
    }

    /// A container that answers 200 and the start of a body, then never
    /// the rest.
    pub(crate) async fn start_stalling() -> Self {
        let server = Spawned::serve(loopback(), |_req| async {
            http::Response::new(Stalling { sent: false })
        })
        .await
        .expect("container");
        Self {
            server,
            seen: Arc::default(),
        }
    }

    pub(crate) fn last(&self) -> Seen {
        self.seen
            .lock()
            .expect("lock")
            .last()
            .cloned()
            .expect("a request")
    }

    pub(crate) fn count(&self) -> usize {
        self.seen.lock().expect("lock").len()
    }
}

/// The key endpoint, serving the test key's JWKS.
pub(crate) async fn jwks() -> Spawned {
    let body = keys().jwks();
    Spawned::serve(loopback(), move |_req| {
        let body = body.clone();
        async move {
            let mut response = text(StatusCode::OK, body);
            response.headers_mut().insert(
                http::header::CACHE_CONTROL,
                http::HeaderValue::from_static("public, max-age=300"),
            );
            response
        }
    })
    .await
    .expect("jwks")
}

/// A fresh file for one test's policy.
pub(crate) fn policy_file(name: &str, policy: &serde_json::Value) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cloud-run-ingress-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("policy.json");
    std::fs::write(&path, policy.to_string()).expect("write");
    path
}

/// An ingress in front of `container`, with its key endpoint.
pub(crate) struct Front {
    pub(crate) server: Spawned,
    pub(crate) container: Container,
    _jwks: Spawned,
}

impl Front {
    pub(crate) async fn start(
        policy: &std::path::Path,
        container: Container,
        tweak: impl FnOnce(&mut Config),
    ) -> Self {
        let jwks = jwks().await;
        let mut config = cloud_run_ingress::Config::from_env(&cloud_run::testing::env(&[
            (
                "INGRESS_UPSTREAM",
                &format!("http://{}", container.server.addr()),
            ),
            ("INGRESS_AUDIENCES", AUDIENCE),
            ("INGRESS_POLICY", policy.to_str().expect("utf-8")),
            ("AUTH_JWKS_URL", &format!("http://{}/", jwks.addr())),
        ]))
        .expect("config");
        config.server = loopback();
        tweak(&mut config);
        let listener = TcpListener::bind(config.server.addr).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let ingress = Ingress::new(config).expect("ingress");
        let server = Spawned::new(addr, move |stop| ingress.run(listener, stop));
        Self {
            server,
            container,
            _jwks: jwks,
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.server.addr())
    }

    /// GET `path` with `headers`: the status and the body.
    pub(crate) async fn get(&self, path: &str, headers: &[(&str, String)]) -> (StatusCode, String) {
        let mut request = client().get(self.url(path));
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let response = request.send().await.expect("answer");
        let status = response.status();
        (status, response.text().await.expect("body"))
    }
}

/// A policy granting `role` to `members` on the service.
pub(crate) fn service_policy(role: &str, members: &[&str]) -> serde_json::Value {
    json!({ "bindings": [{ "role": role, "members": members }], "etag": "BwY", "version": 1 })
}

/// `Bearer TOKEN`.
pub(crate) fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Polls `get` until it answers `want`, for at most `within`; the time it
/// took. What is measured is how soon a policy change takes effect.
pub(crate) async fn takes_effect(
    front: &Front,
    headers: &[(&str, String)],
    want: StatusCode,
    within: Duration,
) -> Duration {
    let started = std::time::Instant::now();
    loop {
        let (status, _) = front.get("/", headers).await;
        if status == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "still {status} after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A body that sends `hel` and then nothing, for ever.
struct Stalling {
    sent: bool,
}

impl hyper::body::Body for Stalling {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        if self.sent {
            return std::task::Poll::Pending;
        }
        self.sent = true;
        std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(
            bytes::Bytes::from_static(b"hel"),
        ))))
    }
}
