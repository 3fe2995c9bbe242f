//! `receiver`: logs, config, bind, serve until SIGTERM.

use std::process::ExitCode;

use cloud_run::config::process_env;
use tokio::net::TcpListener;
use tracing::error;

#[tokio::main]
async fn main() -> ExitCode {
    let env = process_env;
    let config = cloud_run::logging::init(&env).and_then(|_| receiver::Config::from_env(&env));
    let config = match config {
        Ok(config) => config,
        Err(err) => {
            error!("{err}");
            return ExitCode::FAILURE;
        }
    };
    cloud_run::logging::learn_project_id(&env, None);
    let listener = match TcpListener::bind(config.server.addr).await {
        Ok(listener) => listener,
        Err(err) => {
            error!(addr = %config.server.addr, "cannot listen: {err}");
            return ExitCode::FAILURE;
        }
    };
    receiver::run(config, listener, cloud_run::shutdown_signal()).await;
    ExitCode::SUCCESS
}
