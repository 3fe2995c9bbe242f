//! The emulator's RSA keys: generated at start or read from PEM files. The
//! first key signs; all of them are published as a JWKS, each under a `kid`
//! derived from its public key, so emulators given the same files agree.

use std::{fmt, path::Path};

use aws_lc_rs::{
    digest,
    rand::SystemRandom,
    rsa::{KeyPair, KeySize},
    signature::{KeyPair as _, RSA_PKCS1_SHA256},
};
use base64::{
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
    Engine as _,
};
use bytes::Bytes;
use serde::Serialize;

/// Why no key set could be made.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// Key generation failed (the system's randomness, usually).
    #[error("cannot generate an RSA key")]
    Generate,
    /// A key file cannot be read.
    #[error("{path}: cannot read")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A key file holds no usable key.
    #[error("{origin}: {problem}")]
    Invalid {
        /// The file, or what else the PEM came from.
        origin: String,
        /// What is wrong, in a few words.
        problem: String,
    },
    /// No key at all.
    #[error("no keys")]
    Empty,
    /// The public keys could not be written out as a JWKS.
    #[error("cannot serialise the public keys as a JWKS")]
    Jwks(#[source] serde_json::Error),
}

fn invalid(origin: &str, problem: impl Into<String>) -> KeyFileError {
    KeyFileError::Invalid {
        origin: origin.to_owned(),
        problem: problem.into(),
    }
}

/// A token could not be signed.
#[derive(Debug, thiserror::Error)]
#[error("cannot sign the token")]
pub struct SignError;

/// One RSA key pair and its published identity.
struct Key {
    pair: KeyPair,
    kid: String,
}

impl Key {
    fn new(pair: KeyPair) -> Self {
        // Google's kids are 40 hex digits; these are the first 20 bytes of
        // the SHA-256 of the public key, so the same key always gets the same.
        let hash = digest::digest(&digest::SHA256, pair.public_key().as_ref());
        let kid = hash.as_ref()[..20]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Self { pair, kid }
    }
}

/// The keys, the first of which signs, and their JWKS.
pub struct SigningKeys {
    keys: Vec<Key>,
    /// `base64url({"alg":"RS256","kid":..,"typ":"JWT"})`, the same for every token.
    header: String,
    jwks: Bytes,
}

impl fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKeys")
            .field("kids", &self.kids())
            .finish_non_exhaustive()
    }
}

impl SigningKeys {
    /// A new 2048-bit key, for this process only.
    pub fn generate() -> Result<Self, KeyFileError> {
        let pair = KeyPair::generate(KeySize::Rsa2048).map_err(|_| KeyFileError::Generate)?;
        Self::new(vec![Key::new(pair)])
    }

    /// The keys in these PEM files, the first signing.
    pub fn from_files(paths: &[impl AsRef<Path>]) -> Result<Self, KeyFileError> {
        let mut pems = Vec::with_capacity(paths.len());
        for path in paths {
            let path = path.as_ref();
            let origin = path.display().to_string();
            let bytes = std::fs::read(path).map_err(|source| KeyFileError::Read {
                path: origin.clone(),
                source,
            })?;
            let text = String::from_utf8(bytes).map_err(|_| invalid(&origin, "not a PEM file"))?;
            pems.push((origin, text));
        }
        Self::from_pems(pems.iter().map(|(o, t)| (o.as_str(), t.as_str())))
    }

    /// The keys in these `(origin, PEM text)` pairs, the first signing. A
    /// key given twice is published once.
    pub fn from_pems<'a>(
        pems: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, KeyFileError> {
        let mut keys: Vec<Key> = Vec::new();
        for (origin, text) in pems {
            let key = Key::new(parse_pem(origin, text)?);
            if keys.iter().all(|k| k.kid != key.kid) {
                keys.push(key);
            }
        }
        Self::new(keys)
    }

    fn new(keys: Vec<Key>) -> Result<Self, KeyFileError> {
        let signer = keys.first().ok_or(KeyFileError::Empty)?;
        let header = serde_json::json!({"alg": "RS256", "kid": signer.kid, "typ": "JWT"});
        let header = URL_SAFE_NO_PAD.encode(header.to_string());
        let jwks = Jwks {
            keys: keys
                .iter()
                .map(|key| {
                    let public = key.pair.public_key();
                    Jwk {
                        kty: "RSA",
                        alg: "RS256",
                        r#use: "sig",
                        kid: &key.kid,
                        n: URL_SAFE_NO_PAD
                            .encode(public.modulus().big_endian_without_leading_zero()),
                        e: URL_SAFE_NO_PAD
                            .encode(public.exponent().big_endian_without_leading_zero()),
                    }
                })
                .collect(),
        };
        let jwks = serde_json::to_vec_pretty(&jwks).map_err(KeyFileError::Jwks)?;
        Ok(Self {
            header,
            jwks: Bytes::from(jwks),
            keys,
        })
    }

    /// The `kid` of the signing key.
    pub fn kid(&self) -> &str {
        self.keys.first().map_or("", |k| k.kid.as_str())
    }

    /// The `kid` of every published key, the signing one first.
    pub fn kids(&self) -> Vec<&str> {
        self.keys.iter().map(|k| k.kid.as_str()).collect()
    }

    /// The public keys as a JSON Web Key Set, as Google serves at
    /// `https://www.googleapis.com/oauth2/v3/certs`.
    pub fn jwks(&self) -> Bytes {
        self.jwks.clone()
    }

