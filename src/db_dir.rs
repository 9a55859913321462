//! The database directory as flushes and compactions write tables into it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use resystance_traces::{Kernel, OpenFlags};

use crate::error::{KernelContext, Result};
use crate::file::OpenFile;
use crate::table_cache::TableCache;

/// The database directory: its path, a descriptor held open for as long as the database is
/// (RocksDB keeps its `db_directory_` open the same way), so making a job's new files durable
/// costs one `fsync` rather than an `openat`, `fsync` and `close`; and the table cache, which
/// takes each table its writer finished.
#[derive(Debug)]
pub struct DbDir {
    path: PathBuf,
    file: OpenFile,
    tables: Arc<TableCache>,
}

impl DbDir {
    /// Opens directory `path` (one `openat`) for tables that go into `tables`.
    pub fn open(kernel: &Arc<dyn Kernel>, path: &Path, tables: Arc<TableCache>) -> Result<DbDir> {
        Ok(DbDir {
            path: path.to_path_buf(),
            file: OpenFile::open(kernel, path, OpenFlags::DIRECTORY)?,
            tables,
        })
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory's descriptor (held open for as long as the database is).
    pub fn fd(&self) -> resystance_traces::Fd {
        self.file.fd()
    }

    /// The open tables of the database.
    pub fn tables(&self) -> &Arc<TableCache> {
        &self.tables
    }

    /// `fsync` of the directory through `kernel` (a job's own view, so the job counts it):
    /// creations, renames and unlinks in it so far become durable.
    pub fn sync(&self, kernel: &dyn Kernel) -> Result<()> {
        kernel
            .fsync(self.file.fd())
            .ctx("fsync of directory", &self.path)
    }
}

impl AsRef<Path> for DbDir {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

impl From<&DbDir> for PathBuf {
    fn from(dir: &DbDir) -> PathBuf {
        dir.path.clone()
    }
}
