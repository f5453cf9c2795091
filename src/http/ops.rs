//! Operational endpoints: `/metrics` (Prometheus text format), `/healthz`
//! (liveness: the process answers) and `/readyz` (readiness: every
//! configured document is servable, fresh or within max-stale).

use std::rc::Rc;
use std::sync::Arc;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};

use crate::generation::Generation;
use crate::metadata_gateway::MetadataGateway;

use super::errors::{self, json_error};
use super::recorder::{HttpRecorder, OpsRecording};

/// Registers `/metrics`, `/healthz` and `/readyz` (GET and HEAD; 405 with
/// `Allow: GET, HEAD` otherwise), each answered from the current
/// generation. The public and the admin listener both serve them; only the
/// public listener's are counted in the HTTP metrics
/// ([`routes_recorded`]).
pub fn routes(cfg: &mut web::ServiceConfig, live: &Arc<MetadataGateway>) {
    routes_recorded(cfg, live, None);
}

/// [`routes`], each response counted under the resource's name by
/// `recorder` (the worker's) when one is given.
pub fn routes_recorded(
    cfg: &mut web::ServiceConfig,
    live: &Arc<MetadataGateway>,
    recorder: Option<Rc<HttpRecorder>>,
) {
    let (m, r) = (live.clone(), live.clone());
    let recorded = |route| OpsRecording::new(recorder.clone(), route);
    cfg.service(
        web::resource("/metrics")
            .name("/metrics")
            .wrap(recorded("/metrics"))
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
            .wrap(recorded("/healthz"))
            .route(web::get().to(healthz))
            .route(web::head().to(healthz))
            .default_service(web::to(errors::ops_method_not_allowed)),
    )
    .service(
        web::resource("/readyz")
            .name("/readyz")
            .wrap(recorded("/readyz"))
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
