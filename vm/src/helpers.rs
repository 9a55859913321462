//! The kernel's helper functions, by their uapi ids (`enum bpf_func_id`, `__BPF_FUNC_MAPPER`
//! in `include/uapi/linux/bpf.h`), bound to one VM's own state.
//!
//! Everything a helper touches lives in one [`KernelState`] per loaded program (maps, trace
//! log, random generator, user memory), shared only between that program's helpers and its
//! host-side handle, so parallel VMs never share anything. Time comes from a [`Clock`] the VM's
//! owner supplies (virtual in the simulator, the real clock for the real kernel): the vm crate
//! never reads the host clock.
//!
//! Map `i` of a loaded object is VM region `i` (values at [`region_base`]`(i)`); programs
//! refer to the map itself by the opaque handle [`map_handle`]`(i)`, which lies in no region,
//! so dereferencing it faults as the verifier would forbid.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::exec::{region_base, HelperError, Memory, Vm};
use crate::maps::{errno, MapState};

/// `bpf_map_lookup_elem`.
pub const BPF_FUNC_MAP_LOOKUP_ELEM: u32 = 1;
/// `bpf_map_update_elem`.
pub const BPF_FUNC_MAP_UPDATE_ELEM: u32 = 2;
/// `bpf_map_delete_elem`.
pub const BPF_FUNC_MAP_DELETE_ELEM: u32 = 3;
/// `bpf_ktime_get_ns`.
pub const BPF_FUNC_KTIME_GET_NS: u32 = 5;
/// `bpf_trace_printk`.
pub const BPF_FUNC_TRACE_PRINTK: u32 = 6;
/// `bpf_get_prandom_u32`.
pub const BPF_FUNC_GET_PRANDOM_U32: u32 = 7;
/// `bpf_get_smp_processor_id`.
pub const BPF_FUNC_GET_SMP_PROCESSOR_ID: u32 = 8;
/// `bpf_ktime_get_boot_ns`.
pub const BPF_FUNC_KTIME_GET_BOOT_NS: u32 = 125;
/// `bpf_ringbuf_output`.
pub const BPF_FUNC_RINGBUF_OUTPUT: u32 = 130;
/// `bpf_ringbuf_reserve`.
pub const BPF_FUNC_RINGBUF_RESERVE: u32 = 131;
/// `bpf_ringbuf_submit`.
pub const BPF_FUNC_RINGBUF_SUBMIT: u32 = 132;
/// `bpf_ringbuf_discard`.
pub const BPF_FUNC_RINGBUF_DISCARD: u32 = 133;
/// `bpf_copy_from_user`.
pub const BPF_FUNC_COPY_FROM_USER: u32 = 148;

/// Trace lines kept per VM; later lines are counted in [`KernelState::trace_dropped`]
/// (the kernel's trace buffer is bounded too, and overwrites).
pub const TRACE_LOG_LINES_MAX: usize = 1 << 16;
/// Longest formatted `bpf_trace_printk` line, in bytes (`MAX_BPRINTF_BUF` = 1024 in
/// `include/linux/bpf.h`); longer output is cut.
pub const TRACE_LINE_BYTES_MAX: usize = 1024;
/// Longest string a `%s` reads from VM memory: more could never fit in the line.
const TRACE_STR_BYTES_MAX: u64 = TRACE_LINE_BYTES_MAX as u64;
/// Arguments `bpf_trace_printk` takes after the format (`MAX_TRACE_PRINTK_VARARGS`).
const TRACE_ARGS_MAX: usize = 3;

/// `BPF_RB_NO_WAKEUP | BPF_RB_FORCE_WAKEUP`: the only flags `bpf_ringbuf_output` accepts.
const BPF_RB_WAKEUP_FLAGS: u64 = 1 | 2;

/// Base of the map handles: slot `0xffff_ff00`, far above every region slot.
const MAP_HANDLE_BASE: u64 = 0xffff_ff00_0000_0000;

/// The value a program holds for map `index` (what `lddw r1, map` loads).
pub const fn map_handle(index: usize) -> u64 {
    MAP_HANDLE_BASE + index as u64
}

