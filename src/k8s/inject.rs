//! `initguard k8s inject`: wrap the init containers of Pod-making manifests in `initguard run`.
//! Pure text in, text out: documents it does not change are copied byte for byte, and a manifest
//! it already injected comes out unchanged. Never talks to a cluster, never panics on input.

use super::workload::{self, ANNOTATION_INJECT, ANNOTATION_KEY, Identity, Kind};
use super::yaml_docs::{self, YamlError};
use crate::task::{Key, Scope};
use serde_norway::{Mapping, Value};

/// The init container `--install` adds, and the `emptyDir` it fills.
pub const INSTALL_CONTAINER: &str = "initguard-install";
pub const INSTALL_VOLUME: &str = "initguard-bin";
/// Where the emptyDir is mounted, in the install container and in the wrapped ones.
pub const INSTALL_DIR: &str = "/initguard";
/// Where the initguard image (the repository's `Dockerfile`) keeps the binary.
pub const IMAGE_BINARY: &str = "/usr/local/bin/initguard";
/// What the key's namespace part is when the manifest does not say: the kubelet expands
/// `$(VAR)` in `args` from the container's env, where inject puts `POD_NAMESPACE`.
pub const NAMESPACE_FROM_POD: &str = "$(POD_NAMESPACE)";

/// The Downward API variables initguard reads, and the Pod fields they come from.
pub const DOWNWARD_ENV: [(&str, &str); 4] = [
    ("POD_NAME", "metadata.name"),
    ("POD_NAMESPACE", "metadata.namespace"),
    ("POD_UID", "metadata.uid"),
    ("NODE_NAME", "spec.nodeName"),
];

#[derive(Debug, Clone, Default)]
pub struct InjectOptions {
    /// Only these init containers (empty: every one, subject to the annotations).
    pub containers: Vec<String>,
    /// Only workloads annotated `initguard.io/inject`.
    pub only_annotated: bool,
    /// Image holding initguard at `IMAGE_BINARY`, copied into an emptyDir by a first init container.
    pub install_image: Option<String>,
    /// initguard's path inside the wrapped containers (default: `initguard` on PATH, or the
    /// emptyDir's copy with `install_image`).
    pub binary: Option<String>,
    /// Also fingerprint mounted Secret volumes.
    pub input_secrets: bool,
    /// Scope for every wrapped container (default: node for DaemonSets, else global).
    pub scope: Option<Scope>,
    /// Commands for init containers that have none in the manifest (their image's ENTRYPOINT).
    pub commands: Vec<(String, Vec<String>)>,
    /// Namespace for keys and RBAC of objects that name none.
    pub namespace: Option<String>,
    /// `INITGUARD_STORE` for the wrapped containers (default: the in-Pod default, kubernetes:).
    pub store: Option<String>,
    /// Append the RBAC of `k8s rbac` for the service accounts of the wrapped workloads.
    pub rbac: bool,
}

/// Something the user should know about an init container inject left alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub document: usize,
    pub object: String,
    /// Empty when the notice is about the whole object.
    pub container: String,
    pub message: String,
}

impl std::fmt::Display for Notice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "document {} ({})", self.document, self.object)?;
        if !self.container.is_empty() {
            write!(f, ", init container {}", self.container)?;
        }
        write!(f, ": {}", self.message)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Injected {
    pub yaml: String,
    /// Init containers wrapped by this call.
    pub wrapped: usize,
    pub notices: Vec<Notice>,
}

#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    #[error(transparent)]
    Yaml(#[from] YamlError),
    #[error(
        "document {document} ({object}), init container {container}: key {key:?} is not valid \
         ({why}); set annotation {ANNOTATION_KEY} to a valid key"
    )]
    InvalidKey {
        document: usize,
        object: String,
        container: String,
        key: String,
        why: String,
    },
    #[error(transparent)]
    Rbac(#[from] super::rbac::RbacError),
}

