//! Which versions of a key survive a flush or compaction.
//!
//! Snapshots split the sequence space into stripes: the stripe of a version is the smallest
//! snapshot that can see it (or "newer than every snapshot"). Within one stripe only the newest
//! version of a user key is visible to anyone, so older ones are dropped. A tombstone is
//! dropped too when the output is the bottommost data for its key range and it lies in the
//! oldest stripe: then nothing older can be uncovered and every snapshot already reads "absent".

use crate::key::{self, ValueType};

/// Decides, entry by entry in internal-key order, what to keep.
#[derive(Debug)]
pub struct VersionFilter {
    snapshots: Vec<u64>,
    bottommost: bool,
    current_user_key: Vec<u8>,
    has_current: bool,
    last_stripe: usize,
}

const NO_STRIPE: usize = usize::MAX;

impl VersionFilter {
    /// A filter for live `snapshots` (any order) and whether the output is bottommost.
    pub fn new(mut snapshots: Vec<u64>, bottommost: bool) -> Self {
        snapshots.sort_unstable();
        snapshots.dedup();
        VersionFilter {
            snapshots,
            bottommost,
            current_user_key: Vec::new(),
            has_current: false,
            last_stripe: NO_STRIPE,
        }
    }

    fn stripe(&self, sequence: u64) -> usize {
        self.snapshots.partition_point(|&s| s < sequence)
    }

    /// Whether the entry with internal key `ikey` (the next one in order) is kept.
    /// Panics on a malformed key: inputs were validated when decoded.
    pub fn keep(&mut self, ikey: &[u8]) -> bool {
        let p = key::parse_internal_key(ikey).expect("compaction input keys are validated");
        if !self.has_current || p.user_key != self.current_user_key.as_slice() {
            self.current_user_key.clear();
            self.current_user_key.extend_from_slice(p.user_key);
            self.has_current = true;
            self.last_stripe = NO_STRIPE;
        }
        let stripe = self.stripe(p.sequence);
        if stripe == self.last_stripe {
            return false; // shadowed by a newer version no snapshot tells apart
        }
        self.last_stripe = stripe;
        !(p.value_type == ValueType::Deletion && self.bottommost && stripe == 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::internal_key;

    fn run(snapshots: &[u64], bottommost: bool, entries: &[(&[u8], u64, ValueType)]) -> Vec<u64> {
        let mut f = VersionFilter::new(snapshots.to_vec(), bottommost);
        entries
            .iter()
            .filter(|(k, s, t)| f.keep(&internal_key(k, *s, *t)))
            .map(|e| e.1)
            .collect()
    }

    use ValueType::{Deletion as D, Value as V};

    #[test]
    fn without_snapshots_only_the_newest_survives() {
        let e: &[(&[u8], u64, ValueType)] =
            &[(b"a", 9, V), (b"a", 5, V), (b"a", 1, D), (b"b", 3, V)];
        assert_eq!(run(&[], false, e), vec![9, 3]);
    }

    #[test]
    fn snapshots_keep_one_version_per_stripe() {
        // Snapshot 5 sees seq 5 (not 9); snapshot 2 sees seq 1.
        let e: &[(&[u8], u64, ValueType)] =
            &[(b"a", 9, V), (b"a", 5, V), (b"a", 4, V), (b"a", 1, V)];
        assert_eq!(run(&[5, 2], false, e), vec![9, 5, 1]);
    }

    #[test]
    fn tombstones_drop_only_at_the_bottom_in_the_oldest_stripe() {
        let e: &[(&[u8], u64, ValueType)] =
            &[(b"a", 9, D), (b"a", 5, V), (b"b", 4, D), (b"b", 2, V)];
        assert_eq!(run(&[], false, e), vec![9, 4]);
        assert_eq!(run(&[], true, e), Vec::<u64>::new());
        // A snapshot at 6 still needs a@5 under the tombstone at 9.
        assert_eq!(run(&[6], true, e), vec![9, 5]);
        // b's tombstone at 4 is in the oldest stripe: dropped with b@2.
        let f: &[(&[u8], u64, ValueType)] = &[(b"b", 4, D), (b"b", 2, V)];
        assert_eq!(run(&[6], true, f), Vec::<u64>::new());
    }
}
