//! How tasks map onto etcd keys: `<prefix><escaped storage name>/lock` and `…/record`. Pure
//! functions; must never change an existing mapping (records would be orphaned and every task
//! re-run on upgrade).
//!
//! The storage name is escaped so that it holds no `/`: every byte outside `[A-Za-z0-9._-]`
//! becomes `%XX` (upper-case hex, `%` itself included). The escape is injective, so two tasks
//! never share a directory, and a task's directory `<prefix><escaped>/` is never a prefix of
//! another task's (an escaped name has no `/` to continue with), so one range read over it sees
//! exactly that task's keys.

use crate::task::TaskId;

const LOCK: &str = "lock";
const RECORD: &str = "record";

fn escape(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Inverse of `escape`; `None` for text `escape` never makes.
fn unescape(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                if hex.chars().any(|c| c.is_ascii_lowercase()) {
                    return None;
                }
                let b = u8::from_str_radix(hex, 16).ok()?;
                if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
                    return None;
                }
                out.push(b);
                i += 3;
            }
            b if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') => {
                out.push(b);
                i += 1;
            }
            _ => return None,
        }
    }
    String::from_utf8(out).ok()
}

/// `<prefix><escaped storage name>/`: the task's keys, and nothing else, start with it.
pub fn task_dir(prefix: &str, id: &TaskId) -> String {
    format!("{prefix}{}/", escape(&id.storage_name()))
}

/// The key bound to the holder's etcd lease; its create revision is the fencing token.
pub fn lock_key(prefix: &str, id: &TaskId) -> String {
    format!("{}{LOCK}", task_dir(prefix, id))
}

/// The key holding the record document (JSON, the same in every store).
pub fn record_key(prefix: &str, id: &TaskId) -> String {
    format!("{}{RECORD}", task_dir(prefix, id))
}

/// The task whose record `key` is, when `key` is a record key under `prefix`; `None` for any
/// other key (a lock, a key of a nested prefix, a key someone else put there).
pub(crate) fn task_of_record_key(prefix: &str, key: &[u8]) -> Option<TaskId> {
    let key = std::str::from_utf8(key).ok()?;
    let escaped = key.strip_prefix(prefix)?.strip_suffix(RECORD)?;
    let escaped = escaped.strip_suffix('/')?;
    TaskId::from_storage_name(&unescape(escaped)?)
}

/// The task whose lock or record `key` is, under `prefix` (for tools and tests that look at
/// what the store keeps).
pub fn task_of_key(prefix: &str, key: &str) -> Option<TaskId> {
    let rest = key.strip_prefix(prefix)?;
    let (escaped, leaf) = rest.split_once('/')?;
    if leaf != LOCK && leaf != RECORD {
        return None;
    }
    TaskId::from_storage_name(&unescape(escaped)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::Scope;
    use crate::task::fixtures::{global as id, scoped};

    /// Pins the keys of each task. If this fails, an upgrade would look for every record under a
    /// new key. Never paste new values in.
    #[test]
    fn keys_are_pinned() {
        let p = "/initguard/";
        assert_eq!(
            record_key(p, &id("myapp/migrate")),
            "/initguard/myapp%2Fmigrate/record"
        );
        assert_eq!(
            lock_key(p, &id("A-b_c.d/e-1")),
            "/initguard/A-b_c.d%2Fe-1/lock"
        );
        assert_eq!(
            record_key(p, &scoped("app/init", Scope::Pod, "5f1c-2d")),
            "/initguard/app%2Finit%40pod%3D5f1c-2d/record"
        );
        assert_eq!(
            record_key("/x/", &scoped("k", Scope::Node, "a%b/c d")),
            "/x/k%40node%3Da%25b%2Fc%20d/record"
        );
    }

    #[test]
    fn names_that_look_alike_get_their_own_directory() {
        let ids = [
            id("a/b"),
            id("a-b"),
            id("a.b"),
            id("a_b"),
            id("a"),
            id("a/b/c"),
            scoped("a", Scope::Pod, "/"),
            scoped("a", Scope::Pod, "%2F"),
            scoped("a", Scope::Pod, "b"),
            scoped("a", Scope::Node, "b"),
            scoped("a", Scope::Pod, "b/lock"),
        ];
        for (i, a) in ids.iter().enumerate() {
            for b in &ids[i + 1..] {
                let (da, db) = (task_dir("/p/", a), task_dir("/p/", b));
                assert_ne!(da, db);
                assert!(!da.starts_with(&db) && !db.starts_with(&da), "{da} {db}");
            }
        }
    }

    #[test]
    fn record_keys_lead_back_to_their_task_and_nothing_else_does() {
        for t in [
            id("myapp/migrate"),
            scoped("app/init", Scope::Pod, "x@y=z/%"),
            scoped("ds", Scope::Node, "ip-10-0-1-23.ec2.internal"),
        ] {
            let k = record_key("/initguard/", &t);
            assert_eq!(
                task_of_record_key("/initguard/", k.as_bytes()),
                Some(t.clone())
            );
            let lock = lock_key("/initguard/", &t);
            assert_eq!(task_of_record_key("/initguard/", lock.as_bytes()), None);
        }
        for other in [
            "/initguard/nested/a/record",
            "/initguard/a%2fb/record",
            "/initguard/a%41/record",
            "/initguard/record",
            "/other/a/record",
        ] {
            assert_eq!(
                task_of_record_key("/initguard/", other.as_bytes()),
                None,
                "{other}"
            );
        }
    }
}
