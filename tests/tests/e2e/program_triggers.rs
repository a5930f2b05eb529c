//! What the file does of its own while sync stores the server's rows: a
//! program's trigger that keeps a total, or writes another synced row,
//! runs on every device that stores the row, so what it writes stays on
//! that device (sent, it would be counted once per device, and go round
//! between devices for ever). A row the file's own foreign key takes with
//! a row that only left the device's partition is no delete of the
//! server's, and never goes up as one, an unsent change of it included.

use rusqlite::Connection;
use serde_json::{json, Value};
use tandem_local::Store;
use tandem_tests::local::{local, local_count, local_value, Interfering, Scenario};

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

/// A file that held its tables (`tables`, SQLite's DDL) before it synced
/// them, with the actions of its foreign keys carried out (`PRAGMA
/// foreign_keys`), synced once as tenant 1.
fn held_before(s: &Scenario, tables: &str) -> Store {
    Connection::open(s.files.path("a.db")).unwrap().execute_batch(tables).unwrap();
    let file = s.store("a.db");
    local(&file, "PRAGMA foreign_keys = ON");
    s.sync(&file, tenant(1));
    file
}

/// The shop's tables as a program made them: an order's customer with
/// `on_delete`, its lines with `CASCADE`.
fn shop_tables(on_delete: &str) -> String {
    format!(
        r#"CREATE TABLE customers (id INTEGER PRIMARY KEY, tenant_id INTEGER NOT NULL, name TEXT NOT NULL);
           CREATE TABLE orders (id INTEGER PRIMARY KEY, tenant_id INTEGER NOT NULL,
                                customer_id INTEGER REFERENCES customers ON DELETE {on_delete}, total NUMERIC);
           CREATE TABLE "Order Lines" ("Order Id" INTEGER REFERENCES orders (id) ON DELETE CASCADE, "Line No" INTEGER,
                                       "SKU" TEXT, PRIMARY KEY ("Order Id", "Line No"));"#
    )
}

fn server_value(s: &Scenario, sql: &str) -> Option<String> {
    s.server().query(sql, &[]).unwrap().first().and_then(|r| r.get::<_, Option<String>>(0))
}

