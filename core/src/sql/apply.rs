//! The server's apply of an upload (PostgreSQL), set-based: the rows of each
//! table are staged once in a temporary table (typed by the column casts),
//! classified against tracking in one join, and written with one statement
//! per kind of write. Writes compare the row's `xmin` with the one seen at
//! classification, so a row changed concurrently is never overwritten
//! blindly: it is classified again.
//!
//! A staged table has `idx` (the row's position in the upload), `op`, `base`
//! and `c0, c1, ...`: the uploaded columns in the changeset's order.

use crate::ident::quote_ident;
use crate::setup::Filter;
use crate::sql::partition::{row_filter, row_filter_with, ParamSlots};
use crate::sql::tracking::tracked_state;
use crate::sql::{column_list, Scope};

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
    scope
        .table(t)
        .primary_key
        .iter()
        .map(|k| {
            let c = staged_column(scope, staged, t, k).unwrap_or_else(|| "NULL".into());
            format!("{alias}.{} = {stage_alias}.{c}", quote_ident(k))
        })
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// Drops a stage left by an earlier apply in the same transaction.
pub fn drop_stage(scope: &Scope<'_>, t: usize) -> String {
    format!("DROP TABLE IF EXISTS {}", scope.stage(t))
}

/// `ANALYZE` of the stage of table `t`, for the columns the apply's
/// statements join or filter on: `idx`, `op`, the key, the filter's
/// columns, and the columns `via` children join this table by.
pub fn analyze_stage(scope: &Scope<'_>, t: usize, columns: &[usize]) -> String {
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
    format!("ANALYZE {} ({})", scope.stage(t), analyzed.join(", "))
}

/// Stages table `t`'s rows from arrays: `$1` idx int4[], `$2` op text[],
/// `$3` base text[], then one text[] per uploaded column, cast to its type.
pub fn stage(scope: &Scope<'_>, t: usize, columns: &[usize]) -> String {
    let table = scope.table(t);
    let mut names = vec!["idx".to_string(), "op".to_string(), "base".to_string()];
    let mut arrays = vec!["$1::int4[]".to_string(), "$2::text[]".to_string(), "$3::text[]".to_string()];
    let mut selects = vec!["u.idx".to_string(), "u.op".to_string(), "u.base::xid8 AS base".to_string()];
    for (i, &c) in columns.iter().enumerate() {
        names.push(format!("c{i}"));
        arrays.push(format!("${}::text[]", i + 4));
        selects.push(format!("u.c{i}::{} AS c{i}", table.columns[c].pg_type));
    }
    format!(
        "CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT {} FROM unnest({}) AS u({})",
        scope.stage(t),
        selects.join(", "),
        arrays.join(", "),
        names.join(", ")
    )
}

/// A condition true when an uploaded row (stage alias `alias`) would be in
/// the client's partition. A `via` parent may be on the server already or
/// arrive in the same upload.
fn staged_filter(scope: &Scope<'_>, staged: Staged<'_>, t: usize, alias: &str, slots: &mut ParamSlots, depth: usize) -> Option<String> {
    let column = |name: &str| staged_column(scope, staged, t, name).unwrap_or_else(|| "NULL".into());
    match &scope.table(t).filter {
        None => None,
        Some(Filter::Columns(_)) => row_filter_with(scope, t, alias, &column, slots, depth),
        Some(Filter::Via { parent, on }) => {
            let parent_index = scope.index_of(parent)?;
            let on_server = row_filter_with(scope, t, alias, &column, slots, depth)?;
            if staged[parent_index].is_none() {
                return Some(on_server);
            }
            let sp = format!("sp{}", depth + 1);
            let join: Vec<String> = on
                .iter()
                .map(|(c, p)| {
                    let parent_col = staged_column(scope, staged, parent_index, p).unwrap_or_else(|| "NULL".into());
                    format!("{sp}.{parent_col} = {alias}.{}", column(c))
                })
                .collect();
            let inner = staged_filter(scope, staged, parent_index, &sp, slots, depth + 1).unwrap_or_else(|| "true".into());
            Some(format!(
                "({on_server} OR EXISTS (SELECT 1 FROM {} {sp} WHERE {sp}.op = 'upsert' AND {} AND {inner}))",
                scope.stage(parent_index),
                join.join(" AND ")
            ))
        }
    }
}

