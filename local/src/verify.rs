//! Local `sync_verify`: checks the file's rows against its partition on
//! the server, table by table, and repairs exactly the rows that differ
//! (see `tandem_core::verify` for the exchange). Rows with an unsent local
//! change are left out (the next sync sends them), and so are rows the
//! server changed since the file's watermark (the next sync brings them).

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use rusqlite::{named_params, Connection};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tandem_core::changeset::{Changeset, Op, RowChange, TableChanges, FORMAT};
use tandem_core::identity::token_client_id;
use tandem_core::schema::TableSchema;
use tandem_core::sql::{device as sql, local};
use tandem_core::types::{describe_local, local_to_json};
use tandem_core::verify::{
    bucket_count, compare_rows, key_text, Buckets, RowDigest, Step, TableAnswer, TableAsk, TableReport, VerifyAnswer, VerifyOptions,
    MAX_PENDING,
};
use tandem_core::watermark::Watermark;

use crate::apply;
use crate::error::{LocalError, RemoteError, Result};
use crate::meta::{self, ScopeState};
use crate::remote::Remote;
use crate::rows;
use crate::values::from_sql;

/// Options of the local `sync_verify` (unknown keys are an error).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    /// The device's token, as for `sync_run`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// A PEM file of the root certificate the server's must chain to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<String>,
    /// Write the server's rows where the file differs, and remove the rows
    /// the server does not hold (never a row with an unsent change).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub repair: bool,
}

impl Options {
    pub fn parse(value: Option<&Value>) -> Result<Self> {
        match value {
            None | Some(Value::Null) => Ok(Options::default()),
            Some(v) => Ok(serde_json::from_value(v.clone()).map_err(|e| tandem_core::Error::InvalidOptions(e.to_string()))?),
        }
    }
}

/// What a verify found (and repaired).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct VerifyReport {
    pub scope: String,
    /// Every table holds exactly its partition (pending rows aside).
    pub equal: bool,
    pub rows_checked: u64,
    pub tables: Vec<TableReport>,
    /// Rows written or removed by the repair (`repair` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repaired: Option<u64>,
    /// Rows the repair left as the file has them: they changed in the file
    /// meanwhile, and go up with the next sync.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub kept_local: u64,
    /// Bytes of requests and answers exchanged with the server.
    pub bytes_moved: u64,
    pub took_ms: u64,
}

/// A table being verified: its place in the schema and the keys left out.
struct Checked<'s> {
    t: usize,
    table: &'s TableSchema,
    /// Key texts of rows with an unsent local change, or that the server
    /// changed since the watermark.
    skipped: HashSet<String>,
    local_pending: Vec<Vec<Value>>,
    buckets: u32,
    report: TableReport,
}

