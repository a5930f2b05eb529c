//! Settling conflicts by the policy (or a resolver function), and the
//! server's rows an uploader takes: before a conflict, after the apply, and
//! for a refused row it may see.

use std::collections::HashMap;

use serde_json::{json, Value};
use tandem_core::conflict::{parse_resolution, Decision, Resolution};
use tandem_core::options::Policy;
use tandem_core::sql::apply::{self as sql, StageKey};
use tandem_core::sql::partition::FilterValues;
use tandem_core::upload::{Outcome, RowState, Settlement};
use tandem_core::{Error, Rejection, Result};

use crate::spi::{self, Spi};

use super::plan::TablePlan;
use super::Upload;

impl Upload<'_> {
    /// The server's current rows for rows `idx` (at `key`), by idx; a row
    /// that is gone reports its tombstone's version. With `visible_to`
    /// (after the writes), a row the server's code took out of that
    /// partition reads as none: the uploader drops its copy.
    fn server_rows(
        &self,
        spi: &mut Spi<'_>,
        plan: &TablePlan<'_>,
        key: StageKey,
        idx: &[usize],
        visible_to: Option<&FilterValues>,
    ) -> Result<HashMap<usize, RowState>> {
        let mut out: HashMap<usize, RowState> = idx.iter().map(|&i| (i, RowState::default())).collect();
        if idx.is_empty() {
            return Ok(out);
        }
        for (i, state) in spi::all(spi, sql::server_rows(self.scope, self.staged, plan.t, key, idx, visible_to))? {
            out.insert(i, state);
        }
        for (i, version) in spi::all(spi, sql::tombstones(self.scope, self.staged, plan.t, key, idx, self.filters))? {
            if let Some(state) = out.get_mut(&i) {
                if state.row.is_none() {
                    state.version = version;
                }
            }
        }
        Ok(out)
    }

    /// Keeps the server's rows before the apply, for the conflicts `idx`:
    /// for a key change, the row at its old key (the row it changed).
    pub fn fetch_before(&self, spi: &mut Spi<'_>, plan: &mut TablePlan<'_>, idx: &[usize]) -> Result<()> {
        let (moves, rows): (Vec<usize>, Vec<usize>) = idx.iter().partition(|&&i| plan.rows[i].is_move());
        for (key, idx) in [(StageKey::Sent, rows), (StageKey::MovedFrom, moves)] {
            for (i, state) in self.server_rows(spi, plan, key, &idx, None)? {
                plan.rows[i].before = Some(state);
            }
        }
        Ok(())
    }

    /// Keeps the server's rows after the apply, for rows `idx` (those not
    /// written as sent): the uploader takes them, and for a key change not
    /// written, restores the row at its old key.
    pub fn fetch_after(&self, spi: &mut Spi<'_>, plan: &mut TablePlan<'_>, idx: &[usize]) -> Result<()> {
        for (i, state) in self.server_rows(spi, plan, StageKey::Sent, idx, Some(self.filters))? {
            plan.rows[i].after = Some(state);
        }
        let moves: Vec<usize> = idx.iter().copied().filter(|&i| plan.rows[i].is_move() && !plan.rows[i].written).collect();
        for (i, state) in self.server_rows(spi, plan, StageKey::MovedFrom, &moves, Some(self.filters))? {
            plan.rows[i].origin_after = Some(state);
        }
        Ok(())
    }

    /// Settles conflict `i` of `plan` by the policy (or the resolver).
    pub fn settle(&self, spi: &mut Spi<'_>, plan: &mut TablePlan<'_>, i: usize) -> Result<()> {
        let Outcome::Conflict { kind, .. } = plan.rows[i].outcome else { return Ok(()) };
        let settled = |decision| Settlement { decision, merged: None, reason: None };
        let settlement = match &plan.policy {
            Policy::ServerWins => settled(Decision::ServerWins),
            Policy::ClientWins => settled(Decision::ClientWins),
            Policy::Resolver(function) => {
                let row = &plan.rows[i];
                let input = json!({
                    "scope": self.scope_name,
                    "table": plan.table.name,
                    "key": row.change.key,
                    "kind": kind.as_str(),
                    "server_row": row.before.as_ref().and_then(|b| b.row.clone()),
                    "client_row": row.client_row(&plan.column_names),
                    "client_id": self.client_id,
                });
                let call = format!("SELECT {function}($1::text::jsonb)::text");
                let answer: Option<String> = spi::as_users_code(spi, |spi| spi::one(spi, &call, &[input.to_string().into()]))?;
                let answer = match answer {
                    None => Value::Null,
                    Some(text) => serde_json::from_str(&text)
                        .map_err(|e| Error::Resolver { name: function.clone(), reason: format!("returned unreadable JSON: {e}") })?,
                };
                match parse_resolution(&answer).map_err(|reason| Error::Resolver { name: function.clone(), reason })? {
                    Resolution::ServerWins => settled(Decision::ServerWins),
                    Resolution::ClientWins => settled(Decision::ClientWins),
                    Resolution::Row(row) => Settlement { decision: Decision::Merged, merged: Some(row), reason: None },
                }
            }
        };
        plan.rows[i].outcome = Outcome::Conflict { kind, settlement: Some(settlement) };
        Ok(())
    }

    /// Fills in the server's state of a refused row, if the client may see
    /// it, so the client can take it instead of its refused change.
    /// For a refused key change, the row at its old key too.
    pub fn visible_row(&self, spi: &mut Spi<'_>, rejection: &mut Rejection) -> Result<()> {
        let Some(t) = self.scope.index_of(&rejection.table) else { return Ok(()) };
        if let Some(state) = self.visible_state(spi, t, &rejection.key)? {
            rejection.version = state.version;
            rejection.row = state.row;
        }
        if let Some(moved) = rejection.moved_from.as_mut() {
            if let Some(state) = self.visible_state(spi, t, &moved.key)? {
                moved.version = state.version;
                moved.row = state.row;
            }
        }
        Ok(())
    }

    /// A key its type refuses (`2024-02-30`, refused when staged) is no
    /// row's: `None`.
    fn visible_state(&self, spi: &mut Spi<'_>, t: usize, key: &[Value]) -> Result<Option<RowState>> {
        let Some(query) = sql::visible_row(self.scope, t, key, self.filters) else { return Ok(None) };
        match spi::in_subtransaction(|| spi::all(spi, query)) {
            Ok(rows) => Ok(rows?.into_iter().next()),
            Err(error) if error.sqlstate.starts_with("22") => Ok(None),
            Err(error) => Err(error.into()),
        }
    }
}
