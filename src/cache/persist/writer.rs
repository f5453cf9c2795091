//! The state writer: saves and removals of state files on one thread of
//! its own, in order, so a slow or full disk never delays a request or a
//! fetch; a backlog of saves of one document is written once (the newest).
//! A failing directory is a warning, once, until it works again: serving
//! from memory goes on.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use prometheus::IntCounterVec;

use crate::cache::slot::DocumentSlot;
use crate::cache::StoredDocument;
use crate::metrics::Metrics;

use super::store::{SavedDocument, StateDir};

enum Job {
    Save(Box<SavedDocument>),
    Remove(String),
    /// Answered once every job queued before it is done (shutdown).
    Flush(mpsc::Sender<()>),
}

impl Job {
    fn key(&self) -> &str {
        match self {
            Self::Save(d) => &d.key,
            Self::Remove(k) => k,
            Self::Flush(_) => "",
        }
    }
}

/// The handle the cache saves through (cheap to share; the writer thread
/// ends when the last handle is dropped).
#[derive(Debug, Clone)]
pub struct StateWriter {
    pub(super) dir: Arc<StateDir>,
    jobs: mpsc::Sender<Job>,
    pub(super) max_body: usize,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.key())
    }
}

impl StateWriter {
    /// Opens `path` (creating it) and starts the writer thread. A
    /// directory that cannot be used is logged and `None` is returned:
    /// the gateway serves from memory only. `max_body` bounds what is read
    /// back (`--max-body-size`).
    pub fn open(path: &Path, max_body: usize, metrics: &Metrics) -> Option<Self> {
        let dir = match StateDir::open(path) {
            Ok(d) => Arc::new(d),
            Err(e) => {
                tracing::warn!(state_dir = %path.display(), error = %e, "state dir unusable: documents are kept in memory only and will not survive a restart");
                return None;
            }
        };
        if let Err(e) = dir.probe_writable() {
            // Still read what is there: it may be a read-only copy.
            tracing::warn!(state_dir = %path.display(), error = %e, "state dir not writable: saved documents can be read but new ones will not be saved");
        }
        let (jobs, rx) = mpsc::channel();
        let writer_dir = dir.clone();
        let writes = metrics.state_writes();
        let spawned = std::thread::Builder::new()
            .name("state-writer".into())
            .spawn(move || write_loop(&writer_dir, &rx, &writes));
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the state writer thread: documents are kept in memory only");
            return None;
        }
        tracing::info!(state_dir = %path.display(), "saving validated documents to the state dir");
        Some(Self {
            dir,
            jobs,
            max_body,
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Queues a save of `slot`'s new document.
    pub fn save(&self, slot: &DocumentSlot, stored: &StoredDocument) {
        let saved = saved_copy(slot, stored);
        // The thread only stops when every handle is gone.
        let _ = self.jobs.send(Job::Save(Box::new(saved)));
    }

    /// Queues the removal of the saved copy under `key` (a document
    /// removed from the configuration, a tenant evicted or gone).
    pub fn remove(&self, key: &str) {
        let _ = self.jobs.send(Job::Remove(key.to_string()));
    }

    /// Waits (at most `limit`) until every save queued so far is on disk:
    /// called at shutdown, so the last refreshes are not lost.
    pub async fn flush(&self, limit: Duration) {
        let (done, wait) = mpsc::channel();
        if self.jobs.send(Job::Flush(done)).is_err() {
            return;
        }
        let waited = tokio::task::spawn_blocking(move || wait.recv_timeout(limit)).await;
        if !matches!(waited, Ok(Ok(()))) {
            tracing::warn!(
                limit_ms = limit.as_millis() as u64,
                "state dir: saves still pending at shutdown were not waited for"
            );
        }
    }
}

/// What is saved of `slot`'s stored document: the same record a restart
/// reads back, and a reload carries over (see [`super::restore::restore`]).
pub(crate) fn saved_copy(slot: &DocumentSlot, stored: &StoredDocument) -> SavedDocument {
    SavedDocument {
        key: slot.state_key(),
        issuer: slot.issuer().as_str().to_string(),
        upstream_url: stored.url.to_string(),
        fetched_at: stored.received,
        upstream_age: stored.timing.upstream_age,
        lifetime: stored.timing.fresh_for,
        advertised: stored.timing.advertised(),
        stale_if_error_until: stored
            .timing
            .stale_if_error_until_secs
            .map(|s| Duration::from_secs(s.into())),
        cache_control: stored.headers.cache_control.clone(),
        expires: stored.headers.expires.clone(),
        etag: stored.headers.etag.clone(),
        last_modified: stored.headers.last_modified.clone(),
        body: stored.document.body.clone(),
    }
}

fn write_loop(dir: &StateDir, rx: &mpsc::Receiver<Job>, writes: &IntCounterVec) {
    let mut failing = false;
    while let Ok(first) = rx.recv() {
        // Coalesce the backlog: the newest job per document wins.
        let mut order: Vec<String> = Vec::new();
        let mut latest: HashMap<String, Job> = HashMap::new();
        let mut flushes = Vec::new();
        for job in std::iter::once(first).chain(rx.try_iter()) {
            if let Job::Flush(done) = job {
                flushes.push(done);
                continue;
            }
            let key = job.key().to_string();
            if latest.insert(key.clone(), job).is_none() {
                order.push(key);
            }
        }
        for key in order {
            let Some(job) = latest.remove(&key) else {
                continue;
            };
            let (operation, result) = match &job {
                Job::Save(d) => ("save", dir.save(d)),
                Job::Remove(k) => ("remove", dir.remove(k)),
                Job::Flush(_) => continue,
            };
            let outcome = if result.is_ok() { "ok" } else { "error" };
            writes.with_label_values(&[operation, outcome]).inc();
            match result {
                Ok(()) if failing => {
                    failing = false;
                    tracing::info!(state_dir = %dir.path().display(), "state dir writable again");
                }
                Ok(()) => {}
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(state_dir = %dir.path().display(), document = %key, error = %e, "cannot save to the state dir (serving from memory continues; further failures at debug level until a save succeeds)");
                }
                Err(e) => {
                    tracing::debug!(document = %key, error = %e, "cannot save to the state dir");
                }
            }
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
}
