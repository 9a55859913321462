//! The side-by-side comparison of compaction modes, over one or more rounds.
//!
//! A round runs every `--compaction_mode` once; `--repeat N` runs N rounds, and round `r`
//! (from 0) starts with the `r mod M`-th of the M modes, so each mode runs first equally
//! often. That matters on a real host: the first mode of an invocation runs in a process
//! whose heap, page cache and CPU caches are cold, which showed as a 10-20% handicap in
//! compaction time per MB on this VM. Each figure is the median over the rounds, and each
//! ratio is the median of the rounds' ratios against the reference mode (the first listed)
//! *in the same round*, so a disturbance that hits a whole round cancels out. Every round's
//! ratios are kept, so the spread is visible too.

use serde::Serialize;

use super::cli::Benchmark;
use super::results::{BenchmarkResult, ModeRun, MB};
use crate::options::CompactionMode;
use crate::stats::CompactionStats;

/// The median of `values` (the mean of the two middle ones for an even count), `None` when
/// empty. NaNs are a broken invariant: every figure compared is finite.
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    assert!(
        values.iter().all(|v| v.is_finite()),
        "median of non-finite figures: {values:?}"
    );
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

/// Compaction time per MB of input compacted, in ms (0 when nothing was compacted).
fn compaction_ms_per_mb(c: &CompactionStats) -> f64 {
    if c.bytes_read == 0 {
        0.0
    } else {
        c.time_ns as f64 / 1e6 / (c.bytes_read as f64 / MB)
    }
}

/// Compaction system calls per MB of input compacted (0 when nothing was compacted).
fn compaction_syscalls_per_mb(c: &CompactionStats) -> f64 {
    if c.bytes_read == 0 {
        0.0
    } else {
        c.syscalls.total() as f64 / (c.bytes_read as f64 / MB)
    }
}

/// The figures of one benchmark under one mode in one round, as the table shows them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Figures {
    /// Operations per second.
    pub ops_per_sec: f64,
    /// Median operation latency, µs.
    pub p50_us: f64,
    /// 99th percentile latency, µs.
    pub p99_us: f64,
    /// 99.9th percentile latency, µs.
    pub p999_us: f64,
    /// Wall time in compaction jobs since the database opened, s.
    pub compaction_s: f64,
    /// That per MB of input compacted, ms.
    pub compaction_ms_per_mb: f64,
    /// Compaction system calls since the database opened.
    pub compaction_syscalls: f64,
    /// Those per MB of input compacted.
    pub compaction_syscalls_per_mb: f64,
    /// Time writes were stopped or delayed, s.
    pub stall_s: f64,
}

impl Figures {
    fn of(b: &BenchmarkResult) -> Self {
        let c = &b.db_stats.compaction;
        let s = &b.db_stats.stall;
        Figures {
            ops_per_sec: b.ops_per_sec,
            p50_us: b.latency.p50_us,
            p99_us: b.latency.p99_us,
            p999_us: b.latency.p999_us,
            compaction_s: c.time_ns as f64 / 1e9,
            compaction_ms_per_mb: compaction_ms_per_mb(c),
            compaction_syscalls: c.syscalls.total() as f64,
            compaction_syscalls_per_mb: compaction_syscalls_per_mb(c),
            stall_s: (s.stop_ns + s.delay_ns) as f64 / 1e9,
        }
    }

    /// Each field's median over `all`.
    fn median_of(all: &[Figures]) -> Self {
        let m =
            |f: fn(&Figures) -> f64| median(&all.iter().map(f).collect::<Vec<_>>()).unwrap_or(0.0);
        Figures {
            ops_per_sec: m(|f| f.ops_per_sec),
            p50_us: m(|f| f.p50_us),
            p99_us: m(|f| f.p99_us),
            p999_us: m(|f| f.p999_us),
            compaction_s: m(|f| f.compaction_s),
            compaction_ms_per_mb: m(|f| f.compaction_ms_per_mb),
            compaction_syscalls: m(|f| f.compaction_syscalls),
            compaction_syscalls_per_mb: m(|f| f.compaction_syscalls_per_mb),
            stall_s: m(|f| f.stall_s),
        }
    }
}

/// A mode's ratios against the reference mode, one per round (`None` where the reference's
/// figure was 0: no ratio against nothing).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Ratios {
    /// Operations per second.
    pub ops_per_sec: Vec<Option<f64>>,
    /// P99 latency.
    pub p99: Vec<Option<f64>>,
    /// Compaction time per MB compacted.
    pub compaction_ms_per_mb: Vec<Option<f64>>,
    /// Compaction system calls per MB compacted.
    pub compaction_syscalls_per_mb: Vec<Option<f64>>,
}

fn ratio(x: f64, base: f64) -> Option<f64> {
    (base > 0.0).then(|| x / base)
}

/// The median of the rounds' ratios that exist.
fn median_ratio(per_round: &[Option<f64>]) -> Option<f64> {
    median(&per_round.iter().flatten().copied().collect::<Vec<_>>())
}

