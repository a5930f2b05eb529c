//! Values that pass Tandem's checks but not PostgreSQL's, values the server
//! would store other than sent, and rows the server's own rules decline:
//! each costs only its row (refused by name, kept in `tandem_rejected`),
//! the rest applies, and no later sync is blocked.

use serde_json::json;
use tandem_tests::local::{assert_converged, local, local_count, Scenario};

const SCHEMA: &str = r#"
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN positive AS int CHECK (VALUE > 0);
CREATE TABLE things (
    id bigint PRIMARY KEY, tenant_id int NOT NULL,
    code varchar(5), d date, m mood, n numeric(5,2), big numeric, p positive,
    tags int[], doc tsvector, at timestamptz, j jsonb);
INSERT INTO things (id, tenant_id, code) VALUES (1, 1, 'one');
SELECT sync_provision('s', '{"tables": [{"name": "things", "filter": {"tenant_id": "tenant"}}]}');
"#;

#[test]
fn each_bad_value_costs_only_its_row() {
    let s = Scenario::new("poison", SCHEMA, "s");
    let token = s.register(json!({"tenant": 1}));
    let device = s.store("device.db");
    s.sync_as(&device, &token);
    let bad = [
        (10, "code", "'far too long'", "exactly"),
        (11, "d", "'5874898-01-01'", "out of range"),
        (12, "m", "'furious'", "invalid input value for enum"),
        (13, "n", "'1.234'", "exactly"),
        (14, "big", "'1e1000000'", "overflow"),
        (15, "p", "-3", "positive"),
        (16, "tags", "'{1,x}'", "invalid input syntax"),
        (17, "at", "'2025-03-16 12:00:00+99'", "time zone"),
        (18, "j", r#"'{"a": "\u0000"}'"#, "Unicode"),
        (19, "doc", "'a:1A:2B'", "tsvector"),
    ];
    for (id, column, value, _) in bad {
        local(&device, &format!("INSERT INTO things (id, tenant_id, {column}) VALUES ({id}, 1, {value})"));
    }
    local(&device, "INSERT INTO things (id, tenant_id, code, n) VALUES (20, 1, 'good', '1.5')");
    s.server().batch_execute("INSERT INTO things (id, tenant_id, code) VALUES (30, 1, 'srv')").unwrap();

    let report = s.sync_as(&device, &token);
    assert_eq!(report.pushed, 1, "the good row applies: {report:?}");
    assert_eq!(local_count(&device, "SELECT count(*) FROM things WHERE id = 30"), 1, "the server's row arrives in the same round");
    assert_eq!(
        device.connection().query_row("SELECT n FROM things WHERE id = 20", [], |r| r.get::<_, String>(0)).unwrap(),
        "1.50",
        "the good row takes the server's form"
    );
    for (id, column, _, reason) in bad {
        let refused =
            report.rejected.iter().find(|r| r.key == vec![json!(id)]).unwrap_or_else(|| panic!("row {id} is not refused: {report:?}"));
        assert!(refused.reason.contains(column), "row {id}: the reason names column {column}: {}", refused.reason);
        assert!(refused.reason.contains(reason), "row {id}: {}", refused.reason);
        assert_eq!(
            local_count(&device, &format!("SELECT count(*) FROM tandem_rejected WHERE key = '[{id}]' AND row IS NOT NULL")),
            1,
            "row {id} is kept"
        );
    }
    assert_eq!(report.rejected.len(), bad.len(), "{report:?}");
    let good: String = s.server().query_one("SELECT n::text FROM things WHERE id = 20", &[]).unwrap().get(0);
    assert_eq!(good, "1.50");
    let truncated: i64 = s.server().query_one("SELECT count(*) FROM things WHERE id BETWEEN 10 AND 19", &[]).unwrap().get(0);
    assert_eq!(truncated, 0, "no refused row reached the server, cut or rounded");
    assert_converged(&mut s.server(), device.connection(), "s", &json!({"tenant": 1}));

    // Nothing is left to block the next rounds, both ways.
    s.server().batch_execute("UPDATE things SET code = 'again' WHERE id = 1").unwrap();
    let report = s.sync_as(&device, &token);
    assert_eq!((report.pulled, report.rejected.len()), (1, 0), "{report:?}");
}

const DECLINING: &str = r#"
CREATE TABLE notes (id bigint PRIMARY KEY, tenant_id int NOT NULL, body text, deleted_at timestamptz);
-- Soft delete: a delete becomes an update.
CREATE FUNCTION soft_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN UPDATE notes SET deleted_at = '2026-01-01' WHERE id = OLD.id; RETURN NULL; END $$;
CREATE TRIGGER soft_delete BEFORE DELETE ON notes FOR EACH ROW EXECUTE FUNCTION soft_delete();
-- A rule of the server's: a note may not be emptied, and a locked note not changed.
CREATE FUNCTION guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.body = '' THEN RAISE EXCEPTION 'a note may not be empty'; END IF;
  IF OLD.body = 'locked' THEN RETURN NULL; END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER guard BEFORE UPDATE ON notes FOR EACH ROW EXECUTE FUNCTION guard();
INSERT INTO notes VALUES (1, 1, 'keep me', NULL), (2, 1, 'locked', NULL), (3, 1, 'plain', NULL), (4, 1, 'fine', NULL);
SELECT sync_provision('s', '{"tables": [{"name": "notes", "filter": {"tenant_id": "tenant"}}]}');
"#;

#[test]
fn a_row_the_servers_own_rules_decline_costs_only_that_row() {
    let s = Scenario::new("declined", DECLINING, "s");
    let token = s.register(json!({"tenant": 1}));
    let device = s.store("device.db");
    s.sync_as(&device, &token);
    local(
        &device,
        "DELETE FROM notes WHERE id = 1; UPDATE notes SET body = 'changed' WHERE id = 2; \
         UPDATE notes SET body = '' WHERE id = 3; UPDATE notes SET body = 'fine, edited' WHERE id = 4",
    );
    let report = s.sync_as(&device, &token);
    assert_eq!(report.pushed, 1, "the one allowed edit applies: {report:?}");
    assert!(report.rejected.iter().any(|r| r.key == vec![json!(3)] && r.reason.contains("may not be empty")), "{report:?}");
    let declined: Vec<_> = report.conflicts.iter().map(|c| c.key.clone()).collect();
    assert!(declined.contains(&vec![json!(1)]) && declined.contains(&vec![json!(2)]), "declined writes end as the server's: {report:?}");
    assert_eq!(
        local_count(&device, "SELECT count(*) FROM notes WHERE id = 1 AND deleted_at IS NOT NULL"),
        1,
        "the soft delete reached the device"
    );
    assert_eq!(local_count(&device, "SELECT count(*) FROM notes WHERE id = 2 AND body = 'locked'"), 1);
    assert_converged(&mut s.server(), device.connection(), "s", &json!({"tenant": 1}));
    let report = s.sync_as(&device, &token);
    assert!(report.conflicts.is_empty() && report.rejected.is_empty(), "nothing left to retry: {report:?}");
}

#[test]
fn a_soft_delete_under_client_wins_ends_as_the_servers_row_instead_of_failing_every_sync() {
    // The device's delete wins its conflict each time it is written, and
    // each time the server's trigger turns it into an update instead.
    let schema = DECLINING.replace(
        r#"[{"name": "notes", "filter": {"tenant_id": "tenant"}}]}"#,
        r#"[{"name": "notes", "filter": {"tenant_id": "tenant"}}], "policy": "client_wins"}"#,
    );
    assert!(schema.contains("client_wins"));
    let s = Scenario::new("soft_delete_wins", &schema, "s");
    let token = s.register(json!({"tenant": 1}));
    let device = s.store("device.db");
    s.sync_as(&device, &token);
    local(&device, "DELETE FROM notes WHERE id = 1; UPDATE notes SET body = 'fine, edited' WHERE id = 4");
    let report = s.sync_as(&device, &token);
    assert_eq!(report.pushed, 1, "{report:?}");
    assert!(report.conflicts.iter().any(|c| c.key == vec![json!(1)]), "the declined delete is logged: {report:?}");
    assert_eq!(
        local_count(&device, "SELECT count(*) FROM notes WHERE id = 1 AND deleted_at IS NOT NULL"),
        1,
        "the soft delete reached the device"
    );
    assert_converged(&mut s.server(), device.connection(), "s", &json!({"tenant": 1}));
}

#[test]
fn an_upload_the_server_fails_does_not_hold_back_the_pull() {
    let schema = r#"
CREATE TABLE notes (id bigint PRIMARY KEY, tenant_id int NOT NULL, body text);
-- A server that fails the whole write (not a row's fault: an error class
-- that is the server's own).
CREATE FUNCTION outage() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN IF NEW.body = 'during the outage' THEN RAISE EXCEPTION 'storage unavailable' USING ERRCODE = '53100'; END IF; RETURN NEW; END $$;
CREATE TRIGGER outage BEFORE INSERT OR UPDATE ON notes FOR EACH ROW EXECUTE FUNCTION outage();
INSERT INTO notes VALUES (1, 1, 'first');
SELECT sync_provision('s', '{"tables": [{"name": "notes", "filter": {"tenant_id": "tenant"}}]}');
"#;
    let s = Scenario::new("push_fails", schema, "s");
    let token = s.register(json!({"tenant": 1}));
    let device = s.store("device.db");
    s.sync_as(&device, &token);
    local(&device, "UPDATE notes SET body = 'during the outage' WHERE id = 1");
    s.server().batch_execute("INSERT INTO notes VALUES (2, 1, 'from the server')").unwrap();
    let options = tandem_local::SyncOptions { token: Some(token.clone()), ..Default::default() };
    let error = device.sync(&s.db.url, "s", &options).unwrap_err().to_string();
    assert!(error.contains("storage unavailable") && error.contains("the pull ran: 1 row(s) down"), "{error}");
    assert_eq!(local_count(&device, "SELECT count(*) FROM notes WHERE id = 2"), 1, "the pull ran");
    assert_eq!(local_count(&device, "SELECT count(*) FROM notes WHERE id = 1 AND body = 'during the outage'"), 1, "the local change waits");
    s.server().batch_execute("DROP TRIGGER outage ON notes").unwrap();
    let report = s.sync_as(&device, &token);
    assert_eq!(report.pushed, 1, "{report:?}");
    assert_converged(&mut s.server(), device.connection(), "s", &json!({"tenant": 1}));
}

const KEYS: &str = r#"
CREATE TABLE days (d date PRIMARY KEY, tenant_id int NOT NULL, v text);
CREATE TABLE pairs (a int, b date, tenant_id int NOT NULL, v text, PRIMARY KEY (a, b));
CREATE TABLE notes (id int PRIMARY KEY, tenant_id int NOT NULL, v text);
CREATE INDEX ON notes (v);
INSERT INTO pairs VALUES (2, '2024-01-02', 1, 'two');
SELECT sync_provision('s', '{"tables": [
    {"name": "days", "filter": {"tenant_id": "tenant"}},
    {"name": "pairs", "filter": {"tenant_id": "tenant"}},
    {"name": "notes", "filter": {"tenant_id": "tenant"}}]}');
"#;

#[test]
fn a_key_the_server_cannot_store_costs_only_its_row() {
    let s = Scenario::new("poison_keys", KEYS, "s");
    let token = s.register(json!({"tenant": 1}));
    let file = s.store("a.db");
    s.sync_as(&file, &token);
    local(
        &file,
        "INSERT INTO days VALUES ('2024-02-30', 1, 'no such day');
         INSERT INTO pairs VALUES ('zz', '2024-01-05', 1, 'text in an integer key');
         UPDATE pairs SET a = 'abc' WHERE a = 2;
         INSERT INTO pairs VALUES (7, '2024-01-07', 1, 'good');
         INSERT INTO notes VALUES (1, 1, 'fine');",
    );
    // A value too large for the server's index is refused by its row too.
    local(&file, "INSERT INTO notes VALUES (2, 1, hex(randomblob(8000)))");
    let report = s.sync_as(&file, &token);
    assert_eq!((report.pushed, report.rejected.len()), (2, 4), "{report:?}");
    let rejected = local_count(&file, "SELECT count(*) FROM tandem_rejected");
    assert_eq!(rejected, 4, "each refusal kept once");
    assert_eq!(local_count(&file, "SELECT count(*) FROM pairs WHERE a = 2"), 1, "the old row of the refused key change is back");
    let again = s.sync_as(&file, &token);
    assert_eq!((again.pushed, again.rejected.len()), (0, 0), "nothing left to send: {again:?}");
    assert_eq!(local_count(&file, "SELECT count(*) FROM tandem_rejected"), 4);
    assert_converged(&mut s.server(), file.connection(), "s", &json!({"tenant": 1}));
}

#[test]
fn a_deferred_foreign_key_costs_only_its_row() {
    let s = Scenario::new(
        "poison_deferred",
        r#"
        CREATE TABLE parents (id int PRIMARY KEY, tenant_id int NOT NULL);
        CREATE TABLE kids (id int PRIMARY KEY, tenant_id int NOT NULL,
                           parent_id int REFERENCES parents DEFERRABLE INITIALLY DEFERRED);
        SELECT sync_provision('s', '{"tables": [
            {"name": "parents", "filter": {"tenant_id": "tenant"}},
            {"name": "kids", "filter": {"tenant_id": "tenant"}}]}');
        "#,
        "s",
    );
    let token = s.register(json!({"tenant": 1}));
    let file = s.store("a.db");
    s.sync_as(&file, &token);
    local(&file, "INSERT INTO parents VALUES (1, 1); INSERT INTO kids VALUES (1, 1, 1), (2, 1, 99);");
    let report = s.sync_as(&file, &token);
    assert_eq!((report.pushed, report.conflicts.len()), (2, 1), "{report:?}");
    let kids: i64 = s.server().query_one("SELECT count(*) FROM kids", &[]).unwrap().get(0);
    assert_eq!(kids, 1);
    assert_converged(&mut s.server(), file.connection(), "s", &json!({"tenant": 1}));
}

