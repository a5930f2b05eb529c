//! Multi-tenant sync under attack: each client gets only its partition, a
//! row that leaves a partition leaves the device, and the server refuses
//! every upload that reaches outside the client's partition.

use postgres::Client;
use serde_json::{json, Value};
use tandem_local::{Store, SyncOptions};
use tandem_tests::local::{assert_converged, local_dump, server_dump, Scenario};
use tandem_tests::{describe, json as query_json};

const SCHEMA: &str = r#"
CREATE TABLE customers (id bigint PRIMARY KEY, tenant_id int NOT NULL, name text NOT NULL);
CREATE TABLE orders (id bigint PRIMARY KEY, tenant_id int NOT NULL, customer_id bigint REFERENCES customers, total numeric(12,2));
CREATE TABLE order_items (order_id bigint REFERENCES orders ON DELETE CASCADE, line int, sku text, PRIMARY KEY (order_id, line));
CREATE TABLE products (sku text PRIMARY KEY, price numeric(10,2));
CREATE TABLE notes (id bigint PRIMARY KEY, tenant_id int NOT NULL, body text, secret text);
INSERT INTO customers SELECT t * 100 + i, t, 'customer ' || t || '-' || i FROM generate_series(1, 3) t, generate_series(1, 5) i;
INSERT INTO orders SELECT t * 1000 + i, t, t * 100 + i, i * 10 FROM generate_series(1, 3) t, generate_series(1, 4) i;
INSERT INTO order_items SELECT o.id, l, 'sku-' || o.id || '-' || l FROM orders o, generate_series(1, 2) l;
INSERT INTO products VALUES ('A', 1.00), ('B', 2.50);
INSERT INTO notes SELECT t * 10 + i, t, 'note ' || i, 'server-only secret ' || t FROM generate_series(1, 3) t, generate_series(1, 2) i;
SELECT sync_provision('crm', '{"tables": [
  {"name": "customers", "filter": {"tenant_id": "tenant"}},
  {"name": "orders", "filter": {"tenant_id": "tenant"}},
  {"name": "order_items", "filter": {"via": "orders", "on": {"order_id": "id"}}},
  {"name": "products", "direction": "download_only"},
  {"name": "notes", "columns": ["id", "tenant_id", "body"], "filter": {"tenant_id": "tenant"}}]}');
"#;

fn setup(label: &str) -> Scenario {
    Scenario::new(label, SCHEMA, "crm")
}

/// Every tenant id a local file holds, over the filtered tables.
fn tenants_in(store: &Store) -> Vec<i64> {
    let conn = store.connection();
    let mut statement = conn
        .prepare(
            "SELECT DISTINCT tenant_id FROM (SELECT tenant_id FROM customers UNION ALL SELECT tenant_id FROM orders \
             UNION ALL SELECT tenant_id FROM notes UNION ALL SELECT o.tenant_id FROM order_items i JOIN orders o ON o.id = i.order_id) \
             ORDER BY 1",
        )
        .unwrap();
    statement.query_map([], |r| r.get(0)).unwrap().collect::<rusqlite::Result<_>>().unwrap()
}

/// Keys of every row change in a pull made with `token`, per table.
fn keys_pulled(server: &mut Client, token: &str, since: Option<&str>) -> (Vec<(String, Value)>, String) {
    let mut since = since.map(str::to_string);
    let mut keys = Vec::new();
    loop {
        let changeset = query_json(server, "SELECT sync_select_changes('crm', $1, $2)", &[&since, &json!({"token": token, "max_rows": 7})]);
        for table in changeset["tables"].as_array().unwrap() {
            for row in table["rows"].as_array().unwrap() {
                let key = if row["op"] == "delete" { row["key"][0].clone() } else { row["values"][0].clone() };
                keys.push((table["name"].as_str().unwrap().to_string(), key));
            }
        }
        since = changeset["watermark"].as_str().map(str::to_string);
        if changeset["has_more"] != true {
            return (keys, since.unwrap_or_default());
        }
    }
}

