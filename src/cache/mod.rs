//! The document caches: moka holds the validated documents, this module
//! decides what a request gets and when the upstream is asked.
//!
//! - [`MetadataCache`] holds the configured documents, one entry per
//!   [`DocumentSlot`], kept warm by the refresh scheduler
//!   ([`crate::refresher`]).
//! - [`tenants::TemplateCache`] holds the tenants of one issuer template,
//!   fetched on request and bounded by `max_tenants`.
//!
//! The rules both follow:
//! - A request never waits on the upstream while a servable document (fresh,
//!   or stale within `--max-stale`) is stored: it gets a
//!   [`CacheOutcome::Hit`] or [`CacheOutcome::Stale`] at once. Refreshing
//!   is background work.
//! - With nothing servable stored, concurrent requests for one document
//!   share one fetch (the others are [`CacheOutcome::Collapsed`]), at
//!   client priority ([`crate::upstream::limiter`]); a failed fetch stores
//!   nothing.
//! - After a failed fetch the slot is in back-off: until the retry time,
//!   requests with nothing to serve get the last error at once instead of
//!   starting another fetch. There is never a fetch per client request.
//! - One fetch tries the slot's upstream URLs in order ([`fetch`]).
//! - moka drops an entry once it is older than TTL + max-stale (its
//!   per-entry [`Expiry`] reads the lifetime stored in the entry), so memory
//!   holds nothing that can no longer be served. A configured document's
//!   requests read its slot's current copy instead (see
//!   [`MetadataCache`]); that copy is dropped by the first request or
//!   scheduled refresh (a retry, at the latest after the longest back-off)
//!   that finds it past max-stale.
//! - [`CacheMode::Bypass`] (`--no-cache`) turns all of this off: every
//!   request fetches and validates on its own and nothing is stored
//!   ([`CacheOutcome::Bypass`]). It exists as the baseline the benchmarks
//!   compare against.

pub mod disk_tier;
pub(crate) mod fetch;
pub mod key_sets;
pub mod memo;
pub mod persist;
pub mod readiness;
pub mod slot;
pub mod tenants;

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use moka::Expiry;

use crate::cache_rules::freshness::{Freshness, FreshnessState};
use crate::cache_rules::outcome::CacheOutcome;
use crate::cache_rules::upstream_freshness::{self, Timing, UpstreamHeaders};
use crate::document::ValidatedDocument;
use crate::error::FetchError;
use crate::upstream::{Fetcher, Priority, Validators};

pub use persist::{RestoreReport, StateWriter};
pub use readiness::{Readiness, ReadyIndex};
use slot::SlotRules;
pub use slot::{Backoff, DocumentSlot};

use fetch::FetchContext;
use key_sets::OnDemandStart;

/// Documents read back from the state directory per blocking task.
const RESTORE_CHUNK: usize = 256;

/// Where [`StoredDocument`]'s fields read by every request must end: three
/// 64-byte cache lines, less the 16 bytes of the `Arc` counts before them.
pub const HOT_PREFIX_LIMIT: usize = 3 * 64 - 16;

/// A validated document as stored: its bytes, when and where it was
/// received, the upstream headers its freshness and validators come from,
/// and its freshness rules (the slot's, with the lifetime the upstream
/// allowed, see [`crate::cache_rules::upstream_freshness`]).
///
/// `repr(C)`, fields in the order a request reads them: what every request
/// reads (its age, rules, timing, rendered headers, bytes and ETag) comes
/// first, in three cache lines with the `Arc`'s counts
/// ([`HOT_PREFIX_LIMIT`], a test holds it), and what only fetches, saves
/// and the status endpoint read (wall-clock receipt, URL, upstream headers)
/// last. Serving many documents in turn, each request finds its
/// document's lines cold: the fewer, the closer it costs to serving one
/// (benches/README.md, third and fourth passes).
#[derive(Debug)]
#[repr(C)]
pub struct StoredDocument {
    /// When the gateway received it (start of its resident time,
    /// RFC 9111 §4.2.3).
    pub fetched_at: Instant,
    /// The rules of the slot it was fetched for (shared by every document
    /// of the slot, or of the template's tenants): its own freshness rules
    /// are these with `ttl` = `timing.fresh_for` ([`Self::rules`]), kept
    /// once per slot rather than copied into every document (48 bytes,
    /// most of a cache line per document, benches/README.md, fourth pass).
    slot_rules: Arc<SlotRules>,
    /// The upstream's `Age` at receipt and the freshness it allowed.
    pub timing: Timing,
    /// Its response headers as last rendered by the HTTP layer, reused
    /// while their inputs hold.
    pub rendered: memo::RenderMemo,
    /// Loaded from the state directory, not fetched by this process: the
    /// refresher fetches a successor at once.
    pub restored: bool,
    /// The validated bytes and their ETag.
    pub document: ValidatedDocument,
    /// The same moment as `fetched_at` on the wall clock (saved state,
    /// status endpoint).
    pub received: SystemTime,
    /// The upstream URL it came from (validators are sent only there).
    pub url: Arc<str>,
    /// The upstream's freshness and validator headers.
    pub headers: UpstreamHeaders,
}

