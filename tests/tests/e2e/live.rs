//! Live sync, end to end: devices watch their scope (over the gateway's
//! event stream, or with LISTEN on a direct connection) and see a server
//! commit in their file within a second or two; a local write goes up
//! without waiting for the server; a scope's watchers hear nothing of
//! another scope; a revoked token's stream ends and is refused; a gateway
//! killed and started again, or its LISTEN connection cut, loses no wake.
//!
//! The wakes come from the extension's own triggers: a commit that changes
//! a scope's tables notifies `LISTEN tandem` with the scope's name.

use std::io::{BufRead, BufReader};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use tandem_core::identity::token_client_id;
use tandem_local::{HttpRemote, PostgresRemote, Remote, RemoteError, Store, SyncOptions, SyncReport, WatchStep};
use tandem_tests::gateway::{Setup, SCHEMA};
use tandem_tests::local::{local, local_value};

/// How long a wake may take, at most, in these tests (it takes well
/// under a second; the bound leaves room for a loaded machine).
const PROMPT: Duration = Duration::from_secs(3);

/// A file kept live on a thread of its own.
struct Watcher {
    stop: Arc<AtomicBool>,
    /// True while the watch waits for a change (between rounds).
    waiting: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<SyncReport, String>>>,
}

impl Watcher {
    fn start(path: std::path::PathBuf, url: String, options: SyncOptions) -> Watcher {
        let stop = Arc::new(AtomicBool::new(false));
        let waiting = Arc::new(AtomicBool::new(false));
        let (flag, waits) = (Arc::clone(&stop), Arc::clone(&waiting));
        let thread = std::thread::spawn(move || {
            let store = Store::open(&path).map_err(|e| e.to_string())?;
            store
                .watch(&url, "crm", &options, &|| flag.load(Ordering::Relaxed), &mut |step| {
                    waits.store(matches!(step, WatchStep::Waiting), Ordering::Relaxed);
                })
                .map_err(|e| e.to_string())
        });
        Watcher { stop, waiting, thread: Some(thread) }
    }

    /// Waits until the watch has finished its rounds and waits for changes.
    fn until_waiting(&mut self) {
        time_until(Duration::from_secs(20), "the watch coming to wait", || {
            self.still_going();
            self.waiting.load(Ordering::Relaxed)
        });
    }

    /// Panics with what the watch returned if it ended by itself.
    fn still_going(&mut self) {
        if self.thread.as_ref().is_some_and(JoinHandle::is_finished) {
            panic!("the watch ended: {:?}", self.ended());
        }
    }

    /// What the watch returned, once it ended by itself.
    fn ended(&mut self) -> Result<SyncReport, String> {
        self.thread.take().expect("a watch not joined yet").join().expect("the watch panicked")
    }

    fn finish(mut self) -> Result<SyncReport, String> {
        self.stop.store(true, Ordering::Relaxed);
        self.ended()
    }
}

/// Commits `sql` on the server: the triggers of the tables it writes wake
/// their scope's watchers.
fn commit(setup: &Setup, sql: &str) {
    setup.s.server().batch_execute(sql).unwrap();
}

/// How long until `check` holds, polling every 10 ms; panics after `limit`.
fn time_until(limit: Duration, what: &str, mut check: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    started.elapsed()
}

/// The name the file holds for customer `id`.
fn name_in(path: &std::path::Path, id: i64) -> Option<String> {
    let store = Store::open(path).unwrap();
    local_value(&store, &format!("SELECT name FROM customers WHERE id = {id}"))
}

/// A server commit reaches a file watching through `url`; returns how long it took.
fn server_commit_reaches_the_file(setup: &Setup, url: String, label: &str) -> Duration {
    let token = setup.s.register(json!({"tenant": 1}));
    let path = setup.s.files.path(&format!("{label}.db"));
    // The gateway's CA is for the gateway; PostgreSQL has its own.
    let options = if url.starts_with("https") { setup.options(&token) } else { SyncOptions { token: Some(token), ..Default::default() } };
    let mut watcher = Watcher::start(path.clone(), url, options);
    watcher.until_waiting();
    assert_eq!(name_in(&path, 2).as_deref(), Some("customer 2"), "the first round pulled the scope");
    commit(setup, "UPDATE customers SET name = 'live' WHERE id = 2");
    let latency = time_until(PROMPT, "the server's commit in the watching file", || name_in(&path, 2).as_deref() == Some("live"));
    println!("{label}: a server commit reached the watching file in {} ms", latency.as_millis());
    let report = watcher.finish().unwrap();
    assert!(report.rounds.unwrap_or(0) >= 2, "{report:?}");
    assert_eq!(report.pulled, 21, "the first round's 20 rows, then the edit: {report:?}");
    latency
}

