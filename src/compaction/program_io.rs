//! The engine's side of a compaction run by the compaction program (or its twin): input
//! blocks read from the job's tables into windows, output blocks written into new tables.
//!
//! [`run_job`] is the whole executor body; modes differ only in the [`Machine`] that runs the
//! program and in how many blocks one read brings in.

use std::alloc::{self, Layout};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use resystance_programs::abi::{
    window_bytes_for, JobParams, Record, BLOCK_SIZE_MAX, ENTRIES_PER_CALL_MAX, RECORD_STARTS_FILE,
    RESTART_INTERVAL_MAX, RUNS_MAX, SNAPSHOTS_MAX, WINDOW_BLOCKS_MAX, WINDOW_BYTES_MIN,
};
use resystance_programs::driver::{
    drive, BlockSink, BlockSource, BoxError, DriveError, Machine, Window, WindowFill,
};
use resystance_traces::{Fd, Kernel, OpenFlags};

use crate::compaction::job::{CompactionJob, JobEnv, JobOutput};
use crate::compaction::output::OutputFiles;
use crate::compaction::ring_output::first_key_of;
use crate::error::{Error, Result};
use crate::file::OpenFile;
use crate::sst::{BlockHandle, ChecksumType, DataBlockMeta, Table};
use crate::version::FileMeta;

/// Alignment of `O_DIRECT` reads — file offset, length and buffer address: the page size,
/// a multiple of the logical block sizes met in practice (512 B here, 4 KiB on most NVMe).
pub const DIRECT_ALIGN_BYTES: usize = 4096;

// An aligned read covering a window's blocks starts at the window (the first block lies
// `offset % DIRECT_ALIGN_BYTES` into it) and ends at the first alignment boundary at or after
// the last block: inside the window, since windows (powers of two of at least
// WINDOW_BYTES_MIN) are multiples of the alignment. So are their places in the pool.
const _: () = assert!(WINDOW_BYTES_MIN % DIRECT_ALIGN_BYTES == 0);
const _: () = assert!(resystance_programs::abi::CHUNK_VALUE_BYTES % DIRECT_ALIGN_BYTES == 0);

/// The program's parameters for `job`, or why the program cannot run it.
pub fn job_params(job: &CompactionJob) -> Result<JobParams> {
    let o = &job.table_options;
    let unsupported = |what: String| {
        Err(Error::NotSupported(format!(
            "compaction {}: {what}",
            job.id
        )))
    };
    let num_runs = u32::try_from(job.runs.len()).unwrap_or(u32::MAX);
    // The largest window the pool holds for this many runs: fewer, longer windows mean fewer
    // refills (each one an io_uring submission and another program run).
    let Some(window_bytes) = window_bytes_for(num_runs) else {
        return unsupported(format!(
            "{} sorted runs; the compaction program merges 1 to {RUNS_MAX}",
            job.runs.len()
        ));
    };
    if o.block_size_bytes == 0 || o.block_size_bytes > BLOCK_SIZE_MAX {
        return unsupported(format!(
            "block_size {} outside 1..={BLOCK_SIZE_MAX}",
            o.block_size_bytes
        ));
    }
    if o.block_restart_interval == 0 || o.block_restart_interval > RESTART_INTERVAL_MAX {
        return unsupported(format!(
            "block_restart_interval {} outside 1..={RESTART_INTERVAL_MAX}",
            o.block_restart_interval
        ));
    }
    let mut snapshots = job.snapshots.clone();
    snapshots.sort_unstable();
    snapshots.dedup();
    if snapshots.len() > SNAPSHOTS_MAX {
        return unsupported(format!(
            "{} live snapshots; the compaction program handles up to {SNAPSHOTS_MAX}",
            snapshots.len()
        ));
    }
    Ok(JobParams {
        num_runs,
        block_size: u32::try_from(o.block_size_bytes).expect("at most BLOCK_SIZE_MAX"),
        restart_interval: u32::try_from(o.block_restart_interval).expect("bounded"),
        target_file_size: job.target_file_size.max(1),
        bottommost: job.bottommost,
        snapshots,
        entries_per_call: u32::try_from(ENTRIES_PER_CALL_MAX).expect("fits u32"),
        window_bytes,
    })
}

