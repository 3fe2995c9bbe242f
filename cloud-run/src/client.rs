//! Outbound HTTP: the one `reqwest::Client` a process builds, and reading a
//! response body without trusting its size.

use std::time::Duration;

use bytes::{Bytes, BytesMut};

/// Builds the process's HTTP client. Proxies from the environment are
/// ignored: the metadata server must be reached directly (Google's
/// libraries do the same), and on Cloud Run there is no proxy to honour.
pub fn build(connect_timeout: Duration) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(connect_timeout)
        .pool_idle_timeout(Duration::from_secs(60))
        .tcp_nodelay(true)
        .build()
}

/// Why a capped body read failed.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The body is larger than the cap.
    #[error("body larger than {0} bytes")]
    TooLarge(usize),
    /// The connection failed or timed out mid-body.
    #[error("body broke off")]
    Read(#[source] reqwest::Error),
}

/// Reads the whole body, refusing one past `cap` bytes before buffering it.
pub async fn read_capped(mut response: reqwest::Response, cap: usize) -> Result<Bytes, BodyError> {
    if response
        .content_length()
        .is_some_and(|len| len > cap as u64)
    {
        return Err(BodyError::TooLarge(cap));
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Read)? {
        if body.len() + chunk.len() > cap {
            return Err(BodyError::TooLarge(cap));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}
