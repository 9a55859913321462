//! `resystance bench`: a db_bench-style benchmark harness for the engine.
//!
//! Flags, key layout, value generation, benchmark semantics and the result line follow
//! RocksDB 7.8's db_bench, so a run can be read side by side with db_bench's
//! (`scripts/compare_db_bench.sh`). Time comes from the kernel boundary's clock, never the
//! host's, so the same harness measures virtual time on the simulated kernel.

pub mod cli;
pub mod compare;
pub mod error;
pub mod format;
pub mod host;
pub mod interrupt;
pub mod keys;
pub mod latency;
pub mod progress;
pub mod results;
pub mod runner;
pub mod values;

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use resystance_real_kernel::RealKernel;
use resystance_sim::{preset_or_file, CpuModel, NvmeModel, SimConfig, SimKernel};
use resystance_traces::Kernel;

pub use cli::{Backend, BenchArgs, Benchmark, Cli, Command};
pub use error::BenchError;
pub use results::BenchReport;

/// The kernel the flags name: the host's, or a simulated machine seeded by `--seed`.
pub fn kernel_for(args: &BenchArgs) -> Result<Arc<dyn Kernel>, BenchError> {
    match args.backend {
        Backend::Real => Ok(Arc::new(RealKernel::new())),
        Backend::Sim => {
            let mut cfg = SimConfig::new(args.effective_seed());
            cfg.device = nvme_model(&args.nvme)?;
            cfg.cpu = cpu_model(&args.cpu)?;
            // Millions of calls: keep the digest, not the events.
            cfg.keep_events = false;
            let sim = SimKernel::with_config(cfg);
            // The simulated machine boots with `/` and `/tmp`; the directory `--db` goes in
            // is part of its disk, as it would be of a real one (the database's own
            // directory is still created by the engine).
            if let Some(parent) = args.db.as_deref().and_then(Path::parent) {
                if !parent.as_os_str().is_empty() {
                    sim.prepare_dir(parent).map_err(|e| {
                        BenchError::InvalidFlags(format!(
                            "--db={}: the simulated disk cannot hold {}: {e}",
                            args.db.as_deref().unwrap_or(parent).display(),
                            parent.display()
                        ))
                    })?;
                }
            }
            Ok(Arc::new(sim))
        }
    }
}

/// The NVMe model `--nvme` names: a preset, or else a RON file.
pub fn nvme_model(name: &str) -> Result<NvmeModel, BenchError> {
    preset_or_file(
        "nvme",
        name,
        NvmeModel::PRESETS,
        NvmeModel::preset,
        NvmeModel::from_ron,
    )
    .map_err(BenchError::InvalidFlags)
}

/// The CPU cost profile `--cpu` names: a preset, or else a RON file.
pub fn cpu_model(name: &str) -> Result<CpuModel, BenchError> {
    preset_or_file(
        "cpu",
        name,
        CpuModel::PRESETS,
        CpuModel::preset,
        CpuModel::from_ron,
    )
    .map_err(BenchError::InvalidFlags)
}

/// Runs `resystance bench`: text to standard output, then the JSON report if `--json`.
pub fn run(args: &BenchArgs) -> Result<BenchReport, BenchError> {
    if args.backend == Backend::Real && args.nvme != "this-host" {
        return Err(BenchError::InvalidFlags(
            "--nvme models the simulator's device; the real kernel runs on the host's".into(),
        ));
    }
    if args.backend == Backend::Real && args.cpu != "this-host" {
        return Err(BenchError::InvalidFlags(
            "--cpu models the simulator's CPU costs; the real kernel runs on the host's".into(),
        ));
    }
    let kernel = kernel_for(args)?;
    interrupt::install();
    // A mistyped report path should fail now, not after a long run.
    if let Some(dir) = args.json.as_deref().and_then(Path::parent) {
        if !dir.as_os_str().is_empty() && !dir.is_dir() {
            return Err(BenchError::InvalidFlags(format!(
                "--json: directory {} does not exist",
                dir.display()
            )));
        }
    }
    let report = {
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        run_with(args, &kernel, &mut out)?
    };
    if let Some(path) = &args.json {
        write_json(path, &report)?;
    }
    Ok(report)
}

