//! The io_uring executors.
//!
//! * `uring`: each window's blocks are read with io_uring (one `io_uring_enter` per window,
//!   whatever its number of blocks and files) into a registered staging buffer and copied into
//!   the twin's window; the merge runs in user space (the twin).
//! * `resystance`: io_uring reads land straight in the compaction program's mmapped
//!   `cj_windows` map (the window pool, one registered buffer; each run's window at its
//!   offset), and the program runs in the kernel over them
//!   (`BPF_PROG_TEST_RUN`); user space only moves windows and writes the finished blocks,
//!   index blocks, properties and footers.
//!
//! Outputs are written as in `baseline` (1 MiB buffered `pwrite`s, `fdatasync` per file).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use resystance_programs::abi::WINDOW_BLOCKS_MAX;
use resystance_programs::driver::{BlockSource, BoxError, Window, WindowFill};
use resystance_traces::{
    Cqe, Errno, Kernel, KernelError, MemId, RingId, Sqe, SqeFile, SqeOp, SyscallKind, UringParams,
};

use crate::compaction::job::{CompactionExecutor, CompactionJob, JobEnv, JobOutput};
use crate::compaction::machines::KernelMachine;
use crate::compaction::program_io::{
    job_params, run_job_with, InputRuns, InputSource, DIRECT_ALIGN_BYTES,
};
use crate::error::{Error, Result};
use crate::options::CompactionMode;

/// Submission-queue entries of a compaction's ring: reads of one window in flight at once.
pub const QUEUE_DEPTH: u32 = 64;

/// Rounds of SQEs a window's spans may take when reads come back short: far more than any
/// kernel needs, so only a file that keeps shrinking meets it.
const SHORT_READ_ROUNDS_MAX: usize = 64;

fn uring_err(what: &str) -> impl FnOnce(resystance_traces::KernelError) -> Error + '_ {
    move |e| Error::Program(format!("io_uring {what}: {e}"))
}

/// Where a [`UringSource`] reads to.
#[derive(Clone, Copy, Debug)]
enum Target {
    /// A staging buffer of its own, copied into host windows.
    Staging,
    /// The machine's windows region, read into directly.
    Region(MemId),
}

/// A job's input blocks read through one io_uring: a window per submission.
pub struct UringSource {
    kernel: Arc<dyn Kernel>,
    inputs: InputRuns,
    ring: Option<RingId>,
    target: Target,
    /// Staging buffer (host mode), freed after the ring is closed.
    staging: Option<MemId>,
    /// Fixed-file index of each input table, by file number.
    files: BTreeMap<u64, u32>,
    cqes: Vec<Cqe>,
}

impl std::fmt::Debug for UringSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringSource")
            .field("ring", &self.ring)
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl UringSource {
    fn open(job: &CompactionJob, env: &JobEnv<'_>, target: Target) -> Result<Self> {
        let kernel = Arc::clone(&env.kernel);
        let inputs = InputRuns::open(job, env)?;
        let ring = kernel
            .uring_setup(&UringParams {
                sq_entries: QUEUE_DEPTH,
                sqpoll: env.uring_sqpoll,
                ..UringParams::default()
            })
            .map_err(uring_err("setup"))?;
        let mut source = UringSource {
            kernel,
            inputs,
            ring: Some(ring),
            target,
            staging: None,
            files: BTreeMap::new(),
            cqes: Vec::with_capacity(QUEUE_DEPTH as usize),
        };
        let buffer = match target {
            Target::Region(region) => region,
            Target::Staging => {
                // One window of the job's size (a direct read's aligned end stays inside it):
                // the merge's windows are host buffers, filled from here.
                let window_bytes = job_params(job)?.window_bytes as usize;
                let staging = source
                    .kernel
                    .mem_alloc(window_bytes)
                    .map_err(uring_err("staging buffer"))?;
                source.staging = Some(staging);
                staging
            }
        };
        source
            .kernel
            .uring_register_buffers(ring, &[buffer])
            .map_err(uring_err("registering the window buffer"))?;
        // The descriptors reads go through: the `O_DIRECT` ones with direct reads.
        let mut fds = Vec::new();
        for (number, fd) in source.inputs.read_fds() {
            let index = u32::try_from(fds.len()).expect("fewer than 2^32 inputs");
            source.files.insert(number, index);
            fds.push(fd);
        }
        source
            .kernel
            .uring_register_files(ring, &fds)
            .map_err(uring_err("registering the input files"))?;
        Ok(source)
    }
}

