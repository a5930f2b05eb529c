//! A round on a wide scope: N tenant-filtered tables of 2,000 rows, beside
//! the same round on a one-table scope. A round should cost what changed,
//! not how many tables the scope has.

use serde_json::json;
use tandem_local::{remote, Store, SyncOptions, SyncReport};

use super::gateway::GatewayRole;
use super::gateway_process::GatewayProcess;
use super::{median, timed, Scratch};
use crate::error::CliError;

/// Rows in each table of the case.
pub const ROWS_PER_TABLE: i64 = 2000;
/// Rounds timed per figure (the median is reported).
const ROUNDS: usize = 9;

pub struct Tables {
    pub tables: u64,
    /// A round with nothing changed on either side.
    pub idle_round_ms: f64,
    /// A round that brings one row changed on the server.
    pub one_change_round_ms: f64,
    /// The idle round of a one-table scope with the same filter.
    pub one_table_idle_round_ms: f64,
    /// Of a round, the share of opening a connection to the server (a
    /// `tandem sync` pays it each time; a watching device once).
    pub connect_ms: f64,
    /// The idle and one-change rounds over one connection kept open (as a
    /// watching device, or the gateway's pool, has): the server's session
    /// has the scope's tables and plans at hand.
    pub held_idle_round_ms: f64,
    pub held_one_change_round_ms: f64,
    /// The idle and one-change rounds through the gateway (`tandem serve`
    /// over plain HTTP on loopback), each a new HTTP client as `tandem
    /// sync --url` makes: what a device sees in a deployment, where the
    /// gateway's pooled sessions stay open.
    pub gateway_idle_round_ms: f64,
    pub gateway_one_change_round_ms: f64,
}

/// Untimed rounds through the gateway first, so its pool's sessions have
/// opened the scope's relations (a gateway serving devices has).
const WARM_ROUNDS: usize = 3;

fn table_name(i: u64) -> String {
    format!("wide_{i}")
}

/// Makes a scope `name` of `tables`, filtered by tenant, and a token for
/// tenant 1.
fn provision(scratch: &Scratch, name: &str, tables: &[String]) -> Result<String, CliError> {
    let mut server = scratch.connect()?;
    let tables: Vec<_> = tables.iter().map(|t| json!({"name": t, "filter": {"tenant": "tenant"}})).collect();
    server
        .execute("SELECT sync_provision($1, $2::text::jsonb)", &[&name, &json!({ "tables": tables }).to_string()])
        .map_err(|e| CliError::database("provision the wide scope", &e))?;
    let token: String = server
        .query_one("SELECT sync_register_client($1, '{\"tenant\": 1}') ->> 'token'", &[&name])
        .map_err(|e| CliError::database("register a tenant", &e))?
        .get(0);
    Ok(token)
}

