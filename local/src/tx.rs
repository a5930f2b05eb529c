//! Transactions that work both at top level and inside a caller's
//! transaction (or a SQL function call): savepoints.

use rusqlite::Connection;

use crate::error::Result;

/// Runs `body` atomically: everything or nothing.
pub fn atomically<T>(conn: &Connection, body: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
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

/// Runs `body` atomically with tracking triggers silenced: writes that come
/// from the server are not local changes.
pub fn applying<T>(conn: &Connection, body: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
    atomically(conn, |conn| {
        conn.execute("INSERT INTO tandem_applying (flag) VALUES (1)", [])?;
        let value = body(conn)?;
        conn.execute("DELETE FROM tandem_applying", [])?;
        Ok(value)
    })
}
