//! The BPF subsystem a kernel model owns, fed what Linux's `bpf(2)` is fed: maps created from
//! an object's definitions (initial values written, `.rodata` frozen) and the program
//! relocated to map fds with `Program::relocated`, exactly as the root crate's
//! `bpf_object.rs` does for both kernels. Every run must match `loader::load` on the same
//! object: same r0, same map contents, same trace, same faults.

use std::collections::BTreeMap;
use std::sync::Arc;

use resystance_vm::exec::{encode_insn as insn, region_base, Limits, LoadError, RunError};
use resystance_vm::helpers::map_handle;
use resystance_vm::helpers::ManualClock;
use resystance_vm::kernel_bpf::{BpfSubsystem, MapId, ProgId, ProgLoadError, TestRunError};
use resystance_vm::loader::{load, LoadOptions, LoadedProgram};
use resystance_vm::maps::errno::{E2BIG, EBADF, EBUSY, EINVAL, ENODEV, ENOENT, ENOTSUPP, EPERM};
use resystance_vm::maps::{MapSpec, BPF_ANY, BPF_NOEXIST};
use resystance_vm::object::{MapRelocKind, MapType, Object, BPF_F_MMAPABLE};

const MAPS_AND_GLOBALS: &[u8] = include_bytes!("data/maps_and_globals.o");
const SHARED_SUBPROG: &[u8] = include_bytes!("data/shared_subprog.o");
const RUN_MAPS: &[u8] = include_bytes!("data/run_maps.o");
const RUN_HELPERS: &[u8] = include_bytes!("data/run_helpers.o");
const RUN_RINGBUF: &[u8] = include_bytes!("data/run_ringbuf.o");
const RUN_LOOP: &[u8] = include_bytes!("data/run_loop.o");
const RUN_MAP_CODES: &[u8] = include_bytes!("data/run_map_codes.o");

/// Longest name the kernel keeps (`BPF_OBJ_NAME_LEN` − 1), as `bpf_object.rs` truncates.
const KERNEL_NAME_LEN_MAX: usize = 15;
/// Where the fake fd table starts: fds are not map ids, so the fd → map step is exercised.
const FD_BASE: i32 = 100;

fn object(file: &str, bytes: &[u8]) -> Object {
    Object::parse(Object::name_from_file_name(file), bytes).expect("committed object parses")
}

fn options(clock: &Arc<ManualClock>, seed: u64) -> LoadOptions {
    let mut options = LoadOptions::new(Arc::clone(clock) as _);
    options.prandom_seed = seed;
    options
}

/// The owner's side (a simulated kernel's fd table plus what `bpf_object.rs` does).
struct Owner {
    bpf: BpfSubsystem,
    fds: BTreeMap<i32, MapId>,
}

impl Owner {
    fn new(options: &LoadOptions) -> Self {
        Owner {
            bpf: BpfSubsystem::new(options),
            fds: BTreeMap::new(),
        }
    }

    /// `bpf_map_create` + initial values + freeze for every map of `obj`: the map fds.
    fn create_maps(&mut self, obj: &Object) -> Vec<i32> {
        let mut fds = Vec::new();
        for def in obj.maps() {
            let mut spec = MapSpec::from(def);
            spec.name = spec.name.chars().take(KERNEL_NAME_LEN_MAX).collect();
            let id = self.bpf.map_create(spec).expect("map created");
            if let Some(initial) = &def.initial_value {
                self.bpf
                    .map_update(id, &0u32.to_le_bytes(), initial, BPF_ANY)
                    .expect("initial value written");
            }
            let fd = FD_BASE + 3 * i32::try_from(self.fds.len()).unwrap();
            self.fds.insert(fd, id);
            fds.push(fd);
        }
        for (def, fd) in obj.maps().iter().zip(&fds) {
            if def.frozen {
                self.bpf.map_freeze(self.fds[fd]).expect("frozen");
            }
        }
        fds
    }

