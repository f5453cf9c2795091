//! The one enum of cache outcomes. Every metadata request ends in exactly
//! one [`CacheOutcome`]; it builds the `Cache-Status` header (RFC 9211), the
//! `result` label of `metadata_gateway_lookups_total`, and the log field, so
//! the three can never disagree.

use std::fmt::Write as _;

use actix_web::http::header::HeaderValue;

/// The cache name used in `Cache-Status` (RFC 9211 §2).
pub const CACHE_NAME: &str = "oauth-metadata-gateway";

/// How a metadata request was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CacheOutcome {
    /// A fresh stored document was served.
    Hit,
    /// A template tenant not held in memory was served fresh from its
    /// saved copy in the state directory (the disk tier), checked like a
    /// restore, without an upstream request: `Cache-Status: …; hit;
    /// detail=disk`, counted as a `hit`, logged as `disk_hit`.
    DiskHit,
    /// A stored document past its TTL (within `--max-stale`) was served,
    /// because the upstream is failing or a refresh is still under way.
    Stale,
    /// Nothing was stored; this request's fetch stored the document.
    Miss,
    /// Nothing was stored; this request waited for a fetch already in flight
    /// (RFC 9211 `collapsed`).
    Collapsed,
    /// Nothing servable is stored and the upstream failed: an error was sent.
    Error,
    /// `--no-cache`: the cache is configured not to handle requests, so this
    /// request's own fetch answered it and nothing was stored (RFC 9211
    /// §2.2 `fwd=bypass`). Counted as a `miss`.
    Bypass,
    /// A template tenant the upstream does not know (404/410): this
    /// request's fetch learned it, and the answer is now remembered.
    NotFound,
    /// A template tenant the upstream does not know, answered from the
    /// remembered 404/410 without an upstream request (negative caching).
    NegativeHit,
    /// A key set the request asked to have revalidated (`Cache-Control:
    /// no-cache` or `max-age=0`, RFC 9111 §5.2.1.4/§5.2.1.1, or a `?kid`
    /// the stored set lacks): it was forwarded (RFC 9211 `fwd=request`)
    /// and the upstream's 200 (stored) or 304 answered it.
    Revalidated,
    /// Such a forwarded revalidation failed: the stored key set was
    /// served instead (with a negative `ttl` once past its freshness).
    RevalidationFailed,
}

/// Largest magnitude of an RFC 8941 §3.3.1 integer (15 digits); `ttl` is
/// clamped to it so the header always parses.
const SF_INTEGER_MAX: i64 = 999_999_999_999_999;

/// The distinct `result` label values, in a fixed order for metrics.
pub const RESULT_LABELS: [&str; 7] = [
    "hit",
    "stale",
    "miss",
    "error",
    "not_found",
    "revalidated",
    "revalidation_failed",
];

/// What `Cache-Status` needs beyond the outcome itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatusDetail {
    /// Remaining freshness in seconds (negative when stale), RFC 9211 §2.5.
    pub ttl: Option<i64>,
    /// The upstream status behind the answer, RFC 9211 §2.3.
    pub fwd_status: Option<u16>,
    /// A short token saying why the upstream failed, RFC 9211 §2.8.
    pub detail: Option<&'static str>,
}

impl CacheOutcome {
    /// The `result` label: hit, stale, miss or error.
    pub const fn result_label(self) -> &'static str {
        match self {
            Self::Hit | Self::DiskHit => "hit",
            Self::Stale => "stale",
            Self::Miss | Self::Collapsed | Self::Bypass => "miss",
            Self::Error => "error",
            Self::NotFound | Self::NegativeHit => "not_found",
            Self::Revalidated => "revalidated",
            Self::RevalidationFailed => "revalidation_failed",
        }
    }

    /// Index of [`Self::result_label`] in [`RESULT_LABELS`].
    pub const fn result_index(self) -> usize {
        match self {
            Self::Hit | Self::DiskHit => 0,
            Self::Stale => 1,
            Self::Miss | Self::Collapsed | Self::Bypass => 2,
            Self::Error => 3,
            Self::NotFound | Self::NegativeHit => 4,
            Self::Revalidated => 5,
            Self::RevalidationFailed => 6,
        }
    }

    /// Renders `Cache-Status` (RFC 9211), e.g.
    /// `oauth-metadata-gateway; hit; ttl=241`,
    /// `oauth-metadata-gateway; fwd=miss; fwd-status=200; stored; ttl=300`,
    /// `oauth-metadata-gateway; fwd=stale; fwd-status=503; ttl=-12`,
    /// `oauth-metadata-gateway; fwd=bypass; fwd-status=200`.
    pub fn cache_status(self, d: StatusDetail) -> HeaderValue {
        let mut s = String::with_capacity(64);
        self.write_cache_status(d, &mut s);
        // Only ASCII tokens and integers are written.
        HeaderValue::from_str(&s).unwrap_or_else(|_| HeaderValue::from_static(CACHE_NAME))
    }

    /// Appends the text of [`Self::cache_status`] to `s` (for a caller
    /// that renders several headers into one buffer).
    pub fn write_cache_status(self, d: StatusDetail, s: &mut String) {
        s.push_str(CACHE_NAME);
        match self {
            Self::Hit | Self::NegativeHit | Self::DiskHit => s.push_str("; hit"),
            Self::Stale => s.push_str("; fwd=stale"),
            Self::Miss | Self::Collapsed | Self::Error | Self::NotFound => s.push_str("; fwd=miss"),
            Self::Bypass => s.push_str("; fwd=bypass"),
            // RFC 9211 §2.2: the request asked for it to be forwarded.
            Self::Revalidated | Self::RevalidationFailed => s.push_str("; fwd=request"),
        }
        if let Some(status) = d.fwd_status {
            let _ = write!(s, "; fwd-status={status}");
        }
        match self {
            Self::Miss | Self::NotFound | Self::Revalidated => s.push_str("; stored"),
            Self::Collapsed => s.push_str("; collapsed"),
            _ => {}
        }
        if let Some(ttl) = d.ttl {
            let ttl = ttl.clamp(-SF_INTEGER_MAX, SF_INTEGER_MAX);
            let _ = write!(s, "; ttl={ttl}");
        }
        match (self, d.detail) {
            (_, Some(detail)) => {
                let _ = write!(s, "; detail={detail}");
            }
            // RFC 9211 §2.8: implementation-specific detail.
            (Self::DiskHit, None) => s.push_str("; detail=disk"),
            _ => {}
        }
    }
}

