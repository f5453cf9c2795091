//! In-process benchmarks of one metadata request, cached versus uncached.
//!
//! - `cached/lookup+respond`: the handler's work for a cache hit, from "a
//!   request for the document" to "status, headers and body bytes ready":
//!   `MetadataCache::lookup`, the lookup counter, `metadata::respond`.
//! - `uncached/lookup+respond`: the same calls on a gateway started with
//!   `--no-cache`, so each request is an HTTP fetch over loopback from a local
//!   upstream (through the fetcher thread and its pooled keep-alive
//!   connection), RFC 8414 validation, the ETag hash, then the response.
//! - `cached/app`: the whole actix-web service stack of one worker (routing,
//!   HTTP metrics middleware, CORS headers, handler) for a cache hit, minus
//!   only socket I/O and HTTP/1 encoding.
//!
//! Each is run for the real ~600 B document and a 64 KiB one. Targets and
//! recorded results: benches/README.md. Everything listens on 127.0.0.1 with
//! an ephemeral port and stops when the benchmark ends.

use std::hint::black_box;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::dev::ServerHandle;
use actix_web::http::StatusCode;
use actix_web::{test, web, App, HttpResponse, HttpServer};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use oauth_metadata_gateway::cache_rules::outcome::CacheOutcome;
use oauth_metadata_gateway::config::AS_METADATA_PATH;
use oauth_metadata_gateway::http::metadata;
use oauth_metadata_gateway::{Cli, Generation};
use tokio::runtime::Runtime;

/// The issuer of both documents; the upstream's own address differs, which
/// `--issuer` allows.
const ISSUER: &str = "http://localhost:7788";

/// The reference authorization server's document, byte for byte (642 B).
const REAL_DOCUMENT: &str = r#"{"issuer":"http://localhost:7788","authorization_endpoint":"http://localhost:7788/oauth/authorize","token_endpoint":"http://localhost:7788/oauth/token","registration_endpoint":"http://localhost:7788/oauth/register","scopes_supported":["user:read","entries:read","entries:write","tags:read","tags:write"],"response_types_supported":["code"],"response_modes_supported":["query"],"grant_types_supported":["authorization_code","refresh_token"],"token_endpoint_auth_methods_supported":["client_secret_basic","client_secret_post","none"],"revocation_endpoint":"http://localhost:7788/oauth/token","code_challenge_methods_supported":["plain","S256"]}"#;

