//! Maps with the kernel's semantics: ARRAY, PERCPU_ARRAY (one CPU), HASH and RINGBUF.
//!
//! A map is two parts:
//!
//! * its **values**: one flat byte buffer the loader lends to every run as a VM memory region,
//!   so programs load and store map values through pointers with full-width bounds checks, and
//!   value pointers are plain, deterministic VM addresses (`region_base(i) + offset`);
//! * its **state** ([`MapState`]): which hash keys live in which slot, ring buffer positions.
//!   It never holds value bytes, so helpers can work on it while the values are lent to a run
//!   (they reach the values through the run's checked [`crate::exec::Memory`]).
//!
//! Layouts (all value strides are `round_up(value_size, 8)`, the kernel's `elem_size`, so every
//! value is 8-byte aligned):
//!
//! | type | values buffer |
//! |---|---|
//! | ARRAY, PERCPU_ARRAY | `max_entries` values, index `i` at `i * stride` (the layout user space sees when it mmaps a `BPF_F_MMAPABLE` array) |
//! | HASH | `max_entries` preallocated slots, like the kernel's prealloc htab; a slot's value address stays valid while its element lives |
//! | RINGBUF | `2 * max_entries` bytes: the data area and a mirror half standing in for the kernel's double mapping (see `ringbuf.rs`) |
//!
//! Error codes follow `kernel/bpf/arraymap.c`, `kernel/bpf/hashtab.c` and
//! `kernel/bpf/ringbuf.c` (Linux 6.18); each site cites the check it mirrors.

mod hash;
mod ringbuf;

use std::fmt;

use crate::object::{MapDef, MapType, BPF_F_MMAPABLE, BPF_F_RDONLY_PROG};

pub use ringbuf::{RINGBUF_DATA_BYTES_MAX, RINGBUF_HDR_BYTES};

use hash::HashState;
use ringbuf::RingState;

/// Kernel errno values the map operations return (negated, as helpers return them).
pub mod errno {
    /// Operation not permitted (update of a frozen map from user space).
    pub const EPERM: i32 = 1;
    /// No such element.
    pub const ENOENT: i32 = 2;
    /// Argument list too long: hash map full, array index out of range on update.
    pub const E2BIG: i32 = 7;
    /// Bad file descriptor: no map of that name / handle.
    pub const EBADF: i32 = 9;
    /// Try again: ring buffer has no room (`bpf_ringbuf_output`).
    pub const EAGAIN: i32 = 11;
    /// Bad address (`bpf_copy_from_user` on unmapped user memory).
    pub const EFAULT: i32 = 14;
    /// Device or resource busy (`BPF_MAP_FREEZE` of a frozen map).
    pub const EBUSY: i32 = 16;
    /// Element exists (`BPF_NOEXIST`).
    pub const EEXIST: i32 = 17;
    /// No such device (`mmap` of a map type that has no mmap, e.g. hash).
    pub const ENODEV: i32 = 19;
    /// Invalid argument (bad flags, bad map attributes).
    pub const EINVAL: i32 = 22;
    /// No space left (map or program ids exhausted).
    pub const ENOSPC: i32 = 28;
    /// Kernel-internal "operation not supported" (e.g. lookup in a ring buffer).
    pub const ENOTSUPP: i32 = 524;
}

/// `BPF_ANY`: create or update.
pub const BPF_ANY: u64 = 0;
/// `BPF_NOEXIST`: create only.
pub const BPF_NOEXIST: u64 = 1;
/// `BPF_EXIST`: update only.
pub const BPF_EXIST: u64 = 2;
/// `BPF_F_NO_PREALLOC`: accepted; the vm always preallocates hash slots (see module docs).
pub const BPF_F_NO_PREALLOC: u32 = 1;
/// `BPF_F_RDONLY | BPF_F_WRONLY | BPF_F_RDONLY_PROG | BPF_F_WRONLY_PROG` (`BPF_F_ACCESS_MASK`).
const BPF_F_ACCESS_MASK: u32 = (1 << 3) | (1 << 4) | BPF_F_RDONLY_PROG | (1 << 8);
/// `BPF_F_ZERO_SEED`: accepted for hash maps (our hash order is already deterministic).
const BPF_F_ZERO_SEED: u32 = 1 << 6;

