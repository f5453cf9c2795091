//! The assembled gateway, one *generation* at a time: configuration turned
//! into document slots (one per configured upstream document), template
//! caches (one per issuer template document), locally generated documents
//! (protected resource metadata), the route table and their metrics groups,
//! over the parts that live as long as the process: the upstream fetcher,
//! the cache of configured documents and the metrics registry.
//!
//! A configuration reload ([`Generation::next`]) builds the next generation
//! from the new documents, reusing what did not change: a document whose
//! issuer, upstream URLs, routes and rules are equal keeps its slot (and so
//! its cached copy, failure state and place in the refresh schedule); an
//! unchanged template keeps its cache of tenants. Removed documents lose
//! their cached copy and their metrics series. [`crate::metadata_gateway`] swaps the
//! generation in.
//!
//! Metrics groups are decided here (see [`crate::metrics`]): one per
//! configured document while there are at most
//! `--metrics-document-labels` of them, else one per document kind; one
//! per template document.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use actix_web::http::header::HeaderValue;

use crate::cache::disk_tier::{DiskTier, MAX_DISK_LOADS};
use crate::cache::slot::SlotRules;
use crate::cache::tenants::{Shared, TemplateCache};
use crate::cache::{Backoff, CacheMode, DocumentSlot, MetadataCache, RestoreReport, StateWriter};
use crate::cache_rules::freshness::whole_seconds;
use crate::config::{Config, DocumentConfig, Documents, TemplateConfig};
use crate::discovery::DocumentKind;
use crate::error::RunError;
use crate::metrics::{GroupMetrics, GroupState, Metrics, UNMATCHED_ROUTE};
use crate::protected_resource::ProtectedResourceConfig;
use crate::routes::RouteTable;
use crate::upstream::Fetcher;

/// A document generated from configuration and served from memory.
#[derive(Debug)]
pub struct LocalDocument {
    /// Its metrics group.
    pub group: Arc<GroupMetrics>,
    /// The document.
    pub document: ProtectedResourceConfig,
    /// `Cache-Control: public, max-age=<ttl>`, formatted once.
    pub cache_control: HeaderValue,
}

impl LocalDocument {
    /// `document` counted in `group`.
    pub fn new(group: Arc<GroupMetrics>, document: ProtectedResourceConfig) -> Self {
        let text = format!("public, max-age={}", whole_seconds(document.max_age));
        Self {
            group,
            cache_control: HeaderValue::from_str(&text)
                .unwrap_or(HeaderValue::from_static("public, max-age=0")),
            document,
        }
    }
}

/// What stays the same across generations.
#[derive(Clone)]
struct Lasting {
    cache: Arc<MetadataCache>,
    metrics: Arc<Metrics>,
    shared: Shared,
    metrics_document_labels: usize,
    ready_min_percent: u8,
}

/// One generation: everything a request handler or the refresh scheduler
/// needs.
pub struct Generation {
    /// The cache of configured documents (shared by all generations).
    pub cache: Arc<MetadataCache>,
    /// The configured upstream documents, indexed like `documents.documents`.
    pub slots: Vec<Arc<DocumentSlot>>,
    /// The issuer template caches, indexed like `documents.templates`.
    pub templates: Vec<Arc<TemplateCache>>,
    /// The locally generated documents.
    pub local: Vec<Arc<LocalDocument>>,
    /// Every served path.
    pub routes: RouteTable,
    /// The metrics registry (shared by all generations).
    pub metrics: Arc<Metrics>,
    /// The configuration this generation was built from.
    pub documents: Documents,
    /// 0 at start-up, +1 per reload.
    pub generation: u64,
    /// This generation's metrics groups.
    groups: Vec<Arc<GroupMetrics>>,
    /// When the document gauges were last computed (see
    /// [`Generation::update_document_gauges`]).
    gauges: Mutex<GaugeClock>,
    lasting: Lasting,
}

/// The document gauges are computed from every document at most this often.
pub const GAUGE_PERIOD: Duration = Duration::from_secs(1);

/// When the document gauges were last computed, and the receipt time of
/// each group's oldest servable document then (for its age gauge).
#[derive(Debug, Default)]
struct GaugeClock {
    at: Option<Instant>,
    oldest: Vec<Option<Instant>>,
}

