//! The command line: `resystance bench` with db_bench's flag names and defaults.

use std::path::PathBuf;

use clap::builder::{BoolishValueParser, RangedU64ValueParser};
use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};
use serde::Serialize;

// The engine refuses keys and values longer than the compaction program takes; the flags
// say so up front rather than at the first write.
use crate::options::CompactionMode;
use resystance_programs::abi::{
    USER_KEY_BYTES_MAX as KEY_SIZE_MAX_BYTES, VALUE_BYTES_MAX as VALUE_SIZE_MAX_BYTES,
};

/// Most rounds `--repeat` runs (each is a full pass over every mode and benchmark).
pub const REPEAT_MAX: u32 = 1000;

/// The seed used when `--seed` is 0 (db_bench would take the time; we stay reproducible).
pub const DEFAULT_SEED: u64 = 1;

/// `resystance`: the LSM engine's command-line interface.
#[derive(Debug, Parser)]
#[command(
    name = "resystance",
    version,
    about = "A testbed for offloading LSM-tree compaction into the Linux kernel with eBPF and io_uring"
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run db_bench-style benchmarks against the engine (db_bench's flag names and defaults).
    Bench(BenchArgs),
    /// Run or disassemble an eBPF program on the vm or the Linux kernel.
    Bpf(crate::bpf_cmd::BpfArgs),
    /// Run a seed campaign on the simulated kernel: random workloads checked against a model,
    /// with faults and power losses, and the three compaction modes compared byte for byte.
    Sim(crate::campaign::cli::SimArgs),
}

/// One db_bench benchmark we implement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Benchmark {
    /// Write `--num` keys in sequential order into a fresh database.
    #[value(name = "fillseq")]
    FillSeq,
    /// Write `--num` uniformly random keys (with repeats) into a fresh database.
    #[value(name = "fillrandom")]
    FillRandom,
    /// Write `--num` uniformly random keys into the existing database.
    #[value(name = "overwrite")]
    Overwrite,
    /// Read `--reads` uniformly random keys and count how many are found.
    #[value(name = "readrandom")]
    ReadRandom,
}

impl Benchmark {
    /// db_bench's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Benchmark::FillSeq => "fillseq",
            Benchmark::FillRandom => "fillrandom",
            Benchmark::Overwrite => "overwrite",
            Benchmark::ReadRandom => "readrandom",
        }
    }

    /// Whether db_bench runs it on a freshly destroyed database (its `fresh_db`).
    pub fn wants_fresh_db(self) -> bool {
        matches!(self, Benchmark::FillSeq | Benchmark::FillRandom)
    }

    /// Whether it reads (otherwise it writes).
    pub fn is_read(self) -> bool {
        matches!(self, Benchmark::ReadRandom)
    }
}

/// Which kernel the engine runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// The host's Linux kernel.
    Real,
    /// The simulated kernel (virtual clock, modeled devices).
    Sim,
}

