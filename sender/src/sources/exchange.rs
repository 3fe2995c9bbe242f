//! One HTTP exchange with a token endpoint (a key's `token_uri`, the IAM
//! credentials API): its JSON answer, or a refusal whose upstream text is
//! kept for the log only.

use std::sync::Arc;

use cloud_run::client::{read_capped, BodyError};
use serde::Deserialize;

use crate::token::{TokenError, Upstream};

/// Token answers are small; anything bigger is not what we asked for.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Sends a token request and reads its JSON answer; an error answer becomes
/// a `Refused` carrying the endpoint's own reason (for the log).
pub(super) async fn exchange<T: serde::de::DeserializeOwned>(
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
}