/// Classifies the staged rows of table `t` against the server: for each
/// `idx`, the current version, whether the last write came from this client
/// (`$1`), whether the row exists and its `xmin`, whether the server row is
/// in the client's partition, and whether the uploaded row would be. The
/// filter parameters follow from `$2` in the order of the returned names;
/// the last parameter lists the idx to classify (int4[]).
pub fn classify(scope: &Scope<'_>, staged: Staged<'_>, t: usize) -> (String, Vec<String>) {
    let table = scope.table(t);
    let mut slots = ParamSlots::new(2);
    let server_in = row_filter(scope, t, "r", &mut slots).unwrap_or_else(|| "true".into());
    let new_in = staged_filter(scope, staged, t, "s", &mut slots, 0).unwrap_or_else(|| "true".into());
    let first_key = quote_ident(&table.primary_key[0]);
    let tracked = tracked_state(scope, t, |alias| staged_key_equal(scope, staged, t, alias, "s"));
    let sql = format!(
        "SELECT s.idx::text, ({version})::text, coalesce({origin} = $1::text, false)::text, \
         (r.{first_key} IS NOT NULL)::text, r.xmin::text, coalesce({server_in}, false)::text, \
         (CASE WHEN s.op = 'upsert' THEN coalesce({new_in}, false) ELSE true END)::text \
         FROM {stage} s {join} LEFT JOIN {user} r ON {user_key} \
         WHERE s.idx = ANY(${last}::int4[]) ORDER BY s.idx",
        last = 2 + slots.names().len(),
        stage = scope.stage(t),
        version = tracked.version,
        origin = tracked.origin,
        join = tracked.join,
        user = table.table_name().quoted(),
        user_key = staged_key_equal(scope, staged, t, "r", "s"),
    );
    (sql, slots.names().to_vec())
}

/// The server's current rows for staged rows `$1` (idx int4[]): idx,
/// version, then every synced column as text.
pub fn server_rows(scope: &Scope<'_>, staged: Staged<'_>, t: usize) -> String {
    let table = scope.table(t);
    let columns: Vec<String> = table.columns.iter().map(|c| format!("r.{}::text", quote_ident(&c.name))).collect();
    let tracked = tracked_state(scope, t, |alias| staged_key_equal(scope, staged, t, alias, "s"));
    format!(
        "SELECT s.idx, ({})::text, {} FROM {} s JOIN {} r ON {} {} WHERE s.idx = ANY($1::int4[])",
        tracked.version,
        columns.join(", "),
        scope.stage(t),
        table.table_name().quoted(),
        staged_key_equal(scope, staged, t, "r", "s"),
        tracked.join,
    )
}

/// A row by key (`$1..` as text, cast to the key types) if it is in the
/// client's partition: version, then every synced column as text. The filter
/// parameters follow the key, in the order of the returned names.
pub fn visible_row(scope: &Scope<'_>, t: usize) -> (String, Vec<String>) {
    let table = scope.table(t);
    let keys = table.key_columns();
    let mut slots = ParamSlots::new(keys.len() + 1);
    let mut conditions: Vec<String> = keys
        .iter()
        .enumerate()
        .map(|(i, c)| format!("r.{} = ${}::text::{}", quote_ident(&c.name), i + 1, c.pg_type))
        .collect();
    if let Some(filter) = row_filter(scope, t, "r", &mut slots) {
        conditions.push(filter);
    }
    let columns: Vec<String> = table.columns.iter().map(|c| format!("r.{}::text", quote_ident(&c.name))).collect();
    let tracked = tracked_state(scope, t, |alias| crate::sql::columns_equal(alias, &table.primary_key, "r", &table.primary_key));
    let sql = format!(
        "SELECT ({})::text, {} FROM {} r {} WHERE {}",
        tracked.version,
        columns.join(", "),
        table.table_name().quoted(),
        tracked.join,
        conditions.join(" AND ")
    );
    (sql, slots.names().to_vec())
}

