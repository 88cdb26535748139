//! What `inject` and `lint` need to know about a Kubernetes object held as a YAML value: which of
//! the seven Pod-making kinds it is, where its Pod template lives, how many Pods can run its init
//! containers at once, and whether an init container is already wrapped by initguard. Pure
//! reads (and `&mut` paths into the value); never decides policy.

use serde_norway::Value;

pub const ANNOTATION_INJECT: &str = "initguard.io/inject";
pub const ANNOTATION_KEY: &str = "initguard.io/key";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Pod,
    Deployment,
    StatefulSet,
    DaemonSet,
    ReplicaSet,
    Job,
    CronJob,
}

impl Kind {
    fn of(obj: &Value) -> Option<Kind> {
        let api = obj.get("apiVersion").and_then(Value::as_str)?;
        let group = api.rsplit_once('/').map_or("", |(g, _)| g);
        let kind = match obj.get("kind").and_then(Value::as_str)? {
            "Pod" if group.is_empty() => Kind::Pod,
            // extensions/* still appears in old charts; the shape is the same.
            "Deployment" if matches!(group, "apps" | "extensions") => Kind::Deployment,
            "StatefulSet" if group == "apps" => Kind::StatefulSet,
            "DaemonSet" if matches!(group, "apps" | "extensions") => Kind::DaemonSet,
            "ReplicaSet" if matches!(group, "apps" | "extensions") => Kind::ReplicaSet,
            "Job" if group == "batch" => Kind::Job,
            "CronJob" if group == "batch" => Kind::CronJob,
            _ => return None,
        };
        Some(kind)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Pod => "Pod",
            Kind::Deployment => "Deployment",
            Kind::StatefulSet => "StatefulSet",
            Kind::DaemonSet => "DaemonSet",
            Kind::ReplicaSet => "ReplicaSet",
            Kind::Job => "Job",
            Kind::CronJob => "CronJob",
        }
    }

    /// Path from the object to its Pod spec.
    fn pod_spec_path(self) -> &'static [&'static str] {
        match self {
            Kind::Pod => &["spec"],
            Kind::CronJob => &["spec", "jobTemplate", "spec", "template", "spec"],
            _ => &["spec", "template", "spec"],
        }
    }

    /// Path from the object to its Pod template's metadata.
    fn pod_meta_path(self) -> &'static [&'static str] {
        match self {
            Kind::Pod => &["metadata"],
            Kind::CronJob => &["spec", "jobTemplate", "spec", "template", "metadata"],
            _ => &["spec", "template", "metadata"],
        }
    }
}

/// A `kind: List` (or `DeploymentList`, … as `kubectl get -o yaml` prints) holding objects.
pub fn is_list(obj: &Value) -> bool {
    obj.get("kind")
        .and_then(Value::as_str)
        .is_some_and(|k| k.ends_with("List"))
        && obj.get("items").is_some_and(Value::is_sequence)
}

/// The objects of a document: the document itself, or the items of a List (nested Lists too).
pub fn objects(doc: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    collect(doc, &mut out);
    out
}

fn collect<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
    if is_list(v) {
        for item in v
            .get("items")
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
        {
            collect(item, out);
        }
    } else {
        out.push(v);
    }
}

pub fn objects_mut(doc: &mut Value) -> Vec<&mut Value> {
    let mut out = Vec::new();
    collect_mut(doc, &mut out);
    out
}

fn collect_mut<'a>(v: &'a mut Value, out: &mut Vec<&'a mut Value>) {
    if is_list(v) {
        if let Some(items) = v.get_mut("items").and_then(Value::as_sequence_mut) {
            for item in items {
                collect_mut(item, out);
            }
        }
    } else {
        out.push(v);
    }
}

fn get_path<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(*k))
}

fn get_path_mut<'a>(v: &'a mut Value, path: &[&str]) -> Option<&'a mut Value> {
    path.iter().try_fold(v, |v, k| v.get_mut(*k))
}

pub fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    get_path(v, path).and_then(Value::as_str)
}

/// A workload: one of the seven kinds, with a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub kind: Kind,
    pub name: String,
    pub namespace: Option<String>,
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {ns}/{}", self.kind.as_str(), self.name),
            None => write!(f, "{} {}", self.kind.as_str(), self.name),
        }
    }
}

