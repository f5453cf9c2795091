//! The tenants of one issuer template, cached on demand in a bounded moka
//! cache (`max_tenants`, moka's TinyLFU eviction: when the cache is full a
//! new tenant is admitted only if it is asked for more often than the one it
//! would push out, so a flood of one-off names cannot evict tenants in use).
//!
//! Per tenant entry: its [`DocumentSlot`] (URLs and issuer filled in from
//! the tenant, failure state) and what is known of its document:
//! - a validated document: served fresh or stale like a configured one; a
//!   request that finds it due for refresh-ahead starts one background
//!   refresh (one per tenant at a time) and is answered at once, so tenants
//!   being requested stay fresh and tenants nobody asks for expire;
//! - not found: the upstream answered 404 or 410 at every location; the
//!   answer is remembered for `not_found_ttl` (negative caching) and served
//!   as a 404 without an upstream request;
//! - failed: nothing servable and the fetch failed; kept so that back-off
//!   grows per tenant: until the retry time requests get the error at once.
//!
//! A tenant not cached is fetched on request. Concurrent requests for it
//! are serialised on moka's per-key compute lock and the first one fetches;
//! the rest find its result (one upstream fetch for any number of
//! requests). At most `max_cold_fetches` tenants are fetched cold at once;
//! beyond that a request gets 503 + `Retry-After` without an upstream
//! request ([`FetchError::Busy`]), never an unbounded queue.
//!
//! With a state directory every validated tenant document is saved, and
//! the directory is the template's second tier ([`super::disk_tier`],
//! `max_tenants_on_disk`): a tenant moka evicts keeps its file, and a
//! request for a tenant not in memory first reads its saved copy, checked
//! exactly like a restore (format, checksum, key, issuer, upstream URL,
//! RFC 8414 validation, age), inside the same per-key compute lock (so
//! concurrent requests share one read). A fresh copy is served
//! ([`CacheOutcome::DiskHit`]) and admitted to memory with its remaining
//! lifetime; a stale one is revalidated by the one cold fetch
//! (conditional, with its validators) and served stale if that fails, as
//! a stale copy in memory is; a damaged or mismatched one is removed,
//! logged and never served. At start-up the newest `max_tenants` are
//! restored into memory ([`TemplateCache::restore_from_disk`]).

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwapOption;
use moka::notification::RemovalCause;
use moka::ops::compute::{CompResult, Op};
use moka::Expiry;
use tokio::sync::Semaphore;

use crate::cache::persist::store::SavedDocument;
use crate::cache_rules::freshness::{Freshness, FreshnessState};
use crate::cache_rules::outcome::CacheOutcome;
use crate::cache_rules::upstream_freshness::Settings;
use crate::config::TemplateConfig;
use crate::error::FetchError;
use crate::metrics::GroupMetrics;
use crate::tenant::valid_tenant;
use crate::upstream::{Fetcher, Priority};

use super::disk_tier::{DiskRead, DiskTier};
use super::fetch::FetchContext;
use super::key_sets::OnDemandStart;
use super::persist::restore::Refusal;
use super::persist::store::ListedMember;
use super::persist::{self, RestoreReport, StateWriter};
use super::slot::{tenant_state_key, Backoff, DocumentSlot, Retirement, SlotRules};
use super::{Lookup, StoredDocument, RESTORE_CHUNK};

/// What is known of one tenant's document.
#[derive(Debug)]
pub enum TenantState {
    /// A validated document.
    Document(Arc<StoredDocument>),
    /// The upstream has no such tenant (404 or 410), as of `at`.
    NotFound {
        /// The upstream's status.
        status: u16,
    },
    /// The last fetch failed and nothing is servable.
    Failed,
}

/// What [`TemplateCache::refresh_tenant`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantRefresh {
    /// A fetch of the tenant was started.
    Started,
    /// Not started: the tenant is backing off (the reason).
    BackingOff(String),
    /// Not a valid tenant name (nothing was fetched).
    Invalid,
}

/// One cached tenant.
#[derive(Debug)]
pub struct TenantEntry {
    /// Its slot (carried over from entry to entry, with its back-off).
    pub slot: Arc<DocumentSlot>,
    /// Its document, or why there is none.
    pub state: TenantState,
}

/// Lifetimes of tenant entries in moka.
struct TenantLifetime {
    not_found_ttl: Duration,
    failed_ttl: Duration,
}

impl TenantLifetime {
    fn of(&self, entry: &TenantEntry, at: Instant) -> Duration {
        match &entry.state {
            TenantState::Document(d) => d.hard_deadline().saturating_duration_since(at),
            TenantState::NotFound { .. } => self.not_found_ttl,
            TenantState::Failed => self.failed_ttl,
        }
    }
}

impl Expiry<String, Arc<TenantEntry>> for TenantLifetime {
    fn expire_after_create(
        &self,
        _key: &String,
        value: &Arc<TenantEntry>,
        created_at: Instant,
    ) -> Option<Duration> {
        Some(self.of(value, created_at))
    }

    fn expire_after_update(
        &self,
        _key: &String,
        value: &Arc<TenantEntry>,
        updated_at: Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(self.of(value, updated_at))
    }
}

