//! `sync_provision`, `sync_deprovision` and `sync_schema`: defining a scope
//! over existing tables, changing it, and removing its tracking.

use pgrx::prelude::*;
use serde_json::Value;
use tandem_core::ident::TableName;
use tandem_core::options::{Policy, SchemaOptions};
use tandem_core::schema::{build_schema, CatalogColumn, Schema, TableSchema};
use tandem_core::setup::{check_scope_name, ScopeSetup};
use tandem_core::sql::registry as registry_sql;
use tandem_core::sql::{tracking, Scope};
use tandem_core::{Error, Result};

use crate::catalog;
use crate::clients;
use crate::cluster;
use crate::fold;
use crate::json_text::JsonbText;
use crate::partitions;
use crate::privileges;
use crate::registry::{self, StoredScope};
use crate::report::{required, run};
use crate::spi::{self, Spi};

/// Defines or changes a scope over existing tables and creates their change
/// tracking. Calling it again with the same setup changes nothing; with a
/// changed setup it adds or drops tables, and re-sends a table whose columns
/// grew, without making clients download anything else again.
#[pg_extern(volatile, security_definer)]
fn sync_provision(scope: Option<&str>, setup: Option<JsonbText>) -> JsonbText {
    run("sync_provision", || {
        let scope = required(scope, "scope")?;
        let setup = required(setup, "setup")?.parse()?;
        spi::connect(|spi| {
            let schema = provision(spi, scope, &setup, Asker::Caller)?;
            Ok(JsonbText::from_value(&schema))
        })
    })
}

/// Drops a scope's triggers and tracking; user tables and their rows stay.
#[pg_extern(volatile, security_definer)]
fn sync_deprovision(scope: Option<&str>) {
    run("sync_deprovision", || {
        let scope = required(scope, "scope")?;
        spi::connect(|spi| deprovision(spi, scope, Asker::Caller))
    })
}

/// The scope's schema: tables, columns with logical types, keys, filters and
/// directions. The local side provisions from it.
/// Like every call of a device, it takes the device's token. Volatile: the
/// first call in a database restored into another cluster restamps its
/// tracking (see `cluster`), and the device must see the new id then.
#[pg_extern(volatile, security_definer)]
fn sync_schema(scope: Option<&str>, options: default!(Option<JsonbText>, "'{}'")) -> JsonbText {
    run("sync_schema", || {
        let scope = required(scope, "scope")?;
        let options = SchemaOptions::parse(crate::report::options(options)?.as_ref())?;
        spi::connect(|spi| {
            cluster::ensure_here(spi)?;
            privileges::require_known_scope(spi, scope, options.token.as_deref())?;
            let schema = registry::load_scope(spi, scope)?.schema;
            let owner = privileges::caller_owns(spi, scope)?;
            registry::resolve_identity(spi, scope, owner, None, options.token.as_deref(), None)?;
            let mut value = serde_json::to_value(&schema).map_err(|e| Error::Internal(format!("schema of {scope}: {e}")))?;
            let (server_id, moved_from) = registry::server_id(spi)?;
            value["server_id"] = Value::from(server_id);
            // Deletes may say a key changed its text only (design.md,
            // "Keys as PostgreSQL compares them"), to a device that asks.
            value["respellings"] = Value::from(true);
            // An upload may say what its file had received (`seen`), so an
            // insert meets a delete it never pulled as a conflict.
            value["seen"] = Value::from(true);
            // ... and which deletes it did not take (`seen.kept`), instead
            // of an older watermark for every key.
            value["seen_kept"] = Value::from(true);
            // ... each by the version of the delete it did not take.
            value["kept_versions"] = Value::from(true);
            if !moved_from.is_empty() {
                value["moved_from"] = Value::from(moved_from);
            }
            Ok(JsonbText::from_value(&value))
        })
    })
}

