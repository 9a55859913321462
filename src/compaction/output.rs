//! Writing compaction and flush outputs: tables cut at a target size on user-key boundaries.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use resystance_traces::Kernel;

use crate::db_dir::DbDir;
use crate::error::{Error, Result};
use crate::file::{AppendFile, WRITE_BUFFER_BYTES_DEFAULT};
use crate::filename::table_path;
use crate::key;
use crate::sst::{Table, TableBuilder, TableOptions};
use crate::version::{remove_file, FileMeta};

/// The output tables of one flush or compaction: created on demand with fresh file numbers,
/// each synced (fdatasync) when finished and handed, still open, to the table cache; the
/// directory is synced once at the end. Files of a job that fails are removed (and dropped
/// from the cache) when this is dropped unfinished.
pub struct OutputFiles<'a> {
    kernel: Arc<dyn Kernel>,
    dir: &'a DbDir,
    new_file_number: &'a (dyn Fn() -> u64 + Sync),
    table_options: TableOptions,
    current: Option<OutputFile>,
    finished: Vec<FileMeta>,
    /// Paths created so far, to remove if the job fails.
    created: Vec<PathBuf>,
    /// Numbers of the finished tables handed to the cache, to drop if the job fails.
    adopted: Vec<u64>,
}

/// The table being written.
#[derive(Debug)]
pub struct OutputFile {
    number: u64,
    /// Its builder: entries or finished data blocks go in here.
    pub builder: TableBuilder<AppendFile>,
    smallest_seq: u64,
    largest_seq: u64,
}

impl OutputFile {
    /// Notes sequence numbers written into the file.
    pub fn note_sequences(&mut self, smallest: u64, largest: u64) {
        self.smallest_seq = self.smallest_seq.min(smallest);
        self.largest_seq = self.largest_seq.max(largest);
    }
}

impl std::fmt::Debug for OutputFiles<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutputFiles")
            .field("finished", &self.finished.len())
            .finish_non_exhaustive()
    }
}

impl<'a> OutputFiles<'a> {
    /// Outputs in `dir`, numbered by `new_file_number`.
    pub fn new(
        kernel: Arc<dyn Kernel>,
        dir: &'a DbDir,
        new_file_number: &'a (dyn Fn() -> u64 + Sync),
        table_options: TableOptions,
    ) -> Self {
        OutputFiles {
            kernel,
            dir,
            new_file_number,
            table_options,
            current: None,
            finished: Vec::new(),
            created: Vec::new(),
            adopted: Vec::new(),
        }
    }

    /// The directory outputs go to.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The file being written, if one is open.
    pub fn current(&self) -> Option<&OutputFile> {
        self.current.as_ref()
    }

    /// The file being written, created first if none is open.
    pub fn current_or_create(&mut self) -> Result<&mut OutputFile> {
        if self.current.is_none() {
            let number = (self.new_file_number)();
            let path = table_path(self.dir.path(), number);
            self.created.push(path.clone());
            // Readable too: the finished table is read through this same descriptor.
            let file =
                AppendFile::create_readable(&self.kernel, &path, WRITE_BUFFER_BYTES_DEFAULT)?;
            self.current = Some(OutputFile {
                number,
                builder: TableBuilder::new(self.table_options.clone(), file),
                smallest_seq: u64::MAX,
                largest_seq: 0,
            });
        }
        Ok(self.current.as_mut().expect("just created"))
    }

    /// Finishes the open file, if any: index, properties, metaindex and footer (written with
    /// the last buffered data in one `pwrite`), `fdatasync` (data plus the size needed to read
    /// it back; the directory entry is synced once in `finish`). The table then goes to the
    /// table cache as it is: its descriptor stays open and its metadata is decoded from the
    /// bytes just written, not opened and read back (which cost an `openat`, an `fstat` and
    /// two `pread`s per output, and a `close` of the writer's descriptor).
    pub fn finish_current(&mut self) -> Result<()> {
        let Some(c) = self.current.take() else {
            return Ok(());
        };
        let (mut file, summary, tail) = c.builder.finish_keeping_tail()?;
        file.sync(false)?;
        assert!(
            summary.num_entries > 0,
            "outputs are only started with an entry"
        );
        let file = file.into_file()?;
        let table = Table::from_tail(self.kernel.as_ref(), file, summary.file_size, tail)?;
        assert_eq!(
            table.properties().num_entries,
            summary.num_entries,
            "a table reads back what its builder counted"
        );
        self.dir.tables().adopt(c.number, Arc::new(table));
        self.adopted.push(c.number);
        self.finished.push(FileMeta {
            number: c.number,
            file_size: summary.file_size,
            smallest: summary.smallest_key,
            largest: summary.largest_key,
            num_entries: summary.num_entries,
            smallest_seq: c.smallest_seq,
            largest_seq: c.largest_seq,
        });
        Ok(())
    }

