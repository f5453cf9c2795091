//! HTTP semantics of the metadata route: byte-identical relay, HEAD, CORS,
//! 404/405, ETag and 304, caching headers.

mod support;

use std::time::Duration;

use support::*;

/// A document with unusual but valid formatting, key order, unicode and a
/// `signed_metadata` member: the gateway must relay it byte for byte.
fn odd_document(issuer: &str) -> String {
    format!(
        "{{\n  \"signed_metadata\" : \"eyJhbGciOiJSUzI1NiJ9.e30.c2ln\",\n  \"issuer\":\"{issuer}\",\n  \"response_types_supported\":[\"code\"],\"authorization_endpoint\":\"{issuer}/authorize\",\n\t\"token_endpoint\":\"{issuer}/token\",\"op_policy_uri\":\"{issuer}/politique-de-confidentialit\u{e9}\",\"x\":1.50}}\n"
    )
}

#[actix_web::test]
async fn relays_the_upstream_document_byte_for_byte() {
    let upstream = Upstream::start(Behaviour::status(500)).await;
    let body = odd_document(&upstream.base_url);
    upstream.set(Behaviour::json(body.clone()));
    let gw = TestGateway::in_front_of(&upstream, &[]).await;
    let r = get(&gw.url(AS_PATH)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, body.as_bytes());
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert_eq!(upstream.paths(), vec![AS_PATH.to_string()]);
}

#[actix_web::test]
async fn head_has_get_headers_and_no_body() {
    let upstream = Upstream::start(Behaviour::status(500)).await;
    let body = document(&upstream.base_url);
    upstream.set(Behaviour::json(body.clone()));
    let gw = TestGateway::in_front_of(&upstream, &[]).await;
    let g = get(&gw.url(AS_PATH)).await;
    let h = send("HEAD", &gw.url(AS_PATH), &[]).await;
    assert_eq!(h.status, 200);
    assert!(h.body.is_empty());
    assert_eq!(
        h.header("content-length"),
        Some(body.len().to_string().as_str())
    );
    for name in ["etag", "content-type", "access-control-allow-origin"] {
        assert_eq!(h.header(name), g.header(name), "{name}");
    }
    assert!(h
        .header("cache-control")
        .unwrap()
        .starts_with("public, max-age="));
    assert!(h.header("age").is_some());
    // HEAD is answered by the gateway: the upstream saw one GET in all.
    assert_eq!(upstream.requests(), 1);
}

#[actix_web::test]
async fn preflight_allows_mcp_headers() {
    let upstream = Upstream::start(Behaviour::status(500)).await;
    upstream.set(Behaviour::json(document(&upstream.base_url)));
    let gw = TestGateway::in_front_of(&upstream, &[]).await;
    for path in [AS_PATH, "/.well-known/oauth-protected-resource/unknown"] {
        let r = send(
            "OPTIONS",
            &gw.url(path),
            &[
                ("origin", "https://app.example"),
                ("access-control-request-method", "GET"),
                ("access-control-request-headers", "mcp-protocol-version"),
            ],
        )
        .await;
        assert_eq!(r.status, 204, "{path}");
        assert_eq!(r.header("access-control-allow-origin"), Some("*"));
        let methods = r.header("access-control-allow-methods").unwrap();
        assert_eq!(methods, "GET, HEAD, OPTIONS");
        let allowed = r
            .header("access-control-allow-headers")
            .unwrap()
            .to_ascii_lowercase();
        assert!(allowed.contains("mcp-protocol-version"), "{allowed}");
        assert!(allowed.contains("authorization"), "{allowed}");
        assert!(r.header("access-control-max-age").is_some());
    }
}

#[actix_web::test]
async fn other_methods_get_405_with_allow() {
    let upstream = Upstream::start(Behaviour::status(500)).await;
    upstream.set(Behaviour::json(document(&upstream.base_url)));
    let gw = TestGateway::in_front_of(&upstream, &[]).await;
    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        let r = send(method, &gw.url(AS_PATH), &[]).await;
        assert_eq!(r.status, 405, "{method}");
        assert_eq!(r.header("allow"), Some("GET, HEAD, OPTIONS"));
        assert_eq!(r.header("access-control-allow-origin"), Some("*"));
        assert_eq!(r.json()["error"], "method_not_allowed");
    }
}

