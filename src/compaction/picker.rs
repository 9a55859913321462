//! The leveled compaction picker, with RocksDB's scoring.
//!
//! L0 is scored by file count over `level0_file_num_compaction_trigger`; each sorted level by
//! bytes over its maximum. The highest score >= 1 is compacted. From a sorted level the file
//! with the least overlap with the next level, relative to its own size, is picked (RocksDB's
//! default `kMinOverlappingRatio`). A lone file with no overlap below is moved, not rewritten.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::key;
use crate::options::Options;
use crate::version::{FileMeta, Version};

/// A compaction the picker chose.
#[derive(Clone, Debug, PartialEq)]
pub struct PickedCompaction {
    /// The level it starts from.
    pub level: usize,
    /// `level + 1`; `level` itself when a manual compaction rewrites the deepest level.
    pub output_level: usize,
    /// Files of `level`.
    pub inputs: Vec<Arc<FileMeta>>,
    /// Overlapping files of `output_level`.
    pub output_level_inputs: Vec<Arc<FileMeta>>,
    /// One input file and nothing overlapping it below: move it, rewrite nothing.
    pub trivial_move: bool,
    /// No level below `output_level` holds data in the inputs' key range.
    pub bottommost: bool,
    /// The score that made it run.
    pub score: f64,
}

impl PickedCompaction {
    /// Every input file.
    pub fn all_inputs(&self) -> impl Iterator<Item = &Arc<FileMeta>> {
        self.inputs.iter().chain(self.output_level_inputs.iter())
    }
}

/// Scores of each level that can be compacted (every level but the last), in level order.
pub fn level_scores(version: &Version, options: &Options) -> Vec<(usize, f64)> {
    let last = version.levels.len() - 1;
    (0..last)
        .map(|level| {
            let score = if level == 0 {
                version.levels[0].len() as f64 / options.level0_file_num_compaction_trigger as f64
            } else {
                version.level_bytes(level) as f64 / options.max_bytes_for_level(level) as f64
            };
            (level, score)
        })
        .collect()
}

/// User-key range covered by `files` (non-empty).
pub fn key_range(files: &[Arc<FileMeta>]) -> (Vec<u8>, Vec<u8>) {
    let lo = files
        .iter()
        .map(|f| f.smallest_user_key())
        .min()
        .expect("non-empty");
    let hi = files
        .iter()
        .map(|f| f.largest_user_key())
        .max()
        .expect("non-empty");
    (lo.to_vec(), hi.to_vec())
}

/// Picks the next compaction, skipping files already being compacted; `None` if no level
/// needs one.
pub fn pick_compaction(
    version: &Version,
    options: &Options,
    compacting: &BTreeSet<u64>,
) -> Option<PickedCompaction> {
    let mut scores = level_scores(version, options);
    scores.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    for (level, score) in scores {
        if score < 1.0 {
            break;
        }
        let picked = if level == 0 {
            pick_level0(version, compacting)
        } else {
            pick_sorted_level(version, level, compacting)
        };
        if let Some((inputs, output_level_inputs)) = picked {
            let bottommost = is_bottommost(version, level + 1, &inputs, &output_level_inputs);
            let trivial_move = level > 0 && inputs.len() == 1 && output_level_inputs.is_empty();
            return Some(PickedCompaction {
                level,
                output_level: level + 1,
                inputs,
                output_level_inputs,
                trivial_move,
                bottommost,
                score,
            });
        }
    }
    None
}

type Inputs = (Vec<Arc<FileMeta>>, Vec<Arc<FileMeta>>);

/// Whether a compaction of `inputs` and `output_level_inputs` into `output_level` writes the
/// bottommost data for its key range: no level below `output_level` holds a key in the range
/// of *all* its inputs (the output-level files pulled in widen it).
pub fn is_bottommost(
    version: &Version,
    output_level: usize,
    inputs: &[Arc<FileMeta>],
    output_level_inputs: &[Arc<FileMeta>],
) -> bool {
    let all: Vec<Arc<FileMeta>> = inputs.iter().chain(output_level_inputs).cloned().collect();
    let (lo, hi) = key_range(&all);
    ((output_level + 1)..version.levels.len()).all(|l| version.overlapping(l, &lo, &hi).is_empty())
}

fn pick_level0(version: &Version, compacting: &BTreeSet<u64>) -> Option<Inputs> {
    let l0 = &version.levels[0];
    if l0.is_empty() || l0.iter().any(|f| compacting.contains(&f.number)) {
        return None; // one L0 compaction at a time, and it takes every L0 file
    }
    let inputs = l0.clone();
    let (lo, hi) = key_range(&inputs);
    let below = version.overlapping(1, &lo, &hi);
    if below.iter().any(|f| compacting.contains(&f.number)) {
        return None;
    }
    Some((inputs, below))
}

