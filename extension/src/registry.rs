//! Tandem's own bookkeeping: scopes, their tables' tracking ids, and clients
//! with the filter parameters they are bound to.

use serde_json::Value;
use tandem_core::options::Params;
use tandem_core::schema::Schema;
use tandem_core::sql::registry as sql;
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

/// Finds the `=` of the scope's types that bring their own (see
/// `Schema::operators`): one catalog read, and none for a scope of
/// PostgreSQL's own types.
pub fn fill_operators(spi: &Spi<'_>, schema: &mut Schema) -> Result<()> {
    let types = schema.qualified_types();
    if types.is_empty() {
        return Ok(());
    }
    spi::each(spi, sql::operators(types), |row| {
        schema.operators.insert(row.pg_type, row.schema);
        Ok(())
    })?;
    Ok(())
}

/// Loads a scope, or `None` when it does not exist. Reads only.
pub fn find_scope(spi: &Spi<'_>, name: &str) -> Result<Option<StoredScope>> {
    let Some(sql::ScopeRow { schema, purged_before, tracked_since, ids }) = spi::first(spi, sql::scope(name))? else {
        return Ok(None);
    };
    let mut schema = parse_schema(&schema)?;
    fill_operators(spi, &mut schema)?;
    let ids: serde_json::Map<String, Value> =
        serde_json::from_str(&ids).map_err(|e| Error::Internal(format!("the tables of scope {name} are unreadable: {e}")))?;
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
    spi::first_mut(spi, sql::schema_version(name))?.ok_or_else(|| Error::UnknownScope(name.to_string()))
}

pub fn load_scope(spi: &Spi<'_>, name: &str) -> Result<StoredScope> {
    let stored = find_scope(spi, name)?.ok_or_else(|| Error::UnknownScope(name.to_string()))?;
    let scope = stored.scope();
    let objects: Vec<String> = (0..scope.schema.tables.len()).flat_map(|t| [scope.track(t), scope.log(t), scope.exits(t)]).collect();
    if let Some(object) = spi::first(spi, sql::first_missing(objects.clone()))?.flatten() {
        let table = objects.iter().position(|o| *o == object).map_or_else(|| object.clone(), |i| scope.table(i / 3).name.clone());
        return Err(Error::TrackingMissing { scope: name.to_string(), table, object });
    }
    Ok(stored)
}

/// The server's id, the `origin` of its changesets, and the ids it had
/// before it was restored into another cluster (see `cluster`).
pub fn server_id(spi: &Spi<'_>) -> Result<(String, Vec<String>)> {
    let row = spi::first(spi, sql::server())?.ok_or_else(|| Error::Internal("tandem.server has no row: provision a scope first".into()))?;
    let moved_from = serde_json::from_str(&row.moved_from)
        .map_err(|e| Error::Internal(format!("tandem.server.moved_from is unreadable ({}): {e}", row.moved_from)))?;
    Ok((row.server_id, moved_from))
}

/// A client as the server knows it.
#[derive(Debug, Clone)]
pub struct StoredClient {
    pub scope: String,
    pub params: Params,
}

pub fn find_client(spi: &Spi<'_>, client_id: &str) -> Result<Option<StoredClient>> {
    let found = spi::first(spi, sql::client(client_id))?;
    found.map(|row| Ok(StoredClient { scope: row.scope, params: stored_params(&row.params)? })).transpose()
}

/// Who a call runs as, and with which filter parameters.
#[derive(Debug, Clone)]
pub struct Identity {
    pub client_id: Option<String>,
    pub params: Params,
    /// Resolved by a token: its registration must still be there when the
    /// call records the visit (see [`record_client`]).
    pub by_token: bool,
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

/// What every device call does first: checks that the database is this
/// cluster's, that the caller may know the scope, and who it is (the
/// token's client, or the owner); gives the scope and that identity.
pub fn device_caller(
    spi: &mut Spi<'_>,
    scope_name: &str,
    client_id: Option<&str>,
    token: Option<&str>,
    given: Option<&Params>,
) -> Result<(StoredScope, Identity)> {
    crate::cluster::ensure_here(spi)?;
    crate::privileges::require_known_scope(spi, scope_name, token)?;
    let stored = load_scope(spi, scope_name)?;
    let owner = crate::privileges::caller_owns(spi, scope_name)?;
    let identity = resolve_identity(spi, scope_name, owner, client_id, token, given)?;
    Ok((stored, identity))
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
            let Some(sql::ClientRow { client_id: id, scope: stored_scope, params }) = spi::first(spi, sql::client_by_token(token))? else {
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
            None => return Ok(Identity { client_id: None, params: given.cloned().unwrap_or_default(), by_token: false }),
        },
    };
    let Some((id, stored)) = stored else {
        return Ok(Identity { client_id: client_id.map(str::to_string), params: given.cloned().unwrap_or_default(), by_token: false });
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
        _ => Ok(Identity { client_id: Some(id), params: stored.params, by_token: token.is_some() }),
    }
}