impl StoredDocument {
    /// A document received at `received` from `url` with `headers`, under
    /// `slot`'s rules.
    pub fn new(
        document: ValidatedDocument,
        url: Arc<str>,
        headers: UpstreamHeaders,
        received: SystemTime,
        slot: &DocumentSlot,
    ) -> Self {
        let timing = upstream_freshness::evaluate(&headers, received, slot.policy());
        Self::with_timing(
            document,
            url,
            headers,
            received,
            timing,
            slot,
            Duration::ZERO,
        )
    }

    /// This document renewed by a `304` received at `received`
    /// (RFC 9111 §4.3.4): same bytes, headers updated by the 304's, a new
    /// freshness lifetime.
    pub fn revalidated(
        &self,
        not_modified: &UpstreamHeaders,
        received: SystemTime,
        slot: &DocumentSlot,
    ) -> Self {
        let headers = self.headers.updated_by(not_modified);
        Self::new(
            self.document.clone(),
            self.url.clone(),
            headers,
            received,
            slot,
        )
    }

    /// A document read back from the state directory, received `resident`
    /// ago with `timing`.
    pub fn restored(
        document: ValidatedDocument,
        url: Arc<str>,
        headers: UpstreamHeaders,
        received: SystemTime,
        timing: Timing,
        slot: &DocumentSlot,
        resident: Duration,
    ) -> Self {
        let mut s = Self::with_timing(document, url, headers, received, timing, slot, resident);
        s.restored = true;
        s
    }

    fn with_timing(
        document: ValidatedDocument,
        url: Arc<str>,
        mut headers: UpstreamHeaders,
        received: SystemTime,
        timing: Timing,
        slot: &DocumentSlot,
        resident: Duration,
    ) -> Self {
        // `Date` and `Age` served their purpose in `timing`; a 304 brings
        // its own (RFC 9111 §4.3.4), so they are not kept per document.
        headers.date = None;
        headers.age = None;
        let now = Instant::now();
        Self {
            document,
            fetched_at: now.checked_sub(resident).unwrap_or(now),
            received,
            timing,
            slot_rules: slot.rules.clone(),
            url,
            headers,
            restored: false,
            rendered: memo::RenderMemo::default(),
        }
    }

    /// Its freshness rules: its slot's, with `ttl` = `timing.fresh_for`
    /// (the lifetime the upstream allowed, bounded by the slot's).
    pub fn rules(&self) -> Freshness {
        Freshness {
            ttl: self.timing.fresh_for,
            ..self.slot_rules.freshness
        }
    }

    /// How long this process has held it.
    pub fn resident(&self) -> Duration {
        self.fetched_at.elapsed()
    }

    /// Where it stands now.
    pub fn state(&self) -> FreshnessState {
        self.rules().classify(self.resident())
    }

    /// Its `Age` (RFC 9111 §4.2.3): the upstream's at receipt plus the
    /// time held here, so gateways in tiers add up.
    pub fn age_after(&self, resident: Duration) -> Duration {
        self.timing.upstream_age.saturating_add(resident)
    }

    /// Its freshness lifetime as a downstream cache counts it (`max-age`
    /// next to [`Self::age_after`]): the upstream's age at receipt plus
    /// the freshness the upstream allowed, which may be less than this
    /// gateway holds it (`--min-ttl`): a cache in front is never told it
    /// is fresh longer than the upstream said.
    pub fn lifetime(&self) -> Duration {
        self.timing
            .upstream_age
            .saturating_add(self.timing.advertised())
    }

    /// Residence time at which a downstream cache must stop using it stale
    /// (RFC 5861 §4): when this gateway stops (its freshness plus
    /// `max_stale`), and never after the upstream's own `stale-if-error`
    /// ends, so stale windows do not stack across tiers.
    pub fn stale_if_error_end(&self) -> Duration {
        let rules = self.rules();
        let own = rules.ttl.saturating_add(rules.max_stale);
        match self.timing.stale_if_error_until_secs {
            Some(upstream) => own.min(Duration::from_secs(upstream.into())),
            None => own,
        }
    }

