//! Server rows the file's own constraints refuse: a unique index, a CHECK
//! or a trigger a program added to a synced table, which the server does
//! not have; or a server's delete that a foreign key of the file's own
//! refuses while a row with an unsent change still refers to the row.
//! Such a row (or delete) is kept aside in `tandem_rejected` (kind
//! `not_stored`) with its version, the rest of the batch is stored, and
//! each round tries the row again, so one row never stalls a device and
//! none is lost: once the program makes room (or the server sends a newer
//! state of the key), the file takes it.

use rusqlite::{named_params, Connection, ErrorCode};
use serde_json::{Map, Value};
use tandem_core::schema::TableSchema;
use tandem_core::sql::device as sql;

use crate::error::{LocalError, Result};
use crate::meta::ScopeState;
use crate::rows;
use crate::tx::{applying, atomically};

/// `error` as a refusal by the file's own constraint (or a trigger's
/// `RAISE(ABORT)`, `RAISE(FAIL)` or `RAISE(IGNORE)`), to keep the row aside;
/// any other error is returned as it is. A refusal that took sync's whole
/// transaction with it (`RAISE(ROLLBACK)`) cannot be kept aside: nothing
/// the batch wrote before it is left.
pub fn as_refusal(conn: &Connection, table: &TableSchema, error: LocalError) -> Result<LocalError> {
    let refused = match &error {
        LocalError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => e.code == ErrorCode::ConstraintViolation,
        LocalError::RowIgnored { .. } => true,
        _ => false,
    };
    if !refused {
        return Err(error);
    }
    if conn.is_autocommit() {
        return Err(LocalError::RolledBack { table: table.name.clone(), reason: error.to_string() });
    }
    Ok(error)
}

/// A server row to store: where it goes and what the server said of it.
pub struct ServerRow<'a> {
    pub t: usize,
    /// The key as the server sent it.
    pub key: &'a [Value],
    /// `None`: the server deleted the row.
    pub row: Option<&'a Map<String, Value>>,
    pub version: Option<&'a str>,
}

/// Runs `write` (a server row's write) as one step: done whole, or, when
/// the file's own constraint refuses it, undone whole and the refusal
/// returned (see [`keep`]).
pub fn refusal_of(conn: &Connection, table: &TableSchema, write: impl FnOnce(&Connection) -> Result<()>) -> Result<Option<LocalError>> {
    match atomically(conn, write) {
        Ok(()) => Ok(None),
        Err(error) => as_refusal(conn, table, error).map(Some),
    }
}

/// Keeps a refused server row aside (one per key: a newer one replaces it).
pub fn keep(conn: &Connection, state: &ScopeState, server: &ServerRow<'_>, error: &LocalError) -> Result<()> {
    let table = &state.schema.tables[server.t];
    let id = state.tables[server.t].id;
    if rows::read_local(conn, table, server.key)?.is_none() {
        // The file holds no row of the key: it holds no base version of it
        // either, or the key would read as a delete the file made (see
        // `local::log_vanished`) and be sent.
        rows::delete_base(conn, table, id, server.key)?;
    }
    let base = rows::read_base(conn, table, id, server.key)?;
    forget(conn, &state.scope, table, server.key)?;
    let key = rows::key_text(server.key);
    conn.prepare_cached(sql::KEEP_NOT_STORED)?.execute(named_params! {
        ":scope": state.scope,
        ":table_name": table.name,
        ":key": key,
        ":row": server.row.map(|row| Value::Object(row.clone()).to_string()),
        ":reason": reason(error),
        ":version": server.version,
        ":base": base,
    })?;
    Ok(())
}

/// Forgets the row of `key` kept aside, if any: a newer one replaces it,
/// or the server deleted the row.
pub fn forget(conn: &Connection, scope: &str, table: &TableSchema, key: &[Value]) -> Result<()> {
    conn.prepare_cached(sql::FORGET_NOT_STORED_KEY)?
        .execute(named_params! {":scope": scope, ":table_name": table.name, ":key": rows::key_text(key)})?;
    Ok(())
}

fn reason(error: &LocalError) -> String {
    format!(
        "this file refused the server's row ({error}): a constraint, index or trigger of the file's own that the server does not \
         have; the row is tried again each sync, and stored once the file can take it"
    )
}

