//! `resystance bpf`: run or disassemble an eBPF program on the vm or on the Linux kernel.
//!
//! Raw programs follow the uBPF / bpf_conformance convention: little-endian 8-byte
//! instructions, r1 = pointer to the memory, r2 = its length. On the kernel the memory is a
//! `BPF_PROG_TYPE_SYSCALL` program's context, run by `BPF_PROG_TEST_RUN`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Args, Subcommand, ValueEnum};
use resystance_traces::{Kernel, ProgLoad, ProgLoaded, ProgType, TestRunResult};
use resystance_vm::exec::{self, Limits, Vm};
use resystance_vm::helpers::Clock;
use resystance_vm::loader::{self, LoadOptions};
use resystance_vm::object::{MapDef, MapRelocKind, MapType as ObjMapType, Object};

use crate::bpf_object::{self, KernelProgram};

/// `resystance bpf …`.
#[derive(Debug, Args)]
pub struct BpfArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: BpfCommand,
}

/// The `bpf` subcommands.
#[derive(Debug, Subcommand)]
pub enum BpfCommand {
    /// Run a program once and print its return value, status and a digest of its memory.
    Run(RunArgs),
    /// Print a program's instructions in the kernel verifier's notation.
    Disasm(DisasmArgs),
}

/// Where a program runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BpfBackend {
    /// resystance's checked interpreter (no root needed).
    Vm,
    /// The Linux kernel: `bpf(BPF_PROG_LOAD)` + `BPF_PROG_TEST_RUN` (root or CAP_BPF).
    Kernel,
}

/// `resystance bpf run`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["object", "raw"])))]
pub struct RunArgs {
    /// A clang-compiled BPF object (ELF); pick the program with `--prog`.
    #[arg(value_name = "OBJECT.o", requires = "prog")]
    pub object: Option<PathBuf>,
    /// The program (function name) to run from `OBJECT.o`.
    #[arg(long, value_name = "NAME")]
    pub prog: Option<String>,
    /// The context of an object's program, as hex bytes.
    #[arg(long = "ctx-hex", value_name = "HEX", conflicts_with = "raw")]
    pub ctx_hex: Option<String>,
    /// Array-map contents before the run: the file's bytes are the values, index 0 first.
    #[arg(long = "map", value_name = "NAME=FILE", conflicts_with = "raw")]
    pub maps: Vec<String>,
    /// Raw program: little-endian 8-byte instructions.
    #[arg(long, value_name = "PROG.bin")]
    pub raw: Option<PathBuf>,
    /// The memory a raw program gets in r1 (length in r2); none if omitted.
    #[arg(long, value_name = "FILE", requires = "raw")]
    pub mem: Option<PathBuf>,
    /// Where to run it.
    #[arg(long, value_enum, default_value = "vm")]
    pub backend: BpfBackend,
    /// Instruction budget of a vm run.
    #[arg(long, default_value_t = exec::INSNS_MAX_DEFAULT)]
    pub insns_max: u64,
}

/// `resystance bpf disasm`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["object", "raw"])))]
pub struct DisasmArgs {
    /// A clang-compiled BPF object (ELF): its programs, linked, map loads named.
    #[arg(value_name = "OBJECT.o")]
    pub object: Option<PathBuf>,
    /// Only this program of `OBJECT.o` (all of them if omitted).
    #[arg(long, value_name = "NAME", requires = "object")]
    pub prog: Option<String>,
    /// Raw program: little-endian 8-byte instructions.
    #[arg(long, value_name = "PROG.bin")]
    pub raw: Option<PathBuf>,
}

/// What a run printed, for tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunReport {
    /// The return value as the backend reports it (64 bits on the vm, 32 on Linux).
    pub retval: u64,
    /// The memory after the run.
    pub mem: Vec<u8>,
    /// The lines printed.
    pub text: String,
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("reading {what} {}: {e}", path.display()))
}

/// Runs `resystance bpf …`, returning the text to print.
pub fn run(args: &BpfArgs, kernel: &Arc<dyn Kernel>) -> Result<String, String> {
    match &args.command {
        BpfCommand::Run(r) => run_program(r, kernel).map(|report| report.text),
        BpfCommand::Disasm(d) => disasm(d),
    }
}

