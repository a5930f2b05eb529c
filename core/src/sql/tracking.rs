//! The server's change tracking (PostgreSQL): per scope table, a tracking
//! table keyed like the user table, an exit log, and statement-level triggers
//! with transition tables (one tracking write per statement, set-based).
//!
//! `tandem.track_<id>` holds, per primary key: `tandem_stamp` (the xid that
//! last made the row due for sending; pulls select on it, through an index),
//! `tandem_version` (the xid of the last real change; conflicts compare
//! against it), `tandem_deleted` (tombstone) and `tandem_origin` (the client
//! whose upload made the change, so it is not echoed back to it).
//! `tandem.exit_<id>` records each time a row left a partition (deleted, or
//! its filter values changed), with the partition it left, so deletes reach
//! exactly the clients that held the row.

use crate::ident::{quote_ident, quote_literal};
use crate::setup::Filter;
use crate::sql::partition::part_expr;
use crate::sql::{column_list, columns_equal, Scope, TRACKING_SCHEMA};

/// Trigger events Tandem tracks, with the names of their objects.
const EVENTS: [&str; 4] = ["insert", "update", "delete", "truncate"];

fn function_name(event: &str, id: i64) -> String {
    format!("{}.{}", quote_ident(TRACKING_SCHEMA), quote_ident(&format!("on_{event}_{id}")))
}

fn trigger_name(event: &str, id: i64) -> String {
    quote_ident(&format!("tandem_{id}_{event}"))
}

/// Creates the tracking and exit tables of a table new to the scope, and
/// stamps every existing row with the current transaction.
pub fn create_tracking(scope: &Scope<'_>, t: usize) -> Vec<String> {
    let table = scope.table(t);
    let key = &table.primary_key;
    let key_defs: Vec<String> = table
        .key_columns()
        .iter()
        .map(|c| format!("{} {} NOT NULL", quote_ident(&c.name), c.pg_type))
        .collect();
    let keys = column_list(None, key);
    vec![
        format!(
            "CREATE TABLE {} ({}, tandem_stamp xid8 NOT NULL, tandem_version xid8 NOT NULL, \
             tandem_deleted boolean NOT NULL DEFAULT false, tandem_origin text, PRIMARY KEY ({keys}))",
            scope.track(t),
            key_defs.join(", ")
        ),
        format!("CREATE INDEX ON {} (tandem_stamp, {keys})", scope.track(t)),
        format!(
            "CREATE TABLE {} ({}, tandem_part jsonb, tandem_stamp xid8 NOT NULL, tandem_origin text)",
            scope.exits(t),
            key_defs.join(", ")
        ),
        format!("CREATE INDEX ON {} (tandem_stamp)", scope.exits(t)),
        format!("CREATE INDEX ON {} ({keys}, tandem_stamp)", scope.exits(t)),
        format!(
            "INSERT INTO {} ({keys}, tandem_stamp, tandem_version) \
             SELECT {}, pg_current_xact_id(), pg_current_xact_id() FROM {} t",
            scope.track(t),
            column_list(Some("t"), key),
            table.table_name().quoted()
        ),
    ]
}

/// Makes every live row of a table due for sending again without changing
/// its version (used when provisioning adds columns clients must receive).
pub fn restamp(scope: &Scope<'_>, t: usize) -> String {
    format!("UPDATE {} SET tandem_stamp = pg_current_xact_id() WHERE NOT tandem_deleted", scope.track(t))
}

/// Drops a table's triggers (skip them when the table itself is gone).
pub fn drop_triggers(quoted_table: &str, id: i64) -> Vec<String> {
    EVENTS
        .iter()
        .map(|event| format!("DROP TRIGGER IF EXISTS {} ON {quoted_table}", trigger_name(event, id)))
        .collect()
}

/// Drops a table's trigger functions and tracking tables; the user table
/// and its rows stay.
pub fn drop_tracking(id: i64) -> Vec<String> {
    let mut out: Vec<String> =
        EVENTS.iter().map(|event| format!("DROP FUNCTION IF EXISTS {}()", function_name(event, id))).collect();
    out.push(format!(
        "DROP TABLE IF EXISTS {0}.{1}, {0}.{2}",
        quote_ident(TRACKING_SCHEMA),
        quote_ident(&format!("track_{id}")),
        quote_ident(&format!("exit_{id}"))
    ));
    out
}

