//! A scope's clients and their tokens: `sync_register_client` binds a client
//! id to one scope and one set of filter parameters, with a bearer token of
//! which only a hash is kept; `sync_clients`, `sync_revoke_client` and
//! `sync_rotate_token` are its owner's for managing them.

use pgrx::prelude::*;
use serde_json::{json, Value};
use tandem_core::identity::new_token;
use tandem_core::options::{check_params, Params};
use tandem_core::schema::Schema;
use tandem_core::sql::partition::{bind_params, still_used};
use tandem_core::sql::registry as sql;
use tandem_core::sql::Scope;
use tandem_core::{Error, Result};

use crate::json_text::JsonbText;
use crate::privileges;
use crate::registry;
use crate::report::{options, required, run};
use crate::spi::{self, Spi};

/// Issues `{client_id, token}` for `scope` and `params`. The token is shown
/// once; the server stores only its SHA-256, and every call made with this
/// identity runs with exactly these parameters.
#[pg_extern(volatile, security_definer)]
fn sync_register_client(scope: Option<&str>, params: default!(Option<JsonbText>, "'{}'")) -> JsonbText {
    run("sync_register_client", || {
        let scope = required(scope, "scope")?;
        let params: Params = match options(params)? {
            None | Some(Value::Null) => Params::new(),
            Some(Value::Object(map)) => map.into_iter().collect(),
            Some(other) => return Err(Error::Params(format!("params must be a JSON object, got {other}"))),
        };
        spi::connect(|spi| register(spi, scope, &params)).map(|v| JsonbText::from_value(&v))
    })
}

pub fn register(spi: &mut Spi<'_>, scope_name: &str, params: &Params) -> Result<Value> {
    check_params(params)?;
    privileges::require_owner(spi, scope_name, "sync_register_client")?;
    let stored = registry::load_scope(spi, scope_name)?;
    let scope = stored.scope();
    // Every parameter the scope's filters use must be given, and typed right.
    bind_params(&scope, params, 0..scope.schema.tables.len())?;
    let client_id =
        spi::first_mut(spi, sql::new_client_id())?.flatten().ok_or_else(|| Error::Internal("gen_random_uuid() returned no id".into()))?;
    let token = new_token(&client_id, &secret()?);
    let params_text = Value::Object(params.clone().into_iter().collect()).to_string();
    spi::run(spi, sql::register_client(&client_id, scope_name, params_text, &token))?;
    Ok(json!({ "client_id": client_id, "token": token }))
}

/// Refuses a changed scope that a registered client could no longer
/// sync: its filters use a parameter the registration lacks, or of another
/// type. A registration's parameters never change (its token carries
/// them), so the change waits until such clients are revoked.
pub fn require_registrations_fit(spi: &Spi<'_>, schema: &Schema) -> Result<()> {
    let ids: Vec<i64> = vec![0; schema.tables.len()];
    let scope = Scope::new(schema, &ids);
    let mut registered = Vec::new();
    spi::each(spi, sql::registered_clients(&schema.scope), |row| {
        registered.push(row);
        Ok(())
    })?;
    for sql::ClientRow { client_id, params, .. } in registered {
        let params = registry::stored_params(&params)?;
        if let Err(error) = bind_params(&scope, &still_used(&scope, &params), 0..schema.tables.len()) {
            return Err(Error::InvalidSetup(format!(
                "client {client_id} was registered with parameters {} that the changed filters cannot use ({error}); \
                 revoke such clients first (sync_revoke_client) and register them again after the change, or change the \
                 filters so their parameters fit",
                Value::Object(params.into_iter().collect())
            )));
        }
    }
    Ok(())
}

/// The scope's clients with their parameters and when each of their files
/// (replicas) last synced: which devices are live, which are gone.
#[pg_extern(volatile, security_definer)]
fn sync_clients(scope: Option<&str>) -> JsonbText {
    run("sync_clients", || {
        let scope = required(scope, "scope")?;
        spi::connect(|spi| {
            privileges::require_clients_owner(spi, scope, "sync_clients")?;
            list(spi, scope).map(|v| JsonbText::from_value(&v))
        })
    })
}

/// Revokes a client: its token is refused from the next call on, and its
/// files no longer hold back `sync_cleanup`. Returns whether it existed.
#[pg_extern(volatile, security_definer)]
fn sync_revoke_client(scope: Option<&str>, client_id: Option<&str>) -> bool {
    run("sync_revoke_client", || {
        let scope = required(scope, "scope")?;
        let client_id = required(client_id, "client_id")?;
        spi::connect(|spi| {
            privileges::require_clients_owner(spi, scope, "sync_revoke_client")?;
            let removed = spi::run(spi, sql::revoke_client(scope, client_id))?;
            Ok(removed > 0)
        })
    })
}

/// Issues a new token for an existing client; the old one is refused from
/// now on. The client id, its parameters and its files stay, so a device
/// that syncs with the new token keeps its unsent changes.
#[pg_extern(volatile, security_definer)]
fn sync_rotate_token(scope: Option<&str>, client_id: Option<&str>) -> JsonbText {
    run("sync_rotate_token", || {
        let scope = required(scope, "scope")?;
        let client_id = required(client_id, "client_id")?;
        spi::connect(|spi| {
            privileges::require_owner(spi, scope, "sync_rotate_token")?;
            let token = new_token(client_id, &secret()?);
            let updated = spi::run(spi, sql::rotate_token(scope, client_id, &token))?;
            if updated == 0 {
                return Err(Error::NoSuchClient { scope: scope.to_string(), client: client_id.to_string() });
            }
            Ok(JsonbText::from_value(&json!({ "client_id": client_id, "token": token })))
        })
    })
}

/// 32 random bytes for a token's secret.
fn secret() -> Result<[u8; 32]> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| Error::Internal(format!("no randomness for a token: {e}")))?;
    Ok(secret)
}

/// The clients of `scope` as `sync_clients` and `sync_status` show them.
pub fn list(spi: &mut Spi<'_>, scope: &str) -> Result<Value> {
    let text = spi::first_mut(spi, sql::client_list(scope))?.flatten().unwrap_or_else(|| "[]".into());
    serde_json::from_str(&text).map_err(|e| Error::Internal(format!("clients of {scope}: {e}")))
}
