//! Table-level tests: builder and reader together, on real files.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use proptest::prelude::*;
use resystance_real_kernel::RealKernel;
use resystance_traces::{Kernel, SyscallKind};

use super::format::{Footer, FOOTER_LEN};
use super::*;
use crate::error::Error;
use crate::file::{AppendFile, WRITE_BUFFER_BYTES_DEFAULT};
use crate::iter::InternalIterator;
use crate::key::{compare_internal, internal_key, user_key, ValueType, SEQUENCE_MAX};

type Entries = Vec<(Vec<u8>, Vec<u8>)>;
type Gets = Vec<Option<(Vec<u8>, Vec<u8>)>>;

// The engine shares tables between threads.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<Table>();
};

fn kernel() -> Arc<dyn Kernel> {
    Arc::new(RealKernel::new())
}

fn build(options: TableOptions, entries: &Entries) -> (Vec<u8>, TableSummary) {
    let mut b = TableBuilder::new(options, Vec::new());
    for (k, v) in entries {
        b.add(k, v).unwrap();
    }
    assert_eq!(b.num_entries(), entries.len() as u64);
    b.finish().unwrap()
}

fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// Opens the table and reads everything back: all entries via the iterator, and a `get` for
/// each of `lookups`.
fn read_back(
    k: &Arc<dyn Kernel>,
    path: &Path,
    lookups: &[Vec<u8>],
) -> crate::Result<(Entries, Gets)> {
    let table = Arc::new(Table::open(k, path)?);
    let out = crate::iter::collect_entries(&mut table.iter(Arc::clone(k)))?;
    let mut gets = Vec::new();
    for l in lookups {
        gets.push(table.get(k.as_ref(), l)?);
    }
    Ok((out, gets))
}

fn small_entries(n: usize) -> Entries {
    (0..n)
        .map(|i| {
            let uk = format!("key{:04}", i / 2);
            let t = if i % 5 == 3 {
                ValueType::Deletion
            } else {
                ValueType::Value
            };
            let seq = 1_000_000 - i as u64;
            let v = if t == ValueType::Deletion {
                vec![]
            } else {
                format!("value-{i}").into_bytes()
            };
            (internal_key(uk.as_bytes(), seq, t), v)
        })
        .collect()
}

#[test]
fn builds_and_reads_back_with_summary_matching_properties() {
    let dir = tempfile::tempdir().unwrap();
    let k = kernel();
    let entries = small_entries(500);
    let (bytes, summary) = build(TableOptions::default(), &entries);
    assert_eq!(summary.file_size, bytes.len() as u64);
    assert_eq!(summary.num_entries, 500);
    assert_eq!(summary.num_deletions, 100);
    assert_eq!(summary.smallest_key, entries[0].0);
    assert_eq!(summary.largest_key, entries[499].0);
    assert!(summary.num_data_blocks > 1);
    let path = write_file(dir.path(), "000001.sst", &bytes);
    let table = Table::open(&k, &path).unwrap();
    let p = table.properties();
    assert_eq!(p.num_entries, summary.num_entries);
    assert_eq!(p.num_deletions, summary.num_deletions);
    assert_eq!(p.num_data_blocks, summary.num_data_blocks);
    assert_eq!(p.data_size, summary.data_size);
    assert_eq!(p.index_size, summary.index_size);
    assert_eq!(p.raw_key_size, summary.raw_key_size);
    assert_eq!(p.raw_value_size, summary.raw_value_size);
    assert_eq!(table.file_size(), summary.file_size);
    assert_eq!(
        table.data_block_handles().len() as u64,
        summary.num_data_blocks
    );
    assert_eq!(table.footer().format_version, 2);
    assert_eq!(table.footer().checksum, ChecksumType::Crc32c);
    // Data blocks are contiguous from offset 0 and their sizes sum to data_size.
    let mut next = 0;
    for h in table.data_block_handles() {
        assert_eq!(h.offset, next);
        next = h.offset + h.size + BLOCK_TRAILER_LEN as u64;
    }
    assert_eq!(next, summary.data_size);
    let (got, _) = read_back(&k, &path, &[]).unwrap();
    assert_eq!(got, entries);
}

