//! What the server trusts a caller with: nothing it may not prove. A device
//! role holds nothing but EXECUTE on the sync functions and reaches a scope
//! only with its token; an operator manages only the scopes over tables it
//! owns; a token can be rotated and revoked; the conflict policy is the
//! scope's; a planted function never runs inside a sync call; and a refusal
//! says no more about another tenant's rows than any refusal.

use postgres::Client;
use serde_json::{json, Value};
use tandem_local::SyncOptions;
use tandem_tests::local::{local, local_count, Scenario};
use tandem_tests::role::Role;
use tandem_tests::{describe, json as query_json};

const SCHEMA: &str = r#"
CREATE TABLE customers (id bigint PRIMARY KEY, tenant_id int NOT NULL, name text);
INSERT INTO customers VALUES (1, 1, 'Ada'), (2, 1, 'Bob'), (3, 2, 'Cy'), (4, 2, 'Dee');
SELECT sync_provision('crm', '{"tables": [{"name": "customers", "filter": {"tenant_id": "tenant"}}]}');
"#;

/// All a device's role holds (docs/deploy.md).
const DEVICE_GRANTS: &str = "GRANT EXECUTE ON FUNCTION sync_schema, sync_select_changes, sync_select_changes_json, \
     sync_apply_changes, sync_apply_changes_json TO {role};";

/// What an operator's role holds besides owning its tables (docs/deploy.md).
const OPERATOR_GRANTS: &str = "GRANT EXECUTE ON FUNCTION sync_provision, sync_deprovision, sync_register_client, sync_clients, \
     sync_revoke_client, sync_rotate_token, sync_status, sync_cleanup TO {role};";

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

fn options(token: &str) -> SyncOptions {
    serde_json::from_value(json!({ "token": token })).unwrap()
}

#[test]
fn a_device_role_holding_only_execute_syncs_its_partition_and_reads_nothing_else() {
    let s = Scenario::new("least_privilege", SCHEMA, "crm");
    s.server()
        .batch_execute(
            r#"CREATE TABLE audit (id bigint, name text);
               CREATE FUNCTION note() RETURNS trigger LANGUAGE plpgsql AS $$
               BEGIN INSERT INTO audit VALUES (NEW.id, NEW.name); RETURN NEW; END $$;
               CREATE TRIGGER note AFTER INSERT OR UPDATE ON customers FOR EACH ROW EXECUTE FUNCTION note();
               CREATE TABLE notes (id bigint PRIMARY KEY, body text);
               INSERT INTO notes VALUES (1, 'everyone''s');
               SELECT sync_provision('open', '{"tables": [{"name": "notes"}]}');"#,
        )
        .unwrap();
    let token = s.register(json!({"tenant": 1}));
    let device = Role::new(&s, "device", DEVICE_GRANTS);

    // A file syncs its partition through the device's role, both ways.
    let file = s.store("a.db");
    file.sync(&device.url(&s), "crm", &options(&token)).unwrap_or_else(|e| panic!("sync as the device: {e}"));
    assert_eq!(local_count(&file, "SELECT count(*) FROM customers"), 2);
    local(&file, "UPDATE customers SET name = 'Ada L' WHERE id = 1");
    let report = file.sync(&device.url(&s), "crm", &options(&token)).unwrap();
    assert_eq!(report.pushed, 1, "{report:?}");

    // The device's search_path does not reach the owner's trigger: with an
    // empty path, a temporary table named like the one the trigger writes,
    // with a trigger of its own that would make the device a superuser,
    // stays untouched; the trigger writes its own table.
    let mut conn = device.connect(&s);
    conn.batch_execute(&format!(
        "CREATE TEMP TABLE audit (id bigint, name text);
         CREATE FUNCTION pg_temp.pwn() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN EXECUTE 'ALTER ROLE {} SUPERUSER'; RETURN NULL; END $$;
         CREATE TRIGGER pwn AFTER INSERT ON pg_temp.audit FOR EACH ROW EXECUTE FUNCTION pg_temp.pwn();
         SET search_path = '';",
        device.name
    ))
    .unwrap();
    let client = tandem_core::identity::token_client_id(&token).unwrap().to_string();
    let edit = upload(&client, json!([{"op": "upsert", "values": [6, 1, "Fay"]}]));
    let result = query_json(&mut conn, "SELECT public.sync_apply_changes('crm', $1, $2)", &[&edit, &json!({"token": token})]);
    assert_eq!(result["applied"], 1, "{result}");
    let trapped: i64 = conn.query_one("SELECT count(*) FROM pg_temp.audit", &[]).unwrap().get(0);
    assert_eq!(trapped, 0, "the trigger wrote the device's temporary table");
    let superuser: bool = s.server().query_one("SELECT rolsuper FROM pg_roles WHERE rolname = $1", &[&device.name]).unwrap().get(0);
    assert!(!superuser, "the device made itself a superuser");
    conn.batch_execute("SET search_path = public").unwrap();
    let audited: i64 = s.server().query_one("SELECT count(*) FROM audit WHERE id IN (1, 6)", &[]).unwrap().get(0);
    assert_eq!(audited, 2, "the trigger's rows are in the real table");

    // Nothing else: not the tables, not Tandem's bookkeeping, not the
    // owner's functions, not a scope without filters without a token.
    for sql in [
        "SELECT * FROM customers",
        "SELECT * FROM notes",
        "SELECT * FROM tandem.clients",
        "SELECT * FROM tandem.scopes",
        "SELECT sync_status('crm')",
        "SELECT sync_clients('crm')",
        r#"SELECT sync_register_client('crm', '{"tenant": 2}')"#,
        "SELECT sync_cleanup('crm')",
        r#"SELECT sync_provision('mine', '{"tables": [{"name": "customers"}]}')"#,
    ] {
        let error = error_of(&mut conn, sql, &[]);
        assert!(error.starts_with("42501"), "{sql}: {error}");
    }
    for (scope, options) in [("open", json!({})), ("open", json!({"client_id": "x"})), ("crm", json!({"params": {"tenant": 2}}))] {
        let error = error_of(&mut conn, "SELECT sync_select_changes($1, NULL, $2)", &[&scope, &options]);
        assert!(error.starts_with("28000"), "{scope} {options}: {error}");
    }
    let error = error_of(&mut conn, "SELECT sync_select_changes('crm', NULL, $1)", &[&json!({"token": token, "params": {"tenant": 2}})]);
    assert!(error.starts_with("22023") && error.contains("bound to parameters"), "{error}");
}

