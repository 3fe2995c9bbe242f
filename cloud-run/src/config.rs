//! Settings from the environment. Every error names the variable it is about,
//! so `main` can exit with one line that says what to fix.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::Duration,
};

/// A lookup of one environment variable; tests pass a closure over a map
/// instead of mutating the process environment.
pub type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment, with empty values treated as unset (as Cloud Run
/// and most shells make no difference between the two).
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The process environment as set, empty values included, for settings
/// where an empty value is a mistake to report (`AUTH_AUDIENCE=$URL` with
/// `URL` unset) rather than a way to say "unset". A value that is not UTF-8
/// comes back with replacement characters, to be refused, not ignored.
pub fn process_env_as_set(name: &str) -> Option<String> {
    std::env::var_os(name).map(|v| v.to_string_lossy().into_owned())
}

/// A setting that is missing or malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}: {problem}")]
pub struct ConfigError {
    /// The environment variable at fault.
    pub var: &'static str,
    /// What is wrong with it, in a few words.
    pub problem: String,
}

impl ConfigError {
    /// A problem with `var`.
    pub fn new(var: &'static str, problem: impl Into<String>) -> Self {
        Self {
            var,
            problem: problem.into(),
        }
    }
}

/// Where and how a service listens.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// `$BIND_ADDR:$PORT`; Cloud Run needs `0.0.0.0:8080` (its `PORT`).
    pub addr: SocketAddr,
    /// How long in-flight requests may run after SIGTERM. Cloud Run kills
    /// the instance 10 s after SIGTERM, hence 8 s by default.
    pub shutdown_grace: Duration,
    /// `HEADER_TIMEOUT`: how long a new connection may take to complete its
    /// first request head (HTTP/1) or its preface and first SETTINGS
    /// (HTTP/2), and how long any request head may take once started.
    pub header_read_timeout: Duration,
    /// `IDLE_TIMEOUT`: how long a connection with no request in flight is
    /// kept. Longer than the 600 s Google's load balancers keep theirs, so
    /// that the proxy, not this server, closes first.
    pub idle_timeout: Duration,
    /// `MAX_CONNECTIONS`: open connections at most; at the cap the longest
    /// idle one is closed for a new one. Lowered at start to what
    /// `RLIMIT_NOFILE` leaves room for.
    pub max_connections: usize,
    /// Largest request head accepted; larger gets 431.
    pub max_header_bytes: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 8080),
            shutdown_grace: Duration::from_secs(8),
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(620),
            max_connections: 10_000,
            max_header_bytes: 64 * 1024,
        }
    }
}

impl ServerConfig {
    /// Reads `BIND_ADDR`, `PORT`, `SHUTDOWN_GRACE`, `HEADER_TIMEOUT`,
    /// `IDLE_TIMEOUT` and `MAX_CONNECTIONS`.
    pub fn from_env(env: Lookup<'_>) -> Result<Self, ConfigError> {
        let defaults = Self::default();
        let ip = match env("BIND_ADDR") {
            Some(v) => v
                .parse::<IpAddr>()
                .map_err(|_| ConfigError::new("BIND_ADDR", format!("not an IP address: {v:?}")))?,
            None => defaults.addr.ip(),
        };
        let port = match env("PORT") {
            Some(v) => v
                .parse::<u16>()
                .map_err(|_| ConfigError::new("PORT", format!("not a port number: {v:?}")))?,
            None => defaults.addr.port(),
        };
        let shutdown_grace = duration(env, "SHUTDOWN_GRACE")?.unwrap_or(defaults.shutdown_grace);
        let header_read_timeout =
            positive_duration(env, "HEADER_TIMEOUT")?.unwrap_or(defaults.header_read_timeout);
        let idle_timeout = positive_duration(env, "IDLE_TIMEOUT")?.unwrap_or(defaults.idle_timeout);
        let max_connections = match env("MAX_CONNECTIONS") {
            Some(v) => v
                .trim()
                .parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| {
                    ConfigError::new("MAX_CONNECTIONS", format!("not a number above 0: {v:?}"))
                })?,
            None => defaults.max_connections,
        };
        Ok(Self {
            addr: SocketAddr::new(ip, port),
            shutdown_grace,
            header_read_timeout,
            idle_timeout,
            max_connections,
            ..defaults
        })
    }
}

