//! The sender's integration tests, against a fake metadata server and a fake
//! receiver on 127.0.0.1:0, and the real binary for exit codes and signals.

mod binary;
mod example;
mod failures;
mod hardening;
mod library;
mod ready;
mod relay;
mod shutdown;
mod sources;
mod support;
mod tokens;
