//! One changeset value as the JSON parser hands it over, before it is
//! converted for a side: strings borrowed from the changeset's text where
//! they need no unescaping. A checked changeset converts each value from
//! this straight into what a side stores, instead of building a JSON value
//! tree first and copying every string out of it again (reading and
//! checking a pull was a third of a download's client instructions).

use std::borrow::Cow;
use std::fmt;

use serde_json::{Number, Value};

/// A changeset value. Arrays and objects are no value of any column type
/// (an object may be the `{"invalid": ...}` marker of an uploader that could
/// not read a value), so they are kept whole for the message that refuses
/// them.
#[derive(Clone, Debug, PartialEq)]
pub enum Json<'a> {
    Null,
    Bool(bool),
    Number(Number),
    Str(Cow<'a, str>),
    Other(Cow<'a, Value>),
}

impl<'a> Json<'a> {
    /// A view of a parsed JSON value, borrowing its strings.
    pub fn of(value: &'a Value) -> Self {
        match value {
            Value::Null => Json::Null,
            Value::Bool(b) => Json::Bool(*b),
            Value::Number(n) => Json::Number(n.clone()),
            Value::String(s) => Json::Str(Cow::Borrowed(s)),
            other => Json::Other(Cow::Borrowed(other)),
        }
    }

    pub fn to_value(&self) -> Value {
        match self {
            Json::Null => Value::Null,
            Json::Bool(b) => Value::Bool(*b),
            Json::Number(n) => Value::Number(n.clone()),
            Json::Str(s) => Value::String(s.to_string()),
            Json::Other(v) => v.clone().into_owned(),
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Json::Null)
    }

    /// The reason an uploader gave for a value it could not read
    /// (`{"invalid": "column name holds a blob..."}`): the row is refused
    /// with it. No value of any type travels as an object, so the marker is
    /// never a value.
    pub fn unreadable(&self) -> Option<String> {
        match self {
            Json::Other(value) => match value.as_ref() {
                Value::Object(map) if map.len() == 1 => map.get("invalid").map(|reason| match reason {
                    Value::String(text) => crate::error::shorten(text, 300),
                    other => crate::error::shorten(&other.to_string(), 300),
                }),
                _ => None,
            },
            _ => None,
        }
    }
}

/// The value's JSON text, for messages.
impl fmt::Display for Json<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Json::Null => f.write_str("null"),
            Json::Bool(b) => write!(f, "{b}"),
            Json::Number(n) => write!(f, "{n}"),
            Json::Str(s) => write!(f, "{}", Value::String(s.to_string())),
            Json::Other(v) => write!(f, "{v}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_view_gives_back_the_value_and_its_text() {
        let text = r#"[null, true, 7, -7, 18446744073709551615, 1.5, "plain", "esc\"aped", [1], {"invalid": "why"}]"#;
        let parsed: Vec<Value> = serde_json::from_str(text).unwrap();
        let views: Vec<Json<'_>> = parsed.iter().map(Json::of).collect();
        assert_eq!(views.iter().map(Json::to_value).collect::<Vec<_>>(), parsed);
        assert_eq!(views.iter().map(ToString::to_string).collect::<Vec<_>>(), parsed.iter().map(ToString::to_string).collect::<Vec<_>>());
        assert!(matches!(views[6], Json::Str(Cow::Borrowed("plain"))));
        assert_eq!(views[9].unreadable().as_deref(), Some("why"));
        assert_eq!(Json::of(&json!({"invalid": 1, "other": 2})).unreadable(), None);
    }
}
