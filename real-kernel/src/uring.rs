//! io_uring on the real kernel, through the `io-uring` crate.
//!
//! One [`Ring`] per `io_uring_setup(2)`. The ring keeps the kernel from ever touching memory
//! user space may unmap:
//!
//! * every SQE is checked against the bounds of the region it names (its `MemId`, or the
//!   registered buffer behind its index) when it is queued, so a bad offset or length is refused
//!   in user space and never becomes kernel DMA outside the region;
//! * the region of every SQE is *pinned* from queueing until its CQE is reaped, and every
//!   registered region until the ring is closed: `mem_free` answers `EBUSY` meanwhile;
//! * the kernel sees a slot number as each SQE's `user_data` (the caller's value is kept beside
//!   it), so completions unpin exactly the SQE they belong to even when callers reuse values;
//! * at most `cq_entries` SQEs are in flight (queued or submitted, not yet reaped), so the
//!   completion ring cannot overflow and every completion is seen by a plain reap — unless the
//!   ring was set up with `cq_overcommit`, which allows `CQ_OVERCOMMIT_RINGS_MAX` times as
//!   many: completions that find the CQ full then wait in the kernel's overflow list, their
//!   slots (and the memory they pin) held until they are flushed into the CQ and reaped;
//! * closing a ring first submits what is queued and waits for every completion, flushing
//!   overflowed ones as it reaps.
//!
//! What Linux 6.18 does when the CQ overflows (measured here with a scratch program over this
//! crate's `io-uring`: sq 4, cq 8, NOPs and reads submitted without reaping; sim/README.md has
//! the full list): `IORING_FEAT_NODROP` is set; `io_uring_enter` submits everything (never
//! `EBUSY`); completions that find the CQ full, or find earlier ones already waiting, go to
//! the end of the overflow list and `IORING_SQ_CQ_OVERFLOW` is set; the CQ's `overflow`
//! counter stays 0 (it counts drops); only an enter with `GETEVENTS` moves them into the CQ, in
//! order, as far as it has room, clearing the flag once the list is empty; and a wait is capped
//! at the CQ's size.
//!
//! System calls are counted by what is really called: `io_uring_setup` plus the `mmap`s of the
//! rings, `io_uring_register`, each `io_uring_enter` (none when an awake SQPOLL thread takes
//! the SQEs and completions arrive while we poll the ring), and the `munmap`s and `close` of
//! teardown. Queueing and reaping are memory operations on the shared rings.

use std::collections::HashMap;
use std::sync::atomic::{fence, Ordering};
use std::sync::Mutex;

use io_uring::{opcode, squeue, types, IoUring};
use resystance_traces::{
    CqState, Cqe, Errno, Fd, KernelError, KernelResult, MemId, Sqe, SqeFile, SqeMemory, SqeOp,
    Submitted, SyscallCounter, SyscallKind, UringParams,
};

/// Largest submission ring we set up (the kernel's own limit is 32768).
pub const SQ_ENTRIES_MAX: u32 = 4096;
/// Largest completion ring we set up (the kernel's own limit is 65536).
pub const CQ_ENTRIES_MAX: u32 = 2 * SQ_ENTRIES_MAX;
/// How long `submit_and_wait` on an SQPOLL ring watches the rings in user space before it
/// sleeps in `io_uring_enter(GETEVENTS)` instead: the SQPOLL thread completes page-cache reads
/// within microseconds, while a disk batch may take milliseconds and is better waited for in
/// the kernel than by burning a core.
pub const SQPOLL_SPIN_NS_MAX: u64 = 1_000_000;
/// How long the spin goes on without the kernel taking an SQE or posting a CQE. No progress
/// usually means the SQPOLL thread shares our CPU and cannot run while we spin (or the I/O
/// goes to a disk): waiting in the kernel then lets it run.
pub const SQPOLL_STALL_NS_MAX: u64 = 50_000;
const _: () = assert!(SQPOLL_STALL_NS_MAX <= SQPOLL_SPIN_NS_MAX);
/// `io_uring_enter` calls one `submit_and_wait` may make (interrupted waits are retried).
const ENTER_CALLS_MAX: u32 = 1_000;

