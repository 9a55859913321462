//! Bad bytes and failing calls: each is reported as an error, never a panic, a hang or a
//! database that cannot be reopened. (Several cases come from a review that reproduced them.)

mod support;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use resystance::key::{internal_key, ValueType, SEQUENCE_MAX};
use resystance::sst::block::BlockBuilder;
use resystance::sst::format::{block_trailer, ChecksumType, Footer};
use resystance::sst::BlockHandle;
use resystance::{BackgroundMode, Db, Error, Options, WriteBatch};
use resystance_real_kernel::RealKernel;
use resystance_traces::{Kernel, SyscallKind};
use support::{scratch_dir, FaultKernel};

fn kernel() -> Arc<dyn Kernel> {
    Arc::new(RealKernel::new())
}

fn inline() -> Options {
    Options {
        background: BackgroundMode::Inline,
        ..Options::default()
    }
}

fn sst_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sst"))
        .collect();
    v.sort();
    v
}

/// A checksum-valid table whose one data block holds `entries` in the order given.
fn craft_table(entries: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut file = Vec::new();
    let put_block = |file: &mut Vec<u8>, contents: &[u8]| {
        let h = BlockHandle::new(file.len() as u64, contents.len() as u64);
        file.extend_from_slice(contents);
        file.extend_from_slice(&block_trailer(contents));
        h
    };
    let mut data = BlockBuilder::new(16);
    for (k, v) in entries {
        data.add(k, v);
    }
    let data_h = put_block(&mut file, data.finish());
    let mut index = BlockBuilder::new(1);
    let last = entries
        .iter()
        .map(|e| e.0.clone())
        .max_by(|a, b| resystance::key::compare_internal(a, b))
        .unwrap();
    index.add(&last, &data_h.encoded());
    let index_h = put_block(&mut file, index.finish());
    let meta_h = put_block(&mut file, BlockBuilder::new(1).finish());
    let footer = Footer {
        checksum: ChecksumType::Crc32c,
        metaindex_handle: meta_h,
        index_handle: index_h,
        format_version: 2,
    };
    file.extend_from_slice(&footer.encode());
    file
}

/// Replaces the database's one SST with a checksum-valid one holding b@2 before a@1.
fn plant_out_of_order_table(dir: &Path, options: &Options) {
    let db = Db::open(kernel(), dir, options.clone()).unwrap();
    db.put(b"a", b"1").unwrap();
    db.put(b"b", b"2").unwrap();
    db.flush().unwrap();
    db.close().unwrap();
    let sst = sst_files(dir).pop().unwrap();
    let bytes = craft_table(&[
        (internal_key(b"b", 2, ValueType::Value), b"2".to_vec()),
        (internal_key(b"a", 1, ValueType::Value), b"1".to_vec()),
    ]);
    std::fs::write(sst, bytes).unwrap();
}

#[test]
fn out_of_order_input_is_a_corruption_error_inline() {
    let dir = tempfile::tempdir().unwrap();
    plant_out_of_order_table(dir.path(), &inline());
    let db = Db::open(kernel(), dir.path(), inline()).unwrap();
    let err = db.compact_all().unwrap_err();
    assert!(matches!(err, Error::Corruption { .. }), "{err}");
    assert!(err.to_string().contains("out of order"), "{err}");
}

#[test]
fn out_of_order_input_stops_background_work_with_an_error_not_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    let o = Options {
        level0_file_num_compaction_trigger: 2,
        ..Options::default()
    };
    plant_out_of_order_table(dir.path(), &o);
    let db = Arc::new(Db::open(kernel(), dir.path(), o).unwrap());
    db.put(b"c", b"3").unwrap();
    db.flush().unwrap(); // a second L0 file: an L0 compaction starts in the background
    let (tx, rx) = std::sync::mpsc::channel();
    let d = Arc::clone(&db);
    std::thread::spawn(move || {
        let _ = tx.send(d.wait_for_background_work());
    });
    let result = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("background work must end (with an error), not hang");
    let err = result.unwrap_err();
    assert!(err.to_string().contains("out of order"), "{err}");
    let write = db.put(b"d", b"4").unwrap_err();
    assert!(matches!(write, Error::Unavailable(_)), "{write}");
}

#[test]
fn sequence_numbers_from_files_are_range_checked() {
    // A MANIFEST at the 56-bit limit opens, and the next write is refused, not a panic.
    let dir = tempfile::tempdir().unwrap();
    let k = kernel();
    let db = Db::open(Arc::clone(&k), dir.path(), inline()).unwrap();
    db.put(b"a", b"1").unwrap();
    db.close().unwrap();
    let rec = resystance::version::recover(&k, dir.path(), 7)
        .unwrap()
        .unwrap();
    let mut snap = rec.version.snapshot_edit();
    snap.log_number = Some(rec.log_number);
    snap.next_file_number = Some(rec.next_file_number + 10);
    snap.last_sequence = Some(SEQUENCE_MAX);
    resystance::version::Manifest::create(&k, dir.path(), rec.next_file_number + 5, &snap).unwrap();
    let db = Db::open(Arc::clone(&k), dir.path(), inline()).unwrap();
    let err = db.put(b"x", b"y").unwrap_err();
    assert!(err.to_string().contains("exhausted"), "{err}");
    assert_eq!(
        db.get(b"a").unwrap(),
        Some(b"1".to_vec()),
        "reads still work"
    );
    drop(db);

    // Over the limit in the MANIFEST, or a WAL batch at u64::MAX: open reports corruption.
    snap.last_sequence = Some(SEQUENCE_MAX + 1);
    resystance::version::Manifest::create(&k, dir.path(), rec.next_file_number + 6, &snap).unwrap();
    let err = Db::open(Arc::clone(&k), dir.path(), inline()).unwrap_err();
    assert!(matches!(err, Error::Corruption { .. }), "{err}");

    let dir = tempfile::tempdir().unwrap();
    Db::open(Arc::clone(&k), dir.path(), inline())
        .unwrap()
        .close()
        .unwrap();
    let mut b = WriteBatch::new();
    b.put(b"k", b"v");
    b.set_sequence(u64::MAX);
    let mut w = resystance::log::LogWriter::create(&k, &dir.path().join("999999.log")).unwrap();
    w.add_record(b.encoded(), true).unwrap();
    drop(w);
    let err = Db::open(Arc::clone(&k), dir.path(), inline()).unwrap_err();
    assert!(matches!(err, Error::Corruption { .. }), "{err}");
}

