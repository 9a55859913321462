//! Differential test: the vm's interpreter against Linux, on random valid programs.
//!
//! A structured generator (ChaCha8, seeded) writes terminating `BPF_PROG_TYPE_SYSCALL` programs
//! that the Linux verifier accepts by construction: every scalar register is initialised first
//! (from immediates, wide immediates and in-bounds aligned context loads), r1 stays the context
//! pointer, jumps only go forward, the stack is fully written before it is read, and r0 folds
//! every register and stack slot before `exit`. The body mixes ALU64/ALU32 operations
//! (including ISA v4 movsx, sdiv/smod, bswap and sign-extending loads), shifts with in-range
//! amounts, JMP/JMP32 conditional jumps, if/else diamonds (`ja` and ISA v4 `gotol`), context
//! and stack loads and stores, and stack atomics.
//!
//! Each program runs in the vm (`Program::from_raw`, then `Vm::run`) and in Linux
//! (`BPF_PROG_LOAD`, then `BPF_PROG_TEST_RUN`) on the same 64-byte context. Compared: the low 32 bits of r0 (Linux's
//! test run reports only those; the epilogue folds r0's high half into its low half first) and
//! the context bytes after the run.
//!
//! One divergence was found and is pinned by its own test below: Linux 6.18 leaves R0's upper
//! half unchanged after a successful 32-bit `cmpxchg` on a path the verifier pruned, where
//! the ISA (and the vm) zero-extend it; the generator therefore emits only 64-bit `cmpxchg`.
//!
//! `BPF_DIFF_PROGRAMS` sets the number of programs (default 2,000), `BPF_DIFF_SEED` the seed,
//! `BPF_DIFF_CASE` runs just one case of the sequence (to reproduce a difference).
//! Root only: otherwise one `SKIP` line. A verifier rejection is a generator bug and fails.

use resystance_vm::exec::encode_insn as insn;
use std::collections::BTreeMap;
use std::io::Write;
use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use resystance_real_kernel::RealKernel;
use resystance_traces::{Kernel, KernelError, ProgLoad, ProgType};
use resystance_vm::exec::{Limits, Program, Vm};

/// Context bytes handed to both runs.
const CTX_BYTES: usize = 64;
/// Stack bytes the programs use, below r10; all written by the prologue.
const STACK_BYTES: i16 = 64;
/// Conditional jumps per program at most: the verifier walks up to 2^this paths.
const BRANCHES_MAX: u32 = 7;
/// Straight-line groups per block at most.
const GROUPS_PER_BLOCK_MAX: u32 = 10;
/// Nesting depth of if / if-else blocks at most.
const DEPTH_MAX: u32 = 3;
/// Registers that hold scalars (r1 is the context pointer, r10 the frame pointer).
const SCALARS: [u8; 9] = [0, 2, 3, 4, 5, 6, 7, 8, 9];
const R1: u8 = 1;
const R10: u8 = 10;
const PROGRAMS_DEFAULT: u64 = 2_000;
/// Instructions of the epilogue that folds registers and stack into r0.
const EPILOGUE_INSNS: usize = (SCALARS.len() - 1) * 2 + (STACK_BYTES as usize / 8) * 3 + 4;
/// Differences printed in full at most (all are counted).
const DIFFERENCES_PRINTED_MAX: u64 = 20;

// Instruction classes, sizes, modes, operations (include/uapi/linux/bpf.h, bpf_common.h).
const LDX: u8 = 0x01;
const LD: u8 = 0x00;
const ST: u8 = 0x02;
const STX: u8 = 0x03;
const ALU: u8 = 0x04;
const JMP: u8 = 0x05;
const JMP32: u8 = 0x06;
const ALU64: u8 = 0x07;
const K: u8 = 0x00;
const X: u8 = 0x08;
const SIZE_W: u8 = 0x00;
const SIZE_H: u8 = 0x08;
const SIZE_B: u8 = 0x10;
const SIZE_DW: u8 = 0x18;
const MODE_IMM: u8 = 0x00;
const MODE_MEM: u8 = 0x60;
const MODE_MEMSX: u8 = 0x80;
const MODE_ATOMIC: u8 = 0xc0;
const OP_ADD: u8 = 0x00;
const OP_SUB: u8 = 0x10;
const OP_MUL: u8 = 0x20;
const OP_DIV: u8 = 0x30;
const OP_OR: u8 = 0x40;
const OP_AND: u8 = 0x50;
const OP_LSH: u8 = 0x60;
const OP_RSH: u8 = 0x70;
const OP_NEG: u8 = 0x80;
const OP_MOD: u8 = 0x90;
const OP_XOR: u8 = 0xa0;
const OP_MOV: u8 = 0xb0;
const OP_ARSH: u8 = 0xc0;
const OP_END: u8 = 0xd0;
const TO_BE: u8 = 0x08;
const JA: u8 = 0x00;
const EXIT: u8 = 0x90;
const CONDS: [u8; 11] = [
    0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0xa0, 0xb0, 0xc0, 0xd0,
];
const ATOMIC_FETCH: i32 = 0x01;
const ATOMIC_XCHG: i32 = 0xe0 | ATOMIC_FETCH;
const ATOMIC_CMPXCHG: i32 = 0xf0 | ATOMIC_FETCH;

