//! Discovery: which files of a steps directory are steps, in which order, with which checksum.
//! Reads the directory and the step files; writes nothing, connects to nothing.
//!
//! File names (each file directly in DIR):
//! - `V<version>__<description>.<ext>`: a versioned step, run once. The version is numbers
//!   separated by `.` or `_` (`V1_1__x.sql` is version 1.1, see `version`); the description is
//!   what follows `__`, without the extension, with `_` shown as a space.
//! - `R__<description>.<ext>`: a repeatable step, run again whenever its checksum changes; its
//!   identity is its description.
//! - `<digits>_<description>.up.sql`: golang-migrate's layout (also sqlx's reversible one), read
//!   as version `<digits>`; its `.down.sql` twin is ignored (initguard never migrates down).
//! - `.sql` (any case) is an SQL step; any other extension, or none, is a script step and must be
//!   executable (an executable `.sql` file is still SQL).
//!
//! Ignored: names starting with `.` (dotfiles, `.gitkeep`), subdirectories (and symlinks to
//! directories) — steps are never read from them, so a Flyway layout with nested folders must be
//! flattened — and golang-migrate `.down.sql` files. Everything else is a step or a problem:
//! a name that is not a step name, a file that cannot be read, a special file (FIFO, socket) or a
//! name that is not UTF-8 is `UnreadableName`; a non-SQL file without an execute bit is
//! `NotExecutable`; two files with one version (numerically: `V1` and `V1.0`) or one repeatable
//! description are `Duplicate` (both stay in `steps`, so status shows them). Problems do not stop
//! discovery; only a DIR that cannot be read at all is an error.

use super::{Kind, Problem, ProblemKind, Step, StepId, StepSet, checksum, version};
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The first line of an SQL step that makes it run statement by statement.
pub const NO_TRANSACTION_MARKER: &str = "initguard:no-transaction";

#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    #[error("steps directory {} does not exist", dir.display())]
    Missing { dir: PathBuf },
    #[error("{} is not a directory (give `initguard steps` the directory of the step files)", dir.display())]
    NotADirectory { dir: PathBuf },
    #[error("cannot read steps directory {}: {source}", dir.display())]
    ReadDir { dir: PathBuf, source: io::Error },
}

