//! The bpf_conformance vectors, read at test time from `../shared/conformance` (see its
//! README): every case Linux 6.18 accepted must return the expected r0, all 64 bits. A second
//! test measures raw rbpf 0.4.1's interpreter on the same cases, the baseline this runtime
//! replaced.

#[macro_use]
mod common;

use std::panic::{self, AssertUnwindSafe};

use common::{accepted_cases, Case};

use resystance_vm::exec::{Limits, Memory, Program, Vm};

/// Cases Linux 6.18 accepted (`linux-6.18.txt`).
const LINUX_ACCEPTED_CASES: usize = 292;
/// Cases raw rbpf 0.4.1's interpreter gets right in a release build, helper 5 registered.
/// (DESIGN.md §4's 203 is this without helper 5, which `call_unwind_fail` needs.)
const RBPF_RAW_PASSING_RELEASE: usize = 204;
/// The same with overflow checks on (see the test).
const RBPF_RAW_PASSING_DEBUG: usize = 202;
/// Helper id 5 is `bpf_ktime_get_ns` in Linux; the suite's `call_unwind_fail` calls it and
/// only needs it to return.
const HELPER_KTIME_GET_NS: u32 = 5;

/// Runs every case through our VM; returns the failures, one line each.
fn our_failures(cases: &[Case]) -> Vec<String> {
    let mut vm = Vm::new();
    // A virtual clock stopped at 0 is enough: the case only needs the call to return.
    vm.register_helper(
        HELPER_KTIME_GET_NS,
        |_: [u64; 5], _: &mut Memory<'_, '_>| Ok(0),
    );
    let mut failures = Vec::new();
    for case in cases {
        let mut mem = case.mem.clone();
        let outcome = Program::from_raw(&case.program)
            .map_err(|e| e.to_string())
            .and_then(|p| {
                vm.run(&p, &mut mem, &Limits::default())
                    .map_err(|e| e.to_string())
            });
        match outcome {
            Ok(result) if result.r0 == case.expected_r0 => {}
            Ok(result) => failures.push(format!(
                "{}: r0 {:#x}, expected {:#x}",
                case.name, result.r0, case.expected_r0
            )),
            Err(e) => failures.push(format!("{}: {e}", case.name)),
        }
    }
    failures
}

fn rbpf_ktime_stand_in(_: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
    0
}

/// What raw rbpf 0.4.1 did with one case.
enum RbpfOutcome {
    R0(u64),
    Refused,
    Panicked,
}

/// One case through rbpf 0.4.1's own verifier and interpreter, r1 = mem (rbpf sets no r2).
fn rbpf_raw(case: &Case) -> RbpfOutcome {
    let mut mem = case.mem.clone();
    let program = case.program.clone();
    let outcome = panic::catch_unwind(AssertUnwindSafe(move || {
        let mut vm = rbpf::EbpfVmRaw::new(Some(&program)).ok()?;
        vm.register_helper(HELPER_KTIME_GET_NS, rbpf_ktime_stand_in)
            .ok()?;
        vm.execute_program(&mut mem).ok()
    }));
    match outcome {
        Ok(Some(r0)) => RbpfOutcome::R0(r0),
        Ok(None) => RbpfOutcome::Refused,
        Err(_) => RbpfOutcome::Panicked,
    }
}

/// One test (so the panic hook can be silenced while rbpf runs without hiding another test's
/// output): our VM must pass every case; rbpf's count is measured and pinned.
#[test]
fn linux_accepted_cases_return_the_expected_r0() {
    let Some(cases) = accepted_cases("conformance") else {
        return;
    };
    assert_eq!(
        cases.len(),
        LINUX_ACCEPTED_CASES,
        "linux-6.18.txt lists {LINUX_ACCEPTED_CASES} accepted cases"
    );
    let failures = our_failures(&cases);
    say!(
        "conformance: {}/{} Linux-accepted cases pass",
        cases.len() - failures.len(),
        cases.len()
    );

    let quiet_hook = panic::take_hook();
    panic::set_hook(Box::new(|_| {}));
    let rbpf: Vec<RbpfOutcome> = cases.iter().map(rbpf_raw).collect();
    panic::set_hook(quiet_hook);
    let rbpf_passed = cases
        .iter()
        .zip(&rbpf)
        .filter(|(c, o)| matches!(o, RbpfOutcome::R0(r0) if *r0 == c.expected_r0))
        .count();
    let rbpf_panicked = rbpf
        .iter()
        .filter(|o| matches!(o, RbpfOutcome::Panicked))
        .count();
    let rbpf_refused = rbpf
        .iter()
        .filter(|o| matches!(o, RbpfOutcome::Refused))
        .count();
    say!(
        "raw rbpf 0.4.1 interpreter: {rbpf_passed}/{} pass ({rbpf_refused} refused or errored, {rbpf_panicked} panicked)",
        cases.len()
    );

    assert!(
        failures.is_empty(),
        "failing cases:\n{}",
        failures.join("\n")
    );
    // rbpf computes `-(x as i64)`, which panics on i64::MIN when overflow checks are on
    // (neg64-intmin-imm/-reg): 2 cases more fail in debug/test builds than in release.
    let rbpf_expected = if cfg!(debug_assertions) {
        RBPF_RAW_PASSING_DEBUG
    } else {
        RBPF_RAW_PASSING_RELEASE
    };
    assert_eq!(rbpf_passed, rbpf_expected, "rbpf 0.4.1's baseline moved");
}
