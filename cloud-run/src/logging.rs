//! Logs: one JSON object per line on stdout in Cloud Logging's shape on Cloud
//! Run (or with `LOG_FORMAT=json`), readable text on stderr elsewhere.
//! `RUST_LOG` filters by level and target (default `info`). Requests run in a span carrying the
//! incoming trace id, which JSON lines report as
//! `logging.googleapis.com/trace` once the project id is known.

use std::{
    fmt::Write as _,
    io::{IsTerminal as _, Write as _},
    sync::OnceLock,
};

use http::{HeaderMap, Request};
use serde_json::{Map, Value};
use tracing::{
    field::{Field, Visit},
    span, Event, Level, Subscriber,
};
use tracing_subscriber::{
    filter::Targets, fmt::MakeWriter, layer::Context, prelude::*, registry::LookupSpan, Layer,
};

use crate::config::{ConfigError, Lookup};

static PROJECT_ID: OnceLock<String> = OnceLock::new();

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LogFormat {
    /// Cloud Logging's structured JSON, on stdout.
    Json,
    /// Human-readable, on stderr.
    Text,
}

impl LogFormat {
    /// `LOG_FORMAT` (`json` or `text`); JSON by default on Cloud Run
    /// (`K_SERVICE` set), text elsewhere.
    fn from_env(env: Lookup<'_>) -> Result<Self, ConfigError> {
        match env("LOG_FORMAT").as_deref() {
            Some("json") => Ok(Self::Json),
            Some("text") => Ok(Self::Text),
            None => Ok(Self::default_for(env)),
            Some(other) => Err(ConfigError::new(
                "LOG_FORMAT",
                format!("expected json or text, got {other:?}"),
            )),
        }
    }

    /// JSON on Cloud Run (`K_SERVICE` set), text elsewhere.
    fn default_for(env: Lookup<'_>) -> Self {
        if env("K_SERVICE").is_some() {
            Self::Json
        } else {
            Self::Text
        }
    }
}

/// `RUST_LOG`'s `level,target=level` directives, `info` when unset.
/// `Targets`, unlike `EnvFilter`, has no span or field matching, and so no
/// regex engine.
fn filter_from_env(env: Lookup<'_>) -> Result<Targets, ConfigError> {
    match env("RUST_LOG") {
        None => Ok(Targets::new().with_default(Level::INFO)),
        Some(directives) => directives.parse::<Targets>().map_err(|err| {
            ConfigError::new(
                "RUST_LOG",
                format!("not a filter like info or sender=debug,info ({err}): {directives:?}"),
            )
        }),
    }
}

/// Installs the global subscriber. A bad `LOG_FORMAT` or `RUST_LOG` still
/// installs one (the defaults), so that the error itself can be logged, and
/// is returned for the caller to stop on.
pub fn init(env: Lookup<'_>) -> Result<(), ConfigError> {
    let format = LogFormat::from_env(env);
    let filter = filter_from_env(env);
    let registry = tracing_subscriber::registry().with(
        filter
            .clone()
            .unwrap_or_else(|_| Targets::new().with_default(Level::INFO)),
    );
    match format
        .clone()
        .unwrap_or_else(|_| LogFormat::default_for(env))
    {
        LogFormat::Json => registry.with(CloudLogging::new(std::io::stdout)).init(),
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_target(false),
            )
            .init(),
    }
    format.and(filter).map(|_| ())
}

/// Records the project id, which turns incoming trace ids into the
/// `projects/PROJECT/traces/TRACE` links Cloud Logging groups requests by.
/// Only the first call counts.
pub(crate) fn set_project_id(project: impl Into<String>) {
    let _ = PROJECT_ID.set(project.into());
}

/// Learns the project id for trace links: `GOOGLE_CLOUD_PROJECT` when set,
/// else, on Cloud Run (`K_SERVICE` set), from the metadata server in the
/// background. Off Cloud Run without the variable, requests are not linked.
pub fn learn_project_id(env: Lookup<'_>, http: Option<reqwest::Client>) {
    if let Some(project) = env("GOOGLE_CLOUD_PROJECT") {
        set_project_id(project);
        return;
    }
    if env("K_SERVICE").is_none() {
        return;
    }
    let Ok(host) = crate::metadata::host_from_env(env) else {
        return;
    };
    tokio::spawn(async move {
        let timeout = std::time::Duration::from_secs(5);
        let http = match http.map_or_else(|| crate::client::build(timeout), Ok) {
            Ok(http) => http,
            Err(err) => return tracing::warn!(%err, "no HTTP client to ask for the project id"),
        };
        let Some(metadata) = crate::metadata::MetadataClient::new(&host, http, timeout) else {
            return;
        };
        match metadata.project_id().await {
            Ok(project) => {
                tracing::debug!(%project, "project id from the metadata server");
                set_project_id(project);
            }
            Err(err) => {
                tracing::warn!(%err, "cannot learn the project id; logs carry no trace ids")
            }
        }
    });
}

