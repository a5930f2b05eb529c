//! A key the server knows, left by one key change and taken by another in
//! the same round (4 to 104, then 3 to 4), in a file without foreign keys
//! of its own: each row moves on the server, so its `ON UPDATE CASCADE`
//! takes each customer's orders along. Sent as the log's latest entries
//! alone, 3's move went up as a delete, and the server's `ON DELETE
//! CASCADE` removed 3's orders on both sides (helpers 102 and 104).

use serde_json::json;
use serde_json::Value;
use tandem_local::Store;
use tandem_tests::local::{assert_converged, local, local_count, Scenario};

const SHOP: &str = r#"
CREATE TABLE customers (id bigint PRIMARY KEY, tenant_id int NOT NULL, name text);
CREATE TABLE orders (id bigint PRIMARY KEY, tenant_id int NOT NULL,
                     customer_id bigint REFERENCES customers ON UPDATE CASCADE ON DELETE CASCADE, note text);
INSERT INTO customers VALUES (3, 1, 'three'), (4, 1, 'four'), (5, 1, 'five');
INSERT INTO orders VALUES (7, 1, 3, 'of three'), (10, 1, 4, 'of four'), (12, 1, 5, 'of five');
SELECT sync_provision('s', '{"tables": [
    {"name": "customers", "filter": {"tenant_id": "tenant"}},
    {"name": "orders", "filter": {"tenant_id": "tenant"}}]}');
"#;

