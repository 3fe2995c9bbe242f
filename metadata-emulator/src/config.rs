//! The emulator's settings: command-line flags, then the environment the
//! services also read (`PORT`, `BIND_ADDR`, `SHUTDOWN_GRACE`), then defaults
//! that keep it on loopback.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use cloud_run::{config::Lookup, ConfigError, ServerConfig};

use crate::identity;

/// The identity tokens are minted for unless `--email` says otherwise: the
/// tutorial's dedicated calling service account.
pub const DEFAULT_EMAIL: &str = "calling-service-sa@local-project.iam.gserviceaccount.com";

/// The project id unless `--project-id` says otherwise.
pub const DEFAULT_PROJECT_ID: &str = "local-project";

/// The region unless `--region` says otherwise: the tutorial's.
pub const DEFAULT_REGION: &str = "us-central1";

/// What `--email` takes to mean the project's default compute service
/// account, `PROJECT_NUMBER-compute@developer.gserviceaccount.com`, which
/// Cloud Run services run as unless deployed with `--service-account`.
pub(crate) const DEFAULT_COMPUTE: &str = "default-compute";

/// The port unless `--port` or `PORT` says otherwise; not 80 like the real
/// server, which would need root, nor 8080, which the services use.
pub(crate) const DEFAULT_PORT: u16 = 8999;

/// How long minted tokens live unless `--token-lifetime` says otherwise: as
/// long as Google's.
pub(crate) const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// What `--help` prints.
pub const HELP: &str = "\
metadata-emulator: a local stand-in for the GCE metadata server

Mints real RS256 ID tokens for one service account and publishes their
public keys as a JWKS, so the sender and receiver (and Google's client
libraries) can run the tutorial offline.

USAGE:
    metadata-emulator [FLAGS]

FLAGS:
    --port PORT              port to listen on (env PORT; default 8999; 0: any free port)
    --bind ADDR              address to listen on (env BIND_ADDR; default 127.0.0.1;
                             0.0.0.0 inside a container)
    --email EMAIL            the service account tokens are minted for
                             (default calling-service-sa@local-project.iam.gserviceaccount.com);
                             default-compute: the project's default compute service account,
                             PROJECT_NUMBER-compute@developer.gserviceaccount.com
    --project-id ID          the project id served at project/project-id (default local-project)
    --project-number NUMBER  the project number served at project/numeric-project-id and in
                             instance/region and instance/zone (default: derived from the
                             project id, the same on every start)
    --region REGION          the Cloud Run region served at instance/region, e.g. europe-west1;
                             the zone is REGION-1 (default us-central1)
    --key-file PATH          RSA private key, PKCS#8 (BEGIN PRIVATE KEY) or PKCS#1
                             (BEGIN RSA PRIVATE KEY) PEM; repeat to publish several keys,
                             the first one signs. Default: a new 2048-bit key at start
    --token-lifetime DUR     how long ID tokens live, e.g. 3600s or 5m (default 3600s)
    -h, --help               print this and exit

ENVIRONMENT:
    PORT, BIND_ADDR          as --port and --bind (the flags win)
    SHUTDOWN_GRACE           how long in-flight requests may finish after SIGTERM (default 8s)
    LOG_FORMAT               json (one object per line on stdout) or text (stderr; default)
    RUST_LOG                 log filter (default info; debug logs every request)

HOSTS:
    Only requests whose Host (HTTP/2: :authority) is a loopback address, localhost,
    metadata.google.internal, metadata or 169.254.169.254 (any port) are answered;
    anything else gets 403, so a web page rebinding its name to 127.0.0.1 gets no token.

