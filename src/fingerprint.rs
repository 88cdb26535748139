//! The fingerprint: SHA-256 over a canonical encoding of the command, its input files and trees,
//! chosen environment values and a version string. Reads input files; writes nothing. Must never
//! depend on directory iteration order, mtimes, or where the inputs are mounted.

use sha2::{Digest, Sha256};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Format version of the canonical encoding; changing the encoding must change this tag.
const ENCODING_TAG: &[u8] = b"initguard-fingerprint-v1";

#[derive(Debug, thiserror::Error)]
pub enum FingerprintError {
    #[error("cannot read --input {}: {source}", path.display())]
    Input {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What the fingerprint is computed from.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    pub argv: Vec<String>,
    pub inputs: Vec<PathBuf>,
    pub input_env: Vec<String>,
    pub version: Option<String>,
    /// Further named contents (e.g. an SQL task's text), hashed like a file.
    pub extra: Vec<(String, Vec<u8>)>,
}

/// One line of `--print-fingerprint`: what went in, and its own digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Component {
    pub kind: &'static str,
    pub label: String,
    pub digest: String,
}

impl Component {
    /// The digest as `--print-fingerprint` may show it. An environment value's digest is never
    /// shown: it is unsalted, so a short secret (a PIN) is recovered from it by trying them all.
    pub fn shown_digest(&self) -> Option<&str> {
        (self.kind != "env").then_some(self.digest.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    pub value: String,
    pub components: Vec<Component>,
}

/// Length-prefixed framing so that no two different component lists encode to the same bytes.
/// Hand-written because it is four lines and the encoding must stay stable forever.
fn frame(h: &mut Sha256, bytes: &[u8]) {
    h.update((bytes.len() as u64).to_be_bytes());
    h.update(bytes);
}

fn hex_digest(h: Sha256) -> String {
    format!("sha256:{}", hex::encode(h.finalize()))
}

fn digest_of(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        frame(&mut h, p);
    }
    hex_digest(h)
}

pub fn compute(src: &Sources) -> Result<Fingerprint, FingerprintError> {
    let mut components = Vec::new();
    // SQL tasks have no command: no argv component rather than an empty one.
    if !src.argv.is_empty() {
        let argv: Vec<&[u8]> = src.argv.iter().map(|a| a.as_bytes()).collect();
        components.push(Component {
            kind: "argv",
            label: src.argv.join(" "),
            digest: digest_of(&argv),
        });
    }
    let mut inputs = Vec::new();
    // One read buffer for every file: allocating (and zeroing) it per file would cost more than
    // hashing a tree of small files.
    let mut buf = vec![0u8; READ_BUFFER];
    for path in &src.inputs {
        let (content, files) = digest_input(path, &mut buf)?;
        // The input's own name counts (swapping the contents of a.env and b.env is a change),
        // the directories above it do not (mount points differ between Pods and machines).
        let name = path
            .file_name()
            .map(|n| n.as_encoded_bytes().to_vec())
            .unwrap_or_default();
        let digest = digest_of(&[&name, content.as_bytes()]);
        inputs.push(Component {
            kind: "input",
            label: format!(
                "{} ({files} file{})",
                path.display(),
                if files == 1 { "" } else { "s" }
            ),
            digest,
        });
    }
    // Order of --input flags must not matter: sort by content digest, not by the path given.
    inputs.sort_by(|a, b| a.digest.cmp(&b.digest));
    components.extend(inputs);
    let mut names = src.input_env.clone();
    names.sort();
    names.dedup();
    for name in names {
        // Values may be secrets: neither they nor their digest are ever shown (`shown_digest`).
        let (label, digest) = match std::env::var_os(&name) {
            Some(v) => (
                format!("{name} (set)"),
                digest_of(&[b"set", name.as_bytes(), v.as_encoded_bytes()]),
            ),
            None => (
                format!("{name} (unset)"),
                digest_of(&[b"unset", name.as_bytes()]),
            ),
        };
        components.push(Component {
            kind: "env",
            label,
            digest,
        });
    }
    if let Some(v) = &src.version {
        components.push(Component {
            kind: "version",
            label: v.clone(),
            digest: digest_of(&[v.as_bytes()]),
        });
    }
    for (name, bytes) in &src.extra {
        components.push(Component {
            kind: "content",
            label: name.clone(),
            digest: digest_of(&[bytes]),
        });
    }
    let mut h = Sha256::new();
    frame(&mut h, ENCODING_TAG);
    for c in &components {
        frame(&mut h, c.kind.as_bytes());
        frame(&mut h, c.digest.as_bytes());
    }
    Ok(Fingerprint {
        value: hex_digest(h),
        components,
    })
}

/// Digest of one `--input`: a file, or a whole tree. Symlinks are followed (ConfigMap and Secret
/// volumes are made of them); names starting with `..` are skipped because they are the volume's
/// timestamped internals (`..data`, `..2024_…`), which change name without changing content.
fn digest_input(root: &Path, buf: &mut [u8]) -> Result<(String, usize), FingerprintError> {
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| FingerprintError::Input { path, source }
    };
    let meta = fs::metadata(root).map_err(err(root))?;
    if meta.is_file() {
        let digest = digest_file(root, exec_bit(&meta), buf).map_err(err(root))?;
        return Ok((digest, 1));
    }
    let mut entries: Vec<(Vec<u8>, String)> = Vec::new();
    let walker = walkdir::WalkDir::new(root)
        .follow_links(true)
        .min_depth(1)
        .into_iter()
        .filter_entry(|e| !e.file_name().to_string_lossy().starts_with(".."));
    for entry in walker {
        let entry = entry.map_err(|e| FingerprintError::Input {
            path: e
                .path()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| root.to_path_buf()),
            source: e.into(),
        })?;
        let rel = entry
            .path()
            .strip_prefix(root)
            .unwrap_or(entry.path())
            .as_os_str()
            .as_encoded_bytes()
            .to_vec();
        let meta = entry.metadata().map_err(|e| FingerprintError::Input {
            path: entry.path().to_path_buf(),
            source: e.into(),
        })?;
        let digest = if meta.is_dir() {
            digest_of(&[b"dir"])
        } else if meta.is_file() {
            digest_file(entry.path(), exec_bit(&meta), buf).map_err(err(entry.path()))?
        } else {
            // FIFOs, sockets, devices: reading them could block forever; their name counts.
            digest_of(&[b"special"])
        };
        entries.push((rel, digest));
    }
    entries.sort();
    let files = entries.len();
    let mut h = Sha256::new();
    frame(&mut h, b"tree");
    for (rel, digest) in &entries {
        frame(&mut h, rel);
        frame(&mut h, digest.as_bytes());
    }
    Ok((hex_digest(h), files))
}