fn code_of(raw: u64) -> u8 {
    raw as u8
}
fn off_of(raw: u64) -> i16 {
    (raw >> 16) as u16 as i16
}
fn imm_of(raw: u64) -> i32 {
    (raw >> 32) as u32 as i32
}

/// A short mnemonic for the opcode mix and for printing programs (`alu64.sdiv.x`, `ldx.w`, ...).
fn mnemonic(raw: u64) -> String {
    let code = code_of(raw);
    let (off, imm) = (off_of(raw), imm_of(raw));
    let size = match code & 0x18 {
        SIZE_W => "w",
        SIZE_H => "h",
        SIZE_B => "b",
        _ => "dw",
    };
    let src = if code & X == X { "x" } else { "k" };
    // Memory operations name their region by base register: r1 is the context, r10 the stack.
    let base = |reg: u64| match reg {
        1 => "ctx",
        10 => "stack",
        _ => "mem",
    };
    let (dst_region, src_region) = (base((raw >> 8) & 0xf), base((raw >> 12) & 0xf));
    match code & 0x07 {
        LD if code == LD | MODE_IMM | SIZE_DW => "lddw".to_string(),
        LDX if code & 0xe0 == MODE_MEMSX => format!("ldsx.{size}.{src_region}"),
        LDX => format!("ldx.{size}.{src_region}"),
        ST => format!("st.{size}.{dst_region}"),
        STX if code & 0xe0 == MODE_ATOMIC => {
            let op = match imm {
                ATOMIC_XCHG => "xchg".to_string(),
                ATOMIC_CMPXCHG => "cmpxchg".to_string(),
                _ => {
                    let base = match imm & !ATOMIC_FETCH {
                        0x00 => "add",
                        0x40 => "or",
                        0x50 => "and",
                        0xa0 => "xor",
                        _ => "?",
                    };
                    let fetch = if imm & ATOMIC_FETCH != 0 {
                        "_fetch"
                    } else {
                        ""
                    };
                    format!("{base}{fetch}")
                }
            };
            format!("atomic.{size}.{op}")
        }
        STX => format!("stx.{size}.{dst_region}"),
        class @ (ALU | ALU64) => {
            let width = if class == ALU64 { "alu64" } else { "alu32" };
            let signed = off == 1;
            let op = match code & 0xf0 {
                OP_ADD => "add",
                OP_SUB => "sub",
                OP_MUL => "mul",
                OP_DIV if signed => "sdiv",
                OP_DIV => "div",
                OP_OR => "or",
                OP_AND => "and",
                OP_LSH => "lsh",
                OP_RSH => "rsh",
                OP_NEG => "neg",
                OP_MOD if signed => "smod",
                OP_MOD => "mod",
                OP_XOR => "xor",
                OP_MOV if off != 0 => return format!("{width}.movsx{off}"),
                OP_MOV => "mov",
                OP_ARSH => "arsh",
                OP_END if class == ALU64 => return format!("bswap{imm}"),
                OP_END if code & TO_BE != 0 => return format!("be{imm}"),
                OP_END => return format!("le{imm}"),
                _ => "?",
            };
            format!("{width}.{op}.{src}")
        }
        class @ (JMP | JMP32) => {
            let width = if class == JMP { "jmp" } else { "jmp32" };
            let op = match code & 0xf0 {
                JA if class == JMP32 => return "gotol".to_string(),
                JA => return "ja".to_string(),
                0x10 => "jeq",
                0x20 => "jgt",
                0x30 => "jge",
                0x40 => "jset",
                0x50 => "jne",
                0x60 => "jsgt",
                0x70 => "jsge",
                0xa0 => "jlt",
                0xb0 => "jle",
                0xc0 => "jslt",
                0xd0 => "jsle",
                EXIT => return "exit".to_string(),
                _ => "?",
            };
            format!("{width}.{op}.{src}")
        }
        _ => format!("?{code:#04x}"),
    }
}

