//! Memory regions: anonymous mappings (`mem_alloc`) as byte vectors, and mappings of BPF
//! maps (`bpf_map_mmap`) that alias the map's values in the BPF subsystem; bounds-checked.

use std::collections::BTreeMap;

use resystance_traces::{Errno, MemId};
use resystance_vm::kernel_bpf::MapId;

use crate::bpf::Bpf;

/// The most memory all live regions may hold together (a sim limit; beyond it `ENOMEM`).
pub const MEM_BYTES_MAX: usize = 4 << 30;

/// What a region's bytes are.
#[derive(Debug)]
enum Backing {
    /// Anonymous memory.
    Anon(Vec<u8>),
    /// The values of a BPF map, which live in [`Regions::bpf`]: every access goes there.
    Map(MapId),
}

/// The live regions of the simulated process, and the BPF subsystem whose maps' values back
/// the map mappings (kept together so that io_uring and user space reach both the same way).
#[derive(Debug)]
pub struct Regions {
    regions: BTreeMap<u32, Backing>,
    /// Regions an io_uring ring may touch (registered buffers, SQEs not yet reaped), with how
    /// many holds each has: they cannot be unmapped (`EBUSY`), as on the real kernel.
    pins: BTreeMap<u32, u32>,
    next_id: u32,
    /// Bytes of anonymous regions (map mappings are the maps' memory, not counted here).
    bytes: usize,
    /// Maps, programs and BPF descriptors.
    pub bpf: Bpf,
}

impl Regions {
    /// No regions, and `bpf` as the BPF subsystem.
    pub fn new(bpf: Bpf) -> Regions {
        Regions {
            regions: BTreeMap::new(),
            pins: BTreeMap::new(),
            next_id: 0,
            bytes: 0,
            bpf,
        }
    }

    fn next_id(&mut self) -> Result<MemId, Errno> {
        let id = self.next_id;
        self.next_id = self.next_id.checked_add(1).ok_or(Errno::ENOMEM)?;
        Ok(MemId(id))
    }

    /// A region aliasing the values of `map` (an open, mmapable array: checked by the
    /// caller); it keeps the map alive until unmapped.
    pub fn map_map(&mut self, map: MapId) -> Result<MemId, Errno> {
        let id = self.next_id()?;
        self.regions.insert(id.0, Backing::Map(map));
        self.bpf.mapped(map);
        Ok(id)
    }

    /// A new zeroed region of `len` bytes (`EINVAL` for 0, `ENOMEM` past [`MEM_BYTES_MAX`]).
    pub fn alloc(&mut self, len: usize) -> Result<MemId, Errno> {
        if len == 0 {
            return Err(Errno::EINVAL);
        }
        match self.bytes.checked_add(len) {
            Some(total) if total <= MEM_BYTES_MAX => self.bytes = total,
            _ => return Err(Errno::ENOMEM),
        }
        let id = match self.next_id() {
            Ok(id) => id,
            Err(e) => {
                self.bytes -= len;
                return Err(e);
            }
        };
        self.regions.insert(id.0, Backing::Anon(vec![0; len]));
        Ok(id)
    }

    /// Unmaps a region (`EINVAL` if it is not live, `EBUSY` while pinned).
    pub fn free(&mut self, mem: MemId) -> Result<(), Errno> {
        if self.pins.contains_key(&mem.0) {
            return Err(Errno::EBUSY);
        }
        match self.regions.remove(&mem.0).ok_or(Errno::EINVAL)? {
            Backing::Anon(bytes) => self.bytes -= bytes.len(),
            Backing::Map(map) => self.bpf.unmapped(map),
        }
        Ok(())
    }

    /// All bytes of a live region.
    fn bytes_of(&self, mem: MemId) -> Result<&[u8], Errno> {
        match self.regions.get(&mem.0).ok_or(Errno::EINVAL)? {
            Backing::Anon(bytes) => Ok(bytes),
            Backing::Map(map) => Ok(self
                .bpf
                .sub
                .map_values(*map)
                .expect("a mapped map stays open")),
        }
    }

    /// `len` bytes of `mem` at `offset` (`EINVAL` when not live or out of bounds).
    pub fn slice(&self, mem: MemId, offset: usize, len: usize) -> Result<&[u8], Errno> {
        let region = self.bytes_of(mem)?;
        let end = offset.checked_add(len).ok_or(Errno::EINVAL)?;
        region.get(offset..end).ok_or(Errno::EINVAL)
    }

    /// Mutable [`Regions::slice`].
    pub fn slice_mut(&mut self, mem: MemId, offset: usize, len: usize) -> Result<&mut [u8], Errno> {
        let region: &mut [u8] = match self.regions.get_mut(&mem.0).ok_or(Errno::EINVAL)? {
            Backing::Anon(bytes) => bytes,
            Backing::Map(map) => self
                .bpf
                .sub
                .map_values_mut(*map)
                .expect("a mapped map stays open"),
        };
        let end = offset.checked_add(len).ok_or(Errno::EINVAL)?;
        region.get_mut(offset..end).ok_or(Errno::EINVAL)
    }

    /// The length of a live region (`EINVAL` if it is not live).
    pub fn len_of(&self, mem: MemId) -> Result<usize, Errno> {
        self.bytes_of(mem).map(<[u8]>::len)
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

    /// The process died: every region, map and program is gone (region ids are not reused).
    pub fn clear(&mut self) {
        self.regions.clear();
        self.pins.clear();
        self.bytes = 0;
        self.bpf.clear();
    }
}
