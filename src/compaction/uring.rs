//! The io_uring executors.
//!
//! * `uring`: each window's blocks are read with io_uring (one `io_uring_enter` per window,
//!   whatever its number of blocks and files) into a registered staging buffer and copied into
//!   the twin's window; the merge runs in user space (the twin).
//! * `resystance`: io_uring reads land straight in the compaction program's mmapped
//!   `cj_windows` map (the window pool, one registered buffer; each run's window at its
//!   offset), and the program runs in the kernel over them
//!   (`BPF_PROG_TEST_RUN`); user space only moves windows and has the finished blocks,
//!   index blocks, properties and footers written.
//!
//! Both write their outputs through io_uring too ([`crate::compaction::ring_output`]): blocks
//! with `WRITE_FIXED` from the region they were encoded in (resystance: the program's
//! `cj_output` map), table tails and syncs on a second ring awaited when the job ends. The
//! rings are set up by a database's first compaction and kept for the next ones.

use std::sync::{Arc, Mutex};

use resystance_programs::abi::{
    window_offset, OUTPUT_VALUE_BYTES, POOL_MAP_BYTES, WINDOW_BLOCKS_MAX, WINDOW_BYTES_MIN,
};
use resystance_programs::driver::{BlockSource, BoxError, Machine, Window, WindowFill};
use resystance_traces::{
    Cqe, Errno, Kernel, KernelError, MemId, RingId, Sqe, SqeFile, SqeOp, SyscallKind, UringParams,
};

use crate::compaction::job::{CompactionExecutor, CompactionJob, JobEnv, JobOutput};
use crate::compaction::machines::{KernelMachine, UserTwin};
use crate::compaction::program_io::{
    run_job_into, InputRuns, InputSource, Span, DIRECT_ALIGN_BYTES,
};
use crate::compaction::ring_output::{RingSink, WriteRing};
use crate::error::{Error, Result};
use crate::options::CompactionMode;
use crate::stats::ReadaheadStats;

/// Rounds of SQEs a window's spans may take when reads come back short: far more than any
/// kernel needs, so only a file that keeps shrinking meets it.
const SHORT_READ_ROUNDS_MAX: usize = 64;

fn uring_err(what: &str) -> impl FnOnce(resystance_traces::KernelError) -> Error + '_ {
    move |e| Error::Program(format!("io_uring {what}: {e}"))
}

/// Where a [`UringSource`] reads to.
#[derive(Clone, Copy, Debug)]
enum Target {
    /// The ring's staging buffer, copied into host windows.
    Staging,
    /// The machine's windows region, read into directly.
    Region(MemId),
}

/// The read side of the io_uring executors: a ring whose registered buffer 0 is where input
/// blocks land — the compaction program's window pool, or a staging buffer of one window
/// copied into the twin's windows. Set up by a database's first compaction and kept for the
/// next ones (closed, and the staging buffer freed, when dropped): no job pays for a ring.
pub struct ReadRing {
    kernel: Arc<dyn Kernel>,
    ring: RingId,
    /// Submission-queue entries: reads in flight at once.
    depth: u32,
    target: Target,
    /// The staging buffer (host windows), freed after the ring is closed.
    staging: Option<MemId>,
}

impl std::fmt::Debug for ReadRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadRing")
            .field("ring", &self.ring)
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl ReadRing {
    /// A ring reading into `region` (the window pool), or, when `None`, into a staging
    /// buffer laid out like it.
    pub fn open(
        kernel: &Arc<dyn Kernel>,
        region: Option<MemId>,
        depth: u32,
        sqpoll: bool,
    ) -> Result<Self> {
        assert!(depth > 0, "a ring needs room for a read");
        let ring = kernel
            .uring_setup(&UringParams {
                sq_entries: depth,
                sqpoll,
                ..UringParams::default()
            })
            .map_err(uring_err("setup"))?;
        // From here on, dropping `partial` releases whatever was set up.
        let mut partial = ReadRing {
            kernel: Arc::clone(kernel),
            ring,
            depth,
            target: Target::Staging,
            staging: None,
        };
        let buffer = match region {
            Some(region) => {
                partial.target = Target::Region(region);
                region
            }
            None => {
                // Laid out like the program's pool, every run's window at its place (reads
                // ahead of several runs are in flight at once): the merge's windows are host
                // buffers, filled from here.
                let staging = kernel
                    .mem_alloc(POOL_MAP_BYTES)
                    .map_err(uring_err("staging buffer"))?;
                partial.staging = Some(staging);
                staging
            }
        };
        kernel
            .uring_register_buffers(ring, &[buffer])
            .map_err(uring_err("registering the window buffer"))?;
        Ok(partial)
    }

    /// Makes later calls go through `kernel`, another view of the same kernel (a compaction
    /// job's accounted view), so each job counts its own calls.
    pub fn rebind(&mut self, kernel: Arc<dyn Kernel>) {
        self.kernel = kernel;
    }
}

