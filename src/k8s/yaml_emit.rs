//! The YAML text of a changed document, written the way `kubectl get -o yaml` writes it (block
//! style, lists at their key's indentation), and read back identically by YAML 1.1 parsers —
//! which is what kubectl and the API server use — as well as YAML 1.2 ones.
//!
//! Why not the YAML crate's own emitter: it quotes only what YAML 1.2 would misread, so the
//! string `"yes"` came out as plain `yes`, which kubectl (YAML 1.1) reads as `true`. Here a
//! string stays plain only when no YAML version can read it as anything but that string.
//! Never fails and never panics: every `Value` has a text.

use serde_norway::Value;

/// `value` as a YAML document body (no `---`), ending with a newline.
pub fn to_string(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Mapping(m) if !m.is_empty() => mapping(&mut out, m, 0),
        Value::Sequence(s) if !s.is_empty() => sequence(&mut out, s, 0),
        other => {
            out.push_str(&inline(other));
            out.push('\n');
        }
    }
    out
}

fn indent(out: &mut String, n: usize) {
    out.extend(std::iter::repeat_n(' ', n));
}

fn mapping(out: &mut String, m: &serde_norway::Mapping, depth: usize) {
    for (i, (k, v)) in m.iter().enumerate() {
        // The first key of a list item sits on the `- ` line, already indented.
        if i > 0 {
            indent(out, depth);
        }
        out.push_str(&key(k));
        out.push(':');
        value_after_key(out, v, depth);
    }
}

fn value_after_key(out: &mut String, v: &Value, depth: usize) {
    match v {
        Value::Mapping(m) if !m.is_empty() => {
            out.push('\n');
            indent(out, depth + 2);
            mapping(out, m, depth + 2);
        }
        // kubectl's style: a list under a key is not indented further.
        Value::Sequence(s) if !s.is_empty() => {
            out.push('\n');
            sequence_items(out, s, depth);
        }
        Value::String(s) if block_literal(s).is_some() => {
            out.push(' ');
            literal(out, s, depth + 2);
        }
        Value::Tagged(t) => {
            out.push(' ');
            out.push_str(&t.tag.to_string());
            value_after_key(out, &t.value, depth);
        }
        other => {
            out.push(' ');
            out.push_str(&inline(other));
            out.push('\n');
        }
    }
}

fn sequence(out: &mut String, s: &[Value], depth: usize) {
    sequence_items(out, s, depth);
}

fn sequence_items(out: &mut String, s: &[Value], depth: usize) {
    for item in s {
        indent(out, depth);
        out.push_str("- ");
        match item {
            Value::Mapping(m) if !m.is_empty() => mapping(out, m, depth + 2),
            Value::Sequence(inner) if !inner.is_empty() => {
                out.push('\n');
                sequence_items(out, inner, depth + 2);
            }
            Value::String(st) if block_literal(st).is_some() => literal(out, st, depth + 2),
            Value::Tagged(t) => {
                out.push_str(&t.tag.to_string());
                value_after_key(out, &t.value, depth + 2);
            }
            other => {
                out.push_str(&inline(other));
                out.push('\n');
            }
        }
    }
}

fn key(k: &Value) -> String {
    match k {
        Value::String(s) => scalar_string(s),
        // Non-string keys do not occur in Kubernetes objects; keep them readable anyway.
        other => inline(other),
    }
}

/// A scalar, or an empty collection, on one line.
fn inline(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => scalar_string(s),
        Value::Sequence(s) if s.is_empty() => "[]".into(),
        Value::Mapping(m) if m.is_empty() => "{}".into(),
        // Collections in flow position only arise inside tags; JSON is valid flow YAML.
        other => serde_json::to_string(other).unwrap_or_else(|_| "null".into()),
    }
}

fn scalar_string(s: &str) -> String {
    if plain_is_safe(s) {
        s.to_string()
    } else {
        // A JSON string is a valid YAML double-quoted scalar, escapes included.
        serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
    }
}

/// The chomping indicator for writing `s` as a literal block, if that keeps it exactly.
fn block_literal(s: &str) -> Option<&'static str> {
    if !s.contains('\n')
        || s.starts_with([' ', '\t', '\n'])
        || s.chars()
            .any(|c| c == '\r' || (c.is_control() && c != '\n' && c != '\t'))
        || s.split('\n').any(|l| l.ends_with([' ', '\t']))
    {
        return None;
    }
    let body = s.trim_end_matches('\n');
    match s.len() - body.len() {
        0 => Some("|-"),
        1 => Some("|"),
        _ => Some("|+"),
    }
}

