//! The document cache: moka holds the validated documents, this module
//! decides what a request gets and when the upstream is asked.
//!
//! - A request never fetches while a servable document (fresh, or stale
//!   within `--max-stale`) is stored: it gets a [`CacheOutcome::Hit`] or
//!   [`CacheOutcome::Stale`] at once. Refreshing is the refresher's job.
//! - With nothing servable stored, requests fetch through moka's
//!   `or_try_insert_with`, which runs one fetch for any number of concurrent
//!   callers (the others are [`CacheOutcome::Collapsed`]) and stores nothing
//!   when it fails.
//! - After a failed fetch the document's slot is in back-off: until the retry
//!   time, requests with nothing to serve get the last error at once instead
//!   of starting another fetch. There is never a fetch per client request.
//! - One fetch tries the slot's upstream URLs in order (RFC 8414 path, then
//!   the OpenID Connect locations): a 4xx answer means "not published
//!   here" and moves on to the next URL, as discovery clients do; any other
//!   failure, or a document that fails validation, ends the fetch. Metrics
//!   and back-off count the whole attempt as one fetch.
//! - moka drops an entry once it is older than TTL + max-stale (its
//!   per-entry [`Expiry`] reads the lifetime stored in the entry), so memory
//!   holds nothing that can no longer be served.
//! - moka is the only store: requests read from it, the refresher writes to
//!   it. There is no second copy to keep consistent (a read costs moka's
//!   hash and read recording, about 150 ns; benches/README.md).
//! - [`CacheMode::Bypass`] (`--no-cache`) turns all of this off: every
//!   request fetches and validates on its own and nothing is stored
//!   ([`CacheOutcome::Bypass`]). It exists as the baseline the benchmarks
//!   compare against.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use moka::Expiry;

use crate::config::DocumentConfig;
use crate::discovery::DocumentKind;
use crate::document::{ExpectedIssuer, ValidatedDocument};
use crate::error::FetchError;
use crate::freshness::{Freshness, FreshnessState};
use crate::metrics::Metrics;
use crate::outcome::CacheOutcome;
use crate::upstream::Fetcher;

/// A validated document as stored, with the time it was received.
#[derive(Debug)]
pub struct StoredDocument {
    /// The validated bytes and their ETag.
    pub document: ValidatedDocument,
    /// When the gateway received it (start of its age, RFC 9111 §4.2.3).
    pub fetched_at: Instant,
    /// TTL + max-stale: how long moka may keep it.
    hard_lifetime: Duration,
}

/// One configured document: its source, its rules and its failure state.
#[derive(Debug)]
pub struct DocumentSlot {
    /// Index of this slot (the cache key and metrics index).
    pub id: usize,
    /// Name for logs and metrics labels (bounded, from configuration).
    pub name: Arc<str>,
    /// What the document is.
    pub kind: DocumentKind,
    /// Paths it is served at.
    pub routes: Vec<String>,
    /// Freshness rules.
    pub freshness: Freshness,
    urls: Vec<Arc<str>>,
    issuer: ExpectedIssuer,
    backoff: Backoff,
    failures: Mutex<FailureState>,
}

#[derive(Debug, Default)]
struct FailureState {
    consecutive: u32,
    last_error: Option<FetchError>,
    retry_at: Option<Instant>,
}

/// Capped exponential back-off with jitter between failed fetches.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// Delay after the first failure.
    pub min: Duration,
    /// Cap on the delay.
    pub max: Duration,
}

impl Backoff {
    /// Delay after `failures` consecutive failures (>= 1): `min * 2^(n-1)`,
    /// capped at `max`, then scaled by a random factor in [0.8, 1.0] so that
    /// many replicas do not retry in lockstep.
    pub fn delay(&self, failures: u32) -> Duration {
        let exp = failures.saturating_sub(1).min(31);
        let base = self.min.saturating_mul(1u32 << exp).min(self.max);
        base.mul_f64(0.8 + 0.2 * fastrand::f64())
    }
}

