//! `receiver`: logs, config, bind, serve until SIGTERM.

use std::process::ExitCode;

use cloud_run::config::process_env;
use receiver::{AuthConfig, Config, Receiver};
use tokio::net::TcpListener;
use tracing::error;

#[tokio::main]
async fn main() -> ExitCode {
    let env = process_env;
    let settings = cloud_run::logging::init(&env)
        .and_then(|_| Config::from_env(&env))
        .and_then(|config| Ok((config, AuthConfig::from_env(&env)?)));
    let (config, auth) = match settings {
        Ok(settings) => settings,
        Err(err) => {
            error!("{err}");
            return ExitCode::FAILURE;
        }
    };
    let receiver = match Receiver::new(config, auth) {
        Ok(receiver) => receiver,
        Err(err) => {
            error!("{}", cloud_run::response::Chain(&err));
            return ExitCode::FAILURE;
        }
    };
    cloud_run::logging::learn_project_id(&env, None);
    let addr = receiver.addr();
    let listener = match TcpListener::bind(addr).await {
        Ok(listener) => listener,
        Err(err) => {
            error!(%addr, "cannot listen: {err}");
            return ExitCode::FAILURE;
        }
    };
    receiver.run(listener, cloud_run::shutdown_signal()).await;
    ExitCode::SUCCESS
}
