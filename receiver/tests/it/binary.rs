//! The real `receiver` binary: bad config, start-up, SIGTERM.

use std::net::SocketAddr;

use cloud_run::testing::{exits_zero_on_sigterm, listening, refused};
use http::StatusCode;
use serde_json::json;
use tokio::process::{Child, Command};

use crate::{
    support::{bounded, client, metadata, now, url, FakeJwks},
    tokens::{self, claims, keys, signed, with},
};

/// The receiver binary, on 127.0.0.1:0 with JSON logs and nothing else set.
fn receiver() -> Command {
    cloud_run::testing::command(env!("CARGO_BIN_EXE_receiver"))
}

async fn listening_addr(child: &mut Child) -> SocketAddr {
    listening(child).await.0
}

/// Runs the receiver with `env` until it exits; it must fail with one log
/// line naming `var`.
async fn fails_naming(env: &[(&str, &str)], var: &str) {
    let (_, message) = refused(receiver().envs(env.iter().copied())).await;
    assert!(
        message.starts_with(&format!("{var}: ")),
        "{env:?}: {message}"
    );
}

#[tokio::test]
async fn serves_then_exits_zero_on_sigterm() {
    bounded(async {
        let mut child = receiver().spawn().expect("spawn");
        let addr = listening_addr(&mut child).await;
        let body = client()
            .get(url(addr, "/"))
            .send()
            .await
            .expect("response")
            .text()
            .await
            .expect("body");
        assert_eq!(body, receiver::HELLO);
        exits_zero_on_sigterm(&mut child).await;
    })
    .await;
}

#[tokio::test]
async fn bad_port_exits_non_zero_naming_it() {
    bounded(fails_naming(&[("PORT", "eighty")], "PORT")).await;
}

#[tokio::test]
async fn bad_auth_settings_exit_non_zero_naming_them() {
    bounded(async {
        let aud = ("AUTH_AUDIENCE", "https://receiver.a.run.app");
        fails_naming(&[("AUTH_AUDIENCE", "a,,b")], "AUTH_AUDIENCE").await;
        fails_naming(&[aud, ("AUTH_JWKS_URL", "certs")], "AUTH_JWKS_URL").await;
        fails_naming(&[aud, ("AUTH_ISSUERS", "a, ,b")], "AUTH_ISSUERS").await;
        fails_naming(
            &[aud, ("AUTH_ALLOWED_INVOKERS", "sender")],
            "AUTH_ALLOWED_INVOKERS",
        )
        .await;
        // An allowlist without an audience would let everyone in.
        fails_naming(
            &[("AUTH_ALLOWED_INVOKERS", "sender@p.iam.gserviceaccount.com")],
            "AUTH_ALLOWED_INVOKERS",
        )
        .await;
        fails_naming(
            &[
                aud,
                (
                    "AUTH_ALLOWED_INVOKERS",
                    "*,sender@p.iam.gserviceaccount.com",
                ),
            ],
            "AUTH_ALLOWED_INVOKERS",
        )
        .await;
    })
    .await;
}

#[tokio::test]
async fn auto_off_cloud_run_or_without_a_deterministic_url_exits_naming_it() {
    bounded(async {
        let auto = ("AUTH_AUDIENCE", "auto");
        let allowed = ("AUTH_ALLOWED_INVOKERS", "sender@p.iam.gserviceaccount.com");
        let (_, message) = refused(receiver().envs([auto, allowed])).await;
        assert!(message.starts_with("AUTH_AUDIENCE: "), "{message}");
        assert!(message.contains("K_SERVICE"), "{message}");

        let metadata = metadata(123_456_789_012, "us-central1").await;
        let host = metadata.addr().to_string();
        let long = "s".repeat(51);
        let (_, message) = refused(receiver().envs([
            auto,
            allowed,
            ("K_SERVICE", &long),
            ("GCE_METADATA_HOST", &host),
        ]))
        .await;
        assert!(message.starts_with("AUTH_AUDIENCE: "), "{message}");
        assert!(message.contains("more than 63"), "{message}");
    })
    .await;
}