fn disasm(args: &DisasmArgs) -> Result<String, String> {
    match (&args.object, &args.raw) {
        (Some(object), None) => disasm_object(object, args.prog.as_deref()),
        (None, Some(raw)) => {
            let bytes = read(raw, "program")?;
            let program = exec::Program::from_raw(&bytes)
                .map_err(|e| format!("loading {}: {e}", raw.display()))?;
            let mut out = String::new();
            for (pc, text) in exec::disassemble(&program) {
                let _ = writeln!(out, "{pc:5}: {text}");
            }
            Ok(out)
        }
        _ => Err("give either OBJECT.o or --raw PROG.bin".into()),
    }
}

/// Reads and parses an object, named after its file as libbpf names objects.
fn parse_object(path: &Path) -> Result<Object, String> {
    let bytes = read(path, "object")?;
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    Object::parse(
        Object::name_from_file_name(file_name.as_deref().unwrap_or("object")),
        &bytes,
    )
    .map_err(|e| format!("parsing {}: {e}", path.display()))
}

/// Each program of an object (or just `only`), linked, with its map loads named.
fn disasm_object(path: &Path, only: Option<&str>) -> Result<String, String> {
    let object = parse_object(path)?;
    let programs: Vec<_> = object
        .programs()
        .iter()
        .filter(|p| only.is_none_or(|name| p.name() == name))
        .collect();
    if programs.is_empty() {
        return Err(format!(
            "{} has no program {:?}",
            path.display(),
            only.unwrap_or_default()
        ));
    }
    let mut out = String::new();
    for p in programs {
        // Map loads become placeholders for decoding; the comment says what they load.
        let insns = p
            .resolved_with(|_| Ok::<u64, std::convert::Infallible>(0))
            .unwrap_or_else(|never| match never {});
        let raw: Vec<u8> = insns.iter().flat_map(|w| w.to_le_bytes()).collect();
        let program = exec::Program::from_raw(&raw)
            .map_err(|e| format!("decoding {} of {}: {e}", p.name(), path.display()))?;
        let _ = writeln!(out, "{} (section {}):", p.name(), p.section());
        for (pc, text) in exec::disassemble(&program) {
            match p.map_relocs().iter().find(|r| r.insn_index == pc) {
                Some(r) => {
                    let map = &object.maps()[r.map_index].name;
                    let what = match r.kind {
                        MapRelocKind::Fd => format!("map {map}"),
                        MapRelocKind::Value { offset } => format!("&{map}[{offset}]"),
                    };
                    let _ = writeln!(out, "{pc:5}: {text}  ; {what}");
                }
                None => {
                    let _ = writeln!(out, "{pc:5}: {text}");
                }
            }
        }
    }
    Ok(out)
}

/// Loads and runs one program (raw or from an object) on the chosen backend.
pub fn run_program(args: &RunArgs, kernel: &Arc<dyn Kernel>) -> Result<RunReport, String> {
    match (&args.object, &args.raw) {
        (Some(object), None) => run_object(args, object, kernel),
        (None, Some(raw)) => run_raw(args, raw, kernel),
        _ => Err("give either OBJECT.o (with --prog) or --raw PROG.bin".into()),
    }
}

fn run_raw(args: &RunArgs, raw: &Path, kernel: &Arc<dyn Kernel>) -> Result<RunReport, String> {
    let bytes = read(raw, "program")?;
    let mut mem = match &args.mem {
        Some(p) => read(p, "memory")?,
        None => Vec::new(),
    };
    let program =
        exec::Program::from_raw(&bytes).map_err(|e| format!("loading {}: {e}", raw.display()))?;
    let mut text = String::new();
    let retval = match args.backend {
        BpfBackend::Vm => {
            let result = Vm::new()
                .run(
                    &program,
                    &mut mem,
                    &Limits {
                        insns_max: args.insns_max,
                    },
                )
                .map_err(|e| format!("running {} on the vm: {e}", raw.display()))?;
            let _ = writeln!(text, "backend:      vm (checked interpreter)");
            let _ = writeln!(text, "return value: {:#018x} (r0, all 64 bits)", result.r0);
            let _ = writeln!(
                text,
                "status:       ok, {} instructions executed",
                result.insns_executed
            );
            result.r0
        }
        BpfBackend::Kernel => {
            let insns = bytes
                .chunks_exact(exec::INSN_SIZE_BYTES)
                .map(|c| u64::from_le_bytes(c.try_into().expect("8-byte chunk")))
                .collect();
            let loaded = kernel
                .bpf_prog_load(&ProgLoad {
                    name: "resystance_run".into(),
                    prog_type: ProgType::Syscall,
                    insns,
                    license: "GPL".into(),
                })
                .map_err(|e| format!("loading {} into the kernel: {e}", raw.display()))?;
            let run = kernel.bpf_prog_test_run(loaded.fd, &mut mem);
            // The program is run once; its descriptor goes whatever the outcome.
            let _ = kernel.close(loaded.fd.0);
            let run = run.map_err(|e| format!("BPF_PROG_TEST_RUN of {}: {e}", raw.display()))?;
            describe_kernel_run(&mut text, &loaded, &run)
        }
    };
    let _ = writeln!(
        text,
        "memory:       {} bytes after the run, xxh3 {:#018x}",
        mem.len(),
        xxhash_rust::xxh3::xxh3_64(&mem)
    );
    Ok(RunReport { retval, mem, text })
}

