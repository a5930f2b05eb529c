//! Progress of long work on a terminal (stderr), silent otherwise.

use std::io::{IsTerminal, Write};
use std::time::Instant;

pub struct Progress {
    label: String,
    shown: Instant,
    visible: bool,
}

impl Progress {
    pub fn new(label: impl Into<String>) -> Self {
        Progress { label: label.into(), shown: Instant::now(), visible: std::io::stderr().is_terminal() }
    }

    /// Shows `status`, at most five times a second.
    pub fn show(&mut self, status: &str) {
        if self.visible && self.shown.elapsed().as_millis() >= 200 {
            self.shown = Instant::now();
            let mut err = std::io::stderr();
            let _ = write!(err, "\r\x1b[2K{}: {status}", self.label);
            let _ = err.flush();
        }
    }

    pub fn finish(self) {
        if self.visible {
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
        }
    }
}