/// The span every request runs in.
pub(crate) fn request_span<B>(req: &Request<B>) -> tracing::Span {
    let trace = PROJECT_ID
        .get()
        .and_then(|project| TraceContext::from_headers(req.headers()).map(|t| (project, t)));
    match trace {
        Some((project, t)) => tracing::info_span!(
            "request",
            method = %req.method(),
            path = req.uri().path(),
            trace = format_args!("projects/{project}/traces/{}", t.trace_id),
            span_id = t.span_id.as_deref(),
            sampled = t.sampled,
        ),
        // Without a trace to carry, the span only adds context to debug
        // logs; at the default level it is disabled and costs nothing.
        None => tracing::debug_span!("request", method = %req.method(), path = req.uri().path()),
    }
}

/// The trace a request belongs to, from `traceparent` (W3C, preferred) or
/// `X-Cloud-Trace-Context`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// 16 lowercase hex digits.
    pub span_id: Option<String>,
    /// Whether the caller sampled this trace.
    pub sampled: bool,
}

impl TraceContext {
    /// Parses the trace headers; `None` if neither is present and valid.
    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
        header("traceparent")
            .and_then(Self::from_traceparent)
            .or_else(|| header("x-cloud-trace-context").and_then(Self::from_cloud_trace))
    }

    fn from_traceparent(value: &str) -> Option<Self> {
        let mut parts = value.trim().split('-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if version.len() != 2 || version == "ff" || !is_hex(version) {
            return None;
        }
        if !is_hex_id(trace, 32) || !is_hex_id(span, 16) || flags.len() != 2 {
            return None;
        }
        let flags = u8::from_str_radix(flags, 16).ok()?;
        Some(Self {
            trace_id: trace.to_ascii_lowercase(),
            span_id: Some(span.to_ascii_lowercase()),
            sampled: flags & 1 == 1,
        })
    }

    fn from_cloud_trace(value: &str) -> Option<Self> {
        // TRACE_ID[/SPAN_ID][;o=OPTIONS], span id in decimal.
        let (ids, options) = value.trim().split_once(';').unwrap_or((value.trim(), ""));
        let (trace, span) = ids.split_once('/').unwrap_or((ids, ""));
        if !is_hex_id(trace, 32) {
            return None;
        }
        let span_id = span
            .parse::<u64>()
            .ok()
            .filter(|s| *s != 0)
            .map(|s| format!("{s:016x}"));
        Some(Self {
            trace_id: trace.to_ascii_lowercase(),
            span_id,
            sampled: options.trim() == "o=1",
        })
    }
}

fn is_hex(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn is_hex_id(s: &str, len: usize) -> bool {
    s.len() == len && is_hex(s) && s.bytes().any(|b| b != b'0')
}

/// The layer that writes Cloud Logging JSON lines, one `write_all` per
/// line so that lines from concurrent requests never interleave. It does no
/// formatting work for spans beyond keeping their trace fields.
struct CloudLogging<W> {
    make_writer: W,
}

impl<W> CloudLogging<W> {
    fn new(make_writer: W) -> Self {
        Self { make_writer }
    }
}

#[derive(Default)]
struct SpanTrace {
    trace: Option<String>,
    span_id: Option<String>,
    sampled: bool,
}

impl Visit for SpanTrace {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "trace" => self.trace = Some(value.to_owned()),
            "span_id" => self.span_id = Some(value.to_owned()),
            _ => {}
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if field.name() == "sampled" {
            self.sampled = value;
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "trace" {
            self.trace = Some(format!("{value:?}"));
        }
    }
}

struct JsonFields<'a>(&'a mut Map<String, Value>);

impl Visit for JsonFields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0
            .insert(field.name().to_owned(), value.to_string().into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let mut text = String::new();
        let _ = write!(text, "{value:?}");
        self.0.insert(field.name().to_owned(), text.into());
    }
}

fn severity(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARNING",
        Level::INFO => "INFO",
        _ => "DEBUG",
    }
}

impl<S, W> Layer<S> for CloudLogging<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + 'static,
{
    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        let mut trace = SpanTrace::default();
        attrs.record(&mut trace);
        if trace.trace.is_some() {
            if let Some(span) = ctx.span(id) {
                span.extensions_mut().insert(trace);
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let line = json_line(
            event,
            ctx.event_scope(event).and_then(|scope| {
                scope.from_root().find_map(|span| {
                    span.extensions()
                        .get::<SpanTrace>()
                        .map(|t| (t.trace.clone(), t.span_id.clone(), t.sampled))
                })
            }),
        );
        // A failed write to stdout has nowhere better to be reported.
        let _ = self.make_writer.make_writer().write_all(line.as_bytes());
    }
}

type TraceFields = (Option<String>, Option<String>, bool);

fn json_line(event: &Event<'_>, trace: Option<TraceFields>) -> String {
    let meta = event.metadata();
    let mut fields = Map::new();
    fields.insert("severity".into(), severity(meta.level()).into());
    event.record(&mut JsonFields(&mut fields));
    fields.insert("target".into(), meta.target().into());
    if let Some((Some(trace), span_id, sampled)) = trace {
        fields.insert("logging.googleapis.com/trace".into(), trace.into());
        if let Some(span_id) = span_id {
            fields.insert("logging.googleapis.com/spanId".into(), span_id.into());
        }
        fields.insert(
            "logging.googleapis.com/trace_sampled".into(),
            sampled.into(),
        );
    }
    let mut line = Value::Object(fields).to_string();
    line.push('\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(name: &'static str, value: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_static(value));
        h
    }

