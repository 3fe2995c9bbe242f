//! The receiving service: answers `GET /` with the tutorial's greeting.

use std::future::Future;

use cloud_run::{
    config::Lookup,
    response::{route_root, text},
    Body, ConfigError, ServerConfig,
};
use http::{Request, Response, StatusCode};
use tokio::net::TcpListener;
use tracing::info;

/// The tutorial's exact answer, without a trailing newline.
pub const HELLO: &str = "Hello from the receiving service!";

/// The receiver's settings.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// Where to listen and how to shut down.
    pub server: ServerConfig,
}

impl Config {
    /// Reads the settings from `env`.
    pub fn from_env(env: Lookup<'_>) -> Result<Self, ConfigError> {
        Ok(Self {
            server: ServerConfig::from_env(env)?,
        })
    }
}

/// Serves the receiver on `listener` until `shutdown` resolves, then drains.
pub async fn run(config: Config, listener: TcpListener, shutdown: impl Future<Output = ()>) {
    info!(
        shutdown_grace = ?config.server.shutdown_grace,
        verification = "off",
        "receiver starting"
    );
    cloud_run::serve(listener, &config.server, handle, shutdown).await;
}

async fn handle<B>(req: Request<B>) -> Response<Body> {
    if let Some(response) = route_root(&req) {
        return response;
    }
    text(StatusCode::OK, HELLO)
}
