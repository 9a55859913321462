//! Object parsing against real clang output: the committed objects in `tests/data` (built by
//! `vm/build-test-objects.sh` from the `.c` files beside them).

#[macro_use]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use object::read::elf::{ElfFile64, SectionHeader as _};
use object::{LittleEndian, Object as _, ObjectSection as _, ObjectSymbol as _};
use proptest::prelude::*;
use resystance_vm::object::{
    MapDef, MapOrigin, MapReloc, MapRelocKind, MapType, Object, ObjectError, ProgramType,
    BPF_F_MMAPABLE, BPF_F_RDONLY_PROG,
};

/// Bytes with the 8-byte alignment the `object` crate's in-place ELF reader needs, so the
/// test's own independent reads work on the committed objects directly.
#[repr(C, align(8))]
struct Aligned<Bytes: ?Sized>(Bytes);

macro_rules! object_bytes {
    ($path:literal) => {{
        static ALIGNED: &Aligned<[u8]> = &Aligned(*include_bytes!($path));
        &ALIGNED.0
    }};
}

const MAPS_AND_GLOBALS: &[u8] = object_bytes!("data/maps_and_globals.o");
const SHARED_SUBPROG: &[u8] = object_bytes!("data/shared_subprog.o");
const KFUNC_CALL: &[u8] = object_bytes!("data/kfunc_call.o");
const BAD_MAP_TYPE: &[u8] = object_bytes!("data/bad_map_type.o");

const BPF_F_NO_PREALLOC: u32 = 1;

fn imm(insn: u64) -> i32 {
    (insn >> 32) as u32 as i32
}

fn src_reg(insn: u64) -> u8 {
    ((insn >> 12) & 0xf) as u8
}

fn opcode(insn: u64) -> u8 {
    (insn & 0xff) as u8
}

/// Independent reading of a function's raw instructions, via the `object` crate's high-level
/// API rather than the parser under test.
fn raw_function(elf: &'static [u8], function: &str) -> Vec<u64> {
    let file = ElfFile64::<LittleEndian>::parse(elf).expect("valid ELF");
    let symbol = file
        .symbols()
        .find(|s| s.name() == Ok(function))
        .expect("symbol exists");
    let section = file
        .section_by_index(symbol.section_index().expect("defined"))
        .expect("section");
    let data = section.data().expect("section data");
    let start = usize::try_from(symbol.address()).unwrap();
    let end = start + usize::try_from(symbol.size()).unwrap();
    data[start..end]
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn map<'a>(object: &'a Object, name: &str) -> (usize, &'a MapDef) {
    object
        .map(name)
        .unwrap_or_else(|| panic!("map '{name}' missing; maps: {:?}", names(object)))
}

fn names(object: &Object) -> Vec<&str> {
    object.maps().iter().map(|m| m.name.as_str()).collect()
}

fn parse_maps_and_globals() -> Object {
    Object::parse("maps_and_globals", MAPS_AND_GLOBALS).expect("maps_and_globals.o parses")
}

#[test]
fn btf_defined_maps_are_read_from_btf() {
    let object = parse_maps_and_globals();
    assert_eq!(object.license(), Some("Dual BSD/GPL"));

    let (blocks_index, blocks) = map(&object, "blocks");
    assert_eq!(blocks_index, 0, "BTF maps come first, in .maps order");
    assert_eq!(blocks.origin, MapOrigin::Btf);
    assert_eq!(blocks.map_type, MapType::Array);
    assert_eq!(
        (blocks.key_size, blocks.value_size),
        (4, 8),
        "sizes of __u32 and __u64 via BTF"
    );
    assert_eq!(blocks.max_entries, 4);
    assert_eq!(blocks.map_flags, BPF_F_MMAPABLE);
    assert_eq!(blocks.initial_value, None);
    assert!(!blocks.frozen);

    let (index_index, index) = map(&object, "index_map");
    assert_eq!(index_index, 1);
    assert_eq!(index.map_type, MapType::Hash);
    assert_eq!(
        (index.key_size, index.value_size, index.max_entries),
        (8, 16, 128)
    );
    assert_eq!(index.map_flags, BPF_F_NO_PREALLOC);
}

