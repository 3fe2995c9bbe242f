//! `AUTH_AUDIENCE=auto`: the service's deterministic URL, from `K_SERVICE`
//! and the metadata server (the emulator here), resolved before the
//! receiver serves; off Cloud Run, or for a name too long for a DNS label,
//! the receiver does not start.

use std::{net::SocketAddr, time::Duration};

use http::StatusCode;
use receiver::{AuthConfig, Receiver, ReceiverStartError};
use serde_json::json;

use crate::{
    support::{auth_config, bounded, metadata, now, server_config, FakeJwks, Verifying},
    tokens::{self, claims, keys, signed, with},
};

const NUMBER: u64 = 123_456_789_012;
const REGION: &str = "europe-west1";

/// `AUTH_AUDIENCE=auto,https://api.example.com` on Cloud Run as `service`,
/// with the metadata server at `metadata`.
fn auto_config(service: &str, metadata: SocketAddr) -> AuthConfig {
    let host = metadata.to_string();
    let env = cloud_run::testing::env(&[
        ("AUTH_AUDIENCE", "auto,https://api.example.com"),
        ("AUTH_ALLOWED_INVOKERS", tokens::ALLOWED),
        ("K_SERVICE", service),
        ("GCE_METADATA_HOST", &host),
    ]);
    AuthConfig::from_env(&env).expect("config").expect("on")
}

/// Why a receiver for `auth` cannot start.
async fn start_error(auth: AuthConfig) -> cloud_run::ConfigError {
    let config = receiver::Config {
        server: server_config(),
        auth: Some(auth),
    };
    match Receiver::new(config).await {
        Err(ReceiverStartError::Config(err)) => err,
        other => panic!("expected a configuration error: {other:?}"),
    }
}

#[tokio::test]
async fn auto_is_the_deterministic_url_and_admits_tokens_for_it() {
    bounded(async {
        let metadata = metadata(NUMBER, REGION).await;
        let jwks = FakeJwks::serving(&[&keys().one], 3600).start().await;
        let mut auth = auto_config("receiver", metadata.addr());
        let defaults = auth_config(jwks.addr());
        auth.jwks_url = defaults.jwks_url;
        auth.keys = defaults.keys;
        let receiver = Verifying::ready(auth).await;
        let url = "https://receiver-123456789012.europe-west1.run.app";
        for audience in [url, "https://api.example.com"] {
            let token = signed(
                &keys().one,
                &with(&claims(now()), json!({ "aud": audience })),
            );
            let response = receiver.get_with(&token).await;
            assert_eq!(response.status(), StatusCode::OK, "{audience}");
        }
        // `auto` itself is no audience.
        let token = signed(&keys().one, &with(&claims(now()), json!({ "aud": "auto" })));
        assert_eq!(
            receiver.get_with(&token).await.status(),
            StatusCode::UNAUTHORIZED
        );
    })
    .await;
}

#[tokio::test]
async fn resolve_lists_the_audiences() {
    bounded(async {
        let metadata = metadata(NUMBER, REGION).await;
        let http = cloud_run::testing::client();
        let auth = auto_config("receiver", metadata.addr())
            .resolve(&http)
            .await
            .expect("resolved");
        assert_eq!(
            auth.audiences,
            [
                "https://api.example.com",
                "https://receiver-123456789012.europe-west1.run.app"
            ]
        );
        assert!(auth.auto_audience.is_none());
    })
    .await;
}

#[tokio::test]
async fn a_name_too_long_for_a_dns_label_has_no_deterministic_url() {
    bounded(async {
        let metadata = metadata(NUMBER, REGION).await;
        let http = cloud_run::testing::client();
        // NAME-123456789012: 63 characters at most.
        let longest = "r".repeat(63 - 13);
        let auth = auto_config(&longest, metadata.addr())
            .resolve(&http)
            .await
            .expect("63 characters is a label");
        assert!(auth.audiences[1].starts_with(&format!("https://{longest}-123456789012.")));
        let err = start_error(auto_config(&format!("{longest}r"), metadata.addr())).await;
        assert_eq!(err.var, "AUTH_AUDIENCE");
        assert!(err.problem.contains("64 characters, more than 63"), "{err}");
    })
    .await;
}

#[tokio::test]
async fn no_metadata_server_means_no_start() {
    bounded(async {
        let dead = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = dead.local_addr().expect("addr");
        drop(dead);
        let err = start_error(auto_config("receiver", addr)).await;
        assert_eq!(err.var, "AUTH_AUDIENCE");
        assert!(err.problem.contains("only on Cloud Run"), "{err}");
        assert!(err.problem.contains("metadata server"), "{err}");
    })
    .await;
}

#[tokio::test]
async fn a_silent_metadata_server_is_waited_for_boundedly() {
    bounded(async {
        // Connections are queued by the kernel and never answered.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let mut auth = auto_config("receiver", silent.local_addr().expect("addr"));
        if let Some(auto) = &mut auth.auto_audience {
            auto.timeout = Duration::from_millis(200);
        }
        let err = start_error(auth).await;
        assert_eq!(err.var, "AUTH_AUDIENCE");
        assert!(err.problem.contains("did not answer in time"), "{err}");
    })
    .await;
}
