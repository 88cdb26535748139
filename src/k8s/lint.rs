//! `initguard k8s lint`: the manifest shapes behind the init-container failures users report,
//! as findings with a rule id, a severity, a one-line message naming the document and
//! container, and a fix. Pure: reads YAML, returns findings; rendering lives in `lint_report.rs`.

use super::workload::{self, Identity, Kind};
use super::yaml_docs::{self, YamlError};
use serde_norway::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Warning,
    Error,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub struct Rule {
    pub id: &'static str,
    pub name: &'static str,
    pub severity: Severity,
    /// What the rule finds and why it matters, for the rules table and SARIF.
    pub summary: &'static str,
    pub fix: &'static str,
}

pub const UNGUARDED_MIGRATION: Rule = Rule {
    id: "IG001",
    name: "unguarded-migration",
    severity: Severity::Error,
    summary: "a migration or setup tool runs in an init container of a workload that can run \
              several Pods at once, with nothing making it run once",
    fix: "wrap it in initguard run (initguard k8s inject does it), or move it to one Job",
};
pub const ANTI_AFFINITY_AS_LOCK: Rule = Rule {
    id: "IG002",
    name: "anti-affinity-as-lock",
    severity: Severity::Warning,
    summary: "podAntiAffinity beside an unguarded migration: it spreads Pods over nodes, it does \
              not stop their init containers from running at the same time",
    fix: "guard the init container with initguard run; keep the anti-affinity only for spreading",
};
pub const JOB_TEMPLATE_CHECKSUM: Rule = Rule {
    id: "IG003",
    name: "job-template-checksum",
    severity: Severity::Error,
    summary: "a checksum/rollme annotation on a Job's Pod template: the template is immutable, so \
              every upgrade that changes it fails (\"field is immutable\")",
    fix: "move the annotation to the Job's own metadata, or make the Job a hook that is \
          recreated (helm.sh/hook-delete-policy: before-hook-creation)",
};
pub const HOOK_JOB_TTL: Rule = Rule {
    id: "IG004",
    name: "hook-job-ttl",
    severity: Severity::Error,
    summary: "ttlSecondsAfterFinished on a Helm or Argo CD hook Job: the TTL controller can \
              delete it before the tool sees it finish, and the tool then waits forever",
    fix: "remove ttlSecondsAfterFinished and use the hook delete policy \
          (helm.sh/hook-delete-policy / argocd.argoproj.io/hook-delete-policy: HookSucceeded)",
};
pub const MISSING_DOWNWARD_ENV: Rule = Rule {
    id: "IG005",
    name: "missing-downward-env",
    severity: Severity::Error,
    summary: "an initguard init container lacks a Downward API variable its scope needs \
              (--scope pod: POD_UID, --scope node: NODE_NAME)",
    fix: "add the variable with valueFrom.fieldRef (initguard k8s inject adds all four)",
};
pub const MISSING_POD_IDENTITY: Rule = Rule {
    id: "IG006",
    name: "missing-pod-identity",
    severity: Severity::Warning,
    summary: "an initguard init container lacks POD_NAME or POD_NAMESPACE: records and logs name \
              a hostname instead of the Pod, and release cannot tell its own Pod's lease",
    fix: "add POD_NAME (metadata.name) and POD_NAMESPACE (metadata.namespace) with \
          valueFrom.fieldRef",
};
pub const KUBE_STORE_DEFAULT_SA: Rule = Rule {
    id: "IG007",
    name: "kube-store-default-service-account",
    severity: Severity::Warning,
    summary: "an initguard init container on the kubernetes: store runs as the default service \
              account: granting it Leases grants them to every Pod of the namespace",
    fix: "set serviceAccountName to a dedicated account and apply initguard k8s rbac for it",
};
pub const KUBE_STORE_NO_RBAC: Rule = Rule {
    id: "IG008",
    name: "kube-store-no-rbac",
    severity: Severity::Warning,
    summary: "an initguard init container on the kubernetes: store, but no RoleBinding in the \
              input grants its service account anything: it fails with 78 (forbidden) unless \
              the RBAC is applied separately",
    fix: "add the output of initguard k8s rbac --namespace NS --service-account SA \
          (or initguard k8s inject --rbac)",
};
pub const API_POLLING_WAIT: Rule = Rule {
    id: "IG009",
    name: "api-polling-wait",
    severity: Severity::Warning,
    summary: "an init container polls the API server (kubectl wait, k8s-wait-for) from every Pod \
              to learn that a task finished",
    fix: "guard the task with initguard run and wait for it with initguard wait KEY",
};

