//! Recording the server's answer to an upload, in one transaction: new base
//! versions, the outcome of conflicts, acknowledged change counters; and
//! setting aside rows the server refused, so one bad row never blocks a
//! device.

use std::collections::{HashMap, HashSet};

use rusqlite::{named_params, params_from_iter, Connection};
use serde_json::{Map, Value};
use tandem_core::apply_result::{ApplyResult, ConflictReport};
use tandem_core::changeset::Op;
use tandem_core::conflict::{ConflictKind, Decision};
use tandem_core::sql::{device, local};
use tandem_core::Rejection;

use crate::changes::{self, Batch};
use crate::error::Result;
use crate::meta::{self, ScopeState};
use crate::not_stored::{self, ServerRow};
use crate::rows;
use crate::tx::applying;

/// What recording did, for the sync report.
#[derive(Debug, Default, Clone)]
pub struct Recorded {
    pub applied: u64,
    pub conflicts: u64,
    /// Server rows taken over local ones (conflicts lost, re-uploads).
    pub taken: u64,
    /// Conflicts the file settled itself (see [`settle_stored_elsewhere`]).
    pub settled: Vec<ConflictReport>,
}

/// Takes the server's state of a row: write it, or delete it when `row` is
/// `None`, and record its version.
fn take(
    conn: &Connection,
    state: &ScopeState,
    t: usize,
    key: &[Value],
    row: Option<&Map<String, Value>>,
    version: Option<&str>,
) -> Result<()> {
    let table = &state.schema.tables[t];
    let id = state.tables[t].id;
    match row {
        Some(row) => {
            let written = rows::server_key(table, key, row);
            if let Some(refusal) = not_stored::refusal_of(conn, table, |conn| rows::write_server_row(conn, table, id, key, row).map(drop))?
            {
                let server = ServerRow { t, key: &written, row: Some(row), version };
                not_stored::keep(conn, state, &server, &refusal)?;
                return server_has(conn, state, t, &written);
            }
            let key = written;
            match version {
                Some(version) => rows::write_base(conn, table, id, &key, version)?,
                None => rows::delete_base(conn, table, id, &key)?,
            }
            server_has(conn, state, t, &key)?;
        }
        None => {
            // A delete the file's own constraint refuses waits aside, as in
            // a pull: refused here, it failed every round from then on
            // (helper 59).
            let refusal = not_stored::refusal_of(conn, table, |conn| rows::delete_with_children(conn, state, t, key).map(drop))?;
            if let Some(refusal) = refusal {
                not_stored::keep(conn, state, &ServerRow { t, key, row: None, version }, &refusal)?;
            }
        }
    }
    Ok(())
}

/// The server holds the row at `key`: a resync under way must not take it
/// for a delete it missed (the pull from NULL may have passed the row
/// before this upload changed it).
fn server_has(conn: &Connection, state: &ScopeState, t: usize, key: &[Value]) -> Result<()> {
    if state.resync {
        crate::resync::cross_off(conn, state, t, key)?;
    }
    Ok(())
}

