//! RINGBUF: the kernel's multi-producer, single-consumer ring of variable-length records
//! (`kernel/bpf/ringbuf.c`), with one producer (the program) and the host as consumer.
//!
//! The data area is `max_entries` bytes (a power of two and a multiple of the 4 KiB page, as
//! `ringbuf_map_alloc` demands, else EINVAL). Each record is an 8-byte header (`len` with the
//! BUSY bit 31 and DISCARD bit 30, then a page offset we leave 0) followed by the data, and
//! takes `round_up(len + 8, 8)` bytes. The kernel maps the data pages twice in a row so a record
//! that wraps past the end is still contiguous for the program; we give the region a second
//! half of the same size instead: the program writes a wrapping record straight on into it,
//! and submit/discard copy the part past the end back to the start, where the consumer reads.
//! Until then the second half may hold stale bytes of earlier records (the kernel's reserved
//! memory is not cleared either).
//!
//! The authoritative record list lives here, not in the headers: the headers are written for
//! fidelity, but a program that scribbles over one cannot confuse the consumer.

use std::collections::VecDeque;

use super::{errno, MapError, MapSpec};

/// Bytes of a record header (`BPF_RINGBUF_HDR_SZ`).
pub const RINGBUF_HDR_BYTES: u64 = 8;
/// Largest data area the vm accepts (256 MiB; the region holds twice this).
pub const RINGBUF_DATA_BYTES_MAX: u32 = 256 << 20;
/// Largest record (`RINGBUF_MAX_RECORD_SZ = UINT_MAX / 4`).
const RINGBUF_RECORD_BYTES_MAX: u64 = u32::MAX as u64 / 4;
/// The kernel's page size on this machine kind; data areas must be a multiple of it.
const PAGE_BYTES: u32 = 4096;
const BUSY_BIT: u32 = 1 << 31;
const DISCARD_BIT: u32 = 1 << 30;
/// `BPF_F_NUMA_NODE`, the only creation flag `RINGBUF_CREATE_FLAG_MASK` allows.
const BPF_F_NUMA_NODE: u32 = 1 << 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RecordState {
    Busy,
    Submitted,
    Discarded,
}

#[derive(Debug, Clone, Copy)]
struct Record {
    /// Producer position of the header (monotonic, not masked).
    pos: u64,
    /// Data bytes (without header or padding).
    len: u32,
    state: RecordState,
}

#[derive(Debug, Clone)]
pub(super) struct RingState {
    data_bytes: u64,
    consumer_pos: u64,
    producer_pos: u64,
    /// Reserved and not yet consumed records, oldest first (at most `data_bytes / 8`).
    records: VecDeque<Record>,
}

fn record_bytes(len: u64) -> u64 {
    (len + RINGBUF_HDR_BYTES).next_multiple_of(8)
}

impl RingState {
    pub(super) fn create(spec: &MapSpec) -> Result<Self, MapError> {
        let fail = |why: String| Err(MapError::new(errno::EINVAL, &spec.name, why));
        if spec.key_size != 0 || spec.value_size != 0 {
            return fail("ring buffer needs key_size and value_size 0".to_string());
        }
        if spec.map_flags & !BPF_F_NUMA_NODE != 0 {
            return fail(format!(
                "flags {:#x} not allowed for a ring buffer",
                spec.map_flags
            ));
        }
        let size = spec.max_entries;
        if !size.is_power_of_two() || size % PAGE_BYTES != 0 {
            return fail(format!(
                "max_entries {size} is not a power of two multiple of the {PAGE_BYTES}-byte page"
            ));
        }
        if size > RINGBUF_DATA_BYTES_MAX {
            return Err(MapError::new(
                errno::E2BIG,
                &spec.name,
                format!("data area of {size} bytes exceeds the vm's {RINGBUF_DATA_BYTES_MAX}"),
            ));
        }
        Ok(RingState {
            data_bytes: u64::from(size),
            consumer_pos: 0,
            producer_pos: 0,
            records: VecDeque::new(),
        })
    }

    fn mask(&self) -> u64 {
        self.data_bytes - 1
    }

    /// `__bpf_ringbuf_reserve`: room for `size` data bytes, or `None`.
    pub(super) fn reserve(&mut self, values: &mut [u8], size: u64) -> Option<usize> {
        debug_assert_eq!(values.len() as u64, 2 * self.data_bytes);
        if size > RINGBUF_RECORD_BYTES_MAX {
            return None;
        }
        let len = record_bytes(size);
        if len > self.data_bytes {
            return None;
        }
        let new_producer = self.producer_pos + len;
        // The kernel also bounds by the oldest still-busy record; busy records are never
        // consumed, so the consumer position is the tighter bound here.
        if new_producer - self.consumer_pos > self.mask() {
            return None;
        }
        let header_at = (self.producer_pos & self.mask()) as usize;
        let len32 = u32::try_from(size).expect("bounded by RINGBUF_RECORD_BYTES_MAX");
        values[header_at..header_at + 4].copy_from_slice(&(len32 | BUSY_BIT).to_le_bytes());
        values[header_at + 4..header_at + 8].fill(0);
        self.records.push_back(Record {
            pos: self.producer_pos,
            len: len32,
            state: RecordState::Busy,
        });
        self.producer_pos = new_producer;
        Some(header_at + RINGBUF_HDR_BYTES as usize)
    }

    /// `bpf_ringbuf_commit`: submit or discard the busy record whose data is at `data_offset`.
    pub(super) fn commit(
        &mut self,
        values: &mut [u8],
        data_offset: usize,
        discard: bool,
    ) -> Result<(), String> {
        let mask = self.mask();
        let record = self
            .records
            .iter_mut()
            .find(|r| (r.pos & mask) as usize + RINGBUF_HDR_BYTES as usize == data_offset)
            .filter(|r| r.state == RecordState::Busy)
            .ok_or_else(|| {
                format!("no reserved, uncommitted record has its data at offset {data_offset}")
            })?;
        record.state = if discard {
            RecordState::Discarded
        } else {
            RecordState::Submitted
        };
        let header_at = data_offset - RINGBUF_HDR_BYTES as usize;
        let header = record.len | if discard { DISCARD_BIT } else { 0 };
        values[header_at..header_at + 4].copy_from_slice(&header.to_le_bytes());
        // Fold the part written past the data area into its start (the double mapping).
        let end = data_offset + record.len as usize;
        let size = self.data_bytes as usize;
        if end > size {
            values.copy_within(size..end, 0);
        }
        Ok(())
    }

    /// The next submitted record, skipping discarded ones; stops at a busy one.
    pub(super) fn consume(&mut self, values: &[u8]) -> Option<Vec<u8>> {
        while let Some(&record) = self.records.front() {
            if record.state == RecordState::Busy {
                return None;
            }
            self.records.pop_front();
            self.consumer_pos = record.pos + record_bytes(u64::from(record.len));
            if record.state == RecordState::Discarded {
                continue;
            }
            let size = self.data_bytes as usize;
            let start = ((record.pos + RINGBUF_HDR_BYTES) & self.mask()) as usize;
            let len = record.len as usize;
            let first = len.min(size - start);
            let mut data = values[start..start + first].to_vec();
            data.extend_from_slice(&values[..len - first]);
            return Some(data);
        }
        None
    }
}