/// Largest value of an array map: `INT_MAX`. Linux 6.18's `array_map_alloc_check` returns
/// E2BIG above it ("avoid overflow on round_up(map->value_size)"); older kernels refused values
/// over `KMALLOC_MAX_SIZE` (4 MiB), as the vm did. Measured with a `BPF_MAP_CREATE` probe
/// (Linux 6.18, x86-64, 4 KiB pages), plain and `BPF_F_MMAPABLE`, one entry: 4 MiB + 1,
/// 8 MiB, 1 GiB and 2^31 − 1 bytes created, 2^31 and 2^32 − 1 refused with E2BIG. The vm
/// itself holds at most [`MAP_VALUES_BYTES_MAX`] of values per map, so it refuses (E2BIG,
/// saying why) array values over 1 GiB that Linux creates when memory allows.
pub const MAP_VALUE_BYTES_MAX: u32 = i32::MAX as u32;
/// Largest `round_up(value_size, 8)` of a per-CPU array: `PCPU_MIN_UNIT_SIZE`, 32 KiB
/// (`array_map_alloc_check`, E2BIG above; measured: 32,767 created, 32,769 refused).
pub const PERCPU_VALUE_BYTES_MAX: u32 = 32 << 10;
/// Largest `key_size + value_size` of a hash map: `htab_map_alloc_check` returns E2BIG when
/// the sum reaches `KMALLOC_MAX_SIZE − sizeof(struct htab_elem)`. Measured (Linux 6.18,
/// x86-64): key 4 + value 4,194,251 created, value 4,194,252 refused; key 64 and key
/// 4 MiB − 56 meet the same bound, so `sizeof(struct htab_elem)` is 48 there. The key alone
/// has no bound of its own (keys of 513 and 4,096 bytes are created; kernels before the sum
/// rule refused keys over `MAX_BPF_STACK`, 512).
pub const HASH_KEY_VALUE_BYTES_MAX: u64 = (4 << 20) - 48 - 1;
/// Largest values buffer of one map in the vm (a VM region is at most 2 GiB; we stay far
/// below so a typo in `max_entries` fails at creation, not by exhausting host memory).
pub const MAP_VALUES_BYTES_MAX: u64 = 1 << 30;
const _: () = assert!(MAP_VALUES_BYTES_MAX <= crate::exec::REGION_BYTES_MAX);

/// A failed map operation: the kernel's errno plus which map and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("map '{map}': {why} (errno {errno})")]
pub struct MapError {
    /// The kernel's errno (positive; helpers return it negated).
    pub errno: i32,
    /// Name of the map.
    pub map: String,
    /// What went wrong.
    pub why: String,
}

impl MapError {
    pub(crate) fn new(errno: i32, map: &str, why: impl Into<String>) -> Self {
        MapError {
            errno,
            map: map.to_string(),
            why: why.into(),
        }
    }

    /// The value a helper returns for this error: `-errno` as a 64-bit register.
    pub fn helper_ret(&self) -> u64 {
        i64::from(-self.errno) as u64
    }
}

/// What a map is: the attributes of `BPF_MAP_CREATE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapSpec {
    /// Name used in errors and for host-side access.
    pub name: String,
    /// Map type.
    pub map_type: MapType,
    /// Key size in bytes.
    pub key_size: u32,
    /// Value size in bytes.
    pub value_size: u32,
    /// Maximum number of entries (ring buffer: data size in bytes).
    pub max_entries: u32,
    /// `BPF_F_*` creation flags.
    pub map_flags: u32,
}

