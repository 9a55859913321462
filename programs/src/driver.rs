//! User space's half of the protocol: feed windows, run the program, drain finished blocks.
//!
//! The same loop serves every executor. What runs the program is a [`Machine`] (the twin
//! in-process, the vm, or Linux through `BPF_PROG_TEST_RUN`); where input blocks come from is
//! a [`BlockSource`] (one `pread` per block, io_uring batches, memory in tests); where output
//! blocks go is a [`BlockSink`] (table files, or memory in tests).

use std::fmt;

use crate::abi::{
    bytes_of_mut, detail, status, window_bytes_valid, Job, JobParams, Record, RECORDS_MAX,
    RECORD_STARTS_FILE, WINDOW_BLOCKS_MAX,
};

/// An error of the source, sink or machine, with its own message.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Where a run's window lies, as the source sees it: either way the job's `window_bytes`,
/// which nothing the source writes may pass (the next run's window may follow at once; an
/// `O_DIRECT` read's aligned end stays inside too, the window being a multiple of the
/// alignment).
#[derive(Debug)]
pub enum Window<'a> {
    /// Host memory the source writes into: exactly `window_bytes` long.
    Host {
        /// The window.
        bytes: &'a mut [u8],
        /// Bytes blocks may occupy.
        window_bytes: usize,
    },
    /// Memory the source reaches only through the kernel (e.g. an mmapped BPF map that
    /// io_uring reads into): an opaque region handle of the machine's kernel and the window's
    /// offset in it.
    Region {
        /// The region (a `MemId` of the kernel boundary).
        region: u32,
        /// Byte offset of the window in the region.
        offset: usize,
        /// Bytes blocks may occupy.
        window_bytes: usize,
    },
}

impl Window<'_> {
    /// Bytes blocks may occupy: the job's `window_bytes`.
    pub fn window_bytes(&self) -> usize {
        match self {
            Window::Host { window_bytes, .. } | Window::Region { window_bytes, .. } => {
                *window_bytes
            }
        }
    }
}

/// Runs the compaction program over shared memory.
pub trait Machine {
    /// The job as user space sees it between runs.
    fn job_mut(&mut self) -> &mut Job;
    /// The window of run `run`, for the source to fill, laid out for the job's
    /// `window_bytes` (which the driver has set, and checked against the pool, before).
    fn window(&mut self, run: usize) -> Window<'_>;
    /// The output region after the last run, as host bytes (empty when the machine leaves
    /// its output in a kernel region: [`Machine::output_region`]).
    fn output(&self) -> &[u8];
    /// The kernel region the program's output lies in, when the machine leaves it there
    /// rather than copying it into [`Machine::output`] (a `MemId` of the kernel boundary):
    /// sinks then write blocks straight from it.
    fn output_region(&self) -> Option<u32> {
        None
    }
    /// The records after the last run.
    fn records(&self) -> &[Record];
    /// Runs the program once; returns its status.
    fn run(&mut self) -> Result<u32, BoxError>;
    /// Nanoseconds spent inside the program so far, as the kernel running it reported them
    /// (0 for machines that do not measure: the twin has no clock of its own).
    fn program_ns(&self) -> u64 {
        0
    }
}

/// What a source put into a window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowFill {
    /// Window offset of the first block.
    pub first: u32,
    /// Blocks placed, back to back from `first`, each followed by its trailer.
    pub blocks: u32,
    /// Whether the run has more blocks after these.
    pub more: bool,
}

/// The input runs' data blocks, in order.
pub trait BlockSource {
    /// Places the next blocks of run `run` into `window` (at most its `window_bytes` hold
    /// blocks) and their contents sizes into `block_len`; must place at least one block unless
    /// the run has none left. A source that cannot write the kind of window it is given
    /// returns an error.
    fn fill(
        &mut self,
        run: usize,
        window: Window<'_>,
        block_len: &mut [u32; WINDOW_BLOCKS_MAX],
    ) -> Result<WindowFill, BoxError>;
}

