//! Iterators that combine others: a k-way merge, and the concatenation of a level's files.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::Arc;

use resystance_traces::Kernel;

use crate::error::Result;
use crate::iter::InternalIterator;
use crate::key::{self, compare_internal};
use crate::sst::{Table, TableIter};
use crate::table_cache::TableCache;
use crate::version::FileMeta;

/// K-way merge of child iterators by internal key (a min-heap of child positions).
pub struct MergingIterator {
    children: Vec<Box<dyn InternalIterator>>,
    heap: BinaryHeap<HeapEntry>,
    error: Option<crate::Error>,
}

impl std::fmt::Debug for MergingIterator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MergingIterator")
            .field("children", &self.children.len())
            .finish_non_exhaustive()
    }
}

/// A child index ordered by its current key, smallest first.
#[derive(Debug)]
struct HeapEntry {
    key: Vec<u8>,
    child: usize,
}

impl Ord for HeapEntry {
    fn cmp(&self, other: &Self) -> Ordering {
        // BinaryHeap is a max-heap: reverse for the smallest key on top; ties (impossible with
        // unique sequence numbers) fall back to the child index for determinism.
        compare_internal(&other.key, &self.key).then_with(|| other.child.cmp(&self.child))
    }
}
impl PartialOrd for HeapEntry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl PartialEq for HeapEntry {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for HeapEntry {}

impl MergingIterator {
    /// A merge of `children` (unpositioned; seek first).
    pub fn new(children: Vec<Box<dyn InternalIterator>>) -> Self {
        MergingIterator {
            heap: BinaryHeap::with_capacity(children.len()),
            children,
            error: None,
        }
    }

    fn push_if_valid(&mut self, child: usize) {
        let it = &self.children[child];
        if it.valid() {
            self.heap.push(HeapEntry {
                key: it.key().to_vec(),
                child,
            });
        } else if let Err(e) = it.status() {
            self.error.get_or_insert(e);
        }
    }

    fn rebuild(&mut self) {
        self.heap.clear();
        for i in 0..self.children.len() {
            self.push_if_valid(i);
        }
    }
}

impl InternalIterator for MergingIterator {
    fn valid(&self) -> bool {
        self.error.is_none() && !self.heap.is_empty()
    }

    fn seek_to_first(&mut self) {
        self.error = None;
        for c in &mut self.children {
            c.seek_to_first();
        }
        self.rebuild();
    }

    fn seek(&mut self, target: &[u8]) {
        self.error = None;
        for c in &mut self.children {
            c.seek(target);
        }
        self.rebuild();
    }

    fn next(&mut self) {
        let top = self.heap.pop().expect("next on an invalid iterator");
        self.children[top.child].next();
        self.push_if_valid(top.child);
    }

    fn key(&self) -> &[u8] {
        let top = self.heap.peek().expect("key on an invalid iterator");
        self.children[top.child].key()
    }

    fn value(&self) -> &[u8] {
        let top = self.heap.peek().expect("value on an invalid iterator");
        self.children[top.child].value()
    }

    fn status(&self) -> Result<()> {
        match &self.error {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }
}

/// The files of one sorted level (L1+) as one iterator: opens each file when reached.
pub struct LevelIterator {
    files: Vec<Arc<FileMeta>>,
    tables: Arc<TableCache>,
    kernel: Arc<dyn Kernel>,
    index: usize,
    current: Option<TableIter>,
    error: Option<crate::Error>,
}

impl std::fmt::Debug for LevelIterator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LevelIterator")
            .field("files", &self.files.len())
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

impl LevelIterator {
    /// Iterates `files` (sorted, non-overlapping), reading through `kernel`.
    pub fn new(
        files: Vec<Arc<FileMeta>>,
        tables: Arc<TableCache>,
        kernel: Arc<dyn Kernel>,
    ) -> Self {
        LevelIterator {
            files,
            tables,
            kernel,
            index: 0,
            current: None,
            error: None,
        }
    }

    fn open(&mut self, index: usize) -> bool {
        self.index = index;
        self.current = None;
        let Some(meta) = self.files.get(index) else {
            return false;
        };
        match self.tables.get(meta.number) {
            Ok(table) => {
                self.current = Some(Table::iter(&table, Arc::clone(&self.kernel)));
                true
            }
            Err(e) => {
                self.error = Some(e);
                false
            }
        }
    }

    /// Moves past exhausted files until positioned on an entry or at the end.
    fn skip_empty_forward(&mut self) {
        loop {
            match &self.current {
                Some(it) if it.valid() => return,
                Some(it) => {
                    if let Err(e) = it.status() {
                        self.error = Some(e);
                        self.current = None;
                        return;
                    }
                }
                None => return,
            }
            if !self.open(self.index + 1) {
                return;
            }
            if let Some(it) = &mut self.current {
                it.seek_to_first();
            }
        }
    }
}

impl InternalIterator for LevelIterator {
    fn valid(&self) -> bool {
        self.error.is_none() && self.current.as_ref().is_some_and(InternalIterator::valid)
    }

    fn seek_to_first(&mut self) {
        self.error = None;
        if self.open(0) {
            if let Some(it) = &mut self.current {
                it.seek_to_first();
            }
            self.skip_empty_forward();
        }
    }

    fn seek(&mut self, target: &[u8]) {
        self.error = None;
        // The first file whose largest key is >= target.
        let idx = self
            .files
            .partition_point(|f| compare_internal(&f.largest, target) == Ordering::Less);
        if self.open(idx) {
            if let Some(it) = &mut self.current {
                it.seek(target);
            }
            self.skip_empty_forward();
        }
    }

    fn next(&mut self) {
        self.current
            .as_mut()
            .expect("next on an invalid iterator")
            .next();
        self.skip_empty_forward();
    }

    fn key(&self) -> &[u8] {
        self.current.as_ref().expect("valid").key()
    }

    fn value(&self) -> &[u8] {
        self.current.as_ref().expect("valid").value()
    }

    fn status(&self) -> Result<()> {
        match &self.error {
            Some(e) => Err(e.clone()),
            None => self
                .current
                .as_ref()
                .map_or(Ok(()), InternalIterator::status),
        }
    }
}

/// Whether `user_key` lies within a file's key range.
pub fn file_covers(f: &FileMeta, user_key: &[u8]) -> bool {
    key::user_key(&f.smallest) <= user_key && user_key <= key::user_key(&f.largest)
}
