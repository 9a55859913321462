//! Engine options, with RocksDB's defaults.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::sst::TableOptions;

/// How a compaction job moves its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CompactionMode {
    /// RocksDB's way: one `pread` per input data block, merge in user space, buffered writes.
    Baseline,
    /// io_uring batched reads and writes, merge in user space.
    Uring,
    /// io_uring reads into BPF map memory, merge by the eBPF program in the kernel.
    Resystance,
}

impl CompactionMode {
    /// Every mode, in the order reports list them.
    pub const ALL: [CompactionMode; 3] = [
        CompactionMode::Baseline,
        CompactionMode::Uring,
        CompactionMode::Resystance,
    ];

    /// The flag spelling.
    pub fn name(self) -> &'static str {
        match self {
            CompactionMode::Baseline => "baseline",
            CompactionMode::Uring => "uring",
            CompactionMode::Resystance => "resystance",
        }
    }
}

impl fmt::Display for CompactionMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for CompactionMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CompactionMode::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| format!("unknown compaction mode {s:?} (baseline, uring, resystance)"))
    }
}

/// What opening a database does about damage in its WALs (RocksDB's `WALRecoveryMode`, with
/// its numbering: db_bench's `--wal_recovery_mode`).
///
/// A WAL's damage is either a torn tail (the log ends inside a record, or in zeros, with no
/// complete fragment after it: what a write cut short by a crash leaves) or corruption
/// (anything else: a checksum mismatch anywhere, a length crossing its block, fragments out of
/// order). A torn record was never acknowledged unless a flipped bit in the last fragment's
/// length made it look torn; no mode can tell those apart. Every mode reports what it did not
/// replay in [`crate::stats::WalRecoveryStats`]; a mode that fails the open does so before
/// anything is written or deleted, so a reopen with another mode still sees every WAL.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WalRecoveryMode {
    /// `kTolerateCorruptedTailRecords` (0): a torn tail is dropped; corruption fails the open.
    TolerateCorruptedTailRecords,
    /// `kAbsoluteConsistency` (1): any damage, a torn tail included, fails the open (for
    /// databases closed cleanly: a crash in the middle of a write makes them unopenable).
    AbsoluteConsistency,
    /// `kPointInTimeRecovery` (2, the default): replay stops at the first corruption; the rest
    /// of that WAL and every later WAL are dropped, so the state is the one after some prefix
    /// of the writes. A torn tail is dropped as in mode 0.
    #[default]
    PointInTimeRecovery,
    /// `kSkipAnyCorruptedRecords` (3): damage is skipped (up to the next block when a length
    /// cannot be trusted) and replay goes on: as many records as possible, maybe with holes.
    SkipAnyCorruptedRecords,
}

impl WalRecoveryMode {
    /// Every mode, in RocksDB's numbering.
    pub const ALL: [WalRecoveryMode; 4] = [
        WalRecoveryMode::TolerateCorruptedTailRecords,
        WalRecoveryMode::AbsoluteConsistency,
        WalRecoveryMode::PointInTimeRecovery,
        WalRecoveryMode::SkipAnyCorruptedRecords,
    ];

    /// The mode db_bench's `--wal_recovery_mode=N` names (RocksDB's enum values 0..=3).
    pub fn from_db_bench(n: u64) -> Option<WalRecoveryMode> {
        usize::try_from(n)
            .ok()
            .and_then(|i| WalRecoveryMode::ALL.get(i).copied())
    }

    /// RocksDB's enum value (db_bench's flag value).
    pub fn db_bench_value(self) -> u8 {
        match self {
            WalRecoveryMode::TolerateCorruptedTailRecords => 0,
            WalRecoveryMode::AbsoluteConsistency => 1,
            WalRecoveryMode::PointInTimeRecovery => 2,
            WalRecoveryMode::SkipAnyCorruptedRecords => 3,
        }
    }

    /// The kebab-case spelling used in messages.
    pub fn name(self) -> &'static str {
        match self {
            WalRecoveryMode::TolerateCorruptedTailRecords => "tolerate-corrupted-tail-records",
            WalRecoveryMode::AbsoluteConsistency => "absolute-consistency",
            WalRecoveryMode::PointInTimeRecovery => "point-in-time-recovery",
            WalRecoveryMode::SkipAnyCorruptedRecords => "skip-any-corrupted-records",
        }
    }
}

impl fmt::Display for WalRecoveryMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where flushes and compactions run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BackgroundMode {
    /// On background threads (one for flushes, one for compactions), like RocksDB's default of
    /// two background jobs. Used with the real kernel.
    Threads,
    /// Inline in the writing thread, at deterministic points (after a write makes work
    /// pending): the writer pays for every job. For deterministic tests.
    Inline,
    /// In the calling thread but each on its background task's own clock
    /// ([`resystance_traces::Kernel::switch_task`]), interleaved deterministically with
    /// foreground calls: on a kernel with virtual time (the simulator) jobs run beside the
    /// writes and stalls show as they would with threads (see `src/background.rs`).
    Virtual,
}