/// Where a drain's output blocks are: host bytes, or a kernel region.
#[derive(Clone, Copy, Debug)]
pub enum OutputBlocks<'a> {
    /// The output region's bytes in host memory (at least through the last record's end).
    Host(&'a [u8]),
    /// A kernel region (a `MemId` of the kernel boundary) holding them at the records'
    /// offsets.
    Region(u32),
}

/// Receives finished output blocks in order.
pub trait BlockSink {
    /// One block: `block` is its contents followed by the 5-byte trailer; `record` describes
    /// it (a new output file starts where `record.flags` has [`RECORD_STARTS_FILE`]).
    fn block(&mut self, block: &[u8], record: &Record) -> Result<(), BoxError>;

    /// Every block of one drain: `records` (checked to tile the output back to back from
    /// offset 0) describe them in order, in `output`. The program overwrites the output
    /// region on its next run, so a sink that writes from it asynchronously must have
    /// finished reading it when this returns. By default each block goes to
    /// [`BlockSink::block`], which needs host bytes.
    fn drain(&mut self, output: OutputBlocks<'_>, records: &[Record]) -> Result<(), BoxError> {
        let OutputBlocks::Host(bytes) = output else {
            return Err("this sink takes output blocks from host memory only".into());
        };
        for rec in records {
            let from = rec.offset as usize;
            let to = from + rec.size as usize + crate::abi::BLOCK_TRAILER_BYTES;
            self.block(&bytes[from..to], rec)?;
        }
        Ok(())
    }
}

/// The program failed the job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgramError {
    /// The `CJ_ERR_*` status.
    pub status: u32,
    /// `CJ_DETAIL_*`.
    pub detail: u32,
    /// The run involved, or [`crate::abi::NO_RUN`].
    pub run: u32,
    /// The block's index in that run's window.
    pub block: u32,
    /// The window offset.
    pub offset: u32,
}

impl fmt::Display for ProgramError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}",
            status::name(self.status),
            status::describe(self.status)
        )?;
        if self.detail != detail::NONE {
            write!(f, " ({})", detail::describe(self.detail))?;
        }
        if self.run != crate::abi::NO_RUN {
            write!(
                f,
                " in run {}, window block {}, window offset {}",
                self.run, self.block, self.offset
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for ProgramError {}

/// Why a drive stopped early.
#[derive(Debug)]
pub enum DriveError {
    /// The program reported an error status.
    Program(ProgramError),
    /// The machine could not run the program.
    Machine(BoxError),
    /// Reading input blocks failed.
    Source(BoxError),
    /// Writing output blocks failed.
    Sink(BoxError),
    /// The protocol was broken (a bug of the source or the machine).
    Protocol(String),
}

impl fmt::Display for DriveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DriveError::Program(e) => e.fmt(f),
            DriveError::Machine(e) => write!(f, "running the compaction program: {e}"),
            DriveError::Source(e) => write!(f, "reading compaction input: {e}"),
            DriveError::Sink(e) => write!(f, "writing compaction output: {e}"),
            DriveError::Protocol(e) => write!(f, "compaction protocol: {e}"),
        }
    }
}

impl std::error::Error for DriveError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DriveError::Program(e) => Some(e),
            DriveError::Machine(e) | DriveError::Source(e) | DriveError::Sink(e) => {
                Some(e.as_ref())
            }
            DriveError::Protocol(_) => None,
        }
    }
}

/// What one compaction took and produced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DriveSummary {
    /// Program runs (system calls on the kernel).
    pub calls: u64,
    /// Runs that ended in `NEED_INPUT`, `OUTPUT_FULL`, `BUDGET`.
    pub need_input: u64,
    pub output_full: u64,
    pub budget: u64,
    /// Windows the source filled.
    pub windows: u64,
    /// Entries merged / written.
    pub entries_in: u64,
    pub entries_out: u64,
    /// Input blocks verified and their bytes with trailers.
    pub blocks_in: u64,
    pub bytes_in: u64,
    /// Output blocks.
    pub blocks_out: u64,
}

