//! Who gets in, exactly as Cloud Run documents it: allUsers forwards
//! without a check; otherwise no token is 403, an invalid one 401, a valid
//! one without an invoking role 403; X-Serverless-Authorization first.

use http::StatusCode;
use serde_json::json;

use crate::support::{
    bearer, bounded, claims, policy_file, service_policy, signed, takes_effect, token, with,
    Container, Front, AUDIENCE, CALLER, COMPUTE,
};

const INVOKER: &str = "roles/run.invoker";

async fn private(name: &str, members: &[&str]) -> Front {
    let policy = policy_file(name, &service_policy(INVOKER, members));
    Front::start(&policy, Container::start(false).await, |_| {}).await
}

#[tokio::test]
async fn all_users_is_a_public_service_forwarded_without_a_check() {
    bounded(async {
        let policy = policy_file("public", &service_policy(INVOKER, &["allUsers"]));
        let front = Front::start(&policy, Container::start(false).await, |_| {}).await;
        assert_eq!(front.get("/", &[]).await, (StatusCode::OK, "hello".into()));
        // Even a broken token is not looked at, and passes untouched.
        let (status, _) = front
            .get("/", &[("authorization", bearer("not.a.token"))])
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            front.container.last().headers["authorization"],
            "Bearer not.a.token"
        );
    })
    .await;
}

#[tokio::test]
async fn no_token_is_403_with_the_front_end_s_page() {
    bounded(async {
        let front = private("no-token", &[&format!("serviceAccount:{CALLER}")]).await;
        for headers in [
            vec![],
            vec![("authorization", "Basic dXNlcjpwYXNz".to_owned())],
            vec![("authorization", "Bearer".to_owned())],
        ] {
            let (status, body) = front.get("/some/path", &headers).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{headers:?}");
            assert!(body.contains("<title>403 Forbidden</title>"), "{body}");
            assert!(body.contains("<h1>Error: Forbidden</h1>"), "{body}");
            assert!(body.contains("<code>/some/path</code>"), "{body}");
        }
        assert_eq!(front.container.count(), 0);
    })
    .await;
}

#[tokio::test]
async fn an_invalid_token_is_401_and_never_echoed() {
    bounded(async {
        let front = private("invalid", &["allAuthenticatedUsers"]).await;
        let base = claims(CALLER, AUDIENCE);
        let valid = token(CALLER);
        let (head, _) = valid.rsplit_once('.').expect("jwt");
        let bad_signature = format!("{head}.c2lnbmF0dXJl");
        let expired = signed(&with(&base, json!({ "exp": 1_000_000, "iat": 999_000 })));
        let wrong_audience = signed(&with(&base, json!({ "aud": "https://elsewhere.run.app" })));
        let wrong_issuer = signed(&with(&base, json!({ "iss": "https://issuer.example" })));
        for (what, token) in [
            ("bad signature", bad_signature),
            ("expired", expired),
            ("wrong audience", wrong_audience),
            ("wrong issuer", wrong_issuer),
            ("not a JWT", "garbage".to_owned()),
        ] {
            let (status, body) = front.get("/", &[("authorization", bearer(&token))]).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}");
            assert!(
                body.contains("<title>401 Unauthorized</title>"),
                "{what}: {body}"
            );
            assert!(
                body.contains("<h1>Error: Unauthorized</h1>"),
                "{what}: {body}"
            );
            for part in token.split('.') {
                assert!(!body.contains(part), "{what}: the token is echoed");
            }
        }
        assert_eq!(front.container.count(), 0);
    })
    .await;
}

#[tokio::test]
async fn a_valid_token_needs_a_role_that_grants_run_routes_invoke() {
    bounded(async {
        let front = private("no-role", &[&format!("serviceAccount:{CALLER}")]).await;
        let (status, body) = front
            .get("/", &[("authorization", bearer(&token(COMPUTE)))])
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(body.contains("Error: Forbidden"), "{body}");
        let (status, body) = front
            .get("/", &[("authorization", bearer(&token(CALLER)))])
            .await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "hello"));
        // An unverified email is no identity.
        let unverified = signed(&with(
            &claims(CALLER, AUDIENCE),
            json!({ "email_verified": false }),
        ));
        let (status, _) = front
            .get("/", &[("authorization", bearer(&unverified))])
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    })
    .await;
}

