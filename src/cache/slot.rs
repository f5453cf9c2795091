//! One document's identity, rules and failure state: a configured document
//! has one slot for the life of the process, a template tenant one per
//! cached tenant. The slot is what a fetch needs (upstream URLs, expected
//! issuer, freshness) and where back-off lives between fetches.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::{ArcSwap, ArcSwapOption};

use crate::cache_rules::freshness::Freshness;
use crate::cache_rules::upstream_freshness::{Policy, Settings};
use crate::config::{DocumentConfig, TemplateConfig};
use crate::discovery::DocumentKind;
use crate::document::ExpectedIssuer;
use crate::error::FetchError;
use crate::metrics::GroupMetrics;
use crate::upstream_urls::UpstreamUrls;

use super::key_sets::KeySetState;

/// Slot ids: unique for the life of the process, so a slot kept across a
/// configuration reload keeps its cache entry and its place in the
/// refresh schedule, and a new one never takes over another's.
static NEXT_ID: AtomicUsize = AtomicUsize::new(0);

/// Capped exponential back-off with jitter between failed fetches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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

#[derive(Debug, Default)]
struct FailureState {
    consecutive: u32,
    /// Shared, not cloned: every stale answer and every answer in
    /// back-off hands out this one copy (a reference count, never a
    /// `String` allocated per request); one pointer per slot.
    last_error: Option<Arc<FetchError>>,
    retry_at: Option<Instant>,
    last_fetch: Option<LastFetch>,
}

/// The outcome and wall-clock time of a slot's last completed fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastFetch {
    /// The fetch outcome label (`ok`, `timeout`, ...).
    pub outcome: &'static str,
    /// When it completed.
    pub at: SystemTime,
}

/// The rules a slot follows: the same for every document configured with
/// the same lifetimes, so one copy is shared by all of them (see
/// [`SlotRules::shared`]), not one per document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SlotRules {
    /// Freshness rules (`ttl` is the most the upstream may allow).
    pub freshness: Freshness,
    /// How the upstream's own freshness is bounded.
    pub policy: Policy,
    /// Back-off between failed fetches.
    pub backoff: Backoff,
}

impl SlotRules {
    /// The rules of a document with `freshness`.
    pub fn new(freshness: Freshness, backoff: Backoff, upstream: Settings) -> Self {
        Self {
            freshness,
            policy: upstream.policy(freshness.ttl),
            backoff,
        }
    }

    /// The rules of a configured document: `fetch_timeout` bounds one
    /// upstream request (a fetch may make one per upstream URL).
    pub fn configured(
        config: &DocumentConfig,
        fetch_timeout: Duration,
        backoff: Backoff,
        upstream: Settings,
    ) -> Self {
        Self::new(
            Freshness::new(
                config.ttl,
                config.max_stale,
                fetch_timeout,
                config.upstream_urls.len(),
            ),
            backoff,
            upstream,
        )
    }

    /// These rules, shared with every earlier equal set in `seen`.
    pub fn shared(self, seen: &mut HashMap<SlotRules, Arc<SlotRules>>) -> Arc<SlotRules> {
        seen.entry(self).or_insert_with(|| Arc::new(self)).clone()
    }
}

/// The state-directory key of `tenant` of the template named `template`
/// (see [`DocumentSlot::state_key`]).
pub fn tenant_state_key(template: &str, tenant: &str) -> String {
    format!("{template}@{tenant}")
}

/// Whether a document (or a template) left the configuration in a
/// reload. A fetch already running then must not bring its copy back, in
/// memory or in the state directory: [`super::fetch::FetchContext`] and
/// the cache check it after every fetch.
#[derive(Debug, Default)]
pub struct Retirement(AtomicU8);

impl Retirement {
    const LIVE: u8 = 0;
    /// A successor with the same name took over (its file is the same).
    const REPLACED: u8 = 1;
    /// The name is gone from the configuration (its file is removed).
    const REMOVED: u8 = 2;

    /// Marks it retired: `removed` when no successor has its name.
    pub fn retire(&self, removed: bool) {
        let to = if removed {
            Self::REMOVED
        } else {
            Self::REPLACED
        };
        self.0.store(to, Ordering::SeqCst);
    }

    /// Retired, replaced or removed.
    pub fn is_retired(&self) -> bool {
        self.0.load(Ordering::SeqCst) != Self::LIVE
    }

    /// Retired with no successor of the same name.
    pub fn is_removed(&self) -> bool {
        self.0.load(Ordering::SeqCst) == Self::REMOVED
    }
}