pub fn identity(obj: &Value) -> Option<Identity> {
    let kind = Kind::of(obj)?;
    let name = str_at(obj, &["metadata", "name"])
        .map(str::to_string)
        // A Pod from `generateName: web-` is named after its prefix.
        .or_else(|| {
            str_at(obj, &["metadata", "generateName"]).map(|g| g.trim_end_matches('-').into())
        })
        .filter(|n| !n.is_empty())?;
    Some(Identity {
        kind,
        name,
        namespace: str_at(obj, &["metadata", "namespace"]).map(str::to_string),
    })
}

pub fn pod_spec(obj: &Value, kind: Kind) -> Option<&Value> {
    get_path(obj, kind.pod_spec_path()).filter(|v| v.is_mapping())
}

pub fn pod_spec_mut(obj: &mut Value, kind: Kind) -> Option<&mut Value> {
    get_path_mut(obj, kind.pod_spec_path()).filter(|v| v.is_mapping())
}

/// An annotation of the Pod template, else of the workload itself.
pub fn annotation<'a>(obj: &'a Value, kind: Kind, name: &str) -> Option<&'a str> {
    let mut pod_meta = kind.pod_meta_path().to_vec();
    pod_meta.extend(["annotations", name]);
    str_at(obj, &pod_meta).or_else(|| str_at(obj, &["metadata", "annotations", name]))
}

/// The workload's own annotations (not its Pod template's).
pub fn own_annotations(obj: &Value) -> Vec<(&str, &str)> {
    annotations_at(obj.get("metadata"))
}

pub fn template_annotations(obj: &Value, kind: Kind) -> Vec<(&str, &str)> {
    annotations_at(get_path(obj, kind.pod_meta_path()))
}

fn annotations_at(meta: Option<&Value>) -> Vec<(&str, &str)> {
    meta.and_then(|m| m.get("annotations"))
        .and_then(Value::as_mapping)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.as_str()?, v.as_str().unwrap_or(""))))
                .collect()
        })
        .unwrap_or_default()
}

fn int_at(obj: &Value, path: &[&str]) -> Option<i64> {
    get_path(obj, path).and_then(Value::as_i64)
}

/// Why more than one Pod of this workload can run its init containers at the same time, or
/// `None` when at most one can.
pub fn concurrency(obj: &Value, kind: Kind) -> Option<String> {
    let replicas = get_path(obj, &["spec", "replicas"]);
    // A templated or absent-by-HPA count is not known to be 1.
    let count = |v: Option<&Value>, default: i64| match v {
        None => Some(default),
        Some(v) => v.as_i64(),
    };
    match kind {
        Kind::Pod => None,
        Kind::DaemonSet => Some("a DaemonSet runs one Pod per node".into()),
        Kind::Deployment => match count(replicas, 1) {
            Some(n) if n > 1 => Some(format!("{n} replicas")),
            None => Some("a replica count that is not a fixed number".into()),
            _ if str_at(obj, &["spec", "strategy", "type"]) == Some("Recreate") => None,
            // RollingUpdate starts the new Pod before the old one is gone, and a second
            // rollout or an HPA adds more.
            _ => Some("a rolling update starts new Pods while old ones run".into()),
        },
        Kind::StatefulSet | Kind::ReplicaSet => match count(replicas, 1) {
            Some(n) if n > 1 => Some(format!("{n} replicas")),
            None => Some("a replica count that is not a fixed number".into()),
            _ => None,
        },
        Kind::Job => job_concurrency(obj, &["spec"]),
        Kind::CronJob => {
            let policy = str_at(obj, &["spec", "concurrencyPolicy"]).unwrap_or("Allow");
            job_concurrency(obj, &["spec", "jobTemplate", "spec"]).or_else(|| {
                (policy == "Allow").then(|| {
                    "concurrencyPolicy Allow lets a new Job start while the last one runs".into()
                })
            })
        }
    }
}

fn job_concurrency(obj: &Value, spec: &[&str]) -> Option<String> {
    let mut p = spec.to_vec();
    p.push("parallelism");
    match int_at(obj, &p) {
        Some(n) if n > 1 => Some(format!("parallelism {n}")),
        _ => None,
    }
}

/// The init containers of a Pod spec, as (index, name, container).
pub fn init_containers(spec: &Value) -> Vec<(usize, &str, &Value)> {
    spec.get("initContainers")
        .and_then(Value::as_sequence)
        .map(|s| {
            s.iter()
                .enumerate()
                .filter_map(|(i, c)| Some((i, c.get("name")?.as_str()?, c)))
                .collect()
        })
        .unwrap_or_default()
}

