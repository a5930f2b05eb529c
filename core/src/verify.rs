//! `sync_verify`: proving that a file holds exactly its partition, and
//! finding the rows where it does not, moving far less than the rows.
//!
//! Both sides hash every row in its changeset form (the JSON values a pull
//! sends and an upload reads from the file), so they hash the same thing
//! whatever text each database keeps. A row's key hash puts it in one of
//! `buckets` (a power of two); a bucket's digest is the wrapping sum of its
//! rows' 128-bit hashes, so the order rows are read in does not matter.
//! Buckets are slices of the key's *hash*, not ranges of key values:
//! SQLite and PostgreSQL order text differently, so a range of keys would
//! not hold the same rows on both sides.
//!
//! The exchange has three steps, each one call of the server's
//! `sync_verify`: `buckets` (every bucket's digest), `rows` (each row's
//! hash in the buckets that differ) and `fetch` (the rows to repair).
//! Rows that changed on either side since the file's watermark are left
//! out of both hashes, named in the answer as `pending`: they are not
//! drift, they are the next sync's work.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use xxhash_rust::xxh3::{xxh3_128, xxh3_64};

use crate::changeset::Changeset;
use crate::error::{Error, Result};
use crate::options::Params;
use crate::schema::TableSchema;
use crate::types::LogicalType;

/// About how many rows a bucket holds: the rows step then moves one hash
/// per row for each bucket that differs.
const ROWS_PER_BUCKET: u64 = 256;

/// The most buckets a table gets (4096 digests are about 140 KB).
pub const MAX_BUCKETS: u32 = 4096;

/// The bucket count when a call names none (a file names the count for
/// its own row count, [`bucket_count`]).
pub const DEFAULT_BUCKETS: u32 = 1024;

/// The most pending keys (changed since the watermark) an answer lists:
/// past it the file is too far behind to verify, and should sync first.
pub const MAX_PENDING: usize = 100_000;

/// The bucket count for a table of `rows` rows: a power of two.
pub fn bucket_count(rows: u64) -> u32 {
    let wanted = rows.div_ceil(ROWS_PER_BUCKET).clamp(1, u64::from(MAX_BUCKETS));
    wanted.next_power_of_two() as u32
}

/// A key as text, the identity both sides compare keys by.
pub fn key_text(key: &[Value]) -> String {
    Value::Array(key.to_vec()).to_string()
}

/// One row's hashes: where it goes (`key`) and what it holds (`row`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RowDigest {
    pub key: u64,
    pub row: u128,
}

impl RowDigest {
    /// Hashes a row given as changeset values in schema column order.
    pub fn of(table: &TableSchema, values: &[Value]) -> RowDigest {
        let mut key = Vec::with_capacity(32);
        for k in table.key_indexes() {
            push_canonical(&mut key, table.columns[k].ty, &values[k]);
        }
        let mut row = Vec::with_capacity(64 + 16 * values.len());
        for (column, value) in table.columns.iter().zip(values) {
            push_canonical(&mut row, column.ty, value);
        }
        RowDigest { key: xxh3_64(&key), row: xxh3_128(&row) }
    }

    /// The bucket this row falls in, of `buckets` (a power of two).
    pub fn bucket(&self, buckets: u32) -> u32 {
        (self.key & u64::from(buckets.max(1) - 1)) as u32
    }

    pub fn row_hex(&self) -> String {
        format!("{:032x}", self.row)
    }
}

