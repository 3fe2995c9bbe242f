//! The sender under load and faults: SIGTERM mid-load, its metadata server
//! going away and coming back, tokens expiring under load.

use std::{
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use http::StatusCode;
use sender::RefreshPolicy;
use tokio::net::TcpListener;

use crate::support::{
    bounded, client, hour, root, sender_config, start_sender, FakeMetadata, FakeReceiver,
    MetadataMode, ReceiverMode, Tutorial,
};

/// `n` requests, `concurrency` at a time; every status.
async fn load(url: String, n: usize, concurrency: usize) -> Vec<StatusCode> {
    let client = client();
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, url, next) = (client.clone(), url.clone(), next.clone());
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                while next.fetch_add(1, Ordering::SeqCst) < n {
                    let response = client.get(&url).send().await.expect("response");
                    statuses.push(response.status());
                }
                statuses
            })
        })
        .collect();
    let mut statuses = Vec::with_capacity(n);
    for worker in workers {
        statuses.extend(worker.await.expect("join"));
    }
    statuses
}

#[tokio::test]
async fn sigterm_under_load_completes_every_accepted_request_and_exits_zero() {
    bounded(async {
        let metadata = FakeMetadata::new(vec![hour()]);
        let metadata_server = metadata.start().await;
        let receiver = FakeReceiver::new(ReceiverMode::Hold);
        let receiver_server = receiver.start().await;
        let mut child = crate::binary::sender()
            .env("RECEIVING_SERVICE_URL", root(receiver_server.addr()))
            .env("GCE_METADATA_HOST", metadata_server.addr().to_string())
            .env("SHUTDOWN_GRACE", "5s")
            .spawn()
            .expect("spawn");
        let (addr, _logs) = crate::binary::listening(&mut child).await;

        // 64 requests in flight, each held inside the receiver.
        let client = client();
        let requests: Vec<_> = (0..64)
            .map(|_| tokio::spawn(client.get(root(addr)).send()))
            .collect();
        loop {
            let arrived = receiver.arrived.notified();
            if receiver.requests.lock().expect("lock").len() == 64 {
                break;
            }
            arrived.await;
        }

        crate::binary::sigterm(&child);
        while tokio::net::TcpStream::connect(addr).await.is_ok() {
            tokio::task::yield_now().await;
        }
        let released = Instant::now();
        receiver.gate.open();
        for request in requests {
            let response = request.await.expect("join").expect("answered, not reset");
            assert_eq!(response.status(), StatusCode::OK);
        }
        let status = tokio::time::timeout(Duration::from_secs(5), child.wait())
            .await
            .expect("exit within the grace period")
            .expect("status");
        assert!(status.success(), "{status}");
        assert!(released.elapsed() < Duration::from_secs(5));
    })
    .await;
}

#[tokio::test]
async fn metadata_server_down_is_503_fast_and_recovers_without_restart() {
    bounded(async {
        let receiver_server = FakeReceiver::hello().start().await;
        // Reserve a port, then leave it closed: the metadata server is down.
        let port = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind")
            .local_addr()
            .expect("addr");
        let mut config = sender_config(receiver_server.addr(), Some(port));
        // Each request may retry a refused connection within its budget;
        // kept short so that 50 of them stay quick.
        config.refresh.retry_budget = Duration::from_millis(200);
        let sender = start_sender(config).await;
        let started = Instant::now();
        let statuses = load(root(sender.addr()), 50, 10).await;
        assert!(statuses
            .iter()
            .all(|s| *s == StatusCode::SERVICE_UNAVAILABLE));
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );

        // It comes back on the same address.
        let metadata = FakeMetadata::new(vec![hour()]);
        let listener = TcpListener::bind(port).await.expect("rebind");
        let _metadata = metadata.serve_on(listener);
        let statuses = load(root(sender.addr()), 50, 10).await;
        assert!(
            statuses.iter().all(|s| *s == StatusCode::OK),
            "{statuses:?}"
        );
        assert_eq!(metadata.call_count(), 1);
    })
    .await;
}

#[tokio::test]
async fn a_token_expiring_under_load_is_renewed_once_and_no_request_fails() {
    bounded(async {
        // The first token is already inside the renewal window.
        let metadata = FakeMetadata::new(vec![
            MetadataMode::Cached {
                life: Duration::from_secs(3600),
                left: Duration::from_secs(30),
            },
            hour(),
        ]);
        *metadata.latency.lock().expect("lock") = Duration::from_millis(100);
        let chain = Tutorial::start_with(metadata, FakeReceiver::hello(), |config| {
            config.refresh = RefreshPolicy {
                min_remaining: Duration::from_secs(5),
                // The first renewal attempt comes this long after the fetch.
                min_interval: Duration::from_millis(100),
                ..RefreshPolicy::default()
            };
        })
        .await;
        let statuses = load(root(chain.sender.addr()), 2000, 32).await;
        assert!(statuses.iter().all(|s| *s == StatusCode::OK));
        assert_eq!(chain.metadata.call_count(), 2, "one fetch, one renewal");
        let minted = chain.metadata.minted();
        let last = chain.receiver.authorizations().pop().flatten();
        assert_eq!(last, Some(format!("Bearer {}", minted[1])));
    })
    .await;
}

#[tokio::test]
async fn never_more_than_one_metadata_call_at_a_time() {
    bounded(async {
        // Tokens too short-lived to reuse: every request needs a fresh one.
        let metadata = FakeMetadata::new(vec![MetadataMode::Mint(Duration::from_secs(3))]);
        *metadata.latency.lock().expect("lock") = Duration::from_millis(5);
        let chain = Tutorial::start_with(metadata, FakeReceiver::hello(), |config| {
            config.refresh = RefreshPolicy {
                early: Duration::from_secs(60),
                min_remaining: Duration::from_secs(10),
                ..RefreshPolicy::default()
            };
        })
        .await;
        let statuses = load(root(chain.sender.addr()), 300, 64).await;
        assert!(statuses.iter().all(|s| *s == StatusCode::OK));
        assert!(chain.metadata.call_count() > 1);
        assert_eq!(chain.metadata.max_in_flight.load(Ordering::SeqCst), 1);
    })
    .await;
}
