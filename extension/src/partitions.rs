//! Partitions of tracked tables. A write made to a partition directly fires
//! only the partition's statement triggers, so every partition of a tracked
//! partitioned table carries Tandem's triggers too. Event triggers
//! (`sql/bootstrap.sql`) keep them in step with the partition tree: a
//! partition created or attached later gets them (an attached table's rows
//! are sent as new), a detached one loses them (its rows are sent as
//! deletes), and dropping a partition that still holds synced rows is
//! refused, since its rows would vanish with no trigger seeing them.

use pgrx::prelude::*;
use tandem_core::sql::{tracking, Scope};
use tandem_core::{Error, Result};

use crate::registry::{self, StoredScope};
use crate::spi::{self, Spi};

/// A relation by oid and quoted, schema-qualified name.
struct Relation {
    oid: i64,
    quoted: String,
}

/// The functions the event triggers call, in Tandem's own schema (revoked
/// from PUBLIC below).
#[pg_schema]
mod tandem {
    use pgrx::prelude::*;
    use tandem_core::sql::tracking;
    use tandem_core::Error;

    use super::{carries_triggers, follow, tracked_as, tracked_ids};
    use crate::fold;
    use crate::privileges;
    use crate::report::run;
    use crate::spi;

    /// Brings the partitions of `root` (a tracked table) in step with its
    /// partition tree. Called by the event trigger after DDL. A root that
    /// does not carry its own triggers yet is being restored from a dump,
    /// which brings its partitions' triggers itself, after its constraints
    /// (whose ALTER TABLE brings us here): making them now would make the
    /// dump's fail.
    #[pg_extern(volatile)]
    fn follow_partitions(root: Option<i64>) {
        run("tandem.follow_partitions", || {
            let Some(root) = root else { return Ok(()) };
            spi::connect(|spi| {
                spi::quietly(spi, |spi| {
                    for (stored, index) in tracked_as(spi, root)? {
                        let tracked = stored.scope();
                        if !carries_triggers(spi, root, tracked.id(index))? {
                            continue;
                        }
                        privileges::as_scope_owner(spi, &tracked.schema.scope, |spi| follow(spi, &tracked, index, true))?;
                    }
                    Ok(())
                })
            })
        })
    }

    /// Refuses the drop of a partition whose rows devices hold. Called by the
    /// event trigger after a DROP that took Tandem's triggers with a table,
    /// with the tracking ids of those triggers.
    #[pg_extern(volatile)]
    fn check_dropped_partitions(ids: Option<Vec<i64>>) {
        run("tandem.check_dropped_partitions", || {
            let ids = ids.unwrap_or_default();
            spi::connect(|spi| {
                for (stored, index) in tracked_ids(spi, &ids)? {
                    let tracked = stored.scope();
                    let rows = privileges::as_scope_owner(spi, &tracked.schema.scope, |spi| {
                        fold::fold(spi, &tracked, [index])?;
                        Ok(spi::one::<i64>(spi, &tracking::vanished_rows(&tracked, index), &[])?.unwrap_or(0))
                    })?;
                    if rows > 0 {
                        return Err(Error::PartitionHoldsRows { table: tracked.table(index).name.clone(), rows });
                    }
                }
                Ok(())
            })
        })
    }
}

/// Gives every partition of table `index` (when it is partitioned) the
/// table's triggers and takes them from relations that left the tree.
/// `log_new`: a partition that gains triggers has its rows sent as new
/// (false when the whole table was just stamped).
pub fn follow(spi: &mut Spi<'_>, tracked: &Scope<'_>, index: usize, log_new: bool) -> Result<()> {
    if !tracked.table(index).partitioned {
        return Ok(());
    }
    let root = crate::catalog::table_oid(spi, &tracked.table(index).table_name())?;
    let id = tracked.id(index);
    let tree = relations(
        spi,
        "SELECT t.relid::int8, format('%I.%I', n.nspname, c.relname) FROM pg_catalog.pg_partition_tree($1::int8::oid) t \
         JOIN pg_catalog.pg_class c ON c.oid = t.relid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE t.relid <> $1::int8::oid ORDER BY t.level, t.relid",
        &[root.into()],
    )?;
    let carrying = carrying_triggers(spi, id, Some(root))?;
    for partition in tree.iter().filter(|p| !carrying.iter().any(|c| c.oid == p.oid)) {
        for statement in tracking::partition_triggers(tracked, index, &partition.quoted) {
            spi::exec(spi, &statement, &[])?;
        }
        if log_new {
            for statement in tracking::log_partition_rows(tracked, index, &partition.quoted, true) {
                spi::exec(spi, &statement, &[])?;
            }
        }
    }
    for gone in carrying.iter().filter(|c| !tree.iter().any(|p| p.oid == c.oid)) {
        for statement in tracking::log_partition_rows(tracked, index, &gone.quoted, false) {
            spi::exec(spi, &statement, &[])?;
        }
        drop_relation_triggers(spi, &gone.quoted, id)?;
    }
    Ok(())
}