/// Inject every document of `input`.
pub fn inject(input: &str, opts: &InjectOptions) -> Result<Injected, InjectError> {
    let mut out = String::with_capacity(input.len() + 1024);
    let mut wrapped = 0;
    let mut notices = Vec::new();
    let mut accounts: Vec<(String, String)> = Vec::new();
    let mut bound: Vec<(String, String)> = Vec::new();
    for doc in yaml_docs::split(input) {
        let original = doc.parse()?;
        let mut value = original.clone();
        for obj in workload::objects_mut(&mut value) {
            if let Some(b) = rolebinding_of(obj) {
                bound.push(b);
            }
            let mut ctx = Ctx {
                document: doc.index,
                opts,
                notices: &mut notices,
                wrapped: 0,
            };
            if let Some(account) = ctx.object(obj)?
                && !accounts.contains(&account)
            {
                accounts.push(account);
            }
            wrapped += ctx.wrapped;
        }
        if value == original {
            out.push_str(doc.text);
        } else {
            out.push_str(&doc.render(&value));
        }
    }
    if opts.rbac {
        for (namespace, account) in accounts {
            let binding = format!("{}-{account}", super::rbac::ROLE);
            if bound.contains(&(namespace.clone(), binding)) {
                continue;
            }
            if !out.is_empty() && !out.ends_with('\n') {
                out.push('\n');
            }
            out.push_str(&super::rbac::render(&namespace, &account)?);
        }
    }
    Ok(Injected {
        yaml: out,
        wrapped,
        notices,
    })
}

/// (namespace, name) of a RoleBinding in the input, so `--rbac` does not append it twice.
fn rolebinding_of(obj: &Value) -> Option<(String, String)> {
    (workload::str_at(obj, &["kind"]) == Some("RoleBinding")).then_some(())?;
    Some((
        workload::str_at(obj, &["metadata", "namespace"])?.to_string(),
        workload::str_at(obj, &["metadata", "name"])?.to_string(),
    ))
}

struct Ctx<'a> {
    document: usize,
    opts: &'a InjectOptions,
    notices: &'a mut Vec<Notice>,
    wrapped: usize,
}

/// What to do to one init container, decided from a read-only look at the object.
struct Plan {
    index: usize,
    key: String,
    inputs: Vec<String>,
    /// The argv to run: `command` + `args` of the manifest, or `--command`'s + `args`.
    argv: Vec<String>,
}

