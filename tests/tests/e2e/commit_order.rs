//! No committed change is ever missed, whatever order transactions commit
//! in, and nothing is sent twice.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use rand::Rng;
use serde_json::{json, Value};
use tandem_tests::{pull_all, TestDb};

fn setup(db: &TestDb) {
    db.connect()
        .batch_execute(
            "CREATE TABLE items (id bigint PRIMARY KEY, v bigint NOT NULL, writer int NOT NULL);
             INSERT INTO items SELECT g, 0, 0 FROM generate_series(1, 200) g;
             SELECT sync_provision('s', '{\"tables\": [{\"name\": \"items\"}]}');",
        )
        .expect("setup");
}

#[test]
fn a_transaction_that_commits_late_is_not_missed() {
    let db = TestDb::new("late_commit");
    setup(&db);
    let mut puller = db.connect();
    let (_, start) = pull_all(&mut puller, "s", None, &json!({}));

    let mut older = db.connect();
    older.batch_execute("BEGIN; UPDATE items SET v = 111 WHERE id = 1").unwrap();
    let older_xid: String = older.query_one("SELECT pg_current_xact_id()::text", &[]).unwrap().get(0);
    let mut newer = db.connect();
    newer.batch_execute("BEGIN; UPDATE items SET v = 222 WHERE id = 2").unwrap();
    let newer_xid: String = newer.query_one("SELECT pg_current_xact_id()::text", &[]).unwrap().get(0);
    newer.batch_execute("COMMIT").unwrap();
    assert!(older_xid.parse::<u64>().unwrap() < newer_xid.parse::<u64>().unwrap(), "the open transaction has the older xid");

    let (first, after_first) = pull_all(&mut puller, "s", Some(&start), &json!({}));
    let ids: Vec<&Value> = first.iter().map(|(_, row)| &row["values"][0]).collect();
    assert_eq!(ids, [&json!(2)], "only the committed change so far");

    older.batch_execute("COMMIT").unwrap();
    let (second, after_second) = pull_all(&mut puller, "s", Some(&after_first), &json!({}));
    assert_eq!(second.len(), 1, "{second:?}");
    assert_eq!(second[0].1["values"], json!([1, 111, 0]), "the late commit arrives, and row 2 is not sent again");
    let (third, _) = pull_all(&mut puller, "s", Some(&after_second), &json!({}));
    assert!(third.is_empty(), "nothing is sent twice: {third:?}");
}

/// A pull does not queue behind another call's fold: while one call holds
/// the fold of a table (its transaction still open), another client's pull
/// reads the table's changes through its log at once. Whether the holder
/// then commits or rolls back, nothing is lost or sent twice.
#[test]
fn a_pull_reads_past_a_fold_another_call_holds_open() {
    for end in ["COMMIT", "ROLLBACK"] {
        let db = TestDb::new("busy_fold");
        setup(&db);
        let mut puller = db.connect();
        let (_, start) = pull_all(&mut puller, "s", None, &json!({}));
        let mut writer = db.connect();
        writer
            .batch_execute("UPDATE items SET v = 7 WHERE id = 3; DELETE FROM items WHERE id = 4; INSERT INTO items VALUES (500, 5, 5)")
            .unwrap();
        let mut holder = db.connect();
        holder.batch_execute("BEGIN; SELECT sync_status('s')").unwrap(); // folds the log, and holds it until it ends
        let left: i64 = holder.query_one("SELECT count(*) FROM tandem.log_1", &[]).unwrap().get(0);
        assert_eq!(left, 0, "the holder folded the log");
        // Written after the holder's fold: still in the log, unlocked.
        writer.batch_execute("UPDATE items SET v = 8 WHERE id = 5; UPDATE items SET v = 9 WHERE id = 500").unwrap();
        puller.batch_execute("SET lock_timeout = '3s'").unwrap();
        let (rows, after) = pull_all(&mut puller, "s", Some(&start), &json!({}));
        let mut got: Vec<String> = rows
            .iter()
            .map(|(_, row)| format!("{} {}", row["op"], if row["op"] == "upsert" { &row["values"] } else { &row["key"] }))
            .collect();
        got.sort();
        assert_eq!(got, ["\"delete\" [4]", "\"upsert\" [3,7,0]", "\"upsert\" [5,8,0]", "\"upsert\" [500,9,5]"], "{end}: {rows:?}");
        holder.batch_execute(end).unwrap();
        let (again, after_again) = pull_all(&mut puller, "s", Some(&after), &json!({}));
        assert!(again.is_empty(), "{end}: nothing is sent twice: {again:?}");
        writer.batch_execute("UPDATE items SET v = 10 WHERE id = 3").unwrap();
        let (later, _) = pull_all(&mut puller, "s", Some(&after_again), &json!({}));
        assert_eq!(later.len(), 1, "{end}: {later:?}");
        assert_eq!(later[0].1["values"], json!([3, 10, 0]), "{end}");
    }
}

