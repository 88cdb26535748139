//! History rows as `steps_history` holds them: the step's key, the columns read back into
//! `Applied`, and SQL literals for the one-message step transaction. Pure, but for decoding a
//! `tokio_postgres::Row`.

use crate::steps::{Applied, AppliedState, Checksum, Kind, StepId, Version, version};
use chrono::{DateTime, Utc};

/// The columns `history` reads, in `decode`'s order.
pub(crate) const COLUMNS: &str = "step, version, description, kind, checksum, state, started_at, \
     finished_at, duration_ms, holder, token, statements_done, error, adopted_from";

/// The key of a step in `steps_history.step`: one row per step as `Version`'s equality sees it
/// (`1`, `1.0` and `1_0` are one version), so the version's parts joined by `.`; a repeatable
/// step by its description.
pub(crate) fn key(id: &StepId) -> String {
    match id {
        StepId::Versioned(v) => canonical(&v.parts),
        StepId::Repeatable(d) => format!("R:{d}"),
    }
}

fn canonical(parts: &[u64]) -> String {
    if parts.is_empty() {
        return "0".into();
    }
    parts
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(".")
}

/// The step id back from its key and the version text the row keeps.
pub(crate) fn id_of(key: &str, version: Option<&str>) -> Option<StepId> {
    if let Some(desc) = key.strip_prefix("R:") {
        return Some(StepId::Repeatable(desc.to_string()));
    }
    let parts = version::parse(key).ok()?.parts;
    Some(StepId::Versioned(Version {
        text: version
            .map(str::to_string)
            .unwrap_or_else(|| key.to_string()),
        parts,
    }))
}

pub(crate) fn kind_text(k: Kind) -> &'static str {
    match k {
        Kind::Sql => "sql",
        Kind::Script => "script",
    }
}

/// The version text of a step, or None for a repeatable one.
pub(crate) fn version_text(id: &StepId) -> Option<&str> {
    match id {
        StepId::Versioned(v) => Some(&v.text),
        StepId::Repeatable(_) => None,
    }
}

/// One row of `COLUMNS`; None for a row this build cannot read (reported by the caller).
pub(crate) fn decode(row: &tokio_postgres::Row) -> Result<Option<Applied>, tokio_postgres::Error> {
    let key: String = row.try_get(0)?;
    let version: Option<String> = row.try_get(1)?;
    let Some(id) = id_of(&key, version.as_deref()) else {
        return Ok(None);
    };
    let kind = match row.try_get::<_, String>(3)?.as_str() {
        "sql" => Kind::Sql,
        "script" => Kind::Script,
        _ => return Ok(None),
    };
    let state = match row.try_get::<_, String>(5)?.as_str() {
        "applied" => AppliedState::Applied,
        "failed" => AppliedState::Failed,
        "running" => AppliedState::Running,
        _ => return Ok(None),
    };
    Ok(Some(Applied {
        id,
        description: row.try_get(2)?,
        kind,
        checksum: row.try_get::<_, Option<String>>(4)?.map(Checksum),
        state,
        started_at: row.try_get::<_, Option<DateTime<Utc>>>(6)?,
        finished_at: row.try_get::<_, Option<DateTime<Utc>>>(7)?,
        duration_ms: row
            .try_get::<_, Option<i64>>(8)?
            .and_then(|d| u64::try_from(d).ok()),
        holder: row.try_get(9)?,
        token: u64::try_from(row.try_get::<_, i64>(10)?).unwrap_or_default(),
        statements_done: u32::try_from(row.try_get::<_, i32>(11)?).unwrap_or_default(),
        error: row.try_get(12)?,
        adopted_from: row.try_get(13)?,
    }))
}

/// A string literal that reads the same whatever `standard_conforming_strings` is: `E'…'`, with
/// backslashes and quotes doubled. NUL cannot be sent in a query at all and is dropped.
pub(crate) fn literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 3);
    out.push_str("E'");
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("''"),
            '\0' => {}
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

pub(crate) fn opt_literal(s: Option<&str>) -> String {
    s.map(literal).unwrap_or_else(|| "NULL".into())
}

/// Token as the `bigint` columns hold it.
pub(crate) fn token_i64(token: u64) -> i64 {
    i64::try_from(token).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(parts: &[u64], text: &str) -> StepId {
        StepId::Versioned(Version {
            parts: parts.to_vec(),
            text: text.into(),
        })
    }

    #[test]
    fn keys_round_trip_and_agree_with_version_equality() {
        assert_eq!(key(&v(&[1, 10], "1_10")), "1.10");
        assert_eq!(id_of("1.10", Some("1_10")), Some(v(&[1, 10], "1_10")));
        assert_eq!(key(&StepId::Repeatable("views".into())), "R:views");
        assert_eq!(
            id_of("R:views", None),
            Some(StepId::Repeatable("views".into()))
        );
        assert_eq!(
            id_of("20240101120000", None),
            Some(v(&[20240101120000], "20240101120000"))
        );
        assert_eq!(id_of("1.x", None), None);
        assert_eq!(key(&v(&[], "0")), "0");
    }

    #[test]
    fn literals_read_the_same_with_either_string_setting() {
        assert_eq!(literal("it's a \\ test"), "E'it''s a \\\\ test'");
        assert_eq!(literal("a\0b"), "E'ab'");
        assert_eq!(opt_literal(None), "NULL");
    }
}
