//! A scope over time: cleanups that purge what old devices would need, and
//! the devices that come back after one.

use serde_json::json;
use tandem_tests::json as query_json;
use tandem_tests::local::{assert_converged, local, local_count, local_value, Scenario};

const CUSTOMERS: &str = r#"
CREATE TABLE customers (id int PRIMARY KEY, tenant_id int NOT NULL, name text);
INSERT INTO customers SELECT i, 1, 'customer ' || i FROM generate_series(1, 5) i;
SELECT sync_provision('s', '{"tables": [{"name": "customers", "filter": {"tenant_id": "tenant"}}]}');
"#;

fn purged_before(s: &Scenario) -> Option<String> {
    s.server().query_one("SELECT purged_before::text FROM tandem.scopes", &[]).unwrap().get(0)
}

#[test]
fn a_device_past_a_cleanup_pulls_again_and_keeps_its_unsent_changes() {
    let s = Scenario::new("cleanup_resync", CUSTOMERS, "s");
    let token = s.register(json!({"tenant": 1}));
    let away = s.store("away.db");
    let here = s.store("here.db");
    s.sync_as(&away, &token);
    s.sync_as(&here, &token);
    local(&away, "UPDATE customers SET name = 'edited while away' WHERE id = 3");
    s.server()
        .batch_execute("DELETE FROM customers WHERE id = 1; INSERT INTO customers VALUES (9, 1, 'new'); UPDATE customers SET name = 'renamed' WHERE id = 2;")
        .unwrap();
    // A replica holds back what came after the start of its last pull.
    s.sync_as(&here, &token);
    s.sync_as(&here, &token);
    // The away file last pulled long ago, and was last seen long ago:
    // cleanup purges what it needs. (Snapshots are cluster-wide: other
    // work on the server may hold their xmin back, so the file's watermark
    // is set to an old one rather than left to timing.)
    local(&away, "UPDATE tandem_scopes SET watermark = '3:3:'");
    let replica = local_value(&away, "SELECT replica_id FROM tandem_scopes").unwrap();
    s.server()
        .execute(
            "UPDATE tandem.replicas SET last_seen = now() - interval '40 days', last_since = '3:3:' WHERE replica_id = $1",
            &[&replica],
        )
        .unwrap();
    query_json(&mut s.server(), "SELECT sync_cleanup('s')", &[]);
    let first = purged_before(&s).expect("a cleanup horizon");
    // Its pushes make it look active, but it holds nothing back any more.
    s.server().execute("UPDATE tandem.replicas SET last_seen = now() WHERE replica_id = $1", &[&replica]).unwrap();
    s.server().batch_execute("DELETE FROM customers WHERE id = 4").unwrap();
    s.sync_as(&here, &token);
    s.sync_as(&here, &token);
    let cleaned = query_json(&mut s.server(), "SELECT sync_cleanup('s')", &[]);
    assert_eq!(cleaned["active_replicas"], json!(1), "{cleaned}");
    let second = purged_before(&s).expect("a cleanup horizon");
    assert!(second.parse::<u64>().unwrap() >= first.parse::<u64>().unwrap(), "{first} -> {second}");

    let report = s.sync_as(&away, &token);
    assert!(report.resynced, "{report:?}");
    assert_eq!(report.removed, 2, "the two rows deleted meanwhile: {report:?}");
    assert_eq!(report.pushed, 1, "{report:?}");
    assert_eq!(local_count(&away, "SELECT count(*) FROM customers WHERE id IN (1, 4)"), 0);
    assert_eq!(local_value(&away, "SELECT name FROM customers WHERE id = 2").as_deref(), Some("renamed"));
    let on_server: String = s.server().query_one("SELECT name FROM customers WHERE id = 3", &[]).unwrap().get(0);
    assert_eq!(on_server, "edited while away");
    assert_converged(&mut s.server(), away.connection(), "s", &json!({"tenant": 1}));
    let again = s.sync_as(&away, &token);
    assert!(!again.resynced && again.pulled == 0, "{again:?}");
}