/// Parses `--ctx-hex`.
fn parse_hex(hex: &str) -> Result<Vec<u8>, String> {
    let hex: String = hex.chars().filter(|c| !c.is_whitespace()).collect();
    if hex.len() % 2 != 0 {
        return Err(format!(
            "--ctx-hex has an odd number of digits ({})",
            hex.len()
        ));
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&hex[i..i + 2], 16)
                .map_err(|_| format!("--ctx-hex: {:?} is not a hex byte", &hex[i..i + 2]))
        })
        .collect()
}

/// `--map NAME=FILE` pairs with the files read.
fn map_inputs(args: &RunArgs) -> Result<Vec<(String, Vec<u8>)>, String> {
    args.maps
        .iter()
        .map(|m| {
            let (name, file) = m
                .split_once('=')
                .ok_or_else(|| format!("--map {m:?}: expected NAME=FILE"))?;
            Ok((name.to_string(), read(Path::new(file), "map contents")?))
        })
        .collect()
}

/// The values of an array map split from `bytes`, checked against its shape.
fn array_values<'a>(def: &MapDef, bytes: &'a [u8]) -> Result<Vec<&'a [u8]>, String> {
    bpf_object::array_values(def, bytes).map_err(|why| format!("--map {}: {why}", def.name))
}

/// The vm's clock is the owning kernel's clock.
#[derive(Debug)]
struct KernelClock(Arc<dyn Kernel>);

impl Clock for KernelClock {
    fn monotonic_ns(&self) -> u64 {
        self.0.now_ns()
    }
}

fn run_object(args: &RunArgs, path: &Path, kernel: &Arc<dyn Kernel>) -> Result<RunReport, String> {
    let object = parse_object(path)?;
    let prog = args
        .prog
        .as_deref()
        .expect("clap requires --prog with OBJECT.o");
    let mut ctx = match &args.ctx_hex {
        Some(h) => parse_hex(h)?,
        None => Vec::new(),
    };
    let inputs = map_inputs(args)?;
    let def_of = |name: &str| {
        object
            .map(name)
            .map(|(_, def)| def)
            .ok_or_else(|| format!("--map {name}: {} has no such map", path.display()))
    };
    let mut text = String::new();
    let mut digests: Vec<(String, Vec<u8>)> = Vec::new();
    let retval = match args.backend {
        BpfBackend::Vm => {
            let clock: Arc<dyn Clock> = Arc::new(KernelClock(Arc::clone(kernel)));
            let mut loaded = loader::load(&object, prog, &LoadOptions::new(clock))
                .map_err(|e| format!("loading {prog} from {}: {e}", path.display()))?;
            for (name, contents) in &inputs {
                for (i, value) in array_values(def_of(name)?, contents)?
                    .into_iter()
                    .enumerate()
                {
                    loaded
                        .map_update(name, &(i as u32).to_le_bytes(), value, 0)
                        .map_err(|e| format!("--map {name}: {e}"))?;
                }
            }
            let result = loaded
                .run(&mut ctx)
                .map_err(|e| format!("running {prog} on the vm: {e}"))?;
            for def in object.maps() {
                // Plain arrays only, as on the kernel (a per-CPU lookup there returns one value
                // per possible CPU).
                if matches!(def.map_type, ObjMapType::Array) {
                    let mut all = Vec::new();
                    for i in 0..def.max_entries {
                        let v = loaded
                            .map_lookup(&def.name, &i.to_le_bytes())
                            .map_err(|e| format!("reading map {}: {e}", def.name))?;
                        all.extend(v.unwrap_or_default());
                    }
                    digests.push((def.name.clone(), all));
                }
            }
            let _ = writeln!(text, "backend:      vm (checked interpreter)");
            let _ = writeln!(text, "return value: {:#018x} (r0, all 64 bits)", result.r0);
            let _ = writeln!(
                text,
                "status:       ok, {} instructions executed",
                result.insns_executed
            );
            for line in loaded.trace() {
                let _ = writeln!(text, "trace:        {line}");
            }
            result.r0
        }
        BpfBackend::Kernel => run_object_on_kernel(
            &object,
            prog,
            &inputs,
            &mut ctx,
            kernel,
            &mut text,
            &mut digests,
        )
        .map_err(|e| format!("{prog} from {} on the kernel: {e}", path.display()))?,
    };
    let _ = writeln!(
        text,
        "context:      {} bytes after the run, xxh3 {:#018x}",
        ctx.len(),
        xxhash_rust::xxh3::xxh3_64(&ctx)
    );
    for (name, contents) in &digests {
        let _ = writeln!(
            text,
            "map {name}: {} bytes of values, xxh3 {:#018x}",
            contents.len(),
            xxhash_rust::xxh3::xxh3_64(contents)
        );
    }
    Ok(RunReport {
        retval,
        mem: ctx,
        text,
    })
}

