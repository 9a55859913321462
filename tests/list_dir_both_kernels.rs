//! Listing a directory costs the same system calls on the sim as on Linux: `openat`, one
//! `getdents64` per 32 KiB of entries plus the one that returns 0, `close` — for an empty
//! directory, a database-sized one, and one whose entries need two buffers (names of equal
//! length, so Linux's hash order packs them exactly as the sim's name order does).

use std::path::Path;
use std::sync::Arc;

use resystance_real_kernel::RealKernel;
use resystance_sim::SimKernel;
use resystance_traces::{Kernel, OpenFlags, SyscallCounts, SyscallKind};

macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// Creates `files` empty files of 20-character names in `dir`, then lists it: the names and
/// the counts the listing alone cost.
fn list(kernel: &Arc<dyn Kernel>, dir: &Path, files: usize) -> (Vec<String>, SyscallCounts) {
    for i in 0..files {
        let fd = kernel
            .open(&dir.join(format!("{i:016}.sst")), OpenFlags::CREATE_NEW)
            .unwrap();
        kernel.close(fd).unwrap();
    }
    let before = kernel.syscall_counts();
    let names = kernel.list_dir(dir).unwrap();
    (names, kernel.syscall_counts().since(&before))
}

#[test]
fn listing_costs_the_same_calls_on_both_kernels() {
    for files in [0, 40, 1500] {
        let sim: Arc<dyn Kernel> = Arc::new(SimKernel::new(1));
        let sim_dir = Path::new("/tmp/listing");
        sim.mkdir(sim_dir).unwrap();
        let (sim_names, sim_counts) = list(&sim, sim_dir, files);
        let tmp = tempfile::tempdir().unwrap();
        let real: Arc<dyn Kernel> = Arc::new(RealKernel::new());
        let (real_names, real_counts) = list(&real, tmp.path(), files);
        assert_eq!(sim_names.len(), files);
        assert_eq!(sim_names, real_names);
        assert_eq!(sim_counts, real_counts, "{files} files");
        let getdents = real_counts.get(SyscallKind::Getdents);
        assert_eq!(real_counts.get(SyscallKind::Open), 1);
        assert_eq!(real_counts.get(SyscallKind::Close), 1);
        // 1500 records of 40 bytes need two 32 KiB buffers; fewer need one; then the 0.
        assert_eq!(getdents, if files == 1500 { 3 } else { 2 }, "{files} files");
        say!("list_dir of {files} files: openat 1, getdents64 {getdents}, close 1 on both kernels");
    }
}
