//! Transaction ids past 2^32: a server whose ids cross the 32-bit boundary
//! while a device is mid-way (its watermark before it, a transaction open
//! across it, changes on both sides after it) loses nothing and sends
//! nothing twice. Versions and watermarks are 64-bit (`xid8`,
//! `pg_snapshot`), never 32-bit xids compared across the wrap.

use postgres::Client;
use serde_json::json;
use tandem_local::verify::Options;
use tandem_local::{Store, SyncOptions, SyncReport};
use tandem_tests::cluster::Cluster;
use tandem_tests::local::{assert_converged, local, local_value, Files};

const SCHEMA: &str = r#"
CREATE EXTENSION tandem;
CREATE TABLE notes (id bigint PRIMARY KEY, tenant int NOT NULL, body text);
INSERT INTO notes SELECT i, 1 + i % 2, 'note ' || i FROM generate_series(1, 200) i;
SELECT sync_provision('notes', '{"tables": [{"name": "notes", "filter": {"tenant": "tenant"}}]}');
"#;

/// Commits `n` transactions that each take an id.
fn burn(server: &mut Client, n: u32) {
    server
        .batch_execute(&format!("DO $$ BEGIN FOR i IN 1..{n} LOOP PERFORM pg_current_xact_id(); COMMIT; END LOOP; END $$"))
        .expect("burn transaction ids");
}

fn next_xid(server: &mut Client) -> u64 {
    let text: String = server.query_one("SELECT pg_current_xact_id()::text", &[]).unwrap().get(0);
    text.parse().unwrap()
}

#[test]
fn a_device_mid_way_across_the_32_bit_boundary_misses_nothing_and_gets_nothing_twice() {
    let cluster = Cluster::start_near_wraparound("xid_epoch", 600);
    let url = cluster.url("postgres");
    let mut server = cluster.admin();
    server.batch_execute(SCHEMA).unwrap();
    let token: String = server.query_one("SELECT sync_register_client('notes', '{\"tenant\": 1}')->>'token'", &[]).unwrap().get(0);
    let files = Files::new("xid_epoch");
    let file = Store::open(files.path("device.db")).unwrap();
    let options: SyncOptions = serde_json::from_value(json!({"token": token})).unwrap();
    let sync = |file: &Store| -> SyncReport { file.sync(&url, "notes", &options).unwrap_or_else(|e| panic!("sync: {e}")) };
    let first = sync(&file);
    assert_eq!(first.pulled, 100);
    assert!(next_xid(&mut server) < 1 << 32, "still before the boundary");

    // A transaction takes its id before the boundary and stays open while
    // the ids cross it; changes commit after it, on both sides.
    let mut open = cluster.admin();
    let mut held = open.transaction().unwrap();
    held.execute("UPDATE notes SET body = 'committed last, id before the wrap' WHERE id = 2", &[]).unwrap();
    burn(&mut server, 1000);
    assert!(next_xid(&mut server) > 1 << 32, "past the boundary, in epoch 1");
    server
        .batch_execute(
            "UPDATE notes SET body = 'after the wrap' WHERE id = 4; DELETE FROM notes WHERE id = 6; \
             INSERT INTO notes VALUES (1000, 1, 'new after the wrap'); UPDATE notes SET body = 'other tenant' WHERE id = 3",
        )
        .unwrap();
    local(&file, "UPDATE notes SET body = 'device edit' WHERE id = 8; UPDATE notes SET body = 'device edit of a changed row' WHERE id = 4");

    // Mid-way: the watermark's xmin is the held transaction's, before the
    // boundary, and its xmax past it.
    let mid = sync(&file);
    let watermark = mid.watermark.clone().unwrap_or_default();
    let xmin: u64 = watermark.split(':').next().and_then(|x| x.parse().ok()).unwrap_or_default();
    assert!(xmin < 1 << 32 && next_xid(&mut server) > 1 << 32, "the watermark {watermark} straddles the boundary");
    assert_eq!(mid.pushed, 1, "the edit of row 8; row 4 meets the server's change: {mid:?}");
    assert_eq!(mid.conflicts.len(), 1, "the device's edit of a row the server changed after the wrap: {mid:?}");
    assert_eq!(local_value(&file, "SELECT body FROM notes WHERE id = 2").as_deref(), Some("note 2"), "not committed yet");
    assert_eq!(local_value(&file, "SELECT count(*) FROM notes WHERE id IN (6, 1000)").as_deref(), None);
    assert_eq!(file.connection().query_row("SELECT count(*) FROM notes WHERE id = 1000", [], |r| r.get::<_, i64>(0)).unwrap(), 1);
    assert_eq!(file.connection().query_row("SELECT count(*) FROM notes WHERE id = 6", [], |r| r.get::<_, i64>(0)).unwrap(), 0);

    held.commit().unwrap();
    burn(&mut server, 50);
    let last = sync(&file);
    assert_eq!(last.pulled, 1, "the transaction that committed last, with an id from before the wrap: {last:?}");
    assert_eq!(local_value(&file, "SELECT body FROM notes WHERE id = 2").as_deref(), Some("committed last, id before the wrap"));
    let again = sync(&file);
    assert_eq!((again.pulled, again.pushed), (0, 0), "nothing is sent twice: {again:?}");
    assert_converged(&mut server, file.connection(), "notes", &json!({"tenant": 1}));
    let verified = file.verify(&url, "notes", &Options { token: Some(token.clone()), ..Options::default() }).unwrap();
    assert!(verified.equal, "{verified:?}");

    // A file that first syncs after the boundary gets the whole partition.
    let fresh = Store::open(files.path("fresh.db")).unwrap();
    assert_eq!(sync(&fresh).pulled, 100);
    assert_converged(&mut server, fresh.connection(), "notes", &json!({"tenant": 1}));
}