impl DiscoverError {
    /// The underlying I/O error, for exit-code classification (missing, permission, I/O).
    pub fn io_error(&self) -> Option<&io::Error> {
        match self {
            DiscoverError::ReadDir { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Reads DIR's steps (see the module comment for the rules).
pub fn discover(dir: &Path) -> Result<StepSet, DiscoverError> {
    list(dir).map(Listing::inspect)
}

/// DIR's entries, listed and sorted, not looked at yet.
#[derive(Debug)]
pub struct Listing {
    dir: PathBuf,
    /// DIR itself, open: step files are opened relative to it, without walking DIR's path again
    /// for each of them (a quarter of discovery's time with 1,000 files).
    handle: fs::File,
    entries: Vec<Entry>,
}

#[derive(Debug)]
struct Entry {
    name: std::ffi::OsString,
    /// The directory listing says it is a regular file (no `stat` needed); anything else,
    /// a symlink or a file system that does not say, is looked at with `stat`.
    regular: bool,
}

/// DIR, found to be a directory this process can open, not listed yet: every error `discover`
/// can return but a failing read of an open directory is found here.
#[derive(Debug)]
pub struct OpenDir {
    dir: PathBuf,
    handle: fs::File,
}

/// Opens DIR: the cheapest check that it is a readable directory (nothing is listed).
pub fn open_dir(dir: &Path) -> Result<OpenDir, DiscoverError> {
    let meta = fs::metadata(dir).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => DiscoverError::Missing {
            dir: dir.to_path_buf(),
        },
        _ => DiscoverError::ReadDir {
            dir: dir.to_path_buf(),
            source,
        },
    })?;
    if !meta.is_dir() {
        return Err(DiscoverError::NotADirectory {
            dir: dir.to_path_buf(),
        });
    }
    let handle = fs::File::open(dir).map_err(|source| DiscoverError::ReadDir {
        dir: dir.to_path_buf(),
        source,
    })?;
    Ok(OpenDir {
        dir: dir.to_path_buf(),
        handle,
    })
}

/// Lists DIR: the cheap first half of `discover` (no file is opened or hashed).
pub fn list(dir: &Path) -> Result<Listing, DiscoverError> {
    open_dir(dir)?.list()
}

impl OpenDir {
    /// Lists the directory, sorted by name. Through the handle step files are opened from, not
    /// DIR's path again: the names listed are the names of that directory's files, whatever
    /// DIR's path leads to by now.
    pub fn list(self) -> Result<Listing, DiscoverError> {
        use std::os::unix::ffi::OsStringExt;
        let read_err = |e: nix::Error| DiscoverError::ReadDir {
            dir: self.dir.clone(),
            source: io::Error::from(e),
        };
        let mut listed = nix::unistd::dup(&self.handle)
            .and_then(nix::dir::Dir::from_fd)
            .map_err(read_err)?;
        let mut entries = Vec::new();
        for entry in listed.iter() {
            let entry = entry.map_err(read_err)?;
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            entries.push(Entry {
                name: std::ffi::OsString::from_vec(name.to_vec()),
                regular: entry.file_type() == Some(nix::dir::Type::File),
            });
        }
        // Names in one directory are unique: an unstable sort gives the one order there is.
        entries.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        Ok(Listing {
            dir: self.dir,
            handle: self.handle,
            entries,
        })
    }
}

impl Listing {
    /// Looks at every entry: parses names, reads and hashes the step files, finds problems.
    /// One thread: two, each opening half of the files of one directory, were no faster (they
    /// contend in the kernel for the directory) and cost a thread.
    pub fn inspect(self) -> StepSet {
        let dir = self.dir.as_path();
        let mut set = StepSet {
            dir: dir.to_path_buf(),
            ..StepSet::default()
        };
        set.steps.reserve(self.entries.len());
        for entry in self.entries {
            if entry.name.as_encoded_bytes().first() == Some(&b'.') {
                continue;
            }
            match look_at(dir, &self.handle, entry) {
                Found::Step(step) => set.steps.push(step),
                Found::Problem(p) => set.problems.push(*p),
                Found::Ignored => {}
            }
        }
        // (version, file) is unique: an unstable sort gives the one order there is.
        set.steps
            .sort_unstable_by(|a, b| a.id.cmp(&b.id).then_with(|| a.file.cmp(&b.file)));
        set.problems.extend(duplicates(dir, &set.steps));
        set
    }
}

/// One entry's finding (dotfiles already left out).
fn look_at(dir: &Path, handle: &fs::File, entry: Entry) -> Found {
    let path = dir.join(&entry.name);
    match entry.name.into_string() {
        Ok(name) => inspect(dir, handle, path, name, entry.regular),
        Err(name) => Found::Problem(Box::new(unreadable(
            &name.to_string_lossy(),
            "the file name is not valid UTF-8".into(),
            format!(
                "rename {} to a step name, or move it out of {}",
                path.display(),
                dir.display()
            ),
        ))),
    }
}

/// A problem is the rare finding: boxed, so that a step is not moved through a larger value.
enum Found {
    Step(Step),
    Problem(Box<Problem>),
    Ignored,
}

fn inspect(
    dir: &Path,
    handle: &fs::File,
    path: PathBuf,
    name: String,
    listed_regular: bool,
) -> Found {
    let problem = |p: Problem| Found::Problem(Box::new(p));
    let cannot_stat = |e: io::Error| {
        problem(unreadable(
            &name,
            format!("cannot read it: {e}"),
            format!(
                "fix or remove {} (a broken symlink?), or make it readable",
                path.display()
            ),
        ))
    };
    // A file the listing calls regular needs no `stat` (an SQL step never does; a script's
    // execute bit is looked at below); anything else (a symlink, say) is followed.
    let meta = if listed_regular {
        None
    } else {
        match fs::metadata(&path) {
            Ok(m) => Some(m),
            Err(e) => return cannot_stat(e),
        }
    };
    if let Some(meta) = &meta {
        if meta.is_dir() {
            return Found::Ignored;
        }
        if !meta.is_file() {
            return problem(unreadable(
                &name,
                "not a regular file (a FIFO, socket or device)".into(),
                format!("move {} out of {}", path.display(), dir.display()),
            ));
        }
    }
    let parsed = match parse_name(&name) {
        Parsed::Step(p) => p,
        Parsed::Ignored => return Found::Ignored,
        Parsed::Bad { detail, fix } => {
            return problem(unreadable(&name, detail, fix.for_file(dir, &name)));
        }
    };
    let kind = if parsed.sql { Kind::Sql } else { Kind::Script };
    let mode = match (kind, meta) {
        (Kind::Sql, _) => 0,
        (Kind::Script, Some(meta)) => meta.permissions().mode(),
        (Kind::Script, None) => match fs::metadata(&path) {
            Ok(m) => m.permissions().mode(),
            Err(e) => return cannot_stat(e),
        },
    };
    if kind == Kind::Script && mode & 0o111 == 0 {
        return problem(Problem {
            kind: ProblemKind::NotExecutable,
            step: Some(parsed.id.to_string()),
            file: Some(name.clone()),
            detail: "not a .sql file, and not executable, so it cannot run as a script".into(),
            fix: format!(
                "chmod +x {} to run it as a script, or give it a .sql extension (or move it out of {})",
                path.display(),
                dir.display()
            ),
        });
    }
    let mut head = [0u8; MARKER_HEAD];
    let read = open_in(handle, &name).and_then(|f| checksum::of_reader(f, &mut head));
    let (checksum, kept) = match read {
        Ok(got) => got,
        Err(e) => {
            return problem(unreadable(
                &name,
                format!("cannot read it: {e}"),
                format!("make {} readable (chmod +r)", path.display()),
            ));
        }
    };
    Found::Step(Step {
        id: parsed.id,
        description: parsed.description,
        kind,
        file: name,
        path,
        checksum,
        no_transaction: kind == Kind::Sql && marks_no_transaction(&head[..kept]),
    })
}

/// How much of a step file's start is kept to look for the first-line marker.
const MARKER_HEAD: usize = 512;

/// Opens `name` in the directory `handle` is open on, for reading. Non-blocking, so that a file
/// swapped for a FIFO since it was listed cannot hang discovery.
fn open_in(handle: &fs::File, name: &str) -> io::Result<fs::File> {
    use nix::fcntl::{OFlag, openat};
    use std::os::fd::AsFd;
    let fd = openat(
        handle.as_fd(),
        name,
        OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(io::Error::from)?;
    Ok(fs::File::from(fd))
}

fn unreadable(file: &str, detail: String, fix: String) -> Problem {
    Problem {
        kind: ProblemKind::UnreadableName,
        step: None,
        file: Some(file.to_string()),
        detail,
        fix,
    }
}

/// Whether a file's first bytes open with `-- initguard:no-transaction` alone on the first line
/// (a UTF-8 BOM, surrounding spaces and the line's CR tolerated).
pub fn marks_no_transaction(head: &[u8]) -> bool {
    let head = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
    let end = head
        .iter()
        .position(|&b| b == b'\n' || b == b'\r')
        .unwrap_or(head.len());
    let Ok(line) = std::str::from_utf8(&head[..end]) else {
        return false;
    };
    line.trim()
        .strip_prefix("--")
        .is_some_and(|rest| rest.trim_start() == NO_TRANSACTION_MARKER)
}

/// A step name, taken apart.
#[derive(Debug, PartialEq, Eq)]
struct Named {
    id: StepId,
    description: String,
    sql: bool,
}

#[derive(Debug, PartialEq, Eq)]
enum Parsed {
    Step(Named),
    Ignored,
    Bad { detail: String, fix: Fix },
}

/// What to tell the user to do with a badly named file.
#[derive(Debug, PartialEq, Eq)]
enum Fix {
    /// Rename it to this (a suggestion computed from the name).
    RenameTo(String),
    /// Name the rules.
    Rules,
}

impl Fix {
    fn for_file(&self, dir: &Path, name: &str) -> String {
        match self {
            Fix::RenameTo(new) => format!("rename {name} to {new}"),
            Fix::Rules => format!(
                "rename {name} to V<version>__<description>.sql (or .sh, any executable), \
                 R__<description>.sql, or <number>_<description>.up.sql; or move it out of {} \
                 (dotfiles and subdirectories are ignored)",
                dir.display()
            ),
        }
    }
}

/// Splits `<description>.<ext>`: `.sql` (any case) is SQL; otherwise the text after the last dot
/// is dropped as the script's extension (none: the whole name is the description).
fn split_ext(rest: &str) -> (&str, bool) {
    let n = rest.len();
    if n >= 4 && rest.is_char_boundary(n - 4) && rest[n - 4..].eq_ignore_ascii_case(".sql") {
        return (&rest[..n - 4], true);
    }
    match rest.rfind('.') {
        Some(i) => (&rest[..i], false),
        None => (rest, false),
    }
}

fn describe(raw: &str) -> String {
    raw.replace('_', " ")
}

fn parse_name(name: &str) -> Parsed {
    if let Some(rest) = name.strip_prefix("R__") {
        let (desc, sql) = split_ext(rest);
        if desc.is_empty() {
            return Parsed::Bad {
                detail: "a repeatable step needs a description (its identity)".into(),
                fix: Fix::RenameTo(format!("R__<description>{}", ext_of(name, sql))),
            };
        }
        return Parsed::Step(Named {
            id: StepId::Repeatable(describe(desc)),
            description: describe(desc),
            sql,
        });
    }
    if let Some(rest) = name.strip_prefix('V') {
        let Some(sep) = rest.find("__") else {
            return Parsed::Bad {
                detail: "no `__` (two underscores) between the version and the description".into(),
                fix: match split_single_underscore(rest) {
                    Some((v, d)) => Fix::RenameTo(format!("V{v}__{d}")),
                    None => Fix::Rules,
                },
            };
        };
        let (ver_text, rest) = (&rest[..sep], &rest[sep + 2..]);
        let version = match version::parse(ver_text) {
            Ok(v) => v,
            Err(e) => {
                return Parsed::Bad {
                    detail: e.to_string(),
                    fix: Fix::Rules,
                };
            }
        };
        let (desc, sql) = split_ext(rest);
        return Parsed::Step(Named {
            id: StepId::Versioned(version),
            description: describe(desc),
            sql,
        });
    }
    let digits = name.bytes().take_while(u8::is_ascii_digit).count();
    if digits > 0 && name.as_bytes().get(digits) == Some(&b'_') {
        let (num, rest) = (&name[..digits], &name[digits + 1..]);
        if rest.ends_with(".down.sql") {
            return Parsed::Ignored;
        }
        if let Some(desc) = rest.strip_suffix(".up.sql") {
            return match version::parse(num) {
                Ok(v) => Parsed::Step(Named {
                    id: StepId::Versioned(v),
                    description: describe(desc),
                    sql: true,
                }),
                Err(e) => Parsed::Bad {
                    detail: e.to_string(),
                    fix: Fix::Rules,
                },
            };
        }
        // sqlx's and dbmate's `<number>_<description>.sql` is not read: a dbmate file holds its
        // down migration too, and running the whole file would undo the up.
        return Parsed::Bad {
            detail: "<number>_<description> names are read only as golang-migrate's .up.sql \
                     (a dbmate file holds its down migration too)"
                .into(),
            fix: Fix::RenameTo(format!(
                "V{num}__{rest} (for a dbmate file, keep only its `-- migrate:up` part)"
            )),
        };
    }
    Parsed::Bad {
        detail: "not a step name".into(),
        fix: Fix::Rules,
    }
}

/// `1_1_create_users.sql` → (`1_1`, `create_users.sql`): the longest run of numeric parts, then
/// the rest — the likely meaning of a name written with one underscore where two belong.
fn split_single_underscore(rest: &str) -> Option<(&str, &str)> {
    let mut end = 0;
    for (i, part) in rest.split('_').enumerate() {
        let at = if i == 0 { 0 } else { end + 1 };
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            let desc = rest.get(at..).unwrap_or("");
            return (end > 0 && !desc.is_empty()).then(|| (&rest[..end], desc));
        }
        end = at + part.len();
    }
    None
}

fn ext_of(name: &str, sql: bool) -> &str {
    if sql {
        return ".sql";
    }
    match name.rfind('.') {
        Some(i) if i >= 3 => &name[i..],
        _ => "",
    }
}

/// One problem per version (or repeatable description) that more than one file claims.
fn duplicates(dir: &Path, steps: &[Step]) -> Vec<Problem> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < steps.len() {
        let mut j = i + 1;
        while j < steps.len() && steps[j].id == steps[i].id {
            j += 1;
        }
        if j - i > 1 {
            let files: Vec<&str> = steps[i..j].iter().map(|s| s.file.as_str()).collect();
            let (what, other) = match &steps[i].id {
                StepId::Versioned(v) => (format!("version {v}"), "version"),
                StepId::Repeatable(d) => (format!("repeatable step {d:?}"), "description"),
            };
            out.push(Problem {
                kind: ProblemKind::Duplicate,
                step: Some(steps[i].id.to_string()),
                file: Some(files.join(", ")),
                detail: format!(
                    "{what} is claimed by {} files: {}",
                    files.len(),
                    files.join(", ")
                ),
                fix: format!(
                    "give one of them another {other} (rename {} in {}), or remove the extra one",
                    files[1..].join(", "),
                    dir.display()
                ),
            });
        }
        i = j;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// DIR's path may lead elsewhere by the time the discovery thread lists it (a ConfigMap
    /// volume swaps its `..data` link): the names must come from the directory whose files are
    /// read, the one opened.
    #[test]
    fn the_directory_opened_is_the_one_listed_and_read() {
        let tmp = tempfile::tempdir().unwrap();
        let (dir, moved) = (tmp.path().join("steps"), tmp.path().join("moved"));
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join("V1__first.sql"), "SELECT 1;\n").unwrap();
        let open = open_dir(&dir).unwrap();
        fs::rename(&dir, &moved).unwrap();
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join("V2__other.sql"), "SELECT 2;\n").unwrap();
        let set = open.list().unwrap().inspect();
        let files: Vec<&str> = set.steps.iter().map(|s| s.file.as_str()).collect();
        assert_eq!(files, ["V1__first.sql"]);
        assert!(set.problems.is_empty(), "{:?}", set.problems);
        assert_eq!(set.steps[0].checksum, checksum::of_bytes(b"SELECT 1;\n"));
    }