#[test]
fn a_row_the_server_refuses_with_any_error_of_its_own_costs_only_that_row() {
    let s = Scenario::new(
        "poison_any_code",
        r#"
        CREATE TABLE notes (id int PRIMARY KEY, tenant_id int NOT NULL, v text CHECK (v <> 'bad'), secret numeric);
        INSERT INTO notes VALUES (1, 1, 'one', 123.45);
        CREATE FUNCTION guard() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.v = 'forbidden' THEN RAISE EXCEPTION 'no' USING ERRCODE = 'insufficient_privilege'; END IF;
            IF NEW.v = 'custom' THEN RAISE EXCEPTION 'not this one' USING ERRCODE = 'AB123'; END IF;
            IF NEW.v = 'missing' THEN EXECUTE 'SELECT 1 FROM no_such_table'; END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER guard BEFORE INSERT OR UPDATE ON notes FOR EACH ROW EXECUTE FUNCTION guard();
        SELECT sync_provision('s', '{"tables": [{"name": "notes", "columns": ["id", "tenant_id", "v"], "filter": {"tenant_id": "tenant"}}]}');
        "#,
        "s",
    );
    let token = s.register(json!({"tenant": 1}));
    let file = s.store("a.db");
    s.sync_as(&file, &token);
    local(
        &file,
        "INSERT INTO notes VALUES (2, 1, 'forbidden'), (3, 1, 'custom'), (4, 1, 'missing'), (5, 1, 'fine');
         UPDATE notes SET v = 'bad' WHERE id = 1;",
    );
    let report = s.sync_as(&file, &token);
    assert_eq!((report.pushed, report.rejected.len(), report.conflicts.len()), (1, 3, 1), "{report:?}");
    let told = serde_json::to_string(&report).unwrap();
    assert!(!told.contains("123.45"), "a reason never prints a column the scope leaves out: {told}");
    let again = s.sync_as(&file, &token);
    assert_eq!((again.pushed, again.rejected.len()), (0, 0), "{again:?}");
    assert_converged(&mut s.server(), file.connection(), "s", &json!({"tenant": 1}));
}

