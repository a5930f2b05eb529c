//! A pull writes its rows a group at a time (`local/src/row_writer.rs`):
//! rows the file refuses inside a group wait aside alone, and every
//! grouped row keeps the server version it came with, so later edits meet
//! the server's changes exactly as rows written one by one did.

use serde_json::{json, Value};
use tandem_tests::local::{assert_converged, local, local_count, Scenario};

const SCHEMA: &str = r#"
CREATE TABLE customers (id bigint PRIMARY KEY, tenant_id int NOT NULL, name text NOT NULL);
INSERT INTO customers VALUES (1, 1, 'Ada'), (2, 2, 'Linus');
SELECT sync_provision('crm', '{"tables": [{"name": "customers", "filter": {"tenant_id": "tenant"}}]}');
"#;

fn tenant(n: i64) -> Value {
    json!({"params": {"tenant": n}})
}

/// `rows` new customers of tenant 1 on the server, ids 1001.., named
/// `c<id>`.
fn add_customers(s: &Scenario, rows: i64) {
    s.server()
        .execute("INSERT INTO customers SELECT 1000 + g, 1, 'c' || (1000 + g) FROM generate_series(1, $1::int8) g", &[&rows])
        .unwrap();
}

fn not_stored_keys(file: &tandem_local::Store) -> Vec<String> {
    let mut found = file.connection().prepare("SELECT key FROM tandem_rejected WHERE kind = 'not_stored' ORDER BY key").unwrap();
    found.query_map([], |r| r.get(0)).unwrap().collect::<Result<_, _>>().unwrap()
}

/// The file's own unique index refuses rows in the middle of a pull of
/// 250 rows (groups of 100, then a tail) and of 1,200 (the size from which
/// sync drops the table's triggers for the batch): only those rows wait
/// aside; every other row of their groups is stored.
#[test]
fn rows_the_files_index_refuses_inside_a_group_wait_aside_alone() {
    for rows in [250, 1200] {
        let s = Scenario::new(&format!("grouped_refused_{rows}"), SCHEMA, "crm");
        let file = s.store("a.db");
        s.sync(&file, tenant(1));
        local(&file, "CREATE UNIQUE INDEX customers_name ON customers (name)");
        add_customers(&s, rows);
        // Two rows of the first group and one of the second take a name
        // the file already holds.
        s.server().batch_execute("UPDATE customers SET name = 'Ada' WHERE id IN (1010, 1050, 1150)").unwrap();
        let report = s.sync(&file, json!({}));
        assert_eq!(report.not_stored, 3, "{report:?}");
        assert_eq!(not_stored_keys(&file), vec!["[1010]", "[1050]", "[1150]"]);
        assert_eq!(local_count(&file, "SELECT count(*) FROM customers"), 1 + rows - 3);
        assert_eq!(local_count(&file, "SELECT count(*) FROM customers WHERE id IN (1009, 1011, 1049, 1051, 1149, 1151)"), 6);
        local(&file, "DROP INDEX customers_name");
        s.sync(&file, json!({}));
        assert!(not_stored_keys(&file).is_empty());
        assert_converged(&mut s.server(), file.connection(), "crm", &json!({"tenant": 1}));
    }
}

/// A trigger of the file's own ignores a row of a group (`RAISE(IGNORE)`):
/// the group is written again row by row, that row waits aside, and no
/// base version is left without its row (which a later round would read
/// as the file's delete of it).
#[test]
fn a_row_the_files_trigger_ignores_inside_a_group_waits_aside_and_is_never_deleted() {
    let s = Scenario::new("grouped_ignored", SCHEMA, "crm");
    let file = s.store("a.db");
    s.sync(&file, tenant(1));
    local(&file, "CREATE TRIGGER no_c1042 BEFORE INSERT ON customers WHEN NEW.id = 1042 BEGIN SELECT RAISE(IGNORE); END");
    add_customers(&s, 300);
    let report = s.sync(&file, json!({}));
    assert_eq!(report.not_stored, 1, "{report:?}");
    assert_eq!(not_stored_keys(&file), vec!["[1042]"]);
    assert_eq!(local_count(&file, "SELECT count(*) FROM customers"), 300);
    s.sync(&file, json!({}));
    let mut server = s.server();
    let kept: i64 = server.query_one("SELECT count(*) FROM customers WHERE id = 1042", &[]).unwrap().get(0);
    assert_eq!(kept, 1, "the ignored row was deleted on the server");
    local(&file, "DROP TRIGGER no_c1042");
    s.sync(&file, json!({}));
    assert_converged(&mut server, file.connection(), "crm", &json!({"tenant": 1}));
}

