//! What every binary of the workspace needs, written once: Cloud Run's
//! container contract (settings from the environment, `$BIND_ADDR:$PORT`, a
//! serve loop with its bounds that drains on SIGTERM), logs in Cloud
//! Logging's shape, plain text error responses, the outbound HTTP client,
//! URL rules, a metadata server client, and the fetch-once algorithm the
//! token and key caches share.

pub mod client;
pub mod config;
mod conn;
pub mod headers;
pub mod logging;
pub mod metadata;
pub mod response;
mod serve;
pub mod service;
pub mod single_flight;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod url;

pub use config::{ConfigError, ServerConfig};
pub use response::{Body, HttpError};
pub use serve::{serve, serve_with_peer, shutdown_signal, ResponseBody};
pub use service::Service;
