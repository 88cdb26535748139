//! Task identity: the validated key, what "once" means (scope), and who holds a lease (holder).
//! Pure values and validation; reads the environment only in `Holder::from_env`/`Scope::instance`.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Longest key DESIGN.md allows.
pub const MAX_KEY_LEN: usize = 200;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TaskError {
    #[error("invalid key {key:?}: {why}")]
    InvalidKey { key: String, why: &'static str },
    #[error("--scope {scope} needs {var} in the environment (set it from the Downward API)")]
    MissingScopeEnv { scope: Scope, var: &'static str },
}

/// A task's name, e.g. `myapp/migrate`: 1–200 chars of `[A-Za-z0-9._/-]`, no `..`, no leading `/`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Key(String);

impl Key {
    pub fn parse(raw: &str) -> Result<Key, TaskError> {
        let bad = |why| TaskError::InvalidKey {
            key: raw.to_string(),
            why,
        };
        if raw.is_empty() {
            return Err(bad("it is empty"));
        }
        if raw.len() > MAX_KEY_LEN {
            return Err(bad("it is longer than 200 characters"));
        }
        if let Some(c) = raw
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/' | '-')))
        {
            let _ = c;
            return Err(bad("only A-Z a-z 0-9 . _ / - are allowed"));
        }
        if raw.starts_with('/') {
            return Err(bad("it must not start with '/'"));
        }
        if raw.contains("..") {
            return Err(bad("it must not contain '..'"));
        }
        // Keys become file paths in the file store: empty or "." segments would alias other keys.
        if raw.split('/').any(|seg| seg.is_empty() || seg == ".") {
            return Err(bad("it must not have empty or '.' path segments"));
        }
        Ok(Key(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What "once" means for a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Once per key and fingerprint, across the whole fleet.
    #[default]
    Global,
    /// Once per Pod UID: survives container restarts, not rescheduling.
    Pod,
    /// Once per node, for DaemonSets.
    Node,
}

impl Scope {
    pub fn parse(raw: &str) -> Option<Scope> {
        match raw {
            "global" => Some(Scope::Global),
            "pod" => Some(Scope::Pod),
            "node" => Some(Scope::Node),
            _ => None,
        }
    }

    /// The scope instance this process belongs to, read from the Downward API environment.
    pub fn instance_from_env(self) -> Result<Option<String>, TaskError> {
        let var = match self {
            Scope::Global => return Ok(None),
            Scope::Pod => "POD_UID",
            Scope::Node => "NODE_NAME",
        };
        match std::env::var(var) {
            Ok(v) if !v.trim().is_empty() => Ok(Some(sanitize_instance(v.trim()))),
            _ => Err(TaskError::MissingScopeEnv { scope: self, var }),
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scope::Global => "global",
            Scope::Pod => "pod",
            Scope::Node => "node",
        })
    }
}

/// Pod UIDs and node names are DNS-ish already; anything else is mapped so that it can be used in
/// file names and Kubernetes object names without escaping.
fn sanitize_instance(raw: &str) -> String {
    raw.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(128)
        .collect()
}

/// The unit a store keeps one record and one lease for: a key, plus the scope instance.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TaskId {
    pub key: Key,
    pub scope: Scope,
    pub instance: Option<String>,
}

impl TaskId {
    pub fn global(key: Key) -> TaskId {
        TaskId {
            key,
            scope: Scope::Global,
            instance: None,
        }
    }

    /// A stable, path- and name-safe string naming this task in a store: `KEY` for global scope,
    /// `KEY@pod=UID` / `KEY@node=NAME` otherwise (`@` and `=` never occur in keys).
    pub fn storage_name(&self) -> String {
        match &self.instance {
            None => self.key.to_string(),
            Some(inst) => format!("{}@{}={}", self.key, self.scope, inst),
        }
    }

    /// Inverse of `storage_name`, for stores that list their records by name.
    pub fn from_storage_name(name: &str) -> Option<TaskId> {
        let (key, rest) = match name.split_once('@') {
            None => return Key::parse(name).ok().map(TaskId::global),
            Some(parts) => parts,
        };
        let (scope, inst) = rest.split_once('=')?;
        Some(TaskId {
            key: Key::parse(key).ok()?,
            scope: Scope::parse(scope)?,
            instance: Some(inst.to_string()),
        })
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.instance {
            None => write!(f, "{}", self.key),
            Some(inst) => write!(f, "{} ({} {})", self.key, self.scope, inst),
        }
    }
}

/// Who runs (or ran) a task: Pod identity from the Downward API, host and pid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Holder {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    pub host: String,
    pub pid: u32,
}

impl Holder {
    /// This process, as the Downward API describes it (falls back to hostname + pid).
    pub fn from_env() -> Holder {
        let var = |name| std::env::var(name).ok().filter(|v: &String| !v.is_empty());
        let host = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .or_else(|| var("HOSTNAME"))
            .unwrap_or_else(|| "unknown-host".to_string());
        Holder {
            pod: var("POD_NAME"),
            namespace: var("POD_NAMESPACE"),
            uid: var("POD_UID"),
            node: var("NODE_NAME"),
            host,
            pid: std::process::id(),
        }
    }

    /// A single-token identity for stores that keep one string (Kubernetes `holderIdentity`).
    pub fn identity(&self) -> String {
        match (&self.pod, &self.uid) {
            (Some(pod), Some(uid)) => format!("{pod}_{uid}_{}", self.pid),
            (Some(pod), None) => format!("{pod}_{}", self.pid),
            _ => format!("{}_{}", self.host, self.pid),
        }
    }

    /// True when `other` is the same Pod (by UID) or, outside Kubernetes, the same host.
    /// `release` uses this: a preStop hook runs in another process of the same Pod.
    pub fn same_owner(&self, other: &Holder) -> bool {
        match (&self.uid, &other.uid) {
            (Some(a), Some(b)) => a == b,
            (None, None) => self.host == other.host,
            _ => false,
        }
    }
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.pod, &self.namespace) {
            (Some(pod), Some(ns)) => write!(f, "pod {ns}/{pod}")?,
            (Some(pod), None) => write!(f, "pod {pod}")?,
            _ => write!(f, "host {}", self.host)?,
        }
        if let Some(node) = &self.node {
            write!(f, " on node {node}")?;
        }
        write!(f, " (pid {})", self.pid)
    }
}

