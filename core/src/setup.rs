//! Scope setup: the JSON a server operator passes to `sync_provision` to say
//! which tables a scope syncs, which columns, filtered how, in which direction.

use std::collections::BTreeMap;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::ident::TableName;
use crate::options::Policy;

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScopeSetup {
    pub tables: Vec<TableSetup>,
    /// How conflicts are settled in every table without a policy of its
    /// own: `server_wins` (default), `client_wins` or a resolver function
    /// `schema.function`. The server's owner decides it, never a client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TableSetup {
    pub name: String,
    /// Columns to sync; all when absent. The primary key is always synced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub columns: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<Filter>,
    #[serde(default)]
    pub direction: Direction,
    /// This table's conflict policy, over the scope's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
}

/// Which way rows of a table may travel. Enforced by the server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    #[default]
    Bidirectional,
    DownloadOnly,
    UploadOnly,
}

impl Direction {
    pub fn downloads(self) -> bool {
        self != Direction::UploadOnly
    }
    pub fn uploads(self) -> bool {
        self != Direction::DownloadOnly
    }
}

/// How a table is partitioned between clients.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Filter {
    /// Column -> parameter name: a row belongs to a client when each column
    /// equals the client's parameter (or is in it, for a list parameter).
    Columns(BTreeMap<String, String>),
    /// The row belongs to whoever holds its parent row: `on` maps this
    /// table's columns to the parent's primary key columns.
    Via { parent: String, on: BTreeMap<String, String> },
}

impl<'de> Deserialize<'de> for Filter {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let Value::Object(map) = Value::deserialize(deserializer)? else {
            return Err(D::Error::custom(
                "a filter is an object: {\"column\": \"param\"} or {\"via\": \"parent\", \"on\": {\"column\": \"parent_column\"}}",
            ));
        };
        let strings = |value: Value, what: &str| -> std::result::Result<BTreeMap<String, String>, D::Error> {
            let Value::Object(pairs) = value else {
                return Err(D::Error::custom(format!("{what} must be an object of column names to names")));
            };
            pairs
                .into_iter()
                .map(|(k, v)| match v {
                    Value::String(s) => Ok((k, s)),
                    other => Err(D::Error::custom(format!("{what}: \"{k}\" maps to {other}, expected a name"))),
                })
                .collect()
        };
        if map.contains_key("via") {
            let mut map = map;
            let parent = match map.remove("via") {
                Some(Value::String(parent)) => parent,
                _ => return Err(D::Error::custom("\"via\" must name the parent table")),
            };
            let on = strings(map.remove("on").ok_or_else(|| D::Error::custom("a \"via\" filter needs \"on\""))?, "\"on\"")?;
            if let Some(extra) = map.keys().next() {
                return Err(D::Error::custom(format!("unknown key \"{extra}\" in a \"via\" filter")));
            }
            Ok(Filter::Via { parent, on })
        } else {
            Ok(Filter::Columns(strings(Value::Object(map), "filter")?))
        }
    }
}

impl Serialize for Filter {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Filter::Columns(map) => map.serialize(serializer),
            Filter::Via { parent, on } => serde_json::json!({ "via": parent, "on": on }).serialize(serializer),
        }
    }
}

impl ScopeSetup {
    /// Parses and checks what can be checked without a database.
    pub fn parse(scope: &str, value: &Value) -> Result<Self> {
        check_scope_name(scope)?;
        let setup: ScopeSetup = serde_json::from_value(value.clone()).map_err(|e| Error::InvalidSetup(e.to_string()))?;
        if setup.tables.is_empty() {
            return Err(Error::InvalidSetup("\"tables\" is empty: list at least one table".into()));
        }
        for policy in setup.tables.iter().filter_map(|t| t.policy.as_deref()).chain(setup.policy.as_deref()) {
            Policy::parse(Some(policy)).map_err(|e| Error::InvalidSetup(e.to_string()))?;
        }
        let mut seen = Vec::new();
        for table in &setup.tables {
            let name = TableName::parse(&table.name)?;
            if seen.contains(&name) {
                return Err(Error::InvalidSetup(format!("table {name} is listed twice")));
            }
            seen.push(name);
            match &table.filter {
                Some(Filter::Columns(map)) if map.is_empty() => {
                    return Err(Error::InvalidSetup(format!("the filter of {} is empty", table.name)))
                }
                Some(Filter::Columns(map)) => {
                    for param in map.values() {
                        check_param_name(param)?;
                    }
                }
                Some(Filter::Via { on, .. }) if on.is_empty() => {
                    return Err(Error::InvalidSetup(format!("the \"via\" filter of {} has an empty \"on\"", table.name)))
                }
                _ => {}
            }
        }
        Ok(setup)
    }
}

/// Scope names appear in tracking metadata and URLs: keep them plain.
pub fn check_scope_name(scope: &str) -> Result<()> {
    let ok = !scope.is_empty() && scope.len() <= 63 && scope.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidSetup(format!("scope name \"{scope}\" must be 1 to 63 letters, digits, '_' or '-'")))
    }
}

fn check_param_name(param: &str) -> Result<()> {
    let ok = param.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && param.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidSetup(format!("parameter name \"{param}\" must be a plain name like tenant or org_id")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_the_design_example() {
        let setup = ScopeSetup::parse(
            "crm",
            &json!({"tables": [
                {"name": "public.customers", "filter": {"tenant_id": "tenant"}},
                {"name": "public.orders", "columns": ["id", "tenant_id", "total"],
                 "filter": {"tenant_id": "tenant"}, "direction": "bidirectional"},
                {"name": "public.order_items", "filter": {"via": "public.orders", "on": {"order_id": "id"}}},
                {"name": "public.currencies", "direction": "download_only"}]}),
        )
        .unwrap();
        assert_eq!(setup.tables.len(), 4);
        assert_eq!(
            setup.tables[2].filter,
            Some(Filter::Via { parent: "public.orders".into(), on: [("order_id".into(), "id".into())].into() })
        );
        assert_eq!(setup.tables[3].direction, Direction::DownloadOnly);
        let again: ScopeSetup = serde_json::from_value(serde_json::to_value(&setup).unwrap()).unwrap();
        assert_eq!(again, setup);
    }

    #[test]
    fn refuses_bad_setups_with_a_reason() {
        let cases = [
            ("crm", json!({"tables": []}), "empty"),
            ("crm", json!({"tables": [{"name": "a"}], "extra": 1}), "unknown field"),
            ("crm", json!({"tables": [{"name": "a", "colums": ["x"]}]}), "unknown field"),
            ("crm", json!({"tables": [{"name": "a"}, {"name": "public.a"}]}), "twice"),
            ("crm", json!({"tables": [{"name": "a", "direction": "sideways"}]}), "unknown variant"),
            ("crm", json!({"policy": "newest_wins", "tables": [{"name": "a"}]}), "unknown policy"),
            ("crm", json!({"tables": [{"name": "a", "policy": "drop table"}]}), "unknown policy"),
            ("crm", json!({"tables": [{"name": "a", "filter": {"via": "b"}}]}), "needs \"on\""),
            ("crm", json!({"tables": [{"name": "a", "filter": {"t": 3}}]}), "expected a name"),
            ("crm", json!({"tables": [{"name": "a", "filter": {"t": "bad name"}}]}), "plain name"),
            ("bad scope", json!({"tables": [{"name": "a"}]}), "scope name"),
        ];
        for (scope, setup, needle) in cases {
            let err = ScopeSetup::parse(scope, &setup).unwrap_err().to_string();
            assert!(err.contains(needle), "{setup}: {err}");
        }
    }
}
