//! What a benchmark run produced, as the JSON report carries it.

use serde::Serialize;

use super::cli::{BenchArgs, Benchmark};
use super::host::HostFacts;
use super::latency::LatencySummary;
use crate::options::CompactionMode;
use crate::stats::DbStats;
use resystance_traces::SyscallCounts;

/// Bytes in db_bench's "MB" (RocksDB reports binary megabytes).
pub const MB: f64 = 1_048_576.0;
/// Bytes in RocksDB's "GB".
pub const GB: f64 = 1_073_741_824.0;
/// Shortest elapsed time divided by, in seconds, so an instant run does not divide by zero.
pub const ELAPSED_MIN_SECS: f64 = 1e-9;

/// The whole run: flags, host, and each compaction mode's benchmarks.
#[derive(Debug, Serialize)]
pub struct BenchReport {
    /// The program that wrote the report.
    pub tool: &'static str,
    /// Its version.
    pub version: &'static str,
    /// The kernel the engine ran on (`real` or `sim`).
    pub backend: &'static str,
    /// The seed actually used (`--seed=0` resolved).
    pub seed: u64,
    /// Reads per read benchmark (`--reads` resolved).
    pub reads: u64,
    /// The flags as given.
    pub flags: BenchArgs,
    /// The machine.
    pub host: HostFacts,
    /// The simulated machine's models (`--backend=sim` only), so a reader can tell what the
    /// figures were computed from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sim: Option<SimFacts>,
    /// One entry per `--compaction_mode` and round, in the order they ran.
    pub runs: Vec<ModeRun>,
    /// Per benchmark, the modes side by side: medians over the rounds, every round's ratio
    /// against the first mode, and their medians (empty for a single mode).
    pub comparison: Vec<super::compare::Comparison>,
    /// `--backend=real`: every system call the engine made through the kernel during the
    /// whole invocation (checks, every mode, opening, closing), by kind — what `strace -f -c`
    /// sees of those calls (`tests/strace_cross_check.rs`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel_syscalls: Option<SyscallCounts>,
}

/// What the simulated kernel modelled.
#[derive(Debug, Serialize)]
pub struct SimFacts {
    /// `--nvme` as given.
    pub nvme_preset: String,
    /// The NVMe model it named.
    pub nvme: resystance_sim::NvmeModel,
    /// The CPU model (system calls, page cache, BPF, the engine's work, cores).
    pub cpu: resystance_sim::CpuModel,
    /// `--cpu`: the CPU profile's name or file.
    pub cpu_profile: String,
}

/// The benchmark list run once under one compaction mode.
#[derive(Debug, Serialize)]
pub struct ModeRun {
    /// How compactions moved their bytes.
    pub compaction_mode: CompactionMode,
    /// The round (`--repeat`) this pass belongs to, from 1.
    pub round: u32,
    /// Its place in the round's order, from 0 (the modes rotate: round `r` starts with the
    /// `(r - 1) mod M`-th mode).
    pub position: u32,
    /// The benchmarks that ran, in order.
    pub benchmarks: Vec<BenchmarkResult>,
    /// Benchmarks skipped because they need a fresh database and `--use_existing_db` was set.
    pub skipped: Vec<Benchmark>,
}

/// Whether a benchmark's operations were reads or writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OpKind {
    /// `put`.
    Write,
    /// `get`.
    Read,
}

impl OpKind {
    /// The word db_bench uses ("Microseconds per write").
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Write => "write",
            OpKind::Read => "read",
        }
    }
}

