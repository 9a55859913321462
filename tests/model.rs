//! Model-based property test: random operation sequences against the engine and against a
//! `BTreeMap`, which must agree on every read, scan and snapshot read — across flushes,
//! compactions, clean reopens and crashes (the process vanishing without closing).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use proptest::prelude::*;
use resystance::{BackgroundMode, Db, Options, Snapshot};
use resystance_real_kernel::RealKernel;
use resystance_traces::Kernel;

#[derive(Clone, Debug)]
enum Op {
    Put(u8, usize, u8),
    Delete(u8),
    Get(u8),
    Scan(u8, u8),
    TakeSnapshot,
    ReadSnapshot(usize, u8),
    ScanSnapshot(usize),
    ReleaseSnapshot(usize),
    Flush,
    CompactAll,
    Reopen,
    CrashReopen,
}

/// Keys share long prefixes (like real key spaces) and collide often.
fn key(k: u8) -> Vec<u8> {
    format!("user-key-with-a-long-shared-prefix/{:03}", k % 48).into_bytes()
}

/// Values from empty to larger than a data block.
fn value(len_class: usize, fill: u8) -> Vec<u8> {
    let len = [0, 1, 10, 100, 1000, 5000][len_class % 6];
    (0..len).map(|i| fill.wrapping_add(i as u8)).collect()
}

/// A value as `len:first bytes`, so a failure message stays readable.
fn brief(v: &Option<Vec<u8>>) -> String {
    match v {
        None => "absent".into(),
        Some(v) => format!("{}:{:?}", v.len(), &v[..v.len().min(4)]),
    }
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        30 => (any::<u8>(), 0..6usize, any::<u8>()).prop_map(|(k, l, f)| Op::Put(k, l, f)),
        8 => any::<u8>().prop_map(Op::Delete),
        12 => any::<u8>().prop_map(Op::Get),
        4 => (any::<u8>(), any::<u8>()).prop_map(|(a, b)| Op::Scan(a, b)),
        3 => Just(Op::TakeSnapshot),
        4 => (any::<usize>(), any::<u8>()).prop_map(|(s, k)| Op::ReadSnapshot(s, k)),
        2 => any::<usize>().prop_map(Op::ScanSnapshot),
        2 => any::<usize>().prop_map(Op::ReleaseSnapshot),
        3 => Just(Op::Flush),
        2 => Just(Op::CompactAll),
        1 => Just(Op::Reopen),
        1 => Just(Op::CrashReopen),
    ]
}

fn small_options(background: BackgroundMode) -> Options {
    let mut o = Options {
        write_buffer_size: 8 * 1024,
        target_file_size_base: 8 * 1024,
        max_bytes_for_level_base: 16 * 1024,
        level0_file_num_compaction_trigger: 2,
        level0_slowdown_writes_trigger: 4,
        level0_stop_writes_trigger: 6,
        background,
        ..Options::default()
    };
    o.table.block_size_bytes = 512;
    o
}

fn open(kernel: &Arc<dyn Kernel>, dir: &Path, background: BackgroundMode) -> Db {
    Db::open(Arc::clone(kernel), dir, small_options(background)).expect("open")
}

fn scan(
    db: &Db,
    snap: Option<&Snapshot>,
    lo: Option<&[u8]>,
    hi: Option<&[u8]>,
) -> Vec<(String, String)> {
    let it = match snap {
        Some(s) => db.iter_at(s, lo, hi).expect("iter_at"),
        None => db.iter(lo, hi),
    };
    it.map(|r| r.map(|(k, v)| (String::from_utf8_lossy(&k).into_owned(), brief(&Some(v)))))
        .collect::<resystance::Result<Vec<_>>>()
        .expect("scan")
}

fn entries<'a>(it: impl Iterator<Item = (&'a Vec<u8>, &'a Vec<u8>)>) -> Vec<(String, String)> {
    it.map(|(k, v)| {
        (
            String::from_utf8_lossy(k).into_owned(),
            brief(&Some(v.clone())),
        )
    })
    .collect()
}

