//! The in-memory index of one template's disk tier: which tenants have a
//! file in the state directory, in least-recently-used order, and how
//! large their files are. Names and sizes only, never a body: the bodies
//! stay on disk, so the index of 100,000 tenants costs a few MiB
//! (measured in benches/README.md), not the documents themselves.
//!
//! Why hand-written rather than an LRU crate: an entry here is the tenant's
//! name, its file size and two `u32` links in one slab (`Vec`), plus one
//! `u32` slot in a `hashbrown::HashTable` that finds it by name (the name
//! is stored once, in the slab). The `lru` or `hashlink` crates keep a heap
//! node with two pointers and the key per entry, about twice the memory,
//! for the same O(1) touch, insert and eviction.
//!
//! Pure data structure: no I/O, no lock (the template's disk tier holds it
//! behind a mutex).

use std::hash::{BuildHasher, RandomState};

use hashbrown::HashTable;

/// No node: the end of the list.
const NIL: u32 = u32::MAX;

#[derive(Debug)]
struct Node {
    name: Box<str>,
    /// Towards the most recently used end.
    newer: u32,
    /// Towards the least recently used end.
    older: u32,
    /// The file's size in bytes (saturated at 4 GiB).
    size: u32,
}

/// Tenants with a file, least recently used first out.
#[derive(Debug)]
pub struct DiskIndex {
    table: HashTable<u32>,
    nodes: Vec<Node>,
    /// Slots of removed nodes, reused first.
    free: Vec<u32>,
    /// Most recently used.
    newest: u32,
    /// Least recently used: the next to go.
    oldest: u32,
    len: usize,
    bytes: u64,
    hasher: RandomState,
}

impl Default for DiskIndex {
    fn default() -> Self {
        Self::new()
    }
}

