//! The server, as the sync agent sees it: three calls. `postgres://` remotes
//! call the extension's SQL functions directly; other transports plug in
//! behind the same trait.

use std::time::Duration;

use postgres::{Client, Config, NoTls};
use tandem_core::apply_result::ApplyResult;
use tandem_core::dsn::redacted;
use tandem_core::options::{ApplyOptions, SelectOptions};
use tandem_core::schema::Schema;
use tandem_core::Error as CoreError;

use crate::error::RemoteError;

/// `Send`, so a round can fetch the next batch while it stores this one.
pub trait Remote: Send {
    /// `sync_schema(scope)` on the server.
    fn schema(&mut self, scope: &str) -> Result<Schema, RemoteError>;
    /// `sync_select_changes(scope, since, options)`: changeset JSON text.
    fn select_changes(&mut self, scope: &str, since: Option<&str>, options: &SelectOptions) -> Result<String, RemoteError>;
    /// `sync_apply_changes(scope, changeset, options)`.
    fn apply_changes(&mut self, scope: &str, changeset: &str, options: &ApplyOptions) -> Result<ApplyResult, RemoteError>;
}

/// A direct connection to PostgreSQL with the tandem extension.
pub struct PostgresRemote {
    client: Client,
    url: String,
}

impl PostgresRemote {
    pub fn connect(url: &str) -> Result<Self, RemoteError> {
        let shown = redacted(url);
        let mut config: Config =
            url.parse().map_err(|e| RemoteError::Unreachable { url: shown.clone(), reason: format!("not a PostgreSQL URL: {e}") })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        config.application_name("tandem");
        let client = config.connect(NoTls).map_err(|e| RemoteError::Unreachable { url: shown.clone(), reason: describe(&e) })?;
        Ok(PostgresRemote { client, url: shown })
    }

    fn error(&self, scope: &str, error: postgres::Error) -> RemoteError {
        let Some(db) = error.as_db_error() else {
            return RemoteError::Unreachable { url: self.url.clone(), reason: error.to_string() };
        };
        let sqlstate = db.code().code().to_string();
        if sqlstate == "42883" && db.message().contains("sync_") {
            return RemoteError::ExtensionMissing { url: self.url.clone() };
        }
        if sqlstate == "42704" && db.message().starts_with("unknown scope") {
            return RemoteError::UnknownScope(scope.to_string());
        }
        if let Some(rejected) = db.detail().and_then(CoreError::rejections_from_detail) {
            return RemoteError::Rejected(rejected);
        }
        if db.detail().is_some_and(CoreError::resync_from_detail) {
            return RemoteError::WatermarkTooOld(db.message().to_string());
        }
        RemoteError::Server { sqlstate, message: db.message().to_string() }
    }

    fn one_text(&mut self, scope: &str, sql: &str, params: &[&(dyn postgres::types::ToSql + Sync)]) -> Result<String, RemoteError> {
        match self.client.query_one(sql, params) {
            Ok(row) => row
                .try_get::<_, Option<String>>(0)
                .map_err(|e| RemoteError::Protocol(e.to_string()))?
                .ok_or_else(|| RemoteError::Protocol(format!("{sql} returned NULL"))),
            Err(e) => Err(self.error(scope, e)),
        }
    }
}

fn describe(error: &postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => db.message().to_string(),
        None => error.to_string(),
    }
}

fn options_text(options: &impl serde::Serialize) -> String {
    serde_json::to_string(options).unwrap_or_else(|_| "{}".into())
}

impl Remote for PostgresRemote {
    fn schema(&mut self, scope: &str) -> Result<Schema, RemoteError> {
        let text = self.one_text(scope, "SELECT sync_schema($1)::text", &[&scope])?;
        serde_json::from_str(&text).map_err(|e| RemoteError::Protocol(format!("unreadable schema: {e}")))
    }

    fn select_changes(&mut self, scope: &str, since: Option<&str>, options: &SelectOptions) -> Result<String, RemoteError> {
        let options = options_text(options);
        self.one_text(scope, "SELECT sync_select_changes_json($1, $2, $3::text::jsonb)::text", &[&scope, &since, &options])
    }

    fn apply_changes(&mut self, scope: &str, changeset: &str, options: &ApplyOptions) -> Result<ApplyResult, RemoteError> {
        let options = options_text(options);
        let text = self.one_text(
            scope,
            "SELECT sync_apply_changes_json($1, $2::text::json, $3::text::jsonb)::text",
            &[&scope, &changeset, &options],
        )?;
        serde_json::from_str(&text).map_err(|e| RemoteError::Protocol(format!("unreadable apply result: {e}")))
    }
}

/// Opens the remote a URL names.
pub fn open(url: &str) -> Result<Box<dyn Remote>, RemoteError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Box::new(PostgresRemote::connect(url)?))
    } else {
        Err(RemoteError::Unreachable { url: redacted(url), reason: "unsupported remote: use postgres://user@host:port/database".into() })
    }
}
