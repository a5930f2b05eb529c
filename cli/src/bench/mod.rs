//! `tandem bench`: each sync figure beside a plain-copy baseline measured in
//! the same run, on a database and files of its own (removed afterwards).
//!
//! Cases: initial download PostgreSQL -> SQLite (against COPY into a SQLite
//! bulk insert), incremental round, upload (against a set-based INSERT ... ON
//! CONFLICT), write overhead of tracking on each side, the client's peak
//! memory, a 10,000-row first sync, a verify of the whole file (clean, and
//! with ten drifted rows repaired), and through the gateway: the download
//! beside the direct one and live latency; with `--watchers N`, N devices
//! kept live by one gateway through a burst of commits; with `--tables N`
//! (50 by default), idle and one-change rounds of an N-table scope; with
//! `--clients N`, N devices each syncing every second through one gateway
//! under a steady stream of server writes.

mod clients;
mod download;
mod gateway;
mod gateway_process;
mod overhead;
mod process_stat;
mod scratch;
mod tables;
mod upload;
mod verify;
mod watchers;

use crate::stdout::say;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::error::CliError;
use crate::DEFAULT_DATABASE_URL;

pub use scratch::Scratch;

#[derive(clap::Args)]
pub struct Args {
    /// Rows in the benchmark table.
    #[arg(long, default_value_t = 1_000_000)]
    rows: u64,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// PostgreSQL server to create the benchmark database on.
    #[arg(long, env = "TANDEM_DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    database: String,
    /// Also keep this many devices live through one gateway and time a
    /// burst of commits reaching them all (0: skip the case).
    #[arg(long, value_name = "N", default_value_t = 0)]
    watchers: u64,
    /// Tables of the wide scope whose idle and one-change rounds are timed
    /// beside a one-table scope's (0: skip the case).
    #[arg(long, value_name = "N", default_value_t = 50)]
    tables: u64,
    /// Also run this many clients, each syncing every second through one
    /// gateway while the server takes 500 writes a second (0: skip).
    #[arg(long, value_name = "N", default_value_t = 0)]
    clients: u64,
    /// How long the `--clients` case runs.
    #[arg(long, value_name = "SECONDS", default_value_t = 60.0)]
    clients_seconds: f64,
}

/// Rows a case moves (the upload and overhead cases use at most this many).
pub const CHANGES: u64 = 100_000;

pub fn per_second(rows: u64, took: Duration) -> f64 {
    rows as f64 / took.as_secs_f64().max(1e-9)
}

pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values.get(values.len() / 2).copied().unwrap_or_default()
}

/// Times `body`.
pub fn timed<T>(body: impl FnOnce() -> Result<T, CliError>) -> Result<(T, Duration), CliError> {
    let started = Instant::now();
    let value = body()?;
    Ok((value, started.elapsed()))
}

/// Prints a step on a terminal, so a long run shows where it is.
pub fn step(json: bool, text: &str) {
    use std::io::IsTerminal;
    if !json && std::io::stderr().is_terminal() {
        eprintln!("  .. {text}");
    }
}

