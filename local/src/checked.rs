//! What a connection has checked of a file's layout (Tandem's tables, each
//! scope's tracking objects), remembered by the file's schema version: only
//! a change of tables or triggers can undo what was checked, and any such
//! change, by any connection, moves the version. A round on a wide scope
//! spent most of its time checking again what had not changed.

use rusqlite::{named_params, Connection, OptionalExtension};
use tandem_core::sql::device as sql;

use crate::error::Result;

/// The file's schema version now.
pub fn schema_version(conn: &Connection) -> Result<i64> {
    Ok(conn.query_row(sql::SCHEMA_VERSION, [], |r| r.get(0))?)
}

/// Whether `what` was checked on this connection at the file's current
/// schema version.
pub fn is_current(conn: &Connection, what: &str) -> Result<bool> {
    conn.prepare_cached(sql::CREATE_CHECKED)?.execute([])?;
    let at: Option<i64> =
        conn.prepare_cached(sql::CHECKED_AT)?.query_row(named_params! {":what": what}, |r| r.get("schema_version")).optional()?;
    Ok(at.is_some() && at == Some(schema_version(conn)?))
}

/// Notes that `what` was found as it should be at the current schema
/// version (read after whatever the check itself changed).
pub fn note(conn: &Connection, what: &str) -> Result<()> {
    conn.prepare_cached(sql::CREATE_CHECKED)?.execute([])?;
    let version = schema_version(conn)?;
    conn.prepare_cached(sql::SET_CHECKED)?.execute(named_params! {":what": what, ":schema_version": version})?;
    Ok(())
}
