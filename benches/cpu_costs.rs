//! Calibration of the simulator's CPU model (`resystance_sim::CpuModel`): what the engine's
//! user-space work and the compaction program cost on this host.
//!
//! Run: `cargo bench --bench cpu_costs` (root for the BPF row; without it that row is skipped
//! with one line). It prints each figure as the median of `CPU_COSTS_ROUNDS` (default 5)
//! rounds and the fitted constants to put into `CpuModel::this_host()`:
//!
//! * **write** and **get** — the engine on the real kernel (files in the page cache, jobs
//!   inline and outside the timed loop), minus what the simulator already charges for the
//!   system calls they made (pwrite/pread from its own page-cache model). Writes are fitted
//!   per entry and per byte from two value sizes; a get is charged per table searched.
//! * **flush** — a memtable written to L0 on the simulator (whose calls cost only a memcpy on
//!   the host), all host time counted as CPU; per entry and per byte from two value sizes.
//! * **merge** — the compaction program's twin over in-memory blocks (no I/O at all); per
//!   entry and per byte from two value sizes.
//! * **bpf** — the program in Linux: `BPF_PROG_TEST_RUN` time per instruction the vm counts
//!   for the same work (the simulator charges programs by instructions executed).

use std::sync::Arc;
use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use resystance::compaction::machines::{KernelMachine, VmMachine};
use resystance::db::Db;
use resystance::options::{BackgroundMode, Options};
use resystance_programs::abi::JobParams;
use resystance_programs::driver::{drive, Machine, MemorySink, MemorySource, TwinMachine};
use resystance_real_kernel::RealKernel;
use resystance_sim::{CpuModel, SimConfig, SimKernel, PAGE_BYTES};
use resystance_traces::{Kernel, SyscallCounts, SyscallKind};

#[path = "support/merge_workload.rs"]
mod merge_workload;

const KEY_BYTES: usize = 16;
const SMALL_VALUE_BYTES: usize = 100;
const LARGE_VALUE_BYTES: usize = 1_000;

