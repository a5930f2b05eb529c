//! The server's apply of an upload (PostgreSQL), set-based: the rows of each
//! table are staged once in a temporary table (typed by the column casts),
//! classified against tracking in one join, and written with one statement
//! per kind of write. Writes compare the row's `xmin` with the one seen at
//! classification, so a row changed concurrently is never overwritten
//! blindly: it is classified again.
//!
//! A staged table has `idx` (the row's position in the upload), `op`, `base`
//! and `c0, c1, ...`: the uploaded columns in the changeset's order. When
//! the upload changes keys, `f0, f1, ...` hold each key change's old key
//! (primary key order; NULL for other rows): a key change is classified
//! against the row at its old key, and written as one `UPDATE` of it.

use crate::changeset::Op;
use crate::ident::quote_ident;
use crate::setup::Filter;
use crate::sql::partition::{lock_via_parents, part_match, row_filter, row_filter_with, via_equality, FilterValues};
use crate::sql::query::{Binds, Col, Columns, Decode, DecodeError, Fields, Flag, NoRows, Param, Query};
use crate::sql::tracking::{self, tracked_state};
use crate::sql::{column_list, Scope};
use crate::types::{json_to_pg_text, pg_text_to_json, LogicalType};
use crate::upload::{RowState, ServerState};
use crate::watermark::Horizon;
use serde_json::{Map, Value};

/// For each table of the scope, the columns its upload carries (positions in
/// the schema's columns, in changeset order), or `None` when the upload has
/// no rows for it.
pub type Staged<'a> = &'a [Option<Vec<usize>>];

/// Name of the staged column holding table `t`'s column `name`.
fn staged_column(scope: &Scope<'_>, staged: Staged<'_>, t: usize, name: &str) -> Option<String> {
    let column = scope.table(t).column_index(name)?;
    let position = staged[t].as_ref()?.iter().position(|c| *c == column)?;
    Some(format!("c{position}"))
}

fn staged_key_equal(scope: &Scope<'_>, staged: Staged<'_>, t: usize, alias: &str, stage_alias: &str) -> String {
    keyed_equal(scope, staged, t, StageKey::Sent, alias, stage_alias)
}

/// Which key of a staged row a statement looks the server's row up by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StageKey {
    /// The key the row has as sent.
    Sent,
    /// A key change's old key: the row the change was made on.
    MovedFrom,
}

fn keyed_equal(scope: &Scope<'_>, staged: Staged<'_>, t: usize, key: StageKey, alias: &str, stage_alias: &str) -> String {
    scope
        .table(t)
        .key_columns()
        .iter()
        .enumerate()
        .map(|(i, column)| {
            let c = match key {
                StageKey::Sent => staged_column(scope, staged, t, &column.name).unwrap_or_else(|| "NULL".into()),
                StageKey::MovedFrom => format!("f{i}"),
            };
            format!("{alias}.{} {} {stage_alias}.{c}", quote_ident(&column.name), scope.schema.operator(column, "="))
        })
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// Drops a stage left by an earlier apply in the same transaction.
pub fn drop_stage(scope: &Scope<'_>, t: usize) -> Query<NoRows> {
    Query::exec(format!("DROP TABLE IF EXISTS {}", scope.stage(t)), Binds::new())
}

/// Whether a stage is left from an earlier apply in this transaction.
pub fn stage_exists(scope: &Scope<'_>, t: usize) -> Query<Flag> {
    let mut binds = Binds::new();
    let exists = format!("(to_regclass({}) IS NOT NULL)::text", binds.bind(scope.stage(t)));
    Flag::select("exists", exists, binds)
}

/// `ANALYZE` of the stage of table `t`, for the columns the apply's
/// statements join or filter on: `idx`, `op`, the key, the filter's
/// columns, and the columns `via` children join this table by.
pub fn analyze_stage(scope: &Scope<'_>, t: usize, columns: &[usize]) -> Query<NoRows> {
    let table = scope.table(t);
    let mut wanted: Vec<&str> = table.primary_key.iter().map(String::as_str).collect();
    match &table.filter {
        None => {}
        Some(Filter::Columns(map)) => wanted.extend(map.keys().map(String::as_str)),
        Some(Filter::Via { on, .. }) => wanted.extend(on.keys().map(String::as_str)),
    }
    for child in &scope.schema.tables {
        if let Some(Filter::Via { parent, on }) = &child.filter {
            if *parent == table.name {
                wanted.extend(on.values().map(String::as_str));
            }
        }
    }
    let mut analyzed = vec!["idx".to_string(), "op".to_string()];
    for (i, &c) in columns.iter().enumerate() {
        if wanted.contains(&table.columns[c].name.as_str()) {
            analyzed.push(format!("c{i}"));
        }
    }
    Query::exec(format!("ANALYZE {} ({})", scope.stage(t), analyzed.join(", ")), Binds::new())
}

/// How the server stores an uploaded column, read from its catalog when an
/// upload is applied (so a type changed since provisioning is followed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StageType {
    /// The column's declared type (`numeric(12,2)`, `public.mood`).
    pub declared: String,
    /// The type a value is read as: the declared type without its typmod
    /// (and a domain's base type), so reading cuts and rounds nothing.
    pub input: String,
    /// The stage column's type: the declared type, or a domain's base type
    /// (a stage holds NULLs a domain may refuse: a delete's other columns).
    pub stored: String,
    /// The domain a value is checked against, for a domain-typed column.
    pub domain: Option<String>,
    /// Storing may round or cut a value (the type has a typmod): the stage
    /// checks each value survives it unchanged.
    pub rounds: bool,
    /// The default an insert fills in for NULL (a NOT NULL column with a
    /// default only the server computes), as the catalog prints it.
    pub fills: Option<String>,
    /// A sequence makes the column's values (an identity column, or a
    /// default calling `nextval`): a device leaves it empty, and may not
    /// set a value the server's row does not hold (the server's next value
    /// would collide with it).
    pub sequenced: bool,
    /// The column's collation (quoted, schema-qualified) where it is not
    /// its stored type's: the stage's column takes it, so staged keys
    /// compare as the table's do (`'ka'` and `'KA'` under a case-blind
    /// collation are one key).
    pub collation: Option<String>,
}

impl StageType {
    /// The staged value of text `text`: read, checked against its domain,
    /// cast to the stored type (a value the type refuses fails the
    /// statement; one it would cut or round is caught by [`Self::changes`]).
    fn value(&self, text: &str) -> String {
        match &self.domain {
            None if self.input == self.stored => format!("{text}::{}", self.input),
            None => format!("({text}::{})::{}", self.input, self.stored),
            Some(domain) => format!("CASE WHEN {text} IS NOT NULL THEN (({text}::{})::{domain})::{} END", self.input, self.stored),
        }
    }

    /// True when storing text `text` would change it.
    fn changes(&self, text: &str) -> String {
        format!("{text}::{0} IS DISTINCT FROM ({text}::{0})::{1}", self.input, self.declared)
    }

    /// The stage column's definition: its stored type and collation.
    fn definition(&self) -> String {
        match &self.collation {
            None => self.stored.clone(),
            Some(collation) => format!("{} COLLATE {collation}", self.stored),
        }
    }
}

/// Creates the (empty) stage of table `t`: `idx`, `op`, `base`, one column
/// per uploaded column (`c0, c1, ...`, in changeset order, typed as the
/// server stores them), with `moves` the old keys of key changes (`f0,
/// f1, ...`), and `tandem_inexact`, the first column whose value storing
/// would change.
pub fn create_stage(scope: &Scope<'_>, t: usize, columns: &[usize], types: &[StageType], moves: bool) -> Query<NoRows> {
    let mut defs: Vec<String> = types.iter().enumerate().map(|(i, ty)| format!("c{i} {}, ", ty.definition())).collect();
    if moves {
        for (i, ty) in key_types(scope, t, columns, types).into_iter().enumerate() {
            defs.push(format!("f{i} {}, ", ty.definition()));
        }
    }
    let sql = format!(
        "CREATE TEMP TABLE {} (idx int4, op text, base xid8, {}tandem_inexact text) ON COMMIT DROP",
        scope.stage(t),
        defs.concat(),
    );
    Query::exec(sql, Binds::new())
}

/// The stage types of table `t`'s key columns, in primary key order (an
/// upload always carries the key).
fn key_types<'a>(scope: &Scope<'_>, t: usize, columns: &[usize], types: &'a [StageType]) -> Vec<&'a StageType> {
    scope.table(t).key_indexes().iter().filter_map(|k| columns.iter().position(|c| c == k).and_then(|p| types.get(p))).collect()
}

/// The rows of one table's upload, column by column, as the stage reads
/// them: each row's position in the upload, its op, its base version, and
/// the text of each uploaded column (NULL for the non-key columns of a
/// delete).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StageRows {
    pub idx: Vec<i32>,
    pub ops: Vec<Option<String>>,
    pub bases: Vec<Option<String>>,
    pub columns: Vec<Vec<Option<String>>>,
    /// Old keys of key changes, per key column (empty when the stage has
    /// no `f` columns).
    pub from: Vec<Vec<Option<String>>>,
}

/// Stages rows into the stage of table `t` from arrays. A value the
/// column's type refuses fails the statement (the caller narrows down to
/// the row); a value storing would round or cut names its column in
/// `tandem_inexact`.
pub fn fill_stage(scope: &Scope<'_>, t: usize, columns: &[usize], types: &[StageType], rows: StageRows) -> Query<NoRows> {
    let table = scope.table(t);
    let mut binds = Binds::new();
    let mut names = vec!["idx".to_string(), "op".to_string(), "base".to_string()];
    let mut arrays = vec![
        format!("{}::int4[]", binds.bind(Param::Int4Array(rows.idx))),
        format!("{}::text[]", binds.bind(Param::TextArray(rows.ops))),
        format!("{}::text[]", binds.bind(Param::TextArray(rows.bases))),
    ];
    let mut selects = vec!["u.idx".to_string(), "u.op".to_string(), "u.base::xid8".to_string()];
    let mut inexact = Vec::new();
    for (i, ((&c, values), ty)) in columns.iter().zip(rows.columns).zip(types).enumerate() {
        names.push(format!("c{i}"));
        arrays.push(format!("{}::text[]", binds.bind(Param::TextArray(values))));
        let text = format!("u.c{i}");
        selects.push(ty.value(&text));
        if ty.rounds {
            inexact.push(format!("WHEN {} THEN {}", ty.changes(&text), crate::ident::quote_literal(&table.columns[c].name)));
        }
    }
    for (i, (values, ty)) in rows.from.into_iter().zip(key_types(scope, t, columns, types)).enumerate() {
        names.push(format!("f{i}"));
        arrays.push(format!("{}::text[]", binds.bind(Param::TextArray(values))));
        selects.push(ty.value(&format!("u.f{i}")));
    }
    selects.push(if inexact.is_empty() { "NULL".to_string() } else { format!("CASE {} END", inexact.join(" ")) });
    let sql = format!(
        "INSERT INTO {} SELECT {} FROM unnest({}) AS u({})",
        scope.stage(t),
        selects.join(", "),
        arrays.join(", "),
        names.join(", ")
    );
    Query::exec(sql, binds)
}

