//! Damaged input for the compaction program: it must never panic and must fail (or succeed)
//! alike on the twin, the vm and Linux (root; one SKIP line otherwise).
//!
//! Each case is a small valid compaction (1 to 32 runs, shared prefixes, many versions,
//! deletions, snapshots, small blocks, windows of one block to many, small per-call budgets)
//! encoded with the engine's block builder, then damaged one way:
//!
//! * `flip`: bytes of one block's contents changed, trailer kept → `ERR_CHECKSUM`;
//! * `rewrite`: bytes of one block changed (or the block cut or grown) and its trailer
//!   recomputed, so the decoder meets arbitrary varints, shared lengths, restart counts and
//!   key types → any outcome;
//! * `length`: one block's declared length (`block_len`) changed and a valid trailer written
//!   at the new end, inside the block or over the next one → any outcome;
//! * `compressed`: the trailer's type byte non-zero with a matching CRC → `ERR_CORRUPT`
//!   (`COMPRESSED`);
//! * `order`: two blocks of a run swapped, two entries of a run swapped, or an internal key
//!   repeated in another run (or the same one) → `ERR_ORDER`;
//! * `long`: a key over 512 bytes or a value over 65,536 bytes → `ERR_KEY_TOO_LONG` /
//!   `ERR_VALUE_TOO_LONG`; exactly at the limits → success;
//! * `params`: `num_runs` 0 or over 64, `block_size`, `restart_interval`,
//!   `target_file_size`, `entries_per_call` out of range, snapshots unsorted, repeated or too
//!   many, `window_bytes` not a power of two, out of range or more than the pool holds for
//!   the runs → `ERR_ABI` (with its detail) / `ERR_TOO_MANY_RUNS`.
//!
//! The three transcripts (every status, the result or error with its run/block/offset, every
//! output block and record) must be equal. `PROGRAM_FAULT_CASES` sets the number of cases
//! (default 6,000), `PROGRAM_FAULT_SEED` the first case's seed; `PROGRAM_FAULT_ONLY=<seed>`
//! runs that one case and prints it.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use resystance::compaction::machines::{KernelMachine, VmMachine};
use resystance::key::{compare_internal, internal_key, ValueType};
use resystance::sst::block::BlockBuilder;
use resystance::sst::format::{block_checksum, block_trailer, ChecksumType};
use resystance_programs::abi::{
    detail, status, JobParams, Record, BLOCK_SIZE_MAX, BLOCK_TRAILER_BYTES, ENTRIES_PER_CALL_MAX,
    KEY_BYTES_MAX, POOL_BYTES, RESTART_INTERVAL_MAX, RUNS_MAX, SNAPSHOTS_MAX, VALUE_BYTES_MAX,
    WINDOW_BLOCKS_MAX, WINDOW_BYTES_MAX, WINDOW_BYTES_MIN,
};
use resystance_programs::driver::{
    drive, BlockSource, BoxError, DriveError, DriveSummary, Machine, MemorySink, TwinMachine,
    Window, WindowFill,
};

mod program_support;
use program_support::{env_u64, kernel_machine, window_bytes_pick};

type Entry = (Vec<u8>, Vec<u8>);

/// One input block as the source places it: `bytes` (contents, trailer, and whatever damage
/// added) lie back to back in the window; `declared` is the contents size the source reports.
#[derive(Clone, Debug)]
struct Block {
    bytes: Vec<u8>,
    declared: u32,
}

impl Block {
    fn sealed(contents: &[u8]) -> Block {
        let mut bytes = contents.to_vec();
        bytes.extend_from_slice(&block_trailer(contents));
        Block {
            bytes,
            declared: u32::try_from(contents.len()).expect("a small block"),
        }
    }
}

/// One compaction: its entries, their blocks and how they are fed.
#[derive(Clone, Debug)]
struct Case {
    entries: Vec<Vec<Entry>>,
    input_block_size: usize,
    input_restart_interval: usize,
    blocks: Vec<Vec<Block>>,
    params: JobParams,
    blocks_per_window: usize,
    first_offset: u32,
}

impl Case {
    fn encode_run(&mut self, run: usize) {
        let mut blocks = Vec::new();
        let mut b = BlockBuilder::new(self.input_restart_interval);
        for (k, v) in &self.entries[run] {
            if !b.is_empty() && b.size_estimate() >= self.input_block_size {
                blocks.push(Block::sealed(b.finish()));
                b.reset();
            }
            b.add(k, v);
        }
        if !b.is_empty() {
            blocks.push(Block::sealed(b.finish()));
        }
        self.blocks[run] = blocks;
    }

    /// Every (run, block) pair.
    fn block_ids(&self) -> Vec<(usize, usize)> {
        self.blocks
            .iter()
            .enumerate()
            .flat_map(|(r, bs)| (0..bs.len()).map(move |b| (r, b)))
            .collect()
    }
}

