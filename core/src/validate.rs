//! Checks a changeset against a scope's schema before anything is written:
//! structure problems fail the whole changeset, ill-typed rows are collected
//! as rejections so the caller can name each one.

use std::collections::HashSet;

use serde_json::Value;

use crate::changeset::{Changeset, Op};
use crate::error::{Error, Rejection, RejectionKind, Result};
use crate::schema::{Schema, TableSchema};
use crate::types::LogicalType;

/// A changeset table whose rows passed the checks, values converted for the
/// side that applies them.
#[derive(Debug)]
pub struct CheckedTable<'s, V> {
    pub schema: &'s TableSchema,
    /// For each changeset column, its position in the schema's columns.
    pub columns: Vec<usize>,
    pub rows: Vec<CheckedRow<V>>,
}

#[derive(Debug)]
pub struct CheckedRow<V> {
    pub op: Op,
    /// Primary key values as JSON, in primary key order.
    pub key: Vec<Value>,
    /// Upserts: converted values in changeset column order. Deletes:
    /// converted key values in primary key order.
    pub values: Vec<V>,
    /// The JSON the values came from (same order as `values`).
    pub raw: Vec<Value>,
    pub base: Option<String>,
    pub version: Option<String>,
    pub seq: Option<i64>,
    /// A key change: the key the row had, as JSON and converted.
    pub moved_from: Option<MovedKey<V>>,
    /// A server delete of a key it holds under another text (see
    /// `changeset::RowChange::respelled`), as sent.
    pub respelled: Option<bool>,
}

/// The key an upserted row had before the change that moved it.
#[derive(Debug, Clone)]
pub struct MovedKey<V> {
    pub key: Vec<Value>,
    pub values: Vec<V>,
}

impl<'s, V> CheckedTable<'s, V> {
    /// Position in `columns` of each primary key column.
    pub fn key_positions(&self) -> Vec<usize> {
        self.schema.key_indexes().into_iter().map(|k| self.columns.iter().position(|c| *c == k).unwrap_or(0)).collect()
    }
}

