//! The fault suite: writers change both sides (several PostgreSQL sessions,
//! several connections to each SQLite file in WAL mode) while `tandem sync`
//! runs again and again against three files, two of one tenant and one of
//! another (that one through the gateway), and faults land at random
//! moments: the sync process killed (SIGKILL), its PostgreSQL session
//! terminated, the gateway killed, PostgreSQL crashed and restarted. Some
//! server transactions stay open across pulls, so commits land out of xid
//! order. After the faults stop and a quiet sync, each file must equal its
//! partition on the server, `sync_verify` must agree, no device's last
//! write of its own rows may be missing on the server, its last write of a
//! row both sides write must have been applied (a user's audit trigger saw
//! it) or logged as a lost conflict, and no conflict may be logged where
//! only one side wrote, nor logged twice.
//!
//! `TANDEM_FAULTS` sets how many faults (default 50, the CI slice; `make
//! reliability` runs 1000). It prints one JSON line of figures. A failure
//! keeps the scratch cluster, whose log holds every statement with its
//! parameters (each upload's changeset and options), and the files.

use std::collections::{BTreeMap, HashMap};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use postgres::{Client, NoTls};
use rand::Rng;
use serde_json::{json, Value};
use tandem_local::verify::Options;
use tandem_local::{Store, SyncOptions};
use tandem_tests::cluster::Cluster;
use tandem_tests::local::{assert_converged, Files};

const SCHEMA: &str = r#"
CREATE EXTENSION tandem;
CREATE TABLE items (id bigint PRIMARY KEY, tenant int NOT NULL, val text NOT NULL);
-- Server-owned rows: tenant * 100000 + 0..300; shared rows (both sides
-- write them): tenant * 100000 + 50000 + 0..40.
INSERT INTO items SELECT t * 100000 + i, t, 'seed' FROM generate_series(1, 2) t, generate_series(0, 299) i;
INSERT INTO items SELECT t * 100000 + 50000 + i, t, 'seed' FROM generate_series(1, 2) t, generate_series(0, 39) i;
SELECT sync_provision('faults', '{"tables": [{"name": "items", "filter": {"tenant": "tenant"}}]}');
-- Every value the server ever stored (a user's trigger, as any schema may
-- have): a device's write that was applied, even if overwritten later.
CREATE TABLE audit (id bigint NOT NULL, val text NOT NULL);
CREATE FUNCTION audit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO audit SELECT id, val FROM changed; RETURN NULL; END $$;
CREATE TRIGGER audit_insert AFTER INSERT ON items REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION audit();
CREATE TRIGGER audit_update AFTER UPDATE ON items REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION audit();
CREATE ROLE tandem_faults_gateway LOGIN;
GRANT EXECUTE ON FUNCTION sync_schema, sync_select_changes_json, sync_apply_changes_json, sync_verify TO tandem_faults_gateway;
"#;

/// Rows only a device writes: its own range, `base + 0..200`.
const OWN_KEYS: i64 = 200;

/// Connections writing each file at once (with the sync's, they wait on
/// each other's locks); with three files, nine writers on the device side
/// beside eight PostgreSQL sessions.
const LOCAL_WRITERS: i64 = 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    Kill,
    Terminate,
    GatewayKill,
    Restart,
}

struct Device {
    name: &'static str,
    tenant: i32,
    base: i64,
    path: PathBuf,
    token: String,
    through_gateway: bool,
    /// The last value the device wrote to each of its own keys (None:
    /// deleted), as its writers committed them.
    expected: Arc<Mutex<BTreeMap<i64, Option<String>>>>,
    /// Each write of the device's own keys, for a lost one's story.
    history: Arc<Mutex<BTreeMap<i64, Vec<String>>>>,
    /// The device's last write of each shared row.
    shared: Written,
}

struct Gateway {
    child: Child,
    port: u16,
    database: String,
}

