//! rbpf's JIT fast mode (`resystance_vm::jit`) against our checked interpreter: on every
//! bpf_conformance case Linux 6.18 accepted and the JIT compiles, both must return the same r0
//! (the suite is read from `../shared/conformance`, as `tests/conformance.rs` does); and the
//! instructions the JIT lacks must be refused by index, not miscompiled.
#![cfg(all(target_arch = "x86_64", not(windows)))]

#[macro_use]
mod common;

use std::collections::BTreeMap;

use common::accepted_cases;

use resystance_vm::exec::{Limits, Program, Vm};
use resystance_vm::jit::{JitError, JitProgram, LinuxVerified};

/// Linux-accepted cases the JIT compiles (the rest use helpers, ISA v4, atomics, mov32 from a
/// register, ...). Pinned so that a change in what is refused is noticed.
const JIT_COMPILED_CASES: usize = 185;

fn program(insns: &[[u8; 8]]) -> Program {
    Program::from_raw(&insns.concat()).expect("valid program")
}

#[test]
fn jit_matches_the_interpreter_on_every_linux_accepted_case_it_compiles() {
    let Some(cases) = accepted_cases("jit conformance") else {
        return;
    };
    let mut vm = Vm::new();
    let mut compiled = 0;
    let mut refusals: BTreeMap<String, usize> = BTreeMap::new();
    let mut mismatches = Vec::new();
    for case in &cases {
        // A few accepted cases need a helper; the interpreter's run of those is irrelevant
        // here because the JIT refuses helper calls.
        let program = Program::from_raw(&case.program).expect("Linux-accepted cases load");
        // SAFETY: `linux-6.18.txt` records that Linux 6.18's verifier accepted exactly these
        // instructions with this memory buffer as context.
        let verified = unsafe { LinuxVerified::assume_verified(&program) };
        let jit = match JitProgram::compile(verified) {
            Ok(jit) => jit,
            Err(JitError::Unsupported { what, .. }) => {
                *refusals.entry(what.to_string()).or_default() += 1;
                continue;
            }
            Err(e) => panic!("{}: unexpected refusal: {e}", case.name),
        };
        compiled += 1;
        let mut interp_mem = case.mem.clone();
        let interp = vm
            .run(&program, &mut interp_mem, &Limits::default())
            .unwrap_or_else(|e| panic!("{}: interpreter: {e}", case.name));
        let mut jit_mem = case.mem.clone();
        let r0 = jit.run(&mut jit_mem);
        if r0 != interp.r0 || jit_mem != interp_mem {
            mismatches.push(format!(
                "{}: jit r0 {r0:#x}, interpreter r0 {:#x}{}",
                case.name,
                interp.r0,
                if jit_mem == interp_mem {
                    ""
                } else {
                    " (memory differs)"
                }
            ));
        }
    }
    let refused: Vec<String> = refusals.iter().map(|(w, n)| format!("{w}: {n}")).collect();
    say!(
        "jit conformance: {compiled}/{} Linux-accepted cases compiled, {} match the interpreter (r0 and memory); refused: {}",
        cases.len(),
        compiled - mismatches.len(),
        refused.join(", ")
    );
    assert!(
        mismatches.is_empty(),
        "JIT differs:\n{}",
        mismatches.join("\n")
    );
    assert_eq!(
        compiled, JIT_COMPILED_CASES,
        "the set of JIT-compiled cases moved"
    );
}

