//! Rows without a whole key in a table the file held before it synced it
//! (SQLite allows NULL in a key column there): no such row can reach the
//! server. They are kept on record in `tandem_rejected` (kind `no_key`)
//! while they stay so; the triggers of `local::refuse_keyless` refuse
//! writing another.

use std::collections::HashSet;

use rusqlite::{named_params, Connection};
use serde_json::Value;
use tandem_core::schema::TableSchema;
use tandem_core::sql::device as sql;

use crate::error::Result;
use crate::meta::ScopeState;
use crate::rows;

/// Keeps in `tandem_rejected` the rows of `table` that lack a whole key:
/// the server cannot take them, and they would otherwise go unsent without
/// a word. Given a key, a row is sent as any other change.
pub fn keep(conn: &Connection, scope: &str, table: &TableSchema) -> Result<()> {
    for row in rows::read_keyless(conn, table)? {
        let key: Vec<Value> = table.primary_key.iter().map(|k| row.get(k).cloned().unwrap_or(Value::Null)).collect();
        record(conn, scope, table, &key, &Value::Object(row).to_string())?;
    }
    Ok(())
}

fn record(conn: &Connection, scope: &str, table: &TableSchema, key: &[Value], row: &str) -> Result<()> {
    let reason = format!(
        "the file held this row of {} before it synced the table, without a value in every key column ({}): the server \
         cannot take it; give it a key and it is sent",
        table.name,
        table.primary_key.join(", ")
    );
    conn.execute(
        sql::INSERT_REJECTED,
        named_params! {
            ":scope": scope, ":table_name": table.name, ":key": rows::key_text(key),
            ":row": row, ":kind": "no_key", ":reason": reason,
        },
    )?;
    Ok(())
}

/// Makes the record match the table: a row given a key (or deleted) leaves
/// it, so `sync_status`'s count of rejected rows drops. Reads only the
/// tables the record names.
pub fn settle(conn: &Connection, state: &ScopeState) -> Result<()> {
    let entries: Vec<(i64, String, String)> = conn
        .prepare_cached(sql::NO_KEY_ROWS)?
        .query_map(named_params! {":scope": state.scope}, |r| Ok((r.get("id")?, r.get("table_name")?, r.get("row")?)))?
        .collect::<rusqlite::Result<_>>()?;
    let tables: HashSet<&str> = entries.iter().map(|(_, table, _)| table.as_str()).collect();
    for name in tables {
        // A table that left the scope keeps its record as it was.
        let Ok(t) = state.table_index(name) else { continue };
        let table = &state.schema.tables[t];
        let now: HashSet<String> = rows::read_keyless(conn, table)?.into_iter().map(|row| Value::Object(row).to_string()).collect();
        for (id, _, row) in entries.iter().filter(|(_, table_name, _)| table_name == name) {
            if !now.contains(row) {
                conn.prepare_cached(sql::FORGET_REJECTED)?.execute(named_params! {":id": id})?;
            }
        }
    }
    Ok(())
}
