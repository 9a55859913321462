//! The engine on the simulated kernel: determinism and power loss.
//!
//! * Same seed, same run: the engine's whole sequence of boundary calls, their results and
//!   their virtual times hash to the same digest; another seed (other jitter) to another.
//! * Power loss at every system call of a workload with flushes and compactions, on several
//!   seeds: the sim keeps only what was synced (unsynced file tails torn at sector granularity,
//!   unsynced directory changes kept or lost together). With `sync_wal` every acknowledged
//!   write must survive; without it, what survives must be exactly the state after some prefix
//!   of the acknowledged writes (never a corrupt, reordered or partial batch). Either way the
//!   one write in flight at the crash may or may not survive.
//!
//! `SIM_CRASH_STRIDE` samples crash points (default: every one), `SIM_CRASH_SEEDS` sets how
//! many seeds (default 3).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use resystance::{BackgroundMode, Db, Options};
use resystance_sim::{SimConfig, SimKernel};
use resystance_traces::Kernel;

macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

const DB_DIR: &str = "/tmp/db";

fn options(sync_wal: bool, background: BackgroundMode) -> Options {
    options_in(sync_wal, background, resystance::CompactionMode::Baseline)
}

fn options_in(
    sync_wal: bool,
    background: BackgroundMode,
    mode: resystance::CompactionMode,
) -> Options {
    let mut o = Options {
        compaction_mode: mode,
        write_buffer_size: 4096,
        target_file_size_base: 4096,
        max_bytes_for_level_base: 8192,
        level0_file_num_compaction_trigger: 2,
        level0_slowdown_writes_trigger: 4,
        level0_stop_writes_trigger: 6,
        background,
        sync_wal,
        ..Options::default()
    };
    o.table.block_size_bytes = 256;
    o
}

/// Runs the workload until the first error. Returns the state after every acknowledged write
/// (index 0: empty) followed, if a write failed, by the state that write would have made (a
/// write that fails may still have reached the log: it may or may not survive), and whether
/// the whole workload went through.
fn workload(
    kernel: &Arc<SimKernel>,
    sync_wal: bool,
    background: BackgroundMode,
) -> (Vec<Model>, Option<Model>, bool) {
    workload_with(kernel, options(sync_wal, background))
}

fn workload_with(kernel: &Arc<SimKernel>, options: Options) -> (Vec<Model>, Option<Model>, bool) {
    let mut states = vec![Model::new()];
    let k: Arc<dyn Kernel> = Arc::clone(kernel) as Arc<dyn Kernel>;
    let Ok(db) = Db::open(k, Path::new(DB_DIR), options) else {
        return (states, None, false);
    };
    for i in 0..200u32 {
        let key = format!("key{:03}", (i * 7) % 40).into_bytes();
        let mut next = states.last().expect("a state").clone();
        let result = if i % 9 == 4 {
            next.remove(&key);
            db.delete(&key)
        } else {
            let value = format!("value-{i}-{}", "x".repeat((i % 5 * 40) as usize)).into_bytes();
            next.insert(key.clone(), value.clone());
            db.put(&key, &value)
        };
        if result.is_err() {
            return (states, Some(next), false);
        }
        states.push(next);
        if i % 50 == 49 && db.compact_all().is_err() {
            return (states, None, false);
        }
    }
    let finished = db.close().is_ok();
    (states, None, finished)
}

fn recovered(kernel: &Arc<SimKernel>, sync_wal: bool, background: BackgroundMode) -> Model {
    recovered_with(kernel, options(sync_wal, background))
}

fn recovered_with(kernel: &Arc<SimKernel>, options: Options) -> Model {
    let k: Arc<dyn Kernel> = Arc::clone(kernel) as Arc<dyn Kernel>;
    let db = Db::open(k, Path::new(DB_DIR), options).expect("reopen after power loss");
    let got = db
        .iter(None, None)
        .collect::<resystance::Result<Model>>()
        .expect("scan after power loss");
    db.close().expect("close after recovery");
    got
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}={v:?} is not a number"))
        })
        .unwrap_or(default)
}

