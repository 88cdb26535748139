//! Versioned steps (DESIGN.md, "Versioned steps"): a directory of migrations and scripts, each
//! applied exactly once, in version order, under one initguard lease for the whole set.
//!
//! The vocabulary shared by the parts lives here: what a step is (`Step`, found on disk), what
//! history says about it (`Applied`, kept in the target database or in the set's record), and
//! what is wrong (`Problem`). The parts:
//! - discovery, versions and checksums: which files are steps, in which order, with which digest;
//! - validation and status: steps against history, the plan to apply, the `status` table;
//! - the target database (PostgreSQL): the history table, fencing, running SQL steps, adoption;
//! - the run: the lease, the fingerprint, script steps, the record-backed history.

pub mod run;
#[cfg(feature = "postgres")]
pub mod target;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::PathBuf;

pub mod checksum;
pub mod discover;
pub(crate) mod repair;
pub mod status;
pub mod validate;
pub mod version;

/// A step's version: numeric parts compared part by part (`1.10` > `1.9`), with the text as the
/// file gave it kept for display. Constructed only by `version::parse`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Version {
    /// Numeric parts; trailing zero parts are dropped, so `1` and `1.0` are the same version.
    pub parts: Vec<u64>,
    /// As written in the file name (`1_10` and `1.10` both show as written).
    pub text: String,
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.parts == other.parts
    }
}
impl Eq for Version {}
impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Version {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.parts.cmp(&other.parts)
    }
}
impl std::hash::Hash for Version {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.parts.hash(state)
    }
}
impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// What identifies a step across runs: its version, or for a repeatable step its description.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepId {
    Versioned(Version),
    Repeatable(String),
}

impl StepId {
    /// The id as it is shown and stored, in two pieces (`"R:"` and the description for a
    /// repeatable step), so that it can be written without a String of its own.
    pub fn parts(&self) -> (&'static str, &str) {
        match self {
            StepId::Versioned(v) => ("", &v.text),
            StepId::Repeatable(d) => ("R:", d),
        }
    }
}

impl fmt::Display for StepId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (prefix, text) = self.parts();
        write!(f, "{prefix}{text}")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A `.sql` file, run against the target database.
    Sql,
    /// Any other executable file, run as a command.
    Script,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Sql => "sql",
            Kind::Script => "script",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A labelled digest, `sha256:<64 hex>`, of the file with line endings normalised.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Checksum(pub String);

impl fmt::Display for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A step found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub id: StepId,
    pub description: String,
    pub kind: Kind,
    /// The file's name relative to the set's directory, as shown to users.
    pub file: String,
    /// Where to read or run it.
    pub path: PathBuf,
    pub checksum: Checksum,
    /// First line `-- initguard:no-transaction`: run statement by statement.
    pub no_transaction: bool,
}

/// A directory's steps, in apply order (versioned by version, then repeatable by description),
/// and what was wrong with the files themselves (duplicates, unreadable names, non-executable
/// scripts). Problems do not stop discovery: validation reports them all at once.
#[derive(Debug, Clone, Default)]
pub struct StepSet {
    pub dir: PathBuf,
    pub steps: Vec<Step>,
    pub problems: Vec<Problem>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AppliedState {
    Applied,
    /// Ended with an error; a transactional SQL step left nothing behind.
    Failed,
    /// Started and not (yet) ended: under a lapsed lease, interrupted.
    Running,
}

/// What history holds about one step: one entry per step, updated in place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub id: StepId,
    pub description: String,
    pub kind: Kind,
    /// `None` for a step adopted from a tool that keeps no comparable checksum.
    pub checksum: Option<Checksum>,
    pub state: AppliedState,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<u64>,
    /// `Holder::identity()` of who ran it.
    pub holder: String,
    /// The fencing token it ran under.
    pub token: u64,
    /// A no-transaction step: how many of its statements have completed.
    pub statements_done: u32,
    /// The server's message (with line and column in the step's file), or the script's exit.
    pub error: Option<String>,
    /// `flyway`, `golang-migrate`, `sqlx`, `dbmate`: taken over from that tool's history.
    pub adopted_from: Option<String>,
}

/// Which validation errors the user accepts for this run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Allow {
    pub changed: bool,
    pub missing: bool,
    pub out_of_order: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// An applied step's file no longer has the checksum it was applied with.
    Changed,
    /// An applied step has no file any more.
    Missing,
    /// Two files claim one version (or one repeatable description).
    Duplicate,
    /// A pending step older than the newest applied one.
    OutOfOrder,
    /// A file in the directory whose name is not a step name.
    UnreadableName,
    /// A file that is neither `.sql` nor executable.
    NotExecutable,
    /// A step whose last run failed (reported by status; apply retries it).
    Failed,
    /// A step found running under a lapsed lease.
    Interrupted,
    /// An index left INVALID (an interrupted `CREATE INDEX CONCURRENTLY`).
    InvalidIndex,
    /// An adopted golang-migrate version marked dirty.
    Dirty,
}

/// One line of the problem table. `fix` always says what to do next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    pub kind: ProblemKind,
    /// The step (`StepId` as displayed), when the problem belongs to one.
    pub step: Option<String>,
    pub file: Option<String>,
    pub detail: String,
    pub fix: String,
}

/// Why a step is in the plan again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Previous {
    /// Never run.
    None,
    /// Its last run failed.
    Failed,
    /// Found running under a lapsed lease.
    Interrupted,
    /// A repeatable step whose checksum changed since it last ran.
    Changed,
}

/// A step to apply, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub step: Step,
    pub previous: Previous,
    /// A no-transaction step resumes at this statement (0-based): the ones before it completed.
    pub resume_at: u32,
}

/// Who applies: the lease's fencing token and the holder's identity (`Holder::identity()`),
/// written into every history row and checked against the target's fence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunInfo {
    pub token: u64,
    pub holder: String,
}
