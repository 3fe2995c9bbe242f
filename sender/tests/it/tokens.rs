//! The token cache: one fetch at a time, renewal before `exp`, no cached
//! failures.

use std::time::Duration;

use http::StatusCode;
use sender::RefreshPolicy;

use crate::support::{
    bounded, client, hour, root, sender_config, start_sender, Emulator, FakeMetadata, FakeReceiver,
    MetadataMode, Tutorial,
};

/// No fetch at start: these tests study what requests do on a cold cache.
fn cold(config: &mut sender::Config) {
    config.fetch_at_start = false;
}

#[tokio::test]
async fn concurrent_requests_on_a_cold_cache_make_one_metadata_call() {
    bounded(async {
        let metadata = FakeMetadata::new(vec![hour()]);
        // A slow metadata server, so that the requests pile up behind the fetch.
        *metadata.latency.lock().expect("lock") = Duration::from_millis(300);
        // The requests start the fetch, not the sender's start.
        let chain = Tutorial::start_with(metadata, FakeReceiver::hello(), cold).await;
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
        // First token: an hour's token from the server's cache with 30 s
        // left, inside its 240 s renewal window.
        let metadata = FakeMetadata::new(vec![
            MetadataMode::Cached {
                life: Duration::from_secs(3600),
                left: Duration::from_secs(30),
            },
            hour(),
        ]);
        let chain = Tutorial::start_with(metadata, FakeReceiver::hello(), |config| {
            config.refresh = RefreshPolicy {
                min_remaining: Duration::from_secs(5),
                // The first renewal attempt comes this long after the fetch.
                min_interval: Duration::from_millis(500),
                ..RefreshPolicy::default()
            };
        })
        .await;
        assert_eq!(chain.get().await.0, StatusCode::OK);
        // Each request is served at once with the current token; the renewal
        // runs beside them. Ask until the new token is in use.
        loop {
            assert_eq!(chain.get().await.0, StatusCode::OK);
            if chain.metadata.minted().len() == 2 {
                let last = chain.receiver.authorizations().pop().flatten();
                if last == Some(format!("Bearer {}", chain.metadata.minted()[1])) {
                    break;
                }
            }
        }
        assert_eq!(chain.metadata.call_count(), 2);
        let minted = chain.metadata.minted();
        let auths = chain.receiver.authorizations();
        assert_eq!(auths[0], Some(format!("Bearer {}", minted[0])));
        // The token inside its renewal window kept serving requests (the
        // second came well within the 500 ms before a renewal may start):
        // none of them waited for the new one.
        let old = Some(format!("Bearer {}", minted[0]));
        let served_by_the_old = auths.iter().filter(|auth| **auth == old).count();
        assert!(served_by_the_old >= 2, "{served_by_the_old}");
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
        let chain = Tutorial::start_with(metadata, FakeReceiver::hello(), |config| {
            cold(config);
            config.refresh = RefreshPolicy {
                early: Duration::from_secs(60),
                min_remaining: Duration::from_secs(10),
                ..RefreshPolicy::default()
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
        let chain = Tutorial::start(FakeMetadata::new(vec![hour()]), FakeReceiver::hello()).await;
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
        // A refusal that retrying soon would not cure: not retried.
        let metadata = FakeMetadata::new(vec![MetadataMode::Fail(StatusCode::FORBIDDEN), hour()]);
        let chain = Tutorial::start_with(metadata, FakeReceiver::hello(), cold).await;
        let (status, body) = chain.get().await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            body,
            "could not get an ID token: the metadata server refused\n"
        );
        let (status, _) = chain.get().await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(chain.metadata.call_count(), 2);
    })
    .await;
}

#[tokio::test]
async fn a_transient_failure_is_retried_for_a_waiting_request() {
    bounded(async {
        // A 5xx, then a token: the request that waits gets it.
        let metadata = FakeMetadata::new(vec![
            MetadataMode::Fail(StatusCode::SERVICE_UNAVAILABLE),
            MetadataMode::Fail(StatusCode::INTERNAL_SERVER_ERROR),
            hour(),
        ]);
        let chain = Tutorial::start_with(metadata, FakeReceiver::hello(), cold).await;
        let (status, body) = chain.get().await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(chain.metadata.call_count(), 3);
    })
    .await;
}

#[tokio::test]
async fn a_retried_failure_stays_within_the_wait_budget() {
    bounded(async {
        let metadata = FakeMetadata::new(vec![MetadataMode::Fail(StatusCode::SERVICE_UNAVAILABLE)]);
        let chain = Tutorial::start_with(metadata, FakeReceiver::hello(), |config| {
            cold(config);
            config.refresh = RefreshPolicy {
                retry_budget: Duration::from_millis(400),
                ..RefreshPolicy::default()
            };
        })
        .await;
        let started = std::time::Instant::now();
        let (status, _) = chain.get().await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        // Retries after 100 ms and 200 ms; the next (400 ms) would end past
        // the budget.
        assert_eq!(chain.metadata.call_count(), 3);
    })
    .await;
}

/// The issue's own measure: tokens living 120 s (`--token-lifetime 120s`),
/// 500 requests spread over 5 s. Renewal starts min(240 s, 120 s / 2) = 60 s
/// before `exp`, so the first token serves them all.
#[tokio::test]
async fn the_emulator_with_120s_tokens_costs_at_most_2_identity_calls_for_500_requests() {
    bounded(async {
        let emulator = Emulator::start(Duration::from_secs(120)).await;
        let receiver = FakeReceiver::hello().start().await;
        let sender =
            start_sender(sender_config(receiver.addr(), Some(emulator.server.addr()))).await;
        let client = client();
        let url = root(sender.addr());
        // 100 requests a second, each in its own task.
        let mut pace = tokio::time::interval(Duration::from_millis(10));
        let mut requests = Vec::with_capacity(500);
        for _ in 0..500 {
            pace.tick().await;
            let request = client.get(&url).send();
            requests.push(tokio::spawn(async move {
                request.await.expect("response").status()
            }));
        }
        for request in requests {
            assert_eq!(request.await.expect("join"), StatusCode::OK);
        }
        let calls = emulator
            .identity_calls
            .load(std::sync::atomic::Ordering::SeqCst);
        assert!((1..=2).contains(&calls), "{calls} identity calls");
    })
    .await;
}

/// A token inside its renewal window and a source that keeps failing: the
/// token is served, and the source is asked at most once per interval,
/// less and less often.
#[tokio::test]
async fn a_failing_source_is_backed_off_while_the_valid_token_is_served() {
    bounded(async {
        let metadata = FakeMetadata::new(vec![
            MetadataMode::Cached {
                life: Duration::from_secs(3600),
                left: Duration::from_secs(100),
            },
            MetadataMode::Fail(StatusCode::SERVICE_UNAVAILABLE),
        ]);
        let chain = Tutorial::start_with(metadata, FakeReceiver::hello(), |config| {
            config.refresh = RefreshPolicy {
                min_interval: Duration::from_millis(100),
                max_backoff: Duration::from_millis(400),
                ..RefreshPolicy::default()
            };
        })
        .await;
        // Requests one after the other for a second: hundreds of them.
        let (client, url) = (client(), root(chain.sender.addr()));
        let started = std::time::Instant::now();
        let mut served = 0;
        while started.elapsed() < Duration::from_secs(1) {
            let response = client.get(&url).send().await.expect("response");
            assert_eq!(response.status(), StatusCode::OK);
            served += 1;
        }
        assert!(served > 20, "{served}");
        let minted = chain.metadata.minted();
        assert_eq!(minted.len(), 1);
        assert!(chain
            .receiver
            .authorizations()
            .iter()
            .all(|a| a.as_deref() == Some(&*format!("Bearer {}", minted[0]))));
        // The first fetch, then renewals after pauses of 100, 200, 400, 400
        // ms: at most 5 calls in the second (10 with no backoff, one per
        // request with no pause at all).
        let calls = chain.metadata.call_count();
        assert!(
            (2..=6).contains(&calls),
            "{calls} metadata calls for {served} requests"
        );
    })
    .await;
}
