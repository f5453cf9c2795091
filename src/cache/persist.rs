//! The state directory (`--state-dir`) seen from the cache: every
//! validated configured document is saved off the serving path, and at
//! start-up (or when a reload adds a document) what was saved is read back,
//! checked and validated again exactly like a fetched document, so a
//! restart during an upstream outage still serves the last good bytes.
//!
//! - Saves run on one thread of their own, in order, so a slow or full disk
//!   never delays a request or a fetch; a backlog of saves of one document
//!   is written once (the newest). A failing directory is a warning, once,
//!   until it works again: serving from memory goes on.
//! - A saved document is served only if its file is intact
//!   ([`crate::state_store`]), it belongs to the same document, issuer and
//!   one of its upstream URLs, its bytes pass RFC 8414 validation for that
//!   issuer, and it is not older than its freshness plus `max_stale`.
//!   Anything else is logged (`state file ignored`) and never served.
//! - Template tenants are saved too, under `TEMPLATE@TENANT` (a template's
//!   name contains `{tenant}`, so no configured document has such a key).
//!   At start-up (or when a reload adds a template) the newest
//!   `max_tenants` of them are restored the same way; a tenant moka evicts
//!   or expires, or that the upstream now answers 404/410, has its file
//!   removed, so the directory holds at most `max_tenants` per template.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::time::{Duration, SystemTime};

use prometheus::IntCounterVec;

use crate::document::ValidatedDocument;
use crate::metrics::Metrics;
use crate::state_store::{file_name_for, SavedDocument, StateDir};
use crate::upstream_freshness::{secs_u32, Source, Timing, UpstreamHeaders};

use super::slot::DocumentSlot;
use super::StoredDocument;

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
    dir: Arc<StateDir>,
    jobs: mpsc::Sender<Job>,
    max_body: usize,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.key())
    }
}

/// What reading the state directory back gave.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RestoreReport {
    /// Documents now served from their saved copy.
    pub restored: usize,
    /// Saved copies not used (logged one by one).
    pub ignored: usize,
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

    /// Reads the saved tenants of the templates named `templates`, one list
    /// of `(tenant, saved copy)` per template, in the order given. Runs on a
    /// blocking thread and reads the whole directory once. A file that
    /// cannot be read is logged as ignored, unless it is the file of one of
    /// the `configured` keys (the configured documents' restore reports
    /// those).
    pub async fn load_tenants(
        &self,
        templates: Vec<Arc<str>>,
        configured: Vec<String>,
    ) -> Vec<Vec<(String, SavedDocument)>> {
        let dir = self.dir.clone();
        let max_body = self.max_body;
        let empty = templates.len();
        let loaded = tokio::task::spawn_blocking(move || {
            // The configured documents' files are theirs to read (and to
            // report).
            let theirs: HashSet<String> = configured.iter().map(|k| file_name_for(k)).collect();
            let (docs, problems) = dir.load_all_but(max_body, &theirs);
            for (path, problem) in problems {
                tracing::warn!(path = %path.display(), reason = %problem, "state file ignored");
            }
            let prefixes: Vec<String> = templates.iter().map(|t| format!("{t}@")).collect();
            let mut out: Vec<Vec<(String, SavedDocument)>> = vec![Vec::new(); templates.len()];
            for doc in docs {
                let found = prefixes.iter().enumerate().find_map(|(i, p)| {
                    doc.key.strip_prefix(p.as_str()).map(|t| (i, t.to_string()))
                });
                if let Some((i, tenant)) = found {
                    out[i].push((tenant, doc));
                }
            }
            out
        })
        .await;
        loaded.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "reading the state dir failed: starting without saved tenants");
            vec![Vec::new(); empty]
        })
    }

    /// Removes the files of documents this configuration does not have:
    /// neither one of the `configured` keys nor a tenant of one of the
    /// `templates` (a document or template removed from the configuration
    /// while the gateway was stopped; a reload removes them itself). Files
    /// that cannot be read are left in place (they are logged where they
    /// are read). Runs on a blocking thread; returns how many it removed.
    pub async fn remove_orphans(&self, configured: Vec<String>, templates: Vec<Arc<str>>) -> usize {
        let dir = self.dir.clone();
        let max_body = self.max_body;
        let orphans = tokio::task::spawn_blocking(move || {
            let theirs: HashSet<String> = configured.iter().map(|k| file_name_for(k)).collect();
            let prefixes: Vec<String> = templates.iter().map(|t| format!("{t}@")).collect();
            // Only the files no configured document claims are read.
            let (docs, _) = dir.load_all_but(max_body, &theirs);
            docs.into_iter()
                .map(|d| d.key)
                .filter(|k| !prefixes.iter().any(|p| k.starts_with(p.as_str())))
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        for key in &orphans {
            self.remove(key);
        }
        if !orphans.is_empty() {
            tracing::info!(
                state_dir = %self.path().display(),
                removed = orphans.len(),
                "removed the state files of documents no longer configured"
            );
        }
        orphans.len()
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

    /// Reads the saved copies of `slots` back; each usable one is returned
    /// with its slot, ready to be stored. Runs on a blocking thread.
    pub async fn load(
        &self,
        slots: Vec<Arc<DocumentSlot>>,
    ) -> (Vec<(Arc<DocumentSlot>, StoredDocument)>, RestoreReport) {
        let dir = self.dir.clone();
        let max_body = self.max_body;
        let loaded = tokio::task::spawn_blocking(move || load_all(&dir, slots, max_body)).await;
        loaded.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "reading the state dir failed: starting without saved documents");
            (Vec::new(), RestoreReport::default())
        })
    }
}