/// Every grouped row keeps the version it came with: the file's edit of
/// all of them goes up as plain updates, except the rows the server
/// changed since, which meet the policy.
#[test]
fn grouped_rows_keep_their_versions_so_edits_meet_only_the_servers_later_changes() {
    let s = Scenario::new("grouped_versions", SCHEMA, "crm");
    let file = s.store("a.db");
    s.sync(&file, tenant(1));
    add_customers(&s, 1200);
    let pulled = s.sync(&file, json!({}));
    assert_eq!(pulled.pulled, 1200, "{pulled:?}");
    let mut server = s.server();
    server.batch_execute("UPDATE customers SET name = 'server ' || id WHERE id IN (1001, 1100, 1199)").unwrap();
    local(&file, "UPDATE customers SET name = 'file ' || id WHERE id > 1000");
    let report = s.sync(&file, json!({}));
    assert_eq!(report.pushed, 1197, "{report:?}");
    let mut keys: Vec<String> = report.conflicts.iter().map(|c| serde_json::to_string(&c.key).unwrap()).collect();
    keys.sort();
    assert_eq!(keys, vec!["[1001]", "[1100]", "[1199]"], "{report:?}");
    let logged: i64 = server.query_one("SELECT count(*) FROM tandem.conflicts", &[]).unwrap().get(0);
    assert_eq!(logged, 3);
    assert_converged(&mut server, file.connection(), "crm", &json!({"tenant": 1}));
}

/// A trigger of the file's own rolls back sync's whole transaction
/// (`RAISE(ROLLBACK)`) inside a group: the round stops with what to do, as
/// for a row written alone, and nothing of the batch is stored.
#[test]
fn a_trigger_that_rolls_back_syncs_transaction_inside_a_group_stops_the_round_with_nothing_stored() {
    let s = Scenario::new("grouped_rollback", SCHEMA, "crm");
    let file = s.store("a.db");
    s.sync(&file, tenant(1));
    let watermark = local_count(&file, "SELECT count(*) FROM tandem_scopes WHERE watermark IS NOT NULL");
    assert_eq!(watermark, 1);
    local(&file, "CREATE TRIGGER no_c1042 BEFORE INSERT ON customers WHEN NEW.id = 1042 BEGIN SELECT RAISE(ROLLBACK, 'no 1042'); END");
    add_customers(&s, 300);
    let error = file.sync(&s.db.url, "crm", &tandem_local::SyncOptions::default()).unwrap_err().to_string();
    assert!(error.contains("RAISE(ABORT)"), "{error}");
    assert_eq!(local_count(&file, "SELECT count(*) FROM customers"), 1, "part of the batch was stored");
    local(&file, "DROP TRIGGER no_c1042");
    s.sync(&file, json!({}));
    assert_converged(&mut s.server(), file.connection(), "crm", &json!({"tenant": 1}));
}

/// Rows of the file's table with no row beside their base version: a
/// later round reads each as the file's delete of it.
fn bases_without_rows(file: &tandem_local::Store) -> i64 {
    let id = local_count(file, "SELECT id FROM tandem_tables WHERE scope = 'crm'");
    local_count(file, &format!("SELECT count(*) FROM tandem_base_{id} b WHERE NOT EXISTS (SELECT 1 FROM customers c WHERE c.id = b.id)"))
}

/// A file that held `customers` before it synced, made by `sql`.
fn file_with(s: &Scenario, sql: &str) -> tandem_local::Store {
    let file = s.store("a.db");
    local(&file, sql);
    file
}

