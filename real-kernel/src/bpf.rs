//! Every `bpf(2)` call resystance makes, in one place.
//!
//! Each command gets its own `#[repr(C)]` struct laid out exactly like the prefix of the
//! kernel's `union bpf_attr` member it uses (`include/uapi/linux/bpf.h`); the tests below pin
//! every field offset. The kernel accepts an attr shorter than its own union as long as the
//! size we pass covers the fields we set, and zero-fills the rest.
//!
//! The wrappers are safe: they build the attr from Rust slices whose lengths they check, so the
//! kernel never reads or writes past a buffer. The one precondition they cannot check — that a
//! map's key and value sizes are what the caller says — is carried in [`MapShape`], which only
//! [`RealKernel`](crate::RealKernel) constructs, from maps it created itself.

use resystance_traces::Errno;

// The instructions are handed to the kernel as host-order `struct bpf_insn`s, which are the
// little-endian bytes of each `u64` only on a little-endian host.
const _: () = assert!(
    cfg!(target_endian = "little"),
    "bpf instructions are passed as little-endian u64s"
);

/// `enum bpf_cmd` values used here.
const BPF_MAP_CREATE: u32 = 0;
const BPF_MAP_LOOKUP_ELEM: u32 = 1;
const BPF_MAP_UPDATE_ELEM: u32 = 2;
const BPF_PROG_LOAD: u32 = 5;
const BPF_PROG_TEST_RUN: u32 = 10;
const BPF_OBJ_GET_INFO_BY_FD: u32 = 15;
const BPF_BTF_LOAD: u32 = 18;
const BPF_MAP_FREEZE: u32 = 22;

/// `BPF_OBJ_NAME_LEN`: names are at most 15 bytes plus a NUL.
pub const OBJ_NAME_BYTES: usize = 16;
/// `BPF_F_MMAPABLE`: the map's values can be mmapped.
pub const F_MMAPABLE: u32 = 1 << 10;
/// `BPF_F_SLEEPABLE`: the program may sleep (required of `BPF_PROG_TYPE_SYSCALL`).
pub const F_SLEEPABLE: u32 = 1 << 4;
/// The verifier log buffer handed to `BPF_PROG_LOAD`: 1 MiB, enough for level-1 logs of the
/// programs resystance loads (a compaction program logs a few KiB).
pub const VERIFIER_LOG_BYTES: usize = 1 << 20;
/// Log level 1: the verifier's instruction trace along the failing path.
const LOG_LEVEL_VERBOSE: u32 = 1;
/// Largest context `BPF_PROG_TEST_RUN` takes for a `BPF_PROG_TYPE_SYSCALL` program (`U16_MAX`).
pub const SYSCALL_CTX_BYTES_MAX: usize = u16::MAX as usize;

/// The `BPF_MAP_CREATE` member of `union bpf_attr`, up to `btf_vmlinux_value_type_id`.
#[repr(C)]
#[derive(Debug, Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; OBJ_NAME_BYTES],
    map_ifindex: u32,
    btf_fd: u32,
    btf_key_type_id: u32,
    btf_value_type_id: u32,
    btf_vmlinux_value_type_id: u32,
}

/// The `BPF_MAP_*_ELEM` member of `union bpf_attr`.
#[repr(C)]
#[derive(Debug, Default)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// The `BPF_BTF_LOAD` member of `union bpf_attr`, up to `btf_log_true_size`.
#[repr(C)]
#[derive(Debug, Default)]
struct BtfLoadAttr {
    btf: u64,
    btf_log_buf: u64,
    btf_size: u32,
    btf_log_size: u32,
    btf_log_level: u32,
    btf_log_true_size: u32,
}

/// `struct bpf_func_info`: what `BPF_PROG_LOAD` reads from `func_info`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FuncInfoRec {
    /// First instruction of the function.
    pub insn_off: u32,
    /// Its `BTF_KIND_FUNC` type id.
    pub type_id: u32,
}

