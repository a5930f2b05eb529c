//! The server's change tracking (PostgreSQL): per scope table, a tracking
//! table keyed like the user table, a change log, an exit log, and
//! statement-level triggers with transition tables.
//!
//! `tandem.track_<id>` holds, per primary key: `tandem_stamp` (the xid that
//! last made the row due for sending; pulls select on it, through an index),
//! `tandem_version` (the xid of the last real change; conflicts compare
//! against it), `tandem_deleted` (tombstone) and `tandem_origin` (the
//! replica whose upload left the row exactly as it sent it, so it is not
//! echoed back to it). Only the apply sets the origin, after its writes and
//! their triggers have run (`extension/src/apply/`); the triggers never do,
//! and any later change clears it.
//!
//! The triggers do not update tracking: each appends one row per statement
//! to `tandem.log_<id>`, which has no index, holding the changed keys as
//! arrays; a user's write pays for that one insert instead of a second,
//! indexed update of every row it changed.
//! Every sync call first folds the log into tracking ([`fold`]), one call
//! at a time per table ([`lock_fold`]); apply reads tracking and the log
//! together ([`TrackedState`]), so a change committed between the fold and
//! the read is not missed, and a pull that finds the table being folded
//! reads it through the log ([`folded_track`]) instead of waiting.
//!
//! Entries of one key are folded in the order of `tandem_seq`, taken from a
//! sequence when the statement's trigger runs. Two writes of one row are
//! ordered by the row lock, so the later write commits later and has the
//! higher `tandem_seq`; the restamp of a child (its parent moved partition)
//! locks the child row first for the same reason. The entry with the
//! highest `tandem_seq` therefore belongs to the transaction that committed
//! last, and its xid is the right stamp.
//!
//! `tandem.exit_<id>` records each time a row left a partition (deleted, or
//! its filter values changed), with the partition it left, so deletes reach
//! exactly the clients that held the row.
//!
//! A partitioned table's statement triggers fire only for statements that
//! name it; a write made to a partition directly fires the partition's. So
//! every partition carries the same triggers ([`partition_triggers`]), kept
//! in step with the partition tree as partitions come and go
//! (`extension/src/partitions.rs`). PostgreSQL runs an update that moves a
//! row to another partition as a delete and an insert, without row-level
//! update triggers; the update trigger of a partitioned table therefore
//! finds changed keys itself, as old keys missing from the new rows.
//!
//! A key may also change its text and keep its value as `=` compares it
//! (numeric `1.5` to `1.50`, a citext's case). Tracking holds the one row;
//! a device, which compares keys as text, would hold both. The key trigger
//! fires for that too (on a partitioned table, for that alone), and the old
//! text's exit is sent as a delete since the table holds no row of that
//! text (`pull::deletes`).

use crate::ident::{quote_ident, quote_literal};
use crate::setup::Filter;
use crate::sql::partition::{lock_via_parents, part_expr, via_join};
use crate::sql::query::{table_probes, Binds, Flag, Query, TableIndex};
use crate::sql::{column_list, keys_equal, spelled_apart, Scope, TRACKING_SCHEMA};
use crate::types::LogicalType;

/// What a trigger of a tracked table tracks; each has a function and a
/// trigger named after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Event {
    Insert,
    Update,
    /// A row-level update of a key: its value (tables that are not
    /// partitioned) or only its text (see `key_changed`).
    Key,
    Delete,
    Truncate,
}

impl Event {
    const ALL: [Event; 5] = [Event::Insert, Event::Update, Event::Key, Event::Delete, Event::Truncate];

    /// The events whose statement triggers a partition carries as well (a
    /// partitioned table finds changed keys in its update trigger instead).
    const ON_PARTITIONS: [Event; 4] = [Event::Insert, Event::Update, Event::Delete, Event::Truncate];

    fn name(self) -> &'static str {
        match self {
            Event::Insert => "insert",
            Event::Update => "update",
            Event::Key => "key",
            Event::Delete => "delete",
            Event::Truncate => "truncate",
        }
    }
}

/// Where a tracking statement takes its log sequence number and version
/// from: a trigger's variables, the parameters of a statement the trigger
/// runs dynamically, or the statement itself (run outside a trigger).
#[derive(Clone, Copy)]
struct Stamp {
    seq: &'static str,
    version: &'static str,
}

const IN_TRIGGER: Stamp = Stamp { seq: "_seq", version: "_v" };
const DYNAMIC: Stamp = Stamp { seq: "$1", version: "$2" };
const DIRECT: Stamp = Stamp { seq: "nextval('tandem.log_seq')", version: "pg_current_xact_id()" };

/// Hands table `t`'s tracking to the scope's `owner`: its trigger
/// functions become the owner's (they run as their owner, so the users'
/// types and casts they meet run with the owner's rights, never the
/// extension's) and nobody else may execute them; the owner may use the
/// tracking tables, which a sync's statements join as the owner.
pub fn hand_over(scope: &Scope<'_>, t: usize, owner: &str) -> Vec<String> {
    let owner = quote_ident(owner);
    let mut out = vec![
        format!("GRANT USAGE ON SCHEMA {} TO {owner}", quote_ident(TRACKING_SCHEMA)),
        format!("GRANT USAGE ON SEQUENCE {LOG_SEQUENCE} TO {owner}"),
        // Its own: ANALYZE (autovacuum's too) runs a key type's functions
        // as the table's owner, which must not be the extension's.
        format!("ALTER TABLE {} OWNER TO {owner}", scope.track(t)),
        format!("ALTER TABLE {} OWNER TO {owner}", scope.log(t)),
        format!("ALTER TABLE {} OWNER TO {owner}", scope.exits(t)),
    ];
    for event in Event::ALL {
        let function = function_name(event, scope.id(t));
        out.push(format!("ALTER FUNCTION {function}() OWNER TO {owner}"));
        out.push(format!("REVOKE ALL ON FUNCTION {function}() FROM PUBLIC"));
    }
    out
}

/// The function of the trigger [`marker_trigger`] names: only the scope's
/// owner may attach it, so a trigger of that name with another function is
/// someone else's, not Tandem's.
pub fn marker_function(id: i64) -> String {
    function_name(Event::Insert, id)
}

fn function_name(event: Event, id: i64) -> String {
    format!("{}.{}", quote_ident(TRACKING_SCHEMA), quote_ident(&format!("on_{}_{id}", event.name())))
}

fn trigger_name(event: Event, id: i64) -> String {
    quote_ident(&unquoted_trigger_name(id, event.name()))
}

fn unquoted_trigger_name(id: i64, what: &str) -> String {
    format!("tandem_{id}_{what}")
}

/// The channel a commit that changed a scope's tables notifies, with the
/// scope's name as payload: whoever waits for the scope (a gateway's
/// `LISTEN`, a device's watch) pulls then instead of polling.
pub const NOTIFY_CHANNEL: &str = "tandem";

fn notify_trigger_name(id: i64) -> String {
    quote_ident(&unquoted_trigger_name(id, "notify"))
}

/// The statement trigger that notifies [`NOTIFY_CHANNEL`] after any write
/// to a relation of table `t` (PostgreSQL sends it at commit, once per
/// transaction and scope, whatever the number of statements or rows).
fn notify_trigger(scope: &Scope<'_>, t: usize, quoted_relation: &str) -> String {
    format!(
        "CREATE OR REPLACE TRIGGER {} AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {quoted_relation} \
         FOR EACH STATEMENT EXECUTE FUNCTION {}.notify_change({})",
        notify_trigger_name(scope.id(t)),
        quote_ident(TRACKING_SCHEMA),
        quote_literal(&scope.schema.scope)
    )
}

/// Creates the tracking and exit tables of a table new to the scope, and
/// stamps every existing row with the current transaction. The table is
/// locked against writers first (the lock its triggers take anyway), so no
/// write can commit between the stamping and the triggers.
pub fn create_tracking(scope: &Scope<'_>, t: usize) -> Vec<String> {
    let table = scope.table(t);
    let key = &table.primary_key;
    let key_defs = key_definitions(scope, t, "");
    let keys = column_list(None, key);
    let mut out = vec![
        format!("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE", table.table_name().quoted()),
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
    ];
    out.extend(create_log(scope, t));
    out
}

/// `"k1" type NOT NULL, ...` for the primary key of table `t`, each type
/// followed by `suffix` (`[]` for the log's arrays).
fn key_definitions(scope: &Scope<'_>, t: usize, suffix: &str) -> Vec<String> {
    scope.table(t).key_columns().iter().map(|c| format!("{} {}{suffix} NOT NULL", quote_ident(&c.name), c.pg_type)).collect()
}

