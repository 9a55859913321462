//! The virtual clock: nanoseconds that pass only when the model charges a cost.

use rand::RngCore;
use rand_chacha::ChaCha8Rng;

/// Parts per million: the unit of jitter.
pub const PPM: u64 = 1_000_000;

/// Virtual time plus the seeded jitter applied to every charged cost.
#[derive(Debug)]
pub struct Clock {
    now_ns: u64,
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
            jitter_ppm: u64::from(jitter_ppm),
            rng,
        }
    }

    /// The current virtual time.
    pub fn now_ns(&self) -> u64 {
        self.now_ns
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
