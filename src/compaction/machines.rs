//! The compaction program ([`resystance_programs::COMPACT_OBJECT`]) as a
//! [`Machine`]: on the vm (no root, deterministic) or on the kernel behind the boundary
//! (`bpf(2)` + `BPF_PROG_TEST_RUN` over mmapped maps). The twin is
//! [`resystance_programs::driver::TwinMachine`].
//!
//! Both keep a host copy of the job that the driver edits between runs: all of it (582 KiB)
//! crosses into the program's map before a job's first run, later only its header and the
//! refilled runs' window fields, and only the header comes back after a run
//! (`job_ranges_to_write`). Windows are written only when the source touched them.
//!
//! The windows live in one pool (`cj_windows`, its chunks back to back): run `r`'s window
//! starts at [`window_offset`]`(r, window_bytes)`, `window_bytes` being the job's parameter.

use std::mem::offset_of;
use std::ops::Range;
use std::sync::Arc;

use resystance_programs::abi::{
    bytes_of, phase, status, window_bytes_valid, window_offset, Job, Record, Run,
    BLOCK_TRAILER_BYTES, OUTPUT_VALUE_BYTES, RECORDS_MAX, RUNS_MAX, WINDOW_BLOCKS_MAX,
};
use resystance_programs::driver::{host_window, read_pod, BoxError, Machine, Window};
use resystance_programs::{maps, COMPACT_OBJECT, COMPACT_PROGRAM};
use resystance_traces::{Kernel, MemId};
use resystance_vm::exec::{Limits, Tier};
use resystance_vm::helpers::Clock;
use resystance_vm::loader::{self, LoadOptions, LoadedProgram};
use resystance_vm::object::Object;

use crate::bpf_object::{KernelProgram, KernelProgramError};

/// Bytes of [`Job`] before the key buffers: everything the driver reads or writes except
/// the runs' window fields.
const JOB_HEADER_BYTES: usize = offset_of!(Job, in_last_key);
/// Bytes of a [`Run`]'s window fields (`window_first`, `window_blocks`, `more`).
const RUN_WINDOW_FIELDS_BYTES: usize = offset_of!(Run, state);
const _: () = assert!(offset_of!(Run, window_first) == 0);

/// The byte ranges of the host job that must cross into the program's map before a run.
/// Before a job's first run, all of it. After that, only what the driver writes between runs:
/// the header (status, output counters) and, for each run in `refilled`, its window fields and
/// the block lengths it set. The rest — cursors, head keys, the block being built — is the
/// program's and stays in the map (the job is 582 KiB; a run's crossing is then ~35 KiB plus
/// 4 bytes per refilled block).
fn job_ranges_to_write(job: &Job, refilled: &[bool]) -> Vec<Range<usize>> {
    let mut ranges = Vec::with_capacity(1 + 2 * refilled.len());
    if job.phase == phase::START {
        ranges.push(0..size_of::<Job>());
        return ranges;
    }
    ranges.push(0..JOB_HEADER_BYTES);
    for (r, _) in refilled.iter().enumerate().filter(|(_, &f)| f) {
        let run = offset_of!(Job, runs) + r * size_of::<Run>();
        ranges.push(run..run + RUN_WINDOW_FIELDS_BYTES);
        let blocks = (job.runs[r].window_blocks as usize).min(WINDOW_BLOCKS_MAX);
        let lens = run + offset_of!(Run, block_len);
        ranges.push(lens..lens + 4 * blocks);
    }
    ranges
}

/// Instructions one vm run may execute: far above what `entries_per_call` allows a run to do,
/// so only a runaway program meets it.
pub const VM_INSNS_PER_RUN_MAX: u64 = 1 << 36;

/// The compaction object, parsed.
pub fn compact_object() -> Object {
    Object::parse("compact.bpf.o", COMPACT_OBJECT)
        .expect("the committed compaction object parses (tests/compaction_program.rs)")
}

/// The job's `window_bytes`, which the driver checked against the pool before asking for a
/// window (a window it cannot lay out is a broken invariant).
fn checked_window_bytes(job: &Job) -> usize {
    assert!(
        window_bytes_valid(job.num_runs, job.window_bytes),
        "a window of {} bytes for {} runs",
        job.window_bytes,
        job.num_runs
    );
    job.window_bytes as usize
}

fn records_from(bytes: &[u8], n: usize, out: &mut [Record]) {
    let size = size_of::<Record>();
    for (i, rec) in out.iter_mut().enumerate().take(n) {
        *rec = *read_pod::<Record>(&bytes[i * size..(i + 1) * size]);
    }
}

