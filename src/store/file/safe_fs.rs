//! The file store's only way to touch the disk: a handle on the state directory whose every
//! operation is relative to its descriptor and never follows a symlink. initguard often runs as
//! root on a volume other users can write to; nothing here may ever open a planted link, write
//! through it, or create a file or directory that every user can read.

use crate::store::StoreError;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{FileStat, Mode, fchmod, fstat, fstatat, mkdirat};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

const S_IFMT: u32 = 0o170000;
const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_ISGID: u32 = 0o2000;
const S_ISVTX: u32 = 0o1000;

/// A record or lock larger than this is not ours; reading it whole could exhaust memory.
const MAX_FILE: u64 = 16 << 20;

/// What reading a file by name found.
pub(crate) enum Content {
    Missing,
    Bytes(Vec<u8>),
    /// A directory: never a record (the previous layout made one per key segment).
    Directory,
    /// A symlink, directory, FIFO, device, or a file too large to be ours: never read.
    NotAFile(&'static str),
    /// It exists, but this process may not read it.
    Unreadable(std::io::Error),
}

/// The state directory (or, for the previous layout, one of its subdirectories), held open.
pub(crate) struct SafeDir {
    fd: OwnedFd,
    path: PathBuf,
    /// Setgid directory (a Kubernetes fsGroup volume): files are shared with the group.
    shared: bool,
}

impl SafeDir {
    /// Open the state directory, creating it (and missing parents) when `create`; `None` when it
    /// does not exist and `create` is false. Refuses a symlink and a directory another user could
    /// swap files into. Parents of the state directory are the administrator's: they are
    /// resolved normally.
    pub(crate) fn open(path: &Path, create: bool) -> Result<Option<SafeDir>, StoreError> {
        match open_dir_nofollow(None, path) {
            Ok(fd) => SafeDir::vetted(fd, path.to_path_buf()).map(Some),
            Err(Errno::ENOENT) if create => {
                create_chain(path)?;
                let fd = open_dir_nofollow(None, path).map_err(|e| dir_error(path, e))?;
                SafeDir::vetted(fd, path.to_path_buf()).map(Some)
            }
            Err(Errno::ENOENT) => Ok(None),
            Err(e) => Err(dir_error(path, e)),
        }
    }

    fn vetted(fd: OwnedFd, path: PathBuf) -> Result<SafeDir, StoreError> {
        let st = fstat(&fd).map_err(|e| StoreError::io("cannot inspect", &path)(e.into()))?;
        let shared = vet(&path, &st)?;
        Ok(SafeDir { fd, path, shared })
    }

    pub(crate) fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Owner-only, or owner and group inside a setgid group directory; never any world bit.
    fn file_mode(&self) -> Mode {
        Mode::from_bits_truncate(if self.shared { 0o660 } else { 0o600 })
    }

    /// A subdirectory, under the same rules as the state directory; `None` on any problem
    /// (used only to read the previous layout, where a missing or odd directory means "no record").
    pub(crate) fn subdir(&self, name: &str) -> Option<SafeDir> {
        let fd = open_dir_nofollow(Some(&self.fd), Path::new(name)).ok()?;
        SafeDir::vetted(fd, self.join(name)).ok()
    }

    /// Whether the state directory's path still names this directory: `rm -rf` or `mv` of the
    /// whole directory during a run makes another holder start afresh at the path.
    pub(crate) fn still_at_path(&self) -> bool {
        match (std::fs::symlink_metadata(&self.path), fstat(&self.fd)) {
            (Ok(m), Ok(st)) => m.dev() == st.st_dev && m.ino() == st.st_ino,
            _ => false,
        }
    }

    /// Whether `name` in this directory is still the file `file` has open (not removed, not
    /// replaced).
    pub(crate) fn still_names(&self, name: &str, file: &File) -> bool {
        match (
            fstatat(&self.fd, name, AtFlags::AT_SYMLINK_NOFOLLOW),
            fstat(file),
        ) {
            (Ok(a), Ok(b)) => a.st_dev == b.st_dev && a.st_ino == b.st_ino,
            _ => false,
        }
    }

