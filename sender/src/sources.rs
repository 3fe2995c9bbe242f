//! Where ID tokens come from: the metadata server on Google Cloud; off it, a
//! service-account key or the impersonation of a service account, as
//! Google's own libraries do. `auto` picks one the way they do.

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use cloud_run::{
    client::{read_capped, BodyError},
    config::Lookup,
    metadata::MetadataClient,
    ConfigError,
};
use reqwest::Url;
use serde::Deserialize;

use crate::token::{IdToken, TokenError, Upstream, IAM_API};

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
}

enum Credentials {
    ServiceAccount(KeyFile),
    AuthorizedUser,
    Other(String),
}

impl Credentials {
    fn describe(&self) -> String {
        match self {
            Self::ServiceAccount(_) => "a service account key".to_owned(),
            Self::AuthorizedUser => "user credentials".to_owned(),
            Self::Other(kind) => format!("{kind:?} credentials"),
        }
    }
}

#[derive(Deserialize)]
struct KeyFile {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    client_email: String,
    #[serde(default)]
    private_key_id: String,
    #[serde(default)]
    private_key: String,
    #[serde(default)]
    token_uri: String,
}

impl KeyFile {
    /// Where the key is exchanged; refused when the signed assertion (or,
    /// for an impersonation caller, the access token) would cross the
    /// network in clear text.
    fn token_uri(&self) -> Result<Url, String> {
        let token_uri = if self.token_uri.is_empty() {
            "https://oauth2.googleapis.com/token"
        } else {
            &self.token_uri
        };
        let url = Url::parse(token_uri)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
            .ok_or("token_uri is not an http(s) URL")?;
        if cloud_run::client::is_cleartext_to_remote(&url) {
            return Err(format!(
                "token_uri is plain http to {}, which is not loopback: the signed assertion would travel in clear text; use https",
                url.host_str().unwrap_or_default()
            ));
        }
        Ok(url)
    }
}

/// The credentials file Google's libraries would use: the one
/// `GOOGLE_APPLICATION_CREDENTIALS` names (which must exist), else gcloud's
/// `application_default_credentials.json` if there is one.
fn credentials_file(env: Lookup<'_>) -> Result<Option<(PathBuf, Credentials)>, ConfigError> {
    let (var, path) = match env("GOOGLE_APPLICATION_CREDENTIALS") {
        Some(path) => ("GOOGLE_APPLICATION_CREDENTIALS", PathBuf::from(path)),
        None => {
            let dir = match (env("CLOUDSDK_CONFIG"), env("HOME")) {
                (Some(dir), _) => PathBuf::from(dir),
                (None, Some(home)) => Path::new(&home).join(".config/gcloud"),
                (None, None) => return Ok(None),
            };
            let path = dir.join("application_default_credentials.json");
            if !path.is_file() {
                return Ok(None);
            }
            ("CLOUDSDK_CONFIG", path)
        }
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|err| ConfigError::new(var, format!("cannot read {}: {err}", path.display())))?;
    let file: KeyFile = serde_json::from_str(&text).map_err(|_| {
        ConfigError::new(
            var,
            format!("{} is not a credentials JSON file", path.display()),
        )
    })?;
    let credentials = match file.kind.as_str() {
        "service_account" => Credentials::ServiceAccount(file),
        "authorized_user" => Credentials::AuthorizedUser,
        other => Credentials::Other(other.to_owned()),
    };
    Ok(Some((path, credentials)))
}

/// A service-account key, ready to sign assertions. `Debug` shows the
/// account, never the key.
pub struct ServiceAccountKey {
    client_email: String,
    private_key_id: String,
    key: jsonwebtoken::EncodingKey,
    token_uri: Url,
}

impl fmt::Debug for ServiceAccountKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceAccountKey")
            .field("client_email", &self.client_email)
            .field("token_uri", &self.token_uri.as_str())
            .finish_non_exhaustive()
    }
}

