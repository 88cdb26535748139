//! `initguard k8s rbac`: the least-privilege ServiceAccount, Role and RoleBinding the
//! `kubernetes:` store needs, built from k8s-openapi types and printed as YAML. Pure: must never
//! talk to a cluster, and must never grant more than `store::kubernetes::PERMISSIONS`.

use crate::store::kubernetes::PERMISSIONS;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::collections::BTreeMap;

/// Name of the Role (one per namespace: the rules do not depend on the service account).
pub const ROLE: &str = "initguard";
pub const DEFAULT_SERVICE_ACCOUNT: &str = "initguard";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RbacError {
    #[error("{what} {value:?} is not a valid Kubernetes name: {why}")]
    InvalidName {
        what: &'static str,
        value: String,
        why: &'static str,
    },
    #[error("cannot render the RBAC manifests as YAML: {0}")]
    Yaml(String),
}

/// The three objects, ready to apply.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifests {
    pub service_account: ServiceAccount,
    pub role: Role,
    pub role_binding: RoleBinding,
}

fn dns1123_label(what: &'static str, value: &str) -> Result<(), RbacError> {
    let bad = |why| RbacError::InvalidName {
        what,
        value: value.to_string(),
        why,
    };
    if value.is_empty() || value.len() > 63 {
        return Err(bad("it must be 1 to 63 characters long"));
    }
    if !value
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err(bad("only a-z, 0-9 and '-' are allowed"));
    }
    if value.starts_with('-') || value.ends_with('-') {
        return Err(bad("it must start and end with a letter or digit"));
    }
    Ok(())
}

fn meta(name: &str, namespace: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(namespace.to_string()),
        labels: Some(BTreeMap::from([(
            "app.kubernetes.io/name".to_string(),
            "initguard".to_string(),
        )])),
        ..ObjectMeta::default()
    }
}

/// ServiceAccount `service_account`, Role `initguard` with exactly the store's permissions, and
/// the RoleBinding between them, all in `namespace`.
pub fn manifests(namespace: &str, service_account: &str) -> Result<Manifests, RbacError> {
    dns1123_label("namespace", namespace)?;
    // Service account names may be DNS subdomains; labels are the common, safe subset.
    dns1123_label("service account", service_account)?;
    let rules = PERMISSIONS
        .iter()
        .map(|(group, resource, verbs)| PolicyRule {
            api_groups: Some(vec![group.to_string()]),
            resources: Some(vec![resource.to_string()]),
            verbs: verbs.iter().map(|v| v.to_string()).collect(),
            ..PolicyRule::default()
        })
        .collect();
    Ok(Manifests {
        service_account: ServiceAccount {
            metadata: meta(service_account, namespace),
            ..ServiceAccount::default()
        },
        role: Role {
            metadata: meta(ROLE, namespace),
            rules: Some(rules),
        },
        role_binding: RoleBinding {
            metadata: meta(&format!("{ROLE}-{service_account}"), namespace),
            role_ref: RoleRef {
                api_group: Some("rbac.authorization.k8s.io".into()),
                kind: "Role".into(),
                name: ROLE.into(),
            },
            subjects: Some(vec![Subject {
                kind: "ServiceAccount".into(),
                name: service_account.into(),
                namespace: Some(namespace.into()),
                ..Subject::default()
            }]),
        },
    })
}

