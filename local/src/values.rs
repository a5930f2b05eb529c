//! rusqlite values to and from `tandem_core::types::LocalValue`, where all
//! type logic lives.

use rusqlite::types::{ToSqlOutput, Value, ValueRef};
use rusqlite::ToSql;
use tandem_core::types::LocalValue;

pub fn to_sql(value: LocalValue) -> Value {
    match value {
        LocalValue::Null => Value::Null,
        LocalValue::Integer(i) => Value::Integer(i),
        LocalValue::Real(f) => Value::Real(f),
        LocalValue::Text(s) => Value::Text(s),
        LocalValue::BadText(b) => Value::Text(String::from_utf8_lossy(&b).into_owned()),
        LocalValue::Blob(b) => Value::Blob(b),
    }
}

pub fn from_sql(value: ValueRef<'_>) -> LocalValue {
    match value {
        ValueRef::Null => LocalValue::Null,
        ValueRef::Integer(i) => LocalValue::Integer(i),
        ValueRef::Real(f) => LocalValue::Real(f),
        ValueRef::Text(t) => match std::str::from_utf8(t) {
            Ok(text) => LocalValue::Text(text.to_string()),
            Err(_) => LocalValue::BadText(t.to_vec()),
        },
        ValueRef::Blob(b) => LocalValue::Blob(b.to_vec()),
    }
}

/// Binds a value without copying it.
pub struct Bound<'a>(pub &'a LocalValue);

impl ToSql for Bound<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self.0 {
            LocalValue::Null => ValueRef::Null,
            LocalValue::Integer(i) => ValueRef::Integer(*i),
            LocalValue::Real(f) => ValueRef::Real(*f),
            LocalValue::Text(s) => ValueRef::Text(s.as_bytes()),
            LocalValue::BadText(b) => ValueRef::Text(b),
            LocalValue::Blob(b) => ValueRef::Blob(b),
        }))
    }
}
