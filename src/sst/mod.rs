//! SST files in RocksDB's block-based table format.
