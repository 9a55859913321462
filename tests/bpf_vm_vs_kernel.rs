//! The same clang-compiled objects — maps, global data, subprogram calls, map error codes —
//! run through `resystance bpf run` on the vm and on Linux give the same return value (low 32 bits: all Linux's test-run reports), the same context and the same contents
//! of every array map. Needs bpf(2) (root); prints one SKIP line otherwise.

use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;

use resystance::bpf_cmd::{run_program, BpfBackend, RunArgs};
use resystance_real_kernel::RealKernel;
use resystance_traces::{Accounted, Kernel, SyscallKind};

/// Deterministic programs (no clock, no randomness) of the committed test objects.
/// `run_loop.o` (bpf_loop) loads with the object's BTF and func_info, which Linux wants for
/// callbacks. `run_maps.o` was written for the vm (a loop the verifier cannot bound);
/// `run_map_codes.o` is its verifier-friendly twin.
const CASES: &[(&str, &str)] = &[
    ("maps_and_globals.o", "run"),
    ("shared_subprog.o", "first"),
    ("run_map_codes.o", "codes_of_map_ops"),
    ("run_loop.o", "loop"),
];

fn args(object: &Path, prog: &str, backend: BpfBackend) -> RunArgs {
    RunArgs {
        object: Some(object.to_path_buf()),
        prog: Some(prog.to_string()),
        ctx_hex: Some("0102030405060708090a0b0c0d0e0f10".into()),
        maps: Vec::new(),
        raw: None,
        mem: None,
        backend,
        insns_max: 1 << 28,
    }
}

/// The lines that describe state after the run: context and array-map digests.
fn state_lines(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| l.starts_with("context:") || l.starts_with("map "))
        .collect()
}

#[test]
fn objects_run_identically_in_the_vm_and_in_linux() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("vm/tests/data");
    let accounted = Arc::new(Accounted::new(Arc::new(RealKernel::new())));
    let kernel: Arc<dyn Kernel> = accounted.clone();
    let mut compared = 0;
    for (file, prog) in CASES {
        let object = data.join(file);
        let on_kernel = match run_program(&args(&object, prog, BpfBackend::Kernel), &kernel) {
            Ok(r) => r,
            Err(e) if compared == 0 && (e.contains("not available") || e.contains("EPERM")) => {
                let _ = writeln!(
                    std::io::stdout().lock(),
                    "SKIP objects_run_identically_in_the_vm_and_in_linux: bpf(2) not usable here: {e}"
                );
                return;
            }
            Err(e) => panic!("{file}/{prog} on the kernel: {e}"),
        };
        let on_vm = run_program(&args(&object, prog, BpfBackend::Vm), &kernel)
            .unwrap_or_else(|e| panic!("{file}/{prog} on the vm: {e}"));
        assert_eq!(
            on_vm.retval as u32, on_kernel.retval as u32,
            "{file}/{prog}: return values differ\nvm:\n{}\nkernel:\n{}",
            on_vm.text, on_kernel.text
        );
        assert_eq!(on_vm.mem, on_kernel.mem, "{file}/{prog}: contexts differ");
        assert_eq!(
            state_lines(&on_vm.text),
            state_lines(&on_kernel.text),
            "{file}/{prog}: map contents differ\nvm:\n{}\nkernel:\n{}",
            on_vm.text,
            on_kernel.text
        );
        compared += 1;
    }
    // Every object carries BTF with func_info, so each kernel load went with its BTF.
    assert_eq!(
        accounted.syscall_counts().get(SyscallKind::BpfBtfLoad),
        CASES.len() as u64
    );
    let _ = writeln!(
        std::io::stdout().lock(),
        "vm vs Linux: {compared} object programs, identical results"
    );
}

