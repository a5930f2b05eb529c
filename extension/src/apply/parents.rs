//! Rows held to their parent's key change. A device's own `ON UPDATE
//! CASCADE` sends the rows under a parent whose key it changed as changes
//! of their own; when the parent's change does not apply (its new key is
//! another row's on the server, a conflict the server wins), those rows
//! would still apply, under the server's other row at that key (helper
//! 80), or fail the server's foreign key and, new, leave the file (helper
//! 89). A row whose parent key (by a foreign key the server declares
//! between scope tables) takes the new key of such a change goes in under
//! the old key instead, where the server keeps the parent, with the rest of
//! its change; where that foreign key is part of the row's own key, it is
//! a conflict the server wins. A row the upload takes away from the old key
//! of a parent's key change the server refused (the file's own `ON UPDATE
//! SET NULL` emptied it) is refused with that change (helper 84). And a
//! row sent under the old key of a parent's key change that applied (a
//! file without foreign keys) follows it to the new key, where the
//! server's key cascades (helper 100).

use std::collections::{BTreeMap, HashMap, HashSet};

use tandem_core::changeset::Op;
use tandem_core::error::RejectionKind;
use tandem_core::sql::apply::{self as sql, StageKey, Staged};
use tandem_core::sql::Scope;
use tandem_core::upload::{Outcome, UploadRow};
use tandem_core::Result;

use crate::spi::{self, Spi};

use super::plan::TablePlan;

/// A key's values as sent, in primary key order.
type Key = Vec<Option<String>>;

/// A foreign key between two scope tables onto the parent's primary key.
pub struct ForeignKey {
    pub child: usize,
    pub parent: usize,
    /// The child's columns, in the order of the parent's primary key.
    pub columns: Vec<String>,
    /// `ON UPDATE CASCADE`: a parent's key change takes its rows along.
    pub cascades_updates: bool,
}

/// Key changes that did not apply, by the table whose rows they are: each
/// new key with its old one (each value as sent, in primary key order).
pub type Unmoved = HashMap<usize, HashMap<Key, Key>>;

/// The key changes of `plan` that did not apply (not written, and the
/// server's row still at the old key as last classified: a row the
/// server's own cascade moved there is no such change), new key to old.
pub fn unmoved_keys(plan: &TablePlan<'_>) -> HashMap<Key, Key> {
    let Some(at) = positions(plan, &plan.table.primary_key) else { return HashMap::new() };
    plan.rows
        .iter()
        .filter(|row| row.is_move() && row.change.op == Op::Upsert && !row.written && row.server.exists)
        .filter_map(|row| {
            let old = row.change.moved_from.as_ref()?.values.clone();
            Some((values_at(row, &at), old))
        })
        .collect()
}

/// Puts each row of `plan` about to be written whose parent key is the
/// new key of a parent's key change that did not apply under that
/// change's old key (in the stage: the row as sent stays the device's,
/// and the row as stored comes back to it); a conflict the server wins
/// where the parent key is part of the row's own key.
pub fn hold_to_unmoved(
    spi: &mut Spi<'_>,
    scope: &Scope<'_>,
    plan: &mut TablePlan<'_>,
    keys: &[ForeignKey],
    unmoved: &Unmoved,
) -> Result<()> {
    for key in keys.iter().filter(|k| k.child == plan.t) {
        let Some(changes) = unmoved.get(&key.parent).filter(|changes| !changes.is_empty()) else { continue };
        let Some(at) = positions(plan, &key.columns) else { continue };
        let in_own_key = key.columns.iter().any(|c| plan.table.primary_key.contains(c));
        let mut repointed: BTreeMap<&Key, Vec<usize>> = BTreeMap::new();
        for (i, row) in plan.rows.iter_mut().enumerate().filter(|(_, row)| row.to_write(Op::Upsert)) {
            let parent: Key = values_at(row, &at);
            let Some(old) = changes.get(&parent) else { continue };
            if in_own_key {
                row.violates(
                    "its key holds the new key of its parent's key change in this upload, which did not apply: it stays \
                     under its parent's old key, as the parent does"
                        .into(),
                );
            } else {
                repointed.entry(old).or_default().push(i);
            }
        }
        for (old, idx) in repointed {
            spi::run(spi, sql::repoint(scope, plan.t, &plan.types, &at, &idx, old))?;
        }
    }
    Ok(())
}

