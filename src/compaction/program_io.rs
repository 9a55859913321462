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
    drive, BlockSink, BlockSource, BoxError, DriveError, Machine, WindowFill,
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
    let params = job_params(job)?;
    let mut source = TableSource::open(job, env, blocks_per_read)?;
    let mut sink = TableSink {
        files: OutputFiles::new(
            Arc::clone(&env.kernel),
            env.dir,
            env.new_file_number,
            job.table_options.clone(),
        ),
    };
    let summary =
        drive(machine, &params, &mut source, &mut sink, &mut |_| {}).map_err(|e| match e {
            DriveError::Source(e) | DriveError::Sink(e) => match e.downcast::<Error>() {
                Ok(engine) => *engine,
                Err(other) => Error::Program(format!("compaction {}: {other}", job.id)),
            },
            DriveError::Program(p) => Error::corruption(
                source.path_of(p.run),
                0,
                format!("compaction {}: {p}", job.id),
            ),
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
        files,
    })
}

/// Input blocks of each run, read with `pread` straight into the program's windows.
struct TableSource {
    kernel: Arc<dyn Kernel>,
    /// Per run: its tables' data blocks in order, and how many were handed out.
    runs: Vec<RunBlocks>,
    blocks_per_read: usize,
}

struct RunBlocks {
    blocks: Vec<(Arc<Table>, BlockHandle)>,
    next: usize,
}

impl TableSource {
    fn open(job: &CompactionJob, env: &JobEnv<'_>, blocks_per_read: usize) -> Result<Self> {
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
                        .map(|&h| (Arc::clone(&table), h)),
                );
            }
            runs.push(RunBlocks { blocks, next: 0 });
        }
        Ok(TableSource {
            kernel: Arc::clone(&env.kernel),
            runs,
            blocks_per_read: blocks_per_read.clamp(1, WINDOW_BLOCKS_MAX),
        })
    }

    /// The file holding run `run`'s current block (for error messages).
    fn path_of(&self, run: u32) -> PathBuf {
        self.runs
            .get(run as usize)
            .and_then(|r| r.blocks.get(r.next.saturating_sub(1)))
            .map_or_else(PathBuf::new, |(t, _)| t.path().to_path_buf())
    }
}

impl BlockSource for TableSource {
    fn fill(
        &mut self,
        run: usize,
        window: &mut [u8],
        block_len: &mut [u32; WINDOW_BLOCKS_MAX],
    ) -> std::result::Result<WindowFill, BoxError> {
        let r = &mut self.runs[run];
        let mut at = 0usize;
        let mut placed = 0usize;
        // Consecutive blocks of one table are contiguous in the file: one read brings several.
        while placed < self.blocks_per_read && r.next < r.blocks.len() {
            let (table, first) = &r.blocks[r.next];
            let mut n = 1;
            let mut end = first.end_with_trailer().unwrap_or(u64::MAX);
            while placed + n < self.blocks_per_read && r.next + n < r.blocks.len() {
                let (t, h) = &r.blocks[r.next + n];
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
                return Err(Box::new(Error::NotSupported(format!(
                    "{}: data block at {} of {} bytes exceeds the program's {WINDOW_BYTES}-byte window",
                    table.path().display(),
                    first.offset,
                    first.size
                ))));
            }
            let span = BlockHandle::new(first.offset, bytes - crate::sst::BLOCK_TRAILER_LEN as u64);
            let read = table.read_raw_block(self.kernel.as_ref(), span, &mut window[at..])?;
            for i in 0..n {
                let h = r.blocks[r.next + i].1;
                block_len[placed + i] = u32::try_from(h.size).expect("block fits a window");
            }
            at += read;
            placed += n;
            r.next += n;
        }
        Ok(WindowFill {
            first: 0,
            blocks: u32::try_from(placed).expect("at most WINDOW_BLOCKS_MAX"),
            more: r.next < r.blocks.len(),
        })
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

/// The first key of a block: its first entry shares nothing with a previous key.
fn first_key_of(block: &[u8]) -> Option<&[u8]> {
    let (shared, a) = decode_varint32(block)?;
    let (non_shared, b) = decode_varint32(&block[a..])?;
    let (_, c) = decode_varint32(&block[a + b..])?;
    let start = a + b + c;
    let key = block.get(start..start + non_shared as usize)?;
    (shared == 0 && key::parse_internal_key(key).is_some()).then_some(key)
}
