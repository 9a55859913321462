//! Instructions per second of the checked interpreter (`exec::Vm`, `Tier::Interpreter`), the
//! vm's checked native tier (`Tier::Native`) and rbpf's unchecked JIT fast mode
//! (`jit::JitProgram`) on a merge-heavy program: two sorted arrays of u64 merged into a third.
//!
//! The merge is a hand-written raw program with the loop shape of a compaction's per-entry
//! merge: two loads, a compare, a store, cursor bumps. It uses no ISA v4, atomics or helpers,
//! so rbpf's JIT compiles it too (it cannot compile the compaction program itself).
//!
//! Run: `cargo bench -p resystance-vm --bench interp` (about 10 s after the build). The
//! compaction program on the interpreter next to Linux's `BPF_PROG_TEST_RUN`:
//! `cargo bench --bench compaction_program` in the root package.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use std::time::Duration;

use resystance_vm::exec::{native_available, Limits, Program, Tier, Vm};

/// Elements in each input array.
const INPUT_ELEMENTS: usize = 4096;
/// Bytes before the arrays: the two element counts.
const HEADER_BYTES: usize = 16;

// Opcodes (kernel uapi `bpf.h`), 64-bit forms only.
const LDXDW: u8 = 0x79;
const STXDW: u8 = 0x7b;
const MOV_REG: u8 = 0xbf;
const ADD_IMM: u8 = 0x07;
const ADD_REG: u8 = 0x0f;
const SUB_REG: u8 = 0x1f;
const LSH_IMM: u8 = 0x67;
const RSH_IMM: u8 = 0x77;
const JGE_REG: u8 = 0x3d;
const JLT_REG: u8 = 0xad;
const JA: u8 = 0x05;
const EXIT: u8 = 0x95;

fn insn(opc: u8, dst: u8, src: u8, off: i16, imm: i32) -> [u8; 8] {
    resystance_vm::exec::encode_insn(opc, dst, src, off, imm).to_le_bytes()
}

/// The merge. Memory: `n_a: u64, n_b: u64, a[n_a], b[n_b], out[n_a + n_b]`; returns the
/// number of elements written. Cursors are pointers: r3/r4 = a and its end, r5/r6 = b and
/// its end (= out), r7 = out cursor. Jump offsets are relative to the next instruction; the
/// bench checks the output against Rust's own merge, so a wrong offset cannot go unnoticed.
fn merge_program() -> Vec<u8> {
    let insns = [
        insn(LDXDW, 8, 1, 0, 0),    // 0: r8 = n_a
        insn(LDXDW, 9, 1, 8, 0),    // 1: r9 = n_b
        insn(MOV_REG, 3, 1, 0, 0),  // 2: r3 = mem
        insn(ADD_IMM, 3, 0, 0, 16), // 3: r3 = &a[0]
        insn(MOV_REG, 4, 8, 0, 0),  // 4
        insn(LSH_IMM, 4, 0, 0, 3),  // 5
        insn(ADD_REG, 4, 3, 0, 0),  // 6: r4 = &a[n_a] = &b[0]
        insn(MOV_REG, 5, 4, 0, 0),  // 7: r5 = &b[0]
        insn(MOV_REG, 6, 9, 0, 0),  // 8
        insn(LSH_IMM, 6, 0, 0, 3),  // 9
        insn(ADD_REG, 6, 5, 0, 0),  // 10: r6 = &b[n_b] = &out[0]
        insn(MOV_REG, 7, 6, 0, 0),  // 11: r7 = &out[0]
        insn(JGE_REG, 3, 4, 18, 0), // 12 (both): a done -> 31 (rest of b)
        insn(JGE_REG, 5, 6, 11, 0), // 13: b done -> 25 (rest of a)
        insn(LDXDW, 8, 3, 0, 0),    // 14: r8 = *a
        insn(LDXDW, 9, 5, 0, 0),    // 15: r9 = *b
        insn(JLT_REG, 9, 8, 4, 0),  // 16: b < a -> 21 (stable: equal keys take a first)
        insn(STXDW, 7, 8, 0, 0),    // 17: *out = *a
        insn(ADD_IMM, 3, 0, 0, 8),  // 18
        insn(ADD_IMM, 7, 0, 0, 8),  // 19
        insn(JA, 0, 0, -9, 0),      // 20 -> 12
        insn(STXDW, 7, 9, 0, 0),    // 21: *out = *b
        insn(ADD_IMM, 5, 0, 0, 8),  // 22
        insn(ADD_IMM, 7, 0, 0, 8),  // 23
        insn(JA, 0, 0, -13, 0),     // 24 -> 12
        insn(JGE_REG, 3, 4, 11, 0), // 25 (rest of a): done -> 37
        insn(LDXDW, 8, 3, 0, 0),    // 26
        insn(STXDW, 7, 8, 0, 0),    // 27
        insn(ADD_IMM, 3, 0, 0, 8),  // 28
        insn(ADD_IMM, 7, 0, 0, 8),  // 29
        insn(JA, 0, 0, -6, 0),      // 30 -> 25
        insn(JGE_REG, 5, 6, 5, 0),  // 31 (rest of b): done -> 37
        insn(LDXDW, 9, 5, 0, 0),    // 32
        insn(STXDW, 7, 9, 0, 0),    // 33
        insn(ADD_IMM, 5, 0, 0, 8),  // 34
        insn(ADD_IMM, 7, 0, 0, 8),  // 35
        insn(JA, 0, 0, -6, 0),      // 36 -> 31
        insn(MOV_REG, 0, 7, 0, 0),  // 37 (done)
        insn(SUB_REG, 0, 6, 0, 0),  // 38: bytes written
        insn(RSH_IMM, 0, 0, 0, 3),  // 39: elements written
        insn(EXIT, 0, 0, 0, 0),     // 40
    ];
    insns.concat()
}

