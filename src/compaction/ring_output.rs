//! Compaction outputs written through io_uring (the `uring` and `resystance` executors).
//!
//! Output blocks go out with `IORING_OP_WRITE_FIXED` straight from the region they were
//! encoded in — the compaction program's mmapped `cj_output` map in `resystance` mode, or a
//! registered staging copy of the twin's output in `uring` mode — one SQE per run of
//! consecutive blocks of one file, all of a drain submitted and awaited with one
//! `io_uring_enter` (the program overwrites the region on its next run). A finished table's
//! tail (index, properties, metaindex, footer) is written from a staging region with
//! `IORING_OP_WRITE` linked to its `IORING_OP_FSYNC` (`IORING_FSYNC_DATASYNC`), and neither is
//! awaited until the job ends: a table's sync runs while the program merges the next table.
//! The job's last submission adds the directory's `fsync` and waits for everything; only then
//! are the tables handed to the table cache and the job reported done, so a job that returns
//! has exactly the durability `baseline`'s synchronous `fdatasync`s and `fsync` give.
//!
//! Short writes go on where they stopped (a short tail write re-links a new sync after its
//! rest); the first failure fails the job after everything in flight has completed, and the
//! job's files are removed, as with [`crate::compaction::output::OutputFiles`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use resystance_programs::abi::{Record, BLOCK_TRAILER_BYTES, KEY_BYTES_MAX, RECORD_STARTS_FILE};
use resystance_programs::driver::{BlockSink, BoxError, OutputBlocks};
use resystance_traces::{
    Cqe, Errno, Fd, Kernel, KernelError, MemId, OpenFlags, RingId, Sqe, SqeFile, SqeOp,
    SyscallKind, UringParams,
};

use crate::coding::decode_varint32;
use crate::db_dir::DbDir;
use crate::error::{Error, Result};
use crate::file::OpenFile;
use crate::filename::table_path;
use crate::key;
use crate::sst::{DataBlockMeta, Table, TableBuilder, TableOptions, TableSummary, TableTail};
use crate::version::{remove_file, FileMeta};

/// Bytes of the staging region table tails are written from. A tail that does not fit goes
/// out with one `pwrite` (a table of ~30,000 4 KiB blocks has a 1 MiB index).
pub const TAIL_STAGING_BYTES: usize = 1 << 20;

/// Bytes read to find a block's first key: its three varint headers and a 16-byte user key
/// with its 8-byte trailer fit; longer keys take a second read.
const FIRST_KEY_PEEK_BYTES: usize = 64;

fn ring_err(what: &'static str) -> impl FnOnce(KernelError) -> Error {
    move |e| Error::Program(format!("io_uring for compaction output: {what}: {e}"))
}

/// The write side of the io_uring executors: a ring whose registered buffer 0 is the region
/// blocks are written from, and a staging region for table tails. Set up by a database's
/// first compaction and kept for the next ones (closed, and the regions freed, when dropped).
pub struct WriteRing {
    kernel: Arc<dyn Kernel>,
    /// Submission-queue entries of each ring: the most SQEs in flight on it.
    depth: u32,
    /// Data blocks: every submission awaited in full (the region is reused at once).
    ring: RingId,
    /// Table tails and syncs, the directory's sync: submitted as tables finish, awaited in
    /// full when the job ends. Apart from the data ring so that no wait for one kind can be
    /// woken by the other's completions: every wait is for everything its ring has in
    /// flight, so the number of `io_uring_enter` calls does not depend on timing.
    syncs: RingId,
    /// Registered buffer 0.
    blocks: MemId,
    /// Whether `blocks` is this ring's own staging region (freed with it) rather than the
    /// compaction program's output map.
    owns_blocks: bool,
    /// Where table tails are copied to be written from.
    tails: MemId,
}

impl std::fmt::Debug for WriteRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteRing")
            .field("ring", &self.ring)
            .field("blocks", &self.blocks)
            .finish_non_exhaustive()
    }
}

