//! Errors of loading and running a program: values that name the instruction index (`pc`).

use std::fmt;

/// Why a program was refused before any instruction ran.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// The byte length is not a whole number of 8-byte instructions.
    #[error("program is {len_bytes} bytes, not a multiple of the 8-byte instruction size")]
    LengthNotMultiple {
        /// Length of the raw program in bytes.
        len_bytes: usize,
    },
    /// The program has no instructions.
    #[error("program is empty")]
    Empty,
    /// The program is longer than Linux accepts.
    #[error("program has {insns} instructions, more than the limit of {insns_max}")]
    TooLong {
        /// Instructions in the program.
        insns: usize,
        /// The limit.
        insns_max: usize,
    },
    /// The opcode byte is not an instruction Linux 6.18 runs (or one this runtime refuses).
    #[error(
        "insn {pc}: unknown or unsupported opcode {opcode:#04x}{}",
        note_suffix(note)
    )]
    UnknownOpcode {
        /// Instruction index.
        pc: usize,
        /// The opcode byte.
        opcode: u8,
        /// What is known about it, if anything.
        note: &'static str,
    },
    /// A field of a known opcode has a value Linux rejects.
    #[error("insn {pc} (opcode {opcode:#04x}): invalid {field} {value}")]
    InvalidField {
        /// Instruction index.
        pc: usize,
        /// The opcode byte.
        opcode: u8,
        /// Which field (e.g. "shift amount", "byte-swap width").
        field: &'static str,
        /// The offending value.
        value: i64,
    },
    /// A register number above r10.
    #[error("insn {pc}: invalid register r{reg}")]
    InvalidRegister {
        /// Instruction index.
        pc: usize,
        /// The register number.
        reg: u8,
    },
    /// An instruction would write the read-only frame pointer r10.
    #[error("insn {pc}: writes r10, the read-only frame pointer")]
    WritesFramePointer {
        /// Instruction index.
        pc: usize,
    },
    /// A 16-byte `lddw` is cut off or its second half is malformed.
    #[error("insn {pc}: incomplete or malformed lddw (second half missing or not opcode 0)")]
    LddwIncomplete {
        /// Instruction index of the first half.
        pc: usize,
    },
    /// A jump or call lands outside the program or inside an `lddw`.
    #[error("insn {pc}: {kind} target {target} is {why} (program has {insns} instructions)")]
    BadTarget {
        /// Instruction index.
        pc: usize,
        /// "jump" or "call".
        kind: &'static str,
        /// The computed target index (may be negative).
        target: i64,
        /// "out of range" or "the second half of an lddw".
        why: &'static str,
        /// Instructions in the program.
        insns: usize,
    },
    /// The last instruction can fall through past the end of the program.
    #[error("insn {pc}: last instruction is neither exit nor an unconditional jump")]
    FallsOffEnd {
        /// Instruction index of the last instruction.
        pc: usize,
    },
    /// A helper call names an id the VM has no helper for.
    #[error("insn {pc}: call to unknown helper id {id}")]
    UnknownHelper {
        /// Instruction index.
        pc: usize,
        /// The helper id (the call's immediate).
        id: u32,
    },
}

fn note_suffix(note: &str) -> String {
    if note.is_empty() {
        String::new()
    } else {
        format!(" ({note})")
    }
}

/// What kind of memory access failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// A load (`ldx`, load-acquire, or a helper reading memory).
    Load,
    /// A store (`st`, `stx`, store-release, or a helper writing memory).
    Store,
    /// An atomic read-modify-write.
    Atomic,
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Access::Load => "load",
            Access::Store => "store",
            Access::Atomic => "atomic",
        })
    }
}

/// A memory access outside every region, or a write to a read-only one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{len_bytes}-byte {access} at {addr:#x}: {why}")]
pub struct MemoryError {
    /// Kind of access.
    pub access: Access,
    /// First virtual address of the access.
    pub addr: u64,
    /// Width of the access in bytes.
    pub len_bytes: u64,
    /// Human-readable reason, naming the region the access started in if any.
    pub why: String,
}

/// A helper's own failure (bad arguments, memory it could not reach, ...).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct HelperError(pub String);

impl HelperError {
    /// A helper error with the given message.
    pub fn new(message: impl Into<String>) -> Self {
        HelperError(message.into())
    }
}

impl From<MemoryError> for HelperError {
    fn from(e: MemoryError) -> Self {
        HelperError(e.to_string())
    }
}

/// Why a run stopped without returning from the main function.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunError {
    /// The program failed a load-time check (e.g. an unknown helper id).
    #[error(transparent)]
    Load(#[from] LoadError),
    /// A load, store or atomic reached memory it may not.
    #[error("insn {pc}: {source}")]
    Memory {
        /// Instruction index.
        pc: usize,
        /// The failed access.
        source: MemoryError,
    },
    /// The instruction budget ran out (a runaway loop, or a budget set too low).
    #[error("instruction budget of {insns_max} exhausted at insn {pc}")]
    InsnBudgetExhausted {
        /// Instruction index about to run.
        pc: usize,
        /// The budget.
        insns_max: u64,
    },
    /// A BPF-to-BPF call would exceed the frame limit.
    #[error("insn {pc}: call nesting exceeds {frames_max} frames")]
    CallDepthExceeded {
        /// Instruction index of the call.
        pc: usize,
        /// The frame limit.
        frames_max: usize,
    },
    /// A helper returned an error.
    #[error("insn {pc}: helper {id} failed: {source}")]
    Helper {
        /// Instruction index of the call.
        pc: usize,
        /// Helper id.
        id: u32,
        /// The helper's error.
        source: HelperError,
    },
    /// The context or an extra memory region was not acceptable (too many, or too large).
    #[error("memory region {name}: {why}")]
    Region {
        /// The region's name ("context" for the context).
        name: String,
        /// What is wrong with it.
        why: String,
    },
    /// The interpreter reached a state load-time validation rules out; reported, not panicked.
    #[error("insn {pc}: internal error: {what}")]
    Internal {
        /// Instruction index.
        pc: usize,
        /// What went wrong.
        what: &'static str,
    },
}
