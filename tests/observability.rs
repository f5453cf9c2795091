//! Observability (issue 3) end to end, against the gateway running
//! in-process on 127.0.0.1:0 in front of the switchable test upstream:
//!
//! - counters move by exactly what was done: N cached requests are N hits,
//!   an outage shows as `stale`, a cold start with the upstream down as
//!   `error`, and every upstream fetch is counted once, under the outcome of
//!   what the test upstream did;
//! - HTTP metrics are labelled with route patterns, never raw paths;
//! - the document gauges, `build_info` and `process_*` are there and sane;
//! - `promtool check metrics` has nothing to say about a live scrape;
//! - every metric the Grafana dashboard and the alert rules use is in a live
//!   scrape;
//! - a real Prometheus scrapes the gateway and answers the dashboard's
//!   hit-rate query with the ratio the test produced, every dashboard query
//!   returns data, and every alert rule evaluates without error.
//!
//! The Prometheus tools come from the Debian package `prometheus`
//! (`.ci/install-deps.sh`); a missing tool fails the test.

mod support;

#[path = "observability/names.rs"]
mod names;
#[path = "observability/prometheus.rs"]
mod prometheus;
#[path = "observability/scrape.rs"]
mod scrape;
#[path = "observability/tools.rs"]
mod tools;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures_util::future::join_all;
use names::{dashboard_queries, problems, repo_root, rule_exprs, Query};
use prometheus::Prometheus;
use scrape::{head_metrics, scrape, Scrape};
use support::*;

/// The configured document's name (the `document` label).
const DOC: &str = "oauth-authorization-server";
const JOB: &str = "oauth-metadata-gateway";
const LOOKUPS: &str = "metadata_gateway_lookups_total";
const FETCHES: &str = "metadata_gateway_upstream_fetches_total";
const FETCH_DURATION_COUNT: &str = "metadata_gateway_upstream_fetch_duration_seconds_count";
const HTTP_REQUESTS: &str = "metadata_gateway_http_requests_total";
const HTTP_DURATION_COUNT: &str = "metadata_gateway_http_request_duration_seconds_count";
const AGE: &str = "metadata_gateway_document_age_seconds";
const STALE: &str = "metadata_gateway_document_stale";
const CACHED: &str = "metadata_gateway_document_cached";
const RESULTS: [&str; 7] = [
    "hit",
    "stale",
    "miss",
    "error",
    "not_found",
    "revalidated",
    "revalidation_failed",
];
const OUTCOMES: [&str; 8] = [
    "ok",
    "not_modified",
    "timeout",
    "connect_error",
    "http_status",
    "invalid_document",
    "too_large",
    "proxy_error",
];
/// Bound on every wait for the gateway.
const LIMIT: Duration = Duration::from_secs(5);
/// Bound on every wait for Prometheus (1 s scrape interval).
const SCRAPE_LIMIT: Duration = Duration::from_secs(20);

/// Lookup counts by result, in [`RESULTS`] order.
fn lookups(s: &Scrape) -> [f64; RESULTS.len()] {
    RESULTS.map(|r| {
        s.get(
            LOOKUPS,
            &[("document", DOC), ("kind", "metadata"), ("result", r)],
        )
    })
}

fn fetches(s: &Scrape, outcome: &str) -> f64 {
    s.get(
        FETCHES,
        &[
            ("document", DOC),
            ("kind", "metadata"),
            ("outcome", outcome),
        ],
    )
}

fn all_fetches(s: &Scrape) -> f64 {
    OUTCOMES.iter().map(|o| fetches(s, o)).sum()
}

fn gauge(s: &Scrape, name: &str) -> f64 {
    s.get(name, &[("document", DOC), ("kind", "metadata")])
}

fn delta(after: [f64; RESULTS.len()], before: [f64; RESULTS.len()]) -> [f64; RESULTS.len()] {
    std::array::from_fn(|i| after[i] - before[i])
}

/// `n` as a counter value (exact for the small counts used here).
fn count(n: usize) -> f64 {
    n as f64
}