/// Helper 107: a trigger refusing a row with a code of class 55 (`object
/// not in prerequisite state`), and a jsonb value nested past what the
/// server's parser takes (`stack depth limit exceeded`, class 54): each
/// failed the whole upload, held and sent again every round, so nothing
/// of the file went up again. Each costs only its row now; a lock not
/// granted in time still fails the upload (it is the server's, and passes).
#[test]
fn a_row_refused_for_the_servers_state_or_its_limits_costs_only_that_row() {
    let s = Scenario::new(
        "poison_state_and_limits",
        r#"
        CREATE TABLE notes (id int PRIMARY KEY, tenant_id int NOT NULL, v text, j jsonb);
        CREATE FUNCTION guard() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.v = 'not yet' THEN RAISE EXCEPTION 'prerequisite' USING ERRCODE = 'object_not_in_prerequisite_state'; END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER guard BEFORE INSERT OR UPDATE ON notes FOR EACH ROW EXECUTE FUNCTION guard();
        SELECT sync_provision('s', '{"tables": [{"name": "notes", "filter": {"tenant_id": "tenant"}}]}');
        "#,
        "s",
    );
    let token = s.register(json!({"tenant": 1}));
    let file = s.store("a.db");
    s.sync_as(&file, &token);
    let deep = format!("{}{}", "[".repeat(20_000), "]".repeat(20_000));
    file.connection().execute("INSERT INTO notes VALUES (2, 1, 'deep', ?1)", [&deep]).unwrap();
    local(&file, "INSERT INTO notes VALUES (3, 1, 'not yet', NULL), (4, 1, 'fine', '{\"a\": 1}')");
    let report = s.sync_as(&file, &token);
    assert_eq!((report.pushed, report.rejected.len()), (1, 2), "{report:?}");
    let again = s.sync_as(&file, &token);
    assert_eq!((again.pushed, again.rejected.len()), (0, 0), "{again:?}");
    local(&file, "INSERT INTO notes VALUES (5, 1, 'later', NULL)");
    assert_eq!(s.sync_as(&file, &token).pushed, 1, "later changes go up");
    assert_converged(&mut s.server(), file.connection(), "s", &json!({"tenant": 1}));
}