/// A program's BTF for `BPF_PROG_LOAD`: the BTF object's fd and one record per function.
#[derive(Clone, Copy, Debug)]
pub struct ProgBtfRefs<'a> {
    /// The fd `BPF_BTF_LOAD` returned.
    pub btf_fd: i32,
    /// Sorted by `insn_off`, the first at 0.
    pub func_info: &'a [FuncInfoRec],
}

/// The `BPF_MAP_FREEZE` view of `union bpf_attr`: only `map_fd`, the command's last field (the
/// kernel wants every byte past it zero, so nothing more is passed).
#[repr(C)]
#[derive(Debug, Default)]
struct MapFdAttr {
    map_fd: u32,
}

/// The `BPF_PROG_LOAD` member of `union bpf_attr`, up to `log_true_size`.
#[repr(C)]
#[derive(Debug, Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; OBJ_NAME_BYTES],
    prog_ifindex: u32,
    expected_attach_type: u32,
    prog_btf_fd: u32,
    func_info_rec_size: u32,
    func_info: u64,
    func_info_cnt: u32,
    line_info_rec_size: u32,
    line_info: u64,
    line_info_cnt: u32,
    attach_btf_id: u32,
    attach_prog_fd: u32,
    core_relo_cnt: u32,
    fd_array: u64,
    core_relos: u64,
    core_relo_rec_size: u32,
    log_true_size: u32,
}

/// The `BPF_PROG_TEST_RUN` member (`test`) of `union bpf_attr`.
#[repr(C)]
#[derive(Debug, Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

/// The `BPF_OBJ_GET_INFO_BY_FD` member (`info`) of `union bpf_attr`.
#[repr(C)]
#[derive(Debug, Default)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// `struct bpf_prog_info`, up to `attach_btf_id` (everything through `verified_insns`).
#[repr(C)]
#[derive(Debug, Default)]
struct ProgInfo {
    prog_type: u32,
    id: u32,
    tag: [u8; 8],
    jited_prog_len: u32,
    xlated_prog_len: u32,
    jited_prog_insns: u64,
    xlated_prog_insns: u64,
    load_time: u64,
    created_by_uid: u32,
    nr_map_ids: u32,
    map_ids: u64,
    name: [u8; OBJ_NAME_BYTES],
    ifindex: u32,
    gpl_compatible: u32,
    netns_dev: u64,
    netns_ino: u64,
    nr_jited_ksyms: u32,
    nr_jited_func_lens: u32,
    jited_ksyms: u64,
    jited_func_lens: u64,
    btf_id: u32,
    func_info_rec_size: u32,
    func_info: u64,
    nr_func_info: u32,
    nr_line_info: u32,
    line_info: u64,
    jited_line_info: u64,
    nr_jited_line_info: u32,
    line_info_rec_size: u32,
    jited_line_info_rec_size: u32,
    nr_prog_tags: u32,
    prog_tags: u64,
    run_time_ns: u64,
    run_cnt: u64,
    recursion_misses: u64,
    verified_insns: u32,
    attach_btf_obj_id: u32,
    attach_btf_id: u32,
    _pad: u32,
}

/// Calls `bpf(cmd, attr, size_of::<A>())`; returns the non-negative result or the errno.
///
/// # Safety
///
/// `A` must be one of the attr structs above, and every address stored in `attr` must point
/// to a live buffer at least as long as the size the attr gives for it (readable for inputs,
/// writable for outputs) for the duration of the call.
unsafe fn sys_bpf<A>(cmd: u32, attr: &mut A) -> Result<i32, Errno> {
    // SAFETY: attr is valid for size_of::<A>() bytes; the caller vouches for the buffers it
    // points to. bpf(2) writes only inside attr and those buffers.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_mut(attr),
            std::mem::size_of::<A>(),
        )
    };
    if rc < 0 {
        return Err(Errno(
            std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
        ));
    }
    Ok(i32::try_from(rc).expect("bpf(2) returns an int"))
}

