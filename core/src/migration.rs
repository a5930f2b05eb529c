//! What a change of a scope's schema asks of its devices: whether they
//! can follow it in place at all, and whether a changed table's rows must
//! come down again. Both sides of a scope's life call this: `sync_provision`
//! with a changed setup, and the event trigger that follows `ALTER TABLE`
//! on a tracked table.

use serde_json::Value;

use crate::error::{Error, Result};
use crate::ident::TableName;
use crate::schema::{CatalogColumn, Column, Schema, TableSchema};
use crate::setup::Filter;
use crate::types::{sqlite_default, LogicalType};

/// How to make a change devices cannot follow in place: leave the table
/// out, change it, add it back.
pub const REMAKE: &str = "to make this change, remove the table from the scope first (sync_provision without it: \
                      devices stop syncing their copy), make the change, then provision the table again (devices \
                      receive it anew)";

/// Refuses changes devices could not follow without losing track of which
/// rows they hold, or without holding values other than the server's.
pub fn check_followable(old: &Schema, new: &Schema) -> Result<()> {
    for table in &new.tables {
        let Some(before) = old.tables.iter().find(|t| t.name == table.name) else { continue };
        if before.primary_key != table.primary_key {
            return Err(Error::InvalidSetup(format!(
                "the primary key of {} changed ({} -> {}), and devices find their rows by it; {REMAKE}",
                table.name,
                before.primary_key.join(", "),
                table.primary_key.join(", ")
            )));
        }
        for column in &table.columns {
            let Some(was) = before.columns.iter().find(|c| c.name == column.name) else { continue };
            let joins_parent = matches!(&table.filter, Some(Filter::Via { on, .. }) if on.contains_key(&column.name));
            if joins_parent && was.pg_type != column.pg_type {
                return Err(Error::InvalidSetup(format!(
                    "column \"{}\" of {} joins it to the parent its filter goes through, and its type changed from {} to {}: \
                     rows would no longer be matched to their parent; {REMAKE}",
                    column.name, table.name, was.pg_type, column.pg_type
                )));
            }
            if was.ty.sqlite_decl() != column.ty.sqlite_decl() {
                return Err(Error::InvalidSetup(format!(
                    "the type of column \"{}\" of {} changed from {} to {}, which devices store differently \
                     (SQLite {} against {}); {REMAKE}",
                    column.name,
                    table.name,
                    was.pg_type,
                    column.pg_type,
                    was.ty.sqlite_decl(),
                    column.ty.sqlite_decl()
                )));
            }
        }
    }
    Ok(())
}

/// Marks the tables of `new` whose rows devices hold changed with this
/// change (`version`, the schema's next): a changed filter, a parent's
/// (through `via`), or downloads turned on (a device of an `upload_only`
/// table holds only what it wrote). Each keeps the mark it had otherwise.
/// Returns the tables marked now: their rows go out again to every
/// device, which drops those it held that do not come (a device's copy is
/// swept as it pulls), so a widened partition brings its rows and a
/// narrowed one takes them away. A table that does not download is never
/// marked: its devices receive nothing of it to sweep with.
pub fn refilter(old: &Schema, new: &mut Schema, version: i64) -> Vec<String> {
    let mut marked: Vec<String> = Vec::new();
    loop {
        let before = marked.len();
        for table in &new.tables {
            let Some(was) = old.tables.iter().find(|t| t.name == table.name) else { continue };
            let parent_marked = matches!(&table.filter, Some(Filter::Via { parent, .. }) if marked.contains(parent));
            let changed = was.filter != table.filter || !was.direction.downloads() || parent_marked;
            if changed && table.direction.downloads() && !marked.contains(&table.name) {
                marked.push(table.name.clone());
            }
        }
        if marked.len() == before {
            break;
        }
    }
    for table in &mut new.tables {
        table.refiltered = match marked.contains(&table.name) {
            true => Some(version),
            false => old.tables.iter().find(|t| t.name == table.name).and_then(|t| t.refiltered),
        };
    }
    marked
}

