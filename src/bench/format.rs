//! The text report: db_bench's result line, then latency and engine statistics.

use std::fmt::Write as _;

use super::compare::{Comparison, ModeComparison};
use super::latency::LatencySummary;
use super::results::{BenchmarkResult, Rates, GB, MB};
use crate::stats::DbStats;

/// db_bench 7.8's result line (`Stats::Report`): name, µs/op, ops/sec, seconds, operations,
/// then the MB/s rate when bytes moved and the benchmark's message, e.g.
/// `fillrandom   :       6.368 micros/op 156855 ops/sec 0.064 seconds 10000 operations;   17.4 MB/s`.
pub fn db_bench_line(name: &str, rates: &Rates, bytes: u64, message: &str) -> String {
    let mut extra = String::new();
    if bytes > 0 {
        extra = format!("{:6.1} MB/s", rates.mb_per_sec);
    }
    // db_bench's AppendWithSpace.
    if !message.is_empty() {
        if !extra.is_empty() {
            extra.push(' ');
        }
        extra.push_str(message);
    }
    format!(
        "{name:<12} : {:11.3} micros/op {} ops/sec {:.3} seconds {} operations;{}{extra}",
        rates.micros_per_op,
        // db_bench prints the throughput cast to long: truncated, not rounded.
        rates.ops_per_sec as i64,
        rates.seconds,
        rates.ops,
        if extra.is_empty() { "" } else { " " },
    )
}

/// db_bench's readrandom message; its trailing newline leaves a blank line after the result,
/// as db_bench's output has.
pub fn found_message(found: u64, reads: u64) -> String {
    format!("({found} of {reads} found)\n")
}

/// The latency block, shaped like db_bench's `--histogram` header.
pub fn latency_lines(op: &str, s: &LatencySummary) -> String {
    format!(
        "Microseconds per {op}:\nCount: {} Average: {:.4}  Max: {:.2}\nPercentiles: P50: {:.2} P99: {:.2} P99.9: {:.2}\n",
        s.count, s.mean_us, s.max_us, s.p50_us, s.p99_us, s.p999_us
    )
}

/// Bytes as db_bench's binary MB, one decimal.
fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / MB)
}

/// Nanoseconds as seconds, three decimals.
fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// The engine's statistics, as of `uptime_ns` after the database was opened.
pub fn db_stats_lines(stats: &DbStats, uptime_ns: u64) -> String {
    let mut out = String::new();
    let c = &stats.compaction;
    let f = &stats.flush;
    let s = &stats.stall;
    let uptime = secs(uptime_ns).max(1e-9);

    // RocksDB's "Cumulative compaction" line counts flushes as L0 compactions (bytes written
    // and time), so this line does too, to be read side by side with db_bench's.
    let written = f.bytes_written + c.bytes_written;
    let _ = writeln!(
        out,
        "Cumulative compaction: {:.2} GB write, {:.2} MB/s write, {:.2} GB read, {:.2} MB/s read, {:.1} seconds",
        written as f64 / GB,
        written as f64 / MB / uptime,
        c.bytes_read as f64 / GB,
        c.bytes_read as f64 / MB / uptime,
        secs(f.time_ns + c.time_ns),
    );
    let _ = writeln!(
        out,
        "Compaction: {} jobs ({} trivial moves), {} input files, {} output files, {} read, {} written, {} data blocks read, {} entries in, {} out, {:.3} seconds{}",
        c.jobs,
        c.trivial_moves,
        c.input_files,
        c.output_files,
        mb(c.bytes_read),
        mb(c.bytes_written),
        c.data_blocks_read,
        c.entries_in,
        c.entries_out,
        secs(c.time_ns),
        if c.program_ns > 0 {
            format!(" ({:.3} inside the compaction program)", secs(c.program_ns))
        } else {
            String::new()
        },
    );
    if c.readahead.windows > 0 {
        let _ = writeln!(
            out,
            "Compaction read-ahead: {} windows read while the merge ran, {} of them late (the merge waited), {} io_uring_enter only to wait",
            c.readahead.windows, c.readahead.late, c.readahead.wait_enters
        );
    }

    out.push_str(&syscalls_line("Compaction syscalls", &c.syscalls));
    let _ = writeln!(
        out,
        "Flush: {} flushes, {} written, {:.3} seconds",
        f.flushes,
        mb(f.bytes_written),
        secs(f.time_ns)
    );
    let _ = writeln!(
        out,
        "Stall: {:.3} seconds (stop {:.3}, delay {:.3}; {} writes stopped, {} delayed)",
        secs(s.stop_ns + s.delay_ns),
        secs(s.stop_ns),
        secs(s.delay_ns),
        s.stopped_writes,
        s.delayed_writes
    );
    let _ = writeln!(
        out,
        "Write amplification: {:.2} ({} user, {} WAL)",
        stats.write_amplification(),
        mb(stats.user_bytes_written),
        mb(stats.wal_bytes_written)
    );
    let levels: Vec<String> = stats
        .levels
        .iter()
        .filter(|l| l.files > 0)
        .map(|l| format!("L{} {} files {}", l.level, l.files, mb(l.bytes)))
        .collect();
    if levels.is_empty() {
        out.push_str("Levels: empty\n");
    } else {
        let _ = writeln!(out, "Levels: {}", levels.join(", "));
    }
    out
}