/// One kept row, as stored.
struct Kept {
    id: i64,
    table: String,
    key: Vec<Value>,
    /// `None`: a delete.
    row: Option<Map<String, Value>>,
    version: Option<String>,
    base: Option<String>,
}

fn kept(conn: &Connection, scope: &str) -> Result<Vec<Kept>> {
    let mut statement = conn.prepare_cached(sql::NOT_STORED)?;
    let rows = statement.query_map(named_params! {":scope": scope}, |r| {
        Ok((
            r.get("id")?,
            r.get("table_name")?,
            r.get::<_, String>("key")?,
            r.get::<_, Option<String>>("row")?,
            r.get("version")?,
            r.get("base")?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (id, table, key, row, version, base) = row?;
        let key = serde_json::from_str(&key).map_err(|e| LocalError::Invalid(format!("tandem_rejected row {id}: its key: {e}")))?;
        let row = row
            .map(|row| serde_json::from_str(&row))
            .transpose()
            .map_err(|e| LocalError::Invalid(format!("tandem_rejected row {id}: its row: {e}")))?;
        out.push(Kept { id, table, key, row, version, base });
    }
    Ok(out)
}

/// Drops the kept rows whose key the file has since taken a server state
/// of (a newer row, or a delete): the base version moved. Runs at the end
/// of each transaction that stores server rows.
pub fn settle(conn: &Connection, state: &ScopeState) -> Result<()> {
    for kept in kept(conn, &state.scope)? {
        let now = match state.table_index(&kept.table) {
            Ok(t) => Some(rows::read_base(conn, &state.schema.tables[t], state.tables[t].id, &kept.key)?),
            // The table left the scope: its rows are no longer synced.
            Err(_) => None,
        };
        if now.is_none_or(|now| now != kept.base) {
            conn.prepare_cached(sql::FORGET_REJECTED)?.execute(named_params! {":id": kept.id})?;
        }
    }
    Ok(())
}

/// What a retry of the kept rows did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Retried {
    /// Rows the file took this time.
    pub taken: u64,
    /// Rows still kept aside.
    pub still: u64,
}

/// Tries each kept row again. A key with an unsent local change waits:
/// that change goes up first.
pub fn retry(conn: &Connection, state: &ScopeState) -> Result<Retried> {
    let rows = kept(conn, &state.scope)?;
    if rows.is_empty() {
        return Ok(Retried::default());
    }
    applying(conn, state, |conn| {
        let mut retried = Retried::default();
        for kept in rows {
            let Ok(t) = state.table_index(&kept.table) else {
                conn.prepare_cached(sql::FORGET_REJECTED)?.execute(named_params! {":id": kept.id})?;
                continue;
            };
            let table = &state.schema.tables[t];
            let id = state.tables[t].id;
            if rows::has_pending(conn, table, id, state.tables[t].acked_seq, &kept.key)? {
                retried.still += 1;
                continue;
            }
            let taken = refusal_of(conn, table, |conn| match &kept.row {
                Some(row) => rows::write_object(conn, table, id, row),
                None => rows::delete_with_children(conn, state, t, &kept.key).map(drop),
            })?;
            match taken {
                None => {
                    match (&kept.row, &kept.version) {
                        (Some(_), Some(version)) => rows::write_base(conn, table, id, &kept.key, version)?,
                        (Some(_), None) => rows::delete_base(conn, table, id, &kept.key)?,
                        // The delete took the base version with the row.
                        (None, _) => {}
                    }
                    conn.prepare_cached(sql::FORGET_REJECTED)?.execute(named_params! {":id": kept.id})?;
                    retried.taken += 1;
                }
                Some(refusal) => {
                    retried.still += 1;
                    conn.prepare_cached(sql::SET_NOT_STORED_REASON)?
                        .execute(named_params! {":id": kept.id, ":reason": reason(&refusal)})?;
                }
            }
        }
        Ok(retried)
    })
}

/// A resync receives the tables `tables` (positions) anew: the rows they
/// kept aside go, and those refused again are kept again. A row the server
/// deleted meanwhile is not brought, so it must not stay kept.
pub fn forget_tables(conn: &Connection, state: &ScopeState, tables: impl IntoIterator<Item = usize>) -> Result<()> {
    for t in tables {
        conn.prepare_cached(sql::FORGET_NOT_STORED_TABLE)?
            .execute(named_params! {":scope": state.scope, ":table_name": state.schema.tables[t].name})?;
    }
    Ok(())
}
