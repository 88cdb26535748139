//! Human tables and JSON for `status`, `history` and `--print-fingerprint`. Pure formatting.

use crate::fingerprint::Fingerprint;
use crate::record::Record;
use chrono::{DateTime, Utc};
use std::fmt::Write;

pub fn fingerprint(fp: &Fingerprint) -> String {
    let mut out = String::new();
    for c in &fp.components {
        let digest = c
            .shown_digest()
            .unwrap_or("(not shown: it may be a secret)");
        // As wide as "sha256:" and 64 hex digits, so that the labels stay aligned.
        let _ = writeln!(out, "{:<8} {digest:<71}  {}", c.kind, c.label);
    }
    let _ = writeln!(out, "fingerprint {}", fp.value);
    out
}

/// The first 12 characters of the hex digest. By characters, not bytes: a record from a store
/// can hold any text here, and slicing by bytes panics inside a multi-byte character.
fn short(fp: &str) -> String {
    let hex = fp.strip_prefix("sha256:").unwrap_or(fp);
    hex.chars().take(12).collect()
}

fn ago(t: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    let Some(t) = t else { return "-".into() };
    let secs = (now - t).num_seconds().max(0);
    let rel = match secs {
        0..60 => format!("{secs}s ago"),
        60..3600 => format!("{}m ago", secs / 60),
        3600..86400 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86400),
    };
    format!("{} ({rel})", t.format("%Y-%m-%dT%H:%M:%SZ"))
}

pub(super) fn table(rows: Vec<Vec<String>>) -> String {
    let cols = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..cols)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, cell)| format!("{cell:<w$}", w = widths[i]))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    out
}

pub fn status_table(records: &[Record], now: DateTime<Utc>) -> String {
    if records.is_empty() {
        return "no tasks recorded in this store\n".into();
    }
    let mut rows = vec![vec![
        "KEY".into(),
        "STATE".into(),
        "FINGERPRINT".into(),
        "LAST RUN".into(),
        "HOLDER".into(),
        "ATTEMPTS".into(),
    ]];
    for r in records {
        let key = match &r.instance {
            Some(i) => format!("{} ({} {i})", r.key, r.scope),
            None => r.key.clone(),
        };
        let state = if r.adopted {
            format!("{} (adopted)", r.state)
        } else {
            r.state.to_string()
        };
        rows.push(vec![
            key,
            state,
            short(&r.fingerprint),
            ago(r.finished_at.or(r.started_at), now),
            r.holder.as_ref().map_or("-".into(), |h| h.to_string()),
            r.attempts.to_string(),
        ]);
    }
    table(rows)
}

/// The note under `status` when some records were trimmed to fit a store's cap of `limit` bytes;
/// `None` when none was.
pub fn trimmed_note(records: &[Record], limit: Option<usize>) -> Option<String> {
    let keys: Vec<String> = records
        .iter()
        .filter(|r| r.trimmed)
        .map(|r| match &r.instance {
            Some(i) => format!("{} ({} {i})", r.key, r.scope),
            None => r.key.clone(),
        })
        .collect();
    if keys.is_empty() {
        return None;
    }
    let cap = limit.map_or(String::new(), |l| format!(" of {} KiB", l / 1024));
    Some(format!(
        "(trimmed to fit this store's record cap{cap}: {}; their output tails or oldest history \
         entries were cut)\n",
        keys.join(", ")
    ))
}

pub fn history_table(records: &[Record]) -> String {
    if records.is_empty() {
        return "no record of this key\n".into();
    }
    let mut rows = vec![vec![
        "KEY".into(),
        "FINISHED".into(),
        "STATE".into(),
        "ATTEMPT".into(),
        "TOKEN".into(),
        "DURATION".into(),
        "EXIT".into(),
        "FINGERPRINT".into(),
        "HOLDER".into(),
    ]];
    for r in records {
        for h in &r.history {
            rows.push(vec![
                match &r.instance {
                    Some(i) => format!("{} ({} {i})", r.key, r.scope),
                    None => r.key.clone(),
                },
                h.finished_at.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
                h.state.to_string(),
                h.attempt.to_string(),
                h.token.to_string(),
                h.duration_ms.map_or("-".into(), |d| format!("{d}ms")),
                h.exit.as_ref().map_or("-".into(), |e| e.to_string()),
                short(&h.fingerprint),
                h.holder.as_ref().map_or("-".into(), |h| h.to_string()),
            ]);
        }
    }
    table(rows)
}

pub fn history_json(records: &[Record]) -> String {
    let doc: Vec<serde_json::Value> = records
        .iter()
        .map(|r| {
            serde_json::json!({
                "key": r.key,
                "scope": r.scope,
                "instance": r.instance,
                "state": r.state,
                "history": r.history,
            })
        })
        .collect();
    serde_json::to_string_pretty(&doc).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{ExitInfo, State};
    use crate::task::{Holder, Key, TaskId};

    #[test]
    fn status_table_shows_key_state_short_fingerprint_last_run_holder_attempts() {
        let t0 = DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z")
            .unwrap()
            .with_timezone(&Utc);
        let id = TaskId::global(Key::parse("app/migrate").unwrap());
        let mut r = Record::new(&id, "sha256:0123456789abcdef", t0);
        let h = Holder {
            pod: Some("web-0".into()),
            namespace: Some("prod".into()),
            host: "web-0".into(),
            pid: 7,
            ..Holder::default()
        };
        r.start(3, &h, "sha256:0123456789abcdef", t0);
        r.finish(State::Succeeded, 3, Some(ExitInfo::Code(0)), None, t0, 20);
        let now = t0 + chrono::Duration::seconds(90);
        assert_eq!(
            status_table(&[r], now),
            "KEY          STATE      FINGERPRINT   LAST RUN                       HOLDER                  ATTEMPTS\n\
             app/migrate  succeeded  0123456789ab  2026-01-02T03:04:05Z (1m ago)  pod prod/web-0 (pid 7)  1\n"
        );
    }

    #[test]
    fn empty_store_says_so() {
        assert_eq!(
            status_table(&[], Utc::now()),
            "no tasks recorded in this store\n"
        );
    }
}
