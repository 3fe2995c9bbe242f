//! The sender's token sources and cache as a library, for code that is not
//! this sender: [`IdTokenSource`].

use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use cloud_run::{config::Lookup, ConfigError};

use crate::{
    cache::TokenCache,
    renewal::RefreshPolicy,
    sources::{Connected, Endpoints, SourceError, TokenSource},
    token::{IdToken, TokenError},
};

/// The longest wait for a connection, a metadata server answer or a token
/// endpoint's answer: the sender's own defaults.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Google ID tokens for any audience, from the sources the sender uses
/// (the metadata server, a service-account key, impersonation, chosen as
/// `ID_TOKEN_SOURCE=auto` does), each audience's token cached.
///
/// The cache's guarantees, per audience:
///
/// - **Single flight**: however many callers ask at once, one fetch is in
///   flight; everyone waiting gets its result.
/// - **Early renewal**: a token is renewed in the background
///   `min(240 s, lifetime / 2)` before its `exp`, while callers keep
///   getting the current one at once; one with 10 s or less left is never
///   handed out (callers wait for a new one).
/// - **Backoff**: background renewals start at most every 10 s; after
///   failures the pause doubles up to 60 s while the still-valid token is
///   served. A caller that has to wait retries a transient failure
///   (connection refused, a 5xx) for up to 2 s; every fetch ends within
///   20 s.
/// - **No cached failures**: the next caller after a failure tries again.
///
/// Tokens are [`IdToken`]s: their `Debug` and `Display` never show them.
/// Cloning is cheap and shares the caches; each audience's cache lives as
/// long as the source.
///
/// ```
/// # use cloud_run::Service as _;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// # let host = listener.local_addr()?.to_string();
/// # let emulator = metadata_emulator::Emulator::new(metadata_emulator::Config::new(0))?;
/// # tokio::spawn(emulator.run(listener, std::future::pending()));
/// use sender::IdTokenSource;
///
/// // `IdTokenSource::from_env()` reads the process's environment; on Cloud
/// // Run it finds the metadata server by itself. Here a stand-in on
/// // loopback plays it, named as Google's libraries name it.
/// let env = |name: &str| (name == "GCE_METADATA_HOST").then(|| host.clone());
/// let tokens = IdTokenSource::from_env_with(&env).await?;
///
/// let audience = "https://receiving-service-abc-uc.a.run.app";
/// let token = tokens.token(audience).await?;
/// // The `Authorization` header value, marked sensitive.
/// assert!(token.bearer().to_str()?.starts_with("Bearer ey"));
/// assert_eq!(token.to_string(), "<redacted ID token>");
/// // Asked again, the cache answers.
/// assert_eq!(tokens.token(audience).await?.bearer(), token.bearer());
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct IdTokenSource {
    inner: Arc<Inner>,
}

struct Inner {
    source: Arc<Connected>,
    policy: RefreshPolicy,
    caches: Mutex<HashMap<String, Arc<TokenCache>>>,
}

impl fmt::Debug for IdTokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdTokenSource")
            .field("source", &self.inner.source)
            .finish_non_exhaustive()
    }
}

impl IdTokenSource {
    /// The source the process's environment names, as the sender reads it:
    /// `ID_TOKEN_SOURCE` (`auto` by default; `none` is an error here),
    /// `GOOGLE_APPLICATION_CREDENTIALS` or gcloud's well-known file,
    /// `IMPERSONATE_SERVICE_ACCOUNT`, `IAM_CREDENTIALS_ENDPOINT`,
    /// `GCE_METADATA_HOST`. Async because finding the caller's credentials
    /// for impersonation may ask the metadata server.
    pub async fn from_env() -> Result<Self, SourceError> {
        Self::from_env_with(&cloud_run::config::process_env).await
    }

    /// As [`IdTokenSource::from_env`], reading variables through `env`.
    pub async fn from_env_with(env: Lookup<'_>) -> Result<Self, SourceError> {
        let source = TokenSource::from_env(env)?;
        let metadata_host = cloud_run::metadata::host_from_env(env)?;
        let http = cloud_run::client::build(TIMEOUT).map_err(SourceError::Client)?;
        let endpoints = Endpoints {
            metadata_host: &metadata_host,
            metadata_timeout: TIMEOUT,
            token_endpoint_timeout: TIMEOUT,
        };
        Self::connect(&source, &http, endpoints, RefreshPolicy::default())
            .await?
            .ok_or_else(|| {
                ConfigError::new(
                    "ID_TOKEN_SOURCE",
                    "none gives no ID tokens; use auto, metadata, service-account-key or impersonate",
                )
                .into()
            })
    }

    /// Connects `source`; `None` for [`TokenSource::None`].
    pub(crate) async fn connect(
        source: &TokenSource,
        http: &reqwest::Client,
        endpoints: Endpoints<'_>,
        policy: RefreshPolicy,
    ) -> Result<Option<Self>, SourceError> {
        Ok(source.connect(http, endpoints).await?.map(|source| Self {
            inner: Arc::new(Inner {
                source: Arc::new(source),
                policy,
                caches: Mutex::default(),
            }),
        }))
    }

    /// A token for `audience` valid for at least 10 s more: the cached one,
    /// or a new one (see the cache's guarantees above). Errors are fixed
    /// phrases, fit for a response body; the upstream's own words are in
    /// their `source()`.
    pub async fn token(&self, audience: &str) -> Result<IdToken, TokenError> {
        self.cache(audience).get().await
    }

    /// The cache for `audience`, made on first use.
    pub(crate) fn cache(&self, audience: &str) -> Arc<TokenCache> {
        let mut caches = self
            .inner
            .caches
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Arc::clone(caches.entry(audience.to_owned()).or_insert_with(|| {
            TokenCache::new(
                Arc::clone(&self.inner.source),
                audience.to_owned(),
                self.inner.policy,
            )
        }))
    }
}
