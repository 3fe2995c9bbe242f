//! Token sources off the metadata server: a service-account key exchanged at
//! its token endpoint, and impersonation through the IAM credentials API.

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use aws_lc_rs::{
    encoding::AsDer,
    rsa::{KeyPair, KeySize},
    signature::KeyPair as _,
};
use base64::Engine as _;
use bytes::Bytes;
use cloud_run::{response::text, testing::Spawned, Body};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use sender::Config;
use tokio::sync::OnceCell;

use crate::support::{bounded, client, jwt, root, server_config, start_sender, FakeReceiver};

const EMAIL: &str = "calling-service-sa@test-project.iam.gserviceaccount.com";
const KEY_ID: &str = "0123456789abcdef0123456789abcdef01234567";

/// A 2048-bit test key, generated once per test binary.
struct TestKey {
    pem: String,
    public_der: Vec<u8>,
}

async fn test_key() -> &'static TestKey {
    static KEY: OnceCell<TestKey> = OnceCell::const_new();
    KEY.get_or_init(|| async {
        let pair = KeyPair::generate(KeySize::Rsa2048).expect("generate");
        let der = pair.as_der().expect("pkcs8");
        let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).expect("ascii"))
            .collect();
        TestKey {
            pem: format!(
                "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
                lines.join("\n")
            ),
            public_der: pair.public_key().as_ref().to_vec(),
        }
    })
    .await
}

/// Writes a service-account key file whose `token_uri` is `token_uri`.
async fn key_file(token_uri: &str) -> PathBuf {
    let key = test_key().await;
    let dir = std::env::temp_dir().join(format!(
        "sender-sources-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("key.json");
    let json = serde_json::json!({
        "type": "service_account",
        "project_id": "test-project",
        "private_key_id": KEY_ID,
        "private_key": key.pem,
        "client_email": EMAIL,
        "client_id": "123456789",
        "token_uri": token_uri,
    });
    std::fs::write(&path, json.to_string()).expect("write key");
    path
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::SeqCst)
}

/// One request to a fake token endpoint.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    authorization: Option<String>,
    form: Vec<(String, String)>,
    json: Option<serde_json::Value>,
}

/// A fake OAuth token endpoint and IAM credentials API in one server: it
/// answers with `answer(seen)` and records every request.
struct FakeGoogle {
    seen: Mutex<Vec<Seen>>,
    answer: Box<Answer>,
}

type Answer = dyn Fn(&Seen) -> (StatusCode, String) + Send + Sync;

impl FakeGoogle {
    fn new(answer: impl Fn(&Seen) -> (StatusCode, String) + Send + Sync + 'static) -> Arc<Self> {
        Arc::new(Self {
            seen: Mutex::default(),
            answer: Box::new(answer),
        })
    }

    async fn start(self: &Arc<Self>) -> Spawned {
        let fake = Arc::clone(self);
        Spawned::serve(server_config(), move |req| {
            let fake = Arc::clone(&fake);
            async move { fake.handle(req).await }
        })
        .await
        .expect("fake google")
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let (parts, body) = req.into_parts();
        let body: Bytes = body.collect().await.expect("body").to_bytes();
        let seen = Seen {
            path: parts.uri.path().to_owned(),
            authorization: parts
                .headers
                .get("authorization")
                .map(|v| v.to_str().expect("ascii").to_owned()),
            form: url::form_urlencoded_pairs(&body),
            json: serde_json::from_slice(&body).ok(),
        };
        let (status, answer) = (self.answer)(&seen);
        self.seen.lock().expect("lock").push(seen);
        let mut response = text(status, answer);
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        response
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }
}