    #[test]
    fn traceparent() {
        let t = TraceContext::from_headers(&headers(
            "traceparent",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        ))
        .expect("valid");
        assert_eq!(t.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(t.span_id.as_deref(), Some("00f067aa0ba902b7"));
        assert!(t.sampled);
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e47-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "garbage",
        ] {
            assert_eq!(TraceContext::from_traceparent(bad), None, "{bad}");
        }
    }

    #[test]
    fn cloud_trace_context() {
        let t = TraceContext::from_headers(&headers(
            "x-cloud-trace-context",
            "105445aa7843bc8bf206b12000100000/1;o=1",
        ))
        .expect("valid");
        assert_eq!(t.trace_id, "105445aa7843bc8bf206b12000100000");
        assert_eq!(t.span_id.as_deref(), Some("0000000000000001"));
        assert!(t.sampled);
        let t = TraceContext::from_cloud_trace("105445aa7843bc8bf206b12000100000").expect("bare");
        assert_eq!(t.span_id, None);
        assert!(!t.sampled);
    }

    #[test]
    fn traceparent_wins_over_cloud_trace() {
        let mut h = headers(
            "x-cloud-trace-context",
            "105445aa7843bc8bf206b12000100000/1;o=1",
        );
        h.insert(
            "traceparent",
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"),
        );
        let t = TraceContext::from_headers(&h).expect("valid");
        assert_eq!(t.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(!t.sampled);
    }

    #[test]
    fn format_from_env() {
        assert_eq!(LogFormat::from_env(&|_| None), Ok(LogFormat::Text));
        let cloud_run = |k: &str| (k == "K_SERVICE").then(|| "sender".to_owned());
        assert_eq!(LogFormat::from_env(&cloud_run), Ok(LogFormat::Json));
        let bad = |k: &str| (k == "LOG_FORMAT").then(|| "xml".to_owned());
        assert_eq!(
            LogFormat::from_env(&bad).map_err(|e| e.var),
            Err("LOG_FORMAT")
        );
    }

    #[test]
    fn a_malformed_rust_log_is_an_error_naming_it() {
        let rust_log =
            |value: &'static str| move |k: &str| (k == "RUST_LOG").then(|| value.to_owned());
        assert!(filter_from_env(&|_| None).is_ok());
        assert!(filter_from_env(&rust_log("sender=debug,info")).is_ok());
        for bad in ["sender=shouty", "x=y=z", "info,sender=loud"] {
            let err = filter_from_env(&rust_log(bad)).expect_err(bad);
            assert_eq!(err.var, "RUST_LOG", "{bad}");
        }
    }

    /// Lines written by the real layer, into memory instead of stdout.
    #[derive(Clone, Default)]
    struct Lines(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Lines {
        fn json(&self) -> Vec<Value> {
            let bytes = self.0.lock().expect("lock").clone();
            String::from_utf8(bytes)
                .expect("utf-8")
                .lines()
                .map(|line| serde_json::from_str(line).expect("one JSON object per line"))
                .collect()
        }
    }

    #[test]
    fn json_lines_carry_severity_message_and_trace() {
        let lines = Lines::default();
        let writer = lines.clone();
        let layer = CloudLogging::new(move || writer.clone());
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!(
                "request",
                trace = format_args!("projects/p/traces/{}", "abc"),
                span_id = Some("00f067aa0ba902b7"),
                sampled = true,
            );
            let _guard = span.enter();
            let inner = tracing::info_span!("inner", unrelated = 1);
            let _inner = inner.enter();
            tracing::warn!(status = 503u64, "relay failed");
        });
        tracing::subscriber::with_default(
            tracing_subscriber::registry().with(CloudLogging::new({
                let writer = lines.clone();
                move || writer.clone()
            })),
            || tracing::info!("no trace here"),
        );
        let lines = lines.json();
        assert_eq!(lines.len(), 2, "{lines:?}");
        let v = &lines[0];
        assert_eq!(v["severity"], "WARNING");
        assert_eq!(v["message"], "relay failed");
        assert_eq!(v["status"], 503);
        assert_eq!(v["logging.googleapis.com/trace"], "projects/p/traces/abc");
        assert_eq!(v["logging.googleapis.com/spanId"], "00f067aa0ba902b7");
        assert_eq!(v["logging.googleapis.com/trace_sampled"], true);
        assert_eq!(lines[1]["severity"], "INFO");
        assert!(lines[1].get("logging.googleapis.com/trace").is_none());
    }
}
