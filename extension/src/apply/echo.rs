//! Echoes: which written rows the uploader already holds. Only a row that
//! the apply leaves exactly as sent, after every trigger and cascade its
//! writes set off, is the uploader's echo (marked with its replica, so a
//! pull does not send it back); any other row the upload caused to change,
//! in this table or another, keeps no mark and goes back to it. A written
//! row the server stores differently is also returned in the answer; one
//! the server's code took out of the uploader's partition, or away from its
//! key, is answered as gone, never with its values.

use tandem_core::changeset::Op;
use tandem_core::sql::apply as sql;
use tandem_core::Result;

use crate::fold;
use crate::spi::{self, Spi};

use super::plan::TablePlan;
use super::Upload;

impl Upload<'_> {
    /// After every write of the apply: finds the rows left exactly as sent,
    /// then folds the logs its writes filled, marking those rows as it
    /// goes. Rows are looked up by key, so the cost follows the upload, not
    /// the table.
    pub fn mark_echoes(&self, spi: &mut Spi<'_>, plans: &mut [TablePlan<'_>]) -> Result<()> {
        let mut echoes = Vec::new();
        spi::with_index_probes(spi, |spi| {
            for plan in plans.iter_mut() {
                if let Some(echo) = self.find_echoes(spi, plan)? {
                    echoes.push(echo);
                }
            }
            Ok(())
        })?;
        let replica = self.uploader.replica;
        fold::fold_each(spi, self.scope, echoes.iter().map(|e| e.t), |t| {
            let echo = echoes.iter().find(|e| e.t == t);
            let marked: Vec<usize> = echo.map(|e| e.upserted.iter().chain(&e.deleted).copied().collect()).unwrap_or_default();
            sql::fold_marking_echoes(self.scope, self.staged, t, &marked, replica)
        })?;
        spi::with_index_probes(spi, |spi| {
            for echo in echoes.iter().filter(|e| !e.deleted.is_empty()) {
                spi::run(spi, sql::mark_deleted_echoes(self.scope, self.staged, echo.t, &echo.deleted, replica))?;
            }
            Ok(())
        })
    }

    /// The written rows of `plan`'s table left exactly as sent; the others
    /// are noted on their rows (stored otherwise, or gone).
    fn find_echoes(&self, spi: &mut Spi<'_>, plan: &mut TablePlan<'_>) -> Result<Option<Echoes>> {
        let written: Vec<usize> = (0..plan.rows.len()).filter(|&i| plan.rows[i].written).collect();
        if written.is_empty() {
            return Ok(None);
        }
        let mut echoes = Echoes { t: plan.t, upserted: Vec::new(), deleted: Vec::new() };
        for left in spi::all(spi, sql::final_rows(self.scope, self.staged, plan.t, &written, self.filters))? {
            let row = &mut plan.rows[left.idx];
            match (row.change.op, left.row) {
                // The server's code took it out of the uploader's
                // partition: not its echo, and not its to see.
                (Op::Upsert, Some(_)) if !left.visible => row.answered_gone = true,
                (Op::Upsert, Some(stored)) if row.sent_exactly(plan.table, &plan.columns, &stored) => echoes.upserted.push(left.idx),
                (Op::Upsert, Some(stored)) => row.stored = Some(stored),
                // Not at its key any more: a trigger stored it at a
                // key of its own (a pull brings it there), or removed it.
                (Op::Upsert, None) => row.answered_gone = true,
                (Op::Delete, None) => echoes.deleted.push(left.idx),
                (Op::Delete, Some(_)) => {}
            }
        }
        Ok(Some(echoes))
    }
}

/// One table's rows an apply left exactly as sent, by their index in the
/// stage.
struct Echoes {
    t: usize,
    upserted: Vec<usize>,
    deleted: Vec<usize>,
}
