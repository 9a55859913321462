//! Writes a table: data blocks as entries arrive (or finished elsewhere), then index,
//! properties, metaindex, footer.

use std::cmp::Ordering;

use crate::error::Result;
use crate::file::Sink;
use crate::key::{compare_internal, parse_internal_key, ValueType};

use super::block::BlockBuilder;
use super::format::{
    block_trailer, BlockHandle, ChecksumType, Footer, BLOCK_TRAILER_LEN, FORMAT_VERSION_WRITTEN,
    NO_COMPRESSION,
};
use super::properties::{PropertiesToWrite, PROPERTIES_BLOCK_NAME};
use super::reader::TableTail;

/// RocksDB's default `block_size`.
pub const BLOCK_SIZE_BYTES_DEFAULT: usize = 4096;
/// RocksDB's default `block_restart_interval`.
pub const BLOCK_RESTART_INTERVAL_DEFAULT: usize = 16;
/// RocksDB's default `index_block_restart_interval`.
pub const INDEX_BLOCK_RESTART_INTERVAL_DEFAULT: usize = 1;
/// Restart interval of the metaindex and properties blocks.
const META_BLOCK_RESTART_INTERVAL: usize = 1;

/// How tables are laid out.
#[derive(Clone, Debug)]
pub struct TableOptions {
    /// A data block is cut (before the next entry) once its size estimate reaches this.
    pub block_size_bytes: usize,
    /// Entries between restart points in data blocks.
    pub block_restart_interval: usize,
    /// Entries between restart points in the index block.
    pub index_block_restart_interval: usize,
}

impl Default for TableOptions {
    fn default() -> Self {
        TableOptions {
            block_size_bytes: BLOCK_SIZE_BYTES_DEFAULT,
            block_restart_interval: BLOCK_RESTART_INTERVAL_DEFAULT,
            index_block_restart_interval: INDEX_BLOCK_RESTART_INTERVAL_DEFAULT,
        }
    }
}

/// What a finished table holds (sizes as RocksDB's properties count them: with trailers).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableSummary {
    /// Bytes of the whole file.
    pub file_size: u64,
    /// Entries.
    pub num_entries: u64,
    /// Entries that are deletions.
    pub num_deletions: u64,
    /// Data blocks.
    pub num_data_blocks: u64,
    /// Bytes of data blocks including their trailers.
    pub data_size: u64,
    /// Bytes of the index block including its trailer.
    pub index_size: u64,
    /// Sum of internal key lengths.
    pub raw_key_size: u64,
    /// Sum of value lengths.
    pub raw_value_size: u64,
    /// First internal key (empty when there are no entries).
    pub smallest_key: Vec<u8>,
    /// Last internal key (empty when there are no entries).
    pub largest_key: Vec<u8>,
}

/// What [`TableBuilder::add_data_block`] needs to know about a data block finished elsewhere:
/// exactly what [`TableBuilder::add`] would have counted for its entries.
#[derive(Clone, Copy, Debug)]
pub struct DataBlockMeta<'a> {
    /// First internal key of the block.
    pub first_key: &'a [u8],
    /// Last internal key of the block; it becomes the block's index key.
    pub last_key: &'a [u8],
    /// Entries in the block.
    pub entries: u64,
    /// Entries that are deletions.
    pub deletions: u64,
    /// Sum of the entries' internal key lengths.
    pub raw_key_bytes: u64,
    /// Sum of the entries' value lengths.
    pub raw_value_bytes: u64,
}

/// Builds one table into a [`Sink`], from internal keys added in strictly increasing order,
/// either entry by entry ([`TableBuilder::add`]) or as finished data blocks
/// ([`TableBuilder::add_data_block`]); one table uses one way, and both give the same bytes.
///
/// After a sink error the builder is unusable: every later call returns that error again.
#[derive(Debug)]
pub struct TableBuilder<W: Sink> {
    options: TableOptions,
    sink: W,
    /// Bytes handed to the sink so far.
    offset: u64,
    data_block: BlockBuilder,
    index_block: BlockBuilder,
    /// Reused for block contents + trailer, so each block is one append.
    scratch: Vec<u8>,
    /// Reused for the encoded handle of an index entry.
    handle_scratch: Vec<u8>,
    props: PropertiesToWrite,
    smallest_key: Vec<u8>,
    /// Last internal key added; the index key of the data block that ends with it.
    last_key: Vec<u8>,
    failed: Option<crate::Error>,
}