#[test]
fn blocks_are_cut_when_the_estimate_reaches_block_size() {
    let entries: Entries = (0..2000u32)
        .map(|i| {
            (
                internal_key(&i.to_be_bytes(), 7, ValueType::Value),
                vec![b'x'; 37],
            )
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let k = kernel();
    let (bytes, _) = build(TableOptions::default(), &entries);
    let path = write_file(dir.path(), "t.sst", &bytes);
    let table = Table::open(&k, &path).unwrap();
    let handles = table.data_block_handles();
    for (i, h) in handles.iter().enumerate() {
        // Each entry here encodes to at most 3 + 12 + 37 bytes and adds at most one restart.
        let last = i + 1 == handles.len();
        if !last {
            assert!(h.size >= 4096, "block {i} cut early at {}", h.size);
        }
        assert!(h.size < 4096 + 52 + 4, "block {i} too big: {}", h.size);
    }
}

#[test]
fn file_size_estimate_tracks_the_output() {
    let mut b = TableBuilder::new(TableOptions::default(), Vec::new());
    assert_eq!(b.file_size_estimate(), 0);
    let mut last = 0;
    for i in 0..3000u32 {
        b.add(
            &internal_key(&i.to_be_bytes(), 1, ValueType::Value),
            &[7; 50],
        )
        .unwrap();
        let est = b.file_size_estimate();
        assert!(est >= b.sink().len() as u64);
        assert!(est > last);
        last = est;
    }
    let (out, summary) = b.finish().unwrap();
    assert!(summary.file_size >= last);
    assert_eq!(out.len() as u64, summary.file_size);
}

#[test]
fn empty_table_reads_back_empty() {
    let dir = tempfile::tempdir().unwrap();
    let k = kernel();
    let (bytes, summary) = build(TableOptions::default(), &vec![]);
    assert_eq!(summary.num_data_blocks, 0);
    assert!(summary.smallest_key.is_empty() && summary.largest_key.is_empty());
    let path = write_file(dir.path(), "e.sst", &bytes);
    let lookup = internal_key(b"a", SEQUENCE_MAX, ValueType::Value);
    let (got, gets) = read_back(&k, &path, std::slice::from_ref(&lookup)).unwrap();
    assert!(got.is_empty());
    assert_eq!(gets, vec![None]);
    let table = Arc::new(Table::open(&k, &path).unwrap());
    let mut it = table.iter(Arc::clone(&k));
    it.seek(&lookup);
    assert!(!it.valid());
    it.status().unwrap();
}

#[test]
fn writes_through_an_append_file() {
    let dir = tempfile::tempdir().unwrap();
    let k = kernel();
    let path = dir.path().join("000007.sst");
    let sink = AppendFile::create(&k, &path, WRITE_BUFFER_BYTES_DEFAULT).unwrap();
    let entries = small_entries(3000);
    let mut b = TableBuilder::new(TableOptions::default(), sink);
    for (key, v) in &entries {
        b.add(key, v).unwrap();
    }
    let (mut file, summary) = b.finish().unwrap();
    file.sync(true).unwrap();
    assert_eq!(file.len(), summary.file_size);
    drop(file);
    let (got, _) = read_back(&k, &path, &[]).unwrap();
    assert_eq!(got, entries);
}

#[test]
fn a_written_table_opens_from_its_tail_with_no_system_call() {
    let dir = tempfile::tempdir().unwrap();
    let k = kernel();
    let path = dir.path().join("000009.sst");
    let entries = small_entries(5000);
    let sink = AppendFile::create_readable(&k, &path, WRITE_BUFFER_BYTES_DEFAULT).unwrap();
    let mut b = TableBuilder::new(TableOptions::default(), sink);
    for (key, v) in &entries {
        b.add(key, v).unwrap();
    }
    let (mut file, summary, tail) = b.finish_keeping_tail().unwrap();
    file.sync(false).unwrap();
    assert_eq!(tail.offset + tail.bytes.len() as u64, summary.file_size);
    assert_eq!(
        tail.offset, summary.data_size,
        "the tail starts with the index"
    );
    let on_disk = std::fs::read(&path).unwrap();
    assert_eq!(&on_disk[tail.offset as usize..], &tail.bytes[..]);

    let before = k.syscall_counts();
    let file = file.into_file().unwrap();
    let written = Arc::new(Table::from_tail(k.as_ref(), file, summary.file_size, tail).unwrap());
    assert_eq!(
        k.syscall_counts(),
        before,
        "everything it needs is in memory"
    );

    // The same table as opening the file would give, and readable through the writer's fd.
    let opened = Table::open(&k, &path).unwrap();
    assert_eq!(written.footer(), opened.footer());
    assert_eq!(written.properties(), opened.properties());
    assert_eq!(written.data_block_handles(), opened.data_block_handles());
    for i in 0..opened.data_block_handles().len() {
        assert_eq!(written.index_key(i), opened.index_key(i));
    }
    let got = crate::iter::collect_entries(&mut written.iter(Arc::clone(&k))).unwrap();
    assert_eq!(got, entries);
}

#[test]
fn a_damaged_tail_is_refused_as_when_opening() {
    let dir = tempfile::tempdir().unwrap();
    let k = kernel();
    let (bytes, summary) = build(TableOptions::default(), &small_entries(200));
    let path = write_file(dir.path(), "t.sst", &bytes);
    let offset = summary.data_size;
    let mut tail = TableTail {
        offset,
        bytes: bytes[offset as usize..].to_vec(),
    };
    tail.bytes[3] ^= 0x40; // inside the index block: its checksum fails
    let file = crate::file::OpenFile::open(&k, &path, resystance_traces::OpenFlags::READ).unwrap();
    assert!(matches!(
        Table::from_tail(k.as_ref(), file, summary.file_size, tail),
        Err(Error::Corruption { .. })
    ));
}

#[test]
fn a_tables_tail_goes_out_with_the_buffered_data_in_one_pwrite() {
    let dir = tempfile::tempdir().unwrap();
    let k = kernel();
    let entries = small_entries(2000);
    let (bytes, summary) = build(TableOptions::default(), &entries);
    let tail_len = (summary.file_size - summary.data_size) as usize;
    assert!(tail_len > 64);
    // A buffer that the data blocks leave less room in than the tail needs: the tail
    // straddles its end.
    let capacity = summary.data_size as usize + tail_len / 2;
    let path = dir.path().join("000010.sst");
    let sink = AppendFile::create_readable(&k, &path, capacity).unwrap();
    let mut b = TableBuilder::new(TableOptions::default(), sink);
    for (key, v) in &entries {
        b.add(key, v).unwrap();
    }
    let before = k.syscall_counts();
    let (file, _, _) = b.finish_keeping_tail().unwrap();
    let file = file.into_file().unwrap(); // writes whatever is still buffered
    let cost = k.syscall_counts().since(&before);
    assert_eq!(
        cost.get(SyscallKind::Pwrite),
        1,
        "data and tail in one write"
    );
    assert_eq!(cost.total(), 1);
    drop(file);
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
}

#[test]
fn iteration_costs_one_pread_per_data_block_and_seeks_reuse_the_current_block() {
    let dir = tempfile::tempdir().unwrap();
    let k = kernel();
    let entries = small_entries(4000);
    let (bytes, summary) = build(TableOptions::default(), &entries);
    let path = write_file(dir.path(), "p.sst", &bytes);
    let before_open = k.syscall_counts();
    let table = Arc::new(Table::open(&k, &path).unwrap());
    let open_preads = k
        .syscall_counts()
        .since(&before_open)
        .get(SyscallKind::Pread);
    assert_eq!(open_preads, 2, "footer + one tail read");

    let before = k.syscall_counts();
    let mut it = table.iter(Arc::clone(&k));
    it.seek_to_first();
    let mut n = 0;
    while it.valid() {
        n += 1;
        it.next();
    }
    it.status().unwrap();
    assert_eq!(n, entries.len());
    let preads = k.syscall_counts().since(&before).get(SyscallKind::Pread);
    assert_eq!(preads, summary.num_data_blocks);

    // Seeks within the block already loaded do not read again.
    let before = k.syscall_counts();
    it.seek(&entries[0].0);
    it.seek(&entries[1].0);
    it.seek(&entries[2].0);
    it.seek_to_first();
    assert_eq!(k.syscall_counts().since(&before).get(SyscallKind::Pread), 1);
    assert_eq!(it.key(), &entries[0].0[..]);

    // A get reads exactly one block.
    let before = k.syscall_counts();
    let found = table.get(k.as_ref(), &entries[1234].0).unwrap();
    assert_eq!(found, Some(entries[1234].clone()));
    assert_eq!(k.syscall_counts().since(&before).get(SyscallKind::Pread), 1);
}

#[test]
fn get_and_seek_semantics() {
    let dir = tempfile::tempdir().unwrap();
    let k = kernel();
    let entries = small_entries(400);
    let opts = TableOptions {
        block_size_bytes: 128,
        ..TableOptions::default()
    };
    let (bytes, _) = build(opts, &entries);
    let path = write_file(dir.path(), "g.sst", &bytes);
    let table = Arc::new(Table::open(&k, &path).unwrap());
    for (i, (key, v)) in entries.iter().enumerate() {
        assert_eq!(
            table.get(k.as_ref(), key).unwrap(),
            Some((key.clone(), v.clone()))
        );
        // The newest version visible at a snapshot: seek with the max sequence.
        let uk = user_key(key);
        let newest = entries.iter().find(|(e, _)| user_key(e) == uk).unwrap();
        let got = table.get(
            k.as_ref(),
            &internal_key(uk, SEQUENCE_MAX, ValueType::Value),
        );
        assert_eq!(got.unwrap().as_ref(), Some(newest));
        // Older than every version of this user key: nothing with this user key follows.
        let below = internal_key(uk, 0, ValueType::Deletion);
        let last_of_uk = entries
            .iter()
            .rev()
            .find(|(e, _)| user_key(e) == uk)
            .unwrap();
        let got = table.get(k.as_ref(), &below).unwrap();
        if compare_internal(&last_of_uk.0, &below).is_ge() {
            assert_eq!(got.as_ref(), Some(last_of_uk));
        } else {
            assert_eq!(got, None);
        }
        let mut it = table.iter(Arc::clone(&k));
        it.seek(key);
        assert_eq!(it.key(), &key[..], "seek to entry {i}");
    }
    for absent in [&b"key"[..], b"key0000\x00", b"zzz", b""] {
        let l = internal_key(absent, SEQUENCE_MAX, ValueType::Value);
        assert_eq!(table.get(k.as_ref(), &l).unwrap(), None);
    }
    let mut it = table.iter(Arc::clone(&k));
    it.seek(&internal_key(b"zzz", 1, ValueType::Value));
    assert!(!it.valid());
    it.status().unwrap();
    it.seek(&internal_key(b"key0100x", 1, ValueType::Value));
    assert_eq!(user_key(it.key()), b"key0101");
}

#[test]
fn every_single_byte_flip_is_detected_or_harmless() {
    let dir = tempfile::tempdir().unwrap();
    let k = kernel();
    let entries = small_entries(24);
    let opts = TableOptions {
        block_size_bytes: 100,
        block_restart_interval: 4,
        index_block_restart_interval: 1,
    };
    let (bytes, summary) = build(opts, &entries);
    assert!(summary.num_data_blocks >= 3);
    let mut lookups: Vec<Vec<u8>> = entries.iter().map(|e| e.0.clone()).collect();
    lookups.push(internal_key(b"key0003", SEQUENCE_MAX, ValueType::Value));
    lookups.push(internal_key(b"nope", SEQUENCE_MAX, ValueType::Value));
    let path = write_file(dir.path(), "c.sst", &bytes);
    let clean = read_back(&k, &path, &lookups).unwrap();
    assert_eq!(clean.0, entries);

    let footer_start = bytes.len() - FOOTER_LEN;
    let (mut detected, mut harmless) = (0, 0);
    for pos in 0..bytes.len() {
        for flip in [0x01u8, 0x80, 0xff] {
            let mut bad = bytes.clone();
            bad[pos] ^= flip;
            std::fs::write(&path, &bad).unwrap();
            match read_back(&k, &path, &lookups) {
                Err(Error::Corruption { .. } | Error::NotSupported(_)) => detected += 1,
                Err(e) => panic!("byte {pos} ^ {flip:#x}: unexpected error kind {e}"),
                Ok(got) => {
                    assert_eq!(got, clean, "byte {pos} ^ {flip:#x} changed the answers");
                    // Only footer bytes the format leaves unchecked may change silently:
                    // padding, format_version 1..=5, checksum type "none".
                    assert!(pos >= footer_start, "byte {pos} ^ {flip:#x} went unnoticed");
                    harmless += 1;
                }
            }
        }
    }
    assert!(
        detected > 0 && harmless > 0,
        "{detected} detected, {harmless} harmless"
    );
}

#[test]
fn truncated_and_garbage_files_are_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let k = kernel();
    let (bytes, _) = build(TableOptions::default(), &small_entries(100));
    let path = dir.path().join("t.sst");
    for len in [0, 1, 52, 53, bytes.len() / 2, bytes.len() - 1] {
        std::fs::write(&path, &bytes[..len]).unwrap();
        match Table::open(&k, &path) {
            Err(Error::Corruption { path: p, .. }) => assert_eq!(p, path),
            other => panic!("truncated to {len}: {other:?}"),
        }
    }
    std::fs::write(&path, vec![0u8; 4096]).unwrap();
    let err = Table::open(&k, &path).unwrap_err();
    assert!(err.to_string().contains("t.sst"), "{err}");
}

#[test]
fn footer_handles_past_the_end_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let k = kernel();
    let (mut bytes, _) = build(TableOptions::default(), &small_entries(10));
    let n = bytes.len();
    let f = Footer::decode(Path::new("x"), 0, &bytes[n - FOOTER_LEN..]).unwrap();
    let mut g = f;
    g.index_handle.size = 1 << 40;
    bytes[n - FOOTER_LEN..].copy_from_slice(&g.encode());
    let path = write_file(dir.path(), "h.sst", &bytes);
    assert!(matches!(
        Table::open(&k, &path),
        Err(Error::Corruption { .. })
    ));
}

