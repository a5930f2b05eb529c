//! Files that share an identity: a reinstall (a new file with a token that
//! already synced), a file restored from a backup, a copied file synced
//! beside its original. Each must hold its whole partition and keep every
//! edit it makes, whatever the other files of that token did.

use std::path::Path;

use serde_json::json;
use tandem_local::Store;
use tandem_local::SyncOptions;
use tandem_tests::local::{assert_converged, local, local_count, Interfering, Scenario};

const SCHEMA: &str = r#"
CREATE TABLE customers (id bigint PRIMARY KEY, tenant_id int NOT NULL, name text, code varchar(5), d date);
INSERT INTO customers SELECT g, 1 + (g > 10)::int, 'customer ' || g, 'C' || g, date '2024-01-01' + g FROM generate_series(1, 12) g;
SELECT sync_provision('crm', '{"tables": [{"name": "customers", "filter": {"tenant_id": "tenant"}}]}');
"#;

fn local_name(store: &Store, id: i64) -> Option<String> {
    store.connection().query_row("SELECT name FROM customers WHERE id = ?1", [id], |r| r.get(0)).ok()
}

fn server_name(s: &Scenario, id: i64) -> Option<String> {
    s.server().query_opt("SELECT name FROM customers WHERE id = $1", &[&id]).unwrap().map(|r| r.get(0))
}

/// Copies a closed local file (its WAL is checkpointed when it closes).
fn copy(from: &Path, to: &Path) {
    Store::remove(to);
    std::fs::copy(from, to).expect("copy the file");
}

#[test]
fn a_new_file_with_a_token_that_synced_gets_the_whole_partition_and_keeps_its_edits() {
    let s = Scenario::new("reinstall", SCHEMA, "crm");
    let token = s.register(json!({"tenant": 1}));
    let a = s.store("a.db");
    s.sync_as(&a, &token);
    local(&a, "UPDATE customers SET name = 'from a' WHERE id = 1");
    assert_eq!(s.sync_as(&a, &token).pushed, 1);

    // The device is reinstalled: a new file, the same token.
    let b = s.store("b.db");
    s.sync_as(&b, &token);
    assert_eq!(local_name(&b, 1).as_deref(), Some("from a"), "a first sync holds the whole partition, the token's own writes too");
    local(&b, "UPDATE customers SET name = 'from b' WHERE id = 2; INSERT INTO customers VALUES (13, 1, 'new in b', 'N13', NULL)");
    let report = s.sync_as(&b, &token);
    assert_eq!((report.pushed, report.conflicts.len()), (2, 0), "{report:?}");
    assert_eq!(server_name(&s, 2).as_deref(), Some("from b"));
    assert_eq!(server_name(&s, 13).as_deref(), Some("new in b"));
    assert_eq!(local_name(&b, 13).as_deref(), Some("new in b"), "the insert stays in the file");
    assert_converged(&mut s.server(), b.connection(), "crm", &json!({"tenant": 1}));
    s.sync_as(&a, &token);
    assert_converged(&mut s.server(), a.connection(), "crm", &json!({"tenant": 1}));
}

#[test]
fn a_file_restored_from_a_backup_keeps_its_new_edits_and_gets_back_what_it_lost() {
    let s = Scenario::new("restore", SCHEMA, "crm");
    let token = s.register(json!({"tenant": 1}));
    let path = s.files.path("device.db");
    let backup = s.files.path("backup.db");
    {
        let device = Store::open(&path).unwrap();
        s.sync_as(&device, &token);
        local(&device, "UPDATE customers SET name = 'before the backup' WHERE id = 1");
        s.sync_as(&device, &token);
    }
    copy(&path, &backup);
    {
        // After the backup, the device goes on: its edits reach the server.
        let device = Store::open(&path).unwrap();
        for (id, name) in [(3, "after the backup"), (4, "later still"), (5, "last before the loss")] {
            local(&device, &format!("UPDATE customers SET name = '{name}' WHERE id = {id}"));
            assert_eq!(s.sync_as(&device, &token).pushed, 1);
        }
    }
    // The device is lost; its backup is restored and used.
    copy(&backup, &path);
    let restored = Store::open(&path).unwrap();
    local(
        &restored,
        "UPDATE customers SET name = 'restored edit' WHERE id = 6; INSERT INTO customers VALUES (14, 1, 'restored insert', NULL, NULL)",
    );
    let report = s.sync_as(&restored, &token);
    assert_eq!(report.pushed, 2, "new edits of a restored file are new changes, not re-uploads: {report:?}");
    assert_eq!(server_name(&s, 6).as_deref(), Some("restored edit"));
    assert_eq!(server_name(&s, 14).as_deref(), Some("restored insert"));
    for (id, name) in [(3, "after the backup"), (4, "later still"), (5, "last before the loss")] {
        assert_eq!(local_name(&restored, id).as_deref(), Some(name), "the restored file gets back what the device wrote after its backup");
    }
    assert_converged(&mut s.server(), restored.connection(), "crm", &json!({"tenant": 1}));
}

