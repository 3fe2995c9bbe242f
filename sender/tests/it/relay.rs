//! The relay itself: body, status, token, headers.

use bytes::Bytes;
use cloud_run::Service as _;
use http::{header, StatusCode};
use sender::PREFIX;

use crate::support::{
    bounded, client, hour, root, sender_config, start_sender, FakeMetadata, FakeReceiver,
    ReceiverMode, Tutorial,
};

#[tokio::test]
async fn relays_the_hello_with_the_minted_token() {
    bounded(async {
        let chain = Tutorial::start(FakeMetadata::new(vec![hour()]), FakeReceiver::hello()).await;
        let (status, body) = chain.get().await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            body,
            "Response from receiving service: Hello from the receiving service!"
        );
        let minted = chain.metadata.minted();
        assert_eq!(minted.len(), 1);
        assert_eq!(
            chain.receiver.authorizations(),
            vec![Some(format!("Bearer {}", minted[0]))]
        );
        let calls = chain.metadata.calls.lock().expect("lock").clone();
        assert_eq!(
            calls[0].path,
            "/computeMetadata/v1/instance/service-accounts/default/identity"
        );
        let receiver_origin = root(chain.receiver_addr());
        assert_eq!(
            calls[0].audience.as_deref(),
            Some(receiver_origin.trim_end_matches('/'))
        );
        assert_eq!(calls[0].format.as_deref(), Some("full"));
        assert_eq!(calls[0].flavor.as_deref(), Some("Google"));
    })
    .await;
}

#[tokio::test]
async fn works_with_the_real_receiver() {
    bounded(async {
        let receiver = receiver::Config {
            server: crate::support::server_config(),
            auth: None,
        };
        let listener = tokio::net::TcpListener::bind(receiver.server.addr)
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let _receiver = cloud_run::testing::Spawned::new(addr, move |stop| async move {
            receiver::Receiver::new(receiver)
                .await
                .expect("receiver")
                .run(listener, stop)
                .await;
        });
        let sender = start_sender(sender_config(addr, None)).await;
        let response = client()
            .get(root(sender.addr()))
            .send()
            .await
            .expect("response");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "text/plain; charset=utf-8"
        );
        assert_eq!(
            response.text().await.expect("body"),
            format!("{PREFIX}{}", receiver::HELLO)
        );
    })
    .await;
}

#[tokio::test]
async fn relays_the_receivers_status_and_page() {
    bounded(async {
        let page = "<html><head><title>403 Forbidden</title></head></html>\n";
        let chain = Tutorial::start(
            FakeMetadata::new(vec![hour()]),
            FakeReceiver::new(ReceiverMode::Answer(
                StatusCode::FORBIDDEN,
                Bytes::from_static(page.as_bytes()),
            )),
        )
        .await;
        let (status, body) = chain.get().await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(body, format!("{PREFIX}{page}"));
    })
    .await;
}

#[tokio::test]
async fn keeps_the_receiver_urls_path_and_query() {
    bounded(async {
        let receiver = FakeReceiver::hello();
        let receiver_server = receiver.start().await;
        let mut config = sender_config(receiver_server.addr(), None);
        config.receiver_url = format!("http://{}/api/hello?lang=en", receiver_server.addr())
            .parse()
            .expect("url");
        let sender = start_sender(config).await;
        let response = client()
            .get(format!("{}?ignored=1", root(sender.addr())))
            .send()
            .await
            .expect("response");
        assert_eq!(response.status(), StatusCode::OK);
        let seen = receiver.requests.lock().expect("lock")[0].uri.clone();
        assert_eq!(
            seen.path_and_query().map(|p| p.as_str()),
            Some("/api/hello?lang=en")
        );
    })
    .await;
}

#[tokio::test]
async fn never_forwards_the_callers_authorization() {
    bounded(async {
        let chain = Tutorial::start(FakeMetadata::new(vec![hour()]), FakeReceiver::hello()).await;
        let response = client()
            .get(root(chain.sender.addr()))
            .header(header::AUTHORIZATION, "Bearer callers-own-secret")
            .header(header::COOKIE, "session=callers-cookie")
            .send()
            .await
            .expect("response");
        assert_eq!(response.status(), StatusCode::OK);
        let minted = chain.metadata.minted();
        assert_eq!(
            chain.receiver.authorizations(),
            vec![Some(format!("Bearer {}", minted[0]))]
        );
        let seen = &chain.receiver.requests.lock().expect("lock")[0];
        assert!(seen.headers.get(header::COOKIE).is_none());
    })
    .await;
}

