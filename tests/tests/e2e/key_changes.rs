//! A key changed on a device is one change: the server moves its row in one
//! UPDATE (its `ON UPDATE CASCADE` foreign keys and triggers run), or the
//! change is refused or loses its conflict whole, and the device gets the
//! row at the old key back. Never a delete that lands without its insert.

use serde_json::json;
use tandem_local::{Store, SyncOptions};
use tandem_tests::local::{assert_converged, local, local_count, local_value, Interfering, Scenario};

const ACCOUNTS: &str = r#"
CREATE TABLE accounts (code text PRIMARY KEY, tenant_id int NOT NULL, name text);
CREATE TABLE invoices (
    id int PRIMARY KEY,
    tenant_id int NOT NULL,
    account text REFERENCES accounts (code) ON UPDATE CASCADE,
    amount numeric
);
CREATE TABLE customers (id bigint PRIMARY KEY, tenant_id int NOT NULL, name text);
CREATE TABLE slots (day date, room int, tenant_id int NOT NULL, note text, PRIMARY KEY (day, room));
INSERT INTO slots VALUES ('2025-06-01', 1, 1, 'standup');
INSERT INTO accounts VALUES ('a1', 1, 'Acme'), ('b1', 2, 'Other');
INSERT INTO invoices VALUES (1, 1, 'a1', 10), (2, 1, 'a1', 20);
INSERT INTO customers VALUES (1, 1, 'Ada'), (2, 1, 'Bob'), (3, 2, 'Cy');
SELECT sync_provision('s', '{"tables": [
    {"name": "accounts", "filter": {"tenant_id": "tenant"}},
    {"name": "invoices", "filter": {"tenant_id": "tenant"}},
    {"name": "customers", "filter": {"tenant_id": "tenant"}},
    {"name": "slots", "filter": {"tenant_id": "tenant"}}]}');
"#;

fn server_count(s: &Scenario, sql: &str) -> i64 {
    s.server().query_one(sql, &[]).unwrap().get(0)
}

/// Tenant 1's invoices on the server, as `id:account:amount`.
fn tenant_invoices(s: &Scenario) -> Vec<String> {
    let sql = "SELECT id || ':' || account || ':' || amount FROM invoices WHERE tenant_id = 1 ORDER BY id";
    s.server().query(sql, &[]).unwrap().iter().map(|r| r.get(0)).collect()
}

#[test]
fn a_key_change_moves_the_servers_row_so_its_cascades_run() {
    let s = Scenario::new("key_move", ACCOUNTS, "s");
    let token = s.register(json!({"tenant": 1}));
    let file = s.store("a.db");
    s.sync_as(&file, &token);
    local(&file, "UPDATE accounts SET code = 'a2', name = 'Acme Ltd' WHERE code = 'a1'");
    let report = s.sync_as(&file, &token);
    assert_eq!((report.pushed, report.conflicts.len(), report.rejected.len()), (1, 0, 0), "{report:?}");
    assert_eq!(server_count(&s, "SELECT count(*) FROM accounts WHERE tenant_id = 1"), 1, "moved, not copied");
    assert_eq!(server_count(&s, "SELECT count(*) FROM invoices WHERE account = 'a2'"), 2, "the cascade ran");
    // The cascade's effect reaches the device that caused it.
    assert_eq!(local_count(&file, "SELECT count(*) FROM invoices WHERE account = 'a2'"), 2);
    let logged = server_count(&s, "SELECT count(*) FROM tandem.conflicts");
    assert_eq!(logged, 0);
    assert_converged(&mut s.server(), file.connection(), "s", &json!({"tenant": 1}));
}

