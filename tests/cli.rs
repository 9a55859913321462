//! The `resystance` binary end to end: flags, output, JSON report and exit codes.

use std::path::Path;
use std::process::{Command, Output};

macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
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

fn flag(name: &str, path: &Path) -> String {
    format!("--{name}={}", path.display())
}

#[test]
fn fillseq_then_readrandom_finds_every_key() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let json = dir.path().join("report.json");
    let out = resystance(&[
        "bench",
        "--backend=real",
        "--compaction_mode=baseline",
        "--benchmarks=fillseq,readrandom",
        "--num=20000",
        &flag("db", &db),
        "--write_buffer_size=65536",
        &flag("json", &json),
    ]);
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        text(&out.stderr)
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("fillseq      :") && l.contains(" 20000 operations;")),
        "no fillseq line in:\n{stdout}"
    );
    assert!(stdout.contains("operations;") && stdout.contains("(20000 of 20000 found)"));
    assert!(stdout.contains("Percentiles: P50: "));

    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["flags"]["num"], 20000);
    assert!(
        report.get("sim").is_none(),
        "no sim section for the real kernel"
    );
    assert_eq!(report["host"]["db_path"], db.display().to_string());
    let run = &report["runs"][0];
    assert_eq!(run["compaction_mode"], "baseline");
    let fill = &run["benchmarks"][0];
    let read = &run["benchmarks"][1];
    assert_eq!(fill["name"], "fillseq");
    assert_eq!(fill["ops"], 20000);
    assert!(fill["latency"]["p99_us"].as_f64().unwrap() > 0.0);
    // 20,000 × 116 bytes through a 64 KiB write buffer must have flushed.
    assert!(fill["db_stats"]["flush"]["flushes"].as_u64().unwrap() > 0);
    assert_eq!(read["name"], "readrandom");
    assert_eq!(read["ops"], 20000);
    assert_eq!(read["found"], 20000);
    assert!(!json.with_extension("json.tmp").exists());
}

#[test]
fn use_existing_db_skips_fills_and_reads_what_is_there() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let first = resystance(&[
        "bench",
        "--backend=real",
        "--compaction_mode=baseline",
        "--benchmarks=fillseq",
        "--num=5000",
        "--write_buffer_size=65536",
        &flag("db", &db),
    ]);
    assert!(first.status.success(), "{}", text(&first.stderr));
    let second = resystance(&[
        "bench",
        "--backend=real",
        "--compaction_mode=baseline",
        "--benchmarks=fillseq,readrandom",
        "--num=5000",
        "--write_buffer_size=65536",
        "--use_existing_db",
        &flag("db", &db),
    ]);
    let stdout = text(&second.stdout);
    assert!(second.status.success(), "{}", text(&second.stderr));
    assert!(stdout.contains("fillseq      : skipped (--use_existing_db is true)"));
    assert!(stdout.contains("(5000 of 5000 found)"), "{stdout}");
}

#[test]
fn the_default_runs_the_three_modes_on_the_simulator_repeatably() {
    let args = [
        "bench",
        "--benchmarks=fillrandom,readrandom",
        "--num=30000",
        "--write_buffer_size=65536",
        "--target_file_size_base=65536",
        "--max_bytes_for_level_base=262144",
    ];
    let first = resystance(&args);
    let stdout = text(&first.stdout);
    assert!(first.status.success(), "{}", text(&first.stderr));
    assert!(stdout.contains("(backend sim)"), "{stdout}");
    for mode in ["baseline", "uring", "resystance"] {
        assert!(
            stdout.contains(&format!("Compaction: {mode}\n")),
            "no {mode} run in:\n{stdout}"
        );
    }
    let table = stdout
        .split("Comparison, fillrandom")
        .nth(1)
        .expect("a comparison table");
    let rows: Vec<&str> = table.lines().skip(2).take(3).collect();
    for (row, mode) in rows.iter().zip(["baseline", "uring", "resystance"]) {
        assert!(row.starts_with(mode), "{row:?} in:\n{table}");
    }
    // Compactions ran, and io_uring made far fewer system calls than a pread per block.
    assert!(!stdout.contains("Compaction: 0 jobs"), "{stdout}");
    // Virtual time: the same flags give the same report, figure for figure.
    let second = resystance(&args);
    assert_eq!(text(&second.stdout), stdout, "a second run differs");
    say!("sim bench, fillrandom side by side:\n{}", rows.join("\n"));
}