#[tokio::test]
async fn auto_resolves_at_start_and_logs_the_audiences() {
    bounded(async {
        let metadata = metadata(123_456_789_012, "us-central1").await;
        let mut child = receiver()
            .env("AUTH_AUDIENCE", "auto,https://api.example.com")
            .env("AUTH_ALLOWED_INVOKERS", tokens::ALLOWED)
            .env("AUTH_JWKS_URL", "http://127.0.0.1:9/certs")
            .env("K_SERVICE", "receiver")
            .env("GCE_METADATA_HOST", metadata.addr().to_string())
            .spawn()
            .expect("spawn");
        let (_, logs) = listening(&mut child).await;
        exits_zero_on_sigterm(&mut child).await;
        let logs = logs.await.expect("log lines");
        let resolved = logs
            .iter()
            .map(|line| serde_json::from_str::<serde_json::Value>(line).expect("json"))
            .find(|entry| entry["message"] == "AUTH_AUDIENCE=auto resolved")
            .unwrap_or_else(|| panic!("no resolution logged: {logs:?}"));
        let url = "https://receiver-123456789012.us-central1.run.app";
        assert_eq!(resolved["resolved"], url);
        assert_eq!(resolved["severity"], "INFO");
        let audiences = resolved["audiences"].as_str().expect("audiences");
        assert!(
            audiences.contains(url) && audiences.contains("https://api.example.com"),
            "{audiences}"
        );
    })
    .await;
}

#[tokio::test]
async fn an_audience_without_an_allowlist_exits_naming_the_allowlist() {
    bounded(async {
        let (_, message) =
            refused(receiver().env("AUTH_AUDIENCE", "https://receiver.a.run.app")).await;
        assert!(message.starts_with("AUTH_ALLOWED_INVOKERS: "), "{message}");
        // It says why: the audience alone lets in any Google account.
        assert!(message.contains("any Google account"), "{message}");
    })
    .await;
}

#[tokio::test]
async fn an_empty_auth_setting_exits_naming_it() {
    bounded(async {
        let aud = ("AUTH_AUDIENCE", "https://receiver.a.run.app");
        let allowed = ("AUTH_ALLOWED_INVOKERS", "sender@p.iam.gserviceaccount.com");
        for empty in ["", "  ", " , ,"] {
            // `AUTH_AUDIENCE=$URL` with URL unset must not start a public
            // receiver.
            fails_naming(&[("AUTH_AUDIENCE", empty)], "AUTH_AUDIENCE").await;
            fails_naming(&[("AUTH_AUDIENCE", empty), allowed], "AUTH_AUDIENCE").await;
            fails_naming(
                &[aud, ("AUTH_ALLOWED_INVOKERS", empty)],
                "AUTH_ALLOWED_INVOKERS",
            )
            .await;
            fails_naming(&[aud, allowed, ("AUTH_JWKS_URL", empty)], "AUTH_JWKS_URL").await;
            fails_naming(&[aud, allowed, ("AUTH_ISSUERS", empty)], "AUTH_ISSUERS").await;
            fails_naming(&[("AUTH_ISSUERS", empty)], "AUTH_ISSUERS").await;
        }
        // Other variables keep their rule: empty is unset.
        let mut child = receiver().env("SHUTDOWN_GRACE", "").spawn().expect("spawn");
        listening_addr(&mut child).await;
        exits_zero_on_sigterm(&mut child).await;
    })
    .await;
}

#[tokio::test]
async fn keys_over_plain_http_only_from_loopback() {
    bounded(async {
        let aud = ("AUTH_AUDIENCE", "https://receiver.a.run.app");
        let allowed = ("AUTH_ALLOWED_INVOKERS", "sender@p.iam.gserviceaccount.com");
        for remote in [
            "http://www.googleapis.com/oauth2/v3/certs",
            "http://10.0.0.1/certs",
            "http://[2001:db8::1]/certs",
            "http://localhost.example.com/certs",
        ] {
            fails_naming(&[aud, allowed, ("AUTH_JWKS_URL", remote)], "AUTH_JWKS_URL").await;
        }
    })
    .await;
}

