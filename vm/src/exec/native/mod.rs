//! The native tier: a program compiled to x86-64, run with the interpreter's exact semantics.
//!
//! Why: the compaction program executes ~1,800 instructions per entry, and the simulated kernel
//! runs it for every compaction; at the interpreter's ~185 M instructions/s a 256 MiB
//! compaction workload takes minutes. Compiled, the same instructions run natively while every
//! observable stays the interpreter's: results, memory effects, faults and their messages, and
//! the executed-instruction count the simulator's CPU model charges.
//!
//! How the two tiers share one run ([`run`]):
//! * The run's registers, pc, instruction count and call frames live in one [`State`] that both
//!   tiers read and write (`repr(C)`, fixed offsets for the machine code).
//! * Compiled code handles the common cases and *exits* to the driver, with the state exactly as
//!   the interpreter would have it before the instruction, for anything else: a helper call,
//!   division, atomics, an access its inline checks do not prove safe, a deep call, the budget.
//!   The driver then runs that one instruction in the interpreter ([`super::interp::step`]) and
//!   re-enters compiled code. So every fault is raised by the interpreter, with its message.
//! * Instruction counting is per basic block: entering a block adds its length and checks the
//!   budget first (if it would run out inside the block, the interpreter runs those
//!   instructions one by one); an exit inside a block subtracts what did not run.
//! * Memory: every access is checked against a per-slot table built from the run's regions
//!   ([`Memory::native_layout`]); stack accesses through r10 with a constant offset inside the
//!   frame are proven at compile time (r10 is read-only, so it always points at the frame top).
//!
//! Only on x86-64 with BMI2 (variable shifts on any register); elsewhere programs run in the
//! interpreter. Register mapping (as Linux's JIT, so helper arguments would already sit in the
//! System V argument registers): r0 rax, r1 rdi, r2 rsi, r3 rdx, r4 rcx, r5 r8, r6 rbx,
//! r7 r13, r8 r14, r9 r15; r10 is not kept in a register (read from the context); r12 holds
//! the context, rbp the host address of the current frame's top, r9-r11 are scratch.

mod codegen;
mod exec_mem;
mod x64;

use std::fmt;

use super::error::{LoadError, RunError};
use super::helper::Helpers;
use super::interp::{self, State};
use super::memory::{frame_pointer, Memory, NativeSlot, NATIVE_SLOTS, STACK_FRAME_BYTES};
use super::program::Op;
use super::{Limits, RunResult};
use exec_mem::ExecMem;

/// Largest machine-code size compiled; a bigger program stays in the interpreter.
const CODE_BYTES_MAX: usize = 256 << 20;

/// What compiled code shares with the driver, at offsets the code generator bakes in.
#[repr(C)]
pub(crate) struct NativeCtx {
    state: State,
    insns_max: u64,
    /// r10 of the current frame (the virtual address one past its top byte).
    fp_virtual: u64,
    /// The host address of the current frame's top (loaded into rbp on entry).
    fp_host: u64,
    /// The host address of frame 0's first byte.
    stack_host: u64,
    /// Native address per instruction (see [`NativeCode::entries`]).
    entry_table: u64,
    /// [`EXIT_DONE`] or [`EXIT_STEP`].
    exit_kind: u64,
    saved_rsp: u64,
    /// `call_helper`, called by compiled code for a helper call.
    helper_fn: u64,
    /// The helper id of the call in progress (its pc is `state.pc`).
    helper_id: u64,
    /// The helper's result.
    helper_r0: u64,
    /// The run's [`HelperEnv`].
    helper_env: *mut HelperEnv<'static, 'static, 'static>,
    slots: [NativeSlot; NATIVE_SLOTS],
}

// SAFETY: the raw pointers in `slots` and `stack_host` are only dereferenced during a run, by
// the thread running it, and are re-derived from the run's `Memory` before every entry.
unsafe impl Send for NativeCtx {}

/// The main function returned; r0 is in `state.regs[0]`.
const EXIT_DONE: u64 = 0;
/// The interpreter must run the instruction at `state.pc`.
const EXIT_STEP: u64 = 1;
/// A helper failed or panicked: the [`HelperEnv`] holds what.
const EXIT_HELPER_FAILED: u64 = 2;

