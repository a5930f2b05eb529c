//! `sync_run`: one full round with the server. Provision from the server's
//! schema when the scope is new (or its schema changed), push local changes
//! in batches and record each answer, then pull server changes in batches,
//! each stored with its watermark in one transaction. Stopping anywhere (a
//! crash, a dropped connection) and running again converges: nothing is
//! lost and nothing applied twice.

use std::collections::HashSet;
use std::time::Instant;

use rusqlite::Connection;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tandem_core::apply_result::ConflictReport;
use tandem_core::changeset::Changeset;
use tandem_core::identity::token_client_id;
use tandem_core::options::{check_params, ApplyOptions, NotTaken, Params, Seen, SelectOptions, DEFAULT_MAX_BYTES, DEFAULT_MAX_ROWS};
use tandem_core::schema::Schema;
use tandem_core::watermark::Watermark;
use tandem_core::Rejection;

use crate::apply;
use crate::changes;
use crate::error::{LocalError, RemoteError, Result};
use crate::meta::{self, ScopeState};
use crate::provision;
use crate::record;
use crate::remote::{Capabilities, Remote};
use crate::resync;

/// The longest `watch` (a year): past it a deadline means nothing.
pub const MAX_WATCH_SECONDS: f64 = 365.0 * 24.0 * 3600.0;

/// Options of `sync_run` (unknown keys are an error).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncOptions {
    /// Filter parameters, bound to this file on its first sync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<Params>,
    /// Rows per batch, both ways.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rows: Option<u64>,
    /// Bytes of changeset after which a batch ends, both ways (default
    /// 64 MB; a batch holds at least one row).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
    /// A token from the server's `sync_register_client`: this file syncs as
    /// that client, with its parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// A PEM file of the root certificate the server's must chain to (as
    /// `sslrootcert` in the URL; this one wins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<String>,
    /// Sync under a new identity: with another server than the file synced
    /// the scope with (a moved database), or as the client of a new token
    /// (after its old client was revoked). The file then pulls the scope
    /// again under a new replica id, and sends its unsent changes. Without
    /// it, either is refused.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rebind: bool,
    /// Download the scope afresh, keeping the file's unsent changes (sent
    /// as usual) and dropping the rows the server no longer holds for it:
    /// for a copy that drifted or that nobody trusts any more. Only the
    /// first round of a watch does it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reinit: bool,
    /// Keep the file live for this many seconds: round after round, each
    /// one as soon as the server says the scope saw a commit or the file
    /// has unsent changes; the report sums them (see `crate::watch`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watch: Option<f64>,
}

impl SyncOptions {
    pub fn parse(value: Option<&Value>) -> Result<Self> {
        let options: SyncOptions = match value {
            None | Some(Value::Null) => SyncOptions::default(),
            Some(v) => serde_json::from_value(v.clone()).map_err(|e| tandem_core::Error::InvalidOptions(e.to_string()))?,
        };
        options.check()?;
        Ok(options)
    }

    /// Refuses options no round could honour, before anything is done:
    /// a round checks them whichever way they came (SQL, CLI, Rust).
    pub fn check(&self) -> Result<()> {
        if let Some(params) = &self.params {
            check_params(params)?;
            if self.token.is_some() {
                return Err(tandem_core::Error::InvalidOptions(
                    "\"params\" and \"token\" together: a token's parameters are those it was registered with; pass one or the other"
                        .into(),
                )
                .into());
            }
        }
        if self.max_rows == Some(0) {
            return Err(tandem_core::Error::InvalidOptions("max_rows must be at least 1".into()).into());
        }
        tandem_core::options::check_max_bytes(self.max_bytes)?;
        if let Some(seconds) = self.watch {
            if !(seconds.is_finite() && seconds > 0.0 && seconds <= MAX_WATCH_SECONDS) {
                return Err(tandem_core::Error::InvalidOptions(format!(
                    "watch is {seconds}: pass the seconds to keep the file live, more than 0 and at most {MAX_WATCH_SECONDS}"
                ))
                .into());
            }
        }
        Ok(())
    }
}

