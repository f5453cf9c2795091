//! Upstream freshness (RFC 9111 §4.2): the gateway takes a document's
//! lifetime from the upstream's 200 (`s-maxage`, else `max-age`, else
//! `Expires` − `Date`), subtracts the upstream's `Age`, and clamps the
//! freshness left to [--min-ttl, --ttl]; forbidding directives
//! (`no-store`, `no-cache`, `private`, `max-age=0`) hold it for --min-ttl;
//! `--ignore-upstream-freshness` keeps the fixed --ttl.
//!
//! What clients see on a fresh document: `Cache-Control: public,
//! max-age=L, stale-if-error=S` with L = upstream Age at receipt + the
//! freshness the upstream allowed, `Age: <upstream Age + seconds held>`,
//! and `Cache-Status: ...; ttl=<R − held>` (R: the clamped freshness the
//! gateway holds it for). Within the bounds a cache in front computing
//! max-age − Age gets exactly the gateway's remaining freshness; where
//! --min-ttl holds a document longer than the upstream allowed, the cache
//! in front is told only the upstream's (possibly none), and its
//! `stale-if-error` runs to the end of the gateway's own window. Whole
//! seconds, so every bound allows 1 s of rounding.

mod support;

use std::ops::RangeInclusive;
use std::time::{Duration, SystemTime};

use support::*;

/// --max-stale default (24h): the stale-if-error a fresh document carries.
const MAX_STALE: u64 = 86_400;

/// Starts an upstream answering the document with `headers`, a gateway
/// with `args` in front of it, and returns the first (cold) and second
/// (cached) replies.
async fn served_with(headers: &[(&str, &str)], args: &[&str]) -> (Upstream, Reply, Reply) {
    let upstream = Upstream::start(Behaviour::status(500)).await;
    upstream.set(Behaviour::json(document(&upstream.base_url)));
    upstream.set_headers(headers);
    let gw = TestGateway::in_front_of(&upstream, args).await;
    let url = gw.url(AS_PATH);
    let cold = get(&url).await;
    let warm = get(&url).await;
    assert_eq!(upstream.requests(), 1, "the second request was a cache hit");
    drop(gw);
    (upstream, cold, warm)
}

/// What one reply must carry.
struct Expect {
    max_age: RangeInclusive<u64>,
    age: RangeInclusive<u64>,
    ttl: RangeInclusive<i64>,
    stale_if_error: RangeInclusive<u64>,
}

/// Held for --min-ttl (5 s) while downstream caches are told only the
/// `told` seconds the upstream allowed, on top of its `age`: their
/// `stale-if-error` runs to the end of the gateway's own window.
fn held_for_min_ttl(told: u64, age: u64) -> Expect {
    Expect {
        max_age: age + told.saturating_sub(1)..=age + told,
        age: age..=age + 1,
        ttl: 4..=5,
        stale_if_error: MAX_STALE + 5 - told - 2..=MAX_STALE + 5 - told,
    }
}

#[track_caller]
fn assert_fresh(what: &str, r: &Reply, want: &Expect) {
    assert_eq!(
        r.status,
        200,
        "{what}: {}",
        String::from_utf8_lossy(&r.body)
    );
    let cc = r.header("cache-control").unwrap_or("");
    assert!(
        cc.starts_with("public, max-age="),
        "{what}: Cache-Control {cc:?}"
    );
    assert!(
        want.max_age.contains(&r.max_age()),
        "{what}: max-age {} not in {:?} (Cache-Control {cc:?})",
        r.max_age(),
        want.max_age
    );
    let sie = directive(cc, "stale-if-error")
        .unwrap_or_else(|| panic!("{what}: no stale-if-error in {cc:?}"));
    assert!(
        want.stale_if_error.contains(&sie),
        "{what}: stale-if-error {sie} not in {:?} (Cache-Control {cc:?})",
        want.stale_if_error
    );
    assert!(
        want.age.contains(&r.age()),
        "{what}: Age {} not in {:?}",
        r.age(),
        want.age
    );
    assert!(
        want.ttl.contains(&r.ttl()),
        "{what}: Cache-Status {:?}, ttl not in {:?}",
        r.cache_status(),
        want.ttl
    );
    assert!(
        !r.cache_status().contains("fwd=stale"),
        "{what}: a fresh document: {:?}",
        r.cache_status()
    );
}

