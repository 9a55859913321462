//! The three compaction modes on the real kernel produce byte-identical tables, with
//! buffered input reads and with `O_DIRECT` reads through SQPOLL rings.
//!
//! One workload (flushes, L0 compactions, leveled compactions, a full manual compaction with
//! snapshots and deletions), run with background work inline so every mode sees the same jobs
//! in the same order; then every `.sst` file of the three databases must be byte-identical, and
//! each database must read back the same data. `uring` needs io_uring and `resystance` needs
//! `bpf(2)` (root): without them, one SKIP line names what is missing. The io_uring modes
//! must write and sync their outputs through io_uring only (no `pwrite`, `fdatasync` or
//! `fsync` during compaction).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use resystance::{BackgroundMode, CompactionMode, Db, Options};
use resystance_real_kernel::RealKernel;
use resystance_traces::{Kernel, SyscallKind};

macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

fn options(mode: CompactionMode, direct: bool) -> Options {
    let mut o = Options {
        use_direct_reads: direct,
        // O_DIRECT runs also poll their rings' submissions with SQPOLL (a third read path).
        uring_sqpoll: direct,
        uring_queue_depth: resystance::options::URING_QUEUE_DEPTH_DEFAULT,
        write_buffer_size: 64 << 10,
        target_file_size_base: 64 << 10,
        max_bytes_for_level_base: 256 << 10,
        level0_file_num_compaction_trigger: 3,
        background: BackgroundMode::Inline,
        compaction_mode: mode,
        ..Options::default()
    };
    o.table.block_size_bytes = 1024;
    o
}

type Tables = BTreeMap<String, Vec<u8>>;

/// Every key of `db`, then, once it is closed, the bytes of every table in `dir`.
fn close_and_read(db: Db, dir: &Path) -> (Tables, BTreeMap<Vec<u8>, Vec<u8>>) {
    let data = db
        .iter(None, None)
        .collect::<resystance::Result<BTreeMap<_, _>>>()
        .unwrap();
    db.close().unwrap();
    let mut tables = Tables::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        if name.ends_with(".sst") {
            tables.insert(name, std::fs::read(entry.path()).unwrap());
        }
    }
    (tables, data)
}

fn run(
    mode: CompactionMode,
    direct: bool,
    dir: &Path,
) -> (Tables, BTreeMap<Vec<u8>, Vec<u8>>, u64, u64) {
    let kernel: Arc<dyn Kernel> = Arc::new(RealKernel::new());
    let db = Db::open(Arc::clone(&kernel), dir, options(mode, direct)).expect("open");
    let mut snapshot = None;
    for i in 0..6000u32 {
        let key = format!("key{:06}", (i * 7919) % 2500);
        if i % 13 == 0 {
            db.delete(key.as_bytes()).unwrap();
        } else {
            let value = format!("v{i}-{}", "x".repeat((i % 7 * 30) as usize));
            db.put(key.as_bytes(), value.as_bytes()).unwrap();
        }
        if i == 3000 {
            snapshot = Some(db.snapshot());
        }
    }
    db.compact_all().unwrap();
    drop(snapshot);
    db.compact_all().unwrap();
    let stats = db.stats().compaction;
    let (tables, data) = close_and_read(db, dir);
    let c = &stats.syscalls;
    let preads = c.get(SyscallKind::Pread);
    let enters = c.get(SyscallKind::IoUringEnter) + c.get(SyscallKind::BpfProgTestRun);
    // Outputs: baseline writes and syncs with system calls of its own; the io_uring modes
    // write blocks and tails and sync tables and the directory through their rings.
    let (writes, syncs) = (
        c.get(SyscallKind::Pwrite),
        c.get(SyscallKind::Fdatasync) + c.get(SyscallKind::Fsync),
    );
    if mode == CompactionMode::Baseline {
        assert!(writes > 0 && syncs > 0, "{mode}: {c:?}");
    } else {
        assert_eq!(
            (writes, syncs),
            (0, 0),
            "{mode}: compaction output written or synced outside io_uring: {c:?}"
        );
    }
    (tables, data, preads, enters)
}

#[test]
fn baseline_uring_and_resystance_write_identical_tables() {
    let kernel = RealKernel::new();
    let missing = kernel.bpf_unavailable();
    let dirs: Vec<_> = (0..6).map(|_| tempfile::tempdir().unwrap()).collect();
    let (base, base_data, base_preads, _) = run(CompactionMode::Baseline, false, dirs[0].path());
    assert!(base.len() > 3, "the workload leaves several tables");
    let mut line = format!("{} tables byte-identical in", base.len());
    for (i, (mode, direct)) in [
        (CompactionMode::Baseline, true),
        (CompactionMode::Uring, false),
        (CompactionMode::Uring, true),
        (CompactionMode::Resystance, false),
        (CompactionMode::Resystance, true),
    ]
    .into_iter()
    .enumerate()
    {
        let reads = if direct {
            "O_DIRECT+SQPOLL"
        } else {
            "buffered"
        };
        if mode == CompactionMode::Resystance {
            if let Some(why) = &missing {
                say!("SKIP the resystance mode ({reads}) of compaction_modes: {why}");
                continue;
            }
        }
        let (tables, data, preads, calls) = run(mode, direct, dirs[i + 1].path());
        assert_eq!(data, base_data, "{mode}, {reads} reads: other data");
        assert_eq!(
            tables.keys().collect::<Vec<_>>(),
            base.keys().collect::<Vec<_>>(),
            "{mode}, {reads} reads: other table files"
        );
        assert!(
            tables == base,
            "{mode}, {reads} reads: tables differ from baseline's"
        );
        line += &format!(" {mode}/{reads} ({preads} preads, {calls} enters + program runs);");
    }
    say!("compaction modes: baseline/buffered ({base_preads} preads) = {line}");
}

