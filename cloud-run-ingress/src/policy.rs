//! The service's IAM policy, as `gcloud run services get-iam-policy
//! --format=json` prints it, plus the project's bindings: who may invoke the
//! service. Re-read when the file changes, as a `gcloud run services
//! add-iam-policy-binding` takes effect without a redeploy.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::{Duration, SystemTime},
};

use tracing::{info, warn};

/// The roles that grant `run.routes.invoke`, the permission Cloud Run's front
/// end checks: the Cloud Run roles that include it, and the basic roles.
const INVOKING_ROLES: [&str; 7] = [
    "roles/run.invoker",
    "roles/run.servicesInvoker",
    "roles/run.developer",
    "roles/run.sourceDeveloper",
    "roles/run.admin",
    "roles/editor",
    "roles/owner",
];

/// Who a verified token says the caller is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The token's `email`, lowercased, when `email_verified` is true.
    pub email: Option<String>,
    /// The token's `hd` (hosted domain) claim, lowercased: what IAM's
    /// `domain:` members match, never the email's suffix (any consumer
    /// account may have an address in a domain it does not belong to).
    pub domain: Option<String>,
}

/// One member of a binding, as far as it can be matched locally.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Member {
    AllUsers,
    AllAuthenticatedUsers,
    /// `user:` and `serviceAccount:`, matched on the verified email.
    Email(String),
    Domain(String),
}

/// What the policy says about a caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// An invoking role is held.
    Allowed,
    /// No invoking role is held.
    Denied,
}

/// A parsed policy: the members holding an invoking role, at service or
/// project level.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    invokers: Vec<Member>,
}

/// Why a policy file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// It cannot be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// It is not a policy in gcloud's JSON shape.
    #[error(
        "{path} is not an IAM policy ({{\"bindings\": [{{\"role\": ..., \"members\": [...]}}]}})"
    )]
    Shape {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
}

#[derive(serde::Deserialize)]
struct File {
    #[serde(default)]
    bindings: Vec<Binding>,
    #[serde(default, rename = "projectBindings")]
    project_bindings: Vec<Binding>,
}

#[derive(serde::Deserialize)]
struct Binding {
    role: String,
    #[serde(default)]
    members: Vec<String>,
    condition: Option<serde_json::Value>,
}

impl Policy {
    /// Parses gcloud's JSON. Members that cannot be matched locally
    /// (`group:`, conditional bindings, `deleted:` and the rest) are
    /// skipped with a warning: they never grant anything here.
    pub fn parse(json: &[u8]) -> Result<Self, serde_json::Error> {
        // An object, not a struct: serde would also fill a struct from an
        // array.
        let value: serde_json::Value = serde_json::from_slice(json)?;
        if !value.is_object() {
            return Err(serde::de::Error::custom("not a JSON object"));
        }
        let file: File = serde_json::from_value(value)?;
        let mut invokers = Vec::new();
        let bindings = file
            .bindings
            .iter()
            .map(|b| (b, "service"))
            .chain(file.project_bindings.iter().map(|b| (b, "project")));
        for (binding, level) in bindings {
            if !INVOKING_ROLES.contains(&binding.role.as_str()) {
                continue;
            }
            if binding.condition.is_some() {
                warn!(role = %binding.role, level, "conditional binding ignored: conditions are not evaluated locally");
                continue;
            }
            for member in &binding.members {
                match Member::parse(member) {
                    Some(Member::AllUsers | Member::AllAuthenticatedUsers)
                        if level == "project" =>
                    {
                        warn!(member = %member, "public principals cannot hold a project role; ignored");
                    }
                    Some(parsed) => invokers.push(parsed),
                    None => {
                        warn!(member = %member, role = %binding.role, "member ignored: it cannot be resolved locally");
                    }
                }
            }
        }
        Ok(Self { invokers })
    }

