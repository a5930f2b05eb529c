//! Partitioned tables as PostgreSQL runs them: updates that move a row to
//! another partition, writes made to a partition directly, partitions that
//! come and go after provisioning, and foreign keys declared on partitions.

use serde_json::json;
use tandem_tests::describe;
use tandem_tests::local::{assert_converged, local, local_count, local_value, Scenario};

const PAYMENTS: &str = r#"
CREATE TABLE payments (
    id int,
    tenant_id int NOT NULL,
    paid date NOT NULL,
    amount numeric,
    PRIMARY KEY (id, paid)
) PARTITION BY RANGE (paid);
CREATE TABLE payments_2024 PARTITION OF payments FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE payments_2025 PARTITION OF payments FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
INSERT INTO payments VALUES (1, 1, '2024-03-01', 10), (2, 1, '2025-03-01', 20), (3, 2, '2024-05-01', 30);
SELECT sync_provision('s', '{"tables": [{"name": "payments", "filter": {"tenant_id": "tenant"}}]}');
"#;

fn ids(file: &tandem_local::Store) -> String {
    local_value(file, "SELECT group_concat(id || '@' || paid, ' ') FROM (SELECT id, paid FROM payments ORDER BY id, paid)")
        .unwrap_or_default()
}

#[test]
fn an_update_that_moves_a_row_to_another_partition_leaves_one_row_on_devices() {
    let s = Scenario::new("partition_move", PAYMENTS, "s");
    let token = s.register(json!({"tenant": 1}));
    let file = s.store("a.db");
    s.sync_as(&file, &token);
    assert_eq!(ids(&file), "1@2024-03-01 2@2025-03-01");
    // Through the parent: PostgreSQL deletes from one partition and inserts
    // into the other, with no row-level update trigger.
    s.server().batch_execute("UPDATE payments SET paid = '2025-06-01' WHERE id = 1").unwrap();
    s.sync_as(&file, &token);
    assert_eq!(ids(&file), "1@2025-06-01 2@2025-03-01");
    // A key change within one partition, made on the partition itself.
    s.server().batch_execute("UPDATE payments_2025 SET paid = '2025-07-01' WHERE id = 2").unwrap();
    s.sync_as(&file, &token);
    assert_eq!(ids(&file), "1@2025-06-01 2@2025-07-01");
    assert_converged(&mut s.server(), file.connection(), "s", &json!({"tenant": 1}));
    // A device's own move reaches the server as one row too.
    local(&file, "UPDATE payments SET paid = '2024-12-01' WHERE id = 1");
    let report = s.sync_as(&file, &token);
    assert!(report.rejected.is_empty() && report.conflicts.is_empty(), "{report:?}");
    let on_server: i64 = s.server().query_one("SELECT count(*) FROM payments WHERE id = 1", &[]).unwrap().get(0);
    assert_eq!(on_server, 1);
    assert_converged(&mut s.server(), file.connection(), "s", &json!({"tenant": 1}));
}

#[test]
fn writes_made_to_a_partition_directly_reach_devices() {
    let s = Scenario::new("partition_direct", PAYMENTS, "s");
    let token = s.register(json!({"tenant": 1}));
    let file = s.store("a.db");
    s.sync_as(&file, &token);
    s.server()
        .batch_execute(
            "INSERT INTO payments_2025 VALUES (4, 1, '2025-04-01', 40);
             UPDATE payments_2024 SET amount = 11 WHERE id = 1;
             DELETE FROM payments_2025 WHERE id = 2;
             COPY payments_2024 FROM PROGRAM 'echo 5,1,2024-08-01,50' WITH (FORMAT csv);",
        )
        .unwrap();
    s.sync_as(&file, &token);
    assert_eq!(ids(&file), "1@2024-03-01 4@2025-04-01 5@2024-08-01");
    assert_eq!(local_value(&file, "SELECT amount FROM payments WHERE id = 1").as_deref(), Some("11"));
    // Truncating a partition deletes its rows, and only its rows.
    s.server().batch_execute("TRUNCATE payments_2024").unwrap();
    s.sync_as(&file, &token);
    assert_eq!(ids(&file), "4@2025-04-01");
    assert_converged(&mut s.server(), file.connection(), "s", &json!({"tenant": 1}));
    // Truncating the parent deletes every partition's rows, once.
    s.server().batch_execute("INSERT INTO payments VALUES (6, 1, '2024-02-01', 60); TRUNCATE payments").unwrap();
    s.sync_as(&file, &token);
    assert_eq!(local_count(&file, "SELECT count(*) FROM payments"), 0);
    let exits: i64 = s.server().query_one("SELECT count(*) FROM tandem.exit_1 WHERE id = 4", &[]).unwrap().get(0);
    assert_eq!(exits, 1, "the parent's truncate and the partition's log the row once");
}

