//! [`SimKernel`]: the simulated kernel behind the [`Kernel`] trait.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use resystance_traces::{
    BtfFd, Cqe, Errno, Fd, Kernel, KernelError, KernelResult, MapFd, MapSpec, MemId, OpenFlags,
    ProgBtf, ProgFd, ProgLoad, ProgLoaded, RingId, Sqe, Submitted, SyscallCounts, SyscallKind,
    TestRunResult, UringParams,
};

use crate::clock::Clock;
use crate::cost::{CpuModel, DeviceModel, PAGE_BYTES};
use crate::events::{digest, result_code, EventLog, Op, SimEvent, RESULT_UNSUPPORTED};
use crate::fs::{FileSystem, ReadCost, SyncCost, WriteCost};
use crate::mem::Regions;
use crate::uring::{
    DeviceQueue, Machine, Ring, RING_MMAPS, SQPOLL_SPIN_NS_MAX, SQPOLL_STALL_NS_MAX,
};

/// The ChaCha stream of the clock's jitter.
const STREAM_JITTER: u64 = 0;
/// The ChaCha stream of crash decisions (kept apart so timing never shifts them).
const STREAM_CRASH: u64 = 1;

/// Where the simulated machine's directories start: durable before the process runs.
const BOOT_DIRS: &[&str] = &["/tmp"];

const BPF_MISSING: &str = "bpf on the simulated kernel runs programs through resystance-vm; \
     that arrives with a follow-up of the sim issue (#5)";

/// How a [`SimKernel`] behaves: its seed and cost models.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimConfig {
    /// Decides every jitter and crash outcome: same seed, same run.
    pub seed: u64,
    /// CPU-side costs.
    pub cpu: CpuModel,
    /// The storage device.
    pub device: DeviceModel,
    /// Every charged cost varies uniformly by up to ± this many parts per million.
    pub jitter_ppm: u32,
    /// At a crash, the chance (parts per million) that a directory's unsynced changes were
    /// committed anyway (by the file system's own journal commit), all of them together.
    pub unsynced_dir_survives_ppm: u32,
    /// Crash instead of making system call number N (from 0, counting every system call
    /// this kernel has made, as [`Kernel::syscall_counts`] totals them).
    pub crash_at_syscall: Option<u64>,
    /// Keep every event in memory ([`SimKernel::events`]); the digest runs either way.
    pub keep_events: bool,
}

impl SimConfig {
    /// The defaults (this host's cost models, ±5% jitter) with `seed`.
    pub fn new(seed: u64) -> SimConfig {
        SimConfig {
            seed,
            cpu: CpuModel::this_host(),
            device: DeviceModel::this_host(),
            jitter_ppm: 50_000,
            unsynced_dir_survives_ppm: 500_000,
            crash_at_syscall: None,
            keep_events: true,
        }
    }
}

#[derive(Debug)]
struct State {
    cfg: SimConfig,
    clock: Clock,
    crash_rng: ChaCha8Rng,
    fs: FileSystem,
    mem: Regions,
    /// Open io_uring instances by id (ids are not reused).
    rings: BTreeMap<u32, Ring>,
    next_ring: u32,
    /// The device queue io_uring requests overlap in.
    queue: DeviceQueue,
    log: EventLog,
    counts: SyscallCounts,
    /// Crashed and not yet restarted: the process is dead, every call fails with `EIO`.
    down: bool,
    crashes: u64,
}

impl State {
    fn crash(&mut self) {
        if self.down {
            return;
        }
        let ppm = self.cfg.unsynced_dir_survives_ppm;
        self.fs.crash(&mut self.crash_rng, ppm);
        self.mem.clear();
        self.rings.clear();
        self.queue = DeviceQueue::default();
        self.down = true;
        self.crashes += 1;
        self.cfg.crash_at_syscall = None;
        let t = self.clock.now_ns();
        self.log
            .record(t, Op::Crash, [self.counts.total(), 0, 0, 0], 0);
    }

