//! `initguard install DIR`: copy the running binary to `DIR/initguard` (mode 0755), so that the
//! init container `k8s inject --install` adds can fill an `emptyDir` from a `FROM scratch` image,
//! which has no `cp`. The copy is atomic (temp file, fsync, rename, directory fsync): a container
//! that starts while another copy is in progress sees the old binary or the new one, never half.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> InstallError + use<> {
    let path = path.to_path_buf();
    move |source| InstallError::Io {
        action,
        path,
        source,
    }
}

/// The binary this process runs from: `/proc/self/exe`, which names the file even when the
/// image's PATH does not (and even if it was replaced on disk since).
pub fn current_exe() -> PathBuf {
    PathBuf::from("/proc/self/exe")
}

/// Copy `source` to `dir/initguard`; returns the installed path.
pub fn install(source: &Path, dir: &Path) -> Result<PathBuf, InstallError> {
    let target = dir.join("initguard");
    let tmp = dir.join(format!(".initguard.tmp-{}", std::process::id()));
    let result = (|| {
        let mut from = File::open(source).map_err(io("read", source))?;
        let mut to = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o755)
            .open(&tmp)
            .map_err(io("create", &tmp))?;
        io::copy(&mut from, &mut to).map_err(io("write", &tmp))?;
        // The umask may have narrowed the mode given at creation.
        to.set_permissions(fs::Permissions::from_mode(0o755))
            .map_err(io("set the mode of", &tmp))?;
        to.sync_all().map_err(io("sync", &tmp))?;
        fs::rename(&tmp, &target).map_err(io("rename into place", &target))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io("sync", dir))?;
        Ok(target.clone())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_atomically_with_mode_0755_and_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::write(&src, b"#!/bin/sh\necho hi\n").unwrap();
        let out = dir.path().join("out");
        fs::create_dir(&out).unwrap();
        fs::write(out.join("initguard"), b"old").unwrap();
        let installed = install(&src, &out).unwrap();
        assert_eq!(installed, out.join("initguard"));
        assert_eq!(fs::read(&installed).unwrap(), fs::read(&src).unwrap());
        let mode = fs::metadata(&installed).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o755);
        let left: Vec<_> = fs::read_dir(&out).unwrap().collect();
        assert_eq!(left.len(), 1, "no temp file left behind");
    }

    #[test]
    fn a_missing_directory_is_a_typed_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = install(&current_exe(), &dir.path().join("nope")).unwrap_err();
        let InstallError::Io { action, .. } = &err;
        assert_eq!(*action, "create");
    }
}
