//! Where ID tokens come from: the metadata server on Google Cloud; off it, a
//! service-account key or the impersonation of a service account, as
//! Google's own libraries do. `auto` picks one the way they do. One file per
//! source, `adc` for finding credential files, and `caller` for the
//! caller's own credentials an impersonation presents.

mod adc;
mod caller;
mod exchange;
mod impersonate;
mod key;
mod metadata;

use std::{sync::Arc, time::Duration};

use cloud_run::{config::Lookup, metadata::MetadataClient, ConfigError};
use reqwest::Url;

use crate::token::{IdToken, TokenError};
use adc::{credentials_file, Credentials, Found};
use caller::CallerCredentials;
pub use impersonate::Impersonation;
use impersonate::{iam_endpoint, target_account, Caller};
pub use key::ServiceAccountKey;

/// Where the sender gets the ID tokens it presents, as settled at start-up.
#[derive(Debug, Clone)]
pub enum TokenSource {
    /// The metadata server (Cloud Run, GCE, or an emulator).
    Metadata,
    /// A service-account key file, exchanged at its `token_uri`.
    ServiceAccountKey(Arc<ServiceAccountKey>),
    /// The IAM Service Account Credentials API, with the caller's own
    /// access token: `IMPERSONATE_SERVICE_ACCOUNT`, or an
    /// `impersonated_service_account` credentials file.
    Impersonate(Impersonation),
    /// No token: for a public receiver and local runs.
    None,
}

/// Why a token source cannot be used at start.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// A setting is missing or malformed.
    #[error(transparent)]
    Config(#[from] ConfigError),
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
}

/// Where the metadata server is, and how long to wait for it and for token
/// endpoints.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Endpoints<'a> {
    pub(crate) metadata_host: &'a str,
    pub(crate) metadata_timeout: Duration,
    pub(crate) token_endpoint_timeout: Duration,
}

/// A [`TokenSource`] connected for fetching: with its HTTP client, and the
/// metadata client or the caller's credentials it needs. Built once at
/// start, by [`TokenSource::connect`].
#[derive(Debug)]
pub(crate) enum Connected {
    Metadata(MetadataClient),
    Key {
        http: reqwest::Client,
        key: Arc<ServiceAccountKey>,
        timeout: Duration,
    },
    Impersonate(impersonate::Connected),
}

