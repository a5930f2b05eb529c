//! The changeset: the JSON document that carries row changes between the two
//! sides, in either direction.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};

pub const FORMAT: u32 = 1;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Changeset {
    pub format: u32,
    pub scope: String,
    /// The server's id for server changesets, the client id for uploads.
    pub origin: String,
    pub tables: Vec<TableChanges>,
    /// Pass this to the next `sync_select_changes` (server changesets only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark: Option<String>,
    /// More changes wait in the same pull: call again with `watermark`.
    #[serde(default)]
    pub has_more: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableChanges {
    pub name: String,
    /// Columns of `values`, in order; any subset of the table's synced
    /// columns that includes the primary key.
    pub columns: Vec<String>,
    pub rows: Vec<RowChange>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Upsert,
    Delete,
}

impl Op {
    /// As a changeset spells it, and as a stage's `op` column holds it.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Upsert => "upsert",
            Op::Delete => "delete",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RowChange {
    pub op: Op,
    /// The row's version on the side that produced the changeset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The server version a local change was made on; absent when the
    /// local side never saw the row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    /// The local change counter, for idempotent re-upload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<i64>,
    /// Upserts: the values of `columns`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<Value>>,
    /// Deletes: the primary key values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<Vec<Value>>,
    /// Uploads only: an upsert that changed the row's key carries the key
    /// it had (primary key order), and `base` is that row's version. The
    /// server applies it as one `UPDATE` of the key, so its cascades run,
    /// or not at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moved_from: Option<Vec<Value>>,
    /// Server deletes only, to a device that asked (`respellings`): the
    /// server still holds the key under another text of an equal value
    /// (`1.50` for `1.5`), so rows filtered `via` the deleted text stay.
    /// Kept as sent (`false` too): an upload carrying it at all is malformed.
    /// `null` is no boolean, so a changeset saying it is refused as well.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present_bool")]
    pub respelled: Option<bool>,
}

/// `respelled`, when present, must be a boolean: `null` is not read as
/// absent.
fn present_bool<'de, D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Option<bool>, D::Error> {
    match Option::<bool>::deserialize(deserializer)? {
        Some(value) => Ok(Some(value)),
        None => Err(serde::de::Error::custom("\"respelled\" is null; a server's delete says true or false, and an upload leaves it out")),
    }
}

impl RowChange {
    /// About how many bytes this row takes in changeset JSON (strings by
    /// their length): what batches are bounded by.
    pub fn approx_json_len(&self) -> usize {
        fn value_len(value: &Value) -> usize {
            match value {
                Value::String(s) => s.len() + 3,
                Value::Number(_) => 21,
                Value::Null | Value::Bool(_) => 6,
                other => other.to_string().len() + 1,
            }
        }
        let values = self.values.iter().chain(&self.key).chain(&self.moved_from).flatten();
        64 + values.map(value_len).sum::<usize>()
    }
}

impl Changeset {
    /// Parses changeset text, with errors that point at the problem.
    pub fn parse(text: &str) -> Result<Self> {
        let changeset: Changeset = serde_json::from_str(text).map_err(malformed)?;
        supported(changeset.format)?;
        Ok(changeset)
    }

    pub fn row_count(&self) -> usize {
        self.tables.iter().map(|t| t.rows.len()).sum()
    }
}

/// The changeset's `origin`, read from the start of its text: what the
/// server checks the caller against before it has the scope's schema to
/// read the rows with (`validate::check_changeset` then reads the whole
/// changeset, and refuses whatever is wrong with it). The server's writer,
/// the device's and jsonb put `origin` before `tables`, so the rows are not
/// read twice; anywhere else, they are skipped to find it.
pub fn origin(text: &str) -> Result<String> {
    struct Peek<'a>(&'a mut Option<String>);

    /// Stops the reading once `origin` is known.
    const FOUND: &str = "\u{0}origin found";

    impl<'de> serde::de::Visitor<'de> for Peek<'_> {
        type Value = ();

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a changeset object")
        }

        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> std::result::Result<(), A::Error> {
            while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                if key == "origin" {
                    *self.0 = Some(map.next_value()?);
                    return Err(serde::de::Error::custom(FOUND));
                }
                map.next_value::<serde::de::IgnoredAny>()?;
            }
            Ok(())
        }
    }

    let mut found = None;
    let read = serde::Deserializer::deserialize_map(&mut serde_json::Deserializer::from_str(text), Peek(&mut found));
    match (read, found) {
        (_, Some(origin)) => Ok(origin),
        (Err(error), None) => Err(malformed(error)),
        (Ok(()), None) => Err(Error::Malformed { what: "changeset", reason: "missing field `origin`".into() }),
    }
}

fn malformed(error: serde_json::Error) -> Error {
    Error::Malformed { what: "changeset", reason: error.to_string() }
}

/// Refuses a changeset of a format this build does not read.
pub fn supported(format: u32) -> Result<()> {
    match format {
        FORMAT => Ok(()),
        other => Err(Error::UnsupportedFormat(other)),
    }
}

