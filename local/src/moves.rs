//! Key changes as one change. An UPDATE of a key logs the old key with the
//! new one; an upload sends the pair as one upsert of the new key that
//! names the key it `moved_from`, based on the old row's version, so the
//! server moves its row in one UPDATE (running its cascades) or not at all.
//! A key changed several times (A to B to C) is one move, A to C.
//!
//! Only a move the server can follow is paired: from a key the server
//! knows (it has a base version) to a row that still exists and that the
//! server has never seen. Anything else goes as before: the old key
//! deleted, the new key upserted.
//!
//! A key the server knows that its row left (a key change, a delete) and
//! another row's key change took (4 to 104, then 3 to 4) cannot be paired
//! from the latest entries: key 4's is the row that came. What left it
//! goes first, alone ([`vacating`]); then 4 is new to the server, and 3 to
//! 4 pairs.

use std::collections::{HashMap, HashSet};

use rusqlite::types::Value as SqlValue;
use rusqlite::{params_from_iter, Connection, OptionalExtension};
use serde_json::Value;
use tandem_core::changeset::{Op, RowChange};
use tandem_core::schema::TableSchema;
use tandem_core::sql::local;
use tandem_core::types::LocalValue;

use crate::changes::changeset_value;
use crate::error::Result;
use crate::rows::{self, key_text};
use crate::values::from_sql;

/// One key's latest pending change, as an upload reads it.
#[derive(Debug)]
pub struct Pending {
    pub key: Vec<Value>,
    pub seq: i64,
    /// The server version the file's row is based on.
    pub base: Option<String>,
    /// The row's values, when it exists in the file.
    pub values: Option<Vec<Value>>,
    /// The key the latest change moved the row to.
    pub moved_to: Option<Vec<Value>>,
}

/// Where keys past the batch are looked up (a move's new key can have a
/// later change than the batch reaches).
pub struct Lookup<'a> {
    pub conn: &'a Connection,
    pub table: &'a TableSchema,
    pub id: i64,
    /// The batch reads a snapshot of all pending keys; otherwise it holds
    /// every pending key already.
    pub snapshot: bool,
    /// Keys left by changes sent ahead this upload ([`vacating`]): a move
    /// onto one pairs even where the server still holds the key (that
    /// change lost its conflict, or was refused), so the server refuses it
    /// as a move instead of taking a delete of its old key.
    pub ahead: &'a HashSet<String>,
}

impl Lookup<'_> {
    /// A pending key outside the batch: its latest move and its row.
    fn pending(&self, key: &[Value]) -> Result<Option<Pending>> {
        if !self.snapshot {
            return Ok(None);
        }
        let params = rows::key_params(self.table, key)?;
        let moved_to = self
            .conn
            .prepare_cached(&local::snapshot_moved_to(self.table, self.id))?
            .query_row(params_from_iter(params), |row| rows::read_key_at(self.table, row, 0))
            .optional()?;
        let Some(moved_to) = moved_to else { return Ok(None) };
        let values = rows::read_local(self.conn, self.table, key)?
            .map(|row| row.into_iter().enumerate().map(|(i, v)| changeset_value(self.table, i, v)).collect());
        Ok(Some(Pending {
            key: key.to_vec(),
            seq: 0,
            base: rows::read_base(self.conn, self.table, self.id, key)?,
            values,
            moved_to: moved_to.iter().all(|v| !v.is_null()).then_some(moved_to),
        }))
    }
}

/// Where a row that left its key went: to an entry of the batch, or to a
/// key whose change lies past it.
enum Target {
    InBatch(usize),
    Past(Pending),
}

