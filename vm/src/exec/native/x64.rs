//! A small x86-64 assembler: the instruction forms the native tier emits, labels and rel32
//! fixups. Encodings follow the Intel SDM, volume 2 (REX, ModRM, SIB, VEX for BMI2 shifts).

/// A general-purpose register by its hardware number (0 = rax ... 15 = r15).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Reg(pub(super) u8);

pub(super) const RAX: Reg = Reg(0);
pub(super) const RCX: Reg = Reg(1);
pub(super) const RDX: Reg = Reg(2);
pub(super) const RBX: Reg = Reg(3);
pub(super) const RSP: Reg = Reg(4);
pub(super) const RBP: Reg = Reg(5);
pub(super) const RSI: Reg = Reg(6);
pub(super) const RDI: Reg = Reg(7);
pub(super) const R8: Reg = Reg(8);
pub(super) const R9: Reg = Reg(9);
pub(super) const R10: Reg = Reg(10);
pub(super) const R11: Reg = Reg(11);
pub(super) const R12: Reg = Reg(12);
pub(super) const R13: Reg = Reg(13);
pub(super) const R14: Reg = Reg(14);
pub(super) const R15: Reg = Reg(15);

/// A memory operand `[base + index + disp]` (index scale 1).
#[derive(Debug, Clone, Copy)]
pub(super) struct Mem {
    pub(super) base: Reg,
    pub(super) index: Option<Reg>,
    pub(super) disp: i32,
}

/// `[base + disp]`.
pub(super) const fn mem(base: Reg, disp: i32) -> Mem {
    Mem {
        base,
        index: None,
        disp,
    }
}

/// `[base + index + disp]`.
pub(super) const fn mem_idx(base: Reg, index: Reg, disp: i32) -> Mem {
    Mem {
        base,
        index: Some(index),
        disp,
    }
}

/// The r/m operand of an instruction.
#[derive(Debug, Clone, Copy)]
pub(super) enum Rm {
    Reg(Reg),
    Mem(Mem),
}

/// A position in the code, bound once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Label(usize);

/// Two-operand ALU instructions with the classic encodings (`op r/m, r` = `base + 1`,
/// `op r, r/m` = `base + 3`, `81 /digit` for immediates).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Alu2 {
    Add,
    Or,
    And,
    Sub,
    Xor,
    Cmp,
}

impl Alu2 {
    fn base(self) -> u8 {
        match self {
            Alu2::Add => 0x00,
            Alu2::Or => 0x08,
            Alu2::And => 0x20,
            Alu2::Sub => 0x28,
            Alu2::Xor => 0x30,
            Alu2::Cmp => 0x38,
        }
    }

    fn digit(self) -> u8 {
        self.base() >> 3
    }
}

/// Shift kinds (`C1 /digit`; BMI2 `*X` forms by prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Shift {
    Shl,
    Shr,
    Sar,
}

/// Condition codes (the low nibble of `Jcc`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(dead_code)] // the full set, named as the SDM does; codegen uses most of them
pub(super) enum Cc {
    B = 0x2,
    Ae = 0x3,
    E = 0x4,
    Ne = 0x5,
    Be = 0x6,
    A = 0x7,
    L = 0xc,
    Ge = 0xd,
    Le = 0xe,
    G = 0xf,
}

/// The code being assembled.
#[derive(Debug, Default)]
pub(super) struct Asm {
    pub(super) code: Vec<u8>,
    labels: Vec<Option<usize>>,
    /// (position of a rel32 field, label it points at).
    fixups: Vec<(usize, Label)>,
}

impl Asm {
    /// A fresh, unbound label.
    pub(super) fn label(&mut self) -> Label {
        self.labels.push(None);
        Label(self.labels.len() - 1)
    }

    /// Binds `label` to the current position.
    pub(super) fn bind(&mut self, label: Label) {
        assert!(self.labels[label.0].is_none(), "label bound twice");
        self.labels[label.0] = Some(self.code.len());
    }

