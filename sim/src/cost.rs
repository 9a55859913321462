//! The cost model: what a boundary call costs on the virtual clock.
//!
//! Every number is a default taken from a measurement on this machine kind (DESIGN.md §4, or
//! the measurements recorded in `sim/README.md`); a profile may override any of them.

use resystance_traces::{CpuWork, CpuWorkKind};

/// Bytes in a page of the page cache.
pub const PAGE_BYTES: u64 = 4096;

// The engine's CPU costs on this machine kind, from `cargo bench --bench cpu_costs`
// (2026-11-25; the run and its method are in sim/README.md, "CPU work").
/// A put: batch encoding, WAL framing and the memtable insert, per entry.
const WRITE_NS_PER_ENTRY: u64 = 1_223;
/// A put, per byte of its WAL record.
const WRITE_PS_PER_BYTE: u64 = 1_277;
/// A point lookup, per table searched (index and data block search and decode).
const GET_NS_PER_TABLE: u64 = 432;
/// A flush, per entry written.
const FLUSH_NS_PER_ENTRY: u64 = 673;
/// A flush, per key + value byte.
const FLUSH_PS_PER_BYTE: u64 = 753;
/// The twin's merge, per input entry.
const MERGE_NS_PER_ENTRY: u64 = 55;
/// The twin's merge, per input block byte.
const MERGE_PS_PER_BYTE: u64 = 242;
/// The compaction program in Linux, per instruction executed.
const BPF_INSN_PS: u64 = 87;

/// The cost of one kind of user-space work: a fixed part per operation plus parts per entry
/// and per byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkCost {
    /// Per operation reported.
    pub ns_per_op: u64,
    /// Per entry (or block) processed.
    pub ns_per_entry: u64,
    /// Per byte processed, in picoseconds.
    pub ps_per_byte: u64,
}

impl WorkCost {
    /// One operation over `entries` and `bytes`.
    pub fn ns(&self, entries: u64, bytes: u64) -> u64 {
        self.ns_per_op
            .saturating_add(self.ns_per_entry.saturating_mul(entries))
            .saturating_add(mul_div(bytes, self.ps_per_byte, 1_000))
    }
}

/// CPU profiles built into the binary (`--cpu NAME`); `sim/cpu/this-host.ron` cites the
/// source of every number.
const CPU_PRESETS: &[(&str, &str)] = &[("this-host", include_str!("../cpu/this-host.ron"))];

/// Most cores a profile may give the engine's tasks.
pub const CORES_MAX: u32 = 1024;

/// CPU-side costs of crossing the boundary and moving bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CpuModel {
    /// System-call entry and exit (DESIGN.md §4: a trivial syscall ≈ 0.28 µs).
    pub syscall_ns: u64,
    /// Copying one 4 KiB page between user and kernel memory (DESIGN.md §4: 4 KiB memcpy ≈
    /// 0.08 µs); charged per byte, pro rata.
    pub copy_ns_per_page: u64,
    /// Looking up (or inserting) one page-cache page in a buffered read or write, beyond the
    /// syscall and the copy. 640 ns makes a 4 KiB `pread` from the page cache cost
    /// 280 + 640 + 80 = 1,000 ns, DESIGN.md §4's measured 1.0 µs.
    pub page_cache_ns_per_page: u64,
    /// Reading the clock (`now_ns`, the vDSO: no system call). Zero by default: not measured
    /// here, and far below every other cost in the model.
    pub clock_read_ns: u64,
    /// One eBPF instruction executed by a test run, in picoseconds: Linux's
    /// `BPF_PROG_TEST_RUN` time for the compaction program over the instructions the vm
    /// counts for the same work (`cargo bench --bench cpu_costs`, the `bpf` row).
    pub bpf_insn_ps: u64,
    /// The fixed cost of one `BPF_PROG_TEST_RUN`, kernel entry included (DESIGN.md §4:
    /// ≈ 0.7 µs for a trivial program).
    pub bpf_test_run_ns: u64,
    /// Posting one io_uring completion to the kernel's overflow list instead of the CQ (an
    /// allocation and a list insertion): measured ≈ 100 ns more per CQE on this machine kind
    /// (sim/README.md, io_uring).
    pub cq_overflow_ns_per_cqe: u64,
    /// Moving one overflowed completion into the CQ in a `GETEVENTS` enter: measured ≈ 85 ns.
    pub cq_flush_ns_per_cqe: u64,
    /// CPUs the engine's tasks (foreground, flush, compaction) share: this machine kind has
    /// 2 (DESIGN.md §4), so all three running at once get 2/3 of a core each.
    pub cores: u32,
    /// The engine's user-space work ([`CpuWorkKind`]), charged when it reports it.
    pub write: WorkCost,
    /// See [`CpuModel::write`].
    pub get: WorkCost,
    /// See [`CpuModel::write`].
    pub flush: WorkCost,
    /// See [`CpuModel::write`].
    pub merge: WorkCost,
}

