//! Nothing leaks on the real kernel: after a database in each compaction mode has written,
//! compacted and closed — and after a compaction that failed on a damaged table — the
//! process has the descriptors it had before (files, io_uring rings, BPF maps and programs)
//! and no BPF map left mapped. One test in its own binary, so no other test's descriptors
//! come and go meanwhile.

use std::path::Path;
use std::sync::Arc;

use resystance::{BackgroundMode, CompactionMode, Db, Options};
use resystance_real_kernel::RealKernel;
use resystance_traces::{Kernel, UringParams};

macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// The process's open descriptors, as `/proc/self/fd` links (e.g. `anon_inode:bpf-map`).
fn descriptors() -> Vec<String> {
    let mut links: Vec<String> = std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .filter_map(Result::ok)
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .map(|p| p.display().to_string())
        // read_dir's own descriptor, already closed when the link is read
        .filter(|p| !p.starts_with("/proc/"))
        .collect();
    links.sort();
    links
}

/// Mappings of BPF maps and io_uring rings in `/proc/self/maps`.
fn kernel_mappings() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .expect("/proc/self/maps")
        .lines()
        .filter(|l| l.contains("anon_inode:bpf-map") || l.contains("anon_inode:[io_uring]"))
        .count()
}

fn options(mode: CompactionMode) -> Options {
    let mut o = Options {
        write_buffer_size: 64 << 10,
        target_file_size_base: 64 << 10,
        max_bytes_for_level_base: 256 << 10,
        level0_file_num_compaction_trigger: 3,
        background: BackgroundMode::Threads,
        compaction_mode: mode,
        ..Options::default()
    };
    o.table.block_size_bytes = 1024;
    o
}

fn fill(db: &Db, n: u32) {
    for i in 0..n {
        let key = format!("key{:07}", (i * 7919) % 20_000);
        db.put(
            key.as_bytes(),
            format!("value-{i}-{}", "x".repeat(60)).as_bytes(),
        )
        .unwrap();
    }
}

/// Flips one byte in the middle of the largest table (a data block: its checksum fails).
fn damage_a_table(dir: &Path) {
    let largest = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".sst"))
        .max_by_key(|e| e.metadata().map_or(0, |m| m.len()))
        .expect("a table");
    let mut bytes = std::fs::read(largest.path()).unwrap();
    let at = bytes.len() / 3;
    bytes[at] ^= 0x40;
    std::fs::write(largest.path(), bytes).unwrap();
}

#[test]
fn runs_and_failed_runs_leave_no_descriptor_or_mapping_behind() {
    let kernel = RealKernel::new();
    let mut modes = vec![CompactionMode::Baseline];
    match kernel.uring_setup(&UringParams::default()) {
        Ok(ring) => {
            let _ = kernel.uring_close(ring);
            modes.push(CompactionMode::Uring);
            match kernel.bpf_unavailable() {
                None => modes.push(CompactionMode::Resystance),
                Some(why) => say!("SKIP the resystance mode of the leak test: {why}"),
            }
        }
        Err(e) => say!("SKIP the uring and resystance modes of the leak test: {e}"),
    }
    let before = descriptors();
    let maps_before = kernel_mappings();
    for mode in modes {
        let dir = tempfile::tempdir().unwrap();
        let k: Arc<dyn Kernel> = Arc::new(RealKernel::new());
        // A run that works.
        let db = Db::open(Arc::clone(&k), dir.path(), options(mode)).unwrap();
        fill(&db, 12_000);
        db.compact_all().unwrap();
        db.close().unwrap();
        assert_eq!(
            descriptors(),
            before,
            "{mode}: descriptors after a clean run"
        );
        assert_eq!(
            kernel_mappings(),
            maps_before,
            "{mode}: mappings after a clean run"
        );
        // A run whose compaction fails on a damaged table.
        let db = Db::open(Arc::clone(&k), dir.path(), options(mode)).unwrap();
        fill(&db, 3_000);
        db.flush().unwrap();
        damage_a_table(dir.path());
        let err = db
            .compact_all()
            .expect_err("a damaged block fails the compaction");
        let _ = db.close();
        assert_eq!(
            descriptors(),
            before,
            "{mode}: descriptors after a failed compaction ({err})"
        );
        assert_eq!(
            kernel_mappings(),
            maps_before,
            "{mode}: mappings after a failed compaction"
        );
        say!("{mode}: no descriptor or mapping left after a clean run and after a failed one ({err})");
    }
}
