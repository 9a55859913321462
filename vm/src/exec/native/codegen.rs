//! Translating [`Op`]s to x86-64 (the contract is in [`super`]'s module doc).

use std::mem::{offset_of, size_of};

use super::x64::{
    mem, mem_idx, Alu2, Asm, Cc, Label, Mem, Reg, Rm, Shift, R10, R11, R12, R13, R14, R15, R8, R9,
    RAX, RBP, RBX, RCX, RDI, RDX, RSI, RSP,
};
use super::{NativeCtx, EXIT_DONE, EXIT_HELPER_FAILED, EXIT_STEP};
use crate::exec::interp::{Frame, BPF_FUNC_LOOP, MAY_GOTO_LOOPS_MAX};
use crate::exec::memory::{
    NativeSlot, FRAMES_MAX, NATIVE_SLOTS, STACK_FRAMES_BASE, STACK_FRAME_BYTES,
    STACK_FRAME_STRIDE_BYTES,
};
use crate::exec::program::{AluOp, Cond, Op, Operand};

/// BPF r0..r9 in x86 registers (r10 lives in the context).
const REGS: [Reg; 10] = [RAX, RDI, RSI, RDX, RCX, R8, RBX, R13, R14, R15];
/// The context pointer.
const CTX: Reg = R12;
/// The host address of the current frame's top.
const FP: Reg = RBP;

fn disp(offset: usize) -> i32 {
    i32::try_from(offset).expect("context offsets are small")
}

const REGS_OFF: usize = offset_of!(NativeCtx, state.regs);
const PC_OFF: usize = offset_of!(NativeCtx, state.pc);
const INSNS_OFF: usize = offset_of!(NativeCtx, state.insns_executed);
const DEPTH_OFF: usize = offset_of!(NativeCtx, state.depth);
const FRAMES_OFF: usize = offset_of!(NativeCtx, state.frames);
const INSNS_MAX_OFF: usize = offset_of!(NativeCtx, insns_max);
const FP_VIRTUAL_OFF: usize = offset_of!(NativeCtx, fp_virtual);
const FP_HOST_OFF: usize = offset_of!(NativeCtx, fp_host);
const STACK_HOST_OFF: usize = offset_of!(NativeCtx, stack_host);
const ENTRY_TABLE_OFF: usize = offset_of!(NativeCtx, entry_table);
const EXIT_KIND_OFF: usize = offset_of!(NativeCtx, exit_kind);
const SAVED_RSP_OFF: usize = offset_of!(NativeCtx, saved_rsp);
const SLOTS_OFF: usize = offset_of!(NativeCtx, slots);
const HELPER_FN_OFF: usize = offset_of!(NativeCtx, helper_fn);
const HELPER_ID_OFF: usize = offset_of!(NativeCtx, helper_id);
const HELPER_R0_OFF: usize = offset_of!(NativeCtx, helper_r0);

const FRAME_SHIFT: u8 = 7;
const _: () = assert!(size_of::<Frame>() == 1 << FRAME_SHIFT);
const F_RETURN_PC: usize = offset_of!(Frame, return_pc);
const F_CALLEE_SAVED: usize = offset_of!(Frame, callee_saved);
const F_MAY_GOTO: usize = offset_of!(Frame, may_goto_left);
const F_LOOPING: usize = offset_of!(Frame, looping);

const SLOT_SHIFT: u8 = 6;
const _: () = assert!(size_of::<NativeSlot>() == 1 << SLOT_SHIFT);
const S_BASE: usize = offset_of!(NativeSlot, base);
const S_LOAD: usize = offset_of!(NativeSlot, load_len);
const S_STORE: usize = offset_of!(NativeSlot, store_len);
const S_MASK: usize = offset_of!(NativeSlot, elem_mask);
const S_ELEM: usize = offset_of!(NativeSlot, elem_bytes);
const S_STRIDE: usize = offset_of!(NativeSlot, stride);
const S_SLOW_LOAD: usize = offset_of!(NativeSlot, slow_load_len);
const S_SLOW_STORE: usize = offset_of!(NativeSlot, slow_store_len);

