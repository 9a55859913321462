//! clang/libbpf ELF BPF objects parsed into a loader-neutral form.
//!
//! [`Object::parse`] turns the bytes of an object built with `clang -target bpf` into the maps
//! it needs ([`MapDef`]: BTF-defined maps from `.maps`, one-element ARRAY maps for `.data`,
//! `.rodata`, `.bss` and their sub-sections) and its programs ([`Program`]: each global
//! function of a program section with its `.text` subprograms appended and call offsets
//! fixed). Map references stay symbolic ([`MapReloc`]) until a loader knows the real map
//! fds (real kernel, [`Program::relocated`]) or host addresses (vm,
//! [`Program::resolved_with`]), so both kernels load identical instructions.
//!
//! Pure parsing: no system calls, so it runs anywhere (DESIGN §5). Not supported, and refused
//! with an error naming the place: kfuncs and other extern symbols, legacy `maps` sections,
//! map-in-map `values`, big-endian objects. Callbacks (function addresses in `lddw`) are linked
//! like called subprograms and left as `BPF_PSEUDO_FUNC` loads, which both kernels resolve.
//! Of `.BTF.ext` only func_info is read ([`Program::func_info`]); line info, CO-RE relocations
//! and DWARF are ignored. [`Object::btf`] is `.BTF` fixed up for `BPF_BTF_LOAD`.

mod btf;
mod error;
mod link;
mod maps;
mod program;

use crate::insn;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use object::elf::{self, FileHeader64};
use object::read::elf::{FileHeader, Rel, SectionHeader, Sym};
use object::LittleEndian;

pub use btf::{BtfMember, BtfStruct};
pub use error::ObjectError;
pub use maps::{
    global_data_map_name, MapDef, MapOrigin, MapType, BPF_F_MMAPABLE, BPF_F_RDONLY_PROG,
    MAP_NAME_LEN_MAX,
};
pub use program::{FuncInfo, MapReloc, MapRelocKind, Program, ProgramType};

use link::{CodeSection, Func, MapLookup, RawReloc, Symbol};

/// `EM_BPF`.
const EM_BPF: u16 = 247;
/// ELF identification bytes: class (32/64-bit) and data encoding (endianness).
const EI_CLASS: usize = 4;
const EI_DATA: usize = 5;
/// Length of the identification that precedes the rest of the ELF header.
const EI_NIDENT: usize = 16;
/// Name of the section holding the license string.
const LICENSE_SECTION: &str = "license";
/// Name of the section holding BTF-defined maps.
const BTF_MAPS_SECTION: &str = ".maps";
/// Name of the pre-BTF map definition section libbpf 1.0 dropped.
const LEGACY_MAPS_SECTION: &str = "maps";
/// Name of the section holding BTF type information.
const BTF_SECTION: &str = ".BTF";
/// Name of the section holding BTF line and function information.
const BTF_EXT_SECTION: &str = ".BTF.ext";
/// Name of the section of subprograms (functions without `SEC()`).
const TEXT_SECTION: &str = ".text";

/// A parsed object: its maps, in the order [`MapReloc::map_index`] refers to, and programs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    name: String,
    license: Option<String>,
    maps: Vec<MapDef>,
    programs: Vec<Program>,
    btf: Option<Vec<u8>>,
}

/// One ELF section, with its name and bytes (empty for `SHT_NOBITS`).
#[derive(Debug)]
struct Section<'data> {
    name: String,
    sh_type: u32,
    flags: u64,
    size: u64,
    /// ELF index of the section a REL/RELA section applies to.
    info: usize,
    data: &'data [u8],
}

impl Object {
    /// Parses `elf`, naming global-data maps after `name` (libbpf uses the file name up to its
    /// first dot; see [`Object::name_from_file_name`]).
    pub fn parse(name: &str, elf: &[u8]) -> Result<Self, ObjectError> {
        // The `object` crate (without its `unaligned` feature) reads ELF structures in place
        // and needs them 8-byte aligned; `include_bytes!` and sub-slices need not be.
        let copy;
        let elf = if elf.as_ptr().addr() % ELF_ALIGN == 0 {
            elf
        } else {
            copy = AlignedCopy::new(elf);
            copy.bytes()
        };
        Self::parse_aligned(name, elf)
    }