    /// `BPF_PROG_LOAD` of `program` relocated to `fds`.
    fn load(&mut self, obj: &Object, program: &str, fds: &[i32]) -> Result<ProgId, ProgLoadError> {
        let insns = obj
            .program(program)
            .expect("program exists")
            .relocated(fds)
            .expect("relocated");
        self.load_insns(program, &insns)
    }

    fn load_insns(&mut self, name: &str, insns: &[u64]) -> Result<ProgId, ProgLoadError> {
        let fds = &self.fds;
        self.bpf.prog_load(name, insns, |fd| fds.get(&fd).copied())
    }

    fn map(&self, fds: &[i32], index: usize) -> MapId {
        self.fds[&fds[index]]
    }
}

/// Loads `program` both ways with the same clock and seed.
fn both(
    obj: &Object,
    program: &str,
    clock: &Arc<ManualClock>,
    seed: u64,
) -> (LoadedProgram, Owner, ProgId, Vec<i32>) {
    let options = options(clock, seed);
    let loaded = load(obj, program, &options).unwrap_or_else(|e| panic!("loader: {e}"));
    let mut owner = Owner::new(&options);
    let fds = owner.create_maps(obj);
    let prog = owner
        .load(obj, program, &fds)
        .unwrap_or_else(|e| panic!("subsystem: {e}"));
    (loaded, owner, prog, fds)
}

/// Every map of `obj` has the same contents under both: same keys, same values, same ring
/// buffer records (consumed from both).
fn assert_same_maps(
    obj: &Object,
    loaded: &mut LoadedProgram,
    owner: &mut Owner,
    fds: &[i32],
    when: &str,
) {
    for (i, def) in obj.maps().iter().enumerate() {
        let id = owner.map(fds, i);
        if def.map_type == MapType::Ringbuf {
            assert_eq!(
                owner.bpf.ringbuf_consume(id).unwrap(),
                loaded.ringbuf_consume(&def.name).unwrap(),
                "{when}: ring buffer {}",
                def.name
            );
            continue;
        }
        let keys = loaded.map_keys(&def.name).unwrap();
        assert_eq!(
            owner.bpf.map_keys(id).unwrap(),
            keys,
            "{when}: keys of {}",
            def.name
        );
        for key in &keys {
            let expected = loaded
                .map_lookup(&def.name, key)
                .unwrap()
                .expect("key present");
            assert_eq!(
                owner.bpf.map_lookup(id, key).unwrap(),
                expected,
                "{when}: {}[{key:?}]",
                def.name
            );
        }
        if def.map_flags & BPF_F_MMAPABLE != 0 {
            assert_eq!(
                owner.bpf.map_values(id).unwrap(),
                loaded.map_mmap(&def.name).unwrap(),
                "{when}: mmap view of {}",
                def.name
            );
        }
    }
}

/// Runs `program` `runs` times both ways (context from `ctx_of(run)`), comparing r0, the
/// context afterwards, maps and trace after every run.
fn differential(
    file: &str,
    bytes: &[u8],
    program: &str,
    runs: u64,
    ctx_of: impl Fn(u64) -> Vec<u8>,
) {
    let obj = object(file, bytes);
    let clock = Arc::new(ManualClock::new(1_000));
    let (mut loaded, mut owner, prog, fds) = both(&obj, program, &clock, 7);
    // The object's own `resolved_with` (independent of the shared relocation code) predicts
    // both: map `i` is region `i` under the loader, region `r` = its rank among the used maps
    // under the subsystem.
    let object_prog = obj.program(program).unwrap();
    let used = owner.bpf.prog_maps(prog).unwrap().to_vec();
    let expect = |region_of: &dyn Fn(usize) -> usize| -> Vec<u8> {
        object_prog
            .resolved_with(|reloc| {
                let r = region_of(reloc.map_index);
                Ok::<u64, ()>(match reloc.kind {
                    MapRelocKind::Fd => map_handle(r),
                    MapRelocKind::Value { offset } => region_base(r) + u64::from(offset),
                })
            })
            .unwrap()
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .collect()
    };
    assert_eq!(
        loaded.program().as_bytes(),
        expect(&|i| i),
        "{file} {program}: loader"
    );
    let rank = |i: usize| {
        let id = owner.map(&fds, i);
        used.iter()
            .position(|&m| m == id)
            .expect("referenced map is used")
    };
    let (_, relocated) = owner.bpf.prog(prog).unwrap();
    assert_eq!(
        relocated.as_bytes(),
        expect(&rank),
        "{file} {program}: subsystem"
    );
    for run in 0..runs {
        let when = format!("{file} {program} run {run}");
        let (mut ctx_a, mut ctx_b) = (ctx_of(run), ctx_of(run));
        let a = loaded.run(&mut ctx_a);
        let b = owner.bpf.prog_test_run(prog, &mut ctx_b);
        match (a, b) {
            (Ok(a), Ok(b)) => assert_eq!(b, a, "{when}: result"),
            // Same fault; addresses differ when the program uses only some of the object's
            // maps (the loader maps all of them, the subsystem the program's used maps).
            (Err(a), Err(TestRunError::Run(b))) => assert_eq!(
                without_hex(&b.to_string()),
                without_hex(&a.to_string()),
                "{when}"
            ),
            (a, b) => panic!("{when}: loader {a:?}, subsystem {b:?}"),
        }
        assert_eq!(ctx_b, ctx_a, "{when}: context");
        assert_same_maps(&obj, &mut loaded, &mut owner, &fds, &when);
        assert_eq!(owner.bpf.trace(), loaded.trace(), "{when}: trace");
        clock.advance(17);
    }
}

