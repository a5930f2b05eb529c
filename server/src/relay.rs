//! The sync functions a device calls, each request one call on a
//! pooled connection: the gateway decides nothing the extension decides.
//! Results are passed on as the text PostgreSQL wrote.

use deadpool_postgres::{Pool, PoolError};
use tandem_core::sql::calls::{self, DEVICE_FUNCTIONS};
use tokio_postgres::types::ToSql;

use crate::api_error::ApiError;

#[derive(Clone)]
pub struct Relay {
    pool: Pool,
}

fn pool_error(error: PoolError) -> ApiError {
    ApiError::unavailable("no database connection for the request", &error)
}

impl Relay {
    pub fn new(pool: Pool) -> Relay {
        Relay { pool }
    }

    async fn one_text(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<String, ApiError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let statement = client.prepare_cached(sql).await.map_err(|e| ApiError::from_database(&e))?;
        let row = client.query_one(&statement, params).await.map_err(|e| ApiError::from_database(&e))?;
        match row.try_get::<_, Option<String>>(0) {
            Ok(Some(text)) => Ok(text),
            Ok(None) => Err(ApiError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, format!("{sql} returned NULL"))),
            Err(e) => Err(ApiError::unavailable("unreadable result", &e)),
        }
    }

    /// `sync_schema(scope, options)`: the scope's schema and the server's id.
    pub async fn schema(&self, scope: &str, options: &str) -> Result<String, ApiError> {
        self.one_text(calls::SCHEMA, &[&scope, &options]).await
    }

    /// `sync_select_changes_json(scope, since, options)`: a changeset.
    pub async fn select_changes(&self, scope: &str, since: Option<&str>, options: &str) -> Result<String, ApiError> {
        self.one_text(calls::SELECT_CHANGES, &[&scope, &since, &options]).await
    }

    /// `sync_apply_changes_json(scope, changeset, options)`: the apply result.
    pub async fn apply_changes(&self, scope: &str, changeset: &str, options: &str) -> Result<String, ApiError> {
        self.one_text(calls::APPLY_CHANGES, &[&scope, &changeset, &options]).await
    }

    /// `sync_verify(scope, options)`: one step of a device's verify.
    pub async fn verify(&self, scope: &str, options: &str) -> Result<String, ApiError> {
        self.one_text(calls::VERIFY, &[&scope, &options]).await
    }

    /// Whether a pooled connection answers and its role may execute what
    /// devices call; `Err` says what to fix.
    pub async fn check(&self) -> Result<(), String> {
        let client = self.pool.get().await.map_err(|e| no_connection(&e))?;
        let row = client
            .query_one(
                "SELECT current_user::text, ARRAY(SELECT f FROM unnest($1::text[]) f \
                 WHERE NOT pg_catalog.has_function_privilege(f::regprocedure, 'EXECUTE')), \
                 (SELECT bool_or(r.rolsuper) FROM pg_catalog.pg_roles r WHERE r.rolname IN (current_user, session_user))",
                &[&DEVICE_FUNCTIONS.as_slice()],
            )
            .await
            .map_err(|e| match e.as_db_error() {
                Some(db) if db.code().code() == "42883" => {
                    "the tandem extension is not installed in this database: run CREATE EXTENSION tandem there".to_string()
                }
                Some(db) => db.message().to_string(),
                None => e.to_string(),
            })?;
        let (role, missing, superuser): (String, Vec<String>, Option<bool>) = (row.get(0), row.get(1), row.get(2));
        if superuser == Some(true) {
            // A scope's owner's code never runs in a superuser's session, so
            // every sync would be refused; and a gateway needs no such rights
            // (nor a superuser login behind a SET ROLE, which it could undo).
            return Err(format!(
                "role \"{role}\" (or the login behind it) is a superuser: the gateway connects as a role that may only \
                 execute the device functions (CREATE ROLE tandem_gateway ...; docs/deploy.md)"
            ));
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "role \"{role}\" may not execute {}: GRANT EXECUTE ON FUNCTION sync_schema, sync_select_changes_json, \
                 sync_apply_changes_json TO {role} (docs/deploy.md)",
                missing.join(", ")
            ))
        }
    }
}

/// Why the gateway cannot reach PostgreSQL, with every cause the error
/// carries (a TLS failure names its reason only there), and what to check.
fn no_connection(error: &(dyn std::error::Error + 'static)) -> String {
    let text = format!("no connection: {}", tandem_core::error::with_causes(error));
    let tls = ["TLS", "tls", "certificate", "handshake"].iter().any(|sign| text.contains(sign));
    match tls {
        true => format!("{text} (check sslrootcert in --database against the server's certificate, and that the server has ssl = on)"),
        false => text,
    }
}