impl WriteRing {
    /// A ring writing blocks from `blocks` (the program's output region), or, when `None`,
    /// from a staging region of `staging_bytes` that sinks copy host output into.
    pub fn open(
        kernel: &Arc<dyn Kernel>,
        blocks: Option<MemId>,
        staging_bytes: usize,
        depth: u32,
        sqpoll: bool,
    ) -> Result<WriteRing> {
        // A finished table queues its tail write and sync together.
        assert!(
            depth >= 2,
            "a write ring needs room for a tail and its sync"
        );
        let ring = kernel
            .uring_setup(&UringParams {
                sq_entries: depth,
                sqpoll,
                ..UringParams::default()
            })
            .map_err(ring_err("setup"))?;
        // From here on, dropping `partial` releases whatever was set up.
        let mut partial = WriteRing {
            kernel: Arc::clone(kernel),
            depth,
            ring,
            syncs: RingId(u32::MAX),
            blocks: MemId(u32::MAX),
            owns_blocks: false,
            tails: MemId(u32::MAX),
        };
        partial.syncs = kernel
            .uring_setup(&UringParams {
                sq_entries: depth,
                sqpoll,
                ..UringParams::default()
            })
            .map_err(ring_err("setup"))?;
        partial.tails = kernel
            .mem_alloc(TAIL_STAGING_BYTES)
            .map_err(ring_err("tail staging region"))?;
        partial.blocks = match blocks {
            Some(region) => region,
            None => {
                let staging = kernel
                    .mem_alloc(staging_bytes)
                    .map_err(ring_err("block staging region"))?;
                partial.owns_blocks = true;
                staging
            }
        };
        kernel
            .uring_register_buffers(ring, &[partial.blocks])
            .map_err(ring_err("registering the block region"))?;
        Ok(partial)
    }

    /// Makes later calls go through `kernel`, another view of the same kernel (a compaction
    /// job's accounted view), so each job counts its own calls.
    pub fn rebind(&mut self, kernel: Arc<dyn Kernel>) {
        self.kernel = kernel;
    }
}

impl Drop for WriteRing {
    fn drop(&mut self) {
        // Closing drains whatever is in flight before the regions may be freed.
        let _ = self.kernel.uring_close(self.ring);
        if self.syncs.0 != u32::MAX {
            let _ = self.kernel.uring_close(self.syncs);
        }
        if self.tails.0 != u32::MAX {
            let _ = self.kernel.mem_free(self.tails);
        }
        if self.owns_blocks {
            let _ = self.kernel.mem_free(self.blocks);
        }
    }
}

/// What an SQE in flight is for.
#[derive(Clone, Copy, Debug)]
enum OpKind {
    /// Data blocks from the block region.
    Data,
    /// A table's tail, linked to the sync with this `user_data`.
    Tail { sync: u64 },
    /// A table's `fdatasync`.
    Sync,
    /// The directory's `fsync`.
    DirSync,
}

#[derive(Clone, Debug)]
struct Op {
    kind: OpKind,
    op: SqeOp,
    /// The file, for errors.
    path: PathBuf,
}

/// One ring's SQEs in flight (queued or submitted, not yet completed), by `user_data`.
#[derive(Debug)]
struct Queue {
    ring: RingId,
    inflight: BTreeMap<u64, Op>,
}

/// The table being written.
struct RingFile {
    number: u64,
    path: PathBuf,
    file: OpenFile,
    /// Data blocks are placed (written by the sink); the builder keeps the index and
    /// properties and writes the tail into its `Vec`.
    builder: TableBuilder<Vec<u8>>,
    smallest_seq: u64,
    largest_seq: u64,
}

/// A table whose last writes and sync are in flight.
struct Finished {
    number: u64,
    file: OpenFile,
    summary: TableSummary,
    tail: TableTail,
    smallest_seq: u64,
    largest_seq: u64,
}

