//! A server database restored from `pg_dump` into a new database of the
//! same cluster: its tables come back under new oids, and Tandem must find
//! them there, or changes to a partition made after the restore would
//! never be tracked and devices would silently miss them. The copy is
//! another server: a device that syncs with it pulls its partition again,
//! and is refused by the original, which went its own way, until rebound.
//! A database restored into another cluster, or taken back in time, makes
//! its devices pull again too.

use std::process::Command;

use serde_json::json;
use tandem_local::{Store, SyncOptions};
use tandem_tests::local::{assert_converged, local, Scenario};
use tandem_tests::TestDb;

const PAYMENTS: &str = r#"
CREATE TABLE payments (id int, tenant_id int NOT NULL, paid date NOT NULL, PRIMARY KEY (id, paid)) PARTITION BY RANGE (paid);
CREATE TABLE payments_2024 PARTITION OF payments FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
INSERT INTO payments VALUES (1, 1, '2024-03-01'), (2, 2, '2024-04-01');
SELECT sync_provision('s', '{"tables": [{"name": "payments", "filter": {"tenant_id": "tenant"}}]}');
"#;

fn run(program: &str, args: &[&str]) {
    let output = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(output.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&output.stderr));
}

#[test]
fn a_database_restored_from_a_dump_tracks_its_tables_under_their_new_oids() {
    let s = Scenario::new("restore", PAYMENTS, "s");
    let token = s.register(json!({"tenant": 1}));
    let file = s.store("a.db");
    s.sync_as(&file, &token);

    let dump = s.files.path("server.dump");
    let dump = dump.to_str().expect("a UTF-8 path");
    run("pg_dump", &["--format=custom", "--file", dump, "--dbname", &s.db.url]);
    let restored = TestDb::bare("restored");
    run("pg_restore", &["--exit-on-error", "--dbname", &restored.url, dump]);
    let mut server = restored.connect();
    let stale: i64 = server
        .query_one("SELECT count(*) FROM tandem.scope_tables t WHERE NOT EXISTS (SELECT FROM pg_class c WHERE c.oid = t.relid)", &[])
        .unwrap()
        .get(0);
    assert_eq!(stale, 0, "every tracked table is found in the restored database");

    // A partition made after the restore is followed: its rows reach the device.
    server
        .batch_execute(
            "CREATE TABLE payments_2025 PARTITION OF payments FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
             INSERT INTO payments_2025 VALUES (3, 1, '2025-02-01');
             INSERT INTO payments VALUES (4, 1, '2025-03-01');",
        )
        .unwrap();
    let options = SyncOptions { token: Some(token), ..SyncOptions::default() };
    let report = file.sync(&restored.url, "s", &options).unwrap_or_else(|e| panic!("sync with the restored database: {e}"));
    assert!(report.resynced && report.pulled == 3, "the copy's partition again, the new rows in it: {report:?}");
    assert_converged(&mut server, file.connection(), "s", &json!({"tenant": 1}));
    s.server().batch_execute("INSERT INTO payments VALUES (7, 1, '2024-07-01')").unwrap();
    let error = file.sync(&s.db.url, "s", &options).unwrap_err().to_string();
    assert!(error.contains("--rebind"), "the original is another server now: {error}");
}

#[test]
fn a_watermark_from_the_future_means_the_server_went_back_in_time_and_the_device_pulls_again() {
    let s = Scenario::new("rewound", PAYMENTS, "s");
    let token = s.register(json!({"tenant": 1}));
    let file = s.store("a.db");
    s.sync_as(&file, &token);
    // What a device holds after the server was restored from a physical
    // backup taken before its last pull: a watermark the server's
    // transactions have not reached.
    tandem_tests::local::local(&file, "UPDATE tandem_scopes SET watermark = '99999999:99999999:'");
    let mut server = s.server();
    let error = server
        .query_one("SELECT sync_select_changes('s', '99999999:99999999:', $1)", &[&json!({"params": {"tenant": 1}})])
        .map(|_| ())
        .unwrap_err();
    assert!(tandem_tests::describe(&error).starts_with("55000"), "{}", tandem_tests::describe(&error));
    server.batch_execute("INSERT INTO payments VALUES (8, 1, '2024-08-01')").unwrap();
    let report = s.sync_as(&file, &token);
    assert!(report.resynced, "{report:?}");
    assert_converged(&mut server, file.connection(), "s", &json!({"tenant": 1}));
}

