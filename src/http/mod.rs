//! The HTTP front: routes, middleware and the actix-web server.
//!
//! Route map:
//! - every configured route of every document (computed at start-up by
//!   [`crate::discovery`]; most are under `/.well-known/`, OpenID
//!   configuration also at `<issuer path>/.well-known/openid-configuration`),
//!   with CORS on every response: GET/HEAD answered from the cache (or, for
//!   protected resource metadata, from memory), OPTIONS with a preflight,
//!   anything else with 405. Each is an actix resource with a static
//!   pattern, matched by exact string comparison: an unknown suffix, `..`,
//!   an encoded slash or a doubled slash matches nothing, and no request
//!   path is ever turned into an upstream URL (no open proxy).
//! - `/metrics`, `/healthz`, `/readyz`: operations, GET and HEAD (405 with
//!   `Allow: GET, HEAD` for anything else).
//! - anything else: OPTIONS gets a preflight, everything else a JSON 404,
//!   both with CORS (discovery clients probe locations that may not exist).
//!
//! Every resource is named after its route (a configured path or a fixed
//! pattern), which labels the HTTP metrics (bounded cardinality: never the
//! raw request path).
//!
//! Client-connection limits and TLS come from [`crate::listener`]; request
//! bodies on document routes are refused by [`limits`].

pub mod conditional;
pub mod cors;
pub mod errors;
pub mod freshness_headers;
pub mod limits;
pub mod local;
pub mod metadata;
pub mod ops;
pub mod recorder;

use std::net::TcpListener;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::body::MessageBody;
use actix_web::dev::{Server, Service as _, ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};

use crate::cache::DocumentSlot;
use crate::error::RunError;
use crate::freshness::ceil_seconds;
use crate::gateway::{Gateway, LocalDocument};
use crate::listener::{watchdog, ListenerConfig};
use crate::metrics::UNMATCHED_ROUTE;

/// Server-level settings.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Worker threads; `None` = one per core.
    pub workers: Option<usize>,
    /// Bound on graceful shutdown.
    pub shutdown_timeout: Duration,
    /// TLS and client-connection limits.
    pub listener: ListenerConfig,
}

/// Builds the gateway's HTTP server on `listener` (not yet polled).
pub fn server(
    gw: Arc<Gateway>,
    listener: TcpListener,
    settings: ServerSettings,
) -> Result<Server, RunError> {
    let limits = settings.listener.limits;
    let idle_limit = limits.idle_connection_limit();
    // actix-web's own default: one worker per available core.
    let workers = settings.workers.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let server = HttpServer::new(move || app(gw.clone()))
        .disable_signals()
        .shutdown_timeout(ceil_seconds(settings.shutdown_timeout))
        .client_request_timeout(limits.client_request_timeout)
        .tls_handshake_timeout(limits.client_request_timeout)
        .keep_alive(limits.keep_alive)
        .workers(workers)
        .max_connections(limits.max_connections_per_worker(workers))
        .on_connect(move |io, ext| watchdog::on_connect(io, ext, idle_limit));
    let server = match &settings.listener.tls {
        Some(tls) => server.listen_rustls_0_23(listener, (**tls).clone()),
        None => server.listen(listener),
    }
    .map_err(RunError::io("cannot listen"))?;
    Ok(server.run())
}

/// The application one worker runs: every route behind the HTTP metrics
/// middleware. Public so benchmarks can drive the whole stack in-process.
pub fn app(
    gw: Arc<Gateway>,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let recorder = Rc::new(recorder::HttpRecorder::new(gw.metrics.clone()));
    App::new()
        .wrap_fn(move |req, srv| {
            let started = Instant::now();
            let recorder = recorder.clone();
            let fut = srv.call(req);
            async move {
                let res = fut.await?;
                let route = res.request().match_name().unwrap_or(UNMATCHED_ROUTE);
                recorder.record(route, res.status().as_u16(), started.elapsed());
                Ok(res)
            }
        })
        // Outermost: a request counts as in progress for the
        // connection watchdog until its response is built.
        .wrap_fn(|req, srv| {
            let in_flight = watchdog::track(req.conn_data::<watchdog::ConnectionHandle>());
            let fut = srv.call(req);
            async move {
                let res = fut.await;
                drop(in_flight);
                res
            }
        })
        .configure(|cfg| routes(cfg, &gw))
}

