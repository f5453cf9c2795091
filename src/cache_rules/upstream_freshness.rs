//! How long an upstream answer stays fresh, from its own headers
//! (RFC 9111 §4.2), within the bounds the operator set.
//!
//! The rule, written once:
//! - freshness lifetime (§4.2.1): `s-maxage` (the gateway is a shared
//!   cache), else `max-age`, else `Expires` − `Date` (the receipt time
//!   standing in for a missing `Date`);
//! - minus the upstream's `Age` (§4.2.3), so a document that already spent
//!   time in a cache upstream (another gateway, a CDN) is not held longer
//!   than that cache had left;
//! - the freshness left is clamped to `[--min-ttl, --ttl]` (a `--min-ttl`
//!   above a document's TTL is lowered to it);
//! - `no-store`, `no-cache`, `private` (unqualified) and `max-age=0` would
//!   forbid or defeat storing; the operator configured the gateway to
//!   cache this document on purpose, so it is held for `--min-ttl`, the
//!   least the gateway promises, rather than fetched per request;
//! - no freshness information at all: `--ttl`, as the operator configured;
//! - `--ignore-upstream-freshness`: always `--ttl`, and the upstream's
//!   `Age` is not carried on.
//!
//! Age is the upstream's `Age` value only, not the apparent age from its
//! `Date` (§4.2.3 allows both and takes the larger): the apparent age is
//! the difference of two hosts' clocks, and a skewed upstream clock would
//! make every document look stale. Varnish does the same.

use std::time::{Duration, SystemTime};

use super::cache_control::{delta_seconds, parse_cache_control, Directives};

/// The response headers freshness and revalidation are computed from, as
/// the upstream sent them (several field lines joined with `, `). Kept
/// with every stored document, so each is an exactly sized `Box<str>`
/// (16 bytes where a `String` takes 24; mostly unset).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamHeaders {
    /// `Cache-Control`.
    pub cache_control: Option<Box<str>>,
    /// `Expires`.
    pub expires: Option<Box<str>>,
    /// `Date`.
    pub date: Option<Box<str>>,
    /// `Age`.
    pub age: Option<Box<str>>,
    /// `ETag` (a validator for `If-None-Match`).
    pub etag: Option<Box<str>>,
    /// `Last-Modified` (a validator for `If-Modified-Since`).
    pub last_modified: Option<Box<str>>,
}

impl UpstreamHeaders {
    /// RFC 9111 §4.3.4: the headers of a stored response after a `304`,
    /// which carries the fields it updates (a missing one keeps the
    /// stored value). `Date` and `Age` are always the 304's own.
    pub fn updated_by(&self, not_modified: &UpstreamHeaders) -> UpstreamHeaders {
        let pick =
            |new: &Option<Box<str>>, old: &Option<Box<str>>| new.clone().or_else(|| old.clone());
        UpstreamHeaders {
            cache_control: pick(&not_modified.cache_control, &self.cache_control),
            expires: pick(&not_modified.expires, &self.expires),
            date: not_modified.date.clone(),
            age: not_modified.age.clone(),
            etag: pick(&not_modified.etag, &self.etag),
            last_modified: pick(&not_modified.last_modified, &self.last_modified),
        }
    }

    /// Whether a conditional request can be made from these headers.
    pub fn has_validators(&self) -> bool {
        self.etag.is_some() || self.last_modified.is_some()
    }
}

/// The operator's settings for upstream freshness, shared by every
/// document (`--min-ttl`, `--ignore-upstream-freshness`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Settings {
    /// `--min-ttl`.
    pub min_ttl: Duration,
    /// `false` with `--ignore-upstream-freshness`.
    pub honour_upstream: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            min_ttl: DEFAULT_MIN_TTL,
            honour_upstream: true,
        }
    }
}

/// Default `--min-ttl`.
pub const DEFAULT_MIN_TTL: Duration = Duration::from_secs(10);

impl Settings {
    /// The policy of a document with `ttl`.
    pub fn policy(self, ttl: Duration) -> Policy {
        Policy {
            min_ttl: self.min_ttl,
            ttl,
            honour_upstream: self.honour_upstream,
        }
    }
}

/// The operator's bounds on one document's upstream freshness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Policy {
    /// `--min-ttl`: the least a document is held.
    pub min_ttl: Duration,
    /// The document's `--ttl`: the most it is held fresh.
    pub ttl: Duration,
    /// `false` with `--ignore-upstream-freshness`.
    pub honour_upstream: bool,
}

/// Where a document's freshness came from (for the status endpoint).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// No freshness information, or ignored: `--ttl`.
    Configured,
    /// `s-maxage`.
    SMaxAge,
    /// `max-age`.
    MaxAge,
    /// `Expires` − `Date`.
    Expires,
    /// `no-store`, `no-cache`, `private` or an unusable value: `--min-ttl`.
    Uncacheable,
    /// Read back from the state directory (the freshness computed when it
    /// was fetched).
    Saved,
}

impl Source {
    /// A short label.
    pub const fn label(self) -> &'static str {
        match self {
            Self::Configured => "ttl",
            Self::SMaxAge => "s-maxage",
            Self::MaxAge => "max-age",
            Self::Expires => "expires",
            Self::Uncacheable => "min-ttl",
            Self::Saved => "saved",
        }
    }
}

