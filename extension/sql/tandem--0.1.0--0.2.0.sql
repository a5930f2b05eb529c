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
            USING HINT = 'create the role again (or, as a superuser, sync_deprovision those scopes), then run ALTER EXTENSION tandem UPDATE again';
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
    ADD COLUMN moved_from uuid[] NOT NULL DEFAULT '{}';

-- It may restamp the tracking, and the device must see the new id.
ALTER FUNCTION sync_schema(text, jsonb) VOLATILE;
