//! The log file format of the WAL and the MANIFEST (RocksDB's and LevelDB's legacy format).
//!
//! A log is a sequence of 32 KiB blocks. A record is split into fragments that never cross a
//! block boundary; each fragment has a 7-byte header: masked CRC32c (fixed32, over the type
//! byte and the payload), payload length (fixed16), type (FULL, FIRST, MIDDLE, LAST). A block
//! tail shorter than a header is zero-filled.

use std::path::Path;
use std::sync::Arc;

use resystance_traces::Kernel;
use serde::{Deserialize, Serialize};

use crate::coding::decode_fixed32;
use crate::crc;
use crate::error::Result;
use crate::file::{AppendFile, Sink};

/// Bytes in a log block.
pub const BLOCK_BYTES: usize = 32 * 1024;
/// Bytes in a fragment header.
pub const HEADER_BYTES: usize = 7;

const FULL: u8 = 1;
const FIRST: u8 = 2;
const MIDDLE: u8 = 3;
const LAST: u8 = 4;

/// Appends records to a log file.
#[derive(Debug)]
pub struct LogWriter {
    file: AppendFile,
    block_offset: usize,
}

impl LogWriter {
    /// Creates a new log at `path`.
    pub fn create(kernel: &Arc<dyn Kernel>, path: &Path) -> Result<LogWriter> {
        Ok(LogWriter {
            file: AppendFile::create(kernel, path, 64 * 1024)?,
            block_offset: 0,
        })
    }

    /// Appends one record and hands it to the kernel (one `pwrite` for records up to 64 KiB),
    /// so it survives a process crash; `sync` makes it survive a power loss.
    pub fn add_record(&mut self, record: &[u8], sync: bool) -> Result<()> {
        let mut rest = record;
        let mut first = true;
        loop {
            let left_in_block = BLOCK_BYTES - self.block_offset;
            if left_in_block < HEADER_BYTES {
                self.file.append(&[0u8; HEADER_BYTES][..left_in_block])?;
                self.block_offset = 0;
            }
            let avail = BLOCK_BYTES - self.block_offset - HEADER_BYTES;
            let take = avail.min(rest.len());
            let last = take == rest.len();
            let kind = match (first, last) {
                (true, true) => FULL,
                (true, false) => FIRST,
                (false, true) => LAST,
                (false, false) => MIDDLE,
            };
            self.emit(kind, &rest[..take])?;
            rest = &rest[take..];
            first = false;
            if last {
                break;
            }
        }
        if sync {
            self.file.sync(false)
        } else {
            self.file.flush()
        }
    }

    fn emit(&mut self, kind: u8, payload: &[u8]) -> Result<()> {
        let len = u16::try_from(payload.len()).expect("fragment fits a block");
        let crc = crc::mask(crc::crc32c_parts(&[&[kind], payload]));
        let mut header = [0u8; HEADER_BYTES];
        header[..4].copy_from_slice(&crc.to_le_bytes());
        header[4..6].copy_from_slice(&len.to_le_bytes());
        header[6] = kind;
        self.file.append(&header)?;
        self.file.append(payload)?;
        self.block_offset += HEADER_BYTES + payload.len();
        debug_assert!(self.block_offset <= BLOCK_BYTES);
        Ok(())
    }

    /// `fdatasync` the log (`fsync` when `metadata`).
    pub fn sync(&mut self, metadata: bool) -> Result<()> {
        self.file.sync(metadata)
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.file.len()
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.file.is_empty()
    }
}

/// What a damaged stretch of a log looks like from its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DamageKind {
    /// The log ends inside a record (a cut header, a fragment cut short, a record without its
    /// last fragment) or in zeros, with no complete fragment after: what a write cut short by
    /// a crash leaves. A flipped bit in the last fragment's length looks the same.
    Torn,
    /// Bytes no write leaves: a checksum mismatch, a length crossing its block, a zeroed header
    /// followed by data, fragments out of order, or a cut-short fragment with a complete one
    /// after it.
    Corrupt,
}

/// A stretch of a log that yields no record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogDamage {
    /// Offset of the bad fragment (of the cut-short record, for a torn tail): what an error
    /// names.
    pub offset: u64,
    /// The first byte dropped with it: the start of the record it belongs to (<= `offset`).
    pub dropped_from: u64,
    /// Where reading resumed after it: the next block, past the fragment, or the log's end.
    pub resumed_at: u64,
    /// Torn tail or corruption.
    pub kind: DamageKind,
    /// What is wrong, in words.
    pub what: String,
}