/// A kernel object name: at most 15 bytes, NUL-terminated.
fn obj_name(name: &str) -> [u8; OBJ_NAME_BYTES] {
    let mut out = [0u8; OBJ_NAME_BYTES];
    let len = name.len().min(OBJ_NAME_BYTES - 1);
    out[..len].copy_from_slice(&name.as_bytes()[..len]);
    out
}

/// `BPF_MAP_CREATE`: the new map's fd.
pub fn map_create(
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    name: &str,
) -> Result<i32, Errno> {
    let mut attr = MapCreateAttr {
        map_type,
        key_size,
        value_size,
        max_entries,
        map_flags,
        map_name: obj_name(name),
        ..MapCreateAttr::default()
    };
    // SAFETY: the attr holds no addresses.
    unsafe { sys_bpf(BPF_MAP_CREATE, &mut attr) }
}

/// How many bytes a map's keys and values take at the `bpf(2)` boundary. Only
/// [`RealKernel`](crate::RealKernel) makes one, for maps it created, so the sizes are the
/// kernel's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapShape {
    /// Bytes the kernel reads from a key pointer.
    pub(crate) key_bytes: usize,
    /// Bytes the kernel reads from or writes to a value pointer (for per-CPU maps, one
    /// 8-byte-rounded value per possible CPU).
    pub(crate) value_bytes: usize,
}

fn check_elem(shape: MapShape, key: usize, value: usize) -> Result<(), Errno> {
    if key != shape.key_bytes || value != shape.value_bytes {
        return Err(Errno::EINVAL);
    }
    Ok(())
}

/// `BPF_MAP_LOOKUP_ELEM`: copies the value of `key` into `value`. Both lengths must match
/// `shape` exactly (`EINVAL` otherwise, without a system call).
pub fn map_lookup(fd: i32, shape: MapShape, key: &[u8], value: &mut [u8]) -> Result<(), Errno> {
    check_elem(shape, key.len(), value.len())?;
    let mut attr = MapElemAttr {
        map_fd: fd as u32,
        key: key.as_ptr() as u64,
        value: value.as_mut_ptr() as u64,
        ..MapElemAttr::default()
    };
    // SAFETY: key and value are live for the call and exactly as long as the map's key and
    // value (checked above); the kernel reads key_size bytes of key and writes value_size
    // bytes of value.
    unsafe { sys_bpf(BPF_MAP_LOOKUP_ELEM, &mut attr) }.map(drop)
}

/// `BPF_MAP_UPDATE_ELEM` with `flags` (`BPF_ANY`, `BPF_NOEXIST`, `BPF_EXIST`). Both lengths must
/// match `shape` exactly (`EINVAL` otherwise, without a system call).
pub fn map_update(
    fd: i32,
    shape: MapShape,
    key: &[u8],
    value: &[u8],
    flags: u64,
) -> Result<(), Errno> {
    check_elem(shape, key.len(), value.len())?;
    let mut attr = MapElemAttr {
        map_fd: fd as u32,
        key: key.as_ptr() as u64,
        value: value.as_ptr() as u64,
        flags,
        ..MapElemAttr::default()
    };
    // SAFETY: key and value are live for the call and exactly as long as the map's key and
    // value (checked above); the kernel only reads them.
    unsafe { sys_bpf(BPF_MAP_UPDATE_ELEM, &mut attr) }.map(drop)
}

/// `BPF_MAP_FREEZE`: user space can no longer write the map (`BPF_MAP_UPDATE_ELEM` and
/// writable mmaps answer `EPERM`). `EBUSY` if the map is mmapped writable.
pub fn map_freeze(fd: i32) -> Result<(), Errno> {
    let mut attr = MapFdAttr { map_fd: fd as u32 };
    // SAFETY: the attr holds no addresses.
    unsafe { sys_bpf(BPF_MAP_FREEZE, &mut attr) }.map(drop)
}

