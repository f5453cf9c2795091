//! The admin listener (`--admin-listen`): what the gateway holds and a way
//! to make it fetch now, kept off the public port (Envoy's admin listener
//! and `varnishadm` are the models).
//!
//! - `GET /documents`: one JSON entry per configured document, cached
//!   template tenant and protected resource document (state, age, time to
//!   expiry, last fetch, last error, consecutive failures), filtered by
//!   `?document=NAME` and `?state=STATE`. Per-document detail for 10,000
//!   issuers lives here, not in Prometheus series. A template tenant says
//!   which tier holds it (`tier`: `memory`, or `disk` for one only in the
//!   state directory); tenants only on disk (100,000 of them, maybe) are
//!   listed when asked for with `?tier=disk`.
//! - `POST /refresh[?document=NAME]`: queue fetches now (see
//!   [`crate::metadata_gateway::MetadataGateway::refresh`]: the scheduler's and the per-host
//!   bounds apply and documents in back-off are skipped).
//! - `/metrics`, `/healthz`, `/readyz`: as on the public listener.
//!
//! Nothing here is routed on the public listener: its route table only
//! holds document paths, so these paths get its JSON 404.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use actix_web::dev::Server;
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, App, HttpResponse, HttpServer};
use serde::{Deserialize, Serialize};

use crate::cache::tenants::{TenantRefresh, TenantState};
use crate::cache::{CacheMode, DocumentSlot, StoredDocument};
use crate::cache_rules::freshness::{ceil_seconds, FreshnessState};
use crate::error::RunError;
use crate::generation::Generation;
use crate::metadata_gateway::MetadataGateway;

use super::errors::json_error;
use super::{ops, ServerSettings};

/// Builds the admin server on `listener` (plain HTTP, one worker: it is
/// for operators and scrapers, not clients).
pub fn server(
    live: Arc<MetadataGateway>,
    listener: TcpListener,
    settings: &ServerSettings,
) -> Result<Server, RunError> {
    let limits = settings.listener.limits;
    let server = HttpServer::new(move || {
        let live = live.clone();
        App::new().configure(move |cfg| routes(cfg, &live))
    })
    .disable_signals()
    .shutdown_timeout(ceil_seconds(settings.shutdown_timeout))
    .client_request_timeout(limits.client_request_timeout)
    .keep_alive(limits.keep_alive)
    .workers(1)
    .listen(listener)
    .map_err(RunError::io("cannot listen on the admin address"))?;
    Ok(server.run())
}

/// Registers the admin routes.
pub fn routes(cfg: &mut web::ServiceConfig, live: &Arc<MetadataGateway>) {
    ops::routes(cfg, live);
    let (d, r) = (live.clone(), live.clone());
    // A malformed query is the same JSON error as every other answer here.
    cfg.app_data(web::QueryConfig::default().error_handler(|e, _| {
        let answer = json_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            &format!("invalid query: {e}"),
        );
        actix_web::error::InternalError::from_response(e, answer).into()
    }))
    .service(
        web::resource("/documents")
            .route(
                web::get().to(move |q: web::Query<DocumentsQuery>| {
                    documents(d.current(), q.into_inner())
                }),
            )
            .route(web::head().to(|| async { HttpResponse::Ok().finish() }))
            .default_service(web::to(|| async { not_allowed("GET, HEAD") })),
    )
    .service(
        web::resource("/refresh")
            .route(web::post().to(move |q: web::Query<RefreshQuery>| {
                let live = r.clone();
                async move {
                    let q = q.into_inner();
                    match q.tenant.as_deref() {
                        Some(tenant) => refresh_tenant(&live, q.document.as_deref(), tenant).await,
                        None => refresh(&live, q),
                    }
                }
            }))
            .default_service(web::to(|| async { not_allowed("POST") })),
    )
    .default_service(web::to(|| async {
        json_error(
            StatusCode::NOT_FOUND,
            "not_found",
            "the admin listener serves /documents, /refresh, /metrics, /healthz and /readyz",
        )
    }));
}

fn not_allowed(allow: &'static str) -> HttpResponse {
    let mut res = json_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        &format!("this path answers {allow} only"),
    );
    res.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    res
}

