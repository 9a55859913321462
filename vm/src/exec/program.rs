//! Loading raw instructions: structural validation and decoding into [`Op`]s.
//!
//! Everything the interpreter relies on is proven here, once, so that the run loop has no
//! "impossible" cases: every opcode is known, every register is r0..=r10 and r10 is never
//! written, every jump and call lands on an instruction start inside the program, `lddw`
//! pairs are whole, and the program cannot fall off its end. Field values Linux's verifier
//! rejects outright (shift by an out-of-range immediate, division by an immediate zero, a
//! byte-swap width other than 16/32/64) are rejected too, so we never have to invent a
//! meaning for them. This is not a verifier: pointer provenance and bounds are checked at
//! run time by the memory model instead.

use rbpf::ebpf;

use std::sync::{Arc, OnceLock};

use super::error::LoadError;
use super::native::NativeCode;
use crate::insn::{PSEUDO_CALL, PSEUDO_FUNC, PSEUDO_KFUNC_CALL};

/// Instructions a program may have: Linux's limit for privileged programs
/// (`BPF_COMPLEXITY_LIMIT_INSNS`).
pub const PROG_INSNS_MAX: usize = 1_000_000;

/// Size of one instruction slot in bytes.
pub const INSN_SIZE_BYTES: usize = ebpf::INSN_SIZE;

// Opcode pieces rbpf 0.4.1 predates (ISA v4, atomics, may_goto); values from the kernel's
// uapi `bpf.h` / RFC 9669.
const BPF_ATOMIC: u8 = 0xc0;
const BPF_MEMSX: u8 = 0x80;
const BPF_JCOND: u8 = 0xe0;
const BPF_MODE_MASK: u8 = 0xe0;
const BPF_SIZE_MASK: u8 = 0x18;
const BPF_SRC_X: u8 = ebpf::BPF_X;
const BPF_FETCH: i32 = 0x01;
const BPF_XCHG: i32 = 0xe0 | BPF_FETCH;
const BPF_CMPXCHG: i32 = 0xf0 | BPF_FETCH;
const BPF_LOAD_ACQ: i32 = 0x100;
const BPF_STORE_REL: i32 = 0x110;
const BPF_MAY_GOTO: u8 = 0;
const REG_FP: u8 = 10;

/// One instruction as the little-endian 64-bit word Linux and the vm read: opcode in byte 0,
/// dst (low nibble) and src (high nibble) registers in byte 1, the offset in bytes 2-3 and the
/// immediate in bytes 4-7. (`.to_le_bytes()` gives the 8 bytes of a raw program.)
pub const fn encode_insn(opcode: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    opcode as u64
        | ((dst & 0xf) as u64) << 8
        | ((src & 0xf) as u64) << 12
        | (off as u16 as u64) << 16
        | (imm as u32 as u64) << 32
}

/// The second operand of an ALU op, a store or a conditional jump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Operand {
    /// A register number (0..=10).
    Reg(u8),
    /// The instruction's immediate, to be widened by the op's own rule.
    Imm(i32),
}

/// A two-operand arithmetic op (`dst = dst OP src`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AluOp {
    Add,
    Sub,
    Mul,
    Div,
    Sdiv,
    Mod,
    Smod,
    Or,
    And,
    Lsh,
    Rsh,
    Arsh,
    Xor,
    Mov,
}

/// An atomic read-modify-write op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AtomicOp {
    Add,
    Or,
    And,
    Xor,
    Xchg,
    CmpXchg,
}

/// A conditional jump's comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cond {
    Eq,
    Gt,
    Ge,
    Lt,
    Le,
    Set,
    Ne,
    Sgt,
    Sge,
    Slt,
    Sle,
}

