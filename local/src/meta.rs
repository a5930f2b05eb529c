//! Tandem's bookkeeping in a local file: which scopes it syncs, with which
//! schema, identity, parameters and watermark, and each table's tracking id
//! and acknowledged change counter.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use rusqlite::{named_params, Connection, OptionalExtension};
use serde_json::Value;
use tandem_core::options::{NotTaken, Params};
use tandem_core::schema::{Schema, TableSchema};
use tandem_core::sql::device as sql;
use tandem_core::sql::local::{self, ADDED_COLUMNS, METADATA, METADATA_MARKS, RENAMED_COLUMNS};

use crate::changes::InFlight;
use crate::checked;
use crate::error::{LocalError, Result};

/// Creates Tandem's tables if the file does not have them yet, and adds
/// what a file made by an earlier Tandem lacks.
pub fn ensure(conn: &Connection) -> Result<()> {
    if !checked::is_current(conn, LAYOUT)? {
        upgrade(conn)?;
        checked::note(conn, LAYOUT)?;
    }
    // A file from before replicas: its scopes get their ids now.
    let unnamed: Vec<String> =
        conn.prepare_cached(sql::SCOPES_WITHOUT_REPLICA)?.query_map([], |r| r.get("scope"))?.collect::<rusqlite::Result<_>>()?;
    for scope in unnamed {
        new_replica(conn, &scope)?;
    }
    Ok(())
}

/// What [`ensure`] notes as checked (see `crate::checked`).
const LAYOUT: &str = "layout";

/// Tandem's tables, and what an earlier Tandem's file lacks.
fn upgrade(conn: &Connection) -> Result<()> {
    // A program's own table under one of these names is left as it is:
    // Tandem would add its columns to it, then fail on it.
    for (table, column) in METADATA_MARKS {
        let columns = column_names(conn, table)?;
        if !columns.is_empty() && !columns.iter().any(|c| c == column) {
            return Err(LocalError::Invalid(format!(
                "the file holds a table {table} that Tandem did not make (it has no column {column}): names starting with \
                 tandem_ are Tandem's; rename that table, or sync into another file"
            )));
        }
    }
    conn.execute_batch(METADATA)?;
    conn.execute_batch(sql::DROP_UNUSED)?;
    for (table, column, definition) in ADDED_COLUMNS {
        if !column_names(conn, table)?.iter().any(|c| c == column) {
            conn.execute_batch(&sql::add_bookkeeping_column(table, column, definition))?;
        }
    }
    // Tracking tables whose bookkeeping columns an earlier Tandem named
    // without the prefix get it now.
    let ids: Vec<i64> = conn.prepare(sql::ALL_TABLE_IDS)?.query_map([], |r| r.get("id"))?.collect::<rusqlite::Result<_>>()?;
    for id in ids {
        for (prefix, old, new) in RENAMED_COLUMNS {
            let table = format!("{prefix}{id}");
            let names = column_names(conn, &table)?;
            if names.iter().any(|n| n == old) && !names.iter().any(|n| n == new) {
                conn.execute_batch(&sql::rename_column(&table, old, new))?;
            }
        }
    }
    upgrade_tracking(conn)
}

/// The columns of a table of the file (none when it has no such table).
pub fn column_names(conn: &Connection, table: &str) -> Result<Vec<String>> {
    Ok(conn
        .prepare_cached(sql::COLUMN_NAMES)?
        .query_map(named_params! {":table": table}, |r| r.get("name"))?
        .collect::<rusqlite::Result<_>>()?)
}

/// Tracking an earlier Tandem made gains what it lacks: the table that
/// notes what the file changes on its own while sync writes (see
/// `local_only`), and, in a file made before key changes were logged as
/// moves, the log's columns for the new key, with its triggers made again
/// to fill them.
fn upgrade_tracking(conn: &Connection) -> Result<()> {
    let scopes: Vec<(String, String)> =
        conn.prepare(sql::ALL_SCOPES)?.query_map([], |r| Ok((r.get("scope")?, r.get("schema")?)))?.collect::<rusqlite::Result<_>>()?;
    for (scope, schema) in scopes {
        let Ok(schema) = serde_json::from_str::<Schema>(&schema) else { continue };
        for (name, id) in tracked_tables(conn, &scope)? {
            let Some(table) = schema.tables.iter().find(|t| t.name == name) else { continue };
            let columns = column_names(conn, &local::log_table_name(id))?;
            if !columns.is_empty() && crate::local_only::untracked(conn, id)? {
                crate::local_only::track(conn, table, id)?;
            }
            if columns.is_empty() || columns.iter().any(|c| c == "tandem_to_1") {
                continue;
            }
            for statement in local::add_moved_to_columns(table, id).into_iter().chain(local::triggers(table, id)) {
                conn.execute_batch(&statement)?;
            }
        }
    }
    Ok(())
}

