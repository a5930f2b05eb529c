-- Tandem 0.1.0 -> 0.2.0 (ALTER EXTENSION tandem UPDATE).
--
-- Roles and tables are recorded as PostgreSQL knows them, not by name: a
-- role made later under a dropped role's name is another role, and does
-- not inherit its scopes' clients; and pg_dump keeps both by name, so a
-- restored database finds its roles and tables under their new oids.
\echo Use "ALTER EXTENSION tandem UPDATE" to load this file. \quit

DO $check$
DECLARE
    _orphans text;
BEGIN
    SELECT pg_catalog.string_agg(pg_catalog.format('%s (owner %s)', s.name, s.owner), ', ') INTO _orphans
    FROM tandem.scopes s WHERE pg_catalog.to_regrole(pg_catalog.quote_ident(s.owner)) IS NULL;
    IF _orphans IS NOT NULL THEN
        RAISE EXCEPTION 'scopes whose owner role no longer exists: %', _orphans
            USING HINT = 'create the role again (CREATE ROLE <name>), run ALTER EXTENSION tandem UPDATE again, then provision each of those scopes again as that role, which renews its rights on their tracking; or deprovision them with the previous release installed';
    END IF;
END $check$;

ALTER TABLE tandem.scopes
    ALTER COLUMN owner DROP DEFAULT,
    ALTER COLUMN owner TYPE regrole USING pg_catalog.to_regrole(pg_catalog.quote_ident(owner));

-- A client registered under a role that is gone stays that role's: oid 0
-- is no role, so only a superuser may take the scope's name again.
ALTER TABLE tandem.clients
    ALTER COLUMN owner TYPE regrole
    USING CASE WHEN owner IS NULL THEN NULL
               ELSE coalesce(pg_catalog.to_regrole(pg_catalog.quote_ident(owner))::oid, 0)::regrole END;

ALTER TABLE tandem.scope_tables ALTER COLUMN relid TYPE regclass USING relid::regclass;

-- The server's row records the cluster its transaction ids count in, and
-- the ids it had before a restore into another cluster (see
-- extension/src/cluster.rs); a fresh install makes the row at its first
-- sync call, so a dump restored into it brings its own.
ALTER TABLE tandem.server
    ADD COLUMN system_identifier bigint,
    ADD COLUMN database_oid oid,
    ADD COLUMN moved_from uuid[] NOT NULL DEFAULT '{}';

-- The watermark each replica's last pull was given: one presented beyond
-- it comes from a history the server lost (a restore, a recovery).
ALTER TABLE tandem.replicas ADD COLUMN last_issued text;

-- It may restamp the tracking, and the device must see the new id.
ALTER FUNCTION sync_schema(text, jsonb) VOLATILE;

-- Live sync: a commit that changes a scope's tables notifies LISTEN tandem
-- with the scope's name. The function (as bootstrap.sql makes it), and its
-- statement trigger on every relation that carries a scope's tracking (a
-- table, and each partition that carries Tandem's insert trigger).
CREATE FUNCTION tandem.notify_change() RETURNS trigger LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM pg_catalog.pg_notify('tandem', TG_ARGV[0]);
    RETURN NULL;
END $$;
GRANT EXECUTE ON FUNCTION tandem.notify_change() TO PUBLIC;

DO $notify$
DECLARE
    _relation record;
BEGIN
    FOR _relation IN
        -- The table itself, and the partitions in its tree (none for a
        -- table that is not partitioned).
        SELECT t.id, t.scope, r.relid
        FROM tandem.scope_tables t
        CROSS JOIN LATERAL (SELECT t.relid::oid AS relid UNION SELECT p.relid FROM pg_catalog.pg_partition_tree(t.relid) p) r
        WHERE EXISTS (SELECT FROM pg_catalog.pg_trigger g
                      WHERE g.tgrelid = r.relid AND g.tgname = pg_catalog.format('tandem_%s_insert', t.id))
    LOOP
        EXECUTE pg_catalog.format(
            'CREATE TRIGGER %I AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON %s FOR EACH STATEMENT EXECUTE FUNCTION tandem.notify_change(%L)',
            pg_catalog.format('tandem_%s_notify', _relation.id), _relation.relid::regclass, _relation.scope);
    END LOOP;
END $notify$;

