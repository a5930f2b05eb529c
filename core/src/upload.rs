//! One uploaded row on its way through the server's apply, and what is
//! pure about that way: deciding what the row does, merging a resolver's
//! row, and building the answer the uploader records.
//!
//! The apply (`extension/src/apply/`) moves every row of an upload through
//! the same steps: checked ([`crate::validate`]), staged, classified
//! against what the server holds ([`ServerState`]), decided
//! ([`UploadRow::decide`], from [`crate::conflict::classify`]), settled when
//! it conflicts, written, and reported ([`build_result`]). Everything a
//! step learns about a row is kept on its [`UploadRow`].

use std::collections::HashSet;

use serde_json::{Map, Value};

use crate::apply_result::{AppliedRow, ApplyResult, ConflictReport, CurrentRow, MovedFrom};
use crate::changeset::Op;
use crate::conflict::{classify, ConflictKind, Decision, ServerRow, Verdict};
use crate::error::{Rejection, RejectionKind};
use crate::schema::TableSchema;
use crate::validate::CheckedRow;

/// What the server holds for an uploaded row's key, as classification
/// found it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServerState {
    /// Version of the row's last change (tracking), `None` when untracked.
    pub version: Option<String>,
    /// The row exists in the user table.
    pub exists: bool,
    /// The row is exactly as the upload this one retries left it (its
    /// answer was lost), so the replica's later edit builds on it.
    pub last_writer_is_client: bool,
    /// The uploaded values equal the server's row (an upsert of a row that
    /// exists): nothing to write, whatever the versions say.
    pub same_values: bool,
    /// The row left the client's partition (deleted, or moved to another
    /// tenant) by a change the uploader had not received when it sent the
    /// upload (apply option `seen`).
    pub deleted_unseen: bool,
    /// The row's `xmin` when classified: a write compares it, so a row
    /// changed since is classified again instead of being overwritten.
    pub xmin: Option<String>,
    /// The server's row is in the client's partition (true when absent).
    pub in_partition: bool,
    /// The uploaded row would be in the client's partition.
    pub new_in_partition: bool,
    /// For a key change: no row outside the client's partition holds the
    /// new key (true for other rows).
    pub new_key_free: bool,
}

impl ServerState {
    fn row(&self) -> ServerRow<'_> {
        ServerRow {
            version: self.version.as_deref(),
            exists: self.exists,
            last_writer_is_client: self.last_writer_is_client,
            deleted_unseen: self.deleted_unseen,
        }
    }
}

/// How a conflict was settled.
#[derive(Clone, Debug, PartialEq)]
pub struct Settlement {
    pub decision: Decision,
    /// The resolver's row, for [`Decision::Merged`].
    pub merged: Option<Map<String, Value>>,
    /// Why the change could not be written (constraint violations).
    pub reason: Option<String>,
}

/// What an uploaded row does, as the apply learns it.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Not classified yet.
    Undecided,
    /// Written as sent.
    Apply,
    /// Applied by an earlier upload of the same change (same replica, same
    /// or older `seq`): nothing to write, the uploader takes the server's row.
    AlreadyApplied,
    /// Nothing to write: both sides agree already.
    Converged,
    /// The server's row changed since the client's base; `settlement` says
    /// how it ended once the policy has spoken.
    Conflict { kind: ConflictKind, settlement: Option<Settlement> },
    /// Not applied, and the whole upload with it: the uploader sets the row
    /// aside and sends the rest again.
    Refused { kind: RejectionKind, reason: String },
}

/// A server row as the uploader should see it: its version and columns
/// (`row` is `None` when the row is gone).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RowState {
    pub version: Option<String>,
    pub row: Option<Map<String, Value>>,
}

