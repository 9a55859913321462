//! What the compaction-program tests share: output lines, environment knobs, the Linux machine.

use std::sync::Arc;

use resystance::compaction::machines::KernelMachine;
use resystance_programs::abi::RUNS_MAX;
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