/// Shared parts every template cache uses.
#[derive(Clone)]
pub struct Shared {
    /// The upstream fetcher.
    pub fetcher: Fetcher,
    /// Back-off between failed fetches.
    pub backoff: Backoff,
    /// Deadline of one upstream request.
    pub fetch_timeout: Duration,
    /// `--min-ttl`, `--ignore-upstream-freshness`.
    pub upstream: Settings,
    /// Where validated documents are saved (`--state-dir`).
    pub state: Option<StateWriter>,
    /// Bounds reads from every template's disk tier at once
    /// ([`super::disk_tier::MAX_DISK_LOADS`]).
    pub disk_loads: Arc<Semaphore>,
}

/// The cache of one template's tenants.
pub struct TemplateCache {
    /// The template.
    pub config: TemplateConfig,
    /// Name in logs and metrics.
    pub name: Arc<str>,
    /// Its metrics group (the template's name).
    pub group: Arc<GroupMetrics>,
    rules: Arc<SlotRules>,
    entries: moka::future::Cache<String, Arc<TenantEntry>>,
    cold: Arc<Semaphore>,
    shared: Shared,
    /// The state directory's tier (`--state-dir` only), shared with a
    /// successor of the same name.
    disk: Option<Arc<DiskTier>>,
    /// Set when a reload drops the template: fetches still running save
    /// nothing, and its eviction listener touches no file (a successor of
    /// the same name owns them).
    retirement: Arc<Retirement>,
    /// For a key-set template that follows its metadata: the metadata
    /// template's cache, set by each generation.
    pub parent: ArcSwapOption<TemplateCache>,
}

/// The one shared [`FetchError::Busy`]: refusing a cold fetch under a
/// flood of new tenants allocates nothing per request.
fn busy() -> Arc<FetchError> {
    static BUSY: std::sync::OnceLock<Arc<FetchError>> = std::sync::OnceLock::new();
    BUSY.get_or_init(|| Arc::new(FetchError::Busy)).clone()
}

/// How the request that ran a cold lookup was answered.
const LED_FETCH: u8 = 0;
const LED_DISK_FRESH: u8 = 1;
const LED_SERVED_STALE: u8 = 2;

/// How long a failed tenant's entry (and its back-off state) is kept.
fn failed_ttl(backoff: Backoff) -> Duration {
    backoff.max.saturating_mul(2)
}

impl TemplateCache {
    /// An empty cache for `config`'s tenants, with `disk` as its second
    /// tier (a predecessor's when a reload changed the template).
    pub fn new(
        config: TemplateConfig,
        group: Arc<GroupMetrics>,
        shared: Shared,
        disk: Option<Arc<DiskTier>>,
    ) -> Self {
        let rules = Arc::new(SlotRules::new(
            Freshness::new(
                config.ttl,
                config.max_stale,
                shared.fetch_timeout,
                config.upstream_urls.len(),
            ),
            shared.backoff,
            shared.upstream,
        ));
        let retirement = Arc::new(Retirement::default());
        let listener_disk = disk.clone();
        let listener_retirement = retirement.clone();
        let entries = moka::future::Cache::builder()
            .max_capacity(config.max_tenants)
            .expire_after(TenantLifetime {
                not_found_ttl: config.not_found_ttl,
                failed_ttl: failed_ttl(shared.backoff),
            })
            // A tenant pushed out by `max_tenants` keeps its file (the
            // disk tier); one expired past its max-stale cannot be served
            // from there either, and its file goes. A retired cache
            // touches nothing: a successor of the same name owns the same
            // files.
            .eviction_listener(move |tenant: Arc<String>, entry: Arc<TenantEntry>, cause| {
                if listener_retirement.is_retired() {
                    return;
                }
                let (Some(disk), TenantState::Document(_)) = (&listener_disk, &entry.state) else {
                    return;
                };
                if cause == RemovalCause::Expired {
                    disk.forget(&tenant);
                }
            })
            .build();
        Self {
            name: Arc::from(config.name.as_str()),
            cold: Arc::new(Semaphore::new(config.max_cold_fetches)),
            config,
            group,
            rules,
            entries,
            shared,
            disk,
            retirement,
            parent: ArcSwapOption::empty(),
        }
    }

    /// The template's disk tier (`--state-dir` only).
    pub fn disk(&self) -> Option<&Arc<DiskTier>> {
        self.disk.as_ref()
    }

    /// [`Self::lookup`] as a boxed `Send` future of a named type: a key-set
    /// template looks its metadata template up through it, and the named
    /// type ends what would otherwise be a recursive future type.
    fn lookup_boxed(
        self: Arc<Self>,
        tenant: String,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Lookup> + Send>> {
        Box::pin(async move { self.lookup(&tenant).await })
    }

    /// For a key-set tenant that follows its metadata: reads the `jwks_uri`
    /// of the same tenant's metadata document (fetched first when not
    /// cached). A tenant the metadata template does not know is not known
    /// here either (its 404 or 410).
    async fn locate_key_set(&self, slot: &DocumentSlot) -> Result<(), FetchError> {
        let (Some(ks), Some(tenant)) = (slot.key_set.as_deref(), slot.tenant.as_deref()) else {
            return Ok(());
        };
        let Some(follows) = ks.follows() else {
            return Ok(());
        };
        let Some(parent) = self.parent.load_full() else {
            return Err(FetchError::KeySetLocation(format!(
                "its metadata template {} is not configured",
                follows.document
            )));
        };
        let lookup = parent.lookup_boxed(tenant.to_string()).await;
        let metadata = match (lookup.stored, lookup.error.as_deref()) {
            (Some(stored), _) => stored,
            (None, Some(e @ (FetchError::HttpStatus(404 | 410) | FetchError::Busy))) => {
                return Err(e.clone())
            }
            (None, error) => {
                return Err(FetchError::KeySetLocation(format!(
                    "the tenant's metadata document is unavailable: {}",
                    error.map_or_else(|| "not fetched yet".to_string(), |e| e.to_string())
                )))
            }
        };
        ks.set_location(super::key_sets::locate(follows, Some(tenant), &metadata)?);
        Ok(())
    }

    /// Freshness rules of every tenant.
    pub fn freshness(&self) -> &Freshness {
        &self.rules.freshness
    }

    fn context(&self) -> FetchContext<'_> {
        FetchContext {
            fetcher: &self.shared.fetcher,
            state: self.shared.state.as_ref(),
            retirement: &self.retirement,
        }
    }