/// Appends a value's canonical bytes. Floats are hashed as the number they
/// are (a pull writes `1e+20` where the file reads back `1e20`), with `-0`
/// as `0`: SQLite cannot keep a negative zero (see design.md, Types), so it
/// is not drift. Everything else is hashed as its changeset JSON text.
fn push_canonical(out: &mut Vec<u8>, ty: LogicalType, value: &Value) {
    let float = match (ty, value) {
        (LogicalType::Float4 | LogicalType::Float8, Value::Number(n)) => n.as_f64(),
        (LogicalType::Float4 | LogicalType::Float8, Value::String(s)) => match s.as_str() {
            "Infinity" => Some(f64::INFINITY),
            "-Infinity" => Some(f64::NEG_INFINITY),
            "-0" => Some(0.0),
            _ => None,
        },
        _ => None,
    };
    match float {
        Some(f) => {
            let f = if f == 0.0 { 0.0 } else { f };
            out.push(b'f');
            out.extend_from_slice(&f.to_bits().to_le_bytes());
        }
        // serde_json writes no raw control character in JSON text, so the
        // separator cannot occur inside a value.
        None => out.extend_from_slice(value.to_string().as_bytes()),
    }
    out.push(0x1e);
}

/// A table's bucket digests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Buckets {
    sums: Vec<u128>,
    pub rows: u64,
}

impl Buckets {
    pub fn new(buckets: u32) -> Buckets {
        Buckets { sums: vec![0; buckets.max(1) as usize], rows: 0 }
    }

    pub fn count(&self) -> u32 {
        self.sums.len() as u32
    }

    pub fn add(&mut self, digest: &RowDigest) {
        let bucket = digest.bucket(self.count()) as usize;
        self.sums[bucket] = self.sums[bucket].wrapping_add(digest.row);
        self.rows += 1;
    }

    /// The digests as the answer carries them (hex, `0` for an empty one).
    pub fn encode(&self) -> Vec<String> {
        self.sums.iter().map(|s| format!("{s:x}")).collect()
    }

    /// The buckets whose digest differs from `theirs` (as [`Self::encode`]
    /// wrote them); a malformed list is an error.
    pub fn differing(&self, theirs: &[String]) -> Result<Vec<u32>> {
        if theirs.len() != self.sums.len() {
            return Err(malformed(format!("{} bucket digests where {} were asked for", theirs.len(), self.sums.len())));
        }
        let mut out = Vec::new();
        for (i, (ours, text)) in self.sums.iter().zip(theirs).enumerate() {
            let theirs = u128::from_str_radix(text, 16).map_err(|_| malformed(format!("bucket digest {text:?} is not hex")))?;
            if *ours != theirs {
                out.push(i as u32);
            }
        }
        Ok(out)
    }
}

fn malformed(reason: String) -> Error {
    Error::Malformed { what: "verify answer", reason }
}

/// Which part of the exchange a call of the server's `sync_verify` is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Step {
    /// Every bucket's digest, per table.
    #[default]
    Buckets,
    /// The hash of every row in the buckets asked for.
    Rows,
    /// The rows asked for by key, as a server changeset.
    Fetch,
}

/// Options of the server's `sync_verify(scope, options)`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The device's token, as for its other calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<Params>,
    /// The file's watermark (complete): rows the server changed after it
    /// are pending, not compared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    #[serde(default)]
    pub step: Step,
    /// Per table: the file's own pending keys, and what the step asks for.
    /// For `buckets`, no entry means every table the file downloads.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<TableAsk>,
}

impl VerifyOptions {
    pub fn parse(value: Option<&Value>) -> Result<Self> {
        let options: VerifyOptions = crate::options::parse_options(value)?;
        if options.step != Step::Buckets && options.tables.iter().any(|t| t.buckets.is_none()) {
            return Err(Error::InvalidOptions(
                "the rows and fetch steps name each table's \"buckets\" count, as the buckets step used".into(),
            ));
        }
        if let Some(n) = options.tables.iter().filter_map(|t| t.buckets).find(|n| !n.is_power_of_two() || *n > MAX_BUCKETS) {
            return Err(Error::InvalidOptions(format!("buckets is {n}: a power of two, at most {MAX_BUCKETS}")));
        }
        Ok(options)
    }
}