/// Registers every route of the gateway.
pub fn routes(cfg: &mut web::ServiceConfig, gw: &Arc<Gateway>) {
    // Document routes first: actix tries services in registration order,
    // and nothing else may answer a document route.
    for slot in &gw.slots {
        for route in &slot.routes {
            cfg.service(document_resource(gw.clone(), slot.clone(), route));
        }
    }
    for doc in &gw.local {
        for route in &doc.document.routes {
            cfg.service(local_resource(gw.clone(), doc.clone(), route));
        }
    }
    let (m, r) = (gw.clone(), gw.clone());
    cfg.service(
        web::resource("/metrics")
            .name("/metrics")
            .route(web::get().to({
                let m = m.clone();
                move || ops::metrics(m.clone())
            }))
            .route(web::head().to(move || ops::metrics(m.clone())))
            .default_service(web::to(errors::ops_method_not_allowed)),
    )
    .service(
        web::resource("/healthz")
            .name("/healthz")
            .route(web::get().to(ops::healthz))
            .route(web::head().to(ops::healthz))
            .default_service(web::to(errors::ops_method_not_allowed)),
    )
    .service(
        web::resource("/readyz")
            .name("/readyz")
            .route(web::method(Method::GET).to({
                let r = r.clone();
                move || ops::readyz(r.clone())
            }))
            .route(web::head().to(move || ops::readyz(r.clone())))
            .default_service(web::to(errors::ops_method_not_allowed)),
    )
    .default_service(web::to(fallback));
}

fn document_resource(
    gw: Arc<Gateway>,
    slot: Arc<DocumentSlot>,
    route: &str,
) -> impl actix_web::dev::HttpServiceFactory {
    let serve = move |req: HttpRequest| {
        let gw = gw.clone();
        let slot = slot.clone();
        async move {
            let lookup = gw.cache.lookup(&slot).await;
            gw.metrics.record_lookup(slot.id, lookup.outcome);
            tracing::debug!(document = &*slot.name, outcome = %lookup.outcome, "metadata request");
            metadata::respond(&req, &slot, &lookup)
        }
    };
    document_routes(route, serve)
}

fn local_resource(
    gw: Arc<Gateway>,
    doc: Arc<LocalDocument>,
    route: &str,
) -> impl actix_web::dev::HttpServiceFactory {
    let serve = move |req: HttpRequest| {
        let gw = gw.clone();
        let doc = doc.clone();
        async move {
            gw.metrics
                .record_lookup(doc.id, crate::outcome::CacheOutcome::Hit);
            local::respond(&req, &doc)
        }
    };
    document_routes(route, serve)
}

/// One document route: GET/HEAD served by `serve`, OPTIONS a preflight,
/// other methods 405, CORS headers on all of them. `route` is a configured
/// path without `{`, `}` or `*` (checked by [`crate::discovery`]), so actix
/// compares it to the request path as a plain string.
fn document_routes<F, Fut>(route: &str, serve: F) -> impl actix_web::dev::HttpServiceFactory
where
    F: Fn(HttpRequest) -> Fut + Clone + 'static,
    Fut: std::future::Future<Output = HttpResponse> + 'static,
{
    web::resource(route)
        .name(route)
        // Inside CORS, so a 413 carries the CORS headers too.
        .wrap(actix_web::middleware::from_fn(limits::refuse_bodies))
        .wrap(cors::response_headers())
        .route(web::get().to(serve.clone()))
        .route(web::head().to(serve))
        .route(web::method(Method::OPTIONS).to(|| async { cors::preflight() }))
        .default_service(web::to(errors::method_not_allowed))
}

/// Every path that serves nothing: preflights succeed (so a browser gets
/// to see the real answer) and everything else is a JSON 404, both with
/// CORS headers. Discovery clients probe several well-known locations,
/// some outside `/.well-known/` (`<path>/.well-known/openid-configuration`),
/// and a 404 without `Access-Control-Allow-Origin` looks like a network
/// error to a browser, not like "try the next location".
async fn fallback(req: HttpRequest) -> HttpResponse {
    let mut res = if req.method() == Method::OPTIONS {
        cors::preflight()
    } else {
        errors::not_found()
    };
    cors::add_response_headers(res.headers_mut());
    res
}
