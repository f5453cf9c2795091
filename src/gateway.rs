//! The assembled gateway: configuration turned into document slots (one
//! per configured upstream document), template caches (one per issuer
//! template document), locally generated documents (protected resource
//! metadata), the route table, the upstream fetcher, the caches and the
//! metrics, shared by every HTTP worker and the refresh scheduler.
//!
//! Metrics groups are decided here, once (see [`crate::metrics`]): one per
//! configured document while there are at most
//! `--metrics-document-labels` of them, else one per document kind; one
//! per template document.

use std::collections::HashMap;
use std::sync::Arc;

use crate::cache::tenants::{Shared, TemplateCache};
use crate::cache::{Backoff, CacheMode, DocumentSlot, MetadataCache};
use crate::config::Config;
use crate::discovery::DocumentKind;
use crate::error::RunError;
use crate::metrics::{GroupState, Metrics};
use crate::protected_resource::ProtectedResourceConfig;
use crate::routes::RouteTable;
use crate::upstream::Fetcher;

/// A document generated from configuration and served from memory.
#[derive(Debug)]
pub struct LocalDocument {
    /// Metrics group index.
    pub group: usize,
    /// The document.
    pub document: ProtectedResourceConfig,
}

/// Everything a request handler or the refresh scheduler needs.
pub struct Gateway {
    /// The cache of configured documents.
    pub cache: Arc<MetadataCache>,
    /// The configured upstream documents, indexed like the configuration.
    pub slots: Vec<Arc<DocumentSlot>>,
    /// The issuer template caches, indexed like the configuration.
    pub templates: Vec<Arc<TemplateCache>>,
    /// The locally generated documents.
    pub local: Vec<Arc<LocalDocument>>,
    /// Every served path.
    pub routes: RouteTable,
    /// The metrics registry.
    pub metrics: Arc<Metrics>,
    /// Metrics group names, fetched groups first (index = group id).
    groups: Vec<String>,
}

/// Assigns group ids to names, first come first served.
#[derive(Default)]
struct Groups {
    names: Vec<String>,
    index: HashMap<String, usize>,
}

impl Groups {
    fn id(&mut self, name: String) -> usize {
        if let Some(&i) = self.index.get(&name) {
            return i;
        }
        let i = self.names.len();
        self.index.insert(name.clone(), i);
        self.names.push(name);
        i
    }
}

fn kind_group(kind: DocumentKind) -> String {
    format!("{}/*", kind.well_known())
}

impl Gateway {
    /// Builds the gateway and starts its fetcher thread (no request is made
    /// until the scheduler or a client asks).
    pub fn new(config: &Config) -> Result<Arc<Self>, RunError> {
        let docs = &config.documents;
        let backoff = Backoff {
            min: config.upstream.backoff_min,
            max: config.upstream.backoff_max,
        };
        let per_document =
            docs.documents.len() + docs.protected_resources.len() <= config.metrics_document_labels;
        if !per_document {
            tracing::info!(
                documents = docs.documents.len() + docs.protected_resources.len(),
                limit = config.metrics_document_labels,
                "more configured documents than --metrics-document-labels: metrics are labelled per document kind"
            );
        }
        let mut groups = Groups::default();
        let slots: Vec<_> = docs
            .documents
            .iter()
            .enumerate()
            .map(|(id, doc)| {
                let group = groups.id(if per_document {
                    doc.name.clone()
                } else {
                    kind_group(doc.kind)
                });
                Arc::new(DocumentSlot::configured(
                    id,
                    group,
                    doc,
                    config.upstream.timeout,
                    backoff,
                ))
            })
            .collect();
        let template_groups: Vec<usize> = docs
            .templates
            .iter()
            .map(|t| groups.id(t.name.clone()))
            .collect();
        let fetched_groups = groups.names.len();
        let local: Vec<_> = docs
            .protected_resources
            .iter()
            .map(|doc| {
                let group = groups.id(if per_document {
                    doc.name.clone()
                } else {
                    kind_group(DocumentKind::ProtectedResource)
                });
                Arc::new(LocalDocument {
                    group,
                    document: doc.clone(),
                })
            })
            .collect();
        let names: Vec<&str> = groups.names.iter().map(String::as_str).collect();
        let metrics = Arc::new(
            Metrics::with_local(&names[..fetched_groups], &names[fetched_groups..])
                .map_err(|e| RunError::Metrics(e.to_string()))?,
        );
        let fetcher = Fetcher::start(&config.upstream)?;
        let mode = if config.no_cache {
            CacheMode::Bypass
        } else {
            CacheMode::Store
        };
        let shared = Shared {
            fetcher: fetcher.clone(),
            metrics: metrics.clone(),
            backoff,
            fetch_timeout: config.upstream.timeout,
        };
        let templates = docs
            .templates
            .iter()
            .zip(template_groups)
            .map(|(t, group)| Arc::new(TemplateCache::new(t.clone(), group, shared.clone())))
            .collect();
        let cache = Arc::new(MetadataCache::new(
            slots.len(),
            fetcher,
            metrics.clone(),
            mode,
        ));
        Ok(Arc::new(Self {
            cache,
            slots,
            templates,
            local,
            routes: RouteTable::build(docs, per_document),
            metrics,
            groups: groups.names,
        }))
    }

    /// The metrics group names, by group id.
    pub fn group_names(&self) -> &[String] {
        &self.groups
    }

    /// Refreshes the document gauges from the caches (at scrape time).
    pub async fn update_document_gauges(&self) {
        let mut states = vec![GroupState::default(); self.groups.len()];
        for slot in &self.slots {
            if let Some((_, age)) = self.cache.servable(slot).await {
                if let Some(s) = states.get_mut(slot.group) {
                    s.cached += 1;
                    s.stale += usize::from(age >= slot.freshness.ttl);
                    s.oldest = s.oldest.max(age);
                }
            }
        }
        for t in &self.templates {
            let (cached, stale, oldest) = t.census();
            if let Some(s) = states.get_mut(t.group) {
                s.cached += cached;
                s.stale += stale;
                s.oldest = s.oldest.max(oldest);
            }
        }
        for doc in &self.local {
            if let Some(s) = states.get_mut(doc.group) {
                s.cached += 1;
            }
        }
        for (group, state) in states.into_iter().enumerate() {
            self.metrics.set_group_state(group, state);
        }
    }

    /// Documents with nothing servable, with the reason: the count and the
    /// first few (a readiness answer stays small with 10,000 documents).
    /// Without a cache (`--no-cache`) a document is servable unless its
    /// last fetch failed. Template tenants do not count: they are fetched
    /// on demand.
    pub async fn unready_documents(&self, show: usize) -> (usize, Vec<String>) {
        let mut count = 0;
        let mut shown = Vec::new();
        for slot in &self.slots {
            let servable = match self.cache.mode() {
                CacheMode::Store => self.cache.servable(slot).await.is_some(),
                CacheMode::Bypass => slot.last_error().is_none(),
            };
            if !servable {
                count += 1;
                if shown.len() < show {
                    shown.push(match slot.last_error() {
                        Some(e) => format!("{}: {e}", slot.name),
                        None => format!("{}: not fetched yet", slot.name),
                    });
                }
            }
        }
        (count, shown)
    }
}