/// Helper 54: each device keeps an order's total as its lines come in. The
/// order comes with the total its first device counted, and the line with
/// it; a second device's trigger counts the line again. Sent, that made the
/// server's total twice the lines', and once more per device. A trigger
/// that bumps the other rows when one changes sent the devices round for
/// ever.
#[test]
fn what_the_files_own_triggers_write_while_sync_stores_rows_stays_on_the_device() {
    let s = Scenario::new("program_trigger", SCHEMA, "shop");
    let (a, b) = (s.store("a.db"), s.store("b.db"));
    s.sync(&a, tenant(1));
    s.sync(&b, tenant(1));
    let totals = r#"CREATE TRIGGER program_line_total AFTER INSERT ON "Order Lines"
                    BEGIN UPDATE orders SET total = total + 1 WHERE id = NEW."Order Id"; END;
                    CREATE TRIGGER program_bump AFTER UPDATE OF name ON customers
                    BEGIN UPDATE customers SET name = name || '+' WHERE id <> NEW.id AND tenant_id = NEW.tenant_id; END"#;
    local(&a, totals);
    local(&b, totals);
    local(&a, r#"INSERT INTO orders VALUES (12, 1, 1, 0); INSERT INTO "Order Lines" VALUES (12, 1, 'one line')"#);
    assert_eq!(local_value(&a, "SELECT total FROM orders WHERE id = 12").as_deref(), Some("1"));
    s.server().batch_execute("UPDATE customers SET name = 'Ada (server)' WHERE id = 1").unwrap();
    for round in 0..3 {
        for file in [&a, &b] {
            let report = s.sync(file, json!({}));
            assert!(round == 0 || report.pushed == 0, "round {round}: {report:?}");
        }
    }
    assert_eq!(server_value(&s, "SELECT total::text FROM orders WHERE id = 12").as_deref(), Some("1.00"), "one line, counted once");
    assert_eq!(server_value(&s, "SELECT name FROM customers WHERE id = 2").as_deref(), Some("Grace"));
    assert_eq!(local_value(&b, "SELECT total FROM orders WHERE id = 12").as_deref(), Some("2.0"), "the device's own count stays its own");
}

/// Helper 54: a device's trigger that zeroes an order's lines when the
/// order goes also ran when the order only moved to another tenant, and
/// its update went up, over rows that tenant still held.
#[test]
fn a_trigger_on_a_row_that_left_the_partition_changes_nothing_on_the_server() {
    let s = Scenario::new("program_trigger_left", SCHEMA, "shop");
    let file = s.store("a.db");
    s.sync(&file, tenant(1));
    local(
        &file,
        r#"CREATE TRIGGER program_orphans AFTER DELETE ON orders
           BEGIN UPDATE customers SET name = 'no orders' WHERE id = OLD.customer_id; END"#,
    );
    s.server().batch_execute("UPDATE orders SET tenant_id = 2 WHERE id = 10").unwrap();
    s.sync(&file, json!({}));
    let report = s.sync(&file, json!({}));
    assert_eq!(report.pushed, 0, "{report:?}");
    assert_eq!(server_value(&s, "SELECT name FROM customers WHERE id = 1").as_deref(), Some("Ada"));
}

/// The file held its tables before it synced, with foreign keys whose
/// actions SQLite carries out (`PRAGMA foreign_keys = ON`). An order and a
/// customer that move to another tenant leave this device, and the file's
/// own keys take rows with them: the order's lines, and the other order of
/// the customer, which the server still holds for this tenant. None of
/// that may go up. Helper 54: nor may a change of such a row the device
/// had not sent yet, which went up as a delete (the row gone) and took the
/// order from the server.
#[test]
fn what_the_files_foreign_keys_do_to_rows_that_left_the_partition_stays_on_the_device() {
    let s = Scenario::new("program_foreign_keys", SCHEMA, "shop");
    let path = s.files.path("a.db");
    let file = held_before(&s, &shop_tables("CASCADE"));
    assert_eq!(local_count(&file, r#"SELECT count(*) FROM "Order Lines""#), 3);
    s.server().batch_execute("UPDATE orders SET tenant_id = 2 WHERE id = 10; UPDATE customers SET tenant_id = 2 WHERE id = 2").unwrap();
    // An edit the program makes while the round pulls: still unsent when
    // the pull takes its row.
    let mut interfering = Interfering {
        write_after_select: Some((path.clone(), "UPDATE orders SET total = 99 WHERE id = 11")),
        ..Interfering::new(&s.db.url)
    };
    let options = serde_json::from_value(json!({})).unwrap();
    file.sync_with(&mut interfering, "shop", &options).unwrap();
    assert_eq!(local_count(&file, r#"SELECT count(*) FROM "Order Lines""#), 0);
    assert_eq!(local_count(&file, "SELECT count(*) FROM orders"), 0, "the file's own key took order 11 with its customer");
    let report = s.sync(&file, json!({}));
    assert_eq!(report.pushed, 0, "{report:?}");
    assert_eq!(
        server_value(&s, r#"SELECT string_agg("Order Id" || ':' || "SKU", ',' ORDER BY "Order Id", "Line No") FROM "Order Lines""#)
            .as_deref(),
        Some("10:A,10:B,11:C")
    );
    assert_eq!(
        server_value(&s, "SELECT tenant_id || ':' || customer_id || ':' || total FROM orders WHERE id = 11").as_deref(),
        Some("1:2:11.50")
    );
}

/// Helper 55 (F1): an upload sends the whole row, so what the file's own
/// key or trigger changed in a row while sync stored the server's went up
/// with the row's next local edit: the order's customer, set NULL on the
/// device when the customer only moved to another tenant, was wiped on
/// the server by an edit of the order's total. The server keeps its values
/// of what the file changed on its own, through every later edit, until
/// the device edits that column itself or the server's row comes again.
#[test]
fn what_the_files_own_key_changed_in_a_row_stays_local_through_later_edits() {
    let s = Scenario::new("program_set_null", SCHEMA, "shop");
    let file = held_before(&s, &shop_tables("SET NULL"));
    s.server().batch_execute("UPDATE customers SET tenant_id = 2 WHERE id = 2").unwrap();
    s.sync(&file, json!({}));
    assert_eq!(local_value(&file, "SELECT coalesce(customer_id, 'none') FROM orders WHERE id = 11").as_deref(), Some("none"));
    let order = |s: &Scenario| server_value(s, "SELECT customer_id || ':' || total FROM orders WHERE id = 11");
    local(&file, "UPDATE orders SET total = 12.5 WHERE id = 11");
    s.sync(&file, json!({}));
    assert_eq!(order(&s).as_deref(), Some("2:12.50"), "the edit of the total goes up, the customer stays the server's");
    local(&file, "UPDATE orders SET total = 13 WHERE id = 11");
    s.sync(&file, json!({}));
    assert_eq!(order(&s).as_deref(), Some("2:13.00"), "and so after the first edit was acknowledged");
    local(&file, "UPDATE orders SET customer_id = 1 WHERE id = 11");
    s.sync(&file, json!({}));
    assert_eq!(order(&s).as_deref(), Some("1:13.00"), "the device's own choice of customer goes up");
    // Once more from the server's side: the server's row comes again and
    // replaces what the file had noted.
    s.server().batch_execute("UPDATE customers SET tenant_id = 1 WHERE id = 2; UPDATE orders SET customer_id = 2 WHERE id = 10").unwrap();
    s.sync(&file, json!({}));
    s.server().batch_execute("UPDATE customers SET tenant_id = 2 WHERE id = 2").unwrap();
    s.sync(&file, json!({}));
    assert_eq!(local_value(&file, "SELECT coalesce(customer_id, 'none') FROM orders WHERE id = 10").as_deref(), Some("none"));
    s.server().batch_execute("UPDATE orders SET customer_id = 1, total = 20 WHERE id = 10").unwrap();
    s.sync(&file, json!({}));
    local(&file, "UPDATE orders SET total = 21 WHERE id = 10");
    s.sync(&file, json!({}));
    assert_eq!(server_value(&s, "SELECT customer_id || ':' || total FROM orders WHERE id = 10").as_deref(), Some("1:21.00"));
    assert_eq!(local_count(&file, "SELECT count(*) FROM tandem_conflicts"), 0);
}

/// A file of tenant 1 whose own trigger counts an order's lines into its
/// total, after a round that brought order 10 a line (its total 11 on the
/// device, 10 on the server).
fn counting_lines(s: &Scenario) -> Store {
    let file = s.store("a.db");
    s.sync(&file, tenant(1));
    local(
        &file,
        r#"CREATE TRIGGER program_line_total AFTER INSERT ON "Order Lines"
           BEGIN UPDATE orders SET total = total + 1 WHERE id = NEW."Order Id"; END"#,
    );
    s.server().batch_execute(r#"INSERT INTO "Order Lines" VALUES (10, 3, 'C')"#).unwrap();
    s.sync(&file, json!({}));
    assert_eq!(local_value(&file, "SELECT total FROM orders WHERE id = 10").as_deref(), Some("11.0"));
    file
}

/// A total the file's own trigger keeps as the server's lines come in
/// stays the device's own when the program edits the order afterwards:
/// the server keeps its total.
#[test]
fn a_total_the_files_trigger_kept_during_sync_stays_local_through_an_edit() {
    let s = Scenario::new("program_total_edit", SCHEMA, "shop");
    let file = counting_lines(&s);
    local(&file, "UPDATE orders SET customer_id = 2 WHERE id = 10");
    s.sync(&file, json!({}));
    assert_eq!(server_value(&s, "SELECT customer_id || ':' || total FROM orders WHERE id = 10").as_deref(), Some("2:10.00"));
}

/// Helper 56: rows the file's own `CASCADE` removed kept their base
/// versions, which read as local deletes once the program made a unique
/// index on the table (the round looks for rows a `REPLACE` took out on
/// a new index): both orders went from the server.
#[test]
fn rows_the_files_own_key_removed_never_go_up_as_deletes_later() {
    let s = Scenario::new("program_cascade_index", SCHEMA, "shop");
    let file = held_before(&s, &shop_tables("CASCADE"));
    s.server().batch_execute("UPDATE customers SET tenant_id = 2 WHERE id = 1").unwrap();
    s.sync(&file, json!({}));
    assert_eq!(local_count(&file, "SELECT count(*) FROM orders"), 1, "order 10 went with its customer");
    local(&file, "CREATE UNIQUE INDEX program_totals ON orders (total)");
    let report = s.sync(&file, json!({}));
    assert_eq!(report.pushed, 0, "{report:?}");
    assert_eq!(server_value(&s, "SELECT string_agg(id::text, ',' ORDER BY id) FROM orders").as_deref(), Some("10,11"));
}

/// Helper 56: once the program's own value of such a column went up, the
/// value from before is no longer the server's. The program setting the
/// column back to what the file once left (NULL) sent the old customer,
/// another tenant's by then, over the server's newer one.
#[test]
fn the_programs_own_value_once_sent_replaces_the_value_from_before() {
    let s = Scenario::new(
        "program_set_back",
        r#"CREATE TABLE customers (id bigint PRIMARY KEY, tenant_id int NOT NULL, name text NOT NULL);
           CREATE TABLE orders (id bigint PRIMARY KEY, tenant_id int NOT NULL, customer_id bigint REFERENCES customers, note text);
           INSERT INTO customers VALUES (1, 1, 'Ada'), (2, 1, 'Grace');
           INSERT INTO orders VALUES (10, 1, 1, 'a');
           SELECT sync_provision('shop', '{"tables": [{"name": "customers", "filter": {"tenant_id": "tenant"}},
                                                       {"name": "orders", "filter": {"tenant_id": "tenant"}}]}');"#,
        "shop",
    );
    let file = held_before(
        &s,
        "CREATE TABLE customers (id INTEGER PRIMARY KEY, tenant_id INTEGER NOT NULL, name TEXT NOT NULL);
             CREATE TABLE orders (id INTEGER PRIMARY KEY, tenant_id INTEGER NOT NULL,
                                  customer_id INTEGER REFERENCES customers ON DELETE SET NULL, note TEXT);",
    );
    s.server().batch_execute("UPDATE customers SET tenant_id = 2 WHERE id = 1").unwrap();
    s.sync(&file, json!({}));
    let order = |s: &Scenario| server_value(s, "SELECT coalesce(customer_id::text, 'none') || ':' || note FROM orders WHERE id = 10");
    local(&file, "UPDATE orders SET customer_id = 2 WHERE id = 10");
    s.sync(&file, json!({}));
    assert_eq!(order(&s).as_deref(), Some("2:a"));
    local(&file, "UPDATE orders SET customer_id = NULL, note = 'b' WHERE id = 10");
    s.sync(&file, json!({}));
    assert_eq!(order(&s).as_deref(), Some("none:b"), "not customer 1, now another tenant's");
}

/// Helper 55 (F3): an order that moves to another tenant leaves the
/// device with its lines, but a line with an unsent edit stays (its
/// change goes up first). The file's own key from the line to the order,
/// without an action, then refused the order's delete, and the whole pull
/// failed. The delete now waits aside, as a server row the file refuses
/// does, and the rest of the batch is stored; once the line's change has
/// been answered, the order goes too.
#[test]
fn a_delete_the_files_own_key_refuses_waits_aside_and_the_batch_goes_on() {
    let s = Scenario::new("program_key_refuses_delete", SCHEMA, "shop");
    let path = s.files.path("a.db");
    let file = held_before(
        &s,
        r#"CREATE TABLE customers (id INTEGER PRIMARY KEY, tenant_id INTEGER NOT NULL, name TEXT NOT NULL);
               CREATE TABLE orders (id INTEGER PRIMARY KEY, tenant_id INTEGER NOT NULL, customer_id INTEGER, total NUMERIC);
               CREATE TABLE "Order Lines" ("Order Id" INTEGER REFERENCES orders (id), "Line No" INTEGER,
                                           "SKU" TEXT, PRIMARY KEY ("Order Id", "Line No"));"#,
    );
    s.server().batch_execute("UPDATE orders SET tenant_id = 2 WHERE id = 10; UPDATE customers SET name = 'Ada B' WHERE id = 1").unwrap();
    let mut interfering = Interfering {
        write_after_select: Some((path.clone(), r#"UPDATE "Order Lines" SET "SKU" = 'edited' WHERE "Order Id" = 10 AND "Line No" = 1"#)),
        ..Interfering::new(&s.db.url)
    };
    let options = serde_json::from_value(json!({})).unwrap();
    file.sync_with(&mut interfering, "shop", &options).unwrap();
    assert_eq!(local_value(&file, "SELECT name FROM customers WHERE id = 1").as_deref(), Some("Ada B"), "the rest of the batch");
    assert_eq!(local_count(&file, "SELECT count(*) FROM tandem_rejected WHERE kind = 'not_stored' AND key = '[10]'"), 1);
    s.sync(&file, json!({}));
    s.sync(&file, json!({}));
    assert_eq!(local_count(&file, "SELECT count(*) FROM orders WHERE id = 10"), 0, "the order went once its line had");
    assert_eq!(local_count(&file, "SELECT count(*) FROM tandem_rejected WHERE kind = 'not_stored'"), 0);
    assert_eq!(
        server_value(&s, r#"SELECT string_agg("Order Id" || ':' || "SKU", ',' ORDER BY "Order Id", "Line No") FROM "Order Lines""#)
            .as_deref(),
        Some("10:A,10:B,11:C")
    );
}

/// Customers known by a code their orders and tags refer to, in a file
/// whose own keys follow a code when it changes (`ON UPDATE CASCADE`):
/// in a tag, the code is part of the key.
const CODES: &str = r#"
CREATE TABLE customers (id bigint PRIMARY KEY, tenant_id int NOT NULL, code text UNIQUE NOT NULL);
CREATE TABLE orders (id bigint PRIMARY KEY, tenant_id int NOT NULL, cust_code text, note text);
CREATE TABLE tags (code text, tag text, tenant_id int NOT NULL, info text, PRIMARY KEY (code, tag));
INSERT INTO customers SELECT g, 1, 'C' || g FROM generate_series(1, 1200) g;
INSERT INTO orders SELECT g, 1, 'C' || g, 'o' FROM generate_series(1, 1200) g;
INSERT INTO orders VALUES (5000, 1, 'C1', 'o5000');
INSERT INTO tags VALUES ('C2', 'y', 1, 'i2');
SELECT sync_provision('shop', '{"tables": [{"name": "customers", "filter": {"tenant_id": "tenant"}},
                                            {"name": "orders", "filter": {"tenant_id": "tenant"}},
                                            {"name": "tags", "filter": {"tenant_id": "tenant"}}]}');
"#;

fn coded_file(s: &Scenario) -> Store {
    held_before(
        s,
        "CREATE TABLE customers (id INTEGER PRIMARY KEY, tenant_id INTEGER NOT NULL, code TEXT UNIQUE NOT NULL);
             CREATE TABLE orders (id INTEGER PRIMARY KEY, tenant_id INTEGER NOT NULL,
                                  cust_code TEXT REFERENCES customers (code) ON UPDATE CASCADE, note TEXT);
             CREATE TABLE tags (code TEXT REFERENCES customers (code) ON UPDATE CASCADE, tag TEXT, tenant_id INTEGER NOT NULL,
                                info TEXT, PRIMARY KEY (code, tag));",
    )
}

/// Helper 57: a pulled batch of 1000 rows or more of a table turned that
/// table's noting off for the whole batch, also while sync wrote another
/// table: what the file's own key did to the table's other rows then
/// went up with their next edit.
#[test]
fn a_large_batch_of_a_table_still_notes_what_the_file_does_to_its_other_rows() {
    let s = Scenario::new("program_large_batch", CODES, "shop");
    let file = coded_file(&s);
    s.server()
        .batch_execute("UPDATE customers SET code = 'D1' WHERE id = 1; UPDATE orders SET note = 'o2' WHERE id BETWEEN 2 AND 1200")
        .unwrap();
    s.sync(&file, json!({"max_rows": 5000}));
    assert_eq!(local_value(&file, "SELECT cust_code FROM orders WHERE id = 5000").as_deref(), Some("D1"));
    local(&file, "UPDATE orders SET note = 'edited' WHERE id = 5000");
    s.sync(&file, json!({}));
    assert_eq!(server_value(&s, "SELECT cust_code || ':' || note FROM orders WHERE id = 5000").as_deref(), Some("C1:edited"));
}

/// Helper 57: a key the file's own key changed while sync wrote left the
/// base version of the old key behind, which read as a local delete once
/// the program made a unique index on the table: the server lost the tag.
#[test]
fn a_key_the_files_own_key_changed_never_goes_up_as_a_delete_later() {
    let s = Scenario::new("program_key_cascade", CODES, "shop");
    let file = coded_file(&s);
    s.server().batch_execute("UPDATE customers SET code = 'BB' WHERE id = 2").unwrap();
    s.sync(&file, json!({}));
    assert_eq!(local_value(&file, "SELECT code FROM tags").as_deref(), Some("BB"));
    local(&file, "CREATE UNIQUE INDEX program_tags ON tags (tag, info)");
    let report = s.sync(&file, json!({}));
    assert_eq!(report.pushed, 0, "{report:?}");
    assert_eq!(server_value(&s, "SELECT code || ':' || tag FROM tags").as_deref(), Some("C2:y"));
}

/// Helper 57: a column the server renames leaves the file's schema, and
/// the file dropped it even where a foreign key of the program's own held
/// it, which SQLite allows for a key declared with the column.
#[test]
fn a_column_the_files_own_key_holds_stays_when_the_server_renames_it() {
    let s = Scenario::new("program_key_rename", CODES, "shop");
    let file = coded_file(&s);
    s.server().batch_execute("ALTER TABLE orders RENAME COLUMN cust_code TO customer_code").unwrap();
    s.sync(&file, json!({}));
    assert_eq!(local_count(&file, "SELECT count(*) FROM pragma_foreign_key_list('orders') WHERE \"from\" = 'cust_code'"), 1);
    assert_eq!(local_value(&file, "SELECT customer_code FROM orders WHERE id = 5000").as_deref(), Some("C1"));
}

/// Helper 58: the server changes a customer's code and its tags' with
/// it; the file's own key changes the tags' keys first, and its log of
/// that read as unsent changes of the new keys, so the server's rows of
/// them were skipped and the tags had no base version: a local delete of
/// one then never went up.
#[test]
fn server_rows_at_keys_the_files_own_key_moved_rows_to_are_stored() {
    let s = Scenario::new("program_key_follows", CODES, "shop");
    let file = coded_file(&s);
    s.server().batch_execute("UPDATE customers SET code = 'BB' WHERE id = 2; UPDATE tags SET code = 'BB' WHERE code = 'C2'").unwrap();
    let report = s.sync(&file, json!({}));
    assert_eq!(report.kept_local, 0, "{report:?}");
    local(&file, "DELETE FROM tags WHERE code = 'BB'");
    let report = s.sync(&file, json!({}));
    assert_eq!(report.pushed, 1, "{report:?}");
    assert_eq!(server_value(&s, "SELECT count(*)::text FROM tags").as_deref(), Some("0"));
}

/// Helper 58: a row the file could not store again when the server sent
/// it for a schema change (the file's own key refuses the server's
/// customer) kept NULL in the column the server renamed, on a base
/// version the server's row still had: the row's next edit wiped the
/// server's value. Such a row's next upload now meets the server's row as
/// a conflict.
#[test]
fn a_row_the_file_could_not_take_again_never_overwrites_what_it_lacks() {
    let s = Scenario::new("program_refused_rename", SCHEMA, "shop");
    let file = held_before(&s, &shop_tables("SET NULL"));
    s.server().batch_execute("UPDATE customers SET tenant_id = 2 WHERE id = 1").unwrap();
    s.sync(&file, json!({}));
    s.server().batch_execute("ALTER TABLE orders RENAME COLUMN total TO amount; ALTER TABLE orders ADD COLUMN extra text").unwrap();
    s.sync(&file, json!({}));
    local(&file, "UPDATE orders SET extra = 'edited' WHERE id = 10");
    s.sync(&file, json!({}));
    assert_eq!(server_value(&s, "SELECT amount::text FROM orders WHERE id = 10").as_deref(), Some("10.00"));
}

/// Customers whose names the file compares without case, and a program's
/// trigger that refuses names the server sends in capitals.
fn nocase_file(s: &Scenario) -> Store {
    held_before(
        s,
        "CREATE TABLE customers (id INTEGER PRIMARY KEY, tenant_id INTEGER NOT NULL, name TEXT NOT NULL COLLATE NOCASE);
             CREATE TRIGGER program_no_shouting BEFORE UPDATE ON customers WHEN NEW.name = upper(NEW.name) COLLATE BINARY
             BEGIN SELECT RAISE(ABORT, 'no shouting'); END;
             CREATE TRIGGER program_keep BEFORE DELETE ON customers WHEN OLD.id = 2 BEGIN SELECT RAISE(ABORT, 'keep Grace'); END;",
    )
}

const CUSTOMERS_CLIENT_WINS: &str = r#"
CREATE TABLE customers (id bigint PRIMARY KEY, tenant_id int NOT NULL, name text NOT NULL);
INSERT INTO customers VALUES (1, 1, 'Ada'), (2, 1, 'Grace'), (3, 1, 'Edsger');
SELECT sync_provision('shop', '{"policy": "client_wins", "tables": [{"name": "customers", "filter": {"tenant_id": "tenant"}}]}');
"#;

/// Helper 59: what a row holds against what the file left was compared
/// under the column's collation, so under `NOCASE` the program's `ada`
/// over `Ada` read as no edit, and the server's refused value went up in
/// its place.
#[test]
fn an_edit_that_only_changes_case_goes_up_under_a_nocase_column() {
    let s = Scenario::new("program_nocase", CUSTOMERS_CLIENT_WINS, "shop");
    let file = nocase_file(&s);
    s.server().batch_execute("UPDATE customers SET name = 'ADA' WHERE id = 1").unwrap();
    let report = s.sync(&file, json!({}));
    assert_eq!(report.not_stored, 1, "{report:?}");
    local(&file, "UPDATE customers SET name = 'ada' WHERE id = 1");
    s.sync(&file, json!({}));
    assert_eq!(server_value(&s, "SELECT name FROM customers WHERE id = 1").as_deref(), Some("ada"));
}

/// Helper 59: the server's delete of a row the file's own trigger keeps,
/// in the answer to an upload, failed every round from then on: neither
/// later edits went up nor the server's came down.
#[test]
fn a_refused_delete_in_an_uploads_answer_waits_aside_and_sync_goes_on() {
    let s = Scenario::new("program_refused_answer", CUSTOMERS_CLIENT_WINS.replace("client_wins", "server_wins").as_str(), "shop");
    let file = nocase_file(&s);
    s.server().batch_execute("DELETE FROM customers WHERE id = 2").unwrap();
    local(&file, "UPDATE customers SET name = 'Grace H' WHERE id = 2");
    s.sync(&file, json!({}));
    s.server().batch_execute("UPDATE customers SET name = 'Edsger D' WHERE id = 3").unwrap();
    local(&file, "UPDATE customers SET name = 'Ada L' WHERE id = 1");
    s.sync(&file, json!({}));
    assert_eq!(local_value(&file, "SELECT name FROM customers WHERE id = 3").as_deref(), Some("Edsger D"));
    assert_eq!(server_value(&s, "SELECT name FROM customers WHERE id = 1").as_deref(), Some("Ada L"));
    assert_eq!(local_count(&file, "SELECT count(*) FROM tandem_rejected WHERE kind = 'not_stored' AND key = '[2]'"), 1);
}

/// Helper 58: a deferred foreign key of the file's own that refuses the
/// server's delete fails the batch at commit, every round, and SQLite
/// says only "FOREIGN KEY constraint failed". The error now names the key
/// and says what to do.
#[test]
fn a_deferred_key_that_refuses_a_batch_is_named_with_what_to_do() {
    let s = Scenario::new("program_deferred_key", SCHEMA, "shop");
    let file = held_before(
        &s,
        "CREATE TABLE customers (id INTEGER PRIMARY KEY, tenant_id INTEGER NOT NULL, name TEXT NOT NULL);
             CREATE TABLE orders (id INTEGER PRIMARY KEY, tenant_id INTEGER NOT NULL,
                                  customer_id INTEGER REFERENCES customers DEFERRABLE INITIALLY DEFERRED, total NUMERIC);",
    );
    s.server().batch_execute("UPDATE customers SET tenant_id = 2 WHERE id = 1").unwrap();
    let options = serde_json::from_value(json!({})).unwrap();
    let error = file.sync(&s.db.url, "shop", &options).unwrap_err().to_string();
    assert!(error.contains("from orders to customers") && error.contains("DEFERRABLE"), "{error}");
    assert_eq!(local_count(&file, "SELECT count(*) FROM customers WHERE id = 1"), 1, "the batch was undone whole");
}

/// The triggers on a synced table when sync is not writing: the log's
/// alone fire on a program's UPDATE of a value. What notes the file's own
/// changes while sync writes lives on sync's connection for that
/// transaction only, so every other update of a device skips it; a file
/// an earlier Tandem made loses its copy in the file.
#[test]
fn a_programs_update_fires_the_logs_trigger_alone() {
    let s = Scenario::new("program_update_triggers", SCHEMA, "shop");
    let file = held_before(&s, &shop_tables("SET NULL"));
    let id = local_count(&file, "SELECT id FROM tandem_tables WHERE name = 'public.orders'");
    let on_update = "SELECT group_concat(name, ',') FROM (SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'orders' \
         AND sql LIKE '%AFTER UPDATE ON%' UNION ALL SELECT name FROM sqlite_temp_master WHERE type = 'trigger' ORDER BY name)";
    assert_eq!(local_value(&file, on_update), Some(format!("tandem_{id}_update")));
    // As an earlier Tandem left it.
    local(&file, &format!("CREATE TRIGGER tandem_{id}_local_only_update AFTER UPDATE ON orders WHEN 0 BEGIN SELECT 1; END"));
    drop(file);
    let file = s.store("a.db");
    local(&file, "PRAGMA foreign_keys = ON");
    s.server().batch_execute("UPDATE customers SET tenant_id = 2 WHERE id = 2").unwrap();
    s.sync(&file, json!({}));
    assert_eq!(local_value(&file, on_update), Some(format!("tandem_{id}_update")));
    // Noting still works: the customer the file's own key set NULL stays
    // the server's through an edit.
    local(&file, "UPDATE orders SET total = 12.5 WHERE id = 11");
    s.sync(&file, json!({}));
    assert_eq!(server_value(&s, "SELECT customer_id || ':' || total FROM orders WHERE id = 11").as_deref(), Some("2:12.50"));
}

/// What the file's own trigger changed while sync wrote is noted; once
/// the program drops that trigger, the file has nothing of its own that
/// acts, yet sync's transaction still notes while it writes the table
/// (it holds a note), so the server's next row of the order replaces the
/// note. Left, the note would send the server's old total back over its
/// newer one with the program's next edit.
#[test]
fn the_servers_next_row_replaces_a_note_after_the_program_drops_its_trigger() {
    let s = Scenario::new("program_note_replaced", SCHEMA, "shop");
    let file = counting_lines(&s);
    let id = local_count(&file, "SELECT id FROM tandem_tables WHERE name = 'public.orders'");
    let noted = format!("SELECT count(*) FROM tandem_local_only_{id}");
    assert_eq!(local_count(&file, &noted), 2, "the total, noted");
    local(&file, "DROP TRIGGER program_line_total");
    s.server().batch_execute("UPDATE orders SET total = 50 WHERE id = 10").unwrap();
    s.sync(&file, json!({}));
    assert_eq!(local_value(&file, "SELECT total FROM orders WHERE id = 10").as_deref(), Some("50.00"));
    assert_eq!(local_count(&file, &noted), 0, "replaced by the server's row");
    local(&file, "UPDATE orders SET customer_id = 2 WHERE id = 10");
    s.sync(&file, json!({}));
    assert_eq!(server_value(&s, "SELECT customer_id || ':' || total FROM orders WHERE id = 10").as_deref(), Some("2:50.00"));
}

/// [`shop_tables`] whose lines follow their order's key (`ON UPDATE
/// CASCADE`).
fn shop_tables_moving_lines() -> String {
    shop_tables("CASCADE").replace("REFERENCES orders (id) ON DELETE CASCADE", "REFERENCES orders (id) ON UPDATE CASCADE ON DELETE CASCADE")
}

/// The server's order lines, `order:SKU` in key order.
fn server_lines(s: &Scenario) -> Option<String> {
    server_value(s, r#"SELECT string_agg("Order Id" || ':' || "SKU", ',' ORDER BY "Order Id", "Line No") FROM "Order Lines""#)
}

/// A round after a key change that did not apply sends nothing more, and
/// the order lines are where they were, on the server and in the file.
fn assert_lines_back(s: &Scenario, file: &Store) {
    let report = s.sync(file, json!({}));
    assert_eq!((report.pushed, report.rejected.len()), (0, 0), "{report:?}");
    assert_eq!(server_lines(s).as_deref(), Some("10:A,10:B,11:C"));
    assert_eq!(
        local_value(file, r#"SELECT group_concat("Order Id" || ':' || "SKU", ',') FROM (SELECT * FROM "Order Lines" ORDER BY 1, 2)"#)
            .as_deref(),
        Some("10:A,10:B,11:C"),
        "the lines are back under their order"
    );
}

/// Helper 78: a key change the server refused, whose rows the file's own
/// `ON UPDATE CASCADE` had moved along (an order's lines), put the order
/// back and took the lines with it; their moves then went up as deletes,
/// and the server's lines were gone for every device. The lines go back
/// with their order, and nothing of the server's is lost.
#[test]
fn the_rows_a_refused_key_change_took_along_go_back_with_it() {
    let s = Scenario::new("program_refused_move", SCHEMA, "shop");
    let file = held_before(&s, &shop_tables_moving_lines());
    // numeric(12,2) would round 1.005: the order's change is refused.
    local(&file, "UPDATE orders SET id = 12, total = 1.005 WHERE id = 10");
    assert_eq!(local_count(&file, r#"SELECT count(*) FROM "Order Lines" WHERE "Order Id" = 12"#), 2, "the file's key moved the lines");
    let report = s.sync(&file, json!({}));
    assert_eq!(report.rejected.len(), 1, "{report:?}");
    assert_eq!(server_lines(&s).as_deref(), Some("10:A,10:B,11:C"), "{report:?}");
    assert_lines_back(&s, &file);
    assert_eq!(local_count(&file, "SELECT count(*) FROM tandem_rejected"), 1, "the refused change is kept");
    // The program moves the line itself (no action of the file's key): the
    // line's move is refused on its own (its order is not at the new key)
    // and comes back too.
    local(
        &file,
        r#"PRAGMA foreign_keys = OFF; UPDATE orders SET id = 13, total = 1.005 WHERE id = 11; UPDATE "Order Lines" SET "Order Id" = 13 WHERE "Order Id" = 11"#,
    );
    s.sync(&file, json!({}));
    let report = s.sync(&file, json!({}));
    assert_eq!((report.pushed, report.rejected.len()), (0, 0), "{report:?}");
    assert_eq!(server_lines(&s).as_deref(), Some("10:A,10:B,11:C"));
    assert_eq!(local_count(&file, r#"SELECT count(*) FROM "Order Lines" WHERE "Order Id" = 11"#), 1, "the line is back");
    assert_eq!(local_count(&file, "SELECT count(*) FROM tandem_rejected"), 3, "both refused changes are kept");
}

/// Helper 80: as above, with the old key taken again by the program before
/// the sync (the order moved, a new order 10 written): the moved order
/// cannot go back, and its row goes. The lines the file's own key had
/// moved with it went with that row; their moves, read as moved and then
/// deleted, deleted the server's lines. They are no change of the server's
/// rows now: nothing of the server's is deleted.
#[test]
fn the_rows_a_refused_key_change_took_along_are_not_deleted_when_its_old_key_is_taken_again() {
    let s = Scenario::new("program_refused_move_taken", SCHEMA, "shop");
    let file = held_before(&s, &shop_tables_moving_lines());
    local(&file, "UPDATE orders SET id = 12, total = 1.005 WHERE id = 10; INSERT INTO orders VALUES (10, 1, 1, 3)");
    let report = s.sync(&file, json!({}));
    assert_eq!(report.rejected.len(), 1, "{report:?}");
    assert_eq!(server_lines(&s).as_deref(), Some("10:A,10:B,11:C"), "{report:?}");
    s.sync(&file, json!({}));
    assert_eq!(server_lines(&s).as_deref(), Some("10:A,10:B,11:C"));
}

/// Helper 80 (F2): a key change the server settled against (its new key
/// taken by an order the device had not received) left the lines the
/// file's own key had moved with it to go up on their own, and they moved
/// under the server's other order, all devices following. A row whose
/// parent key it takes is the new key of a parent's change that did not
/// apply is held to it: a conflict the server wins, and the lines stay
/// under their order.
#[test]
fn the_rows_a_key_change_took_along_stay_when_the_server_settles_against_it() {
    let s = Scenario::new("program_move_lost", SCHEMA, "shop");
    let file = held_before(&s, &shop_tables_moving_lines());
    s.server().batch_execute("INSERT INTO orders VALUES (12, 1, 1, 1.00)").unwrap();
    local(&file, "UPDATE orders SET id = 12 WHERE id = 10");
    let report = s.sync(&file, json!({}));
    assert_eq!(server_lines(&s).as_deref(), Some("10:A,10:B,11:C"), "{report:?}");
    assert_lines_back(&s, &file);
}

/// Helper 83: a customer's key change onto another tenant's key is refused
/// and goes back; the file's own `ON UPDATE CASCADE` takes the order's
/// customer back with it. That was noted as the file's own change while
/// sync wrote, so the order went up with the other tenant's customer,
/// which could then delete it by its own cascade. Helper 84: with the
/// file's key `ON UPDATE SET NULL`, the order's customer, emptied when the
/// program moved the customer, kept no trace of it, so undoing the move
/// could not put it back, and the emptied customer went up as the
/// program's change. The order came with the refused change and is
/// refused with it: it takes the server's row back.
#[test]
fn a_row_a_refused_key_change_reached_is_refused_with_it() {
    for action in ["CASCADE", "SET NULL"] {
        let s = Scenario::new("program_refused_move_tenant", SCHEMA, "shop");
        s.server().batch_execute("INSERT INTO customers VALUES (3, 2, 'Other'); INSERT INTO orders VALUES (12, 1, 1, 1)").unwrap();
        let tables = shop_tables("CASCADE")
            .replace("REFERENCES customers ON DELETE CASCADE", &format!("REFERENCES customers ON UPDATE {action} ON DELETE CASCADE"));
        let file = held_before(&s, &tables);
        // Order 12 the program points at another customer itself: its own.
        local(&file, "UPDATE orders SET customer_id = 2 WHERE id = 12; UPDATE customers SET id = 3 WHERE id = 1");
        assert_eq!(local_count(&file, "SELECT count(*) FROM orders WHERE id = 10 AND customer_id IS NOT 1"), 1, "{action}");
        let report = s.sync(&file, json!({}));
        let refused: Vec<&str> = report.rejected.iter().map(|r| r.table.as_str()).collect();
        assert_eq!(refused, ["public.customers", "public.orders"], "{action}: {report:?}");
        let report = s.sync(&file, json!({}));
        assert_eq!((report.pushed, report.rejected.len()), (0, 0), "{action}: {report:?}");
        assert_eq!(server_value(&s, "SELECT customer_id::text FROM orders WHERE id = 10").as_deref(), Some("1"), "{action}");
        assert_eq!(local_count(&file, "SELECT customer_id FROM orders WHERE id = 10"), 1, "{action}: the order's customer is back");
        assert_eq!(server_value(&s, "SELECT customer_id::text FROM orders WHERE id = 12").as_deref(), Some("2"), "{action}");
    }
}

/// Helper 89: a new order with a line, its key then changed by the program
/// (the file's own key moves the line along), sent a row a batch: the line
/// must not reach the server before the order it belongs to, nor be lost
/// for it.
#[test]
fn a_new_row_moved_before_it_was_sent_goes_before_the_rows_under_it() {
    let s = Scenario::new("program_new_moved_batches", SCHEMA, "shop");
    let file = held_before(&s, &shop_tables_moving_lines());
    local(
        &file,
        r#"INSERT INTO orders VALUES (20, 1, 1, 5); INSERT INTO "Order Lines" VALUES (20, 1, 'X');
           UPDATE orders SET id = 21 WHERE id = 20; UPDATE "Order Lines" SET "SKU" = 'Y' WHERE "Order Id" = 21"#,
    );
    let mut all = Vec::new();
    for _ in 0..6 {
        let report = s.sync(&file, json!({"params": {"tenant": 1}, "max_rows": 1}));
        all.push(format!("{report:?}"));
    }
    assert_eq!(server_lines(&s).as_deref(), Some("10:A,10:B,11:C,21:Y"), "{all:#?}");
    assert_eq!(local_count(&file, r#"SELECT count(*) FROM "Order Lines" WHERE "Order Id" = 21 AND "SKU" = 'Y'"#), 1, "{all:#?}");
}

/// Helper 89: a new order under a customer whose key the program changed
/// after (the file's own key moves the order along), sent a row a batch:
/// the order's first change comes before the customer's, but it holds the
/// customer's new key, which the server does not have until the
/// customer's change is sent.
#[test]
fn a_new_row_under_a_parent_moved_after_it_is_not_lost_to_its_foreign_key() {
    let s = Scenario::new("program_parent_moved_after", SCHEMA, "shop");
    let file = held_before(
        &s,
        &shop_tables("CASCADE").replace("REFERENCES customers ON DELETE", "REFERENCES customers ON UPDATE CASCADE ON DELETE"),
    );
    local(&file, "INSERT INTO customers VALUES (3, 1, 'Edsger')");
    s.sync(&file, tenant(1));
    local(&file, "INSERT INTO orders VALUES (30, 1, 3, 5); UPDATE customers SET id = 4 WHERE id = 3");
    assert_eq!(local_count(&file, "SELECT count(*) FROM orders WHERE id = 30 AND customer_id = 4"), 1);
    let mut all = Vec::new();
    for _ in 0..6 {
        let report = s.sync(&file, json!({"params": {"tenant": 1}, "max_rows": 1}));
        all.push(format!("{report:?}"));
    }
    assert_eq!(server_value(&s, "SELECT customer_id::text FROM orders WHERE id = 30").as_deref(), Some("4"), "{all:#?}");
    assert_eq!(local_count(&file, "SELECT count(*) FROM orders WHERE id = 30 AND customer_id = 4"), 1, "{all:#?}");
}

/// Helper 89: a new order under a customer whose key the program changed
/// (the file's own key moves the order along), the customer changed on the
/// server meanwhile: the key change is a conflict the server wins, and the
/// customer stays at its old key. The new order is the program's and
/// nobody else's: it goes in under the customer where the server keeps
/// it, not out of the file; an order the program edited keeps its edit.
#[test]
fn a_new_row_under_a_parent_whose_key_change_lost_stays_under_the_parent() {
    let s = Scenario::new("program_parent_move_lost", SCHEMA, "shop");
    let file = held_before(
        &s,
        &shop_tables("CASCADE").replace("REFERENCES customers ON DELETE", "REFERENCES customers ON UPDATE CASCADE ON DELETE"),
    );
    local(&file, "INSERT INTO customers VALUES (3, 1, 'Edsger'); INSERT INTO orders VALUES (31, 1, 3, 1)");
    s.sync(&file, tenant(1));
    local(
        &file,
        "INSERT INTO orders VALUES (30, 1, 3, 5); UPDATE customers SET id = 4 WHERE id = 3; UPDATE orders SET total = 9 WHERE id = 31",
    );
    s.server().batch_execute("UPDATE customers SET name = 'Edsger W.' WHERE id = 3").unwrap();
    let report = s.sync(&file, tenant(1));
    assert_eq!(report.conflicts.len(), 1, "only the key change meets the server's edit: {report:?}");
    assert_eq!(server_value(&s, "SELECT customer_id || ':' || total FROM orders WHERE id = 30").as_deref(), Some("3:5.00"), "{report:?}");
    assert_eq!(server_value(&s, "SELECT customer_id || ':' || total FROM orders WHERE id = 31").as_deref(), Some("3:9.00"), "{report:?}");
    s.sync(&file, tenant(1));
    assert_eq!(local_count(&file, "SELECT count(*) FROM orders WHERE id = 30 AND customer_id = 3"), 1, "{report:?}");
    assert_eq!(local_count(&file, "SELECT count(*) FROM customers WHERE id = 3 AND name = 'Edsger W.'"), 1, "{report:?}");
    let quiet = s.sync(&file, tenant(1));
    assert_eq!((quiet.pushed, quiet.pulled, quiet.conflicts.len()), (0, 0, 0), "{quiet:?}");
}

/// Helper 89: the program changes a customer's key (the file's own key
/// moves its orders along) and edits one of those orders. The server's own
/// `ON UPDATE CASCADE` moves the order when the customer's change applies:
/// that change of the order is the upload's own, not another writer's, so
/// the order's edit goes on instead of meeting it as a conflict.
#[test]
fn an_edit_of_a_row_a_parents_key_change_moved_is_no_conflict_with_that_change() {
    let schema = SCHEMA.replace("customer_id bigint REFERENCES customers,", "customer_id bigint REFERENCES customers ON UPDATE CASCADE,");
    let s = Scenario::new("program_parent_moved_child_edited", &schema, "shop");
    let file = held_before(
        &s,
        &shop_tables("CASCADE").replace("REFERENCES customers ON DELETE", "REFERENCES customers ON UPDATE CASCADE ON DELETE"),
    );
    local(&file, "INSERT INTO customers VALUES (3, 1, 'Edsger'); INSERT INTO orders VALUES (31, 1, 3, 1), (32, 1, 3, 2)");
    s.sync(&file, tenant(1));
    local(&file, "UPDATE customers SET id = 4 WHERE id = 3; UPDATE orders SET total = 9 WHERE id = 31");
    let report = s.sync(&file, tenant(1));
    assert!(report.conflicts.is_empty(), "{report:?}");
    let orders = server_value(&s, "SELECT string_agg(id || ':' || customer_id || ':' || total, ',' ORDER BY id) FROM orders WHERE id > 30");
    assert_eq!(orders.as_deref(), Some("31:4:9.00,32:4:2.00"), "{report:?}");
    let quiet = s.sync(&file, tenant(1));
    assert_eq!((quiet.pushed, quiet.conflicts.len()), (0, 0), "{quiet:?}");
    assert_eq!(local_count(&file, "SELECT count(*) FROM orders WHERE customer_id = 4 AND total IN (9, 2)"), 2);
}

/// Helpers 90 and 91: a customer's key change that loses its conflict (the
/// customer changed on the server meanwhile) goes back by an update, so
/// the file's own keys take its orders back with it; taking the server's
/// row instead deleted the customer at its new key, and the file's own
/// `ON DELETE CASCADE` took the orders and their lines with it, the
/// program's edit of an order sent in a later batch included.
#[test]
fn a_key_change_that_loses_its_conflict_takes_the_rows_under_it_back() {
    let s = Scenario::new("program_lost_move_children", SCHEMA, "shop");
    let file = held_before(
        &s,
        &shop_tables("CASCADE").replace("REFERENCES customers ON DELETE", "REFERENCES customers ON UPDATE CASCADE ON DELETE"),
    );
    local(&file, "UPDATE customers SET id = 5 WHERE id = 1; UPDATE orders SET total = 3 WHERE id = 10");
    s.server().batch_execute("UPDATE customers SET name = 'Ada L.' WHERE id = 1").unwrap();
    let mut all = Vec::new();
    for _ in 0..4 {
        all.push(format!("{:?}", s.sync(&file, json!({"params": {"tenant": 1}, "max_rows": 1}))));
    }
    assert_eq!(local_count(&file, r#"SELECT count(*) FROM "Order Lines" WHERE "Order Id" = 10"#), 2, "{all:#?}");
    assert_eq!(local_count(&file, "SELECT count(*) FROM orders WHERE id = 10 AND customer_id = 1"), 1, "{all:#?}");
    assert_eq!(server_value(&s, "SELECT customer_id || ':' || total FROM orders WHERE id = 10").as_deref(), Some("1:3.00"), "{all:#?}");
    assert_eq!(server_value(&s, "SELECT name FROM customers WHERE id = 1").as_deref(), Some("Ada L."), "{all:#?}");
}

/// Helper 90: as above, with the order's own key changed too: the order's
/// key change is made on the row the customer's change moved, and goes on.
#[test]
fn a_key_change_of_a_row_a_parents_key_change_moved_is_no_conflict_with_that_change() {
    let schema = SCHEMA.replace("customer_id bigint REFERENCES customers,", "customer_id bigint REFERENCES customers ON UPDATE CASCADE,");
    let s = Scenario::new("program_parent_moved_child_moved", &schema, "shop");
    let file = held_before(
        &s,
        &shop_tables("CASCADE").replace("REFERENCES customers ON DELETE", "REFERENCES customers ON UPDATE CASCADE ON DELETE"),
    );
    local(&file, "INSERT INTO customers VALUES (3, 1, 'Edsger'); INSERT INTO orders VALUES (31, 1, 3, 1)");
    s.sync(&file, tenant(1));
    local(&file, "UPDATE customers SET id = 4 WHERE id = 3; UPDATE orders SET id = 33, total = 9 WHERE id = 31");
    let report = s.sync(&file, tenant(1));
    assert!(report.conflicts.is_empty(), "{report:?}");
    let orders = server_value(&s, "SELECT string_agg(id || ':' || customer_id || ':' || total, ',' ORDER BY id) FROM orders WHERE id > 30");
    assert_eq!(orders.as_deref(), Some("33:4:9.00"), "{report:?}");
}

/// Helper 91: the program deletes a customer, and the file's own `ON DELETE
/// CASCADE` its orders and their lines; the customer changed on the server
/// meanwhile, so its delete is a conflict the server wins. The orders and
/// lines went up as deletes of their own: they stay with the customer the
/// server keeps, and the file takes them back.
#[test]
fn rows_deleted_with_a_parent_whose_delete_lost_stay_with_it() {
    let s = Scenario::new("program_lost_delete_children", SCHEMA, "shop");
    let file = held_before(&s, &shop_tables("CASCADE"));
    local(&file, "DELETE FROM customers WHERE id = 1");
    assert_eq!(local_count(&file, "SELECT count(*) FROM orders WHERE id = 10"), 0, "the file's own key took the order");
    s.server().batch_execute("UPDATE customers SET name = 'Ada L.' WHERE id = 1").unwrap();
    let report = s.sync(&file, tenant(1));
    assert_eq!(server_lines(&s).as_deref(), Some("10:A,10:B,11:C"), "{report:?}");
    assert_eq!(server_value(&s, "SELECT count(*)::text FROM orders WHERE customer_id = 1").as_deref(), Some("1"), "{report:?}");
    s.sync(&file, tenant(1));
    assert_eq!(local_count(&file, r#"SELECT count(*) FROM "Order Lines" WHERE "Order Id" = 10"#), 2, "{report:?}");
    assert_eq!(local_count(&file, "SELECT count(*) FROM customers WHERE id = 1 AND name = 'Ada L.'"), 1, "{report:?}");
}

/// A new order the server refuses (numeric(12,2) would round 1.005), with
/// a line under it: sent again without the order, the line would fail the
/// server's foreign key and leave the file as a conflict. It is refused
/// with its order, and both wait in `tandem_rejected`.
#[test]
fn a_row_under_a_new_parent_the_server_refused_waits_with_it() {
    let s = Scenario::new("program_refused_new_parent", SCHEMA, "shop");
    let file = held_before(&s, &shop_tables("CASCADE"));
    local(&file, r#"INSERT INTO orders VALUES (40, 1, 1, 1.005); INSERT INTO "Order Lines" VALUES (40, 1, 'X')"#);
    let report = s.sync(&file, tenant(1));
    assert!(report.conflicts.is_empty(), "{report:?}");
    assert_eq!(report.rejected.len(), 2, "{report:?}");
    assert_eq!(local_count(&file, "SELECT count(*) FROM tandem_rejected WHERE row IS NOT NULL"), 2, "each kept with its row: {report:?}");
    assert_eq!(server_lines(&s).as_deref(), Some("10:A,10:B,11:C"), "{report:?}");
    let quiet = s.sync(&file, tenant(1));
    assert_eq!((quiet.pushed, quiet.rejected.len(), quiet.conflicts.len()), (0, 0, 0), "{quiet:?}");
}

/// Helper 92: as above, with other changes ahead of the deletes, so that
/// an order's delete and the lines the file's own key deleted with it fit
/// one batch only if the lines' deletes wait for the order's: sent first,
/// they were gone from the server before the order's delete lost.
#[test]
fn rows_deleted_with_a_parent_wait_for_its_batch() {
    let s = Scenario::new("program_lost_delete_batches", SCHEMA, "shop");
    let file = held_before(&s, &shop_tables("CASCADE"));
    local(&file, "UPDATE customers SET name = name || '!'; DELETE FROM orders WHERE id = 10");
    s.server().batch_execute("UPDATE orders SET total = 12 WHERE id = 10").unwrap();
    let mut all = Vec::new();
    for _ in 0..3 {
        all.push(format!("{:?}", s.sync(&file, json!({"params": {"tenant": 1}, "max_rows": 4}))));
    }
    assert_eq!(server_lines(&s).as_deref(), Some("10:A,10:B,11:C"), "{all:#?}");
    assert_eq!(server_value(&s, "SELECT string_agg(name, ',' ORDER BY id) FROM customers").as_deref(), Some("Ada!,Grace!"), "{all:#?}");
    assert_eq!(local_count(&file, r#"SELECT count(*) FROM "Order Lines" WHERE "Order Id" = 10"#), 2, "{all:#?}");
}

/// Helper 94: the program moves an order under a new customer the server
/// refuses (a tenant id past `int`) and edits one of the order's lines.
/// The order is refused with its customer and comes back under its old
/// one; removing the refused customer first took it, and its lines with
/// their edit, by the file's own `ON DELETE CASCADE`.
#[test]
fn a_row_moved_under_a_refused_new_parent_comes_back_with_the_rows_under_it() {
    let s = Scenario::new("program_moved_under_refused", SCHEMA, "shop");
    let file = held_before(&s, &shop_tables("CASCADE"));
    local(
        &file,
        r#"INSERT INTO customers VALUES (8, 3000000000, 'Big'); UPDATE orders SET customer_id = 8 WHERE id = 10;
           UPDATE "Order Lines" SET "SKU" = 'Z' WHERE "Order Id" = 10 AND "Line No" = 1"#,
    );
    let report = s.sync(&file, tenant(1));
    assert_eq!(report.rejected.len(), 2, "{report:?}");
    assert_eq!(server_lines(&s).as_deref(), Some("10:Z,10:B,11:C"), "{report:?}");
    assert_eq!(local_count(&file, r#"SELECT count(*) FROM "Order Lines" WHERE "Order Id" = 10"#), 2, "{report:?}");
    assert_eq!(local_count(&file, "SELECT count(*) FROM orders WHERE id = 10 AND customer_id = 1"), 1, "{report:?}");
}

/// Helper 95: the program changes a customer's key and, in the same round,
/// moves one of its orders to another customer. The server's own cascade
/// moves the order under the new key first; the program's move of it is
/// its own change over that, not a conflict.
#[test]
fn a_row_moved_to_another_parent_as_its_old_parents_key_changes_goes_there() {
    let schema = SCHEMA.replace("customer_id bigint REFERENCES customers,", "customer_id bigint REFERENCES customers ON UPDATE CASCADE,");
    let s = Scenario::new("program_parent_moved_child_repointed", &schema, "shop");
    let file = held_before(
        &s,
        &shop_tables("CASCADE").replace("REFERENCES customers ON DELETE", "REFERENCES customers ON UPDATE CASCADE ON DELETE"),
    );
    local(&file, "INSERT INTO customers VALUES (3, 1, 'Edsger'); INSERT INTO orders VALUES (31, 1, 3, 1), (32, 1, 3, 2)");
    s.sync(&file, tenant(1));
    local(&file, "UPDATE customers SET id = 4 WHERE id = 3; UPDATE orders SET customer_id = 2 WHERE id = 31");
    let report = s.sync(&file, tenant(1));
    assert!(report.conflicts.is_empty(), "{report:?}");
    let orders = server_value(&s, "SELECT string_agg(id || ':' || customer_id, ',' ORDER BY id) FROM orders WHERE id > 30");
    assert_eq!(orders.as_deref(), Some("31:2,32:4"), "{report:?}");
}
