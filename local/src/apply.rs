//! Local `sync_apply_changes`: writes a server changeset and its watermark in
//! one transaction. A row with an unsent local change is never overwritten:
//! that change goes up next and meets the server's policy there.

use rusqlite::Connection;
use serde_json::{json, Value};
use tandem_core::changeset::Op;
use tandem_core::options::{KeptKey, NotTaken};
use tandem_core::sql::local;
use tandem_core::types::to_local;
use tandem_core::validate::{check_changeset, Raw, Sender};

use crate::error::Result;
use crate::meta::{self, ScopeState};
use crate::not_stored::{self, ServerRow};
use crate::row_writer::RowWriter;
use crate::rows;
use crate::tx::applying;

/// Rows of one table in a batch from which its triggers are dropped for the
/// batch rather than silenced row by row.
const SILENCE_TRIGGERS_FROM: usize = 1000;

/// What applying a server changeset did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Applied {
    pub applied: u64,
    /// Rows removed because their parent left this file's partition.
    pub cascaded: u64,
    /// Rows kept because they have an unsent local change.
    pub skipped: Vec<Value>,
    /// Rows the file's own constraints refused, kept aside (see
    /// `not_stored`).
    pub not_stored: u64,
    pub watermark: Option<String>,
    /// More changes wait in the same pull.
    #[serde(skip)]
    pub has_more: bool,
}