    fn parse_aligned(name: &str, elf: &[u8]) -> Result<Self, ObjectError> {
        debug_assert_eq!(elf.as_ptr().addr() % ELF_ALIGN, 0);
        let header = check_header(elf)?;
        let endian = LittleEndian;
        let table = header
            .sections(endian, elf)
            .map_err(|e| ObjectError::elf("section header table", e))?;
        let mut sections = Vec::with_capacity(table.len());
        for (index, shdr) in table.iter().enumerate() {
            let name = table
                .section_name(endian, shdr)
                .map_err(|e| ObjectError::elf(format!("name of section {index}"), e))?;
            let name = String::from_utf8_lossy(name).into_owned();
            let data = shdr
                .data(endian, elf)
                .map_err(|e| ObjectError::elf(format!("contents of section '{name}'"), e))?;
            sections.push(Section {
                name,
                sh_type: shdr.sh_type(endian),
                flags: shdr.sh_flags(endian),
                size: shdr.sh_size(endian),
                info: shdr.sh_info(endian) as usize,
                data,
            });
        }
        let symbols = read_symbols(elf, &table, sections.len())?;

        if let Some(legacy) = sections.iter().find(|s| s.name == LEGACY_MAPS_SECTION) {
            return Err(ObjectError::Section {
                section: legacy.name.clone(),
                offset: 0,
                reason: "legacy map definitions are not supported (libbpf 1.0 dropped them too); \
                         declare maps with BTF in SEC(\".maps\")"
                    .to_string(),
            });
        }
        let license = read_license(&sections)?;

        let mut maps = Vec::new();
        let mut lookup = MapLookup::default();
        read_btf_maps(&sections, &symbols, &mut maps, &mut lookup)?;
        read_global_data(name, &sections, &mut maps, &mut lookup)?;

        let mut code = read_code_sections(&sections, &symbols)?;
        let code_ids: BTreeSet<usize> = code.keys().copied().collect();
        let relocs = read_code_relocations(elf, &table, &sections, &code_ids)?;
        for (index, section) in &mut code {
            let section_relocs = relocs.get(index).map_or(&[][..], Vec::as_slice);
            section.resolve_relocations(section_relocs, &symbols, &lookup, &code_ids)?;
        }
        // After relocations, which refuse externs (whose DATASECs, e.g. `.ksyms`, have no
        // ELF section to take a size from) by name.
        let btf = read_btf(&sections, &symbols, &mut code)?;

        // Programs in section order, then by offset, so indices are stable across runs.
        let mut programs = Vec::new();
        for &index in &code_ids {
            let section = &code[&index];
            if section.name == TEXT_SECTION {
                continue;
            }
            let mut any = false;
            for (func, f) in section.funcs.iter().enumerate() {
                if f.global {
                    any = true;
                    programs.push(link::link_program(&code, index, func)?);
                }
            }
            if !any {
                return Err(ObjectError::Section {
                    section: section.name.clone(),
                    offset: 0,
                    reason: "code section has no global function symbol to load as a program"
                        .to_string(),
                });
            }
        }
        Ok(Self {
            name: name.to_string(),
            license,
            maps,
            programs,
            btf,
        })
    }

    /// libbpf's object name for a file name: the base name up to its first dot
    /// (`dir/compaction.bpf.o` → `compaction`).
    pub fn name_from_file_name(file_name: &str) -> &str {
        let base = file_name.rsplit('/').next().unwrap_or(file_name);
        base.split('.').next().unwrap_or(base)
    }

    /// Object name the global-data maps are named after.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Contents of the `license` section up to its NUL, if the object has one.
    pub fn license(&self) -> Option<&str> {
        self.license.as_deref()
    }

    /// Maps to create, in [`MapReloc::map_index`] order: `.maps` variables by offset, then
    /// global-data sections in section order.
    pub fn maps(&self) -> &[MapDef] {
        &self.maps
    }

