//! The checked interpreter: Linux's semantics for every op [`super::program`] accepts.
//!
//! Semantics follow the kernel's interpreter (`kernel/bpf/core.c`) after the verifier's
//! rewrites (`do_misc_fixups` in `kernel/bpf/verifier.c`), since that is what a loaded program
//! really runs: division by zero gives 0, modulo by zero leaves dst (32-bit: zero-extended),
//! signed `INT_MIN / -1` gives `INT_MIN` and `INT_MIN % -1` gives 0, register shift amounts
//! are masked to the operand width, and may_goto counts down a per-frame budget.

use super::error::{HelperError, LoadError, RunError};
use super::helper::Helpers;
use super::memory::{frame_pointer, Memory, CTX_BASE, FRAMES_MAX};
use super::program::{AluOp, AtomicOp, Cond, Op, Operand, CALLBACK_ADDR_BASE};
use super::{Limits, RunResult};

/// may_goto iterations per frame before it starts jumping: the kernel's `BPF_MAX_LOOPS`
/// (8 Mi), with which `do_misc_fixups` initialises each function's hidden counter.
pub const MAY_GOTO_LOOPS_MAX: u64 = 1 << 23;

/// `bpf_loop`'s helper id (`BPF_FUNC_loop`), run by the interpreter itself because its
/// callback is BPF code: each iteration is a BPF-to-BPF call of the callback.
pub const BPF_FUNC_LOOP: u32 = 181;
/// Most iterations `bpf_loop` accepts (`BPF_MAX_LOOPS`, 8 Mi; more is -E2BIG).
pub const BPF_LOOP_ITERATIONS_MAX: u64 = 1 << 23;
const EINVAL: i64 = 22;
const E2BIG: i64 = 7;

/// State saved by a BPF-to-BPF call and restored by the callee's `exit`.
///
/// `repr(C)` and 128 bytes: the native tier ([`super::native`]) reads and writes frames at
/// fixed offsets, so both tiers share one frame stack and can hand a run to each other.
#[repr(C, align(128))]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Frame {
    pub(crate) return_pc: u64,
    pub(crate) callee_saved: [u64; 4],
    pub(crate) may_goto_left: u64,
    /// Non-zero when the frame is a `bpf_loop` callback invocation (then `lp` is valid).
    pub(crate) looping: u64,
    lp: Loop,
}

/// Progress of one `bpf_loop` call.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct Loop {
    index: u64,
    count: u64,
    callback: u64,
    ctx: u64,
}

/// A run's registers, position and call frames: everything besides memory and helpers.
#[repr(C)]
#[derive(Debug, Clone)]
pub(crate) struct State {
    pub(crate) regs: [u64; 11],
    pub(crate) pc: u64,
    pub(crate) insns_executed: u64,
    /// Active frames, main included (so `frames[depth - 1]` is the current one).
    pub(crate) depth: u64,
    pub(crate) frames: [Frame; FRAMES_MAX],
}

impl State {
    /// The state at a run's start: r1 = context, r2 = its length, r10 = frame 0's pointer.
    pub(crate) fn start(ctx_len_bytes: u64) -> Self {
        let mut regs = [0u64; 11];
        regs[1] = CTX_BASE;
        regs[2] = ctx_len_bytes;
        regs[10] = frame_pointer(0);
        let mut frames = [Frame::default(); FRAMES_MAX];
        frames[0].may_goto_left = MAY_GOTO_LOOPS_MAX;
        State {
            regs,
            pc: 0,
            insns_executed: 0,
            depth: 1,
            frames,
        }
    }
}

/// Runs `ops` from instruction 0 until the main function exits.
pub(crate) fn run(
    ops: &[Op],
    memory: &mut Memory<'_, '_>,
    helpers: &mut Helpers,
    limits: &Limits,
) -> Result<RunResult, RunError> {
    let mut state = State::start(memory.ctx_len_bytes());
    let result = exec::<false>(ops, &mut state, memory, helpers, limits)?;
    Ok(result.expect("a run to the end stops only at the main exit"))
}

/// Executes the one instruction at `state.pc` (budget check included): `Some` when it was
/// the main function's `exit`.
pub(crate) fn step(
    ops: &[Op],
    state: &mut State,
    memory: &mut Memory<'_, '_>,
    helpers: &mut Helpers,
    limits: &Limits,
) -> Result<Option<RunResult>, RunError> {
    exec::<true>(ops, state, memory, helpers, limits)
}

