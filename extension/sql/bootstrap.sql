-- Tandem's own tables. Per-table tracking (tandem.track_<id>, tandem.log_<id>,
-- tandem.exit_<id>) is created by sync_provision.
CREATE SCHEMA tandem;
COMMENT ON SCHEMA tandem IS 'Tandem sync engine: scopes, clients, conflict log and change tracking';

-- Orders the entries of the change logs (tandem.log_<id>): one number per
-- tracked statement.
CREATE SEQUENCE tandem.log_seq;

-- Made by the first sync call (extension/src/cluster.rs), not here: a
-- database restored from a dump brings its own row.
CREATE TABLE tandem.server (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    server_id uuid NOT NULL DEFAULT gen_random_uuid(),
    -- The cluster the tracking's transaction ids count in
    -- (pg_control_system()) and the database: another means the database
    -- was restored into another cluster or database, and its tracking is
    -- restamped under a new server id.
    system_identifier bigint,
    database_oid oid,
    -- The ids this database had before such moves: a device that synced
    -- with one of them pulls again without being told to.
    moved_from uuid[] NOT NULL DEFAULT '{}'
);

CREATE TABLE tandem.scopes (
    name text PRIMARY KEY,
    setup jsonb NOT NULL,
    schema jsonb NOT NULL,
    -- The role that provisioned the scope: it (and any role with its
    -- privileges, and a superuser) may act for any client; everyone else
    -- needs a token. A role, not a name: a role made later under the name
    -- of a dropped one is another role (and pg_dump keeps it by name).
    owner regrole NOT NULL,
    -- The search_path its owner provisioned it with: the users' code a sync
    -- runs (triggers, resolver) runs as the owner, with this path.
    search_path text NOT NULL DEFAULT '"$user", public',
    -- Changes older than this were purged by sync_cleanup.
    purged_before xid8,
    -- The transaction that made this scope's tracking (again): a watermark
    -- that does not see it is from before, and its holder resyncs.
    tracked_since xid8 NOT NULL DEFAULT pg_current_xact_id(),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE tandem.scope_tables (
    id bigserial PRIMARY KEY,
    scope text NOT NULL REFERENCES tandem.scopes (name) ON DELETE CASCADE,
    -- regclass: pg_dump keeps it by name, so a restored database finds its
    -- tables under their new oids.
    relid regclass NOT NULL,
    name text NOT NULL,
    UNIQUE (scope, name)
);

-- A registration outlives its scope's provisioning: deprovisioning keeps it,
-- so provisioning the scope again brings its devices back.
CREATE TABLE tandem.clients (
    client_id text PRIMARY KEY,
    scope text NOT NULL,
    -- The filter parameters this client is bound to, for good.
    params jsonb NOT NULL DEFAULT '{}',
    -- sha256 of the bearer token; NULL for clients that connect directly.
    token_hash bytea UNIQUE,
    -- The scope's owner when the client was registered: a scope made anew
    -- under the name takes its clients only if it has the same owner (a
    -- dropped role's clients are nobody's but a superuser's).
    owner regrole,
    created_at timestamptz NOT NULL DEFAULT now(),
    last_seen timestamptz
);

-- Each file that syncs as a client is a replica of its partition, with an
-- id of its own: a reinstalled device, a restored backup or a copy is
-- another replica of the same client.
CREATE TABLE tandem.replicas (
    replica_id text PRIMARY KEY,
    client_id text NOT NULL REFERENCES tandem.clients (client_id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    last_seen timestamptz,
    -- Snapshot after which this replica still needs changes (from its last
    -- pull); sync_cleanup keeps what any active replica needs.
    last_since text,
    -- The watermark its last pull was given: one it presents beyond this
    -- was given by a history the server no longer has (a restore, a
    -- point-in-time recovery), and it pulls again.
    last_issued text,
    -- Its last upload: the id the file gave it, its transaction, and the
    -- changes it applied (JSON: [table id, key, seq, hash] each). An upload
    -- with the same id retries that one (its answer was lost): those
    -- changes are acknowledged, not applied again.
    last_upload text,
    last_version xid8,
    last_applied text
);
CREATE INDEX ON tandem.replicas (client_id);

CREATE TABLE tandem.conflicts (
    id bigserial PRIMARY KEY,
    scope text NOT NULL,
    table_name text NOT NULL,
    key jsonb NOT NULL,
    kind text NOT NULL,
    decision text NOT NULL,
    server_row jsonb,
    client_row jsonb,
    resolved_row jsonb,
    reason text,
    client_id text,
    at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ON tandem.conflicts (scope, at);

-- pg_dump keeps the contents of these tables.
SELECT pg_catalog.pg_extension_config_dump('tandem.server', '');
SELECT pg_catalog.pg_extension_config_dump('tandem.scopes', '');
SELECT pg_catalog.pg_extension_config_dump('tandem.scope_tables', '');
SELECT pg_catalog.pg_extension_config_dump('tandem.scope_tables_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('tandem.clients', '');
SELECT pg_catalog.pg_extension_config_dump('tandem.replicas', '');
SELECT pg_catalog.pg_extension_config_dump('tandem.conflicts', '');
SELECT pg_catalog.pg_extension_config_dump('tandem.conflicts_id_seq', '');

-- Wakes whoever waits for a scope (a gateway's LISTEN tandem, a device's
-- watch): every relation of a scope's tables calls it after each write
-- statement, with the scope's name; PostgreSQL sends it at commit, once per
-- transaction and scope. Only the name travels, never rows. Anyone may
-- call pg_notify, so anyone may attach it (a scope owner's partitions).
CREATE FUNCTION tandem.notify_change() RETURNS trigger LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM pg_catalog.pg_notify('tandem', TG_ARGV[0]);
    RETURN NULL;
END $$;

-- Partitions of tracked tables carry Tandem's triggers too: a write made to
-- a partition directly fires only the partition's statement triggers.
-- These keep them in step as partitions are created, attached, detached or
-- dropped (extension/src/partitions.rs). They run as the extension's owner,
-- which owns the tracking tables.
CREATE FUNCTION tandem.on_table_change() RETURNS event_trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    _root oid;
BEGIN
    FOR _root IN
        SELECT DISTINCT s.relid FROM pg_event_trigger_ddl_commands() c
        JOIN tandem.scope_tables s ON s.relid = coalesce(pg_partition_root(c.objid), c.objid)
        JOIN pg_class r ON r.oid = s.relid AND r.relkind = 'p'
        WHERE c.classid = 'pg_class'::regclass
    LOOP
        PERFORM tandem.follow_partitions(_root::int8);
    END LOOP;
END $$;

CREATE FUNCTION tandem.on_table_drop() RETURNS event_trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    _ids int8[];
BEGIN
    SELECT array_agg(DISTINCT (regexp_match(object_identity, '^tandem_([0-9]+)_insert on '))[1]::int8) INTO _ids
    FROM pg_event_trigger_dropped_objects()
    WHERE object_type = 'trigger' AND object_identity ~ '^tandem_[0-9]+_insert on ';
    IF _ids IS NOT NULL AND EXISTS (SELECT FROM pg_event_trigger_dropped_objects() WHERE object_type = 'table') THEN
        PERFORM tandem.check_dropped_partitions(_ids);
    END IF;
END $$;

-- Columns of tracked tables: after an ALTER TABLE of a table a scope
-- tracks, the scope follows it (a new schema version devices pick up), or
-- the ALTER TABLE is refused when devices could not follow it
-- (extension/src/ddl.rs). Runs as the extension's owner.
CREATE FUNCTION tandem.on_table_alter() RETURNS event_trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    _table oid;
    _off text;
BEGIN
    FOR _table IN
        SELECT DISTINCT s.relid FROM pg_event_trigger_ddl_commands() c
        JOIN tandem.scope_tables s ON s.relid = c.objid
        WHERE c.classid = 'pg_class'::regclass
        UNION
        -- A schema renamed moves its tables from under their scopes' names.
        SELECT s.relid FROM pg_event_trigger_ddl_commands() c
        JOIN pg_class r ON r.relnamespace = c.objid
        JOIN tandem.scope_tables s ON s.relid = r.oid
        WHERE c.classid = 'pg_namespace'::regclass
        UNION
        -- A table made to inherit from a tracked one (CREATE TABLE ...
        -- INHERITS, ALTER TABLE ... INHERIT, and their FOREIGN TABLE
        -- forms): refused, as provisioning refuses a table with such
        -- children.
        SELECT s.relid FROM pg_event_trigger_ddl_commands() c
        JOIN pg_inherits i ON i.inhrelid = c.objid
        JOIN pg_class p ON p.oid = i.inhparent AND p.relkind = 'r'
        JOIN tandem.scope_tables s ON s.relid = i.inhparent
        WHERE c.classid = 'pg_class'::regclass
        UNION
        -- A tracked table made a partition of another (ALTER TABLE ...
        -- ATTACH PARTITION): refused, as provisioning refuses a partition;
        -- writes through its new root would fire none of its triggers.
        SELECT s.relid FROM pg_event_trigger_ddl_commands() c
        JOIN pg_inherits i ON i.inhparent = c.objid
        JOIN tandem.scope_tables s ON s.relid = i.inhrelid
        WHERE c.classid = 'pg_class'::regclass
    LOOP
        PERFORM tandem.follow_columns(_table::int8);
    END LOOP;
    -- Tandem's triggers disabled (DISABLE TRIGGER ALL or USER, ENABLE
    -- REPLICA TRIGGER), on a tracked table or one of its partitions: not
    -- refused (pg_restore --disable-triggers does it), but said, since the
    -- writes made meanwhile reach no device by themselves.
    FOR _off IN
        SELECT DISTINCT format('%I.%I', n.nspname, r.relname) FROM pg_event_trigger_ddl_commands() c
        JOIN pg_class r ON r.oid = c.objid
        JOIN pg_namespace n ON n.oid = r.relnamespace
        JOIN pg_trigger t ON t.tgrelid = r.oid AND t.tgenabled IN ('D', 'R')
        JOIN pg_proc f ON f.oid = t.tgfoid AND f.pronamespace = 'tandem'::regnamespace
        WHERE c.classid = 'pg_class'::regclass
        ORDER BY 1
    LOOP
        RAISE WARNING 'Tandem''s triggers on % are disabled: writes to it reach no device', _off
            USING HINT = format('ALTER TABLE %s ENABLE TRIGGER ALL; the writes made meanwhile reach a device only through tandem verify --repair', _off);
    END LOOP;
END $$;

-- Tracked tables dropped: they leave their scopes, with the tables whose
-- filter went through them; a scope left with none is removed
-- (extension/src/ddl.rs). Never refused: pg_restore --clean drops every
-- table before the extension.
CREATE FUNCTION tandem.on_tracked_drop() RETURNS event_trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    _tables int8[];
    _table int8;
BEGIN
    SELECT array_agg(DISTINCT s.relid::oid::int8) INTO _tables
    FROM pg_event_trigger_dropped_objects() d JOIN tandem.scope_tables s ON s.relid::oid = d.objid
    WHERE d.classid = 'pg_class'::regclass AND d.object_type = 'table';
    IF _tables IS NOT NULL THEN
        PERFORM tandem.forget_tables(_tables);
    END IF;
    -- Columns a cascade took (DROP DOMAIN ... CASCADE, ALTER TYPE ... DROP
    -- ATTRIBUTE ... CASCADE) from tables that are still there.
    FOR _table IN
        SELECT DISTINCT s.relid::oid::int8 FROM pg_event_trigger_dropped_objects() d
        JOIN tandem.scope_tables s ON s.relid::oid = d.objid
        WHERE d.classid = 'pg_class'::regclass AND d.object_type = 'table column'
          AND EXISTS (SELECT FROM pg_class r WHERE r.oid = s.relid::oid)
    LOOP
        PERFORM tandem.follow_columns(_table);
    END LOOP;
END $$;

CREATE EVENT TRIGGER tandem_table_drops ON sql_drop WHEN TAG IN ('DROP TABLE', 'DROP SCHEMA', 'DROP OWNED', 'DROP DOMAIN', 'DROP TYPE', 'ALTER TYPE')
    EXECUTE FUNCTION tandem.on_tracked_drop();
CREATE EVENT TRIGGER tandem_columns ON ddl_command_end
    WHEN TAG IN ('ALTER TABLE', 'ALTER SCHEMA', 'CREATE TABLE', 'CREATE FOREIGN TABLE', 'ALTER FOREIGN TABLE')
    EXECUTE FUNCTION tandem.on_table_alter();
CREATE EVENT TRIGGER tandem_partitions ON ddl_command_end WHEN TAG IN ('CREATE TABLE', 'ALTER TABLE', 'CREATE SCHEMA')
    EXECUTE FUNCTION tandem.on_table_change();
CREATE EVENT TRIGGER tandem_partition_drops ON sql_drop WHEN TAG IN ('DROP TABLE', 'DROP SCHEMA', 'DROP OWNED')
    EXECUTE FUNCTION tandem.on_table_drop();
