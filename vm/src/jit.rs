//! Opt-in fast mode: rbpf 0.4.1's x86-64 JIT, for programs Linux's verifier accepted.
//!
//! # DANGER: no memory checks
//!
//! The machine code rbpf emits dereferences whatever address a register holds: no bounds
//! checks, no region table, no instruction budget. A program that reads or writes outside its
//! buffer or its 512-byte stack corrupts the host process; one that loops forever hangs it.
//! Only Linux's verifier, which proves memory safety and termination before a program runs,
//! makes that acceptable, so compiling takes a [`LinuxVerified`] token whose only constructor
//! is `unsafe` and whose contract is "Linux's verifier accepted these exact instructions".
//! Untrusted or unverified programs must use [`crate::exec::Vm`], the checked interpreter.
//!
//! # What is refused, and why
//!
//! [`JitProgram::compile`] refuses, naming the instruction index, every instruction rbpf's JIT
//! does not emit or emits with semantics different from Linux's (read from
//! `rbpf-0.4.1/src/jit.rs`):
//!
//! * ISA v4 (movsx, sign-extending loads, sdiv/smod, 64-bit `bswap`, `gotol`): not emitted;
//! * atomics: rbpf 0.4.1 has no translation for them and panics while compiling one;
//! * `may_goto`: not emitted (it needs a hidden stack counter the kernel's JIT adds);
//! * helper calls: rbpf's helpers are plain `fn` pointers with no state, so none of our
//!   helpers (maps, clocks, `bpf_loop`) can be expressed;
//! * BPF-to-BPF calls: rbpf's JIT calls the callee on the caller's r10, so the callee's stack
//!   frame overlaps its caller's, where Linux gives each frame its own 512 bytes;
//! * `mov32 dst, src`: rbpf emits a 64-bit move, leaving the upper half of `dst` set where
//!   Linux zero-extends;
//! * `mod32 dst, src`: on a zero divisor rbpf skips the instruction, leaving the upper half of
//!   `dst` set where Linux zero-extends (`dst = (u32)dst`);
//! * `le16` / `le32`: rbpf emits nothing, where Linux truncates to 16 / 32 bits;
//! * `lddw` of a callback address (`src_reg = 4`): rbpf would load the raw offset, not the
//!   address our interpreter (and `bpf_loop`) uses;
//! * programs whose machine code exceeds rbpf's fixed one-page (4 KiB) code buffer: rbpf
//!   asserts (panics) while emitting; we catch that and refuse ([`JitError::CodeTooLarge`]).
//!   The assertion's message is still printed by the panic hook, and a `panic = "abort"`
//!   build aborts instead (roughly: past a few hundred instructions).
//!
//! # Calling convention
//!
//! Like [`crate::exec::Vm::run`] (and uBPF): r1 = the buffer's address, r2 = its length,
//! r10 = the top of a 512-byte stack on the host stack. Addresses are host addresses, not the
//! fixed virtual addresses of [`crate::exec`]'s memory model, so a program that returns or
//! stores a pointer sees different values than under the interpreter (or between runs). rbpf's
//! `EbpfVmRaw` cannot give r2 (its JIT entry passes an empty metadata buffer, so r2 = 0);
//! `EbpfVmMbuff` with our buffer as the "metadata buffer" gives exactly r1 = address, r2 =
//! length, so that is the rbpf entry point used.

use std::fmt;

use crate::exec::Program;

/// Proof, by the caller's word, that Linux's verifier accepted `program`'s exact instructions.
#[derive(Debug, Clone, Copy)]
pub struct LinuxVerified<'p> {
    program: &'p Program,
}

impl<'p> LinuxVerified<'p> {
    /// Vouches for `program`.
    ///
    /// # Safety
    ///
    /// Linux's verifier must have accepted exactly these instructions (`program.as_bytes()`,
    /// after map relocation) for a program type whose context is a plain buffer of the length
    /// later passed to [`JitProgram::run`] — e.g. a successful `BPF_PROG_LOAD` of the same
    /// bytes. The JIT checks no memory access and no loop bound: an unverified program can
    /// corrupt or hang the host process.
    pub unsafe fn assume_verified(program: &'p Program) -> Self {
        LinuxVerified { program }
    }

    /// The program vouched for.
    pub fn program(&self) -> &'p Program {
        self.program
    }
}

