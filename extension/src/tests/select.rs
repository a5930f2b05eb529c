#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;
    use serde_json::{json, Value};

    use crate::tests::support::*;

    /// A watermark to pull changes from, as a pull would return it: this
    /// transaction's own changes (everything in a #[pg_test]) come after it.
    fn start_watermark() -> String {
        pull(json!({"params": {"tenant": [1, 2]}}))["watermark"].as_str().unwrap().to_string()
    }

    fn keys(changeset: &Value, table: &str) -> Vec<Value> {
        rows_of(changeset, table)
            .iter()
            .map(|r| if r["op"] == "delete" { json!({"delete": r["key"]}) } else { r["values"][0].clone() })
            .collect()
    }

    #[pg_test]
    fn a_full_pull_holds_the_tenants_rows_and_shared_tables() {
        crm();
        let changeset = pull(json!({"params": {"tenant": 1}}));
        assert_eq!(changeset["format"], 1);
        assert_eq!(changeset["has_more"], false);
        assert_eq!(keys(&changeset, "public.customers"), [json!(1), json!(3)]);
        assert_eq!(keys(&changeset, "public.orders"), [json!(10), json!(30)]);
        assert_eq!(rows_of(&changeset, "public.order_items").len(), 2, "items follow their order's tenant");
        assert_eq!(keys(&changeset, "public.currencies"), [json!("EUR"), json!("USD")]);
        let order = rows_of(&changeset, "public.orders")[0];
        assert_eq!(order["values"], json!([10, 1, 1, "12.50"]));
        assert!(order["version"].as_str().unwrap().parse::<u64>().is_ok());
        let both = pull(json!({"params": {"tenant": [1, 2]}}));
        assert_eq!(keys(&both, "public.customers"), [json!(1), json!(2), json!(3)]);
    }

    #[pg_test]
    fn long_and_compressed_values_arrive_whole() {
        crm();
        // Stored compressed (repetitive) and out of line (random), both toasted.
        run("UPDATE public.customers SET name = repeat('ab', 50000) WHERE id = 1");
        run("UPDATE public.customers SET name = (SELECT string_agg(md5(g::text), '') FROM generate_series(1, 400) g) WHERE id = 3");
        let changeset = pull(json!({"params": {"tenant": 1}}));
        let rows = rows_of(&changeset, "public.customers");
        assert_eq!(rows[0]["values"][2].as_str().map(str::len), Some(100_000));
        assert_eq!(rows[1]["values"][2].as_str().map(str::len), Some(12_800));
        assert_eq!(rows[1]["values"][2].as_str().map(|s| &s[..32]), Some("c4ca4238a0b923820dcc509a6f75849b"));
        assert_eq!(rows[1]["values"][3], Value::Null);
    }

    #[pg_test]
    fn batches_cover_every_row_exactly_once() {
        crm();
        run("INSERT INTO public.customers SELECT g, 1, 'c' || g, NULL FROM generate_series(100, 124) g");
        let mut since = Value::Null;
        let mut seen = Vec::new();
        let mut calls = 0;
        loop {
            calls += 1;
            let changeset = json(&format!(
                "SELECT sync_select_changes('crm', {}, '{{\"params\": {{\"tenant\": 1}}, \"max_rows\": 4}}')",
                since.as_str().map(quote).unwrap_or_else(|| "NULL".to_string())
            ));
            let rows: usize = changeset["tables"].as_array().unwrap().iter().map(|t| t["rows"].as_array().unwrap().len()).sum();
            assert!(rows <= 4);
            for table in changeset["tables"].as_array().unwrap() {
                for row in table["rows"].as_array().unwrap() {
                    seen.push(format!("{}{}", table["name"], row["values"]));
                }
            }
            since = changeset["watermark"].clone();
            if changeset["has_more"] == false {
                break;
            }
            assert!(calls < 50, "pull does not end");
        }
        let total = seen.len();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), total, "no row twice");
        assert_eq!(total, 2 + 25 + 2 + 2 + 2, "customers, orders, items, currencies");
        assert!(calls >= 9);
    }

    #[pg_test]
    fn deletes_and_moves_reach_only_the_partition_the_row_left() {
        crm();
        let start = start_watermark();
        run("DELETE FROM public.customers WHERE id = 3");
        run("UPDATE public.orders SET tenant_id = 2 WHERE id = 10");
        let incremental =
            |tenant: i64| json(&format!("SELECT sync_select_changes('crm', '{start}', '{{\"params\": {{\"tenant\": {tenant}}}}}')"));
        let one = incremental(1);
        let deletes: Vec<&Value> = rows_of(&one, "public.customers").into_iter().filter(|r| r["op"] == "delete").collect();
        assert_eq!(deletes.len(), 1);
        assert_eq!(deletes[0]["key"], json!([3]));
        assert!(keys(&one, "public.orders").contains(&json!({"delete": [10]})), "{one}");
        let two = incremental(2);
        assert!(!keys(&two, "public.customers").contains(&json!({"delete": [3]})), "tenant 2 never held customer 3");
        assert!(keys(&two, "public.orders").contains(&json!(10)), "the moved order arrives at its new tenant");
        let items: Vec<Value> = rows_of(&two, "public.order_items").iter().map(|r| r["values"].clone()).collect();
        assert!(items.contains(&json!([10, 1, "A"])) && items.contains(&json!([10, 2, "B"])), "its items follow: {items:?}");
    }

    #[pg_test]
    fn truncate_is_tracked_as_deletes() {
        crm();
        let start = start_watermark();
        run("TRUNCATE public.currencies");
        let changeset = json(&format!("SELECT sync_select_changes('crm', '{start}', '{{\"params\": {{\"tenant\": 1}}}}')"));
        assert_eq!(keys(&changeset, "public.currencies"), [json!({"delete": ["EUR"]}), json!({"delete": ["USD"]})]);
    }

    #[pg_test]
    fn a_clients_own_uploads_do_not_come_back() {
        crm();
        // The file's first pull: the watermark the server gave dev1.
        let start = pull(json!({"client_id": "dev1", "params": {"tenant": 1}}))["watermark"].as_str().unwrap().to_string();
        let result = apply(&upload("dev1", json!([{"op": "upsert", "values": [50, 1, "mine", null]}])), json!({"params": {"tenant": 1}}));
        let version = result["version"].as_str().unwrap().to_string();
        run("INSERT INTO public.customers VALUES (51, 1, 'server side', NULL)");
        let pull = |options: serde_json::Value| {
            keys(&json(&format!("SELECT sync_select_changes('crm', '{start}', {})", lit(&options))), "public.customers")
        };
        let mine = pull(json!({"client_id": "dev1", "params": {"tenant": 1}, "echoes": [version]}));
        assert!(mine.contains(&json!(51)) && !mine.contains(&json!(50)), "{mine:?}");
        let unrecorded = pull(json!({"client_id": "dev1", "params": {"tenant": 1}}));
        assert!(unrecorded.contains(&json!(50)), "a replica that did not record the answer gets its row: {unrecorded:?}");
        let other = pull(json!({"params": {"tenant": 1}, "echoes": [version]}));
        assert!(other.contains(&json!(50)), "another replica gets it: {other:?}");
    }

    #[pg_test]
    fn bad_calls_name_the_problem() {
        crm();
        assert_fails("SELECT sync_select_changes('nope', NULL)", "42704", "unknown scope \"nope\"");
        assert_fails("SELECT sync_select_changes('crm', 'yesterday', '{\"params\": {\"tenant\": 1}}')", "22023", "invalid watermark");
        assert_fails("SELECT sync_select_changes('crm', NULL, '{\"param\": {}}')", "22023", "unknown field `param`");
        assert_fails("SELECT sync_select_changes('crm', NULL)", "22023", "filtered by parameter \"tenant\"");
        assert_fails("SELECT sync_select_changes('crm', NULL, '{\"params\": {\"tenant\": \"x\"}}')", "22023", "expected a 32-bit integer");
        assert_fails("SELECT sync_select_changes('crm', NULL, '{\"params\": {\"tenant\": 1}, \"max_rows\": 0}')", "22023", "max_rows");
        assert_fails(
            "SELECT sync_select_changes('crm', NULL, '{\"params\": {\"tenant\": 1}, \"max_rows\": 1e400}')",
            "22023",
            "unreadable JSON",
        );
        assert_fails("SELECT sync_select_changes(NULL, NULL)", "22004", "scope must not be NULL");
        assert_fails("SELECT sync_apply_changes('crm', NULL)", "22004", "changeset must not be NULL");
        assert_fails("SELECT sync_provision('crm', NULL)", "22004", "setup must not be NULL");
        assert_fails("SELECT sync_status(NULL)", "22004", "scope must not be NULL");
    }
}
