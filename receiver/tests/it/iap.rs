//! IAP's signed headers: `X-Goog-IAP-JWT-Assertion`, ES256 with IAP's EC
//! keys, IAP's issuer, the same claim checks and allowlist as ID tokens.
//! Each mechanism fixes its algorithm: an RS256 token is no IAP assertion,
//! and an ES256 one is no ID token.

use http::{header, StatusCode};
use serde_json::json;

use crate::{
    support::{
        auth_config, bounded, error_description, iap_auth_config, now, FakeJwks, JwksMode,
        Verifying,
    },
    tokens::{
        self, claims, ec_keys, iap_claims, iap_signed, jwks_of, keys, signed, with, Signing,
        IAP_AUDIENCE,
    },
};

const IAP: &str = "x-goog-iap-jwt-assertion";

/// A receiver verifying IAP assertions only, holding IAP's keys.
async fn iap_receiver() -> (Verifying, cloud_run::testing::Spawned) {
    let jwks = FakeJwks::new(JwksMode::Serve(jwks_of(&[ec_keys().one.jwk()]), 3600))
        .start()
        .await;
    (Verifying::ready(iap_auth_config(jwks.addr())).await, jwks)
}

/// A receiver accepting both, each with its own key endpoint.
async fn both_receiver() -> (Verifying, [cloud_run::testing::Spawned; 2]) {
    let id_jwks = FakeJwks::serving(&[&keys().one], 3600).start().await;
    let iap_jwks = FakeJwks::new(JwksMode::Serve(jwks_of(&[ec_keys().one.jwk()]), 3600))
        .start()
        .await;
    let mut auth = auth_config(id_jwks.addr());
    auth.iap = iap_auth_config(iap_jwks.addr()).iap;
    (Verifying::ready(auth).await, [id_jwks, iap_jwks])
}

/// The body of a refusal, which names its reason.
async fn refusal(response: reqwest::Response, status: StatusCode) -> String {
    assert_eq!(response.status(), status);
    response.text().await.expect("body")
}

#[tokio::test]
async fn a_valid_assertion_from_an_allowed_caller_gets_in() {
    bounded(async {
        let (receiver, _jwks) = iap_receiver().await;
        let assertion = iap_signed(&ec_keys().one, &iap_claims(now()));
        let response = receiver.get(&[(IAP, &assertion)]).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.text().await.expect("body"), receiver::HELLO);
    })
    .await;
}

#[tokio::test]
async fn assertions_failing_a_check_are_refused_with_the_reason() {
    bounded(async {
        let (receiver, _jwks) = iap_receiver().await;
        let ec = ec_keys();
        let base = iap_claims(now());
        let cases = [
            (
                iap_signed(
                    &ec.one,
                    &with(&base, json!({ "aud": "https://r.a.run.app" })),
                ),
                "wrong audience",
            ),
            (
                iap_signed(
                    &ec.one,
                    &with(&base, json!({ "iss": "https://accounts.google.com" })),
                ),
                "wrong issuer",
            ),
            (
                iap_signed(&ec.one, &with(&base, json!({ "exp": now() - 3600 }))),
                "token expired",
            ),
            (
                iap_signed(&ec.one, &with(&base, json!({ "iat": null }))),
                "missing iat claim",
            ),
            (iap_signed(&ec.rogue, &base), "unknown signing key (kid)"),
            (
                // The published kid, signed by another key.
                tokens::token(
                    &json!({ "alg": "ES256", "kid": ec.one.kid, "typ": "JWT" }),
                    &base,
                    Signing::Es256(&ec.rogue),
                ),
                "signature does not match the signing key",
            ),
            (
                // An RS256 token is no IAP assertion, whatever it claims.
                signed(&keys().one, &base),
                "algorithm not allowed: ES256 only",
            ),
            (
                // Nor one naming the EC key but signed with HMAC.
                tokens::token(
                    &json!({ "alg": "HS256", "kid": ec.one.kid }),
                    &base,
                    Signing::Hs256(b"secret"),
                ),
                "algorithm not allowed: ES256 only",
            ),
        ];
        for (assertion, reason) in cases {
            let response = receiver.get(&[(IAP, &assertion)]).await;
            assert!(
                response.headers().get(header::WWW_AUTHENTICATE).is_none(),
                "{reason}: no bearer challenge for IAP"
            );
            let body = refusal(response, StatusCode::UNAUTHORIZED).await;
            assert_eq!(body, format!("invalid IAP assertion: {reason}\n"));
        }
    })
    .await;
}

