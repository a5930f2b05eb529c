//! Unsent changes the server's new schema cannot take: values of columns it
//! dropped (or renamed), and changes to tables that left the scope. They
//! were made before the file learned of the change; the upload under the
//! old schema sends what the server still has, and the rest is kept in
//! `tandem_rejected` with the reason, never dropped without a word.

use rusqlite::types::Value as SqlValue;
use rusqlite::{named_params, Connection, OptionalExtension};
use serde_json::Value;
use tandem_core::error::{Rejection, RejectionKind};
use tandem_core::schema::{Schema, TableSchema};
use tandem_core::sql::{device, local};

use crate::error::Result;
use crate::meta::ScopeState;
use crate::rows;
use crate::tx::atomically;

/// What of a table's unsent changes the server's schema cannot take.
enum Loss<'a> {
    /// The table left the scope: nothing of it is sent any more.
    Table,
    /// These columns are gone: the rest of each row is sent.
    Columns(Vec<&'a str>),
}

fn loss<'a>(table: &'a TableSchema, server: &Schema) -> Option<Loss<'a>> {
    // A table made again with another primary key is another table.
    let Some(now) = server.tables.iter().find(|t| t.same_table(table)) else {
        return Some(Loss::Table);
    };
    let gone: Vec<&str> = table.columns.iter().filter(|c| !now.columns.iter().any(|s| s.same_as(c))).map(|c| c.name.as_str()).collect();
    (!gone.is_empty()).then_some(Loss::Columns(gone))
}

/// Whether the row of key `stored` holds NULL or its column's default in
/// every column of `gone`: values the device need not have written (a
/// default that is computed, the time, never compares equal).
fn all_defaults(conn: &Connection, table: &TableSchema, gone: &[&str], stored: &[SqlValue]) -> Result<bool> {
    for column in gone {
        let sql = local::holds_default(table, column);
        let held: Option<bool> = conn.query_row(&sql, rusqlite::params_from_iter(stored), |r| r.get(0)).optional()?;
        if held != Some(true) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Keeps, once, every unsent change of `state` (the file's schema) that
/// `server` (the server's new one) cannot take, and returns them for the
/// sync report. Call before the upload under the old schema: a table that
/// left is untracked after it, and a row's dropped values would go unseen.
pub fn keep(conn: &Connection, state: &ScopeState, server: &Schema) -> Result<Vec<Rejection>> {
    atomically(conn, |conn| {
        let mut kept = Vec::new();
        for (table, tracked) in state.schema.tables.iter().zip(&state.tables) {
            let Some(loss) = loss(table, server) else { continue };
            // Keys as the file stores them: one another program wrote that
            // is no value of its type (set aside by the upload as such)
            // never stalls the round.
            for (key, stored) in rows::read_stored_keys(conn, table, &local::all_pending(table, tracked.id), [tracked.acked_seq])? {
                let row = rows::read_object_by(conn, table, stored.clone())?;
                let reason = match (&loss, &row) {
                    // A delete, or a row that holds nothing but NULL or
                    // the default in the dropped columns, loses nothing.
                    (Loss::Columns(_), None) => continue,
                    (Loss::Columns(gone), Some(_)) if all_defaults(conn, table, gone, &stored)? => continue,
                    (Loss::Columns(gone), Some(_)) => format!(
                        "{} of {} {} no longer on the server (dropped or renamed, schema version {}) before this change \
                         was sent: the change went up without {}; the row as the file held it is kept here",
                        gone.iter().map(|c| format!("column \"{c}\"")).collect::<Vec<_>>().join(", "),
                        table.name,
                        if gone.len() == 1 { "is" } else { "are" },
                        server.version,
                        if gone.len() == 1 { "it" } else { "them" },
                    ),
                    (Loss::Table, Some(_)) => format!(
                        "{} left scope \"{}\" on the server (schema version {}) before this change was sent: it was not \
                         sent; the row as the file held it is kept here",
                        table.name, state.scope, server.version
                    ),
                    (Loss::Table, None) => format!(
                        "{} left scope \"{}\" on the server (schema version {}) before this delete was sent: it was not sent",
                        table.name, state.scope, server.version
                    ),
                };
                let inserted = conn.execute(
                    device::KEEP_UNFOLLOWED,
                    named_params! {
                        ":scope": state.scope,
                        ":table_name": table.name,
                        ":key": rows::key_text(&key),
                        ":row": row.map(|r| Value::Object(r).to_string()),
                        ":reason": reason,
                    },
                )?;
                if inserted > 0 {
                    kept.push(Rejection {
                        table: table.name.clone(),
                        key,
                        seq: None,
                        kind: RejectionKind::SchemaChanged,
                        reason,
                        row: None,
                        version: None,
                        moved_from: None,
                    });
                }
            }
        }
        Ok(kept)
    })
}