/// Runs one case with `--ttl 300s --min-ttl 5s` (plus `extra`), checking
/// the cold and the cached reply.
async fn case(what: &str, headers: &[(&str, &str)], extra: &[&str], want: Expect) {
    let mut args = vec!["--ttl", "300s", "--min-ttl", "5s"];
    args.extend_from_slice(extra);
    let (_upstream, cold, warm) = served_with(headers, &args).await;
    // The start-up warm-up races the first request: the first reply is the
    // fetch (a miss, or collapsed into the warm-up) or, on a slow machine,
    // already a hit on the warm-up's copy. Either way one fetch only.
    assert!(
        cold.cache_status().contains("fwd=miss") || cold.cache_status().contains("; hit"),
        "{what}: {}",
        cold.cache_status()
    );
    assert!(
        warm.cache_status().contains("; hit"),
        "{what}: {}",
        warm.cache_status()
    );
    assert_eq!(cold.body, warm.body);
    assert_fresh(&format!("{what} (cold)"), &cold, &want);
    assert_fresh(&format!("{what} (cached)"), &warm, &want);
}

/// A lifetime of `secs` with no upstream Age.
fn lifetime(secs: u64) -> Expect {
    Expect {
        max_age: secs.saturating_sub(1)..=secs + 1,
        age: 0..=1,
        ttl: secs as i64 - 1..=secs as i64,
        stale_if_error: MAX_STALE - 2..=MAX_STALE,
    }
}

#[actix_web::test]
async fn max_age_sets_the_lifetime() {
    case(
        "max-age=30",
        &[("cache-control", "max-age=30")],
        &[],
        lifetime(30),
    )
    .await;
}

#[actix_web::test]
async fn s_maxage_wins_over_max_age() {
    case(
        "s-maxage=20, max-age=60",
        &[("cache-control", "s-maxage=20, max-age=60")],
        &[],
        lifetime(20),
    )
    .await;
}

#[actix_web::test]
async fn expires_minus_date_without_max_age() {
    let now = SystemTime::now();
    let date = http_date(now);
    let expires = http_date(now + Duration::from_secs(40));
    case(
        "Expires = Date + 40s",
        &[("date", &date), ("expires", &expires)],
        &[],
        // Date has whole-second precision and may be up to a second old by
        // the time the gateway reads it.
        Expect {
            max_age: 38..=41,
            age: 0..=1,
            ttl: 38..=40,
            stale_if_error: MAX_STALE - 2..=MAX_STALE,
        },
    )
    .await;
}

#[actix_web::test]
async fn max_age_wins_over_expires() {
    let now = SystemTime::now();
    let date = http_date(now);
    let expires = http_date(now + Duration::from_secs(200));
    case(
        "max-age=30 with Expires = Date + 200s",
        &[
            ("cache-control", "max-age=30"),
            ("date", &date),
            ("expires", &expires),
        ],
        &[],
        lifetime(30),
    )
    .await;
}

#[actix_web::test]
async fn the_upstreams_age_is_subtracted_and_passed_on() {
    case(
        "max-age=60, Age: 25",
        &[("cache-control", "max-age=60"), ("age", "25")],
        &[],
        Expect {
            // L = 25 + 35: a cache in front computes 60 − Age = the 35 s
            // the gateway has left.
            max_age: 59..=61,
            age: 25..=26,
            ttl: 34..=35,
            stale_if_error: MAX_STALE - 2..=MAX_STALE,
        },
    )
    .await;
}

#[actix_web::test]
async fn a_long_lifetime_is_clamped_to_ttl() {
    case(
        "max-age=100000",
        &[("cache-control", "max-age=100000")],
        &[],
        lifetime(300),
    )
    .await;
}

#[actix_web::test]
async fn a_short_lifetime_is_raised_to_min_ttl() {
    case(
        "max-age=1",
        &[("cache-control", "max-age=1")],
        &[],
        held_for_min_ttl(1, 0),
    )
    .await;
}

