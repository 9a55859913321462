//! The `baseline` executor: what RocksDB does. Each input data block is read with its own
//! `pread` (the table iterator reads a block when it reaches it), the merge runs in user space,
//! outputs go through a 1 MiB buffered writer and are synced.

use std::sync::Arc;

use crate::compaction::job::{CompactionExecutor, CompactionJob, JobEnv, JobOutput};
use crate::compaction::output::OutputWriter;
use crate::compaction::visibility::VersionFilter;
use crate::error::Result;
use crate::iter::InternalIterator;
use crate::merge_iter::{LevelIterator, MergingIterator};
use crate::options::CompactionMode;
use crate::sst::Table;

/// RocksDB-style compaction: one `pread` per data block.
#[derive(Clone, Copy, Debug, Default)]
pub struct BaselineExecutor;

impl CompactionExecutor for BaselineExecutor {
    fn mode(&self) -> CompactionMode {
        CompactionMode::Baseline
    }

    fn run(&self, job: &CompactionJob, env: &JobEnv<'_>) -> Result<JobOutput> {
        let mut children: Vec<Box<dyn InternalIterator>> = Vec::with_capacity(job.runs.len());
        let mut data_blocks = 0;
        for run in &job.runs {
            for f in run {
                data_blocks += env.tables.get(f.number)?.properties().num_data_blocks;
            }
            if let [single] = run.as_slice() {
                let table = env.tables.get(single.number)?;
                children.push(Box::new(Table::iter(&table, Arc::clone(&env.kernel))));
            } else {
                children.push(Box::new(LevelIterator::new(
                    run.clone(),
                    Arc::clone(env.tables),
                    Arc::clone(&env.kernel),
                )));
            }
        }
        let mut input = MergingIterator::new(children);
        let mut filter = VersionFilter::new(job.snapshots.clone(), job.bottommost);
        let mut out = OutputWriter::new(
            Arc::clone(&env.kernel),
            env.dir,
            env.new_file_number,
            job.table_options.clone(),
            job.target_file_size,
        );
        let mut entries_in = 0u64;
        let mut entries_out = 0u64;
        input.seek_to_first();
        while input.valid() {
            entries_in += 1;
            if filter.keep(input.key()) {
                out.add(input.key(), input.value())?;
                entries_out += 1;
            }
            input.next();
        }
        input.status()?;
        let files = out.finish()?;
        let expected_in: u64 = job.inputs().map(|f| f.num_entries).sum();
        if entries_in != expected_in {
            return Err(crate::Error::corruption(
                env.dir,
                0,
                format!(
                    "compaction {} read {entries_in} entries, its inputs hold {expected_in}",
                    job.id
                ),
            ));
        }
        Ok(JobOutput {
            bytes_read: job.input_bytes(),
            bytes_written: files.iter().map(|f| f.file_size).sum(),
            data_blocks_read: data_blocks,
            entries_in,
            entries_out,
            files,
        })
    }
}
