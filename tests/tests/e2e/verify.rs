//! `sync_verify`: a file proves it holds its partition, finds exactly the
//! rows where it does not (on either side, however they drifted), and
//! repairs only those, never an unsent local change and never another
//! tenant's row.

use serde_json::{json, Value};
use tandem_local::verify::{Options, VerifyReport};
use tandem_local::Store;
use tandem_tests::gateway::Setup;
use tandem_tests::local::{assert_converged, local, local_value, Interfering, Scenario};

const SCHEMA: &str = r#"
CREATE TABLE customers (id bigint PRIMARY KEY, tenant_id int NOT NULL, name text, score float8, balance numeric(12,2),
                        seen timestamptz, photo bytea);
INSERT INTO customers
SELECT i, 1 + i % 2, 'customer ' || i, i / 7.0, i * 1.25, '2024-05-01 12:00+02'::timestamptz + i * interval '1 minute', '\x00ff'
FROM generate_series(1, 1200) i;
-- Values whose text differs between the two sides: a float PostgreSQL
-- prints as 1e+20, and a negative zero SQLite cannot keep.
UPDATE customers SET score = 1e20 WHERE id = 2;
UPDATE customers SET score = '-0' WHERE id = 4;
SELECT sync_provision('crm', '{"tables": [{"name": "customers", "filter": {"tenant_id": "tenant"}}]}');
"#;

fn verify(s: &Scenario, file: &Store, token: &str, repair: bool) -> VerifyReport {
    let options = Options { token: Some(token.to_string()), ca_cert: None, repair };
    file.verify(&s.db.url, s.scope, &options).unwrap_or_else(|e| panic!("verify failed: {e}"))
}

fn keys(values: &[Value]) -> Vec<i64> {
    values.iter().map(|k| k[0].as_i64().expect("an integer key")).collect()
}

/// Writes to the server that Tandem's triggers do not see (a restore with
/// --disable-triggers, a session in replica mode): drift nobody reported.
fn silently(s: &Scenario, sql: &str) {
    s.server().batch_execute(&format!("BEGIN; SET LOCAL session_replication_role = replica; {sql}; COMMIT")).unwrap();
}

