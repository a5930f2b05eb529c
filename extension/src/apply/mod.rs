//! `sync_apply_changes`: applies an upload in one transaction, set-based.
//! Every uploaded row goes through the same steps as one
//! [`UploadRow`](tandem_core::upload::UploadRow), each step a module:
//!
//! - [`plan`]: the checked changeset, table by table, with what each table
//!   admits (direction, partition columns);
//! - [`stage`]: each table's rows into a typed temporary table;
//! - [`classify`]: each row against the server's version and the client's
//!   partition, then decided by the version rules;
//! - [`settle`]: conflicts, by the policy or a resolver; the server's rows
//!   the uploader takes;
//! - [`write`]: one statement per kind of write, comparing each row's `xmin`
//!   with the one classified, so a row changed concurrently is classified
//!   again instead of being overwritten;
//! - [`echo`]: the written rows as the apply leaves them, after every
//!   trigger and cascade: only rows left exactly as sent are the uploader's
//!   echo, anything else goes back to it;
//! - [`record`]: the conflict log and what the upload applied, so a retry
//!   of it is acknowledged instead of applied twice.
//!
//! Nothing is written before every row passed its checks: a refused row
//! fails the whole upload, with each refused row named in the DETAIL.

mod classify;
mod echo;
mod parents;
mod plan;
mod record;
mod references;
mod settle;
mod stage;
mod write;

use pgrx::prelude::*;
use tandem_core::apply_result::ApplyResult;
use tandem_core::changeset::Op;
use tandem_core::options::{ApplyOptions, Policy, Seen};
use tandem_core::sql::partition::{bind_params, FilterValues};
use tandem_core::sql::{apply as sql, Scope};
use tandem_core::upload::{build_result, AppliedChange, Outcome, ReportedTable};
use tandem_core::{Error, Result};

use crate::catalog;
use crate::fold;
use crate::json_text::{JsonText, JsonbText};
use crate::privileges;
use crate::registry;
use crate::report::{self, required, run};
use crate::spi::{self, Spi};

pub use parents::ForeignKey;
use plan::TablePlan;

/// Applies a changeset from a client in one transaction and returns the new
/// versions of the rows it wrote and how each conflict ended. Any refused row
/// fails the whole changeset, with each refused row named in the DETAIL.
#[pg_extern(volatile, security_definer)]
fn sync_apply_changes(scope: Option<&str>, changeset: Option<JsonbText>, options: default!(Option<JsonbText>, "'{}'")) -> JsonbText {
    run("sync_apply_changes", || {
        let scope = required(scope, "scope")?;
        let changeset = required(changeset, "changeset")?.0;
        let options = ApplyOptions::parse(report::options(options)?.as_ref())?;
        spi::connect(|spi| apply_changes(spi, scope, &changeset, &options).map(|r| JsonbText::from_value(&r)))
    })
}

/// `sync_apply_changes` with `json` text both ways, for agents that send the
/// changeset as they wrote it and parse the result themselves (no jsonb
/// parse and print of either).
#[pg_extern(volatile, security_definer)]
fn sync_apply_changes_json(scope: Option<&str>, changeset: Option<JsonText>, options: default!(Option<JsonbText>, "'{}'")) -> JsonText {
    run("sync_apply_changes_json", || {
        let scope = required(scope, "scope")?;
        let changeset = required(changeset, "changeset")?.0;
        let options = ApplyOptions::parse(report::options(options)?.as_ref())?;
        let result = spi::connect(|spi| apply_changes(spi, scope, &changeset, &options))?;
        serde_json::to_string(&result).map(JsonText).map_err(|e| Error::Internal(format!("the apply's result does not serialize: {e}")))
    })
}

/// What every step of one apply needs to know.
pub(crate) struct Upload<'a> {
    scope: &'a Scope<'a>,
    scope_name: &'a str,
    /// For each table of the scope, the columns its upload carries.
    staged: sql::Staged<'a>,
    client_id: &'a str,
    /// The uploading file, and the upload this one retries, if it does.
    uploader: sql::Uploader<'a>,
    /// What the file said it had received, for the keys it kept beside a
    /// delete it did not take (`seen.kept`).
    kept: Option<&'a Seen>,
    retried: &'a std::collections::HashSet<AppliedChange>,
    /// The client's filter parameters, bound as text.
    filters: &'a FilterValues,
}

