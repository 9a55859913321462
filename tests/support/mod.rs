//! Test support: a kernel that forwards to the real one and fails the calls a policy picks.

#![allow(dead_code)] // each test binary uses part of it

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use resystance_real_kernel::RealKernel;
use resystance_traces::{
    BtfFd, CqState, Cqe, Errno, Fd, Kernel, KernelError, KernelResult, MapFd, MapSpec, MemId,
    OpenFlags, ProgBtf, ProgFd, ProgLoad, ProgLoaded, RingId, Sqe, Submitted, SyscallCounts,
    SyscallKind, TestRunResult, UringParams,
};

/// Decides whether call number `n` (from 0) of `kind` on `path` fails.
pub type Policy = Box<dyn Fn(u64, SyscallKind, Option<&Path>) -> bool + Send + Sync>;

/// The real kernel, with the calls the policy picks failing with EIO before they happen.
/// User-space operations (mapped memory, ring access), `close` and the clock always pass.
pub struct FaultKernel {
    inner: RealKernel,
    calls: AtomicU64,
    paths: Mutex<HashMap<Fd, PathBuf>>,
    policy: Policy,
}

impl std::fmt::Debug for FaultKernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultKernel")
            .field("calls", &self.calls)
            .finish_non_exhaustive()
    }
}

impl FaultKernel {
    /// A kernel failing what `policy` picks.
    pub fn new(policy: Policy) -> Self {
        FaultKernel {
            inner: RealKernel::new(),
            calls: AtomicU64::new(0),
            paths: Mutex::new(HashMap::new()),
            policy,
        }
    }

    /// A kernel whose process "dies" after `budget` calls: every later call fails.
    pub fn dying_after(budget: u64) -> Self {
        FaultKernel::new(Box::new(move |n, _, _| n >= budget))
    }

    /// Calls seen so far (failed ones included).
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    fn path_of(&self, fd: Fd) -> Option<PathBuf> {
        self.paths.lock().unwrap().get(&fd).cloned()
    }

    fn gate(&self, call: SyscallKind, path: Option<&Path>) -> KernelResult<()> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        if (self.policy)(n, call, path) {
            return Err(KernelError::Errno {
                call,
                errno: Errno::EIO,
            });
        }
        Ok(())
    }
}

/// A scratch directory: on tmpfs when there is one (fault tests check ordering, not the disk,
/// and fsync on tmpfs costs nothing), else the default temporary directory.
pub fn scratch_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(d) = tempfile::tempdir_in(shm) {
            return d;
        }
    }
    tempfile::tempdir().unwrap()
}