impl Ctx<'_> {
    fn notice(&mut self, id: &Identity, container: &str, message: String) {
        self.notices.push(Notice {
            document: self.document,
            object: id.to_string(),
            container: container.to_string(),
            message,
        });
    }

    /// Inject one object; the (namespace, service account) to grant RBAC to when it runs
    /// initguard (wrapped now or before).
    fn object(&mut self, obj: &mut Value) -> Result<Option<(String, String)>, InjectError> {
        let Some(id) = workload::identity(obj) else {
            return Ok(None);
        };
        let Some(spec) = workload::pod_spec(obj, id.kind) else {
            return Ok(None);
        };
        let chosen = match workload::annotation(obj, id.kind, ANNOTATION_INJECT) {
            Some("false") => return Ok(None),
            Some("true") => None,
            Some(list) => Some(list.split(',').map(|s| s.trim().to_string()).collect()),
            None if self.opts.only_annotated => return Ok(None),
            None => None,
        };
        let chosen: Option<Vec<String>> = chosen;
        let selected = |name: &str| {
            chosen.as_ref().is_none_or(|c| c.iter().any(|n| n == name))
                && (self.opts.containers.is_empty()
                    || self.opts.containers.iter().any(|n| n == name))
        };
        let candidates: Vec<_> = workload::init_containers(spec)
            .into_iter()
            .filter(|(_, name, _)| *name != INSTALL_CONTAINER && selected(name))
            .collect();
        let mut runs_initguard = candidates
            .iter()
            .any(|(_, _, c)| workload::initguard_subcommand(c).is_some());
        let to_wrap: Vec<_> = candidates
            .into_iter()
            .filter(|(_, _, c)| workload::initguard_subcommand(c).is_none())
            .collect();
        let key_annotation = workload::annotation(obj, id.kind, ANNOTATION_KEY);
        let mut plans = Vec::new();
        let mut pending = Vec::new();
        for (index, name, c) in &to_wrap {
            if workload::str_at(c, &["restartPolicy"]) == Some("Always") {
                // A native sidecar runs as long as the Pod: wrapped, it would hold the lease
                // for the Pod's life and every other replica would wait for it.
                pending.push((
                    name.to_string(),
                    "left alone: it is a sidecar (restartPolicy: Always), not a step that ends"
                        .to_string(),
                ));
                continue;
            }
            let (command, args) = workload::argv(c);
            let command = if command.is_empty() {
                match self.opts.commands.iter().find(|(n, _)| n == name) {
                    Some((_, cmd)) => cmd.clone(),
                    None => {
                        pending.push((
                            name.to_string(),
                            "left alone: it has no `command`, so it runs its image's ENTRYPOINT, \
                             which inject cannot see; give it with --command NAME=ENTRYPOINT"
                                .to_string(),
                        ));
                        continue;
                    }
                }
            } else {
                command
            };
            let per_container = format!("{ANNOTATION_KEY}.{name}");
            let key = match (
                workload::annotation(obj, id.kind, &per_container),
                key_annotation,
            ) {
                (Some(k), _) => k.to_string(),
                (None, Some(k)) if to_wrap.len() == 1 => k.to_string(),
                (None, Some(k)) => format!("{k}/{name}"),
                (None, None) => {
                    let ns = id
                        .namespace
                        .as_deref()
                        .or(self.opts.namespace.as_deref())
                        .unwrap_or(NAMESPACE_FROM_POD);
                    format!("{ns}/{}/{name}", id.name)
                }
            };
            // The namespace placeholder is expanded by the kubelet; check the rest now.
            if let Err(e) = Key::parse(&key.replace(NAMESPACE_FROM_POD, "ns")) {
                let why = match e {
                    crate::task::TaskError::InvalidKey { why, .. } => why.to_string(),
                    other => other.to_string(),
                };
                return Err(InjectError::InvalidKey {
                    document: self.document,
                    object: id.to_string(),
                    container: name.to_string(),
                    key,
                    why,
                });
            }
            plans.push(Plan {
                index: *index,
                key,
                inputs: self.inputs(spec, c),
                argv: command.into_iter().chain(args).collect(),
            });
        }
        for (name, message) in pending {
            self.notice(&id, &name, message);
        }
        let namespace = id.namespace.clone().or_else(|| self.opts.namespace.clone());
        let account = workload::service_account(spec)
            .unwrap_or("default")
            .to_string();
        let scope = self
            .opts
            .scope
            .or((id.kind == Kind::DaemonSet).then_some(Scope::Node));
        if !plans.is_empty() {
            let Some(spec) = workload::pod_spec_mut(obj, id.kind) else {
                return Ok(None);
            };
            self.apply(spec, &plans, scope);
            self.wrapped += plans.len();
            runs_initguard = true;
        }
        if !runs_initguard || !self.opts.rbac {
            return Ok(None);
        }
        match namespace {
            Some(ns) => Ok(Some((ns, account))),
            None => {
                // A RoleBinding names its subject's namespace; guessing one would grant the
                // wrong account.
                self.notices.push(Notice {
                    document: self.document,
                    object: id.to_string(),
                    container: String::new(),
                    message: "no RBAC appended: the object names no namespace; give --namespace"
                        .into(),
                });
                Ok(None)
            }
        }
    }

    /// `--input` paths: where the container mounts ConfigMaps (and Secrets, if allowed).
    fn inputs(&self, spec: &Value, container: &Value) -> Vec<String> {
        let volumes = spec.get("volumes").and_then(Value::as_sequence);
        let fingerprinted = |name: &str| {
            let Some(v) = volumes
                .into_iter()
                .flatten()
                .find(|v| v.get("name").and_then(Value::as_str) == Some(name))
            else {
                return false;
            };
            if v.get("configMap").is_some() {
                return true;
            }
            if v.get("secret").is_some() {
                return self.input_secrets();
            }
            // A projected volume counts only when every source is a ConfigMap (or a Secret, if
            // allowed): a token or Downward API source changes without the config changing.
            match v
                .get("projected")
                .and_then(|p| p.get("sources"))
                .and_then(Value::as_sequence)
            {
                Some(sources) if !sources.is_empty() => sources.iter().all(|s| {
                    s.get("configMap").is_some()
                        || (s.get("secret").is_some() && self.input_secrets())
                }),
                _ => false,
            }
        };
        let mut out: Vec<String> = Vec::new();
        for m in container
            .get("volumeMounts")
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
        {
            if let (Some(name), Some(path)) = (
                m.get("name").and_then(Value::as_str),
                m.get("mountPath").and_then(Value::as_str),
            ) && fingerprinted(name)
                && !out.iter().any(|p| p == path)
            {
                out.push(path.to_string());
            }
        }
        out
    }

    fn input_secrets(&self) -> bool {
        self.opts.input_secrets
    }

    fn binary(&self) -> String {
        match (&self.opts.binary, &self.opts.install_image) {
            (Some(b), _) => b.clone(),
            (None, Some(_)) => format!("{INSTALL_DIR}/initguard"),
            (None, None) => "initguard".into(),
        }
    }

    fn apply(&self, spec: &mut Value, plans: &[Plan], scope: Option<Scope>) {
        let binary = self.binary();
        let install = self.opts.install_image.as_ref();
        if let Some(Value::Sequence(inits)) = spec.get_mut("initContainers") {
            for plan in plans {
                let Some(Value::Mapping(c)) = inits.get_mut(plan.index) else {
                    continue;
                };
                let mut args = vec!["run".to_string(), "--key".into(), plan.key.clone()];
                match scope {
                    Some(Scope::Pod) => args.extend(["--scope".into(), "pod".into()]),
                    Some(Scope::Node) => args.extend(["--scope".into(), "node".into()]),
                    Some(Scope::Global) | None => {}
                }
                for p in &plan.inputs {
                    args.extend(["--input".into(), p.clone()]);
                }
                args.push("--".into());
                args.extend(plan.argv.iter().cloned());
                c.insert("command".into(), strings(std::iter::once(binary.clone())));
                c.insert("args".into(), strings(args));
                let mut env: Vec<(String, Value)> = DOWNWARD_ENV
                    .iter()
                    .map(|(name, field)| (name.to_string(), field_ref(field)))
                    .collect();
                if let Some(store) = &self.opts.store {
                    env.push(("INITGUARD_STORE".into(), Value::from(store.as_str())));
                }
                add_env(c, env);
                if install.is_some() {
                    let mut mount = Mapping::new();
                    mount.insert("name".into(), INSTALL_VOLUME.into());
                    mount.insert("mountPath".into(), INSTALL_DIR.into());
                    mount.insert("readOnly".into(), true.into());
                    push_named(c, "volumeMounts", mount);
                }
            }
            if let Some(image) = install
                && !inits
                    .iter()
                    .any(|c| c.get("name").and_then(Value::as_str) == Some(INSTALL_CONTAINER))
            {
                inits.insert(0, install_container(image));
            }
        }
        if install.is_some()
            && let Value::Mapping(spec) = spec
        {
            let mut volume = Mapping::new();
            volume.insert("name".into(), INSTALL_VOLUME.into());
            volume.insert("emptyDir".into(), Value::Mapping(Mapping::new()));
            push_named(spec, "volumes", volume);
        }
    }
}

