//! The `sync_*` SQL functions on a SQLite connection: the same names and
//! meaning as on PostgreSQL (JSON is TEXT here).

use rusqlite::functions::{Context, FunctionFlags};
use rusqlite::Connection;
use serde_json::Value;
use tandem_core::options::{ApplyOptions, SelectOptions};
use tandem_core::schema::Schema;

use crate::agent::SyncOptions;
use crate::error::{to_json, LocalError, Result};
use crate::{apply, changes, provision, remote, status, verify, watch};

fn text_arg(ctx: &Context<'_>, index: usize, name: &str) -> Result<String> {
    match ctx.get::<Option<String>>(index) {
        Ok(Some(text)) => Ok(text),
        Ok(None) => Err(LocalError::Invalid(format!("{name} must not be NULL"))),
        Err(_) => Err(LocalError::Invalid(format!("{name} must be text"))),
    }
}

fn optional_text(ctx: &Context<'_>, index: usize, name: &str) -> Result<Option<String>> {
    if index >= ctx.len() {
        return Ok(None);
    }
    ctx.get::<Option<String>>(index).map_err(|_| LocalError::Invalid(format!("{name} must be text or NULL")))
}

fn json_arg(ctx: &Context<'_>, index: usize, name: &str) -> Result<Option<Value>> {
    match optional_text(ctx, index, name)? {
        None => Ok(None),
        Some(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| tandem_core::Error::Malformed { what: "JSON", reason: format!("{name}: {e}") }.into()),
    }
}

/// Runs a function body on the connection the function was called on.
fn call(ctx: &Context<'_>, body: impl FnOnce(&Connection, &Context<'_>) -> Result<Option<String>>) -> rusqlite::Result<Option<String>> {
    // SAFETY: the connection handle is the one executing this call, used only
    // within it, on this thread.
    let conn = unsafe { ctx.get_connection()? };
    body(&conn, ctx).map_err(|e| rusqlite::Error::UserFunctionError(Box::new(e)))
}

/// Registers every `sync_*` function on `conn`.
pub fn register(conn: &Connection) -> rusqlite::Result<()> {
    // Not for triggers or views: these functions write and talk to servers.
    let flags = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DIRECTONLY;
    conn.create_scalar_function("sync_provision", 2, flags, |ctx| {
        call(ctx, |conn, ctx| {
            let scope = text_arg(ctx, 0, "scope")?;
            let schema: Schema = serde_json::from_str(&text_arg(ctx, 1, "schema")?)
                .map_err(|e| tandem_core::Error::Malformed { what: "schema", reason: e.to_string() })?;
            let schema = provision::provision(conn, &scope, &schema)?;
            to_json(&schema).map(Some)
        })
    })?;
    conn.create_scalar_function("sync_deprovision", 1, flags, |ctx| {
        call(ctx, |conn, ctx| {
            provision::deprovision(conn, &text_arg(ctx, 0, "scope")?)?;
            Ok(None)
        })
    })?;
    conn.create_scalar_function("sync_schema", 1, flags, |ctx| {
        call(ctx, |conn, ctx| {
            let state = crate::meta::require(conn, &text_arg(ctx, 0, "scope")?)?;
            to_json(&*state.schema).map(Some)
        })
    })?;
    for arity in [2, 3] {
        conn.create_scalar_function("sync_select_changes", arity, flags, |ctx| {
            call(ctx, |conn, ctx| {
                let options = SelectOptions::parse(json_arg(ctx, 2, "options")?.as_ref())?;
                let since = optional_text(ctx, 1, "since")?;
                changes::select_changes(conn, &text_arg(ctx, 0, "scope")?, since.as_deref(), &options).map(Some)
            })
        })?;
        conn.create_scalar_function("sync_apply_changes", arity, flags, |ctx| {
            call(ctx, |conn, ctx| {
                // Checked like the server's (an unknown option is an error);
                // the local side has no policy or identity to apply.
                ApplyOptions::parse(json_arg(ctx, 2, "options")?.as_ref())?;
                apply::apply_changes(conn, &text_arg(ctx, 0, "scope")?, &text_arg(ctx, 1, "changeset")?).map(Some)
            })
        })?;
        conn.create_scalar_function("sync_run", arity, flags, |ctx| {
            call(ctx, |conn, ctx| {
                let url = text_arg(ctx, 0, "remote")?;
                let scope = text_arg(ctx, 1, "scope")?;
                let options = SyncOptions::parse(json_arg(ctx, 2, "options")?.as_ref())?;
                let mut remote = remote::open(&url, options.ca_cert.as_deref())?;
                // With "watch", round after round for that many seconds.
                let report = watch::sync(conn, remote.as_mut(), &scope, &options, &|| false, &mut |_| {})?;
                to_json(&report).map(Some)
            })
        })?;
        conn.create_scalar_function("sync_verify", arity, flags, |ctx| {
            call(ctx, |conn, ctx| {
                let url = text_arg(ctx, 0, "remote")?;
                let scope = text_arg(ctx, 1, "scope")?;
                let options = verify::Options::parse(json_arg(ctx, 2, "options")?.as_ref())?;
                let mut remote = remote::open(&url, options.ca_cert.as_deref())?;
                to_json(&verify::verify(conn, remote.as_mut(), &scope, &options)?).map(Some)
            })
        })?;
    }
    conn.create_scalar_function("sync_status", 1, flags, |ctx| {
        call(ctx, |conn, ctx| Ok(Some(status::status(conn, &text_arg(ctx, 0, "scope")?)?.to_string())))
    })?;
    for arity in [1, 2] {
        conn.create_scalar_function("sync_cleanup", arity, flags, |ctx| {
            call(ctx, |conn, ctx| {
                tandem_core::options::CleanupOptions::parse(json_arg(ctx, 1, "options")?.as_ref())?;
                Ok(Some(status::cleanup(conn, &text_arg(ctx, 0, "scope")?)?.to_string()))
            })
        })?;
    }
    Ok(())
}
