//! The HTTP front: routes, middleware and the actix-web server.
//!
//! Route map:
//! - every request goes to one handler, [`dispatch`], which asks the
//!   [`RouteTable`](crate::routes::RouteTable) what the path serves (one
//!   hash lookup, then one per `/` of the path for issuer templates): a configured document, a
//!   protected resource, a template tenant, or nothing. Where nothing is,
//!   `/metrics`, `/healthz` and `/readyz` are the operations endpoints
//!   ([`ops::OpsRoute`]): GET and HEAD, 405 with `Allow: GET, HEAD` for
//!   anything else, no CORS headers (no document may take their paths, so
//!   trying them second changes no answer). Documents get
//!   GET/HEAD answered from the cache (or, for protected resource metadata,
//!   from memory), OPTIONS a preflight, a request body 413, anything else
//!   405; every other path gets a preflight for OPTIONS and a JSON 404
//!   otherwise. All of these carry CORS headers. The cost of a request does
//!   not depend on the number of routes, and an unknown path costs the
//!   same lookup as a known one. No request path is ever turned into an
//!   upstream URL, except a template's checked tenant segment.
//!
//! The HTTP metrics' `route` label is the target's label from the route
//! table (a configured path, a document-kind pattern or a template route),
//! the resource name for the operations routes, or `unmatched`: bounded
//! cardinality, never the raw request path. The dispatcher counts its
//! answers itself by the label's dense id ([`recorder`]), and the
//! operations endpoints by their name. No middleware runs on
//! every request except the connection watchdog's in-flight count.
//!
//! Client-connection limits and TLS come from [`crate::listener`]; request
//! bodies on document routes are refused ([`limits`]).

pub mod admin;
pub mod cache_headers;
pub mod conditional;
pub mod cors;
pub mod errors;
pub mod key_set;
pub mod limits;
pub mod local;
pub mod metadata;
pub mod ops;
pub mod recorder;

use std::cell::RefCell;
use std::net::TcpListener;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::body::MessageBody;
use actix_web::dev::{Server, Service as _, ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};

use crate::cache::tenants::TemplateCache;
use crate::cache::{DocumentSlot, Lookup};
use crate::cache_rules::freshness::ceil_seconds;
use crate::cache_rules::outcome::CacheOutcome;
use crate::discovery::DocumentKind;
use crate::error::RunError;
use crate::generation::Generation;
use crate::listener::{watchdog, ListenerConfig};
use crate::metadata_gateway::{GenerationCache, MetadataGateway};
use crate::routes::{Resolved, Target};

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
    live: Arc<MetadataGateway>,
    listener: TcpListener,
    settings: ServerSettings,
) -> Result<Server, RunError> {
    let limits = settings.listener.limits;
    let idle_limit = limits.idle_connection_limit();
    // actix-web's own default: one worker per available core.
    let workers = settings.workers.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let server = HttpServer::new(move || app(live.clone()))
        .disable_signals()
        .shutdown_timeout(ceil_seconds(settings.shutdown_timeout))
        .client_request_timeout(limits.client_request_timeout)
        .tls_handshake_timeout(limits.client_request_timeout)
        .keep_alive(limits.keep_alive)
        .workers(workers)
        .max_connections(limits.max_connections_per_worker(workers))
        .on_connect(move |io, ext| watchdog::on_connect(io, ext, idle_limit));
    let server = match &settings.listener.tls {
        // The configuration resolves its certificate through the
        // reloadable files (`listener::tls`): one listener for the
        // process's life, whatever pair it serves.
        Some(tls) => server.listen_rustls_0_23(listener, (*tls.server_config).clone()),
        None => server.listen(listener),
    }
    .map_err(RunError::io("cannot listen"))?;
    Ok(server.run())
}

/// The application one worker runs. Public so benchmarks can drive the
/// whole stack in-process.
pub fn app(
    live: Arc<MetadataGateway>,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    App::new()
        // A request counts as in progress for the connection watchdog
        // until its response is built.
        .wrap_fn(|req, srv| {
            let in_flight = watchdog::track(req.conn_data::<watchdog::ConnectionHandle>());
            let fut = srv.call(req);
            async move {
                let res = fut.await;
                drop(in_flight);
                res
            }
        })
        .configure(|cfg| routes(cfg, &live))
}