/// Two interleaved sorted inputs (so the merge alternates rather than copying runs), the
/// memory buffer holding them, and the merged output expected.
fn merge_input() -> (Vec<u8>, Vec<u64>) {
    let a: Vec<u64> = (0..INPUT_ELEMENTS as u64).map(|i| i * 3).collect();
    let b: Vec<u64> = (0..INPUT_ELEMENTS as u64)
        .map(|i| i * 3 + 1 + i % 2)
        .collect();
    let mut mem = Vec::with_capacity(HEADER_BYTES + 16 * INPUT_ELEMENTS * 2);
    mem.extend_from_slice(&(a.len() as u64).to_le_bytes());
    mem.extend_from_slice(&(b.len() as u64).to_le_bytes());
    for v in a.iter().chain(&b) {
        mem.extend_from_slice(&v.to_le_bytes());
    }
    mem.resize(HEADER_BYTES + 16 * INPUT_ELEMENTS * 2, 0);
    let mut expected = [a, b].concat();
    expected.sort_unstable();
    (mem, expected)
}

fn output(mem: &[u8]) -> Vec<u64> {
    mem[HEADER_BYTES + 16 * INPUT_ELEMENTS..]
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8-byte chunk")))
        .collect()
}

fn bench_merge(c: &mut Criterion) {
    let program = Program::from_raw(&merge_program()).expect("merge program is valid");
    let (input, expected) = merge_input();
    let mut vm = Vm::new();
    vm.set_tier(Tier::Interpreter);
    let mut native = Vm::new();
    native.set_tier(Tier::Native);

    // One checked run first: proves the output is right and every access in bounds, and
    // counts the instructions a run executes (the same for the JIT: same instructions).
    let mut mem = input.clone();
    let checked = vm
        .run(&program, &mut mem, &Limits::default())
        .expect("merge runs in the interpreter");
    assert_eq!(checked.r0, 2 * INPUT_ELEMENTS as u64);
    assert_eq!(output(&mem), expected, "interpreter merge output");
    let insns = checked.insns_executed;
    println!("merge: {insns} eBPF instructions per run");
    let mut native_mem = input.clone();
    let on_native = native
        .run(&program, &mut native_mem, &Limits::default())
        .expect("merge runs on the native tier");
    assert_eq!(
        on_native, checked,
        "native tier: same r0 and instruction count"
    );
    assert_eq!(output(&native_mem), expected, "native tier merge output");

    let mut group = c.benchmark_group("merge_2x4096_u64");
    group.throughput(Throughput::Elements(insns));
    group.bench_function("interpreter", |bench| {
        bench.iter(|| {
            let result = vm
                .run(&program, black_box(&mut mem), &Limits::default())
                .expect("merge runs");
            black_box(result.r0)
        });
    });
    if native_available() {
        group.bench_function("native_tier", |bench| {
            bench.iter(|| {
                let result = native
                    .run(&program, black_box(&mut native_mem), &Limits::default())
                    .expect("merge runs");
                black_box(result.r0)
            });
        });
    }

    #[cfg(all(target_arch = "x86_64", not(windows)))]
    {
        use resystance_vm::jit::{JitProgram, LinuxVerified};
        // SAFETY: these instructions were not loaded into Linux. What the contract protects —
        // every access in bounds and termination — holds by construction: the loop reads
        // `a` and `b` and writes `out` strictly below the ends computed from the header, and
        // the buffer is sized for exactly that; the checked run above executed the same
        // instructions on the same buffer contents without a fault.
        let verified = unsafe { LinuxVerified::assume_verified(&program) };
        let jit = JitProgram::compile(verified).expect("merge JIT-compiles");
        let mut jit_mem = input.clone();
        assert_eq!(jit.run(&mut jit_mem), 2 * INPUT_ELEMENTS as u64);
        assert_eq!(output(&jit_mem), expected, "JIT merge output");
        group.bench_function("rbpf_jit", |bench| {
            bench.iter(|| black_box(jit.run(black_box(&mut jit_mem))));
        });
    }
    group.finish();
}

fn config() -> Criterion {
    // Short runs keep `cargo bench` near 10 s; the figures are stable to a few percent.
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30)
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_merge
}
criterion_main!(benches);
