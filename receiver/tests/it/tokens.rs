//! Test signing keys (generated per run, never published anywhere) and the
//! token set: real RS256 tokens, and tokens signed otherwise, for every rule
//! of in-app verification, each with the verdict the receiver must give.
//! Shared by the integration tests and by the `token-set` example, which
//! writes the set for the Python cross-check against google-auth.

use std::sync::LazyLock;

use aws_lc_rs::{
    hmac,
    rand::SystemRandom,
    rsa::{KeyPair, KeySize, PublicKeyComponents},
    signature::{self, EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING},
};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use id_token::STRIPPED_REASON;
use serde_json::{json, Value};

/// The receiver's audience in the token set.
pub(crate) const AUDIENCE: &str = "https://receiving-service-test.a.run.app";
/// A second accepted audience (a Cloud Run custom audience).
pub(crate) const SECOND_AUDIENCE: &str = "receiver-custom-audience";
/// The caller the allowlist names.
pub(crate) const ALLOWED: &str = "sender@tutorial-test.iam.gserviceaccount.com";
/// A caller it does not.
pub(crate) const STRANGER: &str = "stranger@tutorial-test.iam.gserviceaccount.com";

/// An RSA key pair for signing test tokens.
pub(crate) struct TestKey {
    /// Its key id.
    pub kid: String,
    pair: KeyPair,
}

impl TestKey {
    /// A fresh 2048-bit key.
    pub(crate) fn generate(kid: &str) -> Self {
        Self {
            kid: kid.to_owned(),
            pair: KeyPair::generate(KeySize::Rsa2048).expect("RSA key"),
        }
    }

    /// The public key as a JWK, as Google's `oauth2/v3/certs` lists it.
    pub(crate) fn jwk(&self) -> Value {
        let public = PublicKeyComponents::<Vec<u8>>::from(self.pair.public_key());
        json!({
            "kty": "RSA",
            "alg": "RS256",
            "use": "sig",
            "kid": self.kid,
            "n": b64(&public.n),
            "e": b64(&public.e),
        })
    }

    /// The public key, PKCS#1 DER.
    pub(crate) fn public_der(&self) -> &[u8] {
        self.pair.public_key().as_ref()
    }

    fn sign(&self, alg: &'static dyn signature::RsaEncoding, message: &[u8]) -> Vec<u8> {
        let mut sig = vec![0; self.pair.public_modulus_len()];
        self.pair
            .sign(alg, &SystemRandom::new(), message, &mut sig)
            .expect("sign");
        sig
    }
}

/// The audience of IAP assertions in the tests: a backend service.
pub(crate) const IAP_AUDIENCE: &str = "/projects/123456789012/global/backendServices/4567";

/// An EC P-256 key pair for signing test IAP assertions (ES256).
pub(crate) struct EcKey {
    /// Its key id.
    pub kid: String,
    pair: EcdsaKeyPair,
}

impl EcKey {
    /// A fresh P-256 key.
    pub(crate) fn generate(kid: &str) -> Self {
        Self {
            kid: kid.to_owned(),
            pair: EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("EC key"),
        }
    }

    /// The public key as a JWK, as IAP's `public_key-jwk` lists it.
    pub(crate) fn jwk(&self) -> Value {
        // The uncompressed point: 0x04, then x and y, 32 bytes each.
        let point = self.pair.public_key().as_ref();
        json!({
            "kty": "EC",
            "alg": "ES256",
            "use": "sig",
            "crv": "P-256",
            "kid": self.kid,
            "x": b64(&point[1..33]),
            "y": b64(&point[33..65]),
        })
    }

    fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.pair
            .sign(&SystemRandom::new(), message)
            .expect("sign")
            .as_ref()
            .to_vec()
    }
}

/// The EC keys of a test run: one published, one never.
pub(crate) struct EcKeys {
    /// Published as `iap-1`.
    pub one: EcKey,
    /// Never published.
    pub rogue: EcKey,
}

/// The run's EC keys, generated once.
pub(crate) fn ec_keys() -> &'static EcKeys {
    static KEYS: LazyLock<EcKeys> = LazyLock::new(|| EcKeys {
        one: EcKey::generate("iap-1"),
        rogue: EcKey::generate("iap-rogue"),
    });
    &KEYS
}

/// A JWKS document with these JWKs.
pub(crate) fn jwks_of(jwks: &[Value]) -> Value {
    json!({ "keys": jwks })
}

/// Claims of a valid IAP assertion for the allowed caller, issued 10 s
/// before `now`: IAP's shape, with no `email_verified`.
pub(crate) fn iap_claims(now: i64) -> Value {
    json!({
        "iss": "https://cloud.google.com/iap",
        "aud": IAP_AUDIENCE,
        "sub": "accounts.google.com:112233445566778899000",
        "email": ALLOWED,
        "iat": now - 10,
        "exp": now + 590,
    })
}

