//! The [`Kernel`] trait: the one boundary between resystance and an operating-system kernel.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{
    BtfFd, CpuWork, CqState, Cqe, KernelResult, MapFd, MapSpec, ProgBtf, ProgFd, ProgLoad,
    ProgLoaded, RingId, Sqe, SyscallCounts, Task, TestRunResult, UringParams,
};

/// A file descriptor handed out by a kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Fd(pub i32);

/// A region of memory owned by the kernel side and shared with user space: anonymous memory,
/// or an mmapped BPF map. io_uring reads and writes and BPF programs address memory through it,
/// so both kernels can model exactly who touches which bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MemId(pub u32);

/// How to open a file (the subset of `open(2)` flags the engine uses).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OpenFlags {
    /// Open for reading.
    pub read: bool,
    /// Open for writing.
    pub write: bool,
    /// Create the file if it does not exist (`O_CREAT`).
    pub create: bool,
    /// Fail if the file exists (`O_EXCL`, with `create`).
    pub exclusive: bool,
    /// Truncate to zero length (`O_TRUNC`).
    pub truncate: bool,
    /// Bypass the page cache (`O_DIRECT`): offsets, lengths and buffers must be aligned.
    pub direct: bool,
    /// Open a directory, e.g. to fsync it (`O_DIRECTORY`).
    pub directory: bool,
}

impl OpenFlags {
    /// Read-only.
    pub const READ: OpenFlags = OpenFlags {
        read: true,
        write: false,
        create: false,
        exclusive: false,
        truncate: false,
        direct: false,
        directory: false,
    };
    /// Create a new file for writing; fails if it exists.
    pub const CREATE_NEW: OpenFlags = OpenFlags {
        read: false,
        write: true,
        create: true,
        exclusive: true,
        truncate: false,
        direct: false,
        directory: false,
    };
    /// Create a new file for writing and reading (`O_RDWR | O_CREAT | O_EXCL`); fails if it
    /// exists. A table's writer keeps this descriptor to read the table it wrote.
    pub const CREATE_NEW_READ_WRITE: OpenFlags = OpenFlags {
        read: true,
        write: true,
        create: true,
        exclusive: true,
        truncate: false,
        direct: false,
        directory: false,
    };
    /// Create or truncate a file for writing.
    pub const CREATE_TRUNCATE: OpenFlags = OpenFlags {
        read: false,
        write: true,
        create: true,
        exclusive: false,
        truncate: true,
        direct: false,
        directory: false,
    };
    /// A directory, opened to be fsynced.
    pub const DIRECTORY: OpenFlags = OpenFlags {
        read: true,
        write: false,
        create: false,
        exclusive: false,
        truncate: false,
        direct: false,
        directory: true,
    };
}

/// Everything resystance needs from a kernel: files, io_uring, BPF and the clock.
///
/// Calls take `&self` so one kernel can be shared by the engine's foreground and background
/// work. Each method documents which system call it is; purely user-space operations (writing
/// an SQE into the ring, reading a CQE, touching mapped memory) are marked as such and are not
/// counted as system calls.
/// The buffer a [`Kernel::list_dir`] reads directory entries into per `getdents64(2)`
/// (glibc's `readdir` uses 32 KiB too).
pub const GETDENTS_BUFFER_BYTES: usize = 32 << 10;

/// Bytes of one `linux_dirent64` record for a name of `name_bytes` (Linux's `d_reclen`: the
/// 19-byte header, the name, its NUL, rounded up to 8).
pub const fn dirent64_bytes(name_bytes: usize) -> usize {
    (19 + name_bytes + 1).div_ceil(8) * 8
}

pub trait Kernel: Send + Sync + std::fmt::Debug {
    // ---- files -------------------------------------------------------------------------

