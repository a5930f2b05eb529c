//! Checks a changeset against a scope's schema before anything is written,
//! converting each value for the side that applies it as the JSON is read
//! (no JSON value tree in between): structure problems fail the whole
//! changeset, ill-typed rows are collected as rejections so the caller can
//! name each one.
//!
//! A table's rows are read once its name and columns are known, and the
//! tables once the changeset's format and scope are: JSON objects have no
//! order, and a writer that puts `rows` first (jsonb does) has its rows
//! read after the rest of their object, from the same text.

mod reader;

use std::collections::HashSet;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};

use serde::de::{self, DeserializeSeed};
use serde_json::Value;

use crate::changeset::Op;
use crate::error::{Error, Rejection, RejectionKind, Result};
use crate::json::Json;
use crate::schema::{Schema, TableSchema};
use crate::types::LogicalType;
use reader::{ChangesetSeed, RowFields};

/// How a side converts one changeset value (`types::to_local`,
/// `types::to_pg_text`); the error says what was expected.
pub type Convert<V> = fn(LogicalType, &Json<'_>) -> std::result::Result<V, String>;

/// Whether the checked rows keep the JSON their values came from: the server
/// compares what it wrote with what was sent and names sent rows in its
/// answers; a device needs only the converted values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Raw {
    Kept,
    Dropped,
}

/// Who wrote a changeset: a server's rows carry versions, an upload's
/// carry bases, counters and key changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sender {
    Server,
    Device,
}

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
    /// The JSON the values came from (same order as `values`); empty when
    /// checked with [`Raw::Dropped`].
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
        key_positions(self.schema, &self.columns)
    }
}

fn key_positions(table: &TableSchema, columns: &[usize]) -> Vec<usize> {
    table.key_indexes().into_iter().map(|k| columns.iter().position(|c| *c == k).unwrap_or(0)).collect()
}

/// A changeset, checked: its tables in schema order (parents first), the
/// rows refused for their values, and what the changeset says of itself.
#[derive(Debug)]
pub struct Checked<'s, V> {
    pub tables: Vec<CheckedTable<'s, V>>,
    pub rejections: Vec<Rejection>,
    /// The server's id for server changesets, the client id for uploads.
    pub origin: String,
    pub watermark: Option<String>,
    pub has_more: bool,
}

/// Reads changeset `text` from `sender` against `schema`, converting each
/// value with `convert`.
pub fn check_changeset<'s, V>(schema: &'s Schema, text: &str, sender: Sender, convert: Convert<V>, raw: Raw) -> Result<Checked<'s, V>> {
    let mut state = State {
        schema,
        sender,
        convert,
        raw,
        tables: Vec::new(),
        seen: Vec::new(),
        rejections: Vec::new(),
        failure: None,
        key_text: Vec::new(),
        seed: std::collections::hash_map::RandomState::new().hash_one(0u8),
    };
    let mut reader = serde_json::Deserializer::from_str(text);
    let header = ChangesetSeed(&mut state).deserialize(&mut reader).and_then(|header| reader.end().map(|()| header));
    let header = match header {
        Ok(header) => header,
        Err(error) => return Err(state.failure.take().unwrap_or_else(|| malformed(error.to_string()))),
    };
    // A device stores a server's watermark as its next pull's position:
    // one the server would refuse would fail every pull after this one.
    if let (Sender::Server, Some(watermark)) = (sender, &header.watermark) {
        crate::watermark::Watermark::parse(watermark)?;
    }
    let State { mut tables, rejections, .. } = state;
    tables.sort_by_key(|t| schema.position(t.schema));
    Ok(Checked { tables, rejections, origin: header.origin, watermark: header.watermark, has_more: header.has_more })
}

/// What the check carries from value to value.
struct State<'s, V> {
    schema: &'s Schema,
    sender: Sender,
    convert: Convert<V>,
    raw: Raw,
    tables: Vec<CheckedTable<'s, V>>,
    /// Per checked table, the hashes of the keys it holds so far.
    seen: Vec<KeyHashes>,
    rejections: Vec<Rejection>,
    /// The problem that stopped the reading: the parser's own error only
    /// carries text.
    failure: Option<Error>,
    /// A key as JSON text, for the duplicate check (kept to spare an
    /// allocation a row).
    key_text: Vec<u8>,
    /// The seed of the keys' hashes, new for each changeset: a sender
    /// cannot make keys whose hashes collide, each collision costing a
    /// scan of the table's keys.
    seed: u64,
}