/// The mnemonic of each instruction slot; the second slot of an `lddw` is `lddw.hi`.
fn mnemonics(insns: &[u64]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(insns.len());
    for &raw in insns {
        let after_lddw = out.last().is_some_and(|m| m == "lddw");
        out.push(if after_lddw {
            "lddw.hi".to_string()
        } else {
            mnemonic(raw)
        });
    }
    out
}

/// A listing: index, raw bytes, mnemonic and fields.
fn disassemble(insns: &[u64]) -> String {
    let mut out = String::new();
    for ((i, &raw), name) in insns.iter().enumerate().zip(mnemonics(insns)) {
        let line = format!(
            "{i:4}: {:016x}  {name:<20} dst=r{} src=r{} off={} imm={}\n",
            raw.swap_bytes(),
            (raw >> 8) & 0xf,
            (raw >> 12) & 0xf,
            off_of(raw),
            imm_of(raw)
        );
        out.push_str(&line);
    }
    out
}

/// A program under construction: instructions and forward jumps to labels placed later.
#[derive(Debug)]
enum Item {
    /// Instructions that run in order (nothing jumps into their middle).
    Insns(Vec<u64>),
    /// A jump to a label; `gotol` takes its offset in `imm`, everything else in `off`.
    Jump { raw: u64, label: usize, wide: bool },
    /// A jump target.
    Label(usize),
}

#[derive(Debug)]
struct Generator {
    rng: ChaCha8Rng,
    labels: usize,
    branches: u32,
}

impl Generator {
    fn reg(&mut self) -> u8 {
        SCALARS[self.rng.gen_range(0..SCALARS.len())]
    }

    /// An immediate, biased towards edge cases.
    fn imm(&mut self) -> i32 {
        match self.rng.gen_range(0..10) {
            0 => [0, 1, -1, 2, -2, i32::MIN, i32::MAX, 0xff, 0xffff, 0x8000]
                [self.rng.gen_range(0..10)],
            1..=3 => self.rng.gen_range(-16..=16),
            _ => self.rng.gen(),
        }
    }

    fn imm64(&mut self) -> u64 {
        match self.rng.gen_range(0..6) {
            0 => [0, u64::MAX, 1 << 63, (1 << 63) - 1, 0xffff_ffff, 1 << 32]
                [self.rng.gen_range(0..6)],
            _ => self.rng.gen(),
        }
    }

    fn size(&mut self) -> (u8, i16) {
        [(SIZE_B, 1), (SIZE_H, 2), (SIZE_W, 4), (SIZE_DW, 8)][self.rng.gen_range(0..4)]
    }

    /// An aligned context offset for an access of `bytes`.
    fn ctx_off(&mut self, bytes: i16) -> i16 {
        self.rng.gen_range(0..CTX_BYTES as i16 / bytes) * bytes
    }

    /// An aligned stack offset (negative, from r10) for an access of `bytes`.
    fn stack_off(&mut self, bytes: i16) -> i16 {
        -STACK_BYTES + self.rng.gen_range(0..STACK_BYTES / bytes) * bytes
    }

    fn lddw(&mut self, dst: u8, value: u64) -> Vec<u64> {
        vec![
            insn(LD | MODE_IMM | SIZE_DW, dst, 0, 0, value as u32 as i32),
            insn(0, 0, 0, 0, (value >> 32) as u32 as i32),
        ]
    }

    /// Sets `dst` from an immediate, a wide immediate or the context.
    fn init(&mut self, dst: u8) -> Vec<u64> {
        match self.rng.gen_range(0..4) {
            0 => vec![insn(ALU64 | OP_MOV | K, dst, 0, 0, self.imm())],
            1 => vec![insn(ALU | OP_MOV | K, dst, 0, 0, self.imm())],
            2 => {
                let v = self.imm64();
                self.lddw(dst, v)
            }
            _ => {
                let (size, bytes) = self.size();
                let off = self.ctx_off(bytes);
                vec![insn(LDX | MODE_MEM | size, dst, R1, off, 0)]
            }
        }
    }