/// One uploaded row and everything the apply learned about it.
#[derive(Debug)]
pub struct UploadRow<V> {
    /// The change as sent, checked and converted for the server.
    pub change: CheckedRow<V>,
    pub server: ServerState,
    pub outcome: Outcome,
    /// The row was written (as sent, or as the winner of its conflict).
    pub written: bool,
    /// The row as the server stores it after the apply, when that differs
    /// from what was sent (a default, a cast, a trigger): the uploader takes it.
    pub stored: Option<Map<String, Value>>,
    /// Written, but not at its key in the uploader's partition after the
    /// apply: a server trigger handed it to another tenant (or moved its
    /// parent), stored it at a key of its own, or removed it. The uploader
    /// drops its copy and is told nothing of the row; one still its own
    /// comes with the pull.
    pub answered_gone: bool,
    /// The server's row before the apply (conflicts only).
    pub before: Option<RowState>,
    /// The server's row after the apply, for rows not written as sent.
    pub after: Option<RowState>,
    /// A key change not written: the server's row at the key it moved
    /// from, after the apply (the uploader restores it).
    pub origin_after: Option<RowState>,
    /// A change an earlier upload of it settled as a conflict, whose answer
    /// was lost: reported again, so the uploader's own log gets it.
    pub logged: Option<LoggedConflict>,
    /// The key of a delete of the same upload this row took in: the
    /// device deleted a row and inserted it again under another text of
    /// its key, equal as PostgreSQL compares it (`'Sku-1'`, then
    /// `'SKU-1'`), which the server applies as one change of the key's
    /// text. Where the row is written, the delete is answered as done.
    pub absorbed_delete: Option<Vec<Value>>,
    /// The row's parent key (outside its own key) is the new key of a
    /// parent's key change this upload wrote, which the server's own
    /// cascade carried to the row: that change of the row is the upload's
    /// own, not another writer's, and the row's own change goes on over it
    /// (helper 89).
    pub follows_own_move: bool,
}

/// A conflict as `tandem.conflicts` keeps it, for a retried change.
#[derive(Clone, Debug, PartialEq)]
pub struct LoggedConflict {
    pub kind: ConflictKind,
    pub decision: Decision,
    pub server_row: Option<Map<String, Value>>,
    pub reason: Option<String>,
}

impl<V> UploadRow<V> {
    pub fn new(change: CheckedRow<V>) -> Self {
        UploadRow {
            change,
            server: ServerState::default(),
            outcome: Outcome::Undecided,
            written: false,
            stored: None,
            answered_gone: false,
            before: None,
            after: None,
            origin_after: None,
            logged: None,
            absorbed_delete: None,
            follows_own_move: false,
        }
    }

    /// Whether this row may take in `delete` (see [`absorb`](Self::absorb)):
    /// only an insert (no base, no key change) takes in a delete, once.
    pub fn takes_in(&self, delete: &UploadRow<V>) -> bool {
        let fresh_insert = self.change.op == Op::Upsert && self.change.base.is_none() && self.change.moved_from.is_none();
        fresh_insert && delete.change.op == Op::Delete && self.absorbed_delete.is_none()
    }

    /// Takes in `delete`, an earlier or later row of the same upload whose
    /// key PostgreSQL holds equal to this insert's (see
    /// [`absorbed_delete`](Self::absorbed_delete)), when [`takes_in`](Self::takes_in)
    /// says so: this row becomes the change of the key's text, from the
    /// deleted key and on its base.
    pub fn absorb(&mut self, delete: UploadRow<V>) {
        let CheckedRow { key, values, base, .. } = delete.change;
        self.absorbed_delete = Some(key.clone());
        self.change.base = base;
        self.change.moved_from = Some(crate::validate::MovedKey { key, values });
    }

    /// Decides what this row does: nothing when the upload it retries
    /// applied it already (`already_applied`) or when the server holds these
    /// values already; otherwise what the versions say.
    pub fn decide(&mut self, already_applied: bool) {
        if already_applied {
            self.outcome = Outcome::AlreadyApplied;
            return;
        }
        if self.change.op == Op::Upsert && self.server.exists && self.server.same_values {
            self.outcome = Outcome::Converged;
            return;
        }
        self.outcome = match classify(self.change.op, self.change.base.as_deref(), &self.server.row()) {
            Verdict::Apply => Outcome::Apply,
            Verdict::Converged => Outcome::Converged,
            Verdict::Conflict(kind) => Outcome::Conflict { kind, settlement: None },
        };
    }

    /// Before [`Self::decide`], for a change of a key the lost attempt this
    /// upload retries wrote (`lost_attempt`: that attempt's transaction):
    /// when the server's row was last changed by that transaction, it is
    /// the replica's own write even where the server's code stored it
    /// other than sent (a trigger's stamp: no echo mark), so the device's
    /// later change builds on it instead of meeting it as a conflict.
    pub fn own_if_written_by(&mut self, lost_attempt: Option<&str>) {
        if lost_attempt.is_some() && self.server.exists && self.server.version.as_deref() == lost_attempt {
            self.server.last_writer_is_client = true;
        }
    }

