//! Fixtures and helpers shared by the `#[pg_test]` tests.

use pgrx::prelude::*;
use serde_json::{json, Value};

use crate::spi::{in_subtransaction, PgError};

pub fn run(sql: &str) {
    Spi::run(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// The jsonb result of a query.
pub fn json(sql: &str) -> Value {
    Spi::get_one::<pgrx::JsonB>(sql).unwrap_or_else(|e| panic!("{sql}: {e}")).map(|j| j.0).unwrap_or(Value::Null)
}

pub fn count(sql: &str) -> i64 {
    Spi::get_one::<i64>(sql).unwrap_or_else(|e| panic!("{sql}: {e}")).unwrap_or_default()
}

pub fn text(sql: &str) -> Option<String> {
    Spi::get_one::<String>(sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// The error `sql` fails with; panics when it succeeds. Whatever it did is
/// rolled back, as the caller's transaction would be.
pub fn fails(sql: &str) -> PgError {
    match in_subtransaction(|| Spi::run(sql)) {
        Ok(Ok(())) => panic!("expected an error from: {sql}"),
        Ok(Err(e)) => panic!("expected a PostgreSQL error, got {e} from: {sql}"),
        Err(error) => error,
    }
}

/// Asserts the SQLSTATE and a fragment of the message.
pub fn assert_fails(sql: &str, sqlstate: &str, fragment: &str) -> PgError {
    let error = fails(sql);
    assert_eq!(error.sqlstate, sqlstate, "{sql}: {}", error.message);
    assert!(error.message.contains(fragment), "{sql}: message {:?} lacks {fragment:?}", error.message);
    error
}

/// Quotes text as a SQL literal.
pub fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// Quotes a JSON value as a SQL literal.
pub fn lit(value: &Value) -> String {
    format!("'{}'", value.to_string().replace('\'', "''"))
}

/// Tenants' customers and orders, order items filtered through orders, and a
/// shared download-only currency table, provisioned as scope `crm`.
pub fn crm() {
    run("CREATE TABLE public.customers (id bigint PRIMARY KEY, tenant_id int NOT NULL, name text, email text UNIQUE)");
    run("CREATE TABLE public.orders (id bigint PRIMARY KEY, tenant_id int NOT NULL, \
         customer_id bigint REFERENCES public.customers, total numeric(12,2))");
    run("CREATE TABLE public.order_items (order_id bigint REFERENCES public.orders ON DELETE CASCADE, \
         line int, sku text, PRIMARY KEY (order_id, line))");
    run("CREATE TABLE public.currencies (code text PRIMARY KEY, rate float8)");
    run("INSERT INTO public.customers VALUES (1, 1, 'Ada', 'ada@a.test'), (2, 2, 'Bob', 'bob@b.test'), (3, 1, 'Cy', NULL)");
    run("INSERT INTO public.orders VALUES (10, 1, 1, 12.50), (20, 2, 2, 99.99), (30, 1, 1, 0.01)");
    run("INSERT INTO public.order_items VALUES (10, 1, 'A'), (10, 2, 'B'), (20, 1, 'C')");
    run("INSERT INTO public.currencies VALUES ('EUR', 1.0), ('USD', 1.1)");
    run(&format!("SELECT sync_provision('crm', {})", lit(&crm_setup())));
}

/// Sets the conflict policy of scope `crm` (it is the scope's, never a
/// client's).
pub fn crm_policy(policy: &str) {
    let mut setup = crm_setup();
    setup["policy"] = json!(policy);
    run(&format!("SELECT sync_provision('crm', {})", lit(&setup)));
}

pub fn crm_setup() -> Value {
    json!({"tables": [
        {"name": "customers", "filter": {"tenant_id": "tenant"}},
        {"name": "order_items", "filter": {"via": "orders", "on": {"order_id": "id"}}},
        {"name": "orders", "filter": {"tenant_id": "tenant"}},
        {"name": "currencies", "direction": "download_only"}]})
}

/// The tracking table of a scope table, with the scope's change logs folded
/// into it first (`sync_status` folds, as every sync call does).
pub fn track_of(table: &str) -> String {
    let scope = text(&format!("SELECT scope FROM tandem.scope_tables WHERE name = {}", quote(table))).unwrap_or_default();
    run(&format!("SELECT sync_status({})", quote(&scope)));
    format!("tandem.track_{}", count(&format!("SELECT id FROM tandem.scope_tables WHERE name = {}", quote(table))))
}

/// A full pull of `crm` for a tenant, as JSON.
pub fn pull(options: Value) -> Value {
    json(&format!("SELECT sync_select_changes('crm', NULL, {})", lit(&options)))
}

/// Rows of one table in a changeset.
pub fn rows_of<'a>(changeset: &'a Value, table: &str) -> Vec<&'a Value> {
    changeset["tables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["name"] == table)
        .flat_map(|t| t["rows"].as_array().into_iter().flatten())
        .collect()
}

/// The server version of a row, as a pull reports it.
pub fn version_of(table: &str, key: Value) -> String {
    let changeset = pull(json!({"params": {"tenant": [1, 2]}}));
    let row = rows_of(&changeset, table)
        .into_iter()
        .find(|r| r["values"].as_array().is_some_and(|v| v[0] == key))
        .unwrap_or_else(|| panic!("no row {key} in {table}"));
    row["version"].as_str().unwrap_or_default().to_string()
}

/// An upload of customer rows from client `origin`.
pub fn upload(origin: &str, rows: Value) -> Value {
    json!({"format": 1, "scope": "crm", "origin": origin,
           "tables": [{"name": "public.customers", "columns": ["id", "tenant_id", "name", "email"], "rows": rows}]})
}

/// Applies an upload and returns the result.
pub fn apply(changeset: &Value, options: Value) -> Value {
    json(&format!("SELECT sync_apply_changes('crm', {}, {})", lit(changeset), lit(&options)))
}
