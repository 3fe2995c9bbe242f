//! What the emulator answers: the metadata server's directory tree under
//! `/computeMetadata/v1/` (only with `Metadata-Flavor: Google`) as a Cloud
//! Run service sees it, in the real server's forms (`?recursive=true`,
//! `?alt=json`, `?alt=text`), its root, and Google's JWKS at
//! `/oauth2/v3/certs`. Every answer, errors included,
//! carries `Metadata-Flavor: Google`, which is how clients recognise the
//! server. Only requests naming an allowed host are answered at all (see
//! [`crate::host`]).

use std::time::Duration;

use cloud_run::{
    response::{error, text, HttpError},
    Body,
};
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use serde_json::{json, Map, Value};
use tracing::{debug, warn};

use crate::{
    host,
    identity::{access_token, instance_id, Account, TokenFormat},
    keys::SigningKeys,
};

const FLAVOR: &str = "metadata-flavor";
const GOOGLE: HeaderValue = HeaderValue::from_static("Google");
const APPLICATION_TEXT: HeaderValue = HeaderValue::from_static("application/text");
const APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");
const GET_HEAD: HeaderValue = HeaderValue::from_static("GET, HEAD");

/// How long clients may cache the JWKS. Short, because a restarted emulator
/// without `--key-file` has a new key; verifiers refetch on an unknown `kid`
/// anyway.
pub(crate) const JWKS_MAX_AGE: Duration = Duration::from_secs(300);

/// The scope the default service account of a Cloud Run service has.
const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";

/// The domain of Google's public APIs, at `universe/universe-domain`.
const UNIVERSE_DOMAIN: &str = "googleapis.com";

/// Why a request gets no answer, each with its status.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RequestError {
    /// `Host` (or `:authority`) names no host the emulator serves: a page
    /// that rebound its DNS name to loopback, or a client that went through
    /// another name.
    #[error("host not allowed: the emulator answers only a Host of a loopback address, localhost, metadata.google.internal, metadata or 169.254.169.254")]
    Host,
    /// The real server refuses every metadata request without the header.
    #[error("missing Metadata-Flavor:Google header")]
    MissingFlavor,
    /// The real server refuses requests that went through a proxy.
    #[error("requests with X-Forwarded-For are refused")]
    Forwarded,
    /// No such entry.
    #[error("not found")]
    NotFound,
    /// Only GET and HEAD are served.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// `identity` without `audience`.
    #[error("non-empty audience parameter required")]
    MissingAudience,
    /// `identity` with a `format` other than `standard` or `full`.
    #[error("format must be standard or full")]
    BadFormat,
    /// An `alt` other than `json` or `text`.
    #[error("alt must be json or text")]
    BadAlt,
    /// Signing failed.
    #[error("cannot sign the token")]
    Signing,
}