/// Every rule, in id order.
pub const RULES: [&Rule; 9] = [
    &UNGUARDED_MIGRATION,
    &ANTI_AFFINITY_AS_LOCK,
    &JOB_TEMPLATE_CHECKSUM,
    &HOOK_JOB_TTL,
    &MISSING_DOWNWARD_ENV,
    &MISSING_POD_IDENTITY,
    &KUBE_STORE_DEFAULT_SA,
    &KUBE_STORE_NO_RBAC,
    &API_POLLING_WAIT,
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub rule: &'static Rule,
    /// 1-based document of the input, and the line its text starts on.
    pub document: usize,
    pub line: usize,
    /// `Deployment shop/web`.
    pub object: String,
    pub container: Option<String>,
    pub message: String,
}

impl Finding {
    /// `document 2 (Deployment shop/web), init container migrate: …`
    pub fn headline(&self) -> String {
        let place = match &self.container {
            Some(c) => format!(
                "document {} ({}), init container {c}",
                self.document, self.object
            ),
            None => format!("document {} ({})", self.document, self.object),
        };
        format!("{place}: {}", self.message)
    }
}

/// A migration or setup tool: its command word and the words that make it change a database.
const MIGRATION_TOOLS: &[(&str, &[&str])] = &[
    ("flyway", &["migrate"]),
    ("liquibase", &["update"]),
    ("migrate", &["up"]),
    ("alembic", &["upgrade"]),
    ("manage.py", &["migrate"]),
    ("rails", &["db:migrate"]),
    ("rake", &["db:migrate"]),
    ("rails", &["db:prepare"]),
    ("prisma", &["migrate", "deploy"]),
    ("prisma", &["db", "push"]),
    ("knex", &["migrate:latest"]),
    ("sequelize", &["db:migrate"]),
    ("sequelize-cli", &["db:migrate"]),
    ("goose", &["up"]),
    ("dbmate", &["up"]),
    ("dbmate", &["migrate"]),
    ("sqlx", &["migrate", "run"]),
    ("psql", &["-f"]),
    ("psql", &["--file"]),
    ("artisan", &["migrate"]),
    ("mix", &["ecto.migrate"]),
    ("diesel", &["migration", "run"]),
    ("atlas", &["migrate", "apply"]),
    ("typeorm", &["migration:run"]),
    ("sql-migrate", &["up"]),
];

/// The words of a container's command line, as a shell would see them (so `sh -c "…"` scripts
/// are read too), each reduced to its base name: `/app/bin/rails` → `rails`. With no command,
/// the image's name stands for its ENTRYPOINT (`flyway/flyway:10` → `flyway`).
fn words(container: &Value) -> Vec<String> {
    let (command, args) = workload::argv(container);
    let mut text = command.join(" ");
    if command.is_empty() {
        let image = workload::str_at(container, &["image"]).unwrap_or("");
        // registry:5000/flyway/flyway:10@sha256:… → flyway
        let image = image.split('@').next().unwrap_or("");
        let name = image.rsplit('/').next().unwrap_or("");
        text.push_str(name.split(':').next().unwrap_or(""));
    }
    text.push(' ');
    text.push_str(&args.join(" "));
    text.split(|c: char| {
        c.is_whitespace() || matches!(c, ';' | '|' | '&' | '"' | '\'' | '(' | ')' | '=' | '`')
    })
    .filter(|w| !w.is_empty())
    // Flags keep their paths: `-f/sql/init.sql` is `psql -f`, not `init.sql`.
    .map(|w| {
        let w = if w.starts_with('-') {
            w
        } else {
            w.rsplit('/').next().unwrap_or(w)
        };
        w.to_ascii_lowercase()
    })
    .collect()
}