    /// `openat(2)`.
    fn open(&self, path: &Path, flags: OpenFlags) -> KernelResult<Fd>;
    /// `close(2)`.
    fn close(&self, fd: Fd) -> KernelResult<()>;
    /// `pread64(2)`: reads up to `buf.len()` bytes at `offset`; returns how many (0 at EOF).
    fn pread(&self, fd: Fd, buf: &mut [u8], offset: u64) -> KernelResult<usize>;
    /// `pwrite64(2)`: writes up to `buf.len()` bytes at `offset`; returns how many.
    fn pwrite(&self, fd: Fd, buf: &[u8], offset: u64) -> KernelResult<usize>;
    /// `fsync(2)`: data and metadata durable.
    fn fsync(&self, fd: Fd) -> KernelResult<()>;
    /// `fdatasync(2)`: data durable (and the metadata needed to read it back).
    fn fdatasync(&self, fd: Fd) -> KernelResult<()>;
    /// `fstat(2)`, reduced to the file size in bytes.
    fn file_size(&self, fd: Fd) -> KernelResult<u64>;
    /// `unlink(2)`.
    fn unlink(&self, path: &Path) -> KernelResult<()>;
    /// `rename(2)`: atomically replaces `to`.
    fn rename(&self, from: &Path, to: &Path) -> KernelResult<()>;
    /// `mkdir(2)`; `EEXIST` if it exists.
    fn mkdir(&self, path: &Path) -> KernelResult<()>;
    /// The names of a directory's entries, without `.` and `..`, sorted: `openat(2)` with
    /// `O_DIRECTORY`, `getdents64(2)` into a [`GETDENTS_BUFFER_BYTES`] buffer until it returns
    /// 0, `close(2)` — each call counted as what it is.
    fn list_dir(&self, path: &Path) -> KernelResult<Vec<String>>;

    // ---- memory shared between user space, io_uring and BPF -------------------------------

    /// `mmap(2)` of anonymous memory: `len` bytes, page-aligned (so usable for `O_DIRECT`).
    fn mem_alloc(&self, len: usize) -> KernelResult<MemId>;
    /// `munmap(2)`.
    fn mem_free(&self, mem: MemId) -> KernelResult<()>;
    /// User space reads mapped memory (a memcpy, no system call).
    fn mem_read(&self, mem: MemId, offset: usize, buf: &mut [u8]) -> KernelResult<()>;
    /// User space writes mapped memory (a memcpy, no system call).
    fn mem_write(&self, mem: MemId, offset: usize, data: &[u8]) -> KernelResult<()>;

    // ---- io_uring ----------------------------------------------------------------------

    /// `io_uring_setup(2)` (plus the mmaps of its rings). Provided: implement
    /// [`Kernel::uring_setup_counted`].
    fn uring_setup(&self, params: &UringParams) -> KernelResult<RingId> {
        self.uring_setup_counted(params).map(|(ring, _)| ring)
    }
    /// [`Kernel::uring_setup`], also returning the system calls it made: `io_uring_setup` and
    /// the `mmap`s of the rings (2, or 3 without `IORING_FEAT_SINGLE_MMAP`), so a view that
    /// counts calls ([`crate::Accounted`]) counts what the kernel counted.
    fn uring_setup_counted(&self, params: &UringParams) -> KernelResult<(RingId, SyscallCounts)>;
    /// `io_uring_register(IORING_REGISTER_BUFFERS)`: buffer index `i` is `regions[i]`.
    fn uring_register_buffers(&self, ring: RingId, regions: &[MemId]) -> KernelResult<()>;
    /// `io_uring_register(IORING_REGISTER_FILES)`: fixed file index `i` is `fds[i]`.
    fn uring_register_files(&self, ring: RingId, fds: &[Fd]) -> KernelResult<()>;
    /// Writes one SQE into the submission ring (user space; `EBUSY` when the ring is full).
    fn uring_queue(&self, ring: RingId, sqe: &Sqe) -> KernelResult<()>;
    /// Submits the queued SQEs and waits until at least `wait_nr` completions are in the
    /// completion ring (at most its size: Linux caps the wait there): `io_uring_enter(2)`,
    /// unless an awake SQPOLL thread makes it unnecessary. The enter has `GETEVENTS` when it
    /// must wait or when overflowed completions can move into a ring with room (it moves
    /// them, oldest first); with nothing to submit, wait for or flush, there is no enter.
    /// Returns how many SQEs were submitted and how many `io_uring_enter` calls it took.
    fn uring_submit_and_wait(&self, ring: RingId, wait_nr: u32) -> KernelResult<Submitted>;
    /// Moves up to `max` completions from the completion ring into `out` (user space; never
    /// the overflowed ones, which [`Kernel::uring_submit_and_wait`] flushes).
    fn uring_reap(&self, ring: RingId, out: &mut Vec<Cqe>, max: usize) -> KernelResult<usize>;
    /// The completion side's state: CQEs ready, overflow pending, drops (user space).
    fn uring_cq_state(&self, ring: RingId) -> KernelResult<CqState>;
    /// Tears the ring down (`close(2)` of its fd). Provided: implement
    /// [`Kernel::uring_close_counted`].
    fn uring_close(&self, ring: RingId) -> KernelResult<()> {
        self.uring_close_counted(ring).map(|_| ())
    }
    /// [`Kernel::uring_close`], also returning the system calls it made: the
    /// `io_uring_enter`s that drained what was in flight, the `munmap`s of the rings and the
    /// `close`.
    fn uring_close_counted(&self, ring: RingId) -> KernelResult<SyscallCounts>;