/// Checks `changeset` against `schema`, converting each value with `convert`.
/// Tables come back in schema order (parents first).
pub fn check_changeset<'s, V>(
    schema: &'s Schema,
    changeset: Changeset,
    convert: impl Fn(LogicalType, &Value) -> std::result::Result<V, String>,
) -> Result<(Vec<CheckedTable<'s, V>>, Vec<Rejection>)> {
    if changeset.scope != schema.scope {
        return Err(Error::ScopeMismatch { expected: schema.scope.clone(), found: changeset.scope });
    }
    let mut tables: Vec<CheckedTable<'s, V>> = Vec::new();
    let mut seen_keys: Vec<HashSet<String>> = Vec::new();
    let mut rejections = Vec::new();
    for changes in changeset.tables {
        let table = schema.table(&changes.name)?;
        let mut columns = Vec::with_capacity(changes.columns.len());
        for name in &changes.columns {
            let index = table.column_index(name).ok_or_else(|| Error::UnknownColumn {
                scope: schema.scope.clone(),
                table: table.name.clone(),
                column: name.clone(),
            })?;
            if columns.contains(&index) {
                return Err(malformed(format!("column \"{name}\" of {} is listed twice", table.name)));
            }
            columns.push(index);
        }
        // A table may come more than once (a pull sends a table's upserts,
        // then later its deletes): later parts join the first.
        let index = match tables.iter().position(|t| t.schema.name == table.name) {
            Some(i) if tables[i].columns != columns => {
                return Err(malformed(format!("table {} appears twice with different columns", table.name)))
            }
            Some(i) => i,
            None => {
                tables.push(CheckedTable { schema: table, columns, rows: Vec::with_capacity(changes.rows.len()) });
                // Sized for the batch: growing it row by row rehashed every
                // key again at each doubling.
                seen_keys.push(HashSet::with_capacity(changes.rows.len()));
                tables.len() - 1
            }
        };
        let checked = &mut tables[index];
        let seen_keys = &mut seen_keys[index];
        if !changes.rows.is_empty() {
            if let Some(missing) = table.primary_key.iter().find(|k| !changes.columns.contains(k)) {
                return Err(malformed(format!("{} lacks primary key column \"{missing}\" in \"columns\"", table.name)));
            }
        }
        let key_positions = checked.key_positions();
        // Per value position: the column, its type, and whether NULL is allowed.
        fn describe<'c>(table: &TableSchema, c: &'c crate::schema::Column) -> (LogicalType, bool, &'c str) {
            (c.ty, c.takes_null() && !table.primary_key.contains(&c.name), c.name.as_str())
        }
        let upsert_columns: Vec<_> = checked.columns.iter().map(|&c| describe(table, &table.columns[c])).collect();
        let key_columns: Vec<_> = table.key_columns().into_iter().map(|c| describe(table, c)).collect();
        for (n, row) in changes.rows.into_iter().enumerate() {
            check_version_text(&row.base, "base", &table.name, n)?;
            check_version_text(&row.version, "version", &table.name, n)?;
            let (raw, described) = match row.op {
                Op::Upsert => {
                    if row.respelled.is_some() {
                        return Err(malformed(format!("upsert row {n} of {} carries \"respelled\", which only a delete may", table.name)));
                    }
                    if row.key.is_some() {
                        return Err(malformed(format!("upsert row {n} of {} carries \"key\"; the key is in \"values\"", table.name)));
                    }
                    let values = row.values.ok_or_else(|| malformed(format!("upsert row {n} of {} has no \"values\"", table.name)))?;
                    if values.len() != checked.columns.len() {
                        return Err(malformed(format!(
                            "row {n} of {} has {} values for {} columns",
                            table.name,
                            values.len(),
                            checked.columns.len()
                        )));
                    }
                    (values, &upsert_columns)
                }
                Op::Delete => {
                    if row.moved_from.is_some() {
                        return Err(malformed(format!("delete row {n} of {} carries \"moved_from\"", table.name)));
                    }
                    let key = row.key.ok_or_else(|| malformed(format!("delete row {n} of {} has no \"key\"", table.name)))?;
                    if row.values.is_some() {
                        return Err(malformed(format!("delete row {n} of {} carries \"values\"", table.name)));
                    }
                    if key.len() != table.primary_key.len() {
                        return Err(malformed(format!(
                            "delete row {n} of {} has {} key values; the primary key has {}",
                            table.name,
                            key.len(),
                            table.primary_key.len()
                        )));
                    }
                    (key, &key_columns)
                }
            };
            let key: Vec<Value> = match row.op {
                Op::Upsert => key_positions.iter().map(|&p| raw[p].clone()).collect(),
                Op::Delete => raw.clone(),
            };
            if let Some(key_text) = seen_keys.replace(serde_json::to_string(&key).unwrap_or_default()) {
                return Err(malformed(format!("key {key_text} appears twice in {}; send each row once", table.name)));
            }
            let mut problem = None;
            let moved_from = match row.moved_from {
                None => None,
                Some(from) => {
                    if from.len() != table.primary_key.len() {
                        return Err(malformed(format!(
                            "row {n} of {} moved from {} key values; the primary key has {}",
                            table.name,
                            from.len(),
                            table.primary_key.len()
                        )));
                    }
                    if from == key {
                        return Err(malformed(format!("row {n} of {} moved from its own key", table.name)));
                    }
                    if let Some(key_text) = seen_keys.replace(serde_json::to_string(&from).unwrap_or_default()) {
                        return Err(malformed(format!("key {key_text} appears twice in {}; send each row once", table.name)));
                    }
                    let mut converted = Vec::with_capacity(from.len());
                    for (value, &(ty, _, name)) in from.iter().zip(key_columns.iter()) {
                        match convert(ty, value) {
                            Ok(v) if !value.is_null() => converted.push(v),
                            Ok(_) => problem = Some(format!("moved_from: column {name} may not be NULL")),
                            Err(reason) => problem = Some(format!("moved_from: column {name}: {reason}")),
                        }
                        if problem.is_some() {
                            break;
                        }
                    }
                    Some(MovedKey { key: from, values: converted })
                }
            };
            let mut values = Vec::with_capacity(raw.len());
            for (value, &(ty, nullable, name)) in raw.iter().zip(described.iter()) {
                if problem.is_some() {
                    break;
                }
                if let Some(reason) = unreadable(value) {
                    problem = Some(reason);
                    break;
                }
                if value.is_null() && !nullable {
                    problem = Some(format!("column {name} may not be NULL"));
                    break;
                }
                match convert(ty, value) {
                    Ok(v) => values.push(v),
                    Err(reason) => {
                        problem = Some(format!("column {name}: {reason}"));
                        break;
                    }
                }
            }
            match problem {
                Some(reason) => rejections.push(Rejection {
                    table: table.name.clone(),
                    key,
                    seq: row.seq,
                    kind: RejectionKind::InvalidValue,
                    reason,
                    row: None,
                    version: None,
                    moved_from: moved_from.map(|m| crate::apply_result::MovedFrom { key: m.key, row: None, version: None }),
                }),
                None => checked.rows.push(CheckedRow {
                    op: row.op,
                    key,
                    values,
                    raw,
                    base: row.base,
                    version: row.version,
                    seq: row.seq,
                    moved_from,
                    respelled: row.respelled,
                }),
            }
        }
    }
    tables.sort_by_key(|t| schema.position(t.schema));
    Ok((tables, rejections))
}

