//! `wal_recovery_mode`: a flipped bit in a synced WAL record, in the middle of the WALs and
//! in their last record, and a torn tail, under each of the four modes: which keys come back,
//! what is reported, which error, and that a refused open changes no file.
//!
//! The fixture is a database closed cleanly with 60 acknowledged puts in two WALs (records
//! 0..30 in the older, 30..60 in the newer; each record one put of key `i`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use resystance::log::{scan_log, LogWriter};
use resystance::stats::{WalDropCause, WalRecoveryStats};
use resystance::{BackgroundMode, Db, Error, Options, WalRecoveryMode};
use resystance_real_kernel::RealKernel;
use resystance_traces::Kernel;

const PUTS: usize = 60;
const IN_FIRST_WAL: usize = 30;

fn kernel() -> Arc<dyn Kernel> {
    Arc::new(RealKernel::new())
}

fn options(mode: WalRecoveryMode) -> Options {
    Options {
        background: BackgroundMode::Inline,
        wal_recovery_mode: mode,
        ..Options::default()
    }
}

fn key(i: usize) -> Vec<u8> {
    format!("key{i:04}").into_bytes()
}

fn value(i: usize) -> Vec<u8> {
    format!("value-{i}-{}", "x".repeat(150)).into_bytes()
}

/// The database's files, name → bytes.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

/// A database with two WALs and where each record starts in them.
struct Fixture {
    dir: tempfile::TempDir,
    /// The older WAL, then the newer.
    wals: [PathBuf; 2],
    /// Offsets of each WAL's records.
    starts: [Vec<u64>; 2],
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(
            kernel(),
            dir.path(),
            options(WalRecoveryMode::PointInTimeRecovery),
        )
        .unwrap();
        for i in 0..PUTS {
            db.put(&key(i), &value(i)).unwrap();
        }
        // Closing syncs the WAL and flushes nothing: all 60 puts live only in it.
        db.close().unwrap();
        let mut logs: Vec<PathBuf> = files(dir.path())
            .keys()
            .filter(|n| n.ends_with(".log"))
            .map(|n| dir.path().join(n))
            .collect();
        logs.sort();
        let wal = logs.pop().expect("a WAL");
        assert!(logs.is_empty(), "one WAL: {logs:?}");
        // Split it in two WALs, as a memtable switch would have: the newer numbered one past
        // every file (numbers are allocated upwards).
        let records = scan_log(&std::fs::read(&wal).unwrap()).records;
        assert_eq!(records.len(), PUTS);
        let newest = files(dir.path())
            .keys()
            .filter_map(|n| n.split('.').next()?.parse::<u64>().ok())
            .max()
            .unwrap();
        let second = dir.path().join(format!("{:06}.log", newest + 1));
        let k = kernel();
        for (path, part) in [
            (&wal, &records[..IN_FIRST_WAL]),
            (&second, &records[IN_FIRST_WAL..]),
        ] {
            std::fs::remove_file(path).ok();
            let mut w = LogWriter::create(&k, path).unwrap();
            for r in part {
                w.add_record(&r.data, false).unwrap();
            }
            w.sync(true).unwrap();
        }
        let starts = [&wal, &second].map(|p| {
            scan_log(&std::fs::read(p).unwrap())
                .records
                .iter()
                .map(|r| r.offset)
                .collect::<Vec<u64>>()
        });
        assert_eq!(starts[0].len(), IN_FIRST_WAL);
        assert_eq!(starts[1].len(), PUTS - IN_FIRST_WAL);
        Fixture {
            dir,
            wals: [wal, second],
            starts,
        }
    }

    /// Flips bit 0 of byte `offset` of WAL `w`.
    fn flip(&self, w: usize, offset: u64) {
        let mut bytes = std::fs::read(&self.wals[w]).unwrap();
        bytes[usize::try_from(offset).unwrap()] ^= 0x01;
        std::fs::write(&self.wals[w], bytes).unwrap();
    }

    /// A payload byte of record `r` of WAL `w` (past its 7-byte header and its batch header).
    fn payload_byte(&self, w: usize, r: usize) -> u64 {
        self.starts[w][r] + 7 + 20
    }

    fn len(&self, w: usize) -> u64 {
        std::fs::metadata(&self.wals[w]).unwrap().len()
    }

    fn open(&self, mode: WalRecoveryMode) -> Result<Db, Error> {
        Db::open(kernel(), self.dir.path(), options(mode))
    }

    /// Opening in `mode` fails with a corruption naming WAL `w` at `offset`, and changes no
    /// file.
    fn refused(&self, mode: WalRecoveryMode, w: usize, offset: u64, what: &str) {
        let before = files(self.dir.path());
        let err = self.open(mode).map(|_| ()).unwrap_err();
        let Error::Corruption {
            path, offset: at, ..
        } = &err
        else {
            panic!("{mode}: not a corruption: {err}");
        };
        assert_eq!(path, &self.wals[w], "{mode}: {err}");
        assert_eq!(*at, offset, "{mode}: {err}");
        let text = err.to_string();
        assert!(text.contains(what), "{mode}: {text}");
        assert!(text.contains(mode.name()), "{mode}: {text}");
        assert_eq!(
            files(self.dir.path()),
            before,
            "{mode}: a refused open wrote"
        );
    }
}