/// What `/readyz` reports: see [`Generation::unready_documents`].
pub use crate::cache::Readiness;

/// What a reload changed, for its log line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// Documents (and template documents) new in this configuration.
    pub added: Vec<String>,
    /// Documents gone from it.
    pub removed: Vec<String>,
    /// Documents whose name stayed but whose issuer, upstream or rules changed.
    pub changed: Vec<String>,
    /// Documents kept as they were (cached copy, state and schedule kept).
    pub unchanged: usize,
    /// Protected resource documents now served.
    pub protected_resources: usize,
}

impl std::fmt::Display for ReloadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const SHOWN: usize = 5;
        let list = |f: &mut std::fmt::Formatter<'_>, what: &str, names: &[String]| {
            write!(f, "{} {what}", names.len())?;
            if !names.is_empty() {
                let shown: Vec<&str> = names.iter().take(SHOWN).map(String::as_str).collect();
                write!(f, " ({}", shown.join(", "))?;
                if names.len() > SHOWN {
                    write!(f, ", and {} more", names.len() - SHOWN)?;
                }
                write!(f, ")")?;
            }
            Ok(())
        };
        list(f, "added", &self.added)?;
        write!(f, ", ")?;
        list(f, "removed", &self.removed)?;
        write!(f, ", ")?;
        list(f, "changed", &self.changed)?;
        write!(
            f,
            ", {} unchanged, {} protected resources",
            self.unchanged, self.protected_resources
        )
    }
}

fn kind_group(kind: DocumentKind) -> String {
    format!("{}/*", kind.well_known())
}

/// Groups of one generation, by name, created on first use.
struct Groups<'m> {
    metrics: &'m Metrics,
    by_name: HashMap<String, Arc<GroupMetrics>>,
    order: Vec<Arc<GroupMetrics>>,
}

impl Groups<'_> {
    fn get(&mut self, name: String, fetched: bool) -> Arc<GroupMetrics> {
        if let Some(g) = self.by_name.get(&name) {
            return g.clone();
        }
        let g = self.metrics.group(&name, fetched);
        self.order.push(g.clone());
        self.by_name.insert(name, g.clone());
        g
    }
}

impl Generation {
    /// Builds the first generation and starts the fetcher thread (no
    /// request is made until the scheduler or a client asks).
    pub fn new(config: &Config) -> Result<Arc<Self>, RunError> {
        Self::with_documents(config, config.documents.clone())
    }

    /// [`Generation::new`] taking the documents by value (`run` moves them
    /// out of its `Config`, so 10,000 issuers are not held twice);
    /// `config.documents` is not read.
    pub fn with_documents(config: &Config, documents: Documents) -> Result<Arc<Self>, RunError> {
        let backoff = Backoff {
            min: config.upstream.backoff_min,
            max: config.upstream.backoff_max,
        };
        let metrics = Arc::new(Metrics::new().map_err(|e| RunError::Metrics(e.to_string()))?);
        let fetcher = Fetcher::start(&config.upstream)?;
        let mode = if config.no_cache {
            CacheMode::Bypass
        } else {
            CacheMode::Store
        };
        let state = match (&config.state_dir, mode) {
            (Some(dir), CacheMode::Store) => {
                StateWriter::open(dir, config.upstream.max_body_size, &metrics)
            }
            _ => None,
        };
        let lasting = Lasting {
            cache: Arc::new(MetadataCache::new(fetcher.clone(), mode, state.clone())),
            metrics,
            shared: Shared {
                fetcher,
                backoff,
                fetch_timeout: config.upstream.timeout,
                upstream: config.upstream.freshness,
                state,
                disk_loads: Arc::new(tokio::sync::Semaphore::new(MAX_DISK_LOADS)),
            },
            metrics_document_labels: config.metrics_document_labels,
            ready_min_percent: config.ready_min_percent,
        };
        let (gateway, _) = Self::assemble(lasting, documents, None);
        gateway.cache.start_readiness(&gateway.slots);
        Ok(Arc::new(gateway))
    }

    /// The next generation for `documents` (already checked), reusing
    /// whatever did not change. Nothing is dropped yet: requests may still
    /// be running on this generation until the swap; call
    /// [`Generation::retire`] after it.
    pub fn next(&self, documents: Documents) -> (Arc<Generation>, ReloadReport) {
        let (next, report) = Self::assemble(self.lasting.clone(), documents, Some(self));
        (Arc::new(next), report)
    }

