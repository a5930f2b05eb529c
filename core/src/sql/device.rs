//! The device's bookkeeping statements: what `tandem-local` reads and
//! writes in the tables of [`super::local::METADATA`] (scopes, their
//! tables' tracking ids, tables that left, refused changes) and in
//! SQLite's catalog.
//!
//! Every statement binds named parameters (`:scope`) and names its result
//! columns, and the device binds and reads them by those names (rusqlite
//! refuses a name the statement lacks): a statement changed here cannot
//! bind a value to the wrong placeholder or be read at the wrong column.
//! Statements over a table whose name varies are functions of that name.

use crate::ident::quote_ident;

// -- the file's schema of bookkeeping ---------------------------------------

/// `present`: whether the file has Tandem's tables at all (a lookup in
/// SQLite's schema, not a scan of `sqlite_master`).
pub const HAS_METADATA: &str = "SELECT count(*) > 0 AS present FROM pragma_table_info('tandem_scopes')";

/// `schema_version`: moved by every change of the file's tables, indexes
/// or triggers, by any connection.
pub const SCHEMA_VERSION: &str = "PRAGMA main.schema_version";

/// What of the connection sync cannot work under, read once per
/// transaction: its journal mode, whether it is read-only, and a temporary
/// table or view under the name of one of the file's (an unqualified name
/// finds it first), if any.
pub const CONNECTION: &str = "SELECT (SELECT journal_mode FROM pragma_journal_mode()) AS journal_mode, \
     (SELECT query_only FROM pragma_query_only()) AS query_only, \
     (SELECT t.name FROM temp.sqlite_master t WHERE t.type IN ('table', 'view') \
      AND EXISTS (SELECT 1 FROM main.sqlite_master m WHERE m.type IN ('table', 'view') AND m.name = t.name COLLATE NOCASE) \
      ORDER BY t.name LIMIT 1) AS shadowed";

/// What this connection checked of the file's layout, at which schema
/// version: a temporary table, so it lives and dies with the connection.
pub const CREATE_CHECKED: &str = "CREATE TEMP TABLE IF NOT EXISTS tandem_checked (what TEXT PRIMARY KEY, schema_version INTEGER NOT NULL)";

/// `schema_version` at which `:what` was last checked.
pub const CHECKED_AT: &str = "SELECT schema_version FROM temp.tandem_checked WHERE what = :what";

pub const SET_CHECKED: &str = "INSERT OR REPLACE INTO temp.tandem_checked (what, schema_version) VALUES (:what, :schema_version)";

/// A table an earlier Tandem kept and nothing reads.
pub const DROP_UNUSED: &str = "DROP TABLE IF EXISTS main.tandem_applying";

/// `name` of each column of the table named `:table` (none when there is
/// no such table).
pub const COLUMN_NAMES: &str = "SELECT name FROM pragma_table_info(:table)";

/// `name` and `declared` (its default, NULL for none) of each column of
/// the table named `:table`.
pub const COLUMN_DEFAULTS: &str = "SELECT name, dflt_value AS declared FROM pragma_table_info(:table)";

/// `name` and `ty` (declared type, upper case) of each primary key column
/// of the table named `:table`, in key order.
pub const KEY_COLUMNS: &str = "SELECT name, upper(type) AS ty FROM pragma_table_info(:table) WHERE pk > 0 ORDER BY pk";

/// `takes_null`: whether a primary key column of the table named `:table`
/// takes NULL (SQLite lets one that is not declared NOT NULL, except an
/// `INTEGER PRIMARY KEY`, which the caller tells apart by its type).
pub const KEY_TAKES_NULL: &str = "SELECT count(*) > 0 AS takes_null FROM pragma_table_info(:table) WHERE pk > 0 AND NOT \"notnull\"";

/// `present`: whether the file has a table named `:name`.
pub const TABLE_EXISTS: &str = "SELECT count(*) > 0 AS present FROM sqlite_master WHERE type = 'table' AND name = :name";