    /// After the apply, for a change an earlier attempt of this upload
    /// applied (`lost_attempt`: that attempt's transaction): whether the
    /// server's row is still as that attempt left it (an upsert's row, a
    /// delete's tombstone, last written by it).
    fn still_as_written_by(&self, lost_attempt: Option<&str>) -> bool {
        let Some(after) = &self.after else { return false };
        lost_attempt.is_some()
            && after.version.as_deref() == lost_attempt
            && after.row.is_some() == (self.change.op == Op::Upsert)
            && self.logged.is_none()
    }

    /// After [`Self::decide`], for a change of a key that an earlier
    /// attempt of this upload wrote (its answer was lost) where the server
    /// keeps no trace of that key, neither row nor tombstone: a server
    /// trigger stored that write at a key of its own, which the device never
    /// learned. Written at the device's key, the change would store the row
    /// a second time (or delete nothing), so it is settled as the server's
    /// and logged; the server's row comes with the pull.
    pub fn settle_if_written_elsewhere(&mut self, earlier_attempt_wrote_key: bool) {
        let untraced = !self.server.exists && self.server.version.is_none() && self.change.moved_from.is_none();
        if earlier_attempt_wrote_key && untraced && self.outcome != Outcome::AlreadyApplied {
            self.violates(
                "an earlier upload of this key, whose answer was lost, left no row at it on the server (a trigger stored \
                 it at a key of its own, or declined it); the server's rows come with the pull"
                    .into(),
            );
        }
    }

    /// A conflict not settled yet.
    pub fn unsettled(&self) -> bool {
        matches!(self.outcome, Outcome::Conflict { settlement: None, .. })
    }

    /// The write phase writes this row among the rows of `op`: it applies
    /// as sent, or the client won its conflict.
    pub fn to_write(&self, op: Op) -> bool {
        self.change.op == op
            && match &self.outcome {
                Outcome::Apply => true,
                Outcome::Conflict { settlement: Some(s), .. } => s.decision == Decision::ClientWins,
                _ => false,
            }
    }

    /// The row could not be written for a reason of the server's (a
    /// constraint, a trigger): settled as the server's, with that reason.
    pub fn violates(&mut self, reason: String) {
        self.outcome = Outcome::Conflict {
            kind: ConflictKind::ConstraintViolated,
            settlement: Some(Settlement { decision: Decision::ServerWins, merged: None, reason: Some(reason) }),
        };
    }

    pub fn is_constraint_violation(&self) -> bool {
        matches!(self.outcome, Outcome::Conflict { kind: ConflictKind::ConstraintViolated, .. })
    }

    /// Whether the server's row `stored` is exactly what this upsert sent:
    /// every synced column sent (`sent` holds the positions of the upload's
    /// columns), each in the same changeset form. A row the server completed
    /// or changed is not, and goes back to the uploader.
    pub fn sent_exactly(&self, table: &TableSchema, sent: &[usize], stored: &Map<String, Value>) -> bool {
        sent.len() == table.columns.len()
            && sent.iter().zip(&self.change.raw).all(|(&c, value)| stored.get(&table.columns[c].name) == Some(value))
    }

    /// The uploaded row as a JSON object of `columns` (the names of the
    /// upload's columns, in its order); `None` for a delete.
    pub fn client_row(&self, columns: &[String]) -> Option<Map<String, Value>> {
        (self.change.op == Op::Upsert).then(|| columns.iter().cloned().zip(self.change.raw.iter().cloned()).collect())
    }

    /// The refusal of this row, for the uploader to set it aside.
    pub fn rejection(&self, table: &str) -> Option<Rejection> {
        let Outcome::Refused { kind, reason } = &self.outcome else { return None };
        Some(Rejection {
            table: table.to_string(),
            key: self.change.key.clone(),
            seq: self.change.seq,
            kind: *kind,
            reason: reason.clone(),
            row: None,
            version: None,
            moved_from: self.change.moved_from.as_ref().map(|m| MovedFrom { key: m.key.clone(), row: None, version: None }),
        })
    }

    /// A key change (an upsert that moved the row from another key).
    pub fn is_move(&self) -> bool {
        self.change.moved_from.is_some()
    }