#[test]
fn an_operator_manages_only_the_scopes_over_tables_it_owns() {
    let s = Scenario::new("operator", SCHEMA, "crm");
    s.server().batch_execute("CREATE TABLE orders (id bigint PRIMARY KEY, tenant_id int NOT NULL)").unwrap();
    let operator = Role::new(&s, "operator", &format!("{OPERATOR_GRANTS} ALTER TABLE orders OWNER TO {{role}};"));
    let mut conn = operator.connect(&s);

    query_json(&mut conn, r#"SELECT sync_provision('shop', '{"tables": [{"name": "orders", "filter": {"tenant_id": "tenant"}}]}')"#, &[]);
    let issued = query_json(&mut conn, r#"SELECT sync_register_client('shop', '{"tenant": 1}')"#, &[]);
    let client = issued["client_id"].as_str().unwrap().to_string();
    assert_eq!(query_json(&mut conn, "SELECT sync_clients('shop')", &[])[0]["client_id"], client.as_str());
    assert_eq!(query_json(&mut conn, "SELECT sync_status('shop')", &[])["tables"][0]["name"], "public.orders");
    query_json(&mut conn, "SELECT sync_cleanup('shop')", &[]);
    query_json(&mut conn, "SELECT sync_rotate_token('shop', $1)", &[&client]);

    // Another role's table, another role's scope: refused, naming why.
    let error = error_of(&mut conn, r#"SELECT sync_provision('steal', '{"tables": [{"name": "customers"}]}')"#, &[]);
    assert!(error.starts_with("42501") && error.contains("customers"), "{error}");
    let error = error_of(&mut conn, r#"SELECT sync_provision('crm', '{"tables": [{"name": "orders"}]}')"#, &[]);
    assert!(error.starts_with("42501") && error.contains("does not own scope \"crm\""), "{error}");
    for sql in [
        "SELECT sync_status('crm')",
        "SELECT sync_clients('crm')",
        r#"SELECT sync_register_client('crm', '{"tenant": 2}')"#,
        "SELECT sync_cleanup('crm')",
        "SELECT sync_revoke_client('crm', 'someone')",
        "SELECT sync_rotate_token('crm', 'someone')",
        "SELECT sync_deprovision('crm')",
    ] {
        let error = error_of(&mut conn, sql, &[]);
        assert!(error.starts_with("42501") && error.contains("does not own scope \"crm\""), "{sql}: {error}");
    }
    let scopes: i64 = s.server().query_one("SELECT count(*) FROM tandem.scopes WHERE name IN ('crm', 'shop')", &[]).unwrap().get(0);
    assert_eq!(scopes, 2);
    // A resolver it may not execute is not its to name.
    s.server()
        .batch_execute("CREATE FUNCTION private_resolver(jsonb) RETURNS jsonb LANGUAGE sql AS 'SELECT $1'; REVOKE ALL ON FUNCTION private_resolver(jsonb) FROM PUBLIC")
        .unwrap();
    let error = error_of(
        &mut conn,
        r#"SELECT sync_provision('shop', '{"policy": "public.private_resolver", "tables": [{"name": "orders", "filter": {"tenant_id": "tenant"}}]}')"#,
        &[],
    );
    assert!(error.starts_with("22023") && error.contains("EXECUTE"), "{error}");
    // Its scope's name, deprovisioned, is not another role's to take with
    // the clients registered under it.
    conn.batch_execute("SELECT sync_deprovision('shop')").unwrap();
    let other = Role::new(
        &s,
        "other",
        &format!("{OPERATOR_GRANTS} CREATE TABLE theirs (id int PRIMARY KEY, tenant_id int); ALTER TABLE theirs OWNER TO {{role}};"),
    );
    let error = error_of(
        &mut other.connect(&s),
        r#"SELECT sync_provision('shop', '{"tables": [{"name": "theirs", "filter": {"tenant_id": "tenant"}}]}')"#,
        &[],
    );
    assert!(error.starts_with("42501") && error.contains(&operator.name), "{error}");
    // Those registrations stay the operator's to list and revoke, and
    // nobody else's; once revoked, the name is free.
    let error = error_of(&mut other.connect(&s), "SELECT sync_clients('shop')", &[]);
    assert!(error.starts_with("42501") && error.contains(&operator.name), "{error}");
    assert_eq!(query_json(&mut conn, "SELECT sync_clients('shop')", &[])[0]["client_id"], client.as_str());
    let revoked: bool = conn.query_one("SELECT sync_revoke_client('shop', $1)", &[&client]).unwrap().get(0);
    assert!(revoked);
    query_json(
        &mut other.connect(&s),
        r#"SELECT sync_provision('shop', '{"tables": [{"name": "theirs", "filter": {"tenant_id": "tenant"}}]}')"#,
        &[],
    );
}

#[test]
fn the_owners_triggers_and_checks_run_with_the_owners_rights_not_the_extensions() {
    let s = Scenario::new("owner_rights", "SELECT 1", "shop");
    let operator = Role::new(&s, "owner", &format!("{OPERATOR_GRANTS} GRANT CREATE ON SCHEMA public TO {{role}};"));
    operator
        .connect(&s)
        .batch_execute(
            r#"CREATE TABLE seen (what text, who text);
               CREATE FUNCTION checked(int) RETURNS boolean LANGUAGE plpgsql AS $$
               BEGIN INSERT INTO seen VALUES ('check', current_user); RETURN true; END $$;
               CREATE DOMAIN tenant_id AS int CHECK (checked(VALUE));
               CREATE TABLE orders (id bigint PRIMARY KEY, tenant tenant_id NOT NULL, note text);
               CREATE FUNCTION noted() RETURNS trigger LANGUAGE plpgsql AS $$
               BEGIN INSERT INTO seen VALUES ('trigger', current_user); RETURN NEW; END $$;
               CREATE TRIGGER noted AFTER INSERT ON orders FOR EACH ROW EXECUTE FUNCTION noted();
               INSERT INTO orders VALUES (1, 1, 'first');
               SELECT sync_provision('shop', '{"tables": [{"name": "orders", "filter": {"tenant": "tenant"}}]}');"#,
        )
        .unwrap();
    let token = query_json(&mut operator.connect(&s), r#"SELECT sync_register_client('shop', '{"tenant": 1}')"#, &[])["token"]
        .as_str()
        .unwrap()
        .to_string();
    let device = Role::new(&s, "buyer", DEVICE_GRANTS);
    let file = s.store("a.db");
    file.sync(&device.url(&s), "shop", &options(&token)).unwrap_or_else(|e| panic!("first sync: {e}"));
    local(&file, "INSERT INTO orders VALUES (2, 1, 'second')");
    let report = file.sync(&device.url(&s), "shop", &options(&token)).unwrap_or_else(|e| panic!("upload: {e}"));
    assert_eq!(report.pushed, 1, "{report:?}");
    let who: Vec<(String, String)> =
        s.server().query("SELECT DISTINCT what, who FROM seen ORDER BY 1, 2", &[]).unwrap().iter().map(|r| (r.get(0), r.get(1))).collect();
    assert!(who.iter().any(|(what, _)| what == "trigger"), "{who:?}");
    assert!(who.iter().all(|(_, role)| *role == operator.name), "the owner's code ran as another role: {who:?}");
    let superuser: bool = s.server().query_one("SELECT rolsuper FROM pg_roles WHERE rolname = $1", &[&operator.name]).unwrap().get(0);
    assert!(!superuser);
}

#[test]
fn a_rotated_token_keeps_the_devices_unsent_changes_and_a_revoked_one_is_refused_at_once() {
    let s = Scenario::new("tokens", SCHEMA, "crm");
    let token = s.register(json!({"tenant": 1}));
    let client = tandem_core::identity::token_client_id(&token).unwrap().to_string();
    let file = s.store("a.db");
    s.sync_as(&file, &token);
    local(&file, "UPDATE customers SET name = 'offline edit' WHERE id = 1");

    let rotated = query_json(&mut s.server(), "SELECT sync_rotate_token('crm', $1)", &[&client]);
    assert_eq!(rotated["client_id"], client.as_str());
    let new_token = rotated["token"].as_str().unwrap().to_string();
    let error = file.sync(&s.db.url, "crm", &options(&token)).unwrap_err().to_string();
    assert!(error.contains("invalid token"), "the old token is refused: {error}");
    let report = s.sync_as(&file, &new_token);
    assert_eq!(report.pushed, 1, "the edit made before the rotation is sent: {report:?}");
    let name: String = s.server().query_one("SELECT name FROM customers WHERE id = 1", &[]).unwrap().get(0);
    assert_eq!(name, "offline edit");

    let clients = query_json(&mut s.server(), "SELECT sync_clients('crm')", &[]);
    assert!(clients[0]["last_seen"].is_string(), "{clients}");
    assert_eq!(clients[0]["replicas"].as_array().unwrap().len(), 1, "{clients}");
    let revoked: bool = s.server().query_one("SELECT sync_revoke_client('crm', $1)", &[&client]).unwrap().get(0);
    assert!(revoked);
    let error = file.sync(&s.db.url, "crm", &options(&new_token)).unwrap_err().to_string();
    assert!(error.contains("invalid token"), "a revoked token is refused at once: {error}");
    assert_eq!(query_json(&mut s.server(), "SELECT sync_clients('crm')", &[]), json!([]));
    let error = error_of(&mut s.server(), "SELECT sync_rotate_token('crm', $1)", &[&client]);
    assert!(error.starts_with("42704") && error.contains("sync_clients"), "{error}");

    // The revoked client's file, with an edit made meanwhile, syncs again as
    // a newly registered client once told to: the edit goes up.
    local(&file, "UPDATE customers SET name = 'after revocation' WHERE id = 2");
    let registered = s.register(json!({"tenant": 1}));
    let error = file.sync(&s.db.url, "crm", &options(&registered)).unwrap_err().to_string();
    assert!(error.contains("--rebind"), "{error}");
    let rebind: SyncOptions = serde_json::from_value(json!({"token": registered, "rebind": true})).unwrap();
    let report = file.sync(&s.db.url, "crm", &rebind).unwrap_or_else(|e| panic!("rebind: {e}"));
    assert!(report.resynced, "{report:?}");
    let name: String = s.server().query_one("SELECT name FROM customers WHERE id = 2", &[]).unwrap().get(0);
    assert_eq!(name, "after revocation", "{report:?}");
}

/// Helper 98 (MEDIUM): a client revoked while its upload ran; the upload
/// committed after the revoke and recorded the client's visit, which made
/// the client again (unregistered, so `sync_rotate_token` would have given
/// it a new token). A call under way when its client is revoked now fails
/// as a revoked token does, and the file keeps what it sent.
#[test]
fn a_client_revoked_while_its_upload_runs_stays_revoked_and_keeps_its_changes() {
    let s = Scenario::new("revoked_mid_upload", SCHEMA, "crm");
    s.server()
        .batch_execute(
            "CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS $$              BEGIN IF NEW.name = 'slow' THEN PERFORM pg_sleep(1.5); END IF; RETURN NEW; END $$;              CREATE TRIGGER slow BEFORE UPDATE ON customers FOR EACH ROW EXECUTE FUNCTION slow();",
        )
        .unwrap();
    let token = s.register(json!({"tenant": 1}));
    let client = tandem_core::identity::token_client_id(&token).unwrap().to_string();
    let file = s.store("a.db");
    s.sync_as(&file, &token);
    local(&file, "UPDATE customers SET name = 'slow' WHERE id = 1");
    let (url, path, uploading) = (s.db.url.clone(), s.files.path("a.db"), token.clone());
    let upload = std::thread::spawn(move || {
        let file = tandem_local::Store::open(&path).unwrap();
        file.sync(&url, "crm", &options(&uploading)).map(|report| format!("{report:?}")).map_err(|e| e.to_string())
    });
    std::thread::sleep(std::time::Duration::from_millis(500));
    let revoked: bool = s.server().query_one("SELECT sync_revoke_client('crm', $1)", &[&client]).unwrap().get(0);
    assert!(revoked);
    let error = upload.join().unwrap().expect_err("the upload under way fails once its client is revoked");
    assert!(error.contains("invalid token"), "{error}");
    assert_eq!(query_json(&mut s.server(), "SELECT sync_clients('crm')", &[]), json!([]), "the client stays revoked");
    let name: String = s.server().query_one("SELECT name FROM customers WHERE id = 1", &[]).unwrap().get(0);
    assert_eq!(name, "Ada", "nothing of the revoked client's upload is kept");
    assert_eq!(local_count(&file, "SELECT count(*) FROM customers WHERE id = 1 AND name = 'slow'"), 1, "the file keeps its edit");
}

#[test]
fn a_file_pointed_at_another_database_refuses_unless_rebound() {
    let s = Scenario::new("moved", SCHEMA, "crm");
    let elsewhere = Scenario::new("moved_to", SCHEMA, "crm");
    let file = s.store("a.db");
    s.sync(&file, json!({"params": {"tenant": 1}}));
    local(&file, "UPDATE customers SET name = 'unsent' WHERE id = 1");
    let error =
        file.sync(&elsewhere.db.url, "crm", &serde_json::from_value(json!({"params": {"tenant": 1}})).unwrap()).unwrap_err().to_string();
    assert!(error.contains("another server or database") && error.contains("--rebind"), "{error}");
    let untouched: String = elsewhere.server().query_one("SELECT name FROM customers WHERE id = 1", &[]).unwrap().get(0);
    assert_eq!(untouched, "Ada", "nothing went to the other database");
    let report = elsewhere.sync(&file, json!({"params": {"tenant": 1}, "rebind": true}));
    assert!(report.resynced, "{report:?}");
    assert_eq!(local_count(&file, "SELECT count(*) FROM customers"), 2);
    // And back, without --rebind: the file now belongs to the other one.
    let error = file.sync(&s.db.url, "crm", &serde_json::from_value(json!({"params": {"tenant": 1}})).unwrap()).unwrap_err().to_string();
    assert!(error.contains("--rebind"), "{error}");
}

#[test]
fn the_owners_types_and_settings_never_run_or_stay_with_the_extensions_rights() {
    let s = Scenario::new("owner_types", "SELECT 1", "rng");
    let operator = Role::new(&s, "typist", &format!("{OPERATOR_GRANTS} GRANT CREATE ON SCHEMA public TO {{role}};"));
    operator
        .connect(&s)
        .batch_execute(
            r#"CREATE TABLE seen (what text, who text, path text);
               CREATE FUNCTION saw(what text) RETURNS void LANGUAGE plpgsql AS $$
               BEGIN INSERT INTO public.seen VALUES (what, current_user, current_setting('search_path')); END $$;
               -- a cast to json the tracking trigger meets on the filter column
               CREATE TYPE tier AS ENUM ('t1', 't2');
               CREATE FUNCTION tier_json(tier) RETURNS json LANGUAGE plpgsql AS $$
               BEGIN PERFORM public.saw('cast'); RETURN to_json($1::text); END $$;
               CREATE CAST (tier AS json) WITH FUNCTION tier_json(tier);
               CREATE TABLE notes (id int PRIMARY KEY, tier tier NOT NULL, body text);
               INSERT INTO notes VALUES (1, 't1', 'a'), (2, 't2', 'b');
               -- a range whose subtype_diff ANALYZE calls
               CREATE FUNCTION diff(a int4, b int4) RETURNS float8 LANGUAGE plpgsql IMMUTABLE AS $$
               BEGIN PERFORM public.saw('diff'); RETURN (a - b)::float8; END $$;
               CREATE TYPE irange AS RANGE (subtype = int4, subtype_diff = diff);
               CREATE TABLE spans (k irange PRIMARY KEY, v text);
               INSERT INTO spans SELECT irange(g, g + 5), 'x' FROM generate_series(1, 50) g;
               -- a trigger that sets a session-wide setting, and fails on demand
               CREATE FUNCTION noisy() RETURNS trigger LANGUAGE plpgsql AS $$
               BEGIN
                 PERFORM public.saw('trigger');
                 PERFORM set_config('application_name', 'owner was here', false);
                 IF NEW.body = 'boom' THEN RAISE EXCEPTION 'boom' USING ERRCODE = '40001'; END IF;
                 RETURN NEW;
               END $$;
               CREATE TRIGGER noisy AFTER INSERT ON notes FOR EACH ROW EXECUTE FUNCTION noisy();
               SELECT sync_provision('rng', '{"tables": [{"name": "spans", "direction": "download_only"}]}');
               SELECT sync_provision('tiers', '{"tables": [{"name": "notes", "filter": {"tier": "tier"}}]}');
               DELETE FROM notes WHERE id = 2;"#,
        )
        .unwrap();
    let token = query_json(&mut operator.connect(&s), r#"SELECT sync_register_client('tiers', '{"tier": "t1"}')"#, &[])["token"]
        .as_str()
        .unwrap()
        .to_string();
    let device = Role::new(&s, "reader", DEVICE_GRANTS);
    let mut conn = device.connect(&s);
    let client = tandem_core::identity::token_client_id(&token).unwrap().to_string();
    let tiers = |rows: Value| {
        json!({"format": 1, "scope": "tiers", "origin": client,
               "tables": [{"name": "public.notes", "columns": ["id", "tier", "body"], "rows": rows}]})
    };
    // An apply the owner's trigger fails as a whole, then one that passes,
    // in the same session.
    let error = error_of(
        &mut conn,
        "SELECT sync_apply_changes('tiers', $1, $2)",
        &[&tiers(json!([{"op": "upsert", "values": [3, "t1", "boom"]}])), &json!({"token": token})],
    );
    assert!(error.starts_with("40001"), "{error}");
    let result = query_json(
        &mut conn,
        "SELECT sync_apply_changes('tiers', $1, $2)",
        &[&tiers(json!([{"op": "upsert", "values": [4, "t1", "fine"]}])), &json!({"token": token})],
    );
    assert_eq!(result["applied"], 1, "{result}");
    let name: String = conn.query_one("SELECT current_setting('application_name')", &[]).unwrap().get(0);
    assert_ne!(name, "owner was here", "a setting the owner's trigger made outlived the call");

    let seen: Vec<(String, String, String)> =
        s.server().query("SELECT what, who, path FROM seen", &[]).unwrap().iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect();
    for what in ["cast", "diff", "trigger"] {
        assert!(seen.iter().any(|(w, _, _)| w == what) || what == "diff", "{what} never ran: {seen:?}");
    }
    assert!(seen.iter().all(|(_, who, _)| *who == operator.name), "the owner's code ran as another role: {seen:?}");
    let last_trigger = seen.iter().rev().find(|(w, _, _)| w == "trigger").unwrap();
    assert!(last_trigger.2.contains("public"), "after a failed apply the trigger lost its owner's path: {seen:?}");
    let superuser: bool = s.server().query_one("SELECT rolsuper FROM pg_roles WHERE rolname = $1", &[&operator.name]).unwrap().get(0);
    assert!(!superuser);
}

#[test]
fn another_roles_code_finds_no_way_in_through_a_scope_it_does_not_own() {
    let s = Scenario::new("third_attack", "SELECT 1", "parts");
    let owner = Role::new(&s, "partowner", &format!("{OPERATOR_GRANTS} GRANT CREATE ON SCHEMA public TO {{role}};"));
    let other = Role::new(&s, "intruder", &format!("{OPERATOR_GRANTS} GRANT CREATE ON SCHEMA public TO {{role}};"));
    owner
        .connect(&s)
        .batch_execute(
            r#"CREATE TABLE events (id int, tenant int NOT NULL, body text, PRIMARY KEY (id, tenant)) PARTITION BY LIST (tenant);
               CREATE TABLE events_1 PARTITION OF events FOR VALUES IN (1);
               INSERT INTO events VALUES (1, 1, 'a'), (2, 1, 'b');
               SELECT sync_provision('parts', '{"tables": [{"name": "events", "filter": {"tenant": "tenant"}}]}');"#,
        )
        .unwrap();
    let id: i64 = s.server().query_one("SELECT id FROM tandem.scope_tables WHERE scope = 'parts'", &[]).unwrap().get(0);

    // Its tracking is its owner's: ANALYZE, autovacuum's too, runs the key
    // types' functions as the owner.
    let owners: Vec<String> = s
        .server()
        .query(
            "SELECT DISTINCT pg_get_userbyid(relowner)::text FROM pg_class WHERE oid IN (to_regclass($1), to_regclass($2), to_regclass($3))",
            &[&format!("tandem.track_{id}"), &format!("tandem.log_{id}"), &format!("tandem.exit_{id}")],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(owners, std::slice::from_ref(&owner.name));

    // A relation of another role's carrying a trigger named like Tandem's is
    // not taken for a detached partition when the owner adds one.
    other
        .connect(&s)
        .batch_execute(&format!(
            r#"CREATE TABLE decoy (id int, tenant int, body text);
               INSERT INTO decoy VALUES (1, 1, 'fake'), (2, 1, 'fake');
               CREATE FUNCTION nothing() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;
               CREATE TRIGGER tandem_{id}_insert AFTER INSERT ON decoy FOR EACH STATEMENT EXECUTE FUNCTION nothing();
               GRANT SELECT ON decoy TO PUBLIC;"#
        ))
        .unwrap();
    owner.connect(&s).batch_execute("CREATE TABLE events_2 PARTITION OF events FOR VALUES IN (2)").unwrap();
    let exits: i64 = s.server().query_one(&format!("SELECT count(*) FROM tandem.exit_{id}"), &[]).unwrap().get(0);
    assert_eq!(exits, 0, "the decoy's rows were taken for rows that left the table");
    let token = query_json(&mut owner.connect(&s), r#"SELECT sync_register_client('parts', '{"tenant": 1}')"#, &[])["token"]
        .as_str()
        .unwrap()
        .to_string();
    let device = Role::new(&s, "partdev", DEVICE_GRANTS);
    let file = s.store("a.db");
    file.sync(&device.url(&s), "parts", &options(&token)).unwrap_or_else(|e| panic!("sync: {e}"));
    assert_eq!(local_count(&file, "SELECT count(*) FROM events"), 2, "the tenant's rows are all there");

    // A superuser's session does not run the owner's code (it could leave a
    // deferred trigger or a temporary object behind that runs as the superuser).
    let error = error_of(&mut s.server(), "SELECT sync_status('parts')", &[]);
    assert!(error.starts_with("42501") && error.contains("connect as its owner"), "{error}");
    // Nor after SET ROLE: the session stays a superuser's, and what the
    // owner's code left in it would run as the superuser once reset.
    let mut as_owner = s.server();
    as_owner.batch_execute(&format!("SET ROLE {}", owner.name)).unwrap();
    let error = error_of(&mut as_owner, "SELECT sync_status('parts')", &[]);
    assert!(error.starts_with("42501"), "{error}");
    // Nor after SET SESSION AUTHORIZATION, which moves the session's role
    // and not the role it logged in as.
    let mut as_owner = s.server();
    as_owner.batch_execute(&format!("SET SESSION AUTHORIZATION {}", owner.name)).unwrap();
    let error = error_of(&mut as_owner, "SELECT sync_status('parts')", &[]);
    assert!(error.starts_with("42501") && error.contains("SET SESSION AUTHORIZATION"), "{error}");
    query_json(&mut owner.connect(&s), "SELECT sync_status('parts')", &[]);

    // Another role's SECURITY DEFINER code, run by the owner's trigger
    // inside a sync, does not act for the owner.
    other
        .connect(&s)
        .batch_execute(
            r#"CREATE TABLE loot (what text);
               CREATE FUNCTION peek() RETURNS text LANGUAGE plpgsql SECURITY DEFINER AS $$
               BEGIN
                 BEGIN INSERT INTO public.loot SELECT sync_status('parts')::text;
                 EXCEPTION WHEN insufficient_privilege THEN INSERT INTO public.loot VALUES ('refused'); END;
                 RETURN 'peeked';
               END $$;
               GRANT EXECUTE ON FUNCTION peek() TO PUBLIC;"#,
        )
        .unwrap();
    owner
        .connect(&s)
        .batch_execute(&format!(
            "ALTER TABLE events ALTER COLUMN body SET DEFAULT {}.peek(); GRANT USAGE ON SCHEMA public TO {}",
            "public", other.name
        ))
        .unwrap();
    let client = tandem_core::identity::token_client_id(&token).unwrap().to_string();
    let insert = json!({"format": 1, "scope": "parts", "origin": client,
        "tables": [{"name": "public.events", "columns": ["id", "tenant"], "rows": [{"op": "upsert", "values": [3, 1]}]}]});
    let result = query_json(&mut device.connect(&s), "SELECT sync_apply_changes('parts', $1, $2)", &[&insert, &json!({"token": token})]);
    assert_eq!(result["applied"], 1, "{result}");
    let loot: Vec<String> = s.server().query("SELECT what FROM loot", &[]).unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(loot, ["refused"], "another role's code acted for the scope's owner");
}

#[test]
fn a_role_made_anew_under_a_dropped_roles_name_does_not_inherit_its_clients() {
    let s = Scenario::new("role_reuse", "CREATE TABLE orders (id bigint PRIMARY KEY, tenant_id int NOT NULL)", "shop");
    let operator = Role::new(&s, "reused", &format!("{OPERATOR_GRANTS} ALTER TABLE orders OWNER TO {{role}};"));
    let mut conn = operator.connect(&s);
    query_json(&mut conn, r#"SELECT sync_provision('shop', '{"tables": [{"name": "orders", "filter": {"tenant_id": "tenant"}}]}')"#, &[]);
    let token =
        query_json(&mut conn, r#"SELECT sync_register_client('shop', '{"tenant": 1}')"#, &[])["token"].as_str().unwrap().to_string();
    conn.batch_execute("SELECT sync_deprovision('shop')").unwrap();
    drop(conn);

    // The role goes, and another is made under its name: it is not the
    // role that registered the scope's clients, whatever it is called.
    s.server()
        .batch_execute(&format!(
            "DROP OWNED BY {0}; DROP ROLE {0}; CREATE ROLE {0} LOGIN; {1} \
             CREATE TABLE others (id bigint PRIMARY KEY, tenant_id int NOT NULL); ALTER TABLE others OWNER TO {0}; \
             INSERT INTO others VALUES (1, 1);",
            operator.name,
            OPERATOR_GRANTS.replace("{role}", &operator.name)
        ))
        .unwrap();
    let mut conn = operator.connect(&s);
    let error =
        error_of(&mut conn, r#"SELECT sync_provision('shop', '{"tables": [{"name": "others", "filter": {"tenant_id": "tenant"}}]}')"#, &[]);
    assert!(error.starts_with("42501") && error.contains("no longer exists"), "{error}");
    let device = Role::new(&s, "device", DEVICE_GRANTS);
    let error = error_of(&mut device.connect(&s), "SELECT sync_select_changes('shop', NULL, $1)", &[&json!({"token": token})]);
    assert!(!error.is_empty(), "the old token reaches nothing: {error}");
}

#[test]
fn a_device_cannot_tell_whether_a_scope_it_may_not_reach_exists() {
    let s = Scenario::new("scope_names", SCHEMA, "crm");
    s.server()
        .batch_execute(r#"CREATE TABLE notes (id int PRIMARY KEY); SELECT sync_provision('other', '{"tables": [{"name": "notes"}]}')"#)
        .unwrap();
    let token = s.register(json!({"tenant": 1}));
    let device = Role::new(&s, "device", DEVICE_GRANTS);
    let mut conn = device.connect(&s);
    let bare = |e: String| e.split(':').next().unwrap_or_default().replace("\"other\"", "S").replace("\"nosuch\"", "S");
    for (options, expected) in [(json!({"token": token}), "28000"), (json!({}), "28000")] {
        let existing = error_of(&mut conn, "SELECT sync_select_changes('other', NULL, $1)", &[&options]);
        let missing = error_of(&mut conn, "SELECT sync_select_changes('nosuch', NULL, $1)", &[&options]);
        assert!(existing.starts_with(expected), "{existing}");
        assert_eq!(bare(existing.clone()), bare(missing.clone()), "{existing} / {missing}");
        let schema_missing = error_of(&mut conn, "SELECT sync_schema('nosuch', $1)", &[&options]);
        assert!(schema_missing.starts_with(expected), "{schema_missing}");
        let upload = json!({"format": 1, "scope": "nosuch", "origin": "x", "tables": []});
        let apply_missing = error_of(&mut conn, "SELECT sync_apply_changes('nosuch', $1, $2)", &[&upload, &options]);
        assert!(apply_missing.starts_with(expected), "{apply_missing}");
    }
    // The owner is told.
    let error = error_of(&mut s.server(), "SELECT sync_select_changes('nosuch', NULL, '{}')", &[]);
    assert!(error.starts_with("42704"), "{error}");
}

/// A table's code runs with the scope owner's rights in a sync, so a
/// superuser's scope over a table another role owns would hand that role's
/// triggers a superuser's rights: refused at provisioning, and when the
/// table is given to another role later.
#[test]
fn a_table_owners_code_never_gains_the_rights_of_the_scopes_owner() {
    let s = Scenario::new("owner_escalation", "SELECT 1", "shop");
    let owner = Role::new(&s, "tableowner", &format!("{OPERATOR_GRANTS} GRANT CREATE ON SCHEMA public TO {{role}};"));
    s.server()
        .batch_execute(&format!(
            "SET ROLE {0};
             CREATE TABLE orders (id bigint PRIMARY KEY, tenant int NOT NULL, note text);
             CREATE FUNCTION promote() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
                 EXECUTE format('ALTER ROLE %I SUPERUSER', '{0}'); END IF; RETURN NEW; END $$;
             CREATE TRIGGER promote BEFORE INSERT OR UPDATE ON orders FOR EACH ROW EXECUTE FUNCTION promote();
             RESET ROLE;",
            owner.name
        ))
        .unwrap();
    let setup = r#"SELECT sync_provision('shop', '{"tables": [{"name": "orders", "filter": {"tenant": "tenant"}}]}')"#;
    let error = error_of(&mut s.server(), setup, &[]);
    assert!(error.contains("orders") && error.contains(&owner.name) && error.contains("a session of its own"), "{error}");

    // Provisioned by the table's owner, the scope is fine; given to a
    // role without its owner's rights, the table is refused.
    let mut as_owner = owner.connect(&s);
    as_owner.batch_execute(setup).unwrap();
    let other = Role::new(&s, "other", "");
    let error = error_of(&mut s.server(), &format!("ALTER TABLE orders OWNER TO {}", other.name), &[]);
    assert!(error.contains("orders") && error.contains(&other.name), "{error}");
    let superuser: bool = s.server().query_one("SELECT rolsuper FROM pg_roles WHERE rolname = $1", &[&owner.name]).unwrap().get(0);
    assert!(!superuser);
}

#[test]
fn a_retried_upload_is_acknowledged_when_the_scope_owner_is_no_superuser() {
    // The answer to an upload is lost and the device sends it again: the
    // retry reads what the first attempt logged, which the scope's owner
    // (whose rights the apply's user code runs with) may not read.
    let s = Scenario::new("owner_retry", "SELECT 1", "crm");
    let operator = Role::new(&s, "retried", &format!("{OPERATOR_GRANTS} GRANT CREATE ON SCHEMA public TO {{role}};"));
    operator
        .connect(&s)
        .batch_execute(&SCHEMA.replace("INSERT INTO customers VALUES (1, 1, 'Ada'), (2, 1, 'Bob'), (3, 2, 'Cy'), (4, 2, 'Dee');", ""))
        .unwrap();
    let token = query_json(&mut operator.connect(&s), r#"SELECT sync_register_client('crm', '{"tenant": 1}')"#, &[])["token"]
        .as_str()
        .unwrap()
        .to_string();
    let client = tandem_core::identity::token_client_id(&token).unwrap().to_string();
    let device = Role::new(&s, "retrier", DEVICE_GRANTS);
    let mut conn = device.connect(&s);
    let changeset = upload(&client, json!([{"op": "upsert", "values": [5, 1, "Eve"], "seq": 1}]));
    let options = json!({"token": token, "upload_id": "lost-answer"});
    let first = query_json(&mut conn, "SELECT sync_apply_changes('crm', $1, $2)", &[&changeset, &options]);
    assert_eq!(first["applied"], 1, "{first}");
    let again = conn.query_one("SELECT sync_apply_changes('crm', $1, $2)::text", &[&changeset, &options]);
    let again: Value =
        serde_json::from_str(&again.map_err(|e| describe(&e)).unwrap_or_else(|e| panic!("the retry failed: {e}")).get::<_, String>(0))
            .unwrap();
    assert_eq!((again["applied"].clone(), again["conflicts"].clone()), (json!(0), json!([])), "acknowledged, not applied twice: {again}");
    assert_eq!(again["versions"][0]["key"], json!([5]), "{again}");
}

#[test]
fn a_device_role_whose_search_path_leaves_out_the_extension_is_told_so() {
    let s = Scenario::new("off_path", SCHEMA, "crm");
    let token = s.register(json!({"tenant": 1}));
    let device = Role::new(&s, "device", &format!("{DEVICE_GRANTS} ALTER ROLE {{role}} SET search_path = pg_catalog;"));
    let file = s.store("a.db");
    let error = file.sync(&device.url(&s), "crm", &options(&token)).unwrap_err();
    assert!(!error.is_extension_missing(), "{error}");
    let text = error.to_string();
    assert!(text.contains("installed in schema \"public\"") && text.contains("search_path (pg_catalog)"), "{text}");
}

#[test]
fn only_a_servers_delete_may_say_its_key_changed_its_text() {
    let s = Scenario::new("respelled_upload", SCHEMA, "crm");
    let mut server = s.server();
    // Any value, null too: the field is the server's to send.
    for respelled in [json!(true), json!(false), json!(null)] {
        let forged = upload("dev", json!([{"op": "delete", "respelled": respelled, "seq": 1, "key": [1]}]));
        let error = error_of(&mut server, "SELECT sync_apply_changes('crm', $1, $2)", &[&forged, &json!({"params": {"tenant": 1}})]);
        assert!(error.starts_with("22P02") && error.contains("respelled"), "{respelled}: {error}");
    }
    // So is a row's version.
    for row in [
        json!({"op": "delete", "version": "7", "seq": 1, "key": [1]}),
        json!({"op": "upsert", "version": "7", "seq": 1, "values": [1, 1, "x"]}),
        // Even null (helper 64).
        json!({"op": "upsert", "version": null, "seq": 1, "values": [1, 1, "x"]}),
    ] {
        let forged = upload("dev", json!([row]));
        let error = error_of(&mut server, "SELECT sync_apply_changes('crm', $1, $2)", &[&forged, &json!({"params": {"tenant": 1}})]);
        assert!(error.starts_with("22P02") && error.contains("\"version\""), "{row}: {error}");
    }
    let left: i64 = server.query_one("SELECT count(*) FROM customers WHERE id = 1", &[]).unwrap().get(0);
    assert_eq!(left, 1, "nothing applied");
}

#[test]
fn an_upload_under_session_replication_role_replica_is_refused_not_left_untracked() {
    let s = Scenario::new("replica_role", SCHEMA, "crm");
    let mut server = s.server();
    let row = upload("dev", json!([{"op": "upsert", "seq": 1, "values": [5, 1, "Eve"]}]));
    let tenant = json!({"params": {"tenant": 1}});
    // Tandem's triggers, and foreign keys, do not fire in this mode: the
    // row would be written and reach no device.
    server.batch_execute("SET session_replication_role = replica").unwrap();
    let error = error_of(&mut server, "SELECT sync_apply_changes('crm', $1, $2)", &[&row, &tenant]);
    assert!(error.starts_with("55000") && error.contains("session_replication_role"), "{error}");
    let written: i64 = server.query_one("SELECT count(*) FROM customers WHERE id = 5", &[]).unwrap().get(0);
    assert_eq!(written, 0, "nothing applied");
    server.batch_execute("RESET session_replication_role").unwrap();
    query_json(&mut server, "SELECT sync_apply_changes('crm', $1, $2)", &[&row, &tenant]);
    let pulled = query_json(&mut server, "SELECT sync_select_changes('crm', NULL, $1)", &[&tenant]);
    let ids: Vec<i64> = pulled["tables"][0]["rows"].as_array().unwrap().iter().map(|r| r["values"][0].as_i64().unwrap()).collect();
    assert_eq!(ids, [1, 2, 5], "sent again, it is tracked and reaches devices");
}

#[test]
fn a_callers_deferred_trigger_never_runs_with_the_scope_owners_rights() {
    let s = Scenario::new("deferred_bait", SCHEMA, "crm");
    let token = s.register(json!({"tenant": 1}));
    let device = Role::new(&s, "device", DEVICE_GRANTS);
    let mut conn = device.connect(&s);
    // Any role may make temporary objects: a constraint trigger whose
    // check waits for the end of the transaction, here inside a sync call.
    conn.batch_execute(
        "CREATE FUNCTION pg_temp.bait() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN UPDATE public.customers SET name = 'taken' WHERE id = 3; RETURN NULL; END $$;
         CREATE TEMP TABLE bait (x int);
         CREATE CONSTRAINT TRIGGER bait AFTER INSERT ON pg_temp.bait DEFERRABLE INITIALLY DEFERRED
           FOR EACH ROW EXECUTE FUNCTION pg_temp.bait();",
    )
    .unwrap();
    for call in ["SELECT sync_select_changes('crm', NULL, $1)::text", "SELECT sync_schema('crm', $1)::text"] {
        let mut tx = conn.transaction().unwrap();
        tx.batch_execute("INSERT INTO pg_temp.bait VALUES (1)").unwrap();
        let outcome = tx.query_one(call, &[&json!({"token": token})]).and_then(|_| tx.commit());
        let error = describe(&outcome.unwrap_err());
        assert!(error.starts_with("42501") && error.contains("customers"), "{call}: it runs as the device, which may not: {error}");
    }
    let name: String = s.server().query_one("SELECT name FROM customers WHERE id = 3", &[]).unwrap().get(0);
    assert_eq!(name, "Cy", "another tenant's row is untouched");
}

#[test]
fn a_table_whose_policies_bind_its_owner_is_refused_not_synced_in_part() {
    let s = Scenario::new("forced_rls", SCHEMA, "crm");
    let token = s.register(json!({"tenant": 1}));
    let mut server = s.server();
    // FORCE makes the owner, whose rights a sync runs with, subject to the
    // policies: a pull would hide rows, and a delete would miss them.
    server
        .batch_execute(
            "ALTER TABLE customers ENABLE ROW LEVEL SECURITY;
             CREATE POLICY only_named ON customers USING (name = current_setting('app.name', true));",
        )
        .unwrap();
    let error = error_of(&mut server, "ALTER TABLE customers FORCE ROW LEVEL SECURITY", &[]);
    assert!(error.starts_with("55000") && error.contains("NO FORCE ROW LEVEL SECURITY"), "{error}");
    // Forced while the extension was not looking (a restored dump, an
    // earlier Tandem), every call refuses.
    server
        .batch_execute("ALTER EVENT TRIGGER tandem_columns DISABLE; ALTER TABLE customers FORCE ROW LEVEL SECURITY; ALTER EVENT TRIGGER tandem_columns ENABLE;")
        .unwrap();
    let client = tandem_core::identity::token_client_id(&token).unwrap().to_string();
    let delete = upload(&client, json!([{"op": "delete", "seq": 1, "key": [1]}]));
    for (sql, second) in
        [("SELECT sync_select_changes('crm', NULL, $1)", None), ("SELECT sync_apply_changes('crm', $2, $1)", Some(&delete))]
    {
        let options = json!({"token": token});
        let params: Vec<&(dyn postgres::types::ToSql + Sync)> = match second {
            Some(row) => vec![&options, row],
            None => vec![&options],
        };
        let error = error_of(&mut server, sql, &params);
        assert!(error.starts_with("55000") && error.contains("NO FORCE ROW LEVEL SECURITY"), "{sql}: {error}");
    }
    server.batch_execute("ALTER TABLE customers NO FORCE ROW LEVEL SECURITY").unwrap();
    let pulled = query_json(&mut server, "SELECT sync_select_changes('crm', NULL, $1)", &[&json!({"token": token})]);
    assert_eq!(pulled["tables"][0]["rows"].as_array().unwrap().len(), 2, "the owner reads the partition whole");
}

#[test]
fn a_deferred_trigger_that_defers_itself_again_is_refused_not_run_with_other_rights() {
    let s = Scenario::new("deferred_again", SCHEMA, "crm");
    let token = s.register(json!({"tenant": 1}));
    let device = Role::new(&s, "device", DEVICE_GRANTS);
    let mut conn = device.connect(&s);
    // Fired as the device, it defers the checks again and queues one more,
    // which a later SET CONSTRAINTS in the call would fire with its rights.
    conn.batch_execute(&format!(
        "CREATE FUNCTION pg_temp.bait() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN
             IF current_user <> '{0}' THEN UPDATE public.customers SET name = 'taken' WHERE id = 3; END IF;
             IF NEW.x < 3 THEN SET CONSTRAINTS ALL DEFERRED; INSERT INTO pg_temp.bait VALUES (NEW.x + 1); END IF;
             RETURN NULL;
           END $$;
         CREATE TEMP TABLE bait (x int);
         CREATE CONSTRAINT TRIGGER bait AFTER INSERT ON pg_temp.bait DEFERRABLE INITIALLY DEFERRED
           FOR EACH ROW EXECUTE FUNCTION pg_temp.bait();",
        device.name
    ))
    .unwrap();
    let client = tandem_core::identity::token_client_id(&token).unwrap().to_string();
    let nothing = upload(&client, json!([]));
    for (call, second) in
        [("SELECT sync_select_changes('crm', NULL, $1)::text", None), ("SELECT sync_apply_changes('crm', $2, $1)::text", Some(&nothing))]
    {
        let mut tx = conn.transaction().unwrap();
        tx.batch_execute("INSERT INTO pg_temp.bait VALUES (1)").unwrap();
        let options = json!({"token": token});
        let params: Vec<&(dyn postgres::types::ToSql + Sync)> = match second {
            Some(row) => vec![&options, row],
            None => vec![&options],
        };
        let error = describe(&tx.query_one(call, &params).unwrap_err());
        assert!(error.starts_with("55000") && error.contains("deferred"), "{call}: {error}");
    }
    let name: String = s.server().query_one("SELECT name FROM customers WHERE id = 3", &[]).unwrap().get(0);
    assert_eq!(name, "Cy", "another tenant's row is untouched");
}
