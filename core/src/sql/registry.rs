//! The server's bookkeeping statements: scopes and their tables' tracking
//! ids, clients with their tokens and parameters, their replicas (files),
//! and the server's identity (the `tandem.*` tables of the extension's
//! bootstrap SQL). Each statement comes with the decoder of its rows.

use super::query::{Binds, Col, Columns, Decode, DecodeError, Fields, NoRows, Query};
use super::Scope;

/// A text column that is never NULL, owned.
fn owned(f: &Fields<'_>, col: Col) -> Result<String, DecodeError> {
    f.required(col).map(str::to_string)
}

/// A scope as stored: its schema, when cleanup last purged, when its
/// tracking began, and its tables' tracking ids as a JSON object by name.
#[derive(Debug)]
pub struct ScopeRow {
    pub schema: String,
    pub purged_before: Option<String>,
    pub tracked_since: Option<String>,
    pub ids: String,
}

pub struct ScopeDecoder {
    schema: Col,
    purged_before: Col,
    tracked_since: Col,
    ids: Col,
}

impl Decode for ScopeDecoder {
    type Row<'a> = ScopeRow;
    fn decode<'a>(&self, f: Fields<'a>) -> Result<ScopeRow, DecodeError> {
        Ok(ScopeRow {
            schema: owned(&f, self.schema)?,
            purged_before: f.owned(self.purged_before),
            tracked_since: f.owned(self.tracked_since),
            ids: owned(&f, self.ids)?,
        })
    }
}

/// Scope `name`, if provisioned.
pub fn scope(name: &str) -> Query<ScopeDecoder> {
    let mut binds = Binds::new();
    let mut columns = Columns::new();
    let decoder = ScopeDecoder {
        schema: columns.push("schema", "s.schema::text"),
        purged_before: columns.push("purged_before", "s.purged_before::text"),
        tracked_since: columns.push("tracked_since", "s.tracked_since::text"),
        ids: columns
            .push("ids", "coalesce((SELECT jsonb_object_agg(t.name, t.id) FROM tandem.scope_tables t WHERE t.scope = s.name), '{}')::text"),
    };
    let sql = format!("SELECT {} FROM tandem.scopes s WHERE s.name = {}", columns.sql(), binds.bind(name));
    Query::new(sql, binds, &columns, decoder)
}

/// Serializes provisionings of scope `name` until the transaction ends.
pub fn lock_scope(name: &str) -> Query<NoRows> {
    let mut binds = Binds::new();
    let sql = format!("SELECT pg_advisory_xact_lock(hashtext('tandem.scope'), hashtext({}))", binds.bind(name));
    Query::exec(sql, binds)
}

/// Stores scope `name`'s setup and schema (JSON text); a new scope is
/// owned by `owner` (a role oid) and keeps the caller's `search_path`.
pub fn save_scope(name: &str, setup: String, schema: String, owner: i64, search_path: String) -> Query<NoRows> {
    let mut binds = Binds::new();
    let sql = format!(
        "INSERT INTO tandem.scopes (name, setup, schema, owner, search_path) VALUES ({}, {}::jsonb, {}::jsonb, {}::int8::oid, {}) \
         ON CONFLICT (name) DO UPDATE SET setup = excluded.setup, schema = excluded.schema, updated_at = now()",
        binds.bind(name),
        binds.bind(setup),
        binds.bind(schema),
        binds.bind(owner),
        binds.bind(search_path),
    );
    Query::exec(sql, binds)
}

/// Scope `name`'s tracking restarts now: a device that pulled before
/// resyncs (see `tracked_since`).
pub fn restart_tracking(name: &str) -> Query<NoRows> {
    let mut binds = Binds::new();
    let sql = format!("UPDATE tandem.scopes SET tracked_since = pg_current_xact_id() WHERE name = {}", binds.bind(name));
    Query::exec(sql, binds)
}

/// A scope's table as stored (`stored`, its qualified name then) and as
/// the catalog names it now.
#[derive(Debug)]
pub struct ScopeTableRow {
    pub stored: String,
    pub schema: String,
    pub name: String,
}

pub struct ScopeTableDecoder {
    stored: Col,
    schema: Col,
    name: Col,
}