fn run_digest(seed: u64, background: BackgroundMode) -> (u64, u64) {
    let kernel = Arc::new(SimKernel::new(seed));
    let (states, _, finished) = workload(&kernel, false, background);
    assert!(finished, "the workload completes on a healthy sim");
    assert_eq!(
        recovered(&kernel, false, background),
        *states.last().unwrap()
    );
    (kernel.event_digest(), kernel.event_count())
}

#[test]
fn the_same_seed_gives_the_same_run_bit_for_bit() {
    for background in [BackgroundMode::Inline, BackgroundMode::Virtual] {
        let (a, events) = run_digest(7, background);
        let (b, _) = run_digest(7, background);
        let (c, _) = run_digest(8, background);
        assert_eq!(a, b, "{background:?}: same seed, different event sequence");
        assert_ne!(
            a, c,
            "{background:?}: another seed should change the modeled timings"
        );
        say!(
            "sim determinism ({background:?} jobs): {events} events, digest {a:#018x} twice for seed 7, {c:#018x} for seed 8"
        );
    }
}

fn power_loss_campaign(sync_wal: bool, background: BackgroundMode) -> (u64, u64) {
    power_loss_campaign_in(
        sync_wal,
        background,
        resystance::CompactionMode::Baseline,
        env_u64("SIM_CRASH_SEEDS", 3),
    )
}

fn power_loss_campaign_in(
    sync_wal: bool,
    background: BackgroundMode,
    mode: resystance::CompactionMode,
    seeds: u64,
) -> (u64, u64) {
    let stride = env_u64("SIM_CRASH_STRIDE", 1).max(1);
    let opts = || options_in(sync_wal, background, mode);
    let total = {
        let kernel = Arc::new(SimKernel::new(0));
        let (_, _, finished) = workload_with(&kernel, opts());
        assert!(finished);
        kernel.syscall_counts().total()
    };
    assert!(
        total > 400,
        "the workload should flush and compact: {total} calls"
    );
    let mut checked = 0;
    for seed in 0..seeds {
        for n in (0..total).step_by(stride as usize) {
            let mut cfg = SimConfig::new(seed);
            cfg.crash_at_syscall = Some(n);
            let kernel = Arc::new(SimKernel::with_config(cfg));
            // The last calls (closing files at shutdown) may fail unseen: the workload can
            // look finished, but the machine went down at call `n` all the same.
            let (states, in_flight, _) = workload_with(&kernel, opts());
            assert!(
                kernel.is_down(),
                "{mode}, seed {seed}: the planned crash at {n} happened"
            );
            kernel.restart();
            kernel.set_crash_at_syscall(None);
            let got = recovered_with(&kernel, opts());
            let acked = states.last().expect("a state");
            let is_in_flight = in_flight.as_ref() == Some(&got);
            if sync_wal {
                assert!(
                    &got == acked || is_in_flight,
                    "{mode}, seed {seed}, power loss at call {n} of {total}: recovered {got:?}, acknowledged {acked:?}"
                );
            } else {
                assert!(
                    states.contains(&got) || is_in_flight,
                    "{mode}, seed {seed}, power loss at call {n} of {total}: the recovered state is no prefix of the writes: {got:?}"
                );
            }
            checked += 1;
        }
    }
    (checked, total)
}

#[test]
fn power_loss_with_synced_wal_keeps_every_acknowledged_write() {
    let (checked, total) = power_loss_campaign(true, BackgroundMode::Inline);
    say!("sim power loss (sync_wal): {checked} crash points over {total} calls, every acknowledged write recovered");
}

#[test]
fn power_loss_with_jobs_on_virtual_time_keeps_every_acknowledged_write() {
    let (checked, total) = power_loss_campaign(true, BackgroundMode::Virtual);
    say!("sim power loss (sync_wal, jobs on their own clocks): {checked} crash points over {total} calls, every acknowledged write recovered");
}