    /// After `next` replaced this generation: drops the cached copies of
    /// documents `next` does not keep, and the metrics series of groups and
    /// routes it does not have.
    pub async fn retire(&self, next: &Generation) {
        let kept: HashSet<usize> = next.slots.iter().map(|s| s.id).collect();
        let names: HashSet<&str> = next.slots.iter().map(|s| &*s.name).collect();
        for slot in self.slots.iter().filter(|s| !kept.contains(&s.id)) {
            // A changed document keeps its name and overwrites its file.
            let removed = !names.contains(&*slot.name);
            // First: a fetch of it still running stores and saves nothing.
            slot.retirement.retire(removed);
            self.cache.invalidate(slot).await;
            if removed {
                self.cache.forget(&slot.name);
            }
        }
        let names: HashSet<&str> = next.templates.iter().map(|t| &*t.name).collect();
        for t in &self.templates {
            if !next.templates.iter().any(|n| Arc::ptr_eq(n, t)) {
                t.retire(!names.contains(&*t.name));
            }
        }
        let names: HashSet<&str> = next.groups.iter().map(|g| g.name()).collect();
        for g in self.groups.iter().filter(|g| !names.contains(g.name())) {
            self.metrics.retire_group(g.name());
        }
        let labels: HashSet<&str> = next.routes.labels().map(|l| &*l.name).collect();
        for label in self.routes.labels() {
            if !labels.contains(&*label.name) {
                label.retire();
            }
        }
        self.metrics.retire_routes(|route| {
            labels.contains(route)
                || matches!(route, "/metrics" | "/healthz" | "/readyz" | UNMATCHED_ROUTE)
        });
    }