/// The scope's tables whose name changed since it was provisioned, as
/// (name then, name now).
fn renamed_tables(spi: &mut Spi<'_>, scope: &str) -> Result<Vec<(TableName, TableName)>> {
    let mut renames = Vec::new();
    for registry_sql::ScopeTableRow { stored, schema, name } in spi::all(spi, registry_sql::scope_tables(scope))? {
        let (was, now) = (TableName::parse(&stored)?, TableName::new(schema, name));
        if was != now {
            renames.push((was, now));
        }
    }
    Ok(renames)
}

fn lock_scope(spi: &mut Spi<'_>, scope: &str) -> Result<()> {
    spi::run(spi, registry_sql::lock_scope(scope))?;
    Ok(())
}

/// Who asks for a provisioning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Asker {
    /// A call of `sync_provision`: the scope's owner, or whoever makes it.
    Caller,
    /// The event triggers after an `ALTER TABLE` or a `DROP` of a tracked
    /// table (`ddl.rs`): the table's owner changed it, and the scope
    /// follows from the setup its owner gave, changing nothing else.
    Ddl,
}

pub fn provision(spi: &mut Spi<'_>, scope: &str, setup_value: &Value, asker: Asker) -> Result<Schema> {
    ScopeSetup::parse(scope, setup_value)?;
    if asker == Asker::Caller {
        cluster::ensure_here(spi)?;
    }
    lock_scope(spi, scope)?;
    let mut old = registry::find_scope(spi, scope)?;
    // Tables renamed since (`ALTER TABLE ... RENAME TO`, `ALTER SCHEMA ...
    // RENAME`) are the same tables under new names, found by their oid:
    // the setup names them anew, and the schema is compared with the old
    // one as if they had always had them.
    let renames = match &old {
        Some(_) => renamed_tables(spi, scope)?,
        None => Vec::new(),
    };
    if let Some(stored) = &old {
        // Devices tell a renamed table by the names it had: a name another
        // table of the scope had or has would be read as that table.
        for (was, now) in &renames {
            let now_text = now.to_string();
            // Its own earlier names are its own to take back.
            let was_text = was.to_string();
            let taken = stored
                .schema
                .tables
                .iter()
                .filter(|t| t.name != was_text)
                .find(|t| t.name == now_text || t.renamed_from.contains(&now_text))
                .map(|t| t.name.clone())
                .or_else(|| stored.schema.former_names.contains(&now_text).then(|| "a table no longer in it".to_string()));
            if let Some(taken) = taken {
                return Err(Error::InvalidSetup(format!(
                    "{was} cannot be renamed to {now}: that is (or was) the name of {taken} in scope \"{scope}\", and devices \
                     tell a renamed table by its names; rename it to a name the scope never used"
                )));
            }
        }
    }
    let setup_value = &tandem_core::migration::renamed_setup(setup_value, &renames)?;
    if let Some(old) = &mut old {
        let canonical: Vec<(String, String)> = renames.iter().map(|(was, now)| (was.to_string(), now.to_string())).collect();
        tandem_core::migration::rename(&mut old.schema, &canonical);
    }
    let setup = ScopeSetup::parse(scope, setup_value)?;
    match (&old, asker) {
        (_, Asker::Ddl) => {}
        (Some(_), Asker::Caller) => privileges::require_owner(spi, scope, "sync_provision")?,
        (None, Asker::Caller) => privileges::require_registrations_own(spi, scope)?,
    }
    let old_version = old.as_ref().map(|s| s.schema.version).unwrap_or(0);
    let mut generated: Vec<(String, String)> = Vec::new();
    let mut catalogs: Vec<(String, Vec<CatalogColumn>)> = Vec::new();
    let mut schema = build_schema(scope, old_version.max(1), &setup, |name| {
        let table = catalog::read_table(spi, name)?;
        generated.extend(table.columns.iter().filter(|c| c.generated).map(|c| (name.to_string(), c.name.clone())));
        catalogs.push((name.to_string(), table.columns.clone()));
        Ok(table)
    })?;
    generated.dedup();
    registry::fill_operators(spi, &mut schema)?;
    // Columns kept keep their fill; gained ones get theirs, or their
    // table's rows go out again (restamped below).
    let mut resend: Vec<String> = Vec::new();
    if let Some(old) = &old {
        for table in &mut schema.tables {
            let Some(before) = old.schema.tables.iter().find(|t| t.name == table.name) else {
                // Added now: a device holding a table of this name holds
                // another one (dropped, or left, and made again).
                table.added = Some(old_version + 1);
                continue;
            };
            let shown = table.table_name().to_string();
            let catalog = catalogs.iter().find(|(name, _)| *name == shown).map(|(_, columns)| columns.as_slice()).unwrap_or_default();
            if tandem_core::migration::carry_over(before, table, catalog, asker == Asker::Ddl, old_version + 1) {
                resend.push(table.name.clone());
            }
        }
    }
    // Tables whose partitions changed go out again whole, and their exits
    // (rows that left a partition as the old filter drew it) are forgotten:
    // every device sweeps its copy as it receives them (see `migration`).
    let refiltered = match &old {
        Some(old) => tandem_core::migration::refilter(&old.schema, &mut schema, old_version + 1),
        None => Vec::new(),
    };
    resend.extend(refiltered.iter().cloned());
    if asker == Asker::Caller {
        for table in &schema.tables {
            privileges::require_table_owner(spi, &table.table_name().quoted())?;
        }
    }
    // Whoever asks, the tables' code must not gain the scope owner's rights
    // (an ALTER TABLE ... OWNER TO is followed, and refused, here too).
    let scope_owner = match &old {
        Some(_) => privileges::scope_owner(spi, scope)?,
        None => privileges::caller_oid(),
    };
    let quoted: Vec<String> = schema.tables.iter().map(|t| t.table_name().quoted()).collect();
    privileges::require_owned_alike(spi, scope_owner, &quoted)?;
    for (table, column) in &generated {
        pgrx::notice!("column \"{column}\" of {table} is a generated column: it is not synced, and devices do not receive it");
    }
    // A resolver is checked now, not at the first conflict.
    for table in &schema.tables {
        if let Policy::Resolver(name) = Policy::parse(table.policy.as_deref())? {
            let found = catalog::find_resolver(spi, &name)?;
            privileges::require_execute(spi, &found)?;
        }
    }
    if let Some(old) = &old {
        if renames.is_empty() && old.schema.same_shape(&schema) {
            // Called again with the same setup: nothing to change but the
            // tracking objects, which a scope provisioned by an earlier
            // Tandem may lack or have older. An ALTER TABLE that changed
            // nothing devices see (a constraint, an index, an owner; a dump
            // being restored) changes nothing at all.
            if asker == Asker::Caller {
                let tracked = old.scope();
                for index in 0..old.schema.tables.len() {
                    refresh_tracking(spi, &tracked, index, false)?;
                }
            }
            return Ok(old.schema.clone());
        }
        schema.version = old_version + 1;
        schema.former_names = tandem_core::migration::former_names(&old.schema, &schema);
        tandem_core::migration::check_followable(&old.schema, &schema)?;
        if asker == Asker::Caller {
            clients::require_registrations_fit(spi, &schema)?;
        }
    }
    let old_tables: Vec<(TableSchema, i64)> = match &old {
        Some(StoredScope { schema, ids, .. }) => schema.tables.iter().cloned().zip(ids.iter().copied()).collect(),
        None => Vec::new(),
    };
    let setup_text = setup_value.to_string();
    let schema_text = serde_json::to_string(&schema).map_err(|e| Error::Internal(e.to_string()))?;
    // A scope made anew (maybe after sync_deprovision) knows nothing of
    // what happened before: a device that pulled from an earlier one
    // resyncs, as after a cleanup.
    let owner = privileges::caller_oid();
    let path = spi::caller_search_path().unwrap_or_default();
    spi::run(spi, registry_sql::save_scope(scope, setup_text, schema_text, owner, path))?;
    for (was, now) in &renames {
        spi::run(spi, registry_sql::rename_scope_table(scope, was.to_string(), now.to_string()))?;
    }
    // Tables that left the scope lose their tracking.
    for (table, id) in &old_tables {
        if !schema.tables.iter().any(|t| t.name == table.name) {
            drop_table_tracking(spi, &table.table_name(), *id)?;
            spi::run(spi, registry_sql::remove_scope_table(*id))?;
        }
    }
    // Every table gets an id; new ones get tracking tables.
    let mut ids = Vec::with_capacity(schema.tables.len());
    let mut new_tables = Vec::new();
    for (index, table) in schema.tables.iter().enumerate() {
        match old_tables.iter().find(|(t, _)| t.name == table.name) {
            Some((_, id)) => ids.push(*id),
            None => {
                let oid = catalog::table_oid(spi, &table.table_name())?;
                let id = spi::first_mut(spi, registry_sql::add_scope_table(scope, oid, &table.name))?
                    .ok_or_else(|| Error::Internal("no id for a new scope table".into()))?;
                ids.push(id);
                new_tables.push(index);
            }
        }
    }
    let tracked = Scope::new(&schema, &ids);
    for &index in &new_tables {
        for statement in tracking::create_tracking(&tracked, index) {
            spi::exec(spi, &statement, &[])?;
        }
        // Fresh statistics, so the first pulls walk the key in order instead
        // of sorting the whole table for every batch; and for a table never
        // analyzed (loaded just now), so a tenant's first pull estimates its
        // filter instead of guessing (ten times slower when it guesses).
        analyze_tracking(spi, &tracked, index)?;
        let table = tracked.table(index).table_name().quoted();
        let unanalyzed = spi::one::<bool>(
            spi,
            "SELECT c.reltuples < 0 FROM pg_catalog.pg_class c WHERE c.oid = pg_catalog.to_regclass($1)",
            &[table.as_str().into()],
        )?;
        if unanalyzed == Some(true) {
            spi::exec(spi, &format!("ANALYZE {table}"), &[])?;
        }
    }
    for (index, table) in schema.tables.iter().enumerate() {
        // Replacing the triggers locks out writers of the table until this
        // transaction ends, so the fold below leaves nothing in the log that
        // a later fold could stamp over the restamp with.
        refresh_tracking(spi, &tracked, index, new_tables.contains(&index))?;
        if resend.contains(&table.name) {
            privileges::as_scope_owner(spi, scope, |spi| {
                fold::fold(spi, &tracked, [index])?;
                spi::exec(spi, &tracking::restamp(&tracked, index), &[])?;
                if refiltered.contains(&table.name) {
                    spi::exec(spi, &tracking::forget_exits(&tracked, index), &[])?;
                }
                Ok(())
            })?;
        }
    }
    Ok(schema)
}

