//! Local `sync_select_changes`: the changes this file has not had
//! acknowledged by the server, each with the server version it was made on
//! (`base`) and its change counter (`seq`).

use std::collections::{BTreeMap, HashMap, HashSet};

use rusqlite::Connection;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tandem_core::changeset::{Changeset, Op, TableChanges, FORMAT};
use tandem_core::error::RejectionKind;
use tandem_core::options::SelectOptions;
use tandem_core::options::MAX_ROW_BYTES;
use tandem_core::schema::TableSchema;
use tandem_core::sql::local::{self, PendingSource};
use tandem_core::Rejection;

use crate::error::{LocalError, Result};
use crate::meta::{self, ScopeState};
use crate::moves;
use crate::rows;
use crate::tx::atomically;
use crate::values::from_sql;
use tandem_core::types::local_to_json;

/// One batch of local changes.
#[derive(Debug)]
pub struct Batch {
    pub changeset: Changeset,
    /// Highest counter covered per table (sent or not: a row inserted and
    /// deleted before it was ever sent has nothing to tell the server,
    /// unless an upload's answer was lost, see `moves::changes`).
    pub positions: BTreeMap<String, i64>,
    /// Highest counter of each of those tables when the batch was read. A
    /// key in the batch has no change between its position and this (the
    /// batch holds each key's latest change), so only changes after this are
    /// local writes the server's answer must not overwrite.
    pub read_tops: BTreeMap<String, i64>,
    /// Changes too large to send at all: set aside like refused ones.
    pub too_large: Vec<Rejection>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.positions.is_empty() && self.too_large.is_empty() && self.changeset.tables.is_empty()
    }

    /// A batch of changes sent ahead of the round's others (see
    /// [`vacating`]): it acknowledges no log entry.
    pub fn is_ahead(&self) -> bool {
        self.positions.is_empty() && !self.changeset.tables.is_empty()
    }

    /// The keys a batch sent ahead left (moved from, or deleted), by table
    /// index: the file holds another row at each, or will.
    pub fn left_keys(&self, state: &ScopeState) -> Result<HashSet<(usize, String)>> {
        let mut left = HashSet::new();
        if !self.is_ahead() {
            return Ok(left);
        }
        for table in &self.changeset.tables {
            let t = state.table_index(&table.name)?;
            for row in &table.rows {
                if let Some(key) = row.moved_from.as_ref().or(row.key.as_ref()) {
                    left.insert((t, rows::key_text(key)));
                }
            }
        }
        Ok(left)
    }
}

/// A batch as the file keeps it from just before it is sent until its
/// answer is recorded: after a lost answer the next round sends exactly
/// this again, so the server answers what its first attempt did (the file
/// learns the versions of what that attempt wrote) before anything newer
/// goes up. A newer change built on guesses of that answer could undo it:
/// a key moved A→B, lost, then moved on, went up as a delete of B.
#[derive(Serialize, Deserialize)]
pub struct InFlight {
    positions: BTreeMap<String, i64>,
    read_tops: BTreeMap<String, i64>,
    /// The changeset's text as sent.
    changeset: Box<RawValue>,
}

impl InFlight {
    pub fn new(batch: &Batch) -> Result<InFlight> {
        let text = serde_json::to_string(&batch.changeset).map_err(|e| LocalError::Invalid(e.to_string()))?;
        Ok(InFlight {
            positions: batch.positions.clone(),
            read_tops: batch.read_tops.clone(),
            changeset: RawValue::from_string(text).map_err(|e| LocalError::Invalid(e.to_string()))?,
        })
    }

    /// The changeset's text, byte for byte as sent the first time.
    pub fn text(&self) -> &str {
        self.changeset.get()
    }

