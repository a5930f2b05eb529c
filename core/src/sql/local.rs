//! The SQLite side's SQL: user tables created from the server's schema, and
//! change tracking that is plain SQL (no registered function), so a write by
//! any SQLite program, even one that never loaded Tandem, is tracked.
//!
//! Per synced table (local id `n`):
//! - `tandem_log_n(tandem_seq, <key>, tandem_to_1, ...)`: one entry per local
//!   change of a key; `tandem_seq` (the rowid, kept from going back by
//!   [`keep_counter`]) is the change counter sent as `seq`; an UPDATE that
//!   changed the key logs the old key with the new one in `tandem_to_*`, so
//!   the upload sends the change as one move (`moved_from`);
//! - `tandem_base_n(<key>, tandem_version)`: the server version each row is based on,
//!   written only by sync;
//! - triggers append every change to the log; sync removes the entries its
//!   own writes made before its transaction commits.

use crate::ident::{quote_ident, quote_literal, TableName};
use crate::schema::TableSchema;
use crate::sql::{column_list, Dialect};

fn name(prefix: &str, id: i64) -> String {
    quote_ident(&format!("{prefix}_{id}"))
}

pub fn log_table(id: i64) -> String {
    quote_ident(&log_table_name(id))
}

pub fn base_table(id: i64) -> String {
    quote_ident(&base_table_name(id))
}

/// The log's name as SQLite's catalog holds it.
pub fn log_table_name(id: i64) -> String {
    format!("tandem_log_{id}")
}

/// The base versions' name as SQLite's catalog holds it.
pub fn base_table_name(id: i64) -> String {
    format!("tandem_base_{id}")
}

/// The user table, quoted, by its local name.
pub fn user_table(table: &TableSchema) -> String {
    quote_ident(&table.table_name().local_name())
}

/// A column each of [`METADATA`]'s tables has had since Tandem first made
/// it: a table of that name without it is a program's own.
pub const METADATA_MARKS: [(&str, &str); 6] = [
    ("tandem_scopes", "client_id"),
    ("tandem_tables", "acked_seq"),
    ("tandem_conflicts", "decision"),
    ("tandem_left_tables", "name"),
    ("tandem_rejected", "reason"),
    ("tandem_sync_writing", "writing"),
];

