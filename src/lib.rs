//! oauth-metadata-gateway: a caching gateway for OAuth authorization-server
//! metadata (RFC 8414) in front of MCP servers.
//!
//! Module map (see ARCHITECTURE.md for the invariants):
//! - [`config`]: command line and environment, validated into [`Config`];
//!   [`config_file`]: the TOML file of several documents (`--config`).
//! - [`discovery`]: well-known routes and upstream URLs (RFC 8414 §3,
//!   RFC 9728 §3, OpenID Connect Discovery §4), computed from configuration.
//! - [`protected_resource`]: RFC 9728 metadata generated from configuration.
//! - [`check`]: the `check` subcommand (is an issuer's metadata usable?).
//! - [`gateway`]: the assembled service state shared by workers.
//! - [`cache`]: moka-backed document cache, coalescing and back-off.
//! - [`freshness`]: fresh / stale / expired and refresh-ahead rules.
//! - [`outcome`]: the cache-outcome enum behind `Cache-Status`, metrics, logs.
//! - [`refresher`]: background refresh-ahead and retry loop.
//! - [`upstream`]: awc fetches on a dedicated thread; [`tls`]: rustls setup.
//! - [`document`]: RFC 8414 validation of fetched bytes.
//! - [`http`]: routes, CORS, conditional requests, error bodies, ops.
//! - [`listener`]: listener TLS and client-connection limits.
//! - [`metrics`]: Prometheus registry.
//! - [`demo`]: the built-in demo authorization server.
//! - [`error`]: typed errors at the boundaries.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cache;
pub mod check;
pub mod config;
pub mod config_file;
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
pub mod tls;
pub mod upstream;

use std::future::Future;
use std::net::TcpListener;

pub use config::{Cli, Config};
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
    let refreshers: Vec<_> = gateway
        .slots
        .iter()
        .filter(|_| refresh)
        .map(|slot| {
            tokio::spawn(refresher::run(
                gateway.cache.clone(),
                slot.clone(),
                stop.clone(),
            ))
        })
        .collect();

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
    for doc in &config.documents {
        tracing::info!(document = %doc.name, routes = ?doc.routes, upstream = ?doc.upstream_urls, issuer = doc.issuer.as_str(), "serving");
    }
    for doc in &config.protected_resources {
        tracing::info!(document = %doc.name, routes = ?doc.routes, "serving");
    }
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
    for task in refreshers {
        let _ = task.await;
    }
    if let Some(demo) = demo {
        demo.stop(true).await;
    }
    tracing::info!("gateway stopped");
    result.map_err(RunError::io("HTTP server failed"))
}
