//! The virtual clock: nanoseconds that pass only when the model charges a cost.

use std::collections::VecDeque;

use rand::RngCore;
use rand_chacha::ChaCha8Rng;
use resystance_traces::Task;

/// CPU stints kept per background task before old ones are dropped even if a lagging clock
/// could still meet them (a bound on memory and on the work of one charge).
pub const STINTS_MAX: usize = 4_096;

/// Parts per million: the unit of jitter.
pub const PPM: u64 = 1_000_000;

/// Virtual time plus the seeded jitter applied to every charged cost.
///
/// One clock per [`Task`]: the engine's foreground and its background jobs each run on their
/// own timeline, and `now_ns` is the current task's. Calls happen in host order, one at a
/// time; each is charged to the task that makes it.
///
/// **CPU contention.** The tasks share `cores` CPUs. A charge is CPU work; it runs at full
/// speed while at most `cores` tasks want a CPU, and at `cores / runnable` of it beyond
/// (processor sharing). Who is runnable at time `t`: the charging task; a background task
/// whose recorded CPU stints cover `t` (its charges, not its waits for the device); and, for a
/// background task's charge, the foreground — assumed always runnable, as a benchmark's
/// writer is (this over-counts while it sleeps in a stall). Stints are known only once
/// charged: a job that runs later in host order but earlier in virtual time is not seen by
/// the charges already made (a simplification of the eager, host-ordered execution).
#[derive(Debug)]
pub struct Clock {
    now_ns: u64,
    task: Task,
    /// Each task's time when it last stopped being current.
    task_ns: [u64; Task::ALL.len()],
    /// CPUs the tasks share.
    cores: u64,
    /// Each task's CPU stints `(start, end)`, in time order (only background tasks').
    stints: [VecDeque<(u64, u64)>; Task::ALL.len()],
    jitter_ppm: u64,
    rng: ChaCha8Rng,
}

impl Clock {
    /// A clock at 0 ns whose charges vary by up to ±`jitter_ppm` parts per million, drawn from
    /// `rng` (its own stream, so timing noise never shifts crash decisions).
    pub fn new(jitter_ppm: u32, rng: ChaCha8Rng) -> Clock {
        assert!(u64::from(jitter_ppm) < PPM, "jitter must stay below 100%");
        Clock {
            now_ns: 0,
            task: Task::Foreground,
            task_ns: [0; Task::ALL.len()],
            cores: u64::MAX,
            stints: Default::default(),
            jitter_ppm: u64::from(jitter_ppm),
            rng,
        }
    }

    /// The same clock with its tasks sharing `cores` CPUs (from the start: no contention).
    pub fn with_cores(mut self, cores: u32) -> Clock {
        assert!(cores > 0, "a machine needs a CPU");
        self.cores = u64::from(cores);
        self
    }

    /// The current virtual time.
    pub fn now_ns(&self) -> u64 {
        self.now_ns
    }

    /// The task whose time `now_ns` is.
    pub fn task(&self) -> Task {
        self.task
    }

    /// Makes `task` current, its clock moved to at least `start_ns`; returns the previous task.
    pub fn switch_task(&mut self, task: Task, start_ns: u64) -> Task {
        let previous = self.task;
        self.task_ns[previous.index()] = self.now_ns;
        self.task = task;
        self.now_ns = self.task_ns[task.index()].max(start_ns);
        self.forget_stints();
        previous
    }

    /// Drops stints no task can meet any more: those that end before every task's clock.
    fn forget_stints(&mut self) {
        self.task_ns[self.task.index()] = self.now_ns;
        let oldest = self.task_ns.iter().copied().min().unwrap_or(0);
        for s in &mut self.stints {
            while s.front().is_some_and(|&(_, end)| end <= oldest) || s.len() > STINTS_MAX {
                s.pop_front();
            }
        }
    }

    /// Whether `task` has a CPU stint covering `t_ns`, and the next stint boundary after it.
    fn stint_at(&self, task: Task, t_ns: u64) -> (bool, u64) {
        let s = &self.stints[task.index()];
        let i = s.partition_point(|&(_, end)| end <= t_ns);
        match s.get(i) {
            Some(&(start, end)) if start <= t_ns => (true, end),
            Some(&(start, _)) => (false, start),
            None => (false, u64::MAX),
        }
    }

    /// When `cpu_ns` of CPU work that the current task starts at `now_ns` ends, sharing the
    /// cores with the other runnable tasks.
    fn contended_end(&self, cpu_ns: u64) -> u64 {
        let mut t = self.now_ns;
        let mut left = u128::from(cpu_ns);
        // Each pass crosses one stint boundary; stints are bounded, so is this.
        loop {
            let mut runnable = 1u64;
            let mut next = u64::MAX;
            for other in [Task::Foreground, Task::Flush, Task::Compaction] {
                if other == self.task {
                    continue;
                }
                if other == Task::Foreground {
                    runnable += 1; // always runnable, as a benchmark's writer
                    continue;
                }
                let (busy, boundary) = self.stint_at(other, t);
                runnable += u64::from(busy);
                next = next.min(boundary);
            }
            // Wall time for `left` at this share: left × runnable / cores when crowded.
            let wall = if runnable <= self.cores {
                left
            } else {
                (left * u128::from(runnable)).div_ceil(u128::from(self.cores))
            };
            let span = u128::from(next - t);
            if wall <= span {
                return u64::try_from(u128::from(t) + wall).unwrap_or(u64::MAX);
            }
            let done = if runnable <= self.cores {
                span
            } else {
                span * u128::from(self.cores) / u128::from(runnable)
            };
            left -= done.min(left);
            t = next;
        }
    }