impl Connected {
    /// A new ID token for `audience`.
    pub(crate) async fn fetch(&self, audience: &str) -> Result<IdToken, TokenError> {
        let jwt = match self {
            Self::Metadata(client) => metadata::fetch(client, audience).await?,
            Self::Key { http, key, timeout } => key.fetch(http, *timeout, audience).await?,
            Self::Impersonate(impersonation) => impersonation.fetch(audience).await?,
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
    /// `GOOGLE_APPLICATION_CREDENTIALS` or the gcloud well-known file, and
    /// `IAM_CREDENTIALS_ENDPOINT`.
    pub fn from_env(env: Lookup<'_>) -> Result<Self, ConfigError> {
        const VAR: &str = "ID_TOKEN_SOURCE";
        let impersonate = env("IMPERSONATE_SERVICE_ACCOUNT");
        let iam = iam_override(env)?;
        match env(VAR).as_deref().unwrap_or("auto") {
            "none" => Ok(Self::None),
            "metadata" => Ok(Self::Metadata),
            "service-account-key" => match credentials_file(env)? {
                Some(found) => Self::key(found),
                None => Err(ConfigError::new(
                    VAR,
                    "service-account-key needs GOOGLE_APPLICATION_CREDENTIALS set to a service account key file",
                )),
            },
            "impersonate" => match (impersonate, credentials_file(env)?) {
                (Some(service_account), file) => Self::impersonate(&service_account, file, iam.as_ref()),
                (None, Some(found)) if matches!(found.credentials, Credentials::Impersonated(_)) => {
                    Self::impersonated_file(found, iam.as_ref())
                }
                (None, _) => Err(ConfigError::new(
                    VAR,
                    "impersonate needs IMPERSONATE_SERVICE_ACCOUNT set to a service account email, or impersonated credentials (gcloud auth application-default login --impersonate-service-account=EMAIL)",
                )),
            },
            "auto" => {
                let file = credentials_file(env)?;
                if let Some(service_account) = impersonate {
                    return Self::impersonate(&service_account, file, iam.as_ref());
                }
                let Some(found) = file else {
                    return Ok(Self::Metadata);
                };
                match &found.credentials {
                    Credentials::ServiceAccount(_) => Self::key(found),
                    Credentials::Impersonated(_) => Self::impersonated_file(found, iam.as_ref()),
                    Credentials::AuthorizedUser(_) => Err(ConfigError::new(
                        VAR,
                        format!(
                            "{} holds user credentials (gcloud auth application-default login), which cannot mint ID tokens for an audience; log in with --impersonate-service-account=EMAIL, or set IMPERSONATE_SERVICE_ACCOUNT to a service account you may impersonate, or GOOGLE_APPLICATION_CREDENTIALS to a service account key",
                            found.path.display()
                        ),
                    )),
                    Credentials::Other(kind) => Err(ConfigError::new(
                        VAR,
                        format!("{} holds {kind:?} credentials, which this sender cannot use; set IMPERSONATE_SERVICE_ACCOUNT or use a service account key", found.path.display()),
                    )),
                }
            }
            other => Err(ConfigError::new(
                VAR,
                format!("expected auto, metadata, service-account-key, impersonate or none, got {other:?}"),
            )),
        }
    }

    fn key(found: Found) -> Result<Self, ConfigError> {
        let Found {
            var,
            path,
            credentials,
        } = found;
        let problem = |what: &str| ConfigError::new(var, format!("{}: {what}", path.display()));
        match credentials {
            Credentials::ServiceAccount(file) => Ok(Self::ServiceAccountKey(Arc::new(
                ServiceAccountKey::load(file, problem)?,
            ))),
            other => Err(ConfigError::new(
                "ID_TOKEN_SOURCE",
                format!(
                    "service-account-key needs a service account key, but {} holds {}",
                    path.display(),
                    other.describe()
                ),
            )),
        }
    }

    /// `IMPERSONATE_SERVICE_ACCOUNT`, with the caller's credentials from
    /// `file` when there is one. An impersonated file's own target then
    /// stands between its source and the account asked for: one more
    /// delegate in the chain.
    fn impersonate(
        service_account: &str,
        file: Option<Found>,
        iam: Option<&Url>,
    ) -> Result<Self, ConfigError> {
        const VAR: &str = "IMPERSONATE_SERVICE_ACCOUNT";
        let (caller, delegates, base) = match file {
            None => (
                Caller::Found,
                Vec::new(),
                iam.cloned().unwrap_or_else(default_iam_endpoint),
            ),
            Some(Found {
                var,
                path,
                credentials: Credentials::Impersonated(file),
            }) => {
                let chain = Chain::read(var, &path, file, iam)?;
                let mut delegates = chain.delegates;
                delegates.push(chain.target);
                (chain.caller, delegates, chain.base)
            }
            Some(Found {
                var,
                path,
                credentials,
            }) => (
                Caller::File(Arc::new(caller_credentials(var, &path, "", credentials)?)),
                Vec::new(),
                iam.cloned().unwrap_or_else(default_iam_endpoint),
            ),
        };
        Ok(Self::Impersonate(Impersonation::new(
            VAR,
            service_account,
            &delegates,
            caller,
            &base,
        )?))
    }

    /// An `impersonated_service_account` file: its target, through its
    /// delegates, with its source credentials as the caller.
    fn impersonated_file(found: Found, iam: Option<&Url>) -> Result<Self, ConfigError> {
        let Found {
            var,
            path,
            credentials: Credentials::Impersonated(file),
        } = found
        else {
            return Err(found.problem("not impersonated credentials"));
        };
        let chain = Chain::read(var, &path, file, iam)?;
        Impersonation::new(
            var,
            &chain.target,
            &chain.delegates,
            chain.caller,
            &chain.base,
        )
        .map(Self::Impersonate)
        .map_err(|err| ConfigError::new(var, format!("{}: {}", path.display(), err.problem)))
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
            Self::Impersonate(impersonation) => impersonation.service_account(),
            Self::Metadata => "the instance's service account",
            Self::None => "nobody",
        }
    }

    /// Whose credentials an impersonation presents, for the start-up log.
    pub(crate) fn caller(&self) -> Option<String> {
        match self {
            Self::Impersonate(impersonation) => Some(impersonation.caller()),
            _ => None,
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
            Self::Impersonate(impersonation) => Connected::Impersonate(
                impersonation
                    .connect(http, endpoints.token_endpoint_timeout)
                    .await?,
            ),
        }))
    }
}

/// What an `impersonated_service_account` file says.
struct Chain {
    target: String,
    delegates: Vec<String>,
    caller: Caller,
    base: Url,
}

impl Chain {
    /// Reads `file`, found at `path` through `var`; `iam` overrides the
    /// file's universe.
    fn read(
        var: &'static str,
        path: &std::path::Path,
        mut file: adc::KeyFile,
        iam: Option<&Url>,
    ) -> Result<Self, ConfigError> {
        let problem = |what: &str| ConfigError::new(var, format!("{}: {what}", path.display()));
        let target = target_account(&file.service_account_impersonation_url)
            .ok_or_else(|| problem("service_account_impersonation_url names no service account"))?;
        let base = match iam {
            Some(iam) => iam.clone(),
            None => iam_endpoint(&file.universe_domain)
                .ok_or_else(|| problem("universe_domain is not a domain name"))?,
        };
        let source = file
            .take_source()
            .ok_or_else(|| problem("source_credentials missing"))?;
        let caller = caller_credentials(var, path, "source_credentials ", source)?;
        Ok(Self {
            target,
            delegates: std::mem::take(&mut file.delegates),
            caller: Caller::File(Arc::new(caller)),
            base,
        })
    }
}