/// Random tables: sorted unique internal keys with shared prefixes, several versions per user
/// key, deletions, values from empty to several blocks long.
fn arb_entries() -> impl Strategy<Value = Entries> {
    let user_key = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..12),
        proptest::collection::vec(prop_oneof![Just(0u8), Just(0xffu8), Just(b'k')], 0..24),
    ];
    let value = prop_oneof![
        4 => proptest::collection::vec(any::<u8>(), 0..64),
        1 => Just(Vec::new()),
        1 => (5000usize..9000).prop_map(|n| (0..n).map(|i| (i * 7) as u8).collect()),
    ];
    let entry = (user_key, 0u64..1_000, any::<bool>(), value);
    proptest::collection::vec(entry, 0..300).prop_map(|raw| {
        let mut v: Entries = raw
            .into_iter()
            .map(|(uk, seq, del, value)| {
                let t = if del {
                    ValueType::Deletion
                } else {
                    ValueType::Value
                };
                (internal_key(&uk, seq, t), value)
            })
            .collect();
        v.sort_by(|a, b| compare_internal(&a.0, &b.0));
        v.dedup_by(|a, b| a.0 == b.0);
        v
    })
}

/// Cases per property: `PROPTEST_CASES` when set (CI scales with it), 48 otherwise.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(48)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn random_tables_read_back_identically(
        entries in arb_entries(),
        block_size in prop_oneof![Just(4096usize), 32usize..600],
        interval in 1usize..20,
        index_interval in 1usize..4,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let k = kernel();
        let opts = TableOptions {
            block_size_bytes: block_size,
            block_restart_interval: interval,
            index_block_restart_interval: index_interval,
        };
        let (bytes, summary) = build(opts, &entries);
        prop_assert_eq!(summary.num_entries, entries.len() as u64);
        let path = write_file(dir.path(), "r.sst", &bytes);
        let lookups: Vec<Vec<u8>> = entries.iter().map(|e| e.0.clone()).collect();
        let (got, gets) = read_back(&k, &path, &lookups).unwrap();
        prop_assert_eq!(&got, &entries);
        for (g, e) in gets.iter().zip(&entries) {
            prop_assert_eq!(g.as_ref(), Some(e));
        }
        // A lookup above every version of a user key finds its newest entry.
        let table = Table::open(&k, &path).unwrap();
        for (key, _) in entries.iter().step_by(7) {
            let uk = user_key(key);
            let newest = entries.iter().find(|(e, _)| user_key(e) == uk);
            let got = table.get(k.as_ref(), &internal_key(uk, SEQUENCE_MAX, ValueType::Value)).unwrap();
            prop_assert_eq!(got.as_ref(), newest);
        }
    }
}

