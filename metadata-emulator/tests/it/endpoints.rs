//! The metadata server's answers, as clients see them.

use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{bounded, client, emulator, identity_path, metadata_get, url};

const SA: &str = "/computeMetadata/v1/instance/service-accounts/default";
const EMAIL: &str = "calling-service-sa@local-project.iam.gserviceaccount.com";

#[tokio::test]
async fn every_metadata_path_needs_the_flavor_header() {
    bounded(async {
        let server = emulator().await;
        for path in [
            "/computeMetadata/",
            "/computeMetadata/v1/",
            "/computeMetadata/v1/project/project-id",
            &format!("{SA}/email"),
            &format!("{SA}/token"),
            &identity_path("http://x", "full"),
            "/computeMetadata/v1/no/such/path",
        ] {
            for flavor in [None, Some("google"), Some("Googl"), Some("")] {
                let mut request = client().get(url(server.addr(), path));
                if let Some(flavor) = flavor {
                    request = request.header("Metadata-Flavor", flavor);
                }
                let response = request.send().await.expect("response");
                assert_eq!(
                    response.status(),
                    StatusCode::FORBIDDEN,
                    "{path} {flavor:?}"
                );
                assert_eq!(response.headers()["metadata-flavor"], "Google");
                let body = response.text().await.expect("body");
                assert!(body.contains("Metadata-Flavor"), "{body}");
            }
        }
    })
    .await;
}

#[tokio::test]
async fn forwarded_requests_are_refused() {
    bounded(async {
        let server = emulator().await;
        let response = client()
            .get(url(server.addr(), "/computeMetadata/v1/project/project-id"))
            .header("Metadata-Flavor", "Google")
            .header("X-Forwarded-For", "10.0.0.1")
            .send()
            .await
            .expect("response");
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
    })
    .await;
}

#[tokio::test]
async fn root_answers_like_the_real_server_without_the_header() {
    bounded(async {
        let server = emulator().await;
        let response = client()
            .get(url(server.addr(), "/"))
            .send()
            .await
            .expect("response");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["metadata-flavor"], "Google");
        assert_eq!(response.text().await.expect("body"), "computeMetadata/\n");
        let (status, _, body) = metadata_get(server.addr(), "/computeMetadata/").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "v1/\n"));
        let (status, _, body) = metadata_get(server.addr(), "/computeMetadata/v1/").await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::OK, "instance/\nproject/\nuniverse/\n")
        );
    })
    .await;
}

#[tokio::test]
async fn service_account_values() {
    bounded(async {
        let server = emulator().await;
        let addr = server.addr();
        let (status, content_type, body) = metadata_get(addr, &format!("{SA}/email")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type, "application/text");
        assert_eq!(body, EMAIL);
        // The account also answers under its email, as on Google Cloud.
        let (status, _, body) = metadata_get(
            addr,
            &format!("/computeMetadata/v1/instance/service-accounts/{EMAIL}/email"),
        )
        .await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, EMAIL));
        let (_, _, body) = metadata_get(addr, &format!("{SA}/scopes")).await;
        assert_eq!(body, "https://www.googleapis.com/auth/cloud-platform\n");
        let (_, _, body) = metadata_get(addr, &format!("{SA}/aliases")).await;
        assert_eq!(body, "default\n");
        let (_, _, body) = metadata_get(addr, &format!("{SA}/")).await;
        assert_eq!(body, "aliases\nemail\nidentity\nscopes\ntoken\n");
        let (_, _, body) =
            metadata_get(addr, "/computeMetadata/v1/instance/service-accounts/").await;
        assert_eq!(body, format!("default/\n{EMAIL}/\n"));
    })
    .await;
}

#[tokio::test]
async fn recursive_listing_is_json() {
    bounded(async {
        let server = emulator().await;
        // What google-auth reads to learn the account's email and scopes.
        let (status, content_type, body) =
            metadata_get(server.addr(), &format!("{SA}/?recursive=true")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type, "application/json");
        let info: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(
            info,
            serde_json::json!({
                "aliases": ["default"],
                "email": EMAIL,
                "scopes": ["https://www.googleapis.com/auth/cloud-platform"],
            })
        );
        let (_, _, body) =
            metadata_get(server.addr(), "/computeMetadata/v1/project/?recursive=true").await;
        let project: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(project["projectId"], "local-project");
        assert!(project["numericProjectId"].is_u64(), "{body}");
    })
    .await;
}

#[tokio::test]
async fn project_values() {
    bounded(async {
        let server = emulator().await;
        let (status, _, body) =
            metadata_get(server.addr(), "/computeMetadata/v1/project/project-id").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "local-project"));
        let (status, _, body) = metadata_get(
            server.addr(),
            "/computeMetadata/v1/project/numeric-project-id",
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body.len(), 12);
        assert!(body.bytes().all(|b| b.is_ascii_digit()), "{body}");
    })
    .await;
}

#[tokio::test]
async fn access_token_is_json_with_expires_in() {
    bounded(async {
        let server = emulator().await;
        let (status, content_type, body) = metadata_get(
            server.addr(),
            &format!("{SA}/token?scopes=https://www.googleapis.com/auth/cloud-platform"),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type, "application/json");
        let token: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert!(token["access_token"]
            .as_str()
            .expect("access_token")
            .starts_with("ya29."));
        assert_eq!(token["token_type"], "Bearer");
        assert_eq!(token["expires_in"], 3599);
    })
    .await;
}

