//! The io_uring model: rings with real sizes, the opcodes the engine uses, links, fixed files
//! and buffers, SQPOLL, and completion times on the virtual clock.
//!
//! The rules (sim/README.md states them for users):
//! * Sizes as `io_uring_setup(2)`: entries rounded up to powers of two, the CQ twice the SQ
//!   unless given; the same limits as real-kernel's ([`SQ_ENTRIES_MAX`], [`CQ_ENTRIES_MAX`]).
//! * At most `cq_entries` SQEs are in flight (queued or submitted, not reaped), real-kernel's
//!   rule, so the CQ never overflows; queueing past it, or past a full SQ, answers `EBUSY`.
//!   A ring set up with `cq_overcommit` allows
//!   [`resystance_traces::CQ_OVERCOMMIT_RINGS_MAX`] times as many, and its CQ overflows as
//!   Linux 6.18's does (below).
//! * SQEs run when submitted, in submission order, against the same file system as the
//!   synchronous calls (same page cache, `O_DIRECT` and durability rules, same errnos in
//!   `res`). A failed or short SQE with `link` cancels the rest of its chain (`-ECANCELED`);
//!   a linked SQE starts when its predecessor completes. An SQE with `drain`
//!   (`IOSQE_IO_DRAIN`) starts once every SQE submitted before it has completed, and every
//!   SQE submitted after it starts once it has completed (its effect still lands in
//!   submission order, which is the order drain gives).
//! * Each SQE gets a completion time: inline CPU work (page-cache lookups and copies) runs in
//!   order in the submitter (or the SQPOLL thread); device requests go to the NVMe model
//!   ([`Nvme`]) as the ring's own submitter. CQEs are posted in completion-time order (ties:
//!   submission order) and a reap sees only those whose time has come.
//!
//! CQ overflow, as measured on Linux 6.18 (a scratch program over the `io-uring` crate on a
//! ring of sq 4 / cq 8, submitting NOPs, buffered and `O_DIRECT` reads without reaping; the
//! commands are in sim/README.md):
//! * `IORING_FEAT_NODROP` is set and `io_uring_enter` takes every SQE: no `EBUSY`, however many
//!   completions are waiting, and nothing is dropped (the CQ's `overflow` counter stays 0).
//! * A completion is posted to the CQ if it has room and no earlier completion is waiting in
//!   the overflow list; otherwise it goes to the end of that list (so order is kept even when
//!   the CQ has room again), and `IORING_SQ_CQ_OVERFLOW` is set.
//! * Reaping in user space sees only the CQ. An enter without `GETEVENTS` (submitting or not)
//!   leaves the list alone; an enter with `GETEVENTS` moves the list's head into the CQ as far
//!   as it has room and clears the flag once the list is empty.
//! * A `GETEVENTS` wait ends once the CQ holds min(`min_complete`, `cq_entries`).
//! * Costs (1024 NOPs, medians of 200 runs): posting a completion to the overflow list ≈ 100 ns
//!   more than to the CQ; flushing one ≈ 85 ns ([`CpuModel::cq_overflow_ns_per_cqe`],
//!   [`CpuModel::cq_flush_ns_per_cqe`]).

use std::collections::{BTreeMap, VecDeque};

use resystance_traces::{CqState, Errno, Fd, MemId, Sqe, SqeFile, SqeMemory, SqeOp, UringParams};

use crate::clock::Clock;
use crate::cost::CpuModel;
use crate::faults::Faults;
use crate::fs::{FileRef, FileSystem, SyncCost, SECTOR_BYTES};
use crate::mem::Regions;
use crate::nvme::{sync_file, Nvme};

/// Largest submission ring (real-kernel's limit; Linux's own is 32768).
pub const SQ_ENTRIES_MAX: u32 = 4096;
/// Largest completion ring (real-kernel's limit; Linux's own is 65536).
pub const CQ_ENTRIES_MAX: u32 = 2 * SQ_ENTRIES_MAX;
/// How long a wait on an SQPOLL ring spins in user space before it sleeps in
/// `io_uring_enter` (real-kernel's `SQPOLL_SPIN_NS_MAX`).
pub const SQPOLL_SPIN_NS_MAX: u64 = 1_000_000;
/// How long that spin goes on without a completion (real-kernel's `SQPOLL_STALL_NS_MAX`).
pub const SQPOLL_STALL_NS_MAX: u64 = 50_000;
/// `mmap`s (and at close `munmap`s) of a ring's memory: 2 with `IORING_FEAT_SINGLE_MMAP`.
pub const RING_MMAPS: u64 = 2;
/// `ECANCELED`: a linked SQE after a failed one.
pub const ECANCELED: i32 = 125;
/// `EFAULT`: memory outside its region.
pub const EFAULT: Errno = Errno(14);