/// Runs `job` through `machine`, reading at most `blocks_per_read` blocks per `pread`
/// (1: RocksDB's one `pread` per data block).
pub fn run_job(
    machine: &mut dyn Machine,
    job: &CompactionJob,
    env: &JobEnv<'_>,
    blocks_per_read: usize,
) -> Result<JobOutput> {
    let window_bytes = job_params(job)?.window_bytes as usize;
    let inputs = InputRuns::open(job, env)?;
    let bounce = inputs.direct().then(|| AlignedBuf::zeroed(window_bytes));
    let mut source = PreadSource {
        kernel: Arc::clone(&env.kernel),
        inputs,
        blocks_per_read,
        bounce,
    };
    run_job_with(machine, job, env, &mut source)
}

/// Runs `job` through `machine` with input from `source`; outputs become tables in the
/// job's directory, written with `pwrite` from a buffer.
pub fn run_job_with(
    machine: &mut dyn Machine,
    job: &CompactionJob,
    env: &JobEnv<'_>,
    source: &mut dyn InputSource,
) -> Result<JobOutput> {
    let sink = TableSink {
        files: OutputFiles::new(
            Arc::clone(&env.kernel),
            env.dir,
            env.new_file_number,
            job.table_options.clone(),
        ),
    };
    run_job_into(machine, job, env, source, sink, |s| s.files.finish())
}

/// Runs `job` through `machine` with input from `source` and output blocks into `sink`,
/// which `finish` turns into the job's durable tables once the program is done.
pub fn run_job_into<S: BlockSink>(
    machine: &mut dyn Machine,
    job: &CompactionJob,
    env: &JobEnv<'_>,
    source: &mut dyn InputSource,
    mut sink: S,
    finish: impl FnOnce(S) -> Result<Vec<FileMeta>>,
) -> Result<JobOutput> {
    let params = job_params(job)?;
    let program_ns_before = machine.program_ns();
    let summary = drive(
        machine,
        &params,
        source.as_block_source(),
        &mut sink,
        &mut |_| {},
    )
    .map_err(|e| match e {
        DriveError::Source(e) | DriveError::Sink(e) => match e.downcast::<Error>() {
            Ok(engine) => *engine,
            Err(other) => Error::Program(format!("compaction {}: {other}", job.id)),
        },
        DriveError::Program(p) => {
            let (path, offset) = source.inputs().block_at(p.run, p.block);
            Error::corruption(path, offset, format!("compaction {}: {p}", job.id))
        }
        other => Error::Program(format!("compaction {}: {other}", job.id)),
    })?;
    let files = finish(sink)?;
    let expected_in: u64 = job.inputs().map(|f| f.num_entries).sum();
    if summary.entries_in != expected_in {
        return Err(Error::corruption(
            env.dir,
            0,
            format!(
                "compaction {} read {} entries, its inputs hold {expected_in}",
                job.id, summary.entries_in
            ),
        ));
    }
    Ok(JobOutput {
        bytes_read: job.input_bytes(),
        bytes_written: files.iter().map(|f| f.file_size).sum(),
        data_blocks_read: summary.blocks_in,
        entries_in: summary.entries_in,
        entries_out: summary.entries_out,
        program_ns: machine.program_ns() - program_ns_before,
        readahead: source.readahead(),
        files,
    })
}

/// The input data blocks of a job's runs, in order, and how far each run has been read.
pub struct InputRuns {
    runs: Vec<RunBlocks>,
    /// With direct reads: every input table opened again with `O_DIRECT`, by file number
    /// (closed with the job).
    direct: Option<BTreeMap<u64, OpenFile>>,
}

struct RunBlocks {
    /// (file number, table, block handle)
    blocks: Vec<(u64, Arc<Table>, BlockHandle)>,
    next: usize,
    /// The index in `blocks` of the run's current window's block 0.
    window_start: usize,
}

impl std::fmt::Debug for InputRuns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InputRuns")
            .field("runs", &self.runs.len())
            .finish_non_exhaustive()
    }
}

/// One read of a window fill: `len` bytes of `table` at `offset` (one or more whole blocks,
/// contiguous in the file) go to window offset `window_at`.
#[derive(Debug)]
pub struct Span {
    /// The table's file number.
    pub number: u64,
    /// The table.
    pub table: Arc<Table>,
    /// The descriptor to read with (the `O_DIRECT` one with direct reads).
    pub fd: Fd,
    /// File offset (aligned with direct reads).
    pub offset: u64,
    /// Bytes to ask for (aligned with direct reads, so possibly past the end of the file).
    pub len: usize,
    /// Bytes that must arrive: through the last block's trailer (`len` without direct reads;
    /// with them, a read may stop at the end of the file after these).
    pub needed: usize,
    /// Where in the window they go.
    pub window_at: usize,
}

