//! Tandem's bookkeeping in a local file: which scopes it syncs, with which
//! schema, identity, parameters and watermark, and each table's tracking id
//! and acknowledged change counter.

use rusqlite::{params, Connection, OptionalExtension};
use serde_json::Value;
use tandem_core::options::Params;
use tandem_core::schema::Schema;
use tandem_core::sql::local::METADATA;

use crate::error::{LocalError, Result};

/// Creates Tandem's tables if the file does not have them yet.
pub fn ensure(conn: &Connection) -> Result<()> {
    conn.execute_batch(METADATA)?;
    Ok(())
}

#[derive(Debug, Clone)]
pub struct ScopeState {
    pub scope: String,
    pub schema: Schema,
    /// This file's identity toward the server for this scope.
    pub client_id: String,
    /// The filter parameters this file syncs with (bound on first sync).
    pub params: Option<Params>,
    /// Where the next pull starts (NULL: never pulled).
    pub watermark: Option<String>,
    /// Per table of `schema.tables`: tracking id and acknowledged counter.
    pub tables: Vec<TableState>,
}

#[derive(Debug, Clone, Copy)]
pub struct TableState {
    pub id: i64,
    pub acked_seq: i64,
}

impl ScopeState {
    pub fn table_index(&self, name: &str) -> Result<usize> {
        let table = self.schema.table(name)?;
        Ok(self.schema.position(table))
    }
}

pub fn load(conn: &Connection, scope: &str) -> Result<Option<ScopeState>> {
    let has_metadata: bool = conn.query_row(
        "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'tandem_scopes'",
        [],
        |r| r.get(0),
    )?;
    if !has_metadata {
        return Ok(None);
    }
    let row = conn
        .query_row(
            "SELECT schema, client_id, params, watermark FROM tandem_scopes WHERE scope = ?1",
            [scope],
            |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, Option<String>>(2)?, r.get::<_, Option<String>>(3)?)),
        )
        .optional()?;
    let Some((schema, client_id, params, watermark)) = row else { return Ok(None) };
    let schema: Schema = serde_json::from_str(&schema)
        .map_err(|e| LocalError::Invalid(format!("the stored schema of scope \"{scope}\" is unreadable: {e}")))?;
    let params = params.and_then(|p| match serde_json::from_str::<Value>(&p) {
        Ok(Value::Object(map)) => Some(map.into_iter().collect()),
        _ => None,
    });
    let mut tables = Vec::with_capacity(schema.tables.len());
    for table in &schema.tables {
        let state = conn.query_row(
            "SELECT id, acked_seq FROM tandem_tables WHERE scope = ?1 AND name = ?2",
            params![scope, table.name],
            |r| Ok(TableState { id: r.get(0)?, acked_seq: r.get(1)? }),
        )?;
        tables.push(state);
    }
    Ok(Some(ScopeState { scope: scope.to_string(), schema, client_id, params, watermark, tables }))
}

pub fn require(conn: &Connection, scope: &str) -> Result<ScopeState> {
    load(conn, scope)?.ok_or_else(|| tandem_core::Error::UnknownScope(scope.to_string()).into())
}

pub fn set_watermark(conn: &Connection, scope: &str, watermark: Option<&str>) -> Result<()> {
    conn.execute(
        "UPDATE tandem_scopes SET watermark = ?2, last_sync = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE scope = ?1",
        params![scope, watermark],
    )?;
    Ok(())
}

pub fn set_params(conn: &Connection, scope: &str, params: &Params) -> Result<()> {
    let text = Value::Object(params.clone().into_iter().collect()).to_string();
    conn.execute("UPDATE tandem_scopes SET params = ?2 WHERE scope = ?1", params![scope, text])?;
    Ok(())
}

/// Adopts the client id of a registration (a token) for a file that has not
/// synced as anyone yet.
pub fn set_client_id(conn: &Connection, scope: &str, client_id: &str) -> Result<()> {
    conn.execute("UPDATE tandem_scopes SET client_id = ?2 WHERE scope = ?1", params![scope, client_id])?;
    Ok(())
}

pub fn set_acked(conn: &Connection, id: i64, seq: i64) -> Result<()> {
    conn.execute("UPDATE tandem_tables SET acked_seq = max(acked_seq, ?2) WHERE id = ?1", params![id, seq])?;
    Ok(())
}

/// A fresh client id: 128 random bits as a UUID (version 4).
pub fn new_client_id() -> Result<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| LocalError::Invalid(format!("no randomness for a client id: {e}")))?;
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32]))
}