/// `text` with every `0x…` number replaced by `0x_`.
fn without_hex(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("0x") {
        out.push_str(&rest[..at + 2]);
        out.push('_');
        rest = rest[at + 2..].trim_start_matches(|c: char| c.is_ascii_hexdigit());
    }
    out.push_str(rest);
    out
}

#[test]
fn maps_and_globals_matches_the_loader() {
    differential("maps_and_globals.o", MAPS_AND_GLOBALS, "run", 3, |_| {
        Vec::new()
    });
}

#[test]
fn run_maps_matches_the_loader_including_faults() {
    differential("run_maps.o", RUN_MAPS, "exercise", 2, |_| Vec::new());
    differential("run_maps.o", RUN_MAPS, "read_past_value", 1, |_| Vec::new());
    differential("run_maps.o", RUN_MAPS, "write_rodata", 1, |_| Vec::new());
}

#[test]
fn other_objects_match_the_loader() {
    differential("shared_subprog.o", SHARED_SUBPROG, "first", 1, |_| {
        Vec::new()
    });
    differential("shared_subprog.o", SHARED_SUBPROG, "second", 1, |_| {
        Vec::new()
    });
    differential("run_loop.o", RUN_LOOP, "loop", 2, |_| Vec::new());
    differential(
        "run_map_codes.o",
        RUN_MAP_CODES,
        "codes_of_map_ops",
        2,
        |_| Vec::new(),
    );
    // 60 runs without consuming in between would fill the ring; consumed after each run here.
    differential("run_ringbuf.o", RUN_RINGBUF, "produce", 60, |seq| {
        seq.to_le_bytes().to_vec()
    });
}

#[test]
fn helpers_see_the_owners_clock_seed_and_user_memory() {
    let obj = object("run_helpers.o", RUN_HELPERS);
    let clock = Arc::new(ManualClock::new(5_000));
    let (mut loaded, mut owner, prog, fds) = both(&obj, "helpers", &clock, 42);
    let user_base = 0x7f00_0000_1000u64;
    loaded.map_user_memory(user_base, b"userdata".to_vec());
    owner.bpf.map_user_memory(user_base, b"userdata".to_vec());
    let mut ctx = [0u8; 16];
    ctx[..8].copy_from_slice(&user_base.to_le_bytes());
    ctx[8..].copy_from_slice(&0xdead_0000u64.to_le_bytes());
    for run in 0..2 {
        let a = loaded.run(&mut ctx.clone()).unwrap();
        let b = owner.bpf.prog_test_run(prog, &mut ctx.clone()).unwrap();
        assert_eq!((b.r0, b.insns_executed), (a.r0, a.insns_executed));
        assert_same_maps(&obj, &mut loaded, &mut owner, &fds, &format!("run {run}"));
        clock.advance(250);
    }
    assert_eq!(owner.bpf.trace(), loaded.trace());
    assert_eq!(owner.bpf.trace().len(), 6, "three lines per run");
    let bss = obj
        .maps()
        .iter()
        .position(|m| m.name == "run_help.bss")
        .unwrap();
    let bss = owner.bpf.map_values(owner.map(&fds, bss)).unwrap();
    assert_eq!(
        &bss[..8],
        &5_250u64.to_le_bytes(),
        "ktime of the second run"
    );
}

