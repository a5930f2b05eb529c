//! A tracked bulk write costs what its rows cost, whatever the session
//! wrote before it, and its effects reach the devices.

use serde_json::json;
use tandem_tests::{pull_all, TestDb};

/// Rows each bulk statement changes.
const ROWS: i64 = 20_000;

/// PL/pgSQL keeps the plan a trigger statement got at the session's first
/// run: after a one-row UPDATE, the joins of the old and new transition
/// tables of a 20,000-row UPDATE were nested loops (24 s at 10,000 rows,
/// quadratic). The statement timeout only catches that: the writes take
/// well under a second.
#[test]
fn a_bulk_update_after_a_small_one_is_planned_for_its_size() {
    let db = TestDb::new("bulk_after_small");
    let mut writer = db.connect();
    writer
        .batch_execute(&format!(
            "CREATE TABLE orders (id bigint PRIMARY KEY, tenant int NOT NULL, n int NOT NULL DEFAULT 0);
             CREATE TABLE lines (order_id bigint NOT NULL REFERENCES orders (id), line int NOT NULL, PRIMARY KEY (order_id, line));
             INSERT INTO orders SELECT g, 1 FROM generate_series(1, {ROWS}) g;
             INSERT INTO lines SELECT g, 1 FROM generate_series(1, {ROWS}) g;
             SELECT sync_provision('s', '{{\"tables\": [{{\"name\": \"orders\", \"filter\": {{\"tenant\": \"tenant\"}}}},
               {{\"name\": \"lines\", \"filter\": {{\"via\": \"orders\", \"on\": {{\"order_id\": \"id\"}}}}}}]}}');"
        ))
        .unwrap();
    let mut device = db.connect();
    let two = json!({"params": {"tenant": 2}, "max_rows": 100_000});
    let (_, start) = pull_all(&mut device, "s", None, &two);

    // A fresh session: one small write of each kind, then the bulk ones.
    let mut writer = db.connect();
    writer
        .batch_execute("SET statement_timeout = '20s'; UPDATE orders SET n = n + 1 WHERE id = 1; UPDATE orders SET tenant = 3 WHERE id = 2")
        .unwrap();
    writer.batch_execute("UPDATE orders SET n = n + 1").unwrap();
    // Every order moves to tenant 2: each leaves tenant 1, and its line
    // comes along.
    writer.batch_execute("UPDATE orders SET tenant = 2").unwrap();

    let (rows, _) = pull_all(&mut device, "s", Some(&start), &two);
    let count = |table: &str| rows.iter().filter(|(t, row)| t == table && row["op"] == "upsert").count() as i64;
    assert_eq!((count("public.orders"), count("public.lines")), (ROWS, ROWS));
    let exits: i64 = writer.query_one("SELECT count(*) FROM tandem.exit_1", &[]).unwrap().get(0);
    assert_eq!(exits, ROWS + 1, "each order left tenant 1 (and order 2 tenant 3)");
}
