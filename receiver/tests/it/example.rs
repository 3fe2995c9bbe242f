//! The layer (`RequireGoogleIdToken`) and `examples/axum.rs`: its router
//! in-process, answering as the receiver does; the example binary itself
//! (built by `cargo test`, which builds examples); and the caller's span.

#[allow(dead_code)]
#[path = "../../examples/axum.rs"]
mod axum_example;

use std::{
    future::poll_fn,
    io::Write,
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
};

use cloud_run::testing::{exits_zero_on_sigterm, listening};
use http::{header, StatusCode};
use id_token::{AuthConfig, Caller, RequireGoogleIdToken};
use serde_json::json;
use tokio::{net::TcpListener, sync::oneshot};
use tower_service::Service as _;

use crate::{
    support::{auth_config, bounded, client, now, url, FakeJwks, JwksMode, Verifying},
    tokens::{self, claims, keys, signed, with},
};

/// The example's app for `auth`, on 127.0.0.1:0 until dropped.
struct App {
    addr: SocketAddr,
    layer: RequireGoogleIdToken,
    _stop: oneshot::Sender<()>,
}

impl App {
    async fn start(auth: AuthConfig) -> Self {
        let layer = RequireGoogleIdToken::from_config(auth)
            .await
            .expect("layer");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let app = axum_example::app(layer.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Self {
            addr,
            layer,
            _stop: stop,
        }
    }

    async fn keys_loaded(&self) {
        self.layer
            .verifier()
            .keys()
            .subscribe()
            .wait_for(|loaded| *loaded >= 1)
            .await
            .expect("key cache alive");
    }
}

/// What a client sees of an answer: status, body and the auth headers.
async fn seen(response: reqwest::Response) -> (u16, String, Option<String>, Option<String>) {
    let header = |name| {
        response
            .headers()
            .get(name)
            .map(|v: &http::HeaderValue| v.to_str().expect("ascii").to_owned())
    };
    let challenge = header(header::WWW_AUTHENTICATE);
    let retry = header(header::RETRY_AFTER);
    (
        response.status().as_u16(),
        response.text().await.expect("body"),
        challenge,
        retry,
    )
}

#[tokio::test]
async fn the_layer_answers_exactly_as_the_receiver_does() {
    bounded(async {
        let k = keys();
        let fake = FakeJwks::new(JwksMode::Fail(StatusCode::SERVICE_UNAVAILABLE));
        let jwks = fake.start().await;
        let app = App::start(auth_config(jwks.addr())).await;
        let receiver = Verifying::start(auth_config(jwks.addr())).await;
        let base = claims(now());
        let valid = signed(&k.one, &base);
        let get = |addr, token: Option<&str>| {
            let mut request = client().get(url(addr, "/"));
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            request.send()
        };
        // No keys yet: 503 with Retry-After from both.
        fake.wait_for_fetches(2).await;
        let layer = seen(get(app.addr, Some(&valid)).await.expect("layer")).await;
        let direct = seen(
            get(receiver.server.addr(), Some(&valid))
                .await
                .expect("receiver"),
        )
        .await;
        assert_eq!(layer.0, 503);
        assert_eq!(layer, direct);
        let ready = client()
            .get(url(app.addr, "/ready"))
            .send()
            .await
            .expect("ready");
        assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);

        fake.set(JwksMode::Serve(tokens::jwks(&[&k.one]), 3600));
        app.keys_loaded().await;
        receiver.keys_loaded(1).await;
        let refused = [
            None,
            Some(signed(&k.one, &with(&base, json!({ "exp": now() - 3600 })))),
            Some(signed(
                &k.one,
                &with(&base, json!({ "email": tokens::STRANGER })),
            )),
            Some("not.a.token".to_owned()),
        ];
        let mut statuses = Vec::new();
        for token in &refused {
            let layer = seen(get(app.addr, token.as_deref()).await.expect("layer")).await;
            let direct = seen(
                get(receiver.server.addr(), token.as_deref())
                    .await
                    .expect("receiver"),
            )
            .await;
            assert_eq!(layer, direct, "{token:?}");
            statuses.push(layer.0);
        }
        assert_eq!(statuses, [401, 401, 403, 401]);

        let hello = seen(get(app.addr, Some(&valid)).await.expect("layer")).await;
        assert_eq!(
            (hello.0, hello.1.as_str()),
            (200, "Hello, sender@tutorial-test.iam.gserviceaccount.com!")
        );
        let ready = client()
            .get(url(app.addr, "/ready"))
            .send()
            .await
            .expect("ready");
        assert_eq!(ready.status(), StatusCode::OK);
    })
    .await;
}

