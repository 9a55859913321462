//! Reads a table: footer, metaindex, properties and index at open (kept in memory), data blocks
//! on demand with exactly one `pread` each.

use std::cmp::Ordering;
use std::path::Path;
use std::sync::Arc;

use resystance_traces::{Kernel, OpenFlags};

use crate::coding::{decode_varint64, Decoder};
use crate::error::{Error, Result};
use crate::file::OpenFile;
use crate::iter::InternalIterator;
use crate::key::{user_key, TRAILER_LEN};

use super::block::{Block, BlockIter, BlockKind};
use super::format::{verify_block, BlockHandle, Footer, BLOCK_TRAILER_LEN, FOOTER_LEN};
use super::properties::{
    TableProperties, BYTEWISE_COMPARATOR, INDEX_TYPE_BINARY_SEARCH, PROPERTIES_BLOCK_NAME,
};

/// An open table. Shareable across threads; reads go through the kernel each call names.
#[derive(Debug)]
pub struct Table {
    file: OpenFile,
    path: Arc<Path>,
    file_size: u64,
    footer: Footer,
    properties: TableProperties,
    /// Index keys (internal or user keys, see `index_kind`), one per data block.
    index_keys: Vec<Vec<u8>>,
    handles: Vec<BlockHandle>,
    index_kind: BlockKind,
}

impl Table {
    /// Opens `path` and reads its footer, metaindex, properties and index (checksums verified):
    /// one `fstat`, one `pread` for the footer and one for the metadata blocks before it.
    /// (Reading a larger guess of the tail at once would save the second `pread` but pull data
    /// blocks into the page cache at open, changing what later reads cost.)
    pub fn open(kernel: &Arc<dyn Kernel>, path: &Path) -> Result<Table> {
        let file = OpenFile::open(kernel, path, OpenFlags::READ)?;
        let file_size = file.size()?;
        let Some(offset) = file_size.checked_sub(FOOTER_LEN as u64) else {
            return Err(Error::corruption(
                path,
                0,
                format!("{file_size}-byte file is shorter than the {FOOTER_LEN}-byte footer"),
            ));
        };
        let bytes = file.read_exact_at(kernel.as_ref(), offset, FOOTER_LEN)?;
        Table::from_tail(
            kernel.as_ref(),
            file,
            file_size,
            TableTail { offset, bytes },
        )
    }