#[test]
fn a_tenant_never_sees_another_tenants_rows_or_keys() {
    let s = setup("no_leak");
    let token_a = s.register(json!({"tenant": 1}));
    let a = s.store("a.db");
    s.sync_as(&a, &token_a);
    let mut server = s.server();
    let (_, mut watermark) = keys_pulled(&mut server, &token_a, None);

    // Tenant 2 lives its life: inserts, updates, deletes, and moves to tenant 3.
    server
        .batch_execute(
            "INSERT INTO customers VALUES (290, 2, 'new in 2'); UPDATE customers SET name = 'renamed' WHERE id = 201;
             DELETE FROM order_items WHERE order_id = 2001; DELETE FROM orders WHERE id = 2001;
             DELETE FROM customers WHERE id = 205; UPDATE orders SET tenant_id = 3 WHERE id = 2002;
             UPDATE notes SET tenant_id = 3 WHERE id = 21; TRUNCATE products;",
        )
        .unwrap();
    let (keys, next) = keys_pulled(&mut server, &token_a, Some(&watermark));
    watermark = next;
    let foreign: Vec<&(String, Value)> = keys.iter().filter(|(t, _)| t != "public.products").collect();
    assert!(foreign.is_empty(), "tenant 1 was sent keys of other tenants: {foreign:?}");
    assert_eq!(keys.len(), 2, "only the shared table's deletes: {keys:?}");

    // A move out of tenant 1 reaches tenant 1 as a delete, and a move in as an insert.
    server.batch_execute("UPDATE customers SET tenant_id = 2 WHERE id = 101; UPDATE customers SET tenant_id = 1 WHERE id = 301;").unwrap();
    let (keys, _) = keys_pulled(&mut server, &token_a, Some(&watermark));
    let mut keys: Vec<Value> = keys.into_iter().map(|(_, k)| k).collect();
    keys.sort_by_key(|k| k.as_i64());
    assert_eq!(keys, [json!(101), json!(301)]);

    let report = s.sync_as(&a, &token_a);
    assert!(report.rejected.is_empty() && report.conflicts.is_empty(), "{report:?}");
    assert_eq!(tenants_in(&a), [1]);
    assert_converged(&mut server, a.connection(), "crm", &json!({"tenant": 1}));
    let customers: Vec<i64> = a
        .connection()
        .prepare("SELECT id FROM customers ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    assert_eq!(customers, [102, 103, 104, 105, 301], "moved out and moved in");
}

#[test]
fn changing_parameters_without_a_new_registration_is_refused() {
    let s = setup("params");
    let token_a = s.register(json!({"tenant": 1}));
    let a = s.store("a.db");
    s.sync_as(&a, &token_a);
    let mut server = s.server();
    let attempts = [
        json!({"token": token_a, "params": {"tenant": 2}}),
        json!({"token": token_a, "params": {"tenant": [1, 2]}}),
        json!({"token": format!("{token_a}0")}),
        json!({"token": token_a.replace("tdm_", "tdm_x")}),
    ];
    for options in attempts {
        let error = server.query_one("SELECT sync_select_changes('crm', NULL, $1)", &[&options]).unwrap_err();
        let text = describe(&error);
        assert!(text.starts_with("22023") || text.starts_with("28000"), "{options}: {text}");
    }
    // A file bound to its parameters refuses to switch.
    let direct = s.store("direct.db");
    let one = SyncOptions { params: Some([("tenant".into(), json!(1))].into()), ..SyncOptions::default() };
    direct.sync(&s.db.url, "crm", &one).unwrap();
    let two = SyncOptions { params: Some([("tenant".into(), json!(2))].into()), ..SyncOptions::default() };
    let error = direct.sync(&s.db.url, "crm", &two).unwrap_err().to_string();
    assert!(error.contains("cannot switch"), "{error}");
    // And its client id, once used with tenant 1, cannot read tenant 2 directly either.
    let client_id: String = direct.connection().query_row("SELECT client_id FROM tandem_scopes", [], |r| r.get(0)).unwrap();
    let error = server
        .query_one("SELECT sync_select_changes('crm', NULL, $1)", &[&json!({"client_id": client_id, "params": {"tenant": 2}})])
        .unwrap_err();
    assert!(describe(&error).contains("is bound to parameters"), "{}", describe(&error));
    assert_eq!(tenants_in(&direct), [1]);

    // A first round the server refused binds the file to nothing: the next
    // may pass the parameters it should have.
    let typo = s.store("typo.db");
    let wrong = SyncOptions { params: Some([("tenant".into(), json!("one"))].into()), ..SyncOptions::default() };
    let error = typo.sync(&s.db.url, "crm", &wrong).unwrap_err().to_string();
    assert!(error.contains("tenant"), "{error}");
    typo.sync(&s.db.url, "crm", &one).unwrap_or_else(|e| panic!("the corrected parameters: {e}"));
    assert_eq!(tenants_in(&typo), [1]);
    // A misspelt parameter beside the right one filters nothing: refused,
    // and the file stays free for the corrected set.
    let misspelt = s.store("misspelt.db");
    let extra = SyncOptions { params: Some([("tenant".into(), json!(1)), ("tenat".into(), json!(1))].into()), ..SyncOptions::default() };
    let error = misspelt.sync(&s.db.url, "crm", &extra).unwrap_err().to_string();
    assert!(error.contains("\"tenat\"") && error.contains("check its spelling"), "{error}");
    misspelt.sync(&s.db.url, "crm", &one).unwrap_or_else(|e| panic!("the corrected parameters: {e}"));
    // Parameters beside a token are refused before anything is done.
    let both = SyncOptions { params: Some([("tenant".into(), json!(1))].into()), token: Some(token_a.clone()), ..SyncOptions::default() };
    let error = s.store("both.db").sync(&s.db.url, "crm", &both).unwrap_err().to_string();
    assert!(error.contains("\"params\" and \"token\" together"), "{error}");
}

#[test]
fn crafted_uploads_are_refused_and_change_nothing() {
    let s = setup("crafted");
    let token_a = s.register(json!({"tenant": 1}));
    let token_b = s.register(json!({"tenant": 2}));
    let a = s.store("a.db");
    s.sync_as(&a, &token_a);
    let mut server = s.server();
    let before = server_dump(&mut server, "crm", &json!({"tenant": [1, 2, 3]}));
    let a_id: String = a.connection().query_row("SELECT client_id FROM tandem_scopes", [], |r| r.get(0)).unwrap();
    let b_id = tandem_core::identity::token_client_id(&token_b).unwrap().to_string();
    let upload = |table: &str, columns: Value, rows: Value| json!({"format": 1, "scope": "crm", "origin": a_id, "tables": [{"name": table, "columns": columns, "rows": rows}]});
    let customer = json!(["id", "tenant_id", "name"]);
    let cases = [
        (
            upload("customers", customer.clone(), json!([{"op": "upsert", "seq": 1, "values": [199, 2, "planted in 2"]}])),
            "42501",
            "outside the client's partition",
        ),
        (
            upload("customers", customer.clone(), json!([{"op": "upsert", "seq": 1, "values": [201, 1, "stolen from 2"]}])),
            "42501",
            "outside the client's partition",
        ),
        (
            upload("customers", customer.clone(), json!([{"op": "delete", "seq": 1, "base": "1", "key": [202]}])),
            "42501",
            "outside the client's partition",
        ),
        (
            upload("customers", customer.clone(), json!([{"op": "upsert", "seq": 1, "values": [101, 2, "pushed out"]}])),
            "42501",
            "outside the client's partition",
        ),
        (
            // Its own order, under another tenant's customer (helper 88).
            upload(
                "orders",
                json!(["id", "tenant_id", "customer_id", "total"]),
                json!([{"op": "upsert", "seq": 1, "values": [1999, 1, 201, "1.00"]}]),
            ),
            "42501",
            "names a row of public.customers outside the client's partition",
        ),
        (
            upload(
                "order_items",
                json!(["order_id", "line", "sku"]),
                json!([{"op": "upsert", "seq": 1, "values": [2001, 9, "into 2's order"]}]),
            ),
            "42501",
            "outside the client's partition",
        ),
        (
            upload("products", json!(["sku", "price"]), json!([{"op": "upsert", "seq": 1, "values": ["A", "0.01"]}])),
            "42501",
            "download_only",
        ),
        (
            upload("notes", json!(["id", "tenant_id", "secret"]), json!([{"op": "upsert", "seq": 1, "values": [11, 1, "x"]}])),
            "42703",
            "no synced column \"secret\"",
        ),
        (json!({"format": 1, "scope": "crm", "origin": b_id, "tables": []}), "42501", "claims origin"),
    ];
    for (changeset, sqlstate, fragment) in cases {
        let error = server.query_one("SELECT sync_apply_changes('crm', $1, $2)", &[&changeset, &json!({"token": token_a})]).unwrap_err();
        let text = describe(&error);
        assert!(text.starts_with(sqlstate) && text.contains(fragment), "{changeset}: {text}");
        if let Some(detail) = error.as_db_error().and_then(|d| d.detail()) {
            let detail: Value = serde_json::from_str(detail).unwrap();
            for rejected in detail["rejected"].as_array().unwrap() {
                let row = &rejected["row"];
                let shared = row.get("tenant_id").is_none();
                assert!(row.is_null() || shared || row["tenant_id"] == 1, "a refusal must not show another tenant's row: {rejected}");
            }
        }
    }
    assert_eq!(server_dump(&mut server, "crm", &json!({"tenant": [1, 2, 3]})), before, "nothing changed on the server");

    // The same attempts from the file: set aside, the server's rows taken.
    a.connection()
        .execute_batch("INSERT INTO customers VALUES (199, 2, 'planted in 2'); UPDATE customers SET tenant_id = 2 WHERE id = 101; INSERT INTO products VALUES ('Z', 9.99);")
        .unwrap();
    let report = s.sync_as(&a, &token_a);
    assert_eq!(report.rejected.len(), 3, "{report:?}");
    let kept: i64 = a.connection().query_row("SELECT count(*) FROM tandem_rejected", [], |r| r.get(0)).unwrap();
    assert_eq!(kept, 3, "refused changes are kept for the user");
    assert_eq!(tenants_in(&a), [1]);
    assert_converged(&mut server, a.connection(), "crm", &json!({"tenant": 1}));
    assert_eq!(server_dump(&mut server, "crm", &json!({"tenant": [1, 2, 3]})), before);
}

#[test]
fn a_row_moved_between_tenants_converges_on_both_and_children_follow() {
    let s = setup("moves");
    let token_a = s.register(json!({"tenant": 1}));
    let token_b = s.register(json!({"tenant": 2}));
    let a = s.store("a.db");
    let b = s.store("b.db");
    s.sync_as(&a, &token_a);
    s.sync_as(&b, &token_b);
    let mut server = s.server();
    server.batch_execute("UPDATE customers SET tenant_id = 2 WHERE id = 101; UPDATE orders SET tenant_id = 2 WHERE id = 1001;").unwrap();
    s.sync_as(&a, &token_a);
    s.sync_as(&b, &token_b);
    for (store, tenant) in [(&a, 1), (&b, 2)] {
        assert_converged(&mut server, store.connection(), "crm", &json!({"tenant": tenant}));
        assert_eq!(tenants_in(store), [tenant]);
    }
    let items_in_b: i64 = b.connection().query_row("SELECT count(*) FROM order_items WHERE order_id = 1001", [], |r| r.get(0)).unwrap();
    let items_in_a: i64 = a.connection().query_row("SELECT count(*) FROM order_items WHERE order_id = 1001", [], |r| r.get(0)).unwrap();
    assert_eq!((items_in_a, items_in_b), (0, 2), "the items went with their order");
    // And back, with an edit on the way.
    server.batch_execute("UPDATE orders SET tenant_id = 1, total = 77 WHERE id = 1001").unwrap();
    s.sync_as(&a, &token_a);
    s.sync_as(&b, &token_b);
    for (store, tenant) in [(&a, 1), (&b, 2)] {
        assert_converged(&mut server, store.connection(), "crm", &json!({"tenant": tenant}));
    }
}

#[test]
fn a_list_parameter_means_in_and_excluded_columns_never_leave_the_server() {
    let s = setup("in_list");
    let token = s.register(json!({"tenant": [1, 3]}));
    let file = s.store("both.db");
    s.sync_as(&file, &token);
    assert_eq!(tenants_in(&file), [1, 3]);
    let mut server = s.server();
    assert_converged(&mut server, file.connection(), "crm", &json!({"tenant": [1, 3]}));
    let columns: Vec<String> = file
        .connection()
        .prepare("SELECT name FROM pragma_table_info('notes')")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    assert_eq!(columns, ["id", "tenant_id", "body"]);
    let raw = query_json(&mut server, "SELECT sync_select_changes('crm', NULL, $1)", &[&json!({"token": token})]).to_string();
    assert!(!raw.contains("server-only secret"), "an excluded column left the server");
    // A local edit of a note keeps the server's secret intact.
    file.connection().execute("UPDATE notes SET body = 'edited' WHERE id = 11", []).unwrap();
    s.sync_as(&file, &token);
    let (body, secret): (String, String) = {
        let row = server.query_one("SELECT body, secret FROM notes WHERE id = 11", &[]).unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!((body.as_str(), secret.as_str()), ("edited", "server-only secret 1"));
}

#[test]
fn three_tenants_two_clients_each_converge_after_random_edits() {
    use rand::Rng;
    let s = setup("six_clients");
    let mut clients = Vec::new();
    for tenant in 1..=3 {
        for n in 0..2 {
            let token = s.register(json!({"tenant": tenant}));
            let store = s.store(&format!("t{tenant}-{n}.db"));
            s.sync_as(&store, &token);
            clients.push((tenant, token, store));
        }
    }
    let mut server = s.server();
    let mut rng = rand::rng();
    let mut next = 5000i64;
    for _round in 0..4 {
        for _ in 0..15 {
            next += 1;
            let tenant = rng.random_range(1..=3);
            let id = tenant * 100 + rng.random_range(1..=5);
            let sql = match rng.random_range(0..5) {
                0 => format!("INSERT INTO customers VALUES ({next}, {tenant}, 'server {next}')"),
                1 => format!("UPDATE customers SET name = 'server edit {next}' WHERE id = {id}"),
                2 => format!("UPDATE customers SET tenant_id = {} WHERE id = {id}", rng.random_range(1..=3)),
                3 => format!(
                    "UPDATE orders SET tenant_id = {}, total = {} WHERE id = {}",
                    rng.random_range(1..=3),
                    next % 100,
                    tenant * 1000 + rng.random_range(1..=4)
                ),
                _ => format!("DELETE FROM customers WHERE id = {id} AND NOT EXISTS (SELECT 1 FROM orders WHERE customer_id = {id})"),
            };
            server.batch_execute(&sql).unwrap();
        }
        for (tenant, _, store) in &clients {
            for _ in 0..rng.random_range(1..6) {
                next += 1;
                let other = rng.random_range(1..=3);
                let sql = match rng.random_range(0..5) {
                    0 => format!("INSERT INTO customers VALUES ({next}, {tenant}, 'device {next}')"),
                    1 => format!(
                        "UPDATE customers SET name = 'device edit {next}' WHERE id IN (SELECT id FROM customers ORDER BY random() LIMIT 1)"
                    ),
                    2 => format!("INSERT INTO customers VALUES ({next}, {other}, 'maybe foreign {next}')"),
                    3 => format!("UPDATE notes SET body = 'note {next}' WHERE id IN (SELECT id FROM notes ORDER BY random() LIMIT 1)"),
                    _ => "DELETE FROM order_items WHERE rowid IN (SELECT rowid FROM order_items ORDER BY random() LIMIT 1)".to_string(),
                };
                store.connection().execute_batch(&sql).unwrap();
            }
        }
        for (_, token, store) in &clients {
            s.sync_as(store, token);
        }
    }
    for _ in 0..2 {
        for (_, token, store) in &clients {
            s.sync_as(store, token);
        }
    }
    for (tenant, _, store) in &clients {
        let expected = server_dump(&mut server, "crm", &json!({"tenant": tenant}));
        assert_eq!(local_dump(store.connection(), "crm"), expected, "a tenant {tenant} file differs from its partition");
        assert_eq!(tenants_in(store).iter().filter(|t| **t != *tenant).count(), 0);
    }
}

/// A `via` child given another parent inside a tenant, whose new parent
/// then leaves that tenant, all between two pulls: the tenant's devices
/// hold the child under its old parent, so removing the moved parent's
/// children would not remove it. The server says so: each child of a
/// parent that leaves a partition exits it too.
#[test]
fn a_child_moved_to_a_parent_that_then_leaves_the_tenant_is_deleted_there() {
    let db = tandem_tests::TestDb::new("via_reparent");
    let mut server = db.connect();
    server
        .batch_execute(
            "CREATE TABLE orders (id int PRIMARY KEY, tenant int NOT NULL);
             CREATE TABLE items (id int PRIMARY KEY, order_id int NOT NULL REFERENCES orders (id), q int);
             INSERT INTO orders VALUES (1, 1), (2, 1), (3, 1);
             INSERT INTO items VALUES (10, 1, 0), (20, 3, 0);
             SELECT sync_provision('s', '{\"tables\": [{\"name\": \"orders\", \"filter\": {\"tenant\": \"tenant\"}},
               {\"name\": \"items\", \"filter\": {\"via\": \"orders\", \"on\": {\"order_id\": \"id\"}}}]}');",
        )
        .unwrap();
    let one = json!({"params": {"tenant": 1}});
    let two = json!({"params": {"tenant": 2}});
    let (_, one_at) = tandem_tests::pull_all(&mut server, "s", None, &one);
    let (_, two_at) = tandem_tests::pull_all(&mut server, "s", None, &two);
    server
        .batch_execute(
            "UPDATE items SET order_id = 2 WHERE id = 10;
             UPDATE orders SET tenant = 2 WHERE id = 2;
             UPDATE orders SET tenant = 2 WHERE id = 3;",
        )
        .unwrap();
    let described = |rows: Vec<(String, Value)>| -> Vec<String> {
        let mut out: Vec<String> = rows
            .iter()
            .map(|(table, row)| {
                format!(
                    "{table} {} {}",
                    row["op"].as_str().unwrap_or("?"),
                    if row["op"] == "upsert" { &row["values"] } else { &row["key"] }
                )
            })
            .collect();
        out.sort();
        out
    };
    let (left, _) = tandem_tests::pull_all(&mut server, "s", Some(&one_at), &one);
    assert_eq!(
        described(left),
        ["public.items delete [10]", "public.items delete [20]", "public.orders delete [2]", "public.orders delete [3]"],
        "tenant 1 is told to drop both orders and both items"
    );
    let (came, _) = tandem_tests::pull_all(&mut server, "s", Some(&two_at), &two);
    assert_eq!(
        described(came),
        ["public.items upsert [10,2,0]", "public.items upsert [20,3,0]", "public.orders upsert [2,2]", "public.orders upsert [3,2]"],
        "tenant 2 gets them, and no delete"
    );
}

/// Helper 90: a row the server holds under another tenant's parent (its
/// own code wrote it there) keeps that parent through a key change the
/// device makes: it names no row the server's row did not already name.
#[test]
fn a_key_change_keeps_a_parent_the_server_gave_the_row() {
    let s = setup("server_made_reference_moved");
    s.server().batch_execute("INSERT INTO orders VALUES (1990, 1, 201, 1)").unwrap();
    let token = s.register(json!({"tenant": 1}));
    let a = s.store("a.db");
    s.sync_as(&a, &token);
    tandem_tests::local::local(&a, "UPDATE orders SET id = 1991, total = 2 WHERE id = 1990");
    let report = s.sync_as(&a, &token);
    assert!(report.rejected.is_empty() && report.conflicts.is_empty(), "{report:?}");
    let moved: String = s.server().query_one("SELECT customer_id || ':' || total FROM orders WHERE id = 1991", &[]).unwrap().get(0);
    assert_eq!(moved, "201:2.00");
}
