//! What the compaction-program tests share: output lines, environment knobs, the Linux machine,
//! the transcript of one drive.

#![allow(dead_code)] // each test binary uses part of it

use std::sync::Arc;

use resystance::compaction::machines::KernelMachine;
use resystance_programs::abi::{
    window_bytes_for, window_bytes_valid, JobParams, Record, RUNS_MAX, WINDOW_BYTES_MIN,
};
use resystance_programs::driver::{
    drive, DriveError, DriveSummary, Machine, MemorySink, MemorySource,
};
use resystance_real_kernel::RealKernel;
use resystance_traces::Kernel;

/// Prints a line past libtest's capture (it swallows `println!` in passing tests).
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// A numeric environment knob, if set.
pub fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number"))
    })
}

/// The compaction program loaded into Linux, or `None` (after one SKIP line naming `what` and
/// the reason) when this process cannot use `bpf(2)`.
pub fn kernel_machine(what: &str) -> Option<KernelMachine> {
    let kernel = RealKernel::new();
    if let Some(why) = kernel.bpf_unavailable() {
        say!("SKIP the Linux half of {what}: {why}");
        return None;
    }
    let kernel: Arc<dyn Kernel> = Arc::new(kernel);
    Some(KernelMachine::new(kernel, RUNS_MAX).expect("Linux accepts compact.bpf.o"))
}

/// A valid `window_bytes` for `num_runs` runs (1..=`RUNS_MAX`) chosen by `pick`: the
/// smallest a third of the time, the largest the pool holds a third, any power between else.
pub fn window_bytes_pick(num_runs: u32, pick: u32) -> u32 {
    let largest = window_bytes_for(num_runs).expect("the pool holds the runs");
    let min = u32::try_from(WINDOW_BYTES_MIN).expect("fits u32");
    let steps = (largest / min).trailing_zeros(); // largest = min << steps
    let w = match pick % 3 {
        0 => min,
        1 => largest,
        _ => min << ((pick / 3) % (steps + 1)),
    };
    assert!(window_bytes_valid(num_runs, w), "{num_runs} runs, {w}");
    w
}

/// Everything a run of the protocol shows: every run's status, the result, the output files.
#[derive(Debug, PartialEq, Eq)]
pub struct Transcript {
    pub statuses: Vec<u32>,
    pub result: Result<DriveSummary, String>,
    pub files: Vec<(Vec<u8>, Vec<Record>)>,
}

/// Drives one compaction of `blocks` (per run, contents + trailer) through `machine`.
/// Panics on a protocol or machine failure: only the program's own errors are results.
pub fn transcript(
    machine: &mut dyn Machine,
    params: &JobParams,
    blocks: &[Vec<Vec<u8>>],
    blocks_per_window: usize,
    first_offset: u32,
) -> Transcript {
    let mut source = MemorySource::new(blocks.to_vec());
    source.blocks_per_window = blocks_per_window;
    source.first_offset = first_offset;
    let mut sink = MemorySink::default();
    let mut statuses = Vec::new();
    let result = drive(machine, params, &mut source, &mut sink, &mut |s| {
        statuses.push(s);
    });
    let result = result.map_err(|e| match e {
        DriveError::Program(p) => format!("{p:?}"),
        other => panic!("protocol or machine failure: {other}"),
    });
    Transcript {
        statuses,
        result,
        files: sink.files,
    }
}