/// Scrapes until `pred` holds (bounded), returning that scrape.
async fn scrape_until(gw: &TestGateway, what: &str, pred: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let s = scrape(gw).await;
        if pred(&s) {
            return s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not reached within {LIMIT:?}; last scrape:\n{}",
            s.text
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_ready(gw: &TestGateway) {
    poll_until(&gw.url("/readyz"), LIMIT, |r| r.status == 200).await;
}

#[actix_web::test]
async fn n_cached_requests_add_exactly_n_hits() {
    const GETS: usize = 20;
    const HEADS: usize = 5;
    const CONDITIONAL: usize = 5;
    let upstream = Upstream::start(Behaviour::status(500)).await;
    upstream.set(Behaviour::json(document(&upstream.base_url)));
    let gw = TestGateway::in_front_of(&upstream, &["--ttl", "300s"]).await;
    let url = gw.url(AS_PATH);
    wait_ready(&gw).await;
    let etag = send("HEAD", &url, &[])
        .await
        .header("etag")
        .expect("ETag")
        .to_string();

    let before = scrape(&gw).await;
    assert_eq!(
        lookups(&before),
        [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        "the HEAD was a hit"
    );
    assert_eq!(
        before.value(HTTP_REQUESTS, &[("route", "/metrics"), ("status", "200")]),
        None,
        "a scrape is counted after it is rendered"
    );
    for _ in 0..GETS {
        let r = get(&url).await;
        assert_eq!(r.status, 200);
        assert!(r.cache_status().contains("; hit"), "{}", r.cache_status());
    }
    for _ in 0..HEADS {
        let r = send("HEAD", &url, &[]).await;
        assert_eq!(r.status, 200);
        assert!(r.cache_status().contains("; hit"), "{}", r.cache_status());
    }
    for _ in 0..CONDITIONAL {
        let r = send("GET", &url, &[("if-none-match", &etag)]).await;
        assert_eq!(r.status, 304);
    }
    let after = scrape(&gw).await;

    let n = GETS + HEADS + CONDITIONAL;
    assert_eq!(
        delta(lookups(&after), lookups(&before)),
        [count(n), 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        "exactly {n} hits and nothing else"
    );
    let route = [("route", AS_PATH)];
    let http = |s: &Scrape, status: &str| {
        s.value(HTTP_REQUESTS, &[("route", AS_PATH), ("status", status)])
            .unwrap_or(0.0)
    };
    assert_eq!(
        http(&after, "200") - http(&before, "200"),
        count(GETS + HEADS)
    );
    assert_eq!(
        http(&after, "304") - http(&before, "304"),
        count(CONDITIONAL)
    );
    assert_eq!(
        after.get(HTTP_DURATION_COUNT, &route) - before.get(HTTP_DURATION_COUNT, &route),
        count(n)
    );
    assert_eq!(
        after.get(HTTP_REQUESTS, &[("route", "/metrics"), ("status", "200")]),
        1.0,
        "the first scrape, counted once"
    );

    // One fetch in all (the warm-up), and the upstream saw exactly that.
    assert_eq!(upstream.requests(), 1);
    assert_eq!(fetches(&after, "ok"), 1.0);
    assert_eq!(all_fetches(&after), 1.0);
    assert_eq!(after.get(FETCH_DURATION_COUNT, &[]), 1.0);

    // A fresh document: cached, not stale, and ageing.
    for s in [&before, &after] {
        assert_eq!(gauge(s, CACHED), 1.0);
        assert_eq!(gauge(s, STALE), 0.0);
        assert!((0.0..300.0).contains(&gauge(s, AGE)), "{}", gauge(s, AGE));
    }
    assert!(gauge(&after, AGE) > gauge(&before, AGE));
}

#[actix_web::test]
async fn an_outage_shows_up_as_stale_and_recovery_as_hits() {
    const N: usize = 10;
    /// `--ttl`, in seconds.
    const TTL: f64 = 1.0;
    let upstream = Upstream::start(Behaviour::status(500)).await;
    let good = document(&upstream.base_url);
    upstream.set(Behaviour::json(good.clone()));
    let gw = TestGateway::in_front_of(
        &upstream,
        &[
            "--ttl",
            "1s",
            "--max-stale",
            "1h",
            "--retry-backoff-min",
            "200ms",
            "--retry-backoff-max",
            "400ms",
        ],
    )
    .await;
    let url = gw.url(AS_PATH);
    wait_ready(&gw).await;
    let fresh = scrape(&gw).await;
    assert_eq!(gauge(&fresh, STALE), 0.0);
    assert_eq!(gauge(&fresh, CACHED), 1.0);
    assert!(gauge(&fresh, AGE) < TTL, "{}", gauge(&fresh, AGE));

    upstream.set(Behaviour::status(503));
    poll_until(&url, LIMIT, |r| r.cache_status().contains("fwd=stale")).await;
    // The document gauges are recomputed at most once per second.
    let before = scrape_until(&gw, "the stale gauge follows", |s| gauge(s, STALE) == 1.0).await;
    for _ in 0..N {
        let r = get(&url).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body, good.as_bytes());
        assert!(
            r.cache_status().contains("fwd=stale"),
            "{}",
            r.cache_status()
        );
    }
    let after = scrape(&gw).await;
    assert_eq!(
        delta(lookups(&after), lookups(&before)),
        [0.0, count(N), 0.0, 0.0, 0.0, 0.0, 0.0],
        "exactly {N} stale answers and nothing else"
    );
    for s in [&before, &after] {
        assert_eq!(gauge(s, STALE), 1.0, "serving past the TTL");
        assert_eq!(gauge(s, CACHED), 1.0, "still servable");
        assert!(gauge(s, AGE) >= TTL, "{}", gauge(s, AGE));
    }
    assert!(gauge(&after, AGE) > gauge(&before, AGE));
    assert!(fetches(&after, "http_status") >= 1.0);
    assert_eq!(
        get(&gw.url("/readyz")).await.status,
        200,
        "stale is servable"
    );

    // Every fetch the upstream received is counted, under its outcome (the
    // refresher keeps retrying, so wait for a moment with none in flight).
    let settled = scrape_until(&gw, "fetch counts match the upstream", |s| {
        all_fetches(s) == count(upstream.requests())
            && fetches(s, "ok") + fetches(s, "http_status") == all_fetches(s)
    })
    .await;
    assert!(fetches(&settled, "ok") >= 1.0);

    // Recovery: hits again, and the gauges follow.
    upstream.set(Behaviour::json(good));
    poll_until(&url, LIMIT, |r| r.cache_status().contains("; hit")).await;
    let recovered = scrape_until(&gw, "the stale gauge follows", |s| gauge(s, STALE) == 0.0).await;
    assert_eq!(gauge(&recovered, STALE), 0.0);
    assert_eq!(gauge(&recovered, CACHED), 1.0);
    assert!(gauge(&recovered, AGE) < TTL, "{}", gauge(&recovered, AGE));
    assert!(fetches(&recovered, "ok") > fetches(&settled, "ok"));
}

#[actix_web::test]
async fn a_cold_start_with_the_upstream_down_counts_errors_and_is_not_ready() {
    const N: usize = 5;
    // A port that is bound but not listening: connections are refused, and
    // while `reserved` lives no other socket (another test's listener, or
    // an outgoing connection's source port) can take it, unlike a port that
    // was bound and released.
    let reserved = tokio::net::TcpSocket::new_v4().expect("socket");
    reserved
        .bind("127.0.0.1:0".parse().expect("address"))
        .expect("bind 127.0.0.1:0");
    let port = reserved.local_addr().expect("local address").port();
    let upstream = format!("http://127.0.0.1:{port}");
    let gw = TestGateway::start(&[
        "--upstream",
        &upstream,
        "--retry-backoff-min",
        "30s",
        "--retry-backoff-max",
        "30s",
    ])
    .await;
    let before = scrape_until(&gw, "the warm-up fetch failed", |s| {
        fetches(s, "connect_error") == 1.0
    })
    .await;
    assert_eq!(all_fetches(&before), 1.0);
    assert_eq!(lookups(&before), [0.0; RESULTS.len()]);
    assert_eq!(gauge(&before, CACHED), 0.0);
    assert_eq!(gauge(&before, STALE), 0.0);
    assert_eq!(gauge(&before, AGE), 0.0);

    let ready = get(&gw.url("/readyz")).await;
    assert_eq!(ready.status, 503);
    assert_eq!(ready.header("content-type"), Some("application/json"));
    assert_eq!(ready.header("cache-control"), Some("no-store"));
    assert_eq!(ready.json()["status"], "not_ready");
    let reason = ready.json()["reason"].as_str().expect("reason").to_string();
    assert!(
        reason.contains(DOC) && reason.contains("cannot reach the upstream"),
        "{reason}"
    );
    assert_eq!(send("HEAD", &gw.url("/readyz"), &[]).await.status, 503);
    assert_eq!(get(&gw.url("/healthz")).await.status, 200, "alive");

    for _ in 0..N {
        let r = get(&gw.url(AS_PATH)).await;
        assert_eq!(r.status, 503);
        assert!(
            r.cache_status().contains("detail=connect_error"),
            "{}",
            r.cache_status()
        );
    }
    let after = scrape(&gw).await;
    assert_eq!(
        delta(lookups(&after), lookups(&before)),
        [0.0, 0.0, 0.0, count(N), 0.0, 0.0, 0.0],
        "exactly {N} errors"
    );
    assert_eq!(
        all_fetches(&after),
        1.0,
        "requests during the back-off do not fetch"
    );
}

/// An upstream behaviour, extra gateway arguments, the `outcome` label it
/// must produce and the status a client then gets.
struct FetchCase {
    name: &'static str,
    behaviour: Behaviour,
    args: &'static [&'static str],
    outcome: &'static str,
    client_status: u16,
}

fn fetch_cases(issuer: &str) -> Vec<FetchCase> {
    let good = document(issuer);
    let large = format!(
        "{},\"pad\":\"{}\"}}",
        &good[..good.len() - 1],
        "x".repeat(4096)
    );
    vec![
        FetchCase {
            name: "good document",
            behaviour: Behaviour::json(good.clone()),
            args: &[],
            outcome: "ok",
            client_status: 200,
        },
        FetchCase {
            name: "connection closed without an answer",
            behaviour: Behaviour::Close,
            args: &[],
            outcome: "connect_error",
            client_status: 503,
        },
        FetchCase {
            name: "slower than --upstream-timeout",
            behaviour: Behaviour::json(good.clone()).delayed(Duration::from_secs(2)),
            args: &["--upstream-timeout", "300ms"],
            outcome: "timeout",
            client_status: 504,
        },
        FetchCase {
            name: "HTTP 503",
            behaviour: Behaviour::status(503),
            args: &[],
            outcome: "http_status",
            client_status: 502,
        },
        FetchCase {
            name: "HTML instead of JSON",
            behaviour: Behaviour::with_content_type("text/html", "<html>maintenance</html>"),
            args: &[],
            outcome: "invalid_document",
            client_status: 502,
        },
        FetchCase {
            name: "issuer mismatch",
            behaviour: Behaviour::json(good.replace(issuer, "https://evil.example")),
            args: &[],
            outcome: "invalid_document",
            client_status: 502,
        },
        FetchCase {
            name: "larger than --max-body-size",
            behaviour: Behaviour::json(large),
            args: &["--max-body-size", "1KiB"],
            outcome: "too_large",
            client_status: 502,
        },
    ]
}

#[actix_web::test]
async fn every_upstream_fetch_is_counted_once_under_its_outcome() {
    let n_cases = fetch_cases("http://x").len();
    let runs = (0..n_cases).map(|i| async move {
        let upstream = Upstream::start(Behaviour::status(500)).await;
        let case = fetch_cases(&upstream.base_url).swap_remove(i);
        upstream.set(case.behaviour.clone());
        // A long back-off: the warm-up fetch is the only one in this test.
        let mut args = vec!["--retry-backoff-min", "30s", "--retry-backoff-max", "30s"];
        args.extend_from_slice(case.args);
        let gw = TestGateway::in_front_of(&upstream, &args).await;
        let name = case.name;

        let s = scrape_until(&gw, name, |s| all_fetches(s) >= 1.0).await;
        assert_eq!(upstream.requests(), 1, "{name}: upstream requests");
        for outcome in OUTCOMES {
            let want = if outcome == case.outcome { 1.0 } else { 0.0 };
            assert_eq!(fetches(&s, outcome), want, "{name}: outcome={outcome}");
        }
        assert_eq!(
            s.get(FETCH_DURATION_COUNT, &[]),
            1.0,
            "{name}: one fetch timed"
        );

        let r = get(&gw.url(AS_PATH)).await;
        assert_eq!(r.status, case.client_status, "{name}");
        let after = scrape(&gw).await;
        let want = if case.outcome == "ok" {
            [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
        } else {
            [0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]
        };
        assert_eq!(lookups(&after), want, "{name}: lookups");
        assert_eq!(all_fetches(&after), 1.0, "{name}: no fetch per request");
        assert_eq!(upstream.requests(), 1, "{name}: upstream requests");
    });
    join_all(runs).await;
}

#[actix_web::test]
async fn http_metrics_are_labelled_with_route_patterns_only() {
    let upstream = Upstream::start(Behaviour::status(500)).await;
    upstream.set(Behaviour::json(document(&upstream.base_url)));
    let gw = TestGateway::in_front_of(&upstream, &[]).await;
    wait_ready(&gw).await;
    let before = scrape(&gw).await;

    let raw_paths = [
        "/no/such/path?token=secret-value",
        "/.well-known/openid-configuration",
        "/.well-known/oauth-authorization-server/extra",
    ];
    // (method, path, status, route label)
    let mut requests: Vec<(&str, &str, u16, &str)> = vec![
        ("GET", AS_PATH, 200, AS_PATH),
        ("HEAD", AS_PATH, 200, AS_PATH),
        ("OPTIONS", AS_PATH, 204, AS_PATH),
        ("POST", AS_PATH, 405, AS_PATH),
        ("GET", "/healthz", 200, "/healthz"),
        ("HEAD", "/healthz", 200, "/healthz"),
        ("GET", "/readyz", 200, "/readyz"),
        ("HEAD", "/metrics", 200, "/metrics"),
        ("POST", "/metrics", 405, "/metrics"),
        ("OPTIONS", "/metrics", 405, "/metrics"),
        (
            "OPTIONS",
            "/.well-known/openid-configuration",
            204,
            "unmatched",
        ),
    ];
    for p in raw_paths {
        requests.push(("GET", p, 404, "unmatched"));
    }
    let mut want: BTreeMap<(String, String), f64> = BTreeMap::new();
    // The `before` scrape is counted once it has been sent.
    want.insert(("/metrics".into(), "200".into()), 1.0);
    for (method, path, status, route) in &requests {
        let r = send(method, &gw.url(path), &[]).await;
        assert_eq!(r.status, *status, "{method} {path}");
        *want
            .entry(((*route).to_string(), status.to_string()))
            .or_default() += 1.0;
    }
    let after = scrape(&gw).await;

    let mut got: BTreeMap<(String, String), f64> = BTreeMap::new();
    for s in after.samples.iter().filter(|s| s.name == HTTP_REQUESTS) {
        let key = (s.labels["route"].clone(), s.labels["status"].clone());
        let old = before
            .value(HTTP_REQUESTS, &[("route", &key.0), ("status", &key.1)])
            .unwrap_or(0.0);
        if s.value != old {
            got.insert(key, s.value - old);
        }
    }
    assert_eq!(got, want, "requests by (route, status)");
    let routes = after.label_values(HTTP_REQUESTS, "route");
    let allowed: BTreeSet<String> = [AS_PATH, "/metrics", "/healthz", "/readyz", "unmatched"]
        .map(String::from)
        .into();
    assert!(routes.is_subset(&allowed), "{routes:?}");
    assert!(after
        .label_values(HTTP_DURATION_COUNT, "route")
        .is_subset(&allowed));
    for needle in ["secret", "/no/such", "openid-configuration", "/extra"] {
        assert!(
            !after.text.contains(needle),
            "raw path fragment {needle:?} in the scrape"
        );
    }

    // HEAD /metrics: the GET's headers, no body; other methods: 405 with
    // the methods that work.
    let head = head_metrics(&gw).await;
    assert_eq!(
        head.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert!(head.body.is_empty());
    let post = send("POST", &gw.url("/metrics"), &[]).await;
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
    assert_eq!(post.json()["error"], "method_not_allowed");
}

#[actix_web::test]
async fn build_info_process_metrics_and_types_are_exported() {
    let upstream = Upstream::start(Behaviour::status(500)).await;
    upstream.set(Behaviour::json(document(&upstream.base_url)));
    let gw = TestGateway::in_front_of(&upstream, &[]).await;
    wait_ready(&gw).await;
    get(&gw.url(AS_PATH)).await;
    let s = scrape(&gw).await;

    assert_eq!(
        s.get(
            "metadata_gateway_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    let types: [(&str, &str); 9] = [
        (LOOKUPS, "counter"),
        (FETCHES, "counter"),
        (
            "metadata_gateway_upstream_fetch_duration_seconds",
            "histogram",
        ),
        (AGE, "gauge"),
        (STALE, "gauge"),
        (CACHED, "gauge"),
        (HTTP_REQUESTS, "counter"),
        (
            "metadata_gateway_http_request_duration_seconds",
            "histogram",
        ),
        ("metadata_gateway_build_info", "gauge"),
    ];
    for (name, kind) in types {
        assert_eq!(s.types.get(name).map(String::as_str), Some(kind), "{name}");
    }
    // Every label combination of lookups and fetches exists from start-up.
    assert_eq!(
        s.label_values(LOOKUPS, "result"),
        RESULTS.map(String::from).into()
    );
    assert_eq!(
        s.label_values(FETCHES, "outcome"),
        OUTCOMES.map(String::from).into()
    );
    assert_eq!(
        s.label_values(LOOKUPS, "document"),
        [DOC.to_string()].into(),
        "document names only"
    );

    // The process collector (Linux): this test process's own figures.
    let p = |name: &str| s.get(name, &[]);
    assert!(p("process_resident_memory_bytes") > 0.0);
    assert!(p("process_virtual_memory_bytes") >= p("process_resident_memory_bytes"));
    assert!(p("process_open_fds") >= 1.0);
    assert!(p("process_max_fds") >= p("process_open_fds"));
    assert!(p("process_threads") >= 1.0);
    assert!(p("process_cpu_seconds_total") >= 0.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64();
    let started = p("process_start_time_seconds");
    assert!(
        started <= now + 5.0 && started > now - 86_400.0,
        "start {started}, now {now}"
    );
    assert_eq!(s.types["process_cpu_seconds_total"], "counter");
}

#[actix_web::test]
async fn a_live_scrape_passes_promtool_check_metrics() {
    // promtool does report problems on this machine (so a silent pass below
    // means something): a counter without `_total` is a lint finding.
    let bad = tools::promtool_check_metrics(
        b"# HELP requests Requests.\n# TYPE requests counter\nrequests 1\n",
    );
    assert!(
        !bad.success && bad.output.contains("_total"),
        "promtool did not flag a counter without _total: {bad:?}"
    );

    let upstream = Upstream::start(Behaviour::status(500)).await;
    upstream.set(Behaviour::json(document(&upstream.base_url)));
    let gw = TestGateway::in_front_of(&upstream, &[]).await;
    wait_ready(&gw).await;
    // Traffic first, so that every family (HTTP ones included) has series.
    get(&gw.url(AS_PATH)).await;
    get(&gw.url("/no/such/path")).await;
    scrape(&gw).await;
    let s = scrape(&gw).await;
    for family in [
        HTTP_REQUESTS,
        "metadata_gateway_http_request_duration_seconds",
    ] {
        assert!(s.types.contains_key(family), "{family} in the scrape");
    }
    let verdict = tools::promtool_check_metrics(s.text.as_bytes());
    assert!(
        verdict.success && verdict.output.is_empty(),
        "promtool check metrics: {verdict:?}\non:\n{}",
        s.text
    );
}

#[actix_web::test]
async fn every_metric_the_dashboard_and_alerts_use_is_in_a_live_scrape() {
    let upstream = Upstream::start(Behaviour::status(500)).await;
    upstream.set(Behaviour::json(document(&upstream.base_url)));
    // With a state directory, so its write counter is exported too.
    let state = tempfile::tempdir().unwrap();
    let state_dir = state.path().join("state");
    let gw =
        TestGateway::in_front_of(&upstream, &["--state-dir", state_dir.to_str().unwrap()]).await;
    wait_ready(&gw).await;
    get(&gw.url(AS_PATH)).await;
    scrape(&gw).await;
    let s = scrape(&gw).await;

    let dashboard = dashboard_queries();
    let alerts = rule_exprs(&repo_root().join("deploy/prometheus/alerts.yml"));
    let used = |qs: &[Query]| -> BTreeSet<String> {
        qs.iter()
            .flat_map(|q| names::metric_names(&q.expr))
            .collect()
    };
    let (dash_names, alert_names) = (used(&dashboard), used(&alerts));
    let mut found = problems(&s, &dashboard);
    found.extend(problems(&s, &alerts));
    assert!(
        found.is_empty(),
        "metrics used but not in a live scrape:\n{}",
        found.join("\n")
    );

    // The extraction found what the files are known to use, so the empty
    // problem list above is not an extraction that found nothing.
    for name in [
        LOOKUPS,
        FETCHES,
        STALE,
        "metadata_gateway_upstream_fetch_duration_seconds_bucket",
        "metadata_gateway_http_request_duration_seconds_bucket",
        "process_resident_memory_bytes",
    ] {
        assert!(
            dash_names.contains(name),
            "dashboard uses {name}: {dash_names:?}"
        );
    }
    for name in [
        LOOKUPS,
        FETCHES,
        STALE,
        "metadata_gateway_state_writes_total",
    ] {
        assert!(
            alert_names.contains(name),
            "alerts use {name}: {alert_names:?}"
        );
    }
    assert!(alerts.len() >= 4, "{} alert rules", alerts.len());

    // And the check does catch the mistakes it is for.
    let broken = [
        Query {
            origin: "misspelt".into(),
            expr: "sum(rate(metadata_gateway_lookup_total[5m]))".into(),
        },
        Query {
            origin: "bare histogram".into(),
            expr: "rate(metadata_gateway_upstream_fetch_duration_seconds[5m])".into(),
        },
    ];
    let caught = problems(&s, &broken);
    assert_eq!(caught.len(), 2, "{caught:?}");
    assert!(caught[1].contains("is a histogram"), "{caught:?}");
}

/// What the client saw, by `Cache-Status`.
#[derive(Debug, Default)]
struct Tally {
    hit: usize,
    stale: usize,
    miss: usize,
    error: usize,
}

impl Tally {
    fn add(&mut self, r: &Reply) {
        let cs = r.cache_status();
        match r.status {
            200 if cs.contains("; hit") => self.hit += 1,
            200 if cs.contains("fwd=stale") => self.stale += 1,
            200 if cs.contains("fwd=miss") => self.miss += 1,
            s if s >= 500 && cs.contains("fwd=miss") => self.error += 1,
            s => panic!("unexpected answer {s} {cs:?}"),
        }
    }

    fn total(&self) -> usize {
        self.hit + self.stale + self.miss + self.error
    }

    fn by_result(&self) -> BTreeMap<String, f64> {
        [
            ("hit", self.hit),
            ("stale", self.stale),
            ("miss", self.miss),
            ("error", self.error),
            ("not_found", 0),
            ("revalidated", 0),
            ("revalidation_failed", 0),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), count(v)))
        .collect()
    }
}

/// A dashboard query as Grafana would send it, for the test's Prometheus:
/// `$__rate_interval` and friends become fixed windows, the `$instance` and
/// `$document` selections "All". An unknown variable fails the test.
fn grafana_to_promql(expr: &str) -> String {
    let value = |name: &str| match name {
        // Wider than the test's whole run, so every sample is in the window.
        "__rate_interval" => "5m",
        "__range" => "5m",
        "__interval" => "5s",
        "instance" | "document" => ".*",
        other => panic!("unknown Grafana variable ${other} in {expr}"),
    };
    let mut out = String::with_capacity(expr.len());
    let mut rest = expr;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let (name, len) = if let Some(braced) = after.strip_prefix('{') {
            let end = braced.find('}').expect("closing } of a ${variable}");
            let name = braced[..end].split(':').next().unwrap_or_default();
            (name, end + 2)
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], end)
        };
        out.push_str(value(name));
        rest = &after[len..];
    }
    out.push_str(rest);
    out
}

/// The dashboard's panel queries (not templating), with their panel titles.
fn dashboard_panel_queries() -> Vec<(String, String)> {
    fn walk(v: &serde_json::Value, out: &mut Vec<(String, String)>) {
        if let Some(panels) = v.get("panels").and_then(|p| p.as_array()) {
            for p in panels {
                let title = p["title"].as_str().unwrap_or("").to_string();
                for t in p["targets"].as_array().into_iter().flatten() {
                    if let Some(expr) = t["expr"].as_str() {
                        out.push((title.clone(), expr.to_string()));
                    }
                }
                walk(p, out);
            }
        }
    }
    let path = repo_root().join("grafana/dashboards/oauth-metadata-gateway.json");
    let text = std::fs::read_to_string(&path).expect("dashboard");
    let json: serde_json::Value = serde_json::from_str(&text).expect("dashboard JSON");
    let mut out = Vec::new();
    walk(&json, &mut out);
    out
}

#[actix_web::test]
async fn prometheus_scrapes_the_gateway_and_answers_the_dashboard_hit_rate_query() {
    let upstream = Upstream::start(Behaviour::status(500)).await;
    upstream.set(Behaviour::json(document(&upstream.base_url)));
    // The warm-up fetch waits until the test releases it, so that the first
    // client requests are misses (collapsed onto that fetch).
    upstream.hold();
    let gw = TestGateway::in_front_of(
        &upstream,
        &[
            "--ttl",
            "2s",
            "--max-stale",
            "1h",
            "--upstream-timeout",
            "30s",
            "--retry-backoff-min",
            "200ms",
            "--retry-backoff-max",
            "400ms",
        ],
    )
    .await;
    let alerts = repo_root().join("deploy/prometheus/alerts.yml");
    let prom = Prometheus::start(JOB, &[gw.addr.to_string()], &[alerts.as_path()]).await;

    // A first scrape with every lookup counter at 0: each counter's first
    // sample in the query window is then 0, and all four series share their
    // sample times, so rate() extrapolates them alike and the ratio of rates
    // is the ratio of counts (up to floating-point rounding).
    let selector = format!("{LOOKUPS}{{job=\"{JOB}\"}}");
    prom.query_until(&selector, SCRAPE_LIMIT, |s| {
        s.len() == RESULTS.len() && s.iter().all(|(_, v)| *v == 0.0)
    })
    .await
    .unwrap_or_else(|e| panic!("no first scrape: {e}"));

    let mut tally = Tally::default();
    let url = gw.url(AS_PATH);
    let c = client();
    upstream.wait_for_requests(1, LIMIT).await;
    let cold = join_all((0..4).map(|_| send_with(&c, "GET", &url, &[])));
    let release = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        upstream.release();
    };
    let (replies, ()) = tokio::join!(cold, release);
    replies.iter().for_each(|r| tally.add(r));
    for _ in 0..30 {
        tally.add(&get(&url).await);
    }
    // An outage: the document turns stale once its TTL has passed.
    upstream.set(Behaviour::status(503));
    let deadline = tokio::time::Instant::now() + LIMIT;
    while tally.stale == 0 {
        assert!(tokio::time::Instant::now() < deadline, "never stale");
        tally.add(&get(&url).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..5 {
        tally.add(&get(&url).await);
    }
    assert!(
        tally.hit > 0 && tally.miss > 0 && tally.stale > 0,
        "{tally:?}"
    );

    // Wait until Prometheus has scraped the final counts, then compare.
    let total = count(tally.total());
    prom.query_until(&format!("sum({selector})"), SCRAPE_LIMIT, |s| {
        s.len() == 1 && s[0].1 == total
    })
    .await
    .unwrap_or_else(|e| panic!("Prometheus never saw all {total} lookups: {e}"));
    let by_result: BTreeMap<String, f64> = prom
        .query(&format!("sum by (result) ({selector})"))
        .await
        .expect("lookups by result")
        .into_iter()
        .map(|(m, v)| (m["result"].as_str().unwrap_or("?").to_string(), v))
        .collect();
    assert_eq!(by_result, tally.by_result(), "Prometheus vs client view");

    // The dashboard's hit-rate queries, exactly as written there.
    let expected = count(tally.hit) / total;
    let panels = dashboard_panel_queries();
    let hit_rate: Vec<_> = panels.iter().filter(|(t, _)| t == "Hit rate").collect();
    assert!(
        !hit_rate.is_empty(),
        "no \"Hit rate\" panel in the dashboard"
    );
    for (_, expr) in &hit_rate {
        let promql = grafana_to_promql(expr);
        let samples = prom.query(&promql).await.unwrap_or_else(|e| panic!("{e}"));
        assert!(!samples.is_empty(), "no answer to {promql}");
        for (labels, v) in samples {
            assert!(
                (0.0..=1.0).contains(&v) && (v - expected).abs() <= 1e-9,
                "{promql} {labels} = {v}, expected {expected:.4} ({tally:?})"
            );
        }
    }

    // Every panel query has data (no silent "No data" on the wall).
    let mut empty = Vec::new();
    for (title, expr) in &panels {
        let promql = grafana_to_promql(expr);
        match prom.query(&promql).await {
            Ok(s) if s.iter().any(|(_, v)| v.is_finite()) => {}
            other => empty.push(format!("{title}: {promql}: {other:?}")),
        }
    }
    assert!(
        empty.is_empty(),
        "panels without data:\n{}",
        empty.join("\n")
    );

    // Every alert rule has been evaluated on this data without an error.
    let deadline = tokio::time::Instant::now() + SCRAPE_LIMIT;
    loop {
        let data = prom.api("/api/v1/rules", &[]).await.expect("rules");
        let rules: Vec<_> = data["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().into_iter().flatten())
            .cloned()
            .collect();
        assert_eq!(rules.len(), rule_exprs(&alerts).len(), "rules loaded");
        let errors: Vec<_> = rules.iter().filter(|r| r["health"] == "err").collect();
        assert!(errors.is_empty(), "rules failing: {errors:#?}");
        if rules.iter().all(|r| r["health"] == "ok") {
            let down = rules.iter().find(|r| r["name"] == "GatewayDown");
            assert_eq!(
                down.map(|r| r["state"].clone()),
                Some("inactive".into()),
                "the gateway is up"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "rules not evaluated within {SCRAPE_LIMIT:?}: {rules:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(prom);
}

#[test]
fn grafana_variables_are_substituted() {
    assert_eq!(
        grafana_to_promql(
            r#"rate(x{instance=~"$instance",d=~"${document:regex}"}[$__rate_interval]) + $__range"#
        ),
        r#"rate(x{instance=~".*",d=~".*"}[5m]) + 5m"#
    );
}
