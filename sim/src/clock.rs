//! The virtual clock: nanoseconds that pass only when the model charges a cost.

use rand::RngCore;
use rand_chacha::ChaCha8Rng;
use resystance_traces::Task;

/// Parts per million: the unit of jitter.
pub const PPM: u64 = 1_000_000;

/// Virtual time plus the seeded jitter applied to every charged cost.
///
/// One clock per [`Task`]: the engine's foreground and its background jobs each run on their
/// own timeline, and `now_ns` is the current task's. Calls happen in host order, one at a
/// time; each is charged to the task that makes it.
#[derive(Debug)]
pub struct Clock {
    now_ns: u64,
    task: Task,
    /// Each task's time when it last stopped being current.
    task_ns: [u64; Task::ALL.len()],
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
            jitter_ppm: u64::from(jitter_ppm),
            rng,
        }
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
        previous
    }

    /// A new process after a crash: the foreground, at the latest time any task reached.
    pub fn reboot(&mut self) {
        self.task_ns[self.task.index()] = self.now_ns;
        let latest = self.task_ns.iter().copied().max().unwrap_or(0);
        self.task_ns = [latest; Task::ALL.len()];
        self.task = Task::Foreground;
        self.now_ns = latest;
    }

    /// Advances the clock by `cost_ns`, jittered; returns what was charged.
    pub fn charge(&mut self, cost_ns: u64) -> u64 {
        let charged = self.jittered(cost_ns);
        self.advance(charged);
        charged
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