impl HttpError for RequestError {
    fn status(&self) -> StatusCode {
        match self {
            Self::Host | Self::MissingFlavor | Self::Forwarded => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::MissingAudience | Self::BadFormat | Self::BadAlt => StatusCode::BAD_REQUEST,
            Self::Signing => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// An entry of the metadata tree.
#[derive(Debug, Clone)]
enum Node {
    /// A directory: listed by name with a trailing `/`, or whole with
    /// `?recursive=true` (JSON unless `?alt=text`).
    Dir(Vec<(String, Node)>),
    /// A value (a JSON string with `?alt=json`).
    Text(String),
    /// A number (a JSON number with `?alt=json`).
    Number(u64),
    /// Several values, one per line (a JSON array with `?alt=json`).
    Lines(Vec<String>),
    /// An ID token, minted per request.
    Identity,
    /// An access token, minted per request.
    AccessToken,
}

fn dir(entries: Vec<(&str, Node)>) -> Node {
    Node::Dir(
        entries
            .into_iter()
            .map(|(name, node)| (name.to_owned(), node))
            .collect(),
    )
}

/// The form `?alt` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Alt {
    /// The entry's own: text for values and listings, JSON for recursive
    /// directories and access tokens.
    Default,
    /// JSON.
    Json,
    /// Text.
    Text,
}

impl Alt {
    fn from_query(query: Option<&str>) -> Result<Self, RequestError> {
        match param(query, "alt").as_deref() {
            None => Ok(Self::Default),
            Some("json") => Ok(Self::Json),
            Some("text") => Ok(Self::Text),
            Some(_) => Err(RequestError::BadAlt),
        }
    }
}

/// Everything a request can be answered from.
#[derive(Debug)]
pub(crate) struct State {
    account: Account,
    keys: SigningKeys,
    lifetime: Duration,
    tree: Node,
    cache_control: HeaderValue,
}

impl State {
    /// The answers for `account` running in `region`, signed with `keys`,
    /// tokens living `lifetime`.
    pub(crate) fn new(
        account: Account,
        region: &str,
        keys: SigningKeys,
        lifetime: Duration,
    ) -> Self {
        let number = account.project_number;
        let service_account = dir(vec![
            ("aliases", Node::Lines(vec!["default".to_owned()])),
            ("email", Node::Text(account.email.clone())),
            ("identity", Node::Identity),
            ("scopes", Node::Lines(vec![CLOUD_PLATFORM.to_owned()])),
            ("token", Node::AccessToken),
        ]);
        // Cloud Run documents region and zone in these shapes; its one zone
        // per region is named REGION-1.
        let tree = dir(vec![
            (
                "instance",
                dir(vec![
                    ("id", Node::Number(instance_id(&account, region))),
                    (
                        "region",
                        Node::Text(format!("projects/{number}/regions/{region}")),
                    ),
                    (
                        "service-accounts",
                        dir(vec![
                            ("default", service_account.clone()),
                            (&account.email, service_account),
                        ]),
                    ),
                    (
                        "zone",
                        Node::Text(format!("projects/{number}/zones/{region}-1")),
                    ),
                ]),
            ),
            (
                "project",
                dir(vec![
                    ("numeric-project-id", Node::Number(account.project_number)),
                    ("project-id", Node::Text(account.project_id.clone())),
                ]),
            ),
            (
                "universe",
                dir(vec![(
                    "universe-domain",
                    Node::Text(UNIVERSE_DOMAIN.to_owned()),
                )]),
            ),
        ]);
        let cache_control = HeaderValue::try_from(format!(
            "public, max-age={}, must-revalidate, no-transform",
            JWKS_MAX_AGE.as_secs()
        ))
        .unwrap_or(HeaderValue::from_static("no-cache"));
        Self {
            account,
            keys,
            lifetime,
            tree,
            cache_control,
        }
    }

    /// The keys tokens are signed with.
    pub(crate) fn keys(&self) -> &SigningKeys {
        &self.keys
    }

    /// The account tokens are minted for.
    pub(crate) fn account(&self) -> &Account {
        &self.account
    }
}

/// Answers one request.
pub(crate) fn answer<B>(state: &State, req: &Request<B>) -> Response<Body> {
    let mut response = route(state, req).unwrap_or_else(|err| {
        let mut response = error(&err);
        if matches!(err, RequestError::MethodNotAllowed) {
            response.headers_mut().insert(header::ALLOW, GET_HEAD);
        }
        if matches!(err, RequestError::Signing) {
            warn!(%err, "identity request failed");
        } else if matches!(err, RequestError::Host) {
            // Worth seeing without debug logs: either an attack, or a setup
            // that reaches the emulator under another name.
            let host = req.headers().get(header::HOST);
            let authority = req.uri().authority();
            warn!(?host, ?authority, "request refused: host not allowed");
        } else {
            debug!(%err, "request refused");
        }
        response
    });
    response.headers_mut().insert(FLAVOR, GOOGLE);
    response
}

fn route<B>(state: &State, req: &Request<B>) -> Result<Response<Body>, RequestError> {
    if !host::allowed(req) {
        return Err(RequestError::Host);
    }
    let path = req.uri().path();
    let query = req.uri().query();
    let get_only = || {
        if req.method() == Method::GET || req.method() == Method::HEAD {
            Ok(())
        } else {
            Err(RequestError::MethodNotAllowed)
        }
    };
    match path {
        // Clients probe the root to tell whether they run on Google Cloud;
        // the real server answers it without the flavor header.
        "/" => {
            get_only()?;
            Ok(typed(
                text(StatusCode::OK, "computeMetadata/\n"),
                APPLICATION_TEXT,
            ))
        }
        "/oauth2/v3/certs" => {
            get_only()?;
            let mut response = text(StatusCode::OK, state.keys.jwks());
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json; charset=UTF-8"),
            );
            headers.insert(header::CACHE_CONTROL, state.cache_control.clone());
            Ok(response)
        }
        _ => {
            let Some(rest) = path.strip_prefix("/computeMetadata") else {
                return Err(RequestError::NotFound);
            };
            let headers = req.headers();
            if headers.get(FLAVOR).map(HeaderValue::as_bytes) != Some(b"Google") {
                return Err(RequestError::MissingFlavor);
            }
            if headers.contains_key("x-forwarded-for") {
                return Err(RequestError::Forwarded);
            }
            get_only()?;
            match rest {
                "" | "/v1" => Ok(redirect(path, query)),
                "/" => Ok(typed(text(StatusCode::OK, "v1/\n"), APPLICATION_TEXT)),
                _ => {
                    let rest = rest.strip_prefix("/v1/").ok_or(RequestError::NotFound)?;
                    walk(state, rest, path, query)
                }
            }
        }
    }
}

/// Finds `rest` (the path below `/computeMetadata/v1/`) in the tree.
fn walk(
    state: &State,
    rest: &str,
    path: &str,
    query: Option<&str>,
) -> Result<Response<Body>, RequestError> {
    let alt = Alt::from_query(query)?;
    let mut node = &state.tree;
    let mut segments = rest.split('/').peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        let Node::Dir(entries) = node else {
            return Err(RequestError::NotFound);
        };
        if segment.is_empty() && last {
            return Ok(listing(entries, query, alt));
        }
        node = entries
            .iter()
            .find(|(name, _)| name == segment)
            .map(|(_, node)| node)
            .ok_or(RequestError::NotFound)?;
    }
    match node {
        // A directory asked for without its slash: the real server redirects.
        Node::Dir(_) => Ok(redirect(path, query)),
        Node::Text(_) | Node::Number(_) | Node::Lines(_) if alt == Alt::Json => {
            Ok(json_answer(&to_json(node)))
        }
        Node::Text(value) => Ok(text_answer(value.clone())),
        Node::Number(value) => Ok(text_answer(value.to_string())),
        Node::Lines(lines) => Ok(text_answer(
            lines.iter().map(|l| format!("{l}\n")).collect(),
        )),
        // Tokens keep their own forms whatever `alt` says.
        Node::Identity => identity(state, query),
        Node::AccessToken => {
            let body = json!({
                "access_token": access_token(),
                "expires_in": state.lifetime.as_secs().saturating_sub(1),
                "token_type": "Bearer",
            });
            Ok(typed(
                text(StatusCode::OK, body.to_string()),
                APPLICATION_JSON,
            ))
        }
    }
}

