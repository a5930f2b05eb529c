//! The value model: which logical type each column has, how its values look
//! in a changeset, and how they are stored on each side. Every conversion
//! lives here so that PostgreSQL -> JSON -> SQLite -> JSON -> PostgreSQL gives
//! back the same value.
//!
//! PostgreSQL values are read and written as text (the select functions run
//! with DateStyle ISO, TimeZone UTC, extra_float_digits 1, bytea_output hex),
//! so the server side needs no per-type datum code.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::json::Json;

/// Column types Tandem distinguishes. Anything else (arrays, enums, ranges,
/// intervals, ...) travels as `other`: PostgreSQL's text form, cast back with
/// the column's declared type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogicalType {
    Int2,
    Int4,
    Int8,
    Bool,
    Float4,
    Float8,
    Numeric,
    Text,
    Uuid,
    Date,
    Time,
    Timestamp,
    Timestamptz,
    Bytea,
    Json,
    Jsonb,
    Other,
}

impl LogicalType {
    /// Maps PostgreSQL's `pg_type.typname` of a column's base type.
    pub fn from_pg_typname(typname: &str) -> Self {
        match typname {
            "int2" => LogicalType::Int2,
            "int4" => LogicalType::Int4,
            "int8" => LogicalType::Int8,
            "bool" => LogicalType::Bool,
            "float4" => LogicalType::Float4,
            "float8" => LogicalType::Float8,
            "numeric" => LogicalType::Numeric,
            "text" | "varchar" | "bpchar" | "name" | "citext" => LogicalType::Text,
            "uuid" => LogicalType::Uuid,
            "date" => LogicalType::Date,
            "time" => LogicalType::Time,
            "timestamp" => LogicalType::Timestamp,
            "timestamptz" => LogicalType::Timestamptz,
            "bytea" => LogicalType::Bytea,
            "json" => LogicalType::Json,
            "jsonb" => LogicalType::Jsonb,
            _ => LogicalType::Other,
        }
    }

    /// Whether a key of this type can change its text without changing its
    /// value as PostgreSQL compares it: numeric's scale (`1.5`, `1.50`),
    /// text's case under citext or a nondeterministic collation, jsonb's
    /// numbers, and whatever `other` holds. A device compares keys as text,
    /// so such a change must tell it to drop the old text. Floats are not:
    /// `-0` and `0` print apart, but a device stores them as REAL, which
    /// holds them equal as well.
    pub fn key_may_be_respelled(self) -> bool {
        matches!(self, LogicalType::Numeric | LogicalType::Text | LogicalType::Jsonb | LogicalType::Other)
    }

    /// Whether a device may hold a key value of this type in other text
    /// than the server's for the same value (an upper-case uuid, another
    /// zone, another scale, another case under citext): only integers,
    /// floats, booleans and bytes compare on the device as on the server.
    pub fn key_may_be_spelled_apart(self) -> bool {
        !matches!(
            self,
            LogicalType::Int2
                | LogicalType::Int4
                | LogicalType::Int8
                | LogicalType::Bool
                | LogicalType::Float4
                | LogicalType::Float8
                | LogicalType::Bytea
        )
    }

    /// The declared column type in SQLite. TEXT (not NUMERIC) for numeric, so
    /// SQLite's type affinity never turns exact digits into a float.
    pub fn sqlite_decl(self) -> &'static str {
        match self {
            LogicalType::Int2 | LogicalType::Int4 | LogicalType::Int8 | LogicalType::Bool => "INTEGER",
            LogicalType::Float4 | LogicalType::Float8 => "REAL",
            LogicalType::Bytea => "BLOB",
            _ => "TEXT",
        }
    }
}

/// A value as SQLite stores it (its five storage classes), free of rusqlite.
#[derive(Clone, Debug, PartialEq)]
pub enum LocalValue {
    Null,
    Integer(i64),
    Real(f64),
    Text(String),
    /// Text whose bytes are not UTF-8 (SQLite stores what it is given).
    BadText(Vec<u8>),
    Blob(Vec<u8>),
}

impl LocalValue {
    /// What the value is, for a message: `a blob`, `text "abc"`.
    fn describe(&self) -> String {
        match self {
            LocalValue::Null => "NULL".into(),
            LocalValue::Integer(i) => format!("the integer {i}"),
            LocalValue::Real(f) => format!("the real {f}"),
            LocalValue::Text(s) => format!("the text {}", crate::error::shorten(&Value::String(s.clone()).to_string(), 40)),
            LocalValue::BadText(_) => "text that is not valid UTF-8".into(),
            LocalValue::Blob(b) => format!("a blob of {} bytes", b.len()),
        }
    }
}