#[test]
fn drift_on_either_side_is_found_row_by_row_and_repaired() {
    let s = Scenario::new("verify_drift", SCHEMA, "crm");
    let token = s.register(json!({"tenant": 1}));
    let file = s.store("device.db");
    s.sync_as(&file, &token);

    let clean = verify(&s, &file, &token, false);
    assert!(clean.equal, "{clean:?}");
    assert_eq!(clean.rows_checked, 600, "tenant 1's rows");
    assert_eq!(clean.tables[0].pending, 0);

    // The server drifts: a row changed, one added, one removed, all in
    // tenant 1; and tenant 2 drifts too, which this file must not see.
    silently(
        &s,
        "UPDATE customers SET name = 'changed unseen' WHERE id = 10; \
         INSERT INTO customers (id, tenant_id, name) VALUES (5001, 1, 'added unseen'); \
         DELETE FROM customers WHERE id = 12; \
         UPDATE customers SET name = 'other tenant' WHERE id = 11; \
         INSERT INTO customers (id, tenant_id, name) VALUES (5002, 2, 'other tenant')",
    );
    // The file drifts: edits whose log entries are gone (a tool that
    // dropped the triggers), and one real unsent change.
    local(
        &file,
        "UPDATE customers SET name = 'edited unlogged' WHERE id = 20; DELETE FROM customers WHERE id = 22; \
         INSERT INTO customers (id, tenant_id, name) VALUES (6001, 1, 'ghost'); DELETE FROM tandem_log_1; \
         UPDATE customers SET name = 'unsent' WHERE id = 24",
    );

    let found = verify(&s, &file, &token, false);
    assert!(!found.equal);
    let t = &found.tables[0];
    assert_eq!(keys(&t.missing), vec![22, 5001], "rows the server holds and the file lacks: {t:?}");
    assert_eq!(keys(&t.extra), vec![12, 6001], "rows the file holds and the server does not: {t:?}");
    assert_eq!(keys(&t.different), vec![10, 20], "rows both hold differently: {t:?}");
    assert_eq!(t.pending, 1, "the unsent change is left out");
    assert!(t.ranges_differ >= 1 && t.ranges_differ <= 6, "{t:?}");
    assert_eq!(found.repaired, None, "nothing is written without repair");
    assert_eq!(local_value(&file, "SELECT name FROM customers WHERE id = 10").as_deref(), Some("customer 10"));

    let repaired = verify(&s, &file, &token, true);
    assert_eq!(repaired.repaired, Some(6));
    let again = verify(&s, &file, &token, false);
    assert!(again.equal, "{again:?}");
    assert_eq!(local_value(&file, "SELECT name FROM customers WHERE id = 24").as_deref(), Some("unsent"), "the unsent change stays");
    assert_eq!(local_value(&file, "SELECT count(*) FROM customers WHERE id IN (11, 5002)").as_deref(), None);
    assert_eq!(file.connection().query_row("SELECT count(*) FROM customers WHERE tenant_id = 2", [], |r| r.get::<_, i64>(0)).unwrap(), 0);

    // The unsent change goes up as usual, and the server's repaired rows
    // are the file's to edit like any other: the row the server held
    // untracked was adopted, so the edit is judged against its version.
    local(&file, "UPDATE customers SET name = 'after repair' WHERE id = 5001");
    let report = s.sync_as(&file, &token);
    assert_eq!(report.pushed, 2, "{report:?}");
    assert!(report.conflicts.is_empty(), "{report:?}");
    let name: String = s.server().query_one("SELECT name FROM customers WHERE id = 24", &[]).unwrap().get(0);
    assert_eq!(name, "unsent");
    assert_converged(&mut s.server(), file.connection(), "crm", &json!({"tenant": 1}));
    let status: Value = serde_json::from_str(&local_value(&file, "SELECT sync_status('crm')").unwrap()).unwrap();
    assert_eq!(status["last_verify"]["equal"], json!(true), "{status}");
    assert!(status["last_verify"]["at"].is_string(), "{status}");
}

#[test]
fn what_changed_since_the_last_sync_is_pending_not_drift() {
    let s = Scenario::new("verify_pending", SCHEMA, "crm");
    let token = s.register(json!({"tenant": 1}));
    let file = s.store("device.db");
    s.sync_as(&file, &token);
    s.server()
        .batch_execute(
            "UPDATE customers SET name = 'new' WHERE id = 30; DELETE FROM customers WHERE id = 32; \
             INSERT INTO customers (id, tenant_id) VALUES (7001, 1); UPDATE customers SET tenant_id = 2 WHERE id = 34",
        )
        .unwrap();
    // A transaction still open when verify runs: what it wrote is not
    // seen yet, so its row compares as it was.
    let mut open = s.server();
    let mut tx = open.transaction().unwrap();
    tx.execute("UPDATE customers SET name = 'in flight' WHERE id = 36", &[]).unwrap();
    let report = verify(&s, &file, &token, true);
    assert!(report.equal, "{report:?}");
    assert_eq!(report.tables[0].pending, 4, "an update, a delete, an insert and a row that left: {report:?}");
    assert_eq!(report.repaired, None);
    assert_eq!(local_value(&file, "SELECT name FROM customers WHERE id = 30").as_deref(), Some("customer 30"), "left to the sync");
    tx.commit().unwrap();
    s.sync_as(&file, &token);
    let report = verify(&s, &file, &token, false);
    assert!(report.equal && report.tables[0].pending == 0, "{report:?}");
}