    /// Answers one request for `tenant` (already checked by
    /// [`crate::tenant::valid_tenant`]).
    pub async fn lookup(self: &Arc<Self>, tenant: &str) -> Lookup {
        self.lookup_at(tenant, Instant::now()).await
    }

    /// [`Self::lookup`] for a request that arrived at `now` (the
    /// dispatcher's one clock reading: ages count from it).
    pub async fn lookup_at(self: &Arc<Self>, tenant: &str, now: Instant) -> Lookup {
        if let Some(entry) = self.entries.get(tenant).await {
            if let Some(answer) = self.answer_from(&entry, now) {
                return answer;
            }
        }
        self.fetch_cold(tenant).await
    }

    /// The key set (or document) stored for `tenant` now, servable or not.
    pub async fn stored(&self, tenant: &str) -> Option<Arc<StoredDocument>> {
        match &self.entries.get(tenant).await?.state {
            TenantState::Document(stored) => Some(stored.clone()),
            _ => None,
        }
    }

    /// A client asked for `tenant`'s key set to be revalidated: the same
    /// rules as [`super::MetadataCache::revalidate_on_demand`], per tenant
    /// (each tenant's key set has its own cooldown).
    pub async fn revalidate_on_demand(self: &Arc<Self>, tenant: &str, limit: Duration) -> Lookup {
        let now = Instant::now();
        let Some(entry) = self.entries.get(tenant).await else {
            return self.lookup(tenant).await;
        };
        let (Some(ks), TenantState::Document(stored)) =
            (entry.slot.key_set.as_deref(), &entry.state)
        else {
            return self.lookup(tenant).await;
        };
        let age = now.saturating_duration_since(stored.fetched_at);
        if matches!(stored.rules().classify(age), FreshnessState::Expired)
            || entry.slot.backing_off(now).is_some()
        {
            return self.lookup(tenant).await;
        }
        let rx = match ks.begin_on_demand(now) {
            OnDemandStart::Cooldown => return self.lookup(tenant).await,
            OnDemandStart::Join(rx) => rx,
            OnDemandStart::Lead(tx) => {
                let rx = tx.subscribe();
                let (this, slot, previous) = (self.clone(), entry.slot.clone(), stored.clone());
                tokio::spawn(async move {
                    let located = this.locate_key_set(&slot).await;
                    let fetched = this
                        .context()
                        .fetch_located(&slot, Priority::Client, None, Some(&previous), located)
                        .await;
                    let result = match fetched {
                        Ok(next) => {
                            if let Some(tenant) = slot.tenant.as_deref() {
                                let entry = Arc::new(TenantEntry {
                                    slot: slot.clone(),
                                    state: TenantState::Document(next.clone()),
                                });
                                this.entries.insert(tenant.to_string(), entry).await;
                            }
                            let status = match slot.last_fetch() {
                                Some(f) if f.outcome == super::fetch::NOT_MODIFIED => 304,
                                _ => 200,
                            };
                            Ok((next, status))
                        }
                        Err(e) => Err(e),
                    };
                    let _ = tx.send(Some(result));
                });
                rx
            }
        };
        match super::key_sets::wait(rx, limit).await {
            Ok((stored, status)) => Lookup::revalidated(stored, status),
            Err(error) => {
                let age = Instant::now().saturating_duration_since(stored.fetched_at);
                if matches!(stored.rules().classify(age), FreshnessState::Expired) {
                    Lookup::failed(Arc::new(error), &entry.slot)
                } else {
                    Lookup::revalidation_failed(stored.clone(), age, Arc::new(error))
                }
            }
        }
    }

    /// The answer an entry gives without fetching, if it gives one.
    fn answer_from(self: &Arc<Self>, entry: &Arc<TenantEntry>, now: Instant) -> Option<Lookup> {
        match &entry.state {
            TenantState::Document(stored) => {
                let age = now.saturating_duration_since(stored.fetched_at);
                if matches!(stored.rules().classify(age), FreshnessState::Expired) {
                    return None;
                }
                // A restored copy is replaced at its first request.
                if (stored.restored || age >= stored.rules().refresh_age())
                    && entry.slot.backing_off(now).is_none()
                {
                    self.refresh_in_background(entry.clone());
                }
                Some(Lookup::stored(stored.clone(), age, &entry.slot))
            }
            TenantState::NotFound { status } => Some(Lookup::not_found(*status, false)),
            TenantState::Failed => entry
                .slot
                .backing_off(now)
                .map(|(error, retry_after)| Lookup::error(error, retry_after)),
        }
    }