#[tokio::test]
async fn any_caller_only_on_explicit_opt_in_and_then_a_warning() {
    bounded(async {
        let k = keys();
        let jwks = FakeJwks::serving(&[&k.one], 3600).start().await;
        let mut child = receiver()
            .env("AUTH_AUDIENCE", tokens::AUDIENCE)
            .env("AUTH_JWKS_URL", format!("http://{}/certs", jwks.addr()))
            .env("AUTH_ALLOWED_INVOKERS", "*")
            .spawn()
            .expect("spawn");
        let (addr, logs) = listening(&mut child).await;
        let stranger = signed(
            &k.one,
            &with(&claims(now()), json!({ "email": tokens::STRANGER })),
        );
        let response = client()
            .get(url(addr, "/"))
            .bearer_auth(&stranger)
            .send()
            .await
            .expect("response");
        assert_eq!(response.status(), StatusCode::OK);
        exits_zero_on_sigterm(&mut child).await;
        let warning = logs
            .await
            .expect("log lines")
            .into_iter()
            .map(|line| serde_json::from_str::<serde_json::Value>(&line).expect("json"))
            .find(|entry| entry["severity"] == "WARNING")
            .expect("a warning at start");
        let message = warning["message"].as_str().expect("message");
        assert!(message.contains("AUTH_ALLOWED_INVOKERS=*"), "{message}");
        assert!(message.contains("any Google account"), "{message}");
    })
    .await;
}

#[tokio::test]
async fn starts_with_the_key_endpoint_down_and_answers_503() {
    bounded(async {
        let dead = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let jwks_url = format!("http://{}/certs", dead.local_addr().expect("addr"));
        drop(dead);
        let mut child = receiver()
            .env("AUTH_AUDIENCE", tokens::AUDIENCE)
            .env("AUTH_JWKS_URL", &jwks_url)
            .env("AUTH_ALLOWED_INVOKERS", tokens::ALLOWED)
            .spawn()
            .expect("spawn");
        let addr = listening_addr(&mut child).await;
        let token = signed(&keys().one, &claims(now()));
        let response = client()
            .get(url(addr, "/"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("response");
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        exits_zero_on_sigterm(&mut child).await;
    })
    .await;
}

#[tokio::test]
async fn logs_the_caller_at_debug_and_never_a_token() {
    bounded(async {
        let k = keys();
        let jwks = FakeJwks::serving(&[&k.one], 3600).start().await;
        let mut child = receiver()
            .env("RUST_LOG", "debug")
            .env("AUTH_AUDIENCE", tokens::AUDIENCE)
            .env("AUTH_JWKS_URL", format!("http://{}/certs", jwks.addr()))
            .env("AUTH_ALLOWED_INVOKERS", tokens::ALLOWED)
            .spawn()
            .expect("spawn");
        let (addr, logs) = listening(&mut child).await;
        let base = claims(now());
        let valid = signed(&k.one, &base);
        let (message, _) = valid.rsplit_once('.').expect("jwt");
        let refused = [
            signed(&k.one, &with(&base, json!({ "exp": now() - 3600 }))),
            signed(&k.one, &with(&base, json!({ "email": tokens::STRANGER }))),
            format!("{message}.SIGNATURE_REMOVED_BY_GOOGLE"),
            made_up(),
        ];
        let mut statuses = Vec::new();
        for token in std::iter::once(&valid).chain(&refused) {
            let response = client()
                .get(url(addr, "/"))
                .bearer_auth(token)
                .send()
                .await
                .expect("response");
            statuses.push(response.status().as_u16());
        }
        assert_eq!(statuses, [200, 401, 403, 401, 401]);
        exits_zero_on_sigterm(&mut child).await;
        let logs = logs.await.expect("log lines").join("\n");
        assert!(logs.contains("signing keys loaded"), "{logs}");
        let caller = logs
            .lines()
            .map(|line| serde_json::from_str::<serde_json::Value>(line).expect("json"))
            .find(|entry| entry["message"] == "verified caller")
            .unwrap_or_else(|| panic!("no verified caller line: {logs}"));
        assert_eq!(caller["severity"], "DEBUG");
        assert_eq!(caller["caller"], tokens::ALLOWED);
        for token in std::iter::once(&valid).chain(&refused) {
            for part in token.split('.').filter(|p| p.len() > 8) {
                assert!(!logs.contains(part), "a token part is in the logs");
            }
        }
    })
    .await;
}

fn made_up() -> String {
    tokens::token(
        &tokens::header("made-up"),
        &claims(now()),
        tokens::Signing::Rs256(&keys().rogue),
    )
}
