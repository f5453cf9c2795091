//! CORS for every metadata route and every 404.
//!
//! The metadata is public and uncredentialed, so the policy is fixed:
//! `Access-Control-Allow-Origin: *` on every response, 404s and errors
//! included (a browser reports a response without it as a network error,
//! not as the 404 a discovery client needs to move on), and a 204 answer to
//! any preflight that allows the headers MCP clients send
//! (`MCP-Protocol-Version`, `Authorization`).
//!
//! actix-cors is built for origin allow-lists with credentials: it adds the
//! headers only to requests carrying `Origin`, answers preflights with 200
//! and rejects unlisted request headers. A fixed public policy is a few
//! constant headers, so they are written here.

use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::middleware::DefaultHeaders;
use actix_web::HttpResponse;

/// Methods the metadata routes allow.
pub const ALLOWED_METHODS: &str = "GET, HEAD, OPTIONS";
const ALLOWED_HEADERS: &str =
    "Authorization, MCP-Protocol-Version, Content-Type, Accept, If-None-Match, Cache-Control";
const EXPOSED_HEADERS: &str = "ETag, Age, Cache-Status, Retry-After";
/// How long browsers may cache a preflight answer (seconds).
const MAX_AGE: &str = "86400";

/// Middleware adding the CORS response headers to every response it wraps.
pub fn response_headers() -> DefaultHeaders {
    DefaultHeaders::new()
        .add((header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"))
        .add((header::ACCESS_CONTROL_EXPOSE_HEADERS, EXPOSED_HEADERS))
}

/// Adds the same headers as [`response_headers`] to a response built
/// outside the middleware (the dispatcher's answers). No response the
/// gateway builds sets these itself, so they are appended: `insert` would
/// search for old values to remove on every request (about 70
/// instructions a header, benches/README.md, third pass). Debug builds
/// (the tests) check that none is there yet.
pub fn add_response_headers(headers: &mut actix_web::http::header::HeaderMap) {
    debug_assert!(
        !headers.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN)
            && !headers.contains_key(header::ACCESS_CONTROL_EXPOSE_HEADERS),
        "a response carries CORS headers before the dispatcher adds them"
    );
    headers.append(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.append(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(EXPOSED_HEADERS),
    );
}

/// The answer to a CORS preflight (`OPTIONS`).
pub fn preflight() -> HttpResponse {
    HttpResponse::NoContent()
        .insert_header((header::ACCESS_CONTROL_ALLOW_METHODS, ALLOWED_METHODS))
        .insert_header((header::ACCESS_CONTROL_ALLOW_HEADERS, ALLOWED_HEADERS))
        .insert_header((header::ACCESS_CONTROL_MAX_AGE, MAX_AGE))
        .insert_header((header::ALLOW, ALLOWED_METHODS))
        .finish()
}

/// Header pair for `Allow` on 405 answers.
pub fn allow_header() -> (HeaderName, HeaderValue) {
    (header::ALLOW, HeaderValue::from_static(ALLOWED_METHODS))
}