/// Two L0 tables of ~2,700 blocks of 4 KiB (~11 MB each) compacted into L1: one job of two
/// runs, whose windows (8 MiB, `window_bytes_for(2)`) hold ~2,000 blocks each — past ABI 3's
/// 2 MiB and 512 blocks. Returns the tables, the data, the blocks read and the program runs.
fn run_large_windows(
    mode: CompactionMode,
    direct: bool,
    dir: &Path,
) -> (Tables, BTreeMap<Vec<u8>, Vec<u8>>, u64, u64) {
    let kernel: Arc<dyn Kernel> = Arc::new(RealKernel::new());
    let mut o = options(mode, direct);
    o.write_buffer_size = 64 << 20;
    o.target_file_size_base = 64 << 20;
    o.max_bytes_for_level_base = 256 << 20;
    o.level0_file_num_compaction_trigger = 4;
    o.table.block_size_bytes = 4096;
    let db = Db::open(Arc::clone(&kernel), dir, o).expect("open");
    // Two overlapping batches (every third key of the second updates one of the first), one
    // L0 table each.
    for batch in 0..2u32 {
        for i in 0..100_000u32 {
            let n = if batch == 1 && i % 3 == 0 {
                2 * i
            } else {
                2 * i + batch
            };
            let key = format!("key{n:09}");
            let value: Vec<u8> = (0..100u32)
                .map(|j| (n * 31 + j * 7 + batch) as u8)
                .collect();
            db.put(key.as_bytes(), &value).unwrap();
        }
        db.flush().unwrap();
    }
    db.compact_all().unwrap();
    let stats = db.stats().compaction;
    assert_eq!(stats.jobs, 1, "one L0→L1 job");
    assert_eq!(stats.input_files, 2, "of two runs");
    let (tables, data) = close_and_read(db, dir);
    (
        tables,
        data,
        stats.data_blocks_read,
        stats.syscalls.get(SyscallKind::BpfProgTestRun),
    )
}

/// Windows past 2 MiB and 512 blocks in the engine: the largest window for a 2-run job is
/// 8 MiB and holds ~2,000 blocks of 4 KiB, in every mode, buffered and `O_DIRECT`; the tables
/// are byte-identical to baseline's, and resystance's program runs show the windows' size.
#[test]
fn two_run_compactions_use_8_mib_windows_in_every_mode() {
    assert_eq!(
        resystance_programs::abi::window_bytes_for(2),
        Some(8 << 20),
        "a 2-run job's window"
    );
    let missing = RealKernel::new().bpf_unavailable();
    let dirs: Vec<_> = (0..5).map(|_| tempfile::tempdir().unwrap()).collect();
    let (base, base_data, base_blocks, _) =
        run_large_windows(CompactionMode::Baseline, false, dirs[0].path());
    assert!(base_blocks > 5000, "{base_blocks} input blocks");
    let mut line = format!(
        "{base_blocks} input blocks, {} tables byte-identical in",
        base.len()
    );
    for (i, (mode, direct)) in [
        (CompactionMode::Uring, false),
        (CompactionMode::Uring, true),
        (CompactionMode::Resystance, false),
        (CompactionMode::Resystance, true),
    ]
    .into_iter()
    .enumerate()
    {
        let reads = if direct { "O_DIRECT" } else { "buffered" };
        if mode == CompactionMode::Resystance {
            if let Some(why) = &missing {
                say!("SKIP the resystance mode ({reads}) of the 8 MiB windows: {why}");
                continue;
            }
        }
        let (tables, data, blocks, runs) = run_large_windows(mode, direct, dirs[i + 1].path());
        assert_eq!(blocks, base_blocks, "{mode}, {reads}: other input blocks");
        assert_eq!(data, base_data, "{mode}, {reads} reads: other data");
        assert!(
            tables == base,
            "{mode}, {reads}: tables differ from baseline's"
        );
        if mode == CompactionMode::Resystance {
            // Both runs' first windows are filled before the first program run and each later
            // window costs a run (NEED_INPUT), so windows of at most 512 blocks would take at
            // least blocks / 512 - 1 runs.
            assert!(
                (runs + 1) * 512 < blocks,
                "{mode}, {reads}: {runs} program runs for {blocks} blocks"
            );
            line += &format!(" {mode}/{reads} ({runs} program runs);");
        } else {
            line += &format!(" {mode}/{reads};");
        }
    }
    say!("8 MiB windows: baseline = {line}");
}
