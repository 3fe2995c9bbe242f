//! Header and idle timeouts kept apart: silent connections and partial
//! prefaces are closed after HEADER_TIMEOUT, idle connections (HTTP/1
//! keep-alive and HTTP/2) only after IDLE_TIMEOUT.

use std::time::{Duration, Instant};

use cloud_run::{response::text, testing::Spawned};
use http::StatusCode;
use tokio::{io::AsyncWriteExt, net::TcpStream};

use crate::support::{
    bounded, closed, frame, get, hello_server_with, read_frame, timeouts, ACK, GOAWAY, PING,
    PREFACE, SETTINGS,
};

const MS: Duration = Duration::from_millis(1);

#[tokio::test]
async fn an_idle_keep_alive_connection_outlives_the_header_timeout() {
    bounded(async {
        let server = hello_server_with(timeouts(200 * MS, Duration::from_secs(10))).await;
        let mut conn = TcpStream::connect(server.addr()).await.expect("connect");
        assert_eq!(get(&mut conn).await, "HTTP/1.1 200 OK hello");
        // Idle for three header timeouts: the wait being tested, not a sync.
        tokio::time::sleep(600 * MS).await;
        assert_eq!(get(&mut conn).await, "HTTP/1.1 200 OK hello");
    })
    .await;
}

