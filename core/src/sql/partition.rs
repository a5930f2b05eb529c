//! Which client partition a row belongs to, as SQL (PostgreSQL).
//!
//! A table filter binds columns to parameters; a `via` filter defers to the
//! parent row. Three questions are asked of rows, each generated here:
//! - is this row in the client's partition now ([`row_filter`]);
//! - which partition did a row leave ([`part_expr`], stored in exits);
//! - did a recorded exit leave the client's partition ([`part_match`]).

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::ident::{quote_ident, quote_literal};
use crate::options::{param_values, Params};
use crate::schema::Column;
use crate::setup::Filter;
use crate::sql::query::{Binds, Param};
use crate::sql::Scope;
use crate::types::{json_to_pg_text, LogicalType};

/// The values each filter parameter is bound to, as text (a scalar is a
/// list of one), checked against the type of the column it filters.
pub type FilterValues = BTreeMap<String, Vec<String>>;

/// The placeholder of filter parameter `name`: bound once per statement, as
/// `text[]`. A name without values (never expected: [`bind_params`] checks
/// every parameter a table needs) matches nothing.
fn param(binds: &mut Binds, values: &FilterValues, name: &str) -> String {
    binds.bind_named(name, || Param::from(values.get(name).cloned().unwrap_or_default()))
}

/// The table whose column filter decides `table`'s partition (itself, or its
/// ancestor through `via` filters), with that filter.
pub fn root_filter<'a>(scope: &Scope<'a>, table: usize) -> Option<(usize, &'a BTreeMap<String, String>)> {
    let mut current = table;
    for _ in 0..=scope.schema.tables.len() {
        match &scope.table(current).filter {
            None => return None,
            Some(Filter::Columns(map)) => return Some((current, map)),
            Some(Filter::Via { parent, .. }) => current = scope.index_of(parent)?,
        }
    }
    None
}

/// Parameters a table's filter needs, with the column each binds to.
pub fn filter_params<'a>(scope: &Scope<'a>, table: usize) -> Vec<(String, &'a Column)> {
    let Some((root, map)) = root_filter(scope, table) else { return Vec::new() };
    let root_table = scope.table(root);
    map.iter().filter_map(|(col, param)| root_table.columns.iter().find(|c| &c.name == col).map(|c| (param.clone(), c))).collect()
}

/// The parameters the scope's filters use.
fn used_params(scope: &Scope<'_>) -> Vec<String> {
    (0..scope.schema.tables.len()).flat_map(|t| filter_params(scope, t).into_iter().map(|(name, _)| name)).collect()
}

/// A registration's parameters that the scope's filters still use: a
/// registration outlives changes of its scope (a filtered table dropped or
/// left out), and a parameter no filter uses any more must not lock its
/// client out. Parameters a caller passes are checked by [`bind_params`].
pub fn still_used(scope: &Scope<'_>, params: &Params) -> Params {
    let known = used_params(scope);
    params.iter().filter(|(name, _)| known.contains(name)).map(|(name, value)| (name.clone(), value.clone())).collect()
}

/// The text values to bind for each parameter the given tables' filters use
/// (a scalar becomes a list of one), checked against the column types. A
/// parameter no filter of the scope uses is refused: a misspelt one would
/// bind a client (or a file) for good to parameters that filter nothing.
pub fn bind_params(scope: &Scope<'_>, params: &Params, tables: impl IntoIterator<Item = usize>) -> Result<FilterValues> {
    let known = used_params(scope);
    if let Some(unknown) = params.keys().find(|name| !known.contains(name)) {
        let used =
            if known.is_empty() { "none".to_string() } else { known.iter().map(|n| format!("\"{n}\"")).collect::<Vec<_>>().join(", ") };
        return Err(Error::Params(format!(
            "no filter of scope \"{}\" uses parameter \"{unknown}\" (its filters use: {used}); check its spelling",
            scope.schema.scope
        )));
    }
    let mut bound = BTreeMap::new();
    for table in tables {
        for (name, column) in filter_params(scope, table) {
            let value = params.get(&name).ok_or_else(|| {
                Error::Params(format!(
                    "table {} is filtered by parameter \"{name}\": pass it in the options' \"params\", or use a client registered with it",
                    scope.table(table).name
                ))
            })?;
            let texts = param_values(value)
                .into_iter()
                .map(|v| match json_to_pg_text(column.ty, v) {
                    Ok(Some(text)) => Ok(text),
                    Ok(None) => Err(format!("parameter \"{name}\" may not be null")),
                    Err(reason) => Err(format!("parameter \"{name}\" (column {}): {reason}", column.name)),
                })
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(Error::Params)?;
            bound.insert(name, texts);
        }
    }
    Ok(bound)
}