#[test]
fn a_device_watching_through_the_gateway_sees_a_server_commit_at_once() {
    let setup = Setup::new("live_https");
    server_commit_reaches_the_file(&setup, setup.url(), "https");
    // The gateway counts its watchers and the wakes it sent.
    let metrics = setup.http().get(setup.endpoint("/metrics")).send().unwrap().text().unwrap();
    for expected in ["tandem_gateway_watchers ", "tandem_gateway_wakes_total ", "tandem_gateway_listen_connected 1"] {
        assert!(metrics.contains(expected), "{expected} missing from:\n{metrics}");
    }
}

#[test]
fn a_device_watching_postgres_directly_sees_a_server_commit_at_once() {
    let setup = Setup::new("live_pg");
    server_commit_reaches_the_file(&setup, setup.s.db.url.clone(), "postgres");
}

/// A file of tenant 1 watching postgres directly, come to wait after its
/// first round.
fn watching_directly(setup: &Setup, label: &str) -> (std::path::PathBuf, Watcher) {
    let token = setup.s.register(json!({"tenant": 1}));
    let path = setup.s.files.path(&format!("{label}.db"));
    let mut watcher = Watcher::start(path.clone(), setup.s.db.url.clone(), SyncOptions { token: Some(token), ..Default::default() });
    watcher.until_waiting();
    (path, watcher)
}

#[test]
fn a_watch_brings_what_no_notification_announced_within_a_quiet_round() {
    let setup = Setup::new("live_quiet");
    let (path, watcher) = watching_directly(&setup, "quiet");
    // A write no notification announces (as a dump restored over the
    // server does not): the scope's notify trigger is off for it.
    let id: i64 = setup.s.server().query_one("SELECT id FROM tandem.scope_tables WHERE scope = 'crm'", &[]).unwrap().get(0);
    commit(
        &setup,
        &format!(
            "BEGIN; ALTER TABLE customers DISABLE TRIGGER tandem_{id}_notify;
             UPDATE customers SET name = 'unannounced' WHERE id = 2;
             ALTER TABLE customers ENABLE TRIGGER tandem_{id}_notify; COMMIT;"
        ),
    );
    std::thread::sleep(PROMPT);
    assert_eq!(name_in(&path, 2).as_deref(), Some("customer 2"), "nothing woke the watch");
    time_until(tandem_local::watch::QUIET_ROUND + PROMPT, "the unannounced write in the watching file", || {
        name_in(&path, 2).as_deref() == Some("unannounced")
    });
    watcher.finish().unwrap();
}

#[test]
fn a_watch_waits_out_the_extension_being_made_again() {
    let setup = Setup::new("live_remade");
    let (path, mut watcher) = watching_directly(&setup, "remade");
    // While a restore drops the extension and makes it again, its
    // functions are missing for a moment: a round then fails as if the
    // extension were not installed.
    commit(&setup, "ALTER FUNCTION sync_schema(text, jsonb) RENAME TO sync_schema_away");
    commit(&setup, "UPDATE customers SET name = 'during the restore' WHERE id = 2");
    std::thread::sleep(PROMPT);
    commit(&setup, "ALTER FUNCTION sync_schema_away(text, jsonb) RENAME TO sync_schema");
    time_until(Duration::from_secs(20), "the change in the watching file once the extension is back", || {
        watcher.still_going();
        name_in(&path, 2).as_deref() == Some("during the restore")
    });
    watcher.finish().unwrap();
}

