//! Cache behaviour end to end: coalescing, refresh-ahead with a slow
//! upstream, stale-if-error for every failure mode, recovery, the
//! max-stale bound and a cold start with the upstream down. TTLs are short
//! and injected, so no test sleeps for more than a couple of seconds.

mod support;

use std::time::Duration;

use futures_util::future::join_all;
use support::*;

const FAST_RETRY: [&str; 4] = [
    "--retry-backoff-min",
    "200ms",
    "--retry-backoff-max",
    "400ms",
];

fn args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = FAST_RETRY.to_vec();
    v.extend_from_slice(extra);
    v
}

#[actix_web::test]
async fn two_hundred_concurrent_cold_requests_cause_one_fetch() {
    let upstream = Upstream::start(Behaviour::status(500)).await;
    let body = document(&upstream.base_url);
    upstream.set(Behaviour::json(body.clone()));
    upstream.hold();
    let gw = TestGateway::in_front_of(&upstream, &[]).await;
    let c = client();
    let url = gw.url(AS_PATH);
    let requests = join_all((0..200).map(|_| send_with(&c, "GET", &url, &[])));
    let release = async {
        // Let the requests pile up on the one fetch in flight, then answer.
        upstream.wait_for_requests(1, Duration::from_secs(5)).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        upstream.release();
    };
    let (replies, ()) = tokio::join!(requests, release);
    assert_eq!(upstream.requests(), 1, "exactly one upstream fetch");
    let mut collapsed = 0;
    for r in &replies {
        assert_eq!(r.status, 200);
        assert_eq!(r.body, body.as_bytes());
        if r.cache_status().contains("fwd=miss") {
            assert!(r.cache_status().contains("fwd-status=200"));
            collapsed += 1;
        } else {
            assert!(r.cache_status().contains("; hit"), "{}", r.cache_status());
        }
    }
    assert!(collapsed > 0, "some requests waited on the cold fetch");
}

#[actix_web::test]
async fn refresh_ahead_never_makes_clients_wait_on_a_slow_upstream() {
    let upstream = Upstream::start(Behaviour::status(500)).await;
    let v1 = document(&upstream.base_url);
    upstream.set(Behaviour::json(v1.clone()));
    let gw = TestGateway::in_front_of(
        &upstream,
        &args(&["--ttl", "1s", "--upstream-timeout", "10s"]),
    )
    .await;
    let url = gw.url(AS_PATH);
    assert_eq!(
        poll_until(&url, Duration::from_secs(5), |r| r.status == 200)
            .await
            .body,
        v1.as_bytes()
    );

    // The upstream now takes as long as the test wants: the refresh hangs.
    let v2 = v1.replace("user:read", "user:write");
    upstream.set(Behaviour::json(v2.clone()));
    upstream.hold();
    upstream.wait_for_requests(2, Duration::from_secs(5)).await;
    assert_eq!(
        upstream.in_flight(),
        1,
        "a refresh is waiting on the upstream"
    );
    // Past the TTL, while that refresh is still hanging, clients are served
    // at once from the cache: hit before the TTL, stale after it.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for _ in 0..20 {
        let r = get(&url).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body, v1.as_bytes());
        assert!(
            r.cache_status().contains("fwd=stale"),
            "{}",
            r.cache_status()
        );
        // Stale: no freshness left, and a downstream cache may ride out the
        // outage as long as --max-stale (24h) allows here (RFC 5861 §4).
        assert_stale_cache_control(r.header("cache-control"), 1 + 86_400);
    }
    assert_eq!(
        upstream.in_flight(),
        1,
        "the refresh was still in flight while clients were served"
    );
    assert_eq!(
        upstream.requests(),
        2,
        "one refresh at a time, no fetch per client request"
    );

    upstream.release();
    let r = poll_until(&url, Duration::from_secs(5), |r| r.body == v2.as_bytes()).await;
    assert!(r.cache_status().contains("; hit"), "{}", r.cache_status());
}

/// Every way an upstream can fail, with the `detail` it must produce.
fn failure_modes(issuer: &str) -> Vec<(&'static str, Behaviour, &'static str)> {
    let good = document(issuer);
    vec![
        ("connection closed", Behaviour::Close, "connect_error"),
        (
            "timeout",
            Behaviour::json(good.clone()).delayed(Duration::from_secs(3)),
            "timeout",
        ),
        ("http 503", Behaviour::status(503), "http_status"),
        ("http 404", Behaviour::status(404), "http_status"),
        (
            "html",
            Behaviour::with_content_type("text/html", "<html>maintenance</html>"),
            "invalid_document",
        ),
        (
            "invalid json",
            Behaviour::json("{\"issuer\": "),
            "invalid_document",
        ),
        (
            "not an object",
            Behaviour::json("[\"issuer\"]"),
            "invalid_document",
        ),
        (
            "issuer mismatch",
            Behaviour::json(good.replace(issuer, "https://evil.example")),
            "invalid_document",
        ),
        (
            // RFC 8259 §4: the escaped second `issuer` is the one a
            // last-wins parser (serde_json, JSON.parse) would keep.
            "duplicate issuer",
            Behaviour::json(good.replacen('{', "{\"issuer\":\"https://evil.example\",", 1)),
            "invalid_document",
        ),
        (
            "missing response_types_supported",
            Behaviour::json(good.replace("\"response_types_supported\":[\"code\"],", "")),
            "invalid_document",
        ),
        (
            "too large",
            Behaviour::json(format!(
                "{}{}",
                &good[..good.len() - 1],
                format_args!(",\"pad\":\"{}\"}}", "x".repeat(300 * 1024))
            )),
            "too_large",
        ),
    ]
}

