//! `cloud-run-ingress`: flags, logs, policy, bind, serve until SIGTERM.

use std::process::ExitCode;

use cloud_run::{
    config::process_env,
    service::{cannot_start, run_until_signal, settings_or_exit},
};
use cloud_run_ingress::{Ingress, HELP};

#[tokio::main]
async fn main() -> ExitCode {
    let env = process_env;
    let logging = cloud_run::logging::init(&env);
    let args = std::env::args_os()
        .skip(1)
        .map(|arg| arg.into_string())
        .collect::<Result<Vec<_>, _>>();
    let command = match (logging, args) {
        (Err(err), _) => Err(err),
        (Ok(()), Err(_)) => Err(cloud_run::ConfigError::new("arguments", "must be UTF-8")),
        (Ok(()), Ok(args)) => cloud_run_ingress::parse(args, &env),
    };
    let config = match settings_or_exit(command, HELP) {
        Ok(config) => config,
        Err(exit) => return exit,
    };
    match Ingress::new(config) {
        Ok(ingress) => run_until_signal(ingress, &env).await,
        Err(err) => cannot_start(&err),
    }
}