#[test]
fn maps_are_shared_between_programs_and_the_mmap_view() {
    let obj = object("maps_and_globals.o", MAPS_AND_GLOBALS);
    let clock = Arc::new(ManualClock::new(0));
    let mut owner = Owner::new(&options(&clock, 1));
    let fds = owner.create_maps(&obj);
    let first = owner.load(&obj, "run", &fds).unwrap();
    let second = owner.load(&obj, "run", &fds).unwrap();
    assert_ne!(first, second);
    let index = |name: &str| obj.maps().iter().position(|m| m.name == name).unwrap();
    let (blocks, bss) = (
        owner.map(&fds, index("blocks")),
        owner.map(&fds, index("maps_and.bss")),
    );
    for (run, prog) in [(1u64, first), (2, second), (3, first)] {
        assert_eq!(owner.bpf.prog_test_run(prog, &mut []).unwrap().r0, 0);
        assert_eq!(
            owner.bpf.map_values(bss).unwrap()[..8],
            run.to_le_bytes(),
            "counter"
        );
    }
    // The owner's writes through the mmapable view are what the next run sees.
    owner.bpf.map_mmap_check(blocks, true).unwrap();
    owner.bpf.map_values_mut(blocks).unwrap()[..8].copy_from_slice(&0u64.to_le_bytes());
    owner.bpf.prog_test_run(second, &mut []).unwrap();
    // mix(0) = 0 * 7 + bias + limit + hidden (9, incremented once per run: 3 runs before).
    let expected = 0x1122_3344u64 + 1000 + 12;
    assert_eq!(
        owner.bpf.map_values(blocks).unwrap()[..8],
        expected.to_le_bytes()
    );
    assert_eq!(
        owner.bpf.map_lookup(blocks, &0u32.to_le_bytes()).unwrap(),
        expected.to_le_bytes()
    );
}