impl Drop for ReadRing {
    fn drop(&mut self) {
        // Closing drains whatever is in flight before the buffer may be freed.
        let _ = self.kernel.uring_close(self.ring);
        if let Some(staging) = self.staging.take() {
            let _ = self.kernel.mem_free(staging);
        }
    }
}

/// A window's worth of reads, planned for one run: where its blocks go and how far each read
/// has got.
struct Planned {
    spans: Vec<Span>,
    /// The fill, `first` relative to the start of the part of the window it was planned in.
    fill: WindowFill,
    /// Index in the run of the window's first block.
    start: usize,
    /// Where in the window it lies: 0, or half the window when the run reads ahead.
    window_at: usize,
    block_len: Box<[u32; WINDOW_BLOCKS_MAX]>,
    /// Per span: where the last read of it started, and bytes that have arrived.
    asked: Vec<usize>,
    done: Vec<usize>,
    /// Per span: SQEs submitted and not completed (0 or 1).
    in_flight: Vec<u8>,
    /// The first failure a completion reported, kept until the program needs the window.
    failed: Option<Error>,
    /// Read while the program merged the run's previous window (not a run's first window).
    ahead: bool,
}

impl Planned {
    /// Whether every span that has not fully arrived has a read in flight.
    fn all_submitted(&self) -> bool {
        self.spans
            .iter()
            .zip(&self.done)
            .zip(&self.in_flight)
            .all(|((s, &done), &flying)| done >= s.needed || flying > 0)
    }

    fn complete(&self) -> bool {
        self.failed.is_none()
            && self
                .spans
                .iter()
                .zip(&self.done)
                .all(|(s, &d)| d >= s.needed)
    }
}

/// `user_data` of a read: the run, the half of its window (0, or 1 when it reads ahead) and
/// the span of the window planned there.
fn read_tag(run: usize, half: usize, span: usize) -> u64 {
    debug_assert!(half < 2 && span < 1 << 31);
    ((run as u64) << 32) | ((half as u64) << 31) | span as u64
}

fn untag(user_data: u64) -> (usize, usize, usize) {
    (
        usize::try_from(user_data >> 32).expect("a run"),
        usize::from(user_data & (1 << 31) != 0),
        usize::try_from(user_data & 0x7fff_ffff).expect("a span"),
    )
}

