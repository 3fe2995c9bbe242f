//! Finding the credentials file Google's libraries would use ("application
//! default credentials"): the one `GOOGLE_APPLICATION_CREDENTIALS` names,
//! else gcloud's well-known file.

use std::path::{Path, PathBuf};

use cloud_run::{config::Lookup, ConfigError};
use reqwest::Url;
use serde::Deserialize;

/// What a credentials file holds.
pub(super) enum Credentials {
    ServiceAccount(KeyFile),
    AuthorizedUser,
    Other(String),
}

impl Credentials {
    pub(super) fn describe(&self) -> String {
        match self {
            Self::ServiceAccount(_) => "a service account key".to_owned(),
            Self::AuthorizedUser => "user credentials".to_owned(),
            Self::Other(kind) => format!("{kind:?} credentials"),
        }
    }
}

/// A credentials file's fields, as far as they are read here.
#[derive(Deserialize)]
pub(super) struct KeyFile {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    pub(super) client_email: String,
    #[serde(default)]
    pub(super) private_key_id: String,
    #[serde(default)]
    pub(super) private_key: String,
    #[serde(default)]
    token_uri: String,
}

impl KeyFile {
    /// Where the key is exchanged; refused when the signed assertion (or,
    /// for an impersonation caller, the access token) would cross the
    /// network in clear text.
    pub(super) fn token_uri(&self) -> Result<Url, String> {
        let token_uri = if self.token_uri.is_empty() {
            "https://oauth2.googleapis.com/token"
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
}

/// The credentials file Google's libraries would use: the one
/// `GOOGLE_APPLICATION_CREDENTIALS` names (which must exist), else gcloud's
/// `application_default_credentials.json` if there is one. The variable
/// named in errors comes with it.
pub(super) fn credentials_file(
    env: Lookup<'_>,
) -> Result<Option<(PathBuf, Credentials)>, ConfigError> {
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