    /// Index and definition of the map called `name`.
    pub fn map(&self, name: &str) -> Option<(usize, &MapDef)> {
        self.maps
            .iter()
            .enumerate()
            .find(|(_, map)| map.name == name)
    }

    /// `.BTF` ready for the kernel's `BPF_BTF_LOAD` (data-section sizes and variable offsets
    /// filled in from the ELF, as libbpf does), if the object has BTF.
    pub fn btf(&self) -> Option<&[u8]> {
        self.btf.as_deref()
    }

    /// The layout of `struct name` (or of the struct the typedef `name` names) as BTF records
    /// it; `Ok(None)` if the object has no BTF or its BTF has no such struct (BTF describes only
    /// types the object uses). Bitfield members are an error: they have no byte layout.
    pub fn btf_struct(&self, name: &str) -> Result<Option<BtfStruct>, ObjectError> {
        match &self.btf {
            Some(raw) => btf::Btf::parse(raw)?.struct_layout(name),
            None => Ok(None),
        }
    }

    /// Programs in section order, then by offset inside the section.
    pub fn programs(&self) -> &[Program] {
        &self.programs
    }

    /// The program whose function is called `name`.
    pub fn program(&self, name: &str) -> Option<&Program> {
        self.programs.iter().find(|p| p.name() == name)
    }
}

/// Largest global-data section: 4 MiB (`KMALLOC_MAX_SIZE`, the array-value limit of older
/// kernels). Linux 6.18 takes array values up to `INT_MAX` (`maps::MAP_VALUE_BYTES_MAX`);
/// the vm keeps this bound so a corrupt `.bss` size cannot allocate gigabytes.
const GLOBAL_DATA_SIZE_MAX: u64 = 4 << 20;
const _: () = assert!(GLOBAL_DATA_SIZE_MAX <= u32::MAX as u64);

/// Alignment of the widest ELF64 field.
const ELF_ALIGN: usize = 8;

