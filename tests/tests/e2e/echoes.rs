//! What a device is spared in a pull (its own uploads, exactly as it sent
//! them) and what it is not: anything the server changed, whether while
//! applying the device's upload (triggers, cascades) or from any session
//! that claims to be the device.

use serde_json::json;
use tandem_tests::local::{assert_converged, local, local_count, local_value, Interfering, Scenario};

const SCHEMA: &str = r#"
CREATE TABLE customers (id bigint PRIMARY KEY, tenant_id int NOT NULL, name text, rev int NOT NULL DEFAULT 0);
CREATE TABLE orders (id bigint PRIMARY KEY, tenant_id int NOT NULL, customer_id bigint REFERENCES customers ON DELETE CASCADE,
                     note text, child_count int NOT NULL DEFAULT 0);
CREATE TABLE items (id bigint PRIMARY KEY, tenant_id int NOT NULL, order_id bigint REFERENCES orders ON DELETE SET NULL, sku text);
CREATE TABLE audit (id bigserial PRIMARY KEY, tenant_id int NOT NULL, what text NOT NULL);
-- A counter on the parent, kept by a trigger on the child.
CREATE FUNCTION count_items() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE orders SET child_count = (SELECT count(*) FROM items WHERE order_id = orders.id)
   WHERE id IN (SELECT order_id FROM new_items WHERE order_id IS NOT NULL);
  INSERT INTO audit (tenant_id, what) SELECT tenant_id, 'item ' || id FROM new_items;
  RETURN NULL;
END $$;
CREATE TRIGGER count_items AFTER INSERT ON items REFERENCING NEW TABLE AS new_items FOR EACH STATEMENT EXECUTE FUNCTION count_items();
-- A revision bumped on every update, by an AFTER trigger (not visible in RETURNING).
CREATE FUNCTION bump_rev() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF pg_trigger_depth() = 1 THEN UPDATE customers SET rev = rev + 1 WHERE id = NEW.id; END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER bump_rev AFTER UPDATE ON customers FOR EACH ROW EXECUTE FUNCTION bump_rev();
INSERT INTO customers VALUES (1, 1, 'Ada', 0), (2, 1, 'Bob', 0), (3, 2, 'Cy', 0);
INSERT INTO orders VALUES (10, 1, 1, 'first', 0), (11, 1, 2, 'second', 0), (20, 2, 3, 'other tenant', 0);
INSERT INTO items VALUES (100, 1, 11, 'A');
SELECT sync_provision('crm', '{"tables": [
  {"name": "customers", "filter": {"tenant_id": "tenant"}},
  {"name": "orders", "filter": {"tenant_id": "tenant"}},
  {"name": "items", "filter": {"tenant_id": "tenant"}},
  {"name": "audit", "filter": {"tenant_id": "tenant"}, "direction": "download_only"}]}');
"#;

#[test]
fn what_the_server_did_while_applying_an_upload_reaches_the_uploader() {
    let s = Scenario::new("apply_effects", SCHEMA, "crm");
    let token = s.register(json!({"tenant": 1}));
    let device = s.store("device.db");
    s.sync_as(&device, &token);

    // Two items for order 10: a trigger counts them on the order and
    // writes an audit row; an update of a customer bumps its revision.
    local(&device, "INSERT INTO items VALUES (101, 1, 10, 'B'), (102, 1, 10, 'C'); UPDATE customers SET name = 'Ada L.' WHERE id = 1");
    s.sync_as(&device, &token);
    assert_eq!(local_count(&device, "SELECT child_count FROM orders WHERE id = 10"), 2, "the trigger's counter reaches the device");
    assert_eq!(local_count(&device, "SELECT count(*) FROM audit"), 3, "rows a trigger inserted reach the device (one from the setup)");
    assert_eq!(local_count(&device, "SELECT rev FROM customers WHERE id = 1"), 1, "an AFTER trigger's change of the row itself");
    assert_converged(&mut s.server(), device.connection(), "crm", &json!({"tenant": 1}));

    // The device's next edit of the order keeps the server's counter.
    local(&device, "UPDATE orders SET note = 'edited' WHERE id = 10");
    let report = s.sync_as(&device, &token);
    assert!(report.conflicts.is_empty(), "{report:?}");
    let count: i32 = s.server().query_one("SELECT child_count FROM orders WHERE id = 10", &[]).unwrap().get(0);
    assert_eq!(count, 2, "the device's edit did not put the counter back");

    // A delete cascades on the server: the device loses the cascaded rows
    // too, and a SET NULL reaches it.
    local(&device, "DELETE FROM customers WHERE id = 2");
    s.sync_as(&device, &token);
    assert_eq!(local_count(&device, "SELECT count(*) FROM orders WHERE id = 11"), 0, "ON DELETE CASCADE reaches the device");
    assert_eq!(local_count(&device, "SELECT order_id IS NULL FROM items WHERE id = 100"), 1, "ON DELETE SET NULL reaches the device");
    assert_converged(&mut s.server(), device.connection(), "crm", &json!({"tenant": 1}));
}

