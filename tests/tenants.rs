//! Many tenants: issuer templates (`{tenant}`) cached on demand, negative
//! caching, the tenant-segment check, eviction at `max_tenants`, the bound on
//! upstream requests per host, client priority over warm-up, and 10,000
//! configured issuers each answered with its own document.

mod support;

use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{stream, StreamExt};
use oauth_metadata_gateway::cache_rules::outcome::CacheOutcome;
use oauth_metadata_gateway::Generation as Assembled;
use support::*;

const TEMPLATE: &str = "oauth-authorization-server/realms/{tenant}";

/// An upstream serving every tenant under its root, and a gateway with the
/// template `<upstream>/realms/{tenant}` in front of it.
async fn template_gateway(delay: Duration, extra: &[&str]) -> (Upstream, TestGateway) {
    let upstream = Upstream::start(Behaviour::status(500)).await;
    upstream.set(Behaviour::tenants(&upstream.base_url, delay));
    let template = format!("{}/realms/{{tenant}}", upstream.base_url);
    let mut args = vec!["--issuer", &template, "--upstream", &template];
    args.extend_from_slice(extra);
    let gw = TestGateway::start(&args).await;
    (upstream, gw)
}

fn route(tenant: &str) -> String {
    format!("{AS_PATH}/realms/{tenant}")
}

fn config_file(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f
}

#[actix_web::test]
async fn a_template_tenant_is_served_byte_identical_then_from_the_cache() {
    let (upstream, gw) = template_gateway(Duration::ZERO, &[]).await;
    let want = document(&format!("{}/realms/acme", upstream.base_url));

    let first = get(&gw.url(&route("acme"))).await;
    assert_eq!(
        first.status,
        200,
        "{}",
        String::from_utf8_lossy(&first.body)
    );
    assert_eq!(first.body, want.as_bytes(), "byte for byte");
    assert!(
        first.cache_status().contains("fwd=miss"),
        "{}",
        first.cache_status()
    );
    assert!(first.cache_status().contains("stored"));
    assert_eq!(first.header("access-control-allow-origin"), Some("*"));
    assert_eq!(
        upstream.paths(),
        [format!("{AS_PATH}/realms/acme")],
        "the tenant's RFC 8414 URL, nothing else"
    );

    let second = get(&gw.url(&route("acme"))).await;
    assert_eq!(second.body, want.as_bytes());
    assert!(
        second.cache_status().contains("; hit"),
        "{}",
        second.cache_status()
    );
    assert_eq!(upstream.requests(), 1);

    // Another tenant is another document, with its own issuer.
    let other = get(&gw.url(&route("globex"))).await;
    assert_eq!(
        other.json()["issuer"],
        format!("{}/realms/globex", upstream.base_url)
    );

    let metrics = String::from_utf8(get(&gw.url("/metrics")).await.body).unwrap();
    for line in [
        format!("metadata_gateway_lookups_total{{document=\"{TEMPLATE}\",kind=\"metadata\",result=\"hit\"}} 1"),
        format!("metadata_gateway_lookups_total{{document=\"{TEMPLATE}\",kind=\"metadata\",result=\"miss\"}} 2"),
        format!("metadata_gateway_document_cached{{document=\"{TEMPLATE}\",kind=\"metadata\"}} 2"),
        format!("metadata_gateway_http_requests_total{{route=\"{AS_PATH}/realms/{{tenant}}\",status=\"200\"}} 3"),
    ] {
        assert!(metrics.contains(&line), "missing {line}");
    }
    assert!(!metrics.contains("acme"), "no series per tenant");
}

#[actix_web::test]
async fn a_tenant_whose_issuer_differs_is_refused() {
    let upstream = Upstream::start(Behaviour::status(500)).await;
    // The upstream answers for every tenant with one tenant's document.
    upstream.set(Behaviour::json(document(&format!(
        "{}/realms/acme",
        upstream.base_url
    ))));
    let template = format!("{}/realms/{{tenant}}", upstream.base_url);
    let gw = TestGateway::start(&["--issuer", &template, "--upstream", &template]).await;
    assert_eq!(get(&gw.url(&route("acme"))).await.status, 200);
    let wrong = get(&gw.url(&route("globex"))).await;
    assert_eq!(
        wrong.status, 502,
        "RFC 8414 §3.3: the issuer must be the tenant's"
    );
    assert!(wrong.cache_status().contains("detail=invalid_document"));
}