impl std::fmt::Display for CacheOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Collapsed => "collapsed",
            Self::Bypass => "bypass",
            Self::NegativeHit => "negative_hit",
            Self::DiskHit => "disk_hit",
            other => other.result_label(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(o: CacheOutcome, d: StatusDetail) -> String {
        o.cache_status(d).to_str().unwrap().to_string()
    }

    #[test]
    fn renders_rfc9211_forms() {
        assert_eq!(
            render(
                CacheOutcome::Hit,
                StatusDetail {
                    ttl: Some(241),
                    ..Default::default()
                }
            ),
            "oauth-metadata-gateway; hit; ttl=241"
        );
        assert_eq!(
            render(
                CacheOutcome::Miss,
                StatusDetail {
                    ttl: Some(300),
                    fwd_status: Some(200),
                    detail: None
                }
            ),
            "oauth-metadata-gateway; fwd=miss; fwd-status=200; stored; ttl=300"
        );
        assert_eq!(
            render(
                CacheOutcome::Collapsed,
                StatusDetail {
                    ttl: Some(300),
                    fwd_status: Some(200),
                    detail: None
                }
            ),
            "oauth-metadata-gateway; fwd=miss; fwd-status=200; collapsed; ttl=300"
        );
        assert_eq!(
            render(
                CacheOutcome::Stale,
                StatusDetail {
                    ttl: Some(-12),
                    fwd_status: Some(503),
                    detail: None
                }
            ),
            "oauth-metadata-gateway; fwd=stale; fwd-status=503; ttl=-12"
        );
        assert_eq!(
            render(
                CacheOutcome::Error,
                StatusDetail {
                    detail: Some("connect_error"),
                    ..Default::default()
                }
            ),
            "oauth-metadata-gateway; fwd=miss; detail=connect_error"
        );
        assert_eq!(
            render(
                CacheOutcome::Bypass,
                StatusDetail {
                    fwd_status: Some(200),
                    ..Default::default()
                }
            ),
            "oauth-metadata-gateway; fwd=bypass; fwd-status=200"
        );
        assert_eq!(
            render(
                CacheOutcome::NotFound,
                StatusDetail {
                    fwd_status: Some(404),
                    ..Default::default()
                }
            ),
            "oauth-metadata-gateway; fwd=miss; fwd-status=404; stored"
        );
        assert_eq!(
            render(
                CacheOutcome::NegativeHit,
                StatusDetail {
                    detail: Some("not_found"),
                    ..Default::default()
                }
            ),
            "oauth-metadata-gateway; hit; detail=not_found"
        );
        assert_eq!(
            render(
                CacheOutcome::DiskHit,
                StatusDetail {
                    ttl: Some(120),
                    ..Default::default()
                }
            ),
            "oauth-metadata-gateway; hit; ttl=120; detail=disk"
        );
        assert_eq!(CacheOutcome::DiskHit.to_string(), "disk_hit");
        assert_eq!(CacheOutcome::DiskHit.result_label(), "hit");
    }

    #[test]
    fn forwarded_revalidations_say_fwd_request() {
        assert_eq!(
            render(
                CacheOutcome::Revalidated,
                StatusDetail {
                    ttl: Some(300),
                    fwd_status: Some(304),
                    detail: None
                }
            ),
            "oauth-metadata-gateway; fwd=request; fwd-status=304; stored; ttl=300"
        );
        assert_eq!(
            render(
                CacheOutcome::RevalidationFailed,
                StatusDetail {
                    ttl: Some(-5),
                    fwd_status: Some(503),
                    detail: Some("http_status")
                }
            ),
            "oauth-metadata-gateway; fwd=request; fwd-status=503; ttl=-5; detail=http_status"
        );
    }

    #[test]
    fn labels_are_the_seven_results() {
        for o in [
            CacheOutcome::Hit,
            CacheOutcome::Stale,
            CacheOutcome::Miss,
            CacheOutcome::Collapsed,
            CacheOutcome::Error,
            CacheOutcome::Bypass,
            CacheOutcome::NotFound,
            CacheOutcome::NegativeHit,
            CacheOutcome::Revalidated,
            CacheOutcome::RevalidationFailed,
            CacheOutcome::DiskHit,
        ] {
            assert_eq!(RESULT_LABELS[o.result_index()], o.result_label());
        }
    }
}
