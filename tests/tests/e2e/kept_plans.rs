//! A backend keeps the plans of the statements sync calls run again and
//! again (a gateway's pooled connection serves thousands of calls). What
//! those plans were made for changes under them: a column added, a table
//! dropped and made again with another key type, an upload staging other
//! columns, the caller's settings. Every call on one long-lived connection
//! must still answer exactly what a new connection would.

use postgres::Client;
use serde_json::{json, Value};
use tandem_tests::local::Scenario;

const SCHEMA: &str = r#"
CREATE TABLE notes (id bigint PRIMARY KEY, tenant int NOT NULL, body text);
INSERT INTO notes SELECT i, 1 + i % 2, 'note ' || i FROM generate_series(1, 20) i;
SELECT sync_provision('kept', '{"tables": [{"name": "notes", "filter": {"tenant": "tenant"}}]}');
"#;

fn pull(c: &mut Client, since: Option<&str>, token: &str) -> Value {
    let options = json!({"token": token}).to_string();
    let text: String = c
        .query_one("SELECT sync_select_changes_json('kept', $1, $2::text::jsonb)::text", &[&since, &options])
        .expect("the pull answers")
        .get(0);
    serde_json::from_str(&text).expect("the pull is JSON")
}

fn rows(changeset: &Value) -> Vec<Value> {
    changeset["tables"].as_array().into_iter().flatten().flat_map(|t| t["rows"].as_array().cloned().unwrap_or_default()).collect()
}

fn setting(c: &mut Client, name: &str) -> String {
    c.query_one("SELECT current_setting($1)", &[&name]).unwrap().get(0)
}

#[test]
fn one_connection_follows_a_column_added_and_a_table_made_again() {
    let s = Scenario::new("kept_plans", SCHEMA, "kept");
    let token = s.register(json!({"tenant": 1}));
    let mut c = s.server();
    // Three pulls from scratch: by the second, this backend keeps the plans.
    let mut first = Value::Null;
    for _ in 0..3 {
        first = pull(&mut c, None, &token);
        assert_eq!(rows(&first).len(), 10);
    }
    let watermark = first["watermark"].as_str().expect("a watermark").to_string();

    // Another session adds a column and fills it in one row.
    s.server().batch_execute("ALTER TABLE notes ADD COLUMN mood text; UPDATE notes SET mood = 'calm' WHERE id = 2").unwrap();
    let schema: String = c.query_one("SELECT sync_schema('kept', jsonb_build_object('token', $1::text))::text", &[&token]).unwrap().get(0);
    let schema: Value = serde_json::from_str(&schema).unwrap();
    assert_eq!(schema["version"], 2, "the kept connection sees the new schema: {schema}");
    let options = json!({"token": token, "schema_version": 2}).to_string();
    for _ in 0..3 {
        let text: String = c
            .query_one("SELECT sync_select_changes_json('kept', $1, $2::text::jsonb)::text", &[&watermark, &options])
            .expect("the pull under the new schema answers")
            .get(0);
        let changed: Value = serde_json::from_str(&text).unwrap();
        let changed = rows(&changed);
        assert!(
            changed.iter().any(|r| r["row"]["mood"] == "calm" || r.to_string().contains("calm")),
            "the added column's value comes through the kept connection: {changed:?}"
        );
    }

    // The table dropped and made again with a text key, same name.
    s.server()
        .batch_execute(
            "SELECT sync_deprovision('kept'); DROP TABLE notes; \
             CREATE TABLE notes (id text PRIMARY KEY, tenant int NOT NULL, body text, weight numeric); \
             INSERT INTO notes SELECT 'n' || i, 1 + i % 2, 'again ' || i, i FROM generate_series(1, 6) i; \
             SELECT sync_provision('kept', '{\"tables\": [{\"name\": \"notes\", \"filter\": {\"tenant\": \"tenant\"}}]}');",
        )
        .unwrap();
    let token = s.register(json!({"tenant": 2}));
    for _ in 0..3 {
        let again = pull(&mut c, None, &token);
        let again = rows(&again);
        assert_eq!(again.len(), 3, "the table made again is read as it is now: {again:?}");
        assert!(again.iter().all(|r| r.to_string().contains("again")), "{again:?}");
    }
}

#[test]
fn uploads_of_other_columns_on_one_connection_write_what_each_sent() {
    let s = Scenario::new("kept_plans_uploads", SCHEMA, "kept");
    let token = s.register(json!({"tenant": 1}));
    let origin = tandem_core::identity::token_client_id(&token).expect("a token names its client").to_string();
    let mut c = s.server();
    let apply = |c: &mut Client, changeset: Value| -> Value {
        let options = json!({"token": token}).to_string();
        let text: String = c
            .query_one("SELECT sync_apply_changes_json('kept', $1::text::json, $2::text::jsonb)::text", &[&changeset.to_string(), &options])
            .expect("the upload is applied")
            .get(0);
        serde_json::from_str(&text).unwrap()
    };
    // Each upload stages other columns (a stage of another shape under the
    // same name), three times each, alternating.
    for round in 0..3 {
        for (columns, row) in [
            (json!(["id", "tenant", "body"]), json!([100 + round, 1, format!("full {round}")])),
            (json!(["id", "tenant"]), json!([200 + round, 1])),
        ] {
            let changeset = json!({
                "format": 1, "scope": "kept", "origin": origin, "watermark": null, "has_more": false,
                "tables": [{"name": "public.notes", "columns": columns, "rows": [{"op": "upsert", "values": row}]}]
            });
            let answer = apply(&mut c, changeset);
            assert!(answer["conflicts"].as_array().is_none_or(Vec::is_empty), "{answer}");
        }
    }
    let mut check = s.server();
    let written: Vec<(i64, Option<String>)> =
        check.query("SELECT id, body FROM notes WHERE id >= 100 ORDER BY id", &[]).unwrap().iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        written,
        vec![
            (100, Some("full 0".into())),
            (101, Some("full 1".into())),
            (102, Some("full 2".into())),
            (200, None),
            (201, None),
            (202, None)
        ]
    );
}

#[test]
fn a_callers_plan_mode_is_put_back_and_does_not_reach_the_sync() {
    let s = Scenario::new("kept_plans_settings", SCHEMA, "kept");
    let token = s.register(json!({"tenant": 1}));
    let mut c = s.server();
    c.batch_execute("SET plan_cache_mode = force_generic_plan; SET enable_indexscan = off").unwrap();
    for _ in 0..3 {
        assert_eq!(rows(&pull(&mut c, None, &token)).len(), 10);
        assert_eq!(setting(&mut c, "plan_cache_mode"), "force_generic_plan");
        assert_eq!(setting(&mut c, "enable_indexscan"), "off");
    }
    c.batch_execute("RESET plan_cache_mode; RESET enable_indexscan").unwrap();
    assert_eq!(rows(&pull(&mut c, None, &token)).len(), 10);
}
