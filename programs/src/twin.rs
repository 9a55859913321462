//! The Rust twin of `bpf/compact.bpf.c`: the same state machine over the same memory
//! ([`Job`], windows, output region, records), written as plain Rust.
//!
//! One call of [`run`] is one run of the program: it returns the same status, leaves the same
//! cursors, counters, output bytes and records, and fails on the same input byte with the same
//! error detail. (Only `Job::cur`, the program's loop scratch, and the bytes past a key's
//! length in key buffers differ: the program copies 8 bytes at a time.) The executors that
//! merge in user space (`baseline`, `uring`) run this; tests hold it against the program on
//! the vm and on Linux.

use std::cmp::Ordering;

use crate::abi::{
    detail, phase, run_state, status, Job, Record, Run, BLOCK_BYTES_MAX, BLOCK_SIZE_MAX,
    BLOCK_TRAILER_BYTES, ENTRIES_PER_CALL_MAX, KEY_BYTES_MAX, NO_RUN, OUTPUT_BYTES, RECORDS_MAX,
    RECORD_STARTS_FILE, RESTARTS_MAX, RESTART_INTERVAL_MAX, RUNS_MAX, SNAPSHOTS_MAX,
    VALUE_BYTES_MAX, WINDOW_BLOCKS_MAX,
};

/// Runs the program once over `job`, the windows of its runs (`windows[i]` is run `i`'s,
/// at least `job.window_bytes` long: the program's pool holds them back to back; here each is
/// a buffer of its own), the output region (at least
/// [`OUTPUT_BYTES`]) and the records (at least [`RECORDS_MAX`]). Returns the status, also
/// left in `job.status`.
///
/// # Panics
/// If a buffer is shorter than the ABI's size or fewer windows than runs are given: the
/// caller's buffers are not input data, they are the ABI.
pub fn run(job: &mut Job, windows: &[&[u8]], output: &mut [u8], records: &mut [Record]) -> u32 {
    assert!(
        output.len() >= OUTPUT_BYTES,
        "output region under OUTPUT_BYTES"
    );
    assert!(
        records.len() >= RECORDS_MAX,
        "fewer than RECORDS_MAX records"
    );
    job.calls += 1;
    if job.phase == phase::DONE || job.phase == phase::FAILED {
        return job.status;
    }
    if job.phase == phase::START {
        if let Err(rc) = start(job) {
            return finish_call(job, rc);
        }
    } else if job.phase != phase::MERGE {
        let rc = fail(job, status::ERR_ABI, detail::STATE, NO_RUN, 0, 0);
        return finish_call(job, rc);
    }
    let runs = job.num_runs as usize;
    assert!(
        windows.len() >= runs,
        "{runs} runs but {} windows",
        windows.len()
    );
    let window_bytes = job.window_bytes as usize;
    assert!(
        windows[..runs].iter().all(|w| w.len() >= window_bytes),
        "a window under window_bytes ({window_bytes})"
    );
    job.call_entries = 0;
    let mut out = Output {
        bytes: output,
        records,
    };
    loop {
        if let Err(rc) = step(job, windows, &mut out) {
            return finish_call(job, rc);
        }
    }
}

struct Output<'a> {
    bytes: &'a mut [u8],
    records: &'a mut [Record],
}

fn finish_call(job: &mut Job, rc: u32) -> u32 {
    job.status = rc;
    if status::is_error(rc) {
        job.phase = phase::FAILED;
    } else if rc == status::DONE {
        job.phase = phase::DONE;
    }
    rc
}

fn fail(job: &mut Job, rc: u32, detail: u32, run: u32, block: u32, offset: u32) -> u32 {
    job.error_detail = detail;
    job.status_run = run;
    job.error_block = block;
    job.error_offset = offset;
    rc
}