impl InputRuns {
    /// The job's runs; every input must be a CRC32c table (what the program verifies).
    pub fn open(job: &CompactionJob, env: &JobEnv<'_>) -> Result<Self> {
        let mut runs = Vec::with_capacity(job.runs.len());
        for run in &job.runs {
            let mut blocks = Vec::new();
            for f in run {
                let table = env.tables.get(f.number)?;
                if table.footer().checksum != ChecksumType::Crc32c {
                    return Err(Error::NotSupported(format!(
                        "{}: checksum type {:?}; the compaction program verifies CRC32c only",
                        table.path().display(),
                        table.footer().checksum
                    )));
                }
                blocks.extend(
                    table
                        .data_block_handles()
                        .iter()
                        .map(|&h| (f.number, Arc::clone(&table), h)),
                );
            }
            runs.push(RunBlocks {
                blocks,
                next: 0,
                window_start: 0,
            });
        }
        let direct = if env.direct_reads {
            let mut files = BTreeMap::new();
            let flags = OpenFlags {
                direct: true,
                ..OpenFlags::READ
            };
            for f in job.inputs() {
                if let std::collections::btree_map::Entry::Vacant(slot) = files.entry(f.number) {
                    let table = env.tables.get(f.number)?;
                    slot.insert(OpenFile::open(&env.kernel, table.path(), flags)?);
                }
            }
            Some(files)
        } else {
            None
        };
        Ok(InputRuns { runs, direct })
    }

    /// Whether data blocks are read with `O_DIRECT` (aligned spans, one table per window).
    pub fn direct(&self) -> bool {
        self.direct.is_some()
    }

    /// The descriptor a span of table `number` is read with.
    fn read_fd(&self, number: u64, table: &Table) -> Fd {
        match &self.direct {
            Some(files) => files
                .get(&number)
                .expect("every input was opened for direct reads")
                .fd(),
            None => table.fd(),
        }
    }

    /// The descriptor of every input table to read with, by file number.
    pub fn read_fds(&self) -> Vec<(u64, Fd)> {
        let mut seen = BTreeMap::new();
        for r in &self.runs {
            for (number, table, _) in &r.blocks {
                seen.entry(*number)
                    .or_insert_with(|| self.read_fd(*number, table));
            }
        }
        seen.into_iter().collect()
    }

    /// The file and offset of block `block` of run `run`'s current window (for error
    /// messages); the run's last block handed out when the index is outside the window.
    pub fn block_at(&self, run: u32, block: u32) -> (PathBuf, u64) {
        let Some(r) = self.runs.get(run as usize) else {
            return (PathBuf::new(), 0);
        };
        // A window holds consecutive blocks of the run, possibly from several tables.
        let at = r.window_start + block as usize;
        let found = if at < r.next {
            r.blocks.get(at)
        } else {
            r.blocks.get(r.next.saturating_sub(1))
        };
        found.map_or_else(
            || (PathBuf::new(), 0),
            |(_, t, h)| (t.path().to_path_buf(), h.offset),
        )
    }

    /// Plans run `run`'s next window: at most `blocks_max` blocks in at most `window_bytes`,
    /// consecutive blocks of one table merged into one read. Fills `block_len`, marks the
    /// blocks as handed out, and returns the reads and the window fill.
    ///
    /// With direct reads a window holds blocks of one table only, read with one aligned span
    /// into the window's start: the first block lies `offset % DIRECT_ALIGN_BYTES` into it
    /// (the fill's `first`), and the read's aligned end stays inside the window (a multiple
    /// of the alignment), never in the next run's.
    pub fn plan(
        &mut self,
        run: usize,
        blocks_max: usize,
        window_bytes: usize,
        block_len: &mut [u32; WINDOW_BLOCKS_MAX],
    ) -> Result<(Vec<Span>, WindowFill)> {
        let (spans, fill, start) = self.plan_next(run, blocks_max, window_bytes, block_len)?;
        self.enter_window(run, start);
        Ok((spans, fill))
    }

    /// Makes the window whose first block is block `start` of run `run` (as
    /// [`InputRuns::plan_next`] returned it) the run's current one, which
    /// [`InputRuns::block_at`] names blocks of.
    pub fn enter_window(&mut self, run: usize, start: usize) {
        self.runs[run].window_start = start;
    }

