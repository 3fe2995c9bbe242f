//! `IdTokenSource`, the token sources and cache as a library.

use std::time::Duration;

use sender::IdTokenSource;

use crate::support::{bounded, hour, FakeMetadata};

#[tokio::test]
async fn one_cache_per_audience_each_fetched_once_for_many_callers() {
    bounded(async {
        let metadata = FakeMetadata::new(vec![hour()]);
        // Slow enough for the callers to pile up behind each fetch.
        *metadata.latency.lock().expect("lock") = Duration::from_millis(200);
        let server = metadata.start().await;
        let host = server.addr().to_string();
        let env = cloud_run::testing::env(&[("GCE_METADATA_HOST", &host)]);
        let tokens = IdTokenSource::from_env_with(&env).await.expect("source");
        let callers: Vec<_> = (0..100)
            .map(|i| {
                let tokens = tokens.clone();
                let audience = if i % 2 == 0 {
                    "https://a.example"
                } else {
                    "https://b.example"
                };
                tokio::spawn(async move { (audience, tokens.token(audience).await) })
            })
            .collect();
        for caller in callers {
            let (audience, token) = caller.await.expect("join");
            let token = token.expect("token");
            let minted = metadata.minted();
            let expected = metadata
                .calls
                .lock()
                .expect("lock")
                .iter()
                .position(|call| call.audience.as_deref() == Some(audience))
                .map(|i| format!("Bearer {}", minted[i]));
            assert_eq!(token.bearer().to_str().ok(), expected.as_deref());
        }
        assert_eq!(metadata.call_count(), 2, "one fetch per audience");
        assert_eq!(
            metadata
                .max_in_flight
                .load(std::sync::atomic::Ordering::SeqCst),
            2,
            "the two audiences' fetches ran side by side"
        );
        // Cached: no more calls.
        tokens.token("https://a.example").await.expect("cached");
        assert_eq!(metadata.call_count(), 2);
    })
    .await;
}

#[tokio::test]
async fn a_failure_is_a_fixed_phrase_and_not_cached() {
    bounded(async {
        let metadata = FakeMetadata::new(vec![
            crate::support::MetadataMode::Refuse(http::StatusCode::FORBIDDEN, "upstream-secret"),
            hour(),
        ]);
        let server = metadata.start().await;
        let host = server.addr().to_string();
        let env = cloud_run::testing::env(&[("GCE_METADATA_HOST", &host)]);
        let tokens = IdTokenSource::from_env_with(&env).await.expect("source");
        let err = tokens
            .token("https://a.example")
            .await
            .expect_err("refused");
        assert_eq!(
            err.to_string(),
            "could not get an ID token: the metadata server refused"
        );
        tokens
            .token("https://a.example")
            .await
            .expect("asked again");
        assert_eq!(metadata.call_count(), 2);
    })
    .await;
}

#[tokio::test]
async fn no_source_is_an_error_naming_the_variable() {
    bounded(async {
        let env = cloud_run::testing::env(&[("ID_TOKEN_SOURCE", "none")]);
        let err = IdTokenSource::from_env_with(&env).await.expect_err("none");
        assert!(err.to_string().starts_with("ID_TOKEN_SOURCE: "), "{err}");
        let env = cloud_run::testing::env(&[("GCE_METADATA_HOST", "http://x/")]);
        let err = IdTokenSource::from_env_with(&env)
            .await
            .expect_err("bad host");
        assert!(err.to_string().starts_with("GCE_METADATA_HOST: "), "{err}");
    })
    .await;
}
