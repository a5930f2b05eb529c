//! Errors both sides raise, each with the SQLSTATE PostgreSQL reports it under
//! and a message that says what to do next.

use serde::{Deserialize, Serialize};

/// Why an uploaded row is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectionKind {
    /// A value does not fit its column (type, NULL).
    InvalidValue,
    /// The row is, or would be, in another client's partition.
    OutsidePartition,
    /// The table does not take uploads.
    DownloadOnly,
    /// The server's own rules refused the row: a trigger raised an error,
    /// or a value fits the changeset's type but not the column's.
    Declined,
    /// Never from the server: the file kept a change the server's new
    /// schema cannot take (a column it dropped, a table that left the
    /// scope), made before the file learned of it.
    SchemaChanged,
}

impl RejectionKind {
    /// The name a changeset and the device's `tandem_rejected.kind` use.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectionKind::InvalidValue => "invalid_value",
            RejectionKind::OutsidePartition => "outside_partition",
            RejectionKind::DownloadOnly => "download_only",
            RejectionKind::Declined => "declined",
            RejectionKind::SchemaChanged => "schema_changed",
        }
    }

    /// A refusal over what the client may write, not over a value.
    pub fn is_access(self) -> bool {
        matches!(self, RejectionKind::OutsidePartition | RejectionKind::DownloadOnly)
    }
}

/// One uploaded row the server refuses, and why. A changeset with any of these
/// is applied not at all; the local side sets these rows aside
/// (`tandem_rejected`) and uploads the rest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rejection {
    pub table: String,
    pub key: Vec<serde_json::Value>,
    /// Local change counter of the row, when the changeset carried one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<i64>,
    pub kind: RejectionKind,
    pub reason: String,
    /// The row as the server holds it, when the client may see it; absent
    /// when the client should not hold the row at all. The client takes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// A refused key change: the row at the key it moved from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moved_from: Option<crate::apply_result::MovedFrom>,
}

