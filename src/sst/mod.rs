//! SST files in RocksDB's block-based table format.
//!
//! # What we write, and why RocksDB 7.8 accepts it
//!
//! File order: data blocks · index block · properties block · metaindex block · 53-byte footer,
//! the order RocksDB 7.8 `db_bench` writes (its raw dump of a `--compression_type=none` file:
//! data blocks from 0, index at the data size, properties right after the index, metaindex
//! after the properties, footer last; there is no filter unless one is configured).
//!
//! * Footer, format_version 2: checksum type byte (1 = CRC32c) · metaindex handle · index
//!   handle · zero padding to 40 bytes of handles · fixed32 format_version · fixed64 magic
//!   `0x88e241b785f4cff7`. format_version 2 keeps the pre-4 index encoding (internal keys, full
//!   handles), so nothing depends on properties a reader might not know.
//! * Every block is followed by a 5-byte trailer: type 0 (no compression) and the masked CRC32c
//!   of contents + type byte.
//! * Data blocks: restart interval 16, shared-prefix keys, `num_restarts` top bit 0 (no hash
//!   index). A block is cut before an entry once RocksDB's size estimate (entries + restart
//!   array + count) reaches `block_size_bytes`.
//! * Index block: restart interval 1, key = the data block's last internal key (always a valid
//!   separator and computable without seeing the next block), value = full `BlockHandle`.
//! * Properties block (sorted bytewise): the counts and sizes sst_dump shows, comparator
//!   `leveldb.BytewiseComparator`, `rocksdb.index.key.is.user.key = 0`,
//!   `rocksdb.index.value.is.delta.encoded = 0`, index type 0 — but no timestamps or ids, so the
//!   same entries always give the same bytes (the executors must produce identical files).
//!   Deletions are `rocksdb.deleted.keys` (what sst_dump prints as "# deletions").
//! * Metaindex block: the single entry `rocksdb.properties` → properties handle.
//!
//! Checked with `sst_dump` 7.8.3 (tests/sst_dump.rs): `--command=check --verify_checksum`
//! prints no error, `--command=scan --output_hex` returns exactly the entries written and
//! `--show_properties` reports our sizes and counts. Note that sst_dump exits 0 even on a
//! corrupt file and `check` only verifies data-block checksums with `--verify_checksum`, so
//! the tests parse its output rather than trusting the exit code.
//!
//! # What we read
//!
//! Our files, and what `db_bench --compression_type=none` writes by default: format_version 5,
//! XXH3 checksums (low 32 bits of XXH3-64 of the contents, xor `type_byte * 0x6b9083d9`; CRC32c,
//! XXH32 and XXH64 are read too — every rule checked against a db_bench file), and the index
//! format "user key, delta value" announced by the properties. Filters and other meta blocks
//! are ignored; compression, hash indexes, partitioned indexes, range deletions, merge
//! operands, other comparators and format_version 0 or 6+ are refused with `NotSupported`.
//! Malformed bytes are `Corruption` errors carrying the path and file offset, never panics.

pub mod block;
pub mod builder;
pub mod format;
pub mod properties;
pub mod reader;

pub use builder::{DataBlockMeta, TableBuilder, TableOptions, TableSummary};
pub use format::{BlockHandle, ChecksumType, BLOCK_TRAILER_LEN};
pub use properties::TableProperties;
pub use reader::{Table, TableIter, TableTail};

#[cfg(test)]
mod tests;
