//! The key-set route's request rules: whether a request asks for the
//! stored key set to be revalidated with the upstream, and the only query
//! it takes.
//!
//! - `Cache-Control: no-cache` (RFC 9111 §5.2.1.4) or `max-age=0`
//!   (§5.2.1.1) on the request asks for a revalidation;
//! - `?kid=K` asks for one when the stored set has no key `K` (a verifier
//!   met a token signed by a key it has not seen: the key set rotated);
//! - an empty or repeated `kid`, or any other query parameter, is a JSON
//!   400: never ignored, and a query never reaches the upstream.
//!
//! Whether the revalidation happens (cooldown, back-off) is the cache's
//! rule ([`crate::cache::key_sets`]).

use actix_web::http::header;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse};

use crate::cache::StoredDocument;
use crate::cache_rules::cache_control::parse_cache_control;

use super::errors::json_error;

/// What a key-set request asks for.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct KeySetRequest {
    /// `no-cache` or `max-age=0`.
    pub revalidate: bool,
    /// The `kid` the client needs.
    pub kid: Option<String>,
}

impl KeySetRequest {
    /// Whether it asks for a revalidation of `stored` (the set held now,
    /// if any).
    pub fn wants_revalidation(&self, stored: Option<&StoredDocument>) -> bool {
        self.revalidate
            || match (&self.kid, stored) {
                (Some(kid), Some(s)) => !crate::key_set::has_kid(&s.document.body, kid),
                _ => false,
            }
    }
}

/// A query a key-set route does not take (answered with a JSON 400).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadQuery(String);

impl BadQuery {
    /// The JSON `400 invalid_request` answer.
    pub fn response(&self) -> HttpResponse {
        json_error(StatusCode::BAD_REQUEST, "invalid_request", &self.0)
    }
}

/// Reads a key-set request; `Err` is why its query is refused.
pub fn parse(req: &HttpRequest) -> Result<KeySetRequest, BadQuery> {
    let mut out = KeySetRequest::default();
    for value in req.headers().get_all(header::CACHE_CONTROL) {
        if let Ok(v) = value.to_str() {
            let d = parse_cache_control(v);
            if d.no_cache || matches!(d.max_age, Some(Ok(0))) {
                out.revalidate = true;
            }
        }
    }
    let query = req.query_string();
    if query.is_empty() {
        return Ok(out);
    }
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        if name != "kid" {
            return Err(BadQuery(format!(
                "unknown query parameter {name:?}: a key set takes only ?kid=KEY_ID"
            )));
        }
        if value.is_empty() {
            return Err(BadQuery("?kid must name a key id".into()));
        }
        if out.kid.is_some() {
            return Err(BadQuery("?kid may be given once".into()));
        }
        out.kid = Some(value.into_owned());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn parsed(uri: &str, cache_control: Option<&str>) -> Result<KeySetRequest, BadQuery> {
        let mut req = TestRequest::get().uri(uri);
        if let Some(cc) = cache_control {
            req = req.insert_header((header::CACHE_CONTROL, cc));
        }
        parse(&req.to_http_request())
    }

    #[test]
    fn revalidation_is_asked_with_no_cache_or_max_age_0() {
        assert!(!parsed("/k", None).unwrap().revalidate);
        assert!(parsed("/k", Some("no-cache")).unwrap().revalidate);
        assert!(parsed("/k", Some("max-age=0")).unwrap().revalidate);
        assert!(
            parsed("/k", Some("max-age=0, must-revalidate"))
                .unwrap()
                .revalidate
        );
        assert!(!parsed("/k", Some("max-age=60")).unwrap().revalidate);
        assert!(!parsed("/k", Some("no-store")).unwrap().revalidate);
    }

    #[test]
    fn kid_is_the_only_query() {
        assert_eq!(
            parsed("/k?kid=a%2Fb", None).unwrap().kid.as_deref(),
            Some("a/b")
        );
        assert!(parsed("/k?", None).unwrap().kid.is_none());
        for bad in [
            "/k?kid=",
            "/k?kid",
            "/k?kid=a&kid=b",
            "/k?x=1",
            "/k?kid=a&alg=RS256",
        ] {
            assert!(parsed(bad, None).is_err(), "{bad}");
        }
    }
}