    /// One ALU operation, with the setup it needs to be well defined.
    fn alu(&mut self) -> Vec<u64> {
        let class = if self.rng.gen_bool(0.5) { ALU64 } else { ALU };
        let width_bits: i32 = if class == ALU64 { 64 } else { 32 };
        let dst = self.reg();
        let src = self.reg();
        let use_x = self.rng.gen_bool(0.5);
        let ops = [
            OP_ADD, OP_SUB, OP_MUL, OP_DIV, OP_OR, OP_AND, OP_LSH, OP_RSH, OP_NEG, OP_MOD, OP_XOR,
            OP_MOV, OP_ARSH, OP_END,
        ];
        let op = ops[self.rng.gen_range(0..ops.len())];
        match op {
            OP_LSH | OP_RSH | OP_ARSH if use_x => vec![
                // Shifts by width or more are undefined: mask the amount first.
                insn(ALU64 | OP_AND | K, src, 0, 0, width_bits - 1),
                insn(class | op | X, dst, src, 0, 0),
            ],
            OP_LSH | OP_RSH | OP_ARSH => {
                vec![insn(
                    class | op | K,
                    dst,
                    0,
                    0,
                    self.rng.gen_range(0..width_bits),
                )]
            }
            OP_DIV | OP_MOD => {
                let signed = i16::from(self.rng.gen_bool(0.5));
                if use_x {
                    vec![insn(class | op | X, dst, src, signed, 0)]
                } else {
                    let mut imm = self.imm();
                    if imm == 0 {
                        imm = -1; // the verifier rejects a constant zero divisor
                    }
                    vec![insn(class | op | K, dst, 0, signed, imm)]
                }
            }
            OP_NEG => vec![insn(class | OP_NEG | K, dst, 0, 0, 0)],
            OP_MOV if use_x => {
                let sx: &[i16] = if class == ALU64 {
                    &[0, 0, 8, 16, 32]
                } else {
                    &[0, 0, 8, 16]
                };
                vec![insn(
                    class | OP_MOV | X,
                    dst,
                    src,
                    sx[self.rng.gen_range(0..sx.len())],
                    0,
                )]
            }
            OP_END => {
                let bits = [16, 32, 64][self.rng.gen_range(0..3)];
                match self.rng.gen_range(0..3) {
                    0 => vec![insn(ALU | OP_END, dst, 0, 0, bits)],
                    1 => vec![insn(ALU | OP_END | TO_BE, dst, 0, 0, bits)],
                    _ => vec![insn(ALU64 | OP_END, dst, 0, 0, bits)],
                }
            }
            _ if use_x => vec![insn(class | op | X, dst, src, 0, 0)],
            _ => vec![insn(class | op | K, dst, 0, 0, self.imm())],
        }
    }

    /// A load, store or atomic on the context or the stack.
    fn memory(&mut self) -> Vec<u64> {
        let (size, bytes) = self.size();
        let reg = self.reg();
        match self.rng.gen_range(0..8) {
            0 => vec![insn(LDX | MODE_MEM | size, reg, R1, self.ctx_off(bytes), 0)],
            7 => {
                let (size, bytes) =
                    [(SIZE_B, 1), (SIZE_H, 2), (SIZE_W, 4)][self.rng.gen_range(0..3)];
                vec![insn(
                    LDX | MODE_MEMSX | size,
                    reg,
                    R1,
                    self.ctx_off(bytes),
                    0,
                )]
            }
            1 => vec![insn(STX | MODE_MEM | size, R1, reg, self.ctx_off(bytes), 0)],
            2 => vec![insn(
                LDX | MODE_MEM | size,
                reg,
                R10,
                self.stack_off(bytes),
                0,
            )],
            3 => {
                // Sign-extending loads exist for 1, 2 and 4 bytes.
                let (size, bytes) =
                    [(SIZE_B, 1), (SIZE_H, 2), (SIZE_W, 4)][self.rng.gen_range(0..3)];
                vec![insn(
                    LDX | MODE_MEMSX | size,
                    reg,
                    R10,
                    self.stack_off(bytes),
                    0,
                )]
            }
            4 => vec![insn(
                STX | MODE_MEM | size,
                R10,
                reg,
                self.stack_off(bytes),
                0,
            )],
            5 => vec![insn(
                ST | MODE_MEM | size,
                R10,
                0,
                self.stack_off(bytes),
                self.imm(),
            )],
            _ => {
                let (size, bytes) = if self.rng.gen_bool(0.5) {
                    (SIZE_W, 4)
                } else {
                    (SIZE_DW, 8)
                };
                let ops = [0x00, 0x40, 0x50, 0xa0];
                let imm = match self.rng.gen_range(0..4) {
                    0 => ops[self.rng.gen_range(0..4)],
                    1 => ops[self.rng.gen_range(0..4)] | ATOMIC_FETCH,
                    2 => ATOMIC_XCHG,
                    // 32-bit cmpxchg is left out: Linux 6.18 does not zero-extend R0 after it
                    // on pruned paths (see the test at the end of this file).
                    _ if size == SIZE_W => ATOMIC_XCHG,
                    _ => ATOMIC_CMPXCHG,
                };
                vec![insn(
                    STX | MODE_ATOMIC | size,
                    R10,
                    reg,
                    self.stack_off(bytes),
                    imm,
                )]
            }
        }
    }