#[test]
fn random_damage_without_checksums_never_panics() {
    // With the footer's checksum type set to "none", structural checks are the only defence:
    // every decoding path sees damaged bytes. Any result is fine except a panic.
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let dir = tempfile::tempdir().unwrap();
    let k = kernel();
    let opts = TableOptions {
        block_size_bytes: 120,
        block_restart_interval: 3,
        index_block_restart_interval: 2,
    };
    let (mut bytes, _) = build(opts, &small_entries(60));
    let n = bytes.len();
    bytes[n - FOOTER_LEN] = ChecksumType::None.to_byte();
    let path = dir.path().join("n.sst");
    let lookups = vec![
        internal_key(b"key0007", SEQUENCE_MAX, ValueType::Value),
        internal_key(b"", SEQUENCE_MAX, ValueType::Value),
        internal_key(b"zzz", 0, ValueType::Deletion),
    ];
    std::fs::write(&path, &bytes).unwrap();
    assert_eq!(read_back(&k, &path, &[]).unwrap().0, small_entries(60));
    let (mut ok, mut failed) = (0, 0);
    for _ in 0..1500 {
        let mut bad = bytes.clone();
        for _ in 0..rng.gen_range(1..4) {
            let i = rng.gen_range(0..n - FOOTER_LEN);
            bad[i] = rng.gen();
        }
        std::fs::write(&path, &bad).unwrap();
        match read_back(&k, &path, &lookups) {
            Ok(_) => ok += 1,
            Err(_) => failed += 1,
        }
    }
    assert!(ok > 0 && failed > 0, "{ok} read, {failed} rejected");
}