impl DocumentSlot {
    /// Builds a slot from its configuration; `fetch_timeout` bounds one
    /// upstream request (a fetch may make one per upstream URL).
    pub fn new(
        id: usize,
        config: &DocumentConfig,
        fetch_timeout: Duration,
        backoff: Backoff,
    ) -> Self {
        let attempts = u32::try_from(config.upstream_urls.len().max(1)).unwrap_or(u32::MAX);
        Self {
            id,
            name: Arc::from(config.name.as_str()),
            kind: config.kind,
            routes: config.routes.clone(),
            freshness: Freshness {
                ttl: config.ttl,
                max_stale: config.max_stale,
                fetch_budget: fetch_timeout.saturating_mul(attempts),
            },
            urls: config
                .upstream_urls
                .iter()
                .map(|u| Arc::from(u.as_str()))
                .collect(),
            issuer: config.issuer.clone(),
            backoff,
            failures: Mutex::new(FailureState::default()),
        }
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, FailureState> {
        // The state is plain data; a panic elsewhere cannot leave it torn.
        self.failures.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn record_success(&self) {
        *self.failures() = FailureState::default();
    }

    /// Records a failure and returns when the next attempt is allowed.
    fn record_failure(&self, error: &FetchError, now: Instant) -> Duration {
        let mut state = self.failures();
        state.consecutive = state.consecutive.saturating_add(1);
        let delay = self.backoff.delay(state.consecutive);
        state.last_error = Some(error.clone());
        state.retry_at = Some(now + delay);
        delay
    }

    /// The upstream URLs, in the order they are tried.
    pub fn upstream_urls(&self) -> &[Arc<str>] {
        &self.urls
    }

    /// The last fetch error, while the upstream is failing.
    pub fn last_error(&self) -> Option<FetchError> {
        self.failures().last_error.clone()
    }

    /// While in back-off: the last error and the time left until a retry.
    fn backing_off(&self, now: Instant) -> Option<(FetchError, Duration)> {
        let state = self.failures();
        match (&state.last_error, state.retry_at) {
            (Some(e), Some(at)) if at > now => Some((e.clone(), at - now)),
            _ => None,
        }
    }
}

/// What a request gets from the cache.
#[derive(Debug)]
pub struct Lookup {
    /// The outcome driving headers, metrics and logs.
    pub outcome: CacheOutcome,
    /// The document to serve; `None` exactly when the outcome is `Error`.
    pub stored: Option<Arc<StoredDocument>>,
    /// Freshness of `stored` at lookup time.
    pub age: Duration,
    /// Why the upstream is failing, if it is (stale and error outcomes).
    pub error: Option<FetchError>,
    /// For errors: when a retry is due.
    pub retry_after: Duration,
}

impl Lookup {
    /// Freshness state of the served document at lookup time.
    pub fn freshness(&self, slot: &DocumentSlot) -> FreshnessState {
        match self.stored {
            Some(_) => slot.freshness.classify(self.age),
            None => FreshnessState::Expired,
        }
    }
}

/// Per-entry lifetime for moka: each entry lives TTL + max-stale from its
/// insertion, and a replacement starts a new lifetime (moka's default for
/// updates would keep the old deadline).
struct EntryLifetime;

impl Expiry<usize, Arc<StoredDocument>> for EntryLifetime {
    fn expire_after_create(
        &self,
        _key: &usize,
        value: &Arc<StoredDocument>,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(value.hard_lifetime)
    }

    fn expire_after_update(
        &self,
        _key: &usize,
        value: &Arc<StoredDocument>,
        _updated_at: std::time::Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.hard_lifetime)
    }
}

/// Whether the cache stores documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheMode {
    /// Store validated documents and serve them while servable (the default).
    Store,
    /// `--no-cache`: store nothing; every request fetches and validates, with
    /// no coalescing and no back-off (the naive design).
    Bypass,
}