/// An upload the server fails (here a trigger of its own reporting a
/// full disk) ends no watch: the watch still pulls what the server
/// commits, says why the upload failed, and tries it again with backoff
/// until it goes up. Before, the watch ended at the first such failure
/// (helper 69), and a device stopped syncing until restarted.
#[test]
fn an_upload_the_server_fails_never_ends_a_watch_and_goes_up_once_it_can() {
    let setup = Setup::new("live_upload_fails");
    commit(
        &setup,
        "CREATE FUNCTION full_disk() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
           RAISE EXCEPTION 'could not extend file' USING ERRCODE = 'disk_full'; END $$; \
         CREATE TRIGGER full_disk BEFORE INSERT ON customers FOR EACH ROW WHEN (NEW.name = 'blocked') EXECUTE FUNCTION full_disk()",
    );
    let (path, mut watcher) = watching_directly(&setup, "fails");
    local(&Store::open(&path).unwrap(), "INSERT INTO customers VALUES (901, 1, 'blocked')");
    std::thread::sleep(PROMPT);
    watcher.still_going();
    // The pull goes on meanwhile.
    commit(&setup, "UPDATE customers SET name = 'while uploads fail' WHERE id = 2");
    time_until(Duration::from_secs(20), "the server's commit in the file while its upload fails", || {
        watcher.still_going();
        name_in(&path, 2).as_deref() == Some("while uploads fail")
    });
    assert!(!setup.server_rows().iter().any(|(id, _, _)| *id == 901));
    commit(&setup, "DROP TRIGGER full_disk ON customers");
    time_until(Duration::from_secs(40), "the file's row on the server once it can go", || {
        watcher.still_going();
        setup.server_rows().contains(&(901, 1, Some("blocked".into())))
    });
    let report = watcher.finish().unwrap();
    assert_eq!(report.pushed, 1, "{report:?}");
}

#[test]
fn a_local_write_in_a_watching_file_goes_up_without_a_server_change() {
    let setup = Setup::new("live_local");
    let token = setup.s.register(json!({"tenant": 1}));
    let path = setup.s.files.path("a.db");
    let mut watcher = Watcher::start(path.clone(), setup.url(), setup.options(&token));
    watcher.until_waiting();
    // Another program writes the file: no notification from the server.
    local(&Store::open(&path).unwrap(), "INSERT INTO customers VALUES (901, 1, 'written locally')");
    let latency =
        time_until(PROMPT, "the local write on the server", || setup.server_rows().contains(&(901, 1, Some("written locally".into()))));
    println!("a local write reached the server in {} ms", latency.as_millis());
    let report = watcher.finish().unwrap();
    assert_eq!(report.pushed, 1, "{report:?}");
}

#[test]
fn an_app_writing_the_file_all_the_while_never_ends_the_watch() {
    let setup = Setup::new("live_busy");
    let token = setup.s.register(json!({"tenant": 1}));
    let path = setup.s.files.path("a.db");
    let mut watcher = Watcher::start(path.clone(), setup.url(), setup.options(&token));
    watcher.until_waiting();
    // The app commits every few milliseconds while the watch pushes what
    // it writes and pulls what the server commits meanwhile.
    let app = Store::open(&path).unwrap();
    for i in 0..300i64 {
        local(&app, &format!("INSERT INTO customers VALUES ({}, 1, 'app write {i}')", 1000 + i));
        if i % 50 == 0 {
            commit(&setup, &format!("INSERT INTO customers VALUES ({}, 1, 'server write')", 5000 + i));
        }
        assert!(!watcher.thread.as_ref().is_some_and(JoinHandle::is_finished), "the watch ended: {:?}", watcher.ended());
        std::thread::sleep(Duration::from_millis(3));
    }
    time_until(Duration::from_secs(20), "every app write on the server", || {
        setup.server_rows().iter().filter(|(id, _, _)| (1000..1300).contains(id)).count() == 300
    });
    let report = watcher.finish().unwrap();
    assert_eq!(report.pushed, 300, "{report:?}");
}

/// An event as it came: its name, its data, and when.
type RawEvent = (String, String, Instant);