    /// One system call inside a call that may make several: the crash point, the count and
    /// the kernel entry's cost. `EIO` when the planned crash fires here.
    fn enter(&mut self, kind: SyscallKind) -> Result<(), Errno> {
        if self.cfg.crash_at_syscall == Some(self.counts.total()) {
            self.crash();
            return Err(Errno::EIO);
        }
        self.counts.add(kind, 1);
        let cost = self.cfg.cpu.syscall_ns;
        self.clock.charge(cost);
        Ok(())
    }

    /// Runs the queued SQEs of `ring` from `start_ns`; returns what was submitted.
    fn submit(&mut self, ring: &mut Ring, start_ns: u64) -> crate::uring::Submission {
        let State {
            fs,
            mem,
            clock,
            cfg,
            queue,
            ..
        } = self;
        let mut m = Machine {
            fs,
            mem,
            clock,
            cpu: &cfg.cpu,
            dev: &cfg.device,
            queue,
        };
        ring.submit(&mut m, start_ns)
    }

    /// `io_uring_enter` as real-kernel's `submit_and_wait` makes it (see sim/README.md).
    fn submit_and_wait(&mut self, ring: &mut Ring, wait_nr: u32) -> Result<Submitted, Errno> {
        const CALL: SyscallKind = SyscallKind::IoUringEnter;
        if wait_nr > ring.in_flight() {
            return Err(Errno::EINVAL); // refused before entering: the wait could never end
        }
        let pending = ring.pending();
        let mut enter_calls = 0;
        if ring.sqpoll() {
            let mut woken = false;
            if pending > 0 && ring.needs_wakeup() {
                self.enter(CALL)?; // IORING_ENTER_SQ_WAKEUP (| GETEVENTS)
                enter_calls += 1;
                woken = true;
            }
            let now = self.clock.now_ns();
            if pending > 0 {
                // The poller's CPU does the issuing: the caller's clock does not pay it.
                self.submit(ring, now);
            }
            if ring.ready(now) < wait_nr {
                let times = ring.completion_times(wait_nr);
                let target = *times.last().expect("wait_nr > 0 here");
                // Spin in user space, as real-kernel does, unless a completion is more than
                // the stall limit away or the whole wait exceeds the spin limit.
                let mut prev = now;
                let mut sleeps = false;
                for &t in times.iter().filter(|&&t| t > now) {
                    if t - prev > SQPOLL_STALL_NS_MAX || t - now > SQPOLL_SPIN_NS_MAX {
                        sleeps = true;
                        break;
                    }
                    prev = t;
                }
                if sleeps && !woken {
                    self.enter(CALL)?; // IORING_ENTER_GETEVENTS
                    enter_calls += 1;
                }
                self.clock.advance_to(target);
            }
        } else {
            if pending == 0 && ring.ready(self.clock.now_ns()) >= wait_nr {
                return Ok(Submitted::default());
            }
            self.enter(CALL)?; // submits and, with GETEVENTS, waits
            enter_calls += 1;
            if pending > 0 {
                let start = self.clock.now_ns();
                let s = self.submit(ring, start);
                self.clock.advance(s.inline_ns);
            }
            if ring.ready(self.clock.now_ns()) < wait_nr {
                let times = ring.completion_times(wait_nr);
                self.clock
                    .advance_to(*times.last().expect("wait_nr > 0 here"));
            }
        }
        Ok(Submitted {
            submitted: pending,
            enter_calls,
        })
    }
}

/// A deterministic simulated kernel: in-memory files with crash semantics, memory regions, a
/// virtual clock with a cost model, and system-call accounting. One lock serialises every
/// call, so a run is a single sequence of events decided by the seed alone.
pub struct SimKernel {
    state: Mutex<State>,
}

impl std::fmt::Debug for SimKernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.lock();
        f.debug_struct("SimKernel")
            .field("seed", &st.cfg.seed)
            .field("now_ns", &st.clock.now_ns())
            .field("events", &st.log.len())
            .field("down", &st.down)
            .finish_non_exhaustive()
    }
}

type CallResult<T> = Result<(T, u64), Errno>;

impl SimKernel {
    /// A kernel with the default configuration and `seed`.
    pub fn new(seed: u64) -> SimKernel {
        SimKernel::with_config(SimConfig::new(seed))
    }

