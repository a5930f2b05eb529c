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
    assert_eq!(stdout(&created), "1", "a table created by the script is usable in it");

    let failed = sql(&file, "INSERT INTO notes VALUES (2, 'two'); INSERT INTO missing VALUES (3)");
    assert!(!failed.status.success());
    assert!(String::from_utf8_lossy(&failed.stderr).contains("no such table: missing"));
    assert_eq!(stdout(&sql(&file, "SELECT count(*) FROM notes")), "1", "the failed script left nothing behind");

    let single = sql(&file, "  SELECT body FROM notes WHERE id = 1 ;  ");
    assert_eq!(stdout(&single), "a;b");
}
