//! Settings a caller's session may hold change neither what an upload
//! stores nor what a pull sends: each sync call runs with the ones that
//! decide how values are read and written pinned, and puts the caller's
//! back.

use serde_json::{json, Value};
use tandem_tests::json as query_json;
use tandem_tests::local::Scenario;

const SCHEMA: &str = r#"
CREATE TABLE things (id int PRIMARY KEY, tags text[], doc xml, day date, at timestamptz, span interval, ratio float8, raw bytea, tt timetz);
SELECT sync_provision('s', '{"tables": [{"name": "things"}]}');
"#;

/// Every setting PostgreSQL reads or writes these types' text with, at a
/// value other than its default.
const CALLERS: &str = "SET array_nulls = off; SET xmloption = document; SET DateStyle = 'SQL, DMY'; \
     SET TimeZone = 'Asia/Tokyo'; SET IntervalStyle = 'sql_standard'; SET extra_float_digits = -3; SET bytea_output = 'escape'; \
     SET timezone_abbreviations = 'India';";

fn rows_of(pulled: &Value) -> Value {
    pulled["tables"][0]["rows"].clone()
}

#[test]
fn a_callers_settings_change_neither_what_an_upload_stores_nor_what_a_pull_sends() {
    let s = Scenario::new("caller_settings", SCHEMA, "s");
    let mut caller = s.server();
    caller.batch_execute(CALLERS).unwrap();
    let values = json!([
        1,
        "{a,NULL,\"NULL\"}",
        "a<b/>",
        "2026-12-05",
        "2026-12-05T10:00:00Z",
        "-1 days +02:03:04",
        0.1234567890123,
        "AP8=",
        "12:00:00+05:30"
    ]);
    let upload = json!({"format": 1, "scope": "s", "origin": "dev",
        "tables": [{"name": "things", "columns": ["id", "tags", "doc", "day", "at", "span", "ratio", "raw", "tt"],
                    "rows": [{"op": "upsert", "seq": 1, "values": values}]}]});
    let answer = query_json(&mut caller, "SELECT sync_apply_changes('s', $1)", &[&upload]);
    assert_eq!(answer["applied"], 1, "{answer}");
    assert!(answer["versions"][0].get("row").is_none(), "stored as sent, so nothing comes back: {answer}");

    let mut plain = s.server();
    let stored = plain
        .query_one(
            "SELECT tags[2] IS NULL, tags[3], at = '2026-12-05 10:00:00+00', span = '-1 days +02:03:04', raw = '\\x00ff' FROM things",
            &[],
        )
        .unwrap();
    assert!(stored.get::<_, bool>(0), "an unquoted NULL in an array is NULL, not the text 'NULL'");
    assert_eq!(stored.get::<_, String>(1), "NULL", "a quoted one is the text");
    assert!(stored.get::<_, bool>(2) && stored.get::<_, bool>(3) && stored.get::<_, bool>(4));

    let theirs = query_json(&mut caller, "SELECT sync_select_changes('s', NULL)", &[]);
    let ours = query_json(&mut plain, "SELECT sync_select_changes('s', NULL)", &[]);
    assert_eq!(rows_of(&theirs), rows_of(&ours), "a pull sends the same text whatever the caller set");
    assert_eq!(rows_of(&ours)[0]["values"], values, "and it is the text sent");
    // A zone's abbreviation means what it means in the default set (IST:
    // Israel), not in the caller's (India).
    let abbreviated = json!({"format": 1, "scope": "s", "origin": "dev",
        "tables": [{"name": "things", "columns": ["id", "tt"], "rows": [{"op": "upsert", "seq": 2, "values": [2, "12:00:00 IST"]}]}]});
    query_json(&mut caller, "SELECT sync_apply_changes('s', $1)", &[&abbreviated]);
    let offset: String = plain.query_one("SELECT tt::text FROM things WHERE id = 2", &[]).unwrap().get(0);
    assert_eq!(offset, "12:00:00+02");
    let kept: String = caller.query_one("SELECT current_setting('array_nulls') || current_setting('xmloption')", &[]).unwrap().get(0);
    assert_eq!(kept, "offdocument", "the caller's settings are put back");
}

/// A pull records the client's call and folds the change log, and an
/// upload writes: in a read-only transaction (`default_transaction_read_only`
/// on, say) each said only PostgreSQL's "cannot execute INSERT in a
/// read-only transaction". Now the refusal says what to change.
#[test]
fn a_call_in_a_read_only_transaction_says_what_to_change() {
    let s = Scenario::new("caller_read_only", SCHEMA, "s");
    let token = s.register(json!({}));
    let mut caller = s.server();
    caller.batch_execute("INSERT INTO things (id) VALUES (1); SET default_transaction_read_only = on").unwrap();
    let options = json!({"token": token});
    let upload = json!({"format": 1, "scope": "s", "origin": "dev", "tables": []});
    for (call, params) in [
        ("SELECT sync_select_changes('s', NULL, $1)::text", vec![&options as &(dyn postgres::types::ToSql + Sync)]),
        ("SELECT sync_apply_changes('s', $2, $1)::text", vec![&options, &upload]),
    ] {
        let error = caller.query_one(call, &params).expect_err("a read-only transaction was written in");
        let db = error.as_db_error().expect("a server error");
        assert_eq!(db.code().code(), "25006", "{call}: {db:?}");
        assert!(db.message().contains("read-only") && db.message().contains("default_transaction_read_only"), "{call}: {}", db.message());
    }
    caller.batch_execute("SET default_transaction_read_only = off").unwrap();
    let pulled = query_json(&mut caller, "SELECT sync_select_changes('s', NULL, $1)", &[&options]);
    assert_eq!(rows_of(&pulled).as_array().map(Vec::len), Some(1));
}
