//! `GET /`: call the receiver with an ID token and relay its answer, status
//! included, behind the tutorial's prefix.

use std::{sync::Arc, time::Duration};

use bytes::BytesMut;
use cloud_run::{
    client::{read_capped, BodyError},
    response::{self, readiness, route, text, Chain, Route},
    Body, HttpError,
};
use http::{header::AUTHORIZATION, HeaderMap, HeaderName, Request, Response, StatusCode};
use reqwest::Url;
use tracing::{debug, warn};

use crate::{cache::TokenCache, config::TokenHeader, token::TokenError};

/// What the sender puts before the receiver's body.
pub const PREFIX: &str = "Response from receiving service: ";

/// Trace headers passed on, so the receiver's logs join the caller's trace.
/// Nothing else of the caller's request is forwarded, least of all its
/// `Authorization`.
const FORWARDED: [HeaderName; 3] = [
    HeaderName::from_static("traceparent"),
    HeaderName::from_static("tracestate"),
    HeaderName::from_static("x-cloud-trace-context"),
];

/// Why a relay failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RelayError {
    /// No ID token: the sender's own dependency is down. Its message is a
    /// fixed phrase; what the upstream said is only in its sources.
    #[error(transparent)]
    Token(TokenError),
    /// The receiver (or something in front of it) answered with a redirect.
    /// It is not followed: the token would go wherever it points.
    #[error("receiving service answered with a redirect ({status}), not followed")]
    Redirect {
        /// The 3xx status.
        status: u16,
        /// Where it pointed, for the log.
        #[source]
        location: RedirectTarget,
    },
    /// No connection to the receiver, or it broke before an answer.
    #[error("receiving service unreachable")]
    Unreachable(#[source] reqwest::Error),
    /// The receiver took longer than `REQUEST_TIMEOUT`.
    #[error("receiving service did not answer within {0:?}")]
    Timeout(Duration),
    /// The receiver's body is larger than the sender buffers.
    #[error("receiving service's answer is larger than {0} bytes")]
    TooLarge(usize),
    /// The receiver's body broke off.
    #[error("receiving service's answer broke off")]
    Broken(#[source] reqwest::Error),
}

impl HttpError for RelayError {
    fn status(&self) -> StatusCode {
        match self {
            Self::Token(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::Unreachable(_) | Self::Redirect { .. } | Self::TooLarge(_) | Self::Broken(_) => {
                StatusCode::BAD_GATEWAY
            }
        }
    }
}

/// Where a refused redirect pointed: logged, never passed on.
#[derive(Debug, thiserror::Error)]
#[error("it pointed to {0:?}")]
pub(crate) struct RedirectTarget(String);

/// The relay: one per process, shared by every request.
#[derive(Debug)]
pub(crate) struct Relay {
    http: reqwest::Client,
    target: Url,
    tokens: Option<Arc<TokenCache>>,
    header: TokenHeader,
    timeout: Duration,
    max_body: usize,
}

impl Relay {
    /// A relay to `target`, presenting tokens from `tokens` (if any) in
    /// `header`.
    pub(crate) fn new(
        http: reqwest::Client,
        target: Url,
        tokens: Option<Arc<TokenCache>>,
        header: TokenHeader,
        timeout: Duration,
        max_body: usize,
    ) -> Self {
        Self {
            http,
            target,
            tokens,
            header,
            timeout,
            max_body,
        }
    }

    /// The metadata server the tokens come from, if they do.
    pub(crate) fn metadata(&self) -> Option<&cloud_run::metadata::MetadataClient> {
        self.tokens.as_ref().and_then(|tokens| tokens.metadata())
    }

    /// Starts fetching the first token, and keeps trying until one is held.
    pub(crate) fn fetch_at_start(&self) {
        if let Some(tokens) = &self.tokens {
            tokens.keep_until_held();
        }
    }

    /// Whether the sender can serve: it holds a token, or needs none.
    fn readiness(&self) -> Result<(), String> {
        self.tokens
            .as_ref()
            .map_or(Ok(()), |tokens| tokens.readiness())
    }

    /// Answers one request to the sender.
    pub(crate) async fn handle<B>(&self, req: Request<B>) -> Response<Body> {
        match route(&req) {
            Route::Root => {}
            Route::Ready => {
                let ready = self.readiness();
                return readiness(ready.as_ref().map(|_| ()).map_err(String::as_str));
            }
            Route::Answered(response) => return response,
        }
        match self.relay(req.headers()).await {
            Ok(response) => response,
            Err(err) => {
                let status = err.status();
                warn!(status = status.as_u16(), error = %Chain(&err), "relay failed");
                response::error(&err)
            }
        }
    }

    async fn relay(&self, incoming: &HeaderMap) -> Result<Response<Body>, RelayError> {
        let mut request = self.http.get(self.target.clone()).timeout(self.timeout);
        for name in &FORWARDED {
            for value in incoming.get_all(name) {
                request = request.header(name, value);
            }
        }
        if let Some(tokens) = &self.tokens {
            let token = tokens.get().await.map_err(RelayError::Token)?;
            if self.header != TokenHeader::Serverless {
                request = request.header(AUTHORIZATION, token.bearer());
            }
            if self.header != TokenHeader::Authorization {
                request = request.header(
                    cloud_run::headers::X_SERVERLESS_AUTHORIZATION,
                    token.bearer(),
                );
            }
        }
        let answer = request.send().await.map_err(|err| self.send_error(err))?;
        let status = answer.status();
        if status.is_redirection() {
            let location = answer
                .headers()
                .get(http::header::LOCATION)
                .map(|v| cloud_run::client::one_line(v.as_bytes()))
                .unwrap_or_default();
            return Err(RelayError::Redirect {
                status: status.as_u16(),
                location: RedirectTarget(location),
            });
        }
        let body = read_capped(answer, self.max_body)
            .await
            .map_err(|err| match err {
                BodyError::TooLarge(cap) => RelayError::TooLarge(cap),
                BodyError::Read(err) if err.is_timeout() => RelayError::Timeout(self.timeout),
                BodyError::Read(err) => RelayError::Broken(err),
            })?;
        debug!(
            status = status.as_u16(),
            bytes = body.len(),
            "receiver answered"
        );
        let mut relayed = BytesMut::with_capacity(PREFIX.len() + body.len());
        relayed.extend_from_slice(PREFIX.as_bytes());
        relayed.extend_from_slice(&body);
        Ok(text(status, relayed.freeze()))
    }

    fn send_error(&self, err: reqwest::Error) -> RelayError {
        if err.is_timeout() {
            RelayError::Timeout(self.timeout)
        } else {
            RelayError::Unreachable(err)
        }
    }
}
