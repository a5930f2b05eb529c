//! Every type of the type table of docs/design.md goes PostgreSQL -> SQLite -> PostgreSQL and
//! compares equal; encrypted files hold no plaintext and refuse wrong keys.
//! (Negative zero is the one value SQLite keeps as 0: its REAL columns store
//! integral values as integers. docs/design.md says so.)

use rusqlite::Connection;
use tandem_local::{LocalError, Store, SyncOptions};
use tandem_tests::local::Files;
use tandem_tests::{typed, TestDb};

const PROVISION: &str = "SELECT sync_provision('types', '{\"tables\": [{\"name\": \"typed\"}]}');";

const MORE_ROWS: &str = "INSERT INTO typed VALUES
 (4, 'odd', 0, 0, 0, false, '-1.5', '5e-324', '-0.000000000000000000000000000001', 0, 'x', 'x', 'x', NULL,
  'infinity', '24:00:00', '-infinity', 'infinity', '\\x00', '[]', '{}', '{{1,2},{3,4}}', 'ok', '0'),
 (5, 'floats', 1, 1, 1, true, 0.1, 0.1, 0.1, 0.10, 'a', 'a', 'a', NULL, '2024-01-01', '12:00', '2024-01-01 12:00', '2024-01-01 12:00+00',
  '\\xdeadbeef', '1', '1.5', NULL, NULL, '00:00:01');";

#[test]
fn every_type_survives_postgres_to_sqlite_to_postgres() {
    let source = TestDb::new("ltypes_src");
    let target = TestDb::new("ltypes_dst");
    let files = Files::new("ltypes");
    let mut src = source.connect();
    let mut dst = target.connect();
    for sql in [typed::TABLE, PROVISION, typed::EDGE_ROWS, MORE_ROWS] {
        src.batch_execute(sql).unwrap();
    }
    for sql in [typed::TABLE, PROVISION] {
        dst.batch_execute(sql).unwrap();
    }

    // Down from the source into one file (encrypted, to cover that path too).
    let down = Store::open_encrypted(files.path("down.db"), "k1").unwrap();
    let report = down.sync(&source.url, "types", &SyncOptions::default()).unwrap();
    assert_eq!(report.pulled, 5);
    // A second file, provisioned from the (empty) target, gets the stored
    // values copied by plain SQL, and uploads them as its own changes.
    let up = Store::open(files.path("up.db")).unwrap();
    up.sync(&target.url, "types", &SyncOptions::default()).unwrap();
    drop(down);
    let conn = up.connection();
    conn.execute_batch(&format!(
        "ATTACH DATABASE '{}' AS down KEY 'k1'; INSERT INTO typed SELECT * FROM down.typed; DETACH DATABASE down;",
        files.path("down.db").display()
    ))
    .unwrap();
    let report = up.sync(&target.url, "types", &SyncOptions::default()).unwrap();
    assert_eq!((report.pushed, report.conflicts.len()), (5, 0), "{report:?}");
    let (a, b) = (typed::dump(&mut src), typed::dump(&mut dst));
    assert_eq!(a.len(), 5);
    for (left, right) in a.iter().zip(&b) {
        assert_eq!(left, right);
    }
}

#[test]
fn an_encrypted_file_holds_no_plaintext_and_refuses_a_wrong_key() {
    let db = TestDb::new("cipher");
    let files = Files::new("cipher");
    db.connect()
        .batch_execute(
            "CREATE TABLE secrets (id int PRIMARY KEY, body text);
             INSERT INTO secrets VALUES (1, 'PLAINTEXT-MARKER-from-the-server');
             SELECT sync_provision('s', '{\"tables\": [{\"name\": \"secrets\"}]}');",
        )
        .unwrap();
    let path = files.path("secret.db");
    {
        let store = Store::open_encrypted(&path, "right key").unwrap();
        store.sync(&db.url, "s", &SyncOptions::default()).unwrap();
        store.connection().execute("INSERT INTO secrets VALUES (2, 'PLAINTEXT-MARKER-local')", []).unwrap();
        store.connection().execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").unwrap();
    }
    for suffix in ["", "-wal"] {
        let bytes = std::fs::read(format!("{}{suffix}", path.display())).unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains("PLAINTEXT-MARKER"), "plaintext in {suffix:?}");
        assert!(!text.contains("CREATE TABLE"), "schema in plaintext in {suffix:?}");
    }
    match Store::open_encrypted(&path, "wrong key") {
        Err(LocalError::WrongKey { .. }) => {}
        other => panic!("a wrong key must fail clearly, got {:?}", other.map(|_| ())),
    }
    assert!(matches!(Store::open(&path), Err(LocalError::WrongKey { .. })), "no key at all fails the same way");
    assert!(Connection::open(&path).unwrap().query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get::<_, i64>(0)).is_err());

    // Re-encrypt, and sync still works with the new key only.
    Store::open_encrypted(&path, "right key").unwrap().rekey("new key").unwrap();
    assert!(matches!(Store::open_encrypted(&path, "right key"), Err(LocalError::WrongKey { .. })));
    let store = Store::open_encrypted(&path, "new key").unwrap();
    let report = store.sync(&db.url, "s", &SyncOptions::default()).unwrap();
    assert_eq!(report.pushed, 1);
    let body: String = db.connect().query_one("SELECT body FROM secrets WHERE id = 2", &[]).unwrap().get(0);
    assert_eq!(body, "PLAINTEXT-MARKER-local");

    // A plain file becomes an encrypted one, its sync state with it.
    let plain = files.path("plain.db");
    {
        let store = Store::open(&plain).unwrap();
        store.sync(&db.url, "s", &SyncOptions::default()).unwrap();
        store.connection().execute("INSERT INTO secrets VALUES (3, 'PLAINTEXT-MARKER-unsent')", []).unwrap();
        let store = store.rekey("fresh key").unwrap();
        assert_eq!(store.connection().query_row("SELECT count(*) FROM secrets", [], |r| r.get::<_, i64>(0)).unwrap(), 3);
    }
    let bytes = std::fs::read(&plain).unwrap();
    assert!(!String::from_utf8_lossy(&bytes).contains("PLAINTEXT-MARKER"), "encrypted on disk");
    assert!(matches!(Store::open(&plain), Err(LocalError::WrongKey { .. })));
    let store = Store::open_encrypted(&plain, "fresh key").unwrap();
    let report = store.sync(&db.url, "s", &SyncOptions::default()).unwrap();
    assert_eq!((report.pushed, report.pulled), (1, 0), "the unsent change went up, nothing came down again: {report:?}");
}