/// SQLSTATE `lock_not_available`: a sync call gave up waiting for a lock
/// another session holds (the extension caps the wait; design.md,
/// "Security"). Nothing of the call was kept, and the next round may pass.
pub const LOCK_NOT_AVAILABLE: &str = "55P03";
/// SQLSTATE `object_in_use`: another session holds the object (a
/// concurrent DDL); the next round may pass.
pub const OBJECT_IN_USE: &str = "55006";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("\"{0}\" is not a valid table name: write it as table, schema.table or schema.\"Quoted Name\"")]
    InvalidName(String),

    #[error("malformed {what}: {reason}")]
    Malformed { what: &'static str, reason: String },

    #[error("invalid options: {0}")]
    InvalidOptions(String),

    #[error("invalid scope setup: {0}")]
    InvalidSetup(String),

    #[error("unknown scope \"{0}\": create it first with sync_provision")]
    UnknownScope(String),

    #[error("table {table} is not part of scope \"{scope}\"; its tables are: {known}")]
    UnknownTable { scope: String, table: String, known: String },

    #[error("table {table} of scope \"{scope}\" has no synced column \"{column}\"")]
    UnknownColumn { scope: String, table: String, column: String },

    #[error("table {0} does not exist")]
    MissingTable(String),

    #[error(
        "table {0} has no primary key; Tandem identifies rows by it: add one (ALTER TABLE {0} ADD PRIMARY KEY (...)) and provision again"
    )]
    NoPrimaryKey(String),

    #[error("changeset is for scope \"{found}\", not \"{expected}\"")]
    ScopeMismatch { expected: String, found: String },

    #[error("changeset claims origin \"{origin}\" but the caller is client \"{client}\"")]
    IdentityMismatch { origin: String, client: String },

    #[error("replica id \"{replica}\" belongs to another client than \"{client}\": each file syncs as one client, under an id of its own; give this one another id (a new file gets one)")]
    ForeignReplica { replica: String, client: String },

    #[error("unsupported changeset format {0}; this Tandem reads format 1")]
    UnsupportedFormat(u32),

    #[error("invalid watermark \"{0}\": pass a watermark returned by sync_select_changes, or NULL for everything")]
    InvalidWatermark(String),

    #[error("the watermark is older than what scope \"{0}\" keeps (a sync_cleanup purged what it needs, or the scope was provisioned anew), or comes from a history this database no longer has (a backup restored over it): pull again from NULL (sync_run does this by itself, keeping the file's unsent changes)")]
    WatermarkTooOld(String),

    #[error("scope \"{scope}\" is at schema version {now}, and this pull was asked for version {asked}: the scope changed during the sync; sync again (sync_run does this by itself, taking the new schema first)")]
    SchemaMoved { scope: String, asked: i64, now: i64 },

    #[error("this database's tandem extension is version {installed}, but this session runs the tandem library of version {library}: run ALTER EXTENSION tandem UPDATE in this database (docs/deploy.md, Upgrades), or reconnect if it was updated after this session began")]
    ExtensionVersion { installed: String, library: String },

    #[error("parameter problem: {0}")]
    Params(String),

    #[error("invalid token for scope \"{0}\": the token is unknown, revoked or replaced; use the token sync_register_client (or sync_rotate_token) issued, or register the client again (a file that synced as the revoked client then syncs as the new one with `tandem sync --rebind`, its unsent changes kept)")]
    InvalidToken(String),

    #[error("scope \"{0}\" takes devices by token: call it with the token sync_register_client issued (option \"token\"); only the scope's owner may name a client or pass parameters")]
    TokenRequired(String),

    #[error("role \"{role}\" does not own scope \"{scope}\": only its owner (\"{owner}\"), a member of that role or a superuser may call {function}")]
    NotScopeOwner { role: String, scope: String, owner: String, function: &'static str },

    #[error("role \"{role}\" may not track {table}: a scope's tables must be owned by the role that provisions it (or a role it is a member of)")]
    NotTableOwner { role: String, table: String },

    #[error("scope \"{scope}\" runs its owner's code (triggers, checks, casts), which never runs in a session a superuser opened, even after SET ROLE or SET SESSION AUTHORIZATION: connect as its owner (\"{owner}\") or as a device role")]
    SuperuserSession { scope: String, owner: String },

    #[error("no client \"{client}\" in scope \"{scope}\": sync_clients lists the scope's clients")]
    NoSuchClient { scope: String, client: String },

    #[error("{} row(s) refused, nothing applied: {}", .0.len(), summarize(.0))]
    Rejected(Vec<Rejection>),

    #[error("conflict resolver {name}: {reason}")]
    Resolver { name: String, reason: String },

    /// An error PostgreSQL raised, passed on with its own SQLSTATE.
    #[error("{message}")]
    Database { sqlstate: String, message: String },

    #[error("client \"{claimed}\" is not the token's client (\"{client}\"): a call with a token runs as its client; leave client_id out")]
    TokenMismatch { claimed: String, client: String },

    #[error("{0} must not be NULL")]
    NullArgument(&'static str),

    #[error("the tracking of {table} in scope \"{scope}\" is gone ({object}): provision the scope again with its setup (sync_provision); devices then receive the table again")]
    TrackingMissing { scope: String, table: String, object: String },

    #[error(
        "dropping a partition of {table} would remove {rows} row(s) that devices hold without telling them: \
             detach it first (ALTER TABLE {table} DETACH PARTITION ...), which sends its rows to devices as deletes, then drop it"
    )]
    PartitionHoldsRows { table: String, rows: i64 },

    #[error("row {key} of {table} is {} MB as changeset JSON, more than Tandem moves in one message ({} MB): \
             keep such values out of the synced columns (leave the column out with \"columns\"), or store them in parts",
             .bytes >> 20, crate::options::MAX_ROW_BYTES >> 20)]
    RowTooLarge { table: String, key: String, bytes: usize },

    /// Under `session_replication_role = replica` neither Tandem's triggers
    /// nor foreign keys fire: an upload's rows would be written, untracked
    /// and unchecked, and reach no other device.
    #[error(
        "this session runs with session_replication_role = replica, in which Tandem's triggers and foreign keys do not fire: \
             the upload's rows would reach no other device. RESET session_replication_role (or SET it to origin) and send it again"
    )]
    ReplicaRole,

    /// A pull records the client's call and folds the change log, and an
    /// upload writes rows: neither can run in a read-only transaction, and
    /// PostgreSQL's own refusal names an INSERT the caller never wrote.
    #[error(
        "{function} writes (it records the client's call and the tracking of changed rows), so it cannot run in a read-only \
         transaction: call it in a read-write one (SET default_transaction_read_only = off, or BEGIN READ WRITE) on the primary, \
         not on a standby"
    )]
    ReadOnly { function: &'static str },

    /// A trigger of the caller's transaction deferred the checks again
    /// while they fired as the caller: the next would fire inside the call,
    /// with other rights.
    #[error("this transaction still holds deferred checks after they ran as the caller (a trigger set the constraints DEFERRED again and queued another): \
             a sync call would run them with the rights of its own code. Commit or roll back first, then sync in a transaction of its own")]
    DeferredAgain,

    /// Tandem reads and writes a scope's tables as their owner, whom row
    /// security leaves alone unless the table forces it.
    #[error(
        "{table} has FORCE ROW LEVEL SECURITY, so its policies bind its owner, whose rights a sync runs with: a pull would leave out rows \
             the device's partition holds, and an upload would miss them. Run ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY \
             (each device still gets only its partition, by the scope's filter), or sync another table"
    )]
    ForcedRowSecurity { table: String },

    #[error("{0}")]
    Internal(String),
}

