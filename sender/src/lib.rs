//! The sending service: `GET /` fetches an ID token for the receiver (cached
//! until shortly before it expires), calls the receiver with it, and answers
//! `Response from receiving service: <receiver's body>` with the receiver's
//! status.
//!
//! `GET /ready` answers 200 once the sender holds a token (at once with
//! `ID_TOKEN_SOURCE=none`), 503 with the reason before; it fetches its first
//! token at start, without a request, and keeps trying until it has one.
//!
//! The token sources and cache are a library too: [`IdTokenSource`] gets ID
//! tokens for code that is not this sender.
//!
//! Modules, each building only on those listed before it: `token` (the ID
//! token and its errors), `renewal` (when to renew), `sources` (where tokens
//! come from), `cache` (one token per audience, one fetch at a time),
//! `id_token_source` (the library: a source and its caches), `config`,
//! `relay`.

mod cache;
mod config;
mod id_token_source;
mod relay;
mod renewal;
mod sources;
mod token;

use std::{future::Future, sync::Arc};

use cloud_run::response::Chain;
use tokio::net::TcpListener;
use tracing::{info, warn};

pub use config::{Config, TokenHeader};
pub use id_token_source::IdTokenSource;
pub use relay::PREFIX;
pub use renewal::RefreshPolicy;
pub use sources::{Impersonation, ServiceAccountKey, SourceError, TokenSource};
pub use token::{IdToken, TokenError, Upstream};

use relay::Relay;
use sources::Endpoints;

/// Why the sender cannot start.
#[derive(Debug, thiserror::Error)]
pub enum SenderStartError {
    /// A setting is missing or malformed.
    #[error(transparent)]
    Config(#[from] cloud_run::ConfigError),
    /// The HTTP client could not be built (usually: no CA certificates).
    #[error("cannot build the HTTP client")]
    Client(#[source] reqwest::Error),
    /// The token source cannot be used.
    #[error(transparent)]
    Source(#[from] SourceError),
}

/// A sender ready to serve: settings checked, HTTP client built, token
/// source connected.
#[derive(Debug)]
pub struct Sender {
    config: Config,
    http: reqwest::Client,
    relay: Arc<Relay>,
}

impl Sender {
    /// Builds the process's one HTTP client, connects the token source and
    /// puts the relay around them. Async because finding the caller's
    /// credentials for impersonation may ask the metadata server.
    pub async fn new(config: Config) -> Result<Self, SenderStartError> {
        let http =
            cloud_run::client::build(config.connect_timeout).map_err(SenderStartError::Client)?;
        let endpoints = Endpoints {
            metadata_host: &config.metadata_host,
            metadata_timeout: config.metadata_timeout,
            token_endpoint_timeout: config.token_endpoint_timeout,
        };
        let tokens = IdTokenSource::connect(&config.token_source, &http, endpoints, config.refresh)
            .await?
            .map(|source| source.cache(&config.audience));
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
}

impl cloud_run::Service for Sender {
    fn addr(&self) -> std::net::SocketAddr {
        self.config.server.addr
    }

    fn http(&self) -> Option<reqwest::Client> {
        Some(self.http.clone())
    }

    /// Serves on `listener` until `shutdown` resolves, then drains.
    async fn run(self, listener: TcpListener, shutdown: impl Future<Output = ()> + Send + 'static) {
        let Self { config, relay, .. } = self;
        info!(
            receiver = %config.receiver_url,
            audience = %config.audience,
            token_source = config.token_source.name(),
            identity = config.token_source.identity(),
            impersonated_by = config.token_source.caller(),
            token_header = ?config.token_header,
            metadata_host = %config.metadata_host,
            request_timeout = ?config.request_timeout,
            shutdown_grace = ?config.server.shutdown_grace,
            "sender starting"
        );
        if cloud_run::url::is_cleartext_to_remote(&config.receiver_url)
            && !matches!(config.token_source, TokenSource::None)
        {
            // Allowed, for a proxy or sidecar on the pod's network; but the
            // token is a bearer credential for its whole lifetime.
            warn!(
                receiver = %config.receiver_url,
                "RECEIVING_SERVICE_URL is plain http to a host that is not loopback: the ID token travels in clear text"
            );
        }
        if let Some(metadata) = relay.metadata() {
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
        if config.fetch_at_start {
            // Spawned: `listening` is not delayed, and the first caller
            // finds the token already there, or its fetch under way.
            relay.fetch_at_start();
        }
        let handler = move |req| {
            let relay = Arc::clone(&relay);
            async move { relay.handle(req).await }
        };
        cloud_run::serve(listener, &config.server, handler, shutdown).await;
    }
}
