//! The refresh scheduler: one task for all configured documents that warms
//! the cache at start-up, fetches a successor shortly before each stored
//! document expires (refresh-ahead, with jitter), retries a failing
//! upstream with capped exponential back-off, and takes commands: a new set
//! of documents after a reload, or an operator's "refresh now".
//!
//! Its cost does not grow per document beyond a heap entry and a map entry:
//! there is no task or timer per document, only a binary heap of due times.
//! A document whose time has come moves from the heap to the queue of its
//! upstream host (the origin the per-host limiter counts,
//! [`crate::upstream::limiter`]), and refreshes are started from the hosts
//! in turn (round robin), each host at most its background share of
//! `--upstream-concurrency` at once, and [`MAX_IN_FLIGHT`] in all. So a
//! hung or slow host holds at most its own share: the refreshes of every
//! other host never wait behind its queue, and its own documents wait in
//! its queue, not in a refresh that holds a place while waiting for a
//! permit. At start-up every document is due at once, so warm-up is one
//! queue per host drained at the per-host bound, not a burst; refresh
//! times are then spread by
//! [`crate::cache_rules::freshness::Freshness::jittered_refresh_age`].
//!
//! It is the only background fetcher of configured documents, so client
//! requests never wait on the upstream once a document is warm, and a
//! document has at most one background fetch at a time (a refresh asked for
//! while one runs is run once more after it).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant as TokioInstant;

use crate::cache::{DocumentSlot, MetadataCache};

/// Most refreshes in flight at once, all hosts together. Each host is
/// also held to its background share of `--upstream-concurrency`, and a
/// host whose last refresh could not reach it or timed out to one (see
/// [`Hosts::finished`]), so this is reached only with many hosts busy at
/// once (256 hung hosts, not 256 / share); a place that frees goes to the
/// next host in turn, so even then no host waits behind another's queue.
pub const MAX_IN_FLIGHT: usize = 256;

/// Fetch outcomes (`FetchError::outcome_label`) after which a host counts
/// as hung: it did not answer in time, or could not be reached (directly
/// or through its proxy).
const HUNG_OUTCOMES: [&str; 3] = ["timeout", "connect_error", "proxy_error"];

/// What the scheduler can be told.
#[derive(Debug)]
pub enum Command {
    /// The configured documents are now these (a reload): slots kept keep
    /// their schedule, new ones are due at once, removed ones are dropped.
    Replace(Vec<Arc<DocumentSlot>>),
    /// Fetch these slots (by id) now, even if their document is fresh.
    RefreshNow(Vec<usize>),
}

/// One upstream host's due refreshes.
#[derive(Debug, Default)]
struct HostQueue {
    /// Slots due, oldest first (ids of slots removed meanwhile are
    /// skipped when reached).
    due: VecDeque<usize>,
    /// Refreshes of this host running.
    running: usize,
    /// Whether the host is in `Hosts::turns`.
    in_turn: bool,
}

/// Due refreshes per upstream host, and the order the hosts take turns.
#[derive(Debug)]
struct Hosts {
    queues: HashMap<Arc<str>, HostQueue>,
    /// Hosts with a due refresh and room for one more, in turn order.
    turns: VecDeque<Arc<str>>,
    /// Most refreshes running per host (its background share).
    per_host: usize,
    /// Hosts whose last refresh timed out or could not connect: one
    /// refresh at a time until one gets through. A hung host then holds
    /// one place of [`MAX_IN_FLIGHT`] for each `--upstream-timeout`, not
    /// its whole share: its documents are served stale either way, and the
    /// places go to hosts that answer.
    hung: HashSet<Arc<str>>,
}

impl Hosts {
    fn new(per_host: usize) -> Self {
        Self {
            queues: HashMap::new(),
            turns: VecDeque::new(),
            per_host: per_host.max(1),
            hung: HashSet::new(),
        }
    }

    /// Most refreshes of `host` to run at once now.
    fn limit(&self, host: &str) -> usize {
        if self.hung.contains(host) {
            1
        } else {
            self.per_host
        }
    }

    /// Queues `id` behind `host`'s due refreshes.
    fn push(&mut self, host: &str, id: usize) {
        let key = match self.queues.get_key_value(host) {
            Some((k, _)) => k.clone(),
            None => {
                let k: Arc<str> = Arc::from(host);
                self.queues.insert(k.clone(), HostQueue::default());
                k
            }
        };
        let limit = self.limit(host);
        if let Some(q) = self.queues.get_mut(&key) {
            q.due.push_back(id);
            if !q.in_turn && q.running < limit {
                q.in_turn = true;
                self.turns.push_back(key);
            }
        }
    }

