//! Staging: each table's uploaded rows into a temporary table, every value
//! read as the server will store it. A value the column refuses (an invalid
//! date, an unknown enum label, a domain's check, a string too long) or
//! would store other than sent (rounded, cut) refuses its row by name; the
//! other rows stage as one statement.

use tandem_core::changeset::Op;
use tandem_core::error::RejectionKind;
use tandem_core::sql::apply::{self as sql, StageRows, StageType};
use tandem_core::sql::Scope;
use tandem_core::upload::Outcome;
use tandem_core::Result;

use crate::catalog;
use crate::spi::{self, PgError, Spi};

use super::plan::TablePlan;

/// Stages the rows of `plan` (a delete stages its key, other columns NULL),
/// refusing each row with a value the server would not store as sent.
pub fn stage(spi: &mut Spi<'_>, scope: &Scope<'_>, plan: &mut TablePlan<'_>, respellings: bool) -> Result<()> {
    let names: Vec<&str> = plan.column_names.iter().map(String::as_str).collect();
    let types = catalog::stage_types(spi, &plan.table.table_name(), &names)?;
    plan.types = types.clone();
    let left_over = spi::all(spi, sql::stage_exists(scope, plan.t))?;
    if left_over.first() == Some(&true) {
        spi::run(spi, sql::drop_stage(scope, plan.t))?;
    }
    let moves = plan.rows.iter().any(|r| r.is_move());
    spi::run(spi, sql::create_stage(scope, plan.t, &plan.columns, &types, moves))?;
    let all: Vec<usize> = (0..plan.rows.len()).collect();
    fill(spi, scope, plan, &types, &all)?;
    for (i, column) in spi::all(spi, sql::inexact_rows(scope, plan.t))? {
        let declared = plan.column_names.iter().position(|c| *c == column).map(|p| types[p].declared.as_str()).unwrap_or("?");
        plan.rows[i].outcome = Outcome::Refused {
            kind: RejectionKind::InvalidValue,
            reason: format!(
                "column {column}: the server would not store the value exactly as sent ({declared} cuts or rounds it); \
                 send it as the column holds it"
            ),
        };
    }
    let staged = Some(plan.columns.clone());
    let mut staged_columns = vec![None; scope.schema.tables.len()];
    staged_columns[plan.t] = staged;
    let repeated = spi::all(spi, sql::repeated_keys(scope, &staged_columns, plan.t))?;
    // Only for an uploader that takes the answer's `respelled`: another
    // would drop the rows filtered through the old key's row with it.
    if respellings && absorb_deletes(plan, &repeated) {
        // Staged again with the pairs as key changes: one more pass.
        return stage(spi, scope, plan, respellings);
    }
    for repeated in repeated {
        let reason = if repeated.after_delete {
            "its key is equal, as PostgreSQL compares it, to the key of a row this upload deletes ('ab' deleted and 'AB' \
             inserted, under citext or a case-blind collation): neither is applied; to change a key's text, UPDATE the row"
        } else {
            "its key is equal, as PostgreSQL compares it, to an earlier row's of this upload (3 and 3.0, one instant in two \
             time zones, 'ab' and 'AB' under citext or a case-blind collation): send one row per key"
        };
        plan.rows[repeated.idx].outcome = Outcome::Refused { kind: RejectionKind::InvalidValue, reason: reason.into() };
    }
    for (column, ty) in types.iter().enumerate() {
        if !ty.sequenced {
            continue;
        }
        for i in spi::all(spi, sql::sequenced_values(scope, &staged_columns, plan.t, column, moves))? {
            plan.rows[i].outcome = Outcome::Refused {
                kind: RejectionKind::InvalidValue,
                reason: format!(
                    "column {}: the server's sequence makes its values, and a value a device picks could collide with one it \
                     hands out: leave it empty on the device, and the server fills it in",
                    plan.column_names[column]
                ),
            };
        }
    }
    // Row counts for the planner: a stage can hold one row or a million.
    // Statistics of the columns the statements join and filter on are
    // enough; those of every column cost ten times as much.
    spi::run(spi, sql::analyze_stage(scope, plan.t, &plan.columns))?;
    Ok(())
}