impl From<&MapDef> for MapSpec {
    fn from(def: &MapDef) -> Self {
        MapSpec {
            name: def.name.clone(),
            map_type: def.map_type,
            key_size: def.key_size,
            value_size: def.value_size,
            max_entries: def.max_entries,
            map_flags: def.map_flags,
        }
    }
}

impl MapSpec {
    /// Bytes between consecutive values: the kernel's `elem_size = round_up(value_size, 8)`.
    pub fn value_stride(&self) -> usize {
        (self.value_size as usize).next_multiple_of(8)
    }

    /// Whether programs may only read the map (`BPF_F_RDONLY_PROG`, set on `.rodata`).
    pub fn read_only_for_programs(&self) -> bool {
        self.map_flags & BPF_F_RDONLY_PROG != 0
    }
}

/// The bookkeeping of one map, apart from its value bytes (see the module docs).
#[derive(Debug, Clone)]
pub struct MapState {
    spec: MapSpec,
    frozen: bool,
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    /// ARRAY and PERCPU_ARRAY: every index always exists.
    Array,
    Hash(HashState),
    Ringbuf(RingState),
}

impl MapState {
    /// Checks `spec` as `BPF_MAP_CREATE` would and returns the state plus the length of the
    /// zeroed values buffer the map needs.
    pub fn create(spec: MapSpec) -> Result<(MapState, usize), MapError> {
        let fail = |errno, why: String| Err(MapError::new(errno, &spec.name, why));
        let flags = spec.map_flags;
        let kind = match spec.map_type {
            MapType::Array | MapType::PercpuArray => {
                // array_map_alloc_check: key must be a u32 index, nothing may be zero.
                if spec.key_size != 4 || spec.value_size == 0 || spec.max_entries == 0 {
                    return fail(
                        errno::EINVAL,
                        format!(
                            "array needs key_size 4 and non-zero value_size and max_entries \
                             (got key {} value {} entries {})",
                            spec.key_size, spec.value_size, spec.max_entries
                        ),
                    );
                }
                let percpu = spec.map_type == MapType::PercpuArray;
                let allowed = BPF_F_ACCESS_MASK | if percpu { 0 } else { BPF_F_MMAPABLE };
                if flags & !allowed != 0 {
                    return fail(
                        errno::EINVAL,
                        format!("flags {flags:#x} not allowed for this array type"),
                    );
                }
                if spec.value_size > MAP_VALUE_BYTES_MAX {
                    return fail(
                        errno::E2BIG,
                        format!(
                            "value_size {} exceeds {MAP_VALUE_BYTES_MAX} bytes",
                            spec.value_size
                        ),
                    );
                }
                if percpu && spec.value_size.next_multiple_of(8) > PERCPU_VALUE_BYTES_MAX {
                    return fail(
                        errno::E2BIG,
                        format!(
                            "per-CPU value_size {} exceeds {PERCPU_VALUE_BYTES_MAX} bytes",
                            spec.value_size
                        ),
                    );
                }
                Kind::Array
            }
            MapType::Hash => {
                // htab_map_alloc_check.
                if spec.key_size == 0 || spec.value_size == 0 || spec.max_entries == 0 {
                    return fail(
                        errno::EINVAL,
                        "hash needs non-zero key_size, value_size and max_entries".to_string(),
                    );
                }
                let allowed = BPF_F_NO_PREALLOC | BPF_F_ACCESS_MASK | BPF_F_ZERO_SEED;
                if flags & !allowed != 0 {
                    return fail(
                        errno::EINVAL,
                        format!("flags {flags:#x} not allowed for a hash map"),
                    );
                }
                let elem = u64::from(spec.key_size) + u64::from(spec.value_size);
                if elem > HASH_KEY_VALUE_BYTES_MAX {
                    return fail(
                        errno::E2BIG,
                        format!(
                            "key_size {} + value_size {} exceeds {HASH_KEY_VALUE_BYTES_MAX} bytes",
                            spec.key_size, spec.value_size
                        ),
                    );
                }
                Kind::Hash(HashState::new(spec.max_entries))
            }
            MapType::Ringbuf => Kind::Ringbuf(RingState::create(&spec)?),
            other => {
                return fail(
                    errno::ENOTSUPP,
                    format!("map type {other:?} is not supported by the vm"),
                )
            }
        };
        let values_len = match &kind {
            Kind::Array | Kind::Hash(_) => spec.value_stride() as u64 * u64::from(spec.max_entries),
            Kind::Ringbuf(_) => 2 * u64::from(spec.max_entries),
        };
        if values_len > MAP_VALUES_BYTES_MAX {
            return fail(
                errno::E2BIG,
                format!(
                    "needs {values_len} bytes of values, more than the vm's {MAP_VALUES_BYTES_MAX}"
                ),
            );
        }
        let values_len = usize::try_from(values_len).expect("bounded by MAP_VALUES_BYTES_MAX");
        Ok((
            MapState {
                spec,
                frozen: false,
                kind,
            },
            values_len,
        ))
    }

