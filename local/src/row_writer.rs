//! A pulled table's upserts, written into the file with their base
//! versions. Rows go a group at a time: one statement for the group's rows
//! and one for their base versions, instead of two statements a row, which
//! SQLite prepares, binds and steps each time (a first download of a
//! million rows runs two million of them).
//!
//! A group the file does not take whole (its own constraint refuses a row,
//! its trigger ignores one with `RAISE(IGNORE)`) is undone and written
//! again row by row, where each refused row waits aside as it would have
//! alone. Rows are written in the batch's order either way, so what the
//! file's own triggers see is the same.

use rusqlite::limits::Limit;
use rusqlite::{params_from_iter, Connection, ToSql};
use serde_json::{Map, Value};
use tandem_core::sql::{local, upsert_rows, Dialect};
use tandem_core::types::{describe_local, LocalValue};
use tandem_core::validate::{CheckedRow, CheckedTable};

use crate::error::{LocalError, Result};
use crate::meta::ScopeState;
use crate::not_stored::{self, ServerRow};
use crate::values::Bound;

/// Rows written by one statement. A table too wide for a whole group
/// within the parameters SQLite binds a statement (32,766 since 3.32,
/// 999 before: the loadable extension runs in whatever SQLite loads it)
/// is written row by row.
pub const GROUP: usize = 100;

struct Statements {
    upsert_group: String,
    upsert_row: String,
    base_group: String,
    base_row: String,
    drop_base: String,
}

/// What writing rows did, for the pull's report.
#[derive(Debug, Default, Clone, Copy)]
pub struct Written {
    pub applied: u64,
    pub not_stored: u64,
}

/// Writes the upserts of one pulled table.
pub struct RowWriter<'c, 't> {
    conn: &'c Connection,
    state: &'c ScopeState,
    table: &'c CheckedTable<'t, LocalValue>,
    t: usize,
    id: i64,
    columns: Vec<String>,
    key_positions: Vec<usize>,
    /// Upserts waiting to be written as one group.
    group: Vec<&'c CheckedRow<LocalValue>>,
    grouped: bool,
    /// The statements, made once a table: a group's runs to kilobytes.
    sql: Statements,
    pub written: Written,
}

impl<'c, 't> RowWriter<'c, 't> {
    pub fn new(conn: &'c Connection, state: &'c ScopeState, table: &'c CheckedTable<'t, LocalValue>, t: usize, id: i64) -> Self {
        let columns: Vec<String> = table.columns.iter().map(|&c| table.schema.columns[c].name.clone()).collect();
        let parameters = conn.limit(Limit::SQLITE_LIMIT_VARIABLE_NUMBER).map_or(0, |n| usize::try_from(n).unwrap_or(0));
        let grouped = columns.len() * GROUP <= parameters;
        let schema = table.schema;
        let upsert = |rows| upsert_rows(Dialect::Sqlite, &local::user_table(schema), &columns, &schema.primary_key, rows);
        let sql = Statements {
            upsert_group: upsert(GROUP),
            upsert_row: upsert(1),
            base_group: local::write_bases(schema, id, GROUP),
            base_row: local::write_base(schema, id),
            drop_base: local::delete_base(schema, id),
        };
        RowWriter {
            sql,
            conn,
            state,
            table,
            t,
            id,
            key_positions: table.key_positions(),
            columns,
            group: Vec::with_capacity(GROUP),
            grouped,
            written: Written::default(),
        }
    }

    /// Writes `row` now or with the next group.
    pub fn upsert(&mut self, row: &'c CheckedRow<LocalValue>) -> Result<()> {
        if !self.grouped {
            return self.write_one(row);
        }
        self.group.push(row);
        if self.group.len() == GROUP {
            let group = std::mem::take(&mut self.group);
            self.write_group(&group)?;
            self.group = group;
            self.group.clear();
        }
        Ok(())
    }

    /// Writes what is left (fewer rows than a group, one by one: a
    /// statement for each size of a batch's last group would be prepared
    /// once and seldom used again).
    pub fn finish(mut self) -> Result<Written> {
        for row in std::mem::take(&mut self.group) {
            self.write_one(row)?;
        }
        Ok(self.written)
    }

    fn write_group(&mut self, group: &[&CheckedRow<LocalValue>]) -> Result<()> {
        let conn = self.conn;
        conn.prepare_cached(local::GROUP_SAVEPOINT)?.execute([])?;
        match self.try_group(group) {
            Ok(true) => {
                conn.prepare_cached(local::GROUP_RELEASE)?.execute([])?;
                self.written.applied += group.len() as u64;
                Ok(())
            }
            outcome => {
                // A trigger of the file's own ended sync's whole transaction
                // (`RAISE(ROLLBACK)`): nothing is left to undo or redo.
                if conn.is_autocommit() {
                    let error = outcome.err().unwrap_or_else(|| LocalError::RowIgnored { table: self.table.schema.name.clone() });
                    return Err(not_stored::as_refusal(conn, self.table.schema, error).err().unwrap_or_else(|| LocalError::RolledBack {
                        table: self.table.schema.name.clone(),
                        reason: "a trigger of the file's own ended sync's transaction".into(),
                    }));
                }
                // Undone whole, whatever failed: written again row by row,
                // each row's refusal (or the error) comes from its own
                // statement.
                conn.prepare_cached(local::GROUP_UNDO)?.execute([])?;
                conn.prepare_cached(local::GROUP_RELEASE)?.execute([])?;
                if let Err(error) = outcome {
                    if !refusable(&error) {
                        return Err(error);
                    }
                }
                for row in group {
                    self.write_one(row)?;
                }
                Ok(())
            }
        }
    }