fn rounds() -> usize {
    std::env::var("CPU_COSTS_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5)
        .max(1)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn key(i: u64) -> Vec<u8> {
    format!("{i:0KEY_BYTES$}").into_bytes()
}

fn options(background: BackgroundMode) -> Options {
    Options {
        create_if_missing: true,
        background,
        // One memtable holds everything: no flush inside a timed loop.
        write_buffer_size: 1 << 30,
        ..Options::default()
    }
}

/// What the simulator charges for the page-cache `pread`/`pwrite` calls in `counts` that moved
/// `bytes` in total, each touching about one page per 4 KiB (plus one).
fn modeled_syscalls_ns(cpu: &CpuModel, counts: &SyscallCounts, bytes: u64) -> f64 {
    let calls = counts.get(SyscallKind::Pread) + counts.get(SyscallKind::Pwrite);
    let pages = calls + bytes / PAGE_BYTES;
    let others = counts.total() - calls;
    (calls * cpu.syscall_ns
        + pages * cpu.page_cache_ns_per_page
        + cpu.copy_ns(bytes)
        + others * cpu.syscall_ns) as f64
}

/// ns of CPU per put beyond its system calls, on the real kernel, for `value_bytes` values.
fn write_ns(value_bytes: usize, ops: u64) -> f64 {
    let cpu = CpuModel::this_host();
    let dir = tempfile::tempdir().expect("tempdir");
    let kernel: Arc<dyn Kernel> = Arc::new(RealKernel::new());
    let db = Db::open(kernel.clone(), dir.path(), options(BackgroundMode::Inline)).expect("open");
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let value = vec![b'v'; value_bytes];
    let keys: Vec<Vec<u8>> = (0..ops).map(|_| key(rng.gen_range(0..ops))).collect();
    let before = kernel.syscall_counts();
    let t = Instant::now();
    for k in &keys {
        db.put(k, &value).expect("put");
    }
    let wall_ns = t.elapsed().as_nanos() as f64;
    let counts = kernel.syscall_counts().since(&before);
    // Each put's WAL record: its batch header (12) + the entry's tag and varint lengths (3)
    // + key + value + the log fragment header (7).
    let wal_bytes = ops * (12 + 3 + 7 + (KEY_BYTES + value_bytes) as u64);
    db.close().expect("close");
    (wall_ns - modeled_syscalls_ns(&cpu, &counts, wal_bytes)) / ops as f64
}

/// ns of CPU per get (one table searched) beyond its system calls, on the real kernel.
fn get_ns(ops: u64) -> f64 {
    let cpu = CpuModel::this_host();
    let dir = tempfile::tempdir().expect("tempdir");
    let kernel: Arc<dyn Kernel> = Arc::new(RealKernel::new());
    let db = Db::open(kernel.clone(), dir.path(), options(BackgroundMode::Inline)).expect("open");
    let value = vec![b'v'; SMALL_VALUE_BYTES];
    for i in 0..ops {
        db.put(&key(i), &value).expect("put");
    }
    // Everything in one level, so each get searches exactly one table.
    db.compact_all().expect("compact");
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let keys: Vec<Vec<u8>> = (0..ops).map(|_| key(rng.gen_range(0..ops))).collect();
    // Warm the page cache.
    for k in keys.iter().take(1_000) {
        db.get(k).expect("get");
    }
    let before = kernel.syscall_counts();
    let t = Instant::now();
    for k in &keys {
        assert!(db.get(k).expect("get").is_some());
    }
    let wall_ns = t.elapsed().as_nanos() as f64;
    let counts = kernel.syscall_counts().since(&before);
    let bytes = counts.get(SyscallKind::Pread) * 4_096;
    db.close().expect("close");
    (wall_ns - modeled_syscalls_ns(&cpu, &counts, bytes)) / ops as f64
}

/// Host ns per flushed entry on the simulator (its calls are memcpys), for `value_bytes`.
fn flush_ns(value_bytes: usize, entries: u64) -> f64 {
    let kernel: Arc<dyn Kernel> = Arc::new(SimKernel::with_config(SimConfig {
        keep_events: false,
        ..SimConfig::new(1)
    }));
    let db = Db::open(
        kernel,
        std::path::Path::new("/tmp/cpu-costs"),
        options(BackgroundMode::Inline),
    )
    .expect("open");
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let value = vec![b'v'; value_bytes];
    for _ in 0..entries {
        db.put(&key(rng.gen_range(0..u64::MAX >> 8)), &value)
            .expect("put");
    }
    let t = Instant::now();
    db.flush().expect("flush");
    let wall_ns = t.elapsed().as_nanos() as f64;
    db.close().expect("close");
    wall_ns / entries as f64
}

/// Four overlapping sorted runs of `entries_per_run` entries with `value_bytes` values.
fn merge_input(value_bytes: usize, entries_per_run: usize) -> (Vec<Vec<Vec<u8>>>, JobParams) {
    let (runs, params, _) = merge_workload::MergeWorkload {
        seed: 4,
        runs: 4,
        entries_per_run,
        key_space: entries_per_run as u64 * 3,
        value_bytes,
    }
    .build();
    (runs, params)
}

/// Runs the merge on `machine`; returns (host ns, input entries, input bytes).
fn merge(machine: &mut dyn Machine, runs: &[Vec<Vec<u8>>], params: &JobParams) -> (f64, u64, u64) {
    let mut source = MemorySource::new(runs.to_vec());
    let mut sink = MemorySink::default();
    let t = Instant::now();
    drive(machine, params, &mut source, &mut sink, &mut |_| {}).expect("merge");
    let ns = t.elapsed().as_nanos() as f64;
    let j = machine.job_mut();
    (ns, j.entries_in, j.bytes_in)
}

/// Solves `total = a * entries + b * bytes` for (a, b) from two measurements.
fn fit(m1: (f64, f64, f64), m2: (f64, f64, f64)) -> (f64, f64) {
    let ((t1, e1, b1), (t2, e2, b2)) = (m1, m2);
    let det = e1 * b2 - e2 * b1;
    let a = (t1 * b2 - t2 * b1) / det;
    let b = (e1 * t2 - e2 * t1) / det;
    (a, b)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` lists benches; nothing to list here.
    }
    let n = rounds();
    let ops = 200_000u64;
    println!("cpu_costs: medians of {n} rounds");

    let w_small = median((0..n).map(|_| write_ns(SMALL_VALUE_BYTES, ops)).collect());
    let w_large = median((0..n).map(|_| write_ns(LARGE_VALUE_BYTES, ops)).collect());
    let record = |v: usize| (12 + 3 + KEY_BYTES + v) as f64;
    let (w_entry, w_byte) = fit(
        (w_small, 1.0, record(SMALL_VALUE_BYTES)),
        (w_large, 1.0, record(LARGE_VALUE_BYTES)),
    );
    // One entry per op: the per-entry part goes to ns_per_entry, the rest per byte.
    println!(
        "write: {w_small:.0} ns/put ({SMALL_VALUE_BYTES} B values), {w_large:.0} ns/put ({LARGE_VALUE_BYTES} B) -> {w_entry:.0} ns/entry + {:.0} ps/byte",
        w_byte * 1e3
    );

    let g = median((0..n).map(|_| get_ns(ops)).collect());
    println!("get: {g:.0} ns per table searched (beyond its preads)");

    let entries = 300_000u64;
    let f_small = median(
        (0..n)
            .map(|_| flush_ns(SMALL_VALUE_BYTES, entries))
            .collect(),
    );
    let f_large = median(
        (0..n)
            .map(|_| flush_ns(LARGE_VALUE_BYTES, entries))
            .collect(),
    );
    let (f_entry, f_byte) = fit(
        (f_small, 1.0, (KEY_BYTES + SMALL_VALUE_BYTES) as f64),
        (f_large, 1.0, (KEY_BYTES + LARGE_VALUE_BYTES) as f64),
    );
    println!(
        "flush: {f_small:.0} ns/entry ({SMALL_VALUE_BYTES} B), {f_large:.0} ns/entry ({LARGE_VALUE_BYTES} B) -> {f_entry:.0} ns/entry + {:.0} ps/byte",
        f_byte * 1e3
    );

    let mut ms = Vec::new();
    for value_bytes in [SMALL_VALUE_BYTES, LARGE_VALUE_BYTES] {
        let (runs, params) = merge_input(value_bytes, 2_400_000 / (value_bytes + 40));
        let samples: Vec<(f64, u64, u64)> = (0..n)
            .map(|_| merge(&mut TwinMachine::new(4), &runs, &params))
            .collect();
        let (_, e, b) = samples[0];
        let t = median(samples.iter().map(|s| s.0).collect());
        println!(
            "merge (twin): {value_bytes} B values: {:.1} ns/entry, {:.0} MB/s of input",
            t / e as f64,
            b as f64 / t * 1e3
        );
        ms.push((t, e as f64, b as f64));
    }
    let (m_entry, m_byte) = fit(ms[0], ms[1]);
    println!(
        "merge: -> {m_entry:.0} ns/entry + {:.0} ps/byte",
        m_byte * 1e3
    );

    let kernel = RealKernel::new();
    if let Some(why) = kernel.bpf_unavailable() {
        println!("SKIP the bpf row: {why}");
        return;
    }
    let kernel: Arc<dyn Kernel> = Arc::new(kernel);
    let (runs, params) = merge_input(SMALL_VALUE_BYTES, 24_000);
    let mut vm = VmMachine::new().expect("vm loads the program");
    merge(&mut vm, &runs, &params);
    let insns = vm.insns_executed;
    let mut linux = KernelMachine::new(kernel, 4).expect("Linux loads the program");
    let per_run: Vec<f64> = (0..n)
        .map(|_| {
            let before = linux.program_ns();
            merge(&mut linux, &runs, &params);
            (linux.program_ns() - before) as f64
        })
        .collect();
    let ns = median(per_run);
    println!(
        "bpf: {insns} instructions (vm) in {:.2} ms of BPF_PROG_TEST_RUN -> {:.0} ps/instruction",
        ns / 1e6,
        ns / insns as f64 * 1e3
    );
}
