//! What this host offers resystance: privileges, kernel version and features, limits.
//!
//! [`probe`] tries each feature for real (a tiny program, a small map, a ring) rather than
//! trusting version numbers, and turns every shortfall into one actionable sentence.
//! `resystance doctor` prints the [`Report`].

use std::fmt;

use resystance_traces::{
    Kernel, MapSpec, MapType, OpenFlags, ProgLoad, ProgType, Sqe, SqeFile, SqeOp, UringParams,
};

use crate::{bpf, RealKernel};

/// `CAP_SYS_ADMIN`: before Linux 5.8 the only way to `bpf(2)`, still sufficient after.
const CAP_SYS_ADMIN: u32 = 21;
/// `CAP_IPC_LOCK`: exempts io_uring buffer registration from `RLIMIT_MEMLOCK`.
const CAP_IPC_LOCK: u32 = 14;
/// `CAP_PERFMON` (Linux ≥ 5.8): with `CAP_BPF`, loading tracing-class programs.
const CAP_PERFMON: u32 = 38;
/// `CAP_BPF` (Linux ≥ 5.8).
const CAP_BPF: u32 = 39;
/// The first kernel with `may_goto` (the `can_loop` idiom the compaction program loops with).
pub const KERNEL_MAY_GOTO: (u32, u32) = (6, 9);
/// Locked memory the executors may register as io_uring buffers without `CAP_IPC_LOCK`: the
/// `resystance` mode's input and output windows (a few MiB each) with room to spare.
pub const MEMLOCK_BYTES_WANTED: u64 = 64 << 20;

/// One thing resystance needs (or can use) from the host, and whether it is there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    /// What is checked, e.g. `io_uring`.
    pub name: &'static str,
    /// Present.
    pub ok: bool,
    /// Without it some mode cannot run; optional checks only enable a flag (e.g. `--sqpoll`).
    pub required: bool,
    /// What was found when `ok`; otherwise one sentence saying what to do.
    pub detail: String,
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = if self.ok { "ok" } else { "missing" };
        let optional = if self.required { "" } else { " (optional)" };
        write!(f, "{status} {}{optional}: {}", self.name, self.detail)
    }
}

/// Everything [`probe`] found, in a fixed order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// One entry per check.
    pub checks: Vec<Check>,
}

impl Report {
    /// Every required check passed.
    pub fn ready(&self) -> bool {
        self.checks.iter().all(|c| c.ok || !c.required)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for check in &self.checks {
            writeln!(f, "{check}")?;
        }
        Ok(())
    }
}

fn check(name: &'static str, required: bool, result: Result<String, String>) -> Check {
    let ok = result.is_ok();
    Check {
        name,
        ok,
        required,
        detail: result.unwrap_or_else(|why| why),
    }
}

/// The effective capability set (`CapEff` in `/proc/self/status`).
fn effective_caps() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

fn has_cap(caps: u64, cap: u32) -> bool {
    caps & (1u64 << cap) != 0
}

/// `uname -r`.
fn kernel_release() -> Option<String> {
    // SAFETY: an all-zero utsname is a valid value to be overwritten by uname.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: uts is a valid, writable utsname.
    if unsafe { libc::uname(&mut uts) } != 0 {
        return None;
    }
    // SAFETY: uname NUL-terminates release within the array.
    let release = unsafe { std::ffi::CStr::from_ptr(uts.release.as_ptr()) };
    Some(release.to_string_lossy().into_owned())
}

/// `major.minor` of a release such as `6.18.44-fc-v595`.
pub fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

fn privileges() -> Result<String, String> {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    let caps = effective_caps().unwrap_or(0);
    let who = if euid == 0 {
        "root".to_string()
    } else {
        format!("euid {euid}")
    };
    if has_cap(caps, CAP_BPF) && has_cap(caps, CAP_PERFMON) {
        Ok(format!(
            "{who}, CapEff {caps:#x} has CAP_BPF and CAP_PERFMON"
        ))
    } else if has_cap(caps, CAP_SYS_ADMIN) {
        Ok(format!("{who}, CapEff {caps:#x} has CAP_SYS_ADMIN"))
    } else {
        Err(format!(
            "{who} with CapEff {caps:#x} lacks CAP_BPF and CAP_PERFMON: run as root, or grant \
             them with `sudo setcap cap_bpf,cap_perfmon+ep <path to resystance>`."
        ))
    }
}

fn kernel_version() -> Result<String, String> {
    let release = kernel_release().ok_or("uname(2) failed: run on Linux.")?;
    let (want_major, want_minor) = KERNEL_MAY_GOTO;
    match parse_release(&release) {
        Some(v) if v >= KERNEL_MAY_GOTO => Ok(format!(
            "Linux {release} (≥ {want_major}.{want_minor}: may_goto)"
        )),
        Some(_) => Err(format!(
            "Linux {release} is older than {want_major}.{want_minor}: boot Linux \
             {want_major}.{want_minor} or newer (the compaction program's loops need may_goto)."
        )),
        None => Err(format!(
            "cannot read the version in `{release}`: run on Linux {want_major}.{want_minor} or newer."
        )),
    }
}

