//! The token cache: one fetch at a time, renewal before `exp`, no cached
//! failures.

use std::time::Duration;

use http::StatusCode;
use sender::token::RefreshPolicy;

use crate::support::{
    bounded, client, hour, root, Chain, FakeMetadata, FakeReceiver, MetadataMode,
};

#[tokio::test]
async fn concurrent_requests_on_a_cold_cache_make_one_metadata_call() {
    bounded(async {
        let metadata = FakeMetadata::new(vec![hour()]);
        // A slow metadata server, so that the requests pile up behind the fetch.
        *metadata.latency.lock().expect("lock") = Duration::from_millis(300);
        let chain = Chain::start(metadata, FakeReceiver::hello()).await;
        let client = client();
        let url = root(chain.sender.addr());
        let requests: Vec<_> = (0..300)
            .map(|_| {
                let request = client.get(&url).send();
                tokio::spawn(async move {
                    let response = request.await.expect("response");
                    response.status()
                })
            })
            .collect();
        for request in requests {
            assert_eq!(request.await.expect("join"), StatusCode::OK);
        }
        assert_eq!(chain.metadata.call_count(), 1);
        assert_eq!(
            chain
                .metadata
                .max_in_flight
                .load(std::sync::atomic::Ordering::SeqCst),
            1
        );
        let minted = chain.metadata.minted();
        let auths = chain.receiver.authorizations();
        assert_eq!(auths.len(), 300);
        assert!(auths
            .iter()
            .all(|a| a.as_deref() == Some(&*format!("Bearer {}", minted[0]))));
    })
    .await;
}

#[tokio::test]
async fn a_token_is_renewed_before_its_own_exp_without_failing_requests() {
    bounded(async {
        // First token: 30 s left, inside the 60 s renewal window.
        let metadata = FakeMetadata::new(vec![MetadataMode::Mint(Duration::from_secs(30)), hour()]);
        let chain = Chain::start_with(metadata, FakeReceiver::hello(), |config| {
            config.refresh = RefreshPolicy {
                early: Duration::from_secs(60),
                min_remaining: Duration::from_secs(5),
            };
        })
        .await;
        assert_eq!(chain.get().await.0, StatusCode::OK);
        // Each request is served at once with the current token; the renewal
        // runs beside them. Ask until the new token is in use.
        let mut served = 1;
        loop {
            assert_eq!(chain.get().await.0, StatusCode::OK);
            served += 1;
            if chain.metadata.minted().len() == 2 {
                let last = chain.receiver.authorizations().pop().flatten();
                if last == Some(format!("Bearer {}", chain.metadata.minted()[1])) {
                    break;
                }
            }
        }
        assert!(served >= 2);
        assert_eq!(chain.metadata.call_count(), 2);
        let minted = chain.metadata.minted();
        let auths = chain.receiver.authorizations();
        assert_eq!(auths[0], Some(format!("Bearer {}", minted[0])));
        // Once renewed, the long-lived token stays.
        assert_eq!(chain.get().await.0, StatusCode::OK);
        assert_eq!(chain.metadata.call_count(), 2);
    })
    .await;
}

#[tokio::test]
async fn a_nearly_expired_token_is_not_used() {
    bounded(async {
        // Tokens with 3 s left are below the 10 s minimum: never reused.
        let metadata = FakeMetadata::new(vec![MetadataMode::Mint(Duration::from_secs(3))]);
        let chain = Chain::start_with(metadata, FakeReceiver::hello(), |config| {
            config.refresh = RefreshPolicy {
                early: Duration::from_secs(60),
                min_remaining: Duration::from_secs(10),
            };
        })
        .await;
        assert_eq!(chain.get().await.0, StatusCode::OK);
        assert_eq!(chain.get().await.0, StatusCode::OK);
        let minted = chain.metadata.minted();
        assert_eq!(minted.len(), 2);
        assert_eq!(
            chain.receiver.authorizations(),
            vec![
                Some(format!("Bearer {}", minted[0])),
                Some(format!("Bearer {}", minted[1]))
            ]
        );
    })
    .await;
}

#[tokio::test]
async fn a_long_lived_token_is_fetched_once() {
    bounded(async {
        let chain = Chain::start(FakeMetadata::new(vec![hour()]), FakeReceiver::hello()).await;
        for _ in 0..50 {
            assert_eq!(chain.get().await.0, StatusCode::OK);
        }
        assert_eq!(chain.metadata.call_count(), 1);
    })
    .await;
}

#[tokio::test]
async fn a_failed_fetch_is_not_cached() {
    bounded(async {
        let metadata = FakeMetadata::new(vec![
            MetadataMode::Fail(StatusCode::INTERNAL_SERVER_ERROR),
            hour(),
        ]);
        let chain = Chain::start(metadata, FakeReceiver::hello()).await;
        let (status, body) = chain.get().await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("metadata server answered 500"), "{body}");
        let (status, _) = chain.get().await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(chain.metadata.call_count(), 2);
    })
    .await;
}
