//! `receiver`: logs, config, bind, serve until SIGTERM.

use std::process::ExitCode;

use cloud_run::config::{process_env, process_env_as_set};
use receiver::{Config, Receiver};
use tokio::net::TcpListener;
use tracing::error;

#[tokio::main]
async fn main() -> ExitCode {
    let env = process_env;
    // As set: an empty AUTH_* variable is an error, not "verification off".
    let config = cloud_run::logging::init(&env).and_then(|_| Config::from_env(&process_env_as_set));
    let config = match config {
        Ok(config) => config,
        Err(err) => {
            error!("{err}");
            return ExitCode::FAILURE;
        }
    };
    let receiver = match Receiver::new(config) {
        Ok(receiver) => receiver,
        Err(err) => {
            error!("{}", cloud_run::response::Chain(&err));
            return ExitCode::FAILURE;
        }
    };
    cloud_run::logging::learn_project_id(&env, None);
    let addr = receiver.addr();
    // Installed before binding, so no SIGTERM finds the default handler.
    let shutdown = cloud_run::shutdown_signal();
    let listener = match TcpListener::bind(addr).await {
        Ok(listener) => listener,
        Err(err) => {
            error!(%addr, "cannot listen: {err}");
            return ExitCode::FAILURE;
        }
    };
    receiver.run(listener, shutdown).await;
    ExitCode::SUCCESS
}
