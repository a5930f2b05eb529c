//! Rows held to their parent's key change. A device's own `ON UPDATE
//! CASCADE` sends the rows under a parent whose key it changed as changes
//! of their own; when the parent's change does not apply (its new key is
//! another row's on the server, a conflict the server wins), those rows
//! would still apply, under the server's other row at that key (helper
//! 80). A row whose parent key (by a foreign key the server declares
//! between scope tables) takes the new key of such a change is a conflict
//! the server wins instead. A row the upload takes away from the old key
//! of a parent's key change the server refused (the file's own `ON UPDATE
//! SET NULL` emptied it) is refused with that change (helper 84).

use std::collections::{HashMap, HashSet};

use tandem_core::changeset::Op;
use tandem_core::error::RejectionKind;
use tandem_core::sql::apply::{self as sql, Staged};
use tandem_core::sql::Scope;
use tandem_core::upload::Outcome;
use tandem_core::Result;

use crate::spi::{self, Spi};

use super::plan::TablePlan;

/// A foreign key between two scope tables onto the parent's primary key.
pub struct ForeignKey {
    pub child: usize,
    pub parent: usize,
    /// The child's columns, in the order of the parent's primary key.
    pub columns: Vec<String>,
}

/// New keys (each value as sent, in primary key order) of key changes,
/// by the table whose rows they are.
pub type Unmoved = HashMap<usize, HashSet<Vec<Option<String>>>>;

/// The new keys of `plan`'s key changes that did not apply: not written,
/// and the server's row still at the old key as last classified (a row
/// the server's own cascade moved there is no such change).
pub fn unmoved_keys(plan: &TablePlan<'_>) -> HashSet<Vec<Option<String>>> {
    let Some(at) = positions(plan, &plan.table.primary_key) else { return HashSet::new() };
    plan.rows
        .iter()
        .filter(|row| row.is_move() && row.change.op == Op::Upsert && !row.written && row.server.exists)
        .map(|row| at.iter().map(|&p| row.change.values.get(p).cloned().flatten()).collect())
        .collect()
}

/// Makes each row of `plan` about to be written whose parent key is the
/// new key of a parent's key change that did not apply a conflict the
/// server wins.
pub fn hold_to_unmoved(plan: &mut TablePlan<'_>, keys: &[ForeignKey], unmoved: &Unmoved) {
    for key in keys.iter().filter(|k| k.child == plan.t) {
        let Some(new_keys) = unmoved.get(&key.parent).filter(|keys| !keys.is_empty()) else { continue };
        let Some(at) = positions(plan, &key.columns) else { continue };
        for row in plan.rows.iter_mut().filter(|row| row.to_write(Op::Upsert)) {
            let parent: Vec<Option<String>> = at.iter().map(|&p| row.change.values.get(p).cloned().flatten()).collect();
            if new_keys.contains(&parent) {
                row.violates(
                    "its parent key is the new key of its parent's key change in this upload, which did not apply: it \
                     stays under its parent's old key, as the parent does"
                        .into(),
                );
            }
        }
    }
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
                    let new = at.iter().map(|&p| row.change.values.get(p).cloned().flatten()).collect();
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