impl Gateway {
    fn start(database: &str, port: u16) -> Gateway {
        let child = Command::new(env!("CARGO_BIN_EXE_tandem"))
            .args(["serve", "--database", database, "--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run tandem serve");
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(started.elapsed() < Duration::from_secs(20), "the gateway did not listen");
            thread::sleep(Duration::from_millis(20));
        }
        Gateway { child, port, database: database.to_string() }
    }

    fn kill_and_restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        *self = Gateway::start(&self.database.clone(), self.port);
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port()
}

fn connect(url: &str) -> Option<Client> {
    Client::connect(url, NoTls).ok()
}

/// A PostgreSQL session writing server-owned and shared rows of both
/// tenants; some transactions stay open a while, so commits land out of
/// xid order. Reconnects after a crash or a terminated session.
fn server_writer(url: String, writer: usize, stop: Arc<AtomicBool>, writes: Arc<AtomicU64>) {
    let mut rng = rand::rng();
    let mut client: Option<Client> = None;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let Some(c) = client.as_mut() else {
            client = connect(&url);
            if client.is_none() {
                thread::sleep(Duration::from_millis(50));
            }
            continue;
        };
        let tenant: i64 = rng.random_range(1..=2);
        let shared = rng.random_bool(0.3);
        let id = tenant * 100_000 + if shared { 50_000 + rng.random_range(0..40) } else { rng.random_range(0..300) };
        n += 1;
        let value = format!("server{writer}-{n}");
        let hold = rng.random_bool(0.1).then(|| Duration::from_millis(rng.random_range(20..150)));
        let done = (|| -> Result<(), postgres::Error> {
            let mut tx = c.transaction()?;
            if rng.random_bool(0.15) && !shared {
                tx.execute("DELETE FROM items WHERE id = $1", &[&id])?;
            } else {
                tx.execute(
                    "INSERT INTO items VALUES ($1, $2, $3) ON CONFLICT (id) DO UPDATE SET val = excluded.val",
                    &[&id, &(tenant as i32), &value],
                )?;
            }
            if let Some(hold) = hold {
                thread::sleep(hold);
            }
            tx.commit()
        })();
        match done {
            Ok(()) => {
                writes.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => client = None,
        }
        thread::sleep(Duration::from_millis(rng.random_range(2..15)));
    }
}

/// A program writing a device's file (plain SQLite, no Tandem loaded):
/// its own rows, and the tenant's shared rows. Waits on a busy file
/// rather than failing; records each committed write of its own rows.
type Written = Arc<Mutex<BTreeMap<i64, Option<String>>>>;
type History = Arc<Mutex<BTreeMap<i64, Vec<String>>>>;

fn local_writer(device: (PathBuf, i32, i64), writer: usize, stop: Arc<AtomicBool>, expected: Written, history: History, shared: Written) {
    let (path, tenant, base) = device;
    let conn = rusqlite::Connection::open(&path).expect("open the file");
    conn.busy_timeout(Duration::from_secs(30)).unwrap();
    let mut rng = rand::rng();
    let mut n = 0u64;
    let started = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let value = format!("device{base}-{writer}-{n}");
        if rng.random_bool(0.25) {
            let id = i64::from(tenant) * 100_000 + 50_000 + rng.random_range(0..40);
            // Under the lock, so the last write recorded is the file's last.
            let mut shared = shared.lock().unwrap();
            let written = conn.execute(
                "INSERT INTO items VALUES (?1, ?2, ?3) ON CONFLICT (id) DO UPDATE SET val = excluded.val",
                rusqlite::params![id, tenant, value],
            );
            if written.is_ok() {
                shared.insert(id, Some(value));
            }
        } else {
            // Writers of one file split its keys, so each key's last write
            // is known.
            let own_key =
                |rng: &mut rand::rngs::ThreadRng| base + (rng.random_range(0..OWN_KEYS / LOCAL_WRITERS) * LOCAL_WRITERS + writer as i64);
            let id = own_key(&mut rng);
            if rng.random_bool(0.15) {
                // A key change onto a free key of the writer's: between two
                // syncs, one often takes a key another left (the moves
                // that go ahead of a round's other changes).
                let to = own_key(&mut rng);
                let moved =
                    conn.execute("UPDATE items SET id = ?2 WHERE id = ?1 AND NOT EXISTS (SELECT 1 FROM items WHERE id = ?2)", [id, to]);
                if to != id && matches!(moved, Ok(1)) {
                    let mut expected = expected.lock().unwrap();
                    let value = expected.insert(id, None).flatten();
                    let mut history = history.lock().unwrap();
                    history.entry(id).or_default().push(format!("moved to {to} at {:?}", started.elapsed()));
                    history.entry(to).or_default().push(format!("{value:?} moved from {id} at {:?}", started.elapsed()));
                    expected.insert(to, value);
                }
                thread::sleep(Duration::from_millis(rng.random_range(2..20)));
                continue;
            }
            let written = if rng.random_bool(0.2) {
                conn.execute("DELETE FROM items WHERE id = ?1", [id]).map(|_| None)
            } else {
                conn.execute(
                    "INSERT INTO items VALUES (?1, ?2, ?3) ON CONFLICT (id) DO UPDATE SET val = excluded.val",
                    rusqlite::params![id, tenant, value],
                )
                .map(|_| Some(value))
            };
            if let Ok(state) = written {
                history.lock().unwrap().entry(id).or_default().push(format!("{:?} at {:?}", state, started.elapsed()));
                expected.lock().unwrap().insert(id, state);
            }
        }
        thread::sleep(Duration::from_millis(rng.random_range(2..20)));
    }
}