/// Runs one compaction to the end. `on_status` sees every run's status (tests record them).
pub fn drive(
    machine: &mut dyn Machine,
    params: &JobParams,
    source: &mut dyn BlockSource,
    sink: &mut dyn BlockSink,
    on_status: &mut dyn FnMut(u32),
) -> Result<DriveSummary, DriveError> {
    let runs = params.num_runs as usize;
    let mut summary = DriveSummary::default();
    {
        let job = machine.job_mut();
        *job = *Job::new_boxed(params);
    }
    // Every run's first window before the first run: the program then asks only for refills.
    // Windows the pool cannot hold have no layout: the program must then refuse the job before
    // it reads any (CJ_DETAIL_WINDOW_BYTES), and a refill request is a protocol error below.
    let windows_valid = window_bytes_valid(params.num_runs, params.window_bytes);
    if windows_valid {
        for run in 0..runs.min(crate::abi::RUNS_MAX) {
            fill_window(machine, source, run, &mut summary)?;
        }
    }
    loop {
        let rc = machine.run().map_err(DriveError::Machine)?;
        summary.calls += 1;
        on_status(rc);
        match rc {
            status::NEED_INPUT => {
                summary.need_input += 1;
                let run = machine.job_mut().status_run as usize;
                if !windows_valid {
                    return Err(DriveError::Protocol(format!(
                        "NEED_INPUT for run {run} of a job whose window_bytes {} the pool cannot hold",
                        params.window_bytes
                    )));
                }
                if run >= runs {
                    return Err(DriveError::Protocol(format!(
                        "NEED_INPUT for run {run} of {runs}"
                    )));
                }
                fill_window(machine, source, run, &mut summary)?;
            }
            status::OUTPUT_FULL => {
                summary.output_full += 1;
                drain(machine, sink)?;
            }
            status::BUDGET => summary.budget += 1,
            status::DONE => {
                drain(machine, sink)?;
                let job = machine.job_mut();
                summary.entries_in = job.entries_in;
                summary.entries_out = job.entries_out;
                summary.blocks_in = job.blocks_in;
                summary.bytes_in = job.bytes_in;
                summary.blocks_out = job.blocks_out;
                return Ok(summary);
            }
            rc if status::is_error(rc) => {
                let job = machine.job_mut();
                return Err(DriveError::Program(ProgramError {
                    status: rc,
                    detail: job.error_detail,
                    run: job.status_run,
                    block: job.error_block,
                    offset: job.error_offset,
                }));
            }
            other => {
                return Err(DriveError::Protocol(format!(
                    "unknown status {other} from the program"
                )))
            }
        }
    }
}

fn fill_window(
    machine: &mut dyn Machine,
    source: &mut dyn BlockSource,
    run: usize,
    summary: &mut DriveSummary,
) -> Result<(), DriveError> {
    let mut block_len = [0u32; WINDOW_BLOCKS_MAX];
    let expected = machine.job_mut().window_bytes as usize;
    let fill = {
        let window = machine.window(run);
        assert_eq!(
            window.window_bytes(),
            expected,
            "the machine laid run {run}'s window out for another window_bytes"
        );
        if let Window::Host { bytes, .. } = &window {
            assert_eq!(bytes.len(), expected, "a host window is window_bytes long");
        }
        source
            .fill(run, window, &mut block_len)
            .map_err(DriveError::Source)?
    };
    if fill.blocks == 0 && fill.more {
        return Err(DriveError::Protocol(format!(
            "the source gave run {run} no block but says more follow"
        )));
    }
    summary.windows += 1;
    let r = &mut machine.job_mut().runs[run];
    r.window_first = fill.first;
    r.window_blocks = fill.blocks;
    r.more = u32::from(fill.more);
    r.block_len[..fill.blocks as usize].copy_from_slice(&block_len[..fill.blocks as usize]);
    Ok(())
}