impl Drop for UringSource {
    fn drop(&mut self) {
        // Closing drains whatever is in flight before the buffers may be freed.
        if let Some(ring) = self.ring.take() {
            let _ = self.kernel.uring_close(ring);
        }
        if let Some(staging) = self.staging.take() {
            let _ = self.kernel.mem_free(staging);
        }
    }
}

impl BlockSource for UringSource {
    fn fill(
        &mut self,
        run: usize,
        window: Window<'_>,
        block_len: &mut [u32; WINDOW_BLOCKS_MAX],
    ) -> std::result::Result<WindowFill, BoxError> {
        let ring = self.ring.expect("open ring");
        let base = match (self.target, &window) {
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
        for chunk in spans.chunks(QUEUE_DEPTH as usize) {
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
                    let number = *self
                        .files
                        .get(&span.number)
                        .ok_or("a span's table is not among the registered inputs")?;
                    let from = done[i] - done[i] % align;
                    asked[i] = from;
                    let read = SqeOp::ReadFixed {
                        file: SqeFile::Fixed(number),
                        buf_index: 0,
                        buf_offset: base + span.window_at + from,
                        len: u32::try_from(span.len - from).expect("a span fits a window"),
                        offset: span.offset + from as u64,
                    };
                    let sqe = Sqe::new(read, i as u64);
                    self.kernel
                        .uring_queue(ring, &sqe)
                        .map_err(uring_err("queue"))?;
                }
                let n = u32::try_from(todo.len()).expect("at most QUEUE_DEPTH");
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
        if let (Target::Staging, Window::Host { bytes, .. }) = (self.target, window) {
            let staging = self.staging.expect("staging buffer in host mode");
            self.kernel
                .mem_read(staging, 0, &mut bytes[..total])
                .map_err(uring_err("copying the staging buffer"))?;
        }
        Ok(fill)
    }
}

impl InputSource for UringSource {
    fn inputs(&self) -> &InputRuns {
        &self.inputs
    }

    fn as_block_source(&mut self) -> &mut dyn BlockSource {
        self
    }
}

/// io_uring reads, the merge in user space (the twin).
#[derive(Clone, Copy, Debug, Default)]
pub struct UringExecutor;

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
        let mut twin =
            crate::compaction::machines::UserTwin::new(job.runs.len(), Arc::clone(&env.kernel));
        let mut source = UringSource::open(job, env, Target::Staging)?;
        run_job_with(&mut twin, job, env, &mut source)
    }
}

/// io_uring reads into the program's maps, the merge in the kernel.
#[derive(Default)]
pub struct ResystanceExecutor {
    /// Loaded once (maps created, the verifier run), then reused by every job.
    machine: Mutex<Option<KernelMachine>>,
}

impl std::fmt::Debug for ResystanceExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResystanceExecutor").finish_non_exhaustive()
    }
}

impl ResystanceExecutor {
    fn load(kernel: &Arc<dyn Kernel>) -> Result<KernelMachine> {
        KernelMachine::new(Arc::clone(kernel), resystance_programs::abi::RUNS_MAX)
            .map(KernelMachine::with_direct_windows)
            .map_err(|e| {
                Error::NotSupported(format!(
                    "compaction mode `resystance` could not load the compaction program: {e}"
                ))
            })
    }
}

impl CompactionExecutor for ResystanceExecutor {
    fn mode(&self) -> CompactionMode {
        CompactionMode::Resystance
    }

    fn prepare(&self, kernel: &Arc<dyn Kernel>) -> Result<()> {
        let mut machine = self.machine.lock().expect("machine lock");
        if machine.is_none() {
            *machine = Some(Self::load(kernel)?);
        }
        Ok(())
    }

    fn run(&self, job: &CompactionJob, env: &JobEnv<'_>) -> Result<JobOutput> {
        let mut guard = self.machine.lock().expect("machine lock");
        let machine = match guard.as_mut() {
            Some(m) => {
                m.rebind(Arc::clone(&env.kernel));
                m
            }
            None => guard.insert(Self::load(&env.kernel)?),
        };
        let mut source = UringSource::open(job, env, Target::Region(machine.windows_region()))?;
        run_job_with(machine, job, env, &mut source)
    }
}
