//! `If-None-Match` evaluation (RFC 9110 §13.1.2): a list of entity tags or
//! `*`, compared with the weak comparison function. Malformed input never
//! matches, so the worst a bad header can cause is a full 200 response.

use actix_web::http::header::{HeaderMap, HeaderValue, IF_NONE_MATCH};

/// True when the request's `If-None-Match` matches `etag`, i.e. the client
/// already holds the current document and should get 304.
pub fn none_match(headers: &HeaderMap, etag: &HeaderValue) -> bool {
    let current = opaque(etag.as_bytes());
    headers
        .get_all(IF_NONE_MATCH)
        .any(|value| list_matches(value.as_bytes(), current))
}

/// Strips an optional `W/` prefix; weak comparison ignores it.
fn opaque(tag: &[u8]) -> &[u8] {
    tag.strip_prefix(b"W/").unwrap_or(tag)
}

/// Walks one header value: `*`, or `#entity-tag` where
/// `entity-tag = [ "W/" ] DQUOTE *etagc DQUOTE`.
fn list_matches(value: &[u8], current: &[u8]) -> bool {
    let trimmed = value.trim_ascii();
    if trimmed == b"*" {
        return true;
    }
    let mut rest = trimmed;
    loop {
        rest = rest.trim_ascii_start();
        while let Some(r) = rest.strip_prefix(b",") {
            rest = r.trim_ascii_start();
        }
        if rest.is_empty() {
            return false;
        }
        let body = rest.strip_prefix(b"W/").unwrap_or(rest);
        let Some(after_quote) = body.strip_prefix(b"\"") else {
            return false;
        };
        let Some(end) = after_quote.iter().position(|&b| b == b'"') else {
            return false;
        };
        let tag = &body[..end + 2];
        if tag == current {
            return true;
        }
        rest = &after_quote[end + 1..];
        let next = rest.trim_ascii_start();
        if !(next.is_empty() || next.starts_with(b",")) {
            return false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(header: &str, etag: &str) -> bool {
        let mut h = HeaderMap::new();
        h.insert(IF_NONE_MATCH, HeaderValue::from_str(header).unwrap());
        none_match(&h, &HeaderValue::from_str(etag).unwrap())
    }

    #[test]
    fn matching_rules() {
        assert!(check("\"abc\"", "\"abc\""));
        assert!(check("W/\"abc\"", "\"abc\""));
        assert!(check("\"x\", \"abc\"", "\"abc\""));
        assert!(check("\"x\",W/\"abc\"", "\"abc\""));
        assert!(check("*", "\"abc\""));
        assert!(check(" , \"abc\" ,", "\"abc\""));
        assert!(check("\"a,b\", \"abc\"", "\"abc\""));
        assert!(!check("\"abd\"", "\"abc\""));
        assert!(!check("abc", "\"abc\""));
        assert!(!check("\"abc", "\"abc\""));
        assert!(!check("\"x\" junk \"abc\"", "\"abc\""));
        assert!(!check("", "\"abc\""));
    }

    #[test]
    fn no_header_no_match() {
        assert!(!none_match(
            &HeaderMap::new(),
            &HeaderValue::from_static("\"a\"")
        ));
    }
}