/// The SQL function: `sync_verify(remote, scope[, options])`.
pub fn verify(conn: &Connection, remote: &mut dyn Remote, scope: &str, options: &Options) -> Result<VerifyReport> {
    let started = Instant::now();
    // A temporary table under a synced one's name would be what it reads.
    crate::tx::refuse_unsafe_connection(conn)?;
    let _lock = crate::lock::SyncLock::acquire(conn)?;
    meta::ensure(conn)?;
    let state = meta::load(conn, scope)?.ok_or_else(|| {
        LocalError::Invalid(format!("this file does not sync scope \"{scope}\": sync it first (tandem sync), then verify"))
    })?;
    if let Some(token) = &options.token {
        // The token's partition is what the file is compared with: another
        // client's would "repair" the file into another tenant's rows.
        let id = token_client_id(token)
            .ok_or_else(|| LocalError::Invalid("the token is not one sync_register_client issued (tdm_<client>_<secret>)".into()))?;
        if id != state.client_id {
            return Err(LocalError::Invalid(format!(
                "this file syncs scope \"{scope}\" as client {}; the token is for client {id}: verify the file with its own \
                 token (a file that should sync as the new client takes it with tandem sync --rebind first)",
                state.client_id
            )));
        }
    }
    crate::log_reset::mend(conn, &state)?;
    let state = meta::require(conn, scope)?;
    let since = ready(&state)?;
    let server_schema = remote.schema(scope, options.token.as_deref())?;
    if server_schema != *state.schema {
        return Err(LocalError::Invalid(format!(
            "the server's schema of scope \"{scope}\" changed since this file's last sync: sync it, then verify"
        )));
    }
    if let (Some(server), Some(known)) = (remote.server_id(), meta::server_id(conn, scope)?) {
        if server != known {
            return Err(LocalError::Invalid(format!(
                "this file synced scope \"{scope}\" with another server ({known}): sync it (with --rebind), then verify"
            )));
        }
    }
    // Without a token, the scope's owner verifies as the client the file
    // is, with its parameters (as its syncs do).
    let owner = options.token.is_none().then(|| (state.client_id.clone(), state.params.clone()));
    let mut exchange = Exchange { remote, scope, token: options.token.as_deref(), owner, since: &since, bytes: 0 };

    let mut tables = Vec::new();
    for (t, table) in state.schema.tables.iter().enumerate() {
        if !table.direction.downloads() {
            continue;
        }
        let local_pending = local_pending(conn, &state, t)?;
        if local_pending.len() > MAX_PENDING {
            return Err(LocalError::Invalid(format!(
                "{} rows of {} have changes not sent yet: sync the file, then verify it",
                local_pending.len(),
                table.name
            )));
        }
        let rows: i64 = conn.query_row(&sql::count_rows(&local::user_table(table)), [], |r| r.get("rows"))?;
        tables.push(Checked {
            t,
            table,
            skipped: local_pending.iter().map(|k| key_text(k)).collect(),
            local_pending,
            buckets: bucket_count(rows.max(0) as u64),
            report: TableReport { table: table.name.clone(), ..TableReport::default() },
        });
    }

    // Step 1: every bucket's digest.
    let asks = tables.iter().map(|c| TableAsk { buckets: Some(c.buckets), ..c.ask() }).collect();
    let answer = exchange.call(Step::Buckets, asks)?;
    let mut suspect: Vec<(usize, Vec<u32>)> = Vec::new();
    for (i, theirs) in matched(&tables, &answer)?.into_iter().enumerate() {
        let checked = &mut tables[i];
        skip_pending(checked, theirs);
        skip_written_since(conn, &state, checked)?;
        let ours = local_buckets(conn, checked)?;
        checked.report.rows_checked = theirs.rows;
        checked.report.buckets = checked.buckets;
        let differing = ours.differing(&theirs.sums)?;
        checked.report.ranges_differ = differing.len() as u64;
        if !differing.is_empty() {
            suspect.push((i, differing));
        }
    }

    // Step 2: each row's hash in the buckets that differ.
    if !suspect.is_empty() {
        let asks = suspect.iter().map(|(i, only)| TableAsk { only: only.clone(), ..tables[*i].ask() }).collect();
        let answer = exchange.call(Step::Rows, asks)?;
        let by_name: HashMap<&str, &TableAnswer> = answer.tables.iter().map(|a| (a.name.as_str(), a)).collect();
        for (i, only) in &suspect {
            let checked = &mut tables[*i];
            let theirs = by_name
                .get(checked.table.name.as_str())
                .ok_or_else(|| RemoteError::Protocol(format!("the verify answer lacks table {}", checked.table.name)))?;
            skip_pending(checked, theirs);
            skip_written_since(conn, &state, checked)?;
            let only: HashSet<u32> = only.iter().copied().collect();
            let ours = local_digests(conn, checked, &only)?;
            let server: HashMap<String, (Vec<Value>, String)> = theirs
                .digests
                .iter()
                .filter(|(key, _)| !checked.skipped.contains(&key_text(key)))
                .map(|(key, hash)| (key_text(key), (key.clone(), hash.clone())))
                .collect();
            compare_rows(&server, &ours, &mut checked.report);
        }
    }

    let mut report = VerifyReport { scope: scope.to_string(), ..VerifyReport::default() };
    if options.repair && tables.iter().any(|c| c.report.differs()) {
        let applied = repair(conn, &state, &mut exchange, &tables)?;
        report.repaired = Some(applied.applied);
        report.kept_local = applied.skipped.len() as u64;
    }
    report.equal = tables.iter().all(|c| !c.report.differs());
    report.rows_checked = tables.iter().map(|c| c.report.rows_checked).sum();
    report.tables = tables.into_iter().map(|c| c.report).collect();
    report.bytes_moved = exchange.bytes;
    report.took_ms = started.elapsed().as_millis() as u64;
    let text = crate::error::to_json(&report)?;
    conn.execute(sql::SET_LAST_VERIFY, named_params! {":scope": scope, ":report": text})?;
    Ok(report)
}

