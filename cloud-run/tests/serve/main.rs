//! The serve loop under abuse: slow request heads, oversized heads, many
//! idle connections, and a drain that lets in-flight requests finish.

mod accept;
mod limits;
mod support;
mod timeouts;

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use cloud_run::{response::text, testing::Spawned};
use http::StatusCode;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::Notify,
};

use support::{bounded, config, hello_server, open_files_limit};

#[tokio::test]
async fn a_head_sent_byte_by_byte_is_cut_off_by_the_header_timeout() {
    bounded(async {
        let server = hello_server().await;
        let mut conn = TcpStream::connect(server.addr()).await.expect("connect");
        let head = b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
        let started = Instant::now();
        let mut closed_after = None;
        for byte in head {
            // One byte every 50 ms: the whole head would take over 4 s.
            if conn.write_all(&[*byte]).await.is_err() {
                closed_after = Some(started.elapsed());
                break;
            }
            let mut buf = [0u8; 256];
            match tokio::time::timeout(Duration::from_millis(50), conn.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => {
                    closed_after = Some(started.elapsed());
                    break;
                }
                Ok(Ok(n)) => panic!("unexpected answer: {:?}", String::from_utf8_lossy(&buf[..n])),
                Err(_) => {}
            }
        }
        let closed_after = closed_after.expect("the server closed the connection before the head was complete");
        assert!(closed_after < Duration::from_secs(2), "{closed_after:?}");
    })
    .await;
}

#[tokio::test]
async fn an_oversized_head_gets_431() {
    bounded(async {
        let server = hello_server().await;
        let mut conn = TcpStream::connect(server.addr()).await.expect("connect");
        let mut head = b"GET / HTTP/1.1\r\nHost: localhost\r\n".to_vec();
        for i in 0..200 {
            head.extend_from_slice(format!("X-Pad-{i}: {}\r\n", "b".repeat(500)).as_bytes());
        }
        head.extend_from_slice(b"\r\n");
        let _ = conn.write_all(&head).await;
        let mut answer = Vec::new();
        let _ = conn.read_to_end(&mut answer).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    })
    .await;
}

#[tokio::test]
async fn many_idle_keep_alive_connections_do_not_block_new_requests() {
    bounded(async {
        let server = hello_server().await;
        // Each connection costs this process two descriptors (both ends), and
        // other tests run beside this one: stay well under `ulimit -n`.
        let count = usize::try_from(open_files_limit() / 4).map_or(2000, |n| n.min(2000));
        let mut idle = Vec::with_capacity(count);
        for _ in 0..count {
            let mut conn = TcpStream::connect(server.addr()).await.expect("connect");
            conn.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
                .await
                .expect("write");
            let mut buf = [0u8; 512];
            let n = conn.read(&mut buf).await.expect("answer");
            assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
            idle.push(conn);
        }
        let client = cloud_run::testing::client();
        for _ in 0..20 {
            let response = client
                .get(format!("http://{}/", server.addr()))
                .send()
                .await
                .expect("a new request is served");
            assert_eq!(response.status(), StatusCode::OK);
        }
        assert_eq!(idle.len(), count);
    })
    .await;
}

#[tokio::test]
async fn shutdown_lets_every_in_flight_request_finish() {
    bounded(async {
        let arrived = Arc::new(AtomicUsize::new(0));
        let all_arrived = Arc::new(Notify::new());
        let release = Arc::new(Notify::new());
        let handler = {
            let (arrived, all_arrived, release) =
                (arrived.clone(), all_arrived.clone(), release.clone());
            move |_req| {
                let (arrived, all_arrived, release) =
                    (arrived.clone(), all_arrived.clone(), release.clone());
                async move {
                    let released = release.notified();
                    if arrived.fetch_add(1, Ordering::SeqCst) + 1 == 64 {
                        all_arrived.notify_one();
                    }
                    released.await;
                    text(StatusCode::OK, "done")
                }
            }
        };
        let server = Spawned::serve(config(), handler).await.expect("server");
        let addr = server.addr();
        let client = cloud_run::testing::client();
        let requests: Vec<_> = (0..64)
            .map(|_| tokio::spawn(client.get(format!("http://{addr}/")).send()))
            .collect();
        all_arrived.notified().await;

        let stopped = tokio::spawn(server.stop());
        while TcpStream::connect(addr).await.is_ok() {
            tokio::task::yield_now().await;
        }
        release.notify_waiters();
        for request in requests {
            let response = request.await.expect("join").expect("answered, not reset");
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(response.text().await.expect("body"), "done");
        }
        stopped.await.expect("drained");
    })
    .await;
}

#[tokio::test]
async fn shutdown_with_only_idle_connections_returns_at_once() {
    bounded(async {
        let server = hello_server().await;
        let mut idle = TcpStream::connect(server.addr()).await.expect("connect");
        assert_eq!(support::get(&mut idle).await, "HTTP/1.1 200 OK hello");
        let _silent = TcpStream::connect(server.addr()).await.expect("connect");
        let started = Instant::now();
        server.stop().await;
        // Well under the 5 s grace: nothing was in flight.
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
    })
    .await;
}

#[tokio::test]
async fn a_request_still_running_when_the_grace_period_ends_is_dropped() {
    bounded(async {
        let started = Arc::new(Notify::new());
        let reached = Arc::clone(&started);
        let server = Spawned::serve(
            cloud_run::ServerConfig {
                shutdown_grace: Duration::from_millis(300),
                ..config()
            },
            move |_req| {
                let reached = Arc::clone(&reached);
                async move {
                    reached.notify_one();
                    std::future::pending::<()>().await;
                    text(StatusCode::OK, "never")
                }
            },
        )
        .await
        .expect("server");
        let mut conn = TcpStream::connect(server.addr()).await.expect("connect");
        conn.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("request");
        started.notified().await;
        server.stop().await;
        // The serve loop has returned: its connections go with it.
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(2), conn.read(&mut buf))
            .await
            .expect("the connection is closed, not left serving");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    })
    .await;
}