/// Default [`Options::uring_queue_depth`].
pub const URING_QUEUE_DEPTH_DEFAULT: u32 = 64;
/// Largest [`Options::uring_queue_depth`]: Linux's `IORING_MAX_ENTRIES` is 32768; a window is
/// read in at most one SQE per block (2048, `WINDOW_BLOCKS_MAX`) and usually far fewer (one per
/// run of consecutive blocks), so deeper queues would stay empty.
pub const URING_QUEUE_DEPTH_MAX: u32 = 4096;

/// Engine options. [`Options::default`] gives RocksDB's defaults.
#[derive(Clone, Debug)]
pub struct Options {
    /// Memtable size at which it is switched and flushed, in bytes (RocksDB: 64 MiB).
    pub write_buffer_size: usize,
    /// Memtables (active + immutable) before writes stop (RocksDB: 2).
    pub max_write_buffer_number: usize,
    /// L0 files that trigger an L0→L1 compaction (RocksDB: 4).
    pub level0_file_num_compaction_trigger: usize,
    /// L0 files at which writes are delayed (RocksDB: 20).
    pub level0_slowdown_writes_trigger: usize,
    /// L0 files at which writes stop (RocksDB: 36).
    pub level0_stop_writes_trigger: usize,
    /// Target size of compaction output files, in bytes (RocksDB: 64 MiB).
    pub target_file_size_base: u64,
    /// Target size multiplier from one level to the next (RocksDB: 1).
    pub target_file_size_multiplier: u64,
    /// Maximum bytes in L1 (RocksDB: 256 MiB).
    pub max_bytes_for_level_base: u64,
    /// Growth of the per-level maximum from one level to the next (RocksDB: 10).
    pub max_bytes_for_level_multiplier: f64,
    /// Number of levels (RocksDB: 7).
    pub num_levels: usize,
    /// Write rate while writes are delayed, in bytes per second (RocksDB: 16 MiB/s).
    pub delayed_write_rate_bytes_per_sec: u64,
    /// How compactions move their bytes.
    pub compaction_mode: CompactionMode,
    /// Compactions read their inputs' data blocks with `O_DIRECT` (RocksDB's
    /// `use_direct_reads`, for the compaction reads): aligned reads from the device, no page
    /// cache. Other reads stay buffered.
    pub use_direct_reads: bool,
    /// The io_uring compaction modes set their rings up with `IORING_SETUP_SQPOLL`: a kernel
    /// thread takes submissions, so no `io_uring_enter` is needed while it is awake.
    pub uring_sqpoll: bool,
    /// The io_uring compaction modes read ahead: while the program (or the twin) merges a
    /// run's window, the run's next blocks are read into the other half of it (RocksDB's
    /// `compaction_readahead_size`, in spirit). Off: a window is read when the merge needs it.
    pub uring_readahead: bool,
    /// Submission-queue entries of the io_uring compaction modes' rings: the most reads of
    /// one window, or writes and syncs, in flight at once (1..=[`URING_QUEUE_DEPTH_MAX`]).
    pub uring_queue_depth: u32,
    /// Create the database if it does not exist.
    pub create_if_missing: bool,
    /// `fdatasync` the WAL after every write (RocksDB: off; writes survive a process crash,
    /// not a power loss).
    pub sync_wal: bool,
    /// What opening does about damaged WAL records (RocksDB: point-in-time recovery).
    pub wal_recovery_mode: WalRecoveryMode,
    /// SST layout.
    pub table: TableOptions,
    /// Where flushes and compactions run.
    pub background: BackgroundMode,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            write_buffer_size: 64 << 20,
            max_write_buffer_number: 2,
            level0_file_num_compaction_trigger: 4,
            level0_slowdown_writes_trigger: 20,
            level0_stop_writes_trigger: 36,
            target_file_size_base: 64 << 20,
            target_file_size_multiplier: 1,
            max_bytes_for_level_base: 256 << 20,
            max_bytes_for_level_multiplier: 10.0,
            num_levels: 7,
            delayed_write_rate_bytes_per_sec: 16 << 20,
            compaction_mode: CompactionMode::Baseline,
            use_direct_reads: false,
            uring_sqpoll: false,
            uring_readahead: true,
            uring_queue_depth: URING_QUEUE_DEPTH_DEFAULT,
            create_if_missing: true,
            sync_wal: false,
            wal_recovery_mode: WalRecoveryMode::PointInTimeRecovery,
            table: TableOptions::default(),
            background: BackgroundMode::Threads,
        }
    }
}

