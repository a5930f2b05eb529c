//! What the file changes on its own in rows it keeps while sync writes
//! (its own foreign key's `SET NULL`, a program's trigger): that stays on
//! the device (see `tx::applying`), so an upload, which sends whole rows,
//! sends the server's values of such columns instead, until the program
//! writes the column itself or the server's row comes again (see
//! `tandem_core::sql::local::local_only_table`).

use rusqlite::{params_from_iter, Connection, ToSql};
use tandem_core::schema::TableSchema;
use tandem_core::sql::local;

use crate::error::Result;
use crate::meta::ScopeState;

/// Makes the table and triggers that note such values for table `id`
/// (again, whole: on every provisioning, and for a file an earlier Tandem
/// made), or drops them from a table with nothing but its key. Its
/// triggers name every synced column: they go before a column that left
/// the schema is dropped (see [`drop_triggers`]).
pub fn track(conn: &Connection, table: &TableSchema, id: i64) -> Result<()> {
    drop_triggers(conn, id)?;
    if !local::has_values(table) {
        conn.execute(&local::drop_in_main("TABLE", &local::local_only_table(id)), [])?;
        return make_triggers(conn, table, id);
    }
    conn.execute(&local::create_local_only(table, id), [])?;
    let wanted = local::local_only_columns(table);
    let present = crate::meta::column_names(conn, &local::local_only_table_name(id))?;
    // A column that left the schema takes what was noted of it: if it
    // comes back, it is another column.
    for stale in present.iter().filter(|c| c.starts_with(local::LOCAL_ONLY_VALUE_PREFIX) && !wanted.contains(c)) {
        conn.execute(&local::drop_local_only_column(id, stale), [])?;
    }
    for name in wanted.iter().filter(|c| !present.contains(c)) {
        conn.execute(&local::add_local_only_column(id, name), [])?;
    }
    make_triggers(conn, table, id)
}

/// Whether the file, made by an earlier Tandem, lacks this tracking, or
/// keeps in the file the trigger that now lives on sync's connection
/// alone ([`begin_noting`]).
pub fn untracked(conn: &Connection, id: i64) -> Result<bool> {
    let found = conn
        .prepare_cached(tandem_core::sql::device::TRIGGERS_NAMED)?
        .query_map(rusqlite::named_params! {":prefix": local::local_only_trigger_name(id, "")}, |r| r.get::<_, String>("name"))?
        .collect::<rusqlite::Result<Vec<String>>>()?;
    Ok(!found.contains(&local::local_only_trigger_name(id, "delete")) || found.contains(&local::local_only_trigger_name(id, "update")))
}

/// Whether the file has triggers of its own: one may remove a row while
/// sync writes another, and only these triggers take that row's base
/// version with it (helper 70).
pub fn file_has_triggers(conn: &Connection) -> Result<bool> {
    Ok(conn.prepare_cached(tandem_core::sql::device::OWN_TRIGGERS)?.query_row([], |r| r.get("present"))?)
}

/// Makes, for sync's transaction, the triggers that note what the file
/// changes on its own while sync writes ([`local::local_only_noting`]):
/// for every table, where the file has triggers of its own or foreign
/// keys that act (they may change rows while sync writes), and else for
/// the tables that note something already (sync's own write of such a
/// row replaces its entry). Returns the tables noting, for [`end_noting`].
pub fn begin_noting(conn: &Connection, state: &ScopeState) -> Result<Vec<i64>> {
    let mut acting = None;
    let mut noting = Vec::new();
    for (table, t) in state.schema.tables.iter().zip(&state.tables) {
        let Some(trigger) = local::local_only_noting(table, t.id) else { continue };
        let acts = match acting {
            Some(known) => known,
            None => *acting.insert(
                file_has_triggers(conn)?
                    || conn.prepare_cached(tandem_core::sql::device::ACTING_FOREIGN_KEYS)?.query_row([], |r| r.get("present"))?,
            ),
        };
        if acts || any(conn, table, t.id)? {
            conn.prepare_cached(&trigger)?.execute([])?;
            noting.push(t.id);
        }
    }
    Ok(noting)
}

