//! The eBPF compaction program of resystance, its job ABI and its Rust twin.
//!
//! * `bpf/compact.bpf.c` — the program, restricted C; `bpf/compact.bpf.o` — its committed
//!   clang-19 build ([`COMPACT_OBJECT`]).
//! * [`abi`] — the shared memory layout (`bpf/compact_abi.h` mirrored in Rust).
//! * [`twin`] — the same program in Rust: same inputs, byte-identical outputs and statuses.
//! * [`driver`] — user space's half of the protocol, shared by every executor and test.

pub mod abi;
pub mod driver;
pub mod twin;

/// The compiled compaction program (clang-19 `-target bpf -mcpu=v3 -O2 -g`).
pub const COMPACT_OBJECT: &[u8] = include_bytes!("../bpf/compact.bpf.o");
/// Name of the program in [`COMPACT_OBJECT`].
pub const COMPACT_PROGRAM: &str = "compact";
/// Map names in [`COMPACT_OBJECT`].
pub mod maps {
    /// One [`crate::abi::Job`].
    pub const JOB: &str = "cj_job";
    /// The window pool: [`crate::abi::POOL_CHUNKS`] chunks of
    /// [`crate::abi::CHUNK_VALUE_BYTES`] holding every run's window, sized per job.
    pub const WINDOWS: &str = "cj_windows";
    /// One output region of [`crate::abi::OUTPUT_VALUE_BYTES`].
    pub const OUTPUT: &str = "cj_output";
    /// [`crate::abi::RECORDS_MAX`] [`crate::abi::Record`]s.
    pub const RECORDS: &str = "cj_records";
}