fn generate(rng: &mut ChaCha8Rng) -> Case {
    let num_runs = match rng.gen_range(0..10) {
        0..=5 => rng.gen_range(1..=3),
        6..=8 => rng.gen_range(4..=8),
        _ => rng.gen_range(9..=RUNS_MAX),
    };
    let prefix: Vec<u8> = (0..rng.gen_range(0..24))
        .map(|i| b'p' + (i % 3) as u8)
        .collect();
    let suffixes: Vec<Vec<u8>> = (0..rng.gen_range(1..30))
        .map(|_| {
            (0..rng.gen_range(0..5))
                .map(|_| rng.gen_range(b'a'..=b'd'))
                .collect()
        })
        .collect();
    let lens: Vec<usize> = (0..num_runs)
        .map(|_| {
            if rng.gen_bool(0.1) {
                0
            } else {
                rng.gen_range(1..40)
            }
        })
        .collect();
    let total: usize = lens.iter().sum();
    let mut seqs: Vec<u64> = (1..=total as u64).collect();
    seqs.shuffle(rng);
    let entries: Vec<Vec<Entry>> = lens
        .iter()
        .map(|&n| {
            let mut run: Vec<Entry> = (0..n)
                .map(|j| {
                    let mut user = prefix.clone();
                    user.extend_from_slice(&suffixes[rng.gen_range(0..suffixes.len())]);
                    let seq = seqs.pop().expect("one sequence number per entry");
                    if rng.gen_bool(0.2) {
                        (internal_key(&user, seq, ValueType::Deletion), Vec::new())
                    } else {
                        let len = if rng.gen_bool(0.9) {
                            rng.gen_range(0..32)
                        } else {
                            rng.gen_range(100..700)
                        };
                        let value = (0..len).map(|i| (seq as usize * 7 + i + j) as u8).collect();
                        (internal_key(&user, seq, ValueType::Value), value)
                    }
                })
                .collect();
            run.sort_by(|a, b| compare_internal(&a.0, &b.0));
            run
        })
        .collect();
    let mut snapshots: Vec<u64> = (0..rng.gen_range(0..5))
        .map(|_| rng.gen_range(0..=total as u64 + 1))
        .collect();
    snapshots.sort_unstable();
    snapshots.dedup();
    let params = JobParams {
        num_runs: num_runs as u32,
        block_size: if rng.gen_bool(0.2) {
            rng.gen_range(1..64)
        } else {
            rng.gen_range(64..4096)
        },
        restart_interval: rng.gen_range(1..=16),
        target_file_size: match rng.gen_range(0..4) {
            0 => rng.gen_range(1..300),
            1 | 2 => rng.gen_range(300..20_000),
            _ => u64::MAX,
        },
        bottommost: rng.gen_bool(0.5),
        snapshots,
        entries_per_call: match rng.gen_range(0..5) {
            0 => rng.gen_range(1..4),
            1 | 2 => rng.gen_range(4..200),
            _ => ENTRIES_PER_CALL_MAX as u32,
        },
        window_bytes: window_bytes_pick(num_runs as u32, rng.gen()),
    };
    let mut case = Case {
        blocks: vec![Vec::new(); entries.len()],
        entries,
        input_block_size: if rng.gen_bool(0.3) {
            rng.gen_range(1..64)
        } else {
            rng.gen_range(64..1024)
        },
        input_restart_interval: rng.gen_range(1..=8),
        params,
        blocks_per_window: match rng.gen_range(0..4) {
            0 => 1,
            1 => rng.gen_range(2..6),
            _ => usize::MAX,
        },
        first_offset: if rng.gen_bool(0.5) {
            0
        } else {
            rng.gen_range(1..64)
        },
    };
    for run in 0..case.entries.len() {
        case.encode_run(run);
    }
    case
}

/// The error a damage must cause, where the damage decides it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Expect {
    /// Any outcome, as long as the three agree.
    Anything,
    /// The compaction succeeds.
    Success,
    /// This status; this detail and one of these runs where given.
    Error {
        status: u32,
        detail: Option<u32>,
        runs: Option<Vec<u32>>,
    },
}

fn error(status: u32, detail: Option<u32>, runs: Option<Vec<u32>>) -> Expect {
    Expect::Error {
        status,
        detail,
        runs,
    }
}

/// What was done to a case, for reports.
#[derive(Clone, Debug)]
struct Damage {
    kind: &'static str,
    what: String,
}

const KINDS: [&str; 7] = [
    "flip",
    "rewrite",
    "length",
    "compressed",
    "order",
    "long",
    "params",
];

