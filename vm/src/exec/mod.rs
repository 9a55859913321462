//! Running eBPF instructions with Linux's semantics, deterministically and memory-safely.
//!
//! ```text
//! Program::from_raw(bytes)  -> validated, decoded ops (unknown opcodes, bad targets, kfuncs,
//!                              torn lddw pairs fail here, naming the instruction index)
//! Vm::run(&program, ctx, limits) -> RunResult { r0, insns_executed }
//! ```
//!
//! # Why our own interpreter and not rbpf's
//!
//! rbpf 0.4.1 is used where it is right: its opcode constants (`rbpf::ebpf`) and its
//! instruction decoder (`ebpf::get_insn`) feed [`Program::from_raw`]. Its interpreter is not
//! used, because lowering our programs onto it cannot fix what is wrong underneath:
//!
//! * memory: its stack/context checks are full-width, but extra regions (where map values
//!   would go) are added with `register_allowed_memory`, which checks only an access's first
//!   byte; every access is a raw host pointer in `unsafe` code, so a missed check corrupts the
//!   host, and pointer values (hence any program that stores or compares one) vary by run;
//! * stack: one 512-byte stack for all frames (a call moves r10 down 256 bytes), where Linux
//!   gives each of up to 8 frames its own;
//! * ISA v4, atomics, may_goto: missing. Some could be lowered (movsx to lsh+arsh, bswap to
//!   be, gotol to ja when in range), but sdiv/smod edge cases, fetching atomics and may_goto
//!   need a scratch register the 11-register ISA lacks (the kernel uses its hidden `BPF_REG_AX`
//!   for exactly this), and every rewrite shifts jump offsets and instruction counts;
//! * robustness: the interpreter treats unknown opcodes as `unreachable!()` (trusting its
//!   verifier), computes jump targets in `i16` (wrong past 32 Ki instructions), and has no
//!   instruction budget;
//! * helpers are plain `fn` pointers with no state, so per-VM helper state (maps) is impossible.
//!
//! On the 292 bpf_conformance vectors Linux 6.18 accepts, rbpf's interpreter returns the
//! expected r0 on 204 in a release build (203 without helper 5, DESIGN.md §4's figure; 202 with
//! overflow checks on, where it panics negating `i64::MIN`); this interpreter on all 292
//! (`vm/tests/conformance.rs` measures both). rbpf's JIT (no memory checks at all) remains a
//! candidate opt-in fast mode for objects the kernel's verifier has accepted.

mod disasm;
mod error;
mod helper;
mod interp;
mod memory;
mod native;
mod program;

pub use disasm::disassemble;
pub use error::{Access, HelperError, LoadError, MemoryError, RunError};
pub use helper::{Helper, Helpers};
pub use interp::{BPF_FUNC_LOOP, BPF_LOOP_ITERATIONS_MAX, MAY_GOTO_LOOPS_MAX};
pub use memory::{
    frame_pointer, region_base, Memory, Region, CTX_BASE, FRAMES_MAX, REGIONS_EXTRA_MAX,
    REGION_BYTES_MAX, STACK_FRAMES_BASE, STACK_FRAME_BYTES, STACK_FRAME_STRIDE_BYTES,
};
pub use native::available as native_available;
pub use program::{
    callback_address, encode_insn, Program, CALLBACK_ADDR_BASE, INSN_SIZE_BYTES, PROG_INSNS_MAX,
};

/// Default instruction budget of one run: 2^28 (~268 M) instructions.
///
/// Large enough that a verifier-legal `may_goto` loop ([`MAY_GOTO_LOOPS_MAX`] = 8 Mi
/// iterations per frame) with a body of up to 32 instructions ends by may_goto, not by the
/// budget; small enough that a runaway loop becomes an error after well under a second of
/// interpretation (~500 M simple instructions/s measured here, release build) rather than
/// hanging a test.
pub const INSNS_MAX_DEFAULT: u64 = 1 << 28;

/// Per-run limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Instructions a run may execute (an `lddw` counts once) before it fails.
    pub insns_max: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            insns_max: INSNS_MAX_DEFAULT,
        }
    }
}

/// The outcome of a run that returned from its main function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunResult {
    /// r0 at the main function's `exit`, all 64 bits.
    pub r0: u64,
    /// Instructions executed, `exit` included.
    pub insns_executed: u64,
}

