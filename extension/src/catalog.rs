//! Reads what the PostgreSQL catalog says about a table: columns with their
//! types, primary key, and the tables it references.

use tandem_core::ident::{quote_ident, TableName};
use tandem_core::schema::{CatalogColumn, CatalogTable};
use tandem_core::sql::apply::StageType;
use tandem_core::sql::Scope;
use tandem_core::{Error, Result};

use crate::guc;
use crate::spi::{self, Spi};

/// Looks up `name`. Types are formatted with only `pg_catalog` on the
/// search path, so user types come out schema-qualified and casts to them
/// work whatever the caller's search path is.
pub fn read_table(spi: &mut Spi<'_>, name: &TableName) -> Result<CatalogTable> {
    let found = spi::query(
        spi,
        "SELECT c.oid::int8, c.relkind::text FROM pg_catalog.pg_class c \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2",
        &[name.schema.as_str().into(), name.name.as_str().into()],
        |row| Ok((spi::required::<i64>(row, 1)?, spi::required_text(row, 2)?)),
    )?;
    let Some((oid, kind)) = found.into_iter().next() else {
        return Err(Error::MissingTable(name.to_string()));
    };
    if kind != "r" && kind != "p" {
        return Err(Error::InvalidSetup(format!("{name} is not a table (views and other relations cannot be synced)")));
    }
    refuse_inheritance(spi, name, oid, &kind)?;
    // Defaults print with only pg_catalog on the path too: a user's
    // function in one comes out schema-qualified.
    let columns = guc::with_local("search_path", "pg_catalog", || {
        spi::query(
            spi,
            "SELECT a.attname::text, \
                CASE WHEN t.typtype = 'd' THEN bt.typname ELSE t.typname END::text, \
                format_type(a.atttypid, a.atttypmod), NOT a.attnotnull, a.attgenerated <> '', \
                pg_get_expr(d.adbin, d.adrelid), a.attidentity::text, \
                pg_get_serial_sequence(a.attrelid::regclass::text, a.attname::text) \
         FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid = a.atttypid \
         LEFT JOIN pg_catalog.pg_type bt ON bt.oid = t.typbasetype \
         LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
         WHERE a.attrelid = $1::int8::oid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            &[oid.into()],
            |row| {
                Ok(CatalogColumn {
                    name: spi::required_text(row, 1)?,
                    typname: spi::required_text(row, 2)?,
                    pg_type: spi::required_text(row, 3)?,
                    nullable: spi::get::<bool>(row, 4)?.unwrap_or(true),
                    generated: spi::get::<bool>(row, 5)?.unwrap_or(false),
                    default: spi::text(row, 6)?,
                    identity: spi::text(row, 7)?.and_then(|i| i.chars().next()),
                    sequence: spi::text(row, 8)?,
                })
            },
        )
    })?;
    let primary_key = spi::query(
        spi,
        "SELECT a.attname::text FROM pg_catalog.pg_index i \
         CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord) \
         JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
         WHERE i.indrelid = $1::int8::oid AND i.indisprimary ORDER BY k.ord",
        &[oid.into()],
        |row| spi::required_text(row, 1),
    )?;
    // Foreign keys declared on the table or on any of its partitions, to
    // the table (or the partitioned table) they reference.
    refuse_array_key(spi, name, oid)?;
    let references = spi::query(
        spi,
        "SELECT DISTINCT n.nspname::text, c.relname::text FROM pg_catalog.pg_constraint k \
         JOIN pg_catalog.pg_class c ON c.oid = coalesce(pg_catalog.pg_partition_root(k.confrelid), k.confrelid) \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE k.contype = 'f' AND (k.conrelid = $1::int8::oid \
               OR k.conrelid IN (SELECT relid FROM pg_catalog.pg_partition_tree($1::int8::oid)))",
        &[oid.into()],
        |row| Ok(TableName::new(spi::required_text(row, 1)?, spi::required_text(row, 2)?)),
    )?;
    let ancestors = spi::query(
        spi,
        "SELECT n.nspname::text, c.relname::text FROM pg_catalog.pg_partition_ancestors($1::int8::oid) a \
         JOIN pg_catalog.pg_class c ON c.oid = a.relid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE a.relid <> $1::int8::oid",
        &[oid.into()],
        |row| Ok(TableName::new(spi::required_text(row, 1)?, spi::required_text(row, 2)?)),
    )?;
    let deferrable_unique = spi::one::<String>(
        spi,
        "SELECT conname::text FROM pg_catalog.pg_constraint WHERE conrelid = $1::int8::oid AND contype IN ('p', 'u', 'x') \
         AND condeferrable ORDER BY conname LIMIT 1",
        &[oid.into()],
    )?;
    Ok(CatalogTable { name: name.clone(), columns, primary_key, references, ancestors, partitioned: kind == "p", deferrable_unique })
}

