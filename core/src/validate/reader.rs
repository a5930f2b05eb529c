//! Reads a changeset's JSON field by field into the check (see the parent
//! module): serde seeds that carry the check's state, so each value is
//! converted as it is read and nothing is built twice.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::Value;

use super::{check_row, open_part, Convert, Part, Raw, Slot, State};
use crate::changeset::Op;
use crate::error::Error;
use crate::json::Json;

/// The changeset's own fields; its tables go into the state.
pub(super) struct Header {
    pub(super) origin: String,
    pub(super) watermark: Option<String>,
    pub(super) has_more: bool,
}

/// The fields of each object, by name; [`Field`] reads a name as its
/// place here, which the enums below give a name again.
const CHANGESET_FIELDS: &[&str] = &["format", "scope", "origin", "tables", "watermark", "has_more"];
const TABLE_FIELDS: &[&str] = &["name", "columns", "rows"];
const ROW_FIELDS: &[&str] = &["op", "version", "base", "seq", "values", "key", "moved_from", "respelled"];

#[derive(Clone, Copy)]
enum ChangesetField {
    Format,
    Scope,
    Origin,
    Tables,
    Watermark,
    HasMore,
}

impl ChangesetField {
    const ALL: [Self; 6] = [Self::Format, Self::Scope, Self::Origin, Self::Tables, Self::Watermark, Self::HasMore];
}

#[derive(Clone, Copy)]
enum TableField {
    Name,
    Columns,
    Rows,
}

impl TableField {
    const ALL: [Self; 3] = [Self::Name, Self::Columns, Self::Rows];
}

#[derive(Clone, Copy)]
enum RowField {
    Op,
    Version,
    Base,
    Seq,
    Values,
    Key,
    MovedFrom,
    Respelled,
}

impl RowField {
    const ALL: [Self; 8] = [Self::Op, Self::Version, Self::Base, Self::Seq, Self::Values, Self::Key, Self::MovedFrom, Self::Respelled];
}

/// A field name as the position of its name in a list, read without
/// allocating; unknown names are refused as serde's derive refuses them.
struct Field(&'static [&'static str]);

impl<'de> DeserializeSeed<'de> for Field {
    type Value = usize;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> std::result::Result<usize, D::Error> {
        deserializer.deserialize_identifier(self)
    }
}

impl<'de> Visitor<'de> for Field {
    type Value = usize;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, name: &str) -> std::result::Result<usize, E> {
        self.0.iter().position(|n| *n == name).ok_or_else(|| E::unknown_field(name, self.0))
    }
}

/// Reads a field's value once: a second one is refused, as serde's derive
/// refuses it.
fn once<'de, A: MapAccess<'de>, T: serde::Deserialize<'de>>(
    slot: &mut Option<T>,
    map: &mut A,
    name: &'static str,
) -> std::result::Result<(), A::Error> {
    if slot.is_some() {
        return Err(de::Error::duplicate_field(name));
    }
    *slot = Some(map.next_value()?);
    Ok(())
}

pub(super) struct ChangesetSeed<'a, 's, V>(pub(super) &'a mut State<'s, V>);

impl<'de, V> DeserializeSeed<'de> for ChangesetSeed<'_, '_, V> {
    type Value = Header;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> std::result::Result<Header, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de, V> Visitor<'de> for ChangesetSeed<'_, '_, V> {
    type Value = Header;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a changeset object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Header, A::Error> {
        let state = self.0;
        let (mut format, mut scope, mut origin, mut watermark, mut has_more) = (None::<u32>, None::<String>, None, None, None);
        let mut tables = None::<&'de RawValue>;
        let mut tables_read = false;
        while let Some(field) = map.next_key_seed(Field(CHANGESET_FIELDS))? {
            use ChangesetField as F;
            match ChangesetField::ALL[field] {
                F::Format => {
                    once(&mut format, &mut map, "format")?;
                    check_header(state, format, scope.as_deref())?;
                }
                F::Scope => {
                    once(&mut scope, &mut map, "scope")?;
                    check_header(state, format, scope.as_deref())?;
                }
                F::Origin => once(&mut origin, &mut map, "origin")?,
                F::Tables if tables.is_some() || tables_read => return Err(de::Error::duplicate_field("tables")),
                // Read as soon as they can be checked: both the format and
                // the scope are known.
                F::Tables if format.is_some() && scope.is_some() => {
                    map.next_value_seed(TablesSeed(&mut *state))?;
                    tables_read = true;
                }
                F::Tables => tables = Some(map.next_value()?),
                F::Watermark => once(&mut watermark, &mut map, "watermark")?,
                F::HasMore => once(&mut has_more, &mut map, "has_more")?,
            }
        }
        let format = format.ok_or_else(|| de::Error::missing_field("format"))?;
        let scope = scope.ok_or_else(|| de::Error::missing_field("scope"))?;
        let origin = origin.ok_or_else(|| de::Error::missing_field("origin"))?;
        if !tables_read {
            let tables = tables.ok_or_else(|| de::Error::missing_field("tables"))?;
            check_header(state, Some(format), Some(&scope))?;
            read_later(tables, TablesSeed(&mut *state))?;
        }
        Ok(Header { origin, watermark: watermark.flatten(), has_more: has_more.unwrap_or(false) })
    }
}

