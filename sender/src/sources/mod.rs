//! Where ID tokens come from: the metadata server on Google Cloud; off it, a
//! service-account key or the impersonation of a service account, as
//! Google's own libraries do. `auto` picks one the way they do. One file per
//! source, and `adc` for finding credential files.

mod adc;
mod exchange;
mod impersonate;
mod key;
mod metadata;

use std::{path::PathBuf, sync::Arc, time::Duration};

use cloud_run::{config::Lookup, metadata::MetadataClient, ConfigError};
use reqwest::Url;

use crate::token::{IdToken, TokenError};
use adc::{credentials_file, Credentials};
pub use key::ServiceAccountKey;

/// The Service Account Credentials API Google serves.
pub(crate) const IAM_CREDENTIALS_URL: &str = "https://iamcredentials.googleapis.com/";

/// Where the sender gets the ID tokens it presents, as settled at start-up.
#[derive(Debug, Clone)]
pub enum TokenSource {
    /// The metadata server (Cloud Run, GCE, or an emulator).
    Metadata,
    /// A service-account key file, exchanged at its `token_uri`.
    ServiceAccountKey(Arc<ServiceAccountKey>),
    /// The IAM Service Account Credentials API, as `service_account`, with
    /// the caller's own access token.
    Impersonate {
        /// The service account whose identity the tokens carry.
        service_account: String,
        /// The caller's key file, if it is one; otherwise `gcp_auth` finds
        /// the caller's credentials (gcloud user, metadata server, gcloud).
        caller_key: Option<PathBuf>,
    },
    /// No token: for a public receiver and local runs.
    None,
}

/// Why a token source cannot be used at start.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
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

/// Where the metadata server and the IAM API are, and how long to wait.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Endpoints<'a> {
    pub(crate) metadata_host: &'a str,
    pub(crate) metadata_timeout: Duration,
    pub(crate) iam_credentials_url: &'a Url,
    pub(crate) token_endpoint_timeout: Duration,
}

/// A [`TokenSource`] connected for fetching: with its HTTP client, and the
/// metadata client or the caller's credentials it needs. Built once at
/// start, by [`TokenSource::connect`].
pub(crate) enum Connected {
    Metadata(MetadataClient),
    Key {
        http: reqwest::Client,
        key: Arc<ServiceAccountKey>,
        timeout: Duration,
    },
    Impersonate {
        http: reqwest::Client,
        caller: Arc<dyn gcp_auth::TokenProvider>,
        url: Url,
        timeout: Duration,
    },
}

impl std::fmt::Debug for Connected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Metadata(client) => f.debug_tuple("Metadata").field(client).finish(),
            Self::Key { key, .. } => f.debug_tuple("Key").field(key).finish(),
            Self::Impersonate { url, .. } => {
                f.debug_tuple("Impersonate").field(&url.as_str()).finish()
            }
        }
    }
}

impl Connected {
    /// A new ID token for `audience`.
    pub(crate) async fn fetch(&self, audience: &str) -> Result<IdToken, TokenError> {
        let jwt = match self {
            Self::Metadata(client) => metadata::fetch(client, audience).await?,
            Self::Key { http, key, timeout } => key.fetch(http, *timeout, audience).await?,
            Self::Impersonate {
                http,
                caller,
                url,
                timeout,
            } => impersonate::fetch(http, caller.as_ref(), url, *timeout, audience).await?,
        };
        IdToken::from_jwt(&jwt)
    }

    /// The metadata server, when tokens come from it.
    pub(crate) fn metadata(&self) -> Option<&MetadataClient> {
        match self {
            Self::Metadata(client) => Some(client),
            _ => None,
        }
    }
}

