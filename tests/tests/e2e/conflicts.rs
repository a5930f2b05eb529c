//! Conflicts between clients, and between a client and concurrent writers on
//! the server, over real connections: detected per row by version, settled
//! by policy, logged with both rows, never silently lost.

use std::thread;
use std::time::Duration;

use postgres::Client;
use serde_json::{json, Value};
use tandem_tests::{json as query_json, pull_all, TestDb};

fn setup(db: &TestDb) -> Client {
    let mut client = db.connect();
    client
        .batch_execute(
            "CREATE TABLE notes (id bigint PRIMARY KEY, title text NOT NULL, body text);
             INSERT INTO notes SELECT g, 'note ' || g, NULL FROM generate_series(1, 100) g;
             SELECT sync_provision('s', '{\"tables\": [{\"name\": \"notes\"}]}');
             CREATE FUNCTION public.keep_both(c jsonb) RETURNS jsonb LANGUAGE sql AS $$
               SELECT jsonb_build_object('title', (c->'server_row'->>'title') || ' | ' || (c->'client_row'->>'title')) $$;",
        )
        .unwrap();
    client
}

/// The version of each note as a client pulled it.
fn versions(client: &mut Client) -> std::collections::HashMap<i64, String> {
    pull_all(client, "s", None, &json!({}))
        .0
        .into_iter()
        .map(|(_, row)| (row["values"][0].as_i64().unwrap(), row["version"].as_str().unwrap().to_string()))
        .collect()
}

fn edit(client_id: &str, id: i64, base: &str, seq: i64, title: &str) -> Value {
    json!({"format": 1, "scope": "s", "origin": client_id, "tables": [{"name": "notes", "columns": ["id", "title"],
           "rows": [{"op": "upsert", "base": base, "seq": seq, "values": [id, title]}]}]})
}

/// Sets scope `s`'s conflict policy, as its owner does.
fn set_policy(server: &mut Client, policy: &str) {
    let setup = json!({"policy": policy, "tables": [{"name": "notes"}]});
    server.execute("SELECT sync_provision('s', $1)", &[&setup]).unwrap();
}

fn apply(client: &mut Client, changeset: &Value, options: Value) -> Value {
    query_json(client, "SELECT sync_apply_changes('s', $1, $2)", &[changeset, &options])
}

/// Server writes land in the change log and are folded into tracking only by
/// the next sync call; the version an upload is checked against is still
/// the last write's, however many came since the last fold.
#[test]
fn an_upload_meets_the_last_of_several_server_writes() {
    let db = TestDb::new("last_write");
    let mut server = setup(&db);
    let mut client = db.connect();
    let mut xids = Vec::new();
    for title in ["first", "second", "third"] {
        let mut tx = server.transaction().unwrap();
        tx.execute("UPDATE notes SET title = $1 WHERE id = 5", &[&title]).unwrap();
        xids.push(tx.query_one("SELECT pg_current_xact_id()::text", &[]).unwrap().get::<_, String>(0));
        tx.commit().unwrap();
    }
    // A client that saw the second write edits on top of it.
    let result = apply(&mut client, &edit("C", 5, &xids[1], 1, "from C"), json!({}));
    let conflicts = result["conflicts"].as_array().unwrap();
    assert_eq!(conflicts.len(), 1, "the third write is newer than the client's base: {result}");
    assert_eq!((conflicts[0]["row"]["title"].clone(), conflicts[0]["version"].clone()), (json!("third"), json!(xids[2])));
    assert_eq!(versions(&mut client)[&5], xids[2], "a pull reports the last write's version");
    let again = apply(&mut client, &edit("C", 5, &xids[2], 2, "from C"), json!({}));
    assert_eq!((again["applied"].clone(), again["conflicts"].clone()), (json!(1), json!([])), "{again}");
}