fn identity(state: &State, query: Option<&str>) -> Result<Response<Body>, RequestError> {
    let audience = param(query, "audience")
        .filter(|a| !a.is_empty())
        .ok_or(RequestError::MissingAudience)?;
    let format = match param(query, "format").as_deref() {
        None | Some("standard") => TokenFormat::Standard,
        Some("full") => TokenFormat::Full,
        Some(_) => return Err(RequestError::BadFormat),
    };
    // `licenses` and anything else is accepted and ignored: there are no
    // Compute Engine licenses here.
    let token = state
        .account
        .id_token(&state.keys, &audience, format, state.lifetime)
        .map_err(|_| RequestError::Signing)?;
    debug!(%audience, ?format, "minted an ID token");
    Ok(typed(text(StatusCode::OK, token), APPLICATION_TEXT))
}

fn listing(entries: &[(String, Node)], query: Option<&str>, alt: Alt) -> Response<Body> {
    if param(query, "recursive").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        if alt == Alt::Text {
            let mut body = String::new();
            flatten(entries, "", &mut body);
            return text_answer(body);
        }
        return json_answer(&recursive(entries));
    }
    let names = entries.iter().map(|(name, node)| match node {
        Node::Dir(_) => format!("{name}/"),
        _ => name.clone(),
    });
    if alt == Alt::Json {
        return json_answer(&Value::from(names.collect::<Vec<_>>()));
    }
    text_answer(names.map(|name| format!("{name}\n")).collect())
}

