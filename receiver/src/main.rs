//! `receiver`: logs, config, bind, serve until SIGTERM.

use std::process::ExitCode;

use cloud_run::{
    config::{process_env, process_env_as_set},
    service::{cannot_start, run_until_signal},
};
use receiver::{Config, Receiver, ReceiverStartError};

#[tokio::main]
async fn main() -> ExitCode {
    // As set: an empty AUTH_* variable is an error, not "verification off".
    let config = cloud_run::logging::init(&process_env)
        .and_then(|()| Config::from_env(&process_env_as_set))
        .map_err(ReceiverStartError::from);
    let receiver = match config {
        Ok(config) => Receiver::new(config).await,
        Err(err) => Err(err),
    };
    match receiver {
        Ok(receiver) => run_until_signal(receiver, &process_env).await,
        Err(err) => cannot_start(&err),
    }
}
