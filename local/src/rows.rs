//! Reading and writing rows of synced tables by key, with values converted
//! by `tandem_core::types`.

use std::collections::HashSet;

use rusqlite::types::Value as SqlValue;
use rusqlite::{params_from_iter, Connection, OptionalExtension};
use serde_json::{Map, Value};
use tandem_core::schema::TableSchema;
use tandem_core::setup::Filter;
use tandem_core::sql::{delete_row, local, update_row, upsert_row, Dialect};
use tandem_core::types::{describe_local, json_to_local};

use crate::error::{LocalError, Result};
use crate::meta::ScopeState;
use crate::values::{from_sql, to_sql};

/// A key as text, to compare keys from the server with keys read locally.
pub fn key_text(key: &[Value]) -> String {
    Value::Array(key.to_vec()).to_string()
}

/// Key values (JSON, primary key order) as SQLite values.
pub fn key_params(table: &TableSchema, key: &[Value]) -> Result<Vec<SqlValue>> {
    table
        .key_columns()
        .iter()
        .zip(key)
        .map(|(column, value)| {
            json_to_local(column.ty, value)
                .map(to_sql)
                .map_err(|reason| LocalError::Invalid(format!("{} key column {}: {reason}", table.name, column.name)))
        })
        .collect()
}

/// Reads the key columns of a result row (first `n` columns) as JSON.
pub fn read_key(table: &TableSchema, row: &rusqlite::Row<'_>) -> rusqlite::Result<Vec<Value>> {
    read_key_at(table, row, 0)
}