/// A kernel whose MANIFEST fdatasync fails once `armed` (the pwrite before it went through, so
/// the edit may well be durable).
fn manifest_sync_fails(armed: Arc<AtomicBool>) -> Arc<FaultKernel> {
    Arc::new(FaultKernel::new(Box::new(move |_, kind, path| {
        armed.load(Ordering::SeqCst)
            && kind == SyscallKind::Fdatasync
            && path.is_some_and(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("MANIFEST-"))
            })
    })))
}

fn reopen_and_count(dir: &Path) -> usize {
    let db = Db::open(kernel(), dir, inline()).expect("reopen after a failed MANIFEST sync");
    let n = db.iter(None, None).map(Result::unwrap).count();
    db.close().unwrap();
    n
}

#[test]
fn a_failed_manifest_sync_in_a_flush_loses_nothing() {
    let dir = scratch_dir();
    let armed = Arc::new(AtomicBool::new(false));
    let k = manifest_sync_fails(Arc::clone(&armed));
    let db = Db::open(k as Arc<dyn Kernel>, dir.path(), inline()).unwrap();
    for i in 0..100u32 {
        db.put(format!("key{i:04}").as_bytes(), b"value").unwrap();
    }
    armed.store(true, Ordering::SeqCst);
    assert!(db.flush().is_err());
    assert!(
        db.put(b"after", b"x").is_err(),
        "writes stop after a background error"
    );
    drop(db);
    assert_eq!(reopen_and_count(dir.path()), 100);
}

#[test]
fn a_failed_manifest_sync_in_a_compaction_loses_nothing() {
    let dir = scratch_dir();
    let armed = Arc::new(AtomicBool::new(false));
    let k = manifest_sync_fails(Arc::clone(&armed));
    let db = Db::open(k as Arc<dyn Kernel>, dir.path(), inline()).unwrap();
    for round in 0..2u32 {
        for i in 0..100u32 {
            db.put(
                format!("key{i:04}").as_bytes(),
                format!("v{round}").as_bytes(),
            )
            .unwrap();
        }
        db.flush().unwrap();
    }
    armed.store(true, Ordering::SeqCst);
    assert!(db.compact_all().is_err());
    drop(db);
    assert_eq!(reopen_and_count(dir.path()), 100);
}

/// Found by `resystance sim --seeds 2071..2072 --faults heavy --crash --ops 300`: a
/// compaction program checksum error named the table of the run's *last* block handed out, at
/// offset 0, not the table and offset of the damaged block. A uring window holds blocks of
/// several tables of one run, so the error blamed an undamaged file.
#[test]
fn a_compaction_checksum_error_names_the_damaged_table_and_block() {
    use resystance::CompactionMode;
    use resystance_sim::SimKernel;
    use resystance_traces::OpenFlags;

    let sim = Arc::new(SimKernel::new(1));
    sim.prepare_dir(Path::new("/tmp")).unwrap();
    let k: Arc<dyn Kernel> = sim;
    let dir = Path::new("/tmp/db");
    let mut o = Options {
        write_buffer_size: 4096,
        target_file_size_base: 4096,
        background: BackgroundMode::Inline,
        compaction_mode: CompactionMode::Uring,
        ..Options::default()
    };
    o.table.block_size_bytes = 256;
    let db = Db::open(Arc::clone(&k), dir, o.clone()).unwrap();
    for i in 0..600u32 {
        db.put(format!("key{i:05}").as_bytes(), &[b'v'; 50])
            .unwrap();
    }
    db.compact_all().unwrap();
    let l1 = db.current_version().levels[1].clone();
    db.close().unwrap();
    assert!(l1.len() >= 3, "L1 should hold several tables: {}", l1.len());
    // Damage the first data block of the run's first table (the window's block 0).
    let victim = dir.join(format!("{:06}.sst", l1[0].number));
    let block = resystance::sst::Table::open(&k, &victim)
        .unwrap()
        .data_block_handles()[0];
    let flags = OpenFlags {
        write: true,
        ..OpenFlags::READ
    };
    let fd = k.open(&victim, flags).unwrap();
    let mut byte = [0u8; 1];
    k.pread(fd, &mut byte, block.offset + 1).unwrap();
    byte[0] ^= 0x10;
    k.pwrite(fd, &byte, block.offset + 1).unwrap();
    k.close(fd).unwrap();

    let db = Db::open(Arc::clone(&k), dir, o).unwrap();
    let err = db.compact_all().unwrap_err();
    match &err {
        Error::Corruption { path, offset, what } => {
            assert_eq!(path, &victim, "{err}");
            assert_eq!(*offset, block.offset, "{err}");
            assert!(what.contains("ERR_CHECKSUM"), "{err}");
        }
        other => panic!("want a corruption, got {other}"),
    }
}