/// The format and scope, as soon as each is known.
fn check_header<V, E: de::Error>(state: &mut State<'_, V>, format: Option<u32>, scope: Option<&str>) -> std::result::Result<(), E> {
    if let Err(error) = format.map_or(Ok(()), crate::changeset::supported) {
        return Err(state.fail(error));
    }
    if let Some(scope) = scope.filter(|s| *s != state.schema.scope) {
        return Err(state.fail(Error::ScopeMismatch { expected: state.schema.scope.clone(), found: scope.to_string() }));
    }
    Ok(())
}

/// Reads a part of the text that came before what it needs.
fn read_later<'de, S: DeserializeSeed<'de>, E: de::Error>(text: &'de RawValue, seed: S) -> std::result::Result<S::Value, E> {
    let mut reader = serde_json::Deserializer::from_str(text.get());
    seed.deserialize(&mut reader).map_err(E::custom)
}

struct TablesSeed<'a, 's, V>(&'a mut State<'s, V>);

impl<'de, V> DeserializeSeed<'de> for TablesSeed<'_, '_, V> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> std::result::Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de, V> Visitor<'de> for TablesSeed<'_, '_, V> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of tables")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<(), A::Error> {
        while seq.next_element_seed(TableSeed(&mut *self.0))?.is_some() {}
        Ok(())
    }
}

struct TableSeed<'a, 's, V>(&'a mut State<'s, V>);

impl<'de, V> DeserializeSeed<'de> for TableSeed<'_, '_, V> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> std::result::Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de, V> Visitor<'de> for TableSeed<'_, '_, V> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a table object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<(), A::Error> {
        let state = self.0;
        let (mut name, mut columns) = (None::<String>, None::<Vec<String>>);
        let mut rows = None::<&'de RawValue>;
        let mut part = None::<Part>;
        while let Some(field) = map.next_key_seed(Field(TABLE_FIELDS))? {
            match TableField::ALL[field] {
                TableField::Name => once(&mut name, &mut map, "name")?,
                TableField::Columns => once(&mut columns, &mut map, "columns")?,
                TableField::Rows if rows.is_some() || part.is_some() => return Err(de::Error::duplicate_field("rows")),
                TableField::Rows => match (&name, &columns) {
                    (Some(name), Some(columns)) => {
                        let opened = open_part(state, name, columns)?;
                        map.next_value_seed(RowsSeed { state: &mut *state, part: &opened })?;
                        part = Some(opened);
                    }
                    _ => rows = Some(map.next_value()?),
                },
            }
        }
        let name = name.ok_or_else(|| de::Error::missing_field("name"))?;
        let columns = columns.ok_or_else(|| de::Error::missing_field("columns"))?;
        if part.is_none() {
            let rows = rows.ok_or_else(|| de::Error::missing_field("rows"))?;
            let opened = open_part(state, &name, &columns)?;
            read_later(rows, RowsSeed { state, part: &opened })?;
        }
        Ok(())
    }
}

struct RowsSeed<'a, 's, 'p, V> {
    state: &'a mut State<'s, V>,
    part: &'p Part<'s>,
}

impl<'de, V> DeserializeSeed<'de> for RowsSeed<'_, '_, '_, V> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> std::result::Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de, V> Visitor<'de> for RowsSeed<'_, '_, '_, V> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of rows")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<(), A::Error> {
        // One row's fields, read into the same place row after row: moved
        // around whole, they were a tenth of the reading.
        let mut row = RowFields::default();
        let mut n = 0;
        while seq.next_element_seed(RowSeed { convert: self.state.convert, raw: self.state.raw, part: self.part, row: &mut row })?.is_some()
        {
            if let Err(error) = check_row(self.state, self.part, n, &mut row) {
                return Err(self.state.fail(error));
            }
            n += 1;
        }
        Ok(())
    }
}