/// Reads a raw event stream on a thread; the channel closes when it ends.
fn raw_events(setup: &Setup, token: &str, scope: &str) -> Receiver<RawEvent> {
    let response = setup.http().get(setup.endpoint(&format!("/v1/scopes/{scope}/events"))).bearer_auth(token).send().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let (sender, events) = mpsc::channel();
    std::thread::spawn(move || {
        let (mut name, mut data) = (String::new(), String::new());
        for line in BufReader::new(response).lines() {
            let Ok(line) = line else { return };
            if let Some(value) = line.strip_prefix("event:") {
                name = value.trim().to_string();
            } else if let Some(value) = line.strip_prefix("data:") {
                data = value.trim().to_string();
            } else if line.is_empty()
                && !name.is_empty()
                && sender.send((std::mem::take(&mut name), std::mem::take(&mut data), Instant::now())).is_err()
            {
                return;
            }
        }
    });
    events
}

/// The events that came within `within`.
fn drain(events: &Receiver<RawEvent>, within: Duration) -> Vec<RawEvent> {
    let until = Instant::now() + within;
    let mut got = Vec::new();
    while let Ok(event) = events.recv_timeout(until.saturating_duration_since(Instant::now())) {
        got.push(event);
    }
    got
}

#[test]
fn a_scopes_watchers_hear_nothing_of_another_scope_and_bursts_coalesce() {
    let schema = format!(
        "{SCHEMA}
         CREATE TABLE notes (id int PRIMARY KEY, body text);
         SELECT sync_provision('other', '{{\"tables\": [{{\"name\": \"notes\"}}]}}');"
    );
    let setup = Setup::with_schema("live_scopes", &schema, |_| {});
    let token = setup.s.register(json!({"tenant": 1}));
    let events = raw_events(&setup, &token, "crm");
    // An event right after subscribing (and one more at most, should the
    // gateway's LISTEN connection have come up meanwhile).
    let first = drain(&events, Duration::from_millis(500));
    assert!((1..=2).contains(&first.len()), "{first:?}");
    // Only the wake travels: no rows, no names.
    assert_eq!((first[0].0.as_str(), first[0].1.as_str()), ("changed", "{}"));

    // Another scope's commits: nothing.
    for i in 0..5 {
        commit(&setup, &format!("INSERT INTO notes VALUES ({i}, 'other scope')"));
    }
    let heard = drain(&events, Duration::from_millis(1500));
    assert!(heard.is_empty(), "woken by another scope's commits: {heard:?}");

    // A burst of 40 commits in the scope, back to back on one connection:
    // at most one event per 10 ms, so far fewer events than commits.
    let burst_sql: String = (0..40).map(|i| format!("BEGIN; UPDATE customers SET name = 'burst {i}' WHERE id = 2; COMMIT; ")).collect();
    let started = Instant::now();
    commit(&setup, &burst_sql);
    let burst = started.elapsed();
    let heard = drain(&events, burst + Duration::from_millis(500));
    let most = (burst.as_millis() / 10) as usize + 2;
    assert!(
        !heard.is_empty() && heard.len() <= most && heard.len() < 40,
        "{} event(s) for 40 commits in {burst:?} (at most {most})",
        heard.len()
    );
    assert!(heard.iter().all(|(name, data, _)| name == "changed" && data == "{}"), "{heard:?}");
    println!("40 commits in {} ms: {} event(s)", burst.as_millis(), heard.len());

    // The same through the clients: a wait on "crm" ignores "other".
    let mut https = HttpRemote::connect(&setup.url(), Some(&setup.certs.ca)).unwrap();
    let mut direct = PostgresRemote::connect(&setup.s.db.url, None).unwrap();
    for remote in [&mut https as &mut dyn Remote, &mut direct] {
        assert!(remote.wait_for_change("crm", Some(&token), PROMPT).unwrap(), "a new subscription says to pull");
        while remote.wait_for_change("crm", Some(&token), Duration::from_millis(300)).unwrap() {}
        commit(&setup, "UPDATE notes SET body = 'again' WHERE id = 1");
        assert!(!remote.wait_for_change("crm", Some(&token), Duration::from_millis(1000)).unwrap(), "woken by scope other");
        commit(&setup, "UPDATE customers SET name = 'mine' WHERE id = 4");
        assert!(remote.wait_for_change("crm", Some(&token), PROMPT).unwrap(), "not woken by its own scope");
    }
}