const _: () = assert!(CQ_ENTRIES_MAX >= SQ_ENTRIES_MAX);

/// `ECANCELED`: what a linked SQE completes with when an earlier link failed.
pub const ECANCELED: i32 = libc::ECANCELED;

/// A mapping made by `mem_alloc` or `bpf_map_mmap`, and who holds it.
#[derive(Debug)]
pub(crate) struct Mapping {
    /// Base address.
    pub(crate) addr: usize,
    /// Length in bytes.
    pub(crate) len: usize,
    /// Rings that registered it as a fixed buffer and are not closed.
    pub(crate) registered: u32,
    /// SQEs reading into or writing from it whose completions are not reaped.
    pub(crate) in_flight: u32,
}

impl Mapping {
    /// Whether unmapping it now could leave the kernel with a dangling address.
    pub(crate) fn busy(&self) -> bool {
        self.registered > 0 || self.in_flight > 0
    }
}

/// The memory table shared with `RealKernel`.
pub(crate) type Mappings = Mutex<HashMap<u32, Mapping>>;

/// A registered fixed buffer: which region, and where it was when registered (it cannot move
/// or go away while registered).
#[derive(Clone, Copy, Debug)]
struct FixedBuffer {
    mem: MemId,
    addr: usize,
    len: usize,
}

/// One SQE between queueing and reaping.
#[derive(Clone, Copy, Debug)]
struct Slot {
    user_data: u64,
    /// The region it pins.
    mem: Option<MemId>,
}

/// An io_uring instance and what it holds.
pub(crate) struct Ring {
    /// `None` once closed.
    uring: Option<IoUring>,
    sqpoll: bool,
    /// `mmap`s its rings took (2 with `IORING_FEAT_SINGLE_MMAP`, else 3).
    ring_mmaps: u64,
    buffers: Vec<FixedBuffer>,
    files: u32,
    /// SQEs queued since the last `submit_and_wait` (an SQPOLL thread may already have taken
    /// some of them: they were handed over when queued).
    queued: u32,
    /// Linked SQEs whose chain has not ended yet, written into the ring with the SQE that ends
    /// it: an SQPOLL thread takes what is published, and Linux ends a chain at the end of
    /// what it took, so a chain published piece by piece could lose its links (a sync would
    /// no longer wait for the write before it).
    held: Vec<squeue::Entry>,
    /// Entries the completion ring holds (the kernel's rounded-up size).
    cq_entries: u32,
    /// Indexed by the `user_data` the kernel sees; `UringParams::in_flight_max` long.
    slots: Vec<Option<Slot>>,
    free_slots: Vec<u32>,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("open", &self.uring.is_some())
            .field("sqpoll", &self.sqpoll)
            .field("buffers", &self.buffers)
            .field("files", &self.files)
            .field("in_flight", &self.in_flight())
            .finish_non_exhaustive()
    }
}

fn errno_of(err: &std::io::Error) -> Errno {
    Errno(err.raw_os_error().unwrap_or(libc::EIO))
}

fn error(call: SyscallKind, errno: Errno) -> KernelError {
    KernelError::Errno { call, errno }
}

/// A user-space refusal of `uring_queue` (no system call is made).
fn refuse(errno: i32) -> KernelError {
    error(SyscallKind::IoUringEnter, Errno(errno))
}