/// Everything printed for one benchmark: the db_bench line, latency, engine statistics.
pub fn benchmark_report(r: &BenchmarkResult) -> String {
    let rates = Rates::new(r.ops, r.elapsed_ns, r.bytes);
    let message = r
        .found
        .map_or_else(String::new, |found| found_message(found, r.ops));
    let mut out = db_bench_line(r.name.name(), &rates, r.bytes, &message);
    out.push('\n');
    out.push_str(&latency_lines(r.op.name(), &r.latency));
    out.push_str(&db_stats_lines(&r.db_stats, r.db_uptime_ns));
    out.push_str(&syscalls_line("Syscalls (whole benchmark)", &r.syscalls));
    out
}

/// `label: kind n, kind n (total t)`, or `label: none`.
fn syscalls_line(label: &str, counts: &resystance_traces::SyscallCounts) -> String {
    let calls: Vec<String> = counts
        .nonzero()
        .map(|(kind, n)| format!("{kind} {n}"))
        .collect();
    if calls.is_empty() {
        format!("{label}: none\n")
    } else {
        format!("{label}: {} (total {})\n", calls.join(", "), counts.total())
    }
}

/// The side-by-side table of a multi-mode run: per benchmark, one row per compaction mode
/// with throughput, write latency, compaction time (total and per MB read), compaction
/// syscalls and stall time, and ratios against the first mode (baseline when given first);
/// compaction time and syscalls are compared per MB compacted. Over several rounds
/// (`--repeat`) the figures are medians, the ratios medians of each round's ratio, and every
/// round's order and ratios follow the table. Empty for a single mode.
pub fn comparison_table(comparisons: &[Comparison]) -> String {
    // No ratio against nothing (a benchmark that ran no compaction): a dash.
    let ratio = |r: Option<f64>, digits: usize| {
        r.map_or_else(|| "-".to_string(), |r| format!("{r:.digits$}"))
    };
    let mut out = String::new();
    for cmp in comparisons {
        if cmp.rounds > 1 {
            let _ = writeln!(
                out,
                "Comparison, {}: medians of {} rounds, the first mode rotating (ratios: the median of each round's ratio against {} in that round; compaction figures since the database opened):",
                cmp.benchmark.name(),
                cmp.rounds,
                cmp.reference
            );
        } else {
            let _ = writeln!(
                out,
                "Comparison, {} (ratios against {}; compaction figures since the database opened):",
                cmp.benchmark.name(),
                cmp.reference
            );
        }
        let _ = writeln!(
            out,
            "{:<11} {:>12} {:>6} {:>8} {:>8} {:>9} {:>6} {:>11} {:>8} {:>8} {:>10} {:>9} {:>8}",
            "mode",
            "ops/sec",
            "x",
            "P50 us",
            "P99 us",
            "P99.9 us",
            "x P99",
            "compact s",
            "ms/MB",
            "x ms/MB",
            "syscalls",
            "x sys/MB",
            "stall s"
        );
        for m in &cmp.modes {
            let f = &m.median;
            let r = &m.median_ratio;
            let _ = writeln!(
                out,
                "{:<11} {:>12.0} {:>6} {:>8.2} {:>8.2} {:>9.2} {:>6} {:>11.3} {:>8.3} {:>8} {:>10.0} {:>9} {:>8.3}",
                m.compaction_mode.to_string(),
                f.ops_per_sec,
                ratio(r.ops_per_sec, 2),
                f.p50_us,
                f.p99_us,
                f.p999_us,
                ratio(r.p99, 2),
                f.compaction_s,
                f.compaction_ms_per_mb,
                ratio(r.compaction_ms_per_mb, 2),
                f.compaction_syscalls,
                ratio(r.compaction_syscalls_per_mb, 3),
                f.stall_s,
            );
        }
        if cmp.rounds > 1 {
            out.push_str(&rounds_lines(cmp));
        }
        out.push('\n');
    }
    out
}

