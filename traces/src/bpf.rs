//! BPF vocabulary: map specifications, program loads and test runs.

use serde::{Deserialize, Serialize};

use crate::Fd;

/// A BPF map's file descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MapFd(pub Fd);

/// A loaded BPF program's file descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ProgFd(pub Fd);

/// A loaded BTF object's file descriptor (`BPF_BTF_LOAD`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BtfFd(pub Fd);

/// One `struct bpf_func_info`: the function starting at instruction `insn_off` (in
/// instructions, of the linked program) has the BTF `FUNC` type `type_id`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FuncInfo {
    /// First instruction of the function.
    pub insn_off: u32,
    /// Its `BTF_KIND_FUNC` type id in the program's BTF.
    pub type_id: u32,
}

/// The BTF a program is loaded with: Linux wants it (with one [`FuncInfo`] per function) for
/// programs whose subprograms are callbacks, e.g. of `bpf_loop`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgBtf {
    /// The object's BTF, loaded with `BPF_BTF_LOAD`.
    pub btf: BtfFd,
    /// One record per function of the program, sorted by `insn_off`, the first at 0.
    pub func_info: Vec<FuncInfo>,
}

/// The map types resystance uses, with the kernel's `enum bpf_map_type` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MapType {
    /// `BPF_MAP_TYPE_HASH` (1).
    Hash,
    /// `BPF_MAP_TYPE_ARRAY` (2).
    Array,
    /// `BPF_MAP_TYPE_PERCPU_ARRAY` (6).
    PercpuArray,
    /// `BPF_MAP_TYPE_RINGBUF` (27).
    Ringbuf,
}

impl MapType {
    /// The kernel's numeric map type.
    pub fn kernel_id(self) -> u32 {
        match self {
            MapType::Hash => 1,
            MapType::Array => 2,
            MapType::PercpuArray => 6,
            MapType::Ringbuf => 27,
        }
    }
}

/// What `BPF_MAP_CREATE` is asked for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapSpec {
    /// The map's name (at most 15 bytes reach the kernel).
    pub name: String,
    /// Its type.
    pub map_type: MapType,
    /// Key size in bytes.
    pub key_size: u32,
    /// Value size in bytes.
    pub value_size: u32,
    /// Maximum number of entries.
    pub max_entries: u32,
    /// `BPF_F_*` flags (e.g. `BPF_F_MMAPABLE` = 1 << 10).
    pub flags: u32,
}

/// The program types resystance loads, with the kernel's `enum bpf_prog_type` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ProgType {
    /// `BPF_PROG_TYPE_SYSCALL` (31): sleepable, run through `BPF_PROG_TEST_RUN`.
    Syscall,
}

impl ProgType {
    /// The kernel's numeric program type.
    pub fn kernel_id(self) -> u32 {
        match self {
            ProgType::Syscall => 31,
        }
    }
}

/// What `BPF_PROG_LOAD` is asked for: instructions already relocated (map references resolved
/// to map fds) by the object loader.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgLoad {
    /// The program's name.
    pub name: String,
    /// Its type.
    pub prog_type: ProgType,
    /// Raw little-endian eBPF instructions, 8 bytes each (wide loads take two).
    pub insns: Vec<u64>,
    /// The license string (GPL-only helpers need a GPL-compatible one).
    pub license: String,
}

/// A program the verifier accepted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgLoaded {
    /// Its descriptor.
    pub fd: ProgFd,
    /// The verifier's processed-instruction count, when it reports one.
    pub verified_insns: Option<u32>,
    /// The verifier log: empty after a successful load (loads run without a log; only a
    /// rejection is loaded again with one).
    pub log: String,
}

/// What `BPF_PROG_TEST_RUN` reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestRunResult {
    /// The program's return value (Linux reports the low 32 bits of r0).
    pub retval: u32,
    /// The run's duration in nanoseconds: as the kernel measured it when it reports one; for
    /// `BPF_PROG_TYPE_SYSCALL` programs, which Linux does not time, the wall time of the
    /// `bpf(2)` call.
    pub duration_ns: u64,
}