impl<V> State<'_, V> {
    /// Stops the reading with `error`.
    fn fail<E: de::Error>(&mut self, error: Error) -> E {
        let text = error.to_string();
        self.failure = Some(error);
        E::custom(text)
    }
}

/// One column a value goes to: its type, whether NULL is allowed, its name.
struct Slot<'s> {
    ty: LogicalType,
    nullable: bool,
    name: &'s str,
}

/// One part of a changeset's table (a table may come more than once: a pull
/// sends a table's upserts, then later its deletes), ready for its rows.
struct Part<'s> {
    /// The table's place in `State::tables`.
    index: usize,
    table: &'s TableSchema,
    /// Whether the part's columns lack a primary key column (named).
    missing_key: Option<&'s str>,
    upsert: Vec<Slot<'s>>,
    keys: Vec<Slot<'s>>,
    /// Position in the upsert's values of each primary key column.
    key_positions: Vec<usize>,
}

fn open_part<'s, V, E: de::Error>(state: &mut State<'s, V>, name: &str, names: &[String]) -> std::result::Result<Part<'s>, E> {
    let schema = state.schema;
    let table = match schema.table(name) {
        Ok(table) => table,
        Err(error) => return Err(state.fail(error)),
    };
    let mut columns = Vec::with_capacity(names.len());
    for name in names {
        let Some(index) = table.column_index(name) else {
            let error = Error::UnknownColumn { scope: schema.scope.clone(), table: table.name.clone(), column: name.clone() };
            return Err(state.fail(error));
        };
        if columns.contains(&index) {
            return Err(state.fail(malformed(format!("column \"{name}\" of {} is listed twice", table.name))));
        }
        columns.push(index);
    }
    let index = match state.tables.iter().position(|t| t.schema.name == table.name) {
        Some(i) if state.tables[i].columns != columns => {
            return Err(state.fail(malformed(format!("table {} appears twice with different columns", table.name))));
        }
        Some(i) => i,
        None => {
            state.tables.push(CheckedTable { schema: table, columns: columns.clone(), rows: Vec::new() });
            state.seen.push(KeyHashes::default());
            state.tables.len() - 1
        }
    };
    let slot =
        |c: &'s crate::schema::Column| Slot { ty: c.ty, nullable: c.takes_null() && !table.primary_key.contains(&c.name), name: &c.name };
    Ok(Part {
        index,
        table,
        missing_key: table.primary_key.iter().find(|k| !names.contains(k)).map(String::as_str),
        upsert: columns.iter().map(|&c| slot(&table.columns[c])).collect(),
        keys: table.key_columns().into_iter().map(slot).collect(),
        key_positions: key_positions(table, &columns),
    })
}

