//! The sender against the emulator: the token it presents verifies against
//! the emulator's JWKS, for the receiver's origin, as the tutorial's account.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use cloud_run::{response::text, Spawned};
use http::StatusCode;
use tokio::net::TcpListener;

use crate::support::{bounded, client, emulator, server_config, url, verify};

/// `Config::from_env` over a map: the services' real configuration path.
fn lookup(pairs: &[(&str, String)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    move |k| map.get(k).cloned()
}

async fn start_sender(receiver: SocketAddr, metadata: SocketAddr) -> Spawned {
    let env = lookup(&[
        ("RECEIVING_SERVICE_URL", url(receiver, "/")),
        ("GCE_METADATA_HOST", metadata.to_string()),
        ("BIND_ADDR", "127.0.0.1".to_owned()),
        ("PORT", "0".to_owned()),
    ]);
    let config = sender::Config::from_env(&env).expect("sender config");
    let listener = TcpListener::bind(config.server.addr).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    Spawned::new(addr, move |stop| async move {
        sender::run(config, listener, stop).await.expect("sender");
    })
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
        let sender = start_sender(receiver.addr(), metadata.addr()).await;

        let response = client()
            .get(url(sender.addr(), "/"))
            .send()
            .await
            .expect("response");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.text().await.expect("body"),
            format!("Response from receiving service: {}", receiver::HELLO)
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
        assert_eq!(
            claims["email"],
            "calling-service-sa@local-project.iam.gserviceaccount.com"
        );
        assert_eq!(claims["email_verified"], true);
    })
    .await;
}
