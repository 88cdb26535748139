//! The Record document kept per task in every store: its states, transitions and schema versioning.
//! Pure data and transitions; no I/O.

use crate::task::{Holder, Scope, TaskId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The record schema this build writes. Older schemas are upgraded in memory; newer ones refused.
pub const SCHEMA: u32 = 1;
/// Runs kept in `history` unless configured otherwise.
pub const DEFAULT_HISTORY: usize = 20;

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("record is not valid JSON: {0}")]
    NotJson(String),
    #[error("record has no numeric \"schema\" field")]
    NoSchema,
    #[error(
        "record has schema {found}, newer than this initguard understands ({SCHEMA}); upgrade initguard"
    )]
    NewerSchema { found: u64 },
    #[error("record does not match schema {SCHEMA}: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Written before the child starts; seen by a later holder it means the run was interrupted.
    Running,
    Succeeded,
    Failed,
    /// Failed `--max-attempts` times for this fingerprint; runs nothing until `reset`.
    GaveUp,
    /// Stopped by a signal, or found `running` by a later holder after the lease lapsed.
    Interrupted,
    /// Cleared by `initguard reset`: the next run runs.
    Reset,
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::Running => "running",
            State::Succeeded => "succeeded",
            State::Failed => "failed",
            State::GaveUp => "gave_up",
            State::Interrupted => "interrupted",
            State::Reset => "reset",
        })
    }
}

/// How an attempt ended, as far as the record cares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitInfo {
    Code(i32),
    Signal(i32),
    TimedOut,
    NotFound,
    NotExecutable,
    SpawnFailed,
}

impl fmt::Display for ExitInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitInfo::Code(c) => write!(f, "exit {c}"),
            ExitInfo::Signal(s) => write!(f, "signal {s}"),
            ExitInfo::TimedOut => f.write_str("timed out"),
            ExitInfo::NotFound => f.write_str("command not found"),
            ExitInfo::NotExecutable => f.write_str("command not executable"),
            ExitInfo::SpawnFailed => f.write_str("spawn failed"),
        }
    }
}

/// One finished run (or adoption, reset, detected interruption) in the bounded history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunEntry {
    pub state: State,
    pub fingerprint: String,
    pub token: u64,
    pub attempt: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<Holder>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<ExitInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The versioned JSON document a store keeps for one task (key + scope instance).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub schema: u32,
    pub key: String,
    pub scope: Scope,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    pub state: State,
    pub fingerprint: String,
    /// Fencing token of the lease under which this record was last written.
    pub token: u64,
    /// Attempts for the current fingerprint since it last succeeded or was reset.
    pub attempts: u32,
    /// Of those attempts, the ones that failed (not the interrupted ones): what `--max-attempts`
    /// counts, so that evictions and rollouts do not use up a task's attempts.
    #[serde(default)]
    pub failures: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<Holder>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<ExitInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// True when `--done-if` showed the work already done and nothing was run.
    #[serde(default)]
    pub adopted: bool,
    /// The last bytes of the command's combined output (lossy UTF-8).
    #[serde(default)]
    pub tail: String,
    pub updated_at: DateTime<Utc>,
    #[serde(default)]
    pub history: Vec<RunEntry>,
    /// The `--sql-target` database (URL without its password) where this task's SQL committed
    /// with its completion row: `initguard reset` must clear that row too. Kept once set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sql_target: Option<String>,
    /// True when a store with a size cap had to cut this record's tail or history to keep it
    /// (set by that store on each write). Absent means false, so schema 1 still describes it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub trimmed: bool,
    /// `initguard steps` without a target database: the set's step history (script steps), one
    /// entry per step, kept across fingerprints. Absent means none, so schema 1 still describes it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<crate::steps::Applied>,
}