    fn assemble(
        lasting: Lasting,
        mut documents: Documents,
        previous: Option<&Generation>,
    ) -> (Generation, ReloadReport) {
        // The config file's per-server proxies, before anything of this
        // generation is fetched.
        lasting
            .shared
            .fetcher
            .set_proxy_overrides(std::mem::take(&mut documents.proxies));
        // Parsing grew these by doubling; a generation lives long.
        documents.documents.shrink_to_fit();
        documents.templates.shrink_to_fit();
        documents.protected_resources.shrink_to_fit();
        let docs = &documents;
        let per_document = docs.documents.len() + docs.protected_resources.len()
            <= lasting.metrics_document_labels;
        if !per_document && previous.is_none() {
            tracing::info!(
                documents = docs.documents.len() + docs.protected_resources.len(),
                limit = lasting.metrics_document_labels,
                "more configured documents than --metrics-document-labels: metrics are labelled per document kind"
            );
        }
        let mut report = ReloadReport {
            protected_resources: docs.protected_resources.len(),
            ..ReloadReport::default()
        };
        let mut groups = Groups {
            metrics: &lasting.metrics,
            by_name: HashMap::new(),
            order: Vec::new(),
        };

        // Slots and template caches of the previous generation, by config.
        let mut old_slots: HashMap<&DocumentConfig, Arc<DocumentSlot>> = HashMap::new();
        let mut old_templates: HashMap<&TemplateConfig, Arc<TemplateCache>> = HashMap::new();
        let mut old_names: HashSet<&str> = HashSet::new();
        if let Some(p) = previous {
            old_slots.extend(p.documents.documents.iter().zip(p.slots.iter().cloned()));
            old_templates.extend(
                p.documents
                    .templates
                    .iter()
                    .zip(p.templates.iter().cloned()),
            );
            old_names.extend(p.documents.documents.iter().map(|d| &*d.name));
            old_names.extend(p.documents.templates.iter().map(|t| t.name.as_str()));
        }
        let mut new_names: HashSet<String> = HashSet::new();
        let mut note = |report: &mut ReloadReport, name: &str, reused: bool| {
            new_names.insert(name.to_string());
            if previous.is_none() {
                return;
            }
            if reused {
                report.unchanged += 1;
            } else if old_names.contains(name) {
                report.changed.push(name.to_string());
            } else {
                report.added.push(name.to_string());
            }
        };

        // One copy of each distinct set of rules, whatever the number of
        // documents configured alike.
        let mut rules = HashMap::new();
        let slots: Vec<_> = docs
            .documents
            .iter()
            .map(|doc| {
                let group = groups.get(
                    if per_document {
                        doc.name.to_string()
                    } else {
                        kind_group(doc.kind)
                    },
                    true,
                );
                let reused = old_slots.remove(doc);
                note(&mut report, &doc.name, reused.is_some());
                match reused {
                    Some(slot) => {
                        slot.set_metrics(group);
                        slot
                    }
                    None => {
                        let slot = DocumentSlot::configured(
                            group,
                            doc,
                            SlotRules::configured(
                                doc,
                                lasting.shared.fetch_timeout,
                                lasting.shared.backoff,
                                lasting.shared.upstream,
                            )
                            .shared(&mut rules),
                        );
                        if previous.is_some() {
                            slot.mark_pending();
                        }
                        Arc::new(slot)
                    }
                }
            })
            .collect();
        // A key set that follows its metadata reads it through this
        // generation's slot of that document (a kept key set's metadata
        // slot may have been replaced).
        for slot in &slots {
            if let Some(ks) = slot.key_set.as_deref() {
                if let Some(follows) = ks.follows() {
                    let parent = slots.iter().find(|s| s.name == follows.document).cloned();
                    ks.parent.store(parent);
                }
            }
        }
        let templates: Vec<_> = docs
            .templates
            .iter()
            .map(|t| {
                let reused = old_templates.remove(t);
                note(&mut report, &t.name, reused.is_some());
                reused.unwrap_or_else(|| {
                    // A changed template keeps its predecessor's disk tier
                    // (the same files), under its new bound.
                    let inherited = previous
                        .and_then(|p| p.templates.iter().find(|o| o.name.as_ref() == t.name))
                        .and_then(|o| o.disk().cloned());
                    let disk = match (inherited, &lasting.shared.state) {
                        (Some(disk), _) => {
                            disk.set_bound(t.max_tenants_on_disk);
                            Some(disk)
                        }
                        (None, Some(state)) => Some(Arc::new(DiskTier::new(
                            Arc::from(t.name.as_str()),
                            state.clone(),
                            t.max_tenants_on_disk,
                            lasting.shared.disk_loads.clone(),
                            lasting.metrics.disk_tier(&t.name),
                        ))),
                        (None, None) => None,
                    };
                    Arc::new(TemplateCache::new(
                        t.clone(),
                        groups.get(t.name.clone(), true),
                        lasting.shared.clone(),
                        disk,
                    ))
                })
            })
            .collect();
        // A key-set template that follows its metadata reads it through
        // this generation's cache of that template.
        for t in &templates {
            if let Some(follows) = t.config.key_set.as_ref().and_then(|k| k.follows.as_ref()) {
                let parent = templates
                    .iter()
                    .find(|p| *p.name == *follows.document)
                    .cloned();
                t.parent.store(parent);
            }
        }
        // A kept template keeps its group (named after it).
        for t in &templates {
            groups
                .by_name
                .entry(t.group.name().to_string())
                .or_insert_with(|| {
                    groups.order.push(t.group.clone());
                    t.group.clone()
                });
        }
        let local: Vec<_> = docs
            .protected_resources
            .iter()
            .map(|doc| {
                let group = groups.get(
                    if per_document {
                        doc.name.clone()
                    } else {
                        kind_group(DocumentKind::ProtectedResource)
                    },
                    false,
                );
                Arc::new(LocalDocument::new(group, doc.clone()))
            })
            .collect();
        report.removed = old_names
            .iter()
            .filter(|n| !new_names.contains(**n))
            .map(|n| n.to_string())
            .collect();
        // Protected resources (served from memory, nothing to keep): named
        // in the report like documents.
        if let Some(p) = previous {
            let same = |a: &ProtectedResourceConfig, b: &ProtectedResourceConfig| {
                a.routes == b.routes && a.body == b.body && a.max_age == b.max_age
            };
            let old: HashMap<&str, &ProtectedResourceConfig> = p
                .documents
                .protected_resources
                .iter()
                .map(|d| (d.name.as_str(), d))
                .collect();
            for d in &docs.protected_resources {
                match old.get(d.name.as_str()) {
                    Some(o) if same(o, d) => {}
                    Some(_) => report.changed.push(d.name.clone()),
                    None => report.added.push(d.name.clone()),
                }
            }
            let new: HashSet<&str> = docs
                .protected_resources
                .iter()
                .map(|d| d.name.as_str())
                .collect();
            report.removed.extend(
                old.keys()
                    .filter(|n| !new.contains(**n))
                    .map(|n| n.to_string()),
            );
        }
        report.removed.sort();
        let gateway = Generation {
            cache: lasting.cache.clone(),
            metrics: lasting.metrics.clone(),
            routes: RouteTable::build(docs, per_document),
            generation: previous.map_or(0, |p| p.generation + 1),
            groups: groups.order,
            gauges: Mutex::default(),
            slots,
            templates,
            local,
            documents,
            lasting,
        };
        (gateway, report)
    }