/// The operations endpoints on the public listener (served by the
/// dispatcher since issue 24, as actix resources before): GET and HEAD,
/// 405 with `Allow: GET, HEAD` for anything else, OPTIONS included, and no
/// CORS headers; a path next to them is an ordinary 404.
#[actix_web::test]
async fn ops_endpoints_answer_get_and_head_only_without_cors() {
    let upstream = Upstream::start(Behaviour::status(500)).await;
    upstream.set(Behaviour::json(document(&upstream.base_url)));
    let gw = TestGateway::in_front_of(&upstream, &[]).await;
    let ready = poll_until(&gw.url("/readyz"), Duration::from_secs(5), |r| {
        r.status == 200
    })
    .await;
    assert_eq!(ready.json()["status"], "ready");
    for path in ["/metrics", "/healthz", "/readyz"] {
        let g = get(&gw.url(path)).await;
        assert_eq!(g.status, 200, "{path}");
        assert_eq!(g.header("cache-control"), Some("no-store"), "{path}");
        assert_eq!(g.header("access-control-allow-origin"), None, "{path}");
        let h = send("HEAD", &gw.url(path), &[]).await;
        assert_eq!(h.status, 200, "{path}");
        assert!(h.body.is_empty(), "{path}");
        assert_eq!(h.header("content-type"), g.header("content-type"), "{path}");
        for method in ["OPTIONS", "POST", "DELETE"] {
            let r = send(method, &gw.url(path), &[]).await;
            assert_eq!(r.status, 405, "{method} {path}");
            assert_eq!(r.header("allow"), Some("GET, HEAD"), "{method} {path}");
            assert_eq!(r.header("access-control-allow-origin"), None);
            assert_eq!(r.json()["error"], "method_not_allowed");
        }
        let beside = get(&gw.url(&format!("{path}/"))).await;
        assert_eq!(beside.status, 404, "{path}/");
        assert_eq!(beside.header("access-control-allow-origin"), Some("*"));
    }
    assert_eq!(get(&gw.url("/healthz")).await.json()["status"], "ok");
}

#[actix_web::test]
async fn unknown_paths_are_json_404s_with_cors_under_well_known() {
    let upstream = Upstream::start(Behaviour::status(500)).await;
    upstream.set(Behaviour::json(document(&upstream.base_url)));
    let gw = TestGateway::in_front_of(&upstream, &[]).await;
    for path in [
        "/.well-known/openid-configuration",
        "/.well-known/oauth-authorization-server/extra",
        "/.well-known/",
    ] {
        let r = get(&gw.url(path)).await;
        assert_eq!(r.status, 404, "{path}");
        assert_eq!(r.header("access-control-allow-origin"), Some("*"), "{path}");
        assert_eq!(r.json()["error"], "not_found");
    }
    let r = get(&gw.url("/nothing/here")).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"], "not_found");
    // None of this reached the upstream beyond the warm-up fetch.
    upstream.wait_for_requests(1, Duration::from_secs(5)).await;
    assert!(upstream.paths().iter().all(|p| p == AS_PATH));
}

#[actix_web::test]
async fn etag_and_if_none_match_give_304() {
    let upstream = Upstream::start(Behaviour::status(500)).await;
    upstream.set(Behaviour::json(document(&upstream.base_url)));
    let gw = TestGateway::in_front_of(&upstream, &[]).await;
    let first = get(&gw.url(AS_PATH)).await;
    let etag = first.header("etag").unwrap().to_string();
    assert!(etag.starts_with('"') && etag.ends_with('"') && !etag.starts_with("W/"));

    for inm in [
        etag.clone(),
        format!("W/{etag}"),
        format!("\"other\", {etag}"),
        "*".into(),
    ] {
        let r = send("GET", &gw.url(AS_PATH), &[("if-none-match", &inm)]).await;
        assert_eq!(r.status, 304, "{inm}");
        assert!(r.body.is_empty());
        assert_eq!(r.header("etag"), Some(etag.as_str()));
        assert!(r.header("cache-status").is_some());
        assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    }
    for inm in ["\"other\"", "garbage", "\"unterminated"] {
        let r = send("GET", &gw.url(AS_PATH), &[("if-none-match", inm)]).await;
        assert_eq!(r.status, 200, "{inm}");
        assert_eq!(r.body, first.body);
    }
}

