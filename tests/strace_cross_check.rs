//! Our system-call counts are what the kernel saw: `resystance bench --backend=real` runs
//! under `strace -f -y`, and for every call kind the engine makes, the calls strace shows on
//! the database's files and directory, on io_uring and BPF descriptors, and every
//! `io_uring_*` and `bpf` call, must number exactly what the report's `kernel_syscalls` says.
//! (The Rust runtime and the loader make such calls too — `pread64` of libc.so at start-up,
//! `openat` of /proc files — which is why calls are attributed by path.) `mmap`/`munmap` can
//! only be bounded: the allocator's anonymous maps look like ours, so strace's count must be
//! at least ours. One run per compaction mode this machine can run (`uring` needs io_uring,
//! `resystance` also `bpf(2)`); without strace, one SKIP line.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use resystance_real_kernel::RealKernel;
use resystance_traces::{Kernel, SyscallKind, UringParams};

macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// Kinds compared exactly, attributed by path or descriptor.
const EXACT: &[&str] = &[
    "openat",
    "close",
    "pread64",
    "pwrite64",
    "fsync",
    "fdatasync",
    "fstat",
    "getdents64",
    "unlink",
    "rename",
    "mkdir",
    "io_uring_setup",
    "io_uring_register",
    "io_uring_enter",
    "bpf",
];
/// Kinds strace cannot attribute (anonymous maps): strace's count is at least ours.
const AT_LEAST: &[&str] = &["mmap", "munmap"];
/// Calls whose first argument is a descriptor (`N<path>` under `strace -y`).
const FD_FIRST: &[&str] = &[
    "close",
    "pread64",
    "pwrite64",
    "fsync",
    "fdatasync",
    "fstat",
    "getdents64",
];

/// The calls in `strace -f -y` output: (engine's, all) counts by name. A call is the
/// engine's if it touches a path under `db`, `db` itself or its parent directory (which
/// creating the database syncs), or a descriptor of an anonymous inode (io_uring rings, BPF maps, programs, BTF: the runtime makes none), or is an
/// `io_uring_*` or `bpf` call. Resumed halves of interrupted lines are not calls.
fn attribute(trace: &str, db: &str) -> (BTreeMap<String, u64>, BTreeMap<String, u64>) {
    let (mut engine, mut all) = (BTreeMap::new(), BTreeMap::new());
    let parent = Path::new(db)
        .parent()
        .and_then(Path::to_str)
        .unwrap_or(db)
        .to_string();
    let ours_path =
        |path: &str| path == db || path == parent || path.starts_with(&format!("{db}/"));
    for line in trace.lines() {
        let Some((_pid, call)) = line.split_once(' ') else {
            continue;
        };
        let call = call.trim_start();
        let Some((name, args)) = call.split_once('(') else {
            continue;
        };
        if name.starts_with('<') || name.contains(' ') {
            continue; // "<... name resumed>" or a signal/exit line
        }
        *all.entry(name.to_string()).or_insert(0) += 1;
        let under_db = |quoted: &str| {
            let path = quoted.trim_start_matches('"');
            ours_path(path.split('"').next().unwrap_or(""))
        };
        let ours = match name {
            "io_uring_setup" | "io_uring_register" | "io_uring_enter" | "bpf" => true,
            "openat" => args
                .split_once(", ")
                .is_some_and(|(_, rest)| under_db(rest)),
            "unlink" | "rename" | "mkdir" => under_db(args),
            _ if FD_FIRST.contains(&name) => {
                let fd_path = args
                    .split_once('<')
                    .and_then(|(_, rest)| rest.split_once('>'))
                    .map_or("", |(path, _)| path);
                fd_path.starts_with("anon_inode:") || ours_path(fd_path)
            }
            _ => false,
        };
        if ours {
            *engine.entry(name.to_string()).or_insert(0) += 1;
        }
    }
    (engine, all)
}

/// The report's `kernel_syscalls` by strace's names, every `bpf(...)` kind summed as `bpf`.
fn our_counts(report: &serde_json::Value) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    let kinds = report["kernel_syscalls"]
        .as_object()
        .expect("a real-backend report has kernel_syscalls");
    for (key, n) in kinds {
        // Keys are the kinds' serde names (`pread`); strace names the call (`pread64`).
        let kind: SyscallKind = serde_json::from_value(serde_json::Value::String(key.clone()))
            .unwrap_or_else(|e| panic!("syscall kind {key:?}: {e}"));
        let name = if kind.name().starts_with("bpf(") {
            "bpf"
        } else {
            kind.name()
        };
        *counts.entry(name.to_string()).or_insert(0) += n.as_u64().expect("a count");
    }
    counts
}