    /// Whether the file took every row of `group` (false: one was ignored).
    /// The base versions go first: a trigger of the file's own that
    /// removes a row of the group while a later one is written (a delete,
    /// a key change) takes its base version with it, as it would had the
    /// row been written alone (helper 70: written after, the base version
    /// stayed with no row, and went up as the file's delete).
    fn try_group(&self, group: &[&CheckedRow<LocalValue>]) -> Result<bool> {
        let versions: Option<Vec<&String>> = group.iter().map(|row| row.version.as_ref()).collect();
        match versions {
            Some(versions) => {
                let keys: Vec<Vec<Bound<'_>>> = group.iter().map(|row| self.key_of(row)).collect();
                let mut params: Vec<&dyn ToSql> = Vec::with_capacity(group.len() * (self.key_positions.len() + 1));
                for (key, version) in keys.iter().zip(&versions) {
                    params.extend(key.iter().map(|k| k as &dyn ToSql));
                    params.push(version);
                }
                self.conn.prepare_cached(&self.sql.base_group)?.execute(params.as_slice())?;
            }
            None => {
                for row in group {
                    self.write_base(row)?;
                }
            }
        }
        let mut upsert = self.conn.prepare_cached(&self.sql.upsert_group)?;
        let written = upsert.execute(params_from_iter(group.iter().flat_map(|row| row.values.iter().map(Bound))))?;
        Ok(written == group.len())
    }

    fn write_one(&mut self, row: &CheckedRow<LocalValue>) -> Result<()> {
        let schema = self.table.schema;
        let mut upsert = self.conn.prepare_cached(&self.sql.upsert_row)?;
        let written = match upsert.execute(params_from_iter(row.values.iter().map(Bound))) {
            Ok(0) => Err(LocalError::RowIgnored { table: schema.name.clone() }),
            Ok(_) => Ok(()),
            Err(error) => Err(error.into()),
        };
        if let Err(error) = written {
            // The file's own constraint: the row waits aside, the batch
            // goes on (a failed statement is undone by itself).
            let refusal = not_stored::as_refusal(self.conn, schema, error)?;
            let object = self.server_object(row);
            let server = ServerRow { t: self.t, key: &row.key, row: Some(&object), version: row.version.as_deref() };
            not_stored::keep(self.conn, self.state, &server, &refusal)?;
            // The file's row keeps what it has; an upload of it sends the
            // server's values of what it could not take (helper 58: a
            // renamed column's value wiped by NULL).
            let values: Vec<Bound<'_>> = row.values.iter().map(Bound).collect();
            let key = self.key_of(row);
            crate::local_only::note_refused(self.conn, schema, self.id, &self.columns, &values, &key)?;
            self.written.not_stored += 1;
            return Ok(());
        }
        self.write_base(row)?;
        self.written.applied += 1;
        Ok(())
    }

    /// Records the server version of a written row (none: the server sent
    /// it without one, so the file holds no base for it).
    fn write_base(&self, row: &CheckedRow<LocalValue>) -> Result<()> {
        let key = self.key_of(row);
        let mut params: Vec<&dyn ToSql> = key.iter().map(|k| k as &dyn ToSql).collect();
        match &row.version {
            Some(version) => {
                params.push(version);
                self.conn.prepare_cached(&self.sql.base_row)?.execute(params.as_slice())?
            }
            None => self.conn.prepare_cached(&self.sql.drop_base)?.execute(params.as_slice())?,
        };
        Ok(())
    }

    fn key_of<'r>(&self, row: &'r CheckedRow<LocalValue>) -> Vec<Bound<'r>> {
        self.key_positions.iter().map(|&p| Bound(&row.values[p])).collect()
    }

    /// A changeset row as the JSON object of its columns: the server's
    /// values, as they read back from what the file stores (the same value
    /// the server sent, in the form the file's uploads give it).
    fn server_object(&self, row: &CheckedRow<LocalValue>) -> Map<String, Value> {
        self.table
            .columns
            .iter()
            .zip(&row.values)
            .map(|(&c, value)| {
                let column = &self.table.schema.columns[c];
                (column.name.clone(), describe_local(column.ty, value))
            })
            .collect()
    }
}

/// An error a row-by-row write turns into the row waiting aside (the
/// file's own constraint); any other error ends the pull.
fn refusable(error: &LocalError) -> bool {
    matches!(error, LocalError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::ConstraintViolation)
}