/// Tasks for tests, made from keys known to be valid.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::{Key, Scope, TaskId};

    pub(crate) fn global(key: &str) -> TaskId {
        TaskId::global(Key::parse(key).expect("a valid test key"))
    }

    pub(crate) fn scoped(key: &str, scope: Scope, instance: &str) -> TaskId {
        TaskId {
            key: Key::parse(key).expect("a valid test key"),
            scope,
            instance: Some(instance.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_keys_parse() {
        for k in ["a", "myapp/migrate", "A-b_c.d/e-1", &"x".repeat(200)] {
            assert!(Key::parse(k).is_ok(), "{k}");
        }
    }

    #[test]
    fn invalid_keys_are_rejected_with_reason() {
        for k in [
            "",
            "/abs",
            "a/../b",
            "a..b",
            "sp ace",
            "a//b",
            "a/",
            "./a",
            "ü",
            "a@b",
            &"x".repeat(201),
        ] {
            let err = Key::parse(k).expect_err(k);
            assert!(err.to_string().starts_with("invalid key"), "{err}");
        }
    }

    #[test]
    fn storage_name_round_trips() {
        let id = TaskId {
            key: Key::parse("app/init").unwrap(),
            scope: Scope::Pod,
            instance: Some("1234-abcd".into()),
        };
        assert_eq!(id.storage_name(), "app/init@pod=1234-abcd");
        assert_eq!(TaskId::from_storage_name(&id.storage_name()), Some(id));
        let g = TaskId::global(Key::parse("x").unwrap());
        assert_eq!(TaskId::from_storage_name("x"), Some(g));
    }

    /// Pins the name a task's row has in PostgreSQL (`task` column) and its Lease's
    /// `initguard.io/task` annotation. If this fails, an upgrade would look for every record
    /// under a new name and re-run every task. Never paste new values in.
    #[test]
    fn storage_names_are_pinned() {
        let id = |key: &str, scope, inst: Option<&str>| TaskId {
            key: Key::parse(key).unwrap(),
            scope,
            instance: inst.map(str::to_string),
        };
        let long = "x".repeat(200);
        let cases = [
            (
                id("myapp/migrate", Scope::Global, None),
                "myapp/migrate".to_string(),
            ),
            (id("A-b_c.d/e-1", Scope::Global, None), "A-b_c.d/e-1".into()),
            (id(&long, Scope::Global, None), long.clone()),
            (
                id(
                    "app/init",
                    Scope::Pod,
                    Some("5f1c2d3e-aaaa-bbbb-cccc-0123456789ab"),
                ),
                "app/init@pod=5f1c2d3e-aaaa-bbbb-cccc-0123456789ab".into(),
            ),
            (
                id("ds/setup", Scope::Node, Some("ip-10-0-1-23.ec2.internal")),
                "ds/setup@node=ip-10-0-1-23.ec2.internal".into(),
            ),
            (
                id(&long, Scope::Node, Some(&"n".repeat(128))),
                format!("{long}@node={}", "n".repeat(128)),
            ),
        ];
        for (t, want) in cases {
            assert_eq!(t.storage_name(), want);
            assert_eq!(TaskId::from_storage_name(&want), Some(t));
        }
        // What a sanitized instance from the Downward API looks like in the name.
        let odd = sanitize_instance("node/1 a@b=c");
        assert_eq!(
            id("k", Scope::Node, Some(&odd)).storage_name(),
            "k@node=node_1_a_b_c"
        );
    }

    #[test]
    fn instances_are_sanitized() {
        assert_eq!(sanitize_instance("node/1 a"), "node_1_a");
    }
}