/// Why a program was not JIT-compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JitError {
    /// The JIT exists only for x86-64 (non-Windows) hosts.
    #[error("rbpf's JIT only targets x86-64 (non-Windows); this host is {arch}")]
    UnsupportedHost {
        /// `std::env::consts::ARCH`.
        arch: &'static str,
    },
    /// An instruction rbpf's JIT lacks or gets wrong.
    #[error("insn {pc} (opcode {opcode:#04x}): {what} is not supported by rbpf's JIT: {why}")]
    Unsupported {
        /// Instruction index.
        pc: usize,
        /// The opcode byte.
        opcode: u8,
        /// The instruction, in words (e.g. "atomic").
        what: &'static str,
        /// Why it is refused.
        why: &'static str,
    },
    /// rbpf's machine code for the program does not fit its one-page code buffer.
    #[error("program of {insns} instructions does not fit rbpf's fixed 4 KiB JIT code buffer")]
    CodeTooLarge {
        /// Instruction slots in the program.
        insns: usize,
    },
    /// rbpf's own verifier or compiler returned an error.
    #[error("rbpf refused the program: {0}")]
    Rbpf(String),
}

/// A program compiled to x86-64 machine code by rbpf's JIT. See the module docs: no memory
/// checks at all.
pub struct JitProgram<'p> {
    program: &'p Program,
    #[cfg(all(target_arch = "x86_64", not(windows)))]
    vm: rbpf::EbpfVmMbuff<'p>,
}

impl fmt::Debug for JitProgram<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // rbpf's VM has no Debug; the instructions identify the compiled program.
        f.debug_struct("JitProgram")
            .field("insns", &self.program.len_insns())
            .finish_non_exhaustive()
    }
}

impl<'p> JitProgram<'p> {
    /// Compiles the vouched-for program, or refuses it naming the first unsupported
    /// instruction.
    pub fn compile(verified: LinuxVerified<'p>) -> Result<JitProgram<'p>, JitError> {
        let program = verified.program;
        check_supported(program)?;
        compile_checked(program)
    }

    /// The program this was compiled from.
    pub fn program(&self) -> &'p Program {
        self.program
    }

    /// Runs the machine code with r1 = `mem`'s address, r2 = `mem.len()`; returns r0.
    ///
    /// Safe because [`LinuxVerified`]'s contract covers what the code may do with `mem`: it
    /// must be the kind and length of context the verifier accepted the program for.
    #[cfg(all(target_arch = "x86_64", not(windows)))]
    pub fn run(&self, mem: &mut [u8]) -> u64 {
        // Our buffer goes in as rbpf's "metadata buffer" (r1 = its address, r2 = its length);
        // rbpf's packet pointer (used only by LD_ABS/LD_IND, which `Program` refuses) stays
        // empty.
        let mut no_packet: [u8; 0] = [];
        // SAFETY: the code was compiled from instructions Linux's verifier accepted
        // (`LinuxVerified`'s contract), with every instruction whose rbpf translation differs
        // from Linux's refused, so it accesses only `mem` (exclusively borrowed for the call)
        // and its own stack, and terminates. The code buffer lives as long as `self.vm`.
        let result = unsafe { self.vm.execute_program_jit(&mut no_packet, mem) };
        // rbpf returns an error only when no code was compiled, which `compile` rules out.
        result.expect("JitProgram holds compiled code")
    }

    /// Without rbpf's JIT there is no [`JitProgram`] to run ([`JitProgram::compile`] refuses).
    #[cfg(not(all(target_arch = "x86_64", not(windows))))]
    pub fn run(&self, _mem: &mut [u8]) -> u64 {
        unreachable!("JitProgram::compile refuses on hosts without rbpf's JIT")
    }
}

#[cfg(all(target_arch = "x86_64", not(windows)))]
fn compile_checked(program: &Program) -> Result<JitProgram<'_>, JitError> {
    let bytes = program.as_bytes();
    let mut vm = rbpf::EbpfVmMbuff::new(Some(bytes)).map_err(|e| JitError::Rbpf(e.to_string()))?;
    // rbpf's emitter asserts that each write fits its one-page buffer; a panic here is that
    // assertion (every other panic source — atomics, tail calls — was refused above). The
    // partially written buffer is freed by JitMemory's Drop during unwinding.
    let compiled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| vm.jit_compile()));
    match compiled {
        Ok(Ok(())) => Ok(JitProgram { program, vm }),
        Ok(Err(e)) => Err(JitError::Rbpf(e.to_string())),
        Err(_) => Err(JitError::CodeTooLarge {
            insns: program.len_insns(),
        }),
    }
}

#[cfg(not(all(target_arch = "x86_64", not(windows))))]
fn compile_checked(_program: &Program) -> Result<JitProgram<'_>, JitError> {
    Err(JitError::UnsupportedHost {
        arch: std::env::consts::ARCH,
    })
}

