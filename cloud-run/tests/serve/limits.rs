//! MAX_CONNECTIONS: at the cap the longest idle connection makes room for a
//! new client; with nothing idle the new connection is closed, not hung.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use cloud_run::{response::text, testing::Spawned, ServerConfig};
use http::StatusCode;
use tokio::{net::TcpStream, sync::Notify};

use crate::support::{bounded, closed, config, get, hello_server_with};

fn capped(max_connections: usize) -> ServerConfig {
    ServerConfig {
        max_connections,
        header_read_timeout: Duration::from_secs(10),
        ..config()
    }
}

#[tokio::test]
async fn at_max_connections_the_longest_idle_connection_makes_room() {
    bounded(async {
        let server = hello_server_with(capped(3)).await;
        // The oldest has not sent anything: it counts as idle too.
        let mut silent = TcpStream::connect(server.addr()).await.expect("connect");
        let mut a = TcpStream::connect(server.addr()).await.expect("connect");
        assert_eq!(get(&mut a).await, "HTTP/1.1 200 OK hello");
        let mut b = TcpStream::connect(server.addr()).await.expect("connect");
        assert_eq!(get(&mut b).await, "HTTP/1.1 200 OK hello");

        let start = Instant::now();
        let mut new = TcpStream::connect(server.addr()).await.expect("connect");
        let answer = tokio::time::timeout(Duration::from_secs(1), get(&mut new))
            .await
            .expect("a new client is served within a second");
        assert_eq!(answer, "HTTP/1.1 200 OK hello");
        closed(&mut silent, start, Duration::from_secs(1))
            .await
            .expect("the longest idle connection was closed");
        // The others still serve: only one had to go.
        assert_eq!(get(&mut a).await, "HTTP/1.1 200 OK hello");
        assert_eq!(get(&mut b).await, "HTTP/1.1 200 OK hello");
    })
    .await;
}

#[tokio::test]
async fn at_max_connections_with_nothing_idle_a_new_connection_is_closed() {
    bounded(async {
        let arrived = Arc::new(AtomicUsize::new(0));
        let both = Arc::new(Notify::new());
        let release = Arc::new(Notify::new());
        let handler = {
            let (arrived, both, release) = (arrived.clone(), both.clone(), release.clone());
            move |_req| {
                let (arrived, both, release) = (arrived.clone(), both.clone(), release.clone());
                async move {
                    let released = release.notified();
                    if arrived.fetch_add(1, Ordering::SeqCst) + 1 == 2 {
                        both.notify_one();
                    }
                    released.await;
                    text(StatusCode::OK, "done")
                }
            }
        };
        let server = Spawned::serve(capped(2), handler).await.expect("server");
        let addr = server.addr();
        let busy: Vec<_> = (0..2)
            .map(|_| {
                tokio::spawn(async move {
                    let mut conn = TcpStream::connect(addr).await.expect("connect");
                    get(&mut conn).await
                })
            })
            .collect();
        both.notified().await;

        let start = Instant::now();
        let mut refused = TcpStream::connect(addr).await.expect("connect");
        let after = closed(&mut refused, start, Duration::from_secs(2))
            .await
            .expect("closed rather than left waiting");
        assert!(after < Duration::from_secs(1), "{after:?}");

        release.notify_waiters();
        for request in busy {
            assert_eq!(request.await.expect("join"), "HTTP/1.1 200 OK done");
        }
    })
    .await;
}
