//! The refresh scheduler: one task for all configured documents that warms
//! the cache at start-up, fetches a successor shortly before each stored
//! document expires (refresh-ahead, with jitter) and retries a failing
//! upstream with capped exponential back-off.
//!
//! Its cost does not grow per document beyond one heap entry: there is no
//! task or timer per document, only a binary heap of due times and a bounded
//! number of refreshes in flight ([`MAX_IN_FLIGHT`]; each also waits for a
//! background permit of its upstream host, see [`crate::upstream::limiter`]).
//! At start-up every document is due at once, so warm-up is a queue drained
//! at the per-host concurrency bound, not a burst; refresh times are then
//! spread by [`crate::freshness::Freshness::jittered_refresh_age`].
//!
//! It is the only background fetcher of configured documents, so client
//! requests never wait on the upstream once a document is warm, and a
//! document has at most one background fetch at a time.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::cache::{DocumentSlot, MetadataCache};

/// Most refreshes in flight (or waiting for a host permit) at once.
pub const MAX_IN_FLIGHT: usize = 64;

/// Runs until `stop` changes or its sender is dropped.
pub async fn run(
    cache: Arc<MetadataCache>,
    slots: Arc<[Arc<DocumentSlot>]>,
    mut stop: watch::Receiver<()>,
) {
    let started = Instant::now();
    let now = tokio::time::Instant::now();
    let mut due: BinaryHeap<Reverse<(tokio::time::Instant, usize)>> =
        (0..slots.len()).map(|i| Reverse((now, i))).collect();
    let mut warming = slots.len();
    let mut running: JoinSet<()> = JoinSet::new();
    // Which slot each running refresh is for (also known after a panic).
    let mut running_slot: HashMap<tokio::task::Id, usize> = HashMap::new();
    loop {
        // Start every due refresh there is room for.
        while running.len() < MAX_IN_FLIGHT {
            match due.peek() {
                Some(Reverse((at, _))) if *at <= tokio::time::Instant::now() => {}
                _ => break,
            }
            let Some(Reverse((_, i))) = due.pop() else {
                break;
            };
            let Some(slot) = slots.get(i).cloned() else {
                continue;
            };
            let cache = cache.clone();
            let handle = running.spawn(async move { cache.refresh(&slot).await });
            running_slot.insert(handle.id(), i);
        }
        let next = due.peek().map(|Reverse((at, _))| *at);
        let room = running.len() < MAX_IN_FLIGHT;
        tokio::select! {
            done = running.join_next_with_id(), if !running.is_empty() => {
                let id = match done {
                    Some(Ok((id, ()))) => id,
                    Some(Err(e)) => e.id(),
                    None => continue,
                };
                let Some(i) = running_slot.remove(&id) else { continue };
                if let Some(slot) = slots.get(i) {
                    let at = cache.next_refresh_at(slot, fastrand::f64()).await;
                    due.push(Reverse((tokio::time::Instant::from_std(at), i)));
                }
                if warming > 0 {
                    warming -= 1;
                    if warming == 0 {
                        tracing::info!(
                            documents = slots.len(),
                            seconds = started.elapsed().as_secs_f64(),
                            "warm-up done: every configured document tried once"
                        );
                    }
                }
            }
            () = sleep_until(next), if room => {}
            _ = stop.changed() => break,
        }
    }
    running.shutdown().await;
    tracing::debug!("refresh scheduler stopped");
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