/// Damages `case` one way (`kind`); `None` if the case has nothing that kind can damage.
fn damage(rng: &mut ChaCha8Rng, case: &mut Case, kind: &'static str) -> Option<(Damage, Expect)> {
    let ids = case.block_ids();
    let pick_block = |rng: &mut ChaCha8Rng| ids.choose(rng).copied();
    let (what, expect) = match kind {
        "flip" => {
            let (r, b) = pick_block(rng)?;
            let block = &mut case.blocks[r][b];
            let len = block.declared as usize;
            let mut flips = Vec::new();
            for _ in 0..rng.gen_range(1..=3) {
                let at = rng.gen_range(0..len);
                let x = rng.gen_range(1..=255u8);
                block.bytes[at] ^= x;
                flips.push((at, x));
            }
            // Flips that cancel out leave the block valid.
            let contents = &block.bytes[..len];
            let expect = if block.bytes[len..len + BLOCK_TRAILER_BYTES] == block_trailer(contents) {
                Expect::Anything
            } else {
                error(
                    status::ERR_CHECKSUM,
                    Some(detail::NONE),
                    Some(vec![r as u32]),
                )
            };
            (format!("run {r} block {b}: xor {flips:?}"), expect)
        }
        "rewrite" => {
            let (r, b) = pick_block(rng)?;
            let block = &mut case.blocks[r][b];
            let contents = block.bytes[..block.declared as usize].to_vec();
            let (contents, edits) = rewrite(rng, contents);
            *block = Block::sealed(&contents);
            (format!("run {r} block {b}: {edits}"), Expect::Anything)
        }
        "length" => {
            let (r, b) = pick_block(rng)?;
            let old = case.blocks[r][b].declared as usize;
            if rng.gen_bool(0.1) {
                // Past the end of any window: the program refuses the window fields.
                let window_bytes = case.params.window_bytes;
                let new = *[
                    window_bytes - 4,
                    window_bytes,
                    window_bytes + 1,
                    u32::MAX - 4,
                    u32::MAX,
                ]
                .choose(rng)
                .expect("non-empty");
                case.blocks[r][b].declared = new;
                return Some((
                    Damage {
                        kind,
                        what: format!("run {r} block {b}: declared {old} -> {new}"),
                    },
                    error(status::ERR_ABI, Some(detail::WINDOW), Some(vec![r as u32])),
                ));
            }
            let new = if rng.gen_bool(0.5) && old > 0 {
                rng.gen_range(0..old)
            } else {
                old + rng.gen_range(1..64)
            };
            let restarts = new >= 8 && rng.gen_bool(0.5);
            set_declared_length(rng, &mut case.blocks[r], b, new, restarts);
            (
                format!(
                    "run {r} block {b}: declared {old} -> {new}{}",
                    if restarts {
                        " with restart array [0], count 1"
                    } else {
                        ""
                    }
                ),
                Expect::Anything,
            )
        }
        "compressed" => {
            let (r, b) = pick_block(rng)?;
            let block = &mut case.blocks[r][b];
            let len = block.declared as usize;
            let t = rng.gen_range(1..=255u8);
            let crc = block_checksum(ChecksumType::Crc32c, &block.bytes[..len], t);
            block.bytes[len] = t;
            block.bytes[len + 1..len + 5].copy_from_slice(&crc.to_le_bytes());
            (
                format!("run {r} block {b}: type byte {t}"),
                error(
                    status::ERR_CORRUPT,
                    Some(detail::COMPRESSED),
                    Some(vec![r as u32]),
                ),
            )
        }
        "order" => damage_order(rng, case)?,
        "long" => damage_long(rng, case),
        "params" => damage_params(rng, case),
        _ => unreachable!("unknown damage {kind}"),
    };
    Some((Damage { kind, what }, expect))
}