impl TokenSource {
    /// Reads `ID_TOKEN_SOURCE` (`auto` by default) and what the chosen
    /// source needs: `IMPERSONATE_SERVICE_ACCOUNT`,
    /// `GOOGLE_APPLICATION_CREDENTIALS`, or the gcloud well-known file.
    pub fn from_env(env: Lookup<'_>) -> Result<Self, ConfigError> {
        const VAR: &str = "ID_TOKEN_SOURCE";
        let impersonate = env("IMPERSONATE_SERVICE_ACCOUNT");
        match env(VAR).as_deref().unwrap_or("auto") {
            "none" => Ok(Self::None),
            "metadata" => Ok(Self::Metadata),
            "service-account-key" => match credentials_file(env)? {
                Some((path, Credentials::ServiceAccount(key))) => {
                    Ok(Self::ServiceAccountKey(Arc::new(ServiceAccountKey::load(&path, key)?)))
                }
                Some((path, other)) => Err(ConfigError::new(
                    VAR,
                    format!("service-account-key needs a service account key, but {} holds {}", path.display(), other.describe()),
                )),
                None => Err(ConfigError::new(
                    VAR,
                    "service-account-key needs GOOGLE_APPLICATION_CREDENTIALS set to a service account key file",
                )),
            },
            "impersonate" => match impersonate {
                Some(service_account) => Ok(Self::impersonate(env, service_account)?),
                None => Err(ConfigError::new(
                    VAR,
                    "impersonate needs IMPERSONATE_SERVICE_ACCOUNT set to a service account email",
                )),
            },
            "auto" => {
                if let Some(service_account) = impersonate {
                    return Self::impersonate(env, service_account);
                }
                match credentials_file(env)? {
                    None => Ok(Self::Metadata),
                    Some((path, Credentials::ServiceAccount(key))) => {
                        Ok(Self::ServiceAccountKey(Arc::new(ServiceAccountKey::load(&path, key)?)))
                    }
                    Some((path, Credentials::AuthorizedUser)) => Err(ConfigError::new(
                        VAR,
                        format!(
                            "{} holds user credentials (gcloud auth application-default login), which cannot mint ID tokens for an audience; set IMPERSONATE_SERVICE_ACCOUNT to a service account you may impersonate, or GOOGLE_APPLICATION_CREDENTIALS to a service account key",
                            path.display()
                        ),
                    )),
                    Some((path, Credentials::Other(kind))) => Err(ConfigError::new(
                        VAR,
                        format!("{} holds {kind:?} credentials, which this sender cannot use; set IMPERSONATE_SERVICE_ACCOUNT or use a service account key", path.display()),
                    )),
                }
            }
            other => Err(ConfigError::new(
                VAR,
                format!("expected auto, metadata, service-account-key, impersonate or none, got {other:?}"),
            )),
        }
    }

    fn impersonate(env: Lookup<'_>, service_account: String) -> Result<Self, ConfigError> {
        if !service_account.contains('@') {
            return Err(ConfigError::new(
                "IMPERSONATE_SERVICE_ACCOUNT",
                format!("not a service account email: {service_account:?}"),
            ));
        }
        // A key file as the caller's credentials is used directly; anything
        // else is left to gcp_auth's own search.
        let caller_key = match credentials_file(env)? {
            Some((path, Credentials::ServiceAccount(key))) => {
                // gcp_auth exchanges it at its token_uri: the same rule holds.
                key.token_uri().map_err(|what| {
                    ConfigError::new(
                        "GOOGLE_APPLICATION_CREDENTIALS",
                        format!("{}: {what}", path.display()),
                    )
                })?;
                Some(path)
            }
            _ => None,
        };
        Ok(Self::Impersonate {
            service_account,
            caller_key,
        })
    }