fn sync_child(device: &Device, remote: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(["sync", "--local"])
        .arg(&device.path)
        .args(["--remote", remote, "--scope", "faults", "--token", &device.token, "--max-rows", "100"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run tandem sync")
}

#[test]
fn syncs_under_faults_converge_with_nothing_lost() {
    let faults: usize = std::env::var("TANDEM_FAULTS").ok().and_then(|n| n.parse().ok()).unwrap_or(50);
    let started = Instant::now();
    // Every statement is logged, with its parameters (each upload's
    // changeset and options): a failure's cluster is kept, and its log
    // tells what each device sent and when.
    let conf = "max_connections = 100\nlog_statement = 'all'\nlog_line_prefix = '%m [%p] %a '";
    let cluster = Cluster::start("faults", &[], conf, "host all all 127.0.0.1/32 trust");
    let url = cluster.url("postgres");
    cluster.admin().batch_execute(SCHEMA).unwrap();
    let mut gateway = Gateway::start(&url.replacen("postgres@", "tandem_faults_gateway@", 1), free_port());
    let files = Files::new("faults");
    let mut devices = Vec::new();
    for (name, tenant, base, through_gateway) in
        [("a", 1, 100_000 + 80_000, false), ("a2", 1, 100_000 + 90_000, false), ("b", 2, 200_000 + 80_000, true)]
    {
        let token: String = cluster
            .admin()
            .query_one("SELECT sync_register_client('faults', jsonb_build_object('tenant', $1::int))->>'token'", &[&tenant])
            .unwrap()
            .get(0);
        devices.push(Device {
            name,
            tenant,
            base,
            path: files.path(&format!("{name}.db")),
            token,
            through_gateway,
            expected: Arc::new(Mutex::new(BTreeMap::new())),
            history: Arc::new(Mutex::new(BTreeMap::new())),
            shared: Arc::new(Mutex::new(BTreeMap::new())),
        });
    }
    let remote = |device: &Device, gateway: &Gateway| -> String {
        if device.through_gateway {
            format!("http://127.0.0.1:{}", gateway.port)
        } else {
            url.clone()
        }
    };
    // Each file syncs once before anything else, so its table exists.
    for device in &devices {
        let status = sync_child(device, &remote(device, &gateway)).wait().unwrap();
        assert!(status.success(), "the first sync of {}", device.name);
    }

    let stop = Arc::new(AtomicBool::new(false));
    let server_writes = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for writer in 0..8 {
        let (url, stop, writes) = (url.clone(), stop.clone(), server_writes.clone());
        writers.push(thread::spawn(move || server_writer(url, writer, stop, writes)));
    }
    for device in &devices {
        for writer in 0..LOCAL_WRITERS as usize {
            let target = (device.path.clone(), device.tenant, device.base);
            let (stop, expected, history, shared) = (stop.clone(), device.expected.clone(), device.history.clone(), device.shared.clone());
            writers.push(thread::spawn(move || local_writer(target, writer, stop, expected, history, shared)));
        }
    }

    let mut rng = rand::rng();
    let mut by_kind: BTreeMap<Fault, u64> = BTreeMap::new();
    for i in 0..faults {
        let device = &devices[i % devices.len()];
        let kind = match rng.random_range(0..20) {
            0 => Fault::Restart,
            1..=3 if device.through_gateway => Fault::GatewayKill,
            1..=9 => Fault::Terminate,
            _ => Fault::Kill,
        };
        let mut child = sync_child(device, &remote(device, &gateway));
        thread::sleep(Duration::from_millis(rng.random_range(5..250)));
        match kind {
            Fault::Kill => {
                let _ = child.kill();
            }
            Fault::Terminate => {
                if let Some(mut admin) = connect(&url) {
                    let _ = admin.batch_execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                         WHERE application_name IN ('tandem', 'tandem-gateway') AND pid <> pg_backend_pid()",
                    );
                }
            }
            Fault::GatewayKill => gateway.kill_and_restart(),
            Fault::Restart => cluster.crash_and_restart(),
        }
        let _ = child.wait();
        *by_kind.entry(kind).or_default() += 1;
    }
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.join().expect("a writer panicked");
    }

    // Quiet: every file syncs until a round moves nothing, twice over (a
    // file's upload reaches the others in their next round).
    let mut admin = cluster.admin();
    for _ in 0..2 {
        for device in &devices {
            let store = Store::open(&device.path).unwrap();
            let options: SyncOptions = serde_json::from_value(json!({"token": device.token})).unwrap();
            for round in 0.. {
                let report = store.sync(&remote(device, &gateway), "faults", &options).unwrap_or_else(|e| panic!("{}: {e}", device.name));
                if report.pushed + report.pulled == 0 && report.conflicts.is_empty() {
                    break;
                }
                assert!(round < 10, "{} does not settle: {report:?}", device.name);
            }
        }
    }

    let mut rows_compared = 0;
    let mut lost = Vec::new();
    for device in &devices {
        let store = Store::open(&device.path).unwrap();
        assert_converged(&mut admin, store.connection(), "faults", &json!({"tenant": device.tenant}));
        let options = Options { token: Some(device.token.clone()), ..Options::default() };
        let verified = store.verify(&url, "faults", &options).unwrap();
        assert!(verified.equal, "{}: {verified:?}", device.name);
        rows_compared += verified.rows_checked;
        for (id, expected) in device.expected.lock().unwrap().iter() {
            let row = admin.query_opt("SELECT val FROM items WHERE id = $1", &[id]).unwrap();
            let held: Option<String> = row.map(|r| r.get(0));
            if &held != expected {
                let conflicts: Vec<String> = admin
                    .query("SELECT json_build_object('kind', kind, 'decision', decision, 'client', client_row->>'val', 'server', server_row->>'val')::text FROM tandem.conflicts WHERE key->>0 = $1::int8::text", &[id])
                    .unwrap()
                    .iter()
                    .map(|r| r.get(0))
                    .collect();
                let local: Vec<String> = store
                    .connection()
                    .prepare("SELECT kind || ' ' || coalesce(reason, '') FROM tandem_rejected WHERE key = ?1 UNION ALL SELECT 'conflict ' || kind FROM tandem_conflicts WHERE key = ?1")
                    .unwrap()
                    .query_map([format!("[{id}]")], |r| r.get(0))
                    .unwrap()
                    .collect::<Result<_, _>>()
                    .unwrap();
                let tracking: Vec<String> = admin
                    .query(
                        "SELECT format('track v%s s%s deleted %s origin %s', tandem_version, tandem_stamp, tandem_deleted, tandem_origin) FROM tandem.track_1 WHERE id = $1 \
                         UNION ALL SELECT format('exit s%s origin %s', tandem_stamp, tandem_origin) FROM tandem.exit_1 WHERE id = $1",
                        &[id],
                    )
                    .unwrap()
                    .iter()
                    .map(|r| r.get(0))
                    .collect();
                let history = device.history.lock().unwrap().get(id).cloned().unwrap_or_default();
                lost.push(json!({"device": device.name, "id": id, "wrote": expected, "server": held, "conflicts": conflicts,
                                 "local": local, "tracking": tracking, "history": history}));
            }
        }
    }
    // A device's last write of a shared row was applied (the audit holds
    // it) or lost a conflict (the log holds it): never dropped unseen.
    let mut unaccounted = Vec::new();
    for device in &devices {
        for (id, value) in device.shared.lock().unwrap().iter() {
            let Some(value) = value else { continue };
            let seen: i64 = admin
                .query_one(
                    "SELECT (SELECT count(*) FROM audit WHERE id = $1 AND val = $2) \
                          + (SELECT count(*) FROM tandem.conflicts WHERE key->>0 = $1::text AND client_row->>'val' = $2)",
                    &[id, value],
                )
                .unwrap()
                .get(0);
            if seen == 0 {
                unaccounted.push(json!({"device": device.name, "id": id, "wrote": value}));
            }
        }
    }
    let own_ranges: Vec<(i64, i64)> = devices.iter().map(|d| (d.base, d.base + OWN_KEYS)).collect();
    // Each such conflict, with the device's writes of its key.
    let mut invented_told = Vec::new();
    for (from, to) in &own_ranges {
        let rows = admin
            .query(
                "SELECT (key->>0)::int8, kind, coalesce(server_row::text, 'none'), coalesce(client_row::text, 'none') \
                 FROM tandem.conflicts WHERE (key->>0)::int8 >= $1 AND (key->>0)::int8 < $2",
                &[from, to],
            )
            .unwrap();
        for row in rows {
            let key: i64 = row.get(0);
            let writes: Vec<String> = devices.iter().filter_map(|d| d.history.lock().unwrap().get(&key).cloned()).flatten().collect();
            invented_told.push(format!(
                "{key}: {} (server {}, client {}); the device wrote {writes:?}",
                row.get::<_, String>(1),
                row.get::<_, String>(2),
                row.get::<_, String>(3)
            ));
        }
    }
    let invented = invented_told.len();
    let duplicates: i64 = admin
        .query_one("SELECT count(*) FROM (SELECT 1 FROM tandem.conflicts GROUP BY client_id, key, client_row HAVING count(*) > 1) d", &[])
        .unwrap()
        .get(0);
    let conflicts: i64 = admin.query_one("SELECT count(*) FROM tandem.conflicts", &[]).unwrap().get(0);
    let local_writes: usize = devices.iter().map(|d| d.expected.lock().unwrap().len()).sum();
    let by_kind: HashMap<String, u64> = by_kind.into_iter().map(|(k, n)| (format!("{k:?}").to_lowercase(), n)).collect();
    println!(
        "{}",
        json!({"faults": faults, "by_kind": by_kind, "server_writes": server_writes.load(Ordering::Relaxed),
               "device_keys_written": local_writes, "rows_compared": rows_compared, "lost": lost.len(),
               "shared_writes_unaccounted": unaccounted.len(),
               "conflicts": conflicts, "conflicts_where_one_side_wrote": invented, "duplicate_conflicts": duplicates,
               "seconds": started.elapsed().as_secs()})
    );
    assert!(lost.is_empty(), "device writes missing on the server: {}", Value::Array(lost));
    assert!(unaccounted.is_empty(), "device writes neither applied nor in a conflict log: {}", Value::Array(unaccounted));
    assert!(invented_told.is_empty(), "conflicts logged for rows only their device writes:\n{}", invented_told.join("\n"));
    assert_eq!(duplicates, 0, "a conflict logged twice");
}