#[test]
fn a_session_that_claims_to_be_a_device_cannot_hide_its_write_from_it() {
    let s = Scenario::new("spoofed_origin", SCHEMA, "crm");
    let token = s.register(json!({"tenant": 1}));
    let device = s.store("device.db");
    s.sync_as(&device, &token);
    let client_id = tandem_core::identity::token_client_id(&token).unwrap().to_string();
    let replica: String = device.connection().query_row("SELECT replica_id FROM tandem_scopes", [], |r| r.get(0)).unwrap_or_default();

    let mut server = s.server();
    for (id, claimed) in [(1, client_id.as_str()), (2, replica.as_str())] {
        server
            .batch_execute(&format!(
                "BEGIN; SET LOCAL tandem.origin = '{claimed}'; UPDATE customers SET name = 'server {id}' WHERE id = {id}; COMMIT;"
            ))
            .unwrap();
    }
    // The device edits row 1 too, on the version it had.
    local(&device, "UPDATE customers SET name = 'device 1' WHERE id = 1");
    let report = s.sync_as(&device, &token);
    assert_eq!(report.conflicts.len(), 1, "the stale edit meets the server's write as a conflict: {report:?}");
    let name: String = server.query_one("SELECT name FROM customers WHERE id = 1", &[]).unwrap().get(0);
    assert_eq!(name, "server 1", "server_wins: the stale upload did not overwrite it");
    let names: Vec<String> = ["SELECT name FROM customers WHERE id = 1", "SELECT name FROM customers WHERE id = 2"]
        .iter()
        .map(|sql| device.connection().query_row(sql, [], |r| r.get(0)).unwrap())
        .collect();
    assert_eq!(names, ["server 1", "server 2"], "both server writes reached the device");
    assert_converged(&mut server, device.connection(), "crm", &json!({"tenant": 1}));
}

#[test]
fn a_device_is_spared_only_its_own_rows_exactly_as_it_sent_them() {
    let s = Scenario::new("echo", SCHEMA, "crm");
    let token = s.register(json!({"tenant": 1}));
    let device = s.store("device.db");
    s.sync_as(&device, &token);
    local(&device, "UPDATE orders SET note = 'mine' WHERE id = 11");
    let report = s.sync_as(&device, &token);
    assert_eq!((report.pushed, report.pulled), (1, 0), "the device's own write is not sent back to it: {report:?}");
}