/// One document: its source, its rules and its failure state.
#[derive(Debug)]
pub struct DocumentSlot {
    /// Unique id (the configured store's key and the scheduler's handle).
    pub id: usize,
    /// Name for logs (bounded, from configuration; a template's name for
    /// its tenants).
    pub name: Arc<str>,
    /// The tenant, for a template tenant.
    pub tenant: Option<Box<str>>,
    /// Its metrics group (replaced when a reload regroups documents).
    group: ArcSwap<GroupMetrics>,
    /// What the document is.
    pub kind: DocumentKind,
    /// Its freshness, upstream-freshness and back-off rules.
    pub rules: Arc<SlotRules>,
    urls: UpstreamUrls,
    issuer: ExpectedIssuer,
    failures: Mutex<FailureState>,
    refreshing: AtomicBool,
    /// Set when a reload drops it (configured documents only; a template's
    /// tenants follow their template's).
    pub retirement: Retirement,
    /// Added by a reload and not servable yet: not counted against
    /// readiness until it has been servable once (see
    /// [`crate::generation::Generation::unready_documents`]).
    pending: AtomicBool,
    /// For a key set: where it comes from and its on-demand state (see
    /// [`super::key_sets`]); `None` for metadata documents.
    pub key_set: Option<Box<KeySetState>>,
    /// A configured document's copy held now: what
    /// [`super::MetadataCache`] serves from (see its `current`); always
    /// empty for a template tenant (its template's moka cache holds it).
    pub(super) current: ArcSwapOption<super::StoredDocument>,
}

impl DocumentSlot {
    /// The slot of a configured document, following `rules` (shared with
    /// every document configured alike).
    pub fn configured(
        group: Arc<GroupMetrics>,
        config: &DocumentConfig,
        rules: Arc<SlotRules>,
    ) -> Self {
        let mut slot = Self::new(
            config.name.clone(),
            None,
            group,
            config.kind,
            rules,
            config.upstream_urls.clone(),
            config.issuer.clone(),
        );
        slot.key_set = config
            .key_set
            .clone()
            .map(|c| Box::new(KeySetState::new(c)));
        slot
    }

    /// The slot of `tenant` (already checked) of a template.
    pub fn tenant(
        template: &TemplateConfig,
        name: Arc<str>,
        group: Arc<GroupMetrics>,
        tenant: &str,
        rules: Arc<SlotRules>,
    ) -> Self {
        let mut slot = Self::new(
            name,
            Some(tenant.into()),
            group,
            template.kind,
            rules,
            UpstreamUrls::listed(template.upstream_urls.iter().map(|u| u.render(tenant))),
            ExpectedIssuer::new(template.issuer.render(tenant)),
        );
        slot.key_set = template
            .key_set
            .clone()
            .map(|c| Box::new(KeySetState::new(c)));
        slot
    }

    fn new(
        name: Arc<str>,
        tenant: Option<Box<str>>,
        group: Arc<GroupMetrics>,
        kind: DocumentKind,
        rules: Arc<SlotRules>,
        urls: UpstreamUrls,
        issuer: ExpectedIssuer,
    ) -> Self {
        Self {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            name,
            tenant,
            group: ArcSwap::new(group),
            kind,
            rules,
            urls,
            issuer,
            failures: Mutex::new(FailureState::default()),
            refreshing: AtomicBool::new(false),
            retirement: Retirement::default(),
            pending: AtomicBool::new(false),
            key_set: None,
            current: ArcSwapOption::empty(),
        }
    }

    /// Its key in the state directory: the document's name, or for a
    /// template tenant the template's name (which contains `{tenant}`, so
    /// no configured document can have it) with `@` and the tenant.
    pub fn state_key(&self) -> String {
        match &self.tenant {
            None => self.name.to_string(),
            Some(tenant) => tenant_state_key(&self.name, tenant),
        }
    }

    /// Freshness rules (`ttl` is the most the upstream may allow).
    pub fn freshness(&self) -> &Freshness {
        &self.rules.freshness
    }

    /// How the upstream's own freshness is bounded.
    pub fn policy(&self) -> Policy {
        self.rules.policy
    }

    fn failures(&self) -> MutexGuard<'_, FailureState> {
        // The state is plain data; a panic elsewhere cannot leave it torn.
        self.failures.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Its metrics group.
    pub fn metrics(&self) -> arc_swap::Guard<Arc<GroupMetrics>> {
        // A guard, not a clone: no reference-count traffic per request.
        self.group.load()
    }

    /// Moves it to another metrics group (a reload changed the grouping).
    pub fn set_metrics(&self, group: Arc<GroupMetrics>) {
        self.group.store(group);
    }

