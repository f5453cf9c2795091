//! Full discovery: path-aware issuers (RFC 8414 §3.1), the OpenID Connect
//! fallback and routes, protected resource metadata (RFC 9728), several
//! documents from a config file, and no open proxy: unknown suffixes,
//! traversal and encoded slashes are 404s that never reach the upstream.

mod support;

use std::time::Duration;

use support::*;

const AS_T1: &str = "/.well-known/oauth-authorization-server/tenant1";
const OIDC_INSERTED_T1: &str = "/.well-known/openid-configuration/tenant1";
const OIDC_APPENDED_T1: &str = "/tenant1/.well-known/openid-configuration";

/// An upstream that answers 404 everywhere except `path`, where it
/// publishes the document of issuer `<upstream>/tenant1`.
async fn tenant_upstream(path: &str) -> (Upstream, String, String) {
    let upstream = Upstream::start(Behaviour::status(404)).await;
    let issuer = format!("{}/tenant1", upstream.base_url);
    let body = document(&issuer);
    upstream.set_path(path, Behaviour::json(body.clone()));
    (upstream, issuer, body)
}

async fn metrics(gw: &TestGateway) -> String {
    String::from_utf8(get(&gw.url("/metrics")).await.body).unwrap()
}

/// The value of one exact series line in a metrics scrape.
fn series(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

#[actix_web::test]
async fn path_issuer_is_served_at_the_rfc8414_path_only() {
    let (upstream, issuer, body) = tenant_upstream(AS_T1).await;
    let gw = TestGateway::start(&["--issuer", &issuer, "--upstream", &issuer]).await;
    let r = get(&gw.url(AS_T1)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, body.as_bytes());
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert!(r.header("etag").is_some());
    // Fetched from the upstream's own path-inserted URL, and only there.
    assert_eq!(upstream.paths(), vec![AS_T1.to_string()]);
    // Not configured: the root document and the OpenID routes.
    for path in [
        "/.well-known/oauth-authorization-server",
        OIDC_INSERTED_T1,
        OIDC_APPENDED_T1,
        "/.well-known/oauth-protected-resource",
    ] {
        let r = get(&gw.url(path)).await;
        assert_eq!(r.status, 404, "{path}");
        assert_eq!(r.header("access-control-allow-origin"), Some("*"), "{path}");
    }
    // One lookup under the configured name: a miss, or a hit when the
    // start-up refresh won the race.
    let m = metrics(&gw).await;
    let lookups = |result: &str| {
        series(
            &m,
            &format!(
                r#"metadata_gateway_lookups_total{{document="oauth-authorization-server/tenant1",kind="metadata",result="{result}"}}"#
            ),
        )
        .unwrap_or_else(|| panic!("no {result} series: {m}"))
    };
    assert_eq!(lookups("miss") + lookups("hit"), 1.0, "{m}");
}

#[actix_web::test]
async fn unknown_suffixes_and_traversal_never_reach_the_upstream() {
    let (upstream, issuer, body) = tenant_upstream(AS_T1).await;
    let gw = TestGateway::start(&["--upstream", &issuer]).await;
    assert_eq!(get(&gw.url(AS_T1)).await.body, body.as_bytes());
    // Let the warm-up settle: one fetch in all, then nothing for 300 s.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = upstream.requests();
    assert_eq!(before, 1);

    // Sent byte for byte (no client-side normalisation).
    let rejected = [
        "/.well-known/oauth-authorization-server/tenant2",
        "/.well-known/oauth-authorization-server/tenant1/extra",
        "/.well-known/oauth-authorization-server/tenant1/",
        "/.well-known/oauth-authorization-server/TENANT1",
        "/.well-known/oauth-authorization-server/tenant10",
        "/.well-known/oauth-authorization-server/tenant1/../tenant2",
        "/.well-known/oauth-authorization-server/../oauth-authorization-server/tenant1",
        "/.well-known/oauth-authorization-server/tenant1/%2e%2e/tenant2",
        "/.well-known/oauth-authorization-server/%2e%2e/%2e%2e/etc/passwd",
        "/.well-known/oauth-authorization-server%2Ftenant1",
        "/.well-known/oauth-authorization-server%2ftenant1",
        "/.well-known/oauth-authorization-server/tenant1%2F..%2Ftenant2",
        "/.well-known/oauth-authorization-server/tenant1%2Fx",
        "/.well-known//oauth-authorization-server/tenant1",
        "/.well-known/oauth-authorization-server//tenant1",
        "//.well-known/oauth-authorization-server/tenant1",
        "/.well-known/./oauth-authorization-server/tenant1",
        "/.well-known/oauth-authorization-server/tenant1/.",
        "/.well-known/oauth-authorization-server/tenant1%00",
        "/.well-known/oauth-authorization-server/http:%2F%2Fevil.example",
        "/tenant1/.well-known/oauth-authorization-server",
    ];
    for path in rejected {
        let (status, text) = raw_get(gw.addr, path).await;
        assert_eq!(status, 404, "{path}: {text}");
        assert!(
            text.to_ascii_lowercase()
                .contains("access-control-allow-origin: *"),
            "{path}: {text}"
        );
        assert!(text.contains(r#""error":"not_found""#), "{path}: {text}");
    }
    // A flood of random suffixes: each a cheap 404, nothing cached.
    for i in 0..100 {
        let path = format!("/.well-known/oauth-authorization-server/tenant1-{i:x}");
        assert_eq!(get(&gw.url(&path)).await.status, 404);
    }
    // A query string is not part of the route and is never forwarded.
    let (status, _) = raw_get(gw.addr, &format!("{AS_T1}?x=/../../admin")).await;
    assert_eq!(status, 200);

    assert_eq!(
        upstream.requests(),
        before,
        "no request reached the upstream"
    );
    assert_eq!(upstream.paths(), vec![AS_T1.to_string()]);
    // Metrics labels stay bounded: only configured names, never a path.
    let m = metrics(&gw).await;
    assert!(!m.contains("tenant2") && !m.contains("tenant1-"), "{m}");
    for line in m.lines().filter(|l| l.contains("document=\"")) {
        assert!(
            line.contains(r#"document="oauth-authorization-server/tenant1""#),
            "{line}"
        );
    }
}

#[actix_web::test]
async fn openid_only_upstream_is_fetched_in_client_order() {
    let (upstream, issuer, body) = tenant_upstream(OIDC_APPENDED_T1).await;
    let gw = TestGateway::start(&["--upstream", &issuer]).await;
    let r = get(&gw.url(AS_T1)).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.body, body.as_bytes());
    // RFC 8414 path, then RFC 8414 §5 inserted OpenID path, then OpenID
    // Connect Discovery §4 appended path: a 404 moves on.
    assert_eq!(
        upstream.paths(),
        vec![
            AS_T1.to_string(),
            OIDC_INSERTED_T1.to_string(),
            OIDC_APPENDED_T1.to_string()
        ]
    );
    // The three requests were one fetch.
    let m = metrics(&gw).await;
    let doc = r#"document="oauth-authorization-server/tenant1",kind="metadata""#;
    assert_eq!(
        series(
            &m,
            &format!(r#"metadata_gateway_upstream_fetches_total{{{doc},outcome="ok"}}"#)
        ),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        series(
            &m,
            &format!(r#"metadata_gateway_upstream_fetches_total{{{doc},outcome="http_status"}}"#)
        ),
        Some(0.0),
        "{m}"
    );
}

#[actix_web::test]
async fn openid_configuration_routes_serve_the_openid_document() {
    let (upstream, issuer, body) = tenant_upstream(OIDC_APPENDED_T1).await;
    let gw = TestGateway::start(&["--upstream", &issuer, "--openid-configuration"]).await;
    for path in [AS_T1, OIDC_INSERTED_T1, OIDC_APPENDED_T1] {
        let r = get(&gw.url(path)).await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.body, body.as_bytes(), "{path}");
        assert_eq!(r.header("access-control-allow-origin"), Some("*"), "{path}");
        let pre = send(
            "OPTIONS",
            &gw.url(path),
            &[
                ("origin", "https://app.example"),
                ("access-control-request-method", "GET"),
                ("access-control-request-headers", "mcp-protocol-version"),
            ],
        )
        .await;
        assert_eq!(pre.status, 204, "{path}");
        assert_eq!(
            pre.header("access-control-allow-origin"),
            Some("*"),
            "{path}"
        );
        let post = send("POST", &gw.url(path), &[]).await;
        assert_eq!(post.status, 405, "{path}");
        assert_eq!(
            post.header("access-control-allow-origin"),
            Some("*"),
            "{path}"
        );
    }
    // Every request went to one of the configured upstream URLs.
    for p in upstream.paths() {
        assert!(
            [AS_T1, OIDC_INSERTED_T1, OIDC_APPENDED_T1].contains(&p.as_str()),
            "{p}"
        );
    }
}

#[actix_web::test]
async fn a_5xx_ends_the_fetch_without_trying_the_openid_locations() {
    let (upstream, issuer, _) = tenant_upstream(OIDC_APPENDED_T1).await;
    upstream.set_path(AS_T1, Behaviour::status(503));
    let gw = TestGateway::start(&[
        "--upstream",
        &issuer,
        "--retry-backoff-min",
        "10s",
        "--retry-backoff-max",
        "10s",
    ])
    .await;
    let r = get(&gw.url(AS_T1)).await;
    assert_eq!(r.status, 502);
    assert!(
        r.cache_status().contains("fwd-status=503"),
        "{}",
        r.cache_status()
    );
    assert_eq!(upstream.paths(), vec![AS_T1.to_string()]);
}

#[actix_web::test]
async fn an_issuer_mismatch_at_the_first_location_is_not_papered_over() {
    let (upstream, issuer, _) = tenant_upstream(OIDC_APPENDED_T1).await;
    upstream.set_path(AS_T1, Behaviour::json(document("https://evil.example")));
    let gw = TestGateway::start(&[
        "--upstream",
        &issuer,
        "--retry-backoff-min",
        "10s",
        "--retry-backoff-max",
        "10s",
    ])
    .await;
    let r = get(&gw.url(AS_T1)).await;
    assert_eq!(r.status, 502);
    assert!(
        String::from_utf8_lossy(&r.body).contains("RFC 8414 §3.3"),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(upstream.paths(), vec![AS_T1.to_string()]);
}

#[actix_web::test]
async fn protected_resource_metadata_is_served_from_configuration() {
    let upstream = Upstream::start(Behaviour::status(500)).await;
    upstream.set(Behaviour::json(document(&upstream.base_url)));
    let resource = "https://mcp.example.com/mcp";
    let gw = TestGateway::in_front_of(
        &upstream,
        &[
            "--resource",
            resource,
            "--resource-scopes",
            "mcp:tools,offline_access",
            "--resource-bearer-methods",
            "header",
            "--ttl",
            "120s",
        ],
    )
    .await;
    let at_path = get(&gw.url("/.well-known/oauth-protected-resource/mcp")).await;
    let at_root = get(&gw.url("/.well-known/oauth-protected-resource")).await;
    for r in [&at_path, &at_root] {
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.header("cache-control"), Some("public, max-age=120"));
        assert_eq!(r.header("access-control-allow-origin"), Some("*"));
        // Generated by the gateway, not served from a cache (RFC 9211 §2).
        assert_eq!(r.header("cache-status"), None);
        assert_eq!(
            r.json(),
            serde_json::json!({
                "resource": resource,
                "authorization_servers": [upstream.base_url],
                "scopes_supported": ["mcp:tools", "offline_access"],
                "bearer_methods_supported": ["header"],
            })
        );
    }
    assert_eq!(at_path.body, at_root.body);
    let etag = at_path.header("etag").unwrap().to_string();
    assert!(etag.starts_with('"'));
    let nm = send(
        "GET",
        &gw.url("/.well-known/oauth-protected-resource/mcp"),
        &[("if-none-match", &etag)],
    )
    .await;
    assert_eq!(nm.status, 304);
    assert_eq!(nm.header("access-control-allow-origin"), Some("*"));
    let head = send(
        "HEAD",
        &gw.url("/.well-known/oauth-protected-resource/mcp"),
        &[],
    )
    .await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(head.header("etag"), Some(etag.as_str()));
    let post = send(
        "POST",
        &gw.url("/.well-known/oauth-protected-resource/mcp"),
        &[],
    )
    .await;
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("GET, HEAD, OPTIONS"));
    for path in [
        "/.well-known/oauth-protected-resource/mcp/",
        "/.well-known/oauth-protected-resource/other",
        "/.well-known/oauth-protected-resource/mcp/../mcp",
    ] {
        let (status, _) = raw_get(gw.addr, path).await;
        assert_eq!(status, 404, "{path}");
    }
    // Nothing of this went upstream: only the authorization server's document.
    upstream.wait_for_requests(1, Duration::from_secs(5)).await;
    assert!(upstream.paths().iter().all(|p| p == AS_PATH));
    let m = metrics(&gw).await;
    let doc = r#"document="oauth-protected-resource/mcp",kind="metadata""#;
    assert_eq!(
        series(
            &m,
            &format!(r#"metadata_gateway_lookups_total{{{doc},result="hit"}}"#)
        ),
        Some(4.0),
        "GET x2, conditional GET and HEAD are hits: {m}"
    );
    assert_eq!(
        series(&m, &format!("metadata_gateway_document_cached{{{doc}}}")),
        Some(1.0)
    );
    assert!(
        !m.contains(&format!("upstream_fetches_total{{{doc}")),
        "{m}"
    );
    // Ready once the authorization server's document is cached.
    poll_until(&gw.url("/readyz"), Duration::from_secs(5), |r| {
        r.status == 200
    })
    .await;
}

/// Writes `text` to a fresh file under the test target's temporary directory.
fn config_file(name: &str, text: &str) -> String {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("discovery");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}-{}.toml", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

#[actix_web::test]
async fn a_config_file_serves_several_upstreams() {
    let (tenant, tenant_issuer, tenant_body) = tenant_upstream(AS_T1).await;
    let root = Upstream::start(Behaviour::status(404)).await;
    let root_body = document(&root.base_url);
    root.set_path(AS_PATH, Behaviour::json(root_body.clone()));
    let path = config_file(
        "several",
        &format!(
            r#"
[[authorization_server]]
issuer = "https://auth.example.com/tenant1"
upstream = "{tenant_issuer}"
ttl = "60s"

[[authorization_server]]
issuer = "{root}"

[[protected_resource]]
resource = "https://mcp.example.com/mcp"
resource_name = "Test MCP server"
"#,
            root = root.base_url
        ),
    );
    // The tenant upstream declares its own address as issuer: expect a
    // mismatch for that document, proving the configured issuer is checked.
    let gw = TestGateway::start(&["--config", &path, "--ttl", "300s"]).await;
    let r = get(&gw.url(AS_T1)).await;
    assert_eq!(r.status, 502, "{}", String::from_utf8_lossy(&r.body));
    assert!(String::from_utf8_lossy(&r.body).contains("https://auth.example.com/tenant1"));
    drop(gw);

    let path = config_file(
        "several-ok",
        &format!(
            r#"
[[authorization_server]]
issuer = "{tenant_issuer}"
ttl = "60s"

[[authorization_server]]
issuer = "{root}"

[[protected_resource]]
resource = "https://mcp.example.com/mcp"
resource_name = "Test MCP server"
"#,
            root = root.base_url
        ),
    );
    let gw = TestGateway::start(&["--config", &path, "--ttl", "300s"]).await;
    let t = get(&gw.url(AS_T1)).await;
    assert_eq!(t.status, 200);
    assert_eq!(t.body, tenant_body.as_bytes());
    let max_age = |r: &Reply| -> u64 {
        r.header("cache-control")
            .unwrap()
            .strip_prefix("public, max-age=")
            .and_then(|v| v.split(',').next())
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!(max_age(&t) <= 60, "per-document ttl");
    let r = get(&gw.url(AS_PATH)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, root_body.as_bytes());
    assert!(
        max_age(&r) > 60 && max_age(&r) <= 300,
        "default ttl from --ttl"
    );
    let pr = get(&gw.url("/.well-known/oauth-protected-resource/mcp")).await;
    assert_eq!(
        pr.json()["authorization_servers"],
        serde_json::json!([tenant_issuer, root.base_url])
    );
    assert_eq!(pr.json()["resource_name"], "Test MCP server");
    // Each upstream was asked for its own document only.
    assert!(
        tenant.paths().iter().all(|p| p == AS_T1),
        "{:?}",
        tenant.paths()
    );
    assert!(
        root.paths().iter().all(|p| p == AS_PATH),
        "{:?}",
        root.paths()
    );
}

#[actix_web::test]
async fn config_errors_stop_the_start_with_line_and_key() {
    let path = config_file(
        "bad",
        "[[authorization_server]]\nissuer = \"https://a.example/t\"\n\n[[authorization_server]]\nissuer = \"https://b.example/t\"\n",
    );
    let err = support::config_from_args(["oauth-metadata-gateway", "--config", path.as_str()])
        .expect_err("conflicting routes");
    assert_eq!(err.exit_code(), 2);
    let text = err.to_string();
    assert!(text.contains("line 5, column 10"), "{text}");
    assert!(text.contains("authorization_server[1].issuer"), "{text}");
    assert!(
        text.contains("already served by authorization_server[0] (line 2)"),
        "{text}"
    );
}