#[test]
fn a_restored_file_that_edits_a_row_its_lost_future_changed_meets_a_conflict() {
    let s = Scenario::new("restore_conflict", SCHEMA, "crm");
    let token = s.register(json!({"tenant": 1}));
    let path = s.files.path("device.db");
    let backup = s.files.path("backup.db");
    {
        let device = Store::open(&path).unwrap();
        s.sync_as(&device, &token);
    }
    copy(&path, &backup);
    {
        let device = Store::open(&path).unwrap();
        local(&device, "UPDATE customers SET name = 'written after the backup' WHERE id = 7");
        s.sync_as(&device, &token);
    }
    copy(&backup, &path);
    let restored = Store::open(&path).unwrap();
    local(&restored, "UPDATE customers SET name = 'restored file edit' WHERE id = 7");
    let report = s.sync_as(&restored, &token);
    assert_eq!(report.conflicts.len(), 1, "the server's row changed since the restored file's version: {report:?}");
    assert_eq!(server_name(&s, 7).as_deref(), Some("written after the backup"), "server_wins");
    let logged: i64 =
        s.server().query_one("SELECT count(*) FROM tandem.conflicts WHERE client_row->>'name' = 'restored file edit'", &[]).unwrap().get(0);
    assert_eq!(logged, 1, "the losing edit is kept in the conflict log");
    assert_converged(&mut s.server(), restored.connection(), "crm", &json!({"tenant": 1}));
}

#[test]
fn a_copied_file_synced_beside_its_original_converges_with_it() {
    let s = Scenario::new("copied", SCHEMA, "crm");
    let token = s.register(json!({"tenant": 1}));
    let original = s.files.path("original.db");
    let copied = s.files.path("copy.db");
    {
        let a = Store::open(&original).unwrap();
        s.sync_as(&a, &token);
    }
    copy(&original, &copied);
    let a = Store::open(&original).unwrap();
    let b = Store::open(&copied).unwrap();
    for round in 0..3 {
        local(&a, &format!("UPDATE customers SET name = 'a{round}' WHERE id = {}", 1 + round));
        local(&b, &format!("UPDATE customers SET name = 'b{round}' WHERE id = {}", 5 + round));
        s.sync_as(&a, &token);
        s.sync_as(&b, &token);
    }
    s.sync_as(&a, &token);
    for round in 0..3 {
        assert_eq!(server_name(&s, 1 + round).as_deref(), Some(format!("a{round}").as_str()));
        assert_eq!(server_name(&s, 5 + round).as_deref(), Some(format!("b{round}").as_str()));
    }
    assert_converged(&mut s.server(), a.connection(), "crm", &json!({"tenant": 1}));
    assert_converged(&mut s.server(), b.connection(), "crm", &json!({"tenant": 1}));
}