    /// The batch again, for recording its answer; `None` when the file's
    /// schema no longer has one of its tables (the batch cannot be
    /// recorded against it, and goes as newer batches do).
    pub fn batch(&self, state: &ScopeState) -> Option<Batch> {
        let changeset: Changeset = serde_json::from_str(self.text()).ok()?;
        let known = |name: &String| state.table_index(name).is_ok();
        let fits = self.positions.keys().chain(self.read_tops.keys()).all(known) && changeset.tables.iter().all(|t| known(&t.name));
        fits.then(|| Batch { changeset, positions: self.positions.clone(), read_tops: self.read_tops.clone(), too_large: Vec::new() })
    }
}

/// Snapshots of each key's latest pending change taken during one upload
/// round, by table id, each with the log's top counter when it was taken.
/// One stays valid while the log gains no entry (a local write, or a write
/// of sync's own, moves the top) and no change was set aside; otherwise it
/// is taken again, which costs what reading the log directly costs. The
/// temporary tables go when the round ends, however it ends.
pub struct PendingSnapshots<'c> {
    conn: &'c Connection,
    taken: HashMap<i64, i64>,
}

impl<'c> PendingSnapshots<'c> {
    pub fn new(conn: &'c Connection) -> Self {
        PendingSnapshots { conn, taken: HashMap::new() }
    }

    /// Changes were set aside (their log entries went): take new snapshots.
    pub fn invalidate(&mut self) {
        for top in self.taken.values_mut() {
            *top = i64::MIN;
        }
    }

    /// Where this batch of table `id` reads its pending keys: a snapshot when
    /// more changes wait than one batch takes, the log itself otherwise.
    fn source(&mut self, table: &TableSchema, id: i64, acked: i64, wanted: u64) -> Result<PendingSource> {
        let conn = self.conn;
        let top = rows::top_seq(conn, id)?;
        if self.taken.get(&id) == Some(&top) {
            return Ok(PendingSource::Snapshot);
        }
        let entries: i64 = conn.prepare_cached(&local::entries_after(id))?.query_row([acked], |row| row.get(0))?;
        if entries as u64 <= wanted {
            if self.taken.remove(&id).is_some() {
                conn.execute_batch(&local::drop_pending_snapshot(id))?;
            }
            return Ok(PendingSource::Log);
        }
        let [drop, create, index] = local::pending_snapshot(table, id);
        conn.execute_batch(&drop)?;
        conn.execute(&create, [acked])?;
        conn.execute_batch(&index)?;
        self.taken.insert(id, top);
        Ok(PendingSource::Snapshot)
    }
}

impl Drop for PendingSnapshots<'_> {
    fn drop(&mut self) {
        for id in self.taken.keys() {
            // A table that is already gone (its creation rolled back with a
            // failed read) is no error.
            let _ = self.conn.execute_batch(&local::drop_pending_snapshot(*id));
        }
    }
}

/// Reads at most `max_rows` pending changes, oldest first, in one snapshot.
/// `snapshots` serve an upload of many batches; without, each read groups
/// the log itself.
/// `answer_lost`: an earlier upload's answer was lost, so a delete of a
/// row the file holds no server version of is sent (see `moves::changes`).
/// `ahead`: the keys, by table index, whose moves went ahead this upload
/// (see [`vacating`]).
pub fn select(
    conn: &Connection,
    state: &ScopeState,
    room: Room,
    answer_lost: bool,
    mut snapshots: Option<&mut PendingSnapshots<'_>>,
    ahead: &HashSet<(usize, String)>,
) -> Result<Batch> {
    let batch = read_batch(conn, state, room, answer_lost, snapshots.as_deref_mut(), true, ahead)?;
    // Deletes that wait for their children must not wait for a batch that
    // never comes: with nothing else to send, they go.
    if batch.is_empty() {
        return read_batch(conn, state, room, answer_lost, snapshots, false, ahead);
    }
    Ok(batch)
}

