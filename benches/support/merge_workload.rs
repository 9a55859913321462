//! A db_bench-like compaction input shared by the benches: sorted runs of 4 KiB data blocks
//! (16-byte decimal keys, restart interval 16, trailers with CRC32c), one entry in 16 a
//! deletion, keys drawn from a space small enough that some keys have versions in several
//! runs. Bottommost, no snapshots, output files up to 64 MiB.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use resystance::key::{compare_internal, internal_key, ValueType};
use resystance::sst::block::BlockBuilder;
use resystance::sst::format::block_trailer;
use resystance_programs::abi::JobParams;

/// Bytes a data block is filled to before it is cut.
pub const BLOCK_SIZE_BYTES: usize = 4096;

/// What to generate.
#[derive(Clone, Copy, Debug)]
pub struct MergeWorkload {
    /// The RNG seed.
    pub seed: u64,
    /// Sorted runs.
    pub runs: usize,
    /// Entries in each run.
    pub entries_per_run: usize,
    /// Keys are drawn from `0..key_space`.
    pub key_space: u64,
    /// Bytes of each value.
    pub value_bytes: usize,
}

impl MergeWorkload {
    /// The runs' blocks (with trailers), the job's parameters and the input bytes.
    pub fn build(&self) -> (Vec<Vec<Vec<u8>>>, JobParams, u64) {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        let mut seq = 1u64;
        let mut runs = Vec::new();
        let mut bytes = 0u64;
        for _ in 0..self.runs {
            let mut entries: Vec<(Vec<u8>, Vec<u8>)> = (0..self.entries_per_run)
                .map(|_| {
                    let key = format!("{:016}", rng.gen_range(0..self.key_space));
                    seq += 1;
                    if rng.gen_ratio(1, 16) {
                        (
                            internal_key(key.as_bytes(), seq, ValueType::Deletion),
                            Vec::new(),
                        )
                    } else {
                        let value = (0..self.value_bytes).map(|_| rng.gen()).collect();
                        (internal_key(key.as_bytes(), seq, ValueType::Value), value)
                    }
                })
                .collect();
            entries.sort_by(|a, b| compare_internal(&a.0, &b.0));
            let mut blocks = Vec::new();
            let mut b = BlockBuilder::new(16);
            let mut cut = |b: &mut BlockBuilder, blocks: &mut Vec<Vec<u8>>| {
                let mut block = b.finish().to_vec();
                let trailer = block_trailer(&block);
                block.extend_from_slice(&trailer);
                bytes += block.len() as u64;
                blocks.push(block);
                b.reset();
            };
            for (k, v) in &entries {
                if !b.is_empty() && b.size_estimate() >= BLOCK_SIZE_BYTES {
                    cut(&mut b, &mut blocks);
                }
                b.add(k, v);
            }
            cut(&mut b, &mut blocks);
            runs.push(blocks);
        }
        let params = JobParams {
            num_runs: u32::try_from(self.runs).expect("runs fit the ABI"),
            block_size: BLOCK_SIZE_BYTES as u32,
            restart_interval: 16,
            target_file_size: 64 << 20,
            bottommost: true,
            snapshots: Vec::new(),
            entries_per_call: 1 << 20,
            // The engine's choice for this many runs (src/compaction/program_io.rs).
            window_bytes: resystance_programs::abi::window_bytes_for(
                u32::try_from(self.runs).expect("runs fit the ABI"),
            )
            .expect("the window pool holds the runs"),
        };
        (runs, params, bytes)
    }
}