/// `GET /documents` filters. Unknown keys are refused (400), like every
/// malformed value: a misspelt filter must not silently list everything.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DocumentsQuery {
    /// Only the document (or template) with this name.
    pub document: Option<String>,
    /// Only documents in this state (`fresh`, `stale`, `error`, ...).
    pub state: Option<String>,
    /// Skip this many matching entries (paging through many documents).
    pub offset: Option<usize>,
    /// At most this many entries.
    pub limit: Option<usize>,
    /// Only template tenants held in this tier: `memory`, or `disk` (only
    /// in the state directory; listed only when asked for).
    pub tier: Option<String>,
}

/// `POST /refresh` parameters. Unknown keys are refused (400): a
/// misspelt `?document=` must not refresh every document.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefreshQuery {
    /// Only this document (or template).
    pub document: Option<String>,
    /// With a template's `document`: only this tenant (which also forgets a
    /// remembered "not found").
    pub tenant: Option<String>,
}

/// Where a document stands, as `/documents` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DocumentState {
    /// Cached and within its TTL.
    Fresh,
    /// Cached, past its TTL, still served (stale-if-error, RFC 5861 §4).
    Stale,
    /// Nothing servable; the last fetch failed.
    Error,
    /// Nothing servable yet; no fetch has finished.
    Pending,
    /// Not cached; served from the upstream on every request (`--no-cache`).
    Bypass,
    /// The upstream has no such tenant (404/410), remembered for a while.
    NotFound,
    /// Generated from configuration, served from memory.
    Local,
    /// A template tenant only in the state directory (its disk tier): read
    /// back and checked at its next request; its freshness is known then.
    OnDisk,
}

impl DocumentState {
    const ALL: [(&'static str, Self); 8] = [
        ("fresh", Self::Fresh),
        ("stale", Self::Stale),
        ("error", Self::Error),
        ("pending", Self::Pending),
        ("bypass", Self::Bypass),
        ("not_found", Self::NotFound),
        ("local", Self::Local),
        ("on_disk", Self::OnDisk),
    ];

    fn parse(text: &str) -> Option<Self> {
        Self::ALL.iter().find(|(n, _)| *n == text).map(|(_, s)| *s)
    }

    fn label(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, s)| *s == self)
            .map_or("", |(n, _)| n)
    }
}

/// The last finished upstream fetch.
#[derive(Debug, Serialize)]
pub struct LastFetchView {
    /// Its outcome label (as in `metadata_gateway_upstream_fetches_total`).
    pub outcome: &'static str,
    /// When it finished (RFC 3339, UTC).
    pub at: String,
}

/// One entry of `GET /documents`.
#[derive(Debug, Serialize)]
pub struct DocumentView {
    /// The document's name (a template tenant: the template's name).
    pub name: String,
    /// `oauth-authorization-server`, `openid-configuration` or
    /// `oauth-protected-resource`.
    pub kind: &'static str,
    /// The tenant, for a cached template tenant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// For a template tenant: the tier holding it, `memory` (its saved
    /// copy, if any, is in the disk tier too) or `disk` (only in the
    /// state directory).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tier: Option<&'static str>,
    /// Paths it is served at.
    pub routes: Vec<String>,
    /// Upstream URLs, in the order they are tried.
    pub upstream_urls: Vec<String>,
    /// The forward proxy they are fetched through, password hidden
    /// (`http://user:***@host:port`); absent when fetched directly.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy: Option<String>,
    /// Where it stands.
    pub state: DocumentState,
    /// Age of the served copy, whole seconds.
    pub age_seconds: Option<u64>,
    /// Seconds until it turns stale; negative once it is stale.
    pub expires_in_seconds: Option<i64>,
    /// Seconds it may still be served (stale included).
    pub servable_for_seconds: Option<u64>,
    /// Where the freshness lifetime came from: `max-age`, `s-maxage`,
    /// `expires`, `ttl` (no upstream information, or ignored) or `min-ttl`
    /// (the upstream forbade caching).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub freshness_source: Option<&'static str>,
    /// Loaded from the state directory and not yet replaced by a fetch.
    pub restored: bool,
    /// The last finished fetch.
    pub last_fetch: Option<LastFetchView>,
    /// Why the last fetch failed, when it did.
    pub last_error: Option<String>,
    /// Failed fetches since the last success.
    pub consecutive_failures: u32,
    /// Seconds until the back-off lets the next fetch start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_in_seconds: Option<u64>,
}