/// Where `cargo test` put the example binary: beside the test binaries'
/// `deps`, in `examples/`.
fn example_binary() -> PathBuf {
    let receiver = PathBuf::from(env!("CARGO_BIN_EXE_receiver"));
    let path = receiver
        .parent()
        .expect("target dir")
        .join("examples")
        .join("axum");
    assert!(
        path.exists(),
        "{} is missing: `cargo test -p receiver` builds it (or `cargo build -p receiver --example axum`)",
        path.display()
    );
    path
}

#[tokio::test]
async fn the_example_binary_says_hello_to_an_admitted_caller() {
    bounded(async {
        let k = keys();
        let jwks = FakeJwks::serving(&[&k.one], 3600).start().await;
        let binary = example_binary();
        let mut child = cloud_run::testing::command(binary.to_str().expect("utf-8 path"))
            .env("RUST_LOG", "debug")
            .env("AUTH_AUDIENCE", tokens::AUDIENCE)
            .env("AUTH_ALLOWED_INVOKERS", tokens::ALLOWED)
            .env("AUTH_JWKS_URL", format!("http://{}/certs", jwks.addr()))
            .spawn()
            .expect("spawn the example");
        let (addr, logs) = listening(&mut child).await;
        let token = signed(&k.one, &claims(now()));
        let response = client()
            .get(url(addr, "/"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("response");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.text().await.expect("body"),
            format!("Hello, {}!", tokens::ALLOWED)
        );
        let response = client().get(url(addr, "/")).send().await.expect("response");
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        exits_zero_on_sigterm(&mut child).await;
        let logs = logs.await.expect("log lines").join("\n");
        assert!(logs.contains("\"verified caller\""), "{logs}");
        assert!(
            !logs.contains(token.split('.').nth(2).expect("jwt")),
            "a token in the logs"
        );
    })
    .await;
}

#[tokio::test]
async fn the_example_refuses_to_start_without_an_audience() {
    bounded(async {
        let binary = example_binary();
        let (_, message) = cloud_run::testing::refused(&mut cloud_run::testing::command(
            binary.to_str().expect("path"),
        ))
        .await;
        assert!(message.starts_with("AUTH_AUDIENCE: "), "{message}");
    })
    .await;
}

/// A log sink the test reads.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn the_handler_gets_the_caller_and_runs_in_its_span() {
    // A current-thread runtime: the subscriber set here sees every task.
    let logs = Captured::default();
    let writer = logs.clone();
    let _subscriber = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .finish(),
    );
    bounded(async {
        let k = keys();
        let jwks = FakeJwks::serving(&[&k.one], 3600).start().await;
        let layer = RequireGoogleIdToken::from_config(auth_config(jwks.addr()))
            .await
            .expect("layer");
        let seen = Arc::new(Mutex::new(None::<Caller>));
        let handler_saw = Arc::clone(&seen);
        let handler = axum::routing::get(move |req: http::Request<axum::body::Body>| {
            *handler_saw.lock().expect("lock") = req.extensions().get::<Caller>().cloned();
            tracing::info!("inside the handler");
            async { "ok" }
        });
        let mut service = tower_layer_apply(&layer, handler);
        let request = http::Request::builder()
            .uri("/")
            .header(
                "authorization",
                format!("Bearer {}", signed(&k.one, &claims(now()))),
            )
            .body(axum::body::Body::empty())
            .expect("request");
        poll_fn(|cx| {
            tower_service::Service::<http::Request<axum::body::Body>>::poll_ready(&mut service, cx)
        })
        .await
        .expect("ready");
        let response = service.call(request).await.expect("response");
        assert_eq!(response.status(), StatusCode::OK);
        let caller = seen
            .lock()
            .expect("lock")
            .clone()
            .expect("the handler got a caller");
        assert_eq!(caller.email.as_deref(), Some(tokens::ALLOWED));
        assert_eq!(caller.mechanism, id_token::Mechanism::IdToken);
        assert_eq!(caller.subject.as_deref(), Some("112233445566778899000"));
    })
    .await;
    let logs = String::from_utf8(logs.0.lock().expect("lock").clone()).expect("utf-8");
    let line = logs
        .lines()
        .find(|line| line.contains("inside the handler"))
        .unwrap_or_else(|| panic!("no handler line: {logs}"));
    assert!(
        line.contains(&format!(
            "caller{{email=\"{}\" subject=\"112233445566778899000\" mechanism=\"id-token\"}}",
            tokens::ALLOWED
        )),
        "{line}"
    );
}

fn tower_layer_apply<S>(
    layer: &RequireGoogleIdToken,
    inner: S,
) -> id_token::GoogleIdTokenService<S> {
    tower_layer::Layer::layer(layer, inner)
}
