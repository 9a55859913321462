//! `resystance doctor`: one `ok …` or `missing …: what to do` line per capability, exit 0 only
//! when every required one is present.

use std::io::Write as _;
use std::process::{Command, Output};

const CHECKS: [&str; 8] = [
    "privileges",
    "kernel",
    "syscall programs",
    "mmapable maps",
    "io_uring",
    "fixed buffers over maps",
    "sqpoll (optional)",
    "memlock",
];

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("output is UTF-8")
}

/// Checks the shape of the report and returns how many required checks are missing.
fn check_report(out: &Output) -> usize {
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), CHECKS.len(), "one line per check:\n{stdout}");
    let mut missing_required = 0;
    for (line, name) in lines.iter().zip(CHECKS) {
        let (status, rest) = line.split_once(' ').expect("status, then the check");
        let detail = rest
            .strip_prefix(name)
            .and_then(|r| r.strip_prefix(": "))
            .unwrap_or_else(|| panic!("`{line}` is not about {name}"));
        assert!(!detail.trim().is_empty(), "{line}");
        match status {
            "ok" => {}
            "missing" => {
                // Actionable: ends as a sentence and says what to do.
                assert!(detail.ends_with('.'), "one sentence: {line}");
                let says_what_to_do = ["run ", "raise ", "grant", "boot ", "enable ", "report "]
                    .iter()
                    .any(|verb| detail.contains(verb));
                assert!(says_what_to_do, "no action in: {line}");
                if !name.ends_with("(optional)") {
                    missing_required += 1;
                }
            }
            other => panic!("status `{other}` in `{line}`"),
        }
    }
    let want = if missing_required == 0 {
        Some(0)
    } else {
        Some(1)
    };
    assert_eq!(out.status.code(), want, "exit status for:\n{stdout}");
    missing_required
}

/// Effective uid 0, from `/proc/self/status` (`Uid: real effective saved fs`).
fn is_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let uids = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .expect("a Uid line");
    uids.split_whitespace().nth(1) == Some("0")
}

#[test]
fn doctor_reports_every_capability() {
    let out = Command::new(env!("CARGO_BIN_EXE_resystance"))
        .arg("doctor")
        .output()
        .expect("running resystance doctor");
    let missing = check_report(&out);
    if is_root() {
        // This machine kind (DESIGN.md §4) has everything.
        assert_eq!(missing, 0, "{}", text(&out.stdout));
        assert!(text(&out.stdout).lines().all(|l| l.starts_with("ok ")));
    }
}

#[test]
fn doctor_without_privileges_says_what_to_do() {
    if !is_root() {
        // Already unprivileged: the test above checked the missing lines.
        writeln!(
            std::io::stdout().lock(),
            "SKIP doctor_without_privileges_says_what_to_do: not root, so cannot drop to nobody \
             (doctor_reports_every_capability covers the unprivileged report)"
        )
        .unwrap();
        return;
    }
    let setpriv = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            env!("CARGO_BIN_EXE_resystance"),
            "doctor",
        ])
        .output();
    let out = match setpriv {
        Ok(out) if !text(&out.stderr).contains("setpriv:") => out,
        Ok(out) => {
            writeln!(
                std::io::stdout().lock(),
                "SKIP doctor_without_privileges_says_what_to_do: setpriv failed: {}",
                text(&out.stderr).trim()
            )
            .unwrap();
            return;
        }
        Err(e) => {
            writeln!(
                std::io::stdout().lock(),
                "SKIP doctor_without_privileges_says_what_to_do: no setpriv (util-linux): {e}"
            )
            .unwrap();
            return;
        }
    };
    let missing = check_report(&out);
    let stdout = text(&out.stdout);
    assert!(missing >= 3, "nobody cannot use bpf(2):\n{stdout}");
    assert!(
        stdout.lines().next().unwrap().contains("CAP_BPF"),
        "{stdout}"
    );
}
