//! [`Accounted`]: a view of a kernel that counts the system calls made through it.
//!
//! The engine runs foreground writes, flushes and compactions against one kernel at the same
//! time; a compaction job runs against its own `Accounted` view so its syscall counts are its
//! own, whatever else the process is doing.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::{
    BtfFd, CpuWork, CqState, Cqe, Fd, Kernel, KernelResult, MapFd, MapSpec, MemId, OpenFlags,
    ProgBtf, ProgFd, ProgLoad, ProgLoaded, RingId, Sqe, Submitted, SyscallCounter, SyscallCounts,
    SyscallKind, Task, TestRunResult, UringParams,
};

/// A kernel view that forwards every call and counts the system calls it cost.
#[derive(Debug)]
pub struct Accounted {
    inner: Arc<dyn Kernel>,
    counter: SyscallCounter,
}

impl Accounted {
    /// A fresh view over `inner` with all counts at zero.
    pub fn new(inner: Arc<dyn Kernel>) -> Self {
        Accounted {
            inner,
            counter: SyscallCounter::default(),
        }
    }

    fn counted<T>(&self, kind: SyscallKind, result: T) -> T {
        self.counter.count(kind);
        result
    }
}

impl Kernel for Accounted {
    fn open(&self, path: &Path, flags: OpenFlags) -> KernelResult<Fd> {
        self.counted(SyscallKind::Open, self.inner.open(path, flags))
    }
    fn close(&self, fd: Fd) -> KernelResult<()> {
        self.counted(SyscallKind::Close, self.inner.close(fd))
    }
    fn pread(&self, fd: Fd, buf: &mut [u8], offset: u64) -> KernelResult<usize> {
        self.counted(SyscallKind::Pread, self.inner.pread(fd, buf, offset))
    }
    fn pwrite(&self, fd: Fd, buf: &[u8], offset: u64) -> KernelResult<usize> {
        self.counted(SyscallKind::Pwrite, self.inner.pwrite(fd, buf, offset))
    }
    fn fsync(&self, fd: Fd) -> KernelResult<()> {
        self.counted(SyscallKind::Fsync, self.inner.fsync(fd))
    }
    fn fdatasync(&self, fd: Fd) -> KernelResult<()> {
        self.counted(SyscallKind::Fdatasync, self.inner.fdatasync(fd))
    }
    fn file_size(&self, fd: Fd) -> KernelResult<u64> {
        self.counted(SyscallKind::Fstat, self.inner.file_size(fd))
    }
    fn unlink(&self, path: &Path) -> KernelResult<()> {
        self.counted(SyscallKind::Unlink, self.inner.unlink(path))
    }
    fn rename(&self, from: &Path, to: &Path) -> KernelResult<()> {
        self.counted(SyscallKind::Rename, self.inner.rename(from, to))
    }
    fn mkdir(&self, path: &Path) -> KernelResult<()> {
        self.counted(SyscallKind::Mkdir, self.inner.mkdir(path))
    }
    fn list_dir(&self, path: &Path) -> KernelResult<Vec<String>> {
        self.counted(SyscallKind::Getdents, self.inner.list_dir(path))
    }
    fn mem_alloc(&self, len: usize) -> KernelResult<MemId> {
        self.counted(SyscallKind::Mmap, self.inner.mem_alloc(len))
    }
    fn mem_free(&self, mem: MemId) -> KernelResult<()> {
        self.counted(SyscallKind::Munmap, self.inner.mem_free(mem))
    }
    fn mem_read(&self, mem: MemId, offset: usize, buf: &mut [u8]) -> KernelResult<()> {
        self.inner.mem_read(mem, offset, buf)
    }
    fn mem_write(&self, mem: MemId, offset: usize, data: &[u8]) -> KernelResult<()> {
        self.inner.mem_write(mem, offset, data)
    }
    fn uring_setup_counted(&self, params: &UringParams) -> KernelResult<(RingId, SyscallCounts)> {
        let result = self.inner.uring_setup_counted(params);
        // The kernel says what a setup cost (the rings' mmaps with it); a failed one is
        // counted as one attempt, like every failed call here.
        match &result {
            Ok((_, cost)) => self.counter.count_all(cost),
            Err(_) => self.counter.count(SyscallKind::IoUringSetup),
        }
        result
    }
    fn uring_register_buffers(&self, ring: RingId, regions: &[MemId]) -> KernelResult<()> {
        self.counted(
            SyscallKind::IoUringRegister,
            self.inner.uring_register_buffers(ring, regions),
        )
    }
    fn uring_register_files(&self, ring: RingId, fds: &[Fd]) -> KernelResult<()> {
        self.counted(
            SyscallKind::IoUringRegister,
            self.inner.uring_register_files(ring, fds),
        )
    }
    fn uring_queue(&self, ring: RingId, sqe: &Sqe) -> KernelResult<()> {
        self.inner.uring_queue(ring, sqe)
    }
    fn uring_submit_and_wait(&self, ring: RingId, wait_nr: u32) -> KernelResult<Submitted> {
        let result = self.inner.uring_submit_and_wait(ring, wait_nr);
        // A failed submit still entered the kernel once.
        let calls = result.as_ref().map_or(1, |s| s.enter_calls);
        for _ in 0..calls {
            self.counter.count(SyscallKind::IoUringEnter);
        }
        result
    }
    fn uring_reap(&self, ring: RingId, out: &mut Vec<Cqe>, max: usize) -> KernelResult<usize> {
        self.inner.uring_reap(ring, out, max)
    }
    fn uring_cq_state(&self, ring: RingId) -> KernelResult<CqState> {
        self.inner.uring_cq_state(ring)
    }
    fn uring_close_counted(&self, ring: RingId) -> KernelResult<SyscallCounts> {
        let result = self.inner.uring_close_counted(ring);
        // Draining enters and the rings' munmaps come with the close.
        match &result {
            Ok(cost) => self.counter.count_all(cost),
            Err(_) => self.counter.count(SyscallKind::Close),
        }
        result
    }
    fn bpf_map_create(&self, spec: &MapSpec) -> KernelResult<MapFd> {
        self.counted(SyscallKind::BpfMapCreate, self.inner.bpf_map_create(spec))
    }
    fn bpf_map_mmap(&self, map: MapFd) -> KernelResult<MemId> {
        self.counted(SyscallKind::Mmap, self.inner.bpf_map_mmap(map))
    }
    fn bpf_map_lookup(&self, map: MapFd, key: &[u8], value: &mut [u8]) -> KernelResult<()> {
        self.counted(
            SyscallKind::BpfMapLookup,
            self.inner.bpf_map_lookup(map, key, value),
        )
    }
    fn bpf_map_update(&self, map: MapFd, key: &[u8], value: &[u8], flags: u64) -> KernelResult<()> {
        self.counted(
            SyscallKind::BpfMapUpdate,
            self.inner.bpf_map_update(map, key, value, flags),
        )
    }
    fn bpf_map_freeze(&self, map: MapFd) -> KernelResult<()> {
        self.counted(SyscallKind::BpfMapFreeze, self.inner.bpf_map_freeze(map))
    }
    fn bpf_prog_load(&self, prog: &ProgLoad) -> KernelResult<ProgLoaded> {
        let result = self.inner.bpf_prog_load(prog);
        // A load that succeeded also asked for the program's info (verified_insns).
        if result.is_ok() {
            self.counter.count(SyscallKind::BpfObjGetInfo);
        }
        self.counted(SyscallKind::BpfProgLoad, result)
    }
    fn bpf_btf_load(&self, btf: &[u8]) -> KernelResult<BtfFd> {
        self.counted(SyscallKind::BpfBtfLoad, self.inner.bpf_btf_load(btf))
    }
    fn bpf_prog_load_btf(&self, prog: &ProgLoad, btf: &ProgBtf) -> KernelResult<ProgLoaded> {
        let result = self.inner.bpf_prog_load_btf(prog, btf);
        if result.is_ok() {
            self.counter.count(SyscallKind::BpfObjGetInfo);
        }
        self.counted(SyscallKind::BpfProgLoad, result)
    }
    fn bpf_prog_test_run(&self, prog: ProgFd, ctx: &mut [u8]) -> KernelResult<TestRunResult> {
        self.counted(
            SyscallKind::BpfProgTestRun,
            self.inner.bpf_prog_test_run(prog, ctx),
        )
    }
    fn now_ns(&self) -> u64 {
        self.inner.now_ns()
    }
    fn sleep_ns(&self, ns: u64) {
        self.counter.count(SyscallKind::Nanosleep);
        self.inner.sleep_ns(ns);
    }
    fn cpu_work(&self, work: CpuWork) {
        self.inner.cpu_work(work);
    }
    fn switch_task(&self, task: Task, start_ns: u64) -> Task {
        self.inner.switch_task(task, start_ns)
    }
    fn syscall_counts(&self) -> SyscallCounts {
        self.counter.snapshot()
    }
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn default_db_dir(&self) -> PathBuf {
        self.inner.default_db_dir()
    }
}