/// What a round did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SyncReport {
    pub scope: String,
    pub client_id: String,
    /// The file's tables were created or changed from the server's schema.
    pub provisioned: bool,
    pub schema_version: i64,
    /// Local changes the server wrote as sent.
    pub pushed: u64,
    pub conflicts: Vec<ConflictReport>,
    /// Local changes the server refused, now in `tandem_rejected`.
    pub rejected: Vec<Rejection>,
    /// Server changes written locally.
    pub pulled: u64,
    /// Server changes not written because the row has an unsent change.
    pub kept_local: u64,
    /// Server rows the file's own constraints refuse (a unique index, a
    /// CHECK or a trigger the server does not have), kept aside in
    /// `tandem_rejected` (kind `not_stored`) after this round and tried
    /// again each round.
    pub not_stored: u64,
    /// The file pulled again from NULL: its watermark was older than the
    /// server's last cleanup (see `crate::resync`).
    pub resynced: bool,
    /// Rows a completed resync removed: the server no longer has them.
    pub removed: u64,
    pub watermark: Option<String>,
    pub took_ms: u64,
    /// With `watch`: how many rounds ran (the other counts are their sums).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rounds: Option<u64>,
}

impl SyncReport {
    /// Adds a later round of a watch: counts add up, the position and
    /// identity are the later round's.
    pub fn add(&mut self, round: SyncReport) {
        self.client_id = round.client_id;
        self.provisioned |= round.provisioned;
        self.schema_version = round.schema_version;
        self.pushed += round.pushed;
        self.conflicts.extend(round.conflicts);
        self.rejected.extend(round.rejected);
        self.pulled += round.pulled;
        self.kept_local += round.kept_local;
        self.not_stored = round.not_stored;
        self.resynced |= round.resynced;
        self.removed += round.removed;
        if round.watermark.is_some() {
            self.watermark = round.watermark;
        }
        self.rounds = Some(self.rounds.unwrap_or(0) + 1);
    }
}

/// Pulls from `since` until the server has nothing more. The next batch is
/// fetched while this one is stored (the server's work and the file's
/// overlap); at most one batch waits in between, so memory stays bounded.
fn pull(
    conn: &Connection,
    remote: &mut dyn Remote,
    scope: &str,
    since: Option<String>,
    options: &SelectOptions,
    report: &mut SyncReport,
    observe: &mut dyn FnMut(Step),
) -> Result<()> {
    let (sender, receiver) = std::sync::mpsc::sync_channel::<std::result::Result<String, RemoteError>>(1);
    std::thread::scope(|threads| {
        threads.spawn(move || {
            let mut since = since;
            loop {
                let batch = remote.select_changes(scope, since.as_deref(), options);
                let next = match &batch {
                    // From the batch's end: the rows are read once, when stored.
                    Ok(text) => tandem_core::changeset::position(text).ok(),
                    Err(_) => None,
                };
                if sender.send(batch).is_err() {
                    return;
                }
                match next {
                    Some(tandem_core::changeset::Position { watermark, has_more: true }) => since = watermark,
                    _ => return,
                }
            }
        });
        for batch in receiver {
            let state = meta::require(conn, scope)?;
            let applied = apply::apply(conn, &state, &batch?)?;
            let has_more = applied.has_more;
            observe(Step::Pulled(applied.applied));
            report.pulled += applied.applied;
            report.kept_local += applied.skipped.len() as u64;
            report.watermark = applied.watermark;
            if !has_more {
                break;
            }
        }
        Ok(())
    })
}

/// Most upload batches one round sends (refused batches, set aside and
/// retried, count too); changes beyond wait for the next round.
const PUSH_ROUNDS: usize = 1000;

/// Progress of a round, for showing long work as it happens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// The round's upload has this many local changes ahead (before it
    /// starts): the total the `Pushed` steps count towards.
    ToPush(u64),
    /// A batch of local changes was answered by the server (rows in it).
    Pushed(u64),
    /// A batch of server changes was stored (rows in it).
    Pulled(u64),
}

/// The upload half of a round.
struct Push<'a> {
    scope: &'a str,
    options: &'a SyncOptions,
    params_sent: Option<Params>,
    max_rows: u64,
}

