//! Classification: what the server holds for each staged row (version,
//! existence, last writer, partition), and the rows the partition refuses.

use std::collections::HashSet;

use tandem_core::changeset::Op;
use tandem_core::error::RejectionKind;
use tandem_core::sql::apply::{self as sql, StageKey};
use tandem_core::sql::Scope;
use tandem_core::upload::{AppliedChange, Outcome, UploadRow};
use tandem_core::{Error, Result};

use crate::spi::{self, Spi};

use super::plan::TablePlan;
use super::Upload;

impl Upload<'_> {
    /// Classifies rows `idx` of `plan` against the server, probing its
    /// tables by key: a key change against the row at its old key.
    pub fn classify(&self, spi: &mut Spi<'_>, plan: &mut TablePlan<'_>, idx: &[usize]) -> Result<()> {
        let (moves, rows): (Vec<usize>, Vec<usize>) = idx.iter().partition(|&&i| plan.rows[i].is_move());
        self.classify_by(spi, plan, StageKey::Sent, &rows)?;
        let moves = self.moved_already(spi, plan, moves)?;
        self.classify_by(spi, plan, StageKey::MovedFrom, &moves)
    }

    /// Of the key changes `moves`, those still to make. A retry's key
    /// change that an earlier attempt made already (the row at its new key
    /// is exactly as that attempt left it, its answer lost) and that the
    /// device changed since is an edit of the row at its new key now: it
    /// is classified there, as one, instead of meeting the old key's
    /// tombstone as a conflict. The very change the attempt carried is
    /// acknowledged as any retried change.
    fn moved_already(&self, spi: &mut Spi<'_>, plan: &mut TablePlan<'_>, moves: Vec<usize>) -> Result<Vec<usize>> {
        if !self.uploader.retrying || moves.is_empty() {
            return Ok(moves);
        }
        let table_id = self.scope.id(plan.t);
        let (changed, same): (Vec<usize>, Vec<usize>) =
            moves.into_iter().partition(|&i| !AppliedChange::carried(self.retried, table_id, &plan.rows[i].change));
        self.classify_by(spi, plan, StageKey::Sent, &changed)?;
        let mut still = same;
        for i in changed {
            if plan.rows[i].server.last_writer_is_client {
                plan.rows[i].change.moved_from = None;
            } else {
                still.push(i);
            }
        }
        Ok(still)
    }

    fn classify_by(&self, spi: &mut Spi<'_>, plan: &mut TablePlan<'_>, key: StageKey, idx: &[usize]) -> Result<()> {
        if idx.is_empty() {
            return Ok(());
        }
        let table = &self.scope.schema.tables[plan.t].name;
        let kept: Vec<(usize, Option<String>)> = match self.kept {
            Some(seen) if !seen.kept.is_empty() => idx
                .iter()
                .flat_map(|&i| seen.kept(table, &plan.rows[i].change.key).into_iter().map(move |version| (i, version.map(str::to_string))))
                .collect(),
            _ => Vec::new(),
        };
        let uploader = sql::Uploader { kept: &kept, ..self.uploader };
        let query = sql::classify(self.scope, self.staged, plan.t, key, uploader, self.filters, idx);
        let found = spi::with_index_probes(spi, |spi| spi::all(spi, query))?;
        let mut seen = 0;
        for classified in found {
            let row = plan
                .rows
                .get_mut(classified.idx)
                .ok_or_else(|| Error::Internal(format!("classify returned row {} of {}", classified.idx, plan.table.name)))?;
            row.server = classified.server;
            seen += 1;
        }
        if seen != idx.len() {
            return Err(Error::Internal(format!("classify of {} returned {seen} rows for {}", plan.table.name, idx.len())));
        }
        Ok(())
    }
}

/// Refuses rows of a filtered table that are, or would be, in another
/// client's partition. Not a change the upload being retried applied
/// already (`retried`): the server's code may have moved its row away
/// since (a trigger handing it to another tenant), and it is answered as
/// done, as the lost answer would have (helper 73), with no row of the
/// other tenant.
pub fn refuse_outside_partition(scope: &Scope<'_>, plan: &mut TablePlan<'_>, retried: &HashSet<AppliedChange>) {
    if scope.table(plan.t).filter.is_none() {
        return;
    }
    let table_id = scope.id(plan.t);
    for row in plan.rows.iter_mut() {
        if matches!(row.outcome, Outcome::Refused { .. }) || AppliedChange::carried(retried, table_id, &row.change) {
            continue;
        }
        refuse_if_outside(row);
    }
}

/// Refuses `row` when it is, or would be, in another client's partition
/// (as last classified); true when it did. One reason for every case, so a
/// refusal does not tell a key another tenant holds from values that name
/// another tenant.
pub fn refuse_if_outside<V>(row: &mut UploadRow<V>) -> bool {
    let outside = (row.server.exists && !row.server.in_partition)
        || (row.change.op == Op::Upsert && !row.server.new_in_partition)
        || !row.server.new_key_free;
    if outside {
        row.outcome =
            Outcome::Refused { kind: RejectionKind::OutsidePartition, reason: "the row is outside the client's partition".to_string() };
    }
    outside
}