/// `BPF_BTF_LOAD` of raw BTF. With `verbose`, the kernel writes a level-1 log of what it
/// refused into a [`VERIFIER_LOG_BYTES`] buffer.
pub fn btf_load(btf: &[u8], verbose: bool) -> Result<LoadOutcome, Errno> {
    let btf_size = u32::try_from(btf.len()).map_err(|_| Errno::E2BIG)?;
    let mut log = if verbose {
        vec![0u8; VERIFIER_LOG_BYTES]
    } else {
        Vec::new()
    };
    let mut attr = BtfLoadAttr {
        btf: btf.as_ptr() as u64,
        btf_log_buf: if verbose { log.as_mut_ptr() as u64 } else { 0 },
        btf_size,
        btf_log_size: log.len() as u32,
        btf_log_level: if verbose { LOG_LEVEL_VERBOSE } else { 0 },
        btf_log_true_size: 0,
    };
    // SAFETY: btf is live and readable for btf_size bytes; log is live and writable for
    // btf_log_size bytes (or absent with log level 0).
    let result = unsafe { sys_bpf(BPF_BTF_LOAD, &mut attr) };
    let log_truncated = verbose && attr.btf_log_true_size as usize > log.len();
    let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
    Ok(LoadOutcome {
        result,
        log: String::from_utf8_lossy(&log[..end]).into_owned(),
        log_truncated,
    })
}

/// What `BPF_PROG_LOAD` answered.
#[derive(Debug)]
pub struct LoadOutcome {
    /// The program's fd, or the errno of the rejection.
    pub result: Result<i32, Errno>,
    /// The verifier log, lossily decoded.
    pub log: String,
    /// The log did not fit the buffer; `log` holds its tail.
    pub log_truncated: bool,
}

/// `BPF_PROG_LOAD` of raw instructions with `prog_flags` (`BPF_F_*`). With `verbose`, the verifier writes a level-1 log into
/// a [`VERIFIER_LOG_BYTES`] buffer; without, it writes none (and cannot fail for lack of room).
pub fn prog_load(
    prog_type: u32,
    prog_flags: u32,
    insns: &[u64],
    license: &str,
    name: &str,
    btf: Option<ProgBtfRefs<'_>>,
    verbose: bool,
) -> Result<LoadOutcome, Errno> {
    let insn_cnt = u32::try_from(insns.len()).map_err(|_| Errno::E2BIG)?;
    let (prog_btf_fd, func_info_rec_size, func_info, func_info_cnt) = match btf {
        Some(b) => (
            b.btf_fd as u32,
            std::mem::size_of::<FuncInfoRec>() as u32,
            if b.func_info.is_empty() {
                0
            } else {
                b.func_info.as_ptr() as u64
            },
            u32::try_from(b.func_info.len()).map_err(|_| Errno::E2BIG)?,
        ),
        None => (0, 0, 0, 0),
    };
    let license = std::ffi::CString::new(license).map_err(|_| Errno::EINVAL)?;
    let mut log = if verbose {
        vec![0u8; VERIFIER_LOG_BYTES]
    } else {
        Vec::new()
    };
    let mut attr = ProgLoadAttr {
        prog_type,
        insn_cnt,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: if verbose { LOG_LEVEL_VERBOSE } else { 0 },
        log_size: log.len() as u32,
        log_buf: if verbose { log.as_mut_ptr() as u64 } else { 0 },
        prog_flags,
        prog_name: obj_name(name),
        prog_btf_fd,
        func_info_rec_size,
        func_info,
        func_info_cnt,
        ..ProgLoadAttr::default()
    };
    // SAFETY: insns is live and holds insn_cnt 8-byte instructions; license is NUL-terminated;
    // log is live and writable for log_size bytes (or absent with log_level 0); func_info is
    // live and holds func_info_cnt records of func_info_rec_size bytes (or is absent).
    let result = unsafe { sys_bpf(BPF_PROG_LOAD, &mut attr) };
    let log_truncated = verbose && attr.log_true_size as usize > log.len();
    let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
    Ok(LoadOutcome {
        result,
        log: String::from_utf8_lossy(&log[..end]).into_owned(),
        log_truncated,
    })
}

