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
//! is a map entry and a heap entry per document.
//!
//! The unready documents are kept in an ordered set (slot ids grow in
//! configuration order), so the answer names the first few at O(few).

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};
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

/// Until when a document can be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Servable {
    /// Nothing servable.
    No,
    /// A stored copy, until its hard deadline.
    Until(Instant),
    /// Always (`--no-cache` after a successful fetch: nothing is stored,
    /// every request fetches).
    Always,
}

#[derive(Debug)]
struct Tracked {
    slot: Arc<DocumentSlot>,
    servable: Servable,
    /// Added by a reload and not servable yet: counted apart.
    pending: bool,
    /// The time of this document's live heap entry, if any.
    queued: Option<Instant>,
}

#[derive(Debug, Default)]
struct Index {
    docs: HashMap<usize, Tracked>,
    deadlines: BinaryHeap<Reverse<(Instant, usize)>>,
    /// Not servable, not pending.
    unready: BTreeSet<usize>,
    /// Not servable, pending.
    pending: usize,
}

impl Index {
    /// Moves `id` to `to`, keeping the counts.
    fn set(&mut self, id: usize, to: Servable) {
        let Some(t) = self.docs.get_mut(&id) else {
            return;
        };
        let was = t.servable != Servable::No;
        let is = to != Servable::No;
        t.servable = to;
        if let Servable::Until(at) = to {
            if t.queued.is_none_or(|q| at < q) {
                t.queued = Some(at);
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
        while let Some(Reverse((at, id))) = self.deadlines.peek().copied() {
            if at > now {
                return;
            }
            self.deadlines.pop();
            let Some(t) = self.docs.get_mut(&id) else {
                continue;
            };
            if t.queued != Some(at) {
                continue;
            }
            t.queued = None;
            match t.servable {
                Servable::Until(until) if until <= now => self.set(id, Servable::No),
                Servable::Until(until) => {
                    t.queued = Some(until);
                    self.deadlines.push(Reverse((until, id)));
                }
                _ => {}
            }
        }
    }

    fn track(&mut self, slot: &Arc<DocumentSlot>, servable: Servable) {
        let pending = slot.pending(false);
        self.docs.insert(
            slot.id,
            Tracked {
                slot: slot.clone(),
                servable: Servable::No,
                pending,
                queued: None,
            },
        );
        if pending {
            self.pending += 1;
        } else {
            self.unready.insert(slot.id);
        }
        self.set(slot.id, servable);
    }

    fn untrack(&mut self, id: usize) {
        self.set(id, Servable::No);
        if let Some(t) = self.docs.remove(&id) {
            if t.pending {
                self.pending -= 1;
            }
        }
        self.unready.remove(&id);
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
        let gone: Vec<usize> = index
            .docs
            .keys()
            .copied()
            .filter(|id| !keep.contains(id))
            .collect();
        for id in gone {
            index.untrack(id);
        }
        for (slot, stored) in slots {
            if index.docs.contains_key(&slot.id) {
                continue;
            }
            let servable = match (self.bypass, stored) {
                (true, _) => Servable::Always,
                (false, Some(at)) => Servable::Until(*at),
                (false, None) => Servable::No,
            };
            index.track(slot, servable);
        }
    }

    /// A copy of `slot`'s document was stored, servable until `deadline`.
    pub fn stored(&self, slot: &DocumentSlot, deadline: Instant) {
        self.index().set(slot.id, Servable::Until(deadline));
    }

    /// `slot`'s stored copy was dropped.
    pub fn dropped(&self, slot: &DocumentSlot) {
        self.index().set(slot.id, Servable::No);
    }

    /// `--no-cache`: a fetch of `slot` succeeded (`ok`) or failed.
    pub fn fetched_uncached(&self, slot: &DocumentSlot, ok: bool) {
        let to = if ok { Servable::Always } else { Servable::No };
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
            .filter_map(|id| index.docs.get(id))
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