fn start(job: &mut Job) -> Result<(), u32> {
    let abi = |job: &mut Job, d| Err(fail(job, status::ERR_ABI, d, NO_RUN, 0, 0));
    if job.abi_version != crate::abi::ABI_VERSION {
        return abi(job, detail::ABI_VERSION);
    }
    if job.num_runs == 0 {
        return abi(job, detail::NUM_RUNS);
    }
    if job.num_runs as usize > RUNS_MAX {
        let rc = fail(
            job,
            status::ERR_TOO_MANY_RUNS,
            detail::NUM_RUNS,
            NO_RUN,
            0,
            0,
        );
        return Err(rc);
    }
    if job.block_size == 0 || job.block_size as usize > BLOCK_SIZE_MAX {
        return abi(job, detail::BLOCK_SIZE);
    }
    if job.restart_interval == 0 || job.restart_interval as usize > RESTART_INTERVAL_MAX {
        return abi(job, detail::RESTART_INTERVAL);
    }
    if job.target_file_size == 0 {
        return abi(job, detail::TARGET_FILE_SIZE);
    }
    if job.entries_per_call == 0 || job.entries_per_call as usize > ENTRIES_PER_CALL_MAX {
        return abi(job, detail::ENTRIES_PER_CALL);
    }
    if !crate::abi::window_bytes_valid(job.num_runs, job.window_bytes) {
        return abi(job, detail::WINDOW_BYTES);
    }
    let n = job.num_snapshots as usize;
    if n > SNAPSHOTS_MAX || job.snapshots[..n].windows(2).any(|p| p[0] >= p[1]) {
        return abi(job, detail::SNAPSHOTS);
    }
    job.status_run = NO_RUN;
    job.error_detail = detail::NONE;
    job.error_block = 0;
    job.error_offset = 0;
    job.out_len = 0;
    job.num_records = 0;
    job.pending = if job.num_runs == 64 {
        u64::MAX
    } else {
        (1u64 << job.num_runs) - 1
    };
    job.live = 0;
    job.last_stripe = 0;
    job.in_last_len = 0;
    job.blk_entries = 0;
    job.out_last_len = 0;
    job.file_bytes = 0;
    job.phase = phase::MERGE;
    Ok(())
}

fn head_key(run: &Run) -> &[u8] {
    &run.key[..run.key_len as usize]
}

fn user_key(ikey: &[u8]) -> &[u8] {
    &ikey[..ikey.len() - 8]
}

fn trailer(ikey: &[u8]) -> u64 {
    let t: [u8; 8] = ikey[ikey.len() - 8..].try_into().expect("8-byte trailer");
    u64::from_le_bytes(t)
}

/// The program's `cj_cmp`: -2/+2 when the user keys differ, -1/+1 when only the trailers do.
fn compare(a: &[u8], b: &[u8]) -> i32 {
    match user_key(a).cmp(user_key(b)) {
        Ordering::Less => -2,
        Ordering::Greater => 2,
        Ordering::Equal => match trailer(b).cmp(&trailer(a)) {
            Ordering::Less => -1,
            Ordering::Greater => 1,
            Ordering::Equal => 0,
        },
    }
}

fn step(job: &mut Job, windows: &[&[u8]], out: &mut Output<'_>) -> Result<(), u32> {
    if job.call_entries >= job.entries_per_call {
        return Err(status::BUDGET);
    }
    while job.pending != 0 {
        let r = job.pending.trailing_zeros();
        match fill(job, r, windows[r as usize]) {
            Ok(()) => {}
            Err(status::NEED_INPUT) => {
                job.status_run = r;
                return Err(status::NEED_INPUT);
            }
            Err(rc) => return Err(rc),
        }
        job.pending &= !(1 << r);
        if job.runs[r as usize].state == run_state::IN_BLOCK {
            job.live |= 1 << r;
        }
    }
    let live = job.live;
    if live == 0 {
        if job.blk_entries != 0 {
            finish_block(job, out)?;
        }
        return Err(status::DONE);
    }
    let mut m = live.trailing_zeros();
    for r in m + 1..job.num_runs {
        if live & (1 << r) != 0
            && compare(
                head_key(&job.runs[r as usize]),
                head_key(&job.runs[m as usize]),
            ) < 0
        {
            m = r;
        }
    }
    let run = &job.runs[m as usize];
    let key = head_key(run);
    let mut same_user_key = false;
    if job.in_last_len != 0 {
        let c = compare(&job.in_last_key[..job.in_last_len as usize], key);
        if c >= 0 {
            let (block, next) = (run.block, run.next_off);
            return Err(fail(job, status::ERR_ORDER, detail::NONE, m, block, next));
        }
        same_user_key = c == -1;
    }
    let t = trailer(key);
    let sequence = t >> 8;
    let n = job.num_snapshots as usize;
    let stripe = u32::try_from(job.snapshots[..n].partition_point(|&s| s < sequence))
        .expect("at most SNAPSHOTS_MAX snapshots");
    let keep = if same_user_key && stripe == job.last_stripe {
        false // shadowed by a newer version no snapshot tells apart
    } else {
        !(t & 0xff == 0 && job.bottommost != 0 && stripe == 0) // a tombstone nothing needs
    };
    if keep {
        emit(job, m, windows[m as usize], out)?;
    }
    let run = &job.runs[m as usize];
    let len = run.key_len as usize;
    job.in_last_key[..len].copy_from_slice(&run.key[..len]);
    job.in_last_len = run.key_len;
    job.last_stripe = stripe;
    job.entries_in += 1;
    job.call_entries += 1;
    job.live &= !(1 << m);
    job.pending |= 1 << m;
    Ok(())
}

