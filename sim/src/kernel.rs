//! [`SimKernel`]: the simulated kernel behind the [`Kernel`] trait.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use resystance_traces::{
    dirent64_bytes, BtfFd, CpuWork, CpuWorkKind, CqState, Cqe, Errno, Fd, Kernel, KernelError,
    KernelResult, MapFd, MapSpec, MemId, OpenFlags, ProgBtf, ProgFd, ProgLoad, ProgLoaded, RingId,
    Sqe, Submitted, SyscallCounts, SyscallKind, Task, TestRunResult, UringParams,
    GETDENTS_BUFFER_BYTES,
};

use crate::bpf::{map_errno, vm_spec, Bpf, BpfObject, VirtualTime};
use crate::clock::Clock;
use crate::cost::CpuModel;
use crate::events::{digest, result_code, EventLog, Op, SimEvent};
use crate::faults::{BitFlip, FaultCounts, FaultProfile, Faults};
use crate::fs::{FileSystem, ReadCost, SyncCost, WriteCost};
use crate::mem::Regions;
use crate::namespace::NAMESPACE_BYTES_DEFAULT;
use crate::nvme::{sync_file, DeviceStats, Nvme, NvmeModel, SUBMITTER_SYNC};
use crate::uring::{Machine, Ring, RING_MMAPS, SQPOLL_SPIN_NS_MAX, SQPOLL_STALL_NS_MAX};

/// The ChaCha stream of the clock's jitter.
const STREAM_JITTER: u64 = 0;
/// The ChaCha stream of crash decisions (kept apart so timing never shifts them).
const STREAM_CRASH: u64 = 1;
/// The ChaCha stream of fault decisions (kept apart so a run without faults draws nothing
/// new, and faults never shift jitter or crashes).
const STREAM_FAULTS: u64 = 2;

/// Where the simulated machine's directories start: durable before the process runs.
const BOOT_DIRS: &[&str] = &["/tmp"];

/// `EFAULT`: what a test run that faulted in the vm answers (see sim/README.md).
const EFAULT: Errno = Errno(14);
/// `BTF_MAGIC`, the first two bytes of raw BTF (little-endian).
const BTF_MAGIC: u16 = 0xeb9f;
/// Bytes of `struct btf_header`.
const BTF_HEADER_BYTES: usize = 24;

/// One extent of a file on the device ([`SimKernel::file_extents`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileExtent {
    /// Where in the file it starts.
    pub file_offset: u64,
    /// Its device address.
    pub device_offset: u64,
    /// Its length (whole 4 KiB blocks).
    pub bytes: u64,
}

/// How a [`SimKernel`] behaves: its seed and cost models.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimConfig {
    /// Decides every jitter and crash outcome: same seed, same run.
    pub seed: u64,
    /// CPU-side costs.
    pub cpu: CpuModel,
    /// The storage device (see [`NvmeModel::preset`]).
    pub device: NvmeModel,
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
    /// Injected faults (the default: none); [`SimKernel::with_config`] panics on a profile
    /// [`FaultProfile::validate`] refuses.
    pub faults: FaultProfile,
    /// Bytes of the NVMe namespace files are allocated from (a 1 MiB journal first); a write
    /// that needs blocks it no longer has fails with `ENOSPC`. [`SimKernel::with_config`]
    /// panics below 1 MiB + 4 KiB.
    pub namespace_bytes: u64,
}

impl SimConfig {
    /// The defaults (this host's cost models, ±5% jitter) with `seed`.
    pub fn new(seed: u64) -> SimConfig {
        SimConfig {
            seed,
            cpu: CpuModel::this_host(),
            device: NvmeModel::this_host(),
            jitter_ppm: 50_000,
            unsynced_dir_survives_ppm: 500_000,
            crash_at_syscall: None,
            keep_events: true,
            faults: FaultProfile::default(),
            namespace_bytes: NAMESPACE_BYTES_DEFAULT,
        }
    }
}

