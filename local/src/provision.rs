//! Local `sync_provision`: creates the tables of a server schema with
//! tracking, and follows the server's schema when it changes (tables added
//! or removed, columns added) without downloading anything again.

use rusqlite::{named_params, Connection, OptionalExtension};
use serde_json::Value;
use tandem_core::ident::TableName;
use tandem_core::schema::{Schema, TableSchema};
use tandem_core::setup::check_scope_name;
use tandem_core::sql::device as sql;
use tandem_core::sql::local;

use crate::error::{LocalError, Result};
use crate::meta;
use crate::rows;
use crate::tx::atomically;

pub fn provision(conn: &Connection, scope: &str, schema: &Schema) -> Result<Schema> {
    check_scope_name(scope)?;
    tandem_core::schema::check_local_names(schema)?;
    if schema.scope != scope {
        return Err(tandem_core::Error::ScopeMismatch { expected: scope.to_string(), found: schema.scope.clone() }.into());
    }
    meta::ensure(conn)?;
    atomically(conn, |conn| {
        // Read as stored, whole or not: provisioning again is how broken
        // tracking is repaired.
        let existed = meta::scope_exists(conn, scope)?;
        let before: Option<Schema> = conn
            .query_row(sql::SCOPE_SCHEMA, named_params! {":scope": scope}, |r| r.get::<_, String>("schema"))
            .optional()?
            .and_then(|text| serde_json::from_str(&text).ok());
        for (name, id) in meta::tracked_tables(conn, scope)? {
            // A table made again with another primary key is another
            // table: this one leaves, and the new one comes back in its
            // place (received anew).
            let remade = |now: &TableSchema| {
                before.as_ref().and_then(|b| b.tables.iter().find(|t| t.name == name)).is_some_and(|was| !was.same_table(now))
            };
            let kept = schema.tables.iter().find(|t| t.name == name);
            if kept.is_none_or(remade) {
                drop_other_triggers(conn, id)?;
                for statement in local::drop_tracking(id) {
                    conn.execute(&statement, [])?;
                }
                conn.execute(sql::DELETE_TABLE, named_params! {":id": id})?;
                conn.execute(sql::NOTE_LEFT_TABLE, named_params! {":scope": scope, ":name": name})?;
                // Writes made to it from now on are noted, so that they are
                // kept aside if it comes back (its rows then become the
                // server's).
                let left = before.as_ref().and_then(|b| b.tables.iter().find(|t| t.name == name));
                if let Some(left) = left.filter(|t| table_exists(conn, &t.table_name().local_name()).unwrap_or(false)) {
                    for statement in local::note_left(left) {
                        conn.execute(&statement, [])?;
                    }
                }
            }
        }
        let others: Vec<(String, String)> = conn
            .prepare(sql::TABLES_OF_OTHER_SCOPES)?
            .query_map(named_params! {":scope": scope}, |r| Ok((r.get("scope")?, r.get("name")?)))?
            .collect::<rusqlite::Result<_>>()?;
        for table in &schema.tables {
            let local_name = table.table_name().local_name();
            refuse_shared_table(table, &local_name, &others)?;
            let mut existed = table_exists(conn, &local_name)?;
            let known: Option<i64> =
                conn.query_row(sql::TABLE_STATE, named_params! {":scope": scope, ":name": table.name}, |r| r.get("id")).optional()?;
            let key: Vec<(String, String)> = table.key_columns().iter().map(|c| (c.name.clone(), c.ty.sqlite_decl().to_string())).collect();
            if existed && known.is_none() && local_key(conn, &local_name)? != key {
                let remade = before.as_ref().is_some_and(|b| b.tables.iter().any(|t| t.name == table.name));
                set_aside_copy(conn, scope, schema.version, table, remade)?;
                existed = false;
            }
            conn.execute(&local::create_table(table), [])?;
            if existed {
                let synced_before = before.as_ref().and_then(|b| b.tables.iter().find(|t| t.name == table.name));
                if let Some(synced_before) = synced_before {
                    if let Some(id) = known {
                        crate::local_only::drop_triggers(conn, id)?;
                        // A trigger filling a dropped column's default
                        // names it, and SQLite would refuse the drop for
                        // it: `fill_defaults` makes those still wanted
                        // again below.
                        drop_fill_triggers(conn, id)?;
                    }
                    for stale in stale_columns(&meta::column_names(conn, &local_name)?, synced_before, table) {
                        // A user's index or constraint on it keeps it (a
                        // foreign key too, which SQLite would drop with a
                        // column it is declared beside): it stays,
                        // unsynced, as before.
                        // Any other failure is an error.
                        drop_stale_column(conn, &local_name, &stale)?;
                    }
                }
                let present = meta::column_names(conn, &local_name)?;
                for (i, column) in table.columns.iter().enumerate() {
                    if !present.contains(&column.name) {
                        conn.execute(&local::add_column(table, i), [])?;
                    }
                }
            }
            let id = match known {
                Some(id) => id,
                None => {
                    conn.execute(sql::INSERT_TABLE, named_params! {":scope": scope, ":name": table.name})?;
                    conn.last_insert_rowid()
                }
            };
            let came_back =
                known.is_none() && conn.execute(sql::FORGET_LEFT_TABLE, named_params! {":scope": scope, ":name": table.name})? > 0;
            if existed && came_back {
                // The rows are the server's as they were when the table
                // left: the server sends the table anew, and they are
                // replaced (before tracking, so this is no local change),
                // not sent up as new rows over what changed since. Rows
                // written meanwhile are kept aside first.
                keep_written_while_left(conn, scope, schema.version, table)?;
                conn.execute(&sql::delete_all(&local_name), [])?;
            }
            if came_back {
                for statement in local::forget_left(&table.table_name()) {
                    conn.execute(&statement, [])?;
                }
            }
            for statement in local::create_tracking(table, id) {
                conn.execute(&statement, [])?;
            }
            for statement in local::triggers(table, id) {
                conn.execute(&statement, [])?;
            }
            crate::local_only::track(conn, table, id)?;
            if key_takes_null(conn, table)? {
                for statement in local::refuse_keyless(table, id) {
                    conn.execute(&statement, [])?;
                }
            }
            fill_defaults(conn, table, id)?;
            guard_replaced(conn, table, id)?;
            if existed && known.is_none() && !came_back {
                // Rows the file held before it synced this table are local
                // changes: they go up on the first sync, but for those
                // without a whole key, which cannot.
                crate::keyless::keep(conn, scope, table)?;
                conn.execute(&local::log_all_rows(table, id), [])?;
            }
        }
        let text = serde_json::to_string(schema).map_err(|e| LocalError::Invalid(e.to_string()))?;
        match existed {
            true => {
                conn.execute(sql::SET_SCHEMA, named_params! {":scope": scope, ":schema": text})?;
            }
            false => {
                conn.execute(
                    sql::INSERT_SCOPE,
                    named_params! {
                        ":scope": scope,
                        ":schema": text,
                        ":client_id": meta::new_client_id(),
                        ":replica_id": meta::new_client_id(),
                    },
                )?;
            }
        }
        Ok(schema.clone())
    })
}