    /// When moka may drop it: past its freshness and `max_stale`.
    pub(crate) fn hard_deadline(&self) -> Instant {
        self.fetched_at + self.rules().hard_lifetime()
    }

    /// The validators to send when refreshing it from `url`.
    pub fn validators_for(&self, url: &str) -> Option<Validators> {
        if &*self.url == url {
            Validators::of(&self.headers)
        } else {
            None
        }
    }
}

/// What a request gets from a cache.
#[derive(Debug)]
pub struct Lookup {
    /// The outcome driving headers, metrics and logs.
    pub outcome: CacheOutcome,
    /// The document to serve; `None` for errors and not-found answers.
    pub stored: Option<Arc<StoredDocument>>,
    /// Freshness of `stored` at lookup time.
    pub age: Duration,
    /// Why the upstream is failing, if it is (stale and error outcomes):
    /// the slot's own shared copy, so a stale answer allocates no more
    /// than a hit.
    pub error: Option<Arc<FetchError>>,
    /// For errors: when a retry is due.
    pub retry_after: Duration,
    /// For a forwarded revalidation: the upstream's status (RFC 9211
    /// `fwd-status`).
    pub forwarded: Option<u16>,
}

impl Lookup {
    /// Freshness state of the served document at lookup time.
    pub fn freshness(&self) -> FreshnessState {
        match &self.stored {
            Some(stored) => stored.rules().classify(self.age),
            None => FreshnessState::Expired,
        }
    }

    /// A servable stored document: hit or stale by its age.
    fn stored(stored: Arc<StoredDocument>, age: Duration, slot: &DocumentSlot) -> Self {
        let fresh = matches!(stored.rules().classify(age), FreshnessState::Fresh { .. });
        let (outcome, error) = if fresh {
            (CacheOutcome::Hit, None)
        } else {
            (CacheOutcome::Stale, slot.last_error())
        };
        Self {
            outcome,
            stored: Some(stored),
            age,
            error,
            retry_after: Duration::ZERO,
            forwarded: None,
        }
    }

    /// A document this request fetched (`Miss`) or waited for (`Collapsed`).
    fn fetched(outcome: CacheOutcome, stored: Arc<StoredDocument>) -> Self {
        Self {
            outcome,
            age: stored.resident(),
            stored: Some(stored),
            error: None,
            retry_after: Duration::ZERO,
            forwarded: None,
        }
    }

    /// A template tenant the upstream does not know: `led` when this
    /// request's fetch found out, else from the remembered answer.
    fn not_found(status: u16, led: bool) -> Self {
        Self {
            outcome: if led {
                CacheOutcome::NotFound
            } else {
                CacheOutcome::NegativeHit
            },
            stored: None,
            age: Duration::ZERO,
            error: Some(Arc::new(FetchError::HttpStatus(status))),
            retry_after: Duration::ZERO,
            forwarded: None,
        }
    }

    fn error(error: Arc<FetchError>, retry_after: Duration) -> Self {
        Self {
            outcome: CacheOutcome::Error,
            stored: None,
            age: Duration::ZERO,
            error: Some(error),
            retry_after,
            forwarded: None,
        }
    }

    /// A key set revalidated at the request's demand: `status` is the
    /// upstream's 200 or 304.
    fn revalidated(stored: Arc<StoredDocument>, status: u16) -> Self {
        Self {
            outcome: CacheOutcome::Revalidated,
            age: stored.resident(),
            stored: Some(stored),
            error: None,
            retry_after: Duration::ZERO,
            forwarded: Some(status),
        }
    }

    /// The stored key set, served because the revalidation a request
    /// asked for failed with `error`.
    fn revalidation_failed(
        stored: Arc<StoredDocument>,
        age: Duration,
        error: Arc<FetchError>,
    ) -> Self {
        Self {
            outcome: CacheOutcome::RevalidationFailed,
            forwarded: error.upstream_status(),
            stored: Some(stored),
            age,
            error: Some(error),
            retry_after: Duration::ZERO,
        }
    }

    /// The error answer for `slot` after `error`, with the time until the
    /// next attempt.
    fn failed(error: Arc<FetchError>, slot: &DocumentSlot) -> Self {
        let retry_after = slot
            .backing_off(Instant::now())
            .map_or(slot.backoff_min(), |(_, d)| d);
        Self::error(error, retry_after)
    }
}

/// Per-entry lifetime for moka: each entry lives until its freshness plus
/// max-stale run out (counted from its receipt, which for a restored
/// document was before this process started), and a replacement starts a
/// new lifetime (moka's default for updates would keep the old deadline).
struct EntryLifetime;

