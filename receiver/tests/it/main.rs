//! The receiver's integration tests: in-process on 127.0.0.1:0, and the real
//! binary for what only a process shows (exit codes, signals, logs).

mod auto;
mod binary;
mod claims;
mod contract;
mod example;
mod iap;
mod keys;
mod ready;
mod signals;
mod support;
// Shared with the token-set example, which reads what the tests do not.
#[allow(dead_code)]
mod tokens;
mod verify;
