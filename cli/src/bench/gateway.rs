//! Through the gateway (`tandem serve`, in this process, on loopback in
//! plain HTTP: TLS adds its own cost on top): the first download beside
//! the direct one, and live latency, a server commit to its row readable
//! in a watching client's file.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension};
use tandem_local::{Store, SyncOptions};
use tandem_server::{Config, Running};

use super::download::download;
use super::{per_second, Scratch};
use crate::error::CliError;

pub struct Figures {
    pub download_rows_per_s: f64,
    /// The direct download, run alternately with the one through the
    /// gateway (whatever else the host does then hits both alike).
    pub direct_rows_per_s: f64,
    pub live_p50_ms: f64,
    pub live_p99_ms: f64,
}

/// Commits the live case times, one every 10 ms.
const LIVE_COMMITS: usize = 100;

/// The gateway's role: nothing but EXECUTE on the device functions, as
/// docs/deploy.md makes it; dropped when the case ends.
pub struct GatewayRole<'s> {
    scratch: &'s Scratch,
    pub name: String,
}

impl<'s> GatewayRole<'s> {
    pub fn create(scratch: &'s Scratch) -> Result<Self, CliError> {
        let name = format!("tandem_bench_gateway_{}", std::process::id());
        scratch
            .connect()?
            .batch_execute(&format!(
                "DROP ROLE IF EXISTS {name}; CREATE ROLE {name} LOGIN; \
                 GRANT EXECUTE ON FUNCTION sync_schema, sync_select_changes_json, sync_apply_changes_json TO {name};"
            ))
            .map_err(|e| CliError::database("the gateway's role", &e))?;
        Ok(GatewayRole { scratch, name })
    }

    /// The bench database's URL, logging in as this role.
    pub fn url(&self) -> String {
        self.scratch.url.replacen("://postgres@", &format!("://{}@", self.name), 1)
    }
}

impl Drop for GatewayRole<'_> {
    fn drop(&mut self) {
        if let Ok(mut server) = self.scratch.connect() {
            let _ = server.batch_execute(&format!("DROP OWNED BY {0}; DROP ROLE {0}", self.name));
        }
    }
}

pub fn register(scratch: &Scratch, scope: &str) -> Result<String, CliError> {
    register_with(&mut scratch.connect()?, scope, &serde_json::json!({}))
}

/// A device's token for `scope` with its filter `params`.
pub fn register_with(server: &mut postgres::Client, scope: &str, params: &serde_json::Value) -> Result<String, CliError> {
    let row = server
        .query_one("SELECT sync_register_client($1, $2) ->> 'token'", &[&scope, params])
        .map_err(|e| CliError::database("register a device", &e))?;
    Ok(row.get(0))
}

pub fn run(scratch: &Scratch, rows: u64) -> Result<Figures, CliError> {
    let role = GatewayRole::create(scratch)?;
    let database_url = scratch.url.replacen("://postgres@", &format!("://{}@", role.name), 1);
    let mut config = Config::new(database_url);
    config.listen = "127.0.0.1:0".parse().map_err(|e| CliError::Invalid(format!("loopback address: {e}")))?;
    let gateway = Running::start(config).map_err(|e| CliError::Invalid(format!("the gateway did not start: {e}")))?;
    let url = format!("http://127.0.0.1:{}", gateway.addr().port());

    let token = register(scratch, "bench")?;
    let (mut best, mut best_direct) = (Duration::MAX, Duration::MAX);
    for attempt in 0..3 {
        let file = scratch.file(&format!("gateway-{attempt}.db"));
        best = best.min(download(&file, rows, &url, &["--token", &token])?);
        Store::remove(&file);
        best_direct = best_direct.min(download(&file, rows, &scratch.url, &[])?);
        Store::remove(&file);
    }
    let (live_p50_ms, live_p99_ms) = live(scratch, &url)?;
    drop(gateway);
    drop(role);
    Ok(Figures { download_rows_per_s: per_second(rows, best), direct_rows_per_s: per_second(rows, best_direct), live_p50_ms, live_p99_ms })
}

/// A file watching a small scope through the gateway; the server commits
/// one row change every 10 ms and times each until the file holds it.
fn live(scratch: &Scratch, url: &str) -> Result<(f64, f64), CliError> {
    let mut server = scratch.connect()?;
    server
        .batch_execute(
            "CREATE TABLE live (id int PRIMARY KEY, v int NOT NULL); INSERT INTO live SELECT i, 0 FROM generate_series(1, 100) i;
             SELECT sync_provision('live', '{\"tables\": [{\"name\": \"live\"}]}');",
        )
        .map_err(|e| CliError::database("live table", &e))?;
    let token = register(scratch, "live")?;
    let path = scratch.file("live.db");
    let stop = AtomicBool::new(false);
    let latencies = std::thread::scope(|threads| -> Result<Vec<f64>, CliError> {
        let watcher = threads.spawn(|| {
            let store = Store::open(&path)?;
            let options = SyncOptions { token: Some(token.clone()), ..SyncOptions::default() };
            store.watch(url, "live", &options, &|| stop.load(Ordering::Relaxed), &mut |_| {})
        });
        let measured = measure(&mut server, &path);
        stop.store(true, Ordering::Relaxed);
        watcher.join().map_err(|_| CliError::Invalid("the watching client panicked".into()))??;
        measured
    })?;
    let mut sorted = latencies;
    sorted.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| sorted.get(((sorted.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or_default();
    Ok((at(0.5), at(0.99)))
}

fn measure(server: &mut postgres::Client, path: &std::path::Path) -> Result<Vec<f64>, CliError> {
    let seen = |reader: &Connection, id: i64, value: i64| -> bool {
        reader.query_row("SELECT v FROM live WHERE id = ?1", [id], |r| r.get::<_, i64>(0)).optional().ok().flatten() == Some(value)
    };
    // The watcher's first round makes the file and pulls the scope.
    let started = Instant::now();
    let reader = loop {
        if let Ok(reader) = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY) {
            if seen(&reader, 1, 0) {
                break reader;
            }
        }
        if started.elapsed() > Duration::from_secs(30) {
            return Err(CliError::Invalid("the watching client did not pull the live scope within 30 s".into()));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut latencies = Vec::with_capacity(LIVE_COMMITS);
    for i in 0..LIVE_COMMITS {
        let tick = Instant::now();
        let (id, value) = (1 + (i % 100) as i64, 1 + i as i64);
        server.execute("UPDATE live SET v = $2::int8 WHERE id = $1::int8", &[&id, &value]).map_err(|e| CliError::database("commit", &e))?;
        let committed = Instant::now();
        while !seen(&reader, id, value) {
            if committed.elapsed() > Duration::from_secs(10) {
                return Err(CliError::Invalid(format!("commit {i} did not reach the watching file within 10 s")));
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        latencies.push(committed.elapsed().as_secs_f64() * 1000.0);
        std::thread::sleep(Duration::from_millis(10).saturating_sub(tick.elapsed()));
    }
    Ok(latencies)
}
