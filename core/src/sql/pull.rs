//! The server's change selection (PostgreSQL), one batch at a time.
//!
//! A pull reads the versions committed between two snapshots (its
//! [`Window`]), in the client's partition, and not written by the calling
//! replica itself. Rows come back ordered by primary key (incremental
//! pulls: by stamp, then key) so a batch can resume after the last row it
//! sent.

use crate::ident::quote_ident;
use crate::sql::partition::{part_match, row_filter, FilterValues};
use crate::sql::query::{table_probes, Binds, Col, Columns, Decode, DecodeError, Fields, Param, Query, TableIndex};
use crate::sql::{column_list, keys_equal, spelled_apart, spelling, tracking, Scope};

/// What every pull query binds: the snapshot the pull ends at, the one it
/// starts from (`None`: everything), the caller's own transaction if it has
/// one, the calling replica with the versions of its uploads whose answers
/// it recorded (rows those uploads left exactly as sent are not echoed
/// back), and the batch size.
#[derive(Clone, Copy, Debug)]
pub struct Window<'a> {
    pub until: &'a str,
    pub since: Option<&'a str>,
    pub own_xid: Option<&'a str>,
    pub replica: Option<&'a str>,
    pub echoes: &'a [String],
    pub limit: i64,
}

/// The window's placeholders, bound once per statement.
struct Bound {
    until: String,
    since: String,
    own: String,
    replica: String,
    echoes: String,
    limit: String,
}

impl Window<'_> {
    fn bind(&self, binds: &mut Binds) -> Bound {
        Bound {
            until: binds.bind(self.until),
            since: binds.bind(self.since.map(str::to_string)),
            own: binds.bind(self.own_xid.map(str::to_string)),
            replica: binds.bind(self.replica.map(str::to_string)),
            echoes: binds.bind(self.echoes.to_vec()),
            limit: binds.bind(self.limit),
        }
    }
}

/// Not an echo: the row (or exit) `alias` was not left exactly as sent by
/// an upload of the calling replica whose answer it recorded.
fn not_an_echo(alias: &str, version: &str, w: &Bound) -> String {
    format!("NOT coalesce({alias}.tandem_origin = {}::text AND {alias}.{version} = ANY({}::text[]::xid8[]), false)", w.replica, w.echoes)
}

/// The version window on a stamp column: after `since` (when given), up to
/// `until`, plus the caller's own uncommitted changes.
fn window(stamp: &str, incremental: bool, w: &Bound) -> String {
    let upper = format!("(pg_visible_in_snapshot({stamp}, {}::text::pg_snapshot) OR {stamp} = {}::text::xid8)", w.until, w.own);
    if incremental {
        format!(
            "{stamp} >= pg_snapshot_xmin({since}::text::pg_snapshot) \
             AND NOT pg_visible_in_snapshot({stamp}, {since}::text::pg_snapshot) AND {upper}",
            since = w.since
        )
    } else {
        upper
    }
}

/// `(a."k1", a."k2") > ($6::text::bigint, $7::text::text)`, optionally led
/// by the stamp (`(a.tandem_stamp, a."k1") > ($6::text::xid8, ...)`).
pub(crate) fn after_key(scope: &Scope<'_>, t: usize, alias: &str, position: &[String], with_stamp: bool, binds: &mut Binds) -> String {
    let keys = scope.table(t).key_columns();
    // Each column with its `=` and `>`: its type's own (`citext`'s), by
    // schema, which order as `ORDER BY` does whatever the search path.
    let mut columns: Vec<(String, String, [String; 2])> = keys
        .iter()
        .map(|c| {
            let operators = [scope.schema.operator(c, "="), scope.schema.operator(c, ">")];
            (format!("{alias}.{}", quote_ident(&c.name)), c.pg_type.clone(), operators)
        })
        .collect();
    if with_stamp {
        columns.insert(0, (format!("{alias}.tandem_stamp"), "xid8".into(), ["=".into(), ">".into()]));
    }
    let values: Vec<String> = columns
        .iter()
        .zip(position)
        .enumerate()
        .map(|(i, ((_, ty, _), value))| format!("{}::text::{ty}", position_value(binds, i, value)))
        .collect();
    if columns.iter().all(|(_, _, [_, greater])| greater == ">") {
        let names: Vec<&str> = columns.iter().map(|(name, _, _)| name.as_str()).collect();
        return format!("({}) > ({})", names.join(", "), values.join(", "));
    }
    // A row comparison takes one operator name for every column: spelled
    // out, column by column (an index serves a one-column key still).
    let mut alternatives = Vec::new();
    for (i, ((name, _, [_, greater]), value)) in columns.iter().zip(&values).enumerate() {
        let mut terms: Vec<String> =
            columns[..i].iter().zip(&values).map(|((name, _, [equal, _]), value)| format!("{name} {equal} {value}")).collect();
        terms.push(format!("{name} {greater} {value}"));
        alternatives.push(terms.join(" AND "));
    }
    match alternatives.len() {
        1 => alternatives.remove(0),
        _ => format!("(({}))", alternatives.join(") OR (")),
    }
}

