//! The gateway as a whole: the current [`Generation`] behind a lock-free
//! swap, and the two operations that change or drive it at run time —
//! reloading the `--config` file (SIGHUP) and an operator's refresh (the
//! admin listener's `POST /refresh`).
//!
//! Every request loads the current generation once and answers from it, so
//! a reload never fails a request: requests already running finish on the
//! generation they started with, the next ones see the new one. A reload
//! reads and checks the file exactly like start-up, on a blocking thread
//! (file read, TOML parse, document checks, the next generation's tables;
//! a changed document's cached copy is validated there too); a bad file is logged
//! (file, line, column, key) and changes nothing. Flags and environment
//! are fixed at start: only the file's documents change.

use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, Mutex};

use crate::cache::tenants::TenantRefresh;
use crate::config::ConfigFile;
use crate::generation::{Generation, ReloadReport};
use crate::refresher::Command;

/// The current generation and what reloads and refreshes need.
pub struct MetadataGateway {
    /// Shared with every worker's [`GenerationCache`].
    current: Arc<ArcSwap<Generation>>,
    config_file: Option<ConfigFile>,
    scheduler: Option<mpsc::UnboundedSender<Command>>,
    /// One reload at a time.
    reloading: Mutex<()>,
}

/// One worker's cached load of the current generation (arc-swap's
/// [`Cache`](arc_swap::Cache)): it holds its own reference to the
/// generation it last saw and only goes back to the shared swap when that
/// changed, so the request path does not write to a cache line that every
/// worker shares.
pub struct GenerationCache(arc_swap::Cache<Arc<ArcSwap<Generation>>, Arc<Generation>>);

impl GenerationCache {
    /// The current generation (the one this cache holds, unless a reload
    /// swapped in another since).
    pub fn load(&mut self) -> &Arc<Generation> {
        self.0.load()
    }
}

/// Why a reload changed nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReloadError {
    /// The gateway runs from flags: there is no file to read again.
    #[error("no --config file: nothing to reload (flags and environment are fixed at start)")]
    NoConfigFile,
    /// The file is unreadable or invalid; the old configuration keeps serving.
    #[error("{0}; the previous configuration keeps serving")]
    Invalid(String),
}

/// What an operator's refresh started.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RefreshAnswer {
    /// Configured documents queued for a fetch now.
    pub started: Vec<String>,
    /// Template documents and how many of their cached tenants were queued.
    pub tenants: Vec<(String, usize)>,
    /// Documents not refreshed, with the reason (back-off).
    pub skipped: Vec<(String, String)>,
}

impl MetadataGateway {
    /// The live handle of `first`; `scheduler` receives document changes
    /// and refresh requests (none in tests that drive the cache directly).
    pub fn new(
        first: Arc<Generation>,
        config_file: Option<ConfigFile>,
        scheduler: Option<mpsc::UnboundedSender<Command>>,
    ) -> Arc<Self> {
        Arc::new(Self {
            current: Arc::new(ArcSwap::new(first)),
            config_file,
            scheduler,
            reloading: Mutex::new(()),
        })
    }

    /// A handle that never changes (benchmarks, tests of the HTTP front).
    pub fn fixed(gateway: Arc<Generation>) -> Arc<Self> {
        Self::new(gateway, None, None)
    }

    /// The current generation.
    pub fn current(&self) -> Arc<Generation> {
        self.current.load_full()
    }

    /// A cached view of the current generation for one worker thread:
    /// loading it is a pointer comparison while no reload happened, with no
    /// reference count touched (see [`GenerationCache`]).
    pub fn generation_cache(&self) -> GenerationCache {
        GenerationCache(arc_swap::Cache::new(self.current.clone()))
    }