    /// A kernel configured by `cfg`: a booted machine with durable `/` and `/tmp`.
    pub fn with_config(cfg: SimConfig) -> SimKernel {
        let rng = |stream| {
            let mut r = ChaCha8Rng::seed_from_u64(cfg.seed);
            r.set_stream(stream);
            r
        };
        let mut fs = FileSystem::new();
        for dir in BOOT_DIRS {
            fs.prepare_dir(Path::new(dir))
                .expect("boot directories are well formed");
        }
        SimKernel {
            state: Mutex::new(State {
                clock: Clock::new(cfg.jitter_ppm, rng(STREAM_JITTER)),
                crash_rng: rng(STREAM_CRASH),
                fs,
                mem: Regions::default(),
                rings: BTreeMap::new(),
                next_ring: 0,
                queue: DeviceQueue::default(),
                log: EventLog::new(cfg.keep_events),
                counts: SyscallCounts::default(),
                down: false,
                crashes: 0,
                cfg,
            }),
        }
    }

    /// Crashes the machine now (power loss): everything not durable is lost or torn, all
    /// descriptors and memory regions are gone, and every call fails with `EIO` until
    /// [`SimKernel::restart`]. A no-op when already down.
    pub fn crash(&self) {
        self.lock().crash();
    }

    /// Crash instead of making system call number `n` (see [`SimConfig::crash_at_syscall`]);
    /// `None` cancels. Fires once.
    pub fn set_crash_at_syscall(&self, n: Option<u64>) {
        self.lock().cfg.crash_at_syscall = n;
    }

    /// Boots the machine again after a crash: a new process with no descriptors and no
    /// regions, on the files that survived. A no-op when up.
    pub fn restart(&self) {
        let mut st = self.lock();
        if st.down {
            st.down = false;
            let (t, crashes) = (st.clock.now_ns(), st.crashes);
            st.log.record(t, Op::Restart, [crashes, 0, 0, 0], 0);
        }
    }

    /// Crashed and not yet restarted.
    pub fn is_down(&self) -> bool {
        self.lock().down
    }

    /// Crashes so far.
    pub fn crashes(&self) -> u64 {
        self.lock().crashes
    }

    /// Creates `path` and its missing parents as durable directories, outside the boundary
    /// (no system call, no cost; recorded as a harness event): directories that exist before
    /// the simulated process starts.
    pub fn prepare_dir(&self, path: &Path) -> KernelResult<()> {
        let mut st = self.lock();
        let result = st.fs.prepare_dir(path).map_err(|errno| KernelError::Errno {
            call: SyscallKind::Mkdir,
            errno,
        });
        let t = st.clock.now_ns();
        let code = result_code(&result, |()| 0);
        st.log.record(
            t,
            Op::PrepareDir,
            [digest(path.as_os_str().as_encoded_bytes()), 0, 0, 0],
            code,
        );
        result
    }

    /// xxh3 of every event so far: equal for equal runs, bit for bit.
    pub fn event_digest(&self) -> u64 {
        self.lock().log.digest()
    }

    /// The events so far (empty when [`SimConfig::keep_events`] is off).
    pub fn events(&self) -> Vec<SimEvent> {
        self.lock().log.events().to_vec()
    }

    /// How many events were recorded.
    pub fn event_count(&self) -> u64 {
        self.lock().log.len()
    }

    /// Files and directories alive, the root included: names, durable names and open
    /// descriptors keep an inode alive; nothing else does.
    pub fn inode_count(&self) -> usize {
        self.lock().fs.inode_count()
    }