#[tokio::test]
async fn directories_without_their_slash_redirect() {
    bounded(async {
        let server = emulator().await;
        for (path, location) in [
            ("/computeMetadata", "/computeMetadata/"),
            ("/computeMetadata/v1", "/computeMetadata/v1/"),
            (SA, &format!("{SA}/")),
            (
                &format!("{SA}?recursive=true"),
                &format!("{SA}/?recursive=true"),
            ),
        ] {
            let response = client()
                .get(url(server.addr(), path))
                .header("Metadata-Flavor", "Google")
                .send()
                .await
                .expect("response");
            assert_eq!(response.status(), StatusCode::MOVED_PERMANENTLY, "{path}");
            assert_eq!(response.headers()["location"], *location);
        }
    })
    .await;
}

#[tokio::test]
async fn unknown_paths_are_not_found() {
    bounded(async {
        let server = emulator().await;
        for path in [
            "/computeMetadata/v2/",
            "/computeMetadata/v1x",
            "/computeMetadata/v1/instance/hostname",
            "/computeMetadata/v1/instance/service-accounts/someone@else.com/email",
            &format!("{SA}/email/"),
            &format!("{SA}//email"),
            "/computeMetadata/v1/project/project-id/x",
        ] {
            let (status, _, _) = metadata_get(server.addr(), path).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        }
        for path in ["/oauth2/v1/certs", "/favicon.ico", "//"] {
            let response = client()
                .get(url(server.addr(), path))
                .send()
                .await
                .expect("response");
            assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
            assert_eq!(response.headers()["metadata-flavor"], "Google");
        }
    })
    .await;
}

#[tokio::test]
async fn only_get_and_head() {
    bounded(async {
        let server = emulator().await;
        for path in ["/", "/oauth2/v3/certs", &identity_path("http://x", "full")] {
            let response = client()
                .post(url(server.addr(), path))
                .header("Metadata-Flavor", "Google")
                .send()
                .await
                .expect("response");
            assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED, "{path}");
            assert_eq!(response.headers()["allow"], "GET, HEAD");
            let response = client()
                .head(url(server.addr(), path))
                .header("Metadata-Flavor", "Google")
                .send()
                .await
                .expect("response");
            assert_eq!(response.status(), StatusCode::OK, "{path}");
        }
    })
    .await;
}

#[tokio::test]
async fn jwks_is_cacheable_json() {
    bounded(async {
        let server = emulator().await;
        let response = client()
            .get(url(server.addr(), "/oauth2/v3/certs"))
            .send()
            .await
            .expect("response");
        assert_eq!(response.status(), StatusCode::OK);
        let headers = response.headers().clone();
        assert_eq!(headers["content-type"], "application/json; charset=UTF-8");
        let cache = headers["cache-control"].to_str().expect("ascii");
        assert!(cache.starts_with("public, max-age="), "{cache}");
        assert_eq!(headers["metadata-flavor"], "Google");
        let jwks: serde_json::Value = response.json().await.expect("json");
        let key = &jwks["keys"][0];
        for field in ["kty", "alg", "use", "kid", "n", "e"] {
            assert!(key[field].is_string(), "{field} in {jwks}");
        }
    })
    .await;
}

#[tokio::test]
async fn hostile_input_gets_an_answer_not_a_crash() {
    bounded(async {
        let server = emulator().await;
        let identity = "/computeMetadata/v1/instance/service-accounts/default/identity";
        let long = "a".repeat(40_000);
        let cases = [
            (format!("{identity}?audience=%ff%fe%00&format=full"), 200),
            (format!("{identity}?audience=%&format=%zz"), 400),
            (
                format!("{identity}?audience=x&&&=&format=full&format=jwt"),
                200,
            ),
            (format!("{identity}?audience={long}"), 200),
            (format!("{identity}?recursive=true&audience=x"), 200),
            (
                "/computeMetadata/v1/project/project-id?alt=json&recursive=true".to_owned(),
                200,
            ),
        ];
        for (path, expected) in cases {
            let (status, _, _) = metadata_get(server.addr(), &path).await;
            assert_eq!(
                status.as_u16(),
                expected,
                "{}",
                &path[..path.len().min(120)]
            );
        }
        // Dot segments, which an HTTP client would have resolved.
        for path in [
            "/computeMetadata/v1/../v1/project/project-id",
            "/computeMetadata/v1/%2e%2e/",
        ] {
            let mut stream = tokio::net::TcpStream::connect(server.addr())
                .await
                .expect("connect");
            let request = format!(
                "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nMetadata-Flavor: Google\r\nConnection: close\r\n\r\n"
            );
            stream
                .write_all(request.as_bytes())
                .await
                .expect("write");
            let mut answer = String::new();
            stream.read_to_string(&mut answer).await.expect("read");
            assert!(answer.starts_with("HTTP/1.1 404"), "{path}: {answer}");
        }
        // Still serving.
        let (status, _, body) =
            metadata_get(server.addr(), "/computeMetadata/v1/project/project-id").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "local-project"));
    })
    .await;
}
