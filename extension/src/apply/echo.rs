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
    /// After every write of the apply: folds the logs its writes filled,
    /// then marks the rows left exactly as sent. Rows are looked up by key,
    /// so the cost follows the upload, not the table.
    pub fn mark_echoes(&self, spi: &mut Spi<'_>, plans: &mut [TablePlan<'_>]) -> Result<()> {
        let written: Vec<usize> = plans.iter().filter(|p| p.rows.iter().any(|r| r.written)).map(|p| p.t).collect();
        fold::fold(spi, self.scope, written)?;
        spi::with_index_probes(spi, |spi| self.mark_written(spi, plans))
    }

    fn mark_written(&self, spi: &mut Spi<'_>, plans: &mut [TablePlan<'_>]) -> Result<()> {
        for plan in plans.iter_mut() {
            let written: Vec<usize> = (0..plan.rows.len()).filter(|&i| plan.rows[i].written).collect();
            if written.is_empty() {
                continue;
            }
            let mut upserted = Vec::new();
            let mut deleted = Vec::new();
            for left in spi::all(spi, sql::final_rows(self.scope, self.staged, plan.t, &written, self.filters))? {
                let row = &mut plan.rows[left.idx];
                match (row.change.op, left.row) {
                    // The server's code took it out of the uploader's
                    // partition: not its echo, and not its to see.
                    (Op::Upsert, Some(_)) if !left.visible => row.answered_gone = true,
                    (Op::Upsert, Some(stored)) if row.sent_exactly(plan.table, &plan.columns, &stored) => upserted.push(left.idx),
                    (Op::Upsert, Some(stored)) => row.stored = Some(stored),
                    // Not at its key any more: a trigger stored it at a
                    // key of its own (a pull brings it there), or removed it.
                    (Op::Upsert, None) => row.answered_gone = true,
                    (Op::Delete, None) => deleted.push(left.idx),
                    (Op::Delete, Some(_)) => {}
                }
            }
            let replica = self.uploader.replica;
            if !upserted.is_empty() {
                spi::run(spi, sql::mark_echoes(self.scope, self.staged, plan.t, &upserted, replica))?;
            }
            if !deleted.is_empty() {
                spi::run(spi, sql::mark_echoes(self.scope, self.staged, plan.t, &deleted, replica))?;
                spi::run(spi, sql::mark_deleted_echoes(self.scope, self.staged, plan.t, &deleted, replica))?;
            }
        }
        Ok(())
    }
}