/// `BPF_OBJ_GET_INFO_BY_FD` on a program: the verifier's processed-instruction count
/// (`bpf_prog_info.verified_insns`, Linux ≥ 5.16; 0 before).
pub fn prog_verified_insns(fd: i32) -> Result<u32, Errno> {
    let mut info = ProgInfo::default();
    let mut attr = InfoAttr {
        bpf_fd: fd as u32,
        info_len: std::mem::size_of::<ProgInfo>() as u32,
        info: std::ptr::from_mut(&mut info) as u64,
    };
    // SAFETY: info is live and writable for info_len bytes; it holds no addresses, so the
    // kernel fills in counts only and dumps no arrays.
    unsafe { sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr) }?;
    Ok(info.verified_insns)
}

/// What `BPF_PROG_TEST_RUN` reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TestRun {
    /// The low 32 bits of r0.
    pub retval: u32,
    /// The kernel's measured duration (0 for `BPF_PROG_TYPE_SYSCALL`, which does not time).
    pub duration_ns: u32,
}

/// `BPF_PROG_TEST_RUN` of a `BPF_PROG_TYPE_SYSCALL` program once with `ctx` as its context:
/// the kernel copies `ctx` in, runs, and copies it back into the same buffer (syscall programs
/// take no `ctx_out`, data, repeat or flags).
pub fn prog_test_run_syscall(fd: i32, ctx: &mut [u8]) -> Result<TestRun, Errno> {
    if ctx.len() > SYSCALL_CTX_BYTES_MAX {
        return Err(Errno::EINVAL);
    }
    let mut attr = TestRunAttr {
        prog_fd: fd as u32,
        ctx_size_in: ctx.len() as u32,
        ctx_in: if ctx.is_empty() {
            0
        } else {
            ctx.as_mut_ptr() as u64
        },
        ..TestRunAttr::default()
    };
    // SAFETY: ctx is live, readable and writable for ctx_size_in bytes, which is all the
    // kernel reads from and writes back to ctx_in.
    unsafe { sys_bpf(BPF_PROG_TEST_RUN, &mut attr) }?;
    Ok(TestRun {
        retval: attr.retval,
        duration_ns: attr.duration,
    })
}

/// Bytes an mmapped array map's values span: `max_entries` values of `value_size` rounded up
/// to 8 bytes, as the kernel lays them out.
pub fn array_values_bytes(value_size: u32, max_entries: u32) -> Option<usize> {
    let elem = usize::try_from(value_size)
        .ok()?
        .checked_next_multiple_of(8)?;
    elem.checked_mul(usize::try_from(max_entries).ok()?)
}

/// The possible CPUs (`/sys/devices/system/cpu/possible`, e.g. `0-1` or `0,2-3`), which sets
/// the size of a per-CPU map's values at the boundary.
pub fn possible_cpus() -> Option<usize> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/possible").ok()?;
    let mut count = 0usize;
    for range in text.trim().split(',') {
        let (lo, hi) = match range.split_once('-') {
            Some((lo, hi)) => (lo.parse::<usize>().ok()?, hi.parse::<usize>().ok()?),
            None => {
                let cpu = range.parse::<usize>().ok()?;
                (cpu, cpu)
            }
        };
        count += hi.checked_sub(lo)? + 1;
    }
    (count > 0).then_some(count)
}

#[cfg(test)]
mod tests {
    use std::mem::{offset_of, size_of};

    use super::*;

    #[test]
    fn map_create_attr_matches_the_kernel() {
        assert_eq!(offset_of!(MapCreateAttr, map_type), 0);
        assert_eq!(offset_of!(MapCreateAttr, key_size), 4);
        assert_eq!(offset_of!(MapCreateAttr, value_size), 8);
        assert_eq!(offset_of!(MapCreateAttr, max_entries), 12);
        assert_eq!(offset_of!(MapCreateAttr, map_flags), 16);
        assert_eq!(offset_of!(MapCreateAttr, inner_map_fd), 20);
        assert_eq!(offset_of!(MapCreateAttr, numa_node), 24);
        assert_eq!(offset_of!(MapCreateAttr, map_name), 28);
        assert_eq!(offset_of!(MapCreateAttr, map_ifindex), 44);
        assert_eq!(offset_of!(MapCreateAttr, btf_fd), 48);
        assert_eq!(offset_of!(MapCreateAttr, btf_vmlinux_value_type_id), 60);
        assert_eq!(size_of::<MapCreateAttr>(), 64);
    }