/// Tandem's own tables in a local file.
pub const METADATA: &str = "
CREATE TABLE IF NOT EXISTS tandem_scopes (
    scope TEXT PRIMARY KEY,
    schema TEXT NOT NULL,
    client_id TEXT NOT NULL,
    params TEXT,
    watermark TEXT,
    last_sync TEXT,
    replica_id TEXT,
    upload_id TEXT,
    echoes TEXT
);
CREATE TABLE IF NOT EXISTS tandem_tables (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    scope TEXT NOT NULL,
    name TEXT NOT NULL,
    acked_seq INTEGER NOT NULL DEFAULT 0,
    UNIQUE (scope, name)
);
CREATE TABLE IF NOT EXISTS tandem_conflicts (
    id INTEGER PRIMARY KEY,
    scope TEXT NOT NULL,
    table_name TEXT NOT NULL,
    key TEXT NOT NULL,
    kind TEXT NOT NULL,
    decision TEXT NOT NULL,
    server_row TEXT,
    client_row TEXT,
    row TEXT,
    reason TEXT,
    client_id TEXT,
    at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
-- Tables that left their scope (their tracking dropped, their rows kept):
-- if one comes back, its rows are the server's as they were then, and are
-- replaced by the server's, not sent up as new.
CREATE TABLE IF NOT EXISTS tandem_left_tables (
    scope TEXT NOT NULL,
    name TEXT NOT NULL,
    PRIMARY KEY (scope, name)
);
CREATE TABLE IF NOT EXISTS tandem_rejected (
    id INTEGER PRIMARY KEY,
    scope TEXT NOT NULL,
    table_name TEXT NOT NULL,
    key TEXT NOT NULL,
    row TEXT,
    kind TEXT NOT NULL,
    reason TEXT NOT NULL,
    at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    version TEXT,
    base TEXT
);
CREATE INDEX IF NOT EXISTS tandem_rejected_key ON tandem_rejected (scope, table_name, key);
-- A row while sync itself writes rows from the server (inside its own
-- transaction only, so no other connection ever sees it): the triggers
-- that fill a column's default leave those rows as the server sent them.
CREATE TABLE IF NOT EXISTS tandem_sync_writing (id INTEGER PRIMARY KEY, writing INTEGER);
";

/// Marks the transaction as sync's own writes (see `tandem_sync_writing`).
pub const BEGIN_SYNC_WRITES: &str = "INSERT OR IGNORE INTO tandem_sync_writing (id) VALUES (1)";
/// Names the table (by its tracking id, `?1`) sync writes rows of itself
/// from now on, NULL when none: what the file's own triggers and foreign
/// keys change meanwhile in another table is noted (see
/// [`local_only_triggers`]), sync's own writes are not.
pub const WRITING_TABLE: &str = "UPDATE tandem_sync_writing SET writing = ?1";
/// The [`WRITING_TABLE`] of a write whose effects in every table are
/// sync's own: undoing a refused key change (see [`move_back`]), whose
/// rows the file's own `ON UPDATE CASCADE` takes back to the server's
/// values, which are not the file's own changes (helper 83).
pub const EVERY_TABLE: i64 = -1;
/// Ends [`BEGIN_SYNC_WRITES`] before the transaction commits.
pub const END_SYNC_WRITES: &str = "DELETE FROM tandem_sync_writing";

/// Bookkeeping columns an earlier Tandem named without the prefix (a key
/// column of the user's may have the bare name): (table prefix, old, new).
pub const RENAMED_COLUMNS: [(&str, &str, &str); 2] = [("tandem_log_", "seq", "tandem_seq"), ("tandem_base_", "version", "tandem_version")];

/// Columns files made by an earlier Tandem lack, with their definitions:
/// [`METADATA`] creates them in new files, opening an older file adds them.
pub const ADDED_COLUMNS: [(&str, &str, &str); 12] = [
    // The file's own id: every file is a replica of its partition.
    ("tandem_scopes", "replica_id", "TEXT"),
    // The id of the upload in flight, kept until its answer is recorded.
    ("tandem_scopes", "upload_id", "TEXT"),
    // The batch sent under it and not answered yet (JSON): after a lost
    // answer it is sent again as it was, before anything newer.
    ("tandem_scopes", "in_flight", "TEXT"),
    // Versions of its recorded uploads its watermark does not cover yet
    // (a JSON array): rows they left as sent are not sent back to it.
    ("tandem_scopes", "echoes", "TEXT"),
    // A pull from NULL under way that replaces the file's server state:
    // rows it does not bring go when it completes (see `sweep`).
    ("tandem_scopes", "resync", "INTEGER"),
    // The id of the server (and database) the file syncs the scope with:
    // its watermark and versions mean nothing to another.
    ("tandem_scopes", "server_id", "TEXT"),
    // The last `sync_verify`'s report (JSON), for `sync_status`.
    ("tandem_scopes", "last_verify", "TEXT"),
    // The watermark before a pull that kept the file's row beside a
    // server delete (an unsent change of the key): until the next upload
    // goes through, uploads say they received no more than it.
    ("tandem_scopes", "seen_until", "TEXT"),
    // The versions of the deletes the file did not take (JSON,
    // `seen.kept`): a server that knows them judges inserts of their keys
    // by them, every other key by the watermark. NULL with `seen_until`
    // set: a hold that could not name them, which stays whole.
    ("tandem_scopes", "kept_deletes", "TEXT"),
    // A server row the file could not store (kind `not_stored`): its
    // version, and the file's base version of the key when it came.
    ("tandem_rejected", "version", "TEXT"),
    ("tandem_rejected", "base", "TEXT"),
    // The table sync writes rows of itself (see `WRITING_TABLE`).
    ("tandem_sync_writing", "writing", "INTEGER"),
];

/// `CREATE TABLE` for a table of the server's schema, with SQLite storage
/// types that keep every value exact (see `types::LogicalType::sqlite_decl`).
pub fn create_table(table: &TableSchema) -> String {
    let mut columns: Vec<String> = table
        .columns
        .iter()
        .map(|c| {
            let null = if c.takes_null() { "" } else { " NOT NULL" };
            let default = c.default.as_deref().map(|d| format!(" DEFAULT {d}")).unwrap_or_default();
            format!("{} {}{null}{default}", quote_ident(&c.name), c.ty.sqlite_decl())
        })
        .collect();
    columns.push(format!("PRIMARY KEY ({})", column_list(None, &table.primary_key)));
    format!("CREATE TABLE IF NOT EXISTS {} ({})", user_table(table), columns.join(", "))
}

/// Adds a column the server's schema gained (nullable: rows that exist get
/// their values from the server's next changes). SQLite adds a column only
/// with a constant default.
pub fn add_column(table: &TableSchema, column: usize) -> String {
    let c = &table.columns[column];
    // The rows the file holds get what the server's rows held when the
    // column came (its fill), or else the default: their values then come
    // with the pull.
    let constant = c.fill.as_deref().or(c.default.as_deref().filter(|d| !d.starts_with('('))).filter(|d| *d != "NULL");
    let default = constant.map(|d| format!(" DEFAULT {d}")).unwrap_or_default();
    format!("ALTER TABLE {} ADD COLUMN {} {}{default}", user_table(table), quote_ident(&c.name), c.ty.sqlite_decl())
}

/// The name prefix of table `id`'s triggers that fill column defaults.
pub fn fill_trigger_prefix(id: i64) -> String {
    format!("tandem_{id}_fill_")
}

/// A trigger that gives a row inserted without column `column` the
/// column's default, for a column the file added to an existing table
/// with a default SQLite cannot add that way (one computed per row: the
/// time, a random uuid). Rows sync writes keep what the server sent; an
/// insert that writes NULL there explicitly gets the default too (SQLite
/// cannot tell it from one that left the column out).
pub fn fill_default(table: &TableSchema, id: i64, column: usize) -> Option<String> {
    let c = &table.columns[column];
    let default = c.default.as_deref()?;
    let quoted = quote_ident(&c.name);
    let key = each(&table.primary_key, AND, |k| format!("{k} = NEW.{k}"));
    Some(format!(
        "CREATE TRIGGER {} AFTER INSERT ON {t} WHEN NEW.{quoted} IS NULL AND NOT EXISTS (SELECT 1 FROM tandem_sync_writing) \
         BEGIN UPDATE {t} SET {quoted} = {default} WHERE {key}; END",
        quote_ident(&format!("{}{}", fill_trigger_prefix(id), c.name)),
        t = user_table(table),
    ))
}

/// The log's columns for the new key of a key change, by key position
/// (`tandem_to_1`, ...): a key column may not start with `tandem_`.
pub fn moved_to_columns(table: &TableSchema) -> Vec<String> {
    (1..=table.primary_key.len()).map(|i| format!("tandem_to_{i}")).collect()
}

fn moved_to_definitions(table: &TableSchema) -> Vec<String> {
    moved_to_columns(table).iter().zip(table.key_columns()).map(|(name, c)| format!("{name} {}", c.ty.sqlite_decl())).collect()
}

/// Adds the `tandem_to_*` columns to the log of a file made before key
/// changes were logged as moves (its triggers are then made again).
pub fn add_moved_to_columns(table: &TableSchema, id: i64) -> Vec<String> {
    moved_to_definitions(table).iter().map(|d| format!("ALTER TABLE {} ADD COLUMN {d}", log_table(id))).collect()
}

/// Log and base tables of table `id`.
pub fn create_tracking(table: &TableSchema, id: i64) -> Vec<String> {
    let key_defs: Vec<String> = table.key_columns().iter().map(|c| format!("{} {}", quote_ident(&c.name), c.ty.sqlite_decl())).collect();
    let keys = column_list(None, &table.primary_key);
    vec![
        format!(
            "CREATE TABLE IF NOT EXISTS {} (tandem_seq INTEGER PRIMARY KEY, {}, {})",
            log_table(id),
            key_defs.join(", "),
            moved_to_definitions(table).join(", ")
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {} ({}, tandem_version TEXT NOT NULL, PRIMARY KEY ({keys})) WITHOUT ROWID",
            base_table(id),
            key_defs.join(", ")
        ),
    ]
}

fn trigger(id: i64, event: &str) -> String {
    quote_ident(&format!("tandem_{id}_{event}"))
}

const EVENTS: [&str; 6] = ["insert", "update", "key", "delete", "keyless_insert", "keyless_update"];

/// `DROP <kind> IF EXISTS` of Tandem's object `name` in the file itself:
/// unqualified, SQLite would look for it in every attached database too,
/// and drop a program's table of that name there when the file has none.
pub fn drop_in_main(kind: &str, name: &str) -> String {
    format!("DROP {kind} IF EXISTS main.{name}")
}

/// Drops the tracking triggers of table `id`.
pub fn drop_triggers(id: i64) -> Vec<String> {
    EVENTS.iter().map(|e| drop_in_main("TRIGGER", &trigger(id, e))).collect()
}

/// The tracking triggers, replaced whole on every provisioning. They log
/// every change; sync's own writes are taken out of the log again in the
/// same transaction (see `tandem_local`'s `applying`), so the triggers stay
/// one plain INSERT per row. A changed key is logged by its own trigger,
/// which fires only for UPDATEs that set a key column.
pub fn triggers(table: &TableSchema, id: i64) -> Vec<String> {
    let t = user_table(table);
    let log = log_table(id);
    let keys = column_list(None, &table.primary_key);
    let key_changed = each(&table.primary_key, OR, |k| format!("OLD.{k} IS NOT NEW.{k}"));
    let mut out = drop_triggers(id);
    out.push(format!(
        "CREATE TRIGGER {} AFTER INSERT ON {t} BEGIN INSERT INTO {log} ({keys}) VALUES ({}); END",
        trigger(id, "insert"),
        row_key(table, "NEW")
    ));
    out.push(format!(
        "CREATE TRIGGER {} AFTER UPDATE ON {t} BEGIN INSERT INTO {log} ({keys}) VALUES ({}); END",
        trigger(id, "update"),
        row_key(table, "NEW")
    ));
    out.push(format!(
        "CREATE TRIGGER {} AFTER UPDATE OF {keys} ON {t} WHEN {key_changed} BEGIN INSERT INTO {log} ({keys}, {}) VALUES ({}, {}); END",
        trigger(id, "key"),
        moved_to_columns(table).join(", "),
        row_key(table, "OLD"),
        row_key(table, "NEW")
    ));
    out.push(format!(
        "CREATE TRIGGER {} AFTER DELETE ON {t} BEGIN INSERT INTO {log} ({keys}) VALUES ({}); END",
        trigger(id, "delete"),
        row_key(table, "OLD")
    ));
    out
}

/// Triggers that refuse a row without a whole key where it is written: a
/// table the file held before it synced it may take NULL in a key column
/// (SQLite allows it), no such row can reach the server, and the log
/// would take its entry for a counter mark (see [`is_change`]). Only for
/// such tables: those Tandem makes declare their keys NOT NULL.
pub fn refuse_keyless(table: &TableSchema, id: i64) -> Vec<String> {
    let t = user_table(table);
    let keys = column_list(None, &table.primary_key);
    let keyless = each(&table.primary_key, OR, |k| format!("NEW.{k} IS NULL"));
    let message = quote_literal(&format!(
        "tandem: {} needs a value in every key column ({}): the server cannot take a row without one",
        table.name,
        table.primary_key.join(", ")
    ));
    vec![
        format!(
            "CREATE TRIGGER {} BEFORE INSERT ON {t} WHEN {keyless} BEGIN SELECT RAISE(ABORT, {message}); END",
            trigger(id, "keyless_insert")
        ),
        format!(
            "CREATE TRIGGER {} BEFORE UPDATE OF {keys} ON {t} WHEN {keyless} BEGIN SELECT RAISE(ABORT, {message}); END",
            trigger(id, "keyless_update")
        ),
    ]
}

/// The name prefix of table `id`'s triggers that log the rows a REPLACE
/// takes out (see [`log_replaced`]).
pub fn replaced_trigger_prefix(id: i64) -> String {
    format!("tandem_{id}_replaced_")
}

/// A column of a unique index, as the index compares it.
#[derive(Debug, Clone)]
pub struct IndexColumn {
    pub name: String,
    /// The collation the index compares it by (`BINARY`, `NOCASE`, ...).
    pub collation: String,
    /// A generated column: no `UPDATE OF` names it, so the update trigger
    /// of its index fires on every update.
    pub generated: bool,
}

/// Triggers that note the rows a write may take out by SQLite's REPLACE
/// conflict resolution on unique index `n` over `columns` (not the key):
/// SQLite deletes them without firing delete triggers (unless the
/// connection turned `recursive_triggers` on), so their deletes would
/// never be sent. Values are compared as the index compares them (its
/// collation). A BEFORE trigger cannot know whether the write will take
/// the rows out (`OR IGNORE` leaves them, and so does a partial index's
/// `WHERE`), so it notes their keys in `tandem_replaced_<id>`, and the
/// next round logs the delete of each noted row that is gone (see
/// [`flush_replaced`]); a write that fails takes its notes with it. Sync's
/// own writes are left out, as by the fill triggers.
pub fn log_replaced(table: &TableSchema, id: i64, n: usize, columns: &[IndexColumn]) -> Vec<String> {
    let t = user_table(table);
    let keys = column_list(None, &table.primary_key);
    let collides = columns
        .iter()
        .map(|c| format!("{0} = NEW.{0} COLLATE {1}", quote_ident(&c.name), quote_ident(&c.collation)))
        .collect::<Vec<_>>()
        .join(AND);
    let other = each(&table.primary_key, AND, |k| format!("{k} IS NEW.{k}"));
    let body = format!(
        "WHEN NOT EXISTS (SELECT 1 FROM tandem_sync_writing) BEGIN INSERT INTO {} ({keys}) SELECT {keys} FROM {t} \
         WHERE {collides} AND NOT ({other}); END",
        replaced_table(id)
    );
    let name = |event: &str| quote_ident(&format!("{}{n}_{event}", replaced_trigger_prefix(id)));
    let names: Vec<String> = columns.iter().map(|c| c.name.clone()).collect();
    let update = match columns.iter().any(|c| c.generated) {
        true => "UPDATE".to_string(),
        false => format!("UPDATE OF {}", column_list(None, &names)),
    };
    vec![
        format!("CREATE TRIGGER {} BEFORE INSERT ON {t} {body}", name("insert")),
        format!("CREATE TRIGGER {} BEFORE {update} ON {t} {body}", name("update")),
    ]
}

/// Where the REPLACE guards of table `id` note the keys of rows a write
/// may take out (see [`log_replaced`]).
pub fn replaced_table(id: i64) -> String {
    quote_ident(&replaced_table_name(id))
}

/// [`replaced_table`] as SQLite's catalog holds it.
pub fn replaced_table_name(id: i64) -> String {
    format!("tandem_replaced_{id}")
}

/// Makes [`replaced_table`] (keys may repeat: it is read whole and emptied).
pub fn create_replaced(table: &TableSchema, id: i64) -> String {
    let key_defs: Vec<String> = table.key_columns().iter().map(|c| format!("{} {}", quote_ident(&c.name), c.ty.sqlite_decl())).collect();
    format!("CREATE TABLE IF NOT EXISTS {} ({})", replaced_table(id), key_defs.join(", "))
}

/// Whether the REPLACE guards of table `id` noted a key.
pub fn has_replaced(id: i64) -> String {
    format!("SELECT EXISTS (SELECT 1 FROM {})", replaced_table(id))
}

/// Logs the delete of each row the guards noted that the table no longer
/// has (a REPLACE took it out), then forgets the notes. A noted row still
/// there was not taken out: it is no change.
pub fn flush_replaced(table: &TableSchema, id: i64) -> [String; 2] {
    let keys = column_list(None, &table.primary_key);
    [
        format!(
            "INSERT INTO {log} ({keys}) SELECT DISTINCT {c_keys} FROM {noted} c WHERE NOT EXISTS (SELECT 1 FROM {user} r WHERE {same})",
            log = log_table(id),
            noted = replaced_table(id),
            user = user_table(table),
            c_keys = column_list(Some("c"), &table.primary_key),
            same = crate::sql::columns_equal("r", &table.primary_key, "c", &table.primary_key),
        ),
        format!("DELETE FROM {}", replaced_table(id)),
    ]
}

/// Logs the delete of each row the file's base versions hold a key of but
/// the table no longer has, and whose delete the log does not hold: rows a
/// REPLACE took out on a unique index before [`log_replaced`] watched it.
/// At rest a base key without a row is a local delete not yet
/// acknowledged, which the log holds already (a second entry of a key is
/// harmless: an upload reads each key's latest).
pub fn log_vanished(table: &TableSchema, id: i64) -> String {
    let keys = column_list(None, &table.primary_key);
    format!(
        "INSERT INTO {log} ({keys}) SELECT {b_keys} FROM {base} b WHERE NOT EXISTS (SELECT 1 FROM {user} r WHERE {in_table}) \
         AND NOT EXISTS (SELECT 1 FROM {log} l WHERE {in_log})",
        log = log_table(id),
        base = base_table(id),
        user = user_table(table),
        b_keys = column_list(Some("b"), &table.primary_key),
        in_table = crate::sql::columns_equal("r", &table.primary_key, "b", &table.primary_key),
        in_log = crate::sql::columns_equal("l", &table.primary_key, "b", &table.primary_key),
    )
}

/// The rows of a table whose key holds a NULL, every synced column (see
/// [`refuse_keyless`]).
pub fn keyless_rows(table: &TableSchema) -> String {
    let keyless = each(&table.primary_key, OR, |k| format!("{k} IS NULL"));
    format!("SELECT {} FROM {} WHERE {keyless}", column_list(None, &table.column_names()), user_table(table))
}

/// A trigger row's key columns (`NEW."id", NEW."k"`), `row` being `NEW`
/// or `OLD`.
fn row_key(table: &TableSchema, row: &str) -> String {
    each(&table.primary_key, ", ", |k| format!("{row}.{k}"))
}

const AND: &str = " AND ";
const OR: &str = " OR ";

/// Each of `columns`, quoted, put in `form`, joined by `join`: the shape
/// of every condition over a key or an index here.
fn each(columns: &[String], join: &str, form: impl Fn(&str) -> String) -> String {
    columns.iter().map(|c| form(&quote_ident(c))).collect::<Vec<_>>().join(join)
}

/// What of a table that left its scope the file notes: the keys written
/// since (`tandem_left_<table>`, one row per key, so it stays as small as
/// the table), by triggers of their own. If the table comes back, its rows
/// are replaced by the server's, and those keys' rows are kept aside
/// first. The names come from the table's, not its id: a table that left
/// no longer has one.
pub fn written_while_left(table: &TableSchema) -> String {
    quote_ident(&written_while_left_name(table))
}

/// [`written_while_left`] unquoted, as `pragma_table_info` takes it.
pub fn written_while_left_name(table: &TableSchema) -> String {
    left_unquoted(&table.table_name(), "")
}

fn left_unquoted(table: &TableName, event: &str) -> String {
    format!("tandem_left_{}{event}", table.local_name())
}

fn left_name(table: &TableName, event: &str) -> String {
    quote_ident(&left_unquoted(table, event))
}

const LEFT_EVENTS: [&str; 4] = ["_insert", "_update", "_key", "_delete"];

/// Starts noting the keys written to a table that left its scope.
pub fn note_left(table: &TableSchema) -> Vec<String> {
    let t = user_table(table);
    let written = written_while_left(table);
    let key_defs: Vec<String> = table.key_columns().iter().map(|c| format!("{} {}", quote_ident(&c.name), c.ty.sqlite_decl())).collect();
    let keys = column_list(None, &table.primary_key);
    let name = table.table_name();
    let mut out = forget_left(&name);
    out.push(format!("CREATE TABLE {written} ({}, PRIMARY KEY ({keys})) WITHOUT ROWID", key_defs.join(", ")));
    let note = |event: &str, when: &str, row: &str| {
        format!(
            "CREATE TRIGGER {} AFTER {when} ON {t} BEGIN INSERT OR IGNORE INTO {written} ({keys}) VALUES ({}); END",
            left_name(&name, event),
            row_key(table, row)
        )
    };
    out.push(note("_insert", "INSERT", "NEW"));
    out.push(note("_update", "UPDATE", "NEW"));
    out.push(note("_key", &format!("UPDATE OF {keys}"), "OLD"));
    out.push(note("_delete", "DELETE", "OLD"));
    out
}

/// The keys written to a table while it was out of its scope.
pub fn written_keys(table: &TableSchema) -> String {
    format!("SELECT {} FROM {}", column_list(None, &table.primary_key), written_while_left(table))
}

/// Stops noting the keys written to a table that left its scope.
pub fn forget_left(table: &TableName) -> Vec<String> {
    let mut out: Vec<String> = LEFT_EVENTS.iter().map(|e| drop_in_main("TRIGGER", &left_name(table, e))).collect();
    out.push(drop_in_main("TABLE", &left_name(table, "")));
    out
}

/// Where table `id` keeps, per row, the values the server holds of the
/// columns the file changed on its own while sync wrote (its own foreign
/// key's `SET NULL`, a trigger of its own): what stays on the device (see
/// `tandem_local`'s `applying`) must not go up with the row's next local
/// edit, which sends the whole row. Two entries per row: `tandem_left` 0
/// holds the values to send (the row before the file changed it), 1 the
/// values the file left; an upload sends the first for each column that
/// still holds the second. Value columns are named `tandem_v_<column>`
/// and have no type, so each keeps the value as the row held it; values
/// are compared byte for byte (`COLLATE BINARY`), whatever the column's
/// collation (under `NOCASE` the program's `'A'` over `'a'` would read as
/// no edit).
pub fn local_only_table(id: i64) -> String {
    quote_ident(&local_only_table_name(id))
}

/// [`local_only_table`] as SQLite's catalog holds it.
pub fn local_only_table_name(id: i64) -> String {
    format!("tandem_local_only_{id}")
}

/// Whether a table has columns besides its key: one without has nothing
/// the file could change in a row it keeps, and no [`local_only_table`].
pub fn has_values(table: &TableSchema) -> bool {
    table.columns.len() > table.primary_key.len()
}

fn value_columns(table: &TableSchema) -> impl Iterator<Item = &str> {
    table.columns.iter().map(|c| c.name.as_str()).filter(|c| !table.primary_key.iter().any(|k| k == c))
}

/// The value columns [`local_only_table`] has for `table`, by name
/// ([`local_only_column`]), unquoted.
pub fn local_only_columns(table: &TableSchema) -> Vec<String> {
    value_columns(table).map(local_only_column).collect()
}

/// [`local_only_columns`], quoted.
fn noted(table: &TableSchema) -> Vec<String> {
    value_columns(table).map(|c| quote_ident(&local_only_column(c))).collect()
}

/// Drops both entries of each row whose values to send equal what the
/// file left (nothing to restore), of the rows `condition` (over `s`, the
/// entry to send) names too.
fn forget_equal(table: &TableSchema, id: i64, condition: &str) -> String {
    let lo = local_only_table(id);
    let equal: Vec<String> = noted(table).iter().map(|v| format!("s.{v} IS a.{v}")).collect();
    format!(
        "DELETE FROM {lo} WHERE ({}) IN (SELECT {} FROM {lo} s JOIN {lo} a ON {} AND a.tandem_left = 1 \
         WHERE s.tandem_left = 0 AND {condition} AND {})",
        column_list(None, &table.primary_key),
        column_list(Some("s"), &table.primary_key),
        crate::sql::columns_equal("a", &table.primary_key, "s", &table.primary_key),
        equal.join(AND)
    )
}

/// The prefix of the value columns' names in [`local_only_table`].
pub const LOCAL_ONLY_VALUE_PREFIX: &str = "tandem_v_";

/// The name of a column's value in [`local_only_table`].
pub fn local_only_column(column: &str) -> String {
    format!("{LOCAL_ONLY_VALUE_PREFIX}{column}")
}

/// Makes [`local_only_table`] of a table with [`has_values`]; columns the
/// server's schema gained since come with [`add_local_only_column`].
pub fn create_local_only(table: &TableSchema, id: i64) -> String {
    let key_defs: Vec<String> = table.key_columns().iter().map(|c| format!("{} {}", quote_ident(&c.name), c.ty.sqlite_decl())).collect();
    let values = noted(table);
    format!(
        "CREATE TABLE IF NOT EXISTS {} ({}, tandem_left INTEGER NOT NULL, tandem_fresh INTEGER NOT NULL DEFAULT 0, {}, \
         PRIMARY KEY ({}, tandem_left)) WITHOUT ROWID",
        local_only_table(id),
        key_defs.join(", "),
        values.join(", "),
        column_list(None, &table.primary_key)
    )
}

/// Adds value column `name` ([`local_only_column`]) to
/// [`local_only_table`] (its entries hold NULL in it on both sides:
/// nothing of it to restore).
pub fn add_local_only_column(id: i64, name: &str) -> String {
    format!("ALTER TABLE {} ADD COLUMN {}", local_only_table(id), quote_ident(name))
}

/// Drops value column `name` from [`local_only_table`].
pub fn drop_local_only_column(id: i64, name: &str) -> String {
    format!("ALTER TABLE {} DROP COLUMN {}", local_only_table(id), quote_ident(name))
}

fn local_only_trigger(id: i64, event: &str) -> String {
    quote_ident(&local_only_trigger_name(id, event))
}

/// A trigger of [`local_only_triggers`] as SQLite's catalog holds it
/// (`delete`, `moved`; `update` in a file an earlier Tandem made, and
/// `noting`, [`local_only_noting`]'s name in `temp`).
pub fn local_only_trigger_name(id: i64, event: &str) -> String {
    format!("tandem_{id}_local_only_{event}")
}

/// Drops the triggers that fill [`local_only_table`]: the file's (`update`
/// only in a file an earlier Tandem made) and this connection's
/// [`local_only_noting`].
pub fn drop_local_only_triggers(id: i64) -> Vec<String> {
    let mut out: Vec<String> = ["update", "delete", "moved"].iter().map(|e| drop_in_main("TRIGGER", &local_only_trigger(id, e))).collect();
    out.push(stop_local_only_noting(id));
    out
}

/// [`local_only_noting`]'s name, in `temp`.
pub fn local_only_noting_name(id: i64) -> String {
    local_only_trigger_name(id, "noting")
}

/// Drops this connection's [`local_only_noting`] of table `id`, if any.
pub fn stop_local_only_noting(id: i64) -> String {
    format!("DROP TRIGGER IF EXISTS temp.{}", quote_ident(&local_only_noting_name(id)))
}

/// `present`: whether this connection has [`local_only_noting`] of table
/// `?1` (its name).
pub const LOCAL_ONLY_NOTING: &str = "SELECT EXISTS (SELECT 1 FROM sqlite_temp_master WHERE type = 'trigger' AND name = ?1) AS present";

/// The file's triggers that keep [`local_only_table`] in step, made again
/// whole: a row deleted or moved to another key takes its entries along,
/// whoever does it, and (while sync writes) its base version. They stay
/// while a large batch silences the log's triggers. What the file changes
/// on its own while sync writes is noted by [`local_only_noting`].
pub fn local_only_triggers(table: &TableSchema, id: i64) -> Vec<String> {
    let t = user_table(table);
    let lo = local_only_table(id);
    let keys = column_list(None, &table.primary_key);
    let at = |row: &str| each(&table.primary_key, AND, |k| format!("{k} = {row}.{k}"));
    let mut out = drop_local_only_triggers(id);
    // A row the file removes on its own while sync writes loses its base
    // version too: a base key without a row is a local delete to the
    // round that looks for rows a `REPLACE` took out (see
    // [`log_vanished`]), which would send it up. Sync's own deletes drop
    // the base themselves.
    let unbased = format!("DELETE FROM {} WHERE {} AND EXISTS (SELECT 1 FROM tandem_sync_writing);", base_table(id), at("OLD"));
    // So does the old key of a row whose key the file changes on its own
    // (`ON UPDATE CASCADE` into a key column); sync changes a key by an
    // update only to undo a refused key change, at a key without a base
    // (see [`move_back`]).
    let key_changed = each(&table.primary_key, OR, |k| format!("OLD.{k} IS NOT NEW.{k}"));
    if !has_values(table) {
        out.push(format!("CREATE TRIGGER {} AFTER DELETE ON {t} BEGIN {unbased} END", local_only_trigger(id, "delete")));
        out.push(format!(
            "CREATE TRIGGER {} AFTER UPDATE OF {keys} ON {t} WHEN {key_changed} BEGIN {unbased} END",
            local_only_trigger(id, "moved")
        ));
        return out;
    }
    out.push(format!(
        "CREATE TRIGGER {} AFTER DELETE ON {t} BEGIN DELETE FROM {lo} WHERE {}; {unbased} END",
        local_only_trigger(id, "delete"),
        at("OLD")
    ));
    // The new key too: `UPDATE OR REPLACE` onto a noted key takes that
    // row out without a delete trigger.
    out.push(format!(
        "CREATE TRIGGER {} AFTER UPDATE OF {keys} ON {t} WHEN {key_changed} BEGIN DELETE FROM {lo} WHERE {}; \
         DELETE FROM {lo} WHERE {}; {unbased} END",
        local_only_trigger(id, "moved"),
        at("OLD"),
        at("NEW")
    ));
    out
}

/// The trigger that notes, while sync writes, an update the file makes on
/// its own (not one of sync's, see [`WRITING_TABLE`]): the row as it was.
/// An entry from an earlier round is first brought up to date: a column
/// the program changed since holds the program's value to send. Sync's own
/// update of a row replaces what was noted of it (the row is the server's
/// again). A `TEMP` trigger that sync's transaction makes and drops
/// (`None` for a table with nothing but its key): only that transaction
/// writes while sync writes, so a program's own updates never pay for it.
pub fn local_only_noting(table: &TableSchema, id: i64) -> Option<String> {
    if !has_values(table) {
        return None;
    }
    let lo = local_only_table(id);
    let keys = column_list(None, &table.primary_key);
    let at = |row: &str| each(&table.primary_key, AND, |k| format!("{k} = {row}.{k}"));
    let values = noted(table);
    let olds: Vec<String> = value_columns(table).map(|c| format!("OLD.{}", quote_ident(c))).collect();
    let left =
        format!("(SELECT {{v}} FROM {lo} a WHERE {} AND a.tandem_left = 1)", each(&table.primary_key, AND, |k| format!("a.{k} = OLD.{k}")));
    let catch_up: Vec<String> = values
        .iter()
        .zip(&olds)
        .map(|(v, old)| {
            format!("{v} = CASE WHEN {old} IS {} COLLATE BINARY THEN {v} ELSE {old} END", left.replace("{v}", &format!("a.{v}")))
        })
        .collect();
    let direct = format!("EXISTS (SELECT 1 FROM tandem_sync_writing WHERE writing IN ({id}, {EVERY_TABLE}))");
    Some(format!(
        "CREATE TEMP TRIGGER IF NOT EXISTS {} AFTER UPDATE ON main.{} WHEN EXISTS (SELECT 1 FROM tandem_sync_writing) BEGIN \
         DELETE FROM {lo} WHERE {} AND {direct}; \
         UPDATE {lo} SET {}, tandem_fresh = 1 WHERE {} AND tandem_left = 0 AND tandem_fresh = 0 AND NOT {direct}; \
         INSERT OR IGNORE INTO {lo} ({keys}, tandem_left, tandem_fresh, {}) SELECT {}, 0, 1, {} WHERE NOT {direct}; END",
        quote_ident(&local_only_noting_name(id)),
        user_table(table),
        at("NEW"),
        catch_up.join(", "),
        at("OLD"),
        values.join(", "),
        row_key(table, "OLD"),
        olds.join(", "),
    ))
}

/// Notes the row of key `?n+1..` (`n` the length of `columns`) as one
/// whose server state the file refused: the values to send are the
/// server's (`?1..?n`, of `columns`; the row's own where the server's row
/// lacks the column), the values the file left are the row's.
pub fn note_server_row(table: &TableSchema, id: i64, columns: &[String]) -> [String; 2] {
    let lo = local_only_table(id);
    let keys = column_list(None, &table.primary_key);
    let values = noted(table);
    let server: Vec<String> = value_columns(table)
        .map(|c| match columns.iter().position(|s| s == c) {
            Some(i) => format!("?{}", i + 1),
            None => format!("r.{}", quote_ident(c)),
        })
        .collect();
    let r_values: Vec<String> = value_columns(table).map(|c| format!("r.{}", quote_ident(c))).collect();
    let at_key = table
        .primary_key
        .iter()
        .enumerate()
        .map(|(i, k)| format!("r.{} = ?{}", quote_ident(k), columns.len() + i + 1))
        .collect::<Vec<_>>()
        .join(AND);
    let note = |left: u8, from: &[String]| {
        format!(
            "INSERT OR REPLACE INTO {lo} ({keys}, tandem_left, tandem_fresh, {}) SELECT {}, {left}, 0, {} FROM {} r WHERE {at_key}",
            values.join(", "),
            column_list(Some("r"), &table.primary_key),
            from.join(", "),
            user_table(table),
        )
    };
    [note(0, &server), note(1, &r_values)]
}

/// Whether [`local_only_table`] notes anything.
pub fn local_only_any(id: i64) -> String {
    format!("SELECT EXISTS (SELECT 1 FROM {})", local_only_table(id))
}

/// Brings [`local_only_table`] up to date with what the program wrote
/// since: a column holding another value than the file left is the
/// program's, and its value is what to send from now on, whatever the
/// program writes next (the server got it, or gets it with the next
/// upload). Without this, a column the program set and then set back to
/// the value the file left would send the value from before again.
pub fn fold_local_only(table: &TableSchema, id: i64) -> [String; 3] {
    let lo = local_only_table(id);
    let same = |l: &str, r: &str| crate::sql::columns_equal(l, &table.primary_key, r, &table.primary_key);
    let user = user_table(table);
    let current = |c: &str| format!("(SELECT r.{} FROM {user} r WHERE {})", quote_ident(c), same("r", &lo));
    let sent: Vec<String> = value_columns(table)
        .map(|c| {
            let v = quote_ident(&local_only_column(c));
            format!(
                "{v} = CASE WHEN {now} IS NOT (SELECT a.{v} FROM {lo} a WHERE {at} AND a.tandem_left = 1) COLLATE BINARY THEN {now} ELSE {v} END",
                now = current(c),
                at = same("a", &lo)
            )
        })
        .collect();
    let left: Vec<String> = value_columns(table).map(|c| format!("{} = {}", quote_ident(&local_only_column(c)), current(c))).collect();
    [
        format!("UPDATE {lo} SET {} WHERE tandem_left = 0", sent.join(", ")),
        format!("UPDATE {lo} SET {} WHERE tandem_left = 1", left.join(", ")),
        forget_equal(table, id, "TRUE"),
    ]
}

/// Whether sync's transaction noted a row in [`local_only_table`].
pub fn local_only_noted(id: i64) -> String {
    format!("SELECT EXISTS (SELECT 1 FROM {} WHERE tandem_fresh = 1)", local_only_table(id))
}

/// Settles what sync's transaction noted in [`local_only_table`]: entries
/// of rows gone go; the others get the values the file left; an entry
/// whose sides are equal has nothing to restore.
pub fn settle_local_only(table: &TableSchema, id: i64) -> [String; 4] {
    let lo = local_only_table(id);
    let keys = column_list(None, &table.primary_key);
    let values = noted(table);
    let same = |l: &str, r: &str| crate::sql::columns_equal(l, &table.primary_key, r, &table.primary_key);
    let r_values: Vec<String> = value_columns(table).map(|c| format!("r.{}", quote_ident(c))).collect();
    [
        format!(
            "DELETE FROM {lo} WHERE NOT EXISTS (SELECT 1 FROM {user} r WHERE {at_row}) \
             OR (tandem_left = 1 AND NOT EXISTS (SELECT 1 FROM {lo} s WHERE {at_send} AND s.tandem_left = 0))",
            user = user_table(table),
            at_row = same("r", &lo),
            at_send = same("s", &lo),
        ),
        format!(
            "INSERT OR REPLACE INTO {lo} ({keys}, tandem_left, tandem_fresh, {}) SELECT {}, 1, 0, {} FROM {lo} s JOIN {user} r ON {} \
             WHERE s.tandem_left = 0 AND s.tandem_fresh = 1",
            values.join(", "),
            column_list(Some("r"), &table.primary_key),
            r_values.join(", "),
            same("r", "s"),
            user = user_table(table),
        ),
        forget_equal(table, id, "s.tandem_fresh = 1"),
        format!("UPDATE {lo} SET tandem_fresh = 0 WHERE tandem_fresh = 1"),
    ]
}

/// Drops triggers and tracking of table `id`; the user table stays.
pub fn drop_tracking(id: i64) -> Vec<String> {
    let mut out = drop_triggers(id);
    out.push(drop_in_main("TABLE", &log_table(id)));
    out.push(drop_in_main("TABLE", &base_table(id)));
    out.push(drop_in_main("TABLE", &replaced_table(id)));
    out.extend(drop_local_only_triggers(id));
    out.push(drop_in_main("TABLE", &local_only_table(id)));
    out.push(drop_sweep(id));
    out
}

/// A log entry that is a change of a key the server can take: a whole
/// key. Counter marks (see [`keep_counter`]) have no key at all; a row
/// without a whole key (possible only in a table the file held before it
/// synced it, see [`refuse_keyless`]) never existed for the server, so a
/// move away from such a key is no change either (the new key's entry is).
fn is_change(table: &TableSchema) -> String {
    each(&table.primary_key, AND, |k| format!("{k} IS NOT NULL"))
}

/// A keyless counter mark.
fn is_mark(table: &TableSchema) -> String {
    each(&table.primary_key, AND, |k| format!("{k} IS NULL"))
}

/// `LIMIT ?n`, written so that SQLite keeps the statement's plan when a new
/// value is bound: it reads a bare parameter there while preparing, and
/// prepares the statement again on every new binding (a round on a wide
/// scope spent a fifth of its time doing so).
fn limit(param: usize) -> String {
    format!("LIMIT CAST(?{param} AS INTEGER)")
}

/// Keys with local changes after `?1`, each with its latest counter, oldest
/// first, at most `?2`: the key columns, then `seq`.
pub fn pending_keys(table: &TableSchema, id: i64) -> String {
    let keys = column_list(None, &table.primary_key);
    format!(
        "SELECT {keys}, max(tandem_seq) FROM {} WHERE tandem_seq > ?1 AND {} GROUP BY {keys} ORDER BY max(tandem_seq) {}",
        log_table(id),
        is_change(table),
        limit(2)
    )
}

/// Where an upload reads each key's latest change: the log itself, grouped
/// by key on every read, or a snapshot of that grouping taken once for an
/// upload of many batches (see [`pending_snapshot`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PendingSource {
    Log,
    Snapshot,
}