/// Runs the benchmarks for every `--compaction_mode` on `kernel`, writing text to `out`.
pub fn run_with(
    args: &BenchArgs,
    kernel: &Arc<dyn Kernel>,
    out: &mut dyn Write,
) -> Result<BenchReport, BenchError> {
    let db_path = args.db.clone().unwrap_or_else(|| kernel.default_db_dir());
    let host = host::HostFacts::gather(&db_path, args.backend == Backend::Real);
    let key_format = keys::KeyFormat::new(args.key_size);
    if let Some(distinct) = key_format.distinct_keys().filter(|&d| d < args.num) {
        eprintln!(
            "warning: --key_size={} holds only {distinct} distinct keys; key indexes from {distinct} up wrap onto earlier keys, as in db_bench",
            args.key_size
        );
    }
    // Check every mode before running any, so a side-by-side run does not spend minutes on
    // the first mode only to find a later one cannot run on this kernel.
    for &mode in &args.compaction_mode {
        runner::options_for(args, mode)?;
        crate::compaction::executor_for(mode)
            .and_then(|executor| executor.prepare(kernel))
            .map_err(|e| BenchError::engine(format!("compaction_mode={mode}"), e))?;
    }
    let modes = &args.compaction_mode;
    let mut runs = Vec::with_capacity(modes.len() * args.repeat as usize);
    for round in 0..args.repeat {
        for (position, mode) in compare::round_order(modes, round).into_iter().enumerate() {
            // Each mode gets a fresh machine of its own on the simulator (the same seed: the
            // same device, the same jitter; not the one the checks above ran on), so a mode's
            // figures do not depend on which other modes were listed, or on the round.
            let kernel = if args.backend == Backend::Sim {
                kernel_for(args)?
            } else {
                kernel.clone()
            };
            write!(out, "{}", header(args, &host, mode, round)).map_err(BenchError::stdout)?;
            let mut run = runner::Runner::new(kernel, args, &db_path, out).run_mode(mode)?;
            run.round = round + 1;
            run.position = u32::try_from(position).expect("at most a few modes");
            runs.push(run);
        }
    }
    let comparison = compare::compare(&runs, modes);
    write!(out, "{}", format::comparison_table(&comparison)).map_err(BenchError::stdout)?;
    Ok(BenchReport {
        tool: "resystance bench",
        version: env!("CARGO_PKG_VERSION"),
        backend: kernel.name(),
        seed: args.effective_seed(),
        reads: args.effective_reads(),
        flags: args.clone(),
        host,
        sim: match args.backend {
            Backend::Real => None,
            Backend::Sim => Some(results::SimFacts {
                nvme_preset: args.nvme.clone(),
                nvme: nvme_model(&args.nvme)?,
                cpu_profile: args.cpu.clone(),
                cpu: cpu_model(&args.cpu)?,
            }),
        },
        runs,
        comparison,
        kernel_syscalls: (args.backend == Backend::Real).then(|| kernel.syscall_counts()),
    })
}

/// The run header, shaped like db_bench's.
fn header(
    args: &BenchArgs,
    host: &host::HostFacts,
    mode: crate::options::CompactionMode,
    round: u32,
) -> String {
    let (cpu, kernel) = match args.backend {
        Backend::Real => (
            format!("{} * {}", host.cpus, host.cpu_model),
            format!(
                "{} (backend real){}",
                host.kernel_release,
                host.storage
                    .as_ref()
                    .map_or_else(String::new, |s| format!("\nStorage:    {}", s.summary()))
            ),
        ),
        Backend::Sim => (
            format!(
                "{} simulated cores (costs measured on {} * {})",
                cpu_model(&args.cpu).map_or(0, |c| c.cores),
                host.cpus,
                host.cpu_model
            ),
            format!("simulated, NVMe {} (backend sim)", args.nvme),
        ),
    };
    format!(
        "resystance: version {}\nCPU:        {cpu}\nKernel:     {kernel}\nKeys:       {} bytes each\nValues:     {} bytes each\nEntries:    {}\nSeed:       {}\nCompaction: {mode}{}\n{}------------------------------------------------\n",
        env!("CARGO_PKG_VERSION"),
        args.key_size,
        args.value_size,
        args.num,
        args.effective_seed(),
        match (args.direct, args.sqpoll) {
            (true, true) => ", inputs read with O_DIRECT, SQPOLL rings",
            (true, false) => ", inputs read with O_DIRECT",
            (false, true) => ", SQPOLL rings",
            (false, false) => "",
        }
        .to_string()
            + &if args.uring_queue_depth == crate::options::URING_QUEUE_DEPTH_DEFAULT {
                String::new()
            } else {
                format!(", io_uring queue depth {}", args.uring_queue_depth)
            }
            + if args.uring_readahead {
                ""
            } else {
                ", no io_uring read-ahead"
            },
        if args.repeat > 1 {
            format!("Round:      {} of {}\n", round + 1, args.repeat)
        } else {
            String::new()
        },
    )
}

/// Writes `report` to `path` as pretty JSON, through a temporary file renamed into place so a
/// reader never sees half a report.
pub fn write_json(path: &Path, report: &BenchReport) -> Result<(), BenchError> {
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = Path::new(&tmp_name);
    let io_err = |source| BenchError::Output {
        path: path.to_path_buf(),
        source,
    };
    let mut text =
        serde_json::to_string_pretty(report).map_err(|e| io_err(std::io::Error::other(e)))?;
    text.push('\n');
    std::fs::write(tmp, text).map_err(io_err)?;
    std::fs::rename(tmp, path).map_err(io_err)
}
