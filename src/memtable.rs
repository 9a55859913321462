//! The memtable: recent writes, ordered by internal key, until a flush turns them into an L0
//! file.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::{Arc, RwLock};

use crate::error::Result;
use crate::iter::InternalIterator;
use crate::key::{self, ValueType};

/// Per-entry bookkeeping charged against the write buffer, on top of key and value bytes
/// (tree node share, allocation headers); keeps the flush trigger honest for tiny entries.
const ENTRY_OVERHEAD_BYTES: usize = 48;
/// Entries copied out per lock acquisition while iterating.
const ITER_CHUNK_ENTRIES: usize = 128;

/// An internal key ordered by [`key::compare_internal`].
#[derive(Clone, Debug, PartialEq, Eq)]
struct IKey(Box<[u8]>);

impl Ord for IKey {
    fn cmp(&self, other: &Self) -> Ordering {
        key::compare_internal(&self.0, &other.0)
    }
}

impl PartialOrd for IKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// What a memtable knows about a user key at a snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// The newest visible version is a value.
    Found(Vec<u8>),
    /// The newest visible version is a deletion.
    Deleted,
    /// No visible version here; look further down.
    Absent,
}

/// A sorted in-memory table of internal keys. Writers are serialised by the engine; readers
/// share it through an `Arc` while it is flushed.
#[derive(Debug, Default)]
pub struct Memtable {
    map: RwLock<BTreeMap<IKey, Box<[u8]>>>,
    bytes: AtomicUsize,
}

impl Memtable {
    /// An empty memtable.
    pub fn new() -> Self {
        Memtable::default()
    }

    /// Inserts one version. The engine hands out each sequence number once, so a repeat is a
    /// broken invariant.
    pub fn add(&self, sequence: u64, t: ValueType, user_key: &[u8], value: &[u8]) {
        assert!(
            self.try_add(sequence, t, user_key, value),
            "sequence {sequence} inserted twice"
        );
    }

    /// Inserts one version unless an entry with the same internal key exists (recovery uses
    /// this to report a damaged WAL instead of panicking).
    pub fn try_add(&self, sequence: u64, t: ValueType, user_key: &[u8], value: &[u8]) -> bool {
        let ikey = IKey(key::internal_key(user_key, sequence, t).into_boxed_slice());
        let charge = ikey.0.len() + value.len() + ENTRY_OVERHEAD_BYTES;
        let mut map = self.map.write().expect("memtable lock");
        // One search, not a lookup and then an insert.
        match map.entry(ikey) {
            std::collections::btree_map::Entry::Occupied(_) => return false,
            std::collections::btree_map::Entry::Vacant(slot) => {
                slot.insert(value.into());
            }
        }
        drop(map);
        self.bytes.fetch_add(charge, AtomicOrdering::Relaxed);
        true
    }

    /// Approximate memory charged, in bytes.
    pub fn approximate_bytes(&self) -> usize {
        self.bytes.load(AtomicOrdering::Relaxed)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.map.read().expect("memtable lock").len()
    }

    /// Whether it holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The newest version of `user_key` with sequence `<= snapshot`.
    pub fn get(&self, user_key: &[u8], snapshot: u64) -> Lookup {
        let seek = IKey(key::internal_key(user_key, snapshot, key::VALUE_TYPE_FOR_SEEK).into());
        let map = self.map.read().expect("memtable lock");
        match map.range(seek..).next() {
            Some((k, v)) if key::user_key(&k.0) == user_key => {
                match key::parse_internal_key(&k.0).map(|p| p.value_type) {
                    Some(ValueType::Value) => Lookup::Found(v.to_vec()),
                    Some(ValueType::Deletion) => Lookup::Deleted,
                    None => unreachable!("memtable keys are built valid"),
                }
            }
            _ => Lookup::Absent,
        }
    }

    /// An iterator over a shared memtable.
    /// Calls `f` on every entry in order, stopping at its first error. Holds the read lock
    /// throughout (readers go on, an `add` waits), and copies nothing: for a memtable no
    /// writer adds to any more, such as one being flushed.
    pub fn for_each(&self, mut f: impl FnMut(&[u8], &[u8]) -> Result<()>) -> Result<()> {
        let map = self.map.read().expect("memtable lock");
        for (k, v) in map.iter() {
            f(&k.0, v)?;
        }
        Ok(())
    }

    pub fn iter(self: &Arc<Self>) -> MemIter {
        MemIter {
            mem: Arc::clone(self),
            chunk: Vec::new(),
            pos: 0,
            exhausted: true,
        }
    }
}

