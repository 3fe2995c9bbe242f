//! The receiving service: answers `GET /` with the tutorial's greeting, and,
//! when configured to, only to callers presenting a valid Google ID token
//! (or IAP assertion); `GET /ready` says whether it can serve.

mod config;

use std::{future::Future, sync::Arc};

use cloud_run::{
    response::{readiness, route, text, Route},
    Body,
};
use http::{Request, Response, StatusCode};
use tokio::net::TcpListener;
use tracing::{debug, info, warn, Instrument as _};

pub use config::Config;
// Verification lives in `id-token`, which cloud-run-ingress shares; these
// are what configuring and embedding the receiver needs of it.
pub use id_token::{
    AuthConfig, AuthError, Caller, Clock, IapConfig, Invokers, KeyPolicy, Mechanism,
    RequireGoogleIdToken, Verifier,
};

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
    /// `AUTH_AUDIENCE=auto` is resolved here, from the metadata server
    /// ([`AuthConfig::resolve`]), so this waits for it.
    pub async fn new(mut config: Config) -> Result<Self, ReceiverStartError> {
        let verifier = match config.auth.take() {
            None => None,
            Some(auth) => {
                let http = cloud_run::client::build(auth.keys.fetch_timeout)
                    .map_err(ReceiverStartError::Client)?;
                let auth = auth.resolve(&http).await?;
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
                iap_audiences = ?v.iap_audiences(),
                iap_jwks_url = v.iap_keys().map(|k| k.url().as_str()),
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
        let _refreshers = verifier.as_ref().map(|v| v.spawn_refreshers());
        let handler = move |req| {
            let verifier = verifier.clone();
            async move { handle(req, verifier.as_deref()).await }
        };
        cloud_run::serve(listener, &config.server, handler, shutdown).await;
    }
}

async fn handle<B>(mut req: Request<B>, verifier: Option<&Verifier>) -> Response<Body> {
    match route(&req) {
        Route::Root => {}
        Route::Ready => {
            // Before any check: a startup probe carries no token.
            let ready = verifier.map_or(Ok(()), Verifier::readiness);
            return readiness(ready.as_ref().map_err(String::as_str).copied());
        }
        Route::Answered(response) => return response,
    }
    let Some(verifier) = verifier else {
        return hello(req).await;
    };
    match verifier.check_request(&mut req).await {
        Ok(caller) => hello(req).instrument(caller.span()).await,
        Err(refused) => refused.response(),
    }
}

/// The service itself, once a caller is admitted: the verified caller is in
/// the request's extensions.
async fn hello<B>(req: Request<B>) -> Response<Body> {
    if let Some(caller) = req.extensions().get::<Caller>() {
        debug!(mechanism = %caller.mechanism, "greeting the caller");
    }
    text(StatusCode::OK, HELLO)
}
