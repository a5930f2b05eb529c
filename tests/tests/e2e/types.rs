//! Every type of the type table of docs/design.md goes from one database to another through a
//! changeset and compares equal.

use serde_json::json;
use tandem_tests::{json as query_json, typed, TestDb};

const MORE_ROWS: &str = "INSERT INTO typed VALUES
 (4, 'odd', 0, 0, 0, false, '-0', '5e-324', '-0.000000000000000000000000000001', 0, 'x', 'x', 'x', NULL,
  'infinity', '24:00:00', '-infinity', 'infinity', '\\x00', '[]', '{}', '{{1,2},{3,4}}', 'ok', '0');";

#[test]
fn every_type_round_trips_between_two_databases() {
    let source = TestDb::new("types_src");
    let target = TestDb::new("types_dst");
    let mut src = source.connect();
    let mut dst = target.connect();
    for sql in [typed::TABLE, typed::EDGE_ROWS, MORE_ROWS] {
        src.batch_execute(sql).unwrap();
    }
    dst.batch_execute(typed::TABLE).unwrap();
    for db in [&mut src, &mut dst] {
        db.batch_execute("SELECT sync_provision('types', '{\"tables\": [{\"name\": \"typed\"}]}')").unwrap();
    }
    let mut changeset = query_json(&mut src, "SELECT sync_select_changes('types', NULL)", &[]);
    assert_eq!(changeset["tables"][0]["rows"].as_array().unwrap().len(), 4);
    changeset["origin"] = json!("copier");
    changeset.as_object_mut().unwrap().remove("watermark");
    // Uploaded as new rows: the source's versions mean nothing here.
    for row in changeset["tables"][0]["rows"].as_array_mut().unwrap() {
        row.as_object_mut().unwrap().remove("version");
    }
    let result = query_json(&mut dst, "SELECT sync_apply_changes('types', $1)", &[&changeset]);
    assert_eq!(result["applied"], 4, "{result}");

    let (a, b) = (typed::dump(&mut src), typed::dump(&mut dst));
    for (left, right) in a.iter().zip(&b) {
        assert_eq!(left, right);
    }
    assert_eq!(a.len(), b.len());
}
