//! `FileStore`: `DIR/<task>.lock` locked with `flock`, `DIR/<task>.json` holding the record,
//! replaced atomically. Names come from `layout.rs`; every access goes through `safe_fs.rs`, so no
//! symlink is ever followed. The kernel drops a dead holder's flock, so leases never lapse; `renew`
//! only checks that the lock we hold is still the one at the path. Must never leave a half-written
//! record behind.

use super::safe_fs::{Content, SafeDir};
use super::{layout, legacy};
use crate::record::Record;
use crate::store::{Attempt, Lease, Listing, Observation, Store, StoreError};
use crate::task::{Holder, TaskId};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// A temp file is written and renamed within one `write`; one this old was left by a crash or a
/// full disk. Generous, so that even a writer paused mid-write is very unlikely to lose its file
/// (if it does, its rename fails and the write reports an error; nothing is half-written).
const STALE_TEMP_AGE: Duration = Duration::from_secs(600);

pub struct FileStore {
    dir: PathBuf,
    /// A blocking `flock` a waiter started, by lock file name: it cannot be cancelled, so it is
    /// kept across `wait_change` calls (one thread per waited-for task, however long the wait)
    /// and the lock it gets is the next `try_acquire`'s.
    waiting: Mutex<Option<(String, oneshot::Receiver<LockResult>)>>,
    /// A lock that waiting got, by lock file name, not yet taken as a lease (the next
    /// `try_acquire` takes it, unless the guard stops waiting first: then it is dropped, unlocked).
    ready: Mutex<Option<Ready>>,
}

struct Ready {
    name: String,
    lock: Flock<File>,
}

type LockResult = Result<Flock<File>, nix::Error>;

/// What the lock file holds: the fencing counter and who holds the lock now.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LockInfo {
    token: u64,
    holder: Holder,
    since: DateTime<Utc>,
}

/// The lease's handle: the directory the lock was taken in, the locked file and its name.
struct FileLease {
    dir: SafeDir,
    lock: Flock<File>,
    name: String,
}

impl FileStore {
    pub fn open(dir: &Path) -> Result<FileStore, StoreError> {
        Ok(FileStore {
            dir: dir.to_path_buf(),
            waiting: Mutex::new(None),
            ready: Mutex::new(None),
        })
    }

    fn root(&self) -> Result<SafeDir, StoreError> {
        SafeDir::open(&self.dir, true)?.ok_or_else(|| StoreError::StateDir {
            path: self.dir.clone(),
            source: std::io::ErrorKind::NotFound.into(),
        })
    }

    pub(super) fn decode(
        id: &TaskId,
        location: &Path,
        content: Content,
    ) -> Result<Option<Record>, StoreError> {
        let corrupt = |reason: String| StoreError::Corrupt {
            key: id.key.to_string(),
            location: location.display().to_string(),
            reason,
        };
        let bytes = match content {
            Content::Missing | Content::Directory => return Ok(None),
            Content::NotAFile(what) => {
                return Err(corrupt(format!("it is {what}, not a record file")));
            }
            Content::Unreadable(e) => return Err(corrupt(format!("it cannot be read: {e}"))),
            Content::Bytes(b) => b,
        };
        Record::from_json(&bytes).map(Some).map_err(|e| {
            StoreError::unreadable_record(id.key.as_str(), location.display().to_string(), e)
        })
    }

    fn read_in(dir: &SafeDir, id: &TaskId) -> Result<Option<Record>, StoreError> {
        let name = layout::record_name(id);
        match dir.read(&name)? {
            Content::Missing => legacy::read(dir, id),
            content => Self::decode(id, &dir.join(&name), content),
        }
    }

    fn lock_info(dir: &SafeDir, name: &str) -> Option<LockInfo> {
        match dir.read(name) {
            Ok(Content::Bytes(b)) => serde_json::from_slice(&b).ok(),
            _ => None,
        }
    }

    fn locked_info(file: &File) -> Option<LockInfo> {
        let mut buf = vec![0u8; 64 * 1024];
        let n = file.read_at(&mut buf, 0).ok()?;
        serde_json::from_slice(&buf[..n]).ok()
    }

