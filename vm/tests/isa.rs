//! ISA tests where the conformance suite is thin: memory bounds at every width, division
//! edge cases, atomics' return values, calls and stack isolation, budgets, may_goto, load-time
//! rejection, helpers and regions, and a no-panic property over random instruction streams.

use proptest::prelude::*;
use resystance_vm::exec::{
    frame_pointer, region_base, Access, HelperError, Limits, LoadError, Memory, Program, Region,
    RunError, RunResult, Vm, CTX_BASE, FRAMES_MAX, MAY_GOTO_LOOPS_MAX,
};

/// A tiny assembler: one 8-byte instruction.
fn insn(opc: u8, dst: u8, src: u8, off: i16, imm: i32) -> [u8; 8] {
    resystance_vm::exec::encode_insn(opc, dst, src, off, imm).to_le_bytes()
}

fn mov64_imm(dst: u8, imm: i32) -> [u8; 8] {
    insn(0xb7, dst, 0, 0, imm)
}
fn mov64_reg(dst: u8, src: u8) -> [u8; 8] {
    insn(0xbf, dst, src, 0, 0)
}
fn add64_imm(dst: u8, imm: i32) -> [u8; 8] {
    insn(0x07, dst, 0, 0, imm)
}
fn add64_reg(dst: u8, src: u8) -> [u8; 8] {
    insn(0x0f, dst, src, 0, 0)
}
fn exit() -> [u8; 8] {
    insn(0x95, 0, 0, 0, 0)
}
fn call_local(rel: i32) -> [u8; 8] {
    insn(0x85, 0, 1, 0, rel)
}
fn call_helper(id: i32) -> [u8; 8] {
    insn(0x85, 0, 0, 0, id)
}
fn ja(off: i16) -> [u8; 8] {
    insn(0x05, 0, 0, off, 0)
}
fn may_goto(off: i16) -> [u8; 8] {
    insn(0xe5, 0, 0, off, 0)
}
fn lddw(dst: u8, value: u64) -> [[u8; 8]; 2] {
    [
        insn(0x18, dst, 0, 0, value as u32 as i32),
        insn(0, 0, 0, 0, (value >> 32) as u32 as i32),
    ]
}
/// `ldx{size} dst, [src + off]`
fn ldx(size: u8, dst: u8, src: u8, off: i16) -> [u8; 8] {
    insn(0x61 | size_bits(size), dst, src, off, 0)
}
/// `stx{size} [dst + off], src`
fn stx(size: u8, dst: u8, src: u8, off: i16) -> [u8; 8] {
    insn(0x63 | size_bits(size), dst, src, off, 0)
}
/// `st{size} [dst + off], imm`
fn st(size: u8, dst: u8, off: i16, imm: i32) -> [u8; 8] {
    insn(0x62 | size_bits(size), dst, 0, off, imm)
}
/// Atomic RMW (`imm` = op) on `[dst + off]` with `src`, 4 or 8 bytes.
fn atomic(size: u8, dst: u8, src: u8, off: i16, op: i32) -> [u8; 8] {
    insn(0xc3 | size_bits(size), dst, src, off, op)
}
fn size_bits(size: u8) -> u8 {
    match size {
        1 => 0x10,
        2 => 0x08,
        4 => 0x00,
        8 => 0x18,
        _ => panic!("bad size {size}"),
    }
}

fn prog(parts: &[&[[u8; 8]]]) -> Vec<u8> {
    parts
        .iter()
        .flat_map(|p| p.iter().flatten().copied())
        .collect()
}

fn run_on(bytes: &[u8], ctx: &mut [u8]) -> Result<RunResult, RunError> {
    let program = Program::from_raw(bytes).map_err(RunError::Load)?;
    Vm::new().run(&program, ctx, &Limits::default())
}

fn r0(bytes: &[u8]) -> u64 {
    run_on(bytes, &mut []).expect("program runs").r0
}

fn expect_memory_error(
    result: Result<RunResult, RunError>,
    pc: usize,
    addr: u64,
    access: Access,
) -> String {
    match result {
        Err(RunError::Memory { pc: got_pc, source }) => {
            assert_eq!(
                (got_pc, source.addr, source.access),
                (pc, addr, access),
                "{source}"
            );
            let text = RunError::Memory { pc: got_pc, source }.to_string();
            assert!(
                text.contains(&format!("insn {pc}")) && text.contains(&format!("{addr:#x}")),
                "{text}"
            );
            text
        }
        other => panic!("expected a memory error at insn {pc}, addr {addr:#x}; got {other:?}"),
    }
}