/// A file without a foreign key of its own keeps its rows under the old
/// key of a parent whose key it changed: an edit of one of them, and a
/// new one, go up under the old key. The server's `ON UPDATE CASCADE`
/// would have moved them with the parent had they been there: they go in
/// under the new key, their edits with them, and come back to the device
/// so (helper 100: each was a conflict the server won, the edit kept only
/// in the logs and the new row gone from the file).
#[test]
fn rows_under_the_old_key_of_a_parents_key_change_follow_it() {
    let s = Scenario::new("key_follow", ACCOUNTS, "s");
    let token = s.register(json!({"tenant": 1}));
    let file = s.store("a.db");
    s.sync_as(&file, &token);
    local(
        &file,
        "UPDATE invoices SET amount = 99 WHERE id = 1; INSERT INTO invoices VALUES (3, 1, 'a1', 30); \
         UPDATE accounts SET code = 'a2' WHERE code = 'a1'",
    );
    let report = s.sync_as(&file, &token);
    assert_eq!((report.conflicts.len(), report.rejected.len()), (0, 0), "{report:?}");
    assert_eq!(server_count(&s, "SELECT count(*) FROM tandem.conflicts"), 0);
    let invoices = tenant_invoices(&s);
    assert_eq!(invoices, ["1:a2:99", "2:a2:20", "3:a2:30"]);
    assert_eq!(local_count(&file, "SELECT count(*) FROM invoices WHERE account = 'a2'"), 3, "the device has them under the new key");
    assert_converged(&mut s.server(), file.connection(), "s", &json!({"tenant": 1}));
    // A parent inserted again at the old key keeps the rows sent under it.
    local(
        &file,
        "UPDATE accounts SET code = 'a3' WHERE code = 'a2'; INSERT INTO accounts VALUES ('a2', 1, 'New'); \
                   UPDATE invoices SET amount = 21 WHERE id = 2",
    );
    let report = s.sync_as(&file, &token);
    assert_eq!((report.conflicts.len(), report.rejected.len()), (0, 0), "{report:?}");
    assert_eq!(server_count(&s, "SELECT count(*) FROM invoices WHERE account = 'a2' AND id = 2 AND amount = 21"), 1);
    assert_converged(&mut s.server(), file.connection(), "s", &json!({"tenant": 1}));
}

/// A round of more changes than a batch holds: a parent's key change
/// waits for a batch that also holds the changes of the tables after it
/// (the rows under it), where those fit in one. Sent in an earlier batch,
/// the server's cascade would move those rows first, and each edit would
/// meet it as another writer's change (helper 101: each was a conflict
/// the server won).
#[test]
fn a_parents_key_change_goes_up_with_the_rows_under_it() {
    let s = Scenario::new("key_with_rows", ACCOUNTS, "s");
    let token = s.register(json!({"tenant": 1}));
    let file = s.store("a.db");
    s.sync_as(&file, &token);
    local(
        &file,
        "INSERT INTO accounts VALUES ('c1', 1, 'Other'); UPDATE accounts SET code = 'a2' WHERE code = 'a1'; \
         UPDATE invoices SET amount = 99 WHERE id = 1; UPDATE invoices SET amount = 98, account = 'a2' WHERE id = 2",
    );
    let report = s.sync(&file, json!({"token": token, "max_rows": 4}));
    assert_eq!((report.conflicts.len(), report.rejected.len()), (0, 0), "{report:?}");
    assert_eq!(server_count(&s, "SELECT count(*) FROM tandem.conflicts"), 0);
    let invoices = tenant_invoices(&s);
    assert_eq!(invoices, ["1:a2:99", "2:a2:98"]);
    assert_converged(&mut s.server(), file.connection(), "s", &json!({"tenant": 1}));
}

#[test]
fn a_key_changed_twice_is_one_move() {
    let s = Scenario::new("key_twice", ACCOUNTS, "s");
    let token = s.register(json!({"tenant": 1}));
    let file = s.store("a.db");
    s.sync_as(&file, &token);
    local(&file, "UPDATE customers SET id = 10 WHERE id = 1; UPDATE customers SET id = 11, name = 'Ada L' WHERE id = 10;");
    // Keys changed in one statement, swapping places, are still one each.
    local(&file, "UPDATE customers SET id = 20 WHERE id = 2;");
    let report = s.sync_as(&file, &token);
    assert_eq!((report.pushed, report.conflicts.len(), report.rejected.len()), (2, 0, 0), "{report:?}");
    let ids: Vec<i64> =
        s.server().query("SELECT id FROM customers WHERE tenant_id = 1 ORDER BY id", &[]).unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(ids, [11, 20]);
    assert_converged(&mut s.server(), file.connection(), "s", &json!({"tenant": 1}));
}