const _: () = assert!(SQPOLL_STALL_NS_MAX <= SQPOLL_SPIN_NS_MAX);
const _: () = assert!(CQ_ENTRIES_MAX >= SQ_ENTRIES_MAX);

/// What SQE execution touches: the machine outside the ring.
pub struct Machine<'a> {
    /// Files.
    pub fs: &'a mut FileSystem,
    /// Memory regions.
    pub mem: &'a mut Regions,
    /// The clock (for jitter draws; SQE execution never advances it).
    pub clock: &'a mut Clock,
    /// CPU costs.
    pub cpu: &'a CpuModel,
    /// The device.
    pub nvme: &'a mut Nvme,
    /// The fault injector.
    pub faults: &'a mut Faults,
}

#[derive(Clone, Copy, Debug)]
struct Queued {
    sqe: Sqe,
    /// Taken by an awake SQPOLL thread when queued (no wakeup needed for it).
    taken: bool,
    /// The region it pins until reaped.
    mem: Option<MemId>,
}

#[derive(Clone, Copy, Debug)]
struct Completion {
    user_data: u64,
    res: i32,
    mem: Option<MemId>,
}

/// One io_uring instance.
#[derive(Debug)]
pub struct Ring {
    /// Rounded-up sizes.
    pub sq_entries: u32,
    /// Rounded-up sizes.
    pub cq_entries: u32,
    /// SQEs that may be in flight: `cq_entries`, or more with `cq_overcommit`.
    in_flight_max: u32,
    sqpoll: bool,
    idle_ns: u64,
    /// Which submitter the device sees (picks its queue pair).
    submitter: u32,
    /// The SQPOLL thread sleeps from this time on unless it gets work.
    poller_awake_until_ns: u64,
    buffers: Vec<MemId>,
    files: Vec<FileRef>,
    sq: VecDeque<Queued>,
    /// Submitted, not yet posted, by (completion time, submission sequence).
    running: BTreeMap<(u64, u64), Completion>,
    /// Posted to the completion ring, not reaped; at most `cq_entries`.
    cq: VecDeque<Completion>,
    /// Posted while the CQ was full or this list was not empty, in posting order; only a
    /// `GETEVENTS` enter moves them into `cq`.
    overflow: VecDeque<Completion>,
    seq: u64,
    /// No SQE starts before this: the completion time of the last `IOSQE_IO_DRAIN` SQE.
    drain_until_ns: u64,
    /// What each SQE run since the last [`Ring::take_executed`] was, for the event log.
    executed: Vec<([u64; 4], i64)>,
}

/// The sizes `io_uring_setup` gives, or `EINVAL` (also for `cq_overcommit` with `sqpoll`,
/// which real-kernel refuses: its poller would need flushes it does not make).
pub fn ring_sizes(params: &UringParams) -> Result<(u32, u32), Errno> {
    let sq = params.sq_entries;
    if sq == 0 || sq > SQ_ENTRIES_MAX || (params.cq_overcommit && params.sqpoll) {
        return Err(Errno::EINVAL);
    }
    let sq = sq.next_power_of_two();
    let cq = params.cq_entries.unwrap_or(2 * sq);
    if cq == 0 || cq > CQ_ENTRIES_MAX {
        return Err(Errno::EINVAL);
    }
    let cq = cq.next_power_of_two();
    if cq < sq {
        return Err(Errno::EINVAL);
    }
    Ok((sq, cq))
}

/// What one submission did.
#[derive(Clone, Copy, Debug, Default)]
pub struct Submission {
    /// CPU time the submitter spent issuing them inline (already jittered).
    pub inline_ns: u64,
}