    /// The configuration this kernel runs with.
    pub fn config(&self) -> SimConfig {
        self.lock().cfg.clone()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic in a caller cannot leave the state half-updated: every call mutates it
        // only after its checks pass.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs one system call: the crash point, the count, `f` (which returns its result and
    /// cost), the clock and the event. A failed call still costs a kernel entry.
    fn syscall<T>(
        &self,
        kind: SyscallKind,
        op: Op,
        mut args: [u64; 4],
        ok_code: impl Fn(&T) -> u64,
        f: impl FnOnce(&mut State, &mut [u64; 4]) -> CallResult<T>,
    ) -> KernelResult<T> {
        let mut st = self.lock();
        if st.cfg.crash_at_syscall == Some(st.counts.total()) {
            st.crash();
        }
        let result = if st.down {
            Err(Errno::EIO)
        } else {
            st.counts.add(kind, 1);
            let result = f(&mut st, &mut args);
            let cost = match &result {
                Ok((_, cost)) => *cost,
                Err(_) => st.cfg.cpu.syscall_ns,
            };
            st.clock.charge(cost);
            result.map(|(v, _)| v)
        };
        let result = result.map_err(|errno| KernelError::Errno { call: kind, errno });
        let t = st.clock.now_ns();
        let code = result_code(&result, ok_code);
        st.log.record(t, op, args, code);
        result
    }

    /// A user-space access to a memory region (no system call): costs the copy.
    fn user_copy<T>(
        &self,
        op: Op,
        args: [u64; 4],
        f: impl FnOnce(&mut Regions) -> Result<T, Errno>,
    ) -> KernelResult<T> {
        let mut st = self.lock();
        let result = if st.down {
            Err(Errno::EIO)
        } else {
            let result = f(&mut st.mem);
            let cost = st.cfg.cpu.copy_ns(args[2]);
            if result.is_ok() {
                st.clock.charge(cost);
            }
            result
        };
        // The real kernel reports region errors as `mmap`'s.
        let result = result.map_err(|errno| KernelError::Errno {
            call: SyscallKind::Mmap,
            errno,
        });
        let t = st.clock.now_ns();
        let code = result_code(&result, |_| 0);
        st.log.record(t, op, args, code);
        result
    }

    /// An io_uring call: `f` counts its own system calls ([`State::enter`]) and charges their
    /// costs, as it may make none (user space), one or several.
    fn uring_call<T>(
        &self,
        kind: SyscallKind,
        op: Op,
        mut args: [u64; 4],
        ok_code: impl Fn(&T) -> u64,
        f: impl FnOnce(&mut State, &mut [u64; 4]) -> Result<T, Errno>,
    ) -> KernelResult<T> {
        let mut st = self.lock();
        let result = if st.down {
            Err(Errno::EIO)
        } else {
            f(&mut st, &mut args)
        };
        let result = result.map_err(|errno| KernelError::Errno { call: kind, errno });
        let t = st.clock.now_ns();
        let code = result_code(&result, ok_code);
        st.log.record(t, op, args, code);
        result
    }

    /// A call this kernel does not provide yet: recorded, not counted (like the real kernel's
    /// unsupported calls), free.
    fn unsupported<T>(&self, call: SyscallKind, op: Op, why: &str) -> KernelResult<T> {
        let mut st = self.lock();
        let t = st.clock.now_ns();
        st.log.record(t, op, [0; 4], RESULT_UNSUPPORTED);
        Err(KernelError::Unsupported {
            call,
            why: why.to_string(),
        })
    }
}

fn path_arg(path: &Path) -> u64 {
    digest(path.as_os_str().as_encoded_bytes())
}

fn fd_arg(fd: Fd) -> u64 {
    // Negative descriptors are recorded as their two's complement.
    u64::from(fd.0 as u32)
}

fn read_cost(cpu: &CpuModel, dev: &DeviceModel, c: ReadCost) -> u64 {
    if c.direct {
        return cpu.syscall_ns
            + if c.bytes > 0 {
                dev.read_ns(c.bytes as u64)
            } else {
                0
            };
    }
    let miss = if c.missed_pages > 0 {
        dev.read_ns(c.missed_pages * PAGE_BYTES)
    } else {
        0
    };
    cpu.syscall_ns + c.pages * cpu.page_cache_ns_per_page + cpu.copy_ns(c.bytes as u64) + miss
}

fn write_cost(cpu: &CpuModel, dev: &DeviceModel, c: WriteCost) -> u64 {
    if c.direct {
        return cpu.syscall_ns
            + if c.bytes > 0 {
                dev.write_ns(c.bytes as u64)
            } else {
                0
            };
    }
    cpu.syscall_ns + c.pages * cpu.page_cache_ns_per_page + cpu.copy_ns(c.bytes as u64)
}

fn sync_cost(cpu: &CpuModel, dev: &DeviceModel, c: SyncCost) -> u64 {
    let data = if c.write_back_bytes > 0 {
        dev.write_ns(c.write_back_bytes)
    } else {
        0
    };
    let journal = if c.metadata {
        dev.write_ns(PAGE_BYTES)
    } else {
        0
    };
    cpu.syscall_ns + data + journal + dev.flush_ns
}

impl Kernel for SimKernel {
    fn open(&self, path: &Path, flags: OpenFlags) -> KernelResult<Fd> {
        let flag_bits = [
            flags.read,
            flags.write,
            flags.create,
            flags.exclusive,
            flags.truncate,
            flags.direct,
            flags.directory,
        ]
        .iter()
        .enumerate()
        .fold(0u64, |acc, (i, &on)| acc | (u64::from(on) << i));
        self.syscall(
            SyscallKind::Open,
            Op::Open,
            [path_arg(path), flag_bits, 0, 0],
            |fd: &Fd| fd_arg(*fd),
            |st, _| Ok((st.fs.open(path, flags)?, st.cfg.cpu.syscall_ns)),
        )
    }