    /// Reads the config file again and, if it is good, swaps in the next
    /// generation; logs one line either way.
    pub async fn reload(&self) -> Result<ReloadReport, ReloadError> {
        let _one = self.reloading.lock().await;
        let Some(file) = &self.config_file else {
            tracing::warn!("SIGHUP: {}", ReloadError::NoConfigFile);
            return Err(ReloadError::NoConfigFile);
        };
        // Reading the file, parsing it, checking every document and
        // building the next generation's tables is work proportional to the
        // file (10,000 issuers take a while): on a blocking thread, never
        // on a runtime thread, which keeps serving, refreshing and
        // answering the admin listener meanwhile.
        let current = self.current();
        let prepared = {
            let (to_read, current) = (file.clone(), current.clone());
            tokio::task::spawn_blocking(move || {
                let documents = to_read.load()?;
                let state_dir_changed = documents.state_dir != current.documents.state_dir;
                Ok((current.next(documents), state_dir_changed))
            })
            .await
            .unwrap_or_else(|e| Err(format!("{}: the reload failed: {e}", file.path.display())))
        };
        let ((next, report), state_dir_changed) = match prepared {
            Ok(p) => p,
            Err(e) => {
                let e = ReloadError::Invalid(e);
                tracing::error!("config reload refused: {e}");
                current.metrics.record_reload(false);
                return Err(e);
            }
        };
        if state_dir_changed {
            tracing::warn!(
                file = %file.path.display(),
                "state_dir changed in the config file: it takes effect at the next restart"
            );
        }
        let generation = next.generation;
        // Changed documents and templates keep their cached copies (checked
        // under their new rules); added ones saved by an earlier run are
        // served at once.
        next.carry_over_from(&current).await;
        next.restore_saved().await;
        // Readiness counts the next generation's documents from the swap on.
        next.cache.track_readiness(&next.slots).await;
        self.current.store(next.clone());
        if let Some(s) = &self.scheduler {
            let _ = s.send(Command::Replace(next.slots.clone()));
        }
        current.retire(&next).await;
        next.metrics.record_reload(true);
        tracing::info!(generation, file = %file.path.display(), "config reloaded: {report}");
        Ok(report)
    }

    /// Queues a fetch now of every document, or of the one named
    /// `document` (a configured document's name or a template's, which
    /// refreshes its cached tenants); `None` when no document has that
    /// name. A document in back-off is skipped (a refresh cannot be used to
    /// hammer a failing upstream), and every fetch goes through the
    /// scheduler's bound and the per-host bound like any refresh.
    pub fn refresh(&self, document: Option<&str>) -> Option<RefreshAnswer> {
        let gw = self.current();
        let now = std::time::Instant::now();
        let mut answer = RefreshAnswer::default();
        let mut ids = Vec::new();
        let mut found = document.is_none();
        for slot in &gw.slots {
            if document.is_some_and(|d| d != &*slot.name) {
                continue;
            }
            found = true;
            // `--no-cache`: no scheduler, nothing stored; every request
            // already fetches.
            if self.scheduler.is_none() {
                answer.skipped.push((
                    slot.name.to_string(),
                    "nothing is cached (--no-cache): every request fetches".to_string(),
                ));
                continue;
            }
            match slot.backing_off(now) {
                Some((error, left)) => answer.skipped.push((
                    slot.name.to_string(),
                    format!(
                        "backing off for {}s after {} failed fetches ({error})",
                        left.as_secs().max(1),
                        slot.consecutive_failures()
                    ),
                )),
                None => {
                    ids.push(slot.id);
                    answer.started.push(slot.name.to_string());
                }
            }
        }
        for t in &gw.templates {
            if document.is_some_and(|d| d != &*t.name) {
                continue;
            }
            found = true;
            answer.tenants.push((t.name.to_string(), t.refresh_all()));
        }
        for doc in &gw.local {
            if document.is_some_and(|d| d != doc.document.name) {
                continue;
            }
            found = true;
            if document.is_some() {
                answer.skipped.push((
                    doc.document.name.clone(),
                    "generated from configuration: nothing to fetch".to_string(),
                ));
            }
        }
        if !found {
            return None;
        }
        if let Some(s) = &self.scheduler {
            let _ = s.send(Command::RefreshNow(ids));
        }
        Some(answer)
    }

    /// Fetches one tenant of the template named `document` now (see
    /// [`TemplateCache::refresh_tenant`]); `None` when no template has that
    /// name.
    pub async fn refresh_tenant(&self, document: &str, tenant: &str) -> Option<TenantRefresh> {
        let gw = self.current();
        let t = gw.templates.iter().find(|t| &*t.name == document)?;
        Some(t.refresh_tenant(tenant).await)
    }
}
