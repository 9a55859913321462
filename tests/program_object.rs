//! The committed compaction object against its sources and its Rust ABI mirror.
//!
//! * `committed_object_matches_a_fresh_compile`: `programs/build-bpf.sh` run now gives the
//!   bytes the crate embeds ([`COMPACT_OBJECT`]), and those bytes name no absolute path (one
//!   SKIP line without clang-19).
//! * `abi_layout_matches_the_object_btf`: every struct of `compact_abi.h` as the compiler laid
//!   it out (the object's BTF) equals its mirror in `resystance_programs::abi`, member by
//!   member, and the object's map definitions agree with the ABI constants.

use std::io::Write as _;
use std::mem::{offset_of, size_of};
use std::path::{Path, PathBuf};
use std::process::Command;

use resystance_programs::abi::{
    Job, Record, Run, CHUNK_VALUE_BYTES, KEY_BUF_BYTES, OUTPUT_VALUE_BYTES, POOL_CHUNKS,
    RECORDS_MAX, RESTARTS_MAX, RUNS_MAX, SNAPSHOTS_MAX, WINDOW_BLOCKS_MAX,
};
use resystance_programs::{maps, COMPACT_OBJECT};
use resystance_vm::object::{BtfStruct, MapOrigin, MapType, Object};

macro_rules! say {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// `BPF_F_MMAPABLE`.
const BPF_F_MMAPABLE: u32 = 1 << 10;

fn programs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("programs")
}

fn clang_19_runs() -> bool {
    Command::new("clang-19")
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success())
}

/// Whether `needle` occurs in `haystack`.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn committed_object_is_free_of_absolute_paths() {
    let workspace = env!("CARGO_MANIFEST_DIR");
    for needle in [workspace, "/work/", "/home/", "/tmp/", "/root/"] {
        assert!(
            !contains(COMPACT_OBJECT, needle.as_bytes()),
            "compact.bpf.o contains the absolute path {needle:?}: build it with programs/build-bpf.sh"
        );
    }
}

#[test]
fn committed_object_matches_a_fresh_compile() {
    if !clang_19_runs() {
        say!("SKIP committed_object_matches_a_fresh_compile: clang-19 not found");
        return;
    }
    let out = tempfile::tempdir().expect("a temporary directory");
    let script = programs_dir().join("build-bpf.sh");
    let result = Command::new("sh")
        .arg(&script)
        .arg(out.path())
        .env("CLANG", "clang-19")
        .output()
        .expect("sh runs");
    assert!(
        result.status.success(),
        "{} failed ({}):\n{}",
        script.display(),
        result.status,
        String::from_utf8_lossy(&result.stderr)
    );
    let fresh =
        std::fs::read(out.path().join("compact.bpf.o")).expect("build-bpf.sh wrote compact.bpf.o");
    // The fresh build names neither the source directory nor the output directory.
    let out_dir = out.path().to_string_lossy().into_owned();
    for needle in [env!("CARGO_MANIFEST_DIR"), "/work/", out_dir.as_str()] {
        assert!(
            !contains(&fresh, needle.as_bytes()),
            "a fresh compact.bpf.o contains the absolute path {needle:?}"
        );
    }
    if fresh != COMPACT_OBJECT {
        let first_diff = fresh
            .iter()
            .zip(COMPACT_OBJECT)
            .position(|(a, b)| a != b)
            .unwrap_or(fresh.len().min(COMPACT_OBJECT.len()));
        panic!(
            "programs/bpf/compact.bpf.o ({} bytes) is not what programs/build-bpf.sh builds from \
             the sources now ({} bytes, first difference at byte {first_diff}): rebuild it with \
             programs/build-bpf.sh (cargo build does when clang-19 is on PATH) and commit it",
            COMPACT_OBJECT.len(),
            fresh.len()
        );
    }
    say!(
        "committed compact.bpf.o ({} bytes) = a fresh clang-19 build of programs/bpf",
        fresh.len()
    );
}