    fn named(name: &str) -> Named {
        match parse_name(name) {
            Parsed::Step(n) => n,
            other => panic!("{name}: {other:?}"),
        }
    }

    fn bad(name: &str) -> String {
        match parse_name(name) {
            Parsed::Bad { detail, .. } => detail,
            other => panic!("{name} should be bad: {other:?}"),
        }
    }

    fn ver(text: &str) -> StepId {
        StepId::Versioned(version::parse(text).unwrap())
    }

    #[test]
    fn flyway_names() {
        let n = named("V1__create_users.sql");
        assert_eq!(n.id, ver("1"));
        assert_eq!(n.description, "create users");
        assert!(n.sql);
        let n = named("V1_1__x.sql");
        assert_eq!(n.id, ver("1.1"));
        let StepId::Versioned(v) = &n.id else {
            panic!()
        };
        assert_eq!(v.text, "1_1");
        assert_eq!(named("V1.10__a.b.sql").description, "a.b");
        assert_eq!(named("V20240101120000__x.SQL").id, ver("20240101120000"));
        assert!(named("V2__x.SQL").sql);
        let n = named("V3__load_fixtures.sh");
        assert!(!n.sql);
        assert_eq!(n.description, "load fixtures");
        assert_eq!(named("V4__no_extension").description, "no extension");
        assert_eq!(named("V5__.sql").description, "");
    }

