//! Identifiers: parsing table names the way PostgreSQL reads them, and quoting
//! every identifier that goes into generated SQL, in one place.

use std::fmt;

use crate::error::Error;

/// Quotes an identifier for PostgreSQL and SQLite alike (both use `"..."`).
/// Every identifier Tandem puts into SQL passes through here.
pub fn quote_ident(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 2);
    out.push('"');
    for c in name.chars() {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// Quotes a string literal (both dialects use `'...'` with doubled quotes).
/// Only used for constants Tandem itself generates (names in comments, ids);
/// values that come from input are always bound as parameters.
pub fn quote_literal(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        if c == '\'' {
            out.push('\'');
        }
        out.push(c);
    }
    out.push('\'');
    out
}

/// A schema-qualified table name. Changesets and schemas name tables by its
/// canonical text (`public.customers`, `sales."Order Items"`), so both sides
/// agree on one spelling.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableName {
    pub schema: String,
    pub name: String,
}

impl TableName {
    pub fn new(schema: impl Into<String>, name: impl Into<String>) -> Self {
        TableName { schema: schema.into(), name: name.into() }
    }

    /// Reads `customers`, `public.customers`, `"Order Items"` or
    /// `sales."Order Items"`: unquoted parts fold to lower case as in
    /// PostgreSQL, and an unqualified name means `public`.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let parts = split_identifier_path(text).ok_or_else(|| Error::InvalidName(text.to_string()))?;
        match parts.as_slice() {
            [name] => Ok(TableName::new("public", name.clone())),
            [schema, name] => Ok(TableName::new(schema.clone(), name.clone())),
            _ => Err(Error::InvalidName(text.to_string())),
        }
    }

    /// `"schema"."name"`, for SQL on PostgreSQL.
    pub fn quoted(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }

    /// The table's name in a local SQLite file, which has no schemas: the
    /// bare name for `public`, `schema.name` (one identifier) otherwise.
    pub fn local_name(&self) -> String {
        if self.schema == "public" {
            self.name.clone()
        } else {
            format!("{}.{}", self.schema, self.name)
        }
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", display_part(&self.schema), display_part(&self.name))
    }
}

/// Shows a name part bare when PostgreSQL would read it back unchanged.
fn display_part(part: &str) -> String {
    let plain = !part.is_empty()
        && part.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && part.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '$');
    if plain {
        part.to_string()
    } else {
        quote_ident(part)
    }
}

/// Splits `a."B c".d` into its parts; `None` when the text is not a name.
fn split_identifier_path(text: &str) -> Option<Vec<String>> {
    let mut parts = Vec::new();
    let mut chars = text.trim().chars().peekable();
    loop {
        let mut part = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next()? {
                    '"' if chars.peek() == Some(&'"') => {
                        chars.next();
                        part.push('"');
                    }
                    '"' => break,
                    c => part.push(c),
                }
            }
            if part.is_empty() {
                return None;
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == '.' {
                    break;
                }
                if !(c.is_alphanumeric() || c == '_' || c == '$') {
                    return None;
                }
                part.extend(c.to_lowercase());
                chars.next();
            }
            if part.is_empty() || part.chars().next().is_some_and(|c| c.is_ascii_digit()) {
                return None;
            }
        }
        parts.push(part);
        match chars.next() {
            None => return Some(parts),
            Some('.') => continue,
            Some(_) => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_qualified_and_quoted_names() {
        assert_eq!(TableName::parse("customers").unwrap(), TableName::new("public", "customers"));
        assert_eq!(TableName::parse("Sales.Orders").unwrap(), TableName::new("sales", "orders"));
        assert_eq!(TableName::parse(r#"sales."Order Items""#).unwrap(), TableName::new("sales", "Order Items"));
        assert_eq!(TableName::parse(r#""a""b""#).unwrap(), TableName::new("public", r#"a"b"#));
    }

    #[test]
    fn refuses_what_is_not_a_name() {
        for bad in ["", "a.b.c", "a b", "\"unterminated", "1abc", "a;drop table x", "a.", "\"\""] {
            assert!(TableName::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn displays_canonically_and_round_trips() {
        for name in [
            TableName::new("public", "customers"),
            TableName::new("sales", "Order Items"),
            TableName::new("public", "MixedCase"),
            TableName::new("we\"ird", "x.y"),
        ] {
            assert_eq!(TableName::parse(&name.to_string()).unwrap(), name);
        }
        assert_eq!(TableName::new("sales", "Order Items").to_string(), r#"sales."Order Items""#);
    }

    #[test]
    fn quotes_every_identifier() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(TableName::new("s", "t").quoted(), "\"s\".\"t\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
    }
}