/// The manifests as one multi-document YAML stream for `kubectl apply -f -`.
pub fn render(namespace: &str, service_account: &str) -> Result<String, RbacError> {
    let m = manifests(namespace, service_account)?;
    let yaml = |r: Result<String, serde_yaml::Error>| r.map_err(|e| RbacError::Yaml(e.to_string()));
    let mut out = format!(
        "# RBAC for initguard's kubernetes: store: Leases (the lock and record of each task) and\n\
         # Events (on the Pod) in namespace {namespace}, for service account {service_account}.\n\
         # Apply with: initguard k8s rbac --namespace {namespace} --service-account \
         {service_account} | kubectl apply -f -\n"
    );
    for doc in [
        yaml(serde_yaml::to_string(&m.service_account))?,
        yaml(serde_yaml::to_string(&m.role))?,
        yaml(serde_yaml::to_string(&m.role_binding))?,
    ] {
        out.push_str("---\n");
        out.push_str(&doc);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use std::collections::BTreeSet;

    fn docs(yaml: &str) -> (ServiceAccount, Role, RoleBinding) {
        let mut it = serde_yaml::Deserializer::from_str(yaml);
        let sa = ServiceAccount::deserialize(it.next().unwrap()).unwrap();
        let role = Role::deserialize(it.next().unwrap()).unwrap();
        let rb = RoleBinding::deserialize(it.next().unwrap()).unwrap();
        assert!(it.next().is_none(), "exactly three documents");
        (sa, role, rb)
    }

    #[test]
    fn output_parses_back_into_the_k8s_types() {
        let yaml = render("shop", "checkout").unwrap();
        let (sa, role, rb) = docs(&yaml);
        assert_eq!(sa.metadata.name.as_deref(), Some("checkout"));
        assert_eq!(sa.metadata.namespace.as_deref(), Some("shop"));
        assert_eq!(role.metadata.namespace.as_deref(), Some("shop"));
        assert_eq!(rb.role_ref.kind, "Role");
        assert_eq!(rb.role_ref.name, role.metadata.name.clone().unwrap());
        let subjects = rb.subjects.unwrap();
        assert_eq!(subjects.len(), 1);
        assert_eq!(subjects[0].kind, "ServiceAccount");
        assert_eq!(subjects[0].name, "checkout");
        assert_eq!(subjects[0].namespace.as_deref(), Some("shop"));
        assert!(
            yaml.contains("kind: Role\n")
                && yaml.contains("apiVersion: rbac.authorization.k8s.io/v1")
        );
    }

    #[test]
    fn grants_exactly_what_the_store_uses_and_nothing_more() {
        let (_, role, _) = docs(&render("default", DEFAULT_SERVICE_ACCOUNT).unwrap());
        let mut granted = BTreeSet::new();
        for rule in role.rules.unwrap() {
            assert!(rule.resource_names.is_none() && rule.non_resource_urls.is_none());
            for g in rule.api_groups.unwrap() {
                for r in rule.resources.as_ref().unwrap() {
                    for v in &rule.verbs {
                        assert!(!g.contains('*') && !r.contains('*') && !v.contains('*'));
                        granted.insert((g.clone(), r.clone(), v.clone()));
                    }
                }
            }
        }
        let expected: BTreeSet<_> = [
            ("coordination.k8s.io", "leases", "get"),
            ("coordination.k8s.io", "leases", "list"),
            ("coordination.k8s.io", "leases", "create"),
            ("coordination.k8s.io", "leases", "update"),
            ("coordination.k8s.io", "leases", "watch"),
            ("events.k8s.io", "events", "create"),
        ]
        .into_iter()
        .map(|(g, r, v)| (g.to_string(), r.to_string(), v.to_string()))
        .collect();
        assert_eq!(granted, expected);
    }

    /// What users apply to their clusters: any change shows up here as a diff in review.
    #[test]
    fn output_is_pinned() {
        let expected = "\
# RBAC for initguard's kubernetes: store: Leases (the lock and record of each task) and
# Events (on the Pod) in namespace shop, for service account checkout.
# Apply with: initguard k8s rbac --namespace shop --service-account checkout | kubectl apply -f -
---
apiVersion: v1
kind: ServiceAccount
metadata:
  labels:
    app.kubernetes.io/name: initguard
  name: checkout
  namespace: shop
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  labels:
    app.kubernetes.io/name: initguard
  name: initguard
  namespace: shop
rules:
- apiGroups:
  - coordination.k8s.io
  resources:
  - leases
  verbs:
  - get
  - list
  - create
  - update
  - watch
- apiGroups:
  - events.k8s.io
  resources:
  - events
  verbs:
  - create
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  labels:
    app.kubernetes.io/name: initguard
  name: initguard-checkout
  namespace: shop
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: initguard
subjects:
- kind: ServiceAccount
  name: checkout
  namespace: shop
";
        assert_eq!(render("shop", "checkout").unwrap(), expected);
    }

    #[test]
    fn bad_names_are_refused() {
        assert!(matches!(
            render("Shop", "x"),
            Err(RbacError::InvalidName {
                what: "namespace",
                ..
            })
        ));
        assert!(matches!(
            render("shop", "my_sa"),
            Err(RbacError::InvalidName {
                what: "service account",
                ..
            })
        ));
    }
}
