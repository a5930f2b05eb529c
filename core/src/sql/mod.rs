//! SQL generation for both sides. Every statement Tandem runs against user
//! tables is built here: identifiers are quoted by [`crate::ident`], values
//! are always bound parameters.
//!
//! - [`tracking`]: the server's tracking tables and statement triggers;
//! - [`partition`]: which client partition a row belongs to (filters);
//! - [`pull`]: the server's change selection, in batches;
//! - [`apply`]: the server's set-based apply of an upload;
//! - [`local`]: the SQLite side's tables, triggers and statements;
//! - [`calls`]: the server functions a device calls, direct or through the
//!   gateway;
//! - [`device`]: the SQLite side's bookkeeping statements, bound and read
//!   by name;
//! - [`registry`]: the server's bookkeeping (scopes, clients, replicas);
//! - [`query`]: typed statements, which carry their bound values and the
//!   decoder of their rows.

pub mod apply;
pub mod calls;
pub mod device;
pub mod local;
pub mod partition;
pub mod pull;
pub mod query;
pub mod registry;
pub mod tracking;
pub mod verify;

use crate::ident::quote_ident;
use crate::schema::{Schema, TableSchema};

/// Which database a statement is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    Sqlite,
}

impl Dialect {
    /// The n-th (1-based) bound parameter.
    pub fn param(self, n: usize) -> String {
        match self {
            Dialect::Postgres => format!("${n}"),
            Dialect::Sqlite => format!("?{n}"),
        }
    }

    /// How sync writes rows into a user table. In SQLite, never by the
    /// table's own `ON CONFLICT REPLACE`: that would remove another row
    /// silently (and leave its base version behind, read later as the
    /// file's delete of it); the row is refused instead (helper 70).
    fn insert_into(self) -> &'static str {
        match self {
            Dialect::Postgres => "INSERT INTO",
            Dialect::Sqlite => "INSERT OR ABORT INTO",
        }
    }

    /// [`Dialect::insert_into`] for an `UPDATE`.
    fn update(self) -> &'static str {
        match self {
            Dialect::Postgres => "UPDATE",
            Dialect::Sqlite => "UPDATE OR ABORT",
        }
    }
}

/// Schema of the server's tracking objects.
pub const TRACKING_SCHEMA: &str = "tandem";

/// A scope's tables together with the ids of their tracking objects, which
/// name `tandem.track_<id>`, `tandem.log_<id>`, `tandem.exit_<id>` and the
/// triggers.
#[derive(Clone, Copy, Debug)]
pub struct Scope<'a> {
    pub schema: &'a Schema,
    /// Tracking id of each table, parallel to `schema.tables`.
    pub ids: &'a [i64],
}

impl<'a> Scope<'a> {
    pub fn new(schema: &'a Schema, ids: &'a [i64]) -> Self {
        assert_eq!(schema.tables.len(), ids.len(), "one tracking id per table");
        Scope { schema, ids }
    }

    pub fn table(&self, index: usize) -> &'a TableSchema {
        &self.schema.tables[index]
    }

    pub fn id(&self, index: usize) -> i64 {
        self.ids[index]
    }

    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.schema.tables.iter().position(|t| t.name == name)
    }

    pub fn track(&self, index: usize) -> String {
        format!("{}.{}", quote_ident(TRACKING_SCHEMA), quote_ident(&format!("track_{}", self.ids[index])))
    }

    /// The change log the triggers append to (see [`tracking`]).
    pub fn log(&self, index: usize) -> String {
        format!("{}.{}", quote_ident(TRACKING_SCHEMA), quote_ident(&format!("log_{}", self.ids[index])))
    }

    pub fn exits(&self, index: usize) -> String {
        format!("{}.{}", quote_ident(TRACKING_SCHEMA), quote_ident(&format!("exit_{}", self.ids[index])))
    }

    pub fn stage(&self, index: usize) -> String {
        format!("pg_temp.{}", quote_ident(&format!("tandem_stage_{}", self.ids[index])))
    }
}

