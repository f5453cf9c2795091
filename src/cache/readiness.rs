//! Which configured documents are servable, kept as they change, so a
//! `/readyz` probe costs O(1) whatever the number of documents (plus the
//! few it names), never a scan of every document.
//!
//! A configured document is servable from the moment a copy is stored
//! until that copy's hard deadline (its freshness plus `--max-stale`,
//! [`super::StoredDocument::hard_deadline`], the same bound moka expires
//! the entry at), or until it is dropped. The cache reports every store
//! and drop here ([`ReadyIndex::stored`], [`ReadyIndex::dropped`]); the
//! passing of time is applied from a heap of deadlines, lazily, by the
//! probe itself ([`ReadyIndex::readiness`] pops the deadlines that have
//! passed, each once): exact at the moment of the probe, with no timer or
//! task per document. Each document has at most one live heap entry (a
//! later deadline is re-queued when the earlier one is reached), so memory
//! is a 40-byte entry and a 16-byte heap entry per document (about 0.55 MiB
//! at 10,000 documents).
//!
//! The unready documents are kept in an ordered set (slot ids grow in
//! configuration order), so the answer names the first few at O(few).

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use super::slot::DocumentSlot;

/// What `/readyz` reports.
#[derive(Debug, Default)]
pub struct Readiness {
    /// Configured documents counted (pending ones excluded).
    pub total: usize,
    /// Documents with nothing servable.
    pub unready: usize,
    /// The first few of them, with the reason.
    pub shown: Vec<String>,
    /// Documents added by a reload, not servable yet, not counted.
    pub pending: usize,
}

/// Until when a document can be served, in 8 bytes: `0` nothing
/// servable, `u64::MAX` always (`--no-cache` after a successful fetch:
/// nothing is stored, every request fetches), anything else a stored copy
/// until that [`Tick`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Servable(u64);

impl Servable {
    const NO: Self = Self(0);
    const ALWAYS: Self = Self(u64::MAX);

    fn until(tick: u64) -> Self {
        Self(tick.clamp(1, u64::MAX - 1))
    }

    /// The deadline of a stored copy.
    fn deadline(self) -> Option<u64> {
        (self != Self::NO && self != Self::ALWAYS).then_some(self.0)
    }
}

/// One tracked document: 40 bytes, in a vector sorted by slot id (a
/// `HashMap` of the same entries took 2.3 times that at 10,000 documents,
/// its table being a power of two at most 7/8 full).
#[derive(Debug)]
struct Tracked {
    id: usize,
    slot: Arc<DocumentSlot>,
    servable: Servable,
    /// The tick of this document's live heap entry; 0 for none (a
    /// deadline is never tick 0, see [`Servable::until`]).
    queued: u64,
    /// Added by a reload and not servable yet: counted apart.
    pending: bool,
}

/// Instants are kept as ticks, nanoseconds after the index was made
/// (8 bytes where an `Instant` takes 16; an earlier instant is tick 0,
/// which has passed for any deadline).
#[derive(Debug)]
struct Index {
    epoch: Instant,
    /// Sorted by id (slot ids grow as slots are made).
    docs: Vec<Tracked>,
    deadlines: BinaryHeap<Reverse<(u64, usize)>>,
    /// Not servable, not pending.
    unready: BTreeSet<usize>,
    /// Not servable, pending.
    pending: usize,
}

impl Default for Index {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            docs: Vec::new(),
            deadlines: BinaryHeap::new(),
            unready: BTreeSet::new(),
            pending: 0,
        }
    }
}