/// Reads a staged row's idx.
pub struct IdxOnly(Col);

impl Decode for IdxOnly {
    type Row<'a> = usize;
    fn decode<'a>(&self, f: Fields<'a>) -> Result<usize, DecodeError> {
        f.index(self.0)
    }
}

/// Locks `FOR KEY SHARE` the server's `via` parent rows of table `t`'s
/// staged rows: those the uploaded rows name, and those of the server's
/// rows at their keys (old keys too, with `moves`). A parent that moves
/// to another partition locks itself and the rows under it `FOR UPDATE`
/// (`tracking`), so this waits for an open move to commit, and
/// classification, a statement later, sees where the rows went; or the
/// move waits for this upload and then takes its rows along. `None` for a
/// table not filtered `via` a parent.
pub fn lock_parents(scope: &Scope<'_>, staged: Staged<'_>, t: usize, moves: bool) -> Option<Query<NoRows>> {
    let table = scope.table(t);
    let Some(Filter::Via { on, .. }) = &table.filter else { return None };
    let named = |source: &dyn Fn(&str) -> String| -> String {
        on.keys().map(|c| format!("{} AS {}", source(c), quote_ident(c))).collect::<Vec<_>>().join(", ")
    };
    let sent = named(&|c| staged_column(scope, staged, t, c).map(|c| format!("s.{c}")).unwrap_or_else(|| "NULL".into()));
    let held = named(&|c| format!("r.{}", quote_ident(c)));
    let mut branches = vec![
        format!("SELECT {sent} FROM {} s WHERE s.op = 'upsert'", scope.stage(t)),
        format!(
            "SELECT {held} FROM {} s JOIN {} r ON {}",
            scope.stage(t),
            table.table_name().quoted(),
            keyed_equal(scope, staged, t, StageKey::Sent, "r", "s")
        ),
    ];
    if moves {
        branches.push(format!(
            "SELECT {held} FROM {} s JOIN {} r ON {}",
            scope.stage(t),
            table.table_name().quoted(),
            keyed_equal(scope, staged, t, StageKey::MovedFrom, "r", "s")
        ));
    }
    let sql = lock_via_parents(scope, t, &format!("({})", branches.join(" UNION ALL ")))?;
    Some(Query::exec(sql, Binds::new()))
}

/// A staged row whose key PostgreSQL holds equal to an earlier row's of
/// the same upload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RepeatedKey {
    pub idx: usize,
    /// The first row of that key.
    pub first: usize,
    /// The first row of that key is a delete: a device deleted a row and
    /// inserted it again under another text of its key (`'Sku-1'`, then
    /// `'SKU-1'` under a case-blind collation).
    pub after_delete: bool,
}

/// Reads [`repeated_keys`]' rows.
pub struct RepeatedKeyRow {
    idx: Col,
    first: Col,
    after_delete: Col,
}

impl Decode for RepeatedKeyRow {
    type Row<'a> = RepeatedKey;
    fn decode<'a>(&self, f: Fields<'a>) -> Result<RepeatedKey, DecodeError> {
        Ok(RepeatedKey { idx: f.index(self.idx)?, first: f.index(self.first)?, after_delete: f.bool(self.after_delete)? })
    }
}

/// Staged rows whose key PostgreSQL holds equal to an earlier row's of the
/// same upload (`3` and `3.0` in a numeric key, one instant in two time
/// zones): each but the first.
pub fn repeated_keys(scope: &Scope<'_>, staged: Staged<'_>, t: usize) -> Query<RepeatedKeyRow> {
    let keys: Vec<String> =
        scope.table(t).primary_key.iter().map(|k| staged_column(scope, staged, t, k).unwrap_or_else(|| "NULL".into())).collect();
    let mut columns = Columns::new();
    let decoder = RepeatedKeyRow {
        idx: columns.push("idx", "idx::text"),
        first: columns.push("first", "first_idx::text"),
        after_delete: columns.push("after_delete", "(first = 'delete')::text"),
    };
    let sql = format!(
        "SELECT {} FROM (SELECT idx, row_number() OVER w AS n, first_value(op) OVER w AS first, \
         first_value(idx) OVER w AS first_idx FROM {} \
         WINDOW w AS (PARTITION BY {} ORDER BY idx)) d WHERE n > 1",
        columns.sql(),
        scope.stage(t),
        keys.join(", "),
    );
    Query::new(sql, Binds::new(), &columns, decoder)
}

/// Reads a staged row's idx and a column name.
pub struct IdxColumn {
    idx: Col,
    column: Col,
}

impl Decode for IdxColumn {
    type Row<'a> = (usize, String);
    fn decode<'a>(&self, f: Fields<'a>) -> Result<(usize, String), DecodeError> {
        Ok((f.index(self.idx)?, f.required(self.column)?.to_string()))
    }
}

/// Staged rows that set column `column` (staged position), whose values a
/// sequence makes, to a value the server's row does not hold: a device
/// cannot know which values the sequence hands out next, and a value it
/// picks could collide with one, or use the sequence up. The server's own
/// value is no pick: the row's at its key, or at the old key of a key
/// change (`moves`: the stage has the old keys); and a row the device had
/// from the server (a base) that the server no longer holds is left to
/// classify, as the conflict it is.
pub fn sequenced_values(scope: &Scope<'_>, staged: Staged<'_>, t: usize, column: usize, moves: bool) -> Query<IdxOnly> {
    let table = scope.table(t);
    let name = staged[t].as_deref().and_then(|cols| cols.get(column)).map(|&c| quote_ident(&table.columns[c].name));
    let name = name.unwrap_or_else(|| "NULL".into());
    let first_key = quote_ident(&table.primary_key[0]);
    let binds = Binds::new();
    let mut columns = Columns::new();
    let decoder = IdxOnly(columns.push("idx", "s.idx::text"));
    let (from_join, from_holds, from_gone) = if moves {
        (
            format!(" LEFT JOIN {} f ON {}", table.table_name().quoted(), keyed_equal(scope, staged, t, StageKey::MovedFrom, "f", "s")),
            format!(" AND f.{name} IS DISTINCT FROM s.c{column}"),
            format!(" AND f.{first_key} IS NULL"),
        )
    } else {
        Default::default()
    };
    let sql = format!(
        "SELECT {} FROM {} s LEFT JOIN {} r ON {}{from_join} WHERE s.op = 'upsert' AND s.c{column} IS NOT NULL \
         AND r.{name} IS DISTINCT FROM s.c{column}{from_holds} AND NOT (s.base IS NOT NULL AND r.{first_key} IS NULL{from_gone})",
        columns.sql(),
        scope.stage(t),
        table.table_name().quoted(),
        staged_key_equal(scope, staged, t, "r", "s"),
    );
    Query::new(sql, binds, &columns, decoder)
}

/// The tables among `tables` where the delete statement just run removed,
/// beside the rows the upload deletes itself (the staged deletes `deleting`
/// of table `t`, those it writes), a row the uploader had not received: one
/// outside the uploader's partition (`values`; its exit says where it
/// was), or, with `horizon` (the upload said what its file received), one
/// whose version the horizon does not cover and that none of its own
/// uploads wrote. That is a row the server's `ON DELETE CASCADE` (or a
/// trigger) took with a row the device deleted: another tenant's row under
/// this tenant's (helper 81), checked whatever the uploader says (helper
/// 88), or one added or changed by another writer after the device last
/// pulled (helper 77); or a row of the same table whose own delete lost
/// its conflict (helper 87). Deleting on would lose it without a trace.
/// `mark` is a `tandem_seq` taken before the statement. `None` when no
/// table can hold such a row.
#[allow(clippy::too_many_arguments)]
pub fn unseen_removals(
    scope: &Scope<'_>,
    staged: Staged<'_>,
    t: usize,
    tables: &[usize],
    horizon: Option<&Horizon>,
    values: &FilterValues,
    mark: i64,
    deleting: &[usize],
) -> Option<Query<crate::sql::query::TableIndex>> {
    let mut binds = Binds::new();
    let mark = format!("{}::int8", binds.bind(mark));
    let unseen = horizon.map(|horizon| {
        let snapshot = binds.bind(horizon.snapshot().to_string());
        let own = binds.bind(horizon.own().iter().map(u64::to_string).collect::<Vec<_>>());
        format!(
            "(r.tandem_before IS NOT NULL AND r.tandem_before <> '0'::xid8 \
             AND NOT pg_visible_in_snapshot(r.tandem_before, {snapshot}::text::pg_snapshot) \
             AND NOT r.tandem_before = ANY({own}::text[]::xid8[]))"
        )
    });
    let mut checks: Vec<(usize, String)> = Vec::with_capacity(tables.len());
    for &u in tables {
        let elsewhere = part_match(scope, u, "e.tandem_part", &mut binds, values).map(|mine| {
            format!(
                "EXISTS (SELECT 1 FROM {} e WHERE {} AND e.tandem_stamp = pg_current_xact_id() AND NOT coalesce({mine}, false))",
                scope.exits(u),
                crate::sql::keys_equal(scope, u, "e", "r"),
            )
        });
        // Of the table's own rows, one the upload deletes and does not
        // write: its delete lost its conflict.
        let lost = (u == t).then(|| {
            format!(
                "EXISTS (SELECT 1 FROM {} s WHERE s.op = 'delete' AND {})",
                scope.stage(t),
                staged_key_equal(scope, staged, t, "r", "s")
            )
        });
        let unreceived: Vec<String> = unseen.iter().cloned().chain(elsewhere).chain(lost).collect();
        if unreceived.is_empty() {
            continue;
        }
        let unintended = match u == t {
            true => format!(
                "NOT EXISTS (SELECT 1 FROM {} s WHERE s.op = 'delete' AND s.idx = ANY({}::int4[]) AND {})",
                scope.stage(t),
                binds.bind(indexes(deleting)),
                staged_key_equal(scope, staged, t, "d", "s")
            ),
            false => "true".to_string(),
        };
        checks.push((
            u,
            format!(
                "EXISTS (SELECT 1 FROM ({}) r WHERE {})",
                tracking::removed_after(scope, u, &mark, &unintended),
                unreceived.join(" OR ")
            ),
        ));
    }
    if checks.is_empty() {
        return None;
    }
    let checked: Vec<usize> = checks.iter().map(|(u, _)| *u).collect();
    let (sql, columns, decoder) = crate::sql::query::table_probes(&checked, |u| {
        checks.iter().find(|(v, _)| *v == u).map(|(_, condition)| condition.clone()).unwrap_or_else(|| "false".into())
    });
    Some(Query::new(sql, binds, &columns, decoder))
}