    /// Reads and parses the policy file at `path`.
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let bytes = std::fs::read(path).map_err(|source| PolicyError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&bytes).map_err(|source| PolicyError::Shape {
            path: path.to_owned(),
            source,
        })
    }

    /// Whether anyone may invoke the service, without a token (`allUsers`).
    pub fn is_public(&self) -> bool {
        self.invokers.contains(&Member::AllUsers)
    }

    /// Whether the caller holds an invoking role.
    pub fn check(&self, caller: &Identity) -> Verdict {
        let email = caller.email.as_deref();
        let domain = caller.domain.as_deref();
        let allowed = self.invokers.iter().any(|member| match member {
            Member::AllUsers | Member::AllAuthenticatedUsers => true,
            Member::Email(listed) => email == Some(listed.as_str()),
            Member::Domain(listed) => domain == Some(listed.as_str()),
        });
        if allowed {
            Verdict::Allowed
        } else {
            Verdict::Denied
        }
    }

    /// How many members hold an invoking role.
    pub fn invoker_count(&self) -> usize {
        self.invokers.len()
    }
}

impl Member {
    fn parse(member: &str) -> Option<Self> {
        match member {
            "allUsers" => return Some(Self::AllUsers),
            "allAuthenticatedUsers" => return Some(Self::AllAuthenticatedUsers),
            _ => {}
        }
        let (kind, value) = member.split_once(':')?;
        let value = value.trim().to_ascii_lowercase();
        if value.is_empty() {
            return None;
        }
        match kind {
            "user" | "serviceAccount" if value.contains('@') => Some(Self::Email(value)),
            "domain" if !value.contains('@') => Some(Self::Domain(value)),
            _ => None,
        }
    }
}

/// The policy in force, re-read from its file when the file changes.
#[derive(Debug, Clone)]
pub(crate) struct Watched {
    current: Arc<RwLock<Arc<Policy>>>,
}

/// What identifies one version of the file: a rename gives a new inode, an
/// edit in place a new modification time or length.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = std::fs::metadata(path).ok()?;
    Some(Stamp {
        modified: meta.modified().ok(),
        len: meta.len(),
        inode: meta.ino(),
    })
}