/// Changes bytes of a valid block's contents (the caller recomputes the trailer): anywhere,
/// in an entry header at a restart point, in the restart array, or after cutting or growing
/// the block. Returns the new contents and what was done.
fn rewrite(rng: &mut ChaCha8Rng, mut contents: Vec<u8>) -> (Vec<u8>, String) {
    let mut edits = Vec::new();
    let n = contents.len();
    let mode = rng.gen_range(0..20);
    if mode < 6 {
        // An entry header: overwrite bytes from a restart point on.
        let nr = u32::from_le_bytes(contents[n - 4..].try_into().expect("4 bytes")) as usize;
        let i = rng.gen_range(0..nr);
        let at = n - 4 - 4 * nr + 4 * i;
        let entry = u32::from_le_bytes(contents[at..at + 4].try_into().expect("4 bytes")) as usize;
        let entries_end = n - 4 - 4 * nr;
        if rng.gen_bool(0.2) {
            // A varint of five bytes whose last one overflows 32 bits, or one cut by the end.
            let pos = entry + rng.gen_range(0..3);
            for k in 0..5 {
                if pos + k < entries_end {
                    contents[pos + k] = if k < 4 {
                        0x80 | rng.gen::<u8>()
                    } else {
                        rng.gen_range(0x10..=0xff)
                    };
                }
            }
            return (
                contents,
                format!("header@{entry}[{pos}..] an over-long varint"),
            );
        }
        for k in 0..rng.gen_range(1..=6) {
            let pos = entry + k + rng.gen_range(0..2);
            if pos >= entries_end {
                break;
            }
            let old = contents[pos];
            contents[pos] = match rng.gen_range(0..6) {
                0 => 0x80 | rng.gen::<u8>(),
                1 => 0xff,
                2 => rng.gen_range(0..16),
                3 => rng.gen_range(0..0x80),
                4 => old.wrapping_add(if rng.gen_bool(0.5) { 1 } else { 255 }),
                _ => rng.gen(),
            };
            edits.push(format!(
                "header@{entry}[{pos}] {old:#x}->{:#x}",
                contents[pos]
            ));
        }
        return (contents, edits.join(", "));
    }
    if mode < 8 {
        let new_len = if rng.gen_bool(0.5) {
            rng.gen_range(0..n)
        } else {
            n + rng.gen_range(1..40)
        };
        let fill: u8 = rng.gen();
        contents.resize(new_len, fill);
        edits.push(format!("resized to {new_len} with {fill:#x}"));
    }
    let n = contents.len();
    for _ in 0..if n == 0 { 0 } else { rng.gen_range(1..=4) } {
        let at = if mode < 11 {
            n - 1 - rng.gen_range(0..n.min(12)) // the restart array and count
        } else {
            rng.gen_range(0..n)
        };
        let old = contents[at];
        contents[at] = match rng.gen_range(0..4) {
            0 | 1 => rng.gen(),
            2 => old.wrapping_add(if rng.gen_bool(0.5) { 1 } else { 255 }),
            _ => *[0x00, 0x01, 0x02, 0x0f, 0x10, 0x7f, 0x80, 0xff]
                .choose(rng)
                .expect("non-empty"),
        };
        edits.push(format!("[{at}] {old:#x}->{:#x}", contents[at]));
    }
    (contents, edits.join(", "))
}

/// Declares block `b` of a run `new` bytes long and writes a valid trailer (type 0, CRC32c of
/// the bytes before it) at that offset of the run's bytes, wherever it lands: inside the
/// block, over its old trailer, or over the start of the next block. Blocks keep their bytes'
/// lengths (the last one grows if the trailer lands past it), so the source places the later
/// blocks where they were while the program looks for them elsewhere. With `restarts`, the
/// 8 bytes before the new end become a one-point restart array, so the program decodes the
/// entries up to there.
fn set_declared_length(
    rng: &mut ChaCha8Rng,
    blocks: &mut [Block],
    b: usize,
    new: usize,
    restarts: bool,
) {
    let mut image: Vec<u8> = Vec::new();
    let mut starts = Vec::new();
    for block in blocks.iter() {
        starts.push(image.len());
        image.extend_from_slice(&block.bytes);
    }
    let start = starts[b];
    let at = start + new;
    while image.len() < at + BLOCK_TRAILER_BYTES {
        image.push(rng.gen());
    }
    if restarts {
        image[at - 8..at - 4].copy_from_slice(&0u32.to_le_bytes());
        image[at - 4..at].copy_from_slice(&1u32.to_le_bytes());
    }
    let trailer = block_trailer(&image[start..at]);
    image[at..at + BLOCK_TRAILER_BYTES].copy_from_slice(&trailer);
    let n = blocks.len();
    for (i, block) in blocks.iter_mut().enumerate() {
        let end = if i + 1 < n {
            starts[i + 1]
        } else {
            image.len()
        };
        block.bytes = image[starts[i]..end].to_vec();
    }
    blocks[b].declared = u32::try_from(new).expect("a small block");
}

fn damage_order(rng: &mut ChaCha8Rng, case: &mut Case) -> Option<(String, Expect)> {
    let runs = case.entries.len();
    let with_entries: Vec<usize> = (0..runs).filter(|&r| !case.entries[r].is_empty()).collect();
    let r = *with_entries.choose(rng)?;
    match rng.gen_range(0..3) {
        0 if case.blocks[r].len() >= 2 => {
            let b = rng.gen_range(0..case.blocks[r].len() - 1);
            case.blocks[r].swap(b, b + 1);
            Some((
                format!("run {r}: blocks {b} and {} swapped", b + 1),
                error(status::ERR_ORDER, Some(detail::NONE), Some(vec![r as u32])),
            ))
        }
        1 if case.entries[r].len() >= 2 => {
            let i = rng.gen_range(0..case.entries[r].len() - 1);
            case.entries[r].swap(i, i + 1);
            case.encode_run(r);
            Some((
                format!("run {r}: entries {i} and {} swapped", i + 1),
                error(status::ERR_ORDER, Some(detail::NONE), Some(vec![r as u32])),
            ))
        }
        _ => {
            // An internal key of run r repeated in run `to` (possibly r itself), in order.
            let entry = case.entries[r].choose(rng).expect("non-empty").clone();
            let to = rng.gen_range(0..runs);
            let value: Vec<u8> = (0..rng.gen_range(0..8)).map(|_| rng.gen()).collect();
            let at = case.entries[to].partition_point(|e| compare_internal(&e.0, &entry.0).is_lt());
            case.entries[to].insert(at, (entry.0, value));
            case.encode_run(to);
            let (a, b) = (r.min(to) as u32, r.max(to) as u32);
            Some((
                format!("a key of run {r} repeated in run {to} at entry {at}"),
                error(status::ERR_ORDER, Some(detail::NONE), Some(vec![a, b])),
            ))
        }
    }
}