/// The tool and verb an init container runs, e.g. `flyway migrate`.
fn migration(container: &Value) -> Option<String> {
    let words = words(container);
    let has = |w: &str| {
        words
            .iter()
            .any(|x| x == w || (w == "-f" && x.starts_with("-f") && x.len() > 2))
    };
    MIGRATION_TOOLS
        .iter()
        .find(|(tool, verbs)| has(tool) && verbs.iter().all(|v| has(v)))
        .map(|(tool, verbs)| format!("{tool} {}", verbs.join(" ")))
}

fn polls_api(container: &Value) -> Option<&'static str> {
    let image = workload::str_at(container, &["image"]).unwrap_or("");
    if image.contains("k8s-wait-for") {
        return Some("the k8s-wait-for image");
    }
    let words = words(container);
    let seq = |a: &str, b: &str| words.windows(2).any(|w| w[0] == a && w[1] == b);
    if seq("kubectl", "wait") {
        return Some("kubectl wait");
    }
    // Only `status` waits: `rollout restart` or `undo` act once and return.
    if words
        .windows(3)
        .any(|w| w[0] == "kubectl" && w[1] == "rollout" && w[2] == "status")
    {
        return Some("kubectl rollout status");
    }
    if words.iter().any(|w| w == "kubectl") && words.iter().any(|w| w == "until" || w == "while") {
        return Some("a kubectl loop");
    }
    if words
        .iter()
        .any(|w| w == "wait_for.sh" || w == "k8s-wait-for")
    {
        return Some("k8s-wait-for");
    }
    None
}

/// `--flag VALUE` or `--flag=VALUE` in an argv.
fn flag_value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--" {
            return None;
        }
        if a == flag {
            return it.next().map(String::as_str);
        }
        if let Some(v) = a.strip_prefix(flag).and_then(|r| r.strip_prefix('=')) {
            return Some(v);
        }
    }
    None
}

const HOOK_ANNOTATIONS: [&str; 2] = ["helm.sh/hook", "argocd.argoproj.io/hook"];

/// The RoleBindings of the input: (namespace or None, service account subjects).
struct Bindings(Vec<(Option<String>, String, Option<String>)>);

impl Bindings {
    fn of(values: &[(usize, usize, Value)]) -> Bindings {
        let mut out = Vec::new();
        for (_, _, v) in values {
            for obj in workload::objects(v) {
                let kind = workload::str_at(obj, &["kind"]);
                if !matches!(kind, Some("RoleBinding" | "ClusterRoleBinding")) {
                    continue;
                }
                let ns = workload::str_at(obj, &["metadata", "namespace"]).map(str::to_string);
                for s in obj
                    .get("subjects")
                    .and_then(Value::as_sequence)
                    .into_iter()
                    .flatten()
                {
                    if workload::str_at(s, &["kind"]) == Some("ServiceAccount")
                        && let Some(name) = workload::str_at(s, &["name"])
                    {
                        let sns = workload::str_at(s, &["namespace"]).map(str::to_string);
                        out.push((ns.clone(), name.to_string(), sns));
                    }
                }
            }
        }
        Bindings(out)
    }

    fn grants(&self, namespace: Option<&str>, account: &str) -> bool {
        self.0.iter().any(|(bns, name, sns)| {
            name == account
                && (namespace.is_none()
                    || sns.as_deref().or(bns.as_deref()).is_none()
                    || sns.as_deref().or(bns.as_deref()) == namespace)
        })
    }
}