pub fn apply_changes(spi: &mut Spi<'_>, scope_name: &str, text: &str, options: &ApplyOptions) -> Result<ApplyResult> {
    // The rows are read once the scope's schema is known (see `plan`).
    let origin = tandem_core::changeset::origin(text)?;
    if crate::guc::get("session_replication_role")? == "replica" {
        return Err(Error::ReplicaRole);
    }
    crate::guc::refuse_read_only("sync_apply_changes")?;
    if origin.is_empty() {
        return Err(Error::Malformed { what: "changeset", reason: "\"origin\" is empty: it names the uploading client".into() });
    }
    let claimed = options.client_id.as_deref().or(if options.token.is_some() { None } else { Some(origin.as_str()) });
    let (stored, identity) = registry::device_caller(spi, scope_name, claimed, options.token.as_deref(), options.params.as_ref())?;
    let scope = stored.scope();
    let client_id = identity.client_id.clone().unwrap_or_else(|| origin.clone());
    if client_id != origin {
        return Err(Error::IdentityMismatch { origin: origin.clone(), client: client_id });
    }
    let params = identity.filter_params(&scope, options.params.is_some());
    let replica = options.replica.clone().unwrap_or_else(|| client_id.clone());
    // One upload of a replica at a time: a device killed mid-upload sends
    // it again while the first attempt may still be running (a gateway or
    // a server session finishes it); the retry waits, then sees that
    // attempt's rows and record instead of meeting them as another
    // writer's (an invented `both_inserted` that lost the later edit).
    spi::exec(
        spi,
        "SELECT pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('tandem.replica'), pg_catalog.hashtext($1))",
        &[replica.as_str().into()],
    )?;
    let retry = record::retry_of(spi, &replica, &client_id, options.upload_id.as_deref())?;
    let (mut plans, rejections) = plan::plan(&scope, &stored.schema, text)?;
    // Parents first by the foreign keys the server has now (deletes go in
    // the reverse order).
    let order = catalog::parents_first(spi, &scope)?;
    plans.sort_by_key(|plan| order.iter().position(|&t| t == plan.t));
    for plan in plans.iter_mut() {
        if let Policy::Resolver(name) = &plan.policy {
            plan.policy = Policy::Resolver(catalog::find_resolver(spi, name)?);
        }
    }
    // Parameters of every table the upload touches, refused rows included
    // (their server rows are looked up for the client to take).
    // With `seen`, of every table a device holds too: a delete's cascade
    // is checked against the uploader's partition (see `write`).
    let held: Vec<usize> = match options.seen {
        Some(_) => (0..scope.schema.tables.len()).filter(|&u| scope.table(u).direction.downloads()).collect(),
        None => Vec::new(),
    };
    let touched: Vec<usize> =
        plans.iter().map(|p| p.t).chain(rejections.iter().filter_map(|r| scope.index_of(&r.table))).chain(held).collect();
    let filters = bind_params(&scope, &params, touched)?;
    let staged = plan::staged_columns(&scope, &plans);
    let seen = options.seen.as_ref().map(Seen::horizon).transpose()?;
    let uploader = sql::Uploader { replica: &replica, retrying: retry.version.is_some(), seen: seen.as_ref(), kept: &[] };
    let upload = Upload {
        scope: &scope,
        scope_name,
        staged: &staged,
        client_id: &client_id,
        uploader,
        kept: options.seen.as_ref(),
        retried: &retry.applied,
        filters: &filters,
    };

    for plan in plans.iter_mut() {
        record::find_logged(spi, scope_name, &client_id, scope.id(plan.t), &retry.applied, plan)?;
    }
    // The users' code the writes run (triggers, checks, the resolver) runs
    // with the scope owner's rights, never the extension's.
    let result = privileges::as_scope_owner(spi, scope_name, |spi| {
        spi::with_apply_settings(spi, |spi| {
            let work_mem = raise_work_mem()?;
            for plan in plans.iter_mut() {
                stage::stage(spi, &scope, plan, options.respellings == Some(true))?;
            }
            // Rows under a parent that another transaction is moving wait
            // for it, so they are classified where the move left them.
            for plan in plans.iter() {
                let moves = plan.rows.iter().any(|r| r.is_move());
                if let Some(lock) = sql::lock_parents(&scope, &staged, plan.t, moves) {
                    spi::run(spi, lock)?;
                }
            }
            // Classifying reads the logs too (what committed since the last
            // fold), joined row by row; folding just before keeps them short.
            fold::fold(spi, &scope, 0..scope.schema.tables.len())?;
            for plan in plans.iter_mut() {
                let staged: Vec<usize> =
                    (0..plan.rows.len()).filter(|&i| !matches!(plan.rows[i].outcome, Outcome::Refused { .. })).collect();
                upload.classify(spi, plan, &staged)?;
                classify::refuse_outside_partition(&scope, plan, upload.retried);
            }
            // Rows under a parent whose key change does not apply stay with
            // it (see `parents`), and rows may not point into another
            // partition (see `references`): the server's foreign keys say
            // which.
            let moving = plans.iter().any(|plan| plan.rows.iter().any(|row| row.is_move()));
            let filtered = scope.schema.tables.iter().any(|table| table.filter.is_some());
            let refusing = !rejections.is_empty() || plans.iter().any(TablePlan::has_refusals);
            let mut foreign_keys = if moving || filtered || refusing { catalog::foreign_keys(spi, &scope)? } else { Vec::new() };
            references::refuse_references_outside(spi, &scope, &staged, &mut plans, &foreign_keys, &filters)?;
            parents::refuse_with_refused_moves(spi, &scope, &staged, &mut plans, &foreign_keys)?;
            parents::refuse_under_refused(spi, &scope, &staged, &mut plans, &foreign_keys, &rejections)?;
            upload.fail_on_refusals(spi, &plans, &rejections)?;
            // Keys an earlier attempt of this upload wrote, by table.
            let carried: std::collections::HashSet<(i64, &str)> = upload.retried.iter().map(|c| (c.0, c.1.as_str())).collect();
            for plan in plans.iter_mut() {
                let table_id = scope.id(plan.t);
                for row in plan.rows.iter_mut() {
                    let retried = AppliedChange::carried(upload.retried, table_id, &row.change);
                    let carried_key = !carried.is_empty()
                        && carried.contains(&(table_id, serde_json::Value::Array(row.change.key.clone()).to_string().as_str()));
                    if carried_key {
                        row.own_if_written_by(retry.version.as_deref());
                    }
                    row.decide(retried);
                    row.settle_if_written_elsewhere(carried_key);
                }
                let conflicts: Vec<usize> = (0..plan.rows.len()).filter(|&i| plan.rows[i].unsettled()).collect();
                upload.fetch_before(spi, plan, &conflicts)?;
                for i in conflicts {
                    upload.settle(spi, plan, i)?;
                }
            }
            // Rows deleted with a parent whose delete does not apply stay
            // with it (see `parents`).
            let kept_parent = plans.iter().any(|plan| plan.rows.iter().any(parents::is_kept_delete));
            if kept_parent {
                if !(moving || filtered || refusing) {
                    foreign_keys = catalog::foreign_keys(spi, &scope)?;
                }
                parents::hold_to_kept_parents(spi, &scope, &staged, &mut plans, &foreign_keys)?;
            }
            // Deferred constraints are checked as each row is written, so a row
            // that breaks one is that row's outcome, not a failed commit.
            spi::exec(spi, "SET CONSTRAINTS ALL IMMEDIATE", &[])?;
            // The writes fire the tables' own triggers: with the caller's
            // path. When the server's own rules refused a row while it was
            // written, they are undone before the refused rows are looked
            // up: the client takes each as the failed upload leaves it, not
            // as a trigger of the undone attempt had made it.
            let writes = |spi: &mut Spi<'_>, plans: &mut [TablePlan<'_>]| -> Result<bool> {
                spi::as_users_code(spi, |spi| {
                    let mut unmoved = parents::Unmoved::new();
                    let mut moved = std::collections::HashMap::new();
                    for plan in plans.iter_mut() {
                        parents::hold_to_unmoved(spi, &scope, plan, &foreign_keys, &unmoved)?;
                        parents::follow_to_moved(spi, &scope, plan, &foreign_keys, &moved)?;
                        parents::follow_moved(spi, &scope, &staged, plan, &foreign_keys, &moved)?;
                        upload.write_table(spi, plan, Op::Upsert)?;
                        if moving {
                            unmoved.insert(plan.t, parents::unmoved_keys(plan));
                            moved.insert(plan.t, parents::moved_keys(plan));
                        }
                    }
                    for plan in plans.iter_mut().rev() {
                        upload.write_table(spi, plan, Op::Delete)?;
                    }
                    Ok(plans.iter().any(TablePlan::has_refusals))
                })
            };
            spi::in_subtransaction_kept_if(|| writes(spi, &mut plans), |refused| matches!(refused, Ok(false)))??;
            upload.fail_on_refusals(spi, &plans, &rejections)?;
            crate::guc::set_local("work_mem", &work_mem)?;
            spi::as_users_code(spi, |spi| plans.iter().try_for_each(|plan| upload.write_merged(spi, plan)))?;
            upload.mark_echoes(spi, &mut plans)?;
            // A retry that wrote nothing (its batch sent again as it was)
            // answers with the version of the attempt it retries: that is
            // the upload the replica's record keeps, and a file's echoes may
            // not run past its record (a pull would take the file for a
            // restored one and send its partition again).
            let wrote = plans.iter().any(|plan| plan.rows.iter().any(|row| row.written));
            let version = match (&retry.version, wrote) {
                (Some(lost_attempt), false) => lost_attempt.clone(),
                _ => spi::one::<String>(spi, "SELECT pg_current_xact_id()::text", &[])?
                    .ok_or_else(|| Error::Internal("the apply has no transaction id".into()))?,
            };
            for plan in plans.iter_mut() {
                let not_applied: Vec<usize> = (0..plan.rows.len()).filter(|&i| plan.rows[i].outcome != Outcome::Apply).collect();
                upload.fetch_after(spi, plan, &not_applied)?;
            }
            Ok(build_result(plans.iter().map(TablePlan::reported), &version, retry.version.as_deref()))
        })
    })?;
    record::log_conflicts(spi, scope_name, &client_id, &plans, &result.conflicts)?;
    registry::record_client(spi, scope_name, &client_id, &identity)?;
    registry::record_replica(spi, &replica, &client_id, None)?;
    record::record_upload(spi, &scope, &replica, options.upload_id.as_deref(), &result, &plans)?;
    Ok(result)
}