/// Appends the changeset JSON for a PostgreSQL value given in text form
/// (`None` is SQL NULL).
pub fn write_pg_text_as_json(out: &mut String, ty: LogicalType, text: Option<&str>) {
    let Some(text) = text else {
        out.push_str("null");
        return;
    };
    match ty {
        LogicalType::Int2 | LogicalType::Int4 | LogicalType::Int8 => out.push_str(text),
        LogicalType::Bool => out.push_str(if text == "t" || text == "true" { "true" } else { "false" }),
        LogicalType::Float4 | LogicalType::Float8 => match text {
            // jsonb stores numbers as numeric, which has no negative zero.
            "NaN" | "Infinity" | "-Infinity" | "-0" => push_json_string(out, text),
            _ => out.push_str(text),
        },
        LogicalType::Timestamp => push_iso_timestamp(out, text, false),
        LogicalType::Timestamptz => push_iso_timestamp(out, text, true),
        LogicalType::Bytea => {
            // Sync calls pin bytea_output = hex (extension/src/spi.rs).
            let bytes = decode_pg_hex(text).expect("PostgreSQL prints bytea as \\x hex while Tandem reads it");
            push_json_string(out, &BASE64.encode(bytes));
        }
        _ => push_json_string(out, text),
    }
}

/// Same as [`write_pg_text_as_json`], as a `serde_json::Value`.
pub fn pg_text_to_json(ty: LogicalType, text: Option<&str>) -> Value {
    let mut out = String::new();
    write_pg_text_as_json(&mut out, ty, text);
    serde_json::from_str(&out).unwrap_or(Value::Null)
}

/// Checks a changeset value against its column type and gives the text that
/// PostgreSQL's input function for the column's type reads (`None` for NULL).
/// The error says what was expected.
pub fn json_to_pg_text(ty: LogicalType, value: &Value) -> Result<Option<String>, String> {
    to_pg_text(ty, &Json::of(value))
}

/// [`json_to_pg_text`] of a value as the changeset's parser hands it over.
pub fn to_pg_text(ty: LogicalType, value: &Json<'_>) -> Result<Option<String>, String> {
    if value.is_null() {
        return Ok(None);
    }
    let text = match ty {
        LogicalType::Int2 | LogicalType::Int4 | LogicalType::Int8 => integer(ty, value)?.to_string(),
        LogicalType::Bool => match value {
            Json::Bool(b) => if *b { "true" } else { "false" }.to_string(),
            _ => return Err(expected("true or false", value)),
        },
        LogicalType::Float4 | LogicalType::Float8 => float_text(value)?,
        LogicalType::Numeric => numeric_text(value)?,
        LogicalType::Bytea => format!("\\x{}", encode_hex(&bytea(value)?)),
        _ => checked_string(ty, value)?.to_string(),
    };
    Ok(Some(text))
}

/// Checks a changeset value and gives what SQLite stores for it.
pub fn json_to_local(ty: LogicalType, value: &Value) -> Result<LocalValue, String> {
    to_local(ty, &Json::of(value))
}

/// [`json_to_local`] of a value as the changeset's parser hands it over.
pub fn to_local(ty: LogicalType, value: &Json<'_>) -> Result<LocalValue, String> {
    if value.is_null() {
        return Ok(LocalValue::Null);
    }
    Ok(match ty {
        LogicalType::Int2 | LogicalType::Int4 | LogicalType::Int8 => LocalValue::Integer(integer(ty, value)?),
        LogicalType::Bool => match value {
            Json::Bool(b) => LocalValue::Integer(i64::from(*b)),
            _ => return Err(expected("true or false", value)),
        },
        LogicalType::Float4 | LogicalType::Float8 => match value {
            Json::Number(n) => {
                let f = n.as_f64().ok_or_else(|| expected("a number", value))?;
                // The server's float4 refuses what a REAL would hold.
                let single = f as f32;
                if ty == LogicalType::Float4 && (single.is_infinite() || (single == 0.0 && f != 0.0)) {
                    return Err(expected("a number within float4's range", value));
                }
                LocalValue::Real(f)
            }
            Json::Str(s) if s == "Infinity" => LocalValue::Real(f64::INFINITY),
            Json::Str(s) if s == "-Infinity" => LocalValue::Real(f64::NEG_INFINITY),
            // SQLite turns a NaN REAL into NULL, so NaN is kept as text.
            Json::Str(s) if s == "NaN" => LocalValue::Text("NaN".into()),
            Json::Str(s) if s == "-0" => LocalValue::Real(-0.0),
            _ => return Err(expected(FLOAT_EXPECTED, value)),
        },
        LogicalType::Numeric => LocalValue::Text(numeric_text(value)?),
        LogicalType::Bytea => LocalValue::Blob(bytea(value)?),
        _ => LocalValue::Text(checked_string(ty, value)?.to_string()),
    })
}