#[test]
fn a_row_a_server_trigger_moves_to_another_tenant_leaves_the_uploaders_file() {
    let schema = r#"
        CREATE TABLE notes (id bigint PRIMARY KEY, tenant_id int NOT NULL, body text);
        CREATE TABLE tags (id bigint PRIMARY KEY, note_id bigint NOT NULL REFERENCES notes ON DELETE CASCADE, tag text);
        -- The server hands some notes to tenant 2 as they are written.
        CREATE FUNCTION hand_over() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF NEW.body LIKE 'hand over%' THEN NEW.tenant_id := 2; NEW.body := 'tenant 2: ' || NEW.body; END IF;
          RETURN NEW;
        END $$;
        CREATE TRIGGER hand_over BEFORE INSERT OR UPDATE ON notes FOR EACH ROW EXECUTE FUNCTION hand_over();
        INSERT INTO notes VALUES (1, 1, 'kept'), (2, 2, 'theirs');
        SELECT sync_provision('s', '{"tables": [{"name": "notes", "filter": {"tenant_id": "tenant"}},
                                               {"name": "tags", "filter": {"via": "notes", "on": {"note_id": "id"}}}],
                                    "policy": "client_wins"}');
    "#;
    let s = Scenario::new("handed_over", schema, "s");
    let token = s.register(json!({"tenant": 1}));
    let file = s.store("tenant1.db");
    s.sync_as(&file, &token);
    s.server().batch_execute("UPDATE notes SET body = 'edited on the server' WHERE id = 1").unwrap();

    // A new note (with a tag under it) the trigger hands over, and an edit
    // of note 1 that conflicts with the server's (client_wins) and that the
    // trigger hands over too.
    local(
        &file,
        "INSERT INTO notes VALUES (3, 1, 'hand over this one');
         INSERT INTO tags VALUES (30, 3, 'under it');
         UPDATE notes SET body = 'hand over the edit' WHERE id = 1;",
    );
    let report = s.sync_as(&file, &token);
    assert!(report.rejected.is_empty(), "{report:?}");
    for conflict in &report.conflicts {
        assert!(conflict.row.is_none(), "a conflict's answer carries no row of another tenant: {conflict:?}");
    }
    assert_eq!(local_count(&file, "SELECT count(*) FROM notes WHERE tenant_id = 2 OR body LIKE 'tenant 2%'"), 0, "no row of tenant 2");
    assert_eq!(local_count(&file, "SELECT count(*) FROM tags"), 0, "the tag went with its note");
    let conflicts_row: i64 = local_count(&file, "SELECT count(*) FROM tandem_conflicts WHERE row LIKE '%tenant 2%'");
    assert_eq!(conflicts_row, 0, "the file's conflict log holds no row of tenant 2");
    assert_converged(&mut s.server(), file.connection(), "s", &json!({"tenant": 1}));
}

#[test]
fn a_refused_row_the_failed_attempt_moved_away_stays_in_the_uploaders_file() {
    // A server trigger that hands the row to tenant 2 from inside the
    // device's write, and skips the write itself: the write is refused, the
    // attempt rolled back, and the row is still tenant 1's.
    let schema = r#"
        CREATE TABLE notes (id bigint PRIMARY KEY, tenant_id int NOT NULL, body text);
        CREATE FUNCTION give_away() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF NEW.body = 'give away' AND pg_trigger_depth() = 1 THEN
            UPDATE notes SET tenant_id = 2 WHERE id = NEW.id;
            RETURN NULL;
          END IF;
          RETURN NEW;
        END $$;
        CREATE TRIGGER give_away BEFORE UPDATE ON notes FOR EACH ROW EXECUTE FUNCTION give_away();
        INSERT INTO notes VALUES (1, 1, 'kept'), (2, 1, 'also kept');
        SELECT sync_provision('s', '{"tables": [{"name": "notes", "filter": {"tenant_id": "tenant"}}]}');
    "#;
    let s = Scenario::new("refused_moved", schema, "s");
    let token = s.register(json!({"tenant": 1}));
    let file = s.store("tenant1.db");
    s.sync_as(&file, &token);

    local(&file, "UPDATE notes SET body = 'give away' WHERE id = 1; UPDATE notes SET body = 'edited' WHERE id = 2;");
    let report = s.sync_as(&file, &token);
    assert_eq!(report.rejected.len(), 1, "the given-away edit is refused: {report:?}");
    let server_tenant = s.server().query_one("SELECT tenant_id FROM notes WHERE id = 1", &[]).unwrap().get::<_, i32>(0);
    assert_eq!(server_tenant, 1, "the failed attempt was rolled back");
    assert_eq!(local_value(&file, "SELECT body FROM notes WHERE id = 1").as_deref(), Some("kept"), "the file takes the server's row");
    assert_eq!(local_value(&file, "SELECT body FROM notes WHERE id = 2").as_deref(), Some("edited"), "the rest is sent");
    assert_converged(&mut s.server(), file.connection(), "s", &json!({"tenant": 1}));
}