/// The change log of a table (no index: the triggers only append to it,
/// and a fold reads it whole). The key arrays of a bulk statement are large
/// and written once: stored out of line uncompressed, which made a
/// 100K-key entry about seven times cheaper to write than with compression.
pub fn create_log(scope: &Scope<'_>, t: usize) -> Vec<String> {
    let storage: Vec<String> =
        scope.table(t).primary_key.iter().map(|k| format!("ALTER COLUMN {} SET STORAGE EXTERNAL", quote_ident(k))).collect();
    vec![
        format!(
            "CREATE TABLE {} (tandem_seq bigint NOT NULL, tandem_stamp xid8 NOT NULL, tandem_kind \"char\" NOT NULL, {})",
            scope.log(t),
            key_definitions(scope, t, "[]").join(", ")
        ),
        format!("ALTER TABLE {} {}", scope.log(t), storage.join(", ")),
    ]
}

/// The sequence of the change logs (the extension creates it; a scope from
/// before change logs may lack it).
pub fn create_log_sequence() -> String {
    format!("CREATE SEQUENCE {LOG_SEQUENCE}")
}

/// Makes every live row of a table due for sending again without changing
/// its version (used when provisioning adds columns clients must receive).
pub fn restamp(scope: &Scope<'_>, t: usize) -> String {
    format!("UPDATE {} SET tandem_stamp = pg_current_xact_id() WHERE NOT tandem_deleted", scope.track(t))
}

/// Forgets the rows that left a table's partitions: once its filter
/// changed they were drawn by the old one, and every device sweeps its
/// copy instead (see `migration::refilter`).
pub fn forget_exits(scope: &Scope<'_>, t: usize) -> String {
    format!("DELETE FROM {}", scope.exits(t))
}

/// Stamps everything a table's tracking holds with the current
/// transaction, in the tracking itself (its versions too), its log and its
/// exits: for a database restored into another cluster or database, whose
/// transaction ids are another count, so a stamp from before would read as
/// past or future at random, and a version could equal one of a later
/// change here (a device's stale base would pass for current). Only
/// Tandem's own columns change, so no user code runs.
pub fn restamp_moved(scope: &Scope<'_>, t: usize) -> Vec<String> {
    vec![
        format!("UPDATE {} SET tandem_stamp = pg_current_xact_id(), tandem_version = pg_current_xact_id()", scope.track(t)),
        format!("UPDATE {} SET tandem_stamp = pg_current_xact_id()", scope.log(t)),
        format!("UPDATE {} SET tandem_stamp = pg_current_xact_id()", scope.exits(t)),
    ]
}

/// The names of the triggers tracking id `id` may put on a relation,
/// unquoted: a plain table carries all of them, a partition or a
/// partitioned table all but the key trigger, so a caller drops the ones
/// `pg_trigger` lists, with [`drop_trigger`].
pub fn trigger_names(id: i64) -> Vec<String> {
    Event::ALL.iter().map(|event| event.name()).chain(["notify"]).map(|what| unquoted_trigger_name(id, what)).collect()
}

/// Drops trigger `name` (one of [`trigger_names`]) from a relation.
pub fn drop_trigger(quoted_table: &str, name: &str) -> String {
    format!("DROP TRIGGER {} ON {quoted_table}", quote_ident(name))
}

/// Drops a table's trigger functions and tracking tables; the user table
/// and its rows stay.
pub fn drop_tracking(id: i64) -> Vec<String> {
    let mut out: Vec<String> = Event::ALL.iter().map(|&event| format!("DROP FUNCTION IF EXISTS {}()", function_name(event, id))).collect();
    out.push(format!(
        "DROP TABLE IF EXISTS {0}.{1}, {0}.{2}, {0}.{3}",
        quote_ident(TRACKING_SCHEMA),
        quote_ident(&format!("track_{id}")),
        quote_ident(&format!("log_{id}")),
        quote_ident(&format!("exit_{id}"))
    ));
    out
}

/// The trigger that marks which relations carry a table's triggers (the
/// table and its partitions).
pub fn marker_trigger(id: i64) -> String {
    format!("tandem_{id}_insert")
}

/// Trigger functions and triggers of a table. Run on every provisioning: a
/// parent's update trigger changes when a `via` child joins the scope.
/// A partitioned table's partitions get theirs from [`partition_triggers`].
pub fn triggers(scope: &Scope<'_>, t: usize) -> Vec<String> {
    let table = scope.table(t);
    let user_table = table.table_name().quoted();
    let id = scope.id(t);
    let mut out = Vec::new();
    for event in Event::ALL {
        let body = match event {
            Event::Insert => insert_body(scope, t),
            Event::Update => update_body(scope, t),
            Event::Key => key_body(scope, t),
            Event::Delete => delete_body(scope, t),
            Event::Truncate => truncate_body(scope, t),
        };
        // Each tracking statement runs once per user statement: compiling
        // its plan (JIT) would cost the user's write more than it saves.
        // Its joins of transition tables need a hash or a merge: an apply
        // writes with both off (index probes), which would make the old and
        // new rows of a 10,000-row statement a nested loop.
        // The statement's entries share one `tandem_seq`, taken when the
        // trigger runs, after the statement locked every row it changed.
        out.push(format!(
            "CREATE OR REPLACE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER \
             SET search_path = pg_catalog, pg_temp SET jit = off \
             SET enable_hashjoin = on SET enable_mergejoin = on AS $tandem$\n\
             DECLARE\n  _v xid8 := pg_current_xact_id();\n  \
             _seq bigint := nextval('{LOG_SEQUENCE}');\n  _any boolean;\n\
             BEGIN\n{body}  RETURN NULL;\nEND\n$tandem$",
            function_name(event, id)
        ));
        if event == Event::Key && key_changed(scope, t).is_none() {
            // Its update trigger finds changed keys (a scope provisioned
            // before may still have the row trigger).
            out.push(format!("DROP TRIGGER IF EXISTS {} ON {user_table}", trigger_name(event, id)));
        } else {
            out.push(create_trigger(scope, t, event, &user_table));
        }
    }
    out.push(notify_trigger(scope, t, &user_table));
    out
}

/// The statement triggers of one partition of table `t` (a partitioned
/// table), calling the table's own trigger functions.
pub fn partition_triggers(scope: &Scope<'_>, t: usize, quoted_partition: &str) -> Vec<String> {
    Event::ON_PARTITIONS
        .iter()
        .map(|&event| create_trigger(scope, t, event, quoted_partition))
        .chain([notify_trigger(scope, t, quoted_partition)])
        .collect()
}

fn create_trigger(scope: &Scope<'_>, t: usize, event: Event, quoted_relation: &str) -> String {
    let table = scope.table(t);
    let timing = match event {
        Event::Insert => "AFTER INSERT ON {t} REFERENCING NEW TABLE AS tandem_new FOR EACH STATEMENT".to_string(),
        // The old rows matter only where a row can leave a partition or
        // change its key unseen; elsewhere the statement is spared keeping
        // a copy of them.
        Event::Update if table.filter.is_some() || table.partitioned => {
            "AFTER UPDATE ON {t} REFERENCING OLD TABLE AS tandem_old NEW TABLE AS tandem_new FOR EACH STATEMENT".to_string()
        }
        Event::Update => "AFTER UPDATE ON {t} REFERENCING NEW TABLE AS tandem_new FOR EACH STATEMENT".to_string(),
        // Fires only for rows whose key changed: other rows pay a
        // comparison. Not `UPDATE OF <key>`: that skips statements naming
        // no key column, whose key a BEFORE trigger may still change.
        Event::Key => {
            format!("AFTER UPDATE ON {{t}} FOR EACH ROW WHEN ({})", key_changed(scope, t).unwrap_or_else(|| "false".into()))
        }
        Event::Delete => "AFTER DELETE ON {t} REFERENCING OLD TABLE AS tandem_old FOR EACH STATEMENT".to_string(),
        Event::Truncate => "BEFORE TRUNCATE ON {t} FOR EACH STATEMENT".to_string(),
    }
    .replace("{t}", quoted_relation);
    format!(
        "CREATE OR REPLACE TRIGGER {} {timing} EXECUTE FUNCTION {}()",
        trigger_name(event, scope.id(t)),
        function_name(event, scope.id(t))
    )
}