/// Takes each delete into the insert of the same upload whose key
/// PostgreSQL holds equal to it (a device deleted `'Sku-1'` and inserted
/// `'SKU-1'` under a case-blind collation), where the two are alone under
/// that key and neither is refused: applied as one change of the key's
/// text, nothing of either is lost. Returns whether any pair was taken in.
fn absorb_deletes(plan: &mut TablePlan<'_>, repeated: &[sql::RepeatedKey]) -> bool {
    let alone = |r: &sql::RepeatedKey| repeated.iter().filter(|o| o.first == r.first).count() == 1;
    let open = |row: &tandem_core::upload::UploadRow<Option<String>>| !matches!(row.outcome, Outcome::Refused { .. });
    // (delete, insert) positions; each pair is a key of its own.
    let mut pairs: Vec<(usize, usize)> = Vec::new();
    for r in repeated.iter().filter(|r| alone(r)) {
        let (delete, insert) = if plan.rows[r.first].change.op == Op::Delete { (r.first, r.idx) } else { (r.idx, r.first) };
        let (taken, row) = (&plan.rows[delete], &plan.rows[insert]);
        if open(taken) && open(row) && row.takes_in(taken) {
            pairs.push((delete, insert));
        }
    }
    if pairs.is_empty() {
        return false;
    }
    let mut rows: Vec<Option<_>> = std::mem::take(&mut plan.rows).into_iter().map(Some).collect();
    for (delete, insert) in pairs {
        if let (Some(taken), Some(row)) = (rows[delete].take(), rows[insert].as_mut()) {
            row.absorb(taken);
        }
    }
    plan.rows = rows.into_iter().flatten().collect();
    true
}

/// Stages rows `idx` in one statement; when a value fails it, halves the
/// rows until each failing row is found and refused (k bad rows of n cost
/// about k log n statements, and none when all are good).
fn fill(spi: &mut Spi<'_>, scope: &Scope<'_>, plan: &mut TablePlan<'_>, types: &[StageType], idx: &[usize]) -> Result<()> {
    let rows = stage_rows(plan, idx);
    match spi::in_subtransaction(|| spi::run(spi, sql::fill_stage(scope, plan.t, &plan.columns, types, rows))) {
        Ok(result) => result.map(|_| ()),
        Err(error) if refuses_a_value(&error) && idx.len() == 1 => {
            let reason = failing_column(spi, plan, types, idx[0]).unwrap_or_else(|| error.describe());
            plan.rows[idx[0]].outcome = Outcome::Refused { kind: RejectionKind::InvalidValue, reason };
            Ok(())
        }
        Err(error) if refuses_a_value(&error) => {
            let (first, second) = idx.split_at(idx.len() / 2);
            fill(spi, scope, plan, types, first)?;
            fill(spi, scope, plan, types, second)
        }
        Err(error) => Err(error.into()),
    }
}

/// A value's fault (data exceptions, a domain's check or NOT NULL, the
/// syntax errors some types' input raises, such as tsvector's, a limit a
/// value exceeds, such as a jsonb nested past the parser's stack: helper
/// 107), as opposed to the server's (out of memory, a lost connection).
fn refuses_a_value(error: &PgError) -> bool {
    ["22", "23", "54"].iter().any(|class| error.sqlstate.starts_with(class)) || error.sqlstate == "42601"
}

/// `column <name>: <why>` for the first value of row `i` its column refuses.
fn failing_column(spi: &mut Spi<'_>, plan: &TablePlan<'_>, types: &[StageType], i: usize) -> Option<String> {
    let texts = row_texts(plan, i);
    for ((name, ty), text) in plan.column_names.iter().zip(types).zip(texts) {
        let Some(text) = text else { continue };
        if let Err(error) = spi::in_subtransaction(|| spi::run(spi, sql::check_value(ty, &text))) {
            return Some(format!("column {name}: {}", error.describe()));
        }
    }
    None
}

/// The text of each uploaded column of row `i`, in the upload's order: a
/// delete has only its key (in primary key order among its values).
fn row_texts(plan: &TablePlan<'_>, i: usize) -> Vec<Option<String>> {
    let change = &plan.rows[i].change;
    match change.op {
        Op::Upsert => change.values.clone(),
        Op::Delete => {
            let mut texts = vec![None; plan.columns.len()];
            for (k, key) in plan.table.key_indexes().iter().enumerate() {
                let slot = plan.columns.iter().position(|c| c == key).expect("a checked upload carries the key");
                texts[slot] = change.values[k].clone();
            }
            texts
        }
    }
}

/// Rows `idx` of `plan`, column by column, as the stage reads them.
fn stage_rows(plan: &TablePlan<'_>, idx: &[usize]) -> StageRows {
    let moves = plan.rows.iter().any(|r| r.is_move());
    let mut rows = StageRows {
        idx: Vec::with_capacity(idx.len()),
        ops: Vec::with_capacity(idx.len()),
        bases: Vec::with_capacity(idx.len()),
        columns: vec![Vec::with_capacity(idx.len()); plan.columns.len()],
        from: if moves { vec![Vec::with_capacity(idx.len()); plan.table.primary_key.len()] } else { Vec::new() },
    };
    for &i in idx {
        let change = &plan.rows[i].change;
        rows.idx.push(i as i32);
        rows.bases.push(change.base.clone());
        rows.ops.push(Some(change.op.as_str().to_string()));
        for (column, text) in rows.columns.iter_mut().zip(row_texts(plan, i)) {
            column.push(text);
        }
        for (k, column) in rows.from.iter_mut().enumerate() {
            column.push(change.moved_from.as_ref().and_then(|m| m.values.get(k).cloned().flatten()));
        }
    }
    rows
}
