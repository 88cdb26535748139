//! `k8s lint` findings as text (people), JSON (scripts) and SARIF 2.1.0 (code-scanning UIs).
//! Pure formatting; the findings come from `lint.rs`.

use super::lint::{Finding, RULES, Rule, Severity};
use serde_json::{Value, json};

/// One line per finding, its fix below it, and a count.
pub fn text(findings: &[Finding]) -> String {
    let mut out = String::new();
    for f in findings {
        out.push_str(&format!(
            "{}[{} {}] {}\n  fix: {}\n",
            f.rule.severity.as_str(),
            f.rule.id,
            f.rule.name,
            f.headline(),
            f.rule.fix
        ));
    }
    let (errors, warnings) = counts(findings);
    out.push_str(&format!(
        "{errors} error{}, {warnings} warning{}\n",
        plural(errors),
        plural(warnings)
    ));
    out
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn counts(findings: &[Finding]) -> (usize, usize) {
    let errors = findings
        .iter()
        .filter(|f| f.rule.severity == Severity::Error)
        .count();
    (errors, findings.len() - errors)
}

pub fn json(findings: &[Finding]) -> Value {
    let (errors, warnings) = counts(findings);
    json!({
        "findings": findings.iter().map(|f| json!({
            "rule": f.rule.id,
            "name": f.rule.name,
            "severity": f.rule.severity,
            "document": f.document,
            "line": f.line,
            "object": f.object,
            "container": f.container,
            "message": f.headline(),
            "fix": f.rule.fix,
        })).collect::<Vec<_>>(),
        "errors": errors,
        "warnings": warnings,
    })
}

fn rule_json(r: &Rule) -> Value {
    json!({
        "id": r.id,
        "name": r.name,
        "shortDescription": { "text": r.summary },
        "help": { "text": r.fix },
        "defaultConfiguration": { "level": r.severity.as_str() },
    })
}

/// A SARIF 2.1.0 log with one run; `uri` names the linted file (`stdin` for `-`).
pub fn sarif(findings: &[Finding], uri: &str) -> Value {
    let results: Vec<Value> = findings
        .iter()
        .map(|f| {
            json!({
                "ruleId": f.rule.id,
                "ruleIndex": RULES.iter().position(|r| r.id == f.rule.id).unwrap_or(0),
                "level": f.rule.severity.as_str(),
                "message": { "text": format!("{} Fix: {}", f.headline(), f.rule.fix) },
                "locations": [{
                    "physicalLocation": {
                        "artifactLocation": { "uri": uri },
                        "region": { "startLine": f.line.max(1) },
                    },
                    "logicalLocations": [{ "name": f.object, "kind": "resource" }],
                }],
            })
        })
        .collect();
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": { "driver": {
                "name": "initguard",
                "version": env!("CARGO_PKG_VERSION"),
                "rules": RULES.iter().map(|r| rule_json(r)).collect::<Vec<_>>(),
            }},
            "results": results,
        }],
    })
}
