//! `metadata-emulator`: flags, logs, keys, bind, serve until SIGTERM.

use std::process::ExitCode;

use cloud_run::{config::process_env, response::Chain};
use metadata_emulator::{Command, Emulator, UsageError, HELP};
use tokio::net::TcpListener;
use tracing::error;

#[tokio::main]
async fn main() -> ExitCode {
    let env = process_env;
    let logging = cloud_run::logging::init(&env);
    let args = std::env::args_os()
        .skip(1)
        .map(|arg| arg.into_string().map_err(|_| UsageError::NotUtf8))
        .collect::<Result<Vec<_>, _>>();
    let command = logging
        .map_err(UsageError::from)
        .and(args)
        .and_then(|args| metadata_emulator::parse(args, &env));
    let config = match command {
        Ok(Command::Run(config)) => *config,
        Ok(Command::Help) => {
            print!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            error!("{err}");
            return ExitCode::from(2);
        }
    };
    let emulator = match Emulator::new(config) {
        Ok(emulator) => emulator,
        Err(err) => {
            error!("{}", Chain(&err));
            return ExitCode::FAILURE;
        }
    };
    // Installed before binding, so no SIGTERM finds the default handler.
    let shutdown = cloud_run::shutdown_signal();
    let listener = match TcpListener::bind(emulator.addr()).await {
        Ok(listener) => listener,
        Err(err) => {
            error!(addr = %emulator.addr(), "cannot listen: {err}");
            return ExitCode::FAILURE;
        }
    };
    emulator.run(listener, shutdown).await;
    ExitCode::SUCCESS
}