    /// Resolves every rel32 fixup; panics on an unbound label (a codegen bug).
    pub(super) fn finish(mut self) -> Vec<u8> {
        for &(at, label) in &self.fixups {
            let target = self.labels[label.0].expect("every referenced label is bound");
            let rel = i32::try_from(target as i64 - (at as i64 + 4)).expect("code < 2 GiB");
            self.code[at..at + 4].copy_from_slice(&rel.to_le_bytes());
        }
        self.fixups.clear();
        self.code
    }

    fn byte(&mut self, b: u8) {
        self.code.push(b);
    }

    fn bytes(&mut self, b: &[u8]) {
        self.code.extend_from_slice(b);
    }

    fn rel32(&mut self, label: Label) {
        self.fixups.push((self.code.len(), label));
        self.bytes(&[0; 4]);
    }

    /// Emits `[66] [REX] opcode ModRM [SIB] [disp]` for `reg` and `rm`.
    /// `byte_regs`: operands are 8-bit registers (spl..dil need a REX prefix).
    fn op(&mut self, w: bool, opcode: &[u8], reg: u8, rm: Rm, byte_regs: bool, p66: bool) {
        if p66 {
            self.byte(0x66);
        }
        let (x, b) = match rm {
            Rm::Reg(r) => (0, r.0 >> 3),
            Rm::Mem(m) => (m.index.map_or(0, |i| i.0 >> 3), m.base.0 >> 3),
        };
        let r = reg >> 3;
        let needs_byte_rex = byte_regs
            && ((4..8).contains(&reg) || matches!(rm, Rm::Reg(Reg(n)) if (4..8).contains(&n)));
        if w || r != 0 || x != 0 || b != 0 || needs_byte_rex {
            self.byte(0x40 | (u8::from(w) << 3) | (r << 2) | (x << 1) | b);
        }
        self.bytes(opcode);
        self.modrm(reg, rm);
    }

    fn modrm(&mut self, reg: u8, rm: Rm) {
        let reg = (reg & 7) << 3;
        match rm {
            Rm::Reg(r) => self.byte(0xc0 | reg | (r.0 & 7)),
            Rm::Mem(m) => {
                let base = m.base.0 & 7;
                // mod 00 with base 101 means RIP/no base, so rbp and r13 always take a disp.
                let (md, disp8) = if m.disp == 0 && base != 5 {
                    (0x00, false)
                } else if i8::try_from(m.disp).is_ok() {
                    (0x40, true)
                } else {
                    (0x80, false)
                };
                match m.index {
                    None if base == 4 => {
                        self.byte(md | reg | 4);
                        self.byte(0x24); // SIB: no index, base rsp/r12
                    }
                    None => self.byte(md | reg | base),
                    Some(i) => {
                        assert_ne!(i, RSP, "rsp cannot be an index");
                        self.byte(md | reg | 4);
                        self.byte(((i.0 & 7) << 3) | base);
                    }
                }
                if md == 0x40 {
                    debug_assert!(disp8);
                    self.byte(m.disp as i8 as u8);
                } else if md == 0x80 {
                    self.bytes(&m.disp.to_le_bytes());
                }
            }
        }
    }

    /// `op dst, src` on registers (`w`: 64-bit).
    pub(super) fn alu_rr(&mut self, op: Alu2, w: bool, dst: Reg, src: Reg) {
        self.op(w, &[op.base() + 1], src.0, Rm::Reg(dst), false, false);
    }

    /// `op dst, [mem]`.
    pub(super) fn alu_rm(&mut self, op: Alu2, w: bool, dst: Reg, src: Mem) {
        self.op(w, &[op.base() + 3], dst.0, Rm::Mem(src), false, false);
    }

    /// `op r/m, imm32` (sign-extended to 64 bits when `w`); `83 /digit ib` when it fits.
    pub(super) fn alu_ri(&mut self, op: Alu2, w: bool, dst: Rm, imm: i32) {
        if let Ok(imm8) = i8::try_from(imm) {
            self.op(w, &[0x83], op.digit(), dst, false, false);
            self.byte(imm8 as u8);
        } else {
            self.op(w, &[0x81], op.digit(), dst, false, false);
            self.bytes(&imm.to_le_bytes());
        }
    }

