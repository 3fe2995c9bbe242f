//! The caller's own credentials from a file, for impersonation: gcloud's user
//! credentials (a refresh token) or a service-account key, exchanged at
//! their `token_uri` for an OAuth access token with the cloud-platform
//! scope. The access token is kept until shortly before it expires, and
//! fetched once at a time, so that renewing ID tokens for several audiences
//! costs one exchange.

use std::{
    fmt,
    time::{Duration, Instant},
};

use tokio::sync::Mutex;

use cloud_run::ConfigError;
use reqwest::Url;
use serde::Deserialize;

use super::{
    adc::KeyFile,
    exchange::exchange,
    key::{ServiceAccountKey, JWT_BEARER},
};
use crate::token::TokenError;

/// The scope the IAM credentials API needs.
pub(super) const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";

/// How the caller's token endpoint is named in errors.
const CALLER_TOKEN_ENDPOINT: &str = "the caller's token endpoint";

/// An access token is not reused in its last minute: it must still be
/// valid when the IAM API checks it.
const MARGIN: Duration = Duration::from_secs(60);

/// The caller's credentials from a file. `Debug` shows whose they are,
/// never a secret.
pub(crate) struct CallerCredentials {
    kind: Kind,
    /// Held across an exchange: callers that need a new token meanwhile
    /// wait for that one (each exchange is bounded) instead of starting
    /// their own.
    cached: Mutex<Option<Access>>,
}

enum Kind {
    User {
        client_id: String,
        client_secret: String,
        refresh_token: String,
        token_uri: Url,
    },
    Key(ServiceAccountKey),
}

struct Access {
    token: String,
    until: Instant,
}

impl fmt::Debug for CallerCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CallerCredentials")
            .field(&self.describe())
            .finish()
    }
}

impl CallerCredentials {
    /// gcloud's user credentials in `file`; `problem` names the file.
    pub(super) fn user(
        file: &KeyFile,
        problem: impl Fn(&str) -> ConfigError,
    ) -> Result<Self, ConfigError> {
        if file.client_id.is_empty()
            || file.client_secret.is_empty()
            || file.refresh_token.is_empty()
        {
            return Err(problem(
                "user credentials need client_id, client_secret and refresh_token",
            ));
        }
        let token_uri = file.token_uri().map_err(|what| problem(&what))?;
        Ok(Self::new(Kind::User {
            client_id: file.client_id.clone(),
            client_secret: file.client_secret.clone(),
            refresh_token: file.refresh_token.clone(),
            token_uri,
        }))
    }

    /// A service-account key as the caller.
    pub(super) fn key(key: ServiceAccountKey) -> Self {
        Self::new(Kind::Key(key))
    }

    fn new(kind: Kind) -> Self {
        Self {
            kind,
            cached: Mutex::new(None),
        }
    }

    /// Whose credentials these are, for logs.
    pub(super) fn describe(&self) -> String {
        match &self.kind {
            Kind::User { .. } => "user credentials".to_owned(),
            Kind::Key(key) => key.client_email().to_owned(),
        }
    }

    /// An access token with the cloud-platform scope: the one kept, or a
    /// new one from the token endpoint, each call bounded by `timeout`.
    pub(super) async fn access_token(
        &self,
        http: &reqwest::Client,
        timeout: Duration,
    ) -> Result<String, TokenError> {
        #[derive(Deserialize)]
        struct Answer {
            access_token: String,
            #[serde(default)]
            expires_in: u64,
        }
        let mut cached = self.cached.lock().await;
        if let Some(access) = cached.as_ref() {
            if Instant::now() < access.until {
                return Ok(access.token.clone());
            }
        }
        let request = match &self.kind {
            Kind::User {
                client_id,
                client_secret,
                refresh_token,
                token_uri,
            } => http.post(token_uri.clone()).form(&[
                ("grant_type", "refresh_token"),
                ("client_id", client_id),
                ("client_secret", client_secret),
                ("refresh_token", refresh_token),
            ]),
            Kind::Key(key) => {
                let assertion = key.access_assertion(CLOUD_PLATFORM)?;
                http.post(key.token_uri().clone()).form(&[
                    ("grant_type", JWT_BEARER),
                    ("assertion", assertion.as_str()),
                ])
            }
        };
        let started = Instant::now();
        let answer: Answer = exchange(request.timeout(timeout), CALLER_TOKEN_ENDPOINT).await?;
        if answer.access_token.is_empty() {
            return Err(TokenError::Malformed("answer has no access token"));
        }
        if let Some(until) = Duration::from_secs(answer.expires_in)
            .checked_sub(MARGIN)
            .and_then(|left| started.checked_add(left))
        {
            *cached = Some(Access {
                token: answer.access_token.clone(),
                until,
            });
        }
        Ok(answer.access_token)
    }
}