/// Key changes that were written, by the table whose rows they are: each
/// old key with its new one (each value as sent, in primary key order).
pub type Moved = HashMap<usize, HashMap<Key, Key>>;

/// The key changes of `plan` that were written, old key to new.
pub fn moved_keys(plan: &TablePlan<'_>) -> HashMap<Key, Key> {
    let Some(at) = positions(plan, &plan.table.primary_key) else { return HashMap::new() };
    plan.rows
        .iter()
        .filter(|row| row.is_move() && row.change.op == Op::Upsert && row.written)
        .filter_map(|row| Some((row.change.moved_from.as_ref()?.values.clone(), values_at(row, &at))))
        .collect()
}

/// Puts each row of `plan` about to be written whose parent key, by a
/// foreign key that cascades updates (outside the row's own key), is the
/// old key of a parent's key change this upload wrote under that change's
/// new key (in the stage): the server's cascade would have moved it there
/// had it been on the server, as the file's own would have where it has
/// one. A file without one sends its rows under the old key, and each was
/// a conflict the server won (helper 100). Not where the server holds a
/// parent at the old key again.
pub fn follow_to_moved(spi: &mut Spi<'_>, scope: &Scope<'_>, plan: &TablePlan<'_>, keys: &[ForeignKey], moved: &Moved) -> Result<()> {
    for key in keys.iter().filter(|k| k.child == plan.t && k.cascades_updates) {
        let Some(changes) = moved.get(&key.parent).filter(|changes| !changes.is_empty()) else { continue };
        if key.columns.iter().any(|c| plan.table.primary_key.contains(c)) {
            continue;
        }
        let Some(at) = positions(plan, &key.columns) else { continue };
        let mut following: BTreeMap<(&Key, &Key), Vec<usize>> = BTreeMap::new();
        for (i, row) in plan.rows.iter().enumerate().filter(|(_, row)| row.to_write(Op::Upsert)) {
            if let Some(change) = changes.get_key_value(&values_at(row, &at)) {
                following.entry(change).or_default().push(i);
            }
        }
        for ((old, new), idx) in following {
            spi::run(spi, sql::follow_parent(scope, plan.t, key.parent, &plan.types, &at, &idx, old, new))?;
        }
    }
    Ok(())
}

/// Marks each row of `plan` about to be written whose parent key (outside
/// its own key) is, as sent or on the server, the new key of a parent's
/// key change this upload wrote (`moved`, by the parent's table): the
/// server's own cascade moved it there, and the row's change goes on over
/// that (see `UploadRow::follows_own_move`), the program's move of it to
/// another parent too (helper 95).
pub fn follow_moved(
    spi: &mut Spi<'_>,
    scope: &Scope<'_>,
    staged: Staged<'_>,
    plan: &mut TablePlan<'_>,
    keys: &[ForeignKey],
    moved: &Moved,
) -> Result<()> {
    for key in keys.iter().filter(|k| k.child == plan.t) {
        let Some(changes) = moved.get(&key.parent).filter(|changes| !changes.is_empty()) else { continue };
        if key.columns.iter().any(|c| plan.table.primary_key.contains(c)) {
            continue;
        }
        let new_keys: HashSet<&Key> = changes.values().collect();
        let parents: Vec<Key> = new_keys.iter().map(|&k| k.clone()).collect();
        // A delete too, and a key change by its old key (the stage holds
        // old keys where the table has key changes): the cascade changed
        // the row each was made on.
        let mut lookups = vec![(Op::Upsert, StageKey::Sent), (Op::Delete, StageKey::Sent)];
        if plan.rows.iter().any(|row| row.is_move()) {
            lookups.push((Op::Upsert, StageKey::MovedFrom));
        }
        for (op, at) in lookups {
            for i in spi::all(spi, sql::staged_under(scope, staged, key.child, &key.columns, &parents, (op, at)))? {
                if let Some(row) = plan.rows.get_mut(i).filter(|row| row.to_write(op)) {
                    row.follows_own_move = true;
                }
            }
        }
        let Some(at) = positions(plan, &key.columns) else { continue };
        // A row's own key change too (helper 90): its old row is the one
        // the cascade moved.
        for row in plan.rows.iter_mut().filter(|row| row.to_write(Op::Upsert)) {
            let parent: Key = values_at(row, &at);
            if new_keys.contains(&parent) {
                row.follows_own_move = true;
            }
        }
    }
    Ok(())
}