/// A source of kernel time for `bpf_ktime_get_ns` and `bpf_ktime_get_boot_ns`.
pub trait Clock: Send + Sync + fmt::Debug {
    /// `CLOCK_MONOTONIC` in nanoseconds.
    fn monotonic_ns(&self) -> u64;
    /// `CLOCK_BOOTTIME` in nanoseconds (monotonic plus time suspended; equal by default).
    fn boot_ns(&self) -> u64 {
        self.monotonic_ns()
    }
}

/// A clock that moves only when told: deterministic time for tests and simulations.
#[derive(Debug, Default)]
pub struct ManualClock {
    now_ns: AtomicU64,
}

impl ManualClock {
    /// A clock reading `start_ns`.
    pub fn new(start_ns: u64) -> Self {
        ManualClock {
            now_ns: AtomicU64::new(start_ns),
        }
    }

    /// Moves the clock forward by `delta_ns`.
    pub fn advance(&self, delta_ns: u64) {
        self.now_ns.fetch_add(delta_ns, Ordering::Relaxed);
    }
}

impl Clock for ManualClock {
    fn monotonic_ns(&self) -> u64 {
        self.now_ns.load(Ordering::Relaxed)
    }
}

/// A range of "user" memory `bpf_copy_from_user` may read (user addresses are not VM regions:
/// programs cannot dereference them, as in the kernel).
#[derive(Debug, Clone)]
struct UserRegion {
    base: u64,
    bytes: Vec<u8>,
}

/// The kernel-side state of one loaded program: its maps and what its helpers produce.
#[derive(Debug)]
pub struct KernelState {
    pub(crate) maps: Vec<MapState>,
    trace: Vec<String>,
    trace_dropped: u64,
    prandom: u64,
    user: Vec<UserRegion>,
}

impl KernelState {
    /// State over `maps` (map `i` is region `i`), with the random generator seeded by `seed`.
    pub fn new(maps: Vec<MapState>, seed: u64) -> Self {
        KernelState {
            maps,
            trace: Vec::new(),
            trace_dropped: 0,
            prandom: seed,
            user: Vec::new(),
        }
    }

    /// Lines `bpf_trace_printk` produced, oldest first.
    pub fn trace(&self) -> &[String] {
        &self.trace
    }

    /// Lines dropped because the log held [`TRACE_LOG_LINES_MAX`].
    pub fn trace_dropped(&self) -> u64 {
        self.trace_dropped
    }

    /// Maps `bytes` as user memory at `base` (replacing any overlapping earlier mapping).
    pub fn map_user_memory(&mut self, base: u64, bytes: Vec<u8>) {
        let end = base.saturating_add(bytes.len() as u64);
        self.user
            .retain(|r| r.base.saturating_add(r.bytes.len() as u64) <= base || r.base >= end);
        self.user.push(UserRegion { base, bytes });
    }

    fn user_bytes(&self, addr: u64, len: u64) -> Option<&[u8]> {
        self.user.iter().find_map(|r| {
            let off = addr.checked_sub(r.base)?;
            let end = off.checked_add(len)?;
            (end <= r.bytes.len() as u64).then(|| &r.bytes[off as usize..end as usize])
        })
    }

    /// splitmix64: small, well-mixed and fully determined by the seed.
    fn next_u32(&mut self) -> u32 {
        self.prandom = self.prandom.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.prandom;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 32) as u32
    }

    fn log(&mut self, line: String) {
        if self.trace.len() < TRACE_LOG_LINES_MAX {
            self.trace.push(line);
        } else {
            self.trace_dropped += 1;
        }
    }
}

type Shared = Arc<Mutex<KernelState>>;

fn lock(state: &Shared) -> MutexGuard<'_, KernelState> {
    // A panic while holding the lock would be a bug in this module; the data stays usable.
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn neg(errno: i32) -> u64 {
    i64::from(-errno) as u64
}

/// Map index of a handle, or why the argument is not a map.
fn map_index(state: &KernelState, handle: u64) -> Result<usize, HelperError> {
    handle
        .checked_sub(MAP_HANDLE_BASE)
        .and_then(|i| usize::try_from(i).ok())
        .filter(|&i| i < state.maps.len())
        .ok_or_else(|| HelperError::new(format!("{handle:#x} is not a map of this program")))
}