    fn straight(&mut self) -> Vec<u64> {
        match self.rng.gen_range(0..10) {
            0..=5 => self.alu(),
            6..=8 => self.memory(),
            _ => {
                let dst = self.reg();
                self.init(dst)
            }
        }
    }

    /// A conditional jump (offset patched later).
    fn cond(&mut self) -> u64 {
        let class = if self.rng.gen_bool(0.5) { JMP } else { JMP32 };
        let op = CONDS[self.rng.gen_range(0..CONDS.len())];
        let dst = self.reg();
        if self.rng.gen_bool(0.5) {
            insn(class | op | X, dst, self.reg(), 0, 0)
        } else {
            insn(class | op | K, dst, 0, 0, self.imm())
        }
    }

    fn label(&mut self) -> usize {
        self.labels += 1;
        self.labels - 1
    }

    /// A block: straight-line groups, if-blocks, if/else diamonds and jumps to enclosing
    /// blocks' ends (`outer`, all placed after this block).
    fn block(&mut self, depth: u32, outer: &mut Vec<usize>, out: &mut Vec<Item>) {
        let groups = self.rng.gen_range(1..=GROUPS_PER_BLOCK_MAX);
        for _ in 0..groups {
            let can_branch = self.branches < BRANCHES_MAX && depth < DEPTH_MAX;
            match self.rng.gen_range(0..10) {
                0 | 1 if can_branch => {
                    self.branches += 1;
                    let end = self.label();
                    out.push(Item::Jump {
                        raw: self.cond(),
                        label: end,
                        wide: false,
                    });
                    outer.push(end);
                    self.block(depth + 1, outer, out);
                    outer.pop();
                    out.push(Item::Label(end));
                }
                2 if can_branch => {
                    self.branches += 1;
                    let (other, end) = (self.label(), self.label());
                    out.push(Item::Jump {
                        raw: self.cond(),
                        label: other,
                        wide: false,
                    });
                    outer.push(end);
                    self.block(depth + 1, outer, out);
                    let wide = self.rng.gen_bool(0.3);
                    let class = if wide { JMP32 } else { JMP };
                    out.push(Item::Jump {
                        raw: insn(class | JA, 0, 0, 0, 0),
                        label: end,
                        wide,
                    });
                    out.push(Item::Label(other));
                    self.block(depth + 1, outer, out);
                    outer.pop();
                    out.push(Item::Label(end));
                }
                3 if self.branches < BRANCHES_MAX && !outer.is_empty() => {
                    self.branches += 1;
                    let label = outer[self.rng.gen_range(0..outer.len())];
                    out.push(Item::Jump {
                        raw: self.cond(),
                        label,
                        wide: false,
                    });
                }
                _ => {
                    let group = self.straight();
                    out.push(Item::Insns(group));
                }
            }
        }
    }

