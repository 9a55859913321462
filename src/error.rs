//! Engine errors: values with context (which file, which block, which offset).

use std::path::PathBuf;

use resystance_traces::KernelError;

/// Everything that can go wrong in the engine.
#[derive(Clone, Debug, thiserror::Error)]
pub enum Error {
    /// A kernel call failed.
    #[error("{op} {}: {source}", path.display())]
    Kernel {
        /// What the engine was doing (e.g. "reading data block").
        op: &'static str,
        /// The file involved.
        path: PathBuf,
        /// What the kernel said.
        #[source]
        source: KernelError,
    },
    /// Stored bytes are not what they must be.
    #[error("corruption in {} at offset {offset}: {what}", path.display())]
    Corruption {
        /// The file.
        path: PathBuf,
        /// Byte offset in the file where the bad data starts.
        offset: u64,
        /// What is wrong.
        what: String,
    },
    /// The caller asked for something invalid.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A feature this build or backend does not provide.
    #[error("not supported: {0}")]
    NotSupported(String),
    /// The compaction program could not be run (a machine or protocol failure, not bad data).
    #[error("compaction program: {0}")]
    Program(String),
    /// The database is closed or a background error stopped writes.
    #[error("database unavailable: {0}")]
    Unavailable(String),
}

impl Error {
    /// A corruption error.
    pub fn corruption(path: impl Into<PathBuf>, offset: u64, what: impl Into<String>) -> Self {
        Error::Corruption {
            path: path.into(),
            offset,
            what: what.into(),
        }
    }
}

/// Engine result.
pub type Result<T> = std::result::Result<T, Error>;

/// Attaches the operation and path to a kernel error.
pub trait KernelContext<T> {
    /// Wraps the error with `op` and `path`.
    fn ctx(self, op: &'static str, path: &std::path::Path) -> Result<T>;
}

impl<T> KernelContext<T> for std::result::Result<T, KernelError> {
    fn ctx(self, op: &'static str, path: &std::path::Path) -> Result<T> {
        self.map_err(|source| Error::Kernel {
            op,
            path: path.to_path_buf(),
            source,
        })
    }
}