#[test]
fn map_syscalls_return_the_kernels_errnos() {
    let obj = object("maps_and_globals.o", MAPS_AND_GLOBALS);
    let clock = Arc::new(ManualClock::new(0));
    let mut owner = Owner::new(&options(&clock, 1));
    let fds = owner.create_maps(&obj);
    let index = |name: &str| {
        owner.map(
            &fds,
            obj.maps().iter().position(|m| m.name == name).unwrap(),
        )
    };
    let (blocks, hash, rodata) = (
        index("blocks"),
        index("index_map"),
        index("maps_and.rodata"),
    );
    let bpf = &mut owner.bpf;
    let errno = |r: Result<(), resystance_vm::maps::MapError>| r.unwrap_err().errno;

    assert!(bpf.map_frozen(rodata).unwrap());
    assert_eq!(
        errno(bpf.map_update(rodata, &0u32.to_le_bytes(), &[0; 4], BPF_ANY)),
        EPERM
    );
    assert_eq!(errno(bpf.map_freeze(rodata)), EBUSY, "second freeze");
    assert_eq!(errno(bpf.map_mmap_check(rodata, true)), EPERM);
    bpf.map_mmap_check(rodata, false).unwrap();
    assert_eq!(errno(bpf.map_mmap_check(hash, false)), ENODEV);

    assert_eq!(
        bpf.map_lookup(hash, &1u64.to_le_bytes()).unwrap_err().errno,
        ENOENT
    );
    let value = [3u8; 16];
    bpf.map_update(hash, &1u64.to_le_bytes(), &value, BPF_NOEXIST)
        .unwrap();
    assert_eq!(bpf.map_lookup(hash, &1u64.to_le_bytes()).unwrap(), value);
    assert_eq!(
        errno(bpf.map_update(hash, &1u64.to_le_bytes(), &value, BPF_NOEXIST)),
        17
    );
    bpf.map_delete(hash, &1u64.to_le_bytes()).unwrap();
    assert_eq!(errno(bpf.map_delete(hash, &1u64.to_le_bytes())), ENOENT);
    assert_eq!(errno(bpf.map_delete(blocks, &0u32.to_le_bytes())), EINVAL);
    assert_eq!(
        errno(bpf.map_update(blocks, &4u32.to_le_bytes(), &[0; 8], BPF_ANY)),
        E2BIG
    );
    assert_eq!(
        bpf.map_lookup(MapId(999), &[0; 4]).unwrap_err().errno,
        EBADF
    );

    let plain = bpf
        .map_create(MapSpec {
            name: "plain".into(),
            map_type: MapType::Array,
            key_size: 4,
            value_size: 8,
            max_entries: 2,
            map_flags: 0,
        })
        .unwrap();
    assert_eq!(
        errno(bpf.map_mmap_check(plain, false)),
        EINVAL,
        "not BPF_F_MMAPABLE"
    );
    let ring = bpf
        .map_create(MapSpec {
            name: "ring".into(),
            map_type: MapType::Ringbuf,
            key_size: 0,
            value_size: 0,
            max_entries: 4096,
            map_flags: 0,
        })
        .unwrap();
    assert_eq!(bpf.map_lookup(ring, &[]).unwrap_err().errno, ENOTSUPP);
    let bad = bpf.map_create(MapSpec {
        name: "bad".into(),
        map_type: MapType::Array,
        key_size: 8,
        value_size: 8,
        max_entries: 1,
        map_flags: 0,
    });
    assert_eq!(bad.unwrap_err().errno, EINVAL, "array key_size must be 4");
}

// ----- refusals at BPF_PROG_LOAD ---------------------------------------------------------------

const LDDW: u8 = 0x18;
const MOV64_IMM: u8 = 0xb7;
const EXIT: u8 = 0x95;
const CALL: u8 = 0x85;

/// `lddw r1, <src, imm>` (second half `imm2`), `r0 = 0`, `exit`.
fn lddw_prog(src: u8, imm: i32, imm2: i32) -> Vec<u64> {
    vec![
        insn(LDDW, 1, src, 0, imm),
        insn(0, 0, 0, 0, imm2),
        insn(MOV64_IMM, 0, 0, 0, 0),
        insn(EXIT, 0, 0, 0, 0),
    ]
}

fn owner_with(specs: &[(MapType, u32, u32, u32)]) -> (Owner, Vec<i32>) {
    let clock = Arc::new(ManualClock::new(0));
    let mut owner = Owner::new(&options(&clock, 1));
    let mut fds = Vec::new();
    for (i, &(map_type, key_size, value_size, max_entries)) in specs.iter().enumerate() {
        let id = owner
            .bpf
            .map_create(MapSpec {
                name: format!("m{i}"),
                map_type,
                key_size,
                value_size,
                max_entries,
                map_flags: 0,
            })
            .unwrap();
        let fd = FD_BASE + i32::try_from(i).unwrap();
        owner.fds.insert(fd, id);
        fds.push(fd);
    }
    (owner, fds)
}

#[test]
fn unknown_and_closed_map_fds_are_refused_with_ebadf() {
    let (mut owner, fds) = owner_with(&[(MapType::Array, 4, 8, 1)]);
    owner.load_insns("ok", &lddw_prog(1, fds[0], 0)).unwrap();
    let err = owner.load_insns("bad", &lddw_prog(1, 7, 0)).unwrap_err();
    assert_eq!(err, ProgLoadError::MapFd { pc: 0, fd: 7 });
    assert_eq!(err.errno(), EBADF);
    assert!(err.to_string().contains("fd 7"), "{err}");
    // A value load names its map by fd too.
    let err = owner.load_insns("bad", &lddw_prog(2, 8, 0)).unwrap_err();
    assert_eq!(err, ProgLoadError::MapFd { pc: 0, fd: 8 });
    // A closed map is gone for the user, even though a program keeps it alive.
    owner.bpf.map_close(owner.fds[&fds[0]]).unwrap();
    let err = owner
        .load_insns("bad", &lddw_prog(1, fds[0], 0))
        .unwrap_err();
    assert_eq!(err.errno(), EBADF);
}