ENDPOINTS (send Metadata-Flavor: Google to every /computeMetadata/ path):
    /computeMetadata/v1/instance/service-accounts/default/identity?audience=AUD[&format=full]
    /computeMetadata/v1/instance/service-accounts/default/{email,token,scopes,aliases}
    /computeMetadata/v1/instance/service-accounts/       default/ and the account's email
    /computeMetadata/v1/instance/{region,zone,id}        projects/NUMBER/regions/REGION,
                                                         projects/NUMBER/zones/REGION-1, a number
    /computeMetadata/v1/project/{project-id,numeric-project-id}
    /computeMetadata/v1/universe/universe-domain         googleapis.com
    /oauth2/v3/certs         the public keys as a JWKS (for the receiver's AUTH_JWKS_URL)
    Directories (ending in /) list their entries; ?recursive=true answers the whole
    directory as JSON. ?alt=json answers any entry as JSON, ?alt=text as text (a
    recursive directory as one \"path value\" line per value).
";

/// The emulator's settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen and how to shut down.
    pub server: ServerConfig,
    /// The service account's email, in `email` and at `.../default/email`.
    pub email: String,
    /// The project id at `project/project-id`.
    pub project_id: String,
    /// The project number at `project/numeric-project-id`; `None`: derived
    /// from the project id (see [`Config::project_number`]).
    pub project_number: Option<u64>,
    /// The region at `instance/region`.
    pub region: String,
    /// PEM files holding the keys; empty: generate one at start.
    pub key_files: Vec<PathBuf>,
    /// `exp - iat` of the ID tokens, and `expires_in` of access tokens.
    pub token_lifetime: Duration,
}

impl Config {
    /// Loopback on `port` with the default identity and a generated key.
    pub fn new(port: u16) -> Self {
        Self {
            server: ServerConfig {
                addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
                ..ServerConfig::default()
            },
            email: DEFAULT_EMAIL.to_owned(),
            project_id: DEFAULT_PROJECT_ID.to_owned(),
            project_number: None,
            region: DEFAULT_REGION.to_owned(),
            key_files: Vec::new(),
            token_lifetime: DEFAULT_TOKEN_LIFETIME,
        }
    }

    /// The project number served: `--project-number`, or one derived from
    /// the project id.
    pub fn project_number(&self) -> u64 {
        self.project_number
            .unwrap_or_else(|| identity::project_number(&self.project_id))
    }
}

/// What the command line asks for: serve with these settings, or print
/// [`HELP`].
pub type Command = cloud_run::service::Command<Config>;

/// A command line or environment that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsageError {
    /// An environment variable is malformed.
    #[error(transparent)]
    Env(#[from] ConfigError),
    /// A flag this program does not have.
    #[error("unknown argument {0:?} (see --help)")]
    Unknown(String),
    /// A flag given without its value.
    #[error("{0} needs a value (see --help)")]
    MissingValue(&'static str),
    /// A flag's value is malformed.
    #[error("{flag}: {problem}")]
    BadValue {
        /// The flag.
        flag: &'static str,
        /// What is wrong, in a few words.
        problem: String,
    },
    /// An argument that is not UTF-8.
    #[error("arguments must be UTF-8")]
    NotUtf8,
}

#[derive(Debug, Clone, Copy)]
enum Flag {
    Port,
    Bind,
    Email,
    ProjectId,
    ProjectNumber,
    Region,
    KeyFile,
    TokenLifetime,
}

impl Flag {
    fn name(self) -> &'static str {
        match self {
            Self::Port => "--port",
            Self::Bind => "--bind",
            Self::Email => "--email",
            Self::ProjectId => "--project-id",
            Self::ProjectNumber => "--project-number",
            Self::Region => "--region",
            Self::KeyFile => "--key-file",
            Self::TokenLifetime => "--token-lifetime",
        }
    }
}

fn bad(flag: &'static str, problem: impl Into<String>) -> UsageError {
    UsageError::BadValue {
        flag,
        problem: problem.into(),
    }
}

/// Reads the flags (`--flag value` or `--flag=value`) in `args`, which
/// excludes the program name, and the environment in `env`.
pub fn parse(
    args: impl IntoIterator<Item = String>,
    env: Lookup<'_>,
) -> Result<Command, UsageError> {
    // The services' variables, with the emulator's own defaults underneath.
    let with_defaults = |name: &str| {
        env(name).or_else(|| match name {
            "BIND_ADDR" => Some(Ipv4Addr::LOCALHOST.to_string()),
            "PORT" => Some(DEFAULT_PORT.to_string()),
            _ => None,
        })
    };
    let mut config = Config::new(DEFAULT_PORT);
    config.server = ServerConfig::from_env(&with_defaults)?;
    // Resolved once every flag is read: it depends on the project number.
    let mut default_compute = false;

    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) if name.starts_with("--") => (name.to_owned(), Some(value)),
            _ => (arg.clone(), None),
        };
        let flag = match name.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--port" => Flag::Port,
            "--bind" => Flag::Bind,
            "--email" => Flag::Email,
            "--project-id" => Flag::ProjectId,
            "--project-number" => Flag::ProjectNumber,
            "--region" => Flag::Region,
            "--key-file" => Flag::KeyFile,
            "--token-lifetime" => Flag::TokenLifetime,
            _ => return Err(UsageError::Unknown(arg)),
        };
        let name = flag.name();
        let value = match inline {
            Some(value) => value.to_owned(),
            None => args.next().ok_or(UsageError::MissingValue(name))?,
        };
        match flag {
            Flag::Port => {
                let port = value
                    .parse::<u16>()
                    .map_err(|_| bad(name, format!("not a port number: {value:?}")))?;
                config.server.addr.set_port(port);
            }
            Flag::Bind => {
                let ip = value
                    .parse::<IpAddr>()
                    .map_err(|_| bad(name, format!("not an IP address: {value:?}")))?;
                config.server.addr.set_ip(ip);
            }
            Flag::Email if value == DEFAULT_COMPUTE => default_compute = true,
            Flag::Email => {
                default_compute = false;
                config.email = check_email(&value).ok_or_else(|| {
                    bad(
                        name,
                        format!("not a service account email nor {DEFAULT_COMPUTE}: {value:?}"),
                    )
                })?;
            }
            Flag::ProjectId => {
                config.project_id = check_project_id(&value)
                    .ok_or_else(|| bad(name, format!("not a project id: {value:?}")))?;
            }
            Flag::ProjectNumber => {
                config.project_number = Some(check_project_number(&value).ok_or_else(|| {
                    bad(
                        name,
                        format!("not a project number (digits, no leading 0): {value:?}"),
                    )
                })?);
            }
            Flag::Region => {
                config.region = check_region(&value).ok_or_else(|| {
                    bad(name, format!("not a region like us-central1: {value:?}"))
                })?;
            }
            Flag::KeyFile => {
                if value.is_empty() {
                    return Err(bad(name, "empty path"));
                }
                config.key_files.push(PathBuf::from(value));
            }
            Flag::TokenLifetime => {
                let lookup = |_: &str| Some(value.clone());
                config.token_lifetime = cloud_run::config::duration(&lookup, "--token-lifetime")
                    .ok()
                    .flatten()
                    .filter(|d| (1..=86_400).contains(&d.as_secs()))
                    .ok_or_else(|| {
                        bad(name, format!("not a duration from 1s to 24h: {value:?}"))
                    })?;
            }
        }
    }
    if default_compute {
        config.email = default_compute_email(config.project_number());
    }
    Ok(Command::Run(Box::new(config)))
}