fn drain(machine: &mut dyn Machine, sink: &mut dyn BlockSink) -> Result<(), DriveError> {
    let (out_len, n) = {
        let job = machine.job_mut();
        (job.out_len as usize, job.num_records as usize)
    };
    if n > RECORDS_MAX {
        return Err(DriveError::Protocol(format!("{n} records")));
    }
    let mut end = 0usize;
    let records = &machine.records()[..n];
    for rec in records {
        let from = rec.offset as usize;
        let to = from + rec.size as usize + crate::abi::BLOCK_TRAILER_BYTES;
        if from != end || to > out_len {
            return Err(DriveError::Protocol(format!(
                "record at {from}..{to} does not follow {end} within {out_len}"
            )));
        }
        end = to;
    }
    if end != out_len {
        return Err(DriveError::Protocol(format!(
            "records cover {end} of {out_len} output bytes"
        )));
    }
    let output = match machine.output_region() {
        Some(region) => OutputBlocks::Region(region),
        None => {
            let bytes = machine.output();
            if bytes.len() < out_len {
                return Err(DriveError::Protocol(format!(
                    "{out_len} output bytes but the machine holds {}",
                    bytes.len()
                )));
            }
            OutputBlocks::Host(bytes)
        }
    };
    if !records.is_empty() {
        sink.drain(output, records).map_err(DriveError::Sink)?;
    }
    let job = machine.job_mut();
    job.out_len = 0;
    job.num_records = 0;
    Ok(())
}

/// The twin as a [`Machine`]: everything in host memory.
pub struct TwinMachine {
    job: Box<Job>,
    /// One buffer per run, grown to the largest window a job used and kept.
    windows: Vec<Vec<u8>>,
    output: Box<[u8]>,
    records: Vec<Record>,
}

impl fmt::Debug for TwinMachine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TwinMachine")
            .field("windows", &self.windows.len())
            .finish_non_exhaustive()
    }
}

impl TwinMachine {
    /// Memory for jobs of up to `runs` runs (at most [`crate::abi::RUNS_MAX`]); windows are
    /// allocated as jobs size them.
    pub fn new(runs: usize) -> Self {
        let runs = runs.min(crate::abi::RUNS_MAX);
        TwinMachine {
            job: crate::abi::boxed_zeroed(),
            windows: vec![Vec::new(); runs],
            output: vec![0u8; crate::abi::OUTPUT_VALUE_BYTES].into_boxed_slice(),
            records: vec![*crate::abi::boxed_zeroed::<Record>(); RECORDS_MAX],
        }
    }
}

impl Machine for TwinMachine {
    fn job_mut(&mut self) -> &mut Job {
        &mut self.job
    }

    fn window(&mut self, run: usize) -> Window<'_> {
        let window_bytes = self.job.window_bytes as usize;
        assert!(
            window_bytes_valid(self.job.num_runs, self.job.window_bytes),
            "a window of {window_bytes} bytes for {} runs",
            self.job.num_runs
        );
        host_window(&mut self.windows[run], window_bytes)
    }

    fn output(&self) -> &[u8] {
        &self.output
    }

    fn records(&self) -> &[Record] {
        &self.records
    }

    fn run(&mut self) -> Result<u32, BoxError> {
        let windows: Vec<&[u8]> = self.windows.iter().map(|w| &w[..]).collect();
        Ok(crate::twin::run(
            &mut self.job,
            &windows,
            &mut self.output,
            &mut self.records,
        ))
    }
}