/// Lint every document of `input`.
pub fn lint(input: &str) -> Result<Vec<Finding>, YamlError> {
    let mut values = Vec::new();
    for doc in yaml_docs::split(input) {
        values.push((doc.index, doc.line, doc.parse()?));
    }
    let bindings = Bindings::of(&values);
    let mut findings = Vec::new();
    for (document, line, value) in &values {
        for obj in workload::objects(value) {
            let Some(id) = workload::identity(obj) else {
                continue;
            };
            let mut at = At {
                document: *document,
                line: *line,
                id: &id,
                out: &mut findings,
            };
            check_object(&mut at, obj, &bindings);
        }
    }
    Ok(findings)
}

struct At<'a> {
    document: usize,
    line: usize,
    id: &'a Identity,
    out: &'a mut Vec<Finding>,
}

impl At<'_> {
    fn push(&mut self, rule: &'static Rule, container: Option<&str>, message: String) {
        self.out.push(Finding {
            rule,
            document: self.document,
            line: self.line,
            object: self.id.to_string(),
            container: container.map(str::to_string),
            message,
        });
    }
}

fn check_object(at: &mut At<'_>, obj: &Value, bindings: &Bindings) {
    let kind = at.id.kind;
    let Some(spec) = workload::pod_spec(obj, kind) else {
        return;
    };
    let concurrency = workload::concurrency(obj, kind);
    let mut unguarded = false;
    for (_, name, c) in workload::init_containers(spec) {
        let subcommand = workload::initguard_subcommand(c);
        // A native sidecar (restartPolicy: Always) is not a step that runs and ends.
        let sidecar = workload::str_at(c, &["restartPolicy"]) == Some("Always");
        if subcommand.is_none()
            && !sidecar
            && let (Some(tool), Some(why)) = (migration(c), concurrency.as_deref())
        {
            unguarded = true;
            at.push(
                &UNGUARDED_MIGRATION,
                Some(name),
                format!(
                    "runs `{tool}` unguarded, and {} can run several Pods at once ({why})",
                    kind.as_str()
                ),
            );
        }
        if subcommand.is_none()
            && let Some(how) = polls_api(c)
        {
            at.push(
                &API_POLLING_WAIT,
                Some(name),
                format!("polls the API server with {how} from every Pod"),
            );
        }
        if subcommand.as_deref() == Some("run") || subcommand.as_deref() == Some("wait") {
            check_initguard(at, spec, name, c, bindings);
        }
    }
    if unguarded
        && spec
            .get("affinity")
            .and_then(|a| a.get("podAntiAffinity"))
            .is_some()
    {
        at.push(
            &ANTI_AFFINITY_AS_LOCK,
            None,
            "podAntiAffinity does not serialise the unguarded init containers: Pods on \
             different nodes still run them at the same time"
                .into(),
        );
    }
    if kind == Kind::Job {
        check_job(at, obj);
    }
}

fn check_job(at: &mut At<'_>, obj: &Value) {
    for (k, _) in workload::template_annotations(obj, Kind::Job) {
        let lower = k.to_ascii_lowercase();
        if lower.starts_with("checksum/") || lower.contains("rollme") {
            at.push(
                &JOB_TEMPLATE_CHECKSUM,
                None,
                format!("annotation {k} on the Pod template of a Job makes every upgrade that changes it fail: spec.template is immutable"),
            );
        }
    }
    let own = workload::own_annotations(obj);
    if let Some((hook, _)) = own.iter().find(|(k, _)| HOOK_ANNOTATIONS.contains(k))
        && obj
            .get("spec")
            .and_then(|s| s.get("ttlSecondsAfterFinished"))
            .is_some()
    {
        at.push(
            &HOOK_JOB_TTL,
            None,
            format!("hook Job ({hook}) has ttlSecondsAfterFinished: it can be deleted before the tool sees it finish"),
        );
    }
}

