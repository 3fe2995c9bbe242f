//! The `Host` rule: a web page that rebinds its own name to 127.0.0.1 reaches
//! the emulator with its own name in `Host` (HTTP/1) or `:authority`
//! (HTTP/2), and must not get a token.

use std::net::SocketAddr;

use reqwest::{StatusCode, Version};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{bounded, emulator, identity_path, url};

const AUDIENCE: &str = "http://127.0.0.1:8081";

/// Sends `head` (request line and headers, without the blank line that ends
/// them) on a new connection; the whole answer, read until the server
/// closes.
async fn raw(addr: SocketAddr, head: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("{head}\r\nMetadata-Flavor: Google\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.expect("read");
    answer
}

/// `GET path` with these header lines.
async fn get(addr: SocketAddr, path: &str, headers: &[String]) -> String {
    let mut head = format!("GET {path} HTTP/1.1");
    for line in headers {
        head.push_str("\r\n");
        head.push_str(line);
    }
    raw(addr, &head).await
}

/// Asserts `answer` is a 403 naming the host rule, with no token in it.
fn assert_refused(answer: &str, what: &str) {
    assert!(answer.starts_with("HTTP/1.1 403"), "{what}: {answer}");
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    assert!(
        body.contains("host"),
        "{what}: the reason names the host rule: {body}"
    );
    assert!(
        !body.contains("eyJ"),
        "{what}: a token in the refusal: {body}"
    );
}

#[tokio::test]
async fn a_foreign_host_is_refused_and_mints_nothing() {
    bounded(async {
        let server = emulator().await;
        let addr = server.addr();
        let port = addr.port();
        let identity = identity_path(AUDIENCE, "full");
        for host in [
            "evil.example".to_owned(),
            format!("evil.example:{port}"),
            // Names that merely start or end like an allowed one.
            "127.0.0.1.evil.example".to_owned(),
            "localhost.evil.example".to_owned(),
            "metadata.google.internal.evil.example".to_owned(),
            "evil-metadata.google.internal".to_owned(),
            "xmetadata".to_owned(),
            "169.254.169.254.nip.io".to_owned(),
            // Addresses that are not loopback, or not written as one.
            "0.0.0.0".to_owned(),
            "10.0.0.1:80".to_owned(),
            "169.254.169.253".to_owned(),
            "[::2]".to_owned(),
            "[::ffff:10.0.0.1]".to_owned(),
            "127.1".to_owned(),
            "2130706433".to_owned(),
            // Malformed: userinfo, a bad port, a bare IPv6 address, nothing.
            "127.0.0.1@evil.example".to_owned(),
            "evil.example@127.0.0.1".to_owned(),
            "127.0.0.1:http".to_owned(),
            "127.0.0.1:99999".to_owned(),
            "::1".to_owned(),
            "[::1".to_owned(),
            String::new(),
        ] {
            let answer = get(addr, &identity, &[format!("Host: {host}")]).await;
            assert_refused(&answer, &format!("Host: {host:?}"));
        }
        // Every path, not only the identity one: the JWKS and the root too.
        for path in [
            "/",
            "/oauth2/v3/certs",
            "/computeMetadata/v1/project/project-id",
        ] {
            let answer = get(addr, path, &["Host: evil.example".to_owned()]).await;
            assert_refused(&answer, path);
        }
    })
    .await;
}

#[tokio::test]
async fn a_missing_repeated_or_overridden_host_is_refused() {
    bounded(async {
        let server = emulator().await;
        let addr = server.addr();
        let identity = identity_path(AUDIENCE, "full");
        let answer = get(addr, &identity, &[]).await;
        assert_refused(&answer, "no Host");
        let answer = get(
            addr,
            &identity,
            &[
                "Host: 127.0.0.1".to_owned(),
                "Host: evil.example".to_owned(),
            ],
        )
        .await;
        assert_refused(&answer, "two Host headers");
        // In absolute form the request line names the host; an allowed
        // `Host` beside it does not make it allowed.
        let answer = get(
            addr,
            &format!("http://evil.example{identity}"),
            &["Host: 127.0.0.1".to_owned()],
        )
        .await;
        assert_refused(&answer, "absolute form");
    })
    .await;
}

#[tokio::test]
async fn every_allowed_host_form_is_served() {
    bounded(async {
        let server = emulator().await;
        let addr = server.addr();
        let port = addr.port();
        let identity = identity_path(AUDIENCE, "full");
        for host in [
            "127.0.0.1".to_owned(),
            format!("127.0.0.1:{port}"),
            "127.1.2.3:80".to_owned(),
            "localhost".to_owned(),
            format!("localhost:{port}"),
            "LocalHost".to_owned(),
            "localhost.".to_owned(),
            "[::1]".to_owned(),
            format!("[::1]:{port}"),
            "[0:0:0:0:0:0:0:1]:80".to_owned(),
            "metadata.google.internal".to_owned(),
            "metadata.google.internal:80".to_owned(),
            "Metadata.Google.Internal".to_owned(),
            "metadata".to_owned(),
            format!("metadata:{port}"),
            "169.254.169.254".to_owned(),
            "169.254.169.254:80".to_owned(),
        ] {
            let answer = get(addr, &identity, &[format!("Host: {host}")]).await;
            assert!(answer.starts_with("HTTP/1.1 200"), "Host: {host}: {answer}");
            let body = answer.split_once("\r\n\r\n").map_or("", |(_, body)| body);
            assert!(body.starts_with("eyJ"), "Host: {host}: {body}");
        }
        // Absolute form with an allowed host.
        let answer = get(
            addr,
            &format!("http://metadata.google.internal{identity}"),
            &["Host: metadata.google.internal".to_owned()],
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    })
    .await;
}

#[tokio::test]
async fn http2_authority_is_checked() {
    bounded(async {
        let server = emulator().await;
        let addr = server.addr();
        let identity = identity_path(AUDIENCE, "full");
        // h2c with prior knowledge, as Cloud Run's front end would speak it;
        // `resolve` points the foreign name at the emulator, as rebinding
        // would, so `:authority` carries that name.
        let client = reqwest::Client::builder()
            .no_proxy()
            .http2_prior_knowledge()
            .resolve("evil.example", addr)
            .resolve("metadata.google.internal", addr)
            .build()
            .expect("client");
        let get = |url: String| client.get(url).header("Metadata-Flavor", "Google").send();
        let port = addr.port();
        let response = get(format!("http://evil.example:{port}{identity}"))
            .await
            .expect("response");
        assert_eq!(response.version(), Version::HTTP_2);
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        let body = response.text().await.expect("body");
        assert!(body.contains("host") && !body.contains("eyJ"), "{body}");
        for url in [
            url(addr, &identity),
            format!("http://metadata.google.internal:{port}{identity}"),
        ] {
            let response = get(url.clone()).await.expect("response");
            assert_eq!(response.version(), Version::HTTP_2);
            assert_eq!(response.status(), StatusCode::OK, "{url}");
            let body = response.text().await.expect("body");
            assert!(body.starts_with("eyJ"), "{url}: {body}");
        }
    })
    .await;
}
