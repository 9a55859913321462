//! `resystance sim`: the campaign's flags, its progress line and its summary.

use std::io::{IsTerminal, Write};
use std::ops::Range;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use clap::Args;
use resystance_sim::{FaultCounts, FaultProfile};

use super::{
    repro_line, run_campaign, CampaignConfig, CampaignReport, CpuProfile, Faults, Sabotage,
    OPS_DEFAULT, THREE_MODE_EVERY_DEFAULT,
};
use crate::bench::error::{EXIT_FAILURE, EXIT_USAGE};
use crate::options::CompactionMode;

/// Seeds in one campaign, at most (a guard against a typo such as `0..10000000000`).
pub const SEEDS_MAX: u64 = 100_000_000;
/// Operations per seed, at most.
pub const OPS_MAX: u64 = 1_000_000;
/// Host time between progress lines when standard error is not a terminal.
pub const PROGRESS_LOG_EVERY: Duration = Duration::from_secs(10);
/// Host time between progress updates at a terminal.
pub const PROGRESS_TTY_EVERY: Duration = Duration::from_millis(250);

/// `resystance sim` flags.
#[derive(Clone, Debug, Args)]
pub struct SimArgs {
    /// Seeds to run, half-open: A..B runs A, A+1, ..., B-1
    #[arg(long = "seeds", value_name = "A..B", value_parser = parse_seeds)]
    pub seeds: Range<u64>,

    /// Faults to inject until a seed's first failure: a preset (none, light, heavy, small-disk) or a RON file [default: none]
    #[arg(long = "faults", value_name = "PRESET|FILE")]
    pub faults: Option<String>,

    /// The simulated CPU costs: a profile (this-host) or a RON file [default: this-host]
    #[arg(long = "cpu", value_name = "PRESET|FILE")]
    pub cpu: Option<String>,

    /// Add one power loss per seed at a system call drawn from the seed's run
    #[arg(long = "crash")]
    pub crash: bool,

    /// Workload operations per seed
    #[arg(long = "ops", default_value_t = OPS_DEFAULT,
          value_parser = clap::value_parser!(u64).range(1..=OPS_MAX))]
    pub ops: u64,

    /// Threads running seeds [default: one per core]
    #[arg(long = "jobs", value_name = "J")]
    pub jobs: Option<usize>,

    /// Seeds that are multiples of N also run their workload under baseline, uring and resystance and compare every table byte for byte (0: never)
    #[arg(long = "three-mode-every", value_name = "N", default_value_t = THREE_MODE_EVERY_DEFAULT)]
    pub three_mode_every: u64,

    /// Break the harness on purpose to see the campaign fail: lost-write-from=SEED
    #[arg(long = "sabotage", hide = true, value_parser = parse_sabotage)]
    pub sabotage: Option<Sabotage>,
}

/// `A..B` with A < B and at most [`SEEDS_MAX`] seeds.
pub fn parse_seeds(s: &str) -> Result<Range<u64>, String> {
    let (a, b) = s
        .split_once("..")
        .ok_or_else(|| format!("{s:?} is not A..B (e.g. 0..1000)"))?;
    let num = |t: &str| {
        t.trim()
            .parse::<u64>()
            .map_err(|e| format!("{t:?} in {s:?}: {e}"))
    };
    let (a, b) = (num(a)?, num(b)?);
    if a >= b {
        return Err(format!("{s:?} holds no seed: the end is exclusive"));
    }
    if b - a > SEEDS_MAX {
        return Err(format!("{s:?} is more than {SEEDS_MAX} seeds"));
    }
    Ok(a..b)
}

fn parse_sabotage(s: &str) -> Result<Sabotage, String> {
    let seed = s
        .strip_prefix("lost-write-from=")
        .ok_or_else(|| format!("unknown sabotage {s:?} (lost-write-from=SEED)"))?;
    seed.parse()
        .map(Sabotage::LostWriteFrom)
        .map_err(|e| format!("{s:?}: {e}"))
}

/// The profile `--faults` names: a preset, or else a RON file.
pub fn fault_profile(name: &str) -> Result<FaultProfile, String> {
    resystance_sim::preset_or_file(
        "faults",
        name,
        FaultProfile::PRESETS,
        FaultProfile::preset,
        FaultProfile::from_ron,
    )
}