    fn close(&self, fd: Fd) -> KernelResult<()> {
        self.syscall(
            SyscallKind::Close,
            Op::Close,
            [fd_arg(fd), 0, 0, 0],
            |()| 0,
            |st, _| Ok((st.fs.close(fd)?, st.cfg.cpu.syscall_ns)),
        )
    }

    fn pread(&self, fd: Fd, buf: &mut [u8], offset: u64) -> KernelResult<usize> {
        self.syscall(
            SyscallKind::Pread,
            Op::Pread,
            [fd_arg(fd), offset, buf.len() as u64, 0],
            |n: &usize| *n as u64,
            |st, args| {
                let c = st.fs.pread(fd, buf, offset)?;
                args[3] = digest(&buf[..c.bytes]);
                Ok((c.bytes, read_cost(&st.cfg.cpu, &st.cfg.device, c)))
            },
        )
    }

    fn pwrite(&self, fd: Fd, buf: &[u8], offset: u64) -> KernelResult<usize> {
        self.syscall(
            SyscallKind::Pwrite,
            Op::Pwrite,
            [fd_arg(fd), offset, buf.len() as u64, digest(buf)],
            |n: &usize| *n as u64,
            |st, _| {
                let c = st.fs.pwrite(fd, buf, offset)?;
                Ok((c.bytes, write_cost(&st.cfg.cpu, &st.cfg.device, c)))
            },
        )
    }

    fn fsync(&self, fd: Fd) -> KernelResult<()> {
        self.syscall(
            SyscallKind::Fsync,
            Op::Fsync,
            [fd_arg(fd), 0, 0, 0],
            |()| 0,
            |st, _| {
                let c = st.fs.sync(fd)?;
                Ok(((), sync_cost(&st.cfg.cpu, &st.cfg.device, c)))
            },
        )
    }

    fn fdatasync(&self, fd: Fd) -> KernelResult<()> {
        self.syscall(
            SyscallKind::Fdatasync,
            Op::Fdatasync,
            [fd_arg(fd), 0, 0, 0],
            |()| 0,
            |st, _| {
                let c = st.fs.sync(fd)?;
                Ok(((), sync_cost(&st.cfg.cpu, &st.cfg.device, c)))
            },
        )
    }

    fn file_size(&self, fd: Fd) -> KernelResult<u64> {
        self.syscall(
            SyscallKind::Fstat,
            Op::FileSize,
            [fd_arg(fd), 0, 0, 0],
            |n: &u64| *n,
            |st, _| Ok((st.fs.file_size(fd)?, st.cfg.cpu.syscall_ns)),
        )
    }

    fn unlink(&self, path: &Path) -> KernelResult<()> {
        self.syscall(
            SyscallKind::Unlink,
            Op::Unlink,
            [path_arg(path), 0, 0, 0],
            |()| 0,
            |st, _| Ok((st.fs.unlink(path)?, st.cfg.cpu.syscall_ns)),
        )
    }

