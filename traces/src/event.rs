//! The event vocabulary: one [`Call`] per kernel-boundary method, one [`Ret`] per outcome.
//!
//! Data buffers are not part of an event; their lengths are, and a recorder may add digests.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{
    BtfFd, CpuWork, CqState, Cqe, Fd, KernelError, MapFd, MapSpec, MemId, OpenFlags, ProgFd,
    ProgType, RingId, Sqe, SyscallKind, Task, UringParams,
};

/// One call across the kernel boundary with its arguments.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)] // the fields mirror the `Kernel` method arguments one to one
pub enum Call {
    Open {
        path: PathBuf,
        flags: OpenFlags,
    },
    Close {
        fd: Fd,
    },
    Pread {
        fd: Fd,
        len: usize,
        offset: u64,
    },
    Pwrite {
        fd: Fd,
        len: usize,
        offset: u64,
    },
    Fsync {
        fd: Fd,
    },
    Fdatasync {
        fd: Fd,
    },
    FileSize {
        fd: Fd,
    },
    Unlink {
        path: PathBuf,
    },
    Rename {
        from: PathBuf,
        to: PathBuf,
    },
    Mkdir {
        path: PathBuf,
    },
    ListDir {
        path: PathBuf,
    },
    MemAlloc {
        len: usize,
    },
    MemFree {
        mem: MemId,
    },
    MemRead {
        mem: MemId,
        offset: usize,
        len: usize,
    },
    MemWrite {
        mem: MemId,
        offset: usize,
        len: usize,
    },
    UringSetup {
        params: UringParams,
    },
    UringRegisterBuffers {
        ring: RingId,
        regions: Vec<MemId>,
    },
    UringRegisterFiles {
        ring: RingId,
        fds: Vec<Fd>,
    },
    UringQueue {
        ring: RingId,
        sqe: Sqe,
    },
    UringSubmitAndWait {
        ring: RingId,
        wait_nr: u32,
    },
    UringReap {
        ring: RingId,
        max: usize,
    },
    UringCqState {
        ring: RingId,
    },
    UringClose {
        ring: RingId,
    },
    BpfMapCreate {
        spec: MapSpec,
    },
    BpfMapMmap {
        map: MapFd,
    },
    BpfMapLookup {
        map: MapFd,
        key_len: usize,
    },
    BpfMapUpdate {
        map: MapFd,
        key_len: usize,
        value_len: usize,
        flags: u64,
    },
    BpfMapFreeze {
        map: MapFd,
    },
    BpfProgLoad {
        name: String,
        prog_type: ProgType,
        insn_count: usize,
    },
    BpfBtfLoad {
        len: usize,
    },
    BpfProgLoadBtf {
        name: String,
        prog_type: ProgType,
        insn_count: usize,
        btf: BtfFd,
        func_info_count: usize,
    },
    BpfProgTestRun {
        prog: ProgFd,
        ctx_len: usize,
    },
    NowNs,
    SleepNs {
        ns: u64,
    },
    CpuWork(CpuWork),
    SwitchTask {
        task: Task,
        start_ns: u64,
    },
}

impl Call {
    /// The system call this boundary call costs, or `None` for user-space operations (ring and
    /// mapped-memory access, the vDSO clock). `UringSubmitAndWait` may cost zero or more
    /// `io_uring_enter` calls; its [`crate::Submitted`] result says how many.
    pub fn syscall_kind(&self) -> Option<SyscallKind> {
        Some(match self {
            Call::Open { .. } => SyscallKind::Open,
            Call::Close { .. } | Call::UringClose { .. } => SyscallKind::Close,
            Call::Pread { .. } => SyscallKind::Pread,
            Call::Pwrite { .. } => SyscallKind::Pwrite,
            Call::Fsync { .. } => SyscallKind::Fsync,
            Call::Fdatasync { .. } => SyscallKind::Fdatasync,
            Call::FileSize { .. } => SyscallKind::Fstat,
            Call::Unlink { .. } => SyscallKind::Unlink,
            Call::Rename { .. } => SyscallKind::Rename,
            Call::Mkdir { .. } => SyscallKind::Mkdir,
            Call::ListDir { .. } => SyscallKind::Getdents,
            Call::MemAlloc { .. } | Call::BpfMapMmap { .. } => SyscallKind::Mmap,
            Call::MemFree { .. } => SyscallKind::Munmap,
            Call::UringSetup { .. } => SyscallKind::IoUringSetup,
            Call::UringRegisterBuffers { .. } | Call::UringRegisterFiles { .. } => {
                SyscallKind::IoUringRegister
            }
            Call::UringSubmitAndWait { .. } => SyscallKind::IoUringEnter,
            Call::BpfMapCreate { .. } => SyscallKind::BpfMapCreate,
            Call::BpfMapLookup { .. } => SyscallKind::BpfMapLookup,
            Call::BpfMapUpdate { .. } => SyscallKind::BpfMapUpdate,
            Call::BpfMapFreeze { .. } => SyscallKind::BpfMapFreeze,
            Call::BpfProgLoad { .. } | Call::BpfProgLoadBtf { .. } => SyscallKind::BpfProgLoad,
            Call::BpfBtfLoad { .. } => SyscallKind::BpfBtfLoad,
            Call::BpfProgTestRun { .. } => SyscallKind::BpfProgTestRun,
            Call::SleepNs { .. } => SyscallKind::Nanosleep,
            Call::MemRead { .. }
            | Call::MemWrite { .. }
            | Call::UringQueue { .. }
            | Call::UringReap { .. }
            | Call::UringCqState { .. }
            | Call::NowNs
            | Call::CpuWork(_)
            | Call::SwitchTask { .. } => return None,
        })
    }
}

