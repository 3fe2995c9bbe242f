//! The receiver's verification in an axum app, as a tower layer built from
//! the same `AUTH_*` variables: `GET /` answers `Hello, <email>!` to an
//! admitted caller and refuses the others exactly as the receiver does;
//! `GET /ready` (outside the layer) says whether the signing keys are in.
//!
//! ```text
//! AUTH_AUDIENCE=https://my-app.example.com \
//! AUTH_ALLOWED_INVOKERS=sender@my-project.iam.gserviceaccount.com \
//! PORT=8080 cargo run -p receiver --example axum
//! ```

use std::process::ExitCode;

use axum::{routing::get, Extension, Router};
use cloud_run::{
    config::{process_env, process_env_as_set},
    service::cannot_start,
    ConfigError, ServerConfig,
};
use id_token::{AuthConfig, Caller, RequireGoogleIdToken};
use tokio::net::TcpListener;
use tracing::{debug, error, info};

/// The app: `GET /` behind the layer, `GET /ready` before it.
pub(crate) fn app(auth: RequireGoogleIdToken) -> Router {
    let verifier = auth.verifier().clone();
    Router::new().route("/", get(hello)).layer(auth).route(
        "/ready",
        get(move || {
            let ready = verifier.readiness();
            async move {
                cloud_run::response::readiness(ready.as_ref().map_err(String::as_str).copied())
            }
        }),
    )
}

async fn hello(Extension(caller): Extension<Caller>) -> String {
    debug!("saying hello");
    format!("Hello, {}!", caller.email.as_deref().unwrap_or("caller"))
}

#[tokio::main]
async fn main() -> ExitCode {
    if let Err(err) = cloud_run::logging::init(&process_env) {
        return cannot_start(&err);
    }
    let server = match ServerConfig::from_env(&process_env) {
        Ok(server) => server,
        Err(err) => return cannot_start(&err),
    };
    // As the receiver reads them: an empty AUTH_* value is an error.
    let auth = match AuthConfig::from_env(&process_env_as_set) {
        Ok(Some(auth)) => auth,
        Ok(None) => {
            let err = ConfigError::new("AUTH_AUDIENCE", "required: this example verifies callers");
            return cannot_start(&err);
        }
        Err(err) => return cannot_start(&err),
    };
    let layer = match RequireGoogleIdToken::from_config(auth).await {
        Ok(layer) => layer,
        Err(err) => return cannot_start(&err),
    };
    let listener = match TcpListener::bind(server.addr).await {
        Ok(listener) => listener,
        Err(err) => {
            error!(addr = %server.addr, "cannot listen: {err}");
            return ExitCode::FAILURE;
        }
    };
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "listening");
    }
    let serving = axum::serve(listener, app(layer))
        .with_graceful_shutdown(cloud_run::shutdown_signal())
        .await;
    match serving {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            error!("serve failed: {err}");
            ExitCode::FAILURE
        }
    }
}