impl Kernel for FaultKernel {
    fn open(&self, path: &Path, flags: OpenFlags) -> KernelResult<Fd> {
        self.gate(SyscallKind::Open, Some(path))?;
        let fd = self.inner.open(path, flags)?;
        self.paths.lock().unwrap().insert(fd, path.to_path_buf());
        Ok(fd)
    }
    fn close(&self, fd: Fd) -> KernelResult<()> {
        // Descriptors are released whatever happens; closing writes nothing.
        self.paths.lock().unwrap().remove(&fd);
        self.inner.close(fd)
    }
    fn pread(&self, fd: Fd, buf: &mut [u8], offset: u64) -> KernelResult<usize> {
        self.gate(SyscallKind::Pread, self.path_of(fd).as_deref())?;
        self.inner.pread(fd, buf, offset)
    }
    fn pwrite(&self, fd: Fd, buf: &[u8], offset: u64) -> KernelResult<usize> {
        self.gate(SyscallKind::Pwrite, self.path_of(fd).as_deref())?;
        self.inner.pwrite(fd, buf, offset)
    }
    fn fsync(&self, fd: Fd) -> KernelResult<()> {
        self.gate(SyscallKind::Fsync, self.path_of(fd).as_deref())?;
        self.inner.fsync(fd)
    }
    fn fdatasync(&self, fd: Fd) -> KernelResult<()> {
        self.gate(SyscallKind::Fdatasync, self.path_of(fd).as_deref())?;
        self.inner.fdatasync(fd)
    }
    fn file_size(&self, fd: Fd) -> KernelResult<u64> {
        self.gate(SyscallKind::Fstat, self.path_of(fd).as_deref())?;
        self.inner.file_size(fd)
    }
    fn unlink(&self, path: &Path) -> KernelResult<()> {
        self.gate(SyscallKind::Unlink, Some(path))?;
        self.inner.unlink(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> KernelResult<()> {
        self.gate(SyscallKind::Rename, Some(from))?;
        self.inner.rename(from, to)
    }
    fn mkdir(&self, path: &Path) -> KernelResult<()> {
        self.gate(SyscallKind::Mkdir, Some(path))?;
        self.inner.mkdir(path)
    }
    fn list_dir(&self, path: &Path) -> KernelResult<Vec<String>> {
        self.gate(SyscallKind::Getdents, Some(path))?;
        self.inner.list_dir(path)
    }
    fn mem_alloc(&self, len: usize) -> KernelResult<MemId> {
        self.gate(SyscallKind::Mmap, None)?;
        self.inner.mem_alloc(len)
    }
    fn mem_free(&self, mem: MemId) -> KernelResult<()> {
        self.inner.mem_free(mem)
    }
    fn mem_read(&self, mem: MemId, offset: usize, buf: &mut [u8]) -> KernelResult<()> {
        self.inner.mem_read(mem, offset, buf)
    }
    fn mem_write(&self, mem: MemId, offset: usize, data: &[u8]) -> KernelResult<()> {
        self.inner.mem_write(mem, offset, data)
    }
    fn uring_setup_counted(&self, params: &UringParams) -> KernelResult<(RingId, SyscallCounts)> {
        self.gate(SyscallKind::IoUringSetup, None)?;
        self.inner.uring_setup_counted(params)
    }
    fn uring_register_buffers(&self, ring: RingId, regions: &[MemId]) -> KernelResult<()> {
        self.gate(SyscallKind::IoUringRegister, None)?;
        self.inner.uring_register_buffers(ring, regions)
    }
    fn uring_register_files(&self, ring: RingId, fds: &[Fd]) -> KernelResult<()> {
        self.gate(SyscallKind::IoUringRegister, None)?;
        self.inner.uring_register_files(ring, fds)
    }
    fn uring_queue(&self, ring: RingId, sqe: &Sqe) -> KernelResult<()> {
        self.inner.uring_queue(ring, sqe)
    }
    fn uring_submit_and_wait(&self, ring: RingId, wait_nr: u32) -> KernelResult<Submitted> {
        self.gate(SyscallKind::IoUringEnter, None)?;
        self.inner.uring_submit_and_wait(ring, wait_nr)
    }
    fn uring_reap(&self, ring: RingId, out: &mut Vec<Cqe>, max: usize) -> KernelResult<usize> {
        self.inner.uring_reap(ring, out, max)
    }
    fn uring_cq_state(&self, ring: RingId) -> KernelResult<CqState> {
        self.inner.uring_cq_state(ring)
    }
    fn uring_close_counted(&self, ring: RingId) -> KernelResult<SyscallCounts> {
        self.inner.uring_close_counted(ring)
    }
    fn bpf_map_create(&self, spec: &MapSpec) -> KernelResult<MapFd> {
        self.gate(SyscallKind::BpfMapCreate, None)?;
        self.inner.bpf_map_create(spec)
    }
    fn bpf_map_mmap(&self, map: MapFd) -> KernelResult<MemId> {
        self.gate(SyscallKind::Mmap, None)?;
        self.inner.bpf_map_mmap(map)
    }
    fn bpf_map_lookup(&self, map: MapFd, key: &[u8], value: &mut [u8]) -> KernelResult<()> {
        self.gate(SyscallKind::BpfMapLookup, None)?;
        self.inner.bpf_map_lookup(map, key, value)
    }
    fn bpf_map_update(&self, map: MapFd, key: &[u8], value: &[u8], flags: u64) -> KernelResult<()> {
        self.gate(SyscallKind::BpfMapUpdate, None)?;
        self.inner.bpf_map_update(map, key, value, flags)
    }
    fn bpf_map_freeze(&self, map: MapFd) -> KernelResult<()> {
        self.gate(SyscallKind::BpfMapFreeze, None)?;
        self.inner.bpf_map_freeze(map)
    }
    fn bpf_prog_load(&self, prog: &ProgLoad) -> KernelResult<ProgLoaded> {
        self.gate(SyscallKind::BpfProgLoad, None)?;
        self.inner.bpf_prog_load(prog)
    }
    fn bpf_btf_load(&self, btf: &[u8]) -> KernelResult<BtfFd> {
        self.gate(SyscallKind::BpfBtfLoad, None)?;
        self.inner.bpf_btf_load(btf)
    }
    fn bpf_prog_load_btf(&self, prog: &ProgLoad, btf: &ProgBtf) -> KernelResult<ProgLoaded> {
        self.gate(SyscallKind::BpfProgLoad, None)?;
        self.inner.bpf_prog_load_btf(prog, btf)
    }
    fn bpf_prog_test_run(&self, prog: ProgFd, ctx: &mut [u8]) -> KernelResult<TestRunResult> {
        self.gate(SyscallKind::BpfProgTestRun, None)?;
        self.inner.bpf_prog_test_run(prog, ctx)
    }
    fn now_ns(&self) -> u64 {
        self.inner.now_ns()
    }
    fn sleep_ns(&self, ns: u64) {
        self.inner.sleep_ns(ns);
    }
    fn cpu_work(&self, work: resystance_traces::CpuWork) {
        self.inner.cpu_work(work);
    }
    fn switch_task(&self, task: resystance_traces::Task, start_ns: u64) -> resystance_traces::Task {
        self.inner.switch_task(task, start_ns)
    }
    fn syscall_counts(&self) -> SyscallCounts {
        self.inner.syscall_counts()
    }
    fn name(&self) -> &'static str {
        "faulty"
    }
    fn default_db_dir(&self) -> PathBuf {
        self.inner.default_db_dir()
    }
}