#[test]
fn two_clients_editing_one_row_meet_each_policy() {
    for (policy, winner) in [("server_wins", "from A"), ("client_wins", "from B"), ("public.keep_both", "from A | from B")] {
        let db = TestDb::new("two_clients");
        let mut server = setup(&db);
        let mut a = db.connect();
        let mut b = db.connect();
        let base_a = versions(&mut a)[&7].clone();
        let base_b = versions(&mut b)[&7].clone();
        assert_eq!(base_a, base_b);
        set_policy(&mut server, policy);

        let first = apply(&mut a, &edit("A", 7, &base_a, 1, "from A"), json!({}));
        assert_eq!((first["applied"].clone(), first["conflicts"].clone()), (json!(1), json!([])), "{first}");
        let second = apply(&mut b, &edit("B", 7, &base_b, 1, "from B"), json!({}));
        let conflicts = second["conflicts"].as_array().unwrap();
        assert_eq!(conflicts.len(), 1, "exactly one conflict under {policy}: {second}");
        assert_eq!(conflicts[0]["kind"], "both_updated");
        assert_eq!(conflicts[0]["row"]["title"], winner, "{policy}");

        let title: String = server.query_one("SELECT title FROM notes WHERE id = 7", &[]).unwrap().get(0);
        assert_eq!(title, winner, "{policy}");
        let logged =
            server.query("SELECT client_row->>'title', server_row->>'title', decision, client_id FROM tandem.conflicts", &[]).unwrap();
        assert_eq!(logged.len(), 1, "{policy}");
        let (client_title, server_title, decision, who): (String, String, String, String) =
            (logged[0].get(0), logged[0].get(1), logged[0].get(2), logged[0].get(3));
        assert_eq!((client_title.as_str(), server_title.as_str(), who.as_str()), ("from B", "from A", "B"), "both versions are kept");
        let expected_decision = match policy {
            "public.keep_both" => "merged",
            other => other,
        };
        assert_eq!(decision, expected_decision);
    }
}

#[test]
fn an_upload_sent_twice_has_no_second_effect() {
    let db = TestDb::new("twice");
    let mut server = setup(&db);
    let mut client = db.connect();
    let base = versions(&mut client)[&3].clone();
    let changeset = edit("C", 3, &base, 41, "edited once");
    let first = apply(&mut client, &changeset, json!({"upload_id": "u1"}));
    assert_eq!(first["applied"], 1);
    let (stamp, version): (String, String) = {
        server.batch_execute("SELECT sync_status('s')").unwrap(); // folds the change log into tracking
        let row = server.query_one("SELECT tandem_stamp::text, tandem_version::text FROM tandem.track_1 WHERE id = 3", &[]).unwrap();
        (row.get(0), row.get(1))
    };
    // The connection drops before the client records the result; it sends
    // the same changeset again.
    drop(client);
    let mut again = db.connect();
    let second = apply(&mut again, &changeset, json!({"upload_id": "u1"}));
    assert_eq!(second["applied"], 0, "{second}");
    assert_eq!(second["conflicts"], json!([]));
    // Answered as the first attempt's answer was: its version, and the row.
    assert_eq!(second["versions"][0]["row"]["title"], "edited once");
    assert_eq!(second["versions"][0]["version"], json!(version));
    server.batch_execute("SELECT sync_status('s')").unwrap();
    let row = server.query_one("SELECT tandem_stamp::text, tandem_version::text FROM tandem.track_1 WHERE id = 3", &[]).unwrap();
    assert_eq!((row.get::<_, String>(0), row.get::<_, String>(1)), (stamp, version), "not written again");
    let logged: i64 = server.query_one("SELECT count(*) FROM tandem.conflicts", &[]).unwrap().get(0);
    assert_eq!(logged, 0);
}

/// The answer to an upload is lost, another client changes the row, and the
/// upload is sent again: under `client_wins` it must not overwrite the
/// newer change. The retry carries the first upload's id, which the server
/// knows for the upload it applied.
#[test]
fn a_retry_after_a_lost_answer_never_overwrites_a_newer_change() {
    let db = TestDb::new("retry_newer");
    let mut server = setup(&db);
    set_policy(&mut server, "client_wins");
    let mut a = db.connect();
    let mut b = db.connect();
    let base = versions(&mut a)[&4].clone();
    let changeset = edit("A", 4, &base, 1, "from A");
    let options = json!({"upload_id": "a-upload-1"});
    assert_eq!(apply(&mut a, &changeset, options.clone())["applied"], 1);
    // A's answer is lost; B edits the row on top of A's write.
    let after_a = versions(&mut b)[&4].clone();
    assert_eq!(apply(&mut b, &edit("B", 4, &after_a, 1, "from B"), json!({}))["applied"], 1);
    let retried = apply(&mut a, &changeset, options);
    assert_eq!((retried["applied"].clone(), retried["conflicts"].clone()), (json!(0), json!([])), "{retried}");
    assert_eq!(retried["current"][0]["row"]["title"], "from B", "A takes the newer row");
    let title: String = a.query_one("SELECT title FROM notes WHERE id = 4", &[]).unwrap().get(0);
    assert_eq!(title, "from B", "the retry did not put A's change back over B's");
    // Without the id, the same upload is a new change and meets its conflict.
    set_policy(&mut server, "server_wins");
    let fresh = apply(&mut a, &changeset, json!({"upload_id": "a-upload-2"}));
    assert_eq!(fresh["conflicts"][0]["kind"], "both_updated", "{fresh}");
}