#[test]
fn a_row_the_uploads_own_earlier_write_changed_meets_the_devices_edit_as_a_logged_conflict() {
    // The server copies a note's status to its tags when the note is
    // edited; the device closes a note and edits one of its tags in one
    // upload. The tag the device edited is no longer what its edit was made
    // on: a conflict, settled by the policy and logged, never a silent
    // overwrite of either side.
    let schema = r#"
        CREATE TABLE notes (id bigint PRIMARY KEY, tenant_id int NOT NULL, status text);
        CREATE TABLE tags (id bigint PRIMARY KEY, note_id bigint NOT NULL REFERENCES notes, status text, tag text);
        CREATE FUNCTION copy_status() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          UPDATE tags SET status = NEW.status WHERE note_id = NEW.id;
          RETURN NULL;
        END $$;
        CREATE TRIGGER copy_status AFTER UPDATE ON notes FOR EACH ROW EXECUTE FUNCTION copy_status();
        INSERT INTO notes VALUES (1, 1, 'open');
        INSERT INTO tags VALUES (10, 1, 'open', 'tag'), (11, 1, 'open', 'other');
        SELECT sync_provision('s', '{"tables": [{"name": "notes", "filter": {"tenant_id": "tenant"}},
                                               {"name": "tags", "filter": {"via": "notes", "on": {"note_id": "id"}}}]}');
    "#;
    let s = Scenario::new("own_earlier_write", schema, "s");
    let token = s.register(json!({"tenant": 1}));
    let file = s.store("tenant1.db");
    s.sync_as(&file, &token);

    local(&file, "UPDATE notes SET status = 'closed' WHERE id = 1; UPDATE tags SET tag = 'retagged' WHERE id = 10;");
    let report = s.sync_as(&file, &token);
    assert_eq!(report.conflicts.len(), 1, "{report:?}");
    let conflict = &report.conflicts[0];
    assert_eq!((conflict.table.as_str(), &conflict.key), ("public.tags", &vec![json!(10)]), "{conflict:?}");
    assert_eq!(conflict.client_row.as_ref().map(|r| r["tag"].clone()), Some(json!("retagged")), "the device's edit is logged");
    let (status, tag): (String, String) =
        s.server().query_one("SELECT status, tag FROM tags WHERE id = 10", &[]).map(|r| (r.get(0), r.get(1))).unwrap();
    assert_eq!((status.as_str(), tag.as_str()), ("closed", "tag"), "server_wins: the trigger's change stays");
    assert_eq!(local_count(&file, "SELECT count(*) FROM tandem_conflicts WHERE client_row LIKE '%retagged%'"), 1);
    assert_eq!(local_value(&file, "SELECT status FROM tags WHERE id = 11").as_deref(), Some("closed"));
    assert_converged(&mut s.server(), file.connection(), "s", &json!({"tenant": 1}));
}