#[test]
fn partitions_created_attached_detached_and_dropped_later_are_followed() {
    let s = Scenario::new("partition_later", PAYMENTS, "s");
    let token = s.register(json!({"tenant": 1}));
    let other = s.register(json!({"tenant": 2}));
    let file = s.store("a.db");
    let other_file = s.store("b.db");
    s.sync_as(&file, &token);
    s.sync_as(&other_file, &other);
    let mut server = s.server();
    // Created after provisioning, written to directly.
    server
        .batch_execute(
            "CREATE TABLE payments_2026 PARTITION OF payments FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
             INSERT INTO payments_2026 VALUES (6, 1, '2026-02-01', 60);",
        )
        .unwrap();
    // A table holding rows, attached: its rows are new to devices.
    server
        .batch_execute(
            "CREATE TABLE loose (id int, tenant_id int NOT NULL, paid date NOT NULL, amount numeric, PRIMARY KEY (id, paid));
             INSERT INTO loose VALUES (7, 1, '2027-02-01', 70), (8, 2, '2027-03-01', 80);
             ALTER TABLE payments ATTACH PARTITION loose FOR VALUES FROM ('2027-01-01') TO ('2028-01-01');
             UPDATE loose SET amount = 71 WHERE id = 7;",
        )
        .unwrap();
    // A sub-partitioned partition, its leaf created on its own.
    server
        .batch_execute(
            "CREATE TABLE payments_2028 PARTITION OF payments FOR VALUES FROM ('2028-01-01') TO ('2029-01-01') PARTITION BY RANGE (paid);
             CREATE TABLE payments_2028_h1 PARTITION OF payments_2028 FOR VALUES FROM ('2028-01-01') TO ('2028-07-01');
             INSERT INTO payments_2028_h1 VALUES (9, 1, '2028-02-01', 90);",
        )
        .unwrap();
    s.sync_as(&file, &token);
    assert_eq!(ids(&file), "1@2024-03-01 2@2025-03-01 6@2026-02-01 7@2027-02-01 9@2028-02-01");
    assert_eq!(local_value(&file, "SELECT amount FROM payments WHERE id = 7").as_deref(), Some("71"));
    s.sync_as(&other_file, &other);
    assert_eq!(ids(&other_file), "3@2024-05-01 8@2027-03-01");
    // Detached: its rows leave the table, and the devices that held them.
    server.batch_execute("ALTER TABLE payments DETACH PARTITION payments_2024").unwrap();
    server.batch_execute("INSERT INTO payments_2024 VALUES (10, 1, '2024-09-01', 100)").unwrap();
    s.sync_as(&file, &token);
    s.sync_as(&other_file, &other);
    assert_eq!(ids(&file), "2@2025-03-01 6@2026-02-01 7@2027-02-01 9@2028-02-01");
    assert_eq!(ids(&other_file), "8@2027-03-01");
    // Dropping a partition whose rows devices hold is refused: nothing
    // would tell them. Emptied (or detached) first, it drops.
    let refused = server.batch_execute("DROP TABLE payments_2025").unwrap_err();
    assert!(describe(&refused).starts_with("2BP01") && describe(&refused).contains("DETACH PARTITION"), "{}", describe(&refused));
    server.batch_execute("DELETE FROM payments_2025; DROP TABLE payments_2025; DROP TABLE payments_2024;").unwrap();
    s.sync_as(&file, &token);
    assert_eq!(ids(&file), "6@2026-02-01 7@2027-02-01 9@2028-02-01");
    assert_converged(&mut server, file.connection(), "s", &json!({"tenant": 1}));
    assert_converged(&mut server, other_file.connection(), "s", &json!({"tenant": 2}));
    // Removing the scope takes the triggers from every partition, without
    // a word about the key trigger partitions never had.
    let (mut client, notices) = s.db.connect_hearing();
    client.batch_execute("SELECT sync_deprovision('s')").unwrap();
    assert_eq!(*notices.lock().unwrap(), Vec::<String>::new());
    let left: i64 = server.query_one("SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'tandem%'", &[]).unwrap().get(0);
    assert_eq!(left, 0);
    server.batch_execute("DROP TABLE payments").unwrap();
}