/// Splits a table built by [`build`] into its data blocks (contents + trailer) and what
/// `add_data_block` needs to know about each, read back from the blocks themselves.
fn split_into_data_blocks(bytes: &[u8]) -> Vec<(Vec<u8>, Entries)> {
    let dir = tempfile::tempdir().unwrap();
    let k = kernel();
    let path = write_file(dir.path(), "s.sst", bytes);
    let table = Table::open(&k, &path).unwrap();
    table
        .data_block_handles()
        .iter()
        .map(|h| {
            let start = usize::try_from(h.offset).unwrap();
            let end = usize::try_from(h.end_with_trailer().unwrap()).unwrap();
            let contents = &bytes[start..end - BLOCK_TRAILER_LEN];
            let entries =
                block::decode_block_entries(contents, block::BlockKind::Data, &path, h.offset)
                    .unwrap();
            (bytes[start..end].to_vec(), entries)
        })
        .collect()
}

fn block_meta(entries: &Entries) -> builder::DataBlockMeta<'_> {
    builder::DataBlockMeta {
        first_key: &entries.first().unwrap().0,
        last_key: &entries.last().unwrap().0,
        entries: entries.len() as u64,
        deletions: entries
            .iter()
            .filter(|(k, _)| {
                crate::key::parse_internal_key(k).unwrap().value_type == ValueType::Deletion
            })
            .count() as u64,
        raw_key_bytes: entries.iter().map(|(k, _)| k.len() as u64).sum(),
        raw_value_bytes: entries.iter().map(|(_, v)| v.len() as u64).sum(),
    }
}