fn literal(out: &mut String, s: &str, depth: usize) {
    out.push_str(block_literal(s).unwrap_or("|"));
    out.push('\n');
    let body = s.strip_suffix('\n').unwrap_or(s);
    for line in body.split('\n') {
        if !line.is_empty() {
            indent(out, depth);
            out.push_str(line);
        }
        out.push('\n');
    }
}

/// Words YAML 1.1 (kubectl) reads as booleans or null.
const RESERVED: [&str; 13] = [
    "y", "yes", "n", "no", "true", "false", "on", "off", "null", "~", ".inf", ".nan", "<<",
];

fn plain_is_safe(s: &str) -> bool {
    let lower = s.to_ascii_lowercase();
    let Some(first) = s.chars().next() else {
        return false;
    };
    // `---` and `...` at the start of a line mark a document's start and end.
    if RESERVED.contains(&lower.as_str())
        || lower.trim_start_matches(['-', '+']) == ".inf"
        || s != s.trim()
        || s.starts_with("---")
        || s.starts_with("...")
    {
        return false;
    }
    // Anything number-like in any YAML version (0644, 1_000, 1:30, 1e3, .5, 0x1f) is quoted.
    let rest = s.trim_start_matches(['-', '+']);
    if rest.starts_with(|c: char| c.is_ascii_digit())
        || (rest.starts_with('.') && rest[1..].starts_with(|c: char| c.is_ascii_digit()))
    {
        return false;
    }
    if matches!(
        first,
        '?' | ':'
            | ','
            | '['
            | ']'
            | '{'
            | '}'
            | '#'
            | '&'
            | '*'
            | '!'
            | '|'
            | '>'
            | '\''
            | '"'
            | '%'
            | '@'
            | '`'
    ) || (first == '-' && (s.len() == 1 || s[1..].starts_with(' ')))
    {
        return false;
    }
    s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_./$()=+~^@%:,".contains(c) || (c == ' '))
        && !s.contains(": ")
        && !s.ends_with(':')
        && !s.contains(" #")
        && !s.contains(',')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(s: &str) -> Value {
        serde_norway::from_str(s).unwrap()
    }

    #[test]
    fn writes_kubectl_style() {
        let v = parse(
            "a: 1\nb:\n  c: [x, {d: e, f: [1]}]\n  g: {}\nh: []\ni: \"line\\nnext\\n\"\nj: null\n",
        );
        assert_eq!(
            to_string(&v),
            "a: 1\nb:\n  c:\n  - x\n  - d: e\n    f:\n    - 1\n  g: {}\nh: []\ni: |\n  line\n  next\nj: null\n"
        );
    }

    #[test]
    fn yaml_1_1_lookalikes_are_quoted() {
        for s in [
            "yes", "No", "on", "OFF", "y", "0644", "1:30", "1e3", ".5", "-1", "", " x", "a: b",
            "#x", "- x", "x #y", "true", "~", "null", "0x1f", "*a", "a,b", "---", "... A", "---x",
        ] {
            let text = to_string(&Value::from(s));
            assert!(text.starts_with('"'), "{s:?} -> {text}");
            assert_eq!(parse(&text), Value::from(s));
        }
        for s in [
            "web",
            "--key",
            "$(POD_NAMESPACE)/web/migrate",
            "/etc/app",
            "a:b",
            "x-1.2",
        ] {
            assert_eq!(to_string(&Value::from(s)), format!("{s}\n"));
        }
    }

    #[test]
    fn scripts_become_literal_blocks_that_read_back_exactly() {
        for s in [
            "set -e\nflyway migrate\n",
            "a\n\nb",
            "a\nb\n\n",
            "x:\n  y\n",
        ] {
            let v = parse(&format!("k: {}", serde_json::to_string(s).unwrap()));
            let text = to_string(&v);
            assert!(text.starts_with("k: |"), "{text}");
            assert_eq!(parse(&text), v, "{text}");
        }
    }

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            "\\PC{0,12}".prop_map(Value::from),
            "[a-z0-9 :#\\-\n'\"]{0,12}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Sequence),
                prop::collection::vec(("[a-zA-Z0-9 :.\\-]{0,8}", inner), 0..4).prop_map(|kv| {
                    Value::Mapping(kv.into_iter().map(|(k, v)| (Value::from(k), v)).collect())
                }),
            ]
        })
    }

    proptest! {
        #[test]
        fn every_value_reads_back_as_itself(v in value()) {
            let text = to_string(&v);
            let back: Value = serde_norway::from_str(&text)
                .map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
            prop_assert_eq!(back, v, "{}", text);
        }
    }
}