/// `resystance bench` flags, spelled and defaulted as db_bench spells and defaults them.
#[derive(Clone, Debug, Args, Serialize)]
pub struct BenchArgs {
    /// Comma-separated benchmarks, run in order like db_bench (fillseq and fillrandom each start from a destroyed database)
    #[arg(
        long = "benchmarks",
        value_enum,
        value_delimiter = ',',
        default_value = "fillseq,fillrandom,overwrite,readrandom"
    )]
    pub benchmarks: Vec<Benchmark>,

    /// Number of key/values to place in the database (and the key space of random benchmarks)
    #[arg(long = "num", default_value_t = 1_000_000, value_parser = RangedU64ValueParser::<u64>::new().range(1..))]
    pub num: u64,

    /// Number of reads for read benchmarks [default: --num]
    #[arg(long = "reads")]
    pub reads: Option<u64>,

    /// Size of each value in bytes
    #[arg(long = "value_size", default_value_t = 100,
          value_parser = RangedU64ValueParser::<usize>::new().range(0..=VALUE_SIZE_MAX_BYTES as u64))]
    pub value_size: usize,

    /// Size of each key in bytes (an 8-byte big-endian index, then '0' padding)
    #[arg(long = "key_size", default_value_t = 16,
          value_parser = RangedU64ValueParser::<usize>::new().range(1..=KEY_SIZE_MAX_BYTES as u64))]
    pub key_size: usize,

    /// Bytes buffered in a memtable before it is flushed to an L0 file
    #[arg(long = "write_buffer_size", default_value_t = 64 << 20)]
    pub write_buffer_size: usize,

    /// Memtables (active + immutable) before writes stop
    #[arg(long = "max_write_buffer_number", default_value_t = 2)]
    pub max_write_buffer_number: usize,

    /// Target size of compaction output files in bytes
    #[arg(long = "target_file_size_base", default_value_t = 64 << 20)]
    pub target_file_size_base: u64,

    /// Maximum bytes in L1
    #[arg(long = "max_bytes_for_level_base", default_value_t = 256 << 20)]
    pub max_bytes_for_level_base: u64,

    /// L0 files that trigger an L0 -> L1 compaction
    #[arg(long = "level0_file_num_compaction_trigger", default_value_t = 4)]
    pub level0_file_num_compaction_trigger: usize,

    /// L0 files at which writes are slowed down
    #[arg(long = "level0_slowdown_writes_trigger", default_value_t = 20)]
    pub level0_slowdown_writes_trigger: usize,

    /// L0 files at which writes stop
    #[arg(long = "level0_stop_writes_trigger", default_value_t = 36)]
    pub level0_stop_writes_trigger: usize,

    /// Database directory [default: the kernel's default; real: $TMPDIR/resystance-bench]
    #[arg(long = "db")]
    pub db: Option<PathBuf>,

    /// Keep the existing database (otherwise its files are destroyed first; fill benchmarks are then skipped)
    #[arg(long = "use_existing_db", action = ArgAction::Set, num_args = 0..=1, require_equals = true,
          default_value_t = false, default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub use_existing_db: bool,

    /// Seed for key order and value bytes (0 picks the fixed default 1, so runs repeat)
    #[arg(long = "seed", default_value_t = 0)]
    pub seed: u64,

    /// What opening does about damaged WAL records: 0 tolerate corrupted tail records, 1 absolute consistency, 2 point-in-time recovery, 3 skip any corrupted records
    #[arg(long = "wal_recovery_mode", default_value_t = 2,
          value_parser = RangedU64ValueParser::<u8>::new().range(0..=3))]
    pub wal_recovery_mode: u8,

    /// How compactions move their bytes; a comma list runs the benchmarks once per mode, side by side
    #[arg(
        long = "compaction_mode",
        value_delimiter = ',',
        default_value = "baseline,uring,resystance"
    )]
    pub compaction_mode: Vec<CompactionMode>,

    /// Compactions read their inputs with O_DIRECT (aligned reads from the device, no page cache)
    #[arg(long = "direct", action = ArgAction::Set, num_args = 0..=1, require_equals = true,
          default_value_t = false, default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub direct: bool,

    /// The io_uring compaction modes' rings poll submissions with a kernel thread (IORING_SETUP_SQPOLL)
    #[arg(long = "sqpoll", action = ArgAction::Set, num_args = 0..=1, require_equals = true,
          default_value_t = false, default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub sqpoll: bool,

    /// The io_uring compaction modes read a run's next blocks while the merge works on its window (half-windows); false: each window when the merge needs it
    #[arg(long = "uring_readahead", action = ArgAction::Set, num_args = 0..=1, require_equals = true,
          default_value_t = true, default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub uring_readahead: bool,

    /// Submission-queue entries of the io_uring compaction modes' rings: reads of one window,
    /// or output writes and syncs, in flight at once
    #[arg(long = "uring_queue_depth", default_value_t = crate::options::URING_QUEUE_DEPTH_DEFAULT)]
    pub uring_queue_depth: u32,

    /// Rounds of the whole mode list: round r starts with the (r mod modes)-th mode, so each runs first equally often; the comparison gives medians and every round's ratios
    #[arg(long = "repeat", default_value_t = 1,
          value_parser = RangedU64ValueParser::<u32>::new().range(1..=u64::from(REPEAT_MAX)))]
    pub repeat: u32,

    /// Which kernel runs the engine
    #[arg(long = "backend", value_enum, default_value_t = Backend::Sim)]
    pub backend: Backend,

    /// The simulated NVMe device (--backend=sim): a preset name (this-host, nvme-gen4) or a RON file
    #[arg(long = "nvme", value_name = "PRESET|FILE", default_value = "this-host")]
    pub nvme: String,

    /// The simulated CPU costs (--backend=sim): a profile name (this-host) or a RON file
    #[arg(long = "cpu", value_name = "PRESET|FILE", default_value = "this-host")]
    pub cpu: String,

    /// Also write every result, the flags and host facts as JSON to this file
    #[arg(long = "json", value_name = "FILE")]
    pub json: Option<PathBuf>,
}

