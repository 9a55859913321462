//! Merge throughput of the compaction program: the Rust twin (native), the program on the vm
//! (its interpreter and its native tier), and the program in Linux through
//! `BPF_PROG_TEST_RUN` — the same inputs, side by side, input bytes per second.
//!
//! Input: a db_bench-like compaction of 4 overlapping runs (16-byte decimal keys, 100-byte
//! values, 4 KiB blocks, restart interval 16), 96,000 entries, ~12.7 MB of data blocks; one
//! key in 8 has older versions in other runs, one in 16 is a deletion. Windows hold as many
//! blocks as fit (the engine's `window_bytes` for 4 runs: 4 MiB per run), and the output is
//! drained whenever the program's 4 MiB output region fills (`OUTPUT_FULL`), as the resystance
//! executor would. Every mode's output is checked equal to the twin's before timing.
//!
//! Run: `cargo bench --bench compaction_program` (root for the Linux row; without it that
//! row is skipped with one line). Besides criterion's wall times (which include copying the
//! job to and from the maps: all 582 KiB at a job's first run, its ~35 KiB header later), it
//! prints the throughput over the kernel's own `BPF_PROG_TEST_RUN` time and each vm tier's
//! instructions per second.
//! rbpf's JIT cannot run this program: it has BPF-to-BPF calls and `may_goto`, which rbpf
//! 0.4.1's JIT does not translate (`resystance_vm::jit` refuses them by name).

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use resystance::compaction::machines::{KernelMachine, VmMachine};
use resystance_programs::abi::JobParams;
use resystance_programs::driver::{
    drive, DriveSummary, Machine, MemorySink, MemorySource, TwinMachine,
};
use resystance_real_kernel::RealKernel;
use resystance_traces::Kernel;
use resystance_vm::exec::Tier;

#[path = "support/merge_workload.rs"]
mod merge_workload;

const RUNS: usize = 4;

fn workload() -> (Vec<Vec<Vec<u8>>>, JobParams, u64) {
    merge_workload::MergeWorkload {
        seed: 0xc0_4ba7,
        runs: RUNS,
        entries_per_run: 24_000,
        key_space: 80_000,
        value_bytes: 100,
    }
    .build()
}

fn compact(
    machine: &mut dyn Machine,
    runs: &[Vec<Vec<u8>>],
    params: &JobParams,
) -> (DriveSummary, MemorySink) {
    let mut source = MemorySource::new(runs.to_vec());
    let mut sink = MemorySink::default();
    let summary = drive(machine, params, &mut source, &mut sink, &mut |_| {})
        .expect("the benchmark compaction succeeds");
    (summary, sink)
}

fn bench(c: &mut Criterion) {
    let (runs, params, input_bytes) = workload();
    let mut twin = TwinMachine::new(RUNS);
    let (reference, reference_out) = compact(&mut twin, &runs, &params);
    let mut vm = VmMachine::with_tier(Tier::Interpreter).expect("vm loads compact.bpf.o");
    let mut native = VmMachine::with_tier(Tier::Native).expect("vm loads compact.bpf.o");
    let kernel = RealKernel::new();
    let mut linux = match kernel.bpf_unavailable() {
        Some(why) => {
            eprintln!("SKIP the Linux row: {why}");
            None
        }
        None => {
            let kernel: Arc<dyn Kernel> = Arc::new(kernel);
            Some(KernelMachine::new(kernel, RUNS).expect("Linux accepts compact.bpf.o"))
        }
    };
    // Same output from every mode before anything is timed.
    let (_, out) = compact(&mut vm, &runs, &params);
    assert_eq!(
        out.files, reference_out.files,
        "vm output differs from the twin's"
    );
    let (_, out) = compact(&mut native, &runs, &params);
    assert_eq!(
        out.files, reference_out.files,
        "the vm's native tier output differs from the twin's"
    );
    assert_eq!(
        native.insns_executed, vm.insns_executed,
        "both vm tiers count the same instructions"
    );
    if let Some(linux) = linux.as_mut() {
        let (_, out) = compact(linux, &runs, &params);
        assert_eq!(
            out.files, reference_out.files,
            "Linux output differs from the twin's"
        );
    }
    eprintln!(
        "workload: {RUNS} runs, {} entries in, {} out, {} input blocks, {:.1} MB input, {} program runs",
        reference.entries_in,
        reference.entries_out,
        reference.blocks_in,
        input_bytes as f64 / 1e6,
        reference.calls
    );

    let mut group = c.benchmark_group("compaction_program");
    group.throughput(Throughput::Bytes(input_bytes));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(8));
    group.bench_function("twin", |b| {
        b.iter(|| black_box(compact(&mut twin, &runs, &params)));
    });
    if let Some(linux) = linux.as_mut() {
        group.bench_function("linux_test_run", |b| {
            b.iter(|| black_box(compact(linux, &runs, &params)));
        });
    }
    group.bench_function("vm_interpreter", |b| {
        b.iter(|| black_box(compact(&mut vm, &runs, &params)));
    });
    group.bench_function("vm_native", |b| {
        b.iter(|| black_box(compact(&mut native, &runs, &params)));
    });
    group.finish();

    // Time spent inside the program alone: the median of 15 compactions, and the fastest (on a
    // shared host the median moves with other load, the fastest much less).
    let median_min = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (v[v.len() / 2], v[0])
    };
    let median = |v: Vec<f64>| median_min(v).0;
    let (twin_ns, twin_min_ns) = median_min(
        (0..15)
            .map(|_| {
                let t = Instant::now();
                black_box(compact(&mut twin, &runs, &params));
                t.elapsed().as_nanos() as f64
            })
            .collect(),
    );
    let mbps = |ns: f64| input_bytes as f64 / ns * 1e3;
    eprintln!(
        "twin (whole drive, native): {twin_ns:.0} ns per compaction (fastest {twin_min_ns:.0}), {:.0} MB/s of input",
        mbps(twin_ns)
    );
    if let Some(linux) = linux.as_mut() {
        let (ns, min_ns) = median_min(
            (0..15)
                .map(|_| {
                    let before = linux.run_ns;
                    black_box(compact(linux, &runs, &params));
                    (linux.run_ns - before) as f64
                })
                .collect(),
        );
        eprintln!(
            "Linux BPF_PROG_TEST_RUN time only: {ns:.0} ns per compaction (fastest {min_ns:.0}), {:.0} MB/s of input = {:.2}x the twin (fastest: {:.2}x)",
            mbps(ns),
            twin_ns / ns,
            twin_min_ns / min_ns
        );
    }
    for (name, machine) in [("interpreter", &mut vm), ("native tier", &mut native)] {
        let mut insns = 0;
        let rates = (0..5)
            .map(|_| {
                let before = machine.insns_executed;
                let t = Instant::now();
                black_box(compact(machine, &runs, &params));
                insns = machine.insns_executed - before;
                t.elapsed().as_secs_f64()
            })
            .collect();
        let secs = median(rates);
        eprintln!(
            "vm {name}: {insns} instructions per compaction, {:.1} M instructions/s, {:.0} MB/s of input",
            insns as f64 / secs / 1e6,
            input_bytes as f64 / secs / 1e6
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