/// The default compute service account of the project numbered `number`.
pub(crate) fn default_compute_email(number: u64) -> String {
    format!("{number}-compute@developer.gserviceaccount.com")
}

/// Digits without a leading zero, fitting in a `u64`.
fn check_project_number(value: &str) -> Option<u64> {
    let digits = !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit());
    if !digits || value.starts_with('0') {
        return None;
    }
    value.parse().ok()
}

/// Google Cloud's region names: lowercase words joined by hyphens, ending in
/// a number (`us-central1`, `northamerica-northeast2`); they also end up in
/// a zone name and a run.app host name.
fn check_region(value: &str) -> Option<String> {
    let words: Vec<&str> = value.split('-').collect();
    let ok = value.len() <= 50
        && words.len() >= 2
        && words.iter().all(|w| {
            !w.is_empty()
                && w.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
        && words
            .first()
            .is_some_and(|w| w.bytes().all(|b| b.is_ascii_lowercase()))
        && words.last().is_some_and(|w| {
            let letters = w.trim_end_matches(|c: char| c.is_ascii_digit());
            !letters.is_empty()
                && letters.len() < w.len()
                && letters.bytes().all(|b| b.is_ascii_lowercase())
        });
    ok.then(|| value.to_owned())
}

/// `local@domain`, without characters that would need escaping anywhere.
fn check_email(value: &str) -> Option<String> {
    let (local, domain) = value.split_once('@')?;
    let ok = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._+".contains(&b))
    };
    (ok(local) && ok(domain) && domain.contains('.')).then(|| value.to_owned())
}

/// Google's project ids: lowercase letters, digits and hyphens (and, for old
/// domain-scoped projects, `domain:`); anything printable and short here.
fn check_project_id(value: &str) -> Option<String> {
    let ok = !value.is_empty()
        && value.len() <= 100
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:_".contains(&b));
    ok.then(|| value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str], env: &[(&str, &str)]) -> Result<Config, UsageError> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let lookup = move |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        match parse(args.iter().map(|s| s.to_string()), &lookup)? {
            Command::Run(config) => Ok(*config),
            Command::Help => panic!("unexpected help"),
        }
    }

    #[test]
    fn defaults_stay_on_loopback() {
        let c = run(&[], &[]).expect("defaults");
        assert_eq!(c.server.addr, "127.0.0.1:8999".parse().expect("addr"));
        assert_eq!(c.email, DEFAULT_EMAIL);
        assert_eq!(c.project_id, DEFAULT_PROJECT_ID);
        assert!(c.key_files.is_empty());
        assert_eq!(c.token_lifetime, Duration::from_secs(3600));
    }

    #[test]
    fn env_then_flags() {
        let c = run(&[], &[("PORT", "0"), ("BIND_ADDR", "0.0.0.0")]).expect("env");
        assert_eq!(c.server.addr, "0.0.0.0:0".parse().expect("addr"));
        let c = run(
            &["--port", "9000", "--bind=::1"],
            &[("PORT", "0"), ("BIND_ADDR", "0.0.0.0")],
        )
        .expect("flags");
        assert_eq!(c.server.addr, "[::1]:9000".parse().expect("addr"));
    }

    #[test]
    fn identity_keys_and_lifetime() {
        let c = run(
            &[
                "--email",
                "a@p.iam.gserviceaccount.com",
                "--project-id=p-1",
                "--key-file",
                "one.pem",
                "--key-file=two.pem",
                "--token-lifetime",
                "5m",
            ],
            &[],
        )
        .expect("flags");
        assert_eq!(c.email, "a@p.iam.gserviceaccount.com");
        assert_eq!(c.project_id, "p-1");
        assert_eq!(
            c.key_files,
            vec![PathBuf::from("one.pem"), PathBuf::from("two.pem")]
        );
        assert_eq!(c.token_lifetime, Duration::from_secs(300));
    }

    #[test]
    fn region_and_project_number() {
        let c = run(&[], &[]).expect("defaults");
        assert_eq!(c.region, "us-central1");
        assert_eq!(c.project_number, None);
        assert_eq!(
            c.project_number(),
            identity::project_number("local-project")
        );
        let c = run(
            &["--region", "europe-west1", "--project-number=123456789012"],
            &[],
        )
        .expect("flags");
        assert_eq!(c.region, "europe-west1");
        assert_eq!(c.project_number(), 123_456_789_012);
        for region in ["northamerica-northeast2", "me-central2", "us-east4"] {
            assert_eq!(
                run(&["--region", region], &[]).expect(region).region,
                region
            );
        }
    }

    #[test]
    fn default_compute_follows_the_project_number_wherever_given() {
        let compute = "123456789012-compute@developer.gserviceaccount.com";
        for args in [
            &[
                "--email",
                "default-compute",
                "--project-number",
                "123456789012",
            ][..],
            &[
                "--project-number",
                "123456789012",
                "--email=default-compute",
            ],
        ] {
            assert_eq!(run(args, &[]).expect("flags").email, compute, "{args:?}");
        }
        let derived =
            run(&["--email", "default-compute", "--project-id", "p-2"], &[]).expect("derived");
        assert_eq!(
            derived.email,
            default_compute_email(identity::project_number("p-2"))
        );
        // The last --email wins, as for every flag.
        let c = run(
            &[
                "--email",
                "default-compute",
                "--email",
                "a@p.iam.gserviceaccount.com",
            ],
            &[],
        )
        .expect("flags");
        assert_eq!(c.email, "a@p.iam.gserviceaccount.com");
    }

    #[test]
    fn help_wins() {
        let lookup = |_: &str| None;
        for args in [&["--help"][..], &["--port", "1", "-h"]] {
            let command = parse(args.iter().map(|s| s.to_string()), &lookup).expect("help");
            assert!(matches!(command, Command::Help));
        }
    }

    #[test]
    fn errors_name_the_flag_or_variable() {
        type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
        let cases: &[Case] = &[
            (&["--port", "http"], &[], "--port: "),
            (&["--port"], &[], "--port needs a value"),
            (&["--bind", "localhost"], &[], "--bind: "),
            (&["--email", "nobody"], &[], "--email: "),
            (&["--email", "a b@c.d"], &[], "--email: "),
            (&["--project-id", ""], &[], "--project-id: "),
            (&["--project-id", "a/b"], &[], "--project-id: "),
            (&["--key-file="], &[], "--key-file: "),
            (&["--email", "default"], &[], "--email: "),
            (&["--project-number", ""], &[], "--project-number: "),
            (&["--project-number", "0"], &[], "--project-number: "),
            (&["--project-number", "012"], &[], "--project-number: "),
            (&["--project-number", "-1"], &[], "--project-number: "),
            (&["--project-number", "12a"], &[], "--project-number: "),
            (
                &["--project-number", "99999999999999999999"],
                &[],
                "--project-number: ",
            ),
            (&["--region", ""], &[], "--region: "),
            (&["--region", "US-CENTRAL1"], &[], "--region: "),
            (&["--region", "uscentral1"], &[], "--region: "),
            (&["--region", "us-central"], &[], "--region: "),
            (&["--region", "us--central1"], &[], "--region: "),
            (&["--region", "1us-central1"], &[], "--region: "),
            (&["--region", "us-central1-a"], &[], "--region: "),
            (&["--region", "us-central1/x"], &[], "--region: "),
            (&["--token-lifetime", "0s"], &[], "--token-lifetime: "),
            (&["--token-lifetime", "2d"], &[], "--token-lifetime: "),
            (&["--frobnicate"], &[], "unknown argument \"--frobnicate\""),
            (&["stray"], &[], "unknown argument \"stray\""),
            (&[], &[("PORT", "x")], "PORT: "),
            (&[], &[("BIND_ADDR", "x")], "BIND_ADDR: "),
        ];
        for (args, env, expected) in cases {
            let err = run(args, env).expect_err("must fail");
            assert!(
                err.to_string().starts_with(expected),
                "{args:?}: {err} does not start with {expected}"
            );
        }
    }
}
