//! Ordinary `ALTER TABLE` on a tracked table: the scope follows it by
//! itself (a new schema version), and devices pick it up on their next
//! sync with their rows and their unsent changes intact. A column added
//! with a constant default or none moves no rows; one whose values only
//! the server can compute moves its table's rows; a change devices could
//! not follow in place is refused with the way to make it.

use serde_json::json;
use tandem_tests::local::{assert_converged, local, local_count, local_value, Scenario};

const SCHEMA: &str = r#"
CREATE TABLE customers (id bigint PRIMARY KEY, tenant_id int NOT NULL, name text);
INSERT INTO customers SELECT i, 1 + i % 2, 'customer ' || i FROM generate_series(1, 40) i;
SELECT sync_provision('crm', '{"tables": [{"name": "customers", "filter": {"tenant_id": "tenant"}}]}');
"#;

fn version(s: &Scenario) -> i64 {
    s.server().query_one("SELECT (sync_schema('crm') ->> 'version')::int8", &[]).unwrap().get(0)
}

fn ddl_error(s: &Scenario, sql: &str) -> String {
    let error = s.server().batch_execute(sql).expect_err("the change is refused");
    error.as_db_error().map(|e| format!("{} {}", e.message(), e.hint().unwrap_or_default())).unwrap_or_else(|| error.to_string())
}

#[test]
fn a_column_added_with_a_constant_default_reaches_devices_without_moving_rows() {
    let s = Scenario::new("ddl_add_constant", SCHEMA, "crm");
    let token = s.register(json!({"tenant": 1}));
    let file = s.store("a.db");
    assert_eq!(s.sync_as(&file, &token).pulled, 20);
    // Offline: an unsent edit of the table that is about to change (tenant
    // 1 holds the even ids).
    local(&file, "UPDATE customers SET name = 'edited offline' WHERE id = 2");

    s.server()
        .batch_execute(
            "ALTER TABLE customers ADD COLUMN score int NOT NULL DEFAULT 7, ADD COLUMN note text, ADD COLUMN vip boolean DEFAULT false",
        )
        .unwrap();
    assert_eq!(version(&s), 2, "the scope followed the ALTER TABLE by itself");

    let report = s.sync_as(&file, &token);
    assert!(report.provisioned, "{report:?}");
    // The edit went up under the old schema; the one row that comes down is
    // that row, whose new columns the device did not have when it wrote.
    // None of the other 19 moved.
    assert_eq!((report.pushed, report.pulled), (1, 1), "{report:?}");
    assert_eq!(local_count(&file, "SELECT count(*) FROM customers WHERE score = 7 AND note IS NULL AND vip = 0"), 20);
    let name: String = s.server().query_one("SELECT name FROM customers WHERE id = 2", &[]).unwrap().get(0);
    assert_eq!(name, "edited offline");
    assert_converged(&mut s.server(), file.connection(), "crm", &json!({"tenant": 1}));

    // The new columns sync both ways from now on.
    s.server().batch_execute("UPDATE customers SET score = 9 WHERE id = 4").unwrap();
    local(&file, "UPDATE customers SET note = 'from the device' WHERE id = 6");
    let report = s.sync_as(&file, &token);
    assert_eq!((report.pushed, report.pulled), (1, 1), "{report:?}");
    let note: Option<String> = s.server().query_one("SELECT note FROM customers WHERE id = 6", &[]).unwrap().get(0);
    assert_eq!(note.as_deref(), Some("from the device"));
    assert_converged(&mut s.server(), file.connection(), "crm", &json!({"tenant": 1}));
}

#[test]
fn a_column_whose_values_only_the_server_computes_brings_its_rows() {
    let s = Scenario::new("ddl_add_computed", SCHEMA, "crm");
    let token = s.register(json!({"tenant": 1}));
    let file = s.store("a.db");
    s.sync_as(&file, &token);
    s.server()
        .batch_execute("CREATE SEQUENCE ticket_numbers; ALTER TABLE customers ADD COLUMN ticket bigint DEFAULT nextval('ticket_numbers')")
        .unwrap();
    let report = s.sync_as(&file, &token);
    assert_eq!(report.pulled, 20, "each row's own number had to come down: {report:?}");
    assert_eq!(local_count(&file, "SELECT count(DISTINCT ticket) FROM customers"), 20);
    assert_converged(&mut s.server(), file.connection(), "crm", &json!({"tenant": 1}));
}

#[test]
fn dropped_and_renamed_columns_are_followed() {
    let s = Scenario::new("ddl_drop_rename", SCHEMA, "crm");
    let token = s.register(json!({"tenant": 1}));
    let file = s.store("a.db");
    s.sync_as(&file, &token);
    s.server().batch_execute("ALTER TABLE customers ADD COLUMN old_flag int DEFAULT 1").unwrap();
    s.sync_as(&file, &token);

    s.server().batch_execute("ALTER TABLE customers DROP COLUMN old_flag; ALTER TABLE customers RENAME COLUMN name TO full_name").unwrap();
    // Before this sync, writes on the server go on as usual.
    s.server().batch_execute("UPDATE customers SET full_name = 'renamed on the server' WHERE id = 2").unwrap();
    local(&file, "INSERT INTO customers (id, tenant_id) VALUES (101, 1)");
    let report = s.sync_as(&file, &token);
    // The insert held only the dropped column's default and a NULL under
    // the old name: nothing of it is lost, nothing is kept aside.
    assert!(report.provisioned && report.rejected.is_empty(), "{report:?}");
    assert_eq!(local_value(&file, "SELECT full_name FROM customers WHERE id = 2").as_deref(), Some("renamed on the server"));
    assert!(
        s.server().query_opt("SELECT 1 FROM customers WHERE id = 101", &[]).unwrap().is_some(),
        "the insert made under the old schema arrived"
    );
    assert_converged(&mut s.server(), file.connection(), "crm", &json!({"tenant": 1}));
}

#[test]
fn changes_devices_could_not_follow_are_refused_with_what_to_do() {
    let s = Scenario::new("ddl_refused", SCHEMA, "crm");
    let token = s.register(json!({"tenant": 1}));
    let file = s.store("a.db");
    s.sync_as(&file, &token);

    let error = ddl_error(&s, "ALTER TABLE customers DROP COLUMN tenant_id");
    assert!(error.contains("crm") && error.contains("tenant_id") && error.contains("sync_provision"), "{error}");
    let error = ddl_error(&s, "ALTER TABLE customers DROP CONSTRAINT customers_pkey, ADD PRIMARY KEY (id, tenant_id)");
    assert!(error.contains("primary key") && error.contains("sync_provision"), "{error}");
    let error = ddl_error(&s, "ALTER TABLE customers ALTER COLUMN name TYPE int USING length(name)");
    assert!(error.contains("name") && error.contains("type"), "{error}");
    assert_eq!(version(&s), 1, "nothing changed");

    // A type devices hold alike (int4 -> int8 are both SQLite integers) is
    // followed; the rows come again in their new type.
    s.server().batch_execute("ALTER TABLE customers ALTER COLUMN tenant_id TYPE bigint").unwrap();
    assert_eq!(version(&s), 2);
    // An untracked table's changes are none of Tandem's business.
    s.server().batch_execute("CREATE TABLE scratch (id int PRIMARY KEY); ALTER TABLE scratch ADD COLUMN x int").unwrap();
    assert_eq!(version(&s), 2);
    s.sync_as(&file, &token);
    assert_converged(&mut s.server(), file.connection(), "crm", &json!({"tenant": 1}));
}

