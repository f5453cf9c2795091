//! The assembled gateway: configuration turned into document slots (one
//! per upstream document), locally generated documents (protected resource
//! metadata), the upstream fetcher, the cache and the metrics, shared by
//! every HTTP worker and the refreshers.

use std::sync::Arc;

use crate::cache::{Backoff, CacheMode, DocumentSlot, MetadataCache};
use crate::config::Config;
use crate::error::RunError;
use crate::metrics::{DocumentState, Metrics};
use crate::protected_resource::ProtectedResourceConfig;
use crate::upstream::Fetcher;

/// A document generated from configuration and served from memory.
#[derive(Debug)]
pub struct LocalDocument {
    /// Metrics index (after the slots).
    pub id: usize,
    /// The document.
    pub document: ProtectedResourceConfig,
}

/// Everything a request handler or refresher needs.
pub struct Gateway {
    /// The document cache.
    pub cache: Arc<MetadataCache>,
    /// The configured upstream documents, indexed by slot id.
    pub slots: Vec<Arc<DocumentSlot>>,
    /// The locally generated documents.
    pub local: Vec<Arc<LocalDocument>>,
    /// The metrics registry.
    pub metrics: Arc<Metrics>,
}

impl Gateway {
    /// Builds the gateway and starts its fetcher thread (no request is made
    /// until the refreshers or a client ask).
    pub fn new(config: &Config) -> Result<Arc<Self>, RunError> {
        let documents = &config.documents;
        let backoff = Backoff {
            min: config.upstream.backoff_min,
            max: config.upstream.backoff_max,
        };
        let slots: Vec<_> = documents
            .iter()
            .enumerate()
            .map(|(id, doc)| Arc::new(DocumentSlot::new(id, doc, config.upstream.timeout, backoff)))
            .collect();
        let local: Vec<_> = config
            .protected_resources
            .iter()
            .enumerate()
            .map(|(i, doc)| {
                Arc::new(LocalDocument {
                    id: slots.len() + i,
                    document: doc.clone(),
                })
            })
            .collect();
        let names: Vec<&str> = slots.iter().map(|s| &*s.name).collect();
        let local_names: Vec<&str> = local.iter().map(|d| d.document.name.as_str()).collect();
        let metrics = Arc::new(
            Metrics::with_local(&names, &local_names)
                .map_err(|e| RunError::Metrics(e.to_string()))?,
        );
        let fetcher = Fetcher::start(&config.upstream)?;
        let mode = if config.no_cache {
            CacheMode::Bypass
        } else {
            CacheMode::Store
        };
        let cache = Arc::new(MetadataCache::new(
            slots.len(),
            fetcher,
            metrics.clone(),
            mode,
        ));
        Ok(Arc::new(Self {
            cache,
            slots,
            local,
            metrics,
        }))
    }

    /// Refreshes the document gauges from the cache (at scrape time).
    pub async fn update_document_gauges(&self) {
        for slot in &self.slots {
            let state = self
                .cache
                .servable(slot)
                .await
                .map(|(_, age)| DocumentState {
                    age,
                    stale: age >= slot.freshness.ttl,
                });
            self.metrics.set_document_state(slot.id, state);
        }
    }

    /// Names of documents with nothing servable, with the reason. Without
    /// a cache (`--no-cache`) a document is servable unless its last fetch
    /// failed.
    pub async fn unready_documents(&self) -> Vec<String> {
        let mut missing = Vec::new();
        for slot in &self.slots {
            let servable = match self.cache.mode() {
                CacheMode::Store => self.cache.servable(slot).await.is_some(),
                CacheMode::Bypass => slot.last_error().is_none(),
            };
            if !servable {
                let reason = match slot.last_error() {
                    Some(e) => format!("{}: {e}", slot.name),
                    None => format!("{}: not fetched yet", slot.name),
                };
                missing.push(reason);
            }
        }
        missing
    }
}