impl Push<'_> {
    /// Uploads the file's changes in batches, recording each answer; with
    /// `within`, only the columns and tables that schema still has. Returns
    /// the error of an upload the server failed (refused rows are set aside
    /// instead); an unreachable server is an error.
    fn run(
        &self,
        conn: &Connection,
        remote: &mut dyn Remote,
        within: Option<&Schema>,
        report: &mut SyncReport,
        observe: &mut dyn FnMut(Step),
    ) -> Result<Option<RemoteError>> {
        // The batch whose answer was lost goes first, exactly as it went.
        let continuing = match self.resend(conn, remote, report, observe)? {
            Resent::Answered | Resent::Nothing => None,
            Resent::CannotGo(upload_id) => Some(upload_id),
            Resent::Failed(unreachable @ RemoteError::Unreachable { .. }) => return Err(unreachable.into()),
            // Nothing newer goes before it.
            Resent::Failed(error) => return Ok(Some(error)),
        };
        let mut snapshots = changes::PendingSnapshots::new(conn);
        // Halved while the server refuses batches as too large.
        let mut max_rows = self.max_rows;
        let mut halved = false;
        // Keys left by changes sent ahead this upload (see
        // `changes::vacating`), and the logs' tops when the logs last had
        // none to send: the round's other batches make none, so the logs
        // are read for them again only once a write of the program's
        // added an entry.
        let mut vacated = HashSet::new();
        let mut none_ahead_at: Option<Vec<i64>> = None;
        for _ in 0..PUSH_ROUNDS {
            let mut state = meta::require(conn, self.scope)?;
            // Rows the lost upload carried may be on the server although the
            // file holds no version of them.
            let answer_lost = continuing.is_some();
            if let Some(schema) = within {
                state = state.narrowed_to(schema);
            }
            let max_bytes = self.options.max_bytes.unwrap_or(DEFAULT_MAX_BYTES) as usize;
            let room = changes::Room { max_rows, max_bytes, pairs: !halved };
            // What left a key another row's key change took goes first,
            // alone.
            let tops = changes::log_tops(conn, &state)?;
            let vacating = match answer_lost || none_ahead_at.as_ref() == Some(&tops) {
                false => changes::vacating(conn, &state, max_rows, &mut vacated)?,
                true => None,
            };
            let ahead = vacating.is_some();
            none_ahead_at = (!ahead).then_some(tops);
            let batch = match vacating {
                Some(batch) => batch,
                None => changes::select(conn, &state, room, answer_lost, Some(&mut snapshots), &vacated)?,
            };
            if batch.is_empty() {
                break;
            }
            if !batch.too_large.is_empty() {
                // Never sent: set aside, as the server would refuse them.
                record::set_aside(conn, &state, &batch.too_large)?;
                snapshots.invalidate();
                report.rejected.extend(batch.too_large);
                continue;
            }
            let in_flight = changes::InFlight::new(&batch)?;
            let upload_id = meta::send(conn, &state, &in_flight, continuing.as_deref())?;
            let apply_options = self.apply_options(&state, upload_id, remote.capabilities());
            let answer = remote.apply_changes(self.scope, in_flight.text(), &apply_options);
            if answer.as_ref().is_err_and(RemoteError::refused_batch) {
                meta::clear_in_flight(conn, self.scope)?;
            }
            match answer {
                Ok(result) => {
                    let recorded = record::upload(conn, &state, &batch, &result)?;
                    report.conflicts.extend(recorded.settled);
                    max_rows = self.max_rows;
                    halved = false;
                    observe(Step::Pushed(batch.changeset.row_count() as u64));
                    report.pushed += result.applied;
                    report.conflicts.extend(result.conflicts);
                }
                // A change sent ahead that the server refuses, or finds too
                // large, goes again with the round's others, as the latest
                // entries say: it is refused there.
                Err(RemoteError::Rejected(_) | RemoteError::TooLarge(_)) if ahead => {}
                Err(RemoteError::Rejected(rejections)) => {
                    record::set_aside(conn, &state, &rejections)?;
                    snapshots.invalidate();
                    report.rejected.extend(rejections);
                }
                // Smaller batches, down to one row; a row the server takes
                // in no request is set aside, so it stalls nothing behind it.
                Err(RemoteError::TooLarge(reason)) => match too_large_row(&state, &batch.changeset, &reason) {
                    Some(rejection) => {
                        record::set_aside(conn, &state, std::slice::from_ref(&rejection))?;
                        snapshots.invalidate();
                        report.rejected.push(rejection);
                    }
                    None => {
                        max_rows = (batch.changeset.row_count() as u64 / 2).max(1);
                        halved = true;
                    }
                },
                Err(unreachable @ RemoteError::Unreachable { .. }) => return Err(unreachable.into()),
                Err(other) => return Ok(Some(other)),
            }
        }
        Ok(None)
    }

    /// What every upload of the round is sent with.
    fn apply_options(&self, state: &ScopeState, upload_id: String, server: Capabilities) -> ApplyOptions {
        // What the file had received: an insert of a key whose row left its
        // partition beyond it meets that exit (a restored backup's insert
        // sent again). A file that never pulled says nothing, nor does one
        // pulling afresh: its watermark no longer says what it held.
        // While deletes the file did not take wait, they are named
        // (`seen.kept`); a server that takes no names hears no more than
        // the watermark before them, for every key.
        let held_whole = !server.seen_kept || (state.seen_until.is_some() && state.kept_deletes.is_none());
        let (watermark, mut not_taken) = match held_whole {
            true => (state.seen_until.as_ref().or(state.watermark.as_ref()), NotTaken::default()),
            false => (state.watermark.as_ref(), state.kept_deletes.clone().unwrap_or_default()),
        };
        if !server.kept_versions {
            // It counts any exit of a kept key, as before.
            not_taken.kept.iter_mut().for_each(|k| k.version = None);
        }
        let seen = watermark.filter(|_| server.seen && !state.resync).map(|watermark| Seen {
            watermark: watermark.clone(),
            echoes: state.echoes.clone(),
            kept: not_taken.kept,
            unmatched: not_taken.unmatched,
        });
        ApplyOptions {
            respellings: server.respellings.then_some(true),
            seen,
            client_id: Some(state.client_id.clone()),
            token: self.options.token.clone(),
            params: self.params_sent.clone(),
            policy: None,
            replica: Some(state.replica_id.clone()),
            upload_id: Some(upload_id),
        }
    }

    /// Sends the batch whose answer was lost again, as it was and under
    /// the same id, and records the answer: the server answers for what
    /// its first attempt wrote, if that attempt committed.
    fn resend(&self, conn: &Connection, remote: &mut dyn Remote, report: &mut SyncReport, observe: &mut dyn FnMut(Step)) -> Result<Resent> {
        let Some((upload_id, in_flight)) = meta::in_flight(conn, self.scope)? else { return Ok(Resent::Nothing) };
        let state = meta::require(conn, self.scope)?;
        let Some((in_flight, batch)) = in_flight.and_then(|kept| kept.batch(&state).map(|batch| (kept, batch))) else {
            meta::clear_in_flight(conn, self.scope)?;
            return Ok(Resent::CannotGo(upload_id));
        };
        match remote.apply_changes(self.scope, in_flight.text(), &self.apply_options(&state, upload_id.clone(), remote.capabilities())) {
            Ok(result) => {
                let recorded = record::upload(conn, &state, &batch, &result)?;
                report.conflicts.extend(recorded.settled);
                observe(Step::Pushed(batch.changeset.row_count() as u64));
                report.pushed += result.applied;
                report.conflicts.extend(result.conflicts);
                Ok(Resent::Answered)
            }
            Err(error) if !error.refused_batch() => Ok(Resent::Failed(error)),
            Err(_) => {
                meta::clear_in_flight(conn, self.scope)?;
                Ok(Resent::CannotGo(upload_id))
            }
        }
    }
}

