//! What the receiver and the sender both need, written once: Cloud Run's
//! container contract (settings from the environment, `$BIND_ADDR:$PORT`, a
//! serve loop that drains on SIGTERM), logs in Cloud Logging's shape, plain
//! text error responses, and a small metadata server client.

pub mod client;
pub mod config;
mod conn;
pub mod headers;
pub mod logging;
pub mod metadata;
pub mod response;
pub mod serve;
pub mod single_flight;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod url;

pub use config::{ConfigError, ServerConfig};
pub use response::{Body, HttpError};
pub use serve::{serve, shutdown_signal, Spawned};