    /// A whole program: prologue, body, epilogue.
    fn program(&mut self) -> Vec<u64> {
        self.labels = 0;
        self.branches = 0;
        let mut items = Vec::new();
        for reg in SCALARS {
            let init = self.init(reg);
            items.push(Item::Insns(init));
        }
        for slot in 1..=STACK_BYTES / 8 {
            let g = if self.rng.gen_bool(0.5) {
                vec![insn(
                    STX | MODE_MEM | SIZE_DW,
                    R10,
                    self.reg(),
                    -8 * slot,
                    0,
                )]
            } else {
                vec![insn(ST | MODE_MEM | SIZE_DW, R10, 0, -8 * slot, self.imm())]
            };
            items.push(Item::Insns(g));
        }
        let mut outer = Vec::new();
        self.block(0, &mut outer, &mut items);
        // Epilogue: fold every register and stack slot into r0, r0's high half into its low
        // half, then exit.
        let mut tail = Vec::new();
        for reg in &SCALARS[1..] {
            tail.push(insn(ALU64 | OP_MUL | K, 0, 0, 0, 0x9e37_79b1_u32 as i32));
            tail.push(insn(ALU64 | OP_XOR | X, 0, *reg, 0, 0));
        }
        for slot in 1..=STACK_BYTES / 8 {
            tail.push(insn(LDX | MODE_MEM | SIZE_DW, 2, R10, -8 * slot, 0));
            tail.push(insn(ALU64 | OP_MUL | K, 0, 0, 0, 0x9e37_79b1_u32 as i32));
            tail.push(insn(ALU64 | OP_XOR | X, 0, 2, 0, 0));
        }
        tail.push(insn(ALU64 | OP_MOV | X, 3, 0, 0, 0));
        tail.push(insn(ALU64 | OP_RSH | K, 3, 0, 0, 32));
        tail.push(insn(ALU64 | OP_XOR | X, 0, 3, 0, 0));
        tail.push(insn(JMP | EXIT, 0, 0, 0, 0));
        assert_eq!(tail.len(), EPILOGUE_INSNS);
        items.push(Item::Insns(tail));
        layout(&items)
    }
}

/// Places the items and patches each jump's offset to its label.
fn layout(items: &[Item]) -> Vec<u64> {
    let mut at = BTreeMap::new();
    let mut pc = 0usize;
    for item in items {
        match item {
            Item::Insns(v) => pc += v.len(),
            Item::Jump { .. } => pc += 1,
            Item::Label(l) => {
                at.insert(*l, pc);
            }
        }
    }
    let mut out = Vec::with_capacity(pc);
    for item in items {
        match item {
            Item::Insns(v) => out.extend_from_slice(v),
            Item::Jump { raw, label, wide } => {
                let delta = at[label] - (out.len() + 1);
                let raw = if *wide {
                    (raw & 0xffff_ffff) | u64::from(delta as u32) << 32
                } else {
                    let off = i16::try_from(delta).expect("programs are short");
                    (raw & !0xffff_0000) | u64::from(off as u16) << 16
                };
                out.push(raw);
            }
            Item::Label(_) => {}
        }
    }
    out
}

/// Loads and runs `insns` in Linux with `ctx`: (r0's low 32 bits, ctx after), or the error.
fn run_linux(k: &RealKernel, insns: &[u64], ctx: &mut [u8]) -> Result<u32, KernelError> {
    let prog = ProgLoad {
        name: "diff".to_string(),
        prog_type: ProgType::Syscall,
        insns: insns.to_vec(),
        license: "GPL".to_string(),
    };
    let loaded = k.bpf_prog_load(&prog)?;
    let run = k.bpf_prog_test_run(loaded.fd, ctx);
    k.close(loaded.fd.0)?;
    Ok(run?.retval)
}