#[actix_web::test]
async fn two_hundred_concurrent_requests_for_a_new_tenant_make_one_fetch() {
    let (upstream, gw) = template_gateway(Duration::from_millis(300), &[]).await;
    let url = gw.url(&route("initech"));
    let replies = futures_util::future::join_all((0..200).map(|_| get(&url))).await;
    assert!(replies.iter().all(|r| r.status == 200));
    assert!(replies.windows(2).all(|w| w[0].body == w[1].body));
    assert_eq!(
        upstream.requests(),
        1,
        "one upstream fetch for 200 requests"
    );
    let stored = replies
        .iter()
        .filter(|r| r.cache_status().contains("stored"))
        .count();
    assert_eq!(stored, 1, "exactly one request led the fetch");
}

#[actix_web::test]
async fn an_unknown_tenant_is_remembered_as_not_found() {
    let (upstream, gw) = template_gateway(Duration::ZERO, &[]).await;
    let first = get(&gw.url(&route("missing-co"))).await;
    assert_eq!(first.status, 404);
    assert_eq!(first.json()["error"], "not_found");
    assert_eq!(first.header("access-control-allow-origin"), Some("*"));
    assert!(
        first
            .cache_status()
            .contains("fwd=miss; fwd-status=404; stored"),
        "{}",
        first.cache_status()
    );
    // One fetch: the three discovery locations, each 404.
    let asked = upstream.requests();
    assert_eq!(asked, 3, "{:?}", upstream.paths());
    for _ in 0..5 {
        let again = get(&gw.url(&route("missing-co"))).await;
        assert_eq!(again.status, 404);
        assert_eq!(again.header("access-control-allow-origin"), Some("*"));
        assert!(
            again.cache_status().contains("; hit; detail=not_found"),
            "{}",
            again.cache_status()
        );
    }
    assert_eq!(upstream.requests(), asked, "answered without the upstream");
    let metrics = String::from_utf8(get(&gw.url("/metrics")).await.body).unwrap();
    let line =
        format!("metadata_gateway_lookups_total{{document=\"{TEMPLATE}\",kind=\"metadata\",result=\"not_found\"}} 6");
    assert!(metrics.contains(&line), "missing {line}");
}

#[actix_web::test]
async fn malformed_tenants_are_404_without_an_upstream_request() {
    let (upstream, gw) = template_gateway(Duration::ZERO, &[]).await;
    let long = "x".repeat(129);
    let base = format!("{AS_PATH}/realms/");
    let bad = [
        format!("{base}.."),
        format!("{base}."),
        format!("{base}../../admin"),
        format!("{base}..%2F..%2Fadmin"),
        format!("{base}a%2Fb"),
        format!("{base}a%00b"),
        format!("{base}%00"),
        format!("{base}a/b"),
        format!("{base}a/"),
        base.clone(),
        format!("{base}{long}"),
        format!("{base}%61cme"),
        format!("{base}a%20b"),
        format!("{base}a~b"),
        format!("{base}a;b"),
        format!("{base}caf%C3%A9"),
        format!("{AS_PATH}/realms"),
    ];
    for path in &bad {
        let (status, text) = raw_get(gw.addr, path).await;
        assert_eq!(status, 404, "{path}: {text}");
        assert!(
            text.to_ascii_lowercase()
                .contains("access-control-allow-origin: *"),
            "{path}: {text}"
        );
    }
    assert_eq!(
        upstream.requests(),
        0,
        "no upstream request: {:?}",
        upstream.paths()
    );
    // The longest name allowed, and the grammar's other characters, work.
    for ok in ["x".repeat(128), "A-b_c.9".to_string()] {
        let r = get(&gw.url(&route(&ok))).await;
        assert_eq!(r.status, 200, "{ok}");
    }
}