impl Watched {
    /// Loads the policy at `path` (an error stops the start) and re-reads it
    /// every `interval` when it has changed, until the returned value and
    /// its clones are dropped. A change that does not parse keeps the last
    /// good policy, with a warning.
    pub(crate) fn start(path: PathBuf, interval: Duration) -> Result<Self, PolicyError> {
        // Stamped before reading, so an edit in between is reloaded.
        let mut last = stamp(&path);
        let policy = Policy::load(&path)?;
        let current = Arc::new(RwLock::new(Arc::new(policy)));
        let weak = Arc::downgrade(&current);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(current) = weak.upgrade() else {
                    return;
                };
                let now = stamp(&path);
                if now == last {
                    continue;
                }
                last = now;
                match Policy::load(&path) {
                    Ok(policy) => {
                        info!(
                            path = %path.display(),
                            invokers = policy.invoker_count(),
                            public = policy.is_public(),
                            "IAM policy reloaded"
                        );
                        *current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(policy);
                    }
                    Err(err) => warn!(
                        error = %cloud_run::response::Chain(&err),
                        "IAM policy unreadable; keeping the last good one"
                    ),
                }
            }
        });
        Ok(Self { current })
    }

    /// The policy in force now.
    pub(crate) fn get(&self) -> Arc<Policy> {
        Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(json: &str) -> Policy {
        Policy::parse(json.as_bytes()).expect("policy")
    }

    fn caller(email: &str) -> Identity {
        Identity {
            email: Some(email.to_owned()),
            domain: None,
        }
    }

    #[test]
    fn all_users_makes_the_service_public() {
        let p = policy(
            r#"{"bindings":[{"role":"roles/run.invoker","members":["allUsers"]}],"etag":"BwY","version":1}"#,
        );
        assert!(p.is_public());
        let p = policy(r#"{"bindings":[{"role":"roles/viewer","members":["allUsers"]}]}"#);
        assert!(!p.is_public(), "a role without run.routes.invoke");
        let p =
            policy(r#"{"projectBindings":[{"role":"roles/run.invoker","members":["allUsers"]}]}"#);
        assert!(!p.is_public(), "allUsers holds no project role");
        assert!(!policy("{}").is_public());
    }

    #[test]
    fn every_role_with_run_routes_invoke_grants_at_service_or_project_level() {
        for role in INVOKING_ROLES {
            for key in ["bindings", "projectBindings"] {
                let p = policy(&format!(
                    r#"{{"{key}":[{{"role":"{role}","members":["serviceAccount:a@p.iam.gserviceaccount.com"]}}]}}"#
                ));
                assert_eq!(
                    p.check(&caller("a@p.iam.gserviceaccount.com")),
                    Verdict::Allowed,
                    "{role} in {key}"
                );
            }
        }
        for role in [
            "roles/viewer",
            "roles/run.viewer",
            "roles/iam.serviceAccountUser",
        ] {
            let p = policy(&format!(
                r#"{{"bindings":[{{"role":"{role}","members":["serviceAccount:a@p.iam.gserviceaccount.com"]}}]}}"#
            ));
            assert_eq!(
                p.check(&caller("a@p.iam.gserviceaccount.com")),
                Verdict::Denied,
                "{role}"
            );
        }
    }

    #[test]
    fn members_match_on_the_verified_email_or_its_domain() {
        let p = policy(
            r#"{"bindings":[{"role":"roles/run.invoker","members":[
                "serviceAccount:Calling-Service-SA@p.iam.gserviceaccount.com",
                "user:dev@example.com",
                "domain:corp.example",
                "group:team@example.com"
            ]}]}"#,
        );
        assert_eq!(p.invoker_count(), 3, "group: is ignored");
        assert_eq!(
            p.check(&caller("calling-service-sa@p.iam.gserviceaccount.com")),
            Verdict::Allowed
        );
        assert_eq!(p.check(&caller("dev@example.com")), Verdict::Allowed);
        let member_of_corp = Identity {
            email: Some("anyone@corp.example".to_owned()),
            domain: Some("corp.example".to_owned()),
        };
        assert_eq!(p.check(&member_of_corp), Verdict::Allowed);
        // An address in the domain is not membership of it.
        assert_eq!(p.check(&caller("anyone@corp.example")), Verdict::Denied);
        assert_eq!(p.check(&caller("team@example.com")), Verdict::Denied);
        assert_eq!(
            p.check(&caller("other@p.iam.gserviceaccount.com")),
            Verdict::Denied
        );
        assert_eq!(p.check(&caller("x@sub.corp.example")), Verdict::Denied);
        assert_eq!(
            p.check(&Identity {
                email: None,
                domain: None
            }),
            Verdict::Denied
        );
    }

    #[test]
    fn all_authenticated_users_admits_any_valid_token() {
        let p = policy(
            r#"{"bindings":[{"role":"roles/run.invoker","members":["allAuthenticatedUsers"]}]}"#,
        );
        assert!(!p.is_public());
        assert_eq!(
            p.check(&Identity {
                email: None,
                domain: None
            }),
            Verdict::Allowed
        );
        let p = policy(
            r#"{"projectBindings":[{"role":"roles/run.invoker","members":["allAuthenticatedUsers"]}]}"#,
        );
        assert_eq!(
            p.check(&Identity {
                email: None,
                domain: None
            }),
            Verdict::Denied,
            "no public principal holds a project role"
        );
    }

    #[test]
    fn conditional_bindings_grant_nothing() {
        let p = policy(
            r#"{"bindings":[{"role":"roles/run.invoker","members":["user:dev@example.com"],
                "condition":{"expression":"request.time < timestamp('2020-01-01T00:00:00Z')","title":"old"}}]}"#,
        );
        assert_eq!(p.check(&caller("dev@example.com")), Verdict::Denied);
    }

    #[test]
    fn not_a_policy() {
        assert!(Policy::parse(b"[]").is_err());
        assert!(Policy::parse(b"{\"bindings\":{}}").is_err());
        assert!(
            Policy::parse(b"{\"bindings\":[{\"members\":[]}]}").is_err(),
            "a binding needs a role"
        );
    }
}
