//! How callers are verified: the audiences, issuers and key endpoint of ID
//! tokens and of IAP assertions, who may call. Read from the `AUTH_*`
//! variables, checked before a server binds; every error names its variable.

use std::time::Duration;

use cloud_run::{config::Lookup, ConfigError};
use reqwest::Url;

use crate::{clock::Clock, keys::KeyPolicy};

/// Google's signing keys for ID tokens, as a JWKS.
pub const GOOGLE_JWKS_URL: &str = "https://www.googleapis.com/oauth2/v3/certs";

/// The issuers of Google ID tokens.
pub const GOOGLE_ISSUERS: [&str; 2] = ["https://accounts.google.com", "accounts.google.com"];

/// The issuer of the assertions Identity-Aware Proxy signs.
pub const IAP_ISSUER: &str = "https://cloud.google.com/iap";

/// IAP's signing keys (ES256, EC P-256), as a JWKS.
pub const IAP_JWKS_URL: &str = "https://www.gstatic.com/iap/verify/public_key-jwk";

/// The settings of in-app verification. Present but empty (or only spaces
/// and commas), any of them is an error: an empty `AUTH_AUDIENCE` must not
/// quietly turn verification off.
pub const AUTH_VARS: [&str; 6] = [
    "AUTH_AUDIENCE",
    "AUTH_JWKS_URL",
    "AUTH_ISSUERS",
    "AUTH_ALLOWED_INVOKERS",
    "AUTH_IAP_AUDIENCE",
    "AUTH_IAP_JWKS_URL",
];

/// The value of `AUTH_AUDIENCE` (alone or in its list) that stands for the
/// service's deterministic URL, resolved at start.
pub const AUTO_AUDIENCE: &str = "auto";

/// Who may call, among the holders of a valid token for the audience.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invokers {
    /// Anyone with a valid token. Any Google account (any service account
    /// in any project) can mint an ID token for any audience, so this
    /// proves only that the caller has some Google account:
    /// `AUTH_ALLOWED_INVOKERS=*`, an explicit opt-in.
    Any,
    /// Only callers whose token carries one of these emails, verified;
    /// lowercase (see [`Invokers::only`]).
    Only(Vec<String>),
}

impl Invokers {
    /// Only these callers, by email (compared without regard to case).
    pub fn only<S: AsRef<str>>(emails: impl IntoIterator<Item = S>) -> Self {
        Self::Only(
            emails
                .into_iter()
                .map(|e| e.as_ref().to_ascii_lowercase())
                .collect(),
        )
    }
}

/// How IAP's signed headers (`X-Goog-IAP-JWT-Assertion`) are verified.
#[derive(Debug, Clone)]
pub struct IapConfig {
    /// `AUTH_IAP_AUDIENCE`: an assertion's `aud` must be one of these
    /// (`/projects/NUMBER/global/backendServices/ID` behind a load balancer,
    /// `/projects/NUMBER/locations/REGION/services/SERVICE` for IAP on a
    /// Cloud Run service).
    pub audiences: Vec<String>,
    /// `AUTH_IAP_JWKS_URL`: where IAP's keys are published.
    pub jwks_url: Url,
}

impl IapConfig {
    /// IAP assertions for `audiences`, keys from Google.
    pub fn google(audiences: Vec<String>) -> Self {
        Self {
            audiences,
            jwks_url: Url::parse(IAP_JWKS_URL).expect("constant URL"),
        }
    }
}

/// `AUTH_AUDIENCE=auto`, before it is resolved (see [`AuthConfig::resolve`]):
/// where to learn the service's deterministic URL.
#[derive(Debug, Clone)]
pub struct AutoAudience {
    /// `K_SERVICE`: the Cloud Run service's name.
    pub service: String,
    /// The metadata server, `host[:port]` (`GCE_METADATA_HOST`).
    pub metadata_host: String,
    /// The longest wait for each of the metadata server's answers.
    pub timeout: Duration,
}