/// The program on the vm (its native tier or its interpreter).
pub struct VmMachine {
    loaded: LoadedProgram,
    job: Box<Job>,
    records: Vec<Record>,
    /// Runs whose window fields the driver may have set since the last run.
    refilled: Vec<bool>,
    /// Instructions executed by all runs so far.
    pub insns_executed: u64,
}

impl std::fmt::Debug for VmMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VmMachine")
            .field("insns_executed", &self.insns_executed)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct NoClock;

impl Clock for NoClock {
    fn monotonic_ns(&self) -> u64 {
        0 // the compaction program reads no clock
    }
}

impl VmMachine {
    /// Loads the committed object into a fresh vm (native tier where the host has one).
    pub fn new() -> Result<Self, BoxError> {
        Self::with_tier(Tier::Native)
    }

    /// Loads the committed object into a fresh vm that executes on `tier`.
    pub fn with_tier(tier: Tier) -> Result<Self, BoxError> {
        let object = compact_object();
        let mut options = LoadOptions::new(Arc::new(NoClock));
        options.limits = Limits {
            insns_max: VM_INSNS_PER_RUN_MAX,
        };
        let mut loaded = loader::load(&object, COMPACT_PROGRAM, &options)?;
        loaded.set_tier(tier);
        Ok(VmMachine {
            loaded,
            job: resystance_programs::abi::boxed_zeroed(),
            records: vec![*resystance_programs::abi::boxed_zeroed::<Record>(); RECORDS_MAX],
            refilled: vec![false; RUNS_MAX],
            insns_executed: 0,
        })
    }
}

impl Machine for VmMachine {
    fn job_mut(&mut self) -> &mut Job {
        &mut self.job
    }

    fn window(&mut self, run: usize) -> Window<'_> {
        assert!(run < RUNS_MAX);
        self.refilled[run] = true;
        let window_bytes = checked_window_bytes(&self.job);
        let pool = self
            .loaded
            .map_mmap_mut(maps::WINDOWS)
            .expect("cj_windows is mmapable");
        let start = window_offset(run, window_bytes);
        Window::Host {
            bytes: &mut pool[start..start + window_bytes],
            window_bytes,
        }
    }

    fn output(&self) -> &[u8] {
        self.loaded
            .map_mmap(maps::OUTPUT)
            .expect("cj_output is mmapable")
    }

    fn records(&self) -> &[Record] {
        &self.records
    }

    fn run(&mut self) -> Result<u32, BoxError> {
        // What crosses is what crosses into the kernel machine's map (the same rule), so the
        // vm's transcripts check that rule against the twin's too.
        let map = self.loaded.map_mmap_mut(maps::JOB)?;
        let host = bytes_of(self.job.as_ref());
        for range in job_ranges_to_write(&self.job, &self.refilled) {
            map[range.clone()].copy_from_slice(&host[range]);
        }
        self.refilled.fill(false);
        let result = self.loaded.run(&mut [])?;
        self.insns_executed += result.insns_executed;
        let map = self.loaded.map_mmap(maps::JOB)?;
        resystance_programs::abi::bytes_of_mut(self.job.as_mut())[..JOB_HEADER_BYTES]
            .copy_from_slice(&map[..JOB_HEADER_BYTES]);
        let rc = u32::try_from(result.r0).map_err(|_| format!("r0 {:#x}", result.r0))?;
        if rc == status::OUTPUT_FULL || rc == status::DONE {
            let n = (self.job.num_records as usize).min(RECORDS_MAX);
            records_from(self.loaded.map_mmap(maps::RECORDS)?, n, &mut self.records);
        }
        Ok(rc)
    }
}

/// The program loaded into a kernel (Linux, or the simulator) and run with
/// `BPF_PROG_TEST_RUN`; its maps are mmapped.
pub struct KernelMachine {
    program: KernelProgram,
    kernel: Arc<dyn Kernel>,
    job_mem: MemId,
    windows_mem: MemId,
    output_mem: MemId,
    records_mem: MemId,
    job: Box<Job>,
    /// Host windows (unless `direct_windows`), one per run, grown as jobs size them.
    windows: Vec<Vec<u8>>,
    dirty: Vec<bool>,
    output: Vec<u8>,
    records: Vec<Record>,
    /// Windows are handed to sources as the mmapped map region (io_uring reads straight into
    /// it) rather than as host buffers copied in before each run.
    direct_windows: bool,
    /// The output is left in the mmapped `cj_output` region for sinks to write from
    /// ([`Machine::output_region`]) rather than copied out after each run.
    direct_output: bool,
    /// Runs whose window fields the driver may have set since the last run.
    refilled: Vec<bool>,
    /// Nanoseconds the kernel reported for all test runs so far.
    pub run_ns: u64,
}

