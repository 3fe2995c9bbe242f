//! `cloud-run-ingress`: a local stand-in for Cloud Run's front end. It checks
//! each caller's ID token against the service's IAM policy, the way Cloud
//! Run does before a request reaches the container, then forwards to one
//! container.

pub mod config;
pub mod headers;
pub mod policy;