const STACK_STRIDE_SHIFT: u8 = 16;
const _: () = assert!(STACK_FRAME_STRIDE_BYTES == 1 << STACK_STRIDE_SHIFT);
const STACK_FRAME_SHIFT: u8 = 9;
const _: () = assert!(STACK_FRAME_BYTES == 1 << STACK_FRAME_SHIFT);
const _: () = assert!(STACK_FRAME_BYTES % 16 == 0);

/// The output of [`compile`].
pub(super) struct Compiled {
    pub(super) code: Vec<u8>,
    pub(super) enter_offset: usize,
    pub(super) entries: Vec<Option<usize>>,
    pub(super) leader: Vec<bool>,
    pub(super) remaining: Vec<u64>,
}

/// An out-of-line path for an access the inline checks did not prove: the exact check, then
/// back, or an exit to the interpreter.
struct SlowPath {
    label: Label,
    size: u8,
    store: bool,
    back: Label,
    pc: usize,
}

struct Gen<'o> {
    a: Asm,
    ops: &'o [Op],
    leader: Vec<bool>,
    remaining: Vec<u64>,
    block: Vec<Label>,
    exit_stubs: Vec<Option<Label>>,
    budget_stubs: Vec<(Label, usize)>,
    slow_paths: Vec<SlowPath>,
    exit_step: Label,
    exit_done: Label,
    exit_helper_failed: Label,
    /// Exact translation per access size (1, 2, 4, 8) and kind (load, store) for what the
    /// inline check leaves: the stack, regions of values with a stride no power of two.
    /// r11 = address in, host address out (0: to the interpreter); clobbers r9, r10, flags.
    slow_xlate: [[Label; 2]; 4],
}

/// Compiles `ops`.
pub(super) fn compile(ops: &[Op]) -> Compiled {
    let n = ops.len();
    let mut leader = vec![false; n];
    leader[0] = true;
    for (pc, op) in ops.iter().enumerate() {
        let ends_block = match *op {
            Op::Jump { target }
            | Op::Branch { target, .. }
            | Op::MayGoto { target }
            | Op::CallLocal { target } => {
                leader[target] = true;
                true
            }
            Op::Exit | Op::CallHelper { .. } => true,
            _ => false,
        };
        if ends_block && pc + 1 < n {
            leader[pc + 1] = true;
        }
    }
    // Instructions from pc to its block's end (an lddw counts once, its tail not at all).
    let mut remaining = vec![0u64; n];
    let mut carry = 0;
    for pc in (0..n).rev() {
        if ops[pc] == Op::LddwTail {
            continue;
        }
        remaining[pc] = 1 + carry;
        carry = if leader[pc] { 0 } else { remaining[pc] };
    }

    let mut a = Asm::default();
    let block = (0..n).map(|_| a.label()).collect();
    let exit_step = a.label();
    let exit_done = a.label();
    let exit_helper_failed = a.label();
    let slow_xlate = [0; 4].map(|_| [a.label(), a.label()]);
    let mut g = Gen {
        a,
        ops,
        leader,
        remaining,
        block,
        exit_stubs: vec![None; n],
        budget_stubs: Vec::new(),
        slow_paths: Vec::new(),
        exit_step,
        exit_done,
        exit_helper_failed,
        slow_xlate,
    };
    let enter_offset = g.a.code.len();
    g.enter_and_exit();
    g.slow_routines();
    let mut entries = vec![None; n];
    for pc in 0..n {
        if ops[pc] == Op::LddwTail {
            continue;
        }
        if g.leader[pc] {
            let label = g.block[pc];
            g.a.bind(label);
            entries[pc] = Some(g.a.code.len());
            g.prologue(pc);
        } else {
            entries[pc] = Some(g.a.code.len());
        }
        g.op(pc);
    }
    g.stubs();
    let Gen {
        a,
        leader,
        remaining,
        ..
    } = g;
    Compiled {
        code: a.finish(),
        enter_offset,
        entries,
        leader,
        remaining,
    }
}

