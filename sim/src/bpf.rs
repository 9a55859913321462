//! BPF on the simulated kernel: a [`BpfSubsystem`] of `resystance-vm` behind the sim's
//! descriptor table, its virtual clock and its seed.
//!
//! * Map, program and BTF descriptors come from the file system's descriptor table
//!   ([`crate::fs::FileSystem::alloc_anon_fd`]): the lowest free number, shared with files.
//!   [`Bpf`] keeps what each refers to.
//! * **mmap aliases the map**: a region made by `bpf_map_mmap` holds no bytes of its own; its
//!   reads and writes (user space, io_uring) go straight to the map's values buffer in the
//!   subsystem, which is what a program run sees. Nothing is copied or synchronised, so a
//!   16 MiB map (the compaction program's windows) costs nothing per run. This is why the
//!   subsystem lives inside [`crate::mem::Regions`].
//! * A mapping holds the map (as Linux's `vm_area` holds a map reference): closing the map's
//!   fd while it is mapped drops the map only at the last `munmap`. A mapping is writable
//!   (real-kernel maps `PROT_READ | PROT_WRITE`), so `BPF_MAP_FREEZE` of a mapped map answers
//!   `EBUSY` (Linux's `writecnt`) and mapping a frozen map `EPERM`.
//! * The vm's helpers read [`VirtualTime`], which holds the sim clock's reading at the start of
//!   each test run (the helpers run under the kernel's lock, so they cannot read the clock
//!   itself); `bpf_get_prandom_u32` is seeded from the sim's seed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use resystance_traces::{Errno, Fd, MapType as TraceMapType};
use resystance_vm::exec::Limits;
use resystance_vm::helpers::Clock as VmClock;
use resystance_vm::kernel_bpf::{BpfSubsystem, MapId, ProgId};
use resystance_vm::loader::LoadOptions;
use resystance_vm::maps::{MapError, MapSpec};
use resystance_vm::object::MapType;

/// Instructions one test run may execute before it fails (the vm's budget; Linux bounds a
/// program at load instead). Far above what the compaction program's runs execute.
pub const BPF_INSNS_PER_RUN_MAX: u64 = 1 << 36;

/// Mixed into the sim's seed for `bpf_get_prandom_u32` (so it differs from the jitter's).
const PRANDOM_SEED_MIX: u64 = 0x6270_665f_7261_6e64; // "bpf_rand"

/// The sim's virtual clock as the vm's helpers see it: set by the kernel before each run.
#[derive(Debug, Default)]
pub struct VirtualTime {
    now_ns: AtomicU64,
}

impl VirtualTime {
    /// Publishes the virtual clock's reading.
    pub fn set(&self, now_ns: u64) {
        self.now_ns.store(now_ns, Ordering::Relaxed);
    }
}

impl VmClock for VirtualTime {
    fn monotonic_ns(&self) -> u64 {
        self.now_ns.load(Ordering::Relaxed)
    }
}

/// What a BPF descriptor refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BpfObject {
    /// A map.
    Map(MapId),
    /// A loaded program.
    Prog(ProgId),
    /// Loaded BTF (accepted and kept as a descriptor only: the vm does not need it).
    Btf,
}

/// The BPF side of the simulated process: the subsystem, its descriptors and mappings.
#[derive(Debug)]
pub struct Bpf {
    /// Maps, programs, helpers.
    pub sub: BpfSubsystem,
    /// Descriptor → object.
    pub fds: BTreeMap<i32, BpfObject>,
    /// Live `bpf_map_mmap` regions per map.
    mmaps: BTreeMap<MapId, u32>,
    /// Maps whose fd was closed while mapped: closed in the subsystem at the last `munmap`.
    closing: BTreeSet<MapId>,
    time: Arc<VirtualTime>,
    seed: u64,
}

impl Bpf {
    /// An empty subsystem whose helpers read `time` and whose prandom derives from `seed`.
    pub fn new(seed: u64, time: Arc<VirtualTime>) -> Bpf {
        let sub = BpfSubsystem::new(&options(seed, &time));
        Bpf {
            sub,
            fds: BTreeMap::new(),
            mmaps: BTreeMap::new(),
            closing: BTreeSet::new(),
            time,
            seed,
        }
    }

    /// The process died: every map, program and descriptor is gone.
    pub fn clear(&mut self) {
        *self = Bpf::new(self.seed, Arc::clone(&self.time));
    }

    /// Publishes the virtual time the next run's helpers read.
    pub fn set_time(&self, now_ns: u64) {
        self.time.set(now_ns);
    }

    /// The map of `fd` (`EBADF` for any other descriptor).
    pub fn map_of(&self, fd: Fd) -> Result<MapId, Errno> {
        match self.fds.get(&fd.0) {
            Some(BpfObject::Map(id)) => Ok(*id),
            _ => Err(Errno::EBADF),
        }
    }

    /// The program of `fd` (`EBADF` for any other descriptor).
    pub fn prog_of(&self, fd: Fd) -> Result<ProgId, Errno> {
        match self.fds.get(&fd.0) {
            Some(BpfObject::Prog(id)) => Ok(*id),
            _ => Err(Errno::EBADF),
        }
    }

    /// Whether the map has a live mapping.
    pub fn is_mapped(&self, map: MapId) -> bool {
        self.mmaps.contains_key(&map)
    }

    /// A new mapping of `map`.
    pub fn mapped(&mut self, map: MapId) {
        *self.mmaps.entry(map).or_insert(0) += 1;
    }

    /// A mapping of `map` was unmapped; the map goes if its fd was closed meanwhile.
    pub fn unmapped(&mut self, map: MapId) {
        let n = self
            .mmaps
            .get_mut(&map)
            .expect("unmapped a map never mapped");
        *n -= 1;
        if *n == 0 {
            self.mmaps.remove(&map);
            if self.closing.remove(&map) {
                self.sub
                    .map_close(map)
                    .expect("a map stays open while mapped");
            }
        }
    }

    /// `close(2)` of a BPF descriptor (already removed from `fds`).
    pub fn close(&mut self, obj: BpfObject) {
        match obj {
            BpfObject::Map(id) if self.is_mapped(id) => {
                self.closing.insert(id);
            }
            BpfObject::Map(id) => {
                self.sub.map_close(id).expect("an open fd's map is open");
            }
            BpfObject::Prog(id) => {
                self.sub.prog_close(id);
            }
            BpfObject::Btf => {}
        }
    }
}

fn options(seed: u64, time: &Arc<VirtualTime>) -> LoadOptions {
    let mut options = LoadOptions::new(Arc::clone(time) as Arc<dyn VmClock>);
    options.prandom_seed = seed ^ PRANDOM_SEED_MIX;
    options.limits = Limits {
        insns_max: BPF_INSNS_PER_RUN_MAX,
    };
    options
}

/// The vm's form of a `BPF_MAP_CREATE` request.
pub fn vm_spec(spec: &resystance_traces::MapSpec) -> MapSpec {
    MapSpec {
        name: spec.name.clone(),
        map_type: match spec.map_type {
            TraceMapType::Hash => MapType::Hash,
            TraceMapType::Array => MapType::Array,
            TraceMapType::PercpuArray => MapType::PercpuArray,
            TraceMapType::Ringbuf => MapType::Ringbuf,
        },
        key_size: spec.key_size,
        value_size: spec.value_size,
        max_entries: spec.max_entries,
        map_flags: spec.flags,
    }
}

/// The errno of a map call's failure.
pub fn map_errno(e: &MapError) -> Errno {
    Errno(e.errno)
}
