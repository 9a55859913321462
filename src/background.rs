//! Background jobs on virtual time ([`crate::options::BackgroundMode::Virtual`]).
//!
//! On a kernel with virtual time the engine cannot run its flush and compaction threads as
//! host threads (the run would stop being deterministic), nor inside the writing thread (the
//! writer would pay for every job, and stalls would never show). Instead each job runs, in host
//! order, the moment its background task is free, on that task's own clock
//! ([`Kernel::switch_task`]): it starts at the foreground's current time (or when the flush
//! that wrote its inputs ends) and ends at whatever time its calls took.
//!
//! Its effects are applied at once in host order, but the foreground must not *see* them
//! before the job's end time: until then, the foreground's stall decisions count the job as
//! still running — its memtable still immutable, its new L0 file not yet there, its L0 inputs
//! still there ([`Lanes::effective`]). A task takes its next job only once the foreground's
//! clock has passed the end of its previous one, as a real thread would only pick its next
//! job after finishing the last. A stopped writer waits (sleeps on its clock) until the
//! earliest running job ends.
//!
//! Simplifications, deliberate: the three tasks share the simulated cores by processor
//! sharing over the background tasks' CPU stints, with the foreground assumed always
//! runnable (sim/src/clock.rs); a job picks its inputs when it starts, from the state as the host has it, which may include the effects of
//! a job whose end the foreground has not reached yet (only a compaction over a running
//! flush's output is held back to that flush's end).

use resystance_traces::{Kernel, Task};

/// A job that ran on a background task's clock, as the foreground sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InFlight {
    /// When the job ended, on its task's clock.
    pub until_ns: u64,
    /// Immutable memtables it flushed (still immutable to the foreground until it ends).
    pub imm_flushed: usize,
    /// L0 files it added.
    pub l0_added: usize,
    /// L0 files it removed (compacted away).
    pub l0_removed: usize,
    /// Table files it wrote.
    pub outputs: Vec<u64>,
}

/// The foreground's view of the background tasks' last jobs.
#[derive(Clone, Debug, Default)]
pub struct Lanes {
    /// The flush task's last job.
    pub flush: Option<InFlight>,
    /// The compaction task's last job.
    pub compaction: Option<InFlight>,
    /// A compaction may be pickable: a version was installed since a pick last found nothing.
    pub pick_stale: bool,
}

/// Immutable memtables and L0 files as the foreground sees them at some time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Effective {
    /// Immutable memtables.
    pub imm: usize,
    /// L0 files.
    pub l0: usize,
}

impl Lanes {
    /// The job of `task` still running at `now_ns`, if any.
    pub fn running(&self, task: Task, now_ns: u64) -> Option<&InFlight> {
        let job = match task {
            Task::Flush => self.flush.as_ref(),
            Task::Compaction => self.compaction.as_ref(),
            Task::Foreground => None,
        };
        job.filter(|j| j.until_ns > now_ns)
    }

    /// Whether `task` is free to take a job at `now_ns`.
    pub fn is_free(&self, task: Task, now_ns: u64) -> bool {
        self.running(task, now_ns).is_none()
    }

    /// The earliest end after `now_ns` of a running job: when a stopped writer can look again.
    pub fn next_end_ns(&self, now_ns: u64) -> Option<u64> {
        [Task::Flush, Task::Compaction]
            .into_iter()
            .filter_map(|t| self.running(t, now_ns).map(|j| j.until_ns))
            .min()
    }

    /// The latest end of a running job (0 when none runs): when everything started is done.
    pub fn last_end_ns(&self, now_ns: u64) -> u64 {
        [Task::Flush, Task::Compaction]
            .into_iter()
            .filter_map(|t| self.running(t, now_ns).map(|j| j.until_ns))
            .max()
            .unwrap_or(0)
    }