impl DocumentView {
    /// A document with no fetch state to report (only on disk, or
    /// generated locally): every fetch and freshness field empty.
    fn without_fetches(name: String, kind: &'static str, state: DocumentState) -> Self {
        Self {
            name,
            kind,
            tenant: None,
            tier: None,
            routes: Vec::new(),
            upstream_urls: Vec::new(),
            proxy: None,
            state,
            age_seconds: None,
            expires_in_seconds: None,
            servable_for_seconds: None,
            freshness_source: None,
            restored: false,
            last_fetch: None,
            last_error: None,
            consecutive_failures: 0,
            retry_in_seconds: None,
        }
    }
}

/// A template's summary in `GET /documents`.
#[derive(Debug, Serialize)]
pub struct TemplateView {
    /// The template document's name.
    pub name: String,
    /// Its issuer pattern.
    pub issuer: String,
    /// Tenant entries held (documents, not-found answers, failures).
    pub cached_tenants: usize,
    /// Its bound (`max_tenants`).
    pub max_tenants: u64,
    /// Tenants with a saved copy in the state directory (its disk tier);
    /// absent without `--state-dir`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenants_on_disk: Option<usize>,
    /// The disk tier's bound (`max_tenants_on_disk`); absent without
    /// `--state-dir`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tenants_on_disk: Option<u64>,
}

/// The body of `GET /documents`.
#[derive(Debug, Serialize)]
pub struct DocumentsView {
    /// The configuration generation (0 at start, +1 per reload).
    pub generation: u64,
    /// Entries matching the filters (within `offset` and `limit`).
    pub documents: Vec<DocumentView>,
    /// Entries matching the filters, before `offset` and `limit`.
    pub total: usize,
    /// Of those, how many are in each state.
    pub states: std::collections::BTreeMap<&'static str, usize>,
    /// Issuer templates.
    pub templates: Vec<TemplateView>,
}

fn seconds(d: Duration) -> u64 {
    d.as_secs()
}

fn signed_seconds(ahead: Duration, behind: Duration) -> i64 {
    let s = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    if ahead >= behind {
        s(ahead - behind)
    } else {
        -s(behind - ahead)
    }
}

fn rfc3339(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}

/// The view of one slot, given its stored copy (if any).
fn slot_view(
    slot: &DocumentSlot,
    stored: Option<(&StoredDocument, Duration)>,
    mode: CacheMode,
    routes: Vec<String>,
    now: Instant,
) -> DocumentView {
    let (state, age, expires, servable) = match stored {
        Some((d, age)) => {
            let f = d.rules();
            let state = match f.classify(age) {
                FreshnessState::Fresh { .. } => DocumentState::Fresh,
                FreshnessState::Stale { .. } | FreshnessState::Expired => DocumentState::Stale,
            };
            let servable = (f.ttl + f.max_stale).saturating_sub(age);
            (
                state,
                Some(seconds(age)),
                Some(signed_seconds(f.ttl, age)),
                Some(seconds(servable)),
            )
        }
        None if mode == CacheMode::Bypass && slot.last_error().is_none() => {
            (DocumentState::Bypass, None, None, None)
        }
        None if slot.last_error().is_some() => (DocumentState::Error, None, None, None),
        None => (DocumentState::Pending, None, None, None),
    };
    DocumentView {
        name: slot.name.to_string(),
        kind: slot.kind.well_known(),
        tenant: slot.tenant.as_deref().map(str::to_string),
        tier: slot.tenant.is_some().then_some("memory"),
        routes,
        upstream_urls: slot.fetch_urls().iter().map(|u| u.to_string()).collect(),
        proxy: None,
        state,
        age_seconds: age,
        expires_in_seconds: expires,
        servable_for_seconds: servable,
        freshness_source: stored.map(|(d, _)| d.timing.source.label()),
        restored: stored.is_some_and(|(d, _)| d.restored),
        last_fetch: slot.last_fetch().map(|l| LastFetchView {
            outcome: l.outcome,
            at: rfc3339(l.at),
        }),
        last_error: slot.last_error().map(|e| e.to_string()),
        consecutive_failures: slot.consecutive_failures(),
        retry_in_seconds: slot.backing_off(now).map(|(_, left)| ceil_seconds(left)),
    }
}

/// The proxy (redacted) `slot`'s first upstream URL goes through.
fn proxy_of(gw: &Generation, slot: &DocumentSlot) -> Option<String> {
    let url = slot.upstream_urls().first()?;
    gw.cache.fetcher().proxy_for(&url).map(|p| p.to_string())
}