/// An entry as JSON; tokens are minted on request only, so they have none.
fn to_json(node: &Node) -> Value {
    match node {
        Node::Dir(entries) => recursive(entries),
        Node::Text(value) => Value::from(value.as_str()),
        Node::Number(value) => Value::from(*value),
        Node::Lines(lines) => Value::from(lines.clone()),
        Node::Identity | Node::AccessToken => Value::Null,
    }
}

/// A directory as JSON, keys in camelCase as the real server writes them,
/// tokens left out.
fn recursive(entries: &[(String, Node)]) -> Value {
    let mut object = Map::new();
    for (name, node) in entries {
        if !matches!(node, Node::Identity | Node::AccessToken) {
            object.insert(camel_case(name), to_json(node));
        }
    }
    Value::Object(object)
}

/// A directory as `?recursive=true&alt=text` writes it: one `PATH VALUE`
/// line per value, paths relative to the directory with the entries' own
/// names, list items numbered from 0.
fn flatten(entries: &[(String, Node)], prefix: &str, out: &mut String) {
    for (name, node) in entries {
        let path = format!("{prefix}{name}");
        match node {
            Node::Dir(entries) => flatten(entries, &format!("{path}/"), out),
            Node::Text(value) => out.push_str(&format!("{path} {value}\n")),
            Node::Number(value) => out.push_str(&format!("{path} {value}\n")),
            Node::Lines(lines) => {
                for (i, line) in lines.iter().enumerate() {
                    out.push_str(&format!("{path}/{i} {line}\n"));
                }
            }
            Node::Identity | Node::AccessToken => {}
        }
    }
}

fn text_answer(body: String) -> Response<Body> {
    typed(text(StatusCode::OK, body), APPLICATION_TEXT)
}

fn json_answer(value: &Value) -> Response<Body> {
    typed(text(StatusCode::OK, value.to_string()), APPLICATION_JSON)
}

fn camel_case(name: &str) -> String {
    // Email addresses are keys too, and stay as they are.
    if name.contains('@') {
        return name.to_owned();
    }
    let mut out = String::with_capacity(name.len());
    let mut upper = false;
    for c in name.chars() {
        if c == '-' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

fn typed(mut response: Response<Body>, content_type: HeaderValue) -> Response<Body> {
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, content_type);
    response
}

fn redirect(path: &str, query: Option<&str>) -> Response<Body> {
    let location = match query {
        Some(query) => format!("{path}/?{query}"),
        None => format!("{path}/"),
    };
    let mut response = text(StatusCode::MOVED_PERMANENTLY, "");
    if let Ok(location) = HeaderValue::try_from(location) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

/// The first value of `name` in a form-urlencoded query.
fn param(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (decode(key) == name).then(|| decode(value))
    })
}

fn decode(s: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let high = bytes.get(i + 1).copied().and_then(hex);
                let low = bytes.get(i + 2).copied().and_then(hex);
                match (high, low) {
                    (Some(high), Some(low)) => {
                        // Two hex digits make at most 255.
                        out.push(u8::try_from(high * 16 + low).unwrap_or(b'?'));
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_params_are_decoded() {
        let q = Some("audience=http%3A%2F%2F127.0.0.1%3A8081&format=full&x&licenses=TRUE");
        assert_eq!(
            param(q, "audience").as_deref(),
            Some("http://127.0.0.1:8081")
        );
        assert_eq!(param(q, "format").as_deref(), Some("full"));
        assert_eq!(param(q, "x").as_deref(), Some(""));
        assert_eq!(param(q, "missing"), None);
        assert_eq!(param(None, "audience"), None);
        assert_eq!(param(Some("a=1&a=2"), "a").as_deref(), Some("1"));
    }

    #[test]
    fn decoding_never_fails() {
        assert_eq!(decode("a+b%20c"), "a b c");
        assert_eq!(decode("%"), "%");
        assert_eq!(decode("%4"), "%4");
        assert_eq!(decode("%zz"), "%zz");
        assert_eq!(decode("%ff"), "\u{fffd}");
        assert_eq!(decode("%C3%A9"), "é");
    }

    #[test]
    fn camel_case_keys() {
        assert_eq!(camel_case("numeric-project-id"), "numericProjectId");
        assert_eq!(camel_case("service-accounts"), "serviceAccounts");
        assert_eq!(camel_case("email"), "email");
        assert_eq!(camel_case("a-b@c-d.e"), "a-b@c-d.e");
    }
}