#[test]
fn vm_matches_linux_on_random_programs() {
    let k = RealKernel::new();
    if let Some(why) = k.bpf_unavailable() {
        writeln!(
            std::io::stdout().lock(),
            "SKIP vm_matches_linux_on_random_programs: {why}"
        )
        .unwrap();
        return;
    }
    let programs: u64 = std::env::var("BPF_DIFF_PROGRAMS")
        .ok()
        .map(|v| v.parse().expect("BPF_DIFF_PROGRAMS is a count"))
        .unwrap_or(PROGRAMS_DEFAULT);
    let seed: u64 = std::env::var("BPF_DIFF_SEED")
        .ok()
        .map(|v| v.parse().expect("BPF_DIFF_SEED is a number"))
        .unwrap_or(0x5eed_b9f0);
    let mut gen = Generator {
        rng: ChaCha8Rng::seed_from_u64(seed),
        labels: 0,
        branches: 0,
    };
    // BPF_DIFF_CASE=n runs only case n of the seed's sequence (to reproduce a difference).
    let only: Option<u64> = std::env::var("BPF_DIFF_CASE")
        .ok()
        .map(|v| v.parse().expect("BPF_DIFF_CASE is a case number"));
    let mut vm = Vm::new();
    let limits = Limits::default();
    let mut mix: BTreeMap<String, u64> = BTreeMap::new();
    let (mut insns_total, mut differences) = (0u64, 0u64);
    let started = Instant::now();
    for case in 0..programs {
        let insns = gen.program();
        let mut ctx_in = [0u8; CTX_BYTES];
        gen.rng.fill(&mut ctx_in[..]);
        if only.is_some_and(|n| n != case) {
            continue;
        }
        for name in mnemonics(&insns) {
            if name != "lddw.hi" {
                *mix.entry(name).or_default() += 1;
            }
        }
        insns_total += insns.len() as u64;

        let mut linux_ctx = ctx_in;
        let linux = match run_linux(&k, &insns, &mut linux_ctx) {
            Ok(r0) => r0,
            Err(err) => panic!(
                "case {case}: Linux rejected a generated program (generator bug): {err}\n{}",
                disassemble(&insns)
            ),
        };
        let bytes: Vec<u8> = insns.iter().flat_map(|i| i.to_le_bytes()).collect();
        let mut vm_ctx = ctx_in;
        let vm_result = Program::from_raw(&bytes)
            .map_err(|e| e.to_string())
            .and_then(|p| vm.run(&p, &mut vm_ctx, &limits).map_err(|e| e.to_string()));
        let same = matches!(&vm_result, Ok(r) if r.r0 as u32 == linux) && vm_ctx == linux_ctx;
        if !same {
            differences += 1;
            if differences > DIFFERENCES_PRINTED_MAX {
                continue;
            }
            let mut out = std::io::stdout().lock();
            writeln!(
                out,
                "DIFFERENCE case {case} (seed {seed}):\n{}ctx in:    {}\nlinux: r0 low32 {linux:#010x}, ctx {}\nvm:    {:?}, ctx {}",
                disassemble(&insns),
                hex(&ctx_in),
                hex(&linux_ctx),
                vm_result.map(|r| format!("r0 {:#018x} (low32 {:#010x})", r.r0, r.r0 as u32)),
                hex(&vm_ctx),
            )
            .unwrap();
            writeln!(
                out,
                "state at the end of the body (before the epilogue folds it into r0):\n{}",
                explain(&k, &mut vm, &insns, &ctx_in)
            )
            .unwrap();
        }
    }
    let elapsed = started.elapsed();
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "bpf differential: {programs} programs ({insns_total} instructions, seed {seed}) in {:.1} s; \
         compared r0 low 32 bits + {CTX_BYTES} ctx bytes; {differences} differences; \
         0 verifier rejections (any rejection fails the test)",
        elapsed.as_secs_f64()
    )
    .unwrap();
    writeln!(out, "opcode mix ({} kinds):", mix.len()).unwrap();
    let mut sorted: Vec<_> = mix.iter().collect();
    sorted.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    for chunk in sorted.chunks(4) {
        let line: Vec<String> = chunk
            .iter()
            .map(|(m, n)| format!("{m:<16}{n:>9}"))
            .collect();
        writeln!(out, "  {}", line.join("  ")).unwrap();
    }
    assert_eq!(
        differences, 0,
        "the vm and Linux disagreed (programs printed above)"
    );
}