/// Trigger functions and triggers of a table. Run on every provisioning: a
/// parent's update trigger changes when a `via` child joins the scope.
pub fn triggers(scope: &Scope<'_>, t: usize) -> Vec<String> {
    let table = scope.table(t);
    let user_table = table.table_name().quoted();
    let id = scope.id(t);
    let mut out = Vec::new();
    for event in EVENTS {
        let body = match event {
            "insert" => insert_body(scope, t),
            "update" => update_body(scope, t),
            "delete" => delete_body(scope, t),
            _ => truncate_body(scope, t),
        };
        // The update body counts rows and may switch join methods. Each
        // tracking statement runs once per user statement: compiling its
        // plan (JIT) would cost the user's write more than it saves.
        let update_vars = if event == "update" { "  _updated bigint;\n  _rows bigint;\n  _hashjoin text;\n  _mergejoin text;\n" } else { "" };
        out.push(format!(
            "CREATE OR REPLACE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER \
             SET search_path = pg_catalog, pg_temp SET jit = off AS $tandem$\n\
             DECLARE\n  _v xid8 := pg_current_xact_id();\n  \
             _origin text := nullif(current_setting('tandem.origin', true), '');\n{update_vars}\
             BEGIN\n{body}  RETURN NULL;\nEND\n$tandem$",
            function_name(event, id)
        ));
        let timing = match event {
            "insert" => "AFTER INSERT ON {t} REFERENCING NEW TABLE AS tandem_new",
            "update" => "AFTER UPDATE ON {t} REFERENCING OLD TABLE AS tandem_old NEW TABLE AS tandem_new",
            "delete" => "AFTER DELETE ON {t} REFERENCING OLD TABLE AS tandem_old",
            _ => "BEFORE TRUNCATE ON {t}",
        }
        .replace("{t}", &user_table);
        out.push(format!(
            "CREATE OR REPLACE TRIGGER {} {timing} FOR EACH STATEMENT EXECUTE FUNCTION {}()",
            trigger_name(event, id),
            function_name(event, id)
        ));
    }
    out
}

/// Upserts tracking entries for the keys of `source` rows.
fn mark(scope: &Scope<'_>, t: usize, source: &str, alias: &str, deleted: bool, filter: &str) -> String {
    let key = &scope.table(t).primary_key;
    format!(
        "  INSERT INTO {track} AS tr ({keys}, tandem_stamp, tandem_version, tandem_deleted, tandem_origin)\n    \
         SELECT {src_keys}, _v, _v, {deleted}, _origin FROM {source} {alias}{filter}\n    \
         ON CONFLICT ({keys}) DO UPDATE SET tandem_stamp = _v, tandem_version = _v, tandem_deleted = {deleted}, tandem_origin = _origin;\n",
        track = scope.track(t),
        keys = column_list(None, key),
        src_keys = column_list(Some(alias), key),
    )
}

/// Records that rows of `source` left their partition.
fn exit(scope: &Scope<'_>, t: usize, source: &str, alias: &str, filter: &str) -> String {
    let key = &scope.table(t).primary_key;
    format!(
        "  INSERT INTO {exits} ({keys}, tandem_part, tandem_stamp, tandem_origin)\n    \
         SELECT {src_keys}, {part}, _v, _origin FROM {source} {alias}{filter};\n",
        exits = scope.exits(t),
        keys = column_list(None, key),
        src_keys = column_list(Some(alias), key),
        part = part_expr(scope, t, alias, 0),
    )
}

/// New rows get tracking entries with a plain insert (the common case); a
/// key whose tombstone is still there (deleted, then inserted again) makes
/// that fail, and the entries are then upserted.
fn insert_body(scope: &Scope<'_>, t: usize) -> String {
    let key = &scope.table(t).primary_key;
    format!(
        "  BEGIN\n  INSERT INTO {track} ({keys}, tandem_stamp, tandem_version, tandem_deleted, tandem_origin)\n    \
         SELECT {src_keys}, _v, _v, false, _origin FROM tandem_new n;\n  \
         EXCEPTION WHEN unique_violation THEN\n{upsert}  END;\n",
        track = scope.track(t),
        keys = column_list(None, key),
        src_keys = column_list(Some("n"), key),
        upsert = mark(scope, t, "tandem_new", "n", false, ""),
    )
}

