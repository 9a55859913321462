//! Rust mirrors of `bpf/compact_abi.h`: the memory user space shares with the compaction
//! program. Field order, sizes and offsets equal the C side; a root test compares them with
//! the BTF of the compiled object, field by field.
#![allow(missing_docs)] // every field is documented in compact_abi.h, the single source

/// ABI version the program accepts in [`Job::abi_version`]. 2: one window pool, windows
/// sized per job; 3: a 4 MiB output region and 1024 records (were 1 MiB and 256); 4: windows
/// up to 8 MiB of up to 2048 blocks (were 2 MiB and 512), the pool 2 chunks of 8 MiB (was 8
/// of 2 MiB); 5: the pool 4 chunks of 8 MiB, so that user space can read a run's next blocks
/// into one half of its window while the program merges the other.
pub const ABI_VERSION: u32 = 5;

pub const RUNS_MAX: usize = 64;
pub const CHUNK_BYTES: usize = 8_388_608;
pub const CHUNK_SLACK_BYTES: usize = 4096;
pub const POOL_CHUNKS: usize = 4;
pub const POOL_BYTES: usize = POOL_CHUNKS * CHUNK_BYTES;
pub const WINDOW_BYTES_MIN: usize = 262_144;
pub const WINDOW_BYTES_MAX: usize = CHUNK_BYTES;
pub const WINDOW_BLOCKS_MAX: usize = 2048;
pub const KEY_BYTES_MAX: usize = 512;
pub const KEY_BUF_BYTES: usize = KEY_BYTES_MAX + 8;
pub const VALUE_BYTES_MAX: usize = 65_536;
pub const BLOCK_SIZE_MAX: usize = 65_536;
pub const RESTART_INTERVAL_MAX: usize = 1024;
pub const RESTARTS_MAX: usize = 8192;
pub const SNAPSHOTS_MAX: usize = 128;
pub const OUTPUT_BYTES: usize = 4_194_304;
pub const OUTPUT_SLACK_BYTES: usize = 4096;
pub const RECORDS_MAX: usize = 1024;
pub const ENTRIES_PER_CALL_MAX: usize = 1_048_576;
pub const BLOCK_TRAILER_BYTES: usize = 5;
pub const ENTRY_BYTES_MAX: usize = 15 + KEY_BYTES_MAX + VALUE_BYTES_MAX;
pub const BLOCK_BYTES_MAX: usize = BLOCK_SIZE_MAX + ENTRY_BYTES_MAX + 4 + BLOCK_TRAILER_BYTES;
/// Bytes of one `cj_windows` map value (a pool chunk and its slack).
pub const CHUNK_VALUE_BYTES: usize = CHUNK_BYTES + CHUNK_SLACK_BYTES;
/// Bytes of the mmapped `cj_windows` map: every chunk with its slack, back to back.
pub const POOL_MAP_BYTES: usize = POOL_CHUNKS * CHUNK_VALUE_BYTES;
/// Bytes of the `cj_output` map value.
pub const OUTPUT_VALUE_BYTES: usize = OUTPUT_BYTES + OUTPUT_SLACK_BYTES;
/// Longest user key the program accepts.
pub const USER_KEY_BYTES_MAX: usize = KEY_BYTES_MAX - 8;

const _: () = assert!(RUNS_MAX.is_power_of_two() && RUNS_MAX <= 64); // `pending`/`live` are u64
const _: () = assert!(CHUNK_BYTES.is_power_of_two() && KEY_BYTES_MAX.is_power_of_two());
const _: () = assert!(WINDOW_BYTES_MIN.is_power_of_two() && WINDOW_BYTES_MAX.is_power_of_two());
const _: () = assert!(WINDOW_BYTES_MAX <= CHUNK_BYTES); // a window lies in one chunk
const _: () = assert!(RUNS_MAX * WINDOW_BYTES_MIN <= POOL_BYTES); // every run fits
const _: () = assert!(RUNS_MAX * WINDOW_BYTES_MAX <= u32::MAX as usize); // r * window_bytes: u32
const _: () = assert!(WINDOW_BLOCKS_MAX.is_power_of_two()); // the program masks block indexes
                                                            // The largest window holds a block per 4 KiB (the engine's default block size).
