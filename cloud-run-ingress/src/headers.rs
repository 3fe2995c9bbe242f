//! What Cloud Run's front end does to a request's headers on its way to the
//! container, and the error pages it answers with itself.

use std::net::IpAddr;

use cloud_run::headers::SIGNATURE_REMOVED;
use http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};

const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const X_CLOUD_TRACE_CONTEXT: HeaderName = HeaderName::from_static("x-cloud-trace-context");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// Headers that describe one connection, not the request (RFC 9110 7.6.1),
/// and are never forwarded.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
];

/// Removes the hop-by-hop headers, and those the `Connection` header names.
/// `Transfer-Encoding` goes too: the forwarding side frames the body anew.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    headers.remove(header::TRANSFER_ENCODING);
}

/// Appends the caller's address to `X-Forwarded-For` and sets
/// `X-Forwarded-Proto`, as a load balancer does.
pub(crate) fn add_forwarded(headers: &mut HeaderMap, peer: IpAddr, proto: &'static str) {
    // Every earlier line, in order: a proxy may have sent several.
    let mut chain: Vec<String> = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .collect();
    chain.push(peer.to_string());
    let chain = chain.join(", ");
    if let Ok(value) = HeaderValue::try_from(chain) {
        headers.insert(X_FORWARDED_FOR, value);
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
}

/// Starts a trace for a request that carries none, in both of the formats
/// Cloud Run sends (`traceparent`, `X-Cloud-Trace-Context`), so that the
/// container's logs group by request as they do on Cloud Run.
pub(crate) fn add_trace(headers: &mut HeaderMap) {
    if headers.contains_key(&TRACEPARENT) || headers.contains_key(&X_CLOUD_TRACE_CONTEXT) {
        return;
    }
    let mut ids = [0u8; 24];
    if aws_lc_rs::rand::fill(&mut ids).is_err() {
        return;
    }
    let (trace, span) = ids.split_at(16);
    let trace_hex = hex(trace);
    let span_id = u64::from_be_bytes(span.try_into().unwrap_or([1; 8])).max(1);
    let traceparent = format!("00-{trace_hex}-{span_id:016x}-01");
    let cloud = format!("{trace_hex}/{span_id};o=1");
    for (name, value) in [(TRACEPARENT, traceparent), (X_CLOUD_TRACE_CONTEXT, cloud)] {
        if let Ok(value) = HeaderValue::try_from(value) {
            headers.insert(name, value);
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The token in a header value `Bearer <token>` (scheme matched without
/// regard to case), if that is what it holds.
pub(crate) fn bearer(value: &HeaderValue) -> Option<&str> {
    let value = value.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// `Bearer <header>.<payload>.SIGNATURE_REMOVED_BY_GOOGLE`: the token as
/// Cloud Run passes a checked one on, which nobody can replay.
pub(crate) fn without_signature(token: &str) -> Option<HeaderValue> {
    let (signed, _signature) = token.rsplit_once('.')?;
    let mut value = HeaderValue::try_from(format!("Bearer {signed}.{SIGNATURE_REMOVED}")).ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// The HTML page Google's front end answers a refused request with, naming
/// the status and the path (HTML-escaped), never the token.
pub(crate) fn error_page(status: StatusCode, path: &str) -> String {
    let path = escape(path);
    let (title, sentence) = match status {
        StatusCode::UNAUTHORIZED => (
            "Unauthorized",
            format!("Your client does not have permission to the requested URL <code>{path}</code>."),
        ),
        StatusCode::FORBIDDEN => (
            "Forbidden",
            format!("Your client does not have permission to get URL <code>{path}</code> from this server."),
        ),
        StatusCode::GATEWAY_TIMEOUT => (
            "Gateway Timeout",
            "The upstream server did not respond in time.".to_owned(),
        ),
        _ => (
            "Service Unavailable",
            "The service you requested is not available yet. Please try again in 30 seconds.".to_owned(),
        ),
    };
    let code = status.as_u16();
    format!(
        "<html><head>\n<meta http-equiv=\"content-type\" content=\"text/html;charset=utf-8\">\n\
         <title>{code} {title}</title>\n</head>\n<body text=#000000 bgcolor=#ffffff>\n\
         <h1>Error: {title}</h1>\n<h2>{sentence}</h2>\n<h2></h2>\n</body></html>\n"
    )
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_dropped() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, X-Secret-Hop"),
        );
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        let names: Vec<_> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["x-kept"]);
    }

    #[test]
    fn forwarded_for_appends_the_peer() {
        let mut h = HeaderMap::new();
        add_forwarded(&mut h, "127.0.0.1".parse().expect("ip"), "http");
        assert_eq!(h[&X_FORWARDED_FOR], "127.0.0.1");
        assert_eq!(h[&X_FORWARDED_PROTO], "http");
        h.insert(X_FORWARDED_FOR, HeaderValue::from_static("203.0.113.7"));
        h.append(X_FORWARDED_FOR, HeaderValue::from_static("198.51.100.1"));
        add_forwarded(&mut h, "::1".parse().expect("ip"), "http");
        assert_eq!(h[&X_FORWARDED_FOR], "203.0.113.7, 198.51.100.1, ::1");
        assert_eq!(h.get_all(&X_FORWARDED_FOR).iter().count(), 1);
    }

    #[test]
    fn a_trace_is_added_only_when_the_caller_sent_none() {
        let mut h = HeaderMap::new();
        add_trace(&mut h);
        let traceparent = h[&TRACEPARENT].to_str().expect("ascii").to_owned();
        let parsed = cloud_run::logging::TraceContext::from_headers(&h).expect("valid");
        assert!(traceparent.starts_with(&format!("00-{}-", parsed.trace_id)));
        let mut cloud_only = HeaderMap::new();
        cloud_only.insert(X_CLOUD_TRACE_CONTEXT, h[&X_CLOUD_TRACE_CONTEXT].clone());
        let from_cloud =
            cloud_run::logging::TraceContext::from_headers(&cloud_only).expect("valid");
        assert_eq!(from_cloud.trace_id, parsed.trace_id);
        assert_eq!(from_cloud.span_id, parsed.span_id);

        let mut theirs = HeaderMap::new();
        theirs.insert(
            TRACEPARENT,
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        add_trace(&mut theirs);
        assert_eq!(theirs.len(), 1);
    }

    #[test]
    fn bearer_tokens() {
        assert_eq!(
            bearer(&HeaderValue::from_static("Bearer a.b.c")),
            Some("a.b.c")
        );
        assert_eq!(
            bearer(&HeaderValue::from_static("bearer a.b.c")),
            Some("a.b.c")
        );
        assert_eq!(
            bearer(&HeaderValue::from_static("Basic dXNlcjpwYXNz")),
            None
        );
        assert_eq!(bearer(&HeaderValue::from_static("Bearer ")), None);
    }

    #[test]
    fn the_signature_is_replaced() {
        let value = without_signature("aGVhZA.cGF5bG9hZA.c2lnbmF0dXJl").expect("jwt");
        assert_eq!(
            value,
            "Bearer aGVhZA.cGF5bG9hZA.SIGNATURE_REMOVED_BY_GOOGLE"
        );
        assert!(value.is_sensitive());
    }

    #[test]
    fn error_pages_name_the_status_and_the_escaped_path() {
        let page = error_page(StatusCode::FORBIDDEN, "/a<b>");
        assert!(page.contains("<title>403 Forbidden</title>"), "{page}");
        assert!(page.contains("<h1>Error: Forbidden</h1>"));
        assert!(page.contains("permission to get URL <code>/a&lt;b&gt;</code> from this server."));
        let page = error_page(StatusCode::UNAUTHORIZED, "/");
        assert!(page.contains("<title>401 Unauthorized</title>"));
        assert!(page.contains("<h1>Error: Unauthorized</h1>"));
        assert!(page.contains("permission to the requested URL <code>/</code>."));
    }
}