impl Options {
    /// Checks relationships between the knobs; a clear message for each violation.
    pub fn validate(&self) -> Result<(), String> {
        if self.write_buffer_size < 4096 {
            return Err(format!(
                "write_buffer_size {} is below 4096 bytes",
                self.write_buffer_size
            ));
        }
        if self.max_write_buffer_number < 2 {
            return Err("max_write_buffer_number must be at least 2".into());
        }
        if !(self.level0_file_num_compaction_trigger >= 1
            && self.level0_file_num_compaction_trigger <= self.level0_slowdown_writes_trigger
            && self.level0_slowdown_writes_trigger <= self.level0_stop_writes_trigger)
        {
            return Err(format!(
                "need 1 <= level0_file_num_compaction_trigger ({}) <= level0_slowdown_writes_trigger ({}) <= level0_stop_writes_trigger ({})",
                self.level0_file_num_compaction_trigger,
                self.level0_slowdown_writes_trigger,
                self.level0_stop_writes_trigger
            ));
        }
        // An L0 compaction merges every L0 file (each its own sorted run) and one sorted run
        // of L1, and L0 can exceed the stop trigger by the memtables already waiting to be
        // flushed: all of that must fit the compaction program's run limit.
        let l0_runs_max = self.level0_stop_writes_trigger + self.max_write_buffer_number;
        if l0_runs_max + 1 > resystance_programs::abi::RUNS_MAX {
            return Err(format!(
                "level0_stop_writes_trigger ({}) + max_write_buffer_number ({}) + 1 exceeds the {} sorted runs the compaction program merges at once",
                self.level0_stop_writes_trigger,
                self.max_write_buffer_number,
                resystance_programs::abi::RUNS_MAX
            ));
        }
        if !(1..=URING_QUEUE_DEPTH_MAX).contains(&self.uring_queue_depth) {
            return Err(format!(
                "uring_queue_depth {} outside 1..={URING_QUEUE_DEPTH_MAX}",
                self.uring_queue_depth
            ));
        }
        if !(2..=64).contains(&self.num_levels) {
            return Err(format!("num_levels {} outside 2..=64", self.num_levels));
        }
        if self.target_file_size_base < 4096 || self.max_bytes_for_level_base < 4096 {
            return Err(
                "target_file_size_base and max_bytes_for_level_base must be >= 4096".into(),
            );
        }
        if self.target_file_size_multiplier == 0 || self.max_bytes_for_level_multiplier < 1.0 {
            return Err("level size multipliers must be >= 1".into());
        }
        if self.delayed_write_rate_bytes_per_sec == 0 {
            return Err("delayed_write_rate must be positive".into());
        }
        Ok(())
    }

    /// Target output file size for compactions into `level`.
    pub fn target_file_size(&self, level: usize) -> u64 {
        let mut size = self.target_file_size_base;
        for _ in 1..level.max(1) {
            size = size.saturating_mul(self.target_file_size_multiplier);
        }
        size
    }

    /// Maximum bytes for `level` (>= 1).
    pub fn max_bytes_for_level(&self, level: usize) -> u64 {
        assert!(level >= 1, "L0 is sized by file count");
        let mut size = self.max_bytes_for_level_base as f64;
        for _ in 1..level {
            size *= self.max_bytes_for_level_multiplier;
        }
        size as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn l0_files_must_fit_the_compaction_programs_run_limit() {
        assert!(Options::default().validate().is_ok());
        let runs = resystance_programs::abi::RUNS_MAX;
        let fits = Options {
            level0_stop_writes_trigger: runs - 3,
            ..Options::default()
        };
        assert!(fits.validate().is_ok(), "{:?}", fits.validate());
        let over = Options {
            level0_stop_writes_trigger: runs - 2,
            ..Options::default()
        };
        let err = over.validate().unwrap_err();
        assert!(err.contains("sorted runs"), "{err}");
    }

    #[test]
    fn wal_recovery_modes_follow_rocksdbs_numbering() {
        assert_eq!(
            Options::default().wal_recovery_mode,
            WalRecoveryMode::PointInTimeRecovery
        );
        for (i, mode) in WalRecoveryMode::ALL.into_iter().enumerate() {
            assert_eq!(usize::from(mode.db_bench_value()), i);
            assert_eq!(WalRecoveryMode::from_db_bench(i as u64), Some(mode));
        }
        assert_eq!(
            WalRecoveryMode::from_db_bench(1),
            Some(WalRecoveryMode::AbsoluteConsistency)
        );
        assert_eq!(WalRecoveryMode::from_db_bench(4), None);
    }
}
