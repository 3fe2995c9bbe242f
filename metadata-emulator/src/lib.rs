//! A local stand-in for the GCE metadata server. It mints real RS256 ID
//! tokens (Google's claims, signed with its own key) for one service account
//! and publishes the public keys as a JWKS, so the sender can get tokens and
//! the receiver can verify them with no Google Cloud project at all.

mod config;
mod host;
mod identity;
mod keys;
mod routes;

use std::{future::Future, sync::Arc};

use cloud_run::Body;
use http::{Request, Response};
use identity::Account;
use tokio::net::TcpListener;
use tracing::info;

pub use config::{
    parse, Command, Config, UsageError, DEFAULT_EMAIL, DEFAULT_PROJECT_ID, DEFAULT_REGION, HELP,
};
pub use keys::{KeyFileError, SigningKeys};

/// An emulator ready to serve: settings checked, keys loaded.
#[derive(Debug)]
pub struct Emulator {
    config: Config,
    state: Arc<routes::State>,
}

impl Emulator {
    /// Loads the keys in `config.key_files`, or generates one.
    pub fn new(config: Config) -> Result<Self, KeyFileError> {
        let keys = if config.key_files.is_empty() {
            SigningKeys::generate()?
        } else {
            SigningKeys::from_files(&config.key_files)?
        };
        Ok(Self::with_keys(config, keys))
    }

    /// An emulator signing with `keys`, whatever `config.key_files` says.
    pub fn with_keys(config: Config, keys: SigningKeys) -> Self {
        let account = Account::new(&config.email, &config.project_id, config.project_number());
        let state = routes::State::new(account, &config.region, keys, config.token_lifetime);
        Self {
            config,
            state: Arc::new(state),
        }
    }

    /// The keys tokens are signed with.
    pub fn keys(&self) -> &SigningKeys {
        self.state.keys()
    }

    /// The emulator's answer to one request, as [`cloud_run::Service::run`] serves
    /// it: for a test that wraps the emulator, e.g. to count requests.
    pub fn answer<B>(&self, req: &Request<B>) -> Response<Body> {
        routes::answer(&self.state, req)
    }
}

impl cloud_run::Service for Emulator {
    fn addr(&self) -> std::net::SocketAddr {
        self.config.server.addr
    }

    /// Serves on `listener` until `shutdown` resolves, then drains.
    async fn run(self, listener: TcpListener, shutdown: impl Future<Output = ()> + Send + 'static) {
        let Self { config, state } = self;
        info!(
            email = %state.account().email,
            project_id = %state.account().project_id,
            project_number = state.account().project_number,
            region = %config.region,
            kid = %state.keys().kid(),
            published_keys = state.keys().kids().len(),
            token_lifetime = ?config.token_lifetime,
            shutdown_grace = ?config.server.shutdown_grace,
            "metadata emulator starting"
        );
        let handler = move |req| {
            let state = Arc::clone(&state);
            async move { routes::answer(&state, &req) }
        };
        cloud_run::serve(listener, &config.server, handler, shutdown).await;
    }
}
