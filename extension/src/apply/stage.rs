//! Staging: each table's uploaded rows into a temporary table, every column
//! cast to its type, analyzed for the planner.

use tandem_core::changeset::Op;
use tandem_core::sql::apply::{self as sql, StageRows};
use tandem_core::sql::Scope;
use tandem_core::Result;

use crate::spi::{self, Client};

use super::plan::TablePlan;

/// Stages the rows of `plan` (a delete stages its key, other columns NULL).
pub fn stage(spi: &mut Client<'_>, scope: &Scope<'_>, plan: &TablePlan<'_>) -> Result<()> {
    let count = plan.rows.len();
    let key_slots: Vec<usize> = plan
        .table
        .key_indexes()
        .iter()
        .map(|k| plan.columns.iter().position(|c| c == k).expect("a checked upload carries the key"))
        .collect();
    let mut rows = StageRows {
        idx: Vec::with_capacity(count),
        ops: Vec::with_capacity(count),
        bases: Vec::with_capacity(count),
        columns: vec![Vec::with_capacity(count); plan.columns.len()],
    };
    for (i, row) in plan.rows.iter().enumerate() {
        let change = &row.change;
        rows.idx.push(i as i32);
        rows.bases.push(change.base.clone());
        match change.op {
            Op::Upsert => {
                rows.ops.push(Some("upsert".into()));
                for (column, value) in rows.columns.iter_mut().zip(&change.values) {
                    column.push(value.clone());
                }
            }
            Op::Delete => {
                rows.ops.push(Some("delete".into()));
                for column in rows.columns.iter_mut() {
                    column.push(None);
                }
                for (k, &slot) in key_slots.iter().enumerate() {
                    rows.columns[slot][i] = change.values[k].clone();
                }
            }
        }
    }
    let left_over = spi::all(spi, sql::stage_exists(scope, plan.t))?;
    if left_over.first() == Some(&true) {
        spi::run(spi, sql::drop_stage(scope, plan.t))?;
    }
    spi::run(spi, sql::stage(scope, plan.t, &plan.columns, rows))?;
    // Row counts for the planner: a stage can hold one row or a million.
    // Statistics of the columns the statements join and filter on are
    // enough; those of every column cost ten times as much.
    spi::run(spi, sql::analyze_stage(scope, plan.t, &plan.columns))?;
    Ok(())
}