    /// For a key change not written, the row at its old key as the
    /// uploader should restore it.
    fn moved_from_after(&self) -> Option<MovedFrom> {
        let moved = self.change.moved_from.as_ref()?;
        let origin = self.origin_after.clone().unwrap_or_default();
        Some(MovedFrom { key: moved.key.clone(), row: origin.row, version: origin.version })
    }
}

/// A change as an upload applied it, to know it again in a retry of that
/// upload: the table's tracking id, the key, the change counter and a hash
/// of what was sent.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct AppliedChange(pub i64, pub String, pub i64, pub String);

impl AppliedChange {
    /// The change `row` of table `table_id`, if it carries a counter.
    pub fn of<V>(table_id: i64, row: &CheckedRow<V>) -> Option<Self> {
        let seq = row.seq?;
        Some(AppliedChange(table_id, Value::Array(row.key.clone()).to_string(), seq, change_hash(row)))
    }

    /// Whether `applied` (what the upload being retried carried) holds
    /// change `row` of table `table_id`; nothing is hashed when it is empty,
    /// as it is for every upload that retries none.
    pub fn carried<V>(applied: &HashSet<AppliedChange>, table_id: i64, row: &CheckedRow<V>) -> bool {
        !applied.is_empty() && Self::of(table_id, row).is_some_and(|c| applied.contains(&c))
    }
}

/// A stable 64-bit FNV-1a hash of a change's op and values, as hex: a
/// retry that sends other values under the same counter is a new change.
fn change_hash<V>(row: &CheckedRow<V>) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let from = row.moved_from.as_ref().map(|m| Value::Array(m.key.clone()).to_string()).unwrap_or_default();
    let text = format!("{:?}{}{from}", row.op, Value::Array(row.raw.clone()));
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// The row a resolver's answer keeps: the server's row (the client's, when
/// the server's is gone) with the resolver's columns over it, keyed like
/// the conflicting row. Errors say what the resolver did wrong.
pub fn merged_row(
    table: &TableSchema,
    key: &[Value],
    server_row: Option<&Map<String, Value>>,
    client_row: Option<Map<String, Value>>,
    merged: &Map<String, Value>,
) -> Result<Map<String, Value>, String> {
    if let Some(unknown) = merged.keys().find(|k| table.column_index(k).is_none()) {
        return Err(format!("returned unknown column \"{unknown}\""));
    }
    for (name, value) in table.primary_key.iter().zip(key) {
        if merged.get(name).is_some_and(|v| v != value) {
            return Err(format!("returned a row whose {name} differs from the conflicting row's key"));
        }
    }
    let mut row = server_row.cloned().or(client_row).unwrap_or_default();
    row.extend(merged.clone());
    for (name, value) in table.primary_key.iter().zip(key) {
        row.insert(name.clone(), value.clone());
    }
    Ok(row)
}

/// The uploaded rows of one table, for [`build_result`].
pub struct ReportedTable<'a, V> {
    pub name: &'a str,
    /// Names of the upload's columns, in its order.
    pub columns: &'a [String],
    pub rows: &'a [UploadRow<V>],
}