/// The reason a sender gave for a value it could not read (`{"invalid":
/// "column name holds a blob..."}`): the row is refused with it. No value
/// of any type travels as an object, so the marker is never a value.
fn unreadable(value: &Value) -> Option<String> {
    match value {
        Value::Object(map) if map.len() == 1 => map.get("invalid").map(|reason| match reason {
            Value::String(text) => crate::error::shorten(text, 300),
            other => crate::error::shorten(&other.to_string(), 300),
        }),
        _ => None,
    }
}

fn check_version_text(version: &Option<String>, field: &str, table: &str, n: usize) -> Result<()> {
    match version {
        Some(v) if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) || v.len() > 20 => {
            Err(malformed(format!("row {n} of {table}: \"{field}\" is \"{v}\", expected a version returned by the server")))
        }
        _ => Ok(()),
    }
}

fn malformed(reason: String) -> Error {
    Error::Malformed { what: "changeset", reason }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::Column;
    use crate::setup::Direction;
    use crate::types::json_to_pg_text;
    use serde_json::json;

    fn schema() -> Schema {
        let col = |name: &str, ty, nullable| Column {
            name: name.into(),
            ty,
            pg_type: String::new(),
            nullable,
            default: None,
            server_default: false,
            fill: None,
            since: None,
        };
        Schema {
            scope: "crm".into(),
            version: 1,
            former_names: Vec::new(),
            operators: Default::default(),
            tables: vec![TableSchema {
                name: "public.orders".into(),
                columns: vec![
                    col("id", LogicalType::Int8, false),
                    col("total", LogicalType::Numeric, true),
                    col("note", LogicalType::Text, false),
                ],
                primary_key: vec!["id".into()],
                filter: None,
                direction: Direction::Bidirectional,
                policy: None,
                partitioned: false,
                refiltered: None,
                renamed_from: Vec::new(),
                added: None,
            }],
        }
    }

    fn check(cs: Value) -> Result<(usize, Vec<Rejection>)> {
        let schema = schema();
        let cs = Changeset::from_value(cs)?;
        let (tables, rejections) = check_changeset(&schema, cs, json_to_pg_text)?;
        Ok((tables.iter().map(|t| t.rows.len()).sum(), rejections))
    }

    fn cs(columns: Value, rows: Value) -> Value {
        json!({"format": 1, "scope": "crm", "origin": "c1",
               "tables": [{"name": "orders", "columns": columns, "rows": rows}]})
    }

    #[test]
    fn accepts_good_rows_and_a_column_subset() {
        let (n, rejected) = check(cs(
            json!(["id", "note"]),
            json!([{"op": "upsert", "base": "12", "seq": 3, "values": [1, "a"]},
                   {"op": "delete", "key": [2]}]),
        ))
        .unwrap();
        assert_eq!((n, rejected.len()), (2, 0));
    }

    #[test]
    fn a_table_may_come_in_parts() {
        let (n, rejected) = check(json!({"format": 1, "scope": "crm", "origin": "c", "tables": [
            {"name": "orders", "columns": ["id"], "rows": [{"op": "upsert", "values": [1]}]},
            {"name": "public.orders", "columns": ["id"], "rows": [{"op": "delete", "key": [2]}]}]}))
        .unwrap();
        assert_eq!((n, rejected.len()), (2, 0));
    }

    #[test]
    fn ill_typed_rows_are_rejected_by_name() {
        let (n, rejected) = check(cs(
            json!(["id", "total", "note"]),
            json!([{"op": "upsert", "seq": 1, "values": [1, 2.5, "a"]},
                   {"op": "upsert", "values": [2, "3.10", null]},
                   {"op": "upsert", "values": [3, "3.10", "ok"]}]),
        ))
        .unwrap();
        assert_eq!(n, 1);
        assert_eq!(rejected[0].key, vec![json!(1)]);
        assert_eq!(rejected[0].seq, Some(1));
        assert!(rejected[0].reason.starts_with("column total: expected a decimal"), "{}", rejected[0].reason);
        assert_eq!(rejected[1].reason, "column note may not be NULL");
        let (n, rejected) = check(cs(
            json!(["id", "note"]),
            json!([{"op": "upsert", "values": [4, {"invalid": "column note holds a blob of 5 bytes; the column takes text"}]}]),
        ))
        .unwrap();
        assert_eq!((n, rejected[0].reason.as_str()), (0, "column note holds a blob of 5 bytes; the column takes text"));
    }

    #[test]
    fn structural_problems_fail_the_whole_changeset() {
        let cases = [
            (cs(json!(["id", "nope"]), json!([])), "no synced column \"nope\""),
            (cs(json!(["note"]), json!([{"op": "upsert", "values": ["a"]}])), "lacks primary key"),
            (cs(json!(["id"]), json!([{"op": "upsert", "values": [1, 2]}])), "2 values for 1 columns"),
            (cs(json!(["id"]), json!([{"op": "delete"}])), "has no \"key\""),
            (cs(json!(["id"]), json!([{"op": "upsert", "values": [1]}, {"op": "delete", "key": [1]}])), "appears twice"),
            (
                json!({"format": 1, "scope": "crm", "origin": "c", "tables": [
                {"name": "orders", "columns": ["id"], "rows": [{"op": "upsert", "values": [1]}]},
                {"name": "orders", "columns": ["id"], "rows": [{"op": "delete", "key": [1]}]}]}),
                "key [1] appears twice",
            ),
            (
                json!({"format": 1, "scope": "crm", "origin": "c", "tables": [
                {"name": "orders", "columns": ["id"], "rows": []},
                {"name": "orders", "columns": ["id", "note"], "rows": []}]}),
                "different columns",
            ),
            (cs(json!(["id"]), json!([{"op": "upsert", "base": "x1", "values": [1]}])), "expected a version"),
            (json!({"format": 1, "scope": "other", "origin": "c", "tables": []}), "for scope \"other\""),
            (
                json!({"format": 1, "scope": "crm", "origin": "c", "tables": [{"name": "nope", "columns": [], "rows": []}]}),
                "not part of scope",
            ),
        ];
        for (cs, needle) in cases {
            let err = check(cs.clone()).unwrap_err().to_string();
            assert!(err.contains(needle), "{cs}: {err}");
        }
    }
}