#[tokio::test]
async fn an_idle_http1_connection_is_closed_after_the_idle_timeout() {
    bounded(async {
        let server = hello_server_with(timeouts(200 * MS, 800 * MS)).await;
        let mut conn = TcpStream::connect(server.addr()).await.expect("connect");
        assert_eq!(get(&mut conn).await, "HTTP/1.1 200 OK hello");
        let idle = Instant::now();
        let after = closed(&mut conn, idle, Duration::from_secs(5))
            .await
            .expect("closed within 5 s");
        assert!(
            after >= 750 * MS && after < 2800 * MS,
            "closed after {after:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_silent_connection_is_closed_after_the_header_timeout() {
    bounded(async {
        let server = hello_server_with(timeouts(300 * MS, Duration::from_secs(10))).await;
        let start = Instant::now();
        let mut conn = TcpStream::connect(server.addr()).await.expect("connect");
        let after = closed(&mut conn, start, Duration::from_secs(3))
            .await
            .expect("a silent connection is closed");
        assert!(
            after >= 250 * MS && after < 1500 * MS,
            "closed after {after:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_partial_http2_preface_is_closed_after_the_header_timeout() {
    bounded(async {
        let server = hello_server_with(timeouts(300 * MS, Duration::from_secs(10))).await;
        let settings = frame(SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 100]);
        let partial: [Vec<u8>; 3] = [
            PREFACE[..16].to_vec(),
            PREFACE.to_vec(),
            [PREFACE, &settings[..12]].concat(),
        ];
        for bytes in partial {
            let start = Instant::now();
            let mut conn = TcpStream::connect(server.addr()).await.expect("connect");
            conn.write_all(&bytes).await.expect("write");
            let after = closed(&mut conn, start, Duration::from_secs(3))
                .await
                .unwrap_or_else(|| panic!("still open after sending {} bytes", bytes.len()));
            assert!(
                after >= 250 * MS && after < 1500 * MS,
                "closed after {after:?}"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn a_request_head_begun_on_an_idle_connection_must_complete_within_the_header_timeout() {
    bounded(async {
        let server = hello_server_with(timeouts(300 * MS, Duration::from_secs(10))).await;
        let mut conn = TcpStream::connect(server.addr()).await.expect("connect");
        assert_eq!(get(&mut conn).await, "HTTP/1.1 200 OK hello");
        let start = Instant::now();
        conn.write_all(b"GET / HTTP/1.1\r\nHost: loc")
            .await
            .expect("write");
        let after = closed(&mut conn, start, Duration::from_secs(3))
            .await
            .expect("an unfinished head is cut off");
        assert!(
            after >= 250 * MS && after < 1500 * MS,
            "closed after {after:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_request_longer_than_the_idle_timeout_is_not_cut() {
    bounded(async {
        let config = timeouts(200 * MS, 300 * MS);
        let server = Spawned::serve(config, |_req| async {
            // Slow work, longer than both timeouts.
            tokio::time::sleep(Duration::from_secs(1)).await;
            text(StatusCode::OK, "done")
        })
        .await
        .expect("server");
        let mut conn = TcpStream::connect(server.addr()).await.expect("connect");
        assert_eq!(get(&mut conn).await, "HTTP/1.1 200 OK done");
        let client = reqwest::Client::builder()
            .no_proxy()
            .http2_prior_knowledge()
            .build()
            .expect("client");
        let response = client
            .get(format!("http://{}/", server.addr()))
            .send()
            .await
            .expect("h2c answer");
        assert_eq!(response.version(), http::Version::HTTP_2);
        assert_eq!(response.text().await.expect("body"), "done");
    })
    .await;
}

/// Opens an h2c connection (preface and empty SETTINGS) and reads frames
/// until the server closes it, acknowledging SETTINGS and PINGs only if
/// `answer`. Returns when a GOAWAY came and when the connection closed,
/// both from the moment the preface was sent.
async fn h2c_until_closed(
    addr: std::net::SocketAddr,
    answer: bool,
) -> (Option<Duration>, Duration) {
    let mut conn = TcpStream::connect(addr).await.expect("connect");
    let start = Instant::now();
    conn.write_all(&[PREFACE, &frame(SETTINGS, 0, 0, &[])].concat())
        .await
        .expect("preface");
    let mut goaway = None;
    while let Some((kind, flags, payload)) = read_frame(&mut conn).await {
        let reply = match (kind, flags & ACK) {
            (SETTINGS, 0) => Some(frame(SETTINGS, ACK, 0, &[])),
            (PING, 0) => Some(frame(PING, ACK, 0, &payload)),
            (GOAWAY, _) => {
                goaway.get_or_insert(start.elapsed());
                None
            }
            _ => None,
        };
        if let Some(reply) = reply.filter(|_| answer) {
            let _ = conn.write_all(&reply).await;
        }
    }
    (goaway, start.elapsed())
}

#[tokio::test]
async fn an_h2c_connection_without_streams_gets_goaway_after_the_idle_timeout() {
    bounded(async {
        let server = hello_server_with(timeouts(200 * MS, 800 * MS)).await;
        let (goaway, closed) = tokio::time::timeout(
            Duration::from_secs(5),
            h2c_until_closed(server.addr(), true),
        )
        .await
        .expect("closed within 5 s");
        let goaway = goaway.expect("a GOAWAY before closing");
        assert!(goaway >= 750 * MS, "GOAWAY after {goaway:?}");
        assert!(closed < 2800 * MS, "closed after {closed:?}");
    })
    .await;
}

#[tokio::test]
async fn an_h2c_peer_that_answers_nothing_is_dropped_within_idle_plus_two_seconds() {
    bounded(async {
        let server = hello_server_with(timeouts(200 * MS, 800 * MS)).await;
        let (_, closed) = tokio::time::timeout(
            Duration::from_secs(5),
            h2c_until_closed(server.addr(), false),
        )
        .await
        .expect("closed within 5 s");
        assert!(
            closed >= 750 * MS && closed < 2800 * MS,
            "closed after {closed:?}"
        );
    })
    .await;
}

/// An h2c client that asks for `/` but grants no flow-control window, so the
/// response can never be sent, and that answers every SETTINGS and PING: a
/// live peer holding its stream open. Returns when the server closed.
async fn h2c_zero_window_until_closed(addr: std::net::SocketAddr) -> Duration {
    let mut conn = TcpStream::connect(addr).await.expect("connect");
    let start = Instant::now();
    // SETTINGS_INITIAL_WINDOW_SIZE (4) = 0.
    let settings = frame(SETTINGS, 0, 0, &[0, 4, 0, 0, 0, 0]);
    // HPACK: GET, http, /, then :authority "localhost" as a literal.
    let mut block = vec![0x82, 0x86, 0x84, 0x41, 9];
    block.extend_from_slice(b"localhost");
    let headers = frame(0x1, 0x4 | 0x1, 1, &block);
    conn.write_all(&[PREFACE, &settings, &headers].concat())
        .await
        .expect("request");
    while let Some((kind, flags, payload)) = read_frame(&mut conn).await {
        let reply = match (kind, flags & ACK) {
            (SETTINGS, 0) => Some(frame(SETTINGS, ACK, 0, &[])),
            (PING, 0) => Some(frame(PING, ACK, 0, &payload)),
            _ => None,
        };
        if let Some(reply) = reply {
            let _ = conn.write_all(&reply).await;
        }
    }
    start.elapsed()
}

#[tokio::test]
async fn a_response_the_peer_never_takes_does_not_hold_the_connection() {
    bounded(async {
        // The idle timeout is far off and the peer answers PINGs: only the
        // unsent response can be the reason to close.
        let server = hello_server_with(timeouts(300 * MS, Duration::from_secs(60))).await;
        let closed = tokio::time::timeout(
            Duration::from_secs(5),
            h2c_zero_window_until_closed(server.addr()),
        )
        .await
        .expect("closed within 5 s");
        assert!(
            closed >= 250 * MS && closed < 2 * Duration::from_secs(1),
            "closed after {closed:?}"
        );
    })
    .await;
}

/// A body with nothing to send for `pause`, then `hello`: a proxied stream
/// between chunks.
struct SlowBody {
    pause: std::pin::Pin<Box<tokio::time::Sleep>>,
    done: bool,
}

impl hyper::body::Body for SlowBody {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        if self.done {
            return std::task::Poll::Ready(None);
        }
        std::task::ready!(std::future::Future::poll(self.pause.as_mut(), cx));
        self.done = true;
        std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(
            bytes::Bytes::from_static(b"hello"),
        ))))
    }
}

#[tokio::test]
async fn a_streamed_body_waiting_on_its_source_is_not_cut_as_a_stalled_peer() {
    bounded(async {
        // The body pauses three header timeouts: its own wait, not the
        // peer's, so the connection must stay.
        let server = cloud_run::testing::Spawned::serve(
            timeouts(200 * MS, Duration::from_secs(10)),
            |_req| async {
                http::Response::new(SlowBody {
                    pause: Box::pin(tokio::time::sleep(Duration::from_millis(600))),
                    done: false,
                })
            },
        )
        .await
        .expect("server");
        for http2 in [false, true] {
            let mut client = reqwest::Client::builder().no_proxy();
            if http2 {
                client = client.http2_prior_knowledge();
            }
            let body = client
                .build()
                .expect("client")
                .get(format!("http://{}/", server.addr()))
                .send()
                .await
                .expect("answer")
                .text()
                .await
                .expect("the whole body, not a cut connection");
            assert_eq!(body, "hello", "http2: {http2}");
        }
    })
    .await;
}