/// When the key trigger fires: the key changed, as `=` compares it or in
/// its text (`1.5` to `1.50`), which a device holding the old text must
/// hear of. A partitioned table's update trigger finds keys that changed
/// as `=` compares them (a row may move partition, which fires no row
/// trigger), so there it fires only for a changed text, which never moves
/// a row (the partition key is part of the primary key).
/// `None`: the table has no key trigger (partitioned, every key text its
/// value).
fn key_changed(scope: &Scope<'_>, t: usize) -> Option<String> {
    let table = scope.table(t);
    // A type with its own `=` (`citext`) is compared with it by name: a
    // key column is never NULL.
    let value = table
        .key_columns()
        .iter()
        .map(|c| match scope.schema.operator(c, "=") {
            plain if plain == "=" => format!("OLD.{0} IS DISTINCT FROM NEW.{0}", quote_ident(&c.name)),
            own => format!("NOT (OLD.{0} {own} NEW.{0})", quote_ident(&c.name)),
        })
        .collect::<Vec<_>>();
    let text = spelled_apart("OLD", "NEW", &table.respellable_key());
    match (table.partitioned, text) {
        (false, None) => Some(value.join(" OR ")),
        (false, Some(text)) => Some(format!("{} OR {text}", value.join(" OR "))),
        (true, Some(text)) => Some(format!("NOT ({}) AND {text}", value.join(" OR "))),
        (true, None) => None,
    }
}

/// Logs every row a relation holds itself (`ONLY`): as changes when a
/// partition joins table `t` (attached), as deletes that leave their
/// partition when it goes (detached). Run outside any trigger.
pub fn log_partition_rows(scope: &Scope<'_>, t: usize, quoted_partition: &str, joins: bool) -> Vec<String> {
    let source = format!("ONLY {quoted_partition}");
    if joins {
        vec![log(scope, t, DIRECT, &source, "o", LogKind::Change, "")]
    } else {
        vec![exit(scope, t, DIRECT, &source, "o", ""), log(scope, t, DIRECT, &source, "o", LogKind::Delete, "")]
    }
}

/// Logs as changes the rows of table `t` that tracking never saw, or holds
/// as deleted (written with Tandem's triggers off: a session in replica
/// mode, a restore with `--disable-triggers`). A verify that found one adopts them: from then
/// on they are pulled and judged like any row, under a version of their
/// own. Run outside any trigger.
pub fn adopt_untracked(scope: &Scope<'_>, t: usize) -> String {
    let untracked = format!(
        " WHERE NOT EXISTS (SELECT 1 FROM {} tr WHERE {} AND NOT tr.tandem_deleted)",
        scope.track(t),
        keys_equal(scope, t, "tr", "u")
    );
    log(scope, t, DIRECT, &scope.table(t).table_name().quoted(), "u", LogKind::Change, &untracked)
}

/// Live keys of table `t` that tracking holds but the table does not:
/// rows that vanished without a trigger seeing them (a dropped partition).
pub fn vanished_rows(scope: &Scope<'_>, t: usize) -> String {
    format!(
        "SELECT count(*) FROM {track} tr WHERE NOT tr.tandem_deleted AND NOT EXISTS (SELECT 1 FROM {table} u WHERE {same})",
        track = scope.track(t),
        table = scope.table(t).table_name().quoted(),
        same = keys_equal(scope, t, "u", "tr"),
    )
}

/// The sequence that orders log entries (created with the extension).
pub const LOG_SEQUENCE: &str = "tandem.log_seq";

/// Log entry kinds: a change of the row, its deletion, and a restamp (the
/// row is due for sending again, unchanged, because its parent moved).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LogKind {
    Change,
    Delete,
    Restamp,
}

impl LogKind {
    /// The `tandem_kind` "char" the log stores.
    fn code(self) -> char {
        match self {
            LogKind::Change => 'c',
            LogKind::Delete => 'd',
            LogKind::Restamp => 'r',
        }
    }
}

/// Appends a log entry of `kind` for the keys of `source` rows: one row per
/// statement, each key column as an array (in the same row order), so a
/// bulk write adds one row to the log, not one per changed row.
fn log(scope: &Scope<'_>, t: usize, stamp: Stamp, source: &str, alias: &str, kind: LogKind, filter: &str) -> String {
    let key = &scope.table(t).primary_key;
    let arrays: Vec<String> = key.iter().map(|k| format!("array_agg({alias}.{})", quote_ident(k))).collect();
    format!(
        "INSERT INTO {log} (tandem_seq, tandem_stamp, tandem_kind, {keys}) \
         SELECT {seq}, {version}, '{kind}', {} FROM {source} {alias}{filter} HAVING count(*) > 0",
        arrays.join(", "),
        log = scope.log(t),
        keys = column_list(None, key),
        seq = stamp.seq,
        version = stamp.version,
        kind = kind.code(),
    )
}

/// A statement as a line of a trigger body.
fn line(statement: String) -> String {
    format!("  {statement};\n")
}

/// A statement made with [`DYNAMIC`] stamps as a line of a trigger body
/// that plans it each time it runs. A statement joining the transition
/// tables must be: PL/pgSQL keeps the plan made at a session's first
/// statement, sized for its transition tables (one row after a one-row
/// UPDATE), and a nested loop over two 10,000-row transition tables took
/// 24 s where a hash join takes 0.3 s.
fn planned_each_time(statement: String) -> String {
    format!("  EXECUTE {} USING _seq, _v;\n", quote_literal(&statement))
}

/// The entries of a log source (`moved` rows, or the log itself), one row
/// per key: `tandem_seq, tandem_stamp, tandem_kind` and the key columns.
fn entries(scope: &Scope<'_>, t: usize, source: &str) -> String {
    let key = &scope.table(t).primary_key;
    format!(
        "SELECT e.tandem_seq, e.tandem_stamp, e.tandem_kind, {u_keys} \
         FROM {source} e CROSS JOIN LATERAL unnest({e_keys}) AS u({keys})",
        u_keys = column_list(Some("u"), key),
        e_keys = column_list(Some("e"), key),
        keys = column_list(None, key),
    )
}

/// Per key of `entries` (rows shaped as [`entries`] returns them), the
/// latest entry: the one with the highest `tandem_seq` (see the module's
/// comment); the key and `tandem_stamp`, then `also`, of the entries that
/// pass `only`.
fn latest_of(scope: &Scope<'_>, t: usize, entries: &str, also: &str, only: &str) -> String {
    let keys = column_list(None, &scope.table(t).primary_key);
    format!("SELECT DISTINCT ON ({keys}) {keys}, tandem_stamp{also} FROM {entries}{only} ORDER BY {keys}, tandem_seq DESC")
}

/// Per key of `entries`, the latest entry of any kind: its `tandem_stamp`
/// is the key's stamp.
fn latest_entries(scope: &Scope<'_>, t: usize, entries: &str) -> String {
    latest_of(scope, t, entries, "", "")
}

/// Per key of `entries`, the latest change or delete: the key,
/// `tandem_stamp` (its version) and `tandem_kind`. Restamps move no version.
fn latest_changes(scope: &Scope<'_>, t: usize, entries: &str) -> String {
    latest_of(scope, t, entries, ", tandem_kind", &format!(" WHERE tandem_kind <> '{}'", LogKind::Restamp.code()))
}

/// This transaction's deletes of table `t` logged after `mark` (an SQL
/// expression of a `tandem_seq`) that pass `only` (a condition over `d`,
/// the deleted key), as rows `d` of the key columns and `tandem_before`:
/// the version the row had, its latest change by another transaction the
/// log still holds, else tracking's (NULL for a row never changed since the
/// table was tracked). The versions are looked up only for the keys that
/// pass.
pub fn removed_after(scope: &Scope<'_>, t: usize, mark: &str, only: &str) -> String {
    let key = &scope.table(t).primary_key;
    format!(
        "SELECT {d_keys}, coalesce(\
         (SELECT x.tandem_stamp FROM ({logged}) x WHERE {x_is_d} AND x.tandem_stamp <> pg_current_xact_id() \
         AND x.tandem_kind <> '{restamp}' ORDER BY x.tandem_seq DESC LIMIT 1), \
         (SELECT tr.tandem_version FROM {track} tr WHERE {tr_is_d} ORDER BY tr.tandem_deleted, tr.tandem_stamp DESC LIMIT 1)\
         ) AS tandem_before \
         FROM (SELECT {d_keys} FROM ({logged}) d WHERE d.tandem_seq > {mark} AND d.tandem_stamp = pg_current_xact_id() \
         AND d.tandem_kind = '{delete}' AND {only} OFFSET 0) d",
        d_keys = column_list(Some("d"), key),
        logged = entries(scope, t, &scope.log(t)),
        x_is_d = keys_equal(scope, t, "x", "d"),
        tr_is_d = keys_equal(scope, t, "tr", "d"),
        track = scope.track(t),
        restamp = LogKind::Restamp.code(),
        delete = LogKind::Delete.code(),
    )
}