fn summarize(rejections: &[Rejection]) -> String {
    let mut parts: Vec<String> =
        rejections.iter().take(3).map(|r| format!("{} {}: {}", r.table, serde_json::Value::Array(r.key.clone()), r.reason)).collect();
    if rejections.len() > 3 {
        parts.push(format!("and {} more (see DETAIL)", rejections.len() - 3));
    }
    parts.join("; ")
}

impl Error {
    /// The SQLSTATE this error is raised with on PostgreSQL.
    pub fn sqlstate(&self) -> &str {
        match self {
            Error::InvalidName(_) => "42602",    // invalid_name
            Error::Malformed { .. } => "22P02",  // invalid_text_representation
            Error::InvalidOptions(_) => "22023", // invalid_parameter_value
            Error::InvalidSetup(_) => "22023",
            Error::UnknownScope(_) => "42704",      // undefined_object
            Error::UnknownTable { .. } => "42P01",  // undefined_table
            Error::UnknownColumn { .. } => "42703", // undefined_column
            Error::MissingTable(_) => "42P01",
            Error::NoPrimaryKey(_) => "42P16", // invalid_table_definition
            Error::ScopeMismatch { .. } => "22023",
            Error::IdentityMismatch { .. } => "42501", // insufficient_privilege
            Error::ForeignReplica { .. } => "42501",
            Error::TokenMismatch { .. } => "42501",
            Error::UnsupportedFormat(_) => "22023",
            Error::InvalidWatermark(_) => "22023",
            Error::WatermarkTooOld(_) => "55000", // object_not_in_prerequisite_state
            Error::SchemaMoved { .. } => "55000",
            Error::ExtensionVersion { .. } => "55000",
            Error::Params(_) => "22023",
            Error::InvalidToken(_) => "28000", // invalid_authorization_specification
            Error::TokenRequired(_) => "28000",
            Error::NotScopeOwner { .. } => "42501",
            Error::NotTableOwner { .. } => "42501",
            Error::SuperuserSession { .. } => "42501",
            Error::NoSuchClient { .. } => "42704",
            // Refusals over access outrank refusals over values.
            Error::Rejected(rows) if rows.iter().any(|r| r.kind.is_access()) => "42501",
            Error::Rejected(_) => "22P02",
            Error::Resolver { .. } => "39000", // external_routine_invocation_exception
            Error::Database { sqlstate, .. } if sqlstate.len() == 5 && sqlstate.is_ascii() => sqlstate,
            Error::Database { .. } => "XX000",
            Error::NullArgument(_) => "22004", // null_value_not_allowed
            Error::TrackingMissing { .. } => "55000",
            Error::PartitionHoldsRows { .. } => "2BP01", // dependent_objects_still_exist
            Error::RowTooLarge { .. } => "54000",        // program_limit_exceeded
            Error::ReplicaRole => "55000",
            Error::ReadOnly { .. } => "25006", // read_only_sql_transaction
            Error::ForcedRowSecurity { .. } => "55000",
            Error::DeferredAgain => "55000",
            Error::Internal(_) => "XX000",
        }
    }

