//! Every way `status` and `history` render records, as one function over raw record bytes: the
//! entry point of the fuzz targets (`fuzz/`) and of the proptest that every record the parser
//! accepts renders. Pure; must never panic, whatever the bytes.

use super::report;
use crate::record::Record;

/// Parse `bytes` as a stored record and, when that succeeds, render it as `status`, `status
/// --json`, `history` and `history --json` would. `None` when the parser refuses the bytes.
pub fn render_record(bytes: &[u8]) -> Option<String> {
    let record = Record::from_json(bytes).ok()?;
    Some(render_records(&[record]))
}

/// The four renderings of `records`, concatenated.
pub fn render_records(records: &[Record]) -> String {
    let now = chrono::Utc::now();
    let mut out = report::status_table(records, now);
    if let Some(note) = report::trimmed_note(records, Some(64 * 1024)) {
        out.push_str(&note);
    }
    out.push_str(&serde_json::to_string_pretty(records).unwrap_or_default());
    out.push_str(&report::history_table(records));
    out.push_str(&report::history_json(records));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    /// Any text, with multi-byte characters and control characters likely.
    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            "[a-z0-9:/._-]{0,20}",
            "(sha256:)?[é☃𝄞\u{0}\u{7f}a-f0-9]{0,16}",
        ]
    }

    /// Timestamps across chrono's whole range, and strings that are not timestamps.
    fn time() -> impl Strategy<Value = Value> {
        prop_oneof![
            (-8_000_000_000_000i64..8_000_000_000_000i64).prop_map(|s| {
                chrono::DateTime::from_timestamp(s, 0)
                    .map(|t| json!(t.to_rfc3339()))
                    .unwrap_or(Value::Null)
            }),
            text().prop_map(Value::from),
        ]
    }

    fn maybe<T: std::fmt::Debug + Clone>(
        s: impl Strategy<Value = T>,
    ) -> impl Strategy<Value = Option<T>> {
        proptest::option::of(s)
    }

    fn holder() -> impl Strategy<Value = Value> {
        (maybe(text()), maybe(text()), maybe(text()), maybe(text()), text(), any::<u32>()).prop_map(
            |(pod, namespace, uid, node, host, pid)| {
                json!({"pod": pod, "namespace": namespace, "uid": uid, "node": node, "host": host, "pid": pid})
            },
        )
    }

    fn state() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just("running"),
            Just("succeeded"),
            Just("failed"),
            Just("gave_up"),
            Just("interrupted"),
            Just("reset"),
        ]
        .prop_map(Value::from)
    }

    fn exit() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<i32>().prop_map(|c| json!({"code": c})),
            any::<i32>().prop_map(|s| json!({"signal": s})),
            Just(json!("timed_out")),
            Just(json!("not_found")),
            Just(json!("spawn_failed")),
        ]
    }

    fn entry() -> impl Strategy<Value = Value> {
        (state(), text(), any::<u64>(), any::<u32>(), maybe(holder()), maybe(time()), time(), maybe(any::<u64>()), maybe(exit()), maybe(text())).prop_map(
            |(state, fingerprint, token, attempt, holder, started_at, finished_at, duration_ms, exit, reason)| {
                json!({"state": state, "fingerprint": fingerprint, "token": token, "attempt": attempt,
                       "holder": holder, "started_at": started_at, "finished_at": finished_at,
                       "duration_ms": duration_ms, "exit": exit, "reason": reason})
            },
        )
    }

    /// Record-shaped JSON with arbitrary values in every field: most parse, some do not.
    fn record_json() -> impl Strategy<Value = Value> {
        let head = (
            text(),
            prop_oneof![Just("global"), Just("pod"), Just("node")],
            maybe(text()),
            state(),
            text(),
            any::<u64>(),
            any::<u32>(),
            any::<u32>(),
            maybe(holder()),
        );
        let tail = (
            maybe(time()),
            maybe(time()),
            maybe(any::<u64>()),
            maybe(exit()),
            maybe(text()),
            any::<bool>(),
            text(),
            time(),
            proptest::collection::vec(entry(), 0..4),
            any::<bool>(),
        );
        (head, tail).prop_map(|(h, t)| {
            json!({
                "schema": 1, "key": h.0, "scope": h.1, "instance": h.2, "state": h.3,
                "fingerprint": h.4, "token": h.5, "attempts": h.6, "failures": h.7, "holder": h.8,
                "started_at": t.0, "finished_at": t.1, "duration_ms": t.2, "exit": t.3,
                "reason": t.4, "adopted": t.5, "tail": t.6, "updated_at": t.7, "history": t.8,
                "trimmed": t.9,
            })
        })
    }

    #[test]
    fn a_record_with_a_non_ascii_fingerprint_renders() {
        let doc = json!({"schema": 1, "key": "k", "scope": "global", "state": "succeeded",
            "fingerprint": "sha256:aééééééééé", "token": 1, "attempts": 1,
            "updated_at": "2026-01-01T00:00:00Z",
            "history": [{"state": "succeeded", "fingerprint": "a☃☃☃☃☃☃☃", "token": 1,
                         "attempt": 1, "finished_at": "2026-01-01T00:00:00Z"}]});
        let out = render_record(doc.to_string().as_bytes()).expect("parses");
        assert!(out.contains("aéééééé") && out.contains("a☃☃☃"), "{out}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn every_record_the_parser_accepts_renders(doc in record_json()) {
            let bytes = doc.to_string().into_bytes();
            if let Some(out) = render_record(&bytes) {
                prop_assert!(!out.is_empty());
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic_the_parser_or_the_renderer(
            bytes in proptest::collection::vec(any::<u8>(), 0..512)
        ) {
            let _ = render_record(&bytes);
        }
    }
}