/// The answer to an upload: the version of every row written as sent, how
/// each conflict ended, and the server's rows the uploader must take.
/// `version` is the apply's own transaction; `lost_attempt`, the
/// transaction of the earlier attempt this upload retries, if any.
pub fn build_result<'a, V: 'a>(
    tables: impl IntoIterator<Item = ReportedTable<'a, V>>,
    version: &str,
    lost_attempt: Option<&str>,
) -> ApplyResult {
    let mut result = ApplyResult { version: Some(version.to_string()), ..ApplyResult::default() };
    for table in tables {
        for row in table.rows {
            let key = row.change.key.clone();
            let after = row.after.clone().unwrap_or_default();
            match &row.outcome {
                Outcome::Apply if row.written && row.answered_gone => {
                    result.applied += 1;
                    result.current.push(CurrentRow { table: table.name.to_string(), key, row: None, version: None });
                    answer_absorbed(&mut result, table.name, row, version);
                }
                Outcome::Apply if row.written => {
                    result.applied += 1;
                    result.versions.push(AppliedRow {
                        table: table.name.to_string(),
                        key,
                        version: version.to_string(),
                        row: row.stored.clone(),
                        respelled: None,
                    });
                    answer_absorbed(&mut result, table.name, row, version);
                }
                Outcome::Apply | Outcome::Undecided | Outcome::Refused { .. } => {}
                Outcome::AlreadyApplied if row.logged.is_some() => {
                    if let Some(logged) = &row.logged {
                        result.conflicts.push(ConflictReport {
                            table: table.name.to_string(),
                            key,
                            kind: logged.kind,
                            decision: logged.decision,
                            server_row: logged.server_row.clone(),
                            client_row: row.client_row(table.columns),
                            row: after.row,
                            version: after.version,
                            reason: logged.reason.clone(),
                            moved_from: None,
                        })
                    }
                }
                // Still as the lost attempt left it: answered as that
                // attempt's answer was, with its version, so the uploader
                // builds a change it made since on that write (a key it
                // moved on from there goes up as a move, not a delete).
                Outcome::AlreadyApplied if row.still_as_written_by(lost_attempt) => {
                    let written = after.version.unwrap_or_default();
                    answer_absorbed(&mut result, table.name, row, &written);
                    result.versions.push(AppliedRow {
                        table: table.name.to_string(),
                        key,
                        version: written,
                        row: after.row,
                        respelled: None,
                    });
                }
                Outcome::AlreadyApplied | Outcome::Converged => {
                    result.current.push(CurrentRow { table: table.name.to_string(), key, row: after.row, version: after.version })
                }
                Outcome::Conflict { kind, settlement: Some(settlement) } => {
                    if row.written && settlement.decision != Decision::ServerWins {
                        answer_absorbed(&mut result, table.name, row, version);
                    }
                    // A change the server refused was not read before (a
                    // delete carries no row): the row it kept is the one
                    // there now.
                    let before = row.before.as_ref().and_then(|b| b.row.clone());
                    let server_row = match kind {
                        ConflictKind::ConstraintViolated => before.or_else(|| after.row.clone()),
                        _ => before,
                    };
                    result.conflicts.push(ConflictReport {
                        table: table.name.to_string(),
                        key,
                        kind: *kind,
                        decision: settlement.decision,
                        server_row,
                        client_row: row.client_row(table.columns),
                        row: after.row,
                        version: after.version,
                        reason: settlement.reason.clone(),
                        moved_from: if settlement.decision == Decision::ServerWins { row.moved_from_after() } else { None },
                    })
                }
                Outcome::Conflict { settlement: None, .. } => {}
            }
        }
    }
    result
}