impl ServiceAccountKey {
    fn load(path: &Path, file: KeyFile) -> Result<Self, ConfigError> {
        let problem = |what: &str| {
            ConfigError::new(
                "GOOGLE_APPLICATION_CREDENTIALS",
                format!("{}: {what}", path.display()),
            )
        };
        if file.client_email.is_empty() || file.private_key_id.is_empty() {
            return Err(problem("client_email or private_key_id missing"));
        }
        let token_uri = file.token_uri().map_err(|what| problem(&what))?;
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(file.private_key.as_bytes())
            .map_err(|_| problem("private_key is not an RSA private key in PEM"))?;
        Ok(Self {
            client_email: file.client_email,
            private_key_id: file.private_key_id,
            key,
            token_uri,
        })
    }

    /// The service account's email.
    pub fn client_email(&self) -> &str {
        &self.client_email
    }

    /// A JWT-bearer assertion asking `token_uri` for an ID token for `audience`.
    fn assertion(&self, audience: &str) -> Result<String, TokenError> {
        #[derive(serde::Serialize)]
        struct Claims<'a> {
            iss: &'a str,
            sub: &'a str,
            aud: &'a str,
            target_audience: &'a str,
            iat: u64,
            exp: u64,
        }
        let iat = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = Some(self.private_key_id.clone());
        let claims = Claims {
            iss: &self.client_email,
            sub: &self.client_email,
            aud: self.token_uri.as_str(),
            target_audience: audience,
            iat,
            exp: iat + 3600,
        };
        jsonwebtoken::encode(&header, &claims, &self.key).map_err(|_| TokenError::Sign)
    }
}

/// The Service Account Credentials API Google serves.
pub const IAM_CREDENTIALS_URL: &str = "https://iamcredentials.googleapis.com/";

const TOKEN_ENDPOINT: &str = "the token endpoint";
const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";
/// Token answers are small; anything bigger is not what we asked for.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// A token source ready to fetch: HTTP client, keys and caller credentials
/// in place.
pub enum Fetcher {
    /// The metadata server's identity endpoint.
    Metadata(MetadataClient),
    /// A key exchanged at its token endpoint.
    Key {
        /// The process's HTTP client.
        http: reqwest::Client,
        /// The key.
        key: Arc<ServiceAccountKey>,
        /// The longest wait for the token endpoint.
        timeout: Duration,
    },
    /// `generateIdToken` on the IAM credentials API.
    Impersonate {
        /// The process's HTTP client.
        http: reqwest::Client,
        /// The caller's access tokens (gcp_auth caches them).
        caller: Arc<dyn gcp_auth::TokenProvider>,
        /// The `generateIdToken` URL for the impersonated account.
        url: Url,
        /// The longest wait for the API.
        timeout: Duration,
    },
}

impl fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Metadata(client) => f.debug_tuple("Metadata").field(client).finish(),
            Self::Key { key, .. } => f.debug_tuple("Key").field(key).finish(),
            Self::Impersonate { url, .. } => {
                f.debug_tuple("Impersonate").field(&url.as_str()).finish()
            }
        }
    }
}

impl Fetcher {
    /// The `generateIdToken` URL for `service_account` under `base`.
    pub fn generate_id_token_url(base: &Url, service_account: &str) -> Option<Url> {
        base.join(&format!(
            "v1/projects/-/serviceAccounts/{service_account}:generateIdToken"
        ))
        .ok()
    }

