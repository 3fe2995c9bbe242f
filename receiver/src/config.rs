//! The receiver's settings: where to listen and, when `AUTH_AUDIENCE` is
//! set, how to verify the callers' ID tokens. Checked before the port is
//! bound; every error names its variable.

use cloud_run::{config::Lookup, ConfigError, ServerConfig};
use id_token::AuthConfig;

/// The receiver's settings.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// Where to listen and how to shut down.
    pub server: ServerConfig,
    /// In-app verification of callers' ID tokens; `None` lets everyone in,
    /// leaving protection to Cloud Run's IAM check.
    pub auth: Option<AuthConfig>,
}

impl Config {
    /// Reads the settings from `env`, which must give values as set, empty
    /// ones included ([`cloud_run::config::process_env_as_set`]): an empty
    /// `AUTH_*` variable is an error, any other empty one counts as unset.
    pub fn from_env(env: Lookup<'_>) -> Result<Self, ConfigError> {
        let unset_if_empty = |name: &str| env(name).filter(|v| !v.is_empty());
        Ok(Self {
            server: ServerConfig::from_env(&unset_if_empty)?,
            auth: AuthConfig::from_env(env)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloud_run::testing::env;

    #[test]
    fn other_empty_values_count_as_unset() {
        let c = Config::from_env(&env(&[("PORT", ""), ("SHUTDOWN_GRACE", "")])).expect("config");
        assert_eq!(c.server.addr.port(), 8080);
        assert!(c.auth.is_none());
        let err =
            Config::from_env(&env(&[("PORT", ""), ("AUTH_AUDIENCE", "")])).expect_err("empty");
        assert_eq!(err.var, "AUTH_AUDIENCE");
    }
}
