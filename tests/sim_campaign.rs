//! `resystance sim --seeds A..B`: the seed campaign on the simulated kernel.
//!
//! * A campaign with heavy faults and one power loss per seed runs green, and it did inject
//!   faults, lose power, recover and compare the three modes (`SIM_CAMPAIGN_SEEDS` seeds,
//!   default below).
//! * A broken harness (a write acknowledged in the model, never given to the engine) is
//!   caught: the campaign names the first sabotaged seed and a command that reproduces it.
//! * The same seed gives the same outcome, digest included.
//! * The binary prints the summary and the repro line, and the repro line reproduces.

use std::process::{Command, Output};

use resystance::campaign::cli::{fault_profile, summary};
use resystance::campaign::{repro_line, run_campaign, run_seed, CampaignConfig, Faults, Sabotage};

macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// Seeds of the green campaign when `SIM_CAMPAIGN_SEEDS` is not set.
const SEEDS_DEFAULT: u64 = 1000;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}={v:?} is not a number"))
        })
        .unwrap_or(default)
}

fn heavy() -> Faults {
    Faults {
        name: "heavy".into(),
        profile: fault_profile("heavy").expect("the heavy preset"),
    }
}

#[test]
fn a_campaign_with_heavy_faults_and_power_losses_runs_green() {
    let seeds = env_u64("SIM_CAMPAIGN_SEEDS", SEEDS_DEFAULT);
    let cfg = CampaignConfig {
        faults: Some(heavy()),
        crash: true,
        ..CampaignConfig::new(0..seeds)
    };
    let report = run_campaign(&cfg, &|_| {}).expect("the campaign runs");
    say!("{}", summary(&cfg, &report));
    assert!(report.first_failure.is_none(), "{}", summary(&cfg, &report));
    assert_eq!(report.seeds_run, seeds);
    // Green only counts if the campaign did what it says.
    assert!(report.faults.total() > seeds, "faults: {:?}", report.faults);
    assert!(report.faults.short_write > 0 && report.faults.sync_eio > 0);
    assert!(report.crashes >= seeds, "a power loss per seed at least");
    assert!(report.recoveries >= report.crashes);
    assert!(report.seeds_per_mode.iter().all(|&n| n > 0));
    if seeds >= cfg.three_mode_every {
        assert!(report.three_mode_checks > 0);
    }
}

/// Media bit flips 50 times as often as `heavy`'s (one per 10 device reads): recoveries read
/// damaged WALs often enough to see each outcome in a few seconds.
fn flippy() -> Faults {
    let mut profile = fault_profile("heavy").expect("the heavy preset");
    profile.bit_flip_ppm = 100_000;
    Faults {
        name: "heavy, bit_flip_ppm 100000".into(),
        profile,
    }
}

#[test]
fn a_flipped_wal_record_is_refused_or_its_drop_reported_never_lost_silently() {
    // Seeds take turns between point-in-time recovery and tolerate-corrupted-tail-records
    // (clean reopens use absolute-consistency): a flipped synced WAL record must fail the open
    // as a corruption naming that WAL at or before the flip under the strict modes, and under
    // point-in-time recovery cost writes only with a drop reported at or before the flip.
    let cfg = CampaignConfig {
        faults: Some(flippy()),
        crash: true,
        ops: 120,
        three_mode_every: 0,
        ..CampaignConfig::new(0..120)
    };
    let report = run_campaign(&cfg, &|_| {}).expect("the campaign runs");
    let text = summary(&cfg, &report);
    say!("{text}");
    assert!(report.first_failure.is_none(), "{text}");
    assert!(report.wal_refused_seeds > 0, "{text}");
    assert!(report.wal_reported_drop_seeds > 0, "{text}");
    assert!(text.contains(" a WAL refused at open, "), "{text}");
}