/// The outcome of one call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub enum Ret {
    Unit,
    Fd(Fd),
    Size(u64),
    Names(Vec<String>),
    Mem(MemId),
    Ring(RingId),
    Submitted {
        submitted: u32,
        enter_calls: u32,
    },
    Cqes(Vec<Cqe>),
    CqState(CqState),
    Map(MapFd),
    Btf(BtfFd),
    Prog {
        fd: ProgFd,
        verified_insns: Option<u32>,
    },
    TestRun {
        retval: u32,
        duration_ns: u64,
    },
    Time {
        ns: u64,
    },
    Err(KernelError),
}

/// One recorded crossing: when, what, and what came back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Position in the trace, from 0.
    pub seq: u64,
    /// The kernel's clock when the call returned, in nanoseconds.
    pub t_ns: u64,
    /// The call.
    pub call: Call,
    /// Its outcome.
    pub ret: Ret,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{SqeFile, SqeOp};

    #[test]
    fn events_round_trip_through_serde() {
        let events = vec![
            Event {
                seq: 0,
                t_ns: 10,
                call: Call::Open {
                    path: "/db/000007.sst".into(),
                    flags: OpenFlags::READ,
                },
                ret: Ret::Fd(Fd(3)),
            },
            Event {
                seq: 1,
                t_ns: 10,
                call: Call::SwitchTask {
                    task: Task::Compaction,
                    start_ns: 7,
                },
                ret: Ret::Unit,
            },
            Event {
                seq: 1,
                t_ns: 10,
                call: Call::CpuWork(CpuWork::new(crate::CpuWorkKind::Write, 1, 130)),
                ret: Ret::Unit,
            },
            Event {
                seq: 1,
                t_ns: 11,
                call: Call::UringQueue {
                    ring: RingId(0),
                    sqe: Sqe {
                        op: SqeOp::ReadFixed {
                            file: SqeFile::Fixed(1),
                            buf_index: 2,
                            buf_offset: 4096,
                            len: 4096,
                            offset: 8192,
                        },
                        user_data: 7,
                        link: true,
                        drain: true,
                    },
                },
                ret: Ret::Unit,
            },
            Event {
                seq: 2,
                t_ns: 11,
                call: Call::UringCqState { ring: RingId(0) },
                ret: Ret::CqState(crate::CqState {
                    ready: 8,
                    overflow_pending: true,
                    dropped: 0,
                }),
            },
            Event {
                seq: 3,
                t_ns: 12,
                call: Call::Pread {
                    fd: Fd(3),
                    len: 4096,
                    offset: 0,
                },
                ret: Ret::Err(KernelError::Errno {
                    call: SyscallKind::Pread,
                    errno: crate::Errno::EIO,
                }),
            },
        ];
        let text = serde_json::to_string(&events).unwrap();
        let back: Vec<Event> = serde_json::from_str(&text).unwrap();
        assert_eq!(back, events);
    }

    #[test]
    fn user_space_operations_are_not_syscalls() {
        assert_eq!(Call::NowNs.syscall_kind(), None);
        let work = CpuWork::new(crate::CpuWorkKind::Merge, 10, 4096);
        assert_eq!(Call::CpuWork(work).syscall_kind(), None);
        assert_eq!(
            Call::SwitchTask {
                task: Task::Flush,
                start_ns: 5
            }
            .syscall_kind(),
            None
        );
        assert_eq!(
            Call::UringReap {
                ring: RingId(0),
                max: 8
            }
            .syscall_kind(),
            None
        );
        assert_eq!(
            Call::UringCqState { ring: RingId(0) }.syscall_kind(),
            None,
            "reading the rings' shared memory"
        );
        assert_eq!(
            Call::Pread {
                fd: Fd(3),
                len: 1,
                offset: 0
            }
            .syscall_kind(),
            Some(SyscallKind::Pread)
        );
        assert_eq!(
            Call::BpfMapFreeze { map: MapFd(Fd(4)) }.syscall_kind(),
            Some(SyscallKind::BpfMapFreeze)
        );
        assert_eq!(
            Call::BpfBtfLoad { len: 100 }.syscall_kind(),
            Some(SyscallKind::BpfBtfLoad)
        );
        assert_eq!(
            Call::BpfProgLoadBtf {
                name: "loop".into(),
                prog_type: ProgType::Syscall,
                insn_count: 40,
                btf: BtfFd(Fd(5)),
                func_info_count: 2,
            }
            .syscall_kind(),
            Some(SyscallKind::BpfProgLoad)
        );
    }
}
