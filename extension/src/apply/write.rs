//! Writing: the rows that apply as sent (or won their conflict), one
//! statement per kind of write; rows a concurrent transaction changed since
//! they were classified are classified again; a row a constraint refuses
//! becomes a `constraint_violated` conflict; a resolver's rows last.

use std::collections::HashSet;

use tandem_core::changeset::Op;
use tandem_core::error::{RejectionKind, LOCK_NOT_AVAILABLE, OBJECT_IN_USE};
use tandem_core::sql::apply::{self as sql, SeenXmins};
use tandem_core::types::json_to_pg_text;
use tandem_core::upload::{merged_row, Outcome};
use tandem_core::{Error, Result};

use crate::spi::{self, PgError, Spi};

use super::plan::TablePlan;
use super::Upload;

/// How many times a write is retried against rows that other transactions
/// keep changing before the apply gives up (and can be retried whole).
const WRITE_ROUNDS: usize = 8;

/// What an error of a row's write says about the row. Its reason is the
/// error's message without its DETAIL, which can print the whole row
/// (columns the scope leaves out) or another tenant's conflicting values.
enum RowFault {
    /// A constraint refuses it (class 23): a conflict the server wins.
    Constraint,
    /// The server's rules refuse it: a trigger raised an error, a value a
    /// trigger or a generated column cannot take, a value too large for an
    /// index. The row is refused.
    Declined,
}

/// Whether a row's `xmin` is this transaction's: its own id or, since
/// every write attempt runs in a subtransaction, one of theirs.
fn written_by_this_transaction(xmin: &str) -> bool {
    // SAFETY: a lookup in this backend's transaction state, inside the
    // apply's transaction; it reads no shared memory and cannot error.
    xmin.parse::<u32>().is_ok_and(|xid| unsafe { pgrx::pg_sys::TransactionIdIsCurrentTransactionId(xid.into()) })
}

impl RowFault {
    /// `None` for errors that are not the row's but the server's (a lost
    /// connection, a serialization failure, a lock not granted in time or
    /// an object in use, a resource that ran out, a cancel): those fail the
    /// apply, and pass. Any other error a row's write raises is the row's:
    /// a constraint (class 23), or the server's rules (a trigger's
    /// exception with any code, `object_not_in_prerequisite_state` too,
    /// which failed every upload of the row until the trigger changed:
    /// helper 107; a row security policy, a value a type or index cannot
    /// take).
    fn of(error: &PgError) -> Option<Self> {
        if [LOCK_NOT_AVAILABLE, OBJECT_IN_USE].contains(&error.sqlstate.as_str()) {
            return None;
        }
        match error.sqlstate.get(..2) {
            Some("23") => Some(RowFault::Constraint),
            // (A trigger's own SQLSTATE outside PostgreSQL's list reaches
            // Tandem as XX000: the row's too.)
            Some("08" | "25" | "40" | "53" | "57" | "58" | "F0" | "HV") => None,
            Some(_) => Some(RowFault::Declined),
            None => None,
        }
    }
}

/// What one write attempt wrote.
struct Attempt {
    written: Vec<usize>,
    /// An inserted row is at a key none of the attempt's rows has: a
    /// trigger gave it one of its own.
    rekeyed: bool,
}

impl Attempt {
    /// The rows written: for an attempt of one row stored at another key,
    /// that row.
    fn rows(self, idx: &[usize]) -> Vec<usize> {
        match idx {
            [i] if self.rekeyed => vec![*i],
            _ => self.written,
        }
    }
}