mod url {
    pub(super) fn form_urlencoded_pairs(body: &[u8]) -> Vec<(String, String)> {
        let text = std::str::from_utf8(body).unwrap_or("");
        reqwest::Url::parse(&format!("http://x/?{text}"))
            .map(|u| {
                u.query_pairs()
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn form<'a>(seen: &'a Seen, key: &str) -> Option<&'a str> {
    seen.form
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn id_token_for(audience: &str) -> String {
    jwt(4_000_000_000, audience, 7)
}

async fn sender_with(
    source: sender::TokenSource,
    receiver: &Spawned,
    tweak: impl FnOnce(&mut Config),
) -> Spawned {
    let mut config = crate::support::sender_config(receiver.addr(), None);
    config.token_source = source;
    config.token_endpoint_timeout = Duration::from_secs(2);
    tweak(&mut config);
    start_sender(config).await
}

fn key_source(path: &std::path::Path) -> sender::TokenSource {
    let path = path.to_str().expect("utf-8").to_owned();
    let env = move |k: &str| match k {
        "ID_TOKEN_SOURCE" => Some("service-account-key".to_owned()),
        "GOOGLE_APPLICATION_CREDENTIALS" => Some(path.clone()),
        _ => None,
    };
    sender::TokenSource::from_env(&env).expect("key source")
}

#[tokio::test]
async fn a_key_is_exchanged_for_an_id_token_with_a_signed_assertion() {
    bounded(async {
        let google = FakeGoogle::new(|_| {
            (
                StatusCode::OK,
                serde_json::json!({ "id_token": id_token_for("minted") }).to_string(),
            )
        });
        let google_server = google.start().await;
        let token_uri = format!("http://{}/token", google_server.addr());
        let key = key_file(&token_uri).await;
        let receiver = FakeReceiver::hello();
        let receiver_server = receiver.start().await;
        let sender = sender_with(key_source(&key), &receiver_server, |_| {}).await;

        let response = client()
            .get(root(sender.addr()))
            .send()
            .await
            .expect("response");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            receiver.authorizations(),
            vec![Some(format!("Bearer {}", id_token_for("minted")))]
        );

        let seen = google.seen();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].path, "/token");
        assert_eq!(
            form(&seen[0], "grant_type"),
            Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
        );
        let assertion = form(&seen[0], "assertion").expect("assertion");
        let header = jsonwebtoken::decode_header(assertion).expect("header");
        assert_eq!(header.alg, jsonwebtoken::Algorithm::RS256);
        assert_eq!(header.kid.as_deref(), Some(KEY_ID));
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        validation.set_audience(&[&token_uri]);
        validation.set_issuer(&[EMAIL]);
        let claims = jsonwebtoken::decode::<serde_json::Value>(
            assertion,
            &jsonwebtoken::DecodingKey::from_rsa_der(&test_key().await.public_der),
            &validation,
        )
        .expect("the assertion is signed by the key")
        .claims;
        assert_eq!(claims["sub"], EMAIL);
        assert_eq!(
            claims["target_audience"],
            format!("http://{}", receiver_server.addr())
        );
        let iat = claims["iat"].as_u64().expect("iat");
        assert_eq!(claims["exp"].as_u64().expect("exp"), iat + 3600);
    })
    .await;
}

#[tokio::test]
async fn concurrent_requests_make_one_key_exchange() {
    bounded(async {
        let google = FakeGoogle::new(|_| {
            (
                StatusCode::OK,
                serde_json::json!({ "id_token": id_token_for("x") }).to_string(),
            )
        });
        let google_server = google.start().await;
        let key = key_file(&format!("http://{}/token", google_server.addr())).await;
        let receiver_server = FakeReceiver::hello().start().await;
        let sender = sender_with(key_source(&key), &receiver_server, |_| {}).await;
        let client = client();
        let requests: Vec<_> = (0..100)
            .map(|_| tokio::spawn(client.get(root(sender.addr())).send()))
            .collect();
        for request in requests {
            assert_eq!(
                request.await.expect("join").expect("response").status(),
                StatusCode::OK
            );
        }
        assert_eq!(google.seen().len(), 1);
    })
    .await;
}