/// One benchmark's outcome.
#[derive(Clone, Debug, Serialize)]
pub struct BenchmarkResult {
    /// Which benchmark.
    pub name: Benchmark,
    /// Reads or writes.
    pub op: OpKind,
    /// Operations done.
    pub ops: u64,
    /// For reads: how many keys were found.
    pub found: Option<u64>,
    /// Key and value bytes moved (writes: all; reads: found ones), as db_bench counts them.
    pub bytes: u64,
    /// Time from the first operation's start to the last one's end (kernel clock), in ns.
    pub elapsed_ns: u64,
    /// Mean time per operation, in microseconds.
    pub micros_per_op: f64,
    /// Operations per second.
    pub ops_per_sec: f64,
    /// `bytes` per second, in MB (2^20 bytes).
    pub mb_per_sec: f64,
    /// Per-operation latency.
    pub latency: LatencySummary,
    /// Time since the database was opened, at the end of the benchmark, in ns.
    pub db_uptime_ns: u64,
    /// `db_stats.write_amplification()`.
    pub write_amplification: f64,
    /// The engine's counters since the database was opened, at the end of the benchmark.
    pub db_stats: DbStats,
    /// Every system call the process made through the kernel during the benchmark
    /// (foreground and background), by kind.
    pub syscalls: SyscallCounts,
}

/// The numbers a benchmark measured, before the derived rates are computed.
#[derive(Clone, Debug)]
pub struct Measured {
    /// Which benchmark.
    pub name: Benchmark,
    /// Operations done.
    pub ops: u64,
    /// For reads: keys found.
    pub found: Option<u64>,
    /// Key and value bytes moved.
    pub bytes: u64,
    /// Elapsed kernel-clock time, in ns.
    pub elapsed_ns: u64,
    /// Per-operation latency.
    pub latency: LatencySummary,
    /// Database uptime at the end, in ns.
    pub db_uptime_ns: u64,
    /// Engine counters at the end.
    pub db_stats: DbStats,
    /// System calls during the benchmark, by kind.
    pub syscalls: SyscallCounts,
}

impl BenchmarkResult {
    /// Adds db_bench's derived rates to what was measured.
    pub fn new(m: Measured) -> Self {
        let rates = Rates::new(m.ops, m.elapsed_ns, m.bytes);
        BenchmarkResult {
            name: m.name,
            op: if m.name.is_read() {
                OpKind::Read
            } else {
                OpKind::Write
            },
            ops: m.ops,
            found: m.found,
            bytes: m.bytes,
            elapsed_ns: m.elapsed_ns,
            micros_per_op: rates.micros_per_op,
            ops_per_sec: rates.ops_per_sec,
            mb_per_sec: rates.mb_per_sec,
            latency: m.latency,
            db_uptime_ns: m.db_uptime_ns,
            write_amplification: m.db_stats.write_amplification(),
            db_stats: m.db_stats,
            syscalls: m.syscalls,
        }
    }
}

/// db_bench's derived rates (its `Stats::Report`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rates {
    /// Operations counted (at least 1: db_bench pretends one op was done).
    pub ops: u64,
    /// Elapsed seconds (at least [`ELAPSED_MIN_SECS`]).
    pub seconds: f64,
    /// Mean microseconds per operation.
    pub micros_per_op: f64,
    /// Operations per second.
    pub ops_per_sec: f64,
    /// MB (2^20 bytes) per second.
    pub mb_per_sec: f64,
}

impl Rates {
    /// Rates for `ops` operations moving `bytes` in `elapsed_ns`.
    pub fn new(ops: u64, elapsed_ns: u64, bytes: u64) -> Self {
        let ops = ops.max(1);
        let seconds = (elapsed_ns as f64 / 1e9).max(ELAPSED_MIN_SECS);
        Rates {
            ops,
            seconds,
            micros_per_op: seconds * 1e6 / ops as f64,
            ops_per_sec: ops as f64 / seconds,
            mb_per_sec: bytes as f64 / MB / seconds,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_match_db_bench_arithmetic() {
        // db_bench: fillrandom 10000 ops in 0.064 s moving 116 bytes each.
        let r = Rates::new(10_000, 63_680_000, 1_160_000);
        assert!((r.micros_per_op - 6.368).abs() < 1e-9);
        assert_eq!(r.ops_per_sec as i64, 157_035);
        assert!((r.mb_per_sec - 17.372).abs() < 1e-3);
    }

    #[test]
    fn no_ops_and_no_time_do_not_divide_by_zero() {
        let r = Rates::new(0, 0, 0);
        assert_eq!(r.ops, 1);
        assert!(r.micros_per_op.is_finite() && r.ops_per_sec.is_finite());
        assert_eq!(r.mb_per_sec, 0.0);
    }
}