    /// `test a, b`.
    pub(super) fn test_rr(&mut self, w: bool, a: Reg, b: Reg) {
        self.op(w, &[0x85], b.0, Rm::Reg(a), false, false);
    }

    /// `test r, imm32` (sign-extended when `w`).
    pub(super) fn test_ri(&mut self, w: bool, r: Reg, imm: i32) {
        self.op(w, &[0xf7], 0, Rm::Reg(r), false, false);
        self.bytes(&imm.to_le_bytes());
    }

    /// `mov dst, src` (32-bit zero-extends).
    pub(super) fn mov_rr(&mut self, w: bool, dst: Reg, src: Reg) {
        self.op(w, &[0x89], src.0, Rm::Reg(dst), false, false);
    }

    /// `mov dst, imm32`: 64-bit sign-extends (`C7 /0`), 32-bit zero-extends (`B8+r`).
    pub(super) fn mov_ri(&mut self, w: bool, dst: Reg, imm: i32) {
        if w {
            self.op(true, &[0xc7], 0, Rm::Reg(dst), false, false);
        } else {
            if dst.0 >= 8 {
                self.byte(0x41);
            }
            self.byte(0xb8 + (dst.0 & 7));
        }
        self.bytes(&imm.to_le_bytes());
    }

    /// `mov dst, imm64` (the shortest exact form).
    pub(super) fn mov_ri64(&mut self, dst: Reg, imm: u64) {
        if let Ok(v) = u32::try_from(imm) {
            self.mov_ri(false, dst, v as i32);
        } else if let Ok(v) = i32::try_from(imm as i64) {
            self.mov_ri(true, dst, v);
        } else {
            self.byte(0x48 | (dst.0 >> 3));
            self.byte(0xb8 + (dst.0 & 7));
            self.bytes(&imm.to_le_bytes());
        }
    }

    /// `mov dst, size [mem]`, zero-extended (`size` 1, 2, 4 or 8 bytes).
    pub(super) fn load_zx(&mut self, size: u8, dst: Reg, src: Mem) {
        let m = Rm::Mem(src);
        match size {
            1 => self.op(false, &[0x0f, 0xb6], dst.0, m, false, false),
            2 => self.op(false, &[0x0f, 0xb7], dst.0, m, false, false),
            4 => self.op(false, &[0x8b], dst.0, m, false, false),
            8 => self.op(true, &[0x8b], dst.0, m, false, false),
            _ => unreachable!("load size {size}"),
        }
    }

    /// `movsx dst, size [mem]` to 64 bits (`size` 1, 2 or 4).
    pub(super) fn load_sx(&mut self, size: u8, dst: Reg, src: Mem) {
        let m = Rm::Mem(src);
        match size {
            1 => self.op(true, &[0x0f, 0xbe], dst.0, m, false, false),
            2 => self.op(true, &[0x0f, 0xbf], dst.0, m, false, false),
            4 => self.op(true, &[0x63], dst.0, m, false, false),
            _ => unreachable!("sign-extending load size {size}"),
        }
    }

    /// `mov size [mem], src` (the low `size` bytes of `src`).
    pub(super) fn store_r(&mut self, size: u8, dst: Mem, src: Reg) {
        let m = Rm::Mem(dst);
        match size {
            1 => self.op(false, &[0x88], src.0, m, true, false),
            2 => self.op(false, &[0x89], src.0, m, false, true),
            4 => self.op(false, &[0x89], src.0, m, false, false),
            8 => self.op(true, &[0x89], src.0, m, false, false),
            _ => unreachable!("store size {size}"),
        }
    }

