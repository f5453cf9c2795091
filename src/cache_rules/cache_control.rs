//! The `Cache-Control` parser (RFC 9111 §5.2) and delta-seconds
//! (§1.2.2): the directives a shared cache storing a response cares about.
//!
//! Written here rather than taken from a crate: actix-web's `CacheDirective` matches directive names
//! case-sensitively, rejects a delta-seconds too large for `u32` instead of
//! capping it (§1.2.2) and splits quoted strings at commas; and
//! `http-cache-semantics` makes its own storability choices (heuristic
//! freshness, `no-store` is never stored) that are not this gateway's. It
//! is small and covered by property tests (tests/properties.rs).

use super::freshness::MAX_DELTA_SECONDS;

/// The `Cache-Control` directives that matter to a shared cache storing a
/// response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Directives {
    /// `s-maxage`: `Some(Err(InvalidDeltaSeconds))` when present but not a delta-seconds.
    pub s_maxage: Option<Result<u64, InvalidDeltaSeconds>>,
    /// `max-age`, likewise.
    pub max_age: Option<Result<u64, InvalidDeltaSeconds>>,
    /// `no-store`.
    pub no_store: bool,
    /// Unqualified `no-cache` (`no-cache="field"` only concerns fields).
    pub no_cache: bool,
    /// Unqualified `private`.
    pub private: bool,
    /// `stale-if-error` (RFC 5861 §4), when a valid delta-seconds.
    pub stale_if_error: Option<u64>,
}

/// Parses a `Cache-Control` value (RFC 9111 §5.2): comma-separated
/// directives, names case-insensitive, arguments tokens or quoted strings
/// (commas inside quotes do not split). The first occurrence of a
/// directive wins (§4.2.1); unknown directives are ignored.
pub fn parse_cache_control(value: &str) -> Directives {
    let mut d = Directives::default();
    for item in split_directives(value) {
        let (name, arg) = match item.split_once('=') {
            Some((n, a)) => (n.trim(), Some(a.trim())),
            None => (item.trim(), None),
        };
        let name = name.to_ascii_lowercase();
        match (name.as_str(), arg) {
            ("s-maxage", Some(a)) if d.s_maxage.is_none() => d.s_maxage = Some(delta_seconds(a)),
            ("s-maxage", None) if d.s_maxage.is_none() => {
                d.s_maxage = Some(Err(InvalidDeltaSeconds))
            }
            ("max-age", Some(a)) if d.max_age.is_none() => d.max_age = Some(delta_seconds(a)),
            ("max-age", None) if d.max_age.is_none() => d.max_age = Some(Err(InvalidDeltaSeconds)),
            ("no-store", _) => d.no_store = true,
            ("no-cache", None) => d.no_cache = true,
            ("private", None) => d.private = true,
            ("stale-if-error", Some(a)) if d.stale_if_error.is_none() => {
                d.stale_if_error = delta_seconds(a).ok()
            }
            _ => {}
        }
    }
    d
}

/// Splits at commas outside quoted strings; empty items are dropped.
fn split_directives(value: &str) -> impl Iterator<Item = &str> {
    let mut items = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in value.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                items.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&value[start..]);
    items.into_iter().filter(|s| !s.trim().is_empty())
}

/// A directive argument or `Age` that is not delta-seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidDeltaSeconds;

/// RFC 9111 §1.2.2 delta-seconds: digits only (a quoted form is
/// tolerated, as senders do use it); a value too large is capped at 2^31.
pub fn delta_seconds(text: &str) -> Result<u64, InvalidDeltaSeconds> {
    let text = text.trim();
    let text = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(text);
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(InvalidDeltaSeconds);
    }
    Ok(text
        .parse::<u64>()
        .unwrap_or(MAX_DELTA_SECONDS)
        .min(MAX_DELTA_SECONDS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parser_details() {
        let d = parse_cache_control("Max-Age=\"60\" , s-maxage=99999999999999999999, max-age=5");
        assert_eq!(
            d.max_age,
            Some(Ok(60)),
            "first occurrence wins, quoted tolerated"
        );
        assert_eq!(d.s_maxage, Some(Ok(MAX_DELTA_SECONDS)), "capped at 2^31");
        assert_eq!(parse_cache_control(",,"), Directives::default());
        assert_eq!(delta_seconds("+5"), Err(InvalidDeltaSeconds));
        assert_eq!(delta_seconds(" 7 "), Ok(7));
    }
}