/// `"a", "b"` with an optional alias prefix.
pub fn column_list<S: AsRef<str>>(alias: Option<&str>, columns: &[S]) -> String {
    columns
        .iter()
        .map(|c| match alias {
            Some(a) => format!("{a}.{}", quote_ident(c.as_ref())),
            None => quote_ident(c.as_ref()),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `l."a" = r."a" AND l."b" = r."b"` over the primary key (or any columns).
pub fn columns_equal<S: AsRef<str>>(left: &str, left_cols: &[S], right: &str, right_cols: &[S]) -> String {
    left_cols
        .iter()
        .zip(right_cols)
        .map(|(l, r)| format!("{left}.{} = {right}.{}", quote_ident(l.as_ref()), quote_ident(r.as_ref())))
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// `l."a" = r."a" AND ...` over table `t`'s primary key, each with the
/// `=` of its type ([`crate::schema::Schema::operator`]): Tandem's
/// statements run with only `pg_catalog` on the path, where `citext =
/// citext` would compare texts, and find rows through no index.
pub fn keys_equal(scope: &Scope<'_>, t: usize, left: &str, right: &str) -> String {
    scope
        .table(t)
        .key_columns()
        .iter()
        .map(|c| {
            let name = quote_ident(&c.name);
            format!("{left}.{name} {} {right}.{name}", scope.schema.operator(c, "="))
        })
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// The text of `alias.column`, compared byte for byte: what tells two
/// spellings of one key apart where `=` holds them equal (`1.5`, `1.50`;
/// `abc`, `ABC` under citext or a nondeterministic collation).
pub fn spelling(alias: &str, column: &str) -> String {
    format!("({alias}.{}::text COLLATE \"C\")", quote_ident(column))
}

/// `(spelling(l, a), ...) IS DISTINCT FROM (spelling(r, a), ...)` over
/// `columns`: `None` when there are none (every key text is its value).
pub fn spelled_apart<S: AsRef<str>>(left: &str, right: &str, columns: &[S]) -> Option<String> {
    if columns.is_empty() {
        return None;
    }
    let side = |alias: &str| columns.iter().map(|c| spelling(alias, c.as_ref())).collect::<Vec<_>>().join(", ");
    Some(format!("ROW({}) IS DISTINCT FROM ROW({})", side(left), side(right)))
}

/// `INSERT ... ON CONFLICT (key) DO UPDATE` of one row from bound parameters
/// `1..=columns.len()` (both dialects read this the same way).
pub fn upsert_row(dialect: Dialect, table: &str, columns: &[String], key: &[String]) -> String {
    upsert_rows(dialect, table, columns, key, 1)
}

/// [`upsert_row`] of `rows` rows in one statement, row `r`'s columns in
/// parameters `r * columns.len() + 1..`: a download writes its rows in
/// groups, one statement each, instead of a statement a row.
pub fn upsert_rows(dialect: Dialect, table: &str, columns: &[String], key: &[String], rows: usize) -> String {
    let width = columns.len();
    let tuples: Vec<String> = (0..rows)
        .map(|r| {
            let values: Vec<String> = (1..=width).map(|n| dialect.param(r * width + n)).collect();
            format!("({})", values.join(", "))
        })
        .collect();
    let updates: Vec<String> = columns.iter().filter(|c| !key.contains(c)).map(|c| format!("{0} = excluded.{0}", quote_ident(c))).collect();
    let action = if updates.is_empty() { "NOTHING".to_string() } else { format!("UPDATE SET {}", updates.join(", ")) };
    format!(
        "{} {table} ({}) VALUES {} ON CONFLICT ({}) DO {action}",
        dialect.insert_into(),
        column_list(None, columns),
        tuples.join(", "),
        column_list(None, key)
    )
}

/// `UPDATE` of one row: `columns` bound as parameters `1..` in order, the
/// row found by those of them in `key`. For a write of some of a row's
/// columns only: an upsert would check the row's other NOT NULL columns
/// as for an insert, even when the row exists.
pub fn update_row(dialect: Dialect, table: &str, columns: &[String], key: &[String]) -> String {
    let param = |c: &String| columns.iter().position(|x| x == c).map(|i| dialect.param(i + 1)).unwrap_or_else(|| "NULL".into());
    let mut sets: Vec<String> = columns.iter().filter(|c| !key.contains(c)).map(|c| format!("{} = {}", quote_ident(c), param(c))).collect();
    if sets.is_empty() {
        sets.push(format!("{0} = {0}", quote_ident(&key[0])));
    }
    let conditions: Vec<String> = key.iter().map(|k| format!("{} = {}", quote_ident(k), param(k))).collect();
    format!("{} {table} SET {} WHERE {}", dialect.update(), sets.join(", "), conditions.join(" AND "))
}

/// `DELETE` of one row by its key from bound parameters `1..=key.len()`.
pub fn delete_row(dialect: Dialect, table: &str, key: &[String], casts: Option<&[String]>) -> String {
    let conditions: Vec<String> = key
        .iter()
        .enumerate()
        .map(|(i, k)| match casts {
            Some(types) => format!("{} = {}::text::{}", quote_ident(k), dialect.param(i + 1), types[i]),
            None => format!("{} = {}", quote_ident(k), dialect.param(i + 1)),
        })
        .collect();
    format!("DELETE FROM {table} WHERE {}", conditions.join(" AND "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_update_binds_its_columns_in_order_and_finds_the_row_by_those_of_the_key() {
        let cols = vec!["name".to_string(), "id".to_string()];
        let key = vec!["id".to_string()];
        assert_eq!(update_row(Dialect::Sqlite, "\"t\"", &cols, &key), "UPDATE OR ABORT \"t\" SET \"name\" = ?1 WHERE \"id\" = ?2");
        assert_eq!(update_row(Dialect::Sqlite, "\"t\"", &key, &key), "UPDATE OR ABORT \"t\" SET \"id\" = \"id\" WHERE \"id\" = ?1");
    }

    #[test]
    fn one_row_statements_quote_everything() {
        let cols = vec!["id".to_string(), "Full Name".to_string()];
        let key = vec!["id".to_string()];
        assert_eq!(
            upsert_row(Dialect::Sqlite, "\"t\"", &cols, &key),
            "INSERT OR ABORT INTO \"t\" (\"id\", \"Full Name\") VALUES (?1, ?2) ON CONFLICT (\"id\") DO UPDATE SET \"Full Name\" = excluded.\"Full Name\""
        );
        assert_eq!(
            delete_row(Dialect::Postgres, "\"s\".\"t\"", &key, Some(&["bigint".to_string()])),
            "DELETE FROM \"s\".\"t\" WHERE \"id\" = $1::text::bigint"
        );
        assert!(upsert_row(Dialect::Sqlite, "\"t\"", &key, &key).ends_with("DO NOTHING"));
    }

    #[test]
    fn a_group_of_rows_numbers_its_parameters_row_after_row() {
        let cols = vec!["id".to_string(), "name".to_string()];
        let key = vec!["id".to_string()];
        assert_eq!(
            upsert_rows(Dialect::Sqlite, "\"t\"", &cols, &key, 3),
            "INSERT OR ABORT INTO \"t\" (\"id\", \"name\") VALUES (?1, ?2), (?3, ?4), (?5, ?6) ON CONFLICT (\"id\") DO UPDATE SET \"name\" = excluded.\"name\""
        );
    }
}

#[cfg(test)]
pub(crate) mod statements {
    /// The one statement of `statements` that starts with `start`: tests
    /// name the statement they check, so a reordering does not break them.
    pub(crate) fn the<'a>(statements: &'a [String], start: &str) -> &'a str {
        let found: Vec<&String> = statements.iter().filter(|s| s.starts_with(start)).collect();
        match found.as_slice() {
            [one] => one,
            _ => panic!("{} statements start with {start}: {statements:#?}", found.len()),
        }
    }
}