/// The unsent changes after `?1` (at most `?2` keys, oldest first), each
/// with what an upload needs: the key, its latest counter, its base version,
/// whether the row still exists, every synced column, then the key the
/// latest change moved the row to (NULLs when it did not).
pub fn pending_rows(table: &TableSchema, id: i64, source: PendingSource) -> String {
    let keys = column_list(None, &table.primary_key);
    let first = quote_ident(&table.primary_key[0]);
    let moved_to = moved_to_columns(table).join(", ");
    // SQLite takes the other columns of a group from its max() row: the
    // latest entry's `tandem_to_*`.
    let latest = match source {
        PendingSource::Log => format!(
            "SELECT {keys}, max(tandem_seq) AS tandem_seq, {moved_to} FROM {log} WHERE tandem_seq > ?1 AND {change} \
             GROUP BY {keys} ORDER BY max(tandem_seq) {limit}",
            log = log_table(id),
            change = is_change(table),
            limit = limit(2)
        ),
        PendingSource::Snapshot => {
            format!(
                "SELECT {keys}, tandem_seq, {moved_to} FROM {} WHERE tandem_seq > ?1 ORDER BY tandem_seq {}",
                snapshot_table(id),
                limit(2)
            )
        }
    };
    // A column the file changed on its own while sync wrote, and that
    // still holds what the file left, goes up as the server holds it (see
    // [`local_only_table`]).
    let (values, local_only) = match has_values(table) {
        true => (
            table
                .columns
                .iter()
                .map(|c| match table.primary_key.contains(&c.name) {
                    true => format!("r.{}", quote_ident(&c.name)),
                    false => format!(
                        "CASE WHEN r.{0} IS a.{1} COLLATE BINARY THEN s.{1} ELSE r.{0} END",
                        quote_ident(&c.name),
                        quote_ident(&local_only_column(&c.name))
                    ),
                })
                .collect::<Vec<_>>()
                .join(", "),
            format!(
                " LEFT JOIN {lo} s ON {} AND s.tandem_left = 0 LEFT JOIN {lo} a ON {} AND a.tandem_left = 1",
                crate::sql::columns_equal("s", &table.primary_key, "l", &table.primary_key),
                crate::sql::columns_equal("a", &table.primary_key, "s", &table.primary_key),
                lo = local_only_table(id),
            ),
        ),
        false => (column_list(Some("r"), &table.column_names()), String::new()),
    };
    format!(
        "SELECT {}, l.tandem_seq, b.tandem_version, r.{first} IS NOT NULL, {values}, {} \
         FROM ({latest}) l \
         LEFT JOIN {base} b ON {} LEFT JOIN {user} r ON {}{local_only} ORDER BY l.tandem_seq",
        column_list(Some("l"), &table.primary_key),
        column_list(Some("l"), &moved_to_columns(table)),
        crate::sql::columns_equal("b", &table.primary_key, "l", &table.primary_key),
        crate::sql::columns_equal("r", &table.primary_key, "l", &table.primary_key),
        base = base_table(id),
        user = user_table(table),
    )
}