fn syscall_programs(k: &RealKernel) -> Result<String, String> {
    // r0 = 0; exit
    let prog = ProgLoad {
        name: "doctor".to_string(),
        prog_type: ProgType::Syscall,
        insns: vec![0xb7, 0x95],
        license: "GPL".to_string(),
    };
    let loaded = k.bpf_prog_load(&prog).map_err(|e| {
        format!(
            "a 2-instruction BPF_PROG_TYPE_SYSCALL program was refused ({e}): run as root on \
             Linux ≥ 5.14 built with CONFIG_BPF_SYSCALL."
        )
    })?;
    let run = k.bpf_prog_test_run(loaded.fd, &mut []);
    let _ = k.close(loaded.fd.0);
    match run {
        Ok(r) if r.retval == 0 => Ok("a sleepable SYSCALL program loads and runs".to_string()),
        Ok(r) => Err(format!(
            "the probe program returned {} instead of 0: report this kernel as unsupported.",
            r.retval
        )),
        Err(e) => Err(format!(
            "BPF_PROG_TEST_RUN of a SYSCALL program failed ({e}): run as root on Linux ≥ 5.14."
        )),
    }
}

const PROBE_VALUE_BYTES: usize = 4096;

fn mmapable_map(
    k: &RealKernel,
) -> Result<(resystance_traces::MapFd, resystance_traces::MemId), String> {
    let spec = MapSpec {
        name: "doctor".to_string(),
        map_type: MapType::Array,
        key_size: 4,
        value_size: PROBE_VALUE_BYTES as u32,
        max_entries: 1,
        flags: bpf::F_MMAPABLE,
    };
    let map = k.bpf_map_create(&spec).map_err(|e| {
        format!(
            "creating a BPF_F_MMAPABLE array map failed ({e}): run as root on Linux ≥ 5.5 with bpf(2) enabled."
        )
    })?;
    match k.bpf_map_mmap(map) {
        Ok(mem) => Ok((map, mem)),
        Err(e) => {
            let _ = k.close(map.0);
            Err(format!(
                "mmap of a BPF_F_MMAPABLE array map failed ({e}): run on Linux ≥ 5.5."
            ))
        }
    }
}

fn mmapable_maps(k: &RealKernel) -> Result<String, String> {
    let (map, mem) = mmapable_map(k)?;
    let mut seen = vec![0u8; 8];
    let result = k
        .mem_write(mem, 0, b"doctor!!")
        .and_then(|()| {
            k.bpf_map_lookup(map, &0u32.to_ne_bytes(), &mut vec![0u8; PROBE_VALUE_BYTES])
        })
        .and_then(|()| k.mem_read(mem, 0, &mut seen));
    let _ = k.mem_free(mem);
    let _ = k.close(map.0);
    match result {
        Ok(()) if seen == b"doctor!!" => {
            Ok("a BPF_F_MMAPABLE array map mmaps read-write".to_string())
        }
        Ok(()) => Err(
            "mapped map memory did not keep what was written: report this kernel as unsupported."
                .to_string(),
        ),
        Err(e) => Err(format!(
            "using mapped map memory failed ({e}): run on Linux ≥ 5.5."
        )),
    }
}

fn io_uring_disabled_hint() -> String {
    match crate::uring::io_uring_disabled_sysctl() {
        Some(0) | None => String::new(),
        Some(v) => format!(" (kernel.io_uring_disabled = {v})"),
    }
}

fn io_uring(k: &RealKernel) -> Result<String, String> {
    let ring = k.uring_setup(&UringParams::default()).map_err(|e| {
        format!(
            "io_uring_setup failed ({e}){}: enable it with `sysctl -w kernel.io_uring_disabled=0` \
             on a kernel built with CONFIG_IO_URING.",
            io_uring_disabled_hint()
        )
    })?;
    let _ = k.uring_close(ring);
    let sysctl = crate::uring::io_uring_disabled_sysctl()
        .map_or_else(|| "absent".to_string(), |v| v.to_string());
    Ok(format!(
        "io_uring_setup works (kernel.io_uring_disabled = {sysctl})"
    ))
}

