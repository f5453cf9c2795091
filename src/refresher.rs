//! The background refresher: one task per document that fetches a successor
//! shortly before the stored document expires (refresh-ahead), retries a
//! failing upstream with capped exponential back-off, and warms the cache at
//! start-up. It is the only fetcher once the cache is warm, so client
//! requests never wait on the upstream and a document is fetched at most
//! one at a time.

use std::sync::Arc;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::cache::{DocumentSlot, MetadataCache};

/// Runs until `stop` changes or its sender is dropped.
pub async fn run(
    cache: Arc<MetadataCache>,
    slot: Arc<DocumentSlot>,
    mut stop: watch::Receiver<()>,
) {
    loop {
        let due = Instant::from_std(cache.next_refresh_at(&slot).await);
        if due > Instant::now() {
            // Re-reads the schedule after waking: a request-path fetch may
            // have stored a document meanwhile, moving the next refresh.
            tokio::select! {
                _ = tokio::time::sleep_until(due) => continue,
                _ = stop.changed() => break,
            }
        }
        tokio::select! {
            _ = cache.refresh(&slot) => {}
            _ = stop.changed() => break,
        }
    }
    tracing::debug!(document = &*slot.name, "refresher stopped");
}