    /// `mov size [mem], imm` (8 bytes: the imm32 sign-extended).
    pub(super) fn store_i(&mut self, size: u8, dst: Mem, imm: i32) {
        let m = Rm::Mem(dst);
        match size {
            1 => {
                self.op(false, &[0xc6], 0, m, false, false);
                self.byte(imm as u8);
            }
            2 => {
                self.op(false, &[0xc7], 0, m, false, true);
                self.bytes(&(imm as u16).to_le_bytes());
            }
            4 | 8 => {
                self.op(size == 8, &[0xc7], 0, m, false, false);
                self.bytes(&imm.to_le_bytes());
            }
            _ => unreachable!("store size {size}"),
        }
    }

    /// `lea dst, [mem]`.
    pub(super) fn lea(&mut self, dst: Reg, src: Mem) {
        self.op(true, &[0x8d], dst.0, Rm::Mem(src), false, false);
    }

    /// `imul dst, src`.
    pub(super) fn imul_rr(&mut self, w: bool, dst: Reg, src: Reg) {
        self.op(w, &[0x0f, 0xaf], dst.0, Rm::Reg(src), false, false);
    }

    /// `imul dst, src, imm32` (sign-extended; `6B ib` when it fits).
    pub(super) fn imul_rri(&mut self, w: bool, dst: Reg, src: Reg, imm: i32) {
        if let Ok(imm8) = i8::try_from(imm) {
            self.op(w, &[0x6b], dst.0, Rm::Reg(src), false, false);
            self.byte(imm8 as u8);
        } else {
            self.op(w, &[0x69], dst.0, Rm::Reg(src), false, false);
            self.bytes(&imm.to_le_bytes());
        }
    }

    /// `neg r`.
    pub(super) fn neg(&mut self, w: bool, r: Reg) {
        self.op(w, &[0xf7], 3, Rm::Reg(r), false, false);
    }

    /// `shl/shr/sar r, imm8` (the CPU masks the count to 5 or 6 bits, as BPF does).
    pub(super) fn shift_ri(&mut self, kind: Shift, w: bool, r: Reg, count: u8) {
        let digit = match kind {
            Shift::Shl => 4,
            Shift::Shr => 5,
            Shift::Sar => 7,
        };
        self.op(w, &[0xc1], digit, Rm::Reg(r), false, false);
        self.byte(count);
    }

    /// BMI2 `shlx/shrx/sarx dst, src, count` (count masked to 5 or 6 bits).
    pub(super) fn shift_x(&mut self, kind: Shift, w: bool, dst: Reg, src: Reg, count: Reg) {
        let pp = match kind {
            Shift::Shl => 0b01, // 66
            Shift::Sar => 0b10, // F3
            Shift::Shr => 0b11, // F2
        };
        // VEX3: C4, [~R ~X ~B m-mmmm=0F38], [W ~vvvv L=0 pp], F7 /r.
        self.byte(0xc4);
        let r_bar = (!(dst.0 >> 3) & 1) << 7;
        let b_bar = (!(src.0 >> 3) & 1) << 5;
        self.byte(r_bar | 0x40 | b_bar | 0b00010);
        let vvvv = (!count.0 & 0xf) << 3;
        self.byte((u8::from(w) << 7) | vvvv | pp);
        self.byte(0xf7);
        self.byte(0xc0 | ((dst.0 & 7) << 3) | (src.0 & 7));
    }

    /// `movsx dst, src` from `bits` (8, 16, 32) to 64 (`w`) or 32 bits.
    pub(super) fn movsx_rr(&mut self, w: bool, bits: u8, dst: Reg, src: Reg) {
        let s = Rm::Reg(src);
        match bits {
            8 => self.op(w, &[0x0f, 0xbe], dst.0, s, true, false),
            16 => self.op(w, &[0x0f, 0xbf], dst.0, s, false, false),
            32 if w => self.op(true, &[0x63], dst.0, s, false, false),
            32 => self.mov_rr(false, dst, src),
            _ => unreachable!("movsx from {bits} bits"),
        }
    }

    /// `movzx dst32, src16`.
    pub(super) fn movzx16(&mut self, dst: Reg, src: Reg) {
        self.op(false, &[0x0f, 0xb7], dst.0, Rm::Reg(src), false, false);
    }

