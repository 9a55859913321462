//! Disassembly of validated programs, in the notation of the kernel's verifier log.
//!
//! Works from the decoded [`Op`]s, so every instruction the loader accepts — ISA v4, atomics,
//! `may_goto` included — has a text form, and nothing it prints can disagree with what the
//! interpreter runs. (rbpf 0.4.1's disassembler panics on opcodes it does not know.)

use super::program::{AluOp, AtomicOp, Cond, Op, Operand, Program};

/// One line per instruction slot that starts an instruction (an `lddw` takes two slots, one
/// line): `(slot index, text)`.
pub fn disassemble(program: &Program) -> Vec<(usize, String)> {
    program
        .ops()
        .iter()
        .enumerate()
        .filter(|(_, op)| !matches!(op, Op::LddwTail))
        .map(|(pc, op)| (pc, render(pc, op)))
        .collect()
}

fn reg(wide: bool, r: u8) -> String {
    format!("{}{r}", if wide { 'r' } else { 'w' })
}

fn operand(wide: bool, o: Operand) -> String {
    match o {
        Operand::Reg(r) => reg(wide, r),
        Operand::Imm(i) => i.to_string(),
    }
}

fn size_name(size: u8, signed: bool) -> String {
    format!("{}{}", if signed { 's' } else { 'u' }, u32::from(size) * 8)
}

fn mem(size: u8, signed: bool, base: u8, off: i16) -> String {
    format!("*({} *)(r{base} {off:+})", size_name(size, signed))
}

/// A jump target relative to the next instruction, as the kernel prints it.
fn rel(pc: usize, target: usize) -> String {
    let delta = target as i64 - pc as i64 - 1;
    format!("pc{delta:+}")
}

fn alu_symbol(op: AluOp) -> &'static str {
    match op {
        AluOp::Add => "+=",
        AluOp::Sub => "-=",
        AluOp::Mul => "*=",
        AluOp::Div => "/=",
        AluOp::Sdiv => "s/=",
        AluOp::Mod => "%=",
        AluOp::Smod => "s%=",
        AluOp::Or => "|=",
        AluOp::And => "&=",
        AluOp::Lsh => "<<=",
        AluOp::Rsh => ">>=",
        AluOp::Arsh => "s>>=",
        AluOp::Xor => "^=",
        AluOp::Mov => "=",
    }
}

fn cond_symbol(c: Cond) -> &'static str {
    match c {
        Cond::Eq => "==",
        Cond::Gt => ">",
        Cond::Ge => ">=",
        Cond::Lt => "<",
        Cond::Le => "<=",
        Cond::Set => "&",
        Cond::Ne => "!=",
        Cond::Sgt => "s>",
        Cond::Sge => "s>=",
        Cond::Slt => "s<",
        Cond::Sle => "s<=",
    }
}

fn atomic_name(op: AtomicOp) -> &'static str {
    match op {
        AtomicOp::Add => "add",
        AtomicOp::Or => "or",
        AtomicOp::And => "and",
        AtomicOp::Xor => "xor",
        AtomicOp::Xchg => "xchg",
        AtomicOp::CmpXchg => "cmpxchg",
    }
}

