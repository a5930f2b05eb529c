//! A commit that changes a scope's tables notifies `LISTEN tandem` with the
//! scope's name, once per transaction, whichever way the rows changed: a
//! statement on the table, on one of its partitions, a TRUNCATE, a
//! device's upload. Nothing else travels, and another scope's commits
//! name only that scope.

use std::time::Duration;

use postgres::fallible_iterator::FallibleIterator;
use postgres::Client;
use serde_json::json;
use tandem_tests::local::{local, Scenario};

const SCHEMA: &str = r#"
CREATE TABLE payments (id int, tenant_id int NOT NULL, paid date NOT NULL, PRIMARY KEY (id, paid)) PARTITION BY RANGE (paid);
CREATE TABLE payments_2024 PARTITION OF payments FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE notes (id int PRIMARY KEY, body text);
SELECT sync_provision('s', '{"tables": [{"name": "payments", "filter": {"tenant_id": "tenant"}}]}');
SELECT sync_provision('other', '{"tables": [{"name": "notes"}]}');
"#;

/// The payloads a listening session received within a short wait.
fn received(listener: &mut Client) -> Vec<String> {
    let mut notifications = listener.notifications();
    let mut found = Vec::new();
    let mut waiting = notifications.timeout_iter(Duration::from_millis(500));
    while let Ok(Some(notification)) = waiting.next() {
        assert_eq!(notification.channel(), "tandem");
        found.push(notification.payload().to_string());
    }
    found
}

#[test]
fn a_commit_that_changes_a_scope_notifies_its_name_once() {
    let s = Scenario::new("notify", SCHEMA, "s");
    let mut listener = s.server();
    listener.batch_execute("LISTEN tandem").unwrap();
    let mut server = s.server();

    server
        .batch_execute(
            "BEGIN; INSERT INTO payments VALUES (1, 1, '2024-03-01'); UPDATE payments SET tenant_id = 2 WHERE id = 1; \
             INSERT INTO payments VALUES (2, 1, '2024-04-01'); COMMIT;",
        )
        .unwrap();
    assert_eq!(received(&mut listener), ["s"], "one wake for the transaction");
    server.batch_execute("INSERT INTO payments_2024 VALUES (3, 1, '2024-05-01')").unwrap();
    assert_eq!(received(&mut listener), ["s"], "a write to a partition directly");
    server.batch_execute("CREATE TABLE payments_2025 PARTITION OF payments FOR VALUES FROM ('2025-01-01') TO ('2026-01-01')").unwrap();
    received(&mut listener);
    server.batch_execute("INSERT INTO payments_2025 VALUES (4, 1, '2025-05-01')").unwrap();
    assert_eq!(received(&mut listener), ["s"], "a partition made after provisioning");
    server.batch_execute("INSERT INTO notes VALUES (1, 'x')").unwrap();
    assert_eq!(received(&mut listener), ["other"], "another scope's commit names only it");
    server.batch_execute("BEGIN; DELETE FROM payments WHERE id = 4; ROLLBACK").unwrap();
    assert!(received(&mut listener).is_empty(), "nothing for a rolled back transaction");
    server.batch_execute("TRUNCATE payments").unwrap();
    assert_eq!(received(&mut listener), ["s"]);

    // A device's upload wakes the others.
    let token = s.register(json!({"tenant": 1}));
    let file = s.store("a.db");
    s.sync_as(&file, &token);
    received(&mut listener);
    local(&file, "INSERT INTO payments VALUES (9, 1, '2024-09-01')");
    s.sync_as(&file, &token);
    assert_eq!(received(&mut listener), ["s"]);

    // Deprovisioned, the scope's tables notify no more.
    server.batch_execute("SELECT sync_deprovision('s'); INSERT INTO payments VALUES (10, 1, '2024-10-01')").unwrap();
    assert!(received(&mut listener).is_empty());
    let left: i64 = server.query_one("SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'tandem_%_notify'", &[]).unwrap().get(0);
    assert_eq!(left, 1, "only the other scope's table");
}
