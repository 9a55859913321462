//! Engine statistics: what flushes, compactions and write stalls cost.

use resystance_traces::SyscallCounts;
use serde::{Deserialize, Serialize};

/// Totals over all compactions that ran.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompactionStats {
    /// Compaction jobs that ran to completion (trivial moves included).
    pub jobs: u64,
    /// Of those, jobs that only moved a file down a level (no I/O).
    pub trivial_moves: u64,
    /// Input files read.
    pub input_files: u64,
    /// Output files written.
    pub output_files: u64,
    /// Bytes of input SST files read.
    pub bytes_read: u64,
    /// Bytes of output SST files written.
    pub bytes_written: u64,
    /// Input data blocks read.
    pub data_blocks_read: u64,
    /// Entries read from inputs.
    pub entries_in: u64,
    /// Entries written to outputs.
    pub entries_out: u64,
    /// Wall time (kernel clock) spent in compaction jobs, in nanoseconds.
    pub time_ns: u64,
    /// Of that, nanoseconds inside the compaction program in the kernel (`resystance` mode;
    /// `BPF_PROG_TEST_RUN` time), 0 when the merge runs in user space.
    #[serde(default)]
    pub program_ns: u64,
    /// System calls made by compaction jobs, by kind: input reads, output writes and syncs, the
    /// directory sync, and the opening of each output table. Inputs are already open. Not
    /// included: the MANIFEST append and fdatasync that install each job's result (done by the
    /// engine under its MANIFEST lock, one of each per job).
    pub syscalls: SyscallCounts,
}

/// Totals over all memtable flushes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlushStats {
    /// Flushes that produced an L0 file.
    pub flushes: u64,
    /// Bytes of L0 files written.
    pub bytes_written: u64,
    /// Time spent flushing, in nanoseconds.
    pub time_ns: u64,
}

/// Write stalls: time writers waited for flushes and compactions.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StallStats {
    /// Time writers were stopped (memtables full, or L0 at the stop trigger), in nanoseconds.
    pub stop_ns: u64,
    /// Time writers were slowed (L0 at the slowdown trigger), in nanoseconds.
    pub delay_ns: u64,
    /// Writes that were stopped at least once.
    pub stopped_writes: u64,
    /// Writes that were delayed.
    pub delayed_writes: u64,
}

/// One level of the LSM tree.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LevelStats {
    /// Level number (0 = L0).
    pub level: usize,
    /// Files in the level.
    pub files: usize,
    /// Their total size in bytes.
    pub bytes: u64,
}

/// A snapshot of everything the engine counts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DbStats {
    /// Compactions.
    pub compaction: CompactionStats,
    /// Flushes.
    pub flush: FlushStats,
    /// Stalls.
    pub stall: StallStats,
    /// The current shape of the tree.
    pub levels: Vec<LevelStats>,
    /// Bytes of user keys and values written (the denominator of write amplification).
    pub user_bytes_written: u64,
    /// Bytes written to the write-ahead log.
    pub wal_bytes_written: u64,
}

impl DbStats {
    /// (flush + compaction bytes written) / user bytes written; 0 before any write.
    pub fn write_amplification(&self) -> f64 {
        if self.user_bytes_written == 0 {
            return 0.0;
        }
        (self.flush.bytes_written + self.compaction.bytes_written) as f64
            / self.user_bytes_written as f64
    }
}
