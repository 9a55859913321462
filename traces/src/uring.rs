//! io_uring vocabulary: ring parameters, submission and completion entries.

use serde::{Deserialize, Serialize};

use crate::{Fd, MemId};

/// An io_uring instance handed out by a kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RingId(pub u32);

/// With [`UringParams::cq_overcommit`], how many CQs' worth of SQEs may be in flight: our bound
/// on the kernel's overflow list, which Linux bounds only by the memory it may allocate.
pub const CQ_OVERCOMMIT_RINGS_MAX: u32 = 4;

/// Parameters of `io_uring_setup(2)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UringParams {
    /// Submission-queue entries (a power of two; the kernel rounds up).
    pub sq_entries: u32,
    /// Completion-queue entries; `None` for the kernel's default of twice `sq_entries`.
    pub cq_entries: Option<u32>,
    /// `IORING_SETUP_SQPOLL`: a kernel thread polls the submission queue.
    pub sqpoll: bool,
    /// How long the SQPOLL thread spins before it sleeps and needs a wakeup, in milliseconds.
    pub sq_thread_idle_ms: u32,
    /// Lets up to [`CQ_OVERCOMMIT_RINGS_MAX`] × `cq_entries` SQEs be in flight instead of
    /// `cq_entries`: completions that find the CQ full wait in the kernel's overflow list
    /// (`IORING_FEAT_NODROP`) until an `io_uring_enter(GETEVENTS)` moves them in. Not with
    /// `sqpoll` (`EINVAL`).
    #[serde(default)]
    pub cq_overcommit: bool,
}

impl UringParams {
    /// SQEs that may be in flight (queued or submitted, not reaped) on a ring whose CQ holds
    /// `cq_entries` (the rounded-up size).
    pub fn in_flight_max(&self, cq_entries: u32) -> u32 {
        if self.cq_overcommit {
            cq_entries.saturating_mul(CQ_OVERCOMMIT_RINGS_MAX)
        } else {
            cq_entries
        }
    }
}

impl Default for UringParams {
    fn default() -> Self {
        UringParams {
            sq_entries: 64,
            cq_entries: None,
            sqpoll: false,
            sq_thread_idle_ms: 10,
            cq_overcommit: false,
        }
    }
}

/// The file an SQE targets: a plain descriptor or an index into the registered files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SqeFile {
    /// A plain file descriptor.
    Fd(Fd),
    /// `IOSQE_FIXED_FILE`: an index into the files registered with the ring.
    Fixed(u32),
}

/// The operation of one submission-queue entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SqeOp {
    /// `IORING_OP_NOP`.
    Nop,
    /// `IORING_OP_READ` into `len` bytes of `mem` at `mem_offset`, from the file at `offset`.
    Read {
        /// The file.
        file: SqeFile,
        /// Destination memory.
        mem: MemId,
        /// Offset within `mem`.
        mem_offset: usize,
        /// Bytes to read.
        len: u32,
        /// File offset.
        offset: u64,
    },
    /// `IORING_OP_WRITE` of `len` bytes of `mem` at `mem_offset` to the file at `offset`.
    Write {
        /// The file.
        file: SqeFile,
        /// Source memory.
        mem: MemId,
        /// Offset within `mem`.
        mem_offset: usize,
        /// Bytes to write.
        len: u32,
        /// File offset.
        offset: u64,
    },
    /// `IORING_OP_READ_FIXED` into registered buffer `buf_index`.
    ReadFixed {
        /// The file.
        file: SqeFile,
        /// Registered buffer index.
        buf_index: u16,
        /// Offset within that buffer.
        buf_offset: usize,
        /// Bytes to read.
        len: u32,
        /// File offset.
        offset: u64,
    },
    /// `IORING_OP_WRITE_FIXED` from registered buffer `buf_index`.
    WriteFixed {
        /// The file.
        file: SqeFile,
        /// Registered buffer index.
        buf_index: u16,
        /// Offset within that buffer.
        buf_offset: usize,
        /// Bytes to write.
        len: u32,
        /// File offset.
        offset: u64,
    },
    /// `IORING_OP_FSYNC` (`IORING_FSYNC_DATASYNC` when `datasync`).
    Fsync {
        /// The file.
        file: SqeFile,
        /// Data only.
        datasync: bool,
    },
}

/// The memory an SQE reads from or writes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SqeMemory {
    /// `len` bytes of region `mem` at `offset`.
    Region {
        /// The region.
        mem: MemId,
        /// Offset within it.
        offset: usize,
        /// Bytes.
        len: u32,
    },
    /// `len` bytes of registered buffer `buf_index` at `offset`.
    Fixed {
        /// Registered buffer index.
        buf_index: u16,
        /// Offset within that buffer.
        offset: usize,
        /// Bytes.
        len: u32,
    },
}