/// A backup taken while an upload's answer was lost holds that upload's id:
/// restored, it may retry that upload, but nothing it writes afterwards
/// passes for what the original file wrote under the same id or after it.
#[test]
fn a_backup_taken_with_an_upload_in_flight_retries_only_that_upload() {
    let s = Scenario::new("restore_in_flight", SCHEMA, "crm");
    let token = s.register(json!({"tenant": 1}));
    let path = s.files.path("device.db");
    let backup = s.files.path("backup.db");
    {
        let device = Store::open(&path).unwrap();
        s.sync_as(&device, &token);
        local(&device, "UPDATE customers SET name = 'in flight' WHERE id = 2");
        s.sync_as_answer_lost(&device, &token);
    }
    assert_eq!(server_name(&s, 2).as_deref(), Some("in flight"), "the server applied it; the answer was lost");
    copy(&path, &backup);
    {
        // The original retries, then goes on editing the same row.
        let device = Store::open(&path).unwrap();
        s.sync_as(&device, &token);
        local(&device, "UPDATE customers SET name = 'original, later' WHERE id = 2");
        s.sync_as(&device, &token);
    }
    copy(&backup, &path);
    let restored = Store::open(&path).unwrap();
    local(
        &restored,
        "UPDATE customers SET name = 'restored, later' WHERE id = 2; UPDATE customers SET name = 'restored only' WHERE id = 8",
    );
    let report = s.sync_as(&restored, &token);
    // Row 2 changed on the server since the in-flight upload: the upload,
    // sent again as it was, and the edit made after the backup each lose
    // their conflict, logged.
    let names: Vec<_> = report.conflicts.iter().map(|c| (c.key.clone(), c.client_row.as_ref().map(|r| r["name"].clone()))).collect();
    assert_eq!(names, [(vec![json!(2)], Some(json!("in flight"))), (vec![json!(2)], Some(json!("restored, later")))], "{report:?}");
    assert_eq!(server_name(&s, 2).as_deref(), Some("original, later"), "server_wins: nothing overwrote it silently");
    assert_eq!(server_name(&s, 8).as_deref(), Some("restored only"));
    assert_converged(&mut s.server(), restored.connection(), "crm", &json!({"tenant": 1}));
}

/// Rows a file inserted before its backup and sent after it, then deleted
/// (by the same file, or on the server): the restored backup still holds
/// those inserts unsent. Sent again, each meets the delete it never pulled
/// as a conflict, logged, instead of bringing the row back silently. An
/// insert of a key whose delete the backup had pulled, and a new key, are
/// plain inserts.
#[test]
fn a_restored_backup_does_not_bring_back_rows_deleted_after_it() {
    restored_backup_meets_the_deletes_after_it("restore_deleted", false);
}

/// The same with `--reinit`, as a user might try on a restored file: its
/// unsent inserts go up before it pulls afresh, judged by what it had
/// received.
#[test]
fn a_restored_backup_synced_with_reinit_does_not_bring_back_rows_deleted_after_it() {
    restored_backup_meets_the_deletes_after_it("restore_deleted_reinit", true);
}

fn restored_backup_meets_the_deletes_after_it(name: &str, reinit: bool) {
    let s = Scenario::new(name, SCHEMA, "crm");
    let token = s.register(json!({"tenant": 1}));
    let path = s.files.path("device.db");
    let backup = s.files.path("backup.db");
    {
        let device = Store::open(&path).unwrap();
        s.sync_as(&device, &token);
        s.server().batch_execute("DELETE FROM customers WHERE id = 9").unwrap();
        s.sync_as(&device, &token);
        local(
            &device,
            "INSERT INTO customers VALUES (20, 1, 'deleted by the file', NULL, NULL), (21, 1, 'deleted on the server', NULL, NULL)",
        );
    }
    copy(&path, &backup);
    {
        let device = Store::open(&path).unwrap();
        assert_eq!(s.sync_as(&device, &token).pushed, 2);
        local(&device, "DELETE FROM customers WHERE id = 20");
        assert_eq!(s.sync_as(&device, &token).pushed, 1);
    }
    s.server().batch_execute("DELETE FROM customers WHERE id = 21").unwrap();

    copy(&backup, &path);
    let restored = Store::open(&path).unwrap();
    local(&restored, "INSERT INTO customers VALUES (9, 1, 'again after its delete', NULL, NULL), (22, 1, 'new', NULL, NULL)");
    let report = s.sync(&restored, json!({"token": token, "reinit": reinit}));
    assert_eq!(report.resynced, reinit);
    let mut conflicts: Vec<_> = report.conflicts.iter().map(|c| (c.key.clone(), c.kind.as_str(), c.decision.as_str())).collect();
    conflicts.sort_by_key(|c| c.0[0].as_i64());
    assert_eq!(
        conflicts,
        [
            (vec![json!(20)], "local_updated_server_deleted", "server_wins"),
            (vec![json!(21)], "local_updated_server_deleted", "server_wins")
        ],
        "{report:?}"
    );
    assert_eq!(report.pushed, 2, "{report:?}");
    for id in [20, 21] {
        assert_eq!(server_name(&s, id), None, "the delete stands: the restored insert of {id} did not bring the row back");
        assert_eq!(local_name(&restored, id), None, "the file takes the server's delete of {id}");
    }
    assert_eq!(server_name(&s, 9).as_deref(), Some("again after its delete"), "the backup had pulled that delete");
    assert_eq!(server_name(&s, 22).as_deref(), Some("new"));
    let logged: i64 = s
        .server()
        .query_one("SELECT count(*) FROM tandem.conflicts WHERE kind = 'local_updated_server_deleted' AND client_row IS NOT NULL", &[])
        .unwrap()
        .get(0);
    assert_eq!(logged, 2, "both inserts are kept in the conflict log");
    assert_converged(&mut s.server(), restored.connection(), "crm", &json!({"tenant": 1}));
}

