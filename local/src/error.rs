//! Errors of the local side, each saying what to do next.

use tandem_core::Rejection;

#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error(transparent)]
    Core(#[from] tandem_core::Error),

    #[error("SQLite: {0}")]
    Sqlite(#[from] rusqlite::Error),

    #[error("cannot open {path}: wrong key, or not a SQLite file (pass the key it was created with)")]
    WrongKey { path: String },

    #[error("cannot open {path}: {reason}")]
    Open { path: String, reason: String },

    #[error("this file syncs scope \"{scope}\" with another server or database (id {known}); this one has id {found}: use another file for it, or pass --rebind (option \"rebind\") to move the file there: it then pulls the scope again, and its unsent changes go up, as conflicts where the two servers' rows differ")]
    OtherServer { scope: String, known: String, found: String },

    #[error("table {table} is already synced by scope \"{other}\"; a table belongs to one scope")]
    TableInOtherScope { table: String, other: String },

    #[error(
        "table {table} would share the file's table \"{local}\" with table {other_table} of scope \"{other}\" (SQLite ignores \
         case and has no schemas): sync scope \"{other}\" and this one into another file each"
    )]
    LocalNameInOtherScope { table: String, local: String, other_table: String, other: String },

    #[error(transparent)]
    Remote(#[from] RemoteError),

    /// The upload failed on the server; the pull ran anyway.
    #[error("the upload failed (the pull ran: {pulled} row(s) down): {error}")]
    UploadFailed { pulled: u64, error: RemoteError },

    /// The upload of changes made under the scope's previous schema failed,
    /// so the file kept that schema and nothing was pulled.
    #[error("the upload of changes made under the scope's previous schema failed, so this file was not moved to the new schema and nothing was pulled: {0}")]
    OldSchemaUploadFailed(RemoteError),

    #[error("the tracking of {table} ({object}) is missing from this file, so its unsent changes cannot be known: run SELECT sync_deprovision('{scope}') on the file and sync again; every local row is then checked against the server's (rows equal to the server's are no conflict, others are settled by the scope's policy and logged)")]
    TrackingMissing { scope: String, table: String, object: String },

    #[error("another sync of {path} is still running after {waited} s: run one sync of a file at a time")]
    Busy { path: String, waited: u64 },

    /// A trigger of the file's own dropped a server row without a word
    /// (`RAISE(IGNORE)`): the row is kept aside like a refused one.
    #[error("a trigger of this file ignored the server's row of {table} (RAISE(IGNORE))")]
    RowIgnored { table: String },

    /// A trigger of the file's own undid sync's whole transaction.
    #[error("a trigger of this file rolled back sync's transaction (RAISE(ROLLBACK)) while it stored the server's row of {table} ({reason}): nothing of the batch was stored, and every sync will stop there. Make the trigger refuse the row with RAISE(ABORT) instead: the row is then kept aside in tandem_rejected and the rest is stored")]
    RolledBack { table: String, reason: String },

    /// Sync's statements name the file's tables unqualified, as the
    /// program's own do: a temporary one of the same name would take
    /// their reads and writes.
    #[error("this connection has a temporary table or view \"{name}\", which hides the file's table of that name from sync (its reads and writes would go to the temporary one): DROP TABLE temp.\"{name}\" (or DROP VIEW), or sync from another connection")]
    Shadowed { name: String },

    #[error("this connection runs with PRAGMA query_only = ON, and sync writes the file (the server's rows, the answers to its uploads): set PRAGMA query_only = OFF on it, or sync from another connection")]
    QueryOnly,

    /// A round sends the file's changes, which the server keeps whatever
    /// the program's transaction does next.
    #[error("sync_run was called inside an open transaction (BEGIN or SAVEPOINT) of this connection: the server would keep changes the transaction may still roll back. Commit or roll back first, then sync")]
    InTransaction,

    /// The connection writes without a rollback journal: SQLite then
    /// undoes no failed statement or transaction, so a sync that stopped
    /// half-way would leave half its writes.
    #[error("this connection runs with PRAGMA journal_mode = OFF, under which SQLite cannot undo a failed write, so a sync could leave half of a batch stored: set PRAGMA journal_mode = WAL (or DELETE) on it and sync again")]
    NoJournal,

    /// SQLite checks a deferred foreign key only at commit, where no
    /// single row of the batch can be set aside: the whole batch fails,
    /// each round, until the row that refers to it goes.
    #[error("a foreign key of this file's own, from {table} to {parent}, declared DEFERRABLE INITIALLY DEFERRED, refuses what the server sent (a row {table} refers to is gone or moved): SQLite checks it only at commit, so the whole batch was undone. Declare the key without DEFERRABLE (then the refused row waits aside and the rest is stored), or remove the {table} row that refers to it")]
    DeferredForeignKey { table: String, parent: String },

    #[error("{0}")]
    Invalid(String),
}