impl SqeOp {
    /// `READ` of `len` bytes at file `offset` of `fd` into `mem` at `mem_offset`.
    pub fn read(fd: Fd, mem: MemId, mem_offset: usize, len: u32, offset: u64) -> SqeOp {
        SqeOp::Read {
            file: SqeFile::Fd(fd),
            mem,
            mem_offset,
            len,
            offset,
        }
    }

    /// The memory this operation transfers to or from (`None` for NOP and FSYNC): the one
    /// place kernels read it from, to check and pin it.
    pub fn memory(&self) -> Option<SqeMemory> {
        match *self {
            SqeOp::Nop | SqeOp::Fsync { .. } => None,
            SqeOp::Read {
                mem,
                mem_offset,
                len,
                ..
            }
            | SqeOp::Write {
                mem,
                mem_offset,
                len,
                ..
            } => Some(SqeMemory::Region {
                mem,
                offset: mem_offset,
                len,
            }),
            SqeOp::ReadFixed {
                buf_index,
                buf_offset,
                len,
                ..
            }
            | SqeOp::WriteFixed {
                buf_index,
                buf_offset,
                len,
                ..
            } => Some(SqeMemory::Fixed {
                buf_index,
                offset: buf_offset,
                len,
            }),
        }
    }
}

/// One submission-queue entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sqe {
    /// What to do.
    pub op: SqeOp,
    /// Returned unchanged in the completion.
    pub user_data: u64,
    /// `IOSQE_IO_LINK`: the next SQE starts only after this one succeeds.
    pub link: bool,
    /// `IOSQE_IO_DRAIN`: this SQE starts only once every SQE submitted before it on the ring
    /// has completed, and SQEs submitted after it start only once it has.
    #[serde(default)]
    pub drain: bool,
}

impl Sqe {
    /// `op`, completing with `user_data`, not linked to the next SQE.
    pub fn new(op: SqeOp, user_data: u64) -> Sqe {
        Sqe {
            op,
            user_data,
            link: false,
            drain: false,
        }
    }

    /// `op`, completing with `user_data`, linked to the next SQE (`IOSQE_IO_LINK`: that one
    /// starts only after this one succeeds in full).
    pub fn linked(op: SqeOp, user_data: u64) -> Sqe {
        Sqe {
            op,
            user_data,
            link: true,
            drain: false,
        }
    }

    /// This SQE with `IOSQE_IO_DRAIN`: it starts only once every SQE submitted before it on
    /// the ring has completed (so none of its completions can come before theirs), and later
    /// SQEs start only once it has completed.
    #[must_use]
    pub fn drained(self) -> Sqe {
        Sqe {
            drain: true,
            ..self
        }
    }
}

/// One completion-queue entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cqe {
    /// The SQE's `user_data`.
    pub user_data: u64,
    /// Bytes transferred, or a negative errno.
    pub res: i32,
    /// `IORING_CQE_F_*` flags.
    pub flags: u32,
}

/// What user space sees of a ring's completion side, read from the shared rings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CqState {
    /// CQEs in the completion ring: a reap takes them without a system call.
    pub ready: u32,
    /// `IORING_SQ_CQ_OVERFLOW`: completions wait in the kernel's overflow list, and only an
    /// `io_uring_enter` with `GETEVENTS` moves them into the completion ring.
    pub overflow_pending: bool,
    /// The completion ring's `overflow` counter: completions the kernel dropped (0 with
    /// `IORING_FEAT_NODROP` unless allocating an overflow entry failed).
    pub dropped: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_written_before_cq_overcommit_still_read() {
        let old = r#"{"sq_entries":8,"cq_entries":null,"sqpoll":false,"sq_thread_idle_ms":10}"#;
        let params: UringParams = serde_json::from_str(old).unwrap();
        assert!(!params.cq_overcommit);
        assert_eq!(
            params,
            UringParams {
                sq_entries: 8,
                ..UringParams::default()
            }
        );
    }

    #[test]
    fn overcommit_multiplies_the_in_flight_limit() {
        let plain = UringParams::default();
        assert_eq!(plain.in_flight_max(128), 128);
        let overcommit = UringParams {
            cq_overcommit: true,
            ..plain
        };
        assert_eq!(overcommit.in_flight_max(128), 128 * CQ_OVERCOMMIT_RINGS_MAX);
        assert_eq!(overcommit.in_flight_max(u32::MAX), u32::MAX);
    }
}