/// `present`: whether a table other than `:except` has the name `:name` as
/// SQLite compares names (without case).
pub const TABLE_NAME_TAKEN: &str =
    "SELECT count(*) > 0 AS present FROM sqlite_master WHERE type = 'table' AND name = :name COLLATE NOCASE AND name <> :except";

/// `name` of each of the objects named in `:names` (a JSON array) the
/// file has.
pub const PRESENT_OBJECTS: &str = "SELECT name FROM sqlite_master WHERE name IN (SELECT value FROM json_each(:names))";

/// `name` of each unique index of the table named `:table` other than its
/// primary key's.
pub const UNIQUE_INDEXES: &str = "SELECT name FROM pragma_index_list(:table) WHERE \"unique\" AND origin <> 'pk' ORDER BY name";

/// Each column of index `:index` of table `:table`, in index order: its
/// `name` (NULL for an expression), the collation the index compares it
/// by (`coll`), and whether it is a generated column (`generated`).
pub const INDEX_COLUMNS: &str = "SELECT i.name AS name, i.coll AS coll, coalesce(c.hidden IN (2, 3), 0) AS generated \
     FROM pragma_index_xinfo(:index) i LEFT JOIN pragma_table_xinfo(:table) c ON c.name = i.name WHERE i.key ORDER BY i.seqno";

/// `name` and `sql` (the statement that made it, as written) of each
/// trigger whose name starts with `:prefix`.
pub const TRIGGERS_NAMED: &str =
    "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND substr(name, 1, length(:prefix)) = :prefix";

/// `present`: whether the file has a trigger of its own, one Tandem did
/// not make (all of Tandem's are named `tandem_<id>_...`).
/// A program's `TEMP` trigger on its connection counts too.
pub const OWN_TRIGGERS: &str = "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'trigger' AND substr(name, 1, 7) <> 'tandem_') \
     OR EXISTS (SELECT 1 FROM sqlite_temp_master WHERE type = 'trigger' AND substr(name, 1, 7) <> 'tandem_') AS present";

/// `present`: whether a table of the file has a foreign key that acts
/// (`CASCADE`, `SET NULL`, `SET DEFAULT`): it may change rows on its own
/// while sync writes, as a trigger of the file's own may.
pub const ACTING_FOREIGN_KEYS: &str = "SELECT EXISTS (SELECT 1 FROM sqlite_master m, pragma_foreign_key_list(m.name) f \
     WHERE m.type = 'table' AND (f.on_update NOT IN ('NO ACTION', 'RESTRICT') OR f.on_delete NOT IN ('NO ACTION', 'RESTRICT'))) AS present";

/// The file's own foreign keys onto table `:table` that act when its key
/// changes (`ON UPDATE CASCADE`, `SET NULL`, `SET DEFAULT`), a row per
/// column: the referring table, the key's id there, then the referring
/// and referred columns (`to` NULL: the primary key's, in its order).
pub const KEYS_ACTING_ON_UPDATE: &str = "SELECT m.name AS child, f.id AS id, f.\"from\" AS from_column, f.\"to\" AS to_column \
     FROM sqlite_master m, pragma_foreign_key_list(m.name) f \
     WHERE m.type = 'table' AND f.\"table\" = :table COLLATE NOCASE AND f.on_update NOT IN ('NO ACTION', 'RESTRICT') \
     ORDER BY m.name, f.id, f.seq";

/// Whether table `child` holds a row whose `columns` are `?1..`.
pub fn any_referring(child: &str, columns: &[String]) -> String {
    let matched: Vec<String> = columns.iter().enumerate().map(|(i, c)| format!("{} = ?{}", quote_ident(c), i + 1)).collect();
    format!("SELECT EXISTS (SELECT 1 FROM {} WHERE {})", quote_ident(child), matched.join(" AND "))
}

