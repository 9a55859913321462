//! BPF on SimKernel through the Kernel trait: descriptors, map calls and their errnos, mmaps
//! that alias map values, program loads and test runs, costs, accounting and crashes.

use std::path::Path;

use resystance_sim::{SimConfig, SimKernel};
use resystance_traces::{
    BtfFd, Errno, FuncInfo, Kernel, KernelError, MapFd, MapSpec, MapType, OpenFlags, ProgBtf,
    ProgLoad, ProgType, SyscallKind,
};

const BPF_F_MMAPABLE: u32 = 1 << 10;
const BPF_NOEXIST: u64 = 1;

fn exact(seed: u64) -> SimKernel {
    let mut cfg = SimConfig::new(seed);
    cfg.jitter_ppm = 0;
    SimKernel::with_config(cfg)
}

fn errno<T: std::fmt::Debug>(r: Result<T, KernelError>) -> Errno {
    r.unwrap_err().errno().expect("an errno")
}

fn array(name: &str, value_size: u32, max_entries: u32, flags: u32) -> MapSpec {
    MapSpec {
        name: name.to_string(),
        map_type: MapType::Array,
        key_size: 4,
        value_size,
        max_entries,
        flags,
    }
}

/// One eBPF instruction.
fn insn(op: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    u64::from(op)
        | u64::from(dst & 0xf) << 8
        | u64::from(src & 0xf) << 12
        | u64::from(off as u16) << 16
        | u64::from(imm as u32) << 32
}

const EXIT: u64 = 0x95;

fn syscall_prog(name: &str, insns: Vec<u64>) -> ProgLoad {
    ProgLoad {
        name: name.to_string(),
        prog_type: ProgType::Syscall,
        insns,
        license: "GPL".to_string(),
    }
}

/// `*(u64 *)value += 1; return it;` on the single value of the map `fd`.
fn bump(fd: MapFd) -> ProgLoad {
    syscall_prog(
        "bump",
        vec![
            insn(0x18, 1, 2, 0, fd.0 .0), // r1 = &value (BPF_PSEUDO_MAP_VALUE)
            0,
            insn(0x79, 2, 1, 0, 0), // r2 = *(u64 *)(r1 + 0)
            insn(0x07, 2, 0, 0, 1), // r2 += 1
            insn(0x7b, 1, 2, 0, 0), // *(u64 *)(r1 + 0) = r2
            insn(0xbf, 0, 2, 0, 0), // r0 = r2
            EXIT,
        ],
    )
}

#[test]
fn bpf_descriptors_share_the_table_with_files() {
    let k = SimKernel::new(1);
    let map = k.bpf_map_create(&array("a", 8, 1, 0)).unwrap();
    assert_eq!(map.0 .0, 3, "the lowest free descriptor");
    let f = k
        .open(Path::new("/tmp/f"), OpenFlags::CREATE_TRUNCATE)
        .unwrap();
    assert_eq!(f.0, 4);
    assert_eq!(
        errno(k.pwrite(map.0, b"x", 0)),
        Errno::EINVAL,
        "no write op"
    );
    k.close(map.0).unwrap();
    assert_eq!(errno(k.close(map.0)), Errno::EBADF);
    assert_eq!(
        errno(k.bpf_map_lookup(map, &0u32.to_ne_bytes(), &mut [0; 8])),
        Errno::EBADF
    );
    let g = k.open(Path::new("/tmp/f"), OpenFlags::READ).unwrap();
    assert_eq!(g.0, 3, "the map's number is free again");
    assert_eq!(
        errno(k.bpf_map_lookup(MapFd(g), &0u32.to_ne_bytes(), &mut [0; 8])),
        Errno::EBADF,
        "a file is not a map"
    );
}

#[test]
fn map_calls_answer_the_kernels_errnos_and_are_counted_like_real_kernel() {
    let k = SimKernel::new(1);
    let key = 0u32.to_ne_bytes();
    let map = k.bpf_map_create(&array("a", 8, 2, 0)).unwrap();
    k.bpf_map_update(map, &key, &7u64.to_ne_bytes(), 0).unwrap();
    let mut value = [0u8; 8];
    k.bpf_map_lookup(map, &key, &mut value).unwrap();
    assert_eq!(u64::from_ne_bytes(value), 7);
    assert_eq!(
        errno(k.bpf_map_lookup(map, &key, &mut [0; 4])),
        Errno::EINVAL,
        "value of the wrong size"
    );
    assert_eq!(
        errno(k.bpf_map_lookup(map, &9u32.to_ne_bytes(), &mut value)),
        Errno::ENOENT
    );
    assert_eq!(
        errno(k.bpf_map_update(map, &key, &value, BPF_NOEXIST)),
        Errno::EEXIST,
        "array elements always exist"
    );
    k.bpf_map_freeze(map).unwrap();
    assert_eq!(errno(k.bpf_map_update(map, &key, &value, 0)), Errno::EPERM);
    assert_eq!(errno(k.bpf_map_freeze(map)), Errno::EBUSY);
    assert_eq!(
        errno(k.bpf_map_create(&array("bad", 0, 1, 0))),
        Errno::EINVAL
    );
    // Not mmapable: refused before the system call, as real-kernel refuses it.
    let before = k.syscall_counts();
    let err = k.bpf_map_mmap(map).unwrap_err();
    assert!(matches!(err, KernelError::Unsupported { .. }), "{err}");
    assert_eq!(k.syscall_counts(), before, "not counted");
    let c = k.syscall_counts();
    assert_eq!(c.get(SyscallKind::BpfMapCreate), 2, "failures count");
    assert_eq!(c.get(SyscallKind::BpfMapLookup), 3);
    assert_eq!(c.get(SyscallKind::BpfMapUpdate), 3);
    assert_eq!(c.get(SyscallKind::BpfMapFreeze), 2);
}

