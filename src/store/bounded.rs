//! Records cut down to a store's size limit (a Kubernetes annotation, a ZooKeeper znode): the
//! output tail first, then the oldest history entries, with one warning saying what was cut.
//! Pure apart from that log line; must never drop the newest bytes of the tail or the newest run.

use crate::record::Record;
use crate::store::StoreError;

/// `record` as compact JSON of at most `limit` bytes, trimmed as `bound_record` does; `store` and
/// `place` name where it goes, for the messages.
pub(crate) fn bounded_json(
    record: &Record,
    limit: usize,
    store: &str,
    place: &str,
) -> Result<String, StoreError> {
    let (json, trimmed) = bound_record(record, limit).map_err(|e| StoreError::Corrupt {
        key: record.key.clone(),
        location: store.to_string(),
        reason: format!("cannot encode the record: {e}"),
    })?;
    if json.len() > limit {
        return Err(StoreError::Unsupported {
            store: store.to_string(),
            what: format!(
                "a record of {} bytes even without output tail and history",
                json.len()
            ),
        });
    }
    if let Some(t) = trimmed {
        tracing::warn!(
            key = %record.key,
            "record trimmed to fit {} KiB in {place}: output tail kept {} of {} bytes, {} \
             oldest history entries dropped",
            limit / 1024,
            t.tail_kept,
            record.tail.len(),
            t.history_dropped
        );
    }
    Ok(json)
}

/// What `bound_record` had to cut.
#[derive(Debug, PartialEq, Eq)]
struct Trimmed {
    tail_kept: usize,
    history_dropped: usize,
}

/// `record` as compact JSON, cut down towards `limit` bytes: the output tail first (its newest
/// bytes stay: they say why a run failed), then the oldest history entries. The result is still
/// over `limit` only when even the bare record is.
fn bound_record(
    record: &Record,
    limit: usize,
) -> Result<(String, Option<Trimmed>), serde_json::Error> {
    let mut r = record.clone();
    // Says whether this write was cut, whatever an earlier write of the record said.
    r.trimmed = false;
    let mut json = serde_json::to_string(&r)?;
    if json.len() <= limit {
        return Ok((json, None));
    }
    r.trimmed = true;
    json = serde_json::to_string(&r)?;
    while json.len() > limit && !r.tail.is_empty() {
        // Escaping can make a byte of tail cost up to six in JSON: cut the excess in tail bytes
        // at the tail's own escaping rate (not byte for byte, which would drop all of a tail of
        // control characters), and at least an eighth each round so that this ends quickly.
        let over = json.len() - limit;
        let escaped = serde_json::to_string(&r.tail)?.len().max(1);
        let cut = (over * r.tail.len()).div_ceil(escaped);
        let keep = r
            .tail
            .len()
            .saturating_sub(cut.min(r.tail.len()).max(r.tail.len() / 8).max(1));
        let tail = std::mem::take(&mut r.tail);
        r.set_tail(tail.as_bytes(), keep);
        json = serde_json::to_string(&r)?;
    }
    let mut history_dropped = 0;
    while json.len() > limit && !r.history.is_empty() {
        // Drop about as many entries as the excess needs (entries are alike in size), at least one.
        let per_entry = serde_json::to_string(&r.history)?.len() / r.history.len();
        let n = ((json.len() - limit) / per_entry.max(1))
            .max(1)
            .min(r.history.len());
        r.history.drain(..n);
        history_dropped += n;
        json = serde_json::to_string(&r)?;
    }
    let trimmed = Trimmed {
        tail_kept: r.tail.len(),
        history_dropped,
    };
    Ok((json, Some(trimmed)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::State;
    use crate::task::{Holder, Key, TaskId};
    use chrono::Utc;

    const LIMIT: usize = 64 * 1024;

    fn record_with(tail: &str, runs: usize) -> Record {
        let id = TaskId::global(Key::parse("app/big").unwrap());
        let mut r = Record::new(&id, "sha256:a", Utc::now());
        for t in 0..runs {
            r.start(t as u64, &Holder::default(), "sha256:a", Utc::now());
            r.finish(State::Failed, t as u64, None, None, Utc::now(), usize::MAX);
        }
        r.tail = tail.to_string();
        r
    }

    #[test]
    fn small_records_are_kept_whole() {
        let r = record_with("hello", 3);
        let (json, trimmed) = bound_record(&r, LIMIT).unwrap();
        assert_eq!(trimmed, None);
        assert_eq!(Record::from_json(json.as_bytes()).unwrap(), r);
    }

    #[test]
    fn a_big_tail_is_cut_from_the_front() {
        let tail = format!("{}THE-END", "x".repeat(200_000));
        let (json, trimmed) = bound_record(&record_with(&tail, 20), LIMIT).unwrap();
        assert!(json.len() <= LIMIT);
        let back = Record::from_json(json.as_bytes()).unwrap();
        assert!(back.tail.ends_with("THE-END"));
        assert_eq!(
            back.history.len(),
            20,
            "history kept while the tail can give"
        );
        assert_eq!(trimmed.unwrap().history_dropped, 0);
    }

    #[test]
    fn escaped_output_still_fits() {
        // Control characters cost six bytes each in JSON.
        let tail = format!("{}THE-END", "\u{1}".repeat(100_000));
        let (json, _) = bound_record(&record_with(&tail, 0), LIMIT).unwrap();
        assert!(json.len() <= LIMIT, "{}", json.len());
        let back = Record::from_json(json.as_bytes()).unwrap();
        // Six bytes a character: most of what fits is kept, not nothing.
        assert!(back.tail.ends_with("THE-END"), "newest output kept");
        assert!(
            back.tail.len() > LIMIT / 6 / 2,
            "{} bytes kept",
            back.tail.len()
        );
    }

    #[test]
    fn a_long_history_loses_its_oldest_runs() {
        let (json, trimmed) = bound_record(&record_with("", 2000), LIMIT).unwrap();
        assert!(json.len() <= LIMIT);
        let back = Record::from_json(json.as_bytes()).unwrap();
        assert!(trimmed.unwrap().history_dropped > 0);
        assert_eq!(back.history.last().unwrap().token, 1999, "newest run kept");
    }
}