#[tokio::test]
async fn without_an_assertion_the_request_did_not_come_through_iap() {
    bounded(async {
        let (receiver, _jwks) = iap_receiver().await;
        // A valid ID token does not stand in for it: ID tokens are off.
        let token = signed(&keys().one, &claims(now()));
        for headers in [
            &[][..],
            &[("authorization", &*format!("Bearer {token}"))][..],
        ] {
            let response = receiver.get(headers).await;
            assert!(response.headers().get(header::WWW_AUTHENTICATE).is_none());
            let body = refusal(response, StatusCode::UNAUTHORIZED).await;
            assert_eq!(
                body,
                "unauthorized: an IAP assertion (X-Goog-IAP-JWT-Assertion) is required\n"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn the_allowlist_applies_to_iap_callers_on_their_email() {
    bounded(async {
        let (receiver, _jwks) = iap_receiver().await;
        let stranger = iap_signed(
            &ec_keys().one,
            &with(&iap_claims(now()), json!({ "email": tokens::STRANGER })),
        );
        let body = refusal(
            receiver.get(&[(IAP, &stranger)]).await,
            StatusCode::FORBIDDEN,
        )
        .await;
        assert_eq!(body, "forbidden: caller is not an allowed invoker\n");
        let no_email = iap_signed(
            &ec_keys().one,
            &with(&iap_claims(now()), json!({ "email": null })),
        );
        let body = refusal(
            receiver.get(&[(IAP, &no_email)]).await,
            StatusCode::FORBIDDEN,
        )
        .await;
        assert_eq!(body, "forbidden: token has no email claim\n");

        // `*` lets in anyone IAP let through.
        let jwks = FakeJwks::new(JwksMode::Serve(jwks_of(&[ec_keys().one.jwk()]), 3600))
            .start()
            .await;
        let mut auth = iap_auth_config(jwks.addr());
        auth.invokers = receiver::Invokers::Any;
        let open = Verifying::ready(auth).await;
        assert_eq!(open.get(&[(IAP, &stranger)]).await.status(), StatusCode::OK);
    })
    .await;
}

#[tokio::test]
async fn an_es256_token_is_no_id_token() {
    bounded(async {
        // Even from a key endpoint that also publishes the EC key.
        let jwks = FakeJwks::new(JwksMode::Serve(
            jwks_of(&[keys().one.jwk(), ec_keys().one.jwk()]),
            3600,
        ))
        .start()
        .await;
        let receiver = Verifying::ready(auth_config(jwks.addr())).await;
        let es256 = iap_signed(
            &ec_keys().one,
            &with(&claims(now()), json!({ "aud": tokens::AUDIENCE })),
        );
        let response = receiver.get_with(&es256).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            error_description(&response),
            "algorithm not allowed: RS256 only"
        );
        // An RS256 header naming the EC key: no RSA key has that kid.
        let confused = tokens::token(
            &tokens::header(&ec_keys().one.kid),
            &claims(now()),
            Signing::Rs256(&keys().rogue),
        );
        let response = receiver.get_with(&confused).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(error_description(&response), "unknown signing key (kid)");
    })
    .await;
}

#[tokio::test]
async fn with_both_either_valid_credential_admits() {
    bounded(async {
        let (receiver, _jwks) = both_receiver().await;
        let token = signed(&keys().one, &claims(now()));
        let bearer = format!("Bearer {token}");
        let assertion = iap_signed(&ec_keys().one, &iap_claims(now()));
        let bad_bearer = format!(
            "Bearer {}",
            signed(
                &keys().one,
                &with(&claims(now()), json!({ "exp": now() - 3600 }))
            )
        );
        let bad_assertion = iap_signed(
            &ec_keys().one,
            &with(&iap_claims(now()), json!({ "aud": "/projects/1/x" })),
        );
        for headers in [
            vec![("authorization", bearer.as_str())],
            vec![(IAP, assertion.as_str())],
            vec![
                ("authorization", bad_bearer.as_str()),
                (IAP, assertion.as_str()),
            ],
            vec![
                ("authorization", bearer.as_str()),
                (IAP, bad_assertion.as_str()),
            ],
        ] {
            let response = receiver.get(&headers).await;
            assert_eq!(response.status(), StatusCode::OK, "{headers:?}");
        }
        // Neither: the bearer challenge, since an ID token would do.
        let response = receiver.get(&[]).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            response.headers()[header::WWW_AUTHENTICATE],
            "Bearer realm=\"receiver\""
        );
        // Both refused: the stronger reason, a caller not allowed.
        let stranger = iap_signed(
            &ec_keys().one,
            &with(&iap_claims(now()), json!({ "email": tokens::STRANGER })),
        );
        let response = receiver
            .get(&[("authorization", &bad_bearer), (IAP, &stranger)])
            .await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        // The audience of one mechanism is no audience of the other.
        let crossed = signed(
            &keys().one,
            &with(&claims(now()), json!({ "aud": IAP_AUDIENCE })),
        );
        let response = receiver.get_with(&crossed).await;
        assert_eq!(error_description(&response), "wrong audience");
    })
    .await;
}
