//! In-app verification over HTTP: every token of the token set gets its
//! verdict; where the token is read from; what a refusal looks like.

use std::time::{Duration, Instant};

use http::{header, StatusCode, Version};
use id_token::STRIPPED_REASON;
use receiver::HELLO;

use crate::{
    support::{auth_config, bounded, client, error_description, now, url, FakeJwks, Verifying},
    tokens::{self, keys, signed, token_set, Verdict, STRANGER},
};

async fn ready() -> (Verifying, cloud_run::testing::Spawned) {
    let k = keys();
    let jwks = FakeJwks::serving(&[&k.one, &k.two], 3600).start().await;
    (Verifying::ready(auth_config(jwks.addr())).await, jwks)
}

#[tokio::test]
async fn every_token_of_the_set_gets_its_verdict() {
    bounded(async {
        let (receiver, _jwks) = ready().await;
        let cases = token_set(keys(), now());
        assert!(cases.len() >= 40, "{}", cases.len());
        for case in cases {
            let response = receiver.get_with(&case.token).await;
            let status = response.status();
            assert_eq!(status.as_u16(), case.verdict.status(), "{}", case.name);
            match case.verdict {
                Verdict::Accept => {
                    assert!(response.headers().get(header::WWW_AUTHENTICATE).is_none());
                    assert_eq!(response.text().await.expect("body"), HELLO, "{}", case.name);
                }
                Verdict::Reject => {
                    let description = error_description(&response);
                    assert!(
                        description.contains(case.reason),
                        "{}: {description:?} lacks {:?}",
                        case.name,
                        case.reason
                    );
                    let body = response.text().await.expect("body");
                    assert!(body.contains(case.reason), "{}: {body}", case.name);
                    assert!(!body.contains(&case.token), "{}: token echoed", case.name);
                }
                Verdict::Forbid => {
                    assert!(response.headers().get(header::WWW_AUTHENTICATE).is_none());
                    let body = response.text().await.expect("body");
                    assert!(body.contains(case.reason), "{}: {body}", case.name);
                }
            }
        }
    })
    .await;
}

#[tokio::test]
async fn with_any_invoker_any_valid_caller_gets_in() {
    bounded(async {
        let k = keys();
        let jwks = FakeJwks::serving(&[&k.one], 3600).start().await;
        let mut auth = auth_config(jwks.addr());
        auth.invokers = receiver::Invokers::Any;
        let receiver = Verifying::ready(auth).await;
        let base = tokens::claims(now());
        for changes in [
            serde_json::json!({ "email": STRANGER }),
            serde_json::json!({ "email_verified": false }),
            serde_json::json!({ "email": null, "email_verified": null }),
        ] {
            let token = signed(&k.one, &tokens::with(&base, changes.clone()));
            let response = receiver.get_with(&token).await;
            assert_eq!(response.status(), StatusCode::OK, "{changes}");
        }
    })
    .await;
}