    /// The next refresh to start: the first live slot of the next host in
    /// turn that has room. `live` says whether an id is still scheduled.
    fn next(&mut self, mut live: impl FnMut(usize) -> bool) -> Option<(usize, Arc<str>)> {
        while let Some(host) = self.turns.pop_front() {
            let limit = self.limit(&host);
            let Some(q) = self.queues.get_mut(&host) else {
                continue;
            };
            q.in_turn = false;
            if q.running >= limit {
                continue;
            }
            let mut started = None;
            while let Some(id) = q.due.pop_front() {
                if live(id) {
                    started = Some(id);
                    break;
                }
            }
            match started {
                Some(id) => {
                    q.running += 1;
                    if !q.due.is_empty() && q.running < limit {
                        q.in_turn = true;
                        self.turns.push_back(host.clone());
                    }
                    return Some((id, host));
                }
                None => {
                    if q.running == 0 {
                        self.queues.remove(&host);
                    }
                }
            }
        }
        None
    }

    /// A refresh of `host` ended: the host has room again. `hung`: it
    /// timed out or could not connect (the host is held to one refresh at
    /// a time until one that does not ends).
    fn finished(&mut self, host: &Arc<str>, hung: bool) {
        if hung {
            if !self.hung.contains(host) {
                self.hung.insert(host.clone());
            }
        } else {
            self.hung.remove(host);
        }
        let limit = self.limit(host);
        let Some(q) = self.queues.get_mut(host) else {
            return;
        };
        q.running = q.running.saturating_sub(1);
        if q.due.is_empty() {
            if q.running == 0 {
                self.queues.remove(host);
            }
        } else if !q.in_turn && q.running < limit {
            q.in_turn = true;
            self.turns.push_back(host.clone());
        }
    }
}

/// The scheduler's state: which slots exist, when each is due, which run.
struct Schedule {
    slots: HashMap<usize, Arc<DocumentSlot>>,
    /// Due times; an entry whose time differs from `due_at` is stale.
    heap: BinaryHeap<Reverse<(TokioInstant, usize)>>,
    due_at: HashMap<usize, TokioInstant>,
    /// Slots due and waiting in their host's queue.
    queued: HashSet<usize>,
    hosts: Hosts,
    /// Slots to fetch even when fresh (operator's refresh).
    forced: HashSet<usize>,
    /// Slots with a refresh running, and those asked for again meanwhile.
    running: HashSet<usize>,
    again: HashSet<usize>,
}

impl Schedule {
    fn new(per_host: usize) -> Self {
        Self {
            slots: HashMap::new(),
            heap: BinaryHeap::new(),
            due_at: HashMap::new(),
            queued: HashSet::new(),
            hosts: Hosts::new(per_host),
            forced: HashSet::new(),
            running: HashSet::new(),
            again: HashSet::new(),
        }
    }

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

    /// Moves every slot due by `now` from the heap to its host's queue,
    /// skipping stale heap entries and slots already queued.
    fn queue_due(&mut self, cache: &MetadataCache, now: TokioInstant) {
        while let Some(Reverse((at, id))) = self.heap.peek().copied() {
            if at > now {
                return;
            }
            self.heap.pop();
            if self.due_at.get(&id) != Some(&at) {
                continue;
            }
            self.due_at.remove(&id);
            let Some(slot) = self.slots.get(&id) else {
                continue;
            };
            if self.queued.insert(id) {
                self.hosts.push(&cache.refresh_host(slot), id);
            }
        }
    }