    /// The map's attributes.
    pub fn spec(&self) -> &MapSpec {
        &self.spec
    }

    /// Length of the values buffer this map uses.
    pub fn values_len(&self) -> usize {
        match &self.kind {
            Kind::Array | Kind::Hash(_) => {
                self.spec.value_stride() * self.spec.max_entries as usize
            }
            Kind::Ringbuf(_) => 2 * self.spec.max_entries as usize,
        }
    }

    /// Freezes the map (`BPF_MAP_FREEZE`): user space may no longer change it.
    pub fn freeze(&mut self) {
        self.frozen = true;
    }

    /// Whether the map is frozen.
    pub fn frozen(&self) -> bool {
        self.frozen
    }

    fn err(&self, errno: i32, why: impl Into<String>) -> MapError {
        MapError::new(errno, &self.spec.name, why)
    }

    fn check_key(&self, key: &[u8]) -> Result<(), MapError> {
        if key.len() == self.spec.key_size as usize {
            Ok(())
        } else {
            Err(self.err(
                errno::EINVAL,
                format!(
                    "key is {} bytes, the map's key_size is {}",
                    key.len(),
                    self.spec.key_size
                ),
            ))
        }
    }

    fn array_index(key: &[u8]) -> u32 {
        let mut index = [0u8; 4];
        index.copy_from_slice(key);
        u32::from_le_bytes(index)
    }

    /// Offset of `key`'s value in the values buffer, `None` if there is no such element
    /// (array index out of range, hash key absent).
    pub fn lookup_offset(&self, key: &[u8]) -> Result<Option<usize>, MapError> {
        self.check_key(key)?;
        match &self.kind {
            // array_map_lookup_elem: NULL past max_entries.
            Kind::Array => {
                let index = Self::array_index(key);
                Ok((index < self.spec.max_entries)
                    .then(|| index as usize * self.spec.value_stride()))
            }
            Kind::Hash(hash) => Ok(hash
                .slot_of(key)
                .map(|slot| slot as usize * self.spec.value_stride())),
            Kind::Ringbuf(_) => {
                Err(self.err(errno::ENOTSUPP, "ring buffers have no elements to look up"))
            }
        }
    }