#[test]
fn an_edit_after_a_lost_answer_builds_on_the_row_as_the_servers_trigger_stored_it() {
    // The server stamps and normalises every write; the answer to the
    // upload that wrote the rows is lost, and the device edits them again.
    let schema = r#"
        CREATE TABLE notes (id bigint PRIMARY KEY, tenant_id int NOT NULL, body text, touched int NOT NULL DEFAULT 0);
        CREATE FUNCTION stamp() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN NEW.body := upper(NEW.body); NEW.touched := NEW.touched + 1; RETURN NEW; END $$;
        CREATE TRIGGER stamp BEFORE INSERT OR UPDATE ON notes FOR EACH ROW EXECUTE FUNCTION stamp();
        INSERT INTO notes VALUES (1, 1, 'old', 0);
        SELECT sync_provision('s', '{"tables": [{"name": "notes", "filter": {"tenant_id": "tenant"}}]}');
    "#;
    let s = Scenario::new("lost_stamped", schema, "s");
    let token = s.register(json!({"tenant": 1}));
    let file = s.store("tenant1.db");
    s.sync_as(&file, &token);
    local(&file, "INSERT INTO notes VALUES (2, 1, 'new', 0); UPDATE notes SET body = 'edited' WHERE id = 1");
    s.sync_as_answer_lost(&file, &token);
    local(&file, "UPDATE notes SET body = 'new, edited' WHERE id = 2; UPDATE notes SET body = 'edited again' WHERE id = 1");
    let report = s.sync_as(&file, &token);
    assert!(report.conflicts.is_empty(), "the device's own writes, not another writer's: {report:?}");
    let bodies: Vec<String> = s.server().query("SELECT body FROM notes ORDER BY id", &[]).unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(bodies, ["EDITED AGAIN", "NEW, EDITED"]);
    assert_converged(&mut s.server(), file.connection(), "s", &json!({"tenant": 1}));
}

/// Helper 73 (MEDIUM): a row the server's trigger handed to another
/// tenant, whose answer was lost: the retry found it outside the
/// partition and refused it (the whole upload, sent directly), so the
/// device kept it aside as refused though the server had taken it. The
/// retry now answers it as done and gone, as the first attempt would have.
#[test]
fn a_row_a_server_trigger_moved_away_is_done_when_the_answer_was_lost() {
    let schema = r#"
        CREATE TABLE notes (id bigint PRIMARY KEY, tenant_id int NOT NULL, body text);
        CREATE FUNCTION hand_over() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF NEW.body LIKE 'hand over%' THEN NEW.tenant_id := 2; END IF;
          RETURN NEW;
        END $$;
        CREATE TRIGGER hand_over BEFORE INSERT OR UPDATE ON notes FOR EACH ROW EXECUTE FUNCTION hand_over();
        INSERT INTO notes VALUES (1, 1, 'kept'), (2, 1, 'also kept');
        SELECT sync_provision('s', '{"tables": [{"name": "notes", "filter": {"tenant_id": "tenant"}}]}');
    "#;
    let s = Scenario::new("handed_over_lost", schema, "s");
    let token = s.register(json!({"tenant": 1}));
    let file = s.store("tenant1.db");
    s.sync_as(&file, &token);
    local(&file, "INSERT INTO notes VALUES (3, 1, 'hand over this one'); UPDATE notes SET body = 'hand over the edit' WHERE id = 1");
    s.sync_as_answer_lost(&file, &token);
    // Tenant 2 edits one of them meanwhile.
    s.server().batch_execute("UPDATE notes SET body = 'hand over, edited by tenant 2' WHERE id = 3").unwrap();
    let report = s.sync_as(&file, &token);
    assert!(report.rejected.is_empty() && report.conflicts.is_empty(), "{report:?}");
    assert_eq!(local_count(&file, "SELECT count(*) FROM tandem_rejected"), 0, "nothing kept aside as refused");
    assert_eq!(local_count(&file, "SELECT count(*) FROM notes WHERE id IN (1, 3)"), 0, "both left the file");
    let held: Vec<String> =
        s.server().query("SELECT id || ':' || tenant_id FROM notes ORDER BY id", &[]).unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(held, ["1:2", "2:1", "3:2"]);
    assert_converged(&mut s.server(), file.connection(), "s", &json!({"tenant": 1}));
}