/// Output blocks into new tables through a [`WriteRing`]: a new file at every record marked
/// as starting one.
pub struct RingSink<'a> {
    kernel: Arc<dyn Kernel>,
    ring: &'a WriteRing,
    dir: &'a DbDir,
    new_file_number: &'a (dyn Fn() -> u64 + Sync),
    table_options: TableOptions,
    current: Option<RingFile>,
    finished: Vec<Finished>,
    /// Paths created so far, to remove if the job fails.
    created: Vec<PathBuf>,
    /// Numbers handed to the table cache, to drop if the job fails.
    adopted: Vec<u64>,
    /// The data ring's SQEs.
    data: Queue,
    /// The sync ring's SQEs.
    syncs: Queue,
    /// Syncs whose linked tail write failed or came back short: their `-ECANCELED` is
    /// expected (a new sync follows the rest of a short tail).
    cancelled: BTreeSet<u64>,
    next_user_data: u64,
    /// Next free byte of the tail staging region.
    tail_cursor: usize,
    /// The first failure: the job fails with it once nothing is in flight.
    failed: Option<Error>,
    cqes: Vec<Cqe>,
    peek: Vec<u8>,
}

impl std::fmt::Debug for RingSink<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingSink")
            .field("data", &self.data.inflight.len())
            .field("syncs", &self.syncs.inflight.len())
            .field("finished", &self.finished.len())
            .finish_non_exhaustive()
    }
}

/// Which of the sink's rings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Which {
    Data,
    Syncs,
}

impl<'a> RingSink<'a> {
    /// Outputs in `dir`, numbered by `new_file_number`, written through `ring` with `kernel`
    /// (the job's view of the ring's kernel).
    pub fn new(
        kernel: Arc<dyn Kernel>,
        ring: &'a WriteRing,
        dir: &'a DbDir,
        new_file_number: &'a (dyn Fn() -> u64 + Sync),
        table_options: TableOptions,
    ) -> Self {
        RingSink {
            kernel,
            ring,
            dir,
            new_file_number,
            table_options,
            current: None,
            finished: Vec::new(),
            created: Vec::new(),
            adopted: Vec::new(),
            data: Queue {
                ring: ring.ring,
                inflight: BTreeMap::new(),
            },
            syncs: Queue {
                ring: ring.syncs,
                inflight: BTreeMap::new(),
            },
            cancelled: BTreeSet::new(),
            next_user_data: 0,
            tail_cursor: 0,
            failed: None,
            cqes: Vec::with_capacity(2 * ring.depth as usize),
            peek: vec![0; 15 + KEY_BYTES_MAX],
        }
    }

    fn queue_of(&mut self, which: Which) -> &mut Queue {
        match which {
            Which::Data => &mut self.data,
            Which::Syncs => &mut self.syncs,
        }
    }

    /// Queues `op` on ring `which`, linked to the next SQE when `link`; returns its
    /// `user_data`. The caller made room ([`RingSink::make_room`]).
    fn queue(
        &mut self,
        which: Which,
        kind: OpKind,
        op: SqeOp,
        path: PathBuf,
        link: bool,
    ) -> Result<u64> {
        let user_data = self.next_user_data;
        self.next_user_data += 1;
        let sqe = Sqe {
            op,
            user_data,
            link,
            drain: false,
        };
        let kernel = Arc::clone(&self.kernel);
        let q = self.queue_of(which);
        kernel
            .uring_queue(q.ring, &sqe)
            .map_err(ring_err("queue"))?;
        q.inflight.insert(user_data, Op { kind, op, path });
        Ok(user_data)
    }

    /// Makes room for `n` more SQEs on ring `which`: waits for all it has in flight when
    /// they would not fit.
    fn make_room(&mut self, which: Which, n: usize) -> Result<()> {
        let depth = self.ring.depth as usize;
        assert!(n <= depth, "{n} SQEs at once on a ring of {depth}");
        if self.queue_of(which).inflight.len() + n > depth {
            self.wait_all(which)?;
        }
        Ok(())
    }

    /// Submits what ring `which` has queued, without waiting.
    fn submit(&mut self, which: Which) -> Result<()> {
        let ring = self.queue_of(which).ring;
        self.kernel
            .uring_submit_and_wait(ring, 0)
            .map_err(ring_err("submit"))?;
        Ok(())
    }