/// Records that rows of `source` left their partition.
fn exit(scope: &Scope<'_>, t: usize, stamp: Stamp, source: &str, alias: &str, filter: &str) -> String {
    exit_from(scope, t, stamp, source, alias, &part_expr(scope, t, alias, 0), filter)
}

/// [`exit`] from the partition `part` says (an expression over `alias`).
fn exit_from(scope: &Scope<'_>, t: usize, stamp: Stamp, source: &str, alias: &str, part: &str, filter: &str) -> String {
    let key = &scope.table(t).primary_key;
    format!(
        "INSERT INTO {exits} ({keys}, tandem_part, tandem_stamp) \
         SELECT {src_keys}, {part}, {version} FROM {source} {alias}{filter}",
        exits = scope.exits(t),
        keys = column_list(None, key),
        src_keys = column_list(Some(alias), key),
        version = stamp.version,
    )
}

fn insert_body(scope: &Scope<'_>, t: usize) -> String {
    let key = &scope.table(t).primary_key;
    let arrived = format!("SELECT {} FROM tandem_new n", column_list(Some("n"), key));
    line(log(scope, t, IN_TRIGGER, "tandem_new", "n", LogKind::Change, ""))
        + &lock_parents(scope, t, "tandem_new")
        + &restamp_descendants(scope, t, &arrived, true)
}

fn delete_body(scope: &Scope<'_>, t: usize) -> String {
    let mut body =
        line(exit(scope, t, IN_TRIGGER, "tandem_old", "o", "")) + &line(log(scope, t, IN_TRIGGER, "tandem_old", "o", LogKind::Delete, ""));
    // Rows under a deleted parent that stay (no foreign key, or one that
    // sets no null) leave its partition.
    if scope.table(t).filter.is_some() {
        let key = &scope.table(t).primary_key;
        let deleted = format!("SELECT {}, {} AS tandem_left FROM tandem_old o", column_list(Some("o"), key), part_expr(scope, t, "o", 0));
        body += &children_exit(scope, t, &deleted);
    }
    body
}

/// A truncated table's rows are deleted. Truncating a partitioned table
/// fires the trigger of every partition as well: each trigger logs only
/// the rows its relation holds itself (`ONLY`), named at run time.
fn truncate_body(scope: &Scope<'_>, t: usize) -> String {
    if !scope.table(t).partitioned {
        let user_table = scope.table(t).table_name().quoted();
        return line(exit(scope, t, IN_TRIGGER, &user_table, "o", ""))
            + &line(log(scope, t, IN_TRIGGER, &user_table, "o", LogKind::Delete, ""));
    }
    let marker = "\u{1}";
    let source = format!("ONLY {marker}");
    [exit(scope, t, DYNAMIC, &source, "o", ""), log(scope, t, DYNAMIC, &source, "o", LogKind::Delete, "")]
        .iter()
        .map(|statement| {
            let parts: Vec<String> = statement.split(marker).map(quote_literal).collect();
            format!("  EXECUTE {} USING _seq, _v;\n", parts.join(" || TG_RELID::regclass::text || "))
        })
        .collect()
}

/// A row whose key an UPDATE changed: the old key is deleted (row-level;
/// it runs before the statement's update trigger, whose entries for the new
/// keys so come later).
fn key_body(scope: &Scope<'_>, t: usize) -> String {
    line(exit(scope, t, IN_TRIGGER, "(SELECT OLD.*)", "o", ""))
        + &line(log(scope, t, IN_TRIGGER, "(SELECT OLD.*)", "o", LogKind::Delete, ""))
}

fn update_body(scope: &Scope<'_>, t: usize) -> String {
    let table = scope.table(t);
    let same_key = keys_equal(scope, t, "n", "o");
    // Old rows whose key no new row holds: the key changed to another value.
    let gone = format!(" WHERE NOT EXISTS (SELECT 1 FROM tandem_new n WHERE {same_key})");
    let mut body = String::new();
    // Rows whose filter values changed left their partition.
    if table.filter.is_some() {
        body += &planned_each_time(exit(
            scope,
            t,
            DYNAMIC,
            "tandem_old",
            "o",
            &format!(
                " JOIN tandem_new n ON {same_key} WHERE {} IS DISTINCT FROM {}",
                part_expr(scope, t, "n", 0),
                part_expr(scope, t, "o", 0)
            ),
        ));
    }
    // Keys changed (within a partition, or moving the row to another one):
    // the old key is gone. Its entries share the statement's sequence
    // number with the new keys', which are other keys.
    if table.partitioned {
        body += &planned_each_time(exit(scope, t, DYNAMIC, "tandem_old", "o", &gone));
        body += &planned_each_time(log(scope, t, DYNAMIC, "tandem_old", "o", LogKind::Delete, &gone));
    }
    // Rows under a key that is gone (changed to another value) leave the
    // partition, as under a deleted parent: a device drops the rows it
    // finds under the old key's text, not those holding it in another
    // text PostgreSQL holds equal.
    if table.filter.is_some() {
        let parents = format!(
            "SELECT {}, {} AS tandem_left FROM tandem_old o{gone}",
            column_list(Some("o"), &table.primary_key),
            part_expr(scope, t, "o", 0)
        );
        body += &when_any(&parents, children_exit(scope, t, &parents));
    }
    body += &line(log(scope, t, IN_TRIGGER, "tandem_new", "n", LogKind::Change, ""));
    if let Some(Filter::Via { on, .. }) = &table.filter {
        let same_parent: Vec<String> = on.keys().map(|c| format!("o.{0} IS NOT DISTINCT FROM n.{0}", quote_ident(c))).collect();
        let under_another = format!(
            "SELECT n.* FROM tandem_new n WHERE NOT EXISTS (SELECT 1 FROM tandem_old o WHERE {same_key} AND {})",
            same_parent.join(" AND ")
        );
        body += &when_any(&under_another, lock_parents(scope, t, &format!("({under_another})")));
    }
    body += &follow_parents(scope, t);
    // A key changed onto rows already under it takes them in.
    if table.filter.is_some() {
        let arrived = format!(
            "SELECT {} FROM tandem_new n WHERE NOT EXISTS (SELECT 1 FROM tandem_old o WHERE {same_key})",
            column_list(Some("n"), &table.primary_key)
        );
        body += &when_any(&arrived, restamp_descendants(scope, t, &arrived, true));
    }
    body
}

/// `body` (trigger body lines), run only when `rows` (a query over the
/// transition tables) finds a row. Most statements move no parent and
/// change no key: a join of their few rows with a child table that has no
/// index on the `on` columns would scan the whole child table for nothing
/// (a one-row update took 640-695 ms over a 1M-row child table).
fn when_any(rows: &str, body: String) -> String {
    if body.is_empty() {
        return body;
    }
    format!(
        "  EXECUTE {} INTO _any;\n  IF _any THEN\n{}  END IF;\n",
        // Not `EXISTS`: planned to stop at a first row, it joins the
        // transition tables in a nested loop, which a 10,000-row statement
        // that moved nothing runs to its end.
        quote_literal(&format!("SELECT count(*) > 0 FROM ({rows}) AS r")),
        body.lines().map(|l| format!("  {l}\n")).collect::<String>()
    )
}

/// When rows of table `t` move to another partition, rows of tables filtered
/// `via` it (at any depth) move with them: they become due for sending, so
/// the new partition receives them, and they exit the partition left.
fn follow_parents(scope: &Scope<'_>, t: usize) -> String {
    if scope.table(t).filter.is_none() {
        return String::new();
    }
    let key = &scope.table(t).primary_key;
    // With the partition each parent left: its children exit from there.
    let moved = format!(
        "SELECT {}, {} AS tandem_left FROM tandem_old o JOIN tandem_new n ON {} WHERE {} IS DISTINCT FROM {}",
        column_list(Some("o"), key),
        part_expr(scope, t, "o", 0),
        keys_equal(scope, t, "n", "o"),
        part_expr(scope, t, "o", 0),
        part_expr(scope, t, "n", 0),
    );
    if descendants(scope, t).is_empty() {
        return String::new();
    }
    // The moved parents are locked as a key change locks them, so a row
    // being written under one in another transaction (which holds it `FOR
    // KEY SHARE`: a foreign key's check, or `lock_parents`) commits before
    // the restamp below looks, or waits for this transaction's end and is
    // then written under the parent's new partition.
    let lock = format!(
        "SELECT 1 FROM {} p WHERE EXISTS (SELECT 1 FROM ({moved}) m WHERE {}) FOR UPDATE OF p",
        scope.table(t).table_name().quoted(),
        keys_equal(scope, t, "p", "m")
    );
    when_any(&moved, planned_each_time(lock) + &restamp_descendants(scope, t, &moved, false) + &children_exit(scope, t, &moved))
}