impl Expiry<usize, Arc<StoredDocument>> for EntryLifetime {
    fn expire_after_create(
        &self,
        _key: &usize,
        value: &Arc<StoredDocument>,
        created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(value.hard_deadline().saturating_duration_since(created_at))
    }

    fn expire_after_update(
        &self,
        _key: &usize,
        value: &Arc<StoredDocument>,
        updated_at: std::time::Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.hard_deadline().saturating_duration_since(updated_at))
    }
}

/// Whether the caches store documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheMode {
    /// Store validated documents and serve them while servable (the default).
    Store,
    /// `--no-cache`: store nothing; every request fetches and validates, with
    /// no coalescing and no back-off (the naive design).
    Bypass,
}

/// The cache of the configured documents.
///
/// Each slot holds its current copy (`DocumentSlot::current`, an arc-swap
/// pointer set with every store and cleared with every removal here), and
/// a request reads that: one atomic load, where moka's `get` cost about
/// 900 instructions a request (its async read path, clock reading, expiry
/// check and read log; benches/README.md, third pass). moka still keys the
/// copies for what it is there for: the coalesced cold fetch (its per-key
/// `or_try_insert_with`) and expiry. Reads it no longer sees change no
/// eviction here: this cache has no capacity bound, so moka's TinyLFU never
/// admits or evicts by frequency, and no idle expiry is set. (The template
/// tenants' bounded cache still reads through moka, which counts every
/// read.)
pub struct MetadataCache {
    /// Keyed by slot id, hashed with foldhash (randomly seeded): the ids
    /// are the gateway's own, never a client's, and SipHash was a
    /// measurable share of a cached request (benches/README.md, hot path).
    entries: moka::future::Cache<usize, Arc<StoredDocument>, foldhash::fast::RandomState>,
    fetcher: Fetcher,
    mode: CacheMode,
    state: Option<StateWriter>,
    /// Which tracked documents are servable, kept as they change.
    ready: ReadyIndex,
}

impl MetadataCache {
    /// Creates an empty cache. It holds one entry per configured document
    /// at most (the configuration bounds it; a reload invalidates the
    /// entries of removed documents).
    /// With `state`, every validated document is saved there.
    pub fn new(fetcher: Fetcher, mode: CacheMode, state: Option<StateWriter>) -> Self {
        let entries = moka::future::Cache::builder()
            .expire_after(EntryLifetime)
            .build_with_hasher(foldhash::fast::RandomState::default());
        Self {
            entries,
            fetcher,
            mode,
            state,
            ready: ReadyIndex::new(mode == CacheMode::Bypass),
        }
    }

    /// Serves the saved copies of `slots` (those without a stored
    /// document) from the state directory until a fetch replaces them.
    pub async fn restore(&self, slots: &[Arc<DocumentSlot>]) -> RestoreReport {
        let Some(state) = &self.state else {
            return RestoreReport::default();
        };
        let mut empty = Vec::new();
        for slot in slots {
            if slot.current.load().is_none() {
                empty.push(slot.clone());
            }
        }
        // In chunks: 10,000 restored documents are never all held twice
        // (once read, once stored) at the same time.
        let mut report = RestoreReport::default();
        for chunk in empty.chunks(RESTORE_CHUNK) {
            let (loaded, r) = state.load(chunk.to_vec()).await;
            report.restored += r.restored;
            report.ignored += r.ignored;
            for (slot, stored) in loaded {
                self.store(&slot, Arc::new(stored)).await;
            }
        }
        report
    }