pub fn run(args: &Args) -> Result<(), CliError> {
    if args.rows < 1000 {
        return Err(CliError::Invalid("--rows must be at least 1000".into()));
    }
    if !(args.clients_seconds.is_finite() && args.clients_seconds > 0.0) {
        return Err(CliError::Invalid("--clients-seconds must be a number of seconds above 0".into()));
    }
    let scratch = Scratch::create(&args.database, args.rows)?;
    step(args.json, &format!("seeded {} rows in {:.1} s", args.rows, scratch.seed_s));
    let changes = CHANGES.min(args.rows / 2);

    step(args.json, "download: COPY baseline and tandem sync in a child process, best of three each");
    let download = download::run(&scratch, args.rows)?;
    step(args.json, "through the gateway: the download alternating with the direct one, then live latency at 100 commits/s");
    let through = gateway::run(&scratch, args.rows)?;
    step(args.json, "incremental rounds of 100 changes");
    let incremental = download::incremental(&scratch, &download.file)?;
    step(args.json, "verify of the whole file: unchanged, then ten rows drifted on the server and repaired");
    let verified = verify::run(&scratch, &download.file)?;
    step(args.json, "a tenant's first sync of half the rows, straight after provisioning");
    let filtered = download::filtered(&scratch)?;
    step(args.json, "upload: INSERT ... ON CONFLICT baseline, then tandem sync");
    let upload = upload::run(&scratch, &download.file, args.rows, changes)?;
    step(args.json, "write overhead of tracking on each side");
    let server = overhead::server(&scratch, args.rows, changes)?;
    let local = overhead::local(&scratch, changes)?;
    step(args.json, "first sync of 10,000 rows");
    let seed = download::seed_10k(&scratch)?;
    step(args.json, "ALTER TABLE ... ADD COLUMN ... DEFAULT on the synced table, then a round with 100 changed rows");
    let added = download::add_column(&scratch, &download.file)?;
    let wide = if args.tables > 0 {
        step(args.json, &format!("rounds of a {}-table scope, idle and with one row changed, beside a one-table scope", args.tables));
        Some(tables::run(&scratch, args.tables)?)
    } else {
        None
    };
    let fleet = if args.clients > 0 {
        step(args.json, &format!("{} clients syncing every second through one gateway, for {:.0} s", args.clients, args.clients_seconds));
        Some(clients::run(&scratch, args.clients, args.clients_seconds, args.json)?)
    } else {
        None
    };
    let watched = if args.watchers > 0 {
        step(args.json, &format!("{} devices watching through one gateway", args.watchers));
        Some(watchers::run(&scratch, args.watchers, args.json)?)
    } else {
        None
    };

    let mut report = json!({
        "rows": args.rows,
        "download_rows_per_s": download.rows_per_s,
        "baseline_rows_per_s": download.baseline_rows_per_s,
        "download_ratio": download.rows_per_s / download.baseline_rows_per_s,
        "filtered_download_rows_per_s": filtered,
        "incremental_ms": incremental.new_connection_ms,
        "incremental_held_ms": incremental.held_connection_ms,
        "verify_ms": verified.ms,
        "verify_bytes": verified.bytes,
        "verify_rows_bytes": verified.rows_bytes,
        "verify_repair_ms": verified.repair_ms,
        "verify_repair_bytes": verified.repair_bytes,
        "upload_rows": changes,
        "upload_rows_per_s": upload.rows_per_s,
        "upload_baseline_rows_per_s": upload.baseline_rows_per_s,
        "upload_ratio": upload.rows_per_s / upload.baseline_rows_per_s,
        "upload_apply_rows_per_s": upload.apply_rows_per_s,
        "upload_apply_ratio": upload.apply_rows_per_s / upload.baseline_rows_per_s,
        "upload_tracked_rows_per_s": upload.tracked_rows_per_s,
        "upload_tracked_ratio": upload.tracked_rows_per_s / upload.baseline_rows_per_s,
        "server_write_overhead": server.worst(),
        "server_insert_overhead": server.insert,
        "server_update_overhead": server.update,
        "local_write_overhead": local.tracked.worst(),
        "local_insert_overhead": local.tracked.insert,
        "local_update_overhead": local.tracked.update,
        "local_trigger_floor_insert": local.trigger_floor.insert,
        "local_trigger_floor_update": local.trigger_floor.update,
        "local_row_insert_overhead": local.by_row.insert,
        "local_row_update_overhead": local.by_row.update,
        "peak_rss_mb": download.peak_rss_mb,
        "seed_10k_s": seed,
        "provision_s": scratch.provision_s,
        "add_column_alter_ms": added.alter_ms,
        "add_column_round_ms": added.round_ms,
        "add_column_rows_pulled": added.pulled,
        "gateway_download_rows_per_s": through.download_rows_per_s,
        "gateway_direct_rows_per_s": through.direct_rows_per_s,
        "gateway_download_ratio": through.download_rows_per_s / through.direct_rows_per_s,
        "live_p50_ms": through.live_p50_ms,
        "live_p99_ms": through.live_p99_ms,
    });
    if let Some(w) = &wide {
        report["tables"] = json!(w.tables);
        report["idle_round_ms"] = json!(w.idle_round_ms);
        report["one_change_round_ms"] = json!(w.one_change_round_ms);
        report["one_table_idle_round_ms"] = json!(w.one_table_idle_round_ms);
        report["connect_ms"] = json!(w.connect_ms);
        report["held_idle_round_ms"] = json!(w.held_idle_round_ms);
        report["held_one_change_round_ms"] = json!(w.held_one_change_round_ms);
        report["gateway_idle_round_ms"] = json!(w.gateway_idle_round_ms);
        report["gateway_one_change_round_ms"] = json!(w.gateway_one_change_round_ms);
    }
    if let Some(c) = &fleet {
        report["clients"] = json!(c.clients);
        report["clients_seconds"] = json!(c.seconds);
        report["clients_rounds"] = json!(c.rounds);
        report["clients_failed_rounds"] = json!(c.failed_rounds);
        report["clients_p50_ms"] = json!(c.p50_ms);
        report["clients_p99_ms"] = json!(c.p99_ms);
        report["clients_first_p50_ms"] = json!(c.first_p50_ms);
        report["clients_first_p99_ms"] = json!(c.first_p99_ms);
        report["clients_writes_per_s"] = json!(c.writes_per_s);
        report["clients_server_cpu_ms_per_round"] = json!(c.server_cpu_ms_per_round);
        report["clients_gateway_cpu_ms_per_round"] = json!(c.gateway_cpu_ms_per_round);
        report["clients_server_cores"] = json!(c.server_cores);
        report["clients_server_cpu_ms_per_write"] = json!(c.server_cpu_ms_per_write);
        report["clients_converged"] = json!(c.converged);
    }
    if let Some(w) = &watched {
        report["watchers"] = json!(w.watchers);
        report["watchers_live_s"] = json!(w.live_s);
        report["watchers_converge_s"] = json!(w.converge_s);
        report["watchers_converged"] = json!(w.converged);
        report["watchers_listen_sessions"] = json!(w.listen_sessions);
        report["watchers_gateway_sessions"] = json!(w.gateway_sessions);
        report["watchers_gateway_rss_mb"] = json!(w.gateway_rss_mb);
        report["watchers_gateway_peak_rss_mb"] = json!(w.gateway_peak_rss_mb);
    }
    if args.json {
        say!("{report}");
        return Ok(());
    }
    let n = args.rows;
    say!("tandem bench: {n} rows (bigint key, int tenant, ~40-char text, numeric(12,2), timestamptz)");
    say!("  {:<46} {:>14} {:>14} {:>7}", "case", "tandem", "baseline", "ratio");
    say!(
        "  {:<46} {:>10.0} r/s {:>10.0} r/s {:>7.2}",
        "download PostgreSQL -> SQLite file (vs COPY)",
        download.rows_per_s,
        download.baseline_rows_per_s,
        report["download_ratio"].as_f64().unwrap_or_default()
    );
    say!(
        "  {:<46} {:>10.0} r/s {:>10.0} r/s {:>7.2}",
        format!("upload {changes} changes (vs INSERT..ON CONFLICT)"),
        upload.rows_per_s,
        upload.baseline_rows_per_s,
        report["upload_ratio"].as_f64().unwrap_or_default()
    );
    say!(
        "  {:<46} {:>10.0} r/s {:>10.0} r/s {:>7.2}",
        "  of which the server's apply calls",
        upload.apply_rows_per_s,
        upload.baseline_rows_per_s,
        report["upload_apply_ratio"].as_f64().unwrap_or_default()
    );
    say!(
        "  {:<46} {:>10.0} r/s {:>10.0} r/s {:>7.2}",
        "  floor: the same upsert tracked, with its fold",
        upload.tracked_rows_per_s,
        upload.baseline_rows_per_s,
        report["upload_tracked_ratio"].as_f64().unwrap_or_default()
    );
    say!("  {:<46} {:>10.0} r/s", "a tenant's first sync, half the rows (filtered)", filtered);
    say!("  {:<46} {:>13.1}ms", "incremental round, 100 changed rows (median)", incremental.new_connection_ms);
    say!("  {:<46} {:>13.1}ms", "  the same over a connection held across rounds", incremental.held_connection_ms);
    say!(
        "  {:<46} {:>13.1}ms  ({} KB exchanged; the rows as JSON: {} MB)",
        "verify of the whole file, nothing differs",
        verified.ms,
        verified.bytes.div_ceil(1024),
        verified.rows_bytes >> 20
    );
    say!(
        "  {:<46} {:>13.1}ms  ({} KB exchanged)",
        "verify --repair, 10 rows drifted on the server",
        verified.repair_ms,
        verified.repair_bytes.div_ceil(1024)
    );
    say!(
        "  {:<46} {:>14.2}x  (insert {:.2}x, update {:.2}x)",
        "server write overhead (tracked / untracked)",
        server.worst(),
        server.insert,
        server.update
    );
    say!(
        "  {:<46} {:>14.2}x  (insert {:.2}x, update {:.2}x)",
        "local write overhead (tracked / untracked)",
        local.tracked.worst(),
        local.tracked.insert,
        local.tracked.update
    );
    say!(
        "  {:<46} {:>14.2}x  (insert {:.2}x, update {:.2}x)",
        "  of it, any trigger (one that never runs)",
        local.trigger_floor.worst(),
        local.trigger_floor.insert,
        local.trigger_floor.update
    );
    say!(
        "  {:<46} {:>14.2}x  (insert {:.2}x, update {:.2}x)",
        "  one statement a row, as a program writes",
        local.by_row.worst(),
        local.by_row.insert,
        local.by_row.update
    );
    say!("  {:<46} {:>12.0} MB", "client peak RSS during the download", download.peak_rss_mb);
    say!("  {:<46} {:>13.2} s", "first sync of 10,000 rows", seed);
    say!("  {:<46} {:>13.2} s", "provision (stamp existing rows)", scratch.provision_s);
    say!(
        "  {:<46} {:>13.1}ms  ({} rows pulled; the ALTER {:.0} ms)",
        "round after ADD COLUMN .. DEFAULT, 100 changed",
        added.round_ms,
        added.pulled,
        added.alter_ms
    );
    if let Some(w) = &wide {
        say!("  a {}-table scope, {} rows a table, filtered by tenant:", w.tables, tables::ROWS_PER_TABLE);
        say!("  {:<46} {:>13.1}ms  (a one-table scope: {:.1} ms)", "  idle round (median)", w.idle_round_ms, w.one_table_idle_round_ms);
        say!("  {:<46} {:>13.1}ms", "  round with one row changed (median)", w.one_change_round_ms);
        say!("  {:<46} {:>13.1}ms", "  of a round: opening the connection", w.connect_ms);
        say!(
            "  {:<46} {:>13.1}ms  (one row changed: {:.1} ms)",
            "  idle round over a connection kept open",
            w.held_idle_round_ms,
            w.held_one_change_round_ms
        );
        say!(
            "  {:<46} {:>13.1}ms  (one row changed: {:.1} ms)",
            "  idle round through the gateway",
            w.gateway_idle_round_ms,
            w.gateway_one_change_round_ms
        );
    }
    if let Some(c) = &fleet {
        say!("  {} clients, a round each every second through one gateway, {:.0} server writes/s:", c.clients, c.writes_per_s);
        say!("  {:<46} {:>13.1}ms  (p99 {:.1} ms; {} rounds, {} failed)", "  round p50", c.p50_ms, c.p99_ms, c.rounds, c.failed_rounds);
        say!(
            "  {:<46} {:>13.1}ms  (p99 {:.1} ms; all started within a second, before the run)",
            "  a device's first round p50",
            c.first_p50_ms,
            c.first_p99_ms
        );
        say!(
            "  {:<46} {:>13.1}ms  (gateway {:.1} ms; a write {:.2} ms; {:.2} cores in all)",
            "  server CPU per round, writes left out",
            c.server_cpu_ms_per_round,
            c.gateway_cpu_ms_per_round,
            c.server_cpu_ms_per_write,
            c.server_cores
        );
        say!("  {:<46} {:>14}", "  every file equals its partition", c.converged);
    }
    if let Some(w) = &watched {
        say!("  {} devices watching through one gateway:", w.watchers);
        say!("  {:<46} {:>13.2} s", "  all files made, from the first start", w.live_s);
        say!("  {:<46} {:>13.2} s  (converged: {})", "  a commit per tenant, until all files hold it", w.converge_s, w.converged);
        say!("  {:<46} {:>14}  ({} LISTEN)", "  gateway's PostgreSQL sessions while waiting", w.gateway_sessions, w.listen_sessions);
        say!("  {:<46} {:>12.0} MB  (peak {:.0} MB)", "  gateway RSS while all wait", w.gateway_rss_mb, w.gateway_peak_rss_mb);
    }
    Ok(())
}