/// A parent's key change: its old key and its new key, each value as
/// sent, in primary key order.
pub type KeyChange = (Vec<Option<String>>, Vec<Option<String>>);

/// Staged upserts of table `c` whose server row holds, in `columns` (a
/// foreign key onto a parent's primary key, in that key's order), the old
/// key of one of `moves` (a parent's key changes, old and new key, each
/// value as sent), and whose upload follows that change there: to its new
/// key (the file's own `ON UPDATE CASCADE`) or to NULL (`SET NULL`). Rows
/// that came with a key change the server refused, to be refused with it
/// (helper 84); a row the program pointed at another parent is its own.
pub fn tied_to(scope: &Scope<'_>, staged: Staged<'_>, c: usize, columns: &[String], moves: &[KeyChange]) -> Query<IdxOnly> {
    let table = scope.table(c);
    let uploaded = staged[c].as_deref().unwrap_or_default();
    let at: Option<Vec<usize>> = columns.iter().map(|name| uploaded.iter().position(|&u| table.columns[u].name == *name)).collect();
    let mut binds = Binds::new();
    let mut out = Columns::new();
    let decoder = IdxOnly(out.push("idx", "s.idx::text"));
    let mut array =
        |pick: &dyn Fn(&KeyChange) -> Option<String>| format!("{}::text[]", binds.bind(moves.iter().map(pick).collect::<Vec<_>>()));
    let olds: Vec<String> = (0..columns.len()).map(|k| array(&|m| m.0.get(k).cloned().flatten())).collect();
    let news: Vec<String> = (0..columns.len()).map(|k| array(&|m| m.1.get(k).cloned().flatten())).collect();
    let held: Vec<String> = columns.iter().map(|name| format!("r.{}::text", quote_ident(name))).collect();
    let follows = match &at {
        Some(at) => {
            let sent: Vec<String> = at.iter().map(|i| format!("s.c{i}::text")).collect();
            let emptied: Vec<String> = at.iter().map(|i| format!("s.c{i} IS NULL")).collect();
            format!(
                "(({}, {}) IN (SELECT * FROM unnest({}, {})) OR (({}) IN (SELECT * FROM unnest({})) AND {}))",
                held.join(", "),
                sent.join(", "),
                olds.join(", "),
                news.join(", "),
                held.join(", "),
                olds.join(", "),
                emptied.join(" AND "),
            )
        }
        None => "false".to_string(),
    };
    let sql = format!(
        "SELECT {} FROM {} s JOIN {} r ON {} WHERE s.op = 'upsert' AND {follows}",
        out.sql(),
        scope.stage(c),
        table.table_name().quoted(),
        staged_key_equal(scope, staged, c, "r", "s"),
    );
    Query::new(sql, binds, &out, decoder)
}

/// `keys` (each `width` values as text) bound column by column, as
/// `text[]` arrays to `unnest` side by side.
fn key_arrays(binds: &mut Binds, width: usize, keys: &[Vec<Option<String>>]) -> Vec<String> {
    (0..width)
        .map(|k| format!("{}::text[]", binds.bind(keys.iter().map(|key| key.get(k).cloned().flatten()).collect::<Vec<_>>())))
        .collect()
}

/// Staged upserts of table `c` whose foreign key `columns` (onto table
/// `p`'s primary key, in that key's order) names one of `parents` (keys,
/// each value as PostgreSQL reads it) that the server does not hold: rows
/// under a new parent the server refused in the same upload, which would
/// fail the foreign key once the rest is sent again without it.
pub fn under_refused(
    scope: &Scope<'_>,
    staged: Staged<'_>,
    c: usize,
    columns: &[String],
    p: usize,
    parents: &[Vec<Option<String>>],
) -> Option<Query<IdxOnly>> {
    let sent: Vec<String> =
        columns.iter().map(|name| staged_column(scope, staged, c, name).map(|at| format!("s.{at}"))).collect::<Option<_>>()?;
    let parent = scope.table(p);
    let mut binds = Binds::new();
    let mut out = Columns::new();
    let decoder = IdxOnly(out.push("idx", "s.idx::text"));
    let arrays = key_arrays(&mut binds, columns.len(), parents);
    let held: Vec<String> = parent.primary_key.iter().zip(&sent).map(|(k, v)| format!("pr.{} = {v}", quote_ident(k))).collect();
    let sql = format!(
        "SELECT {} FROM {} s WHERE s.op = 'upsert' AND ({}) IN (SELECT * FROM unnest({})) \
         AND NOT EXISTS (SELECT 1 FROM {} pr WHERE {})",
        out.sql(),
        scope.stage(c),
        sent.iter().map(|v| format!("{v}::text")).collect::<Vec<_>>().join(", "),
        arrays.join(", "),
        parent.table_name().quoted(),
        held.join(" AND "),
    );
    Some(Query::new(sql, binds, &out, decoder))
}

/// Staged rows of table `c` whose op is `op` and whose server row (looked
/// up by `key`) holds, in `columns` (a foreign key onto a parent's primary
/// key, in that key's order), one of `parents` (keys, each value as sent):
/// deletes under a parent whose own delete in the upload lost its
/// conflict, which the file's own `ON DELETE CASCADE` deleted with it
/// (helper 91); changes of rows the server's own cascade just moved under
/// a parent's new key (helper 95), key changes by their old key.
pub fn staged_under(
    scope: &Scope<'_>,
    staged: Staged<'_>,
    c: usize,
    columns: &[String],
    parents: &[Vec<Option<String>>],
    (op, key): (Op, StageKey),
) -> Query<IdxOnly> {
    let table = scope.table(c);
    let mut binds = Binds::new();
    let mut out = Columns::new();
    let decoder = IdxOnly(out.push("idx", "s.idx::text"));
    let arrays = key_arrays(&mut binds, columns.len(), parents);
    let held: Vec<String> = columns.iter().map(|name| format!("r.{}::text", quote_ident(name))).collect();
    let sql = format!(
        "SELECT {} FROM {} s JOIN {} r ON {} WHERE s.op = '{}' AND ({}) IN (SELECT * FROM unnest({}))",
        out.sql(),
        scope.stage(c),
        table.table_name().quoted(),
        keyed_equal(scope, staged, c, key, "r", "s"),
        op.as_str(),
        held.join(", "),
        arrays.join(", "),
    );
    Query::new(sql, binds, &out, decoder)
}

/// Staged upserts of table `c` whose foreign key `columns` (onto table
/// `p`'s primary key, in that key's order) takes a value the server's row
/// does not hold (at its key, or, with `moves`, at a key change's old key:
/// helper 90), naming a parent row outside the uploader's partition
/// (`values`) that the upload does not bring itself. No device of the
/// partition can see that row; pointing at it would tie another tenant's
/// row to this one's (a delete of it refused for this row's sake; helper
/// 88). `None` for an unfiltered parent, or a key the upload leaves out.
pub fn references_outside(
    scope: &Scope<'_>,
    staged: Staged<'_>,
    c: usize,
    columns: &[String],
    p: usize,
    values: &FilterValues,
    moves: bool,
) -> Option<Query<IdxOnly>> {
    let mut binds = Binds::new();
    let mine = row_filter(scope, p, "pr", &mut binds, values)?;
    let sent: Vec<String> =
        columns.iter().map(|name| staged_column(scope, staged, c, name).map(|at| format!("s.{at}"))).collect::<Option<_>>()?;
    let parent = scope.table(p);
    let named = |alias: &str| -> Vec<String> {
        parent.primary_key.iter().zip(&sent).map(|(k, v)| format!("{alias}.{} = {v}", quote_ident(k))).collect()
    };
    let brought = match staged[p].is_some() {
        true => {
            let staged_parent: Vec<String> = parent
                .primary_key
                .iter()
                .zip(&sent)
                .filter_map(|(k, v)| staged_column(scope, staged, p, k).map(|at| format!("sp.{at} = {v}")))
                .collect();
            format!(" AND NOT EXISTS (SELECT 1 FROM {} sp WHERE sp.op = 'upsert' AND {})", scope.stage(p), staged_parent.join(" AND "))
        }
        false => String::new(),
    };
    let child = scope.table(c).table_name().quoted();
    let first_key = quote_ident(&scope.table(c).primary_key[0]);
    let holds = |alias: &str| {
        let held: Vec<String> = columns.iter().map(|name| format!("{alias}.{}", quote_ident(name))).collect();
        format!("({alias}.{first_key} IS NOT NULL AND ({}) IS NOT DISTINCT FROM ({}))", held.join(", "), sent.join(", "))
    };
    let (from_join, from_holds) = match moves {
        true => (
            format!(" LEFT JOIN {child} f ON {}", keyed_equal(scope, staged, c, StageKey::MovedFrom, "f", "s")),
            format!(" OR {}", holds("f")),
        ),
        false => Default::default(),
    };
    let mut out = Columns::new();
    let decoder = IdxOnly(out.push("idx", "s.idx::text"));
    let sql = format!(
        "SELECT {} FROM {} s LEFT JOIN {child} r ON {}{from_join} WHERE s.op = 'upsert' AND {} \
         AND NOT ({}{from_holds}) \
         AND EXISTS (SELECT 1 FROM {} pr WHERE {} AND NOT coalesce({mine}, false)){brought}",
        out.sql(),
        scope.stage(c),
        staged_key_equal(scope, staged, c, "r", "s"),
        sent.iter().map(|v| format!("{v} IS NOT NULL")).collect::<Vec<_>>().join(" AND "),
        holds("r"),
        parent.table_name().quoted(),
        named("pr").join(" AND "),
    );
    Some(Query::new(sql, binds, &out, decoder))
}