/// The file's complete watermark: a file that never finished a pull, or is
/// in the middle of a resync, has nothing settled to verify yet.
fn ready(state: &ScopeState) -> Result<String> {
    let not_yet = || {
        LocalError::Invalid(format!(
            "scope \"{}\" has not finished a pull in this file (or a resync is under way): sync it, then verify",
            state.scope
        ))
    };
    let watermark = state.watermark.clone().ok_or_else(not_yet)?;
    match Watermark::parse(&watermark)? {
        Watermark::Complete(_) if !state.resync => Ok(watermark),
        _ => Err(not_yet()),
    }
}

/// Keys with an unsent local change, as JSON keys.
fn local_pending(conn: &Connection, state: &ScopeState, t: usize) -> Result<Vec<Vec<Value>>> {
    let texts = rows::pending(conn, &state.schema.tables[t], state.tables[t].id, state.tables[t].acked_seq)?;
    texts.iter().map(|text| serde_json::from_str(text).map_err(|e| LocalError::Invalid(format!("a logged key {text}: {e}")))).collect()
}

impl Checked<'_> {
    fn ask(&self) -> TableAsk {
        TableAsk { name: self.table.name.clone(), exclude: self.local_pending.clone(), buckets: Some(self.buckets), ..TableAsk::default() }
    }
}

/// The server's answers in the order of `tables`, each table once.
fn matched<'a>(tables: &[Checked<'_>], answer: &'a VerifyAnswer) -> Result<Vec<&'a TableAnswer>> {
    tables
        .iter()
        .map(|c| {
            answer.tables.iter().find(|a| a.name == c.table.name && a.buckets == c.buckets).ok_or_else(|| {
                RemoteError::Protocol(format!("the verify answer lacks table {} in {} buckets", c.table.name, c.buckets)).into()
            })
        })
        .collect()
}

/// Leaves out the keys the server changed since the watermark.
fn skip_pending(checked: &mut Checked<'_>, answer: &TableAnswer) {
    checked.skipped.extend(answer.pending.iter().map(|k| key_text(k)));
    checked.report.pending = checked.skipped.len() as u64;
}

/// Leaves out the keys the file's programs changed since the check began
/// too (only a sync, which the lock keeps out, would send them): the
/// server's side holds them as they were.
fn skip_written_since(conn: &Connection, state: &ScopeState, checked: &mut Checked<'_>) -> Result<()> {
    let written = rows::pending(conn, checked.table, state.tables[checked.t].id, state.tables[checked.t].acked_seq)?;
    checked.skipped.extend(written);
    checked.report.pending = checked.skipped.len() as u64;
    Ok(())
}

/// Reads every row of a table as the server would hash it; `each` gets
/// the key and the row's digest of each row not skipped.
fn each_row(conn: &Connection, checked: &Checked<'_>, mut each: impl FnMut(Vec<Value>, RowDigest)) -> Result<()> {
    let table = checked.table;
    let keys = table.key_indexes();
    let mut statement = conn.prepare(&local::all_rows(table))?;
    let mut rows = statement.query([])?;
    while let Some(row) = rows.next()? {
        let stored = (0..table.columns.len()).map(|i| Ok(from_sql(row.get_ref(i)?))).collect::<rusqlite::Result<Vec<_>>>()?;
        // A value the file should not hold (a blob in a text column) is
        // never a value of the server's: it differs.
        let values: Vec<Value> = table
            .columns
            .iter()
            .zip(&stored)
            .map(|(column, value)| local_to_json(column.ty, value).unwrap_or_else(|reason| json!({ "invalid": reason })))
            .collect();
        let key: Vec<Value> = keys.iter().map(|&k| describe_local(table.columns[k].ty, &stored[k])).collect();
        if checked.skipped.contains(&key_text(&key)) {
            continue;
        }
        let digest = RowDigest::of(table, &values);
        each(key, digest);
    }
    Ok(())
}