    /// A new ID token for `audience`.
    pub async fn fetch(&self, audience: &str) -> Result<IdToken, TokenError> {
        let jwt = match self {
            Self::Metadata(client) => client
                .identity_token(audience)
                .await
                .map_err(|err| TokenError::Metadata(Arc::new(err)))?,
            Self::Key { http, key, timeout } => {
                #[derive(Deserialize)]
                struct Answer {
                    id_token: String,
                }
                let assertion = key.assertion(audience)?;
                let request = http.post(key.token_uri.clone()).timeout(*timeout).form(&[
                    ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                    ("assertion", assertion.as_str()),
                ]);
                let answer: Answer = exchange(request, TOKEN_ENDPOINT).await?;
                answer.id_token
            }
            Self::Impersonate {
                http,
                caller,
                url,
                timeout,
            } => {
                #[derive(Deserialize)]
                struct Answer {
                    token: String,
                }
                // gcp_auth's own HTTP client has no timeout.
                let access = tokio::time::timeout(*timeout, caller.token(&[CLOUD_PLATFORM]))
                    .await
                    .map_err(|_| TokenError::Timeout {
                        endpoint: "the caller's credentials",
                    })?
                    .map_err(|err| TokenError::Caller(Arc::new(err)))?;
                let request = http
                    .post(url.clone())
                    .timeout(*timeout)
                    .bearer_auth(access.as_str())
                    .json(&serde_json::json!({ "audience": audience, "includeEmail": true }));
                let answer: Answer = exchange(request, IAM_API).await?;
                answer.token
            }
        };
        IdToken::from_jwt(&jwt)
    }
}

/// Sends a token request and reads its JSON answer; an error answer becomes
/// a `Refused` carrying the endpoint's own reason (for the log).
async fn exchange<T: serde::de::DeserializeOwned>(
    request: reqwest::RequestBuilder,
    endpoint: &'static str,
) -> Result<T, TokenError> {
    let failed = |err: reqwest::Error| {
        if err.is_timeout() {
            TokenError::Timeout { endpoint }
        } else {
            TokenError::Unreachable {
                endpoint,
                source: Arc::new(err),
            }
        }
    };
    let response = request.send().await.map_err(failed)?;
    let status = response.status();
    let body = read_capped(response, MAX_ANSWER_BYTES)
        .await
        .map_err(|err| match err {
            BodyError::Read(err) => failed(err),
            BodyError::TooLarge(_) => TokenError::Malformed("answer too large"),
        })?;
    if !status.is_success() {
        return Err(TokenError::Refused {
            endpoint,
            upstream: Upstream {
                status: status.as_u16(),
                reason: refusal_reason(&body),
            },
        });
    }
    serde_json::from_slice(&body)
        .map_err(|_| TokenError::Malformed("answer is not the expected JSON"))
}

/// The reason an endpoint gave: OAuth's `error`/`error_description`, or
/// Google API's `error.message`, else the start of its body; one line.
fn refusal_reason(body: &[u8]) -> String {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Reason {
        OAuth {
            error: String,
            error_description: Option<String>,
        },
        Api {
            error: ApiError,
        },
    }
    #[derive(Deserialize)]
    struct ApiError {
        message: String,
    }
    let given = match serde_json::from_slice::<Reason>(body) {
        Ok(Reason::OAuth {
            error,
            error_description: Some(description),
        }) => format!("{error}: {description}"),
        Ok(Reason::OAuth { error, .. }) => error,
        Ok(Reason::Api { error }) => error.message,
        Err(_) => return cloud_run::client::one_line(body),
    };
    // One line, bounded: it ends up in a log line.
    cloud_run::client::one_line(given.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloud_run::testing::env;

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
    fn refusal_reasons() {
        let oauth = br#"{"error":"invalid_grant","error_description":"Invalid JWT Signature."}"#;
        assert_eq!(
            refusal_reason(oauth),
            "invalid_grant: Invalid JWT Signature."
        );
        let api = br#"{"error":{"code":403,"message":"Permission denied"}}"#;
        assert_eq!(refusal_reason(api), "Permission denied");
        assert_eq!(refusal_reason(b"<html>"), "<html>");
        let long = format!(
            r#"{{"error":"x","error_description":"{}\n"}}"#,
            "a".repeat(1000)
        );
        let reason = refusal_reason(long.as_bytes());
        assert!(reason.len() <= 300 && !reason.contains('\n'));
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
