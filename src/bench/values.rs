//! Benchmark values: slices of one pre-generated random buffer, as db_bench's
//! `RandomGenerator` hands them out.

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Size of the pre-generated buffer values are cut from, in bytes (db_bench: 1 MiB).
pub const VALUE_BUFFER_BYTES: usize = 1 << 20;
/// Largest `--value_size` accepted, in bytes (bounds the buffer).
pub const VALUE_SIZE_MAX_BYTES: usize = 64 << 20;

/// The RNG stream reserved for value bytes; key streams use other numbers.
const VALUE_STREAM: u64 = 0;

/// Hands out `value_size`-byte values without per-op RNG work.
///
/// db_bench fills 1 MiB once and returns consecutive slices, wrapping to the start when the
/// next slice would run past the end; so do we. db_bench's bytes are built to compress 2:1,
/// ours are incompressible ChaCha output: we run with compression off, where only the length
/// matters, and random bytes keep a future compressing run honest.
#[derive(Debug)]
pub struct ValueGenerator {
    data: Vec<u8>,
    value_size: usize,
    pos: usize,
}

impl ValueGenerator {
    /// Values of `value_size` bytes cut from a buffer generated from `seed`.
    pub fn new(seed: u64, value_size: usize) -> Self {
        assert!(
            value_size <= VALUE_SIZE_MAX_BYTES,
            "value_size {value_size} above {VALUE_SIZE_MAX_BYTES}"
        );
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(VALUE_STREAM);
        let mut data = vec![0; VALUE_BUFFER_BYTES.max(value_size)];
        rng.fill_bytes(&mut data);
        ValueGenerator {
            data,
            value_size,
            pos: 0,
        }
    }

    /// The next value.
    pub fn next_value(&mut self) -> &[u8] {
        if self.pos + self.value_size > self.data.len() {
            self.pos = 0;
        }
        let start = self.pos;
        self.pos += self.value_size;
        &self.data[start..self.pos]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first_values(seed: u64, value_size: usize, n: usize) -> Vec<Vec<u8>> {
        let mut g = ValueGenerator::new(seed, value_size);
        (0..n).map(|_| g.next_value().to_vec()).collect()
    }

    #[test]
    fn same_seed_same_values() {
        assert_eq!(first_values(1, 100, 50), first_values(1, 100, 50));
    }

    #[test]
    fn different_seed_different_values() {
        assert_ne!(first_values(1, 100, 50), first_values(2, 100, 50));
    }

    #[test]
    fn values_have_the_requested_length_and_differ_from_each_other() {
        let v = first_values(1, 100, 3);
        assert!(v.iter().all(|x| x.len() == 100));
        assert_ne!(v[0], v[1]);
    }

    #[test]
    fn wraps_to_the_start_before_running_off_the_buffer() {
        let size = 300_000;
        let mut g = ValueGenerator::new(3, size);
        let first = g.next_value().to_vec();
        for _ in 1..VALUE_BUFFER_BYTES / size {
            g.next_value();
        }
        // 3 values of 300,000 fit in 1 MiB; the fourth would not, so it starts over.
        assert_eq!(g.next_value(), &first[..]);
    }

    #[test]
    fn values_larger_than_the_default_buffer_work() {
        let size = VALUE_BUFFER_BYTES + 1;
        let v = first_values(4, size, 2);
        assert_eq!(v[0].len(), size);
        assert_eq!(v[0], v[1]);
    }

    #[test]
    fn empty_values_work() {
        assert_eq!(first_values(5, 0, 2), vec![Vec::<u8>::new(), Vec::new()]);
    }
}
