//! Writes the receiver's token set for the Python cross-check
//! (`tests/interop/test_receiver_verdicts.py`): `token-set.json` in the
//! directory given, holding the published keys as a JWKS, the settings the
//! verdicts assume, and each token with its verdict. Keys are fresh each
//! run; tokens are minted against the current time.
//!
//! `cargo run -p receiver --example token-set -- OUT_DIR`

#[allow(dead_code)]
#[path = "../tests/it/tokens.rs"]
mod tokens;

use std::{path::PathBuf, process::ExitCode};

use id_token::{Clock, GOOGLE_ISSUERS};
use serde_json::json;

fn main() -> ExitCode {
    let Some(dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: token-set OUT_DIR");
        return ExitCode::FAILURE;
    };
    let keys = tokens::keys();
    let now = Clock::system().unix_seconds();
    let cases: Vec<_> = tokens::token_set(keys, now)
        .into_iter()
        .map(|case| {
            json!({
                "name": case.name,
                "token": case.token,
                "verdict": case.verdict.name(),
                "status": case.verdict.status(),
                "reason": case.reason,
                "google_auth_differs": case.google_auth_differs,
            })
        })
        .collect();
    let set = json!({
        "minted_at": now,
        "audiences": [tokens::AUDIENCE, tokens::SECOND_AUDIENCE],
        "issuers": GOOGLE_ISSUERS,
        "allowed_invokers": tokens::allowlist(),
        "leeway_seconds": 60,
        "jwks": tokens::jwks(&[&keys.one, &keys.two]),
        "cases": cases,
    });
    let path = dir.join("token-set.json");
    if let Err(err) = std::fs::write(&path, set.to_string()) {
        eprintln!("cannot write {}: {err}", path.display());
        return ExitCode::FAILURE;
    }
    println!("{}", path.display());
    ExitCode::SUCCESS
}