    /// A compact RS256 JWS of `claims`, signed by the first key.
    pub fn sign(&self, claims: &impl Serialize) -> Result<String, SignError> {
        let key = self.keys.first().ok_or(SignError)?;
        let claims = serde_json::to_vec(claims).map_err(|_| SignError)?;
        let mut jwt = format!("{}.{}", self.header, URL_SAFE_NO_PAD.encode(claims));
        let mut signature = vec![0; key.pair.public_modulus_len()];
        key.pair
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                jwt.as_bytes(),
                &mut signature,
            )
            .map_err(|_| SignError)?;
        jwt.push('.');
        jwt.push_str(&URL_SAFE_NO_PAD.encode(signature));
        Ok(jwt)
    }
}

#[derive(Serialize)]
struct Jwks<'a> {
    keys: Vec<Jwk<'a>>,
}

#[derive(Serialize)]
struct Jwk<'a> {
    kty: &'static str,
    alg: &'static str,
    r#use: &'static str,
    kid: &'a str,
    n: String,
    e: String,
}

/// The first private key in a PEM text: PKCS#8 (`PRIVATE KEY`, what
/// `openssl genpkey` writes) or PKCS#1 (`RSA PRIVATE KEY`).
fn parse_pem(origin: &str, text: &str) -> Result<KeyPair, KeyFileError> {
    let mut lines = text.lines().map(str::trim);
    let label = loop {
        let Some(line) = lines.next() else {
            return Err(invalid(origin, "no PEM private key in it"));
        };
        if let Some(label) = line
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        {
            if label.ends_with("PRIVATE KEY") {
                break label;
            }
        }
    };
    let end = format!("-----END {label}-----");
    let mut body = String::new();
    for line in lines.by_ref() {
        if line == end {
            break;
        }
        if line.contains(':') {
            return Err(invalid(origin, "encrypted keys are not supported"));
        }
        body.push_str(line);
    }
    let der = STANDARD
        .decode(body)
        .map_err(|_| invalid(origin, "PEM body is not base64"))?;
    let pair = match label {
        "PRIVATE KEY" => KeyPair::from_pkcs8(&der),
        "RSA PRIVATE KEY" => KeyPair::from_der(&der),
        "ENCRYPTED PRIVATE KEY" => return Err(invalid(origin, "encrypted keys are not supported")),
        other => return Err(invalid(origin, format!("{other} is not an RSA key"))),
    };
    pair.map_err(|err| invalid(origin, format!("not a usable RSA key ({err})")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PKCS8: &str = include_str!("../tests/keys/test-key-1.pkcs8.pem");
    const PKCS1: &str = include_str!("../tests/keys/test-key-1.pkcs1.pem");
    const OTHER: &str = include_str!("../tests/keys/test-key-2.pkcs8.pem");

    #[test]
    fn pkcs8_and_pkcs1_of_one_key_share_a_kid() {
        let a = SigningKeys::from_pems([("a", PKCS8)]).expect("pkcs8");
        let b = SigningKeys::from_pems([("b", PKCS1)]).expect("pkcs1");
        assert_eq!(a.kid(), b.kid());
        assert_eq!(a.kid().len(), 40);
        assert_eq!(a.jwks(), b.jwks());
    }

    #[test]
    fn first_key_signs_all_are_published_duplicates_once() {
        let set = SigningKeys::from_pems([("a", OTHER), ("b", PKCS8), ("c", PKCS1)]).expect("set");
        let other = SigningKeys::from_pems([("a", OTHER)]).expect("other");
        assert_eq!(set.kids().len(), 2);
        assert_eq!(set.kid(), other.kid());
        let jwks: serde_json::Value = serde_json::from_slice(&set.jwks()).expect("json");
        let keys = jwks["keys"].as_array().expect("keys");
        assert_eq!(keys.len(), 2);
        for key in keys {
            assert_eq!(key["kty"], "RSA");
            assert_eq!(key["alg"], "RS256");
            assert_eq!(key["use"], "sig");
            assert_eq!(key["e"], "AQAB");
            // 2048-bit modulus: 256 bytes, 342 base64url characters.
            assert_eq!(key["n"].as_str().expect("n").len(), 342);
        }
    }

    #[test]
    fn bad_pems_are_refused_with_the_origin() {
        let cases = [
            ("", "no PEM private key"),
            ("hello", "no PEM private key"),
            (
                "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
                "no PEM private key",
            ),
            (
                "-----BEGIN PRIVATE KEY-----\n!!!\n-----END PRIVATE KEY-----\n",
                "not base64",
            ),
            (
                "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
                "not a usable RSA key",
            ),
            (
                "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n",
                "EC PRIVATE KEY is not an RSA key",
            ),
            (
                "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
                "encrypted",
            ),
            (
                "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n\nAAAA\n-----END RSA PRIVATE KEY-----\n",
                "encrypted",
            ),
        ];
        for (pem, expected) in cases {
            let err = SigningKeys::from_pems([("file.pem", pem)]).expect_err(pem);
            let message = err.to_string();
            assert!(message.starts_with("file.pem: "), "{message}");
            assert!(message.contains(expected), "{message} lacks {expected}");
        }
        assert!(matches!(
            SigningKeys::from_pems(std::iter::empty()),
            Err(KeyFileError::Empty)
        ));
    }

    #[test]
    fn tokens_have_three_parts_and_the_signing_kid() {
        let set = SigningKeys::from_pems([("a", PKCS8)]).expect("set");
        let jwt = set.sign(&serde_json::json!({"aud": "x"})).expect("jwt");
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).expect("b64")).expect("json");
        assert_eq!(header["alg"], "RS256");
        assert_eq!(header["typ"], "JWT");
        assert_eq!(header["kid"], set.kid());
    }
}
