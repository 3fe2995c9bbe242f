//! Impersonation: the caller's own access token presented to the IAM
//! credentials API's `generateIdToken` for a service account the caller may
//! impersonate, possibly through a chain of delegates. The caller's token
//! comes from a credentials file (its own, or an impersonated file's
//! `source_credentials`), else from whatever `gcp_auth` finds.

use std::{sync::Arc, time::Duration};

use cloud_run::ConfigError;
use reqwest::Url;
use serde::Deserialize;

use super::{
    caller::{CallerCredentials, CLOUD_PLATFORM},
    exchange::exchange,
    SourceError,
};
use crate::token::{TokenError, IAM_API};

/// The longest start-up may spend finding the caller's credentials.
const CALLER_LOOKUP: Duration = Duration::from_secs(20);

/// Where the IAM credentials API lives when nothing says otherwise.
const DEFAULT_UNIVERSE: &str = "googleapis.com";

/// The impersonation of a service account through the IAM credentials API,
/// as settled at start from the environment: whose identity the tokens
/// carry, through which delegates, with whose access token, at which
/// endpoint. Built by [`TokenSource::from_env`](crate::TokenSource::from_env).
#[derive(Debug, Clone)]
pub struct Impersonation {
    service_account: String,
    /// As the API takes them: `projects/-/serviceAccounts/EMAIL`.
    delegates: Vec<String>,
    caller: Caller,
    url: Url,
}

/// Whose access token is presented.
#[derive(Debug, Clone)]
pub(super) enum Caller {
    /// Credentials from a file.
    File(Arc<CallerCredentials>),
    /// No file: `gcp_auth` looks (metadata server, gcloud CLI) at connect.
    Found,
}

impl Impersonation {
    /// Impersonation of `service_account` by `caller` through `delegates`
    /// (emails or `projects/-/serviceAccounts/EMAIL`), at the IAM API under
    /// `base`. `var` names what set the account, for errors.
    pub(super) fn new(
        var: &'static str,
        service_account: &str,
        delegates: &[String],
        caller: Caller,
        base: &Url,
    ) -> Result<Self, ConfigError> {
        if !is_email(service_account) {
            return Err(ConfigError::new(
                var,
                format!("not a service account email: {service_account:?}"),
            ));
        }
        let delegates = delegates
            .iter()
            .map(
                |delegate| match delegate.strip_prefix("projects/-/serviceAccounts/") {
                    Some(email) if is_email(email) => Ok(delegate.clone()),
                    None if is_email(delegate) => {
                        Ok(format!("projects/-/serviceAccounts/{delegate}"))
                    }
                    _ => Err(ConfigError::new(
                        var,
                        format!("not a service account email among the delegates: {delegate:?}"),
                    )),
                },
            )
            .collect::<Result<_, _>>()?;
        let url = base
            .join(&format!(
                "v1/projects/-/serviceAccounts/{service_account}:generateIdToken"
            ))
            .map_err(|_| ConfigError::new(var, "not usable in a URL"))?;
        Ok(Self {
            service_account: service_account.to_owned(),
            delegates,
            caller,
            url,
        })
    }

    /// The service account whose identity the tokens carry.
    pub fn service_account(&self) -> &str {
        &self.service_account
    }

    #[cfg(test)]
    pub(super) fn request_url(&self) -> &Url {
        &self.url
    }

    #[cfg(test)]
    pub(super) fn delegates(&self) -> &[String] {
        &self.delegates
    }

    /// Whose access token is presented, for logs.
    pub(super) fn caller(&self) -> String {
        match &self.caller {
            Caller::File(credentials) => credentials.describe(),
            Caller::Found => "credentials found by gcp_auth".to_owned(),
        }
    }

    /// Connects: finds the caller's credentials when no file holds them.
    pub(super) async fn connect(
        &self,
        http: &reqwest::Client,
        timeout: Duration,
    ) -> Result<Connected, SourceError> {
        let caller = match &self.caller {
            Caller::File(credentials) => Connection::File(Arc::clone(credentials)),
            // It may probe the metadata server, whose client has no timeout.
            Caller::Found => Connection::Found(
                tokio::time::timeout(CALLER_LOOKUP, gcp_auth::provider())
                    .await
                    .map_err(|_| SourceError::CallerTimeout)?
                    .map_err(SourceError::Caller)?,
            ),
        };
        Ok(Connected {
            http: http.clone(),
            caller,
            url: self.url.clone(),
            delegates: self.delegates.clone(),
            timeout,
        })
    }
}

/// An [`Impersonation`] ready to fetch.
pub(crate) struct Connected {
    http: reqwest::Client,
    caller: Connection,
    url: Url,
    delegates: Vec<String>,
    timeout: Duration,
}

enum Connection {
    File(Arc<CallerCredentials>),
    Found(Arc<dyn gcp_auth::TokenProvider>),
}

impl std::fmt::Debug for Connected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Impersonate")
            .field("url", &self.url.as_str())
            .field("delegates", &self.delegates)
            .finish_non_exhaustive()
    }
}