impl Ring {
    /// A ring set up at `now_ns` whose requests reach the device as `submitter`.
    pub fn new(params: &UringParams, now_ns: u64, submitter: u32) -> Result<Ring, Errno> {
        let (sq_entries, cq_entries) = ring_sizes(params)?;
        let idle_ns = u64::from(params.sq_thread_idle_ms) * 1_000_000;
        Ok(Ring {
            sq_entries,
            cq_entries,
            in_flight_max: params.in_flight_max(cq_entries),
            sqpoll: params.sqpoll,
            idle_ns,
            submitter,
            // The thread starts awake.
            poller_awake_until_ns: now_ns + idle_ns,
            buffers: Vec::new(),
            files: Vec::new(),
            sq: VecDeque::new(),
            running: BTreeMap::new(),
            cq: VecDeque::new(),
            overflow: VecDeque::new(),
            seq: 0,
            drain_until_ns: 0,
            executed: Vec::new(),
        })
    }

    /// SQEs queued or submitted and not reaped.
    pub fn in_flight(&self) -> u32 {
        let n = self.sq.len() + self.running.len() + self.cq.len() + self.overflow.len();
        u32::try_from(n).expect("bounded by in_flight_max")
    }

    /// SQEs queued and not submitted.
    pub fn pending(&self) -> u32 {
        u32::try_from(self.sq.len()).expect("bounded by sq_entries")
    }

    /// An SQPOLL ring.
    pub fn sqpoll(&self) -> bool {
        self.sqpoll
    }

    /// Some queued SQE was queued while the SQPOLL thread slept: it needs a wakeup.
    pub fn needs_wakeup(&self) -> bool {
        self.sq.iter().any(|q| !q.taken)
    }

    /// Posts every completion whose time has come by `now_ns`, in order: to the CQ while it
    /// has room and nothing waits in the overflow list, else to the end of that list. Returns
    /// how many went to the list (the kernel allocates an entry for each).
    pub fn post(&mut self, now_ns: u64) -> u32 {
        let mut overflowed = 0;
        while let Some(entry) = self.running.first_entry() {
            if entry.key().0 > now_ns {
                break;
            }
            let c = entry.remove();
            if self.overflow.is_empty() && self.cq.len() < self.cq_entries as usize {
                self.cq.push_back(c);
            } else {
                self.overflow.push_back(c);
                overflowed += 1;
            }
        }
        debug_assert!(self.cq.len() <= self.cq_entries as usize);
        overflowed
    }

    /// What a `GETEVENTS` enter does first: moves overflowed completions into the CQ, oldest
    /// first, as far as it has room. Returns how many moved.
    pub fn flush(&mut self) -> u32 {
        let mut moved = 0;
        while self.cq.len() < self.cq_entries as usize {
            let Some(c) = self.overflow.pop_front() else {
                break;
            };
            self.cq.push_back(c);
            moved += 1;
        }
        moved
    }

    /// The completion side as of the last [`Ring::post`] (dropped is always 0: the model never
    /// fails to allocate an overflow entry).
    pub fn cq_state(&self) -> CqState {
        CqState {
            ready: u32::try_from(self.cq.len()).expect("bounded by cq_entries"),
            overflow_pending: !self.overflow.is_empty(),
            dropped: 0,
        }
    }

    /// Completions posted to the CQ, not reaped (as of the last [`Ring::post`]).
    pub fn ready(&self) -> u32 {
        self.cq_state().ready
    }

    /// Overflowed completions waiting for a flush into a CQ that has room for them.
    pub fn flushable(&self) -> bool {
        !self.overflow.is_empty() && self.cq.len() < self.cq_entries as usize
    }

    /// Completion times of the running SQEs that must still be posted (and flushed) before
    /// the CQ holds `n` completions, in order.
    pub fn completion_times(&self, n: u32) -> Vec<u64> {
        let posted = self.cq.len() + self.overflow.len();
        let needed = (n as usize).saturating_sub(posted);
        self.running.keys().take(needed).map(|(t, _)| *t).collect()
    }