/// Reads a key from the result columns starting at `first` as JSON.
pub fn read_key_at(table: &TableSchema, row: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<Vec<Value>> {
    table.key_columns().iter().enumerate().map(|(i, column)| Ok(describe_local(column.ty, &from_sql(row.get_ref(first + i)?)))).collect()
}

/// The key a log entry (`seq`) holds, as the file stores it.
pub fn logged_key(conn: &Connection, table: &TableSchema, id: i64, seq: i64) -> Result<Option<Vec<SqlValue>>> {
    let key = conn
        .prepare_cached(&local::logged_key(table, id))?
        .query_row([seq], |row| (0..table.primary_key.len()).map(|i| row.get::<_, SqlValue>(i)).collect::<rusqlite::Result<Vec<_>>>())
        .optional()?;
    Ok(key.filter(|k| k.iter().all(|v| *v != SqlValue::Null)))
}

/// The current row's values as the file stores them, or `None`.
pub fn read_local(conn: &Connection, table: &TableSchema, key: &[Value]) -> Result<Option<Vec<tandem_core::types::LocalValue>>> {
    let mut statement = conn.prepare_cached(&local::read_row(table))?;
    let row = statement
        .query_row(params_from_iter(key_params(table, key)?), |row| {
            (0..table.columns.len()).map(|i| Ok(from_sql(row.get_ref(i)?))).collect::<rusqlite::Result<Vec<_>>>()
        })
        .optional()?;
    Ok(row)
}

/// The current row as JSON values in column order, or `None`.
pub fn read(conn: &Connection, table: &TableSchema, key: &[Value]) -> Result<Option<Vec<Value>>> {
    read_by(conn, table, key_params(table, key)?)
}

/// The row whose key the file stores as `key` (SQLite values, primary key
/// order), as JSON values in column order, or `None`.
pub fn read_by(conn: &Connection, table: &TableSchema, key: Vec<SqlValue>) -> Result<Option<Vec<Value>>> {
    let mut statement = conn.prepare_cached(&local::read_row(table))?;
    Ok(statement.query_row(params_from_iter(key), |row| read_values(table, row)).optional()?)
}

/// A result row of every synced column, in schema order, as JSON values.
fn read_values(table: &TableSchema, row: &rusqlite::Row<'_>) -> rusqlite::Result<Vec<Value>> {
    table.columns.iter().enumerate().map(|(i, column)| Ok(describe_local(column.ty, &from_sql(row.get_ref(i)?)))).collect()
}

/// The rows whose key holds a NULL, as JSON objects (see
/// `local::refuse_keyless`).
pub fn read_keyless(conn: &Connection, table: &TableSchema) -> Result<Vec<Map<String, Value>>> {
    let rows = conn
        .prepare(&local::keyless_rows(table))?
        .query_map([], |row| Ok(table.column_names().into_iter().zip(read_values(table, row)?).collect()))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// The current row as a JSON object, or `None`.
pub fn read_object(conn: &Connection, table: &TableSchema, key: &[Value]) -> Result<Option<Map<String, Value>>> {
    read_object_by(conn, table, key_params(table, key)?)
}

/// [`read_object`] by the key as the file stores it.
pub fn read_object_by(conn: &Connection, table: &TableSchema, key: Vec<SqlValue>) -> Result<Option<Map<String, Value>>> {
    Ok(read_by(conn, table, key)?.map(|values| table.column_names().into_iter().zip(values).collect()))
}

/// The keys `sql` returns (the key columns first), each in its changeset
/// form and as the file stores it: a key another program wrote that is no
/// value of its type is read all the same, never an error.
pub fn read_stored_keys(
    conn: &Connection,
    table: &TableSchema,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<(Vec<Value>, Vec<SqlValue>)>> {
    let keys = conn
        .prepare(sql)?
        .query_map(params, |row| {
            let stored = (0..table.primary_key.len()).map(|i| row.get::<_, SqlValue>(i)).collect::<rusqlite::Result<Vec<_>>>()?;
            Ok((read_key(table, row)?, stored))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(keys)
}

pub fn read_base(conn: &Connection, table: &TableSchema, id: i64, key: &[Value]) -> Result<Option<String>> {
    let mut statement = conn.prepare_cached(&local::read_base(table, id))?;
    Ok(statement.query_row(params_from_iter(key_params(table, key)?), |r| r.get(0)).optional()?)
}

pub fn write_base(conn: &Connection, table: &TableSchema, id: i64, key: &[Value], version: &str) -> Result<()> {
    let mut values = key_params(table, key)?;
    values.push(SqlValue::Text(version.to_string()));
    conn.prepare_cached(&local::write_base(table, id))?.execute(params_from_iter(values))?;
    Ok(())
}

pub fn delete_base(conn: &Connection, table: &TableSchema, id: i64, key: &[Value]) -> Result<()> {
    conn.prepare_cached(&local::delete_base(table, id))?.execute(params_from_iter(key_params(table, key)?))?;
    Ok(())
}

/// Writes a row given as a JSON object of columns (the server's state of a
/// row): columns it lacks keep their local value.
pub fn write_object(conn: &Connection, table: &TableSchema, id: i64, object: &Map<String, Value>) -> Result<()> {
    crate::local_only::writing(conn, id, || write_columns(conn, table, object))
}

fn write_columns(conn: &Connection, table: &TableSchema, object: &Map<String, Value>) -> Result<()> {
    let mut columns = Vec::new();
    let mut values = Vec::new();
    for column in &table.columns {
        if let Some(value) = object.get(&column.name) {
            let local = json_to_local(column.ty, value)
                .map_err(|reason| LocalError::Invalid(format!("{} column {}: {reason}", table.name, column.name)))?;
            columns.push(column.name.clone());
            values.push(to_sql(local));
        }
    }
    // A row the file holds is updated: the columns it is not given (those
    // of a newer schema than the one it is written under) may be NOT NULL.
    let update = update_row(Dialect::Sqlite, &local::user_table(table), &columns, &table.primary_key);
    if conn.prepare_cached(&update)?.execute(params_from_iter(values.iter()))? == 0 {
        let statement = upsert_row(Dialect::Sqlite, &local::user_table(table), &columns, &table.primary_key);
        if conn.prepare_cached(&statement)?.execute(params_from_iter(values))? == 0 {
            // A trigger of the file's own dropped it (`RAISE(IGNORE)`).
            return Err(LocalError::RowIgnored { table: table.name.clone() });
        }
    }
    Ok(())
}

/// Writes the server's form of a row the file holds under `key` (as it was
/// sent) and returns the server's key. When the server holds the row under
/// another text of an equal key (`3` for `3.0`, an instant in UTC, a uuid
/// in lower case), the file's row moves to the server's key: the file never
/// keeps both.
pub fn write_server_row(conn: &Connection, table: &TableSchema, id: i64, key: &[Value], row: &Map<String, Value>) -> Result<Vec<Value>> {
    let server_key = server_key(table, key, row);
    if server_key != key {
        conn.prepare_cached(&delete_row(Dialect::Sqlite, &local::user_table(table), &table.primary_key, None))?
            .execute(params_from_iter(key_params(table, key)?))?;
        delete_base(conn, table, id, key)?;
        write_object(conn, table, id, row)?;
        return Ok(server_key);
    }
    write_object(conn, table, id, row)?;
    Ok(key.to_vec())
}

/// The key the server holds a row under: the row's own key columns when
/// it has them all, else the key as sent.
pub fn server_key(table: &TableSchema, key: &[Value], row: &Map<String, Value>) -> Vec<Value> {
    let own: Vec<Value> = table.primary_key.iter().map(|k| row.get(k).cloned().unwrap_or(Value::Null)).collect();
    match own.iter().all(|v| !v.is_null()) {
        true => own,
        false => key.to_vec(),
    }
}

/// Keys of a table with local changes after `after`.
pub fn pending(conn: &Connection, table: &TableSchema, id: i64, after: i64) -> Result<HashSet<String>> {
    let mut statement = conn.prepare_cached(&local::all_pending(table, id))?;
    let keys = statement
        .query_map([after], |row| read_key(table, row))?
        .map(|k| k.map(|k| key_text(&k)))
        .collect::<rusqlite::Result<HashSet<String>>>()?;
    Ok(keys)
}

/// Whether key `key` has a local change after `after`.
pub fn has_pending(conn: &Connection, table: &TableSchema, id: i64, after: i64, key: &[Value]) -> Result<bool> {
    let mut values = vec![SqlValue::Integer(after)];
    values.extend(key_params(table, key)?);
    Ok(conn.prepare_cached(&local::has_pending(table, id))?.query_row(params_from_iter(values), |_| Ok(())).optional()?.is_some())
}

/// Deletes a row, and the rows of tables filtered `via` it that hang off
/// it (a child belongs to whoever holds its parent), except rows with an
/// unsent local change. Returns how many rows went.
pub fn delete_with_children(conn: &Connection, state: &ScopeState, t: usize, key: &[Value]) -> Result<usize> {
    let table = &state.schema.tables[t];
    // Children first: a foreign key of the file's own would refuse the
    // parent's delete while they stand, or take them itself.
    let mut total = 0;
    for (c, child) in state.schema.tables.iter().enumerate() {
        let Some(Filter::Via { parent, on }) = &child.filter else { continue };
        if *parent != table.name {
            continue;
        }
        let on: Vec<(String, String)> = on.iter().map(|(a, b)| (a.clone(), b.clone())).collect();
        let children: Vec<Vec<Value>> = conn
            .prepare_cached(&local::children(child, &on, &table.primary_key))?
            .query_map(params_from_iter(key_params(table, key)?), |row| read_key(child, row))?
            .collect::<rusqlite::Result<_>>()?;
        let waiting = pending(conn, child, state.tables[c].id, state.tables[c].acked_seq)?;
        for child_key in children {
            if !waiting.contains(&key_text(&child_key)) {
                total += delete_with_children(conn, state, c, &child_key)?;
            }
        }
    }
    Ok(total + delete_alone(conn, state, t, key)?)
}

/// Deletes a row, its base version and anything of its key kept aside,
/// leaving the rows filtered `via` it: for a key the server holds under
/// another text now (`1.50` for `1.5`), whose rows still belong to the
/// partition. Returns how many rows went.
pub fn delete_alone(conn: &Connection, state: &ScopeState, t: usize, key: &[Value]) -> Result<usize> {
    let table = &state.schema.tables[t];
    let removed = conn
        .prepare_cached(&delete_row(Dialect::Sqlite, &local::user_table(table), &table.primary_key, None))?
        .execute(params_from_iter(key_params(table, key)?))?;
    delete_base(conn, table, state.tables[t].id, key)?;
    // A row of this key kept aside is gone on the server too.
    crate::not_stored::forget(conn, &state.scope, table, key)?;
    Ok(removed)
}

/// The highest change counter handed out for table `id` (0 for none).
pub fn top_seq(conn: &Connection, id: i64) -> Result<i64> {
    Ok(conn.prepare_cached(&local::top_seq(id))?.query_row([], |r| r.get(0))?)
}

/// Deletes log entries of `table` (tracking id `id`; `sql` binds `?1` and
/// maybe a key) without letting the change counter go back (see
/// `tandem_core::sql::local::keep_counter`), and with one counter mark at
/// most where no change follows it.
pub fn delete_log_entries(conn: &Connection, table: &TableSchema, id: i64, sql: &str, params: Vec<SqlValue>) -> Result<()> {
    let top = top_seq(conn, id)?;
    conn.prepare_cached(sql)?.execute(params_from_iter(params))?;
    conn.prepare_cached(&local::keep_counter(id))?.execute([top])?;
    conn.prepare_cached(&local::drop_stale_mark(table, id))?.execute([])?;
    Ok(())
}

/// Whether table `t` has a local change not acknowledged yet.
pub fn has_changes(conn: &Connection, table: &TableSchema, t: &crate::meta::TableState) -> Result<bool> {
    Ok(conn.prepare_cached(&local::any_change_after(table, t.id))?.query_row([t.acked_seq], |r| r.get(0))?)
}
