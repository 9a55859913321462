//! Crash at every point: a kernel that lets the first N boundary calls through and fails every
//! later one (nothing after call N reaches the files, as when the process dies there). For every
//! N of a small workload with flushes and compactions, reopening with a healthy kernel must
//! recover exactly the acknowledged writes.
//!
//! This models process crashes (what was handed to the kernel survives). Power loss — losing
//! what was not yet fsynced — needs the simulated kernel's page cache (sim issue).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use resystance::{BackgroundMode, Db, Options};
use resystance_real_kernel::RealKernel;
use resystance_traces::{
    Cqe, Errno, Fd, Kernel, KernelError, KernelResult, MapFd, MapSpec, MemId, OpenFlags, ProgFd,
    ProgLoad, ProgLoaded, RingId, Sqe, Submitted, SyscallCounts, SyscallKind, TestRunResult,
    UringParams,
};

/// Forwards the first `budget` calls, then fails everything with EIO.
#[derive(Debug)]
struct DyingKernel {
    inner: RealKernel,
    calls: AtomicU64,
    budget: u64,
}

impl DyingKernel {
    fn new(budget: u64) -> Self {
        DyingKernel {
            inner: RealKernel::new(),
            calls: AtomicU64::new(0),
            budget,
        }
    }

    fn gate(&self, call: SyscallKind) -> KernelResult<()> {
        if self.calls.fetch_add(1, Ordering::SeqCst) < self.budget {
            Ok(())
        } else {
            Err(KernelError::Errno {
                call,
                errno: Errno::EIO,
            })
        }
    }
}

impl Kernel for DyingKernel {
    fn open(&self, path: &Path, flags: OpenFlags) -> KernelResult<Fd> {
        self.gate(SyscallKind::Open)?;
        self.inner.open(path, flags)
    }
    fn close(&self, fd: Fd) -> KernelResult<()> {
        // Descriptors are released whatever happens; closing writes nothing.
        self.inner.close(fd)
    }
    fn pread(&self, fd: Fd, buf: &mut [u8], offset: u64) -> KernelResult<usize> {
        self.gate(SyscallKind::Pread)?;
        self.inner.pread(fd, buf, offset)
    }
    fn pwrite(&self, fd: Fd, buf: &[u8], offset: u64) -> KernelResult<usize> {
        self.gate(SyscallKind::Pwrite)?;
        self.inner.pwrite(fd, buf, offset)
    }
    fn fsync(&self, fd: Fd) -> KernelResult<()> {
        self.gate(SyscallKind::Fsync)?;
        self.inner.fsync(fd)
    }
    fn fdatasync(&self, fd: Fd) -> KernelResult<()> {
        self.gate(SyscallKind::Fdatasync)?;
        self.inner.fdatasync(fd)
    }
    fn file_size(&self, fd: Fd) -> KernelResult<u64> {
        self.gate(SyscallKind::Fstat)?;
        self.inner.file_size(fd)
    }
    fn unlink(&self, path: &Path) -> KernelResult<()> {
        self.gate(SyscallKind::Unlink)?;
        self.inner.unlink(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> KernelResult<()> {
        self.gate(SyscallKind::Rename)?;
        self.inner.rename(from, to)
    }
    fn mkdir(&self, path: &Path) -> KernelResult<()> {
        self.gate(SyscallKind::Mkdir)?;
        self.inner.mkdir(path)
    }
    fn list_dir(&self, path: &Path) -> KernelResult<Vec<String>> {
        self.gate(SyscallKind::Getdents)?;
        self.inner.list_dir(path)
    }
    fn mem_alloc(&self, len: usize) -> KernelResult<MemId> {
        self.gate(SyscallKind::Mmap)?;
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
    fn uring_setup(&self, params: &UringParams) -> KernelResult<RingId> {
        self.gate(SyscallKind::IoUringSetup)?;
        self.inner.uring_setup(params)
    }
    fn uring_register_buffers(&self, ring: RingId, regions: &[MemId]) -> KernelResult<()> {
        self.gate(SyscallKind::IoUringRegister)?;
        self.inner.uring_register_buffers(ring, regions)
    }
    fn uring_register_files(&self, ring: RingId, fds: &[Fd]) -> KernelResult<()> {
        self.gate(SyscallKind::IoUringRegister)?;
        self.inner.uring_register_files(ring, fds)
    }
    fn uring_queue(&self, ring: RingId, sqe: &Sqe) -> KernelResult<()> {
        self.inner.uring_queue(ring, sqe)
    }
    fn uring_submit_and_wait(&self, ring: RingId, wait_nr: u32) -> KernelResult<Submitted> {
        self.gate(SyscallKind::IoUringEnter)?;
        self.inner.uring_submit_and_wait(ring, wait_nr)
    }
    fn uring_reap(&self, ring: RingId, out: &mut Vec<Cqe>, max: usize) -> KernelResult<usize> {
        self.inner.uring_reap(ring, out, max)
    }
    fn uring_close(&self, ring: RingId) -> KernelResult<()> {
        self.inner.uring_close(ring)
    }
    fn bpf_map_create(&self, spec: &MapSpec) -> KernelResult<MapFd> {
        self.gate(SyscallKind::BpfMapCreate)?;
        self.inner.bpf_map_create(spec)
    }
    fn bpf_map_mmap(&self, map: MapFd) -> KernelResult<MemId> {
        self.gate(SyscallKind::Mmap)?;
        self.inner.bpf_map_mmap(map)
    }
    fn bpf_map_lookup(&self, map: MapFd, key: &[u8], value: &mut [u8]) -> KernelResult<()> {
        self.gate(SyscallKind::BpfMapLookup)?;
        self.inner.bpf_map_lookup(map, key, value)
    }
    fn bpf_map_update(&self, map: MapFd, key: &[u8], value: &[u8], flags: u64) -> KernelResult<()> {
        self.gate(SyscallKind::BpfMapUpdate)?;
        self.inner.bpf_map_update(map, key, value, flags)
    }
    fn bpf_prog_load(&self, prog: &ProgLoad) -> KernelResult<ProgLoaded> {
        self.gate(SyscallKind::BpfProgLoad)?;
        self.inner.bpf_prog_load(prog)
    }
    fn bpf_prog_test_run(&self, prog: ProgFd, ctx: &mut [u8]) -> KernelResult<TestRunResult> {
        self.gate(SyscallKind::BpfProgTestRun)?;
        self.inner.bpf_prog_test_run(prog, ctx)
    }
    fn now_ns(&self) -> u64 {
        self.inner.now_ns()
    }
    fn sleep_ns(&self, ns: u64) {
        self.inner.sleep_ns(ns);
    }
    fn syscall_counts(&self) -> SyscallCounts {
        self.inner.syscall_counts()
    }
    fn name(&self) -> &'static str {
        "dying"
    }
    fn default_db_dir(&self) -> PathBuf {
        self.inner.default_db_dir()
    }
}

/// A scratch directory: on tmpfs when there is one (the test checks ordering, not the disk,
/// and fsync on tmpfs costs nothing), else the default temporary directory.
fn scratch_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(d) = tempfile::tempdir_in(shm) {
            return d;
        }
    }
    tempfile::tempdir().unwrap()
}