/// Read buffer for file contents: memory stays bounded by this, whatever the size of an input.
const READ_BUFFER: usize = 64 * 1024;
/// Tries for a file whose length changes while it is read (then the last length read is used).
const READ_TRIES: usize = 3;

/// `digest_of(&[b"file", exec, content])`, streamed: the framing needs the content's length
/// before the content, so the length comes from `fstat` and is checked against the bytes read.
fn digest_file(path: &Path, exec: &[u8], buf: &mut [u8]) -> std::io::Result<String> {
    use std::io::Read;
    let mut file = fs::File::open(path)?;
    let mut expected = file.metadata()?.len();
    for _ in 0..READ_TRIES {
        let mut h = Sha256::new();
        frame(&mut h, b"file");
        frame(&mut h, exec);
        h.update(expected.to_be_bytes());
        let mut read = 0u64;
        loop {
            let n = match file.read(buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            h.update(&buf[..n]);
            read += n as u64;
        }
        if read == expected {
            return Ok(hex_digest(h));
        }
        // The file changed under us (or reports a size it does not have): hash it again with the
        // length it had on this read.
        expected = read;
        file = fs::File::open(path)?;
    }
    Err(std::io::Error::other(
        "the file kept changing size while it was read",
    ))
}

/// SHA-256 of a file's bytes, streamed, labelled like every digest here (`sha256:…`). Used by
/// verify's `--probe-dir` listing, which must see the same content the fingerprint would.
pub(crate) fn file_digest(path: &Path) -> std::io::Result<String> {
    let mut h = Sha256::new();
    std::io::copy(&mut fs::File::open(path)?, &mut HashWriter(&mut h))?;
    Ok(hex_digest(h))
}

/// `io::Write` into a hash, for `io::copy`: sha2 0.11 (the version the rest of the tree uses)
/// no longer implements `io::Write` itself.
struct HashWriter<'a>(&'a mut Sha256);