    /// Nothing servable in memory: the disk tier, then one coalesced
    /// client-priority fetch. It runs in a task of its own, so a client
    /// that hangs up (actix drops its request's future) never cancels it:
    /// the read or fetch runs to completion and its answer is stored for
    /// the next request.
    async fn fetch_cold(self: &Arc<Self>, tenant: &str) -> Lookup {
        let task = tokio::spawn(self.clone().compute_cold(tenant.to_string()));
        let Ok((result, led)) = task.await else {
            // Only when the runtime shuts down (or the task panicked).
            return Lookup::error(Arc::new(FetchError::FetcherStopped), Duration::from_secs(1));
        };
        match result {
            Ok(CompResult::Inserted(e) | CompResult::ReplacedWith(e)) => {
                match (led, &e.value().state) {
                    (LED_DISK_FRESH, TenantState::Document(stored)) => {
                        Lookup::fetched(CacheOutcome::DiskHit, stored.clone())
                    }
                    (LED_SERVED_STALE, TenantState::Document(stored)) => {
                        Lookup::stored(stored.clone(), stored.resident(), &e.value().slot)
                    }
                    _ => Self::fetched_answer(e.value(), true),
                }
            }
            Ok(CompResult::Unchanged(e)) => Self::fetched_answer(e.value(), false),
            Ok(CompResult::StillNone(_) | CompResult::Removed(_)) => {
                Lookup::error(busy(), Duration::from_secs(1))
            }
            Err(error) => {
                tracing::debug!(
                    document = &*self.name,
                    tenant,
                    "cold fetch refused: too many in flight"
                );
                Lookup::error(Arc::new(error), Duration::from_secs(1))
            }
        }
    }

    /// The cold read or fetch of `tenant`, on moka's per-key compute lock
    /// (the first request reads or fetches, the others find its result),
    /// and how the first was answered (`LED_*`).
    async fn compute_cold(
        self: Arc<Self>,
        tenant: String,
    ) -> (Result<CompResult<String, Arc<TenantEntry>>, FetchError>, u8) {
        let this = self.clone();
        let key = tenant.clone();
        let led = AtomicU8::new(LED_FETCH);
        let led_by = &led;
        let result = self
            .entries
            .entry(key)
            .and_try_compute_with(|existing| async move {
                let now = Instant::now();
                // Another request may have fetched while this one waited.
                if let Some(e) = &existing {
                    if this.answer_from(e.value(), now).is_some() {
                        return Ok(Op::Nop);
                    }
                }
                let slot = match existing {
                    Some(e) => e.into_value().slot.clone(),
                    None => Arc::new(this.new_slot(&tenant)),
                };
                // The disk tier first: no upstream request, no cold slot.
                let saved = this.load_from_disk(&slot).await;
                let put = |slot: Arc<DocumentSlot>, state| {
                    Ok(Op::Put(Arc::new(TenantEntry { slot, state })))
                };
                if let Some(stored) = &saved {
                    if matches!(stored.state(), FreshnessState::Fresh { .. }) {
                        led_by.store(LED_DISK_FRESH, Ordering::Relaxed);
                        return put(slot, TenantState::Document(stored.clone()));
                    }
                }
                let Ok(_cold) = this.cold.clone().try_acquire_owned() else {
                    // Too many cold fetches: a stale copy read from disk
                    // is served as it is (refreshed by a later request).
                    return match saved {
                        Some(stored) => {
                            led_by.store(LED_SERVED_STALE, Ordering::Relaxed);
                            put(slot, TenantState::Document(stored))
                        }
                        None => Err(FetchError::Busy),
                    };
                };
                let located = this.locate_key_set(&slot).await;
                // The metadata template's own bound on cold fetches: not
                // this tenant's failure (no back-off), the same 503, or
                // the stale copy read from disk.
                if matches!(located, Err(FetchError::Busy)) {
                    return match saved {
                        Some(stored) => {
                            led_by.store(LED_SERVED_STALE, Ordering::Relaxed);
                            put(slot, TenantState::Document(stored))
                        }
                        None => Err(FetchError::Busy),
                    };
                }
                // A stale copy from disk is revalidated (its validators).
                let state = match this
                    .context()
                    .fetch_located(&slot, Priority::Client, None, saved.as_ref(), located)
                    .await
                {
                    Ok(stored) => {
                        this.disk_saved(&tenant, &stored);
                        TenantState::Document(stored)
                    }
                    Err(FetchError::HttpStatus(status @ (404 | 410))) => {
                        // Gone upstream: not to be restored after a restart.
                        this.forget_file(&slot);
                        TenantState::NotFound { status }
                    }
                    // Served stale within max-stale, like a copy in memory.
                    Err(_) => match saved {
                        Some(stored) => {
                            led_by.store(LED_SERVED_STALE, Ordering::Relaxed);
                            TenantState::Document(stored)
                        }
                        None => TenantState::Failed,
                    },
                };
                put(slot, state)
            })
            .await;
        (result, led.load(Ordering::Relaxed))
    }

