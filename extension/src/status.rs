//! `sync_status` and `sync_cleanup`: what a scope holds, who syncs it, and
//! purging tombstones no active client still needs.

use pgrx::prelude::*;
use serde_json::{json, Value};
use tandem_core::options::CleanupOptions;
use tandem_core::watermark::Snapshot;
use tandem_core::{Error, Result};

use crate::clients;
use crate::fold;
use crate::json_text::JsonbText;
use crate::privileges;
use crate::registry;
use crate::report::{self, required, run};
use crate::spi::{self, Spi};

/// Tables with their tracked rows and tombstones, clients with when they last
/// synced, the conflict count, and the current snapshot.
#[pg_extern(volatile, security_definer)]
fn sync_status(scope: Option<&str>) -> JsonbText {
    run("sync_status", || {
        let scope = required(scope, "scope")?;
        spi::connect(|spi| status(spi, scope)).map(|v| JsonbText::from_value(&v))
    })
}

/// Purges tombstones and exit records that every active replica has
/// already pulled past. A replica whose watermark is older than the purge
/// must sync again from NULL (it gets a clear error saying so).
#[pg_extern(volatile, security_definer)]
fn sync_cleanup(scope: Option<&str>, options: default!(Option<JsonbText>, "'{}'")) -> JsonbText {
    run("sync_cleanup", || {
        let scope = required(scope, "scope")?;
        let options = CleanupOptions::parse(report::options(options)?.as_ref())?;
        spi::connect(|spi| {
            crate::cluster::ensure_here(spi)?;
            cleanup(spi, scope, &options)
        })
        .map(|v| JsonbText::from_value(&v))
    })
}

fn status(spi: &mut Spi<'_>, scope_name: &str) -> Result<Value> {
    privileges::require_owner(spi, scope_name, "sync_status")?;
    let stored = registry::load_scope(spi, scope_name)?;
    let scope = stored.scope();
    privileges::as_scope_owner(spi, scope_name, |spi| fold::fold(spi, &scope, 0..scope.schema.tables.len()))?;
    let mut tables = Vec::new();
    for (t, table) in scope.schema.tables.iter().enumerate() {
        let counts = spi::query(
            spi,
            &format!(
                "SELECT count(*) FILTER (WHERE NOT tandem_deleted), count(*) FILTER (WHERE tandem_deleted), \
                        (SELECT count(*) FROM {}) FROM {}",
                scope.exits(t),
                scope.track(t)
            ),
            &[],
            |row| Ok((spi::required::<i64>(row, 1)?, spi::required::<i64>(row, 2)?, spi::required::<i64>(row, 3)?)),
        )?;
        let (rows, tombstones, exits) = counts.into_iter().next().unwrap_or_default();
        tables.push(json!({
            "name": table.name, "direction": table.direction, "rows": rows,
            "tombstones": tombstones, "exits": exits,
        }));
    }
    let clients = clients::list(spi, scope_name)?;
    let conflicts = spi::one::<i64>(spi, "SELECT count(*) FROM tandem.conflicts WHERE scope = $1", &[scope_name.into()])?;
    let snapshot = spi::one::<String>(spi, "SELECT pg_current_snapshot()::text", &[])?;
    Ok(json!({
        "scope": scope_name,
        "schema_version": scope.schema.version,
        "watermark": snapshot,
        "purged_before": stored.purged_before,
        "tables": tables,
        "conflicts": conflicts.unwrap_or_default(),
        "clients": clients,
    }))
}

fn cleanup(spi: &mut Spi<'_>, scope_name: &str, options: &CleanupOptions) -> Result<Value> {
    privileges::require_owner(spi, scope_name, "sync_cleanup")?;
    let stored = registry::load_scope(spi, scope_name)?;
    let scope = stored.scope();
    privileges::as_scope_owner(spi, scope_name, |spi| fold::fold(spi, &scope, 0..scope.schema.tables.len()))?;
    let days = i64::from(options.inactive_after_days.unwrap_or(30));
    let needs = spi::query(
        spi,
        "SELECT r.replica_id, r.last_since FROM tandem.replicas r JOIN tandem.clients c ON c.client_id = r.client_id \
         WHERE c.scope = $1 AND r.last_seen > now() - make_interval(days => $2::int8::int4)",
        &[scope_name.into(), days.into()],
        |row| Ok((spi::required_text(row, 1)?, spi::text(row, 2)?)),
    )?;
    let current = spi::one::<String>(spi, "SELECT pg_current_snapshot()::text", &[])?.unwrap_or_default();
    let mut horizon = Snapshot::parse(&current).map(|s| s.xmin).ok_or_else(|| Error::Internal("unreadable snapshot".into()))?;
    let purged = stored.purged_before.as_deref().and_then(|p| p.parse::<u64>().ok()).unwrap_or(0);
    let mut holding = 0;
    for (_, since) in &needs {
        match since.as_deref().and_then(Snapshot::parse) {
            // Past an earlier cleanup already: it pulls again from NULL,
            // and holds nothing back.
            Some(snapshot) if snapshot.xmin < purged => {}
            Some(snapshot) => {
                horizon = horizon.min(snapshot.xmin);
                holding += 1;
            }
            // A replica that has never finished a pull may need anything.
            None => {
                horizon = 0;
                holding += 1;
            }
        }
    }
    let mut removed_tombstones = 0;
    let mut removed_exits = 0;
    if horizon > 0 {
        let horizon_text = horizon.to_string();
        // The tracking tables are the owner's (rules or triggers it put on
        // them run with its rights).
        privileges::as_scope_owner(spi, scope_name, |spi| {
            for t in 0..scope.schema.tables.len() {
                removed_tombstones += spi::exec(
                    spi,
                    &format!("DELETE FROM {} WHERE tandem_deleted AND tandem_stamp < $1::text::xid8", scope.track(t)),
                    &[horizon_text.as_str().into()],
                )?;
                removed_exits += spi::exec(
                    spi,
                    &format!("DELETE FROM {} WHERE tandem_stamp < $1::text::xid8", scope.exits(t)),
                    &[horizon_text.as_str().into()],
                )?;
            }
            Ok(())
        })?;
        spi::exec(
            spi,
            "UPDATE tandem.scopes SET purged_before = greatest(coalesce(purged_before, '0'::xid8), $2::text::xid8) WHERE name = $1",
            &[scope_name.into(), horizon_text.into()],
        )?;
    }
    Ok(json!({
        "scope": scope_name,
        "purged_before": (horizon > 0).then(|| horizon.to_string()),
        "tombstones_removed": removed_tombstones,
        "exits_removed": removed_exits,
        "active_replicas": holding,
    }))
}