#[test]
fn a_database_restored_into_another_cluster_restamps_its_tracking_and_devices_pull_again() {
    let s = Scenario::new("moved", PAYMENTS, "s");
    let token = s.register(json!({"tenant": 1}));
    let file = s.store("a.db");
    s.sync_as(&file, &token);
    tandem_tests::local::local(&file, "UPDATE payments SET tenant_id = 1 WHERE id = 1; INSERT INTO payments VALUES (5, 1, '2024-06-01')");
    let mut server = s.server();
    let (old_id, track): (String, String) = {
        let row = server
            .query_one("SELECT server_id::text, format('tandem.track_%s', (SELECT id FROM tandem.scope_tables)) FROM tandem.server", &[])
            .unwrap();
        (row.get(0), row.get(1))
    };
    // What a restore into another cluster looks like from inside: another
    // system identifier, and stamps counted elsewhere, here far ahead of
    // this cluster's transactions, which no snapshot here would see yet.
    server
        .batch_execute(&format!(
            "INSERT INTO payments VALUES (6, 1, '2024-07-01');
             UPDATE tandem.server SET system_identifier = system_identifier + 1;
             UPDATE {track} SET tandem_stamp = ((pg_current_xact_id()::text::bigint + 1000000)::text)::xid8;"
        ))
        .unwrap();

    let report = s.sync_as(&file, &token);
    assert!(report.resynced, "the device pulls its partition again, unasked: {report:?}");
    assert_eq!(report.pushed, 1, "its unsent insert goes up: {report:?}");
    assert_converged(&mut server, file.connection(), "s", &json!({"tenant": 1}));
    let (new_id, moved_from): (String, Vec<String>) = {
        let row = server.query_one("SELECT server_id::text, moved_from::text[] FROM tandem.server", &[]).unwrap();
        (row.get(0), row.get(1))
    };
    assert_ne!(new_id, old_id);
    assert_eq!(moved_from, [old_id]);
    let future: i64 =
        server.query_one(&format!("SELECT count(*) FROM {track} WHERE tandem_stamp > pg_current_xact_id()"), &[]).unwrap().get(0);
    assert_eq!(future, 0, "no stamp is left from the other count");
    // A later round is an ordinary one.
    let report = s.sync_as(&file, &token);
    assert!(!report.resynced && report.pulled == 0, "{report:?}");
}

#[test]
fn a_dump_restored_over_the_same_database_makes_the_devices_that_pulled_since_pull_again() {
    // (pg_restore --clean cannot drop a partitioned table's inherited keys,
    // whatever syncs it: a plain table here.)
    let schema = r#"
        CREATE TABLE notes (id int PRIMARY KEY, tenant_id int NOT NULL);
        INSERT INTO notes VALUES (1, 1), (2, 2);
        SELECT sync_provision('s', '{"tables": [{"name": "notes", "filter": {"tenant_id": "tenant"}}]}');
    "#;
    let s = Scenario::new("restored_over", schema, "s");
    let token = s.register(json!({"tenant": 1}));
    let file = s.store("a.db");
    s.sync_as(&file, &token);
    let dump = s.files.path("before.dump");
    let dump = dump.to_str().expect("a UTF-8 path");
    run("pg_dump", &["--format=custom", "--file", dump, "--dbname", &s.db.url]);
    s.server().batch_execute("INSERT INTO notes VALUES (5, 1)").unwrap();
    assert_eq!(s.sync_as(&file, &token).pulled, 1);

    // The database goes back to the dump: row 5 is gone, and the device's
    // watermark is beyond anything the restored server gave it.
    run("pg_restore", &["--clean", "--if-exists", "--single-transaction", "--exit-on-error", "--dbname", &s.db.url, dump]);
    let mut server = s.server();
    server.batch_execute("INSERT INTO notes VALUES (6, 1)").unwrap();
    let report = s.sync_as(&file, &token);
    assert!(report.resynced, "{report:?}");
    assert_converged(&mut server, file.connection(), "s", &json!({"tenant": 1}));
}

/// A file whose first sync came after a dump of the server, holding what
/// the dump's restore over the same database will undo (an update and an
/// insert it pulled).
struct FirstSeenAfterTheDump {
    s: Scenario,
    token: String,
    file: Store,
    dump: String,
}

