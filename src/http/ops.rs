//! Operational endpoints: `/metrics` (Prometheus text format), `/healthz`
//! (liveness: the process answers) and `/readyz` (readiness: every
//! configured document is servable, fresh or within max-stale).
//!
//! The public listener's dispatcher serves them ([`OpsRoute`]: tried only
//! when the route table finds nothing, counted under their own path); the
//! admin listener registers them as actix resources ([`routes`]).

use std::sync::Arc;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpResponse};

use crate::generation::Generation;
use crate::metadata_gateway::MetadataGateway;

use super::errors::{self, json_error};

/// An operations endpoint, as the public listener's dispatcher finds it:
/// by exact path, after the route table found nothing (no document or
/// template may claim these paths, `config::documents::check_routes`), so
/// a document request pays nothing for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpsRoute {
    /// `/metrics`.
    Metrics,
    /// `/healthz`.
    Healthz,
    /// `/readyz`.
    Readyz,
}

impl OpsRoute {
    /// The endpoint served at `path` (the path actix-web routes on), if any.
    pub fn at(path: &str) -> Option<Self> {
        match path {
            "/metrics" => Some(Self::Metrics),
            "/healthz" => Some(Self::Healthz),
            "/readyz" => Some(Self::Readyz),
            _ => None,
        }
    }

    /// Its path, which is also its `route` label in the HTTP metrics.
    pub fn name(self) -> &'static str {
        match self {
            Self::Metrics => "/metrics",
            Self::Healthz => "/healthz",
            Self::Readyz => "/readyz",
        }
    }

    /// The answer to a request for this endpoint: GET and HEAD answered
    /// from `gw`, 405 with `Allow: GET, HEAD` for any other method (as the
    /// admin listener's resources of [`routes`] answer). No CORS headers:
    /// these are not metadata routes.
    pub async fn respond(self, method: &Method, gw: Arc<Generation>) -> HttpResponse {
        if !matches!(*method, Method::GET | Method::HEAD) {
            return errors::ops_method_not_allowed().await;
        }
        match self {
            Self::Metrics => metrics(gw).await,
            Self::Healthz => healthz().await,
            Self::Readyz => readyz(gw).await,
        }
    }
}

/// Registers `/metrics`, `/healthz` and `/readyz` as actix resources (GET
/// and HEAD; 405 with `Allow: GET, HEAD` otherwise), each answered from
/// the current generation: the admin listener's, not counted in the HTTP
/// metrics. The public listener serves the same answers from its
/// dispatcher ([`OpsRoute`]) and counts them.
pub fn routes(cfg: &mut web::ServiceConfig, live: &Arc<MetadataGateway>) {
    let (m, r) = (live.clone(), live.clone());
    cfg.service(
        web::resource("/metrics")
            .name("/metrics")
            .route(web::get().to({
                let m = m.clone();
                move || metrics(m.current())
            }))
            .route(web::head().to(move || metrics(m.current())))
            .default_service(web::to(errors::ops_method_not_allowed)),
    )
    .service(
        web::resource("/healthz")
            .name("/healthz")
            .route(web::get().to(healthz))
            .route(web::head().to(healthz))
            .default_service(web::to(errors::ops_method_not_allowed)),
    )
    .service(
        web::resource("/readyz")
            .name("/readyz")
            .route(web::get().to({
                let r = r.clone();
                move || readyz(r.current())
            }))
            .route(web::head().to(move || readyz(r.current())))
            .default_service(web::to(errors::ops_method_not_allowed)),
    );
}

/// `GET /metrics` (and `HEAD`: the same headers, actix-web drops the body).
pub async fn metrics(gw: Arc<Generation>) -> HttpResponse {
    gw.update_document_gauges().await;
    match gw.metrics.render() {
        Ok(body) => HttpResponse::Ok()
            .insert_header((
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            ))
            .insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")))
            .body(body),
        Err(e) => json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            &format!("cannot render metrics: {e}"),
        ),
    }
}

/// `GET /healthz` (and `HEAD`).
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")))
        .json(serde_json::json!({"status": "ok"}))
}

/// `GET /readyz` (and `HEAD`).
pub async fn readyz(gw: Arc<Generation>) -> HttpResponse {
    const SHOWN: usize = 10;
    let r = gw.unready_documents(SHOWN);
    let ready = gw.ready_with(&r);
    let (count, missing) = (r.unready, &r.shown);
    let mut body = if count == 0 {
        serde_json::json!({"status": "ready"})
    } else if ready {
        // Within --ready-min-percent: ready, and saying what is missing.
        serde_json::json!({
            "status": "ready",
            "unready_documents": count,
            "reason": format!("within --ready-min-percent; no servable document: {}", missing.join("; ")),
        })
    } else {
        serde_json::json!({
            "status": "not_ready",
            "reason": if count > missing.len() {
                format!("no servable document: {} (and {} more)", missing.join("; "), count - missing.len())
            } else {
                format!("no servable document: {}", missing.join("; "))
            },
            "unready_documents": count,
        })
    };
    if r.pending > 0 {
        body["pending_documents"] = r.pending.into();
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    HttpResponse::build(status)
        .insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")))
        .json(body)
}

#[cfg(test)]
mod tests {
    use super::OpsRoute;
    use crate::config::documents::OPS_ROUTES;

    #[test]
    fn every_reserved_path_is_an_endpoint_named_by_it() {
        for path in OPS_ROUTES {
            let route = OpsRoute::at(path).expect(path);
            assert_eq!(route.name(), path);
        }
        for other in ["/metrics/", "/Metrics", "/healthz?x", "", "/", "/readyz/x"] {
            assert_eq!(OpsRoute::at(other), None, "{other}");
        }
    }
}