impl Record {
    pub fn new(id: &TaskId, fingerprint: &str, now: DateTime<Utc>) -> Record {
        Record {
            schema: SCHEMA,
            key: id.key.to_string(),
            scope: id.scope,
            instance: id.instance.clone(),
            state: State::Reset,
            fingerprint: fingerprint.to_string(),
            token: 0,
            attempts: 0,
            failures: 0,
            holder: None,
            started_at: None,
            finished_at: None,
            duration_ms: None,
            exit: None,
            reason: None,
            adopted: false,
            tail: String::new(),
            updated_at: now,
            history: Vec::new(),
            sql_target: None,
            trimmed: false,
            steps: Vec::new(),
        }
    }

    /// Parse a stored record, refusing newer schemas and upgrading older ones in memory.
    pub fn from_json(bytes: &[u8]) -> Result<Record, RecordError> {
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| RecordError::NotJson(e.to_string()))?;
        let schema = value
            .get("schema")
            .and_then(|s| s.as_u64())
            .ok_or(RecordError::NoSchema)?;
        if schema > u64::from(SCHEMA) {
            return Err(RecordError::NewerSchema { found: schema });
        }
        // Schema 1 is the first; an upgrade step per older schema goes here when there is one.
        serde_json::from_value(value).map_err(|e| RecordError::Invalid(e.to_string()))
    }

    pub fn to_json(&self) -> Vec<u8> {
        // Serializing plain data with string keys cannot fail.
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    /// True when this record says the task is done for `fingerprint`.
    pub fn is_done_for(&self, fingerprint: &str) -> bool {
        self.state == State::Succeeded && self.fingerprint == fingerprint
    }

    pub fn gave_up_for(&self, fingerprint: &str) -> bool {
        self.state == State::GaveUp && self.fingerprint == fingerprint
    }

    /// What the next attempt is told about its predecessor (`INITGUARD_PREVIOUS`).
    pub fn previous(&self) -> &'static str {
        match self.state {
            State::Running | State::Interrupted => "interrupted",
            State::Failed | State::GaveUp => "failed",
            State::Succeeded | State::Reset => "none",
        }
    }

    /// A later holder found this record `running`: its writer lost the lease without finishing.
    pub fn mark_interrupted(&mut self, token: u64, reason: &str, now: DateTime<Utc>, keep: usize) {
        self.finish(
            State::Interrupted,
            token,
            None,
            Some(reason.to_string()),
            now,
            keep,
        );
    }

    /// Begin an attempt under `token`. A new fingerprint starts the attempt count afresh.
    pub fn start(&mut self, token: u64, holder: &Holder, fingerprint: &str, now: DateTime<Utc>) {
        if self.fingerprint != fingerprint || self.state == State::Succeeded {
            self.attempts = 0;
            self.failures = 0;
        }
        self.fingerprint = fingerprint.to_string();
        self.state = State::Running;
        self.token = token;
        self.attempts = self.attempts.saturating_add(1);
        self.holder = Some(holder.clone());
        self.started_at = Some(now);
        self.finished_at = None;
        self.duration_ms = None;
        self.exit = None;
        self.reason = None;
        self.adopted = false;
        self.tail.clear();
        self.updated_at = now;
    }

    /// End the current attempt in `state` and append it to the bounded history.
    pub fn finish(
        &mut self,
        state: State,
        token: u64,
        exit: Option<ExitInfo>,
        reason: Option<String>,
        now: DateTime<Utc>,
        keep: usize,
    ) {
        self.state = state;
        self.token = token;
        if matches!(state, State::Failed | State::GaveUp) {
            self.failures = self.failures.saturating_add(1);
        }
        self.exit = exit;
        self.reason = reason;
        self.finished_at = Some(now);
        self.duration_ms = self
            .started_at
            .and_then(|s| (now - s).to_std().ok())
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        self.updated_at = now;
        self.history.push(RunEntry {
            state,
            fingerprint: self.fingerprint.clone(),
            token,
            attempt: self.attempts,
            holder: self.holder.clone(),
            started_at: self.started_at,
            finished_at: now,
            duration_ms: self.duration_ms,
            exit: self.exit.clone(),
            reason: self.reason.clone(),
        });
        let excess = self.history.len().saturating_sub(keep.max(1));
        self.history.drain(..excess);
    }

    /// Record that `--done-if` found the work already done: succeeded without running.
    pub fn adopt(
        &mut self,
        token: u64,
        holder: &Holder,
        fingerprint: &str,
        now: DateTime<Utc>,
        keep: usize,
    ) {
        self.start(token, holder, fingerprint, now);
        self.attempts = 0;
        self.adopted = true;
        self.finish(
            State::Succeeded,
            token,
            None,
            Some("adopted: --done-if reported the work already done".into()),
            now,
            keep,
        );
        self.adopted = true;
    }

    /// `initguard reset`: forget success / gave_up so the next run runs; history is kept.
    pub fn reset(&mut self, token: u64, holder: &Holder, now: DateTime<Utc>, keep: usize) {
        let previous = self.state;
        self.holder = Some(holder.clone());
        self.started_at = None;
        self.attempts = 0;
        self.failures = 0;
        self.finish(
            State::Reset,
            token,
            None,
            Some(format!("reset by operator (was {previous})")),
            now,
            keep,
        );
    }

    /// Keep only the last `max` bytes of `output` as the tail, cut at a character boundary.
    pub fn set_tail(&mut self, output: &[u8], max: usize) {
        let start = output.len().saturating_sub(max);
        let text = String::from_utf8_lossy(&output[start..]);
        let mut tail = text.into_owned();
        while tail.len() > max {
            let cut = tail
                .char_indices()
                .nth(1)
                .map(|(i, _)| i)
                .unwrap_or(tail.len());
            tail.drain(..cut);
        }
        self.tail = tail;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::Key;

    /// Schema 1 as the file store writes it; see `record_json_is_pinned`.
    const GOLDEN_RECORD: &str = r#"{
  "schema": 1,
  "key": "myapp/migrate",
  "scope": "pod",
  "instance": "5f1c2d3e-aaaa",
  "state": "succeeded",
  "fingerprint": "sha256:2b50baa80d3bd2c031fc6ab4c370d3e5283191df7e7dd2a60f734a4c982ed2ea",
  "token": 8,
  "attempts": 2,
  "failures": 1,
  "holder": {
    "pod": "web-0",
    "namespace": "prod",
    "uid": "5f1c2d3e-aaaa",
    "node": "node-a",
    "host": "web-0",
    "pid": 42
  },
  "started_at": "2024-01-02T03:05:00Z",
  "finished_at": "2024-01-02T03:05:01.500Z",
  "duration_ms": 1500,
  "exit": {
    "code": 0
  },
  "adopted": false,
  "tail": "applied 3 steps\n\"ok\" ✓\n",
  "updated_at": "2024-01-02T03:05:01.500Z",
  "history": [
    {
      "state": "failed",
      "fingerprint": "sha256:2b50baa80d3bd2c031fc6ab4c370d3e5283191df7e7dd2a60f734a4c982ed2ea",
      "token": 7,
      "attempt": 1,
      "holder": {
        "pod": "web-0",
        "namespace": "prod",
        "uid": "5f1c2d3e-aaaa",
        "node": "node-a",
        "host": "web-0",
        "pid": 42
      },
      "started_at": "2024-01-02T03:04:05.250Z",
      "finished_at": "2024-01-02T03:04:06Z",
      "duration_ms": 750,
      "exit": {
        "signal": 9
      },
      "reason": "killed"
    },
    {
      "state": "succeeded",
      "fingerprint": "sha256:2b50baa80d3bd2c031fc6ab4c370d3e5283191df7e7dd2a60f734a4c982ed2ea",
      "token": 8,
      "attempt": 2,
      "holder": {
        "pod": "web-0",
        "namespace": "prod",
        "uid": "5f1c2d3e-aaaa",
        "node": "node-a",
        "host": "web-0",
        "pid": 42
      },
      "started_at": "2024-01-02T03:05:00Z",
      "finished_at": "2024-01-02T03:05:01.500Z",
      "duration_ms": 1500,
      "exit": {
        "code": 0
      }
    }
  ],
  "sql_target": "postgres://app@db:5432/app"
}"#;
    const GOLDEN_MINIMAL: &str = r#"{
  "schema": 1,
  "key": "k",
  "scope": "global",
  "state": "reset",
  "fingerprint": "sha256:a",
  "token": 0,
  "attempts": 0,
  "failures": 0,
  "adopted": false,
  "tail": "",
  "updated_at": "2024-01-02T03:04:05Z",
  "history": []
}"#;

    fn rec() -> Record {
        Record::new(
            &TaskId::global(Key::parse("k").unwrap()),
            "sha256:a",
            Utc::now(),
        )
    }

    #[test]
    fn round_trips_through_json() {
        let mut r = rec();
        r.start(1, &Holder::default(), "sha256:a", Utc::now());
        r.finish(
            State::Failed,
            1,
            Some(ExitInfo::Code(3)),
            None,
            Utc::now(),
            20,
        );
        let back = Record::from_json(&r.to_json()).unwrap();
        assert_eq!(back, r);
    }

    fn at(rfc3339: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(rfc3339).unwrap().to_utc()
    }

    /// A record with every field set, built through the transitions a real run makes.
    fn golden_record() -> Record {
        let id = TaskId {
            key: Key::parse("myapp/migrate").unwrap(),
            scope: Scope::Pod,
            instance: Some("5f1c2d3e-aaaa".into()),
        };
        let holder = Holder {
            pod: Some("web-0".into()),
            namespace: Some("prod".into()),
            uid: Some("5f1c2d3e-aaaa".into()),
            node: Some("node-a".into()),
            host: "web-0".into(),
            pid: 42,
        };
        let fp = "sha256:2b50baa80d3bd2c031fc6ab4c370d3e5283191df7e7dd2a60f734a4c982ed2ea";
        let mut r = Record::new(&id, fp, at("2024-01-02T03:04:05Z"));
        r.start(7, &holder, fp, at("2024-01-02T03:04:05.250Z"));
        r.finish(
            State::Failed,
            7,
            Some(ExitInfo::Signal(9)),
            Some("killed".into()),
            at("2024-01-02T03:04:06Z"),
            20,
        );
        r.start(8, &holder, fp, at("2024-01-02T03:05:00Z"));
        r.set_tail("applied 3 steps\n\"ok\" ✓\n".as_bytes(), 4096);
        r.finish(
            State::Succeeded,
            8,
            Some(ExitInfo::Code(0)),
            None,
            at("2024-01-02T03:05:01.5Z"),
            20,
        );
        r.sql_target = Some("postgres://app@db:5432/app".into());
        r
    }

    /// Pins the record document, schema 1, exactly as the file store writes it (the Kubernetes
    /// annotation is the same document without whitespace; PostgreSQL keeps it as jsonb). If
    /// this fails, records written by this version and the one before it disagree: an upgrade
    /// could re-run tasks or refuse records as corrupt, and a rollback could too. A change needs
    /// a new SCHEMA and an upgrade step in `from_json`. Never paste new text in.
    #[test]
    fn record_json_is_pinned() {
        let r = golden_record();
        let text = String::from_utf8(r.to_json()).unwrap();
        assert_eq!(text, GOLDEN_RECORD);
        assert_eq!(Record::from_json(GOLDEN_RECORD.as_bytes()).unwrap(), r);
    }

    /// A fresh record leaves out every optional field; a schema-1 document written before
    /// `failures`, `adopted`, `tail` and `history` existed still reads.
    #[test]
    fn minimal_record_json_is_pinned() {
        let id = TaskId::global(Key::parse("k").unwrap());
        let r = Record::new(&id, "sha256:a", at("2024-01-02T03:04:05Z"));
        let text = String::from_utf8(r.to_json()).unwrap();
        assert_eq!(text, GOLDEN_MINIMAL);
        assert_eq!(Record::from_json(text.as_bytes()).unwrap(), r);
        let old = r#"{"schema":1,"key":"k","scope":"global","state":"reset","fingerprint":"sha256:a","token":0,"attempts":0,"updated_at":"2024-01-02T03:04:05Z"}"#;
        assert_eq!(Record::from_json(old.as_bytes()).unwrap(), r);
    }

    /// A set's step history (`initguard steps` without a target database) round-trips, and a
    /// record without one writes no `steps` field at all (the pinned documents above).
    #[test]
    fn step_history_round_trips() {
        use crate::steps::{Applied, AppliedState, Checksum, Kind, StepId, Version};
        let mut r = rec();
        r.steps.push(Applied {
            id: StepId::Versioned(Version {
                parts: vec![1, 10],
                text: "1.10".into(),
            }),
            description: "load fixtures".into(),
            kind: Kind::Script,
            checksum: Some(Checksum("sha256:ab".into())),
            state: AppliedState::Running,
            started_at: Some(at("2024-01-02T03:04:05Z")),
            finished_at: None,
            duration_ms: None,
            holder: "web-0_42".into(),
            token: 3,
            statements_done: 0,
            error: None,
            adopted_from: None,
        });
        let json = r.to_json();
        assert!(String::from_utf8_lossy(&json).contains("\"steps\""));
        assert_eq!(Record::from_json(&json).unwrap(), r);
    }

    #[test]
    fn newer_schema_is_refused() {
        let mut v: serde_json::Value = serde_json::from_slice(&rec().to_json()).unwrap();
        v["schema"] = serde_json::json!(2);
        let err = Record::from_json(v.to_string().as_bytes()).unwrap_err();
        assert!(matches!(err, RecordError::NewerSchema { found: 2 }));
    }

    #[test]
    fn garbage_is_refused() {
        assert!(matches!(
            Record::from_json(b"{nope"),
            Err(RecordError::NotJson(_))
        ));
        assert!(matches!(
            Record::from_json(b"{}"),
            Err(RecordError::NoSchema)
        ));
        assert!(matches!(
            Record::from_json(br#"{"schema":1}"#),
            Err(RecordError::Invalid(_))
        ));
    }

    #[test]
    fn attempts_count_per_fingerprint() {
        let mut r = rec();
        let h = Holder::default();
        r.start(1, &h, "sha256:a", Utc::now());
        r.finish(
            State::Failed,
            1,
            Some(ExitInfo::Code(1)),
            None,
            Utc::now(),
            20,
        );
        r.start(2, &h, "sha256:a", Utc::now());
        assert_eq!(r.attempts, 2);
        assert_eq!(r.failures, 1);
        r.mark_interrupted(2, "lease lapsed", Utc::now(), 20);
        assert_eq!(r.failures, 1, "interruptions are not failures");
        r.start(3, &h, "sha256:b", Utc::now());
        assert_eq!(r.attempts, 1);
        assert_eq!(r.failures, 0);
    }

    #[test]
    fn history_is_bounded() {
        let mut r = rec();
        for t in 0..30 {
            r.start(t, &Holder::default(), "sha256:a", Utc::now());
            r.finish(State::Failed, t, None, None, Utc::now(), 5);
        }
        assert_eq!(r.history.len(), 5);
        assert_eq!(r.history[4].token, 29);
    }

    #[test]
    fn tail_keeps_last_bytes_on_char_boundary() {
        let mut r = rec();
        r.set_tail("ääää".as_bytes(), 3);
        assert!(r.tail.len() <= 3);
        assert!(r.tail.ends_with('ä'));
        r.set_tail(b"hello", 10);
        assert_eq!(r.tail, "hello");
    }
}
