//! End to end: committed clang objects loaded with `loader::load` and run in the vm, checking
//! return values, helper effects and map contents afterwards.

use resystance_vm::exec::encode_insn as insn;
use std::sync::Arc;

use resystance_vm::exec::{region_base, RunError};
use resystance_vm::helpers::ManualClock;
use resystance_vm::loader::{load, LoadOptions, LoadedProgram, LoaderError};
use resystance_vm::maps::errno::{E2BIG, EEXIST, EFAULT, EINVAL, ENOENT, EPERM};
use resystance_vm::maps::BPF_ANY;
use resystance_vm::object::Object;

fn object(file: &str, bytes: &[u8]) -> Object {
    Object::parse(Object::name_from_file_name(file), bytes).expect("committed object parses")
}

fn load_with(obj: &Object, program: &str, clock: Arc<ManualClock>, seed: u64) -> LoadedProgram {
    let mut options = LoadOptions::new(clock);
    options.prandom_seed = seed;
    load(obj, program, &options).unwrap_or_else(|e| panic!("loading {program}: {e}"))
}

fn load_default(obj: &Object, program: &str) -> LoadedProgram {
    load_with(obj, program, Arc::new(ManualClock::new(0)), 1)
}

fn u64_at(bytes: &[u8], index: usize) -> u64 {
    u64::from_le_bytes(bytes[index * 8..index * 8 + 8].try_into().expect("8 bytes"))
}

const MAPS_AND_GLOBALS: &[u8] = include_bytes!("data/maps_and_globals.o");
const SHARED_SUBPROG: &[u8] = include_bytes!("data/shared_subprog.o");
const RUN_MAPS: &[u8] = include_bytes!("data/run_maps.o");
const RUN_HELPERS: &[u8] = include_bytes!("data/run_helpers.o");
const RUN_RINGBUF: &[u8] = include_bytes!("data/run_ringbuf.o");

#[test]
fn maps_and_globals_updates_maps_and_global_data() {
    let obj = object("maps_and_globals.o", MAPS_AND_GLOBALS);
    let mut prog = load_default(&obj, "run");
    // mix(x) = x * scale + bias + limit + hidden++, with scale 7, bias 0x11223344,
    // limit 1000 (.rodata) and hidden starting at 9 (.data).
    let first = 0x1122_3344 + 1000 + 9;
    let second = first * 7 + 0x1122_3344 + 1000 + 10;
    for (run, expected) in [(1u64, first), (2, second)] {
        let result = prog.run(&mut []).expect("run succeeds");
        assert_eq!(result.r0, 0);
        let blocks = prog.map_mmap("blocks").expect("blocks is mmapable");
        assert_eq!(u64_at(blocks, 0), expected, "blocks[0] after run {run}");
        let bss = prog
            .map_mmap("maps_and.bss")
            .expect("global data is mmapable");
        assert_eq!(u64_at(bss, 0), run, "counter after run {run}");
    }
    let value: Vec<u8> = [1u64, 2].iter().flat_map(|v| v.to_le_bytes()).collect();
    assert_eq!(
        prog.map_lookup("index_map", &42u64.to_le_bytes()).unwrap(),
        Some(value.clone())
    );
    assert_eq!(
        prog.map_lookup("index_map", b"idx-key\0").unwrap(),
        Some(value)
    );
    assert_eq!(prog.map_keys("index_map").unwrap().len(), 2);
    // .rodata is frozen: user space cannot change it either.
    let err = prog
        .map_update("maps_and.rodata", &0u32.to_le_bytes(), &[0; 4], BPF_ANY)
        .unwrap_err();
    assert_eq!(err.errno, EPERM, "{err}");
    assert_eq!(
        prog.map_mmap_mut("maps_and.rodata").unwrap_err().errno,
        EPERM
    );
    // Host writes through the mmapable view are what the next run sees.
    prog.map_mmap_mut("blocks").unwrap()[..8].copy_from_slice(&0u64.to_le_bytes());
    prog.run(&mut []).unwrap();
    assert_eq!(
        u64_at(prog.map_mmap("blocks").unwrap(), 0),
        0x1122_3344 + 1000 + 11
    );
}