/// The cache of all configured documents.
pub struct MetadataCache {
    entries: moka::future::Cache<usize, Arc<StoredDocument>>,
    fetcher: Fetcher,
    metrics: Arc<Metrics>,
    mode: CacheMode,
}

impl MetadataCache {
    /// Creates an empty cache for `capacity` documents.
    pub fn new(capacity: usize, fetcher: Fetcher, metrics: Arc<Metrics>, mode: CacheMode) -> Self {
        let entries = moka::future::Cache::builder()
            .max_capacity(capacity as u64)
            .expire_after(EntryLifetime)
            .build();
        Self {
            entries,
            fetcher,
            metrics,
            mode,
        }
    }

    /// Whether documents are stored at all.
    pub fn mode(&self) -> CacheMode {
        self.mode
    }

    /// The stored document for `slot` if it may still be served.
    pub async fn servable(&self, slot: &DocumentSlot) -> Option<(Arc<StoredDocument>, Duration)> {
        let stored = self.entries.get(&slot.id).await?;
        let age = stored.fetched_at.elapsed();
        match slot.freshness.classify(age) {
            FreshnessState::Expired => {
                self.entries.invalidate(&slot.id).await;
                None
            }
            _ => Some((stored, age)),
        }
    }

    /// Answers one request for `slot`'s document.
    pub async fn lookup(&self, slot: &DocumentSlot) -> Lookup {
        if self.mode == CacheMode::Bypass {
            return self.lookup_uncached(slot).await;
        }
        if let Some((stored, age)) = self.servable(slot).await {
            let outcome = if age < slot.freshness.ttl {
                CacheOutcome::Hit
            } else {
                CacheOutcome::Stale
            };
            let error = match outcome {
                CacheOutcome::Stale => slot.last_error(),
                _ => None,
            };
            return Lookup {
                outcome,
                stored: Some(stored),
                age,
                error,
                retry_after: Duration::ZERO,
            };
        }
        if let Some((error, retry_after)) = slot.backing_off(Instant::now()) {
            return Lookup::error(error, retry_after);
        }
        match self
            .entries
            .entry(slot.id)
            .or_try_insert_with(self.fetch(slot))
            .await
        {
            Ok(entry) => {
                let outcome = if entry.is_fresh() {
                    CacheOutcome::Miss
                } else {
                    CacheOutcome::Collapsed
                };
                let stored = entry.into_value();
                Lookup {
                    outcome,
                    age: stored.fetched_at.elapsed(),
                    stored: Some(stored),
                    error: None,
                    retry_after: Duration::ZERO,
                }
            }
            Err(error) => {
                let retry_after = slot
                    .backing_off(Instant::now())
                    .map_or(slot.backoff.min, |(_, d)| d);
                Lookup::error((*error).clone(), retry_after)
            }
        }
    }

    /// `--no-cache`: this request's own fetch, nothing stored.
    async fn lookup_uncached(&self, slot: &DocumentSlot) -> Lookup {
        match self.fetch(slot).await {
            Ok(stored) => Lookup {
                outcome: CacheOutcome::Bypass,
                age: stored.fetched_at.elapsed(),
                stored: Some(stored),
                error: None,
                retry_after: Duration::ZERO,
            },
            Err(error) => Lookup::error(error, slot.backoff.min),
        }
    }

    /// Fetches a successor for `slot`'s document (the refresher's job). A
    /// failure leaves the stored document in place.
    pub async fn refresh(&self, slot: &DocumentSlot) {
        if self.servable(slot).await.is_some() {
            if let Ok(stored) = self.fetch(slot).await {
                self.entries.insert(slot.id, stored).await;
            }
        } else {
            // Nothing servable: join (or lead) the same coalesced fetch that
            // requests use, so a cold start costs one fetch in all.
            let _ = self
                .entries
                .entry(slot.id)
                .or_try_insert_with(self.fetch(slot))
                .await;
        }
    }

