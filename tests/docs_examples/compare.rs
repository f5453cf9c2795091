//! Expected output (as written in a `console` block) against what a
//! command printed. The rules, also in docs/development.md:
//!
//! - `...` stands for any text: within a line, any part of it; alone on a
//!   line, any number of lines.
//! - Output that starts with `HTTP/` (`curl -i`) is a response: the status
//!   line must be identical, the header *names* the same set (in any
//!   order), and each value identical except `age`, `date`, `etag`,
//!   `last-modified`, `content-length` and `retry-after` (they depend on
//!   time, or on the bytes of a document that names the demo's port),
//!   whose values are not compared, and `cache-control` and
//!   `cache-status`, whose numbers count down and are not compared. The
//!   body after the blank line follows the text rules.
//! - Output that is a JSON object or array is compared as JSON: the same
//!   members, the same strings (with `...`) and literals; numbers and
//!   RFC 3339 timestamps vary.
//! - Anything else is compared line by line, exactly apart from `...`.

/// Header values not compared.
const VOLATILE: [&str; 6] = [
    "age",
    "date",
    "etag",
    "last-modified",
    "content-length",
    "retry-after",
];
/// Header values whose numbers are not compared.
const COUNTDOWN: [&str; 2] = ["cache-control", "cache-status"];

/// `Ok` when `actual` is what `expected` (the lines after the command)
/// describes, else what differs.
pub fn matches(expected: &[String], actual: &str) -> Result<(), String> {
    let expected = trim_blank(expected.iter().map(|l| l.trim_end().to_string()).collect());
    let actual = actual.replace("\r\n", "\n");
    let actual_lines: Vec<String> =
        trim_blank(actual.lines().map(|l| l.trim_end().to_string()).collect());
    if expected.first().is_some_and(|l| l.starts_with("HTTP/")) {
        return http(&expected, &actual_lines);
    }
    text(&expected, &actual_lines)
}

fn trim_blank(mut lines: Vec<String>) -> Vec<String> {
    while lines.last().is_some_and(String::is_empty) {
        lines.pop();
    }
    while lines.first().is_some_and(String::is_empty) {
        lines.remove(0);
    }
    lines
}

fn http(expected: &[String], actual: &[String]) -> Result<(), String> {
    let (exp_head, exp_body) = split_head(expected);
    let (act_head, act_body) = split_head(actual);
    let status = |head: &[String]| head.first().cloned().unwrap_or_default();
    if status(exp_head) != status(act_head) {
        return Err(format!(
            "status line {:?}, expected {:?}",
            status(act_head),
            status(exp_head)
        ));
    }
    let headers = |head: &[String]| -> Vec<(String, String)> {
        head.iter()
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect()
    };
    let (exp, act) = (headers(exp_head), headers(act_head));
    let names = |h: &[(String, String)]| {
        let mut n: Vec<String> = h.iter().map(|(n, _)| n.clone()).collect();
        n.sort();
        n
    };
    if names(&exp) != names(&act) {
        let missing: Vec<_> = names(&exp)
            .into_iter()
            .filter(|n| !names(&act).contains(n))
            .collect();
        let extra: Vec<_> = names(&act)
            .into_iter()
            .filter(|n| !names(&exp).contains(n))
            .collect();
        return Err(format!(
            "header names differ: not sent {missing:?}, sent but not in the doc {extra:?}"
        ));
    }
    for (name, want) in &exp {
        if VOLATILE.contains(&name.as_str()) {
            continue;
        }
        let got = act
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or("");
        let ok = if COUNTDOWN.contains(&name.as_str()) {
            glob(&digits_out(want), &digits_out(got))
        } else {
            glob(want, got)
        };
        if !ok {
            return Err(format!("header {name}: {got:?}, expected {want:?}"));
        }
    }
    text(exp_body, act_body).map_err(|e| format!("body: {e}"))
}

/// The head (status line and headers) and the body after the blank line.
fn split_head(lines: &[String]) -> (&[String], &[String]) {
    match lines.iter().position(String::is_empty) {
        Some(i) => (&lines[..i], &lines[i + 1..]),
        None => (lines, &[]),
    }
}

/// Every run of digits as `0`.
fn digits_out(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut in_digits = false;
    for c in s.chars() {
        if c.is_ascii_digit() {
            if !in_digits {
                out.push('0');
            }
            in_digits = true;
        } else {
            out.push(c);
            in_digits = false;
        }
    }
    out
}

fn text(expected: &[String], actual: &[String]) -> Result<(), String> {
    let joined_exp = expected.join("\n");
    let joined_act = actual.join("\n");
    if let (Ok(exp), Ok(act)) = (
        serde_json::from_str::<serde_json::Value>(&joined_exp),
        serde_json::from_str::<serde_json::Value>(&joined_act),
    ) {
        if exp.is_object() || exp.is_array() {
            return json(&exp, &act, "$");
        }
    }
    if lines_match(expected, actual) {
        Ok(())
    } else {
        Err(format!(
            "printed\n{}\nexpected\n{}",
            indent(actual),
            indent(expected)
        ))
    }
}