impl Gen<'_> {
    /// `enter(ctx, target)`, and the exits that return from it.
    fn enter_and_exit(&mut self) {
        let a = &mut self.a;
        for r in [RBX, RBP, R12, R13, R14, R15] {
            a.push(r);
        }
        // Six pushes and the return address: 8 more keeps rsp 16-byte aligned.
        a.alu_ri(Alu2::Sub, true, Rm::Reg(RSP), 8);
        a.mov_rr(true, CTX, RDI);
        a.store_r(8, mem(CTX, disp(SAVED_RSP_OFF)), RSP);
        a.mov_rr(true, R11, RSI);
        a.load_zx(8, FP, mem(CTX, disp(FP_HOST_OFF)));
        for (i, &r) in REGS.iter().enumerate() {
            a.load_zx(8, r, mem(CTX, disp(REGS_OFF + 8 * i)));
        }
        a.jmp_r(R11);

        let common = a.label();
        a.bind(self.exit_step);
        a.store_i(8, mem(CTX, disp(EXIT_KIND_OFF)), EXIT_STEP as i32);
        a.jmp(common);
        a.bind(self.exit_helper_failed);
        a.store_i(8, mem(CTX, disp(EXIT_KIND_OFF)), EXIT_HELPER_FAILED as i32);
        a.jmp(common);
        a.bind(self.exit_done);
        a.store_i(8, mem(CTX, disp(EXIT_KIND_OFF)), EXIT_DONE as i32);
        a.bind(common);
        for (i, &r) in REGS.iter().enumerate() {
            a.store_r(8, mem(CTX, disp(REGS_OFF + 8 * i)), r);
        }
        a.load_zx(8, RSP, mem(CTX, disp(SAVED_RSP_OFF)));
        a.alu_ri(Alu2::Add, true, Rm::Reg(RSP), 8);
        for r in [R15, R14, R13, R12, RBP, RBX] {
            a.pop(r);
        }
        a.ret();
    }

    fn slow_routines(&mut self) {
        for (i, size) in [1u8, 2, 4, 8].into_iter().enumerate() {
            for store in [false, true] {
                let a = &mut self.a;
                let fail = a.label();
                let region = a.label();
                a.bind(self.slow_xlate[i][usize::from(store)]);
                a.mov_rr(true, R10, R11);
                a.shift_ri(Shift::Shr, true, R10, 32);
                a.jcc(Cc::Ne, region);
                // Slot 0, the stack: frame k = (offset - base) / stride must be active and
                // the access inside its 512 bytes.
                a.mov_rr(false, R10, R11);
                a.alu_ri(
                    Alu2::Sub,
                    true,
                    Rm::Reg(R10),
                    i32::try_from(STACK_FRAMES_BASE).expect("small base"),
                );
                a.jcc(Cc::B, fail);
                a.mov_rr(true, R9, R10);
                a.shift_ri(Shift::Shr, true, R9, STACK_STRIDE_SHIFT);
                a.alu_rm(Alu2::Cmp, true, R9, mem(CTX, disp(DEPTH_OFF)));
                a.jcc(Cc::Ae, fail);
                a.alu_ri(
                    Alu2::And,
                    false,
                    Rm::Reg(R10),
                    (STACK_FRAME_STRIDE_BYTES - 1) as i32,
                );
                a.lea(R11, mem(R10, i32::from(size)));
                a.alu_ri(Alu2::Cmp, true, Rm::Reg(R11), STACK_FRAME_BYTES as i32);
                a.jcc(Cc::A, fail);
                a.shift_ri(Shift::Shl, true, R9, STACK_FRAME_SHIFT);
                a.alu_rr(Alu2::Add, true, R9, R10);
                a.alu_rm(Alu2::Add, true, R9, mem(CTX, disp(STACK_HOST_OFF)));
                a.mov_rr(true, R11, R9);
                a.ret();

                // A region of values: offset + n within it, offset % stride + n within a value.
                a.bind(region);
                a.alu_ri(Alu2::Cmp, true, Rm::Reg(R10), NATIVE_SLOTS as i32);
                a.jcc(Cc::Ae, fail);
                a.shift_ri(Shift::Shl, true, R10, SLOT_SHIFT);
                let field = |f: usize| mem_idx(CTX, R10, disp(SLOTS_OFF + f));
                a.alu_ri(Alu2::Cmp, true, Rm::Mem(field(S_STRIDE)), 0);
                a.jcc(Cc::E, fail);
                a.mov_rr(false, R9, R11);
                a.alu_ri(Alu2::Add, true, Rm::Reg(R9), i32::from(size));
                let len = if store { S_SLOW_STORE } else { S_SLOW_LOAD };
                a.alu_rm(Alu2::Cmp, true, R9, field(len));
                a.jcc(Cc::A, fail);
                // div takes edx:eax (BPF r3, r0): saved around it.
                a.push(RAX);
                a.push(RDX);
                a.mov_rr(false, RAX, R11);
                a.alu_rr(Alu2::Xor, false, RDX, RDX);
                a.div32_m(field(S_STRIDE));
                a.lea(R9, mem(RDX, i32::from(size)));
                a.pop(RDX);
                a.pop(RAX);
                a.alu_rm(Alu2::Cmp, true, R9, field(S_ELEM));
                a.jcc(Cc::A, fail);
                a.mov_rr(false, R11, R11);
                a.alu_rm(Alu2::Add, true, R11, field(S_BASE));
                a.ret();

                a.bind(fail);
                a.alu_rr(Alu2::Xor, false, R11, R11);
                a.ret();
            }
        }
    }

    /// A block's entry: count its instructions, or leave for the interpreter if the budget
    /// would run out inside it.
    fn prologue(&mut self, pc: usize) {
        let stub = self.a.label();
        self.budget_stubs.push((stub, pc));
        let n = i32::try_from(self.remaining[pc]).expect("block < 2^31 insns");
        let a = &mut self.a;
        a.load_zx(8, R9, mem(CTX, disp(INSNS_OFF)));
        a.alu_ri(Alu2::Add, true, Rm::Reg(R9), n);
        a.alu_rm(Alu2::Cmp, true, R9, mem(CTX, disp(INSNS_MAX_OFF)));
        a.jcc(Cc::A, stub);
        a.store_r(8, mem(CTX, disp(INSNS_OFF)), R9);
    }

    /// The exit that hands instruction `pc` to the interpreter.
    fn exit_stub(&mut self, pc: usize) -> Label {
        if let Some(l) = self.exit_stubs[pc] {
            return l;
        }
        let l = self.a.label();
        self.exit_stubs[pc] = Some(l);
        l
    }

    /// A register holding BPF register `r`'s value (r10 is loaded into `tmp`).
    fn src(&mut self, r: u8, tmp: Reg) -> Reg {
        if r == 10 {
            self.a.load_zx(8, tmp, mem(CTX, disp(FP_VIRTUAL_OFF)));
            tmp
        } else {
            REGS[usize::from(r)]
        }
    }

    fn op(&mut self, pc: usize) {
        let op = self.ops[pc];
        match op {
            Op::Alu {
                wide: w,
                op,
                dst,
                src,
            } => self.alu(pc, w, op, REGS[usize::from(dst)], src),
            Op::Neg { wide, dst } => self.a.neg(wide, REGS[usize::from(dst)]),
            Op::MovSx {
                wide,
                dst,
                src,
                bits,
            } => {
                let s = self.src(src, R10);
                self.a.movsx_rr(wide, bits, REGS[usize::from(dst)], s);
            }
            Op::ToLe { dst, bits } => {
                let d = REGS[usize::from(dst)];
                match bits {
                    16 => self.a.movzx16(d, d),
                    32 => self.a.mov_rr(false, d, d),
                    _ => {}
                }
            }
            Op::Swap { dst, bits } => {
                let d = REGS[usize::from(dst)];
                match bits {
                    16 => {
                        self.a.bswap(false, d);
                        self.a.shift_ri(Shift::Shr, false, d, 16);
                    }
                    32 => self.a.bswap(false, d),
                    _ => self.a.bswap(true, d),
                }
            }
            Op::LoadImm64 { dst, value } => self.a.mov_ri64(REGS[usize::from(dst)], value),
            Op::LddwTail => unreachable!("tails are skipped"),
            Op::Load {
                dst,
                base,
                off,
                size,
                signed,
            } => {
                let m = self.address(pc, base, off, size, false);
                let d = REGS[usize::from(dst)];
                if signed && size < 8 {
                    self.a.load_sx(size, d, m);
                } else {
                    self.a.load_zx(size, d, m);
                }
            }
            Op::Store {
                base,
                off,
                size,
                value,
            } => match value {
                Operand::Reg(10) => {
                    let stub = self.exit_stub(pc);
                    self.a.jmp(stub);
                }
                Operand::Reg(r) => {
                    let m = self.address(pc, base, off, size, true);
                    self.a.store_r(size, m, REGS[usize::from(r)]);
                }
                Operand::Imm(imm) => {
                    let m = self.address(pc, base, off, size, true);
                    self.a.store_i(size, m, imm);
                }
            },
            Op::CallHelper { id } if id != BPF_FUNC_LOOP && i32::try_from(id).is_ok() => {
                self.call_helper(pc, id);
            }
            Op::Atomic { .. } | Op::CallHelper { .. } => {
                let stub = self.exit_stub(pc);
                self.a.jmp(stub);
            }
            Op::Jump { target } => {
                let l = self.block[target];
                self.a.jmp(l);
            }
            Op::Branch {
                wide,
                cond,
                dst,
                src,
                target,
            } => self.branch(wide, cond, dst, src, target),
            Op::MayGoto { target } => {
                let l = self.block[target];
                let left = mem_idx(CTX, R9, disp(FRAMES_OFF + F_MAY_GOTO) - (1 << FRAME_SHIFT));
                let a = &mut self.a;
                a.load_zx(8, R9, mem(CTX, disp(DEPTH_OFF)));
                a.shift_ri(Shift::Shl, true, R9, FRAME_SHIFT);
                a.alu_ri(Alu2::Cmp, true, Rm::Mem(left), 0);
                a.jcc(Cc::E, l);
                a.dec_m64(left);
            }
            Op::CallLocal { target } => self.call_local(pc, target),
            Op::Exit => self.exit(pc),
        }
    }

    fn alu(&mut self, pc: usize, w: bool, op: AluOp, d: Reg, src: Operand) {
        let simple = match op {
            AluOp::Add => Some(Alu2::Add),
            AluOp::Sub => Some(Alu2::Sub),
            AluOp::Or => Some(Alu2::Or),
            AluOp::And => Some(Alu2::And),
            AluOp::Xor => Some(Alu2::Xor),
            _ => None,
        };
        let shift = match op {
            AluOp::Lsh => Some(Shift::Shl),
            AluOp::Rsh => Some(Shift::Shr),
            AluOp::Arsh => Some(Shift::Sar),
            _ => None,
        };
        match (op, src) {
            (AluOp::Div | AluOp::Sdiv | AluOp::Mod | AluOp::Smod, _) => {
                let stub = self.exit_stub(pc);
                self.a.jmp(stub);
            }
            (_, Operand::Imm(imm)) if simple.is_some() => {
                self.a.alu_ri(simple.expect("matched"), w, Rm::Reg(d), imm);
            }
            (_, Operand::Reg(r)) if simple.is_some() => {
                let s = self.src(r, R10);
                self.a.alu_rr(simple.expect("matched"), w, d, s);
            }
            (AluOp::Mov, Operand::Imm(imm)) => self.a.mov_ri(w, d, imm),
            (AluOp::Mov, Operand::Reg(r)) => {
                let s = self.src(r, R10);
                self.a.mov_rr(w, d, s);
            }
            (AluOp::Mul, Operand::Imm(imm)) => self.a.imul_rri(w, d, d, imm),
            (AluOp::Mul, Operand::Reg(r)) => {
                let s = self.src(r, R10);
                self.a.imul_rr(w, d, s);
            }
            (_, Operand::Imm(imm)) => {
                let kind = shift.expect("the remaining ops are shifts");
                let count = (imm as u32) & if w { 63 } else { 31 };
                if count != 0 {
                    self.a.shift_ri(kind, w, d, count as u8);
                } else if !w {
                    // A 32-bit op still zero-extends its result.
                    self.a.mov_rr(false, d, d);
                }
            }
            (_, Operand::Reg(r)) => {
                let kind = shift.expect("the remaining ops are shifts");
                let s = self.src(r, R10);
                self.a.shift_x(kind, w, d, d, s);
            }
        }
    }

    fn branch(&mut self, w: bool, cond: Cond, dst: u8, src: Operand, target: usize) {
        let d = self.src(dst, R9);
        let l = self.block[target];
        match src {
            Operand::Imm(imm) if cond == Cond::Set => self.a.test_ri(w, d, imm),
            Operand::Imm(imm) => self.a.alu_ri(Alu2::Cmp, w, Rm::Reg(d), imm),
            Operand::Reg(r) => {
                let s = self.src(r, R10);
                if cond == Cond::Set {
                    self.a.test_rr(w, d, s);
                } else {
                    self.a.alu_rr(Alu2::Cmp, w, d, s);
                }
            }
        }
        let cc = match cond {
            Cond::Eq => Cc::E,
            Cond::Ne | Cond::Set => Cc::Ne,
            Cond::Gt => Cc::A,
            Cond::Ge => Cc::Ae,
            Cond::Lt => Cc::B,
            Cond::Le => Cc::Be,
            Cond::Sgt => Cc::G,
            Cond::Sge => Cc::Ge,
            Cond::Slt => Cc::L,
            Cond::Sle => Cc::Le,
        };
        self.a.jcc(cc, l);
    }

    /// The host address of `base + off` for a `size`-byte access, checked.
    fn address(&mut self, pc: usize, base: u8, off: i16, size: u8, store: bool) -> Mem {
        let off = i32::from(off);
        let size_i = i32::from(size);
        if base == 10 && off >= -(STACK_FRAME_BYTES as i32) && off + size_i <= 0 {
            // Inside the current frame, whatever the run does: r10 never changes.
            return mem(FP, off);
        }
        let slow = self.a.label();
        let back = self.a.label();
        self.slow_paths.push(SlowPath {
            label: slow,
            size,
            store,
            back,
            pc,
        });
        let a = &mut self.a;
        if base == 10 {
            a.load_zx(8, R11, mem(CTX, disp(FP_VIRTUAL_OFF)));
        } else {
            a.mov_rr(true, R11, REGS[usize::from(base)]);
        }
        if off != 0 {
            a.alu_ri(Alu2::Add, true, Rm::Reg(R11), off);
        }
        let len_field = if store { S_STORE } else { S_LOAD };
        a.mov_rr(true, R10, R11);
        a.shift_ri(Shift::Shr, true, R10, 32);
        a.alu_ri(Alu2::Cmp, true, Rm::Reg(R10), NATIVE_SLOTS as i32);
        a.jcc(Cc::Ae, slow);
        a.shift_ri(Shift::Shl, true, R10, SLOT_SHIFT);
        // offset + size <= the slot's length for this access kind
        a.mov_rr(false, R9, R11);
        a.alu_ri(Alu2::Add, true, Rm::Reg(R9), size_i);
        a.alu_rm(
            Alu2::Cmp,
            true,
            R9,
            mem_idx(CTX, R10, disp(SLOTS_OFF + len_field)),
        );
        a.jcc(Cc::A, slow);
        // (offset & elem_mask) + size <= elem_bytes: inside one map value
        a.mov_rr(false, R9, R11);
        a.alu_rm(
            Alu2::And,
            true,
            R9,
            mem_idx(CTX, R10, disp(SLOTS_OFF + S_MASK)),
        );
        a.alu_ri(Alu2::Add, true, Rm::Reg(R9), size_i);
        a.alu_rm(
            Alu2::Cmp,
            true,
            R9,
            mem_idx(CTX, R10, disp(SLOTS_OFF + S_ELEM)),
        );
        a.jcc(Cc::A, slow);
        a.mov_rr(false, R11, R11);
        a.alu_rm(
            Alu2::Add,
            true,
            R11,
            mem_idx(CTX, R10, disp(SLOTS_OFF + S_BASE)),
        );
        a.bind(back);
        mem(R11, 0)
    }

    fn frame_field(index: Reg, field: usize) -> Mem {
        mem_idx(CTX, index, disp(FRAMES_OFF + field))
    }

    /// A helper call through `call_helper` (System V: it keeps rbx, rbp, r12-r15, so r6-r9
    /// survive; r1-r5 are saved around it, as the interpreter leaves them unchanged).
    fn call_helper(&mut self, pc: usize, id: u32) {
        let failed = self.exit_helper_failed;
        let a = &mut self.a;
        for (i, &r) in REGS.iter().enumerate().take(6).skip(1) {
            a.store_r(8, mem(CTX, disp(REGS_OFF + 8 * i)), r);
        }
        a.store_i(
            8,
            mem(CTX, disp(PC_OFF)),
            i32::try_from(pc).expect("pc < 2^31"),
        );
        a.store_i(
            8,
            mem(CTX, disp(HELPER_ID_OFF)),
            i32::try_from(id).expect("checked by the caller"),
        );
        a.mov_rr(true, RDI, CTX);
        a.load_zx(8, R11, mem(CTX, disp(HELPER_FN_OFF)));
        a.call_r(R11);
        a.test_rr(true, RAX, RAX);
        a.jcc(Cc::Ne, failed);
        for (i, &r) in REGS.iter().enumerate().take(6).skip(1) {
            a.load_zx(8, r, mem(CTX, disp(REGS_OFF + 8 * i)));
        }
        a.load_zx(8, RAX, mem(CTX, disp(HELPER_R0_OFF)));
    }

    fn call_local(&mut self, pc: usize, target: usize) {
        let deep = self.exit_stub(pc);
        let l = self.block[target];
        let a = &mut self.a;
        a.load_zx(8, R9, mem(CTX, disp(DEPTH_OFF)));
        a.alu_ri(Alu2::Cmp, true, Rm::Reg(R9), FRAMES_MAX as i32);
        a.jcc(Cc::Ae, deep);
        a.mov_rr(true, R10, R9);
        a.shift_ri(Shift::Shl, true, R10, FRAME_SHIFT);
        let return_pc = i32::try_from(pc + 1).expect("programs < 2^31 insns");
        a.store_i(8, Self::frame_field(R10, F_RETURN_PC), return_pc);
        for (i, r) in [RBX, R13, R14, R15].into_iter().enumerate() {
            a.store_r(8, Self::frame_field(R10, F_CALLEE_SAVED + 8 * i), r);
        }
        let loops = i32::try_from(MAY_GOTO_LOOPS_MAX).expect("8 Mi");
        a.store_i(8, Self::frame_field(R10, F_MAY_GOTO), loops);
        a.store_i(8, Self::frame_field(R10, F_LOOPING), 0);
        a.alu_ri(Alu2::Add, true, Rm::Reg(R9), 1);
        a.store_r(8, mem(CTX, disp(DEPTH_OFF)), R9);
        a.alu_ri(Alu2::Add, true, Rm::Reg(FP), STACK_FRAME_BYTES as i32);
        a.alu_ri(
            Alu2::Add,
            true,
            Rm::Mem(mem(CTX, disp(FP_VIRTUAL_OFF))),
            STACK_FRAME_STRIDE_BYTES as i32,
        );
        // A callee never sees a previous callee's data (the interpreter zeroes it too).
        a.zero_xmm0();
        for i in 0..STACK_FRAME_BYTES / 16 {
            a.store_xmm0(mem(FP, 16 * i as i32 - STACK_FRAME_BYTES as i32));
        }
        a.jmp(l);
    }

    fn exit(&mut self, pc: usize) {
        let looping = self.exit_stub(pc);
        let done = self.exit_done;
        let a = &mut self.a;
        a.load_zx(8, R9, mem(CTX, disp(DEPTH_OFF)));
        a.alu_ri(Alu2::Cmp, true, Rm::Reg(R9), 1);
        a.jcc(Cc::E, done);
        a.alu_ri(Alu2::Sub, true, Rm::Reg(R9), 1);
        a.mov_rr(true, R10, R9);
        a.shift_ri(Shift::Shl, true, R10, FRAME_SHIFT);
        // A bpf_loop callback's return is the interpreter's business.
        a.alu_ri(
            Alu2::Cmp,
            true,
            Rm::Mem(Self::frame_field(R10, F_LOOPING)),
            0,
        );
        a.jcc(Cc::Ne, looping);
        for (i, r) in [RBX, R13, R14, R15].into_iter().enumerate() {
            a.load_zx(8, r, Self::frame_field(R10, F_CALLEE_SAVED + 8 * i));
        }
        a.store_r(8, mem(CTX, disp(DEPTH_OFF)), R9);
        a.alu_ri(Alu2::Sub, true, Rm::Reg(FP), STACK_FRAME_BYTES as i32);
        a.alu_ri(
            Alu2::Sub,
            true,
            Rm::Mem(mem(CTX, disp(FP_VIRTUAL_OFF))),
            STACK_FRAME_STRIDE_BYTES as i32,
        );
        a.load_zx(8, R10, Self::frame_field(R10, F_RETURN_PC));
        a.shift_ri(Shift::Shl, true, R10, 3);
        a.load_zx(8, R11, mem(CTX, disp(ENTRY_TABLE_OFF)));
        a.jmp_m(mem_idx(R11, R10, 0));
    }

    /// Out-of-line code: slow memory paths, then exits to the interpreter.
    fn stubs(&mut self) {
        for sp in std::mem::take(&mut self.slow_paths) {
            let exit = self.exit_stub(sp.pc);
            let routine = self.slow_xlate[match sp.size {
                1 => 0,
                2 => 1,
                4 => 2,
                _ => 3,
            }][usize::from(sp.store)];
            let a = &mut self.a;
            a.bind(sp.label);
            a.call(routine);
            a.test_rr(true, R11, R11);
            a.jcc(Cc::E, exit);
            a.jmp(sp.back);
        }
        for (pc, stub) in std::mem::take(&mut self.exit_stubs).into_iter().enumerate() {
            let Some(label) = stub else { continue };
            let rest = i32::try_from(self.remaining[pc]).expect("block < 2^31 insns");
            let a = &mut self.a;
            a.bind(label);
            a.store_i(8, mem(CTX, disp(PC_OFF)), pc as i32);
            a.alu_ri(Alu2::Sub, true, Rm::Mem(mem(CTX, disp(INSNS_OFF))), rest);
            a.jmp(self.exit_step);
        }
        for (label, pc) in std::mem::take(&mut self.budget_stubs) {
            let a = &mut self.a;
            a.bind(label);
            a.store_i(8, mem(CTX, disp(PC_OFF)), pc as i32);
            a.jmp(self.exit_step);
        }
    }
}