const _: () = assert!(WINDOW_BLOCKS_MAX * 4096 >= WINDOW_BYTES_MAX);
const _: () = assert!(OUTPUT_BYTES.is_power_of_two());
const _: () = assert!(BLOCK_BYTES_MAX <= WINDOW_BYTES_MIN && BLOCK_BYTES_MAX <= OUTPUT_BYTES);
const _: () = assert!(CHUNK_SLACK_BYTES >= 64 && OUTPUT_SLACK_BYTES >= 8);

/// Whether the program accepts windows of `window_bytes` for a job of `num_runs` runs
/// (`CJ_DETAIL_WINDOW_BYTES` otherwise): a power of two in
/// [`WINDOW_BYTES_MIN`]..=[`WINDOW_BYTES_MAX`], every run's window inside the pool.
pub fn window_bytes_valid(num_runs: u32, window_bytes: u32) -> bool {
    let w = window_bytes as usize;
    (WINDOW_BYTES_MIN..=WINDOW_BYTES_MAX).contains(&w)
        && w.is_power_of_two()
        && (num_runs as usize).saturating_mul(w) <= POOL_BYTES
}

/// The largest valid `window_bytes` for a job of `num_runs` runs (1..=[`RUNS_MAX`]).
pub fn window_bytes_for(num_runs: u32) -> Option<u32> {
    if num_runs as usize > RUNS_MAX {
        return None;
    }
    let mut w = WINDOW_BYTES_MAX;
    while w >= WINDOW_BYTES_MIN {
        let w32 = u32::try_from(w).expect("WINDOW_BYTES_MAX fits u32");
        if num_runs >= 1 && window_bytes_valid(num_runs, w32) {
            return Some(w32);
        }
        w /= 2;
    }
    None
}

/// Offset of run `run`'s window in the mmapped `cj_windows` map when windows are
/// `window_bytes` long: the run's place in the pool's data, in its chunk (a window never
/// straddles two: both are powers of two, the window at most a chunk).
pub fn window_offset(run: usize, window_bytes: usize) -> usize {
    let at = run * window_bytes;
    (at / CHUNK_BYTES) * CHUNK_VALUE_BYTES + at % CHUNK_BYTES
}

/// What one program run returned (`cj_job.status`).
pub mod status {
    pub const DONE: u32 = 0;
    pub const NEED_INPUT: u32 = 1;
    pub const OUTPUT_FULL: u32 = 2;
    pub const BUDGET: u32 = 3;
    pub const ERR_ABI: u32 = 16;
    pub const ERR_CHECKSUM: u32 = 17;
    pub const ERR_CORRUPT: u32 = 18;
    pub const ERR_KEY_TOO_LONG: u32 = 19;
    pub const ERR_VALUE_TOO_LONG: u32 = 20;
    pub const ERR_ORDER: u32 = 21;
    pub const ERR_TOO_MANY_RUNS: u32 = 22;
    pub const ERR_LOOP: u32 = 23;