/// What went wrong talking to the server.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("cannot reach the server at {url}: {reason}")]
    Unreachable { url: String, reason: String },

    /// The server was reached and said no (authentication, TLS, database):
    /// trying again will not help.
    #[error("the server at {url} refused: {reason}")]
    Refused { url: String, reason: String },

    /// The URL or a file it names is wrong: fix it before trying again.
    #[error("{0}")]
    Config(String),

    #[error("the tandem extension is not installed in the server's database at {url}: run CREATE EXTENSION tandem there (make install puts it on the server)")]
    ExtensionMissing { url: String },

    /// Installed, in a schema the connection's role does not look in.
    #[error("the tandem extension is installed in schema \"{schema}\" of the server's database at {url}, but this connection's search_path ({search_path}) leaves that schema out: add it to the role's search_path (ALTER ROLE <role> SET search_path = ..., \"{schema}\")")]
    ExtensionOffPath { url: String, schema: String, search_path: String },

    #[error("the server has no scope \"{0}\": create it there with sync_provision")]
    UnknownScope(String),

    /// Rows the server refused; nothing of the changeset was applied.
    #[error("the server refused {} row(s)", .0.len())]
    Rejected(Vec<Rejection>),

    #[error("the server says: {message} (SQLSTATE {sqlstate}){}", retry_hint(sqlstate))]
    Server { sqlstate: String, message: String },

    /// The file's watermark is older than the server's last cleanup: only
    /// a pull from NULL can bring it up to date.
    #[error("the server says: {0}")]
    WatermarkTooOld(String),

    /// The scope's schema changed during the round: the next round takes
    /// it first.
    #[error("the server says: {0}")]
    SchemaMoved(String),

    /// The server gave up waiting for a lock another session holds
    /// (SQLSTATE 55P03): nothing of the call was kept.
    #[error(
        "the server gave up waiting for a lock another session holds, and kept nothing of this call: sync again; if it \
         keeps happening, look on the server for a session left open in a transaction, or one holding Tandem's locks \
         (pg_locks, pg_stat_activity). The server says: {0}"
    )]
    LockWait(String),

    #[error("unexpected answer from the server: {0}")]
    Protocol(String),

    /// The server (a gateway's body limit) takes no request this large:
    /// the upload goes in smaller batches, and a single row this large is
    /// set aside.
    #[error("the server takes no request this large: {0}")]
    TooLarge(String),
}

impl RemoteError {
    /// True when the same request may succeed if sent again (connection lost,
    /// serialization failure, a lock another session held for a while).
    pub fn is_transient(&self) -> bool {
        match self {
            RemoteError::Unreachable { .. } | RemoteError::LockWait(_) => true,
            RemoteError::Server { sqlstate, .. } => sqlstate.starts_with("40") || sqlstate.starts_with("08"),
            _ => false,
        }
    }