#[derive(Debug)]
struct State {
    cfg: SimConfig,
    clock: Clock,
    crash_rng: ChaCha8Rng,
    faults: Faults,
    fs: FileSystem,
    mem: Regions,
    /// Open io_uring instances by id (ids are not reused).
    rings: BTreeMap<u32, Ring>,
    next_ring: u32,
    /// The device every request goes to, synchronous and io_uring alike.
    nvme: Nvme,
    log: EventLog,
    /// SQEs run inside the current call, recorded just before its event.
    executed: Vec<([u64; 4], i64)>,
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
        self.executed.clear();
        // Power loss: the device restarts idle (what its cache held is the file system's
        // crash rule's business).
        let stats = self.nvme.stats();
        self.nvme = Nvme::new(self.cfg.device.clone());
        self.nvme.keep_stats(stats);
        self.down = true;
        self.crashes += 1;
        self.cfg.crash_at_syscall = None;
        let t = self.clock.now_ns();
        self.log
            .record(t, Op::Crash, [self.counts.total(), 0, 0, 0], 0);
    }

    /// Appends a call's event, after the faults it suffered (each one event).
    fn record(&mut self, op: Op, args: [u64; 4], code: i64) {
        let t = self.clock.now_ns();
        for fault in self.faults.take_events() {
            self.log.record(t, Op::Fault, fault, 0);
        }
        for (exec, res) in std::mem::take(&mut self.executed) {
            self.log.record(t, Op::UringExec, exec, res);
        }
        self.log.record(t, op, args, code);
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
            nvme,
            faults,
            ..
        } = self;
        let mut m = Machine {
            fs,
            mem,
            clock,
            cpu: &cfg.cpu,
            nvme,
            faults,
        };
        let submission = ring.submit(&mut m, start_ns);
        self.executed.extend(ring.take_executed());
        submission
    }

    /// Posts the completions of `ring` that are due (see [`post_due`]).
    fn post(&mut self, ring: &mut Ring) {
        post_due(ring, &mut self.clock, &self.cfg.cpu);
    }

    /// What a `GETEVENTS` enter does before it waits: moves overflowed completions into the
    /// CQ as far as it has room, each at the measured cost, on the caller's clock.
    fn flush(&mut self, ring: &mut Ring) {
        let moved = ring.flush();
        if moved > 0 {
            let cost = u64::from(moved) * self.cfg.cpu.cq_flush_ns_per_cqe;
            self.clock.charge(cost);
        }
    }

    /// `io_uring_enter` as real-kernel's `submit_and_wait` makes it (see sim/README.md).
    fn submit_and_wait(&mut self, ring: &mut Ring, wait_nr: u32) -> Result<Submitted, Errno> {
        const CALL: SyscallKind = SyscallKind::IoUringEnter;
        if wait_nr > ring.in_flight() {
            return Err(Errno::EINVAL); // refused before entering: the wait could never end
        }
        // Linux ends a wait once the CQ holds min(wait_nr, its size): more cannot fit.
        let target = wait_nr.min(ring.cq_entries);
        let pending = ring.pending();
        let mut enter_calls = 0;
        self.post(ring);
        if ring.sqpoll() {
            assert!(
                !ring.flushable(),
                "SQPOLL rings do not overcommit, so their CQ never overflows"
            );
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
                self.post(ring);
            }
            if ring.ready() < target {
                let times = ring.completion_times(target);
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
                self.post(ring);
            }
        } else {
            // As real-kernel decides before it enters: GETEVENTS to wait, or to flush
            // overflowed completions into a CQ with room; nothing to do costs nothing.
            let getevents = ring.ready() < target || ring.flushable();
            if pending == 0 && !getevents {
                return Ok(Submitted::default());
            }
            self.enter(CALL)?; // submits and, with GETEVENTS, flushes and waits
            enter_calls += 1;
            if pending > 0 {
                let start = self.clock.now_ns();
                let s = self.submit(ring, start);
                self.clock.advance(s.inline_ns);
                // What completed inline is posted inside the enter (to the overflow list
                // if earlier completions wait there or the CQ is full).
                self.post(ring);
            }
            if getevents {
                self.flush(ring);
                if ring.ready() < target {
                    // The list is empty now (the flush would have filled the CQ otherwise),
                    // so the CQ fills as completions come.
                    let times = ring.completion_times(target);
                    self.clock
                        .advance_to(*times.last().expect("the CQ is short of target"));
                    self.post(ring);
                    self.flush(ring);
                }
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

    /// A kernel configured by `cfg`: a booted machine with durable `/` and `/tmp`. Panics if
    /// `cfg.device` fails [`NvmeModel::validate`].
    pub fn with_config(cfg: SimConfig) -> SimKernel {
        let rng = |stream| {
            let mut r = ChaCha8Rng::seed_from_u64(cfg.seed);
            r.set_stream(stream);
            r
        };
        let mut fs = FileSystem::new(cfg.namespace_bytes);
        for dir in BOOT_DIRS {
            fs.prepare_dir(Path::new(dir))
                .expect("boot directories are well formed");
        }
        SimKernel {
            state: Mutex::new(State {
                clock: Clock::new(cfg.jitter_ppm, rng(STREAM_JITTER)).with_cores(cfg.cpu.cores),
                crash_rng: rng(STREAM_CRASH),
                faults: Faults::new(cfg.faults.clone(), rng(STREAM_FAULTS)),
                fs,
                mem: Regions::new(Bpf::new(cfg.seed, Arc::new(VirtualTime::default()))),
                rings: BTreeMap::new(),
                next_ring: 0,
                nvme: Nvme::new(cfg.device.clone()),
                log: EventLog::new(cfg.keep_events),
                executed: Vec::new(),
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
            st.clock.reboot();
            let (t, crashes) = (st.clock.now_ns(), st.crashes);
            st.log.record(t, Op::Restart, [crashes, 0, 0, 0], 0);
        }
    }

    /// The task whose clock calls now run on (see [`Kernel::switch_task`]).
    pub fn current_task(&self) -> Task {
        self.lock().clock.task()
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

    /// Injects `profile`'s faults from now on (e.g. none, to verify after a faulty run);
    /// recorded as a harness event. Panics on a profile [`FaultProfile::validate`] refuses.
    pub fn set_faults(&self, profile: FaultProfile) {
        let mut st = self.lock();
        let d = digest(profile.to_ron().as_bytes());
        st.faults.set_profile(profile.clone());
        st.cfg.faults = profile;
        st.record(Op::SetFaults, [d, 0, 0, 0], 0);
    }

    /// How many faults of each class were injected so far.
    pub fn fault_counts(&self) -> FaultCounts {
        self.lock().faults.counts()
    }

    /// Every bit flipped on the media so far, in order: a CRC mismatch there is injected.
    pub fn bit_flips(&self) -> Vec<BitFlip> {
        self.lock().faults.flips().to_vec()
    }

    /// The current names of inode `ino` (of a [`BitFlip`]), sorted; empty when it has none.
    pub fn paths_of_inode(&self, ino: u64) -> Vec<PathBuf> {
        self.lock().fs.paths_of(ino)
    }

    /// Where the file at `path` lives on the device: one [`FileExtent`] per extent, in file
    /// order (harness inspection: no system call, no event).
    pub fn file_extents(&self, path: &Path) -> Result<Vec<FileExtent>, Errno> {
        let st = self.lock();
        let ino = st.fs.ino_of(path)?;
        Ok(st
            .fs
            .extents_of(ino)
            .into_iter()
            .map(|(file_offset, device_offset, bytes)| FileExtent {
                file_offset,
                device_offset,
                bytes,
            })
            .collect())
    }

    /// Data blocks (4 KiB) of the namespace not allocated to any file.
    pub fn namespace_free_blocks(&self) -> u64 {
        self.lock().fs.free_blocks()
    }

    /// The device requests served so far (across crashes).
    pub fn device_stats(&self) -> DeviceStats {
        self.lock().nvme.stats()
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
        let code = result_code(&result, ok_code);
        st.record(op, args, code);
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
        let code = result_code(&result, ok_code);
        st.record(op, args, code);
        result
    }

    /// A BPF call: `f` counts its system calls ([`State::enter`]) where real-kernel counts
    /// them (some refusals happen before any) and may fail with any [`KernelError`]
    /// (`Unsupported`, `Rejected`), not only an errno.
    fn bpf_call<T>(
        &self,
        kind: SyscallKind,
        op: Op,
        mut args: [u64; 4],
        ok_code: impl Fn(&T) -> u64,
        f: impl FnOnce(&mut State, &mut [u64; 4]) -> KernelResult<T>,
    ) -> KernelResult<T> {
        let mut st = self.lock();
        let result = if st.down {
            Err(KernelError::Errno {
                call: kind,
                errno: Errno::EIO,
            })
        } else {
            f(&mut st, &mut args)
        };
        let t = st.clock.now_ns();
        let code = result_code(&result, ok_code);
        st.log.record(t, op, args, code);
        result
    }
}

/// Posts the completions of `ring` whose time has come; each one the kernel puts on the
/// overflow list costs its allocation on the caller's clock (the completing work runs in the
/// submitter's context, and the ring's calls are where the model notices it).
fn post_due(ring: &mut Ring, clock: &mut Clock, cpu: &CpuModel) {
    let overflowed = ring.post(clock.now_ns());
    if overflowed > 0 {
        clock.charge(u64::from(overflowed) * cpu.cq_overflow_ns_per_cqe);
    }
}

/// `errno` as `call`'s error.
fn errno_of(call: SyscallKind) -> impl Fn(Errno) -> KernelError {
    move |errno| KernelError::Errno { call, errno }
}

/// The bytes of a map element at the boundary: keys as created; values as created, except a
/// per-CPU array's, which cross as one 8-byte-rounded value per possible CPU (one here).
fn elem_bytes(spec: &resystance_vm::maps::MapSpec) -> (usize, usize) {
    let value = match spec.map_type {
        resystance_vm::object::MapType::PercpuArray => spec.value_stride(),
        _ => spec.value_size as usize,
    };
    (spec.key_size as usize, value)
}

impl State {
    /// `BPF_PROG_LOAD` (with or without BTF): the load, and on a refusal the second, logged
    /// load real-kernel makes (both counted). No `BPF_OBJ_GET_INFO_BY_FD`: the vm reports no
    /// verified-instruction count.
    fn prog_load(&mut self, prog: &ProgLoad, btf: Option<&ProgBtf>) -> KernelResult<ProgLoaded> {
        const CALL: SyscallKind = SyscallKind::BpfProgLoad;
        self.enter(CALL).map_err(errno_of(CALL))?;
        let refused = |st: &mut State, errno: Errno, log: String| {
            st.enter(CALL).map_err(errno_of(CALL))?; // the load again, with a log
            Err(KernelError::Rejected {
                call: CALL,
                errno,
                log,
            })
        };
        if let Some(btf) = btf {
            if self.mem.bpf.fds.get(&btf.btf.0 .0) != Some(&BpfObject::Btf) {
                // Linux's `btf_get_by_fd`: EBADF for no descriptor, EINVAL for another kind.
                let errno = if self.fs.is_open(btf.btf.0) {
                    Errno::EINVAL
                } else {
                    Errno::EBADF
                };
                let log = format!("prog_btf_fd {} is not a BTF object\n", btf.btf.0 .0);
                return refused(self, errno, log);
            }
        }
        let Bpf { sub, fds, .. } = &mut self.mem.bpf;
        let loaded = sub.prog_load(&prog.name, &prog.insns, |fd| match fds.get(&fd) {
            Some(BpfObject::Map(id)) => Some(*id),
            _ => None,
        });
        let id = match loaded {
            Ok(id) => id,
            Err(e) => return refused(self, Errno(e.errno()), format!("{e}\n")),
        };
        match self.fs.alloc_anon_fd() {
            Ok(fd) => {
                self.mem.bpf.fds.insert(fd.0, BpfObject::Prog(id));
                Ok(ProgLoaded {
                    fd: ProgFd(fd),
                    verified_insns: None,
                    log: String::new(),
                })
            }
            Err(errno) => {
                self.mem.bpf.sub.prog_close(id);
                Err(KernelError::Errno { call: CALL, errno })
            }
        }
    }
}

fn path_arg(path: &Path) -> u64 {
    digest(path.as_os_str().as_encoded_bytes())
}

fn prog_args(prog: &ProgLoad) -> [u64; 4] {
    let insns: Vec<u8> = prog.insns.iter().flat_map(|i| i.to_le_bytes()).collect();
    [
        digest(prog.name.as_bytes()),
        digest(&insns),
        prog.insns.len() as u64,
        0,
    ]
}

/// `getdents64` calls a directory listing takes: records packed into
/// [`GETDENTS_BUFFER_BYTES`] buffers (`.` and `..` included), then the call that returns 0.
/// Linux packs in its own (hash) order; for directories that fit one buffer — a database's —
/// the count is the same whatever the order.
fn getdents_calls(names: &[String]) -> u64 {
    let mut calls = 1;
    let mut used = 0;
    for len in [1, 2].into_iter().chain(names.iter().map(String::len)) {
        let rec = dirent64_bytes(len);
        if used + rec > GETDENTS_BUFFER_BYTES {
            calls += 1;
            used = 0;
        }
        used += rec;
    }
    calls + 1
}

fn fd_arg(fd: Fd) -> u64 {
    // Negative descriptors are recorded as their two's complement.
    u64::from(fd.0 as u32)
}

/// The CPU side of a buffered read or write: page-cache lookups and the copy.
fn page_cache_ns(cpu: &CpuModel, pages: u64, bytes: usize) -> u64 {
    pages * cpu.page_cache_ns_per_page + cpu.copy_ns(bytes as u64)
}

impl State {
    // Synchronous calls charge their CPU work, then issue their device request as a QD1
    // request of the sync submitter and wait for it; they return 0 for `syscall` to charge
    // (a zero charge draws no jitter).

    fn sync_read(&mut self, c: &ReadCost) -> u64 {
        let cpu = &self.cfg.cpu;
        let cpu_ns = if c.direct {
            cpu.syscall_ns
        } else {
            cpu.syscall_ns + page_cache_ns(cpu, c.pages, c.bytes)
        };
        self.clock.charge(cpu_ns);
        if !c.device.is_empty() {
            let now = self.clock.now_ns();
            let done = self
                .nvme
                .read_ranges(&mut self.clock, now, SUBMITTER_SYNC, &c.device);
            self.clock.advance_to(done);
            let spike = self.faults.spike_ns(true);
            self.clock.advance(spike);
        }
        0
    }

    fn sync_write(&mut self, c: &WriteCost) -> u64 {
        let cpu = &self.cfg.cpu;
        if !c.direct {
            self.clock
                .charge(cpu.syscall_ns + page_cache_ns(cpu, c.pages, c.bytes));
            return 0;
        }
        self.clock.charge(cpu.syscall_ns);
        if !c.device.is_empty() {
            let now = self.clock.now_ns();
            let done = self
                .nvme
                .write_ranges(&mut self.clock, now, SUBMITTER_SYNC, &c.device);
            self.clock.advance_to(done);
            let spike = self.faults.spike_ns(true);
            self.clock.advance(spike);
        }
        0
    }

    fn file_sync(&mut self, c: &SyncCost) -> u64 {
        self.clock.charge(self.cfg.cpu.syscall_ns);
        let now = self.clock.now_ns();
        let done = sync_file(&mut self.nvme, &mut self.clock, now, SUBMITTER_SYNC, c);
        self.clock.advance_to(done);
        // A sync always reaches the device: at least its cache flush.
        let spike = self.faults.spike_ns(true);
        self.clock.advance(spike);
        0
    }
}

/// `fsync` and `fdatasync` (the same in this model): the sync under the fault profile, then
/// its device work.
fn sync_fd(st: &mut State, fd: Fd) -> CallResult<()> {
    let file = st.fs.file_ref(fd)?;
    let c = st.faults.sync(&mut st.fs, file)?;
    Ok(((), st.file_sync(&c)))
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
            |st, _| {
                if let Some(obj) = st.mem.bpf.fds.remove(&fd.0) {
                    assert!(st.fs.free_anon_fd(fd), "a BPF fd is in the fd table");
                    st.mem.bpf.close(obj);
                } else {
                    st.fs.close(fd)?;
                }
                Ok(((), st.cfg.cpu.syscall_ns))
            },
        )
    }

    fn pread(&self, fd: Fd, buf: &mut [u8], offset: u64) -> KernelResult<usize> {
        self.syscall(
            SyscallKind::Pread,
            Op::Pread,
            [fd_arg(fd), offset, buf.len() as u64, 0],
            |n: &usize| *n as u64,
            |st, args| {
                let file = st.fs.file_ref(fd)?;
                let c = st.faults.read(&mut st.fs, file, buf, offset)?;
                args[3] = digest(&buf[..c.bytes]);
                Ok((c.bytes, st.sync_read(&c)))
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
                let file = st.fs.file_ref(fd)?;
                let c = st.faults.write(&mut st.fs, file, buf, offset)?;
                Ok((c.bytes, st.sync_write(&c)))
            },
        )
    }

    fn fsync(&self, fd: Fd) -> KernelResult<()> {
        self.syscall(
            SyscallKind::Fsync,
            Op::Fsync,
            [fd_arg(fd), 0, 0, 0],
            |()| 0,
            |st, _| sync_fd(st, fd),
        )
    }

    fn fdatasync(&self, fd: Fd) -> KernelResult<()> {
        self.syscall(
            SyscallKind::Fdatasync,
            Op::Fdatasync,
            [fd_arg(fd), 0, 0, 0],
            |()| 0,
            |st, _| sync_fd(st, fd),
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
        // openat (this call), then getdents64 until it returns 0, then close: as Linux.
        self.syscall(
            SyscallKind::Open,
            Op::ListDir,
            [path_arg(path), 0, 0, 0],
            |names: &Vec<String>| names.len() as u64,
            |st, args| {
                let names = st.fs.list_dir(path)?;
                for _ in 0..getdents_calls(&names) {
                    st.enter(SyscallKind::Getdents)?;
                }
                st.enter(SyscallKind::Close)?;
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

    fn uring_setup_counted(&self, params: &UringParams) -> KernelResult<(RingId, SyscallCounts)> {
        self.uring_call(
            SyscallKind::IoUringSetup,
            Op::UringSetup,
            [
                u64::from(params.sq_entries),
                params.cq_entries.map_or(0, u64::from),
                u64::from(params.sqpoll),
                u64::from(params.sq_thread_idle_ms),
            ],
            |(r, _): &(RingId, SyscallCounts)| u64::from(r.0),
            |st, _| {
                // Sizes are checked before the system call, as real-kernel checks them.
                crate::uring::ring_sizes(params)?;
                let before = st.counts;
                st.enter(SyscallKind::IoUringSetup)?;
                for _ in 0..RING_MMAPS {
                    st.enter(SyscallKind::Mmap)?;
                }
                let id = st.next_ring;
                st.next_ring = id.checked_add(1).ok_or(Errno::ENOMEM)?;
                // Each ring is its own submitter after the synchronous calls' (0).
                let ring = Ring::new(params, st.clock.now_ns(), id + 1)?;
                st.rings.insert(id, ring);
                Ok((RingId(id), st.counts.since(&before)))
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
                let State {
                    rings,
                    mem,
                    clock,
                    cfg,
                    ..
                } = st;
                let r = rings.get_mut(&ring.0).ok_or(Errno::EBADF)?;
                post_due(r, clock, &cfg.cpu);
                let n = r.reap(out, max, mem);
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

    fn uring_cq_state(&self, ring: RingId) -> KernelResult<CqState> {
        self.uring_call(
            SyscallKind::IoUringEnter,
            Op::UringCqState,
            [u64::from(ring.0), 0, 0, 0],
            |s: &CqState| u64::from(s.ready),
            |st, args| {
                let State {
                    rings, clock, cfg, ..
                } = st;
                let r = rings.get_mut(&ring.0).ok_or(Errno::EBADF)?;
                post_due(r, clock, &cfg.cpu);
                let state = r.cq_state();
                args[1] = u64::from(state.overflow_pending);
                args[2] = u64::from(state.dropped);
                Ok(state)
            },
        )
    }

    fn uring_close_counted(&self, ring: RingId) -> KernelResult<SyscallCounts> {
        self.uring_call(
            SyscallKind::Close,
            Op::UringClose,
            [u64::from(ring.0), 0, 0, 0],
            |_| 0,
            |st, args| {
                let mut r = st.rings.remove(&ring.0).ok_or(Errno::EBADF)?;
                let before = st.counts;
                // Submit what is queued and wait for everything, as real-kernel's close does: a
                // round per CQ's worth when completions overflowed.
                let mut drained = Vec::new();
                while r.in_flight() > 0 {
                    let in_flight = r.in_flight();
                    if let Err(e) = st.submit_and_wait(&mut r, in_flight) {
                        if !st.down {
                            st.rings.insert(ring.0, r);
                        }
                        return Err(e);
                    }
                    let n = r.reap(&mut drained, in_flight as usize, &mut st.mem);
                    assert!(n > 0, "the wait filled the CQ");
                }
                args[1] = drained.len() as u64;
                r.release(&mut st.mem, &mut st.fs);
                for _ in 0..RING_MMAPS {
                    st.enter(SyscallKind::Munmap)?;
                }
                st.enter(SyscallKind::Close)?;
                Ok(st.counts.since(&before))
            },
        )
    }
    fn bpf_map_create(&self, spec: &MapSpec) -> KernelResult<MapFd> {
        const CALL: SyscallKind = SyscallKind::BpfMapCreate;
        self.bpf_call(
            CALL,
            Op::BpfMapCreate,
            [
                digest(spec.name.as_bytes()),
                u64::from(spec.map_type.kernel_id()) | (u64::from(spec.flags) << 32),
                u64::from(spec.key_size) | (u64::from(spec.value_size) << 32),
                u64::from(spec.max_entries),
            ],
            |fd: &MapFd| fd_arg(fd.0),
            |st, _| {
                st.enter(CALL).map_err(errno_of(CALL))?;
                let id = st
                    .mem
                    .bpf
                    .sub
                    .map_create(vm_spec(spec))
                    .map_err(|e| errno_of(CALL)(map_errno(&e)))?;
                match st.fs.alloc_anon_fd() {
                    Ok(fd) => {
                        st.mem.bpf.fds.insert(fd.0, BpfObject::Map(id));
                        Ok(MapFd(fd))
                    }
                    Err(errno) => {
                        st.mem.bpf.sub.map_close(id).expect("just created");
                        Err(errno_of(CALL)(errno))
                    }
                }
            },
        )
    }

    fn bpf_map_mmap(&self, map: MapFd) -> KernelResult<MemId> {
        const CALL: SyscallKind = SyscallKind::Mmap;
        self.bpf_call(
            CALL,
            Op::BpfMapMmap,
            [fd_arg(map.0), 0, 0, 0],
            |m: &MemId| u64::from(m.0),
            |st, args| {
                // Refused before the system call, as real-kernel refuses them.
                let id = st.mem.bpf.map_of(map.0).map_err(errno_of(CALL))?;
                let spec = st.mem.bpf.sub.map_spec(id).expect("an fd's map is open");
                let mmapable = spec.map_type == resystance_vm::object::MapType::Array
                    && spec.map_flags & resystance_vm::object::BPF_F_MMAPABLE != 0;
                if !mmapable {
                    return Err(KernelError::Unsupported {
                        call: CALL,
                        why: format!(
                            "map {:?} is not a BPF_F_MMAPABLE array map; only those are mmapped",
                            spec.name
                        ),
                    });
                }
                let len = st.mem.bpf.sub.map_values(id).map_or(0, <[u8]>::len);
                if len == 0 {
                    return Err(errno_of(CALL)(Errno::EINVAL));
                }
                args[1] = len as u64;
                st.enter(CALL).map_err(errno_of(CALL))?;
                st.mem
                    .bpf
                    .sub
                    .map_mmap_check(id, true)
                    .map_err(|e| errno_of(CALL)(map_errno(&e)))?;
                st.mem.map_map(id).map_err(errno_of(CALL))
            },
        )
    }

    fn bpf_map_lookup(&self, map: MapFd, key: &[u8], value: &mut [u8]) -> KernelResult<()> {
        const CALL: SyscallKind = SyscallKind::BpfMapLookup;
        self.bpf_call(
            CALL,
            Op::BpfMapLookup,
            [fd_arg(map.0), digest(key), value.len() as u64, 0],
            |()| 0,
            |st, args| {
                let id = st.mem.bpf.map_of(map.0).map_err(errno_of(CALL))?;
                st.enter(CALL).map_err(errno_of(CALL))?;
                let spec = st.mem.bpf.sub.map_spec(id).expect("an fd's map is open");
                if elem_bytes(spec) != (key.len(), value.len()) {
                    return Err(errno_of(CALL)(Errno::EINVAL));
                }
                let found = st
                    .mem
                    .bpf
                    .sub
                    .map_lookup(id, key)
                    .map_err(|e| errno_of(CALL)(map_errno(&e)))?;
                value.fill(0);
                value[..found.len()].copy_from_slice(&found);
                args[3] = digest(value);
                Ok(())
            },
        )
    }

    fn bpf_map_update(&self, map: MapFd, key: &[u8], value: &[u8], flags: u64) -> KernelResult<()> {
        const CALL: SyscallKind = SyscallKind::BpfMapUpdate;
        self.bpf_call(
            CALL,
            Op::BpfMapUpdate,
            [fd_arg(map.0), digest(key), digest(value), flags],
            |()| 0,
            |st, _| {
                let id = st.mem.bpf.map_of(map.0).map_err(errno_of(CALL))?;
                st.enter(CALL).map_err(errno_of(CALL))?;
                let spec = st.mem.bpf.sub.map_spec(id).expect("an fd's map is open");
                if elem_bytes(spec) != (key.len(), value.len()) {
                    return Err(errno_of(CALL)(Errno::EINVAL));
                }
                let value = &value[..spec.value_size as usize];
                st.mem
                    .bpf
                    .sub
                    .map_update(id, key, value, flags)
                    .map_err(|e| errno_of(CALL)(map_errno(&e)))
            },
        )
    }

    fn bpf_map_freeze(&self, map: MapFd) -> KernelResult<()> {
        const CALL: SyscallKind = SyscallKind::BpfMapFreeze;
        self.bpf_call(
            CALL,
            Op::BpfMapFreeze,
            [fd_arg(map.0), 0, 0, 0],
            |()| 0,
            |st, _| {
                let id = st.mem.bpf.map_of(map.0).map_err(errno_of(CALL))?;
                st.enter(CALL).map_err(errno_of(CALL))?;
                if st.mem.bpf.is_mapped(id) {
                    // A writable mapping exists (Linux: `map->writecnt`).
                    return Err(errno_of(CALL)(Errno::EBUSY));
                }
                st.mem
                    .bpf
                    .sub
                    .map_freeze(id)
                    .map_err(|e| errno_of(CALL)(map_errno(&e)))
            },
        )
    }

    fn bpf_prog_load(&self, prog: &ProgLoad) -> KernelResult<ProgLoaded> {
        self.bpf_call(
            SyscallKind::BpfProgLoad,
            Op::BpfProgLoad,
            prog_args(prog),
            |p: &ProgLoaded| fd_arg(p.fd.0),
            |st, _| st.prog_load(prog, None),
        )
    }

    fn bpf_btf_load(&self, btf: &[u8]) -> KernelResult<BtfFd> {
        const CALL: SyscallKind = SyscallKind::BpfBtfLoad;
        self.bpf_call(
            CALL,
            Op::BpfBtfLoad,
            [btf.len() as u64, digest(btf), 0, 0],
            |fd: &BtfFd| fd_arg(fd.0),
            |st, _| {
                st.enter(CALL).map_err(errno_of(CALL))?;
                // Only the header is checked: the vm does not use BTF.
                let magic = btf.get(..2).map(|b| u16::from_le_bytes([b[0], b[1]]));
                if btf.len() < BTF_HEADER_BYTES || magic != Some(BTF_MAGIC) {
                    st.enter(CALL).map_err(errno_of(CALL))?; // the load again, with a log
                    return Err(KernelError::Rejected {
                        call: CALL,
                        errno: Errno::EINVAL,
                        log: "invalid BTF header (magic or length)\n".to_string(),
                    });
                }
                let fd = st.fs.alloc_anon_fd().map_err(errno_of(CALL))?;
                st.mem.bpf.fds.insert(fd.0, BpfObject::Btf);
                Ok(BtfFd(fd))
            },
        )
    }

    fn bpf_prog_load_btf(&self, prog: &ProgLoad, btf: &ProgBtf) -> KernelResult<ProgLoaded> {
        let mut args = prog_args(prog);
        args[3] = fd_arg(btf.btf.0) | ((btf.func_info.len() as u64) << 32);
        self.bpf_call(
            SyscallKind::BpfProgLoad,
            Op::BpfProgLoadBtf,
            args,
            |p: &ProgLoaded| fd_arg(p.fd.0),
            |st, _| st.prog_load(prog, Some(btf)),
        )
    }

    fn bpf_prog_test_run(&self, prog: ProgFd, ctx: &mut [u8]) -> KernelResult<TestRunResult> {
        const CALL: SyscallKind = SyscallKind::BpfProgTestRun;
        self.bpf_call(
            CALL,
            Op::BpfProgTestRun,
            [fd_arg(prog.0), digest(ctx), 0, 0],
            |r: &TestRunResult| u64::from(r.retval),
            |st, args| {
                let start = st.clock.now_ns();
                st.enter(CALL).map_err(errno_of(CALL))?;
                let id = st.mem.bpf.prog_of(prog.0).map_err(errno_of(CALL))?;
                st.mem.bpf.set_time(st.clock.now_ns());
                let run =
                    st.mem
                        .bpf
                        .sub
                        .prog_test_run(id, ctx)
                        .map_err(|e| KernelError::Rejected {
                            call: CALL,
                            errno: EFAULT,
                            log: format!(
                                "the program failed in the vm (Linux's verifier would have \
                             refused it at load): {e}\n"
                            ),
                        })?;
                // The fixed cost includes the kernel entry `enter` charged.
                let cost = st.cfg.cpu.test_run_ns(run.insns_executed);
                st.clock.charge(cost.saturating_sub(st.cfg.cpu.syscall_ns));
                let duration_ns = st.clock.now_ns() - start;
                args[2] = run.insns_executed;
                args[3] = duration_ns;
                Ok(TestRunResult {
                    // Linux reports the low 32 bits of r0.
                    retval: run.r0 as u32,
                    duration_ns,
                })
            },
        )
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

    fn cpu_work(&self, work: CpuWork) {
        let mut st = self.lock();
        if st.down {
            return; // a dead process does no work
        }
        let cost = st.cfg.cpu.work_ns(work);
        st.clock.charge(cost);
        let t = st.clock.now_ns();
        let kind = CpuWorkKind::ALL
            .iter()
            .position(|&k| k == work.kind)
            .expect("every kind is listed") as u64;
        st.log
            .record(t, Op::CpuWork, [kind, work.entries, work.bytes, 0], 0);
    }

    fn switch_task(&self, task: Task, start_ns: u64) -> Task {
        // Bookkeeping, not a system call: it works while the machine is down too, so an
        // engine unwinding a failed job can always return to its foreground.
        let mut st = self.lock();
        let previous = st.clock.switch_task(task, start_ns);
        let t = st.clock.now_ns();
        st.log.record(
            t,
            Op::SwitchTask,
            [task.index() as u64, start_ns, 0, 0],
            previous.index() as i64,
        );
        previous
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