impl CpuModel {
    /// The costs measured on this machine kind (DESIGN.md §4).
    pub const fn this_host() -> CpuModel {
        CpuModel {
            syscall_ns: 280,
            copy_ns_per_page: 80,
            page_cache_ns_per_page: 640,
            clock_read_ns: 0,
            // Measured by `cargo bench --bench cpu_costs` (sim/README.md has the run).
            bpf_insn_ps: BPF_INSN_PS,
            bpf_test_run_ns: 700,
            cq_overflow_ns_per_cqe: 100,
            cq_flush_ns_per_cqe: 85,
            cores: 2,
            write: WorkCost {
                ns_per_op: 0,
                ns_per_entry: WRITE_NS_PER_ENTRY,
                ps_per_byte: WRITE_PS_PER_BYTE,
            },
            get: WorkCost {
                ns_per_op: 0,
                ns_per_entry: GET_NS_PER_TABLE,
                ps_per_byte: 0,
            },
            flush: WorkCost {
                ns_per_op: 0,
                ns_per_entry: FLUSH_NS_PER_ENTRY,
                ps_per_byte: FLUSH_PS_PER_BYTE,
            },
            merge: WorkCost {
                ns_per_op: 0,
                ns_per_entry: MERGE_NS_PER_ENTRY,
                ps_per_byte: MERGE_PS_PER_BYTE,
            },
        }
    }

    /// The names of the built-in profiles.
    pub const PRESETS: &'static [&'static str] = &["this-host"];

    /// The built-in profile called `name` (one of [`CpuModel::PRESETS`]).
    pub fn preset(name: &str) -> Result<CpuModel, String> {
        crate::profile::preset("CPU", name, CPU_PRESETS, CpuModel::from_ron)
    }

    /// A profile from RON text (every field required, unknown ones refused), validated.
    pub fn from_ron(text: &str) -> Result<CpuModel, String> {
        let model: CpuModel = crate::profile::parse("CPU profile", text)?;
        model.validate()?;
        Ok(model)
    }

    /// The profile as RON text that [`CpuModel::from_ron`] reads back.
    pub fn to_ron(&self) -> String {
        crate::profile::to_ron(self)
    }

    /// Checks the limits a run depends on; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=CORES_MAX).contains(&self.cores) {
            return Err(format!("cores {} outside 1..={CORES_MAX}", self.cores));
        }
        Ok(())
    }

    /// What `work` costs.
    pub fn work_ns(&self, work: CpuWork) -> u64 {
        let cost = match work.kind {
            CpuWorkKind::Write => &self.write,
            CpuWorkKind::Get => &self.get,
            CpuWorkKind::Flush => &self.flush,
            CpuWorkKind::Merge => &self.merge,
        };
        cost.ns(work.entries, work.bytes)
    }

    /// A test run that executed `insns` instructions: the fixed cost plus the instructions.
    pub fn test_run_ns(&self, insns: u64) -> u64 {
        self.bpf_test_run_ns
            .saturating_add(mul_div(insns, self.bpf_insn_ps, 1_000))
    }

    /// Copying `bytes` between user and kernel memory.
    pub fn copy_ns(&self, bytes: u64) -> u64 {
        mul_div(bytes, self.copy_ns_per_page, PAGE_BYTES)
    }
}

impl Default for CpuModel {
    fn default() -> Self {
        CpuModel::this_host()
    }
}

/// `a * b / c` without intermediate overflow, saturating at `u64::MAX`.
fn mul_div(a: u64, b: u64, c: u64) -> u64 {
    let q = u128::from(a) * u128::from(b) / u128::from(c);
    u64::try_from(q).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_profile_is_the_built_in_model_and_round_trips() {
        let preset = CpuModel::preset("this-host").unwrap();
        assert_eq!(
            preset,
            CpuModel::this_host(),
            "sim/cpu/this-host.ron = this_host()"
        );
        assert_eq!(CpuModel::from_ron(&preset.to_ron()).unwrap(), preset);
        assert!(CpuModel::preset("laptop")
            .unwrap_err()
            .contains("this-host"));
    }

    #[test]
    fn profiles_refuse_unknown_or_missing_fields_and_bad_limits() {
        let text = CpuModel::this_host().to_ron();
        let unknown = text.replacen("syscall_ns:", "syscal_ns:", 1);
        assert!(CpuModel::from_ron(&unknown).unwrap_err().contains("line"));
        let zero_cores = text.replacen("cores: 2", "cores: 0", 1);
        assert!(CpuModel::from_ron(&zero_cores)
            .unwrap_err()
            .contains("cores 0"));
        let missing = text.replacen("clock_read_ns: 0,", "", 1);
        assert!(CpuModel::from_ron(&missing).is_err());
    }

    #[test]
    fn calibrated_costs_reproduce_the_measurements() {
        let cpu = CpuModel::this_host();
        let pread_4k = cpu.syscall_ns + cpu.page_cache_ns_per_page + cpu.copy_ns(PAGE_BYTES);
        assert_eq!(
            pread_4k, 1_000,
            "DESIGN.md §4: pread 4 KiB from page cache ≈ 1.0 µs"
        );
    }
}