    /// When the refresher should next fetch for `slot`: at the retry time
    /// while failing, shortly before expiry while healthy, now when empty.
    pub async fn next_refresh_at(&self, slot: &DocumentSlot) -> Instant {
        if let Some(retry_at) = slot.failures().retry_at {
            return retry_at;
        }
        match self.servable(slot).await {
            Some((stored, _)) => stored.fetched_at + slot.freshness.refresh_age(),
            None => Instant::now(),
        }
    }

    /// One upstream fetch and validation, with its log line and metrics.
    async fn fetch(&self, slot: &DocumentSlot) -> Result<Arc<StoredDocument>, FetchError> {
        let started = Instant::now();
        let (result, url) = self.fetch_first_published(slot).await;
        let elapsed = started.elapsed();
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => e.outcome_label(),
        };
        self.metrics.record_fetch(slot.id, outcome, elapsed);
        match result {
            Ok(document) => {
                slot.record_success();
                tracing::info!(
                    document = &*slot.name,
                    url = %url,
                    outcome,
                    duration_ms = elapsed.as_millis() as u64,
                    bytes = document.body.len(),
                    "upstream fetch"
                );
                Ok(Arc::new(StoredDocument {
                    document,
                    fetched_at: Instant::now(),
                    hard_lifetime: slot.freshness.hard_lifetime(),
                }))
            }
            Err(error) => {
                let retry_in = slot.record_failure(&error, Instant::now());
                tracing::warn!(
                    document = &*slot.name,
                    url = %url,
                    outcome,
                    duration_ms = elapsed.as_millis() as u64,
                    retry_in_ms = retry_in.as_millis() as u64,
                    error = %error,
                    "upstream fetch"
                );
                Err(error)
            }
        }
    }

    /// Tries the slot's URLs in order until one does not answer 4xx, and
    /// validates what it sent. Returns the result and the URL it is from
    /// (the last one tried).
    async fn fetch_first_published(
        &self,
        slot: &DocumentSlot,
    ) -> (Result<ValidatedDocument, FetchError>, Arc<str>) {
        let mut last = (
            Err(FetchError::Connect("no upstream URL is configured".into())),
            Arc::from(""),
        );
        for url in &slot.urls {
            match self.fetcher.fetch(url.clone()).await {
                Ok(body) => {
                    // RFC 8414 §5: OpenID Provider metadata is validated by
                    // the same rules, issuer check included.
                    let validated =
                        ValidatedDocument::validate(body, &slot.issuer).map_err(FetchError::from);
                    return (validated, url.clone());
                }
                // Not published at this location: try the next one, as
                // discovery clients do (RFC 8414 §3, OpenID Connect Discovery §4).
                Err(e @ FetchError::HttpStatus(400..=499)) => {
                    tracing::debug!(document = &*slot.name, url = %url, error = %e, "not published here, trying the next location");
                    last = (Err(e), url.clone());
                }
                Err(e) => return (Err(e), url.clone()),
            }
        }
        last
    }
}

impl Lookup {
    fn error(error: FetchError, retry_after: Duration) -> Self {
        Self {
            outcome: CacheOutcome::Error,
            stored: None,
            age: Duration::ZERO,
            error: Some(error),
            retry_after,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps_with_bounded_jitter() {
        let b = Backoff {
            min: Duration::from_secs(1),
            max: Duration::from_secs(30),
        };
        for (n, nominal) in [
            (1, 1.0),
            (2, 2.0),
            (3, 4.0),
            (5, 16.0),
            (6, 30.0),
            (40, 30.0),
        ] {
            for _ in 0..50 {
                let d = b.delay(n).as_secs_f64();
                assert!(d >= nominal * 0.8 - 1e-9 && d <= nominal + 1e-9, "{n}: {d}");
            }
        }
    }
}