    /// [`InputRuns::plan`] for a window the program gets later (read ahead): the run's
    /// current window stays what it was. Also returns the index in the run of the planned
    /// window's first block.
    pub fn plan_next(
        &mut self,
        run: usize,
        blocks_max: usize,
        window_bytes: usize,
        block_len: &mut [u32; WINDOW_BLOCKS_MAX],
    ) -> Result<(Vec<Span>, WindowFill, usize)> {
        assert!(
            window_bytes >= WINDOW_BYTES_MIN && window_bytes % DIRECT_ALIGN_BYTES == 0,
            "a window of {window_bytes} bytes"
        );
        let direct = self.direct();
        let blocks_max = blocks_max.clamp(1, WINDOW_BLOCKS_MAX);
        let first_block = self.runs[run].blocks.get(self.runs[run].next);
        let skip = match first_block {
            Some((_, _, h)) if direct => (h.offset % DIRECT_ALIGN_BYTES as u64) as usize,
            _ => 0,
        };
        let mut planned = Vec::new();
        let r = &mut self.runs[run];
        let start = r.next;
        let mut at = skip;
        let mut placed = 0usize;
        while placed < blocks_max && r.next < r.blocks.len() && !(direct && placed > 0) {
            let (number, table, first) = &r.blocks[r.next];
            let mut n = 1;
            let mut end = first.end_with_trailer().unwrap_or(u64::MAX);
            while placed + n < blocks_max && r.next + n < r.blocks.len() {
                let (_, t, h) = &r.blocks[r.next + n];
                let next_end = h.end_with_trailer().unwrap_or(u64::MAX);
                if !Arc::ptr_eq(t, table)
                    || h.offset != end
                    || next_end - first.offset > (window_bytes - at) as u64
                {
                    break;
                }
                end = next_end;
                n += 1;
            }
            let bytes = end.saturating_sub(first.offset);
            if bytes > (window_bytes - at) as u64 {
                if placed > 0 {
                    break;
                }
                return Err(Error::NotSupported(format!(
                    "{}: data block at {} of {} bytes exceeds the program's {window_bytes}-byte window",
                    table.path().display(),
                    first.offset,
                    first.size
                )));
            }
            if end > table.file_size() {
                return Err(Error::corruption(
                    table.path(),
                    first.offset,
                    "data blocks run past the end of the file",
                ));
            }
            for i in 0..n {
                let h = r.blocks[r.next + i].2;
                block_len[placed + i] = u32::try_from(h.size).expect("block fits a window");
            }
            let len = usize::try_from(bytes).expect("within a window");
            planned.push((*number, Arc::clone(table), first.offset, len, at));
            at += len;
            placed += n;
            r.next += n;
        }
        let more = r.next < r.blocks.len();
        let spans = planned
            .into_iter()
            .map(|(number, table, offset, len, window_at)| {
                let fd = self.read_fd(number, &table);
                if direct {
                    let align = DIRECT_ALIGN_BYTES as u64;
                    let start = offset - offset % align;
                    let needed = len + skip;
                    let end = (offset + len as u64).div_ceil(align) * align;
                    // skip + len <= window_bytes, a multiple of `align`: so is the rounded end.
                    assert!(
                        end - start <= window_bytes as u64,
                        "a direct read past its window"
                    );
                    Span {
                        number,
                        table,
                        fd,
                        offset: start,
                        len: usize::try_from(end - start).expect("within a window"),
                        needed,
                        window_at: 0,
                    }
                } else {
                    Span {
                        number,
                        table,
                        fd,
                        offset,
                        len,
                        needed: len,
                        window_at,
                    }
                }
            })
            .collect();
        let fill = WindowFill {
            first: u32::try_from(skip).expect("below the alignment"),
            blocks: u32::try_from(placed).expect("at most WINDOW_BLOCKS_MAX"),
            more,
        };
        Ok((spans, fill, start))
    }
}

/// A zeroed, [`DIRECT_ALIGN_BYTES`]-aligned heap buffer: what `O_DIRECT` reads need.
pub struct AlignedBuf {
    ptr: std::ptr::NonNull<u8>,
    len: usize,
}

// SAFETY: it owns its bytes exclusively, like a `Box<[u8]>`.
unsafe impl Send for AlignedBuf {}
// SAFETY: shared access only reads.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    fn layout(len: usize) -> Layout {
        Layout::from_size_align(len.max(1), DIRECT_ALIGN_BYTES).expect("a valid layout")
    }

    /// `len` zero bytes at an aligned address.
    pub fn zeroed(len: usize) -> AlignedBuf {
        let layout = Self::layout(len);
        // SAFETY: the layout has a non-zero size.
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let ptr = std::ptr::NonNull::new(raw).unwrap_or_else(|| alloc::handle_alloc_error(layout));
        AlignedBuf { ptr, len }
    }
}

impl std::ops::Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `len` initialised bytes owned by `self`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl std::ops::DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: `len` initialised bytes owned exclusively by `self`.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `zeroed` with this layout.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), Self::layout(self.len)) };
    }
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AlignedBuf({} bytes)", self.len)
    }
}

