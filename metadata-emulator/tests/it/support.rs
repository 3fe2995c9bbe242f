//! Helpers shared by the emulator's tests.

use cloud_run::Service as _;
use std::net::SocketAddr;

use cloud_run::testing::Spawned;
use jsonwebtoken::{DecodingKey, Validation};
use metadata_emulator::{Config, Emulator, SigningKeys};
use tokio::net::TcpListener;

/// Test-only keys (see `tests/keys/README.md`).
pub(crate) const KEY_1: &str = include_str!("../keys/test-key-1.pkcs8.pem");
pub(crate) const KEY_1_PKCS1: &str = include_str!("../keys/test-key-1.pkcs1.pem");
pub(crate) const KEY_2: &str = include_str!("../keys/test-key-2.pkcs8.pem");

/// The path of a test key file.
pub(crate) fn key_path(name: &str) -> String {
    format!("{}/tests/keys/{name}", env!("CARGO_MANIFEST_DIR"))
}

pub(crate) use cloud_run::testing::{bounded, loopback as server_config};

/// Emulator settings for tests: the default identity on 127.0.0.1:0.
pub(crate) fn config() -> Config {
    let mut config = Config::new(0);
    config.server = server_config();
    config
}

/// The emulator with `config`, signing with `keys`, in-process.
pub(crate) async fn start_with(config: Config, keys: SigningKeys) -> Spawned {
    let emulator = Emulator::with_keys(config, keys);
    let listener = TcpListener::bind(emulator.addr()).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    Spawned::new(addr, move |stop| emulator.run(listener, stop))
}

/// The emulator with test settings, signing with test key 1.
pub(crate) async fn emulator() -> Spawned {
    start_with(config(), key_set(&[KEY_1])).await
}

/// A key set of these PEMs.
pub(crate) fn key_set(pems: &[&str]) -> SigningKeys {
    SigningKeys::from_pems(pems.iter().map(|pem| ("test key", *pem))).expect("test keys")
}

/// An HTTP client that never goes through a proxy, nor follows redirects.
pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// `http://ADDR/PATH`.
pub(crate) fn url(addr: SocketAddr, path: &str) -> String {
    format!("http://{addr}{path}")
}

/// The identity path for `audience` and `format`.
pub(crate) fn identity_path(audience: &str, format: &str) -> String {
    let mut url = reqwest::Url::parse(
        "http://x/computeMetadata/v1/instance/service-accounts/default/identity",
    )
    .expect("url");
    url.query_pairs_mut()
        .append_pair("audience", audience)
        .append_pair("format", format);
    format!("{}?{}", url.path(), url.query().unwrap_or(""))
}

/// `GET` with `Metadata-Flavor: Google`: status, content type and body.
pub(crate) async fn metadata_get(
    addr: SocketAddr,
    path: &str,
) -> (reqwest::StatusCode, String, String) {
    let response = client()
        .get(url(addr, path))
        .header("Metadata-Flavor", "Google")
        .send()
        .await
        .expect("response");
    assert_eq!(response.headers()["metadata-flavor"], "Google", "{path}");
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().expect("ascii").to_owned())
        .unwrap_or_default();
    (status, content_type, response.text().await.expect("body"))
}

/// An ID token for `audience` from the emulator at `addr`.
pub(crate) async fn id_token(addr: SocketAddr, audience: &str, format: &str) -> String {
    let (status, _, body) = metadata_get(addr, &identity_path(audience, format)).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Verifies `token` against the JWKS at `addr` with jsonwebtoken (not the
/// emulator's own code): signature by `kid`, `aud`, `iss`, `exp`.
pub(crate) async fn verify(
    addr: SocketAddr,
    token: &str,
    audience: &str,
) -> Result<serde_json::Value, jsonwebtoken::errors::Error> {
    let jwks: jsonwebtoken::jwk::JwkSet = client()
        .get(url(addr, "/oauth2/v3/certs"))
        .send()
        .await
        .expect("jwks")
        .json()
        .await
        .expect("jwks json");
    let header = jsonwebtoken::decode_header(token)?;
    let kid = header.kid.expect("kid");
    let jwk = jwks.find(&kid).expect("kid in the jwks");
    let key = DecodingKey::from_jwk(jwk)?;
    let mut validation = Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_audience(&[audience]);
    validation.set_issuer(&["https://accounts.google.com"]);
    validation.set_required_spec_claims(&["exp", "iss", "aud"]);
    jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation).map(|data| data.claims)
}