    /// Submits what ring `which` has queued and waits until nothing is in flight on it
    /// (short writes go on in further rounds). Each `io_uring_enter` waits for every SQE in
    /// flight, so how many it takes does not depend on when they complete.
    fn wait_all(&mut self, which: Which) -> Result<()> {
        loop {
            self.reap_ready(which)?;
            let q = self.queue_of(which);
            let n = q.inflight.len();
            if n == 0 {
                return Ok(());
            }
            let ring = q.ring;
            self.kernel
                .uring_submit_and_wait(ring, u32::try_from(n).expect("at most twice the depth"))
                .map_err(ring_err("submit"))?;
        }
    }

    /// Reaps the completions ring `which` already has and handles them.
    fn reap_ready(&mut self, which: Which) -> Result<()> {
        loop {
            let q = self.queue_of(which);
            let (ring, max) = (q.ring, q.inflight.len().max(1));
            let mut cqes = std::mem::take(&mut self.cqes);
            cqes.clear();
            let got = self
                .kernel
                .uring_reap(ring, &mut cqes, max)
                .map_err(ring_err("reap"));
            let result = got.and_then(|got| {
                for cqe in &cqes[..got.min(cqes.len())] {
                    self.complete(which, cqe)?;
                }
                Ok(got)
            });
            self.cqes = cqes;
            if result? == 0 {
                return Ok(());
            }
        }
    }

    fn fail(&mut self, e: Error) {
        if self.failed.is_none() {
            self.failed = Some(e);
        }
    }

    fn errno_error(what: &'static str, path: PathBuf, res: i32) -> Error {
        Error::Kernel {
            op: what,
            path,
            source: KernelError::Errno {
                call: SyscallKind::IoUringEnter,
                errno: Errno(-res),
            },
        }
    }

    /// Handles one completion of ring `which`: short writes go on where they stopped.
    fn complete(&mut self, which: Which, cqe: &Cqe) -> Result<()> {
        let Some(op) = self.queue_of(which).inflight.remove(&cqe.user_data) else {
            return Err(Error::Program(format!(
                "io_uring for compaction output: a completion for unknown SQE {}",
                cqe.user_data
            )));
        };
        let res = cqe.res;
        match op.kind {
            OpKind::Sync | OpKind::DirSync => {
                if self.cancelled.remove(&cqe.user_data) && res == -Errno::ECANCELED.0 {
                    return Ok(());
                }
                if res < 0 {
                    let what = if matches!(op.kind, OpKind::Sync) {
                        "fdatasync of a compaction output through io_uring"
                    } else {
                        "fsync of directory through io_uring"
                    };
                    self.fail(Self::errno_error(what, op.path, res));
                }
                Ok(())
            }
            OpKind::Data | OpKind::Tail { .. } => {
                let (len, rest) = advance(&op.op, res);
                if let OpKind::Tail { sync } = op.kind {
                    if res < 0 || rest.is_some() {
                        // The linked sync is cancelled; the rest of a short tail gets a new one.
                        self.cancelled.insert(sync);
                    }
                }
                if res < 0 {
                    self.fail(Self::errno_error(
                        "writing compaction output through io_uring",
                        op.path,
                        res,
                    ));
                    return Ok(());
                }
                if res == 0 && len > 0 {
                    self.fail(Error::Program(format!(
                        "{}: an io_uring write of {len} bytes wrote nothing",
                        op.path.display()
                    )));
                    return Ok(());
                }
                let Some(rest) = rest else {
                    return Ok(());
                };
                if self.failed.is_some() {
                    return Ok(());
                }
                // At most one SQE completed for the one or two queued here: the ring's
                // in-flight bound holds.
                match op.kind {
                    OpKind::Tail { .. } => {
                        let fd = op_fd(&rest);
                        let sync_id = self.next_user_data + 1;
                        self.queue(
                            which,
                            OpKind::Tail { sync: sync_id },
                            rest,
                            op.path.clone(),
                            true,
                        )?;
                        let sync = SqeOp::Fsync {
                            file: SqeFile::Fd(fd),
                            datasync: true,
                        };
                        let id = self.queue(which, OpKind::Sync, sync, op.path, false)?;
                        debug_assert_eq!(id, sync_id);
                    }
                    _ => {
                        self.queue(which, OpKind::Data, rest, op.path, false)?;
                    }
                }
                Ok(())
            }
        }
    }