/// Every document of `gw` matching `q`.
pub async fn collect(gw: &Generation, q: &DocumentsQuery) -> Vec<DocumentView> {
    let wanted = |name: &str| q.document.as_deref().is_none_or(|d| d == name);
    let state = q.state.as_deref().and_then(DocumentState::parse);
    let tier = q.tier.as_deref();
    let keep = |v: &DocumentView| {
        state.is_none_or(|s| s == v.state) && tier.is_none_or(|t| v.tier == Some(t))
    };
    let now = Instant::now();
    let mut out = Vec::new();
    for (slot, doc) in gw.slots.iter().zip(&gw.documents.documents) {
        if !wanted(&slot.name) || tier.is_some() {
            continue;
        }
        let stored = gw.cache.servable(slot).await;
        let mut v = slot_view(
            slot,
            stored.as_ref().map(|(s, age)| (&**s, *age)),
            gw.cache.mode(),
            doc.routes.iter().map(|r| r.to_string()).collect(),
            now,
        );
        v.proxy = proxy_of(gw, slot);
        if keep(&v) {
            out.push(v);
        }
    }
    for t in &gw.templates {
        if !wanted(&t.name) {
            continue;
        }
        let mut entries = t.entries();
        entries.sort_by(|a, b| a.slot.tenant.cmp(&b.slot.tenant));
        for entry in entries {
            let tenant = entry.slot.tenant.as_deref().unwrap_or_default();
            let routes = t.config.routes.iter().map(|p| p.render(tenant)).collect();
            let mut v = match &entry.state {
                TenantState::Document(d) => {
                    let age = d.fetched_at.elapsed();
                    slot_view(&entry.slot, Some((d, age)), CacheMode::Store, routes, now)
                }
                TenantState::NotFound { .. } | TenantState::Failed => {
                    slot_view(&entry.slot, None, CacheMode::Store, routes, now)
                }
            };
            v.proxy = proxy_of(gw, &entry.slot);
            if matches!(entry.state, TenantState::NotFound { .. }) {
                v.state = DocumentState::NotFound;
            }
            if keep(&v) {
                out.push(v);
            }
        }
        // Only on disk: listed when asked for (there may be 100,000).
        if let (Some("disk"), Some(disk)) = (tier, t.disk()) {
            // Evictions still pending in moka applied first.
            t.entry_count().await;
            let mut names = disk.newest(usize::MAX);
            names.retain(|n| !t.holds(n));
            names.sort_unstable();
            for tenant in names {
                let v = DocumentView {
                    routes: t.config.routes.iter().map(|p| p.render(&tenant)).collect(),
                    upstream_urls: t
                        .config
                        .upstream_urls
                        .iter()
                        .map(|p| p.render(&tenant))
                        .collect(),
                    proxy: t.config.upstream_urls.first().and_then(|p| {
                        let url = p.render(&tenant);
                        gw.cache.fetcher().proxy_for(&url).map(|p| p.to_string())
                    }),
                    tenant: Some(tenant),
                    tier: Some("disk"),
                    ..DocumentView::without_fetches(
                        t.name.to_string(),
                        t.config.kind.well_known(),
                        DocumentState::OnDisk,
                    )
                };
                if keep(&v) {
                    out.push(v);
                }
            }
        }
    }
    for doc in &gw.local {
        let d = &doc.document;
        if !wanted(&d.name) || tier.is_some() {
            continue;
        }
        let v = DocumentView {
            routes: d.routes.clone(),
            ..DocumentView::without_fetches(
                d.name.clone(),
                crate::discovery::DocumentKind::ProtectedResource.well_known(),
                DocumentState::Local,
            )
        };
        if keep(&v) {
            out.push(v);
        }
    }
    out
}

fn no_store_json(status: StatusCode, body: &impl Serialize) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")))
        .json(body)
}

/// `GET /documents`.
/// `GET /documents` listings built at a time (see [`documents`]).
static LISTING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);
/// How long a listing waits for the one before it.
const LISTING_WAIT: Duration = Duration::from_secs(10);

