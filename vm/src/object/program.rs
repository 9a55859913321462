//! Programs as the loader hands them to a kernel: linked instructions plus the map references
//! that still need a map fd (real kernel) or host handle (vm) written in.

use super::ObjectError;
use crate::insn;

/// Kernel program types (`enum bpf_prog_type`, numbering as in Linux 6.18 uapi).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
#[allow(missing_docs)]
pub enum ProgramType {
    SocketFilter = 1,
    Kprobe = 2,
    SchedCls = 3,
    SchedAct = 4,
    Tracepoint = 5,
    Xdp = 6,
    PerfEvent = 7,
    CgroupSkb = 8,
    CgroupSock = 9,
    LwtIn = 10,
    LwtOut = 11,
    LwtXmit = 12,
    SockOps = 13,
    SkSkb = 14,
    CgroupDevice = 15,
    SkMsg = 16,
    RawTracepoint = 17,
    CgroupSockAddr = 18,
    LwtSeg6local = 19,
    LircMode2 = 20,
    SkReuseport = 21,
    FlowDissector = 22,
    CgroupSysctl = 23,
    RawTracepointWritable = 24,
    CgroupSockopt = 25,
    Tracing = 26,
    StructOps = 27,
    Ext = 28,
    Lsm = 29,
    SkLookup = 30,
    Syscall = 31,
    Netfilter = 32,
}

/// Section-name conventions (libbpf's `SEC()` names): a rule matches the bare name or the
/// name followed by `/` and anything (`kprobe/do_sys_open`).
const SECTION_RULES: &[(&str, ProgramType)] = &[
    ("syscall", ProgramType::Syscall),
    ("socket", ProgramType::SocketFilter),
    ("xdp", ProgramType::Xdp),
    ("xdp.frags", ProgramType::Xdp),
    ("tc", ProgramType::SchedCls),
    ("tcx", ProgramType::SchedCls),
    ("classifier", ProgramType::SchedCls),
    ("action", ProgramType::SchedAct),
    ("kprobe", ProgramType::Kprobe),
    ("kretprobe", ProgramType::Kprobe),
    ("uprobe", ProgramType::Kprobe),
    ("uretprobe", ProgramType::Kprobe),
    ("ksyscall", ProgramType::Kprobe),
    ("kretsyscall", ProgramType::Kprobe),
    ("tracepoint", ProgramType::Tracepoint),
    ("tp", ProgramType::Tracepoint),
    ("raw_tracepoint", ProgramType::RawTracepoint),
    ("raw_tp", ProgramType::RawTracepoint),
    ("raw_tracepoint.w", ProgramType::RawTracepointWritable),
    ("raw_tp.w", ProgramType::RawTracepointWritable),
    ("perf_event", ProgramType::PerfEvent),
    ("fentry", ProgramType::Tracing),
    ("fexit", ProgramType::Tracing),
    ("fmod_ret", ProgramType::Tracing),
    ("fentry.s", ProgramType::Tracing),
    ("fexit.s", ProgramType::Tracing),
    ("fmod_ret.s", ProgramType::Tracing),
    ("tp_btf", ProgramType::Tracing),
    ("iter", ProgramType::Tracing),
    ("iter.s", ProgramType::Tracing),
    ("freplace", ProgramType::Ext),
    ("lsm", ProgramType::Lsm),
    ("lsm.s", ProgramType::Lsm),
    ("struct_ops", ProgramType::StructOps),
    ("struct_ops.s", ProgramType::StructOps),
    ("cgroup_skb", ProgramType::CgroupSkb),
    ("cgroup/skb", ProgramType::CgroupSkb),
    ("cgroup/dev", ProgramType::CgroupDevice),
    ("cgroup/sysctl", ProgramType::CgroupSysctl),
    ("sockops", ProgramType::SockOps),
    ("sk_skb", ProgramType::SkSkb),
    ("sk_msg", ProgramType::SkMsg),
    ("sk_lookup", ProgramType::SkLookup),
    ("sk_reuseport", ProgramType::SkReuseport),
    ("flow_dissector", ProgramType::FlowDissector),
    ("lirc_mode2", ProgramType::LircMode2),
    ("lwt_in", ProgramType::LwtIn),
    ("lwt_out", ProgramType::LwtOut),
    ("lwt_xmit", ProgramType::LwtXmit),
    ("lwt_seg6local", ProgramType::LwtSeg6local),
    ("netfilter", ProgramType::Netfilter),
];

impl ProgramType {
    /// The program type libbpf infers from a section name, if the name follows a convention.
    pub fn from_section(section: &str) -> Option<Self> {
        SECTION_RULES.iter().find_map(|&(rule, ty)| {
            let matches = section == rule
                || section
                    .strip_prefix(rule)
                    .is_some_and(|rest| rest.starts_with('/'));
            matches.then_some(ty)
        })
    }

    /// The kernel's number for this type (what `BPF_PROG_LOAD` takes).
    pub fn raw(self) -> u32 {
        self as u32
    }
}

/// How a 64-bit immediate load refers to a map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapRelocKind {
    /// The map itself (`src_reg = BPF_PSEUDO_MAP_FD`): e.g. the first argument of a helper.
    Fd,
    /// A pointer `offset` bytes into the map's single value (`src_reg = BPF_PSEUDO_MAP_VALUE`):
    /// how programs address global data.
    Value {
        /// Byte offset inside the value.
        offset: u32,
    },
}