    /// The host's counts (`imm`, `l0`) as the foreground sees them at `now_ns`: running jobs'
    /// effects undone.
    pub fn effective(&self, now_ns: u64, imm: usize, l0: usize) -> Effective {
        let mut e = Effective { imm, l0 };
        for task in [Task::Flush, Task::Compaction] {
            if let Some(j) = self.running(task, now_ns) {
                e.imm += j.imm_flushed;
                e.l0 = (e.l0 + j.l0_removed).saturating_sub(j.l0_added);
            }
        }
        e
    }

    /// When a compaction over `inputs` may start at the earliest: not before the running flush
    /// that wrote one of them ends.
    pub fn inputs_ready_ns(&self, now_ns: u64, inputs: impl IntoIterator<Item = u64>) -> u64 {
        let Some(flush) = self.running(Task::Flush, now_ns) else {
            return now_ns;
        };
        if inputs.into_iter().any(|n| flush.outputs.contains(&n)) {
            flush.until_ns.max(now_ns)
        } else {
            now_ns
        }
    }

    /// Records `job` as `task`'s last.
    pub fn record(&mut self, task: Task, job: InFlight) {
        match task {
            Task::Flush => self.flush = Some(job),
            Task::Compaction => self.compaction = Some(job),
            Task::Foreground => unreachable!("the foreground runs no background job"),
        }
    }
}

/// Runs `f` on `task`'s clock from `start_ns`, then returns to the foreground (also when `f`
/// panics); gives `f`'s result and the task's time when it ended.
pub fn run_on_task<R>(
    kernel: &dyn Kernel,
    task: Task,
    start_ns: u64,
    f: impl FnOnce() -> R,
) -> (R, u64) {
    struct Back<'a>(&'a dyn Kernel);
    impl Drop for Back<'_> {
        fn drop(&mut self) {
            self.0.switch_task(Task::Foreground, 0);
        }
    }
    let previous = kernel.switch_task(task, start_ns);
    debug_assert_eq!(previous, Task::Foreground, "background jobs do not nest");
    let back = Back(kernel);
    let result = f();
    let end_ns = kernel.now_ns();
    drop(back);
    (result, end_ns)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(until_ns: u64, imm: usize, added: usize, removed: usize, outputs: &[u64]) -> InFlight {
        InFlight {
            until_ns,
            imm_flushed: imm,
            l0_added: added,
            l0_removed: removed,
            outputs: outputs.to_vec(),
        }
    }

    #[test]
    fn running_jobs_are_undone_until_they_end() {
        let mut lanes = Lanes::default();
        lanes.record(Task::Flush, job(100, 1, 1, 0, &[7]));
        lanes.record(Task::Compaction, job(300, 0, 0, 4, &[8, 9]));
        // The host has applied both: imm 0, L0 = 5 - 4 + 1 = 2.
        assert_eq!(lanes.effective(50, 0, 2), Effective { imm: 1, l0: 5 });
        assert_eq!(lanes.effective(100, 0, 2), Effective { imm: 0, l0: 6 });
        assert_eq!(lanes.effective(300, 0, 2), Effective { imm: 0, l0: 2 });
        assert_eq!(lanes.next_end_ns(50), Some(100));
        assert_eq!(lanes.next_end_ns(100), Some(300));
        assert_eq!(lanes.next_end_ns(300), None);
        assert_eq!(lanes.last_end_ns(50), 300);
        assert!(!lanes.is_free(Task::Flush, 99) && lanes.is_free(Task::Flush, 100));
    }

    #[test]
    fn a_compaction_over_a_running_flush_waits_for_it() {
        let mut lanes = Lanes::default();
        lanes.record(Task::Flush, job(100, 1, 1, 0, &[7]));
        assert_eq!(lanes.inputs_ready_ns(40, [3, 7]), 100);
        assert_eq!(lanes.inputs_ready_ns(40, [3, 5]), 40);
        assert_eq!(lanes.inputs_ready_ns(120, [7]), 120);
    }
}
