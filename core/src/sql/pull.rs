//! The server's change selection (PostgreSQL), one batch at a time.
//!
//! Every query binds the same leading parameters:
//! `$1` the snapshot the pull ends at (`until`), `$2` the snapshot it starts
//! from (`since`, NULL for everything), `$3` the caller's own xid if it has
//! one, `$4` the client id (its own uploads are not echoed back), `$5` the
//! batch size. Then the key of the last row sent (one `text` per key column),
//! then the filter parameters (`text[]` each, in [`PullQuery::params`] order).
//!
//! Rows come back ordered by primary key so a batch can resume after the last
//! key it sent.

use crate::ident::quote_ident;
use crate::sql::partition::{part_match, row_filter, ParamSlots};
use crate::sql::{column_list, columns_equal, Scope};

/// Parameters every pull query binds first.
pub const FIXED_PARAMS: usize = 5;

#[derive(Clone, Debug, PartialEq)]
pub struct PullQuery {
    pub sql: String,
    /// Names of the filter parameters bound after the fixed and key
    /// parameters, in order.
    pub params: Vec<String>,
}

/// The version window on a stamp column: after `since` (when given), up to
/// `until`, plus the caller's own uncommitted changes.
fn window(stamp: &str, incremental: bool) -> String {
    let upper = format!("(pg_visible_in_snapshot({stamp}, $1::text::pg_snapshot) OR {stamp} = $3::text::xid8)");
    if incremental {
        format!(
            "{stamp} >= pg_snapshot_xmin($2::text::pg_snapshot) \
             AND NOT pg_visible_in_snapshot({stamp}, $2::text::pg_snapshot) AND {upper}"
        )
    } else {
        upper
    }
}

/// `(a."k1", a."k2") > ($6::text::bigint, $7::text::text)`, optionally led
/// by the stamp (`(a.tandem_stamp, a."k1") > ($6::text::xid8, $7::text::bigint)`).
fn after_key(scope: &Scope<'_>, t: usize, alias: &str, with_stamp: bool) -> String {
    let keys = scope.table(t).key_columns();
    let mut names: Vec<String> = keys.iter().map(|c| format!("{alias}.{}", quote_ident(&c.name))).collect();
    let mut types: Vec<String> = keys.iter().map(|c| c.pg_type.clone()).collect();
    if with_stamp {
        names.insert(0, format!("{alias}.tandem_stamp"));
        types.insert(0, "xid8".into());
    }
    let values: Vec<String> =
        types.iter().enumerate().map(|(i, ty)| format!("${}::text::{ty}", FIXED_PARAMS + 1 + i)).collect();
    format!("({}) > ({})", names.join(", "), values.join(", "))
}

/// Parameters a resumed query binds for its position: the key columns, led
/// by the stamp for incremental upserts.
pub fn position_params(scope: &Scope<'_>, t: usize, incremental_upserts: bool) -> usize {
    scope.table(t).primary_key.len() + usize::from(incremental_upserts)
}

/// Rows of table `t` changed in the window and in the client's partition.
/// Columns: `version`, whether the row is inside the window (a full pull
/// reads every row in key order and skips the few changed after it began),
/// every synced column as text, then (incremental pulls) `stamp`.
///
/// A full pull walks the primary key; an incremental pull walks the
/// `(tandem_stamp, key)` index from where it stopped. Either way each batch
/// costs what it returns, not what came before it.
pub fn upserts(scope: &Scope<'_>, t: usize, incremental: bool, resume: bool) -> PullQuery {
    let table = scope.table(t);
    let key = &table.primary_key;
    let position = if resume { position_params(scope, t, incremental) } else { 0 };
    let mut slots = ParamSlots::new(FIXED_PARAMS + position + 1);
    let columns: Vec<String> =
        table.columns.iter().map(|c| format!("r.{}::text", quote_ident(&c.name))).collect();
    let mut conditions = vec![
        "NOT tr.tandem_deleted".to_string(),
        "($4::text IS NULL OR tr.tandem_origin IS DISTINCT FROM $4::text)".to_string(),
    ];
    // As text, like every column: the pull reads its rows as text.
    let visible = if incremental {
        conditions.push(window("tr.tandem_stamp", true));
        "'true'::text".to_string()
    } else {
        format!("({})::text", window("tr.tandem_stamp", false))
    };
    if let Some(filter) = row_filter(scope, t, "r", &mut slots) {
        conditions.push(filter);
    }
    if resume {
        conditions.push(after_key(scope, t, "tr", incremental));
        if !incremental {
            conditions.push(after_key(scope, t, "r", false));
        }
    }
    // Only an incremental pull resumes by stamp; a full pull walks the key.
    let stamp = if incremental { ", tr.tandem_stamp::text" } else { "" };
    let order = if incremental {
        format!("tr.tandem_stamp, {}", column_list(Some("tr"), key))
    } else {
        column_list(Some("tr"), key)
    };
    PullQuery {
        sql: format!(
            "SELECT tr.tandem_version::text, {visible}, {}{stamp} FROM {} tr JOIN {} r ON {} WHERE {} ORDER BY {order} LIMIT $5",
            columns.join(", "),
            scope.track(t),
            table.table_name().quoted(),
            columns_equal("r", key, "tr", key),
            conditions.join(" AND "),
        ),
        params: slots.names().to_vec(),
    }
}