/// `name` of each table whose name starts with `:prefix`.
pub const TABLES_NAMED: &str = "SELECT name FROM sqlite_master WHERE type = 'table' AND substr(name, 1, length(:prefix)) = :prefix";

/// Adds an earlier Tandem's missing column to a bookkeeping table.
pub fn add_bookkeeping_column(table: &str, column: &str, definition: &str) -> String {
    format!("ALTER TABLE {} ADD COLUMN {} {definition}", quote_ident(table), quote_ident(column))
}

pub fn rename_column(table: &str, from: &str, to: &str) -> String {
    format!("ALTER TABLE {} RENAME COLUMN {} TO {}", quote_ident(table), quote_ident(from), quote_ident(to))
}

/// Whether a foreign key of the table's (declared with the column or on
/// the table) starts from column `:column`: SQLite drops a column with
/// the key declared beside it, and the program's key with it.
pub const IN_FOREIGN_KEY: &str = "SELECT EXISTS (SELECT 1 FROM pragma_foreign_key_list(:table) WHERE \"from\" = :column) AS held";

/// The first row a foreign key of the file's own refuses (its table and
/// the table it refers to): what a deferred key found at commit.
pub const FOREIGN_KEY_VIOLATION: &str = "SELECT \"table\", parent FROM pragma_foreign_key_check LIMIT 1";

pub fn drop_column(table: &str, column: &str) -> String {
    format!("ALTER TABLE {} DROP COLUMN {}", quote_ident(table), quote_ident(column))
}

pub fn rename_table(from: &str, to: &str) -> String {
    format!("ALTER TABLE {} RENAME TO {}", quote_ident(from), quote_ident(to))
}

pub fn drop_trigger(name: &str) -> String {
    super::local::drop_in_main("TRIGGER", &quote_ident(name))
}

/// Empties a table of the file (its rows are about to be received anew).
pub fn delete_all(table: &str) -> String {
    format!("DELETE FROM {}", quote_ident(table))
}

/// `rows`: how many rows a table holds, or a query returns (`source` is a
/// quoted table or a parenthesized query).
pub fn count_rows(source: &str) -> String {
    format!("SELECT count(*) AS rows FROM {source}")
}

// -- tandem_scopes -----------------------------------------------------------

/// A scope's row: `schema`, `client_id`, `params`, `watermark`,
/// `replica_id`, `upload_id`, `echoes`, `resync`, `seen_until`,
/// `kept_deletes`.
pub const LOAD_SCOPE: &str = "SELECT schema, client_id, params, watermark, replica_id, upload_id, echoes, \
     coalesce(resync, 0) AS resync, seen_until, kept_deletes FROM tandem_scopes WHERE scope = :scope";

/// The scope's hold as it stands: `seen_until`, `kept_deletes`.
pub const HELD_SEEN: &str = "SELECT seen_until, kept_deletes FROM tandem_scopes WHERE scope = :scope";

/// Holds what uploads say they received at `:watermark`, unless held
/// already (at an earlier one), with the keys kept (`:kept`, JSON).
pub const HOLD_SEEN: &str =
    "UPDATE tandem_scopes SET seen_until = coalesce(seen_until, :watermark), kept_deletes = :kept WHERE scope = :scope";

/// Lets uploads say the watermark again.
pub const RELEASE_SEEN: &str = "UPDATE tandem_scopes SET seen_until = NULL, kept_deletes = NULL WHERE scope = :scope";

/// `present`: whether the file provisioned `:scope`.
pub const SCOPE_EXISTS: &str = "SELECT count(*) > 0 AS present FROM tandem_scopes WHERE scope = :scope";

/// `scope` and `schema` of every scope.
pub const ALL_SCOPES: &str = "SELECT scope, schema FROM tandem_scopes";

/// `scope` of each scope a file from before replica ids has.
pub const SCOPES_WITHOUT_REPLICA: &str = "SELECT scope FROM tandem_scopes WHERE replica_id IS NULL";

