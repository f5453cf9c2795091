//! A template's second tier (`--state-dir`): the tenants whose validated
//! copy is saved in the state directory, bounded by `max_tenants_on_disk`
//! and evicted least recently used, as nginx's `proxy_cache` keeps on disk
//! what left its memory zone.
//!
//! - Memory ([`super::tenants::TemplateCache`], `max_tenants`) holds what is
//!   served; a tenant it evicts keeps its file here. Only eviction from
//!   this tier, a copy past its max-stale, a `404`/`410` on a cold fetch
//!   or a `410` on a refresh, a damaged file, or the template's removal by
//!   a reload removes a file.
//! - The index ([`DiskIndex`]) holds names and sizes only; bodies stay on
//!   disk. "Used" means saved (a fetch, a refresh or a 304 renewal: a
//!   tenant requested from memory is refreshed ahead, so saved, once per
//!   lifetime) or read back; tenants held in memory are never evicted
//!   from here (they are in use). A hit in memory takes no lock here.
//!   After a restart the order is rebuilt from the files' modification
//!   times (their last save) without reading them.
//! - A read is a blocking file read on tokio's blocking pool, at most
//!   [`MAX_DISK_LOADS`] at once for the whole process and never longer
//!   than the caller's deadline (a stuck disk then looks like no file:
//!   the tenant is fetched). It is not an upstream request: it takes no
//!   permit of `--upstream-concurrency` and no cold-fetch slot.
//!
//! The caller ([`super::tenants`]) checks what is read exactly like a
//! restore ([`super::persist::restore::restore`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::metrics::DiskTierMetrics;

use super::persist::disk_index::DiskIndex;
use super::persist::store::{ListedMember, LoadProblem, SavedDocument};
use super::persist::StateWriter;
use super::slot::tenant_state_key;

/// Most tenant files read back at once, for the whole process: each read
/// holds a blocking thread (and its allocator heap), and a read from the
/// page cache takes well under a millisecond, so a few are enough.
pub const MAX_DISK_LOADS: usize = 4;

/// Bytes a state file has beyond its body (header line), as counted
/// before a listing gives the exact size.
const HEADER_ESTIMATE: u64 = 512;

/// What reading a tenant's file gave.
#[derive(Debug)]
pub enum DiskRead {
    /// No file (never saved, or removed meanwhile).
    Absent,
    /// The file, intact (format, checksum, key); not yet validated.
    Found(Box<SavedDocument>),
    /// The file is damaged or unreadable.
    Damaged(LoadProblem),
    /// The read did not finish within the deadline.
    TimedOut,
}

/// The disk tier of one template (shared by the template's successors
/// after a reload that changes it: the files are the same).
pub struct DiskTier {
    template: Arc<str>,
    writer: StateWriter,
    index: Mutex<DiskIndex>,
    bound: AtomicU64,
    loads: Arc<Semaphore>,
    metrics: DiskTierMetrics,
}

impl std::fmt::Debug for DiskTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskTier")
            .field("template", &self.template)
            .field("bound", &self.bound)
            .finish_non_exhaustive()
    }
}

impl DiskTier {
    /// An empty tier for `template`, bounded by `bound` tenants, reading
    /// through `loads` (shared by every template).
    pub fn new(
        template: Arc<str>,
        writer: StateWriter,
        bound: u64,
        loads: Arc<Semaphore>,
        metrics: DiskTierMetrics,
    ) -> Self {
        Self {
            template,
            writer,
            index: Mutex::new(DiskIndex::new()),
            bound: AtomicU64::new(bound),
            loads,
            metrics,
        }
    }

    /// A reload changed the bound (applied at the next save).
    pub fn set_bound(&self, bound: u64) {
        self.bound.store(bound, Ordering::Relaxed);
    }

    fn index(&self) -> MutexGuard<'_, DiskIndex> {
        // The index is consistent after every call: a panic elsewhere
        // cannot leave it half-updated.
        self.index.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn key(&self, tenant: &str) -> String {
        tenant_state_key(&self.template, tenant)
    }

    fn publish(&self, index: &DiskIndex) {
        self.metrics
            .tenants
            .set(i64::try_from(index.len()).unwrap_or(i64::MAX));
        self.metrics
            .bytes
            .set(i64::try_from(index.bytes()).unwrap_or(i64::MAX));
    }

