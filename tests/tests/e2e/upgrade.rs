//! `ALTER EXTENSION tandem UPDATE` between this release and the previous
//! one, both ways: a database that holds scopes (one owned by a role whose
//! name needs quoting), registered clients and changes pending both ways
//! keeps them all, each step leaves exactly the objects a fresh install of
//! that version has, the library refuses to work on a database of another
//! version (saying what to run), and once updated, devices go on syncing
//! without noticing.

use postgres::Client;
use serde_json::json;
use tandem_tests::local::{assert_converged, local, local_count, Scenario};
use tandem_tests::{json as query_json, server_url, TestDb};

/// The release before this one: its install script stays in
/// `extension/sql/` so a fresh database of it can be made to compare with.
const PREVIOUS: &str = "0.1.0";

/// A role that owns the scope, dropped when the test ends.
struct Owner(String);

impl Owner {
    fn new() -> Owner {
        let name = format!("Upgrade Owner {}", std::process::id());
        let mut admin = Client::connect(&server_url(), postgres::NoTls).unwrap();
        admin.batch_execute(&format!("DROP ROLE IF EXISTS \"{name}\"; CREATE ROLE \"{name}\" SUPERUSER")).unwrap();
        Owner(name)
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        if let Ok(mut admin) = Client::connect(&server_url(), postgres::NoTls) {
            let _ = admin.batch_execute(&format!("DROP ROLE IF EXISTS \"{}\"", self.0));
        }
    }
}

fn version(client: &mut Client) -> (String, String) {
    let row = client
        .query_one(
            "SELECT e.extversion, a.default_version FROM pg_extension e JOIN pg_available_extensions a ON a.name = e.extname \
             WHERE e.extname = 'tandem'",
            &[],
        )
        .unwrap();
    (row.get(0), row.get(1))
}

/// Every object of the extension, described in text that differs when it
/// does: functions (signature, result, rights, settings, body), tables'
/// columns, constraints and indexes, event triggers, and what pg_dump keeps.
/// Rights are those of PUBLIC and the extension's owner: what provisioning
/// granted a scope's owner, or an operator granted a device, is the
/// database's, not the script's.
fn catalog(client: &mut Client) -> Vec<String> {
    let sql = r#"
CREATE OR REPLACE FUNCTION pg_temp.rights(acl aclitem[], kind "char", owner oid) RETURNS text LANGUAGE sql AS $$
    SELECT string_agg(r.right, ',' ORDER BY r.right) FROM (
        SELECT a.grantee::regrole::text || ':' || a.privilege_type AS right
        FROM aclexplode(coalesce(acl, acldefault(kind, owner))) a
        WHERE a.grantee IN (0, (SELECT extowner FROM pg_extension WHERE extname = 'tandem'))) r
$$;
"#;
    client.batch_execute(sql).unwrap();
    let sql = r#"
WITH ext AS (SELECT oid FROM pg_extension WHERE extname = 'tandem'),
members AS (SELECT d.classid, d.objid FROM pg_depend d, ext WHERE d.refclassid = 'pg_extension'::regclass
            AND d.refobjid = ext.oid AND d.deptype = 'e'),
relations AS (SELECT c.oid, c.relkind FROM pg_class c JOIN members m ON m.classid = 'pg_class'::regclass AND m.objid = c.oid)
SELECT format('function %s returns %s definer=%s volatility=%s strict=%s config=%s acl=%s body=%s',
              p.oid::regprocedure, pg_get_function_result(p.oid), p.prosecdef, p.provolatile, p.proisstrict,
              p.proconfig, pg_temp.rights(p.proacl, 'f', p.proowner), md5(p.prosrc))
FROM pg_proc p JOIN members m ON m.classid = 'pg_proc'::regclass AND m.objid = p.oid
UNION ALL
SELECT format('relation %s kind=%s acl=%s', r.oid::regclass, r.relkind,
              pg_temp.rights(c.relacl, (CASE WHEN r.relkind = 'S' THEN 's' ELSE 'r' END)::"char", c.relowner))
FROM relations r JOIN pg_class c ON c.oid = r.oid
UNION ALL
SELECT format('column %s.%s %s not_null=%s default=%s', a.attrelid::regclass, a.attname,
              format_type(a.atttypid, a.atttypmod), a.attnotnull, pg_get_expr(d.adbin, d.adrelid))
FROM relations r JOIN pg_attribute a ON a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE r.relkind = 'r'
UNION ALL
SELECT format('constraint %s %s %s', c.conrelid::regclass, c.conname, pg_get_constraintdef(c.oid))
FROM pg_constraint c JOIN relations r ON r.oid = c.conrelid
UNION ALL
SELECT format('index %s', pg_get_indexdef(i.indexrelid))
FROM pg_index i JOIN relations r ON r.oid = i.indrelid
UNION ALL
SELECT format('event trigger %s on %s runs %s tags %s enabled %s', t.evtname, t.evtevent, t.evtfoid::regproc, t.evttags, t.evtenabled)
FROM pg_event_trigger t JOIN members m ON m.classid = 'pg_event_trigger'::regclass AND m.objid = t.oid
UNION ALL
SELECT format('dumped %s', c::regclass) FROM ext, pg_extension e, unnest(e.extconfig) c WHERE e.oid = ext.oid
UNION ALL
SELECT format('schema %s owner %s acl %s', n.nspname, n.nspowner::regrole, pg_temp.rights(n.nspacl, 'n', n.nspowner))
FROM pg_namespace n JOIN members m ON m.classid = 'pg_namespace'::regclass AND m.objid = n.oid
ORDER BY 1
"#;
    client.query(sql, &[]).unwrap().iter().map(|row| row.get::<_, String>(0)).collect()
}