/// The changeset JSON for a value read from SQLite. SQLite keeps whatever
/// a program writes, in any column: a value of a storage class the column's
/// type does not take (a blob in a text column, text in an integer or
/// bytea column, text that is not UTF-8) is refused with the reason, never
/// converted into a form the file does not hold.
pub fn local_to_json(ty: LogicalType, value: &LocalValue) -> Result<Value, String> {
    use LogicalType as T;
    let refused = |what: &str| Err(format!("holds {}; {what}", value.describe()));
    match (ty, value) {
        (_, LocalValue::Null) => Ok(Value::Null),
        (_, LocalValue::BadText(_)) => refused("store text as UTF-8"),
        (T::Int2 | T::Int4 | T::Int8, LocalValue::Integer(i)) => Ok(Value::from(*i)),
        (T::Int2 | T::Int4 | T::Int8, _) => refused("the column takes integers"),
        (T::Bool, LocalValue::Integer(0)) => Ok(Value::Bool(false)),
        (T::Bool, LocalValue::Integer(1)) => Ok(Value::Bool(true)),
        (T::Bool, _) => refused("the column takes 0 or 1"),
        (T::Float4 | T::Float8, LocalValue::Real(f)) => Ok(float_json(*f)),
        (T::Float4 | T::Float8, LocalValue::Integer(i)) => Ok(float_json(*i as f64)),
        // SQLite turns a NaN REAL into NULL, so NaN is kept as text.
        (T::Float4 | T::Float8, LocalValue::Text(s)) if s == "NaN" => Ok(Value::String(s.clone())),
        (T::Float4 | T::Float8, _) => refused("the column takes numbers"),
        (T::Numeric, LocalValue::Text(s)) => Ok(Value::String(s.clone())),
        (T::Numeric, LocalValue::Integer(i)) => Ok(Value::String(i.to_string())),
        (T::Numeric, LocalValue::Real(f)) => Ok(Value::String(f.to_string())),
        (T::Numeric, _) => refused("the column takes a decimal number"),
        (T::Bytea, LocalValue::Blob(b)) => Ok(Value::String(BASE64.encode(b))),
        (T::Bytea, _) => refused("the column takes blobs"),
        (_, LocalValue::Text(s)) => Ok(Value::String(s.clone())),
        (_, _) => refused("the column takes text"),
    }
}

/// A local value as JSON to name it (a key in a message or a log, a row
/// kept in `tandem_rejected`), whatever its storage class: never sent as
/// a value (see [`local_to_json`]).
pub fn describe_local(ty: LogicalType, value: &LocalValue) -> Value {
    match (local_to_json(ty, value), value) {
        (Ok(json), _) => json,
        (Err(_), LocalValue::Integer(i)) => Value::from(*i),
        (Err(_), LocalValue::Real(f)) => float_json(*f),
        (Err(_), LocalValue::Text(s)) => Value::String(s.clone()),
        (Err(_), LocalValue::BadText(b)) => Value::String(String::from_utf8_lossy(b).into_owned()),
        (Err(_), LocalValue::Blob(b)) => Value::String(BASE64.encode(b)),
        (Err(_), LocalValue::Null) => Value::Null,
    }
}

const FLOAT_EXPECTED: &str = "a number, \"NaN\", \"Infinity\", \"-Infinity\" or \"-0\"";

fn float_json(f: f64) -> Value {
    if f == 0.0 && f.is_sign_negative() {
        Value::String("-0".into())
    } else if f.is_nan() {
        Value::String("NaN".into())
    } else if f == f64::INFINITY {
        Value::String("Infinity".into())
    } else if f == f64::NEG_INFINITY {
        Value::String("-Infinity".into())
    } else {
        serde_json::Number::from_f64(f).map(Value::Number).unwrap_or(Value::Null)
    }
}

fn value_as_i64(value: &Json<'_>) -> Option<i64> {
    match value {
        Json::Number(n) => n.as_i64(),
        _ => None,
    }
}

fn expected(what: &str, value: &Json<'_>) -> String {
    format!("expected {what}, got {}", crate::error::shorten(&value.to_string(), 60))
}

fn integer(ty: LogicalType, value: &Json<'_>) -> Result<i64, String> {
    let (what, min, max) = match ty {
        LogicalType::Int2 => ("an integer from -32768 to 32767", i16::MIN as i64, i16::MAX as i64),
        LogicalType::Int4 => ("a 32-bit integer", i32::MIN as i64, i32::MAX as i64),
        _ => ("a 64-bit integer", i64::MIN, i64::MAX),
    };
    match value_as_i64(value) {
        Some(i) if (min..=max).contains(&i) => Ok(i),
        // `1e2` and `1.0` read as doubles: said so, rather than shown as
        // a value out of range.
        None if matches!(value, Json::Number(n) if n.is_f64()) => Err(expected(&format!("{what} written as a JSON integer"), value)),
        _ => Err(expected(what, value)),
    }
}

fn float_text(value: &Json<'_>) -> Result<String, String> {
    match value {
        Json::Number(n) if n.as_f64().is_some() => Ok(n.to_string()),
        Json::Str(s) if matches!(s.as_ref(), "NaN" | "Infinity" | "-Infinity" | "-0") => Ok(s.to_string()),
        _ => Err(expected(FLOAT_EXPECTED, value)),
    }
}