/// The latest pending change of one key (`?1..`) in the snapshot: where
/// it moved the row (NULLs when it did not). For a key change whose new
/// key's change lies past the batch being read.
pub fn snapshot_moved_to(table: &TableSchema, id: i64) -> String {
    format!("SELECT {} FROM {} WHERE {}", moved_to_columns(table).join(", "), snapshot_table(id), key_match(table, 1))
}

/// The first key change of one key (`?2..`) after counter `?1`: the key
/// it moved the row to (`tandem_to_*`), then its counter. Following a row
/// from key to key by these, in counter order, finds where it went even
/// where a key it passed was taken again since (see [`vacated_keys`]).
pub fn next_move(table: &TableSchema, id: i64) -> String {
    let moved_to = moved_to_columns(table);
    format!(
        "SELECT {}, tandem_seq FROM {} WHERE tandem_seq > ?1 AND {} AND {} ORDER BY tandem_seq LIMIT 1",
        moved_to.join(", "),
        log_table(id),
        key_match(table, 2),
        each(&moved_to, AND, |c| format!("{c} IS NOT NULL")),
    )
}

/// Keys the server knows (they have a base version) that another row's
/// key change after `?1` took after the key had an entry of its own (the
/// key was left), oldest first, at most `?2`: the key columns, the counter
/// of the first such change, then the base version. What left each key
/// (a key change, a delete) cannot be told from the latest entries, where
/// the key's entry is the row that came (see `moves::vacating`).
pub fn vacated_keys(table: &TableSchema, id: i64) -> String {
    let moved_to = moved_to_columns(table);
    // `alias`'s key is the key `m` moved a row to.
    let taken = |alias: &str| {
        table.primary_key.iter().zip(&moved_to).map(|(k, to)| format!("{alias}.{} = m.{to}", quote_ident(k))).collect::<Vec<_>>().join(AND)
    };
    let to = moved_to.iter().map(|c| format!("m.{c}")).collect::<Vec<_>>().join(", ");
    format!(
        "SELECT {to}, min(m.tandem_seq), b.tandem_version FROM {log} m JOIN {base} b ON {} \
         WHERE m.tandem_seq > ?1 AND {} \
         AND EXISTS (SELECT 1 FROM {log} e WHERE e.tandem_seq > ?1 AND e.tandem_seq < m.tandem_seq AND {}) \
         GROUP BY {to} ORDER BY min(m.tandem_seq) {}",
        taken("b"),
        each(&moved_to, AND, |c| format!("m.{c} IS NOT NULL")),
        taken("e"),
        limit(2),
        log = log_table(id),
        base = base_table(id),
    )
}

