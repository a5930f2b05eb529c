//! The local side against a real server: changes both ways, every conflict
//! under every policy, pulls that never overwrite unsent changes, crashes
//! between steps, exact types, and bad input.

use postgres::Client;
use rusqlite::Connection;
use serde_json::{json, Value};
use tandem_core::options::SelectOptions;
use tandem_local::{PostgresRemote, Remote, Store, SyncOptions};
use tandem_tests::local::{assert_converged, local, local_count, local_dump, local_value, server_dump, Interfering, Scenario};

const SCHEMA: &str = r#"
CREATE TABLE customers (id bigint PRIMARY KEY, tenant_id int NOT NULL, name text NOT NULL, email text UNIQUE);
CREATE TABLE orders (id bigint PRIMARY KEY, tenant_id int NOT NULL, customer_id bigint REFERENCES customers, total numeric(12,2));
CREATE TABLE "Order Lines" ("Order Id" bigint REFERENCES orders (id) ON DELETE CASCADE, "Line No" int,
                            "SKU" text, PRIMARY KEY ("Order Id", "Line No"));
INSERT INTO customers VALUES (1, 1, 'Ada', 'ada@a.test'), (2, 1, 'Grace', NULL), (3, 2, 'Linus', NULL), (4, 1, 'Alan', NULL);
INSERT INTO orders VALUES (10, 1, 1, 10.00), (11, 1, 2, 11.50), (20, 2, 3, 20.00);
INSERT INTO "Order Lines" VALUES (10, 1, 'A'), (10, 2, 'B'), (11, 1, 'C'), (20, 1, 'D');
SELECT sync_provision('crm', '{"tables": [
  {"name": "customers", "filter": {"tenant_id": "tenant"}},
  {"name": "orders", "filter": {"tenant_id": "tenant"}},
  {"name": "\"Order Lines\"", "filter": {"via": "orders", "on": {"Order Id": "id"}}}]}');
CREATE FUNCTION public.join_names(c jsonb) RETURNS jsonb LANGUAGE sql AS $$
  SELECT CASE WHEN c->'server_row' IS NULL OR c->'client_row' = 'null' OR c->'server_row' = 'null' THEN '"client_wins"'::jsonb
         ELSE jsonb_build_object('name', (c->'server_row'->>'name') || ' & ' || (c->'client_row'->>'name')) END $$;
"#;

/// Sets scope `crm`'s conflict policy, as its owner does.
fn set_policy(s: &Scenario, policy: &str) {
    let setup = json!({"policy": policy, "tables": [
        {"name": "customers", "filter": {"tenant_id": "tenant"}},
        {"name": "orders", "filter": {"tenant_id": "tenant"}},
        {"name": "\"Order Lines\"", "filter": {"via": "orders", "on": {"Order Id": "id"}}}]});
    s.server().execute("SELECT sync_provision('crm', $1)", &[&setup]).unwrap();
}

fn setup(label: &str) -> Scenario {
    Scenario::new(label, SCHEMA, "crm")
}

fn tenant(n: i64) -> Value {
    json!({"params": {"tenant": n}})
}

/// `id:name` of each customer of tenant 1 on the server, by id.
fn tenant_one_customers(server: &mut Client) -> Option<String> {
    server_value(server, "SELECT string_agg(id || ':' || name, ',' ORDER BY id) FROM customers WHERE tenant_id = 1")
}

fn server_value(server: &mut Client, sql: &str) -> Option<String> {
    server.query(sql, &[]).unwrap().first().and_then(|r| r.get::<_, Option<String>>(0))
}