/// Numeric travels as a string so every digit survives; a JSON integer is
/// accepted too, a JSON fraction is not (it may already have lost digits).
fn numeric_text(value: &Json<'_>) -> Result<String, String> {
    match value {
        Json::Str(s) if is_decimal(s) || matches!(s.as_ref(), "NaN" | "Infinity" | "-Infinity") => Ok(s.to_string()),
        Json::Number(n) if n.is_i64() || n.is_u64() => Ok(n.to_string()),
        _ => Err(expected("a decimal number in a string, like \"12.50\"", value)),
    }
}

fn bytea(value: &Json<'_>) -> Result<Vec<u8>, String> {
    match value {
        Json::Str(s) => BASE64.decode(s.as_bytes()).map_err(|_| expected("base64 bytes", value)),
        _ => Err(expected("base64 bytes in a string", value)),
    }
}

fn checked_string<'v>(ty: LogicalType, value: &'v Json<'_>) -> Result<&'v str, String> {
    let Json::Str(s) = value else {
        let what = match ty {
            LogicalType::Json | LogicalType::Jsonb => "a string holding JSON text",
            _ => "a string",
        };
        return Err(expected(what, value));
    };
    let ok = match ty {
        LogicalType::Uuid => is_uuid(s),
        LogicalType::Date => is_date(s),
        LogicalType::Time => is_time(s),
        LogicalType::Timestamp | LogicalType::Timestamptz => is_timestamp(s),
        LogicalType::Json | LogicalType::Jsonb => serde_json::from_str::<serde::de::IgnoredAny>(s).is_ok(),
        _ => !s.contains('\0'),
    };
    let timed = matches!(ty, LogicalType::Time | LogicalType::Timestamp | LogicalType::Timestamptz);
    if ok && timed && finer_than_microseconds(s) {
        return Err(expected(
            "at most six decimal places of seconds (PostgreSQL keeps microseconds, and would round a finer digit)",
            value,
        ));
    }
    if ok {
        Ok(s.as_ref())
    } else {
        let dated = matches!(ty, LogicalType::Date | LogicalType::Timestamp | LogicalType::Timestamptz);
        if dated && is_missing_day(s) {
            return Err(expected("a day its month has (February has 29 days only in leap years)", value));
        }
        let what = match ty {
            LogicalType::Uuid => "a UUID like \"0b7e1f7a-5d1c-4b2e-9a55-6f1f0c2d9e11\"",
            LogicalType::Date => "an ISO date like \"2024-05-01\"",
            LogicalType::Time => "an ISO time like \"13:45:00.25\"",
            LogicalType::Timestamp => "an ISO timestamp like \"2024-05-01T13:45:00.25\"",
            LogicalType::Timestamptz => "an ISO timestamp like \"2024-05-01T13:45:00.25Z\"",
            LogicalType::Json | LogicalType::Jsonb => "a string holding valid JSON text",
            _ => "text without NUL characters",
        };
        Err(expected(what, value))
    }
}

/// `2024-05-01 13:45:00.25+00` (PostgreSQL ISO output in UTC) becomes
/// `2024-05-01T13:45:00.25Z`; infinities pass through.
/// Appends PostgreSQL's ISO timestamp text as a JSON string in ISO-8601
/// form: `T` between date and time, `Z` for UTC, an era suffix kept
/// (`2024-05-01 13:45:00+00` -> `"2024-05-01T13:45:00Z"`). A pull writes one
/// per row, so it writes in place. Timestamp text has nothing to escape.
fn push_iso_timestamp(out: &mut String, text: &str, utc: bool) {
    let (body, era) = match text.strip_suffix(" BC") {
        Some(body) => (body, " BC"),
        None => (text, ""),
    };
    let (body, zulu) = match body.strip_suffix("+00") {
        Some(stripped) if utc => (stripped, true),
        _ => (body, false),
    };
    out.push('"');
    match body.find(' ') {
        Some(space) => {
            out.push_str(&body[..space]);
            out.push('T');
            out.push_str(&body[space + 1..]);
        }
        None => out.push_str(body),
    }
    if zulu {
        out.push('Z');
    }
    out.push_str(era);
    out.push('"');
}

fn is_decimal(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
        i += 1;
    }
    let int_start = i;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    let mut digits = i - int_start;
    if i < b.len() && b[i] == b'.' {
        i += 1;
        let frac_start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        digits += i - frac_start;
    }
    if digits == 0 {
        return false;
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            i += 1;
        }
        let exp_start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == exp_start {
            return false;
        }
    }
    i == b.len()
}

fn is_uuid(s: &str) -> bool {
    let s = s.strip_prefix('{').and_then(|s| s.strip_suffix('}')).unwrap_or(s);
    let hex: Vec<char> = s.chars().filter(|c| *c != '-').collect();
    hex.len() == 32 && hex.iter().all(|c| c.is_ascii_hexdigit()) && s.len() <= 36 + 4
}

/// The number `n` leading ASCII digits spell, and the rest. Every value
/// of a timestamp column is read so: by hand, not by `str::parse`.
fn digits(s: &str, n: usize) -> Option<(u32, &str)> {
    let head = s.as_bytes().get(..n)?;
    let mut value = 0u32;
    for &b in head {
        if !b.is_ascii_digit() {
            return None;
        }
        value = value * 10 + u32::from(b - b'0');
    }
    Some((value, &s[n..]))
}

