//! Reads the response a comparator sends: the raw HTTP/1.1 response the
//! gateway gave for the benchmarked document, as `curl --include --raw`
//! saved it (status line, headers, a blank line, the body). Shared by the
//! comparators of `benches/ceiling.sh` through `#[path]`.

#![allow(dead_code)] // each comparator uses a part of it

use std::path::Path;

/// One HTTP/1.1 response split into its parts.
pub struct RawResponse {
    /// The status code.
    pub status: u16,
    /// The header fields in the order received.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// The whole response as read.
    pub bytes: Vec<u8>,
}

/// Reads and splits `path`; the error names the file and what is wrong.
pub fn read(path: &Path) -> Result<RawResponse, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("{}: no blank line after the headers", path.display()))?;
    let head = std::str::from_utf8(&bytes[..end])
        .map_err(|_| format!("{}: the header block is not UTF-8", path.display()))?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{}: no HTTP status line", path.display()))?;
    let mut headers = Vec::new();
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| format!("{}: malformed header line {line:?}", path.display()))?;
        headers.push((name.trim().to_string(), value.trim().to_string()));
    }
    let body = bytes[end + 4..].to_vec();
    let declared = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok());
    if declared != Some(body.len()) {
        return Err(format!(
            "{}: Content-Length {declared:?} but {} body bytes",
            path.display(),
            body.len()
        ));
    }
    Ok(RawResponse {
        status,
        headers,
        body,
        bytes,
    })
}

/// The value of `--NAME VALUE` among the arguments.
pub fn arg(name: &str) -> Result<String, String> {
    let flag = format!("--{name}");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == flag {
            return args.next().ok_or_else(|| format!("{flag} needs a value"));
        }
    }
    Err(format!("missing {flag}"))
}