/// A file's own delete is one it received, even when the pull after it
/// failed: its insert of the key again is a plain insert.
#[test]
fn a_files_insert_of_a_key_it_deleted_itself_is_no_conflict_though_its_pull_failed() {
    let s = Scenario::new("own_delete", SCHEMA, "crm");
    let token = s.register(json!({"tenant": 1}));
    let device = s.store("device.db");
    s.sync_as(&device, &token);
    local(&device, "DELETE FROM customers WHERE id = 3");
    let options: SyncOptions = serde_json::from_value(json!({"token": token})).unwrap();
    let mut dropping = Interfering { drop_after_selects: Some(0), ..Interfering::new(&s.db.url) };
    let error = device.sync_with(&mut dropping, "crm", &options).unwrap_err();
    assert!(error.to_string().contains("connection dropped"), "{error}");
    assert_eq!(server_name(&s, 3), None, "the delete went up; the pull after it failed");
    local(&device, "INSERT INTO customers VALUES (3, 1, 'back again', NULL, NULL)");
    let report = s.sync_as(&device, &token);
    assert_eq!((report.pushed, report.conflicts.len()), (1, 0), "{report:?}");
    assert_eq!(server_name(&s, 3).as_deref(), Some("back again"));
    assert_converged(&mut s.server(), device.connection(), "crm", &json!({"tenant": 1}));
}

/// Only a delete the file could have held counts: another tenant's delete
/// of a key says nothing to this tenant's insert of it (nor, through the
/// answer, anything of the other tenant).
#[test]
fn another_tenants_delete_of_a_key_leaves_an_insert_of_it_alone() {
    let s = Scenario::new("other_tenants_delete", SCHEMA, "crm");
    let token = s.register(json!({"tenant": 1}));
    let device = s.store("device.db");
    s.sync_as(&device, &token);
    s.server().batch_execute("INSERT INTO customers VALUES (30, 2, 'tenant 2', NULL, NULL); DELETE FROM customers WHERE id = 30").unwrap();
    s.server().batch_execute("DELETE FROM customers WHERE id = 12").unwrap();
    local(&device, "INSERT INTO customers VALUES (30, 1, 'mine', NULL, NULL), (12, 1, 'mine too', NULL, NULL)");
    let report = s.sync_as(&device, &token);
    assert_eq!((report.pushed, report.conflicts.len()), (2, 0), "{report:?}");
    assert_eq!(server_name(&s, 30).as_deref(), Some("mine"));
    assert_eq!(server_name(&s, 12).as_deref(), Some("mine too"));
    assert_converged(&mut s.server(), device.connection(), "crm", &json!({"tenant": 1}));
}

/// Helper 69 (MEDIUM): while a kept delete waited, uploads said the
/// watermark from before its pull for every key, so a delete the file did
/// take in that pull still counted as not received, and the file's insert
/// of that key again met it as a conflict (under `server_wins`, the row
/// went to the conflict log). The upload now names the kept keys
/// (`seen.kept`) and says its watermark: only the kept row meets its
/// delete.
#[test]
fn a_delete_taken_beside_a_kept_one_lets_the_file_insert_its_key_again() {
    let (s, restored, report) = kept_beside("restore_kept_beside", false);
    let conflicts: Vec<_> = report.conflicts.iter().map(|c| (c.key.clone(), c.kind.as_str())).collect();
    assert_eq!(conflicts, [(vec![json!(20)], "local_updated_server_deleted")], "{report:?}");
    assert_eq!(server_name(&s, 20), None, "the delete stands");
    assert_eq!(server_name(&s, 21).as_deref(), Some("made again, knowing"));
    assert_converged(&mut s.server(), restored.connection(), "crm", &json!({"tenant": 1}));
    let held = local_count(&restored, "SELECT count(*) FROM tandem_scopes WHERE seen_until IS NOT NULL OR kept_deletes IS NOT NULL");
    assert_eq!(held, 0, "released once the upload went through");
}