/// A date's text without its era, and whether it is BC.
fn era(s: &str) -> (&str, bool) {
    match s.strip_suffix(" BC") {
        Some(body) => (body, true),
        None => (s, false),
    }
}

/// A date's year has four digits or more: PostgreSQL's dates reach year
/// 5874897 (`10000-01-01` is a date too). The day must be one its month
/// has (`2024-02-30` is no date), by the proleptic Gregorian calendar
/// PostgreSQL counts in, where 1 BC is a leap year.
fn date_prefix(s: &str, bc: bool) -> Option<&str> {
    date_prefix_in(s, bc, true)
}

/// Whether a date's text is well formed but names a day its month lacks
/// (`2023-02-29`, `2024-04-31`): said so, not as a malformed date.
fn is_missing_day(s: &str) -> bool {
    let (body, bc) = era(s);
    date_prefix(body, bc).is_none() && date_prefix_in(body, bc, false).is_some()
}

/// [`date_prefix`], with `calendar` false taking any day up to 31.
fn date_prefix_in(s: &str, bc: bool, calendar: bool) -> Option<&str> {
    let year_digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if !(4..=7).contains(&year_digits) {
        return None;
    }
    let (year, rest) = digits(s, year_digits)?;
    let rest = rest.strip_prefix('-')?;
    let (month, rest) = digits(rest, 2)?;
    let rest = rest.strip_prefix('-')?;
    let (day, rest) = digits(rest, 2)?;
    let astronomical = if bc { 1 - i64::from(year) } else { i64::from(year) };
    let leap = astronomical % 4 == 0 && (astronomical % 100 != 0 || astronomical % 400 == 0);
    let days = match month {
        1..=12 if !calendar => 31,
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    (year >= 1 && (1..=days).contains(&day)).then_some(rest)
}

fn time_prefix(s: &str) -> Option<&str> {
    let (hour, rest) = digits(s, 2)?;
    let rest = rest.strip_prefix(':')?;
    let (minute, mut rest) = digits(rest, 2)?;
    if let Some(r) = rest.strip_prefix(':') {
        let (second, r) = digits(r, 2)?;
        if second > 60 {
            return None;
        }
        rest = r;
        if let Some(r) = rest.strip_prefix('.') {
            let n = r.bytes().take_while(u8::is_ascii_digit).count();
            if n == 0 {
                return None;
            }
            rest = &r[n..];
        }
    }
    (hour <= 24 && minute <= 59).then_some(rest)
}

fn zone_suffix(s: &str) -> bool {
    if s.is_empty() || s == "Z" || s == "z" {
        return true;
    }
    let Some(rest) = s.strip_prefix('+').or_else(|| s.strip_prefix('-')) else {
        return false;
    };
    let Some((_, rest)) = digits(rest, 2) else { return false };
    let rest = rest.strip_prefix(':').unwrap_or(rest);
    rest.is_empty()
        || digits(rest, 2)
            .is_some_and(|(_, r)| r.is_empty() || r.strip_prefix(':').and_then(|r| digits(r, 2)).is_some_and(|(_, r)| r.is_empty()))
}

fn is_infinity(s: &str) -> bool {
    matches!(s, "infinity" | "-infinity")
}

fn is_date(s: &str) -> bool {
    let (body, bc) = era(s);
    is_infinity(s) || date_prefix(body, bc).is_some_and(str::is_empty)
}

fn is_time(s: &str) -> bool {
    time_prefix(s).is_some_and(str::is_empty)
}

/// Whether a time's seconds carry a digit other than 0 past the sixth
/// decimal place, which PostgreSQL would round away.
fn finer_than_microseconds(s: &str) -> bool {
    s.split_once('.').is_some_and(|(_, fraction)| fraction.bytes().take_while(u8::is_ascii_digit).skip(6).any(|b| b != b'0'))
}

fn is_timestamp(s: &str) -> bool {
    if is_infinity(s) {
        return true;
    }
    let (body, bc) = era(s);
    let Some(rest) = date_prefix(body, bc) else { return false };
    let Some(rest) = rest.strip_prefix('T').or_else(|| rest.strip_prefix(' ')) else {
        return rest.is_empty();
    };
    time_prefix(rest).is_some_and(zone_suffix)
}

fn decode_pg_hex(text: &str) -> Option<Vec<u8>> {
    let hex = text.strip_prefix("\\x")?.as_bytes();
    if hex.len() % 2 != 0 {
        return None;
    }
    hex.chunks(2)
        .map(|pair| {
            let hi = (pair[0] as char).to_digit(16)?;
            let lo = (pair[1] as char).to_digit(16)?;
            Some((hi * 16 + lo) as u8)
        })
        .collect()
}

fn encode_hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(HEX[(b >> 4) as usize] as char);
        out.push(HEX[(b & 15) as usize] as char);
    }
    out
}