    /// Serves what the state directory saved for this generation's
    /// documents that have nothing stored (all of them at start-up, the
    /// added and changed ones after a reload); logs a summary.
    pub async fn restore_saved(&self) -> RestoreReport {
        let mut report = self.cache.restore(&self.slots).await;
        let tenants = self.restore_tenants().await;
        report.restored += tenants.restored;
        report.ignored += tenants.ignored;
        if report.restored > 0 || report.ignored > 0 {
            tracing::info!(
                restored = report.restored,
                ignored = report.ignored,
                "documents restored from the state dir (served until a fetch replaces them)"
            );
        }
        report
    }

    /// After a reload: the documents and templates `previous` had under the
    /// same names but configured differently hand their cached copies over
    /// (see [`MetadataCache::carry_over`], [`TemplateCache::restore`]).
    pub async fn carry_over_from(&self, previous: &Generation) {
        let documents = self.cache.carry_over(&previous.slots, &self.slots).await;
        let mut tenants = 0;
        for t in &self.templates {
            let Some(before) = previous.templates.iter().find(|o| o.name == t.name) else {
                continue;
            };
            if Arc::ptr_eq(before, t) {
                continue;
            }
            tenants += t.restore(before.saved_copies().await).await.restored;
        }
        if documents > 0 || tenants > 0 {
            tracing::info!(
                documents,
                tenants,
                "reload: changed documents keep their cached copies until a fetch replaces them"
            );
        }
    }

    /// Removes the state files of documents and templates this
    /// configuration does not have (at start-up; see
    /// [`StateWriter::remove_orphans`]).
    pub async fn remove_orphaned_state(&self) {
        let Some(state) = &self.lasting.shared.state else {
            return;
        };
        let configured = self.slots.iter().map(|s| s.state_key()).collect();
        let templates = self.templates.iter().map(|t| t.name.clone()).collect();
        state.remove_orphans(configured, templates).await;
    }

    /// The disk tiers of the templates with nothing cached (all of them at
    /// start-up, the added ones after a reload): tenant files of an
    /// earlier version (named by hash) are read once and renamed, then the
    /// directory is listed, not read, into each tier's index, and the
    /// newest `max_tenants` of each are restored into memory.
    async fn restore_tenants(&self) -> RestoreReport {
        let Some(state) = &self.lasting.shared.state else {
            return RestoreReport::default();
        };
        let mut empty = Vec::new();
        for t in &self.templates {
            if t.entry_count().await == 0 {
                empty.push(t);
            }
        }
        if empty.is_empty() {
            return RestoreReport::default();
        }
        let names: Vec<Arc<str>> = empty.iter().map(|t| t.name.clone()).collect();
        let configured = self.slots.iter().map(|s| s.state_key()).collect();
        let earlier = state.load_tenants(names.clone(), configured).await;
        let earlier: Vec<_> = earlier.into_iter().flatten().map(|(_, doc)| doc).collect();
        state.migrate_tenants(earlier).await;
        let listed = state.list_tenants(names).await;
        let mut report = RestoreReport::default();
        for (t, listed) in empty.into_iter().zip(listed) {
            let on_disk = t.rebuild_disk(listed);
            let r = t.restore_from_disk().await;
            if on_disk > 0 {
                tracing::info!(
                    document = &*t.name,
                    on_disk,
                    in_memory = r.restored,
                    "tenants in the state dir's disk tier"
                );
            }
            report.restored += r.restored;
            report.ignored += r.ignored;
        }
        report
    }

    /// True when a configured document, template or protected resource
    /// has this name.
    pub fn has_document(&self, name: &str) -> bool {
        let d = &self.documents;
        d.documents.iter().any(|x| &*x.name == name)
            || d.templates.iter().any(|x| x.name == name)
            || d.protected_resources.iter().any(|x| x.name == name)
    }