/// A batch of the changes that go ahead of the round's others (see
/// `moves::vacating`: what left a key another row's key change took), of
/// the first table that has any, or `None`. It acknowledges no log entry:
/// each change's entries go up again with the round's later batches, built
/// on the versions its answer gives (the key left, new to the server then,
/// pairs with the row that took it). Its answer writes no row at a key it
/// left (see [`Batch::left_keys`]): the file holds another row there.
/// `tried` holds the keys left by changes sent this upload, which are not
/// sent again: where one lost its conflict or was refused, the move onto
/// its key goes as a move all the same (see `moves::Lookup::ahead`).
pub fn vacating(conn: &Connection, state: &ScopeState, max_rows: u64, tried: &mut HashSet<(usize, String)>) -> Result<Option<Batch>> {
    let waiting = tables_waiting(conn, state)?;
    for (index, (table, t)) in state.schema.tables.iter().zip(&state.tables).enumerate() {
        if !waiting[index] || table.primary_key.is_empty() {
            continue;
        }
        let skip = keys_of_table(tried, index);
        let rows = moves::vacating(conn, table, t.id, t.acked_seq, max_rows.max(1), &skip)?;
        if rows.is_empty() {
            continue;
        }
        let positions = BTreeMap::new();
        let batch = Batch {
            changeset: Changeset {
                format: FORMAT,
                scope: state.scope.clone(),
                origin: state.client_id.clone(),
                tables: vec![TableChanges { name: table.name.clone(), columns: table.column_names(), rows }],
                watermark: Some(crate::error::to_json(&positions)?),
                has_more: true,
            },
            positions,
            read_tops: BTreeMap::from([(table.name.clone(), rows::top_seq(conn, t.id)?)]),
            too_large: Vec::new(),
        };
        tried.extend(batch.left_keys(state)?);
        return Ok(Some(batch));
    }
    Ok(None)
}

/// The keys of table `index` among keys held by table index (see
/// [`vacating`]).
fn keys_of_table(keys: &HashSet<(usize, String)>, index: usize) -> HashSet<String> {
    keys.iter().filter(|(i, _)| *i == index).map(|(_, key)| key.clone()).collect()
}

/// The top counter of each table's log: any write of the program's, or of
/// sync's own that logs, moves one.
pub fn log_tops(conn: &Connection, state: &ScopeState) -> Result<Vec<i64>> {
    state.tables.iter().map(|t| rows::top_seq(conn, t.id)).collect()
}

/// How much one upload batch may hold.
#[derive(Debug, Clone, Copy)]
pub struct Room {
    pub max_rows: u64,
    pub max_bytes: usize,
    /// Two rows at least, so that a delete and an insert of one key in two
    /// texts go together (see `read_batch`); off while batches are halved
    /// to find the one row the server takes in no request.
    pub pairs: bool,
}

/// Per table of the scope, whether its log holds a change it has not had
/// acknowledged: probed in few statements, so a round on a wide scope with
/// few changes reads few logs.
pub fn tables_waiting(conn: &Connection, state: &ScopeState) -> Result<Vec<bool>> {
    let mut waiting = vec![false; state.tables.len()];
    let tables: Vec<(&TableSchema, &meta::TableState)> = state.schema.tables.iter().zip(&state.tables).collect();
    for (chunk, tables) in tables.chunks(local::PROBES_PER_STATEMENT).enumerate() {
        let probed: Vec<(&TableSchema, i64)> = tables.iter().map(|(table, t)| (*table, t.id)).collect();
        let acked: Vec<i64> = tables.iter().map(|(_, t)| t.acked_seq).collect();
        let mut statement = conn.prepare_cached(&local::tables_with_entries(&probed))?;
        let mut rows = statement.query(rusqlite::params_from_iter(acked))?;
        while let Some(row) = rows.next()? {
            let t: i64 = row.get(0)?;
            if let Some(slot) = usize::try_from(t).ok().and_then(|t| waiting.get_mut(chunk * local::PROBES_PER_STATEMENT + t)) {
                *slot = true;
            }
        }
    }
    Ok(waiting)
}