/// A hold an earlier Tandem made names no keys: it stays whole (every
/// insert meets what came after its watermark), so the kept row still
/// meets its delete.
#[test]
fn a_hold_without_its_keys_stays_whole() {
    let (s, restored, report) = kept_beside("restore_kept_whole", true);
    let mut conflicts: Vec<_> = report.conflicts.iter().map(|c| c.key.clone()).collect();
    conflicts.sort_by_key(|k| k[0].as_i64());
    assert_eq!(conflicts, [vec![json!(20)], vec![json!(21)]], "{report:?}");
    assert_eq!(server_name(&s, 20), None, "the delete stands");
    assert_converged(&mut s.server(), restored.connection(), "crm", &json!({"tenant": 1}));
}

/// Helper 72 (HIGH): `--reinit` in a round whose upload fails pulls from
/// NULL, which brings no deletes to hold, and its watermark covers the
/// delete of a row the restored backup holds an unsent insert of: the
/// next upload brought the row back. Uploads now say the watermark from
/// before that round until one goes through.
#[test]
fn a_reinit_whose_upload_failed_still_meets_a_delete() {
    let s = Scenario::new("restore_reinit_failed", SCHEMA, "crm");
    let token = s.register(json!({"tenant": 1}));
    let restored = restored_beside_deletes(&s, &token, "DELETE FROM customers WHERE id = 20", true);
    let report = s.sync_as(&restored, &token);
    let conflicts: Vec<_> = report.conflicts.iter().map(|c| (c.key.clone(), c.kind.as_str())).collect();
    assert_eq!(conflicts, [(vec![json!(20)], "local_updated_server_deleted")], "{report:?}");
    assert_eq!(server_name(&s, 20), None, "the delete stands");
    assert_converged(&mut s.server(), restored.connection(), "crm", &json!({"tenant": 1}));
}

/// A restored backup holding an unsent insert of 20, whose first round's
/// upload fails while its pull brings the server's deletes of 20 (kept
/// beside the insert) and 21 (taken); the program then inserts 21 again
/// and the next round runs. With `unnamed`, the hold's keys are forgotten
/// first, as a hold made by an earlier Tandem.
fn kept_beside(label: &str, unnamed: bool) -> (Scenario, Store, tandem_local::SyncReport) {
    let s = Scenario::new(label, SCHEMA, "crm");
    s.server().batch_execute("INSERT INTO customers VALUES (21, 1, 'on the server', NULL, NULL)").unwrap();
    let token = s.register(json!({"tenant": 1}));
    let restored = restored_beside_deletes(&s, &token, "DELETE FROM customers WHERE id IN (20, 21)", false);
    assert_eq!(local_name(&restored, 21), None, "taken");
    let named =
        "SELECT json_array_length(kept_deletes, '$.kept') || ',' || json_array_length(kept_deletes, '$.unmatched') FROM tandem_scopes";
    assert_eq!(tandem_tests::local::local_value(&restored, named).as_deref(), Some("1,0"), "the kept delete, named by its key");
    if unnamed {
        local(&restored, "UPDATE tandem_scopes SET kept_deletes = NULL");
    }
    // Knowing 21 is gone, the program makes it again.
    local(&restored, "INSERT INTO customers VALUES (21, 1, 'made again, knowing', NULL, NULL)");
    let report = s.sync_as(&restored, &token);
    (s, restored, report)
}

/// A backup of a device taken while it held an unsent insert of 20, which
/// the device then sent; the server runs `deletes`; the backup, restored,
/// syncs once with every upload failing (as a lock timeout would), so its
/// pull keeps 20 beside its delete (with `reinit`, that round pulls
/// afresh, which brings no delete).
fn restored_beside_deletes(s: &Scenario, token: &str, deletes: &str, reinit: bool) -> Store {
    let path = s.files.path("device.db");
    let backup = s.files.path("backup.db");
    {
        let device = Store::open(&path).unwrap();
        s.sync_as(&device, token);
        local(&device, "INSERT INTO customers VALUES (20, 1, 'inserted before the backup', NULL, NULL)");
    }
    copy(&path, &backup);
    {
        let device = Store::open(&path).unwrap();
        assert_eq!(s.sync_as(&device, token).pushed, 1);
    }
    s.server().batch_execute(deletes).unwrap();

    copy(&backup, &path);
    let restored = Store::open(&path).unwrap();
    let options: SyncOptions = serde_json::from_value(json!({"token": token, "reinit": reinit})).unwrap();
    let mut failing = Interfering { fail_applies: true, ..Interfering::new(&s.db.url) };
    let error = restored.sync_with(&mut failing, "crm", &options).unwrap_err();
    assert!(error.to_string().contains("lock timeout"), "{error}");
    assert_eq!(local_name(&restored, 20).as_deref(), Some("inserted before the backup"), "kept: its change waits");
    restored
}