#[test]
fn inserts_updates_and_deletes_cross_both_ways() {
    let s = setup("both_ways");
    let file = s.store("a.db");
    let first = s.sync(&file, tenant(1));
    assert!(first.provisioned);
    assert_eq!(first.pulled, 3 + 2 + 3, "tenant 1's customers, orders, order lines");
    let mut server = s.server();
    assert_converged(&mut server, file.connection(), "crm", &json!({"tenant": 1}));

    local(
        &file,
        r#"
        INSERT INTO customers VALUES (5, 1, 'Katherine', NULL);
        UPDATE customers SET name = 'Grace H.' WHERE id = 2;
        DELETE FROM customers WHERE id = 4;
        INSERT INTO orders VALUES (12, 1, 5, 99.95);
        INSERT INTO "Order Lines" VALUES (12, 1, 'X'), (12, 2, 'Y');
        UPDATE "Order Lines" SET "SKU" = 'B2' WHERE "Order Id" = 10 AND "Line No" = 2;
        DELETE FROM "Order Lines" WHERE "Order Id" = 11;
    "#,
    );
    server
        .batch_execute(
            r#"
            INSERT INTO customers VALUES (6, 1, 'Barbara', 'barbara@a.test');
            UPDATE orders SET total = 12.25 WHERE id = 10;
            DELETE FROM "Order Lines" WHERE "Order Id" = 10 AND "Line No" = 1;
            UPDATE customers SET name = 'Linus T.' WHERE id = 3;
        "#,
        )
        .unwrap();
    let second = s.sync(&file, json!({}));
    assert_eq!(second.pushed, 8, "{second:?}");
    assert_eq!(second.conflicts.len(), 0);
    assert_eq!(second.pulled, 3, "tenant 2's change does not come down: {second:?}");
    assert_converged(&mut server, file.connection(), "crm", &json!({"tenant": 1}));
    assert_eq!(server_value(&mut server, "SELECT name FROM customers WHERE id = 2").as_deref(), Some("Grace H."));
    assert_eq!(
        server_value(&mut server, r#"SELECT string_agg("SKU", ',' ORDER BY "Line No") FROM "Order Lines" WHERE "Order Id" = 12"#)
            .as_deref(),
        Some("X,Y")
    );
    assert_eq!(local_count(&file, "SELECT count(*) FROM customers WHERE tenant_id = 2"), 0);
    let third = s.sync(&file, json!({}));
    assert_eq!((third.pushed, third.pulled), (0, 0), "a quiet round moves nothing: {third:?}");
}

/// Sets up one conflict of each kind between the file and the server.
fn stage_conflicts(s: &Scenario, file: &Store) {
    let mut server = s.server();
    local(
        file,
        "
        UPDATE customers SET name = 'Ada (device)' WHERE id = 1;
        INSERT INTO customers VALUES (7, 1, 'Seven (device)', NULL);
        DELETE FROM orders WHERE id = 11;
        UPDATE customers SET name = 'Alan (device)' WHERE id = 4;
        DELETE FROM \"Order Lines\" WHERE \"Order Id\" = 10 AND \"Line No\" = 1;
    ",
    );
    server
        .batch_execute(
            "
            UPDATE customers SET name = 'Ada (server)' WHERE id = 1;
            INSERT INTO customers VALUES (7, 1, 'Seven (server)', NULL);
            UPDATE orders SET total = 11.99 WHERE id = 11;
            DELETE FROM customers WHERE id = 4;
            DELETE FROM \"Order Lines\" WHERE \"Order Id\" = 10 AND \"Line No\" = 1;
        ",
        )
        .unwrap();
}

#[test]
fn every_conflict_is_settled_by_each_policy_and_logged() {
    for policy in ["server_wins", "client_wins", "public.join_names"] {
        let s = setup("policies");
        let file = s.store("a.db");
        s.sync(&file, tenant(1));
        stage_conflicts(&s, &file);
        set_policy(&s, policy);
        let report = s.sync(&file, json!({}));
        let mut kinds: Vec<(String, String)> =
            report.conflicts.iter().map(|c| (format!("{}{}", c.table, Value::Array(c.key.clone())), c.kind.as_str().to_string())).collect();
        kinds.sort();
        assert_eq!(
            kinds,
            [
                ("public.customers[1]".to_string(), "both_updated".to_string()),
                ("public.customers[4]".to_string(), "local_updated_server_deleted".to_string()),
                ("public.customers[7]".to_string(), "both_inserted".to_string()),
                ("public.orders[11]".to_string(), "local_deleted_server_updated".to_string()),
            ],
            "{policy}: both deleted is no conflict"
        );
        let mut server = s.server();
        let logged: i64 = server.query_one("SELECT count(*) FROM tandem.conflicts", &[]).unwrap().get(0);
        assert_eq!(logged, 4, "{policy}");
        let losing: Vec<(String, Option<String>, Option<String>)> = server
            .query("SELECT kind, client_row->>'name', server_row->>'name' FROM tandem.conflicts WHERE key = '[1]' AND table_name = 'public.customers'", &[])
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        assert_eq!(losing, [("both_updated".into(), Some("Ada (device)".into()), Some("Ada (server)".into()))], "both versions kept");
        let ada = server_value(&mut server, "SELECT name FROM customers WHERE id = 1");
        let expected = match policy {
            "server_wins" => "Ada (server)",
            "client_wins" => "Ada (device)",
            _ => "Ada (server) & Ada (device)",
        };
        assert_eq!(ada.as_deref(), Some(expected), "{policy}");
        // After one more round the file equals the server, whatever won.
        s.sync(&file, json!({}));
        assert_converged(&mut server, file.connection(), "crm", &json!({"tenant": 1}));
        let local_log: i64 = file.connection().query_row("SELECT count(*) FROM tandem_conflicts", [], |r| r.get(0)).unwrap();
        assert_eq!(local_log, 4, "the file keeps its own record of the conflicts");
    }
}

/// A delete the server's foreign key refuses is a conflict the server wins:
/// its log and the device's show the row the server kept (it was logged
/// without one: a delete carries no row, and none was read before it).
#[test]
fn a_refused_delete_is_logged_with_the_row_the_server_kept() {
    let s = setup("refused_delete");
    let file = s.store("a.db");
    s.sync(&file, tenant(1));
    local(&file, "DELETE FROM customers WHERE id = 1");
    let report = s.sync(&file, json!({}));
    assert_eq!(report.conflicts.len(), 1, "{report:?}");
    let conflict = &report.conflicts[0];
    assert_eq!(conflict.kind.as_str(), "constraint_violated");
    assert_eq!(conflict.server_row.as_ref().and_then(|r| r.get("name")), Some(&json!("Ada")), "{conflict:?}");
    let mut server = s.server();
    let logged = server_value(&mut server, "SELECT server_row->>'name' FROM tandem.conflicts WHERE kind = 'constraint_violated'");
    assert_eq!(logged.as_deref(), Some("Ada"));
    let kept = local_value(&file, "SELECT server_row FROM tandem_conflicts");
    assert!(kept.is_some_and(|row| row.contains("Ada")), "the file's log holds the server's row");
    assert_eq!(local_value(&file, "SELECT name FROM customers WHERE id = 1").as_deref(), Some("Ada"));
    assert_converged(&mut server, file.connection(), "crm", &json!({"tenant": 1}));
}

#[test]
fn a_unique_violation_becomes_a_conflict_and_the_rest_applies() {
    let s = setup("unique");
    let file = s.store("a.db");
    s.sync(&file, tenant(1));
    // The update comes after the refused insert in the batch, so the row by
    // row retry writes it on its own, checked against its own xmin.
    local(
        &file,
        "INSERT INTO customers VALUES (8, 1, 'Copycat', 'ada@a.test'); INSERT INTO customers VALUES (9, 1, 'Fine', 'fine@a.test');
                  UPDATE customers SET name = 'Grace edited' WHERE id = 2;",
    );
    let report = s.sync(&file, json!({}));
    assert_eq!(report.pushed, 2, "{report:?}");
    assert_eq!(report.conflicts.len(), 1);
    assert_eq!(report.conflicts[0].kind.as_str(), "constraint_violated");
    assert!(report.conflicts[0].reason.as_deref().unwrap_or_default().contains("customers_email_key"));
    let mut server = s.server();
    assert_eq!(server_value(&mut server, "SELECT name FROM customers WHERE id = 2").as_deref(), Some("Grace edited"));
    assert_converged(&mut server, file.connection(), "crm", &json!({"tenant": 1}));
    let kept: String = file.connection().query_row("SELECT client_row FROM tandem_conflicts", [], |r| r.get(0)).unwrap();
    assert!(kept.contains("Copycat"), "the refused row is kept: {kept}");
}

#[test]
fn parents_are_applied_before_children_both_ways() {
    let s = setup("fk_order");
    let file = s.store("a.db");
    s.sync(&file, tenant(1));
    local(
        &file,
        r#"
        INSERT INTO "Order Lines" VALUES (13, 1, 'child first');
        INSERT INTO orders VALUES (13, 1, 2, 1.00);
        INSERT INTO customers VALUES (15, 1, 'New parent', NULL);
        UPDATE orders SET customer_id = 15 WHERE id = 13;
        DELETE FROM "Order Lines" WHERE "Order Id" = 11;
        DELETE FROM orders WHERE id = 11;
    "#,
    );
    let report = s.sync(&file, json!({}));
    assert!(report.conflicts.is_empty(), "{report:?}");
    let mut server = s.server();
    server
        .batch_execute(
            r#"
            INSERT INTO customers VALUES (16, 1, 'Server parent', NULL);
            INSERT INTO orders VALUES (14, 1, 16, 2.00);
            INSERT INTO "Order Lines" VALUES (14, 1, 'server child');
            DELETE FROM orders WHERE id = 10;
        "#,
        )
        .unwrap();
    s.sync(&file, json!({}));
    assert_converged(&mut server, file.connection(), "crm", &json!({"tenant": 1}));
    assert_eq!(local_count(&file, r#"SELECT count(*) FROM "Order Lines" WHERE "Order Id" = 10"#), 0, "children of a deleted parent go too");
}

#[test]
fn a_pull_never_overwrites_an_unsent_change() {
    let s = setup("unsent");
    let file = s.store("a.db");
    s.sync(&file, tenant(1));
    local(&file, "UPDATE customers SET name = 'Grace (device)' WHERE id = 2");
    let mut server = s.server();
    server
        .batch_execute("UPDATE customers SET name = 'Grace (server)' WHERE id = 2; UPDATE customers SET name = 'Ada (server)' WHERE id = 1")
        .unwrap();
    // Pull only, through SQL on the file: the server's changeset after the
    // file's watermark, applied locally.
    let watermark: Option<String> = file.connection().query_row("SELECT watermark FROM tandem_scopes", [], |r| r.get(0)).unwrap();
    let mut remote = PostgresRemote::connect(&s.db.url, None).unwrap();
    let changeset = remote
        .select_changes(
            "crm",
            watermark.as_deref(),
            &SelectOptions { params: Some([("tenant".into(), json!(1))].into()), ..Default::default() },
        )
        .unwrap();
    let result: String = file.connection().query_row("SELECT sync_apply_changes('crm', ?1)", [&changeset], |r| r.get(0)).unwrap();
    let result: Value = serde_json::from_str(&result).unwrap();
    assert_eq!(result["skipped"], json!([{"table": "public.customers", "key": [2]}]));
    assert_eq!(local_value(&file, "SELECT name FROM customers WHERE id = 2").as_deref(), Some("Grace (device)"), "kept");
    assert_eq!(local_value(&file, "SELECT name FROM customers WHERE id = 1").as_deref(), Some("Ada (server)"), "the rest applies");
    // The unsent change goes up next and meets the server's policy.
    let report = s.sync(&file, json!({}));
    assert_eq!(report.conflicts.len(), 1);
    assert_eq!(report.conflicts[0].decision.as_str(), "server_wins");
    assert_eq!(local_value(&file, "SELECT name FROM customers WHERE id = 2").as_deref(), Some("Grace (server)"));
    assert_converged(&mut server, file.connection(), "crm", &json!({"tenant": 1}));
}

/// Found by the fault suite: answers lost twice in a row (a gateway
/// finishes each upload after the device was killed). A row the first
/// attempt wrote, left out of the second (the device did not change it
/// again in between), then edited or deleted: the edit was taken for a
/// conflict with the device's own write (server wins: the edit lost), and
/// the delete was left out of the upload (no base: "never sent"), so the
/// row came back.
#[test]
fn edits_after_answers_lost_twice_are_the_devices_own_and_deletes_are_sent() {
    let s = setup("lost_twice");
    let file = s.store("a.db");
    s.sync(&file, tenant(1));
    local(&file, "INSERT INTO customers VALUES (40, 1, 'Forty', NULL), (41, 1, 'Forty-one', NULL), (42, 1, 'Forty-two', NULL)");
    s.sync_answer_lost(&file, json!({}));
    local(&file, "UPDATE customers SET name = 'Ada again' WHERE id = 1");
    s.sync_answer_lost(&file, json!({}));

    local(&file, "UPDATE customers SET name = 'Forty, edited' WHERE id = 40; DELETE FROM customers WHERE id = 41");
    let report = s.sync(&file, json!({}));
    assert!(report.conflicts.is_empty(), "the device's own rows: {report:?}");
    let mut server = s.server();
    assert_eq!(server_value(&mut server, "SELECT name FROM customers WHERE id = 40").as_deref(), Some("Forty, edited"));
    assert_eq!(server_value(&mut server, "SELECT name FROM customers WHERE id = 41"), None, "the delete reached the server");
    assert_eq!(local_count(&file, "SELECT count(*) FROM customers WHERE id = 41"), 0, "and the row did not come back");
    assert_converged(&mut server, file.connection(), "crm", &json!({"tenant": 1}));
}

#[test]
fn a_connection_lost_between_steps_loses_nothing_and_applies_nothing_twice() {
    let s = setup("dropped");
    let file = s.store("a.db");
    s.sync(&file, tenant(1));
    local(&file, "UPDATE customers SET name = 'Ada once' WHERE id = 1; INSERT INTO customers VALUES (30, 1, 'Thirty', NULL);");
    let mut server = s.server();
    server.batch_execute("UPDATE orders SET total = 99.00 WHERE id = 10").unwrap();

    let mut dropping = Interfering { drop_after_apply: true, ..Interfering::new(&s.db.url) };
    let error = file.sync_with(&mut dropping, "crm", &SyncOptions::default()).unwrap_err();
    assert!(error.to_string().contains("connection dropped"), "{error}");
    server.batch_execute("SELECT sync_status('crm')").unwrap(); // folds the change log into tracking
    let version_after_first: Option<String> = server_value(&mut server, "SELECT tandem_version::text FROM tandem.track_1 WHERE id = 1");
    assert_eq!(server_value(&mut server, "SELECT name FROM customers WHERE id = 1").as_deref(), Some("Ada once"), "the server applied it");

    let mut dropping = Interfering { drop_after_select: true, ..Interfering::new(&s.db.url) };
    file.sync_with(&mut dropping, "crm", &SyncOptions::default()).unwrap_err();
    assert_eq!(
        local_value(&file, "SELECT total FROM orders WHERE id = 10").as_deref(),
        Some("10.00"),
        "nothing stored from the lost batch"
    );

    let report = s.sync(&file, json!({}));
    assert!(report.conflicts.is_empty(), "the re-upload is acknowledged, not a conflict: {report:?}");
    assert_eq!(report.pushed, 0, "nothing applied twice");
    server.batch_execute("SELECT sync_status('crm')").unwrap();
    assert_eq!(server_value(&mut server, "SELECT tandem_version::text FROM tandem.track_1 WHERE id = 1"), version_after_first);
    let logged: i64 = server.query_one("SELECT count(*) FROM tandem.conflicts", &[]).unwrap().get(0);
    assert_eq!(logged, 0);
    assert_converged(&mut server, file.connection(), "crm", &json!({"tenant": 1}));
    // And the next local edit of that row is not taken for a conflict.
    local(&file, "UPDATE customers SET name = 'Ada twice' WHERE id = 1");
    let report = s.sync(&file, json!({}));
    assert_eq!((report.pushed, report.conflicts.len()), (1, 0), "{report:?}");
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let s = setup("bad_local");
    let file = s.store("a.db");
    s.sync(&file, tenant(1));
    let before = local_dump(file.connection(), "crm");
    let conn = file.connection();
    let attempt = |sql: &str| -> String {
        conn.query_row(sql, [], |r| r.get::<_, Option<String>>(0)).err().map(|e| e.to_string()).unwrap_or_else(|| panic!("{sql} succeeded"))
    };
    let cases = [
        ("SELECT sync_apply_changes('crm', '{\"format\": 1, \"scope\": \"crm\"')", "malformed changeset"),
        ("SELECT sync_apply_changes('crm', '{\"format\": 1, \"scope\": \"other\", \"origin\": \"s\", \"tables\": []}')", "for scope \"other\""),
        ("SELECT sync_apply_changes('crm', '{\"format\": 1, \"scope\": \"crm\", \"origin\": \"s\", \"tables\": [{\"name\": \"customers\", \"columns\": [\"id\", \"tenant_id\", \"name\"], \"rows\": [{\"op\": \"upsert\", \"version\": \"5\", \"values\": [77, 1, \"fine\"]}, {\"op\": \"upsert\", \"version\": \"5\", \"values\": [\"x\", 1, \"bad\"]}]}]}')", "1 row(s) refused, nothing applied"),
        ("SELECT sync_apply_changes('crm', '{\"format\": 1, \"scope\": \"crm\", \"origin\": \"s\", \"tables\": [{\"name\": \"customers\", \"columns\": [\"id\", \"tenant_id\", \"name\"], \"rows\": [{\"op\": \"upsert\", \"version\": \"5\", \"respelled\": true, \"values\": [78, 1, \"x\"]}]}]}')", "carries \"respelled\""),
        ("SELECT sync_apply_changes('nope', '{\"format\": 1, \"scope\": \"nope\", \"origin\": \"s\", \"tables\": []}')", "unknown scope \"nope\""),
        // What only an upload carries, a server's rows may not (helper 64),
        // and a position no server gives is never stored as the next pull's.
        ("SELECT sync_apply_changes('crm', '{\"format\": 1, \"scope\": \"crm\", \"origin\": \"s\", \"tables\": [{\"name\": \"customers\", \"columns\": [\"id\", \"tenant_id\", \"name\"], \"rows\": [{\"op\": \"upsert\", \"version\": \"5\", \"seq\": 3, \"values\": [79, 1, \"x\"]}]}]}')", "no \"base\" or \"seq\""),
        ("SELECT sync_apply_changes('crm', '{\"format\": 1, \"scope\": \"crm\", \"origin\": \"s\", \"tables\": [{\"name\": \"customers\", \"columns\": [\"id\", \"tenant_id\", \"name\"], \"rows\": [{\"op\": \"upsert\", \"version\": \"5\", \"moved_from\": null, \"values\": [79, 1, \"x\"]}]}]}')", "carries no \"moved_from\""),
        ("SELECT sync_apply_changes('crm', '{\"format\": 1, \"scope\": \"crm\", \"origin\": \"s\", \"tables\": [], \"watermark\": \"garbage\"}')", "invalid watermark \"garbage\""),
        ("SELECT sync_select_changes('crm', 'yesterday')", "since must be NULL"),
        ("SELECT sync_run('postgres://localhost:1/none', 'crm', '{\"parms\": {}}')", "unknown field `parms`"),
    ];
    for (sql, fragment) in cases {
        let message = attempt(sql);
        assert!(message.contains(fragment), "{sql}: {message}");
    }
    assert_eq!(local_dump(file.connection(), "crm"), before, "nothing changed");
    let message = attempt(&format!("SELECT sync_run('{}', 'unknown_scope', '{{}}')", s.db.url));
    assert!(message.contains("the server has no scope \"unknown_scope\""), "{message}");
    let message = attempt("SELECT sync_run('postgres://postgres@127.0.0.1:1/nothing', 'crm')");
    assert!(message.contains("cannot reach the server"), "{message}");
}

#[test]
fn a_program_that_never_loaded_tandem_has_its_writes_synced() {
    let s = setup("plain_sqlite");
    let path = s.files.path("a.db");
    {
        let file = s.store("a.db");
        s.sync(&file, tenant(1));
    }
    let plain = Connection::open(&path).unwrap();
    plain
        .execute_batch("INSERT INTO customers VALUES (40, 1, 'written by another program', NULL); DELETE FROM customers WHERE id = 4;")
        .unwrap();
    drop(plain);
    let file = s.store("a.db");
    let report = s.sync(&file, json!({}));
    assert_eq!(report.pushed, 2, "{report:?}");
    let mut server = s.server();
    assert_eq!(server_value(&mut server, "SELECT name FROM customers WHERE id = 40").as_deref(), Some("written by another program"));
}

#[test]
fn a_server_schema_change_reaches_the_file_without_a_full_download() {
    let s = setup("schema_change");
    let file = s.store("a.db");
    s.sync(&file, tenant(1));
    let mut server = s.server();
    server
        .batch_execute(
            r#"
            ALTER TABLE customers ADD COLUMN phone text;
            UPDATE customers SET phone = '+1-555-' || id;
            SELECT sync_provision('crm', '{"tables": [
              {"name": "customers", "filter": {"tenant_id": "tenant"}},
              {"name": "orders", "filter": {"tenant_id": "tenant"}},
              {"name": "\"Order Lines\"", "filter": {"via": "orders", "on": {"Order Id": "id"}}}]}');
        "#,
        )
        .unwrap();
    let report = s.sync(&file, json!({}));
    assert!(report.provisioned);
    assert_eq!(report.schema_version, 2);
    assert_eq!(report.pulled, 3, "only the changed table's rows come again: {report:?}");
    assert_eq!(local_value(&file, "SELECT phone FROM customers WHERE id = 1").as_deref(), Some("+1-555-1"));
    assert_converged(&mut server, file.connection(), "crm", &json!({"tenant": 1}));
}

#[test]
fn two_files_and_the_server_converge_after_random_edits() {
    use rand::Rng;
    let s = setup("random");
    let a = s.store("a.db");
    let b = s.store("b.db");
    s.sync(&a, tenant(1));
    s.sync(&b, tenant(1));
    let mut server = s.server();
    let mut rng = rand::rng();
    let mut next = 1000i64;
    for _round in 0..4 {
        for side in 0..3 {
            for _ in 0..rng.random_range(3..12) {
                next += 1;
                let id = rng.random_range(1..=next.min(1030));
                let sql = match rng.random_range(0..4) {
                    0 => format!("INSERT INTO customers VALUES ({next}, 1, 'c{next}', NULL)"),
                    1 => format!("UPDATE customers SET name = 'side{side}-{next}' WHERE id = {id}"),
                    2 => format!("DELETE FROM customers WHERE id = {id} AND id > 4"),
                    _ => format!("UPDATE orders SET total = {}.{:02} WHERE id IN (10, 11)", next % 100, next % 97),
                };
                match side {
                    0 => local(&a, &sql),
                    1 => local(&b, &sql),
                    _ => server.batch_execute(&sql).unwrap(),
                }
            }
        }
        for policy in ["server_wins", "client_wins"] {
            set_policy(&s, policy);
            s.sync(&a, json!({}));
            s.sync(&b, json!({}));
        }
    }
    // Quiet rounds until nothing moves.
    s.sync(&a, json!({}));
    s.sync(&b, json!({}));
    s.sync(&a, json!({}));
    let expected = server_dump(&mut server, "crm", &json!({"tenant": 1}));
    assert_eq!(local_dump(a.connection(), "crm"), expected);
    assert_eq!(local_dump(b.connection(), "crm"), expected);
}

/// Change counters the server has seen are never handed out again, even
/// after acknowledged and refused entries leave the log; otherwise a new
/// change would pass for a re-upload and be dropped.
#[test]
fn a_refused_change_does_not_make_later_changes_look_sent() {
    let s = setup("counter");
    let file = s.store("a.db");
    s.sync(&file, tenant(1));
    local(&file, "UPDATE customers SET name = 'first' WHERE id = 1");
    assert_eq!(s.sync(&file, json!({})).pushed, 1);
    // Only the acknowledged entry was in the log; now a refused one follows.
    local(&file, "UPDATE customers SET tenant_id = 'not a number' WHERE id = 2");
    let refused = s.sync(&file, json!({}));
    assert_eq!(refused.rejected.len(), 1, "{refused:?}");
    local(&file, "UPDATE customers SET name = 'second' WHERE id = 1");
    let report = s.sync(&file, json!({}));
    assert_eq!((report.pushed, report.conflicts.len()), (1, 0), "{report:?}");
    let mut server = s.server();
    assert_eq!(server_value(&mut server, "SELECT name FROM customers WHERE id = 1").as_deref(), Some("second"));
    assert_converged(&mut server, file.connection(), "crm", &json!({"tenant": 1}));
}

/// The server's answer to an upload carries its form of rewritten rows
/// (here numeric(12,2) pads 10.5 to 10.50); a local write made while the upload
/// was in flight is newer than that answer and must survive it, then go up.
#[test]
fn a_local_write_during_an_upload_outlives_the_servers_answer() {
    let s = setup("in_flight");
    let file = s.store("a.db");
    s.sync(&file, tenant(1));
    // Sent as 10.5 and 11.2, stored as 10.50 and 11.20: the answer carries
    // the server's form.
    local(&file, "UPDATE orders SET total = '10.5' WHERE id = 10; UPDATE orders SET total = '11.2' WHERE id = 11");
    let mut meddling = Interfering {
        write_after_apply: Some((s.files.path("a.db"), "UPDATE orders SET total = 20 WHERE id = 10")),
        ..Interfering::new(&s.db.url)
    };
    let report = file.sync_with(&mut meddling, "crm", &SyncOptions::default()).unwrap();
    // Had the answer overwritten it, 10.50 would be the file's row with no
    // change left to send; instead the write goes up in the same sync.
    assert_eq!((report.pushed, report.conflicts.len()), (3, 0), "{report:?}");
    assert_eq!(local_value(&file, "SELECT total FROM orders WHERE id = 11").as_deref(), Some("11.20"), "the server's form is taken");
    assert_eq!(
        local_value(&file, "SELECT printf('%.2f', total) FROM orders WHERE id = 10").as_deref(),
        Some("20.00"),
        "the newer local write stays"
    );
    let mut server = s.server();
    assert_eq!(server_value(&mut server, "SELECT total::text FROM orders WHERE id = 10").as_deref(), Some("20.00"));
    assert_converged(&mut server, file.connection(), "crm", &json!({"tenant": 1}));
}

/// Found by an attack: a conflict settled by an upload whose answer was
/// lost was in the server's log only; the retry acknowledged the change
/// and the file took the server's row with no entry in its own log.
#[test]
fn a_conflict_settled_by_an_upload_whose_answer_was_lost_reaches_the_files_log() {
    let s = setup("lost_conflict");
    let file = s.store("a.db");
    s.sync(&file, tenant(1));
    local(&file, "UPDATE customers SET name = 'device' WHERE id = 1; UPDATE customers SET name = 'device too' WHERE id = 2");
    s.server().batch_execute("UPDATE customers SET name = 'server' WHERE id = 1").unwrap();
    s.sync_answer_lost(&file, json!({}));
    let report = s.sync(&file, json!({}));
    assert_eq!(report.conflicts.len(), 1, "{report:?}");
    assert_eq!(local_count(&file, "SELECT count(*) FROM tandem_conflicts WHERE client_row LIKE '%\"device\"%'"), 1);
    assert_eq!(local_value(&file, "SELECT name FROM customers WHERE id = 1").as_deref(), Some("server"));
    let logged: i64 = s.server().query_one("SELECT count(*) FROM tandem.conflicts", &[]).unwrap().get(0);
    assert_eq!(logged, 1, "logged once on the server");
    let again = s.sync(&file, json!({}));
    assert!(again.conflicts.is_empty() && again.pushed == 0, "{again:?}");
}

/// The same, when the device changed the row again before the retry:
/// the lost batch goes again as it was, so its conflict comes back to the
/// file, and the later edit meets the server's row as a conflict of its own.
#[test]
fn a_conflict_settled_by_a_lost_upload_reaches_the_files_log_when_the_row_changed_since() {
    let s = setup("lost_conflict_edited");
    let file = s.store("a.db");
    s.sync(&file, tenant(1));
    local(&file, "UPDATE customers SET name = 'device' WHERE id = 1");
    s.server().batch_execute("UPDATE customers SET name = 'server' WHERE id = 1").unwrap();
    s.sync_answer_lost(&file, json!({}));
    local(&file, "UPDATE customers SET name = 'device, later' WHERE id = 1");
    let report = s.sync(&file, json!({}));
    let lost: Vec<_> = report.conflicts.iter().map(|c| c.client_row.as_ref().map(|r| r["name"].clone())).collect();
    assert_eq!(lost, [Some(json!("device")), Some(json!("device, later"))], "{report:?}");
    assert_eq!(local_count(&file, "SELECT count(*) FROM tandem_conflicts WHERE client_row LIKE '%\"device\"%'"), 1);
    assert_eq!(local_value(&file, "SELECT name FROM customers WHERE id = 1").as_deref(), Some("server"));
    let logged: i64 = s.server().query_one("SELECT count(*) FROM tandem.conflicts", &[]).unwrap().get(0);
    assert_eq!(logged, 2, "each lost edit logged once on the server");
    assert_converged(&mut s.server(), file.connection(), "crm", &json!({"tenant": 1}));
}

/// Found by the fault suite: a row deleted, the delete sent, and the row
/// written again before the server's answer was recorded. Recording that
/// the server applied the delete removed the new row from the file, and
/// its change then looked like an insert never sent: silently lost.
#[test]
fn a_row_written_again_while_its_delete_is_in_flight_survives() {
    let s = setup("delete_in_flight");
    let file = s.store("a.db");
    s.sync(&file, tenant(1));
    local(&file, "DELETE FROM customers WHERE id = 4");
    let mut meddling = Interfering {
        write_after_apply: Some((s.files.path("a.db"), "INSERT INTO customers VALUES (4, 1, 'Alan again', NULL)")),
        ..Interfering::new(&s.db.url)
    };
    file.sync_with(&mut meddling, "crm", &SyncOptions::default()).unwrap();
    assert_eq!(local_value(&file, "SELECT name FROM customers WHERE id = 4").as_deref(), Some("Alan again"), "the new row stays");
    let report = s.sync(&file, json!({}));
    assert!(report.conflicts.is_empty(), "{report:?}");
    let mut server = s.server();
    assert_eq!(server_value(&mut server, "SELECT name FROM customers WHERE id = 4").as_deref(), Some("Alan again"));
    assert_converged(&mut server, file.connection(), "crm", &json!({"tenant": 1}));
}

/// An upload of many batches reads each key's latest change from one
/// snapshot of the log; a write made between batches (here by another
/// program, after the first batch was applied) makes it take a new one, so
/// the write goes up in the same round, and a refused row does not stop the
/// rest. Every key goes up once, except the one written again after it went.
#[test]
fn an_upload_of_many_batches_sends_each_latest_change_once() {
    let s = setup("many_batches");
    let file = s.store("a.db");
    s.sync(&file, tenant(1));
    let mut edits = String::new();
    for id in 100..=110 {
        edits += &format!("INSERT INTO customers VALUES ({id}, 1, 'c{id}', NULL);");
    }
    edits += "INSERT INTO customers VALUES (120, 'not a number', 'refused', NULL);";
    for id in 111..=119 {
        edits += &format!("INSERT INTO customers VALUES ({id}, 1, 'c{id}', NULL);");
    }
    edits += "UPDATE customers SET name = name || ' edited' WHERE id BETWEEN 100 AND 104;";
    local(&file, &edits);
    let mut meddling = Interfering {
        write_after_apply: Some((
            s.files.path("a.db"),
            "UPDATE customers SET name = 'again' WHERE id = 105; UPDATE customers SET name = 'later' WHERE id = 115; \
             INSERT INTO customers VALUES (200, 1, 'Two hundred', NULL)",
        )),
        ..Interfering::new(&s.db.url)
    };
    let options = SyncOptions { max_rows: Some(3), ..SyncOptions::default() };
    let report = file.sync_with(&mut meddling, "crm", &options).unwrap();
    assert_eq!((report.pushed, report.conflicts.len(), report.rejected.len()), (22, 0, 1), "{report:?}");
    let mut server = s.server();
    for (id, name) in [(100, "c100 edited"), (105, "again"), (115, "later"), (119, "c119"), (200, "Two hundred")] {
        assert_eq!(
            server_value(&mut server, &format!("SELECT name FROM customers WHERE id = {id}")).as_deref(),
            Some(name),
            "customer {id}"
        );
    }
    assert_eq!(
        local_count(&file, "SELECT count(*) FROM temp.sqlite_master WHERE name LIKE 'tandem_pending%'"),
        0,
        "the round drops its snapshots"
    );
    assert_converged(&mut server, file.connection(), "crm", &json!({"tenant": 1}));

    // A round that dies after the server applied its first batch leaves no
    // snapshot behind, and the next round sends the rest.
    local(&file, "UPDATE customers SET name = name || ' offline' WHERE id BETWEEN 100 AND 119");
    let mut dropping = Interfering { drop_after_apply: true, ..Interfering::new(&s.db.url) };
    let error = file.sync_with(&mut dropping, "crm", &options).unwrap_err();
    assert!(error.to_string().contains("connection dropped"), "{error}");
    assert_eq!(
        local_count(&file, "SELECT count(*) FROM temp.sqlite_master WHERE name LIKE 'tandem_pending%'"),
        0,
        "a failed round drops its snapshots too"
    );
    let report = file.sync_with(&mut PostgresRemote::connect(&s.db.url, None).unwrap(), "crm", &options).unwrap();
    assert_eq!(
        (report.pushed, report.conflicts.len()),
        (17, 0),
        "the three applied before the drop are acknowledged, not sent again: {report:?}"
    );
    assert_eq!(server_value(&mut server, "SELECT count(*)::text FROM customers WHERE name LIKE '% offline'").as_deref(), Some("20"));
    assert_converged(&mut server, file.connection(), "crm", &json!({"tenant": 1}));
}

/// Two syncs of one file at once take turns: each conflict is settled and
/// logged once, on both sides.
#[test]
fn two_syncs_of_one_file_at_once_take_turns() {
    let s = setup("two_at_once");
    let path = s.files.path("a.db");
    let file = Store::open(&path).unwrap();
    s.sync(&file, tenant(1));
    stage_conflicts(&s, &file);
    let url = s.db.url.clone();
    let runs: Vec<_> = (0..2)
        .map(|_| {
            let (url, path) = (url.clone(), path.clone());
            std::thread::spawn(move || {
                let store = Store::open(&path).unwrap();
                store.sync(&url, "crm", &SyncOptions::default()).unwrap()
            })
        })
        .collect();
    for run in runs {
        run.join().unwrap();
    }
    let mut server = s.server();
    let logged: i64 = server.query_one("SELECT count(*) FROM tandem.conflicts", &[]).unwrap().get(0);
    assert_eq!(logged, 4, "each conflict once on the server");
    assert_eq!(local_count(&file, "SELECT count(*) FROM tandem_conflicts"), 4, "and once in the file");
    assert_converged(&mut server, file.connection(), "crm", &json!({"tenant": 1}));
}

/// Tandem's own tables dropped from a file: a clear error that says what
/// to do, and doing it converges without losing the file's rows.
#[test]
fn a_file_whose_tracking_was_dropped_says_what_to_do() {
    let s = setup("dropped_tracking");
    let file = s.store("a.db");
    s.sync(&file, tenant(1));
    let log: String = file
        .connection()
        .query_row("SELECT 'tandem_log_' || id FROM tandem_tables WHERE name = 'public.customers'", [], |r| r.get(0))
        .unwrap();
    local(&file, &format!("UPDATE customers SET name = 'edited before' WHERE id = 1; DROP TABLE {log};"));
    let error = file.sync(&s.db.url, "crm", &SyncOptions::default()).unwrap_err().to_string();
    assert!(error.contains(&log) && error.contains("sync_deprovision"), "{error}");
    local(&file, "SELECT sync_deprovision('crm')");
    let report = s.sync(&file, tenant(1));
    assert!(report.conflicts.iter().all(|c| c.key == vec![json!(1)]), "rows equal to the server's are no conflict: {report:?}");
    assert_converged(&mut s.server(), file.connection(), "crm", &json!({"tenant": 1}));
}

/// Found profiling a wide scope: each round that brought rows left a
/// keyless counter mark in the table's log above the acknowledged
/// counter, so a device that only pulls grew its logs by a row a round,
/// and every later round read every such table's log for changes to send.
/// Now a table's log holds one mark at most, and a round that sends
/// nothing leaves nothing to send.
#[test]
fn a_device_that_only_pulls_keeps_one_counter_mark_and_nothing_to_send() {
    let s = setup("pull_only_marks");
    let file = s.store("a.db");
    s.sync(&file, tenant(1));
    let mut server = s.server();
    for round in 0..5 {
        server.execute("UPDATE customers SET name = name || '.' WHERE id = 1", &[]).unwrap();
        let report = s.sync(&file, json!({}));
        assert_eq!((report.pulled, report.pushed), (1, 0), "round {round}");
    }
    let id = local_count(&file, "SELECT id FROM tandem_tables WHERE name = 'public.customers'");
    let log = local_count(&file, &format!("SELECT count(*) FROM tandem_log_{id}"));
    assert!(log <= 1, "the log of a table the device never wrote holds {log} rows");
    let status: String = file.connection().query_row("SELECT sync_status('crm')", [], |r| r.get(0)).unwrap();
    let status: Value = serde_json::from_str(&status).unwrap();
    assert!(status["tables"].as_array().unwrap().iter().all(|t| t["pending"] == json!(0)), "{status}");
    // The counter still never goes back: a local write after the pulls is
    // sent, and the server's answer does not undo it.
    local(&file, "UPDATE customers SET name = 'Ada (device)' WHERE id = 1");
    let report = s.sync(&file, json!({}));
    assert_eq!(report.pushed, 1);
    assert_eq!(server_value(&mut server, "SELECT name FROM customers WHERE id = 1").as_deref(), Some("Ada (device)"));
    assert_converged(&mut server, file.connection(), "crm", &json!({"tenant": 1}));
}

/// A table the file held before it synced may take NULL in a key column
/// (SQLite allows it in a key that is not `INTEGER PRIMARY KEY`). No such
/// row can reach the server, and the log reads an entry without a key as
/// a counter mark, so such a row went nowhere without a word. Now the
/// rows the file held so are kept in `tandem_rejected`, and a write of one
/// more is refused where it is made.
#[test]
fn a_row_without_a_key_in_a_table_the_file_held_is_said_not_dropped() {
    let s = setup("keyless_rows");
    let path = s.files.path("a.db");
    {
        let plain = Connection::open(&path).unwrap();
        plain
            .execute_batch(
                r#"CREATE TABLE "Order Lines" ("Order Id" INTEGER, "Line No" INTEGER, "SKU" TEXT, PRIMARY KEY ("Order Id", "Line No"));
                   INSERT INTO "Order Lines" VALUES (10, 7, 'kept'), (10, NULL, 'no line number');"#,
            )
            .unwrap();
    }
    let file = s.store("a.db");
    s.sync(&file, tenant(1));
    let mut server = s.server();
    assert_eq!(
        server_value(&mut server, r#"SELECT "SKU" FROM "Order Lines" WHERE "Order Id" = 10 AND "Line No" = 7"#).as_deref(),
        Some("kept")
    );
    let kept =
        local_count(&file, r#"SELECT count(*) FROM tandem_rejected WHERE table_name LIKE '%Order Lines%' AND row LIKE '%no line number%'"#);
    assert_eq!(kept, 1, "the row without a key is not said anywhere");
    let refused = file.connection().execute(r#"INSERT INTO "Order Lines" VALUES (11, NULL, 'another')"#, []);
    let message = refused.expect_err("a row without a key was taken").to_string();
    assert!(message.contains("Line No"), "{message}");
    let refused = file.connection().execute(r#"UPDATE "Order Lines" SET "Line No" = NULL WHERE "Line No" = 7"#, []);
    assert!(refused.is_err(), "a key set to NULL was taken");
    // The row that had none is sent once it is given one.
    local(&file, r#"UPDATE "Order Lines" SET "Line No" = 8 WHERE "Line No" IS NULL"#);
    let report = s.sync(&file, json!({}));
    assert_eq!(report.pushed, 1, "{report:?}");
    assert_eq!(
        server_value(&mut server, r#"SELECT "SKU" FROM "Order Lines" WHERE "Order Id" = 10 AND "Line No" = 8"#).as_deref(),
        Some("no line number")
    );
    // Its record goes once the row has a key: sync_status's count drops.
    assert_eq!(local_count(&file, "SELECT count(*) FROM tandem_rejected WHERE kind = 'no_key'"), 0);
}

/// A round remembers, per connection, that the file's tracking was whole
/// at its schema version, and does not look again until the version moves.
/// A trigger dropped by another program while the connection stays open
/// moves it: the next round still finds the trigger gone.
#[test]
fn tracking_dropped_by_another_program_is_found_by_a_connection_that_checked_it() {
    let s = setup("dropped_elsewhere");
    let file = s.store("a.db");
    s.sync(&file, tenant(1));
    s.sync(&file, json!({}));
    let id = local_count(&file, "SELECT id FROM tandem_tables WHERE name = 'public.customers'");
    let other = Connection::open(s.files.path("a.db")).unwrap();
    other.execute_batch(&format!("DROP TRIGGER tandem_{id}_insert")).unwrap();
    drop(other);
    let error = file.sync(&s.db.url, "crm", &SyncOptions::default()).unwrap_err().to_string();
    assert!(error.contains(&format!("tandem_{id}_insert")) && error.contains("sync_deprovision"), "{error}");
}

/// A table the file held before its first sync, with another primary key
/// than the server's, is kept aside under another name; the note says so,
/// not that the server made the table again.
#[test]
fn a_table_the_file_held_with_another_key_is_kept_aside_and_said_as_such() {
    let s = setup("held_other_key");
    let path = s.files.path("a.db");
    Connection::open(&path)
        .unwrap()
        .execute_batch("CREATE TABLE customers (id TEXT PRIMARY KEY, tenant_id INTEGER, name TEXT, email TEXT); INSERT INTO customers VALUES ('x', 1, 'mine', NULL);")
        .unwrap();
    let file = s.store("a.db");
    s.sync(&file, tenant(1));
    let note = local_value(&file, "SELECT reason FROM tandem_rejected WHERE key = '[]'").unwrap_or_default();
    assert!(note.contains("customers_before_v") && note.contains("before it synced it") && !note.contains("made again"), "{note}");
    assert_eq!(local_count(&file, "SELECT count(*) FROM customers_before_v1 WHERE name = 'mine'"), 1);
    assert_converged(&mut s.server(), file.connection(), "crm", &json!({"tenant": 1}));
}

/// SQLite's REPLACE takes out a row that holds the same value in a unique
/// column other than the key, and fires no delete trigger for it (unless
/// the connection turned `recursive_triggers` on): that delete went
/// unsent, and the server kept the row for good. Now a unique index the
/// file's table has (here one a program added after the first sync) gets
/// triggers that log the rows such a write takes out.
#[test]
fn a_row_taken_out_by_replace_on_a_unique_column_is_deleted_on_the_server() {
    let s = setup("replace_unique");
    let file = s.store("a.db");
    s.sync(&file, tenant(1));
    // The server's names need not be unique; the program's own index says
    // the device's are.
    local(&file, "CREATE UNIQUE INDEX customers_name ON customers (name); INSERT INTO customers VALUES (60, 1, 'Zed', NULL)");
    s.sync(&file, json!({}));
    let plain = Connection::open(s.files.path("a.db")).unwrap();
    plain
        .execute_batch(
            "INSERT OR REPLACE INTO customers VALUES (50, 1, 'Alan', NULL); \
             UPDATE OR REPLACE customers SET name = 'Zed' WHERE id = 50;",
        )
        .unwrap();
    drop(plain);
    s.sync(&file, json!({}));
    let mut server = s.server();
    assert_eq!(tenant_one_customers(&mut server).as_deref(), Some("1:Ada,2:Grace,50:Zed"));
    assert_converged(&mut server, file.connection(), "crm", &json!({"tenant": 1}));
}

/// The REPLACE guards are looked at again once the file's schema moved,
/// and left alone when they are as they should be: making them again
/// would move the schema version itself, and every connection would then
/// check the file's layout and tracking once more on its next round.
#[test]
fn a_round_after_another_programs_ddl_leaves_the_files_schema_alone() {
    let s = setup("guards_kept");
    let file = s.store("a.db");
    s.sync(&file, tenant(1));
    local(&file, "CREATE UNIQUE INDEX customers_name ON customers (name)");
    s.sync(&file, json!({}));
    local(&file, "CREATE TABLE notes (body TEXT)");
    let before = local_count(&file, "PRAGMA schema_version");
    s.sync(&file, json!({}));
    assert_eq!(local_count(&file, "PRAGMA schema_version"), before, "the round changed a table or trigger of the file");
    // The guard is still there and still works.
    local(&file, "INSERT OR REPLACE INTO customers VALUES (50, 1, 'Alan', NULL)");
    s.sync(&file, json!({}));
    let mut server = s.server();
    assert_eq!(tenant_one_customers(&mut server).as_deref(), Some("1:Ada,2:Grace,50:Alan"));
}

/// A constraint only the file has (a program's unique index the server
/// lacks) refusing a row the server sends: the row is kept aside, said in
/// `tandem_rejected` (kind `not_stored`), the rest of the pull applies and
/// later rounds go on; once the file can take the row, a round takes it.
/// Before, the whole pull failed on that row, every round, for good.
#[test]
fn a_server_row_the_files_own_index_refuses_is_kept_aside_and_taken_later() {
    let s = setup("not_stored_pull");
    let file = s.store("a.db");
    s.sync(&file, tenant(1));
    local(&file, "CREATE UNIQUE INDEX customers_name ON customers (name)");
    let mut server = s.server();
    server.batch_execute("UPDATE customers SET name = 'Ada' WHERE id = 2; UPDATE orders SET total = 99 WHERE id = 10").unwrap();
    s.sync(&file, json!({}));
    assert_eq!(local_value(&file, "SELECT CAST(total AS TEXT) FROM orders WHERE id = 10").as_deref(), Some("99.00"));
    let said = "SELECT count(*) FROM tandem_rejected WHERE kind = 'not_stored' AND key = '[2]' AND reason LIKE '%UNIQUE%'";
    assert_eq!(local_count(&file, said), 1, "the refused row is not said");
    s.sync(&file, json!({}));
    assert_eq!(local_count(&file, said), 1, "said once, however many rounds");
    // The program makes room: the next round takes the server's row.
    local(&file, "UPDATE customers SET name = 'Ada L' WHERE id = 1");
    s.sync(&file, json!({}));
    assert_eq!(local_count(&file, "SELECT count(*) FROM tandem_rejected WHERE kind = 'not_stored'"), 0);
    assert_converged(&mut server, file.connection(), "crm", &json!({"tenant": 1}));
}

/// The same when the row comes back in the server's answer to an upload:
/// a delete the server refused (other rows reference the row) restores the
/// row, and the file's own unique index already holds its value in the row
/// a REPLACE wrote. Before, every later round failed on it.
#[test]
fn a_restored_row_the_files_own_index_refuses_does_not_stall_the_device() {
    let s = setup("not_stored_answer");
    let file = s.store("a.db");
    s.sync(&file, tenant(1));
    local(&file, "CREATE UNIQUE INDEX customers_name ON customers (name)");
    s.sync(&file, json!({}));
    // Customer 1 has orders: the server refuses its delete.
    local(&file, "INSERT OR REPLACE INTO customers VALUES (50, 1, 'Ada', NULL)");
    s.sync(&file, json!({}));
    let said = "SELECT count(*) FROM tandem_rejected WHERE kind = 'not_stored' AND key = '[1]'";
    assert_eq!(local_count(&file, said), 1, "the row the file could not take back is not said");
    local(&file, "UPDATE customers SET name = 'Zed' WHERE id = 2");
    let report = s.sync(&file, json!({}));
    assert_eq!(report.pushed, 1, "{report:?}");
    let mut server = s.server();
    assert_eq!(server_value(&mut server, "SELECT name FROM customers WHERE id = 2").as_deref(), Some("Zed"));
    local(&file, "DELETE FROM customers WHERE id = 50");
    s.sync(&file, json!({}));
    assert_eq!(local_count(&file, said), 0);
    assert_converged(&mut server, file.connection(), "crm", &json!({"tenant": 1}));
}

/// A REPLACE on a unique index a program made since the last round (its
/// triggers come at the start of the next): the row it took out is found
/// then, a key the file's base versions hold without a row, and its
/// delete is sent.
#[test]
fn a_row_taken_out_by_replace_on_a_new_index_before_any_round_is_deleted_on_the_server() {
    let s = setup("replace_new_index");
    let file = s.store("a.db");
    s.sync(&file, tenant(1));
    local(&file, "CREATE UNIQUE INDEX customers_name ON customers (name); INSERT OR REPLACE INTO customers VALUES (50, 1, 'Alan', NULL)");
    let report = s.sync(&file, json!({}));
    assert_eq!(report.pushed, 2, "{report:?}");
    let mut server = s.server();
    assert_eq!(tenant_one_customers(&mut server).as_deref(), Some("1:Ada,2:Grace,50:Alan"));
    assert_converged(&mut server, file.connection(), "crm", &json!({"tenant": 1}));
}

/// Found by an attack: a unique index that compares by another collation
/// than the column's (`COLLATE NOCASE`) takes out rows its guard, comparing
/// by the column's, did not see.
#[test]
fn a_row_taken_out_by_replace_on_a_nocase_index_is_deleted_on_the_server() {
    let customers = replace_after_index(
        "replace_nocase",
        "CREATE UNIQUE INDEX customers_name ON customers (name COLLATE NOCASE)",
        "INSERT OR REPLACE INTO customers VALUES (60, 1, 'ALAN', NULL)",
    );
    assert_eq!(customers.as_deref(), Some("1:Ada,2:Grace,60:ALAN"));
}

/// A file of tenant 1 whose program made `index` and synced since, then
/// wrote `write` (a REPLACE that takes a row out) and synced again: the
/// server's customers of tenant 1, once the file and the server agree.
fn replace_after_index(label: &str, index: &str, write: &str) -> Option<String> {
    let s = setup(label);
    let file = s.store("a.db");
    s.sync(&file, tenant(1));
    local(&file, index);
    s.sync(&file, json!({}));
    local(&file, write);
    s.sync(&file, json!({}));
    let mut server = s.server();
    assert_converged(&mut server, file.connection(), "crm", &json!({"tenant": 1}));
    tenant_one_customers(&mut server)
}

/// Found by an attack: a trigger of the file's own that drops a server row
/// (`RAISE(IGNORE)`) left the row's base version written with no row, which
/// the next check for rows a REPLACE took out read as a local delete, and
/// the server's row was deleted. The row is kept aside instead.
#[test]
fn a_server_row_a_trigger_of_the_file_ignores_is_kept_aside_and_never_deleted() {
    let s = setup("not_stored_ignored");
    let file = s.store("a.db");
    s.sync(&file, tenant(1));
    local(&file, "CREATE TRIGGER no_zed BEFORE INSERT ON customers WHEN NEW.name = 'Zed' BEGIN SELECT RAISE(IGNORE); END");
    let mut server = s.server();
    server.batch_execute("INSERT INTO customers VALUES (30, 1, 'Zed', NULL)").unwrap();
    s.sync(&file, json!({}));
    assert_eq!(local_count(&file, "SELECT count(*) FROM tandem_rejected WHERE kind = 'not_stored' AND key = '[30]'"), 1);
    local(&file, "CREATE UNIQUE INDEX customers_email ON customers (email)");
    s.sync(&file, json!({}));
    assert_eq!(server_value(&mut server, "SELECT name FROM customers WHERE id = 30").as_deref(), Some("Zed"));
    local(&file, "DROP TRIGGER no_zed");
    s.sync(&file, json!({}));
    assert_converged(&mut server, file.connection(), "crm", &json!({"tenant": 1}));
}

/// Found by an attack: a trigger of the file's own that rolls back sync's
/// whole transaction (`RAISE(ROLLBACK)`) left the rest of the batch written
/// outside any transaction, the watermark with it. The round now stops
/// with what to do, nothing of the batch stored.
#[test]
fn a_trigger_that_rolls_back_syncs_transaction_stops_the_round_with_nothing_half_stored() {
    let s = setup("not_stored_rollback");
    let file = s.store("a.db");
    s.sync(&file, tenant(1));
    let watermark = local_value(&file, "SELECT watermark FROM tandem_scopes");
    local(&file, "CREATE TRIGGER no_zed BEFORE INSERT ON customers WHEN NEW.name = 'Zed' BEGIN SELECT RAISE(ROLLBACK, 'no Zed'); END");
    let mut server = s.server();
    server.batch_execute("UPDATE customers SET name = 'Ada 2' WHERE id = 1; INSERT INTO customers VALUES (30, 1, 'Zed', NULL)").unwrap();
    let error = file.sync(&s.db.url, "crm", &SyncOptions::default()).unwrap_err().to_string();
    assert!(error.contains("RAISE(ABORT)"), "{error}");
    assert_eq!(local_value(&file, "SELECT watermark FROM tandem_scopes"), watermark);
    assert_eq!(local_value(&file, "SELECT name FROM customers WHERE id = 1").as_deref(), Some("Ada"));
    local(&file, "DROP TRIGGER no_zed");
    s.sync(&file, json!({}));
    assert_converged(&mut server, file.connection(), "crm", &json!({"tenant": 1}));
}

/// Found by an attack: a resync receives every row anew, so a row kept
/// aside that the server deleted meanwhile does not come; its entry stayed
/// and the next retry brought the deleted row back.
#[test]
fn a_resync_forgets_kept_rows_the_server_deleted() {
    let s = setup("not_stored_resync");
    let file = s.store("a.db");
    s.sync(&file, tenant(1));
    local(&file, "CREATE UNIQUE INDEX customers_name ON customers (name)");
    let mut server = s.server();
    server.batch_execute("INSERT INTO customers VALUES (30, 1, 'Ada', NULL)").unwrap();
    s.sync(&file, json!({}));
    assert_eq!(local_count(&file, "SELECT count(*) FROM tandem_rejected WHERE kind = 'not_stored'"), 1);
    server.batch_execute("DELETE FROM customers WHERE id = 30").unwrap();
    local(&file, "DROP INDEX customers_name");
    s.sync(&file, json!({"reinit": true}));
    assert_eq!(local_count(&file, "SELECT count(*) FROM customers WHERE id = 30"), 0);
    assert_converged(&mut server, file.connection(), "crm", &json!({"tenant": 1}));
}

/// Found by an attack: an `UPDATE` never names a generated column, so the
/// guard of a unique index on one (`UPDATE OF` its columns) never fired.
#[test]
fn a_row_taken_out_by_update_or_replace_on_a_generated_column_index_is_deleted_on_the_server() {
    let customers = replace_after_index(
        "replace_generated",
        "ALTER TABLE customers ADD COLUMN lname TEXT GENERATED ALWAYS AS (lower(name)) VIRTUAL; \
         CREATE UNIQUE INDEX customers_lname ON customers (lname)",
        "UPDATE OR REPLACE customers SET name = 'ALAN' WHERE id = 2",
    );
    assert_eq!(customers.as_deref(), Some("1:Ada,2:ALAN"));
}

/// A scope under `client_wins` and a file of tenant 1 whose program made a
/// unique index on customers' names, synced since.
fn client_wins_with_name_index(label: &str) -> (Scenario, Store) {
    let s = setup(label);
    set_policy(&s, "client_wins");
    let file = s.store("a.db");
    s.sync(&file, tenant(1));
    local(&file, "CREATE UNIQUE INDEX customers_name ON customers (name)");
    s.sync(&file, json!({}));
    (s, file)
}

/// Found by an attack: the REPLACE guard logged the row an `INSERT OR
/// IGNORE` collided with, though the write left it as it was; the row went
/// up unchanged on its old base version, and under `client_wins` it undid
/// the server's newer edit. Noted rows are logged only once they are gone.
#[test]
fn a_row_an_insert_or_ignore_leaves_is_not_sent() {
    let (s, file) = client_wins_with_name_index("ignore_not_sent");
    let mut server = s.server();
    server.batch_execute("UPDATE customers SET email = 'alan@server.test' WHERE id = 4").unwrap();
    local(&file, "INSERT OR IGNORE INTO customers VALUES (70, 1, 'Alan', NULL)");
    let report = s.sync(&file, json!({}));
    assert_eq!((report.pushed, report.conflicts.len()), (0, 0), "{report:?}");
    assert_eq!(server_value(&mut server, "SELECT email FROM customers WHERE id = 4").as_deref(), Some("alan@server.test"));
    assert_converged(&mut server, file.connection(), "crm", &json!({"tenant": 1}));
}

/// Found by an attack: a row the server restored (its delete refused) and
/// the file refused to take back left the file a base version with no row
/// and no log entry, which the check made when an index comes reads as a
/// delete a REPLACE made: an unrelated new index sent the settled delete
/// again, and under `client_wins` it deleted the server's row.
#[test]
fn a_kept_row_is_not_sent_as_a_delete_when_another_index_comes() {
    let (s, file) = client_wins_with_name_index("not_stored_no_resend");
    // Customer 1 has orders: the server refuses its delete and sends it back.
    local(&file, "INSERT OR REPLACE INTO customers VALUES (50, 1, 'Ada', NULL)");
    s.sync(&file, json!({}));
    assert_eq!(local_count(&file, "SELECT count(*) FROM tandem_rejected WHERE kind = 'not_stored' AND key = '[1]'"), 1);
    let mut server = s.server();
    server.batch_execute("DELETE FROM orders WHERE customer_id = 1").unwrap();
    local(&file, "CREATE UNIQUE INDEX customers_name_id ON customers (name, id)");
    let report = s.sync(&file, json!({}));
    assert!(report.conflicts.is_empty(), "{report:?}");
    assert_eq!(server_value(&mut server, "SELECT name FROM customers WHERE id = 1").as_deref(), Some("Ada"));
}

/// What `sync_run` fails with, called for tenant 1 on the file's own
/// connection as a program calls it.
fn sync_run_error(s: &Scenario, file: &Store) -> String {
    let sync = format!("SELECT sync_run('{}', 'crm', '{{\"params\": {{\"tenant\": 1}}}}')", s.db.url);
    file.connection().query_row(&sync, [], |r| r.get::<_, String>(0)).unwrap_err().to_string()
}

#[test]
fn a_connection_without_a_rollback_journal_is_refused_before_sync_writes_anything() {
    let s = setup("journal_off");
    let file = s.store("a.db");
    s.sync(&file, tenant(1));
    s.server().batch_execute("INSERT INTO customers VALUES (90, 1, 'New')").unwrap();
    let conn = file.connection();
    local(&file, "UPDATE customers SET name = 'Local' WHERE id = 1");
    // A program's own setting on the connection it syncs with: SQLite
    // then undoes no failed statement or transaction.
    let mode: String = conn.query_row("PRAGMA journal_mode = OFF", [], |r| r.get(0)).unwrap();
    assert_eq!(mode, "off");
    let before = local_dump(conn, "crm");
    let error = sync_run_error(&s, &file);
    assert!(error.contains("journal_mode = OFF") && error.contains("WAL"), "{error}");
    assert_eq!(local_dump(conn, "crm"), before, "nothing written");
    let mut server = s.server();
    assert_eq!(server_value(&mut server, "SELECT name FROM customers WHERE id = 1").as_deref(), Some("Ada"), "nothing sent");
    conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(())).unwrap();
    // Nor can it write a file the connection holds read-only.
    conn.execute_batch("PRAGMA query_only = ON").unwrap();
    let error = sync_run_error(&s, &file);
    assert!(error.contains("PRAGMA query_only = OFF"), "{error}");
    conn.execute_batch("PRAGMA query_only = OFF").unwrap();
    s.sync(&file, tenant(1));
    assert_eq!(local_count(&file, "SELECT count(*) FROM customers WHERE id = 90"), 1);
    assert_eq!(server_value(&mut server, "SELECT name FROM customers WHERE id = 1").as_deref(), Some("Local"));
}

#[test]
fn a_sync_inside_the_programs_open_transaction_is_refused_and_sends_nothing() {
    let s = setup("sync_in_transaction");
    let file = s.store("a.db");
    s.sync(&file, tenant(1));
    let conn = file.connection();
    let mut server = s.server();
    // What the server takes it cannot give back: a write the program then
    // rolls back would reach every device.
    for (open, undo) in [("BEGIN", "ROLLBACK"), ("SAVEPOINT program", "ROLLBACK TO program; RELEASE program")] {
        conn.execute_batch(&format!("{open}; UPDATE customers SET name = 'never committed' WHERE id = 1;")).unwrap();
        let error = sync_run_error(&s, &file);
        assert!(error.contains("open transaction"), "{open}: {error}");
        conn.execute_batch(undo).unwrap();
        assert_eq!(server_value(&mut server, "SELECT name FROM customers WHERE id = 1").as_deref(), Some("Ada"), "{open}");
    }
    s.sync(&file, tenant(1));
    assert_eq!(local_value(&file, "SELECT name FROM customers WHERE id = 1").as_deref(), Some("Ada"));
}

#[test]
fn a_temporary_table_that_hides_a_synced_one_is_refused_before_anything_is_sent() {
    let s = setup("temp_shadow");
    let file = s.store("a.db");
    s.sync(&file, tenant(1));
    let conn = file.connection();
    local(&file, "UPDATE main.customers SET name = 'Local' WHERE id = 1");
    let mut server = s.server();
    server.batch_execute("UPDATE customers SET name = 'Server' WHERE id = 2").unwrap();
    // An unqualified name finds a connection's temporary table first.
    for shadow in [
        "CREATE TEMP TABLE customers (id INTEGER PRIMARY KEY, tenant_id INTEGER, name TEXT, email TEXT)",
        "CREATE TEMP TABLE tandem_log_1 (x)",
    ] {
        conn.execute_batch(shadow).unwrap();
        let error = sync_run_error(&s, &file);
        assert!(error.contains("temporary") && error.contains("DROP TABLE temp."), "{shadow}: {error}");
        // A verify would compare the temporary table with the server's.
        let verify = format!("SELECT sync_verify('{}', 'crm', '{{}}')", s.db.url);
        let error = conn.query_row(&verify, [], |r| r.get::<_, String>(0)).unwrap_err().to_string();
        assert!(error.contains("temporary"), "{shadow}: {error}");
        assert_eq!(server_value(&mut server, "SELECT name FROM customers WHERE id = 1").as_deref(), Some("Ada"), "nothing sent");
        conn.execute_batch("DROP TABLE IF EXISTS temp.customers; DROP TABLE IF EXISTS temp.tandem_log_1").unwrap();
    }
    s.sync(&file, tenant(1));
    assert_eq!(server_value(&mut server, "SELECT name FROM customers WHERE id = 1").as_deref(), Some("Local"));
    assert_eq!(local_value(&file, "SELECT name FROM customers WHERE id = 2").as_deref(), Some("Server"));
    assert_converged(&mut server, file.connection(), "crm", &json!({"tenant": 1}));
}

#[test]
fn a_program_table_in_an_attached_database_is_never_taken_for_tandems() {
    let s = setup("attached_names");
    let file = s.store("a.db");
    s.sync(&file, tenant(1));
    let aux = s.files.path("aux.db");
    // A name Tandem uses in the file, in a database the program attached:
    // unqualified, SQLite looks for it there when the file has none.
    local(
        &file,
        &format!(
            "ATTACH '{}' AS aux; CREATE TABLE aux.tandem_sweep_1 (k TEXT); INSERT INTO aux.tandem_sweep_1 VALUES ('keep');",
            aux.display()
        ),
    );
    s.sync(&file, json!({"params": {"tenant": 1}, "reinit": true}));
    assert_eq!(local_value(&file, "SELECT k FROM aux.tandem_sweep_1").as_deref(), Some("keep"));
}
