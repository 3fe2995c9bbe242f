//! Signals to the real binary: a second SIGTERM or SIGINT during the drain
//! exits at once, with 143 or 130, rather than waiting out the grace period.

use std::time::{Duration, Instant};

use cloud_run::testing::{listening_live, next_message, send_signal};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::support::bounded;

/// An h2c request whose response cannot be sent: the client grants no flow
/// control window, so the stream stays in flight (and the drain open) until
/// the grace period ends. Returns once the response headers arrived, i.e.
/// the request is certainly in flight.
async fn stuck_h2c_request(addr: std::net::SocketAddr) -> TcpStream {
    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = u32::try_from(payload.len()).expect("small").to_be_bytes();
        let mut bytes = vec![len[1], len[2], len[3], kind, flags];
        bytes.extend_from_slice(&stream.to_be_bytes());
        bytes.extend_from_slice(payload);
        bytes
    }
    let mut conn = TcpStream::connect(addr).await.expect("connect");
    // SETTINGS_INITIAL_WINDOW_SIZE (4) = 0.
    let settings = frame(0x4, 0, 0, &[0, 4, 0, 0, 0, 0]);
    // HPACK: GET, http, /, then :authority "localhost" as a literal.
    let mut block = vec![0x82, 0x86, 0x84, 0x41, 9];
    block.extend_from_slice(b"localhost");
    let headers = frame(0x1, 0x4 | 0x1, 1, &block);
    let hello = [
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".as_slice(),
        &settings,
        &headers,
    ]
    .concat();
    conn.write_all(&hello).await.expect("write");
    loop {
        let mut header = [0u8; 9];
        conn.read_exact(&mut header).await.expect("frame");
        let len =
            usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
        let mut payload = vec![0u8; len];
        conn.read_exact(&mut payload).await.expect("payload");
        if header[3] == 0x1 {
            return conn;
        }
    }
}

async fn second_signal_exits_at_once(first: &str, second: &str, status: i32) {
    let mut child = cloud_run::testing::command(env!("CARGO_BIN_EXE_receiver"))
        .env("SHUTDOWN_GRACE", "8s")
        .spawn()
        .expect("spawn");
    let (addr, mut logs) = listening_live(&mut child).await;
    let _in_flight = stuck_h2c_request(addr).await;

    send_signal(&child, first);
    next_message(&mut logs, "shutting down").await;
    let sent = Instant::now();
    send_signal(&child, second);
    let exit = tokio::time::timeout(Duration::from_secs(2), child.wait())
        .await
        .expect("exit at once, not after the grace period")
        .expect("status");
    assert_eq!(exit.code(), Some(status), "{exit}");
    assert!(sent.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn a_second_sigterm_during_the_drain_exits_143() {
    bounded(second_signal_exits_at_once("TERM", "TERM", 143)).await;
}

#[tokio::test]
async fn a_second_sigint_during_the_drain_exits_130() {
    bounded(second_signal_exits_at_once("INT", "INT", 130)).await;
}