/// Sets, in the staged rows `idx` of table `c`, the uploaded columns at
/// `positions` (a foreign key onto a parent's primary key, in that key's
/// order; their stage types in `types`) to `key` (each value as sent): rows
/// that followed a parent's key change that did not apply go in under the
/// parent's old key, where the server keeps the parent (helper 89).
pub fn repoint(
    scope: &Scope<'_>,
    c: usize,
    types: &[StageType],
    positions: &[usize],
    idx: &[usize],
    key: &[Option<String>],
) -> Query<NoRows> {
    let mut binds = Binds::new();
    let sets = staged_values(types, positions, key, &mut binds).into_iter().map(|(p, value)| format!("c{p} = {value}"));
    let sql = format!(
        "UPDATE {} SET {} WHERE idx = ANY({}::int4[])",
        scope.stage(c),
        sets.collect::<Vec<_>>().join(", "),
        binds.bind(indexes(idx))
    );
    Query::exec(sql, binds)
}

/// As [`repoint`], for rows sent under the old key `from` of a key change
/// of parent table `p` this upload made: they go in under its new key
/// `to`, where the server's `ON UPDATE CASCADE` would have moved them had
/// they been on the server (helper 100). Not where the server holds a
/// parent at `from` again (one the upload inserted there).
#[allow(clippy::too_many_arguments)]
pub fn follow_parent(
    scope: &Scope<'_>,
    c: usize,
    p: usize,
    types: &[StageType],
    positions: &[usize],
    idx: &[usize],
    from: &[Option<String>],
    to: &[Option<String>],
) -> Query<NoRows> {
    let mut binds = Binds::new();
    let sets: Vec<String> =
        staged_values(types, positions, to, &mut binds).into_iter().map(|(p, value)| format!("c{p} = {value}")).collect();
    let parent = scope.table(p);
    let held: Vec<String> = parent
        .primary_key
        .iter()
        .zip(staged_values(types, positions, from, &mut binds))
        .map(|(column, (_, value))| format!("pr.{} = {value}", quote_ident(column)))
        .collect();
    let sql = format!(
        "UPDATE {} SET {} WHERE idx = ANY({}::int4[]) AND NOT EXISTS (SELECT 1 FROM {} pr WHERE {})",
        scope.stage(c),
        sets.join(", "),
        binds.bind(indexes(idx)),
        parent.table_name().quoted(),
        held.join(" AND "),
    );
    Query::exec(sql, binds)
}

/// Each of `key` (values as sent) as the stage column at its position in
/// `positions` holds it.
fn staged_values(types: &[StageType], positions: &[usize], key: &[Option<String>], binds: &mut Binds) -> Vec<(usize, String)> {
    positions
        .iter()
        .zip(key)
        .map(|(&p, value)| {
            let text = format!("{}::text", binds.bind(value.clone()));
            (p, types.get(p).map(|ty| ty.value(&text)).unwrap_or(text))
        })
        .collect()
}

/// Staged rows with a value storing would change, each with that column.
pub fn inexact_rows(scope: &Scope<'_>, t: usize) -> Query<IdxColumn> {
    let mut columns = Columns::new();
    let decoder = IdxColumn { idx: columns.push("idx", "idx::text"), column: columns.push("column", "tandem_inexact") };
    let sql = format!("SELECT {} FROM {} WHERE tandem_inexact IS NOT NULL", columns.sql(), scope.stage(t));
    Query::new(sql, Binds::new(), &columns, decoder)
}

/// Reads `text` as a column of type `ty` would store it: fails as staging
/// that value failed (to name the column of a refused row).
pub fn check_value(ty: &StageType, text: &str) -> Query<NoRows> {
    let mut binds = Binds::new();
    let value = ty.value(&format!("{}::text", binds.bind(text)));
    Query::exec(format!("SELECT ({value})::{}", ty.stored), binds)
}

/// A condition true when an uploaded row (stage alias `alias`) would be in
/// the client's partition. A `via` parent may be on the server already or
/// arrive in the same upload.
fn staged_filter(
    scope: &Scope<'_>,
    staged: Staged<'_>,
    t: usize,
    alias: &str,
    binds: &mut Binds,
    values: &FilterValues,
    depth: usize,
) -> Option<String> {
    let column = |name: &str| staged_column(scope, staged, t, name).unwrap_or_else(|| "NULL".into());
    match &scope.table(t).filter {
        None => None,
        Some(Filter::Columns(_)) => row_filter_with(scope, t, alias, &column, binds, values, depth),
        Some(Filter::Via { parent, on }) => {
            let parent_index = scope.index_of(parent)?;
            let on_server = row_filter_with(scope, t, alias, &column, binds, values, depth)?;
            if staged[parent_index].is_none() {
                return Some(on_server);
            }
            let sp = format!("sp{}", depth + 1);
            let join: Vec<String> = on
                .iter()
                .map(|(c, p)| {
                    let parent_col = staged_column(scope, staged, parent_index, p).unwrap_or_else(|| "NULL".into());
                    let equals = via_equality(scope, (t, parent_index), c, p);
                    format!("{sp}.{parent_col} {equals} {alias}.{}", column(c))
                })
                .collect();
            let inner = staged_filter(scope, staged, parent_index, &sp, binds, values, depth + 1).unwrap_or_else(|| "true".into());
            Some(format!(
                "({on_server} OR EXISTS (SELECT 1 FROM {} {sp} WHERE {sp}.op = 'upsert' AND {} AND {inner}))",
                scope.stage(parent_index),
                join.join(" AND ")
            ))
        }
    }
}

/// One staged row as classification finds the server.
#[derive(Clone, Debug, PartialEq)]
pub struct Classified {
    pub idx: usize,
    pub server: ServerState,
}

/// Reads [`classify`]'s rows.
pub struct ClassifiedRow {
    idx: Col,
    version: Col,
    own: Col,
    deleted_unseen: Col,
    exists: Col,
    xmin: Col,
    in_partition: Col,
    new_in_partition: Col,
    same_values: Col,
    new_key_free: Col,
}

impl Decode for ClassifiedRow {
    type Row<'a> = Classified;
    fn decode<'a>(&self, f: Fields<'a>) -> Result<Classified, DecodeError> {
        Ok(Classified {
            idx: f.index(self.idx)?,
            server: ServerState {
                version: f.owned(self.version),
                exists: f.bool(self.exists)?,
                last_writer_is_client: f.bool(self.own)?,
                deleted_unseen: f.bool(self.deleted_unseen)?,
                xmin: f.owned(self.xmin),
                in_partition: f.bool(self.in_partition)?,
                new_in_partition: f.bool(self.new_in_partition)?,
                new_key_free: f.bool(self.new_key_free)?,
                same_values: f.bool(self.same_values)?,
            },
        })
    }
}

/// Who uploads, for [`classify`]: the replica, and (for a retry of its last
/// upload) the version that upload wrote.
#[derive(Clone, Copy, Debug)]
pub struct Uploader<'a> {
    pub replica: &'a str,
    /// This upload retries one whose answer was lost (same id).
    pub retrying: bool,
    /// What the uploading file had received, when it said (`seen`).
    pub seen: Option<&'a Horizon>,
    /// Staged rows of keys the file kept beside a delete it did not take
    /// (`seen.kept`), each with that delete's version (`None`: any exit):
    /// their inserts meet it whatever the horizon.
    pub kept: &'a [(usize, Option<String>)],
}

/// Classifies the staged rows `idx` of table `t` against the server: the
/// current version, whether the row is exactly as the upload being retried
/// left it, whether the row exists and its `xmin`, whether the server row
/// is in the client's partition and the uploaded row would be, and whether
/// the server holds the uploaded values already.
///
/// `key`: key changes are classified against the row at their old key.
pub fn classify(
    scope: &Scope<'_>,
    staged: Staged<'_>,
    t: usize,
    key: StageKey,
    uploader: Uploader<'_>,
    values: &FilterValues,
    idx: &[usize],
) -> Query<ClassifiedRow> {
    let table = scope.table(t);
    let mut binds = Binds::new();
    let replica = binds.bind(uploader.replica);
    let retrying = binds.bind(Param::Bool(uploader.retrying));
    let server_in = row_filter(scope, t, "r", &mut binds, values).unwrap_or_else(|| "true".into());
    let new_in = staged_filter(scope, staged, t, "s", &mut binds, values, 0).unwrap_or_else(|| "true".into());
    let first_key = quote_ident(&table.primary_key[0]);
    let tracked = tracked_state(scope, t, |alias| keyed_equal(scope, staged, t, key, alias, "s"));
    let mut columns = Columns::new();
    let decoder = ClassifiedRow {
        idx: columns.push("idx", "s.idx::text"),
        version: columns.push("version", format!("({})::text", tracked.version)),
        own: columns.push(
            "own",
            // A row an unanswered attempt left exactly as sent (any attempt of
            // the id: answers may be lost several times in a row).
            format!("coalesce({} = {replica}::text AND {retrying}::bool, false)::text", tracked.origin),
        ),
        // An insert of a key whose row left the client's partition (a
        // delete, a move to another tenant) by a change the file had not
        // received: the exits a pull would send it, not another tenant's.
        deleted_unseen: columns.push(
            "deleted_unseen",
            match uploader.seen {
                Some(seen) => {
                    let horizon = binds.bind(seen.snapshot().to_string());
                    let own = binds.bind(seen.own().iter().map(u64::to_string).collect::<Vec<_>>());
                    let part = part_match(scope, t, "e.tandem_part", &mut binds, values).unwrap_or_else(|| "true".into());
                    let unseen = format!("NOT pg_visible_in_snapshot(e.tandem_stamp, {horizon}::text::pg_snapshot)");
                    // Deletes the snapshot covers that the file did not take:
                    // of the rows it kept, and those that reached no row.
                    let mut not_taken = Vec::new();
                    if !uploader.kept.is_empty() {
                        let rows = binds.bind(uploader.kept.iter().map(|(i, _)| *i as i32).collect::<Vec<i32>>());
                        let versions = binds.bind(Param::TextArray(uploader.kept.iter().map(|(_, v)| v.clone()).collect()));
                        not_taken.push(format!(
                            "EXISTS (SELECT 1 FROM unnest({rows}::int4[], {versions}::text[]) k(idx, version) \
                             WHERE k.idx = s.idx AND (k.version IS NULL OR k.version::xid8 = e.tandem_stamp))"
                        ));
                    }
                    if !seen.unmatched().is_empty() {
                        let unmatched = binds.bind(seen.unmatched().iter().map(u64::to_string).collect::<Vec<_>>());
                        not_taken.push(format!("e.tandem_stamp = ANY({unmatched}::text[]::xid8[])"));
                    }
                    let unseen = match not_taken.is_empty() {
                        true => unseen,
                        false => format!("({unseen} OR {})", not_taken.join(" OR ")),
                    };
                    format!(
                        "(CASE WHEN r.{first_key} IS NULL AND s.op = 'upsert' AND coalesce({deleted}, false) THEN EXISTS (\
                         SELECT 1 FROM {exits} e WHERE {e_key} AND {part} AND {unseen} \
                         AND NOT e.tandem_stamp = ANY({own}::text[]::xid8[])) ELSE false END)::text",
                        deleted = tracked.deleted,
                        exits = scope.exits(t),
                        e_key = keyed_equal(scope, staged, t, key, "e", "s"),
                    )
                }
                None => "false::text".to_string(),
            },
        ),
        exists: columns.push("exists", format!("(r.{first_key} IS NOT NULL)::text")),
        xmin: columns.push("xmin", "r.xmin::text"),
        in_partition: columns.push("in_partition", format!("coalesce({server_in}, false)::text")),
        new_in_partition: columns
            .push("new_in_partition", format!("(CASE WHEN s.op = 'upsert' THEN coalesce({new_in}, false) ELSE true END)::text")),
        same_values: columns
            .push("same_values", format!("(s.op = 'upsert' AND r.{first_key} IS NOT NULL AND {})::text", same_as_sent(scope, staged, t))),
        // A key change onto a key a row outside the partition holds is
        // refused like an insert of that key: the answer never tells.
        new_key_free: columns.push(
            "new_key_free",
            match (key, (key == StageKey::MovedFrom).then(|| row_filter(scope, t, "x", &mut binds, values)).flatten()) {
                (StageKey::MovedFrom, Some(outside)) => format!(
                    "(NOT EXISTS (SELECT 1 FROM {} x WHERE {} AND NOT coalesce({outside}, false)))::text",
                    table.table_name().quoted(),
                    staged_key_equal(scope, staged, t, "x", "s"),
                ),
                _ => "true::text".to_string(),
            },
        ),
    };
    let sql = format!(
        "SELECT {} FROM {stage} s {join} LEFT JOIN {user} r ON {user_key} \
         WHERE s.idx = ANY({idx}::int4[]) ORDER BY s.idx",
        columns.sql(),
        stage = scope.stage(t),
        join = tracked.join,
        user = table.table_name().quoted(),
        user_key = keyed_equal(scope, staged, t, key, "r", "s"),
        idx = binds.bind(indexes(idx)),
    );
    Query::new(sql, binds, &columns, decoder)
}