    /// `IORING_REGISTER_BUFFERS`: pins every region until close.
    pub fn register_buffers(&mut self, regions: &[MemId], mem: &mut Regions) -> Result<(), Errno> {
        if regions.is_empty() {
            return Err(Errno::EINVAL);
        }
        for &m in regions {
            mem.len_of(m)?;
        }
        for &m in regions {
            mem.pin(m);
        }
        self.buffers = regions.to_vec();
        Ok(())
    }

    /// Already has a buffer table.
    pub fn has_buffers(&self) -> bool {
        !self.buffers.is_empty()
    }

    /// `IORING_REGISTER_FILES`: holds every file description until close.
    pub fn register_files(&mut self, fds: &[Fd], fs: &mut FileSystem) -> Result<(), Errno> {
        if !self.files.is_empty() {
            return Err(Errno::EBUSY);
        }
        if fds.is_empty() {
            return Err(Errno::EINVAL);
        }
        let files = fds
            .iter()
            .map(|&fd| fs.file_ref(fd))
            .collect::<Result<Vec<_>, _>>()?;
        for &f in &files {
            fs.hold(f);
        }
        self.files = files;
        Ok(())
    }

    /// Writes one SQE into the SQ (user space): `EBUSY`, `EBADF`, `EINVAL` or `EFAULT` as
    /// real-kernel refuses it. Pins its memory until reaped.
    pub fn queue(&mut self, sqe: &Sqe, mem: &mut Regions, now_ns: u64) -> Result<(), Errno> {
        if self.sq.len() >= self.sq_entries as usize || self.in_flight() >= self.in_flight_max {
            return Err(Errno::EBUSY);
        }
        let files = self.files.len();
        let file_ok = |file: SqeFile| match file {
            SqeFile::Fixed(i) if i as usize >= files => Err(Errno::EBADF),
            _ => Ok(()),
        };
        let offset_ok = |offset: u64| {
            if i64::try_from(offset).is_ok() {
                Ok(())
            } else {
                Err(Errno::EINVAL)
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
        let region = self.memory_of(&sqe.op, mem)?.map(|(m, _)| m);
        if let Some(m) = region {
            mem.pin(m);
        }
        let taken = self.sqpoll && now_ns < self.poller_awake_until_ns;
        if taken {
            self.poller_awake_until_ns = now_ns + self.idle_ns;
        }
        self.sq.push_back(Queued {
            sqe: *sqe,
            taken,
            mem: region,
        });
        Ok(())
    }

    /// The region and offset an SQE's memory lies at, checked (`EINVAL` for an unknown
    /// region, `EFAULT` outside it or for a buffer index past the table).
    fn memory_of(&self, op: &SqeOp, mem: &Regions) -> Result<Option<(MemId, usize)>, Errno> {
        let check = |m: MemId, offset: usize, len: u32, unknown: Errno| {
            let region_len = mem.len_of(m).map_err(|_| unknown)?;
            match offset.checked_add(len as usize) {
                Some(end) if end <= region_len => Ok(Some((m, offset))),
                _ => Err(EFAULT),
            }
        };
        match op.memory() {
            None => Ok(None),
            Some(SqeMemory::Region {
                mem: m,
                offset,
                len,
            }) => check(m, offset, len, Errno::EINVAL),
            Some(SqeMemory::Fixed {
                buf_index,
                offset,
                len,
            }) => {
                let m = *self.buffers.get(usize::from(buf_index)).ok_or(EFAULT)?;
                check(m, offset, len, EFAULT)
            }
        }
    }

    /// The [`crate::Op::UringExec`] arguments of `op` run on this ring.
    fn exec_args(&self, op: &SqeOp) -> [u64; 4] {
        use crate::events::{
            URING_EXEC_FDATASYNC, URING_EXEC_FSYNC, URING_EXEC_NOP, URING_EXEC_READ,
            URING_EXEC_WRITE,
        };
        let file_code = |f: SqeFile| match f {
            SqeFile::Fd(fd) => u64::try_from(fd.0).unwrap_or(u64::MAX),
            SqeFile::Fixed(i) => u64::MAX - u64::from(i),
        };
        // The kernel numbers a ring's submitter as its id + 1.
        let ring = u64::from(self.submitter.saturating_sub(1));
        match *op {
            SqeOp::Nop => [ring, URING_EXEC_NOP, 0, 0],
            SqeOp::Read { file, offset, .. } | SqeOp::ReadFixed { file, offset, .. } => {
                [ring, URING_EXEC_READ, file_code(file), offset]
            }
            SqeOp::Write { file, offset, .. } | SqeOp::WriteFixed { file, offset, .. } => {
                [ring, URING_EXEC_WRITE, file_code(file), offset]
            }
            SqeOp::Fsync { file, datasync } => {
                let kind = if datasync {
                    URING_EXEC_FDATASYNC
                } else {
                    URING_EXEC_FSYNC
                };
                [ring, kind, file_code(file), 0]
            }
        }
    }

    /// What each SQE run since the last call was: ([`crate::Op::UringExec`] arguments, `res`).
    pub fn take_executed(&mut self) -> Vec<([u64; 4], i64)> {
        std::mem::take(&mut self.executed)
    }

    /// Runs every queued SQE, issuing from `start_ns`; `inline` says the submitter's CPU does
    /// the issuing (without SQPOLL), which the caller then charges to its clock.
    pub fn submit(&mut self, m: &mut Machine<'_>, start_ns: u64) -> Submission {
        let mut cursor = start_ns;
        // The completion time of the previous SQE if it linked to the next one.
        let mut link_from: Option<u64> = None;
        let mut cancel = false;
        while let Some(q) = self.sq.pop_front() {
            let mut issue = link_from.map_or(cursor, |t| t.max(cursor));
            issue = issue.max(self.drain_until_ns);
            if q.sqe.drain {
                // After every SQE submitted before it (reaped ones completed before now).
                if let Some(&(last_done, _)) = self.running.keys().next_back() {
                    issue = issue.max(last_done);
                }
            }
            let (res, done) = if cancel {
                (-ECANCELED, issue)
            } else {
                let (res, cpu_ns, device) = self.execute(&q.sqe.op, m);
                let cpu = m.clock.jittered(cpu_ns);
                if issue == cursor {
                    cursor += cpu; // issued inline, in order
                }
                let ready = issue + cpu;
                let done = match &device {
                    Device::None => ready,
                    Device::Read(ranges) => {
                        m.nvme.read_ranges(m.clock, ready, self.submitter, ranges)
                    }
                    Device::Write(ranges) => {
                        m.nvme.write_ranges(m.clock, ready, self.submitter, ranges)
                    }
                    Device::Sync(c) => sync_file(m.nvme, m.clock, ready, self.submitter, c),
                };
                // A spike delays this request's completion; the device serves the others.
                let done = done + m.faults.spike_ns(device.requests());
                (res, done)
            };
            if q.sqe.drain {
                self.drain_until_ns = done;
            }
            let args = self.exec_args(&q.sqe.op);
            self.executed.push((args, i64::from(res)));
            let failed = res < 0 || short(&q.sqe.op, res);
            cancel = q.sqe.link && (cancel || failed);
            link_from = q.sqe.link.then_some(done);
            self.running.insert(
                (done, self.seq),
                Completion {
                    user_data: q.sqe.user_data,
                    res,
                    mem: q.mem,
                },
            );
            self.seq += 1;
        }
        if self.sqpoll {
            self.poller_awake_until_ns = self.poller_awake_until_ns.max(cursor + self.idle_ns);
        }
        Submission {
            inline_ns: cursor - start_ns,
        }
    }

    /// Runs one SQE's effect: its `res`, inline CPU cost, and device work.
    fn execute(&self, op: &SqeOp, m: &mut Machine<'_>) -> (i32, u64, Device) {
        match self.try_execute(op, m) {
            Ok(v) => v,
            Err(Errno(e)) => (-e, 0, Device::None),
        }
    }

    fn file(&self, file: SqeFile, fs: &FileSystem) -> Result<FileRef, Errno> {
        match file {
            SqeFile::Fd(fd) => fs.file_ref(fd),
            SqeFile::Fixed(i) => Ok(self.files[i as usize]), // checked when queued
        }
    }

    fn try_execute(&self, op: &SqeOp, m: &mut Machine<'_>) -> Result<(i32, u64, Device), Errno> {
        let (file, region, offset, len, write) = match *op {
            SqeOp::Nop => return Ok((0, 0, Device::None)),
            SqeOp::Fsync { file, .. } => {
                let c = m.faults.sync(m.fs, self.file(file, m.fs)?)?;
                return Ok((0, 0, Device::Sync(c)));
            }
            SqeOp::Read {
                file, len, offset, ..
            }
            | SqeOp::ReadFixed {
                file, len, offset, ..
            } => (file, self.memory_of(op, m.mem)?, offset, len, false),
            SqeOp::Write {
                file, len, offset, ..
            }
            | SqeOp::WriteFixed {
                file, len, offset, ..
            } => (file, self.memory_of(op, m.mem)?, offset, len, true),
        };
        let (mem, mem_offset) = region.expect("reads and writes name memory");
        let file = self.file(file, m.fs)?;
        // Regions are page-aligned mappings, so the buffer's address is aligned as its offset.
        if file.direct() && mem_offset as u64 % SECTOR_BYTES != 0 {
            return Err(Errno::EINVAL);
        }
        let len = len as usize;
        if write {
            let data = m.mem.slice(mem, mem_offset, len)?;
            let c = m.faults.write(m.fs, file, data, offset)?;
            let res = i32::try_from(c.bytes).expect("at most RW_BYTES_MAX");
            if c.direct {
                return Ok((res, 0, Device::Write(c.device)));
            }
            let cpu = c.pages * m.cpu.page_cache_ns_per_page + m.cpu.copy_ns(c.bytes as u64);
            Ok((res, cpu, Device::Write(Vec::new())))
        } else {
            let buf = m.mem.slice_mut(mem, mem_offset, len)?;
            let c = m.faults.read(m.fs, file, buf, offset)?;
            let res = i32::try_from(c.bytes).expect("at most RW_BYTES_MAX");
            let cpu = if c.direct {
                0
            } else {
                c.pages * m.cpu.page_cache_ns_per_page + m.cpu.copy_ns(c.bytes as u64)
            };
            // The direct transfer, or the missed pages, where their extents are.
            Ok((res, cpu, Device::Read(c.device)))
        }
    }

    /// Moves up to `max` completions from the CQ into `out` (user space; call [`Ring::post`]
    /// first), unpinning their memory. Overflowed completions stay where they are.
    pub fn reap(
        &mut self,
        out: &mut Vec<resystance_traces::Cqe>,
        max: usize,
        mem: &mut Regions,
    ) -> usize {
        let mut n = 0;
        while n < max {
            let Some(c) = self.cq.pop_front() else {
                break;
            };
            if let Some(region) = c.mem {
                mem.unpin(region);
            }
            out.push(resystance_traces::Cqe {
                user_data: c.user_data,
                res: c.res,
                flags: 0,
            });
            n += 1;
        }
        n
    }

    /// Tears the ring down after it was drained: unpins its buffers, releases its files.
    pub fn release(self, mem: &mut Regions, fs: &mut FileSystem) {
        assert_eq!(
            self.in_flight(),
            0,
            "a ring is drained before it is released"
        );
        for m in self.buffers {
            mem.unpin(m);
        }
        for f in self.files {
            fs.release(f);
        }
    }
}

/// The device work an SQE needs after its inline CPU work.
#[derive(Clone, Debug)]
enum Device {
    None,
    /// Reads of device ranges `(address, bytes)` (none: a page-cache hit).
    Read(Vec<(u64, u64)>),
    /// Writes of device ranges (none: a buffered write).
    Write(Vec<(u64, u64)>),
    /// A file sync: write-back, journal, flush.
    Sync(SyncCost),
}

impl Device {
    /// Whether it makes any device request (a spike can hit only those).
    fn requests(&self) -> bool {
        match self {
            Device::None => false,
            Device::Read(r) | Device::Write(r) => !r.is_empty(),
            Device::Sync(_) => true,
        }
    }
}

/// A read or write that moved fewer bytes than asked (breaks a link, as on Linux).
fn short(op: &SqeOp, res: i32) -> bool {
    match *op {
        SqeOp::Read { len, .. }
        | SqeOp::Write { len, .. }
        | SqeOp::ReadFixed { len, .. }
        | SqeOp::WriteFixed { len, .. } => i64::from(res) < i64::from(len),
        SqeOp::Nop | SqeOp::Fsync { .. } => false,
    }
}
