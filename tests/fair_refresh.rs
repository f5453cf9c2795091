//! One hung upstream host never delays the refreshes of another: each host
//! has its own queue of due refreshes and at most its background share of
//! `--upstream-concurrency` in flight (one while it is hung), and the hosts
//! take turns.
//!
//! Two real loopback upstreams (two ports: the limiter counts a host as
//! scheme, host and port): one whose every answer comes after
//! `--upstream-timeout`, with many issuers, and a healthy one with a few.
//! The healthy documents must be refreshed in time, period after period:
//! their `Age` stays below the TTL, never served stale.

mod support;

use std::fmt::Write as _;
use std::time::Duration;

use support::*;

/// More hung issuers than the scheduler had in-flight places before it
/// queued per host (64): they used to fill every place, each waiting for
/// the hung host's one background permit.
const HUNG_ISSUERS: usize = 80;
const HEALTHY_ISSUERS: usize = 4;
const TTL_SECS: u64 = 4;

/// A gateway for `HEALTHY_ISSUERS` issuers on `healthy` and `per_hung`
/// on each of `hung`, TTL `TTL_SECS`, the given `--upstream-timeout` and
/// `--upstream-concurrency`, back-off 1 s, ready with one document.
async fn start_gateway(
    healthy: &Upstream,
    hung: &[&Upstream],
    per_hung: usize,
    upstream_timeout: &str,
    upstream_concurrency: &str,
) -> (tempfile::TempDir, TestGateway) {
    let mut config = String::new();
    for i in 0..HEALTHY_ISSUERS {
        let _ = writeln!(
            config,
            "[[authorization_server]]\nissuer = \"{}/h{i}\"",
            healthy.base_url
        );
    }
    for (h, upstream) in hung.iter().enumerate() {
        for i in 0..per_hung {
            let _ = writeln!(
                config,
                "[[authorization_server]]\nissuer = \"{}/x{h}-{i}\"",
                upstream.base_url
            );
        }
    }
    let (dir, path) = config_file_in_temp_dir(&config);
    let ttl = format!("{TTL_SECS}s");
    let gw = TestGateway::start(&[
        "--config",
        &path,
        "--ttl",
        &ttl,
        "--min-ttl",
        &ttl,
        "--max-stale",
        "1h",
        "--upstream-timeout",
        upstream_timeout,
        "--upstream-concurrency",
        upstream_concurrency,
        "--retry-backoff-min",
        "1s",
        "--retry-backoff-max",
        "1s",
        "--ready-min-percent",
        "1",
    ])
    .await;
    (dir, gw)
}

/// The healthy documents' URLs on `gw`, once each is served.
async fn healthy_urls(gw: &TestGateway) -> Vec<String> {
    let urls: Vec<String> = (0..HEALTHY_ISSUERS)
        .map(|i| gw.url(&format!("{AS_PATH}/h{i}")))
        .collect();
    for url in &urls {
        poll_until(url, Duration::from_secs(10), |r| r.status == 200).await;
    }
    urls
}

/// Three TTL periods, sampled every 200 ms (bounded: 60 rounds): every
/// answer fresh, its `Age` below the TTL.
async fn assert_refreshed_in_time(urls: &[String]) {
    let mut oldest = 0;
    let mut stale = Vec::new();
    for round in 0..(TTL_SECS * 3 * 5) {
        for url in urls {
            let r = get(url).await;
            assert_eq!(r.status, 200, "{url}");
            let age = r.age();
            oldest = oldest.max(age);
            if age >= TTL_SECS || r.cache_status().contains("stale") {
                stale.push(format!(
                    "round {round}: {url} Age {age} {}",
                    r.cache_status()
                ));
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        stale.is_empty(),
        "healthy documents served stale (oldest Age {oldest}): {stale:#?}"
    );
}

#[actix_web::test]
async fn a_hung_host_never_delays_the_refreshes_of_another() {
    let hung = Upstream::start(Behaviour::status(500)).await;
    // Answers after 4 s; the gateway gives up after 1 s.
    hung.set(Behaviour::tenants(&hung.base_url, Duration::from_secs(4)));
    let healthy = tenants_upstream().await;

    // Upstream timeout 1 s; a background share of one per host: the hung
    // host may hold one refresh at a time, and so may the healthy one.
    let (_dir, gw) = start_gateway(&healthy, &[&hung], HUNG_ISSUERS, "1s", "2").await;
    let urls = healthy_urls(&gw).await;

    assert_refreshed_in_time(&urls).await;
    assert!(hung.requests() > 0, "the hung host was tried");
    gw.stop().await.unwrap();
}

/// Hung hosts enough to fill every in-flight place of the scheduler with
/// their shares (6 hosts × a share of 48 > 256 places) never hold them:
/// after its first timeouts a hung host runs one refresh at a time, so a
/// healthy host's refresh never waits for a place to free.
#[actix_web::test]
async fn many_hung_hosts_never_fill_the_schedulers_places() {
    const HUNG_HOSTS: usize = 6;
    const ISSUERS_PER_HUNG_HOST: usize = 60;
    let mut hung = Vec::new();
    for _ in 0..HUNG_HOSTS {
        let upstream = Upstream::start(Behaviour::status(500)).await;
        upstream.set(Behaviour::tenants(
            &upstream.base_url,
            Duration::from_secs(4),
        ));
        hung.push(upstream);
    }
    let healthy = tenants_upstream().await;
    let hung: Vec<&Upstream> = hung.iter().collect();
    // Upstream timeout 2 s; a background share of 48 per host.
    let (_dir, gw) = start_gateway(&healthy, &hung, ISSUERS_PER_HUNG_HOST, "2s", "64").await;
    let urls = healthy_urls(&gw).await;
    assert_refreshed_in_time(&urls).await;
    let peak: usize = hung.iter().map(|u| u.peak_in_flight()).max().unwrap_or(0);
    assert!(peak >= 1, "the hung hosts were tried");
    gw.stop().await.unwrap();
}