/// The checks of one row, in the order a sender's mistakes are named.
fn check_row<V>(state: &mut State<'_, V>, part: &Part<'_>, n: usize, row: &mut RowFields<V>) -> Result<()> {
    let table = part.table;
    if n == 0 {
        if let Some(missing) = part.missing_key {
            return Err(malformed(format!("{} lacks primary key column \"{missing}\" in \"columns\"", table.name)));
        }
    }
    check_sender(state.sender, row, n, &table.name)?;
    let (base, version) = (row.base.take().flatten(), row.version.take().flatten());
    check_version_text(&base, "base", &table.name, n)?;
    check_version_text(&version, "version", &table.name, n)?;
    let op = row.op.ok_or_else(|| malformed("missing field `op`".into()))?;
    let respelled = row.respelled.flatten();
    let moved_from = row.moved_from.take().flatten();
    let mut cells = match op {
        Op::Upsert => {
            if respelled.is_some() {
                return Err(malformed(format!("upsert row {n} of {} carries \"respelled\", which only a delete may", table.name)));
            }
            if row.key.as_ref().is_some_and(Option::is_some) {
                return Err(malformed(format!("upsert row {n} of {} carries \"key\"; the key is in \"values\"", table.name)));
            }
            let values =
                row.values.take().flatten().ok_or_else(|| malformed(format!("upsert row {n} of {} has no \"values\"", table.name)))?;
            if values.count != part.upsert.len() {
                return Err(malformed(format!("row {n} of {} has {} values for {} columns", table.name, values.count, part.upsert.len())));
            }
            values
        }
        Op::Delete => {
            if moved_from.is_some() {
                return Err(malformed(format!("delete row {n} of {} carries \"moved_from\"", table.name)));
            }
            let key = row.key.take().flatten().ok_or_else(|| malformed(format!("delete row {n} of {} has no \"key\"", table.name)))?;
            if row.values.as_ref().is_some_and(Option::is_some) {
                return Err(malformed(format!("delete row {n} of {} carries \"values\"", table.name)));
            }
            if key.count != table.primary_key.len() {
                return Err(malformed(format!(
                    "delete row {n} of {} has {} key values; the primary key has {}",
                    table.name,
                    key.count,
                    table.primary_key.len()
                )));
            }
            key
        }
    };
    let key: Vec<Value> = match (op, state.raw) {
        // The values' JSON stays whole as the row's raw JSON.
        (Op::Upsert, Raw::Kept) => part.key_positions.iter().map(|&p| cells.json[p].clone()).collect(),
        // Only the key's JSON was kept.
        (Op::Upsert, Raw::Dropped) => std::mem::take(&mut cells.json),
        (Op::Delete, _) => std::mem::take(&mut cells.json),
    };
    check_unique(state, part, &key)?;
    let mut problem = None;
    let moved_from = match moved_from {
        None => None,
        Some(from) => {
            if from.count != table.primary_key.len() {
                return Err(malformed(format!(
                    "row {n} of {} moved from {} key values; the primary key has {}",
                    table.name,
                    from.count,
                    table.primary_key.len()
                )));
            }
            if from.json == key {
                return Err(malformed(format!("row {n} of {} moved from its own key", table.name)));
            }
            check_unique(state, part, &from.json)?;
            problem = from.problem;
            Some(MovedKey { key: from.json, values: from.values })
        }
    };
    let raw = match (state.raw, op) {
        (Raw::Dropped, _) => Vec::new(),
        (Raw::Kept, Op::Upsert) => cells.json,
        (Raw::Kept, Op::Delete) => key.clone(),
    };
    match problem.or(cells.problem) {
        Some(reason) => state.rejections.push(Rejection {
            table: table.name.clone(),
            key,
            seq: row.seq.flatten(),
            kind: RejectionKind::InvalidValue,
            reason,
            row: None,
            version: None,
            moved_from: moved_from.map(|m| crate::apply_result::MovedFrom { key: m.key, row: None, version: None }),
        }),
        None => state.tables[part.index].rows.push(CheckedRow {
            op,
            key,
            values: cells.values,
            raw,
            base,
            version,
            seq: row.seq.flatten(),
            moved_from,
            respelled,
        }),
    }
    Ok(())
}

/// What a row may carry depends on who wrote it; a field it may not carry
/// is refused even as `null`.
fn check_sender<V>(sender: Sender, row: &RowFields<V>, n: usize, table: &str) -> Result<()> {
    let refused = match sender {
        Sender::Device if row.version.is_some() => {
            "an upload's rows carry no \"version\" (only a server's do; a change made on a server row names it as \"base\")"
        }
        Sender::Device if row.respelled.is_some() => "an upload carries no \"respelled\" (only a server's deletes do)",
        Sender::Server if row.moved_from.is_some() => {
            "a server's changeset carries no \"moved_from\" (it sends a key change as a delete and an upsert)"
        }
        Sender::Server if row.base.is_some() || row.seq.is_some() => {
            "a server's changeset carries no \"base\" or \"seq\" (an upload's rows do)"
        }
        _ => return Ok(()),
    };
    Err(malformed(format!("row {n} of {table}: {refused}")))
}

/// Keys' xxh3 hashes, each its own hash in the set.
type KeyHashes = HashSet<u64, BuildHasherDefault<Prehashed>>;