/// A job's input blocks read through a [`ReadRing`], a window per submission, reading ahead:
/// when the program takes a run's window, the same `io_uring_enter` submits the read of the
/// run's next blocks into the other half of its window, which arrive while the program merges
/// (with `O_DIRECT`, the device works while the CPU does). Read-ahead windows are half the
/// job's `window_bytes` (the pool's 32 MiB holds twice the windows ABI 4's 16 MiB did, so a
/// half is what a whole window was, up to 4 MiB); windows too small to halve are read whole
/// and not ahead.
///
/// Every enter waits for everything submitted before it (the read-ahead being
/// `IOSQE_IO_DRAIN`, none of its completions can come first), so how many enters a job takes
/// does not depend on when completions arrive — one for the job's first windows, one per
/// window that submits a read ahead, one more for each read that came back short — except
/// where a window has nothing to submit: then an enter is made only if its reads have not
/// arrived, and counted ([`ReadaheadStats::wait_enters`]).
pub struct UringSource<'r> {
    kernel: Arc<dyn Kernel>,
    inputs: InputRuns,
    ring: &'r ReadRing,
    /// Per run and half of its window: the window planned there (being read, or read and
    /// not yet taken by the program).
    planned: Vec<[Option<Planned>; 2]>,
    /// Per run: the halves holding planned windows, in the order the program takes them.
    order: Vec<std::collections::VecDeque<usize>>,
    /// Whether the job's first windows were planned (by the first fill, for every run).
    started: bool,
    /// Whether runs read ahead ([`crate::options::Options::uring_readahead`]).
    readahead_on: bool,
    /// Bytes a planned window may take: half the job's `window_bytes`, or all of it when
    /// that is too small to halve (then no run reads ahead).
    part_bytes: usize,
    /// SQEs submitted (or queued) and not yet reaped: a failed job waits for them, so that
    /// nothing reads into the windows after it (the ring serves the next job).
    inflight: usize,
    /// SQEs queued since the last `io_uring_enter`.
    queued: usize,
    cqes: Vec<Cqe>,
    readahead: ReadaheadStats,
}

impl std::fmt::Debug for UringSource<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringSource")
            .field("ring", &self.ring)
            .field("inflight", &self.inflight)
            .finish_non_exhaustive()
    }
}

impl<'r> UringSource<'r> {
    fn open(job: &CompactionJob, env: &JobEnv<'_>, ring: &'r ReadRing) -> Result<Self> {
        let runs = job.runs.len();
        Ok(UringSource {
            kernel: Arc::clone(&env.kernel),
            inputs: InputRuns::open(job, env)?,
            ring,
            planned: (0..runs).map(|_| [None, None]).collect(),
            order: vec![std::collections::VecDeque::new(); runs],
            started: false,
            readahead_on: env.uring_readahead,
            part_bytes: 0,
            inflight: 0,
            queued: 0,
            cqes: Vec::with_capacity(ring.depth as usize),
            readahead: ReadaheadStats::default(),
        })
    }

    /// Plans run `run`'s next window into `bytes` bytes at window offset `window_at`.
    fn plan(&mut self, run: usize, window_at: usize, bytes: usize, ahead: bool) -> Result<Planned> {
        let mut block_len = Box::new([0u32; WINDOW_BLOCKS_MAX]);
        let (spans, fill, start) =
            self.inputs
                .plan_next(run, WINDOW_BLOCKS_MAX, bytes, &mut block_len)?;
        let n = spans.len();
        Ok(Planned {
            spans,
            fill,
            start,
            window_at,
            block_len,
            asked: vec![0; n],
            done: vec![0; n],
            in_flight: vec![0; n],
            failed: None,
            ahead,
        })
    }

    /// Reads of every planned window not yet taken by the program, whether queued, in flight
    /// or done: a bound on what is in flight that depends only on the plans (so whether a
    /// read ahead fits does not depend on how fast earlier reads completed).
    fn outstanding_reads(&self) -> usize {
        self.planned
            .iter()
            .flatten()
            .flatten()
            .map(|p| p.spans.len())
            .sum()
    }

    fn spans_of(&self, run: usize, half: usize) -> usize {
        self.planned[run][half]
            .as_ref()
            .map_or(0, |p| p.spans.len())
    }

    /// Reads a newly planned window may queue: the ring's depth less the outstanding ones.
    fn room(&self) -> usize {
        (self.ring.depth as usize).saturating_sub(self.outstanding_reads())
    }

    /// Plans run `run`'s next window into half `half` of its window (at `window_base` in the
    /// ring's buffer) and queues its reads if the ring has room for all of them (`drain`:
    /// the first one drained); otherwise they are queued when the program needs the window.
    fn plan_and_queue(
        &mut self,
        run: usize,
        half: usize,
        window_base: usize,
        ahead: bool,
        drain: bool,
    ) -> Result<()> {
        let planned = self.plan(run, half * self.part_bytes, self.part_bytes, ahead)?;
        let reads = planned.spans.len();
        let room = self.room();
        self.planned[run][half] = Some(planned);
        self.order[run].push_back(half);
        if reads <= room {
            self.queue_reads(run, half, window_base, drain, room)?;
        }
        Ok(())
    }

