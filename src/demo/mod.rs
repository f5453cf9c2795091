//! The built-in demo authorization server (`--demo`): a tiny HTTP server that
//! publishes a realistic RFC 8414 document and the key set (RFC 7517) its
//! `jwks_uri` names, so a new user sees the gateway work with one command
//! and no real authorization server (`--demo --jwks-route /jwks` serves
//! the key set too). If its address
//! is already taken (a real server may be running there), the gateway says
//! so, names what answers there ([`probe`]) and uses it.

use std::net::SocketAddr;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpResponse, HttpServer};

use crate::error::RunError;

mod probe;

/// How long the start-up log waits to learn what answers at a taken
/// demo address.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Where the demo publishes its key set (the document's `jwks_uri`).
pub const JWKS_PATH: &str = "/oauth/jwks";

/// The demo key set: one public RSA signing key, fixed bytes. Its private
/// half was never kept: the demo signs nothing, it only gives
/// `--jwks-route` a real RFC 7517 set to cache.
pub const JWKS: &str = r#"{"keys":[{"kty":"RSA","use":"sig","alg":"RS256","kid":"demo-2026-12","n":"8wejrEYwaISir1aBTC0nfooaT3us5KRngTs2bliUIFpSA1DqPmtxF02nzv-pdWEtL7lXrFi3NmJhbu_00OR1N1rdzsyWLnSgjeRVM2BSFDJX4zrtU3v2NTS8XiWl8BSVAbVxFU3XNJsRoWAhCdkMAsQNGqZQ5O4KvOW2aVrxSYXJn9F354u3IeZ7A_1N5JtNsEek7z_U1upBOYkWCWGO5Ru57WNpKZEoM3gsLik5mu-nbIehRtNrSreYURM2MJQuvOEZZ2Vzh0kMHvf7OMvS3hVlpfIE2obGzvw6_QjC1yse2iWl7NwMOCW-SoLwCcxEX2hFGLpn34UqEBi5CD9ylw","e":"AQAB"}]}"#;

/// The demo document: members in the order real servers write them,
/// `issuer` first (a `serde_json::Value` would sort them).
#[derive(serde::Serialize)]
struct DemoDocument<'a> {
    issuer: &'a str,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
    registration_endpoint: String,
    revocation_endpoint: String,
    scopes_supported: [&'a str; 4],
    response_types_supported: [&'a str; 1],
    response_modes_supported: [&'a str; 1],
    grant_types_supported: [&'a str; 2],
    token_endpoint_auth_methods_supported: [&'a str; 3],
    code_challenge_methods_supported: [&'a str; 1],
}

/// The demo document for `issuer`, compact JSON like real servers send.
pub fn document(issuer: &str) -> Vec<u8> {
    let base = issuer.trim_end_matches('/');
    let doc = DemoDocument {
        issuer,
        authorization_endpoint: format!("{base}/oauth/authorize"),
        token_endpoint: format!("{base}/oauth/token"),
        jwks_uri: format!("{base}{JWKS_PATH}"),
        registration_endpoint: format!("{base}/oauth/register"),
        revocation_endpoint: format!("{base}/oauth/revoke"),
        scopes_supported: ["openid", "profile", "mcp:tools", "mcp:resources"],
        response_types_supported: ["code"],
        response_modes_supported: ["query"],
        grant_types_supported: ["authorization_code", "refresh_token"],
        token_endpoint_auth_methods_supported: [
            "client_secret_basic",
            "client_secret_post",
            "none",
        ],
        code_challenge_methods_supported: ["S256"],
    };
    serde_json::to_vec(&doc).unwrap_or_default()
}

/// A GET route answering `body` as JSON.
fn json_route(body: web::Bytes) -> actix_web::Route {
    web::get().to(move || {
        let body = body.clone();
        async move {
            HttpResponse::Ok()
                .content_type("application/json")
                .body(body)
        }
    })
}

/// Starts the demo server on `listener` (bound by the caller, so a
/// `--demo-listen` port 0 is known before the configuration is built) or,
/// without one, on `addr`, publishing the document for `issuer` at `path`
/// (where the gateway fetches it first). `Ok(None)` when `addr` is in use:
/// the gateway then uses whatever answers there, and the log says what
/// that is.
pub async fn start(
    addr: SocketAddr,
    listener: Option<std::net::TcpListener>,
    issuer: &str,
    path: &str,
) -> Result<Option<ServerHandle>, RunError> {
    let listener = match listener.map_or_else(|| std::net::TcpListener::bind(addr), Ok) {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            let probe_path = path.to_string();
            let answer = tokio::task::spawn_blocking(move || {
                probe::describe(addr, &probe_path, PROBE_TIMEOUT)
            })
            .await
            .unwrap_or_else(|e| format!("could not be asked ({e})"));
            tracing::warn!(
                %addr,
                "demo authorization server not started: {addr} is in use; the gateway uses what listens there as its upstream, and it {answer}"
            );
            return Ok(None);
        }
        Err(e) => {
            return Err(RunError::io(format!(
                "cannot bind the demo server to {addr}"
            ))(e))
        }
    };
    let addr = listener
        .local_addr()
        .map_err(RunError::io("demo listener has no address"))?;
    let body = web::Bytes::from(document(issuer));
    let route = path.to_string();
    let server = HttpServer::new(move || {
        App::new().route(&route, json_route(body.clone())).route(
            JWKS_PATH,
            json_route(web::Bytes::from_static(JWKS.as_bytes())),
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
