//! What the server trusts a caller with: nothing it may not prove. A device
//! role reaches a filtered scope only with its token; the conflict policy
//! is the scope's; a planted function never runs inside a sync call; and a
//! refusal says no more about another tenant's rows than any refusal.

use postgres::{Client, NoTls};
use serde_json::{json, Value};
use tandem_core::dsn::with_database;
use tandem_tests::local::{local, Scenario};
use tandem_tests::{describe, json as query_json, server_url};

const SCHEMA: &str = r#"
CREATE TABLE customers (id bigint PRIMARY KEY, tenant_id int NOT NULL, name text);
INSERT INTO customers VALUES (1, 1, 'Ada'), (2, 1, 'Bob'), (3, 2, 'Cy'), (4, 2, 'Dee');
SELECT sync_provision('crm', '{"tables": [{"name": "customers", "filter": {"tenant_id": "tenant"}}]}');
"#;

/// A login role made for one test, with what a device role needs today,
/// dropped at the end.
struct Role {
    name: String,
    admin_url: String,
}

impl Role {
    fn new(s: &Scenario, label: &str, grants: &str) -> Role {
        let name = format!("tandem_{label}_{}", std::process::id());
        let mut server = s.server();
        server
            .batch_execute(&format!("DROP ROLE IF EXISTS {name}; CREATE ROLE {name} LOGIN; {}", grants.replace("{role}", &name)))
            .unwrap();
        Role { name, admin_url: s.db.url.clone() }
    }

    fn connect(&self, s: &Scenario) -> Client {
        let url = with_database(&server_url(), &s.db.name).replacen("postgres@", &format!("{}@", self.name), 1);
        Client::connect(&url, NoTls).unwrap_or_else(|e| panic!("connect as {}: {e}", self.name))
    }
}

impl Drop for Role {
    fn drop(&mut self) {
        if let Ok(mut admin) = Client::connect(&self.admin_url, NoTls) {
            let _ = admin.batch_execute(&format!("DROP OWNED BY {0}; DROP ROLE IF EXISTS {0}", self.name));
        }
    }
}

const DEVICE_GRANTS: &str = "GRANT USAGE ON SCHEMA tandem TO {role}; GRANT ALL ON ALL TABLES IN SCHEMA tandem TO {role}; \
     GRANT ALL ON ALL SEQUENCES IN SCHEMA tandem TO {role}; GRANT ALL ON customers TO {role};";

fn error_of(client: &mut Client, sql: &str, params: &[&(dyn postgres::types::ToSql + Sync)]) -> String {
    match client.query(sql, params) {
        Ok(rows) => panic!("{sql} succeeded: {:?}", rows.len()),
        Err(e) => describe(&e),
    }
}

fn upload(origin: &str, rows: Value) -> Value {
    json!({"format": 1, "scope": "crm", "origin": origin,
           "tables": [{"name": "customers", "columns": ["id", "tenant_id", "name"], "rows": rows}]})
}

#[test]
fn a_filtered_scope_takes_calls_from_a_device_role_only_with_a_token() {
    let s = Scenario::new("token_required", SCHEMA, "crm");
    let token_a = s.register(json!({"tenant": 1}));
    let token_b = s.register(json!({"tenant": 2}));
    let b_id = tandem_core::identity::token_client_id(&token_b).unwrap().to_string();
    let device = Role::new(&s, "device", DEVICE_GRANTS);
    let mut conn = device.connect(&s);

    for options in [json!({"params": {"tenant": 2}}), json!({"client_id": b_id}), json!({})] {
        let error = error_of(&mut conn, "SELECT sync_select_changes('crm', NULL, $1)", &[&options]);
        assert!(error.starts_with("28000") && error.contains("token"), "{options}: {error}");
    }
    let steal = upload(&b_id, json!([{"op": "upsert", "values": [3, 2, "stolen"]}]));
    let error = error_of(&mut conn, "SELECT sync_apply_changes('crm', $1, '{}')", &[&steal]);
    assert!(error.starts_with("28000"), "{error}");
    let pulled = query_json(&mut conn, "SELECT sync_select_changes('crm', NULL, $1)", &[&json!({"token": token_a})]);
    let ids: Vec<i64> = pulled["tables"][0]["rows"].as_array().unwrap().iter().map(|r| r["values"][0].as_i64().unwrap()).collect();
    assert_eq!(ids, [1, 2], "the token's partition, and only it");
    let status = query_json(&mut conn, "SELECT sync_status('crm')", &[]);
    assert!(status.get("clients").is_none(), "a device is not shown other clients: {status}");
    let owner_status = query_json(&mut s.server(), "SELECT sync_status('crm')", &[]);
    assert_eq!(owner_status["clients"].as_array().unwrap().len(), 2, "the scope's owner is");
    // The owner may still act for any tenant, as it may read the tables.
    let owners = query_json(&mut s.server(), "SELECT sync_select_changes('crm', NULL, $1)", &[&json!({"params": {"tenant": 2}})]);
    assert_eq!(owners["tables"][0]["rows"].as_array().unwrap().len(), 2);
    // With a token, the call is the token's client's, even the owner's.
    let both = json!({"token": token_a, "client_id": b_id});
    let error = describe(&s.server().query_one("SELECT sync_select_changes('crm', NULL, $1)", &[&both]).unwrap_err());
    assert!(error.starts_with("42501") && error.contains("is not the token's client"), "{error}");
}