/// Every crash point of the workload in the io_uring modes too (one seed each by default,
/// `SIM_CRASH_MODE_SEEDS`): their compactions read differently and, in resystance mode, load
/// a BPF program at every open, but must recover exactly what baseline does.
#[test]
fn power_loss_in_the_uring_and_resystance_modes_keeps_every_acknowledged_write() {
    let seeds = env_u64("SIM_CRASH_MODE_SEEDS", 1);
    for mode in [
        resystance::CompactionMode::Uring,
        resystance::CompactionMode::Resystance,
    ] {
        let (checked, total) = power_loss_campaign_in(true, BackgroundMode::Inline, mode, seeds);
        say!("sim power loss (sync_wal), {mode} mode: {checked} crash points over {total} calls, every acknowledged write recovered");
    }
}

/// Inputs are deleted only once nothing they could be needed for is at risk: at every unlink
/// of a table, every table and MANIFEST written so far is synced, and every table or
/// MANIFEST created (and `CURRENT` renamed) has had its directory synced since. Checked on the
/// event log of a compaction-heavy run, in all three modes.
#[test]
fn tables_are_deleted_only_after_outputs_manifest_and_directory_are_durable() {
    use resystance_sim::Op;
    use xxhash_rust::xxh3::xxh3_64;
    let digest = |p: &str| xxh3_64(p.as_bytes());
    // Names the engine may use, by path digest (the log holds digests, not paths).
    let mut names = std::collections::HashMap::new();
    for n in 0..4000u64 {
        for name in [format!("{n:06}.sst"), format!("MANIFEST-{n:06}")] {
            names.insert(digest(&format!("{DB_DIR}/{name}")), name);
        }
    }
    let dir = digest(DB_DIR);
    let current_tmp = [digest(&format!("{DB_DIR}/CURRENT")), dir];
    for mode in resystance::CompactionMode::ALL {
        let kernel = Arc::new(SimKernel::new(3));
        // More data than `workload` writes (300 keys of ~100 bytes): compactions write
        // several 4 KiB tables, so tables end (tail written, synced) in the middle of a drain
        // of output blocks.
        let db = Db::open(
            Arc::clone(&kernel) as Arc<dyn Kernel>,
            Path::new(DB_DIR),
            options_in(true, BackgroundMode::Inline, mode),
        )
        .expect("open");
        for i in 0..1500u32 {
            let key = format!("key{:04}", (i * 7) % 300);
            db.put(
                key.as_bytes(),
                format!("value-{i}-{}", "x".repeat(80)).as_bytes(),
            )
            .expect("put");
            if i % 250 == 249 {
                db.compact_all().expect("compact");
            }
        }
        let c = db.stats().compaction;
        db.close().expect("close");
        let merged = c.jobs - c.trivial_moves;
        assert!(
            c.output_files >= 2 * merged && merged > 3,
            "{mode}: compactions should write several tables each: {c:?}"
        );
        let mut fds: std::collections::HashMap<u64, u64> = std::collections::HashMap::new();
        let mut unsynced: std::collections::BTreeSet<String> = Default::default();
        let mut dir_pending: Vec<String> = Vec::new();
        let (mut unlinks, mut checked_syncs, mut writes) = (0, 0, 0);
        for e in kernel.events() {
            if e.result < 0 {
                continue;
            }
            let name_of_fd = |fds: &std::collections::HashMap<u64, u64>, fd: u64| {
                fds.get(&fd).and_then(|d| names.get(d)).cloned()
            };
            match e.op {
                Op::Open => {
                    fds.insert(e.result as u64, e.args[0]);
                    let create = e.args[1] & (1 << 2) != 0;
                    if let (true, Some(name)) = (create, names.get(&e.args[0])) {
                        dir_pending.push(name.clone());
                    }
                }
                Op::Close => {
                    fds.remove(&e.args[0]);
                }
                Op::Pwrite => {
                    if let Some(name) = name_of_fd(&fds, e.args[0]) {
                        unsynced.insert(name);
                        writes += 1;
                    }
                }
                Op::UringExec if e.args[1] == resystance_sim::URING_EXEC_WRITE => {
                    if let Some(name) = name_of_fd(&fds, e.args[2]) {
                        unsynced.insert(name);
                        writes += 1;
                    }
                }
                Op::UringExec
                    if e.args[1] == resystance_sim::URING_EXEC_FSYNC
                        || e.args[1] == resystance_sim::URING_EXEC_FDATASYNC =>
                {
                    if fds.get(&e.args[2]) == Some(&dir) {
                        dir_pending.clear();
                    } else if let Some(name) = name_of_fd(&fds, e.args[2]) {
                        unsynced.remove(&name);
                        checked_syncs += 1;
                    }
                }
                Op::Fsync | Op::Fdatasync => {
                    if fds.get(&e.args[0]) == Some(&dir) {
                        dir_pending.clear();
                    } else if let Some(name) = name_of_fd(&fds, e.args[0]) {
                        unsynced.remove(&name);
                        checked_syncs += 1;
                    }
                }
                Op::Rename if current_tmp.contains(&e.args[1]) => {
                    dir_pending.push("CURRENT".into());
                }
                Op::Unlink => {
                    if let Some(name) = names.get(&e.args[0]) {
                        if name.ends_with(".sst") {
                            unlinks += 1;
                            assert!(
                                unsynced.is_empty(),
                                "{mode}: {name} deleted (event {}) while {unsynced:?} had unsynced writes",
                                e.seq
                            );
                            assert!(
                                dir_pending.is_empty(),
                                "{mode}: {name} deleted (event {}) before the directory was synced after creating {dir_pending:?}",
                                e.seq
                            );
                        }
                    }
                }
                _ => {}
            }
        }
        assert!(
            unlinks > 5,
            "{mode}: the workload should delete compacted tables"
        );
        assert!(
            writes > unlinks && checked_syncs > unlinks,
            "{mode}: the log's table and MANIFEST writes were not all attributed"
        );
        say!("{mode}: {unlinks} table deletions, each after every table and MANIFEST write was synced ({writes} writes, {checked_syncs} syncs) and the directory synced after every creation");
    }
}