/// A decoded, validated instruction. Targets are absolute instruction indices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    /// `dst = dst OP src`, 64-bit (`wide`) or 32-bit with zero-extension.
    Alu {
        wide: bool,
        op: AluOp,
        dst: u8,
        src: Operand,
    },
    /// `dst = -dst`.
    Neg { wide: bool, dst: u8 },
    /// `dst = sign_extend(src, bits)` (ISA v4 `movsx`).
    MovSx {
        wide: bool,
        dst: u8,
        src: u8,
        bits: u8,
    },
    /// Keep the low `bits`, zero-extended (`le` on a little-endian target).
    ToLe { dst: u8, bits: u8 },
    /// Reverse the low `bits / 8` bytes, zero-extended (`be` on little-endian, `bswap`).
    Swap { dst: u8, bits: u8 },
    /// `dst = value` (the first half of an `lddw`).
    LoadImm64 { dst: u8, value: u64 },
    /// The second half of an `lddw`: never executed (no jump may land here).
    LddwTail,
    /// `dst = *(size *)(base + off)`, zero- or sign-extended.
    Load {
        dst: u8,
        base: u8,
        off: i16,
        size: u8,
        signed: bool,
    },
    /// `*(size *)(base + off) = value`.
    Store {
        base: u8,
        off: i16,
        size: u8,
        value: Operand,
    },
    /// Atomic RMW on `*(size *)(base + off)` with `src`; `fetch` puts the old value in `src`.
    Atomic {
        wide: bool,
        op: AtomicOp,
        fetch: bool,
        base: u8,
        off: i16,
        src: u8,
    },
    /// `pc = target`.
    Jump { target: usize },
    /// `if dst COND src then pc = target`, 64-bit or on the low 32 bits (`jmp32`).
    Branch {
        wide: bool,
        cond: Cond,
        dst: u8,
        src: Operand,
        target: usize,
    },
    /// `may_goto`: fall through while the frame's loop budget lasts, else jump.
    MayGoto { target: usize },
    /// Call helper `id`.
    CallHelper { id: u32 },
    /// BPF-to-BPF call of the function starting at `target`.
    CallLocal { target: usize },
    /// Return from the current function (or the program).
    Exit,
}

/// Base of callback addresses: slot `0xffff_fe00`, in no region, so a program cannot load or
/// store through one; only `bpf_loop` accepts them.
pub const CALLBACK_ADDR_BASE: u64 = 0xffff_fe00_0000_0000;

/// The value an `lddw` of the callback starting at instruction `target` loads.
pub const fn callback_address(target: usize) -> u64 {
    CALLBACK_ADDR_BASE + target as u64
}

/// A validated eBPF program, ready to run on a [`super::Vm`].
#[derive(Debug, Clone)]
pub struct Program {
    raw: Vec<u8>,
    ops: Vec<Op>,
    helper_calls: Vec<(usize, u32)>,
    /// Machine code, compiled at the first native run (`None`: this host cannot).
    native: OnceLock<Option<Arc<NativeCode>>>,
}

impl Program {
    /// Validates raw little-endian instructions and decodes them.
    pub fn from_raw(insns: &[u8]) -> Result<Program, LoadError> {
        if insns.len() % INSN_SIZE_BYTES != 0 {
            return Err(LoadError::LengthNotMultiple {
                len_bytes: insns.len(),
            });
        }
        let n = insns.len() / INSN_SIZE_BYTES;
        if n == 0 {
            return Err(LoadError::Empty);
        }
        if n > PROG_INSNS_MAX {
            return Err(LoadError::TooLong {
                insns: n,
                insns_max: PROG_INSNS_MAX,
            });
        }
        // rbpf's decoder is right for the fixed 8-byte layout; it panics only on an index past
        // the end, which the length check above rules out.
        let raw_insns: Vec<ebpf::Insn> = (0..n).map(|pc| ebpf::get_insn(insns, pc)).collect();

        // Pass 1: find lddw second halves, so pass 2 can refuse jumps into them.
        let mut is_tail = vec![false; n];
        let mut pc = 0;
        while pc < n {
            if raw_insns[pc].opc == ebpf::LD_DW_IMM {
                let tail_ok = raw_insns
                    .get(pc + 1)
                    .is_some_and(|t| t.opc == 0 && t.dst == 0 && t.src == 0 && t.off == 0);
                if !tail_ok {
                    return Err(LoadError::LddwIncomplete { pc });
                }
                is_tail[pc + 1] = true;
                pc += 2;
            } else {
                pc += 1;
            }
        }

        let mut decoder = Decoder {
            insns: &raw_insns,
            is_tail: &is_tail,
            helper_calls: Vec::new(),
        };
        let ops = (0..n)
            .map(|pc| {
                if is_tail[pc] {
                    Ok(Op::LddwTail)
                } else {
                    decoder.decode(pc)
                }
            })
            .collect::<Result<Vec<Op>, LoadError>>()?;
        // Linux requires each function to end in exit or a jump; checking the last instruction
        // is what keeps the interpreter from stepping past the end.
        match ops[n - 1] {
            Op::Exit | Op::Jump { .. } => {}
            _ => return Err(LoadError::FallsOffEnd { pc: n - 1 }),
        }
        let helper_calls = decoder.helper_calls;
        Ok(Program {
            raw: insns.to_vec(),
            ops,
            helper_calls,
            native: OnceLock::new(),
        })
    }

