//! Plain-text responses, routing for the single `/` both services serve, and
//! the one place where an error becomes a status code.

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;

/// The response body of both services: every answer is small and complete.
pub type Body = Full<Bytes>;

const TEXT_PLAIN: HeaderValue = HeaderValue::from_static("text/plain; charset=utf-8");

/// A `text/plain; charset=utf-8` response.
pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, TEXT_PLAIN);
    response
}

/// An error that knows which status it answers with.
pub trait HttpError: std::error::Error {
    /// The status the caller gets.
    fn status(&self) -> StatusCode;
}

/// The response for `err`: its status and its one-line message. The message
/// is the error's own `Display`, never its sources, which may hold details
/// (addresses, upstream text) that belong in logs only: an error that reaches
/// here keeps whatever an upstream said out of its `Display` (the sender's
/// `TokenError` is a fixed phrase per kind of failure) and in its sources.
pub fn error(err: &dyn HttpError) -> Response<Body> {
    text(err.status(), format!("{err}\n"))
}

/// Where every service answers whether it can serve: a startup probe's
/// path (`--startup-probe=httpGet.path=/ready`). Not a path ending in `z`,
/// some of which Cloud Run reserves, and not under `/_ah/`.
pub const READY_PATH: &str = "/ready";

/// The answer on [`READY_PATH`]: 200 `ready`, or 503 with the one-line
/// reason the service cannot serve yet. Answered by the service itself,
/// without authentication and without relaying it.
pub fn readiness(ready: Result<(), &str>) -> Response<Body> {
    match ready {
        Ok(()) => text(StatusCode::OK, "ready\n"),
        Err(reason) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        ),
    }
}

/// Which of the two resources every service serves a request is for.
#[derive(Debug)]
pub enum Route {
    /// `GET` or `HEAD /`: the service itself.
    Root,
    /// `GET` or `HEAD` [`READY_PATH`]: readiness, answered by the service.
    Ready,
    /// Anything else, answered here: 404 for another path, 405 (with
    /// `Allow`) for another method.
    Answered(Response<Body>),
}

/// Routes a request to `/`, to [`READY_PATH`], or answers it.
pub fn route<B>(req: &Request<B>) -> Route {
    let resource = match req.uri().path() {
        "/" => Route::Root,
        READY_PATH => Route::Ready,
        _ => return Route::Answered(text(StatusCode::NOT_FOUND, "not found\n")),
    };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return Route::Answered(response);
    }
    resource
}

/// Formats an error with its chain of sources, for logs.
#[derive(Debug)]
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(err) = source {
            write!(f, ": {err}")?;
            source = err.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: Method, path: &str) -> Request<()> {
        Request::builder()
            .method(method)
            .uri(path)
            .body(())
            .expect("request")
    }

    #[test]
    fn root_and_ready_are_served_for_get_and_head() {
        for method in [Method::GET, Method::HEAD] {
            assert!(matches!(route(&request(method.clone(), "/")), Route::Root));
            assert!(matches!(
                route(&request(method.clone(), "/?q=1")),
                Route::Root
            ));
            assert!(matches!(route(&request(method, READY_PATH)), Route::Ready));
        }
    }

    #[test]
    fn other_paths_and_methods() {
        let Route::Answered(r) = route(&request(Method::GET, "/x")) else {
            panic!("404 expected");
        };
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        for path in ["/", READY_PATH] {
            let Route::Answered(r) = route(&request(Method::POST, path)) else {
                panic!("405 expected");
            };
            assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
            assert_eq!(r.headers()[header::ALLOW], "GET, HEAD");
        }
    }

    #[test]
    fn chain_lists_sources() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] std::io::Error);
        let err = Outer(std::io::Error::other("inner"));
        assert_eq!(Chain(&err).to_string(), "outer: inner");
    }
}
