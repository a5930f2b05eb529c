//! No device's sync waits for good on a lock another session holds: a
//! transaction left open, or any role that can connect holding the
//! advisory lock of a table's fold. A call waits at most the extension's
//! cap (or the caller's shorter `lock_timeout`), then fails saying why,
//! keeps nothing, and the next round passes.

use std::time::{Duration, Instant};

use postgres::{Client, NoTls};
use serde_json::json;
use tandem_local::{LocalError, RemoteError, Store, SyncOptions};
use tandem_tests::local::{assert_converged, local, Scenario};

const SCHEMA: &str = r#"
CREATE TABLE notes (id bigint PRIMARY KEY, tenant_id int NOT NULL, body text);
INSERT INTO notes VALUES (1, 1, 'one'), (2, 2, 'two');
SELECT sync_provision('s', '{"tables": [{"name": "notes", "filter": {"tenant_id": "tenant"}}]}');
"#;

/// A device of tenant 1 that synced, then wrote a row it has not sent.
fn device_with_a_row_to_send(s: &Scenario) -> (String, Store) {
    let token = s.register(json!({"tenant": 1}));
    let device = s.store("device.db");
    s.sync_as(&device, &token);
    local(&device, "INSERT INTO notes VALUES (3, 1, 'written while the lock is held')");
    (token, device)
}

/// A session holding the advisory lock of the table's fold: any session
/// may take one, and the fold's key is public (design.md).
fn hold_the_folds_lock(s: &Scenario) -> Client {
    let id: i64 = s.server().query_one("SELECT id FROM tandem.scope_tables WHERE scope = 's'", &[]).unwrap().get(0);
    let mut holder = Client::connect(&s.db.url, NoTls).unwrap();
    holder.execute("SELECT pg_advisory_lock(hashtext('tandem.fold'), hashtext($1))", &[&format!("\"tandem\".\"log_{id}\"")]).unwrap();
    holder
}

#[test]
fn a_session_holding_the_folds_lock_fails_an_upload_in_bounded_time_and_the_next_round_sends_it() {
    let s = Scenario::new("lock_wait", SCHEMA, "s");
    let (token, device) = device_with_a_row_to_send(&s);
    let holder = hold_the_folds_lock(&s);
    // It lets go when told, or after 45 s, so a build that waits for it
    // fails instead of hanging.
    let (let_go, told) = std::sync::mpsc::channel::<()>();
    let holding = std::thread::spawn(move || {
        let _ = told.recv_timeout(Duration::from_secs(45));
        drop(holder);
    });

    // The device sets no lock_timeout: the extension's cap (30 s) ends
    // the wait. The pull still runs (it reads the small log through).
    let started = Instant::now();
    let error = device.sync(&s.db.url, "s", &SyncOptions { token: Some(token.clone()), ..SyncOptions::default() });
    let waited = started.elapsed();
    let error = error.expect_err("the upload waits for a lock another session holds");
    assert!(matches!(&error, LocalError::UploadFailed { error: RemoteError::LockWait(_), .. }), "{error}");
    assert!(error.to_string().contains("sync again"), "{error}");
    assert!(waited < Duration::from_secs(40), "waited {waited:?}");
    let on_server: i64 = s.server().query_one("SELECT count(*) FROM notes WHERE id = 3", &[]).unwrap().get(0);
    assert_eq!(on_server, 0, "nothing of the failed call is kept");

    let_go.send(()).unwrap();
    holding.join().unwrap();
    let report = s.sync_as(&device, &token);
    assert_eq!(report.pushed, 1, "{report:?}");
    assert_converged(&mut s.server(), device.connection(), "s", &json!({"tenant": 1}));
}

#[test]
fn a_callers_lock_timeout_is_put_back_after_each_call() {
    let s = Scenario::new("lock_wait_kept", SCHEMA, "s");
    let token = s.register(json!({"tenant": 1}));
    let mut client = s.server();
    for caller in ["0", "5min", "1s"] {
        client.batch_execute(&format!("SET lock_timeout = '{caller}'")).unwrap();
        client.query_one("SELECT sync_schema('s', $1::text::jsonb)::text", &[&json!({"token": token}).to_string()]).unwrap();
        client
            .query_one("SELECT sync_select_changes_json('s', NULL, $1::text::jsonb)::text", &[&json!({"token": token}).to_string()])
            .unwrap();
        let now: String = client.query_one("SHOW lock_timeout", &[]).unwrap().get(0);
        assert_eq!(now, caller);
    }
}

#[test]
fn a_watch_waits_out_a_held_lock_and_sends_the_change_once_it_is_free() {
    let s = Scenario::new("lock_wait_watch", SCHEMA, "s");
    let (token, device) = device_with_a_row_to_send(&s);
    let holder = hold_the_folds_lock(&s);
    let holding = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(3));
        drop(holder);
    });

    // The device's own lock_timeout (1 s) ends each wait early: the watch
    // backs off and tries again, as for a lost network, instead of ending.
    let joint = if s.db.url.contains('?') { '&' } else { '?' };
    let url = format!("{}{joint}options=-c%20lock_timeout%3D1s", s.db.url);
    let options = SyncOptions { token: Some(token.clone()), watch: Some(8.0), ..SyncOptions::default() };
    let report = device.sync(&url, "s", &options).expect("a watch outlives a lock held for a while");
    holding.join().unwrap();
    assert_eq!(report.pushed, 1, "{report:?}");
    assert_converged(&mut s.server(), device.connection(), "s", &json!({"tenant": 1}));
}