#[test]
fn nvme_presets_and_files_are_checked() {
    let out = resystance(&["bench", "--nvme=ssd9000", "--num=10"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("this-host") && stderr.contains("nvme-gen4"),
        "{stderr}"
    );
    let out = resystance(&["bench", "--backend=real", "--nvme=nvme-gen4", "--num=10"]);
    assert_eq!(out.status.code(), Some(2));
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let fast = resystance(&[
        "bench",
        "--nvme=nvme-gen4",
        "--compaction_mode=baseline",
        "--benchmarks=fillrandom",
        "--num=2000",
        // Any path: the directories above it are part of the simulated disk.
        "--db=/srv/bench/db",
        &flag("json", &json),
    ]);
    assert!(fast.status.success(), "{}", text(&fast.stderr));
    assert!(text(&fast.stdout).contains("DB path: [/srv/bench/db]"));
    assert!(text(&fast.stdout).contains("Kernel:     simulated, NVMe nvme-gen4 (backend sim)"));
    // The report says what the figures were computed from.
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["sim"]["nvme_preset"], "nvme-gen4");
    assert_eq!(report["sim"]["cpu"]["cores"], 2);
    assert!(report["sim"]["nvme"]["queue_depth_max"].as_u64().unwrap() > 0);
}

#[test]
fn cpu_profiles_override_the_cost_model() {
    let out = resystance(&["bench", "--cpu=laptop", "--num=10"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("this-host"),
        "{}",
        text(&out.stderr)
    );
    let out = resystance(&["bench", "--backend=real", "--cpu=this-host2", "--num=10"]);
    assert_eq!(out.status.code(), Some(2));
    let dir = tempfile::tempdir().unwrap();
    // The shipped profile with system calls 10x dearer and one core.
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("sim/cpu/this-host.ron"),
    )
    .unwrap();
    let dear = shipped
        .replace("syscall_ns: 280,", "syscall_ns: 2800,")
        .replace("cores: 2,", "cores: 1,");
    assert_ne!(
        dear, shipped,
        "the profile's fields moved: update this test"
    );
    let profile = dir.path().join("dear.ron");
    std::fs::write(&profile, dear).unwrap();
    let run = |cpu: &str, json: &Path| {
        let out = resystance(&[
            "bench",
            "--compaction_mode=baseline",
            "--benchmarks=fillrandom",
            "--num=5000",
            &format!("--cpu={cpu}"),
            &flag("json", json),
        ]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
        (text(&out.stdout), report)
    };
    let (base_text, base) = run("this-host", &dir.path().join("base.json"));
    let (dear_text, dear) = run(profile.to_str().unwrap(), &dir.path().join("dear.json"));
    assert_eq!(base["sim"]["cpu"]["syscall_ns"], 280);
    assert_eq!(dear["sim"]["cpu"]["syscall_ns"], 2800);
    assert_eq!(dear["sim"]["cpu_profile"], profile.to_str().unwrap());
    assert!(dear_text.contains("1 simulated cores"), "{dear_text}");
    let micros = |r: &serde_json::Value| {
        r["runs"][0]["benchmarks"][0]["micros_per_op"]
            .as_f64()
            .unwrap()
    };
    say!(
        "--cpu: fillrandom {:.3} µs/op with this-host, {:.3} with 10x dearer syscalls on 1 core",
        micros(&base),
        micros(&dear)
    );
    assert!(
        micros(&dear) > micros(&base),
        "dearer system calls must slow the writes on the virtual clock: {} vs {}\n{base_text}\n{dear_text}",
        micros(&dear),
        micros(&base)
    );
}

#[test]
fn the_three_compaction_modes_run_side_by_side_or_are_refused_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let out = resystance(&[
        "bench",
        "--backend=real",
        "--compaction_mode=baseline,uring,resystance",
        "--benchmarks=fillrandom",
        "--num=20000",
        "--write_buffer_size=65536",
        "--target_file_size_base=65536",
        &flag("db", &dir.path().join("db")),
    ]);
    let stderr = text(&out.stderr);
    if let Some(why) = resystance_real_kernel::RealKernel::new().bpf_unavailable() {
        // Without bpf(2) the resystance mode cannot load its program: one line, nothing run.
        assert_eq!(out.status.code(), Some(2));
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.starts_with("error: compaction_mode=resystance: not supported: "),
            "{stderr}"
        );
        assert!(out.stdout.is_empty());
        say!("SKIP running the resystance mode from the CLI: {why}");
        return;
    }
    assert!(out.status.success(), "{stderr}");
    let stdout = text(&out.stdout);
    for mode in ["baseline", "uring", "resystance"] {
        assert!(
            stdout.contains(&format!("Compaction: {mode}\n")),
            "no {mode} run in:\n{stdout}"
        );
    }
}