/// Whether another row's key change after `?1` took key `?2..`: the row
/// that was there by then was gone (deleted, where no key change of its
/// own left the key).
pub fn taken_after(table: &TableSchema, id: i64) -> String {
    let matched: Vec<String> =
        moved_to_columns(table).iter().enumerate().map(|(i, c)| format!("{c} = {}", Dialect::Sqlite.param(i + 2))).collect();
    format!("SELECT EXISTS (SELECT 1 FROM {} WHERE tandem_seq > ?1 AND {})", log_table(id), matched.join(AND))
}

/// The first log entry of one key (`?2..`) after `?1`: its counter, NULL
/// for none.
pub fn first_entry(table: &TableSchema, id: i64) -> String {
    format!("SELECT min(tandem_seq) FROM {} WHERE tandem_seq > ?1 AND {}", log_table(id), key_match(table, 2))
}

fn snapshot_table(id: i64) -> String {
    format!("temp.{}", name("tandem_pending", id))
}

/// Takes a snapshot of each key's latest change after `?1`, indexed by
/// counter and by key (a temporary table: it lives with the connection).
/// Grouping the whole log costs as much as the changes pending; an upload
/// of many batches pays it once instead of once per batch.
pub fn pending_snapshot(table: &TableSchema, id: i64) -> [String; 3] {
    let keys = column_list(None, &table.primary_key);
    [
        drop_pending_snapshot(id),
        format!(
            "CREATE TEMP TABLE {} AS SELECT {keys}, max(tandem_seq) AS tandem_seq, {} FROM {} WHERE tandem_seq > ?1 AND {} GROUP BY {keys}",
            name("tandem_pending", id),
            moved_to_columns(table).join(", "),
            log_table(id),
            is_change(table)
        ),
        format!(
            "CREATE INDEX temp.{} ON {} (tandem_seq); CREATE UNIQUE INDEX temp.{} ON {} ({keys})",
            name("tandem_pending_seq", id),
            name("tandem_pending", id),
            name("tandem_pending_key", id),
            name("tandem_pending", id)
        ),
    ]
}