impl Decode for ScopeTableDecoder {
    type Row<'a> = ScopeTableRow;
    fn decode<'a>(&self, f: Fields<'a>) -> Result<ScopeTableRow, DecodeError> {
        Ok(ScopeTableRow { stored: owned(&f, self.stored)?, schema: owned(&f, self.schema)?, name: owned(&f, self.name)? })
    }
}

/// Scope `name`'s tables, in the order they were added.
pub fn scope_tables(name: &str) -> Query<ScopeTableDecoder> {
    let mut binds = Binds::new();
    let mut columns = Columns::new();
    let decoder = ScopeTableDecoder {
        stored: columns.push("stored", "t.name"),
        schema: columns.push("schema", "n.nspname::text"),
        name: columns.push("name", "c.relname::text"),
    };
    let sql = format!(
        "SELECT {} FROM tandem.scope_tables t \
         JOIN pg_catalog.pg_class c ON c.oid = t.relid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE t.scope = {} ORDER BY t.id",
        columns.sql(),
        binds.bind(name)
    );
    Query::new(sql, binds, &columns, decoder)
}

/// Adds table `table` (its oid `relid`) to scope `name`; returns its
/// tracking id.
pub fn add_scope_table(name: &str, relid: i64, table: &str) -> Query<IntDecoder> {
    let mut binds = Binds::new();
    let mut columns = Columns::new();
    let decoder = IntDecoder(columns.push("id", "id::text"));
    let sql = format!(
        "INSERT INTO tandem.scope_tables (scope, relid, name) VALUES ({}, {}::int8::oid, {}) RETURNING {}",
        binds.bind(name),
        binds.bind(relid),
        binds.bind(table),
        columns.sql()
    );
    Query::new(sql, binds, &columns, decoder)
}

/// Records that scope `name`'s table `was` is called `now`.
pub fn rename_scope_table(name: &str, was: String, now: String) -> Query<NoRows> {
    let mut binds = Binds::new();
    let sql = format!(
        "UPDATE tandem.scope_tables SET name = {} WHERE scope = {} AND name = {}",
        binds.bind(now),
        binds.bind(name),
        binds.bind(was)
    );
    Query::exec(sql, binds)
}

/// Forgets the table with tracking id `id` (it left its scope).
pub fn remove_scope_table(id: i64) -> Query<NoRows> {
    let mut binds = Binds::new();
    let sql = format!("DELETE FROM tandem.scope_tables WHERE id = {}", binds.bind(id));
    Query::exec(sql, binds)
}

/// One text column, NULL or not.
pub struct TextDecoder(Col);

impl Decode for TextDecoder {
    type Row<'a> = Option<String>;
    fn decode<'a>(&self, f: Fields<'a>) -> Result<Option<String>, DecodeError> {
        Ok(f.owned(self.0))
    }
}

/// One integer column, never NULL (a count, an id, a version).
pub struct IntDecoder(Col);

impl Decode for IntDecoder {
    type Row<'a> = i64;
    fn decode<'a>(&self, f: Fields<'a>) -> Result<i64, DecodeError> {
        f.int(self.0)
    }
}

/// A statement of one text column `expression` over `from_where`, whose
/// placeholders `binds` already holds.
fn text_query(expression: &str, from_where: String, binds: Binds) -> Query<TextDecoder> {
    let mut columns = Columns::new();
    let decoder = TextDecoder(columns.push("value", expression));
    let sql = format!("SELECT {} {from_where}", columns.sql());
    Query::new(sql, binds, &columns, decoder)
}

/// [`text_query`] of an integer column.
fn int_query(expression: &str, from_where: String, binds: Binds) -> Query<IntDecoder> {
    let mut columns = Columns::new();
    let decoder = IntDecoder(columns.push("value", format!("({expression})::text")));
    let sql = format!("SELECT {} {from_where}", columns.sql());
    Query::new(sql, binds, &columns, decoder)
}

/// The schema version of scope `name` as the latest committed change left it.
pub fn schema_version(name: &str) -> Query<IntDecoder> {
    let mut binds = Binds::new();
    let from = format!("FROM tandem.scopes WHERE name = {}", binds.bind(name));
    int_query("schema ->> 'version'", from, binds)
}