/// Where recovery keeps a WAL it dropped records from.
fn dropped_name(wal: &Path) -> PathBuf {
    PathBuf::from(format!("{}.dropped", wal.display()))
}

/// The keys `db` holds, each checked to hold its value.
fn keys(db: &Db) -> Vec<usize> {
    db.iter(None, None)
        .map(|kv| {
            let (k, v) = kv.unwrap();
            let i: usize = std::str::from_utf8(&k[3..]).unwrap().parse().unwrap();
            assert_eq!(v, value(i), "key {i}");
            i
        })
        .collect()
}

fn all_but(missing: &[usize]) -> Vec<usize> {
    (0..PUTS).filter(|i| !missing.contains(i)).collect()
}

/// Opens in `mode`, checks the keys, returns the report and closes.
fn recovered(f: &Fixture, mode: WalRecoveryMode, want: &[usize]) -> WalRecoveryStats {
    let db = f.open(mode).unwrap();
    assert_eq!(keys(&db), want, "{mode}");
    let report = db.stats().wal_recovery;
    assert_eq!(report.mode, mode);
    assert_eq!(report.wals, 2, "{mode}: {report:?}");
    db.close().unwrap();
    report
}

#[test]
fn every_mode_replays_undamaged_wals_in_full() {
    for mode in WalRecoveryMode::ALL {
        let f = Fixture::new();
        let report = recovered(&f, mode, &all_but(&[]));
        assert_eq!(report.records_replayed, PUTS as u64, "{mode}");
        assert!(report.drops.is_empty(), "{mode}: {report:?}");
    }
}

