//! Runs the benchmark list against the engine, db_bench's way.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use resystance_traces::Kernel;

use super::cli::{Backend, BenchArgs, Benchmark};
use super::error::BenchError;
use super::format;
use super::keys::{KeyFormat, KeyIndexes, KeyOrder};
use super::latency::LatencyRecorder;
use super::progress::Progress;
use super::results::{BenchmarkResult, Measured, ModeRun};
use super::values::ValueGenerator;
use crate::db::Db;
use crate::options::{BackgroundMode, CompactionMode, Options, WalRecoveryMode};

/// An open database and what the runner needs to know about it.
#[derive(Debug)]
struct OpenDb {
    db: Db,
    /// Kernel-clock time it was opened, in ns (for uptime-based rates).
    opened_ns: u64,
    /// Whether a benchmark has run on it since it was opened.
    used: bool,
}

/// Runs one compaction mode's pass over `--benchmarks`, writing db_bench-style text to `out`.
pub struct Runner<'a> {
    kernel: Arc<dyn Kernel>,
    args: &'a BenchArgs,
    db_path: PathBuf,
    out: &'a mut dyn Write,
}

impl std::fmt::Debug for Runner<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("kernel", &self.kernel.name())
            .field("db_path", &self.db_path)
            .finish_non_exhaustive()
    }
}

/// Engine options from the flags, for one compaction mode.
pub fn options_for(args: &BenchArgs, mode: CompactionMode) -> Result<Options, BenchError> {
    let options = Options {
        write_buffer_size: args.write_buffer_size,
        max_write_buffer_number: args.max_write_buffer_number,
        level0_file_num_compaction_trigger: args.level0_file_num_compaction_trigger,
        level0_slowdown_writes_trigger: args.level0_slowdown_writes_trigger,
        level0_stop_writes_trigger: args.level0_stop_writes_trigger,
        target_file_size_base: args.target_file_size_base,
        max_bytes_for_level_base: args.max_bytes_for_level_base,
        compaction_mode: mode,
        use_direct_reads: args.direct,
        uring_sqpoll: args.sqpoll,
        uring_readahead: args.uring_readahead,
        uring_queue_depth: args.uring_queue_depth,
        create_if_missing: true,
        wal_recovery_mode: WalRecoveryMode::from_db_bench(u64::from(args.wal_recovery_mode))
            .ok_or_else(|| {
                BenchError::InvalidFlags(format!(
                    "--wal_recovery_mode={} is not 0..=3",
                    args.wal_recovery_mode
                ))
            })?,
        // Background threads on the real kernel; on the simulator each job runs on its own
        // task's virtual clock, interleaved deterministically with the writes.
        background: match args.backend {
            Backend::Real => BackgroundMode::Threads,
            Backend::Sim => BackgroundMode::Virtual,
        },
        ..Options::default()
    };
    options.validate().map_err(BenchError::InvalidFlags)?;
    Ok(options)
}

impl<'a> Runner<'a> {
    /// A runner on `kernel` for the database at `db_path`.
    pub fn new(
        kernel: Arc<dyn Kernel>,
        args: &'a BenchArgs,
        db_path: &Path,
        out: &'a mut dyn Write,
    ) -> Self {
        Runner {
            kernel,
            args,
            db_path: db_path.to_path_buf(),
            out,
        }
    }