/// The changes an upload sends for `entries` (one table's batch, in
/// counter order): moves paired, everything else as it is. Each comes with
/// the counter of the entry it stands at (a move at its old key's), in
/// counter order: a batch cut before a change covers the entries before it.
///
/// A delete of a row the file has no server version of is left out (the
/// row was never sent), unless `answer_lost`: an upload of the file may
/// have reached the server without its answer, carrying the row; the
/// delete then goes, and the server takes it as the file's own (or has
/// nothing to delete).
pub fn changes(entries: Vec<Pending>, lookup: &Lookup<'_>, answer_lost: bool) -> Result<Vec<(i64, RowChange)>> {
    let position: HashMap<String, usize> = entries.iter().enumerate().map(|(i, e)| (key_text(&e.key), i)).collect();
    let mut moved: HashMap<usize, Target> = HashMap::new();
    for (i, entry) in entries.iter().enumerate() {
        if entry.values.is_some() || entry.base.is_none() || entry.moved_to.is_none() {
            continue;
        }
        if let Some(target) = follow(&entries, &position, entry, lookup)? {
            moved.insert(i, target);
        }
    }
    // Two rows that ended on one key (one was deleted there, or moved on,
    // and the other moved onto it): the latest entries cannot tell which
    // is there now, the log's key changes in counter order can. The others
    // go as deletes (helper 105's fault-suite run: both did, and the
    // server's cascade took the rows under the one there now).
    let mut claims: HashMap<String, Vec<usize>> = HashMap::new();
    for (&i, target) in &moved {
        let key = match target {
            Target::InBatch(j) => &entries[*j].key,
            Target::Past(pending) => &pending.key,
        };
        claims.entry(key_text(key)).or_default().push(i);
    }
    for claimants in claims.values().filter(|c| c.len() > 1) {
        let mut holders = Vec::new();
        for &i in claimants {
            if still_there(lookup, &entries[i])? {
                holders.push(i);
            }
        }
        for i in claimants {
            if holders.as_slice() != [*i] {
                moved.remove(i);
            }
        }
    }
    let mut absorbed = vec![false; entries.len()];
    for target in moved.values() {
        if let Target::InBatch(j) = target {
            absorbed[*j] = true;
        }
    }
    let mut out = Vec::with_capacity(entries.len());
    let mut entries: Vec<Option<Pending>> = entries.into_iter().map(Some).collect();
    for i in 0..entries.len() {
        if absorbed[i] {
            continue;
        }
        let Some(entry) = entries[i].take() else { continue };
        match moved.remove(&i) {
            Some(target) => {
                let to = match target {
                    Target::InBatch(j) => entries[j].take(),
                    Target::Past(pending) => Some(pending),
                };
                let Some(to) = to else { continue };
                out.push((
                    entry.seq,
                    RowChange {
                        op: Op::Upsert,
                        version: None,
                        base: entry.base,
                        seq: Some(entry.seq.max(to.seq)),
                        values: to.values,
                        key: None,
                        moved_from: Some(entry.key),
                        respelled: None,
                    },
                ));
            }
            None => match entry.values {
                Some(values) => out.push((
                    entry.seq,
                    RowChange {
                        op: Op::Upsert,
                        version: None,
                        base: entry.base,
                        seq: Some(entry.seq),
                        values: Some(values),
                        key: None,
                        moved_from: None,
                        respelled: None,
                    },
                )),
                None if entry.base.is_some() || answer_lost => out.push((
                    entry.seq,
                    RowChange {
                        op: Op::Delete,
                        version: None,
                        base: entry.base,
                        seq: Some(entry.seq),
                        values: None,
                        key: Some(entry.key),
                        moved_from: None,
                        respelled: None,
                    },
                )),
                None => {}
            },
        }
    }
    Ok(out)
}

/// Whether the row that `left` its key (its latest entry, a key change) is
/// where the log's key changes, followed in counter order, take it, with
/// no other row's key change onto that key since.
fn still_there(lookup: &Lookup<'_>, left: &Pending) -> Result<bool> {
    let Some(to) = left.moved_to.clone() else { return Ok(false) };
    let Some(hops) = walk(lookup.conn, lookup.table, lookup.id, Hop { key: to, raw: Vec::new(), seq: left.seq })? else { return Ok(false) };
    match hops.last() {
        Some(at) => Ok(!taken_after(lookup.conn, lookup.table, lookup.id, at)?),
        None => Ok(false),
    }
}

