//! The eBPF compaction program of resystance, its job ABI and its Rust twin.
//!
//! Not built yet: it arrives with the programs issue (#4). This crate deliberately exports
//! nothing; until then the `baseline` executor merges with the engine's own user-space merge.