#[test]
fn an_update_either_way_keeps_scopes_clients_and_pending_changes_and_matches_a_fresh_install() {
    let owner = Owner::new();
    let schema = format!(
        r#"CREATE TABLE customers (id bigint PRIMARY KEY, tenant_id int NOT NULL, name text);
           INSERT INTO customers VALUES (1, 1, 'Ada'), (2, 1, 'Bob'), (3, 2, 'Cy');
           CREATE TABLE visits (id int, tenant_id int NOT NULL, at date NOT NULL, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
           CREATE TABLE visits_2024 PARTITION OF visits FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
           INSERT INTO visits VALUES (1, 1, '2024-02-01');
           CREATE TABLE prices (amount numeric PRIMARY KEY, label text);
           CREATE TABLE sizes (size numeric, at date, PRIMARY KEY (size, at)) PARTITION BY RANGE (at);
           CREATE TABLE sizes_2024 PARTITION OF sizes FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
           ALTER TABLE customers OWNER TO "{0}";
           ALTER TABLE visits OWNER TO "{0}";
           ALTER TABLE visits_2024 OWNER TO "{0}";
           ALTER TABLE prices OWNER TO "{0}";
           ALTER TABLE sizes OWNER TO "{0}";
           ALTER TABLE sizes_2024 OWNER TO "{0}";
           SET ROLE "{0}";
           SELECT sync_provision('crm', '{{"tables": [{{"name": "customers", "filter": {{"tenant_id": "tenant"}}}},
                                                      {{"name": "visits", "filter": {{"tenant_id": "tenant"}}}},
                                                      {{"name": "prices"}}, {{"name": "sizes"}}]}}');
           RESET ROLE;"#,
        owner.0
    );
    let s = Scenario::new("upgrade", &schema, "crm");
    let mut server = s.server();
    let notifying_at_first = notifying(&mut server);
    assert_eq!(notifying_at_first, 6, "the tables, the partitioned tables and their partitions");
    let key_triggers_at_first = key_triggers(&mut server);
    let (current, default) = version(&mut server);
    assert_eq!(current, default);
    assert_ne!(current, PREVIOUS);

    // A device synced, then changes pile up on both sides; a second device
    // is registered but has never synced.
    let token = s.register(json!({"tenant": 1}));
    let later = s.register(json!({"tenant": 2}));
    let file = s.store("device.db");
    s.sync_as(&file, &token);
    local(&file, "INSERT INTO customers VALUES (10, 1, 'offline'); UPDATE customers SET name = 'edited' WHERE id = 1");
    server.batch_execute("INSERT INTO customers VALUES (11, 1, 'server'); DELETE FROM customers WHERE id = 2").unwrap();

    // Back to the previous release: its exact objects, and this library
    // refuses to work on them.
    server.batch_execute(&format!("ALTER EXTENSION tandem UPDATE TO '{PREVIOUS}'")).unwrap();
    assert_same_objects(&mut server, &mut TestDb::at_version("upgrade_old", Some(PREVIOUS)).connect());
    let error = file.sync(&s.db.url, "crm", &serde_json::from_value(json!({"token": token})).unwrap()).unwrap_err().to_string();
    assert!(error.contains(&format!("version {PREVIOUS}")) && error.contains("ALTER EXTENSION tandem UPDATE"), "{error}");
    assert_eq!(notifying(&mut server), 0, "0.1.0 has no live sync");
    let owner_text: String = server.query_one("SELECT owner FROM tandem.scopes", &[]).unwrap().get(0);
    assert_eq!(owner_text, owner.0, "0.1.0 kept the owner by name");

    let partitioned_keys: i64 = server
        .query_one(
            "SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'tandem_%_key' AND tgrelid IN ('sizes'::regclass, 'sizes_2024'::regclass)",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(partitioned_keys, 0, "0.1.0 has no key trigger on a partitioned table, nor on its partitions");
    // 0.1.0 provisioned a key trigger that fired only for statements
    // naming a key column, and only when its value changed.
    server
        .batch_execute(
            "DO $$ DECLARE _id bigint; _table text; BEGIN \
             FOREACH _table IN ARRAY ARRAY['customers.id', 'prices.amount'] LOOP \
             _id := (SELECT id FROM tandem.scope_tables WHERE relid::oid = split_part(_table, '.', 1)::regclass::oid); \
             EXECUTE format('CREATE OR REPLACE TRIGGER %I AFTER UPDATE OF %3$I ON %2$I FOR EACH ROW \
             WHEN (OLD.%3$I IS DISTINCT FROM NEW.%3$I) EXECUTE FUNCTION tandem.%4$I()', 'tandem_' || _id || '_key', \
             split_part(_table, '.', 1), split_part(_table, '.', 2), 'on_key_' || _id); END LOOP; END $$",
        )
        .unwrap();
    assert_ne!(key_triggers(&mut server), key_triggers_at_first);
    assert_eq!(key_triggers_naming_columns(&mut server), 2);

    // And forward again.
    server.batch_execute("ALTER EXTENSION tandem UPDATE").unwrap();
    assert_eq!(version(&mut server).0, current);
    assert_eq!(key_triggers_naming_columns(&mut server), 0, "a key changed by a BEFORE trigger of the table's own is seen");
    assert_eq!(key_triggers(&mut server), key_triggers_at_first, "as provisioning makes them: a key's new text is seen too");
    assert_same_objects(&mut server, &mut TestDb::new("upgrade_fresh").connect());
    assert_eq!(notifying(&mut server), notifying_at_first, "the scope's tables notify their commits again");
    let owner_role: String = server.query_one("SELECT owner::text FROM tandem.scopes", &[]).unwrap().get(0);
    assert_eq!(owner_role, format!("\"{}\"", owner.0), "the owner is the same role");

    let report = s.sync_as(&file, &token);
    assert_eq!((report.pushed, report.resynced), (2, false), "{report:?}");
    assert_converged(&mut server, file.connection(), "crm", &json!({"tenant": 1}));
    let names: Vec<String> =
        server.query("SELECT name FROM customers WHERE id IN (1, 10) ORDER BY id", &[]).unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(names, ["edited", "offline"]);
    assert_eq!(local_count(&file, "SELECT count(*) FROM customers WHERE id IN (2, 11)"), 1, "the delete and the insert arrived");

    let other = s.store("other.db");
    s.sync_as(&other, &later);
    assert_converged(&mut server, other.connection(), "crm", &json!({"tenant": 2}));
    assert_eq!(query_json(&mut server, "SELECT sync_clients('crm')", &[]).as_array().unwrap().len(), 2);
}