pub fn drop_pending_snapshot(id: i64) -> String {
    format!("DROP TABLE IF EXISTS {}", snapshot_table(id))
}

/// The positions (in `tables`' order, as `t`) of the tables (each with its
/// tracking id) whose log holds a change after their acknowledged counter,
/// bound as `?1`, `?2`, ... in the same order: a round reads only those
/// tables' logs. A keyless counter mark is no change. At most
/// [`PROBES_PER_STATEMENT`] tables (SQLite's limit on a compound SELECT is
/// 500).
pub fn tables_with_entries(tables: &[(&TableSchema, i64)]) -> String {
    if tables.is_empty() {
        return "SELECT 0 AS t WHERE 0".to_string();
    }
    tables
        .iter()
        .enumerate()
        .map(|(i, (table, id))| {
            format!(
                "SELECT {i} AS t WHERE EXISTS (SELECT 1 FROM {} WHERE tandem_seq > ?{} AND {})",
                log_table(*id),
                i + 1,
                is_change(table)
            )
        })
        .collect::<Vec<_>>()
        .join(" UNION ALL ")
}

/// Tables one [`tables_with_entries`] statement probes at most.
pub const PROBES_PER_STATEMENT: usize = 400;

/// How many log entries follow `?1` (a range of the rowid: cheap).
pub fn entries_after(id: i64) -> String {
    format!("SELECT count(*) FROM {} WHERE tandem_seq > ?1", log_table(id))
}