    /// Records a successful fetch (`ok` or `not_modified`).
    pub(super) fn record_success(&self, outcome: &'static str) {
        self.pending.store(false, Ordering::Relaxed);
        *self.failures() = FailureState {
            last_fetch: Some(LastFetch {
                outcome,
                at: SystemTime::now(),
            }),
            ..FailureState::default()
        };
    }

    /// Records a failure and returns when the next attempt is allowed.
    pub(super) fn record_failure(&self, error: &FetchError, now: Instant) -> Duration {
        let mut state = self.failures();
        state.last_fetch = Some(LastFetch {
            outcome: error.outcome_label(),
            at: SystemTime::now(),
        });
        state.consecutive = state.consecutive.saturating_add(1);
        let delay = self.rules.backoff.delay(state.consecutive);
        state.last_error = Some(Arc::new(error.clone()));
        state.retry_at = Some(now + delay);
        delay
    }

    /// The upstream URLs, in the order they are tried.
    pub fn upstream_urls(&self) -> &UpstreamUrls {
        &self.urls
    }

    /// The URLs a fetch tries now: the configured ones, or for a key set
    /// that follows its metadata, the `jwks_uri` found there (none until
    /// it is known).
    pub fn fetch_urls(&self) -> Arc<[Arc<str>]> {
        match self.key_set.as_deref() {
            Some(ks) if ks.follows().is_some() => ks.location().unwrap_or_else(|| Arc::from([])),
            _ => self.urls.to_list(),
        }
    }

    /// The issuer the document must declare.
    pub fn issuer(&self) -> &ExpectedIssuer {
        &self.issuer
    }

    /// The last fetch error, while the upstream is failing (shared: no
    /// allocation per call).
    pub fn last_error(&self) -> Option<Arc<FetchError>> {
        self.failures().last_error.clone()
    }

    /// Consecutive failed fetches (0 once one succeeds).
    pub fn consecutive_failures(&self) -> u32 {
        self.failures().consecutive
    }

    /// The last completed fetch, if any.
    pub fn last_fetch(&self) -> Option<LastFetch> {
        self.failures().last_fetch
    }

    /// When a retry is due, while failing.
    pub fn retry_at(&self) -> Option<Instant> {
        self.failures().retry_at
    }

    /// The delay before the first retry.
    pub fn backoff_min(&self) -> Duration {
        self.rules.backoff.min
    }

    /// While in back-off: the last error and the time left until a retry.
    pub fn backing_off(&self, now: Instant) -> Option<(Arc<FetchError>, Duration)> {
        let state = self.failures();
        match (&state.last_error, state.retry_at) {
            (Some(e), Some(at)) if at > now => Some((e.clone(), at - now)),
            _ => None,
        }
    }

    /// Claims the right to run the one background refresh of this slot;
    /// `false` when one is already running.
    pub(super) fn start_refresh(&self) -> bool {
        !self.refreshing.swap(true, Ordering::AcqRel)
    }

    /// Gives the right back.
    pub(super) fn end_refresh(&self) {
        self.refreshing.store(false, Ordering::Release);
    }

    /// Marks a document added by a reload: pending until it has been
    /// servable once.
    pub fn mark_pending(&self) {
        self.pending.store(true, Ordering::Relaxed);
    }

    /// Whether it is still pending; `servable` (now) ends that for good.
    pub fn pending(&self, servable: bool) -> bool {
        if servable {
            self.pending.store(false, Ordering::Relaxed);
            return false;
        }
        self.pending.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
impl DocumentSlot {
    /// A configured authorization-server slot for unit tests: one upstream
    /// URL, TTL 300 s, max-stale 1 h, upstream timeout 5 s, back-off 1–60 s.
    pub(crate) fn for_tests(
        metrics: &crate::metrics::Metrics,
        name: &str,
        issuer: &str,
        url: &str,
    ) -> Self {
        let config = crate::config::DocumentConfig {
            name: Arc::from(name),
            kind: crate::discovery::DocumentKind::AuthorizationServer,
            routes: Box::new([]),
            upstream_urls: UpstreamUrls::listed([url]),
            issuer: crate::document::ExpectedIssuer::new(issuer),
            ttl: Duration::from_secs(300),
            max_stale: Duration::from_secs(3600),
            key_set: None,
        };
        let rules = SlotRules::configured(
            &config,
            Duration::from_secs(5),
            Backoff {
                min: Duration::from_secs(1),
                max: Duration::from_secs(60),
            },
            crate::cache_rules::upstream_freshness::Settings::default(),
        );
        Self::configured(metrics.group("test", true), &config, Arc::new(rules))
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
