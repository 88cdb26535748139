//! `file:DIR`, the embedded store: `DIR/<task>.lock` locked with `flock`, `DIR/<task>.json` holding
//! the record, replaced atomically. The kernel drops a dead holder's flock, so leases never need
//! renewal here. Must never leave a half-written record behind.

use super::wait::WAIT_LOG_EVERY;
use super::{
    AcquireOpts, Busy, Lease, Listing, ReleaseOutcome, Store, StoreError, WaitLog, next_wait,
};
use crate::record::{Record, RecordError};
use crate::task::{Holder, TaskId};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

pub struct FileStore {
    dir: PathBuf,
}

/// What the lock file holds: the fencing counter and who holds the lock now.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LockInfo {
    token: u64,
    holder: Holder,
    since: DateTime<Utc>,
}

impl FileStore {
    pub fn open(dir: &Path) -> Result<FileStore, StoreError> {
        Ok(FileStore {
            dir: dir.to_path_buf(),
        })
    }

    fn lock_path(&self, id: &TaskId) -> PathBuf {
        self.dir.join(format!("{}.lock", id.storage_name()))
    }

    fn record_path(&self, id: &TaskId) -> PathBuf {
        self.dir.join(format!("{}.json", id.storage_name()))
    }

    fn read_path(&self, id: &TaskId, path: &Path) -> Result<Option<Record>, StoreError> {
        let bytes = match fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            // The state dir is a file, or unreadable: a configuration problem, not an outage.
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::NotADirectory | ErrorKind::PermissionDenied
                ) =>
            {
                return Err(StoreError::StateDir {
                    path: self.dir.clone(),
                    source: e,
                });
            }
            Err(e) => return Err(StoreError::io("cannot read record", path)(e)),
        };
        Record::from_json(&bytes).map(Some).map_err(|e| match e {
            RecordError::NewerSchema { found } => StoreError::NewerSchema {
                key: id.key.to_string(),
                location: path.display().to_string(),
                found,
            },
            other => StoreError::Corrupt {
                key: id.key.to_string(),
                location: path.display().to_string(),
                reason: other.to_string(),
            },
        })
    }

    /// Open (creating) the lock file; a directory we cannot create or write is a config problem.
    fn open_lock_file(&self, id: &TaskId) -> Result<File, StoreError> {
        let path = self.lock_path(id);
        let state_dir = |source| StoreError::StateDir {
            path: self.dir.clone(),
            source,
        };
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(state_dir)?;
        }
        // std opens with O_CLOEXEC, so the child never inherits the lock.
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(state_dir)
    }

    fn read_lock_info(path: &Path) -> Option<LockInfo> {
        let bytes = fs::read(path).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// True when the locked descriptor still names the file at `path` (nobody deleted it).
    fn still_linked(locked: &File, path: &Path) -> bool {
        match (locked.metadata(), fs::metadata(path)) {
            (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
            _ => false,
        }
    }

    /// Block in a thread of its own: a blocking `flock` cannot be cancelled, but when nobody waits
    /// for the result any more the thread drops the lock it got, so giving up leaks nothing.
    fn lock_in_thread(
        file: File,
    ) -> tokio::sync::oneshot::Receiver<Result<Flock<File>, nix::Error>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let res = Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| e);
            let _ = tx.send(res);
        });
        rx
    }

    async fn lock(&self, id: &TaskId, opts: AcquireOpts) -> Result<Flock<File>, StoreError> {
        let path = self.lock_path(id);
        let started = Instant::now();
        let mut log = WaitLog::new(id);
        loop {
            let file = self.open_lock_file(id)?;
            let locked = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(l) => l,
                Err((file, nix::Error::EWOULDBLOCK)) => {
                    let mut rx = Self::lock_in_thread(file);
                    loop {
                        let busy = Self::read_lock_info(&path).map(|i| Busy {
                            held_for: (Utc::now() - i.since).to_std().ok(),
                            holder: Some(i.holder),
                        });
                        let busy = busy.unwrap_or(Busy {
                            holder: None,
                            held_for: None,
                        });
                        log.tick(&busy);
                        let slice =
                            next_wait(id, &busy, started, opts.wait_timeout, WAIT_LOG_EVERY)?;
                        match tokio::time::timeout(slice, &mut rx).await {
                            Ok(Ok(Ok(l))) => break l,
                            Ok(Ok(Err(e))) => {
                                return Err(StoreError::io("cannot lock", &path)(e.into()));
                            }
                            Ok(Err(_)) => {
                                return Err(StoreError::io("lock thread ended", &path)(
                                    std::io::Error::other("lock thread ended"),
                                ));
                            }
                            Err(_) => continue,
                        }
                    }
                }
                Err((_, e)) => return Err(StoreError::io("cannot lock", &path)(e.into())),
            };
            if Self::still_linked(&locked, &path) {
                return Ok(locked);
            }
            // Someone removed the lock file while we waited on it: lock the new one instead.
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

    fn read_locked_info(locked: &mut Flock<File>) -> Option<LockInfo> {
        let file: &mut File = locked;
        let mut buf = Vec::new();
        file.seek(SeekFrom::Start(0)).ok()?;
        file.read_to_end(&mut buf).ok()?;
        serde_json::from_slice(&buf).ok()
    }

    /// Temp file, fsync, rename, fsync of the directory: a reader sees the old or the new record.
    fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
        let dir = path.parent().unwrap_or(Path::new("."));
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
        let mut f = File::create(&tmp).map_err(|source| match source.kind() {
            // A state dir we cannot write in is a configuration problem (78), not an outage.
            ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem => StoreError::StateDir {
                path: dir.to_path_buf(),
                source,
            },
            _ => StoreError::io("cannot create", &tmp)(source),
        })?;
        f.write_all(bytes)
            .and_then(|_| f.sync_all())
            .map_err(StoreError::io("cannot write", &tmp))?;
        drop(f);
        fs::rename(&tmp, path).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            StoreError::io("cannot replace", path)(e)
        })?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(StoreError::io("cannot sync directory", dir))
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
        self.read_path(id, &self.record_path(id))
    }

    async fn acquire(
        &self,
        id: &TaskId,
        holder: &Holder,
        opts: AcquireOpts,
    ) -> Result<Lease, StoreError> {
        let mut locked = self.lock(id, opts).await?;
        let path = self.lock_path(id);
        // The counter lives in the lock file; the record's token guards against a lost lock file.
        let last_lock = Self::read_locked_info(&mut locked).map_or(0, |i| i.token);
        let last_record = match self.read(id).await {
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
        Self::write_lock_info(&mut locked, &info, &path)?;
        Ok(Lease {
            id: id.clone(),
            token,
            holder: holder.clone(),
            ttl: opts.ttl,
            handle: Box::new(locked),
        })
    }

    async fn renew(&self, _lease: &Lease) -> Result<(), StoreError> {
        Ok(())
    }

    fn lease_fd(&self, lease: &Lease) -> Option<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        lease
            .handle
            .downcast_ref::<Flock<File>>()
            .map(|f| f.as_raw_fd())
    }

    async fn write(&self, lease: &Lease, record: &Record) -> Result<(), StoreError> {
        let lost = |reason: &str| StoreError::LeaseLost {
            key: lease.id.to_string(),
            token: lease.token,
            reason: reason.to_string(),
        };
        let locked = lease
            .handle
            .downcast_ref::<Flock<File>>()
            .ok_or_else(|| lost("lease was not taken by the file store"))?;
        let lock_path = self.lock_path(&lease.id);
        if !Self::still_linked(locked, &lock_path) {
            return Err(lost("the lock file was removed"));
        }
        match Self::read_lock_info(&lock_path) {
            Some(info) if info.token == lease.token => {}
            _ => return Err(lost("the lock file names another holder")),
        }
        Self::write_atomically(&self.record_path(&lease.id), &record.to_json())
    }

    async fn release(&self, lease: Lease) -> Result<(), StoreError> {
        drop(lease);
        Ok(())
    }

    async fn list(&self) -> Result<Listing, StoreError> {
        let mut out = Listing::default();
        if !self.dir.exists() {
            return Ok(out);
        }
        for entry in walkdir::WalkDir::new(&self.dir).sort_by_file_name() {
            let entry = entry.map_err(|e| StoreError::Io {
                op: "cannot list",
                path: self.dir.clone(),
                source: e.into(),
            })?;
            let name = entry.file_name().to_string_lossy();
            // Temp files (`.<name>.json.tmp.<pid>`) do not end in .json; keys may start with '.'.
            if !entry.file_type().is_file() || !name.ends_with(".json") {
                continue;
            }
            let rel = entry
                .path()
                .strip_prefix(&self.dir)
                .unwrap_or(entry.path())
                .to_string_lossy();
            let Some(id) = rel
                .strip_suffix(".json")
                .and_then(TaskId::from_storage_name)
            else {
                continue;
            };
            let read = self.read_path(&id, entry.path());
            out.add(id, read)?;
        }
        Ok(out)
    }

    async fn release_holder(
        &self,
        id: &TaskId,
        _me: &Holder,
    ) -> Result<ReleaseOutcome, StoreError> {
        let path = self.lock_path(id);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(ReleaseOutcome::NotHeld),
            Err(e) => return Err(StoreError::io("cannot open", &path)(e)),
        };
        // A flock belongs to the live process that took it and dies with it; no other process can
        // hand it over, so the only answers here are "free" or "held by that process".
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(_unlocked_on_drop) => Ok(ReleaseOutcome::NotHeld),
            Err((_, _)) => Ok(ReleaseOutcome::HeldByOther {
                holder: Self::read_lock_info(&path).map(|i| i.holder),
            }),
        }
    }
}
