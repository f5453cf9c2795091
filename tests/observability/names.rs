//! The PromQL queries in the repository's Grafana dashboards and alert
//! rules, and the gateway metric names they use, so a test can check each
//! name against a live scrape (a misspelt or renamed metric makes a panel
//! silently show "No data" and an alert silently never fire).
//!
//! Metric names are the identifiers outside string literals that start with
//! `metadata_gateway_` or `process_`; series Prometheus makes up itself
//! (`up`) are not the gateway's business.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::scrape::Scrape;

/// The repository root (where Cargo.toml is).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `path` relative to the repository root, for messages.
pub fn shown(path: &Path) -> String {
    path.strip_prefix(repo_root())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// One query and where it came from (for messages).
#[derive(Debug, Clone)]
pub struct Query {
    pub origin: String,
    pub expr: String,
}

/// Every query of every dashboard in `grafana/dashboards/`: panel targets
/// (`expr`) and templating variables (`query`, `definition`).
pub fn dashboard_queries() -> Vec<Query> {
    let dir = repo_root().join("grafana/dashboards");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no dashboards in {}", dir.display());
    let mut out = Vec::new();
    for file in files {
        let text = read(&file);
        let json: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{}: not JSON: {e}", file.display()));
        collect_dashboard_strings(&json, &shown(&file), &mut out);
    }
    out
}

fn collect_dashboard_strings(v: &Value, origin: &str, out: &mut Vec<Query>) {
    match v {
        Value::Object(map) => {
            let here = match (map.get("title"), map.get("name")) {
                (Some(Value::String(t)), _) | (None, Some(Value::String(t))) => {
                    format!("{origin} > {t}")
                }
                _ => origin.to_string(),
            };
            for (k, child) in map {
                match (k.as_str(), child) {
                    ("expr" | "query" | "definition", Value::String(s)) => out.push(Query {
                        origin: format!("{here} ({k})"),
                        expr: s.clone(),
                    }),
                    _ => collect_dashboard_strings(child, &here, out),
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                collect_dashboard_strings(item, origin, out);
            }
        }
        _ => {}
    }
}

/// The `expr` of every rule in a Prometheus rules file, read without a YAML
/// library: `expr: <one line>` or a block scalar `expr: |` / `>` (with an
/// optional chomping indicator) whose lines are indented deeper than the
/// key. The count is checked against the `- alert:` / `- record:` entries so
/// that a layout this reader does not understand fails loudly.
pub fn rule_exprs(path: &Path) -> Vec<Query> {
    let text = read(path);
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut rules = 0;
    let mut current = String::from("?");
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim_start();
        let body = trimmed.strip_prefix("- ").unwrap_or(trimmed);
        if let Some(name) = body
            .strip_prefix("alert:")
            .or_else(|| body.strip_prefix("record:"))
        {
            rules += 1;
            current = name.trim().to_string();
        }
        if let Some(value) = body.strip_prefix("expr:") {
            let indent = line.len() - trimmed.len();
            let value = value.trim();
            let expr = if matches!(value, "|" | "|-" | "|+" | ">" | ">-" | ">+") {
                let mut block = Vec::new();
                while i + 1 < lines.len() {
                    let next = lines[i + 1];
                    let next_indent = next.len() - next.trim_start().len();
                    if !next.trim().is_empty() && next_indent <= indent {
                        break;
                    }
                    block.push(next.trim());
                    i += 1;
                }
                block.join("\n").trim_end().to_string()
            } else {
                unquote(value)
            };
            assert!(
                !expr.trim().is_empty(),
                "{}: empty expr in rule {current}",
                path.display()
            );
            out.push(Query {
                origin: format!("{} > {current}", shown(path)),
                expr,
            });
        }
        i += 1;
    }
    assert_eq!(
        out.len(),
        rules,
        "{}: found {} exprs for {rules} rules; the file layout is not understood",
        path.display(),
        out.len()
    );
    out
}

fn unquote(v: &str) -> String {
    let single = v.len() >= 2 && v.starts_with('\'') && v.ends_with('\'');
    let double = v.len() >= 2 && v.starts_with('"') && v.ends_with('"');
    if single {
        v[1..v.len() - 1].replace("''", "'")
    } else if double {
        v[1..v.len() - 1]
            .replace("\\\"", "\"")
            .replace("\\\\", "\\")
    } else {
        v.to_string()
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The gateway metric names a PromQL expression uses: identifiers outside
/// string literals that start with `metadata_gateway_` or `process_`.
pub fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut chars = expr.char_indices().peekable();
    while let Some((start, c)) = chars.next() {
        match c {
            '"' | '\'' | '`' => {
                // Skip the literal, honouring backslash escapes (not in `...`).
                let mut escaped = false;
                for (_, d) in chars.by_ref() {
                    if escaped {
                        escaped = false;
                    } else if d == '\\' && c != '`' {
                        escaped = true;
                    } else if d == c {
                        break;
                    }
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let mut end = start + c.len_utf8();
                while let Some(&(i, d)) = chars.peek() {
                    if d.is_ascii_alphanumeric() || d == '_' || d == ':' {
                        end = i + d.len_utf8();
                        chars.next();
                    } else {
                        break;
                    }
                }
                let ident = &expr[start..end];
                if ident.starts_with("metadata_gateway_") || ident.starts_with("process_") {
                    names.insert(ident.to_string());
                }
            }
            c if c.is_ascii_digit() => {
                // A number or duration (`5m`): never a metric name.
                while chars
                    .peek()
                    .is_some_and(|&(_, d)| d.is_ascii_alphanumeric() || d == '.')
                {
                    chars.next();
                }
            }
            _ => {}
        }
    }
    names
}

/// Problems with `name` as a series to query in `scrape`: `None` when the
/// scrape has samples of that name. A histogram must be queried through its
/// `_bucket`, `_sum` or `_count` series; its bare family name has no samples.
pub fn missing_from(scrape: &Scrape, name: &str) -> Option<String> {
    if scrape.sample_names().contains(name) {
        return None;
    }
    Some(match scrape.types.get(name).map(String::as_str) {
        Some(kind @ ("histogram" | "summary")) => format!(
            "{name} is a {kind}: query {name}_bucket, {name}_sum or {name}_count (the bare name has no series)"
        ),
        _ => {
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .filter(|b| scrape.types.get(*b).is_some_and(|t| t == "histogram"));
            match base {
                Some(b) => format!("{name}: histogram {b} has no such series yet"),
                None => format!("{name} is not exported by the gateway"),
            }
        }
    })
}

/// Every (query origin, problem) for names the queries use that the scrape
/// does not have.
pub fn problems(scrape: &Scrape, queries: &[Query]) -> Vec<String> {
    let mut out = Vec::new();
    for q in queries {
        for name in metric_names(&q.expr) {
            if let Some(p) = missing_from(scrape, &name) {
                out.push(format!("{}: {p}", q.origin));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_outside_strings_only() {
        let names = metric_names(
            r#"sum(rate(metadata_gateway_lookups_total{job="oauth-metadata-gateway", route=~"process_x"}[5m]))
               / on(instance) process_cpu_seconds_total offset 1m and absent(metadata_gateway_x_bucket) * 1e3"#,
        );
        let want: BTreeSet<String> = [
            "metadata_gateway_lookups_total",
            "process_cpu_seconds_total",
            "metadata_gateway_x_bucket",
        ]
        .map(String::from)
        .into();
        assert_eq!(names, want);
    }

    #[test]
    fn rule_exprs_reads_block_and_inline_forms() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rules.yml");
        std::fs::write(
            &path,
            "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: |\n          up == 0\n\n          or absent(up)\n        for: 1m\n      - record: b:sum\n        expr: \"sum(metadata_gateway_a_total)\"\n      - alert: C\n        expr: process_open_fds > 1\n",
        )
        .unwrap();
        let exprs: Vec<_> = rule_exprs(&path).into_iter().map(|q| q.expr).collect();
        assert_eq!(
            exprs,
            [
                "up == 0\n\nor absent(up)",
                "sum(metadata_gateway_a_total)",
                "process_open_fds > 1"
            ]
        );
    }
}