    /// Block in a thread of its own: a blocking `flock` cannot be cancelled. The thread ends
    /// when it gets the lock; should nobody want it by then, dropping it unlocks.
    fn lock_in_thread(file: File) -> oneshot::Receiver<LockResult> {
        let (tx, rx) = oneshot::channel();
        std::thread::spawn(move || {
            let res = Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| e);
            let _ = tx.send(res);
        });
        rx
    }

    fn waiting(
        &self,
    ) -> std::sync::MutexGuard<'_, Option<(String, oneshot::Receiver<LockResult>)>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn ready(&self) -> std::sync::MutexGuard<'_, Option<Ready>> {
        self.ready.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The lock a waiting thread got for `name`, if it got it by now.
    fn lock_from_waiter(&self, name: &str) -> Option<LockResult> {
        {
            let mut ready = self.ready();
            if ready.as_ref().is_some_and(|r| r.name == name) {
                return ready.take().map(|r| Ok(r.lock));
            }
        }
        let mut slot = self.waiting();
        let (waited, rx) = slot.as_mut()?;
        if waited != name {
            return None;
        }
        match rx.try_recv() {
            Ok(res) => {
                *slot = None;
                Some(res)
            }
            Err(oneshot::error::TryRecvError::Empty) => None,
            Err(oneshot::error::TryRecvError::Closed) => {
                *slot = None;
                None
            }
        }
    }

    /// Lock the task's lock file without waiting: `Ok(None)` when another process holds it.
    fn try_lock(&self, dir: &SafeDir, name: &str) -> Result<Option<Flock<File>>, StoreError> {
        let path = dir.join(name);
        let locked = match self.lock_from_waiter(name) {
            Some(Ok(l)) => l,
            Some(Err(e)) => return Err(StoreError::io("cannot lock", &path)(e.into())),
            None => match Flock::lock(dir.open_lock(name)?, FlockArg::LockExclusiveNonblock) {
                Ok(l) => {
                    // A thread still blocked on this lock would get it once we let go and keep
                    // it while this process lives: nobody wants its answer now.
                    let mut slot = self.waiting();
                    if slot.as_ref().is_some_and(|(waited, _)| waited == name) {
                        *slot = None;
                    }
                    l
                }
                Err((_, nix::Error::EWOULDBLOCK)) => return Ok(None),
                Err((_, e)) => return Err(StoreError::io("cannot lock", &path)(e.into())),
            },
        };
        // Someone removed the lock file (or the state dir) meanwhile: that lock guards nothing;
        // the caller looks again and locks the new one.
        if dir.still_names(name, &locked) && dir.still_at_path() {
            Ok(Some(locked))
        } else {
            Ok(None)
        }
    }

    /// Who holds the lock `name`, as its file says, with the record beside it.
    fn observation(dir: &SafeDir, id: &TaskId, name: &str) -> Observation {
        let info = Self::lock_info(dir, name);
        let version = match dir.read(name) {
            Ok(Content::Bytes(b)) => hex::encode(&b[..b.len().min(512)]),
            _ => String::new(),
        };
        Observation {
            held_for: info
                .as_ref()
                .and_then(|i| (Utc::now() - i.since).to_std().ok()),
            holder: info.map(|i| i.holder),
            version,
            // A corrupt record is the guard's to report, from its own read.
            record: Self::read_in(dir, id).ok().flatten().map(Box::new),
            ttl: None,
            lapses_in: None,
        }
    }

    fn write_lock_info(
        locked: &mut Flock<File>,
        info: &LockInfo,
        path: &Path,
    ) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(info).unwrap_or_default();
        let file: &mut File = locked;
        file.set_len(0)
            .and_then(|_| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(&bytes))
            .and_then(|_| file.sync_data())
            .map_err(StoreError::io("cannot write lock file", path))
    }

    /// Whether `lease` is still the current lease: its state directory is still at the path, its
    /// lock file is still linked at its name, and the file still carries its token. Deleting the
    /// lock file or the state directory lets a newcomer lock a fresh file, so any of these
    /// failing means another holder may be running.
    fn check(&self, lease: &Lease) -> Result<(), StoreError> {
        let lost = |reason: &str| StoreError::lease_lost(lease, reason);
        let held = lease
            .handle
            .downcast_ref::<FileLease>()
            .ok_or_else(|| lost("lease was not taken by the file store"))?;
        if !held.dir.still_at_path() {
            return Err(lost("the state directory was removed or replaced"));
        }
        if !held.dir.still_names(&held.name, &held.lock) {
            return Err(lost("the lock file was removed or replaced"));
        }
        match Self::locked_info(&held.lock) {
            Some(info) if info.token == lease.token => Ok(()),
            _ => Err(lost("the lock file names another holder")),
        }
    }
}