/// Helper 70 (HIGH): a trigger of the file's own that removes a row (a
/// delete, a key change) while sync writes a later row of the same group
/// left the removed row's base version written after it, with no row: a
/// later round (here after a new unique index) sent it as the file's
/// delete, and the server lost the row. The row is the file's own change
/// and stays on the device, as when it came in an earlier group.
#[test]
fn a_row_the_files_trigger_removes_within_a_group_never_goes_up_as_a_delete() {
    for (rows, trigger) in [
        (250, "CREATE TRIGGER drop_149 AFTER INSERT ON customers WHEN NEW.id = 1150 BEGIN DELETE FROM customers WHERE id = 1149; END"),
        (1500, "CREATE TRIGGER drop_149 AFTER INSERT ON customers WHEN NEW.id = 1150 BEGIN DELETE FROM customers WHERE id = 1149; END"),
        (250, "CREATE TRIGGER move_149 AFTER INSERT ON customers WHEN NEW.id = 1150 BEGIN UPDATE customers SET id = 9149 WHERE id = 1149; END"),
    ] {
        let s = Scenario::new(&format!("grouped_removed_{rows}"), SCHEMA, "crm");
        let file = file_with(&s, &format!("CREATE TABLE customers (id INTEGER PRIMARY KEY, tenant_id INTEGER NOT NULL, name TEXT NOT NULL); {trigger}"));
        add_customers(&s, rows);
        s.sync(&file, tenant(1));
        assert_eq!(local_count(&file, "SELECT count(*) FROM customers WHERE id = 1149"), 0);
        assert_eq!(bases_without_rows(&file), 0, "{trigger}");
        local(&file, "CREATE UNIQUE INDEX customers_name ON customers (name)");
        s.sync(&file, json!({}));
        let kept: i64 = s.server().query_one("SELECT count(*) FROM customers WHERE id = 1149", &[]).unwrap().get(0);
        assert_eq!(kept, 1, "the server lost the row the file's trigger removed: {trigger}");
    }
}

/// Helper 70 (HIGH): a column the file declares `UNIQUE ON CONFLICT
/// REPLACE` made sync's write of a server row silently remove another row
/// of the same value, its base version left behind: a later round deleted
/// that row on the server. Sync's writes now never replace: the server row
/// waits aside as any the file refuses, and the file's row stays.
#[test]
fn a_replace_constraint_of_the_file_never_removes_a_row_for_a_server_row() {
    for rows in [5, 250] {
        let s = Scenario::new(&format!("grouped_replace_{rows}"), SCHEMA, "crm");
        let file = file_with(
            &s,
            "CREATE TABLE customers (id INTEGER PRIMARY KEY, tenant_id INTEGER NOT NULL, name TEXT NOT NULL UNIQUE ON CONFLICT REPLACE)",
        );
        add_customers(&s, rows);
        s.server().batch_execute("UPDATE customers SET name = 'Ada' WHERE id = 1003").unwrap();
        let report = s.sync(&file, tenant(1));
        assert_eq!(report.not_stored, 1, "{report:?}");
        assert_eq!(not_stored_keys(&file), vec!["[1003]"]);
        assert_eq!(local_count(&file, "SELECT count(*) FROM customers WHERE id = 1 AND name = 'Ada'"), 1);
        assert_eq!(bases_without_rows(&file), 0);
        local(&file, "CREATE UNIQUE INDEX customers_tenant ON customers (id, tenant_id)");
        s.sync(&file, json!({}));
        let server: i64 = s.server().query_one("SELECT count(*) FROM customers WHERE tenant_id = 1", &[]).unwrap().get(0);
        assert_eq!(server, 1 + rows, "the server lost rows");
    }
}

/// The loadable extension runs in whatever SQLite loads it, which may bind
/// fewer parameters a statement (999 before SQLite 3.32): a table too wide
/// for a group there is written row by row, and the pull goes through.
#[test]
fn a_sqlite_that_binds_few_parameters_still_takes_a_large_pull() {
    let s = Scenario::new("grouped_narrow", SCHEMA, "crm");
    let file = s.store("a.db");
    s.sync(&file, tenant(1));
    file.connection().set_limit(rusqlite::limits::Limit::SQLITE_LIMIT_VARIABLE_NUMBER, 250).unwrap();
    add_customers(&s, 250);
    let report = s.sync(&file, json!({}));
    assert_eq!((report.pulled, report.not_stored), (250, 0), "{report:?}");
    assert_converged(&mut s.server(), file.connection(), "crm", &json!({"tenant": 1}));
}