#[test]
fn power_loss_without_wal_sync_recovers_a_prefix_of_the_acknowledged_writes() {
    let (checked, total) = power_loss_campaign(false, BackgroundMode::Inline);
    say!("sim power loss (no WAL sync): {checked} crash points over {total} calls, each recovered a prefix of the writes");
}

/// One compaction workload's tables and compaction syscall counts by kind, on `kernel`.
fn compaction_run(
    kernel: &Arc<dyn Kernel>,
    dir: &Path,
    mode: resystance::CompactionMode,
    direct: bool,
) -> (BTreeMap<String, Vec<u8>>, resystance_traces::SyscallCounts) {
    let mut o = options(false, BackgroundMode::Inline);
    o.compaction_mode = mode;
    o.use_direct_reads = direct;
    let db = Db::open(Arc::clone(kernel), dir, o).expect("open");
    for i in 0..3000u32 {
        let key = format!("key{:05}", (i * 7919) % 1500);
        db.put(key.as_bytes(), format!("value-{i}").as_bytes())
            .unwrap();
    }
    db.compact_all().unwrap();
    let stats = db.stats().compaction;
    // The one count that depends on the device's speed: an enter made only to wait for reads
    // ahead that had not arrived (on Linux by wall time, on the sim by virtual time).
    let mut timed = resystance_traces::SyscallCounts::default();
    timed.add(
        resystance_traces::SyscallKind::IoUringEnter,
        stats.readahead.wait_enters,
    );
    assert!(
        stats
            .syscalls
            .get(resystance_traces::SyscallKind::IoUringEnter)
            >= stats.readahead.wait_enters
    );
    let counts = stats.syscalls.since(&timed);
    db.close().unwrap();
    (read_tables(kernel, dir), counts)
}