/// Registers the gateway's one service for a worker: the dispatcher, with
/// this worker's HTTP metrics recorder and cached load of the generation.
/// It serves the operations endpoints too ([`ops::OpsRoute`]), so actix-web
/// tries no resource before it.
pub fn routes(cfg: &mut web::ServiceConfig, live: &Arc<MetadataGateway>) {
    let recorder = Rc::new(recorder::HttpRecorder::new(&live.current().metrics));
    let worker = Rc::new(Worker::new(live, recorder));
    cfg.default_service(web::to(move |req: HttpRequest| {
        dispatch(worker.clone(), req)
    }));
}

/// A worker's handle on a generation. The `Rc` around the `Arc` is on
/// purpose: it costs one allocation per worker and reload, and makes
/// handing the generation to a request a non-atomic count instead of an
/// atomic one on a cache line that every worker shares.
#[allow(clippy::redundant_allocation)]
type WorkerGeneration = Rc<Arc<Generation>>;

/// What the dispatcher keeps per worker thread.
struct Worker {
    recorder: Rc<recorder::HttpRecorder>,
    /// The cached load of the live generation and the handle last handed
    /// out: while no reload happened, a request costs a pointer comparison
    /// and a non-atomic reference count.
    generation: RefCell<(GenerationCache, WorkerGeneration)>,
}

impl Worker {
    fn new(live: &Arc<MetadataGateway>, recorder: Rc<recorder::HttpRecorder>) -> Self {
        let mut cache = live.generation_cache();
        let held = Rc::new(cache.load().clone());
        Self {
            recorder,
            generation: RefCell::new((cache, held)),
        }
    }

    /// The current generation.
    fn generation(&self) -> WorkerGeneration {
        let mut state = self.generation.borrow_mut();
        let (cache, held) = &mut *state;
        let current = cache.load();
        if !Arc::ptr_eq(current, held) {
            *held = Rc::new(current.clone());
        }
        held.clone()
    }
}

/// Every request that is not for an operations route: look the path up
/// in the route table, answer (see the module docs) and count the answer
/// under the route's label.
async fn dispatch(worker: Rc<Worker>, req: HttpRequest) -> HttpResponse {
    let started = Instant::now();
    let gw = worker.generation();
    let path = req.match_info().as_str();
    let (resolved, label) = gw.routes.resolve(path, req.uri().path());
    let mut res = match resolved {
        Resolved::NotFound => {
            // The operations endpoints: no document or template claims
            // their paths, so trying them after the route table changes no
            // answer and costs a document request nothing.
            if let Some(op) = ops::OpsRoute::at(path) {
                // Boxed: the endpoints' futures (a scrape's) would
                // otherwise enlarge every request's dispatch future, which
                // actix-web moves and copies.
                let res = Box::pin(op.respond(req.method(), Arc::clone(&gw))).await;
                worker
                    .recorder
                    .record(op.name(), res.status().as_u16(), started.elapsed());
                return res;
            }
            if req.method() == Method::OPTIONS {
                cors::preflight()
            } else {
                errors::not_found()
            }
        }
        found => match document_method(&req) {
            Some(res) => res,
            None => serve(&gw, &req, found, started).await,
        },
    };
    cors::add_response_headers(res.headers_mut());
    let status = res.status().as_u16();
    match label {
        Some(label) => worker
            .recorder
            .record_label(label, status, started.elapsed()),
        None => worker.recorder.record_unmatched(status, started.elapsed()),
    }
    res
}

/// For a path that serves a document: the answer when a request body or
/// the method rules out serving it (413 first, whatever the method, then
/// preflight or 405).
fn document_method(req: &HttpRequest) -> Option<HttpResponse> {
    if limits::announces_body(req.headers()) {
        return Some(limits::body_refused());
    }
    match *req.method() {
        Method::GET | Method::HEAD => None,
        Method::OPTIONS => Some(cors::preflight()),
        _ => Some(errors::method_not_allowed()),
    }
}

