//! Hostile input, generated (proptest): changesets built from hostile
//! parts (huge and deeply nested values, keys of the wrong type, the same
//! key twice, SQL in names and values, NaN and infinities, unknown columns
//! and tables) are parsed and applied on both sides. Nothing panics, and a
//! changeset refused whole leaves the database exactly as it was; on the
//! server, rows refused one by one are not written and the rest are.
//! Files holding what SQLite lets any program write (a blob or invalid
//! UTF-8 where the column takes text, text in an integer column) upload
//! without a panic and cost only their rows.
//!
//! `PROPTEST_CASES` sets the cases per property (default 64).

use std::collections::BTreeMap;

use postgres::Client;
use proptest::prelude::*;
use rusqlite::Connection;
use serde_json::{json, Value};
use tandem_core::changeset::Changeset;
use tandem_core::schema::Schema;
use tandem_tests::local::Scenario;

const SCHEMA: &str = r#"
CREATE TABLE "Things" (id bigint PRIMARY KEY, tenant int NOT NULL, label text, score float8, amount numeric(10,2),
                       at timestamptz, tags text[], blob bytea, flag bool);
INSERT INTO "Things" SELECT i, 1 + i % 2, 'thing ' || i, i / 3.0, i, '2024-01-01', '{a,b}', '\x01', true FROM generate_series(1, 20) i;
SELECT sync_provision('h', '{"tables": [{"name": "\"Things\"", "filter": {"tenant": "tenant"}}]}');
"#;

const COLUMNS: [&str; 9] = ["id", "tenant", "label", "score", "amount", "at", "tags", "blob", "flag"];

