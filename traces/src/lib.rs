//! The kernel boundary of resystance.
//!
//! Everything the engine and its compaction executors need from an operating system kernel —
//! files, io_uring, BPF and the clock — is one trait, [`Kernel`]. The simulated kernel (`sim`)
//! and the real Linux kernel (`real-kernel`) implement it; executors are written once against
//! it. Every crossing is described by a serializable [`Call`] and [`Ret`], so a run can be
//! recorded as a sequence of [`Event`]s and replayed on the other kernel, and every
//! implementation counts its system calls by [`SyscallKind`].

mod accounted;
mod bpf;
mod counts;
mod error;
mod event;
mod kernel;
mod uring;
mod work;

pub use accounted::Accounted;
pub use bpf::{
    BtfFd, FuncInfo, MapFd, MapSpec, MapType, ProgBtf, ProgFd, ProgLoad, ProgLoaded, ProgType,
    TestRunResult,
};
pub use counts::{SyscallCounter, SyscallCounts, SyscallKind};
pub use error::{Errno, KernelError, KernelResult};
pub use event::{Call, Event, Ret};
pub use kernel::{dirent64_bytes, Fd, Kernel, MemId, OpenFlags, Submitted, GETDENTS_BUFFER_BYTES};
pub use uring::{
    CqState, Cqe, RingId, Sqe, SqeFile, SqeMemory, SqeOp, UringParams, CQ_OVERCOMMIT_RINGS_MAX,
};
pub use work::{CpuWork, CpuWorkKind, Task};
