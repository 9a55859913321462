//! resystance: an LSM-tree engine whose SST files use RocksDB's block-based table format, and
//! the testbed for offloading its compaction into the kernel with io_uring and eBPF.

pub mod bpf_cmd;
pub mod bpf_object;
pub mod coding;
pub mod error;
pub mod file;
pub mod iter;
pub mod key;
pub mod sst;

pub use error::{Error, Result};
pub mod background;
pub mod bench;
pub mod campaign;
pub mod compaction;
pub mod crc;
pub mod db;
pub mod db_dir;
pub mod filename;
pub mod log;
pub mod memtable;
pub mod merge_iter;
pub mod options;
pub mod stats;
pub mod table_cache;
pub mod version;
pub mod wal_replay;
pub mod write_batch;

pub use db::{Db, DbIter, Snapshot};
pub use options::{BackgroundMode, CompactionMode, Options, WalRecoveryMode};
pub use write_batch::WriteBatch;
