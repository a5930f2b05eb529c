//! Starting over from the server without losing anything. When the file's
//! watermark is older than the server's last cleanup (the deletes it missed
//! are purged), or the scope was provisioned anew, only a pull from NULL
//! brings it up to date. That pull writes every row of the partition again
//! (rows with unsent local changes keep them); a sweep of the keys the file
//! held beforehand crosses off each key the pull brings, and once the pull
//! completes, the rows it did not bring, without an unsent change, are the
//! server's deletes the file missed: they go. An interrupted pull resumes
//! from its watermark, the sweep with it.

use rusqlite::{named_params, params_from_iter, Connection};
use serde_json::Value;
use tandem_core::sql::{device as sql, local};

use crate::error::Result;
use crate::meta::ScopeState;
use crate::rows;
use crate::tx::{applying, atomically};

/// Begins a resync: the sweep of every table, the watermark and echoes
/// forgotten.
pub fn begin(conn: &Connection, state: &ScopeState) -> Result<()> {
    atomically(conn, |conn| {
        for (table, t) in state.schema.tables.iter().zip(&state.tables) {
            for statement in local::begin_sweep(table, t.id) {
                conn.execute(&statement, [])?;
            }
        }
        crate::not_stored::forget_tables(conn, state, 0..state.schema.tables.len())?;
        conn.execute(sql::BEGIN_RESYNC_FROM_START, named_params! {":scope": state.scope})?;
        Ok(())
    })
}

/// Begins a sweep of the tables `refiltered` (their partition changed on
/// the server, which sends every row of them again after the file's
/// watermark): the rows of each that do not come are no longer the file's.
/// The pull goes on from the watermark; the other tables keep the sweep
/// they had, or get an empty one. Echoes are forgotten, so rows the file
/// just sent come back too and are crossed off.
pub fn begin_tables(conn: &Connection, state: &ScopeState, refiltered: &[usize]) -> Result<()> {
    atomically(conn, |conn| {
        for (t, (table, tracked)) in state.schema.tables.iter().zip(&state.tables).enumerate() {
            if refiltered.contains(&t) {
                for statement in local::begin_sweep(table, tracked.id) {
                    conn.execute(&statement, [])?;
                }
            } else {
                conn.execute(&local::keep_sweep(table, tracked.id), [])?;
            }
        }
        crate::not_stored::forget_tables(conn, state, refiltered.iter().copied())?;
        conn.execute(sql::BEGIN_RESYNC, named_params! {":scope": state.scope})?;
        Ok(())
    })
}

/// Crosses a key the pull brought off the sweep of table `t`.
pub fn cross_off(conn: &Connection, state: &ScopeState, t: usize, key: &[Value]) -> Result<()> {
    let table = &state.schema.tables[t];
    conn.prepare_cached(&local::cross_off(table, state.tables[t].id))?.execute(params_from_iter(rows::key_params(table, key)?))?;
    Ok(())
}

/// Ends a resync whose pull completed: deletes the rows it did not bring
/// (children first), and the sweeps. Returns how many rows went.
pub fn finish(conn: &Connection, state: &ScopeState) -> Result<u64> {
    applying(conn, state, |conn| {
        let mut removed = 0;
        for (t, table) in state.schema.tables.iter().enumerate().rev() {
            let id = state.tables[t].id;
            let keys: Vec<Vec<Value>> = conn
                .prepare(&local::swept_keys(table, id))?
                .query_map([state.tables[t].acked_seq], |row| rows::read_key(table, row))?
                .collect::<rusqlite::Result<_>>()?;
            for key in keys {
                removed += rows::delete_with_children(conn, state, t, &key)? as u64;
            }
            conn.execute(&local::drop_sweep(id), [])?;
        }
        conn.execute(sql::END_RESYNC, named_params! {":scope": state.scope})?;
        Ok(removed)
    })
}
