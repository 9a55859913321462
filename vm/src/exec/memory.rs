//! The program's address space: a fixed, deterministic layout of checked regions.
//!
//! Programs never see host pointers. Each region lives in its own 4 GiB slot of a virtual
//! 64-bit address space (slot = `addr >> 32`), so translating an address is one shift and one
//! bounds check, every run of the same program sees the same addresses (determinism: a program
//! that stores or hashes a pointer behaves the same every time), and the addresses of regions
//! are known before the run (the object loader can bake map-value addresses into `lddw`).
//!
//! * slot 0: the stack. Frame `k` (0 = main) is 512 bytes at
//!   `STACK_FRAMES_BASE + k * STACK_FRAME_STRIDE_BYTES`, with unmapped gaps between frames, so
//!   running off the end of one frame never lands in another. Only active frames are mapped.
//! * slot 1: the context (`mem`) passed to the run; r1 points to its start.
//! * slot 2 + i: extra region `i` (map values, read-only data, ...).
//!
//! An access is allowed only if all of its bytes lie inside one region; unlike rbpf 0.4.1's
//! `register_allowed_memory` (which tests the first byte only), an access that starts inside a
//! region and ends outside it is an error.

use super::error::{Access, MemoryError};

/// Bytes of stack per frame (Linux's `MAX_BPF_STACK`).
pub const STACK_FRAME_BYTES: usize = 512;
/// Frames a call chain may have, main function included (Linux's `MAX_CALL_FRAMES`).
pub const FRAMES_MAX: usize = 8;
/// Extra regions one run may map besides the stack and the context.
pub const REGIONS_EXTRA_MAX: usize = 64;
/// Largest context or extra region. Half a slot, so the unmapped upper half of every slot
/// guards against any access spilling from one region into the next.
pub const REGION_BYTES_MAX: u64 = 1 << 31;

const SLOT_SHIFT: u32 = 32;
const SLOT_OFFSET_MASK: u64 = (1 << SLOT_SHIFT) - 1;
const SLOT_STACK: u64 = 0;
const SLOT_CTX: u64 = 1;
const SLOT_EXTRA_FIRST: u64 = 2;

/// Address of frame 0's lowest byte; nothing below it is mapped, so null pointers fault.
pub const STACK_FRAMES_BASE: u64 = 0x1000_0000;
/// Distance between consecutive frames; everything past a frame's 512 bytes is unmapped.
pub const STACK_FRAME_STRIDE_BYTES: u64 = 0x1_0000;
/// Address of the context's first byte (the initial r1).
pub const CTX_BASE: u64 = SLOT_CTX << SLOT_SHIFT;

const _: () = assert!(STACK_FRAME_STRIDE_BYTES >= 2 * STACK_FRAME_BYTES as u64);
const _: () =
    assert!(STACK_FRAMES_BASE + FRAMES_MAX as u64 * STACK_FRAME_STRIDE_BYTES <= SLOT_OFFSET_MASK);
const _: () = assert!(REGION_BYTES_MAX <= SLOT_OFFSET_MASK / 2 + 1);

/// The address of extra region `index` (the `index`-th region passed to a run).
pub const fn region_base(index: usize) -> u64 {
    (SLOT_EXTRA_FIRST + index as u64) << SLOT_SHIFT
}

/// The value of r10 (one past the frame's top byte) in frame `frame` (0 = main).
pub const fn frame_pointer(frame: usize) -> u64 {
    STACK_FRAMES_BASE + frame as u64 * STACK_FRAME_STRIDE_BYTES + STACK_FRAME_BYTES as u64
}

/// Memory a run may reach besides its stack and context, such as a map's values.
#[derive(Debug)]
pub struct Region<'r> {
    name: &'r str,
    bytes: RegionBytes<'r>,
    /// Map values: element `i` is `size` bytes at `i * stride`; an access must stay inside
    /// one element's `size` bytes (what Linux's verifier enforces on a map-value pointer).
    elements: Option<Elements>,
}

/// The element layout of a region of map values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Elements {
    stride_bytes: u64,
    size_bytes: u64,
}

