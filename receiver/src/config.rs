//! The receiver's settings: where to listen and, when `AUTH_AUDIENCE` is
//! set, how to verify the callers' ID tokens. Checked before the port is
//! bound; every error names its variable.

use std::time::Duration;

use cloud_run::{config::Lookup, ConfigError, ServerConfig};
use reqwest::Url;

use crate::{clock::Clock, keys::KeyPolicy};

/// Google's signing keys for ID tokens, as a JWKS.
pub const GOOGLE_JWKS_URL: &str = "https://www.googleapis.com/oauth2/v3/certs";

/// The issuers of Google ID tokens.
pub const GOOGLE_ISSUERS: [&str; 2] = ["https://accounts.google.com", "accounts.google.com"];

/// The receiver's settings.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// Where to listen and how to shut down.
    pub server: ServerConfig,
    /// In-app verification of callers' ID tokens; `None` lets everyone in,
    /// leaving protection to Cloud Run's IAM check.
    pub auth: Option<AuthConfig>,
}

impl Config {
    /// Reads the settings from `env`.
    pub fn from_env(env: Lookup<'_>) -> Result<Self, ConfigError> {
        Ok(Self {
            server: ServerConfig::from_env(env)?,
            auth: AuthConfig::from_env(env)?,
        })
    }
}