/// A document's freshness at receipt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// The upstream's `Age` (0 when absent or ignored); carried on in the
    /// `Age` the gateway sends.
    pub upstream_age: Duration,
    /// Freshness left at receipt, clamped: how long the gateway holds it
    /// fresh.
    pub fresh_for: Duration,
    /// Freshness left at receipt as the upstream allowed it, in whole
    /// seconds, never more than `fresh_for`: less when `--min-ttl` holds
    /// the document longer than the upstream said (a forbidding directive,
    /// a short or spent lifetime). It is what downstream caches are told
    /// (`max-age` = `upstream_age` + this), so a cache in front (another
    /// gateway, a CDN, a browser) never counts a document fresh past the
    /// upstream's lifetime, whatever this gateway's own floor.
    pub advertised_secs: u32,
    /// RFC 5861 §4: when the upstream's `stale-if-error` permission ends,
    /// as seconds of residence here (its freshness left at receipt plus
    /// its `stale-if-error`); `None` when it sent none. Caps the
    /// `stale-if-error` the gateway passes on, so stale windows do not
    /// stack across tiers.
    pub stale_if_error_until_secs: Option<u32>,
    /// Where the lifetime came from.
    pub source: Source,
}

impl Timing {
    /// A fixed lifetime with nothing from the upstream (`--ttl`).
    pub fn configured(ttl: Duration) -> Self {
        Self {
            upstream_age: Duration::ZERO,
            fresh_for: ttl,
            advertised_secs: secs_u32(ttl),
            stale_if_error_until_secs: None,
            source: Source::Configured,
        }
    }

    /// [`Self::advertised_secs`] as a duration.
    pub fn advertised(&self) -> Duration {
        Duration::from_secs(self.advertised_secs.into())
    }
}

/// Whole seconds, capped at `u32::MAX` (above the 2^31 delta-seconds cap).
pub fn secs_u32(d: Duration) -> u32 {
    u32::try_from(d.as_secs()).unwrap_or(u32::MAX)
}

/// The freshness of an answer received at `received` with `headers`.
pub fn evaluate(headers: &UpstreamHeaders, received: SystemTime, policy: Policy) -> Timing {
    let ttl = policy.ttl;
    let min = policy.min_ttl.min(ttl);
    if !policy.honour_upstream {
        return Timing::configured(ttl);
    }
    // §5.1: an Age that is not a delta-seconds is ignored.
    let upstream_age = headers
        .age
        .as_deref()
        .and_then(|a| a.split(',').next())
        .and_then(|a| delta_seconds(a).ok())
        .map_or(Duration::ZERO, Duration::from_secs);
    let directives = headers
        .cache_control
        .as_deref()
        .map(parse_cache_control)
        .unwrap_or_default();
    let forbidden = directives.no_store || directives.no_cache || directives.private;
    // The lifetime the upstream gave (`None`: it said nothing about
    // freshness); forbidding directives and unusable values count as 0.
    let lifetime = match lifetime(headers, &directives, received) {
        _ if forbidden => Some((Duration::ZERO, Source::Uncacheable)),
        Some(found) => Some(found),
        // Freshness information present but unusable (§4.2.1; §5.3: an
        // invalid `Expires` means already expired).
        None if directives.s_maxage.is_some()
            || directives.max_age.is_some()
            || headers.expires.is_some() =>
        {
            Some((Duration::ZERO, Source::Uncacheable))
        }
        None => None,
    };
    let Some((lifetime, source)) = lifetime else {
        return Timing {
            upstream_age,
            ..Timing::configured(ttl)
        };
    };
    // The freshness the upstream allowed at receipt, unclamped.
    let left = lifetime.saturating_sub(upstream_age);
    let fresh_for = left.clamp(min, ttl);
    Timing {
        upstream_age,
        fresh_for,
        advertised_secs: secs_u32(left.min(fresh_for)),
        // RFC 5861 §4 counts staleness as Age − lifetime, so the
        // upstream's permission ends when its Age reaches lifetime + N:
        // after (lifetime + N − Age) seconds here, which may be less than
        // N when it was already stale upstream.
        stale_if_error_until_secs: directives.stale_if_error.map(|sie| {
            secs_u32(
                lifetime
                    .saturating_add(Duration::from_secs(sie))
                    .saturating_sub(upstream_age),
            )
        }),
        source,
    }
}

/// The lifetime from the headers, if they give a usable one.
fn lifetime(
    headers: &UpstreamHeaders,
    d: &Directives,
    received: SystemTime,
) -> Option<(Duration, Source)> {
    if let Some(v) = d.s_maxage {
        return v.ok().map(|s| (Duration::from_secs(s), Source::SMaxAge));
    }
    if let Some(v) = d.max_age {
        return v.ok().map(|s| (Duration::from_secs(s), Source::MaxAge));
    }
    let expires = headers.expires.as_deref()?;
    let expires = httpdate::parse_http_date(expires.trim()).ok()?;
    let date = headers
        .date
        .as_deref()
        .and_then(|d| httpdate::parse_http_date(d.trim()).ok())
        .unwrap_or(received);
    Some((
        expires.duration_since(date).unwrap_or(Duration::ZERO),
        Source::Expires,
    ))
}

#[cfg(test)]
mod tests;
