//! Uploading local changes (half updates, half inserts), against a plain
//! set-based INSERT ... ON CONFLICT DO UPDATE of the same rows from a
//! temporary table into an untracked copy. The updated rows are spread
//! evenly over the table, as a user's edits would be, so a cost that
//! grows with the table rather than with the upload shows.
//!
//! Beside them, the floor any apply stands on: the same statement on a
//! tracked copy, plus the fold of its change log into tracking that the
//! next sync call makes. No upload can be faster than its rows' tracked
//! write, so this says how much of the gap to the baseline is tracking.

use std::path::Path;
use std::time::Duration;

use tandem_core::apply_result::ApplyResult;
use tandem_core::options::{ApplyOptions, SelectOptions};
use tandem_core::schema::Schema;
use tandem_local::{PostgresRemote, Remote, RemoteError, Store, SyncOptions};

use super::{per_second, timed, Scratch};
use crate::error::CliError;

pub struct Upload {
    pub rows_per_s: f64,
    pub baseline_rows_per_s: f64,
    /// The baseline's statement on a tracked table, with the fold.
    pub tracked_rows_per_s: f64,
    /// The upload's rows over the time its `sync_apply_changes` calls took,
    /// as the client saw them (the server's share of the upload).
    pub apply_rows_per_s: f64,
}

/// The direct remote, timing the calls that apply uploads.
struct TimedApply {
    inner: PostgresRemote,
    applying: Duration,
}

impl Remote for TimedApply {
    fn schema(&mut self, scope: &str, token: Option<&str>) -> Result<Schema, RemoteError> {
        self.inner.schema(scope, token)
    }
    fn server_id(&self) -> Option<String> {
        self.inner.server_id()
    }
    fn capabilities(&self) -> tandem_local::remote::Capabilities {
        self.inner.capabilities()
    }
    fn verify(&mut self, scope: &str, options: &tandem_core::verify::VerifyOptions) -> Result<String, RemoteError> {
        self.inner.verify(scope, options)
    }
    fn select_changes(&mut self, scope: &str, since: Option<&str>, options: &SelectOptions) -> Result<String, RemoteError> {
        self.inner.select_changes(scope, since, options)
    }
    fn apply_changes(&mut self, scope: &str, changeset: &str, options: &ApplyOptions) -> Result<ApplyResult, RemoteError> {
        let started = std::time::Instant::now();
        let result = self.inner.apply_changes(scope, changeset, options);
        self.applying += started.elapsed();
        result
    }
}

const UPSERT: &str = "SELECT * FROM upload_rows ON CONFLICT (id) DO UPDATE SET tenant = excluded.tenant, \
                      body = excluded.body, amount = excluded.amount, at = excluded.at";

pub fn run(scratch: &Scratch, file: &Path, rows: u64, changes: u64) -> Result<Upload, CliError> {
    let half = (changes / 2) as i64;
    // Every `step`-th row is updated: `half` rows from the whole table.
    let step = (rows as i64 / half.max(1)).max(1);
    let n = rows as i64;
    // Baseline first, on an untracked copy, with the same rows.
    let mut server = scratch.connect()?;
    server
        .batch_execute(&format!(
            "CREATE TABLE bench_copy (LIKE bench INCLUDING ALL); INSERT INTO bench_copy SELECT * FROM bench; ANALYZE bench_copy;
             CREATE TABLE bench_tracked (LIKE bench INCLUDING ALL); INSERT INTO bench_tracked SELECT * FROM bench; ANALYZE bench_tracked;
             SELECT sync_provision('upload_floor', '{{\"tables\": [{{\"name\": \"bench_tracked\"}}]}}');
             CREATE TEMP TABLE upload_rows AS
               SELECT id, tenant, body || '+' AS body, amount + 1 AS amount, at FROM bench WHERE id % {step} = 0 AND id <= {step} * {half}
               UNION ALL {};",
            super::scratch::rows_sql(&(n + 1).to_string(), &(n + half).to_string())
        ))
        .map_err(|e| CliError::database("baseline tables", &e))?;
    scratch.settle()?;
    let ((), baseline) =
        timed(|| server.batch_execute(&format!("INSERT INTO bench_copy {UPSERT}")).map_err(|e| CliError::database("baseline upsert", &e)))?;
    let ((), tracked) = timed(|| {
        server
            .batch_execute(&format!("INSERT INTO bench_tracked {UPSERT}; SELECT sync_status('upload_floor')"))
            .map_err(|e| CliError::database("tracked upsert", &e))
    })?;
    server
        .batch_execute("SELECT sync_deprovision('upload_floor'); DROP TABLE bench_tracked")
        .map_err(|e| CliError::database("drop the tracked copy", &e))?;

    let store = Store::open(file)?;
    store.connection().execute_batch(&format!(
        "UPDATE bench SET body = body || '+', amount = printf('%.2f', amount + 1) WHERE id % {step} = 0 AND id <= {step} * {half};
         WITH RECURSIVE g(v) AS (SELECT {} UNION ALL SELECT v + 1 FROM g WHERE v < {})
         INSERT INTO bench SELECT v, v % 10, lower(hex(randomblob(16))) || '-row', printf('%.2f', (v % 100000) / 100.0),
                strftime('%Y-%m-%dT%H:%M:%SZ', 1704067200 + v, 'unixepoch') FROM g;",
        n + 1,
        n + half
    ))?;
    scratch.settle()?;
    let mut remote = TimedApply {
        inner: PostgresRemote::connect(&scratch.url, None).map_err(tandem_local::LocalError::from)?,
        applying: Duration::ZERO,
    };
    let (report, took) = timed(|| Ok(store.sync_with(&mut remote, "bench", &SyncOptions::default())?))?;
    if report.pushed != changes || !report.conflicts.is_empty() {
        return Err(CliError::Invalid(format!(
            "the upload pushed {} of {changes} changes ({} conflicts)",
            report.pushed,
            report.conflicts.len()
        )));
    }
    Ok(Upload {
        rows_per_s: per_second(changes, took),
        baseline_rows_per_s: per_second(changes, baseline),
        tracked_rows_per_s: per_second(changes, tracked),
        apply_rows_per_s: per_second(changes, remote.applying),
    })
}
