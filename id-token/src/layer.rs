//! The verifier as a tower layer, for any axum, tonic or hyper service: it
//! answers a refused request itself, exactly as the receiver does (401, 403
//! or 503 with the same body and headers), and hands an admitted one on
//! with its [`Caller`] in the extensions and the handler running in the
//! caller's span.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use cloud_run::{Body, ConfigError};
use http::{Request, Response};
use http_body_util::Either;
use tower_layer::Layer;
use tower_service::Service;
use tracing::Instrument as _;

use crate::{
    config::AuthConfig,
    verify::{Caller, Refreshers, Verifier},
};

/// Why [`RequireGoogleIdToken::from_config`] cannot build the layer.
#[derive(Debug, thiserror::Error)]
pub enum LayerStartError {
    /// A setting is wrong, or `AUTH_AUDIENCE=auto` cannot be resolved.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The HTTP client for the key endpoints could not be built (usually:
    /// no CA certificates).
    #[error("cannot build the HTTP client")]
    Client(#[source] reqwest::Error),
}

/// A [`tower_layer::Layer`] that admits only callers with a valid Google ID
/// token (or IAP assertion) from the allowlist, per an [`AuthConfig`].
///
/// A refused request is answered by the layer: 401 (with the RFC 6750
/// challenge for a bearer token), 403 for a caller not allowed, 503 with
/// `Retry-After` while no signing keys are held. An admitted one reaches
/// the inner service with its [`Caller`] in `req.extensions()`, inside a
/// debug-level `caller` span.
///
/// ```
/// use id_token::{AuthConfig, Caller, RequireGoogleIdToken};
///
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// # let env = |name: &str| match name {
/// #     "AUTH_AUDIENCE" => Some("https://receiver.example.com".to_owned()),
/// #     "AUTH_ALLOWED_INVOKERS" => Some("sender@p.iam.gserviceaccount.com".to_owned()),
/// #     // Nothing leaves this machine.
/// #     "AUTH_JWKS_URL" => Some("http://127.0.0.1:9/certs".to_owned()),
/// #     _ => None,
/// # };
/// // From the AUTH_* variables (here a stand-in for the environment).
/// let config = AuthConfig::from_env(&env)?.expect("AUTH_AUDIENCE is set");
/// let layer = RequireGoogleIdToken::from_config(config).await?;
///
/// // Any tower service of `http::Request`s: here a plain function.
/// let hello = tower_service_fn(|req: http::Request<()>| async move {
///     let email = req.extensions().get::<Caller>().and_then(|c| c.email.clone());
///     Ok::<_, std::convert::Infallible>(http::Response::new(cloud_run::Body::from(format!(
///         "Hello, {}!",
///         email.unwrap_or_default()
///     ))))
/// });
/// let mut service = tower_layer::Layer::layer(&layer, hello);
///
/// // No token: refused by the layer, as the receiver refuses it.
/// let response = tower_service::Service::call(&mut service, http::Request::new(())).await?;
/// assert_eq!(response.status(), 401);
/// # Ok(())
/// # }
/// # #[derive(Clone)]
/// # struct ServiceFn<F>(F);
/// # fn tower_service_fn<F>(f: F) -> ServiceFn<F> { ServiceFn(f) }
/// # impl<F, Fut, B, R> tower_service::Service<http::Request<B>> for ServiceFn<F>
/// # where F: FnMut(http::Request<B>) -> Fut, Fut: std::future::Future<Output = Result<R, std::convert::Infallible>> {
/// #     type Response = R;
/// #     type Error = std::convert::Infallible;
/// #     type Future = Fut;
/// #     fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> { std::task::Poll::Ready(Ok(())) }
/// #     fn call(&mut self, req: http::Request<B>) -> Fut { (self.0)(req) }
/// # }
/// # tokio::runtime::Runtime::new().unwrap().block_on(example()).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct RequireGoogleIdToken {
    verifier: Arc<Verifier>,
    /// Keeps the keys fresh while any copy of the layer or its services
    /// lives.
    _refreshers: Option<Arc<Refreshers>>,
}

impl RequireGoogleIdToken {
    /// The layer for `config`, as the receiver builds its verifier:
    /// `AUTH_AUDIENCE=auto` resolved ([`AuthConfig::resolve`]), and the
    /// signing keys fetched in the background from now on, for as long as
    /// the layer (or a service it made) lives. Needs a tokio runtime.
    pub async fn from_config(config: AuthConfig) -> Result<Self, LayerStartError> {
        let http =
            cloud_run::client::build(config.keys.fetch_timeout).map_err(LayerStartError::Client)?;
        let config = config.resolve(&http).await?;
        let verifier = Arc::new(Verifier::new(config, http));
        let refreshers = Arc::new(verifier.spawn_refreshers());
        Ok(Self {
            verifier,
            _refreshers: Some(refreshers),
        })
    }

    /// The layer for a verifier whose keys the caller keeps fresh
    /// ([`Verifier::spawn_refreshers`]), or leaves to be fetched on demand.
    pub fn new(verifier: Arc<Verifier>) -> Self {
        Self {
            verifier,
            _refreshers: None,
        }
    }

    /// The verifier, e.g. for a readiness check ([`Verifier::readiness`]).
    pub fn verifier(&self) -> &Arc<Verifier> {
        &self.verifier
    }
}

impl<S> Layer<S> for RequireGoogleIdToken {
    type Service = GoogleIdTokenService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GoogleIdTokenService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`RequireGoogleIdToken`] wraps around `S`. Its responses
/// are the inner service's (`Either::Left`) or its own refusals
/// (`Either::Right`).
#[derive(Debug, Clone)]
pub struct GoogleIdTokenService<S> {
    inner: S,
    layer: RequireGoogleIdToken,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for GoogleIdTokenService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
{
    type Response = Response<Either<ResBody, Body>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        // The clone is not ready; the one that is goes with this request.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let verifier = Arc::clone(&self.layer.verifier);
        Box::pin(async move {
            match verifier.check_request(&mut req).await {
                Ok(caller) => {
                    let span = Caller::span(&caller);
                    let response = inner.call(req).instrument(span).await?;
                    Ok(response.map(Either::Left))
                }
                Err(refused) => Ok(refused.response().map(Either::Right)),
            }
        })
    }
}
