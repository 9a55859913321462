//! The native tier is observably the interpreter: random programs run on both, and every
//! outcome must match — r0 or the error (its pc and message), the executed-instruction count,
//! and every byte of the context and the regions afterwards.
//!
//! Programs mix every ALU op (64/32-bit, register/immediate, the shifts, division, movsx,
//! byte swaps), loads and stores of all sizes (signed loads too) through the frame pointer,
//! the context, a region of map values with a power-of-two stride, one with another stride,
//! a read-only region and garbage pointers, atomics, forward and backward branches,
//! BPF-to-BPF calls (recursion past the frame limit included), helpers that write memory or
//! fail, `bpf_loop` with a callback, `may_goto`, and small instruction budgets that run out
//! mid-block. Cases: `NATIVE_TIER_CASES` (default 4,000), seeds from `NATIVE_TIER_SEED`.

#[macro_use]
mod common;

use resystance_vm::exec::{
    encode_insn, native_available, HelperError, Limits, Memory, Program, Region, RunError,
    RunResult, Tier, Vm, CTX_BASE,
};

const CASES_DEFAULT: u64 = 4_000;
const CTX_BYTES: usize = 96;
/// Region 0: 5 values of 40 bytes, 44 apart (no power of two).
const ODD_STRIDE: usize = 44;
const ODD_VALUE: usize = 40;
const ODD_VALUES: usize = 5;
/// Region 1: 4 values of 24 bytes, 32 apart.
const POW2_STRIDE: usize = 32;
const POW2_VALUE: usize = 24;
const POW2_VALUES: usize = 4;
/// Region 2: read-only bytes.
const RODATA_BYTES: usize = 64;
const HELPER_STORE: u32 = 1;
const HELPER_MIX: u32 = 2;
const BPF_LOOP: u32 = 181;

/// SplitMix64: a tiny deterministic generator, so a failing seed reproduces exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo + 1) as u64) as i64
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

/// An instruction with a symbolic jump target (an index into the item list).
#[derive(Clone, Copy)]
enum Item {
    Insn(u64),
    Lddw {
        dst: u8,
        src: u8,
        value: u64,
    },
    /// `opcode dst, src/imm, goto item` (a conditional or `ja` or may_goto).
    Jump {
        opcode: u8,
        dst: u8,
        src: u8,
        imm: i32,
        target: usize,
    },
    /// `call` the function starting at item `target` (src = 1).
    Call {
        target: usize,
    },
    /// `lddw dst = &callback` (src = 4) of the function at item `target`.
    Callback {
        dst: u8,
        target: usize,
    },
}

const DATA_REGS: [u8; 8] = [0, 1, 2, 3, 4, 5, 8, 9];
const SIZES: [(u8, u8); 4] = [(0x00, 4), (0x08, 2), (0x10, 1), (0x18, 8)];

fn insn(opc: u8, dst: u8, src: u8, off: i16, imm: i32) -> Item {
    Item::Insn(encode_insn(opc, dst, src, off, imm))
}

/// A random immediate: small, edge-case or anything.
fn imm(rng: &mut Rng) -> i32 {
    match rng.below(4) {
        0 => rng.range(-4, 70) as i32,
        1 => rng.pick(&[0, 1, -1, i32::MIN, i32::MAX, 31, 32, 63, 64, 0x8000]),
        _ => rng.next() as i32,
    }
}

