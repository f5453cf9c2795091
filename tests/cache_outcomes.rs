//! The cache's outcomes through the library API, without the refresher, so
//! the request path's own fetch (`Miss`, RFC 9211 `stored`) and the error
//! path can be observed deterministically.

mod support;

use std::time::Duration;

use oauth_metadata_gateway::cache_rules::outcome::CacheOutcome;
use oauth_metadata_gateway::Generation;
use support::*;

fn gateway_for(upstream: &str, extra: &[&str]) -> std::sync::Arc<Generation> {
    let mut args = vec!["oauth-metadata-gateway", "--upstream", upstream];
    args.extend_from_slice(extra);
    Generation::new(&support::config_from_args(args).unwrap()).unwrap()
}

#[actix_web::test]
async fn a_request_on_an_empty_cache_fetches_stores_then_hits() {
    let upstream = Upstream::start(Behaviour::status(500)).await;
    let body = document(&upstream.base_url);
    upstream.set(Behaviour::json(body.clone()));
    let gw = gateway_for(&upstream.base_url, &[]);
    let slot = &gw.slots[0];

    let first = gw.cache.lookup(slot).await;
    assert_eq!(first.outcome, CacheOutcome::Miss);
    assert_eq!(
        first.stored.as_ref().unwrap().document.body,
        body.as_bytes()
    );
    let second = gw.cache.lookup(slot).await;
    assert_eq!(second.outcome, CacheOutcome::Hit);
    assert_eq!(upstream.requests(), 1);
}

#[actix_web::test]
async fn concurrent_lookups_collapse_onto_one_fetch() {
    let upstream = Upstream::start(Behaviour::status(500)).await;
    upstream.set(Behaviour::json(document(&upstream.base_url)).delayed(Duration::from_millis(200)));
    let gw = gateway_for(&upstream.base_url, &[]);
    let slot = &gw.slots[0];
    let outcomes: Vec<_> = futures_util::future::join_all((0..50).map(|_| gw.cache.lookup(slot)))
        .await
        .into_iter()
        .map(|l| l.outcome)
        .collect();
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| **o == CacheOutcome::Miss)
            .count(),
        1
    );
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| **o == CacheOutcome::Collapsed)
            .count(),
        49
    );
    assert_eq!(upstream.requests(), 1);
}

#[actix_web::test]
async fn a_failed_fetch_stores_nothing_and_backs_off() {
    let upstream = Upstream::start(Behaviour::status(500)).await;
    let gw = gateway_for(
        &upstream.base_url,
        &["--retry-backoff-min", "10s", "--retry-backoff-max", "10s"],
    );
    let slot = &gw.slots[0];
    let first = gw.cache.lookup(slot).await;
    assert_eq!(first.outcome, CacheOutcome::Error);
    assert!(first.stored.is_none());
    assert!(
        first.retry_after > Duration::from_secs(7),
        "{:?}",
        first.retry_after
    );
    // During the back-off: the same error at once, and no new fetch.
    upstream.set(Behaviour::json(document(&upstream.base_url)));
    for _ in 0..10 {
        let l = gw.cache.lookup(slot).await;
        assert_eq!(l.outcome, CacheOutcome::Error);
        assert_eq!(l.error.as_ref().unwrap().outcome_label(), "http_status");
    }
    assert_eq!(upstream.requests(), 1);
    assert!(gw.cache.servable(slot).await.is_none());
}

#[actix_web::test]
async fn background_work_woken_at_a_jittered_time_fetches() {
    // --ttl 1s: refresh age 0.9 s, and the scheduler may choose any time
    // from 0.8 s (a tenth of the TTL earlier) so refreshes drift apart.
    let upstream = Upstream::start(Behaviour::status(500)).await;
    upstream.set(Behaviour::json(document(&upstream.base_url)));
    let gw = gateway_for(&upstream.base_url, &["--ttl", "1s", "--min-ttl", "1s"]);
    let slot = &gw.slots[0];
    assert_eq!(gw.cache.lookup(slot).await.outcome, CacheOutcome::Miss);

    // Too early for any schedule: a client's fetch just stored it.
    gw.cache.refresh(slot, false).await;
    assert_eq!(upstream.requests(), 1, "a fresh copy is not refetched");

    // Woken at 0.85 s, inside the jitter window: it fetches.
    tokio::time::sleep(Duration::from_millis(850)).await;
    gw.cache.refresh(slot, false).await;
    assert_eq!(upstream.requests(), 2, "the jittered schedule is obeyed");
}