#[test]
fn a_device_that_slept_through_two_changes_fills_the_column_as_the_server_did() {
    let s = Scenario::new(
        "ddl_fill",
        r#"
        CREATE TABLE "Visits" (id int, tenant_id int NOT NULL, at date NOT NULL, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
        CREATE TABLE "Visits_2024" PARTITION OF "Visits" FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
        INSERT INTO "Visits" SELECT i, 1, date '2024-01-01' + i FROM generate_series(1, 30) i;
        SELECT sync_provision('crm', '{"tables": [{"name": "\"Visits\"", "filter": {"tenant_id": "tenant"}}]}');
        "#,
        "crm",
    );
    let token = s.register(json!({"tenant": 1}));
    let file = s.store("a.db");
    assert_eq!(s.sync_as(&file, &token).pulled, 30);
    // The column comes with 7 in every row; later its default becomes 9.
    s.server().batch_execute(r#"ALTER TABLE "Visits" ADD COLUMN "Rating" int DEFAULT 7"#).unwrap();
    s.server().batch_execute(r#"ALTER TABLE "Visits" ALTER COLUMN "Rating" SET DEFAULT 9"#).unwrap();
    s.server().batch_execute(r#"INSERT INTO "Visits_2024" (id, tenant_id, at) VALUES (100, 1, '2024-06-01')"#).unwrap();
    let report = s.sync_as(&file, &token);
    assert_eq!((report.schema_version, report.pulled), (3, 1), "only the new row came: {report:?}");
    assert_eq!(local_count(&file, r#"SELECT count(*) FROM "Visits" WHERE "Rating" = 7"#), 30);
    assert_eq!(local_count(&file, r#"SELECT count(*) FROM "Visits" WHERE "Rating" = 9"#), 1);
    assert_converged(&mut s.server(), file.connection(), "crm", &json!({"tenant": 1}));
    // A new device gets the same rows.
    let fresh = s.store("b.db");
    s.sync_as(&fresh, &s.register(json!({"tenant": 1})));
    assert_converged(&mut s.server(), fresh.connection(), "crm", &json!({"tenant": 1}));
}

const SHOP: &str = r#"
CREATE TABLE customers (id bigint PRIMARY KEY, tenant_id int NOT NULL, name text);
CREATE TABLE orders (id bigint PRIMARY KEY, customer_id bigint NOT NULL REFERENCES customers, total int);
CREATE TABLE notes (id bigint PRIMARY KEY, tenant_id int NOT NULL, body text);
INSERT INTO customers SELECT i, 1 + i % 2, 'customer ' || i FROM generate_series(1, 4) i;
INSERT INTO orders SELECT i, 1 + i % 4, i * 10 FROM generate_series(1, 8) i;
INSERT INTO notes SELECT i, 1 + i % 2, 'note ' || i FROM generate_series(1, 6) i;
SELECT sync_provision('crm', '{"tables": [
  {"name": "customers", "filter": {"tenant_id": "tenant"}},
  {"name": "orders", "filter": {"via": "customers", "on": {"customer_id": "id"}}},
  {"name": "notes", "filter": {"tenant_id": "tenant"}}]}');
"#;

fn scope_tables(s: &Scenario) -> Vec<String> {
    let schema = s.server().query_one("SELECT sync_schema('crm')::text", &[]).unwrap().get::<_, String>(0);
    let schema: serde_json::Value = serde_json::from_str(&schema).unwrap();
    schema["tables"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap().to_string()).collect()
}

#[test]
fn a_dropped_table_leaves_its_scope_with_the_tables_filtered_through_it() {
    let s = Scenario::new("ddl_drop_table", SHOP, "crm");
    let token = s.register(json!({"tenant": 1}));
    let file = s.store("a.db");
    assert_eq!(s.sync_as(&file, &token).pulled, 2 + 4 + 3);
    local(&file, "UPDATE notes SET body = 'edited offline' WHERE id = 2");

    // The orders' filter goes through customers: they leave too.
    s.server().batch_execute("DROP TABLE customers CASCADE").unwrap();
    assert_eq!(scope_tables(&s), ["public.notes"]);
    assert_eq!(version(&s), 2);
    let report = s.sync_as(&file, &token);
    assert!(report.provisioned && report.rejected.is_empty(), "{report:?}");
    assert_eq!(report.pushed, 1, "the edit of a table still synced went up: {report:?}");
    let body: String = s.server().query_one("SELECT body FROM notes WHERE id = 2", &[]).unwrap().get(0);
    assert_eq!(body, "edited offline");
    assert_converged(&mut s.server(), file.connection(), "crm", &json!({"tenant": 1}));
    // The file keeps the rows of the tables no longer synced, untracked.
    assert_eq!(local_count(&file, "SELECT count(*) FROM orders"), 4);
    local(&file, "INSERT INTO orders VALUES (100, 1, 5)");
    assert_eq!(s.sync_as(&file, &token).pushed, 0, "orders are not synced any more");
}

#[test]
fn a_scope_whose_last_table_is_dropped_is_removed_and_says_so() {
    let s = Scenario::new("ddl_drop_last", SHOP, "crm");
    let token = s.register(json!({"tenant": 1}));
    let file = s.store("a.db");
    s.sync_as(&file, &token);
    // One DROP of all three at once, as DROP SCHEMA ... CASCADE does.
    s.server().batch_execute("DROP TABLE orders, customers, notes").unwrap();
    let error = s.server().query_one("SELECT sync_schema('crm')", &[]).unwrap_err();
    assert!(error.as_db_error().is_some_and(|e| e.message().contains("crm")), "{error}");
    let error = tandem_local::Store::sync(&file, &s.db.url, "crm", &tandem_local::SyncOptions { token: Some(token), ..Default::default() })
        .unwrap_err()
        .to_string();
    assert!(error.contains("crm"), "{error}");
    // Provisioned again over new tables, the scope works again.
    s.server()
        .batch_execute(
            r#"CREATE TABLE notes (id bigint PRIMARY KEY, tenant_id int NOT NULL, body text);
               SELECT sync_provision('crm', '{"tables": [{"name": "notes", "filter": {"tenant_id": "tenant"}}]}');"#,
        )
        .unwrap();
    assert_eq!(scope_tables(&s), ["public.notes"]);
}

#[test]
fn a_registration_outlives_the_filtered_tables_of_its_scope() {
    let s = Scenario::new(
        "ddl_params_left",
        r#"
        CREATE TABLE p (id bigint PRIMARY KEY, tenant_id int NOT NULL);
        CREATE TABLE c (id bigint PRIMARY KEY, p_id bigint NOT NULL, v text);
        CREATE TABLE u (id bigint PRIMARY KEY, v text);
        INSERT INTO p VALUES (1, 1), (2, 2); INSERT INTO c VALUES (1, 1, 'a'), (2, 2, 'b'); INSERT INTO u VALUES (1, 'shared');
        SELECT sync_provision('crm', '{"tables": [{"name": "p", "filter": {"tenant_id": "tenant"}},
            {"name": "c", "filter": {"via": "p", "on": {"p_id": "id"}}}, {"name": "u"}]}');
        "#,
        "crm",
    );
    let token = s.register(json!({"tenant": 1}));
    let file = s.store("a.db");
    assert_eq!(s.sync_as(&file, &token).pulled, 3);
    // A column joining c to its parent keeps its type.
    let error = ddl_error(&s, "ALTER TABLE c ALTER COLUMN p_id TYPE text");
    assert!(error.contains("p_id") && error.contains("parent"), "{error}");
    // Without its filtered tables, the scope no longer uses "tenant": the
    // device still syncs what is left.
    s.server().batch_execute("DROP TABLE p CASCADE").unwrap();
    assert_eq!(scope_tables(&s), ["public.u"]);
    local(&file, "UPDATE u SET v = 'edited' WHERE id = 1");
    let report = s.sync_as(&file, &token);
    assert_eq!(report.pushed, 1, "{report:?}");
    assert_converged(&mut s.server(), file.connection(), "crm", &json!({}));
}

#[test]
fn a_column_dropped_and_added_again_under_its_name_holds_the_servers_values() {
    let s = Scenario::new("ddl_readd", SCHEMA, "crm");
    let token = s.register(json!({"tenant": 1}));
    let file = s.store("a.db");
    s.server().batch_execute("ALTER TABLE customers ADD COLUMN a3 text DEFAULT 'old', ADD COLUMN s int").unwrap();
    s.sync_as(&file, &token);
    s.server().batch_execute("ALTER TABLE customers DROP COLUMN a3, DROP COLUMN s").unwrap();
    s.sync_as(&file, &token);
    assert_eq!(local_count(&file, "SELECT count(*) FROM pragma_table_info('customers') WHERE name IN ('a3', 's')"), 0, "dropped here too");
    // Back under the same name, another type; and one whose name differs
    // only in case from a dropped one.
    s.server().batch_execute(r#"ALTER TABLE customers ADD COLUMN a3 int DEFAULT 42, ADD COLUMN "S" int DEFAULT 7"#).unwrap();
    let report = s.sync_as(&file, &token);
    assert_eq!(report.pulled, 0, "{report:?}");
    assert_eq!(local_count(&file, r#"SELECT count(*) FROM customers WHERE a3 = 42 AND "S" = 7"#), 20);
    assert_converged(&mut s.server(), file.connection(), "crm", &json!({"tenant": 1}));
    // An edit of another column leaves the server's a3 alone.
    local(&file, "UPDATE customers SET name = 'edited' WHERE id = 2");
    assert_eq!(s.sync_as(&file, &token).pushed, 1);
    let a3: Option<i32> = s.server().query_one("SELECT a3 FROM customers WHERE id = 2", &[]).unwrap().get(0);
    assert_eq!(a3, Some(42));
}

#[test]
fn drop_owned_by_a_scopes_owner_leaves_no_scope_behind() {
    let s = Scenario::new("ddl_drop_owned", "SELECT 1", "crm");
    let owner = tandem_tests::role::Role::new(
        &s,
        "dropped_owner",
        "GRANT CREATE ON SCHEMA public TO {role}; GRANT EXECUTE ON FUNCTION sync_provision, sync_register_client TO {role};",
    );
    postgres::Client::connect(&owner.url(&s), postgres::NoTls)
        .unwrap()
        .batch_execute(
            r#"CREATE TABLE customers (id bigint PRIMARY KEY, tenant_id int NOT NULL, name text);
               INSERT INTO customers VALUES (1, 1, 'a');
               SELECT sync_provision('crm', '{"tables": [{"name": "customers", "filter": {"tenant_id": "tenant"}}]}');"#,
        )
        .unwrap();
    s.server().batch_execute(&format!("DROP OWNED BY {}", owner.name)).unwrap();
    let error = s.server().query_one("SELECT sync_schema('crm')", &[]).unwrap_err();
    assert!(error.as_db_error().is_some_and(|e| e.message().contains("crm")), "{error}");
    let left: i64 = s.server().query_one("SELECT count(*) FROM tandem.scopes", &[]).unwrap().get(0);
    assert_eq!(left, 0, "the scope went with its tables");
}

/// A remote whose server runs an `ALTER TABLE` right after the round read
/// the schema, before its first pull: the race a busy server makes.
struct AlteredMidRound {
    inner: tandem_local::PostgresRemote,
    url: String,
    alter: Option<&'static str>,
}

impl tandem_local::Remote for AlteredMidRound {
    fn schema(&mut self, scope: &str, token: Option<&str>) -> Result<tandem_core::schema::Schema, tandem_local::RemoteError> {
        self.inner.schema(scope, token)
    }
    fn verify(&mut self, scope: &str, options: &tandem_core::verify::VerifyOptions) -> Result<String, tandem_local::RemoteError> {
        self.inner.verify(scope, options)
    }
    fn server_id(&self) -> Option<String> {
        self.inner.server_id()
    }
    fn capabilities(&self) -> tandem_local::remote::Capabilities {
        self.inner.capabilities()
    }
    fn select_changes(
        &mut self,
        scope: &str,
        since: Option<&str>,
        options: &tandem_core::options::SelectOptions,
    ) -> Result<String, tandem_local::RemoteError> {
        if let Some(sql) = self.alter.take() {
            postgres::Client::connect(&self.url, postgres::NoTls).unwrap().batch_execute(sql).unwrap();
        }
        self.inner.select_changes(scope, since, options)
    }
    fn apply_changes(
        &mut self,
        scope: &str,
        changeset: &str,
        options: &tandem_core::options::ApplyOptions,
    ) -> Result<tandem_core::apply_result::ApplyResult, tandem_local::RemoteError> {
        self.inner.apply_changes(scope, changeset, options)
    }
}

#[test]
fn a_schema_changed_during_a_round_is_taken_up_by_the_same_sync() {
    let s = Scenario::new("ddl_race", SCHEMA, "crm");
    let token = s.register(json!({"tenant": 1}));
    let file = s.store("a.db");
    s.sync_as(&file, &token);
    s.server().batch_execute("UPDATE customers SET name = 'changed' WHERE id = 2").unwrap();
    let mut remote = AlteredMidRound {
        inner: tandem_local::PostgresRemote::connect(&s.db.url, None).unwrap(),
        url: s.db.url.clone(),
        alter: Some("ALTER TABLE customers ADD COLUMN added_mid_round int DEFAULT 5"),
    };
    let options = tandem_local::SyncOptions { token: Some(token), ..Default::default() };
    let report = file.sync_with(&mut remote, "crm", &options).unwrap_or_else(|e| panic!("the round failed: {e}"));
    assert_eq!(report.schema_version, 2, "{report:?}");
    assert_converged(&mut s.server(), file.connection(), "crm", &json!({"tenant": 1}));
}

#[test]
fn a_table_that_leaves_its_scope_and_comes_back_is_received_anew() {
    let s = Scenario::new(
        "ddl_comes_back",
        r#"
        CREATE TABLE anchor (id bigint PRIMARY KEY, tenant_id int NOT NULL);
        CREATE TABLE z (id bigint PRIMARY KEY, tenant_id int NOT NULL, v text);
        INSERT INTO anchor VALUES (1, 1); INSERT INTO z VALUES (1, 1, 'z1'), (2, 1, 'z2'), (3, 1, 'z3');
        SELECT sync_provision('crm', '{"tables": [{"name": "anchor", "filter": {"tenant_id": "tenant"}},
                                                  {"name": "z", "filter": {"tenant_id": "tenant"}}]}');
        "#,
        "crm",
    );
    let token = s.register(json!({"tenant": 1}));
    let file = s.store("a.db");
    assert_eq!(s.sync_as(&file, &token).pulled, 4);
    let both = r#"SELECT sync_provision('crm', '{"tables": [{"name": "anchor", "filter": {"tenant_id": "tenant"}},
                                                  {"name": "z", "filter": {"tenant_id": "tenant"}}]}')"#;
    s.server()
        .batch_execute(r#"SELECT sync_provision('crm', '{"tables": [{"name": "anchor", "filter": {"tenant_id": "tenant"}}]}')"#)
        .unwrap();
    s.sync_as(&file, &token);
    // While z is out of the scope, the server deletes and changes rows.
    s.server().batch_execute("DELETE FROM z WHERE id = 2; UPDATE z SET v = 'z3 changed' WHERE id = 3").unwrap();
    s.server().batch_execute(both).unwrap();
    let report = s.sync_as(&file, &token);
    assert_eq!((report.pushed, report.conflicts.len()), (0, 0), "the old rows are not sent up: {report:?}");
    let rows: Vec<(i64, String)> =
        s.server().query("SELECT id, v FROM z ORDER BY id", &[]).unwrap().iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(rows, [(1, "z1".to_string()), (3, "z3 changed".to_string())], "the deleted row stays deleted");
    assert_converged(&mut s.server(), file.connection(), "crm", &json!({"tenant": 1}));
}

#[test]
fn column_changes_made_by_other_ddl_are_followed_or_refused() {
    let s = Scenario::new(
        "ddl_other",
        r#"
        CREATE SCHEMA "Sales";
        CREATE DOMAIN posint AS int CHECK (VALUE > 0);
        CREATE TABLE "Sales".orders (id bigint PRIMARY KEY, tenant_id int NOT NULL, cnt posint, note text);
        INSERT INTO "Sales".orders VALUES (1, 1, 3, 'a'), (2, 1, 4, 'b');
        SELECT sync_provision('crm', '{"tables": [{"name": "\"Sales\".orders", "filter": {"tenant_id": "tenant"}}]}');
        "#,
        "crm",
    );
    let token = s.register(json!({"tenant": 1}));
    let file = s.store("a.db");
    assert_eq!(s.sync_as(&file, &token).pulled, 2);
    // A schema renamed takes its tables along: the scope follows.
    s.server().batch_execute(r#"ALTER SCHEMA "Sales" RENAME TO "Sales2""#).unwrap();
    assert_eq!(version(&s), 2);
    // A column a cascade takes is followed like a DROP COLUMN.
    s.server().batch_execute("DROP DOMAIN posint CASCADE").unwrap();
    assert_eq!(version(&s), 3);
    local(&file, r#"UPDATE "Sales.orders" SET note = 'edited' WHERE id = 1"#);
    let report = s.sync_as(&file, &token);
    assert_eq!(report.pushed, 1, "{report:?}");
    assert_converged(&mut s.server(), file.connection(), "crm", &json!({"tenant": 1}));
}

#[test]
fn a_column_dropped_and_added_again_while_a_device_was_offline_is_another_column() {
    let s = Scenario::new("ddl_readd_offline", SCHEMA, "crm");
    let token = s.register(json!({"tenant": 1}));
    let file = s.store("a.db");
    s.sync_as(&file, &token);
    // Offline: an edit of the column that is about to go.
    local(&file, "UPDATE customers SET name = 'edited offline' WHERE id = 2");
    s.server().batch_execute("ALTER TABLE customers DROP COLUMN name; ALTER TABLE customers ADD COLUMN name text DEFAULT 'Z'").unwrap();
    s.sync_as(&file, &token);
    let name: String = s.server().query_one("SELECT name FROM customers WHERE id = 2", &[]).unwrap().get(0);
    assert_eq!(name, "Z", "the edit of the dropped column did not land in the new one");
    assert_eq!(local_count(&file, "SELECT count(*) FROM customers WHERE name = 'Z'"), 20, "the file holds the new column's values");
    assert_converged(&mut s.server(), file.connection(), "crm", &json!({"tenant": 1}));
}

/// What `tandem_rejected` holds for one table, as (key, row, kind, reason).
fn kept(file: &tandem_local::Store, table: &str) -> Vec<(String, Option<String>, String, String)> {
    let conn = file.connection();
    let mut statement = conn.prepare("SELECT key, row, kind, reason FROM tandem_rejected WHERE table_name = ?1 ORDER BY key").unwrap();
    let rows = statement.query_map([table], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))).unwrap();
    rows.collect::<Result<_, _>>().unwrap()
}

#[test]
fn an_unsent_value_of_a_column_the_server_dropped_is_kept_with_the_reason() {
    let s = Scenario::new("ddl_drop_unsent", SCHEMA, "crm");
    let token = s.register(json!({"tenant": 1}));
    let file = s.store("a.db");
    s.server().batch_execute("ALTER TABLE customers ADD COLUMN flag int").unwrap();
    s.sync_as(&file, &token);

    // Offline, the device writes the column the server is about to drop.
    local(
        &file,
        "UPDATE customers SET flag = 7, name = 'edited offline' WHERE id = 2; INSERT INTO customers VALUES (102, 1, 'made offline', 9)",
    );
    s.server().batch_execute("ALTER TABLE customers DROP COLUMN flag").unwrap();
    let report = s.sync_as(&file, &token);
    assert!(report.provisioned, "{report:?}");
    // The rest of each change went up.
    let name: String = s.server().query_one("SELECT name FROM customers WHERE id = 2", &[]).unwrap().get(0);
    assert_eq!(name, "edited offline");
    assert!(s.server().query_opt("SELECT 1 FROM customers WHERE id = 102", &[]).unwrap().is_some());
    // The values the server can no longer take are kept, with why.
    let kept = kept(&file, "public.customers");
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert_eq!(report.rejected.len(), 2, "{report:?}");
    for ((key, row, kind, reason), (want_key, want_flag)) in kept.iter().zip([("[102]", 9), ("[2]", 7)]) {
        assert_eq!(key, want_key);
        let row: serde_json::Value = serde_json::from_str(row.as_deref().expect("the row as the file held it")).unwrap();
        assert_eq!(row["flag"], json!(want_flag), "{row}");
        assert_eq!(kind, "schema_changed");
        assert!(reason.contains("\"flag\"") && reason.contains("dropped"), "{reason}");
    }
    assert_converged(&mut s.server(), file.connection(), "crm", &json!({"tenant": 1}));
    // Kept once: later rounds add nothing.
    s.sync_as(&file, &token);
    assert_eq!(local_count(&file, "SELECT count(*) FROM tandem_rejected"), 2);
}

#[test]
fn unsent_changes_to_a_table_that_left_the_scope_are_kept_with_the_reason() {
    let s = Scenario::new("ddl_left_unsent", SHOP, "crm");
    let token = s.register(json!({"tenant": 1}));
    let file = s.store("a.db");
    s.sync_as(&file, &token);
    local(
        &file,
        "UPDATE orders SET total = 11 WHERE id = 1; DELETE FROM orders WHERE id = 3; \
         UPDATE notes SET body = 'edited offline' WHERE id = 2",
    );
    s.server()
        .batch_execute(
            r#"SELECT sync_provision('crm', '{"tables": [
                 {"name": "customers", "filter": {"tenant_id": "tenant"}},
                 {"name": "notes", "filter": {"tenant_id": "tenant"}}]}')"#,
        )
        .unwrap();
    let report = s.sync_as(&file, &token);
    assert_eq!(report.pushed, 1, "the edit of a table still synced went up: {report:?}");
    let kept = kept(&file, "public.orders");
    assert_eq!(kept.len(), 2, "{kept:?}");
    let (key, row, kind, reason) = &kept[0];
    assert_eq!((key.as_str(), kind.as_str()), ("[1]", "schema_changed"));
    assert!(row.as_deref().is_some_and(|r| r.contains("11")), "{row:?}");
    assert!(reason.contains("left") && reason.contains("crm"), "{reason}");
    let (key, row, _, reason) = &kept[1];
    assert_eq!((key.as_str(), row), ("[3]", &None), "a delete keeps no row");
    assert!(reason.contains("delete"), "{reason}");
    let total: i32 = s.server().query_one("SELECT total FROM orders WHERE id = 1", &[]).unwrap().get(0);
    assert_eq!(total, 10, "the server's row is as it was");
    s.sync_as(&file, &token);
    assert_eq!(local_count(&file, "SELECT count(*) FROM tandem_rejected"), 2);
}

const REGIONS: &str = r#"
CREATE TABLE customers (id bigint PRIMARY KEY, tenant_id int NOT NULL, region int NOT NULL, name text);
CREATE TABLE orders (id bigint PRIMARY KEY, customer_id bigint NOT NULL REFERENCES customers, total int);
INSERT INTO customers SELECT i, 1 + i % 2, 1 + i % 3, 'customer ' || i FROM generate_series(1, 30) i;
INSERT INTO orders SELECT i, 1 + i % 30, i * 10 FROM generate_series(1, 60) i;
SELECT sync_provision('crm', '{"tables": [
  {"name": "customers", "filter": {"tenant_id": "tenant"}},
  {"name": "orders", "filter": {"via": "customers", "on": {"customer_id": "id"}}}]}');
"#;

#[test]
fn a_changed_filter_moves_devices_to_their_new_partition_with_their_unsent_changes() {
    let s = Scenario::new("ddl_refilter", REGIONS, "crm");
    let token = s.register(json!({"tenant": 1}));
    let away = s.store("away.db");
    let here = s.store("here.db");
    s.sync_as(&away, &token);
    s.sync_as(&here, &token);
    // Offline: an edit of a row the new partition keeps (6: tenant 1,
    // region 1), a row made for it, and an edit of a row it leaves (4).
    local(
        &away,
        "UPDATE customers SET name = 'edited offline' WHERE id = 6; INSERT INTO customers VALUES (106, 1, 1, 'made offline'); \
         UPDATE customers SET name = 'edited, then gone' WHERE id = 4",
    );
    // The same parameter now picks the region: rows come and go.
    s.server()
        .batch_execute(
            r#"SELECT sync_provision('crm', '{"tables": [
                 {"name": "customers", "filter": {"region": "tenant"}},
                 {"name": "orders", "filter": {"via": "customers", "on": {"customer_id": "id"}}}]}')"#,
        )
        .unwrap();
    let report = s.sync_as(&away, &token);
    assert!(report.provisioned, "{report:?}");
    let name: String = s.server().query_one("SELECT name FROM customers WHERE id = 6", &[]).unwrap().get(0);
    assert_eq!(name, "edited offline");
    assert!(s.server().query_opt("SELECT 1 FROM customers WHERE id = 106", &[]).unwrap().is_some());
    // The edit of a row outside the new partition is refused and kept.
    assert_eq!(report.rejected.len(), 1, "{report:?}");
    assert_eq!(report.rejected[0].key, [json!(4)], "{report:?}");
    for file in [&away, &here] {
        s.sync_as(file, &token);
        assert_converged(&mut s.server(), file.connection(), "crm", &json!({"tenant": 1}));
        assert_eq!(local_count(file, "SELECT count(*) FROM customers WHERE region <> 1"), 0);
        assert_eq!(
            local_count(file, "SELECT count(*) FROM orders o JOIN customers c ON c.id = o.customer_id"),
            local_count(file, "SELECT count(*) FROM orders")
        );
    }
    // Settled: the next round moves nothing.
    let again = s.sync_as(&here, &token);
    assert!(again.pulled == 0 && again.removed == 0, "{again:?}");
}

#[test]
fn a_filter_registered_clients_cannot_use_is_refused_with_what_to_do() {
    let s = Scenario::new("ddl_refilter_params", REGIONS, "crm");
    let token = s.register(json!({"tenant": 1}));
    let file = s.store("a.db");
    s.sync_as(&file, &token);
    let error = ddl_error(
        &s,
        r#"SELECT sync_provision('crm', '{"tables": [{"name": "customers", "filter": {"region": "region", "tenant_id": "tenant"}}]}')"#,
    );
    assert!(error.contains("region") && error.contains("sync_revoke_client"), "{error}");
    assert_eq!(version(&s), 1);
}

#[test]
fn a_table_whose_downloads_are_turned_on_is_received_anew() {
    let s = Scenario::new("ddl_direction", SCHEMA, "crm");
    let token = s.register(json!({"tenant": 1}));
    let file = s.store("a.db");
    s.sync_as(&file, &token);
    let direction = |d: &str| {
        format!(
            r#"SELECT sync_provision('crm', '{{"tables": [{{"name": "customers", "filter": {{"tenant_id": "tenant"}}, "direction": "{d}"}}]}}')"#
        )
    };
    s.server().batch_execute(&direction("upload_only")).unwrap();
    s.sync_as(&file, &token);
    // While only uploads flow, the server's changes stay there.
    s.server().batch_execute("DELETE FROM customers WHERE id = 2; UPDATE customers SET name = 'renamed' WHERE id = 4").unwrap();
    local(&file, "INSERT INTO customers VALUES (108, 1, 'made on the device')");
    let report = s.sync_as(&file, &token);
    assert_eq!((report.pushed, report.pulled), (1, 0), "{report:?}");
    assert_eq!(local_count(&file, "SELECT count(*) FROM customers WHERE id = 2"), 1);

    s.server().batch_execute(&direction("bidirectional")).unwrap();
    let report = s.sync_as(&file, &token);
    assert_eq!(report.removed, 1, "{report:?}");
    assert_eq!(local_value(&file, "SELECT name FROM customers WHERE id = 4").as_deref(), Some("renamed"));
    assert_converged(&mut s.server(), file.connection(), "crm", &json!({"tenant": 1}));
    // Turned off again: the file keeps its rows, and sends its changes.
    s.server().batch_execute(&direction("download_only")).unwrap();
    local(&file, "UPDATE customers SET name = 'refused' WHERE id = 6");
    let report = s.sync_as(&file, &token);
    assert_eq!(report.rejected.len(), 1, "{report:?}");
    assert_converged(&mut s.server(), file.connection(), "crm", &json!({"tenant": 1}));
}

#[test]
fn a_pull_for_a_schema_the_scope_left_behind_is_refused() {
    let s = Scenario::new("ddl_pull_version", SCHEMA, "crm");
    s.server().batch_execute("ALTER TABLE customers ADD COLUMN flag int").unwrap();
    let pull = |asked: i64| {
        s.server().query_one(
            "SELECT sync_select_changes('crm', NULL, jsonb_build_object('params', '{\"tenant\": 1}'::jsonb, 'schema_version', $1::int8))",
            &[&asked],
        )
    };
    let error = pull(1).unwrap_err();
    let db = error.as_db_error().expect("a server error");
    assert_eq!(db.code().code(), "55000");
    assert!(db.message().contains("version 2") && db.detail() == Some(r#"{"schema_version":2}"#), "{db:?}");
    assert!(pull(2).is_ok());
}

#[test]
fn a_key_the_server_cannot_read_does_not_stall_a_device_through_a_schema_change() {
    let s = Scenario::new(
        "ddl_bad_key",
        r#"CREATE TABLE t (id uuid PRIMARY KEY, tenant int NOT NULL, v text);
           SELECT sync_provision('crm', '{"tables": [{"name": "t", "filter": {"tenant": "tenant"}}]}');"#,
        "crm",
    );
    let token = s.register(json!({"tenant": 1}));
    let file = s.store("a.db");
    s.sync_as(&file, &token);
    // Written by a program that knows nothing of uuids ('g' is no hex digit).
    local(
        &file,
        "INSERT INTO t VALUES ('00000000-0000-0000-0000-0000000000g4', 1, 'bad'); \
         INSERT INTO t VALUES ('00000000-0000-0000-0000-000000000001', 1, 'good')",
    );
    s.server().batch_execute("ALTER TABLE t RENAME COLUMN v TO w").unwrap();
    let report = s.sync_as(&file, &token);
    let kinds: Vec<_> = report.rejected.iter().map(|r| serde_json::to_value(r.kind).unwrap()).collect();
    assert!(kinds.contains(&json!("invalid_value")) && kinds.contains(&json!("schema_changed")), "{report:?}");
    assert!(s.server().query_opt("SELECT 1 FROM t WHERE w IS NULL", &[]).unwrap().is_some(), "the good row went up");
    s.sync_as(&file, &token);
    assert_converged(&mut s.server(), file.connection(), "crm", &json!({"tenant": 1}));
}

#[test]
fn writes_to_a_table_while_it_was_out_of_the_scope_are_kept_when_it_comes_back() {
    let s = Scenario::new("ddl_written_while_out", SHOP, "crm");
    let token = s.register(json!({"tenant": 1}));
    let file = s.store("a.db");
    s.sync_as(&file, &token);
    let setup = |tables: &str| format!(r#"SELECT sync_provision('crm', '{{"tables": [{tables}]}}')"#);
    let customers = r#"{"name": "customers", "filter": {"tenant_id": "tenant"}}"#;
    let notes = r#"{"name": "notes", "filter": {"tenant_id": "tenant"}}"#;
    s.server().batch_execute(&setup(customers)).unwrap();
    s.sync_as(&file, &token);
    // notes is out of the scope: the device goes on writing it.
    local(
        &file,
        "UPDATE notes SET body = 'written while out' WHERE id = 2; INSERT INTO notes VALUES (100, 1, 'made while out'); \
         DELETE FROM notes WHERE id = 4",
    );
    s.server().batch_execute(&setup(&format!("{customers}, {notes}"))).unwrap();
    s.sync_as(&file, &token);
    assert_converged(&mut s.server(), file.connection(), "crm", &json!({"tenant": 1}));
    // The server's rows replaced the file's; what the device wrote is kept.
    let kept = kept(&file, "public.notes");
    let keys: Vec<&str> = kept.iter().map(|(key, ..)| key.as_str()).collect();
    assert_eq!(keys, ["[100]", "[2]", "[4]"], "{kept:?}");
    assert!(kept[1].1.as_deref().is_some_and(|row| row.contains("written while out")), "{kept:?}");
    assert_eq!(kept[2].1, None, "a delete keeps no row");
    assert!(kept.iter().all(|(_, _, kind, reason)| kind == "schema_changed" && reason.contains("out of scope")), "{kept:?}");
    // Noting stops once the table is back (orders, still out, is noted).
    local(&file, "UPDATE notes SET body = 'synced again' WHERE id = 6");
    assert_eq!(s.sync_as(&file, &token).pushed, 1);
    let noting =
        "SELECT group_concat(name) FROM sqlite_master WHERE type = 'table' AND name GLOB 'tandem_left_*' AND name <> 'tandem_left_tables'";
    assert_eq!(local_value(&file, noting).as_deref(), Some("tandem_left_orders"));
}

#[test]
fn a_renamed_table_is_followed_in_place_with_its_rows_and_unsent_changes() {
    let s = Scenario::new("ddl_rename_table", SHOP, "crm");
    let token = s.register(json!({"tenant": 1}));
    let file = s.store("a.db");
    s.sync_as(&file, &token);
    local(&file, "UPDATE customers SET name = 'edited offline' WHERE id = 2; INSERT INTO orders VALUES (100, 2, 7)");
    s.server().batch_execute("ALTER TABLE customers RENAME TO clients; CREATE SCHEMA sales; ALTER TABLE notes SET SCHEMA sales").unwrap();
    assert_eq!(scope_tables(&s), ["public.clients", "public.orders", "sales.notes"]);
    let report = s.sync_as(&file, &token);
    assert!(report.provisioned && report.rejected.is_empty(), "{report:?}");
    assert_eq!((report.pushed, report.pulled), (2, 0), "the tables were renamed in place, no row moved: {report:?}");
    let name: String = s.server().query_one("SELECT name FROM clients WHERE id = 2", &[]).unwrap().get(0);
    assert_eq!(name, "edited offline");
    assert!(s.server().query_opt("SELECT 1 FROM orders WHERE id = 100", &[]).unwrap().is_some());
    let tables = "SELECT group_concat(name, ',') FROM (SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'tandem%' AND name NOT LIKE 'sqlite%' ORDER BY name)";
    assert_eq!(local_value(&file, tables).as_deref(), Some("clients,orders,sales.notes"));
    assert_converged(&mut s.server(), file.connection(), "crm", &json!({"tenant": 1}));

    // A schema renamed moves its tables; they sync on as before.
    s.server().batch_execute("ALTER SCHEMA sales RENAME TO archive; UPDATE archive.notes SET body = 'after' WHERE id = 2").unwrap();
    local(&file, r#"UPDATE "sales.notes" SET body = 'device' WHERE id = 4"#);
    let report = s.sync_as(&file, &token);
    assert_eq!((report.pushed, report.pulled), (1, 1), "{report:?}");
    assert_eq!(local_value(&file, r#"SELECT body FROM "archive.notes" WHERE id = 2"#).as_deref(), Some("after"));
    assert_converged(&mut s.server(), file.connection(), "crm", &json!({"tenant": 1}));
    // A new file gets the tables under their names now.
    let fresh = s.store("fresh.db");
    s.sync_as(&fresh, &token);
    assert_converged(&mut s.server(), fresh.connection(), "crm", &json!({"tenant": 1}));
    // Names the scope used are not given to another of its tables: a
    // device would take one for the other.
    let error = ddl_error(&s, "ALTER TABLE orders RENAME TO customers");
    assert!(error.contains("customers") && error.contains("never used"), "{error}");

    // A rename that only changes case (SQLite sees no new name), and back
    // to a name the table had.
    s.server().batch_execute(r#"ALTER TABLE clients RENAME TO "Clients""#).unwrap();
    local(&file, "UPDATE clients SET name = 'case' WHERE id = 4");
    assert_eq!(s.sync_as(&file, &token).pushed, 1);
    assert_converged(&mut s.server(), file.connection(), "crm", &json!({"tenant": 1}));
    s.server().batch_execute(r#"ALTER TABLE "Clients" RENAME TO clients"#).unwrap();
    s.sync_as(&file, &token);
    s.sync_as(&fresh, &token);
    assert_converged(&mut s.server(), file.connection(), "crm", &json!({"tenant": 1}));
    assert_converged(&mut s.server(), fresh.connection(), "crm", &json!({"tenant": 1}));
}

#[test]
fn a_column_added_with_a_computed_default_fills_device_inserts_in_files_made_before() {
    let s = Scenario::new("ddl_computed_default", SCHEMA, "crm");
    let token = s.register(json!({"tenant": 1}));
    let file = s.store("a.db");
    s.sync_as(&file, &token);
    s.server()
        .batch_execute("ALTER TABLE customers ADD COLUMN created timestamptz DEFAULT now(), ADD COLUMN code uuid DEFAULT gen_random_uuid()")
        .unwrap();
    s.sync_as(&file, &token);
    // The server's own NULL stays NULL in the file.
    s.server().batch_execute("UPDATE customers SET created = NULL WHERE id = 4").unwrap();
    s.sync_as(&file, &token);
    assert_eq!(local_count(&file, "SELECT count(*) FROM customers WHERE id = 4 AND created IS NULL"), 1);
    // An app insert that leaves the columns out gets what the server would give.
    local(&file, "INSERT INTO customers (id, tenant_id, name) VALUES (200, 1, 'made after the change')");
    assert_eq!(local_count(&file, "SELECT count(*) FROM customers WHERE id = 200 AND created IS NOT NULL AND length(code) = 36"), 1);
    s.sync_as(&file, &token);
    let filled: bool =
        s.server().query_one("SELECT created IS NOT NULL AND code IS NOT NULL FROM customers WHERE id = 200", &[]).unwrap().get(0);
    assert!(filled, "the server row holds the defaults");
    assert_converged(&mut s.server(), file.connection(), "crm", &json!({"tenant": 1}));
}

#[test]
fn a_not_null_column_renamed_under_an_unsent_change_does_not_stall_the_device() {
    let s = Scenario::new(
        "ddl_rename_not_null",
        r#"CREATE TABLE u (id int PRIMARY KEY, tenant_id int NOT NULL, region text NOT NULL, n text);
           INSERT INTO u VALUES (1, 1, 'eu', 'a'), (2, 1, 'us', 'b');
           SELECT sync_provision('crm', '{"tables": [{"name": "u", "filter": {"tenant_id": "tenant"}}]}');"#,
        "crm",
    );
    let token = s.register(json!({"tenant": 1}));
    let file = s.store("a.db");
    s.sync_as(&file, &token);
    local(&file, "UPDATE u SET n = 'local' WHERE id = 1");
    s.server().batch_execute("ALTER TABLE u RENAME COLUMN region TO area").unwrap();
    let report = s.sync_as(&file, &token);
    assert_eq!(report.pushed, 1, "{report:?}");
    let n: String = s.server().query_one("SELECT n FROM u WHERE id = 1", &[]).unwrap().get(0);
    assert_eq!(n, "local");
    assert_converged(&mut s.server(), file.connection(), "crm", &json!({"tenant": 1}));
}

#[test]
fn a_table_made_again_with_another_primary_key_is_received_anew_beside_the_old_copy() {
    let s = Scenario::new("ddl_remade_key", SHOP, "crm");
    let token = s.register(json!({"tenant": 1}));
    let busy = s.store("busy.db");
    let idle = s.store("idle.db");
    s.sync_as(&busy, &token);
    s.sync_as(&idle, &token);
    local(&busy, "UPDATE notes SET body = 'unsent' WHERE id = 2");
    s.server()
        .batch_execute(
            r#"DROP TABLE notes;
               CREATE TABLE notes (code text PRIMARY KEY, tenant_id int NOT NULL, body text);
               INSERT INTO notes VALUES ('a', 1, 'new a'), ('b', 2, 'new b'), ('c', 1, 'new c');
               SELECT sync_provision('crm', '{"tables": [
                 {"name": "customers", "filter": {"tenant_id": "tenant"}},
                 {"name": "orders", "filter": {"via": "customers", "on": {"customer_id": "id"}}},
                 {"name": "notes", "filter": {"tenant_id": "tenant"}}]}');"#,
        )
        .unwrap();
    for file in [&busy, &idle] {
        s.sync_as(file, &token);
        assert_converged(&mut s.server(), file.connection(), "crm", &json!({"tenant": 1}));
        assert_eq!(local_count(file, "SELECT count(*) FROM notes"), 2);
        // The old copy stays, under another name, with a note saying where.
        let aside =
            local_value(file, "SELECT name FROM sqlite_master WHERE type = 'table' AND name GLOB 'notes_before_v*'").expect("the old copy");
        assert_eq!(local_count(file, &format!("SELECT count(*) FROM \"{aside}\"")), 3);
        let note = local_value(file, "SELECT reason FROM tandem_rejected WHERE key = '[]'").unwrap_or_default();
        assert!(note.contains(&aside) && note.contains("made again on the server"), "{note}");
    }
    // The unsent change went nowhere but is kept.
    assert_eq!(local_count(&busy, "SELECT count(*) FROM tandem_rejected WHERE key = '[2]' AND kind = 'schema_changed'"), 1);
    let aside = local_value(&busy, "SELECT name FROM sqlite_master WHERE type = 'table' AND name GLOB 'notes_before_v*'").unwrap();
    assert_eq!(local_count(&busy, &format!("SELECT count(*) FROM \"{aside}\" WHERE body = 'unsent'")), 1);
}

#[test]
fn a_table_made_again_under_its_name_is_another_table_whatever_its_key() {
    // The key's type changed (SQLite stores it otherwise), or nothing did:
    // either way the device holds the dropped table's rows and must not.
    for (case, key) in [("ddl_remade_type", "id text"), ("ddl_remade_same", "id bigint")] {
        let s = Scenario::new(case, SHOP, "crm");
        let token = s.register(json!({"tenant": 1}));
        let asleep = s.store("asleep.db");
        s.sync_as(&asleep, &token);
        local(&asleep, "UPDATE notes SET body = 'unsent' WHERE id = 2");
        s.server()
            .batch_execute(&format!(
                r#"DROP TABLE notes;
                   CREATE TABLE notes ({key} PRIMARY KEY, tenant_id int NOT NULL, body text);
                   INSERT INTO notes VALUES ('7', 1, 'new 7'), ('8', 2, 'new 8');
                   SELECT sync_provision('crm', '{{"tables": [
                     {{"name": "customers", "filter": {{"tenant_id": "tenant"}}}},
                     {{"name": "orders", "filter": {{"via": "customers", "on": {{"customer_id": "id"}}}}}},
                     {{"name": "notes", "filter": {{"tenant_id": "tenant"}}}}]}}');"#
            ))
            .unwrap();
        let report = s.sync_as(&asleep, &token);
        assert_converged(&mut s.server(), asleep.connection(), "crm", &json!({"tenant": 1}));
        assert_eq!(local_count(&asleep, "SELECT count(*) FROM notes"), 1, "{case}: {report:?}");
        assert_eq!(local_count(&asleep, "SELECT count(*) FROM tandem_rejected WHERE key = '[2]' AND kind = 'schema_changed'"), 1, "{case}");
        let body: Option<String> = s.server().query_opt("SELECT body FROM notes WHERE body = 'unsent'", &[]).unwrap().map(|r| r.get(0));
        assert_eq!(body, None, "{case}: the change to the dropped table went nowhere");
    }
}

#[test]
fn a_table_is_not_renamed_to_a_name_a_table_of_its_scope_had() {
    let s = Scenario::new("ddl_rename_former", SHOP, "crm");
    s.server().batch_execute("DROP TABLE notes").unwrap();
    let error = ddl_error(&s, "ALTER TABLE customers RENAME TO notes");
    assert!(error.contains("notes") && error.contains("never used"), "{error}");
    s.server().batch_execute("ALTER TABLE customers RENAME TO clients").unwrap();
}

#[test]
fn a_batch_whose_answer_was_lost_before_a_column_was_dropped_holds_nothing_back() {
    let s = Scenario::new("ddl_drop_in_flight", SCHEMA, "crm");
    let token = s.register(json!({"tenant": 1}));
    let file = s.store("a.db");
    s.server().batch_execute("ALTER TABLE customers ADD COLUMN flag int").unwrap();
    s.sync_as(&file, &token);
    local(&file, "UPDATE customers SET flag = 7, name = 'sent, answer lost' WHERE id = 2");
    s.sync_as_answer_lost(&file, &token);
    // The server's schema moves on before the device syncs again; the
    // device keeps editing, the row it sent too.
    s.server().batch_execute("ALTER TABLE customers DROP COLUMN flag").unwrap();
    local(&file, "UPDATE customers SET name = 'edited since' WHERE id = 4; UPDATE customers SET name = 'edited again' WHERE id = 2");
    let report = s.sync_as(&file, &token);
    assert!(report.provisioned, "{report:?}");
    let names: Vec<String> =
        s.server().query("SELECT name FROM customers WHERE id IN (2, 4) ORDER BY id", &[]).unwrap().iter().map(|r| r.get(0)).collect();
    // The batch cannot go again as it was (it names the dropped column),
    // yet the server applied it: the edit since builds on the device's own
    // write, not a conflict with it (found by an attack helper).
    assert_eq!(names, ["edited again", "edited since"]);
    assert!(report.conflicts.is_empty(), "{report:?}");
    assert_converged(&mut s.server(), file.connection(), "crm", &json!({"tenant": 1}));
    // Nothing is left in flight: the next round sends nothing.
    let again = s.sync_as(&file, &token);
    assert_eq!((again.pushed, again.conflicts.len()), (0, 0), "{again:?}");
}

/// Guards helper 77: a column added with a default computed per row (the
/// time, a random uuid, a sequence) is one the file fills by a trigger,
/// and that trigger must not keep the column in the file once the server
/// drops it (SQLite refuses to drop a column a trigger names). It left
/// every file made before with the column, and later local edits of it
/// went nowhere without a word.
#[test]
fn a_dropped_column_with_a_computed_default_leaves_the_file_too() {
    let s = Scenario::new("ddl_drop_computed_default", SCHEMA, "crm");
    let token = s.register(json!({"tenant": 1}));
    let file = s.store("a.db");
    s.sync_as(&file, &token);
    s.server()
        .batch_execute(
            "CREATE SEQUENCE stamp_numbers; ALTER TABLE customers ADD COLUMN ts timestamptz DEFAULT now(), \
             ADD COLUMN code uuid DEFAULT gen_random_uuid(), ADD COLUMN n bigint DEFAULT nextval('stamp_numbers')",
        )
        .unwrap();
    assert!(s.sync_as(&file, &token).provisioned);
    assert_eq!(local_count(&file, "SELECT count(*) FROM pragma_table_info('customers') WHERE name IN ('ts', 'code', 'n')"), 3);

    s.server().batch_execute("ALTER TABLE customers DROP COLUMN ts, DROP COLUMN code, DROP COLUMN n").unwrap();
    let report = s.sync_as(&file, &token);
    assert!(report.provisioned && report.rejected.is_empty(), "{report:?}");
    assert_eq!(local_count(&file, "SELECT count(*) FROM pragma_table_info('customers') WHERE name IN ('ts', 'code', 'n')"), 0);

    // The other columns sync both ways, and an insert is as before.
    s.server().batch_execute("UPDATE customers SET name = 'from the server' WHERE id = 4").unwrap();
    local(&file, "UPDATE customers SET name = 'from the device' WHERE id = 6; INSERT INTO customers (id, tenant_id) VALUES (300, 1)");
    let report = s.sync_as(&file, &token);
    assert_eq!((report.pushed, report.pulled), (2, 1), "{report:?}");
    assert_eq!(local_value(&file, "SELECT name FROM customers WHERE id = 4").as_deref(), Some("from the server"));
    let name: String = s.server().query_one("SELECT name FROM customers WHERE id = 6", &[]).unwrap().get(0);
    assert_eq!(name, "from the device");
    assert_converged(&mut s.server(), file.connection(), "crm", &json!({"tenant": 1}));
}