/// Tombstone versions for staged rows `$1` (idx int4[]) the server deleted.
pub fn tombstones(scope: &Scope<'_>, staged: Staged<'_>, t: usize) -> String {
    let tracked = tracked_state(scope, t, |alias| staged_key_equal(scope, staged, t, alias, "s"));
    format!(
        "SELECT s.idx, ({})::text FROM {} s {} WHERE s.idx = ANY($1::int4[]) AND {}",
        tracked.version,
        scope.stage(t),
        tracked.join,
        tracked.deleted,
    )
}

/// The `xmin` a row of the stage was classified with: `$2` is a text[] of
/// the xmins of idx `$3`, `$3 + 1`, ... up to the last row written ("0",
/// no transaction, for rows between that are not). The parameters are
/// constants of the statement, so the cast and lookup are no join: the
/// write can probe the user table by key, row by row, instead of reading
/// all of it into a hash; and a write of one row passes one xmin.
const SEEN: &str = "($2::text[]::xid[])[s.idx - $3::int4 + 1]";

/// Updates existing rows `$1` (idx int4[]) whose `xmin` still equals the
/// one in `$2` from `$3` (see [`SEEN`]); returns the idx of each row written, then
/// its columns as text.
pub fn update_rows(scope: &Scope<'_>, staged: Staged<'_>, t: usize) -> String {
    let table = scope.table(t);
    let columns = staged[t].as_deref().unwrap_or_default();
    let mut sets: Vec<String> = columns
        .iter()
        .enumerate()
        .filter(|(_, &c)| !table.primary_key.contains(&table.columns[c].name))
        .map(|(i, &c)| format!("{} = s.c{i}", quote_ident(&table.columns[c].name)))
        .collect();
    if sets.is_empty() {
        // Only key columns were sent: still a write, so the row's version moves.
        let k = quote_ident(&table.primary_key[0]);
        sets.push(format!("{k} = r.{k}"));
    }
    format!(
        "UPDATE {} AS r SET {} FROM {} s WHERE s.idx = ANY($1::int4[]) AND {} AND r.xmin = {SEEN} \
         RETURNING s.idx::text, {}",
        table.table_name().quoted(),
        sets.join(", "),
        scope.stage(t),
        staged_key_equal(scope, staged, t, "r", "s"),
        written_columns(scope, t, "r"),
    )
}