/// (Re)creates a table's triggers (its partitions' too), and its change log
/// if it has none (a scope provisioned before change logs). Replacing the
/// triggers locks out writers of the table until the transaction ends.
/// `fresh`: the tracking was just created, every row stamped.
fn refresh_tracking(spi: &mut Spi<'_>, tracked: &Scope<'_>, index: usize, mut fresh: bool) -> Result<()> {
    let missing = |spi: &mut Spi<'_>, name: &str| -> Result<bool> {
        Ok(spi::one::<bool>(spi, "SELECT pg_catalog.to_regclass($1) IS NULL", &[name.into()])?.unwrap_or(true))
    };
    if missing(spi, tracking::LOG_SEQUENCE)? {
        spi::exec(spi, &tracking::create_log_sequence(), &[])?;
    }
    if missing(spi, &tracked.track(index))? || missing(spi, &tracked.exits(index))? {
        // Someone dropped the tracking: rebuilt whole, every row stamped,
        // so every device receives the table again, and resyncs (the
        // deletes of the time without tracking are unknown).
        spi::run(spi, registry_sql::restart_tracking(&tracked.schema.scope))?;
        let table = tracked.table(index).table_name();
        drop_table_tracking(spi, &table, tracked.id(index))?;
        for statement in tracking::create_tracking(tracked, index) {
            spi::exec(spi, &statement, &[])?;
        }
        analyze_tracking(spi, tracked, index)?;
        fresh = true;
    } else if missing(spi, &tracked.log(index))? {
        for statement in tracking::create_log(tracked, index) {
            spi::exec(spi, &statement, &[])?;
        }
    }
    spi::quietly(spi, |spi| {
        for statement in tracking::triggers(tracked, index) {
            spi::exec(spi, &statement, &[])?;
        }
        grant_tracking(spi, tracked, index)?;
        privileges::as_scope_owner(spi, &tracked.schema.scope, |spi| partitions::follow(spi, tracked, index, !fresh))
    })
}

