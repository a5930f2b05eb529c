//! Names as SQLite sees them: it ignores case and has no schemas, so server
//! names that would meet in one local name are refused when the scope is
//! provisioned, Tandem's names stay out of the user's, and key columns may
//! be called anything, even what Tandem calls its own columns.

use serde_json::json;
use tandem_tests::local::{assert_converged, local, local_count, Scenario};
use tandem_tests::{describe, TestDb};

fn provision_error(db: &TestDb, schema: &str, setup: serde_json::Value) -> String {
    let mut client = db.connect();
    client.batch_execute(schema).unwrap();
    let error = client.query_one("SELECT sync_provision('s', $1)", &[&setup]).unwrap_err();
    describe(&error)
}

#[test]
fn names_that_meet_in_sqlite_are_refused_when_the_scope_is_provisioned() {
    let cases = [
        (
            r#"CREATE TABLE "Orders" (id int PRIMARY KEY); CREATE TABLE orders (id int PRIMARY KEY);"#,
            json!({"tables": [{"name": "\"Orders\""}, {"name": "orders"}]}),
            "same name",
        ),
        (
            r#"CREATE SCHEMA sales; CREATE TABLE sales.items (id int PRIMARY KEY); CREATE TABLE public."sales.items" (id int PRIMARY KEY);"#,
            json!({"tables": [{"name": "sales.items"}, {"name": "public.\"sales.items\""}]}),
            "same name",
        ),
        ("CREATE TABLE tandem_things (id int PRIMARY KEY);", json!({"tables": [{"name": "tandem_things"}]}), "tandem_"),
        (r#"CREATE TABLE "SQLite_stat" (id int PRIMARY KEY);"#, json!({"tables": [{"name": "\"SQLite_stat\""}]}), "sqlite_"),
        (
            r#"CREATE TABLE people (id int PRIMARY KEY, "Name" text, name text);"#,
            json!({"tables": [{"name": "people"}]}),
            "\"Name\" and \"name\"",
        ),
    ];
    for (schema, setup, needle) in cases {
        let db = TestDb::new("names");
        let error = provision_error(&db, schema, setup.clone());
        assert!(error.starts_with("22023") && error.contains(needle), "{setup}: {error}");
    }
}

#[test]
fn key_columns_named_like_tandems_own_columns_sync() {
    let schema = r#"
CREATE TABLE ledger (seq bigint, version int, note text, PRIMARY KEY (seq, version));
INSERT INTO ledger VALUES (1, 1, 'first'), (1, 2, 'second');
SELECT sync_provision('s', '{"tables": [{"name": "ledger"}]}');
"#;
    let s = Scenario::new("key_names", schema, "s");
    let file = s.store("a.db");
    s.sync(&file, json!({}));
    assert_eq!(local_count(&file, "SELECT count(*) FROM ledger"), 2);
    local(&file, "UPDATE ledger SET note = 'edited' WHERE seq = 1 AND version = 2; INSERT INTO ledger VALUES (2, 1, 'new')");
    let report = s.sync(&file, json!({}));
    assert_eq!(report.pushed, 2, "{report:?}");
    assert_converged(&mut s.server(), file.connection(), "s", &json!({}));
}

/// A program's own table under a name of Tandem's bookkeeping
/// (`tandem_scopes`) is refused when the file is opened, before anything
/// is written to it (helper 103: Tandem added its columns to the
/// program's table, then failed on it).
#[test]
fn a_programs_own_table_named_like_tandems_bookkeeping_is_left_alone() {
    let files = tandem_tests::local::Files::new("squatted");
    let path = files.path("app.db");
    let program = rusqlite::Connection::open(&path).unwrap();
    program.execute_batch("CREATE TABLE tandem_scopes (z TEXT); INSERT INTO tandem_scopes VALUES ('evil');").unwrap();
    let error = tandem_local::Store::open(&path).err().expect("refused").to_string();
    assert!(error.contains("tandem_scopes") && error.contains("rename"), "{error}");
    let columns: i64 = program.query_row("SELECT count(*) FROM pragma_table_info('tandem_scopes')", [], |r| r.get(0)).unwrap();
    let tables: i64 = program.query_row("SELECT count(*) FROM sqlite_master WHERE type = 'table'", [], |r| r.get(0)).unwrap();
    assert_eq!((columns, tables), (1, 1), "the program's table is as it made it, and nothing was added beside it");
}