#[tokio::test]
async fn a_token_endpoint_error_is_503_with_a_fixed_phrase_and_no_secrets() {
    bounded(async {
        let google = FakeGoogle::new(|_| {
            (
                StatusCode::BAD_REQUEST,
                r#"{"error":"invalid_grant","error_description":"Invalid JWT Signature."}"#
                    .to_owned(),
            )
        });
        let google_server = google.start().await;
        let key = key_file(&format!("http://{}/token", google_server.addr())).await;
        let receiver = FakeReceiver::hello();
        let receiver_server = receiver.start().await;
        let sender = sender_with(key_source(&key), &receiver_server, |_| {}).await;
        let response = client()
            .get(root(sender.addr()))
            .send()
            .await
            .expect("response");
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = response.text().await.expect("body");
        assert_eq!(
            body,
            "could not get an ID token: the token endpoint refused\n"
        );
        // The endpoint's own words are for the log, not for anonymous callers.
        assert!(!body.contains("Invalid JWT Signature"), "{body}");
        let assertion = form(&google.seen()[0], "assertion")
            .expect("assertion")
            .to_owned();
        let signature = assertion.rsplit('.').next().expect("signature");
        assert!(!body.contains(signature));
        assert!(!body.contains("PRIVATE KEY"));
        assert!(receiver.requests.lock().expect("lock").is_empty());
    })
    .await;
}

/// A caller whose own credentials are a key file, exchanged (by gcp_auth) at
/// the fake's `/token` for an access token; the fake's `/v1/...` is the IAM
/// credentials API.
fn impersonation_answers(seen: &Seen) -> (StatusCode, String) {
    if seen.path == "/token" {
        return (
            StatusCode::OK,
            serde_json::json!({
                "access_token": "ya29.caller-access-token",
                "expires_in": 3599,
                "token_type": "Bearer"
            })
            .to_string(),
        );
    }
    if seen.authorization.as_deref() != Some("Bearer ya29.caller-access-token") {
        return (
            StatusCode::UNAUTHORIZED,
            r#"{"error":{"message":"no"}}"#.to_owned(),
        );
    }
    if seen.path.contains("denied-sa@") {
        return (
            StatusCode::FORBIDDEN,
            r#"{"error":{"code":403,"message":"Permission 'iam.serviceAccounts.getOpenIdToken' denied on resource (or it may not exist).","status":"PERMISSION_DENIED"}}"#.to_owned(),
        );
    }
    let audience = seen
        .json
        .as_ref()
        .and_then(|j| j["audience"].as_str())
        .unwrap_or("");
    (
        StatusCode::OK,
        serde_json::json!({ "token": id_token_for(audience) }).to_string(),
    )
}

/// A token source read from `vars`, as the sender reads its environment.
fn source_from(vars: &[(&str, String)]) -> sender::TokenSource {
    let vars: Vec<(String, String)> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    let env = move |name: &str| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    sender::TokenSource::from_env(&env).expect("token source")
}

/// `IMPERSONATE_SERVICE_ACCOUNT` with the caller's own key, exchanged at
/// the fake's `/token`; `IAM_CREDENTIALS_ENDPOINT` at the fake.
async fn impersonating_sender(
    google: &Spawned,
    receiver: &Spawned,
    service_account: &str,
) -> Spawned {
    let caller_key = key_file(&format!("http://{}/token", google.addr())).await;
    let source = source_from(&[
        (
            "GOOGLE_APPLICATION_CREDENTIALS",
            caller_key.to_str().expect("utf-8").to_owned(),
        ),
        ("IMPERSONATE_SERVICE_ACCOUNT", service_account.to_owned()),
        (
            "IAM_CREDENTIALS_ENDPOINT",
            format!("http://{}/", google.addr()),
        ),
    ]);
    sender_with(source, receiver, |_| {}).await
}