    /// The series of this tier.
    pub fn metrics(&self) -> &DiskTierMetrics {
        &self.metrics
    }

    /// Whether `tenant` has a file.
    pub fn contains(&self, tenant: &str) -> bool {
        self.index().contains(tenant)
    }

    /// Tenants with a file.
    pub fn len(&self) -> usize {
        self.index().len()
    }

    /// The `n` most recently used tenants, newest first.
    pub fn newest(&self, n: usize) -> Vec<String> {
        self.index()
            .names_newest_first()
            .take(n)
            .map(str::to_owned)
            .collect()
    }

    /// Whether no tenant has a file.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `tenant`'s copy of `body_len` bytes was just queued for saving:
    /// the most recently used; tenants past the bound (least recently used
    /// first, never one `in_memory` says is held) have their files removed.
    pub fn saved(&self, tenant: &str, body_len: usize, in_memory: impl Fn(&str) -> bool) {
        let size = (body_len as u64).saturating_add(HEADER_ESTIMATE);
        let bound = usize::try_from(self.bound.load(Ordering::Relaxed)).unwrap_or(usize::MAX);
        let gone = {
            let mut index = self.index();
            index.touch(tenant, Some(size));
            let gone = index.evict_over(bound, in_memory);
            self.publish(&index);
            gone
        };
        for tenant in gone {
            tracing::debug!(
                document = &*self.template,
                tenant = &*tenant,
                "tenant evicted from the disk tier (least recently used): file removed"
            );
            self.writer.remove(&self.key(&tenant));
        }
    }

    /// `tenant` was read back: the most recently used, if it has a file.
    pub fn used(&self, tenant: &str) {
        let mut index = self.index();
        if index.contains(tenant) {
            index.touch(tenant, None);
        }
    }

    /// Removes `tenant`'s file (gone upstream, expired, damaged).
    pub fn forget(&self, tenant: &str) {
        {
            let mut index = self.index();
            index.remove(tenant);
            self.publish(&index);
        }
        self.writer.remove(&self.key(tenant));
    }

    /// Takes the listed files (see [`StateWriter::list_tenants`]) into the
    /// index, oldest save first so the last saved are the most recently
    /// used; files past the bound (the oldest) are removed. Returns how
    /// many tenants are indexed.
    pub fn rebuild(&self, mut listed: Vec<ListedMember>) -> usize {
        listed.sort_unstable_by_key(|m| m.modified);
        let bound = usize::try_from(self.bound.load(Ordering::Relaxed)).unwrap_or(usize::MAX);
        let (gone, len) = {
            let mut index = self.index();
            for m in &listed {
                index.touch(&m.member, Some(m.size));
            }
            let gone = index.evict_over(bound, |_| false);
            self.publish(&index);
            (gone, index.len())
        };
        if !gone.is_empty() {
            tracing::info!(
                document = &*self.template,
                removed = gone.len(),
                max_tenants_on_disk = bound,
                "tenant files over max_tenants_on_disk removed (least recently saved)"
            );
        }
        for tenant in gone {
            self.writer.remove(&self.key(&tenant));
        }
        len
    }

    /// The template is gone: every file is removed.
    pub fn remove_all(&self) {
        let names = {
            let mut index = self.index();
            let names = index.drain();
            self.publish(&index);
            names
        };
        for tenant in names {
            self.writer.remove(&self.key(&tenant));
        }
    }

    /// Reads `tenant`'s file back, within `deadline` (waiting for a read
    /// slot included).
    pub async fn read(&self, tenant: &str, deadline: Duration) -> DiskRead {
        let key = self.key(tenant);
        let read = async {
            let Ok(permit) = self.loads.clone().acquire_owned().await else {
                return DiskRead::TimedOut;
            };
            match self.writer.load_saved(key, permit).await {
                Ok(Some(saved)) => DiskRead::Found(Box::new(saved)),
                Ok(None) => DiskRead::Absent,
                Err(problem) => DiskRead::Damaged(problem),
            }
        };
        tokio::time::timeout(deadline, read)
            .await
            .unwrap_or(DiskRead::TimedOut)
    }
}