/// The setup with tables renamed on the server (`(old, new)` pairs): each
/// one's entry, and every `via` filter that goes through one, name it as
/// it is now. Names not renamed stay as the owner wrote them.
pub fn renamed_setup(setup: &Value, renames: &[(TableName, TableName)]) -> Result<Value> {
    let mut setup = setup.clone();
    let Some(tables) = setup.get_mut("tables").and_then(Value::as_array_mut) else {
        return Err(Error::Internal("a stored setup without \"tables\"".into()));
    };
    let now = |written: &str| -> Result<Option<String>> {
        let name = TableName::parse(written)?;
        Ok(renames.iter().find(|(old, _)| *old == name).map(|(_, new)| new.to_string()))
    };
    for entry in tables {
        if let Some(new) = entry.get("name").and_then(Value::as_str).map(now).transpose()?.flatten() {
            entry["name"] = Value::String(new);
        }
        let parent = entry.get("filter").and_then(|f| f.get("via")).and_then(Value::as_str).map(now).transpose()?.flatten();
        if let Some(new) = parent {
            entry["filter"]["via"] = Value::String(new);
        }
    }
    Ok(setup)
}

/// `schema` as if its tables renamed on the server had always had their
/// new names (`(old, new)` canonical pairs), each remembering the old one:
/// what a changed schema is compared with, so a renamed table is the same
/// table, its rows and tracking kept.
pub fn rename(schema: &mut Schema, renames: &[(String, String)]) {
    for table in &mut schema.tables {
        if let Some((old, new)) = renames.iter().find(|(old, _)| *old == table.name) {
            table.renamed_from.push(old.clone());
            table.name = new.clone();
        }
        if let Some(Filter::Via { parent, .. }) = &mut table.filter {
            if let Some((_, new)) = renames.iter().find(|(old, _)| old == parent) {
                *parent = new.clone();
            }
        }
    }
}

/// The names `old`'s tables had (now or before) that no table of `new`
/// has, with those `old` already kept: see `Schema::former_names`.
pub fn former_names(old: &Schema, new: &Schema) -> Vec<String> {
    let held = |schema: &Schema| -> Vec<String> {
        schema.tables.iter().flat_map(|t| std::iter::once(t.name.clone()).chain(t.renamed_from.iter().cloned())).collect()
    };
    let now = held(new);
    let mut former: Vec<String> = old.former_names.iter().cloned().chain(held(old)).filter(|n| !now.contains(n)).collect();
    former.sort();
    former.dedup();
    former
}

/// Carries over to `new` (what table `old` became) the fill of the
/// columns it keeps, and decides for those it gains. With `just_altered`
/// (an `ALTER TABLE` made them a moment ago, so every row holds what the
/// column's default gave it) a gained column that devices can fill alike
/// gets its fill; any other gained or retyped column means the table's
/// rows must be sent again, which this returns. A column that vanished
/// in the same change may have been renamed into a gained one, whose rows
/// then hold its values: the rows are sent again. Kept columns keep the
/// version that added them; gained ones are marked with `version`, the
/// schema's next.
pub fn carry_over(old: &TableSchema, new: &mut TableSchema, catalog: &[CatalogColumn], just_altered: bool, version: i64) -> bool {
    new.renamed_from = old.renamed_from.clone();
    new.added = old.added;
    let vanished = old.columns.iter().any(|o| !new.columns.iter().any(|c| c.name == o.name));
    let mut needs_rows = false;
    for column in &mut new.columns {
        match old.columns.iter().find(|o| o.name == column.name) {
            Some(was) => {
                column.since = was.since;
                // A retyped column's values come again in the new type.
                if was.pg_type == column.pg_type {
                    column.fill = was.fill.clone();
                } else {
                    needs_rows = true;
                }
            }
            None => {
                column.since = Some(version);
                let fill = catalog.iter().find(|c| c.name == column.name).and_then(|c| fill_of(column, c));
                match fill {
                    Some(fill) if just_altered && !vanished => column.fill = Some(fill),
                    _ => needs_rows = true,
                }
            }
        }
    }
    needs_rows
}

/// What every row of a column just added holds, as the SQLite constant a
/// device's `ALTER TABLE ... ADD COLUMN` gives its own rows, when that is
/// exactly the server's value: NULL (no default), or a constant stored in
/// the same form on both sides. `None` for anything computed per row (a
/// sequence, an identity, the time, a random value) or stored in another
/// form (numeric scale, timestamps, padded text).
fn fill_of(column: &Column, catalog: &CatalogColumn) -> Option<String> {
    if catalog.identity.is_some() || catalog.generated {
        return None;
    }
    let Some(expr) = catalog.default.as_deref() else { return column.nullable.then(|| "NULL".to_string()) };
    let exact = matches!(column.ty, LogicalType::Int2 | LogicalType::Int4 | LogicalType::Int8 | LogicalType::Bool)
        || (column.ty == LogicalType::Text && column.pg_type == "text");
    sqlite_default(column.ty, expr).filter(|d| exact && !d.starts_with('('))
}

