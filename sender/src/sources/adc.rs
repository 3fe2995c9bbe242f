//! Finding the credentials file Google's libraries would use ("application
//! default credentials"): the one `GOOGLE_APPLICATION_CREDENTIALS` names,
//! else gcloud's well-known file.

use std::path::{Path, PathBuf};

use cloud_run::{config::Lookup, ConfigError};
use reqwest::Url;
use serde::Deserialize;

/// Where OAuth tokens come from when a file does not say.
const GOOGLE_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";

/// A credentials file that was found, and the variable that led to it (the
/// one errors about the file name).
pub(super) struct Found {
    pub(super) var: &'static str,
    pub(super) path: PathBuf,
    pub(super) credentials: Credentials,
}

impl Found {
    /// A config error about this file.
    pub(super) fn problem(&self, what: impl std::fmt::Display) -> ConfigError {
        ConfigError::new(self.var, format!("{}: {what}", self.path.display()))
    }
}

/// What a credentials file holds.
pub(super) enum Credentials {
    /// `service_account`: a key.
    ServiceAccount(KeyFile),
    /// `authorized_user`: gcloud's user credentials, a refresh token.
    AuthorizedUser(KeyFile),
    /// `impersonated_service_account`: what `gcloud auth
    /// application-default login --impersonate-service-account` writes.
    Impersonated(KeyFile),
    Other(String),
}

impl Credentials {
    pub(super) fn describe(&self) -> String {
        match self {
            Self::ServiceAccount(_) => "a service account key".to_owned(),
            Self::AuthorizedUser(_) => "user credentials".to_owned(),
            Self::Impersonated(_) => "impersonated service account credentials".to_owned(),
            Self::Other(kind) => format!("{kind:?} credentials"),
        }
    }

    fn from_file(file: KeyFile) -> Self {
        match file.kind.as_str() {
            "service_account" => Self::ServiceAccount(file),
            "authorized_user" => Self::AuthorizedUser(file),
            "impersonated_service_account" => Self::Impersonated(file),
            other => Self::Other(other.to_owned()),
        }
    }
}

/// A credentials file's fields, as far as they are read here, for every
/// kind at once. No `Debug`: it holds secrets.
#[derive(Deserialize)]
pub(super) struct KeyFile {
    #[serde(rename = "type", default)]
    kind: String,
    // service_account
    #[serde(default)]
    pub(super) client_email: String,
    #[serde(default)]
    pub(super) private_key_id: String,
    #[serde(default)]
    pub(super) private_key: String,
    #[serde(default)]
    token_uri: String,
    // authorized_user
    #[serde(default)]
    pub(super) client_id: String,
    #[serde(default)]
    pub(super) client_secret: String,
    #[serde(default)]
    pub(super) refresh_token: String,
    // impersonated_service_account
    #[serde(default)]
    pub(super) service_account_impersonation_url: String,
    #[serde(default)]
    source_credentials: Option<Box<KeyFile>>,
    #[serde(default)]
    pub(super) delegates: Vec<String>,
    #[serde(default)]
    pub(super) universe_domain: String,
}

impl KeyFile {
    /// Where the key or refresh token is exchanged; refused when the signed
    /// assertion, the refresh token or the access token would cross the
    /// network in clear text.
    pub(super) fn token_uri(&self) -> Result<Url, String> {
        let token_uri = if self.token_uri.is_empty() {
            GOOGLE_TOKEN_URI
        } else {
            &self.token_uri
        };
        let url = Url::parse(token_uri)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
            .ok_or("token_uri is not an http(s) URL")?;
        if cloud_run::url::is_cleartext_to_remote(&url) {
            return Err(format!(
                "token_uri is plain http to {}, which is not loopback: the signed assertion would travel in clear text; use https",
                url.host_str().unwrap_or_default()
            ));
        }
        Ok(url)
    }

    /// An impersonated file's `source_credentials`, classified.
    pub(super) fn take_source(&mut self) -> Option<Credentials> {
        self.source_credentials
            .take()
            .map(|source| Credentials::from_file(*source))
    }
}

/// The credentials file Google's libraries would use: the one
/// `GOOGLE_APPLICATION_CREDENTIALS` names (which must exist), else gcloud's
/// `application_default_credentials.json` if there is one.
pub(super) fn credentials_file(env: Lookup<'_>) -> Result<Option<Found>, ConfigError> {
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
    Ok(Some(Found {
        var,
        path,
        credentials: Credentials::from_file(file),
    }))
}
