//! `cloud-run-ingress` against Cloud Run's documented behaviour: who gets
//! in, what the container sees, policy changes without a restart, h2c to
//! the container, and the front end's own 401, 403, 503 and 504.

mod binary;
mod forwarding;
mod iam;
mod support;