impl std::io::Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn exec_bit(meta: &fs::Metadata) -> &'static [u8] {
    if meta.permissions().mode() & 0o111 != 0 {
        b"x"
    } else {
        b"-"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sources(inputs: Vec<PathBuf>) -> Sources {
        Sources {
            argv: vec!["./run.sh".into()],
            inputs,
            ..Sources::default()
        }
    }

    fn write_tree(root: &Path, files: &[(String, Vec<u8>)]) {
        for (name, content) in files {
            let p = root.join(name);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, content).unwrap();
        }
    }

    #[test]
    fn location_and_mtime_do_not_matter() {
        let (ta, tb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        // Same input name, mounted in different places.
        let (a, b) = (ta.path().join("migrations"), tb.path().join("migrations"));
        let files = vec![
            ("x/1.sql".to_string(), b"one".to_vec()),
            ("2.sql".into(), b"two".to_vec()),
        ];
        write_tree(a.as_path(), &files);
        write_tree(b.as_path(), &files);
        let fa = compute(&sources(vec![a.as_path().into()])).unwrap();
        let fb = compute(&sources(vec![b.as_path().into()])).unwrap();
        assert_eq!(fa.value, fb.value);
        let f = fs::File::options()
            .write(true)
            .open(a.as_path().join("2.sql"))
            .unwrap();
        f.set_modified(std::time::SystemTime::UNIX_EPOCH).unwrap();
        assert_eq!(
            compute(&sources(vec![a.as_path().into()])).unwrap().value,
            fa.value
        );
    }

    #[test]
    fn content_exec_bit_argv_env_and_version_matter() {
        let d = tempfile::tempdir().unwrap();
        write_tree(d.path(), &[("a".into(), b"1".to_vec())]);
        let base = compute(&sources(vec![d.path().into()])).unwrap().value;
        fs::write(d.path().join("a"), b"2").unwrap();
        let changed = compute(&sources(vec![d.path().into()])).unwrap().value;
        assert_ne!(base, changed);
        fs::set_permissions(d.path().join("a"), fs::Permissions::from_mode(0o755)).unwrap();
        assert_ne!(
            compute(&sources(vec![d.path().into()])).unwrap().value,
            changed
        );
        let mut s = sources(vec![]);
        let plain = compute(&s).unwrap().value;
        s.version = Some("v2".into());
        assert_ne!(compute(&s).unwrap().value, plain);
        s.argv.push("--x".into());
        let with_arg = compute(&s).unwrap().value;
        s.input_env = vec!["INITGUARD_FP_TEST_SURELY_UNSET".into()];
        assert_ne!(compute(&s).unwrap().value, with_arg);
    }

    #[test]
    fn argv_boundaries_are_unambiguous() {
        let mut a = sources(vec![]);
        a.argv = vec!["ab".into(), "c".into()];
        let mut b = sources(vec![]);
        b.argv = vec!["a".into(), "bc".into()];
        assert_ne!(compute(&a).unwrap().value, compute(&b).unwrap().value);
    }

    #[test]
    fn input_order_does_not_matter() {
        let d = tempfile::tempdir().unwrap();
        write_tree(
            d.path(),
            &[("a".into(), b"1".to_vec()), ("b".into(), b"2".to_vec())],
        );
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        let ab = compute(&sources(vec![a.clone(), b.clone()])).unwrap().value;
        let ba = compute(&sources(vec![b, a])).unwrap().value;
        assert_eq!(ab, ba);
    }

    #[test]
    fn configmap_internals_are_skipped() {
        let td = tempfile::tempdir().unwrap();
        let d = td.path().join("config");
        write_tree(d.as_path(), &[("..2024_01_01/k".into(), b"v".to_vec())]);
        std::os::unix::fs::symlink("..2024_01_01", d.as_path().join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/k", d.as_path().join("k")).unwrap();
        let te = tempfile::tempdir().unwrap();
        let e = te.path().join("config");
        write_tree(e.as_path(), &[("k".into(), b"v".to_vec())]);
        assert_eq!(
            compute(&sources(vec![d.as_path().into()])).unwrap().value,
            compute(&sources(vec![e.as_path().into()])).unwrap().value
        );
    }

    #[test]
    fn swapping_the_contents_of_two_inputs_is_a_change() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("a.env"), d.path().join("b.env"));
        fs::write(&a, "X=1").unwrap();
        fs::write(&b, "X=2").unwrap();
        let before = compute(&sources(vec![a.clone(), b.clone()])).unwrap().value;
        fs::write(&a, "X=2").unwrap();
        fs::write(&b, "X=1").unwrap();
        assert_ne!(compute(&sources(vec![a, b])).unwrap().value, before);
    }

    #[test]
    fn a_fifo_in_an_input_tree_is_not_read() {
        let d = tempfile::tempdir().unwrap();
        write_tree(d.path(), &[("a".into(), b"1".to_vec())]);
        nix::unistd::mkfifo(&d.path().join("pipe"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert!(compute(&sources(vec![d.path().into()])).is_ok());
    }

    #[test]
    fn missing_input_is_an_error() {
        let err = compute(&sources(vec!["/nonexistent/x".into()])).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/x"));
    }

    /// The fixed input of the golden tests: an input named `migrations` holding a plain file, an
    /// executable script, a nested directory, an empty directory and a ConfigMap-style volume
    /// (`..2024_01_01/`, `..data` -> it, `app.conf` -> `..data/app.conf`) whose `..` internals are
    /// skipped while the symlink to them is followed.
    fn golden_tree(parent: &Path) -> PathBuf {
        let root = parent.join("migrations");
        write_tree(
            &root,
            &[
                (
                    "001_init.sql".into(),
                    b"CREATE TABLE t (id int);\n".to_vec(),
                ),
                ("run.sh".into(), b"#!/bin/sh\necho hi\n".to_vec()),
                (
                    "nested/deeper/002_more.sql".into(),
                    b"ALTER TABLE t ADD x int;".to_vec(),
                ),
                ("..2024_01_01/app.conf".into(), b"mode=fast\n".to_vec()),
            ],
        );
        fs::create_dir(root.join("empty")).unwrap();
        for f in [
            "001_init.sql",
            "nested/deeper/002_more.sql",
            "..2024_01_01/app.conf",
        ] {
            fs::set_permissions(root.join(f), fs::Permissions::from_mode(0o644)).unwrap();
        }
        fs::set_permissions(root.join("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink("..2024_01_01", root.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/app.conf", root.join("app.conf")).unwrap();
        root
    }

    fn golden_sources(root: PathBuf) -> Sources {
        Sources {
            argv: vec!["./migrate.sh".into(), "--db".into(), "main db".into()],
            inputs: vec![root],
            // Unset in any sane environment: the "set" encoding is pinned end to end, by
            // `fingerprint_encoding_is_pinned` in tests/file_store.rs, which can give the child
            // process an environment (setting our own would need `unsafe`).
            input_env: vec!["INITGUARD_GOLDEN_SURELY_UNSET".into()],
            version: Some("v1.2.3".into()),
            extra: vec![],
        }
    }

    /// Pins the canonical encoding. The value was computed with the encoding as of schema 1 and
    /// checked against an independent re-implementation of the framing described above. If this fails, the change re-runs every task of every fleet
    /// on upgrade: keep the encoding, or bump ENCODING_TAG and say so in the release notes.
    /// Never "fix" the test by pasting the new value.
    #[test]
    fn fingerprint_encoding_is_pinned() {
        let td = tempfile::tempdir().unwrap();
        let fp = compute(&golden_sources(golden_tree(td.path()))).unwrap();
        let kinds: Vec<&str> = fp.components.iter().map(|c| c.kind).collect();
        assert_eq!(kinds, ["argv", "input", "env", "version"]);
        // 7 entries: the `..` internals are not among them, `app.conf` (through them) is.
        assert!(
            fp.components[1].label.ends_with("(7 files)"),
            "{:?}",
            fp.components[1]
        );
        assert_eq!(
            fp.value,
            "sha256:2b50baa80d3bd2c031fc6ab4c370d3e5283191df7e7dd2a60f734a4c982ed2ea"
        );
    }

    #[test]
    fn fingerprint_component_digests_are_pinned() {
        let td = tempfile::tempdir().unwrap();
        let fp = compute(&golden_sources(golden_tree(td.path()))).unwrap();
        let digests: Vec<&str> = fp.components.iter().map(|c| c.digest.as_str()).collect();
        assert_eq!(
            digests,
            [
                "sha256:7e737307a9c6604732b8bf8856944ca47fc84de0ca702edc0be61bc64d2cf204",
                "sha256:25686a127593a834b835ac8402feef7b5a3dfb3c7a1bc9a04ebd1e8cc0608932",
                "sha256:136c9d7af92a0511717734846ba1ef82726e49b3bed4f9f960d2964d4a9abdbb",
                "sha256:d42f588c2085a252d0dda69aaf62814a2335c58beb102b64a4dce5ad410fbf23"
            ]
        );
        // A single file as an input is encoded without the tree framing.
        let file = compute(&Sources {
            inputs: vec![td.path().join("migrations/run.sh")],
            ..Sources::default()
        })
        .unwrap();
        assert_eq!(
            file.value,
            "sha256:2e5b69d1e4f98e8577e024d37d70e761b990ccb4a2f4b1cf77df18e41aa58e92"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn tree_digest_ignores_creation_order(
            files in proptest::collection::btree_map("[a-z]{1,6}(/[a-z]{1,6})?", proptest::collection::vec(any::<u8>(), 0..64), 1..12)
        ) {
            // Names that are both a file and a directory prefix cannot coexist on disk.
            let files: Vec<(String, Vec<u8>)> = files.into_iter().collect();
            let clash = files.iter().any(|(a, _)| files.iter().any(|(b, _)| b.starts_with(&format!("{a}/"))));
            prop_assume!(!clash);
            let (ta, tb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
            let (a, b) = (ta.path().join("in"), tb.path().join("in"));
            write_tree(&a, &files);
            let mut rev = files.clone();
            rev.reverse();
            write_tree(&b, &rev);
            prop_assert_eq!(
                compute(&sources(vec![a.clone()])).unwrap().value,
                compute(&sources(vec![b.clone()])).unwrap().value
            );
        }
    }
}

#[cfg(test)]
mod golden {
    //! Pins the encoding: these values were computed by the release that first shipped it. A
    //! change here re-runs every task of every fleet on upgrade.
    use super::*;

    #[test]
    fn fixed_tree_argv_env_and_version_give_a_fixed_fingerprint() {
        let td = tempfile::tempdir().unwrap();
        let root = td.path().join("migrations");
        fs::create_dir_all(root.join("sub")).unwrap();
        fs::write(root.join("001.sql"), b"CREATE TABLE t (id int);\n").unwrap();
        fs::write(root.join("sub/002.sh"), b"#!/bin/sh\necho hi\n").unwrap();
        fs::set_permissions(root.join("sub/002.sh"), fs::Permissions::from_mode(0o755)).unwrap();
        // A file bigger than any read buffer, so that streaming is covered too.
        let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        fs::write(root.join("big.bin"), &big).unwrap();
        let single = td.path().join("app.env");
        fs::write(&single, b"X=1\n").unwrap();
        let src = Sources {
            argv: vec!["./migrate.sh".into(), "--all".into()],
            inputs: vec![root, single],
            input_env: vec!["INITGUARD_GOLDEN_SURELY_UNSET".into()],
            version: Some("v1.2.3".into()),
            extra: vec![("--sql-inline".into(), b"SELECT 1".to_vec())],
        };
        let fp = compute(&src).unwrap();
        assert_eq!(
            fp.value,
            "sha256:7b589438b174d63ae431d5da94d62d11fdebfa9f4c4d2e583a306df7f18cd127"
        );
    }

    /// verify's `--probe-dir` digests, streamed through `HashWriter`: the plain SHA-256 of the
    /// bytes (FIPS 180-2's "abc" vector), across more than one write.
    #[test]
    fn file_digest_is_the_sha256_of_the_bytes() {
        let td = tempfile::tempdir().unwrap();
        let small = td.path().join("abc");
        fs::write(&small, b"abc").unwrap();
        assert_eq!(
            file_digest(&small).unwrap(),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        // 1,000,000 × 'a', the standard long vector: bigger than io::copy's buffer.
        let long = td.path().join("a");
        fs::write(&long, vec![b'a'; 1_000_000]).unwrap();
        assert_eq!(
            file_digest(&long).unwrap(),
            "sha256:cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"
        );
    }
}