impl Upload<'_> {
    /// Fails the whole upload when a row was refused, naming each with the
    /// server's row when the client may see it; the uploader sets those
    /// rows aside and sends the rest again.
    fn fail_on_refusals(&self, spi: &mut Spi<'_>, plans: &[TablePlan<'_>], rejections: &[tandem_core::Rejection]) -> Result<()> {
        let mut refused = rejections.to_vec();
        refused.extend(plans.iter().flat_map(|p| p.rows.iter().filter_map(|r| r.rejection(&p.table.name))));
        if refused.is_empty() {
            return Ok(());
        }
        for rejection in refused.iter_mut() {
            self.visible_row(spi, rejection)?;
        }
        Err(Error::Rejected(refused))
    }
}

/// Room to sort and hash a large upload in memory; returns the setting to
/// put back.
fn raise_work_mem() -> Result<String> {
    let previous = crate::guc::get("work_mem")?;
    // SAFETY: a backend global PostgreSQL keeps in step with the setting (kB).
    if unsafe { pgrx::pg_sys::work_mem } < 64 * 1024 {
        crate::guc::set_local("work_mem", "64MB")?;
    }
    Ok(previous)
}

impl TablePlan<'_> {
    fn has_refusals(&self) -> bool {
        self.rows.iter().any(|row| matches!(row.outcome, Outcome::Refused { .. }))
    }

    fn reported(&self) -> ReportedTable<'_, Option<String>> {
        ReportedTable { name: &self.table.name, columns: &self.column_names, rows: &self.rows }
    }
}