/// The caller's own credentials in a file (`what` says where in it): a key
/// or gcloud's user credentials.
fn caller_credentials(
    var: &'static str,
    path: &std::path::Path,
    what: &str,
    credentials: Credentials,
) -> Result<CallerCredentials, ConfigError> {
    let problem =
        |problem: &str| ConfigError::new(var, format!("{}: {what}{problem}", path.display()));
    match credentials {
        Credentials::ServiceAccount(file) => Ok(CallerCredentials::key(ServiceAccountKey::load(
            file, problem,
        )?)),
        Credentials::AuthorizedUser(file) => CallerCredentials::user(&file, problem),
        other => Err(problem(&format!(
            "holds {}, which cannot be the caller's own credentials for impersonation",
            other.describe()
        ))),
    }
}

/// `IAM_CREDENTIALS_ENDPOINT`: the IAM credentials API's base URL for every
/// impersonation (Private Service Connect, a local stand-in).
fn iam_override(env: Lookup<'_>) -> Result<Option<Url>, ConfigError> {
    const VAR: &str = "IAM_CREDENTIALS_ENDPOINT";
    let Some(value) = env(VAR) else {
        return Ok(None);
    };
    let mut url =
        cloud_run::url::secure_url(VAR, &value, "the caller's access token travels to it")?;
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ConfigError::new(
            VAR,
            "must be a base URL, without query or fragment",
        ));
    }
    // The API's paths are joined onto it: keep its own path as a prefix.
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(Some(url))
}