/// Every `.sst` file in `dir` on `kernel`, by name.
fn read_tables(kernel: &Arc<dyn Kernel>, dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut tables = BTreeMap::new();
    for name in kernel.list_dir(dir).unwrap() {
        if name.ends_with(".sst") {
            let fd = kernel
                .open(&dir.join(&name), resystance_traces::OpenFlags::READ)
                .unwrap();
            let len = usize::try_from(kernel.file_size(fd).unwrap()).unwrap();
            let mut bytes = vec![0u8; len];
            assert_eq!(kernel.pread(fd, &mut bytes, 0).unwrap(), len);
            kernel.close(fd).unwrap();
            tables.insert(name, bytes);
        }
    }
    tables
}

#[test]
fn compaction_on_the_sim_matches_the_real_kernel_call_for_call() {
    use resystance::CompactionMode;
    let real = resystance_real_kernel::RealKernel::new();
    let uring_ok = real
        .uring_setup(&resystance_traces::UringParams::default())
        .map(|r| {
            let _ = real.uring_close(r);
        });
    let mut modes = vec![CompactionMode::Baseline];
    match uring_ok {
        Ok(()) => modes.push(CompactionMode::Uring),
        Err(e) => say!("SKIP the uring mode of the sim-vs-real comparison: {e}"),
    }
    match (real.bpf_unavailable(), modes.len()) {
        (None, 2) => modes.push(CompactionMode::Resystance),
        (Some(why), _) => say!("SKIP the resystance mode of the sim-vs-real comparison: {why}"),
        (None, _) => {
            say!("SKIP the resystance mode of the sim-vs-real comparison: it needs io_uring too");
        }
    }
    let mut reference = None;
    for (mode, direct) in modes.into_iter().flat_map(|m| [(m, false), (m, true)]) {
        let sim: Arc<dyn Kernel> = Arc::new(SimKernel::new(1));
        let (sim_tables, sim_counts) = compaction_run(&sim, Path::new(DB_DIR), mode, direct);
        let dir = tempfile::tempdir().unwrap();
        let real: Arc<dyn Kernel> = Arc::new(resystance_real_kernel::RealKernel::new());
        let (real_tables, real_counts) = compaction_run(&real, dir.path(), mode, direct);
        let reads = if direct { "O_DIRECT" } else { "buffered" };
        assert!(sim_tables.len() > 1);
        assert!(
            sim_tables == real_tables,
            "{mode}, {reads} reads: the sim wrote other tables than Linux"
        );
        assert_eq!(
            sim_counts, real_counts,
            "{mode}, {reads} reads: compaction syscalls by kind differ"
        );
        // Direct reads change how blocks are read, never what is written.
        let reference = reference.get_or_insert_with(|| sim_tables.clone());
        assert!(
            *reference == sim_tables,
            "{mode}, {reads} reads: other tables than baseline's buffered run"
        );
        say!(
            "sim = Linux for compaction mode {mode}, {reads} reads: {} identical tables, {} compaction syscalls by kind equal",
            sim_tables.len(),
            sim_counts.total()
        );
    }
}

/// BPF on the sim (`tests/sim_bpf.rs` checks the program itself): the engine's resystance
/// mode writes the tables baseline writes.
#[test]
fn resystance_compaction_on_the_sim_writes_baselines_tables() {
    let run = |mode| {
        let sim: Arc<dyn Kernel> = Arc::new(SimKernel::new(1));
        compaction_run(&sim, Path::new(DB_DIR), mode, false)
    };
    let (baseline, _) = run(resystance::CompactionMode::Baseline);
    let (resystance, counts) = run(resystance::CompactionMode::Resystance);
    assert!(baseline.len() > 1);
    assert!(
        resystance == baseline,
        "resystance mode wrote other tables than baseline on the sim"
    );
    assert!(
        counts.get(resystance_traces::SyscallKind::BpfProgTestRun) > 0,
        "the program ran: {counts:?}"
    );
    say!(
        "sim: resystance compaction = baseline, {} identical tables; {} compaction syscalls ({} test runs)",
        baseline.len(),
        counts.total(),
        counts.get(resystance_traces::SyscallKind::BpfProgTestRun)
    );
}

