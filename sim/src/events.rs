//! The event log: one compact, fixed-size record per boundary call, hashed as it is recorded.
//!
//! Paths and data enter an event as their xxh3 digests, so the log stays small and its digest
//! still changes when a byte written or read changes.

use xxhash_rust::xxh3::{xxh3_64, Xxh3};

use resystance_traces::{Errno, KernelError};

/// What an event records: a boundary call (one per [`resystance_traces::Kernel`] method) or
/// a harness action on the simulator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(missing_docs)] // one variant per Kernel method, same names
pub enum Op {
    Open,
    Close,
    Pread,
    Pwrite,
    Fsync,
    Fdatasync,
    FileSize,
    Unlink,
    Rename,
    Mkdir,
    ListDir,
    MemAlloc,
    MemFree,
    MemRead,
    MemWrite,
    UringSetup,
    UringRegisterBuffers,
    UringRegisterFiles,
    UringQueue,
    UringSubmitAndWait,
    UringReap,
    UringClose,
    BpfMapCreate,
    BpfMapMmap,
    BpfMapLookup,
    BpfMapUpdate,
    BpfMapFreeze,
    BpfProgLoad,
    BpfBtfLoad,
    BpfProgLoadBtf,
    BpfProgTestRun,
    NowNs,
    SleepNs,
    /// The engine reported user-space work (args: kind, entries, bytes).
    CpuWork,
    /// The engine switched tasks (args: task, start time; result: the previous task).
    SwitchTask,
    /// The harness (or a planned crash point) crashed the machine.
    Crash,
    /// The harness restarted it after a crash.
    Restart,
    /// The harness created a directory outside the boundary ([`crate::SimKernel::prepare_dir`]).
    PrepareDir,
    /// An injected fault, recorded just before the event of the call it hit: `args` are
    /// `[FaultKind::code, inode, offset, detail]` (sim/README.md, "Faults").
    Fault,
    /// The harness changed the fault profile ([`crate::SimKernel::set_faults`]).
    SetFaults,
    /// `uring_cq_state` (last, so the codes of the calls before it stay as they were).
    UringCqState,
    /// One SQE the kernel ran, inside the `io_uring_enter` whose event follows: `args` are
    /// `[ring, URING_EXEC_*, fd (u64::MAX - index for a registered file), file offset]`,
    /// `result` its `res`.
    UringExec,
}

/// [`Op::UringExec`] kinds.
pub const URING_EXEC_NOP: u64 = 0;
/// A read (`READ`, `READ_FIXED`).
pub const URING_EXEC_READ: u64 = 1;
/// A write (`WRITE`, `WRITE_FIXED`).
pub const URING_EXEC_WRITE: u64 = 2;
/// `FSYNC`.
pub const URING_EXEC_FSYNC: u64 = 3;
/// `FSYNC` with `IORING_FSYNC_DATASYNC`.
pub const URING_EXEC_FDATASYNC: u64 = 4;

/// [`SimEvent::result`] of a call this kernel does not provide ([`KernelError::Unsupported`]).
pub const RESULT_UNSUPPORTED: i64 = i64::MIN;

/// One recorded call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SimEvent {
    /// Position in the log, from 0.
    pub seq: u64,
    /// The virtual clock when the call returned.
    pub t_ns: u64,
    /// The call.
    pub op: Op,
    /// Its key arguments, per call (unused slots 0): fds, offsets, lengths, ids, and xxh3
    /// digests of paths and of the bytes written or read.
    pub args: [u64; 4],
    /// The outcome: a value ≥ 0 (fd, bytes, size, id, time), `-errno`, or
    /// [`RESULT_UNSUPPORTED`].
    pub result: i64,
}

impl SimEvent {
    /// The bytes the digest covers: every field, little-endian.
    fn encode(&self) -> [u8; 64] {
        let mut out = [0u8; 64];
        let words = [
            self.seq,
            self.t_ns,
            self.op as u64,
            self.args[0],
            self.args[1],
            self.args[2],
            self.args[3],
            self.result as u64,
        ];
        for (chunk, word) in out.chunks_exact_mut(8).zip(words) {
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        out
    }
}

/// The encoding of an outcome in [`SimEvent::result`].
pub fn result_code<T>(result: &Result<T, KernelError>, ok: impl Fn(&T) -> u64) -> i64 {
    match result {
        Ok(v) => i64::try_from(ok(v)).unwrap_or(i64::MAX),
        Err(e) => match e.errno() {
            Some(Errno(n)) => -i64::from(n),
            None => RESULT_UNSUPPORTED,
        },
    }
}

/// A digest of bytes (a path, a buffer) for an event argument.
pub fn digest(bytes: &[u8]) -> u64 {
    xxh3_64(bytes)
}

/// The log and its running digest.
#[derive(Clone)]
pub struct EventLog {
    events: Vec<SimEvent>,
    keep: bool,
    next_seq: u64,
    hasher: Xxh3,
}

impl std::fmt::Debug for EventLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLog")
            .field("recorded", &self.next_seq)
            .field("kept", &self.events.len())
            .finish_non_exhaustive()
    }
}

impl EventLog {
    /// An empty log; `keep` says whether events are kept in memory (the digest always runs).
    pub fn new(keep: bool) -> EventLog {
        EventLog {
            events: Vec::new(),
            keep,
            next_seq: 0,
            hasher: Xxh3::new(),
        }
    }

    /// Appends one event.
    pub fn record(&mut self, t_ns: u64, op: Op, args: [u64; 4], result: i64) {
        let event = SimEvent {
            seq: self.next_seq,
            t_ns,
            op,
            args,
            result,
        };
        self.next_seq += 1;
        self.hasher.update(&event.encode());
        if self.keep {
            self.events.push(event);
        }
    }

    /// xxh3 of every event recorded so far, in order.
    pub fn digest(&self) -> u64 {
        self.hasher.digest()
    }

    /// The kept events.
    pub fn events(&self) -> &[SimEvent] {
        &self.events
    }

    /// Events recorded so far (kept or not).
    pub fn len(&self) -> u64 {
        self.next_seq
    }
}
