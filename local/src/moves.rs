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
    /// The table's acknowledged counter: the log after it is pending.
    pub acked: i64,
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

    /// Where the row `key` held when the file last synced went first, if
    /// a key change took it away since, with that change's counter.
    fn first_moved_to(&self, key: &[Value]) -> Result<Option<(Vec<Value>, i64)>> {
        let mut params = vec![rusqlite::types::Value::Integer(self.acked)];
        params.extend(rows::key_params(self.table, key)?);
        let width = self.table.primary_key.len();
        let to = self
            .conn
            .prepare_cached(&local::first_moved_to(self.table, self.id))?
            .query_row(params_from_iter(params), |row| Ok((rows::read_key_at(self.table, row, 0)?, row.get::<_, i64>(width)?)))
            .optional()?;
        Ok(to.filter(|(to, _)| to.iter().all(|v| !v.is_null())))
    }
}

/// Where a row that left its key went: to an entry of the batch, or to a
/// key whose change lies past it.
enum Target {
    InBatch(usize),
    Past(Pending),
}

/// What [`changes`] makes of a table's batch.
pub struct Paired {
    /// The changes, each at the counter it stands at, in counter order.
    pub changes: Vec<(i64, RowChange)>,
    /// The batch ends before this counter: a row moved onto a key whose
    /// own row moves on in this batch goes in the next (see [`changes`]).
    pub ends_before: Option<i64>,
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
pub fn changes(entries: Vec<Pending>, lookup: &Lookup<'_>, answer_lost: bool) -> Result<Paired> {
    let position: HashMap<String, usize> = entries.iter().enumerate().map(|(i, e)| (key_text(&e.key), i)).collect();
    let mut moved: HashMap<usize, Target> = HashMap::new();
    // Rows that moved onto a key the server knows (an entry of the batch).
    let mut onto_known: Vec<(usize, usize)> = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        if entry.values.is_some() || entry.base.is_none() || entry.moved_to.is_none() {
            continue;
        }
        match follow(&entries, &position, entry, lookup)? {
            Followed::To(target) => {
                moved.insert(i, target);
            }
            Followed::Known(j) => onto_known.push((i, j)),
            Followed::Nowhere => {}
        }
    }
    // A key the server knows whose own row moved on before another row
    // moved onto it (4 to 104, then 3 to 4): its row's move goes in this
    // batch, at the counter of that key change, and the batch ends before
    // the other row's move, which the next batch pairs once the key is
    // new to the server (helper 102: it went as a delete of its old key,
    // and the server's `ON DELETE CASCADE` took the rows under it). One
    // changeset holds a key once, as a row's key or as the key it left.
    let mut vacating: HashMap<usize, (i64, i64, Target)> = HashMap::new();
    for (source, j) in onto_known {
        if vacating.contains_key(&j) {
            continue;
        }
        let Some((first, at)) = lookup.first_moved_to(&entries[j].key)? else { continue };
        let left = Pending {
            key: entries[j].key.clone(),
            seq: entries[j].seq,
            base: entries[j].base.clone(),
            values: None,
            moved_to: Some(first),
        };
        if let Followed::To(target) = follow(&entries, &position, &left, lookup)? {
            let waits = entries[source].seq.min(entries[j].seq);
            if at < waits {
                vacating.insert(j, (at, waits, target));
            }
        }
    }
    // Two rows that ended on one key (it was moved on, and another row
    // moved onto it): the latest entries cannot tell which is which, so
    // neither is paired.
    let mut claims: HashMap<String, Vec<usize>> = HashMap::new();
    for (&i, target) in moved.iter().chain(vacating.iter().map(|(j, (_, _, target))| (j, target))) {
        claims.entry(key_text(target.key(&entries))).or_default().push(i);
    }
    for claimants in claims.values().filter(|c| c.len() > 1) {
        for i in claimants {
            moved.remove(i);
            vacating.remove(i);
        }
    }
    let ends_before = vacating.values().map(|(_, waits, _)| *waits).min();
    let mut absorbed = vec![false; entries.len()];
    for target in moved.values().chain(vacating.values().map(|(_, _, target)| target)) {
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
        if let Some((at, _, on)) = vacating.remove(&i) {
            let to = match on {
                Target::InBatch(k) => entries[k].take(),
                Target::Past(pending) => Some(pending),
            };
            if let Some(to) = to {
                let seq = at.max(to.seq);
                out.push((at, moved_change(entry.key, entry.base, seq, to)));
            }
            continue;
        }
        match moved.remove(&i) {
            Some(target) => {
                let to = match target {
                    Target::InBatch(j) => entries[j].take(),
                    Target::Past(pending) => Some(pending),
                };
                let Some(to) = to else { continue };
                out.push((entry.seq, moved_change(entry.key, entry.base, entry.seq, to)));
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
    // A vacated key's move stands at its own counter, before the rest.
    out.sort_by_key(|(at, _)| *at);
    Ok(Paired { changes: out, ends_before })
}

/// The move of the row at key `from` (on `base`, its counter `seq`) to
/// the row `to` holds now.
fn moved_change(from: Vec<Value>, base: Option<String>, seq: i64, to: Pending) -> RowChange {
    RowChange {
        op: Op::Upsert,
        version: None,
        base,
        seq: Some(seq.max(to.seq)),
        values: to.values,
        key: None,
        moved_from: Some(from),
        respelled: None,
    }
}

impl Target {
    fn key<'e>(&'e self, entries: &'e [Pending]) -> &'e [Value] {
        match self {
            Target::InBatch(j) => &entries[*j].key,
            Target::Past(pending) => &pending.key,
        }
    }
}

/// Where [`follow`] found a row that left its key.
enum Followed {
    /// At a key the server has never seen.
    To(Target),
    /// At a key the server knows, entry `j` of the batch.
    Known(usize),
    /// Deleted, or nowhere [`follow`] can pair.
    Nowhere,
}

/// Follows a row that left its key through later moves to where it is
/// now.
fn follow(entries: &[Pending], position: &HashMap<String, usize>, from: &Pending, lookup: &Lookup<'_>) -> Result<Followed> {
    let mut next = from.moved_to.clone();
    // A chain visits each pending key at most once.
    for _ in 0..=entries.len() + 1 {
        let Some(key) = next else { return Ok(Followed::Nowhere) };
        let target = match position.get(&key_text(&key)) {
            Some(&j) => Target::InBatch(j),
            None => match lookup.pending(&key)? {
                Some(pending) => Target::Past(pending),
                None => return Ok(Followed::Nowhere),
            },
        };
        let found = match &target {
            Target::InBatch(j) => &entries[*j],
            Target::Past(pending) => pending,
        };
        if found.base.is_some() {
            let held = found.values.is_some();
            return Ok(match target {
                Target::InBatch(j) if held => Followed::Known(j),
                _ => Followed::Nowhere,
            });
        }
        if found.values.is_some() {
            return Ok(Followed::To(target));
        }
        next = found.moved_to.clone();
    }
    Ok(Followed::Nowhere)
}