#[derive(Debug, Clone)]
pub struct ScopeState {
    pub scope: String,
    /// Shared: loads of an unchanged scope parse it once.
    pub schema: Arc<Schema>,
    /// This file's identity toward the server for this scope.
    pub client_id: String,
    /// The filter parameters this file syncs with (bound on first sync).
    pub params: Option<Params>,
    /// Where the next pull starts (NULL: never pulled).
    pub watermark: Option<String>,
    /// This file's id: one replica of the client's partition.
    pub replica_id: String,
    /// The id of the upload sent and not answered yet: sent again, an
    /// upload keeps it, so the server knows it for a retry.
    pub upload_id: Option<String>,
    /// Versions of its recorded uploads the watermark does not cover yet.
    pub echoes: Vec<String>,
    /// A pull from NULL is replacing the file's server state (see
    /// `crate::resync`).
    pub resync: bool,
    /// What uploads say they received instead of the watermark, while a
    /// server delete the file kept its row beside waits for the next
    /// upload (see [`hold_seen`]).
    pub seen_until: Option<String>,
    /// Those deletes, named, while held; `None` for a hold that could not
    /// name them all (one came without a version, or an earlier Tandem
    /// made it).
    pub kept_deletes: Option<NotTaken>,
    /// Per table of `schema.tables`: tracking id and acknowledged counter.
    pub tables: Vec<TableState>,
}

#[derive(Debug, Clone, Copy)]
pub struct TableState {
    pub id: i64,
    pub acked_seq: i64,
}

impl ScopeState {
    /// This state with only the tables and columns `schema` has too: what
    /// the file can send of changes made under its own schema once the
    /// server's has changed.
    pub fn narrowed_to(mut self, schema: &Schema) -> ScopeState {
        let mut tables = Vec::new();
        let mut states = Vec::new();
        let mut narrowed = Schema::clone(&self.schema);
        for (mut table, state) in std::mem::take(&mut narrowed.tables).into_iter().zip(self.tables) {
            // A table made again with another primary key is another table.
            let Some(server) = schema.tables.iter().find(|t| t.same_table(&table)) else {
                continue;
            };
            table.columns.retain(|c| server.columns.iter().any(|s| s.same_as(c)));
            tables.push(table);
            states.push(state);
        }
        narrowed.tables = tables;
        self.schema = Arc::new(narrowed);
        self.tables = states;
        self
    }

    pub fn table_index(&self, name: &str) -> Result<usize> {
        let table = self.schema.table(name)?;
        Ok(self.schema.position(table))
    }
}