    /// Runs every benchmark in order under `mode` and closes the database (the result names
    /// round 1, position 0; a caller running rounds sets its own).
    ///
    /// As db_bench does: unless `--use_existing_db`, the database is destroyed first; fillseq
    /// and fillrandom each start from a destroyed database (and are skipped under
    /// `--use_existing_db`); the other benchmarks run on whatever the previous ones left.
    /// Statistics are printed as of the end of each benchmark, without waiting for background
    /// work; closing at the end waits for running jobs.
    pub fn run_mode(&mut self, mode: CompactionMode) -> Result<ModeRun, BenchError> {
        let options = options_for(self.args, mode)?;
        if !self.args.use_existing_db {
            self.destroy()?;
        }
        let mut db = self.open(&options)?;
        let mut benchmarks = Vec::with_capacity(self.args.benchmarks.len());
        let mut skipped = Vec::new();
        for (index, &bench) in self.args.benchmarks.iter().enumerate() {
            if bench.wants_fresh_db() {
                if self.args.use_existing_db {
                    self.say(&format!(
                        "{:<12} : skipped (--use_existing_db is true)",
                        bench.name()
                    ))?;
                    skipped.push(bench);
                    continue;
                }
                if db.used {
                    self.close(db)?;
                    self.destroy()?;
                    db = self.open(&options)?;
                }
            }
            self.say(&format!("DB path: [{}]", self.db_path.display()))?;
            db.used = true;
            // Stream 0 is the values'; each benchmark draws keys from its own stream.
            let stream = index as u64 + 1;
            let result = if bench.is_read() {
                self.read_random(&db, bench, stream)
            } else {
                self.write(&db, bench, stream)
            };
            let result = match result {
                Ok(r) => r,
                Err(e @ BenchError::Interrupted { .. }) => {
                    // Stop cleanly: running jobs finish, the database closes whole.
                    self.close(db)?;
                    return Err(e);
                }
                Err(e) => return Err(e),
            };
            self.say(&format::benchmark_report(&result))?;
            benchmarks.push(result);
        }
        self.close(db)?;
        Ok(ModeRun {
            compaction_mode: mode,
            round: 1,
            position: 0,
            benchmarks,
            skipped,
        })
    }

    fn say(&mut self, text: &str) -> Result<(), BenchError> {
        let newline = if text.ends_with('\n') { "" } else { "\n" };
        write!(self.out, "{text}{newline}")
            .and_then(|()| self.out.flush())
            .map_err(BenchError::stdout)
    }

    fn open(&mut self, options: &Options) -> Result<OpenDb, BenchError> {
        let db = Db::open(self.kernel.clone(), &self.db_path, options.clone()).map_err(|e| {
            BenchError::engine(
                format!(
                    "opening {} with compaction_mode={}",
                    self.db_path.display(),
                    options.compaction_mode
                ),
                e,
            )
        })?;
        // An existing database's WAL damage is said, never skipped over quietly.
        let recovery = db.stats().wal_recovery;
        for drop in &recovery.drops {
            self.say(&format!("WAL recovery ({}): {drop}", recovery.mode))?;
        }
        Ok(OpenDb {
            db,
            opened_ns: self.kernel.now_ns(),
            used: false,
        })
    }

    fn close(&self, db: OpenDb) -> Result<(), BenchError> {
        db.db
            .close()
            .map_err(|e| BenchError::engine(format!("closing {}", self.db_path.display()), e))
    }

    fn destroy(&self) -> Result<(), BenchError> {
        Db::destroy(&self.kernel, &self.db_path)
            .map_err(|e| BenchError::engine(format!("destroying {}", self.db_path.display()), e))
    }