pub fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_sequence)
        .map(|s| {
            s.iter()
                .map(|x| match x {
                    Value::String(s) => s.clone(),
                    // Numbers and booleans in argv are legal YAML; Kubernetes rejects them, we
                    // only read them.
                    other => serde_norway::to_string(other)
                        .map(|s| s.trim_end().to_string())
                        .unwrap_or_default(),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The container's `command` and `args`.
pub fn argv(container: &Value) -> (Vec<String>, Vec<String>) {
    (
        strings(container.get("command")),
        strings(container.get("args")),
    )
}

/// Whether the container already runs `initguard <subcommand> …` (wrapped by `inject` or by
/// hand): `initguard` or any path ending in `/initguard` as its command.
pub fn initguard_subcommand(container: &Value) -> Option<String> {
    let (command, args) = argv(container);
    let mut all = command.into_iter().chain(args);
    let exe = all.next()?;
    if exe == "initguard" || exe.ends_with("/initguard") {
        return Some(all.next().unwrap_or_default());
    }
    None
}

/// Names of the env variables the container defines.
pub fn env_names(container: &Value) -> Vec<&str> {
    container
        .get("env")
        .and_then(Value::as_sequence)
        .map(|s| s.iter().filter_map(|e| e.get("name")?.as_str()).collect())
        .unwrap_or_default()
}

/// A literal env value of the container (`value:`, not `valueFrom:`).
pub fn env_value<'a>(container: &'a Value, name: &str) -> Option<&'a str> {
    container
        .get("env")?
        .as_sequence()?
        .iter()
        .find(|e| e.get("name").and_then(Value::as_str) == Some(name))?
        .get("value")?
        .as_str()
}

pub fn service_account(spec: &Value) -> Option<&str> {
    spec.get("serviceAccountName")
        .or_else(|| spec.get("serviceAccount"))
        .and_then(Value::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(s: &str) -> Value {
        serde_norway::from_str(s).unwrap()
    }

    #[test]
    fn kinds_need_their_api_group() {
        assert!(
            identity(&yaml(
                "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: a}"
            ))
            .is_some()
        );
        assert!(
            identity(&yaml(
                "apiVersion: v1\nkind: Deployment\nmetadata: {name: a}"
            ))
            .is_none()
        );
        assert!(
            identity(&yaml(
                "apiVersion: example.com/v1\nkind: Job\nmetadata: {name: a}"
            ))
            .is_none()
        );
        assert!(identity(&yaml("apiVersion: apps/v1\nkind: Deployment\nmetadata: {}")).is_none());
    }

    #[test]
    fn concurrency_follows_the_kind() {
        let c = |s: &str| {
            let v = yaml(s);
            concurrency(&v, identity(&v).unwrap().kind)
        };
        let head = "metadata: {name: a}\n";
        assert!(c(&format!("apiVersion: v1\nkind: Pod\n{head}")).is_none());
        assert!(c(&format!("apiVersion: apps/v1\nkind: Deployment\n{head}")).is_some());
        assert!(c(&format!("apiVersion: apps/v1\nkind: Deployment\n{head}spec: {{replicas: 1, strategy: {{type: Recreate}}}}")).is_none());
        assert!(
            c(&format!(
                "apiVersion: apps/v1\nkind: StatefulSet\n{head}spec: {{replicas: 1}}"
            ))
            .is_none()
        );
        assert!(
            c(&format!(
                "apiVersion: apps/v1\nkind: StatefulSet\n{head}spec: {{replicas: 3}}"
            ))
            .is_some()
        );
        assert!(c(&format!("apiVersion: apps/v1\nkind: DaemonSet\n{head}")).is_some());
        assert!(c(&format!("apiVersion: batch/v1\nkind: Job\n{head}")).is_none());
        assert!(
            c(&format!(
                "apiVersion: batch/v1\nkind: Job\n{head}spec: {{parallelism: 2}}"
            ))
            .is_some()
        );
        assert!(c(&format!("apiVersion: batch/v1\nkind: CronJob\n{head}")).is_some());
        assert!(
            c(&format!(
                "apiVersion: batch/v1\nkind: CronJob\n{head}spec: {{concurrencyPolicy: Forbid}}"
            ))
            .is_none()
        );
    }

    #[test]
    fn lists_are_flattened() {
        let v = yaml(
            "apiVersion: v1\nkind: List\nitems:\n- {kind: A}\n- apiVersion: v1\n  kind: DeploymentList\n  items: [{kind: B}]\n",
        );
        assert_eq!(objects(&v).len(), 2);
    }
}