#[test]
fn an_mmap_is_the_maps_values() {
    let k = SimKernel::new(1);
    let key = 1u32.to_ne_bytes();
    let map = k
        .bpf_map_create(&array("m", 12, 3, BPF_F_MMAPABLE))
        .unwrap();
    let mem = k.bpf_map_mmap(map).unwrap();
    assert_eq!(k.syscall_counts().get(SyscallKind::Mmap), 1);
    // Values are 8-byte aligned: index 1 starts at 16.
    k.mem_write(mem, 16, &[1; 12]).unwrap();
    let mut value = [0u8; 12];
    k.bpf_map_lookup(map, &key, &mut value).unwrap();
    assert_eq!(value, [1; 12], "user space writes are the map's");
    k.bpf_map_update(map, &key, &[2; 12], 0).unwrap();
    let mut back = [0u8; 12];
    k.mem_read(mem, 16, &mut back).unwrap();
    assert_eq!(back, [2; 12], "updates show in the mapping");
    assert_eq!(errno(k.mem_read(mem, 40, &mut [0; 16])), Errno::EINVAL);
    assert_eq!(
        errno(k.bpf_map_freeze(map)),
        Errno::EBUSY,
        "mapped writable"
    );
    // The mapping holds the map after its fd is closed.
    k.close(map.0).unwrap();
    k.mem_read(mem, 16, &mut back).unwrap();
    assert_eq!(back, [2; 12]);
    k.mem_free(mem).unwrap();
    assert_eq!(errno(k.mem_read(mem, 0, &mut back)), Errno::EINVAL);
    // A frozen map cannot be mapped writable.
    let frozen = k.bpf_map_create(&array("f", 8, 1, BPF_F_MMAPABLE)).unwrap();
    k.bpf_map_freeze(frozen).unwrap();
    assert_eq!(errno(k.bpf_map_mmap(frozen)), Errno::EPERM);
}

#[test]
fn programs_run_on_the_vm_over_the_mapped_values_and_cost_the_model() {
    let k = exact(1);
    let map = k.bpf_map_create(&array("v", 8, 1, BPF_F_MMAPABLE)).unwrap();
    let mem = k.bpf_map_mmap(map).unwrap();
    k.mem_write(mem, 0, &40u64.to_ne_bytes()).unwrap();
    let loaded = k.bpf_prog_load(&bump(map)).unwrap();
    assert_eq!(loaded.verified_insns, None);
    assert!(loaded.log.is_empty());
    let t = k.now_ns();
    let run = k.bpf_prog_test_run(loaded.fd, &mut []).unwrap();
    assert_eq!(run.retval, 41);
    // 0.7 µs + 6 instructions (lddw counts once) at the model's picoseconds each.
    let cpu = k.config().cpu;
    assert_eq!(
        run.duration_ns,
        cpu.bpf_test_run_ns + 6 * cpu.bpf_insn_ps / 1_000
    );
    assert_eq!(cpu.test_run_ns(6), run.duration_ns);
    assert_eq!(k.now_ns() - t, run.duration_ns, "the clock moved by it");
    let mut v = [0u8; 8];
    k.mem_read(mem, 0, &mut v).unwrap();
    assert_eq!(
        u64::from_ne_bytes(v),
        41,
        "the program's store is in the mapping"
    );
    k.bpf_prog_test_run(loaded.fd, &mut []).unwrap();
    k.bpf_map_lookup(map, &0u32.to_ne_bytes(), &mut v).unwrap();
    assert_eq!(u64::from_ne_bytes(v), 42);

    // The context is copied in and back out.
    let plus_one = syscall_prog(
        "plus_one",
        vec![
            insn(0x61, 0, 1, 0, 0),
            insn(0x07, 0, 0, 0, 1),
            insn(0x63, 1, 0, 4, 0),
            EXIT,
        ],
    );
    let p = k.bpf_prog_load(&plus_one).unwrap();
    let mut ctx = [0u8; 8];
    ctx[..4].copy_from_slice(&41u32.to_ne_bytes());
    assert_eq!(k.bpf_prog_test_run(p.fd, &mut ctx).unwrap().retval, 42);
    assert_eq!(ctx[4..], 42u32.to_ne_bytes());
    let err = k.bpf_prog_test_run(p.fd, &mut [0u8; 2]).unwrap_err();
    assert!(matches!(err, KernelError::Rejected { .. }), "{err}");

    assert_eq!(
        errno(k.bpf_prog_test_run(resystance_traces::ProgFd(map.0), &mut [])),
        Errno::EBADF
    );
    let c = k.syscall_counts();
    assert_eq!(c.get(SyscallKind::BpfProgLoad), 2);
    assert_eq!(c.get(SyscallKind::BpfObjGetInfo), 0, "no count reported");
    assert_eq!(c.get(SyscallKind::BpfProgTestRun), 5);
}

