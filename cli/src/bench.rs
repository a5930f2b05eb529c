//! `tandem bench`: sync throughput beside plain-copy baselines measured in
//! the same run, on a database of its own (created, then dropped).

use std::io::Read;
use std::time::{Duration, Instant};

use postgres::{Client, NoTls};
use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::json;
use tandem_core::dsn::with_database;

use crate::error::CliError;
use crate::progress::Progress;
use crate::DEFAULT_DATABASE_URL;

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
}

/// Batch size of the pulls, as the sync agent uses it.
const BATCH: u64 = 10_000;

/// A database that exists for the length of the benchmark.
struct Scratch {
    admin_url: String,
    name: String,
    url: String,
}

impl Scratch {
    fn create(admin_url: &str) -> Result<Scratch, CliError> {
        let name = format!("tandem_bench_{}", std::process::id());
        let mut admin = Client::connect(admin_url, NoTls).map_err(|e| CliError::connect(admin_url, &e))?;
        admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name}")).map_err(|e| CliError::database("drop old benchmark database", &e))?;
        admin.batch_execute(&format!("CREATE DATABASE {name}")).map_err(|e| CliError::database("create benchmark database", &e))?;
        let url = with_database(admin_url, &name);
        Ok(Scratch { admin_url: admin_url.to_string(), name, url })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Ok(mut admin) = Client::connect(&self.admin_url, NoTls) {
            let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
        }
    }
}

#[derive(Deserialize)]
struct Page {
    watermark: String,
    has_more: bool,
    tables: Vec<PageTable>,
}

#[derive(Deserialize)]
struct PageTable {
    rows: Vec<IgnoredAny>,
}

fn per_second(rows: u64, took: Duration) -> f64 {
    rows as f64 / took.as_secs_f64().max(1e-9)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values.get(values.len() / 2).copied().unwrap_or_default()
}

/// Pulls everything after `since` in batches; returns rows and watermark.
fn pull(client: &mut Client, since: Option<&str>, progress: Option<&mut Progress>) -> Result<(u64, String), CliError> {
    let mut since = since.map(str::to_string);
    let mut rows = 0;
    let mut progress = progress;
    let options = json!({ "max_rows": BATCH });
    loop {
        let text: String = client
            .query_one("SELECT sync_select_changes('bench', $1, $2)::text", &[&since, &options])
            .map_err(|e| CliError::database("sync_select_changes", &e))?
            .get(0);
        let page: Page = serde_json::from_str(&text).map_err(|e| CliError::Invalid(format!("unreadable changeset: {e}")))?;
        let count: u64 = page.tables.iter().map(|t| t.rows.len() as u64).sum();
        rows += count;
        if let Some(p) = progress.as_deref_mut() {
            p.add(count);
        }
        since = Some(page.watermark);
        if !page.has_more {
            return Ok((rows, since.unwrap_or_default()));
        }
    }
}

