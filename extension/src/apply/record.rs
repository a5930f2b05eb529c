//! What an apply leaves behind: every conflict in `tandem.conflicts`, and
//! what the upload applied, under its id, so a retry of it (its answer
//! lost) is acknowledged instead of applied twice.

use std::collections::HashSet;

use serde_json::{json, Value};
use tandem_core::apply_result::{ApplyResult, ConflictReport};
use tandem_core::changeset::Op;
use tandem_core::conflict::{ConflictKind, Decision};
use tandem_core::sql::registry as sql;
use tandem_core::sql::Scope;
use tandem_core::upload::AppliedChange;
use tandem_core::upload::{LoggedConflict, Outcome};
use tandem_core::{Error, Result};

use crate::registry;
use crate::spi::{self, Spi};

use super::plan::TablePlan;

/// The upload an upload retries: the replica's last one, when it carries
/// that one's id.
#[derive(Debug, Default)]
pub struct Retry {
    /// The retried upload's transaction.
    pub version: Option<String>,
    /// The changes it applied.
    pub applied: HashSet<AppliedChange>,
}

/// What the upload that this one retries applied (nothing when it retries
/// none, or carries no id). Refuses a replica id another client uses.
pub fn retry_of(spi: &Spi<'_>, replica: &str, client_id: &str, upload_id: Option<&str>) -> Result<Retry> {
    let stored = registry::find_replica(spi, replica, client_id)?;
    let Some(stored) = stored.filter(|s| upload_id.is_some() && s.last_upload.as_deref() == upload_id) else {
        return Ok(Retry::default());
    };
    let applied: Vec<AppliedChange> = match stored.last_applied.as_deref() {
        None => Vec::new(),
        Some(text) => {
            serde_json::from_str(text).map_err(|e| Error::Internal(format!("the last upload of replica {replica} is unreadable: {e}")))?
        }
    };
    Ok(Retry { version: stored.last_version, applied: applied.into_iter().collect() })
}

/// Records this upload's transaction and, when it has an id, what it
/// applied under that id.
pub fn record_upload(
    spi: &mut Spi<'_>,
    scope: &Scope<'_>,
    replica: &str,
    upload_id: Option<&str>,
    result: &ApplyResult,
    plans: &[TablePlan<'_>],
) -> Result<()> {
    let applied = match upload_id {
        None => None,
        Some(_) => {
            // A delete of a row the server never had (a file sends those
            // after a lost answer) leaves nothing to acknowledge, and is no
            // write of its key: a later insert of the key is new. A change
            // the retried upload applied stays known for the next retry
            // (a delete finds its row gone then: it deleted it).
            let wrote = |r: &&tandem_core::upload::UploadRow<Option<String>>| {
                r.change.op != Op::Delete || r.server.exists || r.outcome == Outcome::AlreadyApplied
            };
            let applied: Vec<AppliedChange> = plans
                .iter()
                .flat_map(|p| p.rows.iter().filter(wrote).filter_map(move |r| AppliedChange::of(scope.id(p.t), &r.change)))
                .collect();
            Some(serde_json::to_string(&applied).map_err(|e| Error::Internal(e.to_string()))?)
        }
    };
    let version = result.version.as_deref().ok_or_else(|| Error::Internal("an applied upload has no transaction id".into()))?;
    registry::record_upload(spi, replica, upload_id, version, applied.as_deref())
}

/// For changes the upload this one retries applied already: the conflict
/// that earlier attempt settled and logged for exactly that change, if it
/// did, so the answer reports it again (the first answer, with the report,
/// was lost; the uploader's own log would never get it). Read with the
/// extension's rights, before the apply takes the scope owner's: the owner
/// may not read the conflict log of every scope.
pub fn find_logged(
    spi: &Spi<'_>,
    scope: &str,
    client_id: &str,
    table_id: i64,
    applied: &HashSet<AppliedChange>,
    plan: &mut TablePlan<'_>,
) -> Result<()> {
    let retried: Vec<usize> = (0..plan.rows.len()).filter(|&i| AppliedChange::carried(applied, table_id, &plan.rows[i].change)).collect();
    if retried.is_empty() {
        return Ok(());
    }
    let keys: Vec<String> = retried.iter().map(|&i| Value::Array(plan.rows[i].change.key.clone()).to_string()).collect();
    // Each logged entry's key and sent row parsed once, not once per
    // retried row it is compared with.
    let parse = |text: Option<&str>| -> Option<Value> { text.and_then(|t| serde_json::from_str(t).ok()) };
    let mut logged = Vec::new();
    spi::each(spi, sql::logged_conflicts(scope, client_id, &plan.table.name, keys), |row| {
        logged.push((parse(Some(&row.key)), parse(row.client_row.as_deref()), row));
        Ok(())
    })?;
    for i in retried {
        let row = &mut plan.rows[i];
        let sent = row.client_row(&plan.column_names).map(Value::Object);
        let key = Some(Value::Array(row.change.key.clone()));
        // The latest entry for this very change: same key, same row sent.
        let found = logged.iter().rev().find(|(k, c, _)| *k == key && *c == sent);
        if let Some((_, _, l)) = found {
            if let (Some(kind), Some(decision)) = (ConflictKind::parse(&l.kind), Decision::parse(&l.decision)) {
                let server_row = parse(l.server_row.as_deref()).and_then(|v| v.as_object().cloned());
                row.logged = Some(LoggedConflict { kind, decision, server_row, reason: l.reason.clone() });
            }
        }
    }
    Ok(())
}

/// Every conflict goes to `tandem.conflicts` with both rows and the
/// decision: the losing version is never lost. One an earlier attempt of
/// the upload logged, reported again, is not logged twice.
pub fn log_conflicts(spi: &mut Spi<'_>, scope: &str, client_id: &str, plans: &[TablePlan<'_>], conflicts: &[ConflictReport]) -> Result<()> {
    let again: HashSet<(&str, String)> = plans
        .iter()
        .flat_map(|p| {
            p.rows
                .iter()
                .filter(|r| r.logged.is_some() && r.outcome == Outcome::AlreadyApplied)
                .map(move |r| (p.table.name.as_str(), Value::Array(r.change.key.clone()).to_string()))
        })
        .collect();
    let fresh: Vec<&ConflictReport> =
        conflicts.iter().filter(|c| !again.contains(&(c.table.as_str(), Value::Array(c.key.clone()).to_string()))).collect();
    if fresh.is_empty() {
        return Ok(());
    }
    let rows: Vec<Value> = fresh
        .iter()
        .map(|c| {
            json!({
                "scope": scope, "table_name": c.table, "key": c.key, "kind": c.kind.as_str(),
                "decision": c.decision.as_str(), "server_row": c.server_row, "client_row": c.client_row,
                "resolved_row": c.row, "reason": c.reason, "client_id": client_id,
            })
        })
        .collect();
    spi::exec(
        spi,
        "INSERT INTO tandem.conflicts (scope, table_name, key, kind, decision, server_row, client_row, resolved_row, reason, client_id) \
         SELECT scope, table_name, key, kind, decision, server_row, client_row, resolved_row, reason, client_id \
         FROM jsonb_to_recordset($1::text::jsonb) AS x(scope text, table_name text, key jsonb, kind text, decision text, \
              server_row jsonb, client_row jsonb, resolved_row jsonb, reason text, client_id text)",
        &[Value::Array(rows).to_string().into()],
    )?;
    Ok(())
}