#[tokio::test]
async fn impersonation_presents_the_callers_access_token() {
    bounded(async {
        let google = FakeGoogle::new(impersonation_answers);
        let google_server = google.start().await;
        let receiver = FakeReceiver::hello();
        let receiver_server = receiver.start().await;
        let target = "receiver-caller@test-project.iam.gserviceaccount.com";
        let sender = impersonating_sender(&google_server, &receiver_server, target).await;

        let response = client()
            .get(root(sender.addr()))
            .send()
            .await
            .expect("response");
        assert_eq!(response.status(), StatusCode::OK);
        let audience = format!("http://{}", receiver_server.addr());
        assert_eq!(
            receiver.authorizations(),
            vec![Some(format!("Bearer {}", id_token_for(&audience)))]
        );
        let iam: Vec<Seen> = google
            .seen()
            .into_iter()
            .filter(|s| s.path != "/token")
            .collect();
        assert_eq!(iam.len(), 1);
        assert_eq!(
            iam[0].path,
            format!("/v1/projects/-/serviceAccounts/{target}:generateIdToken")
        );
        assert_eq!(
            iam[0].authorization.as_deref(),
            Some("Bearer ya29.caller-access-token")
        );
        let body = iam[0].json.as_ref().expect("json body");
        assert_eq!(body["audience"], audience);
        assert_eq!(body["includeEmail"], true);
    })
    .await;
}

#[tokio::test]
async fn impersonation_refused_names_the_missing_role() {
    bounded(async {
        let google = FakeGoogle::new(impersonation_answers);
        let google_server = google.start().await;
        let receiver_server = FakeReceiver::hello().start().await;
        let sender = impersonating_sender(
            &google_server,
            &receiver_server,
            "denied-sa@test-project.iam.gserviceaccount.com",
        )
        .await;
        let response = client().get(root(sender.addr())).send().await.expect("response");
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = response.text().await.expect("body");
        assert_eq!(
            body,
            "could not get an ID token: the IAM API refused: grant roles/iam.serviceAccountOpenIdTokenCreator on the impersonated service account to the caller\n"
        );
        assert!(!body.contains("getOpenIdToken"), "{body}");
        assert!(!body.contains("caller-access-token"), "{body}");
        assert_eq!(body.trim_end().lines().count(), 1);
    })
    .await;
}

#[tokio::test]
async fn impersonation_with_unresponsive_caller_credentials_is_503_not_a_hang() {
    bounded(async {
        // The caller's token endpoint accepts connections and never answers.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let silent_addr = silent.local_addr().expect("addr");
        let holder = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((conn, _)) = silent.accept().await {
                held.push(conn);
            }
        });
        let caller_key = key_file(&format!("http://{silent_addr}/token")).await;
        let receiver_server = FakeReceiver::hello().start().await;
        let source = source_from(&[
            (
                "GOOGLE_APPLICATION_CREDENTIALS",
                caller_key.to_str().expect("utf-8").to_owned(),
            ),
            (
                "IMPERSONATE_SERVICE_ACCOUNT",
                "receiver-caller@test-project.iam.gserviceaccount.com".to_owned(),
            ),
        ]);
        let sender = sender_with(source, &receiver_server, |config| {
            config.token_endpoint_timeout = Duration::from_millis(500);
        })
        .await;
        let started = std::time::Instant::now();
        let response = client()
            .get(root(sender.addr()))
            .send()
            .await
            .expect("response");
        holder.abort();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            response.text().await.expect("body"),
            "could not get an ID token: the caller's token endpoint did not answer in time\n"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    })
    .await;
}

