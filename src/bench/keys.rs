//! Benchmark keys laid out as db_bench lays them out, and the order they are visited in.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Largest `--key_size` accepted, in bytes (bounds the per-op key buffer).
pub const KEY_SIZE_MAX_BYTES: usize = 64 << 10;

/// The byte layout of a benchmark key: db_bench's `GenerateKeyFromInt` with
/// `keys_per_prefix = 0`.
///
/// The key index is written big-endian into the first `min(key_size, 8)` bytes (so keys sort
/// like their indexes) and the rest is padded with ASCII `'0'`. With `key_size < 8` db_bench
/// keeps only the low `key_size` bytes of the index, so indexes at or above
/// `256^key_size` wrap onto earlier keys; we do the same, and [`KeyFormat::distinct_keys`]
/// says where that starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyFormat {
    key_size: usize,
}

impl KeyFormat {
    /// A layout of `key_size` bytes (1..=[`KEY_SIZE_MAX_BYTES`]).
    pub fn new(key_size: usize) -> Self {
        assert!(
            (1..=KEY_SIZE_MAX_BYTES).contains(&key_size),
            "key_size {key_size} outside 1..={KEY_SIZE_MAX_BYTES}"
        );
        KeyFormat { key_size }
    }

    /// Key length in bytes.
    pub fn key_size(&self) -> usize {
        self.key_size
    }

    /// How many distinct keys the layout can express (`None`: more than `u64` can count).
    pub fn distinct_keys(&self) -> Option<u64> {
        if self.key_size >= 8 {
            None
        } else {
            Some(1u64 << (8 * self.key_size))
        }
    }

    /// Writes the key for index `v` into `key`, which must be exactly `key_size` bytes.
    pub fn fill(&self, v: u64, key: &mut [u8]) {
        assert_eq!(key.len(), self.key_size, "key buffer has the wrong length");
        let int_bytes = self.key_size.min(8);
        // The low `int_bytes` bytes of v, most significant first, as db_bench writes them.
        let be = v.to_be_bytes();
        key[..int_bytes].copy_from_slice(&be[8 - int_bytes..]);
        key[int_bytes..].fill(b'0');
    }

    /// The key for index `v`, freshly allocated (for tests and one-off use).
    pub fn key(&self, v: u64) -> Vec<u8> {
        let mut key = vec![0; self.key_size];
        self.fill(v, &mut key);
        key
    }
}

/// The order in which a benchmark visits key indexes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyOrder {
    /// 0, 1, 2, … (fillseq).
    Sequential,
    /// Uniformly random in `[0, num)`, with repeats (fillrandom, overwrite, readrandom).
    Uniform,
}

/// A stream of key indexes in `[0, num)`.
#[derive(Debug)]
pub struct KeyIndexes {
    order: KeyOrder,
    num: u64,
    next: u64,
    rng: ChaCha8Rng,
}

impl KeyIndexes {
    /// Indexes in `[0, num)` in `order`; `seed` and `stream` pick the random sequence, so each
    /// benchmark of a run can draw its own reproducible sequence.
    pub fn new(order: KeyOrder, num: u64, seed: u64, stream: u64) -> Self {
        assert!(num > 0, "a key space needs at least one key");
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(stream);
        KeyIndexes {
            order,
            num,
            next: 0,
            rng,
        }
    }

    /// The next index.
    pub fn next_index(&mut self) -> u64 {
        match self.order {
            KeyOrder::Sequential => {
                // db_bench's sequential generator keeps counting past num; wrapping keeps the
                // index inside the key space if a caller asks for more than num.
                let v = self.next % self.num;
                self.next += 1;
                v
            }
            KeyOrder::Uniform => self.rng.gen_range(0..self.num),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sixteen_byte_keys_are_big_endian_then_ascii_zeros() {
        let f = KeyFormat::new(16);
        assert_eq!(
            f.key(0x0102_0304_0506_0708),
            b"\x01\x02\x03\x04\x05\x06\x07\x0800000000".to_vec()
        );
        assert_eq!(f.key(0), [&[0u8; 8][..], b"00000000"].concat());
        assert_eq!(f.distinct_keys(), None);
    }

    #[test]
    fn eight_byte_keys_have_no_padding() {
        assert_eq!(KeyFormat::new(8).key(258), vec![0, 0, 0, 0, 0, 0, 1, 2]);
    }

    #[test]
    fn short_keys_keep_the_low_bytes_like_db_bench() {
        let f = KeyFormat::new(2);
        assert_eq!(f.key(0x0102), vec![1, 2]);
        // db_bench: pos[i] = (v >> ((bytes_to_fill - i - 1) * 8)) & 0xFF, so high bytes vanish.
        assert_eq!(f.key(0xAB_0102), vec![1, 2]);
        assert_eq!(f.distinct_keys(), Some(65536));
    }

    #[test]
    fn keys_sort_like_their_indexes() {
        let f = KeyFormat::new(16);
        let mut last = f.key(0);
        for v in [1, 255, 256, 65535, 1 << 32, u64::MAX] {
            let k = f.key(v);
            assert!(k > last, "key({v}) does not sort after its predecessor");
            last = k;
        }
    }

    #[test]
    #[should_panic(expected = "key_size 0")]
    fn empty_keys_are_rejected() {
        let _ = KeyFormat::new(0);
    }

    #[test]
    fn sequential_indexes_count_up_and_wrap() {
        let mut s = KeyIndexes::new(KeyOrder::Sequential, 3, 1, 0);
        let got: Vec<u64> = (0..5).map(|_| s.next_index()).collect();
        assert_eq!(got, vec![0, 1, 2, 0, 1]);
    }

    #[test]
    fn uniform_indexes_stay_in_range_and_repeat_per_seed() {
        let draw = |seed, stream| {
            let mut s = KeyIndexes::new(KeyOrder::Uniform, 1000, seed, stream);
            (0..10_000).map(|_| s.next_index()).collect::<Vec<u64>>()
        };
        let a = draw(7, 1);
        assert!(a.iter().all(|&v| v < 1000));
        assert_eq!(a, draw(7, 1));
        assert_ne!(a, draw(8, 1));
        assert_ne!(a, draw(7, 2));
        // Uniform over 1000 keys in 10,000 draws: every key is hit with overwhelming odds, and
        // some keys repeat (the benchmark writes with repeats, as db_bench does).
        let mut seen = vec![false; 1000];
        for &v in &a {
            seen[v as usize] = true;
        }
        assert!(seen.iter().filter(|&&s| s).count() > 990);
    }
}