    #[test]
    fn repeatable_names_are_identified_by_description() {
        let n = named("R__refresh_views.sql");
        assert_eq!(n.id, StepId::Repeatable("refresh views".into()));
        assert_eq!(n.description, "refresh views");
        assert!(!named("R__seed.py").sql);
        assert!(bad("R__.sql").contains("needs a description"));
    }

    #[test]
    fn golang_migrate_names() {
        let n = named("000001_create_users.up.sql");
        assert_eq!(n.id, ver("1"));
        assert_eq!(n.description, "create users");
        assert!(n.sql);
        assert_eq!(parse_name("000001_create_users.down.sql"), Parsed::Ignored);
        assert_eq!(named("20240101120000_x.up.sql").id, ver("20240101120000"));
    }

    #[test]
    fn bad_names_are_problems_with_a_reason() {
        assert!(bad("V1_create.sql").contains("`__`"));
        assert!(bad("V__x.sql").contains("empty"));
        assert!(bad("Va__x.sql").contains("not a number"));
        assert!(bad("V1.18446744073709551616__x.sql").contains("too large"));
        assert!(bad("99999999999999999999999_x.up.sql").contains("too large"));
        assert!(bad("README.md").contains("not a step name"));
        assert!(bad("v1__lowercase.sql").contains("not a step name"));
        assert!(bad("20240101_x.sql").contains("golang-migrate"));
        assert!(bad("").contains("not a step name"));
        assert!(bad("V").contains("`__`"));
        let fix = |name: &str| match parse_name(name) {
            Parsed::Bad { fix, .. } => fix,
            other => panic!("{name}: {other:?}"),
        };
        assert_eq!(fix("V1_create.sql"), Fix::RenameTo("V1__create.sql".into()));
        assert_eq!(
            fix("V1_1_create_users.sql"),
            Fix::RenameTo("V1_1__create_users.sql".into())
        );
        assert_eq!(fix("Vx_y.sql"), Fix::Rules);
        assert_eq!(fix("V_1.sql"), Fix::Rules);
        // README's migration guide: validate suggests the name for sqlx's and dbmate's files.
        match fix("20240101_add_users.sql") {
            Fix::RenameTo(to) => assert!(to.starts_with("V20240101__add_users.sql "), "{to}"),
            other => panic!("{other:?}"),
        }
    }