/// The placeholder of the `i`-th value of a resumed query's position,
/// bound once however many conditions of the query compare with it. (The
/// name holds a space, which no filter parameter's may.)
fn position_value(binds: &mut Binds, i: usize, value: &str) -> String {
    binds.bind_named(&format!(" position {i}"), || Param::from(value))
}

/// [`after_key`] for rows ordered by key, then by the text of its
/// respellable columns: a page may end between two texts of one key.
fn after_spelled_key(scope: &Scope<'_>, t: usize, alias: &str, position: &[String], binds: &mut Binds) -> String {
    let table = scope.table(t);
    let respellable = table.respellable_key();
    let after = after_key(scope, t, alias, position, false, binds);
    if respellable.is_empty() {
        return after;
    }
    let keys = table.key_columns();
    let mut equal = Vec::new();
    let (mut mine, mut theirs) = (Vec::new(), Vec::new());
    for (i, (column, value)) in keys.iter().zip(position).enumerate() {
        let placeholder = position_value(binds, i, value);
        let equals = scope.schema.operator(column, "=");
        equal.push(format!("{alias}.{} {equals} {placeholder}::text::{}", quote_ident(&column.name), column.pg_type));
        if respellable.contains(&column.name) {
            mine.push(spelling(alias, &column.name));
            theirs.push(format!("({placeholder}::text COLLATE \"C\")"));
        }
    }
    format!("({after} OR ({} AND ROW({}) > ROW({})))", equal.join(" AND "), mine.join(", "), theirs.join(", "))
}

/// How many values a resumed query's position has: the key columns, led by
/// the stamp for incremental upserts.
pub fn position_len(scope: &Scope<'_>, t: usize, incremental_upserts: bool) -> usize {
    scope.table(t).primary_key.len() + usize::from(incremental_upserts)
}

/// A row [`upserts`] read, as text in place.
#[derive(Clone, Copy, Debug)]
pub struct PulledUpsert<'a> {
    pub version: &'a str,
    /// Inside the window (a full pull reads every row in key order and
    /// skips the few changed after it began).
    pub in_window: bool,
    /// Every synced column, in schema order.
    pub values: &'a [Option<&'a str>],
    /// The row's stamp (incremental pulls), where the next batch resumes.
    pub stamp: Option<&'a str>,
}

/// Reads [`upserts`]' rows.
pub struct UpsertRow {
    version: Col,
    in_window: Col,
    first_value: Col,
    values: usize,
    stamp: Option<Col>,
}

impl Decode for UpsertRow {
    type Row<'a> = PulledUpsert<'a>;
    fn decode<'a>(&self, f: Fields<'a>) -> Result<PulledUpsert<'a>, DecodeError> {
        Ok(PulledUpsert {
            version: f.required(self.version)?,
            in_window: f.bool(self.in_window)?,
            values: f.slice(self.first_value, self.values),
            stamp: match self.stamp {
                Some(col) => Some(f.required(col)?),
                None => None,
            },
        })
    }
}