/// One complete record and where it starts in the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRecord {
    /// Offset of its first fragment's header.
    pub offset: u64,
    /// The record's bytes.
    pub data: Vec<u8>,
}

/// Everything a log holds: every record that checks out, and every damaged stretch, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogScan {
    /// Complete, checksum-verified records, in order.
    pub records: Vec<LogRecord>,
    /// Damaged stretches, in order; reading resumes after each (at the next block when a
    /// fragment's length cannot be trusted), so records after damage are still found.
    pub damage: Vec<LogDamage>,
}

/// What reading a log up to its first damage found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct LogContents {
    /// Complete, checksum-verified records before the first damage, in order.
    pub records: Vec<Vec<u8>>,
    /// Where reading stopped early and why: a torn or corrupt tail, or damage in the middle.
    /// The MANIFEST keeps every record before it (point-in-time recovery).
    pub stopped_at: Option<(u64, String)>,
}

/// Parses a whole log file's bytes up to its first damage (point-in-time recovery).
pub fn read_log(data: &[u8]) -> LogContents {
    let scan = scan_log(data);
    let first = scan.damage.first();
    let before = first.map_or(u64::MAX, |d| d.dropped_from);
    LogContents {
        records: scan
            .records
            .into_iter()
            .take_while(|r| r.offset < before)
            .map(|r| r.data)
            .collect(),
        stopped_at: first.map(|d| (d.offset, d.what.clone())),
    }
}

/// The log's end offset, as `u64`.
fn at(pos: usize) -> u64 {
    pos as u64
}

/// Whether a complete, checksum-verified fragment of a known type starts at `q`.
fn fragment_at(data: &[u8], q: usize) -> bool {
    let left_in_block = BLOCK_BYTES - q % BLOCK_BYTES;
    if left_in_block < HEADER_BYTES || data.len().saturating_sub(q) < HEADER_BYTES {
        return false;
    }
    let h = &data[q..q + HEADER_BYTES];
    let len = usize::from(u16::from_le_bytes([h[4], h[5]]));
    let end = q + HEADER_BYTES + len;
    (FULL..=LAST).contains(&h[6])
        && len <= left_in_block - HEADER_BYTES
        && end <= data.len()
        && crc::unmask(decode_fixed32(h))
            == crc::crc32c_parts(&[&h[6..7], &data[q + HEADER_BYTES..end]])
}

/// Where the fragment after one ending at `end` starts: past a block tail too short for a
/// header.
fn next_fragment(end: usize) -> usize {
    let left_in_block = BLOCK_BYTES - end % BLOCK_BYTES;
    if left_in_block < HEADER_BYTES {
        end + left_in_block
    } else {
        end
    }
}

/// Whether a complete, checksum-verified fragment starts anywhere in `data[from..]`: after a
/// cut-short fragment, one means the log did not end there (a damaged length, not a torn
/// write). `data[from..]` is the rest of one block, so at most a block is tried.
fn complete_fragment_after(data: &[u8], from: usize) -> bool {
    debug_assert!(data.len() - from <= BLOCK_BYTES);
    (from..data.len()).any(|q| fragment_at(data, q))
}