/// Keys of table `t` that left the client's partition in the window (deleted,
/// or moved away) and are not in it now: the stamp of the exit, then the key
/// columns as text. Only for incremental pulls.
pub fn deletes(scope: &Scope<'_>, t: usize, resume: bool) -> PullQuery {
    let table = scope.table(t);
    let key = &table.primary_key;
    let key_count = if resume { key.len() } else { 0 };
    let mut slots = ParamSlots::new(FIXED_PARAMS + key_count + 1);
    let mut conditions = vec![
        window("e.tandem_stamp", true),
        "($4::text IS NULL OR e.tandem_origin IS DISTINCT FROM $4::text)".to_string(),
    ];
    if let Some(matches) = part_match(scope, t, "e.tandem_part", &mut slots) {
        conditions.push(matches);
    }
    let still_here = match row_filter(scope, t, "r", &mut slots) {
        Some(filter) => format!("{} AND {filter}", columns_equal("r", key, "e", key)),
        None => columns_equal("r", key, "e", key),
    };
    conditions.push(format!("NOT EXISTS (SELECT 1 FROM {} r WHERE {still_here})", table.table_name().quoted()));
    if resume {
        conditions.push(after_key(scope, t, "e", false));
    }
    let keys_text: Vec<String> = key.iter().map(|k| format!("e.{}::text", quote_ident(k))).collect();
    PullQuery {
        sql: format!(
            "SELECT max(e.tandem_stamp)::text, {} FROM {} e WHERE {} GROUP BY {} ORDER BY {} LIMIT $5",
            keys_text.join(", "),
            scope.exits(t),
            conditions.join(" AND "),
            column_list(Some("e"), key),
            column_list(Some("e"), key),
        ),
        params: slots.names().to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::partition::tests::crm;

    #[test]
    fn full_pulls_read_everything_visible_in_the_snapshot() {
        let schema = crm();
        let ids = [1, 2, 3];
        let scope = Scope::new(&schema, &ids);
        let q = upserts(&scope, 2, false, false);
        assert_eq!(q.params, Vec::<String>::new());
        assert!(q.sql.starts_with("SELECT tr.tandem_version::text, ((pg_visible_in_snapshot(tr.tandem_stamp, $1::text::pg_snapshot) OR tr.tandem_stamp = $3::text::xid8))::text, "), "{}", q.sql);
        assert!(!q.sql.contains("$2"), "{}", q.sql);
        assert!(q.sql.ends_with("ORDER BY tr.\"code\" LIMIT $5"), "{}", q.sql);
        assert!(!q.sql.contains("tr.tandem_stamp::text"), "a full pull resumes by key alone: {}", q.sql);
    }

    #[test]
    fn incremental_pulls_use_the_stamp_range_and_resume_after_a_key() {
        let schema = crm();
        let ids = [1, 2, 3];
        let scope = Scope::new(&schema, &ids);
        let q = upserts(&scope, 1, true, true);
        assert!(q.sql.contains("tr.tandem_stamp >= pg_snapshot_xmin($2::text::pg_snapshot)"), "{}", q.sql);
        assert!(q.sql.contains("(tr.tandem_stamp, tr.\"order_id\", tr.\"line\") > ($6::text::xid8, $7::text::bigint, $8::text::integer)"), "{}", q.sql);
        assert!(q.sql.contains("ANY($9::text[]::integer[])"), "{}", q.sql);
        assert!(q.sql.ends_with("ORDER BY tr.tandem_stamp, tr.\"order_id\", tr.\"line\" LIMIT $5"), "{}", q.sql);
        assert_eq!(q.params, ["tenant"]);
    }

    #[test]
    fn deletes_go_only_to_the_partition_the_row_left() {
        let schema = crm();
        let ids = [1, 2, 3];
        let scope = Scope::new(&schema, &ids);
        let q = deletes(&scope, 0, false);
        assert!(q.sql.contains("(e.tandem_part->>'tenant')::integer = ANY($6::text[]::integer[])"), "{}", q.sql);
        assert!(q.sql.contains("NOT EXISTS (SELECT 1 FROM \"public\".\"orders\" r WHERE r.\"id\" = e.\"id\" AND r.\"tenant_id\" = ANY($6::text[]::integer[]))"), "{}", q.sql);
        assert_eq!(q.params, ["tenant"]);
    }
}
