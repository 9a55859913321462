//! `resystance sim --seeds A..B`: a seed campaign on the simulated kernel, in the spirit of
//! TigerBeetle's VOPR. Each seed builds a fresh simulated machine and drives the engine with a
//! random workload checked against a model of the acknowledged state, under injected faults
//! and (with `--crash`) one power loss at a random system call; every failure is followed by
//! a power loss, a restart with faults off and a check that exactly the acknowledged writes
//! came back. Some seeds also run their workload under the three compaction modes and compare
//! the tables byte for byte.
//!
//! Everything a seed does derives from the seed, so a failing seed is reproduced by running
//! it alone ([`repro_line`]). The campaign runs seeds on rayon threads and reads the host
//! clock only for its seeds-per-second figure; the engine and the sim never do.

mod pass;

pub mod cli;

use std::ops::Range;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use resystance_sim::{CpuModel, FaultCounts, FaultProfile};

use crate::options::{BackgroundMode, CompactionMode, WalRecoveryMode};
pub use pass::{campaign_options, run_pass, Model, PassPlan, PassResult, WalDamage, DB_DIR};

/// Workload operations per seed when `--ops` is not given.
pub const OPS_DEFAULT: u64 = 300;
/// Every this many seeds (seed % N == 0) also runs the three-mode check by default.
pub const THREE_MODE_EVERY_DEFAULT: u64 = 8;
/// The three-mode check runs at most this many operations: it adds three passes per checked
/// seed, and with 300 (a default seed's all) `sim --seeds 0..200 --faults heavy --crash` took
/// 38.7 s instead of 22.7 s here (2026-11-25, beside other builds).
pub const THREE_MODE_OPS_MAX: u64 = 150;
/// Detected corruptions the report quotes.
pub const CORRUPTION_EXAMPLES_MAX: usize = 3;
/// Stream id of the seed's own decisions (the crash point), apart from the workload's.
const PLAN_STREAM: u64 = 0xc4a5;

/// A fault profile and the name the user gave it (a preset or a file), for the repro line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Faults {
    /// As given to `--faults`.
    pub name: String,
    /// The rates.
    pub profile: FaultProfile,
}

/// A CPU cost profile and the name the user gave it (a preset or a file), for the repro line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuProfile {
    /// As given to `--cpu`.
    pub name: String,
    /// The costs.
    pub model: CpuModel,
}

/// A deliberately broken harness, so tests can see a campaign fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sabotage {
    /// From this seed on, the harness acknowledges a write in its model that it never gives
    /// the engine: a lost write the checks must report.
    LostWriteFrom(u64),
}

/// What a campaign runs.
#[derive(Clone, Debug)]
pub struct CampaignConfig {
    /// Seeds, half-open.
    pub seeds: Range<u64>,
    /// Faults injected until a seed's first failure; `None`: no faults.
    pub faults: Option<Faults>,
    /// The CPU cost profile; `None`: this host's measured costs.
    pub cpu: Option<CpuProfile>,
    /// One power loss per seed at a random system call.
    pub crash: bool,
    /// Workload operations per seed.
    pub ops: u64,
    /// Threads; 0: one per core.
    pub jobs: usize,
    /// Seeds whose number is a multiple of this also run the three-mode check; 0: none.
    pub three_mode_every: u64,
    /// Test hook.
    pub sabotage: Option<Sabotage>,
}

impl CampaignConfig {
    /// Seeds `seeds`, no faults, no crash, default operations, every core, the default
    /// three-mode sampling.
    pub fn new(seeds: Range<u64>) -> CampaignConfig {
        CampaignConfig {
            seeds,
            faults: None,
            cpu: None,
            crash: false,
            ops: OPS_DEFAULT,
            jobs: 0,
            three_mode_every: THREE_MODE_EVERY_DEFAULT,
            sabotage: None,
        }
    }
}

/// What one seed did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeedOutcome {
    /// The seed.
    pub seed: u64,
    /// Its compaction mode.
    pub mode: CompactionMode,
    /// xxh3 over its passes' event digests: same seed and configuration, same value.
    pub digest: u64,
    /// Faults injected, over its passes.
    pub faults: FaultCounts,
    /// Power losses, over its passes.
    pub crashes: u64,
    /// Recoveries checked against the model.
    pub recoveries: u64,
    /// The system call the planned power loss replaced, if `--crash`.
    pub crash_at_syscall: Option<u64>,
    /// Damage the engine detected (injected bit flips explain it).
    pub corruption: Option<String>,
    /// How WAL damage showed, if a pass ended on it.
    pub wal_damage: WalDamage,
    /// Whether the three modes were run and compared.
    pub three_mode_checked: bool,
    /// What failed, if anything.
    pub failure: Option<String>,
}

