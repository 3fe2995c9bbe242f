//! Outbound HTTP: the one `reqwest::Client` a process builds, and reading a
//! response body without trusting its size (or printing it whole).

use std::time::Duration;

use bytes::{Bytes, BytesMut};

/// Builds the process's HTTP client. Proxies from the environment are
/// ignored: the metadata server must be reached directly (Google's
/// libraries do the same), and on Cloud Run there is no proxy to honour.
///
/// Redirects are never followed: every request this client makes carries a
/// credential or asks for one (ID tokens to the receiver, assertions and
/// access tokens to token endpoints, metadata and key fetches), and reqwest
/// keeps custom headers such as `X-Serverless-Authorization` on a hop to
/// another origin. A 3xx comes back to the caller as an answer.
pub fn build(connect_timeout: Duration) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(connect_timeout)
        .pool_idle_timeout(Duration::from_secs(60))
        .tcp_nodelay(true)
        .build()
}

/// The start of an upstream answer as one printable line, for logs.
pub fn one_line(body: &[u8]) -> String {
    String::from_utf8_lossy(body)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(300)
        .collect::<String>()
        .trim()
        .to_owned()
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpListener,
    };

    #[test]
    fn one_line_is_bounded_and_printable() {
        assert_eq!(one_line(b"  no\r\ntoken\n"), "no  token");
        assert_eq!(one_line(&[b'a'; 1000]).len(), 300);
    }

    /// A server answering every connection with `answer`; counts connections.
    async fn raw_server(
        answer: String,
    ) -> (
        std::net::SocketAddr,
        std::sync::Arc<std::sync::atomic::AtomicUsize>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = std::sync::Arc::clone(&count);
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let answer = answer.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = conn.read(&mut buf).await;
                    let _ = conn.write_all(answer.as_bytes()).await;
                });
            }
        });
        (addr, count)
    }

    #[tokio::test]
    async fn the_client_never_follows_a_redirect() {
        tokio::time::timeout(Duration::from_secs(10), async {
            let (elsewhere, reached) = raw_server(
                "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok".to_owned(),
            )
            .await;
            let (redirector, _) = raw_server(format!(
                "HTTP/1.1 302 Found\r\nlocation: http://{elsewhere}/stolen\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            ))
            .await;
            let client = build(Duration::from_secs(2)).expect("client");
            let response = client
                .get(format!("http://{redirector}/"))
                .header("x-serverless-authorization", "Bearer secret")
                .send()
                .await
                .expect("response");
            assert_eq!(response.status(), http::StatusCode::FOUND);
            assert_eq!(reached.load(std::sync::atomic::Ordering::SeqCst), 0);
        })
        .await
        .expect("test took too long");
    }
}
