//! What the container receives, and the front end's own answers when it
//! cannot: h2c with --use-http2, the headers Cloud Run adds and drops, 503
//! when the container is unreachable, 504 past the request timeout.

use std::time::Duration;

use http::{StatusCode, Version};

use crate::support::{bounded, client, policy_file, service_policy, Container, Front};

async fn public(
    name: &str,
    container: Container,
    tweak: impl FnOnce(&mut cloud_run_ingress::Config),
) -> Front {
    let policy = policy_file(name, &service_policy("roles/run.invoker", &["allUsers"]));
    Front::start(&policy, container, tweak).await
}

#[tokio::test]
async fn http1_by_default_and_h2c_with_use_http2() {
    bounded(async {
        let front = public("http1", Container::start(false).await, |_| {}).await;
        assert_eq!(front.get("/", &[]).await.0, StatusCode::OK);
        assert_eq!(front.container.last().version, Version::HTTP_11);

        let front = public("h2c", Container::start(false).await, |c| c.use_http2 = true).await;
        assert_eq!(front.get("/x?y=1", &[]).await.0, StatusCode::OK);
        let seen = front.container.last();
        assert_eq!(seen.version, Version::HTTP_2);
        assert_eq!(seen.path, "/x?y=1");
    })
    .await;
}

#[tokio::test]
async fn forwarded_for_proto_and_a_trace_are_added_and_hop_by_hop_headers_dropped() {
    bounded(async {
        let front = public("headers", Container::start(false).await, |_| {}).await;
        let (status, _) = front
            .get(
                "/",
                &[
                    ("connection", "x-hop".to_owned()),
                    ("x-hop", "1".to_owned()),
                    ("x-kept", "1".to_owned()),
                ],
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        let headers = front.container.last().headers;
        assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
        assert_eq!(headers["x-forwarded-proto"], "http");
        assert!(headers.contains_key("traceparent"));
        assert!(headers.contains_key("x-cloud-trace-context"));
        assert!(!headers.contains_key("x-hop"));
        assert_eq!(headers["x-kept"], "1");

        // The caller's own trace is kept, not replaced.
        let theirs = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        front.get("/", &[("traceparent", theirs.to_owned())]).await;
        let headers = front.container.last().headers;
        assert_eq!(headers["traceparent"], theirs);
        assert!(!headers.contains_key("x-cloud-trace-context"));
    })
    .await;
}

#[tokio::test]
async fn an_unreachable_container_is_503() {
    bounded(async {
        let container = Container::start(false).await;
        let front = public("unreachable", container, |_| {}).await;
        let addr = front.container.server.addr();
        // Stop the container; its port now refuses connections.
        let Front {
            server, container, ..
        } = front;
        container.server.stop().await;
        let response = client()
            .get(format!("http://{}/", server.addr()))
            .send()
            .await
            .expect("answer");
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE, "{addr}");
    })
    .await;
}

#[tokio::test]
async fn past_the_request_timeout_the_caller_gets_504() {
    bounded(async {
        let front = public("timeout", Container::start(true).await, |c| {
            c.timeout = Duration::from_millis(300);
        })
        .await;
        let started = std::time::Instant::now();
        let (status, body) = front.get("/", &[]).await;
        assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert!(started.elapsed() < Duration::from_secs(5));
    })
    .await;
}

#[tokio::test]
async fn the_request_timeout_covers_the_whole_answer_not_only_its_head() {
    bounded(async {
        let front = public("stalled-body", Container::start_stalling().await, |c| {
            c.timeout = Duration::from_millis(300);
        })
        .await;
        let started = std::time::Instant::now();
        let response = client().get(front.url("/")).send().await.expect("head");
        assert_eq!(response.status(), StatusCode::OK);
        let body = tokio::time::timeout(Duration::from_secs(5), response.text())
            .await
            .expect("the answer ends at the deadline instead of hanging");
        assert!(body.is_err(), "a cut answer, not a whole one: {body:?}");
        assert!(started.elapsed() >= Duration::from_millis(300));
    })
    .await;
}