#[test]
fn unsupported_pseudo_sources_and_kfuncs_are_refused() {
    let (mut owner, fds) = owner_with(&[(MapType::Array, 4, 8, 1)]);
    for (src, what) in [
        (3u8, "BPF_PSEUDO_BTF_ID"),
        (5, "BPF_PSEUDO_MAP_IDX"),
        (6, "BPF_PSEUDO_MAP_IDX_VALUE"),
        (7, "unknown"),
    ] {
        let err = owner
            .load_insns("bad", &lddw_prog(src, fds[0], 0))
            .unwrap_err();
        assert!(
            matches!(err, ProgLoadError::PseudoSource { pc: 0, src_reg, .. } if src_reg == src),
            "{err:?}"
        );
        assert!(err.to_string().contains(what), "{err}");
        assert_eq!(err.errno(), EINVAL);
    }
    // BPF_PSEUDO_MAP_FD with a second immediate, or a second half with other fields.
    let err = owner
        .load_insns("bad", &lddw_prog(1, fds[0], 4))
        .unwrap_err();
    assert!(
        matches!(err, ProgLoadError::BadMapLoad { pc: 0, .. }),
        "{err:?}"
    );
    let mut prog = lddw_prog(1, fds[0], 0);
    prog[1] = insn(0, 2, 0, 0, 0);
    let err = owner.load_insns("bad", &prog).unwrap_err();
    assert!(
        matches!(err, ProgLoadError::BadMapLoad { pc: 0, .. }),
        "{err:?}"
    );
    // A kfunc call.
    let kfunc = [insn(CALL, 0, 2, 0, 1234), insn(EXIT, 0, 0, 0, 0)];
    let err = owner.load_insns("kfunc", &kfunc).unwrap_err();
    assert_eq!(
        err,
        ProgLoadError::Kfunc {
            pc: 1 - 1,
            btf_id: 1234
        }
    );
    assert_eq!(err.errno(), EINVAL);
    // A helper the vm does not have, and an empty program.
    let unknown_helper = [insn(CALL, 0, 0, 0, 9999), insn(EXIT, 0, 0, 0, 0)];
    let err = owner.load_insns("helper", &unknown_helper).unwrap_err();
    assert_eq!(
        err,
        ProgLoadError::Program(LoadError::UnknownHelper { pc: 0, id: 9999 })
    );
    assert_eq!(owner.load_insns("empty", &[]).unwrap_err().errno(), E2BIG);
}

#[test]
fn map_value_loads_follow_array_map_direct_value_addr() {
    let (mut owner, fds) = owner_with(&[
        (MapType::Array, 4, 12, 1),
        (MapType::Array, 4, 8, 4),
        (MapType::Hash, 4, 8, 4),
    ]);
    // Offset 8 of a one-element array: r1 = region base + 8.
    let prog = owner.load_insns("ok", &lddw_prog(2, fds[0], 8)).unwrap();
    assert_eq!(owner.bpf.prog_maps(prog).unwrap(), [owner.fds[&fds[0]]]);
    let cases = [
        (fds[0], 12, EINVAL, "past value_size"),
        (fds[1], 0, ENOTSUPP, "more than one element"),
        (fds[2], 0, EINVAL, "no direct value access"),
    ];
    for (fd, offset, errno, why) in cases {
        let err = owner
            .load_insns("bad", &lddw_prog(2, fd, offset))
            .unwrap_err();
        assert!(
            matches!(err, ProgLoadError::MapValue { pc: 0, .. }),
            "{err:?}"
        );
        assert_eq!(err.errno(), errno, "{err}");
        assert!(err.to_string().contains(why), "{err}");
    }
}

