//! A request's way to the container: the headers Cloud Run's front end
//! adds and drops, HTTP/1.1 or (with `--use-http2`) h2c, the request
//! timeout, and the container's answer streamed back.

use std::{
    future::Future,
    net::SocketAddr,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use cloud_run::HttpError;
use http::{uri::Authority, Request, Response, StatusCode, Uri, Version};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::{TokioExecutor, TokioTimer},
};
use reqwest::Url;

use crate::headers::{add_forwarded, add_trace, strip_hop_by_hop};

/// How long an unused connection to the container is kept.
const POOL_IDLE: Duration = Duration::from_secs(90);

/// Why the container gave no answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ForwardError {
    /// No connection, or it broke before an answer: Cloud Run answers 503.
    #[error("the container is unreachable")]
    Unreachable(#[source] hyper_util::client::legacy::Error),
    /// No answer within the request timeout: 504.
    #[error("the container did not answer within {0:?}")]
    Timeout(Duration),
    /// The request's path cannot be put on the upstream's URL.
    #[error("the request's path cannot be forwarded")]
    Uri(#[source] http::Error),
}

impl HttpError for ForwardError {
    fn status(&self) -> StatusCode {
        match self {
            Self::Unreachable(_) | Self::Uri(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
        }
    }
}

/// The client to the one container, shared by every request.
#[derive(Debug)]
pub(crate) struct Forwarder {
    client: Client<HttpConnector, Incoming>,
    authority: Authority,
    version: Version,
    timeout: Duration,
}

impl Forwarder {
    /// A client for `upstream` (`http://host:port/`, checked by the config),
    /// speaking h2c with prior knowledge when `use_http2`, as Cloud Run does
    /// to a service deployed with `--use-http2`.
    pub(crate) fn new(upstream: &Url, use_http2: bool, timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(timeout.min(Duration::from_secs(10))));
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE)
            .http2_only(use_http2)
            .build(connector);
        let host = upstream.host_str().unwrap_or("127.0.0.1");
        let authority = match upstream.port_or_known_default() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        };
        Self {
            client,
            authority: authority
                .parse()
                .unwrap_or_else(|_| Authority::from_static("127.0.0.1")),
            version: if use_http2 {
                Version::HTTP_2
            } else {
                Version::HTTP_11
            },
            timeout,
        }
    }

    /// Forwards `req`, from `peer`, with the headers Cloud Run's front end
    /// adds; the container's answer, hop-by-hop headers dropped.
    pub(crate) async fn forward(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Result<Response<Deadline>, ForwardError> {
        // Cloud Run's request timeout covers the whole answer, not only
        // its head.
        let deadline = tokio::time::Instant::now() + self.timeout;
        let (mut parts, body) = req.into_parts();
        // `TE: trailers` is the one TE HTTP/2 allows, and gRPC needs it.
        let trailers = parts
            .headers
            .get(http::header::TE)
            .is_some_and(|te| te.as_bytes().eq_ignore_ascii_case(b"trailers"));
        strip_hop_by_hop(&mut parts.headers);
        if trailers && self.version == Version::HTTP_2 {
            parts
                .headers
                .insert(http::header::TE, http::HeaderValue::from_static("trailers"));
        }
        add_forwarded(&mut parts.headers, peer.ip(), "http");
        add_trace(&mut parts.headers);
        let path = parts
            .uri
            .path_and_query()
            .map_or("/", |path| path.as_str())
            .to_owned();
        parts.uri = Uri::builder()
            .scheme("http")
            .authority(self.authority.clone())
            .path_and_query(path)
            .build()
            .map_err(ForwardError::Uri)?;
        parts.version = self.version;
        let request = Request::from_parts(parts, body);
        let mut response = tokio::time::timeout_at(deadline, self.client.request(request))
            .await
            .map_err(|_| ForwardError::Timeout(self.timeout))?
            .map_err(ForwardError::Unreachable)?;
        strip_hop_by_hop(response.headers_mut());
        Ok(response.map(|body| Deadline {
            body,
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
        }))
    }
}

/// The container's answer, ended with an error (the caller sees the
/// response break off) if it is not whole by the request's deadline.
#[derive(Debug)]
pub struct Deadline {
    body: Incoming,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

/// Why a forwarded answer broke off.
#[derive(Debug, thiserror::Error)]
enum BodyError {
    #[error("the container's answer broke off")]
    Upstream(#[source] hyper::Error),
    #[error("the container's answer was not whole within the request timeout")]
    Timeout,
}

impl Body for Deadline {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.body).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(|e| BodyError::Upstream(e).into())));
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(BodyError::Timeout.into()))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
