-- Tandem 0.2.0 -> 0.1.0 (ALTER EXTENSION tandem UPDATE TO '0.1.0'), to go
-- back after an upgrade, with the 0.1.0 library installed again. Scopes,
-- clients, tokens and pending changes stay, as on the way up.
\echo Use "ALTER EXTENSION tandem UPDATE TO '0.1.0'" to load this file. \quit

ALTER FUNCTION sync_schema(text, jsonb) STABLE;

-- 0.1.0 has no verify.
DROP FUNCTION sync_verify(text, jsonb);

-- 0.1.0 does not follow ALTER TABLE or DROP of tracked tables.
DROP EVENT TRIGGER tandem_columns;
DROP FUNCTION tandem.on_table_alter();
DROP FUNCTION tandem.follow_columns(bigint);
DROP EVENT TRIGGER tandem_table_drops;
DROP FUNCTION tandem.on_tracked_drop();
DROP FUNCTION tandem.forget_tables(bigint[]);

-- No live sync in 0.1.0: its triggers, then its function.
DO $notify$
DECLARE
    _trigger record;
BEGIN
    FOR _trigger IN
        SELECT g.tgname, g.tgrelid::regclass AS relation FROM pg_catalog.pg_trigger g
        WHERE g.tgfoid = 'tandem.notify_change()'::pg_catalog.regprocedure
    LOOP
        EXECUTE pg_catalog.format('DROP TRIGGER %I ON %s', _trigger.tgname, _trigger.relation);
    END LOOP;
END $notify$;
DROP FUNCTION tandem.notify_change();

-- 0.1.0 puts no key trigger on a partitioned table (0.2.0 does where a key
-- may change its text), and would try to drop its partitions' copies
-- one by one, which PostgreSQL refuses.
DO $key$
DECLARE
    _trigger record;
BEGIN
    FOR _trigger IN
        SELECT g.tgname, g.tgrelid::regclass AS relation FROM tandem.scope_tables t
        JOIN pg_catalog.pg_trigger g ON g.tgrelid = t.relid::oid AND g.tgname = pg_catalog.format('tandem_%s_key', t.id)
        JOIN pg_catalog.pg_class c ON c.oid = g.tgrelid
        WHERE c.relkind = 'p'
    LOOP
        EXECUTE pg_catalog.format('DROP TRIGGER %I ON %s', _trigger.tgname, _trigger.relation);
    END LOOP;
END $key$;

ALTER TABLE tandem.replicas DROP COLUMN last_issued;
ALTER TABLE tandem.server DROP COLUMN moved_from, DROP COLUMN database_oid, DROP COLUMN system_identifier;
-- 0.1.0 makes its row with the extension.
INSERT INTO tandem.server DEFAULT VALUES ON CONFLICT DO NOTHING;

ALTER TABLE tandem.scopes
    ALTER COLUMN owner TYPE text USING pg_catalog.pg_get_userbyid(owner)::text,
    ALTER COLUMN owner SET DEFAULT session_user;

ALTER TABLE tandem.clients
    ALTER COLUMN owner TYPE text USING CASE WHEN owner IS NULL THEN NULL ELSE pg_catalog.pg_get_userbyid(owner)::text END;

ALTER TABLE tandem.scope_tables ALTER COLUMN relid TYPE oid USING relid::oid;
