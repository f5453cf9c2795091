//! The built-in demo authorization server (`--demo`): a tiny HTTP server that
//! publishes a realistic RFC 8414 document, so a new user sees the gateway
//! work with one command and no real authorization server. If its address
//! is already taken (a real server may be running there), the gateway says
//! so and uses whatever answers there.

use std::net::SocketAddr;

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpResponse, HttpServer};

use crate::error::RunError;

/// The demo document for `issuer`, compact JSON like real servers send.
pub fn document(issuer: &str) -> Vec<u8> {
    let base = issuer.trim_end_matches('/');
    let doc = serde_json::json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{base}/oauth/authorize"),
        "token_endpoint": format!("{base}/oauth/token"),
        "registration_endpoint": format!("{base}/oauth/register"),
        "revocation_endpoint": format!("{base}/oauth/revoke"),
        "scopes_supported": ["openid", "profile", "mcp:tools", "mcp:resources"],
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "code_challenge_methods_supported": ["S256"],
    });
    serde_json::to_vec(&doc).unwrap_or_default()
}

/// Starts the demo server on `addr`, publishing the document for `issuer`
/// at `path` (where the gateway fetches it first); `Ok(None)` when the
/// address is in use.
pub fn start(addr: SocketAddr, issuer: &str, path: &str) -> Result<Option<ServerHandle>, RunError> {
    let listener = match std::net::TcpListener::bind(addr) {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            tracing::warn!(%addr, "demo authorization server not started: the address is in use; using whatever serves there as the upstream");
            return Ok(None);
        }
        Err(e) => {
            return Err(RunError::io(format!(
                "cannot bind the demo server to {addr}"
            ))(e))
        }
    };
    let body = web::Bytes::from(document(issuer));
    let route = path.to_string();
    let server = HttpServer::new(move || {
        let body = body.clone();
        App::new().route(
            &route,
            web::get().to(move || {
                let body = body.clone();
                async move {
                    HttpResponse::Ok()
                        .content_type("application/json")
                        .body(body)
                }
            }),
        )
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(1)
    .listen(listener)
    .map_err(RunError::io("cannot start the demo server"))?
    .run();
    let handle = server.handle();
    tokio::spawn(server);
    tracing::info!(url = %format!("http://{addr}{path}"), "demo authorization server started");
    Ok(Some(handle))
}
