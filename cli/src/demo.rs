//! `tandem demo`: the main job, end to end. A demo database on the running
//! PostgreSQL with two tenants, two local SQLite files (one encrypted), a
//! full round trip with edits on every side and a real conflict, and a
//! report of what moved and how the conflict ended.

use crate::stdout::say;
use std::path::{Path, PathBuf};

use postgres::{Client, NoTls};
use serde_json::{json, Value};
use tandem_core::dsn::{redacted, with_database};
use tandem_local::{Store, SyncOptions, SyncReport};

use crate::error::CliError;
use crate::DEFAULT_DATABASE_URL;

#[derive(clap::Args)]
pub struct Args {
    /// PostgreSQL server to create the demo database on.
    #[arg(long, env = "TANDEM_DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    database: String,
    /// Folder for the local files (default: a new temporary folder).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Keep the demo database and files afterwards, to look around.
    #[arg(long)]
    keep: bool,
}

const DEMO_DB: &str = "tandem_demo";
const GLOBEX_KEY: &str = "demo key: keep it secret";

const SCHEMA: &str = "
CREATE TABLE customers (id bigint PRIMARY KEY, tenant_id int NOT NULL, name text NOT NULL, email text);
CREATE TABLE orders (id bigint PRIMARY KEY, tenant_id int NOT NULL, customer_id bigint REFERENCES customers,
                     total numeric(12,2) NOT NULL, placed_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE order_items (order_id bigint REFERENCES orders ON DELETE CASCADE, line int,
                          sku text NOT NULL, qty int NOT NULL, PRIMARY KEY (order_id, line));
CREATE TABLE currencies (code text PRIMARY KEY, rate float8 NOT NULL);
INSERT INTO customers VALUES (1, 1, 'Ada Lovelace', 'ada@acme.test'), (2, 1, 'Grace Hopper', 'grace@acme.test'),
                             (3, 2, 'Linus Torvalds', 'linus@globex.test');
INSERT INTO orders VALUES (10, 1, 1, 120.50, '2024-05-01T09:00:00Z'), (11, 1, 2, 42.00, '2024-05-02T10:30:00Z'),
                          (20, 2, 3, 999.99, '2024-05-03T12:00:00Z');
INSERT INTO order_items VALUES (10, 1, 'ENGINE', 1), (10, 2, 'PUNCHCARD', 500), (11, 1, 'COBOL-BOOK', 2),
                               (20, 1, 'KERNEL', 1), (20, 2, 'PENGUIN', 3);
INSERT INTO currencies VALUES ('EUR', 1.0), ('USD', 1.08), ('GBP', 0.86);
SELECT sync_provision('crm', '{\"tables\": [
  {\"name\": \"customers\", \"filter\": {\"tenant_id\": \"tenant\"}},
  {\"name\": \"orders\", \"filter\": {\"tenant_id\": \"tenant\"}},
  {\"name\": \"order_items\", \"filter\": {\"via\": \"orders\", \"on\": {\"order_id\": \"id\"}}},
  {\"name\": \"currencies\", \"direction\": \"download_only\"}]}');
";

fn step(text: &str) {
    say!("\n== {text}");
}

fn show(name: &str, report: &SyncReport) {
    say!(
        "   {name}: {} change(s) up, {} down, {} conflict(s){}",
        report.pushed,
        report.pulled,
        report.conflicts.len(),
        if report.provisioned { ", tables created from the server's schema" } else { "" }
    );
    for c in &report.conflicts {
        say!(
            "   conflict on {} {}: {} -> {}; kept: {}, logged: {}",
            c.table,
            Value::Array(c.key.clone()),
            c.kind.as_str(),
            c.decision.as_str(),
            c.row.as_ref().and_then(|r| r.get("name")).map(|v| v.to_string()).unwrap_or_default(),
            c.client_row.as_ref().and_then(|r| r.get("name")).map(|v| v.to_string()).unwrap_or_default(),
        );
    }
}

/// Rows of a table in a local file, as sorted text lines.
fn local_rows(store: &Store, table: &str, columns: &str) -> Result<Vec<String>, CliError> {
    let conn = store.connection();
    let mut statement = conn.prepare(&format!("SELECT json_array({columns}) FROM {table} ORDER BY 1"))?;
    let rows = statement.query_map([], |r| r.get::<_, String>(0))?.collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// The same rows on the server, for one tenant.
fn server_rows(client: &mut Client, sql: &str, tenant: i32) -> Result<Vec<String>, CliError> {
    let rows = client.query(sql, &[&tenant]).map_err(|e| CliError::database("read the server's rows", &e))?;
    let mut out: Vec<String> = rows.iter().map(|r| r.get::<_, String>(0)).collect();
    out.sort();
    Ok(out)
}

fn check_tenant(store: &Store, client: &mut Client, tenant: i32, name: &str) -> Result<(), CliError> {
    let checks = [
        ("customers", "id, tenant_id, name, email", "SELECT json_build_array(id, tenant_id, name, email)::text FROM customers WHERE tenant_id = $1"),
        ("orders", "id, tenant_id, customer_id, total", "SELECT json_build_array(id, tenant_id, customer_id, total::text)::text FROM orders WHERE tenant_id = $1"),
        ("order_items", "order_id, line, sku, qty", "SELECT json_build_array(i.order_id, i.line, i.sku, i.qty)::text FROM order_items i JOIN orders o ON o.id = i.order_id WHERE o.tenant_id = $1"),
        ("currencies", "code, rate", "SELECT json_build_array(code, rate)::text FROM currencies WHERE $1::int IS NOT NULL"),
    ];
    for (table, columns, sql) in checks {
        let mut local: Vec<String> = local_rows(store, table, columns)?.iter().map(|r| normalize(r)).collect();
        local.sort();
        let server: Vec<String> = server_rows(client, sql, tenant)?.iter().map(|r| normalize(r)).collect();
        if local != server {
            return Err(CliError::Invalid(format!("{name}: {table} differs from the server\n  local:  {local:?}\n  server: {server:?}")));
        }
    }
    Ok(())
}

/// JSON text in one canonical form (SQLite's REAL 1.0 and PostgreSQL's
/// float8 1 are the same value).
fn normalize(text: &str) -> String {
    fn numbers_as_floats(value: Value) -> Value {
        match value {
            Value::Number(n) => n.as_f64().and_then(serde_json::Number::from_f64).map(Value::Number).unwrap_or(Value::Number(n)),
            Value::Array(items) => Value::Array(items.into_iter().map(numbers_as_floats).collect()),
            other => other,
        }
    }
    serde_json::from_str::<Value>(text).map(|v| numbers_as_floats(v).to_string()).unwrap_or_else(|_| text.to_string())
}

pub fn run(args: &Args) -> Result<(), CliError> {
    let admin_url = &args.database;
    let mut admin = Client::connect(admin_url, NoTls).map_err(|e| CliError::connect(admin_url, &e))?;
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {DEMO_DB} WITH (FORCE)"))
        .and_then(|_| admin.batch_execute(&format!("CREATE DATABASE {DEMO_DB}")))
        .map_err(|e| CliError::database("create the demo database", &e))?;
    let url = with_database(admin_url, DEMO_DB);
    let result = demo(&url, args);
    if !args.keep {
        let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {DEMO_DB} WITH (FORCE)"));
    }
    result
}

fn demo(url: &str, args: &Args) -> Result<(), CliError> {
    let mut server = Client::connect(url, NoTls).map_err(|e| CliError::connect(url, &e))?;
    server.batch_execute("CREATE EXTENSION tandem").map_err(|_| CliError::ExtensionMissing { url: redacted(&args.database) })?;
    step(&format!("server {}: two tenants' customers, orders and items, and shared currencies", redacted(url)));
    server.batch_execute(SCHEMA).map_err(|e| CliError::database("seed the demo", &e))?;
    say!("   scope \"crm\": customers and orders filtered by tenant, items through their order, currencies download-only");

    let temporary = args.dir.is_none();
    let dir = match &args.dir {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(format!("tandem-demo-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir).map_err(|e| CliError::Invalid(format!("cannot create {}: {e}", dir.display())))?;
    let result = round_trip(&mut server, url, &dir);
    if temporary && !args.keep {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        say!("\nfiles kept in {} (globex.db is encrypted with key {GLOBEX_KEY:?})", dir.display());
    }
    result
}

fn round_trip(server: &mut Client, url: &str, dir: &Path) -> Result<(), CliError> {
    let acme_path = dir.join("acme.db");
    let globex_path = dir.join("globex.db");
    for path in [&acme_path, &globex_path] {
        Store::remove(path);
    }
    let acme = Store::open(&acme_path)?;
    let globex = Store::open_encrypted(&globex_path, GLOBEX_KEY)?;
    // Each device holds a token bound to its tenant; the server takes the
    // tenant from the token, never from the device.
    let mut token_for = |tenant: i64| -> Result<SyncOptions, CliError> {
        let row = server
            .query_one("SELECT sync_register_client('crm', $1)->>'token'", &[&json!({"tenant": tenant})])
            .map_err(|e| CliError::database("register a device", &e))?;
        Ok(SyncOptions { token: Some(row.get(0)), ..SyncOptions::default() })
    };
    let (acme_token, globex_token) = (token_for(1)?, token_for(2)?);

    step("first sync: each file gets only its tenant's rows (each device holds a token bound to its tenant)");
    let a = acme.sync(url, "crm", &acme_token)?;
    show("acme.db   (tenant 1)", &a);
    let g = globex.sync(url, "crm", &globex_token)?;
    show("globex.db (tenant 2, encrypted)", &g);
    let mut down = a.pulled + g.pulled;

    step("offline edits on both sides, one of them on the same row");
    acme.connection().execute_batch(
        "UPDATE customers SET name = 'Ada King, Countess of Lovelace' WHERE id = 1;
         INSERT INTO orders VALUES (12, 1, 2, 7.25, '2024-06-01T08:00:00Z');
         INSERT INTO order_items VALUES (12, 1, 'NANOSECOND-WIRE', 10);",
    )?;
    say!("   acme.db:   renames customer 1, adds order 12 with an item");
    globex.connection().execute_batch("DELETE FROM order_items WHERE order_id = 20 AND line = 2;")?;
    say!("   globex.db: removes an item of order 20");
    server
        .batch_execute(
            "UPDATE customers SET name = 'Augusta Ada Lovelace' WHERE id = 1;
             UPDATE currencies SET rate = 1.09 WHERE code = 'USD';
             INSERT INTO customers VALUES (4, 2, 'Ken Thompson', 'ken@globex.test');",
        )
        .map_err(|e| CliError::database("edit on the server", &e))?;
    say!("   server:    renames customer 1 too, changes the USD rate, adds a Globex customer");

    step("second sync: changes cross both ways; the server's policy settles the conflict");
    let a = acme.sync(url, "crm", &acme_token)?;
    show("acme.db  ", &a);
    let g = globex.sync(url, "crm", &globex_token)?;
    show("globex.db", &g);
    down += a.pulled + g.pulled;
    let up = a.pushed + g.pushed;

    step("the losing version is kept in the server's conflict log");
    for row in server
        .query("SELECT table_name, key::text, kind, decision, client_row->>'name', server_row->>'name' FROM tandem.conflicts", &[])
        .map_err(|e| CliError::database("read the conflict log", &e))?
    {
        say!(
            "   {} {}: {} -> {}; device wrote {:?}, server had {:?}",
            row.get::<_, String>(0),
            row.get::<_, String>(1),
            row.get::<_, String>(2),
            row.get::<_, String>(3),
            row.get::<_, Option<String>>(4).unwrap_or_default(),
            row.get::<_, Option<String>>(5).unwrap_or_default()
        );
    }

    step("check: each file holds exactly its tenant's rows as the server has them");
    check_tenant(&acme, server, 1, "acme.db")?;
    say!("   acme.db   = tenant 1 on the server");
    check_tenant(&globex, server, 2, "globex.db")?;
    say!("   globex.db = tenant 2 on the server (no Acme row in it)");
    say!("\ndone: {down} row(s) down, {up} change(s) up, 1 conflict settled by server_wins and logged");
    Ok(())
}