    /// The job's first fill: every run's first window planned and queued, then every run's
    /// second window queued to be read ahead behind them, in one submission that waits for
    /// the first windows only (the read-ahead drained behind them).
    fn start(&mut self, window_bytes: usize, base_of: &dyn Fn(usize) -> usize) -> Result<()> {
        self.started = true;
        self.part_bytes = if self.readahead_on && window_bytes / 2 >= WINDOW_BYTES_MIN {
            window_bytes / 2
        } else {
            window_bytes
        };
        let halves = self.part_bytes < window_bytes;
        let runs = self.planned.len();
        for run in 0..runs {
            self.plan_and_queue(run, 0, base_of(run), false, false)?;
        }
        let first_windows = self.inflight;
        if halves {
            let mut drain = true;
            for run in 0..runs {
                let more = self.planned[run][0].as_ref().expect("planned").fill.more;
                if more {
                    let before = self.inflight;
                    self.plan_and_queue(run, 1, base_of(run), true, drain)?;
                    drain &= self.inflight == before;
                }
            }
        }
        self.submit_and_wait(first_windows)
    }

    /// Queues a read of what is missing of every span of the window planned in half `half` of
    /// run `run`'s (at most `room` SQEs, the first one drained when `drain`); returns how many
    /// it queued.
    fn queue_reads(
        &mut self,
        run: usize,
        half: usize,
        window_base: usize,
        drain: bool,
        room: usize,
    ) -> Result<usize> {
        let align = if self.inputs.direct() {
            DIRECT_ALIGN_BYTES
        } else {
            1
        };
        let ring = self.ring.ring;
        let kernel = Arc::clone(&self.kernel);
        let planned = self.planned[run][half].as_mut().expect("a planned window");
        let mut queued = 0;
        for i in 0..planned.spans.len() {
            if queued == room {
                break;
            }
            let span = &planned.spans[i];
            if planned.in_flight[i] > 0 || planned.done[i] >= span.needed {
                continue;
            }
            // A short read goes on where it stopped: a direct one from the aligned offset at
            // or below it (O_DIRECT needs aligned offsets).
            let from = planned.done[i] - planned.done[i] % align;
            planned.asked[i] = from;
            let read = SqeOp::ReadFixed {
                file: SqeFile::Fd(span.fd),
                buf_index: 0,
                buf_offset: window_base + planned.window_at + span.window_at + from,
                len: u32::try_from(span.len - from).expect("a span fits a window"),
                offset: span.offset + from as u64,
            };
            let mut sqe = Sqe::new(read, read_tag(run, half, i));
            if drain && queued == 0 {
                sqe = sqe.drained();
            }
            kernel.uring_queue(ring, &sqe).map_err(uring_err("queue"))?;
            planned.in_flight[i] = 1;
            self.inflight += 1;
            self.queued += 1;
            queued += 1;
        }
        Ok(queued)
    }

    /// Submits what is queued and waits until the first `wait_for` of the SQEs in flight
    /// (everything submitted before the read-ahead just queued, if any) have completed, in
    /// one `io_uring_enter`; takes every completion there is.
    fn submit_and_wait(&mut self, wait_for: usize) -> Result<()> {
        let ring = self.ring.ring;
        self.kernel
            .uring_submit_and_wait(ring, u32::try_from(wait_for).expect("at most the depth"))
            .map_err(uring_err("submit"))?;
        self.queued = 0;
        let mut reaped = 0;
        loop {
            self.cqes.clear();
            let got = self
                .kernel
                .uring_reap(ring, &mut self.cqes, self.inflight)
                .map_err(uring_err("reap"))?;
            self.inflight -= got;
            reaped += got;
            let cqes = std::mem::take(&mut self.cqes);
            for cqe in &cqes {
                self.complete(cqe);
            }
            self.cqes = cqes;
            if reaped >= wait_for {
                return Ok(());
            }
            // The kernel woke us with fewer than asked (it should not): wait for the rest.
            self.kernel
                .uring_submit_and_wait(ring, u32::try_from(wait_for - reaped).expect("small"))
                .map_err(uring_err("wait"))?;
        }
    }

