#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;
    use serde_json::json;

    use crate::tests::support::*;

    #[pg_test]
    fn provision_orders_parents_first_and_tracks_existing_rows() {
        crm();
        let schema = json("SELECT sync_schema('crm')");
        let names: Vec<&str> = schema["tables"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["public.customers", "public.orders", "public.order_items", "public.currencies"]);
        assert_eq!(schema["version"], 1);
        let total = &schema["tables"][1]["columns"][3];
        assert_eq!(total["type"], "numeric");
        assert_eq!(total["pg_type"], "numeric(12,2)");
        assert_eq!(count("SELECT count(*) FROM tandem.scope_tables WHERE scope = 'crm'"), 4);
        let id = count("SELECT id FROM tandem.scope_tables WHERE name = 'public.orders'");
        assert_eq!(count(&format!("SELECT count(*) FROM tandem.track_{id}")), 3);
        assert_eq!(
            count("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'public.orders'::regclass AND tgname LIKE 'tandem_%'"),
            6,
            "five tracking triggers and the notifying one"
        );
    }

    #[pg_test]
    fn provision_again_changes_nothing_and_grows_with_new_columns() {
        crm();
        let again = json(&format!("SELECT sync_provision('crm', {})", lit(&crm_setup())));
        assert_eq!(again["version"], 1);
        run("ALTER TABLE public.currencies ADD COLUMN symbol text");
        let grown = json(&format!("SELECT sync_provision('crm', {})", lit(&crm_setup())));
        assert_eq!(grown["version"], 2);
        let currencies = grown["tables"].as_array().unwrap().iter().find(|t| t["name"] == "public.currencies").unwrap();
        assert_eq!(currencies["columns"][2]["name"], "symbol");
    }

    #[pg_test]
    fn provision_adds_and_drops_tables() {
        crm();
        run("CREATE TABLE public.notes (id int PRIMARY KEY, body text)");
        run("INSERT INTO public.notes VALUES (1, 'hello')");
        let mut setup = crm_setup();
        setup["tables"].as_array_mut().unwrap().retain(|t| t["name"] != "currencies");
        setup["tables"].as_array_mut().unwrap().push(json!({"name": "notes"}));
        let schema = json(&format!("SELECT sync_provision('crm', {})", lit(&setup)));
        assert_eq!(schema["version"], 2);
        assert!(schema["tables"].as_array().unwrap().iter().any(|t| t["name"] == "public.notes"));
        assert_eq!(count("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'public.currencies'::regclass AND tgname LIKE 'tandem_%'"), 0);
        assert_eq!(count("SELECT count(*) FROM public.currencies"), 2, "user rows stay");
        let notes = pull(json!({"params": {"tenant": 1}}));
        assert_eq!(rows_of(&notes, "public.notes").len(), 1);
    }

    #[pg_test]
    fn provision_refuses_bad_setups_with_clear_errors() {
        run("CREATE TABLE public.logs (at timestamptz, line text)");
        assert_fails(r#"SELECT sync_provision('s', '{"tables": [{"name": "logs"}]}')"#, "42P16", "table public.logs has no primary key");
        assert_fails(r#"SELECT sync_provision('s', '{"tables": [{"name": "nope"}]}')"#, "42P01", "table public.nope does not exist");
        assert_fails(r#"SELECT sync_provision('s', '{"tables": [{"name": "logs", "direction": "up"}]}')"#, "22023", "unknown variant");
        assert_fails(r#"SELECT sync_provision('s', '{"tables": [], "x": 1}')"#, "22023", "unknown field `x`");
        assert_fails(r#"SELECT sync_provision('bad name', '{"tables": [{"name": "logs"}]}')"#, "22023", "scope name");
        assert_fails(r#"SELECT sync_provision('s', '{"tables": [{"name": "pg_class; drop"}]}')"#, "42602", "not a valid table name");
        assert_eq!(count("SELECT count(*) FROM tandem.scopes"), 0, "nothing was provisioned");
    }

    #[pg_test]
    fn a_filter_change_marks_its_table_for_devices_to_receive_anew() {
        crm();
        let mut setup = crm_setup();
        setup["tables"][0]["filter"] = json!({"id": "tenant"});
        let schema = json(&format!("SELECT sync_provision('crm', {})", lit(&setup)));
        assert_eq!(schema["version"], 2);
        let marks: Vec<_> = schema["tables"].as_array().unwrap().iter().map(|t| (t["name"].clone(), t["refiltered"].clone())).collect();
        assert!(marks.contains(&(json!("public.customers"), json!(2))), "{marks:?}");
        assert!(marks.iter().filter(|(_, mark)| !mark.is_null()).count() == 1, "only the refiltered table: {marks:?}");
    }

    #[pg_test]
    fn quoted_names_and_other_schemas_are_synced() {
        run(r#"CREATE SCHEMA "Sales Dept""#);
        run(
            r#"CREATE TABLE "Sales Dept"."Order Items" ("Order Id" bigint, "Line" int, "Note ""quoted""" text, PRIMARY KEY ("Order Id", "Line"))"#,
        );
        run(r#"INSERT INTO "Sales Dept"."Order Items" VALUES (1, 1, 'it''s')"#);
        let schema = json(r#"SELECT sync_provision('q', '{"tables": [{"name": "\"Sales Dept\".\"Order Items\""}]}')"#);
        assert_eq!(schema["tables"][0]["name"], r#""Sales Dept"."Order Items""#);
        let pulled = json("SELECT sync_select_changes('q', NULL)");
        assert_eq!(pulled["tables"][0]["columns"], json!(["Order Id", "Line", "Note \"quoted\""]));
        assert_eq!(pulled["tables"][0]["rows"][0]["values"], json!([1, 1, "it's"]));
        let upload = json!({"format": 1, "scope": "q", "origin": "c1", "tables": [{
            "name": "\"Sales Dept\".\"Order Items\"", "columns": ["Order Id", "Line", "Note \"quoted\""],
            "rows": [{"op": "upsert", "values": [1, 2, "second"]}]}]});
        let result = json(&format!("SELECT sync_apply_changes('q', {})", lit(&upload)));
        assert_eq!(result["applied"], 1);
        assert_eq!(count(r#"SELECT count(*) FROM "Sales Dept"."Order Items""#), 2);
    }

    #[pg_test]
    fn tracking_updates_of_few_or_all_rows_and_leaves_planner_settings_alone() {
        run("CREATE TABLE public.big (id int PRIMARY KEY, n int)");
        run("INSERT INTO public.big SELECT g, 0 FROM generate_series(1, 2000) g");
        run(r#"SELECT sync_provision('b', '{"tables": [{"name": "big"}]}')"#);
        run("SET LOCAL enable_mergejoin = off");
        let provisioned = count(&format!("SELECT count(*) FROM {} WHERE tandem_version = pg_current_xact_id()", track_of("public.big")));
        assert_eq!(provisioned, 2000, "provisioning stamps every row");
        run("UPDATE public.big SET n = 1 WHERE id <= 10");
        let track = track_of("public.big");
        assert_eq!(count(&format!("SELECT count(*) FROM {track} tr JOIN public.big b USING (id) WHERE b.n = 1")), 10);
        run("UPDATE public.big SET n = 2");
        run("UPDATE public.big SET n = 3 WHERE id = 7");
        let track = track_of("public.big");
        assert_eq!(count(&format!("SELECT count(*) FROM {track} WHERE tandem_origin IS NULL AND NOT tandem_deleted")), 2000);
        assert_eq!(count(&format!("SELECT count(*) FROM {}", track.replace("track_", "log_"))), 0, "the fold empties the log");
        let upload = json!({"format": 1, "scope": "b", "origin": "c1",
                            "tables": [{"name": "public.big", "columns": ["id", "n"], "rows": [{"op": "upsert", "values": [5000, 1]}]}]});
        assert_eq!(json(&format!("SELECT sync_apply_changes('b', {})", lit(&upload)))["applied"], 1);
        assert_eq!(text("SELECT current_setting('enable_hashjoin')").as_deref(), Some("on"));
        assert_eq!(text("SELECT current_setting('enable_mergejoin')").as_deref(), Some("off"), "the session's own setting stays");
    }

    #[pg_test]
    fn dropped_tracking_is_a_clear_error_and_provisioning_again_rebuilds_it() {
        crm();
        let track = track_of("public.orders");
        run(&format!("DROP TABLE {track}"));
        let error =
            assert_fails("SELECT sync_select_changes('crm', NULL, '{\"params\": {\"tenant\": 1}}')", "55000", "provision the scope again");
        assert!(error.message.contains("public.orders") && error.message.contains("track_"), "{}", error.message);
        run(&format!("SELECT sync_provision('crm', {})", lit(&crm_setup())));
        let pulled = pull(serde_json::json!({"params": {"tenant": 1}}));
        assert_eq!(rows_of(&pulled, "public.orders").len(), 2, "every row is stamped again and sent");
    }

    #[pg_test]
    fn deprovision_drops_tracking_and_keeps_data() {
        crm();
        run("SELECT sync_deprovision('crm')");
        assert_eq!(count("SELECT count(*) FROM tandem.scopes"), 0);
        assert_eq!(count("SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'tandem_%'"), 0);
        assert_eq!(count("SELECT count(*) FROM pg_tables WHERE schemaname = 'tandem' AND tablename ~ '^(track|exit)_'"), 0);
        assert_eq!(count("SELECT count(*) FROM public.orders"), 3);
        run("INSERT INTO public.orders VALUES (40, 1, 1, 1)");
        assert_fails("SELECT sync_schema('crm')", "42704", "unknown scope \"crm\"");
        assert_fails("SELECT sync_deprovision('crm')", "42704", "unknown scope");
    }
}