/// Renames in place the file's copies of tables the server renamed (a
/// server table whose `renamed_from` holds a name the file tracks), with
/// their tracking, so their rows and unsent changes stay theirs; the
/// stored schema names them anew, so the upload under it sends them under
/// the names the server knows. Returns how many were renamed.
pub fn follow_renames(conn: &Connection, scope: &str, server: &Schema) -> Result<usize> {
    atomically(conn, |conn| {
        let tracked = meta::tracked_tables(conn, scope)?;
        let mut renames: Vec<(String, String)> = Vec::new();
        for table in &server.tables {
            if tracked.iter().any(|(name, _)| *name == table.name) {
                continue;
            }
            let Some((was, id)) = table.renamed_from.iter().rev().find_map(|old| tracked.iter().find(|(name, _)| name == old)) else {
                continue;
            };
            let (from, to) = (TableName::parse(was)?.local_name(), table.table_name().local_name());
            if from != to {
                // SQLite compares names without case: another table's,
                // never this one's (a rename that only changes case).
                let taken: bool =
                    conn.query_row(sql::TABLE_NAME_TAKEN, named_params! {":name": to, ":except": from}, |r| r.get("present"))?;
                if taken {
                    return Err(LocalError::Invalid(format!(
                        "the server renamed {was} to {}, and this file already has a table {to}: rename or drop that one, \
                         then sync again",
                        table.name
                    )));
                }
                // SQLite refuses a rename that only changes case (the name
                // is taken, by the table itself): it goes by a name of ours.
                let by = if from.eq_ignore_ascii_case(&to) { format!("tandem_renaming_{id}") } else { to.clone() };
                conn.execute(&sql::rename_table(&from, &by), [])?;
                if by != to {
                    conn.execute(&sql::rename_table(&by, &to), [])?;
                }
            }
            conn.execute(sql::RENAME_TRACKED_TABLE, named_params! {":id": id, ":name": table.name})?;
            renames.push((was.clone(), table.name.clone()));
        }
        if renames.is_empty() {
            return Ok(0);
        }
        let text: String = conn.query_row(sql::SCOPE_SCHEMA, named_params! {":scope": scope}, |r| r.get("schema"))?;
        let mut schema: Schema =
            serde_json::from_str(&text).map_err(|e| LocalError::Invalid(format!("the stored schema of {scope}: {e}")))?;
        tandem_core::migration::rename(&mut schema, &renames);
        let text = serde_json::to_string(&schema).map_err(|e| LocalError::Invalid(e.to_string()))?;
        conn.execute(sql::SET_SCHEMA, named_params! {":scope": scope, ":schema": text})?;
        Ok(renames.len())
    })
}

