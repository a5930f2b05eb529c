//! The server functions a device calls, as both the direct `postgres://`
//! client and the gateway call them: `$1` scope, then the call's own
//! values; each returns one text column, the function's JSON result.

/// `sync_schema(scope, options)`: `$1` scope, `$2` options (JSON text).
pub const SCHEMA: &str = "SELECT sync_schema($1, $2::text::jsonb)::text";

/// `sync_select_changes_json(scope, since, options)`: `$1` scope, `$2`
/// watermark (NULL for none), `$3` options (JSON text).
pub const SELECT_CHANGES: &str = "SELECT sync_select_changes_json($1, $2, $3::text::jsonb)::text";

/// `sync_apply_changes_json(scope, changeset, options)`: `$1` scope, `$2`
/// changeset (JSON text), `$3` options (JSON text).
pub const APPLY_CHANGES: &str = "SELECT sync_apply_changes_json($1, $2::text::json, $3::text::jsonb)::text";

/// `sync_verify(scope, options)`: `$1` scope, `$2` options (JSON text),
/// each step of a verify (see `crate::verify`).
pub const VERIFY: &str = "SELECT sync_verify($1, $2::text::jsonb)::text";

/// The functions a device's role must be able to execute, as
/// `has_function_privilege` names them.
pub const DEVICE_FUNCTIONS: [&str; 3] =
    ["sync_schema(text, jsonb)", "sync_select_changes_json(text, text, jsonb)", "sync_apply_changes_json(text, json, jsonb)"];
