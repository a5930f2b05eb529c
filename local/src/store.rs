//! A local SQLite file with the `sync_*` functions registered, optionally
//! encrypted at rest (SQLCipher).

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode};

use crate::agent::{Step, SyncOptions, SyncReport};
use crate::error::{LocalError, Result};
use crate::remote::{self, Remote};
use crate::watch::{self, WatchStep};
use crate::{functions, meta};

pub struct Store {
    conn: Connection,
    path: PathBuf,
    /// Opened with a key (SQLCipher); read only where re-keying is built.
    #[cfg_attr(not(feature = "sqlcipher"), allow(dead_code))]
    encrypted: bool,
}

/// Statements a file's connection keeps prepared.
const STATEMENT_CACHE: usize = 512;

impl Store {
    /// Opens (or creates) an unencrypted file.
    pub fn open(path: impl AsRef<Path>) -> Result<Store> {
        Store::open_with_key(path, None)
    }

    /// Opens (or creates) a file encrypted with `key`; a wrong key is an
    /// error, never a silent empty database.
    pub fn open_encrypted(path: impl AsRef<Path>, key: &str) -> Result<Store> {
        Store::open_with_key(path, Some(key))
    }

    pub fn open_with_key(path: impl AsRef<Path>, key: Option<&str>) -> Result<Store> {
        let path = path.as_ref().to_path_buf();
        let shown = path.display().to_string();
        let conn = Connection::open(&path).map_err(|e| LocalError::Open { path: shown.clone(), reason: e.to_string() })?;
        if let Some(key) = key {
            if key.is_empty() {
                return Err(LocalError::Invalid("an empty key would leave the file unencrypted: pass a real key or none".into()));
            }
            #[cfg(not(feature = "sqlcipher"))]
            return Err(LocalError::Invalid("this build has no encryption (build tandem-local with the sqlcipher feature)".into()));
            #[cfg(feature = "sqlcipher")]
            {
                // A wrong key is reported as an error below; SQLCipher need
                // not also log it to stderr.
                let _ = conn.query_row("PRAGMA cipher_log_level = NONE", [], |_| Ok(()));
                conn.pragma_update(None, "key", key)?;
            }
        }
        match conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get::<_, i64>(0)) {
            Ok(_) => {}
            Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == ErrorCode::NotADatabase => {
                return Err(LocalError::WrongKey { path: shown });
            }
            Err(e) => return Err(LocalError::Open { path: shown, reason: e.to_string() }),
        }
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "cache_size", -65536)?;
        // A round prepares a few statements per table of its scope, several
        // times: a wide scope needs more than rusqlite's default of 16.
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        meta::ensure(&conn)?;
        functions::register(&conn)?;
        Ok(Store { conn, path, encrypted: key.is_some() })
    }

    /// Deletes a local file, the WAL files SQLite keeps beside it and its
    /// sync lock (the file must not be open); files already gone are no
    /// error.
    pub fn remove(path: impl AsRef<Path>) {
        for suffix in ["", "-wal", "-shm", "-tandem-lock"] {
            let mut name = path.as_ref().as_os_str().to_owned();
            name.push(suffix);
            let _ = std::fs::remove_file(name);
        }
    }

    /// Whether the file holds anything of `scope` worth keeping: rows it
    /// pulled (a watermark, even of a download cut short), changes it sent,
    /// or local changes not sent yet. A first sync that failed before any
    /// of these left a file worth nothing. In doubt, yes.
    pub fn holds_data(&self, scope: &str) -> bool {
        match meta::load(&self.conn, scope) {
            Ok(None) => false,
            Ok(Some(state)) => {
                state.watermark.is_some()
                    || state.upload_id.is_some()
                    || state.tables.iter().any(|t| t.acked_seq > 0)
                    || crate::status::pending(&self.conn, &state).map_or(true, |n| n > 0)
            }
            Err(_) => true,
        }
    }

    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// One sync round with the server at `remote_url` (`postgres://...`,
    /// `https://...`); with `options.watch`, rounds for that many seconds.
    pub fn sync(&self, remote_url: &str, scope: &str, options: &SyncOptions) -> Result<SyncReport> {
        let mut remote = remote::open(remote_url, options.ca_cert.as_deref())?;
        self.sync_with(remote.as_mut(), scope, options)
    }

    /// [`Store::sync`] over any transport.
    pub fn sync_with(&self, remote: &mut dyn Remote, scope: &str, options: &SyncOptions) -> Result<SyncReport> {
        watch::sync(&self.conn, remote, scope, options, &|| false, &mut |_| {})
    }

    /// Checks the file against its partition on the server at
    /// `remote_url`, repairing what differs with `options.repair`; see
    /// [`crate::verify`].
    pub fn verify(&self, remote_url: &str, scope: &str, options: &crate::verify::Options) -> Result<crate::verify::VerifyReport> {
        let mut remote = remote::open(remote_url, options.ca_cert.as_deref())?;
        crate::verify::verify(&self.conn, remote.as_mut(), scope, options)
    }

    /// [`Store::sync`], telling `observe` after each batch (for progress).
    pub fn sync_observed(&self, remote_url: &str, scope: &str, options: &SyncOptions, observe: &mut dyn FnMut(Step)) -> Result<SyncReport> {
        let mut remote = remote::open(remote_url, options.ca_cert.as_deref())?;
        watch::sync(&self.conn, remote.as_mut(), scope, options, &|| false, &mut |step| {
            if let WatchStep::Batch(step) = step {
                observe(step)
            }
        })
    }

    /// Keeps the file live with the server at `remote_url` until `stop`
    /// says so (`tandem sync --watch`), telling `observe` what it does;
    /// see [`crate::watch`].
    pub fn watch(
        &self,
        remote_url: &str,
        scope: &str,
        options: &SyncOptions,
        stop: &dyn Fn() -> bool,
        observe: &mut dyn FnMut(WatchStep<'_>),
    ) -> Result<SyncReport> {
        let Some(mut remote) = watch::open(remote_url, options.ca_cert.as_deref(), stop, observe)? else {
            return Ok(SyncReport { scope: scope.to_string(), rounds: Some(0), ..SyncReport::default() });
        };
        watch::run(&self.conn, remote.as_mut(), scope, options, stop, observe)
    }

    /// Encrypts the file with `new_key`, and returns it open with that key.
    /// An encrypted file changes its key in place; a plain one is copied
    /// into an encrypted file that then takes its place (no other program
    /// may have it open meanwhile). Either way its sync state comes along.
    #[cfg(feature = "sqlcipher")]
    pub fn rekey(self, new_key: &str) -> Result<Store> {
        if new_key.is_empty() {
            return Err(LocalError::Invalid("the new key is empty: pass a real key".into()));
        }
        // No sync of the file runs meanwhile.
        let lock = crate::lock::SyncLock::acquire(&self.conn)?;
        if self.encrypted {
            self.conn.pragma_update(None, "rekey", new_key)?;
            drop(lock);
            return Ok(self);
        }
        let shown = self.path.display().to_string();
        let mut copy = self.path.as_os_str().to_owned();
        copy.push("-tandem-encrypting");
        let copy = PathBuf::from(copy);
        Store::remove(&copy);
        let version: i64 = self.conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")?;
        self.conn.execute("ATTACH DATABASE ?1 AS tandem_encrypted KEY ?2", rusqlite::params![copy.display().to_string(), new_key])?;
        let exported = self
            .conn
            .query_row("SELECT sqlcipher_export('tandem_encrypted')", [], |_| Ok(()))
            .and_then(|_| self.conn.execute_batch(&format!("PRAGMA tandem_encrypted.user_version = {version}")));
        self.conn.execute_batch("DETACH DATABASE tandem_encrypted")?;
        if let Err(error) = exported {
            Store::remove(&copy);
            return Err(LocalError::Open { path: shown, reason: format!("could not encrypt it: {error}") });
        }
        let path = self.path.clone();
        drop(self);
        drop(lock);
        for suffix in ["-wal", "-shm"] {
            let mut name = path.as_os_str().to_owned();
            name.push(suffix);
            let _ = std::fs::remove_file(name);
        }
        std::fs::rename(&copy, &path)
            .map_err(|e| LocalError::Open { path: shown, reason: format!("could not replace it with its encrypted copy: {e}") })?;
        Store::open_encrypted(&path, new_key)
    }
}