/// Reads direct `span` into aligned `dst` (at least `span.needed` bytes) with `pread`s: a
/// short read goes on from the aligned offset at or below where it stopped.
fn read_direct_span(kernel: &dyn Kernel, span: &Span, dst: &mut [u8]) -> Result<()> {
    let align = DIRECT_ALIGN_BYTES;
    let mut done = 0usize;
    while done < span.needed {
        let from = done - done % align;
        let n = kernel
            .pread(span.fd, &mut dst[from..span.len], span.offset + from as u64)
            .map_err(|e| Error::Kernel {
                op: "reading input blocks",
                path: span.table.path().to_path_buf(),
                source: e,
            })?;
        if n == 0 || from + n <= done {
            return Err(Error::corruption(
                span.table.path(),
                span.offset + done as u64,
                format!(
                    "the table ends inside a block: {done} of {} bytes read",
                    span.needed
                ),
            ));
        }
        done = from + n;
    }
    Ok(())
}

/// Input blocks read with `pread` straight into host windows: `blocks_per_read` blocks per
/// window (1: RocksDB's one `pread` per data block). With direct reads each read goes to an
/// aligned bounce buffer first (host windows have no alignment), as RocksDB's direct reads do.
struct PreadSource {
    kernel: Arc<dyn Kernel>,
    inputs: InputRuns,
    blocks_per_read: usize,
    bounce: Option<AlignedBuf>,
}

impl BlockSource for PreadSource {
    fn fill(
        &mut self,
        run: usize,
        window: Window<'_>,
        block_len: &mut [u32; WINDOW_BLOCKS_MAX],
    ) -> std::result::Result<WindowFill, BoxError> {
        let Window::Host {
            bytes: window,
            window_bytes,
        } = window
        else {
            return Err("the pread source writes host windows only".into());
        };
        let (spans, fill) = self
            .inputs
            .plan(run, self.blocks_per_read, window_bytes, block_len)?;
        for span in spans {
            match self.bounce.as_mut() {
                Some(bounce) => {
                    read_direct_span(self.kernel.as_ref(), &span, bounce)?;
                    window[span.window_at..span.window_at + span.needed]
                        .copy_from_slice(&bounce[..span.needed]);
                }
                None => {
                    let dst = &mut window[span.window_at..span.window_at + span.len];
                    span.table
                        .read_raw(self.kernel.as_ref(), span.offset, dst)?;
                }
            }
        }
        Ok(fill)
    }
}

impl InputSource for PreadSource {
    fn inputs(&self) -> &InputRuns {
        &self.inputs
    }

    fn as_block_source(&mut self) -> &mut dyn BlockSource {
        self
    }
}

/// A block source over a job's [`InputRuns`].
pub trait InputSource: BlockSource {
    /// The runs it reads.
    fn inputs(&self) -> &InputRuns;
    /// Itself, as the driver takes it.
    fn as_block_source(&mut self) -> &mut dyn BlockSource;
    /// How reading ahead went (nothing for sources that do not read ahead).
    fn readahead(&self) -> crate::stats::ReadaheadStats {
        crate::stats::ReadaheadStats::default()
    }
}

/// Output blocks into new tables: a new file at every record marked as starting one.
#[derive(Debug)]
struct TableSink<'a> {
    files: OutputFiles<'a>,
}

impl TableSink<'_> {
    fn add(&mut self, block: &[u8], record: &Record) -> Result<()> {
        if record.flags & RECORD_STARTS_FILE != 0 {
            self.files.finish_current()?;
        } else if self.files.current().is_none() {
            return Err(Error::Program(
                "the first output block does not start a file".into(),
            ));
        }
        let first_key = first_key_of(block)
            .ok_or_else(|| Error::Program("an output block's first entry is malformed".into()))?;
        let c = self.files.current_or_create()?;
        c.builder.add_data_block(
            block,
            &DataBlockMeta {
                first_key,
                last_key: record.last_key(),
                entries: u64::from(record.entries),
                deletions: u64::from(record.deletions),
                raw_key_bytes: record.raw_key_bytes,
                raw_value_bytes: record.raw_value_bytes,
            },
        )?;
        c.note_sequences(record.seq_min, record.seq_max);
        Ok(())
    }
}

impl BlockSink for TableSink<'_> {
    fn block(&mut self, block: &[u8], record: &Record) -> std::result::Result<(), BoxError> {
        self.add(block, record).map_err(|e| Box::new(e) as BoxError)
    }
}
