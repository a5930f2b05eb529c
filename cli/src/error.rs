//! What can go wrong in a command, each saying what to do about it.

use tandem_core::dsn::redacted;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("cannot connect to PostgreSQL at {url}: {reason}. Is it running? (`make postgres` starts the local one)")]
    Connect { url: String, reason: String },

    #[error("the tandem extension is not installed in PostgreSQL at {url}: run `make install`")]
    ExtensionMissing { url: String },

    #[error("{context}: {reason}")]
    Database { context: String, reason: String },

    #[error(transparent)]
    Local(#[from] tandem_local::LocalError),

    #[error(transparent)]
    Serve(#[from] tandem_server::ServeError),

    #[error("SQLite: {0}")]
    Sqlite(#[from] rusqlite::Error),

    #[error("{0}")]
    Invalid(String),
}

impl CliError {
    pub fn connect(url: &str, error: &postgres::Error) -> Self {
        CliError::Connect { url: redacted(url), reason: describe(error) }
    }

    pub fn database(context: impl Into<String>, error: &postgres::Error) -> Self {
        CliError::Database { context: context.into(), reason: describe(error) }
    }
}

/// PostgreSQL's own message (and detail) rather than the driver's summary.
pub fn describe(error: &postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => match db.detail() {
            Some(detail) => format!("{} ({detail})", db.message()),
            None => db.message().to_string(),
        },
        None => error.to_string(),
    }
}