    /// A table over `file` (open for reading, `file_size` bytes long) from `tail`, the file's
    /// last bytes up to its end: footer, metaindex, properties and index are decoded and
    /// checked exactly as [`Table::open`] does. Metadata blocks before `tail` are read with one
    /// `pread` through `kernel`; a table writer's own tail ([`TableTail`] from
    /// `TableBuilder::finish_keeping_tail`) holds them all, so it costs no system call.
    pub fn from_tail(
        kernel: &dyn Kernel,
        file: OpenFile,
        file_size: u64,
        mut tail: TableTail,
    ) -> Result<Table> {
        let path = file.path().to_path_buf();
        let shared_path: Arc<Path> = Arc::from(path.as_path());
        let path = path.as_path();
        assert_eq!(
            tail.offset + tail.bytes.len() as u64,
            file_size,
            "a table's tail ends where the file does"
        );
        let Some(footer_offset) = file_size.checked_sub(FOOTER_LEN as u64) else {
            return Err(Error::corruption(
                path,
                0,
                format!("{file_size}-byte file is shorter than the {FOOTER_LEN}-byte footer"),
            ));
        };
        if tail.offset > footer_offset {
            return Err(Error::corruption(
                path,
                tail.offset,
                "the tail handed over does not hold the footer",
            ));
        }
        let footer_at = usize::try_from(footer_offset - tail.offset).expect("inside the tail");
        let footer = Footer::decode(path, footer_offset, &tail.bytes[footer_at..])?;

        for (what, h) in [
            ("metaindex", footer.metaindex_handle),
            ("index", footer.index_handle),
        ] {
            if h.end_with_trailer().is_none_or(|end| end > footer_offset) {
                return Err(Error::corruption(
                    path,
                    footer_offset,
                    format!(
                        "{what} handle {}+{} runs past the footer at {footer_offset}",
                        h.offset, h.size
                    ),
                ));
            }
        }
        // The metadata blocks sit together before the footer: what the tail lacks of them
        // comes in one more read.
        let tail_start = footer
            .metaindex_handle
            .offset
            .min(footer.index_handle.offset);
        if tail_start < tail.offset {
            let mut bytes = file.read_exact_at(
                kernel,
                tail_start,
                usize::try_from(tail.offset - tail_start).expect("tail fits memory"),
            )?;
            bytes.extend_from_slice(&tail.bytes);
            tail = TableTail {
                offset: tail_start,
                bytes,
            };
        }
        let mut table = Table {
            file,
            path: shared_path,
            file_size,
            footer,
            properties: TableProperties::default(),
            index_keys: Vec::new(),
            handles: Vec::new(),
            index_kind: BlockKind::Index {
                key_is_user_key: false,
                value_is_delta_encoded: false,
            },
        };

        let metaindex = table.tail_block(kernel, &tail, footer.metaindex_handle)?;
        let mut it = BlockIter::new(metaindex, BlockKind::Meta);
        it.seek(PROPERTIES_BLOCK_NAME.as_bytes());
        let properties_handle = if it.valid() && it.key() == PROPERTIES_BLOCK_NAME.as_bytes() {
            let mut d = Decoder::new(it.value());
            let h = BlockHandle::decode_from(&mut d);
            match h {
                Some(h) if d.is_empty() => Some(h),
                _ => {
                    return Err(table.corrupt(
                        it.block().file_offset() + it.entry_offset() as u64,
                        "bad properties handle in metaindex".into(),
                    ))
                }
            }
        } else {
            None
        };
        it.status()?;
        if let Some(h) = properties_handle {
            // Missing properties are tolerated, like RocksDB: every default is what we need.
            let block = table.tail_block(kernel, &tail, h)?;
            let offset = block.file_offset();
            let entries = BlockIter::new(block, BlockKind::Meta).into_entries()?;
            table.properties = TableProperties::decode(path, offset, entries)?;
        }
        table.check_properties()?;
        table.index_kind = BlockKind::Index {
            key_is_user_key: table.properties.index_key_is_user_key,
            value_is_delta_encoded: table.properties.index_value_is_delta_encoded,
        };
        let index = table.tail_block(kernel, &tail, footer.index_handle)?;
        table.decode_index(index, footer_offset)?;
        Ok(table)
    }

    /// The path the table was opened with.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes in the file.
    pub fn file_size(&self) -> u64 {
        self.file_size
    }

    /// The decoded footer.
    pub fn footer(&self) -> &Footer {
        &self.footer
    }

    /// The decoded properties block.
    pub fn properties(&self) -> &TableProperties {
        &self.properties
    }

    /// Handles of the data blocks, in file order.
    pub fn data_block_handles(&self) -> &[BlockHandle] {
        &self.handles
    }

    /// The index key of data block `i`: an upper bound on its keys (an internal key, or a user
    /// key when the properties say so).
    pub fn index_key(&self, i: usize) -> &[u8] {
        &self.index_keys[i]
    }

    /// Whether [`Table::index_key`] returns user keys.
    pub fn index_key_is_user_key(&self) -> bool {
        !self.index_kind.internal_keys()
    }

