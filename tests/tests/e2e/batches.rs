//! Uploads and pulls in batches: what one batch holds must never undo what
//! the next one brings, and no batch may outgrow what a connection carries.

use serde_json::json;
use tandem_local::{Step, SyncOptions};
use tandem_tests::local::{assert_converged, local, Scenario};

const ORDERS: &str = r#"
CREATE TABLE orders (id int PRIMARY KEY, tenant_id int NOT NULL);
CREATE TABLE items (id int PRIMARY KEY, tenant_id int NOT NULL, order_id int NOT NULL REFERENCES orders (id));
INSERT INTO orders VALUES (1, 1), (2, 1);
INSERT INTO items SELECT i, 1, 1 + i % 2 FROM generate_series(1, 25) i;
SELECT sync_provision('s', '{"tables": [
    {"name": "orders", "filter": {"tenant_id": "tenant"}},
    {"name": "items", "filter": {"tenant_id": "tenant"}}]}');
"#;

#[test]
fn a_parent_deleted_with_more_children_than_a_batch_holds_stays_deleted() {
    let s = Scenario::new("batch_deletes", ORDERS, "s");
    let token = s.register(json!({"tenant": 1}));
    let file = s.store("a.db");
    s.sync(&file, json!({"token": token, "max_rows": 10}));
    local(&file, "DELETE FROM items; DELETE FROM orders;");
    let report = s.sync(&file, json!({"token": token, "max_rows": 10}));
    assert_eq!((report.pushed, report.conflicts.len(), report.rejected.len()), (27, 0, 0), "{report:?}");
    let left: i64 = s.server().query_one("SELECT count(*) FROM orders", &[]).unwrap().get(0);
    assert_eq!(left, 0, "the parents' deletes waited for their children's");
    assert_converged(&mut s.server(), file.connection(), "s", &json!({"tenant": 1}));
}

const NOTES: &str = r#"
CREATE TABLE notes (id int PRIMARY KEY, tenant_id int NOT NULL, body text);
INSERT INTO notes SELECT i, 1, repeat(chr(64 + i), 1024 * 1024) FROM generate_series(1, 10) i;
SELECT sync_provision('s', '{"tables": [{"name": "notes", "filter": {"tenant_id": "tenant"}}]}');
"#;

#[test]
fn batches_are_bounded_by_bytes_as_well_as_rows() {
    let s = Scenario::new("batch_bytes", NOTES, "s");
    let token = s.register(json!({"tenant": 1}));
    let file = s.store("a.db");
    let options = SyncOptions { token: Some(token.clone()), max_bytes: Some(3 << 20), ..SyncOptions::default() };
    let mut steps = Vec::new();
    let report = file.sync_observed(&s.db.url, "s", &options, &mut |step| steps.push(step)).unwrap();
    assert_eq!(report.pulled, 10, "{report:?}");
    let pulls = steps.iter().filter(|s| matches!(s, Step::Pulled(_))).count();
    assert!((4..=5).contains(&pulls), "1 MB rows, 3 MB batches: {steps:?}");
    local(&file, "UPDATE notes SET body = replace(body, char(64 + id), 'z')");
    let mut steps = Vec::new();
    let report = file.sync_observed(&s.db.url, "s", &options, &mut |step| steps.push(step)).unwrap();
    assert_eq!((report.pushed, report.rejected.len()), (10, 0), "{report:?}");
    let pushes = steps.iter().filter(|s| matches!(s, Step::Pushed(_))).count();
    assert!((4..=5).contains(&pushes), "{steps:?}");
    assert_eq!(steps.first(), Some(&Step::ToPush(10)), "the upload's total comes first, for progress: {steps:?}");
    assert_converged(&mut s.server(), file.connection(), "s", &json!({"tenant": 1}));
    // A bound no batch could keep is refused up front.
    let error = SyncOptions::parse(Some(&json!({"max_bytes": 0}))).unwrap_err();
    assert!(error.to_string().contains("max_bytes must be between 1 and"), "{error}");
}

#[test]
fn a_parents_deletes_that_fill_a_batch_still_go() {
    let s = Scenario::new(
        "batch_full_deletes",
        r#"
        CREATE TABLE p (id int PRIMARY KEY, tenant_id int NOT NULL);
        CREATE TABLE c (id int PRIMARY KEY, p_id int REFERENCES p (id), tenant_id int NOT NULL);
        INSERT INTO p SELECT g, 1 FROM generate_series(0, 13) g;
        INSERT INTO c VALUES (1, 0, 1);
        SELECT sync_provision('s', '{"tables": [
            {"name": "p", "filter": {"tenant_id": "tenant"}},
            {"name": "c", "filter": {"tenant_id": "tenant"}}]}');
        "#,
        "s",
    );
    let token = s.register(json!({"tenant": 1}));
    let file = s.store("a.db");
    s.sync_as(&file, &token);
    local(&file, "DELETE FROM p WHERE id > 0");
    let report = s.sync(&file, json!({"token": token, "max_rows": 13}));
    assert_eq!((report.pushed, report.conflicts.len()), (13, 0), "{report:?}");
    let left: i64 = s.server().query_one("SELECT count(*) FROM p", &[]).unwrap().get(0);
    assert_eq!(left, 1);
}
