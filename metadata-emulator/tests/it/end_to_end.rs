//! The tutorial's services against the emulator, in-process: the sender's
//! token verifies against the emulator's JWKS, and the receiver, verifying
//! with `AUTH_JWKS_URL` at the emulator, lets it in or refuses it as the
//! tutorial's stages say.

use cloud_run::Service as _;
use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use cloud_run::{response::text, testing::Spawned};
use http::StatusCode;
use tokio::net::TcpListener;

use crate::support::{bounded, client, emulator, id_token, server_config, url, verify};

const CALLER: &str = "calling-service-sa@local-project.iam.gserviceaccount.com";
const OTHER: &str = "other-service-sa@local-project.iam.gserviceaccount.com";
const RELAYED_HELLO: &str = "Response from receiving service: Hello from the receiving service!";

/// A lookup over these variables: the services' own configuration path.
fn lookup(pairs: &[(&str, String)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    move |k| map.get(k).cloned()
}

/// The sender relaying to `receiver`, with tokens from the emulator at
/// `metadata`, or none.
async fn start_sender(receiver: SocketAddr, metadata: Option<SocketAddr>) -> Spawned {
    let mut vars = vec![
        ("RECEIVING_SERVICE_URL", url(receiver, "/")),
        ("BIND_ADDR", "127.0.0.1".to_owned()),
        ("PORT", "0".to_owned()),
    ];
    match metadata {
        Some(addr) => {
            vars.push(("ID_TOKEN_SOURCE", "metadata".to_owned()));
            vars.push(("GCE_METADATA_HOST", addr.to_string()));
        }
        None => vars.push(("ID_TOKEN_SOURCE", "none".to_owned())),
    }
    let config = sender::Config::from_env(&lookup(&vars)).expect("sender config");
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

/// The receiver verifying tokens for its own origin against the emulator's
/// keys, letting in `allowed`; returns once it holds the keys.
async fn start_verifying_receiver(metadata: SocketAddr, allowed: &str) -> Spawned {
    let listener = TcpListener::bind(server_config().addr).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let env = lookup(&[
        ("AUTH_AUDIENCE", format!("http://{addr}")),
        ("AUTH_JWKS_URL", url(metadata, "/oauth2/v3/certs")),
        ("AUTH_ALLOWED_INVOKERS", allowed.to_owned()),
    ]);
    let auth = receiver::AuthConfig::from_env(&env)
        .expect("auth config")
        .expect("verification on");
    let config = receiver::Config {
        server: server_config(),
        auth: Some(auth),
    };
    let receiver = receiver::Receiver::new(config).await.expect("receiver");
    let mut loaded = receiver.verifier().expect("verifying").keys().subscribe();
    let server = Spawned::new(addr, move |stop| receiver.run(listener, stop));
    loaded
        .wait_for(|fetches| *fetches > 0)
        .await
        .expect("the receiver fetched the emulator's keys");
    server
}

/// `GET /` on `addr`: status and body.
async fn get(addr: SocketAddr) -> (StatusCode, String) {
    let response = client().get(url(addr, "/")).send().await.expect("response");
    let status = response.status();
    (status, response.text().await.expect("body"))
}

#[tokio::test]
async fn the_senders_token_verifies_against_the_emulators_jwks() {
    bounded(async {
        let metadata = emulator().await;
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let captured = Arc::clone(&seen);
        let receiver = Spawned::serve(server_config(), move |req: http::Request<_>| {
            let captured = Arc::clone(&captured);
            async move {
                if let Some(value) = req.headers().get("authorization") {
                    let value = value.to_str().unwrap_or("").to_owned();
                    captured.lock().expect("lock").push(value);
                }
                text(StatusCode::OK, receiver::HELLO)
            }
        })
        .await
        .expect("receiver");
        let sender = start_sender(receiver.addr(), Some(metadata.addr())).await;

        assert_eq!(
            get(sender.addr()).await,
            (StatusCode::OK, RELAYED_HELLO.to_owned())
        );
        let bearer = seen
            .lock()
            .expect("lock")
            .first()
            .cloned()
            .expect("a token");
        let token = bearer.strip_prefix("Bearer ").expect("bearer");
        let audience = format!("http://{}", receiver.addr());
        let claims = verify(metadata.addr(), token, &audience)
            .await
            .expect("the sender's token is valid for the receiver's origin");
        assert_eq!(claims["email"], CALLER);
        assert_eq!(claims["email_verified"], true);
    })
    .await;
}

#[tokio::test]
async fn the_verifying_receiver_accepts_the_token_the_sender_got_from_the_emulator() {
    bounded(async {
        let metadata = emulator().await;
        let receiver =
            start_verifying_receiver(metadata.addr(), &format!("{OTHER},{CALLER}")).await;
        let sender = start_sender(receiver.addr(), Some(metadata.addr())).await;
        assert_eq!(
            get(sender.addr()).await,
            (StatusCode::OK, RELAYED_HELLO.to_owned())
        );
        // The receiver really checks: no token is refused.
        let (status, _) = get(receiver.addr()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    })
    .await;
}

#[tokio::test]
async fn the_verifying_receiver_refuses_as_the_tutorial_says() {
    bounded(async {
        let metadata = emulator().await;
        let receiver = start_verifying_receiver(metadata.addr(), OTHER).await;
        // Stage 2: no token.
        let anonymous = start_sender(receiver.addr(), None).await;
        let (status, body) = get(anonymous.addr()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert!(
            body.starts_with("Response from receiving service: "),
            "{body}"
        );
        // Stage 3: a valid token, but the caller is not allowed.
        let identified = start_sender(receiver.addr(), Some(metadata.addr())).await;
        let (status, body) = get(identified.addr()).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert!(!body.contains("Hello"), "{body}");
        // A token for another audience is no token at all.
        let token = id_token(metadata.addr(), "http://127.0.0.1:1", "full").await;
        let response = client()
            .get(url(receiver.addr(), "/"))
            .bearer_auth(token)
            .send()
            .await
            .expect("response");
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    })
    .await;
}