/// The interpreter loop; with `SINGLE` it returns after one instruction.
#[inline(always)]
fn exec<const SINGLE: bool>(
    ops: &[Op],
    state: &mut State,
    memory: &mut Memory<'_, '_>,
    helpers: &mut Helpers,
    limits: &Limits,
) -> Result<Option<RunResult>, RunError> {
    let mut regs = state.regs;
    let mut pc = usize::try_from(state.pc).expect("pc fits the program");
    let mut insns_executed = state.insns_executed;
    let mut depth = usize::try_from(state.depth).expect("depth <= FRAMES_MAX");
    let frames = &mut state.frames;
    // Writes the loop's locals back into `state` (every return path goes through it).
    macro_rules! save {
        () => {{
            state.regs = regs;
            state.pc = pc as u64;
            state.insns_executed = insns_executed;
            state.depth = depth as u64;
        }};
    }
    let first_insn = insns_executed;

    loop {
        if SINGLE && insns_executed != first_insn {
            save!();
            return Ok(None);
        }
        if insns_executed >= limits.insns_max {
            return Err(RunError::InsnBudgetExhausted {
                pc,
                insns_max: limits.insns_max,
            });
        }
        insns_executed += 1;
        let Some(&op) = ops.get(pc) else {
            return Err(RunError::Internal {
                pc,
                what: "pc left the program",
            });
        };
        let mem_err = |source| RunError::Memory { pc, source };
        match op {
            Op::Alu {
                wide: true,
                op,
                dst,
                src,
            } => {
                let s = match src {
                    Operand::Reg(r) => regs[r as usize],
                    Operand::Imm(imm) => i64::from(imm) as u64, // 64-bit ops sign-extend imm
                };
                let d = &mut regs[dst as usize];
                *d = alu64(op, *d, s);
            }
            Op::Alu {
                wide: false,
                op,
                dst,
                src,
            } => {
                let s = match src {
                    Operand::Reg(r) => regs[r as usize] as u32,
                    Operand::Imm(imm) => imm as u32,
                };
                let d = &mut regs[dst as usize];
                *d = u64::from(alu32(op, *d as u32, s));
            }
            Op::Neg { wide: true, dst } => regs[dst as usize] = regs[dst as usize].wrapping_neg(),
            Op::Neg { wide: false, dst } => {
                regs[dst as usize] = u64::from((regs[dst as usize] as u32).wrapping_neg());
            }
            Op::MovSx {
                wide,
                dst,
                src,
                bits,
            } => {
                let s = regs[src as usize];
                let extended: i64 = match bits {
                    8 => i64::from(s as i8),
                    16 => i64::from(s as i16),
                    _ => i64::from(s as i32),
                };
                regs[dst as usize] = if wide {
                    extended as u64
                } else {
                    u64::from(extended as u32)
                };
            }
            Op::ToLe { dst, bits } => {
                let d = regs[dst as usize];
                regs[dst as usize] = match bits {
                    16 => u64::from(d as u16),
                    32 => u64::from(d as u32),
                    _ => d,
                };
            }
            Op::Swap { dst, bits } => {
                let d = regs[dst as usize];
                regs[dst as usize] = match bits {
                    16 => u64::from((d as u16).swap_bytes()),
                    32 => u64::from((d as u32).swap_bytes()),
                    _ => d.swap_bytes(),
                };
            }
            Op::LoadImm64 { dst, value } => {
                regs[dst as usize] = value;
                pc += 2;
                continue;
            }
            Op::LddwTail => {
                return Err(RunError::Internal {
                    pc,
                    what: "executed the second half of an lddw",
                })
            }
            Op::Load {
                dst,
                base,
                off,
                size,
                signed,
            } => {
                let addr = regs[base as usize].wrapping_add(i64::from(off) as u64);
                let v = memory.load(addr, size).map_err(mem_err)?;
                regs[dst as usize] = if signed { sign_extend(v, size) } else { v };
            }
            Op::Store {
                base,
                off,
                size,
                value,
            } => {
                let addr = regs[base as usize].wrapping_add(i64::from(off) as u64);
                let v = match value {
                    Operand::Reg(r) => regs[r as usize],
                    Operand::Imm(imm) => i64::from(imm) as u64,
                };
                memory.store(addr, size, v).map_err(mem_err)?;
            }
            Op::Atomic {
                wide,
                op,
                fetch,
                base,
                off,
                src,
            } => {
                let addr = regs[base as usize].wrapping_add(i64::from(off) as u64);
                let (size, mask) = if wide {
                    (8, u64::MAX)
                } else {
                    (4, u64::from(u32::MAX))
                };
                let operand = regs[src as usize] & mask;
                let expected = regs[0] & mask;
                let old = memory
                    .atomic(addr, size, |old| match op {
                        AtomicOp::Add => old.wrapping_add(operand),
                        AtomicOp::Or => old | operand,
                        AtomicOp::And => old & operand,
                        AtomicOp::Xor => old ^ operand,
                        AtomicOp::Xchg => operand,
                        AtomicOp::CmpXchg if old == expected => operand,
                        AtomicOp::CmpXchg => old,
                    })
                    .map_err(mem_err)?;
                // `old` is already zero-extended for 32-bit ops, as Linux's results are.
                match op {
                    AtomicOp::CmpXchg => regs[0] = old,
                    _ if fetch => regs[src as usize] = old,
                    _ => {}
                }
            }
            Op::Jump { target } => {
                pc = target;
                continue;
            }
            Op::Branch {
                wide,
                cond,
                dst,
                src,
                target,
            } => {
                let taken = if wide {
                    let s = match src {
                        Operand::Reg(r) => regs[r as usize],
                        Operand::Imm(imm) => i64::from(imm) as u64,
                    };
                    compare64(cond, regs[dst as usize], s)
                } else {
                    let s = match src {
                        Operand::Reg(r) => regs[r as usize] as u32,
                        Operand::Imm(imm) => imm as u32,
                    };
                    compare32(cond, regs[dst as usize] as u32, s)
                };
                if taken {
                    pc = target;
                    continue;
                }
            }
            Op::MayGoto { target } => {
                let left = &mut frames[depth - 1].may_goto_left;
                if *left == 0 {
                    pc = target;
                    continue;
                }
                *left -= 1;
            }
            Op::CallHelper { id: BPF_FUNC_LOOP } => {
                // bpf_loop (kernel/bpf/bpf_iter.c): flags must be 0 (-EINVAL), at most
                // BPF_MAX_LOOPS iterations (-E2BIG); calls callback(i, ctx) until it returns
                // non-zero (result i + 1) or all ran (result nr_loops).
                let (count, callback, ctx, flags) =
                    (regs[1] & u64::from(u32::MAX), regs[2], regs[3], regs[4]);
                if flags != 0 {
                    regs[0] = (-EINVAL) as u64;
                } else if count > BPF_LOOP_ITERATIONS_MAX {
                    regs[0] = (-E2BIG) as u64;
                } else if count == 0 {
                    regs[0] = 0;
                } else {
                    let target = callback
                        .checked_sub(CALLBACK_ADDR_BASE)
                        .and_then(|t| usize::try_from(t).ok())
                        .filter(|&t| t < ops.len() && !matches!(ops[t], Op::LddwTail))
                        .ok_or_else(|| RunError::Helper {
                            pc,
                            id: BPF_FUNC_LOOP,
                            source: HelperError::new(format!(
                                "{callback:#x} is not a callback address"
                            )),
                        })?;
                    if depth == FRAMES_MAX {
                        return Err(RunError::CallDepthExceeded {
                            pc,
                            frames_max: FRAMES_MAX,
                        });
                    }
                    frames[depth] = Frame {
                        return_pc: pc as u64 + 1,
                        callee_saved: [regs[6], regs[7], regs[8], regs[9]],
                        may_goto_left: MAY_GOTO_LOOPS_MAX,
                        looping: 1,
                        lp: Loop {
                            index: 0,
                            count,
                            callback: target as u64,
                            ctx,
                        },
                    };
                    depth += 1;
                    memory.enter_frame();
                    regs[1..6].copy_from_slice(&[0, ctx, 0, 0, 0]);
                    regs[10] = frame_pointer(depth - 1);
                    pc = target;
                    continue;
                }
            }
            Op::CallHelper { id } => {
                let Some(helper) = helpers.get_mut(id) else {
                    return Err(LoadError::UnknownHelper { pc, id }.into());
                };
                let args = [regs[1], regs[2], regs[3], regs[4], regs[5]];
                regs[0] = helper
                    .call(args, memory)
                    .map_err(|source| RunError::Helper { pc, id, source })?;
            }
            Op::CallLocal { target } => {
                if depth == FRAMES_MAX {
                    return Err(RunError::CallDepthExceeded {
                        pc,
                        frames_max: FRAMES_MAX,
                    });
                }
                frames[depth] = Frame {
                    return_pc: pc as u64 + 1,
                    callee_saved: [regs[6], regs[7], regs[8], regs[9]],
                    may_goto_left: MAY_GOTO_LOOPS_MAX,
                    looping: 0,
                    lp: Loop::default(),
                };
                depth += 1;
                memory.enter_frame();
                regs[10] = frame_pointer(depth - 1);
                pc = target;
                continue;
            }
            Op::Exit => {
                if depth == 1 {
                    save!();
                    return Ok(Some(RunResult {
                        r0: regs[0],
                        insns_executed,
                    }));
                }
                let frame = frames[depth - 1];
                regs[6..10].copy_from_slice(&frame.callee_saved);
                memory.leave_frame();
                if frame.looping != 0 {
                    let l = frame.lp;
                    let next = l.index + 1;
                    if regs[0] == 0 && next < l.count {
                        // Next iteration: a fresh call of the callback in the same slot.
                        frames[depth - 1].lp.index = next;
                        frames[depth - 1].may_goto_left = MAY_GOTO_LOOPS_MAX;
                        memory.enter_frame();
                        regs[1..6].copy_from_slice(&[next, l.ctx, 0, 0, 0]);
                        pc = usize::try_from(l.callback).expect("checked at the call");
                        continue;
                    }
                    regs[0] = if regs[0] == 0 { l.count } else { next };
                }
                depth -= 1;
                regs[10] = frame_pointer(depth - 1);
                pc = usize::try_from(frame.return_pc).expect("set from a pc");
                continue;
            }
        }
        pc += 1;
    }
}

