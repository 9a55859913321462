//! Any bytes as an SST file: open, iterate everything, seek and get. Errors are fine; a panic,
//! a hang or an out-of-bounds access is a bug.

#![no_main]

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use resystance::iter::InternalIterator;
use resystance::key::{internal_key, ValueType, SEQUENCE_MAX};
use resystance::sst::Table;
use resystance_real_kernel::RealKernel;
use resystance_traces::Kernel;

/// Most entries one input may yield before iteration stops (inputs are small; this only bounds
/// the work per run).
const ENTRIES_MAX: usize = 100_000;

struct Scratch {
    _dir: tempfile::TempDir,
    path: PathBuf,
    kernel: Arc<dyn Kernel>,
}

fn scratch() -> &'static Scratch {
    static SCRATCH: OnceLock<Scratch> = OnceLock::new();
    SCRATCH.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("000001.sst");
        Scratch {
            _dir: dir,
            path,
            kernel: Arc::new(RealKernel::new()),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let s = scratch();
    std::fs::write(&s.path, data).expect("write fuzz input");
    let Ok(table) = Table::open(&s.kernel, &s.path) else {
        return;
    };
    let table = Arc::new(table);
    let mut keys = Vec::new();
    let mut it = table.iter(Arc::clone(&s.kernel));
    it.seek_to_first();
    while it.valid() && keys.len() < ENTRIES_MAX {
        keys.push(it.key().to_vec());
        it.next();
    }
    let _ = it.status();

    let mut lookups: Vec<Vec<u8>> = keys.iter().take(8).cloned().collect();
    if let Some(last) = keys.last() {
        lookups.push(last.clone());
    }
    lookups.push(internal_key(b"", SEQUENCE_MAX, ValueType::Value));
    lookups.push(internal_key(b"key", 1, ValueType::Deletion));
    lookups.push(internal_key(&[0xff; 24], 0, ValueType::Deletion));
    for l in &lookups {
        let _ = table.get(s.kernel.as_ref(), l);
        it.seek(l);
        if it.valid() {
            let _ = (it.key(), it.value());
            it.next();
        }
    }
});