/// How a [`Vm`] executes instructions. Both tiers are observably identical — same results,
/// memory effects, errors and instruction counts (`tests/native_tier.rs` checks it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// The checked interpreter only.
    Interpreter,
    /// Machine code where the host supports it ([`native_available`]), falling back to the
    /// interpreter for what compiled code hands over, and for whole programs elsewhere.
    Native,
}

/// One eBPF machine: its helpers and a reusable stack. Runs are independent of each other.
#[derive(Debug)]
pub struct Vm {
    helpers: Helpers,
    stack: Vec<u8>,
    tier: Tier,
    native_ctx: Option<Box<native::NativeCtx>>,
}

impl Default for Vm {
    fn default() -> Self {
        Vm::new()
    }
}

impl Vm {
    /// A VM with no helpers.
    pub fn new() -> Self {
        Vm {
            helpers: Helpers::default(),
            stack: vec![0; FRAMES_MAX * STACK_FRAME_BYTES],
            tier: Tier::Native,
            native_ctx: None,
        }
    }

    /// Chooses how runs execute (default [`Tier::Native`]).
    pub fn set_tier(&mut self, tier: Tier) {
        self.tier = tier;
    }

    /// How runs execute.
    pub fn tier(&self) -> Tier {
        self.tier
    }

    /// Registers `helper` as helper `id`, returning the helper it replaces, if any.
    pub fn register_helper(
        &mut self,
        id: u32,
        helper: impl Helper + 'static,
    ) -> Option<Box<dyn Helper>> {
        self.helpers.insert(id, Box::new(helper))
    }

    /// The VM's helpers.
    pub fn helpers(&self) -> &Helpers {
        &self.helpers
    }

    /// Checks that every helper `program` calls is registered (`bpf_loop` is built in).
    pub fn check(&self, program: &Program) -> Result<(), LoadError> {
        match program
            .helper_calls()
            .iter()
            .find(|&&(_, id)| id != BPF_FUNC_LOOP && !self.helpers.contains(id))
        {
            Some(&(pc, id)) => Err(LoadError::UnknownHelper { pc, id }),
            None => Ok(()),
        }
    }

    /// Runs `program` with r1 = address of `ctx`, r2 = its length, r10 = frame pointer.
    pub fn run(
        &mut self,
        program: &Program,
        ctx: &mut [u8],
        limits: &Limits,
    ) -> Result<RunResult, RunError> {
        self.run_with_regions(program, ctx, &mut [], limits)
    }

    /// Like [`Vm::run`], with `regions[i]` mapped at [`region_base`]`(i)`.
    pub fn run_with_regions(
        &mut self,
        program: &Program,
        ctx: &mut [u8],
        regions: &mut [Region<'_>],
        limits: &Limits,
    ) -> Result<RunResult, RunError> {
        self.check(program)?;
        if regions.len() > REGIONS_EXTRA_MAX {
            return Err(RunError::Region {
                name: format!("#{}", regions.len() - 1),
                why: format!(
                    "{} extra regions, more than the limit of {REGIONS_EXTRA_MAX}",
                    regions.len()
                ),
            });
        }
        let too_big = |name: &str, len: usize| RunError::Region {
            name: name.to_string(),
            why: format!("{len} bytes, more than the limit of {REGION_BYTES_MAX}"),
        };
        if ctx.len() as u64 > REGION_BYTES_MAX {
            return Err(too_big("context", ctx.len()));
        }
        if let Some(r) = regions
            .iter()
            .find(|r| r.len_bytes() as u64 > REGION_BYTES_MAX)
        {
            return Err(too_big(r.name(), r.len_bytes()));
        }
        let mut memory = Memory::new(&mut self.stack, ctx, regions);
        match (self.tier, program.native()) {
            (Tier::Native, Some(code)) => {
                let native_ctx = self.native_ctx.get_or_insert_with(native::NativeCtx::new);
                native::run(
                    code,
                    program.ops(),
                    native_ctx,
                    &mut memory,
                    &mut self.helpers,
                    limits,
                )
            }
            _ => interp::run(program.ops(), &mut memory, &mut self.helpers, limits),
        }
    }
}