/// The caller's access token goes to the IAM API: not over plain http to
/// another host.
#[tokio::test]
async fn an_iam_api_in_clear_text_elsewhere_stops_the_start() {
    bounded(async {
        // The caller's own token endpoint is loopback: allowed.
        let caller_key = key_file("http://127.0.0.1:9/token").await;
        let caller_key = caller_key.to_str().expect("utf-8").to_owned();
        let env = |endpoint: &'static str| {
            let caller_key = caller_key.clone();
            move |name: &str| match name {
                "GOOGLE_APPLICATION_CREDENTIALS" => Some(caller_key.clone()),
                "IMPERSONATE_SERVICE_ACCOUNT" => {
                    Some("receiver-caller@test-project.iam.gserviceaccount.com".to_owned())
                }
                "IAM_CREDENTIALS_ENDPOINT" => Some(endpoint.to_owned()),
                _ => None,
            }
        };
        let err =
            sender::TokenSource::from_env(&env("http://iam.example.com/")).expect_err("clear text");
        assert_eq!(err.var, "IAM_CREDENTIALS_ENDPOINT");
        assert!(err.to_string().contains("loopback"), "{err}");
        for allowed in ["http://127.0.0.1:9/", "https://iam.example.com/"] {
            let mut config =
                crate::support::sender_config("127.0.0.1:9".parse().expect("addr"), None);
            config.token_source = sender::TokenSource::from_env(&env(allowed)).expect(allowed);
            sender::Sender::new(config).await.expect(allowed);
        }
    })
    .await;
}

/// A key whose token_uri is plain http to another host: the signed
/// assertion would cross the network in clear, so the start is refused.
#[tokio::test]
async fn a_key_exchanged_in_clear_text_elsewhere_stops_the_start() {
    bounded(async {
        let key = key_file("http://oauth2.example.com/token").await;
        let path = key.to_str().expect("utf-8").to_owned();
        let env = move |k: &str| match k {
            "ID_TOKEN_SOURCE" => Some("service-account-key".to_owned()),
            "GOOGLE_APPLICATION_CREDENTIALS" => Some(path.clone()),
            _ => None,
        };
        let err = sender::TokenSource::from_env(&env).expect_err("clear text");
        assert_eq!(err.var, "GOOGLE_APPLICATION_CREDENTIALS");
        assert!(err.to_string().contains("clear text"), "{err}");
        assert!(!err.to_string().contains("PRIVATE KEY"), "{err}");
    })
    .await;
}

/// The account an impersonated credentials file names, and the delegate
/// gcloud wrote in it (a bare email).
const TARGET: &str = "receiver-caller@test-project.iam.gserviceaccount.com";
const DELEGATE: &str = "delegate-sa@test-project.iam.gserviceaccount.com";
/// What the fake token endpoint hands the source credentials.
const SOURCE_ACCESS: &str = "ya29.source-access-token";

/// The fake's answers for an `impersonated_service_account` file: `/token`
/// gives the access token to a request `source_ok` accepts; the IAM API
/// mints only for that access token, for [`TARGET`], through [`DELEGATE`].
fn impersonated_answers(
    source_ok: impl Fn(&Seen) -> Result<(), String> + Send + Sync + 'static,
) -> impl Fn(&Seen) -> (StatusCode, String) + Send + Sync + 'static {
    move |seen| {
        if seen.path == "/token" {
            return match source_ok(seen) {
                Ok(()) => (
                    StatusCode::OK,
                    serde_json::json!({
                        "access_token": SOURCE_ACCESS,
                        "expires_in": 3599,
                        "token_type": "Bearer"
                    })
                    .to_string(),
                ),
                Err(why) => (
                    StatusCode::BAD_REQUEST,
                    serde_json::json!({ "error": "invalid_grant", "error_description": why })
                        .to_string(),
                ),
            };
        }
        let denied = |why: &str| {
            (
                StatusCode::FORBIDDEN,
                serde_json::json!({ "error": { "code": 403, "message": why } }).to_string(),
            )
        };
        if seen.path != format!("/v1/projects/-/serviceAccounts/{TARGET}:generateIdToken") {
            return denied("wrong account");
        }
        if seen.authorization.as_deref() != Some(&*format!("Bearer {SOURCE_ACCESS}")) {
            return denied("not the source's access token");
        }
        let Some(body) = &seen.json else {
            return denied("no JSON body");
        };
        if body["delegates"]
            != serde_json::json!([format!("projects/-/serviceAccounts/{DELEGATE}")])
        {
            return denied("wrong delegates");
        }
        if body["includeEmail"] != true {
            return denied("no includeEmail");
        }
        let audience = body["audience"].as_str().unwrap_or("");
        (
            StatusCode::OK,
            serde_json::json!({ "token": id_token_for(audience) }).to_string(),
        )
    }
}