/// Refuses a table in an inheritance tree (`INHERITS`; partitions are
/// another matter): a write to a child fires only the child's triggers,
/// while the parent's rows include the child's, and a write through the
/// parent fires none of the child's.
fn refuse_inheritance(spi: &mut Spi<'_>, name: &TableName, oid: i64, kind: &str) -> Result<()> {
    let found = spi::query(
        spi,
        "SELECT EXISTS (SELECT FROM pg_catalog.pg_inherits i WHERE i.inhparent = $1::int8::oid), \
                (SELECT format('%I.%I', n.nspname, p.relname) FROM pg_catalog.pg_inherits i \
                 JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid JOIN pg_catalog.pg_class p ON p.oid = i.inhparent \
                 JOIN pg_catalog.pg_namespace n ON n.oid = p.relnamespace \
                 WHERE i.inhrelid = $1::int8::oid AND NOT c.relispartition ORDER BY i.inhseqno LIMIT 1)",
        &[oid.into()],
        |row| Ok((spi::get::<bool>(row, 1)?.unwrap_or(false), spi::text(row, 2)?)),
    )?;
    let Some((has_children, parent)) = found.into_iter().next() else { return Ok(()) };
    if kind == "r" && has_children {
        return Err(Error::InvalidSetup(format!(
            "{name} has tables that inherit from it (INHERITS): its rows include theirs, and a write to one of them \
             fires only its own triggers, so Tandem cannot track {name}; make it a partitioned table, or sync each \
             table on its own with no inheritance between them"
        )));
    }
    if let Some(parent) = parent {
        return Err(Error::InvalidSetup(format!(
            "{name} inherits from {parent} (INHERITS): a write through {parent} fires none of {name}'s triggers, so \
             Tandem cannot track {name}; make {parent} a partitioned table, or sync tables with no inheritance \
             between them"
        )));
    }
    Ok(())
}

/// Refuses an array in the primary key: a statement's keys are logged as
/// one array per key column, which cannot hold arrays of different
/// lengths.
fn refuse_array_key(spi: &mut Spi<'_>, name: &TableName, oid: i64) -> Result<()> {
    let array = spi::one::<String>(
        spi,
        "SELECT format('%I (%s)', a.attname, format_type(a.atttypid, a.atttypmod)) FROM pg_catalog.pg_index i \
         CROSS JOIN LATERAL unnest(i.indkey::int2[]) AS k(attnum) \
         JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
         JOIN pg_catalog.pg_type t ON t.oid = a.atttypid LEFT JOIN pg_catalog.pg_type bt ON bt.oid = t.typbasetype \
         WHERE i.indrelid = $1::int8::oid AND i.indisprimary AND (t.typcategory = 'A' OR bt.typcategory = 'A') \
         ORDER BY k.attnum LIMIT 1",
        &[oid.into()],
    )?;
    match array {
        Some(column) => Err(Error::InvalidSetup(format!(
            "primary key column {column} of {name} is an array, which Tandem cannot track as a key; key the table \
             by a scalar column (a uuid, or a text made from the array)"
        ))),
        None => Ok(()),
    }
}