fn read_batch(
    conn: &Connection,
    state: &ScopeState,
    room: Room,
    answer_lost: bool,
    mut snapshots: Option<&mut PendingSnapshots<'_>>,
    deletes_wait: bool,
    ahead: &HashSet<(usize, String)>,
) -> Result<Batch> {
    // Room for a delete and the insert after it, at least (see the pairs
    // below).
    let max_rows = match room.pairs {
        true => room.max_rows.max(2),
        false => room.max_rows,
    };
    let max_bytes = room.max_bytes;
    atomically(conn, |conn| {
        let mut tables = Vec::new();
        let mut positions = BTreeMap::new();
        let mut read_tops = BTreeMap::new();
        let mut remaining = max_rows;
        let mut bytes = 0usize;
        let mut too_large = Vec::new();
        let waiting = tables_waiting(conn, state)?;
        // An earlier table's deletes wait for a later batch.
        let mut deletes_held = false;
        for (index, (table, t)) in state.schema.tables.iter().zip(&state.tables).enumerate() {
            if remaining == 0 {
                break;
            }
            if !waiting[index] {
                continue;
            }
            // A batch that would open with deletes whose inserts all lie
            // beyond it reads on, up to twice its rows, for them (see the
            // pairs below).
            let mut limit = remaining;
            let ahead = keys_of_table(ahead, index);
            let (mut changes, seqs, mut top) = loop {
                let source = match snapshots.as_deref_mut() {
                    Some(snapshots) => snapshots.source(table, t.id, t.acked_seq, limit)?,
                    None => PendingSource::Log,
                };
                let (entries, top) = read_pending(conn, table, t, source, limit)?;
                let seqs: Vec<i64> = entries.iter().map(|e| e.seq).collect();
                let lookup = moves::Lookup { conn, table, id: t.id, snapshot: source == PendingSource::Snapshot, ahead: &ahead };
                let changes = moves::changes(entries, &lookup, answer_lost)?;
                let opens_apart = room.pairs
                    && limit == remaining
                    && tables.is_empty()
                    && seqs.len() as u64 >= limit
                    && changes.first().is_some_and(|(_, c)| c.op == Op::Delete);
                if opens_apart && insert_after(conn, table, t.id, top, max_rows)? {
                    limit = remaining * 2;
                    continue;
                }
                break (changes, seqs, top);
            };
            let mut read = seqs.len() as u64;
            if read == 0 {
                continue;
            }
            // Where this table's part of the batch ends early, if it does.
            let mut cut = None;
            // A delete waits for a batch that also holds every change of the
            // tables after this one (its children come later in the schema):
            // the server deletes children first within an upload, but a
            // child whose delete is still in the file would refuse it.
            // And the deletes of those later tables wait with it where a
            // batch of their own can hold them all: sent first, a child the
            // file's own `ON DELETE CASCADE` deleted with a parent whose
            // delete then loses its conflict would be gone from the server
            // while the parent stays (helper 92). A family larger than a
            // batch goes children first, as it must.
            if let Some(first) = changes.iter().position(|(_, c)| c.op == Op::Delete).filter(|_| deletes_wait) {
                if deletes_held {
                    cut = Some(first);
                } else if !later_changes_fit(conn, state, index, remaining.saturating_sub(read))? {
                    cut = Some(first);
                    deletes_held = later_changes_fit(conn, state, index, max_rows.saturating_sub(read))?;
                }
            }
            // A key change waits, as a delete does, for a batch that also
            // holds every change of the tables after this one (the rows
            // under it come later in the schema), where one can: sent in
            // an earlier batch, the server's cascade moves those rows
            // first, and an edit of one meets that as another writer's
            // change (helper 101). The batch ends before it.
            let search = &changes[..cut.unwrap_or(changes.len())];
            if let Some(first) = search.iter().position(|(_, c)| c.moved_from.is_some()).filter(|_| deletes_wait) {
                let before = seqs.iter().filter(|&&seq| seq < changes[first].0).count() as u64;
                let opens_batch = before == 0 && tables.is_empty();
                let fits = |room: u64| family_fits(conn, state, index, before, room);
                if !opens_batch && !fits(remaining.saturating_sub(before))? && fits(max_rows)? {
                    cut = Some(first);
                    remaining = 0;
                }
            }
            // Bytes bound the batch as rows do; a batch holds at least one row.
            for (i, (_, change)) in changes.iter().enumerate().take(cut.unwrap_or(usize::MAX)) {
                let size = change.approx_json_len();
                if size > MAX_ROW_BYTES {
                    let key = change.key.clone().unwrap_or_else(|| key_of(table, change));
                    let error = tandem_core::Error::RowTooLarge {
                        table: table.name.clone(),
                        key: serde_json::Value::Array(key.clone()).to_string(),
                        bytes: size,
                    };
                    too_large.push(Rejection {
                        table: table.name.clone(),
                        key,
                        seq: change.seq,
                        kind: RejectionKind::InvalidValue,
                        reason: error.to_string(),
                        row: None,
                        version: None,
                        moved_from: None,
                    });
                    cut = Some(i);
                    remaining = 0;
                    break;
                }
                // A delete alone at a batch's start takes the insert after
                // it along, over the bound: apart, they may not be a pair
                // (see below).
                let pair = room.pairs
                    && i == 1
                    && tables.is_empty()
                    && changes[0].1.op == Op::Delete
                    && change.op == Op::Upsert
                    && change.base.is_none();
                if bytes + size > max_bytes && (bytes > 0 || i > 0) && !pair {
                    cut = Some(i);
                    remaining = 0;
                    break;
                }
                bytes += size;
            }
            // A delete and an insert of one key in two texts (`'Sku-1'` and
            // `'SKU-1'` under a case-blind collation) are one change of
            // its text only within one batch: alone, the delete would take
            // the server's rows under the key with it. So where this
            // table's part ends while an insert of it follows, it ends
            // before its first delete, or the batch ends before the table
            // when that delete comes first. A batch that opens with it has
            // read on (above) and ends where each delete has had an insert
            // after it, if anywhere; such a pair further apart goes up in
            // two.
            let limited = cut.is_some() || read >= limit;
            let end_at = cut.unwrap_or(changes.len());
            if let Some(first) = changes[..end_at].iter().position(|(_, c)| c.op == Op::Delete).filter(|_| room.pairs && limited) {
                let end = match cut {
                    Some(cut) => changes[cut].0 - 1,
                    None => top,
                };
                let ends = match first {
                    0 if tables.is_empty() => Some(closed_prefix(&changes[..end_at])).filter(|&closed| closed > 0),
                    first => Some(first),
                };
                if let Some(ends) = ends.filter(|&ends| ends < end_at) {
                    if insert_after(conn, table, t.id, end, max_rows)? {
                        cut = Some(ends);
                        remaining = 0;
                    }
                }
            }
            if let Some(cut) = cut {
                let before = changes[cut].0;
                changes.truncate(cut);
                read = seqs.iter().filter(|&&seq| seq < before).count() as u64;
                top = before - 1;
                if read == 0 {
                    continue;
                }
            }
            let changes: Vec<_> = changes.into_iter().map(|(_, change)| change).collect();
            remaining = remaining.saturating_sub(read);
            positions.insert(table.name.clone(), top);
            read_tops.insert(table.name.clone(), rows::top_seq(conn, t.id)?);
            if !changes.is_empty() {
                tables.push(TableChanges { name: table.name.clone(), columns: table.column_names(), rows: changes });
            }
        }
        let watermark = crate::error::to_json(&positions)?;
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
            too_large,
        })
    })
}