/// Gives run `r` a head entry or marks it exhausted; `Err(NEED_INPUT)` or an error status.
fn fill(job: &mut Job, r: u32, window: &[u8]) -> Result<(), u32> {
    loop {
        let run = &mut job.runs[r as usize];
        if run.state == run_state::NEW_WINDOW {
            if run.window_blocks == 0 {
                if run.more != 0 {
                    return Err(status::NEED_INPUT);
                }
                run.state = run_state::EXHAUSTED;
                return Ok(());
            }
            if run.window_blocks as usize > WINDOW_BLOCKS_MAX {
                return Err(fail(job, status::ERR_ABI, detail::WINDOW, r, 0, 0));
            }
            run.block = 0;
            run.block_off = run.window_first;
            enter_block(job, r, window)?;
            job.runs[r as usize].state = run_state::IN_BLOCK;
            continue;
        }
        if run.state != run_state::IN_BLOCK {
            return Err(fail(job, status::ERR_ABI, detail::STATE, r, 0, 0));
        }
        if run.next_off < run.entries_end {
            return decode_entry(job, r, window);
        }
        let b = run.block + 1;
        if b >= run.window_blocks {
            if run.more != 0 {
                run.state = run_state::NEW_WINDOW;
                return Err(status::NEED_INPUT);
            }
            run.state = run_state::EXHAUSTED;
            return Ok(());
        }
        run.block_off += run.block_len[run.block as usize] + BLOCK_TRAILER_BYTES as u32;
        run.block = b;
        enter_block(job, r, window)?;
    }
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn mask_crc(crc: u32) -> u32 {
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// Checks the run's current block and positions the run on its first entry.
fn enter_block(job: &mut Job, r: u32, window: &[u8]) -> Result<(), u32> {
    let run = &job.runs[r as usize];
    let b = run.block;
    let off = run.block_off;
    let len = run.block_len[b as usize];
    let corrupt = |job: &mut Job, d| Err(fail(job, status::ERR_CORRUPT, d, r, b, off));
    let w = u64::from(job.window_bytes);
    if u64::from(off) > w || u64::from(len) > w || u64::from(off) + u64::from(len) + 5 > w {
        return Err(fail(job, status::ERR_ABI, detail::WINDOW, r, b, off));
    }
    let (o, l) = (off as usize, len as usize);
    let crc = crc32c::crc32c(&window[o..=o + l]);
    if read_u32(window, o + l + 1) != mask_crc(crc) {
        return Err(fail(job, status::ERR_CHECKSUM, detail::NONE, r, b, off));
    }
    if window[o + l] != 0 {
        return corrupt(job, detail::COMPRESSED);
    }
    if len < 4 {
        return corrupt(job, detail::BLOCK_SHORT);
    }
    let nr = read_u32(window, o + l - 4);
    if nr == 0 || nr > (len - 4) / 4 {
        return corrupt(job, detail::RESTARTS);
    }
    let entries_end = off + len - 4 - 4 * nr;
    if entries_end == off {
        return corrupt(job, detail::EMPTY_BLOCK);
    }
    let run = &mut job.runs[r as usize];
    run.entries_end = entries_end;
    run.next_off = off;
    job.blocks_in += 1;
    job.bytes_in += u64::from(len) + BLOCK_TRAILER_BYTES as u64;
    Ok(())
}

/// The program's varint32 rule: at most 5 bytes, the 5th at most 0x0f, all below `limit`.
fn read_varint32(window: &[u8], pos: &mut u32, limit: u32) -> Option<u32> {
    let mut p = *pos;
    let mut result = 0u32;
    for k in 0..5 {
        if p >= limit {
            return None;
        }
        let b = window[p as usize];
        p += 1;
        if k == 4 && b > 0x0f {
            return None;
        }
        result |= u32::from(b & 0x7f) << (7 * k);
        if b & 0x80 == 0 {
            *pos = p;
            return Some(result);
        }
    }
    None
}

/// Decodes the entry at the run's `next_off` into its head.
fn decode_entry(job: &mut Job, r: u32, window: &[u8]) -> Result<(), u32> {
    let run = &job.runs[r as usize];
    let (b, at, limit) = (run.block, run.next_off, run.entries_end);
    let mut p = at;
    let header = (|| {
        let shared = read_varint32(window, &mut p, limit)?;
        let non_shared = read_varint32(window, &mut p, limit)?;
        let value_len = read_varint32(window, &mut p, limit)?;
        Some((shared, non_shared, value_len))
    })();
    let Some((shared, non_shared, value_len)) = header else {
        return Err(fail(job, status::ERR_CORRUPT, detail::VARINT, r, b, at));
    };
    let bad_shared = if at == run.block_off {
        shared != 0
    } else {
        shared > run.key_len
    };
    if bad_shared {
        return Err(fail(job, status::ERR_CORRUPT, detail::SHARED, r, b, at));
    }
    if u64::from(shared) + u64::from(non_shared) > KEY_BYTES_MAX as u64 {
        return Err(fail(job, status::ERR_KEY_TOO_LONG, detail::NONE, r, b, at));
    }
    let key_len = shared + non_shared;
    if key_len < 8 {
        return Err(fail(job, status::ERR_CORRUPT, detail::SHORT_KEY, r, b, at));
    }
    if value_len as usize > VALUE_BYTES_MAX {
        return Err(fail(
            job,
            status::ERR_VALUE_TOO_LONG,
            detail::NONE,
            r,
            b,
            at,
        ));
    }
    if u64::from(p) + u64::from(non_shared) + u64::from(value_len) > u64::from(limit) {
        return Err(fail(
            job,
            status::ERR_CORRUPT,
            detail::ENTRY_OVERRUN,
            r,
            b,
            at,
        ));
    }
    let run = &mut job.runs[r as usize];
    let (s, n, p_) = (shared as usize, non_shared as usize, p as usize);
    run.key[s..s + n].copy_from_slice(&window[p_..p_ + n]);
    if run.key[key_len as usize - 8] > 1 {
        return Err(fail(job, status::ERR_CORRUPT, detail::VALUE_TYPE, r, b, at));
    }
    run.key_len = key_len;
    run.value_off = p + non_shared;
    run.value_len = value_len;
    run.next_off = p + non_shared + value_len;
    Ok(())
}

fn put_varint32(out: &mut [u8], pos: usize, mut v: u32) -> usize {
    let mut n = 0;
    while v >= 0x80 {
        out[pos + n] = (v as u8 & 0x7f) | 0x80;
        v >>= 7;
        n += 1;
    }
    out[pos + n] = v as u8;
    n + 1
}

/// Writes the head of run `m` into the output, cutting the file and block first where the
/// output writer and the table builder would. `Err(OUTPUT_FULL)` writes nothing of the entry.
fn emit(job: &mut Job, m: u32, window: &[u8], out: &mut Output<'_>) -> Result<(), u32> {
    let new_user_key = job.out_last_len == 0 || {
        let last = &job.out_last_key[..job.out_last_len as usize];
        user_key(last) != user_key(head_key(&job.runs[m as usize]))
    };
    if new_user_key && (job.file_bytes > 0 || job.blk_entries > 0) {
        let pending = if job.blk_entries != 0 {
            u64::from(job.blk_len + 4 * job.blk_restarts + 4) + BLOCK_TRAILER_BYTES as u64
        } else {
            0
        };
        if job.file_bytes + pending >= job.target_file_size {
            if job.blk_entries != 0 {
                finish_block(job, out)?;
            }
            job.file_bytes = 0;
        }
    }
    if job.blk_entries != 0 && job.blk_len + 4 * job.blk_restarts + 4 >= job.block_size {
        finish_block(job, out)?;
    }
    if job.blk_entries == 0 {
        if job.out_len as usize + BLOCK_BYTES_MAX > OUTPUT_BYTES
            || job.num_records as usize >= RECORDS_MAX
        {
            return Err(status::OUTPUT_FULL);
        }
        job.blk_len = 0;
        job.blk_restarts = 1;
        job.restarts[0] = 0;
        job.blk_since_restart = 0;
        job.blk_deletions = 0;
        job.blk_raw_key_bytes = 0;
        job.blk_raw_value_bytes = 0;
        job.blk_seq_min = u64::MAX;
        job.blk_seq_max = 0;
    }
    let shared = if job.blk_since_restart >= job.restart_interval {
        if job.blk_restarts as usize >= RESTARTS_MAX {
            return Err(fail(job, status::ERR_ABI, detail::STATE, m, 0, 0));
        }
        job.restarts[job.blk_restarts as usize] = job.blk_len;
        job.blk_restarts += 1;
        job.blk_since_restart = 0;
        0
    } else if job.blk_entries == 0 {
        0
    } else {
        let last = &job.out_last_key[..job.out_last_len as usize];
        let key = head_key(&job.runs[m as usize]);
        last.iter().zip(key).take_while(|(a, b)| a == b).count()
    };
    let run = &job.runs[m as usize];
    let key_len = run.key_len as usize;
    let non_shared = key_len - shared;
    let (value_off, value_len) = (run.value_off as usize, run.value_len as usize);
    let mut pos = (job.out_len + job.blk_len) as usize;
    let start = pos;
    pos += put_varint32(out.bytes, pos, shared as u32);
    pos += put_varint32(out.bytes, pos, non_shared as u32);
    pos += put_varint32(out.bytes, pos, value_len as u32);
    out.bytes[pos..pos + non_shared].copy_from_slice(&run.key[shared..key_len]);
    pos += non_shared;
    out.bytes[pos..pos + value_len].copy_from_slice(&window[value_off..value_off + value_len]);
    pos += value_len;
    job.out_last_key[shared..key_len].copy_from_slice(&run.key[shared..key_len]);
    job.out_last_len = run.key_len;

    let t = trailer(&run.key[..key_len]);
    job.blk_len += (pos - start) as u32;
    job.blk_entries += 1;
    job.blk_since_restart += 1;
    if t & 0xff == 0 {
        job.blk_deletions += 1;
    }
    job.blk_raw_key_bytes += key_len as u64;
    job.blk_raw_value_bytes += value_len as u64;
    job.blk_seq_min = job.blk_seq_min.min(t >> 8);
    job.blk_seq_max = job.blk_seq_max.max(t >> 8);
    job.entries_out += 1;
    Ok(())
}

/// Finishes the block being built: restart array, count, trailer, record.
fn finish_block(job: &mut Job, out: &mut Output<'_>) -> Result<(), u32> {
    let nr = job.blk_restarts;
    if nr == 0 || nr as usize > RESTARTS_MAX || job.num_records as usize >= RECORDS_MAX {
        return Err(fail(job, status::ERR_ABI, detail::STATE, NO_RUN, 0, 0));
    }
    let base = job.out_len as usize;
    let mut pos = base + job.blk_len as usize;
    for &r in &job.restarts[..nr as usize] {
        out.bytes[pos..pos + 4].copy_from_slice(&r.to_le_bytes());
        pos += 4;
    }
    out.bytes[pos..pos + 4].copy_from_slice(&nr.to_le_bytes());
    let size = job.blk_len + 4 * nr + 4;
    let end = base + size as usize;
    out.bytes[end] = 0;
    let crc = mask_crc(crc32c::crc32c(&out.bytes[base..=end]));
    out.bytes[end + 1..end + 5].copy_from_slice(&crc.to_le_bytes());

    let rec = &mut out.records[job.num_records as usize];
    rec.offset = job.out_len;
    rec.size = size;
    rec.flags = if job.file_bytes == 0 {
        RECORD_STARTS_FILE
    } else {
        0
    };
    rec.entries = job.blk_entries;
    rec.deletions = job.blk_deletions;
    rec.raw_key_bytes = job.blk_raw_key_bytes;
    rec.raw_value_bytes = job.blk_raw_value_bytes;
    rec.seq_min = job.blk_seq_min;
    rec.seq_max = job.blk_seq_max;
    let len = job.out_last_len as usize;
    rec.last_key_len = job.out_last_len;
    rec.last_key[..len].copy_from_slice(&job.out_last_key[..len]);

    job.num_records += 1;
    job.out_len = job.out_len + size + BLOCK_TRAILER_BYTES as u32;
    job.file_bytes += u64::from(size) + BLOCK_TRAILER_BYTES as u64;
    job.blocks_out += 1;
    job.blk_entries = 0;
    Ok(())
}