/// The scope's tables (positions in `scope`), parents before children by
/// every foreign key the server has now, declared on a table or on any of
/// its partitions: a key added since provisioning orders an apply too.
pub fn parents_first(spi: &mut Spi<'_>, scope: &Scope<'_>) -> Result<Vec<usize>> {
    let names: Vec<TableName> = scope.schema.tables.iter().map(|t| t.table_name()).collect();
    let quoted: Vec<String> = names.iter().map(TableName::quoted).collect();
    let pairs = spi::query(
        spi,
        "WITH scope AS (SELECT t.i, to_regclass(t.name) AS rel FROM unnest($1::text[]) WITH ORDINALITY AS t(name, i)), \
              refs AS (SELECT DISTINCT coalesce(pg_catalog.pg_partition_root(k.conrelid), k.conrelid) AS child, \
                              coalesce(pg_catalog.pg_partition_root(k.confrelid), k.confrelid) AS parent \
                       FROM pg_catalog.pg_constraint k WHERE k.contype = 'f') \
         SELECT c.i::int8, p.i::int8 FROM refs r JOIN scope c ON c.rel = r.child JOIN scope p ON p.rel = r.parent \
         WHERE c.i <> p.i",
        &[quoted.into()],
        |row| Ok((spi::required::<i64>(row, 1)?, spi::required::<i64>(row, 2)?)),
    )?;
    let mut parents: Vec<Vec<TableName>> = vec![Vec::new(); names.len()];
    for (child, parent) in pairs {
        let (child, parent) = (child as usize - 1, parent as usize - 1);
        parents[child].push(names[parent].clone());
    }
    Ok(tandem_core::schema::parents_first(&names, &parents))
}

/// The foreign keys the server has now between the scope's tables (on a
/// table or any of its partitions) onto the parent's primary key, each
/// child's columns in the order of that key.
pub fn foreign_keys(spi: &mut Spi<'_>, scope: &Scope<'_>) -> Result<Vec<crate::apply::ForeignKey>> {
    let quoted: Vec<String> = scope.schema.tables.iter().map(|t| t.table_name().quoted()).collect();
    let found = spi::query(
        spi,
        "WITH scope AS (SELECT t.i, to_regclass(t.name) AS rel FROM unnest($1::text[]) WITH ORDINALITY AS t(name, i)) \
         SELECT DISTINCT c.i::int8, p.i::int8, k.confupdtype = 'c', \
                array(SELECT a.attname::text FROM unnest(k.conkey) WITH ORDINALITY u(n, o) \
                      JOIN pg_catalog.pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.n ORDER BY u.o), \
                array(SELECT a.attname::text FROM unnest(k.confkey) WITH ORDINALITY u(n, o) \
                      JOIN pg_catalog.pg_attribute a ON a.attrelid = k.confrelid AND a.attnum = u.n ORDER BY u.o) \
         FROM pg_catalog.pg_constraint k \
         JOIN scope c ON c.rel = coalesce(pg_catalog.pg_partition_root(k.conrelid), k.conrelid) \
         JOIN scope p ON p.rel = coalesce(pg_catalog.pg_partition_root(k.confrelid), k.confrelid) \
         WHERE k.contype = 'f'",
        &[quoted.into()],
        |row| {
            Ok((
                spi::required::<i64>(row, 1)?,
                spi::required::<i64>(row, 2)?,
                spi::required::<bool>(row, 3)?,
                spi::required::<Vec<String>>(row, 4)?,
                spi::required::<Vec<String>>(row, 5)?,
            ))
        },
    )?;
    let mut keys = Vec::new();
    for (child, parent, cascades_updates, child_columns, parent_columns) in found {
        let (child, parent) = (child as usize - 1, parent as usize - 1);
        let primary_key = &scope.table(parent).primary_key;
        let columns: Option<Vec<String>> =
            primary_key.iter().map(|k| parent_columns.iter().position(|c| c == k).and_then(|i| child_columns.get(i).cloned())).collect();
        match columns {
            Some(columns) if parent_columns.len() == primary_key.len() => {
                keys.push(crate::apply::ForeignKey { child, parent, columns, cascades_updates })
            }
            _ => {}
        }
    }
    Ok(keys)
}

/// The table's oid, for recording which relation a scope table is.
pub fn table_oid(spi: &mut Spi<'_>, name: &TableName) -> Result<i64> {
    spi::one::<i64>(spi, "SELECT to_regclass($1)::oid::int8", &[name.quoted().into()])?.ok_or_else(|| Error::MissingTable(name.to_string()))
}

