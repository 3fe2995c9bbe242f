//! The metadata server's identity endpoint: on Cloud Run, GCE or GKE, the
//! instance's own service account mints the token.

use std::sync::Arc;

use cloud_run::metadata::MetadataClient;

use crate::token::TokenError;

/// A new ID token for `audience`.
pub(super) async fn fetch(client: &MetadataClient, audience: &str) -> Result<String, TokenError> {
    client
        .identity_token(audience)
        .await
        .map_err(|err| TokenError::Metadata(Arc::new(err)))
}