// ---- memory bounds -------------------------------------------------------------------------

const CTX_BYTES: i16 = 16;

#[test]
fn ctx_loads_and_stores_straddling_the_end_fail_at_every_width() {
    for size in [1u8, 2, 4, 8] {
        let last_ok = CTX_BYTES - i16::from(size);
        // In bounds: the last `size` bytes.
        let mut ctx = [0xabu8; CTX_BYTES as usize];
        let ok = prog(&[&[ldx(size, 0, 1, last_ok), stx(size, 1, 0, last_ok), exit()]]);
        assert!(run_on(&ok, &mut ctx).is_ok(), "size {size}");
        // One byte further: starts inside, ends one byte outside.
        let straddling_end = (last_ok + 1)..CTX_BYTES;
        let straddling_start = (1 - i16::from(size))..0;
        for bad in straddling_end
            .chain(straddling_start)
            .chain([CTX_BYTES, -1])
        {
            let addr = CTX_BASE.wrapping_add(i64::from(bad) as u64);
            let load = prog(&[&[ldx(size, 0, 1, bad), exit()]]);
            expect_memory_error(run_on(&load, &mut ctx), 0, addr, Access::Load);
            let store = prog(&[&[mov64_imm(2, 7), stx(size, 1, 2, bad), exit()]]);
            expect_memory_error(run_on(&store, &mut ctx), 1, addr, Access::Store);
            let store_imm = prog(&[&[st(size, 1, bad, 7), exit()]]);
            expect_memory_error(run_on(&store_imm, &mut ctx), 0, addr, Access::Store);
        }
        assert_eq!(
            ctx, [0xab; CTX_BYTES as usize],
            "a failed store wrote nothing"
        );
    }
}

#[test]
fn straddling_message_names_region_and_overhang() {
    let mut ctx = [0u8; 16];
    let text = expect_memory_error(
        run_on(&prog(&[&[ldx(8, 0, 1, 12), exit()]]), &mut ctx),
        0,
        CTX_BASE + 12,
        Access::Load,
    );
    assert!(
        text.contains("starts inside the context") && text.contains("ends 4 bytes past its end"),
        "{text}"
    );
}

#[test]
fn atomics_straddling_the_end_fail() {
    for size in [4u8, 8] {
        let mut ctx = [0u8; CTX_BYTES as usize];
        let ok_off = CTX_BYTES - i16::from(size);
        let ok = prog(&[&[mov64_imm(2, 1), atomic(size, 1, 2, ok_off, 0x01), exit()]]);
        assert!(run_on(&ok, &mut ctx).is_ok());
        let bad = prog(&[&[
            mov64_imm(2, 1),
            atomic(size, 1, 2, ok_off + 1, 0x01),
            exit(),
        ]]);
        expect_memory_error(
            run_on(&bad, &mut ctx),
            1,
            CTX_BASE + (ok_off + 1) as u64,
            Access::Atomic,
        );
    }
}

#[test]
fn stack_accesses_must_stay_inside_the_512_byte_frame() {
    let fp = frame_pointer(0);
    for size in [1u8, 2, 4, 8] {
        let s = i16::from(size);
        // Lowest and highest slots are fine.
        let ok = prog(&[&[
            st(size, 10, -512, 1),
            st(size, 10, -s, 2),
            ldx(size, 0, 10, -512),
            exit(),
        ]]);
        assert_eq!(run_on(&ok, &mut []).unwrap().r0, 1);
        // Straddling the top (r10) and running below the bottom both fail.
        for off in [-s + 1, -513, 0] {
            let bad = prog(&[&[ldx(size, 0, 10, off), exit()]]);
            expect_memory_error(
                run_on(&bad, &mut []),
                0,
                fp.wrapping_add(i64::from(off) as u64),
                Access::Load,
            );
        }
    }
}

#[test]
fn null_and_wild_pointers_fail() {
    for base in [0u64, 8, u64::MAX - 3, region_base(0), CTX_BASE - 1] {
        let bytes = prog(&[&lddw(1, base), &[ldx(4, 0, 1, 0), exit()]]);
        expect_memory_error(run_on(&bytes, &mut [0; 4]), 2, base, Access::Load);
    }
}