    proptest::proptest! {
        #[test]
        fn any_name_parses_without_panicking(
            name in "(V|R__|[0-9]{1,3}_)?[0-9._a-zé☃_-]{0,16}(\\.sql|\\.up\\.sql|\\.down\\.sql|\\.sh|\\.)?",
            any in ".{0,30}",
        ) {
            let _ = parse_name(&name);
            let _ = parse_name(&any);
            let _ = split_single_underscore(&name);
            let _ = marks_no_transaction(any.as_bytes());
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(32))]
        #[test]
        fn every_file_is_a_step_a_problem_or_ignored(
            names in proptest::collection::btree_set(
                "(V[0-9]{1,3}([._][0-9]{1,2})?__|R__|[0-9]{1,3}_|V|\\.)?[a-z_]{0,6}(\\.sql|\\.up\\.sql|\\.down\\.sql|\\.sh)?",
                0..8,
            ),
            exec in proptest::collection::vec(proptest::prelude::any::<bool>(), 8),
        ) {
            let tmp = tempfile::tempdir().unwrap();
            let mut expected = 0;
            for (i, name) in names.iter().enumerate() {
                if name.is_empty() || name.starts_with('.') || name.ends_with(".down.sql")
                    && name.as_bytes()[0].is_ascii_digit() {
                    continue;
                }
                expected += 1;
                write(tmp.path(), name, "select 1;\n", if exec[i] { 0o755 } else { 0o644 });
            }
            let set = discover(tmp.path()).unwrap();
            let dups: usize = set
                .problems
                .iter()
                .filter(|p| p.kind == ProblemKind::Duplicate)
                .count();
            let ignored_down = set.steps.len() + set.problems.len() - dups;
            proptest::prop_assert_eq!(ignored_down, expected);
            proptest::prop_assert!(set.steps.windows(2).all(|w| w[0].id <= w[1].id));
        }
    }

    #[test]
    fn no_transaction_marker_on_the_first_line() {
        let yes: &[&[u8]] = &[
            b"-- initguard:no-transaction\ncreate index concurrently i on t (x);",
            b"-- initguard:no-transaction",
            b"\xEF\xBB\xBF-- initguard:no-transaction\r\nselect 1;",
            b"-- initguard:no-transaction  \t\r\n",
            b"--initguard:no-transaction\n",
            b"  -- initguard:no-transaction\n",
        ];
        for h in yes {
            assert!(marks_no_transaction(h), "{:?}", String::from_utf8_lossy(h));
        }
        let no: &[&[u8]] = &[
            b"\n-- initguard:no-transaction\n",
            b"select 1; -- initguard:no-transaction\n",
            b"-- initguard:no-transaction please\n",
            b"-- initguard:transaction\n",
            b"",
            b"\xff\xfe",
        ];
        for h in no {
            assert!(!marks_no_transaction(h), "{:?}", String::from_utf8_lossy(h));
        }
    }

    fn write(dir: &Path, name: &str, body: &str, mode: u32) {
        let p = dir.join(name);
        fs::write(&p, body).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    }

    fn ids(set: &StepSet) -> Vec<String> {
        set.steps.iter().map(|s| s.id.to_string()).collect()
    }

    #[test]
    fn a_directory_is_read_in_version_order_then_repeatables() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        write(d, "V1.10__ten.sql", "select 10;\n", 0o644);
        write(d, "V1.9__nine.sql", "select 9;\r\n", 0o644);
        write(d, "V2__script.sh", "#!/bin/sh\ntrue\n", 0o755);
        write(d, "R__b.sql", "select 'b';\n", 0o644);
        write(d, "R__a.sql", "select 'a';\n", 0o644);
        write(d, "000001_first.up.sql", "select 1;\n", 0o644);
        write(d, "000001_first.down.sql", "drop table x;\n", 0o644);
        write(d, ".gitkeep", "", 0o644);
        fs::create_dir(d.join("subdir")).unwrap();
        write(&d.join("subdir"), "V9__hidden.sql", "select 9;\n", 0o644);
        write(
            d,
            "V3__concurrently.sql",
            "-- initguard:no-transaction\ncreate index concurrently i on t (x);\n",
            0o644,
        );

        let set = discover(d).unwrap();
        assert_eq!(set.problems, vec![]);
        assert_eq!(ids(&set), ["000001", "1.9", "1.10", "2", "3", "R:a", "R:b"]);
        assert_eq!(set.dir, d);
        let nine = &set.steps[1];
        assert_eq!(nine.file, "V1.9__nine.sql");
        assert_eq!(nine.path, d.join("V1.9__nine.sql"));
        assert_eq!(nine.kind, Kind::Sql);
        assert_eq!(nine.checksum, checksum::of_bytes(b"select 9;\n"));
        assert!(!nine.no_transaction);
        assert_eq!(set.steps[3].kind, Kind::Script);
        assert!(set.steps[4].no_transaction);
        assert_eq!(set.steps[0].description, "first");
    }

    /// A ConfigMap volume: every step a symlink into `..data/`. The listing says "symlink", so
    /// each is followed: found with its content's checksum, a script judged by its target's
    /// mode; a symlink to a directory is ignored, a FIFO is a problem and never opened.
    #[test]
    fn symlinked_steps_are_followed_and_special_files_are_not_opened() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        fs::create_dir(d.join("..data")).unwrap();
        write(&d.join("..data"), "V1__a.sql", "select 1;\r\n", 0o644);
        write(&d.join("..data"), "V2__run.sh", "#!/bin/sh\n", 0o755);
        write(&d.join("..data"), "V3__plain.sh", "#!/bin/sh\n", 0o644);
        fs::create_dir(d.join("..data/V4__dir.sql")).unwrap();
        for name in ["V1__a.sql", "V2__run.sh", "V3__plain.sh", "V4__dir.sql"] {
            symlink(d.join("..data").join(name), d.join(name)).unwrap();
        }
        nix::unistd::mkfifo(&d.join("V5__pipe.sql"), nix::sys::stat::Mode::S_IRWXU).unwrap();

        let set = discover(d).unwrap();
        assert_eq!(ids(&set), ["1", "2"]);
        assert_eq!(set.steps[0].checksum, checksum::of_bytes(b"select 1;\n"));
        assert_eq!(set.steps[1].kind, Kind::Script);
        let problems: Vec<(ProblemKind, Option<&str>)> = set
            .problems
            .iter()
            .map(|p| (p.kind, p.file.as_deref()))
            .collect();
        assert_eq!(
            problems,
            [
                (ProblemKind::NotExecutable, Some("V3__plain.sh")),
                (ProblemKind::UnreadableName, Some("V5__pipe.sql")),
            ]
        );
        assert!(set.problems[1].detail.contains("not a regular file"));
    }

    #[test]
    fn file_problems_are_reported_not_fatal() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        write(d, "V1__a.sql", "select 1;\n", 0o644);
        write(d, "V1.0__b.sql", "select 2;\n", 0o644);
        write(d, "R__v.sql", "select 1;\n", 0o644);
        write(d, "R__v.sh", "#!/bin/sh\n", 0o755);
        write(d, "V2__notes.txt", "not a script\n", 0o644);
        write(d, "README.md", "docs\n", 0o644);
        write(d, "V3_typo.sql", "select 3;\n", 0o644);
        write(d, "V99999999999999999999__big.sql", "select 3;\n", 0o644);
        write(d, "V4__fine.sql", "select 4;\n", 0o644);
        symlink(d.join("nowhere"), d.join("V5__dangling.sql")).unwrap();

        let set = discover(d).unwrap();
        assert_eq!(ids(&set), ["1.0", "1", "4", "R:v", "R:v"]);
        let kinds: Vec<(ProblemKind, Option<&str>)> = set
            .problems
            .iter()
            .map(|p| (p.kind, p.file.as_deref()))
            .collect();
        use ProblemKind::*;
        assert_eq!(
            kinds,
            [
                (UnreadableName, Some("README.md")),
                (NotExecutable, Some("V2__notes.txt")),
                (UnreadableName, Some("V3_typo.sql")),
                (UnreadableName, Some("V5__dangling.sql")),
                (UnreadableName, Some("V99999999999999999999__big.sql")),
                (Duplicate, Some("V1.0__b.sql, V1__a.sql")),
                (Duplicate, Some("R__v.sh, R__v.sql")),
            ]
        );
        for p in &set.problems {
            assert!(!p.fix.is_empty(), "{p:?}");
            assert!(!p.detail.is_empty(), "{p:?}");
        }
        let not_exec = &set.problems[1];
        assert!(not_exec.fix.contains("chmod +x"), "{}", not_exec.fix);
        assert!(not_exec.fix.contains(".sql extension"), "{}", not_exec.fix);
        assert_eq!(not_exec.step.as_deref(), Some("2"));
        assert!(set.problems[2].fix.contains("V3__typo.sql"));
        assert!(set.problems[4].detail.contains("too large"));
        assert!(set.problems[5].fix.contains("another version"));
        assert!(set.problems[6].fix.contains("another description"));
    }

    #[test]
    fn only_an_unreadable_directory_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("nope");
        assert!(matches!(
            discover(&missing),
            Err(DiscoverError::Missing { .. })
        ));
        let file = tmp.path().join("f");
        fs::write(&file, "").unwrap();
        let err = discover(&file).unwrap_err();
        assert!(matches!(err, DiscoverError::NotADirectory { .. }));
        assert!(err.to_string().contains("not a directory"));
        fs::create_dir(tmp.path().join("empty")).unwrap();
        let empty = discover(&tmp.path().join("empty")).unwrap();
        assert!(empty.steps.is_empty() && empty.problems.is_empty());
    }

    #[test]
    fn a_non_utf8_name_is_a_problem() {
        use std::ffi::OsStr;
        use std::os::unix::ffi::OsStrExt;
        let tmp = tempfile::tempdir().unwrap();
        let name = OsStr::from_bytes(b"V1__\xff.sql");
        if fs::write(tmp.path().join(name), "x").is_err() {
            return; // the file system refuses such names
        }
        let set = discover(tmp.path()).unwrap();
        assert_eq!(set.problems.len(), 1);
        assert_eq!(set.problems[0].kind, ProblemKind::UnreadableName);
        assert!(set.problems[0].detail.contains("UTF-8"));
    }
}