/// The lines describing a kernel run; returns the return value Linux reported (32 bits).
fn describe_kernel_run(text: &mut String, loaded: &ProgLoaded, run: &TestRunResult) -> u64 {
    let _ = writeln!(
        text,
        "backend:      kernel (BPF_PROG_TYPE_SYSCALL, BPF_PROG_TEST_RUN)"
    );
    match loaded.verified_insns {
        Some(n) => {
            let _ = writeln!(text, "verifier:     accepted, {n} instructions processed");
        }
        None => {
            let _ = writeln!(text, "verifier:     accepted");
        }
    }
    let _ = writeln!(
        text,
        "return value: {:#010x} (low 32 bits of r0: all Linux's test-run reports)",
        run.retval
    );
    let _ = writeln!(text, "status:       ok, run took {} ns", run.duration_ns);
    u64::from(run.retval)
}

/// Loads `prog` with its maps through [`KernelProgram`], runs it once on `ctx`, and reads the
/// plain array maps back (a per-CPU lookup returns one value per possible CPU).
fn run_object_on_kernel(
    object: &Object,
    prog: &str,
    inputs: &[(String, Vec<u8>)],
    ctx: &mut [u8],
    kernel: &Arc<dyn Kernel>,
    text: &mut String,
    digests: &mut Vec<(String, Vec<u8>)>,
) -> Result<u64, String> {
    // Checked here too so that `--map` mistakes are worded as the command line spells them.
    for (name, contents) in inputs {
        let (_, def) = object
            .map(name)
            .ok_or_else(|| format!("--map {name}: no such map"))?;
        array_values(def, contents)?;
    }
    // Dropping `program` closes its descriptors, success or not.
    let program =
        KernelProgram::load(Arc::clone(kernel), object, prog, inputs).map_err(|e| e.to_string())?;
    let run = program.test_run(ctx).map_err(|e| e.to_string())?;
    for (def, _) in program.maps() {
        if matches!(def.map_type, ObjMapType::Array) {
            let all = program.read_array(&def.name).map_err(|e| e.to_string())?;
            digests.push((def.name.clone(), all));
        }
    }
    Ok(describe_kernel_run(text, program.loaded(), &run))
}

#[cfg(test)]
mod tests {
    use super::*;
    use resystance_real_kernel::RealKernel;

    fn insn(opc: u8, dst: u8, src: u8, off: i16, imm: i32) -> [u8; 8] {
        exec::encode_insn(opc, dst, src, off, imm).to_le_bytes()
    }

