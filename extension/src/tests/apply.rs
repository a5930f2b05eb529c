#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;
    use serde_json::{json, Value};

    use crate::tests::support::*;

    const TENANT_1: &str = r#"{"params": {"tenant": 1}}"#;

    fn apply_sql(changeset: &Value, options: &str) -> String {
        format!("SELECT sync_apply_changes('crm', {}, {})", lit(changeset), quote(options))
    }

    #[pg_test]
    fn inserts_updates_and_deletes_apply_with_new_versions() {
        crm();
        let base = version_of("public.customers", json!(1));
        let result = apply(
            &upload(
                "dev1",
                json!([
                {"op": "upsert", "base": base, "seq": 1, "values": [1, 1, "Ada Lovelace", "ada@a.test"]},
                {"op": "upsert", "seq": 2, "values": [4, 1, "Dee", null]},
                {"op": "delete", "base": version_of("public.customers", json!(3)), "seq": 3, "key": [3]}]),
            ),
            json!({"params": {"tenant": 1}}),
        );
        assert_eq!(result["applied"], 3, "{result}");
        assert_eq!(result["conflicts"], json!([]));
        let version = result["version"].as_str().unwrap();
        assert!(result["versions"].as_array().unwrap().iter().all(|v| v["version"] == version));
        assert_eq!(text("SELECT name FROM public.customers WHERE id = 1").unwrap(), "Ada Lovelace");
        assert_eq!(count("SELECT count(*) FROM public.customers WHERE id = 4"), 1);
        assert_eq!(count("SELECT count(*) FROM public.customers WHERE id = 3"), 0);
        let origin = text(&format!("SELECT tandem_origin FROM {} WHERE id = 4", track_of("public.customers")));
        assert_eq!(origin.as_deref(), Some("dev1"));
    }

    #[pg_test]
    fn a_child_can_arrive_with_its_new_parent() {
        crm();
        let changeset = json!({"format": 1, "scope": "crm", "origin": "dev1", "tables": [
            {"name": "order_items", "columns": ["order_id", "line", "sku"], "rows": [{"op": "upsert", "values": [40, 1, "Z"]}]},
            {"name": "orders", "columns": ["id", "tenant_id", "customer_id", "total"], "rows": [{"op": "upsert", "values": [40, 1, 1, "5.00"]}]}]});
        let result = apply(&changeset, json!({"params": {"tenant": 1}}));
        assert_eq!(result["applied"], 2, "{result}");
        assert_eq!(count("SELECT count(*) FROM public.order_items WHERE order_id = 40"), 1);
    }

    #[pg_test]
    fn the_same_changeset_twice_has_no_second_effect() {
        crm();
        let base = version_of("public.customers", json!(1));
        let changeset = upload(
            "dev1",
            json!([
            {"op": "upsert", "base": base, "seq": 7, "values": [1, 1, "Ada 2", "ada@a.test"]},
            {"op": "upsert", "seq": 8, "values": [5, 1, "Eve", null]}]),
        );
        let first = apply(&changeset, json!({"params": {"tenant": 1}}));
        assert_eq!(first["applied"], 2);
        let tracked = text(&format!("SELECT tandem_version::text FROM {} WHERE id = 1", track_of("public.customers")));
        let second = apply(&changeset, json!({"params": {"tenant": 1}}));
        assert_eq!(second["applied"], 0, "{second}");
        assert_eq!(second["conflicts"], json!([]));
        assert_eq!(second["current"].as_array().unwrap().len(), 2);
        assert_eq!(second["current"][0]["row"]["name"], "Ada 2");
        assert_eq!(
            text(&format!("SELECT tandem_version::text FROM {} WHERE id = 1", track_of("public.customers"))),
            tracked,
            "not written again"
        );
        assert_eq!(count("SELECT count(*) FROM tandem.conflicts"), 0);
    }

    #[pg_test]
    fn bad_changesets_fail_whole_with_their_sqlstate() {
        crm();
        let good = json!({"op": "upsert", "seq": 1, "values": [9, 1, "Nine", null]});
        let with = |row: Value| upload("dev1", json!([good.clone(), row]));
        let cases: Vec<(String, &str, &str)> = vec![
            ("SELECT sync_apply_changes('crm', '{', '{}')".into(), "22P02", "invalid input syntax for type json"),
            ("SELECT sync_apply_changes('crm', '{\"format\": 1}', '{}')".into(), "22P02", "missing field"),
            (
                apply_sql(
                    &json!({"format": 1, "scope": "crm", "origin": "dev1", "tables": [{"name": "nope", "columns": [], "rows": []}]}),
                    TENANT_1,
                ),
                "42P01",
                "not part of scope",
            ),
            (
                apply_sql(
                    &json!({"format": 1, "scope": "crm", "origin": "dev1", "tables": [{"name": "customers", "columns": ["id", "color"], "rows": []}]}),
                    TENANT_1,
                ),
                "42703",
                "no synced column \"color\"",
            ),
            (
                apply_sql(&with(json!({"op": "upsert", "values": [10, 1, 42, null]})), TENANT_1),
                "22P02",
                "customers [10]: column name: expected a string, got 42",
            ),
            (apply_sql(&with(json!({"op": "delete", "seq": 2})), TENANT_1), "22P02", "has no \"key\""),
            (apply_sql(&json!({"format": 1, "scope": "other", "origin": "dev1", "tables": []}), TENANT_1), "22023", "for scope \"other\""),
            (
                apply_sql(&upload("dev1", json!([good])), r#"{"params": {"tenant": 1}, "policy": "client_wins"}"#),
                "22023",
                "belongs to the scope",
            ),
            (
                apply_sql(&upload("dev1", json!([good])), r#"{"params": {"tenant": 1}, "clientid": "x"}"#),
                "22023",
                "unknown field `clientid`",
            ),
            (
                apply_sql(&upload("dev1", json!([good])), r#"{"client_id": "dev2", "params": {"tenant": 1}}"#),
                "42501",
                "claims origin \"dev1\"",
            ),
            (
                apply_sql(&with(json!({"op": "upsert", "values": [2, 2, "Bob?", null]})), TENANT_1),
                "42501",
                "outside the client's partition",
            ),
            (
                apply_sql(&with(json!({"op": "upsert", "values": [11, 2, "moved", null]})), TENANT_1),
                "42501",
                "outside the client's partition",
            ),
            (apply_sql(&with(json!({"op": "delete", "key": [2]})), TENANT_1), "42501", "outside the client's partition"),
            (
                apply_sql(
                    &json!({"format": 1, "scope": "crm", "origin": "dev1", "tables": [{"name": "currencies", "columns": ["code", "rate"], "rows": [{"op": "upsert", "values": ["GBP", 1.2]}]}]}),
                    TENANT_1,
                ),
                "42501",
                "download_only",
            ),
            (
                apply_sql(
                    &json!({"format": 1, "scope": "crm", "origin": "dev1", "tables": [{"name": "customers", "columns": ["id", "name"], "rows": [{"op": "upsert", "values": [12, "x"]}]}]}),
                    TENANT_1,
                ),
                "22P02",
                "must carry column \"tenant_id\"",
            ),
            (apply_sql(&upload("dev1", json!([good])), "{}"), "22023", "filtered by parameter"),
        ];
        for (sql, sqlstate, fragment) in &cases {
            let error = assert_fails(sql, sqlstate, fragment);
            if error.message.contains("refused") {
                let detail: Value = serde_json::from_str(error.detail.as_deref().unwrap()).unwrap();
                assert!(detail["rejected"][0]["reason"].is_string(), "{detail}");
            }
        }
        assert_eq!(count("SELECT count(*) FROM public.customers WHERE id = 9"), 0, "the good row was not applied either");
        assert_eq!(count("SELECT count(*) FROM public.customers"), 3);
        assert_eq!(count("SELECT count(*) FROM public.currencies"), 2);
    }

    #[pg_test]
    fn every_type_round_trips_between_databases() {
        run("CREATE TYPE public.mood AS ENUM ('sad', 'ok', 'happy')");
        run("CREATE TABLE public.typed (id int PRIMARY KEY, i2 int2, i8 int8, b bool, f4 float4, f8 float8, \
             n numeric, t text, vc varchar(10), c char(3), u uuid, d date, tm time, ts timestamp, tz timestamptz, \
             by bytea, j json, jb jsonb, arr int[], m public.mood, iv interval)");
        run("INSERT INTO public.typed VALUES \
             (1, -32768, 9223372036854775807, true, 3.4028235e38, 'NaN', 123456789012345678901234567890.123456789, \
              E'quote '' \" back\\\\slash\nnewline é 😀', 'ten chars!', 'ab', '0b7e1f7a-5d1c-4b2e-9a55-6f1f0c2d9e11', \
              '2024-02-29', '23:59:59.999999', '2024-05-01 13:45:00.123456', '2024-05-01 13:45:00.654321+02', \
              '\\x00ff00'::bytea, '{\"a\": [1, 2],  \"b\": null}', '{\"z\": 1, \"a\": \"x\"}', '{1,NULL,3}', 'happy', '1 day 02:03:04'), \
             (2, NULL, NULL, NULL, '-Infinity', 'Infinity', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 'null', NULL, NULL, NULL), \
             (3, 0, 0, false, '-0', '1e-300', '-0.000000000000000000000000000001', '', '', '   ', NULL, 'infinity', '00:00', '-infinity', 'infinity', '\\x'::bytea, '[]', '[]', '{}', 'sad', '-1 mon')");
        run(r#"SELECT sync_provision('types', '{"tables": [{"name": "typed"}]}')"#);
        let pulled = json("SELECT sync_select_changes('types', NULL)");
        let row = &rows_of(&pulled, "public.typed")[0]["values"];
        assert_eq!(row[6], "123456789012345678901234567890.123456789");
        assert_eq!(row[14], "2024-05-01T11:45:00.654321Z");
        assert_eq!(row[15], "AP8A");
        assert_eq!(row[16], "{\"a\": [1, 2],  \"b\": null}", "json keeps its exact text");
        // Apply the pulled rows to an empty copy and compare every column.
        run("CREATE TABLE public.typed_copy (LIKE public.typed)");
        run("ALTER TABLE public.typed_copy ADD PRIMARY KEY (id)");
        run(r#"SELECT sync_provision('copy', '{"tables": [{"name": "typed_copy"}]}')"#);
        let mut upload = pulled.clone();
        upload["scope"] = json!("copy");
        upload["origin"] = json!("copier");
        upload["tables"][0]["name"] = json!("public.typed_copy");
        for row in upload["tables"][0]["rows"].as_array_mut().unwrap() {
            row.as_object_mut().unwrap().remove("version");
        }
        upload.as_object_mut().unwrap().remove("watermark");
        let result = json(&format!("SELECT sync_apply_changes('copy', {})", lit(&upload)));
        assert_eq!(result["applied"], 3, "{result}");
        let differing = count(
            "SELECT count(*) FROM public.typed a FULL JOIN public.typed_copy b USING (id) \
             WHERE (a.*)::text IS DISTINCT FROM (ROW(b.*))::text \
                OR a.f8::text IS DISTINCT FROM b.f8::text OR a.f4::text IS DISTINCT FROM b.f4::text \
                OR a.j::text IS DISTINCT FROM b.j::text OR a.tz IS DISTINCT FROM b.tz",
        );
        assert_eq!(differing, 0, "{}", json("SELECT jsonb_agg(b) FROM public.typed_copy b"));
    }
}