fn strings(items: impl IntoIterator<Item = String>) -> Value {
    Value::Sequence(items.into_iter().map(Value::from).collect())
}

fn field_ref(path: &str) -> Value {
    let mut field = Mapping::new();
    field.insert("fieldPath".into(), path.into());
    let mut from = Mapping::new();
    from.insert("fieldRef".into(), Value::Mapping(field));
    let mut m = Mapping::new();
    m.insert("valueFrom".into(), Value::Mapping(from));
    Value::Mapping(m)
}

/// Append the variables the container does not define yet (its own definitions win).
fn add_env(c: &mut Mapping, vars: Vec<(String, Value)>) {
    for (name, value) in vars {
        let mut entry = Mapping::new();
        entry.insert("name".into(), name.into());
        if let Value::Mapping(rest) = value {
            entry.extend(rest);
        } else {
            entry.insert("value".into(), value);
        }
        push_named(c, "env", entry);
    }
}

/// Append `item` to the list `field` of `m` unless an entry with its `name` is there already.
fn push_named(m: &mut Mapping, field: &str, item: Mapping) {
    let slot = m
        .entry(field.into())
        .or_insert_with(|| Value::Sequence(Vec::new()));
    if !slot.is_sequence() {
        // `env: null` and the like: Kubernetes treats them as empty.
        *slot = Value::Sequence(Vec::new());
    }
    if let Value::Sequence(items) = slot {
        let name = item.get("name").cloned();
        if !items.iter().any(|i| i.get("name") == name.as_ref()) {
            items.push(Value::Mapping(item));
        }
    }
}

