//! The real Linux kernel behind the resystance kernel boundary.
//!
//! Files, anonymous shared memory and the clock go straight to Linux through `libc` (one
//! boundary call = one system call, counted by kind). io_uring and `bpf(2)` arrive with the
//! real-kernel issue; until then those calls answer [`KernelError::Unsupported`] naming what is
//! missing, so nothing pretends to work.

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use resystance_traces::{
    Cqe, Errno, Fd, Kernel, KernelError, KernelResult, MapFd, MapSpec, MemId, OpenFlags, ProgFd,
    ProgLoad, ProgLoaded, RingId, Sqe, Submitted, SyscallCounter, SyscallCounts, SyscallKind,
    TestRunResult, UringParams,
};

const NOT_YET: &str =
    "io_uring and bpf(2) on the real kernel arrive with the real-kernel issue (#6)";

/// A mapping made by `mem_alloc`: base address and length.
#[derive(Debug)]
struct Mapping {
    addr: usize,
    len: usize,
}

/// The host's Linux kernel.
#[derive(Debug, Default)]
pub struct RealKernel {
    counter: SyscallCounter,
    mappings: Mutex<HashMap<u32, Mapping>>,
    next_mem_id: Mutex<u32>,
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

fn unsupported<T>(call: SyscallKind) -> KernelResult<T> {
    Err(KernelError::Unsupported {
        call,
        why: NOT_YET.to_string(),
    })
}

impl RealKernel {
    /// The host kernel, with all counts at zero.
    pub fn new() -> Self {
        RealKernel::default()
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
        let maps = self.mappings.get_mut().expect("mappings lock");
        for m in maps.values() {
            // SAFETY: every entry is a live mapping made by mem_alloc and not yet unmapped.
            unsafe { libc::munmap(m.addr as *mut libc::c_void, m.len) };
        }
    }
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
        // opendir/readdir/closedir: counted as one getdents64 pass, which is what it costs for
        // the small directories of a database.
        self.counter.count(SyscallKind::Getdents);
        let cpath = c_path(path, SyscallKind::Getdents)?;
        // SAFETY: cpath is NUL-terminated.
        let dir = unsafe { libc::opendir(cpath.as_ptr()) };
        if dir.is_null() {
            return fail(SyscallKind::Getdents);
        }
        let mut names = Vec::new();
        loop {
            // SAFETY: dir is a valid open DIR stream.
            let entry = unsafe { libc::readdir(dir) };
            if entry.is_null() {
                break;
            }
            // SAFETY: readdir returned a valid dirent whose d_name is NUL-terminated.
            let name = unsafe { CStr::from_ptr((*entry).d_name.as_ptr()) };
            let name = name.to_string_lossy().into_owned();
            if name != "." && name != ".." {
                names.push(name);
            }
        }
        // SAFETY: dir is valid and closed once.
        unsafe { libc::closedir(dir) };
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
        let mut next = self.next_mem_id.lock().expect("mem id lock");
        let id = *next;
        *next += 1;
        self.mappings.lock().expect("mappings lock").insert(
            id,
            Mapping {
                addr: addr as usize,
                len,
            },
        );
        Ok(MemId(id))
    }

    fn mem_free(&self, mem: MemId) -> KernelResult<()> {
        self.counter.count(SyscallKind::Munmap);
        let m = self
            .mappings
            .lock()
            .expect("mappings lock")
            .remove(&mem.0)
            .ok_or(KernelError::Errno {
                call: SyscallKind::Munmap,
                errno: Errno::EINVAL,
            })?;
        // SAFETY: m was a live mapping made by mem_alloc; it is removed from the table first.
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

    fn uring_setup(&self, _params: &UringParams) -> KernelResult<RingId> {
        unsupported(SyscallKind::IoUringSetup)
    }
    fn uring_register_buffers(&self, _ring: RingId, _regions: &[MemId]) -> KernelResult<()> {
        unsupported(SyscallKind::IoUringRegister)
    }
    fn uring_register_files(&self, _ring: RingId, _fds: &[Fd]) -> KernelResult<()> {
        unsupported(SyscallKind::IoUringRegister)
    }
    fn uring_queue(&self, _ring: RingId, _sqe: &Sqe) -> KernelResult<()> {
        unsupported(SyscallKind::IoUringEnter)
    }
    fn uring_submit_and_wait(&self, _ring: RingId, _wait_nr: u32) -> KernelResult<Submitted> {
        unsupported(SyscallKind::IoUringEnter)
    }
    fn uring_reap(&self, _ring: RingId, _out: &mut Vec<Cqe>, _max: usize) -> KernelResult<usize> {
        unsupported(SyscallKind::IoUringEnter)
    }
    fn uring_close(&self, _ring: RingId) -> KernelResult<()> {
        unsupported(SyscallKind::Close)
    }
    fn bpf_map_create(&self, _spec: &MapSpec) -> KernelResult<MapFd> {
        unsupported(SyscallKind::BpfMapCreate)
    }
    fn bpf_map_mmap(&self, _map: MapFd) -> KernelResult<MemId> {
        unsupported(SyscallKind::Mmap)
    }
    fn bpf_map_lookup(&self, _map: MapFd, _key: &[u8], _value: &mut [u8]) -> KernelResult<()> {
        unsupported(SyscallKind::BpfMapLookup)
    }
    fn bpf_map_update(
        &self,
        _map: MapFd,
        _key: &[u8],
        _value: &[u8],
        _flags: u64,
    ) -> KernelResult<()> {
        unsupported(SyscallKind::BpfMapUpdate)
    }
    fn bpf_prog_load(&self, _prog: &ProgLoad) -> KernelResult<ProgLoaded> {
        unsupported(SyscallKind::BpfProgLoad)
    }
    fn bpf_prog_test_run(&self, _prog: ProgFd, _ctx: &mut [u8]) -> KernelResult<TestRunResult> {
        unsupported(SyscallKind::BpfProgTestRun)
    }

    fn now_ns(&self) -> u64 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: ts is a valid timespec; CLOCK_MONOTONIC always exists on Linux.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        assert_eq!(rc, 0, "clock_gettime(CLOCK_MONOTONIC) cannot fail");
        ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
    }

    fn sleep_ns(&self, ns: u64) {
        self.counter.count(SyscallKind::Nanosleep);
        std::thread::sleep(std::time::Duration::from_nanos(ns));
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
        assert_eq!(c.get(SyscallKind::Open), 4);
        assert_eq!(c.get(SyscallKind::Pread), 2);
        assert_eq!(c.get(SyscallKind::Pwrite), 1);
        assert_eq!(c.get(SyscallKind::Fsync), 1);
        assert_eq!(c.get(SyscallKind::Close), 2);
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

    #[test]
    fn io_uring_and_bpf_say_what_is_missing() {
        let k = RealKernel::new();
        let err = k.uring_setup(&UringParams::default()).unwrap_err();
        assert!(err.to_string().contains("real-kernel issue"), "{err}");
    }
}