/// A server transaction changes a row after the upload was classified but
/// before it was written: the upload must not overwrite it.
#[test]
fn a_concurrent_server_write_is_never_overwritten() {
    let db = TestDb::new("concurrent");
    let mut server = setup(&db);
    let mut client = db.connect();
    let bases = versions(&mut client);

    let mut writer = db.connect();
    writer
        .batch_execute("BEGIN; UPDATE notes SET title = 'server edit' WHERE id = 5; INSERT INTO notes VALUES (500, 'server insert', NULL)")
        .unwrap();
    let upload = json!({"format": 1, "scope": "s", "origin": "C", "tables": [{"name": "notes", "columns": ["id", "title"], "rows": [
        {"op": "upsert", "base": bases[&5], "seq": 1, "values": [5, "client edit"]},
        {"op": "upsert", "seq": 2, "values": [500, "client insert"]},
        {"op": "upsert", "base": bases[&6], "seq": 3, "values": [6, "untouched by the server"]}]}]});
    let url = db.url.clone();
    let uploader = thread::spawn(move || {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        apply(&mut c, &upload, json!({}))
    });
    // Wait until the upload is blocked on the writer's row lock: it has
    // classified row 5 as unchanged already.
    let mut waited = 0;
    loop {
        let waiting: i64 = server
            .query_one("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%sync_apply_changes%'", &[])
            .unwrap()
            .get(0);
        if waiting > 0 {
            break;
        }
        waited += 1;
        assert!(waited < 200, "the upload never waited for the writer");
        thread::sleep(Duration::from_millis(25));
    }
    writer.batch_execute("COMMIT").unwrap();
    let result = uploader.join().unwrap();

    let kinds: Vec<(Value, Value)> =
        result["conflicts"].as_array().unwrap().iter().map(|c| (c["key"].clone(), c["kind"].clone())).collect();
    assert!(kinds.contains(&(json!([5]), json!("both_updated"))), "{result}");
    assert!(kinds.contains(&(json!([500]), json!("both_inserted"))), "{result}");
    assert_eq!(result["applied"], 1, "row 6 applies: {result}");
    let titles: Vec<(i64, String)> = server
        .query("SELECT id, title FROM notes WHERE id IN (5, 6, 500) ORDER BY id", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(titles, [(5, "server edit".into()), (6, "untouched by the server".into()), (500, "server insert".into())]);
}

/// A device killed while its upload is being applied (the gateway, or the
/// server session, finishes it) starts again and sends the same upload,
/// now with a later edit of the row it inserted, while the first is still
/// running. The second must wait for the first and build on it: no
/// invented `both_inserted`, and the later edit kept.
#[test]
fn a_retry_sent_while_its_first_attempt_still_runs_builds_on_it() {
    let db = TestDb::new("retry_racing");
    let mut server = setup(&db);
    let insert = |title: &str| {
        json!({"format": 1, "scope": "s", "origin": "C", "tables": [{"name": "notes", "columns": ["id", "title", "body"],
               "rows": [{"op": "upsert", "seq": 1, "values": [500, title, null]}]}]})
    };
    let options = json!({"upload_id": "u1", "replica": "r1"});
    let mut first = db.connect();
    first.batch_execute("BEGIN").unwrap();
    assert_eq!(apply(&mut first, &insert("inserted"), options.clone())["applied"], 1);
    // The retry arrives while the first attempt's transaction is open.
    let retry = {
        let (changeset, options, url) = (insert("edited after"), options.clone(), db.url.clone());
        thread::spawn(move || {
            let mut again = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            apply(&mut again, &changeset, options)
        })
    };
    thread::sleep(Duration::from_millis(300));
    first.batch_execute("COMMIT").unwrap();
    let retried = retry.join().unwrap();
    assert_eq!(retried["conflicts"], json!([]), "{retried}");
    let title: String = server.query_one("SELECT title FROM notes WHERE id = 500", &[]).unwrap().get(0);
    assert_eq!(title, "edited after", "the later edit is kept");
    let logged: i64 = server.query_one("SELECT count(*) FROM tandem.conflicts", &[]).unwrap().get(0);
    assert_eq!(logged, 0);
}

/// Helper 73 (MEDIUM): a resolver's row was written as an upsert, so the
/// server's BEFORE INSERT trigger ran on it and then its BEFORE UPDATE
/// trigger on what that left: a trigger that is not idempotent (one that
/// appends) changed the row twice. A row the server holds is now updated,
/// as any write of an existing row, and its triggers run once.
#[test]
fn a_resolvers_row_runs_the_servers_triggers_once() {
    let db = TestDb::new("merged_triggers");
    let mut server = setup(&db);
    server
        .batch_execute(
            "CREATE FUNCTION mark() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.body := coalesce(NEW.body, '') || '+'; RETURN NEW; END $$;
             CREATE TRIGGER mark BEFORE INSERT OR UPDATE ON notes FOR EACH ROW EXECUTE FUNCTION mark();",
        )
        .unwrap();
    let mut a = db.connect();
    let mut b = db.connect();
    let base = versions(&mut a)[&7].clone();
    set_policy(&mut server, "public.keep_both");
    apply(&mut a, &edit("A", 7, &base, 1, "from A"), json!({}));
    let body: String = server.query_one("SELECT body FROM notes WHERE id = 7", &[]).unwrap().get(0);
    assert_eq!(body, "+", "a plain update runs the trigger once");
    let answer = apply(&mut b, &edit("B", 7, &base, 1, "from B"), json!({}));
    assert_eq!(answer["conflicts"][0]["decision"], "merged", "{answer}");
    let (title, body): (String, String) =
        server.query_one("SELECT title, body FROM notes WHERE id = 7", &[]).map(|r| (r.get(0), r.get(1))).unwrap();
    assert_eq!((title.as_str(), body.as_str()), ("from A | from B", "++"), "the resolver's row ran the trigger once more");
    assert_eq!(answer["conflicts"][0]["row"]["body"], "++", "{answer}");
}

/// Helper 77: a device deleted a customer it had seen with no orders;
/// meanwhile another device added an order under it. The delete went up on
/// the customer's unchanged version, and the server's `ON DELETE CASCADE`
/// took the other device's order, logged nowhere. Such a delete is a
/// conflict the server wins: the customer stays with its order, and the
/// device takes both back. A delete whose cascade takes only rows the
/// device had received goes on as before.
#[test]
fn a_delete_whose_cascade_would_take_rows_the_device_never_received_is_a_conflict() {
    let schema = r#"
CREATE TABLE customers (id bigint PRIMARY KEY, tenant_id int NOT NULL, name text);
CREATE TABLE orders (id bigint PRIMARY KEY, tenant_id int NOT NULL, customer_id bigint REFERENCES customers ON DELETE CASCADE, total int);
INSERT INTO customers VALUES (1, 1, 'Ada'), (2, 1, 'Grace');
INSERT INTO orders VALUES (20, 1, 2, 5);
SELECT sync_provision('crm', '{"tables": [{"name": "customers", "filter": {"tenant_id": "tenant"}},
                                          {"name": "orders", "filter": {"tenant_id": "tenant"}}]}');
"#;
    let s = tandem_tests::local::Scenario::new("cascade_unseen", schema, "crm");
    let (a, b) = (s.store("a.db"), s.store("b.db"));
    s.sync(&a, json!({"params": {"tenant": 1}}));
    s.sync(&b, json!({"params": {"tenant": 1}}));
    tandem_tests::local::local(&a, "DELETE FROM customers WHERE id = 1; DELETE FROM customers WHERE id = 2");
    tandem_tests::local::local(&b, "INSERT INTO orders VALUES (10, 1, 1, 7)");
    s.sync(&b, json!({"params": {"tenant": 1}}));
    let report = s.sync(&a, json!({"params": {"tenant": 1}}));
    assert_eq!(report.conflicts.len(), 1, "{report:?}");
    let conflict = &report.conflicts[0];
    assert_eq!((conflict.table.as_str(), conflict.key.clone()), ("public.customers", vec![json!(1)]), "{report:?}");
    assert_eq!(conflict.decision, tandem_core::conflict::Decision::ServerWins);
    assert!(conflict.reason.as_deref().is_some_and(|r| r.contains("never received")), "{conflict:?}");
    let server = |sql: &str| s.server().query_one(sql, &[]).unwrap().get::<_, Option<String>>(0);
    assert_eq!(server("SELECT string_agg(id::text, ',' ORDER BY id) FROM customers").as_deref(), Some("1"), "customer 2 went");
    assert_eq!(server("SELECT string_agg(id::text, ',' ORDER BY id) FROM orders").as_deref(), Some("10"), "with the order A had");
    let logged: i64 = s.server().query_one("SELECT count(*) FROM tandem.conflicts", &[]).unwrap().get(0);
    assert_eq!(logged, 1);
    s.sync(&a, json!({"params": {"tenant": 1}}));
    for file in [&a, &b] {
        s.sync(file, json!({"params": {"tenant": 1}}));
        tandem_tests::local::assert_converged(&mut s.server(), file.connection(), "crm", &json!({"tenant": 1}));
    }
    assert_eq!(tandem_tests::local::local_count(&a, "SELECT count(*) FROM orders WHERE id = 10"), 1, "A has the order back");
}

