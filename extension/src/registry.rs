//! Tandem's own bookkeeping: scopes, their tables' tracking ids, and clients
//! with the filter parameters they are bound to.

use serde_json::Value;
use tandem_core::options::Params;
use tandem_core::schema::Schema;
use tandem_core::sql::Scope;
use tandem_core::{Error, Result};

use crate::spi::{self, Spi};

/// A provisioned scope as stored.
#[derive(Debug, Clone)]
pub struct StoredScope {
    pub schema: Schema,
    /// Tracking id of each table, parallel to `schema.tables`.
    pub ids: Vec<i64>,
    /// xid before which cleanup purged tombstones (text), if ever.
    pub purged_before: Option<String>,
    /// The transaction that made the scope's tracking (text).
    pub tracked_since: Option<String>,
}

impl StoredScope {
    pub fn scope(&self) -> Scope<'_> {
        Scope::new(&self.schema, &self.ids)
    }
}

/// A client's parameters as stored (a jsonb object).
pub(crate) fn stored_params(text: &str) -> Result<Params> {
    serde_json::from_str(text).map_err(|e| Error::Internal(format!("stored client parameters are unreadable: {e}")))
}

fn parse_schema(text: &str) -> Result<Schema> {
    serde_json::from_str(text).map_err(|e| Error::Internal(format!("stored schema is unreadable: {e}")))
}