    #[test]
    fn runs_a_raw_program_on_the_vm_and_reports_its_memory() {
        let dir = tempfile::tempdir().unwrap();
        // r0 = *(u32 *)(r1 + 0); r0 += r2; *(u32 *)(r1 + 4) = r0; exit
        let prog: Vec<u8> = [
            insn(0x61, 0, 1, 0, 0),
            insn(0x0f, 0, 2, 0, 0),
            insn(0x63, 1, 0, 4, 0),
            insn(0x95, 0, 0, 0, 0),
        ]
        .concat();
        let raw = dir.path().join("p.bin");
        let mem = dir.path().join("m.mem");
        std::fs::write(&raw, &prog).unwrap();
        std::fs::write(&mem, [40u8, 0, 0, 0, 0, 0, 0, 0]).unwrap();
        let kernel: Arc<dyn Kernel> = Arc::new(RealKernel::new());
        let args = RunArgs {
            object: None,
            prog: None,
            ctx_hex: None,
            maps: Vec::new(),
            raw: Some(raw.clone()),
            mem: Some(mem),
            backend: BpfBackend::Vm,
            insns_max: 100,
        };
        let report = run_program(&args, &kernel).unwrap();
        assert_eq!(report.retval, 48, "40 + the 8-byte length");
        assert_eq!(report.mem, vec![40, 0, 0, 0, 48, 0, 0, 0]);
        assert!(
            report.text.contains("0x0000000000000030 (r0, all 64 bits)"),
            "{}",
            report.text
        );
        let listing = disasm(&DisasmArgs {
            object: None,
            prog: None,
            raw: Some(raw),
        })
        .unwrap();
        assert!(listing.contains("    1: r0 += r2"), "{listing}");
    }

    #[test]
    fn a_runaway_program_is_an_error_not_a_hang() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("loop.bin");
        // r0 = 0; goto -1 (back to itself)
        std::fs::write(
            &raw,
            [insn(0xb7, 0, 0, 0, 0), insn(0x05, 0, 0, -1, 0)].concat(),
        )
        .unwrap();
        let kernel: Arc<dyn Kernel> = Arc::new(RealKernel::new());
        let err = run_program(
            &RunArgs {
                object: None,
                prog: None,
                ctx_hex: None,
                maps: Vec::new(),
                raw: Some(raw),
                mem: None,
                backend: BpfBackend::Vm,
                insns_max: 10_000,
            },
            &kernel,
        )
        .unwrap_err();
        assert!(err.contains("running"), "{err}");
    }

    #[test]
    fn runs_an_object_program_on_the_vm_with_its_maps() {
        let object = Path::new(env!("CARGO_MANIFEST_DIR")).join("vm/tests/data/maps_and_globals.o");
        let kernel: Arc<dyn Kernel> = Arc::new(RealKernel::new());
        let args = RunArgs {
            object: Some(object),
            prog: Some("run".into()),
            ctx_hex: Some("00 11 22 33".into()),
            maps: Vec::new(),
            raw: None,
            mem: None,
            backend: BpfBackend::Vm,
            insns_max: 1_000_000,
        };
        let report = run_program(&args, &kernel).unwrap();
        assert_eq!(report.retval, 0, "{}", report.text);
        assert_eq!(report.mem, vec![0x00, 0x11, 0x22, 0x33]);
        // blocks[0] = mix(0) = 0 * scale + bias + limit + hidden = 0x11223344 + 1000 + 9.
        let mut blocks = 0x1122_3735u64.to_le_bytes().to_vec();
        blocks.extend([0u8; 24]);
        let line = format!(
            "map blocks: 32 bytes of values, xxh3 {:#018x}",
            xxhash_rust::xxh3::xxh3_64(&blocks)
        );
        assert!(
            report.text.contains(&line),
            "{}\nwanted: {line}",
            report.text
        );
        assert_eq!(parse_hex("0a ff").unwrap(), vec![0x0a, 0xff]);
        assert!(parse_hex("abc").is_err());
    }

    #[test]
    fn disassembles_an_object_with_its_map_loads_named() {
        let object = Path::new(env!("CARGO_MANIFEST_DIR")).join("vm/tests/data/maps_and_globals.o");
        let listing = disasm(&DisasmArgs {
            object: Some(object),
            prog: Some("run".into()),
            raw: None,
        })
        .unwrap();
        assert!(listing.starts_with("run (section syscall):"), "{listing}");
        assert!(listing.contains("; map blocks"), "{listing}");
        assert!(listing.contains("; map index_map"), "{listing}");
        assert!(listing.contains("exit"), "{listing}");
    }
}
