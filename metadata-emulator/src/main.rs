//! `metadata-emulator`: flags, logs, keys, bind, serve until SIGTERM.

use std::process::ExitCode;

use cloud_run::{
    config::process_env,
    service::{cannot_start, run_until_signal, settings_or_exit},
};
use metadata_emulator::{Emulator, UsageError, HELP};

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
    let config = match settings_or_exit(command, HELP) {
        Ok(config) => config,
        Err(exit) => return exit,
    };
    match Emulator::new(config) {
        Ok(emulator) => run_until_signal(emulator, &env).await,
        Err(err) => cannot_start(&err),
    }
}