    fn rename(&self, from: &Path, to: &Path) -> KernelResult<()> {
        self.syscall(
            SyscallKind::Rename,
            Op::Rename,
            [path_arg(from), path_arg(to), 0, 0],
            |()| 0,
            |st, _| Ok((st.fs.rename(from, to)?, st.cfg.cpu.syscall_ns)),
        )
    }

    fn mkdir(&self, path: &Path) -> KernelResult<()> {
        self.syscall(
            SyscallKind::Mkdir,
            Op::Mkdir,
            [path_arg(path), 0, 0, 0],
            |()| 0,
            |st, _| Ok((st.fs.mkdir(path)?, st.cfg.cpu.syscall_ns)),
        )
    }

    fn list_dir(&self, path: &Path) -> KernelResult<Vec<String>> {
        self.syscall(
            SyscallKind::Getdents,
            Op::ListDir,
            [path_arg(path), 0, 0, 0],
            |names: &Vec<String>| names.len() as u64,
            |st, args| {
                let names = st.fs.list_dir(path)?;
                args[1] = digest(names.join("/").as_bytes());
                Ok((names, st.cfg.cpu.syscall_ns))
            },
        )
    }

    fn mem_alloc(&self, len: usize) -> KernelResult<MemId> {
        self.syscall(
            SyscallKind::Mmap,
            Op::MemAlloc,
            [len as u64, 0, 0, 0],
            |m: &MemId| u64::from(m.0),
            |st, _| Ok((st.mem.alloc(len)?, st.cfg.cpu.syscall_ns)),
        )
    }

    fn mem_free(&self, mem: MemId) -> KernelResult<()> {
        self.syscall(
            SyscallKind::Munmap,
            Op::MemFree,
            [u64::from(mem.0), 0, 0, 0],
            |()| 0,
            |st, _| Ok((st.mem.free(mem)?, st.cfg.cpu.syscall_ns)),
        )
    }

    fn mem_read(&self, mem: MemId, offset: usize, buf: &mut [u8]) -> KernelResult<()> {
        let len = buf.len();
        self.user_copy(
            Op::MemRead,
            [u64::from(mem.0), offset as u64, len as u64, 0],
            |regions| {
                buf.copy_from_slice(regions.slice(mem, offset, len)?);
                Ok(())
            },
        )
    }

    fn mem_write(&self, mem: MemId, offset: usize, data: &[u8]) -> KernelResult<()> {
        self.user_copy(
            Op::MemWrite,
            [
                u64::from(mem.0),
                offset as u64,
                data.len() as u64,
                digest(data),
            ],
            |regions| {
                regions
                    .slice_mut(mem, offset, data.len())?
                    .copy_from_slice(data);
                Ok(())
            },
        )
    }

    fn uring_setup(&self, params: &UringParams) -> KernelResult<RingId> {
        self.uring_call(
            SyscallKind::IoUringSetup,
            Op::UringSetup,
            [
                u64::from(params.sq_entries),
                params.cq_entries.map_or(0, u64::from),
                u64::from(params.sqpoll),
                u64::from(params.sq_thread_idle_ms),
            ],
            |r: &RingId| u64::from(r.0),
            |st, _| {
                // Sizes are checked before the system call, as real-kernel checks them.
                crate::uring::ring_sizes(params)?;
                st.enter(SyscallKind::IoUringSetup)?;
                for _ in 0..RING_MMAPS {
                    st.enter(SyscallKind::Mmap)?;
                }
                let ring = Ring::new(params, st.clock.now_ns())?;
                let id = st.next_ring;
                st.next_ring = id.checked_add(1).ok_or(Errno::ENOMEM)?;
                st.rings.insert(id, ring);
                Ok(RingId(id))
            },
        )
    }