#[test]
fn a_refused_key_change_restores_the_old_row_and_keeps_the_refused_values() {
    let s = Scenario::new("key_refused", ACCOUNTS, "s");
    let token = s.register(json!({"tenant": 1}));
    let file = s.store("a.db");
    s.sync_as(&file, &token);
    // SQLite keeps any text in a date column; the server's date cannot.
    local(&file, "UPDATE slots SET day = 'someday' WHERE room = 1");
    // A key change into another tenant's partition is refused too.
    local(&file, "UPDATE customers SET id = 30, tenant_id = 2 WHERE id = 2");
    let report = s.sync_as(&file, &token);
    assert_eq!((report.pushed, report.rejected.len()), (0, 2), "{report:?}");
    assert_eq!(
        server_count(&s, "SELECT count(*) FROM customers WHERE id = 2") + server_count(&s, "SELECT count(*) FROM slots"),
        2,
        "the server's rows stay"
    );
    assert_eq!(local_value(&file, "SELECT note FROM slots WHERE day = '2025-06-01'").as_deref(), Some("standup"), "the old row is back");
    assert_eq!(local_value(&file, "SELECT name FROM customers WHERE id = 2").as_deref(), Some("Bob"));
    assert_eq!(
        local_count(&file, "SELECT count(*) FROM slots WHERE day = 'someday'")
            + local_count(&file, "SELECT count(*) FROM customers WHERE id = 30"),
        0
    );
    let kept = local_value(&file, "SELECT group_concat(row, ' ') FROM tandem_rejected").unwrap_or_default();
    assert!(kept.contains("someday") && kept.contains("\"tenant_id\":2"), "the refused values are kept: {kept}");
    let again = s.sync_as(&file, &token);
    assert_eq!((again.pushed, again.rejected.len()), (0, 0), "nothing left to send: {again:?}");
    assert_converged(&mut s.server(), file.connection(), "s", &json!({"tenant": 1}));
}

#[test]
fn a_key_change_that_meets_a_server_change_is_a_conflict_of_one_row() {
    let s = Scenario::new("key_conflict", ACCOUNTS, "s");
    let token = s.register(json!({"tenant": 1}));
    let file = s.store("a.db");
    s.sync_as(&file, &token);
    s.server().batch_execute("UPDATE customers SET name = 'Ada (server)' WHERE id = 1").unwrap();
    local(&file, "UPDATE customers SET id = 7 WHERE id = 1");
    let report = s.sync_as(&file, &token);
    assert_eq!(report.conflicts.len(), 1, "{report:?}");
    assert_eq!(server_count(&s, "SELECT count(*) FROM customers WHERE id IN (1, 7)"), 1, "nothing half-applied");
    assert_eq!(local_value(&file, "SELECT name FROM customers WHERE id = 1").as_deref(), Some("Ada (server)"));
    assert_eq!(local_count(&file, "SELECT count(*) FROM customers WHERE id = 7"), 0);
    // The new key taken on the server meanwhile: the move cannot land, and
    // the device gets both rows as the server has them.
    s.server().batch_execute("INSERT INTO customers VALUES (8, 1, 'Eve (server)')").unwrap();
    local(&file, "UPDATE customers SET id = 8 WHERE id = 2");
    let report = s.sync_as(&file, &token);
    assert_eq!(report.conflicts.len(), 1, "{report:?}");
    assert_eq!(local_value(&file, "SELECT name FROM customers WHERE id = 8").as_deref(), Some("Eve (server)"));
    assert_eq!(local_value(&file, "SELECT name FROM customers WHERE id = 2").as_deref(), Some("Bob"));
    assert_converged(&mut s.server(), file.connection(), "s", &json!({"tenant": 1}));
}

#[test]
fn a_key_change_whose_answer_was_lost_is_not_applied_twice() {
    let s = Scenario::new("key_retry", ACCOUNTS, "s");
    let token = s.register(json!({"tenant": 1}));
    let file = s.store("a.db");
    s.sync_as(&file, &token);
    local(&file, "UPDATE accounts SET code = 'a2' WHERE code = 'a1'");
    s.sync_as_answer_lost(&file, &token);
    let report = s.sync_as(&file, &token);
    assert!(report.conflicts.is_empty() && report.rejected.is_empty(), "{report:?}");
    assert_eq!(server_count(&s, "SELECT count(*) FROM accounts WHERE tenant_id = 1"), 1);
    assert_converged(&mut s.server(), file.connection(), "s", &json!({"tenant": 1}));
}

