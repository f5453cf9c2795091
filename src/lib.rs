//! oauth-metadata-gateway: a caching gateway for OAuth authorization-server
//! metadata (RFC 8414) in front of MCP servers.
//!
//! Module map, bottom to top (see ARCHITECTURE.md for the invariants):
//! - pure rules: [`tenant`] (`{tenant}` templates and the tenant grammar),
//!   [`discovery`] (well-known routes and upstream URLs, RFC 8414 §3,
//!   RFC 9728 §3, OpenID Connect Discovery §4), [`upstream_urls`] (a
//!   document's upstream URLs, kept small), [`document`] (RFC 8414
//!   validation), [`strict_json`] (JSON with unique member names, RFC 8259
//!   §4), [`protected_resource`] (RFC 9728 metadata),
//!   [`cache_rules`] (the HTTP caching model: `Cache-Control`, freshness
//!   from the upstream's headers, fresh/stale/expired, the outcome enum;
//!   RFC 9111, RFC 5861, RFC 9211), [`error`];
//! - [`config`]: the typed configuration (and the TOML file) everything
//!   else reads; [`listener`]: listener TLS and client-connection limits;
//! - [`routes`]: the route table built once from the configuration;
//! - [`upstream`]: awc fetches on a dedicated thread, bounded per host,
//!   with its rustls setup; [`metrics`]: Prometheus registry;
//! - [`cache`]: moka-backed caches of configured documents and template
//!   tenants, coalescing, back-off, revalidation, and persistence to the
//!   state directory (`cache::persist`: file format, writer, restore);
//!   [`refresher`]: the refresh scheduler;
//! - [`generation`]: one configuration generation (slots, template
//!   caches, routes, metrics groups); [`metadata_gateway`]: the gateway
//!   as a whole, the current generation behind a lock-free swap, reloads;
//! - [`http`]: the HTTP front; [`demo`]: the built-in demo authorization server;
//! - [`check`]: the `check` subcommand; [`cli`]: the command line, top of
//!   the stack (only `main` uses it); [`logging`]: the log's stream and
//!   colours (only `main` uses it).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cache;
pub mod cache_rules;
pub mod check;
pub mod cli;
pub mod config;
pub mod demo;
pub mod discovery;
pub mod document;
pub mod error;
pub mod generation;
pub mod http;
pub mod key_set;
pub mod listener;
pub mod logging;
pub mod metadata_gateway;
pub mod metrics;
pub mod protected_resource;
pub mod refresher;
pub mod request_metrics;
pub mod routes;
pub mod strict_json;
pub mod tenant;
pub mod upstream;
pub mod upstream_urls;

use std::future::Future;
use std::net::TcpListener;
use std::sync::Arc;

use tokio::sync::mpsc;

pub use cli::Cli;
pub use config::Config;
pub use error::RunError;
pub use generation::Generation;
pub use metadata_gateway::MetadataGateway;

/// The sockets the gateway serves on: the public listener and, with
/// `--admin-listen`, the admin listener (operations only, never documents).
#[derive(Debug)]
pub struct Listeners {
    /// Documents and the public operations routes.
    pub public: TcpListener,
    /// `/documents`, `/refresh`, `/metrics`, `/healthz`, `/readyz`.
    pub admin: Option<TcpListener>,
    /// The demo authorization server's socket, when the caller bound it
    /// (`--demo`); without it, [`run`] binds `config.demo` itself.
    pub demo: Option<TcpListener>,
}

impl From<TcpListener> for Listeners {
    fn from(public: TcpListener) -> Self {
        Self {
            public,
            admin: None,
            demo: None,
        }
    }
}