#[test]
fn foreign_keys_declared_on_partitions_order_the_apply() {
    let s = Scenario::new(
        "partition_fk",
        r#"
        CREATE TABLE entries (id int, tenant_id int NOT NULL, account_id int, at date NOT NULL, PRIMARY KEY (id, at))
            PARTITION BY RANGE (at);
        CREATE TABLE entries_2024 PARTITION OF entries FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
        CREATE TABLE accounts (id int PRIMARY KEY, tenant_id int NOT NULL);
        ALTER TABLE entries_2024 ADD FOREIGN KEY (account_id) REFERENCES accounts (id);
        SELECT sync_provision('s', '{"tables": [
            {"name": "entries", "filter": {"tenant_id": "tenant"}},
            {"name": "accounts", "filter": {"tenant_id": "tenant"}}]}');
        "#,
        "s",
    );
    let token = s.register(json!({"tenant": 1}));
    let file = s.store("a.db");
    s.sync_as(&file, &token);
    local(&file, "INSERT INTO accounts VALUES (1, 1); INSERT INTO entries VALUES (1, 1, 1, '2024-05-01');");
    let report = s.sync_as(&file, &token);
    assert_eq!((report.pushed, report.conflicts.len(), report.rejected.len()), (2, 0, 0), "{report:?}");
    // Deletes go children first.
    local(&file, "DELETE FROM entries; DELETE FROM accounts;");
    let report = s.sync_as(&file, &token);
    assert_eq!((report.pushed, report.conflicts.len(), report.rejected.len()), (2, 0, 0), "{report:?}");
    let left: i64 = s.server().query_one("SELECT count(*) FROM accounts", &[]).unwrap().get(0);
    assert_eq!(left, 0);
}

#[test]
fn partitions_made_or_dropped_with_a_schema_are_followed_too() {
    let s = Scenario::new("partition_schema", PAYMENTS, "s");
    let token = s.register(json!({"tenant": 1}));
    let file = s.store("a.db");
    s.sync_as(&file, &token);
    let mut server = s.server();
    server
        .batch_execute(
            "CREATE SCHEMA archive CREATE TABLE payments_2023 PARTITION OF public.payments FOR VALUES FROM ('2023-01-01') TO ('2024-01-01');
             INSERT INTO archive.payments_2023 VALUES (5, 1, '2023-05-01', 50);",
        )
        .unwrap();
    s.sync_as(&file, &token);
    assert_eq!(ids(&file), "1@2024-03-01 2@2025-03-01 5@2023-05-01");
    let refused = server.batch_execute("DROP SCHEMA archive CASCADE").unwrap_err();
    assert!(describe(&refused).starts_with("2BP01"), "{}", describe(&refused));
}

#[test]
fn dates_past_year_9999_travel() {
    let s = Scenario::new("far_dates", PAYMENTS, "s");
    s.server()
        .batch_execute(
            "CREATE TABLE payments_far PARTITION OF payments FOR VALUES FROM ('10000-01-01') TO ('20000-01-01');
                              INSERT INTO payments VALUES (7, 1, '12000-01-01', 70);",
        )
        .unwrap();
    let token = s.register(json!({"tenant": 1}));
    let file = s.store("a.db");
    let report = s.sync_as(&file, &token);
    assert_eq!(report.pulled, 3, "{report:?}");
    assert_eq!(local_value(&file, "SELECT paid FROM payments WHERE id = 7").as_deref(), Some("12000-01-01"));
    assert_converged(&mut s.server(), file.connection(), "s", &json!({"tenant": 1}));
}