    /// Machine-readable detail: for rejections, `{"rejected": [...]}`, which
    /// the local side reads to set those rows aside.
    pub fn detail(&self) -> Option<String> {
        match self {
            Error::Rejected(rows) => Some(serde_json::json!({ "rejected": rows }).to_string()),
            Error::WatermarkTooOld(_) => Some(serde_json::json!({ "resync": true }).to_string()),
            Error::SchemaMoved { now, .. } => Some(serde_json::json!({ "schema_version": now }).to_string()),
            _ => None,
        }
    }

    /// Whether an error's detail says the caller must pull again from NULL.
    pub fn resync_from_detail(detail: &str) -> bool {
        serde_json::from_str::<serde_json::Value>(detail).is_ok_and(|v| v["resync"] == serde_json::Value::Bool(true))
    }

    /// Whether an error's detail says the scope's schema changed since the
    /// caller read it.
    pub fn schema_moved_from_detail(detail: &str) -> bool {
        serde_json::from_str::<serde_json::Value>(detail).is_ok_and(|v| v["schema_version"].is_i64())
    }

    /// Reads back the rejections from an error's detail text.
    pub fn rejections_from_detail(detail: &str) -> Option<Vec<Rejection>> {
        #[derive(Deserialize)]
        struct Detail {
            rejected: Vec<Rejection>,
        }
        serde_json::from_str::<Detail>(detail).ok().map(|d| d.rejected)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `text` cut to at most `max` bytes (on a character boundary) with `...`,
/// so a message quoting input stays readable.
pub fn shorten(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut cut = max.saturating_sub(3);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}...", &text[..cut])
}

/// `error` with each of its causes, joined by ": ", leaving out a cause
/// whose text the line holds already: a connection's failure names its
/// reason (a TLS one, say) only in a cause.
pub fn with_causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let said = cause.to_string();
        if !text.contains(&said) {
            text = format!("{text}: {said}");
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_causes_names_each_cause_once() {
        #[derive(Debug)]
        struct Layer(&'static str, Option<Box<Layer>>);
        impl std::fmt::Display for Layer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.0)
            }
        }
        impl std::error::Error for Layer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                self.1.as_deref().map(|e| e as &(dyn std::error::Error + 'static))
            }
        }
        let tls = Layer("invalid peer certificate: UnknownIssuer", None);
        let error = Layer("pool: handshake failed", Some(Box::new(Layer("handshake failed", Some(Box::new(tls))))));
        assert_eq!(with_causes(&error), "pool: handshake failed: invalid peer certificate: UnknownIssuer");
    }

    #[test]
    fn a_rejection_kind_is_named_as_serialized() {
        for kind in [
            RejectionKind::InvalidValue,
            RejectionKind::OutsidePartition,
            RejectionKind::DownloadOnly,
            RejectionKind::Declined,
            RejectionKind::SchemaChanged,
        ] {
            assert_eq!(serde_json::to_value(kind).unwrap(), serde_json::Value::from(kind.as_str()));
        }
    }

    #[test]
    fn long_text_is_shortened_on_a_character_boundary() {
        assert_eq!(shorten("short", 10), "short");
        assert_eq!(shorten("ééééé", 7), "éé...");
    }

    #[test]
    fn rejections_travel_in_the_detail() {
        let rows = vec![Rejection {
            table: "public.orders".into(),
            key: vec![serde_json::json!(7)],
            seq: Some(3),
            kind: RejectionKind::OutsidePartition,
            reason: "outside the client's partition".into(),
            row: None,
            version: None,
            moved_from: None,
        }];
        let err = Error::Rejected(rows.clone());
        assert_eq!(err.sqlstate(), "42501");
        assert!(err.to_string().contains("public.orders [7]: outside the client's partition"));
        assert_eq!(Error::rejections_from_detail(&err.detail().unwrap()).unwrap(), rows);
        assert!(Error::rejections_from_detail("Key (id)=(1) already exists.").is_none());
        let typed = vec![Rejection { kind: RejectionKind::InvalidValue, ..rows[0].clone() }];
        assert_eq!(Error::Rejected(typed).sqlstate(), "22P02");
    }
}
