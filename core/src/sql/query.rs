//! Typed statements: a generated query carries its bound values and the
//! decoder of its rows, made together, so a parameter cannot be bound at
//! the wrong position and a column cannot be read at the wrong one.
//!
//! A placeholder is made by binding its value ([`Binds::bind`], in the
//! manner of pg_graphql's `ParamContext::clause_for`); a result column is
//! made by naming it ([`Columns::push`]), which returns the handle its
//! decoder reads it by. Every result column is `text` (PostgreSQL casts
//! with `::text`), so the server reads rows in place, one call per row.

use std::fmt;

/// A value bound to a placeholder, free of any database crate; each side
/// converts it to its own datum.
#[derive(Clone, Debug, PartialEq)]
pub enum Param {
    Text(Option<String>),
    Int8(i64),
    Int4(i32),
    Bool(bool),
    TextArray(Vec<Option<String>>),
    Int4Array(Vec<i32>),
}

impl From<&str> for Param {
    fn from(text: &str) -> Self {
        Param::Text(Some(text.to_string()))
    }
}

impl From<String> for Param {
    fn from(text: String) -> Self {
        Param::Text(Some(text))
    }
}

impl From<Option<String>> for Param {
    fn from(text: Option<String>) -> Self {
        Param::Text(text)
    }
}

impl From<i64> for Param {
    fn from(value: i64) -> Self {
        Param::Int8(value)
    }
}

impl From<Vec<i32>> for Param {
    fn from(values: Vec<i32>) -> Self {
        Param::Int4Array(values)
    }
}

impl From<Vec<Option<String>>> for Param {
    fn from(values: Vec<Option<String>>) -> Self {
        Param::TextArray(values)
    }
}

impl From<Vec<String>> for Param {
    fn from(values: Vec<String>) -> Self {
        Param::TextArray(values.into_iter().map(Some).collect())
    }
}

/// The values of a statement's placeholders, in order. A named value (a
/// filter parameter) is bound once and its placeholder reused.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Binds {
    values: Vec<Param>,
    named: Vec<(String, usize)>,
}

impl Binds {
    pub fn new() -> Self {
        Binds::default()
    }

    /// Binds `value` and returns its placeholder (`$n`).
    pub fn bind(&mut self, value: impl Into<Param>) -> String {
        self.values.push(value.into());
        format!("${}", self.values.len())
    }

    /// The placeholder of the value named `name`, binding `value()` the first
    /// time the name is used.
    pub fn bind_named(&mut self, name: &str, value: impl FnOnce() -> Param) -> String {
        if let Some((_, n)) = self.named.iter().find(|(known, _)| known == name) {
            return format!("${n}");
        }
        self.values.push(value());
        self.named.push((name.to_string(), self.values.len()));
        format!("${}", self.values.len())
    }

    pub fn values(&self) -> &[Param] {
        &self.values
    }

    pub fn into_values(self) -> Vec<Param> {
        self.values
    }
}

/// A result column, by position; made only by [`Columns::push`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Col(usize);

/// A statement's result columns: each a text expression with its alias.
#[derive(Clone, Debug, Default)]
pub struct Columns {
    list: Vec<(String, String)>,
}

impl Columns {
    pub fn new() -> Self {
        Columns::default()
    }

    /// Adds `expression AS alias` and returns the handle to read it by.
    pub fn push(&mut self, alias: &str, expression: impl Into<String>) -> Col {
        self.list.push((expression.into(), alias.to_string()));
        Col(self.list.len() - 1)
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The select list: `expr AS "alias", ...`.
    pub fn sql(&self) -> String {
        self.list
            .iter()
            .map(|(expression, alias)| format!("{expression} AS {}", crate::ident::quote_ident(alias)))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A row decoding failed: the statement and its decoder disagree, or the
/// server returned what it never returns. Not an input error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<DecodeError> for crate::Error {
    fn from(e: DecodeError) -> Self {
        crate::Error::Internal(format!("reading a row Tandem queried: {e}"))
    }
}

/// One result row, every column as text (`None` for NULL).
#[derive(Clone, Copy, Debug)]
pub struct Fields<'a> {
    values: &'a [Option<&'a str>],
}

impl<'a> Fields<'a> {
    /// Wraps a row of `expected` columns; any other count is an error.
    pub fn new(values: &'a [Option<&'a str>], expected: usize) -> Result<Self, DecodeError> {
        if values.len() != expected {
            return Err(DecodeError(format!("a row has {} columns, its statement selects {expected}", values.len())));
        }
        Ok(Fields { values })
    }

    pub fn text(&self, col: Col) -> Option<&'a str> {
        self.values[col.0]
    }

    pub fn required(&self, col: Col) -> Result<&'a str, DecodeError> {
        self.values[col.0].ok_or_else(|| DecodeError(format!("column {} is NULL", col.0)))
    }

    pub fn owned(&self, col: Col) -> Option<String> {
        self.values[col.0].map(str::to_string)
    }

    /// A boolean column: exactly `true` or `false` (`::text` of a bool).
    pub fn bool(&self, col: Col) -> Result<bool, DecodeError> {
        match self.values[col.0] {
            Some("true") => Ok(true),
            Some("false") => Ok(false),
            other => Err(DecodeError(format!("column {} is {other:?}, not a boolean", col.0))),
        }
    }

    /// A non-negative integer column (a row's position in an upload).
    pub fn index(&self, col: Col) -> Result<usize, DecodeError> {
        let text = self.required(col)?;
        text.parse().map_err(|_| DecodeError(format!("column {} is {text:?}, not a row index", col.0)))
    }

    /// An integer column (a count).
    pub fn int(&self, col: Col) -> Result<i64, DecodeError> {
        let text = self.required(col)?;
        text.parse().map_err(|_| DecodeError(format!("column {} is {text:?}, not an integer", col.0)))
    }

    /// The columns from `col` to the end (a table's values).
    pub fn from(&self, col: Col) -> &'a [Option<&'a str>] {
        &self.values[col.0..]
    }

    /// `n` columns starting at `col`.
    pub fn slice(&self, col: Col, n: usize) -> &'a [Option<&'a str>] {
        &self.values[col.0..col.0 + n]
    }
}

