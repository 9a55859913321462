//! Files through the kernel boundary: positioned reads and a buffered appender.
//!
//! The engine never calls libc or `std::fs`: every read, write and sync below is one call on a
//! [`Kernel`], so the simulator sees it and the accounting counts it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use resystance_traces::{Fd, Kernel, OpenFlags};

use crate::error::{Error, KernelContext, Result};

/// Default size of the user-space write buffer of an SST writer: RocksDB's 1 MiB
/// `writable_file_max_buffer_size`.
pub const WRITE_BUFFER_BYTES_DEFAULT: usize = 1 << 20;

/// An open file, closed when dropped.
#[derive(Debug)]
pub struct OpenFile {
    kernel: Arc<dyn Kernel>,
    fd: Fd,
    path: PathBuf,
}

impl OpenFile {
    /// Opens `path` with `flags` through `kernel`.
    pub fn open(kernel: &Arc<dyn Kernel>, path: &Path, flags: OpenFlags) -> Result<OpenFile> {
        let fd = kernel.open(path, flags).ctx("opening", path)?;
        Ok(OpenFile {
            kernel: Arc::clone(kernel),
            fd,
            path: path.to_path_buf(),
        })
    }

    /// The descriptor.
    pub fn fd(&self) -> Fd {
        self.fd
    }

    /// The path it was opened with.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The kernel it belongs to.
    pub fn kernel(&self) -> &Arc<dyn Kernel> {
        &self.kernel
    }

    /// The file's size (one `fstat`).
    pub fn size(&self) -> Result<u64> {
        self.kernel.file_size(self.fd).ctx("stat of", &self.path)
    }

    /// Reads exactly `len` bytes at `offset` through `kernel` (normally one `pread`; a short
    /// read is retried, and each retry is another counted `pread`). End of file before `len`
    /// bytes is a corruption error: callers only ask for ranges the file's metadata promised.
    pub fn read_exact_at(&self, kernel: &dyn Kernel, offset: u64, len: usize) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        self.read_exact_into(kernel, offset, &mut buf)?;
        Ok(buf)
    }

    /// [`OpenFile::read_exact_at`] into a caller's buffer: fills all of `buf`.
    pub fn read_exact_into(&self, kernel: &dyn Kernel, offset: u64, buf: &mut [u8]) -> Result<()> {
        let len = buf.len();
        let mut done = 0;
        while done < len {
            let n = kernel
                .pread(self.fd, &mut buf[done..], offset + done as u64)
                .ctx("reading", &self.path)?;
            if n == 0 {
                return Err(Error::corruption(
                    &self.path,
                    offset + done as u64,
                    format!("file ends {done} bytes into a {len}-byte read"),
                ));
            }
            done += n;
        }
        Ok(())
    }

    /// Writes all of `data` at `offset` (retrying short writes).
    pub fn write_all_at(&self, data: &[u8], offset: u64) -> Result<()> {
        let mut done = 0;
        while done < data.len() {
            let n = self
                .kernel
                .pwrite(self.fd, &data[done..], offset + done as u64)
                .ctx("writing", &self.path)?;
            if n == 0 {
                return Err(Error::Kernel {
                    op: "writing",
                    path: self.path.clone(),
                    source: resystance_traces::KernelError::Errno {
                        call: resystance_traces::SyscallKind::Pwrite,
                        errno: resystance_traces::Errno::EIO,
                    },
                });
            }
            done += n;
        }
        Ok(())
    }

    /// `fsync`.
    pub fn fsync(&self) -> Result<()> {
        self.kernel.fsync(self.fd).ctx("fsync of", &self.path)
    }

    /// `fdatasync`.
    pub fn fdatasync(&self) -> Result<()> {
        self.kernel
            .fdatasync(self.fd)
            .ctx("fdatasync of", &self.path)
    }
}

impl Drop for OpenFile {
    fn drop(&mut self) {
        // A failed close of a file we only read, or already synced, loses nothing.
        let _ = self.kernel.close(self.fd);
    }
}

/// Something a table builder can append bytes to.
pub trait Sink {
    /// Appends `data`.
    fn append(&mut self, data: &[u8]) -> Result<()>;
    /// Appends the file's last bytes (nothing follows them); a buffering sink may write them
    /// out at once with what it holds.
    fn append_last(&mut self, data: &[u8]) -> Result<()> {
        self.append(data)
    }
}

impl Sink for Vec<u8> {
    fn append(&mut self, data: &[u8]) -> Result<()> {
        self.extend_from_slice(data);
        Ok(())
    }
}

/// An append-only file with a user-space buffer: data reaches the kernel in `pwrite`s of up to
/// the buffer size (1 MiB by default, like RocksDB's writable file), or when flushed.
#[derive(Debug)]
pub struct AppendFile {
    file: OpenFile,
    buf: Vec<u8>,
    buf_capacity_bytes: usize,
    flushed_len: u64,
}