/// One mode in a benchmark's comparison.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ModeComparison {
    /// The mode.
    pub compaction_mode: CompactionMode,
    /// Each round's figures, in round order.
    pub rounds: Vec<Figures>,
    /// The rounds in which this mode ran first (1-based).
    pub ran_first_in: Vec<u32>,
    /// Medians over the rounds.
    pub median: Figures,
    /// Each round's ratios against the reference mode of the same round.
    pub ratios: Ratios,
    /// The medians of those ratios.
    pub median_ratio: MedianRatios,
}

/// Medians of a mode's per-round ratios.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct MedianRatios {
    /// Operations per second.
    pub ops_per_sec: Option<f64>,
    /// P99 latency.
    pub p99: Option<f64>,
    /// Compaction time per MB compacted.
    pub compaction_ms_per_mb: Option<f64>,
    /// Compaction system calls per MB compacted.
    pub compaction_syscalls_per_mb: Option<f64>,
}

/// One benchmark's comparison of every mode.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Comparison {
    /// The benchmark.
    pub benchmark: Benchmark,
    /// The mode ratios are taken against (the first `--compaction_mode`).
    pub reference: CompactionMode,
    /// Rounds compared.
    pub rounds: u32,
    /// One entry per mode, in flag order.
    pub modes: Vec<ModeComparison>,
}

/// The comparisons of a run whose `runs` hold every mode of `modes` once per round (each
/// [`ModeRun`] names its round), one per benchmark that every run has at the same position.
/// Empty for a single mode.
pub fn compare(runs: &[ModeRun], modes: &[CompactionMode]) -> Vec<Comparison> {
    if modes.len() < 2 {
        return Vec::new();
    }
    let rounds = runs.iter().map(|r| r.round).max().unwrap_or(0);
    // run[round - 1][mode index]
    let mut grid: Vec<Vec<Option<&ModeRun>>> = vec![vec![None; modes.len()]; rounds as usize];
    for run in runs {
        let m = modes
            .iter()
            .position(|&mode| mode == run.compaction_mode)
            .expect("every run's mode is one of the modes compared");
        let cell = &mut grid[run.round as usize - 1][m];
        assert!(cell.is_none(), "a mode ran twice in round {}", run.round);
        *cell = Some(run);
    }
    let grid: Vec<Vec<&ModeRun>> = grid
        .into_iter()
        .map(|row| row.into_iter().collect::<Option<Vec<_>>>())
        .collect::<Option<Vec<_>>>()
        .expect("every mode ran in every round");
    let reference = &grid[0][0];
    let mut out = Vec::new();
    for (i, base) in reference.benchmarks.iter().enumerate() {
        // results[round][mode]
        let Some(results): Option<Vec<Vec<&BenchmarkResult>>> = grid
            .iter()
            .map(|row| {
                row.iter()
                    .map(|run| run.benchmarks.get(i).filter(|b| b.name == base.name))
                    .collect()
            })
            .collect()
        else {
            continue;
        };
        let figures: Vec<Vec<Figures>> = results
            .iter()
            .map(|row| row.iter().map(|b| Figures::of(b)).collect())
            .collect();
        let mode_comparisons = modes
            .iter()
            .enumerate()
            .map(|(m, &mode)| {
                let mine: Vec<Figures> = figures.iter().map(|row| row[m]).collect();
                let base: Vec<Figures> = figures.iter().map(|row| row[0]).collect();
                let per_round = |f: fn(&Figures) -> f64| -> Vec<Option<f64>> {
                    mine.iter()
                        .zip(&base)
                        .map(|(x, b)| ratio(f(x), f(b)))
                        .collect()
                };
                let ratios = Ratios {
                    ops_per_sec: per_round(|f| f.ops_per_sec),
                    p99: per_round(|f| f.p99_us),
                    compaction_ms_per_mb: per_round(|f| f.compaction_ms_per_mb),
                    compaction_syscalls_per_mb: per_round(|f| f.compaction_syscalls_per_mb),
                };
                ModeComparison {
                    compaction_mode: mode,
                    ran_first_in: grid
                        .iter()
                        .filter(|row| row[m].position == 0)
                        .map(|row| row[m].round)
                        .collect(),
                    median: Figures::median_of(&mine),
                    median_ratio: MedianRatios {
                        ops_per_sec: median_ratio(&ratios.ops_per_sec),
                        p99: median_ratio(&ratios.p99),
                        compaction_ms_per_mb: median_ratio(&ratios.compaction_ms_per_mb),
                        compaction_syscalls_per_mb: median_ratio(
                            &ratios.compaction_syscalls_per_mb,
                        ),
                    },
                    rounds: mine,
                    ratios,
                }
            })
            .collect();
        out.push(Comparison {
            benchmark: base.name,
            reference: modes[0],
            rounds,
            modes: mode_comparisons,
        });
    }
    out
}

/// The order of `modes` in round `round` (from 0): rotated to start at `round mod M`.
pub fn round_order(modes: &[CompactionMode], round: u32) -> Vec<CompactionMode> {
    let mut order = modes.to_vec();
    if !order.is_empty() {
        order.rotate_left(round as usize % modes.len());
    }
    order
}