/// True when the user row `r` holds every uploaded column of stage row `s`
/// as staged (compared as text, so types without equality compare too).
fn same_as_sent(scope: &Scope<'_>, staged: Staged<'_>, t: usize) -> String {
    let table = scope.table(t);
    let uploaded = staged[t].as_deref().unwrap_or_default();
    let mut equal: Vec<String> = uploaded
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            // Byte for byte: a value in another case is an edit, also
            // where the column's collation holds the two equal.
            format!("(r.{}::text COLLATE \"C\") IS NOT DISTINCT FROM (s.c{i}::text COLLATE \"C\")", quote_ident(&table.columns[c].name))
        })
        .collect();
    if equal.is_empty() {
        equal.push("true".into());
    }
    equal.join(" AND ")
}

fn indexes(idx: &[usize]) -> Param {
    Param::Int4Array(idx.iter().map(|&i| i as i32).collect())
}

/// Every synced column of table `t` as a JSON object, from text.
struct TableValues {
    columns: Vec<(String, LogicalType)>,
    first: Col,
}

impl TableValues {
    /// Adds every synced column of row `alias` to `columns`.
    fn select(scope: &Scope<'_>, t: usize, alias: &str, columns: &mut Columns) -> Self {
        let table = scope.table(t);
        let mut first = None;
        for (i, c) in table.columns.iter().enumerate() {
            let col = columns.push(&format!("v{i}"), format!("{alias}.{}::text", quote_ident(&c.name)));
            first.get_or_insert(col);
        }
        TableValues { columns: table.columns.iter().map(|c| (c.name.clone(), c.ty)).collect(), first: first.expect("a table has columns") }
    }

    fn object(&self, fields: &Fields<'_>) -> Map<String, Value> {
        self.columns
            .iter()
            .zip(fields.slice(self.first, self.columns.len()))
            .map(|((name, ty), text)| (name.clone(), pg_text_to_json(*ty, *text)))
            .collect()
    }
}

/// Reads [`server_rows`]' rows: a staged row's idx and the server's row.
pub struct ServerRowOf {
    idx: Col,
    version: Col,
    visible: Option<Col>,
    values: TableValues,
}

impl Decode for ServerRowOf {
    type Row<'a> = (usize, RowState);
    fn decode<'a>(&self, f: Fields<'a>) -> Result<(usize, RowState), DecodeError> {
        let idx = f.index(self.idx)?;
        if let Some(visible) = self.visible {
            if !f.bool(visible)? {
                return Ok((idx, RowState::default()));
            }
        }
        Ok((idx, RowState { version: f.owned(self.version), row: Some(self.values.object(&f)) }))
    }
}

/// Whether row `alias` is in the partition `filters` bind, as a text
/// column (none when table `t` is not filtered).
fn visible_column(
    scope: &Scope<'_>,
    t: usize,
    alias: &str,
    binds: &mut Binds,
    filters: &FilterValues,
    columns: &mut Columns,
) -> Option<Col> {
    let filter = row_filter(scope, t, alias, binds, filters)?;
    Some(columns.push("visible", format!("coalesce(({filter}), false)::text")))
}

/// The server's current rows for staged rows `idx` (by `key`): the version
/// and every synced column. With `visible_to`, a row outside that
/// partition reads as no row (the uploader must not see it).
pub fn server_rows(
    scope: &Scope<'_>,
    staged: Staged<'_>,
    t: usize,
    key: StageKey,
    idx: &[usize],
    visible_to: Option<&FilterValues>,
) -> Query<ServerRowOf> {
    let table = scope.table(t);
    let tracked = tracked_state(scope, t, |alias| keyed_equal(scope, staged, t, key, alias, "s"));
    let mut binds = Binds::new();
    let mut columns = Columns::new();
    let idx_col = columns.push("idx", "s.idx::text");
    let version = columns.push("version", format!("({})::text", tracked.version));
    let visible = visible_to.and_then(|filters| visible_column(scope, t, "r", &mut binds, filters, &mut columns));
    let values = TableValues::select(scope, t, "r", &mut columns);
    let sql = format!(
        "SELECT {} FROM {} s JOIN {} r ON {} {} WHERE s.idx = ANY({}::int4[])",
        columns.sql(),
        scope.stage(t),
        table.table_name().quoted(),
        keyed_equal(scope, staged, t, key, "r", "s"),
        tracked.join,
        binds.bind(indexes(idx)),
    );
    Query::new(sql, binds, &columns, ServerRowOf { idx: idx_col, version, visible, values })
}

/// Reads a row's version and columns.
pub struct VisibleRow {
    version: Col,
    values: TableValues,
}

impl Decode for VisibleRow {
    type Row<'a> = RowState;
    fn decode<'a>(&self, f: Fields<'a>) -> Result<RowState, DecodeError> {
        Ok(RowState { version: f.owned(self.version), row: Some(self.values.object(&f)) })
    }
}

/// The row with key `key` (changeset JSON, primary key order) if it is in
/// the client's partition: its version and every synced column. `None`
/// when the key is not a value of the key's types (no row can have it).
pub fn visible_row(scope: &Scope<'_>, t: usize, key: &[Value], values: &FilterValues) -> Option<Query<VisibleRow>> {
    let table = scope.table(t);
    let mut binds = Binds::new();
    let mut conditions = Vec::new();
    for (column, value) in table.key_columns().iter().zip(key) {
        let text = json_to_pg_text(column.ty, value).ok()??;
        let equals = scope.schema.operator(column, "=");
        conditions.push(format!("r.{} {equals} {}::text::{}", quote_ident(&column.name), binds.bind(text), column.pg_type));
    }
    if let Some(filter) = row_filter(scope, t, "r", &mut binds, values) {
        conditions.push(filter);
    }
    let tracked = tracked_state(scope, t, |alias| crate::sql::keys_equal(scope, t, alias, "r"));
    let mut columns = Columns::new();
    let version = columns.push("version", format!("({})::text", tracked.version));
    let row_values = TableValues::select(scope, t, "r", &mut columns);
    let sql =
        format!("SELECT {} FROM {} r {} WHERE {}", columns.sql(), table.table_name().quoted(), tracked.join, conditions.join(" AND "));
    Some(Query::new(sql, binds, &columns, VisibleRow { version, values: row_values }))
}

/// A resolver's row of table `t` (`values`: a column's index and its
/// text, NULL as `None`, the key's columns among them): the `UPDATE` of
/// the row at its key, and the `INSERT` for when none is there. Never one
/// upsert: its `INSERT` would run the server's BEFORE INSERT triggers on
/// the row, and then its BEFORE UPDATE triggers on what they left, so a
/// trigger that is not idempotent would change the row twice.
pub fn merged_writes(scope: &Scope<'_>, t: usize, values: &[(usize, Option<String>)]) -> [Query<NoRows>; 2] {
    let table = scope.table(t);
    let quoted = table.table_name().quoted();
    let mut update = Binds::new();
    let mut sets = Vec::new();
    let mut keys = Vec::new();
    for (c, text) in values {
        let column = &table.columns[*c];
        let value = format!("{}::text::{}", update.bind(text.clone()), column.pg_type);
        match table.primary_key.contains(&column.name) {
            true => keys.push(format!("{} {} {value}", quote_ident(&column.name), scope.schema.operator(column, "="))),
            false => sets.push(format!("{} = {value}", quote_ident(&column.name))),
        }
    }
    if sets.is_empty() {
        sets.push(format!("{0} = {0}", quote_ident(&table.primary_key[0])));
    }
    let mut insert = Binds::new();
    let names: Vec<String> = values.iter().map(|(c, _)| table.columns[*c].name.clone()).collect();
    let inserted: Vec<String> =
        values.iter().map(|(c, text)| format!("{}::text::{}", insert.bind(text.clone()), table.columns[*c].pg_type)).collect();
    [
        Query::exec(format!("UPDATE {quoted} SET {} WHERE {}", sets.join(", "), keys.join(" AND ")), update),
        Query::exec(format!("INSERT INTO {quoted} ({}) VALUES ({})", column_list(None, &names), inserted.join(", ")), insert),
    ]
}