    /// `bpf_map_update_elem`: writes `value` under `key` into `values` honouring `flags`.
    pub fn update(
        &mut self,
        values: &mut [u8],
        key: &[u8],
        value: &[u8],
        flags: u64,
    ) -> Result<(), MapError> {
        debug_assert_eq!(values.len(), self.values_len(), "values buffer of this map");
        self.check_key(key)?;
        if value.len() != self.spec.value_size as usize {
            return Err(self.err(
                errno::EINVAL,
                format!(
                    "value is {} bytes, the map's value_size is {}",
                    value.len(),
                    self.spec.value_size
                ),
            ));
        }
        let stride = self.spec.value_stride();
        let offset = match &mut self.kind {
            Kind::Array => {
                // array_map_update_elem: unknown flags EINVAL, index past the end E2BIG,
                // NOEXIST always EEXIST (every element of an array exists).
                if flags > BPF_EXIST {
                    return Err(self.err(errno::EINVAL, format!("unknown flags {flags:#x}")));
                }
                let index = Self::array_index(key);
                if index >= self.spec.max_entries {
                    return Err(self.err(
                        errno::E2BIG,
                        format!(
                            "index {index} is past max_entries {}",
                            self.spec.max_entries
                        ),
                    ));
                }
                if flags == BPF_NOEXIST {
                    return Err(self.err(
                        errno::EEXIST,
                        format!("index {index} exists (array elements always do)"),
                    ));
                }
                index as usize * stride
            }
            Kind::Hash(hash) => {
                // htab_map_update_elem: unknown flags EINVAL; check_flags: EEXIST/ENOENT;
                // alloc_htab_elem: E2BIG when no free slot is left.
                if flags > BPF_EXIST {
                    return Err(MapError::new(
                        errno::EINVAL,
                        &self.spec.name,
                        format!("unknown flags {flags:#x}"),
                    ));
                }
                let slot = hash
                    .insert(key, flags)
                    .map_err(|(errno, why)| MapError::new(errno, &self.spec.name, why))?;
                slot as usize * stride
            }
            Kind::Ringbuf(_) => {
                return Err(self.err(errno::ENOTSUPP, "ring buffers cannot be updated"))
            }
        };
        values[offset..offset + value.len()].copy_from_slice(value);
        Ok(())
    }

    /// `bpf_map_delete_elem`.
    pub fn delete(&mut self, key: &[u8]) -> Result<(), MapError> {
        self.check_key(key)?;
        match &mut self.kind {
            // array_map_delete_elem returns -EINVAL: array elements cannot be removed.
            Kind::Array => Err(self.err(errno::EINVAL, "array elements cannot be deleted")),
            Kind::Hash(hash) => {
                if hash.remove(key) {
                    Ok(())
                } else {
                    Err(self.err(errno::ENOENT, "no element with this key"))
                }
            }
            Kind::Ringbuf(_) => Err(self.err(errno::ENOTSUPP, "ring buffers have no elements")),
        }
    }

    /// Keys of a hash map in ascending byte order (deterministic iteration for tests and
    /// tools); the indices `0..max_entries` for arrays; empty for ring buffers.
    pub fn keys(&self) -> Vec<Vec<u8>> {
        match &self.kind {
            Kind::Array => (0..self.spec.max_entries)
                .map(|i| i.to_le_bytes().to_vec())
                .collect(),
            Kind::Hash(hash) => hash.keys(),
            Kind::Ringbuf(_) => Vec::new(),
        }
    }

    fn ring(&mut self) -> Result<&mut RingState, MapError> {
        match &mut self.kind {
            Kind::Ringbuf(ring) => Ok(ring),
            _ => Err(MapError::new(
                errno::EINVAL,
                &self.spec.name,
                "not a ring buffer",
            )),
        }
    }

    /// `bpf_ringbuf_reserve`: offset of a fresh record's data, `None` if it does not fit.
    pub fn ringbuf_reserve(
        &mut self,
        values: &mut [u8],
        size: u64,
    ) -> Result<Option<usize>, MapError> {
        Ok(self.ring()?.reserve(values, size))
    }

    /// `bpf_ringbuf_submit` (`discard == false`) or `bpf_ringbuf_discard` of the record whose
    /// data starts at `data_offset`.
    pub fn ringbuf_commit(
        &mut self,
        values: &mut [u8],
        data_offset: usize,
        discard: bool,
    ) -> Result<(), MapError> {
        let name = self.spec.name.clone();
        self.ring()?
            .commit(values, data_offset, discard)
            .map_err(|why| MapError::new(errno::EINVAL, &name, why))
    }