/// The first of `objects` (qualified names) that does not exist.
pub fn first_missing(objects: Vec<String>) -> Query<TextDecoder> {
    let mut binds = Binds::new();
    let from = format!(
        "FROM unnest({}::text[]) WITH ORDINALITY AS o(n, i) WHERE pg_catalog.to_regclass(o.n) IS NULL ORDER BY o.i LIMIT 1",
        binds.bind(objects)
    );
    text_query("o.n", from, binds)
}

/// A declared type whose `=` is not PostgreSQL's own, with the schema
/// holding it (see `Schema::operators`).
#[derive(Debug)]
pub struct OperatorRow {
    pub pg_type: String,
    pub schema: String,
}

pub struct OperatorDecoder {
    pg_type: Col,
    schema: Col,
}

impl Decode for OperatorDecoder {
    type Row<'a> = OperatorRow;
    fn decode<'a>(&self, f: Fields<'a>) -> Result<OperatorRow, DecodeError> {
        Ok(OperatorRow { pg_type: owned(&f, self.pg_type)?, schema: owned(&f, self.schema)? })
    }
}

/// Of `types` (declared types), those whose equality, the `=` of their
/// default btree operator class (what a primary key and a foreign key
/// compare with), lives outside `pg_catalog`: `citext`'s. A domain answers
/// for its base type; a type no longer there answers nothing.
pub fn operators(types: Vec<String>) -> Query<OperatorDecoder> {
    let mut binds = Binds::new();
    let mut columns = Columns::new();
    let decoder = OperatorDecoder { pg_type: columns.push("pg_type", "t.name"), schema: columns.push("schema", "n.nspname::text") };
    let sql = format!(
        "SELECT {} FROM unnest({}::text[]) AS t(name) \
         JOIN pg_catalog.pg_type ty ON ty.oid = pg_catalog.to_regtype(t.name) \
         JOIN pg_catalog.pg_opclass c ON c.opcdefault AND c.opcintype = CASE WHEN ty.typtype = 'd' THEN ty.typbasetype ELSE ty.oid END \
              AND c.opcmethod = (SELECT oid FROM pg_catalog.pg_am WHERE amname = 'btree') \
         JOIN pg_catalog.pg_amop a ON a.amopfamily = c.opcfamily AND a.amopstrategy = 3 \
              AND a.amoplefttype = c.opcintype AND a.amoprighttype = c.opcintype \
         JOIN pg_catalog.pg_operator o ON o.oid = a.amopopr \
         JOIN pg_catalog.pg_namespace n ON n.oid = o.oprnamespace \
         WHERE n.nspname <> 'pg_catalog'",
        columns.sql(),
        binds.bind(types),
    );
    Query::new(sql, binds, &columns, decoder)
}

/// The server's id and the ids it had before a restore into another
/// cluster (a JSON array).
#[derive(Debug)]
pub struct ServerRow {
    pub server_id: String,
    pub moved_from: String,
}

pub struct ServerDecoder {
    server_id: Col,
    moved_from: Col,
}

impl Decode for ServerDecoder {
    type Row<'a> = ServerRow;
    fn decode<'a>(&self, f: Fields<'a>) -> Result<ServerRow, DecodeError> {
        Ok(ServerRow { server_id: owned(&f, self.server_id)?, moved_from: owned(&f, self.moved_from)? })
    }
}

pub fn server() -> Query<ServerDecoder> {
    let mut columns = Columns::new();
    let decoder = ServerDecoder {
        server_id: columns.push("server_id", "server_id::text"),
        moved_from: columns.push("moved_from", "coalesce(array_to_json(moved_from), '[]')::text"),
    };
    let sql = format!("SELECT {} FROM tandem.server", columns.sql());
    Query::new(sql, Binds::new(), &columns, decoder)
}

/// A registered or recorded client: its id, scope and parameters (a JSON
/// object).
#[derive(Debug)]
pub struct ClientRow {
    pub client_id: String,
    pub scope: String,
    pub params: String,
}

pub struct ClientDecoder {
    client_id: Col,
    scope: Col,
    params: Col,
}