// Opcode bytes and fields: rbpf's definitions where it has them; `may_goto`'s class-op and the
// mode mask from the kernel's uapi `bpf.h` (rbpf 0.4.1 predates them).
use rbpf::ebpf::{
    BPF_ALU as CLS_ALU, BPF_ALU64 as CLS_ALU64, BPF_ALU_OP_MASK as OP_MASK, BPF_CALL as OP_CALL,
    BPF_CLS_MASK as CLS_MASK, BPF_DIV as OP_DIV, BPF_END as OP_END, BPF_JA as OP_JA,
    BPF_JMP as CLS_JMP, BPF_JMP32 as CLS_JMP32, BPF_LD as CLS_LD, BPF_LDX as CLS_LDX,
    BPF_MEM as MODE_MEM, BPF_MOD as OP_MOD, BPF_MOV as OP_MOV, BPF_ST as CLS_ST,
    BPF_STX as CLS_STX, BPF_X as SRC_X,
};
const MODE_MASK: u8 = 0xe0;
const OP_JCOND: u8 = 0xe0;

/// Refuses the first instruction rbpf's JIT lacks or translates differently from Linux.
///
/// `Program::from_raw` has already refused everything Linux does not run (unknown opcodes,
/// LD_ABS/LD_IND, tail calls, kfuncs, unresolved map references), so this only has to sort
/// valid instructions into what rbpf's JIT gets right and what it does not.
fn check_supported(program: &Program) -> Result<(), JitError> {
    let bytes = program.as_bytes();
    let mut pc = 0;
    while pc < program.len_insns() {
        let insn = rbpf::ebpf::get_insn(bytes, pc);
        let refuse = |what, why| {
            Err(JitError::Unsupported {
                pc,
                opcode: insn.opc,
                what,
                why,
            })
        };
        let class = insn.opc & CLS_MASK;
        let op = insn.opc & OP_MASK;
        match class {
            CLS_LD => {
                // The only LD instruction `Program` accepts is lddw (two slots).
                if insn.src != 0 {
                    return refuse(
                        "lddw of a callback address",
                        "rbpf loads the raw offset, not the callback address",
                    );
                }
                pc += 1;
            }
            CLS_LDX if insn.opc & MODE_MASK != MODE_MEM => {
                return refuse("sign-extending load (ISA v4)", "not emitted");
            }
            CLS_ST | CLS_STX if insn.opc & MODE_MASK != MODE_MEM => {
                return refuse("atomic", "rbpf's JIT has no translation and panics on it");
            }
            CLS_LDX | CLS_ST | CLS_STX => {}
            CLS_ALU | CLS_ALU64 => {
                let wide = class == CLS_ALU64;
                if insn.off != 0 && matches!(op, OP_DIV | OP_MOD) {
                    return refuse("sdiv/smod (ISA v4)", "not emitted");
                }
                if insn.off != 0 && op == OP_MOV {
                    return refuse("movsx (ISA v4)", "not emitted");
                }
                if op == OP_END && wide {
                    return refuse("bswap (ISA v4)", "not emitted");
                }
                if op == OP_END && insn.opc & SRC_X == 0 && insn.imm != 64 {
                    return refuse(
                        "le16/le32",
                        "rbpf emits nothing where Linux truncates the register",
                    );
                }
                if op == OP_MOD && !wide && insn.opc & SRC_X != 0 {
                    return refuse(
                        "mod32 by a register",
                        "on a zero divisor rbpf leaves dst's upper half where Linux clears it",
                    );
                }
                if op == OP_MOV && !wide && insn.opc & SRC_X != 0 {
                    return refuse(
                        "mov32 from a register",
                        "rbpf emits a 64-bit move where Linux zero-extends",
                    );
                }
            }
            CLS_JMP32 if op == OP_JA => {
                return refuse("gotol (ISA v4)", "not emitted");
            }
            CLS_JMP | CLS_JMP32 => match op {
                OP_CALL if insn.src == 0 => {
                    return refuse(
                        "helper call",
                        "rbpf's helpers are stateless fn pointers; ours are not",
                    );
                }
                OP_CALL => {
                    return refuse(
                        "BPF-to-BPF call",
                        "rbpf runs the callee on the caller's stack frame",
                    );
                }
                OP_JCOND => {
                    return refuse("may_goto", "not emitted");
                }
                // Conditional jumps, ja and exit: emitted with Linux's semantics.
                _ => {}
            },
            _ => unreachable!("the class field has 3 bits"),
        }
        pc += 1;
    }
    Ok(())
}
