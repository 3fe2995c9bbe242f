//! The receiver's integration tests: in-process on 127.0.0.1:0, and the real
//! binary for what only a process shows (exit codes, signals).

mod binary;
mod contract;
mod support;
