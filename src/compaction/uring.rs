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

use resystance_programs::abi::{OUTPUT_VALUE_BYTES, WINDOW_BLOCKS_MAX, WINDOW_BYTES_MAX};
use resystance_programs::driver::{BlockSource, BoxError, Machine, Window, WindowFill};
use resystance_traces::{
    Cqe, Errno, Kernel, KernelError, MemId, RingId, Sqe, SqeFile, SqeOp, SyscallKind, UringParams,
};

use crate::compaction::job::{CompactionExecutor, CompactionJob, JobEnv, JobOutput};
use crate::compaction::machines::{KernelMachine, UserTwin};
use crate::compaction::program_io::{run_job_into, InputRuns, InputSource, DIRECT_ALIGN_BYTES};
use crate::compaction::ring_output::{RingSink, WriteRing};
use crate::error::{Error, Result};
use crate::options::CompactionMode;

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
    /// buffer of the largest window.
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
                // One window of the largest size (a direct read's aligned end stays inside
                // it): the merge's windows are host buffers, filled from here.
                let staging = kernel
                    .mem_alloc(WINDOW_BYTES_MAX)
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

/// A job's input blocks read through a [`ReadRing`]: a window per submission.
pub struct UringSource<'r> {
    kernel: Arc<dyn Kernel>,
    inputs: InputRuns,
    ring: &'r ReadRing,
    /// SQEs queued and not yet reaped: a failed job waits for them, so that nothing reads
    /// into the windows after it (the ring serves the next job).
    inflight: usize,
    cqes: Vec<Cqe>,
}

impl std::fmt::Debug for UringSource<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringSource")
            .field("ring", &self.ring)
            .finish_non_exhaustive()
    }
}

impl<'r> UringSource<'r> {
    fn open(job: &CompactionJob, env: &JobEnv<'_>, ring: &'r ReadRing) -> Result<Self> {
        Ok(UringSource {
            kernel: Arc::clone(&env.kernel),
            inputs: InputRuns::open(job, env)?,
            ring,
            inflight: 0,
            cqes: Vec::with_capacity(ring.depth as usize),
        })
    }
}

impl Drop for UringSource<'_> {
    fn drop(&mut self) {
        // Only a job that failed inside a fill leaves reads in flight.
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
        let ring = self.ring.ring;
        let base = match (self.ring.target, &window) {
            (
                Target::Region(region),
                Window::Region {
                    region: r, offset, ..
                },
            ) if region.0 == *r => *offset,
            (Target::Staging, Window::Host { .. }) => 0,
            _ => return Err("the io_uring source was set up for another kind of window".into()),
        };
        let window_bytes = window.window_bytes();
        let (spans, fill) = self
            .inputs
            .plan(run, WINDOW_BLOCKS_MAX, window_bytes, block_len)?;
        // A direct read's short read goes on from the aligned offset at or below where it
        // stopped (O_DIRECT needs aligned offsets); a buffered one exactly where it stopped.
        let align = if self.inputs.direct() {
            DIRECT_ALIGN_BYTES
        } else {
            1
        };
        let mut total = 0usize;
        for chunk in spans.chunks(self.ring.depth as usize) {
            // Bytes of each span read so far: a short read goes on where it stopped (Linux may
            // return less than asked), in another round of SQEs.
            let mut done = vec![0usize; chunk.len()];
            let mut asked = vec![0usize; chunk.len()];
            for round in 0.. {
                let todo: Vec<usize> = (0..chunk.len())
                    .filter(|&i| done[i] < chunk[i].needed)
                    .collect();
                if todo.is_empty() {
                    break;
                }
                if round == SHORT_READ_ROUNDS_MAX {
                    let span = &chunk[todo[0]];
                    return Err(Box::new(Error::corruption(
                        span.table.path(),
                        span.offset,
                        format!(
                            "io_uring reads of {} bytes still short after {round} rounds",
                            span.len
                        ),
                    )));
                }
                for &i in &todo {
                    let span = &chunk[i];
                    let from = done[i] - done[i] % align;
                    asked[i] = from;
                    let read = SqeOp::ReadFixed {
                        file: SqeFile::Fd(span.fd),
                        buf_index: 0,
                        buf_offset: base + span.window_at + from,
                        len: u32::try_from(span.len - from).expect("a span fits a window"),
                        offset: span.offset + from as u64,
                    };
                    let sqe = Sqe::new(read, i as u64);
                    self.kernel
                        .uring_queue(ring, &sqe)
                        .map_err(uring_err("queue"))?;
                    self.inflight += 1;
                }
                let n = u32::try_from(todo.len()).expect("at most the ring's depth");
                self.kernel
                    .uring_submit_and_wait(ring, n)
                    .map_err(uring_err("submit"))?;
                self.cqes.clear();
                while self.cqes.len() < todo.len() {
                    let want = todo.len() - self.cqes.len();
                    let got = self
                        .kernel
                        .uring_reap(ring, &mut self.cqes, want)
                        .map_err(uring_err("reap"))?;
                    self.inflight -= got;
                    if got == 0 {
                        self.kernel
                            .uring_submit_and_wait(ring, u32::try_from(want).expect("small"))
                            .map_err(uring_err("wait"))?;
                    }
                }
                for cqe in &self.cqes {
                    let i = usize::try_from(cqe.user_data).expect("index");
                    let span = &chunk[i];
                    match usize::try_from(cqe.res) {
                        Err(_) => {
                            return Err(Box::new(Error::Kernel {
                                op: "reading input blocks through io_uring",
                                path: span.table.path().to_path_buf(),
                                source: KernelError::Errno {
                                    call: SyscallKind::IoUringEnter,
                                    errno: Errno(-cqe.res),
                                },
                            }))
                        }
                        Ok(n) if asked[i] + n <= done[i] => {
                            return Err(Box::new(Error::corruption(
                                span.table.path(),
                                span.offset + done[i] as u64,
                                format!(
                                    "the table ends inside a block: {} of its {} bytes read",
                                    done[i], span.needed
                                ),
                            )))
                        }
                        Ok(n) => done[i] = asked[i] + n,
                    }
                }
            }
            total = total.max(
                chunk
                    .iter()
                    .map(|s| s.window_at + s.needed)
                    .max()
                    .unwrap_or(0),
            );
        }
        if let (Target::Staging, Window::Host { bytes, .. }) = (self.ring.target, window) {
            let staging = self.ring.staging.expect("staging buffer in host mode");
            self.kernel
                .mem_read(staging, 0, &mut bytes[..total])
                .map_err(uring_err("copying the staging buffer"))?;
        }
        Ok(fill)
    }
}

impl InputSource for UringSource<'_> {
    fn inputs(&self) -> &InputRuns {
        &self.inputs
    }

    fn as_block_source(&mut self) -> &mut dyn BlockSource {
        self
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