fn delete_body(scope: &Scope<'_>, t: usize) -> String {
    exit(scope, t, "tandem_old", "o", "") + &mark(scope, t, "tandem_old", "o", true, "")
}

fn truncate_body(scope: &Scope<'_>, t: usize) -> String {
    let user_table = scope.table(t).table_name().quoted();
    exit(scope, t, &user_table, "o", "") + &mark(scope, t, &user_table, "o", true, "")
}

fn update_body(scope: &Scope<'_>, t: usize) -> String {
    let table = scope.table(t);
    let key = &table.primary_key;
    let same_key = columns_equal("n", key, "o", key);
    let vanished = format!("\n    WHERE NOT EXISTS (SELECT 1 FROM tandem_new n WHERE {same_key})");
    // Keys that an UPDATE changed are deletes of the old key.
    let mut body = format!(
        "  IF EXISTS (SELECT 1 FROM tandem_old o{vanished}) THEN\n{}{}  END IF;\n",
        exit(scope, t, "tandem_old", "o", &vanished),
        mark(scope, t, "tandem_old", "o", true, &vanished),
    );
    // Rows whose filter values changed left their partition.
    if table.filter.is_some() {
        body += &exit(
            scope,
            t,
            "tandem_old",
            "o",
            &format!(
                " JOIN tandem_new n ON {same_key}\n    WHERE {} IS DISTINCT FROM {}",
                part_expr(scope, t, "n", 0),
                part_expr(scope, t, "o", 0)
            ),
        );
    }
    // Every row is tracked already (provisioning stamped them all), so an
    // update in place; rows tracking somehow lacks are upserted. The
    // transition table has no statistics, and the planner would rather hash
    // all of tracking than probe its key index per row: when the statement
    // changed a small part of the table, probing is made the only choice.
    let update = format!(
        "UPDATE {track} tr SET tandem_stamp = _v, tandem_version = _v, tandem_deleted = false, tandem_origin = _origin\n    \
         FROM tandem_new n WHERE {cond};\n",
        track = scope.track(t),
        cond = columns_equal("tr", key, "n", key),
    );
    body += &format!(
        "  _rows := (SELECT count(*) FROM tandem_new);\n  \
         IF _rows * 4 < (SELECT reltuples FROM pg_class WHERE oid = {track_literal}::regclass) THEN\n    \
         _hashjoin := current_setting('enable_hashjoin');\n    \
         _mergejoin := current_setting('enable_mergejoin');\n    \
         PERFORM set_config('enable_hashjoin', 'off', true), set_config('enable_mergejoin', 'off', true);\n    \
         {update}    \
         GET DIAGNOSTICS _updated = ROW_COUNT;\n    \
         PERFORM set_config('enable_hashjoin', _hashjoin, true), set_config('enable_mergejoin', _mergejoin, true);\n  \
         ELSE\n    {update}    GET DIAGNOSTICS _updated = ROW_COUNT;\n  END IF;\n  \
         IF _updated < _rows THEN\n{upsert}  END IF;\n",
        track_literal = quote_literal(&scope.track(t)),
        upsert = mark(scope, t, "tandem_new", "n", false, ""),
    );
    body += &follow_parents(scope, t);
    body
}