#[test]
fn our_syscall_counts_are_what_strace_sees() {
    if Command::new("strace").arg("-V").output().is_err() {
        say!("SKIP strace cross-check: strace is not installed (apt-get install strace)");
        return;
    }
    let kernel = RealKernel::new();
    let mut modes = vec!["baseline"];
    match kernel.uring_setup(&UringParams::default()) {
        Ok(ring) => {
            let _ = kernel.uring_close(ring);
            modes.push("uring");
            match kernel.bpf_unavailable() {
                None => modes.push("resystance"),
                Some(why) => say!("SKIP the resystance mode of the strace cross-check: {why}"),
            }
        }
        Err(e) => say!("SKIP the uring and resystance modes of the strace cross-check: {e}"),
    }
    let traced: Vec<&str> = EXACT.iter().chain(AT_LEAST).copied().collect();
    let mut ran = 0;
    for mode in modes {
        let dir = tempfile::tempdir().unwrap();
        let (trace, json) = (
            dir.path().join("strace.txt"),
            dir.path().join("report.json"),
        );
        let db = dir.path().join("db");
        let out = Command::new("strace")
            .args(["-f", "-qq", "-y", "-s", "0", "-e"])
            .arg(format!("trace={}", traced.join(",")))
            .arg("-o")
            .arg(&trace)
            .arg(env!("CARGO_BIN_EXE_resystance"))
            .args([
                "bench",
                "--backend=real",
                "--benchmarks=fillrandom",
                "--num=30000",
                "--write_buffer_size=65536",
                "--target_file_size_base=65536",
                "--max_bytes_for_level_base=262144",
                &format!("--compaction_mode={mode}"),
            ])
            .arg(format!("--db={}", db.display()))
            .arg(format!("--json={}", json.display()))
            .output()
            .expect("strace runs");
        assert!(
            out.status.success(),
            "{mode}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (seen, all) = attribute(
            &std::fs::read_to_string(&trace).unwrap(),
            db.to_str().expect("a UTF-8 temp path"),
        );
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(Path::new(&json)).unwrap()).unwrap();
        let ours = our_counts(&report);
        let compaction_calls: u64 = report["runs"][0]["benchmarks"][0]["db_stats"]["compaction"]
            ["syscalls"]
            .as_object()
            .map_or(0, |m| {
                m.values().filter_map(serde_json::Value::as_u64).sum()
            });
        assert!(compaction_calls > 0, "{mode}: the run compacted");
        let mut line = Vec::new();
        for &kind in EXACT {
            let (theirs, mine) = (
                seen.get(kind).copied().unwrap_or(0),
                ours.get(kind).copied().unwrap_or(0),
            );
            assert_eq!(
                theirs, mine,
                "{mode}: strace saw {theirs} {kind}, we counted {mine}\nstrace: {seen:?}\nours: {ours:?}"
            );
            if mine > 0 {
                line.push(format!("{kind} {mine}"));
            }
        }
        for &kind in AT_LEAST {
            let (theirs, mine) = (
                all.get(kind).copied().unwrap_or(0),
                ours.get(kind).copied().unwrap_or(0),
            );
            assert!(
                theirs >= mine,
                "{mode}: strace saw {theirs} {kind}, fewer than our {mine}"
            );
        }
        let outside: u64 = EXACT
            .iter()
            .map(|k| all.get(*k).copied().unwrap_or(0) - seen.get(*k).copied().unwrap_or(0))
            .sum();
        say!(
            "strace = ours ({mode}): {} (and {outside} such calls by the runtime, not ours; mmap/munmap: strace >= ours)",
            line.join(", ")
        );
        ran += 1;
    }
    assert!(ran >= 1);
}

#[test]
fn strace_lines_are_attributed_by_path_and_descriptor() {
    let trace = "\
10 pread64(3</usr/lib/x86_64-linux-gnu/libc.so.6>, \"\"..., 784, 64) = 784
10 openat(AT_FDCWD, \"/tmp/d/db/000004.sst\", O_RDONLY|O_CLOEXEC) = 5</tmp/d/db/000004.sst>
10 openat(AT_FDCWD, \"/proc/cpuinfo\", O_RDONLY|O_CLOEXEC) = 6</proc/cpuinfo>
11 pread64(5</tmp/d/db/000004.sst>, <unfinished ...>
10 close(6</proc/cpuinfo>) = 0
11 <... pread64 resumed>\"\"..., 4096, 0) = 4096
10 close(7<anon_inode:[io_uring]>) = 0
10 io_uring_enter(7<anon_inode:[io_uring]>, 1, 1, IORING_ENTER_GETEVENTS, NULL, 8) = 1
10 fsync(4</tmp/d/db>) = 0
10 mkdir(\"/tmp/d/db\", 0755) = 0
10 unlink(\"/tmp/d/dbx/1\") = 0
10 fsync(8</tmp/d>) = 0
10 +++ exited with 0 +++
";
    let (engine, all) = attribute(trace, "/tmp/d/db");
    let get = |m: &BTreeMap<String, u64>, k: &str| m.get(k).copied().unwrap_or(0);
    assert_eq!(get(&engine, "pread64"), 1, "{engine:?}");
    assert_eq!(
        get(&all, "pread64"),
        2,
        "the resumed half is no call: {all:?}"
    );
    assert_eq!(get(&engine, "openat"), 1);
    assert_eq!(get(&engine, "close"), 1, "the ring's close, not /proc's");
    assert_eq!(get(&engine, "io_uring_enter"), 1);
    assert_eq!(
        get(&engine, "fsync"),
        2,
        "the directory itself and its parent"
    );
    assert_eq!(get(&engine, "mkdir"), 1);
    assert_eq!(
        get(&engine, "unlink"),
        0,
        "a sibling directory is not the database"
    );
}
