//! The real `sender` binary: bad config, SIGTERM, and what it prints.

use std::{process::Stdio, time::Duration};

use http::StatusCode;
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, BufReader},
    process::{Child, Command},
};

use crate::support::{bounded, client, hour, root, FakeMetadata, FakeReceiver};

pub fn sender() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sender"));
    cmd.env_clear()
        .env("BIND_ADDR", "127.0.0.1")
        .env("PORT", "0")
        .env("LOG_FORMAT", "json")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// Reads stdout until the `listening` line; returns the address and every
/// line read so far, and keeps collecting the rest in the background.
pub async fn listening(
    child: &mut Child,
) -> (std::net::SocketAddr, tokio::task::JoinHandle<Vec<String>>) {
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut seen = Vec::new();
    while let Some(line) = lines.next_line().await.expect("read") {
        seen.push(line.clone());
        let entry: serde_json::Value = serde_json::from_str(&line).expect("json log line");
        if entry["message"] == "listening" {
            let addr = entry["addr"].as_str().expect("addr").parse().expect("addr");
            let rest = tokio::spawn(async move {
                while let Ok(Some(line)) = lines.next_line().await {
                    seen.push(line);
                }
                seen
            });
            return (addr, rest);
        }
    }
    panic!("sender exited before listening: {seen:?}");
}

pub fn sigterm(child: &Child) {
    let pid = child.id().expect("pid").to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
}

#[tokio::test]
async fn missing_receiver_url_exits_non_zero_naming_it() {
    bounded(async {
        let output = sender().output().await.expect("run");
        assert!(!output.status.success());
        let out = String::from_utf8_lossy(&output.stdout);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 1, "{out}");
        let entry: serde_json::Value = serde_json::from_str(lines[0]).expect("json");
        assert_eq!(entry["severity"], "ERROR");
        assert!(
            entry["message"]
                .as_str()
                .expect("message")
                .starts_with("RECEIVING_SERVICE_URL: not set"),
            "{out}"
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
        sigterm(&child);
        let status = tokio::time::timeout(Duration::from_secs(3), child.wait())
            .await
            .expect("exit within 3 s of SIGTERM")
            .expect("status");
        assert!(status.success(), "{status}");
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
        let output = sender()
            .env(
                "RECEIVING_SERVICE_URL",
                "https://receiving-service.example.run.app",
            )
            .env("CLOUDSDK_CONFIG", &dir)
            .output()
            .await
            .expect("run");
        assert!(!output.status.success());
        let out = String::from_utf8_lossy(&output.stdout);
        assert_eq!(out.lines().count(), 1, "{out}");
        let entry: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
        let message = entry["message"].as_str().expect("message");
        assert!(message.starts_with("ID_TOKEN_SOURCE: "), "{message}");
        assert!(message.contains("cannot mint ID tokens"), "{message}");
        assert!(message.contains("IMPERSONATE_SERVICE_ACCOUNT"), "{message}");
    })
    .await;
}
