#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;
    use serde_json::json;

    use crate::tests::support::*;

    #[pg_test]
    fn status_reports_tables_clients_and_conflicts() {
        crm();
        run("DELETE FROM public.currencies WHERE code = 'USD'");
        json(r#"SELECT sync_select_changes('crm', NULL, '{"client_id": "dev1", "params": {"tenant": 1}}')"#);
        let status = json("SELECT sync_status('crm')");
        assert_eq!(status["schema_version"], 1);
        let currencies = status["tables"].as_array().unwrap().iter().find(|t| t["name"] == "public.currencies").unwrap();
        assert_eq!(currencies["rows"], 1);
        assert_eq!(currencies["tombstones"], 1);
        assert_eq!(status["clients"][0]["client_id"], "dev1");
        assert_eq!(status["clients"][0]["params"], json!({"tenant": 1}));
        assert_eq!(status["clients"][0]["replicas"][0]["replica_id"], "dev1", "a caller without a replica id is one replica");
        assert_eq!(status["conflicts"], 0);
        assert_fails("SELECT sync_status('nope')", "42704", "unknown scope");
    }

    #[pg_test]
    fn cleanup_keeps_what_active_replicas_need() {
        crm();
        run("DELETE FROM public.currencies WHERE code = 'USD'");
        // A replica with no pull on record (its uploads made it) holds
        // nothing back: its first pull from a watermark is refused.
        run("INSERT INTO tandem.clients (client_id, scope, params, last_seen) VALUES ('slow', 'crm', '{\"tenant\": 1}', now())");
        run("INSERT INTO tandem.replicas (replica_id, client_id, last_seen) VALUES ('slow file', 'slow', now())");
        let kept = json("SELECT sync_cleanup('crm')");
        assert_eq!((kept["active_replicas"].clone(), kept["purged_before"].is_string()), (json!(0), true), "{kept}");
        // One that pulled holds back what came after its last pull's start.
        run("UPDATE tandem.replicas SET last_since = pg_current_snapshot()::text");
        let purged = json("SELECT sync_cleanup('crm')");
        assert_eq!(purged["active_replicas"], 1, "{purged}");
        assert_eq!(purged["tombstones_removed"], 0, "this transaction's own changes are not yet past every snapshot");
        run("UPDATE tandem.replicas SET last_seen = now() - interval '90 days'");
        let purged = json(r#"SELECT sync_cleanup('crm', '{"inactive_after_days": 30}')"#);
        assert_eq!(purged["active_replicas"], 0);
        assert_fails(r#"SELECT sync_cleanup('crm', '{"days": 1}')"#, "22023", "unknown field `days`");
    }
}
