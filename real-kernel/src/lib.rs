//! The real Linux kernel behind the resystance kernel boundary.
//!
//! Files, anonymous shared memory, `bpf(2)` and the clock go straight to Linux through `libc`
//! (one boundary call = one system call, counted by kind; every `bpf(2)` call lives in
//! [`bpf`]). io_uring goes through the `io-uring` crate ([`uring`]), which keeps every region
//! the kernel may touch mapped until its I/O is reaped. [`probe`] says what this host lacks.

pub mod bpf;
pub mod probe;
pub mod uring;

use std::collections::HashMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use resystance_traces::{
    BtfFd, CqState, Cqe, Errno, Fd, Kernel, KernelError, KernelResult, MapFd, MapSpec, MapType,
    MemId, OpenFlags, ProgBtf, ProgFd, ProgLoad, ProgLoaded, ProgType, RingId, Sqe, Submitted,
    SyscallCounter, SyscallCounts, SyscallKind, TestRunResult, UringParams, GETDENTS_BUFFER_BYTES,
};

use crate::uring::{Mapping, Mappings, Ring};

/// What `bpf(2)` needs when it answers `EPERM`.
const BPF_PRIVILEGE: &str = "root, or CAP_BPF and CAP_PERFMON (bpf(2) answered EPERM)";

/// A map this kernel created: what it was created with, so element copies and mmaps use the
/// kernel's sizes.
#[derive(Clone, Debug)]
struct MapRecord {
    spec: MapSpec,
    shape: bpf::MapShape,
    /// `BPF_MAP_FREEZE` succeeded on it: user-space writes now answer `EPERM`, which is the
    /// map's state, not a missing privilege.
    frozen: bool,
}

/// Loads tried when the verifier answers EAGAIN (interrupted) before the error is returned.
const PROG_LOAD_TRIES_MAX: u32 = 5;
/// The host's Linux kernel.
#[derive(Debug, Default)]
pub struct RealKernel {
    counter: SyscallCounter,
    mappings: Mappings,
    next_mem_id: Mutex<u32>,
    /// Open io_uring instances; each is locked on its own so a wait on one ring does not
    /// hold up another.
    rings: Mutex<HashMap<u32, Arc<Mutex<Ring>>>>,
    next_ring_id: AtomicU32,
    /// Maps created through this kernel and not yet closed, by fd.
    maps: Mutex<HashMap<i32, MapRecord>>,
}

fn errno_now() -> Errno {
    Errno(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
}

fn fail<T>(call: SyscallKind) -> KernelResult<T> {
    Err(KernelError::Errno {
        call,
        errno: errno_now(),
    })
}

fn c_path(path: &Path, call: SyscallKind) -> KernelResult<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| KernelError::Errno {
        call,
        errno: Errno::EINVAL,
    })
}

/// The error for a `bpf(2)` errno: `EPERM` says which privilege is missing.
fn bpf_error(call: SyscallKind, errno: Errno) -> KernelError {
    if errno == Errno::EPERM {
        KernelError::NotPermitted {
            call,
            errno,
            missing: BPF_PRIVILEGE.to_string(),
        }
    } else {
        KernelError::Errno { call, errno }
    }
}

/// The error for a `bpf(2)` call that writes a map: on a frozen map, `EPERM` is the map's state
/// (user space may no longer write it, nor freeze it again), not a missing privilege.
fn map_write_error(record: &MapRecord, call: SyscallKind, errno: Errno) -> KernelError {
    if record.frozen && errno == Errno::EPERM {
        KernelError::Errno { call, errno }
    } else {
        bpf_error(call, errno)
    }
}

impl RealKernel {
    /// The host kernel, with all counts at zero.
    pub fn new() -> Self {
        RealKernel::default()
    }

    /// Why `bpf(2)` cannot be used by this process, or `None` when it can: probes by creating
    /// (and closing) a one-element array map, so the answer names what is missing (root, or
    /// CAP_BPF and CAP_PERFMON; a kernel without bpf).
    pub fn bpf_unavailable(&self) -> Option<String> {
        let probe = MapSpec {
            name: "probe".to_string(),
            map_type: resystance_traces::MapType::Array,
            key_size: 4,
            value_size: 4,
            max_entries: 1,
            flags: 0,
        };
        match self.bpf_map_create(&probe) {
            Ok(map) => {
                // The probe map is ours alone; closing it cannot lose anything.
                let _ = self.close(map.0);
                None
            }
            Err(err) => Some(format!("bpf(2) is unavailable: {err}")),
        }
    }

    /// Records a live mapping and hands out its id.
    fn insert_mapping(&self, addr: usize, len: usize) -> MemId {
        let mut next = self.next_mem_id.lock().expect("mem id lock");
        let id = *next;
        *next += 1;
        self.mappings.lock().expect("mappings lock").insert(
            id,
            Mapping {
                addr,
                len,
                registered: 0,
                in_flight: 0,
            },
        );
        MemId(id)
    }

    /// An open ring (`EBADF` for an unknown or closed one).
    fn ring(&self, ring: RingId, call: SyscallKind) -> KernelResult<Arc<Mutex<Ring>>> {
        self.rings
            .lock()
            .expect("rings lock")
            .get(&ring.0)
            .cloned()
            .ok_or(KernelError::Errno {
                call,
                errno: Errno::EBADF,
            })
    }

    /// Closes a ring and forgets it; on an error it stays open.
    fn close_ring(&self, ring: &Mutex<Ring>, counter: &SyscallCounter) -> KernelResult<()> {
        // A panic while the ring was locked (a broken invariant) must not also stop its I/O
        // from being waited for.
        let mut ring = ring
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        ring.close(&self.mappings, counter, monotonic_ns)
    }