    /// The next refresh to start (hosts in turn), with its host.
    fn next_start(&mut self) -> Option<(Arc<DocumentSlot>, Arc<str>)> {
        let (slots, queued) = (&self.slots, &mut self.queued);
        let (id, host) = self
            .hosts
            .next(|id| queued.remove(&id) && slots.contains_key(&id))?;
        let slot = self.slots.get(&id)?.clone();
        Some((slot, host))
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
    let mut s = Schedule::new(cache.background_limit());
    for slot in slots {
        s.add(slot, now);
    }
    let mut warming: HashSet<usize> = s.slots.keys().copied().collect();
    let total = warming.len();
    let mut tasks: JoinSet<()> = JoinSet::new();
    let mut task_slot: HashMap<tokio::task::Id, (usize, Arc<str>)> = HashMap::new();
    let mut commands_open = true;
    loop {
        s.queue_due(&cache, TokioInstant::now());
        while tasks.len() < MAX_IN_FLIGHT {
            let Some((slot, host)) = s.next_start() else {
                break;
            };
            let id = slot.id;
            let force = s.forced.remove(&id);
            s.running.insert(id);
            let cache = cache.clone();
            let handle = tasks.spawn(async move { cache.refresh(&slot, force).await });
            task_slot.insert(handle.id(), (id, host));
        }
        let next = s.next_due();
        tokio::select! {
            done = tasks.join_next_with_id(), if !tasks.is_empty() => {
                let task = match done {
                    Some(Ok((task, ()))) => task,
                    Some(Err(e)) => e.id(),
                    None => continue,
                };
                let Some((id, host)) = task_slot.remove(&task) else { continue };
                s.running.remove(&id);
                let slot = s.slots.get(&id).cloned();
                let hung = slot
                    .as_ref()
                    .and_then(|slot| slot.last_fetch())
                    .is_some_and(|f| HUNG_OUTCOMES.contains(&f.outcome));
                s.hosts.finished(&host, hung);
                let Some(slot) = slot else { continue };
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
                    // Removed slots still in a host's queue are skipped
                    // when reached.
                    s.queued.retain(|id| keep.contains(id));
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
                        } else if s.queued.contains(&id) {
                            // Already due: it runs at its host's turn.
                            s.forced.insert(id);
                        } else {
                            s.forced.insert(id);
                            s.due(id, now);
                        }
                    }
                }
                None => commands_open = false,
            },
            () = sleep_until(next) => {}
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_take_turns_and_each_keeps_to_its_share() {
        let mut h = Hosts::new(2);
        for id in 0..10 {
            h.push("http://hung", id);
        }
        for id in 100..103 {
            h.push("http://ok", id);
        }
        let mut started = Vec::new();
        while let Some((id, host)) = h.next(|_| true) {
            started.push((id, host));
        }
        let ids: Vec<usize> = started.iter().map(|(id, _)| *id).collect();
        // Two each, alternating; the hung host's other eight wait in its
        // own queue, not in front of the other host's.
        assert_eq!(ids, vec![0, 100, 1, 101]);
        // A refresh of the healthy host ends: its next one starts, while
        // the hung host (still at its share) gets nothing.
        let ok = started[1].1.clone();
        h.finished(&ok, false);
        assert_eq!(h.next(|_| true).map(|(id, _)| id), Some(102));
        assert_eq!(h.next(|_| true), None);
        // Removed slots are skipped; an idle empty host is forgotten.
        let hung = started[0].1.clone();
        h.finished(&hung, false);
        assert_eq!(h.next(|id| id != 2).map(|(id, _)| id), Some(3));
        h.finished(&ok, false);
        h.finished(&ok, false);
        assert!(!h.queues.contains_key(&ok));
    }

    #[test]
    fn a_hung_host_runs_one_refresh_at_a_time_until_one_gets_through() {
        let mut h = Hosts::new(3);
        for id in 0..10 {
            h.push("http://hung", id);
        }
        let mut running: Vec<usize> =
            std::iter::from_fn(|| h.next(|_| true).map(|(id, _)| id)).collect();
        assert_eq!(running, vec![0, 1, 2], "its share at first");
        let host: Arc<str> = Arc::from("http://hung");
        // The three time out: after the first, nothing new starts while
        // two still run; after the third, one at a time.
        h.finished(&host, true);
        assert_eq!(h.next(|_| true), None, "two still running, limit one");
        h.finished(&host, true);
        assert_eq!(h.next(|_| true), None);
        h.finished(&host, true);
        running = std::iter::from_fn(|| h.next(|_| true).map(|(id, _)| id)).collect();
        assert_eq!(running, vec![3], "one at a time while hung");
        // Another host keeps its whole share meanwhile.
        for id in 100..105 {
            h.push("http://ok", id);
        }
        let ok: Vec<usize> = std::iter::from_fn(|| h.next(|_| true).map(|(id, _)| id)).collect();
        assert_eq!(ok, vec![100, 101, 102]);
        // The hung host's refresh gets through: its share is back.
        h.finished(&host, false);
        running = std::iter::from_fn(|| h.next(|_| true).map(|(id, _)| id)).collect();
        assert_eq!(running, vec![4, 5, 6]);
    }
}
