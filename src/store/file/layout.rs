//! Names of a task's files in a `file:` state directory. Pure: no I/O.
//!
//! Every task lives flat in the state directory, so no key can turn into a directory that another
//! key's file needs (`x.json/y` beside `x`), and no walk through planted subdirectories is ever
//! needed. Names stay readable where they fit and are bounded by NAME_MAX where they do not:
//!
//! - `KEY.json` / `KEY.lock` for global scope, `KEY@pod=UID.json` for a scope instance, with each
//!   `/` of the key written `+` (`+` never occurs in keys, so the mapping is one to one);
//! - an instance that would make the name longer than NAME_MAX is replaced by `~` and 32 hex
//!   digits of its SHA-256 (`~` never occurs in a sanitized instance, so hashed names cannot
//!   collide with readable ones);
//! - our temp files start with `+tmp.`; no key starts with `/`, so no task name starts with `+`.

use crate::task::{Key, Scope, TaskId};
use sha2::{Digest, Sha256};

pub(crate) const RECORD_EXT: &str = ".json";
pub(crate) const LOCK_EXT: &str = ".lock";
/// Longest file name most Linux file systems take (NAME_MAX).
const NAME_MAX: usize = 255;
/// Longest stem: room for `.json` / `.lock`.
const MAX_STEM: usize = NAME_MAX - RECORD_EXT.len();
const TEMP_PREFIX: &str = "+tmp.";
/// Marks an instance replaced by its hash.
const HASHED: char = '~';

/// The part of a task's file names before the extension.
pub(crate) fn stem(id: &TaskId) -> String {
    let key = id.key.as_str().replace('/', "+");
    let Some(inst) = &id.instance else {
        return key;
    };
    let readable = format!("{key}@{}={inst}", id.scope);
    if readable.len() <= MAX_STEM || inst.starts_with(HASHED) {
        return readable;
    }
    let digest = hex::encode(Sha256::digest(inst.as_bytes()));
    format!("{key}@{}={HASHED}{}", id.scope, &digest[..32])
}

pub(crate) fn record_name(id: &TaskId) -> String {
    format!("{}{RECORD_EXT}", stem(id))
}

pub(crate) fn lock_name(id: &TaskId) -> String {
    format!("{}{LOCK_EXT}", stem(id))
}

/// The task a record file name stands for, when it is one of ours. A hashed instance comes back
/// as `~HASH`: `stem` maps it to the same file, so `reset` can still repair an unreadable record
/// whose instance only its (unreadable) content knew.
pub(crate) fn id_from_record_name(name: &str) -> Option<TaskId> {
    let stem = name.strip_suffix(RECORD_EXT)?;
    if stem.starts_with('+') {
        return None;
    }
    let (key, rest) = match stem.split_once('@') {
        None => (stem, None),
        Some((k, r)) => (k, Some(r)),
    };
    let key = Key::parse(&key.replace('+', "/")).ok()?;
    let Some(rest) = rest else {
        return Some(TaskId::global(key));
    };
    let (scope, inst) = rest.split_once('=')?;
    let scope = Scope::parse(scope).filter(|s| *s != Scope::Global)?;
    let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    let hashed = inst
        .strip_prefix(HASHED)
        .is_some_and(|h| h.len() == 32 && h.chars().all(|c| c.is_ascii_hexdigit()));
    if inst.is_empty() || !(hashed || inst.chars().all(valid)) {
        return None;
    }
    Some(TaskId {
        key,
        scope,
        instance: Some(inst.to_string()),
    })
}

/// A fresh, unpredictable temp file name: a planted file or symlink cannot be guessed in advance,
/// and the file is created exclusively anyway.
pub(crate) fn temp_name() -> String {
    format!("{TEMP_PREFIX}{:032x}", rand::random::<u128>())
}

/// Whether `name` is a temp file initguard writes, by this layout or by the previous one
/// (`.NAME.json.tmp.PID`), so that stale ones can be removed and nothing else is.
pub(crate) fn is_temp_name(name: &str) -> bool {
    if let Some(hex) = name.strip_prefix(TEMP_PREFIX) {
        return hex.len() == 32 && hex.chars().all(|c| c.is_ascii_hexdigit());
    }
    name.strip_prefix('.')
        .and_then(|rest| rest.rsplit_once(".json.tmp."))
        .is_some_and(|(stem, pid)| {
            !stem.is_empty() && !pid.is_empty() && pid.chars().all(|c| c.is_ascii_digit())
        })
}

