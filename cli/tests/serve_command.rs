//! `tandem serve` as an operator runs it: it relays `tandem sync` (whose
//! `--json` report and errors read as over a direct connection), refuses
//! plain HTTP off loopback, and stops cleanly on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tandem_tests::local::Scenario;
use tandem_tests::role::{Role, GATEWAY_GRANTS};

const SCHEMA: &str = r#"
CREATE TABLE customers (id bigint PRIMARY KEY, tenant_id int NOT NULL, name text);
INSERT INTO customers SELECT i, 1 + i % 2, 'customer ' || i FROM generate_series(1, 40) i;
SELECT sync_provision('crm', '{"tables": [{"name": "customers", "filter": {"tenant_id": "tenant"}}]}');
"#;

fn tandem() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tandem"))
}

/// `tandem serve` on a free port, its log on a pipe.
fn spawn_serve(database: &str) -> Child {
    tandem()
        .args(["serve", "--database", database, "--listen", "127.0.0.1:0", "--shutdown-grace", "5"])
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tandem serve")
}

/// A `tandem serve` process and the URL its log says it serves at.
fn serve(database: &str) -> (Child, String, std::thread::JoinHandle<String>) {
    let mut child = spawn_serve(database);
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut log = String::new();
    let url = loop {
        let line = lines.next().unwrap_or_else(|| panic!("tandem serve ended before serving:\n{log}")).unwrap();
        log.push_str(&line);
        log.push('\n');
        if let Some((_, rest)) = line.split_once("serving devices at ") {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    // The rest of the log, read until the process ends.
    let rest = std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            log.push_str(&line);
            log.push('\n');
        }
        log
    });
    (child, url, rest)
}

/// One `tandem sync --json` of `file` through the gateway at `url`.
fn sync(file: &std::path::Path, url: &str, token: &str) -> Output {
    tandem()
        .args(["sync", "--local"])
        .arg(file)
        .args(["--remote", url, "--scope", "crm", "--json"])
        .env("TANDEM_TOKEN", token)
        .output()
        .expect("run tandem sync")
}

fn sigterm(child: &Child) {
    // SAFETY: signals a child process the test started and still owns.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) }, 0);
}

/// `child`'s exit status once SIGTERM stopped it, within 10 s.
fn stopped_by_sigterm(child: &mut Child, what: &str) -> std::process::ExitStatus {
    sigterm(child);
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn json_of(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr)))
}

#[test]
fn tandem_serve_relays_tandem_sync_and_stops_on_sigterm() {
    let s = Scenario::new("cli_serve", SCHEMA, "crm");
    let role = Role::new(&s, "cli_gw", GATEWAY_GRANTS);
    let token = s.register(json!({"tenant": 1}));
    let (mut gateway, url, log) = serve(&role.url(&s));
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let file = s.files.path("a.db");

    let output = sync(&file, &url, &token);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report = json_of(&output);
    assert_eq!((report["version"].as_u64(), report["scope"].as_str(), report["pulled"].as_u64()), (Some(1), Some("crm"), Some(20)));
    let forged = format!("tdm_{}_{}", tandem_core::identity::token_client_id(&token).unwrap(), "0".repeat(64));
    let output = sync(&file, &url, &forged);
    assert_eq!(output.status.code(), Some(1));
    let error = json_of(&output);
    assert_eq!(error["version"], 1);
    assert!(error["error"]["message"].as_str().unwrap().contains("sync_rotate_token"), "{error}");

    // SIGTERM: a graceful stop, exit status 0.
    let status = stopped_by_sigterm(&mut gateway, "tandem serve did not stop on SIGTERM");
    let log = log.join().unwrap();
    assert!(status.success(), "{status}: {log}");
    assert!(log.contains("stopping") && log.contains("stopped"), "{log}");
}

#[test]
fn tandem_serve_refuses_plain_http_off_loopback() {
    let output = tandem()
        .args(["serve", "--database", "postgres://nobody@127.0.0.1:1/none", "--listen", "0.0.0.0:0"])
        .output()
        .expect("run tandem serve");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("refusing to serve plain HTTP") && stderr.contains("--tls-cert"), "{stderr}");
    let output = tandem().args(["serve", "--database", "postgres://x@h/db", "--tls-cert", "c.pem"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2), "--tls-cert needs --tls-key");
}

/// A certificate every client would refuse stops `tandem serve` at start,
/// saying why and what to make instead, not at each device's handshake.
#[test]
fn tandem_serve_refuses_a_certificate_clients_would_refuse() {
    let files = tandem_tests::local::Files::new("serve_certificate");
    for (kind, says) in [("ca", "first certificate is a CA's"), ("expired", "expired")] {
        let (cert, key) = tandem_tests::certificates::unusable_in_files(&files.dir, kind);
        let output = tandem()
            .args(["serve", "--database", "postgres://nobody@127.0.0.1:1/none", "--listen", "127.0.0.1:0"])
            .arg("--tls-cert")
            .arg(&cert)
            .arg("--tls-key")
            .arg(&key)
            .output()
            .expect("run tandem serve");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{kind}: {stderr}");
        assert!(stderr.contains(says) && stderr.contains("deploy.md"), "{kind}: {stderr}");
    }
}

#[test]
fn tandem_serve_refuses_to_connect_as_a_superuser() {
    let s = Scenario::new("serve_superuser", SCHEMA, "crm");
    let output = tandem().args(["serve", "--database", &s.db.url, "--listen", "127.0.0.1:0"]).output().expect("run tandem serve");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("is a superuser") && stderr.contains("tandem_gateway"), "{stderr}");
}