/// A configured key set: revalidated with the upstream when the request
/// asks for it (see [`key_set`]), else served like any document; `Err` is
/// the 400 for a query it does not take.
async fn key_set_lookup(
    gw: &Generation,
    req: &HttpRequest,
    slot: &Arc<DocumentSlot>,
    now: Instant,
) -> Result<Lookup, key_set::BadQuery> {
    let asked = key_set::parse(req)?;
    if asked.revalidate || asked.kid.is_some() {
        // Boxed, like every path a cached request does not take: its
        // future would otherwise enlarge every request's dispatch future,
        // which actix-web moves into a box of its own per request.
        return Ok(Box::pin(key_set_on_demand(gw, slot, asked)).await);
    }
    Ok(gw.cache.lookup_at(slot, now).await)
}

/// [`key_set_lookup`] for a request that names a `kid` or asks for a
/// revalidation.
async fn key_set_on_demand(
    gw: &Generation,
    slot: &Arc<DocumentSlot>,
    asked: key_set::KeySetRequest,
) -> Lookup {
    let stored = gw.cache.servable(slot).await.map(|(s, _)| s);
    if asked.wants_revalidation(stored.as_deref()) {
        let limit = slot.freshness().fetch_budget;
        return gw.cache.revalidate_on_demand(slot, limit).await;
    }
    gw.cache.lookup(slot).await
}

/// [`key_set_lookup`] for a template tenant's key set.
async fn tenant_key_set_lookup(
    t: &Arc<TemplateCache>,
    req: &HttpRequest,
    tenant: &str,
    now: Instant,
) -> Result<Lookup, key_set::BadQuery> {
    let asked = key_set::parse(req)?;
    if asked.revalidate || asked.kid.is_some() {
        // Boxed: see `key_set_lookup`.
        return Ok(Box::pin(tenant_key_set_on_demand(t, tenant, asked)).await);
    }
    Ok(t.lookup_at(tenant, now).await)
}

/// [`key_set_on_demand`] for a template tenant's key set.
async fn tenant_key_set_on_demand(
    t: &Arc<TemplateCache>,
    tenant: &str,
    asked: key_set::KeySetRequest,
) -> Lookup {
    let stored = t.stored(tenant).await;
    if asked.wants_revalidation(stored.as_deref()) {
        let limit = t.freshness().fetch_budget;
        return t.revalidate_on_demand(tenant, limit).await;
    }
    t.lookup(tenant).await
}

/// GET or HEAD of a document, for a request that arrived at `now`.
async fn serve(
    gw: &Generation,
    req: &HttpRequest,
    resolved: Resolved<'_>,
    now: Instant,
) -> HttpResponse {
    match resolved {
        Resolved::Exact(Target::Document(i)) => {
            let Some(slot) = gw.slots.get(i) else {
                return errors::not_found();
            };
            let lookup = if slot.kind == DocumentKind::KeySet {
                match key_set_lookup(gw, req, slot, now).await {
                    Ok(lookup) => lookup,
                    Err(bad) => return bad.response(),
                }
            } else {
                gw.cache.lookup_at(slot, now).await
            };
            slot.metrics().record_lookup(lookup.outcome);
            tracing::debug!(document = &*slot.name, outcome = %lookup.outcome, "metadata request");
            metadata::respond(req, &lookup)
        }
        Resolved::Exact(Target::Local(i)) => {
            let Some(doc) = gw.local.get(i) else {
                return errors::not_found();
            };
            doc.group.record_lookup(CacheOutcome::Hit);
            local::respond(req, doc)
        }
        Resolved::Tenant { template, tenant } => {
            let Some(t) = gw.templates.get(template) else {
                return errors::not_found();
            };
            let lookup = if t.config.kind == DocumentKind::KeySet {
                match tenant_key_set_lookup(t, req, tenant, now).await {
                    Ok(lookup) => lookup,
                    Err(bad) => return bad.response(),
                }
            } else {
                t.lookup_at(tenant, now).await
            };
            t.group.record_lookup(lookup.outcome);
            tracing::debug!(document = &*t.name, tenant, outcome = %lookup.outcome, "metadata request");
            metadata::respond(req, &lookup)
        }
        Resolved::NotFound => errors::not_found(),
    }
}