/// Rows of `rows` (table `t`'s rows, new or put under another parent)
/// hold their `via` parent rows `FOR KEY SHARE`, as a foreign key's check
/// does, unless such a key does it already ([`held_off`]). A parent that
/// moves partition meanwhile (`follow_parents` locks it `FOR UPDATE`) is
/// so ordered with them: its restamp of the rows under it sees these, or
/// these are written after the move.
fn lock_parents(scope: &Scope<'_>, t: usize, rows: &str) -> String {
    let Some(Filter::Via { parent, on }) = &scope.table(t).filter else { return String::new() };
    let (Some(p), Some(lock)) = (scope.index_of(parent), lock_via_parents(scope, t, rows)) else { return String::new() };
    format!("  IF NOT {} THEN\n{}  END IF;\n", held_off(scope, (t, p), on), planned_each_time(lock))
}

/// Rows of tables filtered `via` table `t` (at any depth) under the parents
/// of `parents` (their keys) become due for sending. `arrived`: the
/// parents are new to their keys (inserted, or a key changed onto them),
/// so only rows that were there before them are found, and none can be
/// under a child table whose foreign key to `t` (on the `via` columns,
/// valid, checked at each statement) held them off: that table is skipped
/// without a look, which spares an insert a scan of a child table with no
/// index on those columns.
fn restamp_descendants(scope: &Scope<'_>, t: usize, parents: &str, arrived: bool) -> String {
    // Restamps of the tables under each child table of `t`, in the order
    // `descendants` gives them (a child, then the tables under it).
    let mut by_child: Vec<(usize, &std::collections::BTreeMap<String, String>, String)> = Vec::new();
    let paths = descendants(scope, t);
    for (child, path) in &paths {
        let joins = descendant_joins(scope, t, path);
        let child_key = &scope.table(*child).primary_key;
        // The child rows are locked before their entries take a sequence
        // number, so a concurrent write of a child is ordered with this one.
        // `FOR UPDATE`: rows being written under these in other
        // transactions (holding them `FOR KEY SHARE`) are ordered with this
        // one as the parents' own are (`follow_parents`).
        let mut restamp = planned_each_time(format!("SELECT 1 FROM ({parents}) m{joins} FOR UPDATE OF d0"));
        restamp += &format!("  _seq := nextval('{LOG_SEQUENCE}');\n");
        let children = format!("(SELECT DISTINCT {} FROM ({parents}) m{joins})", column_list(Some("d0"), child_key));
        restamp += &planned_each_time(log(scope, *child, DYNAMIC, &children, "c", LogKind::Restamp, ""));
        let Some((first, on)) = path.last() else { continue };
        match by_child.last_mut() {
            Some((last, _, body)) if last == first => *body += &restamp,
            _ => by_child.push((*first, on, restamp)),
        }
    }
    by_child
        .into_iter()
        .map(|(first, on, restamp)| match arrived {
            true => format!("  IF NOT {} THEN\n{restamp}  END IF;\n", held_off(scope, (first, t), on)),
            false => restamp,
        })
        .collect()
}

/// True when a foreign key of table `child` on its `via` columns `on` to
/// table `parent` keeps every child row under a parent row: valid, and
/// checked at each statement's end (not deferrable), so no statement after
/// one that leaves a child without its parent can start. Read at each
/// statement from the catalog: a key dropped or added later counts.
fn held_off(scope: &Scope<'_>, (child, parent): (usize, usize), on: &std::collections::BTreeMap<String, String>) -> String {
    let attnum = |relation: &str, name: &str| {
        format!("(SELECT attnum FROM pg_catalog.pg_attribute WHERE attrelid = k.{relation} AND attname = {})", quote_literal(name))
    };
    let pairs: Vec<String> = on
        .iter()
        .map(|(c, p)| {
            format!(
                " AND EXISTS (SELECT 1 FROM unnest(k.conkey, k.confkey) AS u(c, p) WHERE u.c = {} AND u.p = {})",
                attnum("conrelid", c),
                attnum("confrelid", p)
            )
        })
        .collect();
    format!(
        "EXISTS (SELECT 1 FROM pg_catalog.pg_constraint k WHERE k.contype = 'f' AND k.convalidated AND NOT k.condeferrable \
         AND k.conrelid = to_regclass({child}) AND k.confrelid = to_regclass({parent}) AND cardinality(k.conkey) = {n}{pairs})",
        child = quote_literal(&scope.table(child).table_name().quoted()),
        parent = quote_literal(&scope.table(parent).table_name().quoted()),
        n = on.len(),
        pairs = pairs.concat(),
    )
}

/// Rows of tables filtered `via` table `t` (at any depth) under the parents
/// of `parents` (their keys and `tandem_left`, the partition each left)
/// exit from that partition. A device there removes a parent's children
/// itself, but only those it can tell are the parent's: not a child given
/// another parent in the same window, nor one holding the parent's key in
/// another text PostgreSQL holds equal (`'abc'` under a `citext` `'ABC'`).
fn children_exit(scope: &Scope<'_>, t: usize, parents: &str) -> String {
    let mut out = String::new();
    for (child, path) in descendants(scope, t) {
        let joins = descendant_joins(scope, t, &path);
        let child_key = &scope.table(child).primary_key;
        let left = format!("(SELECT DISTINCT {}, m.tandem_left FROM ({parents}) m{joins})", column_list(Some("d0"), child_key));
        out += &planned_each_time(exit_from(scope, child, DYNAMIC, &left, "c", "c.tandem_left", ""));
    }
    out
}

/// The joins from rows `m` of table `t` down `path` (child first, as
/// [`descendants`] gives it) to the descendant's rows, aliased `d0`.
fn descendant_joins(scope: &Scope<'_>, t: usize, path: &ViaPath) -> String {
    let mut joins = String::new();
    let mut above = (t, "m".to_string());
    for (depth, (index, on)) in path.iter().enumerate().rev() {
        let alias = format!("d{depth}");
        let table = scope.table(*index).table_name().quoted();
        let condition = via_join(scope, (*index, above.0), &above.1, on, &alias, &|c| quote_ident(c));
        joins += &format!(" JOIN {table} {alias} ON {condition}");
        above = (*index, alias);
    }
    joins
}

/// Which of `tables` have anything in their log: a sync call folds only
/// those, so a wide scope with few changes runs few statements.
pub fn pending_logs(scope: &Scope<'_>, tables: &[usize]) -> Query<TableIndex> {
    let (sql, columns, decoder) = table_probes(tables, |t| format!("EXISTS (SELECT 1 FROM {})", scope.log(t)));
    Query::new(sql, Binds::new(), &columns, decoder)
}

/// Whether a call waits for the fold of a table another call is folding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FoldLock {
    /// Wait: the caller writes tracking afterwards (an apply, provisioning)
    /// or reads it whole (status, verify).
    Wait,
    /// Do not wait: a pull reads the table through [`folded_track`] instead.
    Try,
}

/// Takes the right to fold table `t` until the transaction ends: folds of
/// one table run one at a time, each seeing everything the one before it
/// committed. [`FoldLock::Try`] answers whether it got it;
/// [`FoldLock::Wait`] always does.
pub fn lock_fold(scope: &Scope<'_>, t: usize, lock: FoldLock) -> Query<Flag> {
    let mut binds = Binds::new();
    let key = format!("pg_catalog.hashtext('tandem.fold'), pg_catalog.hashtext({})", binds.bind(scope.log(t)));
    let got = match lock {
        FoldLock::Try => format!("pg_catalog.pg_try_advisory_xact_lock({key})::text"),
        // The function returns void: one row once it has the lock.
        FoldLock::Wait => format!("(SELECT true FROM pg_catalog.pg_advisory_xact_lock({key}))::text"),
    };
    Flag::select("got", got, binds)
}

/// Largest change log (bytes, with its out-of-line key arrays) a pull reads
/// through rather than waiting for the call folding it: every pull that
/// reads a log through pays for the whole of it, so past a bulk write's
/// size (32K bigint keys) waiting for the one fold costs less.
pub const READ_THROUGH_BYTES: i64 = 256 << 10;

/// Whether the log of table `t` is small enough to read through
/// ([`READ_THROUGH_BYTES`]).
pub fn log_is_small(scope: &Scope<'_>, t: usize) -> Query<Flag> {
    let mut binds = Binds::new();
    let small = format!(
        "(pg_catalog.pg_total_relation_size({}::text::regclass) <= {})::text",
        binds.bind(scope.log(t)),
        binds.bind(READ_THROUGH_BYTES)
    );
    Flag::select("small", small, binds)
}