/// A scope of one table of notes filtered by tenant, and a file of tenant
/// 1 that synced it once.
fn tenant_notes(label: &str) -> (Scenario, String, tandem_local::Store) {
    let schema = r#"
        CREATE TABLE notes (id bigint PRIMARY KEY, tenant_id int NOT NULL, body text);
        SELECT sync_provision('s', '{"tables": [{"name": "notes", "filter": {"tenant_id": "tenant"}}]}');
    "#;
    let s = Scenario::new(label, schema, "s");
    let token = s.register(json!({"tenant": 1}));
    let file = s.store("tenant1.db");
    s.sync_as(&file, &token);
    (s, token, file)
}

/// A device's own delete whose answer a server error lost (its session
/// ended as it answered) comes back with the round's pull while the
/// device writes the key again, so the file keeps its row beside it. The
/// retry's answer gives the file that delete's version, and its insert
/// goes up as its own: no conflict, whatever older deletes of the key the
/// server holds.
#[test]
fn a_devices_own_delete_whose_answer_was_lost_stays_its_own() {
    let (s, token, file) = notes_with_an_old_delete("own_delete_lost");
    let path = s.files.path("tenant1.db");
    local(&file, "DELETE FROM notes WHERE id = 1");
    let mut interfering = Interfering {
        fail_after_apply: true,
        write_after_select: Some((path.clone(), "INSERT INTO notes VALUES (1, 1, 'third')")),
        ..Interfering::new(&s.db.url)
    };
    let options = serde_json::from_value(json!({"token": token})).unwrap();
    file.sync_with(&mut interfering, "s", &options).expect_err("the answer was lost");
    let report = s.sync_as(&file, &token);
    no_conflict_and_rows(&s, &file, &report, &["1:third", "2:other", "3:more"]);
}

/// A round whose upload failed part way and that pulled afresh
/// (`--reinit`) holds its uploads to the watermark from before that pull
/// until one goes through. The device's own delete, answered in the
/// round's first batch, is then not covered by that watermark: it must
/// stay one of the file's own (the pull from NULL forgot its version), or
/// the device's insert of the key again meets it as another writer's.
#[test]
fn a_devices_own_delete_stays_its_own_while_its_uploads_say_an_older_watermark() {
    let (s, token, file) = tenant_notes("own_delete_held");
    local(&file, "INSERT INTO notes VALUES (1, 1, 'first'), (2, 1, 'second'), (3, 1, 'third')");
    s.sync_as(&file, &token);
    // Two batches (two rows at least to one): the first goes through, the
    // second fails.
    local(&file, "DELETE FROM notes WHERE id = 1; DELETE FROM notes WHERE id = 2; DELETE FROM notes WHERE id = 3");
    let mut interfering = Interfering { fail_applies_after: Some(1), ..Interfering::new(&s.db.url) };
    let options = serde_json::from_value(json!({"token": token, "max_rows": 1, "reinit": true})).unwrap();
    file.sync_with(&mut interfering, "s", &options).expect_err("the second batch failed");
    local(&file, "INSERT INTO notes VALUES (1, 1, 'again')");
    let report = s.sync_as(&file, &token);
    no_conflict_and_rows(&s, &file, &report, &["1:again"]);
}

/// Notes 1 to 3 of tenant 1, where note 1 was deleted and inserted again
/// long ago: the server keeps that old delete, which the file received
/// and whose echo it forgot.
fn notes_with_an_old_delete(label: &str) -> (Scenario, String, tandem_local::Store) {
    let (s, token, file) = tenant_notes(label);
    for sql in [
        "INSERT INTO notes VALUES (1, 1, 'first')",
        "DELETE FROM notes WHERE id = 1",
        "INSERT INTO notes VALUES (1, 1, 'second'), (2, 1, 'other'), (3, 1, 'more')",
    ] {
        local(&file, sql);
        s.sync_as(&file, &token);
    }
    s.sync_as(&file, &token);
    (s, token, file)
}

