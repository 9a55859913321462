//! The cost model: what a boundary call costs on the virtual clock.
//!
//! Every number is a default taken from a measurement on this machine kind (DESIGN.md §4, or
//! the measurements recorded in `sim/README.md`); a profile may override any of them.

/// Bytes in a page of the page cache.
pub const PAGE_BYTES: u64 = 4096;

/// CPU-side costs of crossing the boundary and moving bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
    /// One eBPF instruction executed by a test run, in picoseconds. 400 ps (0.4 ns) is an
    /// **estimate**, not a measurement: a JITed instruction on this machine kind retires in
    /// well under a nanosecond, and the compaction program is memory-bound.
    pub bpf_insn_ps: u64,
    /// The fixed cost of one `BPF_PROG_TEST_RUN`, kernel entry included (DESIGN.md §4:
    /// ≈ 0.7 µs for a trivial program).
    pub bpf_test_run_ns: u64,
}

impl CpuModel {
    /// The costs measured on this machine kind (DESIGN.md §4).
    pub const fn this_host() -> CpuModel {
        CpuModel {
            syscall_ns: 280,
            copy_ns_per_page: 80,
            page_cache_ns_per_page: 640,
            clock_read_ns: 0,
            bpf_insn_ps: 400,
            bpf_test_run_ns: 700,
        }
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
    fn calibrated_costs_reproduce_the_measurements() {
        let cpu = CpuModel::this_host();
        let pread_4k = cpu.syscall_ns + cpu.page_cache_ns_per_page + cpu.copy_ns(PAGE_BYTES);
        assert_eq!(
            pread_4k, 1_000,
            "DESIGN.md §4: pread 4 KiB from page cache ≈ 1.0 µs"
        );
    }
}