/// Writes changeset JSON straight into a string, so a large batch is never
/// held twice (as values and as text).
pub struct ChangesetWriter {
    out: String,
    tables: usize,
    rows_in_table: usize,
    rows: usize,
}

/// The rows of a changeset's JSON text, counted without parsing it (a
/// batch can be many MB): each row object has the key `"op"`, and no other
/// key is spelled so. A quote inside a string value is always escaped, so
/// `"op"` followed by `:` is never inside a value; a column named `op`
/// appears in `columns` followed by `,` or `]`. memchr's SIMD search: the
/// gateway counts every batch it relays, and `str::match_indices` was a
/// tenth of its CPU.
pub fn count_rows(text: &str) -> usize {
    memchr::memmem::find_iter(text.as_bytes(), b"\"op\"")
        .filter(|at| text.as_bytes()[at + 4..].trim_ascii_start().first() == Some(&b':'))
        .count()
}

/// Where a server changeset leaves a pull: its watermark, and whether
/// more changes wait.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct Position {
    pub watermark: Option<String>,
    #[serde(default)]
    pub has_more: bool,
}

/// Reads a changeset's [`Position`] from its end, where the writer puts it
/// (`...],"watermark":"...","has_more":true}`), without reading the rows
/// (a pull reads it for each batch to ask for the next before storing this
/// one). `"watermark":` with its colon can only be that key: a quote inside
/// a value is escaped, and a column named so is followed by `,` or `]`.
/// Any other shape is read whole.
pub fn position(text: &str) -> Result<Position, serde_json::Error> {
    /// The writer's tail, exactly: both keys, nothing else.
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Tail {
        watermark: Option<String>,
        has_more: bool,
    }
    let tail = memchr::memmem::rfind(text.as_bytes(), b"\"watermark\":").map(|at| &text[at..]);
    if let Some(Ok(Tail { watermark, has_more })) = tail.map(|tail| serde_json::from_str::<Tail>(&format!("{{{tail}"))) {
        return Ok(Position { watermark, has_more });
    }
    serde_json::from_str(text)
}

impl ChangesetWriter {
    pub fn new(scope: &str, origin: &str) -> Self {
        Self::with_capacity(scope, origin, 4096)
    }

    /// A writer whose buffer starts at `bytes`: a batch sized up front is
    /// never copied while it grows.
    pub fn with_capacity(scope: &str, origin: &str, bytes: usize) -> Self {
        let mut out = String::with_capacity(bytes);
        out.push_str("{\"format\":1,\"scope\":");
        crate::types::push_json_string(&mut out, scope);
        out.push_str(",\"origin\":");
        crate::types::push_json_string(&mut out, origin);
        out.push_str(",\"tables\":[");
        ChangesetWriter { out, tables: 0, rows_in_table: 0, rows: 0 }
    }

