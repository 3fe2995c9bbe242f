//! Helpers for the serve tests: servers with short timeouts, raw HTTP/1
//! and HTTP/2 bytes on a socket, and the process's descriptor limit.

use std::time::{Duration, Instant};

use cloud_run::{response::text, testing::Spawned, ServerConfig};
use http::StatusCode;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

pub(crate) use cloud_run::testing::bounded;

/// The shared loopback settings, with a grace period long enough to tell
/// "drained at once" from "waited it out", and a short header timeout.
pub(crate) fn config() -> ServerConfig {
    ServerConfig {
        shutdown_grace: Duration::from_secs(5),
        header_read_timeout: Duration::from_millis(500),
        ..cloud_run::testing::loopback()
    }
}

/// Loopback settings with these header and idle timeouts.
pub(crate) fn timeouts(header: Duration, idle: Duration) -> ServerConfig {
    ServerConfig {
        header_read_timeout: header,
        idle_timeout: idle,
        ..config()
    }
}

pub(crate) async fn hello_server_with(config: ServerConfig) -> Spawned {
    Spawned::serve(config, |_req| async { text(StatusCode::OK, "hello") })
        .await
        .expect("server")
}

pub(crate) async fn hello_server() -> Spawned {
    hello_server_with(config()).await
}

/// The HTTP/2 client connection preface.
pub(crate) const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
pub(crate) const SETTINGS: u8 = 0x4;
pub(crate) const PING: u8 = 0x6;
pub(crate) const GOAWAY: u8 = 0x7;
pub(crate) const ACK: u8 = 0x1;

/// One HTTP/2 frame's bytes.
pub(crate) fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len())
        .expect("small frame")
        .to_be_bytes();
    let mut bytes = vec![len[1], len[2], len[3], kind, flags];
    bytes.extend_from_slice(&stream.to_be_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

/// The next HTTP/2 frame (kind, flags, payload); `None` once the server
/// closed the connection.
pub(crate) async fn read_frame(conn: &mut TcpStream) -> Option<(u8, u8, Vec<u8>)> {
    let mut header = [0u8; 9];
    conn.read_exact(&mut header).await.ok()?;
    let len = usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
    let mut payload = vec![0u8; len];
    conn.read_exact(&mut payload).await.ok()?;
    Some((header[3], header[4], payload))
}

/// Sends one `GET /` on `conn` and returns the status line and body of the
/// answer (a complete `hello` or `done` response).
pub(crate) async fn get(conn: &mut TcpStream) -> String {
    get_path(conn, "/").await
}

pub(crate) async fn get_path(conn: &mut TcpStream, path: &str) -> String {
    conn.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let n = conn.read(&mut buf).await.expect("read");
        assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&answer);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|l| l.parse::<usize>().ok())
                .expect("content-length");
            if body.len() >= length {
                let status = head.lines().next().unwrap_or_default();
                return format!("{status} {body}");
            }
        }
    }
}

/// Waits (at most `limit`) for the server to close `conn`, ignoring what
/// it sends; returns how long that took from `since`, or `None` if the
/// connection was still open at `limit`.
pub(crate) async fn closed(
    conn: &mut TcpStream,
    since: Instant,
    limit: Duration,
) -> Option<Duration> {
    let mut buf = [0u8; 1024];
    tokio::time::timeout(limit, async {
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => return since.elapsed(),
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
}

/// This process's soft limit of open files, from `/proc/self/limits`.
pub(crate) fn open_files_limit() -> u64 {
    let limits = std::fs::read_to_string("/proc/self/limits").expect("limits");
    limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|soft| soft.parse().ok())
        .unwrap_or(u64::MAX)
}