    /// Reads `slot`'s tenant back from the disk tier, checked exactly like
    /// a restore; `None` when it has no usable copy (a damaged, mismatched
    /// or expired file is removed; a damaged or mismatched one is logged).
    /// The copy keeps its remaining lifetime and is not refetched at once
    /// (it is this gateway's own validated copy, not a restart's).
    async fn load_from_disk(&self, slot: &DocumentSlot) -> Option<Arc<StoredDocument>> {
        let disk = self.disk.as_ref()?;
        let tenant = slot.tenant.as_deref()?;
        if self.retirement.is_retired() || !disk.contains(tenant) {
            return None;
        }
        let m = disk.metrics();
        match disk.read(tenant, self.shared.fetch_timeout).await {
            DiskRead::Found(saved) => {
                match persist::restore::restore(slot, *saved, SystemTime::now()) {
                    Ok(mut stored) => {
                        stored.restored = false;
                        let fresh = matches!(stored.state(), FreshnessState::Fresh { .. });
                        m.record_load(if fresh { "fresh" } else { "stale" });
                        disk.used(tenant);
                        Some(Arc::new(stored))
                    }
                    Err(Refusal::Expired(reason)) => {
                        m.record_load("expired");
                        tracing::debug!(document = &*self.name, tenant, %reason, "disk tier: saved copy past max-stale, removed");
                        disk.forget(tenant);
                        None
                    }
                    Err(Refusal::Mismatch(reason)) => {
                        m.record_load("corrupt");
                        tracing::warn!(document = &*self.name, tenant, %reason, "state file ignored and removed");
                        disk.forget(tenant);
                        None
                    }
                }
            }
            DiskRead::Damaged(problem) => {
                m.record_load("corrupt");
                tracing::warn!(document = &*self.name, tenant, reason = %problem, "state file ignored and removed");
                disk.forget(tenant);
                None
            }
            DiskRead::Absent => {
                // Not written yet (its save is still queued for the writer
                // thread) or deleted by hand: fetched, and the fetch saves
                // it again. Nothing is removed: a queued save must not be
                // undone.
                m.record_load("missing");
                tracing::debug!(
                    document = &*self.name,
                    tenant,
                    "disk tier: the indexed file is not there (yet)"
                );
                None
            }
            DiskRead::TimedOut => {
                tracing::warn!(
                    document = &*self.name,
                    tenant,
                    timeout_ms = self.shared.fetch_timeout.as_millis() as u64,
                    "disk tier: reading the saved copy took too long; fetching instead"
                );
                None
            }
        }
    }

    /// A fetch saved `stored` for `tenant` (unless retired): it is the
    /// disk tier's most recently used, and tenants past its bound (never
    /// one held in memory) lose their files.
    fn disk_saved(&self, tenant: &str, stored: &StoredDocument) {
        if let (Some(disk), false) = (&self.disk, self.retirement.is_retired()) {
            disk.saved(tenant, stored.document.body.len(), |t| {
                t != tenant && self.entries.contains_key(t)
            });
        }
    }

    /// Removes `slot`'s saved copy (gone upstream): from the disk tier, or
    /// the file alone without one.
    fn forget_file(&self, slot: &DocumentSlot) {
        if self.retirement.is_retired() {
            return;
        }
        match (&self.disk, slot.tenant.as_deref()) {
            (Some(disk), Some(tenant)) => disk.forget(tenant),
            _ => {
                if let Some(state) = &self.shared.state {
                    state.remove(&slot.state_key());
                }
            }
        }
    }

    /// The answer after a cold fetch: `led` when this request made it.
    fn fetched_answer(entry: &TenantEntry, led: bool) -> Lookup {
        match &entry.state {
            TenantState::Document(stored) if !led => {
                // Waited for another request's lookup: what it stored,
                // stale included, as a stale copy is served.
                let age = stored.resident();
                match stored.rules().classify(age) {
                    FreshnessState::Fresh { .. } => {
                        Lookup::fetched(CacheOutcome::Collapsed, stored.clone())
                    }
                    _ => Lookup::stored(stored.clone(), age, &entry.slot),
                }
            }
            TenantState::Document(stored) => Lookup::fetched(CacheOutcome::Miss, stored.clone()),
            TenantState::NotFound { status } => Lookup::not_found(*status, led),
            TenantState::Failed => {
                Lookup::failed(entry.slot.last_error().unwrap_or_else(busy), &entry.slot)
            }
        }
    }