#[async_trait]
impl Store for FileStore {
    fn describe(&self) -> String {
        format!("file:{}", self.dir.display())
    }

    fn needs_renewal(&self) -> bool {
        false
    }

    async fn read(&self, id: &TaskId) -> Result<Option<Record>, StoreError> {
        match SafeDir::open(&self.dir, false)? {
            Some(dir) => Self::read_in(&dir, id),
            None => Ok(None),
        }
    }

    async fn try_acquire(
        &self,
        id: &TaskId,
        holder: &Holder,
        ttl: Duration,
    ) -> Result<Attempt, StoreError> {
        let dir = self.root()?;
        let name = layout::lock_name(id);
        let Some(mut locked) = self.try_lock(&dir, &name)? else {
            return Ok(Attempt::Busy(Self::observation(&dir, id, &name)));
        };
        // Tokens never repeat for a task while its state directory exists. The lock file and the
        // record both carry the last token, and the next one is above both:
        // - lock file deleted (by hand, or by a cleaner): the record still has the token of
        //   every lease a command ran under, because the guard writes `running` (fenced) before
        //   the command starts. A lease that ran nothing (a skip) may see its token again; no
        //   command or record ever carried it.
        // - record deleted: the lock file still has the token.
        // - both, or the whole directory: it is a new state directory; counting starts again.
        // A holder whose lock file was deleted fails its next `write` or `renew` (see `check`),
        // and `write` checks again after its rename, so of two leases that got the same token
        // only the newcomer's command can run.
        let last_lock = Self::locked_info(&locked).map_or(0, |i| i.token);
        let last_record = match Self::read_in(&dir, id) {
            Ok(r) => r.map_or(0, |r| r.token),
            // A corrupt record is reported by the guard's own read; do not fail the lock here.
            Err(_) => 0,
        };
        let token = last_lock.max(last_record) + 1;
        let info = LockInfo {
            token,
            holder: holder.clone(),
            since: Utc::now(),
        };
        Self::write_lock_info(&mut locked, &info, &dir.join(&name))?;
        // Best effort: a crash or a full disk can leave temp files; clear the old ones now.
        dir.remove_stale(layout::is_temp_name, STALE_TEMP_AGE);
        Ok(Attempt::Taken(Lease {
            id: id.clone(),
            token,
            holder: holder.clone(),
            ttl,
            handle: Box::new(FileLease {
                dir,
                lock: locked,
                name,
            }),
        }))
    }

