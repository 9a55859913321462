//! What the engine tells the kernel about its own CPU time: the user-space work it just did,
//! and which of its threads of control is running.
//!
//! On Linux both are facts of the host (the CPU already spent the time; each task is a
//! thread), so the real kernel ignores them. A simulated kernel keeps virtual time: it charges
//! each unit of work at a modelled cost and keeps one clock per task, so background flushes
//! and compactions run beside the foreground instead of inside it.

use serde::{Deserialize, Serialize};

/// The engine's threads of control.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Task {
    /// The application's writes and reads.
    Foreground,
    /// The flush job's thread.
    Flush,
    /// The compaction job's thread.
    Compaction,
}

impl Task {
    /// Every task, in index order.
    pub const ALL: [Task; 3] = [Task::Foreground, Task::Flush, Task::Compaction];

    /// A dense index (0 = foreground).
    pub fn index(self) -> usize {
        match self {
            Task::Foreground => 0,
            Task::Flush => 1,
            Task::Compaction => 2,
        }
    }

    /// Its lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            Task::Foreground => "foreground",
            Task::Flush => "flush",
            Task::Compaction => "compaction",
        }
    }
}

/// A kind of user-space work the engine reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum CpuWorkKind {
    /// One write batch: building and encoding it, framing it into the WAL (CRC32c) and
    /// inserting its entries into the memtable. Entries = batch entries, bytes = encoded batch.
    Write,
    /// One point lookup: memtables and the tables it searched. Entries = data blocks searched
    /// (each decoded and binary-searched), bytes = their sizes.
    Get,
    /// Building table files from a memtable (a flush): entries and key + value bytes added.
    Flush,
    /// Merging in user space (the compaction program's twin): input entries and input block
    /// bytes consumed (CRC check, decode, merge, encode).
    Merge,
}

impl CpuWorkKind {
    /// Every kind, in order.
    pub const ALL: [CpuWorkKind; 4] = [
        CpuWorkKind::Write,
        CpuWorkKind::Get,
        CpuWorkKind::Flush,
        CpuWorkKind::Merge,
    ];

    /// Its lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            CpuWorkKind::Write => "write",
            CpuWorkKind::Get => "get",
            CpuWorkKind::Flush => "flush",
            CpuWorkKind::Merge => "merge",
        }
    }
}

/// User-space work just done: one operation of `kind` over `entries` entries and `bytes`
/// bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuWork {
    /// What kind of work.
    pub kind: CpuWorkKind,
    /// Entries (or blocks, for [`CpuWorkKind::Get`]) processed.
    pub entries: u64,
    /// Bytes processed.
    pub bytes: u64,
}

impl CpuWork {
    /// `kind` over `entries` and `bytes`.
    pub fn new(kind: CpuWorkKind, entries: u64, bytes: u64) -> CpuWork {
        CpuWork {
            kind,
            entries,
            bytes,
        }
    }
}