/// A valid document of exactly 64 KiB: the real one with a long
/// `scopes_supported` list, padded with an extension member.
fn large_document() -> String {
    const SIZE: usize = 64 * 1024;
    let head = REAL_DOCUMENT.trim_end_matches('}');
    let mut doc = String::with_capacity(SIZE);
    doc.push_str(head);
    doc.push_str(r#","x_tenant_scopes":["#);
    let mut i = 0;
    while doc.len() < SIZE - 64 {
        if i > 0 {
            doc.push(',');
        }
        doc.push_str(&format!("\"tenant:{i:05}:read\""));
        i += 1;
    }
    doc.push_str(r#"],"x_pad":""#);
    let pad = SIZE - doc.len() - 2;
    doc.push_str(&"x".repeat(pad));
    doc.push_str("\"}");
    assert_eq!(doc.len(), SIZE);
    doc
}

/// A local authorization server publishing `documents` at
/// `/.well-known/oauth-authorization-server/<index>` (RFC 8414 §3.1 path
/// insertion for an upstream `<base>/<index>`), one worker thread.
fn start_upstream(rt: &Runtime, documents: Vec<web::Bytes>) -> (String, ServerHandle) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the benchmark upstream");
    let addr = listener.local_addr().expect("upstream address");
    let docs = Arc::new(documents);
    let server = rt.block_on(async move {
        let server = HttpServer::new(move || {
            let docs = docs.clone();
            App::new().route(
                &format!("{AS_METADATA_PATH}/{{index}}"),
                web::get().to(move |index: web::Path<usize>| {
                    let body = docs.get(*index).cloned();
                    async move {
                        match body {
                            Some(b) => HttpResponse::Ok().content_type("application/json").body(b),
                            None => HttpResponse::NotFound().finish(),
                        }
                    }
                }),
            )
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(1)
        .listen(listener)
        .expect("listen")
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        handle
    });
    (format!("http://{addr}"), server)
}

/// A gateway (not serving HTTP: the benchmark calls it directly).
fn gateway(upstream: &str, index: usize, extra: &[&str]) -> Arc<Generation> {
    let base = format!("{upstream}/{index}");
    let mut args = vec![
        "oauth-metadata-gateway",
        "--upstream",
        &base,
        "--issuer",
        ISSUER,
        "--ttl",
        "1h",
    ];
    args.extend_from_slice(extra);
    let config = Cli::config_from_args(args).expect("valid benchmark arguments");
    Generation::new(&config).expect("gateway starts")
}

/// One handler call: lookup, lookup counter, response. Returns the response
/// so its construction (and drop) is measured.
async fn serve(gw: &Generation, req: &actix_web::HttpRequest) -> HttpResponse {
    let slot = &gw.slots[0];
    let lookup = gw.cache.lookup(slot).await;
    slot.metrics().record_lookup(lookup.outcome);
    metadata::respond(req, &lookup)
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let sizes = [
        ("642B", web::Bytes::from_static(REAL_DOCUMENT.as_bytes())),
        ("64KiB", web::Bytes::from(large_document())),
    ];
    let (upstream, upstream_handle) =
        start_upstream(&rt, sizes.iter().map(|(_, b)| b.clone()).collect());
    let req = test::TestRequest::get()
        .uri(AS_METADATA_PATH)
        .to_http_request();

    let mut group = c.benchmark_group("cached");
    for (index, (label, body)) in sizes.iter().enumerate() {
        let gw = gateway(&upstream, index, &[]);
        // Warm the cache: the first lookup is the miss that fetches.
        let first = rt.block_on(gw.cache.lookup(&gw.slots[0]));
        assert_eq!(first.outcome, CacheOutcome::Miss, "warm-up fetch failed");
        let res = rt.block_on(serve(&gw, &req));
        assert_eq!(res.status(), StatusCode::OK);
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(BenchmarkId::new("lookup+respond", label), &gw, |b, gw| {
            b.to_async(&rt)
                .iter(|| async { black_box(serve(gw, &req).await) })
        });

        // The whole service stack of one worker; the request is built in
        // the loop, as the HTTP/1 decoder builds one per request.
        let app = rt.block_on(test::init_service(oauth_metadata_gateway::http::app(
            oauth_metadata_gateway::MetadataGateway::fixed(gw.clone()),
        )));
        let res = rt.block_on(test::call_service(
            &app,
            test::TestRequest::get().uri(AS_METADATA_PATH).to_request(),
        ));
        assert_eq!(res.status(), StatusCode::OK);
        assert!(res.headers().contains_key("access-control-allow-origin"));
        group.bench_function(BenchmarkId::new("app", label), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let started = Instant::now();
                    for _ in 0..iters {
                        let request = test::TestRequest::get().uri(AS_METADATA_PATH).to_request();
                        let res = test::call_service(&app, request).await;
                        black_box(res);
                    }
                    started.elapsed()
                })
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("uncached");
    group.measurement_time(Duration::from_secs(5));
    for (index, (label, body)) in sizes.iter().enumerate() {
        let gw = gateway(&upstream, index, &["--no-cache"]);
        let res = rt.block_on(serve(&gw, &req));
        assert_eq!(res.status(), StatusCode::OK, "no-cache fetch failed");
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(BenchmarkId::new("lookup+respond", label), &gw, |b, gw| {
            b.to_async(&rt)
                .iter(|| async { black_box(serve(gw, &req).await) })
        });
    }
    group.finish();

    rt.block_on(upstream_handle.stop(false));
}

criterion_group!(lookup, benches);
criterion_main!(lookup);
