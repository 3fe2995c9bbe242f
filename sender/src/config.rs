//! The sender's settings, read from the environment and checked before the
//! port is bound.

use std::time::Duration;

use cloud_run::{
    config::{duration, Lookup},
    metadata, ConfigError, ServerConfig,
};
use reqwest::Url;

use crate::{renewal::RefreshPolicy, sources::TokenSource};

/// Which header carries the token to the receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenHeader {
    /// `Authorization: Bearer`: what Cloud Run's IAM check and in-app
    /// verification both read by default.
    Authorization,
    /// `X-Serverless-Authorization: Bearer`: read by Cloud Run's IAM check,
    /// which then leaves `Authorization` alone.
    Serverless,
    /// The same token in both: a private receiver that also verifies in the
    /// app gets an intact signature in `Authorization`.
    Both,
}

/// The sender's settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen and how to shut down.
    pub server: ServerConfig,
    /// `RECEIVING_SERVICE_URL`: what `GET /` relays to, path kept.
    pub receiver_url: Url,
    /// `ID_TOKEN_AUDIENCE`: the token's `aud`; the receiver URL's origin by
    /// default, which is what Cloud Run checks.
    pub audience: String,
    /// `ID_TOKEN_SOURCE`.
    pub token_source: TokenSource,
    /// The longest wait for a token endpoint (key exchange, impersonation).
    pub token_endpoint_timeout: Duration,
    /// `ID_TOKEN_HEADER`.
    pub token_header: TokenHeader,
    /// `GCE_METADATA_HOST`: `host[:port]` of the metadata server.
    pub metadata_host: String,
    /// `REQUEST_TIMEOUT`: the longest wait for the receiver's whole answer.
    pub request_timeout: Duration,
    /// The longest wait for a TCP (and TLS) connection to the receiver.
    pub connect_timeout: Duration,
    /// The longest wait for one metadata server answer.
    pub metadata_timeout: Duration,
    /// `MAX_RESPONSE_BYTES`: a larger receiver answer gets 502 instead of
    /// being buffered.
    pub max_response_bytes: usize,
    /// When cached tokens are renewed.
    pub refresh: RefreshPolicy,
    /// Start fetching the first token at start, before any request, and
    /// keep trying until one is held (what `GET /ready` waits for). On by
    /// default; off, the first request fetches it.
    pub fetch_at_start: bool,
}

impl Config {
    /// Defaults for relaying to `receiver_url`, tokens from the metadata server.
    pub fn new(receiver_url: Url) -> Self {
        Self {
            server: ServerConfig::default(),
            audience: origin(&receiver_url),
            receiver_url,
            token_source: TokenSource::Metadata,
            token_endpoint_timeout: Duration::from_secs(5),
            token_header: TokenHeader::Authorization,
            metadata_host: metadata::DEFAULT_HOST.to_owned(),
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            metadata_timeout: Duration::from_secs(5),
            max_response_bytes: 1024 * 1024,
            refresh: RefreshPolicy::default(),
            fetch_at_start: true,
        }
    }

    /// Reads the settings from `env`.
    pub fn from_env(env: Lookup<'_>) -> Result<Self, ConfigError> {
        let receiver_url = receiver_url(env)?;
        let mut config = Self::new(receiver_url);
        config.server = ServerConfig::from_env(env)?;
        if let Some(audience) = env("ID_TOKEN_AUDIENCE") {
            config.audience = audience;
        }
        config.token_source = TokenSource::from_env(env)?;
        config.token_header = match env("ID_TOKEN_HEADER")
            .map(|v| v.to_ascii_lowercase())
            .as_deref()
        {
            None | Some("authorization") => TokenHeader::Authorization,
            Some("x-serverless-authorization") => TokenHeader::Serverless,
            Some("both") => TokenHeader::Both,
            Some(other) => {
                return Err(ConfigError::new(
                    "ID_TOKEN_HEADER",
                    format!(
                        "expected authorization, x-serverless-authorization or both, got {other:?}"
                    ),
                ))
            }
        };
        config.metadata_host = metadata::host_from_env(env)?;
        if let Some(timeout) = duration(env, "REQUEST_TIMEOUT")? {
            if timeout.is_zero() {
                return Err(ConfigError::new("REQUEST_TIMEOUT", "must be more than 0"));
            }
            config.request_timeout = timeout;
        }
        if let Some(max) = env("MAX_RESPONSE_BYTES") {
            config.max_response_bytes =
                max.parse().ok().filter(|bytes| *bytes > 0).ok_or_else(|| {
                    ConfigError::new(
                        "MAX_RESPONSE_BYTES",
                        format!("not a byte count above 0: {max:?}"),
                    )
                })?;
        }
        Ok(config)
    }
}