/// How many changes of keys follow `?1` (the log's keyless counter marks
/// left out).
pub fn changes_after(table: &TableSchema, id: i64) -> String {
    format!("SELECT count(*) FROM {} WHERE tandem_seq > ?1 AND {}", log_table(id), is_change(table))
}

/// Whether the log holds a change after `?1`.
pub fn any_change_after(table: &TableSchema, id: i64) -> String {
    format!("SELECT EXISTS (SELECT 1 FROM {} WHERE tandem_seq > ?1 AND {})", log_table(id), is_change(table))
}

/// Whether a key has a local change after `?1` (key values from `?2`).
pub fn has_pending(table: &TableSchema, id: i64) -> String {
    format!("SELECT 1 FROM {} WHERE tandem_seq > ?1 AND {} LIMIT 1", log_table(id), key_match(table, 2))
}

/// The key of log entry `?1`, as the file stores it.
pub fn logged_key(table: &TableSchema, id: i64) -> String {
    format!("SELECT {} FROM {} WHERE tandem_seq = ?1", column_list(None, &table.primary_key), log_table(id))
}

/// Every key with a change after `?1`.
pub fn all_pending(table: &TableSchema, id: i64) -> String {
    format!(
        "SELECT DISTINCT {} FROM {} WHERE tandem_seq > ?1 AND {}",
        column_list(None, &table.primary_key),
        log_table(id),
        is_change(table)
    )
}

/// Whether the row of key `?1..` holds NULL or its column's default (a
/// constant SQLite gives a row that leaves the column out) in `column`:
/// a value the device need not have written.
pub fn holds_default(table: &TableSchema, column: &str) -> String {
    let quoted = quote_ident(column);
    let default = match table.columns.iter().find(|c| c.name == column).and_then(|c| c.default.as_deref()) {
        Some(default) => format!(" OR {quoted} IS ({default})"),
        None => String::new(),
    };
    format!("SELECT {quoted} IS NULL{default} FROM {} WHERE {}", user_table(table), key_match(table, 1))
}

/// Logs every row of a table as a local change: rows the file held before
/// it synced the table go up on the first sync.
pub fn log_all_rows(table: &TableSchema, id: i64) -> String {
    let keys = column_list(None, &table.primary_key);
    format!("INSERT INTO {} ({keys}) SELECT {keys} FROM {}", log_table(id), user_table(table))
}

/// The highest counter handed out so far (0 for none).
pub fn top_seq(id: i64) -> String {
    format!("SELECT coalesce(max(tandem_seq), 0) FROM {}", log_table(id))
}