fn damage_long(rng: &mut ChaCha8Rng, case: &mut Case) -> (String, Expect) {
    let r = rng.gen_range(0..case.entries.len());
    let seq = case.entries.iter().map(Vec::len).sum::<usize>() as u64 + 1;
    let at_limit = rng.gen_bool(0.2);
    let (entry, what, expect) = if rng.gen_bool(0.5) {
        let key_len = if at_limit {
            KEY_BYTES_MAX
        } else {
            rng.gen_range(KEY_BYTES_MAX + 1..KEY_BYTES_MAX + 100)
        };
        let user: Vec<u8> = (0..key_len - 8)
            .map(|_| rng.gen_range(b'a'..=b'e'))
            .collect();
        let expect = if at_limit {
            Expect::Success
        } else {
            error(
                status::ERR_KEY_TOO_LONG,
                Some(detail::NONE),
                Some(vec![r as u32]),
            )
        };
        (
            (internal_key(&user, seq, ValueType::Value), b"v".to_vec()),
            format!("run {r}: a key of {key_len} bytes"),
            expect,
        )
    } else {
        let value_len = if at_limit {
            VALUE_BYTES_MAX
        } else {
            rng.gen_range(VALUE_BYTES_MAX + 1..VALUE_BYTES_MAX + 5000)
        };
        let user: Vec<u8> = (0..rng.gen_range(0..20))
            .map(|_| rng.gen_range(b'a'..=b'e'))
            .collect();
        let expect = if at_limit {
            Expect::Success
        } else {
            error(
                status::ERR_VALUE_TOO_LONG,
                Some(detail::NONE),
                Some(vec![r as u32]),
            )
        };
        (
            (
                internal_key(&user, seq, ValueType::Value),
                vec![0x5a; value_len],
            ),
            format!("run {r}: a value of {value_len} bytes"),
            expect,
        )
    };
    let at = case.entries[r].partition_point(|e| compare_internal(&e.0, &entry.0).is_lt());
    case.entries[r].insert(at, entry);
    case.encode_run(r);
    (what, expect)
}

