//! verify's state probe: what `--probe CMD` prints and what `--probe-dir DIR` holds, as text
//! normalised by the `--ignore` patterns. It only observes: it never changes the state it
//! describes, and it never runs the command under test.

use regex::Regex;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// What replaces the text an `--ignore` pattern matches.
pub const IGNORED: &str = "<ignored>";

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("--probe {command:?} cannot start: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error("--probe-dir {}: cannot read {}: {source}", root.display(), path.display())]
    Dir {
        root: PathBuf,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// How to look at the state: a command, a directory tree, or both.
#[derive(Debug, Clone)]
pub struct Probe {
    pub command: Option<String>,
    pub dir: Option<PathBuf>,
    pub ignore: Vec<Regex>,
}

/// The state as the probe saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    /// Normalised text, one line per fact, ending in a newline (so diffs of it are clean).
    pub text: String,
    /// Set when `--probe CMD` exited non-zero: how, and the first line it wrote to stderr.
    /// The failure is also part of `text`, since a state the probe cannot read is a state.
    pub probe_failed: Option<String>,
}

impl Probe {
    pub async fn take(&self) -> Result<State, ProbeError> {
        let mut text = String::new();
        let mut probe_failed = None;
        let both = self.command.is_some() && self.dir.is_some();
        if let Some(dir) = &self.dir {
            if both {
                text.push_str("== --probe-dir ==\n");
            }
            text.push_str(&listing(dir)?);
        }
        if let Some(command) = &self.command {
            if both {
                text.push_str("== --probe ==\n");
            }
            let out = tokio::process::Command::new("/bin/sh")
                .args(["-c", command])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .output()
                .await
                .map_err(|source| ProbeError::Spawn {
                    command: command.clone(),
                    source,
                })?;
            text.push_str(&String::from_utf8_lossy(&out.stdout));
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            if !out.status.success() {
                let how = match out.status.code() {
                    Some(c) => format!("exited {c}"),
                    None => "was killed by a signal".to_string(),
                };
                let stderr = String::from_utf8_lossy(&out.stderr);
                let first = stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
                text.push_str(&format!("[--probe {how}]\n"));
                probe_failed = Some(if first.is_empty() {
                    how
                } else {
                    format!("{how}: {}", first.trim())
                });
            }
        }
        Ok(State {
            text: normalise(&text, &self.ignore),
            probe_failed,
        })
    }
}

/// Replace whatever an `--ignore` pattern matches, line by line (so `^` and `$` anchor lines).
pub fn normalise(text: &str, ignore: &[Regex]) -> String {
    if ignore.is_empty() {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let (body, end) = match line.strip_suffix('\n') {
            Some(b) => (b, "\n"),
            None => (line, ""),
        };
        let mut body = body.to_string();
        for re in ignore {
            body = re.replace_all(&body, IGNORED).into_owned();
        }
        out.push_str(&body);
        out.push_str(end);
    }
    out
}

/// One line per entry of the tree at `root`, depth first in name order: kind, permission bits,
/// owner, size and content digest (files), relative path, link target (symlinks). No times: a
/// task that rewrites a file with the same bytes has not changed the state. Unlike the
/// fingerprint's walk, symlinks are not followed and no name is skipped, because here a file
/// turning into a link is exactly the kind of change to report.
pub fn listing(root: &Path) -> Result<String, ProbeError> {
    let err = |path: &Path, source: std::io::Error| ProbeError::Dir {
        root: root.to_path_buf(),
        path: path.to_path_buf(),
        source,
    };
    if std::fs::symlink_metadata(root).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound) {
        return Ok("(missing) .\n".to_string());
    }
    let mut out = String::new();
    let walker = walkdir::WalkDir::new(root)
        .follow_links(false)
        .sort_by_file_name();
    for entry in walker {
        let entry = entry.map_err(|e| {
            let path = e.path().unwrap_or(root).to_path_buf();
            err(&path, e.into())
        })?;
        let path = entry.path();
        let meta = entry.metadata().map_err(|e| err(path, e.into()))?;
        let rel = match path.strip_prefix(root) {
            Ok(r) if !r.as_os_str().is_empty() => r.to_string_lossy().into_owned(),
            _ => ".".to_string(),
        };
        let ft = meta.file_type();
        let kind = if ft.is_dir() {
            "dir"
        } else if ft.is_file() {
            "file"
        } else if ft.is_symlink() {
            "link"
        } else if ft.is_fifo() {
            "fifo"
        } else if ft.is_socket() {
            "sock"
        } else if ft.is_block_device() {
            "block"
        } else if ft.is_char_device() {
            "char"
        } else {
            "other"
        };
        let (size, digest) = if ft.is_file() {
            let d = crate::fingerprint::file_digest(path).map_err(|e| err(path, e))?;
            // 64 bits of the digest tell two contents apart and keep diff lines readable.
            let short: String = d.chars().take("sha256:".len() + 16).collect();
            (meta.len().to_string(), short)
        } else {
            // A directory's size is the file system's business, not the task's.
            ("-".to_string(), "-".to_string())
        };
        let target = if ft.is_symlink() {
            let t = std::fs::read_link(path).map_err(|e| err(path, e))?;
            format!(" -> {}", t.to_string_lossy())
        } else {
            String::new()
        };
        out.push_str(&format!(
            "{kind} {:04o} {}:{} {size} {digest} {rel}{target}\n",
            meta.mode() & 0o7777,
            meta.uid(),
            meta.gid(),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    fn tree() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir(d.path().join("sub")).unwrap();
        fs::write(d.path().join("sub/a"), "one\n").unwrap();
        fs::write(d.path().join("b"), "two\n").unwrap();
        d
    }

    #[test]
    fn listing_ignores_mtimes() {
        let d = tree();
        let before = listing(d.path()).unwrap();
        let f = fs::File::options()
            .write(true)
            .open(d.path().join("sub/a"))
            .unwrap();
        f.set_modified(std::time::SystemTime::UNIX_EPOCH).unwrap();
        // Rewriting the same bytes is no change either.
        fs::write(d.path().join("b"), "two\n").unwrap();
        assert_eq!(listing(d.path()).unwrap(), before);
    }

    #[test]
    fn listing_sees_content_mode_and_type_changes() {
        let d = tree();
        let base = listing(d.path()).unwrap();
        fs::write(d.path().join("b"), "TWO\n").unwrap();
        let content = listing(d.path()).unwrap();
        assert_ne!(content, base, "content change");
        fs::set_permissions(d.path().join("b"), fs::Permissions::from_mode(0o600)).unwrap();
        let mode = listing(d.path()).unwrap();
        assert_ne!(mode, content, "mode change");
        assert!(mode.contains("file 0600 "), "{mode}");
        fs::remove_file(d.path().join("b")).unwrap();
        fs::create_dir(d.path().join("b")).unwrap();
        let dir = listing(d.path()).unwrap();
        assert!(dir.contains("dir "), "{dir}");
        assert_ne!(dir, mode, "file became a directory");
        fs::remove_dir(d.path().join("b")).unwrap();
        std::os::unix::fs::symlink("sub/a", d.path().join("b")).unwrap();
        let link = listing(d.path()).unwrap();
        assert!(link.contains(" b -> sub/a\n"), "{link}");
    }

    #[test]
    fn listing_sees_owner_changes() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIP: changing a file's owner needs root");
            return;
        }
        let d = tree();
        let before = listing(d.path()).unwrap();
        std::os::unix::fs::chown(d.path().join("b"), Some(1), Some(1)).unwrap();
        let after = listing(d.path()).unwrap();
        assert_ne!(after, before);
        assert!(after.contains(" 1:1 4 "), "{after}");
    }

    #[test]
    fn listing_of_a_missing_dir_is_a_state_not_an_error() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(listing(&d.path().join("nope")).unwrap(), "(missing) .\n");
    }

    #[test]
    fn ignore_patterns_replace_matches_line_by_line() {
        let re = vec![
            Regex::new(r"\d{4}-\d\d-\d\d").unwrap(),
            Regex::new(r"^id=.*$").unwrap(),
        ];
        assert_eq!(
            normalise("at 2024-01-02 ok\nid=abc\nid=x\nkeep\n", &re),
            "at <ignored> ok\n<ignored>\n<ignored>\nkeep\n"
        );
    }

    #[tokio::test]
    async fn a_failing_probe_command_is_part_of_the_state() {
        let p = Probe {
            command: Some("echo seen; echo broken >&2; exit 3".into()),
            dir: None,
            ignore: vec![],
        };
        let s = p.take().await.unwrap();
        assert_eq!(s.text, "seen\n[--probe exited 3]\n");
        assert_eq!(s.probe_failed.as_deref(), Some("exited 3: broken"));
    }
}
