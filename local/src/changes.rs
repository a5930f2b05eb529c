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
use crate::values::from_sql;
use tandem_core::types::local_to_json;
use crate::tx::atomically;

/// One batch of local changes.
#[derive(Debug)]
pub struct Batch {
    pub changeset: Changeset,
    /// Highest counter covered per table (sent or not: a row inserted and
    /// deleted before it was ever sent has nothing to tell the server).
    pub positions: BTreeMap<String, i64>,
    /// Highest counter of each of those tables when the batch was read. A
    /// key in the batch has no change between its position and this (the
    /// batch holds each key's latest change), so only changes after this are
    /// local writes the server's answer must not overwrite.
    pub read_tops: BTreeMap<String, i64>,
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
        let mut read_tops = BTreeMap::new();
        let mut remaining = max_rows;
        for (table, t) in state.schema.tables.iter().zip(&state.tables) {
            if remaining == 0 {
                break;
            }
            let key_count = table.primary_key.len();
            let mut statement = conn.prepare_cached(&local::pending_rows(table, t.id))?;
            let mut rows = statement.query(rusqlite::params![t.acked_seq, remaining as i64])?;
            let mut changes = Vec::new();
            let mut top = 0;
            let mut read = 0u64;
            while let Some(row) = rows.next()? {
                read += 1;
                let seq: i64 = row.get(key_count)?;
                top = top.max(seq);
                let base: Option<String> = row.get(key_count + 1)?;
                let exists: bool = row.get(key_count + 2)?;
                if exists {
                    let values = table
                        .columns
                        .iter()
                        .enumerate()
                        .map(|(i, c)| Ok(local_to_json(c.ty, &from_sql(row.get_ref(key_count + 3 + i)?))))
                        .collect::<rusqlite::Result<Vec<_>>>()?;
                    changes.push(RowChange { op: Op::Upsert, version: None, base, seq: Some(seq), values: Some(values), key: None });
                } else if base.is_some() {
                    let key = rows::read_key(table, row)?;
                    changes.push(RowChange { op: Op::Delete, version: None, base, seq: Some(seq), values: None, key: Some(key) });
                }
            }
            if read == 0 {
                continue;
            }
            remaining = remaining.saturating_sub(read);
            positions.insert(table.name.clone(), top);
            read_tops.insert(table.name.clone(), rows::top_seq(conn, t.id)?);
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
            read_tops,
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