/// Checks server changeset `text` against the scope and stores it.
pub fn apply(conn: &Connection, state: &ScopeState, text: &str) -> Result<Applied> {
    let checked = check_changeset(&state.schema, text, Sender::Server, to_local, Raw::Dropped)?;
    let (tables, rejections, watermark) = (checked.tables, checked.rejections, checked.watermark);
    if !rejections.is_empty() {
        return Err(tandem_core::Error::Rejected(rejections).into());
    }
    applying(conn, state, |conn| {
        let mut result = Applied { watermark: watermark.clone(), has_more: checked.has_more, ..Applied::default() };
        let mut deletes = Vec::new();
        // Server deletes the file did not take (`None` once one cannot be
        // named): uploads must not say they were received
        // (`meta::hold_seen`).
        let mut not_taken: Option<NotTaken> = Some(NotTaken::default());
        let mut held_back = false;
        // Keys with unsent changes, read before anything is written: what
        // the file's own keys log while sync writes (`ON UPDATE CASCADE`
        // into a key column) is no unsent change, and the server's rows of
        // those keys must be stored (helper 58).
        let mut waiting = Vec::with_capacity(tables.len());
        for table in &tables {
            let t = state.schema.position(table.schema);
            waiting.push(rows::pending(conn, table.schema, state.tables[t].id, state.tables[t].acked_seq)?);
        }
        // For a large batch, the tracking triggers go for the length of this
        // transaction (no other connection can write meanwhile): logging
        // every row, then removing those entries again, would double the
        // cost of the writes. Not a table with unsent changes: a row of it
        // the file's own foreign key takes must be seen to go (see
        // `tx::applying`). So do the triggers that note what the file
        // changes on its own (an update trigger slows SQLite's upsert even
        // where it inserts), when nothing is noted that sync's writes would
        // have to replace, but only while the table's own rows are written:
        // what the file's keys do to its other rows while sync writes
        // another table, or deletes rows, is noted. Not in a file with
        // triggers of its own: one may remove a row of the table while
        // sync writes it, and must take its base version along.
        let mut silenced = Vec::new();
        let mut unnoted = Vec::new();
        // Asked once, and only for a batch large enough to silence.
        let mut own_triggers = None;
        for table in &tables {
            let t = state.schema.position(table.schema);
            let id = state.tables[t].id;
            if table.rows.len() >= SILENCE_TRIGGERS_FROM && !rows::has_changes(conn, table.schema, &state.tables[t])? {
                for statement in local::drop_triggers(id) {
                    conn.execute(&statement, [])?;
                }
                silenced.push(t);
                let has_own = match own_triggers {
                    Some(known) => known,
                    None => *own_triggers.insert(crate::local_only::file_has_triggers(conn)?),
                };
                if !has_own && !crate::local_only::any(conn, table.schema, id)? {
                    unnoted.push(t);
                }
            }
        }
        for (table, waiting) in tables.iter().zip(&waiting) {
            let t = state.schema.position(table.schema);
            let id = state.tables[t].id;
            let unnoting = unnoted.contains(&t);
            let mut was_noting = false;
            if unnoting {
                was_noting = crate::local_only::is_noting(conn, id)?;
                crate::local_only::drop_triggers(conn, id)?;
            }
            // Sync's own writes: what the file's own keys and triggers do
            // meanwhile to other tables is its own (see `local_only`).
            let written = crate::local_only::writing(conn, id, || {
                let mut writer = RowWriter::new(conn, state, table, t, id);
                for row in &table.rows {
                    // A pull from NULL replacing the file's server state: the
                    // server has this row (kept or not, it is no delete missed).
                    if state.resync && row.op == Op::Upsert {
                        crate::resync::cross_off(conn, state, t, &row.key)?;
                    }
                    if !waiting.is_empty() && waiting.contains(&rows::key_text(&row.key)) {
                        // A delete of a key whose row the file no longer
                        // holds (its own delete waits to go up) leaves it
                        // as it is: taken, with nothing kept beside it.
                        // Not where the file may hold the key in another
                        // text.
                        if row.op == Op::Delete
                            && (table.schema.key_may_be_spelled_apart() || rows::read(conn, table.schema, &row.key)?.is_some())
                        {
                            if let Some(not_taken) = not_taken.as_mut() {
                                let version = row.version.clone();
                                not_taken.kept.push(KeptKey { table: table.schema.name.clone(), key: row.key.clone(), version });
                            }
                            held_back = true;
                        }
                        result.skipped.push(json!({"table": table.schema.name, "key": row.key}));
                        continue;
                    }
                    match row.op {
                        Op::Upsert => writer.upsert(row)?,
                        Op::Delete => deletes.push(ServerDelete {
                            t,
                            key: row.key.clone(),
                            respelled: row.respelled == Some(true),
                            version: &row.version,
                            changes_wait: !waiting.is_empty(),
                        }),
                    }
                }
                writer.finish()
            })?;
            result.applied += written.applied;
            result.not_stored += written.not_stored;
            if unnoting {
                crate::local_only::make_triggers(conn, table.schema, id)?;
                if was_noting {
                    crate::local_only::note_again(conn, table.schema, id)?;
                }
            }
        }
        // Children before parents.
        deletes.sort_by_key(|d| std::cmp::Reverse(d.t));
        for ServerDelete { t, key, respelled, version, changes_wait } in deletes {
            let table = &state.schema.tables[t];
            let mut removed = 0;
            // A foreign key of the file's own refuses the delete while a row
            // kept for its unsent change refers to it: the delete waits
            // aside and the batch goes on.
            let refusal = not_stored::refusal_of(conn, table, |conn| {
                removed = match respelled {
                    true => rows::delete_alone(conn, state, t, &key)?,
                    false => rows::delete_with_children(conn, state, t, &key)?,
                };
                Ok(())
            })?;
            if let Some(refusal) = refusal {
                let server = ServerRow { t, key: &key, row: None, version: None };
                not_stored::keep(conn, state, &server, &refusal)?;
                result.not_stored += 1;
                continue;
            }
            // While changes wait, a key the file may hold in other text
            // than the server's (`B0EE...` for the server's `b0ee...`):
            // this delete, in the server's text, reached no row of the
            // file (helper 71), or only the server's row, stored beside
            // the file's own spelling in an earlier round whose upload
            // failed (helper 72). Either way one of the changes may be an
            // insert of the value it deleted.
            if changes_wait && !respelled && table.key_may_be_spelled_apart() {
                match (not_taken.as_mut(), version) {
                    (Some(not_taken), Some(version)) => not_taken.unmatched.push(version.clone()),
                    _ => not_taken = None,
                }
                held_back = true;
            }
            result.applied += 1;
            result.cascaded += (removed as u64).saturating_sub(1);
        }
        for t in silenced {
            for statement in local::triggers(&state.schema.tables[t], state.tables[t].id) {
                conn.execute(&statement, [])?;
            }
            // Logged nothing meanwhile, but may have had rows changed by
            // the file's own keys and triggers (see `local_only`).
            crate::local_only::settle(conn, &state.schema.tables[t], state.tables[t].id)?;
        }
        not_stored::settle(conn, state)?;
        if let (true, Some(before)) = (held_back, &state.watermark) {
            meta::hold_seen(conn, &state.scope, before, not_taken)?;
        }
        if let Some(watermark) = &watermark {
            meta::set_pulled(conn, state, watermark)?;
        }
        Ok(result)
    })
}

/// A server delete of a batch, written after its upserts (children
/// before parents).
struct ServerDelete<'a> {
    /// The table's position in the scope.
    t: usize,
    key: Vec<Value>,
    /// The server still holds the key in another text (design.md, "Keys
    /// as PostgreSQL compares them").
    respelled: bool,
    version: &'a Option<String>,
    /// The table holds unsent changes of the file's.
    changes_wait: bool,
}

/// The SQL function.
pub fn apply_changes(conn: &Connection, scope: &str, changeset: &str) -> Result<String> {
    let state = meta::require(conn, scope)?;
    let result = apply(conn, &state, changeset)?;
    crate::error::to_json(&result)
}