/// Reads a duration such as `10s`, `1500ms`, `2m` or a bare number of seconds.
pub fn duration(env: Lookup<'_>, var: &'static str) -> Result<Option<Duration>, ConfigError> {
    let Some(value) = env(var) else {
        return Ok(None);
    };
    parse_duration(&value).map(Some).ok_or_else(|| {
        ConfigError::new(var, format!("not a duration like 10s or 500ms: {value:?}"))
    })
}

/// A [`duration`] that must be above zero: a zero timeout would close
/// every connection at once rather than turn the limit off.
fn positive_duration(env: Lookup<'_>, var: &'static str) -> Result<Option<Duration>, ConfigError> {
    match duration(env, var)? {
        Some(d) if d.is_zero() => Err(ConfigError::new(var, "must be above 0")),
        other => Ok(other),
    }
}

fn parse_duration(value: &str) -> Option<Duration> {
    let value = value.trim();
    let split = value
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    let number: f64 = number.parse().ok()?;
    let seconds = match unit.trim() {
        "" | "s" => number,
        "ms" => number / 1000.0,
        "m" => number * 60.0,
        _ => return None,
    };
    Duration::try_from_secs_f64(seconds).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::env;

    #[test]
    fn defaults_follow_cloud_run() {
        let c = ServerConfig::from_env(&env(&[])).expect("defaults");
        assert_eq!(c.addr, "0.0.0.0:8080".parse().expect("addr"));
        assert_eq!(c.shutdown_grace, Duration::from_secs(8));
    }

    #[test]
    fn port_and_bind_addr_are_honoured() {
        let c = ServerConfig::from_env(&env(&[("PORT", "9090"), ("BIND_ADDR", "127.0.0.1")]))
            .expect("config");
        assert_eq!(c.addr, "127.0.0.1:9090".parse().expect("addr"));
    }

    #[test]
    fn errors_name_the_variable() {
        let err = ServerConfig::from_env(&env(&[("PORT", "http")])).expect_err("bad port");
        assert_eq!(err.var, "PORT");
        let err = ServerConfig::from_env(&env(&[("BIND_ADDR", "localhost")])).expect_err("bad ip");
        assert!(err.to_string().starts_with("BIND_ADDR: "), "{err}");
        let err =
            ServerConfig::from_env(&env(&[("SHUTDOWN_GRACE", "soon")])).expect_err("bad grace");
        assert_eq!(err.var, "SHUTDOWN_GRACE");
        for (var, value) in [
            ("HEADER_TIMEOUT", "0"),
            ("HEADER_TIMEOUT", "soon"),
            ("IDLE_TIMEOUT", "0s"),
            ("MAX_CONNECTIONS", "0"),
            ("MAX_CONNECTIONS", "-1"),
            ("MAX_CONNECTIONS", "many"),
        ] {
            let err = ServerConfig::from_env(&env(&[(var, value)])).expect_err(value);
            assert_eq!(err.var, var, "{value}");
        }
    }

    #[test]
    fn connection_limits() {
        let c = ServerConfig::from_env(&env(&[])).expect("defaults");
        assert_eq!(c.header_read_timeout, Duration::from_secs(10));
        assert_eq!(c.idle_timeout, Duration::from_secs(620));
        assert_eq!(c.max_connections, 10_000);
        let c = ServerConfig::from_env(&env(&[
            ("HEADER_TIMEOUT", "5s"),
            ("IDLE_TIMEOUT", "15m"),
            ("MAX_CONNECTIONS", "500"),
        ]))
        .expect("config");
        assert_eq!(c.header_read_timeout, Duration::from_secs(5));
        assert_eq!(c.idle_timeout, Duration::from_secs(900));
        assert_eq!(c.max_connections, 500);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10"), Some(Duration::from_secs(10)));
        assert_eq!(parse_duration("10s"), Some(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("-1s"), None);
        assert_eq!(parse_duration("ten"), None);
        assert_eq!(parse_duration("5h"), None);
    }
}