/// Rows of table `t` changed in the window and in the client's partition,
/// after `position` when the pull resumes.
///
/// A full pull walks the primary key and holds the whole partition; an
/// incremental pull walks the `(tandem_stamp, key)` index from
/// where it stopped. Either way each batch costs what it returns, not what
/// came before it.
///
/// `through_log`: another call is folding the table's log, so its tracking
/// is read with the log laid over it ([`tracking::folded_track`]) instead
/// of waiting for that call to commit.
pub fn upserts(
    scope: &Scope<'_>,
    t: usize,
    w: &Window<'_>,
    position: Option<&[String]>,
    values: &FilterValues,
    through_log: bool,
) -> Query<UpsertRow> {
    let table = scope.table(t);
    let key = &table.primary_key;
    let incremental = w.since.is_some();
    let mut binds = Binds::new();
    let bound = w.bind(&mut binds);
    let mut conditions = vec!["NOT tr.tandem_deleted".to_string()];
    let mut columns = Columns::new();
    let version = columns.push("version", "tr.tandem_version::text");
    let in_window = if incremental {
        // A first pull holds the whole partition, echoes included: a new
        // file of a client that synced before has none of its rows.
        conditions.push(not_an_echo("tr", "tandem_version", &bound));
        conditions.push(window("tr.tandem_stamp", true, &bound));
        columns.push("in_window", "'true'::text")
    } else {
        columns.push("in_window", format!("coalesce({}, false)::text", window("tr.tandem_stamp", false, &bound)))
    };
    let mut first_value = None;
    for (i, c) in table.columns.iter().enumerate() {
        let col = columns.push(&format!("v{i}"), format!("r.{}::text", quote_ident(&c.name)));
        first_value.get_or_insert(col);
    }
    // Only an incremental pull resumes by stamp; a full pull walks the key.
    let stamp = incremental.then(|| columns.push("stamp", "tr.tandem_stamp::text"));
    if let Some(position) = position {
        conditions.push(after_key(scope, t, "tr", position, incremental, &mut binds));
        if !incremental {
            conditions.push(after_key(scope, t, "r", position, false, &mut binds));
        }
    }
    if let Some(filter) = row_filter(scope, t, "r", &mut binds, values) {
        conditions.push(filter);
    }
    let order = if incremental { format!("tr.tandem_stamp, {}", column_list(Some("tr"), key)) } else { column_list(Some("tr"), key) };
    let (with, track) = match through_log {
        true => (format!("WITH {} ", tracking::log_entries(scope, t)), tracking::folded_track(scope, t)),
        false => (String::new(), scope.track(t)),
    };
    let sql = format!(
        "{with}SELECT {} FROM {track} tr JOIN {} r ON {} WHERE {} ORDER BY {order} LIMIT {}",
        columns.sql(),
        table.table_name().quoted(),
        keys_equal(scope, t, "r", "tr"),
        conditions.join(" AND "),
        bound.limit,
    );
    let decoder =
        UpsertRow { version, in_window, first_value: first_value.expect("a table has columns"), values: table.columns.len(), stamp };
    Query::new(sql, binds, &columns, decoder)
}

/// A key [`deletes`] read, as text in place.
#[derive(Clone, Copy, Debug)]
pub struct PulledDelete<'a> {
    pub version: &'a str,
    /// The key columns, in primary key order.
    pub key: &'a [Option<&'a str>],
    /// The partition holds the key under another text (asked for only).
    pub respelled: bool,
}

/// Reads [`deletes`]' rows.
pub struct DeleteRow {
    version: Col,
    first_key: Col,
    keys: usize,
    respelled: Option<Col>,
}

impl Decode for DeleteRow {
    type Row<'a> = PulledDelete<'a>;
    fn decode<'a>(&self, f: Fields<'a>) -> Result<PulledDelete<'a>, DecodeError> {
        Ok(PulledDelete {
            version: f.required(self.version)?,
            key: f.slice(self.first_key, self.keys),
            respelled: match self.respelled {
                Some(col) => f.bool(col)?,
                None => false,
            },
        })
    }
}