fn local_buckets(conn: &Connection, checked: &Checked<'_>) -> Result<Buckets> {
    let mut buckets = Buckets::new(checked.buckets);
    each_row(conn, checked, |_, digest| buckets.add(&digest))?;
    Ok(buckets)
}

fn local_digests(conn: &Connection, checked: &Checked<'_>, only: &HashSet<u32>) -> Result<HashMap<String, (Vec<Value>, String)>> {
    let mut out = HashMap::new();
    each_row(conn, checked, |key, digest| {
        if only.contains(&digest.bucket(checked.buckets)) {
            out.insert(key_text(&key), (key, digest.row_hex()));
        }
    })?;
    Ok(out)
}

/// Pulls the rows that are missing or different, as of the watermark, and
/// removes the rows the server does not hold, in one transaction of the
/// file's apply (which keeps every row with an unsent change).
fn repair(conn: &Connection, state: &ScopeState, exchange: &mut Exchange<'_>, tables: &[Checked<'_>]) -> Result<apply::Applied> {
    let asks: Vec<TableAsk> = tables
        .iter()
        .filter(|c| !c.report.missing.is_empty() || !c.report.different.is_empty())
        .map(|c| TableAsk { keys: keys_of(c.report.missing.iter().chain(&c.report.different)), ..c.ask() })
        .collect();
    let mut changeset = if asks.is_empty() { None } else { exchange.call(Step::Fetch, asks)?.changeset }.unwrap_or_else(|| Changeset {
        format: FORMAT,
        scope: state.scope.clone(),
        origin: String::new(),
        tables: Vec::new(),
        watermark: None,
        has_more: false,
    });
    // A fetched changeset never moves the watermark.
    changeset.watermark = None;
    changeset.has_more = false;
    for checked in tables.iter().filter(|c| !c.report.extra.is_empty()) {
        let rows = keys_of(checked.report.extra.iter())
            .into_iter()
            .map(|key| RowChange {
                op: Op::Delete,
                version: None,
                base: None,
                seq: None,
                values: None,
                key: Some(key),
                moved_from: None,
                respelled: None,
            })
            .collect();
        changeset.tables.push(TableChanges { name: checked.table.name.clone(), columns: checked.table.column_names(), rows });
    }
    apply::apply(conn, state, &crate::error::to_json(&changeset)?)
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn keys_of<'a>(keys: impl Iterator<Item = &'a Value>) -> Vec<Vec<Value>> {
    keys.filter_map(|k| k.as_array().cloned()).collect()
}

/// One call of the server's `sync_verify` after another, counting bytes.
struct Exchange<'r> {
    remote: &'r mut dyn Remote,
    scope: &'r str,
    token: Option<&'r str>,
    /// Without a token: the file's client id and parameters.
    owner: Option<(String, Option<tandem_core::options::Params>)>,
    since: &'r str,
    bytes: u64,
}

impl Exchange<'_> {
    fn call(&mut self, step: Step, tables: Vec<TableAsk>) -> Result<VerifyAnswer> {
        let options = VerifyOptions {
            token: self.token.map(str::to_string),
            client_id: self.owner.as_ref().map(|(id, _)| id.clone()),
            params: self.owner.as_ref().and_then(|(_, params)| params.clone()),
            since: Some(self.since.to_string()),
            step,
            tables,
        };
        self.bytes += serde_json::to_string(&options).map(|s| s.len() as u64).unwrap_or(0);
        let text = self.remote.verify(self.scope, &options)?;
        self.bytes += text.len() as u64;
        let answer: VerifyAnswer =
            serde_json::from_str(&text).map_err(|e| RemoteError::Protocol(format!("unreadable verify answer: {e}")))?;
        if answer.step != step {
            return Err(RemoteError::Protocol(format!("asked for the {step:?} step, the server answered another")).into());
        }
        Ok(answer)
    }
}