/// Follows a row that left its key through later moves to where it is
/// now; `None` when it ends deleted, or on a key the server knows.
fn follow(entries: &[Pending], position: &HashMap<String, usize>, from: &Pending, lookup: &Lookup<'_>) -> Result<Option<Target>> {
    let mut next = from.moved_to.clone();
    // A chain visits each pending key at most once.
    for _ in 0..=entries.len() + 1 {
        let Some(key) = next else { return Ok(None) };
        let target = match position.get(&key_text(&key)) {
            Some(&j) => Target::InBatch(j),
            None => match lookup.pending(&key)? {
                Some(pending) => Target::Past(pending),
                None => return Ok(None),
            },
        };
        let found = match &target {
            Target::InBatch(j) => &entries[*j],
            Target::Past(pending) => pending,
        };
        if found.base.is_some() && !lookup.ahead.contains(&key_text(&found.key)) {
            return Ok(None);
        }
        if found.values.is_some() {
            return Ok(Some(target));
        }
        next = found.moved_to.clone();
    }
    Ok(None)
}

/// For up to `limit` keys of table `id` the server knows that another
/// row's key change after `acked` took, what left each before: a key
/// change, sent as a move to where that row is now (followed by the log's
/// key changes in counter order, it must end on a row the server has never
/// seen), or a delete (the row was deleted, before or after it moved, or
/// another row's key change took the key it went to since).
/// `skip` names keys not to try again (sent this upload). A row that ends
/// on a key the server knows waits: that key's own change goes first.
pub fn vacating(conn: &Connection, table: &TableSchema, id: i64, acked: i64, limit: u64, skip: &HashSet<String>) -> Result<Vec<RowChange>> {
    let keys = table.primary_key.len();
    let mut taken = Vec::new();
    {
        let mut statement = conn.prepare_cached(&local::vacated_keys(table, id))?;
        let mut rows =
            statement.query(rusqlite::params![acked, (limit as i64).saturating_add(skip.len() as i64).saturating_add(CANDIDATES)])?;
        while let Some(row) = rows.next()? {
            let key = rows::read_key(table, row)?;
            if !skip.contains(&key_text(&key)) {
                taken.push((key, row.get::<_, i64>(keys)?, row.get::<_, String>(keys + 1)?));
            }
        }
    }
    let mut claimed = HashSet::new();
    let mut out = Vec::new();
    for (key, taken_at, base) in taken {
        if out.len() as u64 >= limit {
            break;
        }
        let change = |seq: i64, values: Option<Vec<Value>>| {
            let (op, key, moved_from) = match values {
                Some(_) => (Op::Upsert, None, Some(key.clone())),
                None => (Op::Delete, Some(key.clone()), None),
            };
            RowChange { op, version: None, base: Some(base.clone()), seq: Some(seq), values, key, moved_from, respelled: None }
        };
        match next_move(conn, table, id, &key, acked)?.filter(|hop| hop.seq < taken_at) {
            Some(first) => {
                let seq = first.seq;
                let Some(hops) = walk(conn, table, id, first)? else { continue };
                // Another row's key change took the key the row went to
                // since: the row was deleted there (fault suite: it went up
                // as a move onto the row there now, that other one's).
                let Some(at) = hops.last() else { continue };
                if taken_after(conn, table, id, at)? {
                    out.push(change(seq, None));
                    continue;
                }
                let Some(to) = destination(conn, table, id, &key, &hops)? else { continue };
                if !claimed.insert(key_text(&to.key)) {
                    continue;
                }
                // The file's own foreign keys moved the rows under it: they
                // go up with the latest entries, in one batch.
                if crate::own_keys::moved_along(conn, table, &at.key)? {
                    continue;
                }
                let values = rows::read_local(conn, table, &at.key)?.map(|row| {
                    let mut row: Vec<Value> = row.into_iter().enumerate().map(|(i, v)| changeset_value(table, i, v)).collect();
                    // At a key it passed through: its values there.
                    for (k, raw) in table.key_indexes().iter().zip(&to.raw) {
                        if let Some(slot) = row.get_mut(*k) {
                            *slot = changeset_value(table, *k, raw.clone());
                        }
                    }
                    row
                });
                out.push(change(seq, values));
            }
            None => {
                let first: Option<i64> = conn
                    .prepare_cached(&local::first_entry(table, id))?
                    .query_row(params_from_iter(with_counter(table, acked, &key)?), |row| row.get(0))?;
                if let Some(seq) = first.filter(|&seq| seq < taken_at) {
                    out.push(change(seq, None));
                }
            }
        }
    }
    Ok(out)
}

