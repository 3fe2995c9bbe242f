//! The real `receiver` binary: bad config, start-up, SIGTERM.

use std::{process::Stdio, time::Duration};

use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

use crate::support::{bounded, client, url};

fn receiver() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_receiver"));
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

/// Reads the JSON log on stdout until the `listening` line; returns its address.
async fn listening_addr(child: &mut Child) -> std::net::SocketAddr {
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    while let Some(line) = lines.next_line().await.expect("read") {
        let entry: serde_json::Value = serde_json::from_str(&line).expect("json log line");
        assert!(entry["severity"].is_string(), "{line}");
        if entry["message"] == "listening" {
            let addr = entry["addr"]
                .as_str()
                .expect("addr")
                .parse()
                .expect("socket addr");
            // Keep draining so the child never blocks on a full pipe.
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            return addr;
        }
    }
    panic!("receiver exited before listening");
}

fn sigterm(child: &Child) {
    let pid = child.id().expect("pid").to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
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
async fn bad_port_exits_non_zero_naming_it() {
    bounded(async {
        let output = receiver()
            .env("PORT", "eighty")
            .output()
            .await
            .expect("run");
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
                .starts_with("PORT: "),
            "{out}"
        );
    })
    .await;
}