impl<W: Sink> TableBuilder<W> {
    /// A builder writing to `sink` from its current end (offset 0 of the table).
    pub fn new(options: TableOptions, sink: W) -> Self {
        assert!(options.block_size_bytes > 0, "block size must be positive");
        TableBuilder {
            data_block: BlockBuilder::new(options.block_restart_interval),
            index_block: BlockBuilder::new(options.index_block_restart_interval),
            options,
            sink,
            offset: 0,
            scratch: Vec::new(),
            handle_scratch: Vec::new(),
            props: PropertiesToWrite::default(),
            smallest_key: Vec::new(),
            last_key: Vec::new(),
            failed: None,
        }
    }

    /// Adds an entry. Panics if `ikey` is not a valid internal key or not strictly greater than
    /// the previous key: both are broken caller invariants.
    pub fn add(&mut self, ikey: &[u8], value: &[u8]) -> Result<()> {
        self.check_healthy()?;
        let parsed = parse_internal_key(ikey).expect("TableBuilder::add: not an internal key");
        if self.props.num_entries > 0 {
            assert_eq!(
                compare_internal(&self.last_key, ikey),
                Ordering::Less,
                "TableBuilder::add: keys out of order"
            );
        } else {
            self.smallest_key = ikey.to_vec();
        }
        if !self.data_block.is_empty()
            && self.data_block.size_estimate() >= self.options.block_size_bytes
        {
            self.flush_data_block()?;
        }
        self.data_block.add(ikey, value);
        self.last_key.clear();
        self.last_key.extend_from_slice(ikey);
        self.props.num_entries += 1;
        if parsed.value_type == ValueType::Deletion {
            self.props.num_deletions += 1;
        }
        self.props.raw_key_size += ikey.len() as u64;
        self.props.raw_value_size += value.len() as u64;
        Ok(())
    }

    /// Appends a data block finished elsewhere (the compaction program or its twin): `block` is
    /// the block contents followed by its 5-byte trailer (no compression, masked CRC32c). The
    /// table gets the bytes, index entry and properties [`TableBuilder::add`] would have given
    /// the same entries cut into the same block.
    ///
    /// Panics on broken caller invariants: entries were added through [`TableBuilder::add`]
    /// and are still pending, `block` has no contents, the trailer is not an uncompressed one,
    /// `meta` is inconsistent, or `meta.first_key` is not greater than the previous last key.
    pub fn add_data_block(&mut self, block: &[u8], meta: &DataBlockMeta<'_>) -> Result<()> {
        self.check_healthy()?;
        assert!(
            block.len() > BLOCK_TRAILER_LEN,
            "TableBuilder::add_data_block: block of {} bytes has no contents",
            block.len()
        );
        let (contents, trailer) = block.split_at(block.len() - BLOCK_TRAILER_LEN);
        assert_eq!(
            trailer[0], NO_COMPRESSION,
            "TableBuilder::add_data_block: compressed block"
        );
        debug_assert_eq!(
            trailer,
            block_trailer(contents),
            "TableBuilder::add_data_block: bad block checksum"
        );
        self.account_data_block(block.len(), meta);
        self.emit_data_block(block)
    }