fn pick_sorted_level(
    version: &Version,
    level: usize,
    compacting: &BTreeSet<u64>,
) -> Option<Inputs> {
    let mut best: Option<(u128, Inputs)> = None;
    for f in &version.levels[level] {
        if compacting.contains(&f.number) {
            continue;
        }
        let below = version.overlapping(level + 1, f.smallest_user_key(), f.largest_user_key());
        if below.iter().any(|b| compacting.contains(&b.number)) {
            continue;
        }
        let overlap_bytes: u64 = below.iter().map(|b| b.file_size).sum();
        // Overlap relative to the file's own size, scaled to stay an integer.
        let ratio = u128::from(overlap_bytes) * 1024 / u128::from(f.file_size.max(1));
        if best.as_ref().is_none_or(|(r, _)| ratio < *r) {
            best = Some((ratio, (vec![Arc::clone(f)], below)));
        }
    }
    best.map(|(_, inputs)| inputs)
}

/// Whether `user_key` may exist in levels below `level` of `version` (for Get short-cuts and
/// tests).
pub fn key_may_exist_below(version: &Version, level: usize, user_key: &[u8]) -> bool {
    ((level + 1)..version.levels.len()).any(|l| {
        version.levels[l].iter().any(|f| {
            key::user_key(&f.smallest) <= user_key && user_key <= key::user_key(&f.largest)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::{internal_key, ValueType};
    use crate::version::VersionEdit;

    fn meta(number: u64, lo: &str, hi: &str, size: u64) -> (usize, FileMeta) {
        (
            0,
            FileMeta {
                number,
                file_size: size,
                smallest: internal_key(lo.as_bytes(), number, ValueType::Value),
                largest: internal_key(hi.as_bytes(), number, ValueType::Value),
                num_entries: 1,
                smallest_seq: number,
                largest_seq: number,
            },
        )
    }

    fn at(level: usize, m: (usize, FileMeta)) -> (usize, FileMeta) {
        (level, m.1)
    }

    fn opts() -> Options {
        Options {
            max_bytes_for_level_base: 1000,
            ..Options::default()
        }
    }

    #[test]
    fn l0_compaction_takes_all_l0_files_and_the_overlap_below() {
        let edit = VersionEdit {
            added: vec![
                meta(1, "a", "c", 10),
                meta(2, "b", "d", 10),
                meta(3, "a", "b", 10),
                meta(4, "c", "e", 10),
                at(1, meta(5, "a", "b", 10)),
                at(1, meta(6, "x", "z", 10)),
            ],
            ..VersionEdit::default()
        };
        let v = Version::empty(7).apply(&edit).unwrap();
        let p = pick_compaction(&v, &opts(), &BTreeSet::new()).unwrap();
        assert_eq!(p.level, 0);
        assert_eq!(p.inputs.len(), 4);
        assert_eq!(
            p.output_level_inputs
                .iter()
                .map(|f| f.number)
                .collect::<Vec<_>>(),
            vec![5]
        );
        assert!(p.bottommost);
        assert!(!p.trivial_move);
        // Three L0 files: below the trigger.
        let few = Version::empty(7)
            .apply(&VersionEdit {
                added: edit.added[..3].to_vec(),
                ..VersionEdit::default()
            })
            .unwrap();
        assert!(pick_compaction(&few, &opts(), &BTreeSet::new()).is_none());
        // A file being compacted blocks L0.
        assert!(pick_compaction(&v, &opts(), &BTreeSet::from([2])).is_none());
    }

    #[test]
    fn sorted_level_picks_least_overlap_and_moves_trivially() {
        let edit = VersionEdit {
            added: vec![
                at(1, meta(1, "a", "c", 600)),
                at(1, meta(2, "m", "p", 600)),
                at(2, meta(3, "a", "b", 5000)),
                at(3, meta(4, "n", "n", 10)),
            ],
            ..VersionEdit::default()
        };
        let v = Version::empty(7).apply(&edit).unwrap();
        let p = pick_compaction(&v, &opts(), &BTreeSet::new()).unwrap();
        assert_eq!(p.level, 1);
        assert_eq!(p.inputs[0].number, 2, "file 2 has no overlap in L2");
        assert!(p.trivial_move);
        assert!(!p.bottommost, "L3 holds key n");
    }
}
