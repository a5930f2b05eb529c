//! The schema of a scope: what `sync_schema` returns and what the local side
//! provisions from. Built from the setup and the server's catalog.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::ident::TableName;
use crate::setup::{Direction, Filter, ScopeSetup};
use crate::types::LogicalType;

/// Column names Tandem keeps beside the primary key in tracking tables; a
/// primary key column may not use the prefix.
pub const RESERVED_PREFIX: &str = "tandem_";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Schema {
    pub scope: String,
    /// Grows by one each time provisioning changes the schema.
    pub version: i64,
    /// Parents before children, so applying in this order satisfies foreign
    /// keys (and deleting in reverse order does too).
    pub tables: Vec<TableSchema>,
    /// Names tables of the scope had and no table has now (dropped, left,
    /// renamed): a table renamed to one would be taken by a device for
    /// the table it held under it, so such a rename is refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub former_names: Vec<String>,
    /// The schema of the `=` of each declared type that brings its own
    /// (`public.citext`): Tandem's statements run with only `pg_catalog` on
    /// the path, where `citext = citext` would compare the texts. The
    /// server fills it from its catalog as it loads a scope
    /// ([`Schema::qualified_types`]); it is neither stored nor sent.
    #[serde(skip)]
    pub operators: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TableSchema {
    pub name: String,
    pub columns: Vec<Column>,
    pub primary_key: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<Filter>,
    #[serde(default)]
    pub direction: Direction,
    /// How the server settles this table's conflicts (absent:
    /// `server_wins`), as the scope's setup says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// A partitioned table on the server: its partitions carry Tandem's
    /// triggers too, since a write made to a partition directly fires only
    /// the partition's statement triggers.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub partitioned: bool,
    /// The schema version that last changed which rows devices hold of this
    /// table (its filter, its parent's, or downloads turned on): a device
    /// whose copy predates it receives the table anew as it pulls, and
    /// drops the rows that are no longer its own (see `migration`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refiltered: Option<i64>,
    /// The names the table had before, oldest first (`ALTER TABLE ...
    /// RENAME TO`, `ALTER SCHEMA ... RENAME`): a device that knows it by
    /// one of them renames its copy in place (see `migration::rename`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub renamed_from: Vec<String>,
    /// The schema version that added the table to the scope, after its
    /// first: a table dropped and made again under its name (even with the
    /// same key) is another table, which a device receives anew.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub added: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: LogicalType,
    /// The declared PostgreSQL type (`numeric(12,2)`, `public.mood`), which
    /// values are cast back to.
    pub pg_type: String,
    pub nullable: bool,
    /// The column's default as SQLite computes it, when it can: a device
    /// insert that leaves the column out gets it (see
    /// [`crate::types::sqlite_default`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// A NOT NULL column whose default only the server computes: a device
    /// may leave it NULL, and the server fills it in on insert.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub server_default: bool,
    /// For a column an `ALTER TABLE` added without the table's rows being
    /// sent again: what every row held then, as a SQLite constant (`NULL`,
    /// `7`, `'new'`). A device adding the column fills its rows with it,
    /// whatever the column's default became since (see `migration`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fill: Option<String>,
    /// The schema version that added the column, when it came after the
    /// scope's first: a column dropped and added again under its name is
    /// another column, which a device must not take for the one it has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<i64>,
}

impl Column {
    /// Whether `other` is this same column (not one added again under its
    /// name since).
    pub fn same_as(&self, other: &Column) -> bool {
        self.name == other.name && self.since == other.since
    }

    /// Whether a device may hold (and send) NULL in this column.
    pub fn takes_null(&self) -> bool {
        self.nullable || self.server_default
    }
}

impl Schema {
    /// Finds a table by any spelling of its name (`orders`, `public.orders`).
    pub fn table(&self, name: &str) -> Result<&TableSchema> {
        // Changesets and results use the canonical spelling: no parse needed.
        if let Some(table) = self.tables.iter().find(|t| t.name == name) {
            return Ok(table);
        }
        let wanted = TableName::parse(name)?;
        self.tables.iter().find(|t| t.table_name() == wanted).ok_or_else(|| Error::UnknownTable {
            scope: self.scope.clone(),
            table: name.to_string(),
            known: self.tables.iter().map(|t| t.name.as_str()).collect::<Vec<_>>().join(", "),
        })
    }

    pub fn position(&self, table: &TableSchema) -> usize {
        self.tables.iter().position(|t| t.name == table.name).unwrap_or(usize::MAX)
    }

    /// Declared types of the columns Tandem compares (keys, filter
    /// columns, and the columns a `via` filter ties to a parent's key) that are named with
    /// their schema (`public.citext`): the types that may bring their own
    /// `=` (see [`Schema::operators`]). An enum's column elsewhere costs no
    /// lookup.
    pub fn qualified_types(&self) -> Vec<String> {
        let compared = |t: &TableSchema, c: &Column| {
            t.primary_key.contains(&c.name)
                || match &t.filter {
                    Some(Filter::Via { on, .. }) => on.contains_key(&c.name),
                    Some(Filter::Columns(map)) => map.contains_key(&c.name),
                    None => false,
                }
        };
        let mut types: Vec<String> = self
            .tables
            .iter()
            .flat_map(|t| t.columns.iter().filter(move |c| compared(t, c)))
            .map(|c| c.pg_type.clone())
            .filter(|t| t.contains('.'))
            .collect();
        types.sort();
        types.dedup();
        types
    }

    /// The operator telling whether a value of column `left` equals one of
    /// `right` as PostgreSQL's `=` of their type does, whatever the search
    /// path: `OPERATOR("public".=)` for two `citext` columns, else `=`.
    pub fn equality(&self, left: Option<&Column>, right: Option<&Column>) -> String {
        let operator = |c: Option<&Column>| c.and_then(|c| self.operators.get(&c.pg_type));
        match (operator(left), operator(right)) {
            (Some(l), Some(r)) if l == r => format!("OPERATOR({}.=)", crate::ident::quote_ident(l)),
            _ => "=".to_string(),
        }
    }

    /// Operator `op` (`=`, `>`) of column `column`'s type, by its schema
    /// where the type brings its own (see [`Schema::operators`]): what
    /// compares as its primary key orders and finds rows, whatever the
    /// search path.
    pub fn operator(&self, column: &Column, op: &str) -> String {
        match self.operators.get(&column.pg_type) {
            Some(schema) => format!("OPERATOR({}.{op})", crate::ident::quote_ident(schema)),
            None => op.to_string(),
        }
    }

    /// Same tables and columns, ignoring the version number.
    pub fn same_shape(&self, other: &Schema) -> bool {
        self.scope == other.scope && self.tables == other.tables
    }
}

impl TableSchema {
    /// Whether `other` is this table as a device holds it: the same name,
    /// added at the same time, with the same key stored alike. A table
    /// made again under its name is not.
    pub fn same_table(&self, other: &TableSchema) -> bool {
        let key = |t: &TableSchema| t.key_columns().iter().map(|c| (c.name.clone(), c.ty.sqlite_decl())).collect::<Vec<_>>();
        self.name == other.name && self.added == other.added && self.primary_key == other.primary_key && key(self) == key(other)
    }

    pub fn table_name(&self) -> TableName {
        TableName::parse(&self.name).unwrap_or_else(|_| TableName::new("public", self.name.clone()))
    }

    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    /// Positions of the primary key columns in `columns`.
    pub fn key_indexes(&self) -> Vec<usize> {
        self.primary_key.iter().filter_map(|k| self.column_index(k)).collect()
    }

    /// The column named `name`, if the table syncs it.
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    pub fn key_columns(&self) -> Vec<&Column> {
        self.key_indexes().into_iter().map(|i| &self.columns[i]).collect()
    }

    /// The key columns whose text may change while PostgreSQL holds the
    /// value equal (see [`LogicalType::key_may_be_respelled`]): where a
    /// key's text matters as well as its value.
    pub fn respellable_key(&self) -> Vec<String> {
        self.key_columns().into_iter().filter(|c| c.ty.key_may_be_respelled()).map(|c| c.name.clone()).collect()
    }

    /// Whether the file may hold a key of this table in other text than
    /// the server's for the same value (see
    /// [`LogicalType::key_may_be_spelled_apart`]).
    pub fn key_may_be_spelled_apart(&self) -> bool {
        self.key_columns().iter().any(|c| c.ty.key_may_be_spelled_apart())
    }

    pub fn column_names(&self) -> Vec<String> {
        self.columns.iter().map(|c| c.name.clone()).collect()
    }
}

/// What the server's catalog says about one table.
#[derive(Clone, Debug)]
pub struct CatalogTable {
    pub name: TableName,
    pub columns: Vec<CatalogColumn>,
    pub primary_key: Vec<String>,
    /// Tables this one references by foreign key.
    pub references: Vec<TableName>,
    /// The partitioned tables this one is a partition of, nearest first.
    pub ancestors: Vec<TableName>,
    /// Whether the table is partitioned itself.
    pub partitioned: bool,
    /// A DEFERRABLE unique, primary key or exclusion constraint, by name.
    pub deferrable_unique: Option<String>,
}

#[derive(Clone, Debug)]
pub struct CatalogColumn {
    pub name: String,
    /// `pg_type.typname` of the base type (domains resolved).
    pub typname: String,
    /// `format_type()` of the declared type.
    pub pg_type: String,
    pub nullable: bool,
    /// Generated columns cannot be written, so they are not synced.
    pub generated: bool,
    /// The default expression, as PostgreSQL prints it.
    pub default: Option<String>,
    /// `a` (GENERATED ALWAYS) or `d` (BY DEFAULT) for an identity column.
    pub identity: Option<char>,
    /// The sequence a serial or identity column takes its values from.
    pub sequence: Option<String>,
}

impl CatalogColumn {
    /// The server makes this column's values (a sequence or an identity):
    /// devices offline would pick the same ones.
    fn generated_by_server(&self) -> bool {
        self.identity.is_some() || self.default.as_deref().is_some_and(|d| d.starts_with("nextval("))
    }
}

/// Checks a setup against the catalog and builds the schema, ordering tables
/// so parents come before children.
pub fn build_schema(
    scope: &str,
    version: i64,
    setup: &ScopeSetup,
    mut lookup: impl FnMut(&TableName) -> Result<CatalogTable>,
) -> Result<Schema> {
    let mut tables = Vec::new();
    let mut parents: Vec<Vec<TableName>> = Vec::new();
    let names: Vec<TableName> = setup.tables.iter().map(|t| TableName::parse(&t.name)).collect::<Result<_>>()?;
    for (table, name) in setup.tables.iter().zip(&names) {
        let catalog = lookup(name)?;
        if catalog.primary_key.is_empty() {
            return Err(Error::NoPrimaryKey(name.to_string()));
        }
        if let Some(bad) = catalog.primary_key.iter().find(|k| k.starts_with(RESERVED_PREFIX)) {
            return Err(Error::InvalidSetup(format!(
                "primary key column \"{bad}\" of {name} starts with \"{RESERVED_PREFIX}\", which Tandem reserves for its tracking columns"
            )));
        }
        if let Some(ancestor) = catalog.ancestors.last() {
            return Err(Error::InvalidSetup(format!(
                "{name} is a partition of {ancestor}: a write made through {ancestor} fires none of {name}'s statement triggers, \
                 so its changes would be missed. Sync {ancestor} instead (every partition's rows; a filter chooses which a device gets)"
            )));
        }
        let wanted = |c: &CatalogColumn| match &table.columns {
            None => !c.generated,
            Some(list) => list.contains(&c.name) || catalog.primary_key.contains(&c.name),
        };
        if let Some(list) = &table.columns {
            for col in list {
                match catalog.columns.iter().find(|c| &c.name == col) {
                    None => return Err(Error::InvalidSetup(format!("table {name} has no column \"{col}\""))),
                    Some(c) if c.generated => {
                        return Err(Error::InvalidSetup(format!(
                            "column \"{col}\" of {name} is generated and cannot be written by sync; leave it out"
                        )))
                    }
                    _ => {}
                }
            }
        }
        if table.direction.uploads() {
            check_writable(name, &catalog, &wanted)?;
        }
        let columns: Vec<Column> = catalog
            .columns
            .iter()
            .filter(|c| wanted(c))
            .map(|c| {
                let ty = LogicalType::from_pg_typname(&c.typname);
                let default = c.default.as_deref().and_then(|d| crate::types::sqlite_default(ty, d));
                Column {
                    name: c.name.clone(),
                    ty,
                    pg_type: c.pg_type.clone(),
                    nullable: c.nullable,
                    server_default: !c.nullable && default.is_none() && (c.default.is_some() || c.identity.is_some()),
                    fill: None,
                    since: None,
                    default,
                }
            })
            .collect();
        let synced = |col: &str| columns.iter().any(|c| c.name == col);
        let mut table_parents: Vec<TableName> = catalog.references.iter().filter(|r| *r != name && names.contains(r)).cloned().collect();
        match &table.filter {
            Some(Filter::Columns(map)) => {
                for col in map.keys() {
                    if !synced(col) {
                        return Err(Error::InvalidSetup(format!("filter column \"{col}\" of {name} is not a synced column of the table")));
                    }
                }
            }
            Some(Filter::Via { parent, on }) => {
                let parent_name = TableName::parse(parent)?;
                let Some(index) = names.iter().position(|n| *n == parent_name) else {
                    return Err(Error::InvalidSetup(format!("{name} is filtered via {parent_name}, which is not a table of this scope")));
                };
                if setup.tables[index].filter.is_none() {
                    return Err(Error::InvalidSetup(format!("{name} is filtered via {parent_name}, which has no filter itself")));
                }
                for col in on.keys() {
                    if !synced(col) {
                        return Err(Error::InvalidSetup(format!(
                            "column \"{col}\" in the \"via\" filter of {name} is not a synced column of the table"
                        )));
                    }
                }
                let parent_catalog = lookup(&parent_name)?;
                let mut parent_cols: Vec<&String> = on.values().collect();
                let mut parent_key: Vec<&String> = parent_catalog.primary_key.iter().collect();
                parent_cols.sort();
                parent_key.sort();
                if parent_cols != parent_key {
                    return Err(Error::InvalidSetup(format!(
                        "the \"via\" filter of {name} must map onto the primary key of {parent_name} ({})",
                        parent_catalog.primary_key.join(", ")
                    )));
                }
                if !table_parents.contains(&parent_name) {
                    table_parents.push(parent_name);
                }
            }
            None => {}
        }
        parents.push(table_parents);
        tables.push(TableSchema {
            name: name.to_string(),
            columns,
            primary_key: catalog.primary_key.clone(),
            filter: table.filter.as_ref().map(canonical_filter).transpose()?,
            direction: table.direction,
            policy: table.policy.clone().or_else(|| setup.policy.clone()).filter(|p| p != "server_wins"),
            partitioned: catalog.partitioned,
            refiltered: None,
            renamed_from: Vec::new(),
            added: None,
        });
    }
    check_via_cycles(&tables)?;
    let order = parents_first(&names, &parents);
    let tables = order.into_iter().map(|i| tables[i].clone()).collect();
    let schema = Schema { scope: scope.to_string(), version, tables, former_names: Vec::new(), operators: Default::default() };
    check_local_names(&schema)?;
    Ok(schema)
}

/// Refuses names a SQLite file cannot hold apart: it ignores (ASCII) case
/// and has no schemas (`sales.items` is one identifier there), `tandem_`
/// names are Tandem's and `sqlite_` names SQLite's. Both sides check, the
/// server when a scope is provisioned.
pub fn check_local_names(schema: &Schema) -> Result<()> {
    let mut seen: Vec<(String, &str)> = Vec::new();
    for table in &schema.tables {
        let local = table.table_name().local_name();
        let folded = local.to_ascii_lowercase();
        if let Some((_, other)) = seen.iter().find(|(name, _)| *name == folded) {
            return Err(Error::InvalidSetup(format!(
                "tables {other} and {} have the same name in a SQLite file (\"{local}\": SQLite ignores case and has no schemas): \
                 rename one, or sync them in different scopes, into different files",
                table.name
            )));
        }
        for reserved in ["tandem_", "sqlite_"] {
            if folded.starts_with(reserved) {
                return Err(Error::InvalidSetup(format!(
                    "table {} would be \"{local}\" in a SQLite file, where names starting with {reserved} are reserved \
                     (tandem_ for Tandem, sqlite_ for SQLite): rename it, or move it to another schema",
                    table.name
                )));
            }
        }
        seen.push((folded, table.name.as_str()));
        let mut columns: Vec<&str> = Vec::new();
        for column in &table.columns {
            if let Some(other) = columns.iter().find(|c| c.eq_ignore_ascii_case(&column.name)) {
                return Err(Error::InvalidSetup(format!(
                    "columns \"{other}\" and \"{}\" of {} have the same name in SQLite, which ignores case: \
                     leave one out with \"columns\"",
                    column.name, table.name
                )));
            }
            columns.push(&column.name);
        }
        if let Some(bad) = table.primary_key.iter().find(|k| k.to_ascii_lowercase().starts_with(RESERVED_PREFIX)) {
            return Err(Error::InvalidSetup(format!(
                "primary key column \"{bad}\" of {} starts with \"{RESERVED_PREFIX}\", which Tandem reserves for its tracking columns",
                table.name
            )));
        }
    }
    Ok(())
}

/// Refuses, for a table devices write, what no device write could store:
/// keys the server generates (two devices offline would pick the same),
/// columns only the server may write, and NOT NULL columns left out with
/// no default.
fn check_writable(name: &TableName, catalog: &CatalogTable, wanted: &dyn Fn(&CatalogColumn) -> bool) -> Result<()> {
    let take_it_or = "or make the table download_only";
    if let Some(constraint) = &catalog.deferrable_unique {
        return Err(Error::InvalidSetup(format!(
            "{name} has a DEFERRABLE unique constraint ({constraint}): PostgreSQL cannot insert a device's row against it \
             without failing the whole upload. Make it NOT DEFERRABLE, {take_it_or}"
        )));
    }
    for column in &catalog.columns {
        let key = catalog.primary_key.contains(&column.name);
        if key && column.generated_by_server() {
            return Err(Error::InvalidSetup(format!(
                "the primary key of {name} is generated by the server ({}): two devices offline would pick the same ids. \
                 Use a key devices can make (uuid DEFAULT gen_random_uuid()), {take_it_or}",
                column.name
            )));
        }
        if wanted(column) && column.identity == Some('a') {
            return Err(Error::InvalidSetup(format!(
                "column \"{}\" of {name} is GENERATED ALWAYS AS IDENTITY: devices cannot write it. Leave it out with \"columns\", {take_it_or}",
                column.name
            )));
        }
        if !wanted(column) && !column.nullable && column.default.is_none() && !column.generated {
            return Err(Error::InvalidSetup(format!(
                "column \"{}\" of {name} is NOT NULL and has no default, but \"columns\" leaves it out: no device insert could be stored. \
                 Sync it, give it a default, {take_it_or}",
                column.name
            )));
        }
    }
    Ok(())
}

fn canonical_filter(filter: &Filter) -> Result<Filter> {
    Ok(match filter {
        Filter::Via { parent, on } => Filter::Via { parent: TableName::parse(parent)?.to_string(), on: on.clone() },
        other => other.clone(),
    })
}

fn check_via_cycles(tables: &[TableSchema]) -> Result<()> {
    for table in tables {
        let mut seen = vec![table.name.clone()];
        let mut current = table;
        while let Some(Filter::Via { parent, .. }) = &current.filter {
            if seen.contains(parent) {
                return Err(Error::InvalidSetup(format!("\"via\" filters form a cycle through {parent}")));
            }
            seen.push(parent.clone());
            match tables.iter().find(|t| &t.name == parent) {
                Some(next) => current = next,
                None => break,
            }
        }
    }
    Ok(())
}

/// Orders tables so each comes after the tables it references, keeping the
/// setup's order where foreign keys do not decide (cycles keep setup order).
pub fn parents_first(names: &[TableName], parents: &[Vec<TableName>]) -> Vec<usize> {
    let index: BTreeMap<&TableName, usize> = names.iter().enumerate().map(|(i, n)| (n, i)).collect();
    let mut placed = vec![false; names.len()];
    let mut order = Vec::with_capacity(names.len());
    fn visit(
        i: usize,
        parents: &[Vec<TableName>],
        index: &BTreeMap<&TableName, usize>,
        placed: &mut [bool],
        visiting: &mut Vec<usize>,
        order: &mut Vec<usize>,
    ) {
        if placed[i] || visiting.contains(&i) {
            return;
        }
        visiting.push(i);
        for parent in &parents[i] {
            if let Some(&p) = index.get(parent) {
                visit(p, parents, index, placed, visiting, order);
            }
        }
        visiting.pop();
        placed[i] = true;
        order.push(i);
    }
    for i in 0..names.len() {
        visit(i, parents, &index, &mut placed, &mut Vec::new(), &mut order);
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn col(name: &str, typname: &str) -> CatalogColumn {
        CatalogColumn {
            name: name.into(),
            typname: typname.into(),
            pg_type: typname.into(),
            nullable: true,
            generated: false,
            default: None,
            identity: None,
            sequence: None,
        }
    }

    fn catalog(name: &TableName) -> Result<CatalogTable> {
        let t = |cols: Vec<CatalogColumn>, pk: &[&str], refs: &[&str]| CatalogTable {
            name: name.clone(),
            columns: cols,
            primary_key: pk.iter().map(|s| s.to_string()).collect(),
            references: refs.iter().map(|r| TableName::parse(r).unwrap()).collect(),
            ancestors: Vec::new(),
            partitioned: false,
            deferrable_unique: None,
        };
        match name.name.as_str() {
            "orders" => {
                Ok(t(vec![col("id", "int8"), col("tenant_id", "int4"), col("total", "numeric"), col("note", "text")], &["id"], &[]))
            }
            "order_items" => {
                Ok(t(vec![col("order_id", "int8"), col("line", "int4"), col("sku", "text")], &["order_id", "line"], &["orders"]))
            }
            "nokey" => Ok(t(vec![col("a", "int4")], &[], &[])),
            _ => Err(Error::MissingTable(name.to_string())),
        }
    }

    fn build(setup: serde_json::Value) -> Result<Schema> {
        build_schema("crm", 1, &ScopeSetup::parse("crm", &setup)?, catalog)
    }

    #[test]
    fn orders_parents_first_and_keeps_chosen_columns() {
        let schema = build(json!({"tables": [
            {"name": "order_items", "filter": {"via": "orders", "on": {"order_id": "id"}}},
            {"name": "orders", "columns": ["tenant_id", "total"], "filter": {"tenant_id": "tenant"}}]}))
        .unwrap();
        let names: Vec<&str> = schema.tables.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["public.orders", "public.order_items"]);
        assert_eq!(schema.tables[0].column_names(), ["id", "tenant_id", "total"]);
        assert_eq!(schema.tables[0].columns[2].ty, LogicalType::Numeric);
        assert_eq!(
            schema.tables[1].filter,
            Some(Filter::Via { parent: "public.orders".into(), on: [("order_id".into(), "id".into())].into() })
        );
        assert_eq!(schema.table("orders").unwrap().name, "public.orders");
        assert!(matches!(schema.table("nope"), Err(Error::UnknownTable { .. })));
    }

    #[test]
    fn refuses_what_cannot_be_synced() {
        let cases = [
            (json!({"tables": [{"name": "nokey"}]}), "has no primary key"),
            (json!({"tables": [{"name": "missing"}]}), "does not exist"),
            (json!({"tables": [{"name": "orders", "columns": ["nope"]}]}), "no column \"nope\""),
            (json!({"tables": [{"name": "orders", "columns": ["total"], "filter": {"tenant_id": "t"}}]}), "not a synced column"),
            (
                json!({"tables": [{"name": "order_items", "filter": {"via": "orders", "on": {"order_id": "id"}}}]}),
                "not a table of this scope",
            ),
            (
                json!({"tables": [{"name": "orders"}, {"name": "order_items", "filter": {"via": "orders", "on": {"order_id": "id"}}}]}),
                "has no filter",
            ),
            (
                json!({"tables": [{"name": "orders", "filter": {"tenant_id": "t"}}, {"name": "order_items", "filter": {"via": "orders", "on": {"line": "tenant_id"}}}]}),
                "primary key",
            ),
        ];
        for (setup, needle) in cases {
            let err = build(setup.clone()).unwrap_err().to_string();
            assert!(err.contains(needle), "{setup}: {err}");
        }
    }
}
