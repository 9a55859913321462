//! The `resystance` command: `resystance bench` runs db_bench-style benchmarks on the engine;
//! `resystance bpf` runs and disassembles eBPF programs on the vm or the kernel.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use resystance::bench::{self, Cli, Command};
use resystance_real_kernel::RealKernel;
use resystance_traces::Kernel;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Bench(args) => match bench::run(&args) {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(e.exit_code())
            }
        },
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
