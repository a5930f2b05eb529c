//! Errors as a device sees them: an HTTP status and
//! `{"error": {"sqlstate", "message", "detail"}}`. PostgreSQL's errors keep
//! their SQLSTATE and message; the status says what kind of no it is.

use axum::extract::rejection::{JsonRejection, QueryRejection, StringRejection};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use tandem_core::error::LOCK_NOT_AVAILABLE;

/// An answer other than success.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    /// PostgreSQL's SQLSTATE; `None` for what the gateway refused itself.
    pub sqlstate: Option<String>,
    pub message: String,
    /// The extension's DETAIL: JSON (the refused rows, a resync) when it
    /// parses as JSON, else its text.
    pub detail: Option<Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError { status, sqlstate: None, message: message.into(), detail: None }
    }

    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, message)
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    /// The database cannot be reached or refuses the gateway: the device
    /// may try again later; the operator reads the log.
    pub fn unavailable(context: &str, error: &dyn std::fmt::Display) -> ApiError {
        tracing::error!(%error, "{context}");
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the gateway cannot reach its database right now: try again later")
    }

    /// An error PostgreSQL raised in a sync call.
    pub fn from_database(error: &tokio_postgres::Error) -> ApiError {
        let Some(db) = error.as_db_error() else {
            return ApiError::unavailable("the database connection failed", error);
        };
        let sqlstate = db.code().code();
        let status = status_for(sqlstate, db.message(), db.detail());
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            // The device gets the SQLSTATE and message; the log gets the rest.
            tracing::error!(
                sqlstate,
                message = db.message(),
                detail = db.detail(),
                hint = db.hint(),
                where_ = db.where_(),
                "sync call failed"
            );
        }
        let detail = match status {
            StatusCode::INTERNAL_SERVER_ERROR => None,
            _ => db.detail().map(|text| serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))),
        };
        ApiError { status, sqlstate: Some(sqlstate.to_string()), message: db.message().to_string(), detail }
    }
}

/// The HTTP status of a PostgreSQL error a sync call raised.
pub fn status_for(sqlstate: &str, message: &str, detail: Option<&str>) -> StatusCode {
    let detail_json = detail.and_then(|d| serde_json::from_str::<Value>(d).ok());
    if detail_json.as_ref().is_some_and(|d| d.get("rejected").is_some()) {
        // Rows refused, nothing applied: the device sets them aside and
        // sends the rest.
        return StatusCode::UNPROCESSABLE_ENTITY;
    }
    if sqlstate == "55000" && detail_json.as_ref().is_some_and(|d| d["resync"] == Value::Bool(true)) {
        return StatusCode::CONFLICT;
    }
    match sqlstate {
        // The gateway's own role lacks EXECUTE, or the extension is
        // missing: the operator's to fix, not the device's.
        "42501" if message.starts_with("permission denied for function") => StatusCode::INTERNAL_SERVER_ERROR,
        "42883" => StatusCode::INTERNAL_SERVER_ERROR,
        "28000" | "28P01" => StatusCode::UNAUTHORIZED,
        "42501" => StatusCode::FORBIDDEN,
        "42704" => StatusCode::NOT_FOUND,
        // Gave up waiting for another session's lock: nothing was kept,
        // and the device may try again.
        LOCK_NOT_AVAILABLE => StatusCode::SERVICE_UNAVAILABLE,
        // A deadlock or serialization failure with other writers (their
        // triggers and the upload's): rolled back whole, and the next try
        // goes through (helper 86).
        s if s.starts_with("40") => StatusCode::SERVICE_UNAVAILABLE,
        s if s.starts_with("22") || s.starts_with("42") => StatusCode::BAD_REQUEST,
        // A body nested deeper than PostgreSQL's JSON parser goes (stack
        // depth): the request's fault, not one to page the operator for
        // (helper 98).
        "54001" => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"sqlstate": self.sqlstate, "message": self.message, "detail": self.detail}});
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer realm=\"tandem\""));
        }
        response
    }
}

/// A body over the limit is 413 whichever extractor read it.
fn rejection(status: StatusCode, text: String, what: &str) -> ApiError {
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            status,
            format!("the {what} is larger than this gateway takes (--max-body-bytes): send smaller batches (option max_bytes)"),
        ),
        _ => ApiError::new(status, format!("the {what} is unreadable: {text}")),
    }
}

impl From<JsonRejection> for ApiError {
    fn from(error: JsonRejection) -> ApiError {
        // JSON of the wrong shape (an array for the options) is a bad
        // request like unreadable JSON: 422 means rows refused.
        let status = match error {
            JsonRejection::JsonDataError(_) => StatusCode::BAD_REQUEST,
            _ => error.status(),
        };
        rejection(status, error.body_text(), "request body")
    }
}

impl From<StringRejection> for ApiError {
    fn from(error: StringRejection) -> ApiError {
        rejection(error.status(), error.body_text(), "changeset")
    }
}

impl From<QueryRejection> for ApiError {
    fn from(error: QueryRejection) -> ApiError {
        ApiError::bad_request(format!("the query string is unreadable: {}", error.body_text()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_map_to_statuses() {
        assert_eq!(status_for("28000", "invalid token for scope \"crm\"", None), StatusCode::UNAUTHORIZED);
        assert_eq!(status_for("42501", "changeset claims origin", None), StatusCode::FORBIDDEN);
        assert_eq!(status_for("42501", "permission denied for function sync_schema", None), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(status_for("42704", "unknown scope \"x\"", None), StatusCode::NOT_FOUND);
        assert_eq!(status_for("22023", "invalid options", None), StatusCode::BAD_REQUEST);
        assert_eq!(status_for("42P01", "table", None), StatusCode::BAD_REQUEST);
        assert_eq!(status_for("55000", "the watermark is older", Some(r#"{"resync": true}"#)), StatusCode::CONFLICT);
        assert_eq!(status_for("55000", "the tracking of t is gone", None), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(status_for("42501", "1 row(s) refused", Some(r#"{"rejected": []}"#)), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(status_for("22P02", "1 row(s) refused", Some(r#"{"rejected": []}"#)), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(status_for("XX000", "internal", None), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(status_for("40001", "could not serialize", None), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(status_for("40P01", "deadlock detected", None), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(status_for("54001", "stack depth limit exceeded", None), StatusCode::BAD_REQUEST);
        assert_eq!(status_for("55P03", "canceling statement due to lock timeout", None), StatusCode::SERVICE_UNAVAILABLE);
    }
}