    async fn wait_change(
        &self,
        id: &TaskId,
        _seen: &Observation,
        until: Instant,
    ) -> Result<(), StoreError> {
        let name = layout::lock_name(id);
        if self.ready().as_ref().is_some_and(|r| r.name == name) {
            // Ours to take already.
            return Ok(());
        }
        let mut rx = {
            let mut slot = self.waiting();
            match slot.take() {
                Some((waited, rx)) if waited == name => rx,
                _ => {
                    let dir = self.root()?;
                    Self::lock_in_thread(dir.open_lock(&name)?)
                }
            }
        };
        let left = until.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, &mut rx).await {
            // The lock is ours now: the next `try_acquire` takes it from the slot.
            Ok(Ok(Ok(lock))) => {
                *self.ready() = Some(Ready { name, lock });
            }
            // The next look locks without waiting and reports what went wrong.
            Ok(Ok(Err(_)) | Err(_)) => {}
            Err(_) => *self.waiting() = Some((name, rx)),
        }
        Ok(())
    }

    async fn observe(&self, id: &TaskId) -> Result<Option<Observation>, StoreError> {
        let Some(dir) = SafeDir::open(&self.dir, false)? else {
            return Ok(None);
        };
        let name = layout::lock_name(id);
        let Some(file) = dir.open_existing(&name)? else {
            return Ok(None);
        };
        // Held exactly while some live process has it flocked.
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(_unlocked_on_drop) => Ok(None),
            Err(_) => Ok(Some(Self::observation(&dir, id, &name))),
        }
    }

    async fn free_if_unchanged(
        &self,
        _id: &TaskId,
        _seen: &Observation,
    ) -> Result<bool, StoreError> {
        // A flock belongs to the live process that took it and dies with it: no other process
        // can hand it over.
        Ok(false)
    }

    async fn renew(&self, lease: &Lease) -> Result<(), StoreError> {
        self.check(lease)
    }

    fn lease_fd(&self, lease: &Lease) -> Option<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        lease
            .handle
            .downcast_ref::<FileLease>()
            .map(|held| held.lock.as_raw_fd())
    }

    async fn write(&self, lease: &Lease, record: &Record) -> Result<(), StoreError> {
        self.check(lease)?;
        let held = lease.handle.downcast_ref::<FileLease>().ok_or_else(|| {
            StoreError::lease_lost(lease, "lease was not taken by the file store")
        })?;
        held.dir
            .replace(&layout::record_name(&lease.id), &record.to_json())?;
        // Checked again after the rename: if the lock file went away in between, a newcomer may
        // have read the record before our rename and taken our token; we must not go on to run
        // anything under it.
        self.check(lease)
    }

    async fn release(&self, lease: Lease) -> Result<(), StoreError> {
        drop(lease);
        Ok(())
    }

    async fn list(&self) -> Result<Listing, StoreError> {
        let mut out = Listing::default();
        let Some(dir) = SafeDir::open(&self.dir, false)? else {
            return Ok(out);
        };
        for (name, is_dir) in dir.entries()? {
            if is_dir {
                if let Some(sub) = dir.subdir(&name) {
                    legacy::list(&dir, &sub, &name, 1, &mut out)?;
                }
                continue;
            }
            // Lock files, temp files and strangers do not name a record; a readable record is
            // listed by its own key, scope and instance, an unreadable one by its file name.
            let Some(id) = layout::id_from_record_name(&name) else {
                continue;
            };
            let read = Self::decode(&id, &dir.join(&name), dir.read(&name)?);
            out.add(id, read)?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::Key;

    fn opts() -> crate::store::AcquireOpts {
        crate::store::AcquireOpts {
            ttl: Duration::from_secs(30),
            wait_timeout: Some(Duration::from_secs(5)),
        }
    }

    fn id() -> TaskId {
        TaskId::global(Key::parse("app/k").unwrap())
    }

    async fn taken(store: &FileStore) -> Lease {
        let crate::acquire::Acquired::Lease(lease) =
            crate::acquire::acquire(store, &id(), &Holder::default(), opts(), None)
                .await
                .unwrap()
        else {
            panic!("no lease");
        };
        let mut rec = Record::new(&id(), "sha256:x", Utc::now());
        rec.token = lease.token;
        store.write(&lease, &rec).await.unwrap();
        lease
    }

    fn is_lost(r: Result<(), StoreError>) -> bool {
        matches!(r, Err(StoreError::LeaseLost { .. }))
    }

    #[tokio::test]
    async fn renew_fails_once_the_lock_file_is_deleted_and_tokens_do_not_repeat() {
        let tmp = tempfile::tempdir().unwrap();
        let store = FileStore::open(&tmp.path().join("state")).unwrap();
        let first = taken(&store).await;
        assert!(store.renew(&first).await.is_ok());
        std::fs::remove_file(tmp.path().join("state/app+k.lock")).unwrap();
        assert!(is_lost(store.renew(&first).await));
        assert!(is_lost(
            store
                .write(&first, &Record::new(&id(), "", Utc::now()))
                .await
        ));
        // A newcomer locks a fresh file; its token is above the one the record carries.
        let second = taken(&store).await;
        assert!(
            second.token > first.token,
            "{} > {}",
            second.token,
            first.token
        );
        assert!(is_lost(store.renew(&first).await));
        assert!(store.renew(&second).await.is_ok());
    }

    #[tokio::test]
    async fn renew_fails_once_the_state_dir_is_removed_or_moved() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state");
        let store = FileStore::open(&dir).unwrap();
        let lease = taken(&store).await;
        std::fs::rename(&dir, tmp.path().join("moved")).unwrap();
        assert!(is_lost(store.renew(&lease).await), "moved away");
        std::fs::rename(tmp.path().join("moved"), &dir).unwrap();
        assert!(store.renew(&lease).await.is_ok(), "back in place");
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(is_lost(store.renew(&lease).await), "removed");
    }

    #[tokio::test]
    async fn renew_fails_when_the_lock_file_names_another_token() {
        let tmp = tempfile::tempdir().unwrap();
        let store = FileStore::open(&tmp.path().join("state")).unwrap();
        let lease = taken(&store).await;
        let path = tmp.path().join("state/app+k.lock");
        let mut info: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        info["token"] = (lease.token + 7).into();
        // Rewritten in place (same inode), as a confused second writer would.
        std::fs::write(&path, serde_json::to_vec(&info).unwrap()).unwrap();
        assert!(is_lost(store.renew(&lease).await));
    }
}