    pub fn begin_table(&mut self, name: &str, columns: &[String]) {
        if self.tables > 0 {
            self.out.push_str("]},");
        }
        self.tables += 1;
        self.rows_in_table = 0;
        self.out.push_str("{\"name\":");
        crate::types::push_json_string(&mut self.out, name);
        self.out.push_str(",\"columns\":[");
        for (i, c) in columns.iter().enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            crate::types::push_json_string(&mut self.out, c);
        }
        self.out.push_str("],\"rows\":[");
    }

    /// Starts an upsert row; the caller writes the values (comma-separated
    /// JSON) into the returned buffer, then calls [`Self::end_row`].
    pub fn begin_upsert(&mut self, version: &str) -> &mut String {
        self.begin_row("upsert", version);
        self.out.push_str(",\"values\":[");
        &mut self.out
    }

    /// Starts a delete row (`respelled`: see [`RowChange::respelled`]); the
    /// caller writes the key values.
    pub fn begin_delete(&mut self, version: &str, respelled: bool) -> &mut String {
        self.begin_row("delete", version);
        if respelled {
            self.out.push_str(",\"respelled\":true");
        }
        self.out.push_str(",\"key\":[");
        &mut self.out
    }

    fn begin_row(&mut self, op: &str, version: &str) {
        if self.rows_in_table > 0 {
            self.out.push(',');
        }
        self.rows_in_table += 1;
        self.rows += 1;
        self.out.push_str("{\"op\":\"");
        self.out.push_str(op);
        self.out.push_str("\",\"version\":");
        crate::types::push_json_string(&mut self.out, version);
    }

    pub fn end_row(&mut self) {
        self.out.push_str("]}");
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.out.len()
    }

    pub fn is_empty(&self) -> bool {
        self.out.is_empty()
    }

    pub fn finish(mut self, watermark: &str, has_more: bool) -> String {
        if self.tables > 0 {
            self.out.push_str("]}");
        }
        self.out.push_str("],\"watermark\":");
        crate::types::push_json_string(&mut self.out, watermark);
        self.out.push_str(if has_more { ",\"has_more\":true}" } else { ",\"has_more\":false}" });
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_rows_size_counts_its_text() {
        let row = RowChange {
            op: Op::Upsert,
            version: None,
            base: None,
            seq: Some(1),
            values: Some(vec![json!(1), json!("x".repeat(1000)), Value::Null]),
            key: None,
            moved_from: Some(vec![json!(2)]),
            respelled: None,
        };
        assert_eq!(row.approx_json_len(), 64 + 21 + 1003 + 6 + 21);
        let error = crate::Error::RowTooLarge { table: "public.notes".into(), key: "[1]".into(), bytes: 600 << 20 };
        assert_eq!(error.sqlstate(), "54000");
        assert!(error
            .to_string()
            .starts_with("row [1] of public.notes is 600 MB as changeset JSON, more than Tandem moves in one message (512 MB)"));
    }

    #[test]
    fn the_origin_is_read_from_the_start() {
        let writer = ChangesetWriter::new("crm", "dev-1").finish("1:1:", false);
        assert_eq!(origin(&writer).unwrap(), "dev-1");
        // After the tables, and escaped: found all the same.
        let late = r#"{"format": 1, "scope": "crm", "tables": [{"name": "t", "columns": ["a"], "rows": [{"op": "delete", "key": ["origin"]}]}], "origin": "dev\u002d2"}"#;
        assert_eq!(origin(late).unwrap(), "dev-2");
        assert!(origin(r#"{"format": 1, "scope": "crm", "tables": []}"#).unwrap_err().to_string().contains("missing field `origin`"));
        assert!(origin("{\"format\": ").is_err());
        assert!(origin(r#"{"origin": 5}"#).is_err());
    }

    #[test]
    fn rows_are_counted_without_parsing() {
        let text = r#"{"format":1,"scope":"s","origin":"o","tables":[{"name":"t","columns":["op","x"],"rows":[
            {"op":"upsert","version":"1","values":["{\"op\": 1}",2]}, {"op" : "delete","version":"2","key":["op"]}]}],
            "watermark":"1:2:","has_more":false}"#;
        assert_eq!(count_rows(text), 2);
        assert_eq!(count_rows(r#"{"format":1,"tables":[]}"#), 0);
        let expected = Position { watermark: Some("1:2:".into()), has_more: false };
        assert_eq!(position(text).unwrap(), expected);
    }

    #[test]
    fn writer_output_parses_as_a_changeset() {
        let mut w = ChangesetWriter::new("crm", "srv");
        w.begin_table("public.customers", &["id".into(), "name".into()]);
        w.begin_upsert("812").push_str("7,\"Ada\"");
        w.end_row();
        w.begin_delete("815", false).push('9');
        w.end_row();
        w.begin_table("public.empty", &["id".into()]);
        let text = w.finish("900:905:", true);
        let cs = Changeset::parse(&text).unwrap();
        assert_eq!(cs.row_count(), 2);
        assert!(cs.has_more);
        assert_eq!(cs.tables[0].rows[0].values, Some(vec![json!(7), json!("Ada")]));
        assert_eq!(cs.tables[0].rows[1].key, Some(vec![json!(9)]));
        assert_eq!(cs.tables[1].rows, vec![]);
        let empty = ChangesetWriter::new("crm", "srv").finish("1:1:", false);
        assert_eq!(Changeset::parse(&empty).unwrap().tables, vec![]);
    }

    #[test]
    fn malformed_changesets_say_what_is_wrong() {
        let cases = [
            ("{", "EOF"),
            (r#"{"format":1,"scope":"crm","origin":"x"}"#, "missing field `tables`"),
            (r#"{"format":2,"scope":"crm","origin":"x","tables":[]}"#, "format 2"),
            (r#"{"format":1,"scope":"crm","origin":"x","tables":[],"surprise":1}"#, "unknown field `surprise`"),
            (
                r#"{"format":1,"scope":"crm","origin":"x","tables":[{"name":"t","columns":[],"rows":[{"op":"merge"}]}]}"#,
                "unknown variant `merge`",
            ),
        ];
        for (text, needle) in cases {
            let err = Changeset::parse(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn the_position_is_read_from_the_end_whatever_the_rows_hold() {
        let mut writer = ChangesetWriter::new("s", "o");
        writer.begin_table("t", &["watermark".to_string(), "v".to_string()]);
        let row = writer.begin_upsert("7");
        row.push_str(r#"["\"watermark\":\"9:9:\",\"has_more\":true}", 1]"#);
        writer.end_row();
        let text = writer.finish("3:4:5", true);
        let found = position(&text).unwrap();
        assert_eq!(found, Position { watermark: Some("3:4:5".into()), has_more: true });
        // Not the writer's shape (keys reordered, spaces): read whole.
        let other = r#"{"has_more": true, "watermark": "5:6:", "format": 1, "scope": "s", "origin": "o", "tables": []}"#;
        assert_eq!(position(other).unwrap(), Position { watermark: Some("5:6:".into()), has_more: true });
        assert!(position("{not json").is_err());
    }
}