    /// A reload changed these documents (same name, new slot): each new
    /// slot with nothing stored takes over the old slot's copy, checked
    /// and timed under its new rules exactly like a copy read back from
    /// the state directory (issuer, upstream URL, RFC 8414 validation,
    /// lifetime + max-stale), and is refreshed at once. So a reload that
    /// changes a document's TTL during an upstream outage keeps serving its
    /// last good copy. Returns how many were carried over.
    pub async fn carry_over(&self, old: &[Arc<DocumentSlot>], new: &[Arc<DocumentSlot>]) -> usize {
        let by_name: HashMap<&str, &Arc<DocumentSlot>> =
            old.iter().map(|s| (&*s.name, s)).collect();
        let now = SystemTime::now();
        let mut candidates = Vec::new();
        for slot in new {
            let Some(before) = by_name.get(&*slot.name) else {
                continue;
            };
            if before.id == slot.id || slot.current.load().is_some() {
                continue;
            }
            let Some(stored) = before.current.load_full() else {
                continue;
            };
            candidates.push((slot.clone(), persist::writer::saved_copy(before, &stored)));
        }
        if candidates.is_empty() {
            return 0;
        }
        // RFC 8414 validation of every carried copy (JSON parse): on a
        // blocking thread, not on the runtime.
        let checked = tokio::task::spawn_blocking(move || {
            candidates
                .into_iter()
                .map(|(slot, saved)| {
                    let copy = persist::restore::restore(&slot, saved, now);
                    (slot, copy)
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        let mut carried = 0;
        for (slot, copy) in checked {
            match copy {
                Ok(copy) => {
                    self.store(&slot, Arc::new(copy)).await;
                    carried += 1;
                }
                Err(reason) => {
                    tracing::info!(document = &*slot.name, %reason, "reload: the cached copy does not fit the changed document and is not kept");
                }
            }
        }
        carried
    }

    /// At shutdown: waits (at most `limit`) for queued saves.
    pub async fn flush_state(&self, limit: Duration) {
        if let Some(state) = &self.state {
            state.flush(limit).await;
        }
    }

    /// Deletes the saved copy of a document removed from the
    /// configuration.
    pub fn forget(&self, name: &str) {
        if let Some(state) = &self.state {
            state.remove(name);
        }
    }

    /// Drops `slot`'s stored document (its document was removed).
    pub async fn invalidate(&self, slot: &DocumentSlot) {
        slot.current.store(None);
        self.entries.invalidate(&slot.id).await;
        self.ready.dropped(slot);
    }

    /// Stores `document` as `slot`'s, and notes until when it is servable.
    async fn store(&self, slot: &DocumentSlot, document: Arc<StoredDocument>) {
        let deadline = document.hard_deadline();
        self.entries.insert(slot.id, document.clone()).await;
        slot.current.store(Some(document));
        self.ready.stored(slot, deadline);
    }

    /// After a coalesced fetch for `slot` (the `entry` moka returned):
    /// the document is `slot`'s current copy if this call stored it (the
    /// call that stored an entry found here has done the same) or if the
    /// slot holds none (a request that found its copy expired may have
    /// cleared it just as a newer one was stored), and servable until its
    /// deadline.
    fn fetched(&self, slot: &DocumentSlot, entry: &moka::Entry<usize, Arc<StoredDocument>>) {
        if entry.is_fresh() || slot.current.load().is_none() {
            slot.current.store(Some(entry.value().clone()));
        }
        self.ready.stored(slot, entry.value().hard_deadline());
    }

    /// Starts tracking the readiness of `slots` in a cache with nothing
    /// stored yet (the first generation).
    pub fn start_readiness(&self, slots: &[Arc<DocumentSlot>]) {
        let with_state: Vec<_> = slots.iter().map(|s| (s.clone(), None)).collect();
        self.ready.track(&with_state);
    }

    /// Tracks the readiness of exactly `slots` (the current generation's
    /// configured documents) from now on: those already tracked keep their
    /// state, the others start from what is stored for them.
    pub async fn track_readiness(&self, slots: &[Arc<DocumentSlot>]) {
        let mut with_state = Vec::with_capacity(slots.len());
        for slot in slots {
            let stored = slot.current.load();
            with_state.push((slot.clone(), stored.as_ref().map(|d| d.hard_deadline())));
        }
        self.ready.track(&with_state);
    }

    /// The tracked documents' readiness now, naming the first `show`
    /// unready ones: O(show), whatever the number of documents.
    pub fn readiness(&self, show: usize) -> Readiness {
        self.ready.readiness(show)
    }

    /// Whether documents are stored at all.
    pub fn mode(&self) -> CacheMode {
        self.mode
    }

    /// The upstream fetcher (shared with the template caches).
    pub fn fetcher(&self) -> &Fetcher {
        &self.fetcher
    }

    fn context<'a>(&'a self, slot: &'a DocumentSlot) -> FetchContext<'a> {
        FetchContext {
            fetcher: &self.fetcher,
            state: self.state.as_ref(),
            retirement: &slot.retirement,
        }
    }

    /// For a key set that follows its metadata: reads its `jwks_uri` from
    /// the metadata document stored now (fetching that first, coalesced,
    /// when nothing is stored), so the key set follows the document.
    async fn locate_key_set(self: &Arc<Self>, slot: &DocumentSlot) -> Result<(), FetchError> {
        let Some(ks) = slot.key_set.as_deref() else {
            return Ok(());
        };
        let Some(follows) = ks.follows() else {
            return Ok(());
        };
        let Some(parent) = ks.parent.load_full() else {
            return Err(FetchError::KeySetLocation(format!(
                "its metadata document {} is not configured",
                follows.document
            )));
        };
        let metadata = match self.servable(&parent).await {
            Some((stored, _)) => stored,
            None => self.fetch_metadata(&parent).await.map_err(|e| {
                FetchError::KeySetLocation(format!(
                    "its metadata document {} is unavailable: {e}",
                    parent.name
                ))
            })?,
        };
        ks.set_location(key_sets::locate(follows, None, &metadata)?);
        Ok(())
    }

    /// A metadata document with nothing servable, for the key set that
    /// follows it: the same coalesced fetch a request for it makes (a
    /// metadata slot has no key set: no recursion), or its last error while
    /// it backs off.
    async fn fetch_metadata(
        &self,
        parent: &DocumentSlot,
    ) -> Result<Arc<StoredDocument>, Arc<FetchError>> {
        if let Some((error, _)) = parent.backing_off(Instant::now()) {
            return Err(error);
        }
        let fetched = self
            .entries
            .entry(parent.id)
            .or_try_insert_with(self.context(parent).fetch_located(
                parent,
                Priority::Client,
                None,
                None,
                Ok(()),
            ))
            .await;
        if let Ok(entry) = &fetched {
            self.fetched(parent, entry);
        }
        self.drop_if_retired(parent).await;
        fetched.map(|entry| entry.into_value())
    }

    /// One fetch of `slot` (see [`FetchContext::fetch_located`]), a key
    /// set's location found first.
    async fn fetch_slot(
        self: &Arc<Self>,
        slot: &DocumentSlot,
        priority: Priority,
        permit: Option<crate::upstream::Permit>,
        previous: Option<&Arc<StoredDocument>>,
    ) -> Result<Arc<StoredDocument>, FetchError> {
        let located = self.locate_key_set(slot).await;
        self.context(slot)
            .fetch_located(slot, priority, permit, previous, located)
            .await
    }

    /// A client asked for key set `slot` to be revalidated (RFC 9111
    /// §5.2.1.4 `no-cache`, §5.2.1.1 `max-age=0`, or a `?kid` the stored
    /// set lacks). With a set stored and no back-off: at most one
    /// revalidation (`If-None-Match`) per cooldown, counted from the start
    /// of the last one; requests that start or join it wait for it (at
    /// most `limit`) and get its result; within the cooldown, the stored
    /// set at once like any request. With nothing stored, the ordinary
    /// (coalesced) cold fetch is the revalidation.
    pub async fn revalidate_on_demand(
        self: &Arc<Self>,
        slot: &Arc<DocumentSlot>,
        limit: Duration,
    ) -> Lookup {
        let Some(ks) = slot.key_set.as_deref() else {
            return self.lookup(slot).await;
        };
        if self.mode == CacheMode::Bypass
            || self.servable(slot).await.is_none()
            || slot.backing_off(Instant::now()).is_some()
        {
            return self.lookup(slot).await;
        }
        let rx = match ks.begin_on_demand(Instant::now()) {
            OnDemandStart::Cooldown => return self.lookup(slot).await,
            OnDemandStart::Join(rx) => rx,
            OnDemandStart::Lead(tx) => {
                let rx = tx.subscribe();
                let (this, slot) = (self.clone(), slot.clone());
                // A task of its own: the revalidation completes (and is
                // stored) even if the request that started it goes away.
                tokio::spawn(async move {
                    let result = this.revalidate(&slot).await;
                    let _ = tx.send(Some(result));
                });
                rx
            }
        };
        match key_sets::wait(rx, limit).await {
            Ok((stored, status)) => Lookup::revalidated(stored, status),
            Err(error) => match self.servable(slot).await {
                Some((stored, age)) => Lookup::revalidation_failed(stored, age, Arc::new(error)),
                None => Lookup::failed(Arc::new(error), slot),
            },
        }
    }

    /// One on-demand revalidation: a conditional fetch at client priority;
    /// what it brings is stored like a refresh's.
    async fn revalidate(self: &Arc<Self>, slot: &DocumentSlot) -> key_sets::Revalidation {
        let previous = self.servable(slot).await.map(|(stored, _)| stored);
        let next = self
            .fetch_slot(slot, Priority::Client, None, previous.as_ref())
            .await?;
        self.store(slot, next.clone()).await;
        self.drop_if_retired(slot).await;
        let status = match slot.last_fetch() {
            Some(f) if f.outcome == fetch::NOT_MODIFIED => 304,
            _ => 200,
        };
        Ok((next, status))
    }

    /// A reload retired `slot` while its fetch ran: whatever that fetch
    /// stored is dropped again (a removed document must not hold memory
    /// until its hard deadline).
    async fn drop_if_retired(&self, slot: &DocumentSlot) {
        if slot.retirement.is_retired() {
            self.invalidate(slot).await;
        }
    }

    /// The stored document for `slot` if it may still be served.
    pub async fn servable(&self, slot: &DocumentSlot) -> Option<(Arc<StoredDocument>, Duration)> {
        self.servable_at(slot, Instant::now()).await
    }

    /// [`Self::servable`] as of `now` (a clock reading the caller already
    /// made: one per request does).
    pub async fn servable_at(
        &self,
        slot: &DocumentSlot,
        now: Instant,
    ) -> Option<(Arc<StoredDocument>, Duration)> {
        let stored = slot.current.load_full()?;
        let age = now.saturating_duration_since(stored.fetched_at);
        match stored.rules().classify(age) {
            FreshnessState::Expired => {
                // Unless a newer copy took its place meanwhile.
                let previous = slot.current.compare_and_swap(&stored, None);
                if Arc::ptr_eq(previous.as_ref().unwrap_or(&stored), &stored) {
                    self.entries.invalidate(&slot.id).await;
                }
                None
            }
            _ => Some((stored, age)),
        }
    }

    /// Answers one request for `slot`'s document.
    pub async fn lookup(self: &Arc<Self>, slot: &Arc<DocumentSlot>) -> Lookup {
        self.lookup_at(slot, Instant::now()).await
    }

    /// [`Self::lookup`] for a request that arrived at `now` (the
    /// dispatcher's one clock reading: ages count from it).
    pub async fn lookup_at(self: &Arc<Self>, slot: &Arc<DocumentSlot>, now: Instant) -> Lookup {
        if self.mode == CacheMode::Bypass {
            // Boxed: the fetch's future would otherwise enlarge every
            // lookup's, and with it every request's (actix-web moves a
            // request's future into a box of its own).
            return Box::pin(self.lookup_uncached(slot)).await;
        }
        if let Some((stored, age)) = self.servable_at(slot, now).await {
            return Lookup::stored(stored, age, slot);
        }
        if let Some((error, retry_after)) = slot.backing_off(now) {
            return Lookup::error(error, retry_after);
        }
        // The coalesced fetch runs in a task of its own: a client that
        // hangs up (actix drops its request's future) never cancels it, so
        // the fetch runs to completion and is stored for the next request
        // (and the requests that joined it are not left to start over).
        let (cache, owned) = (self.clone(), slot.clone());
        let task = tokio::spawn(async move {
            let slot = &owned;
            let fetched = cache
                .entries
                .entry(slot.id)
                .or_try_insert_with(cache.fetch_slot(slot, Priority::Client, None, None))
                .await;
            if let Ok(entry) = &fetched {
                cache.fetched(slot, entry);
            }
            cache.drop_if_retired(slot).await;
            fetched.map(|entry| (entry.is_fresh(), entry.into_value()))
        });
        match task.await {
            Ok(Ok((led, stored))) => {
                let outcome = if led {
                    CacheOutcome::Miss
                } else {
                    CacheOutcome::Collapsed
                };
                Lookup::fetched(outcome, stored)
            }
            Ok(Err(error)) => Lookup::failed(error, slot),
            // Only when the runtime shuts down (or the task panicked).
            Err(_) => Lookup::failed(Arc::new(FetchError::FetcherStopped), slot),
        }
    }

    /// `--no-cache`: this request's own fetch, nothing stored.
    async fn lookup_uncached(self: &Arc<Self>, slot: &DocumentSlot) -> Lookup {
        let fetched = self.fetch_slot(slot, Priority::Client, None, None).await;
        self.ready.fetched_uncached(slot, fetched.is_ok());
        match fetched {
            Ok(stored) => Lookup::fetched(CacheOutcome::Bypass, stored),
            Err(error) => Lookup::error(Arc::new(error), slot.backoff_min()),
        }
    }

    /// Background work for `slot` (warm-up, refresh-ahead, retry, or an
    /// operator's refresh when `force`): nothing when the document is still
    /// fresh enough (a client's cold fetch may have stored it; `force`
    /// fetches anyway); else waits for a background permit of its upstream
    /// host and fetches. The check comes first, so a refresh with nothing
    /// to do never queues for (or holds) a permit of a busy or hung host.
    /// A failure leaves the stored document in place.
    pub async fn refresh(self: &Arc<Self>, slot: &DocumentSlot, force: bool) {
        let servable = self.servable(slot).await;
        if let Some((stored, _)) = &servable {
            // Not `refresh_age`: the scheduler woke this document at its
            // jittered time (up to a tenth of the TTL earlier; the first
            // time after warm-up, from a tenth of the refresh age on),
            // and skipping that would put every refresh back in lockstep.
            if !force
                && !stored.restored
                && stored.fetched_at + stored.rules().earliest_refresh_age() > Instant::now()
                && slot.retry_at().is_none()
            {
                return;
            }
        }
        // A key set's location may change with its metadata: looked up
        // now (a failure is the fetch's, with its back-off).
        let located = self.locate_key_set(slot).await;
        let urls = slot.fetch_urls();
        let Some(first) = urls.first() else {
            if located.is_err() {
                let _ = self
                    .context(slot)
                    .fetch_located(slot, Priority::Background, None, None, located)
                    .await;
            }
            return;
        };
        let permit = self.fetcher.permit(first, Priority::Background).await;
        match servable {
            Some((stored, _)) => {
                if let Ok(next) = self
                    .context(slot)
                    .fetch_located(
                        slot,
                        Priority::Background,
                        Some(permit),
                        Some(&stored),
                        located,
                    )
                    .await
                {
                    self.store(slot, next).await;
                    self.drop_if_retired(slot).await;
                }
            }
            None => {
                // Nothing servable: lead (or join) the same coalesced fetch
                // that requests use, so a cold start costs one fetch. The
                // permit is already held, so a client that joins waits on
                // a request in flight, never on the background queue.
                let fetched = self
                    .entries
                    .entry(slot.id)
                    .or_try_insert_with(self.context(slot).fetch_located(
                        slot,
                        Priority::Background,
                        Some(permit),
                        None,
                        located,
                    ))
                    .await;
                if let Ok(entry) = &fetched {
                    self.fetched(slot, entry);
                }
                self.drop_if_retired(slot).await;
            }
        }
    }

    /// The upstream host `slot`'s background work queues for: the origin
    /// of its first URL, as the per-host limiter counts it
    /// ([`crate::upstream::limiter::origin`]).
    /// A key set that follows its metadata queues for the host of the
    /// `jwks_uri` it found, or before that for its metadata's host.
    pub fn refresh_host<'a>(&self, slot: &'a DocumentSlot) -> Cow<'a, str> {
        if let Some(ks) = slot.key_set.as_deref().filter(|k| k.follows().is_some()) {
            let url = match ks.location().and_then(|l| l.first().cloned()) {
                Some(url) => Some(url),
                None => ks
                    .parent
                    .load()
                    .as_ref()
                    .and_then(|p| p.upstream_urls().origin_text().map(Arc::from)),
            };
            return Cow::Owned(url.map_or_else(String::new, |u| {
                crate::upstream::limiter::origin(&u).to_string()
            }));
        }
        Cow::Borrowed(
            slot.upstream_urls()
                .origin_text()
                .map_or("", crate::upstream::limiter::origin),
        )
    }

    /// The most background requests in flight per upstream host (the
    /// share of `--upstream-concurrency` not kept for clients).
    pub fn background_limit(&self) -> usize {
        self.fetcher.background_limit()
    }

    /// When background work should next fetch for `slot`: at the retry
    /// time while failing, shortly before expiry while healthy (moved
    /// earlier by `spread` in [0, 1), see
    /// [`Freshness::jittered_refresh_age`]; after the warm-up fetch,
    /// `first`, spread wider: [`Freshness::first_refresh_age`]), now when
    /// empty.
    pub async fn next_refresh_at(&self, slot: &DocumentSlot, spread: f64, first: bool) -> Instant {
        if let Some(retry_at) = slot.retry_at() {
            return retry_at;
        }
        match self.servable(slot).await {
            Some((stored, _)) if stored.restored => Instant::now(),
            Some((stored, _)) if first => {
                stored.fetched_at + stored.rules().first_refresh_age(spread)
            }
            Some((stored, _)) => stored.fetched_at + stored.rules().jittered_refresh_age(spread),
            None => Instant::now(),
        }
    }
}

#[cfg(test)]
mod layout_tests {
    use super::*;

    #[test]
    fn what_every_request_reads_fits_in_three_cache_lines() {
        // `received` is the first field only fetches, saves and the status
        // endpoint read: everything before it is read by every request.
        let hot = std::mem::offset_of!(StoredDocument, received);
        assert!(
            hot <= HOT_PREFIX_LIMIT,
            "the fields every request reads take {hot} bytes (limit {HOT_PREFIX_LIMIT})"
        );
    }
}