impl Upload<'_> {
    /// Writes the rows of `plan` whose op is `op` and that apply as sent (or
    /// won their conflict), classifying again rows that changed underneath.
    pub fn write_table(&self, spi: &mut Spi<'_>, plan: &mut TablePlan<'_>, op: Op) -> Result<()> {
        let mut pending: Vec<usize> = (0..plan.rows.len()).filter(|&i| plan.rows[i].to_write(op)).collect();
        // Rows this transaction changed itself since they were classified,
        // already tried again once on that change.
        let mut tried_on_own_change = HashSet::new();
        for _ in 0..WRITE_ROUNDS {
            if pending.is_empty() {
                return Ok(());
            }
            let written = self.write_rows(spi, plan, op, &pending)?;
            let done: HashSet<usize> = written.iter().copied().collect();
            for &i in &written {
                plan.rows[i].written = true;
            }
            let missed: Vec<usize> = pending.iter().copied().filter(|i| !done.contains(i) && plan.rows[*i].to_write(op)).collect();
            if missed.is_empty() {
                return Ok(());
            }
            // These rows changed since they were classified, or a trigger
            // skipped their write: classify them again.
            let before: Vec<(bool, Option<String>)> =
                missed.iter().map(|&i| (plan.rows[i].server.exists, plan.rows[i].server.xmin.clone())).collect();
            self.classify(spi, plan, &missed)?;
            let mut conflicts = Vec::new();
            let filtered = plan.table.filter.is_some();
            for (&i, (existed, xmin_before)) in missed.iter().zip(before) {
                let row = &mut plan.rows[i];
                // Moved to another partition meanwhile: no longer the
                // client's to write, nor to see.
                if filtered && super::classify::refuse_if_outside(row) {
                    continue;
                }
                if op == Op::Upsert && !existed && !row.server.exists {
                    self.insert_strictly(spi, plan, i)?;
                    continue;
                }
                let xmin = row.server.xmin.as_deref();
                if row.server.exists && xmin == xmin_before.as_deref() {
                    // The write matched and changed nothing: a BEFORE
                    // trigger returned NULL.
                    row.violates("a trigger on the server declined the write; the server's row stays".into());
                    continue;
                }
                // Changed by this apply itself (a trigger of an earlier
                // write): the server's code made the row something other
                // than what the device's change was made on, so the change
                // meets it as any conflict, settled by the policy and
                // logged; a trigger that changes the row again instead of
                // each write declines it (a soft delete under client_wins).
                let own_change = row.server.exists && xmin.is_some_and(written_by_this_transaction);
                // The server's cascade of a parent's key change this upload
                // wrote moved the row: its change goes on over that, once.
                if own_change && row.follows_own_move && tried_on_own_change.insert(i) {
                    row.outcome = Outcome::Apply;
                    continue;
                }
                if own_change && !tried_on_own_change.insert(i) {
                    row.violates("a trigger on the server changed the row instead of writing it; the server's row stays".into());
                    continue;
                }
                row.decide(false);
                if row.unsettled() {
                    conflicts.push(i);
                }
            }
            self.fetch_before(spi, plan, &conflicts)?;
            for i in conflicts {
                self.settle(spi, plan, i)?;
            }
            pending = missed.into_iter().filter(|&i| plan.rows[i].to_write(op)).collect();
        }
        if pending.is_empty() {
            Ok(())
        } else {
            Err(Error::Database {
                sqlstate: "40001".into(),
                message: format!(
                    "rows of {} kept changing while this changeset was applied; nothing was applied: retry the sync",
                    plan.table.name
                ),
            })
        }
    }

    /// Inserts row `i` strictly: it was not taken by a concurrent insert of
    /// its key, so another unique value of the row is in use, or a trigger
    /// declined it. The error says which (or the row is written, if that
    /// other row went).
    fn insert_strictly(&self, spi: &mut Spi<'_>, plan: &mut TablePlan<'_>, i: usize) -> Result<()> {
        let strict = sql::insert_rows(self.scope, self.staged, plan.t, &plan.types, &[i], true);
        let row = &mut plan.rows[i];
        match spi::in_subtransaction(|| spi::with_owners_text_settings(spi, |spi| spi::all(spi, strict))) {
            // Stored, at its key or at one a trigger gave it.
            Ok(Ok(done)) if !done.is_empty() => row.written = true,
            Ok(Err(error)) => return Err(error),
            Ok(Ok(_)) => row.violates("a trigger on the server declined the insert".into()),
            Err(error) => match RowFault::of(&error) {
                Some(RowFault::Constraint) => row.violates(error.message.clone()),
                Some(RowFault::Declined) => row.outcome = Outcome::Refused { kind: RejectionKind::Declined, reason: error.message.clone() },
                None => return Err(error.into()),
            },
        }
        Ok(())
    }

    /// One write attempt for `idx`, set-based; when a constraint fails, row
    /// by row, each failing row becoming a `constraint_violated` conflict.
    fn write_rows(&self, spi: &mut Spi<'_>, plan: &mut TablePlan<'_>, op: Op, idx: &[usize]) -> Result<Vec<usize>> {
        // The statements run the users' triggers and defaults, with the
        // owner's text settings (see `spi::with_owners_text_settings`).
        let attempt = |spi: &mut Spi<'_>, plan: &TablePlan<'_>, rows: &[usize]| -> Result<Attempt> {
            spi::with_owners_text_settings(spi, |spi| self.attempt(spi, plan, op, rows))
        };
        // A row a trigger stored at a key of its own cannot be told from
        // the others of its statement: those go row by row, so each row is
        // known written (and never inserted a second time).
        let ambiguous = |done: &Result<Attempt>| idx.len() > 1 && matches!(done, Ok(a) if a.rekeyed);
        match spi::in_subtransaction_kept_if(|| attempt(spi, plan, idx), |done| !ambiguous(done)) {
            Ok(done) if ambiguous(&done) => self.write_each(spi, plan, idx, attempt),
            Ok(done) => done.map(|d| d.rows(idx)),
            Err(error) if RowFault::of(&error).is_some() => self.write_each(spi, plan, idx, attempt),
            Err(error) => Err(error.into()),
        }
    }

    /// The statements of one [`Self::write_rows`] attempt for `rows`: one
    /// UPDATE of the key for moves, one UPDATE or DELETE of the rows that
    /// are there, one INSERT of the rest.
    fn attempt(&self, spi: &mut Spi<'_>, plan: &TablePlan<'_>, op: Op, rows: &[usize]) -> Result<Attempt> {
        let (live, new): (Vec<usize>, Vec<usize>) = rows.iter().partition(|&&i| plan.rows[i].server.exists);
        // Key changes whose old row is there: one UPDATE of the key.
        let (moves, live): (Vec<usize>, Vec<usize>) = live.iter().partition(|&&i| plan.rows[i].is_move());
        let mut written = Vec::with_capacity(rows.len());
        if !moves.is_empty() && op == Op::Upsert {
            let seen: Vec<(usize, Option<&str>)> = moves.iter().map(|&i| (i, plan.rows[i].server.xmin.as_deref())).collect();
            let statement = sql::move_rows(self.scope, self.staged, plan.t, &plan.types, &moves, SeenXmins::new(&seen));
            written.extend(spi::with_index_probes(spi, |spi| spi::all(spi, statement))?);
        }
        if !live.is_empty() {
            let seen: Vec<(usize, Option<&str>)> = live.iter().map(|&i| (i, plan.rows[i].server.xmin.as_deref())).collect();
            let seen = SeenXmins::new(&seen);
            let statement = match op {
                Op::Upsert => sql::update_rows(self.scope, self.staged, plan.t, &plan.types, &live, seen),
                Op::Delete => sql::delete_rows(self.scope, self.staged, plan.t, &live, seen),
            };
            let mark = match op {
                Op::Delete => spi::one::<i64>(spi, "SELECT nextval('tandem.log_seq')", &[])?,
                Op::Upsert => None,
            };
            // By key, row by row: a hash of the whole user table per
            // batch made an upload's cost grow with the table.
            written.extend(spi::with_index_probes(spi, |spi| spi::all(spi, statement))?);
            if let Some(mark) = mark {
                self.refuse_unseen_removals(spi, plan, mark)?;
            }
        }
        let mut rekeyed = false;
        if !new.is_empty() && op == Op::Upsert {
            for inserted in spi::all(spi, sql::insert_rows(self.scope, self.staged, plan.t, &plan.types, &new, false))? {
                match inserted {
                    Some(i) => written.push(i),
                    None => rekeyed = true,
                }
            }
        }
        Ok(Attempt { written, rekeyed })
    }

    /// Fails the attempt, as a constraint would, when its deletes took
    /// rows the uploader had not received (see [`sql::unseen_removals`]):
    /// rolled back, the rows go one by one, and each delete that takes
    /// such a row is a `constraint_violated` conflict the server wins. The
    /// device gets the row back, and the rows under it with its pull.
    fn refuse_unseen_removals(&self, spi: &mut Spi<'_>, plan: &TablePlan<'_>, mark: i64) -> Result<()> {
        let scope = self.scope;
        let tables: Vec<usize> = (0..scope.schema.tables.len()).filter(|&u| scope.table(u).direction.downloads()).collect();
        let deleting: Vec<usize> = (0..plan.rows.len()).filter(|&i| plan.rows[i].to_write(Op::Delete)).collect();
        let check = sql::unseen_removals(scope, self.staged, plan.t, &tables, self.uploader.seen, self.filters, mark, &deleting);
        let Some(check) = check else { return Ok(()) };
        let hit = spi::all(spi, check)?;
        if hit.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = hit.iter().map(|&u| scope.table(u).name.as_str()).collect();
        pgrx::ereport!(
            pgrx::PgLogLevel::ERROR,
            pgrx::PgSqlErrorCode::ERRCODE_FOREIGN_KEY_VIOLATION,
            format!(
                "deleting this row would also delete rows of {} that this device never received (the server's ON DELETE \
                 CASCADE or a trigger; another writer added or changed them since this device last pulled, or they are outside \
                 its partition): the server keeps the row; the device takes it back, and may delete it again",
                names.join(", ")
            )
        );
        // (An ERROR does not return: the attempt's subtransaction catches it.)
        Ok(())
    }

    /// [`Self::write_rows`]' attempt for each row of `idx` on its own, each
    /// failing row becoming its conflict or refusal.
    fn write_each(
        &self,
        spi: &mut Spi<'_>,
        plan: &mut TablePlan<'_>,
        idx: &[usize],
        attempt: impl Fn(&mut Spi<'_>, &TablePlan<'_>, &[usize]) -> Result<Attempt>,
    ) -> Result<Vec<usize>> {
        let mut written = Vec::new();
        for &i in idx {
            match spi::in_subtransaction(|| attempt(spi, plan, &[i])) {
                Ok(result) => written.extend(result?.rows(&[i])),
                Err(error) => match RowFault::of(&error) {
                    Some(RowFault::Constraint) => plan.rows[i].violates(error.message.clone()),
                    Some(RowFault::Declined) => {
                        plan.rows[i].outcome = Outcome::Refused { kind: RejectionKind::Declined, reason: error.message.clone() }
                    }
                    None => return Err(error.into()),
                },
            }
        }
        Ok(written)
    }

    /// Writes the rows resolvers returned; they go to every client, the
    /// uploader included. Columns a resolver leaves out keep the server's
    /// value (or the client's, when the server row is gone).
    pub fn write_merged(&self, spi: &mut Spi<'_>, plan: &TablePlan<'_>) -> Result<()> {
        let table = plan.table;
        for row in &plan.rows {
            let Outcome::Conflict { settlement: Some(settlement), .. } = &row.outcome else { continue };
            let Some(merged) = &settlement.merged else { continue };
            let resolver_error = |reason: String| Error::Resolver { name: plan.policy.resolver_name().to_string(), reason };
            let server_row = row.before.as_ref().and_then(|b| b.row.as_ref());
            let merged =
                merged_row(table, &row.change.key, server_row, row.client_row(&plan.column_names), merged).map_err(resolver_error)?;
            let mut values = Vec::new();
            for (c, column) in table.columns.iter().enumerate() {
                let Some(value) = merged.get(&column.name) else { continue };
                let text =
                    json_to_pg_text(column.ty, value).map_err(|reason| resolver_error(format!("column {}: {reason}", column.name)))?;
                values.push((c, text));
            }
            // A key change: the row at the old key moves first, so the
            // resolver's row replaces it rather than joining it.
            if let (Some(moved), true) = (&row.change.moved_from, row.server.exists) {
                if let Some(statement) = sql::move_key(self.scope, plan.t, &moved.key, &row.change.key) {
                    spi::run(spi, statement)?;
                }
            }
            let [update, insert] = sql::merged_writes(self.scope, plan.t, &values);
            if spi::run(spi, update)? == 0 {
                spi::run(spi, insert)?;
            }
        }
        Ok(())
    }
}