/// Map index and offset of a VM address inside a map's values region.
fn map_region_of(state: &KernelState, addr: u64) -> Option<(usize, usize)> {
    let stride = region_base(1) - region_base(0);
    let rel = addr.checked_sub(region_base(0))?;
    let index = usize::try_from(rel / stride).ok()?;
    let offset = usize::try_from(rel % stride).ok()?;
    (index < state.maps.len()).then_some((index, offset))
}

fn values_of<'a>(
    memory: &'a mut Memory<'_, '_>,
    index: usize,
    map: &MapState,
) -> Result<&'a mut [u8], HelperError> {
    memory
        .region_mut(index)
        // The region is exactly the map's values (the loader lends one per map).
        .inspect(|values| debug_assert_eq!(values.len(), map.values_len()))
        .map_err(|e| {
            HelperError::new(format!(
                "map '{}' values are not writable by programs: {e}",
                map.spec().name
            ))
        })
}

/// Registers every helper this module implements on `vm`, over `state` and `clock`.
pub fn register(vm: &mut Vm, state: &Arc<Mutex<KernelState>>, clock: &Arc<dyn Clock>) {
    let s = Arc::clone(state);
    vm.register_helper(
        BPF_FUNC_MAP_LOOKUP_ELEM,
        move |a: [u64; 5], mem: &mut Memory<'_, '_>| {
            let st = lock(&s);
            let i = map_index(&st, a[0])?;
            let map = &st.maps[i];
            let key = mem.read(a[1], u64::from(map.spec().key_size))?;
            let offset = map
                .lookup_offset(key)
                .map_err(|e| HelperError::new(e.to_string()))?;
            Ok(offset.map_or(0, |off| region_base(i) + off as u64))
        },
    );
    let s = Arc::clone(state);
    vm.register_helper(
        BPF_FUNC_MAP_UPDATE_ELEM,
        move |a: [u64; 5], mem: &mut Memory<'_, '_>| {
            let mut st = lock(&s);
            let i = map_index(&st, a[0])?;
            let spec = st.maps[i].spec().clone();
            if spec.read_only_for_programs() {
                return Err(HelperError::new(format!(
                    "map '{}' is read-only for programs (BPF_F_RDONLY_PROG)",
                    spec.name
                )));
            }
            // Copies first: key or value may point into this very map's values.
            let key = mem.read(a[1], u64::from(spec.key_size))?.to_vec();
            let value = mem.read(a[2], u64::from(spec.value_size))?.to_vec();
            let map = &mut st.maps[i];
            let values = values_of(mem, i, map)?;
            Ok(match map.update(values, &key, &value, a[3]) {
                Ok(()) => 0,
                Err(e) => e.helper_ret(),
            })
        },
    );
    let s = Arc::clone(state);
    vm.register_helper(
        BPF_FUNC_MAP_DELETE_ELEM,
        move |a: [u64; 5], mem: &mut Memory<'_, '_>| {
            let mut st = lock(&s);
            let i = map_index(&st, a[0])?;
            let key_size = st.maps[i].spec().key_size;
            let key = mem.read(a[1], u64::from(key_size))?;
            Ok(match st.maps[i].delete(key) {
                Ok(()) => 0,
                Err(e) => e.helper_ret(),
            })
        },
    );
    let c = Arc::clone(clock);
    vm.register_helper(
        BPF_FUNC_KTIME_GET_NS,
        move |_: [u64; 5], _: &mut Memory<'_, '_>| Ok(c.monotonic_ns()),
    );
    let c = Arc::clone(clock);
    vm.register_helper(
        BPF_FUNC_KTIME_GET_BOOT_NS,
        move |_: [u64; 5], _: &mut Memory<'_, '_>| Ok(c.boot_ns()),
    );
    let s = Arc::clone(state);
    vm.register_helper(
        BPF_FUNC_TRACE_PRINTK,
        move |a: [u64; 5], mem: &mut Memory<'_, '_>| {
            let fmt = mem.read(a[0], a[1])?;
            Ok(match format_printk(fmt, [a[2], a[3], a[4]], mem) {
                Ok(line) => {
                    let len = line.len() as u64;
                    lock(&s).log(line);
                    len
                }
                Err(()) => neg(errno::EINVAL),
            })
        },
    );
    let s = Arc::clone(state);
    vm.register_helper(
        BPF_FUNC_GET_PRANDOM_U32,
        move |_: [u64; 5], _: &mut Memory<'_, '_>| Ok(u64::from(lock(&s).next_u32())),
    );
    vm.register_helper(
        BPF_FUNC_GET_SMP_PROCESSOR_ID,
        |_: [u64; 5], _: &mut Memory<'_, '_>| Ok(0),
    );
    let s = Arc::clone(state);
    vm.register_helper(
        BPF_FUNC_COPY_FROM_USER,
        move |a: [u64; 5], mem: &mut Memory<'_, '_>| {
            let (dst, size, user_ptr) = (a[0], u64::from(a[1] as u32), a[2]);
            let st = lock(&s);
            let dst = mem.write(dst, size)?;
            // bpf_copy_from_user: on a fault, zero the destination and return -EFAULT.
            Ok(match st.user_bytes(user_ptr, size) {
                Some(bytes) => {
                    dst.copy_from_slice(bytes);
                    0
                }
                None => {
                    dst.fill(0);
                    neg(errno::EFAULT)
                }
            })
        },
    );
    let s = Arc::clone(state);
    vm.register_helper(
        BPF_FUNC_RINGBUF_RESERVE,
        move |a: [u64; 5], mem: &mut Memory<'_, '_>| {
            let mut st = lock(&s);
            let i = map_index(&st, a[0])?;
            // bpf_ringbuf_reserve: any flag makes it return NULL.
            if a[2] != 0 {
                return Ok(0);
            }
            let map = &mut st.maps[i];
            let values = values_of(mem, i, map)?;
            let reserved = map
                .ringbuf_reserve(values, a[1])
                .map_err(|e| HelperError::new(e.to_string()))?;
            Ok(reserved.map_or(0, |off| region_base(i) + off as u64))
        },
    );
    let s = Arc::clone(state);
    vm.register_helper(
        BPF_FUNC_RINGBUF_OUTPUT,
        move |a: [u64; 5], mem: &mut Memory<'_, '_>| {
            let mut st = lock(&s);
            let i = map_index(&st, a[0])?;
            if a[3] & !BPF_RB_WAKEUP_FLAGS != 0 {
                return Ok(neg(errno::EINVAL));
            }
            let data = mem.read(a[1], a[2])?.to_vec();
            let map = &mut st.maps[i];
            let values = values_of(mem, i, map)?;
            let to_helper = |e: crate::maps::MapError| HelperError::new(e.to_string());
            let Some(off) = map.ringbuf_reserve(values, a[2]).map_err(to_helper)? else {
                return Ok(neg(errno::EAGAIN));
            };
            values[off..off + data.len()].copy_from_slice(&data);
            map.ringbuf_commit(values, off, false).map_err(to_helper)?;
            Ok(0)
        },
    );
    for (id, discard) in [
        (BPF_FUNC_RINGBUF_SUBMIT, false),
        (BPF_FUNC_RINGBUF_DISCARD, true),
    ] {
        let s = Arc::clone(state);
        vm.register_helper(id, move |a: [u64; 5], mem: &mut Memory<'_, '_>| {
            let mut st = lock(&s);
            let (i, off) = map_region_of(&st, a[0]).ok_or_else(|| {
                HelperError::new(format!("{:#x} is not a reserved ring buffer record", a[0]))
            })?;
            let map = &mut st.maps[i];
            let values = values_of(mem, i, map)?;
            map.ringbuf_commit(values, off, discard)
                .map_err(|e| HelperError::new(e.to_string()))?;
            Ok(0)
        });
    }
}