/// When rows of table `t` move to another partition, rows of tables filtered
/// `via` it (at any depth) move with them: they become due for sending, so
/// the new partition receives them. (The old partition removes them itself:
/// a client deletes the children of a parent row that leaves it.)
fn follow_parents(scope: &Scope<'_>, t: usize) -> String {
    if scope.table(t).filter.is_none() {
        return String::new();
    }
    let key = &scope.table(t).primary_key;
    let moved = format!(
        "SELECT {} FROM tandem_old o JOIN tandem_new n ON {} WHERE {} IS DISTINCT FROM {}",
        column_list(Some("o"), key),
        columns_equal("n", key, "o", key),
        part_expr(scope, t, "o", 0),
        part_expr(scope, t, "n", 0),
    );
    let mut out = String::new();
    for (child, path) in descendants(scope, t) {
        // path: child first, each with the `on` map to the next table up.
        let mut joins = String::new();
        let mut below = "m".to_string();
        for (depth, (index, on)) in path.iter().enumerate().rev() {
            let alias = format!("d{depth}");
            let table = scope.table(*index).table_name().quoted();
            let condition: Vec<String> = on
                .iter()
                .map(|(c, p)| format!("{alias}.{} = {below}.{}", quote_ident(c), quote_ident(p)))
                .collect();
            joins += &format!(" JOIN {table} {alias} ON {}", condition.join(" AND "));
            below = alias;
        }
        let child_key = &scope.table(child).primary_key;
        out += &format!(
            "  UPDATE {track} tr SET tandem_stamp = _v FROM ({moved}) m{joins}\n    WHERE {cond};\n",
            track = scope.track(child),
            cond = columns_equal("tr", child_key, "d0", child_key),
        );
    }
    out
}

type ViaPath = Vec<(usize, std::collections::BTreeMap<String, String>)>;

/// Tables filtered `via` table `t`, directly or through other tables, each
/// with its path up to `t`.
fn descendants(scope: &Scope<'_>, t: usize) -> Vec<(usize, ViaPath)> {
    let mut out = Vec::new();
    let parent_name = &scope.table(t).name;
    for (index, table) in scope.schema.tables.iter().enumerate() {
        if let Some(Filter::Via { parent, on }) = &table.filter {
            if parent == parent_name {
                out.push((index, vec![(index, on.clone())]));
                for (grandchild, mut path) in descendants(scope, index) {
                    path.push((index, on.clone()));
                    out.push((grandchild, path));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::partition::tests::crm;

    #[test]
    fn tracking_tables_mirror_the_primary_key() {
        let schema = crm();
        let ids = [7, 8, 9];
        let scope = Scope::new(&schema, &ids);
        let ddl = create_tracking(&scope, 1);
        assert!(ddl[0].starts_with(
            "CREATE TABLE \"tandem\".\"track_8\" (\"order_id\" bigint NOT NULL, \"line\" integer NOT NULL, tandem_stamp xid8"
        ), "{}", ddl[0]);
        assert!(ddl[5].contains("FROM \"public\".\"items\" t"), "{}", ddl[5]);
    }

    #[test]
    fn parents_move_their_children() {
        let schema = crm();
        let ids = [7, 8, 9];
        let scope = Scope::new(&schema, &ids);
        let update = triggers(&scope, 0).remove(2);
        assert!(update.contains("UPDATE \"tandem\".\"track_8\" tr SET tandem_stamp = _v"), "{update}");
        assert!(update.contains("JOIN \"public\".\"items\" d0 ON d0.\"order_id\" = m.\"id\""), "{update}");
        // an unfiltered table has no partition to leave: only vanished keys exit
        let currencies = triggers(&scope, 2).remove(2);
        assert!(!currencies.contains("IS NOT DISTINCT FROM"), "{currencies}");
        assert!(!currencies.contains("SET tandem_stamp = _v FROM (SELECT"), "no children to move: {currencies}");
        assert!(currencies.contains("UPDATE \"tandem\".\"track_9\" tr SET tandem_stamp = _v, tandem_version = _v"), "{currencies}");
    }

    #[test]
    fn every_event_has_a_function_and_a_trigger() {
        let schema = crm();
        let ids = [7, 8, 9];
        let scope = Scope::new(&schema, &ids);
        let statements = triggers(&scope, 2);
        assert_eq!(statements.len(), 8);
        assert!(statements[7].starts_with("CREATE OR REPLACE TRIGGER \"tandem_9_truncate\" BEFORE TRUNCATE ON \"public\".\"currencies\""));
        assert_eq!(drop_triggers("\"public\".\"currencies\"", 9).len(), 4);
        assert_eq!(drop_tracking(9).len(), 5);
    }
}
