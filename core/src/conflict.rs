//! Conflict rules: when an uploaded change meets the server's row, decide by
//! versions (never by clocks) whether it applies or conflicts, and read what a
//! resolver decided.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::changeset::Op;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConflictKind {
    BothUpdated,
    LocalDeletedServerUpdated,
    LocalUpdatedServerDeleted,
    BothInserted,
    ConstraintViolated,
}

impl ConflictKind {
    /// The kind [`ConflictKind::as_str`] names (as the conflict log keeps it).
    pub fn parse(text: &str) -> Option<Self> {
        [Self::BothUpdated, Self::LocalDeletedServerUpdated, Self::LocalUpdatedServerDeleted, Self::BothInserted, Self::ConstraintViolated]
            .into_iter()
            .find(|k| k.as_str() == text)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ConflictKind::BothUpdated => "both_updated",
            ConflictKind::LocalDeletedServerUpdated => "local_deleted_server_updated",
            ConflictKind::LocalUpdatedServerDeleted => "local_updated_server_deleted",
            ConflictKind::BothInserted => "both_inserted",
            ConflictKind::ConstraintViolated => "constraint_violated",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    ServerWins,
    ClientWins,
    /// A resolver returned a new row to keep.
    Merged,
}

impl Decision {
    /// The decision [`Decision::as_str`] names (as the conflict log keeps it).
    pub fn parse(text: &str) -> Option<Self> {
        [Self::ServerWins, Self::ClientWins, Self::Merged].into_iter().find(|d| d.as_str() == text)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Decision::ServerWins => "server_wins",
            Decision::ClientWins => "client_wins",
            Decision::Merged => "merged",
        }
    }
}

/// What the server holds for a key when an uploaded change arrives.
#[derive(Clone, Debug, Default)]
pub struct ServerRow<'a> {
    /// Current version from tracking; `None` when tracking has no entry
    /// (never existed, or its tombstone was cleaned up).
    pub version: Option<&'a str>,
    /// The row exists in the user table now.
    pub exists: bool,
    /// The last change to the row came from this same client, so the
    /// client's local state already builds on it.
    pub last_writer_is_client: bool,
    /// The row was deleted by a change the uploader had not received when
    /// it sent its change (see [`crate::watermark::Horizon`]).
    pub deleted_unseen: bool,
}

/// What the version rules say of an uploaded change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Apply the change as sent.
    Apply,
    /// Nothing to do and nothing to report: both sides already agree (a
    /// delete of a row the server no longer has).
    Converged,
    Conflict(ConflictKind),
}

/// Decides by versions what an uploaded change does to the server's row.
pub fn classify(op: Op, base: Option<&str>, server: &ServerRow<'_>) -> Verdict {
    let unchanged_since_base = server.last_writer_is_client || (base.is_some() && base == server.version);
    match (op, server.exists) {
        (Op::Delete, false) => Verdict::Converged,
        (Op::Upsert, false) => {
            // An insert (no base) builds on the row's absence: a delete the
            // uploader never received took a row away it may have held (a
            // restored backup sending its insert again).
            let insert_on_absence = base.is_none() && !server.deleted_unseen;
            if insert_on_absence || unchanged_since_base {
                Verdict::Apply
            } else {
                Verdict::Conflict(ConflictKind::LocalUpdatedServerDeleted)
            }
        }
        (_, true) if unchanged_since_base => Verdict::Apply,
        (Op::Upsert, true) if base.is_none() => Verdict::Conflict(ConflictKind::BothInserted),
        (Op::Upsert, true) => Verdict::Conflict(ConflictKind::BothUpdated),
        (Op::Delete, true) => Verdict::Conflict(ConflictKind::LocalDeletedServerUpdated),
    }
}

/// What a resolver function returned.
#[derive(Clone, Debug, PartialEq)]
pub enum Resolution {
    ServerWins,
    ClientWins,
    /// Keep this row (column name -> value); it is written and sent to every
    /// client, the uploader included.
    Row(Map<String, Value>),
}

/// Reads a resolver's answer: `"server_wins"`, `"client_wins"`,
/// `{"decision": ...}`, a row object, or NULL (server wins).
pub fn parse_resolution(value: &Value) -> Result<Resolution, String> {
    match value {
        Value::Null => Ok(Resolution::ServerWins),
        Value::String(s) => decision(s),
        Value::Object(map) if map.len() == 1 && map.contains_key("decision") => match &map["decision"] {
            Value::String(s) => decision(s),
            other => Err(format!("\"decision\" must be a string, got {other}")),
        },
        Value::Object(map) if map.len() == 1 && map.contains_key("row") => match &map["row"] {
            Value::Object(row) => Ok(Resolution::Row(row.clone())),
            other => Err(format!("\"row\" must be an object of column values, got {other}")),
        },
        Value::Object(map) => Ok(Resolution::Row(map.clone())),
        other => Err(format!("returned {other}; return \"server_wins\", \"client_wins\", {{\"row\": {{...}}}} or NULL")),
    }
}