/// One member of a Rust mirror: name, `offset_of!`, size.
type Field = (&'static str, usize, usize);

/// A member's size from its type, without naming the type twice.
fn size_of_field<T, F>(_: impl Fn(&T) -> &F) -> usize {
    size_of::<F>()
}

/// `(name, offset_of!(T, name), size of the field)`.
macro_rules! field {
    ($t:ty, $f:ident) => {
        (
            stringify!($f),
            offset_of!($t, $f),
            size_of_field(|v: &$t| &v.$f),
        )
    };
}

fn job_fields() -> Vec<Field> {
    vec![
        field!(Job, abi_version),
        field!(Job, num_runs),
        field!(Job, block_size),
        field!(Job, restart_interval),
        field!(Job, target_file_size),
        field!(Job, bottommost),
        field!(Job, num_snapshots),
        field!(Job, entries_per_call),
        field!(Job, window_bytes),
        field!(Job, snapshots),
        field!(Job, status),
        field!(Job, status_run),
        field!(Job, error_detail),
        field!(Job, error_block),
        field!(Job, error_offset),
        field!(Job, phase),
        field!(Job, out_len),
        field!(Job, num_records),
        field!(Job, pending),
        field!(Job, live),
        field!(Job, last_stripe),
        field!(Job, in_last_len),
        field!(Job, call_entries),
        field!(Job, blk_len),
        field!(Job, blk_entries),
        field!(Job, blk_restarts),
        field!(Job, blk_since_restart),
        field!(Job, blk_deletions),
        field!(Job, blk_raw_key_bytes),
        field!(Job, blk_raw_value_bytes),
        field!(Job, blk_seq_min),
        field!(Job, blk_seq_max),
        field!(Job, out_last_len),
        field!(Job, pad1),
        field!(Job, file_bytes),
        field!(Job, calls),
        field!(Job, entries_in),
        field!(Job, entries_out),
        field!(Job, blocks_in),
        field!(Job, bytes_in),
        field!(Job, blocks_out),
        field!(Job, cur),
        field!(Job, in_last_key),
        field!(Job, out_last_key),
        field!(Job, restarts),
        field!(Job, runs),
    ]
}

fn run_fields() -> Vec<Field> {
    vec![
        field!(Run, window_first),
        field!(Run, window_blocks),
        field!(Run, more),
        field!(Run, state),
        field!(Run, block),
        field!(Run, block_off),
        field!(Run, entries_end),
        field!(Run, next_off),
        field!(Run, value_off),
        field!(Run, value_len),
        field!(Run, key_len),
        field!(Run, pad0),
        field!(Run, block_len),
        field!(Run, key),
    ]
}

fn record_fields() -> Vec<Field> {
    vec![
        field!(Record, offset),
        field!(Record, size),
        field!(Record, flags),
        field!(Record, entries),
        field!(Record, deletions),
        field!(Record, last_key_len),
        field!(Record, raw_key_bytes),
        field!(Record, raw_value_bytes),
        field!(Record, seq_min),
        field!(Record, seq_max),
        field!(Record, last_key),
    ]
}

fn btf_struct(object: &Object, name: &str) -> BtfStruct {
    object
        .btf_struct(name)
        .unwrap_or_else(|e| panic!("the BTF of compact.bpf.o: struct {name}: {e}"))
        .unwrap_or_else(|| panic!("compact.bpf.o's BTF has no struct {name}"))
}

/// Compares `struct name` in the object with its Rust mirror; returns the members compared.
fn compare_struct(object: &Object, name: &str, rust_size: usize, rust: &[Field]) -> usize {
    let c = btf_struct(object, name);
    let mut problems = Vec::new();
    if c.size as usize != rust_size {
        problems.push(format!(
            "sizeof: C {} bytes, Rust {rust_size} bytes",
            c.size
        ));
    }
    for i in 0..c.members.len().max(rust.len()) {
        match (c.members.get(i), rust.get(i)) {
            (Some(cm), Some(&(rname, roff, rsize))) => {
                if cm.name != rname
                    || cm.offset_bytes as usize != roff
                    || cm.size_bytes as usize != rsize
                {
                    problems.push(format!(
                        "member {i}: C {} at {} ({} bytes), Rust {rname} at {roff} ({rsize} bytes)",
                        cm.name, cm.offset_bytes, cm.size_bytes
                    ));
                }
            }
            (Some(cm), None) => problems.push(format!(
                "member {i}: C {} at {} ({} bytes) has no Rust field",
                cm.name, cm.offset_bytes, cm.size_bytes
            )),
            (None, Some(&(rname, roff, rsize))) => problems.push(format!(
                "member {i}: Rust {rname} at {roff} ({rsize} bytes) has no C member"
            )),
            (None, None) => unreachable!("i < the longer list"),
        }
    }
    // The mirrors are Pod: their fields must cover every byte, back to back.
    let mut end = 0;
    for &(rname, roff, rsize) in rust {
        if roff != end {
            problems.push(format!(
                "Rust {rname} at {roff}: a gap or overlap after byte {end}"
            ));
        }
        end = roff + rsize;
    }
    if end != rust_size {
        problems.push(format!(
            "Rust fields end at {end} of {rust_size} bytes: tail padding"
        ));
    }
    assert!(
        problems.is_empty(),
        "struct {name} (compact_abi.h) and its Rust mirror differ:\n  {}",
        problems.join("\n  ")
    );
    c.members.len()
}

/// A struct wrapping one array (`cj_window_chunk`, `cj_output`, `cj_records`): its size and its
/// single member.
fn compare_wrapper(object: &Object, name: &str, member: &str, size: usize) -> usize {
    let c = btf_struct(object, name);
    let expected = vec![(member.to_string(), 0u32, size as u32)];
    let got: Vec<(String, u32, u32)> = c
        .members
        .iter()
        .map(|m| (m.name.clone(), m.offset_bytes, m.size_bytes))
        .collect();
    assert_eq!(c.size as usize, size, "sizeof(struct {name})");
    assert_eq!(got, expected, "members of struct {name}");
    c.members.len()
}

#[test]
fn abi_layout_matches_the_object_btf() {
    let object = Object::parse("compact.bpf.o", COMPACT_OBJECT).expect("compact.bpf.o parses");
    let mut members = 0;
    members += compare_struct(&object, "cj_job", size_of::<Job>(), &job_fields());
    members += compare_struct(&object, "cj_run", size_of::<Run>(), &run_fields());
    members += compare_struct(&object, "cj_record", size_of::<Record>(), &record_fields());
    members += compare_wrapper(&object, "cj_window_chunk", "bytes", CHUNK_VALUE_BYTES);
    members += compare_wrapper(&object, "cj_output", "bytes", OUTPUT_VALUE_BYTES);
    members += compare_wrapper(
        &object,
        "cj_records",
        "rec",
        RECORDS_MAX * size_of::<Record>(),
    );
    // The array lengths the constants give (a constant changed on one side only).
    assert_eq!(size_of_field(|j: &Job| &j.snapshots), 8 * SNAPSHOTS_MAX);
    assert_eq!(size_of_field(|j: &Job| &j.restarts), 4 * RESTARTS_MAX);
    assert_eq!(
        size_of_field(|j: &Job| &j.runs),
        RUNS_MAX * size_of::<Run>()
    );
    assert_eq!(size_of_field(|r: &Run| &r.block_len), 4 * WINDOW_BLOCKS_MAX);
    assert_eq!(size_of_field(|r: &Run| &r.key), KEY_BUF_BYTES);

    // The maps: (name, value size, max_entries).
    let expected = [
        (maps::JOB, size_of::<Job>(), 1),
        (maps::WINDOWS, CHUNK_VALUE_BYTES, POOL_CHUNKS),
        (maps::OUTPUT, OUTPUT_VALUE_BYTES, 1),
        (maps::RECORDS, RECORDS_MAX * size_of::<Record>(), 1),
    ];
    // The BTF-defined maps (the rest is global data: the CRC table in .rodata).
    let mut names: Vec<&str> = object
        .maps()
        .iter()
        .filter(|m| m.origin == MapOrigin::Btf)
        .map(|m| m.name.as_str())
        .collect();
    names.sort_unstable();
    let mut expected_names: Vec<&str> = expected.iter().map(|e| e.0).collect();
    expected_names.sort_unstable();
    assert_eq!(names, expected_names, "the .maps of compact.bpf.o");
    for (name, value_size, max_entries) in expected {
        let (_, map) = object.map(name).expect("listed above");
        assert_eq!(map.map_type, MapType::Array, "{name}: map type");
        assert_eq!(map.key_size, 4, "{name}: key size");
        assert_eq!(map.value_size as usize, value_size, "{name}: value size");
        assert_eq!(map.max_entries as usize, max_entries, "{name}: max_entries");
        assert_eq!(map.map_flags, BPF_F_MMAPABLE, "{name}: flags");
    }
    say!(
        "compact_abi.h = programs/src/abi.rs: 6 structs, {members} members compared by name, offset and size; 4 maps"
    );
}

/// rbpf's JIT (the vm's opt-in fast mode) cannot run the compaction program: it lacks helper
/// calls, BPF-to-BPF calls and `may_goto`, and refuses at compile time, naming what it met
/// first. (The benchmark therefore compares the twin, Linux and the vm's interpreter.)
#[test]
fn rbpf_jit_refuses_the_compaction_program_by_name() {
    use resystance_vm::jit::{JitError, JitProgram, LinuxVerified};
    use resystance_vm::loader::{self, LoadOptions};

    #[derive(Debug)]
    struct NoClock;
    impl resystance_vm::helpers::Clock for NoClock {
        fn monotonic_ns(&self) -> u64 {
            0
        }
    }
    let object = resystance_vm::object::Object::parse("compact.bpf.o", COMPACT_OBJECT).unwrap();
    let loaded = loader::load(
        &object,
        resystance_programs::COMPACT_PROGRAM,
        &LoadOptions::new(std::sync::Arc::new(NoClock)),
    )
    .unwrap();
    // SAFETY: never run; only compiled, and compiling refuses it. (Linux's verifier does
    // accept this program: tests/compaction_program.rs loads it as root.)
    let err = JitProgram::compile(unsafe { LinuxVerified::assume_verified(loaded.program()) })
        .unwrap_err();
    assert!(matches!(err, JitError::Unsupported { .. }), "{err:?}");
    say!("rbpf JIT on compact.bpf.o: refused: {err}");
}