    /// A readable name for a status.
    pub fn name(status: u32) -> &'static str {
        match status {
            DONE => "DONE",
            NEED_INPUT => "NEED_INPUT",
            OUTPUT_FULL => "OUTPUT_FULL",
            BUDGET => "BUDGET",
            ERR_ABI => "ERR_ABI",
            ERR_CHECKSUM => "ERR_CHECKSUM",
            ERR_CORRUPT => "ERR_CORRUPT",
            ERR_KEY_TOO_LONG => "ERR_KEY_TOO_LONG",
            ERR_VALUE_TOO_LONG => "ERR_VALUE_TOO_LONG",
            ERR_ORDER => "ERR_ORDER",
            ERR_TOO_MANY_RUNS => "ERR_TOO_MANY_RUNS",
            ERR_LOOP => "ERR_LOOP",
            _ => "unknown status",
        }
    }

    /// What a status means, for error messages.
    pub fn describe(status: u32) -> &'static str {
        match status {
            DONE => "every output block is written",
            NEED_INPUT => "a run consumed its window",
            OUTPUT_FULL => "the output region is full",
            BUDGET => "the per-call entry budget is spent",
            ERR_ABI => "parameters or window fields out of range",
            ERR_CHECKSUM => "an input block's CRC32c does not match its trailer",
            ERR_CORRUPT => "an input block is malformed",
            ERR_KEY_TOO_LONG => "an internal key is longer than KEY_BYTES_MAX",
            ERR_VALUE_TOO_LONG => "a value is longer than VALUE_BYTES_MAX",
            ERR_ORDER => "input keys out of order (merged keys not strictly increasing)",
            ERR_TOO_MANY_RUNS => "more runs than RUNS_MAX",
            ERR_LOOP => "the kernel's loop budget ended a loop early",
            _ => "unknown status",
        }
    }

    /// Whether `status` is an error (the job failed).
    pub fn is_error(status: u32) -> bool {
        status >= ERR_ABI
    }
}

/// `cj_job.error_detail` values.
pub mod detail {
    pub const NONE: u32 = 0;
    pub const ABI_VERSION: u32 = 1;
    pub const NUM_RUNS: u32 = 2;
    pub const BLOCK_SIZE: u32 = 3;
    pub const RESTART_INTERVAL: u32 = 4;
    pub const TARGET_FILE_SIZE: u32 = 5;
    pub const SNAPSHOTS: u32 = 6;
    pub const ENTRIES_PER_CALL: u32 = 7;
    pub const WINDOW: u32 = 8;
    pub const MAPS: u32 = 9;
    pub const BLOCK_SHORT: u32 = 10;
    pub const COMPRESSED: u32 = 11;
    pub const RESTARTS: u32 = 12;
    pub const EMPTY_BLOCK: u32 = 13;
    pub const VARINT: u32 = 14;
    pub const SHARED: u32 = 15;
    pub const SHORT_KEY: u32 = 16;
    pub const ENTRY_OVERRUN: u32 = 17;
    pub const VALUE_TYPE: u32 = 18;
    pub const STATE: u32 = 19;
    pub const WINDOW_BYTES: u32 = 20;

    /// What a detail code means, for error messages.
    pub fn describe(detail: u32) -> &'static str {
        match detail {
            NONE => "no detail",
            ABI_VERSION => "abi_version is not the program's",
            NUM_RUNS => "num_runs is 0",
            BLOCK_SIZE => "block_size out of range",
            RESTART_INTERVAL => "restart_interval out of range",
            TARGET_FILE_SIZE => "target_file_size is 0",
            SNAPSHOTS => "snapshots too many, or not ascending and distinct",
            ENTRIES_PER_CALL => "entries_per_call out of range",
            WINDOW => "window fields out of range (too many blocks, or a block past the window)",
            MAPS => "a map lookup failed",
            BLOCK_SHORT => "block shorter than its restart array",
            COMPRESSED => "compressed block (trailer type byte is not 0)",
            RESTARTS => "restart count is 0, too large, or has the hash-index bit",
            EMPTY_BLOCK => "data block without entries",
            VARINT => "malformed varint32 in an entry header",
            SHARED => "shared prefix longer than the previous key",
            SHORT_KEY => "internal key shorter than 8 bytes",
            ENTRY_OVERRUN => "key or value runs past the block's entries",
            VALUE_TYPE => "entry type is neither a value nor a deletion",
            STATE => "program state fields are inconsistent",
            WINDOW_BYTES => {
                "window_bytes is not a power of two in range, or the runs' windows exceed the pool"
            }
            _ => "unknown detail",
        }
    }
}