impl AppendFile {
    /// Creates `path` (which must not exist) for appending.
    pub fn create(
        kernel: &Arc<dyn Kernel>,
        path: &Path,
        buf_capacity_bytes: usize,
    ) -> Result<AppendFile> {
        Self::create_with(kernel, path, buf_capacity_bytes, OpenFlags::CREATE_NEW)
    }

    /// Creates `path` (which must not exist) for appending and for reading back, so the
    /// finished file can be read through this descriptor ([`AppendFile::into_file`]) without
    /// opening it again.
    pub fn create_readable(
        kernel: &Arc<dyn Kernel>,
        path: &Path,
        buf_capacity_bytes: usize,
    ) -> Result<AppendFile> {
        Self::create_with(
            kernel,
            path,
            buf_capacity_bytes,
            OpenFlags::CREATE_NEW_READ_WRITE,
        )
    }

    fn create_with(
        kernel: &Arc<dyn Kernel>,
        path: &Path,
        buf_capacity_bytes: usize,
        flags: OpenFlags,
    ) -> Result<AppendFile> {
        assert!(buf_capacity_bytes > 0, "an append buffer needs room");
        assert!(flags.create && flags.exclusive && flags.write);
        let file = OpenFile::open(kernel, path, flags)?;
        Ok(AppendFile {
            file,
            buf: Vec::with_capacity(buf_capacity_bytes),
            buf_capacity_bytes,
            flushed_len: 0,
        })
    }

    /// Bytes appended so far (flushed or not).
    pub fn len(&self) -> u64 {
        self.flushed_len + self.buf.len() as u64
    }

    /// Whether nothing was appended yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The path.
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// Writes the buffer out (one `pwrite` if it holds anything).
    pub fn flush(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.file.write_all_at(&self.buf, self.flushed_len)?;
        self.flushed_len += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    /// The open file, everything appended written out (one `pwrite` if the buffer held
    /// anything).
    pub fn into_file(mut self) -> Result<OpenFile> {
        self.flush()?;
        Ok(self.file)
    }

    /// Flushes, then `fdatasync` (`fsync` when `metadata`, e.g. for a new file's size).
    pub fn sync(&mut self, metadata: bool) -> Result<()> {
        self.flush()?;
        if metadata {
            self.file.fsync()
        } else {
            self.file.fdatasync()
        }
    }
}

impl Sink for AppendFile {
    fn append(&mut self, mut data: &[u8]) -> Result<()> {
        while !data.is_empty() {
            if self.buf.is_empty() && data.len() >= self.buf_capacity_bytes {
                // Large appends bypass the buffer: one pwrite, no copy.
                self.file.write_all_at(data, self.flushed_len)?;
                self.flushed_len += data.len() as u64;
                return Ok(());
            }
            let room = self.buf_capacity_bytes - self.buf.len();
            let take = room.min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() == self.buf_capacity_bytes {
                self.flush()?;
            }
        }
        Ok(())
    }

    /// One `pwrite` of the buffer and `data` together, even past the buffer's capacity (by at
    /// most `data.len()`, a table's metadata): the last bytes of a file never cost a write of
    /// their own for having straddled the buffer's end.
    fn append_last(&mut self, data: &[u8]) -> Result<()> {
        if self.buf.is_empty() {
            // Nothing to join: one pwrite straight from `data`, no copy.
            if !data.is_empty() {
                self.file.write_all_at(data, self.flushed_len)?;
                self.flushed_len += data.len() as u64;
            }
            return Ok(());
        }
        self.buf.extend_from_slice(data);
        self.flush()
    }
}

/// `fsync` of a directory, so that creations, renames and unlinks in it are durable.
pub fn sync_dir(kernel: &Arc<dyn Kernel>, dir: &Path) -> Result<()> {
    OpenFile::open(kernel, dir, OpenFlags::DIRECTORY)?.fsync()
}

/// Reads a whole (small) file.
pub fn read_whole(kernel: &Arc<dyn Kernel>, path: &Path) -> Result<Vec<u8>> {
    let f = OpenFile::open(kernel, path, OpenFlags::READ)?;
    let size = f.size()?;
    f.read_exact_at(
        kernel.as_ref(),
        0,
        usize::try_from(size).expect("file fits memory"),
    )
}

/// Writes `data` to `path` atomically: a temporary file, fsync, rename over `path`, fsync of
/// the directory. A crash leaves either the old or the new file, never a torn one.
pub fn write_atomically(
    kernel: &Arc<dyn Kernel>,
    dir: &Path,
    name: &str,
    data: &[u8],
) -> Result<()> {
    let tmp = dir.join(format!("{name}.dbtmp"));
    match kernel.unlink(&tmp) {
        Ok(()) => {}
        Err(e) if e.errno() == Some(resystance_traces::Errno::ENOENT) => {}
        Err(e) => return Err(e).ctx("removing stale", &tmp),
    }
    {
        let f = OpenFile::open(kernel, &tmp, OpenFlags::CREATE_NEW)?;
        f.write_all_at(data, 0)?;
        f.fsync()?;
    }
    let dst = dir.join(name);
    kernel.rename(&tmp, &dst).ctx("renaming into place", &dst)?;
    sync_dir(kernel, dir)
}