#[actix_web::test]
async fn hit_headers_count_down_freshness() {
    let upstream = Upstream::start(Behaviour::status(500)).await;
    upstream.set(Behaviour::json(document(&upstream.base_url)));
    let gw = TestGateway::in_front_of(&upstream, &["--ttl", "300s"]).await;
    upstream.wait_for_requests(1, Duration::from_secs(5)).await;
    let r = poll_until(&gw.url(AS_PATH), Duration::from_secs(5), |r| {
        r.cache_status().contains("; hit")
    })
    .await;
    let age: u64 = r.header("age").unwrap().parse().unwrap();
    assert!(age <= 1, "age {age}");
    let cc = r.header("cache-control").unwrap();
    let max_age: u64 = cc
        .strip_prefix("public, max-age=")
        .and_then(|v| v.split(',').next())
        .unwrap()
        .parse()
        .unwrap();
    // max-age is the lifetime (the upstream sent no Age and no
    // Cache-Control: --ttl); a downstream cache counts Age against it.
    assert_eq!(max_age, 300, "{cc}");
    assert!(
        cc.ends_with(", stale-if-error=86400"),
        "a fresh document may be used stale for --max-stale (24h) downstream too: {cc}"
    );
    let ttl: u64 = r
        .cache_status()
        .strip_prefix("oauth-metadata-gateway; hit; ttl=")
        .unwrap()
        .parse()
        .unwrap();
    // What is left here is what is left downstream: max-age - Age (±1 s
    // for the two roundings of the same instant).
    assert!(
        (max_age - age).abs_diff(ttl) <= 1,
        "ttl {ttl}, max-age {max_age}, age {age}"
    );
}

/// A config file with issuers `t1` and `missing1` (which the tenants
/// upstream answers 404 for), and a gateway with `extra` in front.
async fn one_of_two_broken(extra: &[&str]) -> (Upstream, tempfile::TempDir, TestGateway) {
    let upstream = tenants_upstream().await;
    let u = &upstream.base_url;
    let (dir, path) = config_file_in_temp_dir(&format!(
        "[[authorization_server]]\nissuer = \"{u}/t1\"\n\
         [[authorization_server]]\nissuer = \"{u}/missing1\"\n"
    ));
    let mut args = vec!["--config", path.as_str()];
    args.extend_from_slice(extra);
    let gw = TestGateway::start(&args).await;
    poll_until(
        &gw.url(&format!("{AS_PATH}/t1")),
        Duration::from_secs(5),
        |r| r.status == 200,
    )
    .await;
    (upstream, dir, gw)
}

#[actix_web::test]
async fn readiness_needs_every_document_unless_ready_min_percent_says_otherwise() {
    // Default: one document that cannot be served makes the gateway unready.
    let (_up, _dir, gw) = one_of_two_broken(&[]).await;
    let r = poll_until(&gw.url("/readyz"), Duration::from_secs(5), |r| {
        r.json()["unready_documents"] == 1
    })
    .await;
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.json()["reason"].as_str().unwrap().contains("missing1"));

    // Half of them is enough with --ready-min-percent 50: ready, and the
    // answer still names what is missing.
    let (_up, _dir, gw) = one_of_two_broken(&["--ready-min-percent", "50"]).await;
    let r = poll_until(&gw.url("/readyz"), Duration::from_secs(5), |r| {
        r.json()["unready_documents"] == 1
    })
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["status"], "ready");
    assert!(r.json()["reason"].as_str().unwrap().contains("missing1"));
    // 51% of two documents is both.
    let (_up, _dir, gw) = one_of_two_broken(&["--ready-min-percent", "51"]).await;
    let r = poll_until(&gw.url("/readyz"), Duration::from_secs(5), |r| {
        r.json()["unready_documents"] == 1
    })
    .await;
    assert_eq!(r.status, 503);
}
