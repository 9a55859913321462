//! The `resystance` command: `resystance bench` runs db_bench-style benchmarks on the engine.

use std::process::ExitCode;

use clap::Parser;
use resystance::bench::{self, Cli, Command};

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
    }
}