/// Drops the scope's triggers and tracking; tables and rows stay. Works on
/// a scope whose tracking is broken: it is how to start it over.
pub fn deprovision(conn: &Connection, scope: &str) -> Result<()> {
    if !meta::scope_exists(conn, scope)? {
        return Err(tandem_core::Error::UnknownScope(scope.to_string()).into());
    }
    atomically(conn, |conn| {
        for (_, id) in meta::tracked_tables(conn, scope)? {
            drop_other_triggers(conn, id)?;
            for statement in local::drop_tracking(id) {
                conn.execute(&statement, [])?;
            }
        }
        conn.execute(sql::DELETE_SCOPE_TABLES, named_params! {":scope": scope})?;
        for name in meta::left_tables(conn, scope)? {
            if let Ok(name) = TableName::parse(&name) {
                for statement in local::forget_left(&name) {
                    conn.execute(&statement, [])?;
                }
            }
        }
        conn.execute(sql::DELETE_SCOPE_LEFT_TABLES, named_params! {":scope": scope})?;
        conn.execute(sql::DELETE_SCOPE, named_params! {":scope": scope})?;
        Ok(())
    })
}

/// Gives each column the file added without its default (SQLite adds a
/// column to an existing table only with a constant one) a trigger that
/// fills it, so an insert that leaves it out gets what the server would
/// give it, as in a file made after the column came.
fn fill_defaults(conn: &Connection, table: &TableSchema, id: i64) -> Result<()> {
    drop_fill_triggers(conn, id)?;
    let declared: Vec<(String, Option<String>)> = conn
        .prepare(sql::COLUMN_DEFAULTS)?
        .query_map(named_params! {":table": table.table_name().local_name()}, |r| Ok((r.get("name")?, r.get("declared")?)))?
        .collect::<rusqlite::Result<_>>()?;
    for (i, column) in table.columns.iter().enumerate() {
        let undeclared = declared.iter().any(|(name, default)| *name == column.name && default.is_none());
        if undeclared && !table.primary_key.contains(&column.name) {
            if let Some(trigger) = local::fill_default(table, id, i) {
                conn.execute(&trigger, [])?;
            }
        }
    }
    Ok(())
}