    /// fillseq, fillrandom, overwrite: `--num` puts.
    fn write(
        &self,
        db: &OpenDb,
        bench: Benchmark,
        stream: u64,
    ) -> Result<BenchmarkResult, BenchError> {
        let args = self.args;
        let order = if bench == Benchmark::FillSeq {
            KeyOrder::Sequential
        } else {
            KeyOrder::Uniform
        };
        let key_format = KeyFormat::new(args.key_size);
        let mut keys = KeyIndexes::new(order, args.num, args.effective_seed(), stream);
        let mut values = ValueGenerator::new(args.effective_seed(), args.value_size);
        let mut key = vec![0u8; args.key_size];
        let mut latency = LatencyRecorder::new();
        let mut bytes = 0u64;
        let progress = Progress::new(bench.name(), args.num);

        let syscalls_before = self.kernel.syscall_counts();
        let start_ns = self.kernel.now_ns();
        let mut last_ns = start_ns;
        for i in 0..args.num {
            let v = keys.next_index();
            key_format.fill(v, &mut key);
            let value = values.next_value();
            db.db.put(&key, value).map_err(|e| {
                BenchError::engine(format!("{}: put #{i} (key index {v})", bench.name()), e)
            })?;
            bytes += (key.len() + value.len()) as u64;
            // Like db_bench, an operation's latency runs from the previous one's end, so key
            // and value generation are inside it and one clock read per op suffices.
            let now_ns = self.kernel.now_ns();
            latency.record_ns(now_ns.saturating_sub(last_ns));
            last_ns = now_ns;
            progress.tick(i + 1);
            if super::interrupt::requested() {
                return Err(BenchError::Interrupted {
                    benchmark: bench.name(),
                    ops: i + 1,
                });
            }
        }
        progress.finish();
        Ok(self.finish(
            db,
            bench,
            &Loop {
                ops: args.num,
                found: None,
                bytes,
                elapsed_ns: last_ns - start_ns,
                latency,
                syscalls_before,
            },
        ))
    }

    /// readrandom: `--reads` gets of uniformly random keys.
    fn read_random(
        &self,
        db: &OpenDb,
        bench: Benchmark,
        stream: u64,
    ) -> Result<BenchmarkResult, BenchError> {
        let args = self.args;
        let reads = args.effective_reads();
        let key_format = KeyFormat::new(args.key_size);
        let mut keys = KeyIndexes::new(KeyOrder::Uniform, args.num, args.effective_seed(), stream);
        let mut key = vec![0u8; args.key_size];
        let mut latency = LatencyRecorder::new();
        let mut bytes = 0u64;
        let mut found = 0u64;
        let progress = Progress::new(bench.name(), reads);

        let syscalls_before = self.kernel.syscall_counts();
        let start_ns = self.kernel.now_ns();
        let mut last_ns = start_ns;
        for i in 0..reads {
            let v = keys.next_index();
            key_format.fill(v, &mut key);
            let got = db.db.get(&key).map_err(|e| {
                BenchError::engine(format!("{}: get #{i} (key index {v})", bench.name()), e)
            })?;
            if let Some(value) = got {
                found += 1;
                bytes += (key.len() + value.len()) as u64;
            }
            let now_ns = self.kernel.now_ns();
            latency.record_ns(now_ns.saturating_sub(last_ns));
            last_ns = now_ns;
            progress.tick(i + 1);
            if super::interrupt::requested() {
                return Err(BenchError::Interrupted {
                    benchmark: bench.name(),
                    ops: i + 1,
                });
            }
        }
        progress.finish();
        Ok(self.finish(
            db,
            bench,
            &Loop {
                ops: reads,
                found: Some(found),
                bytes,
                elapsed_ns: last_ns - start_ns,
                latency,
                syscalls_before,
            },
        ))
    }

    /// Adds the engine's view at the end of a benchmark to what its loop measured.
    fn finish(&self, db: &OpenDb, name: Benchmark, done: &Loop) -> BenchmarkResult {
        let db_stats = db.db.stats();
        let db_uptime_ns = self.kernel.now_ns().saturating_sub(db.opened_ns);
        BenchmarkResult::new(Measured {
            name,
            ops: done.ops,
            found: done.found,
            bytes: done.bytes,
            elapsed_ns: done.elapsed_ns,
            latency: done.latency.summary(),
            db_uptime_ns,
            db_stats,
            syscalls: self.kernel.syscall_counts().since(&done.syscalls_before),
        })
    }
}

/// What one benchmark loop measured.
#[derive(Debug)]
struct Loop {
    ops: u64,
    found: Option<u64>,
    bytes: u64,
    elapsed_ns: u64,
    latency: LatencyRecorder,
    /// The kernel's counts when the loop started.
    syscalls_before: resystance_traces::SyscallCounts,
}
