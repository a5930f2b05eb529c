//! Keeping a file live (`tandem sync --watch`, `sync_run`'s `watch`):
//! round after round, each started as soon as the server says the scope
//! saw a commit ([`Remote::wait_for_change`]) or the file has unsent
//! changes (its pending count, looked at every 250 ms). A lost network,
//! a lock another session holds for a while, an upload the server failed
//! (its pull ran), or (once a round passed) the extension being made again
//! by a restore, never ends a watch: it waits (0.5 s doubling to 30 s,
//! with jitter), reconnects and goes on; any other error ends it.

use std::time::{Duration, Instant};

use rusqlite::Connection;
use tandem_core::backoff::Backoff;

use crate::agent::{self, Step, SyncOptions, SyncReport};
use crate::error::{LocalError, Result};
use crate::remote::{self, Remote};
use crate::{meta, status};

/// How often a waiting watch looks at the file's unsent changes (and at
/// whether it should stop).
pub const POLL: Duration = Duration::from_millis(250);

/// The longest a watch waits without a round: what no notification
/// announces (a dump restored over the server, a write made with Tandem's
/// notify trigger disabled) reaches the file within this.
pub const QUIET_ROUND: Duration = Duration::from_secs(60);

/// What a watch is doing, for showing it.
#[derive(Debug)]
pub enum WatchStep<'a> {
    /// A batch of the round under way.
    Batch(Step),
    /// A round finished.
    Round(&'a SyncReport),
    /// Waiting for a change on either side.
    Waiting,
    /// The network failed (or a lock was held too long); the watch tries
    /// again after `retry_in`.
    Retrying { error: &'a LocalError, retry_in: Duration },
}

/// Unsent changes in the file now.
fn pending(conn: &Connection, scope: &str) -> Result<u64> {
    status::pending(conn, &meta::require(conn, scope)?)
}

/// Sleeps `wait` in short steps; `false` when told to stop meanwhile.
fn pause(wait: Duration, stop: &dyn Fn() -> bool) -> bool {
    let until = Instant::now() + wait;
    while Instant::now() < until {
        if stop() {
            return false;
        }
        std::thread::sleep(POLL.min(until.saturating_duration_since(Instant::now())));
    }
    !stop()
}

/// Why a wait ended.
enum Woken {
    /// Something to sync: the server said so, or the file changed.
    Change,
    /// The network failed; reconnect first.
    Lost(LocalError),
    Stop,
}

/// Waits for a change on either side, at most [`QUIET_ROUND`]. `baseline`
/// is the file's unsent count after the round: changes that did not go
/// up (the server held them back) wake no one until the count moves.
fn wait(
    conn: &Connection,
    remote: &mut dyn Remote,
    scope: &str,
    token: Option<&str>,
    baseline: u64,
    stop: &dyn Fn() -> bool,
) -> Result<Woken> {
    let started = Instant::now();
    loop {
        if stop() {
            return Ok(Woken::Stop);
        }
        if started.elapsed() >= QUIET_ROUND {
            return Ok(Woken::Change);
        }
        let now = pending(conn, scope)?;
        if now > 0 && now != baseline {
            return Ok(Woken::Change);
        }
        match remote.wait_for_change(scope, token, POLL) {
            Ok(true) => return Ok(Woken::Change),
            Ok(false) => {}
            Err(error) if error.is_transient() => return Ok(Woken::Lost(error.into())),
            Err(error) => return Err(error.into()),
        }
    }
}

/// Rounds until `stop` says so (checked between rounds and while
/// waiting; a round under way finishes). Returns the rounds' summed
/// report, with `rounds` set.
pub fn run(
    conn: &Connection,
    remote: &mut dyn Remote,
    scope: &str,
    options: &SyncOptions,
    stop: &dyn Fn() -> bool,
    observe: &mut dyn FnMut(WatchStep<'_>),
) -> Result<SyncReport> {
    options.check()?;
    let started = Instant::now();
    let mut total = SyncReport { scope: scope.to_string(), rounds: Some(0), ..SyncReport::default() };
    let mut backoff = Backoff::new();
    let mut after_last: Option<u64> = None;
    let mut options = options.clone();
    loop {
        let lost = match agent::run_observed(conn, remote, scope, &options, &mut |step| observe(WatchStep::Batch(step))) {
            Ok(report) => {
                // A reinit is the first round's; a round that failed
                // after beginning it goes on with it by itself.
                options.reinit = false;
                observe(WatchStep::Round(&report));
                total.add(report);
                None
            }
            Err(error) if error.is_transient() => Some(error),
            // The server failed the upload (a full disk, a privilege taken
            // away): the pull ran, the changes wait in the file, and the
            // next round tries them again. Ending here would stop the
            // device's sync both ways until someone restarts it.
            Err(LocalError::UploadFailed { pulled, error }) => {
                total.pulled += pulled;
                Some(LocalError::UploadFailed { pulled, error })
            }
            // Once a round passed, missing functions are a restore or an
            // upgrade under way (the extension dropped and made again),
            // waited out like a lost network; before, a server without
            // Tandem ends the watch.
            Err(error) if error.is_extension_missing() && total.rounds > Some(0) => Some(error),
            Err(error) => return Err(error),
        };
        let lost = match lost {
            Some(error) => Some(error),
            None if stop() => break,
            None => {
                let left = pending(conn, scope)?;
                if left > 0 && after_last != Some(left) {
                    // Written while the round ran, or held back: one more
                    // round tells which.
                    after_last = Some(left);
                    continue;
                }
                after_last = Some(left);
                observe(WatchStep::Waiting);
                match wait(conn, remote, scope, options.token.as_deref(), left, stop)? {
                    Woken::Change => {
                        backoff.reset();
                        None
                    }
                    Woken::Lost(error) => Some(error),
                    Woken::Stop => break,
                }
            }
        };
        if let Some(error) = lost {
            let retry_in = backoff.next_wait();
            observe(WatchStep::Retrying { error: &error, retry_in });
            if !pause(retry_in, stop) {
                break;
            }
            match remote.reconnect() {
                Ok(()) => {}
                // Still unreachable: the next round fails and waits longer.
                Err(error) if error.is_transient() => {}
                Err(error) => return Err(error.into()),
            }
        }
    }
    total.took_ms = started.elapsed().as_millis() as u64;
    Ok(total)
}

/// Opens the remote at `url`, waiting out a network that is down (with
/// backoff); `None` when told to stop first.
pub fn open(
    url: &str,
    ca_cert: Option<&str>,
    stop: &dyn Fn() -> bool,
    observe: &mut dyn FnMut(WatchStep<'_>),
) -> Result<Option<Box<dyn Remote>>> {
    let mut backoff = Backoff::new();
    loop {
        match remote::open(url, ca_cert) {
            Ok(remote) => return Ok(Some(remote)),
            Err(error) if error.is_transient() => {
                let error = LocalError::from(error);
                let retry_in = backoff.next_wait();
                observe(WatchStep::Retrying { error: &error, retry_in });
                if !pause(retry_in, stop) {
                    return Ok(None);
                }
            }
            Err(error) => return Err(error.into()),
        }
    }
}

/// A round, or with `options.watch` a watch of that many seconds (or
/// until `stop`): what `sync_run` and `Store::sync` do.
pub fn sync(
    conn: &Connection,
    remote: &mut dyn Remote,
    scope: &str,
    options: &SyncOptions,
    stop: &dyn Fn() -> bool,
    observe: &mut dyn FnMut(WatchStep<'_>),
) -> Result<SyncReport> {
    match options.watch {
        None => agent::run_observed(conn, remote, scope, options, &mut |step| observe(WatchStep::Batch(step))),
        Some(seconds) => {
            options.check()?;
            let deadline = Instant::now() + Duration::from_secs_f64(seconds);
            run(conn, remote, scope, options, &|| stop() || Instant::now() >= deadline, observe)
        }
    }
}