fn install_container(image: &str) -> Value {
    let mut mount = Mapping::new();
    mount.insert("name".into(), INSTALL_VOLUME.into());
    mount.insert("mountPath".into(), INSTALL_DIR.into());
    let mut c = Mapping::new();
    c.insert("name".into(), INSTALL_CONTAINER.into());
    c.insert("image".into(), image.into());
    c.insert(
        "command".into(),
        strings([
            IMAGE_BINARY.to_string(),
            "install".into(),
            INSTALL_DIR.into(),
        ]),
    );
    c.insert(
        "volumeMounts".into(),
        Value::Sequence(vec![Value::Mapping(mount)]),
    );
    Value::Mapping(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const DEPLOY: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: shop}\n\
        spec:\n  template:\n    spec:\n      initContainers:\n      - {name: m, image: i, command: [./m]}\n";

    #[test]
    fn wraps_once_and_only_once() {
        let opts = InjectOptions {
            install_image: Some("img".into()),
            rbac: true,
            ..InjectOptions::default()
        };
        let once = inject(DEPLOY, &opts).unwrap();
        assert_eq!(once.wrapped, 1);
        let twice = inject(&once.yaml, &opts).unwrap();
        assert_eq!(twice.wrapped, 0);
        assert_eq!(twice.yaml, once.yaml);
        assert_eq!(once.yaml.matches("kind: RoleBinding").count(), 1);
    }

    #[test]
    fn a_pod_scope_adds_its_flag_and_user_env_wins() {
        let input = DEPLOY.replace(
            "command: [./m]}",
            "command: [./m], env: [{name: POD_UID, value: fixed}]}",
        );
        let opts = InjectOptions {
            scope: Some(Scope::Pod),
            ..InjectOptions::default()
        };
        let out = inject(&input, &opts).unwrap().yaml;
        assert!(out.contains("- --scope\n        - pod\n"), "{out}");
        assert_eq!(out.matches("name: POD_UID").count(), 1, "{out}");
        assert!(out.contains("value: fixed"));
    }

    #[test]
    fn native_sidecars_are_left_alone() {
        let input = DEPLOY.replace(
            "command: [./m]}",
            "command: [./proxy], restartPolicy: Always}",
        );
        let out = inject(&input, &InjectOptions::default()).unwrap();
        assert_eq!(out.wrapped, 0);
        assert_eq!(out.yaml, input);
        assert!(
            out.notices[0].message.contains("sidecar"),
            "{:?}",
            out.notices
        );
    }

    proptest! {
        /// Hostile YAML: an error or an output, never a panic.
        #[test]
        fn inject_and_lint_never_panic(tail in "[ a-zA-Z0-9:\\-\\[\\]{},\n&*!|>'\"#]{0,80}") {
            let input = format!("{DEPLOY}{tail}");
            let opts = InjectOptions { install_image: Some("i".into()), rbac: true, ..InjectOptions::default() };
            let _ = inject(&input, &opts);
            let _ = super::super::lint::lint(&input);
            let _ = inject(&tail, &opts);
            let _ = super::super::lint::lint(&tail);
        }
    }
}
