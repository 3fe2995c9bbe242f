//! The receiving service: answers `GET /` with the tutorial's greeting, and,
//! when configured to, only to callers presenting a valid Google ID token.

mod config;

use std::{future::Future, sync::Arc};

use cloud_run::{
    response::{route_root, text},
    Body,
};
use http::{Request, Response, StatusCode};
use tokio::{net::TcpListener, task::JoinHandle};
use tracing::{debug, info, warn};

pub use config::Config;
// Verification lives in `id-token`, which cloud-run-ingress shares; these
// are what configuring and embedding the receiver needs of it.
pub use id_token::{AuthConfig, AuthError, Caller, Clock, Invokers, KeyPolicy, Verifier};

/// The tutorial's exact answer, without a trailing newline.
pub const HELLO: &str = "Hello from the receiving service!";

/// Why the receiver cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ReceiverStartError {
    /// A setting is missing or malformed.
    #[error(transparent)]
    Config(#[from] cloud_run::ConfigError),
    /// The HTTP client for the key endpoint could not be built (usually: no
    /// CA certificates).
    #[error("cannot build the HTTP client")]
    Client(#[source] reqwest::Error),
}

/// A receiver ready to serve: settings checked, key fetcher built.
#[derive(Debug)]
pub struct Receiver {
    config: Config,
    verifier: Option<Arc<Verifier>>,
}

impl Receiver {
    /// A receiver that verifies tokens per `config.auth`, or lets everyone
    /// in (leaving protection to Cloud Run's IAM check) when it is `None`.
    pub fn new(mut config: Config) -> Result<Self, ReceiverStartError> {
        let verifier = match config.auth.take() {
            None => None,
            Some(auth) => {
                let http = cloud_run::client::build(auth.keys.fetch_timeout)
                    .map_err(ReceiverStartError::Client)?;
                Some(Arc::new(Verifier::new(auth, http)))
            }
        };
        Ok(Self { config, verifier })
    }

    /// The verifier, when tokens are verified.
    pub fn verifier(&self) -> Option<&Arc<Verifier>> {
        self.verifier.as_ref()
    }
}

impl cloud_run::Service for Receiver {
    fn addr(&self) -> std::net::SocketAddr {
        self.config.server.addr
    }

    /// Serves on `listener` until `shutdown` resolves, then drains. The
    /// signing keys are fetched in the background; until they arrive,
    /// requests with a token get 503.
    async fn run(self, listener: TcpListener, shutdown: impl Future<Output = ()> + Send + 'static) {
        let Self { config, verifier } = self;
        match &verifier {
            None => info!(
                shutdown_grace = ?config.server.shutdown_grace,
                verification = "off",
                "receiver starting"
            ),
            Some(v) => info!(
                shutdown_grace = ?config.server.shutdown_grace,
                verification = "on",
                audiences = ?v.audiences(),
                issuers = ?v.issuers(),
                jwks_url = %v.jwks_url(),
                allowed_invokers = v.allowed_count(),
                "receiver starting"
            ),
        }
        if verifier
            .as_ref()
            .is_some_and(|v| v.allowed_count().is_none())
        {
            warn!(
                "AUTH_ALLOWED_INVOKERS=*: any Google account's ID token for the audience gets in, \
                 since anyone can mint one; list the callers' emails to let in only them"
            );
        }
        let _refresher = verifier
            .as_ref()
            .map(|v| AbortOnDrop(v.keys().spawn_refresher()));
        let handler = move |req| {
            let verifier = verifier.clone();
            async move { handle(req, verifier.as_deref()).await }
        };
        cloud_run::serve(listener, &config.server, handler, shutdown).await;
    }
}

async fn handle<B>(req: Request<B>, verifier: Option<&Verifier>) -> Response<Body> {
    if let Some(response) = route_root(&req) {
        return response;
    }
    if let Some(verifier) = verifier {
        match verifier.check(req.headers()).await {
            Ok(caller) => debug!(
                caller = caller.email.as_deref().unwrap_or("-"),
                email_verified = caller.email_verified,
                "verified caller"
            ),
            Err(err) => {
                debug!(%err, "request refused");
                return err.response();
            }
        }
    }
    text(StatusCode::OK, HELLO)
}

/// Stops the background key refresh when the server returns.
#[derive(Debug)]
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