/// `"k1" = ?n AND "k2" = ?n+1`.
fn key_match(table: &TableSchema, first: usize) -> String {
    table
        .primary_key
        .iter()
        .enumerate()
        .map(|(i, k)| format!("{} = {}", quote_ident(k), Dialect::Sqlite.param(first + i)))
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// A row by key (`?1..`): every synced column.
pub fn read_row(table: &TableSchema) -> String {
    format!("SELECT {} FROM {} WHERE {}", column_list(None, &table.column_names()), user_table(table), key_match(table, 1))
}

/// Every row of a table, its synced columns in schema order (a verify
/// hashes them all).
pub fn all_rows(table: &TableSchema) -> String {
    format!("SELECT {} FROM {}", column_list(None, &table.column_names()), user_table(table))
}

/// A row's server version by key (`?1..`).
pub fn read_base(table: &TableSchema, id: i64) -> String {
    format!("SELECT tandem_version FROM {} WHERE {}", base_table(id), key_match(table, 1))
}

/// Around a group of a pull's rows written in one statement: a group the
/// file does not take whole is undone and written row by row.
pub const GROUP_SAVEPOINT: &str = "SAVEPOINT tandem_row_group";
/// Keeps what the group wrote.
pub const GROUP_RELEASE: &str = "RELEASE tandem_row_group";
/// Undoes the group (then [`GROUP_RELEASE`]).
pub const GROUP_UNDO: &str = "ROLLBACK TO tandem_row_group";

/// Records a row's server version: key in `?1..`, version last.
pub fn write_base(table: &TableSchema, id: i64) -> String {
    write_bases(table, id, 1)
}

/// [`write_base`] of `rows` rows in one statement, each row's key and
/// version after the row before it's.
pub fn write_bases(table: &TableSchema, id: i64, rows: usize) -> String {
    let keys = column_list(None, &table.primary_key);
    let width = table.primary_key.len() + 1;
    let tuples: Vec<String> = (0..rows)
        .map(|r| {
            let params: Vec<String> = (1..=width).map(|i| Dialect::Sqlite.param(r * width + i)).collect();
            format!("({})", params.join(", "))
        })
        .collect();
    format!(
        "INSERT INTO {} ({keys}, tandem_version) VALUES {} ON CONFLICT ({keys}) DO UPDATE SET tandem_version = excluded.tandem_version",
        base_table(id),
        tuples.join(", ")
    )
}

pub fn delete_base(table: &TableSchema, id: i64) -> String {
    format!("DELETE FROM {} WHERE {}", base_table(id), key_match(table, 1))
}

/// Drops the unsent log entries (`seq > ?1`) of one key (`?2..`): a change
/// set aside as refused.
pub fn forget_key(table: &TableSchema, id: i64) -> String {
    format!("DELETE FROM {} WHERE tandem_seq > ?1 AND {}", log_table(id), key_match(table, 2))
}

/// Drops log entries after `?1`: those the sync's own writes made.
pub fn drop_log_after(id: i64) -> String {
    format!("DELETE FROM {} WHERE tandem_seq > ?1", log_table(id))
}

/// Whether one of the `?2` log entries of table `id` after `?1` is of a
/// key the server has no row of in the file's view (no base version): an
/// insert.
pub fn insert_after(table: &TableSchema, id: i64) -> String {
    let keys = column_list(None, &table.primary_key);
    format!(
        "SELECT EXISTS (SELECT 1 FROM (SELECT {keys} FROM {log} WHERE tandem_seq > ?1 AND {change} ORDER BY tandem_seq {limit}) l \
         WHERE NOT EXISTS (SELECT 1 FROM {base} b WHERE {same}))",
        log = log_table(id),
        change = is_change(table),
        limit = limit(2),
        base = base_table(id),
        same = crate::sql::columns_equal("b", &table.primary_key, "l", &table.primary_key),
    )
}

/// Moves the row at key `?k+1..` back to key `?1..?k` (`k` key columns):
/// a key change the server refused, undone by an update so that what the
/// file's own keys moved with the row (`ON UPDATE CASCADE`) goes back too.
pub fn move_back(table: &TableSchema) -> String {
    let width = table.primary_key.len();
    let sets = table.primary_key.iter().enumerate().map(|(i, k)| format!("{} = {}", quote_ident(k), Dialect::Sqlite.param(1 + i)));
    format!("UPDATE {} SET {} WHERE {}", user_table(table), sets.collect::<Vec<_>>().join(", "), key_match(table, 1 + width))
}

/// Makes the unsent key changes (`?1 < seq <= ?2`) whose row the file
/// moved back to the old key while sync wrote (its own `ON UPDATE CASCADE`
/// following a refused key change that sync undid, see [`move_back`])
/// changes of the row at that key again. Left, such an entry reads as a
/// row moved and then deleted, and would go up as a delete of the
/// server's row (helper 78).
pub fn unmoved(table: &TableSchema, id: i64) -> String {
    let log = log_table(id);
    let keys = &table.primary_key;
    let to = moved_to_columns(table);
    let clear: Vec<String> = to.iter().map(|c| format!("{} = NULL", quote_ident(c))).collect();
    format!(
        "UPDATE {log} SET {} WHERE tandem_seq > ?1 AND tandem_seq <= ?2 AND {}.{} IS NOT NULL \
         AND EXISTS (SELECT 1 FROM {log} l WHERE l.tandem_seq > ?2 AND {} AND {}) \
         AND NOT EXISTS (SELECT 1 FROM {user} r WHERE {}) AND EXISTS (SELECT 1 FROM {user} r WHERE {})",
        clear.join(", "),
        log,
        quote_ident(&to[0]),
        crate::sql::columns_equal("l", keys, &log, &to),
        crate::sql::columns_equal("l", &to, &log, keys),
        crate::sql::columns_equal("r", keys, &log, &to),
        crate::sql::columns_equal("r", keys, &log, keys),
        user = user_table(table),
    )
}

/// Drops the unsent entries (`?1 < seq <= ?2`) of rows sync's transaction
/// logged after `?2` and that are gone: the file removed them itself while
/// sync wrote (its own foreign key's `CASCADE`, a trigger of its own; sync
/// never removes a row with an unsent change but for a refused change it
/// sets aside, whose rows the file's own keys may take along). Left, such
/// an entry would go up as a delete of the server's row; a key change
/// onto such a row (its new key gone) as a delete of the row at its old
/// key (helper 80).
pub fn forget_removed(table: &TableSchema, id: i64) -> String {
    let keys = column_list(None, &table.primary_key);
    let to = column_list(None, &moved_to_columns(table));
    format!(
        "WITH removed AS (SELECT {keys} FROM {log} l WHERE l.tandem_seq > ?2 AND {change} \
         AND NOT EXISTS (SELECT 1 FROM {user} r WHERE {same})) \
         DELETE FROM {log} WHERE tandem_seq > ?1 AND tandem_seq <= ?2 \
         AND (({keys}) IN (SELECT * FROM removed) OR ({to}) IN (SELECT * FROM removed))",
        log = log_table(id),
        change = each(&table.primary_key, AND, |k| format!("l.{k} IS NOT NULL")),
        user = user_table(table),
        same = crate::sql::columns_equal("r", &table.primary_key, "l", &table.primary_key),
    )
}

/// Drops acknowledged log entries (`tandem_seq <= ?1`).
pub fn prune_log(id: i64) -> String {
    format!("DELETE FROM {} WHERE tandem_seq <= ?1", log_table(id))
}

/// Whether table `id`'s log holds a change at or below the acknowledged
/// counter `?1`: never so in Tandem's own bookkeeping (acknowledged entries
/// go, and only a keyless marker may stand at the counter), so the log was
/// emptied by someone else and counting started again from 1.
pub fn counted_again(table: &TableSchema, id: i64) -> String {
    format!("SELECT EXISTS (SELECT 1 FROM {} WHERE tandem_seq <= ?1 AND {})", log_table(id), is_change(table))
}

/// Keeps the change counter from going below `?1` (the highest it had
/// reached): SQLite gives a new row the highest rowid plus one, so after
/// deletions a row with no key marks where counting resumes. A counter must
/// never be handed out twice, or a new change could pass for a re-upload
/// (and a sync's own writes for earlier local changes).
pub fn keep_counter(id: i64) -> String {
    let log = log_table(id);
    format!("INSERT INTO {log} (tandem_seq) SELECT ?1 WHERE ?1 > 0 AND NOT EXISTS (SELECT 1 FROM {log} WHERE tandem_seq >= ?1)")
}

/// Drops the counter mark just below the log's top entry, if that is one:
/// the top holds the counter, so the mark is of no use. Run after each
/// [`keep_counter`], it keeps a log that only sync writes (a device that
/// only pulls) at one mark instead of one more each round.
pub fn drop_stale_mark(table: &TableSchema, id: i64) -> String {
    let log = log_table(id);
    format!(
        "DELETE FROM {log} WHERE tandem_seq = (SELECT max(tandem_seq) FROM {log} WHERE tandem_seq < (SELECT max(tandem_seq) FROM {log})) \
         AND {}",
        is_mark(table)
    )
}

fn sweep_table(id: i64) -> String {
    name("tandem_sweep", id)
}

/// Starts a sweep of table `id`: every key the file holds, to be crossed
/// off as a pull brings it again.
pub fn begin_sweep(table: &TableSchema, id: i64) -> Vec<String> {
    let keys = column_list(None, &table.primary_key);
    vec![
        drop_sweep(id),
        keep_sweep(table, id),
        format!("INSERT INTO {} ({keys}) SELECT {keys} FROM {}", sweep_table(id), user_table(table)),
    ]
}

/// The sweep of table `id` as it is, or an empty one: a table whose rows
/// are not received anew keeps none to sweep (or the sweep it had).
pub fn keep_sweep(table: &TableSchema, id: i64) -> String {
    let key_defs: Vec<String> = table.key_columns().iter().map(|c| format!("{} {}", quote_ident(&c.name), c.ty.sqlite_decl())).collect();
    let keys = column_list(None, &table.primary_key);
    format!("CREATE TABLE IF NOT EXISTS {} ({}, PRIMARY KEY ({keys})) WITHOUT ROWID", sweep_table(id), key_defs.join(", "))
}

/// Crosses a key (`?1..`) off the sweep of table `id`.
pub fn cross_off(table: &TableSchema, id: i64) -> String {
    format!("DELETE FROM {} WHERE {}", sweep_table(id), key_match(table, 1))
}

/// Keys the sweep of table `id` kept (the pull from NULL did not bring
/// them) with no change after `?1`: rows the server no longer has.
pub fn swept_keys(table: &TableSchema, id: i64) -> String {
    let keys = column_list(None, &table.primary_key);
    format!(
        "SELECT {keys} FROM {sweep} s WHERE NOT EXISTS (SELECT 1 FROM {log} l WHERE l.tandem_seq > ?1 AND {same})",
        sweep = sweep_table(id),
        log = log_table(id),
        same = crate::sql::columns_equal("l", &table.primary_key, "s", &table.primary_key),
    )
}

pub fn drop_sweep(id: i64) -> String {
    drop_in_main("TABLE", &sweep_table(id))
}

/// Keys of `child` rows whose `on` columns equal `?1..` (the parent's key in
/// the order of `parent_key`): the rows a `via` filter ties to that parent.
pub fn children(child: &TableSchema, on: &[(String, String)], parent_key: &[String]) -> String {
    let conditions: Vec<String> = parent_key
        .iter()
        .enumerate()
        .filter_map(|(i, pk)| {
            on.iter().find(|(_, p)| p == pk).map(|(c, _)| format!("{} = {}", quote_ident(c), Dialect::Sqlite.param(i + 1)))
        })
        .collect();
    format!("SELECT {} FROM {} WHERE {}", column_list(None, &child.primary_key), user_table(child), conditions.join(" AND "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::Column;
    use crate::setup::Direction;
    use crate::types::LogicalType;

    fn items() -> TableSchema {
        let col = |n: &str, ty, nullable| Column {
            name: n.into(),
            ty,
            pg_type: String::new(),
            nullable,
            default: None,
            server_default: false,
            fill: None,
            since: None,
        };
        TableSchema {
            name: "sales.\"Order Items\"".into(),
            columns: vec![
                col("order_id", LogicalType::Int8, false),
                col("line", LogicalType::Int4, false),
                col("price", LogicalType::Numeric, true),
                col("photo", LogicalType::Bytea, true),
            ],
            primary_key: vec!["order_id".into(), "line".into()],
            filter: None,
            direction: Direction::Bidirectional,
            policy: None,
            partitioned: false,
            refiltered: None,
            renamed_from: Vec::new(),
            added: None,
        }
    }

    #[test]
    fn local_tables_keep_values_exact() {
        assert_eq!(
            create_table(&items()),
            "CREATE TABLE IF NOT EXISTS \"sales.Order Items\" (\"order_id\" INTEGER NOT NULL, \"line\" INTEGER NOT NULL, \
             \"price\" TEXT, \"photo\" BLOB, PRIMARY KEY (\"order_id\", \"line\"))"
        );
    }

    #[test]
    fn triggers_log_keys_in_plain_sql() {
        let statements = triggers(&items(), 3);
        assert_eq!(statements.len(), 10, "six drops (the keyless guards too), four triggers");
        let key = crate::sql::statements::the(&statements, "CREATE TRIGGER \"tandem_3_key\"");
        assert_eq!(
            key,
            "CREATE TRIGGER \"tandem_3_key\" AFTER UPDATE OF \"order_id\", \"line\" ON \"sales.Order Items\" \
             WHEN OLD.\"order_id\" IS NOT NEW.\"order_id\" OR OLD.\"line\" IS NOT NEW.\"line\" \
             BEGIN INSERT INTO \"tandem_log_3\" (\"order_id\", \"line\", tandem_to_1, tandem_to_2) VALUES (OLD.\"order_id\", OLD.\"line\", NEW.\"order_id\", NEW.\"line\"); END"
        );
        assert!(statements.iter().all(|s| !s.contains("sync_")), "no registered function in a trigger");
    }

    #[test]
    fn statements_bind_keys_in_order() {
        assert_eq!(
            write_base(&items(), 3),
            "INSERT INTO \"tandem_base_3\" (\"order_id\", \"line\", tandem_version) VALUES (?1, ?2, ?3) \
             ON CONFLICT (\"order_id\", \"line\") DO UPDATE SET tandem_version = excluded.tandem_version"
        );
        assert!(read_row(&items()).ends_with("WHERE \"order_id\" = ?1 AND \"line\" = ?2"));
        assert!(write_bases(&items(), 3, 2).contains("VALUES (?1, ?2, ?3), (?4, ?5, ?6) ON CONFLICT"));
    }
}
