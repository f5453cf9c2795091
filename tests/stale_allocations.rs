//! A stale answer allocates no more than a hit: the upstream's error that
//! a stale answer carries (for `Cache-Status: fwd-status`/`detail`) is the
//! slot's shared copy, not a clone with a `String` per request.
//!
//! Counted with a global allocator that counts the allocations of the
//! test's own thread (the lookups run on it: `actix_web::test` is a
//! current-thread runtime), so the fetcher thread and moka's housekeeping
//! do not blur the figures.

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::Duration;

use oauth_metadata_gateway::cache_rules::outcome::CacheOutcome;
use oauth_metadata_gateway::{Cli, Generation};
use support::*;

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: every call is passed on to the system allocator unchanged; the
// only addition is a thread-local counter with a const initialiser (no
// allocation, no lazy init inside the allocator).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

/// Allocations per lookup of `slot`, over `n` lookups that all have
/// `outcome`.
async fn allocations_per_lookup(gw: &Generation, outcome: CacheOutcome, n: u64) -> u64 {
    let slot = &gw.slots[0];
    // Warm whatever is lazily set up on first use.
    assert_eq!(gw.cache.lookup(slot).await.outcome, outcome);
    let before = allocations();
    for _ in 0..n {
        let l = gw.cache.lookup(slot).await;
        assert_eq!(l.outcome, outcome);
        drop(l);
    }
    (allocations() - before).div_ceil(n)
}

#[actix_web::test]
async fn a_stale_answer_allocates_no_more_than_a_hit() {
    let upstream = Upstream::start(Behaviour::status(500)).await;
    upstream.set(Behaviour::json(document(&upstream.base_url)));
    let config = Cli::config_from_args([
        "oauth-metadata-gateway",
        "--upstream",
        &upstream.base_url,
        "--ttl",
        "1s",
        "--min-ttl",
        "1s",
        "--max-stale",
        "1h",
        "--retry-backoff-min",
        "1h",
        "--retry-backoff-max",
        "1h",
    ])
    .unwrap();
    let gw = Generation::new(&config).unwrap();
    let slot = &gw.slots[0];
    assert_eq!(gw.cache.lookup(slot).await.outcome, CacheOutcome::Miss);
    let hit = allocations_per_lookup(&gw, CacheOutcome::Hit, 200).await;

    // The upstream now fails with an error that carries text (a content
    // type): the refresh keeps the stored copy, which goes stale.
    upstream.set(Behaviour::with_content_type(
        "text/html",
        "<html>down</html>",
    ));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    gw.cache.refresh(slot, true).await;
    let error = slot.last_error().expect("the refresh failed");
    assert_eq!(error.outcome_label(), "invalid_document");
    let stale = allocations_per_lookup(&gw, CacheOutcome::Stale, 200).await;
    let l = gw.cache.lookup(slot).await;
    assert_eq!(
        l.error.as_ref().map(|e| e.outcome_label()),
        Some("invalid_document"),
        "a stale answer still says why"
    );
    assert!(
        stale <= hit,
        "a stale lookup allocates {stale} times, a hit {hit} times"
    );
}