/// Where the row that left `left` (by `hops`, the keys it went through,
/// the last where it is now) goes ahead: its key now, where the server
/// has never seen it; else the last key it passed through that the server
/// has never seen and no row holds (two rows swapping keys through a
/// temporary one: the first goes there on the server too, freeing its
/// key for the second); else nowhere yet (a key the server knows holds it
/// and its own change goes first).
fn destination<'h>(conn: &Connection, table: &TableSchema, id: i64, left: &[Value], hops: &'h [Hop]) -> Result<Option<&'h Hop>> {
    let Some((at, passed)) = hops.split_last() else { return Ok(None) };
    if rows::read_base(conn, table, id, &at.key)?.is_none() {
        return Ok(Some(at));
    }
    for hop in passed.iter().rev() {
        let free = hop.key.as_slice() != left
            && rows::read_base(conn, table, id, &hop.key)?.is_none()
            && rows::read_local(conn, table, &hop.key)?.is_none();
        if free {
            return Ok(Some(hop));
        }
    }
    Ok(None)
}

/// Keys read past `limit` for [`vacating`]: a key whose row must wait
/// for another key's change takes no room.
const CANDIDATES: i64 = 1000;

/// `counter` then the key's values, as statements on one key after a
/// counter take them.
fn with_counter(table: &TableSchema, counter: i64, key: &[Value]) -> Result<Vec<SqlValue>> {
    let mut params = vec![SqlValue::Integer(counter)];
    params.extend(rows::key_params(table, key)?);
    Ok(params)
}

/// A key a row moved to, by the log entry at `seq`.
struct Hop {
    key: Vec<Value>,
    /// The key as the file holds it, for a row's values at it.
    raw: Vec<LocalValue>,
    seq: i64,
}

/// Whether another row's key change took `hop`'s key after the row got
/// there.
fn taken_after(conn: &Connection, table: &TableSchema, id: i64, hop: &Hop) -> Result<bool> {
    Ok(conn
        .prepare_cached(&local::taken_after(table, id))?
        .query_row(params_from_iter(with_counter(table, hop.seq, &hop.key)?), |row| row.get(0))?)
}

/// The first key change of `key` after counter `after`: where it moved the
/// row, and its counter.
fn next_move(conn: &Connection, table: &TableSchema, id: i64, key: &[Value], after: i64) -> Result<Option<Hop>> {
    let keys = table.primary_key.len();
    Ok(conn
        .prepare_cached(&local::next_move(table, id))?
        .query_row(params_from_iter(with_counter(table, after, key)?), |row| {
            Ok(Hop {
                key: rows::read_key_at(table, row, 0)?,
                raw: (0..keys).map(|i| Ok(from_sql(row.get_ref(i)?))).collect::<rusqlite::Result<_>>()?,
                seq: row.get(keys)?,
            })
        })
        .optional()?)
}

/// The keys a row went through from `first` on, by each later key change
/// of the key it was on, the last where it is now; `None` where a key has
/// no whole value.
fn walk(conn: &Connection, table: &TableSchema, id: i64, first: Hop) -> Result<Option<Vec<Hop>>> {
    let mut hops = vec![first];
    loop {
        let Some(hop) = hops.last() else { return Ok(None) };
        if hop.key.iter().any(Value::is_null) {
            return Ok(None);
        }
        // Counters only grow: the walk ends.
        match next_move(conn, table, id, &hop.key, hop.seq)? {
            Some(next) => hops.push(next),
            None => return Ok(Some(hops)),
        }
    }
}