/// A column default (as PostgreSQL prints it) as a SQLite expression that
/// makes the same value in the changeset form the file stores, when there
/// is one: constants, the current time, a random uuid. Anything else (a
/// sequence, a user's function) only the server computes: `None`.
pub fn sqlite_default(ty: LogicalType, expr: &str) -> Option<String> {
    use LogicalType as T;
    let expr = expr.trim();
    // A constant: `0`, `1.5`, `true`, `'new'::text`, `'-1'::integer`.
    let literal = match expr.split_once("::") {
        Some((value, _cast)) => value,
        None => expr,
    };
    let quoted = literal.len() >= 2 && literal.starts_with('\'') && literal.ends_with('\'');
    let text = if quoted { literal[1..literal.len() - 1].replace("''", "'") } else { literal.to_string() };
    let sql_text = |t: &str| format!("'{}'", t.replace('\'', "''"));
    match ty {
        T::Int2 | T::Int4 | T::Int8 => return text.parse::<i64>().ok().map(|i| i.to_string()),
        T::Float4 | T::Float8 => return text.parse::<f64>().ok().filter(|f| f.is_finite()).map(|f| format!("{f:?}")),
        T::Bool => {
            return match text.as_str() {
                "true" => Some("1".into()),
                "false" => Some("0".into()),
                _ => None,
            }
        }
        T::Numeric if quoted || is_decimal(&text) => return is_decimal(&text).then(|| sql_text(&text)),
        _ => {}
    }
    let now = matches!(
        expr.to_ascii_lowercase().as_str(),
        "now()" | "current_timestamp" | "statement_timestamp()" | "transaction_timestamp()" | "clock_timestamp()" | "localtimestamp"
    );
    match ty {
        T::Timestamptz if now => Some("(strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))".into()),
        T::Timestamp if now => Some("(strftime('%Y-%m-%dT%H:%M:%f', 'now'))".into()),
        T::Date if expr.eq_ignore_ascii_case("current_date") => Some("(date('now'))".into()),
        T::Uuid if matches!(expr, "gen_random_uuid()" | "uuid_generate_v4()") => Some(
            "(lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' || substr(hex(randomblob(2)), 2) || '-' \
             || substr('89ab', 1 + (abs(random()) % 4), 1) || substr(hex(randomblob(2)), 2) || '-' || hex(randomblob(6))))"
                .into(),
        ),
        T::Text | T::Uuid | T::Date | T::Time | T::Timestamp | T::Timestamptz | T::Json | T::Jsonb | T::Other if quoted => {
            Some(sql_text(&text))
        }
        _ => None,
    }
}

