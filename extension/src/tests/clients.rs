#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;
    use serde_json::json;

    use crate::tests::support::*;

    #[pg_test]
    fn registration_binds_parameters_and_keeps_only_a_hash() {
        crm();
        let issued = json(r#"SELECT sync_register_client('crm', '{"tenant": 1}')"#);
        let client_id = issued["client_id"].as_str().unwrap().to_string();
        let token = issued["token"].as_str().unwrap().to_string();
        assert_eq!(tandem_core::identity::token_client_id(&token), Some(client_id.as_str()), "{token}");
        let secret = token.rsplit('_').next().unwrap().to_string();
        assert_eq!(secret.len(), 64);
        assert_eq!(
            count(&format!("SELECT count(*) FROM tandem.clients WHERE token_hash = sha256(convert_to({}, 'UTF8'))", quote(&token))),
            1
        );
        assert_eq!(
            count(&format!("SELECT count(*) FROM tandem.clients c WHERE c::text LIKE '%{secret}%'")),
            0,
            "the token itself is not stored"
        );
        // The client's calls run with its parameters, whatever it asks for.
        let mine = json(&format!("SELECT sync_select_changes('crm', NULL, '{{\"client_id\": \"{client_id}\"}}')"));
        assert_eq!(rows_of(&mine, "public.customers").len(), 2);
        assert_fails(
            &format!("SELECT sync_select_changes('crm', NULL, '{{\"client_id\": \"{client_id}\", \"params\": {{\"tenant\": 2}}}}')"),
            "22023",
            "is bound to parameters {\"tenant\":1}",
        );
        // With the token, the call runs as the client whatever it claims.
        let with_token = json(&format!("SELECT sync_select_changes('crm', NULL, '{{\"token\": \"{token}\"}}')"));
        assert_eq!(rows_of(&with_token, "public.customers").len(), 2);
        assert_fails(&format!("SELECT sync_select_changes('crm', NULL, '{{\"token\": \"{token}x\"}}')"), "28000", "invalid token");
        assert_fails(
            &format!("SELECT sync_select_changes('crm', NULL, '{{\"token\": \"{token}\", \"client_id\": \"someone\"}}')"),
            "42501",
            "is not the token's client",
        );
        let theft = upload(&client_id, json!([{"op": "upsert", "values": [2, 2, "stolen", null]}]));
        assert_fails(
            &format!("SELECT sync_apply_changes('crm', {}, '{{\"client_id\": \"{client_id}\"}}')", lit(&theft)),
            "42501",
            "outside the client's partition",
        );
    }

    #[pg_test]
    fn registration_needs_every_filter_parameter() {
        crm();
        assert_fails("SELECT sync_register_client('crm', '{}')", "22023", "filtered by parameter \"tenant\"");
        assert_fails(r#"SELECT sync_register_client('crm', '{"tenant": "one"}')"#, "22023", "expected a 32-bit integer");
        assert_fails(r#"SELECT sync_register_client('nope', '{"tenant": 1}')"#, "42704", "unknown scope");
        let two = json(r#"SELECT sync_register_client('crm', '{"tenant": [1, 2]}')"#);
        assert!(two["client_id"].is_string());
    }

    #[pg_test]
    fn a_new_client_id_is_bound_by_its_first_call() {
        crm();
        json(r#"SELECT sync_select_changes('crm', NULL, '{"client_id": "laptop", "params": {"tenant": 2}}')"#);
        assert_fails(
            r#"SELECT sync_select_changes('crm', NULL, '{"client_id": "laptop", "params": {"tenant": 1}}')"#,
            "22023",
            "is bound to parameters",
        );
    }
}