/// `schema` of `:scope` as stored.
pub const SCOPE_SCHEMA: &str = "SELECT schema FROM tandem_scopes WHERE scope = :scope";

/// `server_id` of `:scope`.
pub const SERVER_ID: &str = "SELECT server_id FROM tandem_scopes WHERE scope = :scope";

/// `last_sync` of `:scope`.
pub const LAST_SYNC: &str = "SELECT last_sync FROM tandem_scopes WHERE scope = :scope";

/// The last verify's report (JSON text), or NULL.
pub const LAST_VERIFY: &str = "SELECT last_verify FROM tandem_scopes WHERE scope = :scope";

/// Records a verify's report (JSON text), stamped with the time.
pub const SET_LAST_VERIFY: &str =
    "UPDATE tandem_scopes SET last_verify = json_set(:report, '$.at', strftime('%Y-%m-%dT%H:%M:%fZ', 'now')) WHERE scope = :scope";

pub const INSERT_SCOPE: &str =
    "INSERT INTO tandem_scopes (scope, schema, client_id, replica_id) VALUES (:scope, :schema, :client_id, :replica_id)";

pub const SET_SCHEMA: &str = "UPDATE tandem_scopes SET schema = :schema WHERE scope = :scope";

pub const SET_WATERMARK: &str =
    "UPDATE tandem_scopes SET watermark = :watermark, last_sync = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE scope = :scope";

/// A batch about to be sent (`:batch`, see `tandem-local`'s `InFlight`)
/// and the id it goes under: kept until its answer is recorded.
pub const SET_IN_FLIGHT: &str = "UPDATE tandem_scopes SET upload_id = :upload_id, in_flight = :batch WHERE scope = :scope";

/// `upload_id` and `batch`: the batch sent and not answered, if any.
pub const IN_FLIGHT: &str = "SELECT upload_id, in_flight AS batch FROM tandem_scopes WHERE scope = :scope";

/// The batch in flight was answered (or will never be sent again): the
/// next batch goes under a new id.
pub const CLEAR_IN_FLIGHT: &str = "UPDATE tandem_scopes SET upload_id = NULL, in_flight = NULL WHERE scope = :scope";

pub const SET_ECHOES: &str = "UPDATE tandem_scopes SET echoes = :echoes WHERE scope = :scope";

pub const SET_PARAMS: &str = "UPDATE tandem_scopes SET params = :params WHERE scope = :scope";

pub const SET_SERVER_ID: &str = "UPDATE tandem_scopes SET server_id = :server_id WHERE scope = :scope";

pub const SET_CLIENT_ID: &str = "UPDATE tandem_scopes SET client_id = :client_id WHERE scope = :scope";

/// A new replica id; the upload in flight, if any, is forgotten.
pub const SET_REPLICA: &str = "UPDATE tandem_scopes SET replica_id = :replica_id, upload_id = NULL, in_flight = NULL WHERE scope = :scope";

/// A resync from no watermark begins (see `tandem-local`'s `resync`).
/// Echoes stay while uploads say a watermark from before the resync
/// (`seen_until`): the file's own writes after it are still its own.
pub const BEGIN_RESYNC_FROM_START: &str =
    "UPDATE tandem_scopes SET resync = 1, watermark = NULL, echoes = CASE WHEN seen_until IS NULL THEN NULL ELSE echoes END WHERE scope = :scope";

/// A resync of some tables begins, from the current watermark.
pub const BEGIN_RESYNC: &str = "UPDATE tandem_scopes SET resync = 1, echoes = NULL WHERE scope = :scope";

pub const END_RESYNC: &str = "UPDATE tandem_scopes SET resync = NULL WHERE scope = :scope";

pub const DELETE_SCOPE: &str = "DELETE FROM tandem_scopes WHERE scope = :scope";

// -- tandem_tables -----------------------------------------------------------

/// `id` of every tracked table.
pub const ALL_TABLE_IDS: &str = "SELECT id FROM tandem_tables";