pub fn load(conn: &Connection, scope: &str) -> Result<Option<ScopeState>> {
    let has_metadata: bool = conn.prepare_cached(sql::HAS_METADATA)?.query_row([], |r| r.get("present"))?;
    if !has_metadata {
        return Ok(None);
    }
    let row = conn
        .prepare_cached(sql::LOAD_SCOPE)?
        .query_row(named_params! {":scope": scope}, |r| {
            Ok(StoredRow {
                schema: r.get("schema")?,
                client_id: r.get("client_id")?,
                params: r.get("params")?,
                watermark: r.get("watermark")?,
                replica_id: r.get("replica_id")?,
                upload_id: r.get("upload_id")?,
                echoes: r.get("echoes")?,
                resync: r.get("resync")?,
                seen_until: r.get("seen_until")?,
                kept_deletes: r.get("kept_deletes")?,
            })
        })
        .optional()?;
    let Some(StoredRow { schema, client_id, params, watermark, replica_id, upload_id, echoes, resync, seen_until, kept_deletes }) = row
    else {
        return Ok(None);
    };
    let replica_id = replica_id.ok_or_else(|| LocalError::Invalid(format!("scope \"{scope}\" of this file has no replica id")))?;
    let echoes: Vec<String> = match echoes {
        None => Vec::new(),
        Some(text) => serde_json::from_str(&text)
            .map_err(|e| LocalError::Invalid(format!("the recorded upload versions of scope \"{scope}\" are unreadable: {e}")))?,
    };
    let kept_deletes = kept_deletes.as_deref().map(|text| read_kept(scope, text)).transpose()?;
    let schema = parsed_schema(scope, schema)?;
    let params = params.and_then(|p| match serde_json::from_str::<Value>(&p) {
        Ok(Value::Object(map)) => Some(map.into_iter().collect()),
        _ => None,
    });
    // Every table's state and tracking objects in two reads: a round loads
    // the scope several times, and a wide scope has many tables.
    let missing = |table: &TableSchema, object: &str| LocalError::TrackingMissing {
        scope: scope.to_string(),
        table: table.name.clone(),
        object: object.to_string(),
    };
    let mut states: HashMap<String, TableState> = conn
        .prepare_cached(sql::TABLE_STATES)?
        .query_map(named_params! {":scope": scope}, |r| {
            Ok((r.get("name")?, TableState { id: r.get("id")?, acked_seq: r.get("acked_seq")? }))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut tables = Vec::with_capacity(schema.tables.len());
    for table in &schema.tables {
        let state = states.remove(&table.name).ok_or_else(|| missing(table, "its row in tandem_tables"))?;
        tables.push(state);
    }
    let checked = format!("tracking of {scope}: {}", tables.iter().map(|t| t.id.to_string()).collect::<Vec<_>>().join(","));
    if !checked::is_current(conn, &checked)? {
        let objects: Vec<String> = tables.iter().flat_map(|t| tracking_objects(t.id)).collect();
        let names = serde_json::to_string(&objects).map_err(|e| LocalError::Invalid(e.to_string()))?;
        let present: HashSet<String> = conn
            .prepare_cached(sql::PRESENT_OBJECTS)?
            .query_map(named_params! {":names": names}, |r| r.get("name"))?
            .collect::<rusqlite::Result<_>>()?;
        for (table, state) in schema.tables.iter().zip(&tables) {
            if let Some(gone) = tracking_objects(state.id).into_iter().find(|o| !present.contains(o)) {
                return Err(missing(table, &gone));
            }
        }
        checked::note(conn, &checked)?;
    }
    Ok(Some(ScopeState {
        scope: scope.to_string(),
        schema,
        client_id,
        params,
        watermark,
        replica_id,
        upload_id,
        echoes,
        resync,
        seen_until,
        kept_deletes,
        tables,
    }))
}

/// Schemas parsed, by scope, with the text each was parsed from: a round
/// loads its scope's state several times, and parsing a wide scope's
/// schema each time cost more than the rest of the load. A text compared
/// is far cheaper than a text parsed.
static PARSED: Mutex<BTreeMap<String, (String, Arc<Schema>)>> = Mutex::new(BTreeMap::new());

fn parsed_schema(scope: &str, text: String) -> Result<Arc<Schema>> {
    let mut parsed = PARSED.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((seen, schema)) = parsed.get(scope) {
        if *seen == text {
            return Ok(Arc::clone(schema));
        }
    }
    let schema: Arc<Schema> = Arc::new(
        serde_json::from_str(&text)
            .map_err(|e| LocalError::Invalid(format!("the stored schema of scope \"{scope}\" is unreadable: {e}")))?,
    );
    parsed.insert(scope.to_string(), (text, Arc::clone(&schema)));
    Ok(schema)
}

/// A `tandem_scopes` row as stored.
struct StoredRow {
    schema: String,
    client_id: String,
    params: Option<String>,
    watermark: Option<String>,
    replica_id: Option<String>,
    upload_id: Option<String>,
    echoes: Option<String>,
    resync: bool,
    seen_until: Option<String>,
    kept_deletes: Option<String>,
}

/// The tracking objects of table `id`: its log, its base versions and its
/// four triggers.
fn tracking_objects(id: i64) -> [String; 6] {
    [
        local::log_table_name(id),
        local::base_table_name(id),
        format!("tandem_{id}_insert"),
        format!("tandem_{id}_update"),
        format!("tandem_{id}_key"),
        format!("tandem_{id}_delete"),
    ]
}

/// Whether the file has provisioned `scope`.
pub fn scope_exists(conn: &Connection, scope: &str) -> Result<bool> {
    Ok(conn.query_row(sql::SCOPE_EXISTS, named_params! {":scope": scope}, |r| r.get("present"))?)
}

/// The tables that left the scope (see `tandem_left_tables`).
pub fn left_tables(conn: &Connection, scope: &str) -> Result<Vec<String>> {
    let mut statement = conn.prepare(sql::LEFT_TABLES)?;
    let names = statement.query_map(named_params! {":scope": scope}, |r| r.get("name"))?.collect::<rusqlite::Result<Vec<String>>>()?;
    Ok(names)
}

/// The tables of `scope` with a tracking id, by name, as recorded.
pub fn tracked_tables(conn: &Connection, scope: &str) -> Result<Vec<(String, i64)>> {
    Ok(conn
        .prepare(sql::TRACKED_TABLES)?
        .query_map(named_params! {":scope": scope}, |r| Ok((r.get("name")?, r.get("id")?)))?
        .collect::<rusqlite::Result<_>>()?)
}

pub fn require(conn: &Connection, scope: &str) -> Result<ScopeState> {
    load(conn, scope)?.ok_or_else(|| tandem_core::Error::UnknownScope(scope.to_string()).into())
}

pub fn set_watermark(conn: &Connection, scope: &str, watermark: Option<&str>) -> Result<()> {
    conn.execute(sql::SET_WATERMARK, named_params! {":scope": scope, ":watermark": watermark})?;
    Ok(())
}

/// Keeps `batch` as the one in flight, before it is sent, and returns the
/// id to send it under: `continuing` (the id of a lost upload whose batch
/// cannot go again, see `agent::Resent::CannotGo`), else a new one, so
/// that the server takes an upload under an id it knows for a retry of
/// exactly that batch. A file that holds the id (the same file after a
/// lost answer, or a backup of it) holds what was sent under it.
pub fn send(conn: &Connection, state: &ScopeState, batch: &InFlight, continuing: Option<&str>) -> Result<String> {
    let id = continuing.map_or_else(new_client_id, str::to_string);
    let kept = serde_json::to_string(batch).map_err(|e| LocalError::Invalid(e.to_string()))?;
    conn.execute(sql::SET_IN_FLIGHT, named_params! {":scope": state.scope, ":upload_id": id, ":batch": kept})?;
    Ok(id)
}

/// The id of the upload sent and not answered, with its batch when the
/// file kept it (an earlier Tandem kept only the id, and a batch the file
/// cannot read back is as good as none): its answer was lost, or it never
/// reached the server.
pub fn in_flight(conn: &Connection, scope: &str) -> Result<Option<(String, Option<InFlight>)>> {
    let (id, kept): (Option<String>, Option<String>) =
        conn.prepare_cached(sql::IN_FLIGHT)?.query_row(named_params! {":scope": scope}, |r| Ok((r.get("upload_id")?, r.get("batch")?)))?;
    Ok(id.map(|id| (id, kept.and_then(|kept| serde_json::from_str(&kept).ok()))))
}

/// The batch in flight needs no second sending (answered, or refused):
/// the next one goes under a new id.
pub fn clear_in_flight(conn: &Connection, scope: &str) -> Result<()> {
    conn.execute(sql::CLEAR_IN_FLIGHT, named_params! {":scope": scope})?;
    Ok(())
}

/// Records an upload's answer: its version joins those whose rows the
/// next pull need not send back, and the batch is no longer in flight.
pub fn record_upload_answer(conn: &Connection, state: &ScopeState, version: Option<&str>) -> Result<()> {
    let mut echoes = state.echoes.clone();
    if let Some(version) = version {
        if !echoes.iter().any(|e| e == version) {
            echoes.push(version.to_string());
        }
    }
    let echoes = serde_json::to_string(&echoes).map_err(|e| LocalError::Invalid(e.to_string()))?;
    conn.execute(sql::SET_ECHOES, named_params! {":scope": state.scope, ":echoes": echoes})?;
    clear_in_flight(conn, &state.scope)
}

/// A pull brought server deletes the file did not take: of rows it kept
/// for their unsent changes, or of keys it held no row of in that text
/// while it held unsent changes (another spelling of a key it holds).
/// Until its next upload goes through, an insert of such a key must meet
/// the delete (design.md, "Conflicts are detected by version"). Recorded
/// both ways: the deletes' versions, for a server that takes
/// `seen.kept` (`None`: one came without a version, and the hold stays
/// whole), and `watermark`, the one before that pull, which uploads say
/// instead of theirs to a server that does not.
pub fn hold_seen(conn: &Connection, scope: &str, watermark: &str, not_taken: Option<NotTaken>) -> Result<()> {
    let (held, recorded): (Option<String>, Option<String>) =
        conn.prepare_cached(sql::HELD_SEEN)?.query_row(named_params! {":scope": scope}, |r| Ok((r.get(0)?, r.get(1)?)))?;
    let named = match (held, recorded, not_taken) {
        // Held already without naming its deletes, or these cannot all be
        // named: the hold is whole.
        (Some(_), None, _) | (_, _, None) => None,
        (_, recorded, Some(not_taken)) => {
            let mut all = recorded.as_deref().map(|text| read_kept(scope, text)).transpose()?.unwrap_or_default();
            all.merge(not_taken);
            Some(serde_json::to_string(&all).map_err(|e| LocalError::Invalid(e.to_string()))?)
        }
    };
    conn.prepare_cached(sql::HOLD_SEEN)?.execute(named_params! {":scope": scope, ":watermark": watermark, ":kept": named})?;
    Ok(())
}

fn read_kept(scope: &str, text: &str) -> Result<NotTaken> {
    serde_json::from_str(text).map_err(|e| LocalError::Invalid(format!("the kept deletes of scope \"{scope}\" are unreadable: {e}")))
}

/// An upload went through: what a held [`hold_seen`] waited for went up.
pub fn release_seen(conn: &Connection, scope: &str) -> Result<()> {
    conn.prepare_cached(sql::RELEASE_SEEN)?.execute(named_params! {":scope": scope})?;
    Ok(())
}

/// Stores a pull's watermark; a complete one also forgets the upload
/// versions it covers (their rows are behind it now). While uploads say
/// an older watermark ([`hold_seen`]), only those that one covers: the
/// file's own writes after it stay its own to the server, or its insert
/// of a key it deleted meets that delete as another writer's.
pub fn set_pulled(conn: &Connection, state: &ScopeState, watermark: &str) -> Result<()> {
    set_watermark(conn, &state.scope, Some(watermark))?;
    let now = require(conn, &state.scope)?;
    let said = now.seen_until.as_deref().unwrap_or(watermark);
    if let Ok(tandem_core::watermark::Watermark::Complete(snapshot)) = tandem_core::watermark::Watermark::parse(said) {
        let left: Vec<&String> = now.echoes.iter().filter(|v| !v.parse::<u64>().is_ok_and(|xid| snapshot.sees(xid))).collect();
        let echoes = serde_json::to_string(&left).map_err(|e| LocalError::Invalid(e.to_string()))?;
        conn.execute(sql::SET_ECHOES, named_params! {":scope": state.scope, ":echoes": echoes})?;
    }
    Ok(())
}

/// Binds the file to filter parameters; `None` unbinds a file whose first
/// round failed before the server took them.
pub fn set_params(conn: &Connection, scope: &str, params: Option<&Params>) -> Result<()> {
    let text = params.map(|p| Value::Object(p.clone().into_iter().collect()).to_string());
    conn.execute(sql::SET_PARAMS, named_params! {":scope": scope, ":params": text})?;
    Ok(())
}

/// The server (and database) the file syncs `scope` with, once it knows.
pub fn server_id(conn: &Connection, scope: &str) -> Result<Option<String>> {
    Ok(conn.query_row(sql::SERVER_ID, named_params! {":scope": scope}, |r| r.get("server_id")).optional()?.flatten())
}

pub fn set_server_id(conn: &Connection, scope: &str, server_id: &str) -> Result<()> {
    conn.execute(sql::SET_SERVER_ID, named_params! {":scope": scope, ":server_id": server_id})?;
    Ok(())
}

/// A new replica id for a file that syncs under a new identity (see
/// `SyncOptions::rebind`); the upload in flight, if any, is forgotten.
pub fn new_replica(conn: &Connection, scope: &str) -> Result<()> {
    conn.execute(sql::SET_REPLICA, named_params! {":scope": scope, ":replica_id": new_client_id()})?;
    Ok(())
}

/// Adopts the client id of a registration (a token) for a file that has not
/// synced as anyone yet.
pub fn set_client_id(conn: &Connection, scope: &str, client_id: &str) -> Result<()> {
    conn.execute(sql::SET_CLIENT_ID, named_params! {":scope": scope, ":client_id": client_id})?;
    Ok(())
}

pub fn set_acked(conn: &Connection, id: i64, seq: i64) -> Result<()> {
    conn.execute(sql::SET_ACKED, named_params! {":id": id, ":seq": seq})?;
    Ok(())
}

/// Counts nothing of table `id`'s log as acknowledged any more.
pub fn reset_acked(conn: &Connection, id: i64) -> Result<()> {
    conn.execute(sql::RESET_ACKED, named_params! {":id": id})?;
    Ok(())
}

/// A fresh client id: a random UUID (version 4).
pub fn new_client_id() -> String {
    uuid::Uuid::new_v4().to_string()
}
