//! resystance: an LSM-tree engine whose SST files use RocksDB's block-based table format, and
//! the testbed for offloading its compaction into the kernel with io_uring and eBPF.

pub mod coding;
pub mod error;
pub mod file;
pub mod iter;
pub mod key;
pub mod sst;

pub use error::{Error, Result};