/// `buffer` as a host window of `window_bytes`, grown first if needed (a grown buffer keeps
/// its bytes: stale bytes past a window's blocks are never read).
pub fn host_window(buffer: &mut Vec<u8>, window_bytes: usize) -> Window<'_> {
    if buffer.len() < window_bytes {
        // A fresh zeroed allocation rather than a resize: for a large buffer the allocator
        // maps zero pages, touched only where blocks land (the old bytes are stale anyway:
        // a source writes every byte the program reads).
        *buffer = vec![0; window_bytes];
    }
    Window::Host {
        bytes: &mut buffer[..window_bytes],
        window_bytes,
    }
}

/// Copies `bytes` (a map value as the program left it) into a `T`.
pub fn read_pod<T: crate::abi::Pod>(bytes: &[u8]) -> Box<T> {
    let mut value = crate::abi::boxed_zeroed::<T>();
    let dst = bytes_of_mut(value.as_mut());
    dst.copy_from_slice(&bytes[..dst.len()]);
    value
}

/// A [`BlockSink`] that keeps every output file in memory: data blocks only, back to back.
#[derive(Debug, Default)]
pub struct MemorySink {
    /// One entry per output file: its data blocks' bytes and their records.
    pub files: Vec<(Vec<u8>, Vec<Record>)>,
}

impl BlockSink for MemorySink {
    fn block(&mut self, block: &[u8], record: &Record) -> Result<(), BoxError> {
        if record.flags & RECORD_STARTS_FILE != 0 {
            self.files.push((Vec::new(), Vec::new()));
        } else if self.files.is_empty() {
            return Err("the first output block does not start a file".into());
        }
        let (bytes, records) = self.files.last_mut().expect("a file");
        bytes.extend_from_slice(block);
        records.push(*record);
        Ok(())
    }
}

/// A [`BlockSource`] over blocks in memory: each run a list of blocks (contents + trailer).
#[derive(Debug, Clone)]
pub struct MemorySource {
    runs: Vec<Vec<Vec<u8>>>,
    next: Vec<usize>,
    /// Most blocks placed in one window (at least 1).
    pub blocks_per_window: usize,
    /// Window offset of the first block (tests vary it; O_DIRECT sources need alignment).
    pub first_offset: u32,
}

impl MemorySource {
    /// A source over `runs`, filling windows as full as they go.
    pub fn new(runs: Vec<Vec<Vec<u8>>>) -> Self {
        let next = vec![0; runs.len()];
        MemorySource {
            runs,
            next,
            blocks_per_window: WINDOW_BLOCKS_MAX,
            first_offset: 0,
        }
    }
}

impl BlockSource for MemorySource {
    fn fill(
        &mut self,
        run: usize,
        window: Window<'_>,
        block_len: &mut [u32; WINDOW_BLOCKS_MAX],
    ) -> Result<WindowFill, BoxError> {
        let Window::Host {
            bytes: window,
            window_bytes,
        } = window
        else {
            return Err("MemorySource writes host windows only".into());
        };
        let blocks = &self.runs[run];
        let mut at = self.first_offset as usize;
        let mut placed = 0usize;
        let limit = self.blocks_per_window.clamp(1, WINDOW_BLOCKS_MAX);
        while placed < limit && self.next[run] < blocks.len() {
            let block = &blocks[self.next[run]];
            if block.len() < crate::abi::BLOCK_TRAILER_BYTES {
                return Err(format!("run {run}: a block of {} bytes", block.len()).into());
            }
            if at + block.len() > window_bytes {
                if placed == 0 {
                    return Err(format!(
                        "run {run}: a block of {} bytes does not fit a window",
                        block.len()
                    )
                    .into());
                }
                break;
            }
            window[at..at + block.len()].copy_from_slice(block);
            block_len[placed] = u32::try_from(block.len() - crate::abi::BLOCK_TRAILER_BYTES)
                .expect("block fits a window");
            at += block.len();
            placed += 1;
            self.next[run] += 1;
        }
        Ok(WindowFill {
            first: self.first_offset,
            blocks: u32::try_from(placed).expect("at most WINDOW_BLOCKS_MAX"),
            more: self.next[run] < blocks.len(),
        })
    }
}