#[test]
fn shared_subprog_programs_return_their_values() {
    let obj = object("shared_subprog.o", SHARED_SUBPROG);
    assert_eq!(load_default(&obj, "first").run(&mut []).unwrap().r0, 14);
    assert_eq!(load_default(&obj, "second").run(&mut []).unwrap().r0, 22);
    let err = load(
        &obj,
        "third",
        &LoadOptions::new(Arc::new(ManualClock::new(0))),
    )
    .unwrap_err();
    assert!(matches!(err, LoaderError::NoSuchProgram { .. }), "{err}");
    assert!(err.to_string().contains("first, second"), "{err}");
}

#[test]
fn map_helpers_return_kernel_codes() {
    let obj = object("run_maps.o", RUN_MAPS);
    let mut prog = load_default(&obj, "exercise");
    let result = prog.run(&mut []).expect("run succeeds");
    assert_eq!(result.r0, 11, "number of recorded codes");
    let bss = prog.map_mmap("run_maps.bss").unwrap().to_vec();
    let codes: Vec<i64> = (0..11).map(|i| u64_at(&bss, i) as i64).collect();
    let e = |errno: i32| -i64::from(errno);
    assert_eq!(
        codes,
        [
            0,
            e(EEXIST),
            e(ENOENT),
            e(E2BIG),
            e(EINVAL),
            e(ENOENT),
            0,
            e(E2BIG),
            e(EEXIST),
            e(EINVAL),
            0
        ]
    );
    assert_eq!(
        prog.map_lookup("table", &1u32.to_le_bytes()).unwrap(),
        Some(123u64.to_le_bytes().to_vec())
    );
    assert_eq!(prog.map_lookup("table", &4u32.to_le_bytes()).unwrap(), None);
    let slots = prog.map_mmap("slots").unwrap();
    assert_eq!(u64_at(slots, 0), 1000, "slots[0] = limit from .rodata");
    assert_eq!(u64_at(slots, 1), 0xabcdef);
    assert_eq!(
        prog.map_lookup("per_cpu", &0u32.to_le_bytes()).unwrap(),
        Some(1u64.to_le_bytes().to_vec())
    );
}

#[test]
fn reading_past_a_map_value_faults_with_pc_and_address() {
    let obj = object("run_maps.o", RUN_MAPS);
    let mut prog = load_default(&obj, "read_past_value");
    let err = prog.run(&mut []).unwrap_err();
    let RunError::Memory { pc, source } = &err else {
        panic!("expected a memory error, got {err}");
    };
    let slots_index = obj.map("slots").unwrap().0;
    // Two 8-byte values: the read starts right at the region's end.
    assert_eq!(source.addr, region_base(slots_index) + 16, "{err}");
    let message = err.to_string();
    assert!(
        message.starts_with(&format!("insn {pc}: 8-byte load at ")),
        "{message}"
    );
    assert!(message.contains("'slots'"), "{message}");
}

#[test]
fn storing_into_rodata_faults() {
    let obj = object("run_maps.o", RUN_MAPS);
    let err = load_default(&obj, "write_rodata").run(&mut []).unwrap_err();
    assert!(err.to_string().contains("read-only"), "{err}");
}