    /// Refreshes the document gauges (at scrape time). The counts come
    /// from a pass over every document and tenant, made at most once per
    /// [`GAUGE_PERIOD`]: scrapes in between reuse them (so a flood of
    /// scrapes costs a render each, not a pass over 10,000 documents
    /// each). The age gauge stays exact between passes: it is computed at
    /// each scrape from the receipt time of each group's oldest document.
    /// Counters are never cached.
    pub async fn update_document_gauges(&self) {
        let now = Instant::now();
        {
            let mut clock = self.gauges.lock().unwrap_or_else(PoisonError::into_inner);
            if clock
                .at
                .is_some_and(|at| now.saturating_duration_since(at) < GAUGE_PERIOD)
            {
                for (group, oldest) in self.groups.iter().zip(&clock.oldest) {
                    group.set_age(
                        oldest.map_or(Duration::ZERO, |t| now.saturating_duration_since(t)),
                    );
                }
                return;
            }
            // Claimed: scrapes meanwhile reuse the last figures.
            clock.at = Some(now);
        }
        let index: HashMap<&str, usize> = self
            .groups
            .iter()
            .enumerate()
            .map(|(i, g)| (g.name(), i))
            .collect();
        let mut states = vec![GroupState::default(); self.groups.len()];
        let mut oldest: Vec<Option<Instant>> = vec![None; self.groups.len()];
        let mut add = |group: &GroupMetrics, cached: usize, stale: usize, age: Option<Duration>| {
            if let Some(i) = index.get(group.name()).copied() {
                if let Some(s) = states.get_mut(i) {
                    s.cached += cached;
                    s.stale += stale;
                    s.oldest = s.oldest.max(age.unwrap_or_default());
                }
                if let (Some(o), Some(age)) = (oldest.get_mut(i), age) {
                    let received = now.checked_sub(age).unwrap_or(now);
                    *o = Some(o.map_or(received, |t| t.min(received)));
                }
            }
        };
        for slot in &self.slots {
            if let Some((stored, age)) = self.cache.servable(slot).await {
                let stale = usize::from(!matches!(
                    stored.rules().classify(age),
                    crate::cache_rules::freshness::FreshnessState::Fresh { .. }
                ));
                add(&slot.metrics(), 1, stale, Some(age));
            }
        }
        for t in &self.templates {
            let (cached, stale, age) = t.census();
            add(&t.group, cached, stale, (cached > 0).then_some(age));
        }
        for doc in &self.local {
            add(&doc.group, 1, 0, None);
        }
        for (group, state) in self.groups.iter().zip(states) {
            group.set_state(state);
        }
        let mut clock = self.gauges.lock().unwrap_or_else(PoisonError::into_inner);
        clock.oldest = oldest;
    }

    /// Whether `r.unready` of the configured documents (none servable) is
    /// within `--ready-min-percent`: ready while at least that share of
    /// them is servable, pending ones left out of both counts. With no
    /// configured document, ready.
    pub fn ready_with(&self, r: &Readiness) -> bool {
        let total = r.total;
        let servable = total - r.unready.min(total);
        // servable / total >= percent / 100, in integers.
        servable * 100 >= total * usize::from(self.lasting.ready_min_percent)
    }

    /// Documents with nothing servable, with the reason: the count and the
    /// first few (a readiness answer stays small with 10,000 documents).
    /// Without a cache (`--no-cache`) a document is servable unless its
    /// last fetch failed. Template tenants do not count: they are fetched
    /// on demand. Nor do documents a reload added that have not been
    /// servable yet (`pending`): the same file reaches every replica, and
    /// one unreachable new issuer must not take every replica, and every
    /// document they serve, out of the load balancer. Their state shows in
    /// `GET /documents` and the fetch metrics.
    ///
    /// O(`show`), not O(documents): the counts are kept as documents are
    /// stored, dropped and reach their deadlines
    /// ([`crate::cache::readiness`]), for the documents of the current
    /// generation ([`crate::metadata_gateway::MetadataGateway::reload`]
    /// switches them at the swap).
    pub fn unready_documents(&self, show: usize) -> Readiness {
        self.cache.readiness(show)
    }
}
