//! JSON error responses. Errors use the OAuth error-object shape
//! (`{"error": ..., "error_description": ...}`, RFC 6749 §5.2) that OAuth
//! clients already know how to print.

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use serde::Serialize;

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    error_description: &'a str,
}

/// A JSON error response builder with `Cache-Control: no-store`.
pub fn json_error(status: StatusCode, error: &str, description: &str) -> HttpResponse {
    let body = serde_json::to_vec(&ErrorBody {
        error,
        error_description: description,
    })
    .unwrap_or_default();
    HttpResponse::build(status)
        .insert_header((
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        ))
        .insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")))
        .body(body)
}

/// 404 for any path that serves nothing.
pub fn not_found() -> HttpResponse {
    json_error(
        StatusCode::NOT_FOUND,
        "not_found",
        "no metadata document is served at this path",
    )
}

/// 405 with `Allow` for a known path and an unsupported method.
pub fn method_not_allowed() -> HttpResponse {
    let mut res = json_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this path answers GET, HEAD and OPTIONS only",
    );
    let (name, value) = super::cors::allow_header();
    res.headers_mut().insert(name, value);
    res
}

/// 405 for the operational endpoints (`/metrics`, `/healthz`, `/readyz`),
/// which answer GET and HEAD only; RFC 9110 §15.5.6: `Allow` lists exactly
/// the methods the resource supports.
pub async fn ops_method_not_allowed() -> HttpResponse {
    let mut res = json_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this path answers GET and HEAD only",
    );
    res.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    res
}
