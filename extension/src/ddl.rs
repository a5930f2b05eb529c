//! Following `ALTER TABLE` on tracked tables. An event trigger
//! (`sql/bootstrap.sql`, `tandem_columns`) calls [`tandem::follow_columns`]
//! after each `ALTER TABLE` of a table a scope tracks; the scope is then
//! provisioned again from the setup its owner gave, so it follows the
//! table as it is now: a column added, dropped, renamed or retyped means a
//! new schema version, which devices pick up on their next sync. A column
//! added with a constant default or none moves no rows (`migration`), nor
//! does a table renamed (devices rename their copy); a change devices
//! could not follow in place (a primary key, a filter column, a type
//! SQLite stores differently) is refused,
//! which rolls the `ALTER TABLE` back, with the way to make it.
//!
//! A tracked table dropped (`DROP TABLE`, `DROP SCHEMA ... CASCADE`) leaves
//! its scopes ([`tandem::forget_tables`]), with the tables whose filter
//! went `via` it; a scope left with no table is removed as
//! `sync_deprovision` removes it (its registrations stay). Devices stop
//! syncing those tables and keep their rows. A drop is never refused:
//! `pg_restore --clean` drops every table before the extension.

use pgrx::prelude::*;

/// The functions the event triggers call, in Tandem's own schema (revoked
/// from PUBLIC like every function of the extension).
#[pg_schema]
mod tandem {
    use pgrx::prelude::*;
    use serde_json::Value;
    use tandem_core::ident::TableName;
    use tandem_core::migration::{without_tables, REMAKE};
    use tandem_core::Error;

    use crate::partitions::{carries_triggers, tracked_as};
    use crate::provision::{deprovision, provision, Asker};
    use crate::report::run;
    use crate::spi;

    /// Has every scope tracking table `relid` follow what an `ALTER
    /// TABLE` just did to it.
    #[pg_extern(volatile)]
    fn follow_columns(relid: Option<i64>) {
        run("tandem.follow_columns", || {
            let Some(relid) = relid else { return Ok(()) };
            spi::connect(|spi| {
                spi::quietly(spi, |spi| {
                    for (stored, index) in tracked_as(spi, relid)? {
                        // A table without its triggers is being restored from
                        // a dump, which brings them after its constraints.
                        if !carries_triggers(spi, relid, stored.ids[index])? {
                            continue;
                        }
                        let scope = stored.schema.scope.clone();
                        let setup =
                            spi::one::<String>(spi, "SELECT setup::text FROM tandem.scopes WHERE name = $1", &[scope.as_str().into()])?
                                .ok_or_else(|| Error::UnknownScope(scope.clone()))?;
                        let setup: Value = serde_json::from_str(&setup).map_err(|e| Error::Internal(format!("setup of {scope}: {e}")))?;
                        provision(spi, &scope, &setup, Asker::Ddl).map_err(|error| {
                            // Said as it is: the change itself is what to undo.
                            if let Error::ForcedRowSecurity { .. } = error {
                                return error;
                            }
                            let text = match &error {
                                Error::MissingTable(_) => format!("{error}: a table of a scope keeps its name and schema"),
                                _ => error.to_string(),
                            };
                            let how = if text.contains("sync_provision") { String::new() } else { format!("; {REMAKE}") };
                            Error::InvalidSetup(format!(
                                "{} is in scope \"{scope}\", whose devices cannot follow this change: {text}{how}",
                                stored.schema.tables[index].name
                            ))
                        })?;
                    }
                    Ok(())
                })
            })
        })
    }

    /// Takes the tables `relids`, just dropped, out of every scope that
    /// tracked them (all of one DROP at once: a scope provisioned again
    /// must not name a table another part of the same DROP took).
    #[pg_extern(volatile)]
    fn forget_tables(relids: Option<Vec<i64>>) {
        run("tandem.forget_tables", || {
            let relids = relids.unwrap_or_default();
            spi::connect(|spi| {
                spi::quietly(spi, |spi| {
                    let tracked = spi::query(
                        spi,
                        "SELECT s.name, s.setup::text, array_agg(t.name ORDER BY t.id)::text[] FROM tandem.scope_tables t \
                         JOIN tandem.scopes s ON s.name = t.scope WHERE t.relid::oid::int8 = ANY($1) GROUP BY s.name, s.setup::text",
                        &[relids.into()],
                        |row| Ok((spi::required_text(row, 1)?, spi::required_text(row, 2)?, spi::required::<Vec<String>>(row, 3)?)),
                    )?;
                    for (scope, setup, tables) in tracked {
                        let setup: Value = serde_json::from_str(&setup).map_err(|e| Error::Internal(format!("setup of {scope}: {e}")))?;
                        let dropped = tables.iter().map(|t| TableName::parse(t)).collect::<tandem_core::Result<Vec<_>>>()?;
                        let pruned = without_tables(&setup, &dropped)?;
                        if pruned.left() == 0 {
                            if unrefused(&scope, || deprovision(spi, &scope, Asker::Ddl)) {
                                pgrx::warning!(
                                    "scope \"{scope}\" has no table left, and is removed as sync_deprovision removes it (its \
                                     devices' registrations stay; their syncs fail until it is provisioned again)"
                                );
                            }
                            continue;
                        }
                        let orphaned: Vec<&str> = pruned
                            .removed
                            .iter()
                            .filter(|name| TableName::parse(name).is_ok_and(|name| !dropped.contains(&name)))
                            .map(String::as_str)
                            .collect();
                        let followed = unrefused(&scope, || provision(spi, &scope, &pruned.setup, Asker::Ddl).map(drop));
                        if followed && !orphaned.is_empty() {
                            pgrx::warning!(
                                "scope \"{scope}\" no longer syncs {}: their filters went through a dropped table",
                                orphaned.join(", ")
                            );
                        }
                    }
                    Ok(())
                })
            })
        })
    }

    /// Runs `change` of a scope in a subtransaction, and on failure rolls
    /// it back with a warning: a DROP is never refused (`pg_restore
    /// --clean` drops the tracking tables, then the tables, then the
    /// extension; a scope it leaves half-changed would be worse). Whether
    /// the change was made.
    fn unrefused(scope: &str, change: impl FnOnce() -> tandem_core::Result<()>) -> bool {
        let outcome = spi::in_subtransaction(|| {
            if let Err(error) = change() {
                pgrx::error!("{error}");
            }
        });
        let Err(error) = outcome else { return true };
        pgrx::warning!(
            "scope \"{scope}\" could not follow the drop, and is left as it was: {} (provision it again with \
             sync_provision, or remove it with sync_deprovision)",
            error.describe()
        );
        false
    }
}