#[test]
fn extra_regions_are_mapped_at_their_base_and_read_only_is_enforced() {
    let rodata = 0x1122_3344_5566_7788u64.to_le_bytes();
    let mut values = [0u8; 8];
    let bytes = prog(&[
        &lddw(1, region_base(0)),
        &lddw(2, region_base(1)),
        &[ldx(8, 0, 1, 0), stx(8, 2, 0, 0), exit()],
    ]);
    let program = Program::from_raw(&bytes).unwrap();
    {
        let mut regions = [
            Region::read_only("rodata", &rodata),
            Region::writable("values", &mut values),
        ];
        let result = Vm::new()
            .run_with_regions(&program, &mut [], &mut regions, &Limits::default())
            .unwrap();
        assert_eq!(result.r0, 0x1122_3344_5566_7788);
    }
    assert_eq!(values, rodata);

    // A store to the read-only region, and a load straddling the writable one's end.
    let store_ro = prog(&[&lddw(1, region_base(0)), &[st(1, 1, 0, 0), exit()]]);
    let straddle = prog(&[&lddw(1, region_base(1)), &[ldx(8, 0, 1, 1), exit()]]);
    for (bytes, addr, access) in [
        (store_ro, region_base(0), Access::Store),
        (straddle, region_base(1) + 1, Access::Load),
    ] {
        let program = Program::from_raw(&bytes).unwrap();
        let mut values = [0u8; 8];
        let mut regions = [
            Region::read_only("rodata", &rodata),
            Region::writable("values", &mut values),
        ];
        let result =
            Vm::new().run_with_regions(&program, &mut [], &mut regions, &Limits::default());
        let text = expect_memory_error(result, 2, addr, access);
        assert!(text.contains("rodata") || text.contains("values"), "{text}");
    }
}

// ---- division and modulo -------------------------------------------------------------------

/// `dst(r0) OP= src(r1)` with ALU opcode `opc` (class bits included) and `off` (1 = signed).
fn divmod(opc: u8, off: i16, dst: u64, src: u64) -> u64 {
    r0(&prog(&[
        &lddw(0, dst),
        &lddw(1, src),
        &[insn(opc, 0, 1, off, 0), exit()],
    ]))
}

#[test]
fn division_and_modulo_edge_cases_follow_linux() {
    const DIV64: u8 = 0x3f;
    const MOD64: u8 = 0x9f;
    const DIV32: u8 = 0x3c;
    const MOD32: u8 = 0x9c;
    let high = 0xdead_beef_0000_0007u64;
    // By zero: div gives 0, mod keeps dst (32-bit: zero-extended), signed or not.
    for off in [0, 1] {
        assert_eq!(divmod(DIV64, off, high, 0), 0);
        assert_eq!(divmod(MOD64, off, high, 0), high);
        assert_eq!(divmod(DIV32, off, high, 0), 0);
        assert_eq!(divmod(MOD32, off, high, 0), 7);
        // A divisor whose low 32 bits are zero is zero for the 32-bit ops.
        assert_eq!(divmod(DIV32, off, high, 1 << 32), 0);
    }
    // INT_MIN / -1 wraps to INT_MIN; INT_MIN % -1 is 0.
    assert_eq!(divmod(DIV64, 1, i64::MIN as u64, u64::MAX), i64::MIN as u64);
    assert_eq!(divmod(MOD64, 1, i64::MIN as u64, u64::MAX), 0);
    assert_eq!(divmod(DIV32, 1, 0x8000_0000, 0xffff_ffff), 0x8000_0000);
    assert_eq!(divmod(MOD32, 1, 0x8000_0000, 0xffff_ffff), 0);
    // Signed results truncate toward zero; the remainder takes the dividend's sign.
    assert_eq!(divmod(DIV64, 1, -7i64 as u64, 2), -3i64 as u64);
    assert_eq!(divmod(MOD64, 1, -7i64 as u64, 2), -1i64 as u64);
    assert_eq!(
        divmod(MOD32, 1, u64::from(-7i32 as u32), 2),
        u64::from(-1i32 as u32)
    );
    // Unsigned ops treat the same bits as huge numbers.
    assert_eq!(divmod(DIV64, 0, -7i64 as u64, 2), (-7i64 as u64) / 2);
    // Immediate -1 divisors (sign-extended for 64-bit ops).
    let sdiv64_imm = prog(&[
        &lddw(0, i64::MIN as u64),
        &[insn(0x37, 0, 0, 1, -1), exit()],
    ]);
    assert_eq!(r0(&sdiv64_imm), i64::MIN as u64);
    let udiv64_imm = prog(&[&[mov64_imm(0, -1), insn(0x37, 0, 0, 0, -1), exit()]]);
    assert_eq!(
        r0(&udiv64_imm),
        1,
        "64-bit unsigned div sign-extends imm to u64::MAX"
    );
}