/// Parses a whole log file's bytes: every record that checks out and every damaged stretch.
/// After a fragment whose checksum fails, reading resumes past it when a verified fragment
/// starts there, else (its length cannot be trusted) at the next block, as RocksDB's reader
/// always does.
pub fn scan_log(data: &[u8]) -> LogScan {
    let mut out = LogScan::default();
    // The record being assembled: where it starts, its bytes so far.
    let mut pending: Option<(usize, Vec<u8>)> = None;
    let mut pos = 0usize;
    // Loop bound: every iteration advances `pos` by at least one byte or ends the scan.
    while pos < data.len() {
        let left_in_block = BLOCK_BYTES - pos % BLOCK_BYTES;
        if left_in_block < HEADER_BYTES {
            // The writer zero-fills a block tail too short for a header.
            pos += left_in_block;
            continue;
        }
        let next_block = (pos - pos % BLOCK_BYTES + BLOCK_BYTES).min(data.len());
        let damage = |out: &mut LogScan,
                      pending: &mut Option<(usize, Vec<u8>)>,
                      resumed_at: usize,
                      kind: DamageKind,
                      what: String| {
            let dropped_from = pending.take().map_or(pos, |(start, _)| start);
            out.damage.push(LogDamage {
                offset: at(pos),
                dropped_from: at(dropped_from),
                resumed_at: at(resumed_at),
                kind,
                what,
            });
        };
        if data.len() - pos < HEADER_BYTES {
            let what = format!(
                "fragment header cut short by the end of the log ({} of {HEADER_BYTES} bytes)",
                data.len() - pos
            );
            damage(&mut out, &mut pending, data.len(), DamageKind::Torn, what);
            return out;
        }
        let h = &data[pos..pos + HEADER_BYTES];
        let stored = decode_fixed32(h);
        let len = usize::from(u16::from_le_bytes([h[4], h[5]]));
        let kind = h[6];
        if stored == 0 && len == 0 && kind == 0 {
            if data[pos..].iter().all(|&b| b == 0) {
                // Preallocated or extended but never written: the write was cut short.
                let what = format!("zero-filled tail of {} bytes", data.len() - pos);
                damage(&mut out, &mut pending, data.len(), DamageKind::Torn, what);
                return out;
            }
            let what = "zeroed fragment header followed by data".to_string();
            damage(
                &mut out,
                &mut pending,
                next_block,
                DamageKind::Corrupt,
                what,
            );
            pos = next_block;
            continue;
        }
        if len > left_in_block - HEADER_BYTES {
            let what = format!(
                "fragment length {len} crosses the block boundary {} bytes on",
                left_in_block - HEADER_BYTES
            );
            damage(
                &mut out,
                &mut pending,
                next_block,
                DamageKind::Corrupt,
                what,
            );
            pos = next_block;
            continue;
        }
        let end = pos + HEADER_BYTES + len;
        if end > data.len() {
            let what = format!(
                "fragment of {len} bytes cut short by the end of the log at {}",
                data.len()
            );
            if complete_fragment_after(data, pos + 1) {
                let what = format!("{what}, yet a complete fragment follows");
                damage(
                    &mut out,
                    &mut pending,
                    data.len(),
                    DamageKind::Corrupt,
                    what,
                );
            } else {
                damage(&mut out, &mut pending, data.len(), DamageKind::Torn, what);
            }
            return out;
        }
        let payload = &data[pos + HEADER_BYTES..end];
        if crc::unmask(stored) != crc::crc32c_parts(&[&[kind], payload]) {
            // The length may be the damaged part: trust it only when a verified fragment
            // starts where it says this one ends.
            let resume = if fragment_at(data, next_fragment(end)) {
                end
            } else {
                next_block
            };
            let what = "fragment checksum mismatch".to_string();
            damage(&mut out, &mut pending, resume, DamageKind::Corrupt, what);
            pos = resume;
            continue;
        }
        // The checksum holds, so the length does: an out-of-order fragment costs only itself
        // (and the record it interrupts).
        match (kind, pending.as_mut()) {
            (FULL, None) => out.records.push(LogRecord {
                offset: at(pos),
                data: payload.to_vec(),
            }),
            (FIRST, None) => pending = Some((pos, payload.to_vec())),
            (MIDDLE, Some((_, buf))) => buf.extend_from_slice(payload),
            (LAST, Some((_, buf))) => {
                buf.extend_from_slice(payload);
                let (start, data) = pending.take().expect("pending record");
                out.records.push(LogRecord {
                    offset: at(start),
                    data,
                });
            }
            (FULL | FIRST, Some(&mut (start, _))) => {
                // The record in progress never got its last fragment; this one starts anew.
                let what = format!("record at {start} ends without its last fragment");
                damage(&mut out, &mut pending, pos, DamageKind::Corrupt, what);
                continue;
            }
            (MIDDLE | LAST, None) => {
                // The rest of a record whose start was lost: part of the damage before it when
                // reading resumed right here, else damage of its own.
                match out.damage.last_mut() {
                    Some(d) if d.resumed_at == at(pos) => d.resumed_at = at(end),
                    _ => {
                        let what = format!("fragment of type {kind} without a first fragment");
                        damage(&mut out, &mut pending, end, DamageKind::Corrupt, what);
                    }
                }
            }
            _ => {
                let what = format!("unknown fragment type {kind}");
                damage(&mut out, &mut pending, end, DamageKind::Corrupt, what);
            }
        }
        pos = end;
    }
    if let Some((start, _)) = pending {
        out.damage.push(LogDamage {
            offset: at(start),
            dropped_from: at(start),
            resumed_at: at(data.len()),
            kind: DamageKind::Torn,
            what: "record cut short by the end of the log (no last fragment)".into(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use resystance_real_kernel::RealKernel;

    fn write_records(records: &[Vec<u8>]) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let kernel: Arc<dyn Kernel> = Arc::new(RealKernel::new());
        let path = dir.path().join("000001.log");
        let mut w = LogWriter::create(&kernel, &path).unwrap();
        for r in records {
            w.add_record(r, false).unwrap();
        }
        w.sync(true).unwrap();
        drop(w);
        crate::file::read_whole(&kernel, &path).unwrap()
    }

    fn sample() -> Vec<Vec<u8>> {
        vec![
            b"small".to_vec(),
            vec![],
            vec![7u8; BLOCK_BYTES - 2 * HEADER_BYTES - 5 - 3], // leaves a < 7-byte tail
            vec![1u8; 3 * BLOCK_BYTES + 100],                  // FIRST, MIDDLE.., LAST
            b"after".to_vec(),
        ]
    }

    #[test]
    fn records_round_trip_across_blocks() {
        let records = sample();
        let data = write_records(&records);
        let got = read_log(&data);
        assert_eq!(got.stopped_at, None);
        assert_eq!(got.records, records);
    }

    #[test]
    fn a_torn_tail_keeps_every_complete_record_before_it() {
        let records = sample();
        let data = write_records(&records);
        for cut in (0..data.len()).step_by(997) {
            let got = read_log(&data[..cut]);
            assert!(got.records.len() <= records.len());
            assert_eq!(
                got.records[..],
                records[..got.records.len()],
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn corruption_is_detected_not_returned() {
        let records = sample();
        let data = write_records(&records);
        for pos in (0..data.len()).step_by(101) {
            let mut bad = data.clone();
            bad[pos] ^= 0x20;
            let got = read_log(&bad);
            // Every record returned is one that was written, in order.
            assert_eq!(
                got.records[..],
                records[..got.records.len()],
                "flip at {pos}"
            );
            if got.records.len() < records.len() {
                assert!(got.stopped_at.is_some());
            }
        }
    }

    /// Offsets where each of `records` starts in `data` (as the scan reports them).
    fn offsets(data: &[u8]) -> Vec<u64> {
        scan_log(data).records.iter().map(|r| r.offset).collect()
    }

    #[test]
    fn a_cut_anywhere_is_a_torn_tail_never_corruption() {
        let records = sample();
        let data = write_records(&records);
        for cut in (1..data.len()).step_by(89) {
            let scan = scan_log(&data[..cut]);
            let kept = scan.records.len();
            assert_eq!(
                scan.records.iter().map(|r| &r.data).collect::<Vec<_>>(),
                records[..kept].iter().collect::<Vec<_>>(),
                "cut at {cut}"
            );
            // Either the cut fell between records, or one torn stretch ends the log there.
            assert!(scan.damage.len() <= 1, "cut at {cut}: {:?}", scan.damage);
            if let Some(d) = scan.damage.first() {
                assert_eq!(d.kind, DamageKind::Torn, "cut at {cut}: {d:?}");
                assert_eq!(d.resumed_at, cut as u64);
                assert!(d.dropped_from <= d.offset && d.offset < cut as u64);
                // The dropped record starts where the last kept one ends.
                let after_kept = offsets(&data).get(kept).copied();
                assert_eq!(Some(d.dropped_from), after_kept, "cut at {cut}");
            }
        }
        let zeros = [data.clone(), vec![0u8; 1000]].concat();
        let scan = scan_log(&zeros);
        assert_eq!(scan.records.len(), records.len());
        assert_eq!(scan.damage.len(), 1);
        assert_eq!(scan.damage[0].kind, DamageKind::Torn);
        assert_eq!(scan.damage[0].offset, data.len() as u64);
    }

    #[test]
    fn a_flipped_checksum_costs_one_record_when_the_length_holds() {
        // 40 records of 2,000 bytes: several per block.
        let records: Vec<Vec<u8>> = (0..40u8).map(|i| vec![i; 2000]).collect();
        let data = write_records(&records);
        let starts = offsets(&data);
        // A byte inside the payload of record 3 (block 0): its length still leads to record 4.
        let mut bad = data.clone();
        bad[starts[3] as usize + HEADER_BYTES + 10] ^= 0x01;
        let scan = scan_log(&bad);
        assert_eq!(scan.damage.len(), 1, "{:?}", scan.damage);
        let d = &scan.damage[0];
        assert_eq!(d.kind, DamageKind::Corrupt);
        assert_eq!(
            (d.offset, d.dropped_from, d.resumed_at),
            (starts[3], starts[3], starts[4])
        );
        let kept: Vec<u64> = scan.records.iter().map(|r| r.offset).collect();
        let want: Vec<u64> = starts
            .iter()
            .filter(|&&s| s != starts[3])
            .copied()
            .collect();
        assert_eq!(kept, want);
        // The MANIFEST's point-in-time reading keeps what comes before the damage only.
        let pit = read_log(&bad);
        assert_eq!(pit.records, records[..3].to_vec());
        assert_eq!(pit.stopped_at.unwrap().0, starts[3]);
    }

    #[test]
    fn a_flipped_length_resumes_at_the_next_block() {
        let records: Vec<Vec<u8>> = (0..40u8).map(|i| vec![i; 2000]).collect();
        let data = write_records(&records);
        let starts = offsets(&data);
        // Record 3's length 2000 made 2001: the checksum fails and no fragment starts a byte
        // later, so reading goes on at the next block, past the tail of the record crossing it.
        let mut bad = data.clone();
        bad[starts[3] as usize + 4] ^= 0x01;
        let scan = scan_log(&bad);
        assert_eq!(scan.damage.len(), 1, "{:?}", scan.damage);
        let d = &scan.damage[0];
        assert_eq!((d.kind, d.offset), (DamageKind::Corrupt, starts[3]));
        let crossing = starts
            .iter()
            .rposition(|&s| s < BLOCK_BYTES as u64)
            .unwrap();
        assert_eq!(d.resumed_at, starts[crossing + 1]);
        let kept: Vec<u64> = scan.records.iter().map(|r| r.offset).collect();
        let want: Vec<u64> = starts[..3]
            .iter()
            .chain(&starts[crossing + 1..])
            .copied()
            .collect();
        assert_eq!(kept, want);
    }

    #[test]
    fn damage_to_the_last_record_is_corruption_unless_its_length_is_hit() {
        let records: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 300]).collect();
        let data = write_records(&records);
        let last = *offsets(&data).last().unwrap() as usize;
        // A payload byte of the last record: a complete fragment with a bad checksum is never
        // what a cut-short write leaves.
        let mut bad = data.clone();
        bad[last + HEADER_BYTES + 100] ^= 0x80;
        let scan = scan_log(&bad);
        assert_eq!(scan.records.len(), 4);
        assert_eq!(scan.damage.len(), 1);
        assert_eq!(scan.damage[0].kind, DamageKind::Corrupt);
        assert_eq!(scan.damage[0].offset, last as u64);
        // Its length grown past the end of the log: indistinguishable from a torn write.
        let mut bad = data.clone();
        bad[last + 5] ^= 0x10; // length 300 + 4096
        let scan = scan_log(&bad);
        assert_eq!(scan.records.len(), 4);
        assert_eq!(scan.damage[0].kind, DamageKind::Torn);
        assert_eq!(scan.damage[0].offset, last as u64);
    }

    #[test]
    fn a_cut_short_fragment_with_a_complete_one_after_it_is_corruption() {
        let records: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 300]).collect();
        let data = write_records(&records);
        let starts = offsets(&data);
        // Record 3's length grown so that it overruns the end: record 4 still follows, intact.
        let mut bad = data.clone();
        bad[starts[3] as usize + 5] ^= 0x04; // 300 + 1024
        let scan = scan_log(&bad);
        assert_eq!(scan.records.len(), 3);
        assert_eq!(scan.damage.len(), 1);
        let d = &scan.damage[0];
        assert_eq!((d.kind, d.offset), (DamageKind::Corrupt, starts[3]));
        assert!(d.what.contains("complete fragment follows"), "{}", d.what);
    }

    #[test]
    fn a_length_crossing_its_block_is_corruption() {
        let records: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 300]).collect();
        let data = write_records(&records);
        let starts = offsets(&data);
        let mut bad = data.clone();
        bad[starts[1] as usize + 5] ^= 0x80; // 300 + 32768
        let scan = scan_log(&bad);
        assert_eq!(scan.records.len(), 1);
        let d = &scan.damage[0];
        assert_eq!((d.kind, d.offset), (DamageKind::Corrupt, starts[1]));
        assert!(d.what.contains("crosses the block boundary"), "{}", d.what);
        assert_eq!(d.resumed_at, data.len() as u64);
    }
}
