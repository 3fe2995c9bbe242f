//! The emulator's integration tests: its endpoints in-process on
//! 127.0.0.1:0, its tokens checked by an independent verifier, the sender
//! and receiver against it, and the real binary for flags, exit codes and
//! signals.

mod binary;
mod cloud_run;
mod end_to_end;
mod endpoints;
mod hosts;
mod support;
mod tokens;