/// What is saved of `slot`'s stored document: the same record a restart
/// reads back, and a reload carries over (see [`restore`]).
pub(super) fn saved_copy(slot: &DocumentSlot, stored: &StoredDocument) -> SavedDocument {
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

fn load_all(
    dir: &StateDir,
    slots: Vec<Arc<DocumentSlot>>,
    max_body: usize,
) -> (Vec<(Arc<DocumentSlot>, StoredDocument)>, RestoreReport) {
    let now = SystemTime::now();
    let mut out = Vec::new();
    let mut report = RestoreReport::default();
    for slot in slots {
        let saved = match dir.load(&slot.state_key(), max_body) {
            Ok(Some(saved)) => saved,
            Ok(None) => continue,
            Err(problem) => {
                report.ignored += 1;
                tracing::warn!(document = &*slot.name, path = %file_of(dir, &slot.name).display(), reason = %problem, "state file ignored");
                continue;
            }
        };
        match restore(&slot, saved, now) {
            Ok(stored) => {
                report.restored += 1;
                out.push((slot, stored));
            }
            Err(reason) => {
                report.ignored += 1;
                tracing::warn!(document = &*slot.name, path = %file_of(dir, &slot.name).display(), %reason, "state file ignored");
            }
        }
    }
    (out, report)
}

fn file_of(dir: &StateDir, key: &str) -> PathBuf {
    dir.path_for(key)
}

/// How far in the future a saved fetch time may be and still count as
/// "just now" (a clock stepped back by NTP).
const CLOCK_SKEW: Duration = Duration::from_secs(60);

/// Checks a saved copy against `slot` exactly as a fetched one would be.
pub(super) fn restore(
    slot: &DocumentSlot,
    saved: SavedDocument,
    now: SystemTime,
) -> Result<StoredDocument, String> {
    if saved.issuer != slot.issuer().as_str() {
        return Err(format!(
            "saved for issuer {:?}, the document's issuer is now {:?}",
            saved.issuer,
            slot.issuer().as_str()
        ));
    }
    let Some(url) = slot
        .upstream_urls()
        .iter()
        .find(|u| ***u == *saved.upstream_url)
    else {
        return Err(format!(
            "fetched from {}, which is no longer one of the document's upstream URLs",
            saved.upstream_url
        ));
    };
    let document = ValidatedDocument::validate(saved.body, slot.issuer())
        .map_err(|e| format!("the saved document is not valid metadata: {e}"))?;
    let fresh_for = saved.lifetime.clamp(
        slot.policy().min_ttl.min(slot.policy().ttl),
        slot.policy().ttl,
    );
    let resident = match now.duration_since(saved.fetched_at) {
        Ok(resident) => resident,
        // A clock stepped back a little (NTP): taken as just received.
        Err(ahead) if ahead.duration() <= CLOCK_SKEW => Duration::ZERO,
        // Dated well in the future: this clock, or the one of the host
        // that saved it, is wrong, and its age is unknown. Never served as
        // fresh (nor advertised so to caches in front): stale at once,
        // refetched at once, and kept only for max-stale from now.
        Err(ahead) => {
            tracing::warn!(
                document = &*slot.name,
                ahead_s = ahead.duration().as_secs(),
                "state file dated in the future: served as stale until a fetch replaces it"
            );
            fresh_for
        }
    };
    let timing = Timing {
        upstream_age: saved.upstream_age,
        fresh_for,
        advertised_secs: secs_u32(saved.advertised.min(fresh_for)),
        stale_if_error_until_secs: saved.stale_if_error_until.map(secs_u32),
        source: Source::Saved,
    };
    let servable_for = timing.fresh_for.saturating_add(slot.freshness().max_stale);
    if resident >= servable_for {
        return Err(format!(
            "saved {}s ago, past its freshness ({}s) and max-stale ({}s)",
            resident.as_secs(),
            timing.fresh_for.as_secs(),
            slot.freshness().max_stale.as_secs()
        ));
    }
    let headers = UpstreamHeaders {
        cache_control: saved.cache_control,
        expires: saved.expires,
        etag: saved.etag,
        last_modified: saved.last_modified,
        ..UpstreamHeaders::default()
    };
    Ok(StoredDocument::restored(
        document,
        url.clone(),
        headers,
        saved.fetched_at,
        timing,
        slot,
        resident,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::slot::SlotRules;
    use crate::cache::Backoff;
    use crate::config::DocumentConfig;
    use crate::discovery::DocumentKind;
    use crate::document::ExpectedIssuer;
    use crate::freshness::FreshnessState;
    use crate::metrics::Metrics;
    use crate::upstream_freshness::Settings;
    use bytes::Bytes;

    const ISSUER: &str = "https://as.example.com";
    const URL: &str = "https://as.example.com/.well-known/oauth-authorization-server";

    fn slot() -> DocumentSlot {
        let config = DocumentConfig {
            name: Arc::from("oauth-authorization-server"),
            kind: DocumentKind::AuthorizationServer,
            routes: Box::new([]),
            upstream_urls: Arc::from(vec![Arc::from(URL)]),
            issuer: ExpectedIssuer::new(ISSUER),
            ttl: Duration::from_secs(300),
            max_stale: Duration::from_secs(3600),
        };
        let rules = SlotRules::configured(
            &config,
            Duration::from_secs(5),
            Backoff {
                min: Duration::from_secs(1),
                max: Duration::from_secs(60),
            },
            Settings::default(),
        );
        let metrics = Metrics::new().expect("metrics");
        DocumentSlot::configured(metrics.group("test", true), &config, Arc::new(rules))
    }

    fn saved(fetched_at: SystemTime) -> SavedDocument {
        SavedDocument {
            key: "oauth-authorization-server".into(),
            issuer: ISSUER.into(),
            upstream_url: URL.into(),
            fetched_at,
            upstream_age: Duration::ZERO,
            lifetime: Duration::from_secs(300),
            advertised: Duration::from_secs(300),
            stale_if_error_until: None,
            cache_control: None,
            expires: None,
            etag: None,
            last_modified: None,
            body: Bytes::from(format!(
                r#"{{"issuer":"{ISSUER}","authorization_endpoint":"{ISSUER}/a","token_endpoint":"{ISSUER}/t","response_types_supported":["code"]}}"#
            )),
        }
    }

    fn state_at_load(ahead: Duration) -> FreshnessState {
        let now = SystemTime::now();
        let stored = restore(&slot(), saved(now + ahead), now).expect("restored");
        stored.rules.classify(stored.resident())
    }

    #[test]
    fn a_fetch_time_slightly_ahead_counts_as_just_received() {
        assert!(matches!(
            state_at_load(Duration::from_secs(5)),
            FreshnessState::Fresh { .. }
        ));
    }

    #[test]
    fn a_fetch_time_far_ahead_is_served_stale_never_fresh() {
        for ahead in [120, 86_400, 10 * 365 * 86_400] {
            let state = state_at_load(Duration::from_secs(ahead));
            assert!(
                matches!(state, FreshnessState::Stale { .. }),
                "{ahead}s ahead: {state:?}"
            );
        }
    }
}