#[test]
fn a_device_reaches_only_its_partition_and_bad_requests_are_refused() {
    let s = Scenario::new("verify_tenants", SCHEMA, "crm");
    let token = s.register(json!({"tenant": 1}));
    let file = s.store("device.db");
    let report = s.sync_as(&file, &token);
    let since = report.watermark.expect("a watermark");
    let mut server = s.server();
    let call = |server: &mut postgres::Client, options: Value| {
        server
            .query_one("SELECT sync_verify('crm', $1)::text", &[&options])
            .map(|row| serde_json::from_str::<Value>(&row.get::<_, String>(0)).unwrap())
    };
    // Another tenant's keys asked for by name are not sent.
    let fetched = call(
        &mut server,
        json!({"token": token, "since": since, "step": "fetch",
               "tables": [{"name": "public.customers", "buckets": 1, "keys": [[1], [3], [2]]}]}),
    )
    .unwrap();
    let rows = &fetched["changeset"]["tables"][0]["rows"];
    assert_eq!(rows.as_array().map(Vec::len), Some(1), "only tenant 1's row 2: {fetched}");
    assert_eq!(rows[0]["values"][0], json!(2));
    // A token's parameters cannot be widened.
    let widened = call(&mut server, json!({"token": token, "since": since, "params": {"tenant": [1, 2]}}));
    assert!(widened.is_err(), "{widened:?}");
    for (options, says) in [
        (json!({"token": token}), "complete watermark"),
        (json!({"token": token, "since": "5:9:/-/u0/null"}), "complete watermark"),
        (json!({"token": token, "since": since, "tables": [{"name": "public.customers", "buckets": 3}]}), "power of two"),
        (json!({"token": token, "since": since, "step": "rows", "tables": [{"name": "public.customers"}]}), "buckets"),
        (json!({"token": token, "since": since, "tables": [{"name": "public.nope", "buckets": 1}]}), "is not part of scope"),
        (
            json!({"token": token, "since": since, "step": "rows", "tables": [{"name": "customers", "buckets": 4, "only": [7]}]}),
            "there are 4",
        ),
        (
            json!({"token": token, "since": since, "step": "fetch", "tables": [{"name": "customers", "buckets": 1, "keys": [[1, 2]]}]}),
            "1 column",
        ),
        (
            json!({"token": token, "since": since, "step": "fetch", "tables": [{"name": "customers", "buckets": 1, "keys": [[{"x": 1}]]}]}),
            "column id",
        ),
        (json!({"token": token, "since": since, "surprise": 1}), "unknown field"),
        (json!({"token": token, "since": since, "tables": [{"name": "customers", "exclude": [[null]]}]}), "no NULL"),
    ] {
        let error = call(&mut server, options.clone()).expect_err(&options.to_string());
        assert!(tandem_tests::describe(&error).contains(says), "{options}: {}", tandem_tests::describe(&error));
    }
    let wrong = call(&mut server, json!({"token": "tdm_nobody_secret", "since": since}));
    assert!(wrong.is_err());
}

#[test]
fn a_device_verifies_and_repairs_through_the_gateway() {
    let setup = Setup::new("verify_gateway");
    let token = setup.s.register(json!({"tenant": 1}));
    let file = setup.s.store("device.db");
    setup.sync(&file, &token);
    silently(&setup.s, "UPDATE customers SET name = 'unseen' WHERE id = 4");
    let options = Options { token: Some(token.clone()), ca_cert: Some(setup.certs.ca.to_string_lossy().into_owned()), repair: true };
    let report = file.verify(&setup.url(), "crm", &options).unwrap_or_else(|e| panic!("verify through the gateway: {e}"));
    assert_eq!(keys(&report.tables[0].different), vec![4], "{report:?}");
    assert_eq!(report.repaired, Some(1));
    assert_eq!(local_value(&file, "SELECT name FROM customers WHERE id = 4").as_deref(), Some("unseen"));
    let report = file.verify(&setup.url(), "crm", &options).unwrap();
    assert!(report.equal, "{report:?}");
}