/// Behind a bulk write's fold a pull waits instead: reading 40,000 keys
/// through the log would cost every waiting pull about what the one fold
/// costs. Once the fold commits, the pull has every row.
#[test]
fn a_pull_waits_for_the_fold_of_a_bulk_write() {
    let db = TestDb::new("bulk_fold");
    setup(&db);
    let mut puller = db.connect();
    let (_, start) = pull_all(&mut puller, "s", None, &json!({}));
    db.connect().batch_execute("INSERT INTO items SELECT g, 1, 1 FROM generate_series(1001, 41000) g").unwrap();
    let mut holder = db.connect();
    holder.batch_execute("BEGIN; SELECT sync_status('s')").unwrap();
    puller.batch_execute("SET lock_timeout = '300ms'").unwrap();
    let waited = puller.query_one("SELECT sync_select_changes('s', $1, '{}')::text", &[&start]).expect_err("the pull waits for the fold");
    assert_eq!(waited.code(), Some(&postgres::error::SqlState::LOCK_NOT_AVAILABLE), "{waited}");
    holder.batch_execute("COMMIT").unwrap();
    let (rows, _) = pull_all(&mut puller, "s", Some(&start), &json!({"max_rows": 100000}));
    assert_eq!(rows.len(), 40_000);
}

/// Several writers commit in every order (some hold their transaction open
/// across pulls, some roll back) while three clients pull in batches of
/// different sizes. At the end each client's copy equals the table, row for
/// row.
#[test]
fn every_committed_change_arrives_under_concurrent_writers() {
    let db = TestDb::new("stress");
    setup(&db);
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (1..=4)
        .map(|writer| {
            let url = db.url.clone();
            let stop = stop.clone();
            thread::spawn(move || {
                let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
                let mut rng = rand::rng();
                let mut commits = 0;
                let mut next_id = 1_000_000 * writer as i64;
                while !stop.load(Ordering::Relaxed) {
                    let mut tx = client.transaction().unwrap();
                    let mut written = Ok(0);
                    for _ in 0..rng.random_range(1..6) {
                        written = match rng.random_range(0..10) {
                            0..=4 => {
                                let id = rng.random_range(1..=200i64);
                                tx.execute("UPDATE items SET v = v + 1, writer = $2 WHERE id = $1", &[&id, &writer])
                            }
                            5..=7 => {
                                next_id += 1;
                                tx.execute("INSERT INTO items VALUES ($1, 1, $2)", &[&next_id, &writer])
                            }
                            _ => {
                                let id = rng.random_range(1_000_000 * writer as i64..=next_id);
                                tx.execute("DELETE FROM items WHERE id = $1", &[&id])
                            }
                        };
                        if written.is_err() {
                            break;
                        }
                    }
                    // Row updates from different writers can deadlock on a
                    // statement too: the loser rolls back, nothing else fails.
                    if let Err(error) = written {
                        assert_eq!(error.code(), Some(&postgres::error::SqlState::T_R_DEADLOCK_DETECTED), "{error}");
                        drop(tx);
                        continue;
                    }
                    if rng.random_range(0..5) == 0 {
                        thread::sleep(Duration::from_millis(rng.random_range(5..60)));
                    }
                    if rng.random_range(0..10) == 0 {
                        tx.rollback().unwrap();
                    } else {
                        // Row updates from different writers can deadlock; the
                        // loser simply did not commit.
                        if tx.commit().is_ok() {
                            commits += 1;
                        }
                    }
                }
                commits
            })
        })
        .collect();

    // A caller holds the log's fold open for a while, again and again, so
    // pulls often read the table through the log instead.
    let holder = {
        let url = db.url.clone();
        let stop = stop.clone();
        thread::spawn(move || {
            let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            let mut rng = rand::rng();
            while !stop.load(Ordering::Relaxed) {
                client.batch_execute("BEGIN; SELECT sync_status('s')").unwrap();
                thread::sleep(Duration::from_millis(rng.random_range(5..40)));
                client.batch_execute(if rng.random_range(0..4) == 0 { "ROLLBACK" } else { "COMMIT" }).unwrap();
                thread::sleep(Duration::from_millis(rng.random_range(0..20)));
            }
        })
    };

    // Three clients pull at the same time, each at its own pace; each pull
    // folds the change log, so the folds race each other and the writers.
    let apply = |changes: Vec<(String, Value)>, copy: &mut BTreeMap<i64, Value>| {
        for (_, row) in changes {
            match row["op"].as_str() {
                Some("upsert") => {
                    copy.insert(row["values"][0].as_i64().unwrap(), row["values"].clone());
                }
                _ => {
                    copy.remove(&row["key"][0].as_i64().unwrap());
                }
            }
        }
    };
    let pullers: Vec<_> = [37u64, 5, 500]
        .into_iter()
        .map(|max_rows| {
            let url = db.url.clone();
            let stop = stop.clone();
            thread::spawn(move || {
                let mut puller = postgres::Client::connect(&url, postgres::NoTls).unwrap();
                let mut copy: BTreeMap<i64, Value> = BTreeMap::new();
                let mut watermark: Option<String> = None;
                let mut pulls = 0;
                while !stop.load(Ordering::Relaxed) {
                    let (changes, next) = pull_all(&mut puller, "s", watermark.as_deref(), &json!({"max_rows": max_rows}));
                    apply(changes, &mut copy);
                    watermark = Some(next);
                    pulls += 1;
                    thread::sleep(Duration::from_millis(20));
                }
                (puller, copy, watermark, pulls, max_rows)
            })
        })
        .collect();
    thread::sleep(Duration::from_secs(6));
    stop.store(true, Ordering::Relaxed);
    let commits: usize = writers.into_iter().map(|w| w.join().unwrap()).sum();
    holder.join().unwrap();
    let mut pulls = 0;
    let mut table = BTreeMap::new();
    for puller in pullers {
        let (mut puller, mut copy, watermark, count, max_rows) = puller.join().unwrap();
        let (changes, _) = pull_all(&mut puller, "s", watermark.as_deref(), &json!({"max_rows": max_rows}));
        apply(changes, &mut copy);
        pulls += count;
        table = puller
            .query("SELECT id, v, writer FROM items", &[])
            .unwrap()
            .into_iter()
            .map(|r| (r.get::<_, i64>(0), json!([r.get::<_, i64>(0), r.get::<_, i64>(1), r.get::<_, i32>(2)])))
            .collect();
        let missing: Vec<&i64> = table.keys().filter(|k| copy.get(k) != table.get(k)).collect();
        let extra: Vec<&i64> = copy.keys().filter(|k| !table.contains_key(k)).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "the copy pulled {max_rows} at a time differs: stale or missing {missing:?}, extra {extra:?}"
        );
    }
    assert!(commits > 100 && pulls > 100, "the run was too short to prove anything: {commits} commits, {pulls} pulls");
    println!("{commits} commits by 4 writers, {pulls} pulls by 3 clients, {} rows converged", table.len());
}

