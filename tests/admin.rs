//! The admin listener (`--admin-listen`): `GET /documents` (shape, states,
//! filters), `POST /refresh` of all and of one document (obeying back-off),
//! the operations routes, and none of it on the public listener.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::*;

fn route(tenant: &str) -> String {
    format!("{AS_PATH}/{tenant}")
}

/// A config with two configured issuers (`t1`, `t2`), a template
/// (`realms/{tenant}`) and a protected resource, all on one upstream.
async fn setup() -> (Upstream, tempfile::TempDir, TestGateway) {
    let upstream = tenants_upstream().await;
    let u = &upstream.base_url;
    let (dir, path) = config_file_in_temp_dir(&format!(
        "[[authorization_server]]\nissuer = \"{u}/t1\"\n\
         [[authorization_server]]\nissuer = \"{u}/t2\"\n\
         [[authorization_server]]\nissuer = \"{u}/realms/{{tenant}}\"\nmax_tenants = 50\n\
         [[protected_resource]]\nresource = \"https://mcp.example.com/mcp\"\n\
         authorization_servers = [\"{u}/t1\"]\n"
    ));
    let gw = TestGateway::start_with_admin(&["--config", &path]).await;
    poll_until(&gw.admin("/readyz"), Duration::from_secs(10), |r| {
        r.status == 200
    })
    .await;
    (upstream, dir, gw)
}

async fn list_all(gw: &TestGateway) -> Vec<Value> {
    entries(&get(&gw.admin("/documents")).await.json())
}

fn entries(body: &Value) -> Vec<Value> {
    body["documents"].as_array().cloned().unwrap_or_default()
}

fn entry<'a>(list: &'a [Value], name: &str, tenant: Option<&str>) -> &'a Value {
    list.iter()
        .find(|d| d["name"] == name && d["tenant"].as_str() == tenant)
        .unwrap_or_else(|| panic!("no entry {name} {tenant:?} in {list:#?}"))
}

#[actix_web::test]
async fn documents_lists_every_document_with_its_state() {
    let (upstream, _dir, gw) = setup().await;
    assert_eq!(
        get(&gw.url(&format!("{AS_PATH}/realms/acme"))).await.status,
        200
    );
    assert_eq!(
        get(&gw.url(&format!("{AS_PATH}/realms/missing1")))
            .await
            .status,
        404
    );

    let r = get(&gw.admin("/documents")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let body = r.json();
    assert_eq!(body["generation"], 0);
    let list = entries(&body);
    assert_eq!(list.len(), 5, "{list:#?}");

    let t1 = entry(&list, "oauth-authorization-server/t1", None);
    assert_eq!(t1["kind"], "oauth-authorization-server");
    assert_eq!(t1["state"], "fresh");
    assert_eq!(t1["routes"], serde_json::json!([route("t1")]));
    assert_eq!(
        t1["upstream_urls"][0],
        format!("{}{}", upstream.base_url, route("t1"))
    );
    assert!(t1["age_seconds"].as_u64().unwrap() <= 5);
    let expires = t1["expires_in_seconds"].as_i64().unwrap();
    assert!(
        (295..=300).contains(&expires),
        "default --ttl 5m: {expires}"
    );
    assert!(t1["servable_for_seconds"].as_u64().unwrap() > 300);
    assert_eq!(t1["last_fetch"]["outcome"], "ok");
    let at = t1["last_fetch"]["at"].as_str().unwrap();
    let at = humantime::parse_rfc3339(at).expect("RFC 3339 time");
    assert!(
        at.elapsed().unwrap_or_default() < Duration::from_secs(30),
        "fetched just now"
    );
    assert!(t1["last_error"].is_null());
    assert_eq!(t1["consecutive_failures"], 0);

    let template = "oauth-authorization-server/realms/{tenant}";
    let acme = entry(&list, template, Some("acme"));
    assert_eq!(acme["state"], "fresh");
    assert_eq!(
        acme["routes"],
        serde_json::json!([format!("{AS_PATH}/realms/acme")])
    );
    assert_eq!(
        acme["upstream_urls"][0],
        format!("{}{AS_PATH}/realms/acme", upstream.base_url)
    );
    let missing = entry(&list, template, Some("missing1"));
    assert_eq!(missing["state"], "not_found");
    assert_eq!(missing["last_fetch"]["outcome"], "http_status");

    let pr = entry(&list, "oauth-protected-resource/mcp", None);
    assert_eq!(pr["state"], "local");
    assert_eq!(pr["kind"], "oauth-protected-resource");

    let templates = body["templates"].as_array().unwrap();
    assert_eq!(templates.len(), 1);
    assert_eq!(templates[0]["name"], template);
    assert_eq!(templates[0]["cached_tenants"], 2);
    assert_eq!(templates[0]["max_tenants"], 50);

    // Filters.
    let one = get(&gw.admin("/documents?document=oauth-authorization-server/t2")).await;
    let list = entries(&one.json());
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["name"], "oauth-authorization-server/t2");
    let fresh = entries(&get(&gw.admin("/documents?state=fresh")).await.json());
    assert_eq!(fresh.len(), 3, "t1, t2 and acme: {fresh:#?}");
    let bad = get(&gw.admin("/documents?state=sleepy")).await;
    assert_eq!(bad.status, 400);
    assert!(bad.json()["error_description"]
        .as_str()
        .unwrap()
        .contains("fresh"));
    let unknown = get(&gw.admin("/documents?document=nope")).await;
    assert_eq!(unknown.status, 404);

    // Counts and paging, for thousands of documents.
    assert_eq!(body["total"], 5);
    assert_eq!(
        body["states"],
        serde_json::json!({"fresh": 3, "not_found": 1, "local": 1})
    );
    let mut paged = Vec::new();
    for offset in [0, 2, 4, 6] {
        let page = get(&gw.admin(&format!("/documents?offset={offset}&limit=2"))).await;
        assert_eq!(page.status, 200);
        let page = page.json();
        assert_eq!(page["total"], 5, "the total ignores paging");
        paged.extend(entries(&page));
    }
    let names = |l: &[Value]| -> Vec<String> {
        l.iter()
            .map(|d| format!("{} {}", d["name"], d["tenant"]))
            .collect()
    };
    assert_eq!(
        names(&paged),
        names(&list_all(&gw).await),
        "pages cover the list once, in order"
    );
    // Malformed and unknown parameters: the JSON error, never a listing
    // that ignores them.
    for query in ["limit=many", "offset=-1", "doc=t1", "limit=2&sate=fresh"] {
        let bad = get(&gw.admin(&format!("/documents?{query}"))).await;
        assert_eq!(bad.status, 400, "{query}");
        bad.assert_json_error_body();
        assert_eq!(bad.json()["error"], "invalid_request", "{query}");
    }
}