fn alu64(op: AluOp, d: u64, s: u64) -> u64 {
    match op {
        AluOp::Add => d.wrapping_add(s),
        AluOp::Sub => d.wrapping_sub(s),
        AluOp::Mul => d.wrapping_mul(s),
        AluOp::Div => d.checked_div(s).unwrap_or(0),
        // wrapping_div(MIN, -1) = MIN: Linux rewrites sdiv by -1 into neg, which wraps the same.
        AluOp::Sdiv => {
            if s == 0 {
                0
            } else {
                (d as i64).wrapping_div(s as i64) as u64
            }
        }
        AluOp::Mod => d.checked_rem(s).unwrap_or(d),
        // wrapping_rem(MIN, -1) = 0: Linux rewrites smod by -1 into dst = 0.
        AluOp::Smod => {
            if s == 0 {
                d
            } else {
                (d as i64).wrapping_rem(s as i64) as u64
            }
        }
        AluOp::Or => d | s,
        AluOp::And => d & s,
        AluOp::Lsh => d << (s & 63),
        AluOp::Rsh => d >> (s & 63),
        AluOp::Arsh => ((d as i64) >> (s & 63)) as u64,
        AluOp::Xor => d ^ s,
        AluOp::Mov => s,
    }
}

fn alu32(op: AluOp, d: u32, s: u32) -> u32 {
    match op {
        AluOp::Add => d.wrapping_add(s),
        AluOp::Sub => d.wrapping_sub(s),
        AluOp::Mul => d.wrapping_mul(s),
        AluOp::Div => d.checked_div(s).unwrap_or(0),
        AluOp::Sdiv => {
            if s == 0 {
                0
            } else {
                (d as i32).wrapping_div(s as i32) as u32
            }
        }
        AluOp::Mod => d.checked_rem(s).unwrap_or(d),
        AluOp::Smod => {
            if s == 0 {
                d
            } else {
                (d as i32).wrapping_rem(s as i32) as u32
            }
        }
        AluOp::Or => d | s,
        AluOp::And => d & s,
        AluOp::Lsh => d << (s & 31),
        AluOp::Rsh => d >> (s & 31),
        AluOp::Arsh => ((d as i32) >> (s & 31)) as u32,
        AluOp::Xor => d ^ s,
        AluOp::Mov => s,
    }
}