/// Moves the row at key `from` to key `to` (changeset JSON, primary key
/// order): a resolver's row for a key change lands on the moved row, so
/// the server's cascades run. `None` when a key is not a value of its
/// types.
pub fn move_key(scope: &Scope<'_>, t: usize, from: &[Value], to: &[Value]) -> Option<Query<NoRows>> {
    let table = scope.table(t);
    let mut binds = Binds::new();
    let mut sets = Vec::new();
    let mut conditions = Vec::new();
    for ((column, old), new) in table.key_columns().iter().zip(from).zip(to) {
        let name = quote_ident(&column.name);
        let old = json_to_pg_text(column.ty, old).ok()??;
        let new = json_to_pg_text(column.ty, new).ok()??;
        sets.push(format!("{name} = {}::text::{}", binds.bind(new), column.pg_type));
        conditions.push(format!("{name} {} {}::text::{}", scope.schema.operator(column, "="), binds.bind(old), column.pg_type));
    }
    let sql = format!("UPDATE {} SET {} WHERE {}", table.table_name().quoted(), sets.join(", "), conditions.join(" AND "));
    Some(Query::exec(sql, binds))
}

/// Reads a staged row's idx and a version.
pub struct IdxVersion {
    idx: Col,
    version: Col,
}

impl Decode for IdxVersion {
    type Row<'a> = (usize, Option<String>);
    fn decode<'a>(&self, f: Fields<'a>) -> Result<(usize, Option<String>), DecodeError> {
        Ok((f.index(self.idx)?, f.owned(self.version)))
    }
}

/// Tombstone versions for staged rows `idx` (by `key`) the server deleted.
/// In a filtered table, the version is that of the key's latest exit from
/// the client's partition (`values`), as a pull would send it: the
/// tombstone's own may be another tenant's, where the row moved there
/// first. A key that never left that partition has none.
pub fn tombstones(
    scope: &Scope<'_>,
    staged: Staged<'_>,
    t: usize,
    key: StageKey,
    idx: &[usize],
    values: &FilterValues,
) -> Query<IdxVersion> {
    let tracked = tracked_state(scope, t, |alias| keyed_equal(scope, staged, t, key, alias, "s"));
    let mut binds = Binds::new();
    let version = match part_match(scope, t, "e.tandem_part", &mut binds, values) {
        Some(part) => format!(
            "(SELECT e.tandem_stamp FROM {} e WHERE {} AND {part} ORDER BY e.tandem_stamp DESC LIMIT 1)::text",
            scope.exits(t),
            keyed_equal(scope, staged, t, key, "e", "s"),
        ),
        None => format!("({})::text", tracked.version),
    };
    let mut columns = Columns::new();
    let decoder = IdxVersion { idx: columns.push("idx", "s.idx::text"), version: columns.push("version", version) };
    let sql = format!(
        "SELECT {} FROM {} s {} WHERE s.idx = ANY({}::int4[]) AND {}",
        columns.sql(),
        scope.stage(t),
        tracked.join,
        binds.bind(indexes(idx)),
        tracked.deleted,
    );
    Query::new(sql, binds, &columns, decoder)
}

/// The `xmin`s rows were classified with, for a write of the rows `idx`:
/// a `text[]` indexed from the first row written ("0", no transaction, for
/// rows between that are not written) and that first idx. Bound as
/// constants of the statement, the cast and lookup are no join: the write
/// probes the user table by key, row by row, instead of reading all of it
/// into a hash; and a write of one row passes one xmin.
#[derive(Clone, Debug, PartialEq)]
pub struct SeenXmins {
    pub first: usize,
    pub xmins: Vec<String>,
}

impl SeenXmins {
    /// From each written row's idx and classified xmin.
    pub fn new(rows: &[(usize, Option<&str>)]) -> Self {
        let first = rows.iter().map(|r| r.0).min().unwrap_or_default();
        let last = rows.iter().map(|r| r.0).max().unwrap_or_default();
        let mut xmins = vec!["0".to_string(); last - first + 1];
        for &(i, xmin) in rows {
            if let Some(xmin) = xmin {
                xmins[i - first] = xmin.to_string();
            }
        }
        SeenXmins { first, xmins }
    }

    /// The condition that the row `r` still has the classified xmin.
    fn condition(self, binds: &mut Binds) -> String {
        let xmins = binds.bind(self.xmins);
        let first = binds.bind(Param::Int4(self.first as i32));
        format!("r.xmin = ({xmins}::text[]::xid[])[s.idx - {first}::int4 + 1]")
    }
}

/// Reads the idx of a written row.
pub struct WrittenRow {
    idx: Col,
}

impl Decode for WrittenRow {
    type Row<'a> = usize;
    fn decode<'a>(&self, f: Fields<'a>) -> Result<usize, DecodeError> {
        f.index(self.idx)
    }
}

impl WrittenRow {
    fn select(columns: &mut Columns) -> Self {
        WrittenRow { idx: columns.push("idx", "s.idx::text") }
    }
}

/// Updates existing rows `idx` whose `xmin` is still the one classified;
/// returns the idx of each row written.
pub fn update_rows(
    scope: &Scope<'_>,
    staged: Staged<'_>,
    t: usize,
    types: &[StageType],
    idx: &[usize],
    seen: SeenXmins,
) -> Query<WrittenRow> {
    let table = scope.table(t);
    let mut sets = set_uploaded(scope, staged, t, types, false);
    if sets.is_empty() {
        // Only key columns were sent: still a write, so the row's version moves.
        let k = quote_ident(&table.primary_key[0]);
        sets.push(format!("{k} = r.{k}"));
    }
    update_where(scope, staged, t, StageKey::Sent, &sets, idx, seen)
}

/// Moves key changes `idx` whose old row's `xmin` is still the one
/// classified: one `UPDATE` of every uploaded column, the key included, so
/// the server's `ON UPDATE` cascades and triggers run. Returns the idx of
/// each row written; a new key another row holds fails the statement.
pub fn move_rows(
    scope: &Scope<'_>,
    staged: Staged<'_>,
    t: usize,
    types: &[StageType],
    idx: &[usize],
    seen: SeenXmins,
) -> Query<WrittenRow> {
    let sets = set_uploaded(scope, staged, t, types, true);
    update_where(scope, staged, t, StageKey::MovedFrom, &sets, idx, seen)
}

/// `"col" = s.cN` for each uploaded column (key columns only `with_key`).
/// A NULL sent for a NOT NULL column only the server fills in keeps the
/// row's value: a device holds it NULL until the server's comes, and a
/// program writing the row again whole (`INSERT OR REPLACE`) leaves it so.
fn set_uploaded(scope: &Scope<'_>, staged: Staged<'_>, t: usize, types: &[StageType], with_key: bool) -> Vec<String> {
    let table = scope.table(t);
    staged[t]
        .as_deref()
        .unwrap_or_default()
        .iter()
        .enumerate()
        .filter(|(_, &c)| with_key || !table.primary_key.contains(&table.columns[c].name))
        .map(|(i, &c)| {
            let name = quote_ident(&table.columns[c].name);
            match types.get(i).and_then(|ty| ty.fills.as_ref()) {
                Some(_) => format!("{name} = coalesce(s.c{i}, r.{name})"),
                None => format!("{name} = s.c{i}"),
            }
        })
        .collect()
}

/// `UPDATE` of the rows at `key` of staged rows `idx` still at their
/// classified `xmin`, returning each written idx.
fn update_where(
    scope: &Scope<'_>,
    staged: Staged<'_>,
    t: usize,
    key: StageKey,
    sets: &[String],
    idx: &[usize],
    seen: SeenXmins,
) -> Query<WrittenRow> {
    let mut binds = Binds::new();
    let mut columns = Columns::new();
    let decoder = WrittenRow::select(&mut columns);
    let sql = format!(
        "UPDATE {} AS r SET {} FROM {} s WHERE s.idx = ANY({}::int4[]) AND {} AND {} RETURNING {}",
        scope.table(t).table_name().quoted(),
        sets.join(", "),
        scope.stage(t),
        binds.bind(indexes(idx)),
        keyed_equal(scope, staged, t, key, "r", "s"),
        seen.condition(&mut binds),
        columns.sql(),
    );
    Query::new(sql, binds, &columns, decoder)
}

/// Inserts rows `idx` unless their key (or another unique value) is taken
/// by now; returns the idx of each row written. With `strict`, a taken
/// value is an error (to learn which constraint).
pub fn insert_rows(
    scope: &Scope<'_>,
    staged: Staged<'_>,
    t: usize,
    types: &[StageType],
    idx: &[usize],
    strict: bool,
) -> Query<InsertedRow> {
    let table = scope.table(t);
    let uploaded = staged[t].as_deref().unwrap_or_default();
    let names: Vec<&str> = uploaded.iter().map(|&c| table.columns[c].name.as_str()).collect();
    // A NULL a device sent for a NOT NULL column is the server's default.
    let values: Vec<String> = (0..uploaded.len())
        .map(|i| match types.get(i).and_then(|ty| ty.fills.as_deref()) {
            Some(default) => format!("coalesce(s.c{i}, {default})"),
            None => format!("s.c{i}"),
        })
        .collect();
    let mut binds = Binds::new();
    let mut columns = Columns::new();
    let decoder = InsertedRow { idx: columns.push("idx", "s.idx::text") };
    let rows = binds.bind(indexes(idx));
    let sql = format!(
        "WITH written AS (INSERT INTO {} ({}) SELECT {} FROM {} s WHERE s.idx = ANY({rows}::int4[]) \
         {}RETURNING {}) SELECT {} FROM written w LEFT JOIN {} s ON {} AND s.idx = ANY({rows}::int4[])",
        table.table_name().quoted(),
        column_list(None, &names),
        values.join(", "),
        scope.stage(t),
        if strict { "" } else { "ON CONFLICT DO NOTHING " },
        column_list(None, &table.primary_key),
        columns.sql(),
        scope.stage(t),
        staged_key_equal(scope, staged, t, "w", "s"),
    );
    Query::new(sql, binds, &columns, decoder)
}