#[test]
fn global_data_sections_become_array_maps() {
    let object = parse_maps_and_globals();
    assert_eq!(
        names(&object),
        [
            "blocks",
            "index_map",
            "maps_and.data",
            "maps_and.rodata",
            ".rodata.cst16",
            "maps_and.bss",
            ".rodata.str1.1"
        ]
    );
    let check = |name: &str, origin: MapOrigin, initial: &[u8]| {
        let (_, def) = map(&object, name);
        assert_eq!(def.origin, origin, "{name}");
        assert_eq!(def.map_type, MapType::Array, "{name}");
        assert_eq!((def.key_size, def.max_entries), (4, 1), "{name}");
        assert_eq!(def.value_size as usize, initial.len(), "{name}");
        assert_eq!(def.initial_value.as_deref(), Some(initial), "{name}");
        let readonly = origin == MapOrigin::Rodata;
        let flags = BPF_F_MMAPABLE | if readonly { BPF_F_RDONLY_PROG } else { 0 };
        assert_eq!(def.map_flags, flags, "{name}");
        assert_eq!(def.frozen, readonly, "{name}");
    };
    // scale = 7, bias = 0x11223344, static hidden = 9.
    check(
        "maps_and.data",
        MapOrigin::Data,
        &[7, 0, 0, 0, 0x44, 0x33, 0x22, 0x11, 9, 0, 0, 0],
    );
    check("maps_and.rodata", MapOrigin::Rodata, &1000u32.to_le_bytes());
    check("maps_and.bss", MapOrigin::Bss, &[0; 8]);
    check(".rodata.str1.1", MapOrigin::Rodata, b"idx-key\0");
    check(
        ".rodata.cst16",
        MapOrigin::Rodata,
        &[1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0],
    );
}

#[test]
fn program_links_subprogram_and_lists_map_loads() {
    let object = parse_maps_and_globals();
    assert_eq!(object.programs().len(), 1);
    let program = object.program("run").expect("program run");
    assert_eq!(program.section(), "syscall");
    assert_eq!(program.prog_type(), Some(ProgramType::Syscall));

    let run = raw_function(MAPS_AND_GLOBALS, "run");
    let mix = raw_function(MAPS_AND_GLOBALS, "mix");
    assert_eq!(
        program.insns().len(),
        run.len() + mix.len(),
        "mix appended once after run"
    );

    // The one BPF-to-BPF call (insn 22, see llvm-objdump) now jumps to mix's first insn.
    let call_index = 22;
    let call = program.insns()[call_index];
    assert_eq!((opcode(call), src_reg(call)), (0x85, 1));
    assert_eq!(
        call_index as i64 + 1 + i64::from(imm(call)),
        run.len() as i64
    );

    let index = |name: &str| map(&object, name).0;
    let base = run.len();
    let value = |offset| MapRelocKind::Value { offset };
    let expected = [
        (4, index("blocks"), MapRelocKind::Fd),
        (15, index("maps_and.bss"), value(0)),
        (28, index("index_map"), MapRelocKind::Fd),
        (33, index("index_map"), MapRelocKind::Fd),
        (35, index(".rodata.str1.1"), value(0)),
        // mix: static `hidden` via the .data section symbol (offset in the imm), then scale,
        // bias and limit via their own symbols.
        (base, index("maps_and.data"), value(8)),
        (base + 6, index("maps_and.data"), value(0)),
        (base + 10, index("maps_and.data"), value(4)),
        (base + 14, index("maps_and.rodata"), value(0)),
    ]
    .map(|(insn_index, map_index, kind)| MapReloc {
        insn_index,
        map_index,
        kind,
    });
    assert_eq!(program.map_relocs(), expected);

    for reloc in program.map_relocs() {
        let insn = program.insns()[reloc.insn_index];
        assert_eq!(opcode(insn), 0x18, "map loads are lddw");
        assert_eq!(
            imm(insn),
            reloc.map_index as i32,
            "placeholder is the map index"
        );
        let (src, offset) = match reloc.kind {
            MapRelocKind::Fd => (1, 0),
            MapRelocKind::Value { offset } => (2, offset as i32),
        };
        assert_eq!(src_reg(insn), src);
        assert_eq!(imm(program.insns()[reloc.insn_index + 1]), offset);
    }

    // Every other instruction is exactly what clang emitted.
    let touched: Vec<usize> = program
        .map_relocs()
        .iter()
        .flat_map(|r| [r.insn_index, r.insn_index + 1])
        .chain([call_index])
        .collect();
    let original: Vec<u64> = run.iter().chain(&mix).copied().collect();
    for (i, (&linked, &raw)) in program.insns().iter().zip(&original).enumerate() {
        if !touched.contains(&i) {
            assert_eq!(linked, raw, "instruction {i} changed");
        }
    }
}

