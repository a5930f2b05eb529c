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

use std::collections::HashMap;

use rusqlite::{params_from_iter, Connection, OptionalExtension};
use serde_json::Value;
use tandem_core::changeset::{Op, RowChange};
use tandem_core::schema::TableSchema;
use tandem_core::sql::local;

use crate::changes::changeset_value;
use crate::error::Result;
use crate::rows::{self, key_text};

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
    // Two rows that ended on one key (it was moved on, and another row
    // moved onto it): the latest entries cannot tell which is which, so
    // neither is paired.
    let mut claims: HashMap<String, Vec<usize>> = HashMap::new();
    for (&i, target) in &moved {
        let key = match target {
            Target::InBatch(j) => &entries[*j].key,
            Target::Past(pending) => &pending.key,
        };
        claims.entry(key_text(key)).or_default().push(i);
    }
    for claimants in claims.values().filter(|c| c.len() > 1) {
        for i in claimants {
            moved.remove(i);
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
        if found.base.is_some() {
            return Ok(None);
        }
        if found.values.is_some() {
            return Ok(Some(target));
        }
        next = found.moved_to.clone();
    }
    Ok(None)
}
