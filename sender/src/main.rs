//! `sender`: logs, config, token source, bind, serve until SIGTERM.

use std::process::ExitCode;

use cloud_run::{
    config::process_env,
    service::{cannot_start, run_until_signal},
};
use sender::{Config, Sender, SenderStartError};

#[tokio::main]
async fn main() -> ExitCode {
    let config =
        cloud_run::logging::init(&process_env).and_then(|()| Config::from_env(&process_env));
    let sender = match config {
        Ok(config) => Sender::new(config).await,
        Err(err) => Err(SenderStartError::from(err)),
    };
    match sender {
        Ok(sender) => run_until_signal(sender, &process_env).await,
        Err(err) => cannot_start(&err),
    }
}
