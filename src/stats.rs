//! Engine statistics: what flushes, compactions and write stalls cost.

use std::fmt;
use std::path::PathBuf;

use resystance_traces::SyscallCounts;
use serde::{Deserialize, Serialize};

use crate::options::WalRecoveryMode;

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
    /// Input reading ahead (the io_uring modes).
    #[serde(default)]
    pub readahead: ReadaheadStats,
    /// System calls made by compaction jobs, by kind: input reads, output writes and syncs, the
    /// directory sync, and the opening of each output table. Inputs are already open. Not
    /// included: the MANIFEST append and fdatasync that install each job's result (done by the
    /// engine under its MANIFEST lock, one of each per job).
    pub syscalls: SyscallCounts,
}

/// How the io_uring modes' reading ahead went: a run's next blocks are read into the other
/// half of its window while the program merges, and either had arrived when the program took
/// them or not.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadaheadStats {
    /// Windows the program took from a read ahead.
    pub windows: u64,
    /// Of those, windows some of whose reads had not completed when the program took them.
    pub late: u64,
    /// `io_uring_enter` calls made only to wait for such reads (nothing else to submit):
    /// where the reads had arrived, no call was needed. The one count of a job's calls that
    /// depends on how fast the device (or, on the simulator, the model) was.
    pub wait_enters: u64,
}

impl ReadaheadStats {
    /// Adds `other`'s counts.
    pub fn add(&mut self, other: &ReadaheadStats) {
        self.windows += other.windows;
        self.late += other.late;
        self.wait_enters += other.wait_enters;
    }
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

/// Why bytes of a WAL were not replayed when the database opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WalDropCause {
    /// The log ended inside a record: a write cut short by a crash (never acknowledged, unless
    /// a flipped bit in the last fragment's length only made it look cut short).
    TornTail,
    /// Damaged bytes (point-in-time recovery drops from there to the WAL's end; skipping
    /// recovery only the damage).
    Corruption,
    /// A whole later WAL, intact, dropped because point-in-time recovery stopped before it.
    AfterCorruption,
}

/// One stretch of a WAL that recovery did not replay.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalDrop {
    /// The WAL file.
    pub wal: PathBuf,
    /// Where the damage is (the bad fragment, or the cut-short record); 0 for
    /// [`WalDropCause::AfterCorruption`].
    pub offset: u64,
    /// The first byte dropped (the start of the damaged record; <= `offset`).
    pub dropped_from: u64,
    /// Bytes dropped from `dropped_from` on.
    pub bytes: u64,
    /// Intact, checksum-verified records among the dropped bytes (acknowledged writes lost
    /// with them); the damaged record itself is not counted.
    pub records: u64,
    /// Why.
    pub cause: WalDropCause,
    /// What the damage is, in words.
    pub what: String,
    /// Where the WAL was kept (renamed, never deleted) when recovery dropped more than a torn
    /// tail from it: its bytes stay for salvage, e.g. with skip-any-corrupted-records.
    #[serde(default)]
    pub kept_as: Option<PathBuf>,
}

impl fmt::Display for WalDrop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cause = match self.cause {
            WalDropCause::TornTail => "torn tail",
            WalDropCause::Corruption => "corruption",
            WalDropCause::AfterCorruption => "after an earlier WAL's corruption",
        };
        write!(
            f,
            "{}: dropped {} bytes from offset {} ({} intact records), {cause} at offset {}: {}",
            self.wal.display(),
            self.bytes,
            self.dropped_from,
            self.records,
            self.offset,
            self.what
        )?;
        match &self.kept_as {
            Some(p) => write!(f, "; the WAL is kept as {}", p.display()),
            None => Ok(()),
        }
    }
}

/// What replaying the WALs did when the database opened.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalRecoveryStats {
    /// The mode recovery ran in.
    pub mode: WalRecoveryMode,
    /// WAL files read.
    pub wals: u64,
    /// Records (write batches) replayed.
    pub records_replayed: u64,
    /// Every stretch not replayed, in WAL order: recovery never drops bytes silently.
    pub drops: Vec<WalDrop>,
    /// WALs this or an earlier recovery dropped more than a torn tail from, kept in the
    /// database directory under a `.dropped` name: a trace that outlives a crash right after
    /// the recovery that dropped them.
    #[serde(default)]
    pub dropped_wals_kept: Vec<PathBuf>,
}

impl WalRecoveryStats {
    /// Intact records dropped (after corruption, by point-in-time recovery).
    pub fn records_dropped(&self) -> u64 {
        self.drops.iter().map(|d| d.records).sum()
    }

    /// Bytes dropped.
    pub fn bytes_dropped(&self) -> u64 {
        self.drops.iter().map(|d| d.bytes).sum()
    }

    /// Whether anything but a torn tail was dropped: damage that may have cost acknowledged
    /// writes.
    pub fn dropped_past_damage(&self) -> bool {
        self.drops.iter().any(|d| d.cause != WalDropCause::TornTail)
    }
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
    /// What the WAL replay at open did, drops included.
    #[serde(default)]
    pub wal_recovery: WalRecoveryStats,
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