#[derive(Debug)]
enum RegionBytes<'r> {
    ReadOnly(&'r [u8]),
    Writable(&'r mut [u8]),
}

impl<'r> Region<'r> {
    /// A region the program may load from but not store to (e.g. `.rodata`).
    pub fn read_only(name: &'r str, bytes: &'r [u8]) -> Self {
        Region {
            name,
            bytes: RegionBytes::ReadOnly(bytes),
            elements: None,
        }
    }

    /// A region the program may load from and store to (e.g. an array map's values).
    pub fn writable(name: &'r str, bytes: &'r mut [u8]) -> Self {
        Region {
            name,
            bytes: RegionBytes::Writable(bytes),
            elements: None,
        }
    }

    /// Makes the region a sequence of map values: `size_bytes` at every `stride_bytes`, and
    /// every access must lie inside a single value (crossing into padding or the next value is
    /// a fault, as a map-value pointer in Linux is bounded by `value_size`).
    pub fn with_elements(mut self, stride_bytes: usize, size_bytes: usize) -> Self {
        assert!(
            size_bytes > 0 && size_bytes <= stride_bytes,
            "a value of {size_bytes} bytes at a stride of {stride_bytes}"
        );
        self.elements = Some(Elements {
            stride_bytes: stride_bytes as u64,
            size_bytes: size_bytes as u64,
        });
        self
    }

    /// Whether `[offset, offset + len)` (already inside the region) lies inside one element.
    fn within_one_element(&self, offset: u64, len: u64) -> bool {
        match self.elements {
            None => true,
            Some(e) => (offset % e.stride_bytes).saturating_add(len) <= e.size_bytes,
        }
    }

    /// The name given at construction, used in error messages.
    pub fn name(&self) -> &str {
        self.name
    }

    /// Length in bytes.
    pub fn len_bytes(&self) -> usize {
        self.as_slice().len()
    }

    fn as_slice(&self) -> &[u8] {
        match &self.bytes {
            RegionBytes::ReadOnly(b) => b,
            RegionBytes::Writable(b) => b,
        }
    }
}

/// The address space of one run: stack frames, context and extra regions.
#[derive(Debug)]
pub struct Memory<'m, 'r> {
    stack: &'m mut [u8],
    frames_active: usize,
    ctx: &'m mut [u8],
    extra: &'m mut [Region<'r>],
}