/// Drops the triggers of tracking id `id` from every partition carrying
/// them (the table's own are dropped with its tracking).
pub fn drop_triggers(spi: &mut Spi<'_>, id: i64, root: Option<i64>) -> Result<()> {
    for partition in carrying_triggers(spi, id, root)? {
        drop_relation_triggers(spi, &partition.quoted, id)?;
    }
    Ok(())
}

/// Drops the triggers of tracking id `id` that relation `quoted` carries,
/// as `pg_trigger` lists them: a partition or a partitioned table may lack
/// the key trigger, and `DROP TRIGGER IF EXISTS` would say so. A
/// partition's copy of its table's key trigger goes with the table's.
pub fn drop_relation_triggers(spi: &mut Spi<'_>, quoted: &str, id: i64) -> Result<()> {
    let carried = spi::query(
        spi,
        "SELECT g.tgname::text FROM pg_catalog.pg_trigger g WHERE g.tgrelid = pg_catalog.to_regclass($1) AND g.tgname = ANY($2) \
         AND g.tgparentid = 0",
        &[quoted.into(), tracking::trigger_names(id).into()],
        |row| spi::required_text(row, 1),
    )?;
    for name in carried {
        spi::exec(spi, &tracking::drop_trigger(quoted, &name), &[])?;
    }
    Ok(())
}

/// Whether relation `relid` carries Tandem's triggers of tracking id `id`
/// (by name and by function, as [`carrying_triggers`] knows them).
pub(crate) fn carries_triggers(spi: &mut Spi<'_>, relid: i64, id: i64) -> Result<bool> {
    let found = spi::one::<bool>(
        spi,
        "SELECT EXISTS (SELECT FROM pg_catalog.pg_trigger g WHERE g.tgrelid = $1::int8::oid AND g.tgname = $2 \
                AND g.tgfoid = pg_catalog.to_regprocedure($3 || '()'))",
        &[relid.into(), tracking::marker_trigger(id).into(), tracking::marker_function(id).into()],
    )?;
    Ok(found == Some(true))
}

/// Relations other than `root` that carry the triggers of tracking id `id`:
/// by name and by function, as a trigger of the same name another role
/// made on a relation of its own is not Tandem's and must not be read.
fn carrying_triggers(spi: &mut Spi<'_>, id: i64, root: Option<i64>) -> Result<Vec<Relation>> {
    let sql = "SELECT c.oid::int8, format('%I.%I', n.nspname, c.relname) FROM pg_catalog.pg_trigger g \
         JOIN pg_catalog.pg_class c ON c.oid = g.tgrelid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE g.tgname = $2 AND g.tgfoid = pg_catalog.to_regprocedure($3 || '()') AND c.oid IS DISTINCT FROM $1::int8::oid";
    let args = [root.unwrap_or(0).into(), tracking::marker_trigger(id).into(), tracking::marker_function(id).into()];
    relations(spi, sql, &args)
}

/// The relations `sql` selects as (oid, quoted name).
fn relations(spi: &mut Spi<'_>, sql: &str, args: &[pgrx::datum::DatumWithOid<'_>]) -> Result<Vec<Relation>> {
    spi::query(spi, sql, args, |row| {
        Ok(Relation {
            oid: spi::get::<i64>(row, 1)?.ok_or_else(|| Error::Internal("a relation without an oid".into()))?,
            quoted: spi::text(row, 2)?.ok_or_else(|| Error::Internal("a relation without a name".into()))?,
        })
    })
}

/// The scopes (and table positions in them) that track relation `relid`.
pub(crate) fn tracked_as(spi: &mut Spi<'_>, relid: i64) -> Result<Vec<(StoredScope, usize)>> {
    let ids =
        spi::query(spi, "SELECT id FROM tandem.scope_tables WHERE relid = $1::int8::oid", &[relid.into()], |row| spi::get::<i64>(row, 1))?;
    tracked_ids(spi, &ids.into_iter().flatten().collect::<Vec<_>>())
}

/// The scopes and table positions of tracking ids whose table still exists.
fn tracked_ids(spi: &mut Spi<'_>, ids: &[i64]) -> Result<Vec<(StoredScope, usize)>> {
    let rows = spi::query(
        spi,
        "SELECT t.scope, t.id FROM tandem.scope_tables t JOIN pg_catalog.pg_class c ON c.oid = t.relid \
         WHERE t.id = ANY($1) ORDER BY t.id",
        &[ids.to_vec().into()],
        |row| Ok((spi::text(row, 1)?, spi::get::<i64>(row, 2)?)),
    )?;
    let mut out = Vec::new();
    for (scope, id) in rows {
        let (Some(scope), Some(id)) = (scope, id) else { continue };
        let stored = registry::load_scope(spi, &scope)?;
        if let Some(index) = stored.ids.iter().position(|i| *i == id) {
            out.push((stored, index));
        }
    }
    Ok(out)
}