/// What became of the batch in flight, sent again at the start of an upload.
enum Resent {
    /// Its answer is recorded.
    Answered,
    /// There was none.
    Nothing,
    /// It cannot go again as it was: the server refuses it now (a schema
    /// that moved, say), the file's schema no longer fits it, or an
    /// earlier Tandem kept only its id. The server may have applied it all
    /// the same, so this round's batches go under its id: the server takes
    /// the rows that attempt wrote for the file's own (design.md, Retries),
    /// and the file's changes go up as it holds them.
    CannotGo(String),
    /// The server could not answer this time: it stays in flight, and
    /// nothing newer goes before it.
    Failed(RemoteError),
}

/// The refusal of the one row of `changeset` the server found too large to
/// take, or `None` when it holds more than one (they go in smaller
/// batches first).
fn too_large_row(state: &ScopeState, changeset: &Changeset, reason: &str) -> Option<Rejection> {
    if changeset.row_count() != 1 {
        return None;
    }
    let table = changeset.tables.iter().find(|t| !t.rows.is_empty())?;
    let row = table.rows.first()?;
    let schema = state.schema.tables.iter().find(|t| t.name == table.name)?;
    let key = match (&row.key, &row.values) {
        (Some(key), _) => key.clone(),
        (None, Some(values)) => schema
            .primary_key
            .iter()
            .map(|k| table.columns.iter().position(|c| c == k).and_then(|i| values.get(i).cloned()))
            .collect::<Option<Vec<_>>>()?,
        (None, None) => return None,
    };
    Some(Rejection {
        table: table.name.clone(),
        key,
        seq: row.seq,
        kind: tandem_core::RejectionKind::InvalidValue,
        reason: format!(
            "the row is larger than the server takes in one request ({reason}); make it smaller, or raise the gateway's --max-body-bytes"
        ),
        row: None,
        version: None,
        moved_from: None,
    })
}