/// Where a differing program's state first differs: for each register and stack slot at the
/// end of the body, its 64-bit value in Linux (two test runs, low and high half) and in the vm.
fn explain(k: &RealKernel, vm: &mut Vm, insns: &[u64], ctx_in: &[u8; CTX_BYTES]) -> String {
    let body = &insns[..insns.len() - EPILOGUE_INSNS];
    let mut out = String::new();
    let places = SCALARS
        .iter()
        .map(|&r| (format!("r{r}"), insn(ALU64 | OP_MOV | X, 0, r, 0, 0)))
        .chain((1..=STACK_BYTES / 8).map(|slot| {
            (
                format!("fp-{}", 8 * slot),
                insn(LDX | MODE_MEM | SIZE_DW, 0, R10, -8 * slot, 0),
            )
        }));
    for (name, fetch) in places {
        let mut halves = [0u32; 2];
        for (half, shift) in [0, 32].into_iter().enumerate() {
            let mut probe = body.to_vec();
            probe.push(fetch);
            probe.push(insn(ALU64 | OP_RSH | K, 0, 0, 0, shift));
            probe.push(insn(JMP | EXIT, 0, 0, 0, 0));
            let mut ctx = *ctx_in;
            match run_linux(k, &probe, &mut ctx) {
                Ok(v) => halves[half] = v,
                Err(err) => return format!("{out}(probe of {name} failed in Linux: {err})\n"),
            }
        }
        let linux = u64::from(halves[1]) << 32 | u64::from(halves[0]);
        let mut probe = body.to_vec();
        probe.push(fetch);
        probe.push(insn(JMP | EXIT, 0, 0, 0, 0));
        let bytes: Vec<u8> = probe.iter().flat_map(|i| i.to_le_bytes()).collect();
        let mut ctx = *ctx_in;
        let vm_value = Program::from_raw(&bytes)
            .map_err(|e| e.to_string())
            .and_then(|p| {
                vm.run(&p, &mut ctx, &Limits::default())
                    .map_err(|e| e.to_string())
            })
            .map(|r| r.r0);
        let mark = if vm_value == Ok(linux) { "  " } else { "!=" };
        out.push_str(&format!(
            "  {mark} {name:<6} linux {linux:#018x}  vm {vm_value:x?}\n"
        ));
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The one divergence found (2 in the first 100,000 programs, seed 0x5eedb9f0): after a
/// successful 32-bit `cmpxchg`, the ISA (`Documentation/bpf/standardization/instruction-set.rst`)
/// zero-extends the old value into R0, and the vm does; Linux 6.18 on x86-64 leaves R0's upper
/// half as it was when the verifier pruned the path after the `cmpxchg` (x86's `lock cmpxchg`
/// writes no register on success, and the zero-extension the verifier should insert for a
/// later 64-bit read of R0 is missing). This is the 10-instruction reproducer; the generator
/// leaves 32-bit `cmpxchg` out so the remaining comparison stays meaningful.
#[test]
fn pruned_cmpxchg32_zero_extends_r0_in_the_vm_but_not_in_linux() {
    let k = RealKernel::new();
    if let Some(why) = k.bpf_unavailable() {
        writeln!(
            std::io::stdout().lock(),
            "SKIP pruned_cmpxchg32_zero_extends_r0_in_the_vm_but_not_in_linux: {why}"
        )
        .unwrap();
        return;
    }
    let insns = [
        insn(LDX | MODE_MEM | SIZE_B, 6, R1, 0, 0), // r6 = ctx[0]
        insn(ALU64 | OP_MOV | K, 0, 0, 0, -1),      // r0 = -1
        insn(ST | MODE_MEM | SIZE_W, R10, 0, -4, -1), // *(u32 *)(fp - 4) = -1
        insn(ALU64 | OP_MOV | K, 5, 0, 0, 7),       // r5 = 7
        insn(JMP | 0x20 | K, 6, 0, 2, 100),         // if r6 > 100 goto +2
        insn(ALU64 | OP_MOV | K, 7, 0, 0, 0),       // r7 = 0
        insn(JMP | JA, 0, 0, 1, 0),                 // goto +1 (the verifier prunes here)
        insn(STX | MODE_ATOMIC | SIZE_W, R10, 5, -4, ATOMIC_CMPXCHG), // w0 = cmpxchg(fp-4, w0, w5)
        insn(ALU64 | OP_RSH | K, 0, 0, 0, 32),      // r0 >>= 32
        insn(JMP | EXIT, 0, 0, 0, 0),
    ];
    let bytes: Vec<u8> = insns.iter().flat_map(|i| i.to_le_bytes()).collect();
    let program = Program::from_raw(&bytes).unwrap();
    let mut ctx = [0u8; CTX_BYTES];
    ctx[0] = 200; // take the cmpxchg path; it succeeds (w0 == 0xffffffff == *(fp - 4))
    let vm_r0 = Vm::new()
        .run(&program, &mut ctx.clone(), &Limits::default())
        .unwrap()
        .r0;
    assert_eq!(
        vm_r0, 0,
        "the vm zero-extends R0 after cmpxchg32, as the ISA says"
    );
    let linux = run_linux(&k, &insns, &mut ctx).unwrap();
    writeln!(
        std::io::stdout().lock(),
        "pruned cmpxchg32: r0 >> 32 is {linux:#x} in Linux ({}), 0 in the vm (the ISA's answer)",
        if linux == 0 {
            "agrees: the kernel is fixed"
        } else {
            "the known divergence"
        }
    )
    .unwrap();
}