#[actix_web::test]
async fn every_failure_mode_is_served_stale_and_never_cached() {
    let runs = (0..failure_modes("http://x").len()).map(|i| async move {
        let upstream = Upstream::start(Behaviour::status(500)).await;
        let good = document(&upstream.base_url);
        let (name, bad, detail) = failure_modes(&upstream.base_url).swap_remove(i);
        upstream.set(Behaviour::json(good.clone()));
        let gw = TestGateway::in_front_of(
            &upstream,
            &args(&[
                "--ttl",
                "500ms",
                "--upstream-timeout",
                "300ms",
                "--max-stale",
                "1h",
            ]),
        )
        .await;
        let url = gw.url(AS_PATH);
        poll_until(&url, Duration::from_secs(5), |r| r.status == 200).await;
        let before = upstream.requests();
        upstream.set(bad);
        // Wait for the refresh to have failed and the TTL to have passed.
        let r = poll_until(&url, Duration::from_secs(5), |r| {
            r.cache_status().contains("fwd=stale") && r.cache_status().contains(detail)
        })
        .await;
        assert_eq!(r.status, 200, "{name}");
        assert_eq!(
            r.body,
            good.as_bytes(),
            "{name}: the last good document, byte for byte"
        );
        // --ttl 500ms + --max-stale 1h, in whole seconds.
        assert_stale_cache_control(r.header("cache-control"), 3_600);
        if detail == "http_status" {
            assert!(
                r.cache_status().contains("fwd-status="),
                "{name}: {}",
                r.cache_status()
            );
        }
        // Many client requests during the outage: served stale, and the
        // upstream sees only the refresher's back-off retries.
        let during = upstream.requests();
        for _ in 0..50 {
            let r = get(&url).await;
            assert_eq!(r.status, 200, "{name}");
            assert_eq!(r.body, good.as_bytes(), "{name}");
        }
        let extra = upstream.requests() - during;
        assert!(extra <= 5, "{name}: {extra} fetches for 50 client requests");
        assert!(
            upstream.requests() > before,
            "{name}: the refresher kept trying"
        );
        (name, gw, upstream, good)
    });
    let survivors = join_all(runs).await;

    // Recovery: a good document again replaces the stale one.
    for (name, gw, upstream, good) in survivors {
        let v2 = good.replace("entries:read", "entries:write");
        upstream.set(Behaviour::json(v2.clone()));
        let r = poll_until(&gw.url(AS_PATH), Duration::from_secs(5), |r| {
            r.body == v2.as_bytes()
        })
        .await;
        assert!(
            r.cache_status().contains("; hit"),
            "{name}: {}",
            r.cache_status()
        );
    }
}