#[test]
fn a_lost_write_is_caught_at_the_first_sabotaged_seed() {
    let cfg = CampaignConfig {
        crash: true,
        ops: 120,
        three_mode_every: 0,
        sabotage: Some(Sabotage::LostWriteFrom(5)),
        ..CampaignConfig::new(0..12)
    };
    let report = run_campaign(&cfg, &|_| {}).expect("the campaign runs");
    let text = summary(&cfg, &report);
    say!("{text}");
    let first = report
        .first_failure
        .as_ref()
        .expect("the sabotage is caught");
    assert_eq!(first.seed, 5, "{text}");
    let failure = first.failure.as_deref().unwrap();
    assert!(failure.contains("sabotage/lost-write"), "{failure}");
    assert!(text.contains("FAILED: first failing seed 5 "), "{text}");
    let repro = "resystance sim --seeds 5..6 --crash --ops 120 --three-mode-every 0 \
                 --sabotage lost-write-from=5";
    assert_eq!(repro_line(&cfg, 5), repro);
    assert!(text.contains(&format!("repro: {repro}\n")), "{text}");
    // And the seeds below it passed: the checks do not fail everything.
    let clean = CampaignConfig {
        sabotage: None,
        ..cfg.clone()
    };
    assert!(run_seed(&clean, 5).failure.is_none());
}

#[test]
fn the_same_seed_gives_the_same_outcome() {
    let cfg = CampaignConfig {
        faults: Some(heavy()),
        crash: true,
        three_mode_every: 2,
        ..CampaignConfig::new(0..1)
    };
    let mut digests = Vec::new();
    for seed in [0, 1, 2] {
        let a = run_seed(&cfg, seed);
        let b = run_seed(&cfg, seed);
        assert_eq!(a, b, "seed {seed} ran differently twice");
        assert!(a.failure.is_none(), "{a:?}");
        assert!(a.crash_at_syscall.is_some() && a.crashes > 0);
        digests.push(a.digest);
        say!(
            "seed {seed} ({}): digest {:#018x} twice, power loss at call {:?}, {} faults",
            a.mode,
            a.digest,
            a.crash_at_syscall,
            a.faults.total()
        );
    }
    digests.dedup();
    assert_eq!(digests.len(), 3, "different seeds, different runs");
}

fn resystance(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_resystance"))
        .args(args)
        .output()
        .expect("running the resystance binary")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("output is UTF-8")
}

#[test]
fn the_cli_prints_a_summary_and_a_repro_line_that_reproduces() {
    let ok = resystance(&["sim", "--seeds", "0..4", "--ops", "60", "--faults", "light"]);
    let out = text(&ok.stdout);
    say!("{out}");
    assert_eq!(ok.status.code(), Some(0), "{out}{}", text(&ok.stderr));
    for line in [
        "seeds: 4 run (0..4), faults light, crash off, 60 ops per seed\n",
        "modes: baseline 2, uring 1, resystance 1\n",
        "three-mode checks: 1 (tables byte-identical)\n",
        "result: ok\n",
    ] {
        assert!(out.contains(line), "{line:?} missing from:\n{out}");
    }
    assert!(text(&ok.stderr).contains("sim: 4/4 seeds, "));

    let args = [
        "sim",
        "--seeds",
        "0..6",
        "--ops",
        "60",
        "--crash",
        "--sabotage",
        "lost-write-from=3",
    ];
    let failed = resystance(&args);
    let out = text(&failed.stdout);
    say!("{out}");
    assert_eq!(failed.status.code(), Some(1), "{out}");
    let repro = out
        .lines()
        .find_map(|l| l.strip_prefix("repro: "))
        .unwrap_or_else(|| panic!("no repro line in:\n{out}"));
    assert_eq!(
        repro,
        "resystance sim --seeds 3..4 --crash --ops 60 --sabotage lost-write-from=3"
    );
    let again = resystance(&repro.split(' ').skip(1).collect::<Vec<_>>());
    let again_out = text(&again.stdout);
    assert_eq!(again.status.code(), Some(1), "{again_out}");
    assert!(
        again_out.contains("FAILED: first failing seed 3 "),
        "{again_out}"
    );
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["sim", "--seeds", "5..5"][..],
        &["sim", "--seeds", "five"],
        &["sim", "--seeds", "0..2", "--faults", "no-such-profile"],
        &["sim", "--seeds", "0..2", "--ops", "0"],
    ] {
        let out = resystance(args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(!text(&out.stderr).is_empty());
    }
}
