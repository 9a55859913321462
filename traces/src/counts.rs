//! System-call accounting by kind.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

macro_rules! syscall_kinds {
    ($($variant:ident => $name:literal,)+) => {
        /// One kind of system call (or kernel entry) that crosses the boundary.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum SyscallKind {
            $(
                #[doc = concat!("`", $name, "`")]
                $variant,
            )+
        }

        impl SyscallKind {
            /// Every kind, in a fixed order (the order of [`SyscallCounts`]).
            pub const ALL: &'static [SyscallKind] = &[$(SyscallKind::$variant,)+];

            /// The Linux name of the call, as `strace` prints it.
            pub fn name(self) -> &'static str {
                match self {
                    $(SyscallKind::$variant => $name,)+
                }
            }
        }
    };
}

syscall_kinds! {
    Open => "openat",
    Close => "close",
    Pread => "pread64",
    Pwrite => "pwrite64",
    Fsync => "fsync",
    Fdatasync => "fdatasync",
    Fstat => "fstat",
    Unlink => "unlink",
    Rename => "rename",
    Mkdir => "mkdir",
    Getdents => "getdents64",
    Nanosleep => "clock_nanosleep",
    Mmap => "mmap",
    Munmap => "munmap",
    IoUringSetup => "io_uring_setup",
    IoUringRegister => "io_uring_register",
    IoUringEnter => "io_uring_enter",
    BpfMapCreate => "bpf(BPF_MAP_CREATE)",
    BpfMapLookup => "bpf(BPF_MAP_LOOKUP_ELEM)",
    BpfMapUpdate => "bpf(BPF_MAP_UPDATE_ELEM)",
    BpfMapFreeze => "bpf(BPF_MAP_FREEZE)",
    BpfProgLoad => "bpf(BPF_PROG_LOAD)",
    BpfBtfLoad => "bpf(BPF_BTF_LOAD)",
    BpfObjGetInfo => "bpf(BPF_OBJ_GET_INFO_BY_FD)",
    BpfProgTestRun => "bpf(BPF_PROG_TEST_RUN)",
}

impl std::fmt::Display for SyscallKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

const KIND_COUNT: usize = SyscallKind::ALL.len();

/// A snapshot of system-call counts by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SyscallCounts {
    counts: [u64; KIND_COUNT],
}

impl SyscallCounts {
    /// The count of one kind.
    pub fn get(&self, kind: SyscallKind) -> u64 {
        self.counts[kind as usize]
    }

    /// Adds `n` calls of `kind`.
    pub fn add(&mut self, kind: SyscallKind, n: u64) {
        self.counts[kind as usize] += n;
    }

    /// All calls, every kind together.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The kinds with a non-zero count, in [`SyscallKind::ALL`] order.
    pub fn nonzero(&self) -> impl Iterator<Item = (SyscallKind, u64)> + '_ {
        SyscallKind::ALL
            .iter()
            .map(|&kind| (kind, self.get(kind)))
            .filter(|&(_, n)| n > 0)
    }

    /// `self - earlier`, kind by kind. Panics if a count went backwards (counters only grow).
    pub fn since(&self, earlier: &SyscallCounts) -> SyscallCounts {
        let mut out = SyscallCounts::default();
        for (i, (now, then)) in self.counts.iter().zip(earlier.counts.iter()).enumerate() {
            out.counts[i] = now.checked_sub(*then).expect("syscall counters only grow");
        }
        out
    }

    /// Kind-by-kind sum.
    pub fn merged(&self, other: &SyscallCounts) -> SyscallCounts {
        let mut out = *self;
        for (i, n) in other.counts.iter().enumerate() {
            out.counts[i] += n;
        }
        out
    }
}

impl Serialize for SyscallCounts {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        for (kind, n) in self.nonzero() {
            map.serialize_entry(&kind, &n)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for SyscallCounts {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let map = std::collections::BTreeMap::<SyscallKind, u64>::deserialize(deserializer)?;
        let mut out = SyscallCounts::default();
        for (kind, n) in map {
            out.add(kind, n);
        }
        Ok(out)
    }
}

/// Thread-safe counters behind a kernel implementation.
#[derive(Debug, Default)]
pub struct SyscallCounter {
    counts: [AtomicU64; KIND_COUNT],
}

impl SyscallCounter {
    /// Counts one call of `kind`.
    pub fn count(&self, kind: SyscallKind) {
        self.counts[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts every call in `counts` (one kernel call that made several system calls).
    pub fn count_all(&self, counts: &SyscallCounts) {
        for (kind, n) in counts.nonzero() {
            self.counts[kind as usize].fetch_add(n, Ordering::Relaxed);
        }
    }

    /// The counts so far.
    pub fn snapshot(&self) -> SyscallCounts {
        let mut out = SyscallCounts::default();
        for (i, c) in self.counts.iter().enumerate() {
            out.counts[i] = c.load(Ordering::Relaxed);
        }
        out
    }
}