/// One 64-bit immediate load (`lddw`) that refers to a map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapReloc {
    /// Index of the load's first instruction in [`Program::insns`].
    pub insn_index: usize,
    /// Index of the map in [`super::Object::maps`].
    pub map_index: usize,
    /// Map or value pointer.
    pub kind: MapRelocKind,
}

/// One function of a linked program as the kernel's `struct bpf_func_info` describes it: the
/// function starting at instruction `insn_off` has the `BTF_KIND_FUNC` type `type_id` in the
/// object's BTF ([`super::Object::btf`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FuncInfo {
    /// First instruction of the function in [`Program::insns`].
    pub insn_off: u32,
    /// Its type id.
    pub type_id: u32,
}

/// One loadable program: a global function in a program section, with every subprogram it
/// calls appended and every call offset fixed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    pub(crate) name: String,
    pub(crate) section: String,
    pub(crate) prog_type: Option<ProgramType>,
    pub(crate) insns: Vec<u64>,
    pub(crate) map_relocs: Vec<MapReloc>,
    pub(crate) func_info: Vec<FuncInfo>,
}

impl Program {
    /// Function symbol name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// ELF section the program lives in (`syscall`, `xdp`, `kprobe/...`).
    pub fn section(&self) -> &str {
        &self.section
    }

    /// Program type inferred from the section name, if the name follows a known convention.
    pub fn prog_type(&self) -> Option<ProgramType> {
        self.prog_type
    }

    /// Linked instructions as little-endian 8-byte words. Map loads already carry their
    /// `src_reg` (`BPF_PSEUDO_MAP_FD`/`_VALUE`), the map index as a placeholder immediate and,
    /// for value loads, the offset in the second half's immediate.
    pub fn insns(&self) -> &[u64] {
        &self.insns
    }

    /// Every map load, in instruction order.
    pub fn map_relocs(&self) -> &[MapReloc] {
        &self.map_relocs
    }

    /// One record per function of the linked program (the entry at 0, then each appended
    /// subprogram where it was placed), from `.BTF.ext`; empty when the object has none.
    /// Linux needs them, with the object's BTF, to load programs with callbacks.
    pub fn func_info(&self) -> &[FuncInfo] {
        &self.func_info
    }

    /// The instructions as the kernel's `BPF_PROG_LOAD` wants them: each map load's immediate
    /// replaced by `map_fds[map_index]` (the kernel resolves fds and value offsets itself).
    pub fn relocated(&self, map_fds: &[i32]) -> Result<Vec<u64>, ObjectError> {
        let mut insns = self.insns.clone();
        for reloc in &self.map_relocs {
            let fd = *map_fds
                .get(reloc.map_index)
                .ok_or_else(|| ObjectError::Program {
                    program: self.name.clone(),
                    reason: format!(
                        "instruction {} needs map {} but only {} map handles were given",
                        reloc.insn_index,
                        reloc.map_index,
                        map_fds.len()
                    ),
                })?;
            let slot = &mut insns[reloc.insn_index];
            *slot = insn::with_imm(*slot, fd);
        }
        Ok(insns)
    }

    /// The instructions with each map load turned into a plain 64-bit immediate load
    /// (`src_reg = 0`) of whatever `imm64` returns for it — for a runtime without a kernel to
    /// resolve fds, which loads host addresses instead. For `Value { offset }` the closure must
    /// return the address of byte `offset` of the map's value.
    pub fn resolved_with<E>(
        &self,
        mut imm64: impl FnMut(&MapReloc) -> Result<u64, E>,
    ) -> Result<Vec<u64>, E> {
        let mut insns = self.insns.clone();
        for reloc in &self.map_relocs {
            let value = imm64(reloc)?;
            let i = reloc.insn_index;
            // The linker only records loads whose second half exists (checked at parse time).
            debug_assert!(i + 1 < insns.len());
            // Truncations split the 64-bit value into the two 32-bit immediates.
            insns[i] = insn::with_src_reg(insn::with_imm(insns[i], value as u32 as i32), 0);
            insns[i + 1] = insn::with_imm(insns[i + 1], (value >> 32) as u32 as i32);
        }
        Ok(insns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn section_names_map_to_types() {
        assert_eq!(
            ProgramType::from_section("syscall"),
            Some(ProgramType::Syscall)
        );
        assert_eq!(
            ProgramType::from_section("kprobe/do_sys_open"),
            Some(ProgramType::Kprobe)
        );
        assert_eq!(
            ProgramType::from_section("raw_tp/sys_enter"),
            Some(ProgramType::RawTracepoint)
        );
        assert_eq!(
            ProgramType::from_section("raw_tp.w/x"),
            Some(ProgramType::RawTracepointWritable)
        );
        assert_eq!(
            ProgramType::from_section("fentry/vfs_read"),
            Some(ProgramType::Tracing)
        );
        assert_eq!(
            ProgramType::from_section("classifier"),
            Some(ProgramType::SchedCls)
        );
        assert_eq!(
            ProgramType::from_section("tracepoint/syscalls/x"),
            Some(ProgramType::Tracepoint)
        );
        assert_eq!(ProgramType::from_section("syscallx"), None);
        assert_eq!(ProgramType::from_section("my_section"), None);
    }
}
