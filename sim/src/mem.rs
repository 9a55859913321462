//! Memory regions: anonymous mappings (`mem_alloc`) as byte vectors, bounds-checked.

use std::collections::BTreeMap;

use resystance_traces::{Errno, MemId};

/// The most memory all live regions may hold together (a sim limit; beyond it `ENOMEM`).
pub const MEM_BYTES_MAX: usize = 4 << 30;

/// The live regions of the simulated process.
#[derive(Debug, Default)]
pub struct Regions {
    regions: BTreeMap<u32, Vec<u8>>,
    /// Regions an io_uring ring may touch (registered buffers, SQEs not yet reaped), with how
    /// many holds each has: they cannot be unmapped (`EBUSY`), as on the real kernel.
    pins: BTreeMap<u32, u32>,
    next_id: u32,
    bytes: usize,
}

impl Regions {
    /// A new zeroed region of `len` bytes (`EINVAL` for 0, `ENOMEM` past [`MEM_BYTES_MAX`]).
    pub fn alloc(&mut self, len: usize) -> Result<MemId, Errno> {
        if len == 0 {
            return Err(Errno::EINVAL);
        }
        match self.bytes.checked_add(len) {
            Some(total) if total <= MEM_BYTES_MAX => self.bytes = total,
            _ => return Err(Errno::ENOMEM),
        }
        let id = self.next_id;
        self.next_id = self.next_id.checked_add(1).ok_or(Errno::ENOMEM)?;
        self.regions.insert(id, vec![0; len]);
        Ok(MemId(id))
    }

    /// Unmaps a region (`EINVAL` if it is not live, `EBUSY` while pinned).
    pub fn free(&mut self, mem: MemId) -> Result<(), Errno> {
        if self.pins.contains_key(&mem.0) {
            return Err(Errno::EBUSY);
        }
        let region = self.regions.remove(&mem.0).ok_or(Errno::EINVAL)?;
        self.bytes -= region.len();
        Ok(())
    }

    /// `len` bytes of `mem` at `offset` (`EINVAL` when not live or out of bounds).
    pub fn slice(&self, mem: MemId, offset: usize, len: usize) -> Result<&[u8], Errno> {
        let region = self.regions.get(&mem.0).ok_or(Errno::EINVAL)?;
        let end = offset.checked_add(len).ok_or(Errno::EINVAL)?;
        region.get(offset..end).ok_or(Errno::EINVAL)
    }

    /// Mutable [`Regions::slice`].
    pub fn slice_mut(&mut self, mem: MemId, offset: usize, len: usize) -> Result<&mut [u8], Errno> {
        let region = self.regions.get_mut(&mem.0).ok_or(Errno::EINVAL)?;
        let end = offset.checked_add(len).ok_or(Errno::EINVAL)?;
        region.get_mut(offset..end).ok_or(Errno::EINVAL)
    }

    /// The length of a live region (`EINVAL` if it is not live).
    pub fn len_of(&self, mem: MemId) -> Result<usize, Errno> {
        self.regions.get(&mem.0).map(Vec::len).ok_or(Errno::EINVAL)
    }

    /// Keeps a live region mapped until [`Regions::unpin`].
    pub fn pin(&mut self, mem: MemId) {
        assert!(self.regions.contains_key(&mem.0), "pinned a dead region");
        *self.pins.entry(mem.0).or_insert(0) += 1;
    }

    /// Undoes one [`Regions::pin`].
    pub fn unpin(&mut self, mem: MemId) {
        let n = self
            .pins
            .get_mut(&mem.0)
            .expect("unpinned a region never pinned");
        *n -= 1;
        if *n == 0 {
            self.pins.remove(&mem.0);
        }
    }

    /// The process died: every region is gone (ids are not reused).
    pub fn clear(&mut self) {
        self.regions.clear();
        self.pins.clear();
        self.bytes = 0;
    }
}
