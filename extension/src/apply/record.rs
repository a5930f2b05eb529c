//! What an apply leaves behind: every conflict in `tandem.conflicts`, and
//! what the upload applied, under its id, so a retry of it (its answer
//! lost) is acknowledged instead of applied twice.

use std::collections::HashSet;

use serde_json::{json, Value};
use tandem_core::apply_result::{ApplyResult, ConflictReport};
use tandem_core::sql::Scope;
use tandem_core::upload::AppliedChange;
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

/// Records what this upload applied, under its id.
pub fn record_upload(
    spi: &mut Spi<'_>,
    scope: &Scope<'_>,
    replica: &str,
    upload_id: &str,
    result: &ApplyResult,
    plans: &[TablePlan<'_>],
) -> Result<()> {
    let applied: Vec<AppliedChange> =
        plans.iter().flat_map(|p| p.rows.iter().filter_map(move |r| AppliedChange::of(scope.id(p.t), &r.change))).collect();
    let applied = serde_json::to_string(&applied).map_err(|e| Error::Internal(e.to_string()))?;
    let version = result.version.as_deref().ok_or_else(|| Error::Internal("an applied upload has no transaction id".into()))?;
    registry::record_upload(spi, replica, upload_id, version, &applied)
}

/// Every conflict goes to `tandem.conflicts` with both rows and the
/// decision: the losing version is never lost.
pub fn log_conflicts(spi: &mut Spi<'_>, scope: &str, client_id: &str, conflicts: &[ConflictReport]) -> Result<()> {
    if conflicts.is_empty() {
        return Ok(());
    }
    let rows: Vec<Value> = conflicts
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
