//! oauth-metadata-gateway: a caching gateway for OAuth authorization-server
//! metadata (RFC 8414) in front of MCP servers.
//!
//! Module map, bottom to top (see ARCHITECTURE.md for the invariants):
//! - pure rules: [`tenant`] (`{tenant}` templates and the tenant grammar),
//!   [`discovery`] (well-known routes and upstream URLs, RFC 8414 §3,
//!   RFC 9728 §3, OpenID Connect Discovery §4), [`document`] (RFC 8414
//!   validation), [`protected_resource`] (RFC 9728 metadata),
//!   [`freshness`], [`outcome`], [`error`];
//! - [`config`]: the typed configuration (and the TOML file) everything
//!   else reads; [`listener`]: listener TLS and client-connection limits;
//! - [`routes`]: the route table built once from the configuration;
//! - [`upstream`]: awc fetches on a dedicated thread, bounded per host;
//!   [`tls`]: rustls setup; [`metrics`]: Prometheus registry;
//! - [`cache`]: moka-backed caches of configured documents and template
//!   tenants, coalescing and back-off; [`refresher`]: the refresh scheduler;
//! - [`gateway`]: the assembled service state shared by workers;
//! - [`http`]: the HTTP front; [`demo`]: the built-in demo authorization server;
//! - [`check`]: the `check` subcommand; [`cli`]: the command line, top of
//!   the stack (only `main` uses it).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cache;
pub mod check;
pub mod cli;
pub mod config;
pub mod demo;
pub mod discovery;
pub mod document;
pub mod error;
pub mod freshness;
pub mod gateway;
pub mod http;
pub mod listener;
pub mod metrics;
pub mod outcome;
pub mod protected_resource;
pub mod refresher;
pub mod routes;
pub mod tenant;
pub mod tls;
pub mod upstream;

use std::future::Future;
use std::net::TcpListener;

pub use cli::Cli;
pub use config::Config;
pub use error::RunError;
pub use gateway::Gateway;

/// Runs the gateway on `listener` until `shutdown` resolves, then stops
/// accepting, lets in-flight requests finish (bounded by
/// `config.shutdown_timeout`), stops the refreshers and returns.
///
/// Must be called inside a tokio runtime. Tests call it with a
/// `127.0.0.1:0` listener.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let demo = match (config.demo, config.demo_document()) {
        (Some(addr), Some((issuer, path))) => demo::start(addr, issuer, &path)?,
        _ => None,
    };
    let gateway = Gateway::new(&config)?;
    let (stop_refreshers, stop) = tokio::sync::watch::channel(());
    // Without a cache (`--no-cache`) there is nothing to refresh ahead.
    let refresh = gateway.cache.mode() == cache::CacheMode::Store;
    let scheduler = refresh.then(|| {
        tokio::spawn(refresher::run(
            gateway.cache.clone(),
            gateway.slots.iter().cloned().collect(),
            stop.clone(),
        ))
    });

    let addr = listener
        .local_addr()
        .map_err(RunError::io("listener has no address"))?;
    let server = http::server(
        gateway.clone(),
        listener,
        http::ServerSettings {
            workers: config.workers,
            shutdown_timeout: config.shutdown_timeout,
            listener: config.listener.clone(),
        },
    )?;
    let handle = server.handle();
    log_documents(&config);
    let scheme = if config.listener.tls.is_some() {
        "https"
    } else {
        "http"
    };
    tracing::info!(%addr, scheme, "gateway listening");

    let mut server = std::pin::pin!(server);
    let result = tokio::select! {
        res = &mut server => res,
        () = shutdown => {
            tracing::info!("shutting down: finishing in-flight requests");
            // The stop command is handled by the server future itself, so
            // both are polled together.
            let ((), res) = tokio::join!(handle.stop(true), &mut server);
            res
        }
    };
    drop(stop_refreshers);
    if let Some(task) = scheduler {
        let _ = task.await;
    }
    if let Some(demo) = demo {
        demo.stop(true).await;
    }
    tracing::info!("gateway stopped");
    result.map_err(RunError::io("HTTP server failed"))
}

/// What is served, logged at start-up: one line per document while there
/// are few, one summary line (and the details at debug level) when there
/// are many, so start-up logging does not grow with 10,000 issuers.
fn log_documents(config: &Config) {
    const DETAILED: usize = 20;
    let docs = &config.documents;
    let many = docs.documents.len() + docs.protected_resources.len() > DETAILED;
    for doc in &docs.documents {
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