impl NativeCtx {
    /// A context for [`run`]; big (a few KiB), so a [`super::Vm`] keeps one.
    pub(crate) fn new() -> Box<NativeCtx> {
        Box::new(NativeCtx {
            state: State::start(0),
            insns_max: 0,
            fp_virtual: 0,
            fp_host: 0,
            stack_host: 0,
            entry_table: 0,
            exit_kind: EXIT_STEP,
            saved_rsp: 0,
            helper_fn: call_helper as *const () as usize as u64,
            helper_id: 0,
            helper_r0: 0,
            helper_env: std::ptr::null_mut(),
            slots: [NativeSlot::UNMAPPED; NATIVE_SLOTS],
        })
    }
}

impl fmt::Debug for NativeCtx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NativeCtx")
            .field("pc", &self.state.pc)
            .field("insns_executed", &self.state.insns_executed)
            .finish_non_exhaustive()
    }
}

/// A program compiled to machine code.
pub(crate) struct NativeCode {
    code: ExecMem,
    /// Offset of `enter(ctx, target)`.
    enter_offset: usize,
    /// Native address where instruction `pc` may be entered: a block start's prologue (which
    /// counts and checks the block), or the instruction itself inside a block; 0 for the
    /// second half of an `lddw`.
    entries: Vec<u64>,
    /// Whether `pc` starts a block.
    leader: Vec<bool>,
    /// Instructions from `pc` to the end of its block, `pc` included.
    remaining: Vec<u64>,
    code_bytes: usize,
}

impl fmt::Debug for NativeCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NativeCode")
            .field("insns", &self.entries.len())
            .field("code_bytes", &self.code_bytes)
            .finish_non_exhaustive()
    }
}

/// Whether this host can run compiled programs (x86-64 with BMI2).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("bmi2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

impl NativeCode {
    /// Compiles `ops`; `None` when this host cannot run native code or the code is too big.
    pub(crate) fn compile(ops: &[Op]) -> Option<NativeCode> {
        if !available() {
            return None;
        }
        let compiled = codegen::compile(ops);
        if compiled.code.len() > CODE_BYTES_MAX {
            return None;
        }
        let code_bytes = compiled.code.len();
        let code = ExecMem::new(&compiled.code)?;
        let entries = compiled
            .entries
            .iter()
            .map(|e| e.map_or(0, |off| code.addr(off) as u64))
            .collect();
        Some(NativeCode {
            enter_offset: compiled.enter_offset,
            entries,
            leader: compiled.leader,
            remaining: compiled.remaining,
            code_bytes,
            code,
        })
    }

    /// Bytes of machine code.
    pub(crate) fn code_bytes(&self) -> usize {
        self.code_bytes
    }
}

/// The signature of the compiled entry point: runs from `target` until an exit.
type EnterFn = unsafe extern "sysv64" fn(ctx: *mut NativeCtx, target: u64);

/// What a helper call from compiled code needs, and what it leaves when it fails.
struct HelperEnv<'a, 'm, 'r> {
    memory: &'a mut Memory<'m, 'r>,
    helpers: &'a mut Helpers,
    error: Option<RunError>,
    panic: Option<Box<dyn std::any::Any + Send>>,
}

/// Called by compiled code for `call id` (not `bpf_loop`) with r1..r5 saved in
/// `state.regs`, `state.pc` and `helper_id` set: runs the helper as the interpreter would.
/// Returns 0 with the result in `helper_r0`, or 1 with the error (or panic) in the env; a
/// panic must not unwind through compiled code.
unsafe extern "sysv64" fn call_helper(ctx: *mut NativeCtx) -> u64 {
    // SAFETY: compiled code passes the context it runs on; `run` set `helper_env` to its live
    // env for the whole run, and nothing else touches either while the helper runs.
    let ctx = unsafe { &mut *ctx };
    let env = unsafe { &mut *ctx.helper_env };
    let pc = usize::try_from(ctx.state.pc).expect("pc fits the program");
    let id = u32::try_from(ctx.helper_id).expect("helper ids are u32");
    let depth = usize::try_from(ctx.state.depth).expect("depth <= FRAMES_MAX");
    // Helpers read and write program memory (a lookup's key on the stack) through `memory`.
    env.memory.set_frames_active(depth);
    let r = &ctx.state.regs;
    let args = [r[1], r[2], r[3], r[4], r[5]];
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        match env.helpers.get_mut(id) {
            None => Err(RunError::from(LoadError::UnknownHelper { pc, id })),
            Some(helper) => helper
                .call(args, env.memory)
                .map_err(|source| RunError::Helper { pc, id, source }),
        }
    }));
    match outcome {
        Ok(Ok(r0)) => {
            ctx.helper_r0 = r0;
            0
        }
        Ok(Err(e)) => {
            env.error = Some(e);
            1
        }
        Err(payload) => {
            env.panic = Some(payload);
            1
        }
    }
}