/// The delete a written row took in (see [`UploadRow::absorbed_delete`])
/// is answered as applied: the uploader forgets the old key's copy.
fn answer_absorbed<V>(result: &mut ApplyResult, table: &str, row: &UploadRow<V>, version: &str) {
    if let Some(key) = &row.absorbed_delete {
        result.applied += 1;
        result.versions.push(AppliedRow {
            table: table.to_string(),
            key: key.clone(),
            version: version.to_string(),
            row: None,
            respelled: Some(true),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::Column;
    use crate::setup::Direction;
    use crate::types::LogicalType;
    use serde_json::json;

    fn change(op: Op, base: Option<&str>, seq: Option<i64>) -> CheckedRow<()> {
        CheckedRow {
            op,
            key: vec![json!(1)],
            values: vec![],
            raw: vec![json!(1), json!("a")],
            base: base.map(String::from),
            version: None,
            seq,
            moved_from: None,
            respelled: None,
        }
    }

    fn live(version: &str) -> ServerState {
        ServerState { version: Some(version.into()), exists: true, in_partition: true, new_in_partition: true, ..ServerState::default() }
    }

    #[test]
    fn a_row_is_decided_by_versions_and_by_what_its_replica_applied() {
        let mut row = UploadRow::new(change(Op::Upsert, Some("10"), Some(4)));
        row.server = live("10");
        row.decide(true);
        assert_eq!(row.outcome, Outcome::AlreadyApplied, "applied by the upload this one retries");
        row.decide(false);
        assert_eq!(row.outcome, Outcome::Apply);
        row.server = ServerState { same_values: true, ..live("12") };
        row.decide(false);
        assert_eq!(row.outcome, Outcome::Converged, "the server holds these values already");
        row.server = live("12");
        row.decide(false);
        assert_eq!(row.outcome, Outcome::Conflict { kind: ConflictKind::BothUpdated, settlement: None });
        assert!(row.unsettled() && !row.to_write(Op::Upsert));
        row.outcome = Outcome::Conflict {
            kind: ConflictKind::BothUpdated,
            settlement: Some(Settlement { decision: Decision::ClientWins, merged: None, reason: None }),
        };
        assert!(row.to_write(Op::Upsert) && !row.to_write(Op::Delete));
        row.violates("duplicate key".into());
        assert!(row.is_constraint_violation() && !row.to_write(Op::Upsert));
    }

    #[test]
    fn an_insert_meets_a_delete_its_uploader_never_received() {
        let mut row = UploadRow::new(change(Op::Upsert, None, Some(1)));
        row.server = ServerState { version: Some("22".into()), exists: false, deleted_unseen: true, ..ServerState::default() };
        row.decide(false);
        assert_eq!(row.outcome, Outcome::Conflict { kind: ConflictKind::LocalUpdatedServerDeleted, settlement: None });
        row.server.deleted_unseen = false;
        row.decide(false);
        assert_eq!(row.outcome, Outcome::Apply, "a delete it received: a new row under the key");
    }

    #[test]
    fn a_change_is_known_again_by_its_counter_and_its_values() {
        let sent = change(Op::Upsert, None, Some(7));
        let again = change(Op::Upsert, None, Some(7));
        assert_eq!(AppliedChange::of(3, &sent), AppliedChange::of(3, &again));
        let mut other = change(Op::Upsert, None, Some(7));
        other.raw[1] = json!("b");
        assert_ne!(AppliedChange::of(3, &sent), AppliedChange::of(3, &other), "same counter, other values: a new change");
        assert_eq!(AppliedChange::of(3, &change(Op::Upsert, None, None)), None);
        let carried: HashSet<AppliedChange> = AppliedChange::of(3, &sent).into_iter().collect();
        assert!(AppliedChange::carried(&carried, 3, &again));
        assert!(!AppliedChange::carried(&carried, 3, &other) && !AppliedChange::carried(&carried, 4, &again));
        assert!(!AppliedChange::carried(&HashSet::new(), 3, &sent));
    }

    #[test]
    fn a_resolver_row_keeps_the_key_and_fills_in_from_the_server() {
        let col = |name: &str| Column {
            name: name.into(),
            ty: LogicalType::Text,
            pg_type: "text".into(),
            nullable: true,
            default: None,
            server_default: false,
            fill: None,
            since: None,
        };
        let table = TableSchema {
            name: "public.t".into(),
            columns: vec![col("id"), col("a"), col("b")],
            primary_key: vec!["id".into()],
            filter: None,
            direction: Direction::Bidirectional,
            policy: None,
            partitioned: false,
            refiltered: None,
            renamed_from: Vec::new(),
            added: None,
        };
        let server: Map<String, Value> = json!({"id": "1", "a": "s", "b": "s"}).as_object().cloned().unwrap();
        let merged: Map<String, Value> = json!({"b": "m"}).as_object().cloned().unwrap();
        let row = merged_row(&table, &[json!("1")], Some(&server), None, &merged).unwrap();
        assert_eq!(Value::Object(row), json!({"id": "1", "a": "s", "b": "m"}));
        let bad: Map<String, Value> = json!({"id": "2"}).as_object().cloned().unwrap();
        assert!(merged_row(&table, &[json!("1")], Some(&server), None, &bad).unwrap_err().contains("differs"));
        let unknown: Map<String, Value> = json!({"c": 1}).as_object().cloned().unwrap();
        assert!(merged_row(&table, &[json!("1")], None, None, &unknown).unwrap_err().contains("unknown column"));
    }

    #[test]
    fn a_retried_change_still_as_its_lost_attempt_left_it_is_answered_with_that_attempts_version() {
        let columns = vec!["id".to_string(), "name".to_string()];
        let stored = json!({"id": 1, "name": "a"}).as_object().cloned();
        let retried = |op: Op, version: &str, row: Option<Map<String, Value>>| {
            let mut retried = UploadRow::new(change(op, Some("3"), Some(1)));
            retried.outcome = Outcome::AlreadyApplied;
            retried.after = Some(RowState { version: Some(version.into()), row });
            retried
        };
        // Left by the lost attempt (700): its upsert, its delete's tombstone.
        // Changed since by another writer (800): the row as it is now.
        let rows = [retried(Op::Upsert, "700", stored.clone()), retried(Op::Delete, "700", None), retried(Op::Upsert, "800", stored)];
        let result = build_result([ReportedTable { name: "public.t", columns: &columns, rows: &rows }], "900", Some("700"));
        let versions: Vec<&str> = result.versions.iter().map(|v| v.version.as_str()).collect();
        assert_eq!(versions, ["700", "700"]);
        assert_eq!(result.current.len(), 1);
        assert_eq!(result.current[0].version.as_deref(), Some("800"));
        assert_eq!(result.applied, 0, "nothing written by the retry");
        // Not a retry: every acknowledged row is told as it is now.
        let result = build_result([ReportedTable { name: "public.t", columns: &columns, rows: &rows }], "900", None);
        assert_eq!((result.versions.len(), result.current.len()), (0, 3));
    }

    #[test]
    fn the_result_reports_each_row_by_its_outcome() {
        let columns = vec!["id".to_string(), "name".to_string()];
        let mut applied = UploadRow::new(change(Op::Upsert, None, Some(1)));
        applied.outcome = Outcome::Apply;
        applied.written = true;
        let mut lost = UploadRow::new(change(Op::Upsert, Some("3"), Some(2)));
        lost.outcome = Outcome::Conflict {
            kind: ConflictKind::BothUpdated,
            settlement: Some(Settlement { decision: Decision::ServerWins, merged: None, reason: None }),
        };
        lost.before = Some(RowState { version: Some("5".into()), row: json!({"id": 1, "name": "s"}).as_object().cloned() });
        lost.after = lost.before.clone();
        let mut again = UploadRow::new(change(Op::Upsert, Some("3"), Some(1)));
        again.outcome = Outcome::AlreadyApplied;
        let rows = [applied, lost, again];
        let result = build_result([ReportedTable { name: "public.t", columns: &columns, rows: &rows }], "900", None);
        assert_eq!(result.applied, 1);
        assert_eq!(result.versions[0].version, "900");
        assert_eq!(result.conflicts.len(), 1);
        assert_eq!(result.conflicts[0].client_row, json!({"id": 1, "name": "a"}).as_object().cloned());
        assert_eq!(result.conflicts[0].version.as_deref(), Some("5"));
        assert_eq!(result.current.len(), 1);
    }

    #[test]
    fn an_insert_that_took_in_a_delete_answers_for_both_keys_only_when_written() {
        let columns = vec!["id".to_string(), "name".to_string()];
        let mut delete = UploadRow::new(change(Op::Delete, Some("4"), Some(1)));
        delete.change.key = vec![json!("ab")];
        let insert = UploadRow::new(change(Op::Upsert, None, Some(2)));
        assert!(!delete.takes_in(&insert), "a delete takes in nothing");
        assert!(insert.takes_in(&delete));
        let mut insert = insert;
        insert.absorb(delete);
        assert_eq!(insert.change.base.as_deref(), Some("4"), "on the delete's base");
        assert_eq!(insert.change.moved_from.as_ref().map(|m| m.key.clone()), Some(vec![json!("ab")]));
        let again = UploadRow::new(change(Op::Delete, None, Some(3)));
        assert!(!insert.takes_in(&again), "one delete at most, and no key change");

        insert.outcome = Outcome::Apply;
        insert.written = true;
        let rows = [insert];
        let result = build_result([ReportedTable { name: "public.t", columns: &columns, rows: &rows }], "900", None);
        assert_eq!(result.applied, 2);
        let keys: Vec<(Value, Option<bool>)> = result.versions.iter().map(|v| (Value::Array(v.key.clone()), v.respelled)).collect();
        assert_eq!(keys, [(json!([1]), None), (json!(["ab"]), Some(true))]);

        let [mut lost] = rows;
        lost.written = false;
        lost.outcome = Outcome::Conflict {
            kind: ConflictKind::BothUpdated,
            settlement: Some(Settlement { decision: Decision::ServerWins, merged: None, reason: None }),
        };
        let rows = [lost];
        let result = build_result([ReportedTable { name: "public.t", columns: &columns, rows: &rows }], "900", None);
        assert!(result.versions.is_empty(), "the delete goes with the key change's outcome");
        assert_eq!(result.conflicts[0].moved_from.as_ref().map(|m| m.key.clone()), Some(vec![json!("ab")]));
    }
}