/// A row written by a transaction still open while its table is provisioned
/// is tracked once it commits: provisioning waits for it before stamping.
#[test]
fn a_write_in_flight_during_provisioning_is_not_lost() {
    let db = TestDb::new("provision_race");
    let mut writer = db.connect();
    writer
        .batch_execute(
            "CREATE TABLE items (id bigint PRIMARY KEY, v bigint NOT NULL, writer int NOT NULL);
             INSERT INTO items SELECT g, 0, 0 FROM generate_series(1, 200) g;",
        )
        .unwrap();
    writer.batch_execute("BEGIN; INSERT INTO items VALUES (999, 9, 9);").unwrap();
    let url = db.url.clone();
    let provisioning = thread::spawn(move || {
        let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        client.batch_execute("SELECT sync_provision('s', '{\"tables\": [{\"name\": \"items\"}]}')").unwrap();
    });
    thread::sleep(Duration::from_millis(500));
    writer.batch_execute("COMMIT").unwrap();
    provisioning.join().unwrap();
    let (rows, _) = pull_all(&mut db.connect(), "s", None, &json!({}));
    assert_eq!(rows.len(), 201, "the row committed during provisioning is pulled");
}

/// A parent moving to another tenant while rows are written under it in
/// other transactions: with a foreign key to it, and without one.
const MOVING_PARENT: &str = r#"
CREATE TABLE codes (code text PRIMARY KEY, tenant_id int NOT NULL);
CREATE TABLE uses (id int PRIMARY KEY, code text REFERENCES codes, body text);
CREATE TABLE notes (id int PRIMARY KEY, use_id int, body text);
INSERT INTO codes VALUES ('P', 1), ('Q', 2);
INSERT INTO uses VALUES (1, 'P', 'there before');
SELECT sync_provision('s', '{"tables": [
  {"name": "codes", "filter": {"tenant_id": "tenant"}},
  {"name": "uses", "filter": {"via": "codes", "on": {"code": "code"}}},
  {"name": "notes", "filter": {"via": "uses", "on": {"use_id": "id"}}}]}');