/// An internal key and its value, copied out of the memtable.
type Entry = (Box<[u8]>, Box<[u8]>);

/// Iterator over a memtable. It copies entries out in small chunks, so it holds the lock only
/// briefly and stays valid while writers add entries.
#[derive(Debug)]
pub struct MemIter {
    mem: Arc<Memtable>,
    chunk: Vec<Entry>,
    pos: usize,
    /// No entries after the current chunk.
    exhausted: bool,
}

impl MemIter {
    fn fill(&mut self, from: Bound<&IKey>) {
        let map = self.mem.map.read().expect("memtable lock");
        self.chunk.clear();
        self.pos = 0;
        self.chunk.extend(
            map.range((from, Bound::Unbounded))
                .take(ITER_CHUNK_ENTRIES + 1)
                .map(|(k, v)| (k.0.clone(), v.clone())),
        );
        self.exhausted = self.chunk.len() <= ITER_CHUNK_ENTRIES;
        self.chunk.truncate(ITER_CHUNK_ENTRIES);
    }
}

impl InternalIterator for MemIter {
    fn valid(&self) -> bool {
        self.pos < self.chunk.len()
    }

    fn seek_to_first(&mut self) {
        self.fill(Bound::Unbounded);
    }

    fn seek(&mut self, target: &[u8]) {
        let t = IKey(target.into());
        self.fill(Bound::Included(&t));
    }

    fn next(&mut self) {
        assert!(self.valid(), "next on an invalid iterator");
        self.pos += 1;
        if self.pos == self.chunk.len() && !self.exhausted {
            let last = IKey(self.chunk[self.pos - 1].0.clone());
            self.fill(Bound::Excluded(&last));
        }
    }

    fn key(&self) -> &[u8] {
        &self.chunk[self.pos].0
    }

    fn value(&self) -> &[u8] {
        &self.chunk[self.pos].1
    }

    fn status(&self) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_sees_the_newest_visible_version() {
        let m = Memtable::new();
        m.add(1, ValueType::Value, b"a", b"a1");
        m.add(5, ValueType::Deletion, b"a", b"");
        m.add(7, ValueType::Value, b"a", b"a7");
        m.add(2, ValueType::Value, b"b", b"b2");
        assert_eq!(m.get(b"a", 0), Lookup::Absent);
        assert_eq!(m.get(b"a", 1), Lookup::Found(b"a1".to_vec()));
        assert_eq!(m.get(b"a", 6), Lookup::Deleted);
        assert_eq!(m.get(b"a", 100), Lookup::Found(b"a7".to_vec()));
        assert_eq!(m.get(b"ab", 100), Lookup::Absent);
        assert_eq!(m.get(b"b", 100), Lookup::Found(b"b2".to_vec()));
    }

    #[test]
    fn for_each_visits_every_entry_in_order_and_stops_at_an_error() {
        let m = Memtable::new();
        m.add(3, ValueType::Value, b"b", b"b3");
        m.add(1, ValueType::Value, b"a", b"a1");
        m.add(2, ValueType::Deletion, b"a", b"");
        let mut seen = Vec::new();
        m.for_each(|k, v| {
            seen.push((k.to_vec(), v.to_vec()));
            Ok(())
        })
        .unwrap();
        assert_eq!(
            seen,
            vec![
                (key::internal_key(b"a", 2, ValueType::Deletion), Vec::new()),
                (key::internal_key(b"a", 1, ValueType::Value), b"a1".to_vec()),
                (key::internal_key(b"b", 3, ValueType::Value), b"b3".to_vec()),
            ]
        );
        let mut calls = 0;
        let err = m.for_each(|_, _| {
            calls += 1;
            Err(crate::error::Error::Unavailable("stop".into()))
        });
        assert!(err.is_err());
        assert_eq!(calls, 1, "the first error ends the walk");
    }

    #[test]
    fn iteration_crosses_chunks_in_order() {
        let m = Arc::new(Memtable::new());
        let n = ITER_CHUNK_ENTRIES * 3 + 7;
        for i in 0..n {
            m.add(
                i as u64 + 1,
                ValueType::Value,
                format!("k{i:05}").as_bytes(),
                b"v",
            );
        }
        let mut it = m.iter();
        it.seek_to_first();
        let mut seen = 0;
        while it.valid() {
            assert_eq!(key::user_key(it.key()), format!("k{seen:05}").as_bytes());
            seen += 1;
            it.next();
        }
        assert_eq!(seen, n);
        it.seek(&key::internal_key(
            b"k00200",
            u64::from(u32::MAX),
            ValueType::Value,
        ));
        assert_eq!(key::user_key(it.key()), b"k00200");
    }
}