/// Found by an attack: a file verified with another client's token was
/// compared with that client's partition, and `--repair` filled it with
/// another tenant's rows.
#[test]
fn a_file_is_verified_only_with_its_own_clients_token() {
    let s = Scenario::new("verify_other_token", SCHEMA, "crm");
    let token = s.register(json!({"tenant": 1}));
    let other = s.register(json!({"tenant": 2}));
    let file = s.store("device.db");
    s.sync_as(&file, &token);
    let options = Options { token: Some(other), ca_cert: None, repair: true };
    let error = file.verify(&s.db.url, s.scope, &options).expect_err("another client's token");
    assert!(error.to_string().contains("the token is for client"), "{error}");
    assert_eq!(file.connection().query_row("SELECT count(*) FROM customers WHERE tenant_id = 2", [], |r| r.get::<_, i64>(0)).unwrap(), 0);
    let missing = Scenario::new("verify_no_scope", SCHEMA, "crm");
    let empty = missing.store("empty.db");
    let error = empty.verify(&missing.db.url, "crm", &Options::default()).expect_err("a file that never synced");
    assert!(error.to_string().contains("sync it first"), "{error}");
}

/// Found by an attack: a change log emptied behind Tandem's back counts
/// from 1 again, below the acknowledged counter, so the file's next edits
/// passed for sent: never uploaded, then overwritten by a repair.
#[test]
fn edits_after_the_log_was_emptied_behind_tandems_back_still_go_up() {
    let s = Scenario::new("verify_log_reset", SCHEMA, "crm");
    let token = s.register(json!({"tenant": 1}));
    let file = s.store("device.db");
    s.sync_as(&file, &token);
    local(&file, "UPDATE customers SET name = 'one' WHERE id = 2; UPDATE customers SET name = 'two' WHERE id = 4");
    s.sync_as(&file, &token);
    local(&file, "DELETE FROM tandem_log_1; UPDATE customers SET name = 'after the reset' WHERE id = 6");
    let report = s.sync_as(&file, &token);
    assert_eq!(report.pushed, 1, "{report:?}");
    let name: String = s.server().query_one("SELECT name FROM customers WHERE id = 6", &[]).unwrap().get(0);
    assert_eq!(name, "after the reset");
    assert!(verify(&s, &file, &token, true).equal);
    assert_eq!(local_value(&file, "SELECT name FROM customers WHERE id = 6").as_deref(), Some("after the reset"));
}

/// Found by an attack: a row deleted as usual and then inserted again with
/// triggers off was repaired into the verifying file only, and never
/// reached another device: tracking still held it as deleted.
#[test]
fn a_row_tracking_holds_as_deleted_is_adopted_by_a_repair() {
    let s = Scenario::new("verify_tombstone", SCHEMA, "crm");
    let token = s.register(json!({"tenant": 1}));
    let first = s.store("first.db");
    let second = s.store("second.db");
    s.sync_as(&first, &token);
    s.sync_as(&second, &token);
    s.server().batch_execute("DELETE FROM customers WHERE id = 8").unwrap();
    s.sync_as(&first, &token);
    s.sync_as(&second, &token);
    silently(&s, "INSERT INTO customers (id, tenant_id, name) VALUES (8, 1, 'back unseen')");
    let report = verify(&s, &first, &token, true);
    assert_eq!((keys(&report.tables[0].missing), report.repaired), (vec![8], Some(1)), "{report:?}");
    s.sync_as(&second, &token);
    assert_eq!(local_value(&second, "SELECT name FROM customers WHERE id = 8").as_deref(), Some("back unseen"), "the other device gets it");
    local(&first, "UPDATE customers SET name = 'edited' WHERE id = 8");
    let edit = s.sync_as(&first, &token);
    assert!(edit.conflicts.is_empty(), "{edit:?}");
    assert!(verify(&s, &second, &token, false).tables[0].pending <= 1);
}