fn drop_fill_triggers(conn: &Connection, id: i64) -> Result<()> {
    drop_triggers_named(conn, &local::fill_trigger_prefix(id))
}

/// Drops every trigger of table `id` not named in `local::triggers`: those
/// that fill defaults and those that log rows a REPLACE takes out.
fn drop_other_triggers(conn: &Connection, id: i64) -> Result<()> {
    drop_fill_triggers(conn, id)?;
    drop_triggers_named(conn, &local::replaced_trigger_prefix(id))
}

fn drop_triggers_named(conn: &Connection, prefix: &str) -> Result<()> {
    for (name, _) in triggers_named(conn, prefix)? {
        conn.execute(&sql::drop_trigger(&name), [])?;
    }
    Ok(())
}

/// The file's triggers whose names start with `prefix`: each name with the
/// statement that made it, as SQLite keeps it.
fn triggers_named(conn: &Connection, prefix: &str) -> Result<Vec<(String, String)>> {
    Ok(conn
        .prepare_cached(sql::TRIGGERS_NAMED)?
        .query_map(named_params! {":prefix": prefix}, |r| Ok((r.get("name")?, r.get("sql")?)))?
        .collect::<rusqlite::Result<_>>()?)
}

/// Makes the triggers that log the rows SQLite's REPLACE takes out on each
/// unique index of the table other than its key (see
/// `local::log_replaced`) match the indexes the file's table has now. An
/// index on an expression is left out (it cannot be matched column by
/// column). Triggers already as they should be are left alone: any DDL
/// moves the file's schema version, and with it every check a connection
/// noted (see `checked`).
fn guard_replaced(conn: &Connection, table: &TableSchema, id: i64) -> Result<()> {
    let prefix = local::replaced_trigger_prefix(id);
    let local_name = table.table_name().local_name();
    let indexes: Vec<String> = conn
        .prepare_cached(sql::UNIQUE_INDEXES)?
        .query_map(named_params! {":table": local_name}, |r| r.get("name"))?
        .collect::<rusqlite::Result<_>>()?;
    let mut wanted = Vec::new();
    for (n, index) in indexes.iter().enumerate() {
        let columns: Vec<Option<local::IndexColumn>> = conn
            .prepare_cached(sql::INDEX_COLUMNS)?
            .query_map(named_params! {":index": index, ":table": local_name}, |r| {
                let Some(name) = r.get::<_, Option<String>>("name")? else { return Ok(None) };
                Ok(Some(local::IndexColumn { name, collation: r.get("coll")?, generated: r.get("generated")? }))
            })?
            .collect::<rusqlite::Result<_>>()?;
        let Some(columns) = columns.into_iter().collect::<Option<Vec<_>>>() else { continue };
        wanted.extend(local::log_replaced(table, id, n, &columns));
    }
    if !wanted.is_empty() {
        // Its notes are Tandem's alone: one dropped by hand is made again.
        conn.execute(&local::create_replaced(table, id), [])?;
    }
    let mut held: Vec<String> = triggers_named(conn, &prefix)?.into_iter().map(|(_, made)| made).collect();
    held.sort();
    let mut sorted = wanted.clone();
    sorted.sort();
    if held == sorted {
        return Ok(());
    }
    drop_triggers_named(conn, &prefix)?;
    for statement in &wanted {
        conn.execute(statement, [])?;
    }
    // An index that came since the guards were last made may have had a
    // REPLACE take rows out unseen: their deletes are logged now.
    if !wanted.is_empty() {
        conn.execute(&local::log_vanished(table, id), [])?;
    }
    Ok(())
}

/// Follows the unique indexes a program added to (or dropped from) the
/// scope's tables since the last round: [`guard_replaced`] for each table,
/// once per change of the file's schema.
pub fn refresh_replace_guards(conn: &Connection, state: &meta::ScopeState) -> Result<()> {
    let what = format!("REPLACE guards of {}", state.scope);
    if crate::checked::is_current(conn, &what)? {
        return Ok(());
    }
    atomically(conn, |conn| {
        for (table, t) in state.schema.tables.iter().zip(&state.tables) {
            guard_replaced(conn, table, t.id)?;
        }
        Ok(())
    })?;
    crate::checked::note(conn, &what)
}

