//! `resystance bpf`: run or disassemble an eBPF program on the vm or on the Linux kernel.
//!
//! Raw programs follow the uBPF / bpf_conformance convention: little-endian 8-byte
//! instructions, r1 = pointer to the memory, r2 = its length. On the kernel the memory is a
//! `BPF_PROG_TYPE_SYSCALL` program's context, run by `BPF_PROG_TEST_RUN`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Args, Subcommand, ValueEnum};
use resystance_traces::{Kernel, ProgLoad, ProgType};
use resystance_vm::exec::{self, Limits, Vm};

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
pub struct RunArgs {
    /// Raw program: little-endian 8-byte instructions.
    #[arg(long, value_name = "PROG.bin")]
    pub raw: PathBuf,
    /// The memory the program gets in r1 (length in r2); none if omitted.
    #[arg(long, value_name = "FILE")]
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
pub struct DisasmArgs {
    /// Raw program: little-endian 8-byte instructions.
    #[arg(long, value_name = "PROG.bin")]
    pub raw: PathBuf,
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
    let bytes = read(&args.raw, "program")?;
    let program = exec::Program::from_raw(&bytes)
        .map_err(|e| format!("loading {}: {e}", args.raw.display()))?;
    let mut out = String::new();
    for (pc, text) in exec::disassemble(&program) {
        let _ = writeln!(out, "{pc:5}: {text}");
    }
    Ok(out)
}

/// Loads and runs one raw program on the chosen backend.
pub fn run_program(args: &RunArgs, kernel: &Arc<dyn Kernel>) -> Result<RunReport, String> {
    let bytes = read(&args.raw, "program")?;
    let mut mem = match &args.mem {
        Some(p) => read(p, "memory")?,
        None => Vec::new(),
    };
    let program = exec::Program::from_raw(&bytes)
        .map_err(|e| format!("loading {}: {e}", args.raw.display()))?;
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
                .map_err(|e| format!("running {} on the vm: {e}", args.raw.display()))?;
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
                .map_err(|e| format!("loading {} into the kernel: {e}", args.raw.display()))?;
            let run = kernel.bpf_prog_test_run(loaded.fd, &mut mem);
            // The program is run once; its descriptor goes whatever the outcome.
            let _ = kernel.close(loaded.fd.0);
            let run =
                run.map_err(|e| format!("BPF_PROG_TEST_RUN of {}: {e}", args.raw.display()))?;
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
    };
    let _ = writeln!(
        text,
        "memory:       {} bytes after the run, xxh3 {:#018x}",
        mem.len(),
        xxhash_rust::xxh3::xxh3_64(&mem)
    );
    Ok(RunReport { retval, mem, text })
}

#[cfg(test)]
mod tests {
    use super::*;
    use resystance_real_kernel::RealKernel;

    fn insn(opc: u8, dst: u8, src: u8, off: i16, imm: i32) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[0] = opc;
        b[1] = (src << 4) | dst;
        b[2..4].copy_from_slice(&off.to_le_bytes());
        b[4..8].copy_from_slice(&imm.to_le_bytes());
        b
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
            raw,
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
            raw: args.raw.clone(),
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
                raw,
                mem: None,
                backend: BpfBackend::Vm,
                insns_max: 10_000,
            },
            &kernel,
        )
        .unwrap_err();
        assert!(err.contains("running"), "{err}");
    }
}
