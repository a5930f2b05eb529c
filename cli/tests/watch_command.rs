//! `tandem sync --watch` as a service runs it (stderr not a terminal):
//! an upload the server fails keeps the watch going, says why on stderr
//! each time it tries again, and goes up once the server takes it;
//! SIGTERM then ends the watch with its report.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tandem_local::{Store, SyncOptions};
use tandem_tests::local::Files;
use tandem_tests::TestDb;

const SCHEMA: &str = "
CREATE TABLE customers (id bigint PRIMARY KEY, tenant_id int NOT NULL, name text);
INSERT INTO customers VALUES (1, 1, 'Ada'), (2, 2, 'Linus');
SELECT sync_provision('crm', '{\"tables\": [{\"name\": \"customers\", \"filter\": {\"tenant_id\": \"tenant\"}}]}');
CREATE FUNCTION full_disk() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
  RAISE EXCEPTION 'could not extend file' USING ERRCODE = 'disk_full'; END $$;
CREATE TRIGGER full_disk BEFORE INSERT ON customers FOR EACH ROW WHEN (NEW.name = 'blocked') EXECUTE FUNCTION full_disk();
";

fn wait_for(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < limit, "waited {limit:?} for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A file of tenant 1 with an insert the server's trigger fails, and a
/// `tandem sync --watch` of it, its stderr lines on the receiver.
fn watching_a_failing_upload(db: &TestDb, files: &Files) -> (Child, mpsc::Receiver<String>) {
    let path = files.path("a.db");
    db.connect().batch_execute(SCHEMA).unwrap();
    let options: SyncOptions = serde_json::from_value(json!({"params": {"tenant": 1}})).unwrap();
    let store = Store::open(&path).unwrap();
    store.sync(&db.url, "crm", &options).unwrap();
    store.connection().execute("INSERT INTO customers VALUES (901, 1, 'blocked')", []).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(["sync", "--watch", "--json", "--scope", "crm", "--param", "tenant=1", "--remote", &db.url, "--local"])
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tandem sync --watch");
    let (lines, said) = mpsc::channel();
    let stderr = BufReader::new(child.stderr.take().expect("stderr"));
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    (child, said)
}

/// The next `count` lines on `said` that say the watch tries again.
fn retries(said: &mpsc::Receiver<String>, count: usize) -> Vec<String> {
    let mut told = Vec::new();
    while told.len() < count {
        match said.recv_timeout(Duration::from_secs(20)) {
            Ok(line) if line.contains("trying again") => told.push(line),
            Ok(_) => {}
            Err(e) => panic!("no retry said on stderr ({e}); said so far: {told:?}"),
        }
    }
    told
}

/// Ends the watch as a service manager does; its output.
fn stop(child: Child) -> std::process::Output {
    let stopped = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill -TERM");
    assert!(stopped.success());
    let output = child.wait_with_output().expect("the watch ends");
    assert!(output.status.success(), "{:?}", output.status);
    output
}

#[test]
fn a_watch_whose_upload_fails_says_so_and_keeps_going() {
    let db = TestDb::new("watch_cmd");
    let files = Files::new("watch_cmd");
    let (mut child, said) = watching_a_failing_upload(&db, &files);
    let told = retries(&said, 2);
    assert!(told[0].contains("could not extend file") && told[0].contains("53100"), "{told:?}");
    assert_eq!(child.try_wait().unwrap(), None, "the watch ended");

    let mut server = db.connect();
    server.batch_execute("DROP TRIGGER full_disk ON customers").unwrap();
    wait_for("the file's row on the server", Duration::from_secs(40), || {
        server.query("SELECT 1 FROM customers WHERE id = 901", &[]).unwrap().len() == 1
    });
    let output = stop(child);
    let report: Value = serde_json::from_slice(&output.stdout).expect("the report as JSON");
    let report = report.get("report").unwrap_or(&report);
    assert_eq!(report["pushed"], 1, "{report}");
}

/// Helper 71: a watch stopped while its upload still failed printed its
/// report ("synced ... 0 change(s) up") and nothing of the change left
/// behind. It now says how many changes wait.
#[test]
fn a_watch_stopped_with_changes_unsent_says_so() {
    let db = TestDb::new("watch_cmd_unsent");
    let files = Files::new("watch_cmd_unsent");
    let (child, said) = watching_a_failing_upload(&db, &files);
    retries(&said, 1);
    stop(child);
    let rest: Vec<String> = said.iter().collect();
    assert!(rest.iter().any(|line| line.contains("1 change(s) of this file not sent yet")), "{rest:?}");
}