/// Logs the deletes of the rows a REPLACE took out since the last round
/// (noted by the guards of [`guard_replaced`]); a round runs it before it
/// reads what to send.
pub fn flush_replaced(conn: &Connection, state: &meta::ScopeState) -> Result<()> {
    let noted: Vec<String> = conn
        .prepare_cached(sql::TABLES_NAMED)?
        .query_map(named_params! {":prefix": "tandem_replaced_"}, |r| r.get("name"))?
        .collect::<rusqlite::Result<_>>()?;
    for (table, t) in state.schema.tables.iter().zip(&state.tables) {
        if !noted.contains(&local::replaced_table_name(t.id)) {
            continue;
        }
        let any: bool = conn.prepare_cached(&local::has_replaced(t.id))?.query_row([], |r| r.get(0))?;
        if any {
            atomically(conn, |conn| {
                for statement in local::flush_replaced(table, t.id) {
                    conn.execute(&statement, [])?;
                }
                Ok(())
            })?;
        }
    }
    Ok(())
}

/// The primary key of a table of the file, in key order: each column's
/// name and declared type.
fn local_key(conn: &Connection, local_name: &str) -> Result<Vec<(String, String)>> {
    Ok(conn
        .prepare(sql::KEY_COLUMNS)?
        .query_map(named_params! {":table": local_name}, |r| Ok((r.get("name")?, r.get("ty")?)))?
        .collect::<rusqlite::Result<_>>()?)
}

/// Keeps the file's copy of a table whose primary key is not the server's
/// (made again on the server while the file held it, or the file's own
/// table of that name) under another name, with a note in
/// `tandem_rejected`, so the server's table is received into a new one:
/// nothing the file held is lost, and nothing of it is sent.
fn set_aside_copy(conn: &Connection, scope: &str, version: i64, table: &TableSchema, remade: bool) -> Result<()> {
    let local_name = table.table_name().local_name();
    let mut aside = format!("{local_name}_before_v{version}");
    let mut n = 1;
    while table_exists(conn, &aside)? {
        n += 1;
        aside = format!("{local_name}_before_v{version}_{n}");
    }
    conn.execute(&sql::rename_table(&local_name, &aside), [])?;
    for statement in local::forget_left(&table.table_name()) {
        conn.execute(&statement, [])?;
    }
    let why = match remade {
        true => "the table was made again on the server",
        false => "the file held a table of that name before it synced it",
    };
    let reason = format!(
        "the file's table {local_name} has another primary key than {} (schema version {version}: {why}): the file's copy, \
         with whatever it holds that was not sent, is kept as table {aside}, and the server's table is received anew",
        table.name
    );
    conn.execute(
        sql::KEEP_UNFOLLOWED,
        named_params! {":scope": scope, ":table_name": table.name, ":key": "[]", ":row": Option::<String>::None, ":reason": reason},
    )?;
    Ok(())
}

/// Whether the file's table takes NULL in a key column: one it held before
/// it synced it, made without NOT NULL there. A one-column INTEGER key is
/// the rowid, never NULL.
fn key_takes_null(conn: &Connection, table: &TableSchema) -> Result<bool> {
    let local_name = table.table_name().local_name();
    if matches!(local_key(conn, &local_name)?.as_slice(), [(_, ty)] if ty == "INTEGER") {
        return Ok(false);
    }
    Ok(conn.query_row(sql::KEY_TAKES_NULL, named_params! {":table": local_name}, |r| r.get("takes_null"))?)
}

fn table_exists(conn: &Connection, local_name: &str) -> Result<bool> {
    Ok(conn.query_row(sql::TABLE_EXISTS, named_params! {":name": local_name}, |r| r.get("present"))?)
}

