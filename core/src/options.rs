//! Options of `sync_select_changes` and `sync_apply_changes`, and the filter
//! parameters a client is bound to. Unknown keys are errors, never ignored.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::watermark::{Horizon, Watermark};

/// Filter parameter values by name: a scalar, or a list meaning `IN`.
pub type Params = BTreeMap<String, Value>;

pub const DEFAULT_MAX_ROWS: u64 = 10_000;

/// Bytes of changeset JSON after which a batch ends, either way, whatever
/// `max_rows` says (option `max_bytes`): a batch of large rows ends early
/// (`has_more`), so no message comes near what a connection or a text
/// value carries (1 GB).
pub const DEFAULT_MAX_BYTES: u64 = 64 << 20;

/// The most `max_bytes` may ask for: with the largest row on top, a batch
/// stays well under 1 GB.
pub const MAX_MAX_BYTES: u64 = 256 << 20;

/// The largest row, as changeset JSON, that Tandem moves (alone in its
/// batch); a larger one is an error naming it.
pub const MAX_ROW_BYTES: usize = 512 << 20;

/// Checks a `max_bytes` option.
pub fn check_max_bytes(max_bytes: Option<u64>) -> Result<()> {
    match max_bytes {
        Some(n) if n == 0 || n > MAX_MAX_BYTES => Err(Error::InvalidOptions(format!(
            "max_bytes must be between 1 and {MAX_MAX_BYTES} (a batch ends once its changeset reaches it; it holds at least one row)"
        ))),
        _ => Ok(()),
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelectOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// A token from `sync_register_client`: the call runs as that client,
    /// with its parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<Params>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rows: Option<u64>,
    /// Bytes of changeset after which a batch ends (default 64 MB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
    /// The calling file (one replica of the client's partition); the
    /// client id when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<String>,
    /// Versions of this replica's uploads whose answers it has recorded and
    /// that its watermark does not cover yet. Rows those uploads left exactly
    /// as sent are not sent back; anything else is (a file that never
    /// recorded an answer, a restored backup, a copy, gets everything).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub echoes: Option<Vec<String>>,
    /// The schema version the caller holds: a pull of a scope that changed
    /// since is refused (`SchemaMoved`) rather than read under a schema
    /// (a filter) the caller has not taken yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_version: Option<i64>,
    /// The caller takes deletes marked `respelled` (see
    /// `changeset::RowChange::respelled`); a device asks once the server's
    /// `sync_schema` says it sends them, so neither side meets a field it
    /// does not know.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub respellings: Option<bool>,
}

/// The content type of an upload sent to the gateway with its options in
/// the body, as `{"options": {...}, "changeset": {...}}`, instead of in the
/// query: a device's `seen` can outgrow what a URL may hold.
pub const APPLY_ENVELOPE: &str = "application/vnd.tandem.apply+json";

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplyOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<Params>,
    /// Refused when given: the conflict policy is the scope's, set by the
    /// server's owner in `sync_provision` (kept here to say so clearly).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// The uploading file; the client id when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<String>,
    /// This upload's id, chosen by the file and kept there until it has
    /// recorded the answer. An upload sent again after its answer was lost
    /// carries the same id: what the first one applied is acknowledged, not
    /// applied twice. Only the file that holds the id can claim a retry, so
    /// a file restored from a backup or copied never passes for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_id: Option<String>,
    /// The uploader takes an answer's `respelled` (see
    /// `apply_result::AppliedRow::respelled`): only then does the server
    /// apply a delete and an insert of one key under two texts as one
    /// change of the key's text (refused otherwise). Sent, as for pulls,
    /// once the server's `sync_schema` says `respellings`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub respellings: Option<bool>,
    /// What the uploading file had received: an insert of a key whose row
    /// left the client's partition beyond it meets that exit as a conflict
    /// instead of bringing the row back (a restored backup sending an
    /// insert again).
    /// Sent once the server's `sync_schema` says `seen`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seen: Option<Seen>,
}

/// The `seen` of [`ApplyOptions`]: the file's watermark, and the versions
/// of its own uploads whose answers it recorded since (its echoes).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seen {
    pub watermark: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub echoes: Vec<String>,
    /// Keys whose delete a pull brought while the file held an unsent
    /// change of them: the watermark covers those deletes, but the file
    /// kept its row, so an insert of such a key meets its delete whatever
    /// the watermark says. Sent once `sync_schema` says `seen_kept`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kept: Vec<KeptKey>,
    /// Versions of deletes a pull brought that reached no row of the file
    /// while it held unsent changes of the table: one of those may hold
    /// the key in another text of the same value (`B0EE...` for the
    /// server's `b0ee...`), so an insert of a key they deleted meets them
    /// whatever the watermark says. Sent with `kept`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unmatched: Vec<String>,
}