#[test]
fn relocated_writes_fds_and_resolved_with_writes_addresses() {
    let object = parse_maps_and_globals();
    let program = object.program("run").unwrap();
    let fds: Vec<i32> = (0..object.maps().len() as i32).map(|i| 100 + i).collect();
    let relocated = program.relocated(&fds).unwrap();
    for (i, (&after, &before)) in relocated.iter().zip(program.insns()).enumerate() {
        match program.map_relocs().iter().find(|r| r.insn_index == i) {
            Some(reloc) => {
                assert_eq!(imm(after), fds[reloc.map_index]);
                assert_eq!(after & 0xffff_ffff, before & 0xffff_ffff, "src_reg kept");
            }
            None => assert_eq!(after, before),
        }
    }

    let err = program.relocated(&fds[..2]).unwrap_err();
    assert!(err.to_string().contains("program 'run'"), "{err}");

    let address = |reloc: &MapReloc| -> Result<u64, String> {
        let offset = match reloc.kind {
            MapRelocKind::Fd => 0,
            MapRelocKind::Value { offset } => u64::from(offset),
        };
        Ok(0x7f00_0000_0000 + ((reloc.map_index as u64) << 20) + offset)
    };
    let resolved = program.resolved_with(address).unwrap();
    for reloc in program.map_relocs() {
        let (lo, hi) = (resolved[reloc.insn_index], resolved[reloc.insn_index + 1]);
        assert_eq!(src_reg(lo), 0, "plain 64-bit immediate");
        let value = u64::from(imm(lo) as u32) | (u64::from(imm(hi) as u32) << 32);
        assert_eq!(value, address(reloc).unwrap());
    }
}

#[test]
fn shared_subprogram_is_appended_to_each_program() {
    let object = Object::parse("shared_subprog", SHARED_SUBPROG).expect("parses");
    assert_eq!(object.license(), Some("GPL"));
    assert_eq!(names(&object), ["shared_s.data"]);
    let weigh = raw_function(SHARED_SUBPROG, "weigh");
    let square = raw_function(SHARED_SUBPROG, "square");

    let programs: Vec<_> = object
        .programs()
        .iter()
        .map(|p| (p.name(), p.section(), p.prog_type()))
        .collect();
    assert_eq!(
        programs,
        [
            ("first", "syscall", Some(ProgramType::Syscall)),
            ("second", "xdp", Some(ProgramType::Xdp))
        ]
    );
    for program in object.programs() {
        let main = raw_function(SHARED_SUBPROG, program.name());
        let insns = program.insns();
        assert_eq!(
            insns.len(),
            main.len() + weigh.len() + square.len(),
            "{}",
            program.name()
        );
        // main calls weigh at insn 1; weigh calls square at its insn 0 (unrelocated call
        // inside .text, imm kept relative).
        let weigh_at = main.len();
        let square_at = weigh_at + weigh.len();
        assert_eq!(1 + 1 + imm(insns[1]), weigh_at as i32, "{}", program.name());
        assert_eq!(weigh_at as i32 + 1 + imm(insns[weigh_at]), square_at as i32);
        assert_eq!(
            &insns[square_at..],
            square.as_slice(),
            "square copied verbatim"
        );
        // weigh's own relocation (the global `total`) came along with it.
        assert_eq!(
            program.map_relocs(),
            [MapReloc {
                insn_index: weigh_at + 1,
                map_index: 0,
                kind: MapRelocKind::Value { offset: 0 }
            }]
        );
    }
}

#[test]
fn func_info_follows_functions_to_where_they_are_linked() {
    let object = Object::parse("shared_subprog", SHARED_SUBPROG).expect("parses");
    let weigh = raw_function(SHARED_SUBPROG, "weigh");
    let mut subprog_types = None;
    for program in object.programs() {
        let weigh_at = raw_function(SHARED_SUBPROG, program.name()).len() as u32;
        let square_at = weigh_at + weigh.len() as u32;
        let info = program.func_info();
        let offsets: Vec<u32> = info.iter().map(|f| f.insn_off).collect();
        assert_eq!(offsets, [0, weigh_at, square_at], "{}", program.name());
        // The subprograms keep their own FUNC types wherever they land.
        let types = (info[1].type_id, info[2].type_id);
        assert_eq!(*subprog_types.get_or_insert(types), types);
        assert_ne!(info[0].type_id, types.0);
        assert_ne!(types.0, types.1);
    }
    let elf = ElfFile64::<LittleEndian>::parse(SHARED_SUBPROG).unwrap();
    let raw = elf.section_by_name(".BTF").unwrap().data().unwrap();
    let fixed = object.btf().expect("the object has BTF");
    assert_eq!(fixed.len(), raw.len(), "fixed up in place");
    assert_ne!(
        fixed, raw,
        "clang's zero DATASEC sizes were filled in from the ELF"
    );
}

