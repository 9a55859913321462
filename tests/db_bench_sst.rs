//! Our reader on tables RocksDB 7.8 wrote: `db_bench --compression_type=none` with its default
//! XXH3 checksums (format_version 5, user-key index with delta-encoded handles) and with
//! CRC32c. Every file's entries must equal what `sst_dump --command=scan` prints for it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Once};

use resystance::iter::InternalIterator;
use resystance::key::{internal_key, ValueType, SEQUENCE_MAX};
use resystance::sst::{ChecksumType, Table};
use resystance_real_kernel::RealKernel;
use resystance_traces::{Kernel, SyscallKind};

fn find_on_path(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(tool))
        .find(|p| p.is_file())
}

/// `(db_bench, sst_dump)`, or `None` after announcing the skip once per test binary (written
/// past libtest's output capture, so a skipped run is never silent).
fn tools() -> Option<(PathBuf, PathBuf)> {
    static ANNOUNCE: Once = Once::new();
    let db_bench = find_on_path("db_bench");
    let sst_dump = find_on_path("sst_dump");
    let missing = match (&db_bench, &sst_dump) {
        (None, _) => "db_bench",
        (_, None) => "sst_dump",
        (Some(a), Some(b)) => return Some((a.clone(), b.clone())),
    };
    ANNOUNCE.call_once(|| {
        let _ = writeln!(
            std::io::stdout().lock(),
            "SKIP db_bench tests: {missing} not found (apt-get install rocksdb-tools)"
        );
    });
    None
}

/// Runs db_bench fillrandom so it leaves several small uncompressed tables in `db`.
fn fill(db_bench: &Path, db: &Path, extra: &[&str]) {
    let mut args = vec![
        "--benchmarks=fillrandom".to_string(),
        "--num=30000".into(),
        "--value_size=100".into(),
        "--compression_type=none".into(),
        "--write_buffer_size=262144".into(),
        "--target_file_size_base=262144".into(),
        "--disable_wal=1".into(),
        "--seed=42".into(),
        format!("--db={}", db.display()),
    ];
    args.extend(extra.iter().map(|s| (*s).to_string()));
    let out = Command::new(db_bench)
        .args(&args)
        .output()
        .expect("run db_bench");
    assert!(
        out.status.success(),
        "db_bench {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// sst_dump's view of a file: `(internal key, value)` per entry, in file order.
fn scan(sst_dump: &Path, file: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let out = Command::new(sst_dump)
        .args([
            format!("--file={}", file.display()),
            "--command=scan".to_string(),
            "--output_hex".to_string(),
        ])
        .output()
        .expect("run sst_dump");
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.trim().is_empty(), "sst_dump stderr: {stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let mut rows = Vec::new();
    for line in stdout.lines() {
        let Some(rest) = line.strip_prefix('\'') else {
            let banner = line.starts_with("options.env is ")
                || line.starts_with("Process ")
                || line == "Sst file format: block-based"
                || line == "from [] to []";
            assert!(banner, "unexpected sst_dump line: {line}");
            continue;
        };
        let (key, rest) = rest.split_once("' seq:").expect("seq");
        let (seq, rest) = rest.split_once(", type:").expect("type");
        let (ty, value) = rest.split_once(" => ").expect("value");
        let t = match ty {
            "0" => ValueType::Deletion,
            "1" => ValueType::Value,
            other => panic!("value type {other} in a fillrandom table"),
        };
        rows.push((
            internal_key(&unhex(key), seq.parse().unwrap(), t),
            unhex(value),
        ));
    }
    rows
}

fn tables_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sst"))
        .collect();
    v.sort();
    v
}

/// What the footer and properties of the tables must say.
struct Expect {
    checksum: ChecksumType,
    format_version: u32,
    /// User-key index with delta-encoded handles (format_version 4+) or internal keys with
    /// full handles.
    user_key_delta_index: bool,
}

const DEFAULT: Expect = Expect {
    checksum: ChecksumType::Xxh3,
    format_version: 5,
    user_key_delta_index: true,
};

fn check_db(db_bench: &Path, sst_dump: &Path, extra: &[&str], expect: &Expect) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    fill(db_bench, &db, extra);
    let files = tables_in(&db);
    assert!(
        files.len() >= 3,
        "db_bench left only {} tables",
        files.len()
    );
    let kernel: Arc<dyn Kernel> = Arc::new(RealKernel::new());
    let mut total = 0;
    for file in &files {
        let expected = scan(sst_dump, file);
        let table = Arc::new(Table::open(&kernel, file).unwrap());
        assert_eq!(
            table.footer().checksum,
            expect.checksum,
            "{}",
            file.display()
        );
        assert_eq!(table.footer().format_version, expect.format_version);
        let p = table.properties();
        assert_eq!(p.index_key_is_user_key, expect.user_key_delta_index);
        assert_eq!(p.index_value_is_delta_encoded, expect.user_key_delta_index);
        assert_eq!(table.properties().num_entries, expected.len() as u64);

        let before = kernel.syscall_counts();
        let mut it = table.iter(Arc::clone(&kernel));
        let mut got = Vec::new();
        it.seek_to_first();
        while it.valid() {
            got.push((it.key().to_vec(), it.value().to_vec()));
            it.next();
        }
        it.status().unwrap();
        let preads = kernel
            .syscall_counts()
            .since(&before)
            .get(SyscallKind::Pread);
        assert_eq!(
            preads,
            table.data_block_handles().len() as u64,
            "one pread per block"
        );
        assert_eq!(got.len(), expected.len(), "{}", file.display());
        assert!(
            got == expected,
            "{}: entries differ from sst_dump",
            file.display()
        );

        for (i, (key, value)) in expected.iter().enumerate().step_by(97) {
            let found = table.get(kernel.as_ref(), key).unwrap();
            assert_eq!(
                found.as_ref(),
                Some(&(key.clone(), value.clone())),
                "entry {i}"
            );
            // A lookup with the newest possible sequence finds the same (only) version.
            let uk = &key[..key.len() - 8];
            let newest = table
                .get(
                    kernel.as_ref(),
                    &internal_key(uk, SEQUENCE_MAX, ValueType::Value),
                )
                .unwrap();
            assert_eq!(newest.as_ref().map(|e| &e.0), Some(key));
            // Just past the user key: never the same user key.
            let mut past = uk.to_vec();
            past.push(0);
            let miss = table
                .get(
                    kernel.as_ref(),
                    &internal_key(&past, SEQUENCE_MAX, ValueType::Value),
                )
                .unwrap();
            assert!(miss.is_none_or(|(k, _)| k[..k.len() - 8] == past[..]));
            let mut seek = table.iter(Arc::clone(&kernel));
            seek.seek(key);
            assert_eq!(seek.key(), &key[..]);
        }
        total += got.len();
    }
    assert!(total > 0);
}

