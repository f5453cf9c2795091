//! The headers of a metadata response that change with time: `Age`
//! (RFC 9111 §5.1), `Cache-Control: public, max-age=N, stale-if-error=M`
//! (RFC 9111 §5.2.2.1, RFC 5861 §4) and `Cache-Status` (RFC 9211).
//!
//! `stale-if-error` tells a CDN or browser in front how long past its
//! freshness it may keep using the document while it cannot reach this
//! gateway: exactly what `--max-stale` still allows here, so a downstream
//! cache rides out the same outages and never serves the document longer
//! than the gateway itself would.
//!
//! They depend only on a few small values (outcome, whole seconds of age and
//! of freshness left, the upstream failure detail), which change at most
//! once a second per document under steady traffic. Formatting them per
//! request cost three allocations and most of the handler's time in the
//! profile (benches/README.md), so they are pre-rendered per document: each
//! stored document keeps its last rendering ([`RenderMemo`]) and
//! [`for_document`] reuses it while the inputs are equal, whichever worker
//! asks and however many documents are served in turn (a single memo per
//! worker missed whenever consecutive requests were for different
//! documents). Rendering is a pure function of [`Inputs`], so a reused value
//! is byte-identical to a fresh one (a property test checks it).

use actix_web::http::header::HeaderValue;
use bytes::Bytes;

use crate::cache::memo::RenderMemo;
use crate::cache_rules::outcome::{CacheOutcome, StatusDetail, CACHE_NAME};

/// Everything the three headers are made from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inputs {
    /// How the request was answered.
    pub outcome: CacheOutcome,
    /// The `Cache-Status` parameters.
    pub detail: StatusDetail,
    /// `Age` in whole seconds.
    pub age: u64,
    /// `max-age` in whole seconds.
    pub max_age: u64,
    /// `stale-if-error` in whole seconds (omitted when 0).
    pub stale_if_error: u64,
}

/// The rendered header values (cheap to clone: shared bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// `Age`.
    pub age: HeaderValue,
    /// `Cache-Control`.
    pub cache_control: HeaderValue,
    /// `Cache-Status`.
    pub cache_status: HeaderValue,
}

/// A rendering with the inputs it was made from.
#[derive(Clone)]
struct PreRendered {
    inputs: Inputs,
    rendered: Rendered,
}

/// The headers for `inputs` of the document that keeps `memo`: its kept
/// rendering while made from the same inputs, else a fresh one (kept for
/// the next request).
pub fn for_document(memo: &RenderMemo, inputs: Inputs) -> Rendered {
    memo.reuse_or_render(
        |kept: &PreRendered| kept.inputs == inputs,
        || PreRendered {
            inputs,
            rendered: render(inputs),
        },
    )
    .rendered
}

/// Renders the headers (no reuse). The three values share one buffer:
/// one allocation per rendering, and a request that clones them touches
/// one reference count and one or two cache lines, not three of each
/// (what serving many documents in turn pays for: their lines are cold,
/// benches/README.md, third pass).
pub fn render(inputs: Inputs) -> Rendered {
    use std::fmt::Write as _;
    let mut text = String::with_capacity(128);
    let _ = write!(text, "{}", inputs.age);
    let age_end = text.len();
    if inputs.stale_if_error > 0 {
        let _ = write!(
            text,
            "public, max-age={}, stale-if-error={}",
            inputs.max_age, inputs.stale_if_error
        );
    } else {
        let _ = write!(text, "public, max-age={}", inputs.max_age);
    }
    let cache_control_end = text.len();
    inputs.outcome.write_cache_status(inputs.detail, &mut text);
    let shared = Bytes::from(text);
    let part = |range: std::ops::Range<usize>, fallback: &'static str| {
        HeaderValue::from_maybe_shared(shared.slice(range))
            .unwrap_or(HeaderValue::from_static(fallback))
    };
    Rendered {
        age: part(0..age_end, "0"),
        cache_control: part(age_end..cache_control_end, "public, max-age=0"),
        cache_status: part(cache_control_end..shared.len(), CACHE_NAME),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(age: u64, max_age: u64) -> Inputs {
        Inputs {
            outcome: CacheOutcome::Hit,
            detail: StatusDetail {
                ttl: Some(max_age as i64),
                ..Default::default()
            },
            age,
            max_age,
            stale_if_error: 0,
        }
    }

    fn text(r: &Rendered) -> [String; 3] {
        [&r.age, &r.cache_control, &r.cache_status].map(|v| v.to_str().unwrap().to_string())
    }

    #[test]
    fn renders_the_three_headers() {
        assert_eq!(
            text(&render(hit(12, 288))),
            [
                "12".to_string(),
                "public, max-age=288".to_string(),
                "oauth-metadata-gateway; hit; ttl=288".to_string()
            ]
        );
    }

    #[test]
    fn stale_if_error_is_rendered_when_allowed() {
        let mut i = hit(12, 288);
        i.stale_if_error = 86_400;
        assert_eq!(
            render(i).cache_control,
            "public, max-age=288, stale-if-error=86400"
        );
    }

    #[test]
    fn reuse_never_returns_another_inputs_rendering() {
        let memo = RenderMemo::default();
        let inputs = [
            hit(0, 300),
            hit(0, 300),
            hit(1, 299),
            hit(1, 298),
            hit(1, 298),
            Inputs {
                outcome: CacheOutcome::Stale,
                detail: StatusDetail {
                    ttl: Some(-3),
                    fwd_status: Some(503),
                    detail: Some("http_status"),
                },
                age: 303,
                max_age: 0,
                stale_if_error: 86_397,
            },
            hit(1, 298),
        ];
        for i in inputs {
            assert_eq!(text(&for_document(&memo, i)), text(&render(i)), "{i:?}");
        }
    }
}