#[test]
fn immediate_zero_divisor_and_bad_fields_are_rejected_at_load() {
    for opc in [0x34u8, 0x37, 0x94, 0x97] {
        let bytes = prog(&[&[mov64_imm(0, 1), insn(opc, 0, 0, 0, 0), exit()]]);
        let err = Program::from_raw(&bytes).unwrap_err();
        assert!(
            matches!(err, LoadError::InvalidField { pc: 1, .. }),
            "{err}"
        );
    }
    let bad_shift = prog(&[&[insn(0x67, 0, 0, 0, 64), exit()]]);
    assert!(matches!(
        Program::from_raw(&bad_shift),
        Err(LoadError::InvalidField {
            pc: 0,
            field: "shift amount",
            ..
        })
    ));
    let bad_end = prog(&[&[insn(0xd4, 0, 0, 0, 8), exit()]]);
    assert!(matches!(
        Program::from_raw(&bad_end),
        Err(LoadError::InvalidField { pc: 0, .. })
    ));
}

#[test]
fn register_shift_amounts_are_masked() {
    // 64-bit: shift by 65 = shift by 1; 32-bit: shift by 33 = shift by 1.
    let lsh64 = prog(&[&[
        mov64_imm(0, 1),
        mov64_imm(1, 65),
        insn(0x6f, 0, 1, 0, 0),
        exit(),
    ]]);
    assert_eq!(r0(&lsh64), 2);
    let lsh32 = prog(&[&[
        mov64_imm(0, 1),
        mov64_imm(1, 33),
        insn(0x6c, 0, 1, 0, 0),
        exit(),
    ]]);
    assert_eq!(r0(&lsh32), 2);
}

#[test]
fn narrow_results_zero_extend() {
    // le16/le32 truncate, be16 swaps and truncates, movsx in the 32-bit class zero-extends.
    assert_eq!(
        r0(&prog(&[
            &lddw(0, 0x1122_3344_5566_7788),
            &[insn(0xd4, 0, 0, 0, 16), exit()]
        ])),
        0x7788
    );
    assert_eq!(
        r0(&prog(&[
            &lddw(0, 0x1122_3344_5566_7788),
            &[insn(0xd4, 0, 0, 0, 32), exit()]
        ])),
        0x5566_7788
    );
    assert_eq!(
        r0(&prog(&[
            &lddw(0, 0x1122_3344_5566_7788),
            &[insn(0xdc, 0, 0, 0, 16), exit()]
        ])),
        0x8877
    );
    assert_eq!(
        r0(&prog(&[
            &lddw(0, 0x1122_3344_5566_7788),
            &[insn(0xd7, 0, 0, 0, 32), exit()]
        ])),
        0x8877_6655
    );
    assert_eq!(
        r0(&prog(&[&[
            mov64_imm(1, -1),
            insn(0xbc, 0, 1, 8, 0),
            exit()
        ]])),
        0xffff_ffff
    );
    assert_eq!(
        r0(&prog(&[&[
            mov64_imm(1, 0x80),
            insn(0xbf, 0, 1, 8, 0),
            exit()
        ]])),
        -128i64 as u64
    );
}

#[test]
fn sign_extending_loads() {
    let mut ctx = [0x80u8, 0xff, 0x00, 0x80];
    let ldxsb = prog(&[&[insn(0x91, 0, 1, 0, 0), exit()]]);
    assert_eq!(run_on(&ldxsb, &mut ctx).unwrap().r0, -128i64 as u64);
    let ldxsh = prog(&[&[insn(0x89, 0, 1, 2, 0), exit()]]);
    assert_eq!(run_on(&ldxsh, &mut ctx).unwrap().r0, 0xffff_ffff_ffff_8000);
    let ldxsw = prog(&[&[insn(0x81, 0, 1, 0, 0), exit()]]);
    assert_eq!(run_on(&ldxsw, &mut ctx).unwrap().r0, 0xffff_ffff_8000_ff80);
}

// ---- atomics -------------------------------------------------------------------------------