/// Records the server's result for `batch`.
pub fn upload(conn: &Connection, state: &ScopeState, batch: &Batch, result: &ApplyResult) -> Result<Recorded> {
    applying(conn, state, |conn| {
        let mut recorded = Recorded::default();
        // Local changes made after the batch was read are not overwritten.
        let mut newer: HashMap<usize, HashSet<String>> = HashMap::new();
        for (name, read_top) in &batch.read_tops {
            let t = state.table_index(name)?;
            // What the upload sent of the program's own values is the
            // server's now (see `local_only`).
            crate::local_only::fold(conn, &state.schema.tables[t], state.tables[t].id)?;
            let keys = rows::pending(conn, &state.schema.tables[t], state.tables[t].id, *read_top)?;
            if !keys.is_empty() {
                newer.insert(t, keys);
            }
        }
        let is_newer = |t: usize, key: &[Value]| newer.get(&t).is_some_and(|set| set.contains(&rows::key_text(key)));
        // A batch sent ahead left keys that another row holds in the file
        // now (see `changes::vacating`): the answer writes no row there.
        let left = batch.left_keys(state)?;
        let held = |t: usize, key: &[Value]| is_newer(t, key) || left.contains(&(t, rows::key_text(key)));
        // Results name rows by table and key; deletes need their children
        // removed too, so they are told apart from upserts.
        let mut deletes: HashSet<(usize, String)> = HashSet::new();
        // Upserts that moved no key, by their key.
        let mut upserts: HashSet<(usize, String)> = HashSet::new();
        // Key changes: the old key of each, which the file no longer holds.
        let mut moves: Vec<(usize, Vec<Value>)> = Vec::new();
        for table in &batch.changeset.tables {
            let t = state.table_index(&table.name)?;
            for row in &table.rows {
                match (&row.key, &row.moved_from) {
                    (Some(key), _) if row.op == Op::Delete => {
                        deletes.insert((t, rows::key_text(key)));
                    }
                    (_, Some(from)) => moves.push((t, from.clone())),
                    (_, None) if row.values.is_some() => {
                        upserts.insert((t, rows::key_text(&changes::key_of(&state.schema.tables[t], row))));
                    }
                    _ => {}
                }
            }
        }
        let mut restored: HashSet<(usize, String)> = HashSet::new();
        for applied in &result.versions {
            let t = state.table_index(&applied.table)?;
            let table = &state.schema.tables[t];
            if !deletes.is_empty() && deletes.contains(&(t, rows::key_text(&applied.key))) {
                if held(t, &applied.key) {
                    // Written again since the batch was read: the new row
                    // stays, and goes up next, built on the server's delete.
                    rows::write_base(conn, table, state.tables[t].id, &applied.key, &applied.version)?;
                } else if applied.respelled == Some(true) {
                    // Part of the key's change of text: the rows under it
                    // stay, under the new text on the server.
                    rows::delete_alone(conn, state, t, &applied.key)?;
                } else {
                    // The server deleted it: rows filtered through it go too.
                    rows::delete_with_children(conn, state, t, &applied.key)?;
                }
            } else {
                let mut key = applied.key.clone();
                let mut refused = None;
                if let Some(row) = &applied.row {
                    if !is_newer(t, &applied.key) {
                        // Stored differently from what was sent (a cast, a
                        // default, a trigger, a key in another form): take
                        // the server's form.
                        let id = state.tables[t].id;
                        refused = not_stored::refusal_of(conn, table, |conn| {
                            key = rows::write_server_row(conn, table, id, &applied.key, row)?;
                            Ok(())
                        })?;
                    }
                }
                rows::write_base(conn, table, state.tables[t].id, &key, &applied.version)?;
                server_has(conn, state, t, &key)?;
                if let (Some(refusal), Some(row)) = (refused, &applied.row) {
                    // The file keeps the row as it sent it, on the server's
                    // version; the server's form waits aside.
                    let server = ServerRow { t, key: &rows::server_key(table, &key, row), row: Some(row), version: Some(&applied.version) };
                    not_stored::keep(conn, state, &server, &refusal)?;
                }
            }
            recorded.applied += 1;
        }
        for conflict in &result.conflicts {
            let t = state.table_index(&conflict.table)?;
            recorded.conflicts += 1;
            log_conflict(conn, state, conflict)?;
            if conflict.decision == Decision::ClientWins {
                // The server took this file's row: it is the new base.
                let table = &state.schema.tables[t];
                match (&conflict.version, &conflict.row) {
                    (Some(version), Some(row)) => {
                        let id = state.tables[t].id;
                        let mut key = conflict.key.clone();
                        let mut refused = None;
                        if !is_newer(t, &conflict.key) {
                            refused = not_stored::refusal_of(conn, table, |conn| {
                                key = rows::write_server_row(conn, table, id, &conflict.key, row)?;
                                Ok(())
                            })?;
                        }
                        rows::write_base(conn, table, id, &key, version)?;
                        server_has(conn, state, t, &key)?;
                        if let Some(refusal) = refused {
                            let server = ServerRow { t, key: &rows::server_key(table, &key, row), row: Some(row), version: Some(version) };
                            not_stored::keep(conn, state, &server, &refusal)?;
                        }
                    }
                    // Deleted on the server; where the file holds another
                    // row at the key, that row goes up next, on the delete.
                    _ if held(t, &conflict.key) => match &conflict.version {
                        Some(version) => rows::write_base(conn, table, state.tables[t].id, &conflict.key, version)?,
                        None => rows::delete_base(conn, table, state.tables[t].id, &conflict.key)?,
                    },
                    _ => {
                        rows::delete_with_children(conn, state, t, &conflict.key)?;
                    }
                }
            } else if batch.is_ahead() && conflict.moved_from.is_some() {
                // A move sent ahead that the server settled against: the
                // row at its new key goes (the conflict logs it). The row
                // the file holds at its old key is another's, moved there
                // since: its move goes up next, and the server answers it
                // too (see `moves::Lookup::ahead`).
                rows::delete_alone(conn, state, t, &conflict.key)?;
                recorded.taken += 1;
            } else if !held(t, &conflict.key) {
                // A key change the server settled against, with nothing of
                // the server's at its new key, goes back by an update: what
                // the file's own keys moved with it goes back with it, not
                // deleted with it (helpers 90 and 91).
                let moved_back = match (&conflict.moved_from, &conflict.row) {
                    (Some(moved), None) => move_back(conn, state, t, &conflict.key, &moved.key)?,
                    _ => false,
                };
                if !moved_back {
                    take(conn, state, t, &conflict.key, conflict.row.as_ref(), conflict.version.as_deref())?;
                }
                recorded.taken += 1;
            }
            // A key change the server did not make: the row at its old key
            // comes back.
            if let Some(moved) = &conflict.moved_from {
                restored.insert((t, rows::key_text(&moved.key)));
                if !held(t, &moved.key) {
                    take(conn, state, t, &moved.key, moved.row.as_ref(), moved.version.as_deref())?;
                }
            }
        }
        // The old keys of key changes the server made are gone from it too,
        // even where the file wrote the key again since (a row moved back,
        // or a new one): that row is new to the server, and a move onto it
        // goes up as a move.
        for (t, from) in &moves {
            if !restored.contains(&(*t, rows::key_text(from))) {
                rows::delete_base(conn, &state.schema.tables[*t], state.tables[*t].id, from)?;
            }
        }
        for current in &result.current {
            let t = state.table_index(&current.table)?;
            if !held(t, &current.key) {
                take(conn, state, t, &current.key, current.row.as_ref(), current.version.as_deref())?;
                recorded.taken += 1;
            } else if current.row.is_none() && current.version.is_none() && upserts.contains(&(t, rows::key_text(&current.key))) {
                recorded.settled.push(settle_stored_elsewhere(conn, state, t, &current.key)?);
            }
        }
        for (name, top) in &batch.positions {
            let t = state.table_index(name)?;
            let id = state.tables[t].id;
            meta::set_acked(conn, id, *top)?;
            rows::delete_log_entries(
                conn,
                &state.schema.tables[t],
                id,
                &local::prune_log(id),
                vec![rusqlite::types::Value::Integer(*top)],
            )?;
        }
        not_stored::settle(conn, state)?;
        meta::record_upload_answer(conn, state, result.version.as_deref())?;
        Ok(recorded)
    })
}