/// A hostile JSON value: scalars of every kind, strings that are SQL,
/// huge or special, and nested arrays and objects up to a depth.
fn hostile_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map(Value::Number).unwrap_or(Value::Null)),
        Just(json!(u64::MAX)),
        Just(json!(1e308)),
        Just(json!("NaN")),
        Just(json!("Infinity")),
        Just(json!("-Infinity")),
        Just(json!("-0")),
        Just(json!("'); DROP TABLE \"Things\"; --")),
        Just(json!("\u{0}")),
        Just(json!("{\"a\": 1}")),
        Just(json!("AAAA====")),
        (1usize..3).prop_map(|n| Value::String("x".repeat(n << 20))),
        ".{0,40}".prop_map(Value::String),
    ];
    leaf.prop_recursive(40, 200, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(".{0,8}", inner, 0..4).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A value fit for each column, or a hostile one.
fn value_for(column: usize) -> BoxedStrategy<Value> {
    let fit = match COLUMNS[column] {
        "id" => (1i64..40).prop_map(Value::from).boxed(),
        "tenant" => Just(json!(1)).boxed(),
        "label" => ".{0,20}".prop_map(Value::String).boxed(),
        "score" => any::<i32>().prop_map(|n| json!(f64::from(n) / 7.0)).boxed(),
        "amount" => Just(json!("12.50")).boxed(),
        "at" => Just(json!("2024-05-01T13:45:00Z")).boxed(),
        "tags" => Just(json!("{x,y}")).boxed(),
        "blob" => Just(json!("AAE=")).boxed(),
        _ => any::<bool>().prop_map(Value::Bool).boxed(),
    };
    prop_oneof![4 => fit, 1 => hostile_value()].boxed()
}

fn hostile_row() -> impl Strategy<Value = Value> {
    let values: Vec<BoxedStrategy<Value>> = (0..COLUMNS.len()).map(value_for).collect();
    let upsert = (values, any::<u8>()).prop_map(|(values, seq)| json!({"op": "upsert", "seq": seq, "values": values}));
    let delete = (value_for(0), any::<u8>()).prop_map(|(key, seq)| json!({"op": "delete", "seq": seq, "base": "1", "key": [key]}));
    prop_oneof![6 => upsert, 2 => delete, 1 => hostile_value()]
}

/// A changeset for scope `h`, now and then with a hostile table name,
/// column list or top-level field.
fn hostile_changeset(origin: &'static str) -> impl Strategy<Value = Value> {
    let name =
        prop_oneof![8 => Just("public.Things".to_string()), 1 => Just("public.\"Things\"; DROP TABLE x".to_string()), 1 => ".{0,12}"];
    let columns = prop_oneof![
        8 => Just(COLUMNS.iter().map(|c| json!(c)).collect::<Vec<_>>()),
        1 => Just(vec![json!("id"), json!("id"), json!("tenant")]),
        1 => Just(vec![json!("id"), json!("tenant"), json!("\"; DROP TABLE x; --")]),
    ];
    (name, columns, prop::collection::vec(hostile_row(), 0..8), prop_oneof![9 => Just(None), 1 => hostile_value().prop_map(Some)]).prop_map(
        move |(name, columns, rows, extra)| {
            let mut changeset = json!({"format": 1, "scope": "h", "origin": origin,
                                       "tables": [{"name": name, "columns": columns, "rows": rows}], "has_more": false});
            if let Some(extra) = extra {
                changeset["surprise"] = extra;
            }
            changeset
        },
    )
}

/// Every row of every table of a file, Tandem's own included.
fn file_dump(conn: &Connection) -> BTreeMap<String, Vec<String>> {
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut dump = BTreeMap::new();
    for table in tables {
        let sql = format!("SELECT * FROM \"{}\" ORDER BY rowid", table.replace('"', "\"\""));
        let Ok(mut statement) = conn.prepare(&sql) else { continue };
        let n = statement.column_count();
        let rows = statement
            .query_map([], |row| Ok((0..n).map(|i| format!("{:?}", row.get_ref(i).unwrap())).collect::<Vec<_>>().join("|")))
            .unwrap()
            .collect::<Result<Vec<String>, _>>()
            .unwrap();
        dump.insert(table, rows);
    }
    dump
}

/// The user table and Tandem's bookkeeping of the scope on the server.
fn server_dump(server: &mut Client) -> Vec<String> {
    let mut out = Vec::new();
    for sql in [
        "SELECT row_to_json(t)::text FROM \"Things\" t ORDER BY id",
        "SELECT row_to_json(t)::text FROM tandem.track_1 t ORDER BY id",
        "SELECT row_to_json(c)::text FROM (SELECT scope, key, kind, decision FROM tandem.conflicts ORDER BY id) c",
        "SELECT count(*)::text FROM tandem.log_1",
    ] {
        out.extend(server.query(sql, &[]).unwrap().iter().map(|r| r.get::<_, String>(0)));
    }
    out
}

/// 64 cases a property unless `PROPTEST_CASES` says otherwise; failures
/// are reported, not written into the tree.
fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(64);
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn changeset_parsing_never_panics(changeset in hostile_changeset("client"), raw in ".{0,64}") {
        let schema: Schema = serde_json::from_value(schema_json()).unwrap();
        use tandem_core::validate::{check_changeset, Raw, Sender};
        for text in [changeset.to_string(), raw.clone()] {
            let _ = check_changeset(&schema, &text, Sender::Server, tandem_core::types::to_local, Raw::Dropped);
            let _ = check_changeset(&schema, &text, Sender::Device, tandem_core::types::to_pg_text, Raw::Kept);
            let _ = Changeset::parse(&text);
        }
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        prop_assert!(Changeset::parse(&deep).is_err());
    }
}

/// The scope's schema as the server gives it, made once.
fn schema_json() -> Value {
    use std::sync::OnceLock;
    static SCHEMA_JSON: OnceLock<Value> = OnceLock::new();
    SCHEMA_JSON
        .get_or_init(|| {
            let s = Scenario::new("hostile_schema", SCHEMA, "h");
            tandem_tests::json(&mut s.server(), "SELECT sync_schema('h')", &[])
        })
        .clone()
}