    /// The consumer side (`ring_buffer__consume`): the oldest submitted record's bytes, skipping
    /// discarded ones; `None` when the next record is still reserved or there is none.
    pub fn ringbuf_consume(&mut self, values: &[u8]) -> Result<Option<Vec<u8>>, MapError> {
        Ok(self.ring()?.consume(values))
    }
}

/// A stand-alone map: state plus its own values buffer, for host code and tests.
pub struct Map {
    state: MapState,
    values: Vec<u8>,
}

impl fmt::Debug for Map {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Map")
            .field("state", &self.state)
            .field("values_len", &self.values.len())
            .finish()
    }
}

impl Map {
    /// Creates a zero-filled map, checking `spec` as `BPF_MAP_CREATE` would.
    pub fn create(spec: MapSpec) -> Result<Map, MapError> {
        let (state, len) = MapState::create(spec)?;
        Ok(Map {
            state,
            values: vec![0; len],
        })
    }

    /// The map's state (attributes, keys).
    pub fn state(&self) -> &MapState {
        &self.state
    }

    /// The value under `key`, if present.
    pub fn lookup(&self, key: &[u8]) -> Result<Option<&[u8]>, MapError> {
        let len = self.state.spec.value_size as usize;
        Ok(self
            .state
            .lookup_offset(key)?
            .map(|off| &self.values[off..off + len]))
    }

    /// `bpf_map_update_elem` from user space (refused with EPERM once frozen).
    pub fn update(&mut self, key: &[u8], value: &[u8], flags: u64) -> Result<(), MapError> {
        if self.state.frozen {
            return Err(self.state.err(errno::EPERM, "map is frozen"));
        }
        self.state.update(&mut self.values, key, value, flags)
    }

    /// `bpf_map_delete_elem` from user space.
    pub fn delete(&mut self, key: &[u8]) -> Result<(), MapError> {
        if self.state.frozen {
            return Err(self.state.err(errno::EPERM, "map is frozen"));
        }
        self.state.delete(key)
    }

    /// The whole values buffer (what user space sees after mmapping a `BPF_F_MMAPABLE` array).
    pub fn values(&self) -> &[u8] {
        &self.values
    }

    /// Program-side `bpf_ringbuf_reserve` followed by writing `data` and submitting (what
    /// `bpf_ringbuf_output` does); returns false when the record does not fit.
    pub fn ringbuf_output(&mut self, data: &[u8]) -> Result<bool, MapError> {
        let Some(offset) = self
            .state
            .ringbuf_reserve(&mut self.values, data.len() as u64)?
        else {
            return Ok(false);
        };
        self.values[offset..offset + data.len()].copy_from_slice(data);
        self.state.ringbuf_commit(&mut self.values, offset, false)?;
        Ok(true)
    }

    /// Program-side `bpf_ringbuf_reserve`: data offset of a new record in [`Map::values`].
    pub fn ringbuf_reserve(&mut self, size: u64) -> Result<Option<usize>, MapError> {
        self.state.ringbuf_reserve(&mut self.values, size)
    }

    /// Writes into a reserved record (what a program does through the reserved pointer).
    pub fn ringbuf_write(&mut self, data_offset: usize, data: &[u8]) {
        self.values[data_offset..data_offset + data.len()].copy_from_slice(data);
    }

    /// Program-side submit or discard of a reserved record.
    pub fn ringbuf_commit(&mut self, data_offset: usize, discard: bool) -> Result<(), MapError> {
        self.state
            .ringbuf_commit(&mut self.values, data_offset, discard)
    }

    /// User-side consumption of the next submitted record.
    pub fn ringbuf_consume(&mut self) -> Result<Option<Vec<u8>>, MapError> {
        self.state.ringbuf_consume(&self.values)
    }
}
