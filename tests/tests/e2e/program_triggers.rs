//! What the file does of its own while sync stores the server's rows: a
//! program's trigger that writes another synced row makes a local change,
//! and it goes up like any other; a row the file's own foreign key takes
//! with a row that only left the device's partition is no delete of the
//! server's, and never goes up as one.

use rusqlite::Connection;
use serde_json::{json, Value};
use tandem_tests::local::{assert_converged, local, local_count, local_value, Scenario};

const SCHEMA: &str = r#"
CREATE TABLE customers (id bigint PRIMARY KEY, tenant_id int NOT NULL, name text NOT NULL);
CREATE TABLE orders (id bigint PRIMARY KEY, tenant_id int NOT NULL, customer_id bigint REFERENCES customers, total numeric(12,2));
CREATE TABLE "Order Lines" ("Order Id" bigint REFERENCES orders (id) ON DELETE CASCADE, "Line No" int,
                            "SKU" text, PRIMARY KEY ("Order Id", "Line No"));
INSERT INTO customers VALUES (1, 1, 'Ada'), (2, 1, 'Grace');
INSERT INTO orders VALUES (10, 1, 1, 10.00), (11, 1, 2, 11.50);
INSERT INTO "Order Lines" VALUES (10, 1, 'A'), (10, 2, 'B'), (11, 1, 'C');
SELECT sync_provision('shop', '{"tables": [
  {"name": "customers", "filter": {"tenant_id": "tenant"}},
  {"name": "orders", "filter": {"tenant_id": "tenant"}},
  {"name": "\"Order Lines\"", "filter": {"via": "orders", "on": {"Order Id": "id"}}}]}');
"#;

fn tenant(n: i64) -> Value {
    json!({"params": {"tenant": n}})
}

fn server_value(s: &Scenario, sql: &str) -> Option<String> {
    s.server().query(sql, &[]).unwrap().first().and_then(|r| r.get::<_, Option<String>>(0))
}

/// The program keeps each order's total as its lines come in. A line the
/// server sends makes the trigger change the order: that change is the
/// device's and reaches the server, also for an order pulled in the same
/// batch. It used to be taken out of the log with sync's own entries, and
/// never went up. A trigger that touches the very row sync writes, as
/// sync writes it, stays the device's own: sent, it would come back to
/// every device, be touched and sent again.
#[test]
fn a_write_the_programs_trigger_makes_while_sync_stores_a_row_goes_up() {
    let s = Scenario::new("program_trigger", SCHEMA, "shop");
    let file = s.store("a.db");
    s.sync(&file, tenant(1));
    local(
        &file,
        r#"CREATE TRIGGER program_line_total AFTER INSERT ON "Order Lines"
           BEGIN UPDATE orders SET total = total + 1 WHERE id = NEW."Order Id"; END;
           CREATE TRIGGER program_seen AFTER INSERT ON customers
           BEGIN UPDATE customers SET name = name || ' (seen)' WHERE id = NEW.id; END"#,
    );
    s.server()
        .batch_execute(
            r#"INSERT INTO "Order Lines" VALUES (10, 3, 'server line');
               INSERT INTO customers VALUES (5, 1, 'Eve');
               INSERT INTO orders VALUES (12, 1, 5, 1.00);
               INSERT INTO "Order Lines" VALUES (12, 1, 'first line of a new order')"#,
        )
        .unwrap();
    s.sync(&file, json!({}));
    assert_eq!(local_value(&file, "SELECT group_concat(total, ',') FROM orders WHERE id IN (10, 12)").as_deref(), Some("11.0,2.0"));
    let report = s.sync(&file, json!({}));
    assert_eq!(report.pushed, 2, "{report:?}");
    assert_eq!(
        server_value(&s, "SELECT string_agg(total::text, ',' ORDER BY id) FROM orders WHERE id IN (10, 12)").as_deref(),
        Some("11.00,2.00")
    );
    assert_eq!(server_value(&s, "SELECT name FROM customers WHERE id = 5").as_deref(), Some("Eve"));
    assert_eq!(local_value(&file, "SELECT name FROM customers WHERE id = 5").as_deref(), Some("Eve (seen)"));
}

