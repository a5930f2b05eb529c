//! Support for Tandem's end-to-end tests: each test gets a database of its
//! own on the PostgreSQL at `TANDEM_TEST_DATABASE_URL` (default: the local
//! server), with the extension created, dropped when the test ends; and an
//! HTTPS gateway in the test's process (`gateway`).

pub mod certificates;
pub mod cluster;
pub mod conformance;
pub mod gateway;
pub mod local;
pub mod role;
pub mod typed;

use std::sync::atomic::{AtomicUsize, Ordering};

use postgres::{Client, NoTls};
use serde_json::Value;
use tandem_core::dsn::with_database;

/// Where tests create their databases.
pub fn server_url() -> String {
    std::env::var("TANDEM_TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A scratch database with `CREATE EXTENSION tandem`, dropped on drop.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    pub fn new(label: &str) -> TestDb {
        TestDb::at_version(label, None)
    }

    /// With the extension at `version` (an upgrade test's previous
    /// release), or at its default version.
    pub fn at_version(label: &str, version: Option<&str>) -> TestDb {
        let db = TestDb::bare(label);
        db.connect()
            .batch_execute(&match version {
                Some(version) => format!("CREATE EXTENSION tandem VERSION '{version}'"),
                None => "CREATE EXTENSION tandem".into(),
            })
            .expect("CREATE EXTENSION tandem failed: install it first with `make install`");
        db
    }

    /// An empty database, without the extension (a restore's target).
    pub fn bare(label: &str) -> TestDb {
        let name = format!("tandem_t_{label}_{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::SeqCst));
        let mut admin =
            Client::connect(&server_url(), NoTls).unwrap_or_else(|e| panic!("cannot reach PostgreSQL at {}: {e}", server_url()));
        admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name}")).expect("drop old database");
        admin.batch_execute(&format!("CREATE DATABASE {name}")).expect("create database");
        TestDb { url: with_database(&server_url(), &name), name }
    }

    pub fn connect(&self) -> Client {
        Client::connect(&self.url, NoTls).expect("connect to test database")
    }

    /// A connection, and the messages (NOTICE, WARNING) the server sends it.
    pub fn connect_hearing(&self) -> (Client, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
        let notices = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let heard = notices.clone();
        let mut config: postgres::Config = self.url.parse().expect("a test database's URL");
        config.notice_callback(move |notice| heard.lock().unwrap().push(notice.message().to_string()));
        (config.connect(NoTls).expect("connect to test database"), notices)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Ok(mut admin) = Client::connect(&server_url(), NoTls) {
            let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
        }
    }
}

/// An error with PostgreSQL's SQLSTATE, message and detail when it has them.
pub fn describe(error: &postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{} {} {}", db.code().code(), db.message(), db.detail().unwrap_or_default()),
        None => error.to_string(),
    }
}

/// A generated statement's values, for the postgres driver.
pub fn bound(params: &[tandem_core::sql::query::Param]) -> Vec<Box<dyn postgres::types::ToSql + Sync>> {
    use tandem_core::sql::query::Param;
    params
        .iter()
        .map(|param| -> Box<dyn postgres::types::ToSql + Sync> {
            match param.clone() {
                Param::Text(text) => Box::new(text),
                Param::Int8(value) => Box::new(value),
                Param::Int4(value) => Box::new(value),
                Param::Bool(value) => Box::new(value),
                Param::TextArray(values) => Box::new(values),
                Param::Int4Array(values) => Box::new(values),
            }
        })
        .collect()
}

/// Runs a query returning one jsonb value.
pub fn json(client: &mut Client, sql: &str, params: &[&(dyn postgres::types::ToSql + Sync)]) -> Value {
    let row = client.query_one(sql, params).unwrap_or_else(|e| panic!("{sql}: {}", describe(&e)));
    row.get::<_, Value>(0)
}

/// Pulls with `options`, following batches until the pull is complete;
/// returns every row change and the final watermark.
pub fn pull_all(client: &mut Client, scope: &str, since: Option<&str>, options: &Value) -> (Vec<(String, Value)>, String) {
    let mut since = since.map(str::to_string);
    let mut changes = Vec::new();
    loop {
        let changeset = json(client, "SELECT sync_select_changes($1, $2, $3)", &[&scope, &since, options]);
        for table in changeset["tables"].as_array().into_iter().flatten() {
            for row in table["rows"].as_array().into_iter().flatten() {
                changes.push((table["name"].as_str().unwrap_or_default().to_string(), row.clone()));
            }
        }
        since = changeset["watermark"].as_str().map(str::to_string);
        if changeset["has_more"] != Value::Bool(true) {
            return (changes, since.unwrap_or_default());
        }
    }
}
