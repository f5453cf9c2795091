//! The state writer: saves and removals of state files on one thread of
//! its own, so a slow or full disk never delays a request or a fetch.
//!
//! The queue is bounded by the documents, not by the fetches: it holds at
//! most one pending operation per state key, merged at enqueue. A save or
//! removal of a key that already has one waiting replaces it (a removal
//! after a save wins, a save after a removal wins), so the last operation
//! asked for is the one written, and a disk that stops answering holds one
//! body per document however many fetches complete meanwhile. Saves that
//! were replaced are counted (`metadata_gateway_state_saves_merged_total`).
//! Keys are written in the order they were first queued.
//!
//! A failing directory is a warning, once, until it works again; a write
//! that takes longer than [`STALL_AFTER`] (a stuck disk or NFS mount) is a
//! warning, once, until it ends; `metadata_gateway_state_write_started_timestamp_seconds`
//! lets an alert see the same. Serving from memory goes on either way.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use crate::cache::slot::DocumentSlot;
use crate::cache::StoredDocument;
use crate::metrics::{Metrics, StateWriterMetrics};

use super::store::{SavedDocument, StateDir, StateError};

/// A write still running after this long is logged as a stuck disk.
pub const STALL_AFTER: Duration = Duration::from_secs(30);

/// What the writer thread does with the disk (the state directory; a fake
/// one in tests).
pub(super) trait Disk: Send + Sync + 'static {
    fn save(&self, doc: &SavedDocument) -> Result<(), StateError>;
    fn remove(&self, key: &str) -> Result<(), StateError>;
    fn path(&self) -> &Path;
}

impl Disk for StateDir {
    fn save(&self, doc: &SavedDocument) -> Result<(), StateError> {
        StateDir::save(self, doc)
    }
    fn remove(&self, key: &str) -> Result<(), StateError> {
        StateDir::remove(self, key)
    }
    fn path(&self) -> &Path {
        StateDir::path(self)
    }
}

/// The operation waiting for one key: only the last one asked for.
enum Operation {
    Save(Box<SavedDocument>),
    Remove,
}

struct Pending {
    operation: Operation,
    /// Sequence number of the oldest operation this one stands for (a
    /// flush waits for every operation queued before it).
    since: u64,
}

/// The queue, merged by key; shared by the handles and the thread.
#[derive(Default)]
struct Queue {
    pending: HashMap<String, Pending>,
    /// Each pending key once, in the order it was first queued.
    order: VecDeque<String>,
    /// Operations queued so far (the next one's sequence number).
    queued: u64,
    /// The write in progress: its oldest sequence number and start.
    busy: Option<(u64, Instant)>,
    /// The stuck write was logged (reset when it ends).
    stall_logged: bool,
    /// Every handle is gone: finish the queue and stop.
    closed: bool,
}

impl Queue {
    /// Queues `operation` for `key`, replacing what waits for it; true
    /// when a pending save was dropped (merged).
    fn push(&mut self, key: String, operation: Operation) -> bool {
        let seq = self.queued;
        self.queued += 1;
        match self.pending.entry(key) {
            Entry::Occupied(mut e) => {
                let merged = matches!(e.get().operation, Operation::Save(_));
                e.get_mut().operation = operation;
                merged
            }
            Entry::Vacant(e) => {
                self.order.push_back(e.key().clone());
                e.insert(Pending {
                    operation,
                    since: seq,
                });
                false
            }
        }
    }

    fn pop(&mut self) -> Option<(String, Pending)> {
        while let Some(key) = self.order.pop_front() {
            if let Some(p) = self.pending.remove(&key) {
                return Some((key, p));
            }
        }
        None
    }

    /// Whether every operation numbered below `seq` is on disk.
    fn done_before(&self, seq: u64) -> bool {
        self.busy.is_none_or(|(s, _)| s >= seq) && self.pending.values().all(|p| p.since >= seq)
    }
}