/// Runs `op` on an 8-byte ctx holding `mem` with r2 = `src`, r0 = `r0_in`;
/// returns (r0, r2, memory after).
fn atomic_case(size: u8, op: i32, mem: u64, src: u64, r0_in: u64) -> (u64, u64, u64) {
    let mut ctx = mem.to_le_bytes();
    // Return r2 through r0 unless the op is cmpxchg, which owns r0: stash r0 in r3.
    let bytes = prog(&[
        &lddw(2, src),
        &lddw(0, r0_in),
        &[atomic(size, 1, 2, 0, op), mov64_reg(3, 0), exit()],
    ]);
    let program = Program::from_raw(&bytes).unwrap();
    let mut vm = Vm::new();
    let r0_out = vm.run(&program, &mut ctx, &Limits::default()).unwrap().r0;
    let r2_bytes = prog(&[
        &lddw(2, src),
        &lddw(0, r0_in),
        &[atomic(size, 1, 2, 0, op), mov64_reg(0, 2), exit()],
    ]);
    let mut ctx2 = mem.to_le_bytes();
    let r2_out = vm
        .run(
            &Program::from_raw(&r2_bytes).unwrap(),
            &mut ctx2,
            &Limits::default(),
        )
        .unwrap()
        .r0;
    assert_eq!(ctx, ctx2);
    (r0_out, r2_out, u64::from_le_bytes(ctx))
}

#[test]
fn atomics_return_values_and_effects() {
    const ADD: i32 = 0x00;
    const OR: i32 = 0x40;
    const AND: i32 = 0x50;
    const XOR: i32 = 0xa0;
    const FETCH: i32 = 0x01;
    const XCHG: i32 = 0xe1;
    const CMPXCHG: i32 = 0xf1;
    let mem = 0xffff_ffff_0000_0010u64;
    let src = 0x1_0000_0003u64;
    // Without fetch the source register is untouched.
    assert_eq!(
        atomic_case(8, ADD, mem, src, 0),
        (0, src, mem.wrapping_add(src))
    );
    assert_eq!(atomic_case(8, OR, mem, src, 0), (0, src, mem | src));
    assert_eq!(atomic_case(8, AND, mem, src, 0), (0, src, mem & src));
    assert_eq!(atomic_case(8, XOR, mem, src, 0), (0, src, mem ^ src));
    // With fetch the source register receives the old value.
    assert_eq!(
        atomic_case(8, ADD | FETCH, mem, src, 0),
        (0, mem, mem.wrapping_add(src))
    );
    assert_eq!(atomic_case(8, XCHG, mem, src, 0), (0, mem, src));
    // 32-bit: only the low word changes; fetched values are zero-extended.
    assert_eq!(
        atomic_case(4, ADD | FETCH, mem, src, 0),
        (0, 0x10, 0xffff_ffff_0000_0013)
    );
    assert_eq!(
        atomic_case(4, XOR | FETCH, mem, src, 0),
        (0, 0x10, 0xffff_ffff_0000_0013)
    );
    assert_eq!(
        atomic_case(4, XCHG, mem, src, 0),
        (0, 0x10, 0xffff_ffff_0000_0003)
    );
    // cmpxchg: r0 gets the old value either way; memory changes only on a match.
    assert_eq!(atomic_case(8, CMPXCHG, mem, src, mem), (mem, src, src));
    assert_eq!(atomic_case(8, CMPXCHG, mem, src, 1), (mem, src, mem));
    // 32-bit cmpxchg compares the low words only and zero-extends r0.
    assert_eq!(
        atomic_case(4, CMPXCHG, mem, src, 0xdead_0000_0000_0010),
        (0x10, src, 0xffff_ffff_0000_0003)
    );
    assert_eq!(atomic_case(4, CMPXCHG, mem, src, 0x11), (0x10, src, mem));
}

#[test]
fn rmw_atomics_on_bytes_and_fetch_into_r10_are_rejected() {
    let byte_add = prog(&[&[insn(0xd3, 1, 2, 0, 0), exit()]]);
    assert!(matches!(
        Program::from_raw(&byte_add),
        Err(LoadError::InvalidField { pc: 0, .. })
    ));
    let fetch_r10 = prog(&[&[atomic(8, 1, 10, 0, 0x01), exit()]]);
    assert!(matches!(
        Program::from_raw(&fetch_r10),
        Err(LoadError::WritesFramePointer { pc: 0 })
    ));
}

// ---- calls and stack isolation -------------------------------------------------------------

#[test]
fn nested_calls_have_private_frames_and_restore_callee_saved_registers() {
    let bytes = prog(&[&[
        // main: its slot = 111, r6 = 6; call f; r0 = slot + r6 + f's result.
        st(8, 10, -8, 111),
        mov64_imm(6, 6),
        call_local(4), // -> 7
        ldx(8, 1, 10, -8),
        add64_reg(0, 1),
        add64_reg(0, 6),
        exit(),
        // f (7): clobbers r6, writes its own slot at the same offset, calls g, returns slot + g.
        mov64_imm(6, 1000),
        st(8, 10, -8, 222),
        call_local(3), // -> 12
        ldx(8, 1, 10, -8),
        add64_reg(0, 1),
        exit(),
        // g (12): a third frame; its slot starts zeroed.
        ldx(8, 0, 10, -8),
        add64_imm(0, 5),
        exit(),
    ]]);
    assert_eq!(r0(&bytes), 111 + 6 + 222 + 5);
}