fn check_initguard(at: &mut At<'_>, spec: &Value, name: &str, c: &Value, bindings: &Bindings) {
    let (command, args) = workload::argv(c);
    let argv: Vec<String> = command.into_iter().chain(args).collect();
    let env = workload::env_names(c);
    let scope = flag_value(&argv, "--scope")
        .map(str::to_string)
        .or_else(|| workload::env_value(c, "INITGUARD_SCOPE").map(str::to_string))
        .unwrap_or_else(|| "global".into());
    let need = match scope.as_str() {
        "pod" => Some("POD_UID"),
        "node" => Some("NODE_NAME"),
        _ => None,
    };
    if let Some(var) = need
        && !env.contains(&var)
    {
        at.push(
            &MISSING_DOWNWARD_ENV,
            Some(name),
            format!(
                "--scope {scope} needs {var}, which the container does not set; initguard exits 78"
            ),
        );
    }
    let missing: Vec<&str> = ["POD_NAME", "POD_NAMESPACE"]
        .into_iter()
        .filter(|v| !env.contains(v))
        .collect();
    if !missing.is_empty() {
        at.push(
            &MISSING_POD_IDENTITY,
            Some(name),
            format!("sets no {}", missing.join(" or ")),
        );
    }
    let store = flag_value(&argv, "--store")
        .map(str::to_string)
        .or_else(|| workload::env_value(c, "INITGUARD_STORE").map(str::to_string));
    // No store given: in a Pod with a service-account token the default is kubernetes:.
    let on_kube = match &store {
        None => {
            spec.get("automountServiceAccountToken")
                .and_then(Value::as_bool)
                != Some(false)
        }
        Some(s) => s.starts_with("kubernetes:"),
    };
    if !on_kube {
        return;
    }
    let account = workload::service_account(spec).unwrap_or("default");
    if account == "default" {
        at.push(
            &KUBE_STORE_DEFAULT_SA,
            Some(name),
            "uses the kubernetes: store as the default service account".into(),
        );
    } else if !bindings.grants(at.id.namespace.as_deref(), account) {
        at.push(
            &KUBE_STORE_NO_RBAC,
            Some(name),
            format!("uses the kubernetes: store, and no RoleBinding in the input grants service account {account}"),
        );
    }
}

