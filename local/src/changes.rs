//! Local `sync_select_changes`: the changes this file has not had
//! acknowledged by the server, each with the server version it was made on
//! (`base`) and its change counter (`seq`).

use std::collections::BTreeMap;

use rusqlite::Connection;
use tandem_core::changeset::{Changeset, Op, RowChange, TableChanges, FORMAT};
use tandem_core::options::SelectOptions;
use tandem_core::sql::local;

use crate::error::{LocalError, Result};
use crate::meta::{self, ScopeState};
use crate::rows;
use crate::tx::atomically;

/// One batch of local changes.
#[derive(Debug)]
pub struct Batch {
    pub changeset: Changeset,
    /// Highest counter covered per table (sent or not: a row inserted and
    /// deleted before it was ever sent has nothing to tell the server).
    pub positions: BTreeMap<String, i64>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.positions.is_empty()
    }
}

/// Reads at most `max_rows` pending changes, oldest first, in one snapshot.
pub fn select(conn: &Connection, state: &ScopeState, max_rows: u64) -> Result<Batch> {
    atomically(conn, |conn| {
        let mut tables = Vec::new();
        let mut positions = BTreeMap::new();
        let mut remaining = max_rows;
        for (table, t) in state.schema.tables.iter().zip(&state.tables) {
            if remaining == 0 {
                break;
            }
            let mut statement = conn.prepare_cached(&local::pending_keys(table, t.id))?;
            let keys: Vec<(Vec<serde_json::Value>, i64)> = statement
                .query_map(rusqlite::params![t.acked_seq, remaining as i64], |row| {
                    Ok((rows::read_key(table, row)?, row.get(table.primary_key.len())?))
                })?
                .collect::<rusqlite::Result<_>>()?;
            if keys.is_empty() {
                continue;
            }
            remaining -= keys.len() as u64;
            let mut changes = Vec::with_capacity(keys.len());
            let mut top = 0;
            for (key, seq) in keys {
                top = top.max(seq);
                let base = rows::read_base(conn, table, t.id, &key)?;
                match rows::read(conn, table, &key)? {
                    Some(values) => changes.push(RowChange { op: Op::Upsert, version: None, base, seq: Some(seq), values: Some(values), key: None }),
                    None if base.is_some() => changes.push(RowChange { op: Op::Delete, version: None, base, seq: Some(seq), values: None, key: Some(key) }),
                    None => {}
                }
            }
            positions.insert(table.name.clone(), top);
            if !changes.is_empty() {
                tables.push(TableChanges { name: table.name.clone(), columns: table.column_names(), rows: changes });
            }
        }
        let watermark = serde_json::to_string(&positions).unwrap_or_default();
        Ok(Batch {
            changeset: Changeset {
                format: FORMAT,
                scope: state.scope.clone(),
                origin: state.client_id.clone(),
                tables,
                watermark: Some(watermark),
                has_more: remaining == 0,
            },
            positions,
        })
    })
}

/// The SQL function: since must be NULL (the local side always sends from
/// its last acknowledged change).
pub fn select_changes(conn: &Connection, scope: &str, since: Option<&str>, options: &SelectOptions) -> Result<String> {
    if since.is_some() {
        return Err(LocalError::Invalid(
            "on the local side, since must be NULL: it sends its changes since the last upload the server acknowledged".into(),
        ));
    }
    let state = meta::require(conn, scope)?;
    let batch = select(conn, &state, options.max_rows())?;
    Ok(serde_json::to_string(&batch.changeset).unwrap_or_default())
}