#[test]
fn a_flip_in_the_middle_is_refused_or_reported_never_silent() {
    let damaged = 10;
    for mode in WalRecoveryMode::ALL {
        let f = Fixture::new();
        f.flip(0, f.payload_byte(0, damaged));
        let at = f.starts[0][damaged];
        // Recovery deletes the WALs it replayed once their records are in a table.
        let len = [f.len(0), f.len(1)];
        let bytes = f.wals.clone().map(|w| std::fs::read(w).unwrap());
        match mode {
            WalRecoveryMode::AbsoluteConsistency
            | WalRecoveryMode::TolerateCorruptedTailRecords => {
                f.refused(mode, 0, at, "fragment checksum mismatch");
                // Nothing was lost: point-in-time recovery still finds everything before it,
                // and then the database opens in the strictest mode again.
                let report = recovered(
                    &f,
                    WalRecoveryMode::PointInTimeRecovery,
                    &(0..damaged).collect::<Vec<_>>(),
                );
                assert!(report.dropped_past_damage());
                let db = f.open(WalRecoveryMode::AbsoluteConsistency).unwrap();
                assert_eq!(keys(&db), (0..damaged).collect::<Vec<_>>());
                assert!(db.stats().wal_recovery.drops.is_empty());
                db.close().unwrap();
            }
            WalRecoveryMode::PointInTimeRecovery => {
                let report = recovered(&f, mode, &(0..damaged).collect::<Vec<_>>());
                assert_eq!(report.records_replayed, damaged as u64);
                assert_eq!(report.drops.len(), 2, "{report:?}");
                let (d, later) = (&report.drops[0], &report.drops[1]);
                assert_eq!(d.cause, WalDropCause::Corruption);
                assert_eq!((&d.wal, d.offset, d.dropped_from), (&f.wals[0], at, at));
                assert_eq!(d.bytes, len[0] - at);
                // The damaged record is not counted; the intact ones after it in its WAL are.
                assert_eq!(d.records, (IN_FIRST_WAL - damaged - 1) as u64);
                assert_eq!(later.cause, WalDropCause::AfterCorruption);
                assert_eq!((&later.wal, later.bytes), (&f.wals[1], len[1]));
                assert_eq!(later.records, (PUTS - IN_FIRST_WAL) as u64);
                assert_eq!(report.records_dropped(), (PUTS - damaged - 1) as u64);
                assert!(d.to_string().contains(&format!("offset {at}")), "{d}");
                // Both WALs are kept, byte for byte, under their `.dropped` names.
                let kept = f.wals.clone().map(|w| dropped_name(&w));
                assert_eq!(report.dropped_wals_kept, kept.to_vec());
                assert_eq!(d.kept_as.as_ref(), Some(&kept[0]));
                assert_eq!(later.kept_as.as_ref(), Some(&kept[1]));
                for (w, k) in kept.iter().enumerate() {
                    assert_eq!(&std::fs::read(k).unwrap(), &bytes[w], "{}", k.display());
                    assert!(!f.wals[w].exists());
                }
                // Later opens replay nothing of them, delete neither, and still list them.
                let db = f.open(WalRecoveryMode::AbsoluteConsistency).unwrap();
                assert_eq!(keys(&db), (0..damaged).collect::<Vec<_>>());
                let again = db.stats().wal_recovery;
                assert!(again.drops.is_empty(), "{again:?}");
                assert_eq!(again.dropped_wals_kept, kept.to_vec());
                db.close().unwrap();
                assert!(kept.iter().all(|k| k.exists()));
            }
            WalRecoveryMode::SkipAnyCorruptedRecords => {
                let report = recovered(&f, mode, &all_but(&[damaged]));
                assert_eq!(report.records_replayed, (PUTS - 1) as u64);
                assert_eq!(report.drops.len(), 1, "{report:?}");
                let d = &report.drops[0];
                assert_eq!(d.cause, WalDropCause::Corruption);
                assert_eq!((&d.wal, d.offset), (&f.wals[0], at));
                assert_eq!(d.bytes, f.starts[0][damaged + 1] - at);
                assert_eq!(d.records, 0);
                assert_eq!(report.dropped_wals_kept, vec![dropped_name(&f.wals[0])]);
                assert!(dropped_name(&f.wals[0]).exists() && !f.wals[0].exists());
            }
        }
    }
}