/// Logs a conflict in the file's `tandem_conflicts`.
fn log_conflict(conn: &Connection, state: &ScopeState, conflict: &ConflictReport) -> Result<()> {
    let object = |row: &Option<Map<String, Value>>| row.as_ref().map(|r| Value::Object(r.clone()).to_string());
    conn.execute(
        device::INSERT_CONFLICT,
        named_params! {
            ":scope": state.scope,
            ":table_name": conflict.table,
            ":key": Value::Array(conflict.key.clone()).to_string(),
            ":kind": conflict.kind.as_str(),
            ":decision": conflict.decision.as_str(),
            ":server_row": object(&conflict.server_row),
            ":client_row": object(&conflict.client_row),
            ":row": object(&conflict.row),
            ":reason": conflict.reason,
            ":client_id": state.client_id,
        },
    )?;
    Ok(())
}

/// A row the batch sent, which the server stored at a key of its own (a
/// trigger), declined, or no longer holds in the file's partition, and
/// which the file changed again since it sent it: the file never learns where the server put it, so its later change
/// has no row to go to (sent at its key, it would store the row a second
/// time, or delete nothing). The change is settled as the server's and
/// logged with the file's row; the file drops its copy, and the server's
/// row comes with the pull.
fn settle_stored_elsewhere(conn: &Connection, state: &ScopeState, t: usize, key: &[Value]) -> Result<ConflictReport> {
    let table = &state.schema.tables[t];
    let (id, acked) = (state.tables[t].id, state.tables[t].acked_seq);
    let client_row = rows::read_by(conn, table, rows::key_params(table, key)?)?
        .map(|values| table.column_names().into_iter().zip(values).collect::<Map<String, Value>>());
    let conflict = ConflictReport {
        table: table.name.clone(),
        key: key.to_vec(),
        kind: ConflictKind::ConstraintViolated,
        decision: Decision::ServerWins,
        server_row: None,
        client_row,
        row: None,
        version: None,
        reason: Some(
            "the server holds no row at this key for this file since its earlier upload of it (a trigger stored the row at \
             a key of its own, declined it, or handed it to another partition), so this later change of it has no row to \
             go to; the server's rows come with the pull"
                .into(),
        ),
        moved_from: None,
    };
    log_conflict(conn, state, &conflict)?;
    let mut values = vec![rusqlite::types::Value::Integer(acked)];
    values.extend(rows::key_params(table, key)?);
    rows::delete_log_entries(conn, table, id, &local::forget_key(table, id), values)?;
    rows::delete_with_children(conn, state, t, key)?;
    Ok(conflict)
}