/// Refuses, with each new row the server refused (`refused`, or a refusal
/// of `plans`), the upserts of the upload whose foreign key names it and
/// that the server has no parent for: sent again without their parent,
/// each would fail the foreign key and leave the file as a conflict. Set
/// aside with it, they come back when it does.
pub fn refuse_under_refused(
    spi: &mut Spi<'_>,
    scope: &Scope<'_>,
    staged: Staged<'_>,
    plans: &mut [TablePlan<'_>],
    keys: &[ForeignKey],
    refused: &[tandem_core::Rejection],
) -> Result<()> {
    until_settled(keys.len(), || refuse_under_refused_once(spi, scope, staged, plans, keys, refused))
}

/// One pass of [`refuse_under_refused`]; whether it refused a row.
fn refuse_under_refused_once(
    spi: &mut Spi<'_>,
    scope: &Scope<'_>,
    staged: Staged<'_>,
    plans: &mut [TablePlan<'_>],
    keys: &[ForeignKey],
    refused: &[tandem_core::Rejection],
) -> Result<bool> {
    let mut more = false;
    for key in keys {
        let parent = scope.table(key.parent);
        let mut parents: Vec<Key> = refused
            .iter()
            .filter(|r| r.table == parent.name)
            .filter_map(|r| {
                parent
                    .primary_key
                    .iter()
                    .zip(&r.key)
                    .map(|(k, v)| parent.column(k).and_then(|c| tandem_core::types::json_to_pg_text(c.ty, v).ok()))
                    .collect::<Option<Vec<_>>>()
            })
            .collect();
        parents.extend(keys_where(plans, key.parent, |row| row.change.op == Op::Upsert && matches!(row.outcome, Outcome::Refused { .. })));
        if parents.is_empty() {
            continue;
        }
        let Some(query) = sql::under_refused(scope, staged, key.child, &key.columns, key.parent, &parents) else { continue };
        let Some(child) = plans.iter_mut().find(|plan| plan.t == key.child) else { continue };
        for i in spi::all(spi, query)? {
            let Some(row) = child.rows.get_mut(i) else { continue };
            // A row that followed a refused key change goes back with
            // it on the device (see `refuse_with_refused_moves`).
            if !matches!(row.outcome, Outcome::Refused { .. }) && !row.is_move() {
                row.outcome = Outcome::Refused {
                    kind: RejectionKind::Declined,
                    reason: "its parent in this upload was refused: it waits with it".into(),
                };
                more = true;
            }
        }
    }
    Ok(more)
}

/// Makes each delete of the upload whose server row lies, by one of
/// `keys`, under a parent whose own delete in the upload is not written
/// (it lost its conflict) a conflict the server wins: the file's own `ON
/// DELETE CASCADE` sent it with the parent, and the server keeps the
/// parent (helper 91). Down every level: a row held makes the rows under
/// it held too.
pub fn hold_to_kept_parents(
    spi: &mut Spi<'_>,
    scope: &Scope<'_>,
    staged: Staged<'_>,
    plans: &mut [TablePlan<'_>],
    keys: &[ForeignKey],
) -> Result<()> {
    until_settled(keys.len(), || hold_under_kept(spi, scope, staged, plans, keys))
}

/// One pass of [`hold_to_kept_parents`]; whether it held a row.
fn hold_under_kept(
    spi: &mut Spi<'_>,
    scope: &Scope<'_>,
    staged: Staged<'_>,
    plans: &mut [TablePlan<'_>],
    keys: &[ForeignKey],
) -> Result<bool> {
    let mut held = false;
    for key in keys {
        let kept = keys_where(plans, key.parent, is_kept_delete);
        if kept.is_empty() {
            continue;
        }
        let Some(child) = plans.iter_mut().find(|plan| plan.t == key.child) else { continue };
        if !child.rows.iter().any(|row| row.to_write(Op::Delete)) {
            continue;
        }
        for i in spi::all(spi, sql::staged_under(scope, staged, key.child, &key.columns, &kept, (Op::Delete, StageKey::Sent)))? {
            let Some(row) = child.rows.get_mut(i) else { continue };
            if row.to_write(Op::Delete) {
                row.violates("its parent's delete in this upload did not apply: it stays with its parent".into());
                held = true;
            }
        }
    }
    Ok(held)
}

/// A delete that lost its conflict: the server keeps the row.
pub fn is_kept_delete(row: &tandem_core::upload::UploadRow<Option<String>>) -> bool {
    row.change.op == Op::Delete && matches!(row.outcome, Outcome::Conflict { .. }) && !row.to_write(Op::Delete)
}

/// A row's values at the uploaded positions `at` (a key, in its order).
fn values_at(row: &UploadRow<Option<String>>, at: &[usize]) -> Key {
    at.iter().map(|&p| row.change.values.get(p).cloned().flatten()).collect()
}

/// The primary keys (each value as sent) of the rows of table `t` that
/// `pick` takes.
fn keys_where(plans: &[TablePlan<'_>], t: usize, pick: impl Fn(&UploadRow<Option<String>>) -> bool) -> Vec<Key> {
    let mut keys = Vec::new();
    for plan in plans.iter().filter(|plan| plan.t == t) {
        let Some(at) = positions(plan, &plan.table.primary_key) else { continue };
        keys.extend(plan.rows.iter().filter(|row| pick(row)).map(|row| values_at(row, &at)));
    }
    keys
}

/// Runs `pass` until it changes nothing, at most `limit + 1` times: a row
/// held or refused may hold or refuse the rows under it, one level a pass.
fn until_settled(limit: usize, mut pass: impl FnMut() -> Result<bool>) -> Result<()> {
    for _ in 0..=limit {
        if !pass()? {
            break;
        }
    }
    Ok(())
}

/// The positions of `columns` among the uploaded ones, when all are.
fn positions(plan: &TablePlan<'_>, columns: &[String]) -> Option<Vec<usize>> {
    columns.iter().map(|c| plan.column_names.iter().position(|n| n == c)).collect()
}

/// Refuses, with each key change of the upload the server refused, the
/// rows the server's foreign keys tie to its old key that the upload
/// takes away from it (see [`sql::tied_to`]): set aside on the device,
/// they take the server's row back with their parent.
pub fn refuse_with_refused_moves(
    spi: &mut Spi<'_>,
    scope: &Scope<'_>,
    staged: Staged<'_>,
    plans: &mut [TablePlan<'_>],
    keys: &[ForeignKey],
) -> Result<()> {
    for key in keys {
        let mut moves: Vec<sql::KeyChange> = Vec::new();
        for plan in plans.iter().filter(|plan| plan.t == key.parent) {
            let Some(at) = positions(plan, &plan.table.primary_key) else { continue };
            for row in plan.rows.iter().filter(|row| matches!(row.outcome, Outcome::Refused { .. })) {
                if let Some(moved) = &row.change.moved_from {
                    let new = values_at(row, &at);
                    moves.push((moved.values.clone(), new));
                }
            }
        }
        if moves.is_empty() {
            continue;
        }
        let Some(child) = plans.iter_mut().find(|plan| plan.t == key.child) else { continue };
        for i in spi::all(spi, sql::tied_to(scope, staged, key.child, &key.columns, &moves))? {
            let Some(row) = child.rows.get_mut(i) else { continue };
            if !matches!(row.outcome, Outcome::Refused { .. }) {
                row.outcome = Outcome::Refused {
                    kind: RejectionKind::Declined,
                    reason: "it came with its parent's key change in this upload, which the server refused: it stays as the \
                             server holds it, under its parent's old key"
                        .into(),
                };
            }
        }
    }
    Ok(())
}