impl Decode for ClientDecoder {
    type Row<'a> = ClientRow;
    fn decode<'a>(&self, f: Fields<'a>) -> Result<ClientRow, DecodeError> {
        Ok(ClientRow { client_id: owned(&f, self.client_id)?, scope: owned(&f, self.scope)?, params: owned(&f, self.params)? })
    }
}

/// Clients matching `condition` (over `c`), in the order they were made.
fn clients(condition: impl FnOnce(&mut Binds) -> String) -> Query<ClientDecoder> {
    let mut binds = Binds::new();
    let mut columns = Columns::new();
    let decoder = ClientDecoder {
        client_id: columns.push("client_id", "c.client_id"),
        scope: columns.push("scope", "c.scope"),
        params: columns.push("params", "c.params::text"),
    };
    let condition = condition(&mut binds);
    let sql = format!("SELECT {} FROM tandem.clients c WHERE {condition} ORDER BY c.created_at", columns.sql());
    Query::new(sql, binds, &columns, decoder)
}

pub fn client(client_id: &str) -> Query<ClientDecoder> {
    clients(|binds| format!("c.client_id = {}", binds.bind(client_id)))
}

/// The client a bearer token was issued to (only its hash is stored).
pub fn client_by_token(token: &str) -> Query<ClientDecoder> {
    clients(|binds| format!("c.token_hash = sha256(convert_to({}, 'UTF8'))", binds.bind(token)))
}

/// The clients of `scope` registered with a token.
pub fn registered_clients(scope: &str) -> Query<ClientDecoder> {
    clients(|binds| format!("c.scope = {} AND c.token_hash IS NOT NULL", binds.bind(scope)))
}

/// A new client id (a random UUID, as PostgreSQL makes them).
pub fn new_client_id() -> Query<TextDecoder> {
    text_query("gen_random_uuid()::text", String::new(), Binds::new())
}

/// Registers client `client_id` of `scope` with `params` (JSON text) and
/// the hash of `token`; the scope's owner owns it.
pub fn register_client(client_id: &str, scope: &str, params: String, token: &str) -> Query<NoRows> {
    let mut binds = Binds::new();
    let sql = format!(
        "INSERT INTO tandem.clients (client_id, scope, params, token_hash, owner) \
         VALUES ({}, {scope}, {}::jsonb, sha256(convert_to({}, 'UTF8')), (SELECT s.owner FROM tandem.scopes s WHERE s.name = {scope}))",
        binds.bind(client_id),
        binds.bind(params),
        binds.bind(token),
        scope = binds.bind_named("scope", || scope.into()),
    );
    Query::exec(sql, binds)
}

/// Records a client's visit, binding a new client id to `params`; changes
/// no row when the id is bound to other parameters or another scope.
pub fn record_client(client_id: &str, scope: &str, params: String) -> Query<NoRows> {
    let mut binds = Binds::new();
    let sql = format!(
        "INSERT INTO tandem.clients (client_id, scope, params, last_seen, owner) \
         VALUES ({}, {scope}, {}::jsonb, now(), (SELECT s.owner FROM tandem.scopes s WHERE s.name = {scope})) \
         ON CONFLICT (client_id) DO UPDATE SET last_seen = now() \
         WHERE tandem.clients.scope = excluded.scope AND tandem.clients.params = excluded.params",
        binds.bind(client_id),
        binds.bind(params),
        scope = binds.bind_named("scope", || scope.into()),
    );
    Query::exec(sql, binds)
}

/// Records the visit of a registered client (one that came with its
/// token); changes no row once the client was revoked.
pub fn visit_registered_client(client_id: &str, scope: &str) -> Query<NoRows> {
    let mut binds = Binds::new();
    let sql = format!(
        "UPDATE tandem.clients SET last_seen = now() WHERE client_id = {} AND scope = {} AND token_hash IS NOT NULL",
        binds.bind(client_id),
        binds.bind(scope)
    );
    Query::exec(sql, binds)
}

pub fn revoke_client(scope: &str, client_id: &str) -> Query<NoRows> {
    let mut binds = Binds::new();
    let sql = format!("DELETE FROM tandem.clients WHERE scope = {} AND client_id = {}", binds.bind(scope), binds.bind(client_id));
    Query::exec(sql, binds)
}

