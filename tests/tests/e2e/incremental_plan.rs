//! An incremental pull reads tracking through its stamp index, so its cost
//! follows the number of changes, not the size of the table.

use serde_json::json;
use tandem_core::schema::Schema;
use tandem_core::sql::{pull, Scope};
use tandem_tests::{bound, json as query_json, pull_all, TestDb};

#[test]
fn incremental_pulls_use_the_stamp_index() {
    let db = TestDb::new("plan");
    let mut client = db.connect();
    client
        .batch_execute(
            "CREATE TABLE big (id bigint PRIMARY KEY, tenant int NOT NULL, body text);
             INSERT INTO big SELECT g, g % 10, md5(g::text) FROM generate_series(1, 200000) g;
             SELECT sync_provision('s', '{\"tables\": [{\"name\": \"big\", \"filter\": {\"tenant\": \"t\"}}]}');",
        )
        .unwrap();
    let (_, watermark) = pull_all(&mut client, "s", None, &json!({"params": {"t": [1, 2]}, "max_rows": 100000}));
    client
        .batch_execute("UPDATE big SET body = 'changed' WHERE id % 2000 = 0; SELECT sync_status('s'); ANALYZE tandem.track_1; ANALYZE big;")
        .unwrap();

    let schema: Schema = serde_json::from_value(query_json(&mut client, "SELECT sync_schema('s')", &[])).unwrap();
    let ids = [1i64];
    let now: String = client.query_one("SELECT pg_current_snapshot()::text", &[]).unwrap().get(0);
    let window = pull::Window { until: &now, since: Some(&watermark), own_xid: None, replica: None, echoes: &[], limit: 10000 };
    let filters = [("t".to_string(), vec!["1".to_string(), "2".to_string()])].into();
    // Read through the log too (another call folding it): the same index.
    for through_log in [false, true] {
        let query = pull::upserts(&Scope::new(&schema, &ids), 0, &window, None, &filters, through_log);
        let explain = format!("EXPLAIN (FORMAT JSON) {}", query.sql);
        let params = bound(&query.params);
        let plan: serde_json::Value = client.query_one(&explain, &params.iter().map(|p| p.as_ref()).collect::<Vec<_>>()).unwrap().get(0);
        let text = plan.to_string();
        assert!(
            text.contains("\"Index Name\":\"track_1_tandem_stamp_id_idx\""),
            "the incremental pull (through the log: {through_log}) does not use the stamp index: {text}"
        );
    }

    let started = std::time::Instant::now();
    let (changes, _) = pull_all(&mut client, "s", Some(&watermark), &json!({"params": {"t": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]}}));
    assert_eq!(changes.len(), 100);
    println!("incremental pull of 100 changes over 200000 rows: {:?}", started.elapsed());
}