    /// True when the server certainly kept nothing of an upload and would
    /// refuse the same batch again: its rows (refused, too large) or its
    /// shape (a schema that moved, an error the apply raised over the
    /// data or the definitions). Anything else, a lost connection, a
    /// session ended by the server or an unreadable answer, may have come
    /// after the commit: the batch stays in flight and goes again as it was.
    pub fn refused_batch(&self) -> bool {
        match self {
            RemoteError::Rejected(_) | RemoteError::TooLarge(_) | RemoteError::SchemaMoved(_) => true,
            RemoteError::Server { sqlstate, .. } => ["22", "23", "42", "P0"].iter().any(|class| sqlstate.starts_with(class)),
            _ => false,
        }
    }

    /// What a server's error tells a round, from the SQLSTATE, message and
    /// detail either transport carries: rows it refused, a watermark or
    /// schema to take again, a lock it gave up on. `None` for the rest,
    /// which each transport maps by itself.
    pub fn from_server(sqlstate: &str, message: &str, detail: Option<&str>) -> Option<RemoteError> {
        if let Some(rejected) = detail.and_then(tandem_core::Error::rejections_from_detail) {
            return Some(RemoteError::Rejected(rejected));
        }
        if detail.is_some_and(tandem_core::Error::resync_from_detail) {
            return Some(RemoteError::WatermarkTooOld(message.to_string()));
        }
        if detail.is_some_and(tandem_core::Error::schema_moved_from_detail) {
            return Some(RemoteError::SchemaMoved(message.to_string()));
        }
        (sqlstate == tandem_core::error::LOCK_NOT_AVAILABLE).then(|| RemoteError::LockWait(message.to_string()))
    }
}

/// What to do after a server error the next try gets past: a deadlock or
/// serialization failure (class 40) with another session's writes, which
/// rolled the call back whole (helper 99: a bare "deadlock detected").
fn retry_hint(sqlstate: &str) -> &'static str {
    match sqlstate.starts_with("40") {
        true => ": the call crossed another session's work and was undone whole; nothing is lost, sync again",
        false => "",
    }
}

impl From<tandem_tls::TlsError> for RemoteError {
    fn from(error: tandem_tls::TlsError) -> Self {
        match error {
            tandem_tls::TlsError::Config(message) => RemoteError::Config(message),
        }
    }
}

impl LocalError {
    /// The server's error a round failed on, whichever step it came from.
    fn remote(&self) -> Option<&RemoteError> {
        match self {
            LocalError::Remote(error) | LocalError::UploadFailed { error, .. } | LocalError::OldSchemaUploadFailed(error) => Some(error),
            _ => None,
        }
    }

    /// True when a round failed for want of the network (or a retryable
    /// server error), so the same round may succeed later: a watch backs
    /// off and goes on instead of ending.
    pub fn is_transient(&self) -> bool {
        self.remote().is_some_and(RemoteError::is_transient)
    }

    /// True when the server's Tandem functions are missing: not installed,
    /// or, for a file that synced a moment ago, dropped and made again by
    /// a restore or an upgrade under way.
    pub fn is_extension_missing(&self) -> bool {
        matches!(self.remote(), Some(RemoteError::ExtensionMissing { .. }))
    }

    /// True when the server's schema changed while the round ran (an
    /// `ALTER TABLE` between the round's reading of the schema and a
    /// batch): a batch names a column or table the round's schema lacks,
    /// or the server no longer has one the round sent. The next round
    /// reads the new schema and goes on.
    pub fn is_schema_race(&self) -> bool {
        match self {
            LocalError::Core(tandem_core::Error::UnknownColumn { .. } | tandem_core::Error::UnknownTable { .. }) => true,
            LocalError::Remote(RemoteError::SchemaMoved(_)) => true,
            _ => matches!(self.remote(), Some(RemoteError::Server { sqlstate, .. }) if sqlstate == "42703" || sqlstate == "42P01"),
        }
    }
}

pub type Result<T, E = LocalError> = std::result::Result<T, E>;

/// A value Tandem made, as JSON text: failing is a bug (a map with
/// non-text keys), never input, so it is an internal error, not an
/// empty answer.
pub fn to_json<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| tandem_core::Error::Internal(format!("serializing a result: {e}")).into())
}