    /// The first key of the block `rec` describes, from `output`.
    fn first_key(&mut self, output: OutputBlocks<'_>, rec: &Record) -> Result<Vec<u8>> {
        let size = rec.size as usize + BLOCK_TRAILER_BYTES;
        let bad = || Error::Program("an output block's first entry is malformed".into());
        match output {
            OutputBlocks::Host(bytes) => {
                let from = rec.offset as usize;
                first_key_of(&bytes[from..from + size])
                    .map(<[u8]>::to_vec)
                    .ok_or_else(bad)
            }
            OutputBlocks::Region(region) => {
                let mut want = FIRST_KEY_PEEK_BYTES.min(size);
                loop {
                    self.kernel
                        .mem_read(MemId(region), rec.offset as usize, &mut self.peek[..want])
                        .map_err(ring_err("reading an output block"))?;
                    if let Some(key) = first_key_of(&self.peek[..want]) {
                        return Ok(key.to_vec());
                    }
                    let most = self.peek.len().min(size);
                    if want == most {
                        return Err(bad());
                    }
                    want = most;
                }
            }
        }
    }

    /// The file being written, created first if none is open.
    fn current_or_create(&mut self) -> Result<&mut RingFile> {
        if self.current.is_none() {
            let number = (self.new_file_number)();
            let path = table_path(self.dir.path(), number);
            self.created.push(path.clone());
            // Readable too: the finished table is read through this same descriptor.
            let file = OpenFile::open(&self.kernel, &path, OpenFlags::CREATE_NEW_READ_WRITE)?;
            self.current = Some(RingFile {
                number,
                path,
                file,
                builder: TableBuilder::new(self.table_options.clone(), Vec::new()),
                smallest_seq: u64::MAX,
                largest_seq: 0,
            });
        }
        Ok(self.current.as_mut().expect("just created"))
    }

    /// Finishes the open file, if any: its tail is written and the file synced through the
    /// sync ring, linked, submitted at once and awaited when the job ends.
    fn finish_current(&mut self) -> Result<()> {
        match self.current.take() {
            Some(c) => self.finish_file(c),
            None => Ok(()),
        }
    }

    /// Finishes `c`, every data block of which has been written.
    fn finish_file(&mut self, c: RingFile) -> Result<()> {
        let (_, summary, tail) = c.builder.finish_keeping_tail()?;
        assert!(
            summary.num_entries > 0,
            "outputs are only started with an entry"
        );
        let fd = c.file.fd();
        let sync = SqeOp::Fsync {
            file: SqeFile::Fd(fd),
            datasync: true,
        };
        let len = tail.bytes.len();
        if len > TAIL_STAGING_BYTES {
            // Too big to stage: one pwrite, then the sync through the ring.
            c.file.write_all_at(&tail.bytes, tail.offset)?;
            self.make_room(Which::Syncs, 1)?;
            self.queue(Which::Syncs, OpKind::Sync, sync, c.path.clone(), false)?;
        } else {
            self.make_room(Which::Syncs, 2)?;
            if self.tail_cursor + len > TAIL_STAGING_BYTES {
                // Reuse the staging region once no tail is being written from it.
                self.wait_all(Which::Syncs)?;
                self.tail_cursor = 0;
            }
            let at = self.tail_cursor;
            self.kernel
                .mem_write(self.ring.tails, at, &tail.bytes)
                .map_err(ring_err("staging a table tail"))?;
            self.tail_cursor += len;
            let write = SqeOp::Write {
                file: SqeFile::Fd(fd),
                mem: self.ring.tails,
                mem_offset: at,
                len: u32::try_from(len).expect("at most TAIL_STAGING_BYTES"),
                offset: tail.offset,
            };
            let sync_id = self.next_user_data + 1;
            self.queue(
                Which::Syncs,
                OpKind::Tail { sync: sync_id },
                write,
                c.path.clone(),
                true,
            )?;
            let id = self.queue(Which::Syncs, OpKind::Sync, sync, c.path.clone(), false)?;
            debug_assert_eq!(id, sync_id);
        }
        self.submit(Which::Syncs)?;
        self.finished.push(Finished {
            number: c.number,
            file: c.file,
            summary,
            tail,
            smallest_seq: c.smallest_seq,
            largest_seq: c.largest_seq,
        });
        Ok(())
    }

