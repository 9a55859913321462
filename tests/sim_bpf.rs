//! BPF on the simulated kernel: the compaction program loaded into a `SimKernel` (maps,
//! mmaps, `BPF_PROG_LOAD`, `BPF_PROG_TEST_RUN` on resystance-vm) must give the twin's
//! transcript on generated compactions, deterministically; and the engine's
//! `CompactionMode::Resystance` on the sim must write the tables baseline writes.

use std::sync::Arc;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use resystance::compaction::machines::KernelMachine;
use resystance::key::{compare_internal, internal_key, ValueType};
use resystance::sst::block::BlockBuilder;
use resystance::sst::format::block_trailer;
use resystance_programs::abi::{JobParams, RUNS_MAX};
use resystance_programs::driver::{Machine, TwinMachine};
use resystance_sim::SimKernel;
use resystance_traces::{Kernel, SyscallKind};

mod program_support;
use program_support::{window_bytes_pick, Transcript};

/// Generated compactions checked against the twin.
const CASES: u32 = 200;

/// One generated compaction (as in `tests/compaction_program.rs`, smaller).
#[derive(Clone, Debug)]
struct Case {
    runs: Vec<Vec<(Vec<u8>, Vec<u8>)>>,
    input_block_size: usize,
    params: JobParams,
    blocks_per_window: usize,
    first_offset: u32,
}

type RawRun = Vec<(usize, u32, bool, usize)>;

fn case_strategy() -> impl Strategy<Value = Case> {
    let runs = prop_oneof![6 => 1usize..=4, 3 => 5usize..=12, 1 => 13usize..=RUNS_MAX];
    let value_len = prop_oneof![8 => 0usize..24, 3 => 24usize..300, 1 => 1000usize..3000];
    let entry = (
        0usize..500,
        any::<u32>(),
        prop::bool::weighted(0.2),
        value_len,
    );
    let run_entries =
        prop_oneof![1 => Just(0usize..1), 8 => Just(1usize..40), 1 => Just(40usize..150)]
            .prop_flat_map(move |len| prop::collection::vec(entry.clone(), len));
    (
        (
            0usize..24,
            prop::collection::vec(prop::collection::vec(b'a'..=b'd', 0..5), 1..40),
            runs.prop_flat_map(move |k| prop::collection::vec(run_entries.clone(), k)),
            prop::collection::vec(any::<u32>(), 0..4),
            any::<bool>(),
        ),
        (
            prop_oneof![1 => 1usize..64, 2 => 64usize..1024, 2 => 1024usize..8192],
            prop_oneof![1 => 1u32..64, 2 => 64u32..1024, 2 => 1024u32..8192],
            1u32..=20,
            prop_oneof![1 => 1u64..300, 2 => 300u64..20_000, 1 => Just(u64::MAX)],
            prop_oneof![1 => 1u32..4, 2 => 4u32..200, 2 => Just(1u32 << 20)],
            prop_oneof![1 => Just(1usize), 1 => 2usize..6, 2 => Just(usize::MAX)],
            0u32..64,
            any::<u32>(),
        ),
    )
        .prop_map(
            |(
                (prefix_len, suffixes, runs, picks, bottommost),
                (
                    input_block,
                    block_size,
                    restart,
                    target,
                    per_call,
                    per_window,
                    first_offset,
                    window_pick,
                ),
            )| {
                build_case(
                    prefix_len,
                    &suffixes,
                    &runs,
                    &picks,
                    bottommost,
                    JobParams {
                        num_runs: runs.len() as u32,
                        block_size,
                        restart_interval: restart,
                        target_file_size: target,
                        bottommost,
                        snapshots: Vec::new(),
                        entries_per_call: per_call,
                        window_bytes: window_bytes_pick(runs.len() as u32, window_pick),
                    },
                    input_block,
                    per_window,
                    first_offset,
                )
            },
        )
}

/// Distinct sequence numbers ranked by each entry's hint, keys from a shared prefix and a
/// small alphabet (user keys repeat), each run sorted.
#[allow(clippy::too_many_arguments)]
fn build_case(
    prefix_len: usize,
    suffixes: &[Vec<u8>],
    raw_runs: &[RawRun],
    picks: &[u32],
    _bottommost: bool,
    mut params: JobParams,
    input_block_size: usize,
    blocks_per_window: usize,
    first_offset: u32,
) -> Case {
    let mut hints: Vec<(u32, usize, usize)> = Vec::new();
    for (r, run) in raw_runs.iter().enumerate() {
        for (i, e) in run.iter().enumerate() {
            hints.push((e.1, r, i));
        }
    }
    hints.sort_unstable();
    let mut seqs: Vec<Vec<u64>> = raw_runs.iter().map(|r| vec![0; r.len()]).collect();
    for (rank, &(_, r, i)) in hints.iter().enumerate() {
        seqs[r][i] = rank as u64 + 1;
    }
    let max_seq = hints.len() as u64;
    let prefix: Vec<u8> = (0..prefix_len).map(|i| b'p' + (i % 3) as u8).collect();
    let runs = raw_runs
        .iter()
        .enumerate()
        .map(|(r, run)| {
            let mut entries: Vec<(Vec<u8>, Vec<u8>)> = run
                .iter()
                .enumerate()
                .map(|(i, &(key, _, delete, value_len))| {
                    let mut user = prefix.clone();
                    user.extend_from_slice(&suffixes[key % suffixes.len()]);
                    let seq = seqs[r][i];
                    let (t, value) = if delete {
                        (ValueType::Deletion, Vec::new())
                    } else {
                        let v = (0..value_len)
                            .map(|j| (seq as usize * 7 + j) as u8)
                            .collect();
                        (ValueType::Value, v)
                    };
                    (internal_key(&user, seq, t), value)
                })
                .collect();
            entries.sort_by(|a, b| compare_internal(&a.0, &b.0));
            entries
        })
        .collect();
    let mut snapshots: Vec<u64> = picks
        .iter()
        .map(|&p| u64::from(p) % (max_seq + 2))
        .collect();
    snapshots.sort_unstable();
    snapshots.dedup();
    params.snapshots = snapshots;
    Case {
        runs,
        input_block_size,
        params,
        blocks_per_window,
        first_offset,
    }
}