/// Records a client's visit, binding a new client id to `params`. A
/// caller that came with a token visits its registration only: a revoke
/// that committed while the call ran removed it, and the call fails as
/// the revoked token would (rolled back; the device keeps what it sent)
/// instead of making the client again (helper 98).
pub fn record_client(spi: &mut Spi<'_>, scope: &str, client_id: &str, identity: &Identity) -> Result<()> {
    if identity.by_token {
        return match spi::run(spi, sql::visit_registered_client(client_id, scope))? {
            1 => Ok(()),
            _ => Err(Error::InvalidToken(scope.to_string())),
        };
    }
    let params_text = Value::Object(identity.params.clone().into_iter().collect()).to_string();
    let recorded = spi::run(spi, sql::record_client(client_id, scope, params_text))?;
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
    if spi::first(spi, sql::client(replica_id))?.is_none() {
        Ok(())
    } else {
        Err(Error::ForeignReplica { replica: replica_id.to_string(), client: client_id.to_string() })
    }
}

/// What the server has given a replica's pulls, as far as it knows.
pub enum Issued {
    /// It never heard of the replica: a dump from before its first sync
    /// was restored over the database (or its client was removed).
    Unknown,
    /// It knows the replica from uploads only: this history never gave
    /// it a watermark. (An upload comes before its round's pull, so a
    /// file the restored server never heard of is recorded by its upload
    /// first.)
    NeverPulled,
    /// It pulled, but before release 0.2.0, which records the watermark.
    Unrecorded,
    /// The watermark its last pull was given.
    Watermark(String),
}

/// What the server's history holds of a replica: what its pulls were
/// given, and the transaction of its last upload (every answer the
/// replica got came from that one or an earlier one).
pub struct History {
    pub issued: Issued,
    pub last_upload_version: Option<String>,
}

/// What the server's history holds of replica `replica_id`.
pub fn history_of(spi: &Spi<'_>, replica_id: &str) -> Result<History> {
    Ok(match spi::first(spi, sql::replica(replica_id))? {
        None => History { issued: Issued::Unknown, last_upload_version: None },
        Some(row) => History {
            issued: match (row.last_issued, row.last_since) {
                (Some(issued), _) => Issued::Watermark(issued),
                (None, Some(_)) => Issued::Unrecorded,
                (None, None) => Issued::NeverPulled,
            },
            last_upload_version: row.last_version,
        },
    })
}

/// The replica `replica_id`, if it ever synced. A replica belongs to the
/// client that first used its id: any other client is refused.
pub fn find_replica(spi: &Spi<'_>, replica_id: &str, client_id: &str) -> Result<Option<StoredReplica>> {
    refuse_other_clients_id(spi, replica_id, client_id)?;
    let found = spi::first(spi, sql::replica(replica_id))?.map(|row| StoredReplica {
        client_id: row.client_id,
        last_upload: row.last_upload,
        last_version: row.last_version,
        last_applied: row.last_applied,
    });
    match found {
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
    let recorded = spi::run(spi, sql::record_replica(replica_id, client_id, needs, issued))?;
    if recorded == 1 {
        Ok(())
    } else {
        Err(Error::ForeignReplica { replica: replica_id.to_string(), client: client_id.to_string() })
    }
}

/// Records a replica's upload: its transaction (every answer the replica
/// holds is from it or an earlier one) and, with its id, what it applied,
/// so a retry of it is acknowledged instead of applied twice.
pub fn record_upload(spi: &mut Spi<'_>, replica_id: &str, upload_id: Option<&str>, version: &str, applied: Option<&str>) -> Result<()> {
    spi::run(spi, sql::record_upload(replica_id, upload_id, version, applied))?;
    Ok(())
}
