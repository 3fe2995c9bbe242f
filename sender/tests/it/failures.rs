//! Every failure gets its status and a one-line reason, never a token.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::StatusCode;
use tokio::{io::AsyncReadExt, net::TcpListener};

use crate::support::{
    bounded, client, hour, root, sender_config, start_sender, FakeMetadata, FakeReceiver,
    ReceiverMode, Tutorial,
};

/// An address where nothing listens.
async fn closed_port() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("addr")
}

async fn get(addr: std::net::SocketAddr) -> (StatusCode, String) {
    let response = client().get(root(addr)).send().await.expect("response");
    let status = response.status();
    (status, response.text().await.expect("body"))
}

fn one_line(body: &str) {
    assert!(
        body.ends_with('\n') && body.trim_end().lines().count() == 1,
        "{body:?}"
    );
}

#[tokio::test]
async fn metadata_server_down_is_503() {
    bounded(async {
        let receiver = FakeReceiver::hello();
        let receiver_server = receiver.start().await;
        let config = sender_config(receiver_server.addr(), Some(closed_port().await));
        let sender = start_sender(config).await;
        let (status, body) = get(sender.addr()).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            body,
            "could not get an ID token: the metadata server is unreachable\n"
        );
        assert!(receiver.requests.lock().expect("lock").is_empty());
    })
    .await;
}

#[tokio::test]
async fn metadata_server_refusing_is_503() {
    bounded(async {
        let chain = Tutorial::start(
            FakeMetadata::new(vec![crate::support::MetadataMode::Fail(
                StatusCode::FORBIDDEN,
            )]),
            FakeReceiver::hello(),
        )
        .await;
        let (status, body) = chain.get().await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            body,
            "could not get an ID token: the metadata server refused\n"
        );
    })
    .await;
}

#[tokio::test]
async fn metadata_server_too_slow_is_503_after_a_bounded_wait() {
    bounded(async {
        let metadata = FakeMetadata::new(vec![hour()]);
        *metadata.latency.lock().expect("lock") = Duration::from_secs(5);
        let chain = Tutorial::start_with(metadata, FakeReceiver::hello(), |config| {
            config.metadata_timeout = Duration::from_millis(300);
        })
        .await;
        let started = Instant::now();
        let (status, body) = chain.get().await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("did not answer in time"), "{body}");
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{:?}",
            started.elapsed()
        );
    })
    .await;
}

#[tokio::test]
async fn receiver_unreachable_is_502() {
    bounded(async {
        let sender = start_sender(sender_config(closed_port().await, None)).await;
        let (status, body) = get(sender.addr()).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY);
        assert_eq!(body, "receiving service unreachable\n");
    })
    .await;
}

#[tokio::test]
async fn receiver_slower_than_the_request_timeout_is_504() {
    bounded(async {
        let chain = Tutorial::start_with(
            FakeMetadata::new(vec![hour()]),
            FakeReceiver::new(ReceiverMode::Hold),
            |config| config.request_timeout = Duration::from_millis(300),
        )
        .await;
        let (status, body) = chain.get().await;
        chain.receiver.gate.open();
        assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(body, "receiving service did not answer within 300ms\n");
        assert!(!body.contains(&chain.metadata.minted()[0]));
    })
    .await;
}

#[tokio::test]
async fn receiver_resetting_the_connection_is_502() {
    bounded(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let resetter = tokio::spawn(async move {
            loop {
                let Ok((mut conn, _)) = listener.accept().await else {
                    return;
                };
                let mut buf = [0u8; 1024];
                let _ = conn.read(&mut buf).await;
                // Linger 0: closing sends RST instead of FIN.
                conn.set_zero_linger().expect("linger");
                drop(conn);
            }
        });
        let sender = start_sender(sender_config(addr, None)).await;
        let (status, body) = get(sender.addr()).await;
        resetter.abort();
        assert_eq!(status, StatusCode::BAD_GATEWAY);
        one_line(&body);
    })
    .await;
}

#[tokio::test]
async fn an_oversized_answer_is_502_not_buffered() {
    bounded(async {
        let chain = Tutorial::start_with(
            FakeMetadata::new(vec![hour()]),
            FakeReceiver::new(ReceiverMode::Answer(
                StatusCode::OK,
                Bytes::from(vec![b'x'; 64 * 1024]),
            )),
            |config| config.max_response_bytes = 16 * 1024,
        )
        .await;
        let (status, body) = chain.get().await;
        assert_eq!(status, StatusCode::BAD_GATEWAY);
        assert_eq!(
            body,
            "receiving service's answer is larger than 16384 bytes\n"
        );
    })
    .await;
}