#[test]
fn callee_may_use_a_pointer_into_the_callers_frame_but_not_the_reverse_after_return() {
    let through_pointer = prog(&[&[
        mov64_reg(1, 10),
        add64_imm(1, -8),
        call_local(2), // -> 5
        ldx(8, 0, 10, -8),
        exit(),
        st(8, 1, 0, 42), // f writes the caller's slot through r1
        exit(),
    ]]);
    assert_eq!(r0(&through_pointer), 42);

    let dangling = prog(&[&[
        call_local(2),   // -> 3
        ldx(8, 0, 0, 0), // dereference the callee's dead frame
        exit(),
        mov64_reg(0, 10),
        add64_imm(0, -8),
        exit(),
    ]]);
    let addr = frame_pointer(1) - 8;
    let text = expect_memory_error(run_on(&dangling, &mut []), 1, addr, Access::Load);
    assert!(text.contains("not active"), "{text}");
}

#[test]
fn call_depth_is_limited_to_eight_frames() {
    // f(n): if n == 0 return 0; return f(n - 1) + 1. Frames used: 1 + n + 1... main + (n+1).
    let recurse = |n: i32| {
        prog(&[&[
            mov64_imm(1, n),
            call_local(1), // -> 3
            exit(),
            mov64_imm(0, 0),
            insn(0x15, 1, 0, 3, 0), // if r1 == 0 goto exit (8)
            add64_imm(1, -1),
            call_local(-4), // -> 3
            add64_imm(0, 1),
            exit(),
        ]])
    };
    let deepest_ok = (FRAMES_MAX - 2) as i32;
    assert_eq!(r0(&recurse(deepest_ok)), deepest_ok as u64);
    match run_on(&recurse(deepest_ok + 1), &mut []) {
        Err(RunError::CallDepthExceeded {
            pc: 6,
            frames_max: FRAMES_MAX,
        }) => {}
        other => panic!("{other:?}"),
    }
}

// ---- budgets -------------------------------------------------------------------------------