/// Reads the idx of an inserted row: `None` when no row of the insert has
/// its key (a server trigger stored a row at a key of its own).
pub struct InsertedRow {
    idx: Col,
}

impl Decode for InsertedRow {
    type Row<'a> = Option<usize>;
    fn decode<'a>(&self, f: Fields<'a>) -> Result<Option<usize>, DecodeError> {
        f.text(self.idx).map(|_| f.index(self.idx)).transpose()
    }
}

/// Deletes rows `idx` whose `xmin` is still the one classified; returns the
/// idx of each row deleted.
pub fn delete_rows(scope: &Scope<'_>, staged: Staged<'_>, t: usize, idx: &[usize], seen: SeenXmins) -> Query<WrittenRow> {
    let mut binds = Binds::new();
    let mut columns = Columns::new();
    let decoder = WrittenRow::select(&mut columns);
    let sql = format!(
        "DELETE FROM {} AS r USING {} s WHERE s.idx = ANY({}::int4[]) AND {} AND {} RETURNING {}",
        scope.table(t).table_name().quoted(),
        scope.stage(t),
        binds.bind(indexes(idx)),
        staged_key_equal(scope, staged, t, "r", "s"),
        seen.condition(&mut binds),
        columns.sql(),
    );
    Query::new(sql, binds, &columns, decoder)
}

/// A written row as the apply leaves it: every synced column, `None` when
/// the row is gone.
#[derive(Clone, Debug, PartialEq)]
pub struct FinalRow {
    pub idx: usize,
    pub row: Option<Map<String, Value>>,
    /// The row is in the uploader's partition (false when it is not, or
    /// is gone).
    pub visible: bool,
}

/// Reads [`final_rows`].
pub struct FinalRowOf {
    idx: Col,
    exists: Col,
    visible: Option<Col>,
    values: TableValues,
}

impl Decode for FinalRowOf {
    type Row<'a> = FinalRow;
    fn decode<'a>(&self, f: Fields<'a>) -> Result<FinalRow, DecodeError> {
        let exists = f.bool(self.exists)?;
        let visible = exists && self.visible.map_or(Ok(true), |c| f.bool(c))?;
        Ok(FinalRow { idx: f.index(self.idx)?, row: exists.then(|| self.values.object(&f)), visible })
    }
}

/// Rows `idx` as the apply leaves them, after every trigger and cascade of
/// its writes, in their changeset form: only a row left exactly as sent is
/// the uploader's echo; any other is the server's to send back.
pub fn final_rows(scope: &Scope<'_>, staged: Staged<'_>, t: usize, idx: &[usize], filters: &FilterValues) -> Query<FinalRowOf> {
    let table = scope.table(t);
    let first_key = quote_ident(&table.primary_key[0]);
    let mut binds = Binds::new();
    let mut columns = Columns::new();
    let idx_col = columns.push("idx", "s.idx::text");
    let exists = columns.push("exists", format!("(r.{first_key} IS NOT NULL)::text"));
    let visible = visible_column(scope, t, "r", &mut binds, filters, &mut columns);
    let values = TableValues::select(scope, t, "r", &mut columns);
    let sql = format!(
        "SELECT {} FROM {} s LEFT JOIN {} r ON {} WHERE s.idx = ANY({}::int4[])",
        columns.sql(),
        scope.stage(t),
        table.table_name().quoted(),
        staged_key_equal(scope, staged, t, "r", "s"),
        binds.bind(indexes(idx)),
    );
    Query::new(sql, binds, &columns, FinalRowOf { idx: idx_col, exists, visible, values })
}

/// Folds table `t`'s log (see [`tracking::fold`]), marking rows `idx`
/// (written exactly as sent) as the uploading replica's echo as it goes:
/// their tracking, whose version is this transaction's.
pub fn fold_marking_echoes(scope: &Scope<'_>, staged: Staged<'_>, t: usize, idx: &[usize], replica: &str) -> Query<NoRows> {
    let mut binds = Binds::new();
    let keys: Vec<String> = scope
        .table(t)
        .primary_key
        .iter()
        .map(|k| format!("s.{} AS {}", staged_column(scope, staged, t, k).unwrap_or_else(|| "NULL".into()), quote_ident(k)))
        .collect();
    let keys =
        format!("SELECT DISTINCT {} FROM {} s WHERE s.idx = ANY({}::int4[])", keys.join(", "), scope.stage(t), binds.bind(indexes(idx)));
    let replica = binds.bind(replica);
    Query::exec(tracking::fold_marking(scope, t, Some(tracking::EchoKeys { keys: &keys, replica: &replica })), binds)
}

/// Marks the exits of rows `idx` (deleted as sent) as the uploading
/// replica's: its own deletes are not sent back to it.
pub fn mark_deleted_echoes(scope: &Scope<'_>, staged: Staged<'_>, t: usize, idx: &[usize], replica: &str) -> Query<NoRows> {
    mark_origin(scope.exits(t), "tandem_stamp", scope, staged, t, idx, replica)
}

