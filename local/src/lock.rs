//! One sync of a file at a time. Two rounds on one file at once would
//! upload the same changes and log their conflicts twice; the second round
//! waits for the first instead. The lock is the operating system's, on a
//! file beside the database (`<file>-tandem-lock`), so a process killed
//! mid-sync releases it.

use std::fs::{File, OpenOptions, TryLockError};
use std::time::{Duration, Instant};

use rusqlite::Connection;

use crate::error::{LocalError, Result};

/// How long a round waits for another round of the same file.
const WAIT: Duration = Duration::from_secs(120);

/// Held while a round runs; released when dropped (or the process dies).
pub struct SyncLock {
    _file: File,
}

impl SyncLock {
    /// Takes the lock of the file `conn` has open, waiting for a round
    /// already running. A database with no file (in memory) needs none.
    pub fn acquire(conn: &Connection) -> Result<Option<SyncLock>> {
        let Some(path) = conn.path().filter(|p| !p.is_empty()) else { return Ok(None) };
        let lock_path = lock_path(path);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| LocalError::Open { path: lock_path.clone(), reason: e.to_string() })?;
        let deadline = Instant::now() + WAIT;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(Some(SyncLock { _file: file })),
                Err(TryLockError::WouldBlock) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
                Err(TryLockError::WouldBlock) => return Err(LocalError::Busy { path: path.to_string(), waited: WAIT.as_secs() }),
                Err(TryLockError::Error(e)) => return Err(LocalError::Open { path: lock_path, reason: e.to_string() }),
            }
        }
    }
}

/// The lock file of database file `path`.
pub fn lock_path(path: &str) -> String {
    format!("{path}-tandem-lock")
}