fn damage_params(rng: &mut ChaCha8Rng, case: &mut Case) -> (String, Expect) {
    let p = &mut case.params;
    let abi = |d| {
        error(
            status::ERR_ABI,
            Some(d),
            Some(vec![resystance_programs::abi::NO_RUN]),
        )
    };
    match rng.gen_range(0..8) {
        0 => {
            p.num_runs = 0;
            ("num_runs 0".into(), abi(detail::NUM_RUNS))
        }
        1 => {
            p.num_runs = rng.gen_range(RUNS_MAX as u32 + 1..=RUNS_MAX as u32 + 8);
            (
                format!("num_runs {}", p.num_runs),
                error(
                    status::ERR_TOO_MANY_RUNS,
                    Some(detail::NUM_RUNS),
                    Some(vec![resystance_programs::abi::NO_RUN]),
                ),
            )
        }
        2 => {
            p.block_size = if rng.gen_bool(0.5) {
                0
            } else {
                rng.gen_range(BLOCK_SIZE_MAX as u32 + 1..=u32::MAX)
            };
            (
                format!("block_size {}", p.block_size),
                abi(detail::BLOCK_SIZE),
            )
        }
        3 => {
            p.restart_interval = if rng.gen_bool(0.5) {
                0
            } else {
                rng.gen_range(RESTART_INTERVAL_MAX as u32 + 1..=u32::MAX)
            };
            (
                format!("restart_interval {}", p.restart_interval),
                abi(detail::RESTART_INTERVAL),
            )
        }
        4 => {
            p.target_file_size = 0;
            ("target_file_size 0".into(), abi(detail::TARGET_FILE_SIZE))
        }
        5 => {
            p.entries_per_call = if rng.gen_bool(0.5) {
                0
            } else {
                rng.gen_range(ENTRIES_PER_CALL_MAX as u32 + 1..=u32::MAX)
            };
            (
                format!("entries_per_call {}", p.entries_per_call),
                abi(detail::ENTRIES_PER_CALL),
            )
        }
        6 => {
            let min = WINDOW_BYTES_MIN as u32;
            let max = WINDOW_BYTES_MAX as u32;
            let largest = resystance_programs::abi::window_bytes_for(p.num_runs)
                .expect("a generated case's runs fit the pool");
            let what = match rng.gen_range(0..7) {
                0 => {
                    p.window_bytes = 0;
                    "window_bytes 0".to_string()
                }
                1 => {
                    p.window_bytes = min / 2;
                    "window_bytes under the minimum".to_string()
                }
                2 => {
                    p.window_bytes = min + 4096 * rng.gen_range(1..64);
                    "window_bytes not a power of two".to_string()
                }
                3 => {
                    p.window_bytes = *[max * 2, u32::MAX, 1 << 31].choose(rng).expect("non-empty");
                    "window_bytes over the maximum".to_string()
                }
                4 if largest < max => {
                    // A power of two in range, but num_runs such windows overflow the pool.
                    p.window_bytes = largest * 2;
                    "window_bytes: the runs' windows exceed the pool".to_string()
                }
                _ => {
                    // The largest window, and more runs than the pool holds of it (the runs
                    // past the case's own are empty).
                    p.num_runs = rng.gen_range(POOL_BYTES / WINDOW_BYTES_MAX + 1..=RUNS_MAX) as u32;
                    p.window_bytes = max;
                    "the largest window for too many runs".to_string()
                }
            };
            (
                format!(
                    "{what} ({} runs, window_bytes {})",
                    p.num_runs, p.window_bytes
                ),
                abi(detail::WINDOW_BYTES),
            )
        }
        _ => {
            let mut s: Vec<u64> = match rng.gen_range(0..3) {
                0 => {
                    // Too many (ascending, distinct).
                    let n = rng.gen_range(SNAPSHOTS_MAX + 1..SNAPSHOTS_MAX + 10);
                    (1..=n as u64).map(|i| i * 3).collect()
                }
                1 => {
                    // A repeat.
                    let mut s: Vec<u64> = (1..=rng.gen_range(2..=SNAPSHOTS_MAX) as u64).collect();
                    let i = rng.gen_range(1..s.len());
                    s[i] = s[i - 1];
                    s
                }
                _ => {
                    // Out of order.
                    let mut s: Vec<u64> = (1..=rng.gen_range(2..=SNAPSHOTS_MAX) as u64).collect();
                    let i = rng.gen_range(1..s.len());
                    s.swap(i - 1, i);
                    s
                }
            };
            let what = format!("{} snapshots, first {:?}", s.len(), &s[..s.len().min(4)]);
            std::mem::swap(&mut p.snapshots, &mut s);
            (what, abi(detail::SNAPSHOTS))
        }
    }
}

/// Places a case's blocks, each at the offset after the previous one's bytes, and reports the
/// declared lengths. The rest of every window is zeroed, so what the program finds past the
/// blocks does not depend on earlier cases.
#[derive(Debug)]
struct FaultSource<'a> {
    blocks: &'a [Vec<Block>],
    next: Vec<usize>,
    blocks_per_window: usize,
    first_offset: u32,
}

impl BlockSource for FaultSource<'_> {
    fn fill(
        &mut self,
        run: usize,
        window: Window<'_>,
        block_len: &mut [u32; WINDOW_BLOCKS_MAX],
    ) -> Result<WindowFill, BoxError> {
        let Window::Host {
            bytes: window,
            window_bytes,
        } = window
        else {
            return Err("FaultSource writes host windows only".into());
        };
        window.fill(0);
        let Some(blocks) = self.blocks.get(run) else {
            // num_runs over the runs the case has: those runs are empty.
            return Ok(WindowFill {
                first: 0,
                blocks: 0,
                more: false,
            });
        };
        let mut at = self.first_offset as usize;
        let mut placed = 0usize;
        let limit = self.blocks_per_window.clamp(1, WINDOW_BLOCKS_MAX);
        while placed < limit && self.next[run] < blocks.len() {
            let block = &blocks[self.next[run]];
            if at + block.bytes.len() > window_bytes {
                if placed == 0 {
                    return Err(format!("run {run}: a block of {} bytes", block.bytes.len()).into());
                }
                break;
            }
            window[at..at + block.bytes.len()].copy_from_slice(&block.bytes);
            block_len[placed] = block.declared;
            at += block.bytes.len();
            placed += 1;
            self.next[run] += 1;
        }
        Ok(WindowFill {
            first: self.first_offset,
            blocks: u32::try_from(placed).expect("at most WINDOW_BLOCKS_MAX"),
            more: self.next[run] < blocks.len(),
        })
    }
}