/// Runs the gateway on `listeners` until `shutdown` resolves, then stops
/// accepting, lets in-flight requests finish (bounded by
/// `config.shutdown_timeout`), stops the refresh scheduler and returns.
///
/// Every message on `reloads` (the binary sends one per SIGHUP) re-reads
/// the `--config` file and swaps in the new configuration if it is good
/// (see [`metadata_gateway`]), and re-reads the listener certificate
/// (`--tls-cert`, see [`listener::tls`]; also checked every
/// `--tls-reload-interval`); the channel closing changes nothing.
///
/// Must be called inside a tokio runtime. Tests call it with
/// `127.0.0.1:0` listeners.
pub async fn run(
    mut config: Config,
    listeners: impl Into<Listeners>,
    shutdown: impl Future<Output = ()>,
    mut reloads: mpsc::UnboundedReceiver<()>,
) -> Result<(), RunError> {
    let listeners = listeners.into();
    let demo = match (config.demo, config.demo_document()) {
        (Some(addr), Some((issuer, path))) => {
            demo::start(addr, listeners.demo, issuer, &path).await?
        }
        _ => None,
    };
    log_documents(&config);
    let documents = std::mem::take(&mut config.documents);
    let gateway = Generation::with_documents(&config, documents)?;
    // Before the first request and the first refresh: a restart during an
    // upstream outage serves the saved documents.
    gateway.restore_saved().await;
    // In the background: files of documents removed while it was stopped.
    tokio::spawn({
        let gateway = gateway.clone();
        async move { gateway.remove_orphaned_state().await }
    });
    let (stop_refreshers, stop) = tokio::sync::watch::channel(());
    // Without a cache (`--no-cache`) there is nothing to refresh ahead.
    let refresh = gateway.cache.mode() == cache::CacheMode::Store;
    let (commands, scheduler) = if refresh {
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(refresher::run(
            gateway.cache.clone(),
            gateway.slots.clone(),
            rx,
            stop.clone(),
        ));
        (Some(tx), Some(task))
    } else {
        (None, None)
    };
    let live = MetadataGateway::new(gateway, config.config_file.clone(), commands);

    let addr = listeners
        .public
        .local_addr()
        .map_err(RunError::io("listener has no address"))?;
    let settings = http::ServerSettings {
        workers: config.workers,
        shutdown_timeout: config.shutdown_timeout,
        listener: config.listener.clone(),
    };
    let server = http::server(live.clone(), listeners.public, settings.clone())?;
    let handle = server.handle();
    let admin = match listeners.admin {
        Some(l) => {
            let admin_addr = l
                .local_addr()
                .map_err(RunError::io("admin listener has no address"))?;
            let server = http::admin::server(live.clone(), l, &settings)?;
            tracing::info!(addr = %admin_addr, "admin listener (documents, refresh, metrics, health)");
            Some(server)
        }
        None => None,
    };
    let admin_handle = admin.as_ref().map(actix_web::dev::Server::handle);
    let admin_task = admin.map(tokio::spawn);
    let scheme = if config.listener.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let certificate_watch = config.listener.tls.clone().map(|tls| {
        live.current().metrics.init_certificate_reloads();
        tokio::spawn(watch_certificate(tls, live.clone()))
    });
    tracing::info!(%addr, scheme, "gateway listening");

    let mut server = std::pin::pin!(server);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut reloads_open = true;
    let result = loop {
        tokio::select! {
            res = &mut server => break res,
            () = &mut shutdown => {
                tracing::info!("shutting down: finishing in-flight requests");
                // The stop command is handled by the server future itself, so
                // both are polled together.
                let ((), res) = tokio::join!(handle.stop(true), &mut server);
                break res;
            }
            msg = reloads.recv(), if reloads_open => match msg {
                // Off the loop, so the servers keep being polled; reloads
                // run one at a time and log their outcome.
                Some(()) => {
                    if let Some(tls) = &config.listener.tls {
                        let (certificate, live) = (tls.certificate.clone(), live.clone());
                        tokio::spawn(async move { reload_certificate(certificate, true, &live).await });
                    }
                    // With TLS and no config file, SIGHUP is a certificate
                    // reload only (no "nothing to reload" warning).
                    if config.config_file.is_some() || config.listener.tls.is_none() {
                        let live = live.clone();
                        tokio::spawn(async move { live.reload().await });
                    }
                }
                None => reloads_open = false,
            },
        }
    };
    if let Some(task) = certificate_watch {
        task.abort();
    }
    if let Some(h) = admin_handle {
        h.stop(true).await;
    }
    if let Some(task) = admin_task {
        let _ = task.await;
    }
    drop(stop_refreshers);
    if let Some(task) = scheduler {
        let _ = task.await;
    }
    // The last refreshes' saves reach the disk before the process exits.
    live.current()
        .cache
        .flush_state(std::time::Duration::from_secs(2))
        .await;
    drop(live);
    if let Some(demo) = demo {
        demo.stop(true).await;
    }
    tracing::info!("gateway stopped");
    result.map_err(RunError::io("HTTP server failed"))
}