/// Reads one row of a statement into its Rust form.
pub trait Decode {
    type Row<'a>;
    fn decode<'a>(&self, fields: Fields<'a>) -> Result<Self::Row<'a>, DecodeError>;
}

/// A statement that returns no rows Tandem reads.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoRows;

impl Decode for NoRows {
    type Row<'a> = ();
    fn decode<'a>(&self, _: Fields<'a>) -> Result<(), DecodeError> {
        Ok(())
    }
}

/// A generated statement: its SQL, the values of its placeholders, and how
/// to read its rows.
#[derive(Debug)]
pub struct Query<D> {
    pub sql: String,
    pub params: Vec<Param>,
    /// How many columns each row has.
    pub width: usize,
    pub decoder: D,
}

impl<D: Decode> Query<D> {
    pub fn new(sql: String, binds: Binds, columns: &Columns, decoder: D) -> Self {
        Query { sql, params: binds.into_values(), width: columns.len(), decoder }
    }

    /// Decodes one row as the server returned it.
    pub fn decode<'a>(&self, values: &'a [Option<&'a str>]) -> Result<D::Row<'a>, DecodeError> {
        self.decoder.decode(Fields::new(values, self.width)?)
    }

    /// The statement, its values (to hand to the database without a copy)
    /// and the reader of its rows.
    pub fn split(self) -> (String, Vec<Param>, RowReader<D>) {
        (self.sql, self.params, RowReader { width: self.width, decoder: self.decoder })
    }
}

/// Reads the rows of a [`Query`] whose values went to the database.
#[derive(Debug)]
pub struct RowReader<D> {
    width: usize,
    decoder: D,
}

impl<D: Decode> RowReader<D> {
    pub fn decode<'a>(&self, values: &'a [Option<&'a str>]) -> Result<D::Row<'a>, DecodeError> {
        self.decoder.decode(Fields::new(values, self.width)?)
    }
}

impl Query<NoRows> {
    /// A statement whose rows (if any) are not read.
    pub fn exec(sql: String, binds: Binds) -> Self {
        Query { sql, params: binds.into_values(), width: 0, decoder: NoRows }
    }
}

/// Reads a scope table's index, as text, from a probe's one column (see
/// `tracking::pending_logs`, `pull::changed_tables`).
pub struct TableIndex(pub Col);

impl Decode for TableIndex {
    type Row<'a> = usize;
    fn decode<'a>(&self, f: Fields<'a>) -> Result<usize, DecodeError> {
        usize::try_from(f.int(self.0)?).map_err(|_| DecodeError("a negative table index".into()))
    }
}

/// A single boolean.
pub struct Flag(Col);

impl Flag {
    /// `SELECT (expression)` as the one boolean `name` (the expression
    /// gives `'true'` or `'false'` text), with the values `binds` holds.
    pub fn select(name: &str, expression: String, binds: Binds) -> Query<Flag> {
        let mut columns = Columns::new();
        let flag = Flag(columns.push(name, expression));
        Query::new(format!("SELECT {}", columns.sql()), binds, &columns, flag)
    }
}

impl Decode for Flag {
    type Row<'a> = bool;
    fn decode<'a>(&self, fields: Fields<'a>) -> Result<bool, DecodeError> {
        fields.bool(self.0)
    }
}

/// One probe per table, each returning the table's index when `condition`
/// (given the table's index) holds: `SELECT '3'::text AS t WHERE ... UNION
/// ALL ...`. No tables: no rows.
pub fn table_probes(tables: &[usize], condition: impl Fn(usize) -> String) -> (String, Columns, TableIndex) {
    let mut columns = Columns::new();
    let decoder = TableIndex(columns.push("t", "t"));
    let probes: Vec<String> = tables.iter().map(|&t| format!("SELECT '{t}'::text AS t WHERE {}", condition(t))).collect();
    let sql = if probes.is_empty() { "SELECT '0'::text AS t WHERE false".to_string() } else { probes.join(" UNION ALL ") };
    (sql, columns, decoder)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_named_value_is_bound_once() {
        let mut binds = Binds::new();
        assert_eq!(binds.bind("a"), "$1");
        assert_eq!(binds.bind_named("tenant", || Param::TextArray(vec![Some("3".into())])), "$2");
        assert_eq!(binds.bind(7i64), "$3");
        assert_eq!(binds.bind_named("tenant", || unreachable!("bound already")), "$2");
        assert_eq!(binds.values().len(), 3);
    }

    #[test]
    fn columns_are_read_by_their_handles() {
        let mut columns = Columns::new();
        let idx = columns.push("idx", "s.idx::text");
        let live = columns.push("live", "(r.id IS NOT NULL)::text");
        assert_eq!(columns.sql(), "s.idx::text AS \"idx\", (r.id IS NOT NULL)::text AS \"live\"");
        let row = [Some("12"), Some("true")];
        let fields = Fields::new(&row, columns.len()).unwrap();
        assert_eq!(fields.index(idx).unwrap(), 12);
        assert!(fields.bool(live).unwrap());
        assert!(Fields::new(&row[..1], columns.len()).is_err(), "a missing column is an error");
        let bad = [Some("12"), Some("t")];
        assert!(Fields::new(&bad, 2).unwrap().bool(live).is_err(), "only true and false are booleans");
    }
}
