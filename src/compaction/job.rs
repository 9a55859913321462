//! A compaction job and the executor interface every mode implements.

use std::sync::Arc;

use resystance_traces::Kernel;

use crate::db_dir::DbDir;
use crate::error::Result;
use crate::options::CompactionMode;
use crate::sst::TableOptions;
use crate::table_cache::TableCache;
use crate::version::FileMeta;

/// One compaction: merge sorted runs into new files of `output_level`.
#[derive(Clone, Debug)]
pub struct CompactionJob {
    /// Job number, for reports.
    pub id: u64,
    /// The level the compaction starts from.
    pub level: usize,
    /// Where its outputs go.
    pub output_level: usize,
    /// Sorted runs, each a list of files in key order with no overlap inside the run: every L0
    /// file is its own run, and the files picked from a sorted level form one run.
    pub runs: Vec<Vec<Arc<FileMeta>>>,
    /// Live snapshots (sequence numbers) whose views must survive.
    pub snapshots: Vec<u64>,
    /// No older data for this key range exists below `output_level`: tombstones can go.
    pub bottommost: bool,
    /// Outputs are cut (at a user-key boundary) once they reach this size.
    pub target_file_size: u64,
    /// Layout of the output tables.
    pub table_options: TableOptions,
}

impl CompactionJob {
    /// Every input file.
    pub fn inputs(&self) -> impl Iterator<Item = &Arc<FileMeta>> {
        self.runs.iter().flatten()
    }

    /// Total bytes of input files.
    pub fn input_bytes(&self) -> u64 {
        self.inputs().map(|f| f.file_size).sum()
    }
}

/// What an executor gets from the engine to run a job.
pub struct JobEnv<'a> {
    /// The kernel, as this job's own accounted view: every call counts toward the job.
    pub kernel: Arc<dyn Kernel>,
    /// The database directory (held open; it also hands finished outputs to the table
    /// cache).
    pub dir: &'a DbDir,
    /// Open input tables.
    pub tables: &'a Arc<TableCache>,
    /// Hands out a fresh file number for an output, protected from deletion until installed.
    pub new_file_number: &'a (dyn Fn() -> u64 + Sync),
    /// Read the inputs' data blocks with `O_DIRECT` ([`crate::options::Options::use_direct_reads`]).
    pub direct_reads: bool,
    /// Set rings up with SQPOLL ([`crate::options::Options::uring_sqpoll`]).
    pub uring_sqpoll: bool,
    /// Read ahead ([`crate::options::Options::uring_readahead`]).
    pub uring_readahead: bool,
    /// Submission-queue entries of the io_uring modes' rings
    /// ([`crate::options::Options::uring_queue_depth`]).
    pub uring_queue_depth: u32,
}

impl std::fmt::Debug for JobEnv<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobEnv")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// What a job produced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JobOutput {
    /// New files for `output_level`, in key order, durable (data synced, directory synced)
    /// and already open in the table cache.
    pub files: Vec<FileMeta>,
    /// Input data blocks read.
    pub data_blocks_read: u64,
    /// Bytes of input files.
    pub bytes_read: u64,
    /// Bytes of output files.
    pub bytes_written: u64,
    /// Entries read.
    pub entries_in: u64,
    /// Nanoseconds inside the compaction program, as the kernel running it reported them
    /// (0 when the merge ran in user space).
    pub program_ns: u64,
    /// Entries written.
    pub entries_out: u64,
    /// How reading ahead went (io_uring modes).
    pub readahead: crate::stats::ReadaheadStats,
}

/// Runs compaction jobs. Executors reach the OS only through `env.kernel`: no libc, no host
/// clock, no threads.
pub trait CompactionExecutor: Send + Sync + std::fmt::Debug {
    /// The mode this executor implements.
    fn mode(&self) -> CompactionMode;
    /// Checks, when the database opens, that `kernel` offers what this mode needs (and loads
    /// what it can load once), so a missing feature is an error at open, not at the first
    /// compaction.
    fn prepare(&self, kernel: &Arc<dyn Kernel>) -> Result<()> {
        let _ = kernel;
        Ok(())
    }
    /// Runs `job` to completion. On error, outputs written so far are removed (best effort);
    /// inputs are never touched.
    fn run(&self, job: &CompactionJob, env: &JobEnv<'_>) -> Result<JobOutput>;
}
