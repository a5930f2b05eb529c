//! Structured logs on stderr: `RUST_LOG` chooses what (default `info`),
//! JSON lines for a log collector or text for a person.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs the process's log output; a second call changes nothing.
pub fn init(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(std::io::stderr().is_terminal());
    let _ = if json { builder.json().try_init() } else { builder.try_init() };
}