#[test]
fn the_conflict_policy_belongs_to_the_scope() {
    let s = Scenario::new("policy", SCHEMA, "crm");
    let mut server = s.server();
    let base: String = {
        let pulled = query_json(&mut server, "SELECT sync_select_changes('crm', NULL, $1)", &[&json!({"params": {"tenant": 1}})]);
        pulled["tables"][0]["rows"][0]["version"].as_str().unwrap().to_string()
    };
    server.batch_execute("UPDATE customers SET name = 'server' WHERE id = 1").unwrap();
    let stale = upload("dev", json!([{"op": "upsert", "base": base, "seq": 1, "values": [1, 1, "device"]}]));
    let error = error_of(
        &mut server,
        "SELECT sync_apply_changes('crm', $1, $2)",
        &[&stale, &json!({"params": {"tenant": 1}, "policy": "client_wins"})],
    );
    assert!(error.starts_with("22023") && error.contains("scope"), "{error}");
    let result = query_json(&mut server, "SELECT sync_apply_changes('crm', $1, $2)", &[&stale, &json!({"params": {"tenant": 1}})]);
    assert_eq!(result["conflicts"][0]["decision"], "server_wins", "{result}");
    server
        .batch_execute(r#"SELECT sync_provision('crm', '{"policy": "client_wins", "tables": [{"name": "customers", "filter": {"tenant_id": "tenant"}}]}')"#)
        .unwrap();
    let again = upload("dev", json!([{"op": "upsert", "base": base, "seq": 2, "values": [1, 1, "device again"]}]));
    let result = query_json(&mut server, "SELECT sync_apply_changes('crm', $1, $2)", &[&again, &json!({"params": {"tenant": 1}})]);
    assert_eq!(result["conflicts"][0]["decision"], "client_wins", "the scope's policy now: {result}");
    let error =
        error_of(&mut server, r#"SELECT sync_provision('crm', '{"policy": "public.nope", "tables": [{"name": "customers"}]}')"#, &[]);
    assert!(error.contains("public.nope"), "a resolver is checked when the scope is provisioned: {error}");
}

#[test]
fn a_planted_function_never_runs_inside_a_sync_call() {
    let s = Scenario::new("planted", SCHEMA, "crm");
    let token = s.register(json!({"tenant": 1}));
    // Mallory may create objects in a schema on the device role's path.
    let mallory = Role::new(&s, "mallory", "CREATE SCHEMA trap; GRANT ALL ON SCHEMA trap TO {role};");
    let mut planting = mallory.connect(&s);
    for (function, args) in [
        ("convert_to", "a text, b text"),
        ("sha256", "a bytea"),
        ("set_config", "a text, b text, c boolean"),
        ("current_setting", "a text"),
        ("pg_current_snapshot", ""),
        ("jsonb_build_object", "a text, b anyelement"),
    ] {
        let returns = match function {
            "sha256" => "bytea",
            "pg_current_snapshot" => "pg_snapshot",
            "jsonb_build_object" => "jsonb",
            _ => "text",
        };
        planting
            .batch_execute(&format!(
                "CREATE FUNCTION trap.{function}({args}) RETURNS {returns} LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'planted {function} ran'; END $$"
            ))
            .unwrap();
    }
    let device = Role::new(
        &s,
        "victim",
        &format!("{DEVICE_GRANTS} GRANT USAGE ON SCHEMA trap TO {{role}}; ALTER ROLE {{role}} SET search_path = trap, pg_catalog, public;"),
    );
    let mut conn = device.connect(&s);
    let pulled = query_json(&mut conn, "SELECT sync_select_changes('crm', NULL, $1)", &[&json!({"token": token})]);
    assert_eq!(pulled["tables"][0]["rows"].as_array().unwrap().len(), 2);
    let edit = upload(tandem_core::identity::token_client_id(&token).unwrap(), json!([{"op": "upsert", "values": [5, 1, "new"]}]));
    let result = query_json(&mut conn, "SELECT sync_apply_changes('crm', $1, $2)", &[&edit, &json!({"token": token})]);
    assert_eq!(result["applied"], 1, "{result}");
    query_json(&mut conn, "SELECT sync_status('crm')", &[]);
    let path: String = conn.query_one("SELECT pg_catalog.current_setting('search_path')", &[]).unwrap().get(0);
    assert_eq!(path, "trap, pg_catalog, public", "the caller's search_path is put back");
}

#[test]
fn a_refusal_says_no_more_about_another_tenants_key_than_any_refusal() {
    let s = Scenario::new("existence", SCHEMA, "crm");
    let token = s.register(json!({"tenant": 1}));
    let file = s.store("a.db");
    s.sync_as(&file, &token);
    // Key 3 exists in tenant 2; key 9 exists nowhere, but the row names tenant 2.
    local(&file, "INSERT INTO customers VALUES (3, 1, 'taken elsewhere'), (9, 2, 'someone else''s')");
    let report = s.sync_as(&file, &token);
    let reasons: Vec<(String, String)> =
        report.rejected.iter().map(|r| (serde_json::to_string(&r.kind).unwrap(), r.reason.clone())).collect();
    assert_eq!(reasons.len(), 2, "{report:?}");
    assert_eq!(reasons[0], reasons[1], "both refusals read the same: {reasons:?}");
    assert!(report.rejected.iter().all(|r| r.row.is_none()), "no row of another tenant comes back: {report:?}");
}
