//! Impersonation: the caller's own access token (found by `gcp_auth`)
//! presented to the IAM credentials API's `generateIdToken` for a service
//! account the caller may impersonate.

use std::{path::Path, sync::Arc, time::Duration};

use reqwest::Url;
use serde::Deserialize;

use super::{exchange::exchange, SourceError};
use crate::token::{TokenError, IAM_API};

const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";

/// The longest start-up may spend finding the caller's credentials.
const CALLER_LOOKUP: Duration = Duration::from_secs(20);

/// The `generateIdToken` URL for `service_account` under `base`.
pub(super) fn generate_id_token_url(base: &Url, service_account: &str) -> Option<Url> {
    base.join(&format!(
        "v1/projects/-/serviceAccounts/{service_account}:generateIdToken"
    ))
    .ok()
}

/// The caller's own credentials: its key file when it has one, else
/// whatever `gcp_auth` finds (gcloud user, metadata server, gcloud CLI).
pub(super) async fn caller(
    caller_key: Option<&Path>,
) -> Result<Arc<dyn gcp_auth::TokenProvider>, SourceError> {
    Ok(match caller_key {
        Some(path) => {
            Arc::new(gcp_auth::CustomServiceAccount::from_file(path).map_err(SourceError::Caller)?)
        }
        // It may probe the metadata server, whose client has no timeout.
        None => tokio::time::timeout(CALLER_LOOKUP, gcp_auth::provider())
            .await
            .map_err(|_| SourceError::CallerTimeout)?
            .map_err(SourceError::Caller)?,
    })
}

/// A new ID token for `audience` from `generateIdToken` at `url`.
pub(super) async fn fetch(
    http: &reqwest::Client,
    caller: &dyn gcp_auth::TokenProvider,
    url: &Url,
    timeout: Duration,
    audience: &str,
) -> Result<String, TokenError> {
    #[derive(Deserialize)]
    struct Answer {
        token: String,
    }
    // gcp_auth's own HTTP client has no timeout.
    let access = tokio::time::timeout(timeout, caller.token(&[CLOUD_PLATFORM]))
        .await
        .map_err(|_| TokenError::Timeout {
            endpoint: "the caller's credentials",
        })?
        .map_err(|err| TokenError::Caller(Arc::new(err)))?;
    let request = http
        .post(url.clone())
        .timeout(timeout)
        .bearer_auth(access.as_str())
        .json(&serde_json::json!({ "audience": audience, "includeEmail": true }));
    let answer: Answer = exchange(request, IAM_API).await?;
    Ok(answer.token)
}