/// Every synced column of a written row as text: what the row holds after
/// defaults, casts and triggers, which the uploader takes if it differs.
fn written_columns(scope: &Scope<'_>, t: usize, alias: &str) -> String {
    scope
        .table(t)
        .columns
        .iter()
        .map(|c| format!("{alias}.{}::text", quote_ident(&c.name)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Inserts rows `$1` (idx int4[]) unless their key (or another unique
/// value) is taken by now; returns the idx of each row written, then its
/// columns as text. With
/// `strict`, a taken value is an error (to learn which constraint).
pub fn insert_rows(scope: &Scope<'_>, staged: Staged<'_>, t: usize, strict: bool) -> String {
    let table = scope.table(t);
    let columns = staged[t].as_deref().unwrap_or_default();
    let names: Vec<&str> = columns.iter().map(|&c| table.columns[c].name.as_str()).collect();
    let values: Vec<String> = (0..columns.len()).map(|i| format!("s.c{i}")).collect();
    format!(
        "WITH written AS (INSERT INTO {} ({}) SELECT {} FROM {} s WHERE s.idx = ANY($1::int4[]) \
         {}RETURNING *) SELECT s.idx::text, {} FROM {} s JOIN written w ON {}",
        table.table_name().quoted(),
        column_list(None, &names),
        values.join(", "),
        scope.stage(t),
        if strict { "" } else { "ON CONFLICT DO NOTHING " },
        written_columns(scope, t, "w"),
        scope.stage(t),
        staged_key_equal(scope, staged, t, "w", "s"),
    )
}

/// Deletes rows `$1` (idx int4[]) whose `xmin` still equals the one in
/// `$2` from `$3` (see [`SEEN`]); returns the idx of each row deleted.
pub fn delete_rows(scope: &Scope<'_>, staged: Staged<'_>, t: usize) -> String {
    format!(
        "DELETE FROM {} AS r USING {} s WHERE s.idx = ANY($1::int4[]) AND {} AND r.xmin = {SEEN} RETURNING s.idx::text",
        scope.table(t).table_name().quoted(),
        scope.stage(t),
        staged_key_equal(scope, staged, t, "r", "s"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::partition::tests::crm;

    #[test]
    fn stages_typed_columns_from_arrays() {
        let schema = crm();
        let ids = [1, 2, 3];
        let scope = Scope::new(&schema, &ids);
        assert_eq!(
            stage(&scope, 0, &[1, 0]),
            "CREATE TEMP TABLE pg_temp.\"tandem_stage_1\" ON COMMIT DROP AS SELECT u.idx, u.op, u.base::xid8 AS base, \
             u.c0::integer AS c0, u.c1::bigint AS c1 FROM unnest($1::int4[], $2::text[], $3::text[], $4::text[], $5::text[]) \
             AS u(idx, op, base, c0, c1)"
        );
    }

    #[test]
    fn a_child_may_come_with_its_parent() {
        let schema = crm();
        let ids = [1, 2, 3];
        let scope = Scope::new(&schema, &ids);
        let staged = vec![Some(vec![0, 1]), Some(vec![0, 1]), None];
        let (sql, params) = classify(&scope, &staged, 1);
        assert_eq!(params, ["tenant"]);
        assert!(sql.contains("EXISTS (SELECT 1 FROM pg_temp.\"tandem_stage_1\" sp1 WHERE sp1.op = 'upsert' AND sp1.c0 = s.c0 AND sp1.c1 = ANY($2::text[]::integer[]))"), "{sql}");
        assert!(sql.contains("LEFT JOIN \"tandem\".\"track_2\" tr ON tr.\"order_id\" = s.c0 AND tr.\"line\" = s.c1"), "{sql}");
        let staged = vec![None, Some(vec![0, 1]), None];
        let (sql, _) = classify(&scope, &staged, 1);
        assert!(!sql.contains("sp1"), "{sql}");
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
        assert_eq!(analyze_stage(&scope, 0, &[2, 0, 1]), "ANALYZE pg_temp.\"tandem_stage_7\" (idx, op, c1, c2)");
        assert_eq!(analyze_stage(&scope, 2, &[0]), "ANALYZE pg_temp.\"tandem_stage_9\" (idx, op, c0)");
    }

    #[test]
    fn writes_compare_xmin() {
        let schema = crm();
        let ids = [1, 2, 3];
        let scope = Scope::new(&schema, &ids);
        let staged = vec![Some(vec![0, 1]), None, None];
        let update = update_rows(&scope, &staged, 0);
        assert!(update.starts_with("UPDATE \"public\".\"orders\" AS r SET \"tenant_id\" = s.c1 FROM"), "{update}");
        assert!(update.contains("WHERE s.idx = ANY($1::int4[]) AND r.\"id\" = s.c0 AND r.xmin = ($2::text[]::xid[])[s.idx - $3::int4 + 1]"), "{update}");
        assert!(delete_rows(&scope, &staged, 0).contains("r.xmin = ($2::text[]::xid[])[s.idx - $3::int4 + 1]"));
        let insert = insert_rows(&scope, &staged, 0, false);
        assert!(insert.contains("ON CONFLICT DO NOTHING RETURNING *) SELECT s.idx::text, w.\"id\"::text, w.\"tenant_id\"::text"), "{insert}");
    }
}
