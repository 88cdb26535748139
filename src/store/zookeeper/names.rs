//! How tasks map onto znode paths. Pure functions; must never change an existing mapping (a
//! renamed node would orphan every record already stored).
//!
//! Every task is one node directly under the base (`<chroot><prefix>`), named by its storage name
//! (`TaskId::storage_name`) percent-escaped: letters, digits and `-_.@=` stay, every other byte
//! (the key's `/` above all, `%` itself) becomes `%XX`. Decoding is plain percent-decoding, so the
//! mapping is one to one: no two tasks share a node, and `list` recovers each task from its name.
//! A name that ZooKeeper would refuse or treat specially (`.`, `..`, `zookeeper`) gets its first
//! byte escaped too.
//!
//! ```text
//! <base>/<escaped task>           persistent: {"task": …, "token": N} (the last token handed out)
//! <base>/<escaped task>/record    persistent: the record (JSON, schema-versioned)
//! <base>/<escaped task>/locks/    persistent: the lock queue
//!     <nonce>-lock-<sequence>     ephemeral sequential, one per contender; the lowest holds
//! ```

use crate::task::TaskId;

pub(crate) const RECORD: &str = "record";
pub(crate) const LOCKS: &str = "locks";
/// Between a contender's nonce and the sequence number ZooKeeper appends.
pub(crate) const LOCK_INFIX: &str = "-lock-";

/// The node name of a task (one path component).
pub fn node_name(id: &TaskId) -> String {
    escape(&id.storage_name())
}

/// The task a node name stands for; `None` for names initguard did not make.
pub fn task_of(name: &str) -> Option<TaskId> {
    TaskId::from_storage_name(&unescape(name)?)
}

fn keeps(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@' | b'=')
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if keeps(b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if matches!(out.as_str(), "" | "." | ".." | "zookeeper") {
        let first = out.as_bytes().first().copied().unwrap_or(b'.');
        out = format!("%{first:02X}{}", out.get(1..).unwrap_or_default());
    }
    out
}

fn unescape(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The sequence number ZooKeeper appended to a lock node's name.
pub(crate) fn sequence(lock_node: &str) -> Option<i64> {
    let (_, seq) = lock_node.rsplit_once(LOCK_INFIX)?;
    seq.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::Scope;
    use crate::task::fixtures::{global as id, scoped};

    /// Pins the node name of each task. If this fails, an upgrade would look for every task under
    /// a new node: records orphaned, every task re-run. Never paste new values in.
    #[test]
    fn node_names_are_pinned() {
        let cases = [
            (id("myapp/migrate"), "myapp%2Fmigrate"),
            (id("a.b"), "a.b"),
            (id("a-b_c"), "a-b_c"),
            (id("A/B_C.D"), "A%2FB_C.D"),
            (id("zookeeper"), "%7Aookeeper"),
            (
                scoped("app/init", Scope::Pod, "0b7e-11"),
                "app%2Finit@pod=0b7e-11",
            ),
            (
                scoped("ds/setup", Scope::Node, "ip-10-0-1-23.ec2.internal"),
                "ds%2Fsetup@node=ip-10-0-1-23.ec2.internal",
            ),
            (scoped("k", Scope::Node, "a/b%c d"), "k@node=a%2Fb%25c%20d"),
        ];
        for (task, want) in cases {
            assert_eq!(node_name(&task), want, "{}", task.storage_name());
            assert_eq!(task_of(want), Some(task), "{want}");
        }
    }

    /// Keys that other stores' name schemes could confuse (`/` against `.`, `-`, `_`, case,
    /// escapes that look like escapes) map to distinct nodes and back to themselves.
    #[test]
    fn keys_map_to_nodes_without_collisions() {
        let tasks = [
            id("a/b"),
            id("a.b"),
            id("a-b"),
            id("a_b"),
            id("A/b"),
            id("a/b/c"),
            id("a/b.c"),
            id("a%2Fb".replace('%', "-").as_str()),
            scoped("a", Scope::Pod, "b"),
            scoped("a", Scope::Node, "b"),
            scoped("a", Scope::Node, "b%2F"),
            scoped("a", Scope::Node, "b/"),
        ];
        let names: Vec<String> = tasks.iter().map(node_name).collect();
        for (i, a) in names.iter().enumerate() {
            assert!(!a.contains('/'), "one path component: {a}");
            for b in &names[i + 1..] {
                assert_ne!(a, b);
            }
            assert_eq!(task_of(a).as_ref(), Some(&tasks[i]));
        }
    }

    #[test]
    fn foreign_names_are_not_tasks() {
        assert_eq!(task_of("%zz"), None);
        assert_eq!(task_of("%FF"), None);
        assert_eq!(sequence("0a1b-lock-0000000042"), Some(42));
        assert_eq!(sequence("junk"), None);
    }
}