/// `name` and `id` of each tracked table of `:scope`.
pub const TRACKED_TABLES: &str = "SELECT name, id FROM tandem_tables WHERE scope = :scope";

/// `id` and `acked_seq` of table `:name` of `:scope`.
pub const TABLE_STATE: &str = "SELECT id, acked_seq FROM tandem_tables WHERE scope = :scope AND name = :name";

/// `name`, `id` and `acked_seq` of every tracked table of `:scope`.
pub const TABLE_STATES: &str = "SELECT name, id, acked_seq FROM tandem_tables WHERE scope = :scope";

/// `scope` of another scope that tracks a table named `:name`.
/// The tables other scopes of the file sync, by scope.
pub const TABLES_OF_OTHER_SCOPES: &str = "SELECT scope, name FROM tandem_tables WHERE scope <> :scope";

/// A new tracked table; its id is the insert's rowid.
pub const INSERT_TABLE: &str = "INSERT INTO tandem_tables (scope, name) VALUES (:scope, :name)";

pub const RENAME_TRACKED_TABLE: &str = "UPDATE tandem_tables SET name = :name WHERE id = :id";

pub const SET_ACKED: &str = "UPDATE tandem_tables SET acked_seq = max(acked_seq, :seq) WHERE id = :id";

/// Nothing of table `id`'s log counts as acknowledged (see `tandem-local`'s
/// `log_reset`).
pub const RESET_ACKED: &str = "UPDATE tandem_tables SET acked_seq = 0 WHERE id = :id";

pub const DELETE_TABLE: &str = "DELETE FROM tandem_tables WHERE id = :id";

pub const DELETE_SCOPE_TABLES: &str = "DELETE FROM tandem_tables WHERE scope = :scope";

// -- tandem_left_tables ------------------------------------------------------

/// `name` of each table that left `:scope`.
pub const LEFT_TABLES: &str = "SELECT name FROM tandem_left_tables WHERE scope = :scope";

pub const NOTE_LEFT_TABLE: &str = "INSERT OR IGNORE INTO tandem_left_tables (scope, name) VALUES (:scope, :name)";

/// A table came back; changes one row when it had left.
pub const FORGET_LEFT_TABLE: &str = "DELETE FROM tandem_left_tables WHERE scope = :scope AND name = :name";

pub const DELETE_SCOPE_LEFT_TABLES: &str = "DELETE FROM tandem_left_tables WHERE scope = :scope";

// -- tandem_conflicts and tandem_rejected ------------------------------------

/// `rows`: conflicts logged for `:scope`.
pub const COUNT_CONFLICTS: &str = "SELECT count(*) AS rows FROM tandem_conflicts WHERE scope = :scope";

/// `rows`: changes set aside for `:scope`.
pub const COUNT_REJECTED: &str = "SELECT count(*) AS rows FROM tandem_rejected WHERE scope = :scope";

/// A conflict of one of the file's changes, as the server (or the file)
/// settled it.
pub const INSERT_CONFLICT: &str = "INSERT INTO tandem_conflicts \
     (scope, table_name, key, kind, decision, server_row, client_row, row, reason, client_id) \
     VALUES (:scope, :table_name, :key, :kind, :decision, :server_row, :client_row, :row, :reason, :client_id)";

/// A change the server refused or the file could not send, with the row
/// as the file held it (`:row`, NULL for a delete) and why.
pub const INSERT_REJECTED: &str = "INSERT INTO tandem_rejected (scope, table_name, key, row, kind, reason) \
     VALUES (:scope, :table_name, :key, :row, :kind, :reason)";

/// Keeps one change the new schema cannot take, once (a second round that
/// meets the same change keeps nothing more).
pub const KEEP_UNFOLLOWED: &str = "INSERT INTO tandem_rejected (scope, table_name, key, row, kind, reason) \
     SELECT :scope, :table_name, :key, :row, 'schema_changed', :reason WHERE NOT EXISTS (SELECT 1 FROM tandem_rejected \
     WHERE scope = :scope AND table_name = :table_name AND key = :key AND kind = 'schema_changed' AND reason = :reason)";

