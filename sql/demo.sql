-- A short tour of Tandem on PostgreSQL: provision a scope, pull, change,
-- upload a conflicting edit, and look at the conflict log.
\pset footer off
SET client_min_messages = warning;
DROP DATABASE IF EXISTS tandem_demo;
CREATE DATABASE tandem_demo;
\c tandem_demo
CREATE EXTENSION tandem;
CREATE TABLE customers (id bigint PRIMARY KEY, tenant_id int NOT NULL, name text);
INSERT INTO customers VALUES (1, 1, 'Ada'), (2, 1, 'Grace'), (3, 2, 'Linus');
\echo '== provision scope crm, each tenant sees its own customers'
SELECT jsonb_pretty(sync_provision('crm', '{"tables": [{"name": "customers", "filter": {"tenant_id": "tenant"}}]}') -> 'tables' -> 0 -> 'filter') AS filter;
\echo '== first pull of tenant 1'
SELECT sync_select_changes('crm', NULL, '{"params": {"tenant": 1}}') AS changeset \gset
SELECT jsonb_pretty(:'changeset'::jsonb -> 'tables' -> 0 -> 'rows') AS rows;
\echo '== the server renames Ada; a device, still on the old version, renames her too'
UPDATE customers SET name = 'Ada Lovelace' WHERE id = 1;
SELECT jsonb_pretty(sync_apply_changes('crm', jsonb_build_object(
    'format', 1, 'scope', 'crm', 'origin', 'device-1',
    'tables', jsonb_build_array(jsonb_build_object(
        'name', 'public.customers', 'columns', '["id", "tenant_id", "name"]'::jsonb,
        'rows', jsonb_build_array(
            jsonb_build_object('op', 'upsert', 'seq', 1, 'values', '[1, 1, "Ada King"]'::jsonb,
                'base', :'changeset'::jsonb -> 'tables' -> 0 -> 'rows' -> 0 ->> 'version'),
            jsonb_build_object('op', 'upsert', 'seq', 2, 'values', '[4, 1, "Katherine"]'::jsonb))))),
    '{"params": {"tenant": 1}}') - 'versions' - 'version') AS result;
\echo '== the losing version is kept in the conflict log'
SELECT table_name, key, kind, decision, client_row ->> 'name' AS device, server_row ->> 'name' AS server FROM tandem.conflicts;
\echo '== the next pull of tenant 1 carries only what changed since'
SELECT jsonb_pretty(sync_select_changes('crm', :'changeset'::jsonb ->> 'watermark', '{"params": {"tenant": 1}}') -> 'tables' -> 0 -> 'rows') AS rows;
\c postgres
DROP DATABASE tandem_demo;