/// Under a comparison of several rounds: the order each round ran in, then every round's
/// ratios against the reference mode, one line per figure and mode.
fn rounds_lines(cmp: &Comparison) -> String {
    let mut out = String::new();
    let orders: Vec<String> = (1..=cmp.rounds)
        .map(|round| {
            let first = cmp
                .modes
                .iter()
                .find(|m| m.ran_first_in.contains(&round))
                .expect("some mode ran first in every round");
            format!("{round}: {} first", first.compaction_mode)
        })
        .collect();
    let _ = writeln!(out, "Rounds ({}):", orders.join(", "));
    let per_round =
        |label: &str, pick: fn(&ModeComparison) -> &Vec<Option<f64>>, out: &mut String| {
            for m in cmp.modes.iter().skip(1) {
                let values: Vec<String> = pick(m)
                    .iter()
                    .map(|r| r.map_or_else(|| "-".to_string(), |r| format!("{r:.2}")))
                    .collect();
                let _ = writeln!(
                    out,
                    "  {label:<10} {:<11} {}",
                    m.compaction_mode.to_string(),
                    values.join(" ")
                );
            }
        };
    per_round("x ops/sec", |m| &m.ratios.ops_per_sec, &mut out);
    per_round("x P99", |m| &m.ratios.p99, &mut out);
    per_round("x ms/MB", |m| &m.ratios.compaction_ms_per_mb, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use resystance_traces::SyscallKind;

    use super::*;
    use crate::bench::cli::Benchmark;
    use crate::bench::compare::{compare, median, round_order};
    use crate::bench::results::{Measured, ModeRun};
    use crate::options::CompactionMode;
    use crate::stats::LevelStats;

    #[test]
    fn write_line_matches_db_bench() {
        // Numbers from a db_bench 7.8.3 run on this machine:
        // fillrandom 10000 ops, 0.063680 s, 116 bytes each.
        let rates = Rates::new(10_000, 63_680_000, 1_160_000);
        assert_eq!(
            db_bench_line("fillrandom", &rates, 1_160_000, ""),
            "fillrandom   :       6.368 micros/op 157035 ops/sec 0.064 seconds 10000 operations;   17.4 MB/s"
        );
    }

    #[test]
    fn read_line_carries_the_found_message() {
        let rates = Rates::new(10_000, 23_070_000, 1_160_000);
        assert_eq!(
            db_bench_line("readrandom", &rates, 1_160_000, &found_message(10_000, 10_000)),
            "readrandom   :       2.307 micros/op 433463 ops/sec 0.023 seconds 10000 operations;   48.0 MB/s (10000 of 10000 found)\n"
        );
    }

    #[test]
    fn nothing_found_means_no_rate_but_the_message() {
        let rates = Rates::new(5, 5_000, 0);
        // 5 / 5e-6 is 999999.99… in binary floating point; db_bench's cast truncates it.
        assert_eq!(
            db_bench_line("readrandom", &rates, 0, &found_message(0, 5)),
            "readrandom   :       1.000 micros/op 999999 ops/sec 0.000 seconds 5 operations; (0 of 5 found)\n"
        );
    }

    #[test]
    fn long_names_are_not_cut() {
        let rates = Rates::new(1, 1_000, 0);
        assert!(db_bench_line("averyverylongname", &rates, 0, "")
            .starts_with("averyverylongname :       1.000 micros/op"));
    }

    #[test]
    fn latency_block() {
        let s = LatencySummary {
            count: 10,
            mean_us: 6.36694,
            p50_us: 5.1498,
            p99_us: 13.59,
            p999_us: 60.62,
            max_us: 3470.0,
        };
        assert_eq!(
            latency_lines("write", &s),
            "Microseconds per write:\nCount: 10 Average: 6.3669  Max: 3470.00\nPercentiles: P50: 5.15 P99: 13.59 P99.9: 60.62\n"
        );
    }

    fn sample_stats() -> DbStats {
        let mut stats = DbStats::default();
        stats.compaction.jobs = 3;
        stats.compaction.trivial_moves = 1;
        stats.compaction.input_files = 6;
        stats.compaction.output_files = 4;
        stats.compaction.bytes_read = 12 << 20;
        stats.compaction.bytes_written = 10 << 20;
        stats.compaction.data_blocks_read = 3072;
        stats.compaction.time_ns = 50_000_000;
        stats.compaction.syscalls.add(SyscallKind::Pread, 3072);
        stats.compaction.syscalls.add(SyscallKind::Pwrite, 40);
        stats.flush.flushes = 7;
        stats.flush.bytes_written = 21 << 20;
        stats.flush.time_ns = 90_000_000;
        stats.stall.stop_ns = 1_500_000_000;
        stats.stall.stopped_writes = 2;
        stats.user_bytes_written = 22 << 20;
        stats.wal_bytes_written = 23 << 20;
        stats.levels = vec![
            LevelStats {
                level: 0,
                files: 3,
                bytes: 9 << 20,
            },
            LevelStats {
                level: 1,
                files: 0,
                bytes: 0,
            },
            LevelStats {
                level: 2,
                files: 2,
                bytes: 10 << 20,
            },
        ];
        stats
    }

    #[test]
    fn stats_block() {
        let text = db_stats_lines(&sample_stats(), 1_000_000_000);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            vec![
                "Cumulative compaction: 0.03 GB write, 31.00 MB/s write, 0.01 GB read, 12.00 MB/s read, 0.1 seconds",
                "Compaction: 3 jobs (1 trivial moves), 6 input files, 4 output files, 12.0 MB read, 10.0 MB written, 3072 data blocks read, 0 entries in, 0 out, 0.050 seconds",
                "Compaction syscalls: pread64 3072, pwrite64 40 (total 3112)",
                "Flush: 7 flushes, 21.0 MB written, 0.090 seconds",
                "Stall: 1.500 seconds (stop 1.500, delay 0.000; 2 writes stopped, 0 delayed)",
                "Write amplification: 1.41 (22.0 MB user, 23.0 MB WAL)",
                "Levels: L0 3 files 9.0 MB, L2 2 files 10.0 MB",
            ]
        );
    }

    #[test]
    fn empty_stats_block() {
        let text = db_stats_lines(&DbStats::default(), 0);
        assert!(text.contains("Compaction syscalls: none\n"));
        assert!(text.contains("Levels: empty\n"));
        assert!(text.contains("Write amplification: 0.00"));
    }

    #[test]
    fn full_report_of_a_read_benchmark() {
        let r = BenchmarkResult::new(Measured {
            name: Benchmark::ReadRandom,
            ops: 4,
            found: Some(3),
            bytes: 348,
            elapsed_ns: 4_000,
            latency: LatencySummary::default(),
            db_uptime_ns: 1_000_000_000,
            db_stats: sample_stats(),
            syscalls: {
                let mut c = resystance_traces::SyscallCounts::default();
                c.add(SyscallKind::Pread, 7);
                c.add(SyscallKind::Fstat, 2);
                c
            },
        });
        let text = benchmark_report(&r);
        assert!(
            text.starts_with("readrandom   :       1.000 micros/op 1000000 ops/sec 0.000 seconds 4 operations;   83.0 MB/s (3 of 4 found)\n\nMicroseconds per read:\n"),
            "{text}"
        );
        assert!(text.ends_with(
            "Levels: L0 3 files 9.0 MB, L2 2 files 10.0 MB\nSyscalls (whole benchmark): pread64 7, fstat 2 (total 9)\n"
        ), "{text}");
    }

    fn mode_run(
        mode: CompactionMode,
        round: u32,
        ops: u64,
        compaction_ns: u64,
        preads: u64,
    ) -> ModeRun {
        let mut stats = sample_stats();
        stats.compaction.time_ns = compaction_ns;
        stats.compaction.bytes_read = 100 << 20;
        stats.compaction.syscalls = Default::default();
        stats.compaction.syscalls.add(SyscallKind::Pread, preads);
        ModeRun {
            compaction_mode: mode,
            round,
            position: 0,
            benchmarks: vec![BenchmarkResult::new(Measured {
                name: Benchmark::FillRandom,
                ops,
                found: None,
                bytes: ops * 116,
                elapsed_ns: 1_000_000_000,
                latency: LatencySummary::default(),
                db_uptime_ns: 1_000_000_000,
                db_stats: stats,
                syscalls: Default::default(),
            })],
            skipped: Vec::new(),
        }
    }

    fn table(runs: &[ModeRun]) -> String {
        let mut modes: Vec<CompactionMode> = Vec::new();
        for r in runs {
            if !modes.contains(&r.compaction_mode) {
                modes.push(r.compaction_mode);
            }
        }
        comparison_table(&compare(runs, &modes))
    }

    #[test]
    fn comparison_table_gives_ratios_against_the_first_mode() {
        use CompactionMode::{Baseline, Resystance, Uring};
        assert_eq!(table(&[mode_run(Baseline, 1, 1000, 1, 1)]), "");
        let text = table(&[
            mode_run(Baseline, 1, 1000, 2_000_000_000, 1000),
            mode_run(Uring, 1, 1500, 1_000_000_000, 10),
        ]);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with("Comparison, fillrandom (ratios against baseline"),
            "{text}"
        );
        let uring: Vec<&str> = lines[3].split_whitespace().collect();
        assert_eq!(uring[0], "uring");
        assert_eq!(uring[2], "1.50", "ops/sec ratio: {text}");
        assert_eq!(uring[9], "0.50", "compaction time ratio: {text}");
        assert_eq!(uring[10], "10", "{text}");
        assert_eq!(uring[11], "0.010", "syscall ratio: {text}");
        assert_eq!(
            lines.len(),
            5,
            "one round: the table and a blank line, no per-round lines: {text}"
        );

        // A mode that compacted twice the bytes in the same time is twice as fast per MB.
        let mut more = mode_run(Resystance, 1, 1500, 2_000_000_000, 1000);
        more.benchmarks[0].db_stats.compaction.bytes_read = 200 << 20;
        let text = table(&[mode_run(Baseline, 1, 1000, 2_000_000_000, 1000), more]);
        let row: Vec<&str> = text.lines().nth(3).unwrap().split_whitespace().collect();
        assert_eq!(row[0], "resystance");
        assert_eq!(row[8], "10.000", "ms per MB: {text}");
        assert_eq!(row[9], "0.50", "per-MB compaction time ratio: {text}");
        assert_eq!(row[11], "0.500", "per-MB syscall ratio: {text}");
    }

    #[test]
    fn rounds_give_medians_and_the_median_of_each_rounds_ratio() {
        use CompactionMode::{Baseline, Uring};
        // Round 2 is twice as slow for both modes: the ratio of each round is what counts,
        // not the ratio of the medians.
        let mut runs = vec![
            mode_run(Baseline, 1, 1000, 2_000_000_000, 1000),
            mode_run(Uring, 1, 1200, 1_000_000_000, 10),
            mode_run(Uring, 2, 600, 3_000_000_000, 10),
            mode_run(Baseline, 2, 500, 4_000_000_000, 1000),
            mode_run(Baseline, 3, 1100, 2_000_000_000, 1000),
            mode_run(Uring, 3, 1100, 1_600_000_000, 10),
        ];
        runs[1].position = 1;
        runs[3].position = 1;
        runs[5].position = 1;
        let text = table(&runs);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with(
                "Comparison, fillrandom: medians of 3 rounds, the first mode rotating"
            ),
            "{text}"
        );
        let base: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(
            (base[0], base[1], base[2]),
            ("baseline", "1000", "1.00"),
            "{text}"
        );
        // Median of 2.0, 4.0, 2.0 s over 100 MB.
        assert_eq!(base[7], "2.000", "{text}");
        let uring: Vec<&str> = lines[3].split_whitespace().collect();
        assert_eq!(uring[0], "uring");
        assert_eq!(uring[1], "1100", "median ops/sec: {text}");
        // Rounds' ratios: 1.2, 1.2, 1.0 -> 1.20 (the ratio of medians would be 1.10).
        assert_eq!(uring[2], "1.20", "{text}");
        // Time ratios 0.5, 0.75, 0.8 -> 0.75.
        assert_eq!(uring[9], "0.75", "{text}");
        assert_eq!(
            lines[4],
            "Rounds (1: baseline first, 2: uring first, 3: baseline first):"
        );
        assert_eq!(
            lines[5].split_whitespace().collect::<Vec<_>>(),
            ["x", "ops/sec", "uring", "1.20", "1.20", "1.00"]
        );
        assert_eq!(
            lines[7].split_whitespace().collect::<Vec<_>>(),
            ["x", "ms/MB", "uring", "0.50", "0.75", "0.80"]
        );

        let cmp = &compare(&runs, &[Baseline, Uring])[0];
        assert_eq!(cmp.modes[1].ran_first_in, vec![2]);
        assert_eq!(cmp.modes[0].ran_first_in, vec![1, 3]);
        assert_eq!(
            cmp.modes[1].median_ratio.compaction_syscalls_per_mb,
            Some(0.01)
        );
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0]), Some(3.0));
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }

    #[test]
    fn rounds_rotate_the_first_mode() {
        use CompactionMode::{Baseline, Resystance, Uring};
        let all = [Baseline, Uring, Resystance];
        assert_eq!(round_order(&all, 0), all.to_vec());
        assert_eq!(round_order(&all, 1), vec![Uring, Resystance, Baseline]);
        assert_eq!(round_order(&all, 2), vec![Resystance, Baseline, Uring]);
        assert_eq!(round_order(&all, 3), all.to_vec());
    }
}