    #[test]
    fn btf_load_attr_and_func_info_match_the_kernel() {
        assert_eq!(offset_of!(BtfLoadAttr, btf), 0);
        assert_eq!(offset_of!(BtfLoadAttr, btf_log_buf), 8);
        assert_eq!(offset_of!(BtfLoadAttr, btf_size), 16);
        assert_eq!(offset_of!(BtfLoadAttr, btf_log_size), 20);
        assert_eq!(offset_of!(BtfLoadAttr, btf_log_level), 24);
        assert_eq!(offset_of!(BtfLoadAttr, btf_log_true_size), 28);
        assert_eq!(size_of::<BtfLoadAttr>(), 32);
        assert_eq!(offset_of!(FuncInfoRec, insn_off), 0);
        assert_eq!(offset_of!(FuncInfoRec, type_id), 4);
        assert_eq!(size_of::<FuncInfoRec>(), 8);
        assert_eq!(offset_of!(ProgLoadAttr, prog_btf_fd), 72);
        assert_eq!(offset_of!(ProgLoadAttr, func_info_rec_size), 76);
        assert_eq!(offset_of!(ProgLoadAttr, func_info_cnt), 88);
    }

    #[test]
    fn map_fd_attr_is_just_the_fd() {
        assert_eq!(offset_of!(MapFdAttr, map_fd), 0);
        assert_eq!(size_of::<MapFdAttr>(), 4);
    }

    #[test]
    fn map_elem_attr_matches_the_kernel() {
        assert_eq!(offset_of!(MapElemAttr, map_fd), 0);
        assert_eq!(offset_of!(MapElemAttr, key), 8);
        assert_eq!(offset_of!(MapElemAttr, value), 16);
        assert_eq!(offset_of!(MapElemAttr, flags), 24);
        assert_eq!(size_of::<MapElemAttr>(), 32);
    }

    #[test]
    fn prog_load_attr_matches_the_kernel() {
        assert_eq!(offset_of!(ProgLoadAttr, prog_type), 0);
        assert_eq!(offset_of!(ProgLoadAttr, insn_cnt), 4);
        assert_eq!(offset_of!(ProgLoadAttr, insns), 8);
        assert_eq!(offset_of!(ProgLoadAttr, license), 16);
        assert_eq!(offset_of!(ProgLoadAttr, log_level), 24);
        assert_eq!(offset_of!(ProgLoadAttr, log_size), 28);
        assert_eq!(offset_of!(ProgLoadAttr, log_buf), 32);
        assert_eq!(offset_of!(ProgLoadAttr, kern_version), 40);
        assert_eq!(offset_of!(ProgLoadAttr, prog_flags), 44);
        assert_eq!(offset_of!(ProgLoadAttr, prog_name), 48);
        assert_eq!(offset_of!(ProgLoadAttr, prog_ifindex), 64);
        assert_eq!(offset_of!(ProgLoadAttr, expected_attach_type), 68);
        assert_eq!(offset_of!(ProgLoadAttr, func_info), 80);
        assert_eq!(offset_of!(ProgLoadAttr, line_info), 96);
        assert_eq!(offset_of!(ProgLoadAttr, attach_prog_fd), 112);
        assert_eq!(offset_of!(ProgLoadAttr, fd_array), 120);
        assert_eq!(offset_of!(ProgLoadAttr, core_relos), 128);
        assert_eq!(offset_of!(ProgLoadAttr, core_relo_rec_size), 136);
        assert_eq!(offset_of!(ProgLoadAttr, log_true_size), 140);
        assert_eq!(size_of::<ProgLoadAttr>(), 144);
    }

