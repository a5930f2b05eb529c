//! Transactions that work both at top level and inside a caller's
//! transaction (or a SQL function call): savepoints.

use rusqlite::Connection;
use tandem_core::sql::{device, local};

use crate::error::{LocalError, Result};
use crate::meta::ScopeState;

/// Runs `body` atomically: everything or nothing. At top level it takes
/// SQLite's write lock first, waiting out other writers for the busy
/// timeout: a transaction that reads first and writes after another
/// connection committed fails at once with "database is locked" (SQLite
/// cannot wait that out), which would end a watch whenever the app
/// writes. Inside a caller's transaction, a savepoint. Refused on a
/// connection sync cannot work under ([`refuse_unsafe_connection`]): one
/// without a rollback journal could undo neither.
pub fn atomically<T>(conn: &Connection, body: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
    refuse_unsafe_connection(conn)?;
    if conn.is_autocommit() {
        conn.execute_batch("BEGIN IMMEDIATE")?;
        return match body(conn) {
            Ok(value) => match conn.execute_batch("COMMIT") {
                Ok(()) => Ok(value),
                Err(error) => {
                    let deferred = match &error {
                        rusqlite::Error::SqliteFailure(e, _) if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY => {
                            deferred_foreign_key(conn)
                        }
                        _ => None,
                    };
                    let error = deferred.unwrap_or_else(|| error.into());
                    let _ = conn.execute_batch("ROLLBACK");
                    Err(error)
                }
            },
            Err(error) => {
                let _ = conn.execute_batch("ROLLBACK");
                Err(error)
            }
        };
    }
    conn.execute_batch("SAVEPOINT tandem")?;
    match body(conn) {
        Ok(value) => {
            conn.execute_batch("RELEASE tandem")?;
            Ok(value)
        }
        Err(error) => {
            let _ = conn.execute_batch("ROLLBACK TO tandem; RELEASE tandem");
            Err(error)
        }
    }
}

/// What refused the commit, when a deferred foreign key of the file's own
/// did: named, with what to do, instead of SQLite's bare "FOREIGN KEY
/// constraint failed" (helper 58).
fn deferred_foreign_key(conn: &Connection) -> Option<LocalError> {
    conn.query_row(device::FOREIGN_KEY_VIOLATION, [], |r| {
        Ok(LocalError::DeferredForeignKey { table: r.get("table")?, parent: r.get("parent")? })
    })
    .ok()
}

/// Refuses a connection sync cannot work under: without a rollback
/// journal, read-only, or with a temporary table or view that hides one of
/// the file's (see [`LocalError`]).
pub fn refuse_unsafe_connection(conn: &Connection) -> Result<()> {
    let (journal, query_only, shadowed): (String, bool, Option<String>) = conn
        .prepare_cached(device::CONNECTION)?
        .query_row([], |r| Ok((r.get("journal_mode")?, r.get("query_only")?, r.get("shadowed")?)))?;
    if journal.eq_ignore_ascii_case("off") {
        return Err(LocalError::NoJournal);
    }
    if query_only {
        return Err(LocalError::QueryOnly);
    }
    match shadowed {
        Some(name) => Err(LocalError::Shadowed { name }),
        None => Ok(()),
    }
}

/// Runs `body` atomically as sync: writes that come from the server are not
/// local changes, so the log entries they make are removed again before the
/// transaction commits, with those of what the file's own triggers and
/// foreign keys did because of them (each device would count a synced row
/// into its own totals again, and send them round between devices for
/// ever). A row the file removed so loses its unsent change too, which
/// would otherwise go up as a delete of the server's row; one it changed
/// so keeps the server's values of what changed for its uploads (see
/// `local_only`). The first write takes SQLite's write lock, so no other
/// connection can log a change in between.
pub fn applying<T>(conn: &Connection, state: &ScopeState, body: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
    atomically(conn, |conn| {
        let mut before = Vec::with_capacity(state.tables.len());
        for (table, t) in state.schema.tables.iter().zip(&state.tables) {
            before.push((table, t, crate::rows::top_seq(conn, t.id)?));
        }
        conn.execute(local::BEGIN_SYNC_WRITES, [])?;
        let noting = crate::local_only::begin_noting(conn, state)?;
        let value = body(conn)?;
        crate::local_only::end_noting(conn, &noting)?;
        conn.execute(local::END_SYNC_WRITES, [])?;
        for (table, t, top) in before {
            // A log the sync did not write to has nothing to take out, and
            // the file changed no row of it on its own (a table whose
            // triggers a large batch silenced is settled there).
            if crate::rows::top_seq(conn, t.id)? == top {
                continue;
            }
            crate::local_only::settle(conn, table, t.id)?;
            conn.prepare_cached(&local::unmoved(table, t.id))?.execute([t.acked_seq, top])?;
            conn.prepare_cached(&local::forget_removed(table, t.id))?.execute([t.acked_seq, top])?;
            crate::rows::delete_log_entries(conn, table, t.id, &local::drop_log_after(t.id), vec![rusqlite::types::Value::Integer(top)])?;
        }
        Ok(value)
    })
}