/// Each customer on the server with its orders' notes, as `id:name:notes`.
fn customers_with_orders(s: &Scenario) -> Vec<String> {
    s.server()
        .query(
            "SELECT c.id || ':' || c.name || ':' || coalesce(string_agg(o.note, ',' ORDER BY o.id), '') \
             FROM customers c LEFT JOIN orders o ON o.customer_id = c.id GROUP BY c.id, c.name ORDER BY c.id",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// How the test's file holds the shop's tables before its first sync.
#[derive(Clone, Copy)]
enum OwnKeys {
    /// Made by Tandem: no foreign keys of its own.
    None,
    /// Made by the program, with `ON UPDATE CASCADE` keys SQLite carries
    /// out (`PRAGMA foreign_keys = ON`) or only declares.
    Declared { enforced: bool },
}

/// A scenario on [`SHOP`] and its file, synced once with `options`.
fn synced(label: &str, keys: OwnKeys, options: &Value) -> (Scenario, Store) {
    let s = Scenario::new(label, SHOP, "s");
    if let OwnKeys::Declared { .. } = keys {
        rusqlite::Connection::open(s.files.path("a.db"))
            .unwrap()
            .execute_batch(
                "CREATE TABLE customers (id INTEGER PRIMARY KEY, tenant_id INTEGER NOT NULL, name TEXT);
                 CREATE TABLE orders (id INTEGER PRIMARY KEY, tenant_id INTEGER NOT NULL,
                                      customer_id INTEGER REFERENCES customers ON UPDATE CASCADE ON DELETE CASCADE, note TEXT);",
            )
            .unwrap();
    }
    let file = s.store("a.db");
    if let OwnKeys::Declared { enforced } = keys {
        local(&file, &format!("PRAGMA foreign_keys = {}", if enforced { "ON" } else { "OFF" }));
    }
    s.sync(&file, options.clone());
    (s, file)
}

fn tenant() -> Value {
    json!({"params": {"tenant": 1}})
}

fn converged(s: &Scenario, file: &Store) {
    assert_converged(&mut s.server(), file.connection(), "s", &json!({"tenant": 1}));
}

/// A chain of three key changes, each taking the key the one before left.
const CHAIN: &str = "UPDATE customers SET id = 105 WHERE id = 5; UPDATE customers SET id = 5 WHERE id = 4; \
                     UPDATE customers SET id = 4 WHERE id = 3";
/// [`CHAIN`] done on the server, each customer with its orders.
const CHAINED: [&str; 3] = ["4:three:of three", "5:four:of four", "105:five:of five"];

/// Syncs, asserting nothing was a conflict or refused, then again,
/// asserting the second round has nothing left to send.
fn sync_clean(s: &Scenario, file: &Store, options: Value) {
    let report = s.sync(file, options.clone());
    assert_eq!((report.conflicts.len(), report.rejected.len()), (0, 0), "{report:?}");
    let again = s.sync(file, options);
    assert_eq!((again.pushed, again.conflicts.len(), again.rejected.len()), (0, 0, 0), "nothing left to send: {again:?}");
    assert_eq!(s.server().query_one("SELECT count(*) FROM tandem.conflicts", &[]).unwrap().get::<_, i64>(0), 0);
}

#[test]
fn a_key_vacated_and_taken_in_one_round_moves_both_rows() {
    let (s, file) = synced("key_vacated", OwnKeys::None, &tenant());
    local(&file, "UPDATE customers SET id = 104 WHERE id = 4; UPDATE customers SET id = 4 WHERE id = 3");
    sync_clean(&s, &file, tenant());
    assert_eq!(customers_with_orders(&s), ["4:three:of three", "5:five:of five", "104:four:of four"], "each customer keeps its orders");
    assert_eq!(local_count(&file, "SELECT customer_id FROM orders WHERE id = 10"), 104, "the cascade reached the device");
    converged(&s, &file);
}

/// Helper 104: a longer chain, each key taken by the next row, in
/// batches of every size.
#[test]
fn a_chain_of_keys_each_taken_by_the_next_row_moves_every_row() {
    for max_rows in [1, 2, 100] {
        let options = json!({"params": {"tenant": 1}, "max_rows": max_rows});
        let (s, file) = synced(&format!("key_chain_{max_rows}"), OwnKeys::None, &options);
        local(&file, CHAIN);
        sync_clean(&s, &file, options);
        assert_eq!(customers_with_orders(&s), CHAINED, "each customer keeps its orders (max_rows {max_rows})");
        converged(&s, &file);
    }
}

/// Helper 104: the rows involved edited again after their key changes
/// still go up, with every edit, instead of a round that sends nothing and
/// says nothing.
#[test]
fn keys_vacated_and_taken_then_edited_go_up_with_their_edits() {
    for max_rows in [1, 100] {
        let options = json!({"params": {"tenant": 1}, "max_rows": max_rows});
        let (s, file) = synced(&format!("key_vacated_edited_{max_rows}"), OwnKeys::None, &options);
        local(
            &file,
            "UPDATE customers SET id = 104 WHERE id = 4; UPDATE customers SET id = 4 WHERE id = 3; \
             UPDATE customers SET name = 'four, moved' WHERE id = 104; UPDATE customers SET name = 'three, moved' WHERE id = 4;",
        );
        sync_clean(&s, &file, options);
        assert_eq!(
            customers_with_orders(&s),
            ["4:three, moved:of three", "5:five:of five", "104:four, moved:of four"],
            "max_rows {max_rows}"
        );
        converged(&s, &file);
    }
}

/// Where the file's own foreign key moved the orders along (`ON UPDATE
/// CASCADE`, enforced), they go up as changes of their own, as before.
#[test]
fn a_file_whose_own_keys_moved_the_orders_sends_them_along() {
    let (s, file) = synced("key_vacated_own_cascade", OwnKeys::Declared { enforced: true }, &tenant());
    local(
        &file,
        "UPDATE customers SET id = 104 WHERE id = 4; UPDATE customers SET id = 4 WHERE id = 3; \
         UPDATE orders SET note = 'of four, edited' WHERE id = 10",
    );
    sync_clean(&s, &file, tenant());
    assert_eq!(customers_with_orders(&s), ["4:three:of three", "5:five:of five", "104:four:of four, edited"]);
    converged(&s, &file);
}

/// The server changed the key's row meanwhile: the move that vacates it
/// loses its conflict, and the move onto it is refused as a move (the key
/// is held on the server), not sent as a delete of its old key. Nothing
/// moves, no order goes, and the file comes back to the server's rows,
/// each conflict logged with the file's row.
#[test]
fn a_vacating_move_that_loses_its_conflict_deletes_nothing() {
    let (s, file) = synced("key_vacated_conflict", OwnKeys::None, &tenant());
    s.server().batch_execute("UPDATE customers SET name = 'four, on the server' WHERE id = 4").unwrap();
    local(&file, "UPDATE customers SET id = 104 WHERE id = 4; UPDATE customers SET id = 4 WHERE id = 3");
    let report = s.sync(&file, tenant());
    assert!(!report.conflicts.is_empty(), "{report:?}");
    assert_eq!(customers_with_orders(&s), ["3:three:of three", "4:four, on the server:of four", "5:five:of five"]);
    let logged: Vec<String> = file
        .connection()
        .prepare("SELECT client_row FROM tandem_conflicts ORDER BY rowid")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(logged.iter().any(|row| row.contains("\"four\"")) && logged.iter().any(|row| row.contains("\"three\"")), "{logged:?}");
    let again = s.sync(&file, tenant());
    assert_eq!((again.pushed, again.conflicts.len(), again.rejected.len()), (0, 0, 0), "nothing left to send: {again:?}");
    converged(&s, &file);
}

/// The answer to the move sent ahead is lost: the next round sends it
/// again as it was, and the server answers what its first attempt did.
#[test]
fn a_vacating_move_whose_answer_was_lost_is_answered_on_the_next_round() {
    for max_rows in [1, 100] {
        let options = json!({"params": {"tenant": 1}, "max_rows": max_rows});
        let (s, file) = synced(&format!("key_vacated_lost_{max_rows}"), OwnKeys::None, &options);
        local(&file, CHAIN);
        s.sync_answer_lost(&file, options.clone());
        sync_clean(&s, &file, options);
        assert_eq!(customers_with_orders(&s), CHAINED, "max_rows {max_rows}");
        converged(&s, &file);
    }
}

/// Helper 105: after the chain, the row that took the key is deleted.
/// The row that left it moves on the server, its orders with it, and
/// only the deleted row's orders go (they went as 4's, the row that left).
#[test]
fn a_key_vacated_taken_and_deleted_again_deletes_only_the_row_that_took_it() {
    let (s, file) = synced("key_vacated_deleted", OwnKeys::None, &tenant());
    local(
        &file,
        "UPDATE customers SET id = 104 WHERE id = 4; UPDATE customers SET id = 4 WHERE id = 3; DELETE FROM customers WHERE id = 4",
    );
    sync_clean(&s, &file, tenant());
    assert_eq!(customers_with_orders(&s), ["5:five:of five", "104:four:of four"]);
    converged(&s, &file);
}

/// Helper 105: the row that left the key is deleted, after its move or
/// instead of one: it goes, with its orders, and the row that took its key
/// moves there with its own (they went as 3's, the row that did).
#[test]
fn a_key_left_by_a_deleted_row_and_taken_deletes_only_the_row_that_left() {
    for leaving in [
        "UPDATE customers SET id = 104 WHERE id = 4; UPDATE customers SET id = 4 WHERE id = 3; DELETE FROM customers WHERE id = 104",
        "DELETE FROM customers WHERE id = 4; UPDATE customers SET id = 4 WHERE id = 3",
    ] {
        let (s, file) = synced("key_left_deleted", OwnKeys::None, &tenant());
        local(&file, leaving);
        sync_clean(&s, &file, tenant());
        assert_eq!(customers_with_orders(&s), ["4:three:of three", "5:five:of five"], "{leaving}");
        converged(&s, &file);
    }
}

/// A file that declares its foreign keys but never has SQLite carry them
/// out (`PRAGMA foreign_keys` is off by default): they moved nothing, and
/// the rows move on the server as in a file without them.
#[test]
fn a_file_whose_own_keys_are_not_enforced_moves_the_rows_on_the_server() {
    let (s, file) = synced("key_vacated_unenforced", OwnKeys::Declared { enforced: false }, &tenant());
    local(&file, "UPDATE customers SET id = 104 WHERE id = 4; UPDATE customers SET id = 4 WHERE id = 3");
    sync_clean(&s, &file, tenant());
    assert_eq!(customers_with_orders(&s), ["4:three:of three", "5:five:of five", "104:four:of four"]);
    converged(&s, &file);
}

/// Helper 104: rows swap keys through a temporary one (3 to 1000, 4 to
/// 3, 1000 to 4), or pass them round a cycle. The first goes to the
/// temporary key on the server too, so each moves, and each customer keeps
/// its orders (before, the keys' values were swapped and the orders stayed
/// under the numbers, each now another customer's).
#[test]
fn rows_swapping_keys_through_a_temporary_one_keep_their_rows() {
    let swap = "UPDATE customers SET id = 1000 WHERE id = 3; UPDATE customers SET id = 3 WHERE id = 4; \
                UPDATE customers SET id = 4 WHERE id = 1000";
    let cycle = "UPDATE customers SET id = 1000 WHERE id = 3; UPDATE customers SET id = 3 WHERE id = 4; \
                 UPDATE customers SET id = 4 WHERE id = 5; UPDATE customers SET id = 5 WHERE id = 1000";
    let cases = [
        (swap, ["3:four:of four", "4:three:of three", "5:five:of five"]),
        (cycle, ["3:four:of four", "4:five:of five", "5:three:of three"]),
    ];
    for (round, expected) in cases {
        for max_rows in [1, 100] {
            let options = json!({"params": {"tenant": 1}, "max_rows": max_rows});
            let (s, file) = synced(&format!("key_swap_{max_rows}"), OwnKeys::None, &options);
            local(&file, round);
            sync_clean(&s, &file, options);
            assert_eq!(customers_with_orders(&s), expected, "{round} (max_rows {max_rows})");
            converged(&s, &file);
        }
    }
}

/// Helper 106: the key change of an order of the row that took the key
/// goes with that row's move, in one batch.
#[test]
fn a_key_change_of_a_row_under_the_row_that_took_the_key_goes_with_it() {
    let (s, file) = synced("key_vacated_child_move", OwnKeys::None, &tenant());
    local(
        &file,
        "UPDATE customers SET id = 104 WHERE id = 4; UPDATE customers SET id = 4 WHERE id = 3; UPDATE orders SET id = 70 WHERE id = 7",
    );
    sync_clean(&s, &file, tenant());
    assert_eq!(customers_with_orders(&s), ["4:three:of three", "5:five:of five", "104:four:of four"]);
    assert_eq!(s.server().query_one("SELECT count(*) FROM orders WHERE id = 70", &[]).unwrap().get::<_, i64>(0), 1);
    converged(&s, &file);
}

/// Helper 106: a server trigger stores the move sent ahead at a key of its
/// own (104 becomes 105). The file takes the row there, and nothing goes
/// up again at 104 (it went up again as an insert, a second row).
#[test]
fn a_move_sent_ahead_that_a_server_trigger_stores_elsewhere_is_taken_there() {
    let (s, file) = synced("key_vacated_trigger", OwnKeys::None, &tenant());
    s.server()
        .batch_execute(
            "CREATE FUNCTION bump() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
               IF NEW.id >= 100 AND OLD.id <> NEW.id THEN NEW.id := NEW.id + 1; END IF; RETURN NEW; END $$; \
             CREATE TRIGGER bump BEFORE UPDATE ON customers FOR EACH ROW EXECUTE FUNCTION bump();",
        )
        .unwrap();
    local(&file, "UPDATE customers SET id = 104 WHERE id = 4; UPDATE customers SET id = 4 WHERE id = 3");
    sync_clean(&s, &file, tenant());
    assert_eq!(customers_with_orders(&s), ["4:three:of three", "5:five:of five", "105:four:of four"]);
    converged(&s, &file);
}

/// Two rows moved onto one key in turn, the first deleted there in
/// between (3 to 100, 100 deleted, 5 to 100): the latest entries cannot
/// tell them apart, and both went as deletes, the server's cascade taking
/// 5's orders too. The log's key changes in order tell which row is there.
#[test]
fn of_two_rows_moved_onto_one_key_the_one_there_now_moves() {
    let (s, file) = synced("key_taken_twice", OwnKeys::None, &tenant());
    local(
        &file,
        "UPDATE customers SET id = 100 WHERE id = 3; DELETE FROM customers WHERE id = 100; UPDATE customers SET id = 100 WHERE id = 5",
    );
    sync_clean(&s, &file, tenant());
    assert_eq!(customers_with_orders(&s), ["4:four:of four", "100:five:of five"]);
    converged(&s, &file);
}

/// The fault suite: a row moved onto a key the server knows and its own
/// row had left, was deleted there, and another row's key change took the
/// key again (4 to 104, 3 to 4, 4 deleted, 5 to 4). 3's row went up as a
/// move onto the row at 4 now, 5's; it goes as the delete it was, also
/// where its own key is taken too (a new row moved to 3), and it goes
/// ahead.
#[test]
fn a_row_that_left_a_key_and_was_deleted_where_it_went_goes_as_a_delete() {
    let chain = "UPDATE customers SET id = 104 WHERE id = 4; UPDATE customers SET id = 4 WHERE id = 3; \
                 DELETE FROM customers WHERE id = 4; UPDATE customers SET id = 4 WHERE id = 5";
    let taken_too = format!("{chain}; INSERT INTO customers VALUES (200, 1, 'new'); UPDATE customers SET id = 3 WHERE id = 200");
    let cases = [
        (chain.to_string(), vec!["4:five:of five", "104:four:of four"]),
        (taken_too, vec!["3:new:", "4:five:of five", "104:four:of four"]),
    ];
    for (round, expected) in cases {
        let (s, file) = synced("key_vacated_gone", OwnKeys::None, &tenant());
        local(&file, &round);
        sync_clean(&s, &file, tenant());
        assert_eq!(customers_with_orders(&s), expected, "{round}");
        converged(&s, &file);
    }
}