#[test]
fn version_and_help() {
    let version = resystance(&["--version"]);
    assert!(version.status.success());
    assert_eq!(
        text(&version.stdout),
        format!("resystance {}\n", env!("CARGO_PKG_VERSION"))
    );
    let help = resystance(&["bench", "--help"]);
    assert!(help.status.success());
    let help = text(&help.stdout);
    for want in [
        "--value_size",
        "[default: 100]",
        "--use_existing_db",
        "--json",
    ] {
        assert!(help.contains(want), "help lacks {want:?}:\n{help}");
    }
}

#[test]
fn bad_flags_are_usage_errors() {
    let out = resystance(&["bench", "--benchmarks=fillrandom,compact"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("compact"));
}

/// `--uring_queue_depth` sizes the io_uring modes' rings: one SQE at a time takes more
/// `io_uring_enter` calls than 64 (a window's spans and a drain's writes go one per round), the
/// header names a depth other than the default, and a depth outside 1..=4096 is refused.
#[test]
fn the_uring_queue_depth_is_a_flag() {
    let enters = |depth: &str| {
        let out = resystance(&[
            "bench",
            "--compaction_mode=uring",
            "--benchmarks=fillrandom",
            "--num=20000",
            "--write_buffer_size=65536",
            "--target_file_size_base=65536",
            "--max_bytes_for_level_base=262144",
            &format!("--uring_queue_depth={depth}"),
        ]);
        let stdout = text(&out.stdout);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let line = stdout
            .lines()
            .find(|l| l.starts_with("Compaction syscalls:"))
            .unwrap_or_else(|| panic!("no compaction syscalls in:\n{stdout}"));
        let n: u64 = line
            .split("io_uring_enter ")
            .nth(1)
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no io_uring_enter count in {line:?}"));
        (stdout, n)
    };
    let (one, enters_one) = enters("1");
    let (deep, enters_deep) = enters("64");
    assert!(one.contains("io_uring queue depth 1"), "{one}");
    assert!(!deep.contains("io_uring queue depth"), "{deep}");
    assert!(
        enters_deep > 0 && enters_one > enters_deep,
        "depth 1: {enters_one} enters, depth 64: {enters_deep}"
    );
    let out = resystance(&["bench", "--num=10", "--uring_queue_depth=0"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("uring_queue_depth 0 outside 1..=4096"),
        "{}",
        text(&out.stderr)
    );
    say!("--uring_queue_depth: 1 -> {enters_one} io_uring_enter, 64 -> {enters_deep}");
}

/// `--repeat` runs the mode list in rounds, each round starting with the next mode; on the
/// simulator every round gives the same figures (each mode runs on a fresh machine with the
/// same seed), so the medians and every round's ratios equal a single round's, and the JSON
/// report carries each run's round and place and the comparison.
#[test]
fn repeat_runs_rounds_in_rotating_order_and_compares_medians() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let args = [
        "bench",
        "--compaction_mode=baseline,resystance",
        "--benchmarks=fillrandom",
        "--num=20000",
        "--write_buffer_size=65536",
        "--target_file_size_base=65536",
        "--max_bytes_for_level_base=262144",
    ];
    let once = resystance(&args);
    assert!(once.status.success(), "{}", text(&once.stderr));
    let once = text(&once.stdout);
    let mut repeated_args = args.to_vec();
    let json_flag = flag("json", &json);
    repeated_args.extend(["--repeat=3", &json_flag]);
    let out = resystance(&repeated_args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);

    // Runs in order: round 1 baseline, resystance; round 2 resystance, baseline; round 3 as 1.
    let order: Vec<(&str, &str)> = stdout
        .lines()
        .filter(|l| l.starts_with("Compaction: ") && !l.contains("jobs"))
        .zip(stdout.lines().filter(|l| l.starts_with("Round:")))
        .map(|(mode, round)| (mode.trim_start_matches("Compaction: "), round))
        .collect();
    assert_eq!(
        order,
        [
            ("baseline", "Round:      1 of 3"),
            ("resystance", "Round:      1 of 3"),
            ("resystance", "Round:      2 of 3"),
            ("baseline", "Round:      2 of 3"),
            ("baseline", "Round:      3 of 3"),
            ("resystance", "Round:      3 of 3"),
        ],
        "{stdout}"
    );
    assert!(!once.contains("Round:"), "{once}");

    let rows = |text: &str| -> Vec<String> {
        let table = text
            .split("Comparison, fillrandom")
            .nth(1)
            .unwrap_or_else(|| panic!("no comparison in:\n{text}"));
        table.lines().skip(2).take(2).map(str::to_string).collect()
    };
    assert!(
        stdout.contains("Comparison, fillrandom: medians of 3 rounds, the first mode rotating"),
        "{stdout}"
    );
    assert_eq!(rows(&stdout), rows(&once), "medians of identical rounds");
    assert!(
        stdout.contains("Rounds (1: baseline first, 2: resystance first, 3: baseline first):"),
        "{stdout}"
    );
    let ratio_line = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("x ms/MB"))
        .unwrap_or_else(|| panic!("no per-round ratios in:\n{stdout}"));
    let ratios: Vec<&str> = ratio_line.split_whitespace().skip(3).collect();
    let single = rows(&once)[1]
        .split_whitespace()
        .nth(9)
        .unwrap()
        .to_string();
    assert_eq!(ratios, [single.as_str(); 3], "{ratio_line}");

    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let runs = report["runs"].as_array().unwrap();
    let placed: Vec<(u64, u64, &str)> = runs
        .iter()
        .map(|r| {
            (
                r["round"].as_u64().unwrap(),
                r["position"].as_u64().unwrap(),
                r["compaction_mode"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        placed,
        [
            (1, 0, "baseline"),
            (1, 1, "resystance"),
            (2, 0, "resystance"),
            (2, 1, "baseline"),
            (3, 0, "baseline"),
            (3, 1, "resystance"),
        ]
    );
    let cmp = &report["comparison"][0];
    assert_eq!(cmp["rounds"], 3);
    assert_eq!(cmp["reference"], "baseline");
    let second = &cmp["modes"][1];
    assert_eq!(second["compaction_mode"], "resystance");
    assert_eq!(second["ran_first_in"], serde_json::json!([2]));
    assert_eq!(
        second["ratios"]["compaction_ms_per_mb"]
            .as_array()
            .unwrap()
            .len(),
        3
    );

    let out = resystance(&["bench", "--num=10", "--repeat=0"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    say!("--repeat=3: {ratio_line}");
}
