//! What several vm test binaries share: a line printer that libtest does not capture, and the
//! bpf_conformance vectors from `../shared/conformance` (read at test time, never copied).

#![allow(dead_code)] // each test binary uses part of it

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

/// Prints a line past libtest's output capture (which only takes `print!`), so counts and skip
/// lines show in a normal `cargo test` run.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// One conformance case: the program, its memory, and the r0 it must return.
pub struct Case {
    pub name: String,
    pub program: Vec<u8>,
    pub mem: Vec<u8>,
    pub expected_r0: u64,
}

/// The cases Linux 6.18 accepted (`linux-6.18.txt`), or `None` after printing
/// `SKIP <what>: ../shared/conformance not found` when the suite is not beside the checkout.
pub fn accepted_cases(what: &str) -> Option<Vec<Case>> {
    let dir =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance/bpf_conformance");
    if !dir.is_dir() {
        say!("SKIP {what}: ../shared/conformance not found");
        return None;
    }
    let read = |name: &str| {
        let path = dir.join(name);
        fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
    };
    let text = |name: &str| String::from_utf8(read(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let expected: BTreeMap<String, u64> = text("expected.txt")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let (name, value) = line
                .split_once(' ')
                .unwrap_or_else(|| panic!("expected.txt line {line:?}"));
            let hex = value.trim().trim_start_matches("0x");
            let value = u64::from_str_radix(hex, 16)
                .unwrap_or_else(|e| panic!("expected.txt {line:?}: {e}"));
            (name.to_string(), value)
        })
        .collect();
    let cases = text("linux-6.18.txt")
        .lines()
        .filter_map(|line| line.strip_suffix(" accepted"))
        .map(|name| Case {
            name: name.to_string(),
            program: read(&format!("{name}.bin")),
            mem: read(&format!("{name}.mem")),
            expected_r0: *expected
                .get(name)
                .unwrap_or_else(|| panic!("{name}: no expected value")),
        })
        .collect();
    Some(cases)
}
