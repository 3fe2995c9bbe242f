//! `sender`: logs, config, token source, bind, serve until SIGTERM.

use std::process::ExitCode;

use cloud_run::{config::process_env, response::Chain};
use tokio::net::TcpListener;
use tracing::error;

#[tokio::main]
async fn main() -> ExitCode {
    let env = process_env;
    let config = cloud_run::logging::init(&env).and_then(|_| sender::Config::from_env(&env));
    let sender = match config {
        Ok(config) => sender::Sender::new(config)
            .await
            .map_err(|err| Chain(&err).to_string()),
        Err(err) => Err(err.to_string()),
    };
    let sender = match sender {
        Ok(sender) => sender,
        Err(err) => {
            error!("{err}");
            return ExitCode::FAILURE;
        }
    };
    cloud_run::logging::learn_project_id(&env, Some(sender.http().clone()));
    // Installed before binding, so no SIGTERM finds the default handler.
    let shutdown = cloud_run::shutdown_signal();
    let listener = match TcpListener::bind(sender.addr()).await {
        Ok(listener) => listener,
        Err(err) => {
            error!("cannot listen: {err}");
            return ExitCode::FAILURE;
        }
    };
    sender.run(listener, shutdown).await;
    ExitCode::SUCCESS
}