    fn drain_blocks(&mut self, output: OutputBlocks<'_>, records: &[Record]) -> Result<()> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let Some(last) = records.last() else {
            return Ok(());
        };
        let end = last.offset as usize + last.size as usize + BLOCK_TRAILER_BYTES;
        let region = self.ring.blocks;
        match output {
            OutputBlocks::Host(bytes) => {
                if !self.ring.owns_blocks {
                    return Err(Error::Program(
                        "io_uring for compaction output: host blocks but no staging region".into(),
                    ));
                }
                self.kernel
                    .mem_write(region, 0, &bytes[..end])
                    .map_err(ring_err("staging output blocks"))?;
            }
            OutputBlocks::Region(r) if r == region.0 => {}
            OutputBlocks::Region(r) => {
                return Err(Error::Program(format!(
                    "io_uring for compaction output: blocks in region {r}, the ring writes from {}",
                    region.0
                )))
            }
        }
        // Consecutive blocks of one file: (fd, path, region offset, bytes, file offset).
        let mut segments: Vec<(Fd, PathBuf, usize, usize, u64)> = Vec::new();
        // Files that ended in this drain: finished (tail, sync) once their blocks are written.
        let mut ended: Vec<RingFile> = Vec::new();
        for rec in records {
            if rec.flags & RECORD_STARTS_FILE != 0 {
                ended.extend(self.current.take());
            } else if self.current.is_none() {
                return Err(Error::Program(
                    "the first output block does not start a file".into(),
                ));
            }
            let first_key = self.first_key(output, rec)?;
            let size = rec.size as usize + BLOCK_TRAILER_BYTES;
            let c = self.current_or_create()?;
            let offset = c.builder.place_data_block(
                size,
                &DataBlockMeta {
                    first_key: &first_key,
                    last_key: rec.last_key(),
                    entries: u64::from(rec.entries),
                    deletions: u64::from(rec.deletions),
                    raw_key_bytes: rec.raw_key_bytes,
                    raw_value_bytes: rec.raw_value_bytes,
                },
            )?;
            c.smallest_seq = c.smallest_seq.min(rec.seq_min);
            c.largest_seq = c.largest_seq.max(rec.seq_max);
            let fd = c.file.fd();
            let at = rec.offset as usize;
            match segments.last_mut() {
                Some((sfd, _, sat, slen, soff))
                    if *sfd == fd && *sat + *slen == at && *soff + *slen as u64 == offset =>
                {
                    *slen += size;
                }
                _ => segments.push((fd, c.path.clone(), at, size, offset)),
            }
        }
        for (fd, path, at, len, offset) in segments {
            self.make_room(Which::Data, 1)?;
            let write = SqeOp::WriteFixed {
                file: SqeFile::Fd(fd),
                buf_index: 0,
                buf_offset: at,
                len: u32::try_from(len).expect("a drain fits the output region"),
                offset,
            };
            self.queue(Which::Data, OpKind::Data, write, path, false)?;
        }
        // The program overwrites the region on its next run: every block write must be done
        // (and a file's sync may only start after its last block is written).
        self.wait_all(Which::Data)?;
        if self.failed.is_none() {
            for c in ended {
                self.finish_file(c)?;
            }
        }
        match &self.failed {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// Finishes the last file, syncs the directory through the ring and waits for every
    /// write and sync: the outputs are durable and handed, open, to the table cache.
    pub fn finish(mut self) -> Result<Vec<FileMeta>> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        self.finish_current()?;
        if !self.finished.is_empty() {
            self.make_room(Which::Syncs, 1)?;
            let sync = SqeOp::Fsync {
                file: SqeFile::Fd(self.dir.fd()),
                datasync: false,
            };
            let path = self.dir.path().to_path_buf();
            self.queue(Which::Syncs, OpKind::DirSync, sync, path, false)?;
        }
        self.wait_all(Which::Syncs)?;
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        let mut metas = Vec::with_capacity(self.finished.len());
        for f in std::mem::take(&mut self.finished) {
            let table =
                Table::from_tail(self.kernel.as_ref(), f.file, f.summary.file_size, f.tail)?;
            assert_eq!(
                table.properties().num_entries,
                f.summary.num_entries,
                "a table reads back what its builder counted"
            );
            self.dir.tables().adopt(f.number, Arc::new(table));
            self.adopted.push(f.number);
            metas.push(FileMeta {
                number: f.number,
                file_size: f.summary.file_size,
                smallest: f.summary.smallest_key,
                largest: f.summary.largest_key,
                num_entries: f.summary.num_entries,
                smallest_seq: f.smallest_seq,
                largest_seq: f.largest_seq,
            });
        }
        self.created.clear();
        self.adopted.clear();
        Ok(metas)
    }
}