/// Replaces a client's token hash; changes no row for an unknown client.
pub fn rotate_token(scope: &str, client_id: &str, token: &str) -> Query<NoRows> {
    let mut binds = Binds::new();
    let sql = format!(
        "UPDATE tandem.clients SET token_hash = sha256(convert_to({}, 'UTF8')) WHERE scope = {} AND client_id = {}",
        binds.bind(token),
        binds.bind(scope),
        binds.bind(client_id)
    );
    Query::exec(sql, binds)
}

/// The clients of `scope` with their replicas, as `sync_clients` shows
/// them (a JSON array).
pub fn client_list(scope: &str) -> Query<TextDecoder> {
    let mut binds = Binds::new();
    let from = format!("FROM tandem.clients c WHERE c.scope = {}", binds.bind(scope));
    text_query(
        "coalesce(jsonb_agg(jsonb_build_object('client_id', c.client_id, 'params', c.params, \
             'registered', c.token_hash IS NOT NULL, 'created_at', c.created_at, 'last_seen', c.last_seen, \
             'replicas', (SELECT coalesce(jsonb_agg(jsonb_build_object('replica_id', r.replica_id, \
                  'last_seen', r.last_seen, 'needs_after', r.last_since) ORDER BY r.created_at), '[]') \
                  FROM tandem.replicas r WHERE r.client_id = c.client_id)) \
             ORDER BY c.created_at), '[]')::text",
        from,
        binds,
    )
}

/// One file of a client as stored: its last upload's id, transaction and
/// what it applied (JSON), and, from its last pull, the watermark it
/// pulled from (`None` when it never pulled) and the one it was given.
#[derive(Debug)]
pub struct ReplicaRow {
    pub client_id: String,
    pub last_upload: Option<String>,
    pub last_version: Option<String>,
    pub last_applied: Option<String>,
    pub last_since: Option<String>,
    pub last_issued: Option<String>,
}

pub struct ReplicaDecoder {
    client_id: Col,
    last_upload: Col,
    last_version: Col,
    last_applied: Col,
    last_since: Col,
    last_issued: Col,
}

impl Decode for ReplicaDecoder {
    type Row<'a> = ReplicaRow;
    fn decode<'a>(&self, f: Fields<'a>) -> Result<ReplicaRow, DecodeError> {
        Ok(ReplicaRow {
            client_id: owned(&f, self.client_id)?,
            last_upload: f.owned(self.last_upload),
            last_version: f.owned(self.last_version),
            last_applied: f.owned(self.last_applied),
            last_since: f.owned(self.last_since),
            last_issued: f.owned(self.last_issued),
        })
    }
}

pub fn replica(replica_id: &str) -> Query<ReplicaDecoder> {
    let mut binds = Binds::new();
    let mut columns = Columns::new();
    let decoder = ReplicaDecoder {
        client_id: columns.push("client_id", "client_id"),
        last_upload: columns.push("last_upload", "last_upload"),
        last_version: columns.push("last_version", "last_version::text"),
        last_applied: columns.push("last_applied", "last_applied::text"),
        last_since: columns.push("last_since", "last_since"),
        last_issued: columns.push("last_issued", "last_issued::text"),
    };
    let sql = format!("SELECT {} FROM tandem.replicas WHERE replica_id = {}", columns.sql(), binds.bind(replica_id));
    Query::new(sql, binds, &columns, decoder)
}

/// Records a replica's visit (binding a new replica id to `client_id`)
/// and, for a pull, the watermark it pulled from (`needs`) and the one it
/// was given (`issued`); changes no row when the replica is another
/// client's.
pub fn record_replica(replica_id: &str, client_id: &str, needs: Option<&str>, issued: Option<&str>) -> Query<NoRows> {
    let mut binds = Binds::new();
    let sql = format!(
        "INSERT INTO tandem.replicas (replica_id, client_id, last_seen, last_since, last_issued) VALUES ({}, {}, now(), {}, {}) \
         ON CONFLICT (replica_id) DO UPDATE SET last_seen = now(), \
             last_since = coalesce(excluded.last_since, tandem.replicas.last_since), \
             last_issued = coalesce(excluded.last_issued, tandem.replicas.last_issued) \
         WHERE tandem.replicas.client_id = excluded.client_id",
        binds.bind(replica_id),
        binds.bind(client_id),
        binds.bind(needs.map(str::to_string)),
        binds.bind(issued.map(str::to_string)),
    );
    Query::exec(sql, binds)
}

