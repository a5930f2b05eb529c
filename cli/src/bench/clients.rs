//! Many clients at once (`--clients N`): N devices, each its own tenant's
//! partition, each running a sync round every second through one gateway
//! (`tandem serve`, a child process) while the server takes 500 single-row
//! writes a second spread over their partitions. Reports the rounds' p50
//! and p99, the server's and the gateway's CPU per round, and whether every
//! file ends equal to its partition.
//!
//! Each device first opens its file and makes one round, all N starting
//! within one second (a gateway restarted under its devices, or a fleet
//! launched at once): those first rounds, which also check the file and
//! open the gateway's pool, are reported on their own. The timed run, with
//! the writes, starts once every device has made its first.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Barrier, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};
use serde_json::json;
use tandem_local::{Store, SyncOptions};

use super::gateway::{register_with, GatewayRole};
use super::gateway_process::GatewayProcess;
use super::process_stat::{cpu_seconds, ProcessStat};
use super::{step, Scratch};
use crate::error::CliError;

/// Rows in each client's partition.
const ROWS_EACH: i64 = 100;
/// Single-row writes a second on the server, spread over the partitions.
const WRITES_PER_SECOND: u64 = 500;
/// Each client starts a round this often (or at once when one took longer).
const PERIOD: Duration = Duration::from_secs(1);

pub struct Figures {
    pub clients: u64,
    pub seconds: f64,
    pub rounds: u64,
    /// Rounds that failed (an error from the gateway or the file).
    pub failed_rounds: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// The devices' first rounds, all started within one second before the
    /// timed run (no server writes yet).
    pub first_p50_ms: f64,
    pub first_p99_ms: f64,
    /// Server writes made, a second (the target is `WRITES_PER_SECOND`).
    pub writes_per_s: f64,
    /// PostgreSQL's CPU (all its processes) per round, less what the
    /// writes cost (measured alone first), and the gateway's, less what it
    /// spends with no round running. Both are differences of larger
    /// figures: a few ms either way is noise.
    pub server_cpu_ms_per_round: f64,
    /// PostgreSQL's CPU over the run, in cores, writes included.
    pub server_cores: f64,
    pub server_cpu_ms_per_write: f64,
    pub gateway_cpu_ms_per_round: f64,
    /// Every file ended with exactly its partition, after the writes
    /// stopped and one more round each.
    pub converged: bool,
}

/// PostgreSQL's CPU seconds so far: the postmaster's, its children's that
/// ended, and those of its children still running. `None` when its
/// processes cannot be read (another host, another user).
fn server_cpu_seconds(server: &mut postgres::Client) -> Option<f64> {
    let dir: String = server.query_one("SHOW data_directory", &[]).ok()?.get(0);
    let pid: u32 = std::fs::read_to_string(format!("{dir}/postmaster.pid")).ok()?.lines().next()?.trim().parse().ok()?;
    let mut total = cpu_seconds(pid, true)?;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(child) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Some(stat) = ProcessStat::read(child) else { continue };
        if stat.parent() == Some(pid) {
            total += stat.cpu_seconds(false).unwrap_or(0.0);
        }
    }
    Some(total)
}

/// The server's writes: one row at a time, each its own commit, striding
/// through the ids so consecutive writes hit other tenants.
struct Writer {
    client: postgres::Client,
    update: postgres::Statement,
    rows: u64,
    done: u64,
}

impl Writer {
    fn new(scratch: &Scratch, rows: u64) -> Result<Self, CliError> {
        let mut client = scratch.connect()?;
        let update = client.prepare("UPDATE fleet SET v = v + 1 WHERE id = $1").map_err(|e| CliError::database("prepare a write", &e))?;
        Ok(Writer { client, update, rows, done: 0 })
    }