struct Shared {
    queue: Mutex<Queue>,
    /// Signalled when work is queued or the last handle goes.
    work: Condvar,
    /// Signalled when a write ends (flushes wait on it).
    progress: Condvar,
    metrics: StateWriterMetrics,
    /// A write running this long is logged as stuck ([`STALL_AFTER`]).
    stall_after: Duration,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A panic while holding the lock leaves a consistent queue (every
        // change is one statement), so a poisoned lock is used as is.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Dropped with the last [`StateWriter`] handle: the thread finishes what
/// is queued and ends.
struct Closer(Arc<Shared>);

impl Drop for Closer {
    fn drop(&mut self) {
        self.0.lock().closed = true;
        self.0.work.notify_all();
    }
}

/// The handle the cache saves through (cheap to share; the writer thread
/// ends when the last handle is dropped).
#[derive(Clone)]
pub struct StateWriter {
    pub(super) dir: Arc<StateDir>,
    shared: Arc<Shared>,
    _closer: Arc<Closer>,
    pub(super) max_body: usize,
}

impl std::fmt::Debug for StateWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateWriter")
            .field("dir", &self.dir.path())
            .finish_non_exhaustive()
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
        let writer = Self::start(
            dir.clone(),
            dir,
            max_body,
            metrics.state_writer(),
            STALL_AFTER,
        )?;
        tracing::info!(state_dir = %path.display(), "saving validated documents to the state dir");
        Some(writer)
    }