    /// Books one completion against its planned window.
    fn complete(&mut self, cqe: &Cqe) {
        let (run, half, i) = untag(cqe.user_data);
        let planned = self.planned[run][half]
            .as_mut()
            .expect("a completion of a planned window");
        planned.in_flight[i] = 0;
        let span = &planned.spans[i];
        match usize::try_from(cqe.res) {
            Err(_) => {
                planned.failed.get_or_insert(Error::Kernel {
                    op: "reading input blocks through io_uring",
                    path: span.table.path().to_path_buf(),
                    source: KernelError::Errno {
                        call: SyscallKind::IoUringEnter,
                        errno: Errno(-cqe.res),
                    },
                });
            }
            Ok(n) if planned.asked[i] + n <= planned.done[i] => {
                planned.failed.get_or_insert(Error::corruption(
                    span.table.path(),
                    span.offset + planned.done[i] as u64,
                    format!(
                        "the table ends inside a block: {} of its {} bytes read",
                        planned.done[i], span.needed
                    ),
                ));
            }
            Ok(n) => planned.done[i] = planned.asked[i] + n,
        }
    }

    /// Reads what is missing of the window planned in half `half` of run `run`'s, in rounds
    /// of at most the ring's depth, each one enter that waits for everything in flight.
    fn finish(&mut self, run: usize, half: usize, window_base: usize) -> Result<()> {
        for round in 0.. {
            let planned = self.planned[run][half].as_ref().expect("a planned window");
            if let Some(e) = &planned.failed {
                return Err(e.clone());
            }
            if planned.complete() {
                return Ok(());
            }
            if round == SHORT_READ_ROUNDS_MAX {
                let span = &planned.spans[0];
                return Err(Error::corruption(
                    span.table.path(),
                    span.offset,
                    format!(
                        "io_uring reads of a window still short after {round} rounds ({} bytes in its first read)",
                        span.len
                    ),
                ));
            }
            // The window is planned: `room` counts its spans already.
            let room = (self.ring.depth as usize)
                .saturating_sub(self.outstanding_reads() - self.spans_of(run, half))
                .max(1);
            self.queue_reads(run, half, window_base, false, room)?;
            self.submit_and_wait(self.inflight)?;
        }
        unreachable!("the loop returns")
    }
}

impl Drop for UringSource<'_> {
    fn drop(&mut self) {
        // A job that failed, or was given up, may leave reads in flight.
        let mut tries = 0;
        while self.inflight > 0 && tries < SHORT_READ_ROUNDS_MAX {
            tries += 1;
            let want = u32::try_from(self.inflight).unwrap_or(u32::MAX);
            if self
                .kernel
                .uring_submit_and_wait(self.ring.ring, want)
                .is_err()
            {
                break;
            }
            self.cqes.clear();
            match self
                .kernel
                .uring_reap(self.ring.ring, &mut self.cqes, self.inflight)
            {
                Ok(n) => self.inflight -= n.min(self.inflight),
                Err(_) => break,
            }
        }
    }
}