/// The `WITH` item naming the log's entries of table `t`, for
/// [`folded_track`] (a `WITH` query is read once however often it is
/// named).
pub fn log_entries(scope: &Scope<'_>, t: usize) -> String {
    format!("tandem_entries AS ({})", entries(scope, t, &scope.log(t)))
}

/// Tracking of table `t` as a fold would leave it now, with the same
/// columns: keys the log holds nothing for as tracking has them, the others
/// as [`fold`] computes them. A pull reads it when another call holds the
/// fold of `t` ([`lock_fold`]) instead of waiting for that call to end:
/// the entries being folded are still in the log for the pull's snapshot,
/// and their keys' tracking rows still as before. Needs [`log_entries`] in
/// the statement's `WITH`.
pub fn folded_track(scope: &Scope<'_>, t: usize) -> String {
    let key = &scope.table(t).primary_key;
    format!(
        "(SELECT {t_keys}, t0.tandem_stamp, t0.tandem_version, t0.tandem_deleted, t0.tandem_origin FROM {track} t0 \
         WHERE NOT EXISTS (SELECT 1 FROM tandem_entries x WHERE {x_is_t0}) \
         UNION ALL \
         SELECT {l_keys}, l.tandem_stamp, coalesce(c.tandem_stamp, o.tandem_version, '0'::xid8), \
         CASE WHEN c.tandem_kind IS NULL THEN coalesce(o.tandem_deleted, false) ELSE c.tandem_kind = '{delete}' END, \
         CASE WHEN c.tandem_kind IS NULL THEN o.tandem_origin END \
         FROM ({latest}) l \
         LEFT JOIN ({changed}) c ON {c_is_l} LEFT JOIN {track} o ON {o_is_l})",
        t_keys = column_list(Some("t0"), key),
        track = scope.track(t),
        x_is_t0 = keys_equal(scope, t, "x", "t0"),
        l_keys = column_list(Some("l"), key),
        delete = LogKind::Delete.code(),
        latest = latest_entries(scope, t, "tandem_entries"),
        changed = latest_changes(scope, t, "tandem_entries"),
        c_is_l = keys_equal(scope, t, "c", "l"),
        o_is_l = keys_equal(scope, t, "o", "l"),
    )
}

/// Moves the log of table `t` into tracking: per key, the stamp of the
/// latest entry, and the version and tombstone of the latest entry that was
/// a change or a delete, which also clears the origin (a restamp-only key
/// keeps those). Run by every sync call before it reads tracking, by the
/// one call holding [`lock_fold`] of the table.
pub fn fold(scope: &Scope<'_>, t: usize) -> String {
    fold_marking(scope, t, None)
}

/// Keys whose change by this transaction a fold marks as one replica's
/// echo (see [`fold_marking`]).
pub struct EchoKeys<'a> {
    /// A query of the keys, its columns named as the table's key columns.
    pub keys: &'a str,
    /// The replica's id, as SQL (a placeholder).
    pub replica: &'a str,
}

/// [`fold`], also setting the origin of `echoes`' keys whose latest change
/// is this transaction's: an apply marks the rows it left exactly as sent
/// while it folds their log, instead of updating their tracking again.
pub fn fold_marking(scope: &Scope<'_>, t: usize, echoes: Option<EchoKeys<'_>>) -> String {
    let key = &scope.table(t).primary_key;
    let keys = column_list(None, key);
    let (echo_join, origin) = match echoes {
        None => (String::new(), "NULL".to_string()),
        Some(echoes) => (
            format!(" LEFT JOIN ({}) e ON {}", echoes.keys, keys_equal(scope, t, "e", "l")),
            format!(
                "CASE WHEN c.tandem_stamp = pg_current_xact_id() AND e.{} IS NOT NULL THEN {}::text END",
                quote_ident(&key[0]),
                echoes.replica
            ),
        ),
    };
    format!(
        "WITH moved AS (DELETE FROM {log} RETURNING *), \
         entries AS ({entries}), \
         latest AS ({latest}), \
         changed AS ({changed}) \
         INSERT INTO {track} AS tr ({keys}, tandem_stamp, tandem_version, tandem_deleted, tandem_origin) \
         SELECT {l_keys}, l.tandem_stamp, coalesce(c.tandem_stamp, '0'::xid8), coalesce(c.tandem_kind = '{delete}', false), {origin} \
         FROM latest l LEFT JOIN changed c ON {same}{echo_join} \
         ON CONFLICT ({keys}) DO UPDATE SET tandem_stamp = excluded.tandem_stamp, \
         tandem_version = CASE WHEN excluded.tandem_version = '0'::xid8 THEN tr.tandem_version ELSE excluded.tandem_version END, \
         tandem_deleted = CASE WHEN excluded.tandem_version = '0'::xid8 THEN tr.tandem_deleted ELSE excluded.tandem_deleted END, \
         tandem_origin = CASE WHEN excluded.tandem_version = '0'::xid8 THEN tr.tandem_origin ELSE excluded.tandem_origin END",
        log = scope.log(t),
        entries = entries(scope, t, "moved"),
        latest = latest_entries(scope, t, "entries"),
        changed = latest_changes(scope, t, "entries"),
        track = scope.track(t),
        l_keys = column_list(Some("l"), key),
        same = keys_equal(scope, t, "c", "l"),
        delete = LogKind::Delete.code(),
    )
}

/// Tracking of table `t` joined with its log's latest changes, for rows
/// whose key `key_equal(alias)` matches: what apply compares an upload
/// against, current to the statement's snapshot even if a write committed
/// after the last fold.
pub struct TrackedState {
    /// `LEFT JOIN`s to append after the source of the keys.
    pub join: String,
    pub version: String,
    pub deleted: String,
    pub origin: String,
}

/// `LEFT JOIN` of table `t`'s tracking as `tr`, one row per key, the live
/// one first, where a key may have several: under a nondeterministic
/// collation tracking may hold a tombstone of a text key's old text (`'K'`)
/// beside the live row (`'k'`), both equal to the row's key. Other keys
/// join plainly. `key_equal` gives the join's condition for an alias.
pub fn one_tracking_row(scope: &Scope<'_>, t: usize, key_equal: impl FnOnce(&str) -> String) -> String {
    let texts = scope.table(t).key_columns().iter().any(|c| matches!(c.ty, LogicalType::Text | LogicalType::Other));
    if texts {
        format!(
            "LEFT JOIN LATERAL (SELECT t1.* FROM {} t1 WHERE {} ORDER BY t1.tandem_deleted, t1.tandem_stamp DESC LIMIT 1) tr ON true",
            scope.track(t),
            key_equal("t1")
        )
    } else {
        format!("LEFT JOIN {} tr ON {}", scope.track(t), key_equal("tr"))
    }
}

