//! `AUTH_AUDIENCE=auto`: on Cloud Run a service knows its deterministic URL,
//! `https://SERVICE-PROJECT_NUMBER.REGION.run.app`, from `K_SERVICE` and the
//! metadata server, so the audience need not be learnt after a first deploy.

use cloud_run::{
    metadata::{MetadataClient, MetadataError},
    ConfigError,
};
use tracing::info;

use crate::config::{AuthConfig, AutoAudience};

/// The longest DNS label; a deterministic URL whose first label would be
/// longer does not exist.
const MAX_LABEL: usize = 63;

impl AuthConfig {
    /// Finishes the configuration at start: `AUTH_AUDIENCE=auto` becomes the
    /// service's deterministic URL, asked of the metadata server (each
    /// answer awaited at most [`AutoAudience::timeout`]), and the audiences
    /// are logged. Without `auto`, returns the configuration as it is.
    /// Errors name `AUTH_AUDIENCE`: off Cloud Run (no metadata server), or
    /// a service whose deterministic URL does not exist.
    ///
    /// ```
    /// # async fn example() -> Result<(), cloud_run::ConfigError> {
    /// use id_token::AuthConfig;
    /// let env = |name: &str| match name {
    ///     "AUTH_AUDIENCE" => Some("https://receiver.example.com".to_owned()),
    ///     "AUTH_ALLOWED_INVOKERS" => Some("sender@p.iam.gserviceaccount.com".to_owned()),
    ///     _ => None,
    /// };
    /// let http = cloud_run::client::build(std::time::Duration::from_secs(5)).expect("client");
    /// if let Some(config) = AuthConfig::from_env(&env)? {
    ///     let config = config.resolve(&http).await?;
    ///     assert_eq!(config.audiences, ["https://receiver.example.com"]);
    /// }
    /// # Ok(())
    /// # }
    /// # tokio::runtime::Runtime::new().unwrap().block_on(example()).unwrap();
    /// ```
    pub async fn resolve(mut self, http: &reqwest::Client) -> Result<Self, ConfigError> {
        let Some(auto) = self.auto_audience.take() else {
            return Ok(self);
        };
        let url = deterministic_url(&auto, http).await?;
        if !self.audiences.contains(&url) {
            self.audiences.push(url.clone());
        }
        info!(
            service = %auto.service,
            resolved = %url,
            audiences = ?self.audiences,
            "AUTH_AUDIENCE=auto resolved"
        );
        Ok(self)
    }
}

async fn deterministic_url(
    auto: &AutoAudience,
    http: &reqwest::Client,
) -> Result<String, ConfigError> {
    let fail = |problem: String| ConfigError::new("AUTH_AUDIENCE", problem);
    let metadata = MetadataClient::new(&auto.metadata_host, http.clone(), auto.timeout)
        .ok_or_else(|| fail(format!("auto: bad metadata host {:?}", auto.metadata_host)))?;
    let unreachable = |err: MetadataError| {
        fail(format!(
            "auto works only on Cloud Run, and the metadata server at {} did not tell the \
             service's URL ({err}): give the receiver's URL instead",
            auto.metadata_host
        ))
    };
    let (number, region) = tokio::join!(metadata.numeric_project_id(), metadata.region());
    let number = number.map_err(unreachable)?;
    let region = region.map_err(unreachable)?;
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return Err(fail(format!(
            "auto: the metadata server's project number is not a number: {number:?}"
        )));
    }
    // `projects/NUMBER/regions/REGION`.
    let region = region.rsplit('/').next().unwrap_or_default();
    if region.is_empty()
        || !region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(fail(format!(
            "auto: the metadata server's region is not a region: {region:?}"
        )));
    }
    let label = format!("{}-{number}", auto.service);
    if label.len() > MAX_LABEL {
        return Err(fail(format!(
            "auto: service {:?} has no deterministic URL: its first DNS label {label} is {} \
             characters, more than {MAX_LABEL}; give the service's other URL \
             (https://SERVICE-HASH-XX.a.run.app, from gcloud run services describe) instead",
            auto.service,
            label.len()
        )));
    }
    Ok(format!("https://{label}.{region}.run.app"))
}