/// One table of a verify call.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableAsk {
    pub name: String,
    /// Keys with an unsent change in the file: left out of both sides.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<Vec<Value>>,
    /// How many buckets (a power of two): the file picks it for its row
    /// count; the same in every step (default 1024).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buckets: Option<u32>,
    /// Rows step: the buckets whose rows to hash.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub only: Vec<u32>,
    /// Fetch step: the keys of the rows to send.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<Vec<Value>>,
}

impl TableAsk {
    /// Checks the keys and buckets asked for against table `table`: each
    /// key of its primary key's length and types, each bucket within the
    /// count. An error names what is wrong.
    pub fn check(&self, table: &TableSchema) -> Result<()> {
        let count = self.buckets.unwrap_or(DEFAULT_BUCKETS);
        if let Some(bucket) = self.only.iter().find(|&&b| b >= count) {
            return Err(Error::InvalidOptions(format!("bucket {bucket} of {}: there are {count} (0 to {})", self.name, count - 1)));
        }
        let columns = table.key_columns();
        for key in self.exclude.iter().chain(&self.keys) {
            if key.len() != columns.len() {
                return Err(Error::InvalidOptions(format!(
                    "key {} of {}: the primary key has {} column(s)",
                    key_text(key),
                    self.name,
                    columns.len()
                )));
            }
            for (column, value) in columns.iter().zip(key) {
                if value.is_null() {
                    return Err(Error::InvalidOptions(format!("key {} of {}: a key holds no NULL", key_text(key), self.name)));
                }
                crate::types::json_to_pg_text(column.ty, value).map_err(|reason| {
                    Error::InvalidOptions(format!("key {} of {}, column {}: {reason}", key_text(key), self.name, column.name))
                })?;
            }
        }
        Ok(())
    }
}

/// The server's answer to one step.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyAnswer {
    pub step: Step,
    pub tables: Vec<TableAnswer>,
    /// Fetch step: the rows asked for that the server holds as of the
    /// watermark.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changeset: Option<Changeset>,
}

/// One table of an answer.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableAnswer {
    pub name: String,
    /// Rows hashed (pending and excluded ones left out).
    pub rows: u64,
    pub buckets: u32,
    /// Buckets step: each bucket's digest.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sums: Vec<String>,
    /// Rows step: `[key, hash]` of each row in the buckets asked for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub digests: Vec<(Vec<Value>, String)>,
    /// Keys the server changed after the watermark (or deleted, or moved
    /// out of the partition): the next pull's, not compared.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<Vec<Value>>,
}

/// What a verify found in one table, as the file reports it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TableReport {
    pub table: String,
    /// Rows compared (on the server's side).
    pub rows_checked: u64,
    pub buckets: u32,
    /// Buckets whose digests differed.
    pub ranges_differ: u64,
    /// Rows the server holds and the file lacks.
    pub missing: Vec<Value>,
    /// Rows the file holds and the server does not.
    pub extra: Vec<Value>,
    /// Rows both hold, with other values.
    pub different: Vec<Value>,
    /// Rows left out: changed since the watermark on either side.
    pub pending: u64,
}

impl TableReport {
    pub fn differs(&self) -> bool {
        !(self.missing.is_empty() && self.extra.is_empty() && self.different.is_empty())
    }
}

