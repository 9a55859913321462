//! Writing compaction and flush outputs: tables cut at a target size on user-key boundaries.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use resystance_traces::Kernel;

use crate::error::{Error, Result};
use crate::file::{sync_dir, AppendFile, WRITE_BUFFER_BYTES_DEFAULT};
use crate::filename::table_path;
use crate::key;
use crate::sst::{TableBuilder, TableOptions};
use crate::version::{remove_file, FileMeta};

/// The output tables of one flush or compaction: created on demand with fresh file numbers,
/// each synced (fdatasync) when finished, the directory synced once at the end. Files of a
/// job that fails are removed when this is dropped unfinished.
pub struct OutputFiles<'a> {
    kernel: Arc<dyn Kernel>,
    dir: &'a Path,
    new_file_number: &'a (dyn Fn() -> u64 + Sync),
    table_options: TableOptions,
    current: Option<OutputFile>,
    finished: Vec<FileMeta>,
    /// Paths created so far, to remove if the job fails.
    created: Vec<PathBuf>,
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
        dir: &'a Path,
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
        }
    }

    /// The directory outputs go to.
    pub fn dir(&self) -> &Path {
        self.dir
    }

    /// The file being written, if one is open.
    pub fn current(&self) -> Option<&OutputFile> {
        self.current.as_ref()
    }

    /// The file being written, created first if none is open.
    pub fn current_or_create(&mut self) -> Result<&mut OutputFile> {
        if self.current.is_none() {
            let number = (self.new_file_number)();
            let path = table_path(self.dir, number);
            self.created.push(path.clone());
            let file = AppendFile::create(&self.kernel, &path, WRITE_BUFFER_BYTES_DEFAULT)?;
            self.current = Some(OutputFile {
                number,
                builder: TableBuilder::new(self.table_options.clone(), file),
                smallest_seq: u64::MAX,
                largest_seq: 0,
            });
        }
        Ok(self.current.as_mut().expect("just created"))
    }

    /// Finishes the open file, if any: index, properties, footer, fdatasync (data plus the size
    /// needed to read it back; the directory entry is synced once in `finish`).
    pub fn finish_current(&mut self) -> Result<()> {
        let Some(c) = self.current.take() else {
            return Ok(());
        };
        let (mut file, summary) = c.builder.finish()?;
        file.sync(false)?;
        assert!(
            summary.num_entries > 0,
            "outputs are only started with an entry"
        );
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
            sync_dir(&self.kernel, self.dir)?;
        }
        self.created.clear();
        Ok(std::mem::take(&mut self.finished))
    }
}

impl Drop for OutputFiles<'_> {
    fn drop(&mut self) {
        // Reached with files still listed only when the job failed: remove partial outputs.
        // They are not in any version, so removing them loses nothing.
        self.current = None;
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
        dir: &'a Path,
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
