//! The service account the emulator speaks for, and the tokens it mints:
//! ID tokens with Google's claims, and opaque stand-ins for access tokens.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::{digest, rand::SecureRandom as _, rand::SystemRandom};
use serde::Serialize;

use crate::keys::{SignError, SigningKeys};

/// What Google's ID tokens carry as `iss`.
pub(crate) const ISSUER: &str = "https://accounts.google.com";

/// The claims set `format` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenFormat {
    /// `aud`, `azp`, `exp`, `iat`, `iss`, `sub`: the default.
    Standard,
    /// The standard claims plus `email` and `email_verified`.
    Full,
}

/// One service account in one project.
#[derive(Debug, Clone)]
pub(crate) struct Account {
    /// Its email.
    pub email: String,
    /// Its numeric unique id: `sub` and `azp` of its tokens.
    pub unique_id: String,
    /// The project's id.
    pub project_id: String,
    /// The project's number.
    pub project_number: u64,
}

impl Account {
    /// The account `email` in project `project_id` numbered
    /// `project_number`, with a unique id derived from the email, so it is
    /// the same on every start and every machine.
    pub(crate) fn new(email: &str, project_id: &str, project_number: u64) -> Self {
        // Google's unique ids are 21 digits starting with 1.
        let unique_id = format!("1{:020}", number(email) % 100_000_000_000_000_000_000);
        Self {
            email: email.to_owned(),
            unique_id,
            project_id: project_id.to_owned(),
            project_number,
        }
    }

    /// The claims of an ID token for `audience`, issued at `now`.
    pub(crate) fn claims<'a>(
        &'a self,
        audience: &'a str,
        format: TokenFormat,
        now: SystemTime,
        lifetime: Duration,
    ) -> Claims<'a> {
        let iat = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let full = format == TokenFormat::Full;
        Claims {
            aud: audience,
            azp: &self.unique_id,
            email: full.then_some(self.email.as_str()),
            email_verified: full.then_some(true),
            exp: iat.saturating_add(lifetime.as_secs()),
            iat,
            iss: ISSUER,
            sub: &self.unique_id,
        }
    }

    /// A signed ID token for `audience`, issued now.
    pub(crate) fn id_token(
        &self,
        keys: &SigningKeys,
        audience: &str,
        format: TokenFormat,
        lifetime: Duration,
    ) -> Result<String, SignError> {
        keys.sign(&self.claims(audience, format, SystemTime::now(), lifetime))
    }
}

/// A project number for `project_id`, 12 digits like Google's, the same on
/// every start and every machine.
pub(crate) fn project_number(project_id: &str) -> u64 {
    // Below 10^12, so it always fits.
    100_000_000_000 + u64::try_from(number(project_id) % 900_000_000_000).unwrap_or(0)
}

/// An instance id for `account` in `region`: 19 digits like Compute Engine's,
/// the same on every start with the same settings.
pub(crate) fn instance_id(account: &Account, region: &str) -> u64 {
    let name = format!("{}/{region}/{}", account.project_number, account.email);
    // Below 9 * 10^18 + 10^18 < 2^64, so it always fits.
    1_000_000_000_000_000_000
        + u64::try_from(number(&name) % 9_000_000_000_000_000_000).unwrap_or(0)
}

/// A fresh opaque access token: it only has to look like one, nothing here
/// accepts it.
pub(crate) fn access_token() -> String {
    let mut bytes = [0u8; 24];
    // On failure the zeroes still make a token of the right shape.
    let _ = SystemRandom::new().fill(&mut bytes);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("ya29.emulator.{hex}")
}

fn number(name: &str) -> u128 {
    let hash = digest::digest(&digest::SHA256, name.as_bytes());
    let mut first = [0u8; 16];
    first.copy_from_slice(&hash.as_ref()[..16]);
    u128::from_be_bytes(first)
}

/// The payload of an ID token, in the order Google writes it.
#[derive(Debug, Serialize)]
pub(crate) struct Claims<'a> {
    /// The audience asked for.
    pub aud: &'a str,
    /// The account's unique id.
    pub azp: &'a str,
    /// The account's email (`format=full` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<&'a str>,
    /// Always true (`format=full` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email_verified: Option<bool>,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Issue time, seconds since the epoch.
    pub iat: u64,
    /// [`ISSUER`].
    pub iss: &'static str,
    /// The account's unique id.
    pub sub: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_stable_and_shaped_like_googles() {
        let a = Account::new("sa@p.iam.gserviceaccount.com", "p", project_number("p"));
        let b = Account::new("sa@p.iam.gserviceaccount.com", "p", project_number("p"));
        let c = Account::new("other@p.iam.gserviceaccount.com", "q", project_number("q"));
        assert_eq!(a.unique_id, b.unique_id);
        assert_ne!(a.unique_id, c.unique_id);
        assert_eq!(a.unique_id.len(), 21);
        assert!(a.unique_id.starts_with('1'));
        assert!(a.unique_id.bytes().all(|b| b.is_ascii_digit()));
        assert_eq!(project_number("p"), project_number("p"));
        assert_ne!(project_number("p"), project_number("q"));
        assert_eq!(project_number("p").to_string().len(), 12);
        let id = instance_id(&a, "us-central1");
        assert_eq!(id, instance_id(&b, "us-central1"));
        assert_ne!(id, instance_id(&a, "europe-west1"));
        assert_ne!(id, instance_id(&c, "us-central1"));
        assert_eq!(id.to_string().len(), 19);
    }

    #[test]
    fn full_adds_email_claims() {
        let account = Account::new("sa@p.iam.gserviceaccount.com", "p", 123_456_789_012);
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let hour = Duration::from_secs(3600);
        let full = serde_json::to_value(account.claims("aud", TokenFormat::Full, now, hour))
            .expect("json");
        assert_eq!(full["email"], "sa@p.iam.gserviceaccount.com");
        assert_eq!(full["email_verified"], true);
        assert_eq!(full["iat"], 1_700_000_000u64);
        assert_eq!(full["exp"], 1_700_003_600u64);
        assert_eq!(full["iss"], ISSUER);
        assert_eq!(full["azp"], full["sub"]);
        let standard =
            serde_json::to_value(account.claims("aud", TokenFormat::Standard, now, hour))
                .expect("json");
        assert!(standard.get("email").is_none());
        assert!(standard.get("email_verified").is_none());
        assert_eq!(standard["aud"], "aud");
    }

    #[test]
    fn access_tokens_differ() {
        assert_ne!(access_token(), access_token());
        assert!(access_token().starts_with("ya29."));
    }
}
