//! A client for the parts of the GCE metadata server this project reads: ID
//! tokens, the project id and number, the region. Plain HTTP to `GCE_METADATA_HOST` (default
//! `metadata.google.internal`), as Google's own libraries do.

use std::time::Duration;

use http::{HeaderValue, StatusCode};
use reqwest::Url;

use crate::{
    client::{one_line, read_capped, BodyError},
    config::{ConfigError, Lookup},
};

/// The metadata server's name on Google Cloud.
pub const DEFAULT_HOST: &str = "metadata.google.internal";

/// Metadata answers are small; anything bigger is not what we asked for.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Reads `GCE_METADATA_HOST` (`host[:port]`, no scheme), or the default.
pub fn host_from_env(env: Lookup<'_>) -> Result<String, ConfigError> {
    let host = env("GCE_METADATA_HOST").unwrap_or_else(|| DEFAULT_HOST.to_owned());
    base_url(&host)
        .map(|_| host.clone())
        .ok_or_else(|| ConfigError::new("GCE_METADATA_HOST", format!("not host[:port]: {host:?}")))
}

fn base_url(host: &str) -> Option<Url> {
    if host.contains(['/', '?', '#', '@']) {
        return None;
    }
    let url = Url::parse(&format!("http://{host}/computeMetadata/v1/")).ok()?;
    url.host().is_some().then_some(url)
}

/// Why a metadata request failed. Each maps to "the sender's own dependency
/// is down", never to the receiver's fault.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    /// No connection could be made.
    #[error("metadata server unreachable")]
    Unreachable(#[source] reqwest::Error),
    /// It did not answer within the timeout.
    #[error("metadata server did not answer in time")]
    Timeout,
    /// It answered with a status other than success (a redirect included:
    /// none is followed). `text` is the start of its answer, for logs only.
    #[error("metadata server answered {status}: {text:?}")]
    Status {
        /// Its status code.
        status: StatusCode,
        /// The start of its body, one line.
        text: String,
    },
    /// Its answer broke off or was too large.
    #[error("metadata server's answer was unreadable")]
    Body(#[source] BodyError),
    /// Its answer was not UTF-8 text.
    #[error("metadata server's answer was not text")]
    NotText,
}

/// A metadata server at one host.
#[derive(Debug, Clone)]
pub struct MetadataClient {
    base: Url,
    http: reqwest::Client,
    timeout: Duration,
}

impl MetadataClient {
    /// A client for `host` (as [`host_from_env`] returns it) whose calls each
    /// give up after `timeout`. `None` if `host` is not `host[:port]`.
    pub fn new(host: &str, http: reqwest::Client, timeout: Duration) -> Option<Self> {
        Some(Self {
            base: base_url(host)?,
            http,
            timeout,
        })
    }

    /// An OIDC ID token for `audience`, as the default service account. With
    /// `format=full`, so the token carries `email` and `email_verified`.
    pub async fn identity_token(&self, audience: &str) -> Result<String, MetadataError> {
        let mut url = self.url("instance/service-accounts/default/identity");
        url.query_pairs_mut()
            .append_pair("audience", audience)
            .append_pair("format", "full");
        self.get(url).await
    }

    /// The default service account's email.
    pub async fn email(&self) -> Result<String, MetadataError> {
        self.get(self.url("instance/service-accounts/default/email"))
            .await
    }

    /// The id of the project the instance runs in.
    pub async fn project_id(&self) -> Result<String, MetadataError> {
        self.get(self.url("project/project-id")).await
    }

    /// The number of the project the instance runs in.
    pub async fn numeric_project_id(&self) -> Result<String, MetadataError> {
        self.get(self.url("project/numeric-project-id")).await
    }

    /// The instance's region, as `projects/NUMBER/regions/REGION`.
    pub async fn region(&self) -> Result<String, MetadataError> {
        self.get(self.url("instance/region")).await
    }

    fn url(&self, path: &str) -> Url {
        let mut url = self.base.clone();
        url.set_path(&format!("{}{path}", self.base.path()));
        url
    }

    async fn get(&self, url: Url) -> Result<String, MetadataError> {
        let response = self
            .http
            .get(url)
            .header("metadata-flavor", HeaderValue::from_static("Google"))
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|err| {
                if err.is_timeout() {
                    MetadataError::Timeout
                } else {
                    MetadataError::Unreachable(err)
                }
            })?;
        let status = response.status();
        if !status.is_success() {
            // What it said is worth a log line; a broken body is not worth
            // another error.
            let text = read_capped(response, MAX_ANSWER_BYTES)
                .await
                .map(|body| one_line(&body))
                .unwrap_or_default();
            return Err(MetadataError::Status { status, text });
        }
        let body = read_capped(response, MAX_ANSWER_BYTES)
            .await
            .map_err(|err| match err {
                BodyError::Read(e) if e.is_timeout() => MetadataError::Timeout,
                err => MetadataError::Body(err),
            })?;
        String::from_utf8(body.to_vec())
            .map(|s| s.trim().to_owned())
            .map_err(|_| MetadataError::NotText)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_validation() {
        let env = |v: &'static str| move |k: &str| (k == "GCE_METADATA_HOST").then(|| v.to_owned());
        assert_eq!(host_from_env(&|_| None).as_deref(), Ok(DEFAULT_HOST));
        assert_eq!(
            host_from_env(&env("127.0.0.1:8999")).as_deref(),
            Ok("127.0.0.1:8999")
        );
        assert!(host_from_env(&env("http://127.0.0.1:8999")).is_err());
        assert!(host_from_env(&env("host/path")).is_err());
        assert!(host_from_env(&env("host:notaport")).is_err());
    }

    #[tokio::test]
    async fn a_redirect_is_an_error_not_followed() {
        use tokio::{
            io::{AsyncReadExt, AsyncWriteExt},
            net::TcpListener,
        };
        tokio::time::timeout(Duration::from_secs(10), async {
            let elsewhere = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let elsewhere_addr = elsewhere.local_addr().expect("addr");
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("addr");
            tokio::spawn(async move {
                while let Ok((mut conn, _)) = listener.accept().await {
                    let mut buf = [0u8; 4096];
                    let _ = conn.read(&mut buf).await;
                    let answer = format!(
                        "HTTP/1.1 302 Found\r\nlocation: http://{elsewhere_addr}/token\r\ncontent-length: 5\r\nconnection: close\r\n\r\nmoved"
                    );
                    let _ = conn.write_all(answer.as_bytes()).await;
                }
            });
            let http = crate::client::build(Duration::from_secs(2)).expect("client");
            let client =
                MetadataClient::new(&addr.to_string(), http, Duration::from_secs(2)).expect("client");
            let err = client.identity_token("aud").await.expect_err("a redirect is no token");
            assert!(
                matches!(&err, MetadataError::Status { status, text } if *status == StatusCode::FOUND && text == "moved"),
                "{err:?}"
            );
            // Nothing ever connected to where the redirect pointed.
            let accepted =
                tokio::time::timeout(Duration::from_millis(50), elsewhere.accept()).await;
            assert!(accepted.is_err(), "the redirect was followed");
        })
        .await
        .expect("test took too long");
    }

    #[test]
    fn identity_url() {
        let http = reqwest::Client::new();
        let c = MetadataClient::new("127.0.0.1:1", http, Duration::from_secs(1)).expect("client");
        assert_eq!(
            c.url("project/project-id").as_str(),
            "http://127.0.0.1:1/computeMetadata/v1/project/project-id"
        );
    }
}