#[actix_web::test]
async fn tenants_are_evicted_at_max_tenants_and_fetched_again() {
    let upstream = Upstream::start(Behaviour::status(500)).await;
    upstream.set(Behaviour::tenants(&upstream.base_url, Duration::ZERO));
    let template = format!("{}/realms/{{tenant}}", upstream.base_url);
    let config = support::config_from_args([
        "oauth-metadata-gateway",
        "--issuer",
        &template,
        "--upstream",
        &template,
        "--max-tenants",
        "4",
    ])
    .unwrap();
    let gw: Arc<Assembled> = Assembled::new(&config).unwrap();
    let cache = gw.templates[0].clone();
    for t in ["t1", "t2", "t3", "t4"] {
        assert_eq!(cache.lookup(t).await.outcome, CacheOutcome::Miss);
    }
    assert_eq!(cache.entry_count().await, 4);
    // A fifth tenant in demand: moka's TinyLFU admits it once it is asked
    // for more often than the tenant it pushes out.
    for _ in 0..20 {
        cache.lookup("hot").await;
        cache.entry_count().await;
    }
    assert_eq!(cache.lookup("hot").await.outcome, CacheOutcome::Hit);
    assert!(cache.entry_count().await <= 4, "bounded by max_tenants");
    let before = upstream.requests();
    let mut refetched = 0;
    for t in ["t1", "t2", "t3", "t4"] {
        if cache.lookup(t).await.outcome == CacheOutcome::Miss {
            refetched += 1;
        }
    }
    assert!(refetched >= 1, "an evicted tenant is fetched again");
    assert_eq!(upstream.requests(), before + refetched);
}

#[actix_web::test]
async fn cold_fetches_beyond_the_bound_get_503_with_retry_after() {
    let upstream = Upstream::start(Behaviour::status(500)).await;
    upstream.set(Behaviour::tenants(&upstream.base_url, Duration::ZERO));
    upstream.hold();
    let text = format!(
        "[[authorization_server]]\nissuer = \"{}/realms/{{tenant}}\"\nmax_cold_fetches = 2\n",
        upstream.base_url
    );
    let file = config_file(&text);
    let gw = TestGateway::start(&["--config", file.path().to_str().unwrap()]).await;
    let held: Vec<_> = ["a", "b"]
        .iter()
        .map(|t| {
            let url = gw.url(&route(t));
            actix_web::rt::spawn(async move { get(&url).await })
        })
        .collect();
    upstream.wait_for_requests(2, Duration::from_secs(10)).await;
    let refused = get(&gw.url(&route("c"))).await;
    assert_eq!(refused.status, 503);
    assert!(refused.header("retry-after").is_some());
    assert!(
        refused.cache_status().contains("detail=busy"),
        "{}",
        refused.cache_status()
    );
    assert_eq!(upstream.requests(), 2, "the refused tenant was not fetched");
    upstream.release();
    for h in held {
        assert_eq!(h.await.unwrap().status, 200);
    }
    assert_eq!(get(&gw.url(&route("c"))).await.status, 200, "room again");
}

#[actix_web::test]
async fn upstream_requests_in_flight_stay_within_the_bound_during_warm_up() {
    let upstream = Upstream::start(Behaviour::status(500)).await;
    upstream.set(Behaviour::tenants(
        &upstream.base_url,
        Duration::from_millis(50),
    ));
    let mut text = String::new();
    for i in 0..40 {
        text.push_str(&format!(
            "[[authorization_server]]\nissuer = \"{}/tenant{i}\"\n",
            upstream.base_url
        ));
    }
    let file = config_file(&text);
    let gw = TestGateway::start(&[
        "--config",
        file.path().to_str().unwrap(),
        "--upstream-concurrency",
        "3",
    ])
    .await;
    poll_until(&gw.url("/readyz"), Duration::from_secs(30), |r| {
        r.status == 200
    })
    .await;
    assert_eq!(upstream.requests(), 40, "one fetch per document");
    assert!(
        upstream.peak_in_flight() <= 3,
        "peak {} > 3",
        upstream.peak_in_flight()
    );
    assert!(
        upstream.peak_in_flight() >= 2,
        "background uses its share (peak {})",
        upstream.peak_in_flight()
    );
}