impl<'m, 'r> Memory<'m, 'r> {
    /// Lays out a run's memory; `stack` must hold `FRAMES_MAX` frames. Frame 0 is active and
    /// zeroed. Callers check region sizes against [`REGION_BYTES_MAX`] first.
    pub(crate) fn new(stack: &'m mut [u8], ctx: &'m mut [u8], extra: &'m mut [Region<'r>]) -> Self {
        assert_eq!(
            stack.len(),
            FRAMES_MAX * STACK_FRAME_BYTES,
            "stack buffer holds every frame"
        );
        assert!(
            extra.len() <= REGIONS_EXTRA_MAX,
            "region count checked by the caller"
        );
        stack[..STACK_FRAME_BYTES].fill(0);
        Memory {
            stack,
            frames_active: 1,
            ctx,
            extra,
        }
    }

    /// The context's length in bytes (the initial r2).
    pub fn ctx_len_bytes(&self) -> u64 {
        self.ctx.len() as u64
    }

    /// Activates the next frame, zeroed so a callee never sees a previous callee's data.
    pub(crate) fn enter_frame(&mut self) {
        assert!(
            self.frames_active < FRAMES_MAX,
            "call depth checked by the interpreter"
        );
        let start = self.frames_active * STACK_FRAME_BYTES;
        self.stack[start..start + STACK_FRAME_BYTES].fill(0);
        self.frames_active += 1;
    }

    /// Deactivates the innermost frame: pointers into it stop being valid, as in Linux.
    pub(crate) fn leave_frame(&mut self) {
        assert!(self.frames_active > 1, "the main frame is never left");
        self.frames_active -= 1;
    }

    /// Sets the active frame count after the native tier ran calls and returns itself
    /// (it zeroes each frame it enters, as [`Memory::enter_frame`] does).
    pub(crate) fn set_frames_active(&mut self, frames: usize) {
        assert!(
            (1..=FRAMES_MAX).contains(&frames),
            "{frames} frames active, limit {FRAMES_MAX}"
        );
        self.frames_active = frames;
    }

    /// Writes the host layout the native tier checks accesses against into `slots[..n]` (slot
    /// 0, the stack, has none; `n` = 2 + extra regions; the rest is left as it is) and returns
    /// the stack's first byte. Pointers are valid while this `Memory` lives.
    pub(crate) fn native_layout(&mut self, slots: &mut [NativeSlot; NATIVE_SLOTS]) -> *mut u8 {
        slots[SLOT_STACK as usize] = NativeSlot::UNMAPPED;
        slots[SLOT_CTX as usize] = NativeSlot::plain(self.ctx.as_mut_ptr(), self.ctx.len(), true);
        for (i, region) in self.extra.iter_mut().enumerate() {
            let len = region.len_bytes();
            let elements = region.elements;
            let (ptr, writable) = match &mut region.bytes {
                RegionBytes::Writable(b) => (b.as_mut_ptr(), true),
                // Never written through: its store limits are 0.
                RegionBytes::ReadOnly(b) => (b.as_ptr().cast_mut(), false),
            };
            let mut slot = NativeSlot::plain(ptr, len, writable);
            match elements {
                None => {}
                // One value: inside it iff inside its first `size_bytes`.
                Some(e) if len as u64 <= e.stride_bytes => {
                    slot.load_len = slot.load_len.min(e.size_bytes);
                    slot.store_len = slot.store_len.min(e.size_bytes);
                    slot.elem_bytes = slot.elem_bytes.min(e.size_bytes);
                }
                Some(e) if e.stride_bytes.is_power_of_two() => {
                    slot.elem_mask = e.stride_bytes - 1;
                    slot.elem_bytes = e.size_bytes;
                }
                // No inline check (it would need a division): the out-of-line path's.
                Some(e) => {
                    slot.slow_load_len = slot.load_len;
                    slot.slow_store_len = slot.store_len;
                    slot.stride = e.stride_bytes;
                    slot.elem_bytes = e.size_bytes;
                    slot.load_len = 0;
                    slot.store_len = 0;
                }
            }
            slots[SLOT_EXTRA_FIRST as usize + i] = slot;
        }
        self.stack.as_mut_ptr()
    }

    /// The bytes at `addr..addr + len_bytes`, for helpers that read program memory.
    pub fn read(&self, addr: u64, len_bytes: u64) -> Result<&[u8], MemoryError> {
        self.locate(addr, len_bytes, Access::Load)
    }

    /// The bytes at `addr..addr + len_bytes`, writable, for helpers that write program memory.
    pub fn write(&mut self, addr: u64, len_bytes: u64) -> Result<&mut [u8], MemoryError> {
        self.locate_mut(addr, len_bytes, Access::Store)
    }

    /// The whole backing bytes of extra region `index`, writable — for helpers, which
    /// implement map internals (the kernel's side), so no per-value bound applies; a
    /// read-only region (`.rodata`) is still refused.
    pub fn region_mut(&mut self, index: usize) -> Result<&mut [u8], MemoryError> {
        let fail = |why: String, len: usize| MemoryError {
            access: Access::Store,
            addr: region_base(index),
            len_bytes: len as u64,
            why,
        };
        match self.extra.get_mut(index) {
            Some(region) => {
                let len = region.len_bytes();
                match &mut region.bytes {
                    RegionBytes::Writable(b) => Ok(b),
                    RegionBytes::ReadOnly(_) => {
                        Err(fail(format!("region '{}' is read-only", region.name), len))
                    }
                }
            }
            None => Err(fail(format!("no region {index}"), 0)),
        }
    }

    /// Loads `size` (1, 2, 4 or 8) bytes, little-endian, zero-extended.
    #[inline]
    pub(crate) fn load(&self, addr: u64, size: u8) -> Result<u64, MemoryError> {
        let bytes = self.locate(addr, u64::from(size), Access::Load)?;
        Ok(le_to_u64(bytes))
    }

    /// Stores the low `size` (1, 2, 4 or 8) bytes of `value`, little-endian.
    #[inline]
    pub(crate) fn store(&mut self, addr: u64, size: u8, value: u64) -> Result<(), MemoryError> {
        let bytes = self.locate_mut(addr, u64::from(size), Access::Store)?;
        bytes.copy_from_slice(&value.to_le_bytes()[..bytes.len()]);
        Ok(())
    }

    /// Read-modify-write of `size` bytes: `f(old) -> new`; returns `old`.
    #[inline]
    pub(crate) fn atomic(
        &mut self,
        addr: u64,
        size: u8,
        f: impl FnOnce(u64) -> u64,
    ) -> Result<u64, MemoryError> {
        let bytes = self.locate_mut(addr, u64::from(size), Access::Atomic)?;
        let old = le_to_u64(bytes);
        let new = f(old);
        bytes.copy_from_slice(&new.to_le_bytes()[..bytes.len()]);
        Ok(old)
    }

    /// The bytes at `addr..addr+len`, or why they may not be touched.
    fn locate(&self, addr: u64, len: u64, access: Access) -> Result<&[u8], MemoryError> {
        let (slot, start) = self.resolve(addr, len, access)?;
        // `resolve` proved start + len fits inside the slot's mapped bytes.
        let end = start + len as usize;
        Ok(match slot {
            Slot::Stack => &self.stack[start..end],
            Slot::Ctx => &self.ctx[start..end],
            Slot::Extra(i) => &self.extra[i].as_slice()[start..end],
        })
    }

    fn locate_mut(
        &mut self,
        addr: u64,
        len: u64,
        access: Access,
    ) -> Result<&mut [u8], MemoryError> {
        let (slot, start) = self.resolve(addr, len, access)?;
        let end = start + len as usize;
        match slot {
            Slot::Stack => Ok(&mut self.stack[start..end]),
            Slot::Ctx => Ok(&mut self.ctx[start..end]),
            Slot::Extra(i) => {
                let region = &mut self.extra[i];
                match &mut region.bytes {
                    RegionBytes::Writable(b) => Ok(&mut b[start..end]),
                    RegionBytes::ReadOnly(_) => Err(MemoryError {
                        access,
                        addr,
                        len_bytes: len,
                        why: format!("region '{}' is read-only", region.name),
                    }),
                }
            }
        }
    }

    /// Maps an access to (slot, byte offset in that slot's backing slice), checking that
    /// every byte of it is inside one mapped region.
    #[inline]
    fn resolve(&self, addr: u64, len: u64, access: Access) -> Result<(Slot, usize), MemoryError> {
        let slot = addr >> SLOT_SHIFT;
        let offset = addr & SLOT_OFFSET_MASK;
        // offset < 2^32; a helper's len may be anything, so the end is computed with checks.
        let end = offset.checked_add(len);
        let inside = |mapped: u64| end.is_some_and(|e| e <= mapped);
        match slot {
            SLOT_STACK => {
                if let Some(rel) = offset.checked_sub(STACK_FRAMES_BASE) {
                    let frame = rel / STACK_FRAME_STRIDE_BYTES;
                    let within = rel % STACK_FRAME_STRIDE_BYTES;
                    if (frame as usize) < self.frames_active
                        && within
                            .checked_add(len)
                            .is_some_and(|e| e <= STACK_FRAME_BYTES as u64)
                    {
                        return Ok((
                            Slot::Stack,
                            frame as usize * STACK_FRAME_BYTES + within as usize,
                        ));
                    }
                }
            }
            SLOT_CTX => {
                if inside(self.ctx.len() as u64) {
                    return Ok((Slot::Ctx, offset as usize));
                }
            }
            _ => {
                let index = (slot - SLOT_EXTRA_FIRST) as usize;
                if let Some(region) = self.extra.get(index) {
                    if inside(region.len_bytes() as u64) && region.within_one_element(offset, len) {
                        return Ok((Slot::Extra(index), offset as usize));
                    }
                }
            }
        }
        Err(MemoryError {
            access,
            addr,
            len_bytes: len,
            why: self.describe_miss(addr, len),
        })
    }

    /// Explains a failed access: which region it started in (if any) and how it missed.
    fn describe_miss(&self, addr: u64, len: u64) -> String {
        let slot = addr >> SLOT_SHIFT;
        let offset = addr & SLOT_OFFSET_MASK;
        let straddle = |name: &str, base: u64, mapped: u64| {
            if offset >= mapped {
                format!("outside every region (past the end of {name} [{base:#x}, +{mapped}))")
            } else {
                format!(
                    "starts inside {name} [{base:#x}, +{mapped}) at offset {offset} but ends {} bytes past its end",
                    offset.saturating_add(len) - mapped
                )
            }
        };
        match slot {
            SLOT_STACK => {
                let Some(rel) = offset.checked_sub(STACK_FRAMES_BASE) else {
                    return "outside every region (below the stack; null or small pointer?)"
                        .to_string();
                };
                let frame = rel / STACK_FRAME_STRIDE_BYTES;
                let within = rel % STACK_FRAME_STRIDE_BYTES;
                if frame as usize >= self.frames_active {
                    format!(
                        "in stack frame {frame}, which is not active ({} active)",
                        self.frames_active
                    )
                } else if within >= STACK_FRAME_BYTES as u64 {
                    format!("outside stack frame {frame} (above its frame pointer)")
                } else {
                    format!(
                        "starts inside stack frame {frame} at offset {within} but ends {} bytes past its 512-byte end",
                        within.saturating_add(len) - STACK_FRAME_BYTES as u64
                    )
                }
            }
            SLOT_CTX => straddle("the context", CTX_BASE, self.ctx.len() as u64),
            _ => {
                let index = (slot - SLOT_EXTRA_FIRST) as usize;
                match self.extra.get(index) {
                    Some(r) => match r.elements {
                        Some(e)
                            if offset.saturating_add(len) <= r.len_bytes() as u64
                                && !r.within_one_element(offset, len) =>
                        {
                            let value = offset / e.stride_bytes;
                            format!(
                                "starts in value {value} of region '{}' at offset {} but ends past its {} bytes (values are {} bytes apart)",
                                r.name,
                                offset % e.stride_bytes,
                                e.size_bytes,
                                e.stride_bytes
                            )
                        }
                        _ => straddle(
                            &format!("region '{}'", r.name),
                            addr & !SLOT_OFFSET_MASK,
                            r.len_bytes() as u64,
                        ),
                    },
                    None => "outside every region".to_string(),
                }
            }
        }
    }
}