impl DiskIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self {
            table: HashTable::new(),
            nodes: Vec::new(),
            free: Vec::new(),
            newest: NIL,
            oldest: NIL,
            len: 0,
            bytes: 0,
            hasher: RandomState::new(),
        }
    }

    /// Tenants indexed.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no tenant is indexed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Their files' bytes.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    fn find(&self, name: &str) -> Option<u32> {
        let hash = self.hasher.hash_one(name);
        let nodes = &self.nodes;
        self.table
            .find(hash, |&i| &*nodes[i as usize].name == name)
            .copied()
    }

    /// Whether `name` has a file.
    pub fn contains(&self, name: &str) -> bool {
        self.find(name).is_some()
    }

    fn unlink(&mut self, i: u32) {
        let (newer, older) = {
            let n = &self.nodes[i as usize];
            (n.newer, n.older)
        };
        match newer {
            NIL => self.newest = older,
            j => self.nodes[j as usize].older = older,
        }
        match older {
            NIL => self.oldest = newer,
            j => self.nodes[j as usize].newer = newer,
        }
    }

    fn link_newest(&mut self, i: u32) {
        let old_newest = self.newest;
        {
            let n = &mut self.nodes[i as usize];
            n.newer = NIL;
            n.older = old_newest;
        }
        match old_newest {
            NIL => self.oldest = i,
            j => self.nodes[j as usize].newer = i,
        }
        self.newest = i;
    }

    /// Marks `name` as just used (inserting it if it is new), with its
    /// file's `size` when known (`None` keeps the size indexed).
    pub fn touch(&mut self, name: &str, size: Option<u64>) {
        let size32 = size.map(|s| u32::try_from(s).unwrap_or(u32::MAX));
        if let Some(i) = self.find(name) {
            if let Some(size) = size32 {
                let node = &mut self.nodes[i as usize];
                self.bytes = self.bytes - u64::from(node.size) + u64::from(size);
                node.size = size;
            }
            if self.newest != i {
                self.unlink(i);
                self.link_newest(i);
            }
            return;
        }
        let size = size32.unwrap_or(0);
        let node = Node {
            name: name.into(),
            newer: NIL,
            older: NIL,
            size,
        };
        let i = match self.free.pop() {
            Some(i) => {
                self.nodes[i as usize] = node;
                i
            }
            None => {
                // Slots are u32: past u32::MAX - 1 tenants (hundreds of
                // GiB of index) a new one is not indexed (its file stays
                // until a removal by name).
                let Some(i) = u32::try_from(self.nodes.len()).ok().filter(|i| *i < NIL) else {
                    return;
                };
                self.nodes.push(node);
                i
            }
        };
        let hash = self.hasher.hash_one(name);
        let (nodes, hasher) = (&self.nodes, &self.hasher);
        self.table
            .insert_unique(hash, i, |&j| hasher.hash_one(&*nodes[j as usize].name));
        self.link_newest(i);
        self.len += 1;
        self.bytes += u64::from(size);
    }

    /// Forgets `name`; whether it was indexed.
    pub fn remove(&mut self, name: &str) -> bool {
        let hash = self.hasher.hash_one(name);
        let nodes = &self.nodes;
        let Ok(entry) = self
            .table
            .find_entry(hash, |&i| &*nodes[i as usize].name == name)
        else {
            return false;
        };
        let (i, _) = entry.remove();
        self.release(i);
        true
    }

    /// Drops node `i` (already out of the table).
    fn release(&mut self, i: u32) -> Box<str> {
        self.unlink(i);
        let node = &mut self.nodes[i as usize];
        self.bytes -= u64::from(node.size);
        node.size = 0;
        self.len -= 1;
        self.free.push(i);
        std::mem::take(&mut node.name)
    }

    /// Removes least recently used tenants until at most `bound` are
    /// left, and returns them, oldest first. A tenant `keep` says is in
    /// use (held in memory) is moved to the most recently used end
    /// instead; each indexed tenant is looked at once at most, so with
    /// every tenant kept this returns without removing any.
    pub fn evict_over(&mut self, bound: usize, keep: impl Fn(&str) -> bool) -> Vec<Box<str>> {
        let mut gone = Vec::new();
        let mut looked = 0;
        while self.len > bound && looked < self.len + gone.len() {
            looked += 1;
            let i = self.oldest;
            if i == NIL {
                break;
            }
            if keep(&self.nodes[i as usize].name) {
                self.unlink(i);
                self.link_newest(i);
                continue;
            }
            let hash = self.hasher.hash_one(&*self.nodes[i as usize].name);
            if let Ok(entry) = self.table.find_entry(hash, |&j| j == i) {
                entry.remove();
            }
            gone.push(self.release(i));
        }
        gone
    }

    /// Removes every tenant and returns their names.
    pub fn drain(&mut self) -> Vec<Box<str>> {
        let names = self.names_oldest_first().map(Box::from).collect();
        *self = Self::new();
        names
    }

    /// The tenants, most recently used first.
    pub fn names_newest_first(&self) -> impl Iterator<Item = &str> {
        let mut i = self.newest;
        std::iter::from_fn(move || {
            if i == NIL {
                return None;
            }
            let node = &self.nodes[i as usize];
            i = node.older;
            Some(&*node.name)
        })
    }

    /// The tenants, least recently used first.
    pub fn names_oldest_first(&self) -> impl Iterator<Item = &str> {
        let mut i = self.oldest;
        std::iter::from_fn(move || {
            if i == NIL {
                return None;
            }
            let node = &self.nodes[i as usize];
            i = node.newer;
            Some(&*node.name)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(index: &DiskIndex) -> Vec<&str> {
        index.names_oldest_first().collect()
    }

    #[test]
    fn touch_orders_by_last_use_and_evicts_the_oldest() {
        let mut index = DiskIndex::new();
        for name in ["a", "b", "c"] {
            index.touch(name, Some(10));
        }
        assert_eq!(order(&index), ["a", "b", "c"]);
        index.touch("a", None);
        assert_eq!(order(&index), ["b", "c", "a"]);
        assert_eq!(
            index.names_newest_first().collect::<Vec<_>>(),
            ["a", "c", "b"]
        );
        assert_eq!(index.bytes(), 30);
        index.touch("d", Some(5));
        let gone = index.evict_over(3, |_| false);
        assert_eq!(gone, vec![Box::from("b")]);
        assert_eq!(order(&index), ["c", "a", "d"]);
        assert_eq!((index.len(), index.bytes()), (3, 25));
        assert!(!index.contains("b") && index.contains("d"));
    }

    #[test]
    fn tenants_in_use_are_skipped_and_become_newest() {
        let mut index = DiskIndex::new();
        for name in ["a", "b", "c", "d"] {
            index.touch(name, Some(1));
        }
        let gone = index.evict_over(2, |n| n == "a");
        assert_eq!(gone, vec![Box::from("b"), Box::from("c")]);
        assert_eq!(order(&index), ["d", "a"]);
        // Everything in use: nothing removed, no endless loop.
        let gone = index.evict_over(0, |_| true);
        assert!(gone.is_empty());
        assert_eq!(index.len(), 2);
    }

    #[test]
    fn removed_slots_are_reused_and_sizes_follow_updates() {
        let mut index = DiskIndex::new();
        index.touch("a", Some(100));
        index.touch("b", Some(200));
        assert!(index.remove("a"));
        assert!(!index.remove("a"));
        index.touch("c", Some(7));
        assert_eq!(index.nodes.len(), 2, "a's slot reused");
        index.touch("b", Some(50));
        assert_eq!(index.bytes(), 57);
        assert_eq!(order(&index), ["c", "b"]);
        let drained = index.drain();
        assert_eq!(drained, vec![Box::from("c"), Box::from("b")]);
        assert!(index.is_empty() && index.bytes() == 0);
    }

    #[test]
    fn a_large_index_stays_consistent() {
        let mut index = DiskIndex::new();
        for i in 0..10_000 {
            index.touch(&format!("t{i}"), Some(1));
        }
        for i in (0..10_000).step_by(3) {
            index.touch(&format!("t{i}"), None);
        }
        let gone = index.evict_over(5_000, |_| false);
        assert_eq!(gone.len(), 5_000);
        // The touched ones (every third) were used last: none of them went.
        assert!(gone.iter().all(|n| n[1..].parse::<u32>().unwrap() % 3 != 0));
        assert_eq!(index.names_oldest_first().count(), 5_000);
    }
}