/// Helper 81: another tenant's row under this tenant's (an order of tenant
/// 2 for a customer of tenant 1, which the schema allows) is never the
/// deleting device's to receive, whenever it came: the customer's delete
/// would take it, and is a conflict the server wins instead.
#[test]
fn a_delete_whose_cascade_would_take_another_tenants_row_is_a_conflict() {
    let schema = r#"
CREATE TABLE customers (id bigint PRIMARY KEY, tenant_id int NOT NULL, name text);
CREATE TABLE orders (id bigint PRIMARY KEY, tenant_id int NOT NULL, customer_id bigint REFERENCES customers ON DELETE CASCADE, total int);
INSERT INTO customers VALUES (1, 1, 'Ada');
INSERT INTO orders VALUES (10, 2, 1, 7);
SELECT sync_provision('crm', '{"tables": [{"name": "customers", "filter": {"tenant_id": "tenant"}},
                                          {"name": "orders", "filter": {"tenant_id": "tenant"}}]}');
"#;
    let s = tandem_tests::local::Scenario::new("cascade_other_tenant", schema, "crm");
    let a = s.store("a.db");
    s.sync(&a, json!({"params": {"tenant": 1}}));
    tandem_tests::local::local(&a, "DELETE FROM customers WHERE id = 1");
    let report = s.sync(&a, json!({"params": {"tenant": 1}}));
    assert_eq!(report.conflicts.len(), 1, "{report:?}");
    assert!(report.conflicts[0].reason.as_deref().is_some_and(|r| r.contains("outside its partition")), "{report:?}");
    let orders: i64 = s.server().query_one("SELECT count(*) FROM orders", &[]).unwrap().get(0);
    assert_eq!(orders, 1, "tenant 2's order stays");
    s.sync(&a, json!({"params": {"tenant": 1}}));
    tandem_tests::local::assert_converged(&mut s.server(), a.connection(), "crm", &json!({"tenant": 1}));
}

