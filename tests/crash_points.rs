//! Crash at every point: a kernel that lets the first N boundary calls through and fails every
//! later one (nothing after call N reaches the files, as when the process dies there). For every
//! N of a small workload with flushes and compactions, reopening with a healthy kernel must
//! recover exactly the acknowledged writes.
//!
//! This models process crashes (what was handed to the kernel survives). Power loss — losing
//! what was not yet fsynced — needs the simulated kernel's page cache (sim issue).

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use resystance::{BackgroundMode, Db, Options};
use resystance_real_kernel::RealKernel;
use resystance_traces::Kernel;
use support::{scratch_dir, FaultKernel};

fn options() -> Options {
    let mut o = Options {
        write_buffer_size: 4096,
        target_file_size_base: 4096,
        max_bytes_for_level_base: 8192,
        level0_file_num_compaction_trigger: 2,
        level0_slowdown_writes_trigger: 4,
        level0_stop_writes_trigger: 6,
        background: BackgroundMode::Inline,
        ..Options::default()
    };
    o.table.block_size_bytes = 256;
    o
}

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

/// Runs the workload until the first error; returns the acknowledged state and whether the
/// whole workload went through.
fn workload(kernel: Arc<dyn Kernel>, dir: &Path) -> (Model, bool) {
    let mut model = Model::new();
    let Ok(db) = Db::open(kernel, dir, options()) else {
        return (model, false);
    };
    for i in 0..240u32 {
        let key = format!("key{:03}", (i * 7) % 50).into_bytes();
        let result = if i % 9 == 4 {
            db.delete(&key).map(|()| {
                model.remove(&key);
            })
        } else {
            let value = format!("value-{i}-{}", "x".repeat((i % 5 * 40) as usize)).into_bytes();
            db.put(&key, &value).map(|()| {
                model.insert(key, value);
            })
        };
        if result.is_err() {
            return (model, false);
        }
        if i % 60 == 59 && db.compact_all().is_err() {
            return (model, false);
        }
    }
    let finished = db.close().is_ok();
    (model, finished)
}

fn recovered(dir: &Path) -> Model {
    let db = Db::open(Arc::new(RealKernel::new()), dir, options()).expect("reopen after crash");
    let got = db
        .iter(None, None)
        .collect::<resystance::Result<Model>>()
        .expect("scan after crash");
    db.close().unwrap();
    got
}

#[test]
fn every_crash_point_recovers_exactly_the_acknowledged_writes() {
    // How many calls the whole workload makes.
    let total = {
        let dir = scratch_dir();
        let k = Arc::new(FaultKernel::new(Box::new(|_, _, _| false)));
        let (model, finished) = workload(Arc::clone(&k) as Arc<dyn Kernel>, dir.path());
        assert!(finished && model.len() > 10);
        assert_eq!(recovered(dir.path()), model);
        k.calls()
    };
    assert!(
        total > 500,
        "the workload should flush and compact: {total} calls"
    );
    // Every crash point by default; CRASH_POINT_STRIDE > 1 samples them.
    let stride: u64 = std::env::var("CRASH_POINT_STRIDE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let mut crashed_mid_run = 0;
    for budget in (0..total).step_by(stride.max(1) as usize) {
        let dir = scratch_dir();
        let (acked, finished) = workload(
            Arc::new(FaultKernel::dying_after(budget)) as Arc<dyn Kernel>,
            dir.path(),
        );
        assert!(
            !finished,
            "budget {budget} of {total} cannot finish the workload"
        );
        crashed_mid_run += 1;
        assert_eq!(
            recovered(dir.path()),
            acked,
            "crash after {budget} of {total} calls: recovered state differs from the acknowledged writes"
        );
    }
    println!("crash points checked: {crashed_mid_run} of {total} boundary calls");
}