    /// Writes at `WRITES_PER_SECOND` for `seconds`; returns how many it made.
    fn run(&mut self, seconds: f64) -> Result<u64, CliError> {
        let started = Instant::now();
        let mut made = 0u64;
        while started.elapsed().as_secs_f64() < seconds {
            let due = started + Duration::from_secs_f64(made as f64 / WRITES_PER_SECOND as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let id = ((self.done * 7919 + self.done / self.rows) % self.rows) as i64;
            self.client.execute(&self.update, &[&id]).map_err(|e| CliError::database("a server write", &e))?;
            self.done += 1;
            made += 1;
        }
        Ok(made)
    }
}

/// Longest stretch of writes alone, before the clients start: what
/// PostgreSQL and the gateway (which hears of every commit) spend without
/// a round, taken out of their CPU per round.
const CALIBRATION_SECONDS: f64 = 10.0;

/// The tenant's rows as `(id, v)`, in key order.
fn partition(server: &mut postgres::Client, tenant: i32) -> Result<Vec<(i64, i64)>, CliError> {
    let rows = server
        .query("SELECT id, v FROM fleet WHERE tenant = $1 ORDER BY id", &[&tenant])
        .map_err(|e| CliError::database("read a partition", &e))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

fn file_rows(path: &std::path::Path) -> Option<Vec<(i64, i64)>> {
    let file = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).ok()?;
    let mut statement = file.prepare("SELECT id, v FROM fleet ORDER BY id").ok()?;
    let rows = statement.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).ok()?;
    rows.collect::<Result<Vec<_>, _>>().ok()
}