    fn uring_register_buffers(&self, ring: RingId, regions: &[MemId]) -> KernelResult<()> {
        let ids: Vec<u8> = regions.iter().flat_map(|m| m.0.to_le_bytes()).collect();
        self.uring_call(
            SyscallKind::IoUringRegister,
            Op::UringRegisterBuffers,
            [u64::from(ring.0), regions.len() as u64, digest(&ids), 0],
            |()| 0,
            |st, _| {
                let r = st.rings.get(&ring.0).ok_or(Errno::EBADF)?;
                if r.has_buffers() {
                    return Err(Errno::EBUSY); // one buffer table per ring, as real-kernel
                }
                for &m in regions {
                    st.mem.len_of(m)?;
                }
                st.enter(SyscallKind::IoUringRegister)?;
                let State { rings, mem, .. } = st;
                rings
                    .get_mut(&ring.0)
                    .expect("looked up above")
                    .register_buffers(regions, mem)
            },
        )
    }

    fn uring_register_files(&self, ring: RingId, fds: &[Fd]) -> KernelResult<()> {
        let raw: Vec<u8> = fds.iter().flat_map(|fd| fd.0.to_le_bytes()).collect();
        self.uring_call(
            SyscallKind::IoUringRegister,
            Op::UringRegisterFiles,
            [u64::from(ring.0), fds.len() as u64, digest(&raw), 0],
            |()| 0,
            |st, _| {
                st.rings.get(&ring.0).ok_or(Errno::EBADF)?;
                st.enter(SyscallKind::IoUringRegister)?;
                let State { rings, fs, .. } = st;
                rings
                    .get_mut(&ring.0)
                    .expect("looked up above")
                    .register_files(fds, fs)
            },
        )
    }

    fn uring_queue(&self, ring: RingId, sqe: &Sqe) -> KernelResult<()> {
        self.uring_call(
            SyscallKind::IoUringEnter,
            Op::UringQueue,
            [
                u64::from(ring.0),
                sqe.user_data,
                digest(format!("{:?}", sqe.op).as_bytes()),
                u64::from(sqe.link),
            ],
            |()| 0,
            |st, _| {
                let now = st.clock.now_ns();
                let State { rings, mem, .. } = st;
                let r = rings.get_mut(&ring.0).ok_or(Errno::EBADF)?;
                r.queue(sqe, mem, now)
            },
        )
    }

    fn uring_submit_and_wait(&self, ring: RingId, wait_nr: u32) -> KernelResult<Submitted> {
        self.uring_call(
            SyscallKind::IoUringEnter,
            Op::UringSubmitAndWait,
            [u64::from(ring.0), u64::from(wait_nr), 0, 0],
            |s: &Submitted| u64::from(s.submitted),
            |st, args| {
                let mut r = st.rings.remove(&ring.0).ok_or(Errno::EBADF)?;
                let result = st.submit_and_wait(&mut r, wait_nr);
                if !st.down {
                    st.rings.insert(ring.0, r);
                }
                if let Ok(s) = &result {
                    args[2] = u64::from(s.submitted);
                    args[3] = u64::from(s.enter_calls);
                }
                result
            },
        )
    }

    fn uring_reap(&self, ring: RingId, out: &mut Vec<Cqe>, max: usize) -> KernelResult<usize> {
        let first = out.len();
        self.uring_call(
            SyscallKind::IoUringEnter,
            Op::UringReap,
            [u64::from(ring.0), max as u64, 0, 0],
            |n: &usize| *n as u64,
            |st, args| {
                let now = st.clock.now_ns();
                let State { rings, mem, .. } = st;
                let r = rings.get_mut(&ring.0).ok_or(Errno::EBADF)?;
                let n = r.reap(out, max, now, mem);
                let bytes: Vec<u8> = out[first..]
                    .iter()
                    .flat_map(|c| {
                        let mut b = c.user_data.to_le_bytes().to_vec();
                        b.extend(c.res.to_le_bytes());
                        b
                    })
                    .collect();
                args[3] = digest(&bytes);
                Ok(n)
            },
        )
    }

