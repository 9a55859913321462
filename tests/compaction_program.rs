//! The compaction program against its Rust twin and against the engine's own semantics.
//!
//! Generated compactions (proptest): 1 to 64 runs (near 64 often: the pool then holds only
//! the smallest windows), windows of every valid size (the smallest, the largest the pool holds for the run
//! count, and between), keys with long shared prefixes, many
//! versions per key, deletions, snapshots, empty runs, tiny and large blocks, values up to
//! 5 KB, file cuts, windows of one block to many, small per-call budgets. Each case is
//! encoded into input data blocks with the engine's block builder and:
//!
//! 1. the twin's output files must equal the data blocks the engine's own path writes
//!    (merge → `VersionFilter` → output cut rule → `TableBuilder`), byte for byte;
//! 2. the program on the vm must give the twin's transcript: every run's status, every
//!    output block and record, the final counters — on the vm's native tier, and on every
//!    `INTERPRETER_EVERY`-th case also on its interpreter, with the same instruction count;
//! 3. the program on Linux (root; one SKIP line otherwise) likewise.
//!
//! Generated cases are too small to fill the output region (none did in 10,000, with ABI 2's
//! 1 MiB region either; the summary line counts `OUTPUT_FULL`), so two built cases fill it, by
//! records and by bytes, and drain it mid-job (same three checks).
//!
//! `PROGRAM_CASES` sets the number of cases (default 10,000); `PROGRAM_CASES_KERNEL` the
//! number that also run on Linux (default: all). Damaged inputs are tested in
//! `tests/compaction_program_faults.rs`.

use std::cell::RefCell;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use resystance::compaction::machines::{KernelMachine, VmMachine};
use resystance::compaction::visibility::VersionFilter;
use resystance::key::{compare_internal, internal_key, user_key, ValueType};
use resystance::sst::block::BlockBuilder;
use resystance::sst::format::block_trailer;
use resystance::sst::{TableBuilder, TableOptions};
use resystance_programs::abi::{
    window_bytes_for, JobParams, OUTPUT_BYTES, RECORDS_MAX, RUNS_MAX, WINDOW_BLOCKS_MAX,
    WINDOW_BYTES_MAX,
};
use resystance_programs::driver::{Machine, TwinMachine};
use resystance_vm::exec::Tier;

mod program_support;
use program_support::{env_u64, kernel_machine, window_bytes_pick, Transcript};

/// One generated compaction.
#[derive(Clone, Debug)]
struct Case {
    /// Each run's entries (internal key, value), strictly increasing.
    runs: Vec<Vec<(Vec<u8>, Vec<u8>)>>,
    input_block_size: usize,
    input_restart_interval: usize,
    params: JobParams,
    blocks_per_window: usize,
    first_offset: u32,
}

/// Raw material for a case: turned into a [`Case`] by [`build_case`].
#[derive(Clone, Debug)]
struct Raw {
    prefix_len: usize,
    suffixes: Vec<Vec<u8>>,
    runs: Vec<Vec<(usize, u32, bool, usize)>>,
    snapshot_picks: Vec<u32>,
    bottommost: bool,
    input_block_size: usize,
    input_restart_interval: usize,
    block_size: u32,
    restart_interval: u32,
    target_file_size: u64,
    entries_per_call: u32,
    blocks_per_window: usize,
    first_offset: u32,
    window_pick: u32,
}

fn raw_strategy() -> impl Strategy<Value = Raw> {
    let runs = prop_oneof![
        12 => 1usize..=4,
        6 => 5usize..=12,
        1 => 13usize..=RUNS_MAX,
        1 => RUNS_MAX - 3..=RUNS_MAX
    ];
    let value_len = prop_oneof![8 => 0usize..24, 3 => 24usize..300, 1 => 1000usize..5000];
    let entry = (
        0usize..1000,
        any::<u32>(),
        prop::bool::weighted(0.2),
        value_len,
    );
    let run_entries =
        prop_oneof![1 => Just(0usize..1), 8 => Just(1usize..60), 1 => Just(60usize..250)]
            .prop_flat_map(move |len| prop::collection::vec(entry.clone(), len));
    (
        (
            0usize..48,
            prop::collection::vec(prop::collection::vec(b'a'..=b'd', 0..6), 1..50),
            runs.prop_flat_map(move |k| prop::collection::vec(run_entries.clone(), k)),
            prop::collection::vec(any::<u32>(), 0..6),
            any::<bool>(),
        ),
        (
            prop_oneof![1 => 1usize..64, 2 => 64usize..1024, 2 => 1024usize..8192],
            1usize..=20,
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
                (prefix_len, suffixes, runs, snapshot_picks, bottommost),
                (
                    input_block_size,
                    input_restart_interval,
                    block_size,
                    restart_interval,
                    target_file_size,
                    entries_per_call,
                    blocks_per_window,
                    first_offset,
                    window_pick,
                ),
            )| Raw {
                prefix_len,
                suffixes,
                runs,
                snapshot_picks,
                bottommost,
                input_block_size,
                input_restart_interval,
                block_size,
                restart_interval,
                target_file_size,
                entries_per_call,
                blocks_per_window,
                first_offset,
                window_pick,
            },
        )
}