/// `tandem sync --watch --json` of scope crm, its output piped.
fn watch(file: &std::path::Path, remote: &str, token: &str) -> Child {
    tandem()
        .args(["sync", "--watch", "--json", "--local"])
        .arg(file)
        .args(["--remote", remote, "--scope", "crm"])
        .env("TANDEM_TOKEN", token)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tandem sync --watch")
}

/// Rows of `customers` in the file, or 0 while it has none.
fn rows_in(file: &std::path::Path, sql: &str) -> i64 {
    rusqlite::Connection::open_with_flags(file, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .and_then(|c| c.query_row(sql, [], |r| r.get(0)))
        .unwrap_or(0)
}

/// Waits until `sql` counts `want` in the file.
fn wait_for_rows(file: &std::path::Path, sql: &str, want: i64, what: &str) {
    let started = Instant::now();
    while rows_in(file, sql) != want {
        assert!(started.elapsed() < Duration::from_secs(20), "{what}: {} of {want}", rows_in(file, sql));
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn tandem_sync_watch_stays_live_and_stops_on_sigterm_with_its_report() {
    let s = Scenario::new("cli_watch", SCHEMA, "crm");
    let role = Role::new(&s, "cli_watch_gw", GATEWAY_GRANTS);
    let token = s.register(json!({"tenant": 1}));
    let (mut gateway, url, _log) = serve(&role.url(&s));
    let file = s.files.path("live.db");
    let watcher = watch(&file, &url, &token);
    let count = "SELECT count(*) FROM customers";
    wait_for_rows(&file, count, 20, "the first round");

    // A server commit reaches the file with nobody asking; a local write
    // reaches the server the same way.
    s.server().batch_execute("INSERT INTO customers VALUES (100, 1, 'from the server')").unwrap();
    wait_for_rows(&file, count, 21, "the server's commit");
    rusqlite::Connection::open(&file).unwrap().execute("INSERT INTO customers VALUES (101, 1, 'from the device')", []).unwrap();
    let started = Instant::now();
    while s.server().query_one("SELECT count(*) FROM customers WHERE id = 101", &[]).unwrap().get::<_, i64>(0) == 0 {
        assert!(started.elapsed() < Duration::from_secs(20), "the device's write did not go up");
        std::thread::sleep(Duration::from_millis(20));
    }

    // SIGTERM ends the watch after the round under way, with its report.
    sigterm(&watcher);
    let output = watcher.wait_with_output().unwrap();
    assert!(output.status.success(), "{}: {}", output.status, String::from_utf8_lossy(&output.stderr));
    let report = json_of(&output);
    assert_eq!((report["scope"].as_str(), report["pushed"].as_u64()), (Some("crm"), Some(1)), "{report}");
    assert!(report["pulled"].as_u64() >= Some(21) && report["rounds"].as_u64() >= Some(3), "{report}");
    sigterm(&gateway);
    gateway.wait().unwrap();
}

#[test]
fn a_watch_that_made_its_file_and_then_fails_leaves_the_file_and_its_unsent_rows() {
    let s = Scenario::new("cli_watch_keeps", SCHEMA, "crm");
    let token = s.register(json!({"tenant": 1}));
    let file = s.files.path("made.db");
    let watcher = watch(&file, &s.db.url, &token);
    let count = "SELECT count(*) FROM customers";
    wait_for_rows(&file, count, 20, "the first round");
    // The device is revoked; a commit wakes the watch, whose round is refused.
    let client = tandem_core::identity::token_client_id(&token).unwrap();
    s.server().execute("SELECT sync_revoke_client('crm', $1)", &[&client]).unwrap();
    rusqlite::Connection::open(&file).unwrap().execute("INSERT INTO customers VALUES (300, 1, 'unsent')", []).unwrap();
    let output = watcher.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(file.exists(), "the file the watch made is still there");
    assert_eq!(rows_in(&file, "SELECT count(*) FROM customers"), 21, "with its rows and the unsent one");
}

/// Helper 98: a log reader that goes away (`tandem serve 2>&1 | head -1`,
/// a log shipper restarted) left every request without an answer and
/// SIGTERM without effect. The gateway goes on serving and stops.
#[test]
fn tandem_serve_outlives_its_log_reader() {
    let s = Scenario::new("cli_serve_log_gone", SCHEMA, "crm");
    let role = Role::new(&s, "cli_gw_log", GATEWAY_GRANTS);
    let token = s.register(json!({"tenant": 1}));
    let mut gateway = spawn_serve(&role.url(&s));
    let mut lines = BufReader::new(gateway.stderr.take().unwrap()).lines();
    let first = lines.next().expect("a first log line").unwrap();
    let url = first.split_once("serving devices at ").map(|(_, rest)| rest.split_whitespace().next().unwrap().to_string());
    let url = url.unwrap_or_else(|| panic!("the first line names the address: {first}"));
    drop(lines);
    // Stopped however the test ends.
    struct Stopped(Child);
    impl Drop for Stopped {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut gateway = Stopped(gateway);
    let file = s.files.path("a.db");
    let output = sync(&file, &url, &token);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(json_of(&output)["pulled"].as_u64(), Some(20));
    let status = stopped_by_sigterm(&mut gateway.0, "tandem serve did not stop on SIGTERM once its log reader was gone");
    assert!(status.success(), "{status}");
}
