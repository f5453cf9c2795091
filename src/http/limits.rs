//! Request-body refusal for the metadata routes.
//!
//! GET, HEAD and OPTIONS on a metadata document have no defined body
//! semantics (RFC 9110 §9.3.1, §9.3.2, §9.3.7), and the gateway never reads
//! one. A request that announces a body (a `Content-Length` that is not 0,
//! or any `Transfer-Encoding`) is answered 413 Content Too Large (RFC 9110
//! §15.5.14) with the usual JSON error and CORS headers, and the connection
//! is closed, so the unread body is never buffered or drained and cannot
//! desynchronise the next request on the connection (request smuggling).

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderMap, CONTENT_LENGTH, TRANSFER_ENCODING};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::HttpResponse;

use super::errors::json_error;

/// True when the request head announces a body.
pub fn announces_body(headers: &HeaderMap) -> bool {
    headers.contains_key(TRANSFER_ENCODING)
        || headers
            .get_all(CONTENT_LENGTH)
            .any(|v| v.to_str().ok().and_then(|s| s.trim().parse::<u64>().ok()) != Some(0))
}

/// The 413 answer; the connection is closed after it.
pub fn body_refused() -> HttpResponse {
    let mut res = json_error(
        StatusCode::PAYLOAD_TOO_LARGE,
        "invalid_request",
        "request bodies are not accepted on metadata routes",
    );
    res.head_mut()
        .set_connection_type(actix_web::http::ConnectionType::Close);
    res
}

/// Middleware (use with `actix_web::middleware::from_fn`) refusing any
/// request that announces a body.
pub async fn refuse_bodies(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    if announces_body(req.headers()) {
        return Ok(req.into_response(body_refused()).map_into_boxed_body());
    }
    next.call(req)
        .await
        .map(ServiceResponse::map_into_boxed_body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::HeaderValue;

    fn with(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                actix_web::http::header::HeaderName::from_static(k),
                HeaderValue::from_static(v),
            );
        }
        h
    }

    #[test]
    fn what_counts_as_a_body() {
        assert!(!announces_body(&with(&[])));
        assert!(!announces_body(&with(&[("content-length", "0")])));
        assert!(!announces_body(&with(&[("content-length", " 0 ")])));
        assert!(announces_body(&with(&[("content-length", "1")])));
        assert!(!announces_body(&with(&[("content-length", "00")])));
        assert!(announces_body(&with(&[("content-length", "-0")])));
        assert!(announces_body(&with(&[("content-length", "x")])));
        assert!(announces_body(&with(&[
            ("content-length", "0"),
            ("content-length", "5")
        ])));
        assert!(announces_body(&with(&[("transfer-encoding", "chunked")])));
    }

    #[test]
    fn refusal_is_413_and_closes() {
        let res = body_refused();
        assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(
            res.head().connection_type(),
            actix_web::http::ConnectionType::Close
        );
    }
}
