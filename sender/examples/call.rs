//! One call to `RECEIVING_SERVICE_URL` with an ID token from the sender's
//! library ([`sender::IdTokenSource`]), printed as the sender relays it:
//!
//! ```sh
//! RECEIVING_SERVICE_URL=https://receiving-service-abc-uc.a.run.app \
//!   cargo run -p sender --example call
//! ```
//!
//! It reads the sender's variables: `ID_TOKEN_AUDIENCE` (the URL's origin by
//! default) and the token source's (`ID_TOKEN_SOURCE`,
//! `GOOGLE_APPLICATION_CREDENTIALS`, `IMPERSONATE_SERVICE_ACCOUNT`,
//! `IAM_CREDENTIALS_ENDPOINT`, `GCE_METADATA_HOST`). It exits 0 when the
//! receiver answered 2xx.

use std::{error::Error, process::ExitCode, time::Duration};

use cloud_run::config::{process_env, Lookup};
use http::{header::AUTHORIZATION, StatusCode};
use sender::{IdTokenSource, PREFIX};

#[tokio::main]
async fn main() -> ExitCode {
    match call(&process_env).await {
        Ok((status, answer)) => {
            println!("{answer}");
            if status.is_success() {
                ExitCode::SUCCESS
            } else {
                eprintln!("the receiving service answered {status}");
                ExitCode::FAILURE
            }
        }
        Err(err) => {
            eprintln!("call: {err}");
            ExitCode::FAILURE
        }
    }
}

/// One `GET` to `RECEIVING_SERVICE_URL` with a token for its audience: the
/// receiver's status, and its body behind the sender's prefix.
pub(crate) async fn call(
    env: Lookup<'_>,
) -> Result<(StatusCode, String), Box<dyn Error + Send + Sync>> {
    const URL: &str = "RECEIVING_SERVICE_URL";
    let url = env(URL).ok_or("RECEIVING_SERVICE_URL: not set")?;
    let url = cloud_run::url::http_url(URL, &url)?;
    let audience = env("ID_TOKEN_AUDIENCE").unwrap_or_else(|| url.origin().ascii_serialization());

    let tokens = IdTokenSource::from_env_with(env).await?;
    let token = tokens.token(&audience).await?;

    // The workspace's client follows no redirect: the token would go along.
    let http = cloud_run::client::build(Duration::from_secs(5))?;
    let answer = http
        .get(url)
        .timeout(Duration::from_secs(10))
        .header(AUTHORIZATION, token.bearer())
        .send()
        .await?;
    let status = answer.status();
    let body = answer.text().await?;
    Ok((status, format!("{PREFIX}{body}")))
}