/// A key of [`Seen::kept`]: the table as the scope names it, the key as
/// the file's uploads send it, and the version of the delete the pull
/// brought (sent once `sync_schema` says `kept_versions`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeptKey {
    pub table: String,
    pub key: Vec<Value>,
    /// Only that exit of the key counts: an older one, which the file
    /// received long ago, is no delete it did not take. Without it (a
    /// hold an earlier Tandem recorded), any exit that is not an echo does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// The deletes a file's pulls brought and it did not take, held until
/// its next upload goes through: what it sends as [`Seen::kept`] and
/// [`Seen::unmatched`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotTaken {
    #[serde(default)]
    pub kept: Vec<KeptKey>,
    #[serde(default)]
    pub unmatched: Vec<String>,
}

impl NotTaken {
    /// Adds what `other` holds that this does not.
    pub fn merge(&mut self, other: NotTaken) {
        for key in other.kept {
            if !self.kept.contains(&key) {
                self.kept.push(key);
            }
        }
        for version in other.unmatched {
            if !self.unmatched.contains(&version) {
                self.unmatched.push(version);
            }
        }
    }
}

impl Seen {
    /// The changes the file had received, checked.
    pub fn horizon(&self) -> Result<Horizon> {
        let watermark = Watermark::parse(&self.watermark)
            .map_err(|_| Error::InvalidOptions(format!("seen: \"{}\" is no watermark a pull returned", self.watermark)))?;
        let versions = |listed: &[String], what: &str| {
            listed
                .iter()
                .map(|v| {
                    v.parse::<u64>()
                        .ok()
                        .filter(|_| is_xid(v))
                        .ok_or_else(|| Error::InvalidOptions(format!("seen: {what} \"{v}\" is not a version Tandem returned")))
                })
                .collect::<Result<Vec<u64>>>()
        };
        let own = versions(&self.echoes, "echo")?;
        let unmatched = versions(&self.unmatched, "unmatched delete")?;
        let kept: Vec<String> = self.kept.iter().filter_map(|k| k.version.clone()).collect();
        versions(&kept, "kept delete")?;
        Ok(Horizon::new(&watermark, own).with_unmatched(unmatched))
    }

    /// The deletes of `key` of `table` the file kept its row beside and
    /// did not take (see [`Seen::kept`]), by version (`None`: any exit);
    /// empty when it kept none.
    pub fn kept(&self, table: &str, key: &[Value]) -> Vec<Option<&str>> {
        self.kept.iter().filter(|k| k.table == table && k.key == key).map(|k| k.version.as_deref()).collect()
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CleanupOptions {
    /// Clients not seen for this many days no longer hold tombstones back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inactive_after_days: Option<u32>,
}

/// Options of the server's `sync_schema`: a device shows its token, as for
/// its other calls.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

impl SchemaOptions {
    pub fn parse(value: Option<&Value>) -> Result<Self> {
        parse_options(value)
    }
}

/// How the server settles a conflict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Policy {
    ServerWins,
    ClientWins,
    /// A SQL function `(conflict jsonb) -> jsonb` on the server.
    Resolver(String),
}

impl Policy {
    /// The resolver's name, for messages about it (empty for the built-in
    /// policies).
    pub fn resolver_name(&self) -> &str {
        match self {
            Policy::Resolver(name) => name,
            Policy::ServerWins | Policy::ClientWins => "",
        }
    }