    /// Open (creating) a lock file for reading and writing. A symlink or anything but a regular
    /// file at that name is refused: flock and the token would otherwise land on the target.
    pub(crate) fn open_lock(&self, name: &str) -> Result<File, StoreError> {
        let path = self.join(name);
        let flags = OFlag::O_RDWR
            | OFlag::O_CREAT
            | OFlag::O_NOFOLLOW
            | OFlag::O_CLOEXEC
            | OFlag::O_NONBLOCK;
        let fd = match openat(&self.fd, name, flags, self.file_mode()) {
            Ok(fd) => fd,
            Err(Errno::ELOOP) => return Err(planted(&path, "a symbolic link")),
            Err(Errno::EISDIR) => return Err(planted(&path, "a directory")),
            Err(e) => return Err(file_error(self, "cannot open", &path, e)),
        };
        let st = fstat(&fd).map_err(|e| StoreError::io("cannot inspect", &path)(e.into()))?;
        if st.st_mode & S_IFMT != S_IFREG {
            return Err(planted(&path, "not a regular file"));
        }
        // The umask may have taken the group bits a shared directory needs (or an older
        // initguard left it world-readable): set the mode we mean, on files we own.
        let want = self.file_mode().bits();
        if st.st_uid == nix::unistd::geteuid().as_raw() && st.st_mode & 0o7777 != want {
            fchmod(&fd, self.file_mode())
                .map_err(|e| StoreError::io("cannot set the mode of", &path)(e.into()))?;
        }
        Ok(File::from(fd))
    }

    /// Open an existing file for locking only (`release`): `None` when it is missing.
    pub(crate) fn open_existing(&self, name: &str) -> Result<Option<File>, StoreError> {
        let path = self.join(name);
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK;
        match openat(&self.fd, name, flags, Mode::empty()) {
            Ok(fd) => {
                let st =
                    fstat(&fd).map_err(|e| StoreError::io("cannot inspect", &path)(e.into()))?;
                if st.st_mode & S_IFMT != S_IFREG {
                    return Err(planted(&path, "not a regular file"));
                }
                Ok(Some(File::from(fd)))
            }
            Err(Errno::ENOENT) => Ok(None),
            Err(Errno::ELOOP) => Err(planted(&path, "a symbolic link")),
            Err(e) => Err(file_error(self, "cannot open", &path, e)),
        }
    }

    /// Read a whole (small, regular) file by name without following a link.
    pub(crate) fn read(&self, name: &str) -> Result<Content, StoreError> {
        let path = self.join(name);
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK;
        let fd = match openat(&self.fd, name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Ok(Content::Missing),
            Err(Errno::ELOOP) => return Ok(Content::NotAFile("a symbolic link")),
            Err(e @ (Errno::EACCES | Errno::EPERM)) => return Ok(Content::Unreadable(e.into())),
            Err(e) => return Err(StoreError::io("cannot read", &path)(e.into())),
        };
        let st = fstat(&fd).map_err(|e| StoreError::io("cannot inspect", &path)(e.into()))?;
        match st.st_mode & S_IFMT {
            S_IFREG => {}
            S_IFDIR => return Ok(Content::Directory),
            _ => return Ok(Content::NotAFile("not a regular file")),
        }
        let mut bytes = Vec::new();
        File::from(fd)
            .take(MAX_FILE + 1)
            .read_to_end(&mut bytes)
            .map_err(StoreError::io("cannot read", &path))?;
        if bytes.len() as u64 > MAX_FILE {
            return Ok(Content::NotAFile("larger than 16 MiB"));
        }
        Ok(Content::Bytes(bytes))
    }

    /// Replace `name` atomically: an exclusively created temp file with an unpredictable name,
    /// fsynced, renamed over `name` (rename replaces a planted link itself, never its target),
    /// then the directory fsynced. A reader sees the old content or the new, never a mix.
    pub(crate) fn replace(&self, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let (tmp, mut file) = self.create_temp()?;
        let tmp_path = self.join(&tmp);
        let written = file
            .write_all(bytes)
            .and_then(|_| file.sync_all())
            .map_err(StoreError::io("cannot write", &tmp_path));
        drop(file);
        let renamed = written.and_then(|_| {
            nix::fcntl::renameat(&self.fd, tmp.as_str(), &self.fd, name)
                .map_err(|e| StoreError::io("cannot replace", self.join(name))(e.into()))
        });
        if let Err(e) = renamed {
            // A full disk must not leave a temp file behind for every attempt.
            let _ = nix::unistd::unlinkat(
                &self.fd,
                tmp.as_str(),
                nix::unistd::UnlinkatFlags::NoRemoveDir,
            );
            return Err(e);
        }
        nix::unistd::fsync(&self.fd)
            .map_err(|e| StoreError::io("cannot sync directory", &self.path)(e.into()))
    }

    fn create_temp(&self) -> Result<(String, File), StoreError> {
        self.create_temp_named(super::layout::temp_name)
    }

