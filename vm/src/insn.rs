//! The eBPF instruction fields and pseudo-source values the loader and the interpreter share.
//!
//! An instruction is kept as the little-endian 8-byte word read from the object:
//! byte 0 opcode, byte 1 dst (low nibble) and src (high nibble) registers, bytes 2-3 the
//! 16-bit offset, bytes 4-7 the 32-bit immediate.

/// Size of one instruction in bytes.
pub(crate) const INSN_SIZE: usize = rbpf::ebpf::INSN_SIZE;
/// `BPF_LD | BPF_IMM | BPF_DW`: the first half of a 16-byte 64-bit immediate load.
pub(crate) const OP_LD_IMM64: u8 = 0x18;
/// `BPF_JMP | BPF_CALL`.
pub(crate) const OP_CALL: u8 = 0x85;
/// `src_reg` of a 64-bit load whose immediate is a map fd (or host handle).
pub(crate) const PSEUDO_MAP_FD: u8 = 1;
/// `src_reg` of a 64-bit load whose immediate is a map fd plus an offset into its value.
pub(crate) const PSEUDO_MAP_VALUE: u8 = 2;
/// `src_reg` of a 64-bit load of a function's address (a callback), `imm` relative like a call.
pub(crate) const PSEUDO_FUNC: u8 = 4;
/// `src_reg` of a call to a BPF function in the same program (BPF-to-BPF call).
pub(crate) const PSEUDO_CALL: u8 = 1;
/// `src_reg` of a call to a kernel function identified by BTF id.
pub(crate) const PSEUDO_KFUNC_CALL: u8 = 2;

/// Reads little-endian instruction words from section bytes (length a multiple of 8).
pub(crate) fn words(bytes: &[u8]) -> Vec<u64> {
    debug_assert!(bytes.len() % INSN_SIZE == 0);
    bytes
        .chunks_exact(INSN_SIZE)
        .map(|chunk| {
            let mut word = [0u8; INSN_SIZE];
            word.copy_from_slice(chunk);
            u64::from_le_bytes(word)
        })
        .collect()
}

/// The opcode byte.
pub(crate) fn opcode(insn: u64) -> u8 {
    (insn & 0xff) as u8
}

/// The source register nibble.
pub(crate) fn src_reg(insn: u64) -> u8 {
    ((insn >> 12) & 0xf) as u8
}

/// The 32-bit immediate.
pub(crate) fn imm(insn: u64) -> i32 {
    // Truncation is the point: the immediate is the upper 32 bits.
    (insn >> 32) as u32 as i32
}

/// `insn` with its immediate replaced.
pub(crate) fn with_imm(insn: u64, imm: i32) -> u64 {
    (insn & 0xffff_ffff) | (u64::from(imm as u32) << 32)
}

/// `insn` with its source register replaced.
pub(crate) fn with_src_reg(insn: u64, src: u8) -> u64 {
    debug_assert!(src < 16);
    (insn & !0xf000) | (u64::from(src) << 12)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip() {
        // lddw r1, imm=-1 with src 0: opcode 0x18, dst 1.
        let insn = 0xffff_ffff_0000_0118_u64;
        assert_eq!(opcode(insn), OP_LD_IMM64);
        assert_eq!(imm(insn), -1);
        let patched = with_src_reg(with_imm(insn, 7), PSEUDO_MAP_VALUE);
        assert_eq!(imm(patched), 7);
        assert_eq!(src_reg(patched), PSEUDO_MAP_VALUE);
        assert_eq!(patched & 0xf00, 0x100, "dst register untouched");
    }
}