/// Moves refused changes into `tandem_rejected` (with the local row as it
/// was), forgets them, and takes the server's state of those rows.
pub fn set_aside(conn: &Connection, state: &ScopeState, rejections: &[Rejection]) -> Result<()> {
    applying(conn, state, |conn| {
        // Every refused row is kept as the file holds it before any is
        // undone: taking the server's state of one (a new parent removed,
        // with the rows under it by the file's own `ON DELETE CASCADE`)
        // would otherwise take a later one's row before it is kept
        // (helper 92).
        let mut kept = Vec::with_capacity(rejections.len());
        for rejection in rejections {
            let t = state.table_index(&rejection.table)?;
            let table = &state.schema.tables[t];
            let id = state.tables[t].id;
            // A key the server cannot read comes back in its form (or as a
            // marker): the change's log entry holds it as the file does.
            let stored_key = match rows::key_params(table, &rejection.key) {
                Ok(params) => params,
                Err(_) => match rejection.seq {
                    Some(seq) => rows::logged_key(conn, table, id, seq)?.unwrap_or_else(|| as_stored(&rejection.key)),
                    None => as_stored(&rejection.key),
                },
            };
            let local_row = rows::read_by(conn, table, stored_key.clone())?
                .map(|values| table.column_names().into_iter().zip(values).collect::<Map<String, Value>>());
            conn.execute(
                device::INSERT_REJECTED,
                named_params! {
                    ":scope": state.scope,
                    ":table_name": rejection.table,
                    ":key": Value::Array(rejection.key.clone()).to_string(),
                    ":row": local_row.map(|r| Value::Object(r).to_string()),
                    ":kind": rejection.kind.as_str(),
                    ":reason": rejection.reason,
                },
            )?;
            kept.push((rejection, t, stored_key));
        }
        // Rows that come back (the server's row, a key change moved back)
        // first, parents before children; rows that go (new rows the
        // server does not hold) after, children before parents: removing
        // a refused new parent first would take, by the file's own `ON
        // DELETE CASCADE`, a row the program moved under it that is coming
        // back to its old parent, and the unsent changes of the rows under
        // that one (helper 94).
        let comes_back = |rejection: &Rejection| rejection.row.is_some() || rejection.moved_from.is_some();
        let (back, going): (Vec<_>, Vec<_>) = kept.into_iter().partition(|(rejection, _, _)| comes_back(rejection));
        for (rejection, t, stored_key) in back.into_iter().chain(going.into_iter().rev()) {
            let table = &state.schema.tables[t];
            let (id, acked) = (state.tables[t].id, state.tables[t].acked_seq);
            if rows::key_params(table, &rejection.key).is_ok() {
                let mut values = vec![rusqlite::types::Value::Integer(acked)];
                values.extend(rows::key_params(table, &rejection.key)?);
                rows::delete_log_entries(conn, table, id, &local::forget_key(table, id), values)?;
                // A refused key change with nothing of the server's at the
                // new key goes back by an update: what the file's own keys
                // moved with the row goes back with it, not deleted with it.
                let moved_back = match (&rejection.moved_from, &rejection.row) {
                    (Some(moved), None) => move_back(conn, state, t, &rejection.key, &moved.key)?,
                    _ => false,
                };
                if !moved_back {
                    take(conn, state, t, &rejection.key, rejection.row.as_ref(), rejection.version.as_deref())?;
                }
            } else {
                // A key the server cannot even read: no row of the server can
                // be it. Drop the local changes of that key by its stored form.
                forget_unreadable_key(conn, state, t, stored_key)?;
            }
            // A refused key change: the row at its old key comes back as
            // the server holds it, and the change is forgotten whole.
            if let Some(moved) = &rejection.moved_from {
                if let Ok(from) = rows::key_params(table, &moved.key) {
                    let mut values = vec![rusqlite::types::Value::Integer(acked)];
                    values.extend(from);
                    rows::delete_log_entries(conn, table, id, &local::forget_key(table, id), values)?;
                    take(conn, state, t, &moved.key, moved.row.as_ref(), moved.version.as_deref())?;
                }
            }
        }
        not_stored::settle(conn, state)
    })
}

