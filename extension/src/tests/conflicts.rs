#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;
    use serde_json::{json, Value};

    use crate::tests::support::*;

    /// Customer 1 changed on the server after the client read it.
    fn server_changed_customer_1() -> String {
        let base = version_of("public.customers", json!(1));
        // A new subtransaction does not give a new version; a real change does
        // not need one either: the conflict is decided by the version of the
        // client's base, so fake an older base instead.
        run("UPDATE public.customers SET name = 'Ada (server)' WHERE id = 1");
        format!("{}", base.parse::<u64>().unwrap() - 1)
    }

    fn client_edit(base: &str) -> Value {
        upload("dev1", json!([{"op": "upsert", "base": base, "seq": 1, "values": [1, 1, "Ada (device)", "ada@a.test"]}]))
    }

    #[pg_test]
    fn server_wins_by_default_and_the_losing_row_is_logged() {
        crm();
        let base = server_changed_customer_1();
        let result = apply(&client_edit(&base), json!({"params": {"tenant": 1}}));
        let conflict = &result["conflicts"][0];
        assert_eq!(conflict["kind"], "both_updated");
        assert_eq!(conflict["decision"], "server_wins");
        assert_eq!(conflict["row"]["name"], "Ada (server)");
        assert_eq!(conflict["client_row"]["name"], "Ada (device)");
        assert!(conflict["version"].is_string());
        assert_eq!(result["applied"], 0);
        assert_eq!(text("SELECT name FROM public.customers WHERE id = 1").unwrap(), "Ada (server)");
        let logged = json("SELECT to_jsonb(c) FROM tandem.conflicts c");
        assert_eq!(logged["client_row"]["name"], "Ada (device)");
        assert_eq!(logged["server_row"]["name"], "Ada (server)");
        assert_eq!(logged["decision"], "server_wins");
        assert_eq!(logged["client_id"], "dev1");
    }

    #[pg_test]
    fn client_wins_writes_the_clients_row() {
        crm();
        let base = server_changed_customer_1();
        crm_policy("client_wins");
        let result = apply(&client_edit(&base), json!({"params": {"tenant": 1}}));
        assert_eq!(result["conflicts"][0]["decision"], "client_wins");
        assert_eq!(result["conflicts"][0]["row"]["name"], "Ada (device)");
        assert_eq!(text("SELECT name FROM public.customers WHERE id = 1").unwrap(), "Ada (device)");
        assert_eq!(count("SELECT count(*) FROM tandem.conflicts WHERE server_row->>'name' = 'Ada (server)'"), 1);
    }

    #[pg_test]
    fn a_resolver_can_merge_and_the_merge_goes_to_everyone() {
        crm();
        run("CREATE FUNCTION public.merge_names(c jsonb) RETURNS jsonb LANGUAGE sql AS $$ \
             SELECT jsonb_build_object('name', (c->'server_row'->>'name') || ' + ' || (c->'client_row'->>'name')) $$");
        let base = server_changed_customer_1();
        crm_policy("public.merge_names");
        let result = apply(&client_edit(&base), json!({"params": {"tenant": 1}}));
        let conflict = &result["conflicts"][0];
        assert_eq!(conflict["decision"], "merged");
        assert_eq!(conflict["row"]["name"], "Ada (server) + Ada (device)");
        assert_eq!(conflict["row"]["email"], "ada@a.test", "columns the resolver left out keep the server's value");
        assert_eq!(
            text(&format!("SELECT tandem_origin FROM {} WHERE id = 1", track_of("public.customers"))),
            None,
            "merged rows are sent back to the uploader too"
        );
        run("CREATE FUNCTION public.always_client(c jsonb) RETURNS jsonb LANGUAGE sql AS $$ SELECT '\"client_wins\"'::jsonb $$");
        let base = format!("{}", version_of("public.customers", json!(1)).parse::<u64>().unwrap() - 1);
        crm_policy("public.always_client");
        let result = apply(
            &upload("dev1", json!([{"op": "upsert", "base": base, "seq": 2, "values": [1, 1, "Ada (device 2)", "ada@a.test"]}])),
            json!({"params": {"tenant": 1}}),
        );
        assert_eq!(result["conflicts"][0]["decision"], "client_wins");
        assert_eq!(text("SELECT name FROM public.customers WHERE id = 1").unwrap(), "Ada (device 2)");
    }

    #[pg_test]
    fn bad_resolvers_fail_the_apply() {
        crm();
        run("CREATE FUNCTION public.wrong_type(c jsonb) RETURNS text LANGUAGE sql AS $$ SELECT 'x' $$");
        run("CREATE FUNCTION public.bad_answer(c jsonb) RETURNS jsonb LANGUAGE sql AS $$ SELECT '42'::jsonb $$");
        let base = server_changed_customer_1();
        let provision = |policy: &str| {
            let mut setup = crm_setup();
            setup["policy"] = json!(policy);
            format!("SELECT sync_provision('crm', {})", lit(&setup))
        };
        // A resolver that cannot be one is refused when the scope is provisioned.
        assert_fails(&provision("public.missing"), "39000", "no function public.missing(jsonb) exists");
        assert_fails(&provision("public.wrong_type"), "39000", "must return jsonb");
        crm_policy("public.bad_answer");
        let sql = format!("SELECT sync_apply_changes('crm', {}, '{{\"params\": {{\"tenant\": 1}}}}')", lit(&client_edit(&base)));
        assert_fails(&sql, "39000", "returned 42");
        assert_eq!(text("SELECT name FROM public.customers WHERE id = 1").unwrap(), "Ada (server)");
    }

    #[pg_test]
    fn every_kind_of_conflict_is_named() {
        crm();
        let old = format!("{}", version_of("public.customers", json!(1)).parse::<u64>().unwrap() - 1);
        run("DELETE FROM public.customers WHERE id = 3");
        run("INSERT INTO public.customers VALUES (7, 1, 'server seven', NULL)");
        let result = apply(
            &upload(
                "dev1",
                json!([
                {"op": "delete", "base": old, "seq": 1, "key": [1]},
                {"op": "upsert", "base": old, "seq": 2, "values": [3, 1, "edited", null]},
                {"op": "upsert", "seq": 3, "values": [7, 1, "device seven", null]},
                {"op": "delete", "base": old, "seq": 4, "key": [99]}]),
            ),
            json!({"params": {"tenant": 1}}),
        );
        let kinds: Vec<(Value, Value)> =
            result["conflicts"].as_array().unwrap().iter().map(|c| (c["key"].clone(), c["kind"].clone())).collect();
        assert_eq!(
            kinds,
            [
                (json!([1]), json!("local_deleted_server_updated")),
                (json!([3]), json!("local_updated_server_deleted")),
                (json!([7]), json!("both_inserted")),
            ]
        );
        assert_eq!(result["current"][0]["key"], json!([99]), "deleting a row the server lacks converges");
        assert_eq!(result["current"][0]["row"], Value::Null);
        assert_eq!(count("SELECT count(*) FROM tandem.conflicts"), 3);
        assert_eq!(result["conflicts"][1]["row"], Value::Null, "server_wins keeps the delete");
    }

    #[pg_test]
    fn a_constraint_violation_is_a_conflict_not_a_half_applied_changeset() {
        crm();
        let result = apply(
            &upload(
                "dev1",
                json!([
                {"op": "upsert", "seq": 1, "values": [60, 1, "dup email", "ada@a.test"]},
                {"op": "upsert", "seq": 2, "values": [61, 1, "fine", "new@a.test"]}]),
            ),
            json!({"params": {"tenant": 1}}),
        );
        assert_eq!(result["applied"], 1, "{result}");
        let conflict = &result["conflicts"][0];
        assert_eq!(conflict["kind"], "constraint_violated");
        assert_eq!(conflict["decision"], "server_wins");
        assert_eq!(conflict["key"], json!([60]));
        assert_eq!(count("SELECT count(*) FROM public.customers WHERE id = 60"), 0);
        assert_eq!(count("SELECT count(*) FROM public.customers WHERE id = 61"), 1);
        assert_eq!(count("SELECT count(*) FROM tandem.conflicts WHERE kind = 'constraint_violated'"), 1);
        // An update that breaks a foreign key: the same.
        let result = apply(
            &json!({"format": 1, "scope": "crm", "origin": "dev1", "tables": [{"name": "orders",
                "columns": ["id", "tenant_id", "customer_id", "total"],
                "rows": [{"op": "upsert", "base": version_of("public.orders", json!(10)), "seq": 3, "values": [10, 1, 12345, "1.00"]}]}]}),
            json!({"params": {"tenant": 1}}),
        );
        assert_eq!(result["conflicts"][0]["kind"], "constraint_violated", "{result}");
        assert!(result["conflicts"][0]["reason"].as_str().unwrap().contains("foreign key"));
    }
}
