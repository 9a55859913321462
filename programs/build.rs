//! Keeps the committed eBPF objects (`bpf/*.bpf.o`) in step with their sources.
//!
//! `cargo build` never needs clang: the crate embeds the committed object. When clang-19 (or
//! `$CLANG`) is on PATH and a source in `bpf/` changed, this recompiles every `bpf/*.bpf.c`
//! with `build-bpf.sh` into OUT_DIR and, where a fresh object differs from the committed one,
//! replaces the committed one (the crate's `include_bytes!` then embeds it in this same build)
//! and says so once: the updated object must be committed. Without clang it does nothing; if
//! clang fails it warns with clang's stderr and keeps the committed object.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn main() {
    let manifest_dir = PathBuf::from(env_var("CARGO_MANIFEST_DIR"));
    let bpf_dir = manifest_dir.join("bpf");
    let script = manifest_dir.join("build-bpf.sh");

    // Rerun only when a source or the script changes (not on the objects this writes).
    println!("cargo:rerun-if-changed={}", script.display());
    println!("cargo:rerun-if-env-changed=CLANG");
    let sources = bpf_sources(&bpf_dir);
    for source in &sources {
        println!("cargo:rerun-if-changed={}", source.display());
    }

    let clang = std::env::var_os("CLANG").unwrap_or_else(|| OsString::from("clang-19"));
    if !runs(&clang) {
        return; // no clang: the committed objects are what we build with
    }

    let out_dir = PathBuf::from(env_var("OUT_DIR")).join("bpf");
    let output = Command::new("sh")
        .arg(&script)
        .arg(&out_dir)
        .env("CLANG", &clang)
        .stdin(Stdio::null())
        .output();
    let output = match output {
        Ok(output) => output,
        Err(e) => {
            warn(&format!(
                "could not run {}: {e}; keeping the committed eBPF objects",
                script.display()
            ));
            return;
        }
    };
    if !output.status.success() {
        warn(&format!(
            "{} failed ({}); keeping the committed eBPF objects:",
            script.display(),
            output.status
        ));
        for line in String::from_utf8_lossy(&output.stderr).lines() {
            warn(line);
        }
        return;
    }

    for source in sources.iter().filter(|s| is_program_source(s)) {
        let Some(file_name) = source.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let object_name = format!("{}.o", file_name.trim_end_matches(".c"));
        let fresh_path = out_dir.join(&object_name);
        let committed_path = bpf_dir.join(&object_name);
        let fresh = match fs::read(&fresh_path) {
            Ok(bytes) => bytes,
            Err(e) => {
                warn(&format!(
                    "{} did not produce {}: {e}; keeping the committed object",
                    script.display(),
                    fresh_path.display()
                ));
                continue;
            }
        };
        if fs::read(&committed_path).is_ok_and(|committed| committed == fresh) {
            continue;
        }
        match replace(&committed_path, &fresh) {
            // Watching the object just written makes the next build run this once more and
            // find it fresh: cargo replays a build script's warnings until it reruns, and the
            // warning is news only once.
            Ok(()) => {
                println!("cargo:rerun-if-changed={}", committed_path.display());
                warn(&format!(
                    "{} was out of date with its sources and has been rebuilt with {}: \
                     commit the updated object",
                    committed_path.display(),
                    clang.to_string_lossy()
                ));
            }
            Err(e) => warn(&format!(
                "{} is out of date with its sources but could not be replaced: {e}",
                committed_path.display()
            )),
        }
    }
}

fn env_var(name: &str) -> OsString {
    std::env::var_os(name).unwrap_or_else(|| panic!("cargo sets {name} for build scripts"))
}

/// The sources in `bpf/`: `*.bpf.c` and `*.h`, sorted so the output is stable.
fn bpf_sources(bpf_dir: &Path) -> Vec<PathBuf> {
    let mut sources: Vec<PathBuf> = fs::read_dir(bpf_dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|entry| entry.path())
                .filter(|path| {
                    path.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.ends_with(".bpf.c") || n.ends_with(".h"))
                })
                .collect()
        })
        .unwrap_or_default();
    sources.sort();
    sources
}

fn is_program_source(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with(".bpf.c"))
}

/// Whether `clang` can be started at all.
fn runs(clang: &OsString) -> bool {
    Command::new(clang)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Writes `bytes` to `path` through a temporary file and a rename, so a reader never sees a
/// half-written object.
fn replace(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    fs::write(&tmp, bytes)?;
    fs::rename(&tmp, path).inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })
}

fn warn(message: &str) {
    println!("cargo:warning={message}");
}
