//! Local `sync_apply_changes`: writes a server changeset and its watermark in
//! one transaction. A row with an unsent local change is never overwritten:
//! that change goes up next and meets the server's policy there.

use rusqlite::{params_from_iter, Connection};
use serde_json::{json, Value};
use tandem_core::changeset::{Changeset, Op};
use tandem_core::options::ApplyOptions;
use tandem_core::sql::{local, upsert_row, Dialect};
use tandem_core::types::json_to_local;
use tandem_core::validate::check_changeset;

use crate::error::Result;
use crate::meta::{self, ScopeState};
use crate::rows;
use crate::tx::applying;
use crate::values::to_sql;

/// What applying a server changeset did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Applied {
    pub applied: u64,
    /// Rows removed because their parent left this file's partition.
    pub cascaded: u64,
    /// Rows kept because they have an unsent local change.
    pub skipped: Vec<Value>,
    pub watermark: Option<String>,
}

pub fn apply(conn: &Connection, state: &ScopeState, changeset: &Changeset) -> Result<Applied> {
    let (tables, rejections) = check_changeset(&state.schema, changeset, json_to_local)?;
    if !rejections.is_empty() {
        return Err(tandem_core::Error::Rejected(rejections).into());
    }
    applying(conn, |conn| {
        let mut result = Applied { watermark: changeset.watermark.clone(), ..Applied::default() };
        let mut deletes = Vec::new();
        for table in &tables {
            let t = state.schema.position(table.schema);
            let id = state.tables[t].id;
            let waiting = rows::pending(conn, table.schema, id, state.tables[t].acked_seq)?;
            let columns: Vec<String> = table.columns.iter().map(|&c| table.schema.columns[c].name.clone()).collect();
            let upsert = upsert_row(Dialect::Sqlite, &local::user_table(table.schema), &columns, &table.schema.primary_key, None);
            for row in &table.rows {
                if waiting.contains(&rows::key_text(&row.key)) {
                    result.skipped.push(json!({"table": table.schema.name, "key": row.key}));
                    continue;
                }
                match row.op {
                    Op::Upsert => {
                        conn.prepare_cached(&upsert)?.execute(params_from_iter(row.values.iter().cloned().map(to_sql)))?;
                        match &row.version {
                            Some(version) => rows::write_base(conn, table.schema, id, &row.key, version)?,
                            None => rows::delete_base(conn, table.schema, id, &row.key)?,
                        }
                        result.applied += 1;
                    }
                    Op::Delete => deletes.push((t, row.key.clone())),
                }
            }
        }
        // Children before parents.
        deletes.sort_by_key(|(t, _)| std::cmp::Reverse(*t));
        for (t, key) in deletes {
            let removed = rows::delete_with_children(conn, state, t, &key)? as u64;
            result.applied += 1;
            result.cascaded += removed.saturating_sub(1);
        }
        if changeset.watermark.is_some() {
            meta::set_watermark(conn, &state.scope, changeset.watermark.as_deref())?;
        }
        Ok(result)
    })
}

/// The SQL function.
pub fn apply_changes(conn: &Connection, scope: &str, changeset: &str, options: &ApplyOptions) -> Result<String> {
    let _ = options;
    let changeset = Changeset::parse(changeset)?;
    let state = meta::require(conn, scope)?;
    let result = apply(conn, &state, &changeset)?;
    Ok(serde_json::to_string(&result).unwrap_or_default())
}
