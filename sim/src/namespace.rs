//! The NVMe namespace the file system lives on: a journal region at its start and a
//! deterministic allocator of 4 KiB blocks for file extents (sim/README.md, "Files as extents",
//! states the policy for users).
//!
//! The policy, in the spirit of ext4's block allocator but without its heuristics:
//! * a file that grows takes the blocks right after its last extent when they are free (so a
//!   file written alone is one extent, and its sequential reads stripe as one request);
//! * otherwise a new extent starts at the lowest free 1 MiB boundary with room, so files
//!   written in turn (a WAL and a table) each grow contiguously instead of interleaving
//!   block by block; when no such boundary is left, at the lowest free block;
//! * freed blocks (unlink, truncation) return to the free map, merged with their neighbours,
//!   and are reused lowest address first;
//! * nothing depends on time or randomness: the same calls give the same addresses.

use std::collections::BTreeMap;

/// Bytes of one allocation block (ext4's block, the page size).
pub const BLOCK_BYTES: u64 = 4096;
/// The journal's region, at device address 0: journal writes cycle through its blocks.
pub const JOURNAL_BYTES: u64 = 1 << 20;
/// New extents start at a multiple of this when a free one with room exists.
pub const EXTENT_ALIGN_BYTES: u64 = 1 << 20;
/// The namespace's size unless [`crate::SimConfig::namespace_bytes`] says otherwise: 1 TiB,
/// far beyond what a simulated run holds (the device's size for ENOSPC is the fault
/// profile's `capacity_bytes`).
pub const NAMESPACE_BYTES_DEFAULT: u64 = 1 << 40;

const JOURNAL_BLOCKS: u64 = JOURNAL_BYTES / BLOCK_BYTES;
const ALIGN_BLOCKS: u64 = EXTENT_ALIGN_BYTES / BLOCK_BYTES;
const _: () = assert!(JOURNAL_BYTES % BLOCK_BYTES == 0 && EXTENT_ALIGN_BYTES % BLOCK_BYTES == 0);
const _: () = assert!(
    JOURNAL_BYTES % EXTENT_ALIGN_BYTES == 0,
    "data starts aligned"
);

/// A run of blocks on the device: `blocks` blocks from block `start`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockRun {
    /// First block (device address / [`BLOCK_BYTES`]).
    pub start: u64,
    /// Blocks in the run (> 0).
    pub blocks: u64,
}

/// The namespace's blocks: which are free, and where the journal writes next.
#[derive(Debug)]
pub struct Namespace {
    /// Blocks of data area and journal together.
    total_blocks: u64,
    /// Free runs: start block → blocks; disjoint, never touching (merged).
    free: BTreeMap<u64, u64>,
    free_blocks: u64,
    /// The journal block the next journal write goes to.
    journal_next: u64,
}

impl Namespace {
    /// An empty namespace of `bytes` (rounded down to blocks); panics unless it holds the
    /// journal and at least one data block.
    pub fn new(bytes: u64) -> Namespace {
        let total_blocks = bytes / BLOCK_BYTES;
        assert!(
            total_blocks > JOURNAL_BLOCKS,
            "a namespace of {bytes} bytes does not hold the {JOURNAL_BYTES}-byte journal and data"
        );
        let data = total_blocks - JOURNAL_BLOCKS;
        Namespace {
            total_blocks,
            free: BTreeMap::from([(JOURNAL_BLOCKS, data)]),
            free_blocks: data,
            journal_next: 0,
        }
    }

    /// Data blocks not allocated.
    pub fn free_blocks(&self) -> u64 {
        self.free_blocks
    }

    /// The device address of the next journal write (one block), advancing the journal's
    /// head (a circular log).
    pub fn journal_write(&mut self) -> u64 {
        let at = self.journal_next * BLOCK_BYTES;
        self.journal_next = (self.journal_next + 1) % JOURNAL_BLOCKS;
        at
    }

    /// Allocates `blocks` for a file whose last extent ends just before block `goal` (`None`
    /// for a file without blocks), as the module docs say. Returns the runs in file order, or
    /// `None` (nothing allocated) when fewer blocks are free.
    pub fn allocate(&mut self, goal: Option<u64>, blocks: u64) -> Option<Vec<BlockRun>> {
        if blocks > self.free_blocks {
            return None;
        }
        let mut out: Vec<BlockRun> = Vec::new();
        let mut left = blocks;
        let mut goal = goal;
        while left > 0 {
            let (start, avail) = goal
                .and_then(|g| self.free.get(&g).map(|&n| (g, n)))
                .or_else(|| self.aligned_spot(left))
                .or_else(|| self.free.first_key_value().map(|(&s, &n)| (s, n)))
                .expect("free_blocks counts what the free map holds");
            let take = avail.min(left);
            self.take(start, take);
            match out.last_mut() {
                Some(last) if last.start + last.blocks == start => last.blocks += take,
                _ => out.push(BlockRun {
                    start,
                    blocks: take,
                }),
            }
            left -= take;
            goal = Some(start + take);
        }
        Some(out)
    }