#[test]
fn reads_db_bench_tables_with_default_xxh3_checksums() {
    let Some((db_bench, sst_dump)) = tools() else {
        return;
    };
    check_db(&db_bench, &sst_dump, &[], &DEFAULT);
}

#[test]
fn reads_db_bench_tables_with_crc32c_checksums() {
    let Some((db_bench, sst_dump)) = tools() else {
        return;
    };
    let crc = Expect {
        checksum: ChecksumType::Crc32c,
        ..DEFAULT
    };
    check_db(&db_bench, &sst_dump, &["--checksum_type=1"], &crc);
}

#[test]
fn reads_db_bench_tables_with_xxhash32_and_xxhash64_checksums() {
    let Some((db_bench, sst_dump)) = tools() else {
        return;
    };
    for (flag, checksum) in [
        ("--checksum_type=2", ChecksumType::XxHash),
        ("--checksum_type=3", ChecksumType::XxHash64),
    ] {
        let expect = Expect {
            checksum,
            ..DEFAULT
        };
        check_db(&db_bench, &sst_dump, &[flag], &expect);
    }
}

#[test]
fn reads_delta_encoded_index_values_between_restart_points() {
    // Index restart interval 4: entries between restarts share key bytes, so their values are
    // size deltas rather than full handles.
    let Some((db_bench, sst_dump)) = tools() else {
        return;
    };
    let flags = [
        "--index_block_restart_interval=4",
        "--block_restart_interval=5",
    ];
    check_db(&db_bench, &sst_dump, &flags, &DEFAULT);
}

#[test]
fn reads_format_version_2_tables_with_shortened_internal_key_separators() {
    let Some((db_bench, sst_dump)) = tools() else {
        return;
    };
    let expect = Expect {
        checksum: ChecksumType::Crc32c,
        format_version: 2,
        user_key_delta_index: false,
    };
    let flags = ["--format_version=2", "--checksum_type=1"];
    check_db(&db_bench, &sst_dump, &flags, &expect);
}