/// `cj_run.state` values.
pub mod run_state {
    pub const NEW_WINDOW: u32 = 0;
    pub const IN_BLOCK: u32 = 1;
    pub const EXHAUSTED: u32 = 2;
}

/// `cj_job.phase` values.
pub mod phase {
    pub const START: u32 = 0;
    pub const MERGE: u32 = 1;
    pub const DONE: u32 = 2;
    pub const FAILED: u32 = 3;
}

/// [`Record::flags`]: the block starts a new output file.
pub const RECORD_STARTS_FILE: u32 = 1;
/// [`Job::status_run`] when no run is involved.
pub const NO_RUN: u32 = u32::MAX;

/// `struct cj_run`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Run {
    pub window_first: u32,
    pub window_blocks: u32,
    pub more: u32,
    pub state: u32,
    pub block: u32,
    pub block_off: u32,
    pub entries_end: u32,
    pub next_off: u32,
    pub value_off: u32,
    pub value_len: u32,
    pub key_len: u32,
    pub pad0: u32,
    pub block_len: [u32; WINDOW_BLOCKS_MAX],
    pub key: [u8; KEY_BUF_BYTES],
}

/// `struct cj_job`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Job {
    pub abi_version: u32,
    pub num_runs: u32,
    pub block_size: u32,
    pub restart_interval: u32,
    pub target_file_size: u64,
    pub bottommost: u32,
    pub num_snapshots: u32,
    pub entries_per_call: u32,
    pub window_bytes: u32,
    pub snapshots: [u64; SNAPSHOTS_MAX],

    pub status: u32,
    pub status_run: u32,
    pub error_detail: u32,
    pub error_block: u32,
    pub error_offset: u32,
    pub phase: u32,

    pub out_len: u32,
    pub num_records: u32,

    pub pending: u64,
    pub live: u64,
    pub last_stripe: u32,
    pub in_last_len: u32,
    pub call_entries: u32,

    pub blk_len: u32,
    pub blk_entries: u32,
    pub blk_restarts: u32,
    pub blk_since_restart: u32,
    pub blk_deletions: u32,
    pub blk_raw_key_bytes: u64,
    pub blk_raw_value_bytes: u64,
    pub blk_seq_min: u64,
    pub blk_seq_max: u64,
    pub out_last_len: u32,
    pub pad1: u32,
    pub file_bytes: u64,

    pub calls: u64,
    pub entries_in: u64,
    pub entries_out: u64,
    pub blocks_in: u64,
    pub bytes_in: u64,
    pub blocks_out: u64,
    pub cur: [u32; 16],

    pub in_last_key: [u8; KEY_BUF_BYTES],
    pub out_last_key: [u8; KEY_BUF_BYTES],
    pub restarts: [u32; RESTARTS_MAX],
    pub runs: [Run; RUNS_MAX],
}

/// `struct cj_record`. Equality and `Debug` look at the key only up to `last_key_len`: the
/// bytes past it are scratch (the program copies keys 8 bytes at a time).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Record {
    pub offset: u32,
    pub size: u32,
    pub flags: u32,
    pub entries: u32,
    pub deletions: u32,
    pub last_key_len: u32,
    pub raw_key_bytes: u64,
    pub raw_value_bytes: u64,
    pub seq_min: u64,
    pub seq_max: u64,
    pub last_key: [u8; KEY_BUF_BYTES],
}

impl Record {
    /// The block's last internal key.
    pub fn last_key(&self) -> &[u8] {
        &self.last_key[..(self.last_key_len as usize).min(KEY_BUF_BYTES)]
    }
}