/// An `impersonated_service_account` file as gcloud writes it, around
/// `source`. Its URL's host is not where the sender goes.
fn impersonated_file(source: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "type": "impersonated_service_account",
        "delegates": [DELEGATE],
        "service_account_impersonation_url": format!(
            "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/{TARGET}:generateAccessToken"
        ),
        "source_credentials": source,
    })
}

/// gcloud's user credentials, refreshed at `token_uri`.
fn user_source(token_uri: &str) -> serde_json::Value {
    serde_json::json!({
        "type": "authorized_user",
        "client_id": "client-id.apps.googleusercontent.com",
        "client_secret": "client-secret",
        "refresh_token": "1//refresh-token",
        "token_uri": token_uri,
    })
}

/// Whether a `/token` request is the user credentials' refresh.
fn is_user_refresh(seen: &Seen) -> Result<(), String> {
    let expected = [
        ("grant_type", "refresh_token"),
        ("client_id", "client-id.apps.googleusercontent.com"),
        ("client_secret", "client-secret"),
        ("refresh_token", "1//refresh-token"),
    ];
    for (key, value) in expected {
        if form(seen, key) != Some(value) {
            return Err(format!("{key} is not {value}"));
        }
    }
    Ok(())
}

/// Writes `json` as `name` in a fresh directory; the directory.
fn write_in_fresh_dir(name: &str, json: &serde_json::Value) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "sender-adc-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join(name), json.to_string()).expect("write");
    dir
}

/// The ID tokens the receiver got, and the calls the fake saw: how many to
/// `/token`, how many to the IAM API.
fn calls(google: &FakeGoogle) -> (usize, usize) {
    let seen = google.seen();
    let token = seen.iter().filter(|s| s.path == "/token").count();
    (token, seen.len() - token)
}

#[tokio::test]
async fn an_impersonated_file_with_a_key_source_mints_through_generate_id_token() {
    bounded(async {
        let public = test_key().await.public_der.clone();
        let google = Arc::new(std::sync::OnceLock::<String>::new());
        let token_uri = Arc::clone(&google);
        let fake = FakeGoogle::new(impersonated_answers(move |seen| {
            // A signed assertion asking for an access token, not an ID token.
            if form(seen, "grant_type") != Some("urn:ietf:params:oauth:grant-type:jwt-bearer") {
                return Err("not a JWT bearer grant".to_owned());
            }
            let assertion = form(seen, "assertion").ok_or("no assertion")?;
            let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
            validation.set_audience(&[token_uri.get().ok_or("no token_uri")?]);
            validation.set_issuer(&[EMAIL]);
            let claims = jsonwebtoken::decode::<serde_json::Value>(
                assertion,
                &jsonwebtoken::DecodingKey::from_rsa_der(&public),
                &validation,
            )
            .map_err(|err| err.to_string())?
            .claims;
            if claims["scope"] != "https://www.googleapis.com/auth/cloud-platform" {
                return Err("wrong scope".to_owned());
            }
            if claims.get("target_audience").is_some() {
                return Err("asks for an ID token".to_owned());
            }
            Ok(())
        }));
        let fake_server = fake.start().await;
        let token_uri = format!("http://{}/token", fake_server.addr());
        google.set(token_uri.clone()).expect("once");
        let key: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(key_file(&token_uri).await).expect("read key"),
        )
        .expect("json");
        let dir = write_in_fresh_dir("adc.json", &impersonated_file(key));
        let receiver = FakeReceiver::hello();
        let receiver_server = receiver.start().await;
        let source = source_from(&[
            (
                "GOOGLE_APPLICATION_CREDENTIALS",
                dir.join("adc.json").to_str().expect("utf-8").to_owned(),
            ),
            (
                "IAM_CREDENTIALS_ENDPOINT",
                format!("http://{}", fake_server.addr()),
            ),
        ]);
        assert_eq!(source.name(), "impersonate");
        let sender = sender_with(source, &receiver_server, |_| {}).await;

        let response = client()
            .get(root(sender.addr()))
            .send()
            .await
            .expect("response");
        let status = response.status();
        assert_eq!(
            status,
            StatusCode::OK,
            "{}",
            response.text().await.expect("body")
        );
        let audience = format!("http://{}", receiver_server.addr());
        assert_eq!(
            receiver.authorizations(),
            vec![Some(format!("Bearer {}", id_token_for(&audience)))]
        );
        assert_eq!(calls(&fake), (1, 1));
    })
    .await;
}