    /// The raw instructions this program was loaded from.
    pub fn as_bytes(&self) -> &[u8] {
        &self.raw
    }

    /// Number of 8-byte instruction slots (an `lddw` takes two).
    pub fn len_insns(&self) -> usize {
        self.ops.len()
    }

    /// Every helper call as (instruction index, helper id), in program order.
    pub fn helper_calls(&self) -> &[(usize, u32)] {
        &self.helper_calls
    }

    pub(crate) fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// The program as machine code, compiled on first use; `None` where the host cannot run it.
    pub(crate) fn native(&self) -> Option<&NativeCode> {
        self.native
            .get_or_init(|| NativeCode::compile(&self.ops).map(Arc::new))
            .as_deref()
    }

    /// Bytes of machine code the native tier compiled this program to (compiling it now if
    /// needed); `None` where the host cannot run native code.
    pub fn native_code_bytes(&self) -> Option<usize> {
        self.native().map(NativeCode::code_bytes)
    }
}

struct Decoder<'a> {
    insns: &'a [ebpf::Insn],
    is_tail: &'a [bool],
    helper_calls: Vec<(usize, u32)>,
}

impl Decoder<'_> {
    fn decode(&mut self, pc: usize) -> Result<Op, LoadError> {
        let insn = &self.insns[pc];
        for reg in [insn.dst, insn.src] {
            // CALL and lddw reuse src as a small type tag, always below 11, so one check fits all.
            if reg > REG_FP {
                return Err(LoadError::InvalidRegister { pc, reg });
            }
        }
        let op = match insn.opc & ebpf::BPF_CLS_MASK {
            ebpf::BPF_LD => self.decode_ld(pc)?,
            ebpf::BPF_LDX => decode_ldx(pc, insn)?,
            ebpf::BPF_ST | ebpf::BPF_STX => decode_store(pc, insn)?,
            ebpf::BPF_ALU => decode_alu(pc, insn, false)?,
            ebpf::BPF_ALU64 => decode_alu(pc, insn, true)?,
            ebpf::BPF_JMP => self.decode_jmp(pc, false)?,
            _ => self.decode_jmp(pc, true)?, // BPF_JMP32: the class field has 8 values.
        };
        if let Some(reg) = written_register(&op) {
            if reg == REG_FP {
                return Err(LoadError::WritesFramePointer { pc });
            }
        }
        Ok(op)
    }

    fn decode_ld(&mut self, pc: usize) -> Result<Op, LoadError> {
        let insn = &self.insns[pc];
        match insn.opc {
            ebpf::LD_DW_IMM => {
                if insn.src == PSEUDO_FUNC {
                    // A callback's address (for bpf_loop): the target is relative, like a
                    // call's; it becomes an opaque, unmapped address the loop helper decodes.
                    let target = self.target(pc, "callback", i64::from(insn.imm))?;
                    if self.insns[pc + 1].imm != 0 {
                        return Err(LoadError::LddwIncomplete { pc });
                    }
                    return Ok(Op::LoadImm64 {
                        dst: insn.dst,
                        value: callback_address(target),
                    });
                }
                if insn.src != 0 {
                    // Map and BTF references: the object loader resolves these into plain
                    // constants before a program reaches us.
                    return Err(invalid(
                        pc,
                        insn,
                        "lddw src_reg (unresolved pseudo reference)",
                        insn.src.into(),
                    ));
                }
                let high = self.insns[pc + 1].imm;
                let value = u64::from(insn.imm as u32) | (u64::from(high as u32) << 32);
                Ok(Op::LoadImm64 {
                    dst: insn.dst,
                    value,
                })
            }
            ebpf::LD_ABS_B
            | ebpf::LD_ABS_H
            | ebpf::LD_ABS_W
            | ebpf::LD_ABS_DW
            | ebpf::LD_IND_B
            | ebpf::LD_IND_H
            | ebpf::LD_IND_W
            | ebpf::LD_IND_DW => Err(LoadError::UnknownOpcode {
                pc,
                opcode: insn.opc,
                note: "legacy LD_ABS/LD_IND packet access needs a socket-buffer context",
            }),
            _ => Err(unknown(pc, insn)),
        }
    }

    fn decode_jmp(&mut self, pc: usize, jmp32: bool) -> Result<Op, LoadError> {
        let insn = &self.insns[pc];
        let op_bits = insn.opc & ebpf::BPF_ALU_OP_MASK;
        let src = if insn.opc & BPF_SRC_X != 0 {
            Operand::Reg(insn.src)
        } else {
            Operand::Imm(insn.imm)
        };
        let cond = match op_bits {
            ebpf::BPF_JEQ => Some(Cond::Eq),
            ebpf::BPF_JGT => Some(Cond::Gt),
            ebpf::BPF_JGE => Some(Cond::Ge),
            ebpf::BPF_JSET => Some(Cond::Set),
            ebpf::BPF_JNE => Some(Cond::Ne),
            ebpf::BPF_JSGT => Some(Cond::Sgt),
            ebpf::BPF_JSGE => Some(Cond::Sge),
            ebpf::BPF_JLT => Some(Cond::Lt),
            ebpf::BPF_JLE => Some(Cond::Le),
            ebpf::BPF_JSLT => Some(Cond::Slt),
            ebpf::BPF_JSLE => Some(Cond::Sle),
            _ => None,
        };
        if let Some(cond) = cond {
            let target = self.target(pc, "jump", i64::from(insn.off))?;
            return Ok(Op::Branch {
                wide: !jmp32,
                cond,
                dst: insn.dst,
                src,
                target,
            });
        }
        if insn.opc & BPF_SRC_X != 0 {
            let note = if insn.opc == ebpf::TAIL_CALL {
                "callx (indirect call) is rejected by Linux"
            } else {
                ""
            };
            return Err(LoadError::UnknownOpcode {
                pc,
                opcode: insn.opc,
                note,
            });
        }
        match (op_bits, jmp32) {
            // `ja` takes its offset from `off`; `gotol` (JMP32 class) from the 32-bit `imm`.
            (ebpf::BPF_JA, false) => Ok(Op::Jump {
                target: self.target(pc, "jump", i64::from(insn.off))?,
            }),
            (ebpf::BPF_JA, true) => Ok(Op::Jump {
                target: self.target(pc, "jump", i64::from(insn.imm))?,
            }),
            (ebpf::BPF_EXIT, false) => Ok(Op::Exit),
            (ebpf::BPF_CALL, false) => match insn.src {
                0 => {
                    let id = insn.imm as u32;
                    self.helper_calls.push((pc, id));
                    Ok(Op::CallHelper { id })
                }
                PSEUDO_CALL => Ok(Op::CallLocal {
                    target: self.target(pc, "call", i64::from(insn.imm))?,
                }),
                PSEUDO_KFUNC_CALL => Err(LoadError::UnknownOpcode {
                    pc,
                    opcode: insn.opc,
                    note: "kfunc calls (src_reg=2) are not supported",
                }),
                other => Err(invalid(pc, insn, "call src_reg", other.into())),
            },
            (BPF_JCOND, false) => {
                if insn.src != BPF_MAY_GOTO {
                    return Err(invalid(
                        pc,
                        insn,
                        "jcond src_reg (only may_goto = 0 exists)",
                        insn.src.into(),
                    ));
                }
                Ok(Op::MayGoto {
                    target: self.target(pc, "jump", i64::from(insn.off))?,
                })
            }
            _ => Err(unknown(pc, insn)),
        }
    }

    /// The absolute target of a relative jump or call, checked to be an instruction start.
    fn target(&self, pc: usize, kind: &'static str, rel: i64) -> Result<usize, LoadError> {
        // pc < 1M and |rel| < 2^31, so i64 arithmetic cannot overflow.
        let target = pc as i64 + 1 + rel;
        let insns = self.insns.len();
        let bad = |why| LoadError::BadTarget {
            pc,
            kind,
            target,
            why,
            insns,
        };
        let Ok(index) = usize::try_from(target) else {
            return Err(bad("out of range"));
        };
        match self.is_tail.get(index) {
            None => Err(bad("out of range")),
            Some(true) => Err(bad("the second half of an lddw")),
            Some(false) => Ok(index),
        }
    }
}

