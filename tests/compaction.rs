//! Compaction behaviour through the public API: the baseline executor reads every input data
//! block with exactly one `pread`, drops what may be dropped, and leaves a well-formed tree.

use std::sync::Arc;

use resystance::{BackgroundMode, Db, Options};
use resystance_real_kernel::RealKernel;
use resystance_traces::{Kernel, SyscallKind};

fn options() -> Options {
    let mut o = Options {
        write_buffer_size: 64 * 1024,
        target_file_size_base: 64 * 1024,
        max_bytes_for_level_base: 256 * 1024,
        background: BackgroundMode::Inline,
        ..Options::default()
    };
    o.table.block_size_bytes = 4096;
    o
}

fn key(i: u64) -> Vec<u8> {
    let mut k = i.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_be_bytes().to_vec();
    k.extend_from_slice(b"00000000");
    k
}

#[test]
fn baseline_compaction_reads_each_data_block_with_one_pread() {
    let dir = tempfile::tempdir().unwrap();
    let kernel: Arc<dyn Kernel> = Arc::new(RealKernel::new());
    let db = Db::open(Arc::clone(&kernel), dir.path(), options()).unwrap();
    for i in 0..20_000u64 {
        db.put(&key(i % 15_000), &[i as u8; 100]).unwrap();
    }
    db.wait_for_background_work().unwrap();
    let s = db.stats();
    let c = &s.compaction;
    assert!(
        c.jobs - c.trivial_moves >= 3,
        "expected several real compactions: {c:?}"
    );
    assert!(c.data_blocks_read > 0);
    // Inputs are open already, and each output goes to the table cache as written (its
    // descriptor kept, its metadata decoded from the bytes written): nothing is opened, stat'ed
    // or read back. Everything read is one pread per input data block.
    let real_jobs = c.jobs - c.trivial_moves;
    assert_eq!(c.syscalls.get(SyscallKind::Fstat), 0, "{c:?}");
    assert_eq!(
        c.syscalls.get(SyscallKind::Pread),
        c.data_blocks_read,
        "one pread per input data block: {c:?}"
    );
    // One openat per output (its creation); the directory is held open by the database, and
    // outputs' descriptors are closed only when their files are deleted.
    assert_eq!(c.syscalls.get(SyscallKind::Open), c.output_files, "{c:?}");
    assert_eq!(c.syscalls.get(SyscallKind::Close), 0, "{c:?}");
    // Outputs here are below the 1 MiB write buffer: each is written with one pwrite, its
    // data and its tail (index, properties, metaindex, footer) together.
    assert_eq!(c.syscalls.get(SyscallKind::Pwrite), c.output_files, "{c:?}");
    // Durable before the version edit: each output fdatasynced, the directory fsynced once
    // per job.
    assert_eq!(c.syscalls.get(SyscallKind::Fdatasync), c.output_files);
    assert_eq!(c.syscalls.get(SyscallKind::Fsync), real_jobs, "{c:?}");
    assert_eq!(
        c.syscalls.total(),
        c.data_blocks_read + 3 * c.output_files + real_jobs,
        "nothing else: {c:?}"
    );
    assert!(c.entries_out <= c.entries_in);
    assert!(s.write_amplification() > 1.0);
    // Tree shape: every sorted level is within bounds after the work settled.
    let v = db.current_version();
    assert!(
        v.levels[0].len() < 4,
        "L0 at or above the trigger after settling"
    );
    for level in 1..v.levels.len() - 1 {
        let bytes = v.level_bytes(level);
        assert!(
            bytes <= options().max_bytes_for_level(level),
            "L{level} holds {bytes} bytes"
        );
    }
    // Every key reads back its last value.
    for i in 0..15_000u64 {
        let last = if i < 5_000 { 15_000 + i } else { i };
        assert_eq!(
            db.get(&key(i)).unwrap(),
            Some(vec![last as u8; 100]),
            "key {i}"
        );
    }
    db.close().unwrap();
}