#[test]
fn runaway_loops_exhaust_the_instruction_budget() {
    let program = Program::from_raw(&prog(&[&[mov64_imm(0, 0), add64_imm(0, 1), ja(-2)]])).unwrap();
    let limits = Limits { insns_max: 1000 };
    match Vm::new().run(&program, &mut [], &limits) {
        Err(RunError::InsnBudgetExhausted {
            insns_max: 1000, ..
        }) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn executed_instructions_are_counted_exactly() {
    // lddw counts once; the loop body runs 3 times.
    let bytes = prog(&[
        &lddw(0, 0),
        &[add64_imm(0, 1), insn(0xa5, 0, 0, -2, 3), exit()],
    ]);
    let program = Program::from_raw(&bytes).unwrap();
    let result = Vm::new()
        .run(&program, &mut [], &Limits::default())
        .unwrap();
    assert_eq!(
        result,
        RunResult {
            r0: 3,
            insns_executed: 1 + 3 * 2 + 1
        }
    );
    // A budget of exactly that many suffices; one less does not.
    assert!(Vm::new()
        .run(&program, &mut [], &Limits { insns_max: 8 })
        .is_ok());
    assert!(Vm::new()
        .run(&program, &mut [], &Limits { insns_max: 7 })
        .is_err());
}

/// Counts loop iterations until may_goto jumps: `r0 = 0; loop { may_goto out; r0 += 1 }`.
const MAY_GOTO_COUNTER: [[u8; 8]; 4] = [
    [0xb7, 0, 0, 0, 0, 0, 0, 0],       // r0 = 0
    [0xe5, 0, 2, 0, 0, 0, 0, 0],       // may_goto +2
    [0x07, 0, 0, 0, 1, 0, 0, 0],       // r0 += 1
    [0x05, 0, 0xfd, 0xff, 0, 0, 0, 0], // ja -3
];

#[test]
fn may_goto_falls_through_bpf_max_loops_times_then_jumps() {
    let bytes = prog(&[&MAY_GOTO_COUNTER, &[exit()]]);
    assert_eq!(bytes[8..16], may_goto(2));
    assert_eq!(r0(&bytes), MAY_GOTO_LOOPS_MAX);
}

#[test]
fn may_goto_budget_is_per_function_invocation() {
    // main calls the counter twice and sums: each call starts with a full budget.
    let bytes = prog(&[
        &[
            call_local(4),
            mov64_reg(6, 0),
            call_local(2),
            add64_reg(0, 6),
            exit(),
        ],
        &MAY_GOTO_COUNTER,
        &[exit()],
    ]);
    assert_eq!(r0(&bytes), 2 * MAY_GOTO_LOOPS_MAX);
}

// ---- load-time validation ------------------------------------------------------------------

#[test]
fn malformed_programs_are_rejected_with_the_instruction_index() {
    let cases: Vec<(Vec<u8>, LoadError)> = vec![
        (
            vec![0x95; 12],
            LoadError::LengthNotMultiple { len_bytes: 12 },
        ),
        (vec![], LoadError::Empty),
        (
            prog(&[&[mov64_imm(0, 0), insn(0xff, 0, 0, 0, 0), exit()]]),
            LoadError::UnknownOpcode {
                pc: 1,
                opcode: 0xff,
                note: "",
            },
        ),
        (
            prog(&[&[insn(0x85, 0, 2, 0, 7), exit()]]),
            LoadError::UnknownOpcode {
                pc: 0,
                opcode: 0x85,
                note: "kfunc calls (src_reg=2) are not supported",
            },
        ),
        (
            prog(&[&[ja(5), exit()]]),
            LoadError::BadTarget {
                pc: 0,
                kind: "jump",
                target: 6,
                why: "out of range",
                insns: 2,
            },
        ),
        (
            prog(&[&[call_local(-3), exit()]]),
            LoadError::BadTarget {
                pc: 0,
                kind: "call",
                target: -2,
                why: "out of range",
                insns: 2,
            },
        ),
        (
            prog(&[&[ja(1)], &lddw(0, 1), &[exit()]]),
            LoadError::BadTarget {
                pc: 0,
                kind: "jump",
                target: 2,
                why: "the second half of an lddw",
                insns: 4,
            },
        ),
        (
            prog(&[&[exit(), insn(0x18, 0, 0, 0, 1)]]),
            LoadError::LddwIncomplete { pc: 1 },
        ),
        (
            prog(&[&[mov64_imm(10, 1), exit()]]),
            LoadError::WritesFramePointer { pc: 0 },
        ),
        (
            prog(&[&[mov64_imm(11, 1), exit()]]),
            LoadError::InvalidRegister { pc: 0, reg: 11 },
        ),
        (
            prog(&[&[mov64_imm(0, 1)]]),
            LoadError::FallsOffEnd { pc: 0 },
        ),
    ];
    for (bytes, expected) in cases {
        assert_eq!(Program::from_raw(&bytes).unwrap_err(), expected);
    }
    let text = Program::from_raw(&prog(&[&[mov64_imm(0, 0), insn(0xff, 0, 0, 0, 0), exit()]]))
        .unwrap_err()
        .to_string();
    assert!(text.contains("insn 1") && text.contains("0xff"), "{text}");
}

#[test]
fn unknown_helpers_fail_before_anything_runs() {
    let program = Program::from_raw(&prog(&[&[st(8, 1, 0, 9), call_helper(77), exit()]])).unwrap();
    let mut ctx = [0u8; 8];
    let vm = Vm::new();
    assert_eq!(
        vm.check(&program),
        Err(LoadError::UnknownHelper { pc: 1, id: 77 })
    );
    match Vm::new().run(&program, &mut ctx, &Limits::default()) {
        Err(RunError::Load(LoadError::UnknownHelper { pc: 1, id: 77 })) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(ctx, [0; 8], "the store before the call never ran");
}

// ---- helpers -------------------------------------------------------------------------------

#[test]
fn helpers_are_per_vm_stateful_and_reach_memory_through_checks() {
    // helper 1: sums `len` bytes at `ptr` (r1, r2) and counts its calls in its own state.
    let mut calls = 0u64;
    let sum = move |args: [u64; 5], memory: &mut Memory<'_, '_>| -> Result<u64, HelperError> {
        calls += 1;
        let bytes = memory.read(args[0], args[1])?;
        Ok(bytes.iter().map(|&b| u64::from(b)).sum::<u64>() * 1000 + calls)
    };
    let mut vm = Vm::new();
    vm.register_helper(1, sum);
    let mut other = Vm::new();
    other.register_helper(1, |_: [u64; 5], _: &mut Memory<'_, '_>| Ok(7));

    let program = Program::from_raw(&prog(&[&[call_helper(1), exit()]])).unwrap();
    let mut ctx = [1u8, 2, 3];
    assert_eq!(
        vm.run(&program, &mut ctx, &Limits::default()).unwrap().r0,
        6001
    );
    assert_eq!(
        vm.run(&program, &mut ctx, &Limits::default()).unwrap().r0,
        6002
    );
    assert_eq!(
        other
            .run(&program, &mut ctx, &Limits::default())
            .unwrap()
            .r0,
        7
    );

    // A helper asked to read past the context fails the run with the call's pc and helper id.
    let too_long = Program::from_raw(&prog(&[&[add64_imm(2, 1), call_helper(1), exit()]])).unwrap();
    match vm.run(&too_long, &mut ctx, &Limits::default()) {
        Err(RunError::Helper {
            pc: 1,
            id: 1,
            source,
        }) => assert!(source.0.contains("ends 1 bytes past"), "{source}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn addresses_are_deterministic() {
    let bytes = prog(&[&[mov64_reg(0, 10), add64_reg(0, 1), exit()]]);
    let a = run_on(&bytes, &mut [0; 4]).unwrap();
    let b = run_on(&bytes, &mut [0; 4]).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.r0, frame_pointer(0).wrapping_add(CTX_BASE));
}

// ---- robustness ----------------------------------------------------------------------------

/// Opcodes worth generating: every class, valid and invalid, weighted toward real ones.
const OPCODES: &[u8] = &[
    0x04, 0x07, 0x0c, 0x0f, 0x14, 0x17, 0x1c, 0x1f, 0x24, 0x27, 0x2c, 0x2f, 0x34, 0x37, 0x3c, 0x3f,
    0x44, 0x47, 0x4c, 0x4f, 0x54, 0x57, 0x5c, 0x5f, 0x64, 0x67, 0x6c, 0x6f, 0x74, 0x77, 0x7c, 0x7f,
    0x84, 0x87, 0x94, 0x97, 0x9c, 0x9f, 0xa4, 0xa7, 0xac, 0xaf, 0xb4, 0xb7, 0xbc, 0xbf, 0xc4, 0xc7,
    0xcc, 0xcf, 0xd4, 0xd7, 0xdc, 0x18, 0x61, 0x69, 0x71, 0x79, 0x81, 0x89, 0x91, 0x62, 0x6a, 0x72,
    0x7a, 0x63, 0x6b, 0x73, 0x7b, 0xc3, 0xdb, 0xd3, 0x05, 0x06, 0x15, 0x1d, 0x16, 0x25, 0x2d, 0x35,
    0x3d, 0x45, 0x4d, 0x55, 0x5d, 0x65, 0x6d, 0x75, 0x7d, 0xa5, 0xad, 0xb5, 0xbd, 0xc5, 0xcd, 0xd5,
    0xdd, 0xa6, 0xd6, 0x85, 0x8d, 0x95, 0xe5, 0x00, 0x20, 0xff,
];

fn arbitrary_insn() -> impl Strategy<Value = [u8; 8]> {
    (
        prop_oneof![4 => prop::sample::select(OPCODES), 1 => any::<u8>()],
        0u8..12,
        0u8..12,
        prop_oneof![3 => -8i16..8, 1 => any::<i16>()],
        prop_oneof![
            2 => -4i32..70,
            1 => prop::sample::select(vec![0x01, 0x41, 0x51, 0xa1, 0xe1, 0xf1, 0x100, 0x110, 16, 32, 64]),
            1 => any::<i32>()
        ],
    )
        .prop_map(|(opc, dst, src, off, imm)| insn(opc, dst, src, off, imm))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    /// Any byte string: load and run end in Ok or Err, never a panic.
    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(program) = Program::from_raw(&bytes) {
            let mut ctx = [0u8; 16];
            let _ = Vm::new().run(&program, &mut ctx, &Limits { insns_max: 10_000 });
        }
    }

    /// Instruction streams built from real opcodes, so many pass validation and really run.
    #[test]
    fn random_instruction_streams_never_panic(
        insns in prop::collection::vec(arbitrary_insn(), 1..48),
        ctx_len in 0usize..64,
    ) {
        let mut bytes: Vec<u8> = insns.iter().flatten().copied().collect();
        bytes.extend_from_slice(&exit());
        if let Ok(program) = Program::from_raw(&bytes) {
            let mut vm = Vm::new();
            vm.register_helper(1, |args: [u64; 5], memory: &mut Memory<'_, '_>| {
                let len = args[1] % 64;
                Ok(memory.read(args[0], len)?.len() as u64)
            });
            let mut ctx = vec![0x5a; ctx_len];
            let _ = vm.run(&program, &mut ctx, &Limits { insns_max: 100_000 });
        }
    }
}