impl BenchArgs {
    /// The seed actually used (`--seed=0` means [`DEFAULT_SEED`]).
    pub fn effective_seed(&self) -> u64 {
        if self.seed == 0 {
            DEFAULT_SEED
        } else {
            self.seed
        }
    }

    /// Reads per read benchmark (`--reads`, defaulting to `--num` as in db_bench).
    pub fn effective_reads(&self) -> u64 {
        self.reads.unwrap_or(self.num)
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    fn parse(args: &[&str]) -> Result<BenchArgs, clap::Error> {
        let mut argv = vec!["resystance", "bench"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).map(|cli| match cli.command {
            Command::Bench(b) => b,
            Command::Bpf(_) => panic!("parsed as bpf"),
            Command::Sim(_) => panic!("parsed as sim"),
        })
    }

    #[test]
    fn the_clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_are_db_bench_defaults() {
        let b = parse(&[]).unwrap();
        assert_eq!(
            b.benchmarks,
            vec![
                Benchmark::FillSeq,
                Benchmark::FillRandom,
                Benchmark::Overwrite,
                Benchmark::ReadRandom
            ]
        );
        assert_eq!(b.num, 1_000_000);
        assert_eq!(b.effective_reads(), 1_000_000);
        assert_eq!((b.key_size, b.value_size), (16, 100));
        assert_eq!(b.write_buffer_size, 67_108_864);
        assert_eq!(b.target_file_size_base, 67_108_864);
        assert_eq!(b.max_bytes_for_level_base, 268_435_456);
        assert_eq!(b.level0_file_num_compaction_trigger, 4);
        assert_eq!(b.level0_slowdown_writes_trigger, 20);
        assert_eq!(b.level0_stop_writes_trigger, 36);
        assert_eq!(b.max_write_buffer_number, 2);
        assert!(!b.use_existing_db);
        assert_eq!(b.wal_recovery_mode, 2, "kPointInTimeRecovery");
        assert_eq!(b.effective_seed(), DEFAULT_SEED);
        // Not db_bench's: ours run the simulator with the three modes side by side.
        assert_eq!(
            b.compaction_mode,
            vec![
                CompactionMode::Baseline,
                CompactionMode::Uring,
                CompactionMode::Resystance
            ]
        );
        assert_eq!(b.backend, Backend::Sim);
        assert_eq!(b.nvme, "this-host");
        assert_eq!(b.cpu, "this-host");
        assert!(!b.direct, "page-cache reads unless --direct");
        assert_eq!((b.db, b.json), (None, None));
    }

    #[test]
    fn equals_form_and_comma_lists() {
        let cli = Cli::try_parse_from([
            "resystance",
            "bench",
            "--benchmarks=fillseq,readrandom",
            "--num=10",
        ])
        .unwrap();
        let Command::Bench(b) = cli.command else {
            panic!("parsed as bpf");
        };
        assert_eq!(
            b.benchmarks,
            vec![Benchmark::FillSeq, Benchmark::ReadRandom]
        );
        assert_eq!(b.num, 10);
        assert_eq!(b.effective_reads(), 10);
    }

    #[test]
    fn every_flag_is_spelled_like_db_bench() {
        let b = parse(&[
            "--reads=5",
            "--value_size=400",
            "--key_size=20",
            "--write_buffer_size=4194304",
            "--max_write_buffer_number=3",
            "--target_file_size_base=4194304",
            "--max_bytes_for_level_base=16777216",
            "--level0_file_num_compaction_trigger=2",
            "--level0_slowdown_writes_trigger=8",
            "--level0_stop_writes_trigger=12",
            "--db=/tmp/x",
            "--seed=42",
            "--wal_recovery_mode=1",
            "--compaction_mode=baseline,uring,resystance",
            "--backend=sim",
            "--json=/tmp/out.json",
        ])
        .unwrap();
        assert_eq!(b.effective_reads(), 5);
        assert_eq!((b.key_size, b.value_size), (20, 400));
        assert_eq!(b.write_buffer_size, 4 << 20);
        assert_eq!(b.max_write_buffer_number, 3);
        assert_eq!(b.target_file_size_base, 4 << 20);
        assert_eq!(b.max_bytes_for_level_base, 16 << 20);
        assert_eq!(
            (
                b.level0_file_num_compaction_trigger,
                b.level0_slowdown_writes_trigger,
                b.level0_stop_writes_trigger
            ),
            (2, 8, 12)
        );
        assert_eq!(b.db, Some(PathBuf::from("/tmp/x")));
        assert_eq!(b.effective_seed(), 42);
        assert_eq!(b.wal_recovery_mode, 1);
        assert_eq!(b.compaction_mode, CompactionMode::ALL.to_vec());
        assert_eq!(b.backend, Backend::Sim);
        assert_eq!(b.json, Some(PathBuf::from("/tmp/out.json")));
    }

    #[test]
    fn direct_reaches_the_engine() {
        for (args, direct) in [
            (&[][..], false),
            (&["--direct"][..], true),
            (&["--direct=false"][..], false),
        ] {
            let b = parse(args).unwrap();
            let o = crate::bench::runner::options_for(&b, CompactionMode::Baseline).unwrap();
            assert_eq!(o.use_direct_reads, direct, "{args:?}");
        }
    }

    #[test]
    fn wal_recovery_mode_reaches_the_engine_in_rocksdbs_numbering() {
        use crate::options::WalRecoveryMode;
        for (n, mode) in WalRecoveryMode::ALL.into_iter().enumerate() {
            let b = parse(&[&format!("--wal_recovery_mode={n}")]).unwrap();
            let o = crate::bench::runner::options_for(&b, CompactionMode::Baseline).unwrap();
            assert_eq!(o.wal_recovery_mode, mode, "--wal_recovery_mode={n}");
        }
    }

    #[test]
    fn space_separated_values_work_too() {
        let b = parse(&["--num", "7", "--benchmarks", "overwrite"]).unwrap();
        assert_eq!((b.num, b.benchmarks), (7, vec![Benchmark::Overwrite]));
    }

    #[test]
    fn use_existing_db_is_a_gflags_style_bool() {
        assert!(parse(&["--use_existing_db"]).unwrap().use_existing_db);
        assert!(parse(&["--use_existing_db=1"]).unwrap().use_existing_db);
        assert!(parse(&["--use_existing_db=true"]).unwrap().use_existing_db);
        assert!(!parse(&["--use_existing_db=0"]).unwrap().use_existing_db);
        assert!(!parse(&["--use_existing_db=false"]).unwrap().use_existing_db);
        // The bare flag must not swallow the next flag as its value.
        let b = parse(&["--use_existing_db", "--num=3"]).unwrap();
        assert!(b.use_existing_db);
        assert_eq!(b.num, 3);
    }

    #[test]
    fn bad_values_are_rejected() {
        assert!(parse(&["--benchmarks=fillrandom,nosuchbench"]).is_err());
        assert!(parse(&["--compaction_mode=turbo"]).is_err());
        assert!(parse(&["--backend=vm"]).is_err());
        assert!(parse(&["--num=0"]).is_err());
        assert!(parse(&["--key_size=0"]).is_err());
        assert!(parse(&["--num=-5"]).is_err());
        assert!(parse(&["--histogram=1"]).is_err());
        assert!(parse(&["--wal_recovery_mode=4"]).is_err());
    }

    #[test]
    fn help_lists_the_defaults() {
        let help = Cli::command()
            .find_subcommand_mut("bench")
            .expect("bench subcommand")
            .render_long_help()
            .to_string();
        for want in [
            "--benchmarks",
            "[default: fillseq,fillrandom,overwrite,readrandom]",
            "--num",
            "[default: 1000000]",
            "--write_buffer_size",
            "[default: 67108864]",
            "--max_bytes_for_level_base",
            "[default: 268435456]",
            "--compaction_mode",
            "[default: baseline,uring,resystance]",
            "--backend",
            "[default: sim]",
            "--nvme",
            "[default: this-host]",
            "--wal_recovery_mode",
            "[default: 2]",
            "[default: --num]",
        ] {
            assert!(help.contains(want), "help lacks {want:?}:\n{help}");
        }
    }
}