/// Gives every entry a distinct sequence number (ranked by its random hint), builds keys from
/// a shared prefix and a small alphabet (so user keys repeat across and within runs), and
/// sorts each run.
fn build_case(raw: &Raw) -> Case {
    let mut hints: Vec<(u32, usize, usize)> = Vec::new();
    for (r, run) in raw.runs.iter().enumerate() {
        for (i, e) in run.iter().enumerate() {
            hints.push((e.1, r, i));
        }
    }
    hints.sort_unstable();
    let mut seqs: Vec<Vec<u64>> = raw.runs.iter().map(|r| vec![0; r.len()]).collect();
    for (rank, &(_, r, i)) in hints.iter().enumerate() {
        seqs[r][i] = rank as u64 + 1;
    }
    let max_seq = hints.len() as u64;
    let prefix: Vec<u8> = (0..raw.prefix_len).map(|i| b'p' + (i % 3) as u8).collect();
    let runs = raw
        .runs
        .iter()
        .enumerate()
        .map(|(r, run)| {
            let mut entries: Vec<(Vec<u8>, Vec<u8>)> = run
                .iter()
                .enumerate()
                .map(|(i, &(key, _, delete, value_len))| {
                    let mut user = prefix.clone();
                    user.extend_from_slice(&raw.suffixes[key % raw.suffixes.len()]);
                    let seq = seqs[r][i];
                    let t = if delete {
                        ValueType::Deletion
                    } else {
                        ValueType::Value
                    };
                    let value = if delete {
                        Vec::new()
                    } else {
                        (0..value_len)
                            .map(|j| (seq as usize * 7 + j) as u8)
                            .collect()
                    };
                    (internal_key(&user, seq, t), value)
                })
                .collect();
            entries.sort_by(|a, b| compare_internal(&a.0, &b.0));
            entries
        })
        .collect();
    let mut snapshots: Vec<u64> = raw
        .snapshot_picks
        .iter()
        .map(|&p| u64::from(p) % (max_seq + 2))
        .collect();
    snapshots.sort_unstable();
    snapshots.dedup();
    Case {
        params: JobParams {
            num_runs: raw.runs.len() as u32,
            block_size: raw.block_size,
            restart_interval: raw.restart_interval,
            target_file_size: raw.target_file_size,
            bottommost: raw.bottommost,
            snapshots,
            entries_per_call: raw.entries_per_call,
            window_bytes: window_bytes_pick(raw.runs.len() as u32, raw.window_pick),
        },
        runs,
        input_block_size: raw.input_block_size,
        input_restart_interval: raw.input_restart_interval,
        blocks_per_window: raw.blocks_per_window,
        first_offset: raw.first_offset,
    }
}

