//! Progress of long work on a terminal (stderr), silent otherwise: what
//! moved so far, how long it took and how fast it goes.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    pub fn new(label: &str) -> Self {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(5));
        // The template is a constant: a bad one is a bug, shown as a plain line.
        let style = ProgressStyle::with_template("{spinner} {prefix}: {msg} [{elapsed}, {per_sec}]")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        bar.set_style(style);
        bar.set_prefix(label.to_string());
        bar.enable_steady_tick(Duration::from_millis(200));
        Progress { bar }
    }

    /// Shows `status`, with `done` rows or changes moved so far (the rate).
    pub fn show(&mut self, done: u64, status: &str) {
        self.bar.set_position(done);
        self.bar.set_message(status.to_string());
    }

    /// A line above the spinner (shown on a terminal only).
    pub fn say(&self, line: &str) {
        self.bar.println(line);
    }

    pub fn finish(self) {
        self.bar.finish_and_clear();
    }
}