fn column_type(scope: &Scope<'_>, table: usize, column: &str) -> String {
    scope.table(table).columns.iter().find(|c| c.name == column).map(|c| c.pg_type.clone()).unwrap_or_else(|| "text".into())
}

/// The `=` a filter column's values compare with: its type's own, by
/// schema (`citext`'s), as keys compare (see `Schema::operator`).
fn filter_equality(scope: &Scope<'_>, table: usize, column: &str) -> String {
    match scope.table(table).column(column) {
        Some(c) => scope.schema.operator(c, "="),
        None => "=".to_string(),
    }
}

/// The `=` comparing column `child_col` of table `child` with its `via`
/// parent's key column `parent_col`: their type's own where both have it.
pub fn via_equality(scope: &Scope<'_>, (child, parent): (usize, usize), child_col: &str, parent_col: &str) -> String {
    scope.schema.equality(scope.table(parent).column(parent_col), scope.table(child).column(child_col))
}

/// The condition tying row `child_alias` of table `child` (filtered `via`
/// table `parent`, on `on`) to its parent row `parent_alias`, with the
/// `=` of the key's type: a child holding `'abc'` under a `citext` parent
/// `'ABC'` is that parent's, as PostgreSQL says.
pub fn via_join(
    scope: &Scope<'_>,
    (child, parent): (usize, usize),
    parent_alias: &str,
    on: &BTreeMap<String, String>,
    child_alias: &str,
    child_column: &dyn Fn(&str) -> String,
) -> String {
    on.iter()
        .map(|(child_col, parent_col)| {
            let equals = via_equality(scope, (child, parent), child_col, parent_col);
            format!("{parent_alias}.{} {equals} {child_alias}.{}", quote_ident(parent_col), child_column(child_col))
        })
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// A statement locking `FOR KEY SHARE`, as a foreign key's check does, the
/// `via` parent rows of `rows` (a relation of rows of table `t`, its `on`
/// columns named as in the table): a trigger's new rows, an upload's. A
/// parent moving partition locks itself `FOR UPDATE` (`tracking`), so the
/// two are ordered. `None` for a table not filtered `via` a parent.
pub fn lock_via_parents(scope: &Scope<'_>, t: usize, rows: &str) -> Option<String> {
    let Some(Filter::Via { parent, on }) = &scope.table(t).filter else { return None };
    let p = scope.index_of(parent)?;
    Some(format!(
        "SELECT 1 FROM {rows} k JOIN {} p ON {} FOR KEY SHARE OF p",
        scope.table(p).table_name().quoted(),
        via_join(scope, (t, p), "p", on, "k", &|c| quote_ident(c)),
    ))
}

/// A condition that is true when the row `alias` of `table` (columns named
/// as in the table) is in the client's partition; `None` when the table has
/// no filter (every client holds every row).
pub fn row_filter(scope: &Scope<'_>, table: usize, alias: &str, binds: &mut Binds, values: &FilterValues) -> Option<String> {
    row_filter_with(scope, table, alias, &|c| quote_ident(c), binds, values, 0)
}

/// Same as [`row_filter`] for a row whose columns are named by `column`
/// (staged uploads name columns by position).
pub fn row_filter_with(
    scope: &Scope<'_>,
    table: usize,
    alias: &str,
    column: &dyn Fn(&str) -> String,
    binds: &mut Binds,
    values: &FilterValues,
    depth: usize,
) -> Option<String> {
    match &scope.table(table).filter {
        None => None,
        Some(Filter::Columns(map)) => Some(
            map.iter()
                .map(|(col, name)| {
                    let ty = column_type(scope, table, col);
                    let equals = filter_equality(scope, table, col);
                    format!("{alias}.{} {equals} ANY({}::text[]::{ty}[])", column(col), param(binds, values, name))
                })
                .collect::<Vec<_>>()
                .join(" AND "),
        ),
        Some(Filter::Via { parent, on }) => {
            let parent_index = scope.index_of(parent)?;
            let p = format!("p{}", depth + 1);
            let parent_table = scope.table(parent_index).table_name().quoted();
            let inner =
                row_filter_with(scope, parent_index, &p, &|c| quote_ident(c), binds, values, depth + 1).unwrap_or_else(|| "true".into());
            let join = via_join(scope, (table, parent_index), &p, on, alias, column);
            Some(format!("EXISTS (SELECT 1 FROM {parent_table} {p} WHERE {join} AND {inner})"))
        }
    }
}

/// The partition values of row `alias` as jsonb (`{"tenant": 3}`), recorded
/// when a row leaves a partition. For `via` tables the parent row decides;
/// when the parent is already gone (deleted in the same statement), its last
/// recorded exit does.
pub fn part_expr(scope: &Scope<'_>, table: usize, alias: &str, depth: usize) -> String {
    match &scope.table(table).filter {
        None => "'{}'::jsonb".into(),
        Some(Filter::Columns(map)) => {
            let pairs: Vec<String> =
                map.iter().map(|(col, param)| format!("{}, {alias}.{}", quote_literal(param), quote_ident(col))).collect();
            format!("jsonb_build_object({})", pairs.join(", "))
        }
        Some(Filter::Via { parent, on }) => {
            let Some(parent_index) = scope.index_of(parent) else { return "NULL::jsonb".into() };
            let p = format!("p{}", depth + 1);
            let parent_table = scope.table(parent_index).table_name().quoted();
            let join = via_join(scope, (table, parent_index), &p, on, alias, &|c| quote_ident(c));
            let inner = part_expr(scope, parent_index, &p, depth + 1);
            format!(
                "coalesce((SELECT {inner} FROM {parent_table} {p} WHERE {join}), \
                 (SELECT {p}.tandem_part FROM {} {p} WHERE {join} ORDER BY {p}.tandem_stamp DESC LIMIT 1))",
                scope.exits(parent_index)
            )
        }
    }
}

/// A condition on a recorded partition (`part`, jsonb) that is true when it
/// was the client's partition; `None` for unfiltered tables.
pub fn part_match(scope: &Scope<'_>, table: usize, part: &str, binds: &mut Binds, values: &FilterValues) -> Option<String> {
    let (root, map) = root_filter(scope, table)?;
    let root_table = scope.table(root);
    Some(
        map.iter()
            .map(|(col, name)| {
                let ty = column_type(scope, root, col);
                let equals = filter_equality(scope, root, col);
                let cast = format!("({part}->>{})::{ty}", quote_literal(name));
                let recorded = match root_table.column(col).map(|c| c.ty) {
                    // Beside the column in a UNION, the value takes the
                    // column's collation too, which no cast gives: `'ACME'`
                    // left the partition of `"acme"` under a case-blind one.
                    Some(LogicalType::Text | LogicalType::Other) => format!(
                        "(SELECT x.v FROM (SELECT t.{} FROM {} t WHERE false UNION ALL SELECT {cast}) AS x(v))",
                        quote_ident(col),
                        root_table.table_name().quoted(),
                    ),
                    _ => cast,
                };
                format!("{recorded} {equals} ANY({}::text[]::{ty}[])", param(binds, values, name))
            })
            .collect::<Vec<_>>()
            .join(" AND "),
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::schema::{Column, Schema, TableSchema};
    use crate::setup::Direction;

    pub(crate) fn crm() -> Schema {
        let col = |name: &str, pg: &str| Column {
            name: name.into(),
            ty: LogicalType::Int8,
            pg_type: pg.into(),
            nullable: false,
            default: None,
            server_default: false,
            fill: None,
            since: None,
        };
        let table = |name: &str, cols: Vec<Column>, pk: &[&str], filter: Option<Filter>| TableSchema {
            name: name.into(),
            columns: cols,
            primary_key: pk.iter().map(|s| s.to_string()).collect(),
            filter,
            direction: Direction::Bidirectional,
            policy: None,
            partitioned: false,
            refiltered: None,
            renamed_from: Vec::new(),
            added: None,
        };
        Schema {
            scope: "crm".into(),
            version: 1,
            former_names: Vec::new(),
            operators: Default::default(),
            tables: vec![
                table(
                    "public.orders",
                    vec![col("id", "bigint"), col("tenant_id", "integer")],
                    &["id"],
                    Some(Filter::Columns([("tenant_id".into(), "tenant".into())].into())),
                ),
                table(
                    "public.items",
                    vec![col("order_id", "bigint"), col("line", "integer")],
                    &["order_id", "line"],
                    Some(Filter::Via { parent: "public.orders".into(), on: [("order_id".into(), "id".into())].into() }),
                ),
                table("public.currencies", vec![col("code", "text")], &["code"], None),
            ],
        }
    }

    #[test]
    fn column_filters_bind_each_parameter_once() {
        let schema = crm();
        let ids = [1, 2, 3];
        let scope = Scope::new(&schema, &ids);
        let values: FilterValues = [("tenant".to_string(), vec!["3".to_string()])].into();
        let mut binds = Binds::new();
        binds.bind("first");
        let direct = row_filter(&scope, 0, "t", &mut binds, &values).unwrap();
        assert_eq!(direct, "t.\"tenant_id\" = ANY($2::text[]::integer[])");
        let via = row_filter(&scope, 1, "t", &mut binds, &values).unwrap();
        assert_eq!(
            via,
            "EXISTS (SELECT 1 FROM \"public\".\"orders\" p1 WHERE p1.\"id\" = t.\"order_id\" AND p1.\"tenant_id\" = ANY($2::text[]::integer[]))"
        );
        assert_eq!(binds.values().len(), 2, "the tenant is bound once");
        assert!(row_filter(&scope, 2, "t", &mut binds, &values).is_none());
        assert_eq!(filter_params(&scope, 1)[0].1.name, "tenant_id");
        let params: Params = [("tenant".to_string(), serde_json::json!([3, 4]))].into();
        assert_eq!(bind_params(&scope, &params, [0, 1, 2]).unwrap()["tenant"], ["3", "4"]);
        let err = bind_params(&scope, &Params::new(), [1]).unwrap_err().to_string();
        assert!(err.contains("filtered by parameter \"tenant\""), "{err}");
        let bad: Params = [("tenant".to_string(), serde_json::json!("three"))].into();
        assert!(bind_params(&scope, &bad, [0]).unwrap_err().to_string().contains("expected a 64-bit integer"));
        let misspelt: Params = [("tenant".to_string(), serde_json::json!(3)), ("tenat".to_string(), serde_json::json!(3))].into();
        let err = bind_params(&scope, &misspelt, [0]).unwrap_err().to_string();
        assert!(err.contains("uses parameter \"tenat\"") && err.contains("\"tenant\""), "{err}");
    }

    #[test]
    fn a_child_matches_its_parent_with_the_equality_of_their_type() {
        let mut schema = crm();
        schema.tables[0].columns[0].pg_type = "public.citext".into();
        schema.tables[1].columns[0].pg_type = "public.citext".into();
        let values: FilterValues = [("tenant".to_string(), vec!["3".to_string()])].into();
        let ids = [1, 2, 3];
        let plain = row_filter(&Scope::new(&schema, &ids), 1, "t", &mut Binds::new(), &values).unwrap();
        assert!(plain.contains("p1.\"id\" = t.\"order_id\""), "a type whose `=` is not known compares as written: {plain}");
        let mut mood = schema.tables[0].columns[1].clone();
        (mood.name, mood.pg_type) = ("mood".into(), "public.mood".into());
        schema.tables[0].columns.push(mood);
        assert_eq!(schema.qualified_types(), ["public.citext"], "only compared columns' types are looked up");
        schema.operators.insert("public.citext".into(), "public".into());
        let scope = Scope::new(&schema, &ids);
        let via = row_filter(&scope, 1, "t", &mut Binds::new(), &values).unwrap();
        assert!(via.contains("p1.\"id\" OPERATOR(\"public\".=) t.\"order_id\""), "{via}");
        assert!(part_expr(&scope, 1, "o", 0).contains("p1.\"id\" OPERATOR(\"public\".=) o.\"order_id\""));
        // A filter column's values compare with its type's `=` too.
        schema.tables[0].columns[1].pg_type = "public.citext".into();
        let scope = Scope::new(&schema, &ids);
        let direct = row_filter(&scope, 0, "t", &mut Binds::new(), &values).unwrap();
        assert_eq!(direct, "t.\"tenant_id\" OPERATOR(\"public\".=) ANY($1::text[]::public.citext[])");
        let exited = part_match(&scope, 1, "e.tandem_part", &mut Binds::new(), &values).unwrap();
        assert_eq!(exited, "(e.tandem_part->>'tenant')::public.citext OPERATOR(\"public\".=) ANY($1::text[]::public.citext[])");
        schema.tables[0].columns[1].pg_type = "integer".into();
        // Columns of other types compare with PostgreSQL's own `=`.
        schema.tables[1].columns[0].pg_type = "text".into();
        let scope = Scope::new(&schema, &ids);
        let mixed = row_filter(&scope, 1, "t", &mut Binds::new(), &values).unwrap();
        assert!(mixed.contains("p1.\"id\" = t.\"order_id\""), "{mixed}");
    }

    #[test]
    fn exits_record_the_partition_through_parents() {
        let schema = crm();
        let ids = [1, 2, 3];
        let scope = Scope::new(&schema, &ids);
        assert_eq!(part_expr(&scope, 0, "o", 0), "jsonb_build_object('tenant', o.\"tenant_id\")");
        let via = part_expr(&scope, 1, "o", 0);
        assert!(via.starts_with("coalesce((SELECT jsonb_build_object('tenant', p1.\"tenant_id\") FROM \"public\".\"orders\" p1 WHERE p1.\"id\" = o.\"order_id\")"), "{via}");
        assert!(via.contains("FROM \"tandem\".\"exit_1\" p1"), "{via}");
        let mut binds = Binds::new();
        assert_eq!(
            part_match(&scope, 1, "e.tandem_part", &mut binds, &FilterValues::new()).unwrap(),
            "(e.tandem_part->>'tenant')::integer = ANY($1::text[]::integer[])"
        );
        assert_eq!(part_expr(&scope, 2, "o", 0), "'{}'::jsonb");
    }
}