#[test]
fn a_key_change_that_wins_its_conflict_moves_the_row() {
    let schema =
        ACCOUNTS.replace(r#"SELECT sync_provision('s', '{"tables""#, r#"SELECT sync_provision('s', '{"policy": "client_wins", "tables""#);
    let s = Scenario::new("key_wins", &schema, "s");
    let token = s.register(json!({"tenant": 1}));
    let file = s.store("a.db");
    s.sync_as(&file, &token);
    s.server().batch_execute("UPDATE accounts SET name = 'Acme (server)' WHERE code = 'a1'").unwrap();
    local(&file, "UPDATE accounts SET code = 'a3' WHERE code = 'a1'");
    let report = s.sync_as(&file, &token);
    assert_eq!(report.conflicts.len(), 1, "{report:?}");
    assert_eq!(server_count(&s, "SELECT count(*) FROM accounts WHERE tenant_id = 1"), 1, "moved, not copied");
    assert_eq!(server_count(&s, "SELECT count(*) FROM invoices WHERE account = 'a3'"), 2, "the cascade ran");
    assert_converged(&mut s.server(), file.connection(), "s", &json!({"tenant": 1}));
}

#[test]
fn a_file_from_before_moves_were_logged_learns_to_log_them() {
    let s = Scenario::new("key_old_file", ACCOUNTS, "s");
    let token = s.register(json!({"tenant": 1}));
    let path = s.files.path("old.db");
    {
        let file = tandem_local::Store::open(&path).unwrap();
        s.sync_as(&file, &token);
        // As an earlier Tandem left it: no column for the new key, and a
        // key trigger that logs only the old one.
        let id = local_count(&file, "SELECT id FROM tandem_tables WHERE name = 'public.customers'");
        local(
            &file,
            &format!(
                "DROP TRIGGER tandem_{id}_key; ALTER TABLE tandem_log_{id} DROP COLUMN tandem_to_1;
                 CREATE TRIGGER tandem_{id}_key AFTER UPDATE OF id ON customers WHEN OLD.id IS NOT NEW.id
                 BEGIN INSERT INTO tandem_log_{id} (id) VALUES (OLD.id); END;"
            ),
        );
    }
    let file = tandem_local::Store::open(&path).unwrap();
    local(&file, "UPDATE customers SET id = 9 WHERE id = 1");
    let report = s.sync_as(&file, &token);
    assert_eq!((report.pushed, report.conflicts.len()), (1, 0), "one move: {report:?}");
    assert_converged(&mut s.server(), file.connection(), "s", &json!({"tenant": 1}));
}

#[test]
fn a_key_change_onto_another_tenants_key_tells_nothing_of_it() {
    let s = Scenario::new("key_foreign", ACCOUNTS, "s");
    let token = s.register(json!({"tenant": 1}));
    let file = s.store("a.db");
    s.sync_as(&file, &token);
    // b1 is tenant 2's; the device cannot know it exists.
    local(&file, "UPDATE accounts SET code = 'b1' WHERE code = 'a1'");
    let report = s.sync_as(&file, &token);
    assert_eq!(report.rejected.len(), 1, "{report:?}");
    assert_eq!(report.rejected[0].reason, "the row is outside the client's partition");
    let told = serde_json::to_string(&report).unwrap();
    assert!(!told.contains("Other"), "nothing of tenant 2's row: {told}");
    assert_eq!(local_count(&file, "SELECT count(*) FROM accounts WHERE tenant_id = 2"), 0);
    assert_eq!(local_value(&file, "SELECT name FROM accounts WHERE code = 'a1'").as_deref(), Some("Acme"));
    assert_converged(&mut s.server(), file.connection(), "s", &json!({"tenant": 1}));
}

/// The server assigns its own ids: whatever key a device sends, a trigger
/// replaces it.
const SERVER_KEYS: &str = r#"
CREATE TABLE items (id bigint PRIMARY KEY, tenant_id int NOT NULL, name text);
CREATE SEQUENCE server_ids START 1000;
CREATE FUNCTION assign_id() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.id := nextval('server_ids'); RETURN NEW; END $$;
CREATE TRIGGER assign_id BEFORE INSERT ON items FOR EACH ROW EXECUTE FUNCTION assign_id();
SELECT sync_provision('s', '{"tables": [{"name": "items", "filter": {"tenant_id": "tenant"}}]}');
"#;

#[test]
fn an_insert_a_server_trigger_stores_at_another_key_is_stored_once_and_reaches_the_file_there() {
    let s = Scenario::new("server_keys", SERVER_KEYS, "s");
    let token = s.register(json!({"tenant": 1}));
    let file = s.store("tenant1.db");
    s.sync_as(&file, &token);

    local(&file, "INSERT INTO items VALUES (1, 1, 'first'), (2, 1, 'second')");
    let report = s.sync_as(&file, &token);
    assert!(report.rejected.is_empty() && report.conflicts.is_empty(), "nothing was refused or lost: {report:?}");
    let names: Vec<String> = s.server().query("SELECT name FROM items ORDER BY name", &[]).unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(names, ["first", "second"], "each insert is stored once");
    assert_eq!(local_count(&file, "SELECT count(*) FROM items WHERE id < 1000"), 0, "the file holds no row at a key the server never had");
    assert_converged(&mut s.server(), file.connection(), "s", &json!({"tenant": 1}));
}

#[test]
fn rows_a_server_trigger_re_keyed_under_a_lost_answer_are_never_stored_twice_and_later_changes_are_logged() {
    let s = Scenario::new("server_keys_lost", SERVER_KEYS, "s");
    let token = s.register(json!({"tenant": 1}));
    let file = s.store("tenant1.db");
    s.sync_as(&file, &token);
    local(&file, "INSERT INTO items VALUES (1, 1, 'first'), (2, 1, 'second')");
    // The server stores both (at 1000 and 1001); the answer never arrives.
    s.sync_as_answer_lost(&file, &token);
    // The device, not knowing the server's keys, edits one and deletes the other.
    local(&file, "UPDATE items SET name = 'first, edited' WHERE id = 1; DELETE FROM items WHERE id = 2");
    let report = s.sync_as(&file, &token);
    let names: Vec<String> = s.server().query("SELECT name FROM items ORDER BY name", &[]).unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(names, ["first", "second"], "each insert stored once, nothing at the device's keys: {report:?}");
    let mut logged: Vec<i64> = report.conflicts.iter().map(|c| c.key[0].as_i64().unwrap_or_default()).collect();
    logged.sort();
    assert_eq!(logged, [1, 2], "both later changes are logged, not lost in silence: {report:?}");
    assert_eq!(local_count(&file, "SELECT count(*) FROM tandem_conflicts WHERE client_row LIKE '%first, edited%'"), 1);
    assert_eq!(local_count(&file, "SELECT count(*) FROM items WHERE id < 1000"), 0);
    assert_converged(&mut s.server(), file.connection(), "s", &json!({"tenant": 1}));
}

#[test]
fn an_edit_of_a_moved_row_whose_answer_was_lost_applies_on_the_moved_row() {
    let s = Scenario::new("key_retry_edit", ACCOUNTS, "s");
    let token = s.register(json!({"tenant": 1}));
    let file = s.store("a.db");
    s.sync_as(&file, &token);
    local(&file, "UPDATE accounts SET code = 'a2' WHERE code = 'a1'");
    s.sync_as_answer_lost(&file, &token);
    // The server moved the row; the device, not knowing, edits it again.
    local(&file, "UPDATE accounts SET name = 'Acme, renamed' WHERE code = 'a2'");
    let report = s.sync_as(&file, &token);
    assert!(report.conflicts.is_empty() && report.rejected.is_empty(), "the device's own move, then its edit: {report:?}");
    let name = s.server().query_one("SELECT name FROM accounts WHERE code = 'a2'", &[]).unwrap().get::<_, String>(0);
    assert_eq!(name, "Acme, renamed");
    assert_eq!(server_count(&s, "SELECT count(*) FROM accounts WHERE tenant_id = 1"), 1);
    assert_converged(&mut s.server(), file.connection(), "s", &json!({"tenant": 1}));
}

#[test]
fn a_key_inserted_again_after_a_lost_delete_of_nothing_is_inserted() {
    // Answers lost twice: the second upload carries a delete of a row the
    // server never had (the file could not know), and the device then
    // inserts that key again.
    let s = Scenario::new("lost_delete_nothing", ACCOUNTS, "s");
    let token = s.register(json!({"tenant": 1}));
    let file = s.store("a.db");
    s.sync_as(&file, &token);
    local(&file, "INSERT INTO customers VALUES (10, 1, 'Ten')");
    s.sync_as_answer_lost(&file, &token);
    local(&file, "INSERT INTO customers VALUES (50, 1, 'Fifty'); DELETE FROM customers WHERE id = 50");
    s.sync_as_answer_lost(&file, &token);
    local(&file, "INSERT INTO customers VALUES (50, 1, 'Fifty again')");
    let report = s.sync_as(&file, &token);
    assert!(report.conflicts.is_empty(), "{report:?}");
    assert_eq!(server_count(&s, "SELECT count(*) FROM customers WHERE id = 50 AND name = 'Fifty again'"), 1);
    assert_converged(&mut s.server(), file.connection(), "s", &json!({"tenant": 1}));
}

/// A synced file of tenant 1 whose account a1 (with two invoices that
/// follow it on the server, by `ON UPDATE CASCADE`, and go with it by `ON
/// DELETE CASCADE`) moved to a2 on the device, not sent yet.
fn account_moved_on_the_device(name: &str) -> (Scenario, String, Store) {
    let schema = ACCOUNTS.replace("ON UPDATE CASCADE", "ON UPDATE CASCADE ON DELETE CASCADE");
    let s = Scenario::new(name, &schema, "s");
    let token = s.register(json!({"tenant": 1}));
    let file = s.store("a.db");
    s.sync_as(&file, &token);
    local(&file, "UPDATE accounts SET code = 'a2' WHERE code = 'a1'");
    (s, token, file)
}

/// The account is at `end` on the server, its invoices with it, nothing
/// was deleted or logged on the way, and the file agrees.
fn assert_account_moved_to(s: &Scenario, file: &Store, end: &str) {
    let codes: Vec<String> =
        s.server().query("SELECT code FROM accounts WHERE tenant_id = 1", &[]).unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(codes, [end], "moved, not deleted");
    assert_eq!(server_count(s, &format!("SELECT count(*) FROM invoices WHERE account = '{end}'")), 2, "the cascades ran");
    assert_eq!(server_count(s, "SELECT count(*) FROM tandem.conflicts"), 0);
    assert_eq!(local_count(file, &format!("SELECT count(*) FROM invoices WHERE account = '{end}'")), 2);
    assert_converged(&mut s.server(), file.connection(), "s", &json!({"tenant": 1}));
}

/// A→B whose answer was lost `losses` times in a row (the upload, then
/// each retry), then `second` on the device: the row ends at `end`.
fn key_changed_again_after_lost_answers(name: &str, losses: usize, second: &str, end: &str) {
    let (s, token, file) = account_moved_on_the_device(name);
    for _ in 0..losses {
        s.sync_as_answer_lost(&file, &token);
    }
    local(&file, second);
    let report = s.sync_as(&file, &token);
    assert!(report.conflicts.is_empty() && report.rejected.is_empty(), "the device's own moves: {report:?}");
    assert!(!report.resynced, "a retry's answer gives the file no reason to pull its partition again: {report:?}");
    assert_account_moved_to(&s, &file, end);
}

#[test]
fn a_key_changed_back_after_a_lost_answer_is_moved_back() {
    key_changed_again_after_lost_answers("key_lost_back", 1, "UPDATE accounts SET code = 'a1' WHERE code = 'a2'", "a1");
}

#[test]
fn a_key_changed_on_after_a_lost_answer_is_moved_on() {
    key_changed_again_after_lost_answers("key_lost_on", 1, "UPDATE accounts SET code = 'a3' WHERE code = 'a2'", "a3");
}

#[test]
fn a_key_changed_again_after_two_lost_answers_is_moved_on() {
    key_changed_again_after_lost_answers("key_lost_twice", 2, "UPDATE accounts SET code = 'a3' WHERE code = 'a2'", "a3");
}

#[test]
fn a_key_moved_back_while_its_move_was_in_flight_is_moved_back() {
    let (s, token, file) = account_moved_on_the_device("key_back_in_flight");
    let options = SyncOptions { token: Some(token.clone()), ..SyncOptions::default() };
    // The app moves the row back while the upload of its move is on the
    // wire; the answer arrives.
    let mut racing = Interfering {
        write_after_apply: Some((s.files.path("a.db"), "UPDATE accounts SET code = 'a1' WHERE code = 'a2'")),
        ..Interfering::new(&s.db.url)
    };
    file.sync_with(&mut racing, "s", &options).unwrap();
    let report = s.sync_as(&file, &token);
    assert!(report.conflicts.is_empty() && report.rejected.is_empty(), "{report:?}");
    assert_account_moved_to(&s, &file, "a1");
}

/// A delete whose answer was lost `losses` times in a row (the upload,
/// then each retry), then the key inserted again on the device.
fn key_inserted_again_after_a_lost_delete(name: &str, losses: usize) {
    let s = Scenario::new(name, ACCOUNTS, "s");
    let token = s.register(json!({"tenant": 1}));
    let file = s.store("a.db");
    s.sync_as(&file, &token);
    local(&file, "DELETE FROM customers WHERE id = 1");
    for _ in 0..losses {
        s.sync_as_answer_lost(&file, &token);
    }
    // A round that only retries, then one with the newer change.
    let retried = s.sync_as(&file, &token);
    assert!(!retried.resynced, "a retry's answer gives the file no reason to pull its partition again: {retried:?}");
    local(&file, "INSERT INTO customers VALUES (1, 1, 'Ada again')");
    let report = s.sync_as(&file, &token);
    assert!(report.conflicts.is_empty(), "the device's own delete, then its insert: {report:?}");
    assert_eq!(server_count(&s, "SELECT count(*) FROM customers WHERE id = 1 AND name = 'Ada again'"), 1);
    assert_converged(&mut s.server(), file.connection(), "s", &json!({"tenant": 1}));
}

#[test]
fn a_key_inserted_again_after_its_lost_delete_is_inserted() {
    key_inserted_again_after_a_lost_delete("lost_delete_again", 1);
}

#[test]
fn a_key_inserted_again_after_its_delete_was_answered_twice_in_vain_is_inserted() {
    // The retry's record keeps the delete, although its row is gone then.
    key_inserted_again_after_a_lost_delete("lost_delete_twice", 2);
}

/// The server re-keys a row when its name is set to `rekey:...`, in a
/// BEFORE UPDATE trigger: the statement that set off the move names no key
/// column. `notes` has no filter, so its update trigger keeps no old rows.
const REKEYED_BY_TRIGGER: &str = r#"
CREATE TABLE items (id text PRIMARY KEY, tenant_id int NOT NULL, name text);
CREATE TABLE notes (id text PRIMARY KEY, body text);
CREATE FUNCTION rekey() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.id NOT LIKE '%-srv' AND (to_jsonb(NEW) ->> 'name' LIKE 'rekey:%' OR to_jsonb(NEW) ->> 'body' LIKE 'rekey:%') THEN
        NEW.id := NEW.id || '-srv';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER rekey BEFORE UPDATE ON items FOR EACH ROW EXECUTE FUNCTION rekey();
CREATE TRIGGER rekey BEFORE UPDATE ON notes FOR EACH ROW EXECUTE FUNCTION rekey();
INSERT INTO items VALUES ('k1', 1, 'one'), ('k2', 1, 'two');
INSERT INTO notes VALUES ('n1', 'one'), ('n2', 'two');
SELECT sync_provision('s', '{"tables": [{"name": "items", "filter": {"tenant_id": "tenant"}}, {"name": "notes"}]}');
"#;

/// The keys of a file's table, in order, joined by commas.
fn keys(file: &Store, table: &str) -> Option<String> {
    local_value(file, &format!("SELECT group_concat(id, ',') FROM (SELECT id FROM {table} ORDER BY id)"))
}

#[test]
fn a_row_a_server_trigger_re_keys_on_a_devices_edit_moves_on_every_device() {
    let s = Scenario::new("rekey_on_edit", REKEYED_BY_TRIGGER, "s");
    let token_a = s.register(json!({"tenant": 1}));
    let token_b = s.register(json!({"tenant": 1}));
    let (a, b) = (s.store("a.db"), s.store("b.db"));
    s.sync_as(&a, &token_a);
    s.sync_as(&b, &token_b);
    // Device A edits a value only; the server's trigger moves each row.
    local(&a, "UPDATE items SET name = 'rekey:z' WHERE id = 'k2'; UPDATE notes SET body = 'rekey:z' WHERE id = 'n2'");
    let report = s.sync_as(&a, &token_a);
    assert!(report.rejected.is_empty() && report.conflicts.is_empty(), "{report:?}");
    s.sync_as(&b, &token_b);
    for file in [&a, &b] {
        assert_eq!(keys(file, "items").as_deref(), Some("k1,k2-srv"), "the old key is gone from every device");
        assert_eq!(keys(file, "notes").as_deref(), Some("n1,n2-srv"), "the old key is gone from every device");
        assert_converged(&mut s.server(), file.connection(), "s", &json!({"tenant": 1}));
    }
}

#[test]
fn a_row_a_server_trigger_re_keys_on_the_servers_own_edit_moves_on_the_device() {
    let s = Scenario::new("rekey_on_server", REKEYED_BY_TRIGGER, "s");
    let token = s.register(json!({"tenant": 1}));
    let file = s.store("a.db");
    s.sync_as(&file, &token);
    s.server()
        .batch_execute("UPDATE items SET name = 'rekey:y' WHERE id = 'k1'; UPDATE notes SET body = 'rekey:y' WHERE id = 'n1'")
        .unwrap();
    s.sync_as(&file, &token);
    assert_eq!(keys(&file, "items").as_deref(), Some("k1-srv,k2"));
    assert_eq!(keys(&file, "notes").as_deref(), Some("n1-srv,n2"));
    assert_converged(&mut s.server(), file.connection(), "s", &json!({"tenant": 1}));
}

/// Helper 83: a parent's key change that applied, its children moved by
/// the server's own `ON UPDATE CASCADE` before the device's moves of them
/// came, was taken for one that did not: the grandchild under a moved
/// child was held back as a conflict ("did not apply"). Rows held to a
/// parent's change are those whose parent still holds the old key.
#[test]
fn rows_under_a_parent_whose_key_change_applied_are_not_held_back() {
    let schema = r#"
CREATE TABLE p (id int PRIMARY KEY, tenant_id int NOT NULL);
CREATE TABLE c (pid int REFERENCES p ON UPDATE CASCADE, n int, tenant_id int NOT NULL, PRIMARY KEY (pid, n));
CREATE TABLE g (id int PRIMARY KEY, tenant_id int NOT NULL, pid int, n int, v text, FOREIGN KEY (pid, n) REFERENCES c ON UPDATE CASCADE);
INSERT INTO p VALUES (8, 1); INSERT INTO c VALUES (8, 1, 1); INSERT INTO g VALUES (200, 1, 8, 1, 'g');
SELECT sync_provision('s', '{"tables": [{"name": "p", "filter": {"tenant_id": "tenant"}},
    {"name": "c", "filter": {"tenant_id": "tenant"}}, {"name": "g", "filter": {"tenant_id": "tenant"}}]}');
"#;
    let s = Scenario::new("key_move_applied_children", schema, "s");
    rusqlite::Connection::open(s.files.path("a.db"))
        .unwrap()
        .execute_batch(
            "CREATE TABLE p (id INTEGER NOT NULL PRIMARY KEY, tenant_id INTEGER NOT NULL);
             CREATE TABLE c (pid INTEGER NOT NULL REFERENCES p ON UPDATE CASCADE, n INTEGER NOT NULL, tenant_id INTEGER NOT NULL,
                             PRIMARY KEY (pid, n));
             CREATE TABLE g (id INTEGER NOT NULL PRIMARY KEY, tenant_id INTEGER NOT NULL, pid INTEGER, n INTEGER, v TEXT,
                             FOREIGN KEY (pid, n) REFERENCES c ON UPDATE CASCADE);",
        )
        .unwrap();
    let file = s.store("a.db");
    local(&file, "PRAGMA foreign_keys = ON");
    s.sync(&file, json!({"params": {"tenant": 1}}));
    local(&file, "UPDATE p SET id = 18 WHERE id = 8");
    assert_eq!(local_count(&file, "SELECT pid FROM g WHERE id = 200"), 18, "the file's keys moved the grandchild");
    let report = s.sync(&file, json!({"params": {"tenant": 1}}));
    assert!(report.conflicts.iter().all(|c| c.reason.as_deref().is_none_or(|r| !r.contains("did not apply"))), "{report:?}");
    assert_eq!(server_count(&s, "SELECT pid::int8 FROM g WHERE id = 200"), 18);
    s.sync(&file, json!({"params": {"tenant": 1}}));
    assert_converged(&mut s.server(), file.connection(), "s", &json!({"tenant": 1}));
}

