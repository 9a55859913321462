//! The log file format of the WAL and the MANIFEST (RocksDB's and LevelDB's legacy format).
//!
//! A log is a sequence of 32 KiB blocks. A record is split into fragments that never cross a
//! block boundary; each fragment has a 7-byte header: masked CRC32c (fixed32, over the type
//! byte and the payload), payload length (fixed16), type (FULL, FIRST, MIDDLE, LAST). A block
//! tail shorter than a header is zero-filled.

use std::path::Path;
use std::sync::Arc;

use resystance_traces::Kernel;

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

/// What reading a log found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct LogContents {
    /// Complete, checksum-verified records, in order.
    pub records: Vec<Vec<u8>>,
    /// Where reading stopped early and why: a torn or corrupt tail, or damage in the middle.
    /// Recovery keeps every record before it (point-in-time recovery, RocksDB's default).
    pub stopped_at: Option<(u64, String)>,
}

/// Parses a whole log file's bytes.
pub fn read_log(data: &[u8]) -> LogContents {
    let mut out = LogContents::default();
    let mut pending: Option<Vec<u8>> = None;
    let mut pos = 0usize;
    let mut record_start = 0usize;
    while pos < data.len() {
        let left_in_block = BLOCK_BYTES - pos % BLOCK_BYTES;
        if left_in_block < HEADER_BYTES {
            pos += left_in_block;
            continue;
        }
        if data.len() - pos < HEADER_BYTES {
            out.stopped_at = Some((pos as u64, "truncated fragment header".into()));
            return out;
        }
        let h = &data[pos..pos + HEADER_BYTES];
        let stored = decode_fixed32(h);
        let len = usize::from(u16::from_le_bytes([h[4], h[5]]));
        let kind = h[6];
        if stored == 0 && len == 0 && kind == 0 {
            // Zero fill: a preallocated or torn tail. Only zeros may follow.
            if data[pos..].iter().all(|&b| b == 0) {
                break;
            }
            out.stopped_at = Some((pos as u64, "zeroed header followed by data".into()));
            return out;
        }
        let end = pos + HEADER_BYTES + len;
        if len > left_in_block - HEADER_BYTES || end > data.len() {
            out.stopped_at = Some((pos as u64, format!("fragment of {len} bytes overruns")));
            return out;
        }
        let payload = &data[pos + HEADER_BYTES..end];
        if crc::unmask(stored) != crc::crc32c_parts(&[&[kind], payload]) {
            out.stopped_at = Some((pos as u64, "fragment checksum mismatch".into()));
            return out;
        }
        let fragment_ok = match (kind, pending.as_mut()) {
            (FULL, None) => {
                out.records.push(payload.to_vec());
                true
            }
            (FIRST, None) => {
                record_start = pos;
                pending = Some(payload.to_vec());
                true
            }
            (MIDDLE, Some(buf)) => {
                buf.extend_from_slice(payload);
                true
            }
            (LAST, Some(buf)) => {
                buf.extend_from_slice(payload);
                out.records.push(pending.take().expect("pending record"));
                true
            }
            _ => false,
        };
        if !fragment_ok {
            out.stopped_at = Some((pos as u64, format!("unexpected fragment type {kind}")));
            return out;
        }
        pos = end;
    }
    if pending.is_some() {
        out.stopped_at = Some((record_start as u64, "record torn at end of log".into()));
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
}