/// Adds `b` into `a`, class by class.
pub fn add_fault_counts(a: &mut FaultCounts, b: &FaultCounts) {
    a.read_eio += b.read_eio;
    a.write_eio += b.write_eio;
    a.sync_eio += b.sync_eio;
    a.short_read += b.short_read;
    a.short_write += b.short_write;
    a.enospc += b.enospc;
    a.disk_full += b.disk_full;
    a.latency_spike += b.latency_spike;
    a.bit_flip += b.bit_flip;
}

/// The compaction mode of `seed`: the three take turns.
pub fn mode_of(seed: u64) -> CompactionMode {
    CompactionMode::ALL[(seed % 3) as usize]
}

/// The WAL recovery mode of `seed`'s recoveries after power losses: point-in-time recovery
/// (RocksDB's default) and tolerate-corrupted-tail-records take turns, independently of the
/// compaction mode. Reopens after a clean close use absolute-consistency in every seed.
pub fn wal_mode_of(seed: u64) -> WalRecoveryMode {
    if (seed / 3) % 2 == 0 {
        WalRecoveryMode::PointInTimeRecovery
    } else {
        WalRecoveryMode::TolerateCorruptedTailRecords
    }
}

/// Runs one seed: a pass with faults; with `crash`, a second pass of the same seed with a
/// power loss at a system call drawn uniformly from the first pass's calls (up to that call
/// the two are the same run); and, on sampled seeds, the three-mode check.
pub fn run_seed(cfg: &CampaignConfig, seed: u64) -> SeedOutcome {
    let mode = mode_of(seed);
    let mut outcome = SeedOutcome {
        seed,
        mode,
        digest: 0,
        faults: FaultCounts::default(),
        crashes: 0,
        recoveries: 0,
        crash_at_syscall: None,
        corruption: None,
        wal_damage: WalDamage::None,
        three_mode_checked: false,
        failure: None,
    };
    let lose_a_write = matches!(cfg.sabotage, Some(Sabotage::LostWriteFrom(s)) if seed >= s);
    let plan = PassPlan {
        seed,
        mode,
        background: BackgroundMode::Virtual,
        faults: cfg
            .faults
            .as_ref()
            .map(|f| f.profile.clone())
            .unwrap_or_default(),
        cpu: cpu_of(cfg),
        crash_at_syscall: None,
        ops: cfg.ops,
        lose_a_write,
        wal_mode: wal_mode_of(seed),
    };
    let mut digests = Vec::new();
    let mut take = |outcome: &mut SeedOutcome, what: &str, r: &PassResult| {
        digests.push(r.digest);
        add_fault_counts(&mut outcome.faults, &r.faults);
        outcome.crashes += r.crashes;
        outcome.recoveries += r.recoveries;
        if outcome.corruption.is_none() {
            outcome.corruption = r.corruption.clone();
            outcome.wal_damage = r.wal_damage;
        }
        if outcome.failure.is_none() {
            outcome.failure = r.failure.as_ref().map(|f| format!("{what}: {f}"));
        }
    };
    let first = guarded(|| run_pass(&plan, false));
    take(&mut outcome, "pass without the power loss", &first);
    if cfg.crash && outcome.failure.is_none() && first.syscalls > 0 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(PLAN_STREAM);
        let at = rng.gen_range(0..first.syscalls);
        outcome.crash_at_syscall = Some(at);
        let crashing = PassPlan {
            crash_at_syscall: Some(at),
            ..plan.clone()
        };
        let second = guarded(|| run_pass(&crashing, false));
        take(
            &mut outcome,
            &format!("pass with power loss at call {at} of {}", first.syscalls),
            &second,
        );
        if outcome.failure.is_none() && !second.planned_crash_fired {
            // Up to call `at` the two passes are the same run: the crash must come.
            outcome.failure = Some(format!(
                "the planned power loss at call {at} of {} never came",
                first.syscalls
            ));
        }
    }
    if outcome.failure.is_none() && cfg.three_mode_every > 0 && seed % cfg.three_mode_every == 0 {
        outcome.three_mode_checked = true;
        if let Err(f) = three_modes(
            seed,
            cfg.ops.min(THREE_MODE_OPS_MAX),
            cpu_of(cfg),
            &mut digests,
        ) {
            outcome.failure = Some(format!("three-mode check: {f}"));
        }
    }
    let bytes: Vec<u8> = digests.iter().flat_map(|d| d.to_le_bytes()).collect();
    outcome.digest = xxhash_rust::xxh3::xxh3_64(&bytes);
    outcome
}

