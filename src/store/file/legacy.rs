//! Records of the file store's previous layout (one directory per key segment:
//! `DIR/app/migrate.json`), read so that tasks recorded before an upgrade still skip and are still
//! listed. Never written: every write goes to the current layout, whose record then wins.

use super::layout;
use super::safe_fs::{Content, SafeDir};
use super::store::FileStore;
use crate::record::Record;
use crate::store::{Listing, StoreError};
use crate::task::TaskId;

/// Keys have at most 100 segments.
const MAX_DEPTH: usize = 100;

/// The record as the previous layout kept it (`DIR/app/migrate.json`), so that tasks that
/// succeeded before the upgrade still skip. Anything odd on the way (a link, another user's
/// directory) means "no record": that layout is only ever read, never written.
pub(super) fn read(dir: &SafeDir, id: &TaskId) -> Result<Option<Record>, StoreError> {
    let (dirs, file) = layout::legacy_record_path(id);
    if dirs.is_empty() {
        return Ok(None); // the same name in both layouts: already looked at
    }
    let mut cur: Option<SafeDir> = None;
    for d in &dirs {
        match cur.as_ref().unwrap_or(dir).subdir(d) {
            Some(next) => cur = Some(next),
            None => return Ok(None),
        }
    }
    let at = cur.as_ref().unwrap_or(dir);
    match at.read(&file)? {
        content @ Content::Bytes(_) => {
            let rec = FileStore::decode(id, &at.join(&file), content)?;
            Ok(rec.filter(|r| r.key == id.key.as_str()))
        }
        _ => Ok(None),
    }
}

/// Records of the previous layout under `dir` (`prefix` is the key so far), for listings;
/// only files that parse are listed, and only when the new layout has no record for them.
pub(super) fn list(
    root: &SafeDir,
    dir: &SafeDir,
    prefix: &str,
    depth: usize,
    out: &mut Listing,
) -> Result<(), StoreError> {
    if depth > MAX_DEPTH {
        return Ok(());
    }
    for (name, is_dir) in dir.entries()? {
        let rel = format!("{prefix}/{name}");
        if is_dir {
            if let Some(sub) = dir.subdir(&name) {
                list(root, &sub, &rel, depth + 1, out)?;
            }
            continue;
        }
        let Some(id) = rel
            .strip_suffix(layout::RECORD_EXT)
            .and_then(TaskId::from_storage_name)
        else {
            continue;
        };
        if !matches!(root.read(&layout::record_name(&id))?, Content::Missing) {
            continue; // the new layout's record wins
        }
        if let Ok(Some(rec)) = read(root, &id) {
            out.records.push(rec);
        }
    }
    Ok(())
}