/// Formats like `bpf_trace_printk` (`bpf_bprintf_prepare` in `kernel/bpf/helpers.c`):
/// `%d %i %u %x %X %c %s %%`, with `l`/`ll` length modifiers, `0 - + space` flags and a width;
/// at most three arguments; the format must be NUL-terminated within its size and printable.
/// A `%s` whose memory faults prints as empty, as the kernel does. `Err` means -EINVAL.
fn format_printk(fmt: &[u8], args: [u64; 3], memory: &Memory<'_, '_>) -> Result<String, ()> {
    let end = fmt.iter().position(|&b| b == 0).ok_or(())?;
    let fmt = &fmt[..end];
    if !fmt
        .iter()
        .all(|&b| b.is_ascii_graphic() || b.is_ascii_whitespace())
    {
        return Err(());
    }
    let mut out = String::new();
    let mut next_arg = 0usize;
    let mut i = 0usize;
    while i < fmt.len() {
        let b = fmt[i];
        i += 1;
        if b != b'%' {
            out.push(char::from(b));
            continue;
        }
        if fmt.get(i) == Some(&b'%') {
            out.push('%');
            i += 1;
            continue;
        }
        let (mut zero, mut left, mut plus, mut space) = (false, false, false, false);
        while let Some(&f) = fmt.get(i) {
            match f {
                b'0' => zero = true,
                b'-' => left = true,
                b'+' => plus = true,
                b' ' => space = true,
                _ => break,
            }
            i += 1;
        }
        let mut width = 0usize;
        while let Some(&d) = fmt.get(i).filter(|d| d.is_ascii_digit()) {
            width = (width * 10 + usize::from(d - b'0')).min(TRACE_LINE_BYTES_MAX);
            i += 1;
        }
        let mut longs = 0;
        while fmt.get(i) == Some(&b'l') && longs < 2 {
            longs += 1;
            i += 1;
        }
        let conv = *fmt.get(i).ok_or(())?;
        i += 1;
        if next_arg >= TRACE_ARGS_MAX {
            return Err(());
        }
        let raw = args[next_arg];
        next_arg += 1;
        // Without `l`/`ll` the argument is an int: only its low 32 bits count.
        let body = match conv {
            b'd' | b'i' => {
                let v = if longs == 0 {
                    i64::from(raw as u32 as i32)
                } else {
                    raw as i64
                };
                let sign = if v < 0 {
                    "-"
                } else if plus {
                    "+"
                } else if space {
                    " "
                } else {
                    ""
                };
                (sign.to_string(), v.unsigned_abs().to_string())
            }
            b'u' | b'x' | b'X' => {
                let v = if longs == 0 { raw & 0xffff_ffff } else { raw };
                let digits = match conv {
                    b'u' => v.to_string(),
                    b'x' => format!("{v:x}"),
                    _ => format!("{v:X}"),
                };
                (String::new(), digits)
            }
            b'c' if longs == 0 => (String::new(), char::from(raw as u8).to_string()),
            b's' if longs == 0 => (String::new(), read_c_string(memory, raw)),
            _ => return Err(()),
        };
        let (sign, digits) = body;
        let numeric = !matches!(conv, b's' | b'c');
        let pad = width.saturating_sub(sign.len() + digits.len());
        if left {
            out.push_str(&sign);
            out.push_str(&digits);
            out.extend(std::iter::repeat_n(' ', pad));
        } else if zero && numeric {
            out.push_str(&sign);
            out.extend(std::iter::repeat_n('0', pad));
            out.push_str(&digits);
        } else {
            out.extend(std::iter::repeat_n(' ', pad));
            out.push_str(&sign);
            out.push_str(&digits);
        }
        if out.len() >= TRACE_LINE_BYTES_MAX {
            break;
        }
    }
    if out.len() > TRACE_LINE_BYTES_MAX {
        let mut cut = TRACE_LINE_BYTES_MAX;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
    }
    Ok(out)
}

/// A NUL-terminated string from VM memory, up to [`TRACE_STR_BYTES_MAX`] bytes; empty if the
/// first byte is unreadable, cut where memory ends.
fn read_c_string(memory: &Memory<'_, '_>, addr: u64) -> String {
    let mut s = Vec::new();
    for i in 0..TRACE_STR_BYTES_MAX {
        match addr.checked_add(i).and_then(|a| memory.read(a, 1).ok()) {
            Some([0]) | None => break,
            Some(&[b]) => s.push(b),
            Some(_) => break,
        }
    }
    String::from_utf8_lossy(&s).into_owned()
}