/// A program that writes the file while a verify runs (the sync lock
/// keeps syncs out, not the file's other writers): the row it changed is
/// the next sync's, not drift, and a repair keeps it.
#[test]
fn a_write_to_the_file_during_a_verify_is_pending_not_drift() {
    let s = Scenario::new("verify_concurrent_write", SCHEMA, "crm");
    let token = s.register(json!({"tenant": 1}));
    let file = s.store("device.db");
    s.sync_as(&file, &token);
    let mut meddling = Interfering {
        write_after_verify: Some((s.files.path("device.db"), "UPDATE customers SET name = 'written meanwhile' WHERE id = 2")),
        ..Interfering::new(&s.db.url)
    };
    let options = Options { token: Some(token.clone()), ca_cert: None, repair: true };
    let report = tandem_local::verify::verify(file.connection(), &mut meddling, "crm", &options).unwrap();
    assert!(report.equal && report.repaired.is_none(), "{report:?}");
    assert_eq!(report.tables[0].pending, 1, "{report:?}");
    assert_eq!(local_value(&file, "SELECT name FROM customers WHERE id = 2").as_deref(), Some("written meanwhile"));
    assert_eq!(s.sync_as(&file, &token).pushed, 1);
}

/// A server commit that lands while a verify step walks the partition,
/// after the step folded the logs: the row it changed is pending (its
/// change is still in the log), not a row that differs; a row it deleted
/// is pending, not one the file holds extra. The step is held between its
/// batches by a lock its filter's domain check takes, so the commit lands
/// exactly there.
#[test]
fn a_commit_during_a_verify_step_is_pending_not_a_difference() {
    let schema = "
        CREATE FUNCTION gate(int) RETURNS bool LANGUAGE sql
            AS 'SELECT pg_advisory_lock_shared(4242) IS NOT NULL AND pg_advisory_unlock_shared(4242)';
        CREATE DOMAIN tenant_id AS int CHECK (gate(VALUE));
        CREATE TABLE big (id bigint PRIMARY KEY, tenant tenant_id NOT NULL, v text NOT NULL);
        INSERT INTO big SELECT g, 1, 'v' || g FROM generate_series(1, 20100) g;
        SELECT sync_provision('big', '{\"tables\": [{\"name\": \"big\", \"filter\": {\"tenant\": \"tenant\"}}]}');";
    let s = Scenario::new("verify_during_commit", schema, "big");
    let token = s.register(json!({"tenant": 1}));
    let file = s.store("device.db");
    let since = s.sync_as(&file, &token).watermark.expect("a watermark");

    // The writer holds the gate; the step blocks in its first batch.
    let mut writer = s.server();
    let mut tx = writer.transaction().unwrap();
    tx.execute("SELECT pg_advisory_xact_lock(4242)", &[]).unwrap();
    let url = s.db.url.clone();
    let options = json!({"token": token, "since": since, "step": "rows", "tables": [{"name": "big", "buckets": 1, "only": [0]}]});
    let step = std::thread::spawn(move || {
        let mut server = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        let text: String = server.query_one("SELECT sync_verify('big', $1)::text", &[&options]).unwrap().get(0);
        serde_json::from_str::<Value>(&text).unwrap()
    });
    std::thread::sleep(std::time::Duration::from_millis(500));
    tx.execute("UPDATE big SET v = 'changed mid-step' WHERE id = 15000", &[]).unwrap();
    tx.execute("DELETE FROM big WHERE id = 15001", &[]).unwrap();
    tx.commit().unwrap();
    let answer = step.join().unwrap();

    let table = &answer["tables"][0];
    let pending = keys(table["pending"].as_array().map_or(&[][..], Vec::as_slice));
    let hashed: Vec<i64> = table["digests"].as_array().unwrap().iter().map(|d| d[0][0].as_i64().unwrap()).collect();
    assert!(pending.contains(&15000) && pending.contains(&15001), "both changes are the next pull's: {pending:?}, {} hashed", hashed.len());
    assert!(!hashed.contains(&15000), "the changed row is not compared");
    assert_eq!(hashed.len(), 20100 - 2, "every other row is compared");
}