fn decode_ldx(pc: usize, insn: &ebpf::Insn) -> Result<Op, LoadError> {
    let size = size_bytes(insn.opc);
    let signed = match insn.opc & BPF_MODE_MASK {
        ebpf::BPF_MEM => false,
        // Sign-extending loads exist for 1, 2 and 4 bytes only.
        BPF_MEMSX if size < 8 => true,
        _ => return Err(unknown(pc, insn)),
    };
    Ok(Op::Load {
        dst: insn.dst,
        base: insn.src,
        off: insn.off,
        size,
        signed,
    })
}

fn decode_store(pc: usize, insn: &ebpf::Insn) -> Result<Op, LoadError> {
    let size = size_bytes(insn.opc);
    let is_stx = insn.opc & ebpf::BPF_CLS_MASK == ebpf::BPF_STX;
    match (insn.opc & BPF_MODE_MASK, is_stx) {
        (ebpf::BPF_MEM, false) => Ok(Op::Store {
            base: insn.dst,
            off: insn.off,
            size,
            value: Operand::Imm(insn.imm),
        }),
        (ebpf::BPF_MEM, true) => Ok(Op::Store {
            base: insn.dst,
            off: insn.off,
            size,
            value: Operand::Reg(insn.src),
        }),
        (BPF_ATOMIC, true) => decode_atomic(pc, insn, size),
        _ => Err(unknown(pc, insn)),
    }
}