/// Two L0 tables of ~2,700 blocks of 4 KiB (~11 MB each) compacted into L1 on the sim with
/// `O_DIRECT` reads: one job of two runs, 8 MiB windows (the workload of
/// `tests/compaction_modes.rs`'s large windows). Returns the tables and the compaction stats.
fn readahead_run(
    mode: resystance::CompactionMode,
    readahead: bool,
) -> (
    BTreeMap<String, Vec<u8>>,
    resystance::stats::CompactionStats,
) {
    let kernel: Arc<dyn Kernel> = Arc::new(SimKernel::new(7));
    let mut o = Options {
        compaction_mode: mode,
        use_direct_reads: true,
        uring_readahead: readahead,
        write_buffer_size: 64 << 20,
        target_file_size_base: 64 << 20,
        max_bytes_for_level_base: 256 << 20,
        level0_file_num_compaction_trigger: 4,
        background: BackgroundMode::Inline,
        ..Options::default()
    };
    o.table.block_size_bytes = 4096;
    let dir = Path::new(DB_DIR);
    let db = Db::open(Arc::clone(&kernel), dir, o).expect("open");
    for batch in 0..2u32 {
        for i in 0..100_000u32 {
            let n = if batch == 1 && i % 3 == 0 {
                2 * i
            } else {
                2 * i + batch
            };
            let value: Vec<u8> = (0..100u32)
                .map(|j| (n * 31 + j * 7 + batch) as u8)
                .collect();
            db.put(format!("key{n:09}").as_bytes(), &value).unwrap();
        }
        db.flush().unwrap();
    }
    db.compact_all().unwrap();
    let stats = db.stats().compaction;
    assert_eq!(
        (stats.jobs, stats.input_files),
        (1, 2),
        "one job of two runs"
    );
    db.close().unwrap();
    (read_tables(&kernel, dir), stats)
}

/// Read-ahead in the io_uring modes: with `O_DIRECT` the device reads a run's next half-window
/// while the merge works, so the job takes less (virtual) time than with read-ahead off, for
/// the same tables; every window after each run's first comes from a read ahead.
#[test]
fn reading_ahead_overlaps_device_reads_with_the_merge() {
    use resystance::CompactionMode;
    use resystance_traces::SyscallKind;
    for mode in [CompactionMode::Uring, CompactionMode::Resystance] {
        let (off_tables, off) = readahead_run(mode, false);
        let (on_tables, on) = readahead_run(mode, true);
        assert!(
            on_tables == off_tables,
            "{mode}: read-ahead changed the tables"
        );
        assert_eq!(off.readahead, resystance::stats::ReadaheadStats::default());
        assert!(on.data_blocks_read > 5000);
        // 2 runs of ~11 MB in 4 MiB halves: at least 2 windows each after the first.
        assert!(on.readahead.windows >= 4, "{mode}: {:?}", on.readahead);
        assert!(
            on.time_ns * 10 < off.time_ns * 9,
            "{mode}: {} ns with read-ahead, {} without",
            on.time_ns,
            off.time_ns
        );
        say!(
            "{mode}, O_DIRECT on the sim: compaction {:.2} ms with read-ahead ({} windows read ahead, {} late), {:.2} ms without; io_uring_enter {} vs {}",
            on.time_ns as f64 / 1e6,
            on.readahead.windows,
            on.readahead.late,
            off.time_ns as f64 / 1e6,
            on.syscalls.get(SyscallKind::IoUringEnter),
            off.syscalls.get(SyscallKind::IoUringEnter)
        );
    }
}