#[actix_web::test]
async fn a_failing_document_shows_its_error_and_failures() {
    let upstream = Upstream::start(Behaviour::status(503)).await;
    let gw = TestGateway::start_with_admin(&[
        "--upstream",
        &upstream.base_url,
        "--retry-backoff-min",
        "100ms",
        "--retry-backoff-max",
        "200ms",
    ])
    .await;
    let r = poll_until(&gw.admin("/documents"), Duration::from_secs(10), |r| {
        r.json()["documents"][0]["consecutive_failures"]
            .as_u64()
            .unwrap_or(0)
            >= 2
    })
    .await;
    let d = &r.json()["documents"][0];
    assert_eq!(d["state"], "error");
    assert!(d["age_seconds"].is_null());
    assert!(d["expires_in_seconds"].is_null());
    assert_eq!(d["last_fetch"]["outcome"], "http_status");
    assert!(
        d["last_error"].as_str().unwrap().contains("503"),
        "{}",
        d["last_error"]
    );
    let ready = get(&gw.admin("/readyz")).await;
    assert_eq!(ready.status, 503);
}

#[actix_web::test]
async fn refresh_fetches_all_or_one_document_now() {
    let (upstream, _dir, gw) = setup().await;
    assert_eq!(
        get(&gw.url(&format!("{AS_PATH}/realms/acme"))).await.status,
        200
    );
    let before = upstream.requests();
    assert_eq!(upstream.requests_for(&route("t1")), 1);

    // A misspelt parameter refreshes nothing (it would otherwise read as
    // "every document").
    let typo = send(
        "POST",
        &gw.admin("/refresh?doc=oauth-authorization-server/t1"),
        &[],
    )
    .await;
    assert_eq!(typo.status, 400);
    typo.assert_json_error_body();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        upstream.requests(),
        before,
        "a refused refresh fetches nothing"
    );

    // One document.
    let r = send(
        "POST",
        &gw.admin("/refresh?document=oauth-authorization-server/t1"),
        &[],
    )
    .await;
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let body = r.json();
    assert_eq!(
        body["started"],
        serde_json::json!(["oauth-authorization-server/t1"])
    );
    assert_eq!(body["skipped"], serde_json::json!([]));
    upstream
        .wait_for_requests(before + 1, Duration::from_secs(5))
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(upstream.requests_for(&route("t1")), 2);
    assert_eq!(
        upstream.requests_for(&route("t2")),
        1,
        "only the one asked for"
    );
    assert_eq!(upstream.requests(), before + 1);

    // Every document, template tenants included.
    let r = send("POST", &gw.admin("/refresh"), &[]).await;
    assert_eq!(r.status, 202);
    let body = r.json();
    let mut started: Vec<String> = body["started"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    started.sort();
    assert_eq!(
        started,
        [
            "oauth-authorization-server/t1",
            "oauth-authorization-server/t2"
        ]
    );
    assert_eq!(
        body["tenants"],
        serde_json::json!([{"document": "oauth-authorization-server/realms/{tenant}", "tenants": 1}])
    );
    upstream
        .wait_for_requests(before + 4, Duration::from_secs(5))
        .await;
    assert_eq!(upstream.requests_for(&route("t1")), 3);
    assert_eq!(upstream.requests_for(&route("t2")), 2);
    assert_eq!(upstream.requests_for(&format!("{AS_PATH}/realms/acme")), 2);

    // The refreshed document is served, still a hit for clients.
    let r = get(&gw.url(&route("t1"))).await;
    assert_eq!(r.status, 200);
    assert!(r.cache_status().contains("; hit"), "{}", r.cache_status());

    // Unknown document, wrong method.
    let r = send("POST", &gw.admin("/refresh?document=nope"), &[]).await;
    assert_eq!(r.status, 404);
    assert!(r.json()["error_description"]
        .as_str()
        .unwrap()
        .contains("nope"));
    let r = get(&gw.admin("/refresh")).await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("POST"));
}

