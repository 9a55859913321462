//! The simulated kernel of resystance: a deterministic [`SimKernel`] behind the
//! [`resystance_traces::Kernel`] trait.
//!
//! What is modeled so far (issue #5, first part): an in-memory file system whose files are
//! extents on the NVMe namespace, with page-cache and `O_DIRECT` semantics and Linux's errnos, fsync durability and crashes that lose or tear
//! what was not durable, memory regions, a virtual clock charged by a cost model calibrated on
//! this machine kind, syscall accounting like the real kernel's, and an event log whose xxh3
//! digest is the same for the same seed, and an io_uring model (rings, links, fixed files and
//! buffers, SQPOLL, completions timed by the NVMe model), an NVMe device model (queue pairs,
//! dies on channels, a write cache; presets as RON files), and BPF: maps, mmaps that alias map
//! values, program loads and test runs on `resystance-vm`'s `BpfSubsystem`, timed by a cost
//! model, and fault injection (EIO, short transfers, ENOSPC, latency spikes, media bit flips) at
//! configurable rates from its own seeded stream. `sim/README.md`
//! states the rules and where every number comes from.

mod bpf;
mod clock;
mod cost;
mod events;
mod faults;
mod fs;
mod kernel;
mod mem;
mod namespace;
mod nvme;
mod profile;
mod uring;

pub use bpf::BPF_INSNS_PER_RUN_MAX;
pub use clock::PPM;
pub use cost::{CpuModel, WorkCost, PAGE_BYTES};
pub use events::{
    Op, SimEvent, RESULT_UNSUPPORTED, URING_EXEC_FDATASYNC, URING_EXEC_FSYNC, URING_EXEC_NOP,
    URING_EXEC_READ, URING_EXEC_WRITE,
};
pub use faults::{BitFlip, FaultCounts, FaultKind, FaultProfile};
pub use fs::{FDS_MAX, FD_FIRST, FILE_BYTES_MAX, NAME_BYTES_MAX, SECTOR_BYTES};
pub use kernel::{FileExtent, SimConfig, SimKernel};
pub use mem::MEM_BYTES_MAX;
pub use namespace::{BLOCK_BYTES, EXTENT_ALIGN_BYTES, JOURNAL_BYTES, NAMESPACE_BYTES_DEFAULT};
pub use nvme::{
    DeviceStats, NvmeModel, DIES_MAX, QUEUE_DEPTH_MAX, QUEUE_PAIRS_MAX, RESERVATIONS_MAX,
};
pub use profile::preset_or_file;
pub use uring::{
    CQ_ENTRIES_MAX, ECANCELED, RING_MMAPS, SQPOLL_SPIN_NS_MAX, SQPOLL_STALL_NS_MAX, SQ_ENTRIES_MAX,
};