#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Refuses a key a table already holds in this changeset (as the JSON it
/// was sent as). Keys are remembered by a hash of their text; a hash seen
/// before is told from a collision by the keys themselves.
fn check_unique<V>(state: &mut State<'_, V>, part: &Part<'_>, key: &[Value]) -> Result<()> {
    state.key_text.clear();
    serde_json::to_writer(&mut state.key_text, key).map_err(|e| Error::Internal(format!("a key does not print as JSON: {e}")))?;
    if state.seen[part.index].insert(xxhash_rust::xxh3::xxh3_64_with_seed(&state.key_text, state.seed)) {
        return Ok(());
    }
    let same = |other: &Vec<Value>| serde_json::to_vec(other).is_ok_and(|text| text == state.key_text);
    let checked = state.tables[part.index].rows.iter().flat_map(|r| std::iter::once(&r.key).chain(r.moved_from.as_ref().map(|m| &m.key)));
    let refused = state
        .rejections
        .iter()
        .filter(|r| r.table == part.table.name)
        .flat_map(|r| std::iter::once(&r.key).chain(r.moved_from.as_ref().map(|m| &m.key)));
    if checked.chain(refused).any(same) {
        let text = String::from_utf8_lossy(&state.key_text);
        return Err(malformed(format!("key {text} appears twice in {}; send each row once", part.table.name)));
    }
    Ok(())
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
    use crate::types::to_pg_text;
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
        let checked = check_changeset(&schema, &cs.to_string(), Sender::Device, to_pg_text, Raw::Kept)?;
        Ok((checked.tables.iter().map(|t| t.rows.len()).sum(), checked.rejections))
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
    fn fields_may_come_in_any_order() {
        // jsonb's order: `rows` before `columns`, `tables` before `scope`.
        let schema = schema();
        let text = r#"{"tables": [{"rows": [{"op": "upsert", "values": [1, "2.50", "a"], "version": "4"},
                                            {"key": [2], "op": "delete", "respelled": true}],
                                   "name": "orders", "columns": ["id", "total", "note"]}],
                       "origin": "c1", "has_more": true, "watermark": "9:9:", "scope": "crm", "format": 1}"#;
        let checked = check_changeset(&schema, text, Sender::Server, to_pg_text, Raw::Kept).unwrap();
        assert_eq!((checked.origin.as_str(), checked.watermark.as_deref(), checked.has_more), ("c1", Some("9:9:"), true));
        let rows = &checked.tables[0].rows;
        assert_eq!(rows[0].values, vec![Some("1".to_string()), Some("2.50".into()), Some("a".into())]);
        assert_eq!(
            (rows[0].key.clone(), rows[0].raw.clone(), rows[0].version.as_deref()),
            (vec![json!(1)], vec![json!(1), json!("2.50"), json!("a")], Some("4"))
        );
        assert_eq!((rows[1].op, rows[1].key.clone(), rows[1].respelled), (Op::Delete, vec![json!(2)], Some(true)));
        // The scope is checked before any table, wherever it comes.
        let other = text.replace(r#""scope": "crm""#, r#""scope": "other""#).replace("orders", "nope");
        let err = check_changeset(&schema, &other, Sender::Device, to_pg_text, Raw::Kept).unwrap_err();
        assert!(matches!(err, Error::ScopeMismatch { .. }), "{err}");
        let newer = text.replace(r#""format": 1"#, r#""format": 2"#);
        assert!(matches!(check_changeset(&schema, &newer, Sender::Device, to_pg_text, Raw::Kept), Err(Error::UnsupportedFormat(2))));
    }

    #[test]
    fn a_device_keeps_only_the_keys_json() {
        let schema = schema();
        let text = cs(json!(["id", "note"]), json!([{"op": "upsert", "version": "7", "values": [1, "a\"b"]}])).to_string();
        let checked = check_changeset(&schema, &text, Sender::Server, crate::types::to_local, Raw::Dropped).unwrap();
        let row = &checked.tables[0].rows[0];
        use crate::types::LocalValue;
        assert_eq!(row.values, vec![LocalValue::Integer(1), LocalValue::Text("a\"b".into())]);
        assert_eq!((row.key.clone(), row.raw.len(), row.version.as_deref()), (vec![json!(1)], 0, Some("7")));
    }

    #[test]
    fn a_row_carries_only_what_its_sender_writes() {
        let schema = schema();
        let row = |extra: &str| {
            let row = format!(r#"{{"op": "upsert", "values": [1, "a"]{extra}}}"#);
            format!(
                r#"{{"format": 1, "scope": "crm", "origin": "c", "tables": [{{"name": "orders", "columns": ["id", "note"], "rows": [{row}]}}]}}"#
            )
        };
        let cases = [
            (Sender::Device, r#", "version": "7""#, "carry no \"version\""),
            (Sender::Device, r#", "version": null"#, "carry no \"version\""),
            (Sender::Server, r#", "moved_from": [2]"#, "carries no \"moved_from\""),
            (Sender::Server, r#", "moved_from": null"#, "carries no \"moved_from\""),
            (Sender::Server, r#", "seq": 3"#, "no \"base\" or \"seq\""),
            (Sender::Server, r#", "base": "3""#, "no \"base\" or \"seq\""),
        ];
        for (sender, extra, needle) in cases {
            let err = check_changeset(&schema, &row(extra), sender, to_pg_text, Raw::Kept).unwrap_err().to_string();
            assert!(err.contains(needle), "{sender:?} {extra}: {err}");
        }
        assert!(check_changeset(&schema, &row(r#", "seq": 3, "base": "2""#), Sender::Device, to_pg_text, Raw::Kept).is_ok());
        assert!(check_changeset(&schema, &row(r#", "version": "2""#), Sender::Server, to_pg_text, Raw::Kept).is_ok());
        // A watermark is a server's to give, and a device keeps it.
        let garbage = cs(json!(["id"]), json!([])).to_string().replace(r#""tables""#, r#""watermark": "garbage", "tables""#);
        let err = check_changeset(&schema, &garbage, Sender::Server, to_pg_text, Raw::Kept).unwrap_err();
        assert!(matches!(err, Error::InvalidWatermark(_)), "{err}");
        assert!(check_changeset(&schema, &garbage, Sender::Device, to_pg_text, Raw::Kept).is_ok());
    }

    #[test]
    fn a_key_is_refused_twice_however_it_came() {
        let moved = cs(
            json!(["id", "note"]),
            json!([{"op": "upsert", "base": "3", "moved_from": [5], "values": [1, "a"]},
                   {"op": "delete", "key": [5]}]),
        );
        assert!(check(moved).unwrap_err().to_string().contains("key [5] appears twice"));
        let twice = r#"{"format":1,"scope":"crm","origin":"c","tables":[{"name":"orders","columns":["id"],"rows":[{"op":"delete","op":"delete","key":[1]}]}]}"#;
        let err = check_changeset(&schema(), twice, Sender::Device, to_pg_text, Raw::Kept).unwrap_err().to_string();
        assert!(err.contains("duplicate field `op`"), "{err}");
        // A refused row's key counts too.
        let refused = cs(json!(["id", "note"]), json!([{"op": "upsert", "values": [1, null]}, {"op": "delete", "key": [1]}]));
        assert!(check(refused).unwrap_err().to_string().contains("key [1] appears twice"));
        // Another spelling is another key (as sent).
        let (n, rejected) = check(cs(json!(["id"]), json!([{"op": "delete", "key": [1]}, {"op": "delete", "key": [1.0]}]))).unwrap();
        assert_eq!((n, rejected.len()), (1, 1));
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
            (cs(json!(["id"]), json!([{"op": "delete", "key": [1], "respelled": null}])), "\"respelled\" is null"),
            (cs(json!(["id"]), json!([{"op": "delete", "key": [1], "extra": 1}])), "unknown field `extra`"),
            (cs(json!(["id"]), json!([{"key": [1]}])), "missing field `op`"),
            (cs(json!(["id"]), json!([{"op": "upsert", "values": [1], "moved_from": [1]}])), "moved from its own key"),
            (cs(json!(["id"]), json!([{"op": "delete", "key": [1, 2]}])), "2 key values"),
            (json!({"format": 1, "scope": "crm", "origin": "c"}), "missing field `tables`"),
            (json!({"format": 1, "scope": "crm", "origin": "c", "tables": [{"name": "orders", "rows": []}]}), "missing field `columns`"),
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
