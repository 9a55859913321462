//! Compaction: which files to merge (the picker), what a job is, and the executors that run
//! jobs against the kernel boundary.
//!
//! All executors share [`visibility::VersionFilter`] (which versions survive) and
//! [`output::OutputWriter`] (how outputs are cut and written), so the three modes produce
//! byte-identical SSTs for the same job.

pub mod baseline;
pub mod job;
pub mod machines;
pub mod output;
pub mod picker;
pub mod visibility;

pub use baseline::BaselineExecutor;
pub use job::{CompactionExecutor, CompactionJob, JobEnv, JobOutput};
pub use picker::{pick_compaction, PickedCompaction};

use crate::error::{Error, Result};
use crate::options::CompactionMode;

/// The executor for `mode`, or a clear error naming what is missing.
pub fn executor_for(mode: CompactionMode) -> Result<Box<dyn CompactionExecutor>> {
    match mode {
        CompactionMode::Baseline => Ok(Box::new(BaselineExecutor)),
        CompactionMode::Uring => Err(Error::NotSupported(
            "compaction mode `uring` arrives with the real-kernel issue (#6) (io_uring executor); use --compaction_mode=baseline".into(),
        )),
        CompactionMode::Resystance => Err(Error::NotSupported(
            "compaction mode `resystance` needs the eBPF compaction program (programs issue #4) and io_uring into BPF maps (real-kernel issue #6); use --compaction_mode=baseline".into(),
        )),
    }
}