/// Runs a pass, turning a panic into a failure.
fn guarded(f: impl FnOnce() -> PassResult) -> PassResult {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|p| {
        let msg = p
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".into());
        PassResult {
            failure: Some(format!("panic: {msg}")),
            ..PassResult::default()
        }
    })
}

/// The seed's workload without faults, jobs inline (their points do not depend on timing),
/// under each compaction mode: every table must be the same, byte for byte.
fn three_modes(seed: u64, ops: u64, cpu: CpuModel, digests: &mut Vec<u64>) -> Result<(), String> {
    let mut runs = Vec::new();
    for mode in CompactionMode::ALL {
        let plan = PassPlan {
            seed,
            mode,
            background: BackgroundMode::Inline,
            faults: FaultProfile::default(),
            cpu,
            crash_at_syscall: None,
            ops,
            lose_a_write: false,
            wal_mode: WalRecoveryMode::PointInTimeRecovery,
        };
        let r = guarded(|| run_pass(&plan, true));
        if let Some(f) = r.failure.as_ref().or(r.corruption.as_ref()) {
            return Err(format!("{mode}: {f}"));
        }
        digests.push(r.digest);
        runs.push((mode, r.tables));
    }
    let (base_mode, base) = &runs[0];
    if base.is_empty() {
        return Err(format!("{base_mode} wrote no tables"));
    }
    for (mode, tables) in &runs[1..] {
        if tables.keys().ne(base.keys()) {
            return Err(format!(
                "{mode} left tables {:?}, {base_mode} {:?}",
                tables.keys().collect::<Vec<_>>(),
                base.keys().collect::<Vec<_>>()
            ));
        }
        for (name, bytes) in tables {
            let b = &base[name];
            if bytes != b {
                let at = bytes.iter().zip(b).position(|(x, y)| x != y);
                return Err(format!(
                    "{name} differs between {mode} ({} B) and {base_mode} ({} B), first at byte {}",
                    bytes.len(),
                    b.len(),
                    at.map_or_else(|| "the shorter's end".into(), |a| a.to_string())
                ));
            }
        }
    }
    Ok(())
}

/// What a campaign found.
#[derive(Clone, Debug)]
pub struct CampaignReport {
    /// Seeds run (seeds past a failure are skipped).
    pub seeds_run: u64,
    /// Seeds above the first failing one that were not run.
    pub seeds_skipped: u64,
    /// Host time of the whole campaign.
    pub elapsed: Duration,
    /// Faults injected, by class.
    pub faults: FaultCounts,
    /// Power losses.
    pub crashes: u64,
    /// Recoveries checked.
    pub recoveries: u64,
    /// Seeds that ended on damage the engine detected (bit flips on the media).
    pub corruption_seeds: u64,
    /// Of those, seeds where an open refused a WAL with a flipped bit as corruption.
    pub wal_refused_seeds: u64,
    /// Of those, seeds where recovery dropped acknowledged writes after a flipped bit in a
    /// WAL and reported the drop.
    pub wal_reported_drop_seeds: u64,
    /// The lowest seeds that ended on detected damage, with what the engine said (at most
    /// [`CORRUPTION_EXAMPLES_MAX`]).
    pub corruption_examples: Vec<(u64, String)>,
    /// Seeds whose three modes wrote the same tables.
    pub three_mode_checks: u64,
    /// Seeds run per compaction mode, in [`CompactionMode::ALL`]'s order.
    pub seeds_per_mode: [u64; 3],
    /// xxh3 over every seed's digest, in seed order.
    pub digest: u64,
    /// The lowest failing seed.
    pub first_failure: Option<SeedOutcome>,
}

