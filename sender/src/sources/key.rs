//! A service-account key: an RS256 assertion signed with it, exchanged at
//! its `token_uri` for an ID token.

use std::{
    fmt,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use cloud_run::ConfigError;
use reqwest::Url;
use serde::Deserialize;

use super::{adc::KeyFile, exchange::exchange};
use crate::token::TokenError;

/// The OAuth grant type of a signed assertion.
pub(super) const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

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
    /// The key in `file`; `problem` makes the error naming the file.
    pub(super) fn load(
        file: KeyFile,
        problem: impl Fn(&str) -> ConfigError,
    ) -> Result<Self, ConfigError> {
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
            ("grant_type", JWT_BEARER),
            ("assertion", assertion.as_str()),
        ]);
        let answer: Answer = exchange(request, TOKEN_ENDPOINT).await?;
        Ok(answer.id_token)
    }

    /// Where the key is exchanged.
    pub(super) fn token_uri(&self) -> &Url {
        &self.token_uri
    }

    /// A JWT-bearer assertion asking `token_uri` for an ID token for
    /// `audience`.
    fn assertion(&self, audience: &str) -> Result<String, TokenError> {
        self.sign(Grant::IdToken(audience))
    }

    /// A JWT-bearer assertion asking `token_uri` for an OAuth access token
    /// with `scope`: the key as the caller of an impersonation.
    pub(super) fn access_assertion(&self, scope: &str) -> Result<String, TokenError> {
        self.sign(Grant::Access(scope))
    }

    fn sign(&self, grant: Grant<'_>) -> Result<String, TokenError> {
        #[derive(serde::Serialize)]
        struct Claims<'a> {
            iss: &'a str,
            sub: &'a str,
            aud: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            target_audience: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            scope: Option<&'a str>,
            iat: u64,
            exp: u64,
        }
        let (target_audience, scope) = match grant {
            Grant::IdToken(audience) => (Some(audience), None),
            Grant::Access(scope) => (None, Some(scope)),
        };
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
            target_audience,
            scope,
            iat,
            exp: iat + 3600,
        };
        jsonwebtoken::encode(&header, &claims, &self.key).map_err(|_| TokenError::Sign)
    }
}

/// What an assertion asks the token endpoint for.
enum Grant<'a> {
    /// An ID token for this audience.
    IdToken(&'a str),
    /// An access token with this scope.
    Access(&'a str),
}
