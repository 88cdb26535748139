//! How tasks map onto Kubernetes object names, labels and annotations. Pure functions; must never
//! change an existing mapping (a renamed Lease would orphan every record already stored).

use crate::task::TaskId;
use sha2::{Digest, Sha256};

/// Label every initguard Lease carries: `kubectl get leases -l app.kubernetes.io/managed-by=initguard`.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "initguard";
/// The task's storage name (key, plus scope instance), in full: Lease names are lossy.
pub(crate) const ANNOTATION_TASK: &str = "initguard.io/task";
/// The record document (compact JSON, schema-versioned like every store's).
pub(crate) const ANNOTATION_RECORD: &str = "initguard.io/record";
/// Who holds the lease, as a `Holder` JSON (Pod, node, host, pid): `holderIdentity` is one token.
pub(crate) const ANNOTATION_HOLDER: &str = "initguard.io/holder";

/// Object names are at most 63 characters here, so they also fit places that need DNS labels.
const MAX_NAME: usize = 63;
const PREFIX: &str = "initguard-";
/// 10 hex digits (40 bits) of SHA-256 keep distinct keys with the same slug apart.
const HASH_HEX: usize = 10;

/// `initguard-<dns1123 form of the task>-<short hash>`, at most 63 characters.
/// The hash is over the full storage name, so keys that slug alike (`a/b`, `a.b`, `A-b`) differ.
pub fn lease_name(id: &TaskId) -> String {
    let storage = id.storage_name();
    let digest = hex::encode(Sha256::digest(storage.as_bytes()));
    let hash = &digest[..HASH_HEX];
    let room = MAX_NAME - PREFIX.len() - 1 - HASH_HEX;
    let mut slug = String::with_capacity(storage.len());
    for c in storage.chars() {
        let c = c.to_ascii_lowercase();
        let c = if c.is_ascii_lowercase() || c.is_ascii_digit() {
            c
        } else {
            '-'
        };
        // Runs of separators collapse: DNS-1123 allows them, but they read badly in kubectl.
        if c == '-' && (slug.is_empty() || slug.ends_with('-')) {
            continue;
        }
        slug.push(c);
    }
    slug.truncate(room);
    let slug = slug.trim_end_matches('-');
    if slug.is_empty() {
        format!("{PREFIX}{hash}")
    } else {
        format!("{PREFIX}{slug}-{hash}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::Scope;
    use crate::task::fixtures::{global as id, scoped};

    fn dns1123_label(s: &str) -> bool {
        !s.is_empty()
            && s.len() <= 63
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !s.starts_with('-')
            && !s.ends_with('-')
    }

    /// Stability is `lease_names_are_pinned`'s job (comparing a call with itself proved nothing).
    #[test]
    fn names_are_readable() {
        let name = lease_name(&id("myapp/migrate"));
        assert!(name.starts_with("initguard-myapp-migrate-"), "{name}");
        assert!(dns1123_label(&name));
    }

    #[test]
    fn long_and_odd_keys_still_make_valid_names() {
        for key in [
            "x".repeat(200),
            "A/B_C.D".to_string(),
            "---".to_string(),
            "_/_".to_string(),
            "a-/-b".to_string(),
        ] {
            let name = lease_name(&id(&key));
            assert!(dns1123_label(&name), "{key} -> {name}");
        }
    }

    #[test]
    fn keys_that_slug_alike_get_different_names() {
        let names = ["a/b", "a.b", "a-b", "A/b", "a_b"].map(|k| lease_name(&id(k)));
        for (i, a) in names.iter().enumerate() {
            for b in &names[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }

    /// Pins the Lease name of each task. If this fails, an upgrade would look for every task's
    /// Lease under a new name: records orphaned, every task re-run, old Leases left behind.
    /// Never paste new values in; a new derivation needs a migration from the old names.
    #[test]
    fn lease_names_are_pinned() {
        let long_key = format!("team/{}", "x".repeat(195));
        // The slug is cut right after a separator, which must then be trimmed.
        let cut_at_separator = format!("{}/tail", "a".repeat(41));
        let cases = [
            (id("myapp/migrate"), "initguard-myapp-migrate-a0e0ec7147"),
            (id("a"), "initguard-a-ca978112ca"),
            (id("A/B_C.D"), "initguard-a-b-c-d-af35aaef10"),
            (id("a.b"), "initguard-a-b-2e7336dc8e"),
            (id("---"), "initguard-cb3f91d54e"),
            (id("_/_"), "initguard-36164c170d"),
            (id("a-/-b"), "initguard-a-b-fbf26ae779"),
            (id("0/9"), "initguard-0-9-83a3bc0957"),
            (
                id(&"x".repeat(200)),
                "initguard-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx-aa20c23e32",
            ),
            (
                id(&long_key),
                "initguard-team-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx-6c61703052",
            ),
            (
                id(&cut_at_separator),
                "initguard-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-4438c0fa09",
            ),
            (
                id("Payments.Service/DB_Migrate-v2"),
                "initguard-payments-service-db-migrate-v2-260a0ae58f",
            ),
            (
                scoped("app/init", Scope::Pod, "0b7e-11"),
                "initguard-app-init-pod-0b7e-11-6d394c2c0b",
            ),
            (
                scoped(
                    "app/init",
                    Scope::Pod,
                    "5f1c2d3e-aaaa-bbbb-cccc-0123456789ab",
                ),
                "initguard-app-init-pod-5f1c2d3e-aaaa-bbbb-cccc-01234-4c1cba2a7c",
            ),
            (
                scoped("app/init", Scope::Node, "ip-10-0-1-23.ec2.internal"),
                "initguard-app-init-node-ip-10-0-1-23-ec2-internal-99c00cca52",
            ),
            (
                scoped("ds/setup", Scope::Node, &"n".repeat(128)),
                "initguard-ds-setup-node-nnnnnnnnnnnnnnnnnnnnnnnnnnnn-3c231647a7",
            ),
            (
                scoped("k", Scope::Node, "Node_A.1"),
                "initguard-k-node-node-a-1-9ca62f12dc",
            ),
        ];
        let got: Vec<(String, String)> = cases
            .iter()
            .map(|(t, _)| (t.storage_name(), lease_name(t)))
            .collect();
        let want: Vec<(String, String)> = cases
            .iter()
            .map(|(t, n)| (t.storage_name(), n.to_string()))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn scope_instances_get_their_own_lease() {
        let pod = scoped("app/init", Scope::Pod, "0b7e-11");
        let name = lease_name(&pod);
        assert_ne!(name, lease_name(&id("app/init")));
        assert!(dns1123_label(&name), "{name}");
    }
}