/// `.rodata` is read-only on both sides: Linux's verifier refuses a program that stores into
/// it (the loader froze the map, as libbpf does), and the vm faults when it tries.
#[test]
fn a_store_into_rodata_is_refused_by_the_vm_and_by_linux() {
    let object = Path::new(env!("CARGO_MANIFEST_DIR")).join("vm/tests/data/run_maps.o");
    let accounted = Arc::new(Accounted::new(Arc::new(RealKernel::new())));
    let kernel: Arc<dyn Kernel> = accounted.clone();
    let on_vm = run_program(&args(&object, "write_rodata", BpfBackend::Vm), &kernel)
        .expect_err("the vm let a program store into .rodata");
    assert!(
        on_vm.contains("running"),
        "the vm faults at run time: {on_vm}"
    );
    let on_kernel = match run_program(&args(&object, "write_rodata", BpfBackend::Kernel), &kernel) {
        Ok(r) => panic!("Linux ran a program storing into .rodata:\n{}", r.text),
        Err(e) if e.contains("not available") || e.contains("EPERM") => {
            let _ = writeln!(
                std::io::stdout().lock(),
                "SKIP a_store_into_rodata_is_refused_by_the_vm_and_by_linux: bpf(2) not usable here: {e}"
            );
            return;
        }
        Err(e) => e,
    };
    assert!(
        on_kernel.contains("loading:") && on_kernel.contains("write into map forbidden"),
        "the verifier refuses the load: {on_kernel}"
    );
    assert_eq!(
        accounted.syscall_counts().get(SyscallKind::BpfMapFreeze),
        1,
        "run_maps.o's .rodata is frozen before the load, as libbpf does"
    );
}

/// Map sizes on each side of Linux's limits at `BPF_MAP_CREATE`: the sim (the vm's maps) and
/// Linux create the same maps and refuse the same ones with the same errno. Array values over
/// 4 MiB (the compaction program's 4 MiB + 4 KiB output region among them) are created; the
/// largest array value Linux takes, `INT_MAX`, is left out: Linux allocates 2 GiB for it, the
/// vm refuses it for its own budget (`vm/tests/maps.rs` checks that side).
#[test]
fn map_size_limits_are_the_same_in_the_vm_and_in_linux() {
    use resystance_sim::SimKernel;
    use resystance_traces::{MapSpec, MapType};
    use resystance_vm::maps::{HASH_KEY_VALUE_BYTES_MAX, MAP_VALUE_BYTES_MAX};

    let real = RealKernel::new();
    if let Some(why) = real.bpf_unavailable() {
        let _ = writeln!(
            std::io::stdout().lock(),
            "SKIP map_size_limits_are_the_same_in_the_vm_and_in_linux: {why}"
        );
        return;
    }
    const MMAPABLE: u32 = 1 << 10;
    let hash_sum = u32::try_from(HASH_KEY_VALUE_BYTES_MAX).unwrap();
    let cases: &[(MapType, u32, u32, u32)] = &[
        (MapType::Array, 4, 4 << 20, 0),
        (MapType::Array, 4, (4 << 20) + 1, 0),
        (MapType::Array, 4, (4 << 20) + 4096, MMAPABLE),
        (MapType::Array, 4, 8 << 20, MMAPABLE),
        (MapType::Array, 4, MAP_VALUE_BYTES_MAX + 1, 0),
        (MapType::Array, 4, MAP_VALUE_BYTES_MAX + 1, MMAPABLE),
        (MapType::Array, 4, u32::MAX, 0),
        (MapType::PercpuArray, 4, 32 << 10, 0),
        (MapType::PercpuArray, 4, (32 << 10) + 1, 0),
        (MapType::Hash, 4, hash_sum - 4, 0),
        (MapType::Hash, 4, hash_sum - 3, 0),
        (MapType::Hash, 64, hash_sum - 64, 0),
        (MapType::Hash, 64, hash_sum - 63, 0),
        (MapType::Hash, 513, 8, 0),
        (MapType::Hash, u32::MAX, 1, 0),
    ];
    let sim = SimKernel::new(1);
    let kernels: [(&str, &dyn Kernel); 2] = [("vm", &sim), ("Linux", &real)];
    for &(map_type, key_size, value_size, flags) in cases {
        let spec = MapSpec {
            name: "limit".to_string(),
            map_type,
            key_size,
            value_size,
            max_entries: 1,
            flags,
        };
        let outcomes = kernels.map(|(name, kernel)| match kernel.bpf_map_create(&spec) {
            Ok(map) => {
                kernel.close(map.0).unwrap();
                (name, "created".to_string())
            }
            Err(e) => (name, format!("{:?}", e.errno())),
        });
        assert_eq!(
            outcomes[0].1, outcomes[1].1,
            "{map_type:?} key {key_size} value {value_size} flags {flags:#x}: {outcomes:?}"
        );
    }
    let _ = writeln!(
        std::io::stdout().lock(),
        "vm vs Linux: {} map sizes around the creation limits, same answers",
        cases.len()
    );
}