/// Rebuilds a table from its own data blocks through `add_data_block`.
fn rebuild_from_blocks(options: TableOptions, bytes: &[u8]) -> (Vec<u8>, TableSummary) {
    let mut b = TableBuilder::new(options, Vec::new());
    for (block, entries) in split_into_data_blocks(bytes) {
        b.add_data_block(&block, &block_meta(&entries)).unwrap();
        assert!(b.data_block_is_empty());
        assert_eq!(b.file_size_estimate(), b.sink().len() as u64);
    }
    b.finish().unwrap()
}

/// Entries with user keys of 0 to ~40 bytes, several versions each, deletions and values from
/// empty to a few hundred bytes.
fn varied_entries(n: usize) -> Entries {
    let mut v: Entries = (0..n)
        .map(|i| {
            let uk: Vec<u8> = format!("k{:03}", i / 3)
                .bytes()
                .chain(std::iter::repeat_n(b'a' + (i % 7) as u8, (i * 13) % 41))
                .collect();
            let uk = if i == 0 { Vec::new() } else { uk };
            let del = i % 4 == 1;
            let t = if del {
                ValueType::Deletion
            } else {
                ValueType::Value
            };
            let value = if del {
                Vec::new()
            } else {
                vec![(i % 251) as u8; (i * 37) % 300]
            };
            (internal_key(&uk, 5_000 - i as u64, t), value)
        })
        .collect();
    v.sort_by(|a, b| compare_internal(&a.0, &b.0));
    v.dedup_by(|a, b| a.0 == b.0);
    v
}