/// Runs a program from instruction 0 until the main function exits, mixing compiled code and
/// interpreter steps; observably identical to [`interp::run`].
pub(crate) fn run(
    native: &NativeCode,
    ops: &[Op],
    ctx: &mut NativeCtx,
    memory: &mut Memory<'_, '_>,
    helpers: &mut Helpers,
    limits: &Limits,
) -> Result<RunResult, RunError> {
    assert_eq!(
        native.entries.len(),
        ops.len(),
        "code compiled from these ops"
    );
    ctx.state = State::start(memory.ctx_len_bytes());
    ctx.insns_max = limits.insns_max;
    ctx.entry_table = native.entries.as_ptr() as u64;
    ctx.slots = [NativeSlot::UNMAPPED; NATIVE_SLOTS];
    let mut env = HelperEnv {
        memory,
        helpers,
        error: None,
        panic: None,
    };
    // Lifetimes erased for the trampoline; the pointer is cleared before `env` goes.
    ctx.helper_env = std::ptr::from_mut(&mut env).cast();
    let result = drive(native, ops, ctx, &mut env, limits);
    ctx.helper_env = std::ptr::null_mut();
    if let Some(payload) = env.panic.take() {
        std::panic::resume_unwind(payload);
    }
    result
}

fn drive(
    native: &NativeCode,
    ops: &[Op],
    ctx: &mut NativeCtx,
    env: &mut HelperEnv<'_, '_, '_>,
    limits: &Limits,
) -> Result<RunResult, RunError> {
    // SAFETY: `enter_offset` is the entry stub `codegen` emitted with this signature.
    let enter: EnterFn = unsafe { std::mem::transmute(native.code.addr(native.enter_offset)) };
    loop {
        let pc = usize::try_from(ctx.state.pc).expect("pc fits the program");
        let target = native.entries[pc];
        let enter_here = target != 0
            && (native.leader[pc] || {
                // Inside a block: count the rest of it now, as its prologue would have.
                let rest = native.remaining[pc];
                let fits = ctx.state.insns_executed + rest <= limits.insns_max;
                if fits {
                    ctx.state.insns_executed += rest;
                }
                fits
            });
        if enter_here {
            // Re-derived before every entry: the interpreter wrote through `memory` since.
            ctx.stack_host = env.memory.native_layout(&mut ctx.slots) as u64;
            let depth = usize::try_from(ctx.state.depth).expect("depth <= FRAMES_MAX");
            ctx.fp_virtual = frame_pointer(depth - 1);
            ctx.fp_host = ctx.stack_host + (depth * STACK_FRAME_BYTES) as u64;
            // SAFETY: the code checks every host access against `ctx.slots` and the stack
            // bounds (the regions behind them are borrowed by `memory` for this whole run and
            // do not move), keeps to the frames of `ctx.stack_host`, and jumps only to
            // addresses of its own (`entries`). It returns with `ctx.state` consistent.
            unsafe { enter(std::ptr::from_mut(ctx), target) };
            let depth = usize::try_from(ctx.state.depth).expect("depth <= FRAMES_MAX");
            ctx.state.regs[10] = frame_pointer(depth - 1);
            env.memory.set_frames_active(depth);
            match ctx.exit_kind {
                EXIT_DONE => {
                    return Ok(RunResult {
                        r0: ctx.state.regs[0],
                        insns_executed: ctx.state.insns_executed,
                    })
                }
                EXIT_HELPER_FAILED => {
                    return Err(env.error.take().unwrap_or(RunError::Internal {
                        pc,
                        what: "a helper panicked",
                    }))
                }
                _ => {}
            }
        }
        if let Some(result) = interp::step(ops, &mut ctx.state, env.memory, env.helpers, limits)? {
            return Ok(result);
        }
    }
}