/// Records a replica's upload in transaction `version`: with its id,
/// what it applied (`applied`, JSON), so a retry is acknowledged; without
/// one, only its transaction (no retry of it, or of one before it, is
/// known then).
pub fn record_upload(replica_id: &str, upload_id: Option<&str>, version: &str, applied: Option<&str>) -> Query<NoRows> {
    let mut binds = Binds::new();
    let sql = format!(
        "UPDATE tandem.replicas SET last_upload = {}, last_version = {}::xid8, last_applied = {} WHERE replica_id = {}",
        binds.bind(upload_id.map(str::to_string)),
        binds.bind(version),
        binds.bind(applied.map(str::to_string)),
        binds.bind(replica_id),
    );
    Query::exec(sql, binds)
}

// -- status and cleanup ------------------------------------------------------

/// A table's tracked rows, tombstones and exit records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrackingCounts {
    pub rows: i64,
    pub tombstones: i64,
    pub exits: i64,
}

pub struct CountsDecoder {
    rows: Col,
    tombstones: Col,
    exits: Col,
}

impl Decode for CountsDecoder {
    type Row<'a> = TrackingCounts;
    fn decode<'a>(&self, f: Fields<'a>) -> Result<TrackingCounts, DecodeError> {
        Ok(TrackingCounts { rows: f.int(self.rows)?, tombstones: f.int(self.tombstones)?, exits: f.int(self.exits)? })
    }
}

pub fn tracking_counts(scope: &Scope<'_>, t: usize) -> Query<CountsDecoder> {
    let mut columns = Columns::new();
    let decoder = CountsDecoder {
        rows: columns.push("rows", "count(*) FILTER (WHERE NOT tandem_deleted)::text"),
        tombstones: columns.push("tombstones", "count(*) FILTER (WHERE tandem_deleted)::text"),
        exits: columns.push("exits", format!("(SELECT count(*) FROM {})::text", scope.exits(t))),
    };
    let sql = format!("SELECT {} FROM {}", columns.sql(), scope.track(t));
    Query::new(sql, Binds::new(), &columns, decoder)
}

/// `rows`: conflicts logged for scope `name`.
pub fn conflict_count(name: &str) -> Query<IntDecoder> {
    let mut binds = Binds::new();
    let from = format!("FROM tandem.conflicts WHERE scope = {}", binds.bind(name));
    int_query("count(*)", from, binds)
}

/// A conflict as the log keeps it, for a retried change (JSON as text).
#[derive(Debug)]
pub struct LoggedRow {
    pub key: String,
    pub kind: String,
    pub decision: String,
    pub server_row: Option<String>,
    pub client_row: Option<String>,
    pub reason: Option<String>,
}

pub struct LoggedDecoder {
    key: Col,
    kind: Col,
    decision: Col,
    server_row: Col,
    client_row: Col,
    reason: Col,
}

impl Decode for LoggedDecoder {
    type Row<'a> = LoggedRow;
    fn decode<'a>(&self, f: Fields<'a>) -> Result<LoggedRow, DecodeError> {
        Ok(LoggedRow {
            key: owned(&f, self.key)?,
            kind: owned(&f, self.kind)?,
            decision: owned(&f, self.decision)?,
            server_row: f.owned(self.server_row),
            client_row: f.owned(self.client_row),
            reason: f.owned(self.reason),
        })
    }
}

/// Conflicts logged in scope `name` for client `client_id`'s changes of
/// table `table` at keys `keys` (JSON text), oldest first.
pub fn logged_conflicts(name: &str, client_id: &str, table: &str, keys: Vec<String>) -> Query<LoggedDecoder> {
    let mut binds = Binds::new();
    let mut columns = Columns::new();
    let decoder = LoggedDecoder {
        key: columns.push("key", "key::text"),
        kind: columns.push("kind", "kind"),
        decision: columns.push("decision", "decision"),
        server_row: columns.push("server_row", "server_row::text"),
        client_row: columns.push("client_row", "client_row::text"),
        reason: columns.push("reason", "reason"),
    };
    let sql = format!(
        "SELECT {} FROM tandem.conflicts WHERE scope = {} AND client_id = {} AND table_name = {} AND key = ANY({}::text[]::jsonb[]) ORDER BY id",
        columns.sql(),
        binds.bind(name),
        binds.bind(client_id),
        binds.bind(table),
        binds.bind(keys),
    );
    Query::new(sql, binds, &columns, decoder)
}