    /// [`TableBuilder::add_data_block`] for a block of `block_len` bytes (contents and
    /// trailer) that the caller writes to the file itself, at the returned offset (e.g.
    /// through io_uring straight from the memory the compaction program encoded it in): the
    /// sink gets no bytes for it; the index entry, offsets and properties are the same.
    ///
    /// Panics on the broken caller invariants [`TableBuilder::add_data_block`] panics on
    /// (except those about the bytes, which this never sees).
    pub fn place_data_block(&mut self, block_len: usize, meta: &DataBlockMeta<'_>) -> Result<u64> {
        self.check_healthy()?;
        assert!(
            block_len > BLOCK_TRAILER_LEN,
            "TableBuilder::place_data_block: block of {block_len} bytes has no contents"
        );
        self.account_data_block(block_len, meta);
        let offset = self.offset;
        self.index_data_block(block_len);
        Ok(offset)
    }

    /// Checks `meta` against what came before and counts its entries into the properties.
    fn account_data_block(&mut self, block_len: usize, meta: &DataBlockMeta<'_>) {
        assert!(
            self.data_block.is_empty(),
            "TableBuilder::add_data_block: entries added one by one are pending"
        );
        debug_assert!(block_len > BLOCK_TRAILER_LEN);
        assert!(meta.entries > 0, "TableBuilder::add_data_block: no entries");
        assert!(meta.deletions <= meta.entries);
        assert!(
            meta.raw_key_bytes >= 8 * meta.entries,
            "TableBuilder::add_data_block: raw key bytes below 8 per internal key"
        );
        parse_internal_key(meta.first_key).expect("TableBuilder::add_data_block: first key");
        parse_internal_key(meta.last_key).expect("TableBuilder::add_data_block: last key");
        let in_block = compare_internal(meta.first_key, meta.last_key);
        assert!(
            if meta.entries == 1 {
                in_block.is_eq()
            } else {
                in_block.is_lt()
            },
            "TableBuilder::add_data_block: first and last key disagree with {} entries",
            meta.entries
        );
        if self.props.num_entries > 0 {
            assert_eq!(
                compare_internal(&self.last_key, meta.first_key),
                Ordering::Less,
                "TableBuilder::add_data_block: keys out of order"
            );
        } else {
            self.smallest_key = meta.first_key.to_vec();
        }
        self.last_key.clear();
        self.last_key.extend_from_slice(meta.last_key);
        self.props.num_entries += meta.entries;
        self.props.num_deletions += meta.deletions;
        self.props.raw_key_size += meta.raw_key_bytes;
        self.props.raw_value_size += meta.raw_value_bytes;
    }

    /// Whether no entry added through [`TableBuilder::add`] awaits its data block.
    pub fn data_block_is_empty(&self) -> bool {
        self.data_block.is_empty()
    }

    /// Entries added so far.
    pub fn num_entries(&self) -> u64 {
        self.props.num_entries
    }

    /// Bytes emitted so far plus the size the current data block would have.
    pub fn file_size_estimate(&self) -> u64 {
        let pending = if self.data_block.is_empty() {
            0
        } else {
            self.data_block.size_estimate() + BLOCK_TRAILER_LEN
        };
        self.offset + pending as u64
    }

    /// The sink.
    pub fn sink(&self) -> &W {
        &self.sink
    }

    /// Writes the last data block, the index, properties and metaindex blocks and the footer.
    /// Does not sync: the caller decides durability.
    pub fn finish(self) -> Result<(W, TableSummary)> {
        let (sink, summary, _) = self.finish_keeping_tail()?;
        Ok((sink, summary))
    }