    /// A short name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Metadata => "metadata",
            Self::ServiceAccountKey(_) => "service-account-key",
            Self::Impersonate { .. } => "impersonate",
            Self::None => "none",
        }
    }

    /// As whom tokens are fetched, when known before the first fetch.
    pub(crate) fn identity(&self) -> &str {
        match self {
            Self::ServiceAccountKey(key) => key.client_email(),
            Self::Impersonate {
                service_account, ..
            } => service_account,
            Self::Metadata => "the instance's service account",
            Self::None => "nobody",
        }
    }

    /// Connects the source for fetching; `None` for [`TokenSource::None`].
    /// Async because finding the caller's credentials for impersonation may
    /// ask the metadata server.
    pub(crate) async fn connect(
        &self,
        http: &reqwest::Client,
        endpoints: Endpoints<'_>,
    ) -> Result<Option<Connected>, SourceError> {
        Ok(Some(match self {
            Self::None => return Ok(None),
            Self::Metadata => Connected::Metadata(
                MetadataClient::new(
                    endpoints.metadata_host,
                    http.clone(),
                    endpoints.metadata_timeout,
                )
                .ok_or(SourceError::MetadataHost)?,
            ),
            Self::ServiceAccountKey(key) => Connected::Key {
                http: http.clone(),
                key: Arc::clone(key),
                timeout: endpoints.token_endpoint_timeout,
            },
            Self::Impersonate {
                service_account,
                caller_key,
            } => {
                let iam = endpoints.iam_credentials_url;
                if cloud_run::url::is_cleartext_to_remote(iam) {
                    return Err(SourceError::IamCleartext(
                        iam.host_str().unwrap_or_default().to_owned(),
                    ));
                }
                Connected::Impersonate {
                    http: http.clone(),
                    caller: impersonate::caller(caller_key.as_deref()).await?,
                    url: impersonate::generate_id_token_url(iam, service_account)
                        .ok_or(SourceError::ImpersonateUrl)?,
                    timeout: endpoints.token_endpoint_timeout,
                }
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::{Upstream, IAM_API};
    use cloud_run::testing::env;
    use key::TOKEN_ENDPOINT;
    use std::path::Path;

    /// A fresh directory for one test's files.
    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("sender-sources-unit-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        dir
    }

    const USER: &str =
        r#"{"type":"authorized_user","client_id":"x","client_secret":"y","refresh_token":"z"}"#;

    fn write(dir: &Path, name: &str, text: &str) -> String {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        path.to_str().expect("utf-8").to_owned()
    }

    #[test]
    fn auto_without_credentials_is_the_metadata_server() {
        let dir = scratch("none");
        let home = dir.to_str().expect("utf-8");
        let source = TokenSource::from_env(&env(&[("HOME", home)])).expect("auto");
        assert!(matches!(source, TokenSource::Metadata));
    }

    #[test]
    fn auto_with_user_credentials_refuses_and_says_what_to_do() {
        let dir = scratch("user");
        std::fs::create_dir_all(dir.join(".config/gcloud")).expect("dir");
        write(
            &dir.join(".config/gcloud"),
            "application_default_credentials.json",
            USER,
        );
        let err = TokenSource::from_env(&env(&[("HOME", dir.to_str().expect("utf-8"))]))
            .expect_err("user credentials cannot mint ID tokens");
        assert_eq!(err.var, "ID_TOKEN_SOURCE");
        let text = err.to_string();
        assert!(text.contains("cannot mint ID tokens"), "{text}");
        assert!(text.contains("IMPERSONATE_SERVICE_ACCOUNT"), "{text}");
        assert!(!text.contains('\n'));

        // CLOUDSDK_CONFIG moves the well-known file, as gcloud does.
        let other = scratch("user-cloudsdk");
        write(&other, "application_default_credentials.json", USER);
        let err =
            TokenSource::from_env(&env(&[("CLOUDSDK_CONFIG", other.to_str().expect("utf-8"))]))
                .expect_err("found through CLOUDSDK_CONFIG");
        assert!(err.to_string().contains("cannot mint ID tokens"));
    }

    #[test]
    fn auto_with_user_credentials_and_impersonation_impersonates() {
        let dir = scratch("user-impersonate");
        let path = write(&dir, "adc.json", USER);
        let source = TokenSource::from_env(&env(&[
            ("GOOGLE_APPLICATION_CREDENTIALS", &path),
            (
                "IMPERSONATE_SERVICE_ACCOUNT",
                "sa@p.iam.gserviceaccount.com",
            ),
        ]))
        .expect("impersonate");
        match source {
            TokenSource::Impersonate {
                service_account,
                caller_key,
            } => {
                assert_eq!(service_account, "sa@p.iam.gserviceaccount.com");
                assert_eq!(caller_key, None, "user credentials are gcp_auth's to find");
            }
            other => panic!("expected impersonation, got {}", other.name()),
        }
    }

    #[test]
    fn forced_sources_name_what_is_missing() {
        let err = TokenSource::from_env(&env(&[("ID_TOKEN_SOURCE", "impersonate")]))
            .expect_err("no account");
        assert!(
            err.to_string().contains("IMPERSONATE_SERVICE_ACCOUNT"),
            "{err}"
        );
        let err = TokenSource::from_env(&env(&[("ID_TOKEN_SOURCE", "service-account-key")]))
            .expect_err("no key");
        assert!(
            err.to_string().contains("GOOGLE_APPLICATION_CREDENTIALS"),
            "{err}"
        );
        let err = TokenSource::from_env(&env(&[
            ("ID_TOKEN_SOURCE", "service-account-key"),
            ("GOOGLE_APPLICATION_CREDENTIALS", "/nonexistent/key.json"),
        ]))
        .expect_err("missing file");
        assert_eq!(err.var, "GOOGLE_APPLICATION_CREDENTIALS");
        let err = TokenSource::from_env(&env(&[
            ("ID_TOKEN_SOURCE", "impersonate"),
            ("IMPERSONATE_SERVICE_ACCOUNT", "not-an-email"),
        ]))
        .expect_err("bad email");
        assert_eq!(err.var, "IMPERSONATE_SERVICE_ACCOUNT");
        let err = TokenSource::from_env(&env(&[("ID_TOKEN_SOURCE", "gcloud")])).expect_err("bad");
        assert_eq!(err.var, "ID_TOKEN_SOURCE");
    }

    #[test]
    fn a_broken_key_file_is_refused_without_showing_it() {
        let dir = scratch("broken-key");
        let path = write(
            &dir,
            "key.json",
            r#"{"type":"service_account","client_email":"a@b","private_key_id":"k","private_key":"-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----\n"}"#,
        );
        let err = TokenSource::from_env(&env(&[("GOOGLE_APPLICATION_CREDENTIALS", &path)]))
            .expect_err("not an RSA key");
        let text = err.to_string();
        assert!(
            text.contains("private_key is not an RSA private key"),
            "{text}"
        );
        assert!(!text.contains("c2VjcmV0"), "{text}");
        let path = write(&dir, "junk.json", "not json");
        let err = TokenSource::from_env(&env(&[("GOOGLE_APPLICATION_CREDENTIALS", &path)]))
            .expect_err("not json");
        assert_eq!(err.var, "GOOGLE_APPLICATION_CREDENTIALS");
    }

    #[test]
    fn the_fixed_phrases_never_carry_the_upstream_text() {
        let refused = |endpoint, status| TokenError::Refused {
            endpoint,
            upstream: Upstream {
                status,
                reason: "upstream-secret-text".to_owned(),
            },
        };
        let err = refused(TOKEN_ENDPOINT, 400);
        assert_eq!(
            err.to_string(),
            "could not get an ID token: the token endpoint refused"
        );
        let chain = cloud_run::response::Chain(&err).to_string();
        assert!(
            chain.contains("answered 400: upstream-secret-text"),
            "{chain}"
        );
        assert_eq!(
            refused(IAM_API, 403).to_string(),
            "could not get an ID token: the IAM API refused: grant roles/iam.serviceAccountOpenIdTokenCreator on the impersonated service account to the caller"
        );
        assert_eq!(
            refused(IAM_API, 400).to_string(),
            "could not get an ID token: the IAM API refused"
        );
        assert!(refused(IAM_API, 503).is_transient());
        assert!(!refused(IAM_API, 403).is_transient());
    }

    #[test]
    fn a_token_uri_in_clear_text_to_another_host_is_refused() {
        let dir = scratch("cleartext-token-uri");
        let key = |uri: &str| {
            format!(
                r#"{{"type":"service_account","client_email":"a@b","private_key_id":"k","private_key":"not a key","token_uri":"{uri}"}}"#
            )
        };
        let path = write(&dir, "remote.json", &key("http://token.example.com/token"));
        let err = TokenSource::from_env(&env(&[("GOOGLE_APPLICATION_CREDENTIALS", &path)]))
            .expect_err("plain http to another host");
        assert_eq!(err.var, "GOOGLE_APPLICATION_CREDENTIALS");
        let text = err.to_string();
        assert!(text.contains("token_uri"), "{text}");
        assert!(text.contains("clear text"), "{text}");
        // The same file as the caller's credentials for impersonation.
        let err = TokenSource::from_env(&env(&[
            ("GOOGLE_APPLICATION_CREDENTIALS", &path),
            (
                "IMPERSONATE_SERVICE_ACCOUNT",
                "sa@p.iam.gserviceaccount.com",
            ),
        ]))
        .expect_err("plain http to another host, for the caller");
        assert!(err.to_string().contains("clear text"), "{err}");
        // Loopback is this machine: allowed (the key itself is then what fails).
        for uri in [
            "http://127.0.0.1:9/token",
            "http://localhost:9/token",
            "http://[::1]:9/token",
        ] {
            let path = write(&dir, "local.json", &key(uri));
            let err = TokenSource::from_env(&env(&[("GOOGLE_APPLICATION_CREDENTIALS", &path)]))
                .expect_err("not an RSA key");
            assert!(err.to_string().contains("private_key"), "{uri}: {err}");
        }
    }
}