/// A scope's setup without some of its tables.
#[derive(Debug, PartialEq)]
pub struct Pruned {
    /// The setup as its owner wrote it, less the entries of the tables gone.
    pub setup: Value,
    /// The tables taken out, as the setup names them: those dropped, and
    /// those whose filter went `via` a table taken out.
    pub removed: Vec<String>,
}

impl Pruned {
    /// Tables left in the setup.
    pub fn left(&self) -> usize {
        self.setup.get("tables").and_then(Value::as_array).map_or(0, Vec::len)
    }
}

/// `setup` without the tables `dropped`, nor any whose filter goes `via`
/// one of those (its rows would belong to no one).
pub fn without_tables(setup: &Value, dropped: &[TableName]) -> Result<Pruned> {
    let mut setup = setup.clone();
    let Some(tables) = setup.get_mut("tables").and_then(Value::as_array_mut) else {
        return Err(Error::Internal("a stored setup without \"tables\"".into()));
    };
    let name_of = |entry: &Value| -> Result<(String, TableName)> {
        let name =
            entry.get("name").and_then(Value::as_str).ok_or_else(|| Error::Internal("a stored setup table without a name".into()))?;
        Ok((name.to_string(), TableName::parse(name)?))
    };
    let parent_of = |entry: &Value| -> Option<Result<TableName>> {
        entry.get("filter").and_then(|f| f.get("via")).and_then(Value::as_str).map(TableName::parse)
    };
    let mut gone: Vec<TableName> = dropped.to_vec();
    let mut removed = Vec::new();
    loop {
        let mut kept = Vec::with_capacity(tables.len());
        let before = removed.len();
        for entry in tables.drain(..) {
            let orphaned = match parent_of(&entry) {
                Some(parent) => gone.contains(&parent?),
                None => false,
            };
            let (written, name) = name_of(&entry)?;
            if gone.contains(&name) || orphaned {
                removed.push(written);
                gone.push(name);
            } else {
                kept.push(entry);
            }
        }
        *tables = kept;
        if removed.len() == before {
            break;
        }
    }
    Ok(Pruned { setup, removed })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::setup::Direction;

    fn column(name: &str, ty: LogicalType, pg_type: &str, nullable: bool, default: Option<&str>) -> Column {
        Column {
            name: name.into(),
            ty,
            pg_type: pg_type.into(),
            nullable,
            default: default.and_then(|d| sqlite_default(ty, d)),
            server_default: false,
            fill: None,
            since: None,
        }
    }

    fn catalog(name: &str, pg_type: &str, default: Option<&str>) -> CatalogColumn {
        CatalogColumn {
            name: name.into(),
            typname: pg_type.into(),
            pg_type: pg_type.into(),
            nullable: true,
            generated: false,
            default: default.map(String::from),
            identity: None,
            sequence: None,
        }
    }

    fn table(columns: Vec<Column>) -> TableSchema {
        TableSchema {
            name: "public.t".into(),
            columns,
            primary_key: vec!["id".into()],
            filter: None,
            direction: Default::default(),
            policy: None,
            partitioned: false,
            refiltered: None,
            renamed_from: Vec::new(),
            added: None,
        }
    }

    #[test]
    fn a_column_added_moves_rows_only_when_devices_cannot_fill_it_alike() {
        let id = column("id", LogicalType::Int8, "bigint", false, None);
        let old = table(vec![id.clone()]);
        // (the column, its default as PostgreSQL prints it, its fill)
        let cases = [
            (column("n", LogicalType::Int4, "integer", true, None), None, Some("NULL")),
            (column("n", LogicalType::Int4, "integer", false, Some("7")), Some("7"), Some("7")),
            (column("n", LogicalType::Bool, "boolean", true, Some("false")), Some("false"), Some("0")),
            (column("n", LogicalType::Text, "text", true, Some("'new'::text")), Some("'new'::text"), Some("'new'")),
            (column("n", LogicalType::Int8, "bigint", true, None), Some("nextval('s'::regclass)"), None),
            (column("n", LogicalType::Timestamptz, "timestamp with time zone", true, Some("now()")), Some("now()"), None),
            (column("n", LogicalType::Numeric, "numeric(12,2)", true, Some("0")), Some("0"), None),
            (column("n", LogicalType::Text, "character(3)", true, Some("'a'::bpchar")), Some("'a'::bpchar"), None),
        ];
        for (added, default, fill) in cases {
            let catalog = [catalog("n", &added.pg_type, default)];
            let mut new = table(vec![id.clone(), added.clone()]);
            let needs_rows = carry_over(&old, &mut new, &catalog, true, 2);
            assert_eq!((needs_rows, new.columns[1].fill.as_deref()), (fill.is_none(), fill), "{added:?} with default {default:?}");
            // Added by a changed setup, the column may hold anything.
            let mut new = table(vec![id.clone(), added.clone()]);
            assert!(carry_over(&old, &mut new, &catalog, false, 2), "{added:?}");
        }
        // A retyped column's rows come again in the new type.
        let mut retyped = table(vec![column("id", LogicalType::Int8, "integer", false, None)]);
        assert!(carry_over(&old, &mut retyped, &[], true, 2));
        assert!(!carry_over(&old, &mut old.clone(), &[], true, 2), "nothing changed");
        let mut identity = catalog("n", "bigint", None);
        identity.identity = Some('d');
        let mut new = table(vec![id.clone(), column("n", LogicalType::Int8, "bigint", true, None)]);
        assert!(carry_over(&old, &mut new, &[identity], true, 2), "identity values are computed per row");
        // A rename is a column gone and one come: its rows hold values.
        let mut renamed = table(vec![column("key", LogicalType::Int8, "bigint", true, None)]);
        assert!(carry_over(&old, &mut renamed, &[catalog("key", "bigint", None)], true, 2));
        // A fill stays with its column through later changes.
        let mut later = table(vec![id.clone(), column("n", LogicalType::Int4, "integer", true, Some("9"))]);
        let mut filled = later.clone();
        filled.columns[1].fill = Some("7".into());
        assert!(!carry_over(&filled, &mut later, &[catalog("n", "integer", Some("9"))], true, 3));
        assert_eq!(later.columns[1].fill.as_deref(), Some("7"));
    }

    #[test]
    fn changes_devices_cannot_follow_in_place_are_refused_with_the_way_round() {
        let schema = |tables| Schema { scope: "s".into(), version: 1, tables, former_names: Vec::new(), operators: Default::default() };
        let old = schema(vec![table(vec![column("id", LogicalType::Int8, "bigint", false, None)])]);
        let mut rekeyed = old.clone();
        rekeyed.tables[0].primary_key = vec!["id".into(), "other".into()];
        let error = check_followable(&old, &rekeyed).unwrap_err().to_string();
        assert!(error.contains("primary key") && error.contains("sync_provision"), "{error}");
        let retyped = schema(vec![table(vec![column("id", LogicalType::Text, "text", false, None)])]);
        let error = check_followable(&old, &retyped).unwrap_err().to_string();
        assert!(error.contains("\"id\"") && error.contains("bigint to text"), "{error}");
        let widened = schema(vec![table(vec![column("id", LogicalType::Int8, "integer", false, None)])]);
        assert!(check_followable(&old, &widened).is_ok(), "integers stay integers");
        // A column that joins a table to its `via` parent keeps its type.
        let child = |ty: &str| {
            let mut t =
                table(vec![column("id", LogicalType::Int8, "bigint", false, None), column("pid", LogicalType::Uuid, ty, false, None)]);
            t.filter = Some(Filter::Via { parent: "public.p".into(), on: [("pid".to_string(), "id".to_string())].into() });
            schema(vec![t])
        };
        let error = check_followable(&child("uuid"), &child("text")).unwrap_err().to_string();
        assert!(error.contains("\"pid\"") && error.contains("parent"), "{error}");
    }

    #[test]
    fn a_changed_partition_marks_its_table_and_the_tables_filtered_through_it() {
        let id = || column("id", LogicalType::Int8, "bigint", false, None);
        let named = |name: &str, filter: Option<Filter>, direction: Direction| {
            let mut t = table(vec![id()]);
            t.name = name.into();
            t.filter = filter;
            t.direction = direction;
            t
        };
        let by = |column: &str| Some(Filter::Columns([(column.to_string(), "tenant".to_string())].into()));
        let via = |parent: &str| Some(Filter::Via { parent: parent.into(), on: [("id".to_string(), "id".to_string())].into() });
        let schema = |tables| Schema { scope: "s".into(), version: 1, tables, former_names: Vec::new(), operators: Default::default() };
        let old = schema(vec![
            named("public.c", by("tenant_id"), Direction::Bidirectional),
            named("public.o", via("public.c"), Direction::Bidirectional),
            named("public.l", via("public.o"), Direction::Bidirectional),
            named("public.up", via("public.c"), Direction::UploadOnly),
            named("public.n", by("tenant_id"), Direction::UploadOnly),
            named("public.k", by("tenant_id"), Direction::Bidirectional),
        ]);
        let mut same = old.clone();
        assert!(refilter(&old, &mut same, 2).is_empty());
        assert_eq!(same, old);

        let mut new = old.clone();
        // The children come before their parent: the mark still reaches them.
        new.tables.reverse();
        new.tables[5].filter = by("region");
        new.tables[1].direction = Direction::DownloadOnly;
        new.tables[0].direction = Direction::UploadOnly;
        let mut marked = refilter(&old, &mut new, 2);
        marked.sort();
        assert_eq!(marked, ["public.c", "public.l", "public.n", "public.o"]);
        let marks: Vec<_> = new.tables.iter().map(|t| (t.name.as_str(), t.refiltered)).collect();
        assert_eq!(
            marks,
            [
                ("public.k", None),
                ("public.n", Some(2)),
                ("public.up", None),
                ("public.l", Some(2)),
                ("public.o", Some(2)),
                ("public.c", Some(2))
            ]
        );
        // A later change keeps the marks it does not renew.
        let mut later = new.clone();
        later.tables[1].filter = by("region");
        // One that does not download has nothing to receive anew.
        later.tables[0].filter = by("region");
        assert_eq!(refilter(&new, &mut later, 3), ["public.n"]);
        assert_eq!(later.tables.iter().map(|t| t.refiltered).collect::<Vec<_>>(), [None, Some(3), None, Some(2), Some(2), Some(2)]);
    }

    #[test]
    fn a_renamed_table_is_named_anew_wherever_the_setup_and_schema_name_it() {
        let setup = serde_json::json!({"tables": [
            {"name": "customers", "filter": {"tenant_id": "tenant"}},
            {"name": "public.orders", "filter": {"via": "public.customers", "on": {"customer_id": "id"}}},
            {"name": "notes"}]});
        let renames = [(TableName::parse("customers").unwrap(), TableName::new("Sales", "clients"))];
        let renamed = renamed_setup(&setup, &renames).unwrap();
        assert_eq!(
            renamed,
            serde_json::json!({"tables": [
                {"name": "\"Sales\".clients", "filter": {"tenant_id": "tenant"}},
                {"name": "public.orders", "filter": {"via": "\"Sales\".clients", "on": {"customer_id": "id"}}},
                {"name": "notes"}]})
        );
        let id = || column("id", LogicalType::Int8, "bigint", false, None);
        let mut orders = table(vec![id()]);
        orders.name = "public.orders".into();
        orders.filter = Some(Filter::Via { parent: "public.t".into(), on: [("id".to_string(), "id".to_string())].into() });
        let mut schema = Schema {
            scope: "s".into(),
            version: 1,
            tables: vec![table(vec![id()]), orders],
            former_names: Vec::new(),
            operators: Default::default(),
        };
        rename(&mut schema, &[("public.t".into(), "public.u".into())]);
        rename(&mut schema, &[("public.u".into(), "public.v".into())]);
        assert_eq!(
            (schema.tables[0].name.as_str(), &schema.tables[0].renamed_from),
            ("public.v", &vec!["public.t".to_string(), "public.u".to_string()])
        );
        assert!(matches!(&schema.tables[1].filter, Some(Filter::Via { parent, .. }) if parent == "public.v"));
        assert!(schema.tables[1].renamed_from.is_empty());
    }

    #[test]
    fn a_dropped_table_leaves_the_setup_with_the_tables_filtered_through_it() {
        let setup = serde_json::json!({"policy": "client_wins", "tables": [
            {"name": "customers", "filter": {"tenant_id": "tenant"}},
            {"name": "orders", "filter": {"via": "customers", "on": {"customer_id": "id"}}},
            {"name": "\"Order Lines\"", "filter": {"via": "public.orders", "on": {"order_id": "id"}}},
            {"name": "notes"}]});
        let pruned = without_tables(&setup, &[TableName::parse("public.customers").unwrap()]).unwrap();
        assert_eq!(pruned.removed, ["customers", "orders", "\"Order Lines\""]);
        assert_eq!(pruned.left(), 1);
        assert_eq!(pruned.setup, serde_json::json!({"policy": "client_wins", "tables": [{"name": "notes"}]}));
        let pruned = without_tables(&setup, &[TableName::parse("\"Order Lines\"").unwrap()]).unwrap();
        assert_eq!((pruned.removed.len(), pruned.left()), (1, 3));
        let pruned = without_tables(&setup, &[TableName::parse("other").unwrap()]).unwrap();
        assert_eq!((pruned.removed.len(), &pruned.setup), (0, &setup));
    }
}