/// An ES256 assertion signed by `key`, with these claims.
pub(crate) fn iap_signed(key: &EcKey, claims: &Value) -> String {
    token(
        &json!({ "alg": "ES256", "kid": key.kid, "typ": "JWT" }),
        claims,
        Signing::Es256(key),
    )
}

/// The keys of a test run: two published, one never.
pub(crate) struct Keys {
    /// Published as `key-1`.
    pub one: TestKey,
    /// Published as `key-2`.
    pub two: TestKey,
    /// Never published; signs "wrong key" and "unknown kid" tokens.
    pub rogue: TestKey,
}

/// The run's keys, generated once.
pub(crate) fn keys() -> &'static Keys {
    static KEYS: LazyLock<Keys> = LazyLock::new(|| Keys {
        one: TestKey::generate("key-1"),
        two: TestKey::generate("key-2"),
        rogue: TestKey::generate("key-rogue"),
    });
    &KEYS
}

/// A JWKS document with these keys.
pub(crate) fn jwks(keys: &[&TestKey]) -> Value {
    json!({ "keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>() })
}

/// Unpadded base64url.
pub(crate) fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// How a token is signed.
#[derive(Clone, Copy)]
pub(crate) enum Signing<'a> {
    Rs256(&'a TestKey),
    Rs384(&'a TestKey),
    Rs512(&'a TestKey),
    Ps256(&'a TestKey),
    Hs256(&'a [u8]),
    Es256(&'a EcKey),
    /// An empty signature segment.
    Unsigned,
    /// What Cloud Run forwards after its own check.
    Stripped,
}

/// `header.payload` signed per `signing`.
pub(crate) fn sign(message: &str, signing: Signing<'_>) -> String {
    let m = message.as_bytes();
    let signature = match signing {
        Signing::Rs256(k) => b64(&k.sign(&signature::RSA_PKCS1_SHA256, m)),
        Signing::Rs384(k) => b64(&k.sign(&signature::RSA_PKCS1_SHA384, m)),
        Signing::Rs512(k) => b64(&k.sign(&signature::RSA_PKCS1_SHA512, m)),
        Signing::Ps256(k) => b64(&k.sign(&signature::RSA_PSS_SHA256, m)),
        Signing::Hs256(secret) => {
            b64(hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret), m).as_ref())
        }
        Signing::Es256(k) => b64(&k.sign(m)),
        Signing::Unsigned => String::new(),
        Signing::Stripped => "SIGNATURE_REMOVED_BY_GOOGLE".to_owned(),
    };
    format!("{message}.{signature}")
}

/// A JWT of this header and these claims.
pub(crate) fn token(header: &Value, claims: &Value, signing: Signing<'_>) -> String {
    let message = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    sign(&message, signing)
}

/// The header Google puts on ID tokens.
pub(crate) fn header(kid: &str) -> Value {
    json!({ "alg": "RS256", "kid": kid, "typ": "JWT" })
}

/// Claims of a valid ID token from the allowed caller, as the metadata
/// server mints with `format=full`, issued 10 s before `now`.
pub(crate) fn claims(now: i64) -> Value {
    json!({
        "iss": "https://accounts.google.com",
        "aud": AUDIENCE,
        "azp": "112233445566778899000",
        "sub": "112233445566778899000",
        "email": ALLOWED,
        "email_verified": true,
        "iat": now - 10,
        "exp": now + 3590,
    })
}

/// `base` with `changes` applied; a `null` change removes the claim.
pub(crate) fn with(base: &Value, changes: Value) -> Value {
    let mut merged = base.clone();
    let (Some(target), Value::Object(changes)) = (merged.as_object_mut(), changes) else {
        panic!("claims are objects");
    };
    for (name, value) in changes {
        if value.is_null() {
            target.remove(&name);
        } else {
            target.insert(name, value);
        }
    }
    merged
}

/// A valid token signed by `key`, with these claims.
pub(crate) fn signed(key: &TestKey, claims: &Value) -> String {
    token(&header(&key.kid), claims, Signing::Rs256(key))
}

/// What the receiver must answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// 200 and the hello.
    Accept,
    /// 401 with `error="invalid_token"`.
    Reject,
    /// 403: a valid token from a caller the allowlist does not let in.
    Forbid,
}

impl Verdict {
    /// The HTTP status for this verdict.
    pub(crate) fn status(self) -> u16 {
        match self {
            Self::Accept => 200,
            Self::Reject => 401,
            Self::Forbid => 403,
        }
    }

    /// Its name in the token set file.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Accept => "accept",
            Self::Reject => "reject",
            Self::Forbid => "forbid",
        }
    }
}

/// One token of the set.
pub(crate) struct Case {
    /// What it tests.
    pub name: &'static str,
    /// The token.
    pub token: String,
    /// What the receiver must answer.
    pub verdict: Verdict,
    /// Part of the reason the refusal must give (empty for `Accept`).
    pub reason: &'static str,
    /// Where google-auth's `verify_token` is known to differ, and why.
    pub google_auth_differs: Option<&'static str>,
}

/// The allowlist the token set is judged with.
pub(crate) fn allowlist() -> Vec<String> {
    vec![ALLOWED.to_owned()]
}

/// Every rule, as tokens minted at `now` (Unix seconds) with `keys`. Tokens
/// meant to fail a time check are more than 60 s outside their window, so
/// seconds of drift between minting and checking change nothing.
pub(crate) fn token_set(keys: &Keys, now: i64) -> Vec<Case> {
    use Verdict::{Accept, Forbid, Reject};
    let base = claims(now);
    let one = &keys.one;
    let valid_with = |changes: Value| signed(one, &with(&base, changes));
    let case = |name, token, verdict, reason| Case {
        name,
        token,
        verdict,
        reason,
        google_auth_differs: None,
    };
    let valid = signed(one, &base);
    let (message, _) = valid.rsplit_once('.').expect("three parts");
    let header_one = b64(header(&one.kid).to_string().as_bytes());
    let alg = |alg: &str| json!({ "alg": alg, "kid": one.kid, "typ": "JWT" });

    vec![
        // Accepted.
        case("valid", valid.clone(), Accept, ""),
        case("valid_second_key", signed(&keys.two, &base), Accept, ""),
        case(
            "valid_issuer_without_scheme",
            valid_with(json!({ "iss": "accounts.google.com" })),
            Accept,
            "",
        ),
        case(
            "valid_second_audience",
            valid_with(json!({ "aud": SECOND_AUDIENCE })),
            Accept,
            "",
        ),
        case(
            "valid_fractional_exp",
            valid_with(json!({ "exp": now as f64 + 3600.5 })),
            Accept,
            "",
        ),
        case(
            "valid_email_in_other_case",
            valid_with(json!({ "email": ALLOWED.to_uppercase() })),
            Accept,
            "",
        ),
        Case {
            google_auth_differs: Some(
                "google-auth compares the whole aud value with the accepted list, so it refuses \
                 an array; RFC 7519 allows one, and the receiver accepts an array holding an \
                 accepted audience",
            ),
            ..case(
                "aud_array_holding_ours",
                valid_with(json!({ "aud": ["https://elsewhere.example", AUDIENCE] })),
                Accept,
                "",
            )
        },
        case(
            "expired_within_skew",
            valid_with(json!({ "iat": now - 3620, "exp": now - 20 })),
            Accept,
            "",
        ),
        case(
            "nbf_within_skew",
            valid_with(json!({ "nbf": now + 20 })),
            Accept,
            "",
        ),
        case(
            "iat_within_skew",
            valid_with(json!({ "iat": now + 20 })),
            Accept,
            "",
        ),
        // Time.
        case(
            "expired",
            valid_with(json!({ "iat": now - 7200, "exp": now - 3600 })),
            Reject,
            "token expired",
        ),
        case(
            "expired_past_skew",
            valid_with(json!({ "iat": now - 3720, "exp": now - 120 })),
            Reject,
            "token expired",
        ),
        case(
            "not_yet_valid",
            valid_with(json!({ "nbf": now + 3600 })),
            Reject,
            "not valid yet",
        ),
        case(
            "not_yet_valid_past_skew",
            valid_with(json!({ "nbf": now + 120 })),
            Reject,
            "not valid yet",
        ),
        case(
            "issued_in_future",
            valid_with(json!({ "iat": now + 3600, "exp": now + 7200 })),
            Reject,
            "issued in the future",
        ),
        case(
            "issued_in_future_past_skew",
            valid_with(json!({ "iat": now + 120 })),
            Reject,
            "issued in the future",
        ),
        // Audience and issuer.
        case(
            "wrong_audience",
            valid_with(json!({ "aud": "https://other-service.a.run.app" })),
            Reject,
            "wrong audience",
        ),
        case(
            "audience_with_trailing_slash",
            valid_with(json!({ "aud": format!("{AUDIENCE}/") })),
            Reject,
            "wrong audience",
        ),
        case(
            "aud_array_without_ours",
            valid_with(json!({ "aud": ["https://elsewhere.example"] })),
            Reject,
            "wrong audience",
        ),
        case(
            "wrong_issuer",
            valid_with(json!({ "iss": "https://accounts.example.com" })),
            Reject,
            "wrong issuer",
        ),
        // Missing or mistyped claims.
        case(
            "missing_exp",
            valid_with(json!({ "exp": null })),
            Reject,
            "missing exp",
        ),
        case(
            "missing_iat",
            valid_with(json!({ "iat": null })),
            Reject,
            "missing iat",
        ),
        case(
            "missing_aud",
            valid_with(json!({ "aud": null })),
            Reject,
            "missing aud",
        ),
        case(
            "missing_iss",
            valid_with(json!({ "iss": null })),
            Reject,
            "missing iss",
        ),
        case(
            "exp_not_a_number",
            valid_with(json!({ "exp": (now + 3600).to_string() })),
            Reject,
            "exp claim is not a number",
        ),
        case(
            "nbf_not_a_number",
            valid_with(json!({ "nbf": "yesterday" })),
            Reject,
            "nbf claim is not a number",
        ),
        // Keys.
        case(
            "wrong_key",
            token(&header(&one.kid), &base, Signing::Rs256(&keys.rogue)),
            Reject,
            "signature does not match",
        ),
        case(
            "unknown_kid",
            signed(&keys.rogue, &base),
            Reject,
            "unknown signing key",
        ),
        case(
            "no_kid",
            token(
                &json!({ "alg": "RS256", "typ": "JWT" }),
                &base,
                Signing::Rs256(one),
            ),
            Reject,
            "names no signing key",
        ),
        case(
            "tampered_payload",
            format!(
                "{header_one}.{}.{}",
                b64(with(&base, json!({ "email": STRANGER }))
                    .to_string()
                    .as_bytes()),
                valid.rsplit('.').next().expect("signature")
            ),
            Reject,
            "signature does not match",
        ),
        // Algorithms.
        case(
            "alg_none",
            token(&alg("none"), &base, Signing::Unsigned),
            Reject,
            "RS256 only",
        ),
        case(
            "alg_hs256_keyed_with_the_public_key",
            token(&alg("HS256"), &base, Signing::Hs256(one.public_der())),
            Reject,
            "RS256 only",
        ),
        case(
            "alg_rs384",
            token(&alg("RS384"), &base, Signing::Rs384(one)),
            Reject,
            "RS256 only",
        ),
        case(
            "alg_rs512",
            token(&alg("RS512"), &base, Signing::Rs512(one)),
            Reject,
            "RS256 only",
        ),
        case(
            "alg_ps256",
            token(&alg("PS256"), &base, Signing::Ps256(one)),
            Reject,
            "RS256 only",
        ),
        case(
            "alg_rs512_over_an_rs256_signature",
            token(&alg("RS512"), &base, Signing::Rs256(one)),
            Reject,
            "RS256 only",
        ),
        case(
            "alg_lowercase",
            token(&alg("rs256"), &base, Signing::Rs256(one)),
            Reject,
            "RS256 only",
        ),
        // Shape.
        case(
            "stripped_signature",
            sign(message, Signing::Stripped),
            Reject,
            STRIPPED_REASON,
        ),
        case(
            "empty_signature",
            sign(message, Signing::Unsigned),
            Reject,
            "signature does not match",
        ),
        case(
            "two_segments",
            message.to_owned(),
            Reject,
            "not three dot-separated parts",
        ),
        case(
            "four_segments",
            format!("{valid}.{}", b64(b"more")),
            Reject,
            "not three dot-separated parts",
        ),
        case(
            "header_not_base64",
            format!("!!!{valid}"),
            Reject,
            "malformed token header",
        ),
        case(
            "header_not_json",
            sign(
                &format!(
                    "{}.{}",
                    b64(b"not json"),
                    message.split('.').nth(1).expect("payload")
                ),
                Signing::Rs256(one),
            ),
            Reject,
            "malformed token header",
        ),
        case(
            "payload_not_json",
            sign(
                &format!("{header_one}.{}", b64(b"not json")),
                Signing::Rs256(one),
            ),
            Reject,
            "malformed token",
        ),
        case(
            "payload_an_array",
            sign(
                &format!("{header_one}.{}", b64(b"[\"https://accounts.google.com\"]")),
                Signing::Rs256(one),
            ),
            Reject,
            "malformed token",
        ),
        // The allowlist.
        case(
            "allowlist_miss",
            valid_with(json!({ "email": STRANGER })),
            Forbid,
            "not an allowed invoker",
        ),
        case(
            "email_not_verified",
            valid_with(json!({ "email_verified": false })),
            Forbid,
            "not verified",
        ),
        case(
            "email_verified_a_string",
            valid_with(json!({ "email_verified": "true" })),
            Forbid,
            "not verified",
        ),
        case(
            "email_verified_missing",
            valid_with(json!({ "email_verified": null })),
            Forbid,
            "not verified",
        ),
        case(
            "no_email",
            valid_with(json!({ "email": null, "email_verified": null })),
            Forbid,
            "no email claim",
        ),
    ]
}
