//! Errors crossing the kernel boundary.

use serde::{Deserialize, Serialize};

use crate::SyscallKind;

/// A Linux errno value with the symbolic names the engine reacts to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Errno(pub i32);

impl Errno {
    /// No such file or directory.
    pub const ENOENT: Errno = Errno(2);
    /// I/O error.
    pub const EIO: Errno = Errno(5);
    /// Bad file descriptor.
    pub const EBADF: Errno = Errno(9);
    /// Out of memory.
    pub const ENOMEM: Errno = Errno(12);
    /// Permission denied.
    pub const EACCES: Errno = Errno(13);
    /// File exists.
    pub const EEXIST: Errno = Errno(17);
    /// Invalid argument.
    pub const EINVAL: Errno = Errno(22);
    /// No space left on device.
    pub const ENOSPC: Errno = Errno(28);
    /// Function not implemented.
    pub const ENOSYS: Errno = Errno(38);
    /// Operation not permitted.
    pub const EPERM: Errno = Errno(1);
    /// Resource temporarily unavailable.
    pub const EAGAIN: Errno = Errno(11);
    /// Argument list too long (BPF: key or value too large).
    pub const E2BIG: Errno = Errno(7);
    /// Device or resource busy (io_uring: completion queue overflow).
    pub const EBUSY: Errno = Errno(16);
    /// Operation canceled (io_uring: a linked SQE after one that failed or came back short).
    pub const ECANCELED: Errno = Errno(125);

    /// The symbolic name, when it is one we know.
    pub fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            1 => "EPERM",
            2 => "ENOENT",
            5 => "EIO",
            7 => "E2BIG",
            9 => "EBADF",
            11 => "EAGAIN",
            12 => "ENOMEM",
            13 => "EACCES",
            16 => "EBUSY",
            17 => "EEXIST",
            22 => "EINVAL",
            28 => "ENOSPC",
            38 => "ENOSYS",
            125 => "ECANCELED",
            _ => return None,
        })
    }
}

impl std::fmt::Display for Errno {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name} (errno {})", self.0),
            None => write!(f, "errno {}", self.0),
        }
    }
}

/// Why a kernel call failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum KernelError {
    /// The kernel answered the call with an error number.
    #[error("{call}: {errno}")]
    Errno {
        /// The call that failed.
        call: SyscallKind,
        /// What the kernel said.
        errno: Errno,
    },
    /// This kernel implementation does not provide the call (yet, or on this host).
    #[error("{call}: not available on this kernel: {why}")]
    Unsupported {
        /// The call that is missing.
        call: SyscallKind,
        /// What is missing and where it will come from.
        why: String,
    },
    /// The verifier rejected a program: its log says why (the tail, if it overflowed). The
    /// message shows the log's last lines, where the verifier says what it refused; the whole
    /// log is in `log`.
    #[error(
        "{call}: the verifier rejected the program ({errno}); {}",
        log_tail(log)
    )]
    Rejected {
        /// The call that failed (`bpf(BPF_PROG_LOAD)`).
        call: SyscallKind,
        /// What the kernel said.
        errno: Errno,
        /// The verifier log.
        log: String,
    },
    /// The caller lacks a privilege the call needs.
    #[error("{call}: {errno}: this needs {missing}")]
    NotPermitted {
        /// The call that failed.
        call: SyscallKind,
        /// What the kernel said (`EPERM`, `EACCES`).
        errno: Errno,
        /// The privilege that is missing, e.g. `root, or CAP_BPF and CAP_PERFMON`.
        missing: String,
    },
}

impl KernelError {
    /// The errno, when the kernel answered with one.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            KernelError::Errno { errno, .. }
            | KernelError::Rejected { errno, .. }
            | KernelError::NotPermitted { errno, .. } => Some(*errno),
            KernelError::Unsupported { .. } => None,
        }
    }
}

/// Lines of a verifier log an error message shows.
const VERIFIER_LOG_LINES_SHOWN: usize = 12;

/// The last lines of a verifier log, saying how many were left out.
fn log_tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    let skip = lines.len().saturating_sub(VERIFIER_LOG_LINES_SHOWN);
    let tail = lines[skip..].join("\n");
    if skip == 0 {
        format!("verifier log:\n{tail}")
    } else {
        format!(
            "last {} of {} lines of the verifier log:\n{tail}",
            lines.len() - skip,
            lines.len()
        )
    }
}

/// The result of a call across the kernel boundary.
pub type KernelResult<T> = Result<T, KernelError>;
