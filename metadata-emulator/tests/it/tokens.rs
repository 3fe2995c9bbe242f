//! ID tokens: Google's claims, signed so that an independent verifier
//! accepts them against the emulator's own JWKS, and refuses them otherwise.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::StatusCode;

use crate::support::{
    bounded, config, emulator, id_token, identity_path, key_set, metadata_get, start_with, verify,
    KEY_1, KEY_1_PKCS1, KEY_2,
};

const AUDIENCE: &str = "http://127.0.0.1:8081";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

#[tokio::test]
async fn full_token_verifies_with_googles_claims() {
    bounded(async {
        let server = emulator().await;
        let before = now();
        let token = id_token(server.addr(), AUDIENCE, "full").await;
        let claims = verify(server.addr(), &token, AUDIENCE)
            .await
            .expect("a valid token");
        assert_eq!(claims["iss"], "https://accounts.google.com");
        assert_eq!(claims["aud"], AUDIENCE);
        assert_eq!(
            claims["email"],
            "calling-service-sa@local-project.iam.gserviceaccount.com"
        );
        assert_eq!(claims["email_verified"], true);
        let sub = claims["sub"].as_str().expect("sub");
        assert!(
            !sub.is_empty() && sub.bytes().all(|b| b.is_ascii_digit()),
            "{sub}"
        );
        assert_eq!(claims["azp"], sub);
        let iat = claims["iat"].as_u64().expect("iat");
        assert!(iat >= before && iat <= now(), "{iat}");
        assert_eq!(claims["exp"].as_u64().expect("exp"), iat + 3600);
        let header = jsonwebtoken::decode_header(&token).expect("header");
        assert_eq!(header.alg, jsonwebtoken::Algorithm::RS256);
        assert_eq!(header.kid.as_deref(), Some(key_set(&[KEY_1]).kid()));
    })
    .await;
}

#[tokio::test]
async fn standard_format_has_no_email() {
    bounded(async {
        let server = emulator().await;
        for path in [
            identity_path(AUDIENCE, "standard"),
            format!(
                "/computeMetadata/v1/instance/service-accounts/default/identity?audience={AUDIENCE}"
            ),
        ] {
            let (status, _, token) = metadata_get(server.addr(), &path).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            let claims = verify(server.addr(), &token, AUDIENCE)
                .await
                .expect("valid");
            assert!(claims.get("email").is_none(), "{claims}");
            assert!(claims.get("email_verified").is_none(), "{claims}");
            assert!(claims["sub"].is_string());
        }
    })
    .await;
}

#[tokio::test]
async fn a_wrong_audience_is_refused() {
    bounded(async {
        let server = emulator().await;
        let token = id_token(server.addr(), AUDIENCE, "full").await;
        let err = verify(server.addr(), &token, "http://127.0.0.1:9999")
            .await
            .expect_err("wrong audience");
        assert_eq!(
            err.kind(),
            &jsonwebtoken::errors::ErrorKind::InvalidAudience
        );
    })
    .await;
}

#[tokio::test]
async fn a_tampered_token_is_refused() {
    bounded(async {
        let server = emulator().await;
        let token = id_token(server.addr(), AUDIENCE, "full").await;
        let other = id_token(server.addr(), "http://evil.example", "full").await;
        // The other token's payload under this token's signature.
        let mut parts: Vec<&str> = token.split('.').collect();
        parts[1] = other.split('.').nth(1).expect("payload");
        let forged = parts.join(".");
        let err = verify(server.addr(), &forged, "http://evil.example")
            .await
            .expect_err("forged");
        assert_eq!(
            err.kind(),
            &jsonwebtoken::errors::ErrorKind::InvalidSignature
        );
    })
    .await;
}

#[tokio::test]
async fn audience_is_percent_decoded_and_extra_params_ignored() {
    bounded(async {
        let server = emulator().await;
        let audience = "https://receiver-abc-uc.a.run.app/x?y=1 2&z=é";
        let path = format!(
            "{}&licenses=TRUE&unknown=1",
            identity_path(audience, "full")
        );
        let (status, _, token) = metadata_get(server.addr(), &path).await;
        assert_eq!(status, StatusCode::OK);
        let claims = verify(server.addr(), &token, audience)
            .await
            .expect("valid");
        assert_eq!(claims["aud"], audience);
    })
    .await;
}

#[tokio::test]
async fn bad_identity_requests_get_400() {
    bounded(async {
        let server = emulator().await;
        let base = "/computeMetadata/v1/instance/service-accounts/default/identity";
        for query in [
            "",
            "?format=full",
            "?audience=&format=full",
            "?audience=x&format=jwt",
        ] {
            let (status, _, body) = metadata_get(server.addr(), &format!("{base}{query}")).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
            assert!(!body.contains('.'), "no token in {body:?}");
        }
    })
    .await;
}

#[tokio::test]
async fn identity_and_lifetime_follow_the_settings() {
    bounded(async {
        let mut config = config();
        config.email = "other-sa@proj-2.iam.gserviceaccount.com".to_owned();
        config.project_id = "proj-2".to_owned();
        config.token_lifetime = Duration::from_secs(60);
        let server = start_with(config, key_set(&[KEY_1])).await;
        let token = id_token(server.addr(), AUDIENCE, "full").await;
        let claims = verify(server.addr(), &token, AUDIENCE)
            .await
            .expect("valid");
        assert_eq!(claims["email"], "other-sa@proj-2.iam.gserviceaccount.com");
        let (iat, exp) = (claims["iat"].as_u64(), claims["exp"].as_u64());
        assert_eq!(exp.expect("exp") - iat.expect("iat"), 60);
        let (_, _, project) =
            metadata_get(server.addr(), "/computeMetadata/v1/project/project-id").await;
        assert_eq!(project, "proj-2");
    })
    .await;
}

#[tokio::test]
async fn emulators_sharing_a_key_verify_each_others_tokens() {
    bounded(async {
        // The same key, once as PKCS#8 and once as PKCS#1.
        let a = start_with(config(), key_set(&[KEY_1])).await;
        let b = start_with(config(), key_set(&[KEY_1_PKCS1])).await;
        let token = id_token(a.addr(), AUDIENCE, "full").await;
        verify(b.addr(), &token, AUDIENCE)
            .await
            .expect("valid at b");
        // A rotation: key 2 signs, key 1 is still published.
        let rotated = start_with(config(), key_set(&[KEY_2, KEY_1])).await;
        verify(rotated.addr(), &token, AUDIENCE)
            .await
            .expect("old token still valid");
        let new = id_token(rotated.addr(), AUDIENCE, "full").await;
        verify(rotated.addr(), &new, AUDIENCE)
            .await
            .expect("new token");
        assert_ne!(
            jsonwebtoken::decode_header(&new).expect("header").kid,
            jsonwebtoken::decode_header(&token).expect("header").kid
        );
    })
    .await;
}