fn decode_atomic(pc: usize, insn: &ebpf::Insn, size: u8) -> Result<Op, LoadError> {
    match insn.imm {
        // Load-acquire / store-release order nothing in a single-threaded VM: plain accesses.
        BPF_LOAD_ACQ => {
            return Ok(Op::Load {
                dst: insn.dst,
                base: insn.src,
                off: insn.off,
                size,
                signed: false,
            })
        }
        BPF_STORE_REL => {
            return Ok(Op::Store {
                base: insn.dst,
                off: insn.off,
                size,
                value: Operand::Reg(insn.src),
            })
        }
        _ => {}
    }
    if size < 4 {
        // Read-modify-write atomics exist for 32 and 64 bits only.
        return Err(invalid(pc, insn, "atomic width (bytes)", size.into()));
    }
    let fetch = insn.imm & BPF_FETCH != 0;
    let op = match insn.imm {
        BPF_XCHG => AtomicOp::Xchg,
        BPF_CMPXCHG => AtomicOp::CmpXchg,
        imm => match imm & !BPF_FETCH {
            0x00 => AtomicOp::Add,
            0x40 => AtomicOp::Or,
            0x50 => AtomicOp::And,
            0xa0 => AtomicOp::Xor,
            _ => return Err(invalid(pc, insn, "atomic operation (imm)", imm.into())),
        },
    };
    Ok(Op::Atomic {
        wide: size == 8,
        op,
        fetch,
        base: insn.dst,
        off: insn.off,
        src: insn.src,
    })
}

