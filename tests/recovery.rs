//! Recovery: torn WAL tails recover a prefix of the writes; damaged files are reported with
//! their path, never read as wrong data.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use resystance::{BackgroundMode, Db, Error, Options};
use resystance_real_kernel::RealKernel;
use resystance_traces::Kernel;

fn kernel() -> Arc<dyn Kernel> {
    Arc::new(RealKernel::new())
}

fn options() -> Options {
    Options {
        background: BackgroundMode::Inline,
        ..Options::default()
    }
}

fn key(i: usize) -> Vec<u8> {
    format!("key{i:06}").into_bytes()
}

fn files_with_suffix(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    v.sort();
    v
}

fn copy_dir(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn a_torn_wal_tail_recovers_a_prefix_of_the_writes() {
    const WRITES: usize = 300;
    let src = tempfile::tempdir().unwrap();
    let db = Db::open(kernel(), src.path(), options()).unwrap();
    for i in 0..WRITES {
        db.put(&key(i), format!("value-{i}").as_bytes()).unwrap();
    }
    db.simulate_crash();
    let wal = files_with_suffix(src.path(), ".log").pop().expect("a WAL");
    let wal_len = std::fs::metadata(&wal).unwrap().len();
    let mut last_prefix = 0;
    for cut in (0..=wal_len).step_by(97).chain([wal_len]) {
        let dst = tempfile::tempdir().unwrap();
        copy_dir(src.path(), dst.path());
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(dst.path().join(wal.file_name().unwrap()))
            .unwrap();
        f.set_len(cut).unwrap();
        drop(f);
        let db = Db::open(kernel(), dst.path(), options()).unwrap();
        let got: Vec<_> = db.iter(None, None).map(Result::unwrap).collect();
        let n = got.len();
        let expected: Vec<_> = (0..n)
            .map(|i| (key(i), format!("value-{i}").into_bytes()))
            .collect();
        assert_eq!(got, expected, "cut at {cut}: not a prefix of the writes");
        assert!(n >= last_prefix, "a longer log recovered fewer writes");
        last_prefix = n;
        db.close().unwrap();
    }
    assert_eq!(last_prefix, WRITES, "the untouched log recovers everything");
}

#[test]
fn a_damaged_table_is_reported_not_misread() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(kernel(), dir.path(), options()).unwrap();
    for i in 0..2_000 {
        db.put(&key(i), &[7u8; 64]).unwrap();
    }
    db.flush().unwrap();
    db.close().unwrap();
    let sst = files_with_suffix(dir.path(), ".sst").pop().expect("an SST");
    let mut bytes = std::fs::read(&sst).unwrap();
    bytes[100] ^= 0x01; // inside the first data block
    std::fs::write(&sst, &bytes).unwrap();
    let db = Db::open(kernel(), dir.path(), options()).unwrap();
    let mut errors = 0;
    for i in 0..2_000 {
        match db.get(&key(i)) {
            Ok(v) => assert_eq!(v, Some(vec![7u8; 64]), "key {i} misread"),
            Err(e @ Error::Corruption { .. }) => {
                assert!(e.to_string().contains(&*sst.to_string_lossy()), "{e}");
                errors += 1;
            }
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert!(errors > 0, "the flipped byte went unnoticed");
    let scan: Vec<_> = db.iter(None, None).collect();
    assert!(
        scan.iter().any(Result::is_err),
        "the scan must report the damage"
    );
    db.close().unwrap();
}

/// Found by `resystance sim --seeds 720..721 --faults heavy --crash --ops 300`: a bit flipped
/// in a table footer's format_version (2 became 8194; the footer has no checksum) made the
/// open fail as "not supported", as if a newer RocksDB had written the file, not as damage.
#[test]
fn a_flipped_bit_in_a_footers_format_version_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(kernel(), dir.path(), options()).unwrap();
    db.put(b"a", b"1").unwrap();
    db.flush().unwrap();
    db.close().unwrap();
    let sst = files_with_suffix(dir.path(), ".sst").pop().expect("an SST");
    let mut bytes = std::fs::read(&sst).unwrap();
    // The footer's last 12 bytes: format_version (fixed32), then the magic.
    let at = bytes.len() - 12;
    assert_eq!(bytes[at..at + 4], 2u32.to_le_bytes());
    bytes[at + 1] ^= 0x20;
    std::fs::write(&sst, &bytes).unwrap();
    let err = Db::open(kernel(), dir.path(), options()).unwrap_err();
    assert!(matches!(err, Error::Corruption { .. }), "{err}");
    assert!(err.to_string().contains("format_version 8194"), "{err}");
}

/// Found by `resystance sim --seeds 1938..1939 --faults heavy --crash --ops 300`: a bit
/// flipped in CURRENT (it has no checksum) turned MANIFEST-000002 into MANIFEST-000802, and
/// the open failed with a bare ENOENT from the kernel instead of reporting the damage.
#[test]
fn current_naming_a_missing_manifest_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(kernel(), dir.path(), options()).unwrap();
    db.put(b"a", b"1").unwrap();
    db.close().unwrap();
    let current = dir.path().join("CURRENT");
    let name = std::fs::read_to_string(&current).unwrap();
    let flipped: String = name
        .char_indices()
        .map(|(i, c)| {
            if i == "MANIFEST-000".len() {
                (c as u8 ^ 0x08) as char
            } else {
                c
            }
        })
        .collect();
    assert_ne!(flipped, name);
    assert!(!dir.path().join(flipped.trim_end()).exists());
    std::fs::write(&current, &flipped).unwrap();
    let err = Db::open(kernel(), dir.path(), options()).unwrap_err();
    assert!(matches!(err, Error::Corruption { .. }), "{err}");
    assert!(err.to_string().contains("does not exist"), "{err}");
}

#[test]
fn opening_a_missing_database_without_create_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = Db::open(
        kernel(),
        &dir.path().join("nope"),
        Options {
            create_if_missing: false,
            ..options()
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("no database"), "{err}");
}