/// Drops a column the server no longer syncs; one a user's index, view or
/// constraint depends on stays, unsynced, as before (SQLite refuses the
/// drop, and nothing else about the column changes).
fn drop_stale_column(conn: &Connection, local_name: &str, column: &str) -> Result<()> {
    if conn.query_row(sql::IN_FOREIGN_KEY, named_params! {":table": local_name, ":column": column}, |r| r.get::<_, bool>("held"))? {
        return Ok(());
    }
    match conn.execute(&sql::drop_column(local_name, column), []) {
        Ok(_) => Ok(()),
        Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::Unknown => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Keeps in `tandem_rejected` the rows of a table come back to its scope
/// that the file wrote while it was out (as they are now, or a delete),
/// before the server's rows replace them: a write the server never saw is
/// never dropped without a word. A key whose columns changed since (the
/// table came back with another primary key) is kept by its stored values.
fn keep_written_while_left(conn: &Connection, scope: &str, version: i64, table: &TableSchema) -> Result<()> {
    if meta::column_names(conn, &local::written_while_left_name(table))? != table.primary_key {
        return Ok(());
    }
    for (key, stored) in rows::read_stored_keys(conn, table, &local::written_keys(table), [])? {
        let row = rows::read_object_by(conn, table, stored)?.map(|row| Value::Object(row).to_string());
        let what = if row.is_some() { "written" } else { "deleted" };
        let reason = format!(
            "{what} while {} was out of scope \"{scope}\"; when it came back (schema version {version}) the server's rows \
             replaced the file's{}",
            table.name,
            if row.is_some() { ": the row as the file held it is kept here" } else { "" }
        );
        conn.execute(
            sql::KEEP_UNFOLLOWED,
            named_params! {":scope": scope, ":table_name": table.name, ":key": rows::key_text(&key), ":row": row, ":reason": reason},
        )?;
    }
    Ok(())
}

/// Columns of a table the file synced before that must go before the
/// server's schema is taken: those the server dropped (or renamed, or
/// dropped and added again under the name), and
/// any left from an earlier time that a column the server just added
/// would meet by name (SQLite compares names without case), so the new
/// column is added afresh, filled as the server's rows are.
fn stale_columns(present: &[String], before: &tandem_core::schema::TableSchema, now: &tandem_core::schema::TableSchema) -> Vec<String> {
    let synced_before = |name: &str| before.columns.iter().any(|c| c.name == name);
    // Synced now as the same column: one dropped and added again under its
    // name since is another (its `since` tells).
    let synced_now = |name: &str| before.columns.iter().any(|b| b.name == name && now.columns.iter().any(|c| c.same_as(b)));
    let added_now = |name: &str| now.columns.iter().any(|c| c.name.eq_ignore_ascii_case(name) && !synced_before(&c.name));
    present
        .iter()
        .filter(|p| !now.primary_key.iter().any(|k| k == *p))
        .filter(|p| (synced_before(p) && !synced_now(p)) || (!synced_before(p) && added_now(p)))
        .cloned()
        .collect()
}

/// Refuses a table another scope of the file syncs, or whose name meets
/// another scope's table's in SQLite (`items.x` of schema `items` and
/// `public."items.x"`; `Notes` and `notes`): the two would share one
/// table of the file, each scope sending the other's rows to its own
/// server table (helper 103). The server refuses such names within one
/// scope.
fn refuse_shared_table(table: &TableSchema, local_name: &str, others: &[(String, String)]) -> Result<()> {
    for (other, name) in others {
        if *name == table.name {
            return Err(LocalError::TableInOtherScope { table: table.name.clone(), other: other.clone() });
        }
        let meets = TableName::parse(name).is_ok_and(|theirs| theirs.local_name().eq_ignore_ascii_case(local_name));
        if meets {
            return Err(LocalError::LocalNameInOtherScope {
                table: table.name.clone(),
                local: local_name.to_string(),
                other_table: name.clone(),
                other: other.clone(),
            });
        }
    }
    Ok(())
}
