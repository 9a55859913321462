//! Facts about the machine a benchmark ran on, for the JSON report.

use std::path::{Path, PathBuf};

use serde::Serialize;

/// Where Linux reports its release string.
const OSRELEASE_PATH: &str = "/proc/sys/kernel/osrelease";
/// Where Linux describes the CPUs.
const CPUINFO_PATH: &str = "/proc/cpuinfo";
/// Where Linux sizes memory.
const MEMINFO_PATH: &str = "/proc/meminfo";
/// The calling process's mounts.
const MOUNTINFO_PATH: &str = "/proc/self/mountinfo";
/// Block devices by `major:minor`.
const SYS_DEV_BLOCK: &str = "/sys/dev/block";

/// The host a run happened on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HostFacts {
    /// `uname -r` (from /proc/sys/kernel/osrelease), or "unknown".
    pub kernel_release: String,
    /// The CPU model name from /proc/cpuinfo, or "unknown".
    pub cpu_model: String,
    /// Logical CPUs.
    pub cpus: usize,
    /// Physical memory (MemTotal), in bytes; 0 if unknown.
    pub memory_bytes: u64,
    /// The database directory the run used.
    pub db_path: PathBuf,
    /// What holds the database directory (real backend only: on the simulator it is virtual).
    pub storage: Option<StorageFacts>,
    /// Wall-clock start of the run, in seconds since the Unix epoch.
    pub started_unix_secs: u64,
}

/// The file system and block device under a path, from /proc/self/mountinfo and /sys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StorageFacts {
    /// The path examined: the database directory or its nearest existing ancestor.
    pub examined: PathBuf,
    /// File system type (e.g. "ext4"), or "unknown".
    pub filesystem: String,
    /// The mount's source (e.g. "/dev/vda"), or "unknown".
    pub mount_source: String,
    /// Where that file system is mounted.
    pub mount_point: String,
    /// The block device holding it (the whole disk, e.g. "vda"), when there is one.
    pub device: Option<BlockDeviceFacts>,
}

/// A block device's queue facts from /sys/block/NAME.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BlockDeviceFacts {
    /// Kernel name of the disk (e.g. "vda", "nvme0n1").
    pub name: String,
    /// The device's model string, when the driver reports one.
    pub model: Option<String>,
    /// Capacity in bytes.
    pub size_bytes: u64,
    /// Whether the kernel treats it as rotational.
    pub rotational: bool,
    /// Logical block size (the O_DIRECT alignment floor), in bytes.
    pub logical_block_bytes: u64,
    /// Physical block size, in bytes.
    pub physical_block_bytes: u64,
    /// The active I/O scheduler (the bracketed one), or "unknown".
    pub scheduler: String,
}

impl HostFacts {
    /// Reads the facts from /proc and /sys (`storage` only for the real backend). These are
    /// host facts for the report, read at the CLI layer directly rather than through the
    /// kernel boundary, which carries only the engine's work.
    pub fn gather(db_path: &Path, real_backend: bool) -> Self {
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
        let memory_bytes = std::fs::read_to_string(MEMINFO_PATH)
            .ok()
            .and_then(|text| parse_meminfo_total(&text))
            .unwrap_or(0);
        HostFacts {
            kernel_release,
            cpu_model: model.unwrap_or_else(|| "unknown".to_string()),
            cpus,
            memory_bytes,
            db_path: db_path.to_path_buf(),
            storage: real_backend.then(|| StorageFacts::gather(db_path)),
            started_unix_secs,
        }
    }
}

impl StorageFacts {
    /// The storage under `path` (or its nearest existing ancestor).
    pub fn gather(path: &Path) -> Self {
        use std::os::unix::fs::MetadataExt;
        let examined = path
            .ancestors()
            .find(|p| p.exists())
            .unwrap_or(Path::new("/"))
            .to_path_buf();
        let dev = std::fs::metadata(&examined).map(|m| m.dev()).ok();
        let (major, minor) = dev.map_or((0, 0), dev_major_minor);
        let mount = std::fs::read_to_string(MOUNTINFO_PATH)
            .ok()
            .and_then(|text| parse_mountinfo(&text, major, minor));
        let (filesystem, mount_source, mount_point) = mount.unwrap_or_else(|| {
            let u = || "unknown".to_string();
            (u(), u(), u())
        });
        let device = dev.and_then(|_| BlockDeviceFacts::gather(major, minor));
        StorageFacts {
            examined,
            filesystem,
            mount_source,
            mount_point,
            device,
        }
    }

    /// One line for the text report, e.g. `ext4 on vda (512 B logical blocks, mq-deadline)`.
    pub fn summary(&self) -> String {
        match &self.device {
            Some(d) => format!(
                "{} on {}{} ({} B logical blocks, {}{})",
                self.filesystem,
                d.name,
                d.model
                    .as_ref()
                    .map_or_else(String::new, |m| format!(" [{m}]")),
                d.logical_block_bytes,
                d.scheduler,
                if d.rotational { ", rotational" } else { "" }
            ),
            None => format!("{} from {}", self.filesystem, self.mount_source),
        }
    }
}