#[test]
fn a_cleanup_that_would_strand_every_device_is_refused() {
    let s = Scenario::new("cleanup_zero", CUSTOMERS, "s");
    let error = s.server().query_one(r#"SELECT sync_cleanup('s', '{"inactive_after_days": 0}')"#, &[]).unwrap_err();
    let text = tandem_tests::describe(&error);
    assert!(text.starts_with("22023") && text.contains("at least 1"), "{text}");
}

#[test]
fn a_scope_deprovisioned_and_provisioned_again_takes_its_devices_back() {
    let s = Scenario::new("reprovision", CUSTOMERS, "s");
    let token = s.register(json!({"tenant": 1}));
    let file = s.store("a.db");
    s.sync_as(&file, &token);
    local(
        &file,
        "UPDATE customers SET name = 'edited on the device' WHERE id = 3; INSERT INTO customers VALUES (8, 1, 'made on the device');",
    );
    s.server()
        .batch_execute(
            r#"SELECT sync_deprovision('s');
               DELETE FROM customers WHERE id = 1;
               SELECT sync_provision('s', '{"tables": [{"name": "customers", "filter": {"tenant_id": "tenant"}}]}');"#,
        )
        .unwrap();
    // The same token still works; the file resyncs (the delete made while
    // nothing tracked the table reaches it) and sends its changes.
    let report = s.sync_as(&file, &token);
    assert!(report.resynced && report.removed == 1, "{report:?}");
    assert_eq!(local_count(&file, "SELECT count(*) FROM customers WHERE id = 1"), 0);
    let new_row: i64 = s.server().query_one("SELECT count(*) FROM customers WHERE id = 8", &[]).unwrap().get(0);
    assert_eq!(new_row, 1, "{report:?}");
    // The edit of a row whose versions were made anew is a conflict, logged
    // with both rows on both sides: nothing is lost without a word.
    let logged: i64 = s.server().query_one("SELECT count(*) FROM tandem.conflicts WHERE key = '[3]'", &[]).unwrap().get(0);
    let kept = local_value(&file, "SELECT client_row FROM tandem_conflicts WHERE key = '[3]'").unwrap_or_default();
    let on_server: String = s.server().query_one("SELECT name FROM customers WHERE id = 3", &[]).unwrap().get(0);
    assert!(on_server == "edited on the device" || (logged == 1 && kept.contains("edited on the device")), "{report:?}");
    assert_converged(&mut s.server(), file.connection(), "s", &json!({"tenant": 1}));
}

#[test]
fn a_session_that_synced_before_the_extension_was_made_anew_syncs_after() {
    let s = Scenario::new("recreated", CUSTOMERS, "s");
    // One session throughout, as a gateway's pooled connection would be.
    let mut session = s.server();
    let pull = "SELECT sync_select_changes('s', NULL, '{\"params\": {\"tenant\": 1}}')";
    let before = query_json(&mut session, pull, &[]);
    assert_eq!(before["tables"][0]["rows"].as_array().map(Vec::len), Some(5), "{before}");
    session
        .batch_execute(
            r#"DROP EXTENSION tandem CASCADE;
               CREATE EXTENSION tandem;
               SELECT sync_provision('s', '{"tables": [{"name": "customers", "filter": {"tenant_id": "tenant"}}]}');"#,
        )
        .unwrap();
    let after = query_json(&mut session, pull, &[]);
    assert_eq!(after["tables"][0]["rows"].as_array().map(Vec::len), Some(5), "{after}");
    let servers: i64 = session.query_one("SELECT count(*) FROM tandem.server", &[]).unwrap().get(0);
    assert_eq!(servers, 1);
}

#[test]
fn a_resync_cut_short_keeps_the_rows_the_file_changed_meanwhile() {
    let s = Scenario::new(
        "resync_cut",
        r#"
        CREATE TABLE customers (id int PRIMARY KEY, tenant_id int NOT NULL, name text);
        INSERT INTO customers SELECT i, 1, 'customer ' || i FROM generate_series(1, 30) i;
        SELECT sync_provision('s', '{"tables": [{"name": "customers", "filter": {"tenant_id": "tenant"}}]}');
        "#,
        "s",
    );
    let token = s.register(json!({"tenant": 1}));
    let file = s.store("a.db");
    s.sync_as(&file, &token);
    local(&file, "UPDATE tandem_scopes SET watermark = '3:3:'");
    let replica = local_value(&file, "SELECT replica_id FROM tandem_scopes").unwrap();
    s.server()
        .execute(
            "UPDATE tandem.replicas SET last_seen = now() - interval '40 days', last_since = '3:3:' WHERE replica_id = $1",
            &[&replica],
        )
        .unwrap();
    s.server().batch_execute("DELETE FROM customers WHERE id IN (5, 6)").unwrap();
    query_json(&mut s.server(), "SELECT sync_cleanup('s')", &[]);
    // The resync's pull from NULL stops after two batches.
    let options = tandem_local::SyncOptions { token: Some(token.clone()), max_rows: Some(5), ..Default::default() };
    let mut dropping = tandem_tests::local::Interfering { drop_after_selects: Some(2), ..tandem_tests::local::Interfering::new(&s.db.url) };
    file.sync_with(&mut dropping, "s", &options).unwrap_err();
    assert_eq!(local_count(&file, "SELECT coalesce(resync, 0) FROM tandem_scopes"), 1, "cut short");
    local(&file, "UPDATE customers SET name = 'edited meanwhile' WHERE id = 30");
    let report = s.sync_as(&file, &token);
    assert_eq!((report.pushed, report.removed), (1, 2), "{report:?}");
    assert_eq!(local_value(&file, "SELECT name FROM customers WHERE id = 30").as_deref(), Some("edited meanwhile"));
    assert_converged(&mut s.server(), file.connection(), "s", &json!({"tenant": 1}));
}

/// The scope's one table as `sync_status` counts it: (rows, tombstones,
/// exits), after folding its change log.
fn tracked(s: &Scenario) -> (i64, i64, i64) {
    let status = query_json(&mut s.server(), "SELECT sync_status('s')", &[]);
    let table = &status["tables"][0];
    (table["rows"].as_i64().unwrap(), table["tombstones"].as_i64().unwrap(), table["exits"].as_i64().unwrap())
}

#[test]
fn tracking_stays_bounded_while_the_same_rows_change_and_cleanup_runs() {
    let s = Scenario::new("cleanup_bounded", CUSTOMERS, "s");
    let token = s.register(json!({"tenant": 1}));
    let file = s.store("a.db");
    s.sync_as(&file, &token);
    let id: i64 = s.server().query_one("SELECT id FROM tandem.scope_tables WHERE scope = 's'", &[]).unwrap().get(0);
    let local_id = local_count(&file, "SELECT id FROM tandem_tables");
    // The purge's horizon is also the oldest transaction running anywhere
    // in the cluster (other tests' included), so each cleanup is checked
    // against the horizon it reports: nothing older is left, and only
    // the device's needs or a transaction older than the call held it back.
    let xmin = |snapshot: &str| snapshot.split(':').next().and_then(|x| x.parse::<u64>().ok()).expect("a snapshot");
    for cycle in 0..100 {
        // Every row changes, three rows go, three new ones come, and the
        // device edits a row of its own.
        s.server()
            .batch_execute(&format!(
                "UPDATE customers SET name = 'cycle {cycle}'; DELETE FROM customers WHERE id > 5; \
                 INSERT INTO customers SELECT i, 1, 'new' FROM generate_series(100 + {cycle} * 3, 102 + {cycle} * 3) i;"
            ))
            .unwrap();
        local(&file, &format!("UPDATE customers SET name = 'device {cycle}' WHERE id = 1"));
        let report = s.sync_as(&file, &token);
        assert!(!report.resynced, "a current device never starts over: {report:?}");
        if cycle % 10 == 9 {
            let running: String = s.server().query_one("SELECT pg_current_snapshot()::text", &[]).unwrap().get(0);
            let needs: String = s.server().query_one("SELECT last_since FROM tandem.replicas", &[]).unwrap().get(0);
            let cleaned = query_json(&mut s.server(), "SELECT sync_cleanup('s')", &[]);
            let horizon: u64 = cleaned["purged_before"].as_str().and_then(|h| h.parse().ok()).expect("a horizon: {cleaned}");
            let older: i64 = s
                .server()
                .query_one(
                    &format!("SELECT count(*) FROM tandem.track_{id} WHERE tandem_deleted AND tandem_stamp < $1::text::xid8"),
                    &[&horizon.to_string()],
                )
                .unwrap()
                .get(0);
            assert_eq!(older, 0, "every tombstone older than the horizon is purged");
            assert!(horizon >= xmin(&running).min(xmin(&needs)), "held back by nothing else: {horizon}, {running}, {needs}");
        }
    }
    // Once the device has pulled past the last deletes, cleanup leaves the
    // tracking exactly the live rows.
    // (Once every transaction older than the deletes, anywhere in the
    // cluster, has ended: until then the device's watermarks hold it as
    // running, and it may still need them.)
    let started = std::time::Instant::now();
    loop {
        s.sync_as(&file, &token);
        s.sync_as(&file, &token);
        query_json(&mut s.server(), "SELECT sync_cleanup('s')", &[]);
        if tracked(&s) == (8, 0, 0) || started.elapsed() > std::time::Duration::from_secs(90) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    assert_eq!(tracked(&s), (8, 0, 0));
    let logged: i64 = s.server().query_one(&format!("SELECT count(*) FROM tandem.log_{id}"), &[]).unwrap().get(0);
    assert_eq!(logged, 0, "the change log is folded away");
    assert_eq!(local_count(&file, &format!("SELECT count(*) FROM tandem_log_{local_id} WHERE id IS NOT NULL")), 0);
    assert_eq!(local_count(&file, &format!("SELECT count(*) FROM tandem_base_{local_id}")), 8);
    assert_converged(&mut s.server(), file.connection(), "s", &json!({"tenant": 1}));
}

#[test]
fn a_reinit_brings_a_drifted_copy_back_and_keeps_its_unsent_changes() {
    let s = Scenario::new("reinit", CUSTOMERS, "s");
    let token = s.register(json!({"tenant": 1}));
    let file = s.store("a.db");
    s.sync_as(&file, &token);
    // Changes made with the server's triggers off never reach the device.
    s.server()
        .batch_execute(
            "SET session_replication_role = replica; DELETE FROM customers WHERE id = 1; \
             UPDATE customers SET name = 'silently' WHERE id = 2; RESET session_replication_role;",
        )
        .unwrap();
    assert_eq!(s.sync_as(&file, &token).pulled, 0, "the drift is invisible to an incremental sync");
    local(&file, "UPDATE customers SET name = 'edited on the device' WHERE id = 3");

    let report = s.sync(&file, json!({"token": token, "reinit": true}));
    assert!(report.resynced && report.removed == 1 && report.pushed == 1, "{report:?}");
    assert_eq!(local_value(&file, "SELECT name FROM customers WHERE id = 2").as_deref(), Some("silently"));
    let on_server: String = s.server().query_one("SELECT name FROM customers WHERE id = 3", &[]).unwrap().get(0);
    assert_eq!(on_server, "edited on the device");
    assert_converged(&mut s.server(), file.connection(), "s", &json!({"tenant": 1}));
    let again = s.sync_as(&file, &token);
    assert!(!again.resynced && again.pulled == 0, "{again:?}");
}

/// Helper 74 (MEDIUM): every call under a new replica id made a replica,
/// and one that had never pulled held everything back, so one token's
/// uploads under made-up ids stopped every cleanup of the scope. A
/// replica the server has no pull of holds nothing back: its first pull
/// from a watermark is refused as too old (the server has no record of
/// it) and it pulls afresh, keeping its unsent changes.
#[test]
fn replicas_made_up_by_one_token_do_not_stop_cleanup() {
    let s = Scenario::new("cleanup_made_up_replicas", CUSTOMERS, "s");
    let token = s.register(json!({"tenant": 1}));
    let device = s.store("device.db");
    s.sync_as(&device, &token);
    s.sync_as(&device, &token);
    let client = local_value(&device, "SELECT client_id FROM tandem_scopes").unwrap();
    let mut server = s.server();
    for n in 0..20 {
        let options = json!({"token": token, "replica": format!("made-up-{n}")});
        let changes = json!({"format": 1, "scope": "s", "origin": client, "tables": []});
        query_json(&mut server, "SELECT sync_apply_changes('s', $1, $2)", &[&changes, &options]);
    }
    let cleaned = query_json(&mut server, r#"SELECT sync_cleanup('s', '{"inactive_after_days": 1}')"#, &[]);
    let replicas: i64 = server.query_one("SELECT count(*) FROM tandem.replicas WHERE last_since IS NULL", &[]).unwrap().get(0);
    assert_eq!(replicas, 20, "{cleaned}");
    assert!(cleaned["purged_before"].is_string(), "{cleaned}");
    assert_eq!(purged_before(&s).as_deref(), cleaned["purged_before"].as_str());
    // Neither the device nor a made-up replica finishing its pull is
    // sent back to the start by it.
    s.server().batch_execute("DELETE FROM customers WHERE id = 5").unwrap();
    let report = s.sync_as(&device, &token);
    assert!(!report.resynced && report.pulled == 1, "{report:?}");
    assert_converged(&mut s.server(), device.connection(), "s", &json!({"tenant": 1}));
}
