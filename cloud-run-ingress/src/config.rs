//! The ingress's settings: flags, each of which can also be given as the
//! environment variable `--help` names beside it (a flag wins). Checked
//! before the port is bound; every error names the flag or variable.

use std::{collections::HashMap, net::Ipv4Addr, path::PathBuf, time::Duration};

use cloud_run::{config::Lookup, ConfigError, ServerConfig};
use reqwest::Url;

/// What `--help` prints.
pub const HELP: &str = "\
cloud-run-ingress: a local stand-in for Cloud Run's front end

Checks each caller's ID token against the service's IAM policy, as Cloud Run
does before a request reaches a private service, then forwards the request
to one container.

USAGE:
    cloud-run-ingress --upstream URL --audience URL --policy FILE [FLAGS]

FLAGS (each also read from the variable in brackets; a flag wins):
    --port PORT          port to listen on [PORT] (default 8080; 0: any free port)
    --bind ADDR          address to listen on [BIND_ADDR] (default 127.0.0.1)
    --upstream URL       the container, e.g. http://127.0.0.1:8081 [INGRESS_UPSTREAM]
    --audience URL       an accepted token audience: the service's URL or a custom
                         audience; repeat for several [INGRESS_AUDIENCES, comma-separated]
    --policy FILE        the service's IAM policy, as `gcloud run services
                         get-iam-policy --format=json` prints it, plus optional
                         \"projectBindings\" in the same shape; re-read within 2 s
                         of a change [INGRESS_POLICY]
    --jwks-url URL       the token signing keys, as a JWKS [AUTH_JWKS_URL]
                         (default https://www.googleapis.com/oauth2/v3/certs;
                         plain http only to a loopback host)
    --use-http2          speak h2c to the container, as `gcloud run deploy
                         --use-http2` does [INGRESS_USE_HTTP2=true]
    --timeout DUR        the request timeout; past it the caller gets 504
                         [INGRESS_TIMEOUT] (default 300s, at most 3600s)
    -h, --help           print this and exit

ENVIRONMENT:
    SHUTDOWN_GRACE, LOG_FORMAT, RUST_LOG, HEADER_TIMEOUT, IDLE_TIMEOUT,
    MAX_CONNECTIONS      as for the services
";

/// Cloud Run's default request timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// Cloud Run's longest request timeout.
const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

/// The ingress's settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen and how to shut down.
    pub server: ServerConfig,
    /// The container requests are forwarded to.
    pub upstream: Url,
    /// Accepted token audiences.
    pub audiences: Vec<String>,
    /// The IAM policy file.
    pub policy: PathBuf,
    /// Where the token signing keys are published.
    pub jwks_url: Url,
    /// Whether the container is spoken to in h2c.
    pub use_http2: bool,
    /// The request timeout.
    pub timeout: Duration,
}

/// What the command line asks for: serve with these settings, or print
/// [`HELP`].
pub type Command = cloud_run::service::Command<Config>;

/// The flags that take a value, and the variable each stands for.
const VALUE_FLAGS: [(&str, &str); 7] = [
    ("--port", "PORT"),
    ("--bind", "BIND_ADDR"),
    ("--upstream", "INGRESS_UPSTREAM"),
    ("--audience", "INGRESS_AUDIENCES"),
    ("--policy", "INGRESS_POLICY"),
    ("--jwks-url", "AUTH_JWKS_URL"),
    ("--timeout", "INGRESS_TIMEOUT"),
];

/// Reads the flags in `args` (without the program name), over the
/// environment in `env`.
pub fn parse(
    args: impl IntoIterator<Item = String>,
    env: Lookup<'_>,
) -> Result<Command, ConfigError> {
    let mut given: HashMap<&'static str, String> = HashMap::new();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) if name.starts_with("--") => (name, Some(value.to_owned())),
            _ => (arg.as_str(), None),
        };
        match name {
            "-h" | "--help" => return Ok(Command::Help),
            "--use-http2" => {
                // `--use-http2` or `--use-http2=true|false`, as the variable.
                given.insert(
                    "INGRESS_USE_HTTP2",
                    inline.unwrap_or_else(|| "true".to_owned()),
                );
                continue;
            }
            _ => {}
        }
        let Some(&(flag, var)) = VALUE_FLAGS.iter().find(|(flag, _)| *flag == name) else {
            return Err(ConfigError::new(
                "arguments",
                format!("unknown flag {arg:?} (see --help)"),
            ));
        };
        let value = match inline {
            Some(value) => value,
            None => args
                .next()
                .ok_or_else(|| ConfigError::new("arguments", format!("{flag} needs a value")))?,
        };
        // --audience repeats; the variable is a comma-separated list.
        match given.get_mut(var) {
            Some(list) if flag == "--audience" => {
                list.push(',');
                list.push_str(&value);
            }
            _ => {
                given.insert(var, value);
            }
        }
    }
    let lookup = |name: &str| given.get(name).cloned().or_else(|| env(name));
    Config::from_env(&lookup).map(|config| Command::Run(Box::new(config)))
}

impl Config {
    /// Reads the settings from `env` (flags already folded in).
    pub fn from_env(env: Lookup<'_>) -> Result<Self, ConfigError> {
        let with_defaults = |name: &str| {
            env(name).or_else(|| match name {
                "BIND_ADDR" => Some(Ipv4Addr::LOCALHOST.to_string()),
                _ => None,
            })
        };
        let server = ServerConfig::from_env(&with_defaults)?;
        let upstream = env("INGRESS_UPSTREAM").ok_or_else(|| {
            ConfigError::new(
                "INGRESS_UPSTREAM",
                "required: the container's URL, e.g. http://127.0.0.1:8081",
            )
        })?;
        let upstream = upstream_url(&upstream)?;
        let audiences = env("INGRESS_AUDIENCES").ok_or_else(|| {
            ConfigError::new(
                "INGRESS_AUDIENCES",
                "required: the service's URL, which callers' tokens name as their audience",
            )
        })?;
        let audiences = list(&audiences, "INGRESS_AUDIENCES")?;
        let policy = env("INGRESS_POLICY").map(PathBuf::from).ok_or_else(|| {
            ConfigError::new("INGRESS_POLICY", "required: the service's IAM policy file")
        })?;
        let jwks_url = match env("AUTH_JWKS_URL") {
            Some(url) => cloud_run::url::secure_url(
                "AUTH_JWKS_URL",
                &url,
                "the signing keys decide who gets in",
            )?,
            None => cloud_run::url::http_url("AUTH_JWKS_URL", id_token::GOOGLE_JWKS_URL)?,
        };
        let use_http2 = match env("INGRESS_USE_HTTP2").as_deref() {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(ConfigError::new(
                    "INGRESS_USE_HTTP2",
                    format!("expected true or false, got {other:?}"),
                ))
            }
        };
        let timeout =
            cloud_run::config::duration(env, "INGRESS_TIMEOUT")?.unwrap_or(DEFAULT_TIMEOUT);
        if timeout.is_zero() || timeout > MAX_TIMEOUT {
            return Err(ConfigError::new(
                "INGRESS_TIMEOUT",
                "must be above 0 and at most 3600s, as on Cloud Run",
            ));
        }
        Ok(Self {
            server,
            upstream,
            audiences,
            policy,
            jwks_url,
            use_http2,
            timeout,
        })
    }
}

fn upstream_url(value: &str) -> Result<Url, ConfigError> {
    const VAR: &str = "INGRESS_UPSTREAM";
    let url = Url::parse(value)
        .map_err(|err| ConfigError::new(VAR, format!("not an absolute URL ({err}): {value:?}")))?;
    if url.scheme() != "http" || !url.has_host() {
        return Err(ConfigError::new(
            VAR,
            format!("not an http:// URL (the container speaks plain HTTP): {value:?}"),
        ));
    }
    if url.path() != "/"
        || url.query().is_some()
        || !url.username().is_empty()
        || url.password().is_some()
    {
        return Err(ConfigError::new(
            VAR,
            format!("only scheme, host and port: {value:?}"),
        ));
    }
    Ok(url)
}

fn list(value: &str, var: &'static str) -> Result<Vec<String>, ConfigError> {
    let items: Vec<String> = value.split(',').map(|s| s.trim().to_owned()).collect();
    if items.iter().any(String::is_empty) {
        return Err(ConfigError::new(
            var,
            "empty entry in the comma-separated list",
        ));
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloud_run::testing::env;

    fn run(args: &[&str], vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        match parse(args.iter().map(|s| s.to_string()), &env(vars))? {
            Command::Run(config) => Ok(*config),
            Command::Help => panic!("help"),
        }
    }

    const NEEDED: [&str; 6] = [
        "--upstream",
        "http://127.0.0.1:8081",
        "--audience",
        "http://127.0.0.1:8080",
        "--policy",
        "policy.json",
    ];

    #[test]
    fn flags_with_cloud_run_s_defaults() {
        let c = run(&NEEDED, &[]).expect("config");
        assert_eq!(c.server.addr, "127.0.0.1:8080".parse().expect("addr"));
        assert_eq!(c.upstream.as_str(), "http://127.0.0.1:8081/");
        assert_eq!(c.audiences, ["http://127.0.0.1:8080"]);
        assert_eq!(c.policy, PathBuf::from("policy.json"));
        assert_eq!(c.jwks_url.as_str(), id_token::GOOGLE_JWKS_URL);
        assert!(!c.use_http2);
        assert_eq!(c.timeout, Duration::from_secs(300));
    }

    #[test]
    fn every_flag_has_its_variable_and_flags_win() {
        assert!(
            run(&[NEEDED.as_slice(), &["--use-http2=true"]].concat(), &[])
                .expect("=true")
                .use_http2
        );
        assert!(
            !run(&[NEEDED.as_slice(), &["--use-http2=false"]].concat(), &[])
                .expect("=false")
                .use_http2
        );
        let c = run(
            &["--audience=https://custom", "--use-http2", "--port", "9000"],
            &[
                ("INGRESS_UPSTREAM", "http://127.0.0.1:1"),
                ("INGRESS_AUDIENCES", "https://from-env"),
                ("INGRESS_POLICY", "p.json"),
                ("AUTH_JWKS_URL", "http://127.0.0.1:2/certs"),
                ("INGRESS_TIMEOUT", "2s"),
                ("PORT", "1"),
                ("BIND_ADDR", "0.0.0.0"),
            ],
        )
        .expect("config");
        assert_eq!(c.audiences, ["https://custom"]);
        assert_eq!(c.server.addr, "0.0.0.0:9000".parse().expect("addr"));
        assert!(c.use_http2);
        assert_eq!(c.timeout, Duration::from_secs(2));
        assert_eq!(c.jwks_url.as_str(), "http://127.0.0.1:2/certs");
        let c = run(
            &[],
            &[
                ("INGRESS_UPSTREAM", "http://127.0.0.1:1"),
                ("INGRESS_AUDIENCES", "a,b"),
                ("INGRESS_POLICY", "p"),
            ],
        )
        .expect("env only");
        assert_eq!(c.audiences, ["a", "b"]);
    }

    #[test]
    fn audience_repeats() {
        let mut args = NEEDED.to_vec();
        args.extend([
            "--audience",
            "https://receiving-service-123.us-central1.run.app",
        ]);
        let c = run(&args, &[]).expect("config");
        assert_eq!(
            c.audiences,
            [
                "http://127.0.0.1:8080",
                "https://receiving-service-123.us-central1.run.app"
            ]
        );
    }

    #[test]
    fn errors_name_what_to_fix() {
        for (args, var) in [
            (
                &["--audience", "a", "--policy", "p"][..],
                "INGRESS_UPSTREAM",
            ),
            (
                &["--upstream", "http://127.0.0.1:1", "--policy", "p"][..],
                "INGRESS_AUDIENCES",
            ),
            (
                &["--upstream", "http://127.0.0.1:1", "--audience", "a"][..],
                "INGRESS_POLICY",
            ),
        ] {
            assert_eq!(run(args, &[]).expect_err(var).var, var);
        }
        for (flag, value, var) in [
            ("--upstream", "https://127.0.0.1:1", "INGRESS_UPSTREAM"),
            ("--upstream", "http://127.0.0.1:1/path", "INGRESS_UPSTREAM"),
            ("--jwks-url", "http://keys.example/certs", "AUTH_JWKS_URL"),
            ("--timeout", "0s", "INGRESS_TIMEOUT"),
            ("--timeout", "2h", "INGRESS_TIMEOUT"),
            ("--port", "http", "PORT"),
        ] {
            let mut args = NEEDED.to_vec();
            args.extend([flag, value]);
            assert_eq!(run(&args, &[]).expect_err(flag).var, var, "{flag} {value}");
        }
        assert_eq!(run(&["--nope"], &[]).expect_err("unknown").var, "arguments");
        assert_eq!(
            run(&["--policy"], &[]).expect_err("no value").var,
            "arguments"
        );
    }
}
