//! The loadable extension in a SQLite host that is not Tandem: Debian's
//! Python (its own SQLite 3.40), loading `libtandem_sqlite.so` by path with
//! no entry-point argument, and syncing with SQL alone.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;
use tandem_tests::local::Files;
use tandem_tests::TestDb;

fn extension() -> PathBuf {
    let path = std::env::var_os("TANDEM_SQLITE_EXTENSION")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/release/libtandem_sqlite.so")));
    assert!(path.exists(), "{} is missing: build it with `make sqlite-ext` (make demo and make test do)", path.display());
    path
}

const SCRIPT: &str = r#"
import json, sqlite3, sys
path, extension, url = sys.argv[1:4]
db = sqlite3.connect(path)
db.enable_load_extension(True)
db.load_extension(extension)
first = json.loads(db.execute("SELECT sync_run(?, 'notes', '{\"params\": {\"owner\": \"py\"}}')", (url,)).fetchone()[0])
db.execute("INSERT INTO notes VALUES (3, 'py', 'written from Python')")
db.execute("UPDATE notes SET body = 'edited from Python' WHERE id = 1")
db.commit()
second = json.loads(db.execute("SELECT sync_run(?, 'notes')", (url,)).fetchone()[0])
status = json.loads(db.execute("SELECT sync_status('notes')").fetchone()[0])
try:
    db.execute("SELECT sync_schema('nope')").fetchone()
    error = None
except sqlite3.OperationalError as e:
    error = str(e)
print(json.dumps({"first": first, "second": second, "status": status, "error": error,
                  "rows": db.execute("SELECT id, body FROM notes ORDER BY id").fetchall()}))
"#;

#[test]
fn python_loads_the_extension_and_syncs_with_sql() {
    let db = TestDb::new("loadable");
    let files = Files::new("loadable");
    let mut server = db.connect();
    server
        .batch_execute(
            "CREATE TABLE notes (id int PRIMARY KEY, owner text NOT NULL, body text);
             INSERT INTO notes VALUES (1, 'py', 'hello'), (2, 'someone else', 'not yours');
             SELECT sync_provision('notes', '{\"tables\": [{\"name\": \"notes\", \"filter\": {\"owner\": \"owner\"}}]}');",
        )
        .unwrap();
    let output = Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(SCRIPT)
        .arg(files.path("python.db"))
        .arg(extension())
        .arg(&db.url)
        .output()
        .expect("run /usr/bin/python3");
    assert!(output.status.success(), "python failed: {}", String::from_utf8_lossy(&output.stderr));
    let result: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(result["first"]["pulled"], 1, "{result}");
    assert_eq!(result["second"]["pushed"], 2, "{result}");
    assert_eq!(result["rows"], serde_json::json!([[1, "edited from Python"], [3, "written from Python"]]));
    assert_eq!(result["error"], "unknown scope \"nope\": create it first with sync_provision");
    let bodies: Vec<String> = server.query("SELECT body FROM notes ORDER BY id", &[]).unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(bodies, ["edited from Python", "not yours", "written from Python"]);
}