    /// A new temp file under a name from `next`: never an existing entry, and never through a
    /// link (`O_EXCL | O_NOFOLLOW`), so a file or link planted at the name is passed over.
    fn create_temp_named(
        &self,
        mut next: impl FnMut() -> String,
    ) -> Result<(String, File), StoreError> {
        let flags =
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        // 128 random bits: a clash means a planted file; three tries then give up loudly.
        let mut last = Errno::EEXIST;
        for _ in 0..3 {
            let tmp = next();
            match openat(&self.fd, tmp.as_str(), flags, self.file_mode()) {
                Ok(fd) => {
                    fchmod(&fd, self.file_mode()).map_err(|e| {
                        StoreError::io("cannot set the mode of", self.join(&tmp))(e.into())
                    })?;
                    return Ok((tmp, File::from(fd)));
                }
                Err(Errno::EEXIST) => last = Errno::EEXIST,
                Err(e) => return Err(file_error(self, "cannot create", &self.join(&tmp), e)),
            }
        }
        Err(file_error(
            self,
            "cannot create a temp file in",
            &self.path,
            last,
        ))
    }

    /// Names in this directory with whether each is a directory (not followed).
    pub(crate) fn entries(&self) -> Result<Vec<(String, bool)>, StoreError> {
        let list = |e: Errno| StoreError::io("cannot list", &self.path)(e.into());
        // A fresh open file description: reading a directory moves its offset.
        let fd = openat(
            &self.fd,
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(list)?;
        let mut dir = nix::dir::Dir::from_fd(fd).map_err(list)?;
        let mut out = Vec::new();
        for entry in dir.iter() {
            let entry = entry.map_err(list)?;
            let Ok(name) = entry.file_name().to_str() else {
                continue;
            };
            if name == "." || name == ".." {
                continue;
            }
            let is_dir = match entry.file_type() {
                Some(t) => t == nix::dir::Type::Directory,
                // Some file systems do not say: ask, without following a link.
                None => fstatat(&self.fd, name, AtFlags::AT_SYMLINK_NOFOLLOW)
                    .is_ok_and(|st| st.st_mode & S_IFMT == S_IFDIR),
            };
            out.push((name.to_string(), is_dir));
        }
        out.sort();
        Ok(out)
    }

    /// Remove temp files (by `is_temp`) that are regular files last written more than `age`
    /// ago. A name swapped for a symlink between the look and the unlink only loses the link:
    /// unlinkat never follows it.
    pub(crate) fn remove_stale(&self, is_temp: impl Fn(&str) -> bool, age: Duration) {
        let Ok(names) = self.entries() else {
            return;
        };
        let now = SystemTime::now();
        for (name, _) in names.iter().filter(|(n, is_dir)| !is_dir && is_temp(n)) {
            let Ok(st) = fstatat(&self.fd, name.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW) else {
                continue;
            };
            let written = SystemTime::UNIX_EPOCH + Duration::from_secs(st.st_mtime.max(0) as u64);
            let old = now.duration_since(written).is_ok_and(|d| d > age);
            if st.st_mode & S_IFMT == S_IFREG && old {
                let _ = nix::unistd::unlinkat(
                    &self.fd,
                    name.as_str(),
                    nix::unistd::UnlinkatFlags::NoRemoveDir,
                );
            }
        }
    }
}

/// Open a directory by path (relative to `at` when given) without following a final symlink.
fn open_dir_nofollow(at: Option<&OwnedFd>, path: &Path) -> Result<OwnedFd, Errno> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    match at {
        Some(fd) => openat(fd.as_fd(), path, flags, Mode::empty()),
        None => nix::fcntl::open(path, flags, Mode::empty()),
    }
}

/// Create `path` and its missing parents: owner-only, or group-shared (setgid, 2770) below a
/// setgid directory, so that an fsGroup volume stays usable by every container of the Pod.
fn create_chain(path: &Path) -> Result<(), StoreError> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let parent_meta = match std::fs::metadata(parent) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            create_chain(parent)?;
            std::fs::metadata(parent).map_err(|e| state_dir(parent, e))?
        }
        Err(e) => return Err(state_dir(parent, e)),
    };
    let mode = Mode::from_bits_truncate(if parent_meta.mode() & S_ISGID != 0 {
        0o2770
    } else {
        0o700
    });
    let parent_fd = nix::fcntl::open(
        parent,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| dir_error(parent, e))?;
    let Some(name) = path.file_name() else {
        return Ok(());
    };
    match mkdirat(&parent_fd, name, mode) {
        Ok(()) => {}
        // Another process created it first: it is vetted like any existing directory.
        Err(Errno::EEXIST) => return Ok(()),
        Err(e) => return Err(dir_error(path, e)),
    }
    // mkdir applies the umask (which can only take bits away, never add world bits); set the
    // group bits a shared directory needs, on the directory we just made (never on a link).
    let fd =
        open_dir_nofollow(Some(&parent_fd), Path::new(name)).map_err(|e| dir_error(path, e))?;
    fchmod(&fd, mode).map_err(|e| StoreError::io("cannot set the mode of", path)(e.into()))
}

