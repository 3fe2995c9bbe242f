//! `cloud-run-ingress`: a local stand-in for Cloud Run's front end. It checks
//! each caller's ID token against the service's IAM policy, the way Cloud
//! Run does before a request reaches a private service, then forwards to one
//! container, adding what Cloud Run adds (`X-Forwarded-For`, a trace) and
//! stripping the checked token's signature.
//!
//! Modules: `config` (flags and variables), `policy` (the IAM policy and
//! its reloading), `headers` (what the front end does to headers, and its
//! error pages), `forward` (the request's way to the container).

mod config;
mod forward;
mod headers;
mod policy;

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use cloud_run::HttpError as _;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use id_token::{AuthConfig, AuthError, Invokers, Verifier};
use tokio::{net::TcpListener, task::JoinHandle};
use tracing::{debug, info, warn};

pub use config::{parse, Command, Config, DEFAULT_TIMEOUT, HELP};
pub use policy::{Identity, Policy, PolicyError, Verdict};

pub use forward::Deadline;
use forward::Forwarder;
use headers::{bearer, error_page, without_signature};
use policy::Watched;

/// How often the policy file is looked at: a change takes effect within
/// this, well inside the 2 s a `gcloud ... add-iam-policy-binding` takes.
const POLICY_POLL: Duration = Duration::from_millis(500);

/// What the ingress answers with: its own small pages, or the container's
/// answer as it streams, within the request timeout.
pub type IngressBody = Either<Full<Bytes>, Deadline>;

/// Why the ingress cannot start.
#[derive(Debug, thiserror::Error)]
pub enum IngressStartError {
    /// A setting is missing or malformed.
    #[error(transparent)]
    Config(#[from] cloud_run::ConfigError),
    /// The policy file is unusable.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The HTTP client for the key endpoint could not be built.
    #[error("cannot build the HTTP client")]
    Client(#[source] reqwest::Error),
}

/// An ingress ready to serve: settings checked, policy loaded.
#[derive(Debug)]
pub struct Ingress {
    config: Config,
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    verifier: Verifier,
    policy: Watched,
    forwarder: Forwarder,
}

impl Ingress {
    /// Loads the policy (and starts watching it) and builds the clients.
    /// Needs a tokio runtime.
    pub fn new(config: Config) -> Result<Self, IngressStartError> {
        let policy = Watched::start(config.policy.clone(), POLICY_POLL)?;
        let mut auth = AuthConfig::google(config.audiences.clone(), Invokers::Any);
        auth.jwks_url = config.jwks_url.clone();
        let http =
            cloud_run::client::build(auth.keys.fetch_timeout).map_err(IngressStartError::Client)?;
        let forwarder = Forwarder::new(&config.upstream, config.use_http2, config.timeout);
        Ok(Self {
            shared: Arc::new(Shared {
                verifier: Verifier::new(auth, http),
                policy,
                forwarder,
            }),
            config,
        })
    }
}

impl cloud_run::Service for Ingress {
    fn addr(&self) -> SocketAddr {
        self.config.server.addr
    }

    async fn run(self, listener: TcpListener, shutdown: impl Future<Output = ()> + Send + 'static) {
        let Self { config, shared } = self;
        let policy = shared.policy.get();
        info!(
            upstream = %config.upstream,
            audiences = ?config.audiences,
            policy = %config.policy.display(),
            public = policy.is_public(),
            invokers = policy.invoker_count(),
            jwks_url = %config.jwks_url,
            use_http2 = config.use_http2,
            timeout = ?config.timeout,
            "cloud-run-ingress starting"
        );
        let _refresher = AbortOnDrop(shared.verifier.keys().spawn_refresher());
        let handler = move |req, peer| {
            let shared = Arc::clone(&shared);
            async move { shared.handle(req, peer).await }
        };
        cloud_run::serve_with_peer(listener, &config.server, handler, shutdown).await;
    }
}

impl Shared {
    async fn handle(&self, mut req: Request<Incoming>, peer: SocketAddr) -> Response<IngressBody> {
        let policy = self.policy.get();
        if !policy.is_public() {
            if let Err(status) = self.admit(&policy, req.headers_mut()).await {
                return page(status, req.uri().path());
            }
        }
        match self.forwarder.forward(req, peer).await {
            Ok(response) => response.map(Either::Right),
            Err(err) => {
                warn!(error = %cloud_run::response::Chain(&err), "upstream failed");
                page(err.status(), "")
            }
        }
    }

    /// Cloud Run's check for a private service: the token from
    /// `X-Serverless-Authorization` when present (then only that header is
    /// checked), else from `Authorization`; verified; its identity holding an
    /// invoking role. On success the checked header's signature is replaced,
    /// so the container never receives the checked token in a replayable
    /// form (another `Authorization` passes untouched, as on Cloud Run).
    async fn admit(&self, policy: &Policy, headers: &mut HeaderMap) -> Result<(), StatusCode> {
        use cloud_run::headers::X_SERVERLESS_AUTHORIZATION;
        let name = if headers.contains_key(&X_SERVERLESS_AUTHORIZATION) {
            X_SERVERLESS_AUTHORIZATION
        } else {
            http::header::AUTHORIZATION
        };
        // One header, one bearer token; anything else is no token.
        let mut values = headers.get_all(&name).iter();
        let token = match (values.next().and_then(bearer), values.next()) {
            (Some(token), None) => token.to_owned(),
            _ => {
                debug!(header = %name, "no ID token: 403");
                return Err(StatusCode::FORBIDDEN);
            }
        };
        let caller = match self.verifier.verify(&token).await {
            Ok(caller) => caller,
            Err(err) => {
                debug!(%err, "token refused");
                return Err(match err {
                    AuthError::KeysUnavailable | AuthError::KeyUnconfirmed => {
                        StatusCode::SERVICE_UNAVAILABLE
                    }
                    _ => StatusCode::UNAUTHORIZED,
                });
            }
        };
        let identity = Identity {
            email: caller
                .email
                .filter(|_| caller.email_verified)
                .map(|email| email.to_ascii_lowercase()),
            domain: caller.hosted_domain.map(|hd| hd.to_ascii_lowercase()),
        };
        if policy.check(&identity) == Verdict::Denied {
            match identity.email.as_deref() {
                Some(caller) => debug!(caller, "no invoking role: 403"),
                // Cloud Run would know the account from its id; locally
                // only a verified email names it.
                None => debug!(
                    "no verified email in the token (minted without format=full?), so no member \
                     matches but allAuthenticatedUsers: 403"
                ),
            }
            return Err(StatusCode::FORBIDDEN);
        }
        debug!(
            caller = identity.email.as_deref().unwrap_or("-"),
            "admitted"
        );
        let stripped = without_signature(&token).unwrap_or(HeaderValue::from_static(""));
        headers.insert(name, stripped);
        Ok(())
    }
}

/// The front end's own HTML page for `status`.
fn page(status: StatusCode, path: &str) -> Response<IngressBody> {
    let mut response = Response::new(Either::Left(Full::new(Bytes::from(error_page(
        status, path,
    )))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=UTF-8"),
    );
    response
}

/// Stops the background key refresh when the server returns.
#[derive(Debug)]
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