/// SQLite stores whatever a program writes, in any column: a value of
/// another storage class than its column's type takes is refused on the
/// device, named and kept in `tandem_rejected`, never sent in a form the
/// file does not hold.
#[test]
fn a_local_value_of_the_wrong_kind_is_refused_on_the_device_never_converted() {
    let db = TestDb::new("wrong_kind");
    db.connect()
        .batch_execute(
            "CREATE TABLE things (id bigint PRIMARY KEY, name text, n int, photo bytea, at timestamptz);
             INSERT INTO things VALUES (1, 'one', 1, '\\x01', NULL);
             SELECT sync_provision('s', '{\"tables\": [{\"name\": \"things\"}]}');",
        )
        .unwrap();
    let files = Files::new("wrong_kind");
    let store = Store::open(files.path("a.db")).unwrap();
    store.sync(&db.url, "s", &SyncOptions::default()).unwrap();
    let conn = store.connection();
    conn.execute_batch(
        "INSERT INTO things (id, name) VALUES (10, x'68656c6c6f');   -- a blob in a text column
         INSERT INTO things (id, name) VALUES (11, CAST(x'ff61' AS TEXT)); -- text that is not UTF-8
         INSERT INTO things (id, n) VALUES (12, 'abc');               -- text in an integer column
         INSERT INTO things (id, photo) VALUES (13, 'abcd');          -- text (valid base64) in a blob column
         INSERT INTO things (id, name, n) VALUES (14, 'fine', 4);",
    )
    .unwrap();
    let report = store.sync(&db.url, "s", &SyncOptions::default()).unwrap();
    assert_eq!(report.pushed, 1, "only the good row goes up: {report:?}");
    let mut refused: Vec<(i64, String)> = report.rejected.iter().map(|r| (r.key[0].as_i64().unwrap(), r.reason.clone())).collect();
    refused.sort();
    let ids: Vec<i64> = refused.iter().map(|r| r.0).collect();
    assert_eq!(ids, [10, 11, 12, 13], "{refused:?}");
    for (id, reason) in &refused {
        let column = match id {
            10 | 11 => "name",
            12 => "n",
            _ => "photo",
        };
        assert!(reason.contains(&format!("column {column}")), "row {id}: {reason}");
    }
    let kept: i64 = conn.query_row("SELECT count(*) FROM tandem_rejected", [], |r| r.get(0)).unwrap();
    assert_eq!(kept, 4, "each refused change is kept");
    let mut server = db.connect();
    let on_server: i64 = server.query_one("SELECT count(*) FROM things WHERE id BETWEEN 10 AND 13", &[]).unwrap().get(0);
    assert_eq!(on_server, 0, "nothing of them reached the server");
    let report = store.sync(&db.url, "s", &SyncOptions::default()).unwrap();
    assert!(report.rejected.is_empty() && report.pushed == 0, "nothing is left to refuse: {report:?}");
}

/// Helper 78: a time finer than microseconds went up and came back
/// rounded, where a value storing would round is refused by its column.
/// Zeros past the sixth decimal place are the same instant, and go up.
#[test]
fn a_time_finer_than_microseconds_is_refused_not_rounded() {
    let schema = r#"
CREATE TABLE events (id int PRIMARY KEY, at timestamptz, during time);
SELECT sync_provision('s', '{"tables": [{"name": "events"}]}');
"#;
    let s = tandem_tests::local::Scenario::new("finer_than_microseconds", schema, "s");
    let file = s.store("a.db");
    s.sync(&file, serde_json::json!({}));
    tandem_tests::local::local(
        &file,
        "INSERT INTO events VALUES (1, '2024-02-02T10:00:00.0000009Z', NULL), (2, NULL, '01:02:03.4567891'),
                                   (3, '2024-02-02T10:00:00.1234560000Z', '01:02:03.4560000')",
    );
    let report = s.sync(&file, serde_json::json!({}));
    let mut refused: Vec<String> = report.rejected.iter().map(|r| r.key[0].to_string()).collect();
    refused.sort();
    assert_eq!(refused, ["1", "2"], "{report:?}");
    assert!(report.rejected.iter().all(|r| r.reason.contains("microseconds")), "{report:?}");
    let kept: String = s.server().query_one("SELECT string_agg(id || ' ' || at || ' ' || during, ';') FROM events", &[]).unwrap().get(0);
    assert_eq!(kept, "3 2024-02-02 10:00:00.123456+00 01:02:03.456");
}