fn default_iam_endpoint() -> Url {
    iam_endpoint("").unwrap_or_else(|| unreachable!("the default universe is a domain name"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::{Upstream, IAM_API};
    use cloud_run::testing::env;
    use key::TOKEN_ENDPOINT;
    use std::path::{Path, PathBuf};

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
        let imp = impersonation(source);
        assert_eq!(imp.service_account(), "sa@p.iam.gserviceaccount.com");
        assert_eq!(imp.caller(), "user credentials", "read from the file");
    }

    fn impersonation(source: TokenSource) -> Impersonation {
        match source {
            TokenSource::Impersonate(imp) => imp,
            other => panic!("expected impersonation, got {}", other.name()),
        }
    }

    const TARGET: &str = "target-sa@p.iam.gserviceaccount.com";

    /// An `impersonated_service_account` file as gcloud writes it, with
    /// `source` as its source_credentials.
    fn impersonated(source: &str, extra: &str) -> String {
        format!(
            r#"{{"type":"impersonated_service_account","delegates":["d1@p.iam.gserviceaccount.com"],"service_account_impersonation_url":"https://elsewhere.example.com/v1/projects/-/serviceAccounts/{TARGET}:generateAccessToken","source_credentials":{source}{extra}}}"#
        )
    }

    #[test]
    fn auto_with_an_impersonated_file_impersonates_its_target() {
        // Through gcloud's well-known file, as `gcloud auth
        // application-default login --impersonate-service-account` leaves it.
        let dir = scratch("impersonated-well-known");
        write(
            &dir,
            "application_default_credentials.json",
            &impersonated(USER, ""),
        );
        let source =
            TokenSource::from_env(&env(&[("CLOUDSDK_CONFIG", dir.to_str().expect("utf-8"))]))
                .expect("impersonated credentials");
        let imp = impersonation(source);
        assert_eq!(imp.service_account(), TARGET);
        assert_eq!(imp.caller(), "user credentials");
        // Only the account comes from the file's URL, never its host.
        assert_eq!(
            imp.request_url().as_str(),
            format!("https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/{TARGET}:generateIdToken")
        );
        assert_eq!(
            imp.delegates(),
            ["projects/-/serviceAccounts/d1@p.iam.gserviceaccount.com"]
        );

        // Through GOOGLE_APPLICATION_CREDENTIALS, in another universe.
        let path = write(
            &dir,
            "other.json",
            &impersonated(USER, r#","universe_domain":"example-universe.net""#),
        );
        let imp = impersonation(
            TokenSource::from_env(&env(&[("GOOGLE_APPLICATION_CREDENTIALS", &path)]))
                .expect("impersonated"),
        );
        assert_eq!(
            imp.request_url().host_str(),
            Some("iamcredentials.example-universe.net")
        );
        // IAM_CREDENTIALS_ENDPOINT overrides the universe, its path kept.
        let imp = impersonation(
            TokenSource::from_env(&env(&[
                ("GOOGLE_APPLICATION_CREDENTIALS", &path),
                (
                    "IAM_CREDENTIALS_ENDPOINT",
                    "https://iam-psc.p.googleapis.com/prefix",
                ),
            ]))
            .expect("impersonated"),
        );
        assert_eq!(
            imp.request_url().as_str(),
            format!("https://iam-psc.p.googleapis.com/prefix/v1/projects/-/serviceAccounts/{TARGET}:generateIdToken")
        );
        // ID_TOKEN_SOURCE=impersonate needs no IMPERSONATE_SERVICE_ACCOUNT
        // with such a file.
        let imp = impersonation(
            TokenSource::from_env(&env(&[
                ("GOOGLE_APPLICATION_CREDENTIALS", &path),
                ("ID_TOKEN_SOURCE", "impersonate"),
            ]))
            .expect("impersonated"),
        );
        assert_eq!(imp.service_account(), TARGET);
    }

    #[test]
    fn impersonate_service_account_on_an_impersonated_file_chains_through_its_target() {
        let dir = scratch("impersonated-chain");
        let path = write(&dir, "adc.json", &impersonated(USER, ""));
        let imp = impersonation(
            TokenSource::from_env(&env(&[
                ("GOOGLE_APPLICATION_CREDENTIALS", &path),
                (
                    "IMPERSONATE_SERVICE_ACCOUNT",
                    "final@p.iam.gserviceaccount.com",
                ),
            ]))
            .expect("chain"),
        );
        assert_eq!(imp.service_account(), "final@p.iam.gserviceaccount.com");
        assert_eq!(
            imp.delegates(),
            [
                "projects/-/serviceAccounts/d1@p.iam.gserviceaccount.com".to_owned(),
                format!("projects/-/serviceAccounts/{TARGET}"),
            ]
        );
    }

    #[test]
    fn broken_impersonated_files_are_refused_naming_the_file() {
        let dir = scratch("impersonated-broken");
        let cases = [
            (impersonated(r#"{"type":"authorized_user","client_id":"x"}"#, ""), "refresh_token"),
            (impersonated(&impersonated(USER, ""), ""), "cannot be the caller's own credentials"),
            (
                impersonated(r#"{"type":"external_account"}"#, ""),
                "cannot be the caller's own credentials",
            ),
            (
                r#"{"type":"impersonated_service_account","service_account_impersonation_url":"https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/a@b:generateAccessToken"}"#.to_owned(),
                "source_credentials missing",
            ),
            (
                impersonated(USER, "").replace(TARGET, "not-an-account"),
                "names no service account",
            ),
            (
                impersonated(USER, r#","universe_domain":"evil.example/x""#),
                "universe_domain",
            ),
            (
                impersonated(
                    r#"{"type":"authorized_user","client_id":"x","client_secret":"y","refresh_token":"z","token_uri":"http://oauth.example.com/token"}"#,
                    "",
                ),
                "clear text",
            ),
        ];
        for (text, expected) in cases {
            let path = write(&dir, "adc.json", &text);
            let err = TokenSource::from_env(&env(&[("GOOGLE_APPLICATION_CREDENTIALS", &path)]))
                .expect_err(expected);
            assert_eq!(err.var, "GOOGLE_APPLICATION_CREDENTIALS", "{err}");
            let shown = err.to_string();
            assert!(shown.contains(expected), "{shown}");
            assert!(shown.contains(&path), "{shown}");
            assert!(!shown.contains('\n'), "{shown}");
        }
    }

    #[test]
    fn the_iam_endpoint_is_https_unless_loopback() {
        let dir = scratch("iam-endpoint");
        let path = write(&dir, "adc.json", &impersonated(USER, ""));
        for bad in [
            "http://iam.example.com/",
            "iam.example.com",
            "https://iam.example.com/?x=1",
        ] {
            let err = TokenSource::from_env(&env(&[
                ("GOOGLE_APPLICATION_CREDENTIALS", &path),
                ("IAM_CREDENTIALS_ENDPOINT", bad),
            ]))
            .expect_err(bad);
            assert_eq!(err.var, "IAM_CREDENTIALS_ENDPOINT", "{bad}");
        }
        for good in [
            "http://127.0.0.1:9",
            "http://[::1]:9/",
            "https://iam.example.com",
        ] {
            let imp = impersonation(
                TokenSource::from_env(&env(&[
                    ("GOOGLE_APPLICATION_CREDENTIALS", &path),
                    ("IAM_CREDENTIALS_ENDPOINT", good),
                ]))
                .expect(good),
            );
            assert!(
                imp.request_url().path().starts_with("/v1/projects/-/"),
                "{good}"
            );
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
