//! The server's read of a client's partition for `sync_verify`: every row
//! the client's filter selects in the user table, with its tracking if it
//! has any, in primary key order, one batch at a time.
//!
//! It reads the user table itself, not tracking: a row written with
//! Tandem's triggers off (`session_replication_role = replica`, a restore
//! with `--disable-triggers`) is in the partition and never pulled, and a
//! verify must see it as the device's missing row.

use crate::ident::quote_ident;
use crate::sql::partition::{row_filter, FilterValues};
use crate::sql::pull::after_key;
use crate::sql::query::{Binds, Col, Columns, Decode, DecodeError, Fields, Query};
use crate::sql::tracking::{self, one_tracking_row};
use crate::sql::{column_list, keys_equal, Scope};

/// A row [`partition_rows`] read, as text in place.
#[derive(Clone, Copy, Debug)]
pub struct PartitionRow<'a> {
    /// The row's version; `None` for a row tracking never saw (or holds
    /// as deleted).
    pub version: Option<&'a str>,
    /// Settled as of the watermark: its last change is one the watermark
    /// sees, or this transaction's own (a verify that adopted it), or
    /// tracking never saw it. Otherwise the next pull's.
    pub settled: bool,
    /// Every synced column, in schema order.
    pub values: &'a [Option<&'a str>],
}

/// Reads [`partition_rows`]' rows.
pub struct PartitionRowDecoder {
    version: Col,
    settled: Col,
    first_value: Col,
    values: usize,
}

impl Decode for PartitionRowDecoder {
    type Row<'a> = PartitionRow<'a>;
    fn decode<'a>(&self, f: Fields<'a>) -> Result<PartitionRow<'a>, DecodeError> {
        Ok(PartitionRow { version: f.text(self.version), settled: f.bool(self.settled)?, values: f.slice(self.first_value, self.values) })
    }
}

/// Up to `limit` rows of table `t` in the client's partition, after
/// `position` (key texts) when resuming, judged against watermark `since`.
pub fn partition_rows(
    scope: &Scope<'_>,
    t: usize,
    since: &str,
    position: Option<&[String]>,
    limit: i64,
    values: &FilterValues,
) -> Query<PartitionRowDecoder> {
    let table = scope.table(t);
    let key = &table.primary_key;
    let mut binds = Binds::new();
    let since = binds.bind(since);
    let limit = binds.bind(limit);
    let mut columns = Columns::new();
    // A row tracking holds as deleted was written again with triggers off:
    // as untracked as one tracking never saw.
    let version = columns.push("version", "(CASE WHEN tr.tandem_deleted THEN NULL ELSE tr.tandem_version END)::text");
    // A change still in the log committed after the step folded it: the
    // row is read as it changed, tracking as before, and it is the next
    // pull's.
    let settled = columns.push(
        "settled",
        format!(
            "((tr.tandem_stamp IS NULL OR tr.tandem_deleted OR pg_visible_in_snapshot(tr.tandem_stamp, {since}::text::pg_snapshot) \
             OR tr.tandem_stamp IS NOT DISTINCT FROM pg_current_xact_id_if_assigned()) \
             AND lg.{} IS NULL)::text",
            quote_ident(&key[0])
        ),
    );
    let mut first_value = None;
    for (i, c) in table.columns.iter().enumerate() {
        let col = columns.push(&format!("v{i}"), format!("r.{}::text", quote_ident(&c.name)));
        first_value.get_or_insert(col);
    }
    let mut conditions = Vec::new();
    if let Some(position) = position {
        conditions.push(after_key(scope, t, "r", position, false, &mut binds));
    }
    // One tracking row per key (a key respelled under a collation leaves a
    // tombstone of its old text beside the live row).
    let tracking = one_tracking_row(scope, t, |alias| {
        let equal = keys_equal(scope, t, alias, "r");
        match position {
            // On tracking too, inside the join (a WHERE on it would drop
            // the untracked rows): else each batch's merge join reads
            // tracking from its start, and a walk costs the square of the
            // table.
            Some(position) => format!("{equal} AND {}", after_key(scope, t, alias, position, false, &mut binds)),
            None => equal,
        }
    });
    if let Some(filter) = row_filter(scope, t, "r", &mut binds, values) {
        conditions.push(filter);
    }
    let filter = if conditions.is_empty() { String::new() } else { format!(" WHERE {}", conditions.join(" AND ")) };
    let sql = format!(
        "WITH {} SELECT {} FROM {} r {tracking} LEFT JOIN (SELECT DISTINCT {} FROM tandem_entries) lg ON {}{filter} \
         ORDER BY {} LIMIT {limit}",
        tracking::log_entries(scope, t),
        columns.sql(),
        table.table_name().quoted(),
        column_list(None, key),
        keys_equal(scope, t, "lg", "r"),
        column_list(Some("r"), key),
    );
    let decoder =
        PartitionRowDecoder { version, settled, first_value: first_value.expect("a table has columns"), values: table.columns.len() };
    Query::new(sql, binds, &columns, decoder)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::partition::tests::crm;

    #[test]
    fn reads_the_user_table_with_tracking_beside_it() {
        let schema = crm();
        let ids = [1, 2, 3];
        let scope = Scope::new(&schema, &ids);
        let values: FilterValues = [("tenant".to_string(), vec!["1".to_string()])].into();
        let position = ["10".to_string()];
        let q = partition_rows(&scope, 0, "5:9:", Some(&position), 100, &values);
        assert!(q.sql.contains("FROM \"public\".\"orders\" r LEFT JOIN \"tandem\".\"track_1\" tr ON tr.\"id\" = r.\"id\""), "{}", q.sql);
        assert!(
            q.sql.contains(
                "(tr.tandem_stamp IS NULL OR tr.tandem_deleted OR pg_visible_in_snapshot(tr.tandem_stamp, $1::text::pg_snapshot) "
            ),
            "{}",
            q.sql
        );
        assert!(
            q.sql.contains(
                "ON tr.\"id\" = r.\"id\" AND (tr.\"id\") > ($3::text::bigint) \
                 LEFT JOIN (SELECT DISTINCT \"id\" FROM tandem_entries) lg ON lg.\"id\" = r.\"id\" WHERE (r.\"id\") > ($3::text::bigint)"
            ),
            "{}",
            q.sql
        );
        // A key the log still holds changed after the step's fold.
        assert!(q.sql.starts_with("WITH tandem_entries AS ("), "{}", q.sql);
        assert!(q.sql.contains("AND lg.\"id\" IS NULL)::text"), "{}", q.sql);
        assert!(q.sql.contains("r.\"tenant_id\" = ANY("), "{}", q.sql);
        assert!(q.sql.ends_with("ORDER BY r.\"id\" LIMIT $2"), "{}", q.sql);
        let row = q.decode(&[None, Some("true"), Some("10"), Some("1")]).unwrap();
        assert_eq!((row.version, row.settled, row.values.len()), (None, true, 2));
    }
}