/// Loads a scope, or `None` when it does not exist. Reads only.
pub fn find_scope(spi: &Spi<'_>, name: &str) -> Result<Option<StoredScope>> {
    let rows = spi::select(
        spi,
        "SELECT s.schema::text, s.purged_before::text, s.tracked_since::text, \
                coalesce((SELECT jsonb_object_agg(t.name, t.id) FROM tandem.scope_tables t WHERE t.scope = s.name), '{}')::text \
         FROM tandem.scopes s WHERE s.name = $1",
        &[name.into()],
        |row| Ok((spi::text(row, 1)?, spi::text(row, 2)?, spi::text(row, 3)?, spi::text(row, 4)?)),
    )?;
    let Some((schema, purged_before, tracked_since, ids)) = rows.into_iter().next() else { return Ok(None) };
    let schema = parse_schema(&schema.unwrap_or_default())?;
    let ids: serde_json::Map<String, Value> = serde_json::from_str(&ids.unwrap_or_default())
        .map_err(|e| Error::Internal(format!("the tables of scope {name} are unreadable: {e}")))?;
    let ids = schema
        .tables
        .iter()
        .map(|t| {
            ids.get(&t.name).and_then(Value::as_i64).ok_or_else(|| Error::TrackingMissing {
                scope: name.to_string(),
                table: t.name.clone(),
                object: "tandem.scope_tables".into(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Some(StoredScope { schema, ids, purged_before, tracked_since }))
}

/// Loads a scope whose tracking is whole: a tracking table someone dropped
/// is a clear error saying how to recover, not a failing statement later.
/// The scope's schema version as the latest committed change left it.
pub fn schema_version(spi: &mut Spi<'_>, name: &str) -> Result<i64> {
    spi::one::<i64>(spi, "SELECT (schema ->> 'version')::int8 FROM tandem.scopes WHERE name = $1", &[name.into()])?
        .ok_or_else(|| Error::UnknownScope(name.to_string()))
}

pub fn load_scope(spi: &Spi<'_>, name: &str) -> Result<StoredScope> {
    let stored = find_scope(spi, name)?.ok_or_else(|| Error::UnknownScope(name.to_string()))?;
    let scope = stored.scope();
    let objects: Vec<String> = (0..scope.schema.tables.len()).flat_map(|t| [scope.track(t), scope.log(t), scope.exits(t)]).collect();
    let missing = spi::select(
        spi,
        "SELECT o.n FROM unnest($1::text[]) WITH ORDINALITY AS o(n, i) WHERE pg_catalog.to_regclass(o.n) IS NULL ORDER BY o.i LIMIT 1",
        &[objects.clone().into()],
        |row| spi::text(row, 1),
    )?;
    if let Some(object) = missing.into_iter().next().flatten() {
        let t = objects.iter().position(|o| *o == object).unwrap_or_default() / 3;
        return Err(Error::TrackingMissing { scope: name.to_string(), table: scope.table(t).name.clone(), object });
    }
    Ok(stored)
}

/// The server's id, the `origin` of its changesets, and the ids it had
/// before it was restored into another cluster (see `cluster`).
pub fn server_id(spi: &Spi<'_>) -> Result<(String, Vec<String>)> {
    spi::select(spi, "SELECT server_id::text, moved_from::text[] FROM tandem.server", &[], |row| {
        Ok((spi::required_text(row, 1)?, spi::get::<Vec<String>>(row, 2)?.unwrap_or_default()))
    })?
    .into_iter()
    .next()
    .ok_or_else(|| Error::Internal("tandem.server has no row: provision a scope first".into()))
}

/// A client as the server knows it.
#[derive(Debug, Clone)]
pub struct StoredClient {
    pub scope: String,
    pub params: Params,
}

pub fn find_client(spi: &Spi<'_>, client_id: &str) -> Result<Option<StoredClient>> {
    let rows = spi::select(spi, "SELECT scope, params::text FROM tandem.clients WHERE client_id = $1", &[client_id.into()], |row| {
        Ok((spi::required_text(row, 1)?, spi::required_text(row, 2)?))
    })?;
    rows.into_iter().next().map(|(scope, params)| Ok(StoredClient { scope, params: stored_params(&params)? })).transpose()
}

/// Who a call runs as, and with which filter parameters.
#[derive(Debug, Clone)]
pub struct Identity {
    pub client_id: Option<String>,
    pub params: Params,
}

impl Identity {
    /// The parameters to filter by: those a caller passed (`passed`), as
    /// they are, for `bind_params` to check; a registration's, less those
    /// no filter of the scope uses any more (a registration outlives a
    /// filtered table leaving its scope).
    pub fn filter_params(&self, scope: &Scope<'_>, passed: bool) -> Params {
        if passed {
            self.params.clone()
        } else {
            tandem_core::sql::partition::still_used(scope, &self.params)
        }
    }
}

/// Resolves the caller. A token names a registered client, which runs with
/// the parameters it was registered with. Without one, a scope takes only
/// its owner (`owner`), who may name any client or pass parameters: a known
/// client id runs with the parameters it was bound to (passing different
/// ones is an error), an unknown one is bound to the parameters of its
/// first call (see [`record_client`]). The functions run with the
/// extension's rights, so even a scope without filters takes no one else
/// without a token: `EXECUTE` alone reads and writes nothing.
pub fn resolve_identity(
    spi: &Spi<'_>,
    scope_name: &str,
    owner: bool,
    client_id: Option<&str>,
    token: Option<&str>,
    given: Option<&Params>,
) -> Result<Identity> {
    if token.is_none() && !owner {
        return Err(Error::TokenRequired(scope_name.to_string()));
    }
    let scope = scope_name;
    let stored = match token {
        Some(token) => {
            let found = spi::select(
                spi,
                "SELECT client_id, scope, params::text FROM tandem.clients WHERE token_hash = sha256(convert_to($1, 'UTF8'))",
                &[token.into()],
                |row| Ok((spi::required_text(row, 1)?, spi::required_text(row, 2)?, spi::required_text(row, 3)?)),
            )?;
            let Some((id, stored_scope, params)) = found.into_iter().next() else {
                return Err(Error::InvalidToken(scope.to_string()));
            };
            if stored_scope != scope {
                return Err(Error::InvalidToken(scope.to_string()));
            }
            if let Some(claimed) = client_id {
                if claimed != id {
                    return Err(Error::TokenMismatch { claimed: claimed.to_string(), client: id });
                }
            }
            Some((id, StoredClient { scope: stored_scope, params: stored_params(&params)? }))
        }
        None => match client_id {
            Some(id) => find_client(spi, id)?.map(|stored| (id.to_string(), stored)),
            None => return Ok(Identity { client_id: None, params: given.cloned().unwrap_or_default() }),
        },
    };
    let Some((id, stored)) = stored else {
        return Ok(Identity { client_id: client_id.map(str::to_string), params: given.cloned().unwrap_or_default() });
    };
    if stored.scope != scope {
        return Err(Error::Params(format!("client \"{id}\" belongs to scope \"{}\", not \"{scope}\"", stored.scope)));
    }
    match given {
        Some(given) if *given != stored.params => Err(Error::Params(format!(
            "client \"{id}\" is bound to parameters {}; it cannot use {}: register a new client for other parameters",
            Value::Object(stored.params.clone().into_iter().collect()),
            Value::Object(given.clone().into_iter().collect()),
        ))),
        _ => Ok(Identity { client_id: Some(id), params: stored.params }),
    }
}

/// Records a client's visit, binding a new client id to `params`.
pub fn record_client(spi: &mut Spi<'_>, scope: &str, client_id: &str, params: &Params) -> Result<()> {
    let params_text = Value::Object(params.clone().into_iter().collect()).to_string();
    let recorded = spi::exec(
        spi,
        "INSERT INTO tandem.clients (client_id, scope, params, last_seen, owner) \
         VALUES ($1, $2, $3::jsonb, now(), (SELECT s.owner FROM tandem.scopes s WHERE s.name = $2)) \
         ON CONFLICT (client_id) DO UPDATE SET last_seen = now() \
         WHERE tandem.clients.scope = excluded.scope AND tandem.clients.params = excluded.params",
        &[client_id.into(), scope.into(), params_text.into()],
    )?;
    if recorded == 1 {
        Ok(())
    } else {
        // Another call bound this new client id to other parameters first.
        Err(Error::Params(format!("client \"{client_id}\" is bound to other parameters or another scope; register a new client")))
    }
}

/// One file of a client, as the server knows it.
#[derive(Debug, Clone)]
pub struct StoredReplica {
    pub client_id: String,
    /// The id of its last upload.
    pub last_upload: Option<String>,
    /// That upload's transaction.
    pub last_version: Option<String>,
    /// The changes that upload applied, as JSON.
    pub last_applied: Option<String>,
}

/// A caller that names no replica is the replica with its client's id, so
/// no caller may take another client's id as its replica's: the client
/// would be locked out of its own default replica.
fn refuse_other_clients_id(spi: &Spi<'_>, replica_id: &str, client_id: &str) -> Result<()> {
    if replica_id == client_id {
        return Ok(());
    }
    let taken = spi::select(spi, "SELECT true FROM tandem.clients WHERE client_id = $1", &[replica_id.into()], |_| Ok(()))?;
    if taken.is_empty() {
        Ok(())
    } else {
        Err(Error::ForeignReplica { replica: replica_id.to_string(), client: client_id.to_string() })
    }
}

/// The watermark replica `replica_id`'s last pull was given, if any.
pub fn issued_to(spi: &Spi<'_>, replica_id: &str) -> Result<Option<String>> {
    let rows =
        spi::select(spi, "SELECT last_issued FROM tandem.replicas WHERE replica_id = $1", &[replica_id.into()], |row| spi::text(row, 1))?;
    Ok(rows.into_iter().next().flatten())
}

/// The replica `replica_id`, if it ever synced. A replica belongs to the
/// client that first used its id: any other client is refused.
pub fn find_replica(spi: &Spi<'_>, replica_id: &str, client_id: &str) -> Result<Option<StoredReplica>> {
    refuse_other_clients_id(spi, replica_id, client_id)?;
    let rows = spi::select(
        spi,
        "SELECT client_id, last_upload, last_version::text, last_applied FROM tandem.replicas WHERE replica_id = $1",
        &[replica_id.into()],
        |row| {
            Ok(StoredReplica {
                client_id: spi::required_text(row, 1)?,
                last_upload: spi::text(row, 2)?,
                last_version: spi::text(row, 3)?,
                last_applied: spi::text(row, 4)?,
            })
        },
    )?;
    match rows.into_iter().next() {
        Some(replica) if replica.client_id != client_id => {
            Err(Error::ForeignReplica { replica: replica_id.to_string(), client: client_id.to_string() })
        }
        found => Ok(found),
    }
}

/// What a pull tells of itself: the watermark it pulled from (what the
/// replica still needs) and the one it gave.
pub struct Pulled<'a> {
    pub needs: &'a str,
    pub issued: &'a str,
}

/// Records a replica's visit (binding a new replica id to `client_id`)
/// and, for pulls, what it pulled.
pub fn record_replica(spi: &mut Spi<'_>, replica_id: &str, client_id: &str, pulled: Option<Pulled<'_>>) -> Result<()> {
    refuse_other_clients_id(spi, replica_id, client_id)?;
    let (needs, issued) = match &pulled {
        Some(p) => (Some(p.needs), Some(p.issued)),
        None => (None, None),
    };
    let recorded = spi::exec(
        spi,
        "INSERT INTO tandem.replicas (replica_id, client_id, last_seen, last_since, last_issued) VALUES ($1, $2, now(), $3, $4) \
         ON CONFLICT (replica_id) DO UPDATE SET last_seen = now(), \
             last_since = coalesce(excluded.last_since, tandem.replicas.last_since), \
             last_issued = coalesce(excluded.last_issued, tandem.replicas.last_issued) \
         WHERE tandem.replicas.client_id = excluded.client_id",
        &[replica_id.into(), client_id.into(), needs.into(), issued.into()],
    )?;
    if recorded == 1 {
        Ok(())
    } else {
        Err(Error::ForeignReplica { replica: replica_id.to_string(), client: client_id.to_string() })
    }
}

/// Records what upload `upload_id` of a replica applied, so a retry of it
/// is acknowledged instead of applied twice.
pub fn record_upload(spi: &mut Spi<'_>, replica_id: &str, upload_id: &str, version: &str, applied: &str) -> Result<()> {
    spi::exec(
        spi,
        "UPDATE tandem.replicas SET last_upload = $2, last_version = $3::xid8, last_applied = $4 WHERE replica_id = $1",
        &[replica_id.into(), upload_id.into(), version.into(), applied.into()],
    )?;
    Ok(())
}