/// Compares a table's row hashes, keyed by key text: the keys the server
/// holds and the file lacks, the file holds and the server lacks, and both
/// hold with other values.
pub fn compare_rows(
    server: &std::collections::HashMap<String, (Vec<Value>, String)>,
    local: &std::collections::HashMap<String, (Vec<Value>, String)>,
    report: &mut TableReport,
) {
    for (text, (key, hash)) in server {
        match local.get(text) {
            None => report.missing.push(Value::Array(key.clone())),
            Some((_, ours)) if ours != hash => report.different.push(Value::Array(key.clone())),
            Some(_) => {}
        }
    }
    for (text, (key, _)) in local {
        if !server.contains_key(text) {
            report.extra.push(Value::Array(key.clone()));
        }
    }
    let by_text = |v: &Value| v.to_string();
    report.missing.sort_by_key(by_text);
    report.different.sort_by_key(by_text);
    report.extra.sort_by_key(by_text);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::Column;
    use serde_json::json;

    fn table() -> TableSchema {
        serde_json::from_value(json!({
            "name": "public.t", "primary_key": ["id"],
            "columns": [{"name": "id", "type": "int8", "pg_type": "int8", "nullable": false},
                        {"name": "x", "type": "float8", "pg_type": "float8", "nullable": true},
                        {"name": "s", "type": "text", "pg_type": "text", "nullable": true}]
        }))
        .expect("a table schema")
    }

    #[test]
    fn floats_hash_as_numbers_and_negative_zero_as_zero() {
        let t = table();
        let server: Vec<Value> = serde_json::from_str(r#"[1, 1e+20, "a"]"#).unwrap();
        let local = vec![json!(1), json!(1e20), json!("a")];
        assert_eq!(RowDigest::of(&t, &server), RowDigest::of(&t, &local));
        assert_eq!(RowDigest::of(&t, &[json!(1), json!("-0"), json!("a")]), RowDigest::of(&t, &[json!(1), json!(0.0), json!("a")]));
        assert_ne!(RowDigest::of(&t, &[json!(1), json!(0.5), json!("a")]), RowDigest::of(&t, &[json!(1), json!(0.25), json!("a")]));
    }

    #[test]
    fn values_cannot_run_into_each_other() {
        let t = table();
        let a = RowDigest::of(&t, &[json!(1), Value::Null, json!("ab")]);
        let b = RowDigest::of(&t, &[json!(1), Value::Null, json!("a\u{1e}b")]);
        assert_ne!(a.row, b.row);
        // A text "1.5" is not the number 1.5.
        let t2 = TableSchema { columns: vec![t.columns[0].clone(), Column { ty: LogicalType::Text, ..t.columns[1].clone() }], ..t.clone() };
        assert_ne!(RowDigest::of(&t2, &[json!(1), json!("1.5")]).row, RowDigest::of(&t, &[json!(1), json!(1.5)]).row);
    }

    #[test]
    fn bucket_digests_ignore_order_and_find_the_bucket_that_differs() {
        let t = table();
        let rows: Vec<Vec<Value>> = (0..1000).map(|i| vec![json!(i), json!(i as f64 / 3.0), json!(format!("r{i}"))]).collect();
        let n = bucket_count(rows.len() as u64);
        assert_eq!(n, 4);
        let mut forward = Buckets::new(n);
        rows.iter().for_each(|r| forward.add(&RowDigest::of(&t, r)));
        let mut backward = Buckets::new(n);
        rows.iter().rev().for_each(|r| backward.add(&RowDigest::of(&t, r)));
        assert_eq!(forward.differing(&backward.encode()).unwrap(), Vec::<u32>::new());
        let mut changed = Buckets::new(n);
        let mut edited = rows.clone();
        edited[500][2] = json!("changed");
        edited.iter().for_each(|r| changed.add(&RowDigest::of(&t, r)));
        let bucket = RowDigest::of(&t, &rows[500]).bucket(n);
        assert_eq!(forward.differing(&changed.encode()).unwrap(), vec![bucket]);
        assert!(forward.differing(&vec!["zz".to_string(); 4]).is_err());
        assert!(forward.differing(&["0".to_string()]).is_err());
    }

    #[test]
    fn bucket_counts_are_powers_of_two_within_bounds() {
        assert_eq!(bucket_count(0), 1);
        assert_eq!(bucket_count(256), 1);
        assert_eq!(bucket_count(257), 2);
        assert_eq!(bucket_count(1_000_000), 4096);
        assert_eq!(bucket_count(u64::MAX), MAX_BUCKETS);
    }
}