pub fn run(scratch: &Scratch, clients: u64, seconds: f64, json: bool) -> Result<Figures, CliError> {
    let count = clients as usize;
    let mut server = scratch.connect()?;
    server
        .batch_execute(&format!(
            "CREATE TABLE fleet (id bigint PRIMARY KEY, tenant int NOT NULL, v bigint NOT NULL, body text NOT NULL);
             INSERT INTO fleet SELECT g, g / {ROWS_EACH}, 0, md5(g::text) FROM generate_series(0, {clients} * {ROWS_EACH} - 1) g;
             ANALYZE fleet;
             SELECT sync_provision('fleet', '{{\"tables\": [{{\"name\": \"fleet\", \"filter\": {{\"tenant\": \"tenant\"}}}}]}}');"
        ))
        .map_err(|e| CliError::database("the fleet table", &e))?;
    let tokens =
        (0..count).map(|tenant| register_with(&mut server, "fleet", &json!({ "tenant": tenant }))).collect::<Result<Vec<_>, _>>()?;
    let paths: Vec<_> = (0..count).map(|tenant| scratch.file(&format!("client-{tenant}.db"))).collect();
    let role = GatewayRole::create(scratch)?;
    let gateway = GatewayProcess::start(&role.url())?;
    let options: Vec<SyncOptions> = tokens.iter().map(|t| SyncOptions { token: Some(t.clone()), ..SyncOptions::default() }).collect();
    for (path, options) in paths.iter().zip(&options) {
        Store::open(path)?.sync(&gateway.url, "fleet", options)?;
    }
    scratch.settle()?;
    step(json, &format!("{count} files made; {seconds:.0} s of rounds every second, {WRITES_PER_SECOND} server writes a second"));

    let mut writer = Writer::new(scratch, clients * ROWS_EACH as u64)?;
    let quiet_seconds = seconds.min(CALIBRATION_SECONDS);
    let (server_quiet, gateway_quiet) = (server_cpu_seconds(&mut server), gateway.cpu_seconds());
    let quiet_writes = writer.run(quiet_seconds)?;
    let server_quiet = server_quiet.zip(server_cpu_seconds(&mut server)).map_or(f64::NAN, |(before, after)| after - before);
    let gateway_quiet = gateway_quiet.zip(gateway.cpu_seconds()).map_or(f64::NAN, |(before, after)| after - before);
    let per_write = server_quiet / quiet_writes.max(1) as f64;
    let stop = AtomicBool::new(false);
    let failed = AtomicU64::new(0);
    let times = Mutex::new(Vec::<f64>::new());
    let first_times = Mutex::new(Vec::<f64>::new());
    // Every device past its first round, and the main thread; then the
    // main thread notes the timed run's start and lets them go.
    let warmed = Barrier::new(count + 1);
    let go = Barrier::new(count + 1);
    let steady = OnceLock::<Instant>::new();
    let herd = Instant::now();
    let mut cpu_before = (None, None);
    let mut started = herd;
    let writes = std::thread::scope(|threads| -> Result<u64, CliError> {
        let mut running = Vec::with_capacity(count);
        for (i, (path, options)) in paths.iter().zip(&options).enumerate() {
            let (url, stop, failed, times, first_times, warmed, go, steady) =
                (&gateway.url, &stop, &failed, &times, &first_times, &warmed, &go, &steady);
            let client = std::thread::Builder::new()
                .stack_size(512 * 1024)
                .spawn_scoped(threads, move || -> Result<(), CliError> {
                    // Spread over a second, both the first rounds and the
                    // timed ones (once a second each).
                    let offset = PERIOD.mul_f64(i as f64 / count as f64);
                    let timed_round = |store: &Store, next: &mut Instant, into: &Mutex<Vec<f64>>| -> Result<(), CliError> {
                        if let Some(wait) = next.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                        *next += PERIOD;
                        let round = Instant::now();
                        match store.sync(url, "fleet", options) {
                            Ok(_) => into
                                .lock()
                                .map_err(|_| CliError::Invalid("a client panicked".into()))?
                                .push(round.elapsed().as_secs_f64() * 1000.0),
                            Err(_) => {
                                failed.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Ok(())
                    };
                    let store = Store::open(path).map_err(CliError::from);
                    let first = match &store {
                        Ok(store) => timed_round(store, &mut (herd + offset), first_times),
                        Err(_) => Ok(()),
                    };
                    // Reached whatever happened, so no device holds the
                    // others (and the main thread) back.
                    warmed.wait();
                    go.wait();
                    let (store, ()) = (store?, first?);
                    let mut next = *steady.get().ok_or_else(|| CliError::Invalid("the timed run has no start".into()))? + offset;
                    while !stop.load(Ordering::Relaxed) {
                        timed_round(&store, &mut next, times)?;
                    }
                    Ok(())
                })
                .map_err(|e| CliError::Invalid(format!("cannot start a client thread: {e}")))?;
            running.push(client);
        }
        warmed.wait();
        cpu_before = (server_cpu_seconds(&mut server), gateway.cpu_seconds());
        started = Instant::now();
        let _ = steady.set(started);
        go.wait();
        let written = writer.run(seconds);
        stop.store(true, Ordering::Relaxed);
        for client in running {
            client.join().map_err(|_| CliError::Invalid("a client panicked".into()))??;
        }
        written
    })?;
    let elapsed = started.elapsed().as_secs_f64();
    let (server_before, gateway_before) = cpu_before;
    let server_cpu = server_before.zip(server_cpu_seconds(&mut server)).map_or(f64::NAN, |(before, after)| after - before);
    let gateway_cpu = gateway_before.zip(gateway.cpu_seconds()).map_or(f64::NAN, |(before, after)| after - before);
    let sorted = |times: Mutex<Vec<f64>>| -> Result<Vec<f64>, CliError> {
        let mut times = times.into_inner().map_err(|_| CliError::Invalid("a client panicked".into()))?;
        times.sort_by(|a, b| a.total_cmp(b));
        Ok(times)
    };
    let (times, first_times) = (sorted(times)?, sorted(first_times)?);
    let percentile = |times: &[f64], p: f64| {
        times.get(((times.len() as f64 * p) as usize).min(times.len().saturating_sub(1))).copied().unwrap_or(f64::NAN)
    };
    let rounds = times.len() as u64;

    // Quiet: one more round each, then every file against its partition.
    let mut converged = failed.load(Ordering::Relaxed) == 0;
    for (tenant, (path, options)) in paths.iter().zip(&options).enumerate() {
        Store::open(path)?.sync(&gateway.url, "fleet", options)?;
        converged &= file_rows(path) == Some(partition(&mut server, tenant as i32)?);
    }
    let per_round = |cpu: f64| cpu * 1000.0 / rounds.max(1) as f64;
    // The writes' share, as measured alone, is not the rounds'; nor is
    // what the gateway spends on hearing of commits.
    let rounds_cpu = server_cpu - per_write * writes as f64;
    let gateway_rounds_cpu = gateway_cpu - gateway_quiet / quiet_seconds * elapsed;
    let figures = Figures {
        clients,
        seconds: elapsed,
        rounds,
        failed_rounds: failed.load(Ordering::Relaxed),
        p50_ms: percentile(&times, 0.50),
        p99_ms: percentile(&times, 0.99),
        first_p50_ms: percentile(&first_times, 0.50),
        first_p99_ms: percentile(&first_times, 0.99),
        writes_per_s: writes as f64 / elapsed,
        server_cpu_ms_per_round: per_round(rounds_cpu),
        server_cores: server_cpu / elapsed,
        server_cpu_ms_per_write: per_write * 1000.0,
        gateway_cpu_ms_per_round: per_round(gateway_rounds_cpu),
        converged,
    };
    drop(gateway);
    drop(role);
    for path in &paths {
        Store::remove(path);
    }
    Ok(figures)
}
