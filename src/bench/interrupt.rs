//! Ctrl-C during `resystance bench`: the first SIGINT asks the running benchmark to stop after
//! its current operation; the database is then closed cleanly (waiting for running flushes
//! and compactions) and the run exits with [`EXIT_INTERRUPTED`]. A second SIGINT exits at
//! once — crash-consistent like a power loss, since every file is replaced atomically.
//!
//! This is the CLI's own process control, outside the kernel boundary (which carries only the
//! engine's work), so it calls libc directly.

use std::sync::atomic::{AtomicBool, Ordering};

/// The exit code of an interrupted run (128 + SIGINT, as shells report it).
pub const EXIT_INTERRUPTED: u8 = 130;

static REQUESTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    // Only async-signal-safe work here: an atomic swap, and `_exit` on the second signal.
    if REQUESTED.swap(true, Ordering::SeqCst) {
        // SAFETY: `_exit` is async-signal-safe and never returns.
        unsafe { libc::_exit(i32::from(EXIT_INTERRUPTED)) };
    }
}

/// Installs the SIGINT handler; `false` if the kernel refused (then Ctrl-C kills the process
/// as usual, which the engine survives like a crash).
pub fn install() -> bool {
    // SAFETY: a zeroed sigaction with a handler that only does async-signal-safe work;
    // SA_RESTART so interrupted system calls resume instead of failing with EINTR.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sigint as extern "C" fn(libc::c_int) as usize;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGINT, &action, std::ptr::null_mut()) == 0
    }
}

/// Whether a SIGINT asked the run to stop.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::Relaxed)
}