fn compare64(cond: Cond, d: u64, s: u64) -> bool {
    match cond {
        Cond::Eq => d == s,
        Cond::Gt => d > s,
        Cond::Ge => d >= s,
        Cond::Lt => d < s,
        Cond::Le => d <= s,
        Cond::Set => d & s != 0,
        Cond::Ne => d != s,
        Cond::Sgt => (d as i64) > (s as i64),
        Cond::Sge => (d as i64) >= (s as i64),
        Cond::Slt => (d as i64) < (s as i64),
        Cond::Sle => (d as i64) <= (s as i64),
    }
}

fn compare32(cond: Cond, d: u32, s: u32) -> bool {
    match cond {
        Cond::Eq => d == s,
        Cond::Gt => d > s,
        Cond::Ge => d >= s,
        Cond::Lt => d < s,
        Cond::Le => d <= s,
        Cond::Set => d & s != 0,
        Cond::Ne => d != s,
        Cond::Sgt => (d as i32) > (s as i32),
        Cond::Sge => (d as i32) >= (s as i32),
        Cond::Slt => (d as i32) < (s as i32),
        Cond::Sle => (d as i32) <= (s as i32),
    }
}

/// Sign-extends the low `size` bytes of `v` to 64 bits.
fn sign_extend(v: u64, size: u8) -> u64 {
    match size {
        1 => i64::from(v as i8) as u64,
        2 => i64::from(v as i16) as u64,
        4 => i64::from(v as i32) as u64,
        _ => v,
    }
}