/// `word` as one shell word (quoted when it holds anything but safe characters).
pub fn shell_word(word: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "-_./=:,+".contains(c);
    if !word.is_empty() && word.chars().all(safe) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

impl SimArgs {
    /// The campaign these flags ask for; a usage error names the flag.
    pub fn config(&self) -> Result<CampaignConfig, String> {
        let faults = match &self.faults {
            None => None,
            Some(name) => Some(Faults {
                name: name.clone(),
                profile: fault_profile(name)?,
            }),
        };
        let cpu = match &self.cpu {
            None => None,
            Some(name) => Some(CpuProfile {
                name: name.clone(),
                model: crate::bench::cpu_model(name).map_err(|e| match e {
                    crate::bench::BenchError::InvalidFlags(why) => why,
                    other => other.to_string(),
                })?,
            }),
        };
        Ok(CampaignConfig {
            seeds: self.seeds.clone(),
            faults,
            cpu,
            crash: self.crash,
            ops: self.ops,
            jobs: self.jobs.unwrap_or(0),
            three_mode_every: self.three_mode_every,
            sabotage: self.sabotage,
        })
    }
}

/// The fault classes with their counts, as `name count` pairs (all of them, zeros included).
pub fn fault_list(f: &FaultCounts) -> String {
    [
        ("read_eio", f.read_eio),
        ("write_eio", f.write_eio),
        ("sync_eio", f.sync_eio),
        ("short_read", f.short_read),
        ("short_write", f.short_write),
        ("enospc", f.enospc),
        ("disk_full", f.disk_full),
        ("latency_spike", f.latency_spike),
        ("bit_flip", f.bit_flip),
    ]
    .iter()
    .map(|(n, c)| format!("{n} {c}"))
    .collect::<Vec<_>>()
    .join(", ")
}

/// The summary `resystance sim` prints after a campaign.
pub fn summary(cfg: &CampaignConfig, r: &CampaignReport) -> String {
    let mut s = String::new();
    let faults = cfg.faults.as_ref().map_or("none", |f| f.name.as_str());
    s += &format!(
        "seeds: {} run ({}..{}{}), faults {faults}, crash {}, {} ops per seed\n",
        r.seeds_run,
        cfg.seeds.start,
        cfg.seeds.end,
        if r.seeds_skipped > 0 {
            format!(", {} skipped after the first failure", r.seeds_skipped)
        } else {
            String::new()
        },
        if cfg.crash { "on" } else { "off" },
        cfg.ops,
    );
    s += &format!(
        "time: {:.1} s, {:.1} seeds/s\n",
        r.elapsed.as_secs_f64(),
        r.seeds_per_sec()
    );
    let modes: Vec<String> = CompactionMode::ALL
        .iter()
        .zip(r.seeds_per_mode)
        .map(|(m, n)| format!("{m} {n}"))
        .collect();
    s += &format!("modes: {}\n", modes.join(", "));
    s += &format!(
        "faults injected: {} ({})\n",
        r.faults.total(),
        fault_list(&r.faults)
    );
    s += &format!(
        "crashes: {}, recoveries checked: {}\n",
        r.crashes, r.recoveries
    );
    s += &format!(
        "corruption detected: {} seeds ({} a WAL refused at open, {} a WAL drop reported)\n",
        r.corruption_seeds, r.wal_refused_seeds, r.wal_reported_drop_seeds
    );
    for (seed, what) in &r.corruption_examples {
        s += &format!("  seed {seed}: {what}\n");
    }
    s += &format!(
        "three-mode checks: {} (tables byte-identical)\n",
        r.three_mode_checks
    );
    s += &format!("campaign digest: {:#018x}\n", r.digest);
    match &r.first_failure {
        None => s += "result: ok\n",
        Some(o) => {
            s += &format!(
                "FAILED: first failing seed {} ({} mode{}): {}\n",
                o.seed,
                o.mode,
                o.crash_at_syscall
                    .map_or_else(String::new, |n| format!(", power loss at call {n}")),
                o.failure.as_deref().unwrap_or("?")
            );
            s += &format!("repro: {}\n", repro_line(cfg, o.seed));
        }
    }
    s
}

/// Runs `resystance sim`: progress on standard error, the summary on standard output.
/// Returns the exit code: 0 all seeds passed, 1 a seed failed, 2 a usage error.
pub fn run(args: &SimArgs) -> u8 {
    let cfg = match args.config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: invalid flags: {e}");
            return EXIT_USAGE;
        }
    };
    let total = cfg.seeds.end - cfg.seeds.start;
    let tty = std::io::stderr().is_terminal();
    let start = Instant::now();
    let last = Mutex::new(start);
    let progress = |done: u64| {
        let every = if tty {
            PROGRESS_TTY_EVERY
        } else {
            PROGRESS_LOG_EVERY
        };
        let mut last = last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        if now.duration_since(*last) < every && done != total {
            return;
        }
        *last = now;
        let rate = done as f64 / now.duration_since(start).as_secs_f64().max(1e-9);
        let line = format!("sim: {done}/{total} seeds, {rate:.1} seeds/s");
        let mut err = std::io::stderr().lock();
        let _ = if tty {
            write!(err, "\r{line}  ")
        } else {
            writeln!(err, "{line}")
        };
    };
    let report = match run_campaign(&cfg, &progress) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_FAILURE;
        }
    };
    if tty {
        eprintln!();
    }
    print!("{}", summary(&cfg, &report));
    let _ = std::io::stdout().flush();
    if report.first_failure.is_some() {
        EXIT_FAILURE
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_are_half_open_and_never_empty() {
        assert_eq!(parse_seeds("0..1000").unwrap(), 0..1000);
        assert_eq!(parse_seeds("7..8").unwrap(), 7..8);
        assert!(parse_seeds("5..5").unwrap_err().contains("no seed"));
        assert!(parse_seeds("9..3").is_err());
        assert!(parse_seeds("12").is_err());
        assert!(parse_seeds("a..3").is_err());
    }

    #[test]
    fn faults_are_presets_or_files() {
        assert_eq!(
            fault_profile("heavy").unwrap(),
            FaultProfile::preset("heavy").unwrap()
        );
        let err = fault_profile("no-such-profile").unwrap_err();
        assert!(err.contains("neither a preset"), "{err}");
    }

    #[test]
    fn shell_words_quote_only_when_needed() {
        assert_eq!(shell_word("heavy"), "heavy");
        assert_eq!(shell_word("/tmp/my faults.ron"), "'/tmp/my faults.ron'");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
    }
}