impl std::fmt::Debug for KernelMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelMachine")
            .field("program", &self.program.name())
            .field("run_ns", &self.run_ns)
            .finish_non_exhaustive()
    }
}

impl KernelMachine {
    /// Loads the committed object into `kernel` (the verifier runs here) and mmaps its maps.
    pub fn new(kernel: Arc<dyn Kernel>, runs: usize) -> Result<Self, KernelProgramError> {
        let object = compact_object();
        let mut program = KernelProgram::load(Arc::clone(&kernel), &object, COMPACT_PROGRAM, &[])?;
        let job_mem = program.mmap(maps::JOB)?;
        let windows_mem = program.mmap(maps::WINDOWS)?;
        let output_mem = program.mmap(maps::OUTPUT)?;
        let records_mem = program.mmap(maps::RECORDS)?;
        let runs = runs.min(RUNS_MAX);
        Ok(KernelMachine {
            program,
            kernel,
            job_mem,
            windows_mem,
            output_mem,
            records_mem,
            job: resystance_programs::abi::boxed_zeroed(),
            windows: vec![Vec::new(); runs],
            dirty: vec![false; runs],
            output: vec![0u8; OUTPUT_VALUE_BYTES],
            records: vec![*resystance_programs::abi::boxed_zeroed::<Record>(); RECORDS_MAX],
            direct_windows: false,
            direct_output: false,
            refilled: vec![false; RUNS_MAX],
            run_ns: 0,
        })
    }

    /// Hands windows to sources as the mmapped `cj_windows` region (see [`Window::Region`]):
    /// the source must write them through the kernel (io_uring), and nothing is copied.
    pub fn with_direct_windows(mut self) -> Self {
        self.direct_windows = true;
        self.windows = Vec::new();
        self.dirty = Vec::new();
        self
    }

    /// Leaves each run's output blocks in the mmapped `cj_output` region
    /// ([`Machine::output_region`]): the sink writes them from there (io_uring), and
    /// nothing is copied out.
    pub fn with_direct_output(mut self) -> Self {
        self.direct_output = true;
        self.output = Vec::new();
        self
    }

    /// The mmapped `cj_output` map, where the program encodes output blocks.
    pub fn output_region(&self) -> MemId {
        self.output_mem
    }

    /// The mmapped `cj_windows` map: the pool of all runs' windows
    /// ([`resystance_programs::abi::POOL_MAP_BYTES`]; run `r`'s at
    /// [`window_offset`]`(r, window_bytes)`).
    pub fn windows_region(&self) -> MemId {
        self.windows_mem
    }

    /// Makes later runs go through `kernel`, another view of the same kernel (a compaction
    /// job's accounted view), so each job counts its own calls.
    pub fn rebind(&mut self, kernel: Arc<dyn Kernel>) {
        self.program.rebind(Arc::clone(&kernel));
        self.kernel = kernel;
    }

    /// Instructions the verifier processed when it accepted the program.
    pub fn verified_insns(&self) -> Option<u32> {
        self.program.verified_insns()
    }
}

impl Machine for KernelMachine {
    fn program_ns(&self) -> u64 {
        self.run_ns
    }

    fn job_mut(&mut self) -> &mut Job {
        &mut self.job
    }