#[actix_web::test]
async fn a_client_cold_fetch_is_not_queued_behind_warm_up() {
    let upstream = Upstream::start(Behaviour::status(500)).await;
    upstream.set(Behaviour::Tenants {
        path_prefix: format!("{AS_PATH}/"),
        issuer_prefix: format!("{}/", upstream.base_url),
        delay: Duration::ZERO,
        slow: Duration::from_secs(20),
    });
    let mut text = format!(
        "[[authorization_server]]\nissuer = \"{}/realms/{{tenant}}\"\n",
        upstream.base_url
    );
    for i in 0..30 {
        text.push_str(&format!(
            "[[authorization_server]]\nissuer = \"{}/slow{i}\"\n",
            upstream.base_url
        ));
    }
    // Last in the warm-up queue, behind 30 slow documents.
    text.push_str(&format!(
        "[[authorization_server]]\nissuer = \"{}/fast\"\n",
        upstream.base_url
    ));
    let file = config_file(&text);
    let gw = TestGateway::start(&[
        "--config",
        file.path().to_str().unwrap(),
        "--upstream-concurrency",
        "4",
        "--upstream-timeout",
        "60s",
    ])
    .await;
    // Warm-up fills the background share (3 of 4) with slow fetches and
    // queues the other 27.
    upstream.wait_for_requests(3, Duration::from_secs(10)).await;
    let r = get(&gw.url(&route("acme"))).await;
    assert_eq!(r.status, 200);
    assert!(
        upstream.in_flight() >= 3,
        "answered while warm-up was still stuck ({} in flight)",
        upstream.in_flight()
    );
    // A configured document a client asks for jumps the warm-up queue too.
    let r = get(&gw.url(&format!("{AS_PATH}/fast"))).await;
    assert_eq!(r.status, 200);
    assert!(r.cache_status().contains("stored"), "{}", r.cache_status());
    assert!(upstream.in_flight() >= 3, "warm-up still stuck");
    drop(gw);
}