impl FirstSeenAfterTheDump {
    fn new(name: &str) -> Self {
        let schema = r#"
            CREATE TABLE notes (id int PRIMARY KEY, tenant_id int NOT NULL, body text);
            INSERT INTO notes VALUES (1, 1, 'one'), (2, 2, 'two'), (3, 1, 'three');
            SELECT sync_provision('s', '{"tables": [{"name": "notes", "filter": {"tenant_id": "tenant"}}]}');
        "#;
        let s = Scenario::new(name, schema, "s");
        let token = s.register(json!({"tenant": 1}));
        let dump = s.files.path("before.dump").to_str().expect("a UTF-8 path").to_string();
        run("pg_dump", &["--format=custom", "--file", &dump, "--dbname", &s.db.url]);
        let file = s.store("late.db");
        s.sync_as(&file, &token);
        s.server().batch_execute("UPDATE notes SET body = 'after the dump' WHERE id = 1; INSERT INTO notes VALUES (5, 1, 'five')").unwrap();
        assert_eq!(s.sync_as(&file, &token).pulled, 2);
        FirstSeenAfterTheDump { s, token, file, dump }
    }

    fn restore(&self) {
        run("pg_restore", &["--clean", "--if-exists", "--single-transaction", "--exit-on-error", "--dbname", &self.s.db.url, &self.dump]);
    }
}

#[test]
fn a_dump_restored_over_the_same_database_makes_a_device_first_seen_after_the_dump_pull_again() {
    let late = FirstSeenAfterTheDump::new("restored_unknown");
    // The restored server never heard of this file: it cannot vouch for
    // the watermark, so the file pulls its partition again.
    late.restore();
    let report = late.s.sync_as(&late.file, &late.token);
    assert!(report.resynced, "{report:?}");
    assert_converged(&mut late.s.server(), late.file.connection(), "s", &json!({"tenant": 1}));
}

#[test]
fn a_device_first_seen_after_the_dump_pulls_again_even_with_an_edit_to_send() {
    let late = FirstSeenAfterTheDump::new("restored_unsent");
    // The file edits a row before its first sync after the restore: the
    // round's upload, which comes first, must not make the server vouch
    // for the file's watermark.
    late.restore();
    local(&late.file, "UPDATE notes SET body = 'edited after the restore' WHERE id = 3");
    let report = late.s.sync_as(&late.file, &late.token);
    assert!(report.resynced, "{report:?}");
    assert_eq!(report.pushed, 1, "{report:?}");
    let body: String = late.s.server().query_one("SELECT body FROM notes WHERE id = 3", &[]).unwrap().get(0);
    assert_eq!(body, "edited after the restore", "the unsent edit arrived");
    assert_converged(&mut late.s.server(), late.file.connection(), "s", &json!({"tenant": 1}));
}

#[test]
fn a_device_whose_upload_after_the_dump_was_answered_but_not_pulled_pulls_again() {
    let schema = r#"
        CREATE TABLE notes (id int PRIMARY KEY, tenant_id int NOT NULL, body text);
        INSERT INTO notes VALUES (1, 1, 'one'), (2, 2, 'two');
        SELECT sync_provision('s', '{"tables": [{"name": "notes", "filter": {"tenant_id": "tenant"}}]}');
    "#;
    let s = Scenario::new("restored_answered", schema, "s");
    let token = s.register(json!({"tenant": 1}));
    let file = s.store("device.db");
    s.sync_as(&file, &token);
    let dump = s.files.path("before.dump").to_str().expect("a UTF-8 path").to_string();
    run("pg_dump", &["--format=custom", "--file", &dump, "--dbname", &s.db.url]);

    // After the dump, the file's upload is applied and answered, but its
    // pull fails (here the file's own trigger refuses the server's row):
    // its watermark stays the one the dump's record gave it.
    local(
        &file,
        "INSERT INTO notes VALUES (8, 1, 'sent after the dump');
         CREATE TRIGGER refuse_pull BEFORE INSERT ON notes WHEN NEW.body = 'from the server' BEGIN SELECT RAISE(ROLLBACK, 'not now'); END;",
    );
    s.server().batch_execute("INSERT INTO notes VALUES (9, 1, 'from the server')").unwrap();
    let failed = file.sync(&s.db.url, "s", &SyncOptions { token: Some(token.clone()), ..SyncOptions::default() });
    assert!(failed.is_err(), "the pull fails: {failed:?}");
    let on_server: i64 = s.server().query_one("SELECT count(*) FROM notes WHERE id = 8", &[]).unwrap().get(0);
    assert_eq!(on_server, 1, "the upload was applied");

    // The restore undoes that upload; the file's answer for it names a
    // transaction the restored server has no record of.
    run("pg_restore", &["--clean", "--if-exists", "--single-transaction", "--exit-on-error", "--dbname", &s.db.url, &dump]);
    local(&file, "DROP TRIGGER refuse_pull");
    let report = s.sync_as(&file, &token);
    assert!(report.resynced, "{report:?}");
    assert_converged(&mut s.server(), file.connection(), "s", &json!({"tenant": 1}));
}