/// A pulled batch of 1000 rows or more of one table drops that table's
/// tracking triggers for its transaction; a program's trigger that writes
/// into such a table then wrote unlogged. Here each order the server sends
/// gets a line of the program's own.
#[test]
fn a_programs_write_into_a_table_of_a_large_batch_goes_up() {
    let s = Scenario::new("program_trigger_bulk", SCHEMA, "shop");
    let file = s.store("a.db");
    s.sync(&file, tenant(1));
    local(
        &file,
        r#"CREATE TRIGGER program_first_line AFTER INSERT ON orders
           BEGIN INSERT INTO "Order Lines" VALUES (NEW.id, 0, 'opened on the device'); END"#,
    );
    s.server()
        .batch_execute(
            r#"INSERT INTO orders SELECT i, 1, 1, 1.00 FROM generate_series(1000, 2199) i;
               INSERT INTO "Order Lines" SELECT i, 1, 'server line' FROM generate_series(1000, 2199) i;"#,
        )
        .unwrap();
    s.sync(&file, json!({}));
    assert_eq!(local_count(&file, r#"SELECT count(*) FROM "Order Lines" WHERE "Line No" = 0"#), 1200);
    let report = s.sync(&file, json!({}));
    assert_eq!(report.pushed, 1200, "{report:?}");
    assert_eq!(server_value(&s, r#"SELECT count(*)::text FROM "Order Lines" WHERE "Line No" = 0"#).as_deref(), Some("1200"));
    assert_converged(&mut s.server(), file.connection(), "shop", &json!({"tenant": 1}));
}

/// The file held its tables before it synced, with foreign keys whose
/// actions SQLite carries out (`PRAGMA foreign_keys = ON`). An order and a
/// customer that move to another tenant leave this device, and the file's
/// own keys take or change rows with them. The server still holds those
/// rows as they were: none of that may go up.
#[test]
fn what_the_files_foreign_keys_do_to_rows_that_left_the_partition_stays_on_the_device() {
    let s = Scenario::new("program_foreign_keys", SCHEMA, "shop");
    let path = s.files.path("a.db");
    Connection::open(&path)
        .unwrap()
        .execute_batch(
            r#"CREATE TABLE customers (id INTEGER PRIMARY KEY, tenant_id INTEGER NOT NULL, name TEXT NOT NULL);
               CREATE TABLE orders (id INTEGER PRIMARY KEY, tenant_id INTEGER NOT NULL,
                                    customer_id INTEGER REFERENCES customers ON DELETE SET NULL, total NUMERIC);
               CREATE TABLE "Order Lines" ("Order Id" INTEGER REFERENCES orders (id) ON DELETE CASCADE, "Line No" INTEGER,
                                           "SKU" TEXT, PRIMARY KEY ("Order Id", "Line No"));"#,
        )
        .unwrap();
    let file = s.store("a.db");
    local(&file, "PRAGMA foreign_keys = ON");
    s.sync(&file, tenant(1));
    assert_eq!(local_count(&file, r#"SELECT count(*) FROM "Order Lines""#), 3);
    s.server().batch_execute("UPDATE orders SET tenant_id = 2 WHERE id = 10; UPDATE customers SET tenant_id = 2 WHERE id = 2").unwrap();
    s.sync(&file, json!({}));
    assert_eq!(local_count(&file, r#"SELECT count(*) FROM "Order Lines" WHERE "Order Id" = 10"#), 0);
    assert_eq!(local_value(&file, "SELECT customer_id FROM orders WHERE id = 11"), None, "the file's own key set it NULL");
    let report = s.sync(&file, json!({}));
    assert_eq!(report.pushed, 0, "{report:?}");
    assert_eq!(server_value(&s, r#"SELECT count(*)::text FROM "Order Lines" WHERE "Order Id" = 10"#).as_deref(), Some("2"));
    assert_eq!(server_value(&s, "SELECT customer_id::text FROM orders WHERE id = 11").as_deref(), Some("2"));
}
