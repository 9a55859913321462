//! Resolving code-section relocations and linking BPF-to-BPF calls the way libbpf does:
//! every function a program calls (transitively) is appended once after the program's own
//! code, and each call's immediate becomes the distance to its callee.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use super::program::{FuncInfo, MapReloc, MapRelocKind, Program, ProgramType};
use super::ObjectError;
use crate::insn::{self, INSN_SIZE};

/// Largest linked program we build: the kernel's limit for privileged programs
/// (`BPF_COMPLEXITY_LIMIT_INSNS`), so nothing larger is worth handing to either kernel.
pub(crate) const PROGRAM_INSNS_MAX: usize = 1_000_000;

/// `R_BPF_NONE`.
const R_BPF_NONE: u32 = 0;
/// `R_BPF_64_64`: the 64-bit immediate of an `lddw`.
const R_BPF_64_64: u32 = 1;
/// `R_BPF_64_32`: the 32-bit immediate of a call, in instructions.
const R_BPF_64_32: u32 = 10;

/// One function symbol inside a code section, in instructions.
#[derive(Debug, Clone)]
pub(crate) struct Func {
    pub(crate) name: String,
    pub(crate) start: usize,
    pub(crate) end: usize,
    /// Global (or weak) binding: a program entry point when outside `.text`.
    pub(crate) global: bool,
}

/// What a relocated instruction refers to once resolved.
#[derive(Debug, Clone, Copy)]
pub(crate) enum InsnTarget {
    /// An `lddw` of a map or of a pointer into a global-data map.
    Map {
        map_index: usize,
        kind: MapRelocKind,
    },
    /// A BPF-to-BPF call to instruction `insn` of code section `section` (ELF index).
    Call { section: usize, insn: usize },
    /// An `lddw` of the address of a function (a callback, e.g. for `bpf_loop`), which becomes
    /// `src_reg = BPF_PSEUDO_FUNC` with the relative instruction offset in `imm`.
    Func { section: usize, insn: usize },
}

/// A section holding BPF code.
#[derive(Debug)]
pub(crate) struct CodeSection {
    /// ELF section index.
    pub(crate) elf_index: usize,
    pub(crate) name: String,
    pub(crate) insns: Vec<u64>,
    /// Sorted by start.
    pub(crate) funcs: Vec<Func>,
    /// Resolved targets by instruction index.
    pub(crate) targets: BTreeMap<usize, InsnTarget>,
    /// `.BTF.ext` func_info: (instruction index, FUNC type id), sorted by index.
    pub(crate) func_info: Vec<(usize, u32)>,
}

/// A symbol as relocations see it.
#[derive(Debug, Clone)]
pub(crate) struct Symbol {
    pub(crate) name: String,
    /// ELF index of the defining section; `None` for undefined, absolute or common symbols.
    pub(crate) section: Option<usize>,
    pub(crate) undefined: bool,
    /// `st_value`: byte offset inside the section.
    pub(crate) value: u64,
    /// `st_size` in bytes.
    pub(crate) size: u64,
    /// `STT_*`.
    pub(crate) st_type: u8,
    /// Global or weak binding.
    pub(crate) global: bool,
}

/// Where relocation targets can point.
#[derive(Debug, Default)]
pub(crate) struct MapLookup {
    /// ELF index of `.maps`.
    pub(crate) btf_maps_section: Option<usize>,
    /// Byte offset inside `.maps` → map index.
    pub(crate) btf_map_by_offset: HashMap<u64, usize>,
    /// ELF index of a global-data section → (map index, section size).
    pub(crate) global_data: HashMap<usize, (usize, u64)>,
}

/// One raw relocation entry of a code section.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawReloc {
    pub(crate) offset: u64,
    pub(crate) r_type: u32,
    pub(crate) symbol: usize,
}

impl CodeSection {
    fn reloc_error(
        &self,
        insn_index: usize,
        symbol: &str,
        reason: impl Into<String>,
    ) -> ObjectError {
        ObjectError::Relocation {
            section: self.name.clone(),
            insn_index,
            symbol: symbol.to_string(),
            reason: reason.into(),
        }
    }

