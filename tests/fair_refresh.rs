//! One hung upstream host never delays the refreshes of another: each host
//! has its own queue of due refreshes and at most its background share of
//! `--upstream-concurrency` in flight, and the hosts take turns.
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

#[actix_web::test]
async fn a_hung_host_never_delays_the_refreshes_of_another() {
    let hung = Upstream::start(Behaviour::status(500)).await;
    // Answers after 4 s; the gateway gives up after 1 s.
    hung.set(Behaviour::tenants(&hung.base_url, Duration::from_secs(4)));
    let healthy = tenants_upstream().await;

    let mut config = String::new();
    for i in 0..HEALTHY_ISSUERS {
        let _ = writeln!(
            config,
            "[[authorization_server]]\nissuer = \"{}/h{i}\"",
            healthy.base_url
        );
    }
    for i in 0..HUNG_ISSUERS {
        let _ = writeln!(
            config,
            "[[authorization_server]]\nissuer = \"{}/x{i}\"",
            hung.base_url
        );
    }
    let (_dir, path) = config_file_in_temp_dir(&config);
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
        "1s",
        // A background share of one per host: the hung host may hold one
        // refresh at a time, and so may the healthy one.
        "--upstream-concurrency",
        "2",
        "--retry-backoff-min",
        "1s",
        "--retry-backoff-max",
        "2s",
        "--ready-min-percent",
        "1",
    ])
    .await;
    let urls: Vec<String> = (0..HEALTHY_ISSUERS)
        .map(|i| gw.url(&format!("{AS_PATH}/h{i}")))
        .collect();
    for url in &urls {
        poll_until(url, Duration::from_secs(10), |r| r.status == 200).await;
    }

    // Three TTL periods, sampled every 200 ms (bounded: 60 rounds).
    let mut oldest = 0;
    let mut stale = Vec::new();
    for round in 0..(TTL_SECS * 3 * 5) {
        for url in &urls {
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
    assert!(hung.requests() > 0, "the hung host was tried");
    gw.stop().await.unwrap();
}