#[actix_web::test]
async fn an_age_beyond_the_lifetime_leaves_min_ttl() {
    case(
        "max-age=60, Age: 600",
        &[("cache-control", "max-age=60"), ("age", "600")],
        &[],
        // Already stale upstream: the gateway still holds it for
        // --min-ttl, but tells caches in front max-age = Age: stale.
        held_for_min_ttl(0, 600),
    )
    .await;
}

#[actix_web::test]
async fn forbidding_directives_hold_the_document_for_min_ttl() {
    for cc in [
        "no-store",
        "no-cache",
        "private",
        "max-age=0",
        "public, no-cache, max-age=3600",
        "private, max-age=3600",
    ] {
        case(cc, &[("cache-control", cc)], &[], held_for_min_ttl(0, 0)).await;
    }
}

#[actix_web::test]
async fn no_freshness_information_means_ttl() {
    let (_upstream, cold, warm) = served_with(&[], &["--ttl", "120s", "--min-ttl", "5s"]).await;
    for (what, r) in [("cold", &cold), ("cached", &warm)] {
        assert_fresh(what, r, &lifetime(120));
    }
}

#[actix_web::test]
async fn ignore_upstream_freshness_keeps_the_fixed_ttl() {
    case(
        "max-age=30 with --ignore-upstream-freshness",
        &[("cache-control", "max-age=30"), ("age", "10")],
        &["--ignore-upstream-freshness"],
        // The upstream's headers count for nothing, its Age included.
        Expect {
            max_age: 299..=300,
            age: 0..=1,
            ttl: 299..=300,
            stale_if_error: MAX_STALE - 2..=MAX_STALE,
        },
    )
    .await;
}

#[actix_web::test]
async fn age_grows_while_held_and_max_age_stays() {
    let upstream = Upstream::start(Behaviour::status(500)).await;
    upstream.set(Behaviour::json(document(&upstream.base_url)));
    upstream.set_headers(&[("cache-control", "max-age=30"), ("age", "5")]);
    let gw = TestGateway::in_front_of(&upstream, &["--ttl", "300s", "--min-ttl", "5s"]).await;
    let url = gw.url(AS_PATH);
    let first = get(&url).await;
    assert_fresh(
        "first",
        &first,
        &Expect {
            max_age: 29..=31,
            age: 5..=6,
            ttl: 24..=25,
            stale_if_error: MAX_STALE - 2..=MAX_STALE,
        },
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let later = get(&url).await;
    assert_fresh(
        "2 s later",
        &later,
        &Expect {
            max_age: 29..=31,
            age: 7..=8,
            ttl: 22..=23,
            stale_if_error: MAX_STALE - 2..=MAX_STALE,
        },
    );
    assert_eq!(upstream.requests(), 1);
}

#[actix_web::test]
async fn a_short_upstream_lifetime_brings_a_new_version_within_seconds() {
    let upstream = Upstream::start(Behaviour::status(500)).await;
    let v1 = document(&upstream.base_url);
    upstream.set(Behaviour::json(v1.clone()));
    upstream.set_headers(&[("cache-control", "max-age=1")]);
    let gw = TestGateway::in_front_of(
        &upstream,
        &[
            "--ttl",
            "300s",
            "--min-ttl",
            "1s",
            "--retry-backoff-min",
            "200ms",
            "--retry-backoff-max",
            "400ms",
        ],
    )
    .await;
    let url = gw.url(AS_PATH);
    let r = get(&url).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, v1.as_bytes());

    // The upstream publishes a new document; with --ttl alone the gateway
    // would keep the first one for five minutes.
    let v2 = v1.replace("user:read", "user:write");
    upstream.set(Behaviour::json(v2.clone()));
    let r = poll_until(&url, Duration::from_secs(8), |r| r.body == v2.as_bytes()).await;
    assert_eq!(r.status, 200);
    assert!(
        !r.cache_status().contains("fwd=stale"),
        "{}",
        r.cache_status()
    );

    // And again: every version is picked up, not just the first change.
    let v3 = v2.replace("entries:read", "entries:write");
    upstream.set(Behaviour::json(v3.clone()));
    poll_until(&url, Duration::from_secs(8), |r| r.body == v3.as_bytes()).await;
}