/// Statistics for a new tracking table, unless a key column has a type a
/// role other than a superuser made: ANALYZE runs a type's functions (a
/// range's `subtype_diff`) as the table's owner, here the extension's.
fn analyze_tracking(spi: &mut Spi<'_>, tracked: &Scope<'_>, index: usize) -> Result<()> {
    let builtin = spi::one::<bool>(
        spi,
        "SELECT coalesce(bool_and(r.rolsuper), true) FROM pg_catalog.pg_attribute a \
         JOIN pg_catalog.pg_type t ON t.oid = a.atttypid JOIN pg_catalog.pg_roles r ON r.oid = t.typowner \
         WHERE a.attrelid = pg_catalog.to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped",
        &[tracked.track(index).as_str().into()],
    )?;
    if builtin == Some(true) {
        spi::exec(spi, &format!("ANALYZE {}", tracked.track(index)), &[])?;
    }
    Ok(())
}

/// Hands the table's tracking to the scope's owner (see
/// `tracking::hand_over`): a sync reads and writes the owner's tables as
/// the owner (`privileges::as_scope_owner`), joined with their tracking.
fn grant_tracking(spi: &mut Spi<'_>, tracked: &Scope<'_>, index: usize) -> Result<()> {
    let owner = spi::one::<String>(
        spi,
        "SELECT r.rolname::text FROM tandem.scopes s JOIN pg_catalog.pg_roles r ON r.oid = s.owner WHERE s.name = $1",
        &[tracked.schema.scope.as_str().into()],
    )?
    .ok_or_else(|| Error::UnknownScope(tracked.schema.scope.clone()))?;
    for statement in tracking::hand_over(tracked, index, &owner) {
        spi::exec(spi, &statement, &[])?;
    }
    Ok(())
}

pub fn deprovision(spi: &mut Spi<'_>, scope: &str, asker: Asker) -> Result<()> {
    check_scope_name(scope)?;
    lock_scope(spi, scope)?;
    if asker == Asker::Caller {
        privileges::require_owner(spi, scope, "sync_deprovision")?;
    }
    // Whatever is left of its tracking: removing a scope is how a scope
    // whose tracking is gone (DROP OWNED BY its owner) is cleared.
    let stored = registry::find_scope(spi, scope)?.ok_or_else(|| Error::UnknownScope(scope.to_string()))?;
    for (table, id) in stored.schema.tables.iter().zip(&stored.ids) {
        drop_table_tracking(spi, &table.table_name(), *id)?;
    }
    spi::exec(spi, "DELETE FROM tandem.scopes WHERE name = $1", &[scope.into()])?;
    Ok(())
}

fn drop_table_tracking(spi: &mut Spi<'_>, table: &TableName, id: i64) -> Result<()> {
    partitions::drop_relation_triggers(spi, &table.quoted(), id)?;
    partitions::drop_triggers(spi, id, None)?;
    for statement in tracking::drop_tracking(id) {
        spi::exec(spi, &statement, &[])?;
    }
    Ok(())
}