/// How callers are verified: ID tokens (`Authorization` or
/// `X-Serverless-Authorization`) and, when [`AuthConfig::iap`] is set, IAP
/// assertions (`X-Goog-IAP-JWT-Assertion`).
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// `AUTH_AUDIENCE`: an ID token's `aud` must be one of these. Empty
    /// (with `iap` set): no ID token is accepted, only IAP assertions.
    pub audiences: Vec<String>,
    /// `auto` was among the audiences: [`AuthConfig::resolve`] adds the
    /// service's deterministic URL. Until then nothing is accepted for it.
    pub auto_audience: Option<AutoAudience>,
    /// `AUTH_IAP_AUDIENCE`: IAP assertions are accepted too, or instead.
    pub iap: Option<IapConfig>,
    /// `AUTH_ISSUERS`: a token's `iss` must be one of these.
    pub issuers: Vec<String>,
    /// `AUTH_JWKS_URL`: where the signing keys are published.
    pub jwks_url: Url,
    /// `AUTH_ALLOWED_INVOKERS`: who gets in, by verified `email`, by either
    /// mechanism.
    pub invokers: Invokers,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`.
    pub leeway: Duration,
    /// How the signing keys are fetched and cached.
    pub keys: KeyPolicy,
    /// The time the claims are checked against.
    pub clock: Clock,
}

impl AuthConfig {
    /// Google ID tokens for `audiences` from `invokers`, keys from Google.
    pub fn google(audiences: Vec<String>, invokers: Invokers) -> Self {
        Self {
            audiences,
            auto_audience: None,
            iap: None,
            issuers: GOOGLE_ISSUERS.iter().map(|&s| s.to_owned()).collect(),
            jwks_url: Url::parse(GOOGLE_JWKS_URL).expect("constant URL"),
            invokers,
            leeway: Duration::from_secs(60),
            keys: KeyPolicy::default(),
            clock: Clock::system(),
        }
    }

    /// Reads the `AUTH_*` variables ([`AUTH_VARS`]). `None` (verification
    /// off) when none is set. The others without `AUTH_AUDIENCE` or
    /// `AUTH_IAP_AUDIENCE` are an error, since whoever set them expects
    /// callers to be checked, and so is either audience without
    /// `AUTH_ALLOWED_INVOKERS`. `AUTH_AUDIENCE=auto` also reads `K_SERVICE`
    /// and `GCE_METADATA_HOST`; [`AuthConfig::resolve`] then finishes it.
    pub fn from_env(env: Lookup<'_>) -> Result<Option<Self>, ConfigError> {
        for var in AUTH_VARS {
            if env(var).is_some_and(|v| v.chars().all(|c| c == ',' || c.is_whitespace())) {
                return Err(ConfigError::new(
                    var,
                    "set but empty (was it set from an unset shell variable?): \
                     give it a value, or leave it out",
                ));
            }
        }
        let audiences = list(env, "AUTH_AUDIENCE")?;
        let iap_audiences = list(env, "AUTH_IAP_AUDIENCE")?;
        if audiences.is_none() && iap_audiences.is_none() {
            for var in [
                "AUTH_JWKS_URL",
                "AUTH_ISSUERS",
                "AUTH_ALLOWED_INVOKERS",
                "AUTH_IAP_JWKS_URL",
            ] {
                if env(var).is_some() {
                    return Err(ConfigError::new(
                        var,
                        "set, but AUTH_AUDIENCE is not (nor AUTH_IAP_AUDIENCE), \
                         and without it tokens are not verified",
                    ));
                }
            }
            return Ok(None);
        }
        if audiences.is_none() {
            for var in ["AUTH_JWKS_URL", "AUTH_ISSUERS"] {
                if env(var).is_some() {
                    return Err(ConfigError::new(
                        var,
                        "set, but AUTH_AUDIENCE is not: only IAP assertions are accepted \
                         (AUTH_IAP_AUDIENCE), no ID token",
                    ));
                }
            }
        }
        if iap_audiences.is_none() && env("AUTH_IAP_JWKS_URL").is_some() {
            return Err(ConfigError::new(
                "AUTH_IAP_JWKS_URL",
                "set, but AUTH_IAP_AUDIENCE is not, and without it IAP assertions are not verified",
            ));
        }
        let jwks_url = env("AUTH_JWKS_URL")
            .map(|url| jwks_url("AUTH_JWKS_URL", &url))
            .transpose()?;
        let issuers = list(env, "AUTH_ISSUERS")?;
        let invokers =
            match list(env, "AUTH_ALLOWED_INVOKERS")? {
                Some(entries) => invokers(&entries)?,
                None => return Err(ConfigError::new(
                    "AUTH_ALLOWED_INVOKERS",
                    "required with AUTH_AUDIENCE and AUTH_IAP_AUDIENCE: any Google account can \
                     mint an ID token for any audience, so the audience alone proves only that \
                     the caller has some Google account; list the callers' emails, or set * to \
                     let in any Google account",
                )),
            };
        let (auto, audiences): (Vec<String>, Vec<String>) = audiences
            .unwrap_or_default()
            .into_iter()
            .partition(|a| a.eq_ignore_ascii_case(AUTO_AUDIENCE));
        let auto_audience = if auto.is_empty() {
            None
        } else {
            Some(auto_audience(env)?)
        };
        let iap = iap_audiences
            .map(|audiences| iap_config(env, audiences))
            .transpose()?;
        let mut config = Self::google(audiences, invokers);
        config.auto_audience = auto_audience;
        config.iap = iap;
        if let Some(url) = jwks_url {
            config.jwks_url = url;
        }
        if let Some(issuers) = issuers {
            config.issuers = issuers;
        }
        Ok(Some(config))
    }
}

/// `auto` in `AUTH_AUDIENCE`: only on Cloud Run, which sets `K_SERVICE`.
fn auto_audience(env: Lookup<'_>) -> Result<AutoAudience, ConfigError> {
    let Some(service) = env("K_SERVICE").filter(|s| !s.trim().is_empty()) else {
        return Err(ConfigError::new(
            "AUTH_AUDIENCE",
            "auto works only on Cloud Run, and K_SERVICE is not set (not on Cloud Run?): \
             give the receiver's URL instead",
        ));
    };
    let metadata_host = cloud_run::metadata::host_from_env(env)?;
    Ok(AutoAudience {
        service: service.trim().to_owned(),
        metadata_host,
        timeout: Duration::from_secs(3),
    })
}

fn iap_config(env: Lookup<'_>, audiences: Vec<String>) -> Result<IapConfig, ConfigError> {
    // Mistaking the service's URL for IAP's audience would refuse everyone;
    // every audience IAP signs for is a resource path under /projects/.
    if let Some(bad) = audiences.iter().find(|a| !a.starts_with("/projects/")) {
        return Err(ConfigError::new(
            "AUTH_IAP_AUDIENCE",
            format!(
                "not an IAP audience ({bad:?}): /projects/NUMBER/global/backendServices/ID \
                 behind a load balancer, /projects/NUMBER/locations/REGION/services/SERVICE \
                 for IAP on a Cloud Run service"
            ),
        ));
    }
    let mut iap = IapConfig::google(audiences);
    if let Some(url) = env("AUTH_IAP_JWKS_URL") {
        iap.jwks_url = jwks_url("AUTH_IAP_JWKS_URL", &url)?;
    }
    Ok(iap)
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

fn jwks_url(var: &'static str, value: &str) -> Result<Url, ConfigError> {
    // Whoever can change the keys in transit chooses who gets in.
    cloud_run::url::secure_url(var, value, "the signing keys decide who gets in")
}

fn invokers(entries: &[String]) -> Result<Invokers, ConfigError> {
    match entries {
        [only] if only == "*" => Ok(Invokers::Any),
        _ if entries.iter().any(|e| e == "*") => Err(ConfigError::new(
            "AUTH_ALLOWED_INVOKERS",
            "* lets in any Google account and stands alone, not beside emails",
        )),
        _ => entries
            .iter()
            .map(|e| email(e))
            .collect::<Result<Vec<_>, _>>()
            .map(Invokers::only),
    }
}

fn email(value: &str) -> Result<&str, ConfigError> {
    match value.split_once('@') {
        Some((local, domain))
            if !local.is_empty() && domain.contains('.') && !domain.contains('@') =>
        {
            Ok(value)
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

    const AUD: (&str, &str) = ("AUTH_AUDIENCE", "https://r.a.run.app");
    const ALLOWED: (&str, &str) = ("AUTH_ALLOWED_INVOKERS", "sender@p.iam.gserviceaccount.com");

    #[test]
    fn off_without_an_audience() {
        assert!(AuthConfig::from_env(&env(&[])).expect("config").is_none());
    }

    #[test]
    fn defaults_are_google_s() {
        let c = AuthConfig::from_env(&env(&[AUD, ALLOWED]))
            .expect("config")
            .expect("on");
        assert_eq!(c.audiences, ["https://r.a.run.app"]);
        assert_eq!(c.jwks_url.as_str(), GOOGLE_JWKS_URL);
        assert_eq!(c.issuers, GOOGLE_ISSUERS);
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
            c.invokers,
            Invokers::Only(vec![
                "sender@p.iam.gserviceaccount.com".to_owned(),
                "other@p.iam.gserviceaccount.com".to_owned()
            ])
        );
    }

    #[test]
    fn an_audience_without_an_allowlist_is_refused_saying_why() {
        let err = AuthConfig::from_env(&env(&[AUD])).expect_err("no allowlist");
        assert_eq!(err.var, "AUTH_ALLOWED_INVOKERS");
        assert!(err.problem.contains("any Google account"), "{err}");
        assert!(err.problem.contains('*'), "{err}");
    }

    #[test]
    fn a_star_alone_lets_in_any_google_account() {
        let c = AuthConfig::from_env(&env(&[AUD, ("AUTH_ALLOWED_INVOKERS", " * ")]))
            .expect("config")
            .expect("on");
        assert_eq!(c.invokers, Invokers::Any);
        for mixed in ["*,a@b.com", "a@b.com,*", "*,*"] {
            let err = AuthConfig::from_env(&env(&[AUD, ("AUTH_ALLOWED_INVOKERS", mixed)]))
                .expect_err(mixed);
            assert_eq!(err.var, "AUTH_ALLOWED_INVOKERS", "{mixed}");
        }
    }

    #[test]
    fn an_empty_auth_value_is_an_error_naming_it() {
        for empty in ["", " ", ",", " , ,", "\t"] {
            for var in AUTH_VARS {
                // Alone, and beside a complete configuration.
                let alone = [(var, empty)];
                let mut complete = vec![AUD, ALLOWED];
                complete.retain(|(v, _)| *v != var);
                complete.push((var, empty));
                for pairs in [&alone[..], &complete[..]] {
                    let err = AuthConfig::from_env(&env(pairs)).expect_err(var);
                    assert_eq!(err.var, var, "{pairs:?}");
                    assert!(err.problem.contains("empty"), "{err}");
                }
            }
        }
    }

    #[test]
    fn plain_http_keys_only_from_loopback() {
        for url in [
            "https://www.googleapis.com/oauth2/v3/certs",
            "http://127.0.0.1:9000/certs",
            "http://127.1.2.3/certs",
            "http://[::1]:9000/certs",
            "http://localhost:9000/certs",
            "http://LOCALHOST/certs",
        ] {
            let c = AuthConfig::from_env(&env(&[AUD, ALLOWED, ("AUTH_JWKS_URL", url)]))
                .unwrap_or_else(|err| panic!("{url}: {err}"))
                .expect("on");
            assert_eq!(c.jwks_url.as_str(), Url::parse(url).expect("url").as_str());
        }
        for url in [
            "http://www.googleapis.com/oauth2/v3/certs",
            "http://10.0.0.1/certs",
            "http://[2001:db8::1]/certs",
            "http://[::ffff:10.0.0.1]/certs",
            "http://localhost.example.com/certs",
            "http://128.0.0.1/certs",
        ] {
            let err =
                AuthConfig::from_env(&env(&[AUD, ALLOWED, ("AUTH_JWKS_URL", url)])).expect_err(url);
            assert_eq!(err.var, "AUTH_JWKS_URL");
            assert!(err.problem.contains("loopback"), "{err}");
        }
    }

    #[test]
    fn errors_name_the_variable() {
        for (var, value) in [
            ("AUTH_AUDIENCE", "a,,b"),
            ("AUTH_AUDIENCE", "two words"),
            ("AUTH_JWKS_URL", "not a url"),
            ("AUTH_JWKS_URL", "ftp://host/certs"),
            ("AUTH_JWKS_URL", "/certs"),
            ("AUTH_ISSUERS", "a,"),
            ("AUTH_ALLOWED_INVOKERS", "nobody"),
            ("AUTH_ALLOWED_INVOKERS", "a@b@c.com"),
            ("AUTH_ALLOWED_INVOKERS", "@example.com"),
        ] {
            let mut pairs = vec![AUD, ALLOWED];
            pairs.retain(|(v, _)| *v != var);
            pairs.push((var, value));
            let err = AuthConfig::from_env(&env(&pairs)).expect_err(&format!("{var}={value}"));
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

    const IAP_AUD: (&str, &str) = (
        "AUTH_IAP_AUDIENCE",
        "/projects/123456789012/global/backendServices/987",
    );

    #[test]
    fn iap_alone_accepts_no_id_token() {
        let c = AuthConfig::from_env(&env(&[IAP_AUD, ALLOWED]))
            .expect("config")
            .expect("on");
        assert!(c.audiences.is_empty());
        let iap = c.iap.expect("iap");
        assert_eq!(iap.audiences, [IAP_AUD.1]);
        assert_eq!(iap.jwks_url.as_str(), IAP_JWKS_URL);
        let err = AuthConfig::from_env(&env(&[IAP_AUD])).expect_err("no allowlist");
        assert_eq!(err.var, "AUTH_ALLOWED_INVOKERS");
    }

    #[test]
    fn both_mechanisms() {
        let c = AuthConfig::from_env(&env(&[
            AUD,
            IAP_AUD,
            ALLOWED,
            ("AUTH_IAP_JWKS_URL", "http://127.0.0.1:9/iap"),
        ]))
        .expect("config")
        .expect("on");
        assert_eq!(c.audiences, [AUD.1]);
        assert_eq!(
            c.iap.expect("iap").jwks_url.as_str(),
            "http://127.0.0.1:9/iap"
        );
    }

    #[test]
    fn iap_settings_are_checked_naming_them() {
        for (pairs, var) in [
            (
                &[AUD, ALLOWED, ("AUTH_IAP_JWKS_URL", "https://k.example/")][..],
                "AUTH_IAP_JWKS_URL",
            ),
            (
                &[IAP_AUD, ALLOWED, ("AUTH_IAP_JWKS_URL", "http://10.0.0.1/k")][..],
                "AUTH_IAP_JWKS_URL",
            ),
            (
                &[IAP_AUD, ALLOWED, ("AUTH_JWKS_URL", "https://k.example/")][..],
                "AUTH_JWKS_URL",
            ),
            (
                &[IAP_AUD, ALLOWED, ("AUTH_ISSUERS", "https://i.example")][..],
                "AUTH_ISSUERS",
            ),
            (
                &[("AUTH_IAP_AUDIENCE", "https://r.a.run.app"), ALLOWED][..],
                "AUTH_IAP_AUDIENCE",
            ),
            (
                &[("AUTH_IAP_JWKS_URL", "https://k.example/")][..],
                "AUTH_IAP_JWKS_URL",
            ),
        ] {
            let err = AuthConfig::from_env(&env(pairs)).expect_err(var);
            assert_eq!(err.var, var, "{pairs:?}: {err}");
        }
    }

    #[test]
    fn auto_needs_cloud_run() {
        let err = AuthConfig::from_env(&env(&[("AUTH_AUDIENCE", "auto"), ALLOWED]))
            .expect_err("no K_SERVICE");
        assert_eq!(err.var, "AUTH_AUDIENCE");
        assert!(err.problem.contains("K_SERVICE"), "{err}");
        let c = AuthConfig::from_env(&env(&[
            ("AUTH_AUDIENCE", "auto,https://api.example.com"),
            ALLOWED,
            ("K_SERVICE", "receiver"),
            ("GCE_METADATA_HOST", "127.0.0.1:8999"),
        ]))
        .expect("config")
        .expect("on");
        assert_eq!(c.audiences, ["https://api.example.com"]);
        let auto = c.auto_audience.expect("auto");
        assert_eq!(auto.service, "receiver");
        assert_eq!(auto.metadata_host, "127.0.0.1:8999");
    }

    #[tokio::test]
    async fn a_verifier_with_auto_unresolved_is_never_ready() {
        let c = AuthConfig::from_env(&env(&[
            ("AUTH_AUDIENCE", "auto"),
            ALLOWED,
            ("K_SERVICE", "receiver"),
        ]))
        .expect("config")
        .expect("on");
        let http = cloud_run::client::build(std::time::Duration::from_secs(1)).expect("client");
        let verifier = crate::Verifier::new(c, http);
        let reason = verifier.readiness().expect_err("not ready");
        assert!(reason.contains("AUTH_AUDIENCE=auto"), "{reason}");
    }
}
