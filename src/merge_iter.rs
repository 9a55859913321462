//! Iterators that combine others: a k-way merge, and the concatenation of a level's files.

use std::cmp::Ordering;
use std::sync::Arc;

use resystance_traces::Kernel;

use crate::error::Result;
use crate::iter::InternalIterator;
use crate::key::{self, compare_internal};
use crate::sst::{Table, TableIter};
use crate::table_cache::TableCache;
use crate::version::FileMeta;

/// K-way merge of child iterators by internal key: a binary min-heap of child indices, ordered
/// through the children's own current keys, so a step copies no key.
pub struct MergingIterator {
    children: Vec<Box<dyn InternalIterator>>,
    /// Indices of the valid children; `heap[0]` holds the smallest key.
    heap: Vec<usize>,
    error: Option<crate::Error>,
}

impl std::fmt::Debug for MergingIterator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MergingIterator")
            .field("children", &self.children.len())
            .finish_non_exhaustive()
    }
}

impl MergingIterator {
    /// A merge of `children` (unpositioned; seek first).
    pub fn new(children: Vec<Box<dyn InternalIterator>>) -> Self {
        MergingIterator {
            heap: Vec::with_capacity(children.len()),
            children,
            error: None,
        }
    }

    /// Whether child `a` sorts before child `b`; ties (impossible with unique sequence
    /// numbers) go to the lower index, for determinism.
    fn before(&self, a: usize, b: usize) -> bool {
        match compare_internal(self.children[a].key(), self.children[b].key()) {
            Ordering::Less => true,
            Ordering::Greater => false,
            Ordering::Equal => a < b,
        }
    }

    fn sift_up(&mut self, mut pos: usize) {
        while pos > 0 {
            let parent = (pos - 1) / 2;
            if !self.before(self.heap[pos], self.heap[parent]) {
                break;
            }
            self.heap.swap(pos, parent);
            pos = parent;
        }
    }

    fn sift_down(&mut self, mut pos: usize) {
        loop {
            let left = 2 * pos + 1;
            if left >= self.heap.len() {
                break;
            }
            let right = left + 1;
            let smaller =
                if right < self.heap.len() && self.before(self.heap[right], self.heap[left]) {
                    right
                } else {
                    left
                };
            if !self.before(self.heap[smaller], self.heap[pos]) {
                break;
            }
            self.heap.swap(pos, smaller);
            pos = smaller;
        }
    }

    /// Records the error of an exhausted child, if it ended by one.
    fn note_error(&mut self, child: usize) {
        if let Err(e) = self.children[child].status() {
            self.error.get_or_insert(e);
        }
    }

    fn rebuild(&mut self) {
        self.heap.clear();
        for i in 0..self.children.len() {
            if self.children[i].valid() {
                self.heap.push(i);
                self.sift_up(self.heap.len() - 1);
            } else {
                self.note_error(i);
            }
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
        let top = *self.heap.first().expect("next on an invalid iterator");
        self.children[top].next();
        if !self.children[top].valid() {
            self.note_error(top);
            let last = self.heap.pop().expect("heap holds top");
            if self.heap.is_empty() {
                return;
            }
            self.heap[0] = last;
        }
        self.sift_down(0);
    }

    fn key(&self) -> &[u8] {
        let top = *self.heap.first().expect("key on an invalid iterator");
        self.children[top].key()
    }

    fn value(&self) -> &[u8] {
        let top = *self.heap.first().expect("value on an invalid iterator");
        self.children[top].value()
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