/// What `/proc/sys/kernel/io_uring_disabled` says, for error messages.
pub(crate) fn io_uring_disabled_sysctl() -> Option<u32> {
    std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

impl Ring {
    /// `io_uring_setup(2)` and the `mmap`s of its rings.
    pub(crate) fn setup(params: &UringParams, counter: &SyscallCounter) -> KernelResult<Ring> {
        let call = SyscallKind::IoUringSetup;
        let cq_entries = params.cq_entries.unwrap_or(2 * params.sq_entries);
        if params.sq_entries == 0
            || params.sq_entries > SQ_ENTRIES_MAX
            || cq_entries < params.sq_entries
            || cq_entries > CQ_ENTRIES_MAX
            // A poller posting into a full CQ would need flushes this ring does not make.
            || (params.cq_overcommit && params.sqpoll)
        {
            return Err(error(call, Errno::EINVAL));
        }
        let mut builder = IoUring::builder();
        // Every SQE is submitted even if an earlier one fails to start (its CQE says why),
        // so "queued" and "in flight" never disagree.
        builder.setup_submit_all();
        builder.setup_cqsize(cq_entries);
        if params.sqpoll {
            builder.setup_sqpoll(params.sq_thread_idle_ms);
        }
        counter.count(call);
        let uring = builder.build(params.sq_entries).map_err(|e| {
            let errno = errno_of(&e);
            if errno == Errno::EPERM {
                let sysctl = io_uring_disabled_sysctl()
                    .map_or_else(|| "absent".to_string(), |v| v.to_string());
                KernelError::NotPermitted {
                    call,
                    errno,
                    missing: format!(
                        "io_uring enabled for this process (kernel.io_uring_disabled is {sysctl}; \
                         0 allows everyone){}",
                        if params.sqpoll {
                            ", and for SQPOLL root or CAP_SYS_NICE on old kernels"
                        } else {
                            ""
                        }
                    ),
                }
            } else {
                error(call, errno)
            }
        })?;
        let ring_mmaps = if uring.params().is_feature_single_mmap() {
            2
        } else {
            3
        };
        for _ in 0..ring_mmaps {
            counter.count(SyscallKind::Mmap);
        }
        let cq_entries = uring.params().cq_entries();
        let in_flight_max = params.in_flight_max(cq_entries);
        Ok(Ring {
            sqpoll: params.sqpoll,
            ring_mmaps,
            buffers: Vec::new(),
            files: 0,
            queued: 0,
            held: Vec::new(),
            cq_entries,
            slots: vec![None; in_flight_max as usize],
            free_slots: (0..in_flight_max).rev().collect(),
            uring: Some(uring),
        })
    }

    fn uring(&mut self, call: SyscallKind) -> KernelResult<&mut IoUring> {
        self.uring.as_mut().ok_or(error(call, Errno::EBADF))
    }

    /// SQEs queued or submitted whose completions are not reaped.
    fn in_flight(&self) -> u32 {
        (self.slots.len() - self.free_slots.len()) as u32
    }

    /// `io_uring_register(IORING_REGISTER_BUFFERS)` over `regions`, which are pinned until the
    /// ring closes.
    pub(crate) fn register_buffers(
        &mut self,
        regions: &[MemId],
        mappings: &Mappings,
        counter: &SyscallCounter,
    ) -> KernelResult<()> {
        let call = SyscallKind::IoUringRegister;
        self.uring(call)?;
        if !self.buffers.is_empty() {
            // The kernel would say the same; this ring keeps one buffer table for its life.
            return Err(error(call, Errno::EBUSY));
        }
        let mut maps = mappings.lock().expect("mappings lock");
        let mut buffers = Vec::with_capacity(regions.len());
        for &mem in regions {
            let m = maps.get(&mem.0).ok_or(error(call, Errno::EINVAL))?;
            buffers.push(FixedBuffer {
                mem,
                addr: m.addr,
                len: m.len,
            });
        }
        let iovecs: Vec<libc::iovec> = buffers
            .iter()
            .map(|b| libc::iovec {
                iov_base: b.addr as *mut libc::c_void,
                iov_len: b.len,
            })
            .collect();
        counter.count(call);
        let uring = self.uring(call)?;
        // SAFETY: every iovec is a live mapping from the memory table (checked above, under its
        // lock), and each is pinned below until the ring is closed, so none is unmapped while
        // the kernel holds it.
        unsafe { uring.submitter().register_buffers(&iovecs) }
            .map_err(|e| error(call, errno_of(&e)))?;
        for b in &buffers {
            maps.get_mut(&b.mem.0)
                .expect("checked above under the same lock")
                .registered += 1;
        }
        self.buffers = buffers;
        Ok(())
    }

    /// `io_uring_register(IORING_REGISTER_FILES)`.
    pub(crate) fn register_files(
        &mut self,
        fds: &[Fd],
        counter: &SyscallCounter,
    ) -> KernelResult<()> {
        let call = SyscallKind::IoUringRegister;
        let raw: Vec<i32> = fds.iter().map(|fd| fd.0).collect();
        let count = u32::try_from(raw.len()).map_err(|_| error(call, Errno::EINVAL))?;
        let uring = self.uring(call)?;
        counter.count(call);
        uring
            .submitter()
            .register_files(&raw)
            .map_err(|e| error(call, errno_of(&e)))?;
        self.files = count;
        Ok(())
    }

    /// The address range `[addr, addr + len)` an SQE names, checked against its region, and the
    /// region to pin.
    fn memory_of(
        &self,
        op: &SqeOp,
        maps: &HashMap<u32, Mapping>,
    ) -> KernelResult<Option<(MemId, usize)>> {
        let within = |offset: usize, len: u32, region_len: usize| {
            offset
                .checked_add(len as usize)
                .is_some_and(|end| end <= region_len)
        };
        match op.memory() {
            None => Ok(None),
            Some(SqeMemory::Region { mem, offset, len }) => {
                let m = maps.get(&mem.0).ok_or(refuse(libc::EINVAL))?;
                if !within(offset, len, m.len) {
                    return Err(refuse(libc::EFAULT));
                }
                Ok(Some((mem, m.addr + offset)))
            }
            Some(SqeMemory::Fixed {
                buf_index,
                offset,
                len,
            }) => {
                let b = self
                    .buffers
                    .get(usize::from(buf_index))
                    .ok_or(refuse(libc::EFAULT))?;
                if !within(offset, len, b.len) {
                    return Err(refuse(libc::EFAULT));
                }
                Ok(Some((b.mem, b.addr + offset)))
            }
        }
    }

    /// Writes one SQE into the submission ring (user space). `EBUSY` when the ring is full or
    /// `in_flight_max` SQEs are already in flight; `EFAULT` when its memory is outside its region;
    /// `EBADF` for a fixed file index past the registered files.
    pub(crate) fn queue(&mut self, sqe: &Sqe, mappings: &Mappings) -> KernelResult<()> {
        let call = SyscallKind::IoUringEnter;
        let files = self.files;
        let held = self.held.len();
        let sq_full = {
            let sq = self.uring(call)?.submission();
            sq.len() + held >= sq.capacity()
        };
        if sq_full || self.free_slots.is_empty() {
            return Err(refuse(libc::EBUSY));
        }
        let file_ok = |file: SqeFile| match file {
            SqeFile::Fd(_) => Ok(()),
            SqeFile::Fixed(i) if i < files => Ok(()),
            SqeFile::Fixed(_) => Err(refuse(libc::EBADF)),
        };
        let offset_ok = |offset: u64| {
            // u64::MAX would mean "the file position" to the kernel; positioned I/O only.
            if i64::try_from(offset).is_ok() {
                Ok(())
            } else {
                Err(refuse(libc::EINVAL))
            }
        };
        match sqe.op {
            SqeOp::Nop => {}
            SqeOp::Fsync { file, .. } => file_ok(file)?,
            SqeOp::Read { file, offset, .. }
            | SqeOp::Write { file, offset, .. }
            | SqeOp::ReadFixed { file, offset, .. }
            | SqeOp::WriteFixed { file, offset, .. } => {
                file_ok(file)?;
                offset_ok(offset)?;
            }
        }
        let mut maps = mappings.lock().expect("mappings lock");
        let memory = self.memory_of(&sqe.op, &maps)?;
        let slot = self.free_slots.pop().expect("checked non-empty above");
        let entry = build_entry(&sqe.op, memory.map(|(_, addr)| addr))
            .user_data(u64::from(slot))
            .flags(
                if sqe.link {
                    squeue::Flags::IO_LINK
                } else {
                    squeue::Flags::empty()
                } | if sqe.drain {
                    squeue::Flags::IO_DRAIN
                } else {
                    squeue::Flags::empty()
                },
            );
        if let Some((mem, _)) = memory {
            maps.get_mut(&mem.0)
                .expect("memory_of found it under the same lock")
                .in_flight += 1;
        }
        self.slots[slot as usize] = Some(Slot {
            user_data: sqe.user_data,
            mem: memory.map(|(mem, _)| mem),
        });
        drop(maps);
        self.queued += 1;
        self.held.push(entry);
        if !sqe.link {
            self.publish_held(call)?;
        }
        Ok(())
    }

    /// Writes the held SQEs (a chain, ended or not) into the submission ring and publishes
    /// them.
    fn publish_held(&mut self, call: SyscallKind) -> KernelResult<()> {
        if self.held.is_empty() {
            return Ok(());
        }
        let held = std::mem::take(&mut self.held);
        let mut sq = self.uring(call)?.submission();
        for entry in &held {
            // SAFETY: the entry's buffer (if any) is inside a live region that stays pinned
            // until its completion is reaped or the ring is closed, which first waits for it.
            unsafe { sq.push(entry) }.expect("room checked when each was queued");
        }
        // Dropping `sq` publishes the new tail: an SQPOLL thread may take the SQEs from here on.
        drop(sq);
        Ok(())
    }

    /// Submits the queued SQEs and waits until `wait_nr` completions are in the completion ring.
    pub(crate) fn submit_and_wait(
        &mut self,
        wait_nr: u32,
        counter: &SyscallCounter,
        now_ns: impl Fn() -> u64,
    ) -> KernelResult<Submitted> {
        let call = SyscallKind::IoUringEnter;
        // A chain still open ends here, as Linux ends one at the end of a submission.
        self.publish_held(call)?;
        let in_flight = self.in_flight();
        let sqpoll = self.sqpoll;
        let queued = self.queued;
        let cq_entries = self.cq_entries;
        let uring = self.uring(call)?;
        if wait_nr > in_flight {
            // More completions than SQEs in flight: the wait could never end.
            return Err(error(call, Errno::EINVAL));
        }
        // Not yet taken by the kernel (with SQPOLL, possibly some queued before the last call).
        let pending = uring.submission().len() as u32;
        // Linux ends a wait once the CQ holds min(wait_nr, its size): more cannot fit.
        let target = wait_nr.min(cq_entries);
        let ready = |uring: &mut IoUring| uring.completion().len() as u32 >= target;
        // Overflowed completions that only a GETEVENTS enter can move into a CQ with room.
        let flushable = |uring: &mut IoUring| {
            uring.submission().cq_overflow() && (uring.completion().len() as u32) < cq_entries
        };
        let mut enter_calls = 0u32;
        let mut enter = |uring: &mut IoUring, to_submit: u32, flags: u32| -> KernelResult<u32> {
            assert!(
                enter_calls < ENTER_CALLS_MAX,
                "io_uring_enter retried without end"
            );
            enter_calls += 1;
            counter.count(call);
            // SAFETY: no argument struct is passed; every SQE's memory is pinned (see queue).
            match unsafe {
                uring
                    .submitter()
                    .enter::<libc::sigset_t>(to_submit, wait_nr, flags, None)
            } {
                Ok(n) => Ok(n as u32),
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => Ok(0),
                Err(e) => Err(error(call, errno_of(&e))),
            }
        };
        const GETEVENTS: u32 = io_uring::EnterFlags::GETEVENTS.bits();
        const SQ_WAKEUP: u32 = io_uring::EnterFlags::SQ_WAKEUP.bits();
        if !sqpoll {
            assert!(
                pending <= queued,
                "SQEs left over from an earlier call went uncounted"
            );
            let mut submitted = 0;
            while submitted < pending || !ready(uring) || flushable(uring) {
                let flags = if ready(uring) && !flushable(uring) {
                    0
                } else {
                    GETEVENTS
                };
                submitted += enter(uring, pending - submitted, flags)?;
            }
            // IORING_SETUP_SUBMIT_ALL: the kernel takes every SQE it is given. Any it took in
            // an earlier call that then failed are counted now.
            assert_eq!(submitted, pending);
            self.queued = 0;
            return Ok(Submitted {
                submitted: queued,
                enter_calls,
            });
        }
        assert!(
            !flushable(uring),
            "SQPOLL rings do not overcommit, so their CQ never overflows"
        );
        // SQPOLL: the SQEs are already published. The poller needs a wakeup only when it has
        // gone to sleep; the fence orders our tail store before the flag load (liburing's
        // protocol, see the crate's `need_wakeup`).
        let need_wakeup = |uring: &mut IoUring| {
            fence(Ordering::SeqCst);
            uring.submission().need_wakeup()
        };
        if pending > 0 && need_wakeup(uring) {
            let flags = if ready(uring) {
                SQ_WAKEUP
            } else {
                SQ_WAKEUP | GETEVENTS
            };
            enter(uring, 0, flags)?;
        }
        let progress = |uring: &mut IoUring| {
            let taken = uring.submission().len();
            (taken, uring.completion().len())
        };
        let spin_start_ns = now_ns();
        let mut last_progress = (progress(uring), spin_start_ns);
        let mut polls = 0u64;
        while !ready(uring) {
            polls += 1;
            // The poller may have gone to sleep before taking every SQE.
            if !uring.submission().is_empty() && need_wakeup(uring) {
                enter(uring, 0, SQ_WAKEUP | GETEVENTS)?;
                continue;
            }
            if polls % 16 == 0 {
                let now = now_ns();
                let seen = progress(uring);
                if seen != last_progress.0 {
                    last_progress = (seen, now);
                }
                if now.saturating_sub(last_progress.1) > SQPOLL_STALL_NS_MAX
                    || now.saturating_sub(spin_start_ns) > SQPOLL_SPIN_NS_MAX
                {
                    enter(uring, 0, GETEVENTS)?;
                    continue;
                }
            }
            std::hint::spin_loop();
        }
        self.queued = 0;
        Ok(Submitted {
            submitted: queued,
            enter_calls,
        })
    }

    /// Moves up to `max` completions into `out`, unpinning their memory (user space).
    pub(crate) fn reap(
        &mut self,
        out: &mut Vec<Cqe>,
        max: usize,
        mappings: &Mappings,
    ) -> KernelResult<usize> {
        let uring = self.uring.as_mut().ok_or(refuse(libc::EBADF))?;
        let mut done = Vec::new();
        {
            let mut cq = uring.completion();
            for cqe in cq.by_ref().take(max) {
                done.push((cqe.user_data(), cqe.result(), cqe.flags()));
            }
        }
        let mut maps = mappings.lock().expect("mappings lock");
        for &(slot_id, res, flags) in &done {
            let slot = self
                .slots
                .get_mut(slot_id as usize)
                .and_then(Option::take)
                .expect("the kernel completes only SQEs we queued, once each");
            if let Some(mem) = slot.mem {
                let m = maps
                    .get_mut(&mem.0)
                    .expect("a pinned region cannot be freed");
                m.in_flight -= 1;
            }
            self.free_slots.push(slot_id as u32);
            out.push(Cqe {
                user_data: slot.user_data,
                res,
                flags,
            });
        }
        Ok(done.len())
    }

    /// The completion side as user space sees it in the shared rings.
    pub(crate) fn cq_state(&mut self) -> KernelResult<CqState> {
        let uring = self.uring.as_mut().ok_or(refuse(libc::EBADF))?;
        let overflow_pending = uring.submission().cq_overflow();
        let cq = uring.completion();
        Ok(CqState {
            ready: cq.len() as u32,
            overflow_pending,
            dropped: cq.overflow(),
        })
    }

    /// Submits what is queued, waits for every completion (dropping them), unpins all memory
    /// and tears the ring down (`munmap`s and `close`). On an error the ring stays open.
    pub(crate) fn close(
        &mut self,
        mappings: &Mappings,
        counter: &SyscallCounter,
        now_ns: impl Fn() -> u64 + Copy,
    ) -> KernelResult<()> {
        let call = SyscallKind::Close;
        self.uring.as_ref().ok_or(error(call, Errno::EBADF))?;
        let mut drained = Vec::new();
        // Each round waits for everything in flight, or for a full CQ (flushing overflowed
        // completions into it), so one round per CQ's worth normally suffices.
        for _ in 0..ENTER_CALLS_MAX {
            let in_flight = self.in_flight();
            if in_flight == 0 {
                break;
            }
            self.submit_and_wait(in_flight, counter, now_ns)?;
            drained.clear();
            self.reap(&mut drained, in_flight as usize, mappings)?;
        }
        assert_eq!(self.in_flight(), 0, "closing ring never drained");
        let mut maps = mappings.lock().expect("mappings lock");
        for b in self.buffers.drain(..) {
            maps.get_mut(&b.mem.0)
                .expect("a registered region cannot be freed")
                .registered -= 1;
        }
        drop(maps);
        for _ in 0..self.ring_mmaps {
            counter.count(SyscallKind::Munmap);
        }
        counter.count(SyscallKind::Close);
        // Dropping the crate's ring unmaps its rings and closes its fd.
        self.uring = None;
        Ok(())
    }
}

/// The crate's SQE for `op`, with `addr` the checked address of its memory.
fn build_entry(op: &SqeOp, addr: Option<usize>) -> squeue::Entry {
    macro_rules! on_file {
        ($file:expr, |$target:ident| $build:expr) => {
            match $file {
                SqeFile::Fd(fd) => {
                    let $target = types::Fd(fd.0);
                    $build
                }
                SqeFile::Fixed(i) => {
                    let $target = types::Fixed(i);
                    $build
                }
            }
        };
    }
    let ptr = || addr.expect("memory ops have a checked address") as *mut u8;
    match *op {
        SqeOp::Nop => opcode::Nop::new().build(),
        SqeOp::Read {
            file, len, offset, ..
        } => on_file!(file, |t| opcode::Read::new(t, ptr(), len)
            .offset(offset)
            .build()),
        SqeOp::Write {
            file, len, offset, ..
        } => on_file!(file, |t| opcode::Write::new(t, ptr(), len)
            .offset(offset)
            .build()),
        SqeOp::ReadFixed {
            file,
            buf_index,
            len,
            offset,
            ..
        } => on_file!(file, |t| opcode::ReadFixed::new(t, ptr(), len, buf_index)
            .offset(offset)
            .build()),
        SqeOp::WriteFixed {
            file,
            buf_index,
            len,
            offset,
            ..
        } => on_file!(file, |t| opcode::WriteFixed::new(t, ptr(), len, buf_index)
            .offset(offset)
            .build()),
        SqeOp::Fsync { file, datasync } => on_file!(file, |t| opcode::Fsync::new(t)
            .flags(if datasync {
                types::FsyncFlags::DATASYNC
            } else {
                types::FsyncFlags::empty()
            })
            .build()),
    }
}
