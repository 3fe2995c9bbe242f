//! A service-account key: an RS256 assertion signed with it, exchanged at
//! its `token_uri` for an ID token.

use std::{
    fmt,
    path::Path,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use cloud_run::ConfigError;
use reqwest::Url;
use serde::Deserialize;

use super::{adc::KeyFile, exchange::exchange};
use crate::token::TokenError;

/// How token endpoints are named in errors.
pub(super) const TOKEN_ENDPOINT: &str = "the token endpoint";

/// A service-account key, ready to sign assertions. `Debug` shows the
/// account, never the key.
pub struct ServiceAccountKey {
    client_email: String,
    private_key_id: String,
    key: jsonwebtoken::EncodingKey,
    token_uri: Url,
}

impl fmt::Debug for ServiceAccountKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceAccountKey")
            .field("client_email", &self.client_email)
            .field("token_uri", &self.token_uri.as_str())
            .finish_non_exhaustive()
    }
}

impl ServiceAccountKey {
    /// The key in `file`, read from `path` (named in errors).
    pub(super) fn load(path: &Path, file: KeyFile) -> Result<Self, ConfigError> {
        let problem = |what: &str| {
            ConfigError::new(
                "GOOGLE_APPLICATION_CREDENTIALS",
                format!("{}: {what}", path.display()),
            )
        };
        if file.client_email.is_empty() || file.private_key_id.is_empty() {
            return Err(problem("client_email or private_key_id missing"));
        }
        let token_uri = file.token_uri().map_err(|what| problem(&what))?;
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(file.private_key.as_bytes())
            .map_err(|_| problem("private_key is not an RSA private key in PEM"))?;
        Ok(Self {
            client_email: file.client_email,
            private_key_id: file.private_key_id,
            key,
            token_uri,
        })
    }

    /// The service account's email.
    pub fn client_email(&self) -> &str {
        &self.client_email
    }

    /// A new ID token for `audience`, from the key's token endpoint.
    pub(super) async fn fetch(
        &self,
        http: &reqwest::Client,
        timeout: Duration,
        audience: &str,
    ) -> Result<String, TokenError> {
        #[derive(Deserialize)]
        struct Answer {
            id_token: String,
        }
        let assertion = self.assertion(audience)?;
        let request = http.post(self.token_uri.clone()).timeout(timeout).form(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", assertion.as_str()),
        ]);
        let answer: Answer = exchange(request, TOKEN_ENDPOINT).await?;
        Ok(answer.id_token)
    }

    /// A JWT-bearer assertion asking `token_uri` for an ID token for `audience`.
    fn assertion(&self, audience: &str) -> Result<String, TokenError> {
        #[derive(serde::Serialize)]
        struct Claims<'a> {
            iss: &'a str,
            sub: &'a str,
            aud: &'a str,
            target_audience: &'a str,
            iat: u64,
            exp: u64,
        }
        let iat = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = Some(self.private_key_id.clone());
        let claims = Claims {
            iss: &self.client_email,
            sub: &self.client_email,
            aud: self.token_uri.as_str(),
            target_audience: audience,
            iat,
            exp: iat + 3600,
        };
        jsonwebtoken::encode(&header, &claims, &self.key).map_err(|_| TokenError::Sign)
    }
}
