//! The sending service: `GET /` fetches an ID token for the receiver (cached
//! until shortly before it expires), calls the receiver with it, and answers
//! `Response from receiving service: <receiver's body>` with the receiver's
//! status.

pub mod config;
pub mod relay;
pub mod renewal;
pub mod sources;
pub mod token;

use std::{future::Future, net::SocketAddr, sync::Arc};

use cloud_run::metadata::MetadataClient;
use cloud_run::response::Chain;
use sources::Fetcher;
use tokio::net::TcpListener;
use tracing::{info, warn};

pub use config::{Config, TokenHeader, TokenSource};
pub use relay::{Relay, PREFIX};
pub use token::{IdToken, TokenCache};

/// The longest start-up may spend finding the caller's credentials.
const CALLER_LOOKUP: std::time::Duration = std::time::Duration::from_secs(20);

/// Why the sender cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The HTTP client could not be built (usually: no CA certificates).
    #[error("cannot build the HTTP client")]
    Client(#[source] reqwest::Error),
    /// `GCE_METADATA_HOST` is unusable.
    #[error("GCE_METADATA_HOST: not host[:port]")]
    MetadataHost,
    /// No credentials of the caller's own to impersonate with.
    #[error("impersonation needs credentials of the caller's own (gcloud auth application-default login, a key, or the metadata server)")]
    Caller(#[source] gcp_auth::Error),
    /// Finding the caller's credentials took too long.
    #[error("impersonation: finding the caller's own credentials took over 20 s")]
    CallerTimeout,
    /// The service account email does not fit in a URL.
    #[error("IMPERSONATE_SERVICE_ACCOUNT: not usable in a URL")]
    ImpersonateUrl,
    /// The IAM credentials API would be called in clear text.
    #[error("the IAM credentials API URL is plain http to {0}, which is not loopback: the caller's access token would travel in clear text; use https")]
    IamCleartext(String),
}

/// A sender ready to serve: settings checked, HTTP client built.
#[derive(Debug)]
pub struct Sender {
    config: Config,
    http: reqwest::Client,
    relay: Arc<Relay>,
}

impl Sender {
    /// Builds the process's one HTTP client, the token source and the relay
    /// around them. Async because finding the caller's credentials for
    /// impersonation may ask the metadata server.
    pub async fn new(config: Config) -> Result<Self, StartError> {
        let http = cloud_run::client::build(config.connect_timeout).map_err(StartError::Client)?;
        let fetcher = match &config.token_source {
            TokenSource::None => None,
            TokenSource::Metadata => Some(Fetcher::Metadata(
                MetadataClient::new(&config.metadata_host, http.clone(), config.metadata_timeout)
                    .ok_or(StartError::MetadataHost)?,
            )),
            TokenSource::ServiceAccountKey(key) => Some(Fetcher::Key {
                http: http.clone(),
                key: Arc::clone(key),
                timeout: config.token_endpoint_timeout,
            }),
            TokenSource::Impersonate {
                service_account,
                caller_key,
            } => {
                let iam = &config.iam_credentials_url;
                if cloud_run::client::is_cleartext_to_remote(iam) {
                    return Err(StartError::IamCleartext(
                        iam.host_str().unwrap_or_default().to_owned(),
                    ));
                }
                let caller: Arc<dyn gcp_auth::TokenProvider> = match caller_key {
                    Some(path) => Arc::new(
                        gcp_auth::CustomServiceAccount::from_file(path)
                            .map_err(StartError::Caller)?,
                    ),
                    // It may probe the metadata server, whose client has no timeout.
                    None => tokio::time::timeout(CALLER_LOOKUP, gcp_auth::provider())
                        .await
                        .map_err(|_| StartError::CallerTimeout)?
                        .map_err(StartError::Caller)?,
                };
                Some(Fetcher::Impersonate {
                    http: http.clone(),
                    caller,
                    url: Fetcher::generate_id_token_url(
                        &config.iam_credentials_url,
                        service_account,
                    )
                    .ok_or(StartError::ImpersonateUrl)?,
                    timeout: config.token_endpoint_timeout,
                })
            }
        };
        let tokens = fetcher
            .map(|fetcher| TokenCache::new(fetcher, config.audience.clone(), config.refresh));
        let relay = Arc::new(Relay::new(
            http.clone(),
            config.receiver_url.clone(),
            tokens,
            config.token_header,
            config.request_timeout,
            config.max_response_bytes,
        ));
        Ok(Self {
            config,
            http,
            relay,
        })
    }

    /// The HTTP client, for start-up lookups that should share its pool.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The address from the settings, to bind.
    pub fn addr(&self) -> SocketAddr {
        self.config.server.addr
    }

    /// Serves on `listener` until `shutdown` resolves, then drains.
    pub async fn run(self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        let Self { config, relay, .. } = self;
        info!(
            receiver = %config.receiver_url,
            audience = %config.audience,
            token_source = config.token_source.name(),
            identity = identity(&config.token_source),
            token_header = ?config.token_header,
            metadata_host = %config.metadata_host,
            request_timeout = ?config.request_timeout,
            shutdown_grace = ?config.server.shutdown_grace,
            "sender starting"
        );
        if cloud_run::client::is_cleartext_to_remote(&config.receiver_url)
            && !matches!(config.token_source, TokenSource::None)
        {
            // Allowed, for a proxy or sidecar on the pod's network; but the
            // token is a bearer credential for its whole lifetime.
            warn!(
                receiver = %config.receiver_url,
                "RECEIVING_SERVICE_URL is plain http to a host that is not loopback: the ID token travels in clear text"
            );
        }
        if let (TokenSource::Metadata, Some(metadata)) = (&config.token_source, relay.metadata()) {
            // Only the metadata server knows as whom its tokens are minted.
            let metadata = metadata.clone();
            tokio::spawn(async move {
                match metadata.email().await {
                    Ok(email) => info!(%email, "ID tokens from the metadata server"),
                    Err(err) => {
                        warn!(error = %Chain(&err), "cannot ask the metadata server for its service account")
                    }
                }
            });
        }
        let handler = move |req| {
            let relay = Arc::clone(&relay);
            async move { relay.handle(req).await }
        };
        cloud_run::serve(listener, &config.server, handler, shutdown).await;
    }
}

/// Builds a [`Sender`] from `config` and serves it on `listener` until
/// `shutdown` resolves.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    Sender::new(config).await?.run(listener, shutdown).await;
    Ok(())
}

/// As whom tokens are fetched, when known before the first fetch.
fn identity(source: &TokenSource) -> &str {
    match source {
        TokenSource::ServiceAccountKey(key) => key.client_email(),
        TokenSource::Impersonate {
            service_account, ..
        } => service_account,
        TokenSource::Metadata => "the instance's service account",
        TokenSource::None => "nobody",
    }
}