#[tokio::test]
async fn editor_on_the_project_gets_in_as_the_default_compute_account_does() {
    bounded(async {
        let policy = policy_file(
            "editor",
            &json!({
                "bindings": [{ "role": INVOKER, "members": [format!("serviceAccount:{CALLER}")] }],
                "projectBindings": [{ "role": "roles/editor", "members": [format!("serviceAccount:{COMPUTE}")] }],
            }),
        );
        let front = Front::start(&policy, Container::start(false).await, |_| {}).await;
        let (status, _) = front
            .get("/", &[("authorization", bearer(&token(COMPUTE)))])
            .await;
        assert_eq!(status, StatusCode::OK);
        let (status, _) = front
            .get("/", &[("authorization", bearer(&token("someone@other.iam.gserviceaccount.com")))])
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    })
    .await;
}

#[tokio::test]
async fn domain_and_all_authenticated_users_members() {
    bounded(async {
        let front = private("domain", &["domain:example.com"]).await;
        // A member of the Workspace domain: the token's hd claim says so.
        let member = signed(&with(
            &claims("dev@example.com", AUDIENCE),
            json!({ "hd": "example.com" }),
        ));
        let (status, _) = front.get("/", &[("authorization", bearer(&member))]).await;
        assert_eq!(status, StatusCode::OK);
        // An address in the domain without hd (a consumer account) is not.
        let (status, _) = front
            .get("/", &[("authorization", bearer(&token("dev@example.com")))])
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (status, _) = front
            .get("/", &[("authorization", bearer(&token("dev@example.org")))])
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let front = private("all-authenticated", &["allAuthenticatedUsers"]).await;
        let (status, _) = front
            .get(
                "/",
                &[("authorization", bearer(&token("anyone@example.org")))],
            )
            .await;
        assert_eq!(status, StatusCode::OK);
    })
    .await;
}

#[tokio::test]
async fn x_serverless_authorization_is_checked_alone_and_authorization_passes_untouched() {
    bounded(async {
        let front = private("precedence", &[&format!("serviceAccount:{CALLER}")]).await;
        let app_token = "the.app's.own";
        let (status, _) = front
            .get(
                "/",
                &[
                    ("x-serverless-authorization", bearer(&token(CALLER))),
                    ("authorization", bearer(app_token)),
                ],
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        let seen = front.container.last().headers;
        assert_eq!(seen["authorization"], bearer(app_token));
        let stripped = seen["x-serverless-authorization"].to_str().expect("ascii");
        assert!(
            stripped.ends_with(".SIGNATURE_REMOVED_BY_GOOGLE"),
            "{stripped}"
        );
        // With X-Serverless-Authorization present, a valid Authorization
        // does not help an invalid one.
        let (status, _) = front
            .get(
                "/",
                &[
                    ("x-serverless-authorization", bearer("garbage")),
                    ("authorization", bearer(&token(CALLER))),
                ],
            )
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    })
    .await;
}

#[tokio::test]
async fn the_container_never_receives_a_replayable_token() {
    bounded(async {
        let front = private("stripped", &[&format!("serviceAccount:{CALLER}")]).await;
        let token = token(CALLER);
        let (status, _) = front.get("/", &[("authorization", bearer(&token))]).await;
        assert_eq!(status, StatusCode::OK);
        let (head, signature) = token.rsplit_once('.').expect("jwt");
        let seen = front.container.last().headers["authorization"]
            .to_str()
            .expect("ascii")
            .to_owned();
        assert_eq!(seen, format!("Bearer {head}.SIGNATURE_REMOVED_BY_GOOGLE"));
        assert!(!seen.contains(signature));
    })
    .await;
}

#[tokio::test]
async fn a_policy_edit_takes_effect_within_2_s_without_a_restart() {
    bounded(async {
        let path = policy_file(
            "edited",
            &service_policy(INVOKER, &["user:other@example.com"]),
        );
        let front = Front::start(&path, Container::start(false).await, |_| {}).await;
        let caller = [("authorization", bearer(&token(CALLER)))];
        assert_eq!(front.get("/", &caller).await.0, StatusCode::FORBIDDEN);

        // Edited in place, as a text editor or `>` does.
        std::fs::write(
            &path,
            service_policy(INVOKER, &[&format!("serviceAccount:{CALLER}")]).to_string(),
        )
        .expect("edit");
        let took = takes_effect(
            &front,
            &caller,
            StatusCode::OK,
            std::time::Duration::from_secs(2),
        )
        .await;
        assert!(took < std::time::Duration::from_secs(2), "{took:?}");

        // Replaced by a rename, as gcloud's set-iam-policy flow or an
        // atomic save does.
        let next = path.with_extension("new");
        std::fs::write(&next, service_policy(INVOKER, &["allUsers"]).to_string()).expect("write");
        std::fs::rename(&next, &path).expect("rename");
        takes_effect(
            &front,
            &[],
            StatusCode::OK,
            std::time::Duration::from_secs(2),
        )
        .await;
    })
    .await;
}
