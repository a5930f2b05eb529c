//! Progress of long work on a terminal (stderr), silent otherwise.

use std::io::{IsTerminal, Write};
use std::time::Instant;

pub struct Progress {
    label: String,
    total: Option<u64>,
    done: u64,
    shown: Instant,
    visible: bool,
}

impl Progress {
    pub fn new(label: impl Into<String>, total: Option<u64>) -> Self {
        Progress { label: label.into(), total, done: 0, shown: Instant::now(), visible: std::io::stderr().is_terminal() }
    }

    pub fn add(&mut self, n: u64) {
        self.done += n;
        if self.visible && self.shown.elapsed().as_millis() >= 200 {
            self.shown = Instant::now();
            self.draw();
        }
    }

    fn draw(&self) {
        let line = match self.total {
            Some(total) if total > 0 => {
                format!("{}: {} / {} ({}%)", self.label, self.done, total, self.done * 100 / total)
            }
            _ => format!("{}: {}", self.label, self.done),
        };
        let mut err = std::io::stderr();
        let _ = write!(err, "\r\x1b[2K{line}");
        let _ = err.flush();
    }

    pub fn finish(self) {
        if self.visible {
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
        }
    }
}