    /// [`TableBuilder::finish`], also returning the table's tail — index, properties,
    /// metaindex and footer, appended to the sink as one piece ([`Sink::append_last`]) — so
    /// the writer can open the table from memory (`Table::from_tail`) instead of reading back
    /// what it just wrote.
    pub fn finish_keeping_tail(mut self) -> Result<(W, TableSummary, TableTail)> {
        self.check_healthy()?;
        if !self.data_block.is_empty() {
            self.flush_data_block()?;
        }
        let tail_offset = self.offset;
        let mut tail = Vec::new();
        let index_handle = {
            let contents = self.index_block.finish();
            append_block(&mut tail, tail_offset, contents)
        };
        self.props.index_size = index_handle.size + BLOCK_TRAILER_LEN as u64;

        let mut meta = BlockBuilder::new(META_BLOCK_RESTART_INTERVAL);
        for (name, value) in self.props.entries() {
            meta.add(name.as_bytes(), &value);
        }
        let properties_handle = append_block(&mut tail, tail_offset, meta.finish());

        meta.reset();
        meta.add(
            PROPERTIES_BLOCK_NAME.as_bytes(),
            &properties_handle.encoded(),
        );
        let metaindex_handle = append_block(&mut tail, tail_offset, meta.finish());

        let footer = Footer {
            checksum: ChecksumType::Crc32c,
            metaindex_handle,
            index_handle,
            format_version: FORMAT_VERSION_WRITTEN,
        };
        tail.extend_from_slice(&footer.encode());
        if let Err(e) = self.sink.append_last(&tail) {
            self.failed = Some(e.clone());
            return Err(e);
        }
        self.offset += tail.len() as u64;

        let empty = self.props.num_entries == 0;
        let summary = TableSummary {
            file_size: self.offset,
            num_entries: self.props.num_entries,
            num_deletions: self.props.num_deletions,
            num_data_blocks: self.props.num_data_blocks,
            data_size: self.props.data_size,
            index_size: self.props.index_size,
            raw_key_size: self.props.raw_key_size,
            raw_value_size: self.props.raw_value_size,
            smallest_key: self.smallest_key,
            largest_key: if empty { Vec::new() } else { self.last_key },
        };
        let tail = TableTail {
            offset: tail_offset,
            bytes: tail,
        };
        Ok((self.sink, summary, tail))
    }

    fn check_healthy(&self) -> Result<()> {
        match &self.failed {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// Finishes the current data block and emits it.
    fn flush_data_block(&mut self) -> Result<()> {
        debug_assert!(!self.data_block.is_empty());
        debug_assert_eq!(self.data_block.last_key(), &self.last_key[..]);
        // Borrow the scratch buffer so `emit_data_block` can take `&mut self`.
        let mut block = std::mem::take(&mut self.scratch);
        block.clear();
        let contents = self.data_block.finish();
        block.extend_from_slice(contents);
        block.extend_from_slice(&block_trailer(contents));
        self.data_block.reset();
        let result = self.emit_data_block(&block);
        self.scratch = block;
        result
    }

    /// Appends a finished data block (contents + trailer) in one write and indexes it under
    /// `self.last_key`, which the caller has set to the block's last key (always a correct
    /// separator, and what every executor can compute without seeing the next block). The
    /// caller counts the block's entries; this counts the block.
    fn emit_data_block(&mut self, block: &[u8]) -> Result<()> {
        debug_assert!(block.len() > BLOCK_TRAILER_LEN);
        if let Err(e) = self.sink.append(block) {
            self.failed = Some(e.clone());
            return Err(e);
        }
        self.index_data_block(block.len());
        Ok(())
    }

    /// Indexes a data block of `block_len` bytes (contents and trailer) at the current offset
    /// under `self.last_key`, and moves the offset past it.
    fn index_data_block(&mut self, block_len: usize) {
        let handle = BlockHandle::new(self.offset, (block_len - BLOCK_TRAILER_LEN) as u64);
        self.offset += block_len as u64;
        self.handle_scratch.clear();
        handle.encode_to(&mut self.handle_scratch);
        self.index_block.add(&self.last_key, &self.handle_scratch);
        self.props.num_data_blocks += 1;
        self.props.data_size += block_len as u64;
    }
}

/// Appends `contents` and its trailer to `tail`, the table's bytes from file offset
/// `tail_offset`; returns the block's handle.
fn append_block(tail: &mut Vec<u8>, tail_offset: u64, contents: &[u8]) -> BlockHandle {
    let handle = BlockHandle::new(tail_offset + tail.len() as u64, contents.len() as u64);
    tail.extend_from_slice(contents);
    tail.extend_from_slice(&block_trailer(contents));
    handle
}
