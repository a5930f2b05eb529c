//! Structured logs on stderr: `RUST_LOG` chooses what (default `info`),
//! JSON lines for a log collector or text for a person.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs the process's log output; a second call changes nothing. A
/// log that cannot be written (its reader gone) is dropped: reporting
/// that on the same stderr panicked the task that logged, so requests
/// went unanswered and SIGTERM never stopped the gateway (helper 98).
pub fn init(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .log_internal_errors(false);
    let _ = if json { builder.json().try_init() } else { builder.try_init() };
}
