//! Map values are bounded one by one, as Linux bounds a map-value pointer by `value_size`: an
//! access that starts in one value and ends in its padding or in the next value faults, even
//! though the bytes exist in the region.

use resystance_vm::exec::{region_base, Limits, Program, Region, Vm};

fn insn(opc: u8, dst: u8, src: u8, off: i16, imm: i32) -> [u8; 8] {
    resystance_vm::exec::encode_insn(opc, dst, src, off, imm).to_le_bytes()
}

/// `r1 = region 0 + offset; r0 = *(size *)(r1 + 0); exit`.
fn load_at(offset: u64, size_opc: u8) -> Program {
    let addr = region_base(0) + offset;
    let prog = [
        insn(0x18, 1, 0, 0, addr as u32 as i32),
        insn(0x00, 0, 0, 0, (addr >> 32) as u32 as i32),
        insn(size_opc, 0, 1, 0, 0),
        insn(0x95, 0, 0, 0, 0),
    ]
    .concat();
    Program::from_raw(&prog).unwrap()
}

const LDX_DW: u8 = 0x79;
const LDX_W: u8 = 0x61;

fn run(program: &Program, stride: usize, size: usize) -> Result<u64, String> {
    let mut values: Vec<u8> = (0..4 * stride as u8).collect();
    let mut regions = [Region::writable("vals", &mut values).with_elements(stride, size)];
    Vm::new()
        .run_with_regions(program, &mut [], &mut regions, &Limits::default())
        .map(|r| r.r0)
        .map_err(|e| e.to_string())
}

#[test]
fn accesses_inside_one_value_pass() {
    // 8-byte values, no padding: value 1 whole.
    assert_eq!(
        run(&load_at(8, LDX_DW), 8, 8).unwrap(),
        u64::from_le_bytes([8, 9, 10, 11, 12, 13, 14, 15])
    );
    // 12-byte values at a stride of 16: the last 4 bytes of value 1.
    assert_eq!(run(&load_at(16 + 8, LDX_W), 16, 12).unwrap(), 0x1b1a_1918);
}

#[test]
fn crossing_into_the_next_value_or_padding_faults() {
    let err = run(&load_at(4, LDX_DW), 8, 8).unwrap_err();
    assert!(err.contains("value 0") && err.contains("'vals'"), "{err}");
    let err = run(&load_at(16 + 8, LDX_DW), 16, 12).unwrap_err();
    assert!(err.contains("value 1"), "{err}");
    // The padding itself is not part of any value.
    assert!(run(&load_at(12, LDX_W), 16, 12).is_err());
}
