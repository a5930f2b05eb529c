//! The HTTPS gateway, end to end: a gateway in this process, listening on
//! loopback with a certificate made here, relays to the real extension as
//! a role that holds nothing but EXECUTE on the three device functions.
//! Devices sync through it with their token alone; every refusal has its
//! status and changes nothing; bodies travel compressed both ways; a
//! download cut by the gateway's death resumes where it stopped.

use std::time::{Duration, Instant};

use reqwest::blocking::Response;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tandem_core::apply_result::ApplyResult;
use tandem_core::identity::token_client_id;
use tandem_core::options::{ApplyOptions, SelectOptions};
use tandem_core::schema::Schema;
use tandem_local::{HttpRemote, Remote, RemoteError, SyncOptions};
use tandem_server::Running;
use tandem_tests::gateway::{certificates, Setup};
use tandem_tests::json as query_json;
use tandem_tests::local::{local, local_count};

/// The JSON error body of a refusal, checked for its status.
fn refusal(response: Response, status: StatusCode) -> Value {
    let got = response.status();
    let body: Value = response.json().unwrap_or_else(|e| panic!("{got}: the body is not JSON: {e}"));
    assert_eq!(got, status, "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    body["error"].clone()
}

fn upload(origin: &str, rows: Value) -> String {
    json!({"format": 1, "scope": "crm", "origin": origin,
           "tables": [{"name": "public.customers", "columns": ["id", "tenant_id", "name"], "rows": rows}]})
    .to_string()
}

#[test]
fn a_tenant_syncs_both_ways_through_the_gateway_over_https() {
    let setup = Setup::new("gw_sync");
    let one = setup.s.register(json!({"tenant": 1}));
    let two = setup.s.register(json!({"tenant": 2}));
    let a = setup.s.store("a.db");
    let b = setup.s.store("b.db");

    let first = setup.sync(&a, &one);
    assert!(first.provisioned);
    assert_eq!(first.pulled, 20);
    assert_eq!(local_count(&a, "SELECT count(*) FROM customers WHERE tenant_id = 1"), 20);
    assert_eq!(local_count(&a, "SELECT count(*) FROM customers WHERE tenant_id <> 1"), 0, "only its tenant's rows");
    setup.sync(&b, &two);
    assert_eq!(local_count(&b, "SELECT count(*) FROM customers WHERE tenant_id = 2"), 20);

    // Up: a new row and an edit; down: the server's edit, seen by the file.
    local(&a, "INSERT INTO customers VALUES (101, 1, 'from a'); UPDATE customers SET name = 'edited on a' WHERE id = 2");
    setup.s.server().batch_execute("UPDATE customers SET name = 'edited on the server' WHERE id = 4").unwrap();
    let report = setup.sync(&a, &one);
    assert_eq!(report.pushed, 2, "{report:?}");
    assert_eq!(report.pulled, 1, "{report:?}");
    let rows = setup.server_rows();
    assert!(rows.contains(&(101, 1, Some("from a".into()))) && rows.contains(&(2, 1, Some("edited on a".into()))), "{rows:?}");
    assert_eq!(tandem_tests::local::local_value(&a, "SELECT name FROM customers WHERE id = 4").as_deref(), Some("edited on the server"));
    // Tenant 2's file gets nothing of it.
    let report = setup.sync(&b, &two);
    assert_eq!((report.pushed, report.pulled), (0, 0), "{report:?}");

    // sync_run from SQL takes the same URL.
    local(&b, "INSERT INTO customers VALUES (102, 2, 'from b by SQL')");
    let options = json!({"token": two, "ca_cert": setup.certs.ca}).to_string();
    let report: String = b
        .connection()
        .query_row("SELECT sync_run(?1, 'crm', ?2)", [setup.url(), options], |r| r.get(0))
        .unwrap_or_else(|e| panic!("sync_run over https: {e}"));
    assert_eq!(serde_json::from_str::<Value>(&report).unwrap()["pushed"], 1, "{report}");
    assert!(setup.server_rows().contains(&(102, 2, Some("from b by SQL".into()))));

    // HTTP/2 through ALPN; health and metrics.
    let http = setup.http();
    let health = http.get(setup.endpoint("/healthz")).send().unwrap();
    assert_eq!(health.version(), reqwest::Version::HTTP_2);
    assert_eq!(health.status(), StatusCode::OK);
    let metrics = http.get(setup.endpoint("/metrics")).send().unwrap().text().unwrap();
    for expected in [
        r#"tandem_gateway_requests_total{route="/v1/scopes/{scope}/changes",status="200"}"#,
        r#"tandem_gateway_rows_total{direction="down"}"#,
        r#"tandem_gateway_rows_total{direction="up"}"#,
        r#"tandem_gateway_bytes_total{direction="down"}"#,
        r#"tandem_gateway_request_duration_seconds_bucket{route="/v1/scopes/{scope}/apply",le="0.5"}"#,
    ] {
        assert!(metrics.contains(expected), "{expected} missing from:\n{metrics}");
    }
}

#[test]
fn requests_without_a_good_token_are_refused_and_change_nothing() {
    let setup = Setup::new("gw_tokens");
    let one = setup.s.register(json!({"tenant": 1}));
    let revoked = setup.s.register(json!({"tenant": 1}));
    let revoked_id = token_client_id(&revoked).unwrap().to_string();
    let mut server = setup.s.server();
    query_json(&mut server, "SELECT to_jsonb(sync_revoke_client('crm', $1))", &[&revoked_id]);
    server
        .batch_execute(
            r#"CREATE TABLE notes (id int PRIMARY KEY);
               SELECT sync_provision('other', '{"tables": [{"name": "notes"}]}');"#,
        )
        .unwrap();
    let other_scope = query_json(&mut server, "SELECT sync_register_client('other', '{}')", &[])["token"].as_str().unwrap().to_string();
    let forged = format!("tdm_{}_{}", token_client_id(&one).unwrap(), "0".repeat(64));
    let http = setup.http();
    let before = setup.server_rows();
    let changes = setup.endpoint("/v1/scopes/crm/changes");
    let apply = setup.endpoint("/v1/scopes/crm/apply");
    let steal = upload(&revoked_id, json!([{"op": "upsert", "values": [2, 2, "stolen"]}]));

    // No token, or not a token: refused before the database is asked.
    let error = refusal(http.post(&changes).json(&json!({})).send().unwrap(), StatusCode::UNAUTHORIZED);
    assert!(error["sqlstate"].is_null() && error["message"].as_str().unwrap().contains("Bearer"), "{error}");
    let error = refusal(http.post(&apply).body(steal.clone()).send().unwrap(), StatusCode::UNAUTHORIZED);
    assert!(error["sqlstate"].is_null(), "{error}");
    let error = refusal(http.post(&apply).bearer_auth("let-me-in").body(steal.clone()).send().unwrap(), StatusCode::UNAUTHORIZED);
    assert!(error["message"].as_str().unwrap().contains("sync_register_client"), "{error}");
    // A token the server does not know, a revoked one, another scope's: 28000.
    for (what, token) in [("forged", &forged), ("revoked", &revoked), ("another scope's", &other_scope)] {
        let error = refusal(http.post(&changes).bearer_auth(token).json(&json!({})).send().unwrap(), StatusCode::UNAUTHORIZED);
        assert_eq!(error["sqlstate"], "28000", "{what}: {error}");
        let error = refusal(http.post(&apply).bearer_auth(token).body(steal.clone()).send().unwrap(), StatusCode::UNAUTHORIZED);
        assert_eq!(error["sqlstate"], "28000", "{what}: {error}");
        let error = refusal(http.get(setup.endpoint("/v1/scopes/crm/schema")).bearer_auth(token).send().unwrap(), StatusCode::UNAUTHORIZED);
        assert_eq!(error["sqlstate"], "28000", "{what}: {error}");
    }
    // A good token claiming another client's upload: 42501.
    let error = refusal(http.post(&apply).bearer_auth(&one).body(steal.clone()).send().unwrap(), StatusCode::FORBIDDEN);
    assert_eq!(error["sqlstate"], "42501", "{error}");
    assert_eq!(setup.server_rows(), before, "nothing changed");

    // Through the client: the same refusals, saying what to do, once.
    let file = setup.s.store("revoked.db");
    let error = file.sync(&setup.url(), "crm", &setup.options(&revoked)).unwrap_err().to_string();
    assert!(error.contains("refused: invalid token") && error.contains("sync_rotate_token"), "{error}");
    assert_eq!(error.matches("sync_rotate_token").count(), 1, "one hint: {error}");
    let error = file.sync(&setup.url(), "crm", &SyncOptions { ca_cert: setup.options(&one).ca_cert, ..Default::default() });
    assert!(error.unwrap_err().to_string().contains("--token"), "no token");
}

#[test]
fn each_kind_of_refusal_has_its_status() {
    let setup = Setup::with("gw_statuses", |config| config.max_body_bytes = 64 << 10);
    let one = setup.s.register(json!({"tenant": 1}));
    let me = token_client_id(&one).unwrap().to_string();
    let http = setup.http();
    let changes = setup.endpoint("/v1/scopes/crm/changes");
    let apply = setup.endpoint("/v1/scopes/crm/apply");
    let before = setup.server_rows();

    // Filter parameters, a client or a token come from the bearer only.
    for body in [json!({"params": {"tenant": 2}}), json!({"client_id": me}), json!({"token": one})] {
        let error = refusal(http.post(&changes).bearer_auth(&one).json(&body).send().unwrap(), StatusCode::BAD_REQUEST);
        assert!(error["message"].as_str().unwrap().contains("come from the token"), "{body}: {error}");
    }
    let error = refusal(
        http.post(format!("{apply}?params=%7B%22tenant%22%3A2%7D")).bearer_auth(&one).body(upload(&me, json!([]))).send().unwrap(),
        StatusCode::BAD_REQUEST,
    );
    assert!(error["message"].as_str().unwrap().contains("\"params\""), "{error}");
    // Invalid input: the extension's 22xxx, or unreadable JSON.
    let error = refusal(http.post(&changes).bearer_auth(&one).json(&json!({"max_rows": 0})).send().unwrap(), StatusCode::BAD_REQUEST);
    assert_eq!(error["sqlstate"], "22023", "{error}");
    refusal(http.post(&changes).bearer_auth(&one).json(&json!({"since": 5})).send().unwrap(), StatusCode::BAD_REQUEST);
    let error = refusal(
        http.post(&changes).bearer_auth(&one).header("content-type", "application/json").body("{\"since\": ").send().unwrap(),
        StatusCode::BAD_REQUEST,
    );
    assert!(error["sqlstate"].is_null(), "{error}");
    let other_scope = upload(&me, json!([])).replace("\"scope\":\"crm\"", "\"scope\":\"other\"");
    let error = refusal(http.post(&apply).bearer_auth(&one).body(other_scope).send().unwrap(), StatusCode::BAD_REQUEST);
    assert_eq!(error["sqlstate"], "22023", "a changeset for another scope: {error}");
    let error = refusal(http.post(&apply).bearer_auth(&one).body("{not json").send().unwrap(), StatusCode::BAD_REQUEST);
    assert!(error["sqlstate"].as_str().is_some_and(|s| s.starts_with("22")), "{error}");
    // Unknown scope: 404 when the extension says 42704; an extension that
    // tells a device no more than "not your token" (28000) for a scope it
    // cannot see gets 401.
    let response = http.get(setup.endpoint("/v1/scopes/nope/schema")).bearer_auth(&one).send().unwrap();
    let status = response.status();
    let error = refusal(response, status);
    match error["sqlstate"].as_str() {
        Some("42704") => assert_eq!(status, StatusCode::NOT_FOUND),
        Some("28000") => assert_eq!(status, StatusCode::UNAUTHORIZED),
        _ => panic!("an unknown scope: {status} {error}"),
    }
    refusal(http.get(setup.endpoint("/v2/nothing")).send().unwrap(), StatusCode::NOT_FOUND);
    // Rows refused: 422, with the rows in the detail for the device to set aside.
    let theirs = upload(&me, json!([{"op": "upsert", "seq": 1, "values": [500, 2, "tenant 2's"]}]));
    let error = refusal(http.post(&apply).bearer_auth(&one).body(theirs).send().unwrap(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error["detail"]["rejected"][0]["kind"], "outside_partition", "{error}");
    // Too large, whether it came compressed or not: 413.
    let big = upload(&me, json!([{"op": "upsert", "seq": 1, "values": [501, 1, "x".repeat(100 << 10)]}]));
    let error = refusal(http.post(&apply).bearer_auth(&one).body(big.clone()).send().unwrap(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(error["message"].as_str().unwrap().contains("max-body-bytes"), "{error}");
    let squeezed = zstd::encode_all(big.as_bytes(), 3).unwrap();
    assert!(squeezed.len() < 64 << 10);
    let response = http.post(&apply).bearer_auth(&one).header("content-encoding", "zstd").body(squeezed).send().unwrap();
    refusal(response, StatusCode::PAYLOAD_TOO_LARGE);
    // A compressed bomb with a made-up token is refused for the token,
    // before the gateway decompresses a byte of it; a pull's options are
    // held to 64 KiB whatever the token.
    let bomb = zstd::encode_all(vec![b' '; 8 << 20].as_slice(), 3).unwrap();
    let forged = format!("tdm_{me}_{}", "0".repeat(64));
    let response = http.post(&apply).bearer_auth(&forged).header("content-encoding", "zstd").body(bomb.clone()).send().unwrap();
    refusal(response, StatusCode::UNAUTHORIZED);
    let response = http.post(&changes).bearer_auth(&one).header("content-encoding", "zstd").header("content-type", "application/json");
    refusal(response.body(bomb).send().unwrap(), StatusCode::PAYLOAD_TOO_LARGE);
    // JSON of the wrong shape is as bad a request as unreadable JSON.
    refusal(http.post(&changes).bearer_auth(&one).json(&json!([1, 2])).send().unwrap(), StatusCode::BAD_REQUEST);
    assert_eq!(setup.server_rows(), before, "nothing changed");

    // A watermark older than the scope's tracking: 409, and the file resyncs.
    let file = setup.s.store("old.db");
    setup.sync(&file, &one);
    let watermark = tandem_tests::local::local_value(&file, "SELECT watermark FROM tandem_scopes").unwrap();
    setup
        .s
        .server()
        .batch_execute(
            r#"SELECT sync_deprovision('crm');
               SELECT sync_provision('crm', '{"tables": [{"name": "customers", "filter": {"tenant_id": "tenant"}}]}');"#,
        )
        .unwrap();
    let error = refusal(http.post(&changes).bearer_auth(&one).json(&json!({"since": watermark})).send().unwrap(), StatusCode::CONFLICT);
    assert_eq!((error["sqlstate"].as_str(), &error["detail"]), (Some("55000"), &json!({"resync": true})), "{error}");
    let report = setup.sync(&file, &one);
    assert!(report.resynced, "{report:?}");
}

/// A refusal made before the body is read (a bad token, none at all)
/// reaches an HTTP/2 client as its answer while the client is still
/// sending: the stream ends after the answer, not cancelled before it,
/// so the device or operator reads why instead of a reset stream.
#[test]
fn an_early_refusal_of_a_large_upload_reaches_an_http2_client_whole() {
    let setup = Setup::new("gw_early_refusal");
    let one = setup.s.register(json!({"tenant": 1}));
    let me = token_client_id(&one).unwrap().to_string();
    let forged = format!("tdm_{me}_{}", "0".repeat(64));
    let http = setup.http();
    let apply = setup.endpoint("/v1/scopes/crm/apply");
    // Far past the 64 KiB a client may send before the gateway reads any.
    let large = upload(&me, json!([{"op": "upsert", "seq": 1, "values": [1, 1, "x".repeat(1 << 20)]}]));
    let response = http.post(&apply).bearer_auth(&forged).body(large.clone()).send().expect("an answer, not a reset stream");
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    refusal(response, StatusCode::UNAUTHORIZED);
    let response = http.post(&apply).body(large).send().expect("an answer, not a reset stream");
    refusal(response, StatusCode::UNAUTHORIZED);
}

#[test]
fn bodies_travel_compressed_both_ways() {
    let setup = Setup::new("gw_compression");
    let one = setup.s.register(json!({"tenant": 1}));
    let me = token_client_id(&one).unwrap().to_string();
    let http = setup.http();
    let changes = setup.endpoint("/v1/scopes/crm/changes");
    let pull = json!({"since": null, "replica": "r1"}).to_string();

    // A gzip request body; a gzip answer when asked for.
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gzip, pull.as_bytes()).unwrap();
    let response = http
        .post(&changes)
        .bearer_auth(&one)
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .header("accept-encoding", "gzip")
        .body(gzip.finish().unwrap())
        .send()
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-encoding"], "gzip");
    let mut text = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(response.bytes().unwrap().as_ref()), &mut text).unwrap();
    let changeset: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(changeset["tables"][0]["rows"].as_array().unwrap().len(), 20);

    // zstd both ways, on an upload.
    let row = upload(&me, json!([{"op": "upsert", "seq": 1, "values": [201, 1, "zstd"]}]));
    let response = http
        .post(format!("{}/v1/scopes/crm/apply?replica=r1&upload_id=u1", setup.url()))
        .bearer_auth(&one)
        .header("content-type", "application/json")
        .header("content-encoding", "zstd")
        .header("accept-encoding", "zstd")
        .body(zstd::encode_all(row.as_bytes(), 3).unwrap())
        .send()
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-encoding"], "zstd");
    let result: ApplyResult = serde_json::from_slice(&zstd::decode_all(response.bytes().unwrap().as_ref()).unwrap()).unwrap();
    assert_eq!(result.applied, 1);
    assert!(setup.server_rows().contains(&(201, 1, Some("zstd".into()))));

    // An encoding the gateway does not read: 415.
    let response = http
        .post(&changes)
        .bearer_auth(&one)
        .header("content-type", "application/json")
        .header("content-encoding", "br")
        .body(pull.clone())
        .send()
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // With the JSON error every refusal has (helper 98: an empty body).
    let error: Value = serde_json::from_slice(&response.bytes().unwrap()).expect("a JSON error");
    assert!(error["error"]["message"].as_str().is_some_and(|m| m.contains("gzip, zstd")), "{error}");

    // Not asked: not compressed.
    let response = http.post(&changes).bearer_auth(&one).header("content-type", "application/json").body(pull).send().unwrap();
    assert!(!response.headers().contains_key("content-encoding"));
    assert!(serde_json::from_slice::<Value>(&response.bytes().unwrap()).is_ok());
}

#[test]
fn the_client_refuses_a_gateway_its_ca_did_not_sign() {
    let setup = Setup::new("gw_ca");
    let one = setup.s.register(json!({"tenant": 1}));
    let theirs = certificates(&setup.s.files.dir, "theirs");
    let file = setup.s.store("a.db");
    let options = SyncOptions { token: Some(one.clone()), ca_cert: Some(theirs.ca.display().to_string()), ..Default::default() };
    let error = file.sync(&setup.url(), "crm", &options).unwrap_err().to_string();
    assert!(error.contains("TLS failed") && error.contains("certificate") && error.contains("--ca-cert"), "{error}");
    assert_eq!(local_count(&file, "SELECT count(*) FROM sqlite_master WHERE name = 'customers'"), 0, "nothing was provisioned");
    // No CA at all: the system's roots do not know ours either.
    let options = SyncOptions { token: Some(one), ..Default::default() };
    let error = file.sync(&setup.url(), "crm", &options).unwrap_err().to_string();
    assert!(error.contains("TLS failed"), "{error}");
    // Plain HTTP to its TLS port: told to use https (helper 98).
    let plain = setup.url().replacen("https://", "http://", 1);
    let error = file.sync(&plain, "crm", &options).unwrap_err().to_string();
    assert!(error.contains("use an https:// URL"), "{error}");
}

#[test]
fn plain_http_only_on_loopback_unless_asked_for() {
    let setup = Setup::new("gw_plain");
    let one = setup.s.register(json!({"tenant": 1}));
    let mut config = setup.config();
    config.tls = None;
    config.listen = "0.0.0.0:0".parse().unwrap();
    let error = Running::start(config.clone()).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(error.contains("refusing to serve plain HTTP") && error.contains("--tls-cert") && error.contains("--insecure-http"), "{error}");
    config.insecure_http = true;
    assert!(config.check().is_ok(), "asked for");
    // On loopback, plain HTTP serves.
    config.insecure_http = false;
    config.listen = "127.0.0.1:0".parse().unwrap();
    let plain = Running::start(config).unwrap();
    let file = setup.s.store("plain.db");
    let report = file
        .sync(&format!("http://127.0.0.1:{}", plain.addr().port()), "crm", &SyncOptions { token: Some(one), ..Default::default() })
        .unwrap();
    assert_eq!(report.pulled, 20);
}

#[test]
fn a_graceful_stop_lets_the_request_in_flight_finish() {
    let setup = Setup::new("gw_graceful");
    let one = setup.s.register(json!({"tenant": 1}));
    let http = setup.http();
    let changes = setup.endpoint("/v1/scopes/crm/changes");
    // Hold the table so the pull waits inside the database.
    let mut holder = setup.s.server();
    let mut hold = holder.transaction().unwrap();
    hold.batch_execute("LOCK TABLE customers IN ACCESS EXCLUSIVE MODE").unwrap();
    let request = {
        let (http, changes, one) = (http.clone(), changes.clone(), one.clone());
        std::thread::spawn(move || http.post(&changes).bearer_auth(&one).json(&json!({})).send().map(|r| (r.status(), r.text())))
    };
    let waiting = || -> i64 {
        let mut admin = setup.s.server();
        admin
            .query_one("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'", &[])
            .unwrap()
            .get(0)
    };
    let started = Instant::now();
    while waiting() == 0 {
        assert!(started.elapsed() < Duration::from_secs(10), "the pull never reached the database");
        std::thread::sleep(Duration::from_millis(20));
    }
    let addr = setup.gateway().addr();
    let stopper = setup.gateway().stopper();
    stopper.graceful();
    // No new connections while it finishes.
    let started = Instant::now();
    while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
        assert!(started.elapsed() < Duration::from_secs(5), "still taking connections after the stop began");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(!request.is_finished(), "the request in flight was cut");
    hold.rollback().unwrap();
    let (status, body) = request.join().unwrap().expect("the request in flight is answered");
    assert_eq!(status, StatusCode::OK);
    let changeset: Value = serde_json::from_str(&body.unwrap()).unwrap();
    assert_eq!(changeset["tables"][0]["rows"].as_array().unwrap().len(), 20);
    let mut setup = setup;
    setup.gateway.take().unwrap().stop().expect("a clean stop");
}

/// A remote that stops the gateway dead once it has answered `pulls` pulls.
struct KillAfter {
    inner: HttpRemote,
    pulls: usize,
    stopper: tandem_server::Stopper,
    addr: std::net::SocketAddr,
}

impl KillAfter {
    /// Stops the gateway and waits until its port takes no connection.
    fn kill(&self) {
        self.stopper.now();
        let started = Instant::now();
        while std::net::TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok() {
            assert!(started.elapsed() < Duration::from_secs(5), "the gateway still takes connections");
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Remote for KillAfter {
    fn schema(&mut self, scope: &str, token: Option<&str>) -> Result<Schema, RemoteError> {
        self.inner.schema(scope, token)
    }
    fn verify(&mut self, scope: &str, options: &tandem_core::verify::VerifyOptions) -> Result<String, RemoteError> {
        self.inner.verify(scope, options)
    }
    fn server_id(&self) -> Option<String> {
        self.inner.server_id()
    }
    fn capabilities(&self) -> tandem_local::remote::Capabilities {
        self.inner.capabilities()
    }
    fn select_changes(&mut self, scope: &str, since: Option<&str>, options: &SelectOptions) -> Result<String, RemoteError> {
        if self.pulls == 0 {
            self.kill();
        }
        self.pulls = self.pulls.saturating_sub(1);
        self.inner.select_changes(scope, since, options)
    }
    fn apply_changes(&mut self, scope: &str, changeset: &str, options: &ApplyOptions) -> Result<ApplyResult, RemoteError> {
        self.inner.apply_changes(scope, changeset, options)
    }
}

#[test]
fn a_download_cut_by_the_gateways_death_resumes_where_it_stopped() {
    let mut setup = Setup::new("gw_resume");
    setup.s.server().batch_execute("INSERT INTO customers SELECT i, 1, 'bulk ' || i FROM generate_series(1001, 1280) i").unwrap();
    let one = setup.s.register(json!({"tenant": 1}));
    let file = setup.s.store("a.db");
    let mut options = setup.options(&one);
    options.max_rows = Some(25);
    let mut remote = KillAfter {
        inner: HttpRemote::connect(&setup.url(), Some(&setup.certs.ca)).unwrap(),
        pulls: 4,
        stopper: setup.gateway().stopper(),
        addr: setup.gateway().addr(),
    };
    let error = file.sync_with(&mut remote, "crm", &options).unwrap_err().to_string();
    assert!(error.contains("cannot reach the server") && error.contains("port"), "{error}");
    let stored = local_count(&file, "SELECT count(*) FROM customers");
    assert_eq!(stored, 4 * 25, "the four batches answered are stored, each with its watermark");
    let watermark = tandem_tests::local::local_value(&file, "SELECT watermark FROM tandem_scopes").unwrap();
    assert!(watermark.contains('/'), "a partial watermark: {watermark}");

    // The gateway comes back at the same address; the next sync goes on.
    let addr = setup.gateway().addr();
    setup.gateway.take().unwrap().kill().unwrap();
    let mut config = setup.config();
    config.listen = addr;
    setup.gateway = Some(Running::start(config).unwrap());
    let report = file.sync(&setup.url(), "crm", &options).unwrap_or_else(|e| panic!("the sync after the cut: {e}"));
    assert_eq!(report.pulled, 300 - 100, "resumed after the stored batches, nothing twice: {report:?}");
    assert_eq!(local_count(&file, "SELECT count(*) FROM customers"), 300);
    assert_eq!(local_count(&file, "SELECT count(*) FROM customers WHERE tenant_id <> 1"), 0);
    let server: i64 = setup.s.server().query_one("SELECT count(*) FROM customers WHERE tenant_id = 1", &[]).unwrap().get(0);
    assert_eq!(server, 300);
}

#[test]
fn an_upload_whose_answer_the_gateways_death_lost_is_not_applied_twice() {
    let mut setup = Setup::new("gw_upload_cut");
    let one = setup.s.register(json!({"tenant": 1}));
    let file = setup.s.store("a.db");
    setup.sync(&file, &one);
    local(&file, "INSERT INTO customers VALUES (301, 1, 'new'), (302, 1, 'new too'); UPDATE customers SET name = 'edited' WHERE id = 2");

    // The upload waits inside the database while the gateway dies.
    let mut holder = setup.s.server();
    let mut hold = holder.transaction().unwrap();
    hold.batch_execute("LOCK TABLE customers IN ACCESS EXCLUSIVE MODE").unwrap();
    let (url, options) = (setup.url(), setup.options(&one));
    let syncing = std::thread::spawn(move || {
        let result = file.sync(&url, "crm", &options).map(|_| ()).map_err(|e| e.to_string());
        (file, result)
    });
    let started = Instant::now();
    while setup
        .s
        .server()
        .query_one("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()", &[])
        .unwrap()
        .get::<_, i64>(0)
        == 0
    {
        assert!(started.elapsed() < Duration::from_secs(10), "the upload never reached the database");
        std::thread::sleep(Duration::from_millis(20));
    }
    let addr = setup.gateway().addr();
    setup.gateway.take().unwrap().kill().unwrap();
    let (file, result) = syncing.join().unwrap();
    let error = result.unwrap_err();
    assert!(error.contains("cannot reach the server"), "{error}");
    // Its database session goes on: the upload commits, its answer is lost.
    hold.rollback().unwrap();
    let started = Instant::now();
    while setup.server_rows().iter().filter(|r| r.0 > 300).count() < 2 {
        assert!(started.elapsed() < Duration::from_secs(10), "the cut upload never committed");
        std::thread::sleep(Duration::from_millis(20));
    }

    // Sent again under the same upload id: what it applied is acknowledged,
    // and an edit made since builds on it (another upload would meet the
    // server's new version as a conflict).
    local(&file, "UPDATE customers SET name = 'edited again' WHERE id = 2");
    let mut config = setup.config();
    config.listen = addr;
    setup.gateway = Some(Running::start(config).unwrap());
    let report = setup.sync(&file, &one);
    assert_eq!(report.pushed, 1, "only the new edit is written: {report:?}");
    assert!(report.conflicts.is_empty() && report.rejected.is_empty(), "{report:?}");
    let conflicts: i64 = setup.s.server().query_one("SELECT count(*) FROM tandem.conflicts", &[]).unwrap().get(0);
    assert_eq!(conflicts, 0);
    let rows = setup.server_rows();
    assert!(rows.contains(&(301, 1, Some("new".into()))) && rows.contains(&(2, 1, Some("edited again".into()))), "{rows:?}");
    assert_eq!(local_count(&file, "SELECT count(*) FROM customers"), 22);
    let report = setup.sync(&file, &one);
    assert_eq!((report.pushed, report.pulled), (0, 0), "nothing left to move: {report:?}");
}

#[test]
fn a_connection_that_sends_no_headers_is_closed() {
    use std::io::{Read, Write};
    let setup = Setup::with("gw_slow_headers", |config| {
        config.tls = None;
        config.header_read_timeout = Duration::from_secs(1);
    });
    let mut connection = std::net::TcpStream::connect(setup.gateway().addr()).unwrap();
    connection.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n").unwrap();
    connection.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let read = connection.read_to_end(&mut answer);
    assert!(read.is_ok(), "the gateway closes the connection rather than waiting: {read:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "closed after {:?}", started.elapsed());

    // One that sends nothing at all goes the same way.
    let mut silent = std::net::TcpStream::connect(setup.gateway().addr()).unwrap();
    silent.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let started = Instant::now();
    let read = silent.read_to_end(&mut answer);
    assert!(read.is_ok(), "the gateway closes a silent connection rather than waiting: {read:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "closed after {:?}", started.elapsed());
}

#[test]
fn an_idle_keep_alive_connection_is_closed_after_the_header_timeout() {
    use std::io::{BufRead, BufReader, Read, Write};
    let setup = Setup::with("gw_idle", |config| {
        config.tls = None;
        config.header_read_timeout = Duration::from_secs(1);
    });
    let mut connection = std::net::TcpStream::connect(setup.gateway().addr()).unwrap();
    connection.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    connection.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut reader = BufReader::new(connection.try_clone().unwrap());
    let mut length = 0;
    let mut line = String::new();
    while reader.read_line(&mut line).unwrap() > 0 && line != "\r\n" {
        if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = value.trim().parse().unwrap();
        }
        line.clear();
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    assert!(String::from_utf8_lossy(&body).contains("ok"), "{}", String::from_utf8_lossy(&body));
    // The answer is in; the connection stays open for a next request, but
    // not for ever.
    let idle_since = Instant::now();
    let mut rest = Vec::new();
    let read = reader.read_to_end(&mut rest);
    assert!(read.is_ok(), "the gateway closes the idle connection rather than holding it: {read:?}");
    assert!(idle_since.elapsed() < Duration::from_secs(5), "closed after {:?}", idle_since.elapsed());
}

#[test]
fn a_row_larger_than_the_gateway_takes_is_set_aside_and_the_rest_goes_up() {
    let setup = Setup::with("gw_big_row", |config| config.max_body_bytes = 64 << 10);
    let token = setup.s.register(json!({"tenant": 1}));
    let file = setup.s.store("a.db");
    setup.sync(&file, &token);
    local(
        &file,
        "INSERT INTO customers VALUES (1000, 1, 'big ' || hex(randomblob(60000)));
         WITH RECURSIVE n(i) AS (SELECT 1001 UNION ALL SELECT i + 1 FROM n WHERE i < 1200)
         INSERT INTO customers SELECT i, 1, 'small ' || i || ' ' || hex(randomblob(200)) FROM n;",
    );
    let report = setup.sync(&file, &token);
    assert_eq!(report.pushed, 200, "the small rows go up in smaller batches: {report:?}");
    assert_eq!(report.rejected.len(), 1, "{report:?}");
    assert!(report.rejected[0].reason.contains("larger than the server takes"), "{:?}", report.rejected[0]);
    assert_eq!(local_count(&file, "SELECT count(*) FROM tandem_rejected"), 1);
    let on_server: i64 = setup.s.server().query_one("SELECT count(*) FROM customers WHERE id >= 1000", &[]).unwrap().get(0);
    assert_eq!(on_server, 200);
    let again = setup.sync(&file, &token);
    assert!(again.rejected.is_empty() && again.pushed == 0, "nothing stalls the next round: {again:?}");
}

#[test]
fn twenty_clients_syncing_at_once_through_one_gateway_each_end_with_exactly_their_partition() {
    let schema = r#"
        CREATE TABLE customers (id bigint PRIMARY KEY, tenant_id int NOT NULL, name text);
        INSERT INTO customers SELECT i, 1 + i % 10, 'customer ' || i FROM generate_series(1, 2000) i;
        SELECT sync_provision('crm', '{"tables": [{"name": "customers", "filter": {"tenant_id": "tenant"}}]}');
    "#;
    let setup = Setup::with_schema("gw_twenty", schema, |_| {});
    // Two files per tenant, ten tenants; each file also writes rows of its own.
    let devices: Vec<(i64, String, std::path::PathBuf)> = (0..20)
        .map(|i| {
            let tenant = 1 + i % 10;
            (tenant, setup.s.register(json!({"tenant": tenant})), setup.s.files.path(&format!("device{i}.db")))
        })
        .collect();
    std::thread::scope(|threads| {
        for (i, (tenant, token, path)) in devices.iter().enumerate() {
            let setup = &setup;
            threads.spawn(move || {
                let file = tandem_local::Store::open(path).unwrap();
                setup.sync(&file, token);
                local(&file, &format!("INSERT INTO customers VALUES ({}, {tenant}, 'from device {i}')", 10_000 + i));
                setup.sync(&file, token);
            });
        }
    });
    // A last quiet round each, then every file holds exactly its tenant's rows.
    for (tenant, token, path) in &devices {
        let file = tandem_local::Store::open(path).unwrap();
        setup.sync(&file, token);
        tandem_tests::local::assert_converged(&mut setup.s.server(), file.connection(), "crm", &json!({"tenant": tenant}));
        assert_eq!(local_count(&file, &format!("SELECT count(*) FROM customers WHERE tenant_id <> {tenant}")), 0);
        assert_eq!(local_count(&file, "SELECT count(*) FROM customers WHERE name LIKE 'from device %'"), 2, "both devices of the tenant");
    }
}

/// The fault suite: a device holding thousands of deletes it did not take
/// (`seen.kept`) sent them in the upload's query, past what a URL may hold:
/// every upload failed before it left ("not a valid Uri"), for good. Long
/// options go in the body now.
#[test]
fn an_upload_whose_options_outgrow_a_url_still_goes_up() {
    let setup = Setup::new("gw_long_options");
    let one = setup.s.register(json!({"tenant": 1}));
    let me = token_client_id(&one).unwrap().to_string();
    let kept: Vec<Value> = (0..5000).map(|i| json!({"table": "public.customers", "key": [1_000_000 + i], "version": "100"})).collect();
    let seen = serde_json::from_value(json!({"watermark": "100:100:", "kept": kept})).unwrap();
    let options = ApplyOptions {
        token: Some(one.clone()),
        replica: Some("r1".into()),
        upload_id: Some("u-long".into()),
        seen: Some(seen),
        ..ApplyOptions::default()
    };
    let mut remote = HttpRemote::connect(&setup.url(), Some(&setup.certs.ca)).unwrap();
    let row = upload(&me, json!([{"op": "upsert", "seq": 1, "values": [301, 1, "long"]}]));
    let result = remote.apply_changes("crm", &row, &options).unwrap();
    assert_eq!(result.applied, 1);
    assert!(setup.server_rows().contains(&(301, 1, Some("long".into()))));
}