#[tokio::test]
async fn an_impersonated_file_with_user_credentials_refreshes_them_and_mints() {
    bounded(async {
        let fake = FakeGoogle::new(impersonated_answers(is_user_refresh));
        let fake_server = fake.start().await;
        let token_uri = format!("http://{}/token", fake_server.addr());
        // gcloud's well-known file, found as `auto` finds it.
        let dir = write_in_fresh_dir(
            "application_default_credentials.json",
            &impersonated_file(user_source(&token_uri)),
        );
        let receiver = FakeReceiver::hello();
        let receiver_server = receiver.start().await;
        let source = source_from(&[
            ("CLOUDSDK_CONFIG", dir.to_str().expect("utf-8").to_owned()),
            (
                "IAM_CREDENTIALS_ENDPOINT",
                format!("http://{}/", fake_server.addr()),
            ),
        ]);
        let sender = sender_with(source, &receiver_server, |_| {}).await;
        let response = client()
            .get(root(sender.addr()))
            .send()
            .await
            .expect("response");
        assert_eq!(response.status(), StatusCode::OK);
        let audience = format!("http://{}", receiver_server.addr());
        assert_eq!(
            receiver.authorizations(),
            vec![Some(format!("Bearer {}", id_token_for(&audience)))]
        );
        assert_eq!(calls(&fake), (1, 1));
    })
    .await;
}

/// A refresh token the token endpoint refuses (revoked, expired
/// reauthentication): 503 with a fixed phrase; the secrets stay out of it.
#[tokio::test]
async fn refused_user_credentials_are_503_without_their_secrets() {
    bounded(async {
        let fake = FakeGoogle::new(impersonated_answers(|_| {
            Err("Token has been expired or revoked.".to_owned())
        }));
        let fake_server = fake.start().await;
        let token_uri = format!("http://{}/token", fake_server.addr());
        let dir = write_in_fresh_dir("adc.json", &impersonated_file(user_source(&token_uri)));
        let receiver = FakeReceiver::hello();
        let receiver_server = receiver.start().await;
        let source = source_from(&[
            (
                "GOOGLE_APPLICATION_CREDENTIALS",
                dir.join("adc.json").to_str().expect("utf-8").to_owned(),
            ),
            (
                "IAM_CREDENTIALS_ENDPOINT",
                format!("http://{}/", fake_server.addr()),
            ),
        ]);
        let sender = sender_with(source, &receiver_server, |_| {}).await;
        let response = client()
            .get(root(sender.addr()))
            .send()
            .await
            .expect("response");
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = response.text().await.expect("body");
        assert_eq!(
            body,
            "could not get an ID token: the caller's token endpoint refused\n"
        );
        for secret in ["refresh-token", "client-secret", "expired or revoked"] {
            assert!(!body.contains(secret), "{body}");
        }
        assert_eq!(receiver.request_count(), 0);
    })
    .await;
}

