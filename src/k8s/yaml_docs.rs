//! A multi-document YAML stream cut into its documents, so that `k8s inject` re-serialises only
//! the documents it changes and copies every other one byte for byte (comments, quoting, key
//! order, Helm's `# Source:` lines). Must never panic on any input.
//!
//! Cutting at lines that start with `---` is exact, not a heuristic: YAML 1.2 (§9.1.4, "c-forbidden")
//! forbids a `---` or `...` followed by white space or a line end at the start of a line inside
//! any scalar, block or quoted, so such a line always starts a document; a `---` inside a block
//! scalar is indented and is not matched.
//!
//! The YAML crate is `serde_norway`, the maintained fork of `serde_yaml` 0.9 (same API, same
//! libyaml port), because its dynamic `Value` keeps key order in its `Mapping`, which a
//! re-serialised document must keep. The others: `serde_yaml` is deprecated; `serde_yml` is now
//! a deprecated shim; `serde-saphyr` (already in the tree through kube's kubeconfig parsing) has
//! no dynamic value type, so keeping order and unknown fields would mean writing one;
//! `yaml-rust2`/`saphyr` have no serde and no emitter we could keep the output stable with.

use serde_norway::Value;

/// One document of the stream: its exact text, starting with its `---` line if it had one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document<'a> {
    /// 1-based position in the stream, as users count documents.
    pub index: usize,
    /// 1-based line of the input where the document's text starts.
    pub line: usize,
    pub text: &'a str,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("document {document} is not valid YAML at line {line}: {message}")]
pub struct YamlError {
    pub document: usize,
    pub line: usize,
    pub message: String,
}

/// Far beyond any manifest (brackets in strings count too), far below what is slow to parse.
const MAX_FLOW_DEPTH: usize = 1000;

fn is_separator(line: &str) -> bool {
    line.strip_prefix("---")
        .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t', '\r', '\n']))
}

/// The documents of `input`, whose texts concatenate back to exactly `input`.
pub fn split(input: &str) -> Vec<Document<'_>> {
    let mut docs = Vec::new();
    let mut start = 0;
    let mut start_line = 1;
    let mut offset = 0;
    for (n, line) in input.split_inclusive('\n').enumerate() {
        if is_separator(line) && offset > start {
            docs.push(Document {
                index: docs.len() + 1,
                line: start_line,
                text: &input[start..offset],
            });
            start = offset;
            start_line = n + 1;
        }
        offset += line.len();
    }
    if start < input.len() || docs.is_empty() {
        docs.push(Document {
            index: docs.len() + 1,
            line: start_line,
            text: &input[start..],
        });
    }
    docs
}

impl Document<'_> {
    /// The document's value; `Null` for a document of only comments or white space. Aliases are
    /// expanded and `<<` merge keys applied, so the caller sees what Kubernetes sees.
    pub fn parse(&self) -> Result<Value, YamlError> {
        // The parser rejects nesting past 128 levels, but only after work that grows with the
        // square of the depth (40 s for 100 000 `[`): refuse absurd flow nesting up front.
        let mut depth: usize = 0;
        for (n, line) in self.text.split_inclusive('\n').enumerate() {
            for b in line.bytes() {
                match b {
                    b'[' | b'{' => depth += 1,
                    b']' | b'}' => depth = depth.saturating_sub(1),
                    _ => {}
                }
                if depth > MAX_FLOW_DEPTH {
                    return Err(YamlError {
                        document: self.index,
                        line: self.line + n,
                        message: format!("more than {MAX_FLOW_DEPTH} nested [ or {{"),
                    });
                }
            }
        }
        let mut value: Value = serde_norway::from_str(self.text).map_err(|e| {
            // The parser counts lines from the document's start; users count from the file's.
            let mut message = e.to_string();
            let mut line = self.line;
            if let Some(l) = e.location() {
                message =
                    message.replace(&format!(" at line {} column {}", l.line(), l.column()), "");
                line += l.line().saturating_sub(1);
            }
            YamlError {
                document: self.index,
                line,
                message,
            }
        })?;
        value.apply_merge().map_err(|e| YamlError {
            document: self.index,
            line: self.line,
            message: e.to_string(),
        })?;
        octal_modes(&mut value);
        Ok(value)
    }

    /// `value` as this document's replacement text: its `---` line and the comments that open
    /// it (Helm's `# Source: chart/templates/x.yaml`) are kept, the body is re-serialised.
    pub fn render(&self, value: &Value) -> String {
        let body = super::yaml_emit::to_string(value);
        let mut out = String::new();
        let mut lines = self.text.split_inclusive('\n').peekable();
        if let Some(first) = lines.peek()
            && is_separator(first)
        {
            out.push_str("---\n");
            lines.next();
        }
        for line in lines {
            let t = line.trim_start();
            if t.starts_with('#') || t.trim().is_empty() {
                out.push_str(line);
                if !line.ends_with('\n') {
                    out.push('\n');
                }
            } else {
                break;
            }
        }
        out.push_str(&body);
        out
    }
}