    /// Resolves this section's relocations against `symbols` and the known maps.
    pub(crate) fn resolve_relocations(
        &mut self,
        relocs: &[RawReloc],
        symbols: &[Symbol],
        maps: &MapLookup,
        code_sections: &BTreeSet<usize>,
    ) -> Result<(), ObjectError> {
        for reloc in relocs {
            if reloc.r_type == R_BPF_NONE {
                continue;
            }
            let insn_index = usize::try_from(reloc.offset / INSN_SIZE as u64).unwrap_or(usize::MAX);
            let symbol = symbols.get(reloc.symbol).ok_or_else(|| {
                self.reloc_error(
                    insn_index,
                    "",
                    format!("symbol index {} is out of range", reloc.symbol),
                )
            })?;
            let name = symbol.name.as_str();
            if reloc.offset % INSN_SIZE as u64 != 0 || insn_index >= self.insns.len() {
                return Err(self.reloc_error(
                    insn_index,
                    name,
                    format!(
                        "relocation at byte {} is not on an instruction of this section",
                        reloc.offset
                    ),
                ));
            }
            if symbol.undefined {
                return Err(ObjectError::Extern {
                    section: self.name.clone(),
                    insn_index,
                    symbol: name.to_string(),
                });
            }
            let word = self.insns[insn_index];
            let target = match (reloc.r_type, insn::opcode(word)) {
                (R_BPF_64_64, insn::OP_LD_IMM64) => {
                    if insn_index + 1 >= self.insns.len() {
                        return Err(self.reloc_error(
                            insn_index,
                            name,
                            "lddw is missing its second half",
                        ));
                    }
                    self.resolve_load(insn_index, symbol, maps, code_sections)?
                }
                (R_BPF_64_32, insn::OP_CALL) => {
                    if insn::src_reg(word) != insn::PSEUDO_CALL {
                        return Err(self.reloc_error(
                            insn_index,
                            name,
                            format!(
                                "call relocation on a call with src_reg {}",
                                insn::src_reg(word)
                            ),
                        ));
                    }
                    self.resolve_call(insn_index, symbol, code_sections)?
                }
                (r_type, opcode) => {
                    return Err(self.reloc_error(
                        insn_index,
                        name,
                        format!(
                            "relocation type {r_type} on opcode {opcode:#04x} is not supported"
                        ),
                    ))
                }
            };
            self.targets.insert(insn_index, target);
        }
        self.resolve_local_calls()
    }

    /// An `lddw` against a map variable or global data.
    fn resolve_load(
        &self,
        insn_index: usize,
        symbol: &Symbol,
        maps: &MapLookup,
        code_sections: &BTreeSet<usize>,
    ) -> Result<InsnTarget, ObjectError> {
        let name = symbol.name.as_str();
        // REL relocations keep the addend in the instruction: for a section symbol the
        // immediate is the offset inside the section.
        let addend = i64::from(insn::imm(self.insns[insn_index]));
        let offset = i64::try_from(symbol.value)
            .ok()
            .and_then(|value| value.checked_add(addend))
            .and_then(|offset| u64::try_from(offset).ok())
            .ok_or_else(|| {
                self.reloc_error(
                    insn_index,
                    name,
                    "symbol value plus addend is negative or overflows",
                )
            })?;
        let Some(section) = symbol.section else {
            return Err(self.reloc_error(insn_index, name, "symbol is not defined in a section"));
        };
        if Some(section) == maps.btf_maps_section {
            let map_index = *maps.btf_map_by_offset.get(&offset).ok_or_else(|| {
                self.reloc_error(
                    insn_index,
                    name,
                    format!("no map starts at byte {offset} of .maps"),
                )
            })?;
            return Ok(InsnTarget::Map {
                map_index,
                kind: MapRelocKind::Fd,
            });
        }
        if let Some(&(map_index, size)) = maps.global_data.get(&section) {
            if offset >= size {
                return Err(self.reloc_error(
                    insn_index,
                    name,
                    format!("offset {offset} is outside the {size}-byte global data section"),
                ));
            }
            // Sections larger than 4 GiB are refused when the map is built.
            let offset = u32::try_from(offset).expect("global data offsets fit in u32");
            return Ok(InsnTarget::Map {
                map_index,
                kind: MapRelocKind::Value { offset },
            });
        }
        if code_sections.contains(&section) {
            if offset % INSN_SIZE as u64 != 0 {
                return Err(self.reloc_error(
                    insn_index,
                    name,
                    format!("function address at byte {offset} is not instruction-aligned"),
                ));
            }
            let insn = usize::try_from(offset / INSN_SIZE as u64).unwrap_or(usize::MAX);
            return Ok(InsnTarget::Func { section, insn });
        }
        Err(self.reloc_error(
            insn_index,
            name,
            "lddw refers to a section that is neither .maps nor global data",
        ))
    }