/// The same check for a client that leaves `seen` out (it is optional,
/// and a hostile device would): another tenant's rows are never the
/// uploader's to remove, whatever it says it received (helper 88).
#[test]
fn a_delete_without_seen_cannot_cascade_into_another_tenants_rows() {
    let schema = r#"
CREATE TABLE customers (id bigint PRIMARY KEY, tenant_id int NOT NULL, name text);
CREATE TABLE orders (id bigint PRIMARY KEY, tenant_id int NOT NULL, customer_id bigint REFERENCES customers ON DELETE CASCADE, total int);
INSERT INTO customers VALUES (1, 1, 'Ada');
INSERT INTO orders VALUES (10, 2, 1, 7), (11, 1, 1, 8);
SELECT sync_provision('crm', '{"tables": [{"name": "customers", "filter": {"tenant_id": "tenant"}},
                                          {"name": "orders", "filter": {"tenant_id": "tenant"}}]}');
"#;
    let s = tandem_tests::local::Scenario::new("cascade_other_tenant_unseen", schema, "crm");
    let token = s.register(json!({"tenant": 1}));
    let a = s.store("a.db");
    s.sync_as(&a, &token);
    let origin: String = a.connection().query_row("SELECT client_id FROM tandem_scopes", [], |r| r.get(0)).unwrap();
    let base: String = a.connection().query_row("SELECT tandem_version FROM tandem_base_1 WHERE id = 1", [], |r| r.get(0)).unwrap();
    let delete = json!({"format": 1, "scope": "crm", "origin": origin, "tables": [{"name": "customers",
        "columns": ["id", "tenant_id", "name"], "rows": [{"op": "delete", "seq": 1, "base": base, "key": [1]}]}]});
    let mut server = s.server();
    let result: Value = server.query_one("SELECT sync_apply_changes('crm', $1, $2)", &[&delete, &json!({"token": token})]).unwrap().get(0);
    assert_eq!(result["conflicts"].as_array().map(Vec::len), Some(1), "{result}");
    assert!(result["conflicts"][0]["reason"].as_str().is_some_and(|r| r.contains("outside its partition")), "{result}");
    let orders: i64 = server.query_one("SELECT count(*) FROM orders", &[]).unwrap().get(0);
    assert_eq!(orders, 2, "tenant 2's order stays, and so does the customer with tenant 1's own");
}