/// Bytes copied to an [`ELF_ALIGN`]-aligned position inside an over-allocated buffer (safe
/// code: a `Vec`'s heap buffer does not move while it is not resized).
struct AlignedCopy {
    buffer: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedCopy {
    fn new(bytes: &[u8]) -> Self {
        let mut buffer = vec![0u8; bytes.len() + ELF_ALIGN - 1];
        let start = (ELF_ALIGN - buffer.as_ptr().addr() % ELF_ALIGN) % ELF_ALIGN;
        buffer[start..start + bytes.len()].copy_from_slice(bytes);
        Self {
            buffer,
            start,
            len: bytes.len(),
        }
    }

    fn bytes(&self) -> &[u8] {
        &self.buffer[self.start..self.start + self.len]
    }
}

/// Checks the ELF identification and header before trusting anything else.
fn check_header(elf: &[u8]) -> Result<&FileHeader64<LittleEndian>, ObjectError> {
    let refuse = |reason: String| ObjectError::NotBpfObject { reason };
    if elf.len() < EI_NIDENT {
        return Err(refuse(format!(
            "{} bytes is shorter than an ELF identification",
            elf.len()
        )));
    }
    if elf[..4] != elf::ELFMAG {
        return Err(refuse("no ELF magic".to_string()));
    }
    if elf[EI_CLASS] != elf::ELFCLASS64 {
        return Err(refuse(format!("ELF class {} is not 64-bit", elf[EI_CLASS])));
    }
    match elf[EI_DATA] {
        elf::ELFDATA2LSB => {}
        elf::ELFDATA2MSB => {
            return Err(refuse(
                "big-endian object (clang -target bpfeb); build with -target bpf on a little-endian host"
                    .to_string(),
            ))
        }
        other => return Err(refuse(format!("unknown ELF data encoding {other}"))),
    }
    let header =
        FileHeader64::<LittleEndian>::parse(elf).map_err(|e| ObjectError::elf("ELF header", e))?;
    let machine = header.e_machine(LittleEndian);
    if machine != EM_BPF {
        return Err(refuse(format!(
            "machine {machine} is not EM_BPF ({EM_BPF})"
        )));
    }
    let e_type = header.e_type(LittleEndian);
    if e_type != elf::ET_REL {
        return Err(refuse(format!(
            "ELF type {e_type} is not a relocatable object (ET_REL)"
        )));
    }
    Ok(header)
}

/// Reads `.symtab` into the form relocations need.
fn read_symbols(
    elf: &[u8],
    table: &object::read::elf::SectionTable<'_, FileHeader64<LittleEndian>>,
    section_count: usize,
) -> Result<Vec<Symbol>, ObjectError> {
    let endian = LittleEndian;
    let symtab = table
        .symbols(endian, elf, elf::SHT_SYMTAB)
        .map_err(|e| ObjectError::elf("symbol table", e))?;
    let mut symbols = Vec::with_capacity(symtab.len());
    for (index, sym) in symtab.iter().enumerate() {
        let name = symtab
            .symbol_name(endian, sym)
            .map_err(|e| ObjectError::elf(format!("name of symbol {index}"), e))?;
        let name = String::from_utf8_lossy(name).into_owned();
        let section = symtab
            .symbol_section(endian, sym, object::SymbolIndex(index))
            .map_err(|e| ObjectError::elf(format!("section of symbol '{name}'"), e))?
            .map(|section| section.0)
            .filter(|&section| section < section_count);
        symbols.push(Symbol {
            name,
            section,
            undefined: sym.is_undefined(endian),
            value: sym.st_value(endian),
            size: sym.st_size(endian),
            st_type: sym.st_type(),
            global: matches!(sym.st_bind(), elf::STB_GLOBAL | elf::STB_WEAK),
        });
    }
    Ok(symbols)
}

/// The `license` string, if present.
fn read_license(sections: &[Section<'_>]) -> Result<Option<String>, ObjectError> {
    let Some(section) = sections.iter().find(|s| s.name == LICENSE_SECTION) else {
        return Ok(None);
    };
    let len = section
        .data
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(section.data.len());
    let license = std::str::from_utf8(&section.data[..len]).map_err(|e| ObjectError::Section {
        section: section.name.clone(),
        offset: e.valid_up_to() as u64,
        reason: "license is not UTF-8".to_string(),
    })?;
    Ok(Some(license.to_string()))
}

/// Reads every map variable of `.maps` through its BTF type, ordered by offset.
fn read_btf_maps(
    sections: &[Section<'_>],
    symbols: &[Symbol],
    maps: &mut Vec<MapDef>,
    lookup: &mut MapLookup,
) -> Result<(), ObjectError> {
    let Some(maps_index) = sections.iter().position(|s| s.name == BTF_MAPS_SECTION) else {
        return Ok(());
    };
    lookup.btf_maps_section = Some(maps_index);
    let btf_section =
        sections
            .iter()
            .find(|s| s.name == ".BTF")
            .ok_or_else(|| ObjectError::Section {
                section: BTF_MAPS_SECTION.to_string(),
                offset: 0,
                reason: "map definitions need .BTF (compile with -g)".to_string(),
            })?;
    let btf = btf::Btf::parse(btf_section.data)?;
    let vars = btf
        .datasec(BTF_MAPS_SECTION)?
        .ok_or_else(|| ObjectError::btf(0, "no DATASEC describes .maps"))?;
    // Name → VAR type id, from BTF; offsets come from the ELF symbols, which clang always
    // fills in (BTF DATASEC offsets may be left for the linker).
    let mut var_types = HashMap::new();
    for var in vars {
        let ty = btf.get(var.type_id)?;
        let btf::Kind::Var { target } = ty.kind else {
            return Err(ObjectError::btf(
                ty.offset,
                "a .maps DATASEC entry is not a VAR",
            ));
        };
        var_types.insert(btf.name(ty.name_off)?, target);
    }
    let mut map_symbols: Vec<&Symbol> = symbols
        .iter()
        .filter(|s| s.section == Some(maps_index) && s.st_type == elf::STT_OBJECT)
        .collect();
    map_symbols.sort_by_key(|s| s.value);
    let maps_size = sections[maps_index].size;
    for sym in map_symbols {
        let map_err = |reason: String| ObjectError::Map {
            map: sym.name.clone(),
            section: BTF_MAPS_SECTION.to_string(),
            reason,
        };
        if sym
            .value
            .checked_add(sym.size)
            .is_none_or(|end| end > maps_size)
        {
            return Err(map_err(format!(
                "variable at byte {} ({} bytes) is outside the {maps_size}-byte section",
                sym.value, sym.size
            )));
        }
        let var_type = *var_types
            .get(sym.name.as_str())
            .ok_or_else(|| map_err("no BTF VAR of this name in the .maps DATASEC".to_string()))?;
        let def = maps::btf_map_def(&btf, &sym.name, var_type)?;
        if lookup
            .btf_map_by_offset
            .insert(sym.value, maps.len())
            .is_some()
        {
            return Err(map_err(format!("two maps start at byte {}", sym.value)));
        }
        maps.push(def);
    }
    Ok(())
}

/// One ARRAY map per non-empty global-data section, in section order.
fn read_global_data(
    object_name: &str,
    sections: &[Section<'_>],
    maps: &mut Vec<MapDef>,
    lookup: &mut MapLookup,
) -> Result<(), ObjectError> {
    for (index, section) in sections.iter().enumerate() {
        let Some(origin) = maps::global_data_origin(&section.name) else {
            continue;
        };
        let expected_type = if origin == MapOrigin::Bss {
            elf::SHT_NOBITS
        } else {
            elf::SHT_PROGBITS
        };
        if section.sh_type != expected_type
            || section.flags & u64::from(elf::SHF_ALLOC) == 0
            || section.size == 0
        {
            continue;
        }
        if section.size > GLOBAL_DATA_SIZE_MAX {
            return Err(ObjectError::Map {
                map: section.name.clone(),
                section: section.name.clone(),
                reason: format!(
                    "{} bytes exceed the vm's {GLOBAL_DATA_SIZE_MAX}-byte limit of a global-data section",
                    section.size
                ),
            });
        }
        let size = u32::try_from(section.size).expect("bounded by GLOBAL_DATA_SIZE_MAX");
        lookup.global_data.insert(index, (maps.len(), section.size));
        maps.push(maps::global_data_map(
            object_name,
            &section.name,
            origin,
            section.data,
            size,
        ));
    }
    Ok(())
}

/// `.BTF` fixed up for the kernel, with each code section's `.BTF.ext` func_info attached;
/// `None` without `.BTF`.
fn read_btf(
    sections: &[Section<'_>],
    symbols: &[Symbol],
    code: &mut BTreeMap<usize, CodeSection>,
) -> Result<Option<Vec<u8>>, ObjectError> {
    let Some(btf_section) = sections.iter().find(|s| s.name == BTF_SECTION) else {
        return Ok(None);
    };
    let btf = btf::Btf::parse(btf_section.data)?;
    let section_index = |name: &str| sections.iter().position(|s| s.name == name);
    let fixed = btf.fixed_up(
        btf_section.data,
        |name| section_index(name).map(|i| sections[i].size),
        |section, var| {
            let index = section_index(section)?;
            symbols
                .iter()
                .find(|s| s.section == Some(index) && s.name == var && s.st_type == elf::STT_OBJECT)
                .map(|s| s.value)
        },
    )?;
    if let Some(ext) = sections.iter().find(|s| s.name == BTF_EXT_SECTION) {
        let mut by_section = btf::ext_func_info(ext.data, &btf)?;
        for section in code.values_mut() {
            let Some(records) = by_section.remove(&section.name) else {
                continue;
            };
            for (byte_off, type_id) in records {
                let at = usize::try_from(byte_off / insn::INSN_SIZE as u64)
                    .ok()
                    .filter(|&at| {
                        byte_off % insn::INSN_SIZE as u64 == 0 && at < section.insns.len()
                    })
                    .ok_or_else(|| ObjectError::Section {
                        section: BTF_EXT_SECTION.to_string(),
                        offset: 0,
                        reason: format!(
                            "func_info offset {byte_off} is not an instruction of '{}'",
                            section.name
                        ),
                    })?;
                section.func_info.push((at, type_id));
            }
        }
    }
    Ok(Some(fixed))
}

/// Every executable section, as instructions plus its function symbols.
fn read_code_sections(
    sections: &[Section<'_>],
    symbols: &[Symbol],
) -> Result<BTreeMap<usize, CodeSection>, ObjectError> {
    let mut code = BTreeMap::new();
    for (index, section) in sections.iter().enumerate() {
        let executable = section.flags & u64::from(elf::SHF_EXECINSTR) != 0;
        if section.sh_type != elf::SHT_PROGBITS || !executable || section.data.is_empty() {
            continue;
        }
        let section_err = |offset: u64, reason: String| ObjectError::Section {
            section: section.name.clone(),
            offset,
            reason,
        };
        if section.data.len() % insn::INSN_SIZE != 0 {
            return Err(section_err(
                section.data.len() as u64,
                "size is not a multiple of 8 (instruction size)".to_string(),
            ));
        }
        let insn_count = section.data.len() / insn::INSN_SIZE;
        let mut funcs = Vec::new();
        for sym in symbols
            .iter()
            .filter(|s| s.section == Some(index) && s.st_type == elf::STT_FUNC)
        {
            let start = sym.value / insn::INSN_SIZE as u64;
            let end = sym
                .value
                .checked_add(sym.size)
                .map(|end| end / insn::INSN_SIZE as u64);
            let in_bounds = end.filter(|&end| end <= insn_count as u64 && start < end);
            let (Some(end), true) = (in_bounds, sym.value % 8 == 0 && sym.size % 8 == 0) else {
                return Err(section_err(
                    sym.value,
                    format!(
                        "function '{}' ({} bytes) is misaligned or outside the section",
                        sym.name, sym.size
                    ),
                ));
            };
            // Both bounded by insn_count, which came from a slice length.
            funcs.push(Func {
                name: sym.name.clone(),
                start: start as usize,
                end: end as usize,
                global: sym.global,
            });
        }
        funcs.sort_by_key(|f| f.start);
        code.insert(
            index,
            CodeSection {
                elf_index: index,
                name: section.name.clone(),
                insns: insn::words(section.data),
                funcs,
                targets: BTreeMap::new(),
                func_info: Vec::new(),
            },
        );
    }
    Ok(code)
}

/// Relocation entries of each code section (keyed by the code section's ELF index).
fn read_code_relocations(
    elf: &[u8],
    table: &object::read::elf::SectionTable<'_, FileHeader64<LittleEndian>>,
    sections: &[Section<'_>],
    code: &BTreeSet<usize>,
) -> Result<HashMap<usize, Vec<RawReloc>>, ObjectError> {
    let endian = LittleEndian;
    let mut relocs: HashMap<usize, Vec<RawReloc>> = HashMap::new();
    for (index, shdr) in table.iter().enumerate() {
        let section = &sections[index];
        if !code.contains(&section.info) {
            continue;
        }
        let target = &sections[section.info].name;
        match section.sh_type {
            elf::SHT_REL => {}
            // Only REL sections of code sections matter; .rel.BTF and friends are ignored.
            elf::SHT_RELA => {
                return Err(ObjectError::Section {
                    section: section.name.clone(),
                    offset: 0,
                    reason: format!(
                        "RELA relocations for '{target}' are not produced by clang for BPF"
                    ),
                })
            }
            _ => continue,
        }
        let (entries, _symtab) = shdr
            .rel(endian, elf)
            .map_err(|e| ObjectError::elf(format!("relocations '{}'", section.name), e))?
            .expect("SHT_REL sections always have REL entries");
        let list = relocs.entry(section.info).or_default();
        for entry in entries {
            list.push(RawReloc {
                offset: entry.r_offset(endian),
                r_type: entry.r_type(endian),
                symbol: entry.r_sym(endian) as usize,
            });
        }
    }
    Ok(relocs)
}
