//! The sending service: `GET /` fetches an ID token for the receiver (cached
//! until shortly before it expires), calls the receiver with it, and answers
//! `Response from receiving service: <receiver's body>` with the receiver's
//! status.

pub mod config;
pub mod relay;
pub mod token;

use std::{future::Future, net::SocketAddr, sync::Arc};

use cloud_run::metadata::MetadataClient;
use tokio::net::TcpListener;
use tracing::info;

pub use config::{Config, TokenHeader, TokenSource};
pub use relay::{Relay, PREFIX};
pub use token::{IdToken, TokenCache};

/// Why the sender cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The HTTP client could not be built (usually: no CA certificates).
    #[error("cannot build the HTTP client")]
    Client(#[source] reqwest::Error),
    /// `GCE_METADATA_HOST` is unusable.
    #[error("GCE_METADATA_HOST: not host[:port]")]
    MetadataHost,
}

/// A sender ready to serve: settings checked, HTTP client built.
#[derive(Debug)]
pub struct Sender {
    config: Config,
    http: reqwest::Client,
    relay: Arc<Relay>,
}

impl Sender {
    /// Builds the process's one HTTP client and the relay around it.
    pub fn new(config: Config) -> Result<Self, StartError> {
        let http = cloud_run::client::build(config.connect_timeout).map_err(StartError::Client)?;
        let tokens = match config.token_source {
            TokenSource::None => None,
            TokenSource::Metadata => {
                let metadata = MetadataClient::new(
                    &config.metadata_host,
                    http.clone(),
                    config.metadata_timeout,
                )
                .ok_or(StartError::MetadataHost)?;
                Some(TokenCache::new(
                    token::Fetcher::Metadata(metadata),
                    config.audience.clone(),
                    config.refresh,
                ))
            }
        };
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
            token_source = ?config.token_source,
            token_header = ?config.token_header,
            metadata_host = %config.metadata_host,
            request_timeout = ?config.request_timeout,
            shutdown_grace = ?config.server.shutdown_grace,
            "sender starting"
        );
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
    Sender::new(config)?.run(listener, shutdown).await;
    Ok(())
}