/// One random straight-line instruction (ALU or memory).
fn straight(rng: &mut Rng, region: u64, out: &mut Vec<Item>) {
    let d = rng.pick(&DATA_REGS);
    let s = rng.pick(&[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    match rng.below(20) {
        0..=7 => {
            let class = if rng.chance(50) { 0x07 } else { 0x04 };
            let op = rng.pick(&[
                0x00u8, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0x90, 0xa0, 0xb0, 0xc0,
            ]);
            let signed_div = (op == 0x30 || op == 0x90) && rng.chance(40);
            let off = i16::from(signed_div);
            if rng.chance(50) {
                out.push(insn(class | op | 0x08, d, s, off, 0));
            } else {
                // Linux refuses out-of-range shift immediates and division by a zero one.
                let k = match op {
                    0x60 | 0x70 | 0xc0 => rng.range(0, if class == 0x07 { 63 } else { 31 }) as i32,
                    0x30 | 0x90 => match imm(rng) {
                        0 => 7,
                        k => k,
                    },
                    _ => imm(rng),
                };
                out.push(insn(class | op, d, 0, off, k));
            }
        }
        8 => out.push(insn(rng.pick(&[0x84, 0x87]), d, 0, 0, 0)), // neg
        9 => {
            // movsx
            let class = if rng.chance(50) { 0xbf } else { 0xbc };
            let bits = if class == 0xbf {
                rng.pick(&[8, 16, 32])
            } else {
                rng.pick(&[8, 16])
            };
            out.push(insn(class, d, s, bits, 0));
        }
        10 => {
            // le / be / bswap
            let opc = rng.pick(&[0xd4u8, 0xdc, 0xd7]);
            out.push(insn(opc, d, 0, 0, rng.pick(&[16, 32, 64])));
        }
        11 => out.push(Item::Lddw {
            dst: d,
            src: 0,
            value: rng.next(),
        }),
        12..=15 => {
            let (base, off) = address(rng, region);
            let (sz, _) = rng.pick(&SIZES);
            if rng.chance(25) && sz != 0x18 {
                out.push(insn(0x81 | sz, d, base, off, 0)); // ldsx
            } else {
                out.push(insn(0x61 | sz, d, base, off, 0));
            }
        }
        16..=18 => {
            let (base, off) = address(rng, region);
            let (sz, _) = rng.pick(&SIZES);
            if rng.chance(50) {
                out.push(insn(0x63 | sz, base, s, off, 0)); // stx (s may be r10)
            } else {
                out.push(insn(0x62 | sz, base, 0, off, imm(rng)));
            }
        }
        _ => {
            // atomic add/or/xchg/cmpxchg, 32 or 64 bits
            let (base, off) = address(rng, region);
            let opc = if rng.chance(50) { 0xdb } else { 0xc3 };
            let op = rng.pick(&[0x00, 0x40, 0x01, 0xe1, 0xf1]);
            out.push(insn(opc, base, rng.pick(&DATA_REGS), off, op));
        }
    }
}

/// A base register and offset: almost always inside something (r6 = context, r7 = region
/// `region`'s values, r10 = frame), now and then just outside or through a garbage pointer.
fn address(rng: &mut Rng, region: u64) -> (u8, i16) {
    let (stride, value, values) = if region == 0 {
        (ODD_STRIDE, ODD_VALUE, ODD_VALUES)
    } else {
        (POW2_STRIDE, POW2_VALUE, POW2_VALUES)
    };
    match rng.below(100) {
        0..=44 => (10, rng.range(-512, -8) as i16),
        45..=69 => (6, rng.range(0, CTX_BYTES as i64 - 8) as i16),
        70..=96 => {
            let v = rng.below(values as u64) as i64;
            let within = rng.range(0, value as i64 - 8);
            (7, (v * stride as i64 + within) as i16)
        }
        97 => (10, rng.range(-520, 8) as i16),
        98 => (7, rng.range(-8, (stride * values) as i64 + 8) as i16),
        _ => (rng.pick(&DATA_REGS), rng.range(-16, 16) as i16),
    }
}

fn jump_opcode(rng: &mut Rng) -> (u8, bool) {
    let class = if rng.chance(60) { 0x05 } else { 0x06 };
    let op = rng.pick(&[
        0x10u8, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0xa0, 0xb0, 0xc0, 0xd0,
    ]);
    let reg = rng.chance(50);
    (class | op | if reg { 0x08 } else { 0 }, reg)
}

/// A random program: a main function (setup, body, exit) and a subprogram.
fn program(rng: &mut Rng) -> Vec<u8> {
    let mut items = Vec::new();
    // Setup: r6 = ctx (r1 on entry), r7 = a region pointer, data registers random.
    items.push(insn(0xbf, 6, 1, 0, 0));
    let region = if rng.chance(50) { 0 } else { 1 };
    items.push(Item::Lddw {
        dst: 7,
        src: 0,
        value: (2 + region) << 32,
    });
    for &r in &DATA_REGS {
        if rng.chance(70) {
            items.push(Item::Lddw {
                dst: r,
                src: 0,
                value: match rng.below(3) {
                    0 => rng.below(64),
                    1 => CTX_BASE + rng.below(CTX_BYTES as u64),
                    _ => rng.next(),
                },
            });
        }
    }
    let body_start = items.len();
    let body_len = rng.range(10, 90) as usize;
    let sub_start_placeholder = usize::MAX;
    let mut calls = Vec::new();
    for i in 0..body_len {
        match rng.below(26) {
            0..=17 => straight(rng, region, &mut items),
            18..=20 => {
                let (opcode, reg) = jump_opcode(rng);
                // Forward within the body (or to its end), sometimes backward (a loop the
                // budget or may_goto ends).
                let here = body_start + i;
                let target = if rng.chance(95) {
                    rng.range(here as i64 + 1, (body_start + body_len) as i64) as usize
                } else {
                    rng.range(body_start as i64, here as i64) as usize
                };
                items.push(Item::Jump {
                    opcode,
                    dst: rng.pick(&DATA_REGS),
                    src: if reg {
                        rng.pick(&[0, 1, 2, 3, 4, 5, 8, 9, 10])
                    } else {
                        0
                    },
                    imm: imm(rng),
                    target: target.max(body_start),
                });
            }
            21 if rng.chance(40) => {
                let here = body_start + i;
                let target = rng.range(body_start as i64, here as i64) as usize;
                items.push(Item::Jump {
                    opcode: 0xe5, // may_goto: falls through while the budget lasts
                    dst: 0,
                    src: 0,
                    imm: 0,
                    target: (here + 1).min(body_start + body_len),
                });
                items.push(Item::Jump {
                    opcode: 0x05,
                    dst: 0,
                    src: 0,
                    imm: 0,
                    target,
                });
            }
            21 | 22 => {
                calls.push(items.len());
                items.push(Item::Call {
                    target: sub_start_placeholder,
                });
            }
            23 => {
                let id = rng.pick(&[HELPER_STORE, HELPER_MIX]);
                if id == HELPER_STORE {
                    // Usually a valid destination.
                    let (base, off) = address(rng, region);
                    items.push(insn(0xbf, 2, base, 0, 0));
                    items.push(insn(0x07, 2, 0, 0, i32::from(off)));
                }
                items.push(insn(0x85, 0, 0, 0, id as i32));
            }
            _ => {
                // bpf_loop(count, callback, ctx = r6, flags)
                items.push(insn(0xb7, 1, 0, 0, rng.range(0, 4) as i32));
                calls.push(items.len());
                items.push(Item::Callback {
                    dst: 2,
                    target: sub_start_placeholder,
                });
                items.push(insn(0xbf, 3, 6, 0, 0));
                items.push(insn(0xb7, 4, 0, 0, i32::from(rng.chance(10))));
                items.push(insn(0x85, 0, 0, 0, BPF_LOOP as i32));
            }
        }
    }
    // Jumps targeting `body_start + body_len` land here, but items grew: fix them below.
    let body_end_marker = body_start + body_len;
    let exit_at = items.len();
    items.push(insn(0x95, 0, 0, 0, 0));
    // The subprogram: a few ops on r0-r5 and its own frame, maybe a recursive call, exit with
    // r0 = 0 or 1 (bpf_loop's stop signal).
    let sub_start = items.len();
    for _ in 0..rng.range(1, 12) {
        straight(rng, region, &mut items);
    }
    if rng.chance(8) {
        items.push(Item::Call { target: sub_start });
    }
    items.push(insn(0xb7, 0, 0, 0, i32::from(rng.chance(20))));
    items.push(insn(0x95, 0, 0, 0, 0));
    for &c in &calls {
        match &mut items[c] {
            Item::Call { target } | Item::Callback { target, .. } => *target = sub_start,
            _ => unreachable!(),
        }
    }
    // Body jumps were generated with body-relative indices before insertions shifted them;
    // map "index i in the body" to the i-th body item conservatively: clamp into [body_start,
    // exit_at]. Exactness does not matter (any valid target is a test), validity does.
    for item in &mut items {
        if let Item::Jump { target, .. } = item {
            if *target >= body_end_marker {
                *target = exit_at;
            }
            *target = (*target).clamp(body_start, exit_at);
        }
    }
    encode(&items)
}

fn encode(items: &[Item]) -> Vec<u8> {
    let mut pcs = Vec::with_capacity(items.len());
    let mut pc = 0usize;
    for item in items {
        pcs.push(pc);
        pc += match item {
            Item::Lddw { .. } | Item::Callback { .. } => 2,
            _ => 1,
        };
    }
    let rel = |from: usize, to: usize| (pcs[to] as i64 - (pcs[from] as i64 + 1)) as i32;
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let mut words = Vec::new();
        match *item {
            Item::Insn(w) => words.push(w),
            Item::Lddw { dst, src, value } => {
                words.push(encode_insn(0x18, dst, src, 0, value as u32 as i32));
                words.push(encode_insn(0, 0, 0, 0, (value >> 32) as u32 as i32));
            }
            Item::Callback { dst, target } => {
                words.push(encode_insn(0x18, dst, 4, 0, rel(i, target)));
                words.push(encode_insn(0, 0, 0, 0, 0));
            }
            Item::Jump {
                opcode,
                dst,
                src,
                imm,
                target,
            } => {
                let off = i16::try_from(rel(i, target)).expect("small programs");
                words.push(encode_insn(opcode, dst, src, off, imm));
            }
            Item::Call { target } => words.push(encode_insn(0x85, 0, 1, 0, rel(i, target))),
        }
        for w in words {
            out.extend_from_slice(&w.to_le_bytes());
        }
    }
    out
}

/// Everything a run can be observed by.
#[derive(Debug, PartialEq)]
struct Outcome {
    result: Result<RunResult, String>,
    ctx: Vec<u8>,
    regions: [Vec<u8>; 3],
}

fn vm(tier: Tier) -> Vm {
    let mut vm = Vm::new();
    vm.set_tier(tier);
    // Stores r1 at the address in r2 (8 bytes, checked like the program's own stores);
    // returns r3 ^ r4.
    vm.register_helper(HELPER_STORE, |a: [u64; 5], m: &mut Memory<'_, '_>| {
        let bytes = m
            .write(a[1], 8)
            .map_err(|e| HelperError::new(format!("store helper: {e}")))?;
        bytes.copy_from_slice(&a[0].to_le_bytes());
        Ok(a[2] ^ a[3])
    });
    // Fails when r1 % 8 == 1, else mixes its arguments.
    vm.register_helper(HELPER_MIX, |a: [u64; 5], _: &mut Memory<'_, '_>| {
        if a[0] % 8 == 1 {
            Err(HelperError::new("r1 % 8 == 1"))
        } else {
            Ok(a[0].rotate_left(7) ^ a[4].wrapping_mul(3) ^ a[1])
        }
    });
    vm
}

fn run(vm: &mut Vm, program: &Program, seed: u64, insns_max: u64) -> Outcome {
    let mut rng = Rng(seed);
    let mut fill = |n: usize| (0..n).map(|_| rng.next() as u8).collect::<Vec<u8>>();
    let mut ctx = fill(CTX_BYTES);
    let mut odd = fill(ODD_STRIDE * (ODD_VALUES - 1) + ODD_VALUE);
    let mut pow2 = fill(POW2_STRIDE * POW2_VALUES);
    let rodata = fill(RODATA_BYTES);
    let result = {
        let mut regions = [
            Region::writable("odd", &mut odd).with_elements(ODD_STRIDE, ODD_VALUE),
            Region::writable("pow2", &mut pow2).with_elements(POW2_STRIDE, POW2_VALUE),
            Region::read_only("rodata", &rodata),
        ];
        vm.run_with_regions(program, &mut ctx, &mut regions, &Limits { insns_max })
            .map_err(|e: RunError| format!("{e:?} / {e}"))
    };
    Outcome {
        result,
        ctx,
        regions: [odd, pow2, rodata],
    }
}

#[test]
fn random_programs_behave_the_same_on_both_tiers() {
    if !native_available() {
        say!("SKIP native tier differential: this host has no native tier (x86-64 with BMI2)");
        return;
    }
    let cases = std::env::var("NATIVE_TIER_CASES")
        .ok()
        .map_or(CASES_DEFAULT, |v| {
            v.parse().expect("NATIVE_TIER_CASES: a number")
        });
    let seed0 = std::env::var("NATIVE_TIER_SEED")
        .ok()
        .map_or(0, |v| v.parse().expect("NATIVE_TIER_SEED: a number"));
    let mut interp = vm(Tier::Interpreter);
    let mut native = vm(Tier::Native);
    let (mut ok, mut insns, mut kinds) = (0u64, 0u64, std::collections::BTreeMap::new());
    for seed in seed0..seed0 + cases {
        let mut rng = Rng(seed.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ 0x5eed);
        let raw = program(&mut rng);
        let program = Program::from_raw(&raw)
            .unwrap_or_else(|e| panic!("seed {seed}: generated an invalid program: {e}"));
        assert!(
            program.native_code_bytes().is_some(),
            "seed {seed}: the program did not compile"
        );
        let insns_max = if rng.chance(30) {
            rng.range(1, 400) as u64
        } else {
            100_000
        };
        let data_seed = rng.next();
        let a = run(&mut interp, &program, data_seed, insns_max);
        let b = run(&mut native, &program, data_seed, insns_max);
        assert_eq!(
            a, b,
            "seed {seed} (NATIVE_TIER_SEED={seed} NATIVE_TIER_CASES=1): interpreter vs native"
        );
        match &a.result {
            Ok(r) => {
                ok += 1;
                insns += r.insns_executed;
            }
            Err(e) => {
                let kind = e.split([' ', '{', '(']).next().unwrap_or("").to_string();
                *kinds.entry(kind).or_insert(0u64) += 1;
            }
        }
    }
    say!(
        "native tier = interpreter on {cases} random programs: {ok} returned ({insns} instructions), errors by kind {kinds:?}"
    );
    // The generator must keep producing runs that get somewhere, and every fault class.
    assert!(ok * 5 >= cases, "only {ok} of {cases} programs returned");
    for kind in [
        "Memory",
        "InsnBudgetExhausted",
        "Helper",
        "CallDepthExceeded",
    ] {
        assert!(
            kinds.contains_key(kind),
            "no {kind} error in {cases} cases: {kinds:?}"
        );
    }
}