#[test]
fn hostile_server_changesets_leave_a_file_as_it_was_or_apply() {
    let s = Scenario::new("hostile_local", SCHEMA, "h");
    let token = s.register(json!({"tenant": 1}));
    let file = s.store("device.db");
    s.sync_as(&file, &token);
    let server_id: String = s.server().query_one("SELECT sync_schema('h')->>'server_id'", &[]).unwrap().get(0);
    let origin: &'static str = Box::leak(server_id.into_boxed_str());
    let mut runner = proptest::test_runner::TestRunner::new(config());
    runner
        .run(&hostile_changeset(origin), |mut changeset| {
            // A server changeset carries versions, not counters.
            if let Some(rows) = changeset["tables"][0]["rows"].as_array_mut() {
                for row in rows.iter_mut().filter(|r| r.is_object()) {
                    let row = row.as_object_mut().unwrap();
                    row.remove("seq");
                    row.remove("base");
                    row.insert("version".into(), json!("7"));
                }
            }
            let before = file_dump(file.connection());
            let applied =
                file.connection().query_row("SELECT sync_apply_changes('h', ?1)", [changeset.to_string()], |r| r.get::<_, String>(0));
            if applied.is_err() {
                prop_assert_eq!(&file_dump(file.connection()), &before, "a refused changeset changed the file: {:?}", applied);
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn hostile_uploads_cost_only_their_rows_and_a_refused_one_changes_nothing() {
    let s = Scenario::new("hostile_server", SCHEMA, "h");
    let token = s.register(json!({"tenant": 1}));
    let client_id = tandem_core::identity::token_client_id(&token).unwrap().to_string();
    let origin: &'static str = Box::leak(client_id.into_boxed_str());
    let server = std::cell::RefCell::new(s.server());
    let mut runner = proptest::test_runner::TestRunner::new(config());
    runner
        .run(&hostile_changeset(origin), |changeset| {
            let mut server = server.borrow_mut();
            server.batch_execute("SELECT sync_status('h')").unwrap(); // folds the logs
            let before = server_dump(&mut server);
            let options = json!({"token": token});
            let result =
                server.query_one("SELECT sync_apply_changes_json('h', $1::text::json, $2)::text", &[&changeset.to_string(), &options]);
            match result {
                Err(error) => {
                    let text = tandem_tests::describe(&error);
                    prop_assert!(!text.contains("panic"), "{}", text);
                    server.batch_execute("SELECT sync_status('h')").unwrap();
                    prop_assert_eq!(server_dump(&mut server), before, "a refused upload changed the server: {}", text);
                }
                Ok(row) => {
                    let answer: Value = serde_json::from_str(&row.get::<_, String>(0)).unwrap();
                    // Whatever was written is in the tenant's partition.
                    let others: i64 =
                        server.query_one("SELECT count(*) FROM \"Things\" WHERE tenant <> 1 AND id > 20", &[]).unwrap().get(0);
                    prop_assert_eq!(others, 0, "{}", answer);
                }
            }
            Ok(())
        })
        .unwrap();
    let tenant_two: i64 =
        server.borrow_mut().query_one("SELECT count(*) FROM \"Things\" WHERE tenant = 2 AND label NOT LIKE 'thing %'", &[]).unwrap().get(0);
    assert_eq!(tenant_two, 0, "no upload reached the other tenant's rows");
}

#[test]
fn files_holding_what_any_program_may_write_upload_without_a_panic() {
    let s = Scenario::new("hostile_file", SCHEMA, "h");
    let token = s.register(json!({"tenant": 1}));
    let file = s.store("device.db");
    s.sync_as(&file, &token);
    let stored = prop_oneof![
        Just(rusqlite::types::Value::Null),
        any::<i64>().prop_map(rusqlite::types::Value::Integer),
        any::<f64>().prop_map(rusqlite::types::Value::Real),
        ".{0,30}".prop_map(rusqlite::types::Value::Text),
        prop::collection::vec(any::<u8>(), 0..40).prop_map(rusqlite::types::Value::Blob),
    ];
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig { cases: config().cases.min(32), ..config() });
    runner
        .run(&(1i64..=10, prop::collection::vec(stored, COLUMNS.len() - 2), any::<bool>()), |(id, values, bad_utf8)| {
            let conn = file.connection();
            let mut sql = String::from("UPDATE \"Things\" SET ");
            sql.push_str(&COLUMNS[2..].iter().enumerate().map(|(i, c)| format!("{c} = ?{}", i + 1)).collect::<Vec<_>>().join(", "));
            sql.push_str(&format!(" WHERE id = {}", id * 2));
            conn.execute(&sql, rusqlite::params_from_iter(values.iter())).unwrap();
            if bad_utf8 {
                conn.execute(&format!("UPDATE \"Things\" SET label = CAST(x'fffe41' AS TEXT) WHERE id = {}", id * 2), []).unwrap();
            }
            let report = s.sync(&file, json!({"token": token}));
            prop_assert!(report.pushed + report.rejected.len() as u64 + report.conflicts.len() as u64 >= 1, "{:?}", report);
            Ok(())
        })
        .unwrap();
    let again = s.sync_as(&file, &token);
    assert_eq!(again.pushed, 0, "refused changes are set aside, not sent again: {again:?}");
}