/// Sets `tandem_origin` of the rows of `target` (tracking or exits) keyed
/// like rows `idx` and written by this transaction (`version`).
fn mark_origin(
    target: String,
    version: &str,
    scope: &Scope<'_>,
    staged: Staged<'_>,
    t: usize,
    idx: &[usize],
    replica: &str,
) -> Query<NoRows> {
    let mut binds = Binds::new();
    // The version is checked in SET, not WHERE: the planner cannot know that
    // every row just folded has this transaction's version, and taking the
    // condition for a rare one, it would read the whole table for each row
    // of the stage instead of probing the key.
    let sql = format!(
        "UPDATE {target} m SET tandem_origin = CASE WHEN m.{version} = pg_current_xact_id() THEN {}::text ELSE m.tandem_origin END \
         FROM {} s WHERE s.idx = ANY({}::int4[]) AND {}",
        binds.bind(replica),
        scope.stage(t),
        binds.bind(indexes(idx)),
        staged_key_equal(scope, staged, t, "m", "s"),
    );
    Query::exec(sql, binds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::partition::tests::crm;

    fn plain(ty: &str) -> StageType {
        StageType {
            declared: ty.into(),
            input: ty.into(),
            stored: ty.into(),
            domain: None,
            rounds: false,
            fills: None,
            sequenced: false,
            collation: None,
        }
    }

    #[test]
    fn stages_typed_columns_from_arrays() {
        let schema = crm();
        let ids = [1, 2, 3];
        let scope = Scope::new(&schema, &ids);
        let rounding = StageType { rounds: true, input: "numeric".into(), ..plain("numeric(12,2)") };
        let types = [plain("integer"), rounding];
        assert_eq!(
            create_stage(&scope, 0, &[1, 0], &types, false).sql,
            "CREATE TEMP TABLE pg_temp.\"tandem_stage_1\" (idx int4, op text, base xid8, c0 integer, c1 numeric(12,2), tandem_inexact text) ON COMMIT DROP"
        );
        let rows = StageRows {
            idx: vec![0],
            ops: vec![Some("upsert".into())],
            bases: vec![None],
            columns: vec![vec![Some("3".into())], vec![Some("7".into())]],
            from: Vec::new(),
        };
        let query = fill_stage(&scope, 0, &[1, 0], &types, rows);
        assert_eq!(
            query.sql,
            "INSERT INTO pg_temp.\"tandem_stage_1\" SELECT u.idx, u.op, u.base::xid8, u.c0::integer, (u.c1::numeric)::numeric(12,2), \
             CASE WHEN u.c1::numeric IS DISTINCT FROM (u.c1::numeric)::numeric(12,2) THEN 'id' END \
             FROM unnest($1::int4[], $2::text[], $3::text[], $4::text[], $5::text[]) AS u(idx, op, base, c0, c1)"
        );
        assert_eq!(query.params[3], Param::TextArray(vec![Some("3".into())]), "c0 is the first uploaded column");
        let domain = StageType { domain: Some("public.positive".into()), ..plain("integer") };
        assert_eq!(
            check_value(&domain, "-3").sql,
            "SELECT (CASE WHEN $1::text IS NOT NULL THEN (($1::text::integer)::public.positive)::integer END)::integer"
        );
    }

    #[test]
    fn rows_under_a_parent_lock_it_before_they_are_classified() {
        let schema = crm();
        let ids = [1, 2, 3];
        let scope = Scope::new(&schema, &ids);
        let staged = vec![Some(vec![0, 1]), Some(vec![0, 1]), None];
        assert!(lock_parents(&scope, &staged, 0, false).is_none(), "a table filtered by its own columns locks nothing");
        let lock = lock_parents(&scope, &staged, 1, true).unwrap().sql;
        assert_eq!(
            lock,
            "SELECT 1 FROM (SELECT s.c0 AS \"order_id\" FROM pg_temp.\"tandem_stage_2\" s WHERE s.op = 'upsert' \
             UNION ALL SELECT r.\"order_id\" AS \"order_id\" FROM pg_temp.\"tandem_stage_2\" s JOIN \"public\".\"items\" r ON r.\"order_id\" = s.c0 AND r.\"line\" = s.c1 \
             UNION ALL SELECT r.\"order_id\" AS \"order_id\" FROM pg_temp.\"tandem_stage_2\" s JOIN \"public\".\"items\" r ON r.\"order_id\" = s.f0 AND r.\"line\" = s.f1) k \
             JOIN \"public\".\"orders\" p ON p.\"id\" = k.\"order_id\" FOR KEY SHARE OF p"
        );
    }

    #[test]
    fn a_child_may_come_with_its_parent() {
        let schema = crm();
        let ids = [1, 2, 3];
        let scope = Scope::new(&schema, &ids);
        let values: FilterValues = [("tenant".to_string(), vec!["1".to_string()])].into();
        let staged = vec![Some(vec![0, 1]), Some(vec![0, 1]), None];
        let uploader = Uploader { replica: "r1", retrying: false, seen: None, kept: &[] };
        let query = classify(&scope, &staged, 1, StageKey::Sent, uploader, &values, &[0, 1]);
        let sql = &query.sql;
        assert!(sql.contains("EXISTS (SELECT 1 FROM pg_temp.\"tandem_stage_1\" sp1 WHERE sp1.op = 'upsert' AND sp1.c0 = s.c0 AND sp1.c1 = ANY($3::text[]::integer[]))"), "{sql}");
        assert!(sql.contains("LEFT JOIN \"tandem\".\"track_2\" tr ON tr.\"order_id\" = s.c0 AND tr.\"line\" = s.c1"), "{sql}");
        assert!(sql.contains("WHERE s.idx = ANY($4::int4[])"), "the row list is bound last: {sql}");
        assert_eq!(query.params, [Param::from("r1"), Param::Bool(false), Param::from(vec!["1".to_string()]), Param::Int4Array(vec![0, 1])]);
        assert_eq!(query.width, 10);
        let row = [
            Some("1"),
            Some("812"),
            Some("false"),
            Some("false"),
            Some("true"),
            Some("900"),
            Some("true"),
            Some("false"),
            Some("false"),
            Some("true"),
        ];
        let classified = query.decode(&row).unwrap();
        assert_eq!(classified.idx, 1);
        assert!(classified.server.exists && classified.server.in_partition && !classified.server.new_in_partition);
        assert!(!classified.server.deleted_unseen);
        assert!(sql.contains("false::text AS \"deleted_unseen\"") && !sql.contains("exit_"), "no `seen`, no probe: {sql}");
        let staged = vec![None, Some(vec![0, 1]), None];
        let query = classify(&scope, &staged, 1, StageKey::Sent, uploader, &values, &[0]);
        assert!(!query.sql.contains("sp1"), "{}", query.sql);
    }

    #[test]
    fn an_insert_is_probed_for_exits_of_the_partition_beyond_what_the_file_received() {
        let schema = crm();
        let ids = [1, 2, 3];
        let scope = Scope::new(&schema, &ids);
        let values: FilterValues = [("tenant".to_string(), vec!["1".to_string()])].into();
        let staged = vec![Some(vec![0, 1]), None, None];
        let seen = Horizon::new(&crate::watermark::Watermark::parse("20:25:22").unwrap(), vec![30]);
        let uploader = Uploader { replica: "r1", retrying: false, seen: Some(&seen), kept: &[] };
        let query = classify(&scope, &staged, 0, StageKey::Sent, uploader, &values, &[0]);
        let sql = &query.sql;
        // Only for an insert of a key tracking holds as deleted, and only
        // an exit of the client's own partition.
        assert!(sql.contains("CASE WHEN r.\"id\" IS NULL AND s.op = 'upsert' AND coalesce("), "{sql}");
        assert!(
            sql.contains("SELECT 1 FROM \"tandem\".\"exit_1\" e WHERE e.\"id\" = s.c0 AND (e.tandem_part->>'tenant')::integer = ANY("),
            "{sql}"
        );
        assert!(
            sql.contains(
                "NOT pg_visible_in_snapshot(e.tandem_stamp, $4::text::pg_snapshot) AND NOT e.tandem_stamp = ANY($5::text[]::xid8[])"
            ),
            "{sql}"
        );
        assert!(query.params.contains(&Param::from("20:25:22")), "{:?}", query.params);
        assert!(query.params.contains(&Param::from(vec!["30".to_string()])), "{:?}", query.params);
        // Deletes the file did not take count whatever the snapshot: of
        // the rows it kept, and those that reached no row.
        let unmatched = seen.clone().with_unmatched(vec![40, 41]);
        // A kept row meets the delete it was kept beside (any exit, for a
        // hold that names none), not an older exit the file received.
        let kept = [(0, Some("35".to_string())), (2, None)];
        let uploader = Uploader { seen: Some(&unmatched), kept: &kept, ..uploader };
        let query = classify(&scope, &staged, 0, StageKey::Sent, uploader, &values, &[0, 1, 2]);
        assert!(
            query.sql.contains(
                "(NOT pg_visible_in_snapshot(e.tandem_stamp, $4::text::pg_snapshot) \
                 OR EXISTS (SELECT 1 FROM unnest($6::int4[], $7::text[]) k(idx, version) \
                 WHERE k.idx = s.idx AND (k.version IS NULL OR k.version::xid8 = e.tandem_stamp)) \
                 OR e.tandem_stamp = ANY($8::text[]::xid8[])) AND NOT e.tandem_stamp = ANY($5::text[]::xid8[])"
            ),
            "{}",
            query.sql
        );
        assert!(query.params.contains(&Param::Int4Array(vec![0, 2])), "{:?}", query.params);
        assert!(query.params.contains(&Param::TextArray(vec![Some("35".into()), None])), "{:?}", query.params);
        assert!(query.params.contains(&Param::from(vec!["40".to_string(), "41".to_string()])), "{:?}", query.params);
    }

    #[test]
    fn a_stage_is_analyzed_on_what_its_statements_join_by() {
        let mut schema = crm();
        let mut note = schema.tables[0].columns[1].clone();
        note.name = "note".into();
        schema.tables[0].columns.push(note);
        let ids = [7, 8, 9];
        let scope = Scope::new(&schema, &ids);
        // orders: its key (also what items join it by) and its filter, not the note
        assert_eq!(analyze_stage(&scope, 0, &[2, 0, 1]).sql, "ANALYZE pg_temp.\"tandem_stage_7\" (idx, op, c1, c2)");
        assert_eq!(analyze_stage(&scope, 2, &[0]).sql, "ANALYZE pg_temp.\"tandem_stage_9\" (idx, op, c0)");
    }

    #[test]
    fn only_rows_left_exactly_as_sent_are_echoes() {
        let schema = crm();
        let ids = [1, 2, 3];
        let scope = Scope::new(&schema, &ids);
        let staged = vec![Some(vec![0, 1]), None, None];
        let tenant: FilterValues = [("tenant".to_string(), vec!["1".to_string()])].into();
        let query = final_rows(&scope, &staged, 0, &[0, 1], &tenant);
        assert!(query.sql.contains("LEFT JOIN \"public\".\"orders\" r ON r.\"id\" = s.c0"), "{}", query.sql);
        assert!(query.sql.contains("coalesce((r.\"tenant_id\" = ANY($1::text[]::integer[])), false)::text"), "{}", query.sql);
        let gone = query.decode(&[Some("1"), Some("false"), Some("false"), None, None]).unwrap();
        assert_eq!((gone.row, gone.visible), (None, false));
        let kept = query.decode(&[Some("0"), Some("true"), Some("true"), Some("10"), Some("1")]).unwrap();
        assert!(kept.visible);
        assert_eq!(kept.row.unwrap()["tenant_id"], serde_json::json!(1));
        let handed_over = query.decode(&[Some("0"), Some("true"), Some("false"), Some("10"), Some("2")]).unwrap();
        assert!(!handed_over.visible, "a row another tenant's now is not the uploader's");
        let echoes = fold_marking_echoes(&scope, &staged, 0, &[0], "r1");
        assert!(
            echoes.sql.contains("LEFT JOIN (SELECT DISTINCT s.c0 AS \"id\" FROM pg_temp.\"tandem_stage_1\" s WHERE s.idx = ANY($1::int4[])) e ON e.\"id\" = l.\"id\""),
            "{}",
            echoes.sql
        );
        assert!(
            echoes.sql.contains("CASE WHEN c.tandem_stamp = pg_current_xact_id() AND e.\"id\" IS NOT NULL THEN $2::text END"),
            "{}",
            echoes.sql
        );
        assert_eq!(echoes.params[1], Param::Text(Some("r1".into())));
        assert!(mark_deleted_echoes(&scope, &staged, 0, &[0], "r1").sql.contains("WHEN m.tandem_stamp = pg_current_xact_id()"));
    }

    #[test]
    fn writes_compare_xmin() {
        let schema = crm();
        let ids = [1, 2, 3];
        let scope = Scope::new(&schema, &ids);
        let staged = vec![Some(vec![0, 1]), None, None];
        let seen = SeenXmins::new(&[(4, Some("77")), (6, None)]);
        assert_eq!(seen, SeenXmins { first: 4, xmins: vec!["77".into(), "0".into(), "0".into()] });
        let update = update_rows(&scope, &staged, 0, &[], &[4, 6], seen.clone());
        assert!(update.sql.starts_with("UPDATE \"public\".\"orders\" AS r SET \"tenant_id\" = s.c1 FROM"), "{}", update.sql);
        assert!(
            update.sql.contains("WHERE s.idx = ANY($1::int4[]) AND r.\"id\" = s.c0 AND r.xmin = ($2::text[]::xid[])[s.idx - $3::int4 + 1]"),
            "{}",
            update.sql
        );
        assert_eq!(update.params[2], Param::Int4(4));
        assert_eq!(update.decode(&[Some("4")]).unwrap(), 4);
        let moved = move_rows(&scope, &staged, 0, &[], &[4], seen.clone());
        assert!(moved.sql.contains("SET \"id\" = s.c0, \"tenant_id\" = s.c1 FROM"), "the key is written too: {}", moved.sql);
        assert!(moved.sql.contains("AND r.\"id\" = s.f0 AND r.xmin"), "the row at the old key: {}", moved.sql);
        let from = classify(
            &scope,
            &staged,
            0,
            StageKey::MovedFrom,
            Uploader { replica: "r", retrying: false, seen: None, kept: &[] },
            &FilterValues::new(),
            &[4],
        );
        assert!(from.sql.contains("LEFT JOIN \"public\".\"orders\" r ON r.\"id\" = s.f0"), "{}", from.sql);
        assert!(create_stage(&scope, 0, &[0, 1], &[plain("bigint"), plain("integer")], true)
            .sql
            .contains("c1 integer, f0 bigint, tandem_inexact"));
        // A collated key compares as the table's column does, as sent and as it was.
        let collated = StageType { collation: Some("\"public\".\"ci\"".into()), ..plain("text") };
        assert!(create_stage(&scope, 0, &[0, 1], &[collated, plain("integer")], true)
            .sql
            .contains("(idx int4, op text, base xid8, c0 text COLLATE \"public\".\"ci\", c1 integer, f0 text COLLATE \"public\".\"ci\", tandem_inexact"));
        assert!(delete_rows(&scope, &staged, 0, &[4], seen).sql.contains("r.xmin = ($2::text[]::xid[])[s.idx - $3::int4 + 1]"));
        let types = [plain("bigint"), StageType { fills: Some("0".into()), ..plain("integer") }];
        let insert = insert_rows(&scope, &staged, 0, &types, &[5], false);
        assert!(insert.sql.contains("SELECT s.c0, coalesce(s.c1, 0) FROM"), "{}", insert.sql);
        assert!(insert.sql.contains("ON CONFLICT DO NOTHING RETURNING \"id\") SELECT s.idx::text AS \"idx\" FROM"), "{}", insert.sql);
    }
}