impl BlockDeviceFacts {
    /// The disk behind device `major:minor` (a partition's parent disk), if /sys knows it.
    fn gather(major: u64, minor: u64) -> Option<Self> {
        let link = Path::new(SYS_DEV_BLOCK).join(format!("{major}:{minor}"));
        let mut dir = std::fs::canonicalize(link).ok()?;
        // A partition's directory lies inside its disk's and has no queue/ of its own.
        if !dir.join("queue").is_dir() {
            dir = dir.parent()?.to_path_buf();
        }
        let read = |rel: &str| {
            std::fs::read_to_string(dir.join(rel))
                .ok()
                .map(|s| s.trim().to_string())
        };
        let number = |rel: &str| read(rel).and_then(|s| s.parse::<u64>().ok());
        Some(BlockDeviceFacts {
            name: dir.file_name()?.to_string_lossy().into_owned(),
            model: read("device/model").filter(|m| !m.is_empty()),
            // /sys reports the size in 512-byte sectors whatever the block size.
            size_bytes: number("size").unwrap_or(0) * 512,
            rotational: number("queue/rotational") == Some(1),
            logical_block_bytes: number("queue/logical_block_size").unwrap_or(0),
            physical_block_bytes: number("queue/physical_block_size").unwrap_or(0),
            scheduler: read("queue/scheduler")
                .map(|s| parse_scheduler(&s))
                .unwrap_or_else(|| "unknown".to_string()),
        })
    }
}

/// Linux's `dev_t` encoding (glibc's `gnu_dev_major`/`gnu_dev_minor`).
fn dev_major_minor(dev: u64) -> (u64, u64) {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    (major, minor)
}

/// The (type, source, mount point) of the mount of device `major:minor` in mountinfo text
/// (`ID PARENT MAJ:MIN ROOT POINT OPTIONS [TAGS...] - TYPE SOURCE SUPER`); the last match wins,
/// as later mounts shadow earlier ones.
pub fn parse_mountinfo(text: &str, major: u64, minor: u64) -> Option<(String, String, String)> {
    let want = format!("{major}:{minor}");
    text.lines().rev().find_map(|line| {
        let (front, back) = line.split_once(" - ")?;
        let fields: Vec<&str> = front.split(' ').collect();
        let mut tail = back.split(' ');
        (fields.get(2) == Some(&want.as_str())).then(|| {
            let fs = tail.next().unwrap_or("unknown").to_string();
            let source = tail.next().unwrap_or("unknown").to_string();
            (fs, source, (*fields.get(4).unwrap_or(&"?")).to_string())
        })
    })
}

/// The active scheduler in /sys's `none [mq-deadline] kyber` form.
pub fn parse_scheduler(text: &str) -> String {
    text.split_whitespace()
        .find_map(|s| s.strip_prefix('[').and_then(|s| s.strip_suffix(']')))
        .unwrap_or(text.trim())
        .to_string()
}

/// MemTotal from /proc/meminfo text, in bytes.
pub fn parse_meminfo_total(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
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
        let h = HostFacts::gather(Path::new("/tmp/db"), false);
        assert!(!h.kernel_release.is_empty());
        assert!(!h.cpu_model.is_empty());
        assert!(h.cpus >= 1);
        assert!(h.memory_bytes > 0);
        assert_eq!(h.db_path, PathBuf::from("/tmp/db"));
        assert!(h.storage.is_none(), "no storage facts for a simulated disk");
        assert!(h.started_unix_secs > 0);
    }

    #[test]
    fn storage_of_an_existing_directory() {
        // The nearest existing ancestor is examined; its mount is found by device number.
        let s = StorageFacts::gather(&std::env::temp_dir().join("no/such/dir"));
        assert!(s.examined.exists(), "{s:?}");
        assert_ne!(s.filesystem, "unknown", "{s:?}");
        assert_ne!(s.mount_point, "unknown", "{s:?}");
        if let Some(d) = &s.device {
            assert!(d.logical_block_bytes >= 512, "{d:?}");
            assert!(d.size_bytes > 0, "{d:?}");
        }
        assert!(s.summary().starts_with(&s.filesystem));
    }

    #[test]
    fn mountinfo_scheduler_meminfo_and_dev_numbers_parse() {
        let text = "22 27 0:21 / /proc rw,relatime - proc proc rw\n\
                    27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n\
                    40 27 254:0 /srv /mnt/srv rw - ext4 /dev/vda rw\n";
        assert_eq!(
            parse_mountinfo(text, 254, 0),
            Some(("ext4".into(), "/dev/vda".into(), "/mnt/srv".into()))
        );
        assert_eq!(parse_mountinfo(text, 8, 1), None);
        assert_eq!(
            parse_scheduler("none [mq-deadline] kyber bfq"),
            "mq-deadline"
        );
        assert_eq!(parse_scheduler("none"), "none");
        assert_eq!(
            parse_meminfo_total("MemTotal:       24684096 kB\nMemFree: 1 kB\n"),
            Some(24_684_096 * 1024)
        );
        assert_eq!(dev_major_minor(0xfe00), (254, 0));
        // glibc's makedev for major 259 (NVMe), minor 65537: both need the high bits.
        let (major, minor) = (259u64, 65_537u64);
        let dev = (minor & 0xff)
            | ((major & 0xfff) << 8)
            | ((minor & !0xff) << 12)
            | ((major & !0xfff) << 32);
        assert_eq!(dev, 0x1001_0301);
        assert_eq!(dev_major_minor(dev), (major, minor));
    }
}
