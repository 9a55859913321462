//! Compaction: which files to merge (the picker), what a job is, and the executors that run
//! jobs against the kernel boundary.
//!
//! Every executor runs the compaction program's protocol ([`program_io::run_job`]): the
//! per-entry work — verify, decode, merge, drop what no snapshot sees, encode, cut blocks and
//! files — is the eBPF program (`resystance_programs`, in the kernel) or its Rust twin (in
//! user space), which agree byte for byte; the modes differ only in where that runs and how
//! input is read. So the three modes produce byte-identical SSTs for the same job.
//!
//! Flushes write memtables with [`visibility::VersionFilter`] and [`output::OutputWriter`]:
//! the same rules, which the tests hold the program to (`tests/compaction_program.rs`).

pub mod baseline;
pub mod job;
pub mod machines;
pub mod output;
pub mod picker;
pub mod program_io;
pub mod ring_output;
pub mod uring;
pub mod visibility;

pub use baseline::BaselineExecutor;
pub use job::{CompactionExecutor, CompactionJob, JobEnv, JobOutput};
pub use picker::{pick_compaction, PickedCompaction};

use crate::error::Result;
use crate::options::CompactionMode;

/// The executor for `mode`.
pub fn executor_for(mode: CompactionMode) -> Result<Box<dyn CompactionExecutor>> {
    Ok(match mode {
        CompactionMode::Baseline => Box::new(BaselineExecutor::default()),
        CompactionMode::Uring => Box::new(uring::UringExecutor::default()),
        CompactionMode::Resystance => Box::new(uring::ResystanceExecutor::default()),
    })
}
