//! Keys PostgreSQL holds equal but a file holds distinct: another text form
//! of a timestamptz, numeric or uuid. The file ends with the server's form
//! and one row, never two; equal keys in one upload are refused, not merged.

use serde_json::json;
use tandem_tests::local::{assert_converged, local, local_count, Scenario};

const SCHEMA: &str = r#"
CREATE TABLE events (at timestamptz PRIMARY KEY, tenant_id int NOT NULL, what text);
CREATE TABLE prices (amount numeric PRIMARY KEY, tenant_id int NOT NULL, label text);
CREATE TABLE things (id uuid PRIMARY KEY, tenant_id int NOT NULL, name text);
INSERT INTO events VALUES ('2025-03-16 10:00:00+00', 1, 'server');
INSERT INTO prices VALUES (3, 1, 'three');
SELECT sync_provision('s', '{"tables": [
  {"name": "events", "filter": {"tenant_id": "tenant"}},
  {"name": "prices", "filter": {"tenant_id": "tenant"}},
  {"name": "things", "filter": {"tenant_id": "tenant"}}]}');
"#;

#[test]
fn a_key_in_another_form_of_the_same_value_becomes_the_servers_form() {
    let s = Scenario::new("canonical", SCHEMA, "s");
    let token = s.register(json!({"tenant": 1}));
    let file = s.store("a.db");
    s.sync_as(&file, &token);
    local(
        &file,
        r#"INSERT INTO events VALUES ('2025-06-01T00:00:00.000Z', 1, 'new, written with millis');
           INSERT INTO events VALUES ('2025-03-16 12:00:00+02:00', 1, 'the server''s key, another zone');
           INSERT INTO prices VALUES ('3.0', 1, 'three again');
           INSERT INTO things VALUES ('0B7E1F7A-5D1C-4B2E-9A55-6F1F0C2D9E11', 1, 'upper case');"#,
    );
    let report = s.sync_as(&file, &token);
    let conflicts: Vec<String> = report.conflicts.iter().map(|c| format!("{} {}", c.table, c.kind.as_str())).collect();
    assert_eq!(conflicts.len(), 2, "two rows meet the server's rows under equal keys: {conflicts:?}");
    assert_eq!(local_count(&file, "SELECT count(*) FROM events"), 2, "one row per key PostgreSQL holds: {report:?}");
    assert_eq!(local_count(&file, "SELECT count(*) FROM prices"), 1);
    assert_eq!(local_count(&file, "SELECT count(*) FROM events WHERE at = '2025-06-01T00:00:00Z'"), 1, "the server's form");
    assert_eq!(local_count(&file, "SELECT count(*) FROM things WHERE id = '0b7e1f7a-5d1c-4b2e-9a55-6f1f0c2d9e11'"), 1);
    assert_converged(&mut s.server(), file.connection(), "s", &json!({"tenant": 1}));
    // Deleting the row the file shows deletes the server's row.
    local(&file, "DELETE FROM things");
    s.sync_as(&file, &token);
    let left: i64 = s.server().query_one("SELECT count(*) FROM things", &[]).unwrap().get(0);
    assert_eq!(left, 0);
    assert_converged(&mut s.server(), file.connection(), "s", &json!({"tenant": 1}));
}

#[test]
fn keys_equal_for_postgresql_in_one_upload_are_refused_not_merged() {
    let s = Scenario::new("equal_keys", SCHEMA, "s");
    let token = s.register(json!({"tenant": 1}));
    let file = s.store("a.db");
    s.sync_as(&file, &token);
    local(&file, "INSERT INTO prices VALUES ('7', 1, 'seven'), ('7.0', 1, 'seven point oh'), ('7.00', 1, 'seven point oh oh')");
    let report = s.sync_as(&file, &token);
    assert_eq!(report.pushed, 1, "{report:?}");
    assert_eq!(report.rejected.len(), 2, "{report:?}");
    assert!(report.rejected.iter().all(|r| r.reason.contains("equal")), "{report:?}");
    let labels: Vec<String> =
        s.server().query("SELECT label FROM prices WHERE amount = 7", &[]).unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(labels.len(), 1);
    assert_eq!(local_count(&file, "SELECT count(*) FROM prices WHERE amount = 7"), 1, "the file holds what the server holds");
    assert_converged(&mut s.server(), file.connection(), "s", &json!({"tenant": 1}));
}
