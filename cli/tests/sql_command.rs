//! `tandem sql` on a local file: one statement, or a script that runs whole
//! or not at all.

use std::process::{Command, Output};

use tandem_tests::local::Files;

fn sql(file: &std::path::Path, text: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tandem")).args(["sql", "--local"]).arg(file).arg(text).output().expect("run tandem sql")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

#[test]
fn a_script_runs_whole_or_not_at_all() {
    let files = Files::new("sql_cmd");
    let file = files.path("a.db");
    let created = sql(
        &file,
        "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT); INSERT INTO notes VALUES (1, 'a;b'); SELECT count(*) FROM notes;",
    );
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    assert_eq!(stdout(&created), "count(*)\n1", "a table created by the script is usable in it");

    let failed = sql(&file, "INSERT INTO notes VALUES (2, 'two'); INSERT INTO missing VALUES (3)");
    assert!(!failed.status.success());
    assert!(String::from_utf8_lossy(&failed.stderr).contains("no such table: missing"));
    assert_eq!(stdout(&sql(&file, "SELECT count(*) AS n FROM notes")), "n\n1", "the failed script left nothing behind");

    let single = sql(&file, "  SELECT body FROM notes WHERE id = 1 ;  ");
    assert_eq!(stdout(&single), "body\na;b");
    let json = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(["sql", "--json", "--local"])
        .arg(&file)
        .arg("SELECT id, body FROM notes")
        .output()
        .unwrap();
    assert_eq!(stdout(&json), r#"{"body":"a;b","id":1}"#);
}

fn tandem(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tandem")).args(args).output().expect("run tandem")
}

#[test]
fn the_cli_says_what_to_do_instead_of_guessing() {
    let files = Files::new("cli_checks");
    let file = files.path("a.db");
    let path = file.to_string_lossy().into_owned();
    let sync = ["sync", "--local", path.as_str(), "--scope", "crm"];

    // --param beside --token is refused, not ignored.
    let both = tandem(&[&sync[..], &["--remote", "postgres://x@127.0.0.1:1/db", "--token", "t", "--param", "tenant=1"]].concat());
    assert!(!both.status.success());
    assert!(String::from_utf8_lossy(&both.stderr).contains("cannot be used with"), "{}", String::from_utf8_lossy(&both.stderr));

    // An unsupported remote names the schemes that work, as JSON with --json.
    let http = tandem(&[&sync[..], &["--remote", "mysql://db/crm", "--json"]].concat());
    assert!(!http.status.success());
    let error: serde_json::Value = serde_json::from_str(&stdout(&http)).expect("a JSON error");
    assert_eq!(error["version"], 1);
    assert!(error["error"]["message"].as_str().unwrap().contains("postgres://"), "{error}");

    // Nobody listening: the host and port to check.
    let closed = tandem(&[&sync[..], &["--remote", "postgres://x@127.0.0.1:1/db"]].concat());
    let said = String::from_utf8_lossy(&closed.stderr);
    assert!(said.contains("host 127.0.0.1 port 1"), "{said}");
    assert!(!file.exists(), "a refused first sync leaves no file behind");

    // rekey of a file that is not there does not create one.
    let missing = files.path("missing.db");
    let rekey = tandem(&["rekey", "--local", &missing.to_string_lossy(), "--new-key", "k"]);
    assert!(!rekey.status.success() && String::from_utf8_lossy(&rekey.stderr).contains("does not exist"));
    assert!(!missing.exists());
}

#[test]
fn a_reader_that_stops_early_ends_the_output_quietly_and_the_script_still_runs() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let files = Files::new("sql_cmd_pipe");
    let file = files.path("a.db");
    let made = sql(&file, "CREATE TABLE n (i INTEGER PRIMARY KEY); WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 200000) INSERT INTO n SELECT i FROM c");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    // `tandem sql ... | head -1`: the reader takes one line and goes.
    let mut child = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(["sql", "--local"])
        .arg(&file)
        .arg("SELECT i FROM n; CREATE TABLE after_rows (x)")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tandem sql");
    let mut first = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut first).expect("one line");
    assert_eq!(first.trim(), "i");
    let ended = child.wait_with_output().expect("tandem sql ends");
    let stderr = String::from_utf8_lossy(&ended.stderr);
    assert!(ended.status.success() && !stderr.contains("panicked"), "{:?}: {stderr}", ended.status);
    assert_eq!(stdout(&sql(&file, "SELECT count(*) AS n FROM sqlite_master WHERE name = 'after_rows'")), "n\n1");
}

/// Helper 59: a reader that stops reading (`tandem sync --json | head -c
/// 100`) made the command panic on the broken pipe, with a backtrace on
/// stderr and status 101. It now ends with its own status, as `tandem
/// sql` does with rows.
#[test]
fn a_reader_that_stops_reading_leaves_the_commands_own_status() {
    let files = Files::new("cli_pipe");
    let file = files.path("a.db");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(["sync", "--json", "--scope", "crm", "--remote", "postgres://nobody@127.0.0.1:1/db", "--local"])
        .arg(&file)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run tandem sync");
    drop(child.stdout.take());
    let output = child.wait_with_output().expect("wait for tandem sync");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(output.status.code(), Some(1), "the failed sync's own status: {stderr}");
}