fn indent(lines: &[String]) -> String {
    lines
        .iter()
        .map(|l| format!("    | {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn lines_match(exp: &[String], act: &[String]) -> bool {
    match exp.split_first() {
        None => act.is_empty(),
        Some((first, rest)) if first.trim() == "..." => {
            (0..=act.len()).any(|skip| lines_match(rest, &act[skip..]))
        }
        Some((first, rest)) => act
            .split_first()
            .is_some_and(|(a, act_rest)| glob(first, a) && lines_match(rest, act_rest)),
    }
}

/// `pattern` with `...` as a wildcard matches all of `s`.
pub fn glob(pattern: &str, s: &str) -> bool {
    let parts: Vec<&str> = pattern.split("...").collect();
    if parts.len() == 1 {
        return pattern == s;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !s.starts_with(first) || s.len() < first.len() + last.len() || !s.ends_with(last) {
        return false;
    }
    let mut rest = &s[first.len()..s.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    true
}

fn json(exp: &serde_json::Value, act: &serde_json::Value, at: &str) -> Result<(), String> {
    use serde_json::Value;
    match (exp, act) {
        (Value::Object(e), Value::Object(a)) => {
            let mut ek: Vec<_> = e.keys().collect();
            let mut ak: Vec<_> = a.keys().collect();
            ek.sort();
            ak.sort();
            if ek != ak {
                return Err(format!("{at}: members {ak:?}, expected {ek:?}"));
            }
            for (k, v) in e {
                json(v, &a[k], &format!("{at}.{k}"))?;
            }
            Ok(())
        }
        (Value::Array(e), Value::Array(a)) => {
            if e.len() != a.len() {
                return Err(format!("{at}: {} items, expected {}", a.len(), e.len()));
            }
            for (i, (e, a)) in e.iter().zip(a).enumerate() {
                json(e, a, &format!("{at}[{i}]"))?;
            }
            Ok(())
        }
        (Value::Number(_), Value::Number(_)) => Ok(()),
        (Value::String(e), Value::String(a)) if is_timestamp(e) && is_timestamp(a) => Ok(()),
        (Value::String(e), Value::String(a)) if glob(e, a) => Ok(()),
        (e, a) if e == a => Ok(()),
        (e, a) => Err(format!("{at}: {a}, expected {e}")),
    }
}

/// An RFC 3339 UTC timestamp as the gateway writes them
/// (`2026-12-02T18:13:09Z`, fractions allowed).
fn is_timestamp(s: &str) -> bool {
    let shape = "dddd-dd-ddTdd:dd:dd";
    s.len() > shape.len()
        && s.ends_with('Z')
        && s.bytes().zip(shape.bytes()).all(|(c, p)| match p {
            b'd' => c.is_ascii_digit(),
            p => c == p,
        })
        && s[shape.len()..s.len() - 1]
            .strip_prefix('.')
            .map_or(s.len() == shape.len() + 1, |f| {
                f.bytes().all(|c| c.is_ascii_digit())
            })
}

/// The comparer's own checks, run before the examples: a comparer that
/// accepts everything would make every example pass.
pub fn self_check() -> Result<(), String> {
    let l = |s: &str| s.lines().map(String::from).collect::<Vec<_>>();
    let resp = "HTTP/1.1 200 OK\ncontent-type: application/json\netag: \"1\"\ncache-status: g; hit; ttl=241\n\n{\"issuer\":\"http://localhost:1\",\"a\":1}";
    let cases: [(&str, &str, bool); 14] = [
        ("{\"at\":\"2026-12-02T18:13:09Z\"}", "{\"at\":\"2027-01-01T00:00:00.5Z\"}", true),
        ("{\"at\":\"2026-12-02T18:13:09Z\"}", "{\"at\":\"yesterday\"}", false),
        (resp, "HTTP/1.1 200 OK\r\nCache-Status: g; hit; ttl=300\r\ncontent-type: application/json\r\netag: \"2\"\r\n\r\n{\"issuer\":\"http://localhost:1\",\"a\":1}", true),
        (resp, "HTTP/1.1 503 Service Unavailable\ncontent-type: application/json\netag: \"1\"\ncache-status: g; hit; ttl=241\n\n{}", false),
        (resp, "HTTP/1.1 200 OK\ncontent-type: application/json\ncache-status: g; hit; ttl=241\n\n{\"issuer\":\"http://localhost:1\",\"a\":1}", false),
        (resp, "HTTP/1.1 200 OK\ncontent-type: text/plain\netag: \"1\"\ncache-status: g; hit; ttl=241\n\n{\"issuer\":\"http://localhost:1\",\"a\":1}", false),
        (resp, "HTTP/1.1 200 OK\ncontent-type: application/json\netag: \"1\"\ncache-status: g; fwd=miss; ttl=241\n\n{\"issuer\":\"http://localhost:1\",\"a\":1}", false),
        (resp, "HTTP/1.1 200 OK\ncontent-type: application/json\netag: \"1\"\ncache-status: g; hit; ttl=241\n\n{\"issuer\":\"http://localhost:2\",\"a\":1}", false),
        ("{\"issuer\":\"http://localhost:1\",...}", "{\"issuer\":\"http://localhost:1\",\"b\":[]}", true),
        ("200", "503", false),
        ("a\n...\nz", "a\nb\nc\nz", true),
        ("a\n...\nz", "a\nb\nc", false),
        ("{\"x\":\"a...\",\"n\":1}", "{\"n\":7,\"x\":\"abc\"}", true),
        ("{\"x\":\"a\"}", "{\"x\":\"a\",\"y\":1}", false),
    ];
    for (i, (exp, act, want)) in cases.iter().enumerate() {
        if matches(&l(exp), act).is_ok() != *want {
            return Err(format!(
                "comparer self-check {i} failed: {exp:?} vs {act:?} should be {want}"
            ));
        }
    }
    Ok(())
}