/// Keys of table `t` that left the client's partition in the window (deleted,
/// or moved away) and are not in it now: the stamp of the exit, then the key
/// columns, then (`respellings`, for a key that may change its text) whether
/// the partition holds the key under another text. Only for incremental
/// pulls.
pub fn deletes(
    scope: &Scope<'_>,
    t: usize,
    w: &Window<'_>,
    position: Option<&[String]>,
    values: &FilterValues,
    respellings: bool,
) -> Query<DeleteRow> {
    let table = scope.table(t);
    let key = &table.primary_key;
    let mut binds = Binds::new();
    let bound = w.bind(&mut binds);
    let mut conditions = vec![window("e.tandem_stamp", true, &bound), not_an_echo("e", "tandem_stamp", &bound)];
    if let Some(position) = position {
        conditions.push(after_spelled_key(scope, t, "e", position, &mut binds));
    }
    if let Some(matches) = part_match(scope, t, "e.tandem_part", &mut binds, values) {
        conditions.push(matches);
    }
    // A key the table holds again in another text (`1.50` for `1.5`) is
    // still a delete of the old text, which a device holds as another key.
    let respellable = table.respellable_key();
    let mut still_here = keys_equal(scope, t, "r", "e");
    if let Some(apart) = spelled_apart("r", "e", &respellable) {
        still_here += &format!(" AND NOT {apart}");
    }
    if let Some(filter) = row_filter(scope, t, "r", &mut binds, values) {
        still_here += &format!(" AND {filter}");
    }
    conditions.push(format!("NOT EXISTS (SELECT 1 FROM {} r WHERE {still_here})", table.table_name().quoted()));
    let mut columns = Columns::new();
    let version = columns.push("version", "max(e.tandem_stamp)::text");
    let mut first_key = None;
    for (i, k) in key.iter().enumerate() {
        let col = columns.push(&format!("k{i}"), format!("e.{}::text", quote_ident(k)));
        first_key.get_or_insert(col);
    }
    let respelled = (respellings && !respellable.is_empty()).then(|| {
        let mut held = keys_equal(scope, t, "h", "e");
        if let Some(filter) = row_filter(scope, t, "h", &mut binds, values) {
            held += &format!(" AND {filter}");
        }
        columns.push("respelled", format!("EXISTS (SELECT 1 FROM {} h WHERE {held})::text", table.table_name().quoted()))
    });
    // One delete per text of a key: a key may have left in two (`1.5`,
    // then `1.50`), each a row on some device.
    let mut groups = column_list(Some("e"), key);
    for column in &respellable {
        groups += &format!(", {}", spelling("e", column));
    }
    let sql = format!(
        "SELECT {} FROM {} e WHERE {} GROUP BY {groups} ORDER BY {groups} LIMIT {}",
        columns.sql(),
        scope.exits(t),
        conditions.join(" AND "),
        bound.limit,
    );
    let decoder = DeleteRow { version, first_key: first_key.expect("a table has a key"), keys: key.len(), respelled };
    Query::new(sql, binds, &columns, decoder)
}

