-- Tandem conformance: the public SQL API, statement by statement.
-- tests/tests/conformance.rs runs it on PostgreSQL and on a local SQLite
-- file, and compares with sql/conformance.postgres.out and
-- sql/conformance.sqlite.out; the sections marked "both" must render the
-- same on both sides.
-- Volatile values (versions, watermarks, ids) render as "*".

--! postgres
CREATE TABLE public.notes (id bigint PRIMARY KEY, title text NOT NULL, body text, done boolean, price numeric(10,2), due timestamptz);
INSERT INTO public.notes VALUES (1, 'first', 'hello', false, 1.50, '2024-01-01T00:00:00Z');
SELECT sync_provision('conf', '{"tables": [{"name": "notes"}]}')->'version';
-- Provisioning again with the same setup changes nothing.
SELECT sync_provision('conf', '{"tables": [{"name": "notes"}]}')->'version';
-- A first pull returns every row, with its version.
SELECT sync_select_changes('conf', NULL)->'tables';

--! sqlite
-- The local side provisions from the server's schema (sync_run does this).
SELECT sync_provision('conf', '{"scope": "conf", "version": 1, "tables": [{"name": "public.notes", "columns": [{"name": "id", "type": "int8", "pg_type": "bigint", "nullable": false}, {"name": "title", "type": "text", "pg_type": "text", "nullable": false}, {"name": "body", "type": "text", "pg_type": "text", "nullable": true}, {"name": "done", "type": "bool", "pg_type": "boolean", "nullable": true}, {"name": "price", "type": "numeric", "pg_type": "numeric(10,2)", "nullable": true}, {"name": "due", "type": "timestamptz", "pg_type": "timestamp with time zone", "nullable": true}], "primary_key": ["id"], "direction": "bidirectional"}]}')->'version';
INSERT INTO notes VALUES (1, 'first', 'hello', 0, '1.50', '2024-01-01T00:00:00Z');
-- A local write is a change to send, with its counter; it has no base yet.
SELECT sync_select_changes('conf', NULL)->'tables';

--! both
-- The schema describes each synced column with its logical type.
SELECT sync_schema('conf')->'tables'->0->'columns';
SELECT sync_schema('conf')->'tables'->0->'primary_key';
-- Applying a changeset writes its rows.
SELECT sync_apply_changes('conf', '{"format": 1, "scope": "conf", "origin": "conformance", "tables": [{"name": "public.notes", "columns": ["id", "title", "body", "done", "price", "due"], "rows": [{"op": "upsert", "values": [2, "second", null, true, "2.50", "2024-02-03T04:05:06.789Z"]}, {"op": "upsert", "values": [3, "third: \"quoted\", é", "multi\nline", false, "0.01", null]}]}]}')->'applied';
SELECT id, title, body, CASE WHEN done THEN 'yes' ELSE 'no' END, price FROM notes WHERE id > 1 ORDER BY id;
-- Bad input names the problem and applies nothing.
SELECT sync_schema('nope');
SELECT sync_apply_changes('nope', '{"format": 1, "scope": "nope", "origin": "conformance", "tables": []}');
SELECT sync_apply_changes('conf', '{"format": 1, "scope": "other", "origin": "conformance", "tables": []}');
SELECT sync_apply_changes('conf', '{"format": 2, "scope": "conf", "origin": "conformance", "tables": []}');
SELECT sync_apply_changes('conf', '{"format": 1, "scope": "conf", "origin": "conformance"}');
SELECT sync_apply_changes('conf', '{"format": 1, "scope": "conf", "origin": "conformance", "tables": [{"name": "public.missing", "columns": ["id"], "rows": []}]}');
SELECT sync_apply_changes('conf', '{"format": 1, "scope": "conf", "origin": "conformance", "tables": [{"name": "public.notes", "columns": ["id", "colour"], "rows": []}]}');
SELECT sync_apply_changes('conf', '{"format": 1, "scope": "conf", "origin": "conformance", "tables": [{"name": "public.notes", "columns": ["id", "title"], "rows": [{"op": "upsert", "values": [4, "ok"]}, {"op": "upsert", "values": ["five", "bad key"]}]}]}');
SELECT sync_apply_changes('conf', '{"format": 1, "scope": "conf", "origin": "conformance", "tables": [{"name": "public.notes", "columns": ["id", "title"], "rows": [{"op": "delete"}]}]}');
SELECT sync_apply_changes('conf', '{"format": 1, "scope": "conf", "origin": "conformance", "tables": []}', '{"polcy": "server_wins"}');
SELECT count(*) FROM notes;

--! sqlite
-- A server changeset never overwrites a row with an unsent local change.
SELECT sync_apply_changes('conf', '{"format": 1, "scope": "conf", "origin": "server", "tables": [{"name": "public.notes", "columns": ["id", "title", "body", "done", "price", "due"], "rows": [{"op": "upsert", "version": "9", "values": [1, "from the server", null, true, "9.99", null]}, {"op": "delete", "version": "9", "key": [3]}]}]}');
SELECT id, title FROM notes ORDER BY id;
SELECT sync_status('conf')->'tables';

--! postgres
-- Changes made on the server come in the next pull; the watermark moves on.
UPDATE notes SET title = 'first!' WHERE id = 1;
DELETE FROM notes WHERE id = 3;
SELECT sync_select_changes('conf', NULL, '{"max_rows": 2}')->'has_more';
-- A client's upload meets the server's version of each row.
SELECT sync_apply_changes('conf', '{"format": 1, "scope": "conf", "origin": "laptop", "tables": [{"name": "public.notes", "columns": ["id", "title"], "rows": [{"op": "upsert", "base": "1", "seq": 1, "values": [1, "from the laptop"]}]}]}', '{"upload_id": "laptop-1"}')->'conflicts';
SELECT kind, decision, client_row->>'title', server_row->>'title' FROM tandem.conflicts;
-- The same upload sent again (its answer lost) is not applied again: it
-- carries the same upload id. Its conflict is reported again, for the
-- client's own log, and logged here once.
SELECT sync_apply_changes('conf', '{"format": 1, "scope": "conf", "origin": "laptop", "tables": [{"name": "public.notes", "columns": ["id", "title"], "rows": [{"op": "upsert", "base": "1", "seq": 1, "values": [1, "from the laptop"]}]}]}', '{"upload_id": "laptop-1"}')->'conflicts'->0->>'decision';
SELECT count(*) FROM tandem.conflicts;
-- Clients are registered with the parameters they are bound to.
SELECT jsonb_object_keys(sync_register_client('conf', '{}')) ORDER BY 1;
SELECT sync_status('conf')->'tables';
SELECT sync_cleanup('conf', '{"inactive_after_days": 7}')->'scope';
SELECT sync_deprovision('conf');
SELECT sync_status('conf');