#[test]
fn data_blocks_added_whole_give_the_same_file() {
    let entries = varied_entries(400);
    let opts = TableOptions {
        block_size_bytes: 256,
        block_restart_interval: 4,
        index_block_restart_interval: 1,
    };
    let (bytes, summary) = build(opts.clone(), &entries);
    assert!(summary.num_data_blocks > 50, "{summary:?}");
    assert!(summary.num_deletions > 0);
    let blocks = split_into_data_blocks(&bytes);
    let replayed: Entries = blocks.iter().flat_map(|(_, e)| e.clone()).collect();
    assert_eq!(replayed, entries, "the split saw every entry");

    let (rebuilt, rebuilt_summary) = rebuild_from_blocks(opts, &bytes);
    assert_eq!(rebuilt_summary, summary);
    assert!(rebuilt == bytes, "rebuilt file differs");

    // The empty table is the same both ways too.
    let (empty, empty_summary) = build(TableOptions::default(), &vec![]);
    assert_eq!(
        rebuild_from_blocks(TableOptions::default(), &empty),
        (empty, empty_summary)
    );
}

#[test]
#[should_panic(expected = "keys out of order")]
fn data_blocks_out_of_order_panic() {
    let opts = TableOptions {
        block_size_bytes: 256,
        ..TableOptions::default()
    };
    let (bytes, _) = build(opts.clone(), &small_entries(200));
    let blocks = split_into_data_blocks(&bytes);
    assert!(blocks.len() >= 2);
    let mut b = TableBuilder::new(opts, Vec::new());
    b.add_data_block(&blocks[1].0, &block_meta(&blocks[1].1))
        .unwrap();
    let _ = b.add_data_block(&blocks[0].0, &block_meta(&blocks[0].1));
}

#[test]
#[should_panic(expected = "pending")]
fn data_block_after_pending_entries_panics() {
    let opts = TableOptions {
        block_size_bytes: 256,
        ..TableOptions::default()
    };
    let entries = small_entries(200);
    let (bytes, _) = build(opts.clone(), &entries);
    let blocks = split_into_data_blocks(&bytes);
    let last = blocks.last().unwrap();
    let mut b = TableBuilder::new(opts, Vec::new());
    b.add(&entries[0].0, &entries[0].1).unwrap();
    assert!(!b.data_block_is_empty());
    let _ = b.add_data_block(&last.0, &block_meta(&last.1));
}

/// Accepts `ok_appends` appends, then fails every one.
struct FailingSink {
    ok_appends: usize,
}

impl crate::file::Sink for FailingSink {
    fn append(&mut self, _data: &[u8]) -> crate::Result<()> {
        if self.ok_appends == 0 {
            return Err(Error::Unavailable("sink broke".into()));
        }
        self.ok_appends -= 1;
        Ok(())
    }
}

#[test]
fn a_sink_error_during_add_data_block_is_sticky() {
    let opts = TableOptions {
        block_size_bytes: 256,
        ..TableOptions::default()
    };
    let (bytes, _) = build(opts.clone(), &small_entries(200));
    let blocks = split_into_data_blocks(&bytes);
    assert!(blocks.len() >= 3);
    let mut b = TableBuilder::new(opts, FailingSink { ok_appends: 1 });
    b.add_data_block(&blocks[0].0, &block_meta(&blocks[0].1))
        .unwrap();
    let size = b.file_size_estimate();
    let first = b.add_data_block(&blocks[1].0, &block_meta(&blocks[1].1));
    assert!(matches!(first, Err(Error::Unavailable(_))), "{first:?}");
    assert_eq!(
        b.file_size_estimate(),
        size,
        "nothing counted for the lost block"
    );
    let again = b.add_data_block(&blocks[2].0, &block_meta(&blocks[2].1));
    assert!(matches!(again, Err(Error::Unavailable(_))), "{again:?}");
    assert!(matches!(b.finish(), Err(Error::Unavailable(_))));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn random_tables_rebuilt_from_their_blocks_are_identical(
        entries in arb_entries(),
        block_size in prop_oneof![Just(4096usize), 32usize..600],
        interval in 1usize..20,
        index_interval in 1usize..4,
    ) {
        let opts = TableOptions {
            block_size_bytes: block_size,
            block_restart_interval: interval,
            index_block_restart_interval: index_interval,
        };
        let (bytes, summary) = build(opts.clone(), &entries);
        let (rebuilt, rebuilt_summary) = rebuild_from_blocks(opts, &bytes);
        prop_assert_eq!(rebuilt_summary, summary);
        prop_assert!(rebuilt == bytes, "rebuilt file differs");
    }
}
