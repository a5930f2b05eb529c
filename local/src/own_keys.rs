//! The file's own foreign keys onto a synced table: where they move rows
//! along with a key change the program makes, those rows go up as changes
//! of their own (see `moves::vacating`).

use std::collections::BTreeMap;

use rusqlite::{named_params, params_from_iter, Connection};
use serde_json::Value;
use tandem_core::schema::TableSchema;
use tandem_core::sql::device;

use crate::error::Result;
use crate::rows;

/// A column of a foreign key: the referring one, and the one it refers to
/// (`None`: the primary key's at its position).
type Column = (String, Option<String>);

/// Whether a row of the file refers to `key` of `table` by a foreign key of
/// the file's own that acts when the key changes: the file moved it there
/// itself. Declared keys SQLite did not enforce (`PRAGMA foreign_keys` off
/// when the program wrote) moved nothing, and find nothing.
pub fn moved_along(conn: &Connection, table: &TableSchema, key: &[Value]) -> Result<bool> {
    let mut keys: BTreeMap<(String, i64), Vec<Column>> = BTreeMap::new();
    {
        let mut statement = conn.prepare_cached(device::KEYS_ACTING_ON_UPDATE)?;
        let mut found = statement.query(named_params! {":table": table.table_name().local_name()})?;
        while let Some(row) = found.next()? {
            keys.entry((row.get("child")?, row.get("id")?)).or_default().push((row.get("from_column")?, row.get("to_column")?));
        }
    }
    let values = rows::key_params(table, key)?;
    'keys: for ((child, _), columns) in keys {
        let mut from = Vec::with_capacity(columns.len());
        let mut referred = Vec::with_capacity(columns.len());
        for (i, (column, to)) in columns.into_iter().enumerate() {
            let to = to.or_else(|| table.primary_key.get(i).cloned());
            // A key onto other columns than the primary key's: a key change
            // does not reach it.
            let at = to.and_then(|to| table.primary_key.iter().position(|k| k.eq_ignore_ascii_case(&to)));
            let Some(value) = at.and_then(|at| values.get(at)) else { continue 'keys };
            from.push(column);
            referred.push(value.clone());
        }
        let held: bool = conn.prepare_cached(&device::any_referring(&child, &from))?.query_row(params_from_iter(referred), |r| r.get(0))?;
        if held {
            return Ok(true);
        }
    }
    Ok(false)
}