#[test]
fn kfunc_call_is_refused_by_name() {
    let err = Object::parse("kfunc_call", KFUNC_CALL).unwrap_err();
    assert!(
        matches!(&err, ObjectError::Extern { symbol, section, insn_index: 0 }
            if symbol == "bpf_ktime_get_coarse_ns_kfunc" && section == "syscall"),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("bpf_ktime_get_coarse_ns_kfunc"),
        "{err}"
    );
}

#[test]
fn unknown_map_type_is_refused_by_name() {
    let err = Object::parse("bad_map_type", BAD_MAP_TYPE).unwrap_err();
    assert_eq!(
        err.to_string(),
        "map 'mystery' (section '.maps'): unknown map type 99"
    );
}

/// File offset of section `name`'s contents.
fn section_file_offset(elf: &'static [u8], name: &str) -> usize {
    let file = ElfFile64::<LittleEndian>::parse(elf).unwrap();
    let section = file.section_by_name(name).expect("section exists");
    let header = section.elf_section_header();
    usize::try_from(header.sh_offset(LittleEndian)).unwrap()
}

#[test]
fn malformed_headers_are_refused_with_reasons() {
    let refuse = |bytes: &[u8]| Object::parse("x", bytes).unwrap_err().to_string();
    assert!(refuse(&MAPS_AND_GLOBALS[..10]).contains("shorter than an ELF identification"));
    assert!(refuse(&MAPS_AND_GLOBALS[..40]).contains("ELF header"));
    assert!(refuse(b"not an elf file at all, just text").contains("no ELF magic"));

    let mut wrong_machine = MAPS_AND_GLOBALS.to_vec();
    wrong_machine[18..20].copy_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    assert!(refuse(&wrong_machine).contains("machine 62 is not EM_BPF (247)"));

    let mut big_endian = MAPS_AND_GLOBALS.to_vec();
    big_endian[5] = 2; // ELFDATA2MSB
    assert!(refuse(&big_endian).contains("big-endian"));

    // Section headers sit at the end: cutting the file leaves them dangling.
    let half = &MAPS_AND_GLOBALS[..MAPS_AND_GLOBALS.len() / 2];
    assert!(refuse(half).contains("malformed ELF"), "{}", refuse(half));
}

#[test]
fn bad_relocations_are_refused_with_place() {
    let rel = section_file_offset(MAPS_AND_GLOBALS, ".relsyscall");
    // First entry: r_offset (u64) then r_info (u64: symbol << 32 | type).
    let mut far = MAPS_AND_GLOBALS.to_vec();
    far[rel..rel + 8].copy_from_slice(&0x10_0000u64.to_le_bytes());
    let err = Object::parse("x", &far).unwrap_err().to_string();
    assert!(
        err.contains("section 'syscall'") && err.contains("not on an instruction"),
        "{err}"
    );

    let mut bad_symbol = MAPS_AND_GLOBALS.to_vec();
    bad_symbol[rel + 12..rel + 16].copy_from_slice(&9999u32.to_le_bytes());
    let err = Object::parse("x", &bad_symbol).unwrap_err().to_string();
    assert!(err.contains("symbol index 9999 is out of range"), "{err}");

    let mut bad_type = MAPS_AND_GLOBALS.to_vec();
    bad_type[rel + 8..rel + 12].copy_from_slice(&3u32.to_le_bytes()); // R_BPF_64_ABS32
    let err = Object::parse("x", &bad_type).unwrap_err().to_string();
    assert!(err.contains("relocation type 3 on opcode 0x18"), "{err}");
}

#[test]
fn misaligned_input_parses_the_same() {
    let mut shifted = vec![0u8; MAPS_AND_GLOBALS.len() + 1];
    shifted[1..].copy_from_slice(MAPS_AND_GLOBALS);
    let misaligned = Object::parse("maps_and_globals", &shifted[1..]).expect("parses");
    assert_eq!(misaligned, parse_maps_and_globals());
}