#[tokio::test]
async fn without_a_token_source_nothing_is_sent_or_fetched() {
    bounded(async {
        let metadata = FakeMetadata::new(vec![hour()]);
        let chain = Tutorial::start_with(metadata, FakeReceiver::hello(), |config| {
            config.token_source = sender::TokenSource::None;
        })
        .await;
        let response = client()
            .get(root(chain.sender.addr()))
            .header(header::AUTHORIZATION, "Bearer callers-own-secret")
            .send()
            .await
            .expect("response");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(chain.receiver.authorizations(), vec![None]);
        assert_eq!(chain.metadata.call_count(), 0);
    })
    .await;
}

#[tokio::test]
async fn forwards_trace_headers() {
    bounded(async {
        let chain = Tutorial::start(FakeMetadata::new(vec![hour()]), FakeReceiver::hello()).await;
        let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let cloud_trace = "4bf92f3577b34da6a3ce929d0e0e4736/1;o=1";
        client()
            .get(root(chain.sender.addr()))
            .header("traceparent", traceparent)
            .header("x-cloud-trace-context", cloud_trace)
            .send()
            .await
            .expect("response");
        let seen = &chain.receiver.requests.lock().expect("lock")[0];
        assert_eq!(seen.headers["traceparent"], traceparent);
        assert_eq!(seen.headers["x-cloud-trace-context"], cloud_trace);
    })
    .await;
}

#[tokio::test]
async fn other_paths_and_methods_answer_like_the_receiver() {
    bounded(async {
        // Nothing fetched at start either: only a relayed request needs one.
        let chain = Tutorial::start_with(
            FakeMetadata::new(vec![hour()]),
            FakeReceiver::hello(),
            |config| config.fetch_at_start = false,
        )
        .await;
        let base = root(chain.sender.addr());
        let r = client().get(format!("{base}x")).send().await.expect("404");
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let r = client().post(&base).send().await.expect("405");
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(r.headers()[header::ALLOW], "GET, HEAD");
        assert_eq!(
            chain.metadata.call_count(),
            0,
            "no token for a request not relayed"
        );
        assert!(chain.receiver.requests.lock().expect("lock").is_empty());
    })
    .await;
}

#[tokio::test]
async fn the_token_header_is_chosen_by_config() {
    bounded(async {
        for (choice, in_authorization, in_serverless) in [
            (sender::TokenHeader::Authorization, true, false),
            (sender::TokenHeader::Serverless, false, true),
            (sender::TokenHeader::Both, true, true),
        ] {
            let chain = Tutorial::start_with(
                FakeMetadata::new(vec![hour()]),
                FakeReceiver::hello(),
                |config| config.token_header = choice,
            )
            .await;
            assert_eq!(chain.get().await.0, StatusCode::OK);
            let bearer = format!("Bearer {}", chain.metadata.minted()[0]);
            let seen = &chain.receiver.requests.lock().expect("lock")[0];
            let value = |name: &str| seen.headers.get(name).map(|v| v.to_str().expect("ascii"));
            assert_eq!(
                value("authorization"),
                in_authorization.then_some(bearer.as_str()),
                "{choice:?}"
            );
            assert_eq!(
                value("x-serverless-authorization"),
                in_serverless.then_some(bearer.as_str()),
                "{choice:?}"
            );
        }
    })
    .await;
}

/// A 302 from the receiver would carry `X-Serverless-Authorization` to
/// whatever `Location` names (reqwest drops only `Authorization` on a hop to
/// another origin). It is answered 502, never followed, never passed on.
#[tokio::test]
async fn a_redirect_from_the_receiver_is_502_and_never_followed() {
    bounded(async {
        for header in [
            sender::TokenHeader::Serverless,
            sender::TokenHeader::Both,
            sender::TokenHeader::Authorization,
        ] {
            let elsewhere = FakeReceiver::hello();
            let elsewhere_server = elsewhere.start().await;
            let location = format!("http://{}/stolen", elsewhere_server.addr());
            let chain = Tutorial::start_with(
                FakeMetadata::new(vec![hour()]),
                FakeReceiver::new(ReceiverMode::Redirect(StatusCode::FOUND, location.clone())),
                |config| config.token_header = header,
            )
            .await;
            let response = client()
                .get(root(chain.sender.addr()))
                .send()
                .await
                .expect("response");
            assert_eq!(response.status(), StatusCode::BAD_GATEWAY, "{header:?}");
            assert!(response.headers().get(header::LOCATION).is_none());
            let body = response.text().await.expect("body");
            assert_eq!(
                body,
                "receiving service answered with a redirect (302), not followed\n"
            );
            assert!(!body.contains(&location));
            assert_eq!(chain.receiver.request_count(), 1);
            assert_eq!(
                elsewhere.request_count(),
                0,
                "{header:?}: the token went elsewhere"
            );
        }
    })
    .await;
}
