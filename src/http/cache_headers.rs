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
//! once a second under steady traffic. Formatting them per request cost
//! three allocations and most of the handler's time in the profile
//! (benches/README.md), so each worker thread keeps the last rendering and
//! reuses it while the inputs are equal. Rendering is a pure function of
//! [`Inputs`], so a reused value is byte-identical to a fresh one.

use std::cell::RefCell;

use actix_web::http::header::HeaderValue;

use crate::cache_rules::outcome::{CacheOutcome, StatusDetail};

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
#[derive(Debug, Clone)]
pub struct Rendered {
    /// `Age`.
    pub age: HeaderValue,
    /// `Cache-Control`.
    pub cache_control: HeaderValue,
    /// `Cache-Status`.
    pub cache_status: HeaderValue,
}

thread_local! {
    static LAST: RefCell<Option<(Inputs, Rendered)>> = const { RefCell::new(None) };
}

/// The headers for `inputs`, reusing this thread's last rendering when the
/// inputs are the same.
pub fn for_inputs(inputs: Inputs) -> Rendered {
    LAST.with_borrow_mut(|last| match last {
        Some((key, rendered)) if *key == inputs => rendered.clone(),
        _ => {
            let rendered = render(inputs);
            *last = Some((inputs, rendered.clone()));
            rendered
        }
    })
}

/// Renders the headers (no reuse).
pub fn render(inputs: Inputs) -> Rendered {
    let mut num = itoa::Buffer::new();
    let age =
        HeaderValue::from_str(num.format(inputs.age)).unwrap_or(HeaderValue::from_static("0"));
    let text = if inputs.stale_if_error > 0 {
        format!(
            "public, max-age={}, stale-if-error={}",
            inputs.max_age, inputs.stale_if_error
        )
    } else {
        format!("public, max-age={}", inputs.max_age)
    };
    let cache_control =
        HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static("public, max-age=0"));
    Rendered {
        age,
        cache_control,
        cache_status: inputs.outcome.cache_status(inputs.detail),
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
            assert_eq!(text(&for_inputs(i)), text(&render(i)), "{i:?}");
        }
    }
}
