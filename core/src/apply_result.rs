//! The result of `sync_apply_changes`: what the uploader must record so that
//! its next round builds on the server's versions.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::conflict::{ConflictKind, Decision};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ApplyResult {
    /// Rows written as sent.
    pub applied: u64,
    /// The version stamped on every row this call wrote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// New versions of the rows applied as sent.
    #[serde(default)]
    pub versions: Vec<AppliedRow>,
    /// Conflicts and how they ended; the uploader takes `row` as the row's
    /// new state.
    #[serde(default)]
    pub conflicts: Vec<ConflictReport>,
    /// Changes the server had already applied from an earlier upload of the
    /// same change (same client, same `seq`): the row as the server has it.
    /// Also rows this upload wrote that the server's own code took out of
    /// the uploader's partition (`row` null: it drops its copy).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub current: Vec<CurrentRow>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AppliedRow {
    pub table: String,
    pub key: Vec<Value>,
    pub version: String,
    /// The row as written, when it differs from what was sent (a default,
    /// a cast such as numeric scale, or a trigger changed it): the uploader
    /// takes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row: Option<Map<String, Value>>,
    /// A delete applied as part of another row's change of the key's text
    /// (the upload inserted the key again under another text, equal as
    /// PostgreSQL compares it): the uploader drops that row alone and
    /// keeps the rows filtered `via` it, which the server still holds
    /// under the key's new text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub respelled: Option<bool>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConflictReport {
    pub table: String,
    pub key: Vec<Value>,
    pub kind: ConflictKind,
    pub decision: Decision,
    /// The server's row before the conflict (NULL: deleted).
    pub server_row: Option<Map<String, Value>>,
    /// The uploaded row (NULL: the client deleted it).
    pub client_row: Option<Map<String, Value>>,
    /// The row the server holds now (NULL: deleted).
    pub row: Option<Map<String, Value>>,
    /// Version of `row`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Why the change could not be applied (`constraint_violated`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// A key change the server did not apply: the row at the old key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moved_from: Option<MovedFrom>,
}

/// The row at the key a key change moved from, as the server holds it,
/// when the change was not applied (lost its conflict, or refused): the
/// uploader restores it. `row` is absent when the row is gone, or the
/// client may not see it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MovedFrom {
    pub key: Vec<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CurrentRow {
    pub table: String,
    pub key: Vec<Value>,
    pub row: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}