/// Asserts that no conflict was logged and the server holds `rows`
/// (`id:body`), as the file does.
fn no_conflict_and_rows(s: &Scenario, file: &tandem_local::Store, report: &tandem_local::SyncReport, rows: &[&str]) {
    assert!(report.conflicts.is_empty(), "the device's own deletes are no other writer's: {report:?}");
    let logged: Vec<String> =
        s.server().query("SELECT kind || ' ' || key::text FROM tandem.conflicts", &[]).unwrap().iter().map(|r| r.get(0)).collect();
    assert!(logged.is_empty(), "no conflict logged on the server: {logged:?}");
    let held: Vec<String> =
        s.server().query("SELECT id || ':' || body FROM notes ORDER BY id", &[]).unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(held, rows);
    assert_converged(&mut s.server(), file.connection(), "s", &json!({"tenant": 1}));
}

/// The fault suite's path: a device's own delete whose answer was lost
/// comes back with the round's pull while the file holds no row of the
/// key (the delete waits to go again). Nothing is kept beside it, so the
/// file takes it. Its retry goes through in a round whose later batch
/// fails, and the device's insert of the key again then goes up as a
/// plain insert: it does not meet the key's old delete, long received, as
/// another writer's.
#[test]
fn a_devices_own_delete_back_while_it_waits_to_go_again_is_taken() {
    let (s, token, file) = notes_with_an_old_delete("own_delete_back");
    let options: tandem_local::SyncOptions = serde_json::from_value(json!({"token": token, "max_rows": 1})).unwrap();
    local(&file, "DELETE FROM notes WHERE id = 1");
    let mut lost = Interfering { fail_after_apply: true, ..Interfering::new(&s.db.url) };
    file.sync_with(&mut lost, "s", &options).expect_err("the answer was lost");
    local(&file, "UPDATE notes SET body = 'edited' WHERE id = 2; UPDATE notes SET body = 'edited' WHERE id = 3");
    let mut failing = Interfering { fail_applies_after: Some(1), ..Interfering::new(&s.db.url) };
    file.sync_with(&mut failing, "s", &options).expect_err("the batch after the retry failed");
    local(&file, "INSERT INTO notes VALUES (1, 1, 'again')");
    let report = s.sync_as(&file, &token);
    no_conflict_and_rows(&s, &file, &report, &["1:again", "2:edited", "3:edited"]);
}

/// As above, with the device writing the key again before the pull, so
/// the file keeps its row beside its own delete (`seen.kept`). It deletes
/// and inserts the key again while that hold lasts: the insert meets only
/// the delete the file kept its row beside, which is its own, and not the
/// key's old delete, long received.
#[test]
fn a_kept_key_meets_only_the_delete_it_was_kept_beside() {
    let (s, token, file) = notes_with_an_old_delete("kept_beside");
    let path = s.files.path("tenant1.db");
    let options: tandem_local::SyncOptions = serde_json::from_value(json!({"token": token, "max_rows": 1})).unwrap();
    local(&file, "DELETE FROM notes WHERE id = 1");
    let mut lost = Interfering {
        fail_after_apply: true,
        write_after_select: Some((path, "INSERT INTO notes VALUES (1, 1, 'third')")),
        ..Interfering::new(&s.db.url)
    };
    file.sync_with(&mut lost, "s", &options).expect_err("the answer was lost");
    let mut failing = Interfering { fail_applies_after: Some(1), ..Interfering::new(&s.db.url) };
    file.sync_with(&mut failing, "s", &options).expect_err("the batch after the retry failed");
    local(
        &file,
        "DELETE FROM notes WHERE id = 1; UPDATE notes SET body = 'edited' WHERE id = 2; UPDATE notes SET body = 'edited' WHERE id = 3",
    );
    let mut failing = Interfering { fail_applies_after: Some(2), ..Interfering::new(&s.db.url) };
    file.sync_with(&mut failing, "s", &options).expect_err("the last batch failed");
    local(&file, "INSERT INTO notes VALUES (1, 1, 'fourth')");
    let report = s.sync_as(&file, &token);
    no_conflict_and_rows(&s, &file, &report, &["1:fourth", "2:edited", "3:edited"]);
}
