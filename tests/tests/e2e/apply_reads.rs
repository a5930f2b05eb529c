//! An upload's apply reads the user table by key, row by row, so its cost
//! follows the rows uploaded, not the size of the table.

use serde_json::{json, Value};
use tandem_tests::TestDb;

/// Rows of `big` the current transaction read, by sequential scans and
/// through indexes.
fn rows_read(tx: &mut postgres::Transaction<'_>) -> (i64, i64) {
    let row = tx.query_one("SELECT seq_tup_read, idx_tup_fetch FROM pg_stat_xact_user_tables WHERE relname = 'big'", &[]).unwrap();
    (row.get(0), row.get(1))
}

#[test]
fn an_apply_of_updates_and_deletes_reads_only_their_rows() {
    const ROWS: i64 = 100_000;
    let db = TestDb::new("apply_reads");
    let mut client = db.connect();
    client
        .batch_execute(&format!(
            "CREATE TABLE big (id bigint PRIMARY KEY, tenant int NOT NULL, body text);
             INSERT INTO big SELECT g, g % 10, md5(g::text) FROM generate_series(1, {ROWS}) g;
             SELECT sync_provision('s', '{{\"tables\": [{{\"name\": \"big\"}}]}}');
             ANALYZE big;"
        ))
        .unwrap();
    let version: String = client.query_one("SELECT tandem_version::text FROM tandem.track_1 LIMIT 1", &[]).unwrap().get(0);
    // 2,000 edits spread over the whole table (a merge join from the
    // start of the key index would read up to the last of them), then 500
    // deletes.
    let mut rows: Vec<Value> =
        (1..=2000).map(|n| json!({"op": "upsert", "base": version, "seq": n, "values": [n * 50, 1, "edited"]})).collect();
    rows.extend((1..=500).map(|n| json!({"op": "delete", "base": version, "seq": 2000 + n, "key": [n * 50 - 7]})));
    let changeset = json!({"format": 1, "scope": "s", "origin": "device", "tables": [
        {"name": "big", "columns": ["id", "tenant", "body"], "rows": rows}]});

    let mut tx = client.transaction().unwrap();
    let before = rows_read(&mut tx);
    let result: Value = tx.query_one("SELECT sync_apply_changes('s', $1)", &[&changeset]).unwrap().get(0);
    let after = rows_read(&mut tx);
    assert_eq!(result["applied"], 2500, "{result}");
    assert!(result["conflicts"].as_array().is_none_or(|c| c.is_empty()), "{result}");
    let (scanned, fetched) = (after.0 - before.0, after.1 - before.1);
    // Classifying probes each key once and writing once more: about
    // 5,000 rows read, against 100,000 in the table.
    assert!(scanned == 0 && fetched <= 4 * 2500, "the apply read {scanned} rows by scans and {fetched} through indexes");
    tx.commit().unwrap();
    let edited: i64 = client.query_one("SELECT count(*) FROM big WHERE body = 'edited'", &[]).unwrap().get(0);
    let left: i64 = client.query_one("SELECT count(*) FROM big", &[]).unwrap().get(0);
    assert_eq!((edited, left), (2000, ROWS - 500));
}