#[actix_web::test]
async fn ten_thousand_configured_issuers_each_get_their_own_document() {
    const N: usize = 10_000;
    let upstream = Upstream::start(Behaviour::status(500)).await;
    upstream.set(Behaviour::tenants(&upstream.base_url, Duration::ZERO));
    let mut text = String::with_capacity(N * 64);
    for i in 0..N {
        text.push_str(&format!(
            "[[authorization_server]]\nissuer = \"{}/tenant{i}\"\n",
            upstream.base_url
        ));
    }
    let file = config_file(&text);
    // A loaded CI machine can stretch one of 10,000 answers past the default
    // 5 s timeout, and its retry would count as a second fetch: the bound
    // under test here is the count, not the timeout.
    let gw = TestGateway::start(&[
        "--config",
        file.path().to_str().unwrap(),
        "--upstream-timeout",
        "120s",
    ])
    .await;
    poll_until(&gw.url("/readyz"), Duration::from_secs(300), |r| {
        r.status == 200
    })
    .await;
    assert_eq!(upstream.requests(), N, "one warm-up fetch per document");
    assert!(
        upstream.peak_in_flight() <= 8,
        "default bound: peak {}",
        upstream.peak_in_flight()
    );

    let client = client();
    let base = upstream.base_url.clone();
    let failures: Vec<String> = stream::iter(0..N)
        .map(|i| {
            let (client, base) = (&client, &base);
            let url = gw.url(&format!("{AS_PATH}/tenant{i}"));
            async move {
                let r = send_with(client, "GET", &url, &[]).await;
                let ok = r.status == 200
                    && r.body == document(&format!("{base}/tenant{i}")).as_bytes()
                    && r.cache_status().contains("; hit");
                (!ok).then(|| format!("tenant{i}: {} {}", r.status, r.cache_status()))
            }
        })
        .buffer_unordered(32)
        .filter_map(|f| async move { f })
        .collect()
        .await;
    assert!(
        failures.is_empty(),
        "{} wrong, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert_eq!(upstream.requests(), N, "served from the cache");
    assert_eq!(
        get(&gw.url(&format!("{AS_PATH}/tenant{N}"))).await.status,
        404
    );

    let metrics = get(&gw.url("/metrics")).await;
    assert!(
        metrics.body.len() < 32 * 1024,
        "/metrics is {} bytes",
        metrics.body.len()
    );
    let text = String::from_utf8(metrics.body).unwrap();
    let line = format!("metadata_gateway_lookups_total{{document=\"oauth-authorization-server/*\",kind=\"metadata\",result=\"hit\"}} {N}");
    assert!(text.contains(&line), "missing {line}");
    assert!(text.contains(&format!(
        "metadata_gateway_document_cached{{document=\"oauth-authorization-server/*\",kind=\"metadata\"}} {N}"
    )));
}

#[actix_web::test]
async fn a_tenant_gone_on_refresh_410_is_forgotten_and_a_404_rides_out_on_the_stale_copy() {
    let quick = [
        "--ttl",
        "1s",
        "--min-ttl",
        "1s",
        "--max-stale",
        "1h",
        "--retry-backoff-min",
        "100ms",
        "--retry-backoff-max",
        "200ms",
    ];
    let (upstream, gw) = template_gateway(Duration::ZERO, &quick).await;
    for t in ["gone", "lost"] {
        assert_eq!(get(&gw.url(&route(t))).await.status, 200);
    }
    // "gone" is deleted on purpose (410); "lost" answers 404, as an
    // upstream incident answering 404 for everything would.
    for (t, status) in [("gone", 410), ("lost", 404)] {
        // Every location the gateway tries for a tenant.
        for path in [
            route(t),
            format!("/.well-known/openid-configuration/realms/{t}"),
            format!("/realms/{t}/.well-known/openid-configuration"),
        ] {
            upstream.set_path(&path, Behaviour::status(status));
        }
    }
    // Requests past the refresh age start the background refreshes.
    let gone = poll_until(&gw.url(&route("gone")), Duration::from_secs(5), |r| {
        r.status == 404
    })
    .await;
    assert_eq!(gone.status, 404, "{}", gone.cache_status());
    assert_eq!(gone.json()["error"], "not_found");
    assert_eq!(gone.header("access-control-allow-origin"), Some("*"));
    let lost = poll_until(&gw.url(&route("lost")), Duration::from_secs(5), |r| {
        r.cache_status().contains("fwd=stale")
    })
    .await;
    assert_eq!(
        lost.status,
        200,
        "the last good copy: {}",
        lost.cache_status()
    );
}

#[actix_web::test]
async fn a_failing_tenant_backs_off_alone_and_a_gone_one_is_remembered() {
    let (upstream, gw) = template_gateway(
        Duration::ZERO,
        &["--retry-backoff-min", "30s", "--retry-backoff-max", "60s"],
    )
    .await;
    upstream.set_path(&route("broken"), Behaviour::status(503));
    for path in [
        route("deleted"),
        "/.well-known/openid-configuration/realms/deleted".to_string(),
        "/realms/deleted/.well-known/openid-configuration".to_string(),
    ] {
        upstream.set_path(&path, Behaviour::status(410));
    }

    let first = get(&gw.url(&route("broken"))).await;
    assert!(
        first.status >= 500,
        "{}",
        String::from_utf8_lossy(&first.body)
    );
    first.assert_json_error_body();
    assert_eq!(
        upstream.requests_for(&route("broken")),
        1,
        "a 5xx stops discovery"
    );
    // Within the back-off: the error at once, with the time left, and no
    // upstream request.
    for _ in 0..5 {
        let again = get(&gw.url(&route("broken"))).await;
        assert!(again.status >= 500, "{}", again.status);
        again.assert_json_error_body();
        let retry: u64 = again
            .header("retry-after")
            .and_then(|v| v.parse().ok())
            .expect("Retry-After");
        assert!((1..=30).contains(&retry), "{retry}");
        assert_eq!(again.header("access-control-allow-origin"), Some("*"));
    }
    assert_eq!(upstream.requests_for(&route("broken")), 1, "backing off");
    // Another tenant of the same template is not held back by it.
    assert_eq!(get(&gw.url(&route("acme"))).await.status, 200);

    // 410 Gone on a cold fetch: a 404 to clients, remembered like one.
    for _ in 0..3 {
        let gone = get(&gw.url(&route("deleted"))).await;
        assert_eq!(gone.status, 404);
        assert_eq!(gone.json()["error"], "not_found");
    }
    assert_eq!(upstream.requests_for(&route("deleted")), 1, "remembered");
}