fn decode_alu(pc: usize, insn: &ebpf::Insn, wide: bool) -> Result<Op, LoadError> {
    let is_x = insn.opc & BPF_SRC_X != 0;
    let src = if is_x {
        Operand::Reg(insn.src)
    } else {
        Operand::Imm(insn.imm)
    };
    let dst = insn.dst;
    let width_bits: i32 = if wide { 64 } else { 32 };
    let op = match insn.opc & ebpf::BPF_ALU_OP_MASK {
        ebpf::BPF_ADD => AluOp::Add,
        ebpf::BPF_SUB => AluOp::Sub,
        ebpf::BPF_MUL => AluOp::Mul,
        ebpf::BPF_OR => AluOp::Or,
        ebpf::BPF_AND => AluOp::And,
        ebpf::BPF_XOR => AluOp::Xor,
        op @ (ebpf::BPF_DIV | ebpf::BPF_MOD) => {
            if !is_x && insn.imm == 0 {
                // Linux: "div by zero" at load time for an immediate divisor.
                return Err(invalid(pc, insn, "immediate divisor", 0));
            }
            match (op, insn.off) {
                (ebpf::BPF_DIV, 0) => AluOp::Div,
                (ebpf::BPF_DIV, 1) => AluOp::Sdiv,
                (_, 0) => AluOp::Mod,
                (_, 1) => AluOp::Smod,
                (_, off) => {
                    return Err(invalid(
                        pc,
                        insn,
                        "div/mod offset (0 unsigned, 1 signed)",
                        off.into(),
                    ))
                }
            }
        }
        op @ (ebpf::BPF_LSH | ebpf::BPF_RSH | ebpf::BPF_ARSH) => {
            if !is_x && !(0..width_bits).contains(&insn.imm) {
                // Linux: "invalid shift" for immediates outside the operand width.
                return Err(invalid(pc, insn, "shift amount", insn.imm.into()));
            }
            match op {
                ebpf::BPF_LSH => AluOp::Lsh,
                ebpf::BPF_RSH => AluOp::Rsh,
                _ => AluOp::Arsh,
            }
        }
        ebpf::BPF_MOV => {
            if insn.off == 0 {
                AluOp::Mov
            } else if !is_x {
                return Err(invalid(
                    pc,
                    insn,
                    "mov offset with an immediate source",
                    insn.off.into(),
                ));
            } else if wide && insn.off == 1 {
                return Err(LoadError::UnknownOpcode {
                    pc,
                    opcode: insn.opc,
                    note: "addr_space_cast (BPF arenas) is not supported",
                });
            } else if matches!(insn.off, 8 | 16) || (wide && insn.off == 32) {
                return Ok(Op::MovSx {
                    wide,
                    dst,
                    src: insn.src,
                    bits: insn.off as u8,
                });
            } else {
                return Err(invalid(pc, insn, "movsx width (bits)", insn.off.into()));
            }
        }
        ebpf::BPF_NEG if !is_x => return Ok(Op::Neg { wide, dst }),
        ebpf::BPF_END => {
            let bits = match insn.imm {
                16 | 32 | 64 => insn.imm as u8,
                other => return Err(invalid(pc, insn, "byte-swap width (bits)", other.into())),
            };
            return match (wide, is_x) {
                (false, false) => Ok(Op::ToLe { dst, bits }),
                (false, true) | (true, false) => Ok(Op::Swap { dst, bits }),
                (true, true) => Err(unknown(pc, insn)),
            };
        }
        _ => return Err(unknown(pc, insn)),
    };
    Ok(Op::Alu { wide, op, dst, src })
}

/// Access width in bytes from the size field of a load/store opcode.
fn size_bytes(opc: u8) -> u8 {
    match opc & BPF_SIZE_MASK {
        ebpf::BPF_B => 1,
        ebpf::BPF_H => 2,
        ebpf::BPF_W => 4,
        _ => 8,
    }
}

/// The register an op writes, for the r10-is-read-only rule.
fn written_register(op: &Op) -> Option<u8> {
    match *op {
        Op::Alu { dst, .. }
        | Op::Neg { dst, .. }
        | Op::MovSx { dst, .. }
        | Op::ToLe { dst, .. }
        | Op::Swap { dst, .. }
        | Op::LoadImm64 { dst, .. }
        | Op::Load { dst, .. } => Some(dst),
        Op::Atomic {
            op: AtomicOp::CmpXchg,
            ..
        } => Some(0),
        Op::Atomic {
            fetch: true, src, ..
        } => Some(src),
        _ => None,
    }
}

fn unknown(pc: usize, insn: &ebpf::Insn) -> LoadError {
    LoadError::UnknownOpcode {
        pc,
        opcode: insn.opc,
        note: "",
    }
}

fn invalid(pc: usize, insn: &ebpf::Insn, field: &'static str, value: i64) -> LoadError {
    LoadError::InvalidField {
        pc,
        opcode: insn.opc,
        field,
        value,
    }
}
