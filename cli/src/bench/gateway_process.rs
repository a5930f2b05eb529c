//! `tandem serve` as a child process of the bench, so its memory and CPU
//! are its own to measure.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use crate::error::CliError;

/// `tandem serve` as a child process, stopped (SIGTERM) when dropped.
pub struct GatewayProcess {
    child: Child,
    pub url: String,
}

impl GatewayProcess {
    pub fn start(database_url: &str) -> Result<Self, CliError> {
        let exe = std::env::current_exe().map_err(|e| CliError::Invalid(format!("cannot find the tandem binary: {e}")))?;
        let mut child = Command::new(exe)
            .args(["serve", "--database", database_url, "--listen", "127.0.0.1:0", "--shutdown-grace", "5"])
            .env("RUST_LOG", "warn,tandem_server=info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| CliError::Invalid(format!("cannot start tandem serve: {e}")))?;
        let stderr = child.stderr.take().ok_or_else(|| CliError::Invalid("tandem serve has no log".into()))?;
        let mut lines = BufReader::new(stderr).lines();
        let mut log = String::new();
        let url = loop {
            let Some(Ok(line)) = lines.next() else {
                let _ = child.kill();
                return Err(CliError::Invalid(format!("tandem serve ended before serving:\n{log}")));
            };
            log.push_str(&line);
            log.push('\n');
            if let Some((_, rest)) = line.split_once("serving devices at ") {
                break rest.split_whitespace().next().unwrap_or_default().to_string();
            }
        };
        // Keeps reading the log, so the gateway never blocks on a full pipe.
        std::thread::spawn(move || lines.map_while(Result::ok).for_each(drop));
        Ok(GatewayProcess { child, url })
    }

    /// Resident and peak resident memory (VmRSS, VmHWM), in MB.
    pub fn memory_mb(&self) -> Result<(f64, f64), CliError> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .map_err(|e| CliError::Invalid(format!("cannot read the gateway's memory: {e}")))?;
        let field = |name: &str| -> f64 {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|kb| kb.parse::<f64>().ok())
                .map_or(f64::NAN, |kb| kb / 1024.0)
        };
        Ok((field("VmRSS:"), field("VmHWM:")))
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        // SAFETY: signals the child this value started and still owns.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

impl GatewayProcess {
    /// The gateway's CPU seconds so far.
    pub fn cpu_seconds(&self) -> Option<f64> {
        super::process_stat::cpu_seconds(self.child.id(), true)
    }
}