/// Slots the native tier's table covers: stack, context and every extra region.
pub(crate) const NATIVE_SLOTS: usize = SLOT_EXTRA_FIRST as usize + REGIONS_EXTRA_MAX;

/// One slot as the native tier sees it. The inline check: an access of `n` bytes at `offset`
/// is inside iff `offset + n <= load_len` (or `store_len`) and
/// `(offset & elem_mask) + n <= elem_bytes`. An access that fails it takes the out-of-line
/// path: the exact stack check for slot 0, and for a region of several map values whose
/// stride is no power of two (`stride` non-zero) `offset + n <= slow_load_len` (or
/// `slow_store_len`) and `offset % stride + n <= elem_bytes`. Anything else goes to the
/// interpreter, which raises the fault.
#[repr(C, align(64))]
#[derive(Debug, Clone, Copy)]
pub(crate) struct NativeSlot {
    pub(crate) base: *mut u8,
    pub(crate) load_len: u64,
    pub(crate) store_len: u64,
    pub(crate) elem_mask: u64,
    pub(crate) elem_bytes: u64,
    pub(crate) stride: u64,
    pub(crate) slow_load_len: u64,
    pub(crate) slow_store_len: u64,
}

impl NativeSlot {
    /// A slot nothing is mapped in.
    pub(crate) const UNMAPPED: NativeSlot = NativeSlot {
        base: std::ptr::null_mut(),
        load_len: 0,
        store_len: 0,
        elem_mask: 0,
        elem_bytes: 0,
        stride: 0,
        slow_load_len: 0,
        slow_store_len: 0,
    };

    fn plain(base: *mut u8, len: usize, writable: bool) -> Self {
        let len = len as u64;
        NativeSlot {
            base,
            load_len: len,
            store_len: if writable { len } else { 0 },
            elem_mask: SLOT_OFFSET_MASK,
            elem_bytes: len,
            ..NativeSlot::UNMAPPED
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Slot {
    Stack,
    Ctx,
    Extra(usize),
}

#[inline]
fn le_to_u64(bytes: &[u8]) -> u64 {
    let mut buf = [0u8; 8];
    buf[..bytes.len()].copy_from_slice(bytes);
    u64::from_le_bytes(buf)
}
