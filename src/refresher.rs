//! The refresh scheduler: one task for all configured documents that warms
//! the cache at start-up, fetches a successor shortly before each stored
//! document expires (refresh-ahead, with jitter), retries a failing
//! upstream with capped exponential back-off, and takes commands: a new set
//! of documents after a reload, or an operator's "refresh now".
//!
//! Its cost does not grow per document beyond a heap entry and a map entry:
//! there is no task or timer per document, only a binary heap of due times
//! and a bounded number of refreshes in flight ([`MAX_IN_FLIGHT`]; each also
//! waits for a background permit of its upstream host, see
//! [`crate::upstream::limiter`]). At start-up every document is due at once,
//! so warm-up is a queue drained at the per-host concurrency bound, not a
//! burst; refresh times are then spread by
//! [`crate::cache_rules::freshness::Freshness::jittered_refresh_age`].
//!
//! It is the only background fetcher of configured documents, so client
//! requests never wait on the upstream once a document is warm, and a
//! document has at most one background fetch at a time (a refresh asked for
//! while one runs is run once more after it).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant as TokioInstant;

use crate::cache::{DocumentSlot, MetadataCache};

/// Most refreshes in flight (or waiting for a host permit) at once.
pub const MAX_IN_FLIGHT: usize = 64;

/// What the scheduler can be told.
#[derive(Debug)]
pub enum Command {
    /// The configured documents are now these (a reload): slots kept keep
    /// their schedule, new ones are due at once, removed ones are dropped.
    Replace(Vec<Arc<DocumentSlot>>),
    /// Fetch these slots (by id) now, even if their document is fresh.
    RefreshNow(Vec<usize>),
}

/// The scheduler's state: which slots exist, when each is due, which run.
struct Schedule {
    slots: HashMap<usize, Arc<DocumentSlot>>,
    /// Due times; an entry whose time differs from `due_at` is stale.
    heap: BinaryHeap<Reverse<(TokioInstant, usize)>>,
    due_at: HashMap<usize, TokioInstant>,
    /// Slots to fetch even when fresh (operator's refresh).
    forced: HashSet<usize>,
    /// Slots with a refresh running, and those asked for again meanwhile.
    running: HashSet<usize>,
    again: HashSet<usize>,
}

impl Schedule {
    fn due(&mut self, id: usize, at: TokioInstant) {
        self.due_at.insert(id, at);
        self.heap.push(Reverse((at, id)));
    }

    fn add(&mut self, slot: Arc<DocumentSlot>, now: TokioInstant) {
        let id = slot.id;
        if self.slots.insert(id, slot).is_none() {
            self.due(id, now);
        }
    }

    /// The next slot due by `now`, skipping stale heap entries.
    fn pop_due(&mut self, now: TokioInstant) -> Option<Arc<DocumentSlot>> {
        while let Some(Reverse((at, id))) = self.heap.peek().copied() {
            if at > now {
                return None;
            }
            self.heap.pop();
            if self.due_at.get(&id) != Some(&at) {
                continue;
            }
            self.due_at.remove(&id);
            if let Some(slot) = self.slots.get(&id) {
                return Some(slot.clone());
            }
        }
        None
    }

    fn next_due(&self) -> Option<TokioInstant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }
}

/// Runs until `stop` changes or its sender is dropped.
pub async fn run(
    cache: Arc<MetadataCache>,
    slots: Vec<Arc<DocumentSlot>>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    mut stop: watch::Receiver<()>,
) {
    let started = Instant::now();
    let now = TokioInstant::now();
    let mut s = Schedule {
        slots: HashMap::new(),
        heap: BinaryHeap::new(),
        due_at: HashMap::new(),
        forced: HashSet::new(),
        running: HashSet::new(),
        again: HashSet::new(),
    };
    for slot in slots {
        s.add(slot, now);
    }
    let mut warming: HashSet<usize> = s.slots.keys().copied().collect();
    let total = warming.len();
    let mut tasks: JoinSet<()> = JoinSet::new();
    let mut task_slot: HashMap<tokio::task::Id, usize> = HashMap::new();
    let mut commands_open = true;
    loop {
        while tasks.len() < MAX_IN_FLIGHT {
            let Some(slot) = s.pop_due(TokioInstant::now()) else {
                break;
            };
            let id = slot.id;
            let force = s.forced.remove(&id);
            s.running.insert(id);
            let cache = cache.clone();
            let handle = tasks.spawn(async move { cache.refresh(&slot, force).await });
            task_slot.insert(handle.id(), id);
        }
        let next = s.next_due();
        let room = tasks.len() < MAX_IN_FLIGHT;
        tokio::select! {
            done = tasks.join_next_with_id(), if !tasks.is_empty() => {
                let task = match done {
                    Some(Ok((task, ()))) => task,
                    Some(Err(e)) => e.id(),
                    None => continue,
                };
                let Some(id) = task_slot.remove(&task) else { continue };
                s.running.remove(&id);
                let Some(slot) = s.slots.get(&id).cloned() else { continue };
                if s.again.remove(&id) {
                    s.forced.insert(id);
                    s.due(id, TokioInstant::now());
                } else {
                    let first = warming.contains(&id);
                    let at = cache.next_refresh_at(&slot, fastrand::f64(), first).await;
                    s.due(id, TokioInstant::from_std(at));
                }
                if warming.remove(&id) && warming.is_empty() {
                    tracing::info!(
                        documents = total,
                        seconds = started.elapsed().as_secs_f64(),
                        "warm-up done: every configured document tried once"
                    );
                }
            }
            command = commands.recv(), if commands_open => match command {
                Some(Command::Replace(slots)) => {
                    let keep: HashSet<usize> = slots.iter().map(|s| s.id).collect();
                    s.slots.retain(|id, _| keep.contains(id));
                    s.due_at.retain(|id, _| keep.contains(id));
                    // A removed slot's pending operator refresh goes with
                    // it (ids are never reused: kept, they would pile up
                    // over reloads).
                    s.forced.retain(|id| keep.contains(id));
                    s.again.retain(|id| keep.contains(id));
                    warming.retain(|id| keep.contains(id));
                    let now = TokioInstant::now();
                    for slot in slots {
                        s.add(slot, now);
                    }
                }
                Some(Command::RefreshNow(ids)) => {
                    let now = TokioInstant::now();
                    for id in ids {
                        if !s.slots.contains_key(&id) {
                            continue;
                        }
                        if s.running.contains(&id) {
                            s.again.insert(id);
                        } else {
                            s.forced.insert(id);
                            s.due(id, now);
                        }
                    }
                }
                None => commands_open = false,
            },
            () = sleep_until(next), if room => {}
            _ = stop.changed() => break,
        }
    }
    tasks.shutdown().await;
    tracing::debug!("refresh scheduler stopped");
}

async fn sleep_until(at: Option<TokioInstant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