    /// Returns a run to the free map.
    pub fn release(&mut self, run: BlockRun) {
        let (mut start, mut blocks) = (run.start, run.blocks);
        assert!(
            start >= JOURNAL_BLOCKS && start + blocks <= self.total_blocks,
            "released blocks lie in the data area"
        );
        if let Some((&s, &n)) = self.free.range(..start).next_back() {
            assert!(s + n <= start, "block {start} released twice");
            if s + n == start {
                self.free.remove(&s);
                start = s;
                blocks += n;
            }
        }
        if let Some((&s, _)) = self.free.range(start..).next() {
            assert!(s >= start + blocks, "block {s} released twice");
        }
        if let Some(n) = self.free.remove(&(start + blocks)) {
            blocks += n;
        }
        self.free.insert(start, blocks);
        self.free_blocks += run.blocks;
    }

    /// The lowest free extent-aligned block with `min(want, ALIGN_BLOCKS)` free blocks from
    /// it, and how many are free there.
    fn aligned_spot(&self, want: u64) -> Option<(u64, u64)> {
        let room = want.min(ALIGN_BLOCKS);
        self.free.iter().find_map(|(&s, &n)| {
            let aligned = s.next_multiple_of(ALIGN_BLOCKS);
            let avail = (s + n).saturating_sub(aligned);
            (avail >= room).then_some((aligned, avail))
        })
    }

    /// Marks `[start, start + blocks)`, inside one free run, allocated.
    fn take(&mut self, start: u64, blocks: u64) {
        let (&s, &n) = self
            .free
            .range(..=start)
            .next_back()
            .expect("taken blocks are free");
        assert!(start + blocks <= s + n, "taken blocks lie in one free run");
        self.free.remove(&s);
        if start > s {
            self.free.insert(s, start - s);
        }
        if s + n > start + blocks {
            self.free.insert(start + blocks, s + n - start - blocks);
        }
        self.free_blocks -= blocks;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB_BLOCKS: u64 = ALIGN_BLOCKS;

    fn run(start: u64, blocks: u64) -> BlockRun {
        BlockRun { start, blocks }
    }

    #[test]
    fn a_growing_file_stays_contiguous_and_files_in_turn_do_not_interleave() {
        let mut ns = Namespace::new(1 << 30);
        let data = JOURNAL_BLOCKS;
        assert_eq!(ns.allocate(None, 3), Some(vec![run(data, 3)]));
        // Another file starts at the next free 1 MiB boundary, not right after the first.
        assert_eq!(ns.allocate(None, 1), Some(vec![run(data + MIB_BLOCKS, 1)]));
        // The first grows where it ended.
        assert_eq!(ns.allocate(Some(data + 3), 2), Some(vec![run(data + 3, 2)]));
        // Past its 1 MiB it meets the second file and continues at the next boundary.
        let rest = ns.allocate(Some(data + 5), MIB_BLOCKS).unwrap();
        assert_eq!(
            rest,
            vec![run(data + 5, MIB_BLOCKS - 5), run(data + 2 * MIB_BLOCKS, 5)]
        );
    }

    #[test]
    fn freed_blocks_merge_and_are_reused_lowest_first() {
        let mut ns = Namespace::new(16 << 20);
        let data = JOURNAL_BLOCKS;
        let free0 = ns.free_blocks();
        let a = ns.allocate(None, 10).unwrap();
        let b = ns.allocate(None, 10).unwrap();
        assert_eq!(ns.free_blocks(), free0 - 20);
        ns.release(a[0]);
        assert_eq!(ns.allocate(None, 4), Some(vec![run(data, 4)]), "reused");
        ns.release(run(data, 4));
        ns.release(b[0]);
        assert_eq!(ns.free_blocks(), free0);
        assert_eq!(ns.free.len(), 1, "everything merged back: {:?}", ns.free);
    }

    #[test]
    fn a_full_namespace_refuses_and_changes_nothing_and_unaligned_space_is_used_last() {
        let mut ns = Namespace::new(JOURNAL_BYTES + 2 * EXTENT_ALIGN_BYTES);
        let data = JOURNAL_BLOCKS;
        assert_eq!(ns.allocate(None, 1), Some(vec![run(data, 1)]));
        assert_eq!(ns.allocate(None, 1), Some(vec![run(data + MIB_BLOCKS, 1)]));
        // No 1 MiB boundary has room for a third file: the lowest free block.
        assert_eq!(ns.allocate(None, 2), Some(vec![run(data + 1, 2)]));
        let free = ns.free_blocks();
        assert_eq!(ns.allocate(None, free + 1), None);
        assert_eq!(ns.free_blocks(), free, "a refusal allocates nothing");
        let all = ns.allocate(None, free).unwrap();
        assert_eq!(all.iter().map(|r| r.blocks).sum::<u64>(), free);
        assert_eq!(ns.free_blocks(), 0);
    }

    #[test]
    fn the_journal_cycles_through_its_region() {
        let mut ns = Namespace::new(1 << 30);
        assert_eq!(ns.journal_write(), 0);
        assert_eq!(ns.journal_write(), BLOCK_BYTES);
        for _ in 2..JOURNAL_BLOCKS {
            ns.journal_write();
        }
        assert_eq!(ns.journal_write(), 0, "wraps at the region's end");
    }
}
