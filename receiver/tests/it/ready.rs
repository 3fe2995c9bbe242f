//! `GET /ready`, answered by the receiver itself without a token: at once
//! when it verifies nothing, once it holds signing keys when it does.

use http::StatusCode;

use crate::{
    support::{
        auth_config, bounded, client, iap_auth_config, receiver, url, FakeJwks, JwksMode, Verifying,
    },
    tokens::{self, ec_keys, jwks_of, keys},
};

#[tokio::test]
async fn ready_at_once_without_verification() {
    bounded(async {
        let receiver = receiver().await;
        let response = client()
            .get(url(receiver.addr(), "/ready"))
            .send()
            .await
            .expect("response");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.text().await.expect("body"), "ready\n");
    })
    .await;
}

#[tokio::test]
async fn not_ready_until_the_keys_are_in() {
    bounded(async {
        let k = keys();
        let fake = FakeJwks::new(JwksMode::Fail(StatusCode::SERVICE_UNAVAILABLE));
        let jwks = fake.start().await;
        let receiver = Verifying::start(auth_config(jwks.addr())).await;
        // The first fetch has failed: no keys, and it says so in one line.
        fake.wait_for_fetches(1).await;
        let response = receiver.get_path("/ready", &[]).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = response.text().await.expect("body");
        assert_eq!(
            body,
            format!(
                "not ready: no signing keys yet from http://{}/certs\n",
                jwks.addr()
            )
        );
        // Not the probe's business: a token is neither needed nor looked at.
        let response = receiver
            .get_path("/ready", &[("authorization", "Bearer not-a-token")])
            .await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);

        fake.set(JwksMode::Serve(tokens::jwks(&[&k.one]), 3600));
        receiver.keys_loaded(1).await;
        let response = receiver.get_path("/ready", &[]).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.text().await.expect("body"), "ready\n");
        // `/` still wants a token.
        let response = receiver.get(&[]).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    })
    .await;
}

#[tokio::test]
async fn with_iap_only_ready_once_iap_keys_are_in() {
    bounded(async {
        let fake = FakeJwks::new(JwksMode::Fail(StatusCode::SERVICE_UNAVAILABLE));
        let jwks = fake.start().await;
        let receiver = Verifying::start(iap_auth_config(jwks.addr())).await;
        fake.wait_for_fetches(1).await;
        let response = receiver.get_path("/ready", &[]).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        fake.set(JwksMode::Serve(jwks_of(&[ec_keys().one.jwk()]), 3600));
        let iap = receiver.iap_keys.as_ref().expect("iap keys");
        iap.subscribe()
            .wait_for(|loaded| *loaded >= 1)
            .await
            .expect("key cache alive");
        let response = receiver.get_path("/ready", &[]).await;
        assert_eq!(response.status(), StatusCode::OK);
    })
    .await;
}