"#;

#[test]
fn a_row_written_under_a_parent_while_it_moves_follows_it() {
    use tandem_tests::local::{local_value, Scenario};
    let s = Scenario::new("moving_parent", MOVING_PARENT, "s");
    let (token_1, token_2) = (s.register(json!({"tenant": 1})), s.register(json!({"tenant": 2})));
    let (one, two) = (s.store("one.db"), s.store("two.db"));
    s.sync_as(&one, &token_1);
    s.sync_as(&two, &token_2);
    // The move's statement has run, its transaction is open.
    let mut mover = s.server();
    mover.batch_execute("BEGIN; UPDATE codes SET tenant_id = 2 WHERE code = 'P'").unwrap();
    // Rows under P, in other transactions: one with the foreign key, one without.
    let writer = {
        let mut conn = s.server();
        thread::spawn(move || {
            conn.batch_execute(
                "INSERT INTO uses VALUES (10, 'P', 'written while P moves'); INSERT INTO notes VALUES (10, 1, 'under use 1')",
            )
            .unwrap()
        })
    };
    thread::sleep(Duration::from_millis(300));
    // Devices sync while the move is open: each sees P where it was.
    s.sync_as(&one, &token_1);
    s.sync_as(&two, &token_2);
    mover.batch_execute("COMMIT").unwrap();
    writer.join().unwrap();
    s.sync_as(&one, &token_1);
    s.sync_as(&two, &token_2);
    let ids = |file: &tandem_local::Store, table: &str| {
        local_value(file, &format!("SELECT group_concat(id, ',') FROM (SELECT id FROM {table} ORDER BY id)")).unwrap_or_default()
    };
    assert_eq!(ids(&two, "uses"), "1,10", "the rows under P reach its new tenant");
    assert_eq!(ids(&two, "notes"), "10");
    assert_eq!(ids(&one, "uses"), "", "and leave the old one");
    assert_eq!(ids(&one, "notes"), "");
}

#[test]
fn an_upload_under_a_parent_that_moves_meanwhile_is_refused_not_written_into_the_new_tenant() {
    use tandem_tests::local::{local, Scenario};
    let s = Scenario::new("upload_moving_parent", MOVING_PARENT, "s");
    let token_1 = s.register(json!({"tenant": 1}));
    let one = s.store("one.db");
    s.sync_as(&one, &token_1);
    local(&one, "UPDATE uses SET body = 'edited on the device' WHERE id = 1; INSERT INTO uses VALUES (11, 'P', 'new on the device')");
    // The move's statement has run (its locks held), its transaction is open.
    let mut mover = s.server();
    mover.batch_execute("BEGIN; UPDATE codes SET tenant_id = 2 WHERE code = 'P'").unwrap();
    let committer = thread::spawn(move || {
        thread::sleep(Duration::from_millis(500));
        mover.batch_execute("COMMIT").unwrap();
    });
    let report = s.sync_as(&one, &token_1);
    committer.join().unwrap();
    let rows: Vec<String> =
        s.server().query("SELECT id || ':' || coalesce(body, '') FROM uses ORDER BY id", &[]).unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(rows, ["1:there before"], "nothing written under P once it is tenant 2's: {report:?}");
    assert_eq!(report.rejected.len(), 2, "both refused, kept on the device: {report:?}");
    assert!(report.rejected.iter().all(|r| r.kind.as_str() == "outside_partition"), "{report:?}");
}
