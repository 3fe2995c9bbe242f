//! The first token at start, and `GET /ready`: answered by the sender
//! itself, 200 once it holds a token (or needs none), 503 with a one-line
//! reason before, reached without any request to `/`.

use std::time::Duration;

use http::{header, StatusCode};
use sender::RefreshPolicy;

use crate::support::{
    bounded, client, hour, ready, root, sender_config, start_sender, FakeMetadata, FakeReceiver,
    MetadataMode, Tutorial,
};

/// The first identity call comes from the sender's start, not from a
/// request: the first caller finds the token there.
#[tokio::test]
async fn the_first_token_is_fetched_at_start_before_any_request() {
    bounded(async {
        let chain = Tutorial::start(FakeMetadata::new(vec![hour()]), FakeReceiver::hello()).await;
        tokio::time::timeout(
            Duration::from_secs(5),
            chain.metadata.until(|m| m.minted().len() == 1),
        )
        .await
        .expect("an identity call with no request made");
        assert_eq!(chain.receiver.request_count(), 0);
        assert_eq!(chain.get().await.0, StatusCode::OK);
        assert_eq!(
            chain.metadata.call_count(),
            1,
            "the first caller paid nothing"
        );
        let minted = chain.metadata.minted();
        assert_eq!(
            chain.receiver.authorizations(),
            vec![Some(format!("Bearer {}", minted[0]))]
        );
    })
    .await;
}

/// A slow first fetch does not hold up the start: the sender listens and
/// answers `/ready` while the fetch is in flight.
#[tokio::test]
async fn the_sender_answers_while_its_first_fetch_is_in_flight() {
    bounded(async {
        let metadata = FakeMetadata::new(vec![hour()]);
        *metadata.latency.lock().expect("lock") = Duration::from_secs(20);
        let chain = Tutorial::start_with(metadata, FakeReceiver::hello(), |config| {
            config.metadata_timeout = Duration::from_secs(30);
        })
        .await;
        chain.metadata.until(|m| m.call_count() == 1).await;
        assert_eq!(
            chain.ready().await,
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: no ID token yet\n".to_owned()
            )
        );
    })
    .await;
}

/// The metadata server fails, then recovers: `/ready` is 503 with the
/// failure's fixed phrase, the sender keeps trying by itself, and `/ready`
/// turns 200 with no request to `/` in between.
#[tokio::test]
async fn ready_follows_the_first_token_without_any_request() {
    bounded(async {
        let metadata = FakeMetadata::new(vec![MetadataMode::Refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            "upstream-secret-text",
        )]);
        let chain = Tutorial::start_with(metadata, FakeReceiver::hello(), |config| {
            config.refresh = RefreshPolicy {
                min_interval: Duration::from_millis(20),
                max_backoff: Duration::from_millis(80),
                retry_budget: Duration::ZERO,
                ..RefreshPolicy::default()
            };
        })
        .await;
        // A second call means the first failed and the sender tried again
        // on its own.
        chain.metadata.until(|m| m.call_count() >= 2).await;
        let (status, body) = chain.ready().await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            body,
            "not ready: could not get an ID token: the metadata server refused\n"
        );
        // Still failing, still trying, still not ready.
        chain.metadata.until(|m| m.call_count() >= 4).await;
        assert_eq!(chain.ready().await.0, StatusCode::SERVICE_UNAVAILABLE);

        *chain.metadata.modes.lock().expect("lock") = vec![hour()];
        chain.metadata.until(|m| m.minted().len() == 1).await;
        // The token lands just after the fake answered.
        while chain.ready().await.0 != StatusCode::OK {
            tokio::task::yield_now().await;
        }
        assert_eq!(chain.ready().await, (StatusCode::OK, "ready\n".to_owned()));
        assert_eq!(chain.receiver.request_count(), 0, "/ready is never relayed");
        // Once it holds a token, it stops asking.
        let calls = chain.metadata.call_count();
        assert_eq!(chain.get().await.0, StatusCode::OK);
        assert_eq!(chain.metadata.call_count(), calls);
    })
    .await;
}

/// The backoff of the renewal rules: pauses double from `min_interval` up
/// to `max_backoff`, so a broken source is not hammered.
#[tokio::test]
async fn a_failing_first_fetch_is_retried_with_backoff() {
    bounded(async {
        let metadata = FakeMetadata::new(vec![MetadataMode::Fail(StatusCode::SERVICE_UNAVAILABLE)]);
        let chain = Tutorial::start_with(metadata, FakeReceiver::hello(), |config| {
            config.refresh = RefreshPolicy {
                min_interval: Duration::from_millis(50),
                max_backoff: Duration::from_millis(200),
                retry_budget: Duration::ZERO,
                ..RefreshPolicy::default()
            };
        })
        .await;
        let started = std::time::Instant::now();
        chain.metadata.until(|m| m.call_count() >= 5).await;
        // Pauses of 100, 200, 200, 200 ms after the first four failures:
        // at least 700 ms for five calls (no backoff: a few ms).
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_millis(650), "{elapsed:?}");
        assert_eq!(chain.receiver.request_count(), 0);
    })
    .await;
}

#[tokio::test]
async fn without_a_token_source_it_is_ready_at_once() {
    bounded(async {
        let receiver = FakeReceiver::hello();
        let receiver_server = receiver.start().await;
        let sender = start_sender(sender_config(receiver_server.addr(), None)).await;
        assert_eq!(
            ready(sender.addr()).await,
            (StatusCode::OK, "ready\n".to_owned())
        );
        assert_eq!(receiver.request_count(), 0);
    })
    .await;
}

/// `/ready` needs no credentials, ignores the caller's, and takes GET and
/// HEAD only.
#[tokio::test]
async fn ready_is_the_senders_own_answer() {
    bounded(async {
        let chain = Tutorial::start(FakeMetadata::new(vec![hour()]), FakeReceiver::hello()).await;
        chain.metadata.until(|m| m.minted().len() == 1).await;
        let url = format!("{}ready", root(chain.sender.addr()));
        loop {
            let response = client()
                .get(&url)
                .header(header::AUTHORIZATION, "Bearer callers-own")
                .send()
                .await
                .expect("response");
            if response.status() == StatusCode::OK {
                break;
            }
            tokio::task::yield_now().await;
        }
        let head = client().head(&url).send().await.expect("head");
        assert_eq!(head.status(), StatusCode::OK);
        let post = client().post(&url).send().await.expect("post");
        assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(post.headers()[header::ALLOW], "GET, HEAD");
        assert_eq!(chain.receiver.request_count(), 0);
    })
    .await;
}