fn options() -> Options {
    let mut o = Options {
        write_buffer_size: 4096,
        target_file_size_base: 4096,
        max_bytes_for_level_base: 8192,
        level0_file_num_compaction_trigger: 2,
        level0_slowdown_writes_trigger: 4,
        level0_stop_writes_trigger: 6,
        background: BackgroundMode::Inline,
        ..Options::default()
    };
    o.table.block_size_bytes = 256;
    o
}

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

/// Runs the workload until the first error; returns the acknowledged state and whether the
/// whole workload went through.
fn workload(kernel: Arc<dyn Kernel>, dir: &Path) -> (Model, bool) {
    let mut model = Model::new();
    let Ok(db) = Db::open(kernel, dir, options()) else {
        return (model, false);
    };
    for i in 0..240u32 {
        let key = format!("key{:03}", (i * 7) % 50).into_bytes();
        let result = if i % 9 == 4 {
            db.delete(&key).map(|()| {
                model.remove(&key);
            })
        } else {
            let value = format!("value-{i}-{}", "x".repeat((i % 5 * 40) as usize)).into_bytes();
            db.put(&key, &value).map(|()| {
                model.insert(key, value);
            })
        };
        if result.is_err() {
            return (model, false);
        }
        if i % 60 == 59 && db.compact_all().is_err() {
            return (model, false);
        }
    }
    let finished = db.close().is_ok();
    (model, finished)
}

fn recovered(dir: &Path) -> Model {
    let db = Db::open(Arc::new(RealKernel::new()), dir, options()).expect("reopen after crash");
    let got = db
        .iter(None, None)
        .collect::<resystance::Result<Model>>()
        .expect("scan after crash");
    db.close().unwrap();
    got
}

#[test]
fn every_crash_point_recovers_exactly_the_acknowledged_writes() {
    // How many calls the whole workload makes.
    let total = {
        let dir = scratch_dir();
        let k = Arc::new(DyingKernel::new(u64::MAX));
        let (model, finished) = workload(Arc::clone(&k) as Arc<dyn Kernel>, dir.path());
        assert!(finished && model.len() > 10);
        assert_eq!(recovered(dir.path()), model);
        k.calls.load(Ordering::SeqCst)
    };
    assert!(
        total > 500,
        "the workload should flush and compact: {total} calls"
    );
    // Every crash point by default; CRASH_POINT_STRIDE > 1 samples them.
    let stride: u64 = std::env::var("CRASH_POINT_STRIDE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let mut crashed_mid_run = 0;
    for budget in (0..total).step_by(stride.max(1) as usize) {
        let dir = scratch_dir();
        let (acked, finished) = workload(
            Arc::new(DyingKernel::new(budget)) as Arc<dyn Kernel>,
            dir.path(),
        );
        assert!(
            !finished,
            "budget {budget} of {total} cannot finish the workload"
        );
        crashed_mid_run += 1;
        assert_eq!(
            recovered(dir.path()),
            acked,
            "crash after {budget} of {total} calls: recovered state differs from the acknowledged writes"
        );
    }
    println!("crash points checked: {crashed_mid_run} of {total} boundary calls");
}
