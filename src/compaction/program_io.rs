//! The engine's side of a compaction run by the compaction program (or its twin): input
//! blocks read from the job's tables into windows, output blocks written into new tables.
//!
//! [`run_job`] is the whole executor body; modes differ only in the [`Machine`] that runs the
//! program and in how many blocks one read brings in.

use std::path::PathBuf;
use std::sync::Arc;

use resystance_programs::abi::{
    JobParams, Record, BLOCK_SIZE_MAX, ENTRIES_PER_CALL_MAX, RECORD_STARTS_FILE,
    RESTART_INTERVAL_MAX, RUNS_MAX, SNAPSHOTS_MAX, WINDOW_BLOCKS_MAX, WINDOW_BYTES,
};
use resystance_programs::driver::{
    drive, BlockSink, BlockSource, BoxError, DriveError, Machine, Window, WindowFill,
};
use resystance_traces::Kernel;

use crate::coding::decode_varint32;
use crate::compaction::job::{CompactionJob, JobEnv, JobOutput};
use crate::compaction::output::OutputFiles;
use crate::error::{Error, Result};
use crate::key;
use crate::sst::{BlockHandle, ChecksumType, DataBlockMeta, Table};

/// The program's parameters for `job`, or why the program cannot run it.
pub fn job_params(job: &CompactionJob) -> Result<JobParams> {
    let o = &job.table_options;
    let unsupported = |what: String| {
        Err(Error::NotSupported(format!(
            "compaction {}: {what}",
            job.id
        )))
    };
    if job.runs.is_empty() || job.runs.len() > RUNS_MAX {
        return unsupported(format!(
            "{} sorted runs; the compaction program merges 1 to {RUNS_MAX}",
            job.runs.len()
        ));
    }
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
        num_runs: u32::try_from(job.runs.len()).expect("at most RUNS_MAX"),
        block_size: u32::try_from(o.block_size_bytes).expect("at most BLOCK_SIZE_MAX"),
        restart_interval: u32::try_from(o.block_restart_interval).expect("bounded"),
        target_file_size: job.target_file_size.max(1),
        bottommost: job.bottommost,
        snapshots,
        entries_per_call: u32::try_from(ENTRIES_PER_CALL_MAX).expect("fits u32"),
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
    let mut source = PreadSource {
        kernel: Arc::clone(&env.kernel),
        inputs: InputRuns::open(job, env)?,
        blocks_per_read,
    };
    run_job_with(machine, job, env, &mut source)
}

/// Runs `job` through `machine` with input from `source`; outputs become tables in the
/// job's directory.
pub fn run_job_with(
    machine: &mut dyn Machine,
    job: &CompactionJob,
    env: &JobEnv<'_>,
    source: &mut dyn InputSource,
) -> Result<JobOutput> {
    let params = job_params(job)?;
    let program_ns_before = machine.program_ns();
    let mut sink = TableSink {
        files: OutputFiles::new(
            Arc::clone(&env.kernel),
            env.dir,
            env.new_file_number,
            job.table_options.clone(),
        ),
    };
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
    let files = sink.files.finish()?;
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
        files,
    })
}

/// The input data blocks of a job's runs, in order, and how far each run has been read.
pub struct InputRuns {
    runs: Vec<RunBlocks>,
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
    /// File offset.
    pub offset: u64,
    /// Bytes, trailers included.
    pub len: usize,
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
        Ok(InputRuns { runs })
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

    /// Plans run `run`'s next window: at most `blocks_max` blocks in at most [`WINDOW_BYTES`],
    /// consecutive blocks of one table merged into one read. Fills `block_len`, marks the
    /// blocks as handed out, and returns the reads and the window fill.
    pub fn plan(
        &mut self,
        run: usize,
        blocks_max: usize,
        block_len: &mut [u32; WINDOW_BLOCKS_MAX],
    ) -> Result<(Vec<Span>, WindowFill)> {
        let blocks_max = blocks_max.clamp(1, WINDOW_BLOCKS_MAX);
        let r = &mut self.runs[run];
        r.window_start = r.next;
        let mut spans = Vec::new();
        let mut at = 0usize;
        let mut placed = 0usize;
        while placed < blocks_max && r.next < r.blocks.len() {
            let (number, table, first) = &r.blocks[r.next];
            let mut n = 1;
            let mut end = first.end_with_trailer().unwrap_or(u64::MAX);
            while placed + n < blocks_max && r.next + n < r.blocks.len() {
                let (_, t, h) = &r.blocks[r.next + n];
                let next_end = h.end_with_trailer().unwrap_or(u64::MAX);
                if !Arc::ptr_eq(t, table)
                    || h.offset != end
                    || next_end - first.offset > (WINDOW_BYTES - at) as u64
                {
                    break;
                }
                end = next_end;
                n += 1;
            }
            let bytes = end.saturating_sub(first.offset);
            if bytes > (WINDOW_BYTES - at) as u64 {
                if placed > 0 {
                    break;
                }
                return Err(Error::NotSupported(format!(
                    "{}: data block at {} of {} bytes exceeds the program's {WINDOW_BYTES}-byte window",
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
            spans.push(Span {
                number: *number,
                table: Arc::clone(table),
                offset: first.offset,
                len,
                window_at: at,
            });
            at += len;
            placed += n;
            r.next += n;
        }
        let fill = WindowFill {
            first: 0,
            blocks: u32::try_from(placed).expect("at most WINDOW_BLOCKS_MAX"),
            more: r.next < r.blocks.len(),
        };
        Ok((spans, fill))
    }
}

/// Input blocks read with `pread` straight into host windows: `blocks_per_read` blocks per
/// window (1: RocksDB's one `pread` per data block).
struct PreadSource {
    kernel: Arc<dyn Kernel>,
    inputs: InputRuns,
    blocks_per_read: usize,
}

impl BlockSource for PreadSource {
    fn fill(
        &mut self,
        run: usize,
        window: Window<'_>,
        block_len: &mut [u32; WINDOW_BLOCKS_MAX],
    ) -> std::result::Result<WindowFill, BoxError> {
        let Window::Host(window) = window else {
            return Err("the pread source writes host windows only".into());
        };
        let (spans, fill) = self.inputs.plan(run, self.blocks_per_read, block_len)?;
        for span in spans {
            let dst = &mut window[span.window_at..span.window_at + span.len];
            span.table
                .read_raw(self.kernel.as_ref(), span.offset, dst)?;
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

/// The first key of a block: its first entry shares nothing with a previous key.
fn first_key_of(block: &[u8]) -> Option<&[u8]> {
    let (shared, a) = decode_varint32(block)?;
    let (non_shared, b) = decode_varint32(&block[a..])?;
    let (_, c) = decode_varint32(&block[a + b..])?;
    let start = a + b + c;
    let key = block.get(start..start + non_shared as usize)?;
    (shared == 0 && key::parse_internal_key(key).is_some()).then_some(key)
}