#[test]
fn isa_v4_sdiv_is_refused_naming_its_index() {
    let p = program(&[
        [0xb7, 0x00, 0, 0, 7, 0, 0, 0], // mov r0, 7
        [0x37, 0x00, 1, 0, 2, 0, 0, 0], // sdiv r0, 2 (ISA v4: off = 1)
        [0x95, 0x00, 0, 0, 0, 0, 0, 0], // exit
    ]);
    // SAFETY: never run; only compiled, and compiling refuses it.
    let err = JitProgram::compile(unsafe { LinuxVerified::assume_verified(&p) }).unwrap_err();
    assert!(
        matches!(
            err,
            JitError::Unsupported {
                pc: 1,
                opcode: 0x37,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with("insn 1 (opcode 0x37): sdiv/smod (ISA v4)"),
        "{err}"
    );
}

#[test]
fn atomics_helpers_mod32_and_mov32_from_registers_are_refused() {
    let cases: [(&[[u8; 8]], usize, u8); 4] = [
        (
            &[
                [0xb7, 0x00, 0, 0, 0xff, 0xff, 0xff, 0xff], // r0 = -1
                [0xb4, 0x01, 0, 0, 0, 0, 0, 0],             // w1 = 0
                [0x9c, 0x10, 0, 0, 0, 0, 0, 0],             // w0 %= w1 (Linux: r0 = 0xffffffff)
                [0x95, 0, 0, 0, 0, 0, 0, 0],
            ],
            2,
            0x9c,
        ),
        (
            &[
                [0xb7, 0x01, 0, 0, 1, 0, 0, 0],       // mov r1, 1
                [0xdb, 0x1a, 0xf8, 0xff, 0, 0, 0, 0], // lock *(u64 *)(r10 - 8) += r1
                [0x95, 0, 0, 0, 0, 0, 0, 0],
            ],
            1,
            0xdb,
        ),
        (
            &[
                [0x85, 0, 0, 0, 5, 0, 0, 0], // call 5
                [0x95, 0, 0, 0, 0, 0, 0, 0],
            ],
            0,
            0x85,
        ),
        (
            &[
                [0xbc, 0x10, 0, 0, 0, 0, 0, 0], // w0 = w1
                [0x95, 0, 0, 0, 0, 0, 0, 0],
            ],
            0,
            0xbc,
        ),
    ];
    for (insns, pc, opcode) in cases {
        let p = program(insns);
        // SAFETY: never run; only compiled, and compiling refuses it.
        let err = JitProgram::compile(unsafe { LinuxVerified::assume_verified(&p) }).unwrap_err();
        assert!(
            matches!(err, JitError::Unsupported { pc: p_, opcode: o, .. } if p_ == pc && o == opcode),
            "{err:?}"
        );
    }
}

#[test]
fn oversized_machine_code_is_refused_not_a_panic() {
    // 2000 `mov r0, 1` need ~14 KB of x86 code, beyond rbpf's one-page buffer.
    let mut insns = vec![[0xb7, 0x00, 0, 0, 1, 0, 0, 0]; 2000];
    insns.push([0x95, 0, 0, 0, 0, 0, 0, 0]);
    let p = program(&insns);
    // SAFETY: never run; compiling refuses it.
    let err = JitProgram::compile(unsafe { LinuxVerified::assume_verified(&p) }).unwrap_err();
    assert_eq!(err, JitError::CodeTooLarge { insns: 2001 });
}

#[test]
fn r1_is_the_buffer_and_r2_its_length() {
    // r0 = r2 + *(u64 *)(r1 + 0); *(u64 *)(r1 + 8) = r0
    let p = program(&[
        [0xbf, 0x20, 0, 0, 0, 0, 0, 0], // r0 = r2
        [0x79, 0x13, 0, 0, 0, 0, 0, 0], // r3 = *(u64 *)(r1 + 0)
        [0x0f, 0x30, 0, 0, 0, 0, 0, 0], // r0 += r3
        [0x7b, 0x01, 8, 0, 0, 0, 0, 0], // *(u64 *)(r1 + 8) = r0
        [0x95, 0, 0, 0, 0, 0, 0, 0],    // exit
    ]);
    // SAFETY: these instructions only touch bytes 0..16 of a 16-byte buffer, and terminate:
    // Linux's verifier accepts them for such a context.
    let jit = JitProgram::compile(unsafe { LinuxVerified::assume_verified(&p) }).expect("compiles");
    let mut mem = [0u8; 16];
    mem[..8].copy_from_slice(&1000u64.to_le_bytes());
    assert_eq!(jit.run(&mut mem), 1016);
    assert_eq!(mem[8..], 1016u64.to_le_bytes());
}