/// A restored backup whose upload the server fails, in a round whose pull
/// then brings the delete of a row the backup still holds an unsent insert
/// of: the pull keeps the row (the change waits) and moves the watermark
/// past the delete, but the next upload still says it received no more
/// than before that pull, so the insert meets the delete.
#[test]
fn a_restored_backups_insert_meets_the_delete_a_pull_kept_it_beside() {
    let s = Scenario::new("restore_kept_delete", SCHEMA, "crm");
    let token = s.register(json!({"tenant": 1}));
    let restored = restored_beside_deletes(&s, &token, "DELETE FROM customers WHERE id = 20", false);

    let report = s.sync_as(&restored, &token);
    let conflicts: Vec<_> = report.conflicts.iter().map(|c| (c.key.clone(), c.kind.as_str())).collect();
    assert_eq!(conflicts, [(vec![json!(20)], "local_updated_server_deleted")], "{report:?}");
    assert_eq!(server_name(&s, 20), None, "the delete stands");
    assert_eq!(local_name(&restored, 20), None);
    assert_converged(&mut s.server(), restored.connection(), "crm", &json!({"tenant": 1}));
    // The next upload went through: later inserts say the watermark again.
    local(&restored, "INSERT INTO customers VALUES (20, 1, 'again, knowing', NULL, NULL)");
    assert_eq!(s.sync_as(&restored, &token).conflicts.len(), 0);
    assert_eq!(server_name(&s, 20).as_deref(), Some("again, knowing"));
}

/// Helper 72 (HIGH, metadata): a restored backup's insert of a row that
/// left the partition (moved to tenant 2) and that tenant 2 then deleted
/// met the move as a conflict, but the answer's `version` was tenant 2's
/// delete, a transaction of another tenant. It is now the move: the
/// partition's own exit of the key, as a pull would have sent it.
#[test]
fn a_conflict_with_a_row_gone_to_another_tenant_reports_the_partitions_own_exit() {
    let s = Scenario::new("restore_exit_version", SCHEMA, "crm");
    let token = s.register(json!({"tenant": 1}));
    let path = s.files.path("device.db");
    let backup = s.files.path("backup.db");
    {
        let device = Store::open(&path).unwrap();
        s.sync_as(&device, &token);
        local(&device, "INSERT INTO customers VALUES (20, 1, 'inserted before the backup', NULL, NULL)");
    }
    copy(&path, &backup);
    {
        let device = Store::open(&path).unwrap();
        assert_eq!(s.sync_as(&device, &token).pushed, 1);
    }
    let xid_of = |sql: &str| -> String {
        let mut server = s.server();
        let mut tx = server.transaction().unwrap();
        tx.batch_execute(sql).unwrap();
        let xid: String = tx.query_one("SELECT pg_current_xact_id()::text", &[]).unwrap().get(0);
        tx.commit().unwrap();
        xid
    };
    let moved = xid_of("UPDATE customers SET tenant_id = 2 WHERE id = 20");
    let deleted = xid_of("DELETE FROM customers WHERE id = 20");
    assert_ne!(moved, deleted);

    copy(&backup, &path);
    let restored = Store::open(&path).unwrap();
    let report = s.sync_as(&restored, &token);
    let conflicts: Vec<_> = report.conflicts.iter().map(|c| (c.key.clone(), c.kind.as_str(), c.version.clone())).collect();
    assert_eq!(conflicts, [(vec![json!(20)], "local_updated_server_deleted", Some(moved))], "{report:?}");
    assert_eq!(server_name(&s, 20), None, "the delete stands");
    assert_converged(&mut s.server(), restored.connection(), "crm", &json!({"tenant": 1}));
}