/// A document with two `issuer` members (the second one escaped, so only
/// a parser that unescapes names sees the duplicate) is refused: 502 when
/// nothing is cached, and never replaces the last good copy.
#[actix_web::test]
async fn a_document_with_a_duplicate_member_is_refused_cold_and_warm() {
    let upstream = Upstream::start(Behaviour::status(500)).await;
    let good = document(&upstream.base_url);
    let forged = good.replacen(
        "\"issuer\"",
        "\"issuer\":\"https://evil.example\",\"\\u0069ssuer\"",
        1,
    );
    assert!(forged.contains(r#""\u0069ssuer""#), "{forged}");
    upstream.set(Behaviour::json(forged.clone()));
    let gw = TestGateway::in_front_of(&upstream, &args(&["--ttl", "300ms"])).await;
    let url = gw.url(AS_PATH);
    let r = get(&url).await;
    assert_eq!(r.status, 502, "{}", String::from_utf8_lossy(&r.body));
    assert!(
        r.cache_status().contains("detail=invalid_document"),
        "{}",
        r.cache_status()
    );
    let why = r.json()["error_description"].as_str().unwrap().to_string();
    assert!(why.contains("duplicate member name \"issuer\""), "{why}");

    // Warm: a good copy stays the one served while the upstream sends
    // the forged document.
    upstream.set(Behaviour::json(good.clone()));
    poll_until(&url, Duration::from_secs(5), |r| r.status == 200).await;
    upstream.set(Behaviour::json(forged));
    let before = upstream.requests();
    let r = poll_until(&url, Duration::from_secs(5), |r| {
        r.cache_status().contains("fwd=stale")
    })
    .await;
    assert!(
        upstream.requests() > before,
        "the forged document was fetched"
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.body, good.as_bytes());
}

#[actix_web::test]
async fn max_stale_bounds_how_long_a_stale_document_is_served() {
    let upstream = Upstream::start(Behaviour::status(500)).await;
    upstream.set(Behaviour::json(document(&upstream.base_url)));
    let gw = TestGateway::in_front_of(
        &upstream,
        &args(&["--ttl", "300ms", "--max-stale", "600ms"]),
    )
    .await;
    let url = gw.url(AS_PATH);
    poll_until(&url, Duration::from_secs(5), |r| r.status == 200).await;
    assert_eq!(get(&gw.url("/readyz")).await.status, 200);
    upstream.set(Behaviour::status(503));
    poll_until(&url, Duration::from_secs(5), |r| {
        r.cache_status().contains("fwd=stale")
    })
    .await;
    let r = poll_until(&url, Duration::from_secs(5), |r| r.status != 200).await;
    assert_eq!(r.status, 502);
    assert_eq!(r.json()["error"], "temporarily_unavailable");
    assert!(r.json()["error_description"]
        .as_str()
        .unwrap()
        .contains("503"));
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=1).contains(&retry), "retry-after {retry}");
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert!(
        r.cache_status().contains("fwd=miss"),
        "{}",
        r.cache_status()
    );
    let ready = get(&gw.url("/readyz")).await;
    assert_eq!(ready.status, 503);
    assert!(ready.json()["reason"].as_str().unwrap().contains("503"));
}

#[actix_web::test]
async fn cold_start_with_the_upstream_down_answers_503_and_keeps_running() {
    let (_reserved, port) = refusing_port();
    let upstream = format!("http://127.0.0.1:{port}");
    let gw = TestGateway::start(&args(&[
        "--upstream",
        &upstream,
        "--upstream-timeout",
        "2s",
    ]))
    .await;
    let url = gw.url(AS_PATH);
    for _ in 0..3 {
        let r = get(&url).await;
        assert_eq!(r.status, 503);
        assert_eq!(r.json()["error"], "temporarily_unavailable");
        assert!(r.header("retry-after").unwrap().parse::<u64>().unwrap() >= 1);
        assert!(
            r.cache_status().contains("detail=connect_error"),
            "{}",
            r.cache_status()
        );
        assert_eq!(r.header("cache-control"), Some("no-store"));
    }
    assert_eq!(get(&gw.url("/healthz")).await.status, 200);
    assert_eq!(get(&gw.url("/readyz")).await.status, 503);
}

#[actix_web::test]
async fn cold_failures_back_off_instead_of_fetching_per_request() {
    let upstream = Upstream::start(Behaviour::Close).await;
    let gw = TestGateway::in_front_of(
        &upstream,
        &["--retry-backoff-min", "2s", "--retry-backoff-max", "2s"],
    )
    .await;
    upstream.wait_for_requests(1, Duration::from_secs(5)).await;
    let url = gw.url(AS_PATH);
    let c = client();
    let replies = join_all((0..50).map(|_| send_with(&c, "GET", &url, &[]))).await;
    assert!(replies.iter().all(|r| r.status == 503));
    assert!(upstream.requests() <= 2, "{} fetches", upstream.requests());
    // Recovery after the back-off, with no client involvement needed.
    let good = document(&upstream.base_url);
    upstream.set(Behaviour::json(good.clone()));
    let r = poll_until(&url, Duration::from_secs(6), |r| r.status == 200).await;
    assert_eq!(r.body, good.as_bytes());
}

#[actix_web::test]
async fn graceful_stop_returns_ok() {
    let upstream = Upstream::start(Behaviour::status(500)).await;
    upstream.set(Behaviour::json(document(&upstream.base_url)));
    let gw = TestGateway::in_front_of(&upstream, &[]).await;
    poll_until(&gw.url(AS_PATH), Duration::from_secs(5), |r| {
        r.status == 200
    })
    .await;
    gw.stop().await.expect("clean shutdown");
}

/// `public, max-age=0, stale-if-error=N` with N the document's whole
/// serving window, `--ttl` + `--max-stale` in seconds (RFC 5861 §4: with
/// `max-age=0` a downstream cache counts staleness from `Age`, so it may
/// use its copy until `Age` reaches the end of the window here).
fn assert_stale_cache_control(cc: Option<&str>, window: u64) {
    let cc = cc.expect("cache-control");
    let n: u64 = cc
        .strip_prefix("public, max-age=0, stale-if-error=")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected cache-control {cc:?}"));
    assert!(
        (window - 1..=window).contains(&n),
        "stale-if-error={n}, window (ttl + max-stale) {window}"
    );
}