/// Refuses a server other than the one the file synced the scope with (its
/// watermark and versions mean nothing there), unless `rebind`, or unless
/// it is that server restored into another cluster (`moved_from` names the
/// file's): then the file starts a resync with it. Returns whether it
/// switched. A file that never learned its server's id adopts this one.
fn check_server(conn: &Connection, state: &ScopeState, found: Option<String>, moved_from: &[String], rebind: bool) -> Result<bool> {
    let Some(found) = found else { return Ok(false) };
    match meta::server_id(conn, &state.scope)? {
        Some(known) if known == found => Ok(false),
        Some(known) if !rebind && !moved_from.contains(&known) => Err(LocalError::OtherServer { scope: state.scope.clone(), known, found }),
        Some(_) => {
            resync::begin(conn, state)?;
            meta::set_server_id(conn, &state.scope, &found)?;
            Ok(true)
        }
        None => {
            meta::set_server_id(conn, &state.scope, &found)?;
            Ok(false)
        }
    }
}

pub fn run(conn: &Connection, remote: &mut dyn Remote, scope: &str, options: &SyncOptions) -> Result<SyncReport> {
    run_observed(conn, remote, scope, options, &mut |_| {})
}

/// [`run`], telling `observe` after each batch.
pub fn run_observed(
    conn: &Connection,
    remote: &mut dyn Remote,
    scope: &str,
    options: &SyncOptions,
    observe: &mut dyn FnMut(Step),
) -> Result<SyncReport> {
    // What the server takes it cannot give back: a write the program
    // rolled back after a round had sent it would reach every device.
    if !conn.is_autocommit() {
        return Err(LocalError::InTransaction);
    }
    crate::tx::refuse_unsafe_connection(conn)?;
    // A schema that changed under a round starts it again, with the new
    // schema (what the first attempt stored stays: each batch is atomic).
    let mut attempts = 0;
    let mut options = options.clone();
    loop {
        match round(conn, remote, scope, &options, observe) {
            Err(error) if error.is_schema_race() && attempts < SCHEMA_RACE_RETRIES => {
                // A reinit began in the first attempt goes on by itself.
                options.reinit = false;
                attempts += 1;
            }
            done => return done,
        }
    }
}

/// Rounds started again because the server's schema changed under them.
const SCHEMA_RACE_RETRIES: usize = 3;

