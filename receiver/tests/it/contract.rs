//! What the receiver answers, over HTTP/1.1 and h2c.

use std::time::Duration;

use http::{header, StatusCode, Version};
use receiver::HELLO;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{bounded, client, receiver, url};

#[tokio::test]
async fn get_root_says_hello() {
    bounded(async {
        let server = receiver().await;
        let response = client()
            .get(url(server.addr(), "/"))
            .send()
            .await
            .expect("response");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "text/plain; charset=utf-8"
        );
        assert_eq!(response.text().await.expect("body"), HELLO);
        assert_eq!(HELLO, "Hello from the receiving service!");
    })
    .await;
}

#[tokio::test]
async fn head_root_has_no_body() {
    bounded(async {
        let server = receiver().await;
        let response = client()
            .head(url(server.addr(), "/"))
            .send()
            .await
            .expect("response");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[header::CONTENT_LENGTH], "33");
        assert_eq!(response.text().await.expect("body"), "");
    })
    .await;
}

#[tokio::test]
async fn other_paths_are_not_found() {
    bounded(async {
        let server = receiver().await;
        for path in ["/x", "/favicon.ico", "//"] {
            let response = client()
                .get(url(server.addr(), path))
                .send()
                .await
                .expect("response");
            assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        }
    })
    .await;
}

#[tokio::test]
async fn other_methods_are_not_allowed() {
    bounded(async {
        let server = receiver().await;
        for method in [http::Method::POST, http::Method::PUT, http::Method::DELETE] {
            let response = client()
                .request(method.clone(), url(server.addr(), "/"))
                .send()
                .await
                .expect("response");
            assert_eq!(
                response.status(),
                StatusCode::METHOD_NOT_ALLOWED,
                "{method}"
            );
            assert_eq!(response.headers()[header::ALLOW], "GET, HEAD");
        }
    })
    .await;
}

#[tokio::test]
async fn h2c_with_prior_knowledge() {
    bounded(async {
        let server = receiver().await;
        let h2 = reqwest::Client::builder()
            .no_proxy()
            .http2_prior_knowledge()
            .build()
            .expect("client");
        let response = h2
            .get(url(server.addr(), "/"))
            .send()
            .await
            .expect("response");
        assert_eq!(response.version(), Version::HTTP_2);
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.text().await.expect("body"), HELLO);
    })
    .await;
}

#[tokio::test]
async fn slow_request_head_is_cut_off() {
    bounded(async {
        let server = receiver().await;
        let mut conn = tokio::net::TcpStream::connect(server.addr())
            .await
            .expect("connect");
        // Half a request head, then nothing: the header read timeout (500 ms
        // in tests) must close the connection rather than wait forever.
        conn.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
            .await
            .expect("write");
        let mut rest = Vec::new();
        // Without the timeout this read would wait for ever.
        let _ = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut rest))
            .await
            .expect("the server closes a connection stuck in its request head");
        let text = String::from_utf8_lossy(&rest);
        assert!(
            !text.contains(HELLO),
            "no answer to an incomplete head: {text}"
        );
    })
    .await;
}

#[tokio::test]
async fn oversized_headers_get_431() {
    bounded(async {
        let server = receiver().await;
        let response = client()
            .get(url(server.addr(), "/"))
            .header("x-padding", "a".repeat(100 * 1024))
            .send()
            .await
            .expect("response");
        assert_eq!(
            response.status(),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
    })
    .await;
}

#[tokio::test]
async fn stop_closes_the_listener_and_returns() {
    bounded(async {
        let server = receiver().await;
        let addr = server.addr();
        server.stop().await;
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    })
    .await;
}
