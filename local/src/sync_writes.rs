//! Telling sync's own writes from the file's in one sync transaction.
//!
//! The tracking triggers log every write, sync's too; `applying` takes
//! sync's entries out again before it commits. Sync notes each row it
//! writes, with the log's top counter right after the write: the entries of
//! that row up to there are the write's own (a trigger of the file's that
//! touches the row being written included: uploading that would have
//! every device touch and send back each row the others sent). Any other
//! entry is the file's change, and goes up with the next upload: one of a
//! row sync did not write, or one of a row sync wrote that a later
//! statement changed again (a program's trigger that keeps an order's total
//! as the server's lines come in, the order pulled in the same batch).
//! Two kinds of entry are still taken for sync's, as before:
//! - a row that is gone: a foreign key's `CASCADE` or a `REPLACE` may have
//!   taken it because sync removed a row that only left the partition, and
//!   a delete sent for it would remove the server's row;
//! - any entry of a table that SQLite's foreign key actions may change
//!   (`PRAGMA foreign_keys` on, a key with an action): for the same reason
//!   (`SET NULL` on a row whose parent only left).

use std::cell::RefCell;
use std::collections::HashMap;

use rusqlite::types::Value as SqlValue;
use rusqlite::{params_from_iter, Connection};
use serde_json::Value;
use tandem_core::schema::TableSchema;
use tandem_core::sql::local;

use crate::error::Result;
use crate::rows;

thread_local! {
    /// The rows noted in the `applying` transaction running on this thread.
    static NOTED: RefCell<Option<Noted>> = const { RefCell::new(None) };
}

/// The rows sync wrote, by table name and key (as [`rows::key_text`]
/// spells it), each with the log's top counter after sync last wrote it.
#[derive(Debug, Default)]
pub struct Noted(HashMap<String, HashMap<String, i64>>);

impl Noted {
    /// Whether log entry `seq` of `key` is one of sync's writes' own.
    fn is_syncs(&self, table: &TableSchema, key: &[Value], seq: i64) -> bool {
        self.0.get(&table.name).and_then(|keys| keys.get(&rows::key_text(key))).is_some_and(|&top| seq <= top)
    }

    fn merge(&mut self, other: Noted) {
        for (table, keys) in other.0 {
            let mine = self.0.entry(table).or_default();
            for (key, top) in keys {
                let at = mine.entry(key).or_default();
                *at = (*at).max(top);
            }
        }
    }
}

/// Notes that sync just wrote the row of `key` in `table` (tracking id
/// `id`). Outside an `applying` transaction there is nothing to note.
pub fn note(conn: &Connection, table: &TableSchema, id: i64, key: &[Value]) -> Result<()> {
    let noting = NOTED.with(|noted| noted.borrow().is_some());
    if !noting {
        return Ok(());
    }
    let top = rows::top_seq(conn, id)?;
    NOTED.with(|noted| {
        if let Some(noted) = noted.borrow_mut().as_mut() {
            noted.0.entry(table.name.clone()).or_default().insert(rows::key_text(key), top);
        }
    });
    Ok(())
}

/// Noting for the length of one `applying` transaction. One inside another
/// hands its rows on to the outer one when it ends; one left by an error
/// puts the outer one back as it was.
pub struct Noting {
    outer: Option<Noted>,
    ended: bool,
}

impl Noting {
    pub fn begin() -> Noting {
        Noting { outer: NOTED.with(|noted| noted.replace(Some(Noted::default()))), ended: false }
    }

    /// The rows noted since [`Noting::begin`].
    pub fn end(mut self) -> Noted {
        self.ended = true;
        let mine = NOTED.with(|noted| noted.borrow_mut().take()).unwrap_or_default();
        let outer = self.outer.take().map(|mut outer| {
            outer.merge(Noted(mine.0.clone()));
            outer
        });
        NOTED.with(|noted| noted.replace(outer));
        mine
    }
}

impl Drop for Noting {
    fn drop(&mut self) {
        if !self.ended {
            let outer = self.outer.take();
            NOTED.with(|noted| noted.replace(outer));
        }
    }
}

/// Takes sync's entries out of table `id`'s log: those after `top` that
/// are not the file's own (see the module's doc). The counter never goes
/// back (`rows::delete_log_entries`).
pub fn take_out(conn: &Connection, table: &TableSchema, id: i64, top: i64, noted: &Noted) -> Result<()> {
    let files_own = files_own_entries(conn, table, id, top, noted)?;
    let (sql, params) = match files_own.is_empty() {
        true => (local::drop_log_after(id), vec![SqlValue::Integer(top)]),
        false => (local::drop_log_after_except(id), vec![SqlValue::Integer(top), SqlValue::Text(Value::from(files_own).to_string())]),
    };
    rows::delete_log_entries(conn, table, id, &sql, params)
}

/// The counters of entries after `top` the file made of its own.
fn files_own_entries(conn: &Connection, table: &TableSchema, id: i64, top: i64, noted: &Noted) -> Result<Vec<i64>> {
    let mut entries = conn.prepare_cached(&local::logged_after(table, id))?;
    let unnoted: Vec<(i64, Vec<Value>)> = entries
        .query_map([top], |row| Ok((row.get(0)?, rows::read_key_at(table, row, 1)?)))?
        .filter(|entry| !entry.as_ref().is_ok_and(|(seq, key)| noted.is_syncs(table, key, *seq)))
        .collect::<rusqlite::Result<_>>()?;
    if unnoted.is_empty() || foreign_key_actions(conn, table)? {
        return Ok(Vec::new());
    }
    let mut has_row = conn.prepare_cached(&local::has_row(table))?;
    let mut own = Vec::new();
    for (seq, key) in unnoted {
        if has_row.query_row(params_from_iter(rows::key_params(table, &key)?), |r| r.get::<_, bool>(0))? {
            own.push(seq);
        }
    }
    own.sort_unstable();
    own.dedup();
    Ok(own)
}

/// Whether SQLite's foreign key actions may change rows of `table` here.
fn foreign_key_actions(conn: &Connection, table: &TableSchema) -> Result<bool> {
    let name = table.table_name().local_name();
    Ok(conn.prepare_cached(local::FOREIGN_KEY_ACTIONS)?.query_row([name], |r| r.get::<_, bool>(0))?)
}

/// Whether one of the file's own triggers names `table` (it may write the
/// table while sync writes another): then sync keeps the table's tracking
/// triggers for a large batch, so that write is logged.
pub fn named_by_programs_trigger(programs_triggers: &[String], table: &TableSchema) -> bool {
    let name = table.table_name().local_name().to_lowercase();
    programs_triggers.iter().any(|sql| sql.to_lowercase().contains(&name))
}

/// The text of each of the file's triggers that are not Tandem's.
pub fn programs_triggers(conn: &Connection) -> Result<Vec<String>> {
    let mut statement = conn.prepare_cached(local::PROGRAM_TRIGGERS)?;
    let triggers =
        statement.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?)))?.collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(triggers.into_iter().filter(|(name, _)| !local::is_tandems_trigger(name)).filter_map(|(_, sql)| sql).collect())
}
