//! The metadata route: turns a cache [`Lookup`] into the HTTP response.
//!
//! The body is the stored upstream bytes, untouched. Headers come from the
//! lookup alone: `ETag` (precomputed at fetch time), `Cache-Control` with
//! the lifetime, `Age` (RFC 9111 §5.1, the upstream's included), and `Cache-Status`
//! (RFC 9211) rendered from the [`CacheOutcome`](crate::cache_rules::outcome::CacheOutcome);
//! the time-dependent three come from [`super::cache_headers`], pre-rendered
//! per document.
//! `If-None-Match` is answered with 304. HEAD gets the same headers as GET;
//! actix-web omits the body and keeps `Content-Length`.

use actix_web::body::BoxBody;
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse};

use crate::cache::Lookup;
use crate::cache_rules::freshness::{ceil_seconds, whole_seconds, FreshnessState};
use crate::cache_rules::outcome::{CacheOutcome, StatusDetail};

use super::cache_headers::{self, Inputs};
use super::conditional::none_match;
use super::errors::json_error;

const JSON: HeaderValue = HeaderValue::from_static("application/json");
const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

/// Builds the response for one metadata request.
pub fn respond(req: &HttpRequest, lookup: &Lookup) -> HttpResponse {
    let Some(stored) = &lookup.stored else {
        return match lookup.outcome {
            CacheOutcome::NotFound | CacheOutcome::NegativeHit => not_found(lookup),
            _ => unavailable(lookup),
        };
    };
    // RFC 9111 §4.2: a downstream cache is fresh while `Age` < `max-age`;
    // `max-age` is the lifetime (the upstream's age at receipt plus the
    // freshness the upstream allowed) and `Age` grows from the upstream's,
    // so a cache in front never holds its copy fresh past the upstream's
    // lifetime (even while `--min-ttl` holds it here), and gateways in
    // tiers never stack their lifetimes. Once stale here, `max-age=0`.
    let (ttl_secs, max_age) = match lookup.freshness() {
        FreshnessState::Fresh { remaining } => (
            whole_seconds(remaining) as i64,
            whole_seconds(stored.lifetime()),
        ),
        FreshnessState::Stale { past } => (-(ceil_seconds(past).max(1) as i64), 0),
        FreshnessState::Expired => (0, 0),
    };
    // RFC 5861 §4 counts a downstream cache's staleness as `Age` −
    // `max-age`; it must stop using the document when this gateway would
    // (`stale_if_error_end` of residence here, never past the upstream's
    // own `stale-if-error`), i.e. when `Age` reaches upstream age + that
    // end: so `stale-if-error` = upstream age + end − `max-age`, the same
    // end whether the document is fresh or stale.
    let stale_if_error = match lookup.freshness() {
        FreshnessState::Expired => 0,
        _ => whole_seconds(
            stored
                .timing
                .upstream_age
                .saturating_add(stored.stale_if_error_end()),
        )
        .saturating_sub(max_age),
    };
    // Nothing is kept on a bypass (`--no-cache`): no promise to ride out an
    // outage.
    let stale_if_error = if lookup.outcome == CacheOutcome::Bypass {
        0
    } else {
        stale_if_error
    };
    let detail = StatusDetail {
        // Nothing is stored on a bypass, so there is no stored freshness.
        ttl: (lookup.outcome != CacheOutcome::Bypass).then_some(ttl_secs),
        fwd_status: match lookup.outcome {
            CacheOutcome::Miss | CacheOutcome::Collapsed | CacheOutcome::Bypass => Some(200),
            CacheOutcome::Stale => lookup.error.as_ref().and_then(|e| e.upstream_status()),
            CacheOutcome::Revalidated | CacheOutcome::RevalidationFailed => lookup.forwarded,
            _ => None,
        },
        detail: match lookup.outcome {
            CacheOutcome::Stale | CacheOutcome::RevalidationFailed => {
                lookup.error.as_ref().map(|e| e.outcome_label())
            }
            _ => None,
        },
    };
    let etag = &stored.document.etag;
    let not_modified = none_match(req.headers(), etag);
    let rendered = cache_headers::for_document(
        &stored.rendered,
        Inputs {
            outcome: lookup.outcome,
            detail,
            age: whole_seconds(stored.age_after(lookup.age)),
            max_age,
            stale_if_error,
        },
    );
    // Built directly rather than through `HttpResponseBuilder`: every
    // header is already a typed name and value, so the builder's
    // conversions and error slot are per-request work for nothing. The
    // response is new, so no name is there yet: `append` is `insert`
    // without the search for old values and their removal (about 70
    // instructions a header, benches/README.md, third pass).
    let mut res = if not_modified {
        HttpResponse::new(StatusCode::NOT_MODIFIED)
    } else {
        HttpResponse::with_body(StatusCode::OK, BoxBody::new(stored.document.body.clone()))
    };
    let headers = res.headers_mut();
    headers.append(header::AGE, rendered.age);
    headers.append(header::CACHE_CONTROL, rendered.cache_control);
    headers.append(CACHE_STATUS, rendered.cache_status);
    headers.append(header::ETAG, etag.clone());
    if !not_modified {
        headers.append(header::CONTENT_TYPE, JSON);
    }
    res
}

/// A template tenant the upstream does not know: the JSON 404 every
/// unknown path gets, with `Cache-Status` saying where it came from.
fn not_found(lookup: &Lookup) -> HttpResponse {
    let detail = match lookup.outcome {
        CacheOutcome::NotFound => StatusDetail {
            fwd_status: lookup.error.as_ref().and_then(|e| e.upstream_status()),
            ..StatusDetail::default()
        },
        _ => StatusDetail {
            detail: Some("not_found"),
            ..StatusDetail::default()
        },
    };
    let mut res = super::errors::not_found();
    res.headers_mut()
        .insert(CACHE_STATUS, lookup.outcome.cache_status(detail));
    res
}

/// Nothing servable: 502/503/504 with an OAuth-style JSON error and
/// `Retry-After` set to the time until the next upstream attempt.
fn unavailable(lookup: &Lookup) -> HttpResponse {
    let (status, description, detail) = match &lookup.error {
        Some(e) => (
            e.client_status(),
            e.to_string(),
            StatusDetail {
                ttl: None,
                fwd_status: e.upstream_status(),
                detail: Some(e.outcome_label()),
            },
        ),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "no metadata document is available".to_string(),
            StatusDetail::default(),
        ),
    };
    let mut res = json_error(
        status,
        "temporarily_unavailable",
        &format!("the authorization server metadata is unavailable: {description}"),
    );
    let retry = ceil_seconds(lookup.retry_after).max(1);
    let mut num = itoa::Buffer::new();
    let headers = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(num.format(retry)) {
        headers.insert(header::RETRY_AFTER, v);
    }
    headers.insert(CACHE_STATUS, CacheOutcome::Error.cache_status(detail));
    res
}