/// Helper 105: a row under a parent whose key the device changed, deleted
/// in the same round. The server's cascade moves it with the parent in
/// the same upload; the delete goes on over that, as an edit does (it was
/// a conflict the server won, and the row came back).
#[test]
fn a_row_deleted_under_a_parent_whose_key_changed_is_deleted() {
    let s = Scenario::new("key_move_child_deleted", ACCOUNTS, "s");
    let token = s.register(json!({"tenant": 1}));
    let file = s.store("a.db");
    s.sync_as(&file, &token);
    local(&file, "UPDATE accounts SET code = 'a2' WHERE code = 'a1'; DELETE FROM invoices WHERE id = 1");
    let report = s.sync_as(&file, &token);
    assert_eq!((report.conflicts.len(), report.rejected.len()), (0, 0), "{report:?}");
    assert_eq!(tenant_invoices(&s), ["2:a2:20"]);
    assert_eq!(local_count(&file, "SELECT count(*) FROM invoices"), 1);
    assert_converged(&mut s.server(), file.connection(), "s", &json!({"tenant": 1}));
}

/// Helper 106: in a file without foreign keys of its own, a row's key
/// change under a parent whose key changed in the same round: the row is
/// sent under the parent's old key, goes in under the new one, and its
/// own move goes on over the server's cascade of it (it was a conflict
/// the server won, and the row's move was lost).
#[test]
fn a_rows_key_change_under_a_parent_whose_key_changed_goes_in_under_the_new_key() {
    let s = Scenario::new("key_move_child_move", ACCOUNTS, "s");
    let token = s.register(json!({"tenant": 1}));
    let file = s.store("a.db");
    s.sync_as(&file, &token);
    local(&file, "UPDATE accounts SET code = 'a2' WHERE code = 'a1'; UPDATE invoices SET id = 10 WHERE id = 1");
    let report = s.sync_as(&file, &token);
    assert_eq!((report.conflicts.len(), report.rejected.len()), (0, 0), "{report:?}");
    assert_eq!(tenant_invoices(&s), ["2:a2:20", "10:a2:10"]);
    assert_converged(&mut s.server(), file.connection(), "s", &json!({"tenant": 1}));
}