#[test]
fn a_program_may_use_at_most_64_maps() {
    let specs = vec![(MapType::Array, 4, 8, 1); 65];
    let (mut owner, fds) = owner_with(&specs);
    let program = |maps: &[i32]| {
        let mut insns: Vec<u64> = maps
            .iter()
            .flat_map(|&fd| lddw_prog(1, fd, 0)[..2].to_vec())
            .collect();
        insns.extend([insn(MOV64_IMM, 0, 0, 0, 0), insn(EXIT, 0, 0, 0, 0)]);
        insns
    };
    let prog = owner.load_insns("64", &program(&fds[..64])).unwrap();
    assert_eq!(owner.bpf.prog_maps(prog).unwrap().len(), 64);
    assert_eq!(owner.bpf.prog_test_run(prog, &mut []).unwrap().r0, 0);
    let err = owner.load_insns("65", &program(&fds)).unwrap_err();
    assert_eq!(err, ProgLoadError::TooManyMaps);
    assert_eq!(err.errno(), E2BIG);
}

// ----- runs ------------------------------------------------------------------------------------

#[test]
fn programs_keep_closed_maps_alive_until_unloaded() {
    let obj = object("maps_and_globals.o", MAPS_AND_GLOBALS);
    let clock = Arc::new(ManualClock::new(0));
    let mut owner = Owner::new(&options(&clock, 1));
    let fds = owner.create_maps(&obj);
    let prog = owner.load(&obj, "run", &fds).unwrap();
    let maps = obj.maps().len();
    assert_eq!(owner.bpf.maps_alive(), maps);
    for fd in &fds {
        owner.bpf.map_close(owner.fds[fd]).unwrap();
    }
    let used = owner.bpf.prog_maps(prog).unwrap().len();
    assert_eq!(
        owner.bpf.maps_alive(),
        used,
        "only the maps the program uses stay"
    );
    assert_eq!(owner.bpf.prog_test_run(prog, &mut []).unwrap().r0, 0);
    assert_eq!(
        owner.bpf.map_values(owner.fds[&fds[0]]).unwrap_err().errno,
        EBADF
    );
    assert!(owner.bpf.prog_close(prog));
    assert!(!owner.bpf.prog_close(prog));
    assert_eq!(owner.bpf.maps_alive(), 0);
    assert!(matches!(
        owner.bpf.prog_test_run(prog, &mut []),
        Err(TestRunError::NoProgram(_))
    ));
}

#[test]
fn runs_stop_at_the_instruction_limit() {
    let obj = object("run_loop.o", RUN_LOOP);
    let clock = Arc::new(ManualClock::new(0));
    let mut options = options(&clock, 1);
    options.limits = Limits { insns_max: 50 };
    let mut owner = Owner::new(&options);
    let fds = owner.create_maps(&obj);
    let prog = owner.load(&obj, "loop", &fds).unwrap();
    let err = owner.bpf.prog_test_run(prog, &mut []).unwrap_err();
    assert!(
        matches!(err, TestRunError::Run(RunError::InsnBudgetExhausted { .. })),
        "{err:?}"
    );
    owner.bpf.set_limits(Limits::default());
    owner.bpf.prog_test_run(prog, &mut []).unwrap();
}

#[test]
fn subsystems_share_nothing() {
    let obj = object("run_helpers.o", RUN_HELPERS);
    let clock = Arc::new(ManualClock::new(0));
    let random_of = |seed: u64| {
        let mut owner = Owner::new(&options(&clock, seed));
        let fds = owner.create_maps(&obj);
        let prog = owner.load(&obj, "helpers", &fds).unwrap();
        owner.bpf.prog_test_run(prog, &mut [0u8; 16]).unwrap();
        let bss = obj
            .maps()
            .iter()
            .position(|m| m.name == "run_help.bss")
            .unwrap();
        let values = owner.bpf.map_values(owner.map(&fds, bss)).unwrap();
        (values[16..32].to_vec(), owner.bpf.trace().len())
    };
    let a = random_of(42);
    assert_eq!(random_of(42), a, "same seed, same sequence, own trace log");
    assert_ne!(random_of(43).0, a.0);
}