    pub fn parse(text: Option<&str>) -> Result<Self> {
        match text {
            None | Some("server_wins") => Ok(Policy::ServerWins),
            Some("client_wins") => Ok(Policy::ClientWins),
            Some(name) if name.contains('.') && !name.contains('(') => Ok(Policy::Resolver(name.to_string())),
            Some(other) => Err(Error::InvalidOptions(format!(
                "unknown policy \"{other}\": use server_wins, client_wins or a resolver function as schema.function"
            ))),
        }
    }
}

pub(crate) fn parse_options<T: for<'de> Deserialize<'de> + Default>(value: Option<&Value>) -> Result<T> {
    match value {
        None | Some(Value::Null) => Ok(T::default()),
        Some(v @ Value::Object(_)) => serde_json::from_value(v.clone()).map_err(|e| Error::InvalidOptions(e.to_string())),
        Some(other) => Err(Error::InvalidOptions(format!("options must be a JSON object, got {other}"))),
    }
}

impl SelectOptions {
    pub fn parse(value: Option<&Value>) -> Result<Self> {
        let options: SelectOptions = parse_options(value)?;
        if options.max_rows == Some(0) {
            return Err(Error::InvalidOptions("max_rows must be at least 1".into()));
        }
        check_max_bytes(options.max_bytes)?;
        if let Some(params) = &options.params {
            check_params(params)?;
        }
        check_replica(options.replica.as_deref())?;
        for echo in options.echoes.iter().flatten() {
            if !is_xid(echo) {
                return Err(Error::InvalidOptions(format!("echoes: \"{echo}\" is not a version returned by sync_apply_changes")));
            }
        }
        Ok(options)
    }

    pub fn max_rows(&self) -> u64 {
        self.max_rows.unwrap_or(DEFAULT_MAX_ROWS)
    }

    pub fn max_bytes(&self) -> usize {
        self.max_bytes.unwrap_or(DEFAULT_MAX_BYTES) as usize
    }
}

impl ApplyOptions {
    pub fn parse(value: Option<&Value>) -> Result<Self> {
        // Serde would also take the object's fields as a list.
        if value.and_then(|v| v.get("seen")).is_some_and(|seen| !seen.is_object()) {
            return Err(Error::InvalidOptions(
                "seen must be an object: {\"watermark\": the file's watermark, \"echoes\": [versions of its recorded uploads], \
                 \"kept\": [{\"table\", \"key\"} of rows a pull kept beside their deletes], \"unmatched\": [versions of deletes that reached no row]}"
                    .into(),
            ));
        }
        let options: ApplyOptions = parse_options(value)?;
        if options.policy.is_some() {
            return Err(Error::InvalidOptions(
                "the conflict policy belongs to the scope: its owner sets \"policy\" in sync_provision's setup; a client may not choose it"
                    .into(),
            ));
        }
        if let Some(params) = &options.params {
            check_params(params)?;
        }
        check_replica(options.replica.as_deref())?;
        if options.upload_id.as_ref().is_some_and(|r| r.is_empty() || r.len() > 100) {
            return Err(Error::InvalidOptions("upload_id must be 1 to 100 characters".into()));
        }
        if let Some(seen) = &options.seen {
            seen.horizon()?;
        }
        Ok(options)
    }
}

impl CleanupOptions {
    pub fn parse(value: Option<&Value>) -> Result<Self> {
        let options: CleanupOptions = parse_options(value)?;
        if options.inactive_after_days.is_some_and(|days| days > 36_500) {
            return Err(Error::InvalidOptions("inactive_after_days must be at most 36500 (a hundred years)".into()));
        }
        if options.inactive_after_days == Some(0) {
            return Err(Error::InvalidOptions(
                "inactive_after_days must be at least 1: with 0, every device (even one that synced a moment ago) would have \
                 to download its partition again"
                    .into(),
            ));
        }
        Ok(options)
    }
}

/// Replica ids name a file: 1 to 100 characters.
fn check_replica(replica: Option<&str>) -> Result<()> {
    match replica {
        Some(r) if r.is_empty() || r.len() > 100 => {
            Err(Error::InvalidOptions("replica must be 1 to 100 characters (the file's id)".into()))
        }
        _ => Ok(()),
    }
}

/// A transaction id as text (what PostgreSQL's `xid8` prints).
fn is_xid(text: &str) -> bool {
    !text.is_empty() && text.len() <= 20 && text.bytes().all(|b| b.is_ascii_digit())
}

/// Parameter values are scalars or non-empty lists of scalars.
pub fn check_params(params: &Params) -> Result<()> {
    for (name, value) in params {
        let scalar = |v: &Value| matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_));
        let ok = match value {
            Value::Array(items) => !items.is_empty() && items.iter().all(scalar),
            v => scalar(v),
        };
        if !ok {
            return Err(Error::Params(format!(
                "parameter \"{name}\" is {value}; use a string, number or boolean, or a non-empty list of them"
            )));
        }
    }
    Ok(())
}