impl BlockSource for UringSource<'_> {
    fn fill(
        &mut self,
        run: usize,
        window: Window<'_>,
        block_len: &mut [u32; WINDOW_BLOCKS_MAX],
    ) -> std::result::Result<WindowFill, BoxError> {
        let window_bytes = window.window_bytes();
        // Where the run's window lies in the ring's registered buffer: the program's pool, or
        // the staging buffer laid out like it.
        let base = match (self.ring.target, &window) {
            (
                Target::Region(region),
                Window::Region {
                    region: r, offset, ..
                },
            ) if region.0 == *r => *offset,
            (Target::Staging, Window::Host { .. }) => window_offset(run, window_bytes),
            _ => return Err("the io_uring source was set up for another kind of window".into()),
        };
        if !self.started {
            // Every run's window where the ABI lays the pool out (the program's map, or the
            // staging buffer laid out like it); the window given shows the machine agrees.
            let base_of = |r: usize| window_offset(r, window_bytes);
            if base_of(run) != base {
                return Err("a window outside the pool's layout".into());
            }
            self.start(window_bytes, &base_of)?;
        }
        // The window the program takes now (planned now unless the run reads ahead), and
        // whether the merge must wait for it.
        if self.order[run].is_empty() {
            self.plan_and_queue(run, 0, base, false, false)?;
        }
        let half = self.order[run].pop_front().expect("planned");
        let current = self.planned[run][half].as_ref().expect("planned");
        let complete = current.complete();
        if current.ahead {
            self.readahead.windows += 1;
            let arrived = complete
                || current.all_submitted() && {
                    let cq = self
                        .kernel
                        .uring_cq_state(self.ring.ring)
                        .map_err(uring_err("completion state"))?;
                    !cq.overflow_pending && cq.ready as usize >= self.inflight
                };
            if !arrived {
                self.readahead.late += 1;
            }
        }
        // Wait for everything in flight unless the window is already here.
        let wait_for = if complete { 0 } else { self.inflight };
        // Read the run's following blocks ahead into the other half, behind everything
        // submitted so far, once the program takes a window read ahead (the job's first
        // fill queued each run's second window already).
        let more = current.fill.more;
        let halves = self.part_bytes < window_bytes;
        if halves && more && self.order[run].is_empty() {
            self.plan_and_queue(run, 1 - half, base, true, true)?;
        }
        // With nothing to submit and only reads to wait for, the kernel enters only if they
        // have not all arrived: the count that depends on the device's speed.
        let wait_only = self.queued == 0 && wait_for > 0;
        let before = self.kernel.syscall_counts().get(SyscallKind::IoUringEnter);
        self.submit_and_wait(wait_for)?;
        if wait_only {
            let after = self.kernel.syscall_counts().get(SyscallKind::IoUringEnter);
            self.readahead.wait_enters += after - before;
        }
        self.finish(run, half, base)?;

        let current = self.planned[run][half].take().expect("planned above");
        self.inputs.enter_window(run, current.start);
        let blocks = current.fill.blocks as usize;
        block_len[..blocks].copy_from_slice(&current.block_len[..blocks]);
        let end = current
            .spans
            .iter()
            .map(|s| current.window_at + s.window_at + s.needed)
            .max()
            .unwrap_or(current.window_at);
        if let (Target::Staging, Window::Host { bytes, .. }) = (self.ring.target, window) {
            let staging = self.ring.staging.expect("staging buffer in host mode");
            let from = current.window_at;
            self.kernel
                .mem_read(staging, base + from, &mut bytes[from..end])
                .map_err(uring_err("copying the staging buffer"))?;
        }
        Ok(WindowFill {
            first: current.fill.first + u32::try_from(current.window_at).expect("in a window"),
            ..current.fill
        })
    }
}

impl InputSource for UringSource<'_> {
    fn inputs(&self) -> &InputRuns {
        &self.inputs
    }

    fn as_block_source(&mut self) -> &mut dyn BlockSource {
        self
    }

    fn readahead(&self) -> ReadaheadStats {
        self.readahead
    }
}

/// The rings a database's io_uring compactions share.
#[derive(Debug)]
struct Rings {
    reads: ReadRing,
    writes: WriteRing,
}

impl Rings {
    /// The rings, set up by the first job (`window_region` and `output_region`: the
    /// program's maps, `None` for staging buffers) and rebound to each later job's kernel.
    fn for_job<'s>(
        slot: &'s mut Option<Rings>,
        env: &JobEnv<'_>,
        window_region: Option<MemId>,
        output_region: Option<MemId>,
    ) -> Result<&'s mut Rings> {
        if let Some(rings) = slot {
            rings.reads.rebind(Arc::clone(&env.kernel));
            rings.writes.rebind(Arc::clone(&env.kernel));
        } else {
            let depth = env.uring_queue_depth;
            let reads = ReadRing::open(&env.kernel, window_region, depth, env.uring_sqpoll)?;
            let writes = WriteRing::open(
                &env.kernel,
                output_region,
                OUTPUT_VALUE_BYTES,
                // A finished table queues its tail write and sync together.
                depth.max(2),
                env.uring_sqpoll,
            )?;
            *slot = Some(Rings { reads, writes });
        }
        Ok(slot.as_mut().expect("set up above"))
    }

    fn run(
        &self,
        machine: &mut dyn Machine,
        job: &CompactionJob,
        env: &JobEnv<'_>,
    ) -> Result<JobOutput> {
        let mut source = UringSource::open(job, env, &self.reads)?;
        let sink = RingSink::new(
            Arc::clone(&env.kernel),
            &self.writes,
            env.dir,
            env.new_file_number,
            job.table_options.clone(),
        );
        run_job_into(machine, job, env, &mut source, sink, RingSink::finish)
    }
}