    /// Reads `dst.len()` raw bytes at `offset` (data blocks with their trailers, unverified)
    /// with one `pread`: how compaction feeds blocks to the compaction program, which verifies
    /// them itself. The range must lie inside the file.
    pub fn read_raw(&self, kernel: &dyn Kernel, offset: u64, dst: &mut [u8]) -> Result<()> {
        if offset
            .checked_add(dst.len() as u64)
            .is_none_or(|end| end > self.file_size)
        {
            return Err(self.corrupt(
                offset,
                format!(
                    "{} bytes at {offset} run past the end of the file",
                    dst.len()
                ),
            ));
        }
        self.file.read_exact_into(kernel, offset, dst)
    }

    /// The open file's descriptor (for io_uring reads).
    pub fn fd(&self) -> resystance_traces::Fd {
        self.file.fd()
    }

    /// Reads one data block with exactly one `pread` of `handle.size + 5` bytes, verifies its
    /// checksum and compression type and checks its restart array.
    pub fn read_block(&self, kernel: &dyn Kernel, handle: BlockHandle) -> Result<Block> {
        if handle
            .end_with_trailer()
            .is_none_or(|end| end > self.file_size)
        {
            return Err(self.corrupt(
                handle.offset,
                format!(
                    "block {}+{} runs past the end of the file",
                    handle.offset, handle.size
                ),
            ));
        }
        let len = usize::try_from(handle.size).expect("block fits memory") + BLOCK_TRAILER_LEN;
        let mut raw = self.file.read_exact_at(kernel, handle.offset, len)?;
        verify_block(&self.path, handle.offset, &raw, self.footer.checksum)?;
        raw.truncate(len - BLOCK_TRAILER_LEN);
        Block::new(raw, Arc::clone(&self.path), handle.offset)
    }