impl BlockSink for RingSink<'_> {
    fn block(&mut self, _block: &[u8], _record: &Record) -> std::result::Result<(), BoxError> {
        Err("the io_uring sink takes whole drains".into())
    }

    fn drain(
        &mut self,
        output: OutputBlocks<'_>,
        records: &[Record],
    ) -> std::result::Result<(), BoxError> {
        self.drain_blocks(output, records)
            .map_err(|e| Box::new(e) as BoxError)
    }
}

impl Drop for RingSink<'_> {
    fn drop(&mut self) {
        // Reached with files still listed only when the job failed. Nothing may stay in
        // flight on the ring the next job uses (and the descriptors close below).
        for which in [Which::Data, Which::Syncs] {
            if !self.queue_of(which).inflight.is_empty() && self.wait_all(which).is_err() {
                // The ring itself failed: it is closed (draining) with the executor.
                self.queue_of(which).inflight.clear();
            }
        }
        self.current = None;
        self.finished.clear();
        for &number in &self.adopted {
            self.dir.tables().evict(number);
        }
        for path in &self.created {
            let _ = remove_file(self.kernel.as_ref(), path);
        }
    }
}

/// A write's length, and the rest of it to write after a short completion of `res` bytes
/// (`None` when it completed in full or failed).
fn advance(op: &SqeOp, res: i32) -> (u32, Option<SqeOp>) {
    let Ok(done) = u32::try_from(res) else {
        return (op_len(op), None);
    };
    let mut rest = *op;
    // Where in memory, how much and where in the file: the same fields of either write.
    let (mem_at, len, offset) = match &mut rest {
        SqeOp::Write {
            mem_offset,
            len,
            offset,
            ..
        } => (mem_offset, len, offset),
        SqeOp::WriteFixed {
            buf_offset,
            len,
            offset,
            ..
        } => (buf_offset, len, offset),
        _ => return (0, None),
    };
    let full = *len;
    if done == 0 || done >= full {
        return (full, None);
    }
    *mem_at += done as usize;
    *len -= done;
    *offset += u64::from(done);
    (full, Some(rest))
}

fn op_len(op: &SqeOp) -> u32 {
    match *op {
        SqeOp::Write { len, .. } | SqeOp::WriteFixed { len, .. } => len,
        _ => 0,
    }
}

fn op_fd(op: &SqeOp) -> Fd {
    match *op {
        SqeOp::Write {
            file: SqeFile::Fd(fd),
            ..
        }
        | SqeOp::WriteFixed {
            file: SqeFile::Fd(fd),
            ..
        } => fd,
        _ => unreachable!("the sink writes through plain descriptors"),
    }
}

/// The first key of a block: its first entry shares nothing with a previous key.
pub(crate) fn first_key_of(block: &[u8]) -> Option<&[u8]> {
    let (shared, a) = decode_varint32(block)?;
    let (non_shared, b) = decode_varint32(block.get(a..)?)?;
    let (_, c) = decode_varint32(block.get(a + b..)?)?;
    let start = a + b + c;
    let key = block.get(start..start + non_shared as usize)?;
    (shared == 0 && key::parse_internal_key(key).is_some()).then_some(key)
}
