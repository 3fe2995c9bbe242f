//! The real `sender` binary: bad config, SIGTERM, and what it prints.

use http::StatusCode;
use tokio::{io::AsyncReadExt, process::Command};

pub(crate) use cloud_run::testing::{listening, sigterm};

use crate::support::{bounded, client, hour, root, FakeMetadata, FakeReceiver};

/// The sender binary, on 127.0.0.1:0 with JSON logs and nothing else set.
pub(crate) fn sender() -> Command {
    cloud_run::testing::command(env!("CARGO_BIN_EXE_sender"))
}

#[tokio::test]
async fn missing_receiver_url_exits_non_zero_naming_it() {
    bounded(async {
        let (_, message) = cloud_run::testing::refused(&mut sender()).await;
        assert!(
            message.starts_with("RECEIVING_SERVICE_URL: not set"),
            "{message}"
        );
    })
    .await;
}

#[tokio::test]
async fn invalid_receiver_url_exits_non_zero_in_text_mode_too() {
    bounded(async {
        let output = sender()
            .env("LOG_FORMAT", "text")
            .env("RECEIVING_SERVICE_URL", "receiving-service:8080")
            .output()
            .await
            .expect("run");
        assert!(!output.status.success());
        let err = String::from_utf8_lossy(&output.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("RECEIVING_SERVICE_URL: "), "{err}");
    })
    .await;
}

#[tokio::test]
async fn sigterm_when_idle_exits_zero() {
    bounded(async {
        let mut child = sender()
            .env("RECEIVING_SERVICE_URL", "http://127.0.0.1:9/")
            .env("ID_TOKEN_SOURCE", "none")
            .spawn()
            .expect("spawn");
        let (_, _) = listening(&mut child).await;
        cloud_run::testing::exits_zero_on_sigterm(&mut child).await;
    })
    .await;
}

#[tokio::test]
async fn the_token_never_appears_in_the_output() {
    bounded(async {
        let metadata = FakeMetadata::new(vec![hour()]);
        let metadata_server = metadata.start().await;
        let receiver = FakeReceiver::hello();
        let receiver_server = receiver.start().await;
        let mut child = sender()
            .env("RECEIVING_SERVICE_URL", root(receiver_server.addr()))
            .env("GCE_METADATA_HOST", metadata_server.addr().to_string())
            .env("RUST_LOG", "trace")
            .spawn()
            .expect("spawn");
        let (addr, rest) = listening(&mut child).await;
        for _ in 0..3 {
            let response = client().get(root(addr)).send().await.expect("response");
            assert_eq!(response.status(), StatusCode::OK);
        }
        sigterm(&child);
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .expect("stderr")
            .read_to_string(&mut stderr)
            .await
            .expect("stderr");
        assert!(child.wait().await.expect("status").success());
        let stdout = rest.await.expect("join").join("\n");

        let token = &metadata.minted()[0];
        let signature = token.rsplit('.').next().expect("signature");
        assert!(stdout.len() > 1000, "trace logging is on: {stdout}");
        for output in [&stdout, &stderr] {
            assert!(!output.contains(token.as_str()));
            assert!(!output.contains(signature));
        }
    })
    .await;
}