fn model_range(m: &BTreeMap<Vec<u8>, Vec<u8>>, lo: &[u8], hi: &[u8]) -> Vec<(String, String)> {
    if lo >= hi {
        return Vec::new();
    }
    entries(m.range(lo.to_vec()..hi.to_vec()))
}

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

fn run(ops: &[Op], background: BackgroundMode) {
    let dir = tempfile::tempdir().unwrap();
    let kernel: Arc<dyn Kernel> = Arc::new(RealKernel::new());
    let mut db = open(&kernel, dir.path(), background);
    let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let mut snaps: Vec<(Snapshot, Model)> = Vec::new();
    for (step, op) in ops.iter().enumerate() {
        match op {
            Op::Put(k, l, f) => {
                let (k, v) = (key(*k), value(*l, *f));
                db.put(&k, &v).unwrap();
                model.insert(k, v);
            }
            Op::Delete(k) => {
                db.delete(&key(*k)).unwrap();
                model.remove(&key(*k));
            }
            Op::Get(k) => {
                assert_eq!(
                    db.get(&key(*k)).unwrap(),
                    model.get(&key(*k)).cloned(),
                    "step {step}: {op:?}"
                );
            }
            Op::Scan(a, b) => {
                let (lo, hi) = (key(*a), key(*b));
                assert_eq!(
                    scan(&db, None, Some(&lo), Some(&hi)),
                    model_range(&model, &lo, &hi),
                    "step {step}"
                );
            }
            Op::TakeSnapshot => snaps.push((db.snapshot(), model.clone())),
            Op::ReadSnapshot(i, k) if !snaps.is_empty() => {
                let (s, m) = &snaps[i % snaps.len()];
                assert_eq!(
                    db.get_at(&key(*k), s).unwrap(),
                    m.get(&key(*k)).cloned(),
                    "step {step}: snapshot read"
                );
            }
            Op::ScanSnapshot(i) if !snaps.is_empty() => {
                let (s, m) = &snaps[i % snaps.len()];
                assert_eq!(
                    scan(&db, Some(s), None, None),
                    entries(m.iter()),
                    "step {step}: snapshot scan"
                );
            }
            Op::ReleaseSnapshot(i) if !snaps.is_empty() => {
                let n = snaps.len();
                snaps.remove(i % n);
            }
            Op::ReadSnapshot(..) | Op::ScanSnapshot(_) | Op::ReleaseSnapshot(_) => {}
            Op::Flush => db.flush().unwrap(),
            Op::CompactAll => db.compact_all().unwrap(),
            Op::Reopen => {
                snaps.clear();
                db.close().unwrap();
                db = open(&kernel, dir.path(), background);
            }
            Op::CrashReopen => {
                // The process "dies": no close, no final sync. Acknowledged writes were handed
                // to the kernel, so all of them must survive.
                snaps.clear();
                db.simulate_crash();
                db = open(&kernel, dir.path(), background);
            }
        }
    }
    let all = entries(model.iter());
    assert_eq!(scan(&db, None, None, None), all, "final full scan");
    snaps.clear();
    db.close().unwrap();
    let db = open(&kernel, dir.path(), background);
    assert_eq!(scan(&db, None, None, None), all, "after final reopen");
    db.close().unwrap();
}

fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(64), ..ProptestConfig::default() })]

    #[test]
    fn engine_matches_model_inline(ops in proptest::collection::vec(op(), 1..400)) {
        run(&ops, BackgroundMode::Inline);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(64) / 4 + 1, ..ProptestConfig::default() })]

    #[test]
    fn engine_matches_model_with_background_threads(ops in proptest::collection::vec(op(), 1..400)) {
        run(&ops, BackgroundMode::Threads);
    }
}