/// Which of `tables` may have a tracked change or an exit in an
/// incremental window that starts at xid `since_xmin` (its snapshot's
/// xmin): the newest stamp of each, one step into each stamp index
/// whatever the xmin (the plan is kept: see `each_kept`), so a round on a
/// wide scope reads only the tables where something happened. The probe is coarser than
/// the window (a stamp at or after the xmin may still be one the window
/// saw, or come after its end), never finer: a table it leaves out has
/// nothing [`upserts`] or [`deletes`] would return.
pub fn changed_tables(scope: &Scope<'_>, tables: &[usize], since_xmin: u64) -> Query<TableIndex> {
    let mut binds = Binds::new();
    let xmin = binds.bind(since_xmin.to_string());
    let (sql, columns, decoder) = table_probes(tables, |t| {
        format!(
            "(SELECT max(tandem_stamp) FROM {}) >= {xmin}::text::xid8 \
             OR (SELECT max(tandem_stamp) FROM {}) >= {xmin}::text::xid8",
            scope.track(t),
            scope.exits(t),
        )
    });
    Query::new(sql, binds, &columns, decoder)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::partition::tests::crm;
    use crate::sql::query::Param;

    fn window(since: Option<&str>) -> Window<'_> {
        Window { until: "10:20:", since, own_xid: None, replica: Some("r1"), echoes: &[], limit: 100 }
    }

    #[test]
    fn full_pulls_read_everything_visible_in_the_snapshot() {
        let schema = crm();
        let ids = [1, 2, 3];
        let scope = Scope::new(&schema, &ids);
        let q = upserts(&scope, 2, &window(None), None, &FilterValues::new(), false);
        assert!(q.sql.starts_with("SELECT tr.tandem_version::text AS \"version\", coalesce((pg_visible_in_snapshot(tr.tandem_stamp, $1::text::pg_snapshot) OR tr.tandem_stamp = $3::text::xid8), false)::text AS \"in_window\", "), "{}", q.sql);
        assert!(!q.sql.contains("pg_snapshot_xmin($2"), "{}", q.sql);
        assert!(q.sql.ends_with("ORDER BY tr.\"code\" LIMIT $6"), "{}", q.sql);
        assert!(!q.sql.contains("tandem_origin"), "a full pull holds echoes too: {}", q.sql);
        assert!(!q.sql.contains("tr.tandem_stamp::text"), "a full pull resumes by key alone: {}", q.sql);
        let row = q.decode(&[Some("7"), Some("true"), Some("EUR")]).unwrap();
        assert_eq!((row.version, row.in_window, row.values, row.stamp), ("7", true, &[Some("EUR")][..], None));
    }

    #[test]
    fn incremental_pulls_use_the_stamp_range_and_resume_after_a_key() {
        let schema = crm();
        let ids = [1, 2, 3];
        let scope = Scope::new(&schema, &ids);
        let values: FilterValues = [("tenant".to_string(), vec!["1".to_string()])].into();
        let position = ["812".to_string(), "10".to_string(), "2".to_string()];
        let q = upserts(&scope, 1, &window(Some("5:9:")), Some(&position), &values, false);
        assert!(q.sql.contains("tr.tandem_stamp >= pg_snapshot_xmin($2::text::pg_snapshot)"), "{}", q.sql);
        assert!(
            q.sql.contains("NOT coalesce(tr.tandem_origin = $4::text AND tr.tandem_version = ANY($5::text[]::xid8[]), false)"),
            "{}",
            q.sql
        );
        assert!(
            q.sql.contains("(tr.tandem_stamp, tr.\"order_id\", tr.\"line\") > ($7::text::xid8, $8::text::bigint, $9::text::integer)"),
            "{}",
            q.sql
        );
        assert!(q.sql.contains("ANY($10::text[]::integer[])"), "{}", q.sql);
        assert!(q.sql.ends_with("ORDER BY tr.tandem_stamp, tr.\"order_id\", tr.\"line\" LIMIT $6"), "{}", q.sql);
        assert_eq!(q.params[6], Param::from("812"));
        assert_eq!(q.params[9], Param::from(vec!["1".to_string()]));
        let row = q.decode(&[Some("7"), Some("true"), Some("10"), Some("3"), Some("815")]).unwrap();
        assert_eq!(row.stamp, Some("815"));
    }

    #[test]
    fn a_pull_past_another_calls_fold_reads_tracking_with_the_log_laid_over_it() {
        let schema = crm();
        let ids = [1, 2, 3];
        let scope = Scope::new(&schema, &ids);
        let values: FilterValues = [("tenant".to_string(), vec!["1".to_string()])].into();
        let q = upserts(&scope, 1, &window(Some("5:9:")), None, &values, true);
        assert!(q.sql.starts_with("WITH tandem_entries AS (SELECT e.tandem_seq, e.tandem_stamp, e.tandem_kind, "), "{}", q.sql);
        assert!(q.sql.contains("FROM \"tandem\".\"log_2\" e CROSS JOIN LATERAL unnest("), "{}", q.sql);
        assert!(q.sql.contains("FROM \"tandem\".\"track_2\" t0 WHERE NOT EXISTS (SELECT 1 FROM tandem_entries x WHERE "), "{}", q.sql);
        assert!(q.sql.contains("UNION ALL"), "{}", q.sql);
        assert!(q.sql.contains(") tr JOIN \"public\".\"items\" r ON "), "{}", q.sql);
        assert_eq!(q.sql.matches("$").count(), upserts(&scope, 1, &window(Some("5:9:")), None, &values, false).sql.matches("$").count());
    }

    #[test]
    fn deletes_go_only_to_the_partition_the_row_left() {
        let schema = crm();
        let ids = [1, 2, 3];
        let scope = Scope::new(&schema, &ids);
        let values: FilterValues = [("tenant".to_string(), vec!["1".to_string()])].into();
        let q = deletes(&scope, 0, &window(Some("5:9:")), None, &values, false);
        assert!(q.sql.contains("(e.tandem_part->>'tenant')::integer = ANY($7::text[]::integer[])"), "{}", q.sql);
        assert!(q.sql.contains("NOT EXISTS (SELECT 1 FROM \"public\".\"orders\" r WHERE r.\"id\" = e.\"id\" AND r.\"tenant_id\" = ANY($7::text[]::integer[]))"), "{}", q.sql);
        assert_eq!(q.params.len(), 7, "the tenant is bound once");
        assert_eq!(q.decode(&[Some("9"), Some("10")]).unwrap().key, &[Some("10")]);
        assert!(!q.sql.contains("COLLATE"), "an integer key's text is its value: {}", q.sql);
        let asked = deletes(&scope, 0, &window(Some("5:9:")), None, &values, true);
        assert_eq!(asked.sql, q.sql, "nothing to mark where a key cannot change its text");
    }

    #[test]
    fn pages_resume_with_the_order_of_the_keys_type() {
        let mut schema = crm();
        schema.tables[1].columns[0].pg_type = "ext.citext".into();
        schema.operators.insert("ext.citext".into(), "ext".into());
        let ids = [1, 2, 3];
        let scope = Scope::new(&schema, &ids);
        let position = ["b1".to_string(), "3".to_string()];
        let after = after_key(&scope, 1, "r", &position, false, &mut Binds::new());
        assert_eq!(
            after,
            "((r.\"order_id\" OPERATOR(\"ext\".>) $1::text::ext.citext) OR (r.\"order_id\" OPERATOR(\"ext\".=) $1::text::ext.citext AND r.\"line\" > $2::text::integer))"
        );
        // One column keeps a form an index serves.
        schema.tables[1].primary_key = vec!["order_id".into()];
        let scope = Scope::new(&schema, &ids);
        assert_eq!(
            after_key(&scope, 1, "r", &position[..1], false, &mut Binds::new()),
            "r.\"order_id\" OPERATOR(\"ext\".>) $1::text::ext.citext"
        );
        // PostgreSQL's own types keep the row comparison.
        assert_eq!(
            after_key(&scope, 0, "r", &position, true, &mut Binds::new()),
            "(r.tandem_stamp, r.\"id\") > ($1::text::xid8, $2::text::bigint)"
        );
    }

    #[test]
    fn deletes_of_a_key_that_may_change_its_text_go_per_text_and_say_so_when_asked() {
        let mut schema = crm();
        schema.tables[2].columns[0].ty = crate::types::LogicalType::Text;
        let ids = [1, 2, 3];
        let scope = Scope::new(&schema, &ids);
        let plain = deletes(&scope, 2, &window(Some("5:9:")), Some(&["EUR".to_string()]), &FilterValues::new(), false);
        let spelled = "(e.\"code\"::text COLLATE \"C\")";
        assert!(
            plain.sql.contains(&format!(
                "r.\"code\" = e.\"code\" AND NOT ROW((r.\"code\"::text COLLATE \"C\")) IS DISTINCT FROM ROW({spelled})"
            )),
            "{}",
            plain.sql
        );
        assert!(plain.sql.contains(&format!("GROUP BY e.\"code\", {spelled} ORDER BY e.\"code\", {spelled}")), "{}", plain.sql);
        assert!(
            plain.sql.contains(&format!(
                "((e.\"code\") > ($7::text::text) OR (e.\"code\" = $7::text::text AND ROW({spelled}) > ROW(($7::text COLLATE \"C\")))"
            )),
            "{}",
            plain.sql
        );
        assert_eq!(plain.params.len(), 7, "the position is bound once");
        assert!(!plain.sql.contains("respelled"), "{}", plain.sql);
        assert!(!plain.decode(&[Some("9"), Some("eur")]).unwrap().respelled);
        let asked = deletes(&scope, 2, &window(Some("5:9:")), None, &FilterValues::new(), true);
        assert!(
            asked.sql.contains("EXISTS (SELECT 1 FROM \"public\".\"currencies\" h WHERE h.\"code\" = e.\"code\")::text AS \"respelled\""),
            "{}",
            asked.sql
        );
        assert!(asked.decode(&[Some("9"), Some("eur"), Some("true")]).unwrap().respelled);
    }
}