/// The runs as data blocks (contents + trailer), restart interval 16.
fn encode_runs(case: &Case) -> Vec<Vec<Vec<u8>>> {
    case.runs
        .iter()
        .map(|run| {
            let mut blocks = Vec::new();
            let mut b = BlockBuilder::new(16);
            let mut flush = |b: &mut BlockBuilder| {
                let contents = b.finish().to_vec();
                let mut block = contents.clone();
                block.extend_from_slice(&block_trailer(&contents));
                blocks.push(block);
                b.reset();
            };
            for (k, v) in run {
                if !b.is_empty() && b.size_estimate() >= case.input_block_size {
                    flush(&mut b);
                }
                b.add(k, v);
            }
            if !b.is_empty() {
                flush(&mut b);
            }
            blocks
        })
        .collect()
}

fn transcript(machine: &mut dyn Machine, case: &Case, blocks: &[Vec<Vec<u8>>]) -> Transcript {
    program_support::transcript(
        machine,
        &case.params,
        blocks,
        case.blocks_per_window,
        case.first_offset,
    )
}

fn sim_machine(seed: u64) -> (Arc<SimKernel>, KernelMachine) {
    let sim = Arc::new(SimKernel::new(seed));
    let machine = KernelMachine::new(Arc::clone(&sim) as Arc<dyn Kernel>, RUNS_MAX)
        .expect("the compaction program loads into the sim");
    (sim, machine)
}

fn cases() -> Vec<Case> {
    let config = Config {
        cases: CASES,
        ..Config::default()
    };
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha));
    let strategy = case_strategy();
    (0..CASES)
        .map(|_| strategy.new_tree(&mut runner).expect("a case").current())
        .collect()
}

#[test]
fn the_program_on_the_sim_gives_the_twins_transcript() {
    let (sim, mut machine) = sim_machine(7);
    let loaded = sim.syscall_counts();
    assert_eq!(
        loaded.get(SyscallKind::BpfProgLoad),
        1,
        "one load, accepted"
    );
    assert_eq!(loaded.get(SyscallKind::Mmap), 4, "four maps mmapped");
    assert!(loaded.get(SyscallKind::BpfMapCreate) >= 4);
    assert_eq!(machine.verified_insns(), None, "the vm reports no count");
    let mut twin = TwinMachine::new(RUNS_MAX);
    let (mut runs, mut errors) = (0u64, 0u64);
    for (i, case) in cases().iter().enumerate() {
        let blocks = encode_runs(case);
        let want = transcript(&mut twin, case, &blocks);
        let t0 = sim.now_ns();
        let before = sim.syscall_counts().get(SyscallKind::BpfProgTestRun);
        let ns_before = machine.run_ns;
        let got = transcript(&mut machine, case, &blocks);
        assert_eq!(got, want, "case {i}: the sim and the twin differ: {case:?}");
        let calls = sim.syscall_counts().get(SyscallKind::BpfProgTestRun) - before;
        assert_eq!(
            calls,
            want.statuses.len() as u64,
            "case {i}: one test run per status"
        );
        let run_ns = machine.run_ns - ns_before;
        assert!(
            run_ns >= calls * 600,
            "case {i}: each run costs at least the fixed 0.7 µs (−jitter)"
        );
        assert!(
            sim.now_ns() - t0 >= run_ns,
            "case {i}: runs advance the clock"
        );
        runs += calls;
        errors += u64::from(want.result.is_err());
    }
    say!(
        "sim = twin on {CASES} generated compactions ({runs} test runs, {errors} program errors), \
         {} µs of modelled program time",
        machine.run_ns / 1000
    );
}

#[test]
fn the_program_on_the_sim_is_deterministic() {
    let digest = |seed| {
        let (sim, mut machine) = sim_machine(seed);
        for case in cases().iter().take(20) {
            let blocks = encode_runs(case);
            transcript(&mut machine, case, &blocks);
        }
        (sim.event_digest(), sim.now_ns(), machine.run_ns)
    };
    let a = digest(3);
    assert_eq!(a, digest(3), "same seed, same events and times");
    assert_ne!(a.0, digest(4).0, "another seed jitters other times");
}

#[test]
fn a_crash_drops_programs_and_maps() {
    let (sim, mut machine) = sim_machine(1);
    let case = &cases()[0];
    let blocks = encode_runs(case);
    transcript(&mut machine, case, &blocks);
    sim.crash();
    sim.restart();
    let err = machine
        .run()
        .expect_err("the program is gone after a crash");
    say!("after a crash: {err}");
    drop(machine);
    // A fresh load after the restart works again.
    let mut again = KernelMachine::new(Arc::clone(&sim) as Arc<dyn Kernel>, RUNS_MAX)
        .expect("loads after a restart");
    let mut twin = TwinMachine::new(RUNS_MAX);
    assert_eq!(
        transcript(&mut again, case, &blocks),
        transcript(&mut twin, case, &blocks)
    );
}