impl CampaignReport {
    /// Seeds per host second.
    pub fn seeds_per_sec(&self) -> f64 {
        self.seeds_run as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Bytes from which the C allocator maps every allocation on its own (see below).
const MMAP_THRESHOLD_BYTES: i32 = 1 << 20;

/// Seeds open many databases, each allocating tens of MiB of zeroed memory — BPF maps on the
/// vm, io_uring buffers on the simulated kernel, the twin's windows — of which a run touches
/// little. glibc serves an allocation that large from fresh zero pages (`mmap`), which cost
/// only where touched, until a free raises its threshold; from then on it reuses heap memory
/// and must clear all of it (this made `memset` and the page faults it takes half of a
/// campaign's CPU). A fixed threshold keeps them mapped. Process-wide, harmless elsewhere.
fn keep_large_allocations_mapped() {
    // SAFETY: mallopt only sets an allocator parameter; M_MMAP_THRESHOLD (-3) takes bytes.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES);
    }
}

/// Runs every seed of `cfg` on `cfg.jobs` threads; `progress(done)` after each seed. Seeds
/// above a failing one are skipped (the report names the lowest failing seed either way).
pub fn run_campaign(
    cfg: &CampaignConfig,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<CampaignReport, String> {
    use rayon::prelude::*;
    keep_large_allocations_mapped();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(cfg.jobs)
        .build()
        .map_err(|e| format!("starting {} threads: {e}", cfg.jobs))?;
    let start = Instant::now();
    let lowest_failure = AtomicU64::new(u64::MAX);
    let done = AtomicU64::new(0);
    let mut outcomes: Vec<SeedOutcome> = pool.install(|| {
        cfg.seeds
            .clone()
            .into_par_iter()
            .filter_map(|seed| {
                if seed > lowest_failure.load(Ordering::Relaxed) {
                    return None;
                }
                let o = run_seed(cfg, seed);
                if o.failure.is_some() {
                    lowest_failure.fetch_min(seed, Ordering::Relaxed);
                }
                progress(done.fetch_add(1, Ordering::Relaxed) + 1);
                Some(o)
            })
            .collect()
    });
    let elapsed = start.elapsed();
    outcomes.sort_by_key(|o| o.seed);
    let mut report = CampaignReport {
        seeds_run: outcomes.len() as u64,
        seeds_skipped: (cfg.seeds.end - cfg.seeds.start).saturating_sub(outcomes.len() as u64),
        elapsed,
        faults: FaultCounts::default(),
        crashes: 0,
        recoveries: 0,
        corruption_seeds: 0,
        wal_refused_seeds: 0,
        wal_reported_drop_seeds: 0,
        corruption_examples: Vec::new(),
        three_mode_checks: 0,
        seeds_per_mode: [0; 3],
        digest: 0,
        first_failure: None,
    };
    let mut digests = Vec::with_capacity(outcomes.len() * 8);
    for o in &outcomes {
        add_fault_counts(&mut report.faults, &o.faults);
        report.crashes += o.crashes;
        report.recoveries += o.recoveries;
        if let Some(c) = &o.corruption {
            report.corruption_seeds += 1;
            report.wal_refused_seeds += u64::from(o.wal_damage == WalDamage::Refused);
            report.wal_reported_drop_seeds += u64::from(o.wal_damage == WalDamage::Reported);
            if report.corruption_examples.len() < CORRUPTION_EXAMPLES_MAX {
                report.corruption_examples.push((o.seed, c.clone()));
            }
        }
        report.three_mode_checks += u64::from(o.three_mode_checked && o.failure.is_none());
        let m = CompactionMode::ALL
            .iter()
            .position(|&m| m == o.mode)
            .expect("a mode of ALL");
        report.seeds_per_mode[m] += 1;
        digests.extend_from_slice(&o.digest.to_le_bytes());
    }
    report.digest = xxhash_rust::xxh3::xxh3_64(&digests);
    report.first_failure = outcomes
        .into_iter()
        .filter(|o| o.failure.is_some())
        .min_by_key(|o| o.seed);
    Ok(report)
}

/// The CPU costs `cfg` runs with.
fn cpu_of(cfg: &CampaignConfig) -> CpuModel {
    cfg.cpu
        .as_ref()
        .map_or_else(CpuModel::this_host, |c| c.model)
}

/// The command that runs `seed` alone under `cfg`'s settings.
pub fn repro_line(cfg: &CampaignConfig, seed: u64) -> String {
    let mut line = format!("resystance sim --seeds {seed}..{}", seed + 1);
    if let Some(f) = &cfg.faults {
        line += &format!(" --faults {}", cli::shell_word(&f.name));
    }
    if let Some(c) = &cfg.cpu {
        line += &format!(" --cpu {}", cli::shell_word(&c.name));
    }
    if cfg.crash {
        line += " --crash";
    }
    line += &format!(" --ops {}", cfg.ops);
    if cfg.three_mode_every != THREE_MODE_EVERY_DEFAULT {
        line += &format!(" --three-mode-every {}", cfg.three_mode_every);
    }
    if let Some(Sabotage::LostWriteFrom(s)) = cfg.sabotage {
        line += &format!(" --sabotage lost-write-from={s}");
    }
    line
}
