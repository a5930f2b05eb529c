#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    use crate::tests::support::*;

    /// Whether tracking holds the key as deleted.
    fn deleted(track: &str, id: i64) -> bool {
        count(&format!("SELECT count(*) FROM {track} WHERE id = {id} AND tandem_deleted")) == 1
    }

    #[pg_test]
    fn triggers_append_to_the_log_and_a_fold_keeps_each_keys_last_write() {
        crm();
        let track = track_of("public.customers");
        let log = track.replace("track_", "log_");
        // A session's setting marks nothing: only the apply marks a row
        // as a replica's.
        run("SELECT set_config('tandem.origin', 'a', true)");
        run("UPDATE public.customers SET name = 'x' WHERE id = 3");
        run("INSERT INTO public.customers VALUES (8, 1, 'Eight', NULL), (9, 1, 'Nine', NULL)");
        run("DELETE FROM public.customers WHERE id = 8");
        run("DELETE FROM public.customers WHERE id = 9");
        run("INSERT INTO public.customers VALUES (9, 1, 'Nine again', NULL)");
        run("DELETE FROM public.customers WHERE id = 3");
        assert_eq!(count(&format!("SELECT count(*) FROM {log}")), 6, "one log row per statement");
        assert_eq!(count(&format!("SELECT sum(cardinality(id))::int8 FROM {log}")), 7, "one entry per changed key and statement");
        assert_eq!(
            count(&format!("SELECT count(*) FROM {track} WHERE tandem_deleted OR id IN (8, 9)")),
            0,
            "the writes left tracking alone"
        );

        let track = track_of("public.customers");
        assert_eq!(count(&format!("SELECT count(*) FROM {log}")), 0);
        assert!(deleted(&track, 3), "updated, then deleted");
        assert!(deleted(&track, 8), "inserted, then deleted");
        assert!(!deleted(&track, 9), "deleted, then inserted again");
        assert!(!deleted(&track, 1), "untouched");
        assert_eq!(count(&format!("SELECT count(*) FROM {track} WHERE tandem_origin IS NOT NULL")), 0, "no write is marked a replica's");
    }

    #[pg_test]
    fn a_changed_key_deletes_the_old_one() {
        crm();
        let track = track_of("public.currencies");
        let log = track.replace("track_", "log_");
        let exits = track.replace("track_", "exit_");
        // ORM style: the key is set, to itself; nothing is deleted.
        run("UPDATE public.currencies SET code = code, rate = 2 WHERE code = 'USD'");
        assert_eq!(count(&format!("SELECT count(*) FROM {log} WHERE tandem_kind = 'd'")), 0);
        run("UPDATE public.currencies SET code = 'CHF' WHERE code = 'USD'");
        assert_eq!(count(&format!("SELECT count(*) FROM {exits} WHERE code = 'USD'")), 1);
        // Every key of the table changed by one statement, and one changed back.
        run("UPDATE public.currencies SET code = code || 'X'");
        run("UPDATE public.currencies SET code = 'EUR' WHERE code = 'EURX'");
        let track = track_of("public.currencies");
        let live = |code: &str| count(&format!("SELECT count(*) FROM {track} WHERE code = '{code}' AND NOT tandem_deleted"));
        assert_eq!(
            (live("EUR"), live("CHF"), live("USD"), live("EURX"), live("CHFX")),
            (1, 0, 0, 0, 1),
            "the old keys are tombstones, the last ones live"
        );
        assert_eq!(count(&format!("SELECT count(*) FROM {track} WHERE tandem_deleted")), 3, "USD, CHF and EURX");
    }

    #[pg_test]
    fn provisioning_again_brings_tracking_up_to_date() {
        crm();
        let log = track_of("public.customers").replace("track_", "log_");
        // As a scope provisioned by a Tandem without change logs.
        run(&format!("DROP TABLE {log}"));
        run(&format!("SELECT sync_provision('crm', {})", lit(&crm_setup())));
        run("UPDATE public.customers SET name = 'again' WHERE id = 1");
        assert_eq!(count(&format!("SELECT count(*) FROM {log}")), 1);
        assert_eq!(json("SELECT sync_schema('crm')")["version"], 1, "the scope itself did not change");
    }

    #[pg_test]
    fn a_restamp_makes_a_child_due_without_changing_it() {
        crm();
        let items = track_of("public.order_items");
        run("SELECT set_config('tandem.origin', 'mover', true)");
        run("UPDATE public.orders SET tenant_id = 2 WHERE id = 10");
        let log = items.replace("track_", "log_");
        assert_eq!(
            count(&format!("SELECT sum(cardinality(order_id))::int8 FROM {log} WHERE tandem_kind = 'r'")),
            2,
            "both items of order 10"
        );
        let items = track_of("public.order_items");
        assert_eq!(
            count(&format!("SELECT count(*) FROM {items} WHERE order_id = 10 AND tandem_origin IS NULL")),
            2,
            "a restamp keeps the origin of the last change"
        );
        let pulled = pull(serde_json::json!({"params": {"tenant": 2}}));
        assert_eq!(rows_of(&pulled, "public.order_items").len(), 3, "the new tenant gets the moved order's items");
    }
}
