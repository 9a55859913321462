//! Facts about the machine a benchmark ran on, for the JSON report.

use std::path::{Path, PathBuf};

use serde::Serialize;

/// Where Linux reports its release string.
const OSRELEASE_PATH: &str = "/proc/sys/kernel/osrelease";
/// Where Linux describes the CPUs.
const CPUINFO_PATH: &str = "/proc/cpuinfo";

/// The host a run happened on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HostFacts {
    /// `uname -r` (from /proc/sys/kernel/osrelease), or "unknown".
    pub kernel_release: String,
    /// The CPU model name from /proc/cpuinfo, or "unknown".
    pub cpu_model: String,
    /// Logical CPUs.
    pub cpus: usize,
    /// The database directory the run used.
    pub db_path: PathBuf,
    /// Wall-clock start of the run, in seconds since the Unix epoch.
    pub started_unix_secs: u64,
}

impl HostFacts {
    /// Reads the facts from /proc. These are host facts for the report, read at the CLI layer
    /// directly rather than through the kernel boundary, which carries only the engine's work.
    pub fn gather(db_path: &Path) -> Self {
        let kernel_release = std::fs::read_to_string(OSRELEASE_PATH)
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".to_string());
        let (model, processors) = std::fs::read_to_string(CPUINFO_PATH)
            .map(|text| parse_cpuinfo(&text))
            .unwrap_or((None, 0));
        let cpus = if processors > 0 {
            processors
        } else {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        };
        let started_unix_secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        HostFacts {
            kernel_release,
            cpu_model: model.unwrap_or_else(|| "unknown".to_string()),
            cpus,
            db_path: db_path.to_path_buf(),
            started_unix_secs,
        }
    }
}

/// The first CPU model name and the number of processors listed in /proc/cpuinfo text.
pub fn parse_cpuinfo(text: &str) -> (Option<String>, usize) {
    let mut model = None;
    let mut processors = 0;
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        match key.trim() {
            "processor" => processors += 1,
            "model name" if model.is_none() => model = Some(value.trim().to_string()),
            _ => {}
        }
    }
    (model, processors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpuinfo_model_and_count() {
        let text = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\n\n\
                    processor\t: 1\nmodel name\t: AMD EPYC 7B13\n";
        assert_eq!(parse_cpuinfo(text), (Some("AMD EPYC 7B13".to_string()), 2));
    }

    #[test]
    fn cpuinfo_without_model_names() {
        // Some architectures (e.g. arm64) list no "model name".
        assert_eq!(
            parse_cpuinfo("processor : 0\nBogoMIPS : 50.00\n"),
            (None, 1)
        );
        assert_eq!(parse_cpuinfo(""), (None, 0));
    }

    #[test]
    fn gather_fills_every_field() {
        let h = HostFacts::gather(Path::new("/tmp/db"));
        assert!(!h.kernel_release.is_empty());
        assert!(!h.cpu_model.is_empty());
        assert!(h.cpus >= 1);
        assert_eq!(h.db_path, PathBuf::from("/tmp/db"));
        assert!(h.started_unix_secs > 0);
    }
}