/// A row's fields as read, each value converted; checked (and taken) by
/// [`check_row`]. `Some(None)` is a field sent as `null`.
pub(super) struct RowFields<V> {
    pub(super) op: Option<Op>,
    pub(super) version: Option<Option<String>>,
    pub(super) base: Option<Option<String>>,
    pub(super) seq: Option<Option<i64>>,
    pub(super) values: Option<Option<Cells<V>>>,
    pub(super) key: Option<Option<Cells<V>>>,
    pub(super) moved_from: Option<Option<Cells<V>>>,
    pub(super) respelled: Option<Option<bool>>,
}

impl<V> Default for RowFields<V> {
    fn default() -> Self {
        RowFields { op: None, version: None, base: None, seq: None, values: None, key: None, moved_from: None, respelled: None }
    }
}

struct RowSeed<'r, 'p, 's, V> {
    convert: Convert<V>,
    raw: Raw,
    part: &'p Part<'s>,
    row: &'r mut RowFields<V>,
}

impl<'de, V> DeserializeSeed<'de> for RowSeed<'_, '_, '_, V> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> std::result::Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de, V> Visitor<'de> for RowSeed<'_, '_, '_, V> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a row object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<(), A::Error> {
        let row = self.row;
        *row = RowFields::default();
        let convert = self.convert;
        // The JSON of the values is kept where the row is named by it.
        let values_json = match self.raw {
            Raw::Kept => JsonAt::All,
            Raw::Dropped => JsonAt::Key(&self.part.key_positions),
        };
        let cells = |slots, json, kind| CellsSeed { slots, json, kind, convert };
        fn twice<E: de::Error>(name: &'static str) -> E {
            E::duplicate_field(name)
        }
        while let Some(field) = map.next_key_seed(Field(ROW_FIELDS))? {
            use RowField as F;
            match RowField::ALL[field] {
                F::Op => once(&mut row.op, &mut map, "op")?,
                F::Version => once(&mut row.version, &mut map, "version")?,
                F::Base => once(&mut row.base, &mut map, "base")?,
                F::Seq => once(&mut row.seq, &mut map, "seq")?,
                F::Values if row.values.is_some() => return Err(twice("values")),
                F::Values => row.values = Some(map.next_value_seed(cells(&self.part.upsert, values_json, ListKind::Values))?),
                F::Key if row.key.is_some() => return Err(twice("key")),
                F::Key => row.key = Some(map.next_value_seed(cells(&self.part.keys, JsonAt::All, ListKind::Values))?),
                F::MovedFrom if row.moved_from.is_some() => return Err(twice("moved_from")),
                F::MovedFrom => row.moved_from = Some(map.next_value_seed(cells(&self.part.keys, JsonAt::All, ListKind::MovedFrom))?),
                F::Respelled => match map.next_value::<Option<bool>>()? {
                    _ if row.respelled.is_some() => return Err(twice("respelled")),
                    // `null` is no boolean: not read as absent.
                    None => {
                        return Err(de::Error::custom(
                            "\"respelled\" is null; a server's delete says true or false, and an upload leaves it out",
                        ))
                    }
                    some => row.respelled = Some(some),
                },
            }
        }
        if row.op.is_none() {
            return Err(de::Error::missing_field("op"));
        }
        Ok(())
    }
}

/// Which values of a list keep their JSON.
#[derive(Clone, Copy)]
enum JsonAt<'p> {
    /// Every value, in the list's order.
    All,
    /// The key's values (at these positions of the list), in primary key
    /// order.
    Key(&'p [usize]),
}

/// What a list of values is, for the checks and messages of its values.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ListKind {
    /// An upsert's `values` or a delete's `key`: an uploader's marker for a
    /// value it could not read refuses the row with its reason.
    Values,
    /// The key a row moved from.
    MovedFrom,
}

/// A list of values, converted and checked as read.
pub(super) struct Cells<V> {
    /// Converted values, up to the first problem.
    pub(super) values: Vec<V>,
    /// The JSON kept (see [`JsonAt`]).
    pub(super) json: Vec<Value>,
    /// Why the row is refused for one of its values (the first).
    pub(super) problem: Option<String>,
    /// Values sent, any beyond the columns included (those are counted,
    /// not read).
    pub(super) count: usize,
}

struct CellsSeed<'p, 's, V> {
    slots: &'p [Slot<'s>],
    json: JsonAt<'p>,
    kind: ListKind,
    convert: Convert<V>,
}

