//! `sync_status` and `sync_cleanup`: what a scope holds, who syncs it, and
//! purging tombstones no active client still needs.

use pgrx::prelude::*;
use serde_json::{json, Value};
use tandem_core::options::CleanupOptions;
use tandem_core::sql::registry as sql;
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
        // An aggregate without GROUP BY: always one row.
        let sql::TrackingCounts { rows, tombstones, exits } = spi::first_mut(spi, sql::tracking_counts(&scope, t))?
            .ok_or_else(|| Error::Internal(format!("no counts of {}'s tracking", table.name)))?;
        tables.push(json!({
            "name": table.name, "direction": table.direction, "rows": rows,
            "tombstones": tombstones, "exits": exits,
        }));
    }
    let clients = clients::list(spi, scope_name)?;
    // An aggregate without GROUP BY: always one row.
    let conflicts = spi::first_mut(spi, sql::conflict_count(scope_name))?.ok_or_else(|| Error::Internal("no count of conflicts".into()))?;
    let snapshot = current_snapshot(spi)?;
    Ok(json!({
        "scope": scope_name,
        "schema_version": scope.schema.version,
        "watermark": snapshot,
        "purged_before": stored.purged_before,
        "tables": tables,
        "conflicts": conflicts,
        "clients": clients,
    }))
}

fn cleanup(spi: &mut Spi<'_>, scope_name: &str, options: &CleanupOptions) -> Result<Value> {
    privileges::require_owner(spi, scope_name, "sync_cleanup")?;
    let stored = registry::load_scope(spi, scope_name)?;
    let scope = stored.scope();
    privileges::as_scope_owner(spi, scope_name, |spi| fold::fold(spi, &scope, 0..scope.schema.tables.len()))?;
    let days = i64::from(options.inactive_after_days.unwrap_or(30));
    let needs = spi::all(spi, sql::active_replicas(scope_name, days))?;
    let current = current_snapshot(spi)?;
    let mut horizon = Snapshot::parse(&current).map(|s| s.xmin).ok_or_else(|| Error::Internal(format!("unreadable snapshot {current}")))?;
    let purged = stored.purged_before.as_deref().and_then(|p| p.parse::<u64>().ok()).unwrap_or(0);
    let mut holding = 0;
    for replica in &needs {
        match replica.needs_after.as_deref().and_then(Snapshot::parse) {
            // Past an earlier cleanup already: it pulls again from NULL,
            // and holds nothing back.
            Some(snapshot) if snapshot.xmin < purged => {}
            Some(snapshot) => {
                horizon = horizon.min(snapshot.xmin);
                holding += 1;
            }
            // No pull on record (its uploads made it): its first pull from
            // a watermark is refused as too old, and it pulls afresh, so it
            // needs nothing kept. Holding everything back for it let one
            // token's uploads under made-up replica ids stop every cleanup
            // (helper 74).
            None => {}
        }
    }
    let mut removed_tombstones = 0;
    let mut removed_exits = 0;
    if horizon > 0 {
        // The tracking tables are the owner's (rules or triggers it put on
        // them run with its rights).
        privileges::as_scope_owner(spi, scope_name, |spi| {
            for t in 0..scope.schema.tables.len() {
                removed_tombstones += spi::run(spi, sql::purge_tombstones(&scope, t, horizon))?;
                removed_exits += spi::run(spi, sql::purge_exits(&scope, t, horizon))?;
            }
            Ok(())
        })?;
        spi::run(spi, sql::set_purged_before(scope_name, horizon))?;
    }
    Ok(json!({
        "scope": scope_name,
        "purged_before": (horizon > 0).then(|| horizon.to_string()),
        "tombstones_removed": removed_tombstones,
        "exits_removed": removed_exits,
        "active_replicas": holding,
    }))
}

/// The current snapshot as text (`xmin:xmax:xip,...`).
fn current_snapshot(spi: &mut Spi<'_>) -> Result<String> {
    spi::first_mut(spi, sql::current_snapshot())?.flatten().ok_or_else(|| Error::Internal("pg_current_snapshot() returned nothing".into()))
}
