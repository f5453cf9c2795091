//! Responses for documents the gateway generates itself (RFC 9728
//! protected resource metadata): the bytes serialised at start-up, a strong
//! `ETag` with `If-None-Match` → 304, and `Cache-Control: public,
//! max-age=<ttl>` (formatted once per document, not per request).
//!
//! No `Cache-Status` and no `Age`: the gateway is the origin of these
//! documents, and RFC 9211 §2 says an intermediary should not add a
//! `Cache-Status` member to a response it generates itself; `Age` is for
//! responses served from a cache (RFC 9111 §5.1). In the metrics each
//! request counts as a `hit`: it is served from memory with no upstream.

use actix_web::body::BoxBody;
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse};

use crate::generation::LocalDocument;

use super::conditional::none_match;

const JSON: HeaderValue = HeaderValue::from_static("application/json");

/// Builds the response for one request of a local document.
pub fn respond(req: &HttpRequest, doc: &LocalDocument) -> HttpResponse {
    let etag = &doc.document.etag;
    let not_modified = none_match(req.headers(), etag);
    let mut res = if not_modified {
        HttpResponse::new(StatusCode::NOT_MODIFIED)
    } else {
        HttpResponse::with_body(StatusCode::OK, BoxBody::new(doc.document.body.clone()))
    };
    // A new response: no name is there yet, so `append` (no search for
    // old values to remove) gives what `insert` would.
    let headers = res.headers_mut();
    headers.append(header::CACHE_CONTROL, doc.cache_control.clone());
    headers.append(header::ETAG, etag.clone());
    if !not_modified {
        headers.append(header::CONTENT_TYPE, JSON);
    }
    res
}