/// Re-reads the listener's certificate files every `--tls-reload-interval`
/// and serves a changed pair (see [`listener::tls`]); runs until aborted.
async fn watch_certificate(tls: listener::tls::ListenerTls, live: Arc<MetadataGateway>) {
    let Some(every) = tls.check_every else {
        return;
    };
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        reload_certificate(tls.certificate.clone(), false, &live).await;
    }
}

/// One certificate reload on a blocking thread (file reads, PEM and key
/// parsing), counted in the metrics.
async fn reload_certificate(
    certificate: Arc<listener::tls::CertificateFiles>,
    force: bool,
    live: &MetadataGateway,
) {
    use listener::tls::CertificateReload;
    let outcome = tokio::task::spawn_blocking(move || certificate.reload(force)).await;
    let metrics = &live.current().metrics;
    match outcome {
        Ok(CertificateReload::Reloaded(_)) => metrics.record_certificate_reload(true),
        Ok(CertificateReload::Refused(_)) => metrics.record_certificate_reload(false),
        Ok(CertificateReload::Unchanged) => {}
        Err(e) => tracing::warn!(error = %e, "listener certificate check failed"),
    }
}

/// What is served, logged at start-up: one line per document while there
/// are few, one summary line (and the details at debug level) when there
/// are many, so start-up logging does not grow with 10,000 issuers.
fn log_documents(config: &Config) {
    const DETAILED: usize = 20;
    let docs = &config.documents;
    let many = docs.documents.len() + docs.protected_resources.len() > DETAILED;
    for doc in &docs.documents {
        // A key set without a configured jwks_uri has no upstream URL yet:
        // it is found in its metadata document.
        let follows = doc.key_set.as_ref().and_then(|k| k.follows.as_ref());
        if let (Some(f), false) = (follows, many) {
            tracing::info!(document = %doc.name, routes = ?doc.routes, follows_jwks_uri_of = %f.document, issuer = doc.issuer.as_str(), "serving");
            continue;
        }
        if many {
            tracing::debug!(document = %doc.name, routes = ?doc.routes, upstream = ?doc.upstream_urls, issuer = doc.issuer.as_str(), "serving");
        } else {
            tracing::info!(document = %doc.name, routes = ?doc.routes, upstream = ?doc.upstream_urls, issuer = doc.issuer.as_str(), "serving");
        }
    }
    for doc in &docs.protected_resources {
        if many {
            tracing::debug!(document = %doc.name, routes = ?doc.routes, "serving");
        } else {
            tracing::info!(document = %doc.name, routes = ?doc.routes, "serving");
        }
    }
    for t in &docs.templates {
        let routes: Vec<String> = t.routes.iter().map(|r| r.as_template()).collect();
        let upstream: Vec<String> = t.upstream_urls.iter().map(|u| u.as_template()).collect();
        tracing::info!(document = %t.name, routes = ?routes, upstream = ?upstream, issuer = %t.issuer, max_tenants = t.max_tenants, "serving issuer template");
    }
    if many {
        tracing::info!(
            documents = docs.documents.len(),
            protected_resources = docs.protected_resources.len(),
            templates = docs.templates.len(),
            "serving (per-document lines at debug level)"
        );
    }
}