impl<'de, V> DeserializeSeed<'de> for CellsSeed<'_, '_, V> {
    type Value = Option<Cells<V>>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> std::result::Result<Self::Value, D::Error> {
        deserializer.deserialize_option(self)
    }
}

impl<'de, V> Visitor<'de> for CellsSeed<'_, '_, V> {
    type Value = Option<Cells<V>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of values")
    }

    fn visit_none<E: de::Error>(self) -> std::result::Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> std::result::Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> std::result::Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Self::Value, A::Error> {
        let json = match self.json {
            JsonAt::All => Vec::with_capacity(self.slots.len()),
            JsonAt::Key(positions) => vec![Value::Null; positions.len()],
        };
        let mut cells = Cells { values: Vec::with_capacity(self.slots.len()), json, problem: None, count: 0 };
        for (i, slot) in self.slots.iter().enumerate() {
            if seq.next_element_seed(ValueSeed { list: &self, i, slot, cells: &mut cells })?.is_none() {
                return Ok(Some(cells));
            }
        }
        while seq.next_element::<IgnoredAny>()?.is_some() {
            cells.count += 1;
        }
        Ok(Some(cells))
    }
}

/// One value of a list, taken into it as the parser hands it over (never
/// moved out through the parser's layers first).
struct ValueSeed<'c, 'p, 's, V> {
    list: &'c CellsSeed<'p, 's, V>,
    /// Its place in the list.
    i: usize,
    slot: &'p Slot<'s>,
    cells: &'c mut Cells<V>,
}

impl<V> ValueSeed<'_, '_, '_, V> {
    fn take(self, value: Json<'_>) {
        let cells = self.cells;
        cells.count += 1;
        if cells.problem.is_none() {
            cells.problem = self.list.check(self.slot, &value, &mut cells.values);
        }
        match self.list.json {
            JsonAt::All => cells.json.push(value.to_value()),
            JsonAt::Key(positions) => {
                for (k, _) in positions.iter().enumerate().filter(|(_, &p)| p == self.i) {
                    cells.json[k] = value.to_value();
                }
            }
        }
    }
}

impl<'de, V> DeserializeSeed<'de> for ValueSeed<'_, '_, '_, V> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> std::result::Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de, V> Visitor<'de> for ValueSeed<'_, '_, '_, V> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> std::result::Result<(), E> {
        self.take(Json::Null);
        Ok(())
    }

    fn visit_none<E: de::Error>(self) -> std::result::Result<(), E> {
        self.take(Json::Null);
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> std::result::Result<(), E> {
        self.take(Json::Bool(b));
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, i: i64) -> std::result::Result<(), E> {
        self.take(Json::Number(i.into()));
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, u: u64) -> std::result::Result<(), E> {
        self.take(Json::Number(u.into()));
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, f: f64) -> std::result::Result<(), E> {
        let number = serde_json::Number::from_f64(f).ok_or_else(|| E::custom("a number JSON cannot hold"))?;
        self.take(Json::Number(number));
        Ok(())
    }

    fn visit_str<E: de::Error>(self, s: &str) -> std::result::Result<(), E> {
        self.take(Json::Str(Cow::Borrowed(s)));
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> std::result::Result<(), A::Error> {
        let value = Value::deserialize(de::value::SeqAccessDeserializer::new(seq))?;
        self.take(Json::Other(Cow::Owned(value)));
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> std::result::Result<(), A::Error> {
        let value = Value::deserialize(de::value::MapAccessDeserializer::new(map))?;
        self.take(Json::Other(Cow::Owned(value)));
        Ok(())
    }
}

impl<V> CellsSeed<'_, '_, V> {
    /// Converts one value into `values`, or says why the row is refused.
    fn check(&self, slot: &Slot<'_>, value: &Json<'_>, values: &mut Vec<V>) -> Option<String> {
        let name = slot.name;
        match self.kind {
            ListKind::Values => {
                if let Some(reason) = value.unreadable() {
                    return Some(reason);
                }
                if value.is_null() && !slot.nullable {
                    return Some(format!("column {name} may not be NULL"));
                }
                match (self.convert)(slot.ty, value) {
                    Ok(v) => values.push(v),
                    Err(reason) => return Some(format!("column {name}: {reason}")),
                }
            }
            ListKind::MovedFrom => match (self.convert)(slot.ty, value) {
                Ok(_) if value.is_null() => return Some(format!("moved_from: column {name} may not be NULL")),
                Ok(v) => values.push(v),
                Err(reason) => return Some(format!("moved_from: column {name}: {reason}")),
            },
        }
        None
    }
}