    // ---- BPF ---------------------------------------------------------------------------

    /// `bpf(BPF_MAP_CREATE)`.
    fn bpf_map_create(&self, spec: &MapSpec) -> KernelResult<MapFd>;
    /// `mmap(2)` of a `BPF_F_MMAPABLE` array map's values.
    fn bpf_map_mmap(&self, map: MapFd) -> KernelResult<MemId>;
    /// `bpf(BPF_MAP_LOOKUP_ELEM)`: copies the value of `key` into `value`.
    fn bpf_map_lookup(&self, map: MapFd, key: &[u8], value: &mut [u8]) -> KernelResult<()>;
    /// `bpf(BPF_MAP_UPDATE_ELEM)` with the kernel's `flags` (`BPF_ANY`, `BPF_NOEXIST`, `BPF_EXIST`).
    fn bpf_map_update(&self, map: MapFd, key: &[u8], value: &[u8], flags: u64) -> KernelResult<()>;
    /// `bpf(BPF_MAP_FREEZE)`: from now on user space can no longer write the map (updates
    /// answer `EPERM`); programs still may unless the map is read-only to them (`.rodata`).
    fn bpf_map_freeze(&self, map: MapFd) -> KernelResult<()>;
    /// `bpf(BPF_PROG_LOAD)`, then `bpf(BPF_OBJ_GET_INFO_BY_FD)` for the processed-instruction
    /// count: the verifier's verdict and log.
    fn bpf_prog_load(&self, prog: &ProgLoad) -> KernelResult<ProgLoaded>;
    /// `bpf(BPF_BTF_LOAD)` of raw BTF (header, types, strings): the verifier's verdict on it.
    fn bpf_btf_load(&self, btf: &[u8]) -> KernelResult<BtfFd>;
    /// [`Kernel::bpf_prog_load`] with BTF: `prog_btf_fd` and `func_info` (8-byte records) in
    /// the `BPF_PROG_LOAD` attr.
    fn bpf_prog_load_btf(&self, prog: &ProgLoad, btf: &ProgBtf) -> KernelResult<ProgLoaded>;
    /// `bpf(BPF_PROG_TEST_RUN)` with `ctx` as the program's context (copied in and back out).
    fn bpf_prog_test_run(&self, prog: ProgFd, ctx: &mut [u8]) -> KernelResult<TestRunResult>;

    // ---- clock -------------------------------------------------------------------------

    /// Monotonic time in nanoseconds (`CLOCK_MONOTONIC`; the vDSO on Linux, so not counted as a
    /// system call). Virtual time in the simulator.
    fn now_ns(&self) -> u64;
    /// Sleeps for `ns` nanoseconds (`clock_nanosleep(2)`); advances virtual time in the simulator.
    fn sleep_ns(&self, ns: u64);

    // ---- the engine's own CPU time (virtual time only; see `work.rs`) --------------------

    /// Reports user-space work the caller has just done. No system call: the real kernel
    /// ignores it; the simulator charges its modelled cost to the current task's clock.
    fn cpu_work(&self, work: CpuWork);
    /// Makes `task` the one whose clock the following calls run on, starting no earlier than
    /// `start_ns`; returns the previous task. No system call: on Linux each task is its own
    /// thread and this does nothing; the simulator keeps one virtual clock per task.
    fn switch_task(&self, task: Task, start_ns: u64) -> Task;

    // ---- accounting --------------------------------------------------------------------

    /// System calls made through this kernel so far, by kind.
    fn syscall_counts(&self) -> SyscallCounts;
    /// A short name for reports: `real` or `sim`.
    fn name(&self) -> &'static str;
    /// Where a database may be created by default on this kernel.
    fn default_db_dir(&self) -> PathBuf;
}

/// The outcome of [`Kernel::uring_submit_and_wait`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Submitted {
    /// SQEs the kernel consumed.
    pub submitted: u32,
    /// `io_uring_enter(2)` calls it took (0 when an awake SQPOLL thread picked the SQEs up).
    pub enter_calls: u32,
}