/// A parent and its child in one table, both deleted in one upload, the
/// child edited on the server meanwhile: the child's delete loses its
/// conflict, so the parent's delete must not take it by the server's
/// cascade either (helper 87).
#[test]
fn a_delete_whose_cascade_would_take_a_row_whose_own_delete_lost_is_a_conflict() {
    let schema = r#"
CREATE TABLE tasks (id bigint PRIMARY KEY, parent_id bigint REFERENCES tasks ON DELETE CASCADE, title text);
INSERT INTO tasks VALUES (1, NULL, 'parent'), (2, 1, 'child');
SELECT sync_provision('pm', '{"tables": [{"name": "tasks"}]}');
"#;
    let s = tandem_tests::local::Scenario::new("self_cascade_lost_delete", schema, "pm");
    let a = s.store("a.db");
    s.sync(&a, json!({}));
    tandem_tests::local::local(&a, "DELETE FROM tasks WHERE id IN (2, 1)");
    s.server().batch_execute("UPDATE tasks SET title = 'child, edited' WHERE id = 2").unwrap();
    let report = s.sync(&a, json!({}));
    assert_eq!(report.conflicts.len(), 2, "{report:?}");
    let titles: Vec<String> = s.server().query("SELECT title FROM tasks ORDER BY id", &[]).unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(titles, ["parent", "child, edited"], "the server keeps the edit its log says won");
    s.sync(&a, json!({}));
    tandem_tests::local::assert_converged(&mut s.server(), a.connection(), "pm", &json!({}));

    // The same upload without `seen`, as a caller of the SQL API may send.
    let origin: String = a.connection().query_row("SELECT client_id FROM tandem_scopes", [], |r| r.get(0)).unwrap();
    let base = |id: i64| -> String {
        a.connection().query_row("SELECT tandem_version FROM tandem_base_1 WHERE id = ?1", [id], |r| r.get(0)).unwrap()
    };
    let delete = json!({"format": 1, "scope": "pm", "origin": origin, "tables": [{"name": "tasks", "columns": ["id", "parent_id", "title"],
        "rows": [{"op": "delete", "seq": 1, "base": base(1), "key": [1]}, {"op": "delete", "seq": 2, "base": base(2), "key": [2]}]}]});
    let mut server = s.server();
    server.batch_execute("UPDATE tasks SET title = 'child, edited again' WHERE id = 2").unwrap();
    let result: Value =
        server.query_one("SELECT sync_apply_changes('pm', $1, $2)", &[&delete, &json!({"client_id": origin})]).unwrap().get(0);
    assert_eq!(result["conflicts"].as_array().map(Vec::len), Some(2), "{result}");
    let rows: i64 = server.query_one("SELECT count(*) FROM tasks", &[]).unwrap().get(0);
    assert_eq!(rows, 2, "{result}");
}
