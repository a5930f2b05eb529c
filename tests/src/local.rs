//! Support for tests with local files: scratch folders, and dumps of what a
//! file holds and what the server holds for a client, in one comparable form.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use postgres::Client;
use rusqlite::Connection;
use serde_json::{json, Value};
use tandem_core::schema::Schema;
use tandem_core::types::{describe_local, LocalValue, LogicalType};

use crate::{json as query_json, pull_all, TestDb};
use tandem_core::apply_result::ApplyResult;
use tandem_core::options::{ApplyOptions, SelectOptions};
use tandem_local::{PostgresRemote, Remote, RemoteError, Store, SyncOptions, SyncReport};

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A folder for a test's files, removed when the test ends.
pub struct Files {
    pub dir: PathBuf,
}

impl Files {
    pub fn new(label: &str) -> Files {
        let dir = std::env::temp_dir().join(format!("tandem-{label}-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::SeqCst)));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create a scratch folder");
        Files { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        // A failed test leaves its files for a post-mortem.
        if std::thread::panicking() {
            eprintln!("the test's files are kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A scratch database holding a test's schema and one scope, and a folder
/// for the local files that sync with it.
pub struct Scenario {
    pub db: TestDb,
    pub files: Files,
    pub scope: &'static str,
}

impl Scenario {
    /// `schema` is SQL run on the fresh database: tables, rows, provisioning.
    pub fn new(label: &str, schema: &str, scope: &'static str) -> Scenario {
        Scenario::at_version(label, None, schema, scope)
    }

    /// As [`Scenario::new`], with the extension at `version` (see
    /// [`TestDb::at_version`]).
    pub fn at_version(label: &str, version: Option<&str>, schema: &str, scope: &'static str) -> Scenario {
        let db = TestDb::at_version(label, version);
        db.connect().batch_execute(schema).expect("schema");
        Scenario { db, files: Files::new(label), scope }
    }

    pub fn server(&self) -> Client {
        self.db.connect()
    }

    pub fn store(&self, name: &str) -> Store {
        Store::open(self.files.path(name)).expect("open local file")
    }

    /// A client's token, bound to `params` by `sync_register_client`.
    pub fn register(&self, params: Value) -> String {
        let issued = query_json(&mut self.server(), "SELECT sync_register_client($1, $2)", &[&self.scope, &params]);
        issued["token"].as_str().expect("a token in the registration").to_string()
    }

    /// One `sync_run` with options as `sync_run` takes them in JSON.
    pub fn sync(&self, store: &Store, options: Value) -> SyncReport {
        let options: SyncOptions = serde_json::from_value(options).expect("sync options");
        store.sync(&self.db.url, self.scope, &options).unwrap_or_else(|e| panic!("sync failed: {e}"))
    }

    /// One `sync_run` as the client that holds `token`.
    pub fn sync_as(&self, store: &Store, token: &str) -> SyncReport {
        self.sync(store, json!({"token": token}))
    }

    /// A [`Scenario::sync`] whose upload the server applies and whose
    /// answer never arrives (the connection drops right after the apply):
    /// the file is left as a sync killed at that moment leaves it.
    pub fn sync_answer_lost(&self, store: &Store, options: Value) {
        let options: SyncOptions = serde_json::from_value(options).expect("sync options");
        let mut dropping = Interfering { drop_after_apply: true, ..Interfering::new(&self.db.url) };
        store.sync_with(&mut dropping, self.scope, &options).expect_err("the answer is lost");
    }

    /// [`Scenario::sync_answer_lost`] as the client that holds `token`.
    pub fn sync_as_answer_lost(&self, store: &Store, token: &str) {
        self.sync_answer_lost(store, json!({"token": token}))
    }
}

/// Runs SQL on a local file (a script of several statements is fine).
pub fn local(store: &Store, sql: &str) {
    store.connection().execute_batch(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// The first column of the first row of a query on a local file, as text.
pub fn local_value(store: &Store, sql: &str) -> Option<String> {
    store.connection().query_row(sql, [], |r| r.get::<_, Option<String>>(0)).ok().flatten()
}

/// An integer a query on a local file returns (a count).
pub fn local_count(store: &Store, sql: &str) -> i64 {
    store.connection().query_row(sql, [], |r| r.get(0)).unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// A value in one form for both sides: floats compared as floats, a
/// negative zero as zero.
fn canonical(ty: LogicalType, value: &Value) -> Value {
    match (ty, value) {
        (LogicalType::Float4 | LogicalType::Float8, Value::Number(n)) => json!(format!("{:?}", n.as_f64().unwrap_or_default())),
        // The one value a file cannot keep (design.md, Types): it reads 0.
        (LogicalType::Float4 | LogicalType::Float8, Value::String(s)) if s == "-0" => json!(format!("{:?}", 0.0)),
        _ => value.clone(),
    }
}

/// Table name -> sorted rows, each row as canonical JSON text.
pub type Dump = BTreeMap<String, Vec<String>>;

fn row_text(schema: &Schema, table: &str, values: &[Value]) -> String {
    let t = schema.table(table).expect("table of the schema");
    Value::Array(t.columns.iter().zip(values).map(|(c, v)| canonical(c.ty, v)).collect()).to_string()
}

/// What the server holds for a client with `params` (a full pull).
pub fn server_dump(client: &mut Client, scope: &str, params: &Value) -> Dump {
    let schema: Schema = serde_json::from_value(crate::json(client, "SELECT sync_schema($1)", &[&scope])).unwrap();
    let (changes, _) = pull_all(client, scope, None, &json!({"params": params}));
    let mut dump = Dump::new();
    for t in &schema.tables {
        dump.insert(t.name.clone(), Vec::new());
    }
    for (table, row) in changes {
        let values = row["values"].as_array().cloned().unwrap_or_default();
        dump.entry(table.clone()).or_default().push(row_text(&schema, &table, &values));
    }
    for rows in dump.values_mut() {
        rows.sort();
    }
    dump
}

/// What a local file holds for `scope`.
pub fn local_dump(conn: &Connection, scope: &str) -> Dump {
    let schema_text: String =
        conn.query_row("SELECT schema FROM tandem_scopes WHERE scope = ?1", [scope], |r| r.get(0)).expect("scope is provisioned");
    let schema: Schema = serde_json::from_str(&schema_text).unwrap();
    let mut dump = Dump::new();
    for t in &schema.tables {
        let columns = t.columns.iter().map(|c| tandem_core::ident::quote_ident(&c.name)).collect::<Vec<_>>().join(", ");
        let sql = format!("SELECT {columns} FROM {}", tandem_core::ident::quote_ident(&t.table_name().local_name()));
        let mut statement = conn.prepare(&sql).unwrap();
        let mut rows: Vec<String> = statement
            .query_map([], |row| {
                let values: Vec<Value> = t
                    .columns
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        let v = match row.get_ref(i).unwrap() {
                            rusqlite::types::ValueRef::Null => LocalValue::Null,
                            rusqlite::types::ValueRef::Integer(n) => LocalValue::Integer(n),
                            rusqlite::types::ValueRef::Real(f) => LocalValue::Real(f),
                            rusqlite::types::ValueRef::Text(s) => match std::str::from_utf8(s) {
                                Ok(text) => LocalValue::Text(text.to_string()),
                                Err(_) => LocalValue::BadText(s.to_vec()),
                            },
                            rusqlite::types::ValueRef::Blob(b) => LocalValue::Blob(b.to_vec()),
                        };
                        describe_local(c.ty, &v)
                    })
                    .collect();
                Ok(row_text(&schema, &t.name, &values))
            })
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        rows.sort();
        dump.insert(t.name.clone(), rows);
    }
    dump
}

/// Asserts a file holds exactly what the server holds for its parameters.
pub fn assert_converged(server: &mut Client, conn: &Connection, scope: &str, params: &Value) {
    let expected = server_dump(server, scope, params);
    let actual = local_dump(conn, scope);
    for (table, rows) in &expected {
        let local: std::collections::HashSet<&String> = actual.get(table).into_iter().flatten().collect();
        let server: std::collections::HashSet<&String> = rows.iter().collect();
        let mut missing: Vec<&String> = rows.iter().filter(|r| !local.contains(r)).collect();
        let mut extra: Vec<&String> = local.iter().copied().filter(|r| !server.contains(r)).collect();
        missing.truncate(20);
        extra.sort();
        extra.truncate(20);
        assert!(
            missing.is_empty() && extra.is_empty(),
            "{table} differs for {params}: missing locally {missing:?}, extra locally {extra:?}"
        );
    }
}

/// A remote that interferes at chosen points, after the server did its
/// part: the connection drops, or another program writes to the file.
pub struct Interfering {
    pub inner: PostgresRemote,
    pub drop_after_apply: bool,
    pub drop_after_select: bool,
    /// The connection drops after this many more pull batches were sent.
    pub drop_after_selects: Option<usize>,
    /// The server fails every upload (as a lock timeout would), applying
    /// nothing; the round's pull still runs.
    pub fail_applies: bool,
    /// The server applies the first upload and its answer is lost to a
    /// server error (its session terminated as it answered): the round's
    /// pull still runs.
    pub fail_after_apply: bool,
    /// The server takes this many uploads, then fails the rest as
    /// `fail_applies` does.
    pub fail_applies_after: Option<usize>,
    /// SQL another connection runs on this file after the first apply.
    pub write_after_apply: Option<(std::path::PathBuf, &'static str)>,
    /// SQL another connection runs on this file once the first pull batch
    /// arrived, before the file stores it.
    pub write_after_select: Option<(std::path::PathBuf, &'static str)>,
    /// SQL another connection runs on this file after the first verify
    /// step's answer, before the file reads its own rows.
    pub write_after_verify: Option<(std::path::PathBuf, &'static str)>,
}

impl Interfering {
    pub fn new(url: &str) -> Interfering {
        let inner = PostgresRemote::connect(url, None).unwrap();
        Interfering {
            inner,
            drop_after_apply: false,
            drop_after_select: false,
            drop_after_selects: None,
            fail_applies: false,
            fail_after_apply: false,
            fail_applies_after: None,
            write_after_apply: None,
            write_after_select: None,
            write_after_verify: None,
        }
    }
}

impl Remote for Interfering {
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
        let answer = self.inner.verify(scope, options)?;
        if let Some((file, sql)) = self.write_after_verify.take() {
            Connection::open(file).and_then(|c| c.execute_batch(sql)).expect("the other program's write");
        }
        Ok(answer)
    }
    fn select_changes(&mut self, scope: &str, since: Option<&str>, options: &SelectOptions) -> Result<String, RemoteError> {
        let changeset = self.inner.select_changes(scope, since, options)?;
        if let Some((file, sql)) = self.write_after_select.take() {
            Connection::open(file).and_then(|c| c.execute_batch(sql)).expect("the other program's write");
        }
        if let Some(left) = self.drop_after_selects.as_mut() {
            if *left == 0 {
                return Err(RemoteError::Unreachable { url: "test".into(), reason: "connection dropped mid-pull".into() });
            }
            *left -= 1;
        }
        if self.drop_after_select {
            return Err(RemoteError::Unreachable { url: "test".into(), reason: "connection dropped after the batch was sent".into() });
        }
        Ok(changeset)
    }
    fn apply_changes(&mut self, scope: &str, changeset: &str, options: &ApplyOptions) -> Result<ApplyResult, RemoteError> {
        if let Some(left) = self.fail_applies_after.as_mut() {
            if *left == 0 {
                self.fail_applies = true;
            }
            *left = left.saturating_sub(1);
        }
        if self.fail_applies {
            return Err(RemoteError::Server { sqlstate: "55P03".into(), message: "lock timeout (a test's)".into() });
        }
        let result = self.inner.apply_changes(scope, changeset, options)?;
        if let Some((file, sql)) = self.write_after_apply.take() {
            Connection::open(file).and_then(|c| c.execute_batch(sql)).expect("the other program's write");
        }
        if std::mem::take(&mut self.fail_after_apply) {
            return Err(RemoteError::Server { sqlstate: "57P01".into(), message: "terminating connection (a test's)".into() });
        }
        if self.drop_after_apply {
            return Err(RemoteError::Unreachable { url: "test".into(), reason: "connection dropped after the server applied".into() });
        }
        Ok(result)
    }
}