/// File modes as Kubernetes reads them. kubectl parses YAML 1.1, where a plain `0644` is octal
/// 420; the YAML 1.2 parser here reads it as the string "0644", which would come out quoted and
/// be refused. `defaultMode` and `mode` (ConfigMap, Secret and projected volumes) are the
/// integer fields that are written in octal; nothing else is reinterpreted.
fn octal_modes(v: &mut Value) {
    match v {
        Value::Mapping(m) => {
            for (k, v) in m.iter_mut() {
                if matches!(k.as_str(), Some("defaultMode" | "mode"))
                    && let Value::String(s) = v
                    && s.len() > 1
                    && s.starts_with('0')
                    && s.bytes().all(|b| (b'0'..=b'7').contains(&b))
                    && let Ok(n) = i64::from_str_radix(s, 8)
                {
                    *v = Value::from(n);
                } else {
                    octal_modes(v);
                }
            }
        }
        Value::Sequence(s) => s.iter_mut().for_each(octal_modes),
        Value::Tagged(t) => octal_modes(&mut t.value),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn texts(input: &str) -> Vec<&str> {
        split(input).into_iter().map(|d| d.text).collect()
    }

    #[test]
    fn splits_at_separator_lines_only() {
        let input = "# Source: a.yaml\n---\na: 1\n--- # c\nb: |\n  ---\n  x\n---\n";
        assert_eq!(
            texts(input),
            vec![
                "# Source: a.yaml\n",
                "---\na: 1\n",
                "--- # c\nb: |\n  ---\n  x\n",
                "---\n"
            ]
        );
        let docs = split(input);
        assert_eq!(docs[2].line, 4);
        assert_eq!(docs[2].parse().unwrap()["b"], Value::from("---\nx\n"));
        assert!(docs[0].parse().unwrap().is_null());
    }

    #[test]
    fn lines_that_merely_start_with_dashes_do_not_split() {
        assert_eq!(texts("a: 1\n----\n---x\n"), vec!["a: 1\n----\n---x\n"]);
        assert_eq!(texts(""), vec![""]);
        assert_eq!(texts("---\n"), vec!["---\n"]);
    }

    #[test]
    fn render_keeps_the_separator_and_opening_comments() {
        let d = &split("x: 0\n---\n# Source: c/t.yaml\n# more\nb: 2\na: 1\n")[1];
        let mut v = d.parse().unwrap();
        v["c"] = Value::from(3);
        assert_eq!(
            d.render(&v),
            "---\n# Source: c/t.yaml\n# more\nb: 2\na: 1\nc: 3\n"
        );
    }

    #[test]
    fn octal_file_modes_read_as_kubectl_reads_them() {
        let v = split(
            "volumes:\n- configMap: {defaultMode: 0644, items: [{mode: 0400}]}\n  env: '0644'\n",
        )[0]
        .parse()
        .unwrap();
        assert_eq!(
            v["volumes"][0]["configMap"]["defaultMode"],
            Value::from(420)
        );
        assert_eq!(
            v["volumes"][0]["configMap"]["items"][0]["mode"],
            Value::from(256)
        );
        assert_eq!(v["volumes"][0]["env"], Value::from("0644"));
    }

    #[test]
    fn merge_keys_and_aliases_are_resolved() {
        let d = &split("base: &b {x: 1}\nmine:\n  <<: *b\n  y: 2\n")[0];
        let v = d.parse().unwrap();
        assert_eq!(v["mine"]["x"], Value::from(1));
    }

    #[test]
    fn absurd_nesting_is_refused_before_parsing() {
        let text = format!("a: {}", "[".repeat(1001));
        let err = split(&text)[0].parse().unwrap_err();
        assert!(err.message.contains("nested"), "{err}");
        assert!(
            split(&format!("a: {}1{}", "[".repeat(100), "]".repeat(100)))[0]
                .parse()
                .is_ok()
        );
    }

    #[test]
    fn bad_yaml_names_its_document_and_line() {
        let err = split("a: 1\n---\nb: [\n")[1].parse().unwrap_err();
        assert_eq!(err.document, 2);
        assert!(err.line >= 2, "{err}");
    }

    proptest! {
        #[test]
        fn split_is_lossless_and_never_panics(s in "(---|\\.\\.\\.|[ a-z:#|>\\-\\[\\]{}'\"]{0,6}|\n){0,40}") {
            let docs = split(&s);
            let joined: String = docs.iter().map(|d| d.text).collect();
            prop_assert_eq!(joined, s.clone());
            for d in &docs {
                if let Ok(v) = d.parse() { let _ = d.render(&v); }
            }
        }
    }
}
