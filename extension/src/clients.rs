//! `sync_register_client`: a client identity bound to one scope and one set
//! of filter parameters, with a bearer token of which only a hash is kept.

use pgrx::prelude::*;
use serde_json::{json, Value};
use tandem_core::identity::new_token;
use tandem_core::options::{check_params, Params};
use tandem_core::sql::partition::bind_params;
use tandem_core::{Error, Result};

use crate::json_text::JsonbText;
use crate::registry;
use crate::report::{options, required, run};
use crate::spi::{self, Spi};

/// Issues `{client_id, token}` for `scope` and `params`. The token is shown
/// once; the server stores only its SHA-256, and every call made with this
/// identity runs with exactly these parameters.
#[pg_extern(volatile)]
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
    let stored = registry::load_scope(spi, scope_name)?;
    let scope = stored.scope();
    // Every parameter the scope's filters use must be given, and typed right.
    bind_params(&scope, params, 0..scope.schema.tables.len())?;
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| Error::Internal(format!("no randomness for a token: {e}")))?;
    let client_id =
        spi::one::<String>(spi, "SELECT gen_random_uuid()::text", &[])?.ok_or_else(|| Error::Internal("no client id".into()))?;
    let token = new_token(&client_id, &secret);
    spi::exec(
        spi,
        "INSERT INTO tandem.clients (client_id, scope, params, token_hash) \
         VALUES ($1, $2, $3::jsonb, sha256(convert_to($4, 'UTF8')))",
        &[
            client_id.as_str().into(),
            scope_name.into(),
            Value::Object(params.clone().into_iter().collect()).to_string().into(),
            token.as_str().into(),
        ],
    )?;
    Ok(json!({ "client_id": client_id, "token": token }))
}
