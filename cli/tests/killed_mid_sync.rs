//! A `tandem sync` process killed (SIGKILL) at random points, again and
//! again, while the server keeps changing: the next sync converges, with
//! nothing lost and nothing applied twice.

use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use rand::Rng;
use serde_json::json;
use tandem_local::{Store, SyncOptions};
use tandem_tests::local::{assert_converged, Files};
use tandem_tests::TestDb;

fn sync_command(db: &TestDb, file: &std::path::Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tandem"));
    command
        .args(["sync", "--local"])
        .arg(file)
        .args(["--remote", &db.url, "--scope", "bulk", "--param", "tenant=1", "--max-rows", "300"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

#[test]
fn syncs_killed_at_random_points_converge() {
    let db = TestDb::new("killed");
    let files = Files::new("killed");
    let path = files.path("victim.db");
    let mut server = db.connect();
    server
        .batch_execute(
            "CREATE TABLE items (id bigint PRIMARY KEY, tenant int NOT NULL, body text NOT NULL, n int NOT NULL);
             INSERT INTO items SELECT g, 1 + (g % 3 = 0)::int, md5(g::text), 0 FROM generate_series(1, 30000) g;
             SELECT sync_provision('bulk', '{\"tables\": [{\"name\": \"items\", \"filter\": {\"tenant\": \"tenant\"}}]}');",
        )
        .unwrap();
    let mut rng = rand::rng();
    let mut kills = 0;
    // A kill lands at a random point below `latest`; a sync that finishes
    // first shortens the range, so a faster host still gets killed mid-way.
    let mut latest = 400u64;
    let mut round = 0;
    while round < 12 || (kills < 6 && round < 60) {
        if round == 4 {
            // Once the file holds the scope, it also has changes to upload.
            let store = Store::open(&path).unwrap();
            store
                .connection()
                .execute_batch(
                    "WITH RECURSIVE g(v) AS (SELECT 1 UNION ALL SELECT v + 1 FROM g WHERE v < 5000)
                     INSERT INTO items SELECT 100000 + v, 1, 'local ' || v, 0 FROM g;
                     UPDATE items SET n = n + 1 WHERE id % 7 = 0 AND id < 100000;",
                )
                .unwrap();
        }
        server.execute("UPDATE items SET n = n + 1 WHERE id % 11 = $1", &[&(round as i64 % 11)]).unwrap();
        let mut child = sync_command(&db, &path).spawn().expect("run tandem sync");
        thread::sleep(Duration::from_millis(rng.random_range(latest / 10..latest)));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            kills += 1;
        } else {
            latest = (latest * 2 / 3).max(20);
        }
        child.wait().unwrap();
        round += 1;
    }
    assert!(kills >= 6, "the syncs finished too fast to be killed mid-way ({kills} kills)");
    let output = sync_command(&db, &path).arg("--json").stdout(Stdio::piped()).stderr(Stdio::piped()).output().unwrap();
    assert!(
        output.status.success(),
        "the last sync failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let store = Store::open(&path).unwrap();
    let report = store.sync(&db.url, "bulk", &SyncOptions::default()).unwrap();
    assert_eq!((report.pushed, report.pulled), (0, 0), "a quiet round after convergence: {report:?}");
    assert_converged(&mut server, store.connection(), "bulk", &json!({"tenant": 1}));
    let local_rows: i64 = server.query_one("SELECT count(*) FROM items WHERE id > 100000", &[]).unwrap().get(0);
    assert_eq!(local_rows, 5000, "every local insert arrived exactly once");
    let conflicts: i64 = server.query_one("SELECT count(*) FROM tandem.conflicts", &[]).unwrap().get(0);
    let bumped: i64 = server.query_one("SELECT count(*) FROM items WHERE id % 7 = 0 AND id < 100000 AND tenant = 1", &[]).unwrap().get(0);
    assert!(conflicts <= bumped, "conflicts only where both sides changed a row, never for a re-upload: {conflicts}");
}