/// How the receiver verifies ID tokens in the app.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// `AUTH_AUDIENCE`: a token's `aud` must be one of these.
    pub audiences: Vec<String>,
    /// `AUTH_ISSUERS`: a token's `iss` must be one of these.
    pub issuers: Vec<String>,
    /// `AUTH_JWKS_URL`: where the signing keys are published.
    pub jwks_url: Url,
    /// `AUTH_ALLOWED_INVOKERS`: when set, only callers whose verified
    /// `email` is listed (lowercase) get in.
    pub allowed_invokers: Option<Vec<String>>,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`.
    pub leeway: Duration,
    /// How the signing keys are fetched and cached.
    pub keys: KeyPolicy,
    /// The time the claims are checked against.
    pub clock: Clock,
}

impl AuthConfig {
    /// Google ID tokens for `audiences`, keys from Google, anyone let in.
    pub fn google(audiences: Vec<String>) -> Self {
        Self {
            audiences,
            issuers: GOOGLE_ISSUERS.iter().map(|&s| s.to_owned()).collect(),
            jwks_url: Url::parse(GOOGLE_JWKS_URL).expect("constant URL"),
            allowed_invokers: None,
            leeway: Duration::from_secs(60),
            keys: KeyPolicy::default(),
            clock: Clock::system(),
        }
    }

    /// Reads `AUTH_AUDIENCE`, `AUTH_JWKS_URL`, `AUTH_ISSUERS` and
    /// `AUTH_ALLOWED_INVOKERS`. `None` (verification off) without
    /// `AUTH_AUDIENCE`; the others alone are an error, since whoever set
    /// them expects callers to be checked.
    pub fn from_env(env: Lookup<'_>) -> Result<Option<Self>, ConfigError> {
        let Some(audiences) = list(env, "AUTH_AUDIENCE")? else {
            for var in ["AUTH_JWKS_URL", "AUTH_ISSUERS", "AUTH_ALLOWED_INVOKERS"] {
                if env(var).is_some() {
                    return Err(ConfigError::new(
                        var,
                        "set, but AUTH_AUDIENCE is not, and without it tokens are not verified",
                    ));
                }
            }
            return Ok(None);
        };
        let mut config = Self::google(audiences);
        if let Some(url) = env("AUTH_JWKS_URL") {
            config.jwks_url = jwks_url(&url)?;
        }
        if let Some(issuers) = list(env, "AUTH_ISSUERS")? {
            config.issuers = issuers;
        }
        config.allowed_invokers = list(env, "AUTH_ALLOWED_INVOKERS")?
            .map(|emails| emails.iter().map(|e| email(e)).collect())
            .transpose()?;
        Ok(Some(config))
    }
}

/// A comma-separated list of non-empty values without spaces.
fn list(env: Lookup<'_>, var: &'static str) -> Result<Option<Vec<String>>, ConfigError> {
    let Some(value) = env(var) else {
        return Ok(None);
    };
    value
        .split(',')
        .map(str::trim)
        .map(|item| {
            if item.is_empty() {
                Err(ConfigError::new(
                    var,
                    "empty entry in the comma-separated list",
                ))
            } else if item.chars().any(|c| c.is_whitespace() || c.is_control()) {
                Err(ConfigError::new(
                    var,
                    format!("entry contains a space: {item:?}"),
                ))
            } else {
                Ok(item.to_owned())
            }
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

fn jwks_url(value: &str) -> Result<Url, ConfigError> {
    const VAR: &str = "AUTH_JWKS_URL";
    let url = Url::parse(value)
        .map_err(|err| ConfigError::new(VAR, format!("not an absolute URL ({err}): {value:?}")))?;
    if !matches!(url.scheme(), "http" | "https") || !url.has_host() {
        return Err(ConfigError::new(
            VAR,
            format!("not an http or https URL: {value:?}"),
        ));
    }
    Ok(url)
}

fn email(value: &str) -> Result<String, ConfigError> {
    match value.split_once('@') {
        Some((local, domain))
            if !local.is_empty() && domain.contains('.') && !domain.contains('@') =>
        {
            Ok(value.to_ascii_lowercase())
        }
        _ => Err(ConfigError::new(
            "AUTH_ALLOWED_INVOKERS",
            format!("not an email address: {value:?}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloud_run::testing::env;

    #[test]
    fn off_without_an_audience() {
        assert!(AuthConfig::from_env(&env(&[])).expect("config").is_none());
    }

    #[test]
    fn defaults_are_google_s() {
        let c = AuthConfig::from_env(&env(&[("AUTH_AUDIENCE", "https://r.a.run.app")]))
            .expect("config")
            .expect("on");
        assert_eq!(c.audiences, ["https://r.a.run.app"]);
        assert_eq!(c.jwks_url.as_str(), GOOGLE_JWKS_URL);
        assert_eq!(c.issuers, GOOGLE_ISSUERS);
        assert_eq!(c.allowed_invokers, None);
        assert_eq!(c.leeway, Duration::from_secs(60));
    }

    #[test]
    fn lists_are_split_and_trimmed() {
        let c = AuthConfig::from_env(&env(&[
            ("AUTH_AUDIENCE", "https://a.run.app, custom-audience"),
            ("AUTH_JWKS_URL", "http://127.0.0.1:9000/certs"),
            ("AUTH_ISSUERS", "https://issuer.example"),
            (
                "AUTH_ALLOWED_INVOKERS",
                "Sender@P.iam.gserviceaccount.com,other@p.iam.gserviceaccount.com",
            ),
        ]))
        .expect("config")
        .expect("on");
        assert_eq!(c.audiences, ["https://a.run.app", "custom-audience"]);
        assert_eq!(c.jwks_url.as_str(), "http://127.0.0.1:9000/certs");
        assert_eq!(c.issuers, ["https://issuer.example"]);
        assert_eq!(
            c.allowed_invokers.expect("allowlist"),
            [
                "sender@p.iam.gserviceaccount.com",
                "other@p.iam.gserviceaccount.com"
            ]
        );
    }

    #[test]
    fn errors_name_the_variable() {
        let aud = ("AUTH_AUDIENCE", "https://a.run.app");
        for (var, value) in [
            ("AUTH_AUDIENCE", "a,,b"),
            ("AUTH_AUDIENCE", " , "),
            ("AUTH_AUDIENCE", "two words"),
            ("AUTH_JWKS_URL", "not a url"),
            ("AUTH_JWKS_URL", "ftp://host/certs"),
            ("AUTH_JWKS_URL", "/certs"),
            ("AUTH_ISSUERS", ""),
            ("AUTH_ISSUERS", "a,"),
            ("AUTH_ALLOWED_INVOKERS", "nobody"),
            ("AUTH_ALLOWED_INVOKERS", "a@b@c.com"),
            ("AUTH_ALLOWED_INVOKERS", "@example.com"),
        ] {
            let err = AuthConfig::from_env(&env(&[aud, (var, value)]))
                .expect_err(&format!("{var}={value}"));
            assert_eq!(err.var, var, "{var}={value}: {err}");
        }
    }

    #[test]
    fn auth_settings_without_an_audience_are_refused() {
        for var in ["AUTH_JWKS_URL", "AUTH_ISSUERS", "AUTH_ALLOWED_INVOKERS"] {
            let err = AuthConfig::from_env(&env(&[(var, "x@y.z")])).expect_err(var);
            assert_eq!(err.var, var);
            assert!(err.to_string().contains("AUTH_AUDIENCE"), "{err}");
        }
    }
}