pub fn run(scratch: &Scratch, n: u64) -> Result<Tables, CliError> {
    let mut server = scratch.connect()?;
    let wide_tables: Vec<String> = (1..=n).map(table_name).collect();
    // The one-table scope: a table like each of the wide scope's.
    let narrow_tables = vec!["narrow".to_string()];
    for table in wide_tables.iter().chain(&narrow_tables) {
        server
            .batch_execute(&format!(
                "CREATE TABLE {t} (id bigint PRIMARY KEY, tenant int NOT NULL, body text NOT NULL);
                 INSERT INTO {t} SELECT g, g % 10, md5(g::text) FROM generate_series(1, {ROWS_PER_TABLE}) g;
                 ANALYZE {t};",
                t = table
            ))
            .map_err(|e| CliError::database("create the wide tables", &e))?;
    }
    let wide_token = provision(scratch, "wide", &wide_tables)?;
    let narrow_token = provision(scratch, "narrow", &narrow_tables)?;
    scratch.settle()?;

    let wide = Store::open(scratch.file("wide.db"))?;
    let narrow = Store::open(scratch.file("narrow.db"))?;
    let wide_options = SyncOptions { token: Some(wide_token), ..SyncOptions::default() };
    let narrow_options = SyncOptions { token: Some(narrow_token), ..SyncOptions::default() };
    let first = wide.sync(&scratch.url, "wide", &wide_options)?;
    let expected = n * (ROWS_PER_TABLE as u64 / 10);
    if first.pulled != expected {
        return Err(CliError::Invalid(format!("the wide scope's first sync pulled {} rows, not {expected}", first.pulled)));
    }
    narrow.sync(&scratch.url, "narrow", &narrow_options)?;

    // Each round opens its connection, as `tandem sync` does; the time to
    // open one is measured apart.
    let round = |store: &Store, scope: &str, options: &SyncOptions, pulled: u64| {
        round_ms(scope, pulled, || Ok(store.sync(&scratch.url, scope, options)?))
    };
    let mut idle = Vec::new();
    let mut narrow_idle = Vec::new();
    let mut one = Vec::new();
    let mut connect = Vec::new();
    for r in 0..ROUNDS as u64 {
        idle.push(round(&wide, "wide", &wide_options, 0)?);
        narrow_idle.push(round(&narrow, "narrow", &narrow_options, 0)?);
        change_one_row(&mut server, &wide_tables, r, 0, 'x')?;
        one.push(round(&wide, "wide", &wide_options, 1)?);
        let (_, took) = timed(|| Ok(remote::open(&scratch.url, None).map_err(tandem_local::LocalError::from)?))?;
        connect.push(took.as_secs_f64() * 1000.0);
    }
    let mut held = remote::open(&scratch.url, None).map_err(tandem_local::LocalError::from)?;
    let mut held_round = |pulled: u64| round_ms("wide", pulled, || Ok(wide.sync_with(held.as_mut(), "wide", &wide_options)?));
    let (held_idle, held_one) = idle_and_one_change(&mut server, &wide_tables, 3, 'y', &mut held_round)?;
    let role = GatewayRole::create(scratch)?;
    let gateway = GatewayProcess::start(&role.url())?;
    let mut through = |pulled: u64| round_ms("wide", pulled, || Ok(wide.sync(&gateway.url, "wide", &wide_options)?));
    for _ in 0..WARM_ROUNDS {
        through(0)?;
    }
    let (gateway_idle, gateway_one) = idle_and_one_change(&mut server, &wide_tables, 5, 'z', &mut through)?;
    drop(gateway);
    drop(role);
    Ok(Tables {
        tables: n,
        idle_round_ms: median(idle),
        one_change_round_ms: median(one),
        one_table_idle_round_ms: median(narrow_idle),
        connect_ms: median(connect),
        held_idle_round_ms: median(held_idle),
        held_one_change_round_ms: median(held_one),
        gateway_idle_round_ms: median(gateway_idle),
        gateway_one_change_round_ms: median(gateway_one),
    })
}

/// Tenant 1's row `10 * r + 1` of table `7 * r + offset` (wrapping), so
/// the rounds' changes spread over the scope; `mark` tells a case's edits
/// apart.
fn change_one_row(server: &mut postgres::Client, tables: &[String], r: u64, offset: u64, mark: char) -> Result<(), CliError> {
    let table = &tables[((r * 7 + offset) % tables.len() as u64) as usize];
    let id = 10 * r as i64 + 1;
    server
        .execute(&format!("UPDATE {table} SET body = body || '{mark}' WHERE id = $1"), &[&id])
        .map_err(|e| CliError::database("change one row", &e))?;
    Ok(())
}

/// [`ROUNDS`] pairs of an idle round and a round bringing one changed
/// row, timed by `round` (given the rows it should pull).
fn idle_and_one_change(
    server: &mut postgres::Client,
    tables: &[String],
    offset: u64,
    mark: char,
    round: &mut dyn FnMut(u64) -> Result<f64, CliError>,
) -> Result<(Vec<f64>, Vec<f64>), CliError> {
    let (mut idle, mut one) = (Vec::new(), Vec::new());
    for r in 0..ROUNDS as u64 {
        idle.push(round(0)?);
        change_one_row(server, tables, r, offset, mark)?;
        one.push(round(1)?);
    }
    Ok((idle, one))
}

/// Runs one round, in milliseconds, checking it pulled `pulled` rows and
/// pushed none: a round that did other work measures something else.
fn round_ms(scope: &str, pulled: u64, run: impl FnOnce() -> Result<SyncReport, CliError>) -> Result<f64, CliError> {
    let (report, took) = timed(run)?;
    if report.pulled != pulled || report.pushed != 0 {
        return Err(CliError::Invalid(format!(
            "a round of {scope} pulled {} rows and pushed {}, not {pulled} and 0",
            report.pulled, report.pushed
        )));
    }
    Ok(took.as_secs_f64() * 1000.0)
}
