//! The `resystance` command: `resystance bench` runs db_bench-style benchmarks on the engine;
//! `resystance bpf` runs and disassembles eBPF programs on the vm or the kernel;
//! `resystance sim` runs a seed campaign on the simulated kernel;
//! `resystance doctor` says what this host lacks for the real-kernel modes.

use std::process::ExitCode;
use std::sync::Arc;

use clap::{CommandFactory, FromArgMatches};
use resystance::bench::{self, Cli, Command};
use resystance_real_kernel::RealKernel;
use resystance_traces::Kernel;

/// `resystance doctor`: declared here, beside the engine's own subcommands.
const DOCTOR: &str = "doctor";

/// Prints one line per capability (`ok …` or `missing …: what to do`); exit 0 when every
/// required one is present, 1 otherwise.
fn doctor() -> ExitCode {
    let report = resystance_real_kernel::probe::probe(&RealKernel::new());
    print!("{report}");
    if report.ready() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn main() -> ExitCode {
    let command = Cli::command().subcommand(clap::Command::new(DOCTOR).about(
        "Check privileges, kernel version and features (SYSCALL programs, mmapable maps, \
         io_uring, SQPOLL) and RLIMIT_MEMLOCK for the real-kernel modes",
    ));
    let matches = command.get_matches();
    if matches.subcommand_name() == Some(DOCTOR) {
        return doctor();
    }
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    match cli.command {
        Command::Bench(args) => match bench::run(&args) {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(e.exit_code())
            }
        },
        Command::Sim(args) => ExitCode::from(resystance::campaign::cli::run(&args)),
        Command::Bpf(args) => {
            let kernel: Arc<dyn Kernel> = Arc::new(RealKernel::new());
            match resystance::bpf_cmd::run(&args, &kernel) {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