/// Everything a run of the protocol shows.
#[derive(Debug, PartialEq, Eq)]
struct Transcript {
    statuses: Vec<u32>,
    result: Result<DriveSummary, Failure>,
    files: Vec<(Vec<u8>, Vec<Record>)>,
}

/// How a drive failed.
#[derive(Debug, PartialEq, Eq)]
enum Failure {
    /// The program's error: status, detail, run, block, offset.
    Program {
        status: u32,
        detail: u32,
        run: u32,
        block: u32,
        offset: u32,
    },
    /// Anything else (a machine fault, a protocol breach, a panic): always a finding.
    Other(String),
}

fn transcript(machine: &mut dyn Machine, case: &Case) -> Transcript {
    let mut source = FaultSource {
        blocks: &case.blocks,
        next: vec![0; case.blocks.len()],
        blocks_per_window: case.blocks_per_window,
        first_offset: case.first_offset,
    };
    let mut sink = MemorySink::default();
    let mut statuses = Vec::new();
    let result = catch_unwind(AssertUnwindSafe(|| {
        drive(machine, &case.params, &mut source, &mut sink, &mut |s| {
            statuses.push(s);
        })
    }));
    let result = match result {
        Ok(Ok(summary)) => Ok(summary),
        Ok(Err(DriveError::Program(p))) => Err(Failure::Program {
            status: p.status,
            detail: p.detail,
            run: p.run,
            block: p.block,
            offset: p.offset,
        }),
        Ok(Err(other)) => Err(Failure::Other(other.to_string())),
        Err(panic) => Err(Failure::Other(format!(
            "panicked: {}",
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_string()))
                .unwrap_or_default()
        ))),
    };
    Transcript {
        statuses,
        result,
        files: sink.files,
    }
}

/// A short account of a transcript for reports.
fn brief(t: &Transcript) -> String {
    format!(
        "{} runs (last statuses {:?}), result {:?}, {} output files",
        t.statuses.len(),
        &t.statuses[t.statuses.len().saturating_sub(4)..],
        t.result,
        t.files.len()
    )
}

/// The outcome's name for the tally: the status, and the detail of `ERR_CORRUPT`/`ERR_ABI`.
fn outcome(t: &Transcript) -> String {
    match &t.result {
        Ok(_) => "success".into(),
        Err(Failure::Program {
            status: s,
            detail: d,
            ..
        }) => {
            let name = status::name(*s).trim_start_matches("ERR_").to_lowercase();
            if *s == status::ERR_CORRUPT || *s == status::ERR_ABI {
                format!("{name}/{}", detail_name(*d))
            } else {
                name
            }
        }
        Err(Failure::Other(_)) => "FAILURE".into(),
    }
}

fn detail_name(d: u32) -> &'static str {
    match d {
        detail::NONE => "none",
        detail::ABI_VERSION => "abi_version",
        detail::NUM_RUNS => "num_runs",
        detail::BLOCK_SIZE => "block_size",
        detail::RESTART_INTERVAL => "restart_interval",
        detail::TARGET_FILE_SIZE => "target_file_size",
        detail::SNAPSHOTS => "snapshots",
        detail::ENTRIES_PER_CALL => "entries_per_call",
        detail::WINDOW => "window",
        detail::MAPS => "maps",
        detail::BLOCK_SHORT => "block_short",
        detail::COMPRESSED => "compressed",
        detail::RESTARTS => "restarts",
        detail::EMPTY_BLOCK => "empty_block",
        detail::VARINT => "varint",
        detail::SHARED => "shared",
        detail::SHORT_KEY => "short_key",
        detail::ENTRY_OVERRUN => "entry_overrun",
        detail::VALUE_TYPE => "value_type",
        detail::STATE => "state",
        detail::WINDOW_BYTES => "window_bytes",
        _ => "unknown",
    }
}

/// Whether the transcript is what the damage must give.
fn meets(t: &Transcript, expect: &Expect) -> bool {
    match (expect, &t.result) {
        (_, Err(Failure::Other(_))) => false,
        (Expect::Anything, _) | (Expect::Success, Ok(_)) => true,
        (
            Expect::Error {
                status: want,
                detail: want_detail,
                runs,
            },
            Err(Failure::Program {
                status: got,
                detail: got_detail,
                run,
                ..
            }),
        ) => {
            got == want
                && want_detail.is_none_or(|d| d == *got_detail)
                && runs.as_ref().is_none_or(|rs| rs.contains(run))
        }
        _ => false,
    }
}

/// One case from its seed: a valid compaction and one damage.
fn make_case(seed: u64) -> (Case, Damage, Expect) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let kind = KINDS[rng.gen_range(0..KINDS.len())];
    loop {
        let mut case = generate(&mut rng);
        if let Some((damage, expect)) = damage(&mut rng, &mut case, kind) {
            return (case, damage, expect);
        }
    }
}