/// Key triggers that fire only for statements naming a key column.
fn key_triggers_naming_columns(client: &mut Client) -> i64 {
    client.query_one("SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'tandem_%_key' AND tgattr::text <> ''", &[]).unwrap().get(0)
}

/// The key triggers of the scope's tables, as `pg_get_triggerdef` prints them.
fn key_triggers(client: &mut Client) -> Vec<String> {
    let sql = "SELECT pg_get_triggerdef(oid) FROM pg_trigger WHERE tgname LIKE 'tandem_%_key' AND tgparentid = 0 ORDER BY 1";
    client.query(sql, &[]).unwrap().iter().map(|row| row.get(0)).collect()
}

/// Relations whose writes notify `LISTEN tandem`.
fn notifying(client: &mut Client) -> i64 {
    client.query_one("SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'tandem_%_notify'", &[]).unwrap().get(0)
}

fn assert_same_objects(updated: &mut Client, fresh: &mut Client) {
    let (updated, made) = (catalog(updated), catalog(fresh));
    let missing: Vec<_> = made.iter().filter(|o| !updated.contains(o)).collect();
    let extra: Vec<_> = updated.iter().filter(|o| !made.contains(o)).collect();
    assert!(missing.is_empty() && extra.is_empty(), "the update script misses {missing:#?}\nand leaves {extra:#?}");
}