#[test]
fn bottommost_compaction_drops_tombstones_and_old_versions() {
    let dir = tempfile::tempdir().unwrap();
    let kernel: Arc<dyn Kernel> = Arc::new(RealKernel::new());
    let db = Db::open(Arc::clone(&kernel), dir.path(), options()).unwrap();
    for round in 0..3u8 {
        for i in 0..2_000u64 {
            db.put(&key(i), &[round; 50]).unwrap();
        }
        db.flush().unwrap();
    }
    for i in 0..1_000u64 {
        db.delete(&key(i)).unwrap();
    }
    let snap = db.snapshot();
    for i in 1_000..1_500u64 {
        db.delete(&key(i)).unwrap();
    }
    db.compact_all().unwrap();
    let entries: u64 = db
        .current_version()
        .levels
        .iter()
        .flatten()
        .map(|f| f.num_entries)
        .sum();
    // Keys 0..1000: deleted before the snapshot, bottommost → gone entirely.
    // Keys 1000..1500: the snapshot still sees round 2; the newer tombstone stays too.
    // Keys 1500..2000: only round 2.
    assert_eq!(entries, 500 * 2 + 500, "{:?}", db.stats().levels);
    assert_eq!(db.get(&key(1_200)).unwrap(), None);
    assert_eq!(db.get_at(&key(1_200), &snap).unwrap(), Some(vec![2; 50]));
    assert_eq!(db.get_at(&key(10), &snap).unwrap(), None);
    drop(snap);
    db.compact_all().unwrap();
    let entries: u64 = db
        .current_version()
        .levels
        .iter()
        .flatten()
        .map(|f| f.num_entries)
        .sum();
    assert_eq!(entries, 500, "with the snapshot gone only live keys remain");
    db.close().unwrap();
}

#[test]
fn files_of_replaced_versions_are_deleted_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let kernel: Arc<dyn Kernel> = Arc::new(RealKernel::new());
    let db = Db::open(Arc::clone(&kernel), dir.path(), options()).unwrap();
    for i in 0..10_000u64 {
        db.put(&key(i % 3_000), &[1; 100]).unwrap();
    }
    db.compact_all().unwrap();
    let live: std::collections::BTreeSet<String> = db
        .current_version()
        .file_numbers()
        .map(|n| format!("{n:06}.sst"))
        .collect();
    let on_disk: std::collections::BTreeSet<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".sst"))
        .collect();
    assert_eq!(on_disk, live);
    let logs = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".log")
        })
        .count();
    assert_eq!(
        logs, 1,
        "only the active WAL remains after everything is flushed"
    );
    db.close().unwrap();
}

/// Regression: a manual compaction of one L0 file pulled in an L1 file with a wider key range;
/// the bottommost decision looked only at the L0 file's range, so a tombstone was dropped while
/// an older version of its key survived in L2 — the deleted key came back. (Found by
/// `tests/model.rs`; this is its shrunk case.)
#[test]
fn tombstones_survive_when_older_data_lies_below_the_pulled_in_range() {
    let mut o = Options {
        write_buffer_size: 8 * 1024,
        target_file_size_base: 8 * 1024,
        max_bytes_for_level_base: 16 * 1024,
        level0_file_num_compaction_trigger: 2,
        level0_slowdown_writes_trigger: 4,
        level0_stop_writes_trigger: 6,
        background: BackgroundMode::Inline,
        ..Options::default()
    };
    o.table.block_size_bytes = 512;
    let k = |i: u8| format!("k{i:03}").into_bytes();
    let big = vec![0u8; 5000];
    let dir = tempfile::tempdir().unwrap();
    let kernel: Arc<dyn Kernel> = Arc::new(RealKernel::new());
    let mut db = Db::open(Arc::clone(&kernel), dir.path(), o.clone()).unwrap();
    for (key, value) in [
        (40, &big[..]),
        (1, &big[..]),
        (39, &b""[..]),
        (41, &big[..]),
    ] {
        db.put(&k(key), value).unwrap();
    }
    db.flush().unwrap();
    db.put(&k(0), b"").unwrap();
    db.flush().unwrap();
    db.put(&k(39), b"second").unwrap();
    db.close().unwrap();
    db = Db::open(Arc::clone(&kernel), dir.path(), o).unwrap();
    db.put(&k(0), b"").unwrap();
    db.flush().unwrap();
    db.delete(&k(39)).unwrap();
    db.put(&k(0), b"").unwrap();
    db.flush().unwrap();
    // The layout the bug needs: the tombstone of k039 in an L1 file spanning k000..k039, and an
    // older k039 in L2.
    let v = db.current_version();
    let spans = |f: &resystance::version::FileMeta, key: &[u8]| {
        f.smallest_user_key() <= key && key <= f.largest_user_key()
    };
    assert!(
        v.levels[1]
            .iter()
            .any(|f| spans(f, &k(0)) && spans(f, &k(39))),
        "{v:?}"
    );
    assert!(v.levels[2].iter().any(|f| spans(f, &k(39))), "{v:?}");
    db.delete(&k(0)).unwrap();
    db.compact_all().unwrap();
    assert_eq!(db.get(&k(39)).unwrap(), None, "the deleted key came back");
    let keys: Vec<_> = db.iter(None, None).map(|r| r.unwrap().0).collect();
    assert_eq!(keys, vec![k(1), k(40), k(41)]);
    db.close().unwrap();
}