pub fn run(args: &Args) -> Result<(), CliError> {
    if args.rows < 200 {
        return Err(CliError::Invalid("--rows must be at least 200".into()));
    }
    let scratch = Scratch::create(&args.database)?;
    let mut client = Client::connect(&scratch.url, NoTls).map_err(|e| CliError::connect(&scratch.url, &e))?;
    client
        .batch_execute("CREATE EXTENSION tandem")
        .map_err(|_| CliError::ExtensionMissing { url: tandem_core::dsn::redacted(&args.database) })?;
    let n = args.rows as i64;

    // The table of the cases: bigint key, int tenant, ~40 characters of text,
    // numeric(12,2), timestamptz.
    let started = Instant::now();
    client
        .batch_execute(
            "CREATE TABLE bench (id bigint PRIMARY KEY, tenant int NOT NULL, body text, amount numeric(12,2), at timestamptz)",
        )
        .map_err(|e| CliError::database("create table", &e))?;
    client
        .execute(
            "INSERT INTO bench SELECT g, g % 10, md5(g::text) || '-row', (g % 100000) / 100.0, \
             timestamptz '2024-01-01 00:00:00+00' + g * interval '1 second' FROM generate_series(1, $1::int8) g",
            &[&n],
        )
        .map_err(|e| CliError::database("seed rows", &e))?;
    client.batch_execute("ANALYZE bench").map_err(|e| CliError::database("analyze", &e))?;
    let seeded = started.elapsed();

    let started = Instant::now();
    client
        .batch_execute(r#"SELECT sync_provision('bench', '{"tables": [{"name": "bench"}]}'); ANALYZE tandem.track_1;"#)
        .map_err(|e| CliError::database("provision", &e))?;
    let provision = started.elapsed();

    // Baseline: the fastest way PostgreSQL hands out these rows.
    let started = Instant::now();
    let mut reader = client
        .copy_out("COPY (SELECT id, tenant, body, amount, at FROM bench ORDER BY id) TO STDOUT")
        .map_err(|e| CliError::database("COPY", &e))?;
    let mut buffer = vec![0u8; 1 << 16];
    let mut copied_lines = 0u64;
    loop {
        let read = reader.read(&mut buffer).map_err(|e| CliError::Invalid(format!("COPY: {e}")))?;
        if read == 0 {
            break;
        }
        copied_lines += buffer[..read].iter().filter(|b| **b == b'\n').count() as u64;
    }
    drop(reader);
    let copy = started.elapsed();

    let started = Instant::now();
    let mut progress = Progress::new("full pull", Some(args.rows));
    let (pulled, mut watermark) = pull(&mut client, None, Some(&mut progress))?;
    progress.finish();
    let full = started.elapsed();
    if pulled != args.rows || copied_lines != args.rows {
        return Err(CliError::Invalid(format!("pulled {pulled} and copied {copied_lines} rows of {}", args.rows)));
    }

    let mut incremental = Vec::new();
    for _ in 0..7 {
        client
            .execute(
                "UPDATE bench SET amount = amount + 1 WHERE id IN \
                 (SELECT DISTINCT 1 + (random() * ($1::int8 - 1))::int8 FROM generate_series(1, 100) LIMIT 100)",
                &[&n],
            )
            .map_err(|e| CliError::database("update 100 rows", &e))?;
        let started = Instant::now();
        let (rows, next) = pull(&mut client, Some(&watermark), None)?;
        incremental.push(started.elapsed().as_secs_f64() * 1000.0);
        if rows == 0 || rows > 100 {
            return Err(CliError::Invalid(format!("an incremental pull returned {rows} rows for 100 changes")));
        }
        watermark = next;
    }

    let report = json!({
        "rows": args.rows,
        "seed_s": seeded.as_secs_f64(),
        "provision_s": provision.as_secs_f64(),
        "select_rows_per_s": per_second(pulled, full),
        "copy_baseline_rows_per_s": per_second(copied_lines, copy),
        "select_ratio": copy.as_secs_f64() / full.as_secs_f64(),
        "incremental_ms": median(incremental),
    });
    if args.json {
        println!("{report}");
    } else {
        println!("tandem bench: {} rows (bigint key, int tenant, text, numeric(12,2), timestamptz)", args.rows);
        println!("  provision (stamp existing rows)   {:>12.2} s", provision.as_secs_f64());
        println!("  sync_select_changes, full pull    {:>12.0} rows/s", per_second(pulled, full));
        println!("  COPY TO STDOUT baseline           {:>12.0} rows/s", per_second(copied_lines, copy));
        println!("  ratio to baseline                 {:>12.2}", copy.as_secs_f64() / full.as_secs_f64());
        println!("  incremental pull of 100 changes   {:>12.1} ms (median of 7)", median(report["incremental_ms"].as_f64().map(|v| vec![v]).unwrap_or_default()));
    }
    Ok(())
}
