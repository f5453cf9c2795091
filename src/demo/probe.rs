//! What answers at the demo server's address when the demo steps aside
//! because the address is taken: one plain HTTP/1.0 GET of the document
//! the gateway is about to fetch there, so the start-up log can say
//! "it answers with issuer X" (or its status, or that it does not speak
//! HTTP) instead of leaving a new user to guess why every request fails.
//!
//! HTTP/1.0 on purpose: the server must then close the connection after
//! the body and cannot send it chunked (RFC 9112 §7.1 is HTTP/1.1 only),
//! so reading to the end is the whole response and no HTTP client is
//! needed. Bounded in time and size; it never fails, it describes.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// The most of the response read: a metadata document is far smaller.
const MAX_RESPONSE: u64 = 256 * 1024;

/// A short description of what answers `GET path` at `addr` within
/// `timeout`: `answers with issuer "…"`, `answers HTTP 404`, or why it
/// does not answer.
pub fn describe(addr: SocketAddr, path: &str, timeout: Duration) -> String {
    match get(addr, path, timeout) {
        Ok(response) => describe_response(&response),
        Err(e) => format!("does not answer an HTTP request ({e})"),
    }
}

fn get(addr: SocketAddr, path: &str, timeout: Duration) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nAccept: application/json\r\nUser-Agent: oauth-metadata-gateway (demo probe)\r\n\r\n"
    )?;
    let mut response = Vec::new();
    stream.take(MAX_RESPONSE).read_to_end(&mut response)?;
    Ok(response)
}

/// The description of a raw HTTP response.
fn describe_response(response: &[u8]) -> String {
    let text = String::from_utf8_lossy(response);
    let Some(status) = text
        .lines()
        .next()
        .and_then(|line| line.strip_prefix("HTTP/"))
        .and_then(|rest| rest.split_whitespace().nth(1))
        .and_then(|code| code.parse::<u16>().ok())
    else {
        return "does not answer HTTP".to_string();
    };
    let body = text.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    let issuer = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|doc| doc.get("issuer")?.as_str().map(str::to_string));
    match (status, issuer) {
        (200, Some(issuer)) => format!("answers with issuer {issuer:?}"),
        (200, None) => "answers HTTP 200 without an issuer".to_string(),
        (status, _) => format!("answers HTTP {status}"),
    }
}

#[cfg(test)]
mod tests {
    use super::describe_response;

    #[test]
    fn names_the_issuer_or_the_status() {
        assert_eq!(
            describe_response(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n{\"issuer\":\"https://as.example\"}"),
            "answers with issuer \"https://as.example\""
        );
        assert_eq!(
            describe_response(b"HTTP/1.0 404 Not Found\r\n\r\nnope"),
            "answers HTTP 404"
        );
        assert_eq!(
            describe_response(b"HTTP/1.1 200 OK\r\n\r\n<html>"),
            "answers HTTP 200 without an issuer"
        );
        assert_eq!(
            describe_response(b"SSH-2.0-OpenSSH_9.6\r\n"),
            "does not answer HTTP"
        );
        assert_eq!(describe_response(b""), "does not answer HTTP");
    }
}