/// How the server stores each of `columns` of `name` now (read at each
/// apply, so a type changed since provisioning is followed): the type a
/// value is read as, without typmod (`bpchar` kept whole: bare `character`
/// means `char(1)`), the stage's type, the domain and whether storing may
/// round or cut.
pub fn stage_types(spi: &mut Spi<'_>, name: &TableName, columns: &[&str]) -> Result<Vec<StageType>> {
    let found = guc::with_local("search_path", "pg_catalog", || {
        spi::query(
            spi,
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), \
                CASE WHEN b.typname = 'bpchar' THEN 'bpchar' WHEN b.typname = '_bpchar' THEN 'bpchar[]' \
                     ELSE format_type(b.oid, NULL) END, \
                CASE WHEN t.typtype = 'd' THEN format_type(t.typbasetype, t.typtypmod) \
                     ELSE format_type(a.atttypid, a.atttypmod) END, \
                CASE WHEN t.typtype = 'd' THEN format_type(a.atttypid, a.atttypmod) END, \
                a.atttypmod >= 0 OR (t.typtype = 'd' AND t.typtypmod >= 0), \
                CASE WHEN a.attidentity <> '' \
                     THEN format('nextval(%L::regclass)', pg_get_serial_sequence(a.attrelid::regclass::text, a.attname::text)) \
                     WHEN a.attnotnull OR pg_get_expr(d.adbin, d.adrelid) LIKE '%nextval(%' THEN pg_get_expr(d.adbin, d.adrelid) END, \
                a.attidentity <> '' OR coalesce(pg_get_expr(d.adbin, d.adrelid) LIKE '%nextval(%', false), \
                CASE WHEN a.attcollation <> b.typcollation THEN format('%I.%I', cn.nspname, co.collname) END \
         FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid = a.atttypid \
         JOIN pg_catalog.pg_type b ON b.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END \
         LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
         LEFT JOIN pg_catalog.pg_collation co ON co.oid = a.attcollation \
         LEFT JOIN pg_catalog.pg_namespace cn ON cn.oid = co.collnamespace \
         WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped",
            &[name.quoted().into()],
            |row| {
                let text = |n| -> Result<String> {
                    spi::text(row, n)?.ok_or_else(|| Error::Internal(format!("the catalog lacks a column type of {name}")))
                };
                Ok((
                    text(1)?,
                    StageType {
                        declared: text(2)?,
                        input: text(3)?,
                        stored: text(4)?,
                        domain: spi::text(row, 5)?,
                        rounds: spi::get::<bool>(row, 6)?.unwrap_or(false),
                        fills: spi::text(row, 7)?,
                        sequenced: spi::get::<bool>(row, 8)?.unwrap_or(false),
                        collation: spi::text(row, 9)?,
                    },
                ))
            },
        )
    })?;
    columns
        .iter()
        .map(|column| {
            found.iter().find(|(name, _)| name == column).map(|(_, ty)| ty.clone()).ok_or_else(|| {
                Error::InvalidSetup(format!(
                    "column \"{column}\" of {name} is gone from the server: provision the scope again (sync_provision)"
                ))
            })
        })
        .collect()
}

/// A resolver named by the policy: a function `(jsonb) -> jsonb`; returns
/// its quoted name.
pub fn find_resolver(spi: &mut Spi<'_>, name: &str) -> Result<String> {
    let found = spi::query(
        spi,
        "SELECT n.nspname::text, p.proname::text, p.prorettype = 'jsonb'::regtype \
         FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
         WHERE p.oid = to_regprocedure($1 || '(jsonb)')",
        &[name.into()],
        |row| Ok((spi::text(row, 1)?, spi::text(row, 2)?, spi::get::<bool>(row, 3)?)),
    )?;
    match found.into_iter().next() {
        None => Err(Error::Resolver { name: name.into(), reason: format!("no function {name}(jsonb) exists") }),
        Some((Some(schema), Some(function), Some(true))) => Ok(format!("{}.{}", quote_ident(&schema), quote_ident(&function))),
        Some(_) => Err(Error::Resolver { name: name.into(), reason: "must return jsonb".into() }),
    }
}