/// Moves the row at `key` back to `from` (see [`local::move_back`]) where
/// the file holds no row at `from`; returns whether it did.
fn move_back(conn: &Connection, state: &ScopeState, t: usize, key: &[Value], from: &[Value]) -> Result<bool> {
    let table = &state.schema.tables[t];
    let Ok(from) = rows::key_params(table, from) else { return Ok(false) };
    if rows::read_by(conn, table, from.clone())?.is_some() {
        return Ok(false);
    }
    let mut values = from;
    values.extend(rows::key_params(table, key)?);
    // What the file's own keys take back with it is sync's own writing too.
    let moved = crate::local_only::writing(conn, local::EVERY_TABLE, || {
        Ok(conn.prepare_cached(&local::move_back(table))?.execute(params_from_iter(values))?)
    })?;
    Ok(moved == 1)
}

/// A key as the file stores it when its values do not fit the key's types
/// (read back as they were sent: text as text, numbers as numbers).
fn as_stored(key: &[Value]) -> Vec<rusqlite::types::Value> {
    key.iter()
        .map(|v| match v {
            Value::String(s) => rusqlite::types::Value::Text(s.clone()),
            Value::Number(n) => match (n.as_i64(), n.as_f64()) {
                (Some(integer), _) => rusqlite::types::Value::Integer(integer),
                (None, Some(real)) => rusqlite::types::Value::Real(real),
                (None, None) => rusqlite::types::Value::Text(n.to_string()),
            },
            Value::Bool(b) => rusqlite::types::Value::Integer(i64::from(*b)),
            _ => rusqlite::types::Value::Null,
        })
        .collect()
}

/// Removes the log entries and the row of a key whose values do not fit the
/// key's types (written by another program straight into SQLite).
fn forget_unreadable_key(conn: &Connection, state: &ScopeState, t: usize, raw: Vec<rusqlite::types::Value>) -> Result<()> {
    let table = &state.schema.tables[t];
    let acked = rusqlite::types::Value::Integer(state.tables[t].acked_seq);
    rows::delete_log_entries(
        conn,
        table,
        state.tables[t].id,
        &local::forget_key(table, state.tables[t].id),
        std::iter::once(acked).chain(raw.iter().cloned()).collect(),
    )?;
    conn.prepare_cached(&tandem_core::sql::delete_row(
        tandem_core::sql::Dialect::Sqlite,
        &local::user_table(table),
        &table.primary_key,
        None,
    ))?
    .execute(params_from_iter(raw))?;
    Ok(())
}