/// Drops what [`begin_noting`] made, before sync's transaction ends.
pub fn end_noting(conn: &Connection, noting: &[i64]) -> Result<()> {
    for &id in noting {
        conn.execute(&local::stop_local_only_noting(id), [])?;
    }
    Ok(())
}

/// Whether this connection has table `id`'s trigger of [`begin_noting`]
/// ([`drop_triggers`] drops it with the file's).
pub fn is_noting(conn: &Connection, id: i64) -> Result<bool> {
    Ok(conn.prepare_cached(local::LOCAL_ONLY_NOTING)?.query_row([local::local_only_noting_name(id)], |r| r.get("present"))?)
}

/// Makes table `id`'s trigger of [`begin_noting`] again, after
/// [`drop_triggers`] dropped it.
pub fn note_again(conn: &Connection, table: &TableSchema, id: i64) -> Result<()> {
    if let Some(noting) = local::local_only_noting(table, id) {
        conn.execute(&noting, [])?;
    }
    Ok(())
}

/// Whether table `id` notes anything.
pub fn any(conn: &Connection, table: &TableSchema, id: i64) -> Result<bool> {
    Ok(local::has_values(table) && conn.prepare_cached(&local::local_only_any(id))?.query_row([], |r| r.get(0))?)
}

/// Brings what table `id` notes up to date with what the program wrote
/// since (see `local::fold_local_only`): after an upload.
pub fn fold(conn: &Connection, table: &TableSchema, id: i64) -> Result<()> {
    if !any(conn, table, id)? {
        return Ok(());
    }
    for statement in local::fold_local_only(table, id) {
        conn.prepare_cached(&statement)?.execute([])?;
    }
    Ok(())
}

/// Settles what sync's transaction noted of table `id`, if it noted
/// anything.
pub fn settle(conn: &Connection, table: &TableSchema, id: i64) -> Result<()> {
    if !local::has_values(table) || !conn.prepare_cached(&local::local_only_noted(id))?.query_row([], |r| r.get::<_, bool>(0))? {
        return Ok(());
    }
    for statement in local::settle_local_only(table, id) {
        conn.prepare_cached(&statement)?.execute([])?;
    }
    Ok(())
}

/// Runs `write`, sync's own write of rows of table `id`: they are the
/// server's, not the file's own changes.
pub fn writing<T>(conn: &Connection, id: i64, write: impl FnOnce() -> Result<T>) -> Result<T> {
    conn.prepare_cached(local::WRITING_TABLE)?.execute([id])?;
    let value = write();
    conn.prepare_cached(local::WRITING_TABLE)?.execute([rusqlite::types::Null])?;
    value
}

/// Makes the triggers of table `id` (again, whole), its table being as
/// the schema has it: after [`drop_triggers`].
pub fn make_triggers(conn: &Connection, table: &TableSchema, id: i64) -> Result<()> {
    for statement in local::local_only_triggers(table, id) {
        conn.execute(&statement, [])?;
    }
    Ok(())
}

/// Drops the triggers of table `id`, which name its columns: before a
/// column that left the schema is dropped ([`track`] makes them again),
/// and while a large batch stores the table's rows ([`make_triggers`]).
pub fn drop_triggers(conn: &Connection, id: i64) -> Result<()> {
    for statement in local::drop_local_only_triggers(id) {
        conn.execute(&statement, [])?;
    }
    Ok(())
}

/// Notes a row of table `id` whose server state the file refused (its
/// own constraint): the server's `values` (of `columns`) as the values to
/// send, the row as the file holds it as what the file left. The row's
/// next upload then sends the server's values of what the file could not
/// take (a value its own key refuses, a column the row got after the
/// server's row was refused) with the program's own edits.
pub fn note_refused(
    conn: &Connection,
    table: &TableSchema,
    id: i64,
    columns: &[String],
    values: &[impl ToSql],
    key: &[impl ToSql],
) -> Result<()> {
    if !local::has_values(table) {
        return Ok(());
    }
    let params: Vec<&dyn ToSql> = values.iter().map(|v| v as &dyn ToSql).chain(key.iter().map(|k| k as &dyn ToSql)).collect();
    for statement in local::note_server_row(table, id, columns) {
        conn.prepare_cached(&statement)?.execute(params_from_iter(params.iter()))?;
    }
    Ok(())
}
