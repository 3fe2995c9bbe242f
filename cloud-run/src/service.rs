//! What every binary's `main` does once its service is built, written once:
//! learn the project id for trace links, install the signal handlers, bind,
//! serve until SIGTERM, and the exit code.

use std::{fmt::Display, future::Future, net::SocketAddr, process::ExitCode};

use tokio::net::TcpListener;
use tracing::error;

use crate::{config::Lookup, logging, response::Chain, serve::shutdown_signal};

/// A service with its settings checked, ready to bind.
pub trait Service: Sized {
    /// Where to listen.
    fn addr(&self) -> SocketAddr;

    /// The service's HTTP client, for the start-up lookup of the project id
    /// to share; `None` builds one for it.
    fn http(&self) -> Option<reqwest::Client> {
        None
    }

    /// Serves on `listener` until `shutdown` resolves, then drains.
    fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> impl Future<Output = ()> + Send;
}

/// Runs `service` the way every binary here does, until SIGTERM or SIGINT;
/// returns the exit code for `main`.
pub async fn run_until_signal(service: impl Service, env: Lookup<'_>) -> ExitCode {
    logging::learn_project_id(env, service.http());
    // Installed before binding, so no SIGTERM finds the default handler.
    let shutdown = shutdown_signal();
    let addr = service.addr();
    let listener = match TcpListener::bind(addr).await {
        Ok(listener) => listener,
        Err(err) => {
            error!(%addr, "cannot listen: {err}");
            return ExitCode::FAILURE;
        }
    };
    service.run(listener, shutdown).await;
    ExitCode::SUCCESS
}

/// Logs, in one line with its causes, why a binary cannot start; returns
/// the exit code for `main`.
pub fn cannot_start(err: &(dyn std::error::Error + 'static)) -> ExitCode {
    error!("{}", Chain(err));
    ExitCode::FAILURE
}

/// What the command line of a binary with flags asks for.
#[derive(Debug, Clone)]
pub enum Command<C> {
    /// Serve with these settings.
    Run(Box<C>),
    /// Print the help and exit.
    Help,
}

/// For a binary with flags: the settings to run with, or the exit code
/// `main` returns at once: 0 once `help` is printed, 2 after one line
/// naming what is wrong with the command line.
pub fn settings_or_exit<C>(
    command: Result<Command<C>, impl Display>,
    help: &str,
) -> Result<C, ExitCode> {
    match command {
        Ok(Command::Run(settings)) => Ok(*settings),
        Ok(Command::Help) => {
            print!("{help}");
            Err(ExitCode::SUCCESS)
        }
        Err(err) => {
            error!("{err}");
            Err(ExitCode::from(2))
        }
    }
}