/// Table `t`'s pending changes after its acknowledged counter, oldest
/// first, at most `limit` keys, and the highest counter read.
fn read_pending(
    conn: &Connection,
    table: &TableSchema,
    t: &meta::TableState,
    source: PendingSource,
    limit: u64,
) -> Result<(Vec<moves::Pending>, i64)> {
    let key_count = table.primary_key.len();
    let mut statement = conn.prepare_cached(&local::pending_rows(table, t.id, source))?;
    let mut rows = statement.query(rusqlite::params![t.acked_seq, limit as i64])?;
    let mut entries = Vec::new();
    let mut top = 0;
    while let Some(row) = rows.next()? {
        let seq: i64 = row.get(key_count)?;
        top = top.max(seq);
        let exists: bool = row.get(key_count + 2)?;
        let values = match exists {
            true => Some(
                (0..table.columns.len())
                    .map(|i| Ok(changeset_value(table, i, from_sql(row.get_ref(key_count + 3 + i)?))))
                    .collect::<rusqlite::Result<Vec<_>>>()?,
            ),
            false => None,
        };
        let moved_to = rows::read_key_at(table, row, key_count + 3 + table.columns.len())?;
        entries.push(moves::Pending {
            key: rows::read_key(table, row)?,
            seq,
            base: row.get(key_count + 1)?,
            values,
            moved_to: moved_to.iter().all(|v| !v.is_null()).then_some(moved_to),
        });
    }
    Ok((entries, top))
}