struct Machines {
    twin: TwinMachine,
    vm: VmMachine,
    kernel: Option<KernelMachine>,
}

/// Runs one case everywhere; a description of what went wrong, if anything did.
fn check(
    m: &mut Machines,
    seed: u64,
    times: &mut [Duration; 3],
) -> Result<(&'static str, String, String), String> {
    let (case, damage, expect) = make_case(seed);
    let t0 = Instant::now();
    let twin = transcript(&mut m.twin, &case);
    let t1 = Instant::now();
    let vm = transcript(&mut m.vm, &case);
    let t2 = Instant::now();
    let kernel = m.kernel.as_mut().map(|k| transcript(k, &case));
    times[0] += t1 - t0;
    times[1] += t2 - t1;
    times[2] += t2.elapsed();
    let describe = || {
        format!(
            "case PROGRAM_FAULT_ONLY={seed}: {} — {}; {} runs with {:?} entries, {:?} blocks, blocks_per_window {}, first_offset {}, params {:?}",
            damage.kind,
            damage.what,
            case.entries.len(),
            case.entries.iter().map(Vec::len).collect::<Vec<_>>(),
            case.blocks.iter().map(Vec::len).collect::<Vec<_>>(),
            case.blocks_per_window,
            case.first_offset,
            case.params
        )
    };
    let mut problems = Vec::new();
    if let Err(Failure::Other(e)) = &twin.result {
        problems.push(format!("twin: {e}"));
    }
    if vm != twin {
        problems.push(format!(
            "vm and twin differ:\n    twin: {}\n    vm:   {}",
            brief(&twin),
            brief(&vm)
        ));
    }
    if let Some(k) = &kernel {
        if *k != twin {
            problems.push(format!(
                "Linux and twin differ:\n    twin:  {}\n    Linux: {}",
                brief(&twin),
                brief(k)
            ));
        }
    }
    if !meets(&twin, &expect) {
        problems.push(format!("expected {expect:?}, got {}", brief(&twin)));
    }
    if problems.is_empty() {
        Ok((damage.kind, outcome(&twin), describe()))
    } else {
        Err(format!("{}\n  {}", describe(), problems.join("\n  ")))
    }
}

/// "a 3, b 2, …", most frequent first.
fn counts(tally: &BTreeMap<String, u64>) -> String {
    let mut order: Vec<(&String, &u64)> = tally.iter().collect();
    order.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    order
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[test]
fn damaged_inputs_fail_alike_on_twin_vm_and_linux() {
    let started = Instant::now();
    let mut machines = Machines {
        twin: TwinMachine::new(RUNS_MAX),
        vm: VmMachine::new().expect("the vm loads compact.bpf.o"),
        kernel: kernel_machine("the damaged-input tests"),
    };
    let ran_kernel = machines.kernel.is_some();
    let (first, cases) = match env_u64("PROGRAM_FAULT_ONLY") {
        Some(seed) => (seed, 1),
        None => (
            env_u64("PROGRAM_FAULT_SEED").unwrap_or(0x5eed_0000),
            env_u64("PROGRAM_FAULT_CASES").unwrap_or(6000),
        ),
    };
    let mut tally: BTreeMap<String, u64> = BTreeMap::new();
    let mut by_kind: BTreeMap<&str, BTreeMap<String, u64>> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut times = [Duration::ZERO; 3];
    for seed in first..first + cases {
        match check(&mut machines, seed, &mut times) {
            Ok((kind, outcome, description)) => {
                if cases == 1 {
                    say!("{description}\n  outcome: {outcome}");
                }
                *tally.entry(outcome.clone()).or_default() += 1;
                *by_kind.entry(kind).or_default().entry(outcome).or_default() += 1;
            }
            Err(report) => {
                say!("{report}");
                failures.push(report);
            }
        }
    }
    say!(
        "damaged inputs: {cases} cases — {}; {}; {:.1} s (twin {:.1} s, vm {:.1} s, Linux {:.1} s)",
        counts(&tally),
        match (failures.len(), ran_kernel) {
            (0, true) => "twin = vm = Linux".to_string(),
            (0, false) => "twin = vm".to_string(),
            (n, _) => format!("{n} FAILED"),
        },
        started.elapsed().as_secs_f64(),
        times[0].as_secs_f64(),
        times[1].as_secs_f64(),
        times[2].as_secs_f64(),
    );
    for (kind, outcomes) in &by_kind {
        say!(
            "  {kind} ({}): {}",
            outcomes.values().sum::<u64>(),
            counts(outcomes)
        );
    }
    assert!(
        failures.is_empty(),
        "{} of {cases} damaged cases failed; the first:\n{}",
        failures.len(),
        failures[0]
    );
}