impl PartialEq for Record {
    fn eq(&self, other: &Self) -> bool {
        (
            self.offset,
            self.size,
            self.flags,
            self.entries,
            self.deletions,
            self.raw_key_bytes,
            self.raw_value_bytes,
            self.seq_min,
            self.seq_max,
        ) == (
            other.offset,
            other.size,
            other.flags,
            other.entries,
            other.deletions,
            other.raw_key_bytes,
            other.raw_value_bytes,
            other.seq_min,
            other.seq_max,
        ) && self.last_key() == other.last_key()
    }
}

impl Eq for Record {}

impl std::fmt::Debug for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Record")
            .field("offset", &self.offset)
            .field("size", &self.size)
            .field("flags", &self.flags)
            .field("entries", &self.entries)
            .field("deletions", &self.deletions)
            .field("raw_key_bytes", &self.raw_key_bytes)
            .field("raw_value_bytes", &self.raw_value_bytes)
            .field("seq_min", &self.seq_min)
            .field("seq_max", &self.seq_max)
            .field("last_key", &self.last_key())
            .finish()
    }
}

/// Plain old data: every bit pattern is a valid value, so these structs can be viewed as the
/// bytes of map memory and back.
///
/// # Safety
/// Implement only for `#[repr(C)]` structs of integers and integer arrays without padding.
pub unsafe trait Pod: Copy + 'static {}
// SAFETY: repr(C), integer fields only, explicit padding fields (the layout test checks that
// the fields cover every byte).
unsafe impl Pod for Job {}
// SAFETY: as above.
unsafe impl Pod for Run {}
// SAFETY: as above.
unsafe impl Pod for Record {}

/// A zeroed value, on the heap (a [`Job`] is 582 KiB).
pub fn boxed_zeroed<T: Pod>() -> Box<T> {
    let layout = std::alloc::Layout::new::<T>();
    assert!(layout.size() > 0);
    // SAFETY: the layout has a non-zero size; all-zero bytes are a valid `T` (Pod); the
    // pointer comes from the global allocator with `T`'s layout, as Box requires.
    unsafe {
        let ptr = std::alloc::alloc_zeroed(layout).cast::<T>();
        if ptr.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        Box::from_raw(ptr)
    }
}

/// The bytes of a value.
pub fn bytes_of<T: Pod>(value: &T) -> &[u8] {
    // SAFETY: Pod types have no padding, so every byte is initialised.
    unsafe { std::slice::from_raw_parts(std::ptr::from_ref(value).cast::<u8>(), size_of::<T>()) }
}

/// The bytes of a value, writable: any bytes are a valid `T`.
pub fn bytes_of_mut<T: Pod>(value: &mut T) -> &mut [u8] {
    // SAFETY: as `bytes_of`; any bit pattern is a valid Pod value.
    unsafe {
        std::slice::from_raw_parts_mut(std::ptr::from_mut(value).cast::<u8>(), size_of::<T>())
    }
}

impl Job {
    /// A zeroed job with the parameters set, ready for its first windows.
    pub fn new_boxed(params: &JobParams) -> Box<Job> {
        let mut job = boxed_zeroed::<Job>();
        job.abi_version = ABI_VERSION;
        job.num_runs = params.num_runs;
        job.block_size = params.block_size;
        job.restart_interval = params.restart_interval;
        job.target_file_size = params.target_file_size;
        job.bottommost = u32::from(params.bottommost);
        job.entries_per_call = params.entries_per_call;
        job.window_bytes = params.window_bytes;
        let n = params.snapshots.len().min(SNAPSHOTS_MAX);
        job.num_snapshots = u32::try_from(params.snapshots.len()).unwrap_or(u32::MAX);
        job.snapshots[..n].copy_from_slice(&params.snapshots[..n]);
        job
    }
}