#[test]
fn a_revoked_tokens_stream_ends_and_is_refused_again() {
    let setup = Setup::with("live_revoke", |config| config.token_recheck = Duration::from_secs(1));
    let token = setup.s.register(json!({"tenant": 1}));
    let other = setup.s.register(json!({"tenant": 2}));
    let path = setup.s.files.path("a.db");
    let mut watcher = Watcher::start(path, setup.url(), setup.options(&token));
    watcher.until_waiting();
    let raw = raw_events(&setup, &token, "crm");
    let kept = raw_events(&setup, &other, "crm");

    let id = token_client_id(&token).unwrap().to_string();
    tandem_tests::json(&mut setup.s.server(), "SELECT to_jsonb(sync_revoke_client('crm', $1))", &[&id]);
    let revoked = Instant::now();
    // The raw stream ends once its token is checked again...
    while raw.recv_timeout(Duration::from_secs(5)).is_ok() {}
    assert!(revoked.elapsed() < Duration::from_secs(5), "the revoked token's stream did not end");
    // ...and the watch, reconnecting, is refused (401): it ends with the error.
    let error = watcher.ended().unwrap_err();
    assert!(error.contains("refused: invalid token") && error.contains("sync_rotate_token"), "{error}");
    println!("a revoked token's watch ended {} ms after the revocation", revoked.elapsed().as_millis());
    let response = setup.http().get(setup.endpoint("/v1/scopes/crm/events")).bearer_auth(&token).send().unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let body: Value = response.json().unwrap();
    assert_eq!(body["error"]["sqlstate"], "28000", "{body}");
    // Another device's stream stays open and is still woken.
    drain(&kept, Duration::from_millis(200));
    commit(&setup, "UPDATE customers SET name = 'for two' WHERE id = 1");
    assert!(kept.recv_timeout(PROMPT).is_ok(), "a valid token's stream was ended too");
    // No token or another scope's: refused when subscribing, as elsewhere.
    assert_eq!(setup.http().get(setup.endpoint("/v1/scopes/crm/events")).send().unwrap().status(), StatusCode::UNAUTHORIZED);
    let response = setup.http().get(setup.endpoint("/v1/scopes/nope/events")).bearer_auth(&other).send().unwrap();
    assert!([StatusCode::NOT_FOUND, StatusCode::UNAUTHORIZED].contains(&response.status()), "{}", response.status());
}

#[test]
fn a_watch_outlives_the_gateways_death_and_its_listen_connection_being_cut() {
    let mut setup = Setup::new("live_restart");
    let token = setup.s.register(json!({"tenant": 1}));
    let path = setup.s.files.path("a.db");
    let mut watcher = Watcher::start(path.clone(), setup.url(), setup.options(&token));
    watcher.until_waiting();

    // Killed, down for a second, started again at the same address.
    setup.restart(Duration::from_secs(1));
    commit(&setup, "UPDATE customers SET name = 'after the restart' WHERE id = 2");
    let took = time_until(Duration::from_secs(15), "a change after the gateway's restart", || {
        name_in(&path, 2).as_deref() == Some("after the restart")
    });
    println!("after a restart, a change reached the file in {} ms", took.as_millis());

    // The gateway's LISTEN connection cut: a commit made meanwhile is not
    // heard, but the reconnected listener wakes every stream. Settled
    // first: an event still on its way would wake the watch by itself, and
    // the dead gateway's session must be gone, the new one's up.
    let mut server = setup.s.server();
    let listening = "FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'tandem-gateway-listen'";
    time_until(Duration::from_secs(10), "one LISTEN session, the new gateway's", || {
        let row = server.query_one(&format!("SELECT count(*), count(*) FILTER (WHERE query = 'LISTEN tandem') {listening}"), &[]).unwrap();
        (row.get::<_, i64>(0), row.get::<_, i64>(1)) == (1, 1)
    });
    std::thread::sleep(Duration::from_millis(500));
    watcher.until_waiting();
    let cut: i64 = server.query_one(&format!("SELECT count(pg_terminate_backend(pid)) {listening}"), &[]).unwrap().get(0);
    assert_eq!(cut, 1, "the gateway's one LISTEN connection");
    server.batch_execute("UPDATE customers SET name = 'unheard' WHERE id = 4").unwrap();
    let took = time_until(Duration::from_secs(10), "a change made while the listener was down", || {
        name_in(&path, 4).as_deref() == Some("unheard")
    });
    println!("with the LISTEN connection cut, a change reached the file in {} ms", took.as_millis());
    let report = watcher.finish().unwrap();
    assert!(report.pulled >= 22, "{report:?}");
}