#[test]
fn refused_loads_are_rejections_counted_twice() {
    let k = SimKernel::new(1);
    let file = k
        .open(Path::new("/tmp/f"), OpenFlags::CREATE_TRUNCATE)
        .unwrap();
    let err = k.bpf_prog_load(&bump(MapFd(file))).unwrap_err();
    let KernelError::Rejected { errno, log, .. } = &err else {
        panic!("{err}");
    };
    assert_eq!(*errno, Errno::EBADF, "not a map fd");
    assert!(log.contains("not pointing to a valid bpf map"), "{log}");
    assert_eq!(k.syscall_counts().get(SyscallKind::BpfProgLoad), 2);
    let err = k.bpf_prog_load(&syscall_prog("empty", vec![])).unwrap_err();
    assert_eq!(err.errno(), Some(Errno::E2BIG), "{err}");

    // BTF: only the header is checked; the fd must be a BTF one.
    let mut btf = vec![0u8; 24];
    btf[..2].copy_from_slice(&0xeb9fu16.to_le_bytes());
    let btf_fd = k.bpf_btf_load(&btf).unwrap();
    let plus = syscall_prog("r0", vec![insn(0xb7, 0, 0, 0, 3), EXIT]);
    let with = |fd| ProgBtf {
        btf: fd,
        func_info: vec![FuncInfo {
            insn_off: 0,
            type_id: 1,
        }],
    };
    let p = k.bpf_prog_load_btf(&plus, &with(btf_fd)).unwrap();
    assert_eq!(k.bpf_prog_test_run(p.fd, &mut []).unwrap().retval, 3);
    let err = k.bpf_prog_load_btf(&plus, &with(BtfFd(file))).unwrap_err();
    assert_eq!(err.errno(), Some(Errno::EINVAL), "{err}");
    k.close(btf_fd.0).unwrap();
}

#[test]
fn a_crash_drops_maps_and_programs() {
    let k = SimKernel::new(1);
    let map = k.bpf_map_create(&array("v", 8, 1, BPF_F_MMAPABLE)).unwrap();
    let mem = k.bpf_map_mmap(map).unwrap();
    let p = k.bpf_prog_load(&bump(map)).unwrap();
    k.crash();
    assert_eq!(errno(k.bpf_prog_test_run(p.fd, &mut [])), Errno::EIO);
    k.restart();
    assert_eq!(errno(k.bpf_prog_test_run(p.fd, &mut [])), Errno::EBADF);
    assert_eq!(
        errno(k.bpf_map_lookup(map, &0u32.to_ne_bytes(), &mut [0; 8])),
        Errno::EBADF
    );
    assert_eq!(errno(k.mem_read(mem, 0, &mut [0; 8])), Errno::EINVAL);
    let again = k.bpf_map_create(&array("v", 8, 1, 0)).unwrap();
    assert_eq!(again.0 .0, 3, "descriptors start over");
}

#[test]
fn bpf_runs_are_deterministic() {
    let run = |seed| {
        let k = SimKernel::new(seed);
        let map = k.bpf_map_create(&array("v", 8, 1, BPF_F_MMAPABLE)).unwrap();
        let mem = k.bpf_map_mmap(map).unwrap();
        let p = k.bpf_prog_load(&bump(map)).unwrap();
        let durations: Vec<u64> = (0..10)
            .map(|_| k.bpf_prog_test_run(p.fd, &mut []).unwrap().duration_ns)
            .collect();
        let mut v = [0u8; 8];
        k.mem_read(mem, 0, &mut v).unwrap();
        (k.event_digest(), durations, v)
    };
    let a = run(5);
    assert_eq!(a, run(5));
    assert_ne!(a.0, run(6).0);
}