    #[test]
    fn test_run_attr_matches_the_kernel() {
        assert_eq!(offset_of!(TestRunAttr, prog_fd), 0);
        assert_eq!(offset_of!(TestRunAttr, retval), 4);
        assert_eq!(offset_of!(TestRunAttr, data_size_in), 8);
        assert_eq!(offset_of!(TestRunAttr, data_in), 16);
        assert_eq!(offset_of!(TestRunAttr, data_out), 24);
        assert_eq!(offset_of!(TestRunAttr, repeat), 32);
        assert_eq!(offset_of!(TestRunAttr, duration), 36);
        assert_eq!(offset_of!(TestRunAttr, ctx_size_in), 40);
        assert_eq!(offset_of!(TestRunAttr, ctx_size_out), 44);
        assert_eq!(offset_of!(TestRunAttr, ctx_in), 48);
        assert_eq!(offset_of!(TestRunAttr, ctx_out), 56);
        assert_eq!(offset_of!(TestRunAttr, flags), 64);
        assert_eq!(offset_of!(TestRunAttr, cpu), 68);
        assert_eq!(offset_of!(TestRunAttr, batch_size), 72);
        assert_eq!(size_of::<TestRunAttr>(), 80);
    }

    #[test]
    fn info_attr_and_prog_info_match_the_kernel() {
        assert_eq!(offset_of!(InfoAttr, bpf_fd), 0);
        assert_eq!(offset_of!(InfoAttr, info_len), 4);
        assert_eq!(offset_of!(InfoAttr, info), 8);
        assert_eq!(size_of::<InfoAttr>(), 16);
        assert_eq!(offset_of!(ProgInfo, tag), 8);
        assert_eq!(offset_of!(ProgInfo, jited_prog_insns), 24);
        assert_eq!(offset_of!(ProgInfo, load_time), 40);
        assert_eq!(offset_of!(ProgInfo, map_ids), 56);
        assert_eq!(offset_of!(ProgInfo, name), 64);
        assert_eq!(offset_of!(ProgInfo, ifindex), 80);
        assert_eq!(offset_of!(ProgInfo, netns_dev), 88);
        assert_eq!(offset_of!(ProgInfo, jited_ksyms), 112);
        assert_eq!(offset_of!(ProgInfo, btf_id), 128);
        assert_eq!(offset_of!(ProgInfo, func_info), 136);
        assert_eq!(offset_of!(ProgInfo, line_info), 152);
        assert_eq!(offset_of!(ProgInfo, jited_line_info), 160);
        assert_eq!(offset_of!(ProgInfo, prog_tags), 184);
        assert_eq!(offset_of!(ProgInfo, run_time_ns), 192);
        assert_eq!(offset_of!(ProgInfo, recursion_misses), 208);
        assert_eq!(offset_of!(ProgInfo, verified_insns), 216);
        assert_eq!(offset_of!(ProgInfo, attach_btf_id), 224);
        assert_eq!(size_of::<ProgInfo>(), 232);
    }

    #[test]
    fn names_are_truncated_and_terminated() {
        assert_eq!(&obj_name("abc")[..4], b"abc\0");
        let long = obj_name("a_name_longer_than_fifteen");
        assert_eq!(&long[..15], b"a_name_longer_t");
        assert_eq!(long[15], 0);
    }

    #[test]
    fn element_sizes_are_checked_before_the_call() {
        let shape = MapShape {
            key_bytes: 4,
            value_bytes: 8,
        };
        let mut value = [0u8; 7];
        assert_eq!(
            map_lookup(-1, shape, &[0; 4], &mut value),
            Err(Errno::EINVAL)
        );
        assert_eq!(
            map_update(-1, shape, &[0; 3], &[0; 8], 0),
            Err(Errno::EINVAL)
        );
    }

    #[test]
    fn array_values_are_rounded_to_eight_bytes() {
        assert_eq!(array_values_bytes(4, 3), Some(24));
        assert_eq!(array_values_bytes(1 << 20, 4), Some(4 << 20));
        assert_eq!(
            array_values_bytes(u32::MAX, u32::MAX).is_some(),
            cfg!(target_pointer_width = "64")
        );
    }
}