/// The checks a state directory must pass; returns whether it is a setgid group directory.
fn vet(path: &Path, st: &FileStat) -> Result<bool, StoreError> {
    let mode = st.st_mode;
    if mode & 0o002 != 0 && mode & S_ISVTX == 0 {
        return Err(StoreError::UnsafeStateDir {
            path: path.to_path_buf(),
            why: format!(
                "every user can write to it (mode {:04o}), so anyone could plant files in it",
                mode & 0o7777
            ),
            fix: format!(
                "run `chmod o-w {}` or choose another --store directory",
                path.display()
            ),
        });
    }
    let me = nix::unistd::geteuid().as_raw();
    let group_dir = mode & S_ISGID != 0 && in_group(st.st_gid);
    // Another member of our group may own a setgid group directory (the other container of an
    // fsGroup Pod created it): only someone in that group, or root, can make a directory carry
    // that group, so everyone who can change it is already trusted with the state.
    if st.st_uid != 0 && st.st_uid != me && !group_dir {
        return Err(StoreError::UnsafeStateDir {
            path: path.to_path_buf(),
            why: format!(
                "it is owned by uid {}, neither this user (uid {me}) nor root, who could swap files in it",
                st.st_uid
            ),
            fix: format!(
                "run `chown {me} {}`, make it a setgid directory of a group this user is in, or choose another --store directory",
                path.display()
            ),
        });
    }
    Ok(mode & S_ISGID != 0)
}

fn in_group(gid: u32) -> bool {
    nix::unistd::getegid().as_raw() == gid
        || nix::unistd::getgroups().is_ok_and(|gs| gs.iter().any(|g| g.as_raw() == gid))
}

/// Something at a name the store uses that it never creates itself.
fn planted(path: &Path, what: &str) -> StoreError {
    StoreError::UnsafeStateDir {
        path: path.to_path_buf(),
        why: format!("it is {what}, which initguard never creates there"),
        fix: format!(
            "remove it (`rm {}`) and check who else can write to the state directory",
            path.display()
        ),
    }
}

fn state_dir(path: &Path, source: std::io::Error) -> StoreError {
    StoreError::StateDir {
        path: path.to_path_buf(),
        source,
    }
}

/// Opening the state directory failed: a symlink is refused, permission and "not a directory"
/// are configuration problems (78); anything else is a local I/O error.
fn dir_error(path: &Path, e: Errno) -> StoreError {
    let is_link = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
    match e {
        Errno::ELOOP | Errno::ENOTDIR if is_link => StoreError::UnsafeStateDir {
            path: path.to_path_buf(),
            why: "it is a symbolic link, and initguard never follows links in its state".into(),
            fix: "point --store at the directory itself".into(),
        },
        Errno::EACCES | Errno::EPERM | Errno::ENOTDIR | Errno::ELOOP => state_dir(path, e.into()),
        e => StoreError::io("cannot open state directory", path)(e.into()),
    }
}

/// Creating or opening a file in the directory failed: no permission is the directory's fault
/// (78); a full disk, a read-only or failing file system is a local I/O error (74).
fn file_error(dir: &SafeDir, op: &'static str, path: &Path, e: Errno) -> StoreError {
    match e {
        Errno::EACCES | Errno::EPERM => state_dir(&dir.path, e.into()),
        e => StoreError::io(op, path)(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A link planted at the temp name initguard picks is never written through: the next name
    /// is used, and with every name taken the write fails loudly; the link's target is untouched.
    #[test]
    fn a_link_planted_at_the_temp_name_is_passed_over() {
        let area = tempfile::tempdir().unwrap();
        let state = area.path().join("state");
        std::fs::create_dir(&state).unwrap();
        let victim = area.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        for planted in ["+tmp.a", "+tmp.b", "+tmp.c"] {
            std::os::unix::fs::symlink(&victim, state.join(planted)).unwrap();
        }
        let dir = SafeDir::open(&state, false)
            .unwrap()
            .expect("the state dir");
        let mut names = ["+tmp.a", "+tmp.b", "+tmp.d"].into_iter().map(String::from);
        let (name, mut file) = dir
            .create_temp_named(|| names.next().unwrap_or_default())
            .unwrap();
        assert_eq!(name, "+tmp.d");
        std::io::Write::write_all(&mut file, b"new").unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        let mut planted = ["+tmp.a", "+tmp.b", "+tmp.c"].into_iter().map(String::from);
        let err = dir
            .create_temp_named(|| planted.next().unwrap_or_default())
            .unwrap_err();
        assert!(
            err.to_string().contains("cannot create a temp file"),
            "{err}"
        );
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        for link in ["+tmp.a", "+tmp.b", "+tmp.c"] {
            assert!(
                std::fs::symlink_metadata(state.join(link))
                    .unwrap()
                    .file_type()
                    .is_symlink()
            );
        }
    }
}