/// Appends `s` as a JSON string literal.
pub fn push_json_string(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    out.push('"');
    let mut start = 0;
    // Every byte that needs escaping is ASCII, and ASCII bytes never occur
    // inside a multi-byte character, so scanning bytes splits only at
    // character boundaries (and is much faster than decoding characters).
    for (i, &b) in s.as_bytes().iter().enumerate() {
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            b if b < 0x20 => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if escape.is_empty() {
            let _ = std::fmt::Write::write_fmt(out, format_args!("\\u{b:04x}"));
        } else {
            out.push_str(escape);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn via_json(ty: LogicalType, pg: &str) -> Value {
        pg_text_to_json(ty, Some(pg))
    }

    #[test]
    fn postgres_text_becomes_changeset_json() {
        assert_eq!(via_json(LogicalType::Int8, "-9223372036854775808"), json!(i64::MIN));
        assert_eq!(via_json(LogicalType::Bool, "t"), json!(true));
        assert_eq!(via_json(LogicalType::Float8, "NaN"), json!("NaN"));
        assert_eq!(via_json(LogicalType::Float8, "1e+100"), json!(1e100));
        assert_eq!(
            via_json(LogicalType::Numeric, "123456789012345678901234567890.000000001"),
            json!("123456789012345678901234567890.000000001")
        );
        assert_eq!(via_json(LogicalType::Timestamptz, "2024-05-01 13:45:00.123456+00"), json!("2024-05-01T13:45:00.123456Z"));
        assert_eq!(via_json(LogicalType::Timestamp, "2024-05-01 13:45:00"), json!("2024-05-01T13:45:00"));
        assert_eq!(via_json(LogicalType::Timestamptz, "infinity"), json!("infinity"));
        assert_eq!(via_json(LogicalType::Timestamptz, "0044-03-15 12:00:00+00 BC"), json!("0044-03-15T12:00:00Z BC"));
        assert_eq!(via_json(LogicalType::Timestamptz, "2024-05-01 13:45:00+05:30"), json!("2024-05-01T13:45:00+05:30"));
        assert_eq!(via_json(LogicalType::Timestamp, "2024-05-01 13:45:00+00"), json!("2024-05-01T13:45:00+00"), "only timestamptz is UTC");
        let mut out = String::new();
        push_json_string(&mut out, "tab\t ctl\u{1} é\u{1F600} \"q\" \\");
        assert_eq!(out, "\"tab\\t ctl\\u0001 é\u{1F600} \\\"q\\\" \\\\\"");
        assert_eq!(serde_json::from_str::<String>(&out).unwrap(), "tab\t ctl\u{1} é\u{1F600} \"q\" \\");
        assert_eq!(via_json(LogicalType::Bytea, "\\x00ff00"), json!("AP8A"));
        assert_eq!(via_json(LogicalType::Jsonb, "{\"a\": null}"), json!("{\"a\": null}"));
        assert_eq!(via_json(LogicalType::Text, "quote \" and \\ and \n and é"), json!("quote \" and \\ and \n and é"));
        assert_eq!(pg_text_to_json(LogicalType::Text, None), Value::Null);
    }

    #[test]
    fn changeset_json_becomes_postgres_input() {
        assert_eq!(json_to_pg_text(LogicalType::Bytea, &json!("AP8A")).unwrap().unwrap(), "\\x00ff00");
        assert_eq!(json_to_pg_text(LogicalType::Bool, &json!(false)).unwrap().unwrap(), "false");
        assert_eq!(json_to_pg_text(LogicalType::Float4, &json!("-Infinity")).unwrap().unwrap(), "-Infinity");
        assert_eq!(json_to_pg_text(LogicalType::Numeric, &json!(12)).unwrap().unwrap(), "12");
        assert_eq!(json_to_pg_text(LogicalType::Int4, &Value::Null).unwrap(), None);
        assert_eq!(
            json_to_pg_text(LogicalType::Timestamptz, &json!("2024-05-01T13:45:00.5+02:00")).unwrap().unwrap(),
            "2024-05-01T13:45:00.5+02:00"
        );
        // PostgreSQL's dates reach far past year 9999.
        for (ty, text) in [
            (LogicalType::Date, "10000-01-01"),
            (LogicalType::Date, "5874897-12-31"),
            (LogicalType::Timestamp, "12000-01-01T00:00:00"),
            (LogicalType::Timestamptz, "12000-01-01T00:00:00Z"),
        ] {
            assert_eq!(json_to_pg_text(ty, &json!(text)).unwrap().as_deref(), Some(text));
            assert!(json_to_local(ty, &json!(text)).is_ok(), "{text}");
        }
        assert!(json_to_pg_text(LogicalType::Date, &json!("999-01-01")).is_err());
        // Days the month has, leap years as PostgreSQL counts them (1 BC
        // and 5 BC are leap years, 1900 is not).
        for (text, ok) in [
            ("2024-02-29", true),
            ("2000-02-29", true),
            ("1900-02-29", false),
            ("2023-02-29", false),
            ("2024-04-31", false),
            ("2024-02-30", false),
            ("0001-02-29 BC", true),
            ("0005-02-29 BC", true),
            ("0004-02-29 BC", false),
        ] {
            assert_eq!(json_to_local(LogicalType::Date, &json!(text)).is_ok(), ok, "{text}");
            if !ok {
                let reason = json_to_pg_text(LogicalType::Date, &json!(text)).unwrap_err();
                assert!(reason.starts_with("expected a day its month has"), "{reason}");
            }
            let timestamp = match text.strip_suffix(" BC") {
                Some(date) => json!(format!("{date}T00:00:00Z BC")),
                None => json!(format!("{text}T00:00:00Z")),
            };
            assert_eq!(json_to_pg_text(LogicalType::Timestamptz, &timestamp).is_ok(), ok, "{timestamp}");
        }
        // PostgreSQL keeps microseconds: a finer digit would be rounded
        // (helper 78); zeros past them are the same instant.
        for (ty, text, ok) in [
            (LogicalType::Timestamptz, "2000-01-01T00:00:00.1234567Z", false),
            (LogicalType::Timestamp, "2000-01-01T00:00:00.0000001", false),
            (LogicalType::Time, "13:45:00.1234565", false),
            (LogicalType::Timestamptz, "2000-01-01T00:00:00.1234560000Z", true),
            (LogicalType::Timestamptz, "2000-01-01T00:00:00.123456Z", true),
        ] {
            let checked = json_to_pg_text(ty, &json!(text));
            assert_eq!(checked.is_ok(), ok, "{text}: {checked:?}");
            if let Err(reason) = checked {
                assert!(reason.contains("microseconds"), "{reason}");
            }
        }
        // What PostgreSQL's real refuses, a file's REAL would hold.
        for value in [json!(1e39), json!(-1e39), json!(1e-50)] {
            assert!(json_to_local(LogicalType::Float4, &value).is_err(), "{value}");
            assert!(json_to_local(LogicalType::Float8, &value).is_ok(), "{value}");
        }
        assert!(json_to_local(LogicalType::Float4, &json!(3.4028235e38)).is_ok());
    }

    #[test]
    fn ill_typed_values_are_refused_with_a_reason() {
        let cases = [
            (LogicalType::Int4, json!("7")),
            (LogicalType::Int4, json!(1u64 << 40)),
            (LogicalType::Int2, json!(40000)),
            (LogicalType::Int8, json!(1.5)),
            (LogicalType::Int2, json!(1e2)),
            (LogicalType::Bool, json!(1)),
            (LogicalType::Float8, json!("nan")),
            (LogicalType::Numeric, json!(1.25)),
            (LogicalType::Numeric, json!("12,5")),
            (LogicalType::Uuid, json!("not-a-uuid")),
            (LogicalType::Date, json!("2024-13-01")),
            (LogicalType::Timestamptz, json!("yesterday")),
            (LogicalType::Timestamptz, json!("2024-05-01T25:00:00Z")),
            (LogicalType::Bytea, json!("***")),
            (LogicalType::Jsonb, json!({"a": 1})),
            (LogicalType::Jsonb, json!("{not json")),
            (LogicalType::Text, json!(5)),
            (LogicalType::Text, json!("nul\u{0}byte")),
        ];
        for (ty, value) in cases {
            let err = json_to_pg_text(ty, &value).expect_err(&format!("{ty:?} {value} should be refused"));
            assert!(err.starts_with("expected "), "{err}");
            assert!(json_to_local(ty, &value).is_err());
        }
    }

    #[test]
    fn values_round_trip_through_sqlite_storage() {
        let cases = [
            (LogicalType::Int8, json!(i64::MAX)),
            (LogicalType::Bool, json!(true)),
            (LogicalType::Float8, json!(0.1)),
            (LogicalType::Float8, json!("NaN")),
            (LogicalType::Float8, json!("Infinity")),
            (LogicalType::Float8, json!("-0")),
            (LogicalType::Float4, json!(3.4028235e38)),
            (LogicalType::Numeric, json!("-0.000000000000000000000000000001")),
            (LogicalType::Bytea, json!("AAEC")),
            (LogicalType::Timestamptz, json!("2024-05-01T13:45:00.123456Z")),
            (LogicalType::Jsonb, json!("null")),
            (LogicalType::Uuid, json!("0b7e1f7a-5d1c-4b2e-9a55-6f1f0c2d9e11")),
            (LogicalType::Other, json!("{1,2,3}")),
            (LogicalType::Text, Value::Null),
        ];
        for (ty, value) in cases {
            let local = json_to_local(ty, &value).unwrap();
            assert_eq!(local_to_json(ty, &local).unwrap(), value, "{ty:?}");
        }
    }

    #[test]
    fn defaults_sqlite_can_compute_are_translated() {
        let cases = [
            (LogicalType::Int4, "0", Some("0")),
            (LogicalType::Int8, "'-1'::integer", Some("-1")),
            (LogicalType::Float8, "1.5", Some("1.5")),
            (LogicalType::Bool, "true", Some("1")),
            (LogicalType::Numeric, "'1.50'::numeric", Some("'1.50'")),
            (LogicalType::Text, "'it''s new'::text", Some("'it''s new'")),
            (LogicalType::Timestamptz, "now()", Some("(strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))")),
            (LogicalType::Date, "CURRENT_DATE", Some("(date('now'))")),
            (LogicalType::Int8, "nextval('t_id_seq'::regclass)", None),
            (LogicalType::Int4, "(1 + 1)", None),
            (LogicalType::Text, "upper('x'::text)", None),
            (LogicalType::Jsonb, "'{}'::jsonb", Some("'{}'")),
        ];
        for (ty, expr, expected) in cases {
            assert_eq!(sqlite_default(ty, expr).as_deref(), expected, "{ty:?} {expr}");
        }
        assert!(sqlite_default(LogicalType::Uuid, "gen_random_uuid()").unwrap().contains("randomblob"));
    }

    #[test]
    fn a_local_value_of_another_storage_class_is_refused() {
        let cases = [
            (LogicalType::Text, LocalValue::Blob(b"hello".to_vec()), "a blob of 5 bytes"),
            (LogicalType::Text, LocalValue::BadText(vec![0xff, 0x61]), "not valid UTF-8"),
            (LogicalType::Int4, LocalValue::Text("abc".into()), "the text \"abc\""),
            (LogicalType::Int8, LocalValue::Real(1.5), "takes integers"),
            (LogicalType::Bytea, LocalValue::Text("abcd".into()), "takes blobs"),
            (LogicalType::Bool, LocalValue::Integer(2), "0 or 1"),
            (LogicalType::Timestamptz, LocalValue::Integer(1700000000), "takes text"),
        ];
        for (ty, value, needle) in cases {
            let reason = local_to_json(ty, &value).unwrap_err();
            assert!(reason.contains(needle), "{ty:?} {value:?}: {reason}");
        }
        assert_eq!(describe_local(LogicalType::Int4, &LocalValue::Text("abc".into())), json!("abc"));
    }

    #[test]
    fn float_output_round_trips_through_json() {
        for pg in ["0.1", "1e+100", "-0", "3.4028235e+38", "5e-324", "1.7976931348623157e+308"] {
            let v = via_json(LogicalType::Float8, pg);
            let back = json_to_pg_text(LogicalType::Float8, &v).unwrap().unwrap();
            assert_eq!(back.parse::<f64>().unwrap().to_bits(), pg.parse::<f64>().unwrap().to_bits(), "{pg}");
        }
    }
}