    /// A relocated call: the callee is `symbol.value / 8 + imm + 1` in the symbol's section
    /// (a function symbol has imm = -1; a section symbol carries the offset in imm).
    fn resolve_call(
        &self,
        insn_index: usize,
        symbol: &Symbol,
        code_sections: &BTreeSet<usize>,
    ) -> Result<InsnTarget, ObjectError> {
        let name = symbol.name.as_str();
        let section = symbol
            .section
            .filter(|section| code_sections.contains(section))
            .ok_or_else(|| {
                self.reloc_error(insn_index, name, "call target is not in a code section")
            })?;
        if symbol.value % INSN_SIZE as u64 != 0 {
            return Err(self.reloc_error(
                insn_index,
                name,
                "call target is not instruction-aligned",
            ));
        }
        let target = i64::try_from(symbol.value / INSN_SIZE as u64)
            .ok()
            .and_then(|base| base.checked_add(i64::from(insn::imm(self.insns[insn_index])) + 1))
            .and_then(|target| usize::try_from(target).ok())
            .ok_or_else(|| {
                self.reloc_error(insn_index, name, "call target is before the section start")
            })?;
        Ok(InsnTarget::Call {
            section,
            insn: target,
        })
    }

    /// Calls without a relocation target the same section, `imm + 1` instructions ahead;
    /// kfunc calls by BTF id cannot be resolved here.
    fn resolve_local_calls(&mut self) -> Result<(), ObjectError> {
        let mut index = 0;
        while index < self.insns.len() {
            let word = self.insns[index];
            let opcode = insn::opcode(word);
            if opcode == insn::OP_CALL && !self.targets.contains_key(&index) {
                match insn::src_reg(word) {
                    insn::PSEUDO_CALL => {
                        let target = i64::try_from(index)
                            .ok()
                            .and_then(|i| i.checked_add(i64::from(insn::imm(word)) + 1))
                            .and_then(|t| usize::try_from(t).ok())
                            .filter(|&t| t < self.insns.len())
                            .ok_or_else(|| {
                                self.reloc_error(
                                    index,
                                    "",
                                    format!("call offset {} leaves the section", insn::imm(word)),
                                )
                            })?;
                        self.targets.insert(
                            index,
                            InsnTarget::Call {
                                section: self.elf_index,
                                insn: target,
                            },
                        );
                    }
                    insn::PSEUDO_KFUNC_CALL => {
                        return Err(self.reloc_error(
                            index,
                            "",
                            format!("kfunc call to BTF id {} is not supported", insn::imm(word)),
                        ))
                    }
                    _ => {}
                }
            }
            // The second half of an lddw is data, not an instruction.
            index += if opcode == insn::OP_LD_IMM64 { 2 } else { 1 };
        }
        Ok(())
    }

    /// The function containing instruction `insn`.
    fn func_at(&self, insn: usize) -> Option<usize> {
        let after = self.funcs.partition_point(|f| f.start <= insn);
        self.funcs[..after].iter().rposition(|f| insn < f.end)
    }
}