    /// `bswap r` (32-bit zero-extends).
    pub(super) fn bswap(&mut self, w: bool, r: Reg) {
        if w || r.0 >= 8 {
            self.byte(0x40 | (u8::from(w) << 3) | (r.0 >> 3));
        }
        self.byte(0x0f);
        self.byte(0xc8 + (r.0 & 7));
    }

    /// `div dword [mem]`: edx:eax / [mem] -> eax quotient, edx remainder.
    pub(super) fn div32_m(&mut self, m: Mem) {
        self.op(false, &[0xf7], 6, Rm::Mem(m), false, false);
    }

    /// `dec qword [mem]`.
    pub(super) fn dec_m64(&mut self, m: Mem) {
        self.op(true, &[0xff], 1, Rm::Mem(m), false, false);
    }

    /// `xorps xmm0, xmm0`.
    pub(super) fn zero_xmm0(&mut self) {
        self.bytes(&[0x0f, 0x57, 0xc0]);
    }

    /// `movups [mem], xmm0`.
    pub(super) fn store_xmm0(&mut self, m: Mem) {
        self.op(false, &[0x0f, 0x11], 0, Rm::Mem(m), false, false);
    }

    /// `jmp label` (rel32).
    pub(super) fn jmp(&mut self, label: Label) {
        self.byte(0xe9);
        self.rel32(label);
    }

    /// `jcc label` (rel32).
    pub(super) fn jcc(&mut self, cc: Cc, label: Label) {
        self.bytes(&[0x0f, 0x80 | cc as u8]);
        self.rel32(label);
    }

    /// `jmp r`.
    pub(super) fn jmp_r(&mut self, r: Reg) {
        self.op(false, &[0xff], 4, Rm::Reg(r), false, false);
    }

    /// `jmp qword [mem]`.
    pub(super) fn jmp_m(&mut self, m: Mem) {
        self.op(false, &[0xff], 4, Rm::Mem(m), false, false);
    }

    /// `call label` (rel32).
    pub(super) fn call(&mut self, label: Label) {
        self.byte(0xe8);
        self.rel32(label);
    }

    /// `call r`.
    pub(super) fn call_r(&mut self, r: Reg) {
        self.op(false, &[0xff], 2, Rm::Reg(r), false, false);
    }

    /// `ret`.
    pub(super) fn ret(&mut self) {
        self.byte(0xc3);
    }

    /// `push r`.
    pub(super) fn push(&mut self, r: Reg) {
        if r.0 >= 8 {
            self.byte(0x41);
        }
        self.byte(0x50 + (r.0 & 7));
    }