#[tokio::test]
async fn user_credentials_without_impersonation_stop_the_start() {
    bounded(async {
        let dir = std::env::temp_dir().join(format!("sender-adc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let adc = dir.join("application_default_credentials.json");
        std::fs::write(
            &adc,
            r#"{"type":"authorized_user","client_id":"x","client_secret":"y","refresh_token":"z"}"#,
        )
        .expect("write");
        let (_, message) = cloud_run::testing::refused(
            sender()
                .env(
                    "RECEIVING_SERVICE_URL",
                    "https://receiving-service.example.run.app",
                )
                .env("CLOUDSDK_CONFIG", &dir),
        )
        .await;
        assert!(message.starts_with("ID_TOKEN_SOURCE: "), "{message}");
        assert!(message.contains("cannot mint ID tokens"), "{message}");
        assert!(message.contains("IMPERSONATE_SERVICE_ACCOUNT"), "{message}");
    })
    .await;
}

#[tokio::test]
async fn a_receiver_url_with_a_password_is_refused_without_echoing_it() {
    bounded(async {
        let url = "https://user:hunter2-secret@receiver.example.com/";
        let (_, message) = cloud_run::testing::refused(
            sender()
                .env("RECEIVING_SERVICE_URL", url)
                .env("ID_TOKEN_SOURCE", "none"),
        )
        .await;
        assert!(
            message.starts_with("RECEIVING_SERVICE_URL: must not hold a user name or password"),
            "{message}"
        );
        assert!(!message.contains("hunter2-secret"), "{message}");
        let output = sender()
            .env("LOG_FORMAT", "text")
            .env("RECEIVING_SERVICE_URL", url)
            .env("ID_TOKEN_SOURCE", "none")
            .output()
            .await
            .expect("run");
        assert!(!output.status.success());
        for stream in [&output.stdout, &output.stderr] {
            let text = String::from_utf8_lossy(stream);
            assert!(!text.contains("hunter2-secret"), "{text}");
        }
    })
    .await;
}

/// Every log line of a sender started with `receiver_url`, up to SIGTERM.
async fn start_up_lines(receiver_url: &str) -> Vec<serde_json::Value> {
    let mut child = sender()
        .env("RECEIVING_SERVICE_URL", receiver_url)
        .env("GCE_METADATA_HOST", "127.0.0.1:9")
        .spawn()
        .expect("spawn");
    let (_, rest) = listening(&mut child).await;
    cloud_run::testing::exits_zero_on_sigterm(&mut child).await;
    rest.await
        .expect("join")
        .iter()
        .map(|line| serde_json::from_str(line).expect("json"))
        .collect()
}

#[tokio::test]
async fn a_plain_http_receiver_elsewhere_is_warned_about_at_start() {
    bounded(async {
        let cleartext = |lines: &[serde_json::Value]| {
            lines.iter().any(|l| {
                l["severity"] == "WARNING"
                    && l["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("the ID token travels in clear text"))
            })
        };
        let lines = start_up_lines("http://receiver.example.com/").await;
        assert!(cleartext(&lines), "{lines:?}");
        for quiet in ["http://127.0.0.1:9/", "https://receiver.example.com/"] {
            let lines = start_up_lines(quiet).await;
            assert!(!cleartext(&lines), "{quiet}: {lines:?}");
        }
    })
    .await;
}

/// The metadata server's own words go to the log, in the request's trace;
/// the anonymous caller gets a fixed phrase.
#[tokio::test]
async fn an_upstream_refusal_is_logged_with_the_trace_and_not_answered() {
    bounded(async {
        const WORDS: &str = "distinctive-upstream-words-5b1e";
        let metadata = FakeMetadata::new(vec![crate::support::MetadataMode::Refuse(
            StatusCode::FORBIDDEN,
            WORDS,
        )]);
        let metadata_server = metadata.start().await;
        let mut child = sender()
            .env("RECEIVING_SERVICE_URL", "http://127.0.0.1:9/")
            .env("GCE_METADATA_HOST", metadata_server.addr().to_string())
            .env("GOOGLE_CLOUD_PROJECT", "test-project")
            .spawn()
            .expect("spawn");
        let (addr, rest) = listening(&mut child).await;
        let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
        let response = client()
            .get(root(addr))
            .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))
            .send()
            .await
            .expect("response");
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = response.text().await.expect("body");
        assert_eq!(
            body,
            "could not get an ID token: the metadata server refused\n"
        );
        cloud_run::testing::exits_zero_on_sigterm(&mut child).await;
        let lines = rest.await.expect("join");
        let logged = lines.iter().find(|line| {
            let entry: serde_json::Value = serde_json::from_str(line).expect("json");
            entry["severity"] == "WARNING"
                && entry["logging.googleapis.com/trace"]
                    == format!("projects/test-project/traces/{trace}")
                && line.contains(WORDS)
        });
        assert!(logged.is_some(), "{lines:#?}");
    })
    .await;
}
