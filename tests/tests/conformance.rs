//! Runs `sql/conformance.sql` on PostgreSQL and compares the output with
//! `sql/conformance.postgres.out`. Set `TANDEM_UPDATE_EXPECTED=1` to rewrite
//! the expected file after a deliberate change (and review the diff).

use postgres::SimpleQueryMessage;
use tandem_tests::conformance::{run, Executor, Side};
use tandem_tests::TestDb;

struct Postgres(postgres::Client);

impl Executor for Postgres {
    fn run(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, String> {
        let messages = self.0.simple_query(sql).map_err(|e| match e.as_db_error() {
            Some(db) => db.message().to_string(),
            None => e.to_string(),
        })?;
        Ok(messages
            .into_iter()
            .filter_map(|m| match m {
                SimpleQueryMessage::Row(row) => Some((0..row.len()).map(|i| row.get(i).map(str::to_string)).collect()),
                _ => None,
            })
            .collect())
    }
}

#[test]
fn the_conformance_script_renders_as_expected_on_postgres() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let script = std::fs::read_to_string(format!("{root}/sql/conformance.sql")).expect("read the script");
    let expected_path = format!("{root}/sql/conformance.postgres.out");
    let db = TestDb::new("conformance");
    let output = run(&script, Side::Postgres, &mut Postgres(db.connect()));
    if std::env::var_os("TANDEM_UPDATE_EXPECTED").is_some() {
        std::fs::write(&expected_path, &output).expect("write expected output");
        return;
    }
    let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
    if output != expected {
        let first = output.lines().zip(expected.lines()).position(|(a, b)| a != b).unwrap_or(0);
        panic!(
            "conformance output differs from {expected_path} at line {}:\n  got:      {:?}\n  expected: {:?}\n(rerun with TANDEM_UPDATE_EXPECTED=1 to accept a deliberate change)",
            first + 1,
            output.lines().nth(first),
            expected.lines().nth(first)
        );
    }
}