    /// The record of a map this kernel created (`EBADF` for any other fd).
    fn map_record(&self, map: MapFd, call: SyscallKind) -> KernelResult<MapRecord> {
        self.maps
            .lock()
            .expect("maps lock")
            .get(&map.0 .0)
            .cloned()
            .ok_or(KernelError::Errno {
                call,
                errno: Errno::EBADF,
            })
    }

    /// Runs a `bpf(2)` load that can take a level-1 log (`BPF_PROG_LOAD`, `BPF_BTF_LOAD`): the
    /// new fd (and an empty log), or the rejection carrying the log of a second, logged load
    /// (its tail, when it overflowed the buffer).
    fn load_with_log(
        &self,
        call: SyscallKind,
        load: impl Fn(bool) -> Result<bpf::LoadOutcome, Errno>,
    ) -> KernelResult<(i32, String)> {
        // EAGAIN: the verifier saw a pending signal (io_uring task work counts as one) and
        // gave up; the load itself is fine. Try again a few times, as libbpf does; each try
        // is a counted call.
        let load = |verbose: bool| {
            let mut tries = 0;
            loop {
                self.counter.count(call);
                let outcome = load(verbose).map_err(|errno| KernelError::Errno { call, errno })?;
                tries += 1;
                match outcome.result {
                    Err(errno) if errno == Errno::EAGAIN && tries < PROG_LOAD_TRIES_MAX => {}
                    _ => return Ok(outcome),
                }
            }
        };
        let rejected = |errno: Errno, log: String| {
            if errno == Errno::EPERM || log.is_empty() {
                bpf_error(call, errno)
            } else {
                KernelError::Rejected { call, errno, log }
            }
        };
        // Without a log first: a level-1 log makes the verifier format every state it visits
        // (several times slower on large programs). Only a rejection is loaded again with
        // the log, to say why.
        let quiet = load(false)?;
        match quiet.result {
            Ok(fd) => Ok((fd, String::new())),
            Err(errno) if errno == Errno::EPERM => Err(bpf_error(call, errno)),
            Err(errno) => {
                let verbose = load(true)?;
                match verbose.result {
                    Ok(fd) => Ok((fd, verbose.log)),
                    Err(_) if verbose.log_truncated => {
                        let log = format!(
                            "(verifier log longer than {} bytes; its tail follows)\n{}",
                            bpf::VERIFIER_LOG_BYTES,
                            verbose.log
                        );
                        Err(rejected(errno, log))
                    }
                    Err(_) => Err(rejected(errno, verbose.log)),
                }
            }
        }
    }

    /// `BPF_PROG_LOAD`, with or without BTF, then the processed-instruction count.
    fn prog_load(
        &self,
        prog: &ProgLoad,
        btf: Option<bpf::ProgBtfRefs<'_>>,
    ) -> KernelResult<ProgLoaded> {
        let prog_flags = match prog.prog_type {
            ProgType::Syscall => bpf::F_SLEEPABLE,
        };
        let (fd, log) = self.load_with_log(SyscallKind::BpfProgLoad, |verbose| {
            bpf::prog_load(
                prog.prog_type.kernel_id(),
                prog_flags,
                &prog.insns,
                &prog.license,
                &prog.name,
                btf,
                verbose,
            )
        })?;
        // How Linux >= 5.16 reports the processed-instruction count.
        self.counter.count(SyscallKind::BpfObjGetInfo);
        let verified_insns = bpf::prog_verified_insns(fd).ok().filter(|&n| n > 0);
        Ok(ProgLoaded {
            fd: ProgFd(Fd(fd)),
            verified_insns,
            log,
        })
    }

    fn mapping(&self, mem: MemId, offset: usize, len: usize) -> KernelResult<usize> {
        let maps = self.mappings.lock().expect("mappings lock");
        let m = maps.get(&mem.0).ok_or(KernelError::Errno {
            call: SyscallKind::Mmap,
            errno: Errno::EINVAL,
        })?;
        match offset.checked_add(len) {
            Some(end) if end <= m.len => Ok(m.addr + offset),
            _ => Err(KernelError::Errno {
                call: SyscallKind::Mmap,
                errno: Errno::EINVAL,
            }),
        }
    }
}

impl Drop for RealKernel {
    fn drop(&mut self) {
        // Rings first: closing one waits for its I/O and releases the regions it held.
        let rings: Vec<_> = self
            .rings
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .drain()
            .map(|(_, ring)| ring)
            .collect();
        for ring in &rings {
            // A ring that cannot drain keeps its regions pinned; they are leaked below rather
            // than unmapped under the kernel.
            let _ = self.close_ring(ring, &self.counter);
        }
        let maps = self
            .mappings
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for m in maps.values().filter(|m| !m.busy()) {
            // SAFETY: every entry is a live mapping made by mem_alloc or bpf_map_mmap and not yet
            // unmapped, and no ring or in-flight SQE refers to it.
            unsafe { libc::munmap(m.addr as *mut libc::c_void, m.len) };
        }
    }
}