    fn start(
        dir: Arc<StateDir>,
        disk: Arc<dyn Disk>,
        max_body: usize,
        metrics: StateWriterMetrics,
        stall_after: Duration,
    ) -> Option<Self> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            work: Condvar::new(),
            progress: Condvar::new(),
            metrics,
            stall_after,
        });
        let thread_shared = shared.clone();
        // The thread logs where its creator logs (the global subscriber in
        // the binary, a test's own one in tests).
        let dispatch = tracing::dispatcher::get_default(Clone::clone);
        let spawned = std::thread::Builder::new()
            .name("state-writer".into())
            .spawn(move || {
                tracing::dispatcher::with_default(&dispatch, || write_loop(&*disk, &thread_shared));
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the state writer thread: documents are kept in memory only");
            return None;
        }
        Some(Self {
            dir,
            _closer: Arc::new(Closer(shared.clone())),
            shared,
            max_body,
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Queues a save of `slot`'s new document (replacing a save or
    /// removal of it still waiting).
    pub fn save(&self, slot: &DocumentSlot, stored: &StoredDocument) {
        let saved = saved_copy(slot, stored);
        self.push(saved.key.clone(), Operation::Save(Box::new(saved)));
    }

    /// Queues the removal of the saved copy under `key` (a document
    /// removed from the configuration, a tenant evicted or gone),
    /// replacing a save of it still waiting.
    pub fn remove(&self, key: &str) {
        self.push(key.to_string(), Operation::Remove);
    }

    fn push(&self, key: String, operation: Operation) {
        let m = &self.shared.metrics;
        let mut q = self.shared.lock();
        if q.push(key, operation) {
            m.merged_saves.inc();
        }
        m.pending
            .set(i64::try_from(q.pending.len()).unwrap_or(i64::MAX));
        if let Some((_, started)) = q.busy {
            let stuck = started.elapsed();
            if stuck >= self.shared.stall_after && !q.stall_logged {
                q.stall_logged = true;
                tracing::warn!(
                    state_dir = %self.dir.path().display(),
                    stuck_for_s = stuck.as_secs(),
                    pending = q.pending.len(),
                    "state dir: one write has not finished for {}s (stuck disk?); saves wait, one per document, serving from memory continues",
                    stuck.as_secs()
                );
            }
        }
        drop(q);
        self.shared.work.notify_one();
    }

    /// Waits (at most `limit`) until every save queued so far is on disk:
    /// called at shutdown, so the last refreshes are not lost.
    pub async fn flush(&self, limit: Duration) {
        let shared = self.shared.clone();
        let waited = tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + limit;
            let mut q = shared.lock();
            let upto = q.queued;
            while !q.done_before(upto) {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return false;
                }
                q = shared
                    .progress
                    .wait_timeout(q, left)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            true
        })
        .await;
        if !matches!(waited, Ok(true)) {
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
        cache_control: stored.headers.cache_control.as_deref().map(str::to_string),
        expires: stored.headers.expires.as_deref().map(str::to_string),
        etag: stored.headers.etag.as_deref().map(str::to_string),
        last_modified: stored.headers.last_modified.as_deref().map(str::to_string),
        body: stored.document.body.clone(),
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn write_loop(disk: &dyn Disk, shared: &Shared) {
    let m = &shared.metrics;
    let mut failing = false;
    loop {
        let mut q = shared.lock();
        let (key, pending) = loop {
            if let Some(next) = q.pop() {
                break next;
            }
            if q.closed {
                return;
            }
            q = shared.work.wait(q).unwrap_or_else(|e| e.into_inner());
        };
        let started = Instant::now();
        q.busy = Some((pending.since, started));
        m.pending
            .set(i64::try_from(q.pending.len()).unwrap_or(i64::MAX));
        drop(q);
        m.write_started.set(unix_now());

        let (operation, result) = match &pending.operation {
            Operation::Save(d) => ("save", disk.save(d)),
            Operation::Remove => ("remove", disk.remove(&key)),
        };

        m.write_started.set(0.0);
        let took = started.elapsed();
        let mut q = shared.lock();
        q.busy = None;
        let stall_logged = std::mem::take(&mut q.stall_logged);
        drop(q);
        shared.progress.notify_all();
        if took >= shared.stall_after {
            if stall_logged {
                tracing::info!(state_dir = %disk.path().display(), took_s = took.as_secs(), "state dir: the stuck write finished");
            } else {
                tracing::warn!(state_dir = %disk.path().display(), document = %key, took_s = took.as_secs(), "state dir: one write took {}s (slow or stuck disk)", took.as_secs());
            }
        }
        let outcome = if result.is_ok() { "ok" } else { "error" };
        m.writes.with_label_values(&[operation, outcome]).inc();
        match result {
            Ok(()) if failing => {
                failing = false;
                tracing::info!(state_dir = %disk.path().display(), "state dir writable again");
            }
            Ok(()) => {}
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(state_dir = %disk.path().display(), document = %key, error = %e, "cannot save to the state dir (serving from memory continues; further failures at debug level until a save succeeds)");
            }
            Err(e) => {
                tracing::debug!(document = %key, error = %e, "cannot save to the state dir");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// A disk that records what is written and, while held, blocks the
    /// writer inside its first write (a stuck disk).
    struct FakeDisk {
        path: std::path::PathBuf,
        written: Mutex<Vec<(String, Option<Vec<u8>>)>>,
        gate: Mutex<Option<mpsc::Receiver<()>>>,
        entered: Mutex<Option<mpsc::Sender<()>>>,
    }

    impl FakeDisk {
        fn record(&self, key: &str, body: Option<Vec<u8>>) {
            if let Some(tx) = self.entered.lock().unwrap().take() {
                let _ = tx.send(());
            }
            if let Some(rx) = self.gate.lock().unwrap().take() {
                let _ = rx.recv();
            }
            self.written.lock().unwrap().push((key.to_string(), body));
        }
    }

    impl Disk for FakeDisk {
        fn save(&self, doc: &SavedDocument) -> Result<(), StateError> {
            self.record(&doc.key, Some(doc.body.to_vec()));
            Ok(())
        }
        fn remove(&self, key: &str) -> Result<(), StateError> {
            self.record(key, None);
            Ok(())
        }
        fn path(&self) -> &Path {
            &self.path
        }
    }

    fn doc(key: &str, body: &str) -> SavedDocument {
        SavedDocument {
            key: key.into(),
            issuer: "https://as.example".into(),
            upstream_url: "https://as.example/.well-known/oauth-authorization-server".into(),
            fetched_at: SystemTime::now(),
            upstream_age: Duration::ZERO,
            lifetime: Duration::from_secs(60),
            advertised: Duration::from_secs(60),
            stale_if_error_until: None,
            cache_control: None,
            expires: None,
            etag: None,
            last_modified: None,
            body: bytes::Bytes::from(body.to_string()),
        }
    }

    /// A writer on a fake disk, blocked inside a write of `blocker` until
    /// the returned sender is used (or dropped).
    /// Lets a [`blocked_writer`] go on, and waits (up to 10 s) until it has
    /// written everything queued.
    fn release_and_flush(writer: &StateWriter, release: mpsc::Sender<()>) {
        release.send(()).unwrap();
        drop(release);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(writer.flush(Duration::from_secs(10)));
    }

    fn blocked_writer() -> (StateWriter, Arc<FakeDisk>, mpsc::Sender<()>, Metrics) {
        blocked_writer_stalling_after(STALL_AFTER)
    }

    fn blocked_writer_stalling_after(
        stall_after: Duration,
    ) -> (StateWriter, Arc<FakeDisk>, mpsc::Sender<()>, Metrics) {
        let dir = tempfile::tempdir().unwrap();
        let state = Arc::new(StateDir::open(dir.path()).unwrap());
        let (release, gate) = mpsc::channel();
        let (entered_tx, entered) = mpsc::channel();
        let disk = Arc::new(FakeDisk {
            path: dir.path().to_path_buf(),
            written: Mutex::new(Vec::new()),
            gate: Mutex::new(Some(gate)),
            entered: Mutex::new(Some(entered_tx)),
        });
        let metrics = Metrics::new().unwrap();
        let writer = StateWriter::start(
            state,
            disk.clone(),
            1 << 20,
            metrics.state_writer(),
            stall_after,
        )
        .unwrap();
        writer.push(
            "blocker".into(),
            Operation::Save(Box::new(doc("blocker", "b"))),
        );
        entered
            .recv_timeout(Duration::from_secs(10))
            .expect("the writer started the first write");
        (writer, disk, release, metrics)
    }

    fn written(disk: &FakeDisk) -> Vec<(String, Option<String>)> {
        disk.written
            .lock()
            .unwrap()
            .iter()
            .map(|(k, b)| {
                (
                    k.clone(),
                    b.as_ref().map(|b| String::from_utf8_lossy(b).into_owned()),
                )
            })
            .collect()
    }

    #[test]
    fn saves_of_one_key_while_the_disk_is_stuck_keep_one_pending_job() {
        let (writer, disk, release, _metrics) = blocked_writer();
        const N: usize = 10_000;
        for i in 0..N {
            writer.push(
                "issuer-a".into(),
                Operation::Save(Box::new(doc("issuer-a", &format!("v{i}")))),
            );
        }
        {
            let q = writer.shared.lock();
            assert_eq!(q.pending.len(), 1, "one pending job for one key");
            assert_eq!(q.order.len(), 1);
        }
        assert_eq!(writer.shared.metrics.merged_saves.get(), (N - 1) as u64);
        assert_eq!(writer.shared.metrics.pending.get(), 1);
        assert!(
            writer.shared.metrics.write_started.get() > 0.0,
            "a write is in progress"
        );
        release_and_flush(&writer, release);
        assert_eq!(
            written(&disk),
            vec![
                ("blocker".into(), Some("b".into())),
                ("issuer-a".into(), Some(format!("v{}", N - 1))),
            ]
        );
        assert_eq!(writer.shared.metrics.write_started.get(), 0.0);
        assert_eq!(writer.shared.metrics.pending.get(), 0);
    }

    #[test]
    fn saves_and_removals_of_one_key_keep_their_order() {
        let (writer, disk, release, _metrics) = blocked_writer();
        let save = |k: &str, b: &str| writer.push(k.into(), Operation::Save(Box::new(doc(k, b))));
        let remove = |k: &str| writer.push(k.into(), Operation::Remove);
        // A removal after a save wins.
        save("a", "a1");
        remove("a");
        // A save after a removal wins.
        remove("b");
        save("b", "b1");
        // Back and forth: the last one wins.
        save("c", "c1");
        remove("c");
        save("c", "c2");
        remove("d");
        save("d", "d1");
        remove("d");
        // The key being written when more arrive: written again after.
        save("blocker", "b2");
        assert_eq!(writer.shared.metrics.merged_saves.get(), 3);
        release_and_flush(&writer, release);
        assert_eq!(
            written(&disk),
            vec![
                ("blocker".into(), Some("b".into())),
                ("a".into(), None),
                ("b".into(), Some("b1".into())),
                ("c".into(), Some("c2".into())),
                ("d".into(), None),
                ("blocker".into(), Some("b2".into())),
            ]
        );
    }

    #[test]
    fn a_flush_waits_for_merged_saves_and_gives_up_at_its_limit() {
        let (writer, _disk, release, _metrics) = blocked_writer();
        writer.push("x".into(), Operation::Save(Box::new(doc("x", "1"))));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // Still blocked: the flush gives up.
        rt.block_on(writer.flush(Duration::from_millis(50)));
        assert!(!writer.shared.lock().done_before(2));
        release.send(()).unwrap();
        rt.block_on(writer.flush(Duration::from_secs(10)));
        assert!(writer.shared.lock().done_before(2));
    }

    /// A buffer the log lines of a test go to.
    #[derive(Clone, Default)]
    struct Logs(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Logs {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Logs {
        fn count(&self, needle: &str) -> usize {
            String::from_utf8_lossy(&self.0.lock().unwrap())
                .matches(needle)
                .count()
        }
    }

    /// A write that does not return is logged once, however many saves
    /// arrive meanwhile, and its start is exported for the alert.
    #[test]
    fn a_stuck_write_is_logged_once() {
        let logs = Logs::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer({
                let logs = logs.clone();
                move || logs.clone()
            })
            .with_ansi(false)
            .finish();
        let _log = tracing::subscriber::set_default(subscriber);
        let (writer, _disk, release, _metrics) =
            blocked_writer_stalling_after(Duration::from_millis(20));
        let started = writer.shared.metrics.write_started.get();
        assert!(started > 0.0, "the stuck write's start is exported");
        std::thread::sleep(Duration::from_millis(40));
        for i in 0..100 {
            writer.push(
                format!("k{}", i % 7),
                Operation::Save(Box::new(doc("k", "x"))),
            );
        }
        assert_eq!(logs.count("has not finished"), 1);
        assert_eq!(writer.shared.metrics.pending.get(), 7);
        release_and_flush(&writer, release);
        assert_eq!(logs.count("the stuck write finished"), 1);
        assert_eq!(writer.shared.metrics.write_started.get(), 0.0);
    }

    /// On the real directory: the last of a burst of saves and removals
    /// of one key is what the disk holds.
    #[test]
    fn the_directory_holds_the_last_operation() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Metrics::new().unwrap();
        let state = Arc::new(StateDir::open(dir.path()).unwrap());
        let writer = StateWriter::start(
            state.clone(),
            state.clone(),
            1 << 20,
            metrics.state_writer(),
            STALL_AFTER,
        )
        .unwrap();
        for i in 0..50 {
            writer.push(
                "kept".into(),
                Operation::Save(Box::new(doc("kept", &format!("{{\"v\":{i}}}")))),
            );
            writer.push("gone".into(), Operation::Save(Box::new(doc("gone", "{}"))));
            writer.push("gone".into(), Operation::Remove);
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(writer.flush(Duration::from_secs(10)));
        assert!(state.path_for("kept").exists());
        assert!(!state.path_for("gone").exists());
        let (docs, problems) = state.load_all_but(1 << 20, &Default::default());
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(docs.len(), 1);
        assert_eq!(&docs[0].body[..], b"{\"v\":49}");
    }
}