fn receiver_url(env: Lookup<'_>) -> Result<Url, ConfigError> {
    const VAR: &str = "RECEIVING_SERVICE_URL";
    let value = env(VAR)
        .ok_or_else(|| ConfigError::new(VAR, "not set; set it to the receiving service's URL"))?;
    // The sender authenticates with an ID token; reqwest would send a user
    // name and password as Basic credentials beside it.
    cloud_run::url::http_url(VAR, &value)
}

/// `scheme://host[:port]`, the audience Cloud Run expects for a service URL.
fn origin(url: &Url) -> String {
    url.origin().ascii_serialization()
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloud_run::testing::env;

    #[test]
    fn receiver_url_is_required_and_checked() {
        let err = Config::from_env(&env(&[])).expect_err("missing");
        assert_eq!(err.var, "RECEIVING_SERVICE_URL");
        for bad in ["receiver:8080", "/relative", "ftp://host/", "not a url"] {
            let err = Config::from_env(&env(&[("RECEIVING_SERVICE_URL", bad)])).expect_err(bad);
            assert_eq!(err.var, "RECEIVING_SERVICE_URL", "{bad}");
        }
    }

    #[test]
    fn receiver_url_with_user_or_password_is_refused_without_echoing_it() {
        for bad in [
            "https://user:hunter2-secret@receiver.example.com/",
            "https://user@receiver.example.com/",
            "https://:hunter2-secret@receiver.example.com/",
            "http://user:hunter2-secret@127.0.0.1:99999/",
            "ftp://user:hunter2-secret@receiver.example.com/",
        ] {
            let err = Config::from_env(&env(&[("RECEIVING_SERVICE_URL", bad)])).expect_err(bad);
            assert_eq!(err.var, "RECEIVING_SERVICE_URL", "{bad}");
            let text = err.to_string();
            assert!(!text.contains("hunter2-secret"), "{text}");
            assert!(!text.contains("user:hunter2"), "{text}");
        }
        let err = Config::from_env(&env(&[(
            "RECEIVING_SERVICE_URL",
            "https://user:hunter2-secret@receiver.example.com/",
        )]))
        .expect_err("userinfo");
        assert!(err.to_string().contains("user name or password"), "{err}");
    }

    #[test]
    fn audience_defaults_to_the_origin() {
        let c = Config::from_env(&env(&[(
            "RECEIVING_SERVICE_URL",
            "https://receiving-service-abc-uc.a.run.app/some/path?q=1",
        )]))
        .expect("config");
        assert_eq!(c.audience, "https://receiving-service-abc-uc.a.run.app");
        assert_eq!(c.receiver_url.path(), "/some/path");
        let c = Config::from_env(&env(&[("RECEIVING_SERVICE_URL", "http://127.0.0.1:8081/")]))
            .expect("config");
        assert_eq!(c.audience, "http://127.0.0.1:8081");
        let c = Config::from_env(&env(&[
            ("RECEIVING_SERVICE_URL", "http://127.0.0.1:8081/"),
            ("ID_TOKEN_AUDIENCE", "https://custom.example.com"),
        ]))
        .expect("config");
        assert_eq!(c.audience, "https://custom.example.com");
    }

    #[test]
    fn other_settings() {
        let base = ("RECEIVING_SERVICE_URL", "http://127.0.0.1:8081/");
        let c = Config::from_env(&env(&[base])).expect("defaults");
        assert!(matches!(c.token_source, TokenSource::Metadata));
        assert_eq!(c.metadata_host, "metadata.google.internal");
        assert_eq!(c.request_timeout, Duration::from_secs(10));
        let c = Config::from_env(&env(&[
            base,
            ("ID_TOKEN_SOURCE", "none"),
            ("GCE_METADATA_HOST", "127.0.0.1:9000"),
            ("REQUEST_TIMEOUT", "2500ms"),
        ]))
        .expect("config");
        assert!(matches!(c.token_source, TokenSource::None));
        assert_eq!(c.token_header, TokenHeader::Authorization);
        for (value, header) in [
            ("authorization", TokenHeader::Authorization),
            ("X-Serverless-Authorization", TokenHeader::Serverless),
            ("both", TokenHeader::Both),
        ] {
            let c = Config::from_env(&env(&[base, ("ID_TOKEN_HEADER", value)])).expect(value);
            assert_eq!(c.token_header, header);
        }
        assert_eq!(c.metadata_host, "127.0.0.1:9000");
        assert_eq!(c.request_timeout, Duration::from_millis(2500));
        for (var, value) in [
            ("ID_TOKEN_SOURCE", "gcloud"),
            ("ID_TOKEN_HEADER", "cookie"),
            ("GCE_METADATA_HOST", "http://x"),
            ("REQUEST_TIMEOUT", "0s"),
            ("MAX_RESPONSE_BYTES", "lots"),
            ("MAX_RESPONSE_BYTES", "0"),
            ("PORT", "99999"),
        ] {
            let err = Config::from_env(&env(&[base, (var, value)])).expect_err(var);
            assert_eq!(err.var, var);
        }
    }
}
