//! The `baseline` executor: what RocksDB does. Each input data block is read with its own
//! `pread`, the merge runs in user space — the compaction program's Rust twin, over the same
//! windows, output region and records the eBPF program uses — and outputs go through a 1 MiB
//! buffered writer and are synced.

use std::sync::Mutex;

use crate::compaction::job::{CompactionExecutor, CompactionJob, JobEnv, JobOutput};
use crate::compaction::machines::UserTwin;
use crate::compaction::program_io::run_job;
use crate::error::Result;
use crate::options::CompactionMode;

/// Blocks per `pread` in baseline mode: one, as RocksDB reads them.
const BLOCKS_PER_READ: usize = 1;

/// RocksDB-style compaction: one `pread` per data block, the merge in user space.
#[derive(Debug, Default)]
pub struct BaselineExecutor {
    /// The twin, made by the first job and kept: its windows (up to 8 MiB each) and output
    /// region are allocated once, not zeroed again for every job.
    twin: Mutex<Option<UserTwin>>,
}

impl CompactionExecutor for BaselineExecutor {
    fn mode(&self) -> CompactionMode {
        CompactionMode::Baseline
    }

    fn run(&self, job: &CompactionJob, env: &JobEnv<'_>) -> Result<JobOutput> {
        let mut slot = self.twin.lock().expect("twin lock");
        let twin = UserTwin::for_job(&mut slot, &env.kernel);
        run_job(twin, job, env, BLOCKS_PER_READ)
    }
}
