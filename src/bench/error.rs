//! What can stop a benchmark run, and the exit code each maps to.

use std::path::PathBuf;

/// Exit code for a run that failed (an engine or I/O error), as db_bench exits.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code for a request this build cannot serve or flags that do not fit together (the
/// code clap uses for usage errors).
pub const EXIT_USAGE: u8 = 2;

/// Everything that can stop `resystance bench`.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Something this build or backend does not provide yet.
    #[error("{0}")]
    Unavailable(String),
    /// Flags that parse but do not fit together.
    #[error("invalid flags: {0}")]
    InvalidFlags(String),
    /// The engine failed.
    #[error("{during}: {source}")]
    Engine {
        /// What the benchmark was doing (e.g. "fillrandom: put #42").
        during: String,
        /// The engine's error.
        #[source]
        source: crate::Error,
    },
    /// Ctrl-C stopped the run; the database was closed cleanly first.
    #[error("interrupted (SIGINT) during {benchmark} after {ops} operations; the database was closed cleanly")]
    Interrupted {
        /// The benchmark that was running.
        benchmark: &'static str,
        /// Its operations done.
        ops: u64,
    },
    /// Writing a report failed.
    #[error("writing {}: {source}", path.display())]
    Output {
        /// The file written (`-` for standard output).
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
}

impl BenchError {
    /// An engine error with what the benchmark was doing.
    pub fn engine(during: impl Into<String>, source: crate::Error) -> Self {
        BenchError::Engine {
            during: during.into(),
            source,
        }
    }

    /// A failed write to standard output.
    pub fn stdout(source: std::io::Error) -> Self {
        BenchError::Output {
            path: PathBuf::from("-"),
            source,
        }
    }

    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            BenchError::Unavailable(_) | BenchError::InvalidFlags(_) => EXIT_USAGE,
            // A compaction mode that is not built yet is a request we cannot serve, not a
            // failed run.
            BenchError::Engine {
                source: crate::Error::NotSupported(_),
                ..
            } => EXIT_USAGE,
            BenchError::Engine { .. } | BenchError::Output { .. } => EXIT_FAILURE,
            BenchError::Interrupted { .. } => super::interrupt::EXIT_INTERRUPTED,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_supported_modes_exit_2_with_one_line() {
        let e = BenchError::engine(
            "opening /tmp/db with compaction_mode=uring",
            crate::Error::NotSupported("the uring executor arrives with issue #7".into()),
        );
        assert_eq!(e.exit_code(), EXIT_USAGE);
        let line = e.to_string();
        assert_eq!(
            line,
            "opening /tmp/db with compaction_mode=uring: not supported: the uring executor arrives with issue #7"
        );
        assert!(!line.contains('\n'));
    }

    #[test]
    fn failures_exit_1() {
        let e = BenchError::engine(
            "fillrandom: put #3",
            crate::Error::Unavailable("closed".into()),
        );
        assert_eq!(e.exit_code(), EXIT_FAILURE);
        assert_eq!(
            BenchError::stdout(std::io::Error::other("broken pipe")).exit_code(),
            EXIT_FAILURE
        );
        assert_eq!(BenchError::Unavailable("x".into()).exit_code(), EXIT_USAGE);
    }
}