    /// The first entry whose internal key is `>= lookup_ikey`, if its user key equals
    /// `lookup_ikey`'s: `(internal key, value)`. Reads at most one data block for tables whose
    /// index keys are tight (ours, RocksDB's).
    pub fn get(
        &self,
        kernel: &dyn Kernel,
        lookup_ikey: &[u8],
    ) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        assert!(lookup_ikey.len() >= TRAILER_LEN, "get: not an internal key");
        let lookup_uk = user_key(lookup_ikey);
        let mut i = self.index_partition(lookup_ikey);
        while i < self.handles.len() {
            let block = self.read_block(kernel, self.handles[i])?;
            let mut it = BlockIter::new(block, BlockKind::Data);
            it.seek(lookup_ikey);
            if it.valid() {
                if user_key(it.key()) == lookup_uk {
                    return Ok(Some((it.key().to_vec(), it.value().to_vec())));
                }
                return Ok(None);
            }
            it.status()?;
            // Nothing >= lookup in block i: the answer is block i+1's first entry, which can
            // only share lookup's user key if block i's separator does too (never for separators
            // RocksDB or this engine write).
            if self.index_user_key(i) != lookup_uk {
                return Ok(None);
            }
            i += 1;
        }
        Ok(None)
    }

    /// An iterator over all entries; every read goes through `kernel`.
    pub fn iter(self: &Arc<Self>, kernel: Arc<dyn Kernel>) -> TableIter {
        TableIter {
            table: Arc::clone(self),
            kernel,
            block_index: 0,
            block: None,
            error: None,
        }
    }

    /// First data block whose index key is `>= target` (an internal key); `len` if none.
    fn index_partition(&self, target: &[u8]) -> usize {
        if self.index_kind.internal_keys() {
            self.index_keys
                .partition_point(|k| crate::key::compare_internal(k, target) == Ordering::Less)
        } else {
            let uk = user_key(target);
            self.index_keys.partition_point(|k| k.as_slice() < uk)
        }
    }

    fn index_user_key(&self, i: usize) -> &[u8] {
        if self.index_kind.internal_keys() {
            user_key(&self.index_keys[i])
        } else {
            &self.index_keys[i]
        }
    }

    /// A metadata block from the tail read, or its own `pread` if it lies elsewhere.
    fn tail_block(
        &self,
        kernel: &dyn Kernel,
        tail: &TableTail,
        handle: BlockHandle,
    ) -> Result<Block> {
        let end = handle.end_with_trailer();
        let in_tail = handle.offset >= tail.offset
            && end.is_some_and(|e| e <= tail.offset + tail.bytes.len() as u64);
        if !in_tail {
            return self.read_block(kernel, handle);
        }
        let start = usize::try_from(handle.offset - tail.offset).expect("inside the tail");
        let len = usize::try_from(handle.size).expect("inside the tail") + BLOCK_TRAILER_LEN;
        let raw = &tail.bytes[start..start + len];
        let contents = verify_block(&self.path, handle.offset, raw, self.footer.checksum)?;
        Block::new(contents.to_vec(), Arc::clone(&self.path), handle.offset)
    }

    /// Rejects tables whose keys or index this reader would misunderstand.
    fn check_properties(&self) -> Result<()> {
        let p = &self.properties;
        let unsupported = |what: String| {
            Err(Error::NotSupported(format!(
                "{}: {what}",
                self.path.display()
            )))
        };
        if let Some(c) = &p.comparator {
            if c != BYTEWISE_COMPARATOR {
                return unsupported(format!("comparator {c:?}"));
            }
        }
        if p.index_type != INDEX_TYPE_BINARY_SEARCH {
            return unsupported(format!("index type {}", p.index_type));
        }
        if p.num_range_deletions > 0 {
            return unsupported(format!("{} range deletions", p.num_range_deletions));
        }
        if p.num_merge_operands > 0 {
            return unsupported(format!("{} merge operands", p.num_merge_operands));
        }
        Ok(())
    }

    /// Decodes the index block into keys and handles and checks that the handles are ordered,
    /// disjoint and before the footer and the keys strictly ascend.
    fn decode_index(&mut self, index: Block, footer_offset: u64) -> Result<()> {
        let block_offset = index.file_offset();
        let mut it = BlockIter::new(index, self.index_kind);
        let mut prev: Option<BlockHandle> = None;
        it.seek_to_first();
        while it.valid() {
            let at = block_offset + it.entry_offset() as u64;
            let handle = if it.value_is_delta() {
                let prev =
                    prev.ok_or_else(|| self.corrupt(at, "delta handle without a base".into()))?;
                let zigzag = decode_varint64(it.value()).map(|(v, _)| v);
                let delta = zigzag.map(|z| (z >> 1) as i64 ^ -((z & 1) as i64));
                let size = delta.and_then(|d| prev.size.checked_add_signed(d));
                let offset = prev.end_with_trailer();
                match (offset, size) {
                    (Some(offset), Some(size)) => BlockHandle::new(offset, size),
                    _ => return Err(self.corrupt(at, "bad delta-encoded index handle".into())),
                }
            } else {
                let mut d = Decoder::new(it.value());
                match BlockHandle::decode_from(&mut d) {
                    Some(h) if d.is_empty() => h,
                    _ => return Err(self.corrupt(at, "bad index handle".into())),
                }
            };
            let end = handle.end_with_trailer();
            if end.is_none_or(|e| e > footer_offset)
                || prev.is_some_and(|p| p.end_with_trailer().is_none_or(|e| handle.offset < e))
            {
                return Err(self.corrupt(
                    at,
                    format!(
                        "data block handle {}+{} overlaps its predecessor or the footer",
                        handle.offset, handle.size
                    ),
                ));
            }
            if let Some(last) = self.index_keys.last() {
                if self.index_kind.compare(last, it.key()) != Ordering::Less {
                    return Err(self.corrupt(at, "index keys out of order".into()));
                }
            }
            self.index_keys.push(it.key().to_vec());
            self.handles.push(handle);
            prev = Some(handle);
            it.next();
        }
        it.status()?;
        let expected = self.properties.num_data_blocks;
        let has_count = self
            .properties
            .raw
            .contains_key(super::properties::names::NUM_DATA_BLOCKS);
        if has_count && expected != self.handles.len() as u64 {
            return Err(self.corrupt(
                block_offset,
                format!(
                    "index lists {} data blocks, properties say {expected}",
                    self.handles.len()
                ),
            ));
        }
        Ok(())
    }

    fn corrupt(&self, offset: u64, what: String) -> Error {
        Error::corruption(&*self.path, offset, what)
    }
}