/// Links the program whose entry is function `func` of code section `section`.
pub(crate) fn link_program(
    sections: &BTreeMap<usize, CodeSection>,
    section: usize,
    func: usize,
) -> Result<Program, ObjectError> {
    let main_section = &sections[&section];
    let main = &main_section.funcs[func];
    let program_err = |reason: String| ObjectError::Program {
        program: main.name.clone(),
        reason,
    };

    // Placement: each function (by section and index) gets a start position when first
    // reached, so call offsets can be fixed before the callee's code is copied.
    let mut placed: HashMap<(usize, usize), usize> = HashMap::new();
    let mut queue = VecDeque::new();
    let mut next_position = main.end - main.start;
    if next_position > PROGRAM_INSNS_MAX {
        return Err(program_err(format!(
            "program exceeds {PROGRAM_INSNS_MAX} instructions"
        )));
    }
    placed.insert((section, func), 0);
    queue.push_back((section, func));

    let mut insns = Vec::new();
    let mut map_relocs = Vec::new();
    let mut func_info = Vec::new();
    while let Some((sec_index, func_index)) = queue.pop_front() {
        let code = &sections[&sec_index];
        let f = &code.funcs[func_index];
        let base = insns.len();
        debug_assert_eq!(placed[&(sec_index, func_index)], base);
        insns.extend_from_slice(&code.insns[f.start..f.end]);
        // The function's BTF records move with it (positions are below PROGRAM_INSNS_MAX).
        let first = code.func_info.partition_point(|&(at, _)| at < f.start);
        for &(at, type_id) in code.func_info[first..]
            .iter()
            .take_while(|&&(at, _)| at < f.end)
        {
            func_info.push(FuncInfo {
                insn_off: u32::try_from(base + (at - f.start))
                    .expect("bounded by PROGRAM_INSNS_MAX"),
                type_id,
            });
        }
        for (&at, target) in code.targets.range(f.start..f.end) {
            let position = base + (at - f.start);
            match *target {
                InsnTarget::Map { map_index, kind } => {
                    if at + 1 >= f.end {
                        return Err(code.reloc_error(
                            at,
                            &f.name,
                            "lddw straddles the end of its function",
                        ));
                    }
                    let src = match kind {
                        MapRelocKind::Fd => insn::PSEUDO_MAP_FD,
                        MapRelocKind::Value { offset } => {
                            // The kernel reads the value offset from the second half.
                            let second = &mut insns[position + 1];
                            *second = insn::with_imm(*second, offset as i32);
                            insn::PSEUDO_MAP_VALUE
                        }
                    };
                    let placeholder = i32::try_from(map_index).expect("map count fits in i32");
                    insns[position] =
                        insn::with_src_reg(insn::with_imm(insns[position], placeholder), src);
                    map_relocs.push(MapReloc {
                        insn_index: position,
                        map_index,
                        kind,
                    });
                }
                InsnTarget::Call {
                    section: callee_sec,
                    insn: callee_insn,
                }
                | InsnTarget::Func {
                    section: callee_sec,
                    insn: callee_insn,
                } => {
                    let is_func = matches!(target, InsnTarget::Func { .. });
                    if is_func && at + 1 >= f.end {
                        return Err(code.reloc_error(
                            at,
                            &f.name,
                            "lddw straddles the end of its function",
                        ));
                    }
                    let callee_code = &sections[&callee_sec];
                    let callee = callee_code.func_at(callee_insn).ok_or_else(|| {
                        code.reloc_error(
                            at,
                            &f.name,
                            format!(
                                "call target {callee_insn} in '{}' is not inside a function",
                                callee_code.name
                            ),
                        )
                    })?;
                    let callee_start = *placed.entry((callee_sec, callee)).or_insert_with(|| {
                        let start = next_position;
                        let func = &callee_code.funcs[callee];
                        next_position += func.end - func.start;
                        queue.push_back((callee_sec, callee));
                        start
                    });
                    if next_position > PROGRAM_INSNS_MAX {
                        return Err(program_err(format!(
                            "linked program exceeds {PROGRAM_INSNS_MAX} instructions"
                        )));
                    }
                    let target = callee_start + (callee_insn - callee_code.funcs[callee].start);
                    // Positions are below PROGRAM_INSNS_MAX, so the distance fits in i32.
                    let distance = target as i64 - (position as i64 + 1);
                    let distance = i32::try_from(distance).expect("bounded by PROGRAM_INSNS_MAX");
                    insns[position] = insn::with_imm(insns[position], distance);
                    if is_func {
                        // The kernel's form (check_ld_imm): src_reg BPF_PSEUDO_FUNC, imm the
                        // offset to the callback like a call's, second half zero.
                        insns[position] = insn::with_src_reg(insns[position], insn::PSEUDO_FUNC);
                        insns[position + 1] = insn::with_imm(insns[position + 1], 0);
                    }
                }
            }
        }
    }
    debug_assert_eq!(insns.len(), next_position);
    Ok(Program {
        name: main.name.clone(),
        section: main_section.name.clone(),
        prog_type: ProgramType::from_section(&main_section.name),
        insns,
        map_relocs,
        func_info,
    })
}