    fn uring_close(&self, ring: RingId) -> KernelResult<()> {
        self.uring_call(
            SyscallKind::Close,
            Op::UringClose,
            [u64::from(ring.0), 0, 0, 0],
            |()| 0,
            |st, args| {
                let mut r = st.rings.remove(&ring.0).ok_or(Errno::EBADF)?;
                // Submit what is queued and wait for everything, as real-kernel's close does.
                let mut drained = Vec::new();
                while r.in_flight() > 0 {
                    let in_flight = r.in_flight();
                    if let Err(e) = st.submit_and_wait(&mut r, in_flight) {
                        if !st.down {
                            st.rings.insert(ring.0, r);
                        }
                        return Err(e);
                    }
                    let now = st.clock.now_ns();
                    let n = r.reap(&mut drained, in_flight as usize, now, &mut st.mem);
                    assert_eq!(n, in_flight as usize, "the wait covered every SQE");
                }
                args[1] = drained.len() as u64;
                r.release(&mut st.mem, &mut st.fs);
                for _ in 0..RING_MMAPS {
                    st.enter(SyscallKind::Munmap)?;
                }
                st.enter(SyscallKind::Close)
            },
        )
    }
    fn bpf_map_create(&self, _spec: &MapSpec) -> KernelResult<MapFd> {
        self.unsupported(SyscallKind::BpfMapCreate, Op::BpfMapCreate, BPF_MISSING)
    }
    fn bpf_map_mmap(&self, _map: MapFd) -> KernelResult<MemId> {
        self.unsupported(SyscallKind::Mmap, Op::BpfMapMmap, BPF_MISSING)
    }
    fn bpf_map_lookup(&self, _map: MapFd, _key: &[u8], _value: &mut [u8]) -> KernelResult<()> {
        self.unsupported(SyscallKind::BpfMapLookup, Op::BpfMapLookup, BPF_MISSING)
    }
    fn bpf_map_update(
        &self,
        _map: MapFd,
        _key: &[u8],
        _value: &[u8],
        _flags: u64,
    ) -> KernelResult<()> {
        self.unsupported(SyscallKind::BpfMapUpdate, Op::BpfMapUpdate, BPF_MISSING)
    }
    fn bpf_map_freeze(&self, _map: MapFd) -> KernelResult<()> {
        self.unsupported(SyscallKind::BpfMapFreeze, Op::BpfMapFreeze, BPF_MISSING)
    }
    fn bpf_prog_load(&self, _prog: &ProgLoad) -> KernelResult<ProgLoaded> {
        self.unsupported(SyscallKind::BpfProgLoad, Op::BpfProgLoad, BPF_MISSING)
    }
    fn bpf_btf_load(&self, _btf: &[u8]) -> KernelResult<BtfFd> {
        self.unsupported(SyscallKind::BpfBtfLoad, Op::BpfBtfLoad, BPF_MISSING)
    }
    fn bpf_prog_load_btf(&self, _prog: &ProgLoad, _btf: &ProgBtf) -> KernelResult<ProgLoaded> {
        self.unsupported(SyscallKind::BpfProgLoad, Op::BpfProgLoadBtf, BPF_MISSING)
    }
    fn bpf_prog_test_run(&self, _prog: ProgFd, _ctx: &mut [u8]) -> KernelResult<TestRunResult> {
        self.unsupported(SyscallKind::BpfProgTestRun, Op::BpfProgTestRun, BPF_MISSING)
    }

    fn now_ns(&self) -> u64 {
        let mut st = self.lock();
        let cost = st.cfg.cpu.clock_read_ns;
        st.clock.charge(cost);
        let t = st.clock.now_ns();
        st.log
            .record(t, Op::NowNs, [0; 4], i64::try_from(t).unwrap_or(i64::MAX));
        t
    }

    fn sleep_ns(&self, ns: u64) {
        let slept = self.syscall(
            SyscallKind::Nanosleep,
            Op::SleepNs,
            [ns, 0, 0, 0],
            |()| 0,
            |st, _| {
                st.clock.advance(ns);
                Ok(((), st.cfg.cpu.syscall_ns))
            },
        );
        if slept.is_err() {
            // Down: time passes whether or not a process is alive to sleep through it.
            self.lock().clock.advance(ns);
        }
    }

    fn syscall_counts(&self) -> SyscallCounts {
        self.lock().counts
    }

    fn name(&self) -> &'static str {
        "sim"
    }

    fn default_db_dir(&self) -> PathBuf {
        PathBuf::from("/tmp/resystance-bench")
    }
}
