//! Outbound HTTP: the one `reqwest::Client` a process builds, and reading a
//! response body without trusting its size (or printing it whole).

use std::{
    sync::{Arc, OnceLock},
    time::Duration,
};

use bytes::{Bytes, BytesMut};
use rustls::{
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::CryptoProvider,
    pki_types::{CertificateDer, ServerName, UnixTime},
    DigitallySignedStruct, SignatureScheme,
};

/// Builds the process's HTTP client. Proxies from the environment are
/// ignored: the metadata server must be reached directly (Google's
/// libraries do the same), and on Cloud Run there is no proxy to honour.
///
/// Redirects are never followed: every request this client makes carries a
/// credential or asks for one (ID tokens to the receiver, assertions and
/// access tokens to token endpoints, metadata and key fetches), and reqwest
/// keeps custom headers such as `X-Serverless-Authorization` on a hop to
/// another origin. A 3xx comes back to the caller as an answer.
///
/// The system's CA roots are read on the first TLS handshake, not here:
/// reading them (every file of `/etc/ssl/certs` on a typical host) was a
/// third of the sender's start, and a plain-http client (the metadata
/// server, a receiver on loopback) never needs them. Certificates are still
/// verified as reqwest's own rustls set-up does (rustls-platform-verifier,
/// aws-lc-rs); without roots every https handshake fails.
pub fn build(connect_timeout: Duration) -> reqwest::Result<reqwest::Client> {
    build_with(connect_timeout, platform_roots)
}

fn build_with(connect_timeout: Duration, load: LoadRoots) -> reqwest::Result<reqwest::Client> {
    let builder = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(connect_timeout)
        .pool_idle_timeout(Duration::from_secs(60))
        .tcp_nodelay(true);
    match tls_config(load) {
        Some(tls) => builder.tls_backend_preconfigured(tls),
        // Unreachable with aws-lc-rs's provider; reqwest's own (eager) set-up.
        None => builder,
    }
    .build()
}

/// What reqwest builds by default (TLS 1.2 and 1.3, ALPN h2 then http/1.1,
/// SNI, the process's crypto provider or aws-lc-rs), with lazy roots.
fn tls_config(load: LoadRoots) -> Option<rustls::ClientConfig> {
    let provider = CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .ok()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(LazyRoots::new(provider, load)))
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Some(tls)
}

type LoadRoots =
    fn(Arc<CryptoProvider>) -> Result<rustls_platform_verifier::Verifier, rustls::Error>;

fn platform_roots(
    provider: Arc<CryptoProvider>,
) -> Result<rustls_platform_verifier::Verifier, rustls::Error> {
    rustls_platform_verifier::Verifier::new(provider)
}

/// The platform verifier, built on first use. Handshake signatures need no
/// roots, so only the certificate check waits for them.
#[derive(Debug)]
struct LazyRoots {
    provider: Arc<CryptoProvider>,
    load: LoadRoots,
    verifier: OnceLock<Result<rustls_platform_verifier::Verifier, rustls::Error>>,
}

impl LazyRoots {
    fn new(provider: Arc<CryptoProvider>, load: LoadRoots) -> Self {
        Self {
            provider,
            load,
            verifier: OnceLock::new(),
        }
    }

    fn verifier(&self) -> Result<&rustls_platform_verifier::Verifier, rustls::Error> {
        self.verifier
            .get_or_init(|| (self.load)(Arc::clone(&self.provider)))
            .as_ref()
            .map_err(Clone::clone)
    }
}

impl ServerCertVerifier for LazyRoots {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.verifier()?.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
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

    fn no_roots(
        _: Arc<CryptoProvider>,
    ) -> Result<rustls_platform_verifier::Verifier, rustls::Error> {
        Err(rustls::Error::General("no roots in this test".to_owned()))
    }

    static LOADS_WHILE_BUILDING: std::sync::atomic::AtomicUsize =
        std::sync::atomic::AtomicUsize::new(0);

    fn count_while_building(
        provider: Arc<CryptoProvider>,
    ) -> Result<rustls_platform_verifier::Verifier, rustls::Error> {
        LOADS_WHILE_BUILDING.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        no_roots(provider)
    }

    #[tokio::test]
    async fn building_the_client_and_plain_http_read_no_roots() {
        tokio::time::timeout(Duration::from_secs(10), async {
            let (server, _) = raw_server(
                "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok".to_owned(),
            )
            .await;
            let client = build_with(Duration::from_secs(2), count_while_building).expect("client");
            let response = client
                .get(format!("http://{server}/"))
                .send()
                .await
                .expect("response");
            assert_eq!(response.status(), http::StatusCode::OK);
            assert_eq!(
                LOADS_WHILE_BUILDING.load(std::sync::atomic::Ordering::SeqCst),
                0
            );
        })
        .await
        .expect("test took too long");
    }

    static LOADS_ON_CHECK: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

    fn count_on_check(
        provider: Arc<CryptoProvider>,
    ) -> Result<rustls_platform_verifier::Verifier, rustls::Error> {
        LOADS_ON_CHECK.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        no_roots(provider)
    }

    fn check(roots: &LazyRoots) -> Result<ServerCertVerified, rustls::Error> {
        let name = ServerName::try_from("example.com").expect("name");
        roots.verify_server_cert(
            &CertificateDer::from(vec![0x30, 0x00]),
            &[],
            &name,
            &[],
            UnixTime::now(),
        )
    }

    #[test]
    fn roots_load_once_at_the_first_certificate_check_and_without_them_it_fails() {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let roots = LazyRoots::new(provider, count_on_check);
        assert_eq!(LOADS_ON_CHECK.load(std::sync::atomic::Ordering::SeqCst), 0);
        assert!(check(&roots).is_err());
        assert!(check(&roots).is_err());
        assert_eq!(LOADS_ON_CHECK.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[test]
    fn the_platform_roots_still_refuse_a_certificate_they_did_not_issue() {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        assert!(check(&LazyRoots::new(provider, platform_roots)).is_err());
    }

    #[test]
    fn the_tls_set_up_offers_h2_then_http1_with_sni() {
        let tls = tls_config(no_roots).expect("tls config");
        assert_eq!(tls.alpn_protocols, [b"h2".to_vec(), b"http/1.1".to_vec()]);
        assert!(tls.enable_sni);
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