/// Whether any finding is an error (exit 1).
pub fn has_errors(findings: &[Finding]) -> bool {
    findings.iter().any(|f| f.rule.severity == Severity::Error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(yaml: &str) -> Value {
        serde_norway::from_str(yaml).unwrap()
    }

    #[test]
    fn migration_tools_are_recognised_by_command_script_or_image() {
        let cases = [
            (
                "{command: [flyway, -url=x, migrate]}",
                Some("flyway migrate"),
            ),
            (
                "{image: 'flyway/flyway:10', args: [migrate]}",
                Some("flyway migrate"),
            ),
            (
                "{command: [sh, -c, 'set -e; python /app/manage.py migrate --noinput']}",
                Some("manage.py migrate"),
            ),
            (
                "{command: [/usr/bin/psql, '-f/sql/init.sql']}",
                Some("psql -f"),
            ),
            (
                "{command: [npx, prisma, migrate, deploy]}",
                Some("prisma migrate deploy"),
            ),
            (
                "{command: [migrate, -path, /m, -database, x, up]}",
                Some("migrate up"),
            ),
            ("{command: [python, manage.py, collectstatic]}", None),
            ("{command: [flyway, info]}", None),
            ("{command: [./migrate-data-dir.sh]}", None),
        ];
        for (yaml, want) in cases {
            assert_eq!(migration(&container(yaml)).as_deref(), want, "{yaml}");
        }
    }

    /// Every tool of the table, run as `TOOL VERB…`, is found (the README's IG001 row lists them).
    #[test]
    fn every_migration_tool_in_the_table_is_found() {
        for (tool, verbs) in MIGRATION_TOOLS {
            let argv: Vec<&str> = std::iter::once(*tool)
                .chain(verbs.iter().copied())
                .collect();
            let yaml = format!("{{command: {argv:?}}}");
            assert_eq!(migration(&container(&yaml)), Some(argv.join(" ")), "{yaml}");
        }
    }

    #[test]
    fn only_waiting_kubectl_commands_are_api_polling() {
        let cases = [
            ("{command: [kubectl, rollout, status, deploy/db]}", true),
            (
                "{command: [kubectl, wait, --for=condition=ready, pod/db]}",
                true,
            ),
            (
                "{command: [sh, -c, 'until kubectl get svc db; do sleep 1; done']}",
                true,
            ),
            (
                "{image: 'groundnuty/k8s-wait-for:v2', args: [job, migrate]}",
                true,
            ),
            ("{command: [kubectl, rollout, restart, deploy/web]}", false),
            ("{command: [kubectl, apply, -f, /m.yaml]}", false),
        ];
        for (yaml, polls) in cases {
            assert_eq!(polls_api(&container(yaml)).is_some(), polls, "{yaml}");
        }
    }

    fn rules_of(yaml: &str) -> Vec<&'static str> {
        lint(yaml).unwrap().iter().map(|f| f.rule.id).collect()
    }

    /// IG002 is about anti-affinity standing in for a lock: beside a guarded migration it says
    /// nothing; beside an unguarded one it speaks.
    #[test]
    fn anti_affinity_beside_a_guarded_migration_is_fine() {
        let sts = |init: &str| {
            format!(
                "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {{name: kc, namespace: auth}}\n\
                 spec:\n  replicas: 3\n  template:\n    spec:\n      affinity:\n        \
                 podAntiAffinity:\n          requiredDuringSchedulingIgnoredDuringExecution:\n          \
                 - topologyKey: kubernetes.io/hostname\n      initContainers:\n      - {init}\n      \
                 containers: [{{name: kc, image: kc}}]\n"
            )
        };
        let unguarded = sts("{name: schema, image: i, command: [liquibase, update]}");
        assert!(rules_of(&unguarded).contains(&"IG002"));
        let guarded = sts(
            "{name: schema, image: i, command: [initguard, run, --key, auth/kc, --, liquibase, update], \
             env: [{name: POD_NAME, value: x}, {name: POD_NAMESPACE, value: y}]}",
        );
        let found = rules_of(&guarded);
        assert!(
            !found.contains(&"IG002") && !found.contains(&"IG001"),
            "{found:?}"
        );
    }

    /// IG005: `--scope pod` with `POD_UID` (flag or INITGUARD_SCOPE) is fine; without, it is not.
    #[test]
    fn pod_scope_needs_pod_uid_and_has_it() {
        let pod = |env: &str| {
            format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: p, namespace: n}}\nspec:\n  \
                 initContainers:\n  - {{name: w, image: i, command: [initguard, run, --key, n/w, \
                 --scope, pod, --, ./w.sh], env: [{env}]}}\n  containers: [{{name: c, image: i}}]\n"
            )
        };
        let ids = "{name: POD_NAME, value: x}, {name: POD_NAMESPACE, value: y}";
        assert!(rules_of(&pod(ids)).contains(&"IG005"));
        let with_uid = pod(&format!(
            "{ids}, {{name: POD_UID, valueFrom: {{fieldRef: {{fieldPath: metadata.uid}}}}}}"
        ));
        assert!(
            !rules_of(&with_uid).contains(&"IG005"),
            "{:?}",
            rules_of(&with_uid)
        );
    }

    #[test]
    fn flags_are_read_in_both_spellings_and_never_past_the_double_dash() {
        let argv: Vec<String> = [
            "run",
            "--scope=pod",
            "--store",
            "file:/s",
            "--",
            "x",
            "--scope",
            "node",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(flag_value(&argv, "--scope"), Some("pod"));
        assert_eq!(flag_value(&argv, "--store"), Some("file:/s"));
        assert_eq!(flag_value(&argv[4..], "--scope"), None);
    }

    #[test]
    fn every_rule_id_is_unique_and_in_order() {
        let ids: Vec<_> = RULES.iter().map(|r| r.id).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(ids, sorted);
    }
}
