//! Local `sync_status` and `sync_cleanup`.

use rusqlite::{named_params, Connection};
use serde_json::{json, Value};
use tandem_core::schema::TableSchema;
use tandem_core::sql::{device as sql, local};

use crate::error::Result;
use crate::meta;

/// Changes of `table` not sent yet.
fn pending_in(conn: &Connection, table: &TableSchema, t: &meta::TableState) -> Result<u64> {
    let count: i64 = conn
        .prepare_cached(&sql::count_rows(&format!("({})", local::all_pending(table, t.id))))?
        .query_row([t.acked_seq], |r| r.get("rows"))?;
    Ok(count.max(0) as u64)
}

/// Changes of the scope not sent yet: what a round's upload has ahead.
/// Only the tables with a change waiting are counted (one probe for all).
pub fn pending(conn: &Connection, state: &meta::ScopeState) -> Result<u64> {
    let waiting = crate::changes::tables_waiting(conn, state)?;
    let mut total = 0;
    for ((table, t), waiting) in state.schema.tables.iter().zip(&state.tables).zip(waiting) {
        if waiting {
            total += pending_in(conn, table, t)?;
        }
    }
    Ok(total)
}

/// Tables with their rows and unsent changes, the watermark, identity and
/// parameters, and counts of logged conflicts and refused changes.
pub fn status(conn: &Connection, scope: &str) -> Result<Value> {
    let state = meta::require(conn, scope)?;
    let mut tables = Vec::new();
    for (table, t) in state.schema.tables.iter().zip(&state.tables) {
        let rows: i64 = conn.query_row(&sql::count_rows(&local::user_table(table)), [], |r| r.get("rows"))?;
        let pending = pending_in(conn, table, t)?;
        tables.push(json!({"name": table.name, "local_name": table.table_name().local_name(), "rows": rows, "pending": pending}));
    }
    let count = |statement: &str| -> Result<i64> { Ok(conn.query_row(statement, named_params! {":scope": scope}, |r| r.get("rows"))?) };
    let last_sync: Option<String> = conn.query_row(sql::LAST_SYNC, named_params! {":scope": scope}, |r| r.get("last_sync"))?;
    let last_verify: Option<String> = conn.query_row(sql::LAST_VERIFY, named_params! {":scope": scope}, |r| r.get("last_verify"))?;
    let last_verify: Option<Value> = last_verify.and_then(|text| serde_json::from_str(&text).ok());
    Ok(json!({
        "scope": scope,
        "client_id": state.client_id,
        "schema_version": state.schema.version,
        "params": state.params,
        "watermark": state.watermark,
        "last_sync": last_sync,
        "last_verify": last_verify,
        "tables": tables,
        "conflicts": count(sql::COUNT_CONFLICTS)?,
        "rejected": count(sql::COUNT_REJECTED)?,
    }))
}

/// Drops change-log entries the server has acknowledged.
pub fn cleanup(conn: &Connection, scope: &str) -> Result<Value> {
    let state = meta::require(conn, scope)?;
    let mut removed = 0;
    for (table, t) in state.schema.tables.iter().zip(&state.tables) {
        let log_rows = sql::count_rows(&local::log_table(t.id));
        let before: i64 = conn.query_row(&log_rows, [], |r| r.get("rows"))?;
        crate::rows::delete_log_entries(conn, table, t.id, &local::prune_log(t.id), vec![rusqlite::types::Value::Integer(t.acked_seq)])?;
        let after: i64 = conn.query_row(&log_rows, [], |r| r.get("rows"))?;
        removed += before.saturating_sub(after);
    }
    Ok(json!({"scope": scope, "log_entries_removed": removed}))
}