#[test]
fn object_name_follows_libbpf() {
    assert_eq!(
        Object::name_from_file_name("dir/compaction.bpf.o"),
        "compaction"
    );
    assert_eq!(
        Object::name_from_file_name("maps_and_globals.o"),
        "maps_and_globals"
    );
}

/// Cases per property: `PROPTEST_CASES` when set (CI scales with it), 1024 otherwise (a parse
/// takes microseconds).
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(1024)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    /// Corrupting any bytes of a valid object yields Ok or a clean error, never a panic.
    #[test]
    fn mutated_objects_never_panic(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..16),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let mut bytes = MAPS_AND_GLOBALS.to_vec();
        for (at, value) in edits {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        if truncate {
            bytes.truncate(cut.index(bytes.len()));
        }
        let _ = Object::parse("fuzz", &bytes);
    }
}

/// File ranges of the structures the parser interprets (not DWARF, which it skips), so
/// mutations land where they can confuse it.
fn interpreted_ranges() -> Vec<std::ops::Range<usize>> {
    let file = ElfFile64::<LittleEndian>::parse(MAPS_AND_GLOBALS).unwrap();
    let mut ranges: Vec<_> = file
        .sections()
        .filter(|s| !s.name().unwrap().starts_with(".debug"))
        .filter_map(|s| s.file_range())
        .filter(|&(_, size)| size > 0)
        .map(|(start, size)| start as usize..(start + size) as usize)
        .collect();
    let header = file.elf_header();
    let shoff = header.e_shoff.get(LittleEndian) as usize;
    let shnum = usize::from(header.e_shnum.get(LittleEndian));
    ranges.push(shoff..shoff + shnum * 64);
    ranges.push(0..64);
    ranges
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    /// Corrupting the ELF header, section headers, symbols, relocations, BTF, maps or code
    /// yields Ok or a clean error, never a panic.
    #[test]
    fn mutated_structures_never_panic(
        edits in proptest::collection::vec(
            (any::<prop::sample::Index>(), any::<prop::sample::Index>(), any::<u8>()),
            1..8,
        ),
    ) {
        let ranges = interpreted_ranges();
        let mut bytes = MAPS_AND_GLOBALS.to_vec();
        for (which, at, value) in edits {
            let range = &ranges[which.index(ranges.len())];
            bytes[range.start + at.index(range.len())] = value;
        }
        let _ = Object::parse("fuzz", &bytes);
    }
}

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

/// The committed objects are what their sources compile to today (reproducible build).
#[test]
fn committed_objects_match_a_fresh_compile() {
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang-19".to_string());
    let Ok(version) = Command::new(&clang).arg("--version").output() else {
        say!("SKIP committed_objects_match_a_fresh_compile: clang-19 not found");
        return;
    };
    let clang_version = String::from_utf8_lossy(&version.stdout);
    let clang_version = clang_version.lines().next().unwrap_or_default();
    let out = std::env::temp_dir().join(format!("resystance-vm-objects-{}", std::process::id()));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("build-test-objects.sh");
    let status = Command::new("sh")
        .arg(&script)
        .arg(&out)
        .env("CLANG", &clang)
        .status()
        .expect("run build-test-objects.sh");
    assert!(status.success(), "build-test-objects.sh failed");
    let mut compared = 0;
    for entry in std::fs::read_dir(data_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "c") {
            let object = path.with_extension("o");
            let fresh = out.join(object.file_name().unwrap());
            assert_eq!(
                std::fs::read(&object).unwrap(),
                std::fs::read(&fresh).unwrap(),
                "{} differs from a fresh compile with {}; run vm/build-test-objects.sh",
                object.display(),
                clang_version.trim()
            );
            compared += 1;
        }
    }
    std::fs::remove_dir_all(&out).ok();
    assert_eq!(compared, 10, "every C source has a committed object");
}

/// No absolute build path leaks into the committed objects.
#[test]
fn committed_objects_are_path_free() {
    for elf in [MAPS_AND_GLOBALS, SHARED_SUBPROG, KFUNC_CALL, BAD_MAP_TYPE] {
        let leaked = elf
            .windows(5)
            .any(|w| w == b"/work" || w == b"/home" || w == b"/tmp/");
        assert!(!leaked);
    }
}
