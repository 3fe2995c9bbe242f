//! A request's way to the container: the headers Cloud Run's front end
//! adds and drops, HTTP/1.1 or (with `--use-http2`) h2c, the request
//! timeout, and the container's answer streamed back.

use std::{net::SocketAddr, time::Duration};

use cloud_run::HttpError;
use http::{uri::Authority, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
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
    ) -> Result<Response<Incoming>, ForwardError> {
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
        let mut response = tokio::time::timeout(self.timeout, self.client.request(request))
            .await
            .map_err(|_| ForwardError::Timeout(self.timeout))?
            .map_err(ForwardError::Unreachable)?;
        strip_hop_by_hop(response.headers_mut());
        Ok(response)
    }
}