-- The key trigger of a table that is not partitioned fires for every
-- UPDATE, not only for those naming a key column: a BEFORE UPDATE trigger
-- of the table's own may change the key of a row whose statement set other
-- columns, and 0.1.0's `AFTER UPDATE OF <key>` left that row's old key
-- live in tracking. It also fires when a key keeps its value but changes
-- its text (numeric `1.5` to `1.50`, a citext's case), which devices hold
-- as another key; a partitioned table gains a key trigger for that alone
-- where its key has such a column (core/src/sql/tracking.rs, `key_changed`).
DO $key$
DECLARE
    _table record;
    _when text;
BEGIN
    FOR _table IN
        SELECT t.id, t.relid::regclass AS relation, coalesce((d.def ->> 'partitioned')::boolean, false) AS partitioned,
               (SELECT pg_catalog.string_agg(pg_catalog.format('OLD.%1$I IS DISTINCT FROM NEW.%1$I', k.name), ' OR ' ORDER BY k.n)
                FROM pg_catalog.jsonb_array_elements_text(d.def -> 'primary_key') WITH ORDINALITY AS k(name, n)) AS value,
               (SELECT pg_catalog.format('ROW(%s) IS DISTINCT FROM ROW(%s)',
                       pg_catalog.string_agg(pg_catalog.format('(OLD.%I::text COLLATE "C")', k.name), ', ' ORDER BY k.n),
                       pg_catalog.string_agg(pg_catalog.format('(NEW.%I::text COLLATE "C")', k.name), ', ' ORDER BY k.n))
                FROM pg_catalog.jsonb_array_elements_text(d.def -> 'primary_key') WITH ORDINALITY AS k(name, n)
                WHERE EXISTS (SELECT FROM pg_catalog.jsonb_array_elements(d.def -> 'columns') c
                              WHERE c ->> 'name' = k.name AND c ->> 'type' IN ('numeric', 'text', 'jsonb', 'other'))
                HAVING pg_catalog.count(*) > 0) AS text
        FROM tandem.scope_tables t
        JOIN tandem.scopes s ON s.name = t.scope
        CROSS JOIN LATERAL (SELECT x AS def FROM pg_catalog.jsonb_array_elements(s.schema -> 'tables') x WHERE x ->> 'name' = t.name) d
        WHERE pg_catalog.to_regprocedure(pg_catalog.format('tandem.%I()', 'on_key_' || t.id)) IS NOT NULL
    LOOP
        _when := CASE
            WHEN NOT _table.partitioned AND _table.text IS NULL THEN _table.value
            WHEN NOT _table.partitioned THEN _table.value || ' OR ' || _table.text
            WHEN _table.text IS NOT NULL THEN 'NOT (' || _table.value || ') AND ' || _table.text
        END;
        IF _when IS NOT NULL THEN
            EXECUTE pg_catalog.format('CREATE OR REPLACE TRIGGER %I AFTER UPDATE ON %s FOR EACH ROW WHEN (%s) EXECUTE FUNCTION tandem.%I()',
                'tandem_' || _table.id || '_key', _table.relation, _when, 'on_key_' || _table.id);
        END IF;
    END LOOP;
END $key$;

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

CREATE FUNCTION tandem."follow_columns"(
	"relid" bigint /* Option < i64 > */
) RETURNS void
VOLATILE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'follow_columns_wrapper';
REVOKE ALL ON FUNCTION tandem.follow_columns(bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION tandem.on_table_alter() FROM PUBLIC;

CREATE EVENT TRIGGER tandem_columns ON ddl_command_end
    WHEN TAG IN ('ALTER TABLE', 'ALTER SCHEMA', 'CREATE TABLE', 'CREATE FOREIGN TABLE', 'ALTER FOREIGN TABLE')
    EXECUTE FUNCTION tandem.on_table_alter();

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

CREATE FUNCTION tandem."forget_tables"(
	"relids" bigint[] /* core::option::Option<alloc::vec::Vec<i64>> */
) RETURNS void
VOLATILE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'forget_tables_wrapper';
REVOKE ALL ON FUNCTION tandem.forget_tables(bigint[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION tandem.on_tracked_drop() FROM PUBLIC;

CREATE EVENT TRIGGER tandem_table_drops ON sql_drop WHEN TAG IN ('DROP TABLE', 'DROP SCHEMA', 'DROP OWNED', 'DROP DOMAIN', 'DROP TYPE', 'ALTER TYPE')
    EXECUTE FUNCTION tandem.on_tracked_drop();

-- sync_verify: a device proves its file holds its partition (design.md,
-- Verify). Like every sync function, nobody may execute it until granted.
CREATE FUNCTION "sync_verify"(
	"scope" TEXT,
	"options" jsonb DEFAULT '{}'
) RETURNS jsonb
VOLATILE SECURITY DEFINER
LANGUAGE c
AS 'MODULE_PATHNAME', 'sync_verify_wrapper';
REVOKE ALL ON FUNCTION sync_verify(text, jsonb) FROM PUBLIC;