/// The current snapshot: the watermark a pull now would give.
pub fn current_snapshot() -> Query<TextDecoder> {
    text_query("pg_current_snapshot()::text", String::new(), Binds::new())
}

/// A replica seen lately, and the watermark after which it still needs
/// changes (NULL until it finished a pull).
#[derive(Debug)]
pub struct ActiveReplica {
    pub replica_id: String,
    pub needs_after: Option<String>,
}

pub struct ActiveDecoder {
    replica_id: Col,
    needs_after: Col,
}

impl Decode for ActiveDecoder {
    type Row<'a> = ActiveReplica;
    fn decode<'a>(&self, f: Fields<'a>) -> Result<ActiveReplica, DecodeError> {
        Ok(ActiveReplica { replica_id: owned(&f, self.replica_id)?, needs_after: f.owned(self.needs_after) })
    }
}

/// The replicas of scope `name` seen in the last `days` days.
pub fn active_replicas(name: &str, days: i64) -> Query<ActiveDecoder> {
    let mut binds = Binds::new();
    let mut columns = Columns::new();
    let decoder =
        ActiveDecoder { replica_id: columns.push("replica_id", "r.replica_id"), needs_after: columns.push("needs_after", "r.last_since") };
    let sql = format!(
        "SELECT {} FROM tandem.replicas r JOIN tandem.clients c ON c.client_id = r.client_id \
         WHERE c.scope = {} AND r.last_seen > now() - make_interval(days => {}::int8::int4)",
        columns.sql(),
        binds.bind(name),
        binds.bind(days)
    );
    Query::new(sql, binds, &columns, decoder)
}

/// Purges table `t`'s tombstones older than `horizon` (an xid).
pub fn purge_tombstones(scope: &Scope<'_>, t: usize, horizon: u64) -> Query<NoRows> {
    let mut binds = Binds::new();
    let sql =
        format!("DELETE FROM {} WHERE tandem_deleted AND tandem_stamp < {}::text::xid8", scope.track(t), binds.bind(horizon.to_string()));
    Query::exec(sql, binds)
}

/// Purges table `t`'s exit records older than `horizon`.
pub fn purge_exits(scope: &Scope<'_>, t: usize, horizon: u64) -> Query<NoRows> {
    let mut binds = Binds::new();
    let sql = format!("DELETE FROM {} WHERE tandem_stamp < {}::text::xid8", scope.exits(t), binds.bind(horizon.to_string()));
    Query::exec(sql, binds)
}

/// Records that scope `name`'s history before `horizon` is purged.
pub fn set_purged_before(name: &str, horizon: u64) -> Query<NoRows> {
    let mut binds = Binds::new();
    let sql = format!(
        "UPDATE tandem.scopes SET purged_before = greatest(coalesce(purged_before, '0'::xid8), {}::text::xid8) WHERE name = {}",
        binds.bind(horizon.to_string()),
        binds.bind(name)
    );
    Query::exec(sql, binds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_named_value_is_one_placeholder() {
        let query = register_client("c", "s", "{}".into(), "t");
        assert_eq!(query.params.len(), 4);
        assert_eq!(query.sql.matches("$4").count(), 2, "{}", query.sql);
    }

    #[test]
    fn rows_are_read_by_their_columns() {
        let query = replica("r");
        let row = [Some("c"), None, Some("7"), Some("[]"), Some("s"), Some("w")];
        let read = query.decode(&row).unwrap();
        assert_eq!(
            (read.client_id.as_str(), read.last_version.as_deref(), read.last_since.as_deref(), read.last_issued.as_deref()),
            ("c", Some("7"), Some("s"), Some("w"))
        );
        assert!(query.decode(&[Some("c")]).is_err(), "a short row is an error");
        assert!(query.decode(&[None, None, None, None, None, None]).is_err(), "a replica has a client");
    }
}