/// The real binary, configured only by its environment as a user runs it
/// after `gcloud auth application-default login
/// --impersonate-service-account`.
#[tokio::test]
async fn the_binary_impersonates_with_gclouds_well_known_file() {
    bounded(async {
        let fake = FakeGoogle::new(impersonated_answers(is_user_refresh));
        let fake_server = fake.start().await;
        let token_uri = format!("http://{}/token", fake_server.addr());
        let dir = write_in_fresh_dir(
            "application_default_credentials.json",
            &impersonated_file(user_source(&token_uri)),
        );
        let receiver = FakeReceiver::hello();
        let receiver_server = receiver.start().await;
        let mut child = crate::binary::sender()
            .env("RECEIVING_SERVICE_URL", root(receiver_server.addr()))
            .env("CLOUDSDK_CONFIG", &dir)
            .env(
                "IAM_CREDENTIALS_ENDPOINT",
                format!("http://{}/", fake_server.addr()),
            )
            .spawn()
            .expect("spawn");
        let (addr, _logs) = crate::binary::listening(&mut child).await;
        let response = client().get(root(addr)).send().await.expect("response");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.text().await.expect("body"),
            format!("{}{}", sender::PREFIX, receiver::HELLO)
        );
        assert_eq!(calls(&fake), (1, 1));
        crate::binary::sigterm(&child);
        assert!(child.wait().await.expect("status").success());
    })
    .await;
}

/// The library with an impersonated credentials file whose source is
/// gcloud's user credentials, against the fake token endpoint and IAM API.
async fn impersonating_library() -> (Arc<FakeGoogle>, Spawned, sender::IdTokenSource) {
    let fake = FakeGoogle::new(impersonated_answers(is_user_refresh));
    let fake_server = fake.start().await;
    let token_uri = format!("http://{}/token", fake_server.addr());
    let dir = write_in_fresh_dir("adc.json", &impersonated_file(user_source(&token_uri)));
    let adc = dir.join("adc.json").to_str().expect("utf-8").to_owned();
    let iam = format!("http://{}/", fake_server.addr());
    let env = cloud_run::testing::env(&[
        ("GOOGLE_APPLICATION_CREDENTIALS", &adc),
        ("IAM_CREDENTIALS_ENDPOINT", &iam),
    ]);
    let tokens = sender::IdTokenSource::from_env_with(&env)
        .await
        .expect("source");
    (fake, fake_server, tokens)
}

/// The library with an impersonated credentials file: one access token
/// from the source credentials serves the ID tokens of every audience.
#[tokio::test]
async fn the_library_reuses_the_callers_access_token_across_audiences() {
    bounded(async {
        let (fake, _fake_server, tokens) = impersonating_library().await;
        for audience in [
            "https://a.example",
            "https://b.example",
            "https://a.example",
        ] {
            let token = tokens.token(audience).await.expect("token");
            assert_eq!(
                token.bearer().to_str().ok(),
                Some(&*format!("Bearer {}", id_token_for(audience)))
            );
        }
        assert_eq!(calls(&fake), (1, 2));
    })
    .await;
}

/// Several audiences asked for at once, with no access token yet: one
/// exchange at the caller's token endpoint serves them all.
#[tokio::test]
async fn concurrent_audiences_share_one_exchange_for_the_callers_access_token() {
    bounded(async {
        let (fake, _fake_server, tokens) = impersonating_library().await;
        let audiences = [
            "https://a.example",
            "https://b.example",
            "https://c.example",
        ];
        let fetched = futures_join_all(audiences.map(|audience| {
            let tokens = tokens.clone();
            async move { tokens.token(audience).await.map(|_| ()) }
        }))
        .await;
        assert!(fetched.iter().all(Result::is_ok), "{fetched:?}");
        assert_eq!(calls(&fake), (1, 3), "one access token, three ID tokens");
    })
    .await;
}

/// Runs the futures concurrently on this task and collects their outputs.
async fn futures_join_all<F: std::future::Future>(futures: [F; 3]) -> Vec<F::Output> {
    let [a, b, c] = futures;
    let (a, b, c) = tokio::join!(a, b, c);
    vec![a, b, c]
}