    /// A new process after a crash: the foreground, at the latest time any task reached.
    pub fn reboot(&mut self) {
        self.task_ns[self.task.index()] = self.now_ns;
        let latest = self.task_ns.iter().copied().max().unwrap_or(0);
        self.task_ns = [latest; Task::ALL.len()];
        self.task = Task::Foreground;
        self.now_ns = latest;
        self.forget_stints();
    }

    /// Runs `cost_ns` of CPU work, jittered, on the current task: the clock advances by it,
    /// or by more while the cores are crowded; returns the time that passed.
    pub fn charge(&mut self, cost_ns: u64) -> u64 {
        let cpu_ns = self.jittered(cost_ns);
        let start = self.now_ns;
        let end = if self.cores >= Task::ALL.len() as u64 || cpu_ns == 0 {
            start.saturating_add(cpu_ns)
        } else {
            self.contended_end(cpu_ns)
        };
        if self.task != Task::Foreground && end > start {
            let stints = &mut self.stints[self.task.index()];
            match stints.back_mut() {
                Some(last) if last.1 == start => last.1 = end,
                _ => stints.push_back((start, end)),
            }
            if stints.len() > STINTS_MAX {
                self.forget_stints();
            }
        }
        self.now_ns = end;
        end - start
    }

    /// `cost_ns` with jitter drawn (the same draw [`Clock::charge`] makes), without advancing:
    /// for costs that run beside the caller, like a device serving io_uring requests.
    pub fn jittered(&mut self, cost_ns: u64) -> u64 {
        let span = u128::from(cost_ns) * u128::from(self.jitter_ppm) / u128::from(PPM);
        if span == 0 {
            cost_ns
        } else {
            // Uniform in [cost - span, cost + span]; span < cost, so never negative.
            let draw = u128::from(self.rng.next_u64()) % (2 * span + 1);
            let charged = u128::from(cost_ns) + draw - span;
            u64::try_from(charged).unwrap_or(u64::MAX)
        }
    }

    /// Advances the clock to `t_ns` if that is later (waiting for an event).
    pub fn advance_to(&mut self, t_ns: u64) {
        self.now_ns = self.now_ns.max(t_ns);
    }

    /// Advances the clock by exactly `ns` (a sleep: the caller asked for that much).
    pub fn advance(&mut self, ns: u64) {
        self.now_ns = self.now_ns.saturating_add(ns);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn each_task_keeps_its_own_time() {
        let mut c = Clock::new(0, ChaCha8Rng::seed_from_u64(1));
        c.advance(100);
        assert_eq!(c.switch_task(Task::Flush, 100), Task::Foreground);
        c.advance(1_000);
        assert_eq!(c.now_ns(), 1_100);
        c.switch_task(Task::Foreground, 0);
        assert_eq!(c.now_ns(), 100, "the foreground did not wait for the flush");
        c.advance(50);
        // The flush task resumes where it stopped, not where the foreground is.
        c.switch_task(Task::Flush, 150);
        assert_eq!(c.now_ns(), 1_100);
        c.switch_task(Task::Compaction, 40);
        assert_eq!(c.now_ns(), 40, "a task starts no earlier than asked");
        c.reboot();
        assert_eq!((c.task(), c.now_ns()), (Task::Foreground, 1_100));
    }

    #[test]
    fn three_runnable_tasks_share_two_cores() {
        let mut c = Clock::new(0, ChaCha8Rng::seed_from_u64(1)).with_cores(2);
        // A flush computes 0..1,000 ns: beside the (always runnable) foreground, 2 tasks on
        // 2 cores, full speed.
        c.switch_task(Task::Flush, 0);
        assert_eq!(c.charge(1_000), 1_000);
        // A compaction from 500: three tasks while the flush's stint lasts (500..1,000, 2/3
        // speed: 333 ns of work), then full speed for the other 667 ns.
        c.switch_task(Task::Compaction, 500);
        assert_eq!(c.charge(1_000), 500 + 667);
        // The foreground from 0: crowded while both stints overlap it (500..1,000), else not.
        c.switch_task(Task::Foreground, 0);
        assert_eq!(c.charge(400), 400);
        assert_eq!(
            c.charge(400),
            100 + 450,
            "400..500 alone, then 300 ns at 2/3"
        );
        // A device wait is not CPU: after a gap, the flush's next stint starts anew.
        c.switch_task(Task::Flush, 0);
        c.advance_to(5_000);
        c.charge(100);
        c.switch_task(Task::Foreground, 0);
        c.advance_to(2_000);
        assert_eq!(
            c.charge(100),
            100,
            "the compaction ended at 1,667; the flush waits"
        );
    }

    #[test]
    fn without_a_core_limit_charges_are_exact() {
        let mut c = Clock::new(0, ChaCha8Rng::seed_from_u64(1));
        c.switch_task(Task::Flush, 0);
        c.charge(1_000);
        c.switch_task(Task::Compaction, 0);
        assert_eq!(c.charge(1_000), 1_000);
    }

    #[test]
    fn jitter_stays_in_bounds_and_repeats_with_the_seed() {
        let run = |seed| {
            let mut c = Clock::new(50_000, ChaCha8Rng::seed_from_u64(seed));
            (0..1000).map(|_| c.charge(1_000)).collect::<Vec<_>>()
        };
        let a = run(1);
        assert!(a.iter().all(|&n| (950..=1_050).contains(&n)), "±5%");
        assert_eq!(a, run(1));
        assert_ne!(a, run(2));
        let mut exact = Clock::new(0, ChaCha8Rng::seed_from_u64(1));
        assert_eq!(exact.charge(1_234), 1_234);
        assert_eq!(exact.now_ns(), 1_234);
    }
}
