//! Many devices kept live by one gateway (`--watchers N`): N files, each
//! its own tenant's partition, watching through a `tandem serve` child
//! process (so its memory is its own to measure); then a burst of commits,
//! one per tenant, and the time until every file holds its tenant's commit
//! and nothing else.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};
use serde_json::json;
use tandem_local::{Store, SyncOptions};

use super::gateway::{register_with, GatewayRole};
use super::gateway_process::GatewayProcess;
use super::{step, Scratch};
use crate::error::CliError;

/// Rows in each watcher's partition.
const ROWS_EACH: i64 = 10;

/// How long the watchers may take to make their files, and then to take
/// in the burst, before the case reports them as not converged.
const PATIENCE: Duration = Duration::from_secs(300);

pub struct Figures {
    pub watchers: u64,
    /// From the first watcher's start until every file held its partition.
    pub live_s: f64,
    /// From the burst's last commit until every file held its commit.
    pub converge_s: f64,
    /// Every file ended with exactly its partition.
    pub converged: bool,
    /// The gateway's PostgreSQL sessions while every device waited: the
    /// one `LISTEN` session, and all of them (the pool's included).
    pub listen_sessions: i64,
    pub gateway_sessions: i64,
    /// The gateway's resident memory while every device waited, and its
    /// peak over the whole case.
    pub gateway_rss_mb: f64,
    pub gateway_peak_rss_mb: f64,
}

/// The value of the row `id` in `path`'s file, if the file has it.
fn value_in(path: &std::path::Path, id: i64) -> Option<i64> {
    let file = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).ok()?;
    file.query_row("SELECT v FROM watched WHERE id = ?1", [id], |r| r.get(0)).ok()
}

/// Waits until every watcher's file holds `value` in its first row;
/// `false` when `PATIENCE` ran out first.
fn wait_for(paths: &[std::path::PathBuf], value: i64, json: bool, what: &str) -> bool {
    let started = Instant::now();
    let mut waiting: Vec<(usize, &std::path::PathBuf)> = paths.iter().enumerate().collect();
    let mut shown = Instant::now();
    while !waiting.is_empty() {
        waiting.retain(|(tenant, path)| value_in(path, first_row(*tenant)) != Some(value));
        if started.elapsed() > PATIENCE {
            return false;
        }
        if shown.elapsed() > Duration::from_secs(5) {
            step(json, &format!("{what}: {} of {} files", paths.len() - waiting.len(), paths.len()));
            shown = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

fn first_row(tenant: usize) -> i64 {
    tenant as i64 * ROWS_EACH
}

/// Whether `path` holds exactly the tenant's partition, with `value` in
/// its first row.
fn holds_partition(path: &std::path::Path, tenant: usize, value: i64) -> bool {
    let Ok(file) = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY) else { return false };
    let counted =
        file.query_row("SELECT count(*), count(*) FILTER (WHERE tenant = ?1), coalesce(sum(v), 0) FROM watched", [tenant as i64], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
        });
    counted.ok() == Some((ROWS_EACH, ROWS_EACH, value))
}

pub fn run(scratch: &Scratch, watchers: u64, json: bool) -> Result<Figures, CliError> {
    let count = watchers as usize;
    let mut server = scratch.connect()?;
    server
        .batch_execute(&format!(
            "CREATE TABLE watched (id int PRIMARY KEY, tenant int NOT NULL, v int NOT NULL);
             INSERT INTO watched SELECT g, g / {ROWS_EACH}, 0 FROM generate_series(0, {watchers} * {ROWS_EACH} - 1) g;
             SELECT sync_provision('watched', '{{\"tables\": [{{\"name\": \"watched\", \"filter\": {{\"tenant\": \"tenant\"}}}}]}}');"
        ))
        .map_err(|e| CliError::database("the watched table", &e))?;
    let tokens =
        (0..count).map(|tenant| register_with(&mut server, "watched", &json!({ "tenant": tenant }))).collect::<Result<Vec<_>, _>>()?;
    let paths: Vec<_> = (0..count).map(|tenant| scratch.file(&format!("watcher-{tenant}.db"))).collect();

    let role = GatewayRole::create(scratch)?;
    let gateway = GatewayProcess::start(&role.url())?;
    let stop = AtomicBool::new(false);
    let figures = std::thread::scope(|threads| -> Result<Figures, CliError> {
        let started = Instant::now();
        let mut running = Vec::with_capacity(count);
        for (path, token) in paths.iter().zip(&tokens) {
            let (url, stop) = (&gateway.url, &stop);
            let watcher = std::thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn_scoped(threads, move || -> Result<(), CliError> {
                    let store = Store::open(path)?;
                    let options = SyncOptions { token: Some(token.clone()), ..SyncOptions::default() };
                    store.watch(url, "watched", &options, &|| stop.load(Ordering::Relaxed), &mut |_| {})?;
                    Ok(())
                })
                .map_err(|e| CliError::Invalid(format!("cannot start watcher thread: {e}")))?;
            running.push(watcher);
        }
        let measured = (|| -> Result<Figures, CliError> {
            let live = wait_for(&paths, 0, json, "files made");
            let live_s = started.elapsed().as_secs_f64();
            // Every device is now waiting on its event stream.
            std::thread::sleep(Duration::from_secs(1));
            let sessions = server
                .query_one(
                    "SELECT count(*) FILTER (WHERE query ILIKE 'LISTEN%'), count(*) FROM pg_stat_activity WHERE usename = $1",
                    &[&role.name],
                )
                .map_err(|e| CliError::database("the gateway's sessions", &e))?;
            let (gateway_rss_mb, _) = gateway.memory_mb()?;
            step(json, &format!("{count} files live in {live_s:.1} s; a burst of {count} commits, one per tenant"));
            for tenant in 0..count {
                server
                    .execute("UPDATE watched SET v = 1 WHERE id = $1", &[&(first_row(tenant) as i32)])
                    .map_err(|e| CliError::database("a burst commit", &e))?;
            }
            let burst_done = Instant::now();
            let took_in = live && wait_for(&paths, 1, json, "files with the burst");
            let converge_s = burst_done.elapsed().as_secs_f64();
            let (_, gateway_peak_rss_mb) = gateway.memory_mb()?;
            let exact = paths.iter().enumerate().all(|(tenant, path)| holds_partition(path, tenant, 1));
            Ok(Figures {
                watchers,
                live_s,
                converge_s,
                converged: took_in && exact,
                listen_sessions: sessions.get(0),
                gateway_sessions: sessions.get(1),
                gateway_rss_mb,
                gateway_peak_rss_mb,
            })
        })();
        stop.store(true, Ordering::Relaxed);
        for watcher in running {
            watcher.join().map_err(|_| CliError::Invalid("a watcher panicked".into()))??;
        }
        measured
    })?;
    drop(gateway);
    drop(role);
    for path in &paths {
        Store::remove(path);
    }
    Ok(figures)
}
