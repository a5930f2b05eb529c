//! Settings a caller's session may hold change neither what an upload
//! stores nor what a pull sends: each sync call runs with the ones that
//! decide how values are read and written pinned, and puts the caller's
//! back.

use serde_json::{json, Value};
use tandem_tests::json as query_json;
use tandem_tests::local::Scenario;
use tandem_tests::role::Role;

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

const OWN_SETTINGS: &str = r#"
CREATE TABLE notes (id int PRIMARY KEY, body text, zone text NOT NULL DEFAULT current_setting('TimeZone'), seen text, stamped timestamptz, others text);
CREATE FUNCTION notes_seen() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.seen := current_setting('TimeZone') || ' / ' || current_setting('DateStyle') || ' / ' || to_char(date '2026-12-05', 'FMDay');
  NEW.stamped := timestamptz '2026-12-05 10:00:00+00';
  NEW.others := coalesce(current_setting('app.uid', true), '') || ' / ' || current_setting('default_text_search_config')
    || ' / ' || current_setting('transform_null_equals');
  RETURN NEW;
END $$;
CREATE TRIGGER notes_seen BEFORE INSERT OR UPDATE ON notes FOR EACH ROW EXECUTE FUNCTION notes_seen();
SELECT sync_provision('s', '{"tables": [{"name": "notes"}]}');
DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET TimeZone = %L', current_database(), 'Asia/Tokyo');
             EXECUTE format('ALTER DATABASE %I SET DateStyle = %L', current_database(), 'SQL, DMY');
             EXECUTE format('ALTER ROLE %I IN DATABASE %I SET TimeZone = %L', current_user, current_database(), 'Europe/Paris'); END $$;
"#;

/// The server's own triggers and column defaults that an upload's writes
/// run compute with the database's and the owner's settings (its zone, its
/// date style), as they do in a session of the owner's, not with the ones
/// sync reads and writes values under nor with what the caller's session
/// set; what goes back to the device is still in sync's own text.
#[test]
fn the_servers_triggers_and_defaults_run_with_the_databases_own_settings() {
    let s = Scenario::new("own_settings", OWN_SETTINGS, "s");
    let mut session = s.server();
    let configured: String = session.query_one("SELECT current_setting('default_text_search_config')", &[]).unwrap().get(0);
    session
        .batch_execute(
            "SET TimeZone = 'America/New_York'; SET DateStyle = 'German'; SET app.uid = 'admin'; \
             SET default_text_search_config = 'simple'; SET transform_null_equals = on",
        )
        .unwrap();
    let upload = json!({"format": 1, "scope": "s", "origin": "dev",
        "tables": [{"name": "notes", "columns": ["id", "body", "zone", "seen", "stamped", "others"],
                    "rows": [{"op": "upsert", "seq": 1, "values": [1, "a", null, null, null, null]}]}]});
    let answer = query_json(&mut session, "SELECT sync_apply_changes('s', $1)", &[&upload]);
    assert_eq!(answer["applied"], 1, "{answer}");
    let stored = session.query_one("SELECT zone, seen, others FROM notes WHERE id = 1", &[]).unwrap();
    assert_eq!(stored.get::<_, String>(0), "Europe/Paris", "the column's default ran in the owner's zone in this database");
    assert_eq!(
        stored.get::<_, String>(1),
        "Europe/Paris / SQL, DMY / Saturday",
        "the trigger ran with the owner's and the database's settings"
    );
    assert_eq!(stored.get::<_, String>(2), format!(" / {configured} / off"), "nothing else the caller set reached the trigger");
    let kept: String = session.query_one("SELECT current_setting('app.uid') || current_setting('TimeZone')", &[]).unwrap().get(0);
    assert_eq!(kept, "adminAmerica/New_York", "the caller's settings are put back");
    let row = &answer["versions"][0]["row"];
    assert_eq!(row["stamped"], "2026-12-05T10:00:00Z", "what the trigger made goes back in sync's own text: {answer}");
    assert_eq!(row["zone"], "Europe/Paris", "{answer}");
}

const ROLE_SETTINGS: &str = r#"
CREATE TABLE marks (id int PRIMARY KEY, seen text);
CREATE FUNCTION marks_seen() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.seen := current_setting('TimeZone') || ' / ' || current_setting('DateStyle') || ' / ' || coalesce(current_setting('app.audit', true), '-')
        || ' / ' || coalesce(current_setting('app.other', true), '-');
      RETURN NEW; END $$;
CREATE TRIGGER marks_seen BEFORE INSERT OR UPDATE ON marks FOR EACH ROW EXECUTE FUNCTION marks_seen();
SELECT sync_provision('s', '{"tables": [{"name": "marks"}]}');
DO $$ BEGIN EXECUTE format('ALTER ROLE %I IN DATABASE %I SET app.audit = %L', current_user, current_database(), 'owner'); END $$;
"#;

/// A device's role may give itself settings (`ALTER ROLE ... SET`), and
/// its connection options more, which its sessions start with: the
/// server's triggers still compute with what PostgreSQL's configuration
/// gives (helper 61), read the custom settings the owner gave itself
/// (helper 62), and none the device made up (helper 63).
#[test]
fn a_device_roles_own_settings_do_not_reach_the_servers_triggers() {
    let s = Scenario::new("role_settings", ROLE_SETTINGS, "s");
    let token = s.register(json!({}));
    let device = Role::new(
        &s,
        "device",
        "GRANT EXECUTE ON FUNCTION sync_schema, sync_select_changes, sync_select_changes_json, sync_apply_changes, \
         sync_apply_changes_json TO {role}; ALTER ROLE {role} SET DateStyle = 'German'; ALTER ROLE {role} SET TimeZone = 'Asia/Tokyo'; \
         ALTER ROLE {role} SET app.audit = 'device';",
    );
    let configured: String =
        s.server().query_one("SELECT current_setting('TimeZone') || ' / ' || current_setting('DateStyle')", &[]).unwrap().get(0);
    let file = s.store("a.db");
    let options: tandem_local::SyncOptions = serde_json::from_value(json!({ "token": token })).unwrap();
    file.sync(&device.url(&s), "s", &options).unwrap();
    file.connection().execute("INSERT INTO marks (id) VALUES (1)", []).unwrap();
    // A custom setting the owner does not set, from the device's connection.
    let url = format!("{}?options=-c%20app.other%3Devil", device.url(&s));
    file.sync(&url, "s", &options).unwrap();
    let seen: String = s.server().query_one("SELECT seen FROM marks WHERE id = 1", &[]).unwrap().get(0);
    assert_eq!(seen, format!("{configured} / owner / "), "the trigger computed with the configured settings, not the device's");
}