#[tokio::test]
async fn a_missing_token_or_another_scheme_gets_a_bare_challenge() {
    bounded(async {
        let (receiver, _jwks) = ready().await;
        let valid = signed(&keys().one, &tokens::claims(now()));
        let basic = [("authorization", "Basic dXNlcjpwYXNz")];
        let basic_then_bearer = [
            ("authorization", "Basic dXNlcjpwYXNz"),
            ("x-serverless-authorization", &format!("Bearer {valid}")),
        ];
        for headers in [&[][..], &basic[..], &basic_then_bearer[..]] {
            let response = receiver.get(headers).await;
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{headers:?}");
            assert_eq!(
                response.headers()[header::WWW_AUTHENTICATE],
                "Bearer realm=\"receiver\"",
                "{headers:?}"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn the_token_is_read_from_authorization_then_x_serverless_authorization() {
    bounded(async {
        let (receiver, _jwks) = ready().await;
        let valid = signed(&keys().one, &tokens::claims(now()));
        let (message, _) = valid.rsplit_once('.').expect("jwt");
        let stripped = format!("{message}.SIGNATURE_REMOVED_BY_GOOGLE");
        for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
            let value = format!("{scheme} {valid}");
            let response = receiver.get(&[("authorization", &value)]).await;
            assert_eq!(response.status(), StatusCode::OK, "{scheme}");
        }
        let response = receiver
            .get(&[("x-serverless-authorization", &format!("Bearer {valid}"))])
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        // Both sent: Cloud Run checked (and stripped) X-Serverless-
        // Authorization; Authorization holds an intact token for the app.
        let response = receiver
            .get(&[
                ("authorization", &format!("Bearer {valid}")),
                ("x-serverless-authorization", &format!("Bearer {stripped}")),
            ])
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        // Authorization wins even when it is the bad one.
        let response = receiver
            .get(&[
                ("authorization", &format!("Bearer {stripped}")),
                ("x-serverless-authorization", &format!("Bearer {valid}")),
            ])
            .await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    })
    .await;
}

#[tokio::test]
async fn a_stripped_signature_is_explained() {
    bounded(async {
        let (receiver, _jwks) = ready().await;
        let valid = signed(&keys().one, &tokens::claims(now()));
        let (message, _) = valid.rsplit_once('.').expect("jwt");
        let response = receiver
            .get_with(&format!("{message}.SIGNATURE_REMOVED_BY_GOOGLE"))
            .await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(error_description(&response), STRIPPED_REASON);
        let body = response.text().await.expect("body");
        for needed in [
            "Cloud Run already checked this token and removed its signature",
            "deploy the receiver publicly",
            "X-Serverless-Authorization for Cloud Run and in Authorization for the app",
        ] {
            assert!(body.contains(needed), "{body}");
        }
    })
    .await;
}

#[tokio::test]
async fn oversized_tokens_are_refused_quickly() {
    bounded(async {
        let (receiver, _jwks) = ready().await;
        let valid = signed(&keys().one, &tokens::claims(now()));
        // Past the server's header limit: 431 before the handler runs.
        let huge = format!("{valid}{}", "A".repeat(100 * 1024));
        let started = Instant::now();
        let response = receiver.get_with(&huge).await;
        assert_eq!(
            response.status(),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
        // Within it but past the token limit: 401 without decoding.
        let big = format!(
            "{}.{}.{}",
            "A".repeat(10 * 1024),
            "B".repeat(10 * 1024),
            "C"
        );
        let response = receiver.get_with(&big).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(error_description(&response), "token too large");
        assert!(started.elapsed() < Duration::from_secs(2));
    })
    .await;
}

#[tokio::test]
async fn refusals_never_echo_the_token() {
    bounded(async {
        let (receiver, _jwks) = ready().await;
        let base = tokens::claims(now());
        let expired = signed(
            &keys().one,
            &tokens::with(&base, serde_json::json!({ "exp": now() - 3600 })),
        );
        let forbidden = signed(
            &keys().one,
            &tokens::with(&base, serde_json::json!({ "email": STRANGER })),
        );
        for (token, refused) in [
            (expired, StatusCode::UNAUTHORIZED),
            (forbidden, StatusCode::FORBIDDEN),
            (
                "garbage.garbage.garbage".to_owned(),
                StatusCode::UNAUTHORIZED,
            ),
        ] {
            let response = receiver.get_with(&token).await;
            // A refusal, or the body would be the hello and prove nothing.
            assert_eq!(response.status(), refused);
            let challenge = format!("{:?}", response.headers());
            let body = response.text().await.expect("body");
            for part in token.split('.') {
                assert!(!body.contains(part), "{body}");
                assert!(!challenge.contains(part), "{challenge}");
            }
        }
    })
    .await;
}

#[tokio::test]
async fn verification_applies_to_head_and_h2c() {
    bounded(async {
        let (receiver, _jwks) = ready().await;
        let valid = signed(&keys().one, &tokens::claims(now()));
        let addr = receiver.server.addr();
        let response = client().head(url(addr, "/")).send().await.expect("head");
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let h2 = reqwest::Client::builder()
            .no_proxy()
            .http2_prior_knowledge()
            .build()
            .expect("client");
        let response = h2
            .get(url(addr, "/"))
            .bearer_auth(&valid)
            .send()
            .await
            .expect("h2c");
        assert_eq!(response.version(), Version::HTTP_2);
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.text().await.expect("body"), HELLO);
        let response = h2.get(url(addr, "/")).send().await.expect("h2c");
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        // Routing still comes first.
        let response = client()
            .get(url(addr, "/elsewhere"))
            .send()
            .await
            .expect("404");
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
    })
    .await;
}