/// How many of `changes` (oldest first) form the longest start in which
/// each delete has had an insert (a key new to the server) after it: where
/// a batch may end without parting a delete from the insert that may
/// give its key another text.
fn closed_prefix(changes: &[(i64, tandem_core::changeset::RowChange)]) -> usize {
    let mut open = 0usize;
    let mut closed = 0;
    for (i, (_, change)) in changes.iter().enumerate() {
        match change.op {
            Op::Delete => open += 1,
            Op::Upsert if change.base.is_none() => open = open.saturating_sub(1),
            Op::Upsert => {}
        }
        if open == 0 {
            closed = i + 1;
        }
    }
    closed
}

/// Whether an insert of table `id` is among its `window` log entries after
/// `end`.
fn insert_after(conn: &Connection, table: &TableSchema, id: i64, end: i64, window: u64) -> Result<bool> {
    Ok(conn.prepare_cached(&local::insert_after(table, id))?.query_row([end, window as i64], |r| r.get(0))?)
}

/// The key of an upsert, from its values.
pub fn key_of(table: &TableSchema, change: &tandem_core::changeset::RowChange) -> Vec<serde_json::Value> {
    let values = change.values.as_deref().unwrap_or_default();
    table.key_indexes().iter().filter_map(|&k| values.get(k).cloned()).collect()
}

/// Whether the pending changes of every table after `index` fit in `room`
/// (log entries counted: at least as many as keys).
fn later_changes_fit(conn: &Connection, state: &ScopeState, index: usize, room: u64) -> Result<bool> {
    let mut pending = 0u64;
    for (table, t) in state.schema.tables.iter().zip(&state.tables).skip(index + 1) {
        pending += pending_entries(conn, table, t)?;
        if pending > room {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Whether table `index`'s pending changes after its first `before`,
/// with every change of the tables after it, fit `room` rows.
fn family_fits(conn: &Connection, state: &ScopeState, index: usize, before: u64, room: u64) -> Result<bool> {
    let family = pending_entries(conn, &state.schema.tables[index], &state.tables[index])?.saturating_sub(before);
    Ok(family <= room && later_changes_fit(conn, state, index, room - family)?)
}

/// How many log entries of table `t` wait for the server's acknowledgement.
fn pending_entries(conn: &Connection, table: &TableSchema, t: &meta::TableState) -> Result<u64> {
    let entries: i64 = conn.prepare_cached(&local::changes_after(table, t.id))?.query_row([t.acked_seq], |row| row.get(0))?;
    Ok(entries.max(0) as u64)
}

/// A local value as an upload sends it. A value the file holds in a form
/// its column cannot send goes up as the reason: the server refuses the
/// row with it and sends its own row back.
pub fn changeset_value(table: &TableSchema, column: usize, value: tandem_core::types::LocalValue) -> serde_json::Value {
    let c = &table.columns[column];
    local_to_json(c.ty, &value).unwrap_or_else(|reason| serde_json::json!({"invalid": format!("column {} {reason}", c.name)}))
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
    let room = Room { max_rows: options.max_rows(), max_bytes: options.max_bytes(), pairs: true };
    let batch = select(conn, &state, room, state.upload_id.is_some(), None, &HashSet::new())?;
    crate::error::to_json(&batch.changeset)
}