/// `READ_FIXED` of this binary's first page into a registered, mmapped BPF map: the
/// `resystance` mode's data path in miniature.
fn fixed_buffers_over_maps(k: &RealKernel) -> Result<String, String> {
    let (map, mem) = mmapable_map(k).map_err(|why| format!("needs mmapable maps first; {why}"))?;
    let result = (|| -> Result<i32, String> {
        let ring = k
            .uring_setup(&UringParams::default())
            .map_err(|e| format!("needs io_uring first ({e}); enable io_uring."))?;
        let io = (|| {
            k.uring_register_buffers(ring, &[mem])?;
            let fd = k.open(std::path::Path::new("/proc/self/exe"), OpenFlags::READ)?;
            let op = SqeOp::ReadFixed {
                file: SqeFile::Fd(fd),
                buf_index: 0,
                buf_offset: 0,
                len: PROBE_VALUE_BYTES as u32,
                offset: 0,
            };
            let done = k
                .uring_queue(ring, &Sqe::new(op, 0))
                .and_then(|()| k.uring_submit_and_wait(ring, 1))
                .and_then(|_| {
                    let mut cqes = Vec::new();
                    k.uring_reap(ring, &mut cqes, 1)?;
                    Ok(cqes.first().map_or(0, |c| c.res))
                });
            let _ = k.close(fd);
            done
        })();
        let _ = k.uring_close(ring);
        io.map_err(|e| {
            format!(
                "registering mmapped BPF-map memory as an io_uring buffer failed ({e}): run as \
                 root (or with CAP_IPC_LOCK) on a recent kernel (Linux 6.18 is known to work)."
            )
        })
    })();
    let mut magic = [0u8; 4];
    let read_back = k.mem_read(mem, 0, &mut magic);
    let _ = k.mem_free(mem);
    let _ = k.close(map.0);
    match result? {
        res if res == PROBE_VALUE_BYTES as i32 && read_back.is_ok() && &magic == b"\x7fELF" => {
            Ok("READ_FIXED lands in registered, mmapped BPF-map memory".to_string())
        }
        res => Err(format!(
            "READ_FIXED into mmapped BPF-map memory completed with {res}: run on a recent \
             kernel (Linux 6.18 is known to work) and report this one."
        )),
    }
}

fn sqpoll(k: &RealKernel) -> Result<String, String> {
    let params = UringParams {
        sqpoll: true,
        ..UringParams::default()
    };
    let ring = k.uring_setup(&params).map_err(|e| {
        format!(
            "an SQPOLL ring was refused ({e}): run as root (or with CAP_SYS_NICE before Linux \
             5.11) to use --sqpoll."
        )
    })?;
    let _ = k.uring_close(ring);
    Ok("an SQPOLL ring sets up".to_string())
}

fn memlock() -> Result<String, String> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: limit is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) } != 0 {
        return Err("getrlimit(RLIMIT_MEMLOCK) failed: run on Linux.".to_string());
    }
    let show = |bytes: u64| {
        if bytes == libc::RLIM_INFINITY {
            "unlimited".to_string()
        } else {
            format!("{} KiB", bytes / 1024)
        }
    };
    let current = show(limit.rlim_cur);
    if has_cap(effective_caps().unwrap_or(0), CAP_IPC_LOCK) {
        Ok(format!(
            "RLIMIT_MEMLOCK {current}; CAP_IPC_LOCK exempts io_uring buffers from it"
        ))
    } else if limit.rlim_cur == libc::RLIM_INFINITY || limit.rlim_cur >= MEMLOCK_BYTES_WANTED {
        Ok(format!("RLIMIT_MEMLOCK {current}"))
    } else {
        Err(format!(
            "RLIMIT_MEMLOCK is {current}, below the {} MiB io_uring buffers may lock: raise it \
             with `ulimit -l unlimited` (LimitMEMLOCK=infinity for a service) or run as root.",
            MEMLOCK_BYTES_WANTED >> 20
        ))
    }
}

/// Probes the host through `kernel` (its system-call counts include the probes').
pub fn probe(kernel: &RealKernel) -> Report {
    Report {
        checks: vec![
            check("privileges", true, privileges()),
            check("kernel", true, kernel_version()),
            check("syscall programs", true, syscall_programs(kernel)),
            check("mmapable maps", true, mmapable_maps(kernel)),
            check("io_uring", true, io_uring(kernel)),
            check(
                "fixed buffers over maps",
                true,
                fixed_buffers_over_maps(kernel),
            ),
            check("sqpoll", false, sqpoll(kernel)),
            check("memlock", true, memlock()),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_parse_to_major_minor() {
        assert_eq!(parse_release("6.18.44-fc-v595"), Some((6, 18)));
        assert_eq!(parse_release("6.9.0"), Some((6, 9)));
        assert_eq!(parse_release("5.15.0-91-generic"), Some((5, 15)));
        assert_eq!(parse_release("garbage"), None);
        assert!(parse_release("6.10.1").unwrap() >= KERNEL_MAY_GOTO);
        assert!(parse_release("6.8.12").unwrap() < KERNEL_MAY_GOTO);
    }

    #[test]
    fn lines_say_ok_or_what_to_do() {
        let report = Report {
            checks: vec![
                check("a", true, Ok("found".to_string())),
                check("b", false, Err("do this.".to_string())),
            ],
        };
        assert_eq!(
            report.to_string(),
            "ok a: found\nmissing b (optional): do this.\n"
        );
        assert!(report.ready(), "only an optional check is missing");
    }

    #[test]
    fn the_probe_answers_every_check_on_this_host() {
        let report = probe(&RealKernel::new());
        assert_eq!(report.checks.len(), 8);
        for c in &report.checks {
            assert!(!c.detail.is_empty(), "{c}");
            if !c.ok {
                assert!(c.detail.ends_with('.'), "one sentence: {c}");
            }
        }
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            assert!(
                report.ready(),
                "as root on this machine everything is present:\n{report}"
            );
        }
    }
}