    /// `pop r`.
    pub(super) fn pop(&mut self, r: Reg) {
        if r.0 >= 8 {
            self.byte(0x41);
        }
        self.byte(0x58 + (r.0 & 7));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asm(f: impl FnOnce(&mut Asm)) -> Vec<u8> {
        let mut a = Asm::default();
        f(&mut a);
        a.finish()
    }

    // Expected bytes as GNU as (binutils 2.40) assembles the same instruction.
    #[test]
    fn encodings_match_the_assembler() {
        assert_eq!(
            asm(|a| a.alu_rr(Alu2::Add, true, RAX, RBX)),
            [0x48, 0x01, 0xd8]
        );
        assert_eq!(
            asm(|a| a.alu_rr(Alu2::Sub, false, R13, RSI)),
            [0x41, 0x29, 0xf5]
        );
        assert_eq!(
            asm(|a| a.alu_ri(Alu2::Cmp, true, Rm::Reg(R9), 66)),
            [0x49, 0x83, 0xf9, 0x42]
        );
        assert_eq!(
            asm(|a| a.alu_ri(Alu2::And, false, Rm::Reg(RCX), 0x1234)),
            [0x81, 0xe1, 0x34, 0x12, 0, 0]
        );
        assert_eq!(
            asm(|a| a.alu_rm(Alu2::Cmp, true, R9, mem_idx(R12, R10, 0x10))),
            [0x4f, 0x3b, 0x4c, 0x14, 0x10]
        );
        assert_eq!(
            asm(|a| a.load_zx(8, RAX, mem(R12, 0))),
            [0x49, 0x8b, 0x04, 0x24]
        );
        assert_eq!(
            asm(|a| a.load_zx(1, RSI, mem(RBP, -8))),
            [0x0f, 0xb6, 0x75, 0xf8]
        );
        assert_eq!(
            asm(|a| a.load_sx(4, R15, mem(R13, 0))),
            [0x4d, 0x63, 0x7d, 0x00]
        );
        assert_eq!(asm(|a| a.store_r(1, mem(R11, 0), RSI)), [0x41, 0x88, 0x33]);
        assert_eq!(
            asm(|a| a.store_r(2, mem(R11, 0x100), RDI)),
            [0x66, 0x41, 0x89, 0xbb, 0x00, 0x01, 0x00, 0x00]
        );
        assert_eq!(
            asm(|a| a.store_i(8, mem(RBP, -16), -1)),
            [0x48, 0xc7, 0x45, 0xf0, 0xff, 0xff, 0xff, 0xff]
        );
        assert_eq!(
            asm(|a| a.shift_x(Shift::Shl, true, RAX, RBX, RCX)),
            [0xc4, 0xe2, 0xf1, 0xf7, 0xc3]
        );
        assert_eq!(
            asm(|a| a.shift_x(Shift::Shr, false, R13, R14, R8)),
            [0xc4, 0x42, 0x3b, 0xf7, 0xee]
        );
        assert_eq!(
            asm(|a| a.shift_x(Shift::Sar, true, RDX, RDI, R15)),
            [0xc4, 0xe2, 0x82, 0xf7, 0xd7]
        );
        assert_eq!(
            asm(|a| a.movsx_rr(true, 8, RAX, RSI)),
            [0x48, 0x0f, 0xbe, 0xc6]
        );
        assert_eq!(
            asm(|a| a.movsx_rr(false, 8, RCX, RDI)),
            [0x40, 0x0f, 0xbe, 0xcf]
        );
        assert_eq!(asm(|a| a.bswap(true, R14)), [0x49, 0x0f, 0xce]);
        assert_eq!(asm(|a| a.mov_ri(false, R9, 7)), [0x41, 0xb9, 7, 0, 0, 0]);
        assert_eq!(
            asm(|a| a.mov_ri64(RBX, 0x1122_3344_5566_7788)),
            [0x48, 0xbb, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11]
        );
        assert_eq!(
            asm(|a| a.dec_m64(mem(R12, 0x80))),
            [0x49, 0xff, 0x8c, 0x24, 0x80, 0, 0, 0]
        );
        assert_eq!(
            asm(|a| a.jmp_m(mem_idx(R11, R10, 0))),
            [0x43, 0xff, 0x24, 0x13]
        );
        assert_eq!(asm(|a| a.push(R12)), [0x41, 0x54]);
        assert_eq!(asm(|a| a.call_r(R11)), [0x41, 0xff, 0xd3]);
        assert_eq!(
            asm(|a| a.div32_m(mem_idx(R12, R10, 0x140))),
            [0x43, 0xf7, 0xb4, 0x14, 0x40, 0x01, 0, 0]
        );
        assert_eq!(
            asm(|a| a.imul_rri(true, R14, R14, 10)),
            [0x4d, 0x6b, 0xf6, 0x0a]
        );
    }

    #[test]
    fn labels_resolve_backward_and_forward() {
        let code = asm(|a| {
            let back = a.label();
            a.bind(back);
            let fwd = a.label();
            a.jcc(Cc::E, fwd); // 6 bytes
            a.jmp(back); // 5 bytes, rel = -11
            a.bind(fwd);
        });
        assert_eq!(code, [0x0f, 0x84, 5, 0, 0, 0, 0xe9, 0xf5, 0xff, 0xff, 0xff]);
    }
}