pub fn tracked_state(scope: &Scope<'_>, t: usize, key_equal: impl Fn(&str) -> String) -> TrackedState {
    let table = scope.table(t);
    let first = quote_ident(&table.primary_key[0]);
    let tracking = one_tracking_row(scope, t, &key_equal);
    TrackedState {
        join: format!(
            "{tracking} LEFT JOIN ({latest}) lg ON {lg_on}",
            latest = latest_changes(scope, t, &format!("({}) x", entries(scope, t, &scope.log(t)))),
            lg_on = key_equal("lg"),
        ),
        version: "coalesce(lg.tandem_stamp, tr.tandem_version)".into(),
        deleted: format!("coalesce(lg.tandem_kind = '{}', tr.tandem_deleted)", LogKind::Delete.code()),
        origin: format!("CASE WHEN lg.{first} IS NULL THEN tr.tandem_origin END"),
    }
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
    use crate::sql::statements::the;

    #[test]
    fn tracking_tables_mirror_the_primary_key() {
        let schema = crm();
        let ids = [7, 8, 9];
        let scope = Scope::new(&schema, &ids);
        let ddl = create_tracking(&scope, 1);
        assert_eq!(ddl[0], "LOCK TABLE \"public\".\"items\" IN SHARE ROW EXCLUSIVE MODE", "the table is locked first");
        let track = the(&ddl, "CREATE TABLE \"tandem\".\"track_8\"");
        assert!(track.contains("(\"order_id\" bigint NOT NULL, \"line\" integer NOT NULL, tandem_stamp xid8"), "{track}");
        let stamp = the(&ddl, "INSERT INTO \"tandem\".\"track_8\"");
        assert!(stamp.contains("FROM \"public\".\"items\" t"), "{stamp}");
        let log = the(&ddl, "CREATE TABLE \"tandem\".\"log_8\"");
        assert!(log.starts_with("CREATE TABLE \"tandem\".\"log_8\" (tandem_seq bigint NOT NULL"), "{log}");
        assert!(log.ends_with("\"order_id\" bigint[] NOT NULL, \"line\" integer[] NOT NULL)"), "{log}");
        assert_eq!(
            the(&ddl, "ALTER TABLE \"tandem\".\"log_8\""),
            "ALTER TABLE \"tandem\".\"log_8\" ALTER COLUMN \"order_id\" SET STORAGE EXTERNAL, ALTER COLUMN \"line\" SET STORAGE EXTERNAL"
        );
    }

    #[test]
    fn triggers_only_append_to_the_log() {
        let schema = crm();
        let ids = [7, 8, 9];
        let scope = Scope::new(&schema, &ids);
        let statements = triggers(&scope, 2);
        for statement in &statements {
            assert!(!statement.contains("\"track_9\""), "a trigger writes tracking: {statement}");
        }
        let insert = the(&statements, "CREATE OR REPLACE FUNCTION \"tandem\".\"on_insert_9\"");
        assert!(insert.contains("_seq bigint := nextval('tandem.log_seq')"), "{insert}");
        assert!(insert.contains("INSERT INTO \"tandem\".\"log_9\" (tandem_seq, tandem_stamp, tandem_kind, \"code\")"), "{insert}");
        assert!(!insert.contains("tandem.origin"), "no setting marks a write as a replica's: {insert}");
    }

    #[test]
    fn a_fold_keeps_the_latest_entry_per_key() {
        let schema = crm();
        let ids = [7, 8, 9];
        let scope = Scope::new(&schema, &ids);
        let sql = fold(&scope, 1);
        assert!(sql.starts_with("WITH moved AS (DELETE FROM \"tandem\".\"log_8\" RETURNING *)"), "{sql}");
        assert!(sql.contains("CROSS JOIN LATERAL unnest(e.\"order_id\", e.\"line\") AS u(\"order_id\", \"line\")"), "{sql}");
        assert!(sql.contains("SELECT DISTINCT ON (\"order_id\", \"line\") \"order_id\", \"line\", tandem_stamp FROM entries ORDER BY \"order_id\", \"line\", tandem_seq DESC"), "{sql}");
        assert!(sql.contains("WHERE tandem_kind <> 'r'"), "restamps do not change the version: {sql}");
        assert!(sql.contains("INSERT INTO \"tandem\".\"track_8\" AS tr"), "{sql}");
        let state = tracked_state(&scope, 1, |alias| format!("{alias}.x = s.x"));
        assert!(state.join.contains("LEFT JOIN \"tandem\".\"track_8\" tr ON tr.x = s.x"), "{}", state.join);
        // A text key takes one tracking row per key, the live one first.
        let mut texts = crm();
        texts.tables[1].columns[0].ty = LogicalType::Text;
        let state = tracked_state(&Scope::new(&texts, &ids), 1, |alias| format!("{alias}.x = s.x"));
        assert!(
            state.join.contains("LEFT JOIN LATERAL (SELECT t1.* FROM \"tandem\".\"track_8\" t1 WHERE t1.x = s.x ORDER BY t1.tandem_deleted, t1.tandem_stamp DESC LIMIT 1) tr ON true"),
            "{}",
            state.join
        );
        assert!(state.join.ends_with(") lg ON lg.x = s.x"), "{}", state.join);
    }

    #[test]
    fn parents_move_their_children() {
        let schema = crm();
        let ids = [7, 8, 9];
        let scope = Scope::new(&schema, &ids);
        let orders = triggers(&scope, 0);
        let update = the(&orders, "CREATE OR REPLACE FUNCTION \"tandem\".\"on_update_7\"");
        assert!(update.contains("SELECT $1, $2, ''r'', array_agg(c.\"order_id\"), array_agg(c.\"line\") FROM (SELECT DISTINCT d0.\"order_id\", d0.\"line\" FROM (SELECT"), "{update}");
        // Joins of the transition tables are planned each time, for their size.
        assert!(update.contains("  EXECUTE 'INSERT INTO \"tandem\".\"exit_7\""), "{update}");
        let joins: Vec<&str> = update.lines().filter(|l| l.contains("tandem_old o JOIN tandem_new n")).collect();
        assert!(joins.len() == 6 && joins.iter().all(|l| l.trim_start().starts_with("EXECUTE '")), "{update}");
        // The rows under moved parents are looked for only when one moved.
        assert!(update.contains("  EXECUTE 'SELECT count(*) > 0 FROM (SELECT o.\"id\", jsonb_build_object(''tenant'', o.\"tenant_id\") AS tandem_left FROM tandem_old o JOIN tandem_new n ON n.\"id\" = o.\"id\" WHERE jsonb_build_object(''tenant'', o.\"tenant_id\") IS DISTINCT FROM jsonb_build_object(''tenant'', n.\"tenant_id\")) AS r' INTO _any;\n  IF _any THEN\n    EXECUTE 'SELECT 1 FROM \"public\".\"orders\" p"), "{update}");
        // The children exit the partition their parent left.
        assert!(update.contains("EXECUTE 'INSERT INTO \"tandem\".\"exit_8\" (\"order_id\", \"line\", tandem_part, tandem_stamp) SELECT c.\"order_id\", c.\"line\", c.tandem_left, $2 FROM (SELECT DISTINCT d0.\"order_id\", d0.\"line\", m.tandem_left FROM"), "{update}");
        // Moved parents and the rows under them are locked as a key change
        // locks them: rows written under them elsewhere wait or are seen.
        assert!(update.contains("WHERE p.\"id\" = m.\"id\") FOR UPDATE OF p' USING"), "{update}");
        assert!(update.contains("JOIN \"public\".\"items\" d0 ON m.\"id\" = d0.\"order_id\" FOR UPDATE OF d0"), "{update}");
        // A row put under another parent, or a new one, holds its parent
        // as a foreign key's check would.
        let items = triggers(&scope, 1);
        let insert = the(&items, "CREATE OR REPLACE FUNCTION \"tandem\".\"on_insert_8\"");
        assert!(
            insert.contains(
                "EXECUTE 'SELECT 1 FROM tandem_new k JOIN \"public\".\"orders\" p ON p.\"id\" = k.\"order_id\" FOR KEY SHARE OF p'"
            ),
            "{insert}"
        );
        let update_items = the(&items, "CREATE OR REPLACE FUNCTION \"tandem\".\"on_update_8\"");
        assert!(update_items.contains("SELECT 1 FROM (SELECT n.* FROM tandem_new n WHERE NOT EXISTS (SELECT 1 FROM tandem_old o WHERE n.\"order_id\" = o.\"order_id\" AND n.\"line\" = o.\"line\" AND o.\"order_id\" IS NOT DISTINCT FROM n.\"order_id\")) k JOIN \"public\".\"orders\" p ON p.\"id\" = k.\"order_id\" FOR KEY SHARE OF p"), "{update_items}");
        // Children left under a deleted parent exit its partition too.
        let delete = the(&orders, "CREATE OR REPLACE FUNCTION \"tandem\".\"on_delete_7\"");
        assert!(
            delete.contains("EXECUTE 'INSERT INTO \"tandem\".\"exit_8\" (\"order_id\", \"line\", tandem_part, tandem_stamp) SELECT c.\"order_id\", c.\"line\", c.tandem_left, $2 FROM (SELECT DISTINCT d0.\"order_id\", d0.\"line\", m.tandem_left FROM (SELECT o.\"id\", jsonb_build_object(''tenant'', o.\"tenant_id\") AS tandem_left FROM tandem_old o) m JOIN \"public\".\"items\" d0 ON m.\"id\" = d0.\"order_id\") c'"),
            "{delete}"
        );
        // A parent that arrives (inserted, or a key changed onto the rows)
        // takes in rows already there, unless a foreign key held them off.
        let insert = the(&orders, "CREATE OR REPLACE FUNCTION \"tandem\".\"on_insert_7\"");
        assert!(insert.contains("  IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint k WHERE k.contype = 'f' AND k.convalidated AND NOT k.condeferrable AND k.conrelid = to_regclass('\"public\".\"items\"') AND k.confrelid = to_regclass('\"public\".\"orders\"') AND cardinality(k.conkey) = 1 AND EXISTS (SELECT 1 FROM unnest(k.conkey, k.confkey) AS u(c, p) WHERE u.c = (SELECT attnum FROM pg_catalog.pg_attribute WHERE attrelid = k.conrelid AND attname = 'order_id') AND u.p = (SELECT attnum FROM pg_catalog.pg_attribute WHERE attrelid = k.confrelid AND attname = 'id'))) THEN\n"), "{insert}");
        assert!(insert.contains("FROM (SELECT DISTINCT d0.\"order_id\", d0.\"line\" FROM (SELECT n.\"id\" FROM tandem_new n) m JOIN \"public\".\"items\" d0 ON m.\"id\" = d0.\"order_id\") c HAVING count(*) > 0'"), "{insert}");
        assert!(update.contains("(SELECT n.\"id\" FROM tandem_new n WHERE NOT EXISTS (SELECT 1 FROM tandem_old o WHERE n.\"id\" = o.\"id\")) m JOIN \"public\".\"items\" d0"), "{update}");
        // an unfiltered table has no partition to leave: only vanished keys exit
        let currencies = triggers(&scope, 2);
        let update = the(&currencies, "CREATE OR REPLACE FUNCTION \"tandem\".\"on_update_9\"");
        assert!(!update.contains("IS NOT DISTINCT FROM"), "{update}");
        assert!(!update.contains("'r', array_agg"), "no children to move: {update}");
        assert!(update.contains("SELECT _seq, _v, 'c', array_agg(n.\"code\") FROM tandem_new n HAVING count(*) > 0"), "{update}");
        assert!(!update.contains("tandem_old"), "{update}");
        let trigger = the(&currencies, "CREATE OR REPLACE TRIGGER \"tandem_9_update\"");
        assert!(trigger.contains("REFERENCING NEW TABLE AS tandem_new FOR EACH STATEMENT"), "{trigger}");
        let filtered = the(&orders, "CREATE OR REPLACE TRIGGER \"tandem_7_update\"");
        assert!(filtered.contains("REFERENCING OLD TABLE AS tandem_old NEW TABLE"), "filtered tables keep the old rows");
    }

    #[test]
    fn a_partitioned_table_finds_changed_keys_and_its_partitions_share_its_functions() {
        let mut schema = crm();
        schema.tables[2].partitioned = true;
        let ids = [7, 8, 9];
        let scope = Scope::new(&schema, &ids);
        let statements = triggers(&scope, 2);
        assert_eq!(
            the(&statements, "DROP TRIGGER IF EXISTS \"tandem_9_key\""),
            "DROP TRIGGER IF EXISTS \"tandem_9_key\" ON \"public\".\"currencies\""
        );
        let trigger = the(&statements, "CREATE OR REPLACE TRIGGER \"tandem_9_update\"");
        assert!(trigger.contains("REFERENCING OLD TABLE AS tandem_old NEW TABLE"), "{trigger}");
        let update = the(&statements, "CREATE OR REPLACE FUNCTION \"tandem\".\"on_update_9\"");
        assert!(
            update.contains("FROM tandem_old o WHERE NOT EXISTS (SELECT 1 FROM tandem_new n WHERE n.\"code\" = o.\"code\") HAVING"),
            "old keys missing from the new rows are deleted: {update}"
        );
        let truncate = the(&statements, "CREATE OR REPLACE FUNCTION \"tandem\".\"on_truncate_9\"");
        assert!(truncate.contains("EXECUTE 'INSERT INTO \"tandem\".\"exit_9\""), "{truncate}");
        assert!(truncate.contains("FROM ONLY ' || TG_RELID::regclass::text || ' o' USING _seq, _v;"), "{truncate}");
        let partition = partition_triggers(&scope, 2, "\"public\".\"currencies_eu\"");
        assert_eq!(partition.len(), 5, "four tracking triggers and the notifying one");
        assert!(
            the(&partition, "CREATE OR REPLACE TRIGGER \"tandem_9_notify\"").contains("ON \"public\".\"currencies_eu\" FOR EACH STATEMENT")
        );
        let update = the(&partition, "CREATE OR REPLACE TRIGGER \"tandem_9_update\"");
        assert!(update.contains("AFTER UPDATE ON \"public\".\"currencies_eu\" REFERENCING OLD TABLE"), "{update}");
        let truncate = the(&partition, "CREATE OR REPLACE TRIGGER \"tandem_9_truncate\"");
        assert!(truncate.ends_with("EXECUTE FUNCTION \"tandem\".\"on_truncate_9\"()"), "{truncate}");
        let attached = log_partition_rows(&scope, 2, "\"public\".\"currencies_eu\"", true);
        assert!(attached[0].contains("SELECT nextval('tandem.log_seq'), pg_current_xact_id(), 'c'"), "{}", attached[0]);
        assert!(attached[0].contains("FROM ONLY \"public\".\"currencies_eu\" o"), "{}", attached[0]);
        assert_eq!(log_partition_rows(&scope, 2, "x", false).len(), 2, "a detached partition's rows exit too");
    }

    #[test]
    fn every_event_has_a_function_and_a_trigger() {
        let schema = crm();
        let ids = [7, 8, 9];
        let scope = Scope::new(&schema, &ids);
        let statements = triggers(&scope, 2);
        for event in Event::ALL {
            the(&statements, &format!("CREATE OR REPLACE FUNCTION \"tandem\".\"on_{}_9\"", event.name()));
            the(&statements, &format!("CREATE OR REPLACE TRIGGER \"tandem_9_{}\"", event.name()));
        }
        assert!(
            the(&statements, "CREATE OR REPLACE TRIGGER \"tandem_9_truncate\"").contains("BEFORE TRUNCATE ON \"public\".\"currencies\"")
        );
        let key = the(&statements, "CREATE OR REPLACE TRIGGER \"tandem_9_key\"");
        assert!(
            key.contains("AFTER UPDATE ON \"public\".\"currencies\" FOR EACH ROW WHEN (OLD.\"code\" IS DISTINCT FROM NEW.\"code\")"),
            "{key}"
        );
        let notify = the(&statements, "CREATE OR REPLACE TRIGGER \"tandem_9_notify\"");
        assert!(notify.ends_with("FOR EACH STATEMENT EXECUTE FUNCTION \"tandem\".notify_change('crm')"), "{notify}");
        for name in trigger_names(9) {
            assert!(statements.iter().any(|s| s.starts_with(&format!("CREATE OR REPLACE TRIGGER \"{name}\" "))), "{name}");
        }
        assert_eq!(drop_trigger("\"public\".\"currencies\"", "tandem_9_key"), "DROP TRIGGER \"tandem_9_key\" ON \"public\".\"currencies\"");
        assert_eq!(drop_tracking(9).len(), 6);
    }

    #[test]
    fn a_key_that_may_change_its_text_is_watched_in_its_text_too() {
        let mut schema = crm();
        schema.tables[2].columns[0].ty = crate::types::LogicalType::Text;
        let ids = [7, 8, 9];
        let text = "ROW((OLD.\"code\"::text COLLATE \"C\")) IS DISTINCT FROM ROW((NEW.\"code\"::text COLLATE \"C\"))";
        let statements = triggers(&Scope::new(&schema, &ids), 2);
        let key = the(&statements, "CREATE OR REPLACE TRIGGER \"tandem_9_key\"");
        assert!(key.contains(&format!("WHEN (OLD.\"code\" IS DISTINCT FROM NEW.\"code\" OR {text})")), "{key}");
        // A partitioned table: only for a changed text, which never moves
        // a row; its update trigger finds changed values.
        schema.tables[2].partitioned = true;
        let statements = triggers(&Scope::new(&schema, &ids), 2);
        let key = the(&statements, "CREATE OR REPLACE TRIGGER \"tandem_9_key\"");
        assert!(key.contains(&format!("WHEN (NOT (OLD.\"code\" IS DISTINCT FROM NEW.\"code\") AND {text})")), "{key}");
        // A type with its own `=` (citext) is compared with it, by schema:
        // under `pg_catalog` alone, `=` would compare its texts.
        schema.tables[2].columns[0].pg_type = "ext.citext".into();
        schema.operators.insert("ext.citext".into(), "ext".into());
        let statements = triggers(&Scope::new(&schema, &ids), 2);
        let key = the(&statements, "CREATE OR REPLACE TRIGGER \"tandem_9_key\"");
        assert!(key.contains(&format!("WHEN (NOT (NOT (OLD.\"code\" OPERATOR(\"ext\".=) NEW.\"code\")) AND {text})")), "{key}");
        let update = the(&statements, "CREATE OR REPLACE FUNCTION \"tandem\".\"on_update_9\"");
        assert!(update.contains("WHERE n.\"code\" OPERATOR(\"ext\".=) o.\"code\""), "{update}");
        schema.tables[2].columns[0].pg_type = "text".into();
        // Integer keys: a partitioned table has no key trigger at all.
        schema.tables[2].columns[0].ty = crate::types::LogicalType::Int8;
        let statements = triggers(&Scope::new(&schema, &ids), 2);
        assert!(!statements.iter().any(|s| s.starts_with("CREATE OR REPLACE TRIGGER \"tandem_9_key\"")));
        the(&statements, "DROP TRIGGER IF EXISTS \"tandem_9_key\"");
    }
}