#[actix_web::test]
async fn refresh_skips_a_document_in_back_off() {
    let upstream = Upstream::start(Behaviour::status(503)).await;
    let gw = TestGateway::start_with_admin(&[
        "--upstream",
        &upstream.base_url,
        "--retry-backoff-min",
        "30s",
        "--retry-backoff-max",
        "60s",
    ])
    .await;
    upstream.wait_for_requests(1, Duration::from_secs(5)).await;
    poll_until(&gw.admin("/documents"), Duration::from_secs(5), |r| {
        r.json()["documents"][0]["state"] == "error"
    })
    .await;
    let before = upstream.requests();
    for _ in 0..5 {
        let r = send("POST", &gw.admin("/refresh"), &[]).await;
        assert_eq!(r.status, 202);
        let body = r.json();
        assert_eq!(body["started"], serde_json::json!([]));
        let reason = body["skipped"][0]["reason"].as_str().unwrap();
        assert!(reason.contains("backing off"), "{reason}");
        assert_eq!(body["skipped"][0]["document"], "oauth-authorization-server");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        upstream.requests(),
        before,
        "a refresh cannot be used to hammer a failing upstream"
    );
    let d = &get(&gw.admin("/documents")).await.json()["documents"][0];
    assert!(d["retry_in_seconds"].as_u64().unwrap() >= 20);
}

#[actix_web::test]
async fn the_admin_listener_serves_operations_and_the_public_one_not_admin_paths() {
    let (_upstream, _dir, gw) = setup().await;
    for path in ["/metrics", "/healthz", "/readyz"] {
        assert_eq!(get(&gw.admin(path)).await.status, 200, "admin {path}");
        assert_eq!(get(&gw.url(path)).await.status, 200, "public {path}");
    }
    let metrics = get(&gw.admin("/metrics")).await;
    assert!(String::from_utf8_lossy(&metrics.body).contains("metadata_gateway_lookups_total"));

    for (method, path) in [
        ("GET", "/documents"),
        ("POST", "/refresh"),
        ("POST", "/refresh?document=oauth-authorization-server/t1"),
        ("GET", "/refresh"),
    ] {
        let r = send(method, &gw.url(path), &[]).await;
        assert_eq!(r.status, 404, "public {method} {path}");
        assert_eq!(r.json()["error"], "not_found");
    }
    // Documents are not served on the admin listener.
    let r = get(&gw.admin(&route("t1"))).await;
    assert_eq!(r.status, 404);
    let r = send("DELETE", &gw.admin("/documents"), &[]).await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
}

#[actix_web::test]
async fn refresh_of_one_tenant_forgets_a_remembered_not_found() {
    let (upstream, _dir, gw) = setup().await;
    let template = "oauth-authorization-server/realms/{tenant}";
    let path = format!("{AS_PATH}/realms/missing9");
    assert_eq!(get(&gw.url(&path)).await.status, 404);
    // The tenant is created upstream; the gateway still remembers the 404.
    let issuer = format!("{}/realms/missing9", upstream.base_url);
    upstream.set_path(&path, Behaviour::json(document(&issuer)));
    assert_eq!(get(&gw.url(&path)).await.status, 404, "negatively cached");
    let before = upstream.requests_for(&path);

    let r = send(
        "POST",
        &gw.admin(&format!("/refresh?document={template}&tenant=missing9")),
        &[],
    )
    .await;
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        r.json()["tenants"],
        serde_json::json!([{"document": template, "tenants": 1}])
    );
    let r = poll_until(&gw.url(&path), Duration::from_secs(5), |r| r.status == 200).await;
    assert_eq!(r.json()["issuer"], issuer.as_str());
    assert_eq!(upstream.requests_for(&path), before + 1, "one fetch");

    // A cached tenant is refreshed in the background.
    let r = send(
        "POST",
        &gw.admin(&format!("/refresh?document={template}&tenant=missing9")),
        &[],
    )
    .await;
    assert_eq!(r.status, 202);
    poll_until(&gw.admin("/documents"), Duration::from_secs(5), |_| {
        upstream.requests_for(&path) == before + 2
    })
    .await;
    assert_eq!(upstream.requests_for(&path), before + 2);

    // Refused: a bad tenant name, an unknown template, no template at all.
    for (query, status) in [
        (format!("document={template}&tenant=..%2Fetc"), 400),
        ("document=nope&tenant=acme".to_string(), 404),
        ("tenant=acme".to_string(), 400),
    ] {
        let r = send("POST", &gw.admin(&format!("/refresh?{query}")), &[]).await;
        assert_eq!(
            r.status,
            status,
            "{query}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert!(r.json()["error"].is_string(), "{query}");
    }
}