fn decision(s: &str) -> Result<Resolution, String> {
    match s {
        "server_wins" => Ok(Resolution::ServerWins),
        "client_wins" => Ok(Resolution::ClientWins),
        other => Err(format!("returned decision \"{other}\"; use \"server_wins\" or \"client_wins\"")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn live(version: &str) -> ServerRow<'_> {
        ServerRow { version: Some(version), exists: true, last_writer_is_client: false, deleted_unseen: false }
    }

    #[test]
    fn same_base_applies_other_base_conflicts() {
        assert_eq!(classify(Op::Upsert, Some("10"), &live("10")), Verdict::Apply);
        assert_eq!(classify(Op::Delete, Some("10"), &live("10")), Verdict::Apply);
        assert_eq!(classify(Op::Upsert, Some("10"), &live("12")), Verdict::Conflict(ConflictKind::BothUpdated));
        assert_eq!(classify(Op::Upsert, None, &live("12")), Verdict::Conflict(ConflictKind::BothInserted));
        assert_eq!(classify(Op::Delete, Some("10"), &live("12")), Verdict::Conflict(ConflictKind::LocalDeletedServerUpdated));
    }

    #[test]
    fn deleted_on_the_server() {
        let tombstone = ServerRow { version: Some("12"), exists: false, last_writer_is_client: false, deleted_unseen: false };
        assert_eq!(classify(Op::Delete, Some("10"), &tombstone), Verdict::Converged);
        assert_eq!(classify(Op::Upsert, None, &tombstone), Verdict::Apply);
        assert_eq!(classify(Op::Upsert, Some("10"), &tombstone), Verdict::Conflict(ConflictKind::LocalUpdatedServerDeleted));
        let gone = ServerRow::default();
        assert_eq!(classify(Op::Delete, Some("10"), &gone), Verdict::Converged);
        assert_eq!(classify(Op::Upsert, None, &gone), Verdict::Apply);
        assert_eq!(classify(Op::Upsert, Some("3"), &gone), Verdict::Conflict(ConflictKind::LocalUpdatedServerDeleted));
    }

    #[test]
    fn an_insert_meets_a_delete_it_never_received() {
        let unseen = ServerRow { version: Some("12"), exists: false, last_writer_is_client: false, deleted_unseen: true };
        assert_eq!(classify(Op::Upsert, None, &unseen), Verdict::Conflict(ConflictKind::LocalUpdatedServerDeleted));
        assert_eq!(classify(Op::Upsert, Some("10"), &unseen), Verdict::Conflict(ConflictKind::LocalUpdatedServerDeleted));
        assert_eq!(classify(Op::Delete, None, &unseen), Verdict::Converged);
        // Its own delete, written by the upload this one retries.
        let own = ServerRow { last_writer_is_client: true, ..unseen };
        assert_eq!(classify(Op::Upsert, None, &own), Verdict::Apply);
    }

    #[test]
    fn a_clients_own_last_write_is_not_a_conflict() {
        // The client's earlier upload was applied but it never learned the new
        // version (crash); its next change builds on its own write.
        let own = ServerRow { version: Some("15"), exists: true, last_writer_is_client: true, deleted_unseen: false };
        assert_eq!(classify(Op::Upsert, Some("10"), &own), Verdict::Apply);
        assert_eq!(classify(Op::Delete, Some("10"), &own), Verdict::Apply);
    }

    #[test]
    fn reads_resolver_answers() {
        assert_eq!(parse_resolution(&Value::Null).unwrap(), Resolution::ServerWins);
        assert_eq!(parse_resolution(&json!("client_wins")).unwrap(), Resolution::ClientWins);
        assert_eq!(parse_resolution(&json!({"decision": "server_wins"})).unwrap(), Resolution::ServerWins);
        let row = parse_resolution(&json!({"id": 1, "name": "merged"})).unwrap();
        assert!(matches!(row, Resolution::Row(m) if m["name"] == "merged"));
        assert!(matches!(parse_resolution(&json!({"row": {"decision": 1}})).unwrap(), Resolution::Row(_)));
        assert!(parse_resolution(&json!("newest")).is_err());
        assert!(parse_resolution(&json!(3)).is_err());
    }
}