/// The runs as data blocks (contents + trailer), cut as the table builder cuts them.
fn encode_runs(case: &Case) -> Vec<Vec<Vec<u8>>> {
    case.runs
        .iter()
        .map(|run| {
            let mut blocks = Vec::new();
            let mut b = BlockBuilder::new(case.input_restart_interval);
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

/// What the engine's own path writes: the data section of each output table.
fn reference_files(case: &Case) -> Vec<Vec<u8>> {
    let mut all: Vec<&(Vec<u8>, Vec<u8>)> = case.runs.iter().flatten().collect();
    all.sort_by(|a, b| compare_internal(&a.0, &b.0));
    let mut filter = VersionFilter::new(case.params.snapshots.clone(), case.params.bottommost);
    let options = TableOptions {
        block_size_bytes: case.params.block_size as usize,
        block_restart_interval: case.params.restart_interval as usize,
        index_block_restart_interval: 1,
    };
    let mut files = Vec::new();
    let mut builder: Option<TableBuilder<Vec<u8>>> = None;
    let mut last: Option<Vec<u8>> = None;
    let finish = |b: TableBuilder<Vec<u8>>, files: &mut Vec<Vec<u8>>| {
        let (bytes, summary) = b.finish().expect("in-memory table");
        files.push(bytes[..summary.data_size as usize].to_vec());
    };
    for (k, v) in all {
        if !filter.keep(k) {
            continue;
        }
        let new_user_key = last.as_ref().is_none_or(|l| user_key(l) != user_key(k));
        if new_user_key
            && builder
                .as_ref()
                .is_some_and(|b| b.file_size_estimate() >= case.params.target_file_size)
        {
            finish(builder.take().expect("open"), &mut files);
        }
        builder
            .get_or_insert_with(|| TableBuilder::new(options.clone(), Vec::new()))
            .add(k, v)
            .expect("in-memory table");
        last = Some(k.clone());
    }
    if let Some(b) = builder {
        finish(b, &mut files);
    }
    files
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

/// Every this many cases the vm's interpreter runs the case too (it is ~15x slower than the
/// native tier; `vm/tests/native_tier.rs` checks the two tiers on random programs).
const INTERPRETER_EVERY: u64 = 4;

struct Machines {
    twin: TwinMachine,
    vm: VmMachine,
    vm_interpreter: VmMachine,
    kernel: Option<KernelMachine>,
}

fn check(
    m: &mut Machines,
    case: &Case,
    blocks: &[Vec<Vec<u8>>],
    with_kernel: bool,
    with_interpreter: bool,
) -> Result<Transcript, TestCaseError> {
    let twin = transcript(&mut m.twin, case, blocks);
    let insns_before = m.vm.insns_executed;
    let vm = transcript(&mut m.vm, case, blocks);
    prop_assert_eq!(&vm, &twin, "vm and twin differ");
    if with_interpreter {
        let interp_before = m.vm_interpreter.insns_executed;
        let interp = transcript(&mut m.vm_interpreter, case, blocks);
        prop_assert_eq!(&interp, &twin, "the vm's interpreter and the twin differ");
        prop_assert_eq!(
            m.vm_interpreter.insns_executed - interp_before,
            m.vm.insns_executed - insns_before,
            "the vm's tiers executed different instruction counts"
        );
    }
    if with_kernel {
        if let Some(k) = m.kernel.as_mut() {
            let kernel = transcript(k, case, blocks);
            prop_assert_eq!(&kernel, &twin, "Linux and twin differ");
        }
    }
    Ok(twin)
}

#[test]
fn twin_vm_and_linux_agree_with_the_engine_on_generated_compactions() {
    let cases = env_u64("PROGRAM_CASES").unwrap_or(10_000);
    let kernel_cases = env_u64("PROGRAM_CASES_KERNEL").unwrap_or(cases);
    let machines = RefCell::new(Machines {
        twin: TwinMachine::new(RUNS_MAX),
        vm: VmMachine::with_tier(Tier::Native).expect("the vm loads compact.bpf.o"),
        vm_interpreter: VmMachine::with_tier(Tier::Interpreter)
            .expect("the vm loads compact.bpf.o"),
        kernel: kernel_machine("the compaction-program tests"),
    });
    let ran_kernel = machines.borrow().kernel.is_some();
    if let Some(k) = &machines.borrow().kernel {
        say!(
            "Linux verifier accepted compact.bpf.o: {} instructions processed",
            k.verified_insns()
                .map_or_else(|| "?".to_string(), |n| n.to_string())
        );
    }
    let mut runner = TestRunner::new(Config {
        cases: u32::try_from(cases).expect("case count fits u32"),
        failure_persistence: None,
        ..Config::default()
    });
    let stats = RefCell::new((0u64, 0u64, 0u64, 0u64, 0u64, Duration::ZERO, 0u64));
    let started = Instant::now();
    runner
        .run(&raw_strategy(), |raw| {
            let case = build_case(&raw);
            let blocks = encode_runs(&case);
            let mut st = stats.borrow_mut();
            let with_kernel = st.0 < kernel_cases;
            let t0 = Instant::now();
            let with_interpreter = st.0 % INTERPRETER_EVERY == 0;
            let t = check(
                &mut machines.borrow_mut(),
                &case,
                &blocks,
                with_kernel,
                with_interpreter,
            )?;
            st.5 += t0.elapsed();
            let summary = t
                .result
                .as_ref()
                .map_err(|e| TestCaseError::fail(format!("a valid compaction failed: {e}")))?;
            let files: Vec<Vec<u8>> = t.files.iter().map(|f| f.0.clone()).collect();
            prop_assert_eq!(
                files,
                reference_files(&case),
                "twin differs from the engine"
            );
            st.0 += 1;
            st.1 += summary.entries_in;
            st.2 += summary.calls;
            st.3 += summary.blocks_in;
            st.4 += t.files.len() as u64;
            st.6 += summary.output_full;
            Ok(())
        })
        .unwrap();
    let st = stats.borrow();
    let m = machines.borrow();
    say!(
        "compaction program: {} generated compactions ({} entries, {} input blocks, {} output files, {} program runs per machine, {} of them OUTPUT_FULL) — twin = vm native tier (= vm interpreter on {}){} = engine; vm executed {} instructions; {:.1} s",
        st.0,
        st.1,
        st.3,
        st.4,
        st.2,
        st.6,
        st.0.div_ceil(INTERPRETER_EVERY),
        if ran_kernel {
            format!(" = Linux (on {})", st.0.min(kernel_cases))
        } else {
            String::new()
        },
        m.vm.insns_executed,
        started.elapsed().as_secs_f64()
    );
}

/// Two runs of `entries` entries each with `value_len`-byte values, distinct user keys
/// interleaved between the runs (every entry is kept), input blocks cut at
/// `input_block_size`, windows the largest the pool holds for 2 runs.
fn filling_case(
    entries: usize,
    value_len: usize,
    input_block_size: usize,
    block_size: u32,
    target_file_size: u64,
) -> Case {
    let runs = (0..2u64)
        .map(|r| {
            (0..entries as u64)
                .map(|i| {
                    let n = 2 * i + r;
                    let user = format!("key{n:013}");
                    let value = (0..value_len).map(|j| (n as usize + j) as u8).collect();
                    (
                        internal_key(user.as_bytes(), n + 1, ValueType::Value),
                        value,
                    )
                })
                .collect()
        })
        .collect();
    Case {
        runs,
        input_block_size,
        input_restart_interval: 16,
        params: JobParams {
            num_runs: 2,
            block_size,
            restart_interval: 16,
            target_file_size,
            bottommost: false,
            snapshots: Vec::new(),
            entries_per_call: 1 << 20,
            window_bytes: window_bytes_for(2).expect("the pool holds 2 runs"),
        },
        blocks_per_window: usize::MAX,
        first_offset: 0,
    }
}

/// The output region fills, by records and by bytes, and is drained (`OUTPUT_FULL`) mid-job:
/// twin = vm (both tiers) = Linux = engine. The generated cases above are too small to fill
/// the 4 MiB region or its 1024 records, so these two do it on purpose.
#[test]
fn the_output_region_fills_by_records_and_by_bytes_alike_everywhere() {
    let mut machines = Machines {
        twin: TwinMachine::new(RUNS_MAX),
        vm: VmMachine::with_tier(Tier::Native).expect("the vm loads compact.bpf.o"),
        vm_interpreter: VmMachine::with_tier(Tier::Interpreter)
            .expect("the vm loads compact.bpf.o"),
        kernel: kernel_machine("the output-region tests"),
    };
    // Records: block_size 1 makes every entry a block of its own, 3,000 blocks in all.
    let by_records = filling_case(1500, 8, 4096, 1, u64::MAX);
    // Each drain and the final one take at most RECORDS_MAX records (OUTPUT_BYTES bytes).
    let records_full = 3000usize.div_ceil(RECORDS_MAX) - 1;
    // Bytes: 800 entries of 30,000-byte values, 24 MB (blocks of 64 KiB cut after three); the
    // region is full once it has less than one largest block free. Files of 1 MiB, so new
    // files start between drains.
    let by_bytes = filling_case(400, 30_000, 4096, 65_536, 1 << 20);
    let bytes_full = 24_000_000usize.div_ceil(OUTPUT_BYTES) - 1;
    for (name, case, full_min) in [
        ("records", &by_records, records_full),
        ("bytes", &by_bytes, bytes_full),
    ] {
        let blocks = encode_runs(case);
        let t = check(&mut machines, case, &blocks, true, true)
            .unwrap_or_else(|e| panic!("filling by {name}: {e}"));
        let summary = t.result.as_ref().expect("a valid compaction");
        let files: Vec<Vec<u8>> = t.files.iter().map(|f| f.0.clone()).collect();
        assert_eq!(
            files,
            reference_files(case),
            "by {name}: twin differs from the engine"
        );
        assert!(
            summary.output_full >= full_min as u64,
            "by {name}: {} OUTPUT_FULL, expected at least {full_min}",
            summary.output_full
        );
        say!(
            "output region filled by {name}: {} output blocks in {} files, {} OUTPUT_FULL drains; twin = vm (both tiers){} = engine",
            summary.blocks_out,
            files.len(),
            summary.output_full,
            if machines.kernel.is_some() { " = Linux" } else { "" }
        );
    }
}

/// Windows `MemorySource` fills for `blocks` (one run's, contents + trailer) in windows of
/// `window_bytes`: as many blocks as fit, at most `WINDOW_BLOCKS_MAX`.
fn windows_needed(blocks: &[Vec<u8>], window_bytes: usize) -> u64 {
    let (mut windows, mut count, mut bytes) = (0u64, 0usize, 0usize);
    for b in blocks {
        if count == 0 || count == WINDOW_BLOCKS_MAX || bytes + b.len() > window_bytes {
            windows += 1;
            count = 0;
            bytes = 0;
        }
        count += 1;
        bytes += b.len();
    }
    windows
}

/// The largest windows, full: a 2-run job's 8 MiB windows (ABI 3: 2 MiB) filled by bytes with
/// ~2,040 blocks of 4 KiB, and by block count with `WINDOW_BLOCKS_MAX` (2,048; ABI 3: 512)
/// blocks of 1 KiB — twin = vm (both tiers) = Linux = engine, and as few windows (refills) as
/// those sizes allow.
#[test]
fn the_largest_windows_hold_8_mib_and_2048_blocks_alike_everywhere() {
    let mut machines = Machines {
        twin: TwinMachine::new(RUNS_MAX),
        vm: VmMachine::with_tier(Tier::Native).expect("the vm loads compact.bpf.o"),
        vm_interpreter: VmMachine::with_tier(Tier::Interpreter)
            .expect("the vm loads compact.bpf.o"),
        kernel: kernel_machine("the largest-window tests"),
    };
    // ~12 MB per run in 4 KiB blocks: each run's first window ends where 8 MiB does.
    let by_bytes = filling_case(105_000, 100, 4096, 4096, 4 << 20);
    // ~3 MB per run in 1 KiB blocks: each run's first window ends at its 2,048th block.
    let by_blocks = filling_case(27_000, 100, 1024, 4096, 4 << 20);
    for (name, case) in [("bytes", &by_bytes), ("blocks", &by_blocks)] {
        let window_bytes = case.params.window_bytes as usize;
        assert_eq!(window_bytes, WINDOW_BYTES_MAX, "a 2-run job's window");
        let blocks = encode_runs(case);
        let windows: u64 = blocks
            .iter()
            .map(|run| windows_needed(run, window_bytes))
            .sum();
        let t = check(&mut machines, case, &blocks, true, true)
            .unwrap_or_else(|e| panic!("windows full by {name}: {e}"));
        let summary = t.result.as_ref().expect("a valid compaction");
        let files: Vec<Vec<u8>> = t.files.iter().map(|f| f.0.clone()).collect();
        assert_eq!(
            files,
            reference_files(case),
            "by {name}: twin differs from the engine"
        );
        assert_eq!(summary.windows, windows, "by {name}: windows filled");
        // On average past ABI 3's limits, so some window is too.
        let blocks_per_window = summary.blocks_in / summary.windows;
        let bytes_per_window = summary.bytes_in / summary.windows;
        assert!(
            blocks_per_window > 512,
            "by {name}: {blocks_per_window} blocks a window"
        );
        if name == "bytes" {
            assert!(
                bytes_per_window > 2 << 20,
                "by {name}: {bytes_per_window} B a window"
            );
        }
        say!(
            "largest windows full by {name}: {} input blocks ({} B) in {} windows of 8 MiB, {} program runs; twin = vm (both tiers){} = engine",
            summary.blocks_in,
            summary.bytes_in,
            summary.windows,
            summary.calls,
            if machines.kernel.is_some() { " = Linux" } else { "" }
        );
    }
}