/// io_uring reads and writes, the merge in user space (the twin).
#[derive(Debug, Default)]
pub struct UringExecutor {
    /// Set up by the first job, kept for the next ones: the rings, and the twin (its windows
    /// and output region allocated once).
    state: Mutex<(Option<Rings>, Option<UserTwin>)>,
}

impl CompactionExecutor for UringExecutor {
    fn mode(&self) -> CompactionMode {
        CompactionMode::Uring
    }

    fn prepare(&self, kernel: &Arc<dyn Kernel>) -> Result<()> {
        let ring = kernel.uring_setup(&UringParams::default()).map_err(|e| {
            Error::NotSupported(format!("compaction mode `uring` needs io_uring: {e}"))
        })?;
        kernel.uring_close(ring).map_err(uring_err("close"))
    }

    fn run(&self, job: &CompactionJob, env: &JobEnv<'_>) -> Result<JobOutput> {
        let mut state = self.state.lock().expect("uring executor lock");
        let (rings, twin) = &mut *state;
        let twin = UserTwin::for_job(twin, &env.kernel);
        let result = Rings::for_job(rings, env, None, None)?.run(twin, job, env);
        if result.is_err() {
            // A failed call may have left SQEs queued: the next job starts on fresh rings.
            *rings = None;
        }
        result
    }
}

/// The program loaded once and the rings it reads and writes through.
struct ResystanceState {
    /// Dropped (closed) before the machine's maps they read into and write from.
    rings: Option<Rings>,
    machine: KernelMachine,
}

/// io_uring reads into the program's maps, the merge in the kernel, io_uring writes from its
/// output map.
#[derive(Default)]
pub struct ResystanceExecutor {
    /// Loaded once (maps created, the verifier run), then reused by every job.
    state: Mutex<Option<ResystanceState>>,
}

impl std::fmt::Debug for ResystanceExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResystanceExecutor").finish_non_exhaustive()
    }
}

impl ResystanceExecutor {
    fn load(kernel: &Arc<dyn Kernel>) -> Result<ResystanceState> {
        let machine = KernelMachine::new(Arc::clone(kernel), resystance_programs::abi::RUNS_MAX)
            .map(|m| m.with_direct_windows().with_direct_output())
            .map_err(|e| {
                Error::NotSupported(format!(
                    "compaction mode `resystance` could not load the compaction program: {e}"
                ))
            })?;
        Ok(ResystanceState {
            rings: None,
            machine,
        })
    }
}

impl CompactionExecutor for ResystanceExecutor {
    fn mode(&self) -> CompactionMode {
        CompactionMode::Resystance
    }

    fn prepare(&self, kernel: &Arc<dyn Kernel>) -> Result<()> {
        let mut state = self.state.lock().expect("machine lock");
        if state.is_none() {
            *state = Some(Self::load(kernel)?);
        }
        Ok(())
    }

    fn run(&self, job: &CompactionJob, env: &JobEnv<'_>) -> Result<JobOutput> {
        let mut guard = self.state.lock().expect("machine lock");
        let state = match guard.as_mut() {
            Some(s) => {
                s.machine.rebind(Arc::clone(&env.kernel));
                s
            }
            None => guard.insert(Self::load(&env.kernel)?),
        };
        let windows = state.machine.windows_region();
        let output = state.machine.output_region();
        let rings = Rings::for_job(&mut state.rings, env, Some(windows), Some(output))?;
        let result = rings.run(&mut state.machine, job, env);
        if result.is_err() {
            // A failed call may have left SQEs queued: the next job starts on fresh rings.
            state.rings = None;
        }
        result
    }
}