    fn window(&mut self, run: usize) -> Window<'_> {
        self.refilled[run] = true;
        let window_bytes = checked_window_bytes(&self.job);
        if self.direct_windows {
            return Window::Region {
                region: self.windows_mem.0,
                offset: window_offset(run, window_bytes),
                window_bytes,
            };
        }
        self.dirty[run] = true;
        host_window(&mut self.windows[run], window_bytes)
    }

    fn output(&self) -> &[u8] {
        &self.output
    }

    fn output_region(&self) -> Option<u32> {
        self.direct_output.then_some(self.output_mem.0)
    }

    fn records(&self) -> &[Record] {
        &self.records
    }

    fn run(&mut self) -> Result<u32, BoxError> {
        let window_bytes = self.job.window_bytes as usize;
        for (run, dirty) in self.dirty.iter_mut().enumerate() {
            if std::mem::take(dirty) {
                // The program reads (other than words it discards) only the blocks the window
                // fields name: copy the window up to their end, not the whole (up to 8 MiB)
                // window, so the map equals the host window wherever the program looks.
                let r = &self.job.runs[run];
                let blocks = (r.window_blocks as usize).min(WINDOW_BLOCKS_MAX);
                let end = r.block_len[..blocks]
                    .iter()
                    .fold(r.window_first as usize, |at, &len| {
                        at.saturating_add(len as usize + BLOCK_TRAILER_BYTES)
                    })
                    .min(window_bytes);
                self.kernel.mem_write(
                    self.windows_mem,
                    window_offset(run, window_bytes),
                    &self.windows[run][..end],
                )?;
            }
        }
        // The job is 582 KiB, but between runs the driver reads and writes only its header
        // and the window fields of the runs it refilled: only those cross, except before a
        // job's first run, when all of it does; only the header comes back.
        let job_bytes = bytes_of(self.job.as_ref());
        for range in job_ranges_to_write(&self.job, &self.refilled) {
            self.kernel
                .mem_write(self.job_mem, range.start, &job_bytes[range])?;
        }
        self.refilled.fill(false);
        let result = self.program.test_run(&mut [])?;
        self.run_ns += result.duration_ns;
        let job_bytes = resystance_programs::abi::bytes_of_mut(self.job.as_mut());
        self.kernel
            .mem_read(self.job_mem, 0, &mut job_bytes[..JOB_HEADER_BYTES])?;
        let rc = result.retval;
        if rc == status::OUTPUT_FULL || rc == status::DONE {
            if !self.direct_output {
                let len = (self.job.out_len as usize).min(OUTPUT_VALUE_BYTES);
                self.kernel
                    .mem_read(self.output_mem, 0, &mut self.output[..len])?;
            }
            let n = (self.job.num_records as usize).min(RECORDS_MAX);
            let mut bytes = vec![0u8; n * size_of::<Record>()];
            self.kernel.mem_read(self.records_mem, 0, &mut bytes)?;
            records_from(&bytes, n, &mut self.records);
        }
        Ok(rc)
    }
}

/// The twin running in user space (the `baseline` and `uring` executors): the compaction
/// program's Rust twin that reports the work of each run to the kernel
/// ([`resystance_traces::CpuWorkKind::Merge`]: input entries and input block bytes), so a
/// kernel with virtual time charges the merge's CPU time where Linux would simply spend it.
pub struct UserTwin {
    twin: resystance_programs::driver::TwinMachine,
    kernel: Arc<dyn Kernel>,
}

impl std::fmt::Debug for UserTwin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserTwin")
            .field("twin", &self.twin)
            .finish_non_exhaustive()
    }
}

impl UserTwin {
    /// A twin for jobs of up to `runs` runs, reporting to `kernel`.
    pub fn new(runs: usize, kernel: Arc<dyn Kernel>) -> Self {
        UserTwin {
            twin: resystance_programs::driver::TwinMachine::new(runs),
            kernel,
        }
    }

    /// The twin kept in `slot` for every job (made by the first, for up to
    /// [`RUNS_MAX`] runs), reporting to `kernel` (the job's view): its windows and output
    /// region are allocated once, not zeroed again for every job (the driver resets the job
    /// itself, and stale window bytes past a window's blocks are never read).
    pub fn for_job<'s>(
        slot: &'s mut Option<UserTwin>,
        kernel: &Arc<dyn Kernel>,
    ) -> &'s mut UserTwin {
        let twin = slot.get_or_insert_with(|| UserTwin::new(RUNS_MAX, Arc::clone(kernel)));
        twin.kernel = Arc::clone(kernel);
        twin
    }
}

impl Machine for UserTwin {
    fn job_mut(&mut self) -> &mut Job {
        self.twin.job_mut()
    }

    fn window(&mut self, run: usize) -> Window<'_> {
        self.twin.window(run)
    }

    fn output(&self) -> &[u8] {
        self.twin.output()
    }

    fn records(&self) -> &[Record] {
        self.twin.records()
    }

    fn run(&mut self) -> Result<u32, BoxError> {
        let before = {
            let j = self.twin.job_mut();
            (j.entries_in, j.bytes_in)
        };
        let status = self.twin.run()?;
        let j = self.twin.job_mut();
        self.kernel.cpu_work(resystance_traces::CpuWork::new(
            resystance_traces::CpuWorkKind::Merge,
            j.entries_in.saturating_sub(before.0),
            j.bytes_in.saturating_sub(before.1),
        ));
        Ok(status)
    }
}
