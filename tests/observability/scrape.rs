//! A parsed `/metrics` scrape: the Prometheus text exposition format
//! (version 0.0.4) read into samples, so tests can look up exact values by
//! name and labels and compare two scrapes.
//!
//! Hand-written rather than a crate: the tests need only sample lines, label
//! sets with the format's three escapes (`\\`, `\"`, `\n`) and `# TYPE`
//! lines, and a malformed line must fail the test with the line in the
//! message rather than be skipped.

use std::collections::{BTreeMap, BTreeSet};

use crate::support::{get, send, TestGateway};

/// One sample line: `name{label="value",...} value [timestamp]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A whole scrape.
#[derive(Debug, Clone)]
pub struct Scrape {
    /// The body as served.
    pub text: String,
    pub samples: Vec<Sample>,
    /// Metric family name -> type (`counter`, `gauge`, `histogram`, ...).
    pub types: BTreeMap<String, String>,
}

impl Scrape {
    /// Parses an exposition; any line that is not a comment, a blank line or
    /// a well-formed sample is an error naming the line.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut samples = Vec::new();
        let mut types = BTreeMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim_end();
            if line.is_empty() {
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut parts = rest.split_whitespace();
                match (parts.next(), parts.next(), parts.next()) {
                    (Some(name), Some(kind), None) => {
                        types.insert(name.to_string(), kind.to_string());
                    }
                    _ => return Err(format!("line {}: malformed TYPE: {line}", n + 1)),
                }
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            samples.push(parse_sample(line).map_err(|e| format!("line {}: {e}: {line}", n + 1))?);
        }
        Ok(Self {
            text: text.to_string(),
            samples,
            types,
        })
    }

    /// The value of the one sample named `name` whose labels are exactly
    /// `labels`, if there is one.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect();
        self.samples
            .iter()
            .find(|s| s.name == name && s.labels == want)
            .map(|s| s.value)
    }

    /// Like [`Scrape::value`], failing the test (with the family's samples
    /// in the message) when the series is absent.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, labels).unwrap_or_else(|| {
            let family: Vec<_> = self.samples.iter().filter(|s| s.name == name).collect();
            panic!("no sample {name}{labels:?} in the scrape; samples of that name: {family:#?}")
        })
    }

    /// Sum over every sample named `name` whose labels include `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
            .sum()
    }

    /// Every distinct value of `label` on samples named `name`.
    pub fn label_values(&self, name: &str, label: &str) -> BTreeSet<String> {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .filter_map(|s| s.labels.get(label).cloned())
            .collect()
    }

    /// Every sample name (series names: a histogram shows up as its
    /// `_bucket`, `_sum` and `_count` series).
    pub fn sample_names(&self) -> BTreeSet<&str> {
        self.samples.iter().map(|s| s.name.as_str()).collect()
    }
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err("no metric name".into());
    }
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(after) = rest.strip_prefix('{') {
        let (parsed, remaining) = parse_labels(after)?;
        labels = parsed;
        rest = remaining;
    }
    let value_text = rest
        .split_whitespace()
        .next()
        .ok_or_else(|| "no value".to_string())?;
    let value = value_text
        .parse::<f64>()
        .map_err(|e| format!("bad value {value_text:?}: {e}"))?;
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// Parses `label="value",...}` and returns the labels and what follows `}`.
fn parse_labels(mut s: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    loop {
        s = s.trim_start_matches([' ', ',']);
        if let Some(rest) = s.strip_prefix('}') {
            return Ok((labels, rest));
        }
        let eq = s.find('=').ok_or("label without '='")?;
        let key = s[..eq].trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("bad label name {key:?}"));
        }
        let after = s[eq + 1..]
            .strip_prefix('"')
            .ok_or("label value not quoted")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c @ ('\\' | '"'))) => value.push(c),
                    other => return Err(format!("bad escape {other:?}")),
                },
                Some((_, c)) => value.push(c),
                None => return Err("unterminated label value".into()),
            }
        };
        if labels.insert(key.to_string(), value).is_some() {
            return Err(format!("duplicate label {key}"));
        }
        s = &after[end + 1..];
    }
}

/// `GET /metrics`, checked for status and content type, and parsed.
pub async fn scrape(gw: &TestGateway) -> Scrape {
    let r = get(&gw.url("/metrics")).await;
    assert_eq!(r.status, 200, "GET /metrics");
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = String::from_utf8(r.body).expect("UTF-8 exposition");
    Scrape::parse(&text).unwrap_or_else(|e| panic!("unparsable scrape: {e}\n{text}"))
}

/// `HEAD /metrics`: the status and headers of a GET, no body.
pub async fn head_metrics(gw: &TestGateway) -> crate::support::Reply {
    send("HEAD", &gw.url("/metrics"), &[]).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_labels_escapes_types_and_special_values() {
        let text = "# HELP a_total Help.\n# TYPE a_total counter\n\
                    a_total{x=\"q\\\"uote\",y=\"back\\\\slash\\nnl\"} 3 1700000000\n\
                    b +Inf\nc{} NaN\n";
        let s = Scrape::parse(text).unwrap();
        assert_eq!(s.types["a_total"], "counter");
        assert_eq!(
            s.get("a_total", &[("x", "q\"uote"), ("y", "back\\slash\nnl")]),
            3.0
        );
        assert!(s.get("b", &[]).is_infinite());
        assert!(s.get("c", &[]).is_nan());
        assert_eq!(s.value("a_total", &[("x", "q\"uote")]), None, "exact match");
        assert_eq!(s.sum("a_total", &[("x", "q\"uote")]), 3.0);
    }

    #[test]
    fn rejects_malformed_lines() {
        for bad in [
            "a{x=\"1\" 2",
            "a{x=1} 2",
            "a 1x",
            "{x=\"1\"} 2",
            "a",
            "a{x=\"1\",x=\"2\"} 1",
        ] {
            assert!(Scrape::parse(bad).is_err(), "{bad}");
        }
    }
}