/// A server row the file's own constraints refused (kind `not_stored`):
/// the row as the server sent it, its version, and the base version the
/// file held for the key then (a later server state of the key moves it).
pub const KEEP_NOT_STORED: &str = "INSERT INTO tandem_rejected (scope, table_name, key, row, kind, reason, version, base) \
     VALUES (:scope, :table_name, :key, :row, 'not_stored', :reason, :version, :base)";

/// An earlier kept row of the same key goes when another is kept.
pub const FORGET_NOT_STORED_KEY: &str =
    "DELETE FROM tandem_rejected WHERE scope = :scope AND table_name = :table_name AND key = :key AND kind = 'not_stored'";

/// `id, table_name, key, row, version, base` of each server row `:scope`
/// keeps aside, oldest first.
pub const NOT_STORED: &str = "SELECT id, table_name, key, row, version, base FROM tandem_rejected \
     WHERE scope = :scope AND kind = 'not_stored' ORDER BY id";

/// One entry of `tandem_rejected`, by id.
pub const FORGET_REJECTED: &str = "DELETE FROM tandem_rejected WHERE id = :id";

/// `id, table_name, row` of each row of `:scope` kept for want of a whole
/// key (kind `no_key`).
pub const NO_KEY_ROWS: &str = "SELECT id, table_name, row FROM tandem_rejected WHERE scope = :scope AND kind = 'no_key'";

/// A resync receives the table's rows anew: what it kept aside goes (a
/// row refused again is kept again).
pub const FORGET_NOT_STORED_TABLE: &str =
    "DELETE FROM tandem_rejected WHERE scope = :scope AND table_name = :table_name AND kind = 'not_stored'";

pub const SET_NOT_STORED_REASON: &str = "UPDATE tandem_rejected SET reason = :reason WHERE id = :id";

#[cfg(test)]
mod tests {
    use super::*;

    /// Every statement's placeholders are named: a positional one would
    /// bind by order again.
    #[test]
    fn placeholders_are_named() {
        for sql in [
            HAS_METADATA,
            CHECKED_AT,
            SET_CHECKED,
            COLUMN_NAMES,
            COLUMN_DEFAULTS,
            KEY_COLUMNS,
            TABLE_EXISTS,
            TABLE_NAME_TAKEN,
            PRESENT_OBJECTS,
            TRIGGERS_NAMED,
            OWN_TRIGGERS,
            ACTING_FOREIGN_KEYS,
            IN_FOREIGN_KEY,
            FOREIGN_KEY_VIOLATION,
            TABLES_NAMED,
            UNIQUE_INDEXES,
            INDEX_COLUMNS,
            LOAD_SCOPE,
            SCOPE_EXISTS,
            INSERT_SCOPE,
            SET_WATERMARK,
            SET_IN_FLIGHT,
            IN_FLIGHT,
            CLEAR_IN_FLIGHT,
            SET_REPLICA,
            TABLE_STATE,
            TABLE_STATES,
            SET_ACKED,
            INSERT_REJECTED,
            INSERT_CONFLICT,
            KEEP_UNFOLLOWED,
            KEEP_NOT_STORED,
            FORGET_NOT_STORED_KEY,
            NOT_STORED,
            FORGET_REJECTED,
            NO_KEY_ROWS,
            FORGET_NOT_STORED_TABLE,
            SET_NOT_STORED_REASON,
        ] {
            assert!(!sql.contains('?') && !sql.contains('$'), "{sql}");
        }
    }

    #[test]
    fn names_are_quoted() {
        assert_eq!(rename_table("a\"b", "c"), "ALTER TABLE \"a\"\"b\" RENAME TO \"c\"");
        assert_eq!(drop_column("t", "it's \"x\""), "ALTER TABLE \"t\" DROP COLUMN \"it's \"\"x\"\"\"");
    }
}
