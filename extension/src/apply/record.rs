//! What an apply leaves behind: every conflict in `tandem.conflicts`, and
//! the highest change counter of each table a replica uploaded, so the same
//! changes uploaded again are acknowledged, not applied twice.

use std::collections::HashMap;

use serde_json::{json, Value};
use tandem_core::apply_result::ConflictReport;
use tandem_core::sql::Scope;
use tandem_core::Result;

use crate::spi::{self, Client};

use super::plan::TablePlan;

/// Every conflict goes to `tandem.conflicts` with both rows and the
/// decision: the losing version is never lost.
pub fn log_conflicts(spi: &mut Client<'_>, scope: &str, client_id: &str, conflicts: &[ConflictReport]) -> Result<()> {
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

/// The highest change counter of each table (by tracking id) the client
/// has had applied.
pub fn applied_seqs(spi: &mut Client<'_>, client_id: &str) -> Result<HashMap<i64, i64>> {
    let rows = spi::query(spi, "SELECT table_id, seq FROM tandem.client_seqs WHERE client_id = $1", &[client_id.into()], |row| {
        Ok((spi::get::<i64>(row, 1)?, spi::get::<i64>(row, 2)?))
    })?;
    Ok(rows.into_iter().filter_map(|(table, seq)| Some((table?, seq?))).collect())
}

/// Remembers the highest change counter of each table this client uploaded.
pub fn record_seqs(spi: &mut Client<'_>, scope: &Scope<'_>, client_id: &str, plans: &[TablePlan<'_>]) -> Result<()> {
    for plan in plans {
        let Some(seq) = plan.rows.iter().filter_map(|r| r.change.seq).max() else { continue };
        spi::exec(
            spi,
            "INSERT INTO tandem.client_seqs (client_id, table_id, seq) VALUES ($1, $2, $3) \
             ON CONFLICT (client_id, table_id) DO UPDATE SET seq = greatest(tandem.client_seqs.seq, excluded.seq)",
            &[client_id.into(), scope.id(plan.t).into(), seq.into()],
        )?;
    }
    Ok(())
}