#[test]
fn helpers_use_the_vm_clock_seed_log_and_user_memory() {
    let obj = object("run_helpers.o", RUN_HELPERS);
    let clock = Arc::new(ManualClock::new(5_000));
    let mut prog = load_with(&obj, "helpers", Arc::clone(&clock), 42);
    let user_base = 0x7f00_0000_1000u64;
    prog.map_user_memory(user_base, b"userdata".to_vec());
    let mut ctx = [0u8; 16];
    ctx[..8].copy_from_slice(&user_base.to_le_bytes());
    ctx[8..].copy_from_slice(&0xdead_0000u64.to_le_bytes());
    // Pre-set the destination of the faulting copy so zeroing is visible.
    prog.map_mmap_mut("run_help.bss").unwrap()[88..96].fill(0xff);
    assert_eq!(prog.run(&mut ctx).unwrap().r0, 0);
    let bss = prog.map_mmap("run_help.bss").unwrap().to_vec();
    assert_eq!(u64_at(&bss, 0), 5_000, "ktime_get_ns");
    assert_eq!(u64_at(&bss, 1), 5_000, "ktime_get_boot_ns");
    let (r1, r2) = (u64_at(&bss, 2), u64_at(&bss, 3));
    assert!(r1 <= u64::from(u32::MAX) && r2 <= u64::from(u32::MAX));
    assert_ne!(r1, r2, "successive random numbers differ");
    assert_eq!(u64_at(&bss, 4), 0, "one CPU");
    let trace = prog.trace();
    assert_eq!(
        trace,
        [
            "d=-5  | u=7 x=ff",
            "lld=-1099511627776 llu=1099511627776 llx=deadbeefcafe",
            "s=vm w=[   42|007]",
        ]
    );
    for (i, line) in trace.iter().enumerate() {
        assert_eq!(u64_at(&bss, 5 + i), line.len() as u64, "printk return {i}");
    }
    assert_eq!(
        u64_at(&bss, 8) as i64,
        -2 * i64::from(EINVAL),
        "unknown %q, and four arguments"
    );
    assert_eq!(u64_at(&bss, 9), 0, "copy_from_user ok");
    assert_eq!(&bss[96..104], b"userdata");
    assert_eq!(u64_at(&bss, 10) as i64, -i64::from(EFAULT));
    assert_eq!(u64_at(&bss, 11), 0, "faulting copy zeroes its destination");

    // Same seed, same sequence; the clock is the owner's.
    clock.advance(250);
    let mut again = load_with(&obj, "helpers", Arc::clone(&clock), 42);
    again.run(&mut ctx).unwrap();
    let bss2 = again.map_mmap("run_help.bss").unwrap();
    assert_eq!((u64_at(bss2, 2), u64_at(bss2, 3)), (r1, r2));
    assert_eq!(u64_at(bss2, 0), 5_250);
    let mut other = load_with(&obj, "helpers", clock, 43);
    other.run(&mut ctx).unwrap();
    assert_ne!(u64_at(other.map_mmap("run_help.bss").unwrap(), 2), r1);
}

#[test]
fn ringbuf_records_reach_the_consumer_across_wraparound() {
    let obj = object("run_ringbuf.o", RUN_RINGBUF);
    let mut prog = load_default(&obj, "produce");
    // Each run takes 24 + 32 + 16 = 72 bytes of the 4096-byte ring; consuming after every
    // run lets 200 runs wrap it several times.
    for seq in 0..200u64 {
        let mut ctx = seq.to_le_bytes();
        assert_eq!(prog.run(&mut ctx).unwrap().r0, 0, "run {seq}");
        let records = prog.ringbuf_consume("events").unwrap();
        let expected: Vec<Vec<u8>> = vec![
            [seq, seq].iter().flat_map(|v| v.to_le_bytes()).collect(),
            [seq, seq + 1, seq + 2]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ];
        assert_eq!(records, expected, "run {seq}: discarded record skipped");
    }
}

#[test]
fn ringbuf_full_reports_eagain_and_null() {
    let obj = object("run_ringbuf.o", RUN_RINGBUF);
    let mut prog = load_default(&obj, "produce");
    // Without consuming, the ring fills: 4095 usable bytes / 72 per run.
    let mut failures = None;
    for seq in 0..100u64 {
        let r0 = prog.run(&mut seq.to_le_bytes()).unwrap().r0;
        if r0 != 0 {
            failures = Some((seq, r0));
            break;
        }
    }
    let (seq, r0) = failures.expect("the ring fills up");
    assert_eq!(seq, 56, "56 runs of 72 bytes fit in 4095");
    // 56 * 72 + 24 + 32 = 4088: the discarded record's 16 bytes no longer fit.
    assert_eq!(r0, 4, "only the last reserve fails (NULL)");
    let r0 = prog.run(&mut 57u64.to_le_bytes()).unwrap().r0;
    assert_eq!(
        r0,
        1 | 2 | 4,
        "output -EAGAIN, both reserves NULL; never the oversized one"
    );
    let records = prog.ringbuf_consume("events").unwrap();
    assert_eq!(records.len(), 2 * 56 + 2);
    assert_eq!(
        prog.run(&mut 58u64.to_le_bytes()).unwrap().r0,
        0,
        "room again after consuming"
    );
}