/// The parameters of one job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobParams {
    pub num_runs: u32,
    pub block_size: u32,
    pub restart_interval: u32,
    pub target_file_size: u64,
    pub bottommost: bool,
    /// Ascending, distinct.
    pub snapshots: Vec<u64>,
    pub entries_per_call: u32,
    /// Each run's window: see [`window_bytes_valid`]; [`window_bytes_for`] picks the largest.
    pub window_bytes: u32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    #[test]
    fn sizes_have_no_hidden_padding() {
        // Sums of the field sizes, written out: any padding the compiler inserted would show.
        let run_fields = 12 * 4 + 4 * WINDOW_BLOCKS_MAX + KEY_BUF_BYTES;
        assert_eq!(size_of::<Run>(), run_fields);
        let record_fields = 6 * 4 + 4 * 8 + KEY_BUF_BYTES;
        assert_eq!(size_of::<Record>(), record_fields);
        assert_eq!(offset_of!(Job, runs) % 8, 0);
        assert_eq!(size_of::<Job>() % 8, 0);
        // What a job weighs (programs/README.md): 35,112 bytes before the runs, then 64 runs of
        // 8,760 (ABI 3, with 512 block lengths per run: 2,616, 202,536 in all).
        assert_eq!(size_of::<Run>(), 8_760);
        assert_eq!(offset_of!(Job, runs), 35_112);
        assert_eq!(size_of::<Job>(), 595_752);
    }

    #[test]
    fn window_bytes_rule_follows_the_pool() {
        let min = WINDOW_BYTES_MIN as u32;
        let max = WINDOW_BYTES_MAX as u32;
        const MIB: u32 = 1 << 20;
        assert_eq!(max, 8 * MIB);
        // Every run count's window, written out: 8 MiB for up to 4 runs, halving as runs
        // double, 512 KiB from 33 runs on (each half of a window holds a largest block).
        for (runs, w) in [
            (1, 8 * MIB),
            (2, 8 * MIB),
            (4, 8 * MIB),
            (5, 4 * MIB),
            (8, 4 * MIB),
            (9, 2 * MIB),
            (16, 2 * MIB),
            (17, MIB),
            (32, MIB),
            (33, MIB / 2),
            (64, MIB / 2),
        ] {
            assert_eq!(window_bytes_for(runs), Some(w), "{runs} runs");
        }
        assert_eq!(min, MIB / 4);
        assert_eq!(
            window_bytes_for(RUNS_MAX as u32),
            Some(2 * min),
            "64 runs share 32 MiB"
        );
        assert_eq!(window_bytes_for(RUNS_MAX as u32 + 1), None);
        assert_eq!(window_bytes_for(0), None);
        for runs in 1..=RUNS_MAX as u32 {
            let w = window_bytes_for(runs).expect("fits");
            assert!(window_bytes_valid(runs, w));
            assert!(
                w == max || !window_bytes_valid(runs, w * 2),
                "{runs} runs: {w}"
            );
            // Every window inside one chunk's data, none overlapping the next.
            let w = w as usize;
            for r in 0..runs as usize {
                let at = window_offset(r, w);
                let chunk = at / CHUNK_VALUE_BYTES;
                assert!(chunk < POOL_CHUNKS);
                assert!(
                    at % CHUNK_VALUE_BYTES + w <= CHUNK_BYTES,
                    "run {r}, window {w}"
                );
                if r > 0 {
                    assert!(window_offset(r - 1, w) + w <= at);
                }
            }
        }
        assert!(!window_bytes_valid(1, min - 1));
        assert!(!window_bytes_valid(1, min + 4096));
        assert!(!window_bytes_valid(1, max * 2));
        assert!(!window_bytes_valid(1, 0));
        assert!(!window_bytes_valid(5, max));
        assert!(!window_bytes_valid(17, max / 4));
        assert!(window_bytes_valid(4, max) && window_bytes_valid(RUNS_MAX as u32, 2 * min));
        // Run 1 of a 2-run job: the second chunk's start, past the first chunk's slack.
        assert_eq!(window_offset(1, max as usize), CHUNK_VALUE_BYTES);
    }
}