#[test]
fn sync_run_with_watch_keeps_going_for_that_long_and_sums_its_rounds() {
    let setup = Setup::new("live_sync_run");
    let token = setup.s.register(json!({"tenant": 1}));
    let path = setup.s.files.path("a.db");
    let options = json!({"token": token, "ca_cert": setup.certs.ca, "watch": 2}).to_string();
    let url = setup.url();
    let started = Instant::now();
    let running = std::thread::spawn(move || {
        let store = Store::open(&path).unwrap();
        let report: String = store.connection().query_row("SELECT sync_run(?1, 'crm', ?2)", [url, options], |r| r.get(0)).unwrap();
        (report, started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(800));
    commit(&setup, "UPDATE customers SET name = 'during the watch' WHERE id = 2");
    let (report, took) = running.join().unwrap();
    let report: Value = serde_json::from_str(&report).unwrap();
    assert!(took >= Duration::from_secs(2) && took < Duration::from_millis(3500), "returned after {took:?}");
    assert_eq!(report["pulled"], 21, "the first round's 20 rows and the edit: {report}");
    assert!(report["rounds"].as_u64().is_some_and(|n| n >= 2), "{report}");
    assert!(report["took_ms"].as_u64().is_some_and(|ms| ms >= 2000), "{report}");
    // Not a number of seconds: refused before anything is done.
    let store = setup.s.store("b.db");
    for bad in [json!(0), json!(-1), json!("2")] {
        let options = json!({"token": token, "ca_cert": setup.certs.ca, "watch": bad}).to_string();
        let error = store.connection().query_row("SELECT sync_run(?1, 'crm', ?2)", [setup.url(), options], |r| r.get::<_, String>(0));
        assert!(error.is_err(), "watch {bad}");
    }
    assert_eq!(tandem_tests::local::local_count(&store, "SELECT count(*) FROM sqlite_master WHERE name = 'customers'"), 0);
}

#[test]
fn an_unreachable_gateway_does_not_end_a_watch() {
    let mut setup = Setup::new("live_unreachable");
    let token = setup.s.register(json!({"tenant": 1}));
    let mut remote = HttpRemote::connect(&setup.url(), Some(&setup.certs.ca)).unwrap();
    assert!(remote.wait_for_change("crm", Some(&token), PROMPT).unwrap());
    let addr = setup.gateway().addr();
    setup.gateway.take().unwrap().kill().unwrap();
    // The stream is gone and cannot be opened again: unreachable, which a
    // watch waits out.
    let error = remote.wait_for_change("crm", Some(&token), PROMPT).unwrap_err();
    assert!(matches!(error, RemoteError::Unreachable { .. }) && error.is_transient(), "{error}");
    let mut config = setup.config();
    config.listen = addr;
    setup.gateway = Some(tandem_server::Running::start(config).unwrap());
    assert!(remote.wait_for_change("crm", Some(&token), PROMPT).unwrap(), "the stream opened again says to pull");
}

#[test]
fn a_graceful_stop_ends_the_event_streams_at_once() {
    let mut setup = Setup::with("live_stop", |config| config.shutdown_grace = Duration::from_secs(30));
    let token = setup.s.register(json!({"tenant": 1}));
    let events = raw_events(&setup, &token, "crm");
    assert!(!drain(&events, Duration::from_millis(300)).is_empty(), "the first event");
    let started = Instant::now();
    setup.gateway.take().unwrap().stop().expect("a clean stop");
    assert!(started.elapsed() < Duration::from_secs(5), "the stop waited {:?} for an open stream", started.elapsed());
    // The stream ended: the reader's channel closes.
    assert!(matches!(events.recv_timeout(Duration::from_secs(2)), Err(mpsc::RecvTimeoutError::Disconnected)));
}