#[test]
fn vms_do_not_share_state() {
    let obj = object("run_maps.o", RUN_MAPS);
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let obj = obj.clone();
            std::thread::spawn(move || {
                let mut prog = load_default(&obj, "exercise");
                prog.run(&mut []).unwrap().r0
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), 11, "each VM starts from empty maps");
    }
}

#[test]
fn bpf_loop_runs_the_callback_as_a_bpf_call() {
    const RUN_LOOP: &[u8] = include_bytes!("data/run_loop.o");
    let obj = object("run_loop.o", RUN_LOOP);
    let program = obj.program("loop").unwrap();
    // The callback's address stays a BPF_PSEUDO_FUNC load for the real kernel.
    assert!(program
        .insns()
        .iter()
        .any(|&insn| insn & 0xff == 0x18 && (insn >> 12) & 0xf == 4));
    let mut prog = load_default(&obj, "loop");
    let r0 = prog.run(&mut []).unwrap().r0;
    assert_eq!(r0 as u32 as i32, -EINVAL, "flags must be 0");
    let bss = prog.map_mmap("run_loop.bss").unwrap();
    assert_eq!(u64_at(bss, 0), 10, "all iterations ran");
    assert_eq!(u64_at(bss, 1), 45, "0 + 1 + ... + 9");
    assert_eq!(
        u64_at(bss, 2),
        (5 << 32) | 6,
        "stopped at index 4 after 5 calls"
    );
}

/// `r1 = count; r2 = <callback or r2_value>; r3 = 0; r4 = flags; call bpf_loop; exit`,
/// then a callback that returns 0.
fn loop_program(count: i32, flags: i32, pseudo_func: bool) -> Vec<u8> {
    let lddw_src = if pseudo_func { 4 } else { 0 };
    let words = [
        insn(0xb7, 1, 0, 0, count),    // r1 = count
        insn(0x18, 2, lddw_src, 0, 5), // r2 = callback at insn 1 + 1 + 5 = 7
        insn(0, 0, 0, 0, 0),           //   (second half)
        insn(0xb7, 3, 0, 0, 0),        // r3 = 0
        insn(0xb7, 4, 0, 0, flags),    // r4 = flags
        insn(0x85, 0, 0, 0, 181),      // call bpf_loop
        insn(0x95, 0, 0, 0, 0),        // exit
        insn(0xb7, 0, 0, 0, 0),        // callback: r0 = 0
        insn(0x95, 0, 0, 0, 0),        // exit
    ];
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

#[test]
fn bpf_loop_limits_and_bad_callbacks() {
    use resystance_vm::exec::{Limits, Program, Vm, BPF_LOOP_ITERATIONS_MAX};
    let run = |bytes: Vec<u8>| {
        let program = Program::from_raw(&bytes).expect("valid program");
        Vm::new().run(&program, &mut [], &Limits::default())
    };
    let max = i32::try_from(BPF_LOOP_ITERATIONS_MAX).unwrap();
    assert_eq!(run(loop_program(3, 0, true)).unwrap().r0, 3);
    assert_eq!(run(loop_program(0, 0, true)).unwrap().r0, 0);
    assert_eq!(
        run(loop_program(max + 1, 0, true)).unwrap().r0 as i64,
        -i64::from(E2BIG)
    );
    assert_eq!(
        run(loop_program(1, 2, true)).unwrap().r0 as i64,
        -i64::from(EINVAL)
    );
    // A plain number is not a callback: the run fails at the call.
    let err = run(loop_program(1, 0, false)).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("insn 5: helper 181 failed: 0x5 is not a callback"),
        "{err}"
    );
}