/// One round: the schema, the upload (the one made under an older schema
/// first), the pull.
fn round(
    conn: &Connection,
    remote: &mut dyn Remote,
    scope: &str,
    options: &SyncOptions,
    observe: &mut dyn FnMut(Step),
) -> Result<SyncReport> {
    options.check()?;
    let started = Instant::now();
    let _lock = crate::lock::SyncLock::acquire(conn)?;
    let mut report = SyncReport { scope: scope.to_string(), ..SyncReport::default() };
    meta::ensure(conn)?;

    let server_schema = remote.schema(scope, options.token.as_deref())?;
    let local = meta::load(conn, scope)?;
    let schema_changed = local.as_ref().is_some_and(|s| *s.schema != server_schema);
    if local.is_none() {
        provision::provision(conn, scope, &server_schema)?;
        report.provisioned = true;
    }
    let mut state = meta::require(conn, scope)?;
    provision::refresh_replace_guards(conn, &state)?;
    provision::flush_replaced(conn, &state)?;
    crate::keyless::settle(conn, &state)?;
    if crate::log_reset::mend(conn, &state)? > 0 {
        state = meta::require(conn, scope)?;
    }
    let mut rebound = check_server(conn, &state, remote.server_id(), &remote.moved_from(), options.rebind)?;
    if let Some(token) = &options.token {
        let id = token_client_id(token)
            .ok_or_else(|| LocalError::Invalid("the token is not one sync_register_client issued (tdm_<client>_<secret>)".into()))?;
        if id != state.client_id {
            let synced = state.watermark.is_some() || state.tables.iter().any(|t| t.acked_seq > 0);
            if synced && !options.rebind {
                return Err(LocalError::Invalid(format!(
                    "this file syncs scope \"{scope}\" as client {}; the token is for client {id}: use another file, or pass \
                     --rebind (option \"rebind\") to sync this file as the new client (its old one, if still registered, keeps its rights until revoked): it pulls \
                     the scope again and sends its unsent changes",
                    state.client_id
                )));
            }
            if synced && !rebound {
                resync::begin(conn, &state)?;
                rebound = true;
            }
            meta::set_client_id(conn, scope, id)?;
        }
    }
    if rebound {
        meta::new_replica(conn, scope)?;
        report.resynced = true;
    }
    // A reinit resyncs once the file's unsent changes went up, under the
    // watermark that says what it had received (see `apply_options`).
    let reinit = !rebound && options.reinit && local.is_some();
    state = meta::require(conn, scope)?;
    report.client_id = state.client_id.clone();
    report.schema_version = state.schema.version;
    let newly_bound = options.params.is_some() && state.params.is_none();
    let params = match (&options.params, &state.params) {
        (Some(given), Some(bound)) if given != bound => {
            return Err(LocalError::Invalid(format!(
                "this file syncs scope \"{scope}\" with parameters {}; it cannot switch to {}: use another file",
                Value::Object(bound.clone().into_iter().collect()),
                Value::Object(given.clone().into_iter().collect()),
            )))
        }
        (Some(given), None) => {
            meta::set_params(conn, scope, Some(given))?;
            given.clone()
        }
        (_, Some(bound)) => bound.clone(),
        (None, None) => Params::new(),
    };
    let changed_to = schema_changed.then_some(&server_schema);
    let exchanged = exchange(conn, remote, scope, options, &params, changed_to, reinit, &mut report, observe);
    if let Err(error) = exchanged {
        // A first round the server failed before anything moved leaves the
        // file unbound, so the next one may pass other parameters (the
        // server may have refused these).
        let unmoved = report.pulled == 0 && report.pushed == 0 && meta::require(conn, scope)?.watermark.is_none();
        if newly_bound && unmoved {
            meta::set_params(conn, scope, None)?;
        }
        return Err(error);
    }
    report.took_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

/// The echoes a pull leaves out: none while the file pulls afresh, which
/// takes its own rows back too (the sweep crosses them off); the file may
/// keep them meanwhile for its uploads (see `resync::begin`).
fn pulled_echoes(state: &ScopeState) -> Vec<String> {
    match state.resync {
        true => Vec::new(),
        false => state.echoes.clone(),
    }
}

/// Begins a pull from NULL. After an upload that failed, the changes
/// that wait did not go up before it: a pull from NULL brings no deletes
/// to name, and its watermark covers every delete since the file's, so
/// uploads say the file's watermark from before it, for every key, until
/// one goes through (helper 72: a `--reinit` whose upload failed brought
/// a deleted row back).
fn resync_after(conn: &Connection, scope: &str, push_failed: bool) -> Result<()> {
    let state = meta::require(conn, scope)?;
    if let (true, Some(watermark)) = (push_failed, &state.watermark) {
        meta::hold_seen(conn, scope, watermark, None)?;
    }
    resync::begin(conn, &state)
}

/// The exchange of a round, once the file is provisioned and bound: the
/// upload made under an older schema (`changed_to`, the new one), then the
/// upload, the resync a `reinit` asks for, and the pull.
#[allow(clippy::too_many_arguments)]
fn exchange(
    conn: &Connection,
    remote: &mut dyn Remote,
    scope: &str,
    options: &SyncOptions,
    params: &Params,
    changed_to: Option<&Schema>,
    reinit: bool,
    report: &mut SyncReport,
    observe: &mut dyn FnMut(Step),
) -> Result<()> {
    let max_rows = options.max_rows.unwrap_or(DEFAULT_MAX_ROWS);
    // With a token the server takes the parameters from the registration.
    let params_sent = if options.token.is_some() { None } else { Some(params.clone()) };
    let push = Push { scope, options, params_sent: params_sent.clone(), max_rows };

    if let Some(server_schema) = changed_to {
        // Changes made under the old schema go up first, with the columns
        // the file had then (those the server still has): a column the
        // scope gained holds nothing yet in the file, and must not be
        // written over on the server. Its values come with the pull.
        // Tables renamed on the server are renamed here first: the same
        // tables, their changes sent under their new names.
        provision::follow_renames(conn, scope, server_schema)?;
        // What it cannot take is kept first (a table that left is
        // untracked once the new schema is taken).
        let kept = crate::unfollowed::keep(conn, &meta::require(conn, scope)?, server_schema)?;
        report.rejected.extend(kept);
        let sent = push.run(conn, remote, Some(server_schema), report, observe)?;
        if let Some(error) = sent {
            return Err(LocalError::OldSchemaUploadFailed(error));
        }
        let before = meta::require(conn, scope)?.schema;
        provision::provision(conn, scope, server_schema)?;
        report.provisioned = true;
        report.schema_version = server_schema.version;
        // Tables whose partition changed come again whole: what does not
        // come is no longer the file's.
        let refiltered: Vec<usize> = server_schema
            .tables
            .iter()
            .enumerate()
            .filter(|(_, table)| {
                table.refiltered.is_some() && before.tables.iter().any(|was| was.name == table.name && was.refiltered != table.refiltered)
            })
            .map(|(t, _)| t)
            .collect();
        if !refiltered.is_empty() {
            resync::begin_tables(conn, &meta::require(conn, scope)?, &refiltered)?;
        }
    }

    // An upload the server fails (not a refused row: those are set aside)
    // does not hold back the pull: it is reported once the pull is done.
    observe(Step::ToPush(crate::status::pending(conn, &meta::require(conn, scope)?)?));
    let push_failed = push.run(conn, remote, None, report, observe)?;
    if push_failed.is_none() {
        meta::release_seen(conn, scope)?;
    }
    // The id is kept only once the batch is read: a file that holds it
    // (the same file after a lost answer, or a backup of it) holds what
    // was sent under it.
    if reinit {
        resync_after(conn, scope, push_failed.is_some())?;
        report.resynced = true;
    }

    // Pull. A pull interrupted earlier resumes where it stopped; it then ends
    // at the snapshot it began with, so one more pass brings in what came
    // since.
    let state = meta::require(conn, scope)?;
    let mut select_options = SelectOptions {
        client_id: Some(state.client_id.clone()),
        token: options.token.clone(),
        params: params_sent,
        max_rows: Some(max_rows),
        max_bytes: options.max_bytes,
        replica: Some(state.replica_id.clone()),
        echoes: Some(pulled_echoes(&state)),
        schema_version: Some(state.schema.version),
        respellings: remote.capabilities().respellings.then_some(true),
    };
    let resuming = matches!(state.watermark.as_deref().map(Watermark::parse), Some(Ok(Watermark::Partial { .. })));
    for _pass in 0..if resuming { 2 } else { 1 } {
        let since = meta::require(conn, scope)?.watermark;
        match pull(conn, remote, scope, since, &select_options, report, observe) {
            Err(LocalError::Remote(RemoteError::WatermarkTooOld(_))) => {
                // The deletes this file missed are purged: it starts over
                // from NULL, keeping its unsent changes.
                resync_after(conn, scope, push_failed.is_some())?;
                report.resynced = true;
                select_options.echoes = Some(pulled_echoes(&meta::require(conn, scope)?));
                pull(conn, remote, scope, None, &select_options, report, observe)?;
            }
            other => other?,
        }
    }
    let state = meta::require(conn, scope)?;
    if state.resync && matches!(state.watermark.as_deref().map(Watermark::parse), Some(Ok(Watermark::Complete(_)))) {
        report.removed = resync::finish(conn, &state)?;
    }
    // Server rows the file refused earlier: one may fit now.
    let retried = crate::not_stored::retry(conn, &meta::require(conn, scope)?)?;
    report.pulled += retried.taken;
    report.not_stored = retried.still;
    if let Some(error) = push_failed {
        return Err(LocalError::UploadFailed { pulled: report.pulled, error });
    }
    Ok(())
}