fn render(pc: usize, op: &Op) -> String {
    match *op {
        Op::Alu { wide, op, dst, src } => {
            format!(
                "{} {} {}",
                reg(wide, dst),
                alu_symbol(op),
                operand(wide, src)
            )
        }
        Op::Neg { wide, dst } => format!("{0} = -{0}", reg(wide, dst)),
        Op::MovSx {
            wide,
            dst,
            src,
            bits,
        } => format!("{} = (s{bits}){}", reg(wide, dst), reg(wide, src)),
        Op::ToLe { dst, bits } => format!("r{dst} = le{bits} r{dst}"),
        Op::Swap { dst, bits } => format!("r{dst} = bswap{bits} r{dst}"),
        Op::LoadImm64 { dst, value } => format!("r{dst} = {value:#x} ll"),
        Op::LddwTail => "(lddw second half)".to_string(),
        Op::Load {
            dst,
            base,
            off,
            size,
            signed,
        } => format!("r{dst} = {}", mem(size, signed, base, off)),
        Op::Store {
            base,
            off,
            size,
            value,
        } => format!("{} = {}", mem(size, false, base, off), operand(true, value)),
        Op::Atomic {
            wide,
            op,
            fetch,
            base,
            off,
            src,
        } => {
            let size = if wide { 8 } else { 4 };
            let target = mem(size, false, base, off);
            let bits = u32::from(size) * 8;
            match op {
                AtomicOp::Xchg => format!("{0} = xchg_{bits}({target}, {0})", reg(wide, src)),
                AtomicOp::CmpXchg => format!(
                    "{} = cmpxchg_{bits}({target}, {}, {})",
                    reg(wide, 0),
                    reg(wide, 0),
                    reg(wide, src)
                ),
                _ if fetch => format!(
                    "{0} = atomic{1}_fetch_{2}({target}, {0})",
                    reg(wide, src),
                    if wide { "64" } else { "" },
                    atomic_name(op)
                ),
                _ => format!(
                    "lock {target} {}= {}",
                    match op {
                        AtomicOp::Add => "+",
                        AtomicOp::Or => "|",
                        AtomicOp::And => "&",
                        _ => "^",
                    },
                    reg(wide, src)
                ),
            }
        }
        Op::Jump { target } => format!("goto {}", rel(pc, target)),
        Op::Branch {
            wide,
            cond,
            dst,
            src,
            target,
        } => format!(
            "if {} {} {} goto {}",
            reg(wide, dst),
            cond_symbol(cond),
            operand(wide, src),
            rel(pc, target)
        ),
        Op::MayGoto { target } => format!("may_goto {}", rel(pc, target)),
        Op::CallHelper { id } => format!("call {id}"),
        Op::CallLocal { target } => format!("call {}", rel(pc, target)),
        Op::Exit => "exit".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One instruction: opcode, dst/src nibbles, offset, immediate.
    fn insn(opc: u8, dst: u8, src: u8, off: i16, imm: i32) -> [u8; 8] {
        crate::exec::encode_insn(opc, dst, src, off, imm).to_le_bytes()
    }

    #[test]
    fn prints_the_kernel_notation() {
        let prog: Vec<u8> = [
            insn(0xb7, 0, 0, 0, 7), // r0 = 7
            insn(0x61, 2, 1, 4, 0), // r2 = *(u32 *)(r1 +4)
            insn(0x0c, 0, 2, 0, 0), // w0 += w2
            insn(0xbf, 3, 2, 8, 0), // r3 = (s8)r2
            insn(0x2d, 0, 3, 1, 0), // if r0 > r3 goto pc+1
            insn(0x87, 0, 0, 0, 0), // r0 = -r0
            insn(0xdb, 1, 0, 0, 1), // r0 = atomic64_fetch_add(..)
            insn(0x18, 4, 0, 0, 1), // r4 = 0x200000001 ll
            insn(0x00, 0, 0, 0, 2), //   (second half)
            insn(0xe5, 0, 0, 0, 0), // may_goto pc+0
            insn(0x95, 0, 0, 0, 0), // exit
        ]
        .concat();
        let p = Program::from_raw(&prog).unwrap();
        let text: Vec<String> = disassemble(&p).into_iter().map(|(_, t)| t).collect();
        assert_eq!(
            text,
            vec![
                "r0 = 7",
                "r2 = *(u32 *)(r1 +4)",
                "w0 += w2",
                "r3 = (s8)r2",
                "if r0 > r3 goto pc+1",
                "r0 = -r0",
                "r0 = atomic64_fetch_add(*(u64 *)(r1 +0), r0)",
                "r4 = 0x200000001 ll",
                "may_goto pc+0",
                "exit",
            ]
        );
        let slots: Vec<usize> = disassemble(&p).into_iter().map(|(pc, _)| pc).collect();
        assert_eq!(
            slots,
            vec![0, 1, 2, 3, 4, 5, 6, 7, 9, 10],
            "lddw takes two slots"
        );
    }
}