    /// Starts the one background refresh of a tenant with a document; a
    /// failure keeps the stored document (stale-if-error) and backs off,
    /// except a `410 Gone`, which forgets the tenant.
    fn refresh_in_background(self: &Arc<Self>, entry: Arc<TenantEntry>) {
        if !entry.slot.start_refresh() {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            let slot = entry.slot.clone();
            let previous = match &entry.state {
                TenantState::Document(d) => Some(d),
                _ => None,
            };
            let located = this.locate_key_set(&slot).await;
            let fetched = this
                .context()
                .fetch_located(&slot, Priority::Background, None, previous, located)
                .await;
            let state = match fetched {
                Ok(stored) => {
                    if let Some(tenant) = slot.tenant.as_deref() {
                        this.disk_saved(tenant, &stored);
                    }
                    Some(TenantState::Document(stored))
                }
                // 410 Gone says the tenant was deleted on purpose: it is
                // forgotten at once (file included). A 404 on a refresh may
                // be an upstream incident answering 404 for everything, so
                // the last good copy rides it out like any failure, until
                // --max-stale; a cold fetch then learns the 404.
                Err(FetchError::HttpStatus(410)) => {
                    this.forget_file(&slot);
                    Some(TenantState::NotFound { status: 410 })
                }
                Err(_) => None,
            };
            if let (Some(tenant), Some(state)) = (slot.tenant.as_deref(), state) {
                let next = Arc::new(TenantEntry {
                    slot: slot.clone(),
                    state,
                });
                this.entries.insert(tenant.to_string(), next).await;
            }
            slot.end_refresh();
        });
    }

    /// Starts a background refresh of every cached tenant with a document
    /// that is not backing off (an operator's refresh); returns how many
    /// were started. Each obeys the per-tenant single flight and the
    /// per-host bound like any refresh.
    pub fn refresh_all(self: &Arc<Self>) -> usize {
        let now = Instant::now();
        let mut started = 0;
        for (_, entry) in self.entries.iter() {
            if matches!(entry.state, TenantState::Document(_))
                && entry.slot.backing_off(now).is_none()
            {
                self.refresh_in_background(entry.clone());
                started += 1;
            }
        }
        started
    }

    /// An operator's refresh of one tenant: a cached document is refreshed
    /// in the background; a remembered "not found" (or a failure no longer
    /// backing off) is forgotten and the tenant fetched now, as is a tenant
    /// not cached at all. A tenant backing off is left alone (a refresh
    /// cannot be used to hammer a failing upstream).
    pub async fn refresh_tenant(self: &Arc<Self>, tenant: &str) -> TenantRefresh {
        if !valid_tenant(tenant) {
            return TenantRefresh::Invalid;
        }
        let now = Instant::now();
        if let Some(entry) = self.entries.get(tenant).await {
            // A remembered 404 is the upstream's answer, not its failure:
            // the operator says the tenant exists now.
            let not_found = matches!(entry.state, TenantState::NotFound { .. });
            if let Some((error, left)) = entry.slot.backing_off(now).filter(|_| !not_found) {
                return TenantRefresh::BackingOff(format!(
                    "backing off for {}s after {} failed fetches ({error})",
                    left.as_secs().max(1),
                    entry.slot.consecutive_failures()
                ));
            }
            if matches!(entry.state, TenantState::Document(_)) {
                self.refresh_in_background(entry);
                return TenantRefresh::Started;
            }
            self.entries.invalidate(tenant).await;
        }
        let this = self.clone();
        let tenant = tenant.to_string();
        tokio::spawn(async move {
            this.lookup(&tenant).await;
        });
        TenantRefresh::Started
    }

    /// Whether `tenant` is held in memory.
    pub fn holds(&self, tenant: &str) -> bool {
        self.entries.contains_key(tenant)
    }

    /// Every cached tenant entry (for the status endpoint).
    pub fn entries(&self) -> Vec<Arc<TenantEntry>> {
        self.entries.iter().map(|(_, e)| e).collect()
    }

    /// Counts of the cached tenants by state, for the gauges: (servable,
    /// stale, oldest age).
    pub fn census(&self) -> (usize, usize, Duration) {
        let now = Instant::now();
        let (mut cached, mut stale, mut oldest) = (0, 0, Duration::ZERO);
        for (_, entry) in self.entries.iter() {
            if let TenantState::Document(d) = &entry.state {
                let age = now.saturating_duration_since(d.fetched_at);
                match d.rules().classify(age) {
                    FreshnessState::Fresh { .. } => cached += 1,
                    FreshnessState::Stale { .. } => {
                        cached += 1;
                        stale += 1;
                    }
                    FreshnessState::Expired => continue,
                }
                oldest = oldest.max(age);
            }
        }
        (cached, stale, oldest)
    }

    /// A new slot for `tenant` (already checked).
    fn new_slot(&self, tenant: &str) -> DocumentSlot {
        DocumentSlot::tenant(
            &self.config,
            self.name.clone(),
            self.group.clone(),
            tenant,
            self.rules.clone(),
        )
    }

    /// Serves saved tenants until a fetch replaces them (a reload's
    /// carry-over from a predecessor, or [`Self::restore_from_disk`] at
    /// start-up): each is checked like a configured document's saved copy
    /// (tenant name, issuer and upstream URL for that tenant, RFC 8414
    /// validation, age; on a blocking thread, a chunk at a time, so a reload
    /// carrying thousands of tenants never stalls a runtime thread), and the
    /// newest `max_tenants` are kept in memory;
    /// the others stay in the disk tier. A copy that cannot be served
    /// loses its file. A tenant already cached is left as it is.
    pub async fn restore(&self, mut saved: Vec<(String, SavedDocument)>) -> RestoreReport {
        let now = SystemTime::now();
        let mut report = RestoreReport::default();
        saved.sort_by_key(|(_, doc)| std::cmp::Reverse(doc.fetched_at));
        let mut kept: u64 = 0;
        let mut saved = saved.into_iter().peekable();
        while kept < self.config.max_tenants && saved.peek().is_some() {
            // Names are checked here (cheap); the bytes are validated off
            // the runtime threads (RFC 8414 validation of up to
            // max_tenants documents on a reload), a chunk at a time.
            let mut candidates = Vec::new();
            for (tenant, doc) in saved.by_ref() {
                let key = tenant_state_key(&self.name, &tenant);
                if !valid_tenant(&tenant) {
                    report.ignored += 1;
                    tracing::warn!(
                        document = &*self.name,
                        key,
                        "state file ignored and removed: not a valid tenant name"
                    );
                    if let Some(state) = &self.shared.state {
                        state.remove(&key);
                    }
                    continue;
                }
                if self.entries.contains_key(&tenant) {
                    continue;
                }
                let slot = Arc::new(self.new_slot(&tenant));
                candidates.push((tenant, slot, doc));
                if candidates.len() == RESTORE_CHUNK {
                    break;
                }
            }
            let checked = tokio::task::spawn_blocking(move || {
                candidates
                    .into_iter()
                    .map(|(tenant, slot, doc)| {
                        let result = persist::restore::restore(&slot, doc, now);
                        (tenant, slot, result)
                    })
                    .collect::<Vec<_>>()
            })
            .await;
            let checked = match checked {
                Ok(checked) => checked,
                Err(e) => {
                    tracing::warn!(document = &*self.name, error = %e, "restoring saved tenants failed");
                    break;
                }
            };
            for (tenant, slot, result) in checked {
                if kept >= self.config.max_tenants {
                    break;
                }
                match result {
                    Ok(stored) => {
                        let entry = TenantEntry {
                            slot,
                            state: TenantState::Document(Arc::new(stored)),
                        };
                        self.entries.insert(tenant, Arc::new(entry)).await;
                        kept += 1;
                        report.restored += 1;
                    }
                    Err(reason) => {
                        // A tenant file is a cache entry: one that cannot be
                        // served now (expired, another issuer or upstream) is
                        // removed.
                        report.ignored += 1;
                        tracing::warn!(document = &*self.name, tenant, %reason, "state file ignored and removed");
                        self.forget_file(&slot);
                    }
                }
            }
        }
        report
    }

    /// Takes the listed tenant files into the disk tier (at start-up, or
    /// when a reload adds the template); see [`DiskTier::rebuild`]. An
    /// inherited, non-empty tier is kept as it is.
    pub fn rebuild_disk(&self, listed: Vec<ListedMember>) -> usize {
        match &self.disk {
            Some(disk) if disk.is_empty() => disk.rebuild(listed),
            Some(disk) => disk.len(),
            None => 0,
        }
    }

    /// Restores the disk tier's newest `max_tenants` into memory (at
    /// start-up: they are served at once and refetched at their first
    /// request, as restored copies are); the others are read on request.
    pub async fn restore_from_disk(&self) -> RestoreReport {
        let Some(disk) = &self.disk else {
            return RestoreReport::default();
        };
        let limit = usize::try_from(self.config.max_tenants).unwrap_or(usize::MAX);
        let mut report = RestoreReport::default();
        // In chunks: never all of them read and held twice at once.
        for chunk in disk.newest(limit).chunks(RESTORE_CHUNK) {
            let mut saved = Vec::with_capacity(chunk.len());
            for tenant in chunk {
                match disk.read(tenant, self.shared.fetch_timeout).await {
                    DiskRead::Found(doc) => saved.push((tenant.clone(), *doc)),
                    DiskRead::Damaged(problem) => {
                        report.ignored += 1;
                        disk.metrics().record_load("corrupt");
                        tracing::warn!(document = &*self.name, tenant, reason = %problem, "state file ignored and removed");
                        disk.forget(tenant);
                    }
                    DiskRead::Absent | DiskRead::TimedOut => {}
                }
            }
            let r = self.restore(saved).await;
            report.restored += r.restored;
            report.ignored += r.ignored;
        }
        report
    }

    /// The cached tenants' documents, as saved copies: what a reload that
    /// changed this template hands to its successor ([`Self::restore`]).
    pub async fn saved_copies(&self) -> Vec<(String, SavedDocument)> {
        self.entries.run_pending_tasks().await;
        self.entries
            .iter()
            .filter_map(|(tenant, entry)| match &entry.state {
                TenantState::Document(stored) => Some((
                    tenant.to_string(),
                    persist::writer::saved_copy(&entry.slot, stored),
                )),
                _ => None,
            })
            .collect()
    }

    /// A reload dropped the template: fetches still running save nothing
    /// from now on and its eviction listener touches no file; when
    /// `removed` (no successor of the same name) every file of its disk
    /// tier (every tenant saved, in memory or not) is removed.
    pub fn retire(&self, removed: bool) {
        self.retirement.retire(removed);
        if !removed {
            return;
        }
        match &self.disk {
            Some(disk) => disk.remove_all(),
            None => {
                if let Some(state) = &self.shared.state {
                    for (_, entry) in self.entries.iter() {
                        state.remove(&entry.slot.state_key());
                    }
                }
            }
        }
    }

    /// Entries held (documents, not-found answers and failures), after
    /// moka's pending evictions are applied.
    pub async fn entry_count(&self) -> u64 {
        self.entries.run_pending_tasks().await;
        self.entries.entry_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::disk_tier::MAX_DISK_LOADS;
    use crate::cache::persist::store::file_name_for;
    use crate::cache_rules::upstream_freshness::UpstreamHeaders;
    use crate::config::UpstreamConfig;
    use crate::discovery::DocumentKind;
    use crate::document::ValidatedDocument;
    use crate::metrics::Metrics;
    use crate::tenant::Pattern;
    use bytes::Bytes;

    const TEMPLATE: &str = "oauth-authorization-server/realms/{tenant}";

    fn pattern(text: &str) -> Pattern {
        Pattern::parse(text).expect("one {tenant}")
    }

    /// A template cache of one tenant in memory, a one-second lifetime,
    /// over a state directory in `dir`.
    fn cache_in(dir: &std::path::Path, metrics: &Metrics) -> (Arc<TemplateCache>, StateWriter) {
        let writer = StateWriter::open(dir, 1 << 20, metrics).expect("state dir");
        let upstream = UpstreamConfig {
            timeout: Duration::from_secs(1),
            max_body_size: 1 << 20,
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(1),
            concurrency: 4,
            extra_roots: Vec::new(),
            freshness: Settings::default(),
            proxy: Default::default(),
        };
        let shared = Shared {
            fetcher: Fetcher::start(&upstream).expect("fetcher"),
            backoff: Backoff {
                min: Duration::from_secs(1),
                max: Duration::from_secs(1),
            },
            fetch_timeout: Duration::from_secs(1),
            upstream: Settings::default(),
            state: Some(writer.clone()),
            disk_loads: Arc::new(Semaphore::new(MAX_DISK_LOADS)),
        };
        let config = TemplateConfig {
            name: TEMPLATE.into(),
            kind: DocumentKind::AuthorizationServer,
            routes: vec![pattern(
                "/.well-known/oauth-authorization-server/realms/{tenant}",
            )],
            upstream_urls: vec![pattern(
                "http://127.0.0.1:9/.well-known/oauth-authorization-server/realms/{tenant}",
            )],
            issuer: pattern("https://as.example.com/realms/{tenant}"),
            ttl: Duration::from_secs(1),
            max_stale: Duration::ZERO,
            max_tenants: 1,
            max_tenants_on_disk: 100,
            not_found_ttl: Duration::from_secs(60),
            max_cold_fetches: 4,
            key_set: None,
        };
        let disk = Arc::new(DiskTier::new(
            Arc::from(TEMPLATE),
            writer.clone(),
            config.max_tenants_on_disk,
            shared.disk_loads.clone(),
            metrics.disk_tier(TEMPLATE),
        ));
        let group = metrics.group(TEMPLATE, true);
        let cache = TemplateCache::new(config, group, shared, Some(disk));
        (Arc::new(cache), writer)
    }

    /// `tenant`'s entry, as a fetch makes it (its file saved too).
    fn fetched(cache: &TemplateCache, writer: &StateWriter, tenant: &str) -> Arc<TenantEntry> {
        let slot = Arc::new(cache.new_slot(tenant));
        let issuer = format!("https://as.example.com/realms/{tenant}");
        let body = Bytes::from(format!(
            r#"{{"issuer":"{issuer}","authorization_endpoint":"{issuer}/a","token_endpoint":"{issuer}/t","response_types_supported":["code"]}}"#
        ));
        let document = ValidatedDocument::validate(body, slot.issuer()).expect("valid");
        let url: Arc<str> = Arc::from(slot.upstream_urls().first().expect("a URL"));
        let stored = StoredDocument::new(
            document,
            url,
            UpstreamHeaders::default(),
            SystemTime::now(),
            &slot,
        );
        writer.save(&slot, &stored);
        cache.disk_saved(tenant, &stored);
        Arc::new(TenantEntry {
            slot,
            state: TenantState::Document(Arc::new(stored)),
        })
    }

    fn file_exists(writer: &StateWriter, tenant: &str) -> bool {
        writer
            .path()
            .join(file_name_for(&tenant_state_key(TEMPLATE, tenant)))
            .exists()
    }

    /// Issue 23: a reload that changes a template hands its files to a
    /// successor of the same name; whatever the retired cache evicts
    /// afterwards (a late refresh inserting into it, its entries
    /// expiring) must not remove them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_retired_caches_evictions_leave_the_successors_files_alone() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let metrics = Metrics::new().expect("metrics");
        let (cache, writer) = cache_in(tmp.path(), &metrics);
        let a = fetched(&cache, &writer, "a");
        cache.entries.insert("a".into(), a).await;
        let b = fetched(&cache, &writer, "b");
        writer.flush(Duration::from_secs(5)).await;
        assert!(file_exists(&writer, "a") && file_exists(&writer, "b"));

        cache.retire(false);
        // A refresh finishing after the reload inserts into the retired
        // cache: max_tenants = 1, so one of the two is evicted (size).
        cache.entries.insert("b".into(), b).await;
        assert_eq!(cache.entry_count().await, 1);
        // Then the survivor expires (a one-second lifetime).
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(cache.entry_count().await, 0);
        writer.flush(Duration::from_secs(5)).await;
        assert!(
            file_exists(&writer, "a") && file_exists(&writer, "b"),
            "the retired cache removed a file its successor owns"
        );
    }

    /// The same evictions in a live cache: pushed out of memory keeps the
    /// file (the disk tier), expired past max-stale removes it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_live_cache_keeps_evicted_files_and_removes_expired_ones() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let metrics = Metrics::new().expect("metrics");
        let (cache, writer) = cache_in(tmp.path(), &metrics);
        for t in ["a", "b"] {
            let e = fetched(&cache, &writer, t);
            cache.entries.insert(t.into(), e).await;
        }
        assert_eq!(cache.entry_count().await, 1);
        writer.flush(Duration::from_secs(5)).await;
        assert!(file_exists(&writer, "a") && file_exists(&writer, "b"));
        assert_eq!(cache.disk().map(|d| d.len()), Some(2));
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(cache.entry_count().await, 0);
        writer.flush(Duration::from_secs(5)).await;
        let left = ["a", "b"]
            .iter()
            .filter(|t| file_exists(&writer, t))
            .count();
        assert_eq!(
            left, 1,
            "the expired one's file is removed, the evicted one's kept"
        );
        assert_eq!(cache.disk().map(|d| d.len()), Some(1));
    }
}
