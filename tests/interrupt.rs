//! Ctrl-C and a hard kill in the middle of `resystance bench --backend=real` leave a database
//! that opens and reads back whole: SIGINT stops the benchmark after its current operation,
//! closes the database (running jobs finish) and exits 130; SIGKILL stops everything at once,
//! and recovery must cope like after a crash. Both checked by reopening with the engine,
//! reading every entry (checksums verified), compacting everything and closing.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use resystance::{CompactionMode, Db, Options};
use resystance_real_kernel::RealKernel;
use resystance_traces::Kernel;

macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// How long a run may take to stop after SIGINT (running compactions finish first).
const STOP_TIMEOUT: Duration = Duration::from_secs(120);

fn tables(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".sst"))
            .count()
    })
}

/// Starts a long compaction-heavy run, signals it once compactions have written tables, and
/// returns its exit status code and standard error.
fn signalled_run(dir: &Path, mode: &str, signal: libc::c_int) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_resystance"))
        .args([
            "bench",
            "--backend=real",
            "--benchmarks=fillrandom",
            "--num=20000000",
            "--write_buffer_size=262144",
            "--target_file_size_base=262144",
            "--max_bytes_for_level_base=1048576",
            &format!("--compaction_mode={mode}"),
        ])
        .arg(format!("--db={}", dir.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the bench starts");
    let started = Instant::now();
    while tables(dir) < 8 && started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(tables(dir) >= 8, "the run wrote tables within a minute");
    let pid = i32::try_from(child.id()).expect("a pid");
    // SAFETY: signalling our own child process.
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    let deadline = Instant::now() + STOP_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting") {
            break status;
        }
        assert!(Instant::now() < deadline, "the run did not stop");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    use std::io::Read as _;
    child
        .stderr
        .take()
        .expect("piped")
        .read_to_string(&mut stderr)
        .unwrap();
    (status.code(), stderr)
}

/// Reopens the database and reads it whole; returns the number of entries.
fn verify(dir: &Path) -> usize {
    let kernel: Arc<dyn Kernel> = Arc::new(RealKernel::new());
    let options = Options {
        write_buffer_size: 262_144,
        target_file_size_base: 262_144,
        max_bytes_for_level_base: 1 << 20,
        compaction_mode: CompactionMode::Baseline,
        create_if_missing: false,
        ..Options::default()
    };
    let db = Db::open(Arc::clone(&kernel), dir, options).expect("the database reopens");
    let mut n = 0;
    for entry in db.iter(None, None) {
        let (key, value) = entry.expect("every entry reads back, checksums verified");
        assert_eq!(key.len(), 16, "a bench key");
        assert_eq!(value.len(), 100, "a bench value");
        n += 1;
    }
    db.compact_all().expect("everything compacts");
    db.close().expect("closes");
    n
}

#[test]
fn ctrl_c_and_kill_leave_a_database_that_reopens_whole() {
    let mode = if RealKernel::new().bpf_unavailable().is_none() {
        "resystance"
    } else {
        say!("SKIP the resystance mode of the interrupt test: no bpf(2) here; baseline instead");
        "baseline"
    };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("interrupted");
    let (code, stderr) = signalled_run(&db, mode, libc::SIGINT);
    assert_eq!(code, Some(130), "SIGINT exits 130: {stderr}");
    assert!(
        stderr.contains("interrupted (SIGINT)") && stderr.contains("closed cleanly"),
        "{stderr}"
    );
    let ops: usize = stderr
        .split("after ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the message says how many operations ran: {stderr}"));
    let entries = verify(&db);
    // A clean stop keeps every acknowledged put; random keys repeat now and then (fillrandom
    // draws with replacement), so entries may be a little under the operations.
    assert!(
        entries <= ops && entries * 100 >= ops * 99,
        "{entries} entries after {ops} acknowledged puts"
    );
    say!("{mode}: SIGINT after {ops} puts -> exit 130, reopened with {entries} entries, all readable");

    let db = dir.path().join("killed");
    let (code, _) = signalled_run(&db, mode, libc::SIGKILL);
    assert_eq!(code, None, "SIGKILL leaves no exit code");
    let entries = verify(&db);
    assert!(entries > 0);
    say!("{mode}: SIGKILL -> reopened with {entries} entries, all readable");
}
