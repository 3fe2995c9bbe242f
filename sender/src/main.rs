//! `sender`: logs, config, bind, serve until SIGTERM.

use std::process::ExitCode;

use cloud_run::{config::process_env, response::Chain};
use tokio::net::TcpListener;
use tracing::error;

#[tokio::main]
async fn main() -> ExitCode {
    let env = process_env;
    let config = cloud_run::logging::init(&env).and_then(|_| sender::Config::from_env(&env));
    let sender = match config
        .map_err(|e| e.to_string())
        .and_then(|config| sender::Sender::new(config).map_err(|e| Chain(&e).to_string()))
    {
        Ok(sender) => sender,
        Err(err) => {
            error!("{err}");
            return ExitCode::FAILURE;
        }
    };
    cloud_run::logging::learn_project_id(&env, Some(sender.http().clone()));
    let listener = match TcpListener::bind(sender.addr()).await {
        Ok(listener) => listener,
        Err(err) => {
            error!("cannot listen: {err}");
            return ExitCode::FAILURE;
        }
    };
    sender.run(listener, cloud_run::shutdown_signal()).await;
    ExitCode::SUCCESS
}