async fn documents(gw: Arc<Generation>, q: DocumentsQuery) -> HttpResponse {
    if let Some(t) = q
        .tier
        .as_deref()
        .filter(|t| !matches!(*t, "memory" | "disk"))
    {
        return json_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            &format!("unknown tier {t:?}; one of memory, disk"),
        );
    }
    if let Some(s) = q.state.as_deref() {
        if DocumentState::parse(s).is_none() {
            let names: Vec<&str> = DocumentState::ALL.iter().map(|(n, _)| *n).collect();
            return json_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                &format!("unknown state {s:?}; one of {}", names.join(", ")),
            );
        }
    }
    // One listing at a time: with 10,000 documents a listing holds a few
    // MiB while it is built, and concurrent ones would add up.
    let Ok(Ok(_one)) = tokio::time::timeout(LISTING_WAIT, LISTING.acquire()).await else {
        let mut res = json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "another /documents listing is being built; retry",
        );
        res.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return res;
    };
    let mut documents = collect(&gw, &q).await;
    let total = documents.len();
    let mut states = std::collections::BTreeMap::new();
    for d in &documents {
        *states.entry(d.state.label()).or_insert(0) += 1;
    }
    let offset = q.offset.unwrap_or(0).min(total);
    documents.drain(..offset);
    documents.truncate(q.limit.unwrap_or(usize::MAX));
    if total == 0 {
        if let Some(name) = q.document.as_deref() {
            if !gw.has_document(name) {
                return json_error(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    &format!("no document named {name:?}"),
                );
            }
        }
    }
    let mut templates = Vec::new();
    for t in &gw.templates {
        templates.push(TemplateView {
            name: t.name.to_string(),
            issuer: t.config.issuer.as_template(),
            cached_tenants: usize::try_from(t.entry_count().await).unwrap_or(usize::MAX),
            max_tenants: t.config.max_tenants,
            tenants_on_disk: t.disk().map(|d| d.len()),
            max_tenants_on_disk: t.disk().map(|_| t.config.max_tenants_on_disk),
        });
    }
    no_store_json(
        StatusCode::OK,
        &DocumentsView {
            generation: gw.generation,
            documents,
            total,
            states,
            templates,
        },
    )
}

#[derive(Serialize)]
struct TenantsStarted<'a> {
    document: &'a str,
    tenants: usize,
}

#[derive(Serialize)]
struct Skipped<'a> {
    document: &'a str,
    reason: &'a str,
}

#[derive(Serialize)]
struct RefreshBody<'a> {
    started: &'a [String],
    tenants: Vec<TenantsStarted<'a>>,
    skipped: Vec<Skipped<'a>>,
}

/// `POST /refresh?document=TEMPLATE&tenant=TENANT`.
async fn refresh_tenant(
    live: &MetadataGateway,
    document: Option<&str>,
    tenant: &str,
) -> HttpResponse {
    let Some(document) = document else {
        return json_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "tenant needs document, the name of its template",
        );
    };
    let (started, skipped) = match live.refresh_tenant(document, tenant).await {
        None => {
            return json_error(
                StatusCode::NOT_FOUND,
                "not_found",
                &format!("no template named {document:?}"),
            )
        }
        Some(TenantRefresh::Invalid) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                &format!("{tenant:?} is not a valid tenant name"),
            )
        }
        Some(TenantRefresh::Started) => (1, None),
        Some(TenantRefresh::BackingOff(reason)) => (0, Some(reason)),
    };
    no_store_json(
        StatusCode::ACCEPTED,
        &RefreshBody {
            started: &[],
            tenants: vec![TenantsStarted {
                document,
                tenants: started,
            }],
            skipped: skipped
                .iter()
                .map(|reason| Skipped { document, reason })
                .collect(),
        },
    )
}

/// `POST /refresh`.
fn refresh(live: &MetadataGateway, q: RefreshQuery) -> HttpResponse {
    let Some(answer) = live.refresh(q.document.as_deref()) else {
        return json_error(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!(
                "no document named {:?}",
                q.document.as_deref().unwrap_or_default()
            ),
        );
    };
    no_store_json(
        StatusCode::ACCEPTED,
        &RefreshBody {
            started: &answer.started,
            tenants: answer
                .tenants
                .iter()
                .map(|(document, tenants)| TenantsStarted {
                    document,
                    tenants: *tenants,
                })
                .collect(),
            skipped: answer
                .skipped
                .iter()
                .map(|(document, reason)| Skipped { document, reason })
                .collect(),
        },
    )
}