#[test]
fn a_flip_in_the_last_synced_record_is_corruption_not_a_torn_tail() {
    let last = PUTS - IN_FIRST_WAL - 1;
    for mode in WalRecoveryMode::ALL {
        let f = Fixture::new();
        f.flip(1, f.payload_byte(1, last));
        let at = f.starts[1][last];
        let len = f.len(1);
        match mode {
            WalRecoveryMode::AbsoluteConsistency
            | WalRecoveryMode::TolerateCorruptedTailRecords => {
                // The record is complete: no write cut short leaves a bad checksum, so even the
                // mode that tolerates torn tails reports it.
                f.refused(mode, 1, at, "fragment checksum mismatch");
                recovered(
                    &f,
                    WalRecoveryMode::SkipAnyCorruptedRecords,
                    &all_but(&[PUTS - 1]),
                );
            }
            WalRecoveryMode::PointInTimeRecovery | WalRecoveryMode::SkipAnyCorruptedRecords => {
                let report = recovered(&f, mode, &all_but(&[PUTS - 1]));
                assert_eq!(report.drops.len(), 1, "{report:?}");
                let d = &report.drops[0];
                assert_eq!(d.cause, WalDropCause::Corruption);
                assert_eq!((&d.wal, d.offset, d.bytes), (&f.wals[1], at, len - at));
                assert_eq!(d.records, 0);
            }
        }
    }
}

#[test]
fn a_torn_tail_is_dropped_and_reported_except_under_absolute_consistency() {
    let last = PUTS - IN_FIRST_WAL - 1;
    for mode in WalRecoveryMode::ALL {
        let f = Fixture::new();
        let at = f.starts[1][last];
        // The last record's write cut short, 50 bytes in.
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&f.wals[1])
            .unwrap();
        file.set_len(at + 50).unwrap();
        drop(file);
        if mode == WalRecoveryMode::AbsoluteConsistency {
            f.refused(mode, 1, at, "torn WAL tail");
            continue;
        }
        let report = recovered(&f, mode, &all_but(&[PUTS - 1]));
        assert_eq!(report.drops.len(), 1, "{mode}: {report:?}");
        let d = &report.drops[0];
        assert_eq!(d.cause, WalDropCause::TornTail, "{mode}");
        assert_eq!((&d.wal, d.offset, d.bytes), (&f.wals[1], at, 50));
        assert!(!report.dropped_past_damage());
        // A torn tail was never acknowledged: nothing worth keeping.
        assert!(report.dropped_wals_kept.is_empty() && d.kept_as.is_none());
    }
}

#[test]
fn a_flipped_length_in_the_last_record_looks_torn_and_is_reported_as_such() {
    // The one case no mode can tell from a torn write: the last fragment's length grown past
    // the end of the log. It is dropped where torn tails are, and still reported.
    let last = PUTS - IN_FIRST_WAL - 1;
    let f = Fixture::new();
    let at = f.starts[1][last];
    let mut bytes = std::fs::read(&f.wals[1]).unwrap();
    bytes[usize::try_from(at).unwrap() + 5] ^= 0x02; // length + 512
    std::fs::write(&f.wals[1], bytes).unwrap();
    f.refused(WalRecoveryMode::AbsoluteConsistency, 1, at, "torn WAL tail");
    let report = recovered(
        &f,
        WalRecoveryMode::TolerateCorruptedTailRecords,
        &all_but(&[PUTS - 1]),
    );
    assert_eq!(report.drops.len(), 1, "{report:?}");
    assert_eq!(report.drops[0].cause, WalDropCause::TornTail);
    assert_eq!(report.drops[0].offset, at);
}

#[test]
fn a_grown_length_with_records_after_it_is_corruption() {
    // Record 27's length grown so it overruns its WAL's end: the intact records after it show
    // the log did not end there, so tolerating torn tails does not drop them silently.
    let damaged = IN_FIRST_WAL - 3;
    let f = Fixture::new();
    let at = f.starts[0][damaged];
    let tail = f.len(0) - at;
    let mut bytes = std::fs::read(&f.wals[0]).unwrap();
    let len = u16::from_le_bytes([bytes[at as usize + 4], bytes[at as usize + 5]]);
    let grown = len + u16::try_from(tail).unwrap();
    bytes[at as usize + 4..at as usize + 6].copy_from_slice(&grown.to_le_bytes());
    std::fs::write(&f.wals[0], bytes).unwrap();
    f.refused(
        WalRecoveryMode::TolerateCorruptedTailRecords,
        0,
        at,
        "a complete fragment follows",
    );
}