impl Connected {
    /// A new ID token for `audience` from `generateIdToken`.
    pub(super) async fn fetch(&self, audience: &str) -> Result<String, TokenError> {
        #[derive(Deserialize)]
        struct Answer {
            token: String,
        }
        let access = match &self.caller {
            Connection::File(credentials) => {
                credentials.access_token(&self.http, self.timeout).await?
            }
            // gcp_auth's own HTTP client has no timeout.
            Connection::Found(provider) => {
                tokio::time::timeout(self.timeout, provider.token(&[CLOUD_PLATFORM]))
                    .await
                    .map_err(|_| TokenError::Timeout {
                        endpoint: "the caller's credentials",
                    })?
                    .map_err(|err| TokenError::Caller(Arc::new(err)))?
                    .as_str()
                    .to_owned()
            }
        };
        let mut body = serde_json::json!({ "audience": audience, "includeEmail": true });
        if !self.delegates.is_empty() {
            body["delegates"] = serde_json::json!(self.delegates);
        }
        let request = self
            .http
            .post(self.url.clone())
            .timeout(self.timeout)
            .bearer_auth(access)
            .json(&body);
        let answer: Answer = exchange(request, IAM_API).await?;
        Ok(answer.token)
    }
}

/// `https://iamcredentials.UNIVERSE/`, for the universe a credentials file
/// names (`googleapis.com` when it names none).
pub(super) fn iam_endpoint(universe_domain: &str) -> Option<Url> {
    let universe = if universe_domain.is_empty() {
        DEFAULT_UNIVERSE
    } else {
        universe_domain
    };
    let plain = universe
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if !plain || universe.starts_with('.') || universe.ends_with('.') {
        return None;
    }
    Url::parse(&format!("https://iamcredentials.{universe}/")).ok()
}

/// The service account an impersonated credentials file names: only the
/// account in its `service_account_impersonation_url`
/// (`https://HOST/v1/projects/-/serviceAccounts/EMAIL:generateAccessToken`),
/// never the host, as Google's libraries read it.
pub(super) fn target_account(impersonation_url: &str) -> Option<String> {
    let url = Url::parse(impersonation_url).ok()?;
    let last = url.path_segments()?.next_back()?;
    let (account, _method) = last.split_once(':')?;
    let account = account.replace("%40", "@");
    is_email(&account).then_some(account)
}

/// Something that can only be a service account email: it goes into the
/// path of the API's URL, so nothing that could change the URL's meaning.
fn is_email(value: &str) -> bool {
    let Some((user, domain)) = value.split_once('@') else {
        return false;
    };
    let plain = |part: &str| {
        !part.is_empty()
            && part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    };
    plain(user) && plain(domain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_account_is_taken_from_the_impersonation_url() {
        for url in [
            "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/sa@p.iam.gserviceaccount.com:generateAccessToken",
            "https://evil.example.com/v1/projects/-/serviceAccounts/sa@p.iam.gserviceaccount.com:generateAccessToken",
            "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/sa%40p.iam.gserviceaccount.com:generateAccessToken",
        ] {
            assert_eq!(
                target_account(url).as_deref(),
                Some("sa@p.iam.gserviceaccount.com"),
                "{url}"
            );
        }
        for bad in [
            "",
            "not a url",
            "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/",
            "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/no-at:generateAccessToken",
            "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/a@b%2F..%2Fx:generateAccessToken",
        ] {
            assert_eq!(target_account(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_iam_endpoint_follows_the_universe() {
        let at = |u: &str| iam_endpoint(u).map(|url| url.to_string());
        assert_eq!(
            at("").as_deref(),
            Some("https://iamcredentials.googleapis.com/")
        );
        assert_eq!(
            at("example-universe.net").as_deref(),
            Some("https://iamcredentials.example-universe.net/")
        );
        for bad in ["evil.com/x", "a@b", "host:1", ".", "x."] {
            assert_eq!(at(bad), None, "{bad}");
        }
    }

    #[test]
    fn delegates_are_sent_as_resource_names() {
        let base = Url::parse("https://iam.example/").expect("url");
        let delegates = vec![
            "a@p.iam.gserviceaccount.com".to_owned(),
            "projects/-/serviceAccounts/b@p.iam.gserviceaccount.com".to_owned(),
        ];
        let imp = Impersonation::new(
            "V",
            "t@p.iam.gserviceaccount.com",
            &delegates,
            Caller::Found,
            &base,
        )
        .expect("valid");
        assert_eq!(
            imp.delegates,
            [
                "projects/-/serviceAccounts/a@p.iam.gserviceaccount.com",
                "projects/-/serviceAccounts/b@p.iam.gserviceaccount.com"
            ]
        );
        assert_eq!(
            imp.url.as_str(),
            "https://iam.example/v1/projects/-/serviceAccounts/t@p.iam.gserviceaccount.com:generateIdToken"
        );
        for bad in ["nobody", "projects/-/serviceAccounts/x/../y@z"] {
            let err = Impersonation::new("V", "t@p", &[bad.to_owned()], Caller::Found, &base)
                .expect_err(bad);
            assert_eq!(err.var, "V");
        }
        for bad in ["sa@p/../x", "sa@p?x", "sa", "@p"] {
            assert!(
                Impersonation::new("V", bad, &[], Caller::Found, &base).is_err(),
                "{bad}"
            );
        }
    }
}