impl Index {
    fn tick(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX - 1)
    }

    fn position(&self, id: usize) -> Option<usize> {
        self.docs.binary_search_by_key(&id, |t| t.id).ok()
    }

    fn get(&self, id: usize) -> Option<&Tracked> {
        self.position(id).map(|i| &self.docs[i])
    }

    /// Moves `id` to `to`, keeping the counts.
    fn set(&mut self, id: usize, to: Servable) {
        let Some(i) = self.position(id) else {
            return;
        };
        let t = &mut self.docs[i];
        let was = t.servable != Servable::NO;
        let is = to != Servable::NO;
        t.servable = to;
        if let Some(at) = to.deadline() {
            if t.queued == 0 || at < t.queued {
                t.queued = at;
                self.deadlines.push(Reverse((at, id)));
            }
        }
        match (was, is) {
            (false, true) => {
                if t.pending {
                    t.pending = false;
                    self.pending -= 1;
                    // Servable once: no longer pending, for good.
                    t.slot.pending(true);
                } else {
                    self.unready.remove(&id);
                }
            }
            (true, false) => {
                if t.pending {
                    self.pending += 1;
                } else {
                    self.unready.insert(id);
                }
            }
            _ => {}
        }
    }

    /// Applies every deadline passed by `now`.
    fn advance(&mut self, now: Instant) {
        let now = self.tick(now);
        while let Some(Reverse((at, id))) = self.deadlines.peek().copied() {
            if at > now {
                return;
            }
            self.deadlines.pop();
            let Some(i) = self.position(id) else {
                continue;
            };
            let t = &mut self.docs[i];
            if t.queued != at {
                continue;
            }
            t.queued = 0;
            match t.servable.deadline() {
                Some(until) if until <= now => self.set(id, Servable::NO),
                Some(until) => {
                    t.queued = until;
                    self.deadlines.push(Reverse((until, id)));
                }
                None => {}
            }
        }
    }

    /// Tracks `slots` (none tracked yet), each starting with its
    /// servable state.
    fn track(&mut self, slots: Vec<(&Arc<DocumentSlot>, Servable)>) {
        self.docs.reserve_exact(slots.len());
        for (slot, _) in &slots {
            let pending = slot.pending(false);
            self.docs.push(Tracked {
                id: slot.id,
                slot: Arc::clone(slot),
                servable: Servable::NO,
                queued: 0,
                pending,
            });
            if pending {
                self.pending += 1;
            } else {
                self.unready.insert(slot.id);
            }
        }
        self.docs.sort_unstable_by_key(|t| t.id);
        for (slot, servable) in slots {
            self.set(slot.id, servable);
        }
        // At most one live heap entry per document: room for all of them
        // now, exactly, rather than doubling as copies are stored.
        let room = self.docs.len().saturating_sub(self.deadlines.len());
        self.deadlines.reserve_exact(room);
    }

    /// Stops tracking every document `keep` refuses.
    fn untrack_unless(&mut self, keep: impl Fn(usize) -> bool) {
        let gone: Vec<usize> = self
            .docs
            .iter()
            .map(|t| t.id)
            .filter(|id| !keep(*id))
            .collect();
        for id in &gone {
            self.set(*id, Servable::NO);
            self.unready.remove(id);
        }
        let mut pending_gone = 0;
        self.docs.retain(|t| {
            let kept = keep(t.id);
            if !kept && t.pending {
                pending_gone += 1;
            }
            kept
        });
        self.pending -= pending_gone;
    }
}

/// The readiness of the configured documents of the current generation.
#[derive(Debug, Default)]
pub struct ReadyIndex {
    index: Mutex<Index>,
    /// `--no-cache`: a document is servable until a fetch of it fails.
    bypass: bool,
}

impl ReadyIndex {
    /// An empty index; `bypass` for `--no-cache`.
    pub fn new(bypass: bool) -> Self {
        Self {
            index: Mutex::default(),
            bypass,
        }
    }

    fn index(&self) -> MutexGuard<'_, Index> {
        // Plain data, each change made whole under the lock.
        self.index.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Tracks exactly `slots` from now on: the ones already tracked keep
    /// their state, the others start with `stored` (the hard deadline of
    /// what is stored for them, if anything), the rest are dropped.
    pub fn track(&self, slots: &[(Arc<DocumentSlot>, Option<Instant>)]) {
        let mut index = self.index();
        let keep: std::collections::HashSet<usize> = slots.iter().map(|(s, _)| s.id).collect();
        index.untrack_unless(|id| keep.contains(&id));
        let added: Vec<(&Arc<DocumentSlot>, Servable)> = slots
            .iter()
            .filter(|(s, _)| index.position(s.id).is_none())
            .map(|(slot, stored)| {
                let servable = match (self.bypass, stored) {
                    (true, _) => Servable::ALWAYS,
                    (false, Some(at)) => Servable::until(index.tick(*at)),
                    (false, None) => Servable::NO,
                };
                (slot, servable)
            })
            .collect();
        index.track(added);
    }

    /// A copy of `slot`'s document was stored, servable until `deadline`.
    pub fn stored(&self, slot: &DocumentSlot, deadline: Instant) {
        let mut index = self.index();
        let until = Servable::until(index.tick(deadline));
        index.set(slot.id, until);
    }

    /// `slot`'s stored copy was dropped.
    pub fn dropped(&self, slot: &DocumentSlot) {
        self.index().set(slot.id, Servable::NO);
    }

    /// `--no-cache`: a fetch of `slot` succeeded (`ok`) or failed.
    pub fn fetched_uncached(&self, slot: &DocumentSlot, ok: bool) {
        let to = if ok { Servable::ALWAYS } else { Servable::NO };
        self.index().set(slot.id, to);
    }

    /// The counts now, naming the first `show` unready documents.
    pub fn readiness(&self, show: usize) -> Readiness {
        self.readiness_at(show, Instant::now())
    }

