//! A progress bar on standard error for long runs at a terminal.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Runs shorter than this many operations get no bar (they finish before it is useful).
pub const PROGRESS_MIN_OPS: u64 = 100_000;
/// Operations between bar updates: often enough to move smoothly, rare enough to cost nothing
/// next to the operations themselves. A power of two so the check is a mask.
pub const PROGRESS_EVERY_OPS: u64 = 1024;

/// A bar that exists only when standard error is a terminal and the run is long.
#[derive(Debug)]
pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    /// A bar for `total` operations of benchmark `name`, or none.
    pub fn new(name: &str, total: u64) -> Self {
        if total < PROGRESS_MIN_OPS || !std::io::stderr().is_terminal() {
            return Progress { bar: None };
        }
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template(
            "{prefix:<12} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} ops, eta {eta}",
        )
        .expect("constant progress template is valid");
        bar.set_style(style);
        bar.set_prefix(name.to_string());
        Progress { bar: Some(bar) }
    }

    /// Notes that `done` operations have finished; cheap unless an update is due.
    #[inline]
    pub fn tick(&self, done: u64) {
        if done & (PROGRESS_EVERY_OPS - 1) == 0 {
            if let Some(bar) = &self.bar {
                bar.set_position(done);
            }
        }
    }

    /// Removes the bar so the report prints on a clean line.
    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}

const _: () = assert!(PROGRESS_EVERY_OPS.is_power_of_two());