/// Where the previous layout kept a task's record: one directory per key segment, then
/// `LAST.json` or `LAST@SCOPE=INST.json`. Read (never written) so that tasks recorded before the
/// upgrade still skip.
pub(crate) fn legacy_record_path(id: &TaskId) -> (Vec<String>, String) {
    let mut dirs: Vec<String> = id.key.as_str().split('/').map(str::to_string).collect();
    let last = dirs.pop().unwrap_or_default();
    let file = match &id.instance {
        None => format!("{last}{RECORD_EXT}"),
        Some(inst) => format!("{last}@{}={inst}{RECORD_EXT}", id.scope),
    };
    (dirs, file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id(key: &str, scope: Scope, inst: Option<&str>) -> TaskId {
        TaskId {
            key: Key::parse(key).unwrap(),
            scope,
            instance: inst.map(str::to_string),
        }
    }

    #[test]
    fn names_are_readable_where_they_fit() {
        assert_eq!(
            record_name(&id("app/migrate", Scope::Global, None)),
            "app+migrate.json"
        );
        assert_eq!(
            lock_name(&id("app/init", Scope::Pod, Some("1234-abcd"))),
            "app+init@pod=1234-abcd.lock"
        );
    }

    /// Pins the file names of each task in a state directory. If this fails, an upgrade would
    /// look for every record and lock under a new name: every task re-runs, and two versions in
    /// one rollout would lock different files. Never paste new values in.
    #[test]
    fn file_names_are_pinned() {
        let k200 = "k".repeat(200);
        let fits = MAX_STEM - k200.len() - "@pod=".len();
        let cases = [
            (
                id("app/migrate", Scope::Global, None),
                "app+migrate".to_string(),
            ),
            (id("a", Scope::Global, None), "a".into()),
            (
                id("A-b_c.d/e-1/f", Scope::Global, None),
                "A-b_c.d+e-1+f".into(),
            ),
            (id("x.json/y", Scope::Global, None), "x.json+y".into()),
            (id(&"x".repeat(200), Scope::Global, None), "x".repeat(200)),
            (
                id("app/init", Scope::Pod, Some("1234-abcd")),
                "app+init@pod=1234-abcd".into(),
            ),
            (
                id("ds/setup", Scope::Node, Some("ip-10-0-1-23.ec2.internal")),
                "ds+setup@node=ip-10-0-1-23.ec2.internal".into(),
            ),
            // Exactly MAX_STEM long: still readable.
            (
                id(&k200, Scope::Pod, Some(&"u".repeat(fits))),
                format!("{k200}@pod={}", "u".repeat(fits)),
            ),
            // One longer: the instance is replaced by 32 hex digits of its SHA-256.
            (
                id(&k200, Scope::Pod, Some(&"u".repeat(fits + 1))),
                format!("{k200}@pod=~155f46a29df00cf4cd6737401c97f214"),
            ),
            (
                id(&k200, Scope::Node, Some(&"n".repeat(128))),
                format!("{k200}@node=~dd2411b970d6f3272b9824bdc649c6d7"),
            ),
        ];
        for (t, want) in cases {
            assert_eq!(record_name(&t), format!("{want}.json"), "{t:?}");
            assert_eq!(lock_name(&t), format!("{want}.lock"), "{t:?}");
        }
    }

    /// The previous layout is only read, so that records written before the upgrade still skip:
    /// where it looks must not drift either.
    #[test]
    fn legacy_record_paths_are_pinned() {
        let dirs = |d: &[&str]| d.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            legacy_record_path(&id("app/db/migrate", Scope::Global, None)),
            (dirs(&["app", "db"]), "migrate.json".to_string())
        );
        assert_eq!(
            legacy_record_path(&id("k", Scope::Pod, Some("1234-abcd"))),
            (dirs(&[]), "k@pod=1234-abcd.json".to_string())
        );
    }

    #[test]
    fn a_key_and_a_longer_key_through_it_do_not_collide() {
        let a = record_name(&id("x", Scope::Global, None));
        let b = record_name(&id("x.json/y", Scope::Global, None));
        assert_ne!(a, b);
        assert!(!b.starts_with(&format!("{a}/")));
    }

    #[test]
    fn long_instances_are_hashed_and_still_found_by_name() {
        let long = id(&"k".repeat(200), Scope::Node, Some(&"n".repeat(128)));
        let name = record_name(&long);
        assert!(name.len() <= NAME_MAX, "{}", name.len());
        assert!(name.starts_with(&"k".repeat(200)));
        let back = id_from_record_name(&name).unwrap();
        assert_eq!(back.key, long.key);
        assert_eq!(
            record_name(&back),
            name,
            "the hashed id names the same file"
        );
    }

    #[test]
    fn temp_names_are_recognised_and_records_are_not() {
        assert!(is_temp_name(&temp_name()));
        assert!(is_temp_name(".k.json.tmp.1234"));
        assert!(!is_temp_name("k.json"));
        assert!(!is_temp_name(".k.json"));
        assert!(!is_temp_name(".k.json.tmp.12x"));
        assert_eq!(id_from_record_name(&format!("{}.json", temp_name())), None);
    }

    proptest! {
        #[test]
        fn every_valid_id_gets_a_bounded_name_that_maps_back(
            segs in proptest::collection::vec("[A-Za-z0-9_-][A-Za-z0-9._-]{0,40}", 1..6),
            scope in 0..3u8,
            inst in "[A-Za-z0-9._-]{1,128}",
        ) {
            let key: String = segs.join("/");
            prop_assume!(key.len() <= 200 && !key.contains(".."));
            let key = Key::parse(&key).unwrap();
            let (scope, instance) = match scope {
                0 => (Scope::Global, None),
                1 => (Scope::Pod, Some(inst)),
                _ => (Scope::Node, Some(inst)),
            };
            let t = TaskId { key, scope, instance };
            let name = record_name(&t);
            prop_assert!(name.len() <= NAME_MAX);
            prop_assert!(!name.contains('/'));
            let back = id_from_record_name(&name).unwrap();
            prop_assert_eq!(record_name(&back), name.clone());
            if !name.contains(HASHED) {
                prop_assert_eq!(back, t);
            }
        }
    }
}