    /// The counts at `now` (not earlier than any time asked before).
    fn readiness_at(&self, show: usize, now: Instant) -> Readiness {
        let mut index = self.index();
        index.advance(now);
        let shown = index
            .unready
            .iter()
            .take(show)
            .filter_map(|id| index.get(*id))
            .map(|t| match t.slot.last_error() {
                Some(e) => format!("{}: {e}", t.slot.name),
                None => format!("{}: not fetched yet", t.slot.name),
            })
            .collect();
        Readiness {
            total: index.docs.len() - index.pending,
            unready: index.unready.len(),
            shown,
            pending: index.pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use crate::metrics::Metrics;

    fn slots(n: usize) -> Vec<Arc<DocumentSlot>> {
        let metrics = Metrics::new().expect("metrics");
        (0..n)
            .map(|i| {
                let url = format!("https://as{i}.example.com");
                Arc::new(DocumentSlot::for_tests(
                    &metrics,
                    &format!("doc{i}"),
                    &url,
                    &url,
                ))
            })
            .collect()
    }

    fn counts_at(i: &ReadyIndex, at: Instant) -> (usize, usize, usize) {
        let r = i.readiness_at(10, at);
        (r.total, r.unready, r.pending)
    }

    fn counts(i: &ReadyIndex) -> (usize, usize, usize) {
        counts_at(i, Instant::now())
    }

    #[test]
    fn deadlines_stores_drops_and_pending_move_the_counts() {
        let s = slots(3);
        let index = ReadyIndex::new(false);
        index.track(&s.iter().map(|x| (x.clone(), None)).collect::<Vec<_>>());
        assert_eq!(counts(&index), (3, 3, 0));
        let r = index.readiness(2);
        assert_eq!(r.shown, ["doc0: not fetched yet", "doc1: not fetched yet"]);

        // Times an hour ahead, read at chosen instants: no sleeping.
        let t0 = Instant::now() + Duration::from_secs(3600);
        let ms = |n: u64| t0 + Duration::from_millis(n);
        index.stored(&s[0], ms(10_000));
        index.stored(&s[1], ms(30));
        assert_eq!(counts_at(&index, t0), (3, 1, 0));
        // A later copy moves the deadline on (one heap entry kept)...
        index.stored(&s[1], ms(60));
        assert_eq!(
            counts_at(&index, ms(40)),
            (3, 1, 0),
            "the later deadline holds"
        );
        // ...and time alone ends it, exactly at the deadline.
        assert_eq!(counts_at(&index, ms(59)), (3, 1, 0));
        assert_eq!(counts_at(&index, ms(60)), (3, 2, 0), "at its deadline");
        assert_eq!(
            index.readiness_at(1, ms(61)).shown,
            ["doc1: not fetched yet"]
        );
        // An earlier deadline than the one queued is honoured too.
        index.stored(&s[2], ms(10_000));
        index.stored(&s[2], ms(70));
        assert_eq!(counts_at(&index, ms(69)), (3, 1, 0));
        assert_eq!(counts_at(&index, ms(70)), (3, 2, 0));
        index.dropped(&s[0]);
        assert_eq!(counts_at(&index, ms(80)), (3, 3, 0));

        // A reload: doc2 goes, a new pending one comes (not counted until
        // servable once), doc0 and doc1 keep their state.
        let new = slots(1).remove(0);
        new.mark_pending();
        let next = [
            (s[0].clone(), None),
            (s[1].clone(), None),
            (new.clone(), None),
        ];
        index.track(&next);
        assert_eq!(counts_at(&index, ms(90)), (2, 2, 1));
        index.stored(&new, ms(5_000));
        assert_eq!(counts_at(&index, ms(100)), (3, 2, 0));
        assert!(!new.pending(false), "servable once: pending no more");
        index.dropped(&new);
        assert_eq!(
            counts_at(&index, ms(110)),
            (3, 3, 0),
            "then counted like any other"
        );
        // Untracked slots are ignored.
        index.stored(&s[2], ms(10_000));
        assert_eq!(counts_at(&index, ms(120)), (3, 3, 0));
    }

    #[test]
    fn slots_in_any_order_and_deadlines_before_the_index_was_made() {
        let before = Instant::now();
        let s = slots(3);
        let index = ReadyIndex::new(false);
        // Given out of id order, with one copy already past its deadline
        // (an instant before the index existed) and one servable.
        let later = Instant::now() + Duration::from_secs(3600);
        index.track(&[
            (s[2].clone(), Some(later)),
            (s[0].clone(), Some(before)),
            (s[1].clone(), None),
        ]);
        let r = index.readiness(5);
        assert_eq!((r.total, r.unready), (3, 2));
        assert_eq!(
            r.shown,
            ["doc0: not fetched yet", "doc1: not fetched yet"],
            "named in id order, the passed deadline applied"
        );
        index.stored(&s[1], later);
        assert_eq!(counts(&index), (3, 1, 0));
        // Dropping the first keeps the others found by id.
        index.track(&[(s[1].clone(), None), (s[2].clone(), None)]);
        assert_eq!(counts(&index), (2, 0, 0));
        index.dropped(&s[2]);
        assert_eq!(index.readiness(5).shown, ["doc2: not fetched yet"]);
    }

    #[test]
    fn without_a_cache_a_document_is_ready_until_a_fetch_fails() {
        let s = slots(1);
        let index = ReadyIndex::new(true);
        index.track(&[(s[0].clone(), None)]);
        assert_eq!(counts(&index), (1, 0, 0));
        index.fetched_uncached(&s[0], false);
        assert_eq!(counts(&index), (1, 1, 0));
        index.fetched_uncached(&s[0], true);
        assert_eq!(counts(&index), (1, 0, 0));
    }
}