    /// Finishes the last file and syncs the directory: every output is durable.
    pub fn finish(mut self) -> Result<Vec<FileMeta>> {
        self.finish_current()?;
        if !self.finished.is_empty() {
            self.dir.sync(self.kernel.as_ref())?;
        }
        self.created.clear();
        self.adopted.clear();
        Ok(std::mem::take(&mut self.finished))
    }
}

impl Drop for OutputFiles<'_> {
    fn drop(&mut self) {
        // Reached with files still listed only when the job failed: remove partial outputs.
        // They are not in any version, so removing them loses nothing.
        self.current = None;
        for &number in &self.adopted {
            self.dir.tables().evict(number);
        }
        for path in &self.created {
            let _ = remove_file(self.kernel.as_ref(), path);
        }
    }
}

/// Builds output tables from entries given in internal-key order, cut once a file reaches a
/// target size, at user-key boundaries.
#[derive(Debug)]
pub struct OutputWriter<'a> {
    files: OutputFiles<'a>,
    target_file_size: u64,
    /// The last internal key added: out-of-order input is rejected against it, and a new
    /// file starts only where its user key changes.
    last_key: Option<Vec<u8>>,
}

impl<'a> OutputWriter<'a> {
    /// Outputs in `dir`, each cut once it reaches `target_file_size` bytes.
    pub fn new(
        kernel: Arc<dyn Kernel>,
        dir: &'a DbDir,
        new_file_number: &'a (dyn Fn() -> u64 + Sync),
        table_options: TableOptions,
        target_file_size: u64,
    ) -> Self {
        OutputWriter {
            files: OutputFiles::new(kernel, dir, new_file_number, table_options),
            target_file_size,
            last_key: None,
        }
    }

    /// Adds the next entry. A new file starts only between two user keys, so one key's
    /// versions never straddle files of a sorted level.
    /// Input out of order (possible only when a checksum-valid input file is itself out of
    /// order) is a corruption error, not a panic in the table builder.
    pub fn add(&mut self, ikey: &[u8], value: &[u8]) -> Result<()> {
        let dir = self.files.dir();
        let parsed = key::parse_internal_key(ikey).ok_or_else(|| {
            Error::corruption(dir, 0, "compaction input has a malformed internal key")
        })?;
        // The previous entry's key (none yet for the first): the order check and the
        // user-key boundary both read it.
        let previous = self.last_key.as_deref();
        if let Some(last) = previous {
            if key::compare_internal(last, ikey) != std::cmp::Ordering::Less {
                return Err(Error::corruption(
                    dir,
                    0,
                    format!(
                        "compaction input keys out of order: {:?} after {:?}",
                        String::from_utf8_lossy(ikey),
                        String::from_utf8_lossy(last)
                    ),
                ));
            }
        }
        let new_user_key = previous.is_none_or(|last| key::user_key(last) != parsed.user_key);
        let last = self.last_key.get_or_insert_with(Vec::new);
        last.clear();
        last.extend_from_slice(ikey);
        if new_user_key {
            let full = self
                .files
                .current()
                .is_some_and(|c| c.builder.file_size_estimate() >= self.target_file_size);
            if full {
                self.files.finish_current()?;
            }
        }
        let c = self.files.current_or_create()?;
        c.builder.add(ikey, value)?;
        c.note_sequences(parsed.sequence, parsed.sequence);
        Ok(())
    }

    /// Finishes the last file and syncs the directory: every output is durable.
    pub fn finish(self) -> Result<Vec<FileMeta>> {
        self.files.finish()
    }
}
