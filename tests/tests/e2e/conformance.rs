//! Runs `sql/conformance.sql` on PostgreSQL and on a local SQLite file,
//! compares each output with `sql/conformance.<side>.out`, and checks the
//! shared sections render the same on both. Set `TANDEM_UPDATE_EXPECTED=1`
//! to rewrite the expected files after a deliberate change (review the diff).

use postgres::SimpleQueryMessage;
use tandem_local::Store;
use tandem_tests::conformance::{run, shared_sections, Executor, Side};
use tandem_tests::local::Files;
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

struct Sqlite(Store);

impl Executor for Sqlite {
    fn run(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, String> {
        let message = |e: rusqlite::Error| match e {
            rusqlite::Error::SqliteFailure(_, Some(message)) => message,
            other => other.to_string(),
        };
        let conn = self.0.connection();
        let mut statement = conn.prepare(sql).map_err(message)?;
        let columns = statement.column_count();
        let mut rows = statement.query([]).map_err(message)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(message)? {
            out.push(
                (0..columns)
                    .map(|i| match row.get_ref(i) {
                        Ok(rusqlite::types::ValueRef::Null) | Err(_) => None,
                        Ok(rusqlite::types::ValueRef::Integer(n)) => Some(n.to_string()),
                        Ok(rusqlite::types::ValueRef::Real(f)) => Some(f.to_string()),
                        Ok(rusqlite::types::ValueRef::Text(t)) => Some(String::from_utf8_lossy(t).into_owned()),
                        Ok(rusqlite::types::ValueRef::Blob(b)) => Some(format!("{b:?}")),
                    })
                    .collect(),
            );
        }
        Ok(out)
    }
}

fn check(side: Side, output: &str) -> String {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let name = match side {
        Side::Postgres => "postgres",
        Side::Sqlite => "sqlite",
    };
    let path = format!("{root}/sql/conformance.{name}.out");
    if std::env::var_os("TANDEM_UPDATE_EXPECTED").is_some() {
        std::fs::write(&path, output).expect("write expected output");
        return output.to_string();
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    if output != expected {
        let first = output.lines().zip(expected.lines()).position(|(a, b)| a != b).unwrap_or(0);
        panic!(
            "conformance output differs from {path} at line {}:\n  got:      {:?}\n  expected: {:?}\n(rerun with TANDEM_UPDATE_EXPECTED=1 to accept a deliberate change)",
            first + 1,
            output.lines().nth(first),
            expected.lines().nth(first)
        );
    }
    expected
}

fn script() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../sql/conformance.sql")).expect("read the script")
}

#[test]
fn the_conformance_script_renders_the_same_on_both_sides() {
    let db = TestDb::new("conformance");
    let postgres = check(Side::Postgres, &run(&script(), Side::Postgres, &mut Postgres(db.connect())));
    let files = Files::new("conformance");
    let store = Store::open(files.path("conformance.db")).unwrap();
    let sqlite = check(Side::Sqlite, &run(&script(), Side::Sqlite, &mut Sqlite(store)));
    assert_eq!(shared_sections(&sqlite), shared_sections(&postgres), "the shared sections differ between the sides");
}