/// The values of a parameter as a list (a scalar is a list of one).
pub fn param_values(value: &Value) -> Vec<&Value> {
    match value {
        Value::Array(items) => items.iter().collect(),
        v => vec![v],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_options_are_errors() {
        let err = SelectOptions::parse(Some(&json!({"max_row": 5}))).unwrap_err().to_string();
        assert!(err.contains("unknown field `max_row`"), "{err}");
        let err = ApplyOptions::parse(Some(&json!({"policy": "client_wins"}))).unwrap_err().to_string();
        assert!(err.contains("belongs to the scope"), "{err}");
        assert!(SelectOptions::parse(Some(&json!([1]))).is_err());
        assert!(SelectOptions::parse(Some(&json!({"params": {"t": {"a": 1}}}))).is_err());
        assert!(SelectOptions::parse(Some(&json!({"params": {"t": []}}))).is_err());
        assert!(SelectOptions::parse(Some(&json!({"echoes": ["12", "1; DROP"]}))).is_err());
        assert!(SelectOptions::parse(Some(&json!({"replica": ""}))).is_err());
        assert!(ApplyOptions::parse(Some(&json!({"upload_id": ""}))).is_err());
        assert!(ApplyOptions::parse(Some(&json!({"seen": {"watermark": "garbage"}}))).is_err());
        assert!(ApplyOptions::parse(Some(&json!({"seen": {"watermark": "0:0:"}}))).is_err(), "PostgreSQL refuses it too");
        for listed in [json!([]), json!(["10:12:", []]), json!("10:12:")] {
            let error = ApplyOptions::parse(Some(&json!({ "seen": listed }))).unwrap_err().to_string();
            assert!(error.contains("seen must be an object"), "{error}");
        }
        assert!(ApplyOptions::parse(Some(&json!({"seen": {"watermark": "10:12:", "echoes": ["11", "x"]}}))).is_err());
        assert!(ApplyOptions::parse(Some(&json!({"seen": {"watermark": "10:12:", "other": 1}}))).is_err());
        // Kept keys: a table and a key each, found by both; unmatched
        // deletes: versions, as echoes are.
        let kept = json!({"seen": {"watermark": "10:12:", "kept": [{"table": "public.items", "key": [20, "a"]},
                                                                  {"table": "public.items", "key": [20, "a"], "version": "11"}],
                                   "unmatched": ["11"]}});
        let kept = ApplyOptions::parse(Some(&kept)).unwrap().seen.unwrap();
        assert_eq!(kept.kept("public.items", &[json!(20), json!("a")]), [None, Some("11")]);
        assert!(
            kept.kept("public.items", &[json!(21), json!("a")]).is_empty()
                && kept.kept("public.other", &[json!(20), json!("a")]).is_empty()
        );
        assert_eq!(kept.horizon().unwrap().unmatched(), [11]);
        let bad_version = json!({"seen": {"watermark": "10:12:", "kept": [{"table": "t", "key": [1], "version": "1; DROP"}]}});
        assert!(ApplyOptions::parse(Some(&bad_version)).is_err(), "a kept delete's version is checked as echoes are");
        for bad in [json!(5), json!([{"table": "t"}]), json!([{"table": "t", "key": 1}]), json!([{"table": "t", "key": [1], "x": 1}])] {
            assert!(ApplyOptions::parse(Some(&json!({"seen": {"watermark": "10:12:", "kept": bad}}))).is_err(), "{bad}");
        }
        for bad in [json!(5), json!(["x"]), json!([11])] {
            assert!(ApplyOptions::parse(Some(&json!({"seen": {"watermark": "10:12:", "unmatched": bad}}))).is_err(), "{bad}");
        }
        let seen = ApplyOptions::parse(Some(&json!({"seen": {"watermark": "10:12:11", "echoes": ["15"]}}))).unwrap().seen.unwrap();
        let horizon = seen.horizon().unwrap();
        assert_eq!((horizon.snapshot().to_string(), horizon.own()), ("10:12:11".to_string(), &[15][..]));
    }

    #[test]
    fn reads_options_and_policies() {
        let o = SelectOptions::parse(Some(&json!({"client_id": "c1", "params": {"tenant": [1, 2]}, "max_rows": 5}))).unwrap();
        assert_eq!(o.max_rows(), 5);
        assert_eq!(param_values(&o.params.unwrap()["tenant"]).len(), 2);
        assert_eq!(SelectOptions::parse(None).unwrap().max_rows(), DEFAULT_MAX_ROWS);
        assert_eq!(Policy::parse(Some("app.merge_rows")).unwrap(), Policy::Resolver("app.merge_rows".into()));
        assert_eq!(Policy::parse(None).unwrap(), Policy::ServerWins);
    }
}