/// `CLOCK_MONOTONIC` in nanoseconds (the vDSO: no system call).
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec; CLOCK_MONOTONIC always exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_MONOTONIC) cannot fail");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl Kernel for RealKernel {
    fn open(&self, path: &Path, flags: OpenFlags) -> KernelResult<Fd> {
        self.counter.count(SyscallKind::Open);
        let cpath = c_path(path, SyscallKind::Open)?;
        let mut oflags = libc::O_CLOEXEC;
        oflags |= match (flags.read, flags.write) {
            (_, false) => libc::O_RDONLY,
            (false, true) => libc::O_WRONLY,
            (true, true) => libc::O_RDWR,
        };
        if flags.create {
            oflags |= libc::O_CREAT;
        }
        if flags.exclusive {
            oflags |= libc::O_EXCL;
        }
        if flags.truncate {
            oflags |= libc::O_TRUNC;
        }
        if flags.direct {
            oflags |= libc::O_DIRECT;
        }
        if flags.directory {
            oflags |= libc::O_DIRECTORY;
        }
        // SAFETY: cpath is a valid NUL-terminated string for the duration of the call.
        let fd = unsafe { libc::open(cpath.as_ptr(), oflags, 0o644 as libc::c_uint) };
        if fd < 0 {
            return fail(SyscallKind::Open);
        }
        Ok(Fd(fd))
    }

    fn close(&self, fd: Fd) -> KernelResult<()> {
        self.counter.count(SyscallKind::Close);
        // A closed map fd may be reused by anything: forget its sizes first.
        self.maps.lock().expect("maps lock").remove(&fd.0);
        // SAFETY: closing a descriptor has no memory-safety preconditions.
        if unsafe { libc::close(fd.0) } < 0 {
            return fail(SyscallKind::Close);
        }
        Ok(())
    }

    fn pread(&self, fd: Fd, buf: &mut [u8], offset: u64) -> KernelResult<usize> {
        self.counter.count(SyscallKind::Pread);
        let offset = i64::try_from(offset).map_err(|_| KernelError::Errno {
            call: SyscallKind::Pread,
            errno: Errno::EINVAL,
        })?;
        // SAFETY: buf is valid for writes of buf.len() bytes.
        let n = unsafe { libc::pread(fd.0, buf.as_mut_ptr().cast(), buf.len(), offset) };
        if n < 0 {
            return fail(SyscallKind::Pread);
        }
        Ok(n as usize)
    }

    fn pwrite(&self, fd: Fd, buf: &[u8], offset: u64) -> KernelResult<usize> {
        self.counter.count(SyscallKind::Pwrite);
        let offset = i64::try_from(offset).map_err(|_| KernelError::Errno {
            call: SyscallKind::Pwrite,
            errno: Errno::EINVAL,
        })?;
        // SAFETY: buf is valid for reads of buf.len() bytes.
        let n = unsafe { libc::pwrite(fd.0, buf.as_ptr().cast(), buf.len(), offset) };
        if n < 0 {
            return fail(SyscallKind::Pwrite);
        }
        Ok(n as usize)
    }

    fn fsync(&self, fd: Fd) -> KernelResult<()> {
        self.counter.count(SyscallKind::Fsync);
        // SAFETY: no memory is passed.
        if unsafe { libc::fsync(fd.0) } < 0 {
            return fail(SyscallKind::Fsync);
        }
        Ok(())
    }

    fn fdatasync(&self, fd: Fd) -> KernelResult<()> {
        self.counter.count(SyscallKind::Fdatasync);
        // SAFETY: no memory is passed.
        if unsafe { libc::fdatasync(fd.0) } < 0 {
            return fail(SyscallKind::Fdatasync);
        }
        Ok(())
    }

    fn file_size(&self, fd: Fd) -> KernelResult<u64> {
        self.counter.count(SyscallKind::Fstat);
        // SAFETY: an all-zero stat is a valid value to be overwritten by fstat.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: st is a valid, writable stat buffer.
        if unsafe { libc::fstat(fd.0, &mut st) } < 0 {
            return fail(SyscallKind::Fstat);
        }
        Ok(st.st_size as u64)
    }

    fn unlink(&self, path: &Path) -> KernelResult<()> {
        self.counter.count(SyscallKind::Unlink);
        let cpath = c_path(path, SyscallKind::Unlink)?;
        // SAFETY: cpath is NUL-terminated.
        if unsafe { libc::unlink(cpath.as_ptr()) } < 0 {
            return fail(SyscallKind::Unlink);
        }
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> KernelResult<()> {
        self.counter.count(SyscallKind::Rename);
        let cfrom = c_path(from, SyscallKind::Rename)?;
        let cto = c_path(to, SyscallKind::Rename)?;
        // SAFETY: both paths are NUL-terminated.
        if unsafe { libc::rename(cfrom.as_ptr(), cto.as_ptr()) } < 0 {
            return fail(SyscallKind::Rename);
        }
        Ok(())
    }

    fn mkdir(&self, path: &Path) -> KernelResult<()> {
        self.counter.count(SyscallKind::Mkdir);
        let cpath = c_path(path, SyscallKind::Mkdir)?;
        // SAFETY: cpath is NUL-terminated.
        if unsafe { libc::mkdir(cpath.as_ptr(), 0o755) } < 0 {
            return fail(SyscallKind::Mkdir);
        }
        Ok(())
    }

    fn list_dir(&self, path: &Path) -> KernelResult<Vec<String>> {
        let cpath = c_path(path, SyscallKind::Open)?;
        self.counter.count(SyscallKind::Open);
        // SAFETY: cpath is NUL-terminated; the flags open a directory read-only.
        let fd = unsafe {
            libc::open(
                cpath.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return fail(SyscallKind::Open);
        }
        let mut names = Vec::new();
        let mut buf = vec![0u8; GETDENTS_BUFFER_BYTES];
        let result = loop {
            self.counter.count(SyscallKind::Getdents);
            // SAFETY: fd is an open directory; buf is writable for its whole length.
            let n = unsafe { libc::syscall(libc::SYS_getdents64, fd, buf.as_mut_ptr(), buf.len()) };
            let Ok(n) = usize::try_from(n) else {
                break fail(SyscallKind::Getdents);
            };
            if n == 0 {
                break Ok(());
            }
            // linux_dirent64: d_ino u64, d_off i64, d_reclen u16, d_type u8, d_name (NUL-ended).
            let mut at = 0;
            while at + 19 <= n {
                let reclen = usize::from(u16::from_ne_bytes([buf[at + 16], buf[at + 17]]));
                if reclen < 20 || at + reclen > n {
                    break;
                }
                let name = &buf[at + 19..at + reclen];
                let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
                if name != b"." && name != b".." {
                    names.push(String::from_utf8_lossy(name).into_owned());
                }
                at += reclen;
            }
        };
        self.counter.count(SyscallKind::Close);
        // SAFETY: fd is open and closed once.
        unsafe { libc::close(fd) };
        result?;
        names.sort();
        Ok(names)
    }

    fn mem_alloc(&self, len: usize) -> KernelResult<MemId> {
        self.counter.count(SyscallKind::Mmap);
        if len == 0 {
            return Err(KernelError::Errno {
                call: SyscallKind::Mmap,
                errno: Errno::EINVAL,
            });
        }
        // SAFETY: an anonymous private mapping with no address hint.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return fail(SyscallKind::Mmap);
        }
        Ok(self.insert_mapping(addr as usize, len))
    }

    fn mem_free(&self, mem: MemId) -> KernelResult<()> {
        let call = SyscallKind::Munmap;
        let m = {
            let mut maps = self.mappings.lock().expect("mappings lock");
            match maps.get(&mem.0) {
                None => {
                    return Err(KernelError::Errno {
                        call,
                        errno: Errno::EINVAL,
                    })
                }
                // Registered with a ring, or the target of I/O not yet reaped: unmapping now
                // would let the kernel write into whatever is mapped there next.
                Some(m) if m.busy() => {
                    return Err(KernelError::Errno {
                        call,
                        errno: Errno::EBUSY,
                    })
                }
                Some(_) => maps.remove(&mem.0).expect("present under the same lock"),
            }
        };
        self.counter.count(call);
        // SAFETY: m was a live mapping made by mem_alloc or bpf_map_mmap; it is removed from the
        // table first.
        if unsafe { libc::munmap(m.addr as *mut libc::c_void, m.len) } < 0 {
            return fail(SyscallKind::Munmap);
        }
        Ok(())
    }

    fn mem_read(&self, mem: MemId, offset: usize, buf: &mut [u8]) -> KernelResult<()> {
        let addr = self.mapping(mem, offset, buf.len())?;
        // SAFETY: mapping() checked [addr, addr + len) lies inside a live mapping.
        unsafe { std::ptr::copy_nonoverlapping(addr as *const u8, buf.as_mut_ptr(), buf.len()) };
        Ok(())
    }

    fn mem_write(&self, mem: MemId, offset: usize, data: &[u8]) -> KernelResult<()> {
        let addr = self.mapping(mem, offset, data.len())?;
        // SAFETY: mapping() checked [addr, addr + len) lies inside a live mapping.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), addr as *mut u8, data.len()) };
        Ok(())
    }

    fn uring_setup_counted(&self, params: &UringParams) -> KernelResult<(RingId, SyscallCounts)> {
        // Counted apart first, so the caller learns what this setup cost.
        let cost = SyscallCounter::default();
        let ring = Ring::setup(params, &cost);
        let cost = cost.snapshot();
        self.counter.count_all(&cost);
        let ring = ring?;
        let id = self.next_ring_id.fetch_add(1, Ordering::Relaxed);
        self.rings
            .lock()
            .expect("rings lock")
            .insert(id, Arc::new(Mutex::new(ring)));
        Ok((RingId(id), cost))
    }

    fn uring_register_buffers(&self, ring: RingId, regions: &[MemId]) -> KernelResult<()> {
        let ring = self.ring(ring, SyscallKind::IoUringRegister)?;
        let mut ring = ring.lock().expect("ring lock");
        ring.register_buffers(regions, &self.mappings, &self.counter)
    }

    fn uring_register_files(&self, ring: RingId, fds: &[Fd]) -> KernelResult<()> {
        let ring = self.ring(ring, SyscallKind::IoUringRegister)?;
        let mut ring = ring.lock().expect("ring lock");
        ring.register_files(fds, &self.counter)
    }

    fn uring_queue(&self, ring: RingId, sqe: &Sqe) -> KernelResult<()> {
        let ring = self.ring(ring, SyscallKind::IoUringEnter)?;
        let mut ring = ring.lock().expect("ring lock");
        ring.queue(sqe, &self.mappings)
    }

    fn uring_submit_and_wait(&self, ring: RingId, wait_nr: u32) -> KernelResult<Submitted> {
        let ring = self.ring(ring, SyscallKind::IoUringEnter)?;
        let mut ring = ring.lock().expect("ring lock");
        ring.submit_and_wait(wait_nr, &self.counter, monotonic_ns)
    }

    fn uring_reap(&self, ring: RingId, out: &mut Vec<Cqe>, max: usize) -> KernelResult<usize> {
        let ring = self.ring(ring, SyscallKind::IoUringEnter)?;
        let mut ring = ring.lock().expect("ring lock");
        ring.reap(out, max, &self.mappings)
    }

    fn uring_cq_state(&self, ring: RingId) -> KernelResult<CqState> {
        let ring = self.ring(ring, SyscallKind::IoUringEnter)?;
        let mut ring = ring.lock().expect("ring lock");
        ring.cq_state()
    }

    fn uring_close_counted(&self, ring: RingId) -> KernelResult<SyscallCounts> {
        let id = ring;
        let ring = self.ring(id, SyscallKind::Close)?;
        let cost = SyscallCounter::default();
        let closed = self.close_ring(&ring, &cost);
        let cost = cost.snapshot();
        self.counter.count_all(&cost);
        closed?;
        self.rings.lock().expect("rings lock").remove(&id.0);
        Ok(cost)
    }
    fn bpf_map_create(&self, spec: &MapSpec) -> KernelResult<MapFd> {
        let call = SyscallKind::BpfMapCreate;
        self.counter.count(call);
        let value_bytes = match spec.map_type {
            // Per-CPU values cross the boundary as one 8-byte-rounded value per possible CPU.
            MapType::PercpuArray => {
                let cpus = bpf::possible_cpus().ok_or_else(|| KernelError::Unsupported {
                    call,
                    why: "cannot read /sys/devices/system/cpu/possible".to_string(),
                })?;
                (spec.value_size as usize).next_multiple_of(8) * cpus
            }
            MapType::Hash | MapType::Array | MapType::Ringbuf => spec.value_size as usize,
        };
        let fd = bpf::map_create(
            spec.map_type.kernel_id(),
            spec.key_size,
            spec.value_size,
            spec.max_entries,
            spec.flags,
            &spec.name,
        )
        .map_err(|errno| bpf_error(call, errno))?;
        let shape = bpf::MapShape {
            key_bytes: spec.key_size as usize,
            value_bytes,
        };
        self.maps.lock().expect("maps lock").insert(
            fd,
            MapRecord {
                spec: spec.clone(),
                shape,
                frozen: false,
            },
        );
        Ok(MapFd(Fd(fd)))
    }

    fn bpf_map_mmap(&self, map: MapFd) -> KernelResult<MemId> {
        let call = SyscallKind::Mmap;
        let record = self.map_record(map, call)?;
        let spec = &record.spec;
        if spec.map_type != MapType::Array || spec.flags & bpf::F_MMAPABLE == 0 {
            return Err(KernelError::Unsupported {
                call,
                why: format!(
                    "map {:?} is not a BPF_F_MMAPABLE array map; only those are mmapped",
                    spec.name
                ),
            });
        }
        let len = bpf::array_values_bytes(spec.value_size, spec.max_entries)
            .filter(|&len| len > 0)
            .ok_or(KernelError::Errno {
                call,
                errno: Errno::EINVAL,
            })?;
        self.counter.count(call);
        // SAFETY: a new shared mapping of the map's fd with no address hint; the kernel checks
        // len against the map's value area.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                map.0 .0,
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return fail(call);
        }
        Ok(self.insert_mapping(addr as usize, len))
    }

    fn bpf_map_lookup(&self, map: MapFd, key: &[u8], value: &mut [u8]) -> KernelResult<()> {
        let call = SyscallKind::BpfMapLookup;
        let record = self.map_record(map, call)?;
        self.counter.count(call);
        bpf::map_lookup(map.0 .0, record.shape, key, value).map_err(|errno| bpf_error(call, errno))
    }

    fn bpf_map_update(&self, map: MapFd, key: &[u8], value: &[u8], flags: u64) -> KernelResult<()> {
        let call = SyscallKind::BpfMapUpdate;
        let record = self.map_record(map, call)?;
        self.counter.count(call);
        bpf::map_update(map.0 .0, record.shape, key, value, flags)
            .map_err(|errno| map_write_error(&record, call, errno))
    }

    fn bpf_map_freeze(&self, map: MapFd) -> KernelResult<()> {
        let call = SyscallKind::BpfMapFreeze;
        let record = self.map_record(map, call)?;
        self.counter.count(call);
        bpf::map_freeze(map.0 .0).map_err(|errno| map_write_error(&record, call, errno))?;
        if let Some(record) = self.maps.lock().expect("maps lock").get_mut(&map.0 .0) {
            record.frozen = true;
        }
        Ok(())
    }

    fn bpf_prog_load(&self, prog: &ProgLoad) -> KernelResult<ProgLoaded> {
        self.prog_load(prog, None)
    }

    fn bpf_btf_load(&self, btf: &[u8]) -> KernelResult<BtfFd> {
        let call = SyscallKind::BpfBtfLoad;
        let (fd, _log) = self.load_with_log(call, |verbose| bpf::btf_load(btf, verbose))?;
        Ok(BtfFd(Fd(fd)))
    }

    fn bpf_prog_load_btf(&self, prog: &ProgLoad, btf: &ProgBtf) -> KernelResult<ProgLoaded> {
        let func_info: Vec<bpf::FuncInfoRec> = btf
            .func_info
            .iter()
            .map(|f| bpf::FuncInfoRec {
                insn_off: f.insn_off,
                type_id: f.type_id,
            })
            .collect();
        self.prog_load(
            prog,
            Some(bpf::ProgBtfRefs {
                btf_fd: btf.btf.0 .0,
                func_info: &func_info,
            }),
        )
    }

    fn bpf_prog_test_run(&self, prog: ProgFd, ctx: &mut [u8]) -> KernelResult<TestRunResult> {
        let call = SyscallKind::BpfProgTestRun;
        self.counter.count(call);
        let start_ns = self.now_ns();
        let run =
            bpf::prog_test_run_syscall(prog.0 .0, ctx).map_err(|errno| bpf_error(call, errno))?;
        // SYSCALL programs are not timed by the kernel (duration stays 0): report the wall
        // time of the bpf(2) call instead, which bounds the run from above.
        let duration_ns = match run.duration_ns {
            0 => self.now_ns().saturating_sub(start_ns),
            ns => u64::from(ns),
        };
        Ok(TestRunResult {
            retval: run.retval,
            duration_ns,
        })
    }

    fn now_ns(&self) -> u64 {
        monotonic_ns()
    }

    fn sleep_ns(&self, ns: u64) {
        self.counter.count(SyscallKind::Nanosleep);
        std::thread::sleep(std::time::Duration::from_nanos(ns));
    }

    fn cpu_work(&self, _work: resystance_traces::CpuWork) {
        // The host's CPU has already spent the time.
    }

    fn switch_task(
        &self,
        _task: resystance_traces::Task,
        _start_ns: u64,
    ) -> resystance_traces::Task {
        // Each task is its own host thread; the clock is the host's.
        resystance_traces::Task::Foreground
    }

    fn syscall_counts(&self) -> SyscallCounts {
        self.counter.snapshot()
    }

    fn name(&self) -> &'static str {
        "real"
    }

    fn default_db_dir(&self) -> PathBuf {
        std::env::temp_dir().join("resystance-bench")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use resystance_vm::exec::encode_insn as insn;

    #[test]
    fn file_round_trip_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let k = RealKernel::new();
        let path = dir.path().join("a");
        let fd = k.open(&path, OpenFlags::CREATE_NEW).unwrap();
        assert_eq!(k.pwrite(fd, b"hello world", 0).unwrap(), 11);
        k.fsync(fd).unwrap();
        k.close(fd).unwrap();
        let fd = k.open(&path, OpenFlags::READ).unwrap();
        assert_eq!(k.file_size(fd).unwrap(), 11);
        let mut buf = [0u8; 5];
        assert_eq!(k.pread(fd, &mut buf, 6).unwrap(), 5);
        assert_eq!(&buf, b"world");
        assert_eq!(k.pread(fd, &mut buf, 11).unwrap(), 0, "EOF reads 0 bytes");
        k.close(fd).unwrap();
        let err = k.open(&path, OpenFlags::CREATE_NEW).unwrap_err();
        assert_eq!(err.errno(), Some(Errno::EEXIST));
        k.rename(&path, &dir.path().join("b")).unwrap();
        assert_eq!(k.list_dir(dir.path()).unwrap(), vec!["b".to_string()]);
        k.unlink(&dir.path().join("b")).unwrap();
        assert_eq!(
            k.open(&path, OpenFlags::READ).unwrap_err().errno(),
            Some(Errno::ENOENT)
        );
        let c = k.syscall_counts();
        // list_dir: openat + getdents64 (entries, then 0) + close.
        assert_eq!(c.get(SyscallKind::Open), 5);
        assert_eq!(c.get(SyscallKind::Getdents), 2);
        assert_eq!(c.get(SyscallKind::Pread), 2);
        assert_eq!(c.get(SyscallKind::Pwrite), 1);
        assert_eq!(c.get(SyscallKind::Fsync), 1);
        assert_eq!(c.get(SyscallKind::Close), 3);
    }

    #[test]
    fn memory_regions_are_bounds_checked() {
        let k = RealKernel::new();
        let mem = k.mem_alloc(4096).unwrap();
        k.mem_write(mem, 4090, b"abcdef").unwrap();
        let mut out = [0u8; 6];
        k.mem_read(mem, 4090, &mut out).unwrap();
        assert_eq!(&out, b"abcdef");
        assert!(
            k.mem_write(mem, 4091, b"abcdef").is_err(),
            "ends past the region"
        );
        assert!(
            k.mem_read(mem, usize::MAX, &mut out).is_err(),
            "offset overflow"
        );
        k.mem_free(mem).unwrap();
        assert!(k.mem_read(mem, 0, &mut out).is_err(), "freed region");
    }

    const EXIT: u64 = 0x95;

    fn syscall_prog(name: &str, insns: Vec<u64>) -> ProgLoad {
        ProgLoad {
            name: name.to_string(),
            prog_type: ProgType::Syscall,
            insns,
            license: "GPL".to_string(),
        }
    }

    /// A kernel whose bpf(2) works, or `None` after printing one `SKIP` line.
    fn bpf_kernel(test: &str) -> Option<RealKernel> {
        use std::io::Write;
        // SAFETY: geteuid has no preconditions.
        let why = if unsafe { libc::geteuid() } != 0 {
            Some("not root (bpf(2) needs root, or CAP_BPF and CAP_PERFMON)".to_string())
        } else {
            match RealKernel::new().bpf_unavailable() {
                None => return Some(RealKernel::new()),
                why => why,
            }
        };
        let why = why.expect("set on every path that does not return");
        writeln!(std::io::stdout().lock(), "SKIP {test}: {why}").unwrap();
        None
    }

    #[test]
    fn mmapable_array_map_round_trips_through_memory_and_bpf() {
        let Some(k) = bpf_kernel("mmapable_array_map_round_trips_through_memory_and_bpf") else {
            return;
        };
        let spec = MapSpec {
            name: "rt_values".to_string(),
            map_type: MapType::Array,
            key_size: 4,
            value_size: 12, // rounded up to 16 bytes per value in the mapping
            max_entries: 4,
            flags: bpf::F_MMAPABLE,
        };
        let map = k.bpf_map_create(&spec).unwrap();
        let mem = k.bpf_map_mmap(map).unwrap();
        k.mem_write(mem, 2 * 16, b"hello, maps!").unwrap();
        let mut value = [0u8; 12];
        k.bpf_map_lookup(map, &2u32.to_ne_bytes(), &mut value)
            .unwrap();
        assert_eq!(&value, b"hello, maps!");
        k.bpf_map_update(map, &3u32.to_ne_bytes(), b"from update.", 0)
            .unwrap();
        let mut seen = [0u8; 12];
        k.mem_read(mem, 3 * 16, &mut seen).unwrap();
        assert_eq!(&seen, b"from update.");
        assert!(
            k.mem_read(mem, 4 * 16, &mut [0u8; 1]).is_err(),
            "past the values"
        );
        let err = k
            .bpf_map_lookup(map, &0u32.to_ne_bytes(), &mut [0u8; 11])
            .unwrap_err();
        assert_eq!(
            err.errno(),
            Some(Errno::EINVAL),
            "short value buffer: {err}"
        );
        let err = k
            .bpf_map_lookup(map, &9u32.to_ne_bytes(), &mut value)
            .unwrap_err();
        assert_eq!(err.errno(), Some(Errno::ENOENT), "key out of range: {err}");
        k.mem_free(mem).unwrap();
        k.close(map.0).unwrap();
        assert_eq!(
            k.bpf_map_lookup(map, &0u32.to_ne_bytes(), &mut value)
                .unwrap_err()
                .errno(),
            Some(Errno::EBADF),
            "a closed map is forgotten"
        );
        let c = k.syscall_counts();
        assert_eq!(c.get(SyscallKind::BpfMapCreate), 1);
        assert_eq!(c.get(SyscallKind::Mmap), 1);
        assert_eq!(c.get(SyscallKind::Munmap), 1);
        assert_eq!(
            c.get(SyscallKind::BpfMapLookup),
            3,
            "the short buffer never reached bpf(2)"
        );
        assert_eq!(c.get(SyscallKind::BpfMapUpdate), 1);
    }

    #[test]
    fn a_frozen_map_refuses_user_space_writes() {
        let Some(k) = bpf_kernel("a_frozen_map_refuses_user_space_writes") else {
            return;
        };
        let spec = MapSpec {
            name: "frozen".to_string(),
            map_type: MapType::Array,
            key_size: 4,
            value_size: 8,
            max_entries: 1,
            flags: 0,
        };
        let map = k.bpf_map_create(&spec).unwrap();
        k.bpf_map_update(map, &0u32.to_ne_bytes(), b"initial.", 0)
            .unwrap();
        k.bpf_map_freeze(map).unwrap();
        let err = k
            .bpf_map_update(map, &0u32.to_ne_bytes(), b"changed!", 0)
            .unwrap_err();
        assert!(
            matches!(
                err,
                KernelError::Errno {
                    call: SyscallKind::BpfMapUpdate,
                    errno: Errno::EPERM
                }
            ),
            "a frozen map's EPERM is its state, not a missing privilege: {err:?}"
        );
        let mut value = [0u8; 8];
        k.bpf_map_lookup(map, &0u32.to_ne_bytes(), &mut value)
            .unwrap();
        assert_eq!(
            &value, b"initial.",
            "reads still work and see the old value"
        );
        assert_eq!(
            k.bpf_map_freeze(map).unwrap_err().errno(),
            Some(Errno::EPERM),
            "a map freezes once"
        );
        k.close(map.0).unwrap();
        assert_eq!(
            k.bpf_map_freeze(map).unwrap_err().errno(),
            Some(Errno::EBADF),
            "a closed map is forgotten"
        );
        let c = k.syscall_counts();
        assert_eq!(
            c.get(SyscallKind::BpfMapFreeze),
            2,
            "the closed map never reached bpf(2)"
        );
        assert_eq!(c.get(SyscallKind::BpfMapUpdate), 2);
    }

    #[test]
    fn syscall_program_runs_with_its_context() {
        let Some(k) = bpf_kernel("syscall_program_runs_with_its_context") else {
            return;
        };
        // r0 = *(u32 *)(r1 + 0); r0 += 1; *(u32 *)(r1 + 4) = r0; exit
        let prog = syscall_prog(
            "plus_one",
            vec![
                insn(0x61, 0, 1, 0, 0),
                insn(0x07, 0, 0, 0, 1),
                insn(0x63, 1, 0, 4, 0),
                EXIT,
            ],
        );
        let loaded = k.bpf_prog_load(&prog).unwrap();
        let n = loaded
            .verified_insns
            .expect("Linux 6.18 reports verified_insns");
        assert!(n >= 4, "processed {n} instructions");
        assert!(loaded.log.is_empty(), "a good program loads without a log");
        let mut ctx = [0u8; 16];
        ctx[..4].copy_from_slice(&41u32.to_ne_bytes());
        let run = k.bpf_prog_test_run(loaded.fd, &mut ctx).unwrap();
        assert_eq!(run.retval, 42);
        assert_eq!(ctx[4..8], 42u32.to_ne_bytes(), "the context is copied back");
        let err = k.bpf_prog_test_run(loaded.fd, &mut [0u8; 4]).unwrap_err();
        assert_eq!(
            err.errno(),
            Some(Errno::EINVAL),
            "ctx shorter than the program reads"
        );
        k.close(loaded.fd.0).unwrap();
        let c = k.syscall_counts();
        assert_eq!(c.get(SyscallKind::BpfProgLoad), 1);
        assert_eq!(c.get(SyscallKind::BpfProgTestRun), 2);
    }

    #[test]
    fn a_long_program_loads_once_without_a_log_and_a_long_rejection_keeps_the_log_tail() {
        let Some(k) = bpf_kernel("a_long_program_loads_once_without_a_log") else {
            return;
        };
        // 40,000 × "r0 += 1": a level-1 log (a line per instruction) would outgrow 1 MiB.
        const ADDS: i32 = 40_000;
        let mut insns = vec![insn(0xb7, 0, 0, 0, 0)];
        insns.extend(std::iter::repeat_n(insn(0x07, 0, 0, 0, 1), ADDS as usize));
        insns.push(EXIT);
        let loaded = k
            .bpf_prog_load(&syscall_prog("long_prog", insns.clone()))
            .unwrap();
        assert!(loaded.log.is_empty());
        assert_eq!(
            k.syscall_counts().get(SyscallKind::BpfProgLoad),
            1,
            "loaded once"
        );
        let run = k.bpf_prog_test_run(loaded.fd, &mut []).unwrap();
        assert_eq!(run.retval, ADDS as u32);
        k.close(loaded.fd.0).unwrap();
        // The same, ending in a read of r2 (never initialised): rejected, and the logged
        // second load's log overflows; its tail says why.
        let last = insns.len() - 1;
        insns.insert(last, insn(0xbf, 0, 2, 0, 0));
        let err = k
            .bpf_prog_load(&syscall_prog("long_bad", insns))
            .unwrap_err();
        let KernelError::Rejected { log, .. } = &err else {
            panic!("expected a rejection with a log, got {err}");
        };
        assert!(
            log.starts_with("(verifier log longer than"),
            "{}",
            &log[..200.min(log.len())]
        );
        assert!(log.contains("R2 !read_ok"), "the tail names the fault");
        assert_eq!(
            k.syscall_counts().get(SyscallKind::BpfProgLoad),
            3,
            "1 + 2 loads"
        );
    }

    #[test]
    fn verifier_rejection_carries_the_log() {
        let Some(k) = bpf_kernel("verifier_rejection_carries_the_log") else {
            return;
        };
        // r0 = r2; exit — a syscall program's r2 is never initialised.
        let err = k
            .bpf_prog_load(&syscall_prog(
                "reads_r2",
                vec![insn(0xbf, 0, 2, 0, 0), EXIT],
            ))
            .unwrap_err();
        let KernelError::Rejected { errno, log, .. } = &err else {
            panic!("expected a verifier rejection, got {err}");
        };
        assert_eq!(*errno, Errno::EACCES);
        assert!(log.contains("R2 !read_ok"), "{log}");
        assert!(err.to_string().contains("R2 !read_ok"), "{err}");
        // exit without setting r0.
        let err = k
            .bpf_prog_load(&syscall_prog("no_r0", vec![EXIT]))
            .unwrap_err();
        assert!(err.to_string().contains("R0 !read_ok"), "{err}");
    }

    /// Raw BTF: `int`, a global `int v`, and a DATASEC `.data` of `size` bytes holding it.
    fn btf_with_datasec(size: u32) -> Vec<u8> {
        let words: [u32; 13] = [
            1,            // "int"
            1 << 24,      // BTF_KIND_INT
            4,            // 4 bytes
            32,           // 32-bit, unsigned
            5,            // "v"
            14 << 24,     // BTF_KIND_VAR
            1,            // of type 1
            1,            // BTF_VAR_GLOBAL_ALLOCATED
            7,            // ".data"
            15 << 24 | 1, // BTF_KIND_DATASEC, one variable
            size,
            2, // VAR 2 ...
            0, // ... at offset 0 (a 4-byte entry size follows)
        ];
        let strings = b"\0int\0v\0.data\0";
        let mut types: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        types.extend(4u32.to_le_bytes());
        let mut out = Vec::new();
        out.extend(0xeb9fu16.to_le_bytes());
        out.extend([1u8, 0]); // version, flags
        for word in [24u32, 0, types.len() as u32, types.len() as u32] {
            out.extend(word.to_le_bytes());
        }
        out.extend((strings.len() as u32).to_le_bytes());
        out.extend(&types);
        out.extend(strings);
        out
    }

    #[test]
    fn btf_loads_and_a_zero_sized_datasec_is_refused_with_a_log() {
        let Some(k) = bpf_kernel("btf_loads_and_a_zero_sized_datasec_is_refused_with_a_log") else {
            return;
        };
        let btf = k.bpf_btf_load(&btf_with_datasec(4)).unwrap();
        k.close(btf.0).unwrap();
        // What clang emits before libbpf (or the object loader) fills sizes in.
        let err = k.bpf_btf_load(&btf_with_datasec(0)).unwrap_err();
        let KernelError::Rejected { call, errno, log } = &err else {
            panic!("expected a BTF rejection with a log, got {err}");
        };
        assert_eq!(*call, SyscallKind::BpfBtfLoad);
        assert_eq!(*errno, Errno::EINVAL);
        assert!(log.contains("size == 0"), "{log}");
        // The good BTF once; the bad one quietly, then again with a log.
        assert_eq!(k.syscall_counts().get(SyscallKind::BpfBtfLoad), 3);
    }

    #[test]
    fn missing_privilege_is_named() {
        let Some(k) = bpf_kernel("missing_privilege_is_named") else {
            return;
        };
        // Capabilities are per thread at the system-call level: drop them all in a thread of
        // our own with a raw capset(2), leaving the rest of the test process privileged.
        let err = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    #[repr(C)]
                    struct CapHeader {
                        version: u32,
                        pid: i32,
                    }
                    #[repr(C)]
                    #[derive(Clone, Copy, Default)]
                    struct CapData {
                        effective: u32,
                        permitted: u32,
                        inheritable: u32,
                    }
                    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
                    let mut header = CapHeader {
                        version: LINUX_CAPABILITY_VERSION_3,
                        pid: 0,
                    };
                    let data = [CapData::default(); 2];
                    // SAFETY: header and data are valid version-3 capset arguments (two data
                    // words) for the duration of the call; it changes only this thread.
                    let rc = unsafe {
                        libc::syscall(
                            libc::SYS_capset,
                            std::ptr::from_mut(&mut header),
                            data.as_ptr(),
                        )
                    };
                    assert_eq!(rc, 0, "capset: {}", std::io::Error::last_os_error());
                    k.bpf_prog_load(&syscall_prog("r0_zero", vec![insn(0xb7, 0, 0, 0, 0), EXIT]))
                        .unwrap_err()
                })
                .join()
                .unwrap()
        });
        assert!(
            matches!(
                err,
                KernelError::NotPermitted {
                    errno: Errno::EPERM,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("CAP_BPF"), "{err}");
    }
}
