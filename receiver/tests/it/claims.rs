//! The time claims at the exact edges of the 60 s clock skew, on a stopped
//! clock, through the verifier itself.

use std::time::Duration;

use receiver::{AuthError, Verifier};
use serde_json::json;

use crate::{
    support::{auth_config, bounded, FakeJwks, ManualClock},
    tokens::{claims, keys, signed, with},
};

async fn verifier(clock: &ManualClock) -> (Verifier, cloud_run::testing::Spawned) {
    let jwks = FakeJwks::serving(&[&keys().one], 3600).start().await;
    let mut auth = auth_config(jwks.addr());
    auth.clock = clock.clock();
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    (Verifier::new(auth, http), jwks)
}

#[tokio::test]
async fn exp_nbf_and_iat_allow_exactly_sixty_seconds_of_skew() {
    bounded(async {
        let clock = ManualClock::new();
        let (verifier, _jwks) = verifier(&clock).await;
        let now = clock.unix_seconds();
        let base = claims(now);
        let verdict = |changes| {
            let token = signed(&keys().one, &with(&base, changes));
            let verifier = &verifier;
            async move { verifier.verify(&token).await.map(|_| ()) }
        };
        let ok = Ok(());
        assert_eq!(verdict(json!({ "exp": now - 60 })).await, ok);
        assert_eq!(
            verdict(json!({ "exp": now - 61 })).await,
            Err(AuthError::Invalid("token expired"))
        );
        assert_eq!(verdict(json!({ "nbf": now + 60 })).await, ok);
        assert_eq!(
            verdict(json!({ "nbf": now + 61 })).await,
            Err(AuthError::Invalid("token not valid yet (nbf)"))
        );
        assert_eq!(verdict(json!({ "iat": now + 60 })).await, ok);
        assert_eq!(
            verdict(json!({ "iat": now + 61 })).await,
            Err(AuthError::Invalid("token issued in the future (iat)"))
        );
        assert_eq!(
            verdict(json!({ "exp": now as f64 - 60.5 })).await,
            Err(AuthError::Invalid("token expired"))
        );
    })
    .await;
}

#[tokio::test]
async fn a_valid_token_expires_as_the_clock_moves() {
    bounded(async {
        let clock = ManualClock::new();
        let (verifier, _jwks) = verifier(&clock).await;
        let token = signed(&keys().one, &claims(clock.unix_seconds()));
        let caller = verifier.verify(&token).await.expect("valid now");
        assert_eq!(
            caller.email.as_deref(),
            Some(crate::tokens::ALLOWED),
            "{caller:?}"
        );
        assert!(caller.email_verified);
        // Minted to live 3590 s: still good within the skew, refused after.
        clock.advance(Duration::from_secs(3590 + 60));
        assert!(verifier.verify(&token).await.is_ok());
        clock.advance(Duration::from_secs(1));
        assert_eq!(
            verifier.verify(&token).await.map(|_| ()),
            Err(AuthError::Invalid("token expired"))
        );
    })
    .await;
}
