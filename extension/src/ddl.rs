//! Following `ALTER TABLE` on tracked tables. An event trigger
//! (`sql/bootstrap.sql`, `tandem_columns`) calls [`tandem::follow_columns`]
//! after each `ALTER TABLE` of a table a scope tracks; the scope is then
//! provisioned again from the setup its owner gave, so it follows the
//! table as it is now: a column added, dropped, renamed or retyped means a
//! new schema version, which devices pick up on their next sync. A column
//! added with a constant default or none moves no rows (`migration`); a
//! change devices could not follow in place (a primary key, a filter
//! column, a type SQLite stores differently, the table's name) is refused,
//! which rolls the `ALTER TABLE` back, with the way to make it.

use pgrx::prelude::*;

/// The function the event trigger calls, in Tandem's own schema (revoked
/// from PUBLIC like every function of the extension).
#[pg_schema]
mod tandem {
    use pgrx::prelude::*;
    use serde_json::Value;
    use tandem_core::migration::REMAKE;
    use tandem_core::Error;

    use crate::partitions::{carries_triggers, tracked_as};
    use crate::provision::{provision, Asker};
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
                            let text = error.to_string();
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
}