/// The last bytes of a table file, from `offset` to its end: the footer and (normally) the
/// metadata blocks before it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableTail {
    /// File offset of `bytes[0]`.
    pub offset: u64,
    /// The bytes, up to the end of the file.
    pub bytes: Vec<u8>,
}

/// An [`InternalIterator`] over a table: one `pread` per data block it enters, and the current
/// block is never read again while the cursor stays in it.
#[derive(Debug)]
pub struct TableIter {
    table: Arc<Table>,
    kernel: Arc<dyn Kernel>,
    /// Which data block `block` holds.
    block_index: usize,
    block: Option<BlockIter>,
    error: Option<Error>,
}

impl TableIter {
    /// The table under the cursor.
    pub fn table(&self) -> &Arc<Table> {
        &self.table
    }

    /// Loads data block `i` unless it is already the current one; false after an error.
    fn load_block(&mut self, i: usize) -> bool {
        if self.block.is_some() && self.block_index == i {
            return true;
        }
        self.block = None;
        match self
            .table
            .read_block(self.kernel.as_ref(), self.table.handles[i])
        {
            Ok(b) => {
                self.block = Some(BlockIter::new(b, BlockKind::Data));
                self.block_index = i;
                true
            }
            Err(e) => {
                self.error = Some(e);
                false
            }
        }
    }

    /// Moves forward past exhausted blocks until an entry, the end or an error.
    fn skip_exhausted_blocks(&mut self) {
        loop {
            let Some(block) = &self.block else {
                return;
            };
            if block.valid() {
                return;
            }
            if let Err(e) = block.status() {
                self.error = Some(e);
                return;
            }
            let next = self.block_index + 1;
            if next >= self.table.handles.len() {
                return; // at the end; the exhausted block stays cached
            }
            if !self.load_block(next) {
                return;
            }
            if let Some(b) = &mut self.block {
                b.seek_to_first();
            }
        }
    }

    fn invalidate(&mut self) {
        if let Some(b) = &mut self.block {
            b.invalidate();
        }
    }
}

impl InternalIterator for TableIter {
    fn valid(&self) -> bool {
        self.error.is_none() && self.block.as_ref().is_some_and(BlockIter::valid)
    }

    fn seek_to_first(&mut self) {
        if self.error.is_some() {
            return;
        }
        if self.table.handles.is_empty() {
            return self.invalidate();
        }
        if self.load_block(0) {
            if let Some(b) = &mut self.block {
                b.seek_to_first();
            }
            self.skip_exhausted_blocks();
        }
    }

    fn seek(&mut self, target: &[u8]) {
        if self.error.is_some() {
            return;
        }
        let i = self.table.index_partition(target);
        if i >= self.table.handles.len() {
            return self.invalidate();
        }
        if self.load_block(i) {
            if let Some(b) = &mut self.block {
                b.seek(target);
            }
            self.skip_exhausted_blocks();
        }
    }

    fn next(&mut self) {
        assert!(self.valid(), "next() on an invalid table iterator");
        if let Some(b) = &mut self.block {
            b.next();
        }
        self.skip_exhausted_blocks();
    }

    fn key(&self) -> &[u8] {
        assert!(self.valid(), "key() on an invalid table iterator");
        self.block.as_ref().expect("valid").key()
    }

    fn value(&self) -> &[u8] {
        assert!(self.valid(), "value() on an invalid table iterator");
        self.block.as_ref().expect("valid").value()
    }

    fn status(&self) -> Result<()> {
        match &self.error {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }
}
